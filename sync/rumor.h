/*
 * Rumor mongering (DESIGN.md §6.2), the sans-I/O core: Demers' push,
 * feedback + counter variant, pushed in batches. A freshly committed or
 * freshly learned state of a key is a hot rumor. Every tick chooses `fanout`
 * peers once for the whole hot set and sends each of them, as one batch,
 * every hot rumor it is not known to hold; a rumor dies after k "not news"
 * acks, after being pushed in max_rounds ticks, or when no alive peer is left
 * that is not known to hold it. Rumors are a fast path only: the hot set is
 * bounded in count and bytes and overflow drops the oldest, because
 * anti-entropy (§6.1) repairs whatever a lost rumor would have carried.
 *
 * How this refines §6.2, which describes one push per rumor:
 * - Fanout is per tick, not per rumor, so that a tick costs `fanout`
 *   messages however many rumors are hot (the per-rumor draw put 1.06 rumors
 *   in a message at 100 writes/s on 25 replicas). Targets come from a
 *   shuffled round robin, so consecutive ticks reach different peers.
 * - A local write (from == 0) makes the next tick due at once, so it still
 *   reaches `fanout` peers within milliseconds on a LAN. News learned from a
 *   peer is forwarded in the next paced tick, not at once; so is every later
 *   round. Ticks are one interval apart, and the interval follows the links:
 *   a third of the smoothed time from a push to its ack, within [5 ms, 1 s]
 *   (about 67 ms on 100 ms links, 5 ms on a LAN), so that a rumor's rounds
 *   span about one round trip wherever it runs. A node that has not ticked
 *   for an interval ticks at once.
 * - Rounds do not wait for acks: a hot rumor goes out in every tick until it
 *   dies. A peer known to hold the version (its sender, a peer it was pushed
 *   to, one that pushed the same version to us) is never pushed it again.
 * - Acks stay per rumor (kv_rumor_ack), but the driver sends them per
 *   message: one RumorAcks answering a whole Rumors message.
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
#define KV_RUMOR_DEFAULT_MIN_INTERVAL_MS 5
#define KV_RUMOR_DEFAULT_MAX_INTERVAL_MS 1000
/* The adaptive interval is the smoothed round trip divided by this. */
#define KV_RUMOR_RTT_DIVISOR 3
#define KV_RUMOR_DEFAULT_MAX_RUMORS 10000
#define KV_RUMOR_DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define KV_RUMOR_DEFAULT_MAX_BATCH_BYTES ((size_t)256 << 10)

/* Every field left 0 takes its default. */
typedef struct kv_rumor_opts {
  unsigned fanout;          /* peers chosen per tick; 0 = 3 */
  unsigned k;               /* a rumor dies after k not-news acks; 0 = 2 */
  unsigned max_rounds;      /* ticks a rumor is pushed in before it dies;
                               0 = 4 */
  uint64_t interval_ms;     /* least time between two ticks, unless a local
                               write is waiting; 0 = adaptive (see
                               kv_rumor_interval) */
  uint64_t min_interval_ms; /* bounds of the adaptive interval; 0 = 5 */
  uint64_t max_interval_ms; /* 0 = 1000 (and below min: min) */
  size_t max_rumors;        /* hot set bound (count); 0 = 10000 */
  size_t max_bytes;         /* hot set bound (key+object bytes); 0 = 64 MiB */
  size_t max_batch_bytes;   /* key+object bytes in one tick's batch to one
                               peer (one rumor always fits); 0 = 256 KiB */
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
 * from is 0 for a local write, else the replica the state came from, which
 * is known to hold it and so is never a target. A local write makes the
 * next tick due at now_ms; any other add makes it due one interval after
 * the last tick (at now_ms if there was none).
 *
 * If key is already hot the new state replaces it (whatever its digest) and
 * starts over: no peers known but `from`, no rounds, no not-news acks; it
 * becomes the newest rumor, and acks for the old digest are ignored from
 * now on.
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

/* Called by kv_rumor_tick once for every (peer, rumor) push. All of one
 * tick's pushes to a peer are emitted one after another, so the driver can
 * send each peer's run as one message. key and obj are borrowed for the
 * call only. The callback must not call any kv_rumor_* function on the same
 * kv_rumor (panics); queue instead. */
typedef void (*kv_rumor_emit_fn)(void *arg, uint64_t peer, const uint8_t *key,
                                 size_t keylen, const uint8_t *obj,
                                 size_t objlen);

/*
 * Runs a tick if one is due at now_ms (see kv_rumor_next_due); called
 * earlier, it does nothing. peers[0..npeers) are the currently alive peers
 * (self not included, any order, duplicates and zeros harmless), borrowed
 * for the call.
 *
 * The candidates are the peers that may be pushed at least one hot rumor,
 * that is, are not known to hold it. The tick takes min(fanout, candidates)
 * of them in turn from a round robin over the candidates, reshuffled via
 * rng whenever it has gone round; for each it emits every hot rumor that
 * peer is not known to hold, newest first, skipping those that would take
 * the batch past max_batch_bytes (the first always goes), and from then on
 * counts the peer as holding them. Then each rumor pushed in this tick has
 * had one more round and dies on its max_rounds-th; each one not pushed
 * dies if no peer in peers is left that it may be pushed to.
 *
 * Cost is O(hot rumors × (npeers + fanout) × known holders per rumor); a
 * call when nothing is due is O(1). Returns kv_rumor_next_due.
 */
uint64_t kv_rumor_tick(kv_rumor *r, uint64_t now_ms, kv_rng *rng,
                       const uint64_t *peers, size_t npeers,
                       kv_rumor_emit_fn emit, void *arg);

/* When kv_rumor_tick wants to run next: UINT64_MAX if nothing is hot, else
 * the earlier of the last tick + kv_rumor_interval and the time of the
 * first local add since the last tick. May be in the past: tick as soon as
 * convenient. An add or an ack can move it (an ack can shorten the
 * interval): ask again after either. */
uint64_t kv_rumor_next_due(const kv_rumor *r);

/* The interval between ticks now: interval_ms if set; else srtt /
 * KV_RUMOR_RTT_DIVISOR within [min_interval_ms, max_interval_ms], where
 * srtt is the smoothed round trip of pushes (gain 1/8; the first sample
 * sets it), or max_interval_ms before the first sample. A sample is the
 * time from a batch to the first ack that names the batch's first rumor,
 * for one of the last 64 batches, whether or not the rumor is still hot. */
uint64_t kv_rumor_interval(const kv_rumor *r);

/*
 * An ack from peer about key at digest (both borrowed for the call),
 * received at now_ms. It may give a round-trip sample (kv_rumor_interval).
 * Otherwise it is ignored if key is not hot, digest is not its current
 * version, peer was never pushed this version, or peer already acked it (so
 * a duplicated ack counts once). news == false counts towards k and the
 * rumor dies on the k-th; news == true does not. Not callable from inside
 * an emit callback (panics).
 */
void kv_rumor_ack(kv_rumor *r, uint64_t peer, const uint8_t *key, size_t keylen,
                  const uint8_t digest[16], bool news, uint64_t now_ms);

/* peer pushed us key at digest (both borrowed for the call): if that is the
 * hot version of key, peer is known to hold it and is not pushed it. It is
 * no feedback: it does not count towards k. Not callable from inside an
 * emit callback (panics). */
void kv_rumor_peer_has(kv_rumor *r, uint64_t peer, const uint8_t *key,
                       size_t keylen, const uint8_t digest[16]);

/* Cumulative counters since kv_rumor_new, and the hot set's current size.
 * added counts every kv_rumor_add (replacements and rumors dropped for size
 * included); replaced the adds that replaced a hot key; pushed the emits;
 * batches the (tick, peer) runs of emits, that is, the driver's messages;
 * acks the acks accepted (not ignored), news_acks those with news; seen the
 * kv_rumor_peer_has calls that taught us a holder; died the rumors ended by
 * k, max_rounds or running out of peers; dropped those evicted or refused
 * by the bounds. srtt_ms is the smoothed round trip (0 before a sample),
 * interval_ms the interval now. */
typedef struct kv_rumor_stats {
  uint64_t added, pushed, acks, news_acks, died, dropped;
  size_t hot, hot_bytes;
  uint64_t replaced, batches, seen;
  uint64_t srtt_ms, interval_ms;
} kv_rumor_stats;

void kv_rumor_stats_get(const kv_rumor *r, kv_rumor_stats *out);

#endif
