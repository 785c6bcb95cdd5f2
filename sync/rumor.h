/*
 * Rumor mongering (DESIGN.md §6.2), the sans-I/O core: Demers' push,
 * feedback + counter variant. A freshly committed or freshly learned state of
 * a key is a hot rumor; each round pushes it to `fanout` random alive peers it
 * has not been pushed to before, and it dies after k "not news" acks, after
 * max_rounds rounds, or when no new peer is left. Rumors are a fast path only:
 * the hot set is bounded in count and bytes and overflow drops the oldest,
 * because anti-entropy (§6.1) repairs whatever a lost rumor would have carried.
 *
 * Pure (§7): no I/O, no clock, no randomness except the kv_rng passed to
 * kv_rumor_tick, and the same calls with the same rng seed give the same
 * emits, in the same order. Single-threaded: the event-loop thread owns a
 * kv_rumor. Replica ids are nonzero; 0 means "no replica" (a local write).
 * Allocation failure panics (proto/buf.h); no call returns an error.
 */
#ifndef KV_RUMOR_H
#define KV_RUMOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sync/rng.h"

#define KV_RUMOR_DEFAULT_FANOUT 3
#define KV_RUMOR_DEFAULT_K 2
#define KV_RUMOR_DEFAULT_MAX_ROUNDS 4
#define KV_RUMOR_DEFAULT_ACK_TIMEOUT_MS 1000
#define KV_RUMOR_DEFAULT_MAX_RUMORS 10000
#define KV_RUMOR_DEFAULT_MAX_BYTES ((size_t)64 << 20)

/* Every field left 0 takes its default. */
typedef struct kv_rumor_opts {
  unsigned fanout;         /* peers per push round; 0 = 3 */
  unsigned k;              /* a rumor dies after k not-news acks; 0 = 2 */
  unsigned max_rounds;     /* push rounds before a rumor dies anyway; 0 = 4 */
  uint64_t ack_timeout_ms; /* a round whose acks have not all arrived by then
                              is over; 0 = 1000 */
  size_t max_rumors;       /* hot set bound (count); 0 = 10000 */
  size_t max_bytes;        /* hot set bound (key+object bytes); 0 = 64 MiB */
} kv_rumor_opts;

typedef struct kv_rumor kv_rumor;

/* A new, empty hot set. o is read during the call only; NULL means all
 * defaults. Never returns NULL. Caller frees with kv_rumor_free. */
kv_rumor *kv_rumor_new(const kv_rumor_opts *o);

/* Frees r and every rumor in it. NULL does nothing. */
void kv_rumor_free(kv_rumor *r);

/* The options in effect, defaults filled in. */
kv_rumor_opts kv_rumor_opts_get(const kv_rumor *r);

/*
 * A fresh state of key: key and obj are copied, digest (16 bytes, the
 * caller's kv_object_digest of obj) names the version that acks refer to.
 * from is 0 for a local write, else the replica the state came from; that
 * replica is never a target. The rumor is due at the next kv_rumor_tick.
 *
 * If key is already hot the new state replaces it (whatever its digest) and
 * starts over: no peers pushed to, no rounds, no not-news acks; it becomes
 * the newest rumor, and acks for the old digest are ignored from now on.
 *
 * Bounds: the oldest rumors are dropped until the new one fits both
 * max_rumors and max_bytes (stats.dropped counts them). A rumor whose
 * keylen + objlen alone exceeds max_bytes is itself dropped, and so is the
 * older hot state of its key (it is superseded), but nothing else. Not
 * callable from inside an emit callback (panics).
 */
void kv_rumor_add(kv_rumor *r, const uint8_t *key, size_t keylen,
                  const uint8_t *obj, size_t objlen, const uint8_t digest[16],
                  uint64_t from, uint64_t now_ms);

/* Called by kv_rumor_tick once for every (peer, rumor) push due now. key and
 * obj are borrowed for the call only. The callback must not call any
 * kv_rumor_* function on the same kv_rumor (panics); queue instead. */
typedef void (*kv_rumor_emit_fn)(void *arg, uint64_t peer, const uint8_t *key,
                                 size_t keylen, const uint8_t *obj,
                                 size_t objlen);

/*
 * Runs the push rounds due at now_ms. A rumor is due when it was just added
 * or when its previous round ended: every ack of that round arrived, or
 * ack_timeout_ms passed since it was pushed. A due rumor that has had
 * max_rounds rounds dies; otherwise it is pushed to min(fanout, left) peers
 * chosen uniformly at random via rng from peers[0..npeers) (the currently
 * alive peers, self not included, any order, duplicates harmless), where
 * "left" excludes its `from` and every peer it was pushed to in an earlier
 * round; if none is left it dies. Due rumors are handled oldest first.
 *
 * peers is borrowed for the call. Cost is O(due rumors × (npeers + pushed
 * peers)); a tick with nothing due is O(1). Returns the next time (ms) the
 * caller should tick again, or UINT64_MAX if nothing is pending.
 */
uint64_t kv_rumor_tick(kv_rumor *r, uint64_t now_ms, kv_rng *rng,
                       const uint64_t *peers, size_t npeers,
                       kv_rumor_emit_fn emit, void *arg);

/* The time kv_rumor_tick wants to run next (after adds or acks since the last
 * tick, possibly in the past: tick as soon as convenient), or UINT64_MAX if
 * nothing is pending. */
uint64_t kv_rumor_next_due(const kv_rumor *r);

/*
 * An ack from peer about key at digest (both borrowed for the call). Ignored
 * if key is not hot, digest is not its current version, peer was never
 * pushed this version, or peer already acked it (so a duplicated ack counts
 * once). news == false counts towards k and the rumor dies on the k-th;
 * news == true does not. Either way, if peer's ack was pending in the current
 * round it is cleared, and when the round's last pending ack arrives the
 * rumor is due again. An ack arriving after its round timed out still counts
 * towards k. now_ms is the time the rumor becomes due. Not callable from
 * inside an emit callback (panics).
 */
void kv_rumor_ack(kv_rumor *r, uint64_t peer, const uint8_t *key, size_t keylen,
                  const uint8_t digest[16], bool news, uint64_t now_ms);

/* Cumulative counters since kv_rumor_new, and the hot set's current size.
 * added counts every kv_rumor_add (replacements and rumors dropped for size
 * included); replaced the adds that replaced a hot key; pushed the emits;
 * acks the acks accepted (not ignored), news_acks those with news; died the
 * rumors ended by k, max_rounds or running out of peers; dropped those
 * evicted or refused by the bounds. */
typedef struct kv_rumor_stats {
  uint64_t added, pushed, acks, news_acks, died, dropped;
  size_t hot, hot_bytes;
  uint64_t replaced;
} kv_rumor_stats;

void kv_rumor_stats_get(const kv_rumor *r, kv_rumor_stats *out);

#endif
