/*
 * The simulated world, shared by world.c (engine and drivers), check.c (model
 * and checkers) and scale.c (measurements). Everything a run owns hangs off
 * one `world`; a run frees all of it, so runs in one process are independent
 * (except under BRK_NONDET, which exists to prove the determinism check).
 */
#ifndef KV_SIM_WORLD_H
#define KV_SIM_WORLD_H

#include "sync/antientropy.h"
#include "sync/membership.h"
#include "sync/rumor.h"
#include "tests/sim/sim.h"

#define SIM_AE_TIMEOUT_MS 30000 /* server/peer.c's AE_TIMEOUT_MS */
#define SIM_MAX_SIBLINGS 100
#define SIM_MAX_VALUE ((size_t)16 << 20)
#define SIM_MAX_CONTEXT 1024 /* store.c's MAX_CONTEXT_ENTRIES */
#define SIM_JOIN_RETRY_MS 1000
#define SIM_RECONNECT_MS 30000 /* serf's reconnect_interval */
/* A replica that has crashed may still be declared dead, by a suspicion
 * begun while it was down, this long after its restart (the longest
 * suspicion timeout plus gossip); one that never crashed, never. */
#define SIM_FP_WINDOW_MS 45000

enum ev_type {
  EV_MSG = 1,
  EV_SWIM,
  EV_RUMOR,
  EV_AE,
  EV_JOIN,
  EV_CLIENT,
  EV_CLIENT2, /* the write half of a read-modify-write */
  EV_NEMESIS,
  EV_RESTART,
  EV_HEAL,
  EV_SAMPLE,
  EV_END_ACTIVE,
  EV_END,
  EV_SCALE, /* scale.c's own schedule */
};

typedef struct event {
  uint64_t t, seq;
  int type, node;
  uint64_t gen;
  void *p;
} event;

enum msg_kind { MK_RUMORS = 1, MK_ACK, MK_AE, MK_SWIM };
enum { CAUSE_CLIENT = 1, CAUSE_RUMOR, CAUSE_AE };

typedef struct rumor_item {
  kv_buf key, obj;
} rumor_item;

typedef struct msg {
  int kind, src, dst;
  rumor_item *items; /* MK_RUMORS; MK_ACK: (key, digest || news byte) */
  size_t nitems;
  kv_buf bytes;       /* MK_AE */
  kv_swim_msg sm;     /* MK_SWIM: deep copy, every pointer owned */
  kv_swim_update *up; /* sm.updates */
  size_t size;        /* rough wire size, for the figures */
} msg;

typedef struct rbatch {
  rumor_item *items;
  size_t n, cap;
} rbatch;

typedef struct recent_write { /* BRK_LOSE_ACK's memory of recent writes */
  uint64_t t;
  kv_buf key, old; /* old.len 0: key was absent */
} recent_write;

struct world;

/* Where an exchange's messages go: lives in the replica, as long as the
 * exchange that borrows it. */
typedef struct ae_ctx {
  struct world *w;
  int self, peer;
} ae_ctx;

typedef struct replica {
  int i;
  uint64_t id;
  char addr[16];
  bool up, crashed; /* crashed: at least once in this run */
  uint64_t up_since, down_since;
  /* durable: survives a crash */
  memstore ms;
  uint64_t inc; /* membership incarnation as last known (see DESIGN §6.3) */
  /* volatile: lost in a crash */
  uint64_t boot; /* bumps on crash and boot: stale timers are ignored */
  bool joined;   /* the boot's join has been sent */
  uint64_t hlc;
  kv_merkle *tree;
  kv_rumor *rumor;
  kv_swim *swim;
  kv_ae *ae;
  int ae_peer;
  uint64_t ae_xid, ae_started;
  size_t ae_next;
  ae_ctx aectx;
  uint64_t rumor_at, rumor_gen, swim_at, swim_gen;
  rbatch *batch; /* per destination, during a rumor tick */
  recent_write *recent;
  size_t nrecent, caprecent;
} replica;

struct model;

typedef struct world {
  sim_cfg cfg;
  kv_rng rng;
  uint64_t now, seq;
  event *heap;
  size_t hn, hcap;
  replica *r;
  int n;
  bool data; /* false: membership only (scale.c) */
  /* network */
  uint8_t *blocked; /* [src * n + dst] */
  uint32_t loss_ppm, dup_ppm, dmin, dmax;
  bool active, part_active, check_member;
  /* cores' options */
  kv_rumor_opts ropts;
  kv_swim_opts sopts;
  bool rumors_on, ae_on;
  bool join_lower; /* scale.c: join through a lower-numbered member */
  int cause;       /* what the current store change comes from */
  /* trace */
  FILE *trace;
  bool tracing;
  uint64_t th; /* FNV-1a of every trace line */
  /* scratch */
  uint64_t *peers;
  /* model and results */
  struct model *m;
  sim_result *res;
  uint64_t next_op;
  /* scale.c hooks and counters */
  void (*on_change)(struct world *w, int node, const uint8_t *key,
                    size_t keylen);
  void (*on_swim_event)(struct world *w, int node, const kv_swim_event *e);
  /* every rumor a replica merges, news or not */
  void (*on_rumor)(struct world *w, int node, const uint8_t *key,
                   size_t keylen);
  void (*on_scale)(struct world *w, const event *e);
  void *scale;
  uint64_t n_rumor_msgs, n_rumor_items, n_ack_msgs, n_ae_msgs, n_swim_udp,
      n_swim_tcp, n_drop;
  uint64_t b_rumor, b_ack, b_ae, b_swim_udp, b_swim_tcp;
} world;

/* world.c */
void tr(world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ev_push(world *w, uint64_t t, int type, int node, uint64_t gen, void *p);
void fail(world *w, unsigned chk, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
world *world_new(const sim_cfg *cfg, FILE *trace, sim_result *res, bool data);
void world_free(world *w);
void world_start(world *w); /* boots every replica at t = 0 */
void world_run(world *w, uint64_t until);
void rep_crash(world *w, int i);
void rep_boot(world *w, int i);
int node_of_id(const world *w, uint64_t id);
/* Client operations at replica i; KV_OK when acknowledged. */
int rep_local_write(world *w, int i, int op, const char *key,
                    const uint8_t *val, size_t vlen, const kv_buf *ctx,
                    bool local_ctx, int64_t delta, bool g);
enum { OP_PUT = 1, OP_DEL, OP_INCR, OP_MERGE };
/* The decoded object stored at replica i (absent: empty object). */
void rep_read(world *w, int i, const char *key, kv_object *o);

/* check.c */
void model_new(world *w);
void model_free(world *w);
void client_op(world *w);
void client_op2(world *w, const event *e);
void client_drop_pending(void *p);
void model_sample(world *w);
void model_check_final(world *w);
void member_event(world *w, int node, const kv_swim_event *e);

#endif
