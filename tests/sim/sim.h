/*
 * The deterministic simulator (DESIGN.md §7): N replicas running the real
 * sans-I/O cores (crdt/object, sync/merkle, sync/rumor, sync/antientropy,
 * sync/membership) in one process, on a virtual clock, with one seeded kv_rng
 * driving the workload, the network faults and every core. Nothing here
 * reads a real clock, spawns a thread or touches the network; so one seed
 * gives one byte-identical trace.
 *
 * The pieces: memstore.c (an in-memory store behind kv_ae_store, updating
 * Merkle leaves exactly as storage/store.c does), world.c (event queue,
 * network, replicas and the drivers of the cores, nemesis, clients),
 * check.c (the client-visible model and the checkers), scale.c (the gossip
 * and membership measurements) and main.c (command line and suites).
 */
#ifndef KV_SIM_H
#define KV_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crdt/object.h"
#include "proto/buf.h"
#include "sync/antientropy.h"
#include "sync/merkle.h"
#include "sync/rng.h"
#include "sync/rumor.h"

/* ---- in-memory store (memstore.c) ---- */

typedef struct ms_entry {
  uint32_t seg;
  kv_buf key;
  kv_buf obj; /* canonical object bytes */
} ms_entry;

/* Sorted by (segment, key), like the LMDB `objects` database whose keys are
 * segment (u32 BE) || user key; leaves[] is the persisted `tree` database. */
typedef struct memstore {
  unsigned bits;
  ms_entry *e;
  size_t n, cap;
  kv_hash *leaves;
} memstore;

void ms_init(memstore *ms, unsigned bits);
void ms_fini(memstore *ms);
/* The stored bytes of key, borrowed until the next change; NULL if absent. */
const kv_buf *ms_get(const memstore *ms, const uint8_t *key, size_t len);
/* Stores obj (ownership moves in) under key, XOR-ing the contribution delta
 * into the persisted leaf as store.c's apply does. Returns false (and frees
 * obj) when the bytes equal what is stored: nothing changed. *seg and *delta
 * receive the leaf delta for the in-memory tree. */
bool ms_put(memstore *ms, const uint8_t *key, size_t len, kv_buf obj,
            uint32_t *seg, kv_hash *delta);
/* Removes key (only the broken builds do this); seg and delta as for ms_put. */
bool ms_remove(memstore *ms, const uint8_t *key, size_t len, uint32_t *seg,
               kv_hash *delta);
/* Calls fn(arg, key, obj) for each key of seg, in key order. */
void ms_segment(const memstore *ms, uint32_t seg,
                void (*fn)(void *arg, const ms_entry *e), void *arg);
/* Rebuilds every leaf from the objects; the number that differ from the
 * persisted leaves (kv_store_verify's check). */
uint32_t ms_verify(const memstore *ms);
/* Leaf contribution of one key's bytes (store.c's contribution()). */
kv_hash ms_contribution(const uint8_t *key, size_t keylen, const uint8_t *obj,
                        size_t objlen);

/* ---- configuration of one run ---- */

/* Deliberately broken builds, each of which a checker must catch. */
typedef enum sim_break {
  BRK_NONE = 0,
  BRK_LOSE_ACK,       /* a crash loses the replica's last second of writes */
  BRK_LWW,            /* merge keeps only the last writer's object */
  BRK_SKIP_TOMBSTONE, /* a delete erases the key instead of writing a tomb */
  BRK_NO_AE,          /* anti-entropy never runs */
  BRK_COUNTER_LWW,    /* counter merge keeps the larger counter whole */
  BRK_SWIM_HASTY,     /* membership with a 20 ms probe, 100 ms suspicion */
  BRK_NONDET,         /* leaks state from one run into the next */
  BRK_NO_CONTEXT,     /* puts ignore their context: nothing is replaced */
  BRK_STALE_LEAF,     /* merges forget to update the persisted leaf */
  BRK_COUNT
} sim_break;

const char *sim_break_name(int b);
int sim_break_parse(const char *s); /* -1 when unknown */

typedef struct sim_cfg {
  uint64_t seed;
  int nodes;
  unsigned segment_bits;
  uint32_t loss_ppm, dup_ppm; /* per message, during the active phase */
  uint32_t delay_min_ms, delay_max_ms;
  bool partitions, crashes;
  int max_down;
  uint64_t active_ms, quiet_ms;
  uint32_t op_gap_ms; /* mean time between client operations */
  uint64_t ae_interval_ms;
  int nreg;            /* register keys (counters: 3 PN and 3 G keys) */
  size_t max_siblings; /* the store's sibling cap */
  kv_ae_opts ae;       /* 0 fields: defaults; small ones force partial */
  kv_rumor_opts rumor; /* exchanges and evictions */
  int brk;
  const char *scenario; /* name, for the report */
} sim_cfg;

/* The scenario a seed stands for (swarm testing: the fault mix and its
 * parameters are drawn from the seed itself). */
void sim_cfg_from_seed(uint64_t seed, sim_cfg *cfg);

/* Checkers; a result carries the set that failed. */
enum {
  CHK_CONVERGE = 1 << 0,  /* identical Merkle roots and reads */
  CHK_LOST = 1 << 1,      /* an acknowledged value missing */
  CHK_STALE = 1 << 2,     /* a superseded (or never written) value live */
  CHK_RESURRECT = 1 << 3, /* a deleted value live again */
  CHK_COUNTER = 1 << 4,   /* counter != sum of acknowledged updates */
  CHK_GMONO = 1 << 5,     /* a G-counter went down on some replica */
  CHK_MEMBER = 1 << 6,    /* an up replica declared dead */
  CHK_INTERNAL = 1 << 7,  /* leaves != objects, tree != leaves */
  CHK_DETERMINISM = 1 << 8,
};
const char *sim_check_name(unsigned bit);

typedef struct sim_result {
  unsigned failed; /* CHK_ bits */
  char why[512];   /* first failure, one line */
  uint64_t trace_hash;
  uint64_t events, messages, dropped, client_ops, acked;
  uint64_t crashes, partitions, false_dead;
  uint64_t ae_exchanges, ae_repaired, rumors_pushed;
  uint64_t sim_ms;
} sim_result;

/* Runs one simulation. trace (may be NULL) receives the event trace. */
void sim_run(const sim_cfg *cfg, FILE *trace, sim_result *res);

/* ---- scale measurements (scale.c) ---- */

typedef struct scale_opts {
  uint64_t seed;
  unsigned fanout, rumor_k, max_rounds; /* 0: the core's defaults */
  uint64_t interval_ms;                 /* the core's tick interval */
  unsigned rate;                        /* gossip run: writes/s; 0 = 100 */
  unsigned link_ms;                     /* gossip run: link delay; 0 = 100 */
  bool no_ae;                           /* gossip run: rumors alone */
  int gossip_nodes;                     /* replicas in the gossip run */
  int members;                          /* members in the membership run */
  bool gossip, membership;
} scale_opts;

int sim_scale(const scale_opts *o);

#endif
