/*
 * The anti-entropy exchange (DESIGN.md §6.1) as a sans-I/O core: encoded
 * PeerMessage bytes in, encoded PeerMessage bytes and objects to merge out,
 * with no I/O, clock or randomness inside. The initiator compares roots, then
 * descends the XOR Merkle tree one level per round trip (all differing nodes
 * of a level in one message), swaps (key, digest) lists for the differing
 * segments, then pulls the responder's objects for keys it lacks or holds
 * differently and pushes its own for keys the responder lacks or holds
 * differently; each side merges what it receives. The responder is stateless,
 * so one replica can answer any number of peers. Every field from the peer is
 * validated before use; a malformed or unexpected message is KV_BAD_REQUEST,
 * never a crash.
 */
#ifndef KV_ANTIENTROPY_H
#define KV_ANTIENTROPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"
#include "proto/kv_err.h"
#include "sync/merkle.h"

#define KV_AE_MAX_KEY 507
/* The root exchange carries the first 8 bytes of each root: an in-sync
 * exchange then costs under 100 bytes each way on the wire, sealed and
 * framed. Two different roots agree on 64 bits with probability 2^-64; the
 * descent below the root uses whole 16-byte hashes. */
#define KV_AE_ROOT_PREFIX 8                  /* DESIGN.md §2 */
#define KV_AE_DEFAULT_MAX_SEGMENTS 4096      /* per exchange */
#define KV_AE_DEFAULT_MAX_KEYS 100000        /* per AeSegmentsReply / AePull */
#define KV_AE_DEFAULT_MAX_PUSH_BYTES 1048576 /* per AePush / AePull message */

/* Called once per key listed by kv_ae_store.list_segment. key and digest are
 * borrowed for the duration of the call (the core copies what it keeps). */
typedef void (*kv_ae_key_fn)(void *arg, const uint8_t *key, size_t keylen,
                             const uint8_t digest[16]);

/* The local replica as the core sees it, provided by the driver (server: LMDB
 * reads; simulator: memory). The core borrows ctx and tree for as long as an
 * exchange (or a kv_ae_respond call) uses them. */
typedef struct kv_ae_store {
  void *ctx;
  /* The local in-memory tree, current: the core reads it when a message
   * arrives and never keeps hashes across messages, so the driver may apply
   * writes between calls. Its segment bits must equal the peer's (checked at
   * Hello); a mismatch shows up as KV_BAD_REQUEST. */
  const kv_merkle *tree;
  /* Calls fn for every key of segment seg with its object digest. Returns
   * KV_OK or an error, which the core returns to its caller unchanged. */
  int (*list_segment)(void *ctx, uint32_t seg, kv_ae_key_fn fn, void *arg);
  /* Copies key's canonical object bytes into *obj (caller frees with
   * kv_buf_free); KV_NOTFOUND if absent; any other error is returned to the
   * core's caller unchanged. */
  int (*get_object)(void *ctx, const uint8_t *key, size_t keylen, kv_buf *obj);
} kv_ae_store;

/* Work bounds. Both ends of an exchange should use the same values (they are
 * cluster configuration): a responder with smaller bounds answers a prefix,
 * which the initiator accepts, and the rest is repaired by later exchanges,
 * but an AePull of more keys than the responder's max_keys is refused. The
 * peer frame limit must admit an AeSegmentsReply of max_keys entries, about
 * max_keys * (key length + 23) bytes. */
typedef struct kv_ae_opts {
  size_t max_segments;   /* segments carried to the key phase per exchange,
                            and nodes answered per AeLevelReq; 0 = 4096 */
  size_t max_keys;       /* (key, digest) entries per AeSegmentsReply and keys
                            per AePull; 0 = 100000 */
  size_t max_push_bytes; /* encoded bytes per AePush or AePull message (one
                            object larger than this goes alone); 0 = 1 MiB */
} kv_ae_opts;

/* Hands one encoded PeerMessage (borrowed for the call) to the driver, which
 * seals, frames and sends it to the peer of the exchange. */
typedef void (*kv_ae_send_fn)(void *arg, const uint8_t *msg, size_t len);

/* Asks the driver to merge the peer's canonical object bytes for key into the
 * local store (both borrowed for the call). The bytes come from the peer and
 * are not decoded by the core: the driver decodes them (kv_object_decode)
 * and drops what fails. The merge may complete later; the exchange never
 * depends on seeing its result. Never called with empty object bytes. */
typedef void (*kv_ae_merge_fn)(void *arg, const uint8_t *key, size_t keylen,
                               const uint8_t *obj, size_t objlen);

typedef struct kv_ae_stats {
  uint64_t segments_differing; /* segments carried to the key phase */
  uint64_t keys_compared;      /* distinct keys in both (key, digest) lists */
  uint64_t keys_pushed;        /* objects sent to the peer */
  uint64_t keys_pulled;        /* objects received from the peer */
  uint64_t bytes_sent, bytes_received; /* encoded PeerMessage bytes */
  uint64_t messages_sent, messages_received;
  bool in_sync; /* the roots were equal */
  bool partial; /* a cap was hit: differences may remain for next time */
} kv_ae_stats;

/* One exchange, initiator side. */
typedef struct kv_ae kv_ae;

/* Starts an exchange with id exchange_id (chosen by the driver, unique among
 * its open exchanges) and sends AeRoot through send. o may be NULL (all
 * defaults) and is copied; st is copied, its ctx and tree borrowed until
 * kv_ae_free. Caller frees the exchange with kv_ae_free. Never NULL. */
kv_ae *kv_ae_start(const kv_ae_opts *o, const kv_ae_store *st,
                   uint64_t exchange_id, kv_ae_send_fn send, void *arg);

void kv_ae_free(kv_ae *x); /* NULL does nothing */

/* Feeds one encoded PeerMessage (msg, len: borrowed for the call) received
 * from the peer for this exchange. Sends what follows through the exchange's
 * send function and hands objects received in AePush (answers to this
 * exchange's pulls) to merge (not NULL). Returns:
 *  - KV_OK: continue; more messages are expected.
 *  - KV_CLOSED: the exchange is complete (AeDone sent unless the roots were
 *    equal) and its stats are final.
 *  - KV_BAD_REQUEST: malformed bytes, another exchange's id, or a message
 *    this exchange does not expect now; nothing from it was merged.
 *  - an error from st->list_segment or st->get_object.
 * Any result but KV_OK ends the exchange: later calls return KV_BAD_REQUEST
 * and change nothing. The core has no clock, so the driver must also end
 * (kv_ae_free) an exchange whose peer stays silent too long. */
KV_WARN_UNUSED int kv_ae_feed(kv_ae *x, const uint8_t *msg, size_t len,
                              kv_ae_merge_fn merge, void *marg);

/* The exchange's counters so far (final once kv_ae_feed returned anything
 * but KV_OK). Borrowed from x until kv_ae_free. */
const kv_ae_stats *kv_ae_stats_of(const kv_ae *x);

/* Responder side, stateless: answers one encoded AE message (msg, len:
 * borrowed) from a peer. AeRoot, AeLevelReq, AeSegmentsReq and AePull are
 * answered through send; AePush objects are handed to merge (not NULL; empty
 * objects skipped); AeDone is accepted and ignored. A responder answers a
 * prefix of a request that exceeds its bounds: at most max_segments nodes or
 * segments, whole segments up to max_keys entries (always at least the first
 * segment, so that every exchange makes progress), and AePush batches of at
 * most max_push_bytes; a pulled key it does not hold is answered with empty
 * object bytes ("nothing here") so the initiator can count its pulls. o may be
 * NULL. Returns KV_OK; KV_BAD_REQUEST for malformed input or an initiator-bound
 * message (nothing sent or merged); or an error from st->list_segment or
 * st->get_object (AePull answers already sent stay sent). */
KV_WARN_UNUSED int kv_ae_respond(const kv_ae_opts *o, const kv_ae_store *st,
                                 const uint8_t *msg, size_t len,
                                 kv_ae_send_fn send, void *arg,
                                 kv_ae_merge_fn merge, void *marg);

/* Routing: the exchange id of an encoded AE message, and whether it is bound
 * for the initiator (AeRootReply, AeLevelReply, AeSegmentsReply, AePush) or
 * the responder (AeRoot, AeLevelReq, AeSegmentsReq, AePull, AeDone).
 * AePush travels both ways (an initiator's pushes, a responder's answers to
 * pulls), so the rule for the driver is: feed a message with *to_initiator
 * set to the exchange it started with that id on that peer if one is open,
 * and give everything else to kv_ae_respond (which merges a stray AePush and
 * refuses stale replies). KV_BAD_REQUEST if msg is not a well-formed AE
 * message; KV_OK does not promise that feed or respond will accept it. */
KV_WARN_UNUSED int kv_ae_message_exchange(const uint8_t *msg, size_t len,
                                          uint64_t *exchange,
                                          bool *to_initiator);

#endif
