/*
 * Cluster membership (DESIGN.md §6.3), the sans-I/O core: SWIM failure
 * detection with randomized round-robin probes, ping-req and suspicion,
 * Lifeguard's local health, nacks, confirmation-shortened suspicion and buddy
 * system, piggybacked dissemination and push-pull, with hashicorp/memberlist's
 * semantics and LAN defaults (reference/swim_cassandra.md §1–3).
 * Pure (§7): no I/O, clock or randomness except the now_ms and kv_rng passed
 * in; the same calls with the same rng seed give the same emits in the same
 * order. Single-threaded: the event-loop thread owns a kv_swim. Member ids are
 * nonzero; 0 means "unknown" (a join by address). Allocation failure panics.
 */
#ifndef KV_MEMBERSHIP_H
#define KV_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"
#include "proto/kv_err.h"
#include "sync/rng.h"

#define KV_SWIM_DEFAULT_PROBE_INTERVAL_MS 1000
#define KV_SWIM_DEFAULT_PROBE_TIMEOUT_MS 500
#define KV_SWIM_DEFAULT_INDIRECT_CHECKS 3
#define KV_SWIM_DEFAULT_SUSPICION_MULT 4
#define KV_SWIM_DEFAULT_SUSPICION_MAX_TIMEOUT_MULT 6
#define KV_SWIM_DEFAULT_RETRANSMIT_MULT 4
#define KV_SWIM_DEFAULT_AWARENESS_MAX_MULT 8
#define KV_SWIM_DEFAULT_GOSSIP_NODES 3
#define KV_SWIM_DEFAULT_GOSSIP_INTERVAL_MS 200
#define KV_SWIM_DEFAULT_GOSSIP_TO_THE_DEAD_MS 30000
#define KV_SWIM_DEFAULT_PUSH_PULL_INTERVAL_MS 30000
#define KV_SWIM_DEFAULT_PIGGYBACK_BYTES 1300
#define KV_SWIM_DEFAULT_PIGGYBACK_MAX 64

/* Bounds on received input; larger is rejected with KV_BAD_REQUEST. */
#define KV_SWIM_MAX_STR 255       /* name and address, bytes (no NUL) */
#define KV_SWIM_MAX_UPDATES 65536 /* updates in one message */

/* Every field left 0 takes its default (memberlist's DefaultLANConfig). */
typedef struct kv_swim_opts {
  uint64_t probe_interval_ms;     /* 0 = 1000 */
  uint64_t probe_timeout_ms;      /* direct-ack wait, never scaled; 0 = 500 */
  unsigned indirect_checks;       /* ping-req helpers; 0 = 3 */
  unsigned suspicion_mult;        /* 0 = 4 */
  unsigned suspicion_max_mult;    /* SuspicionMaxTimeoutMult; 0 = 6 */
  unsigned suspicion_k;           /* expected confirmations K; 0 = memberlist's
                                     suspicion_mult - 2 */
  unsigned retransmit_mult;       /* 0 = 4 */
  unsigned awareness_max;         /* AwarenessMaxMultiplier; 0 = 8 */
  unsigned gossip_nodes;          /* 0 = 3 */
  uint64_t gossip_interval_ms;    /* 0 = 200 */
  uint64_t gossip_to_the_dead_ms; /* dead/left members still gossiped to for
                                     this long; 0 = 30000 */
  uint64_t push_pull_interval_ms; /* 0 = 30000 (scaled above 32 members) */
  size_t piggyback_bytes;         /* budget per message, counted with
                                     kv_swim_update_size; 0 = 1300 */
  size_t piggyback_max;           /* updates per message; 0 = 64 */
  uint64_t incarnation;           /* self's first incarnation; 0 = 1. A
                                     restarted member passes something larger
                                     than it ever used (kvd: its boot time in
                                     seconds), so its alive beats the dead
                                     entry others keep of its previous life
                                     without waiting for a refutation. */
} kv_swim_opts;

typedef enum kv_swim_state {
  KV_SWIM_NONE = 0, /* only as kv_swim_event.old_state: a new member */
  KV_SWIM_ALIVE = 1,
  KV_SWIM_SUSPECT = 2,
  KV_SWIM_DEAD = 3,
  KV_SWIM_LEFT = 4,
} kv_swim_state;

/* One member's state as gossiped, and one row of a push-pull table. from is
 * the accuser for SUSPECT (its confirmations are counted by accuser) and the
 * declarer for DEAD; 0 otherwise. name and addr are required for ALIVE and
 * may be NULL otherwise. */
typedef struct kv_swim_update {
  uint64_t id;
  uint64_t incarnation;
  kv_swim_state state;
  uint64_t from;
  const char *name;
  const char *addr;
} kv_swim_update;

typedef enum kv_swim_msg_type {
  KV_SWIM_PING = 1,      /* seq; target = the id the sender means to reach */
  KV_SWIM_ACK = 2,       /* seq of the ping or ping-req answered */
  KV_SWIM_PING_REQ = 3,  /* seq; probe target (at target_addr) for me */
  KV_SWIM_NACK = 4,      /* seq of a ping-req whose target did not answer */
  KV_SWIM_GOSSIP = 5,    /* updates only */
  KV_SWIM_PUSH_PULL = 6, /* updates = the sender's whole table (kv_swim_export);
                            reply false asks for the receiver's table back */
} kv_swim_msg_type;

/* A message in or out. Every message may carry piggybacked updates; the
 * server encodes it (protobuf) and sends PUSH_PULL over TCP, the rest as
 * datagrams. */
typedef struct kv_swim_msg {
  kv_swim_msg_type type;
  uint32_t seq;
  uint64_t from;           /* sender id, nonzero */
  const char *from_addr;   /* sender's address (how to answer an unknown one) */
  uint64_t target;         /* PING, PING_REQ */
  const char *target_addr; /* PING_REQ */
  bool join;               /* PUSH_PULL: sent by kv_swim_join */
  bool reply;              /* PUSH_PULL: this is the answer to one */
  const kv_swim_update *updates;
  size_t nupdates;
} kv_swim_msg;

/*
 * Called for every outgoing message. to is the member id, or 0 for a join
 * push-pull to an address not yet known as a member; to_addr is its address
 * (NULL only if neither the table nor the message it answers gave one). m and
 * everything it points to are borrowed for the call only. The callback must
 * not call any kv_swim_* function on the same kv_swim (panics); queue instead.
 */
typedef void (*kv_swim_emit_fn)(void *arg, uint64_t to, const char *to_addr,
                                const kv_swim_msg *m);

typedef struct kv_swim kv_swim;

/* A new member table holding only self (alive, incarnation 1, whose alive
 * update is queued for gossip). self_id is nonzero; name and addr are copied
 * and at most KV_SWIM_MAX_STR bytes (panics otherwise: these come from our
 * own configuration). o is read during the call; NULL means all defaults.
 * As in memberlist, the first probe, gossip and push-pull are staggered by a
 * random delay in (0, interval] drawn from rng. Never returns NULL; caller
 * frees with kv_swim_free. */
kv_swim *kv_swim_new(const kv_swim_opts *o, uint64_t self_id, const char *name,
                     const char *addr, uint64_t now_ms, kv_rng *rng);

/* Frees s. NULL does nothing. */
void kv_swim_free(kv_swim *s);

/* The options in effect, defaults filled in. */
kv_swim_opts kv_swim_opts_get(const kv_swim *s);

/*
 * Runs the timers due at now_ms: starts a probe (ping to the next member in
 * the shuffled round-robin order, with the buddy suspicion attached if it is
 * suspect), sends ping-reqs to indirect_checks random alive members when the
 * direct ack is late, suspects the target when the probe's scaled interval
 * ends with no ack, sends nacks for helped probes that timed out, declares
 * dead the suspects whose suspicion timeout expired, gossips queued updates
 * to gossip_nodes random members, and starts a push-pull with one random
 * alive member. rng chooses peers and shuffles. Returns the next time (ms)
 * to call kv_swim_tick (the same as kv_swim_next_due). Not callable from
 * inside an emit callback (panics).
 */
uint64_t kv_swim_tick(kv_swim *s, uint64_t now_ms, kv_rng *rng,
                      kv_swim_emit_fn emit, void *arg);

/* The time kv_swim_tick wants to run next (possibly in the past after a
 * kv_swim_recv: tick as soon as convenient). */
uint64_t kv_swim_next_due(const kv_swim *s);

/*
 * A received message (borrowed for the call; strings are copied if kept).
 * Its updates are applied first, then it is answered: a PING for us is
 * acked, a PING_REQ makes us ping its target and later relay the ack or send
 * a nack, an ACK or NACK counts towards our probe or is relayed, and a
 * PUSH_PULL that is not a reply is answered with our table before merging.
 * Returns KV_OK, or KV_BAD_REQUEST (and changes nothing) if m is malformed:
 * from is 0 or self, an unknown type, a PING_REQ whose target is 0 or
 * self, an update with id 0, an unknown
 * state, an ALIVE update without name or addr, a string over
 * KV_SWIM_MAX_STR, or more than KV_SWIM_MAX_UPDATES updates. Not callable
 * from inside an emit callback (panics).
 */
int kv_swim_recv(kv_swim *s, uint64_t now_ms, kv_rng *rng, const kv_swim_msg *m,
                 kv_swim_emit_fn emit, void *arg) KV_WARN_UNUSED;

/* Joins a cluster through a seed known only by address (borrowed): emits a
 * PUSH_PULL with join set to (0, addr). The seed's reply, passed to
 * kv_swim_recv, fills the table; gossip does the rest. */
void kv_swim_join(kv_swim *s, const char *addr, kv_swim_emit_fn emit,
                  void *arg);

/* Graceful leave: self becomes LEFT and that is queued for gossip. The
 * caller keeps ticking and receiving until kv_swim_stats.queued is 0 or a
 * timeout (a few gossip intervals), then stops. A left node answers pings
 * but no longer probes or push-pulls. Calling it twice does nothing. */
void kv_swim_leave(kv_swim *s, uint64_t now_ms);

/* The whole table including self, for a push-pull message or inspection
 * (a SUSPECT row's from is its accuser): *out is set to n rows owned by s,
 * valid until the next call that is not a getter on s. */
void kv_swim_export(kv_swim *s, const kv_swim_update **out, size_t *n);

/* A member as we see it. name and addr are borrowed until the next call
 * that is not a getter on s. */
typedef struct kv_swim_member {
  uint64_t id;
  const char *name, *addr;
  kv_swim_state state;
  uint64_t incarnation;
  uint64_t state_since_ms; /* when it entered state (as we learned it) */
} kv_swim_member;

/* Looks up id (self included). Returns KV_OK and fills *out, or
 * KV_NOTFOUND (a normal outcome). */
int kv_swim_member_get(const kv_swim *s, uint64_t id,
                       kv_swim_member *out) KV_WARN_UNUSED;

/* The number of members in the table, self and dead/left ones included. */
size_t kv_swim_count(const kv_swim *s);

/* Writes up to cap ids of ALIVE members other than self to out, in table
 * order, and returns how many there are in all (may exceed cap): the peers
 * rumors and anti-entropy may choose (§6.3). */
size_t kv_swim_alive_peers(const kv_swim *s, uint64_t *out, size_t cap);

/* A membership change: new member (old_state KV_SWIM_NONE) or a state change
 * (incarnation-only changes are not events). */
typedef struct kv_swim_event {
  uint64_t id;
  kv_swim_state old_state, new_state;
  uint64_t incarnation;
  uint64_t at_ms;
} kv_swim_event;

/* Pops the oldest pending event into *out; false if there is none. Events
 * queue up until popped (one per change), so pop them after each call. */
bool kv_swim_next_event(kv_swim *s, kv_swim_event *out);

/* Lifeguard local health score, 0..awareness_max-1 (0 is healthy). */
unsigned kv_swim_health(const kv_swim *s);

/* The suspicion timeout (ms) for a cluster of n members after c independent
 * confirmations out of k expected, with o's options (NULL = defaults):
 * min = suspicion_mult * max(1, log10 n) * probe_interval, max =
 * suspicion_max_mult * min, max(min, max - (max-min) * log(c+1)/log(k+1)),
 * and min when k is 0. */
uint64_t kv_swim_suspicion_timeout(const kv_swim_opts *o, size_t n, unsigned k,
                                   unsigned c);

/* The number of times an update is piggybacked in a cluster of n members:
 * retransmit_mult * ceil(log10(n+1)). */
unsigned kv_swim_retransmit_limit(const kv_swim_opts *o, size_t n);

/* The bytes an update counts for against piggyback_bytes: an estimate of its
 * encoded size (fixed overhead plus name and address lengths). */
size_t kv_swim_update_size(const kv_swim_update *u);

/* Cumulative counters since kv_swim_new; queued is the broadcast queue's
 * current length. */
typedef struct kv_swim_stats {
  uint64_t sent, pings, acks, ping_reqs, nacks, gossips, push_pulls;
  uint64_t probes, probes_failed, suspected, declared_dead, refuted;
  uint64_t updates_sent;
  size_t queued;
} kv_swim_stats;

void kv_swim_stats_get(const kv_swim *s, kv_swim_stats *out);

/* ---- on the wire (membership_wire.c) ---- */

/* Encodes m as a peer message (proto/peer.proto: PeerMessage with a Swim
 * body; NULL strings become empty ones) into *out, which the caller frees
 * with kv_buf_free. m is borrowed for the call. */
void kv_swim_encode(const kv_swim_msg *m, kv_buf *out);

/* A received Swim body turned into a kv_swim_msg (decoded.msg). Its strings
 * point into the protobuf message it came from, which must outlive it; its
 * update array is owned here: free with kv_swim_decoded_fini. */
typedef struct kv_swim_decoded {
  kv_swim_msg msg;
  kv_swim_update *ups;
} kv_swim_decoded;

struct Kvpb__Swim;
/* Decodes sw (hostile input; empty strings become NULL). KV_OK, or
 * KV_BAD_REQUEST (d zeroed, nothing to free) when it has more than
 * KV_SWIM_MAX_UPDATES updates or an update's state is not one of ALIVE,
 * SUSPECT, DEAD, LEFT. Everything else is checked by kv_swim_recv. */
int kv_swim_decode(const struct Kvpb__Swim *sw,
                   kv_swim_decoded *d) KV_WARN_UNUSED;

/* Frees what d owns; d may then be reused. */
void kv_swim_decoded_fini(kv_swim_decoded *d);

#endif
