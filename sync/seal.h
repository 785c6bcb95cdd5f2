/*
 * Sealing of peer envelopes (DESIGN.md §8): every message between replicas is
 * encrypted and authenticated with XChaCha20-Poly1305 (libsodium, IETF AEAD)
 * under the cluster key, with a clear header (version, flags, cluster id,
 * sender, timestamp, counter) bound to it as associated data. The receiver
 * refuses envelopes from another cluster, with a timestamp outside the
 * allowed clock skew, or whose (sender, counter) it has already accepted, and
 * remembers a counter only once the tag has verified, so a forgery cannot
 * move a sender's replay window.
 *
 * Sans-I/O (DESIGN.md §7): no I/O, clock or random source here. The caller
 * passes now_ms and each envelope's 24-byte random nonce (the server takes it
 * from randombytes_buf, the simulator from its seeded rng). Call
 * sodium_init() once at process start, before kv_seal_new (the server's main
 * does); this module does not, because sodium_init also opens the system
 * random source. A kv_seal is not thread-safe: one thread (the event loop)
 * owns it.
 *
 * Wire format, all integers big-endian:
 *
 *   offset  0  version    u8   KV_SEAL_VERSION
 *   offset  1  flags      u8   bit 0: insecure (body in clear, no tag);
 *                              bits 1..7 are zero in version 1
 *   offset  2  cluster_id u64  kv_seal_cluster_id(cluster name)
 *   offset 10  sender     u64  the sealing replica's id
 *   offset 18  ts_ms      u64  the sender's now_ms when sealing
 *   offset 26  counter    u64  per-sender, strictly increasing
 *   offset 34  nonce      24 bytes
 *   offset 58  ciphertext of the body, then the 16-byte Poly1305 tag
 *              (insecure mode: the body in clear, no tag)
 *
 * The 34-byte header is the AEAD's associated data.
 */
#ifndef KV_SEAL_H
#define KV_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"
#include "proto/kv_err.h"

#define KV_SEAL_KEY_LEN 32
#define KV_SEAL_NONCE_LEN 24
#define KV_SEAL_TAG_LEN 16
#define KV_SEAL_MAX_KEYS 8
#define KV_SEAL_VERSION 1
/* Flag bit 0 of the header: the envelope was sealed in insecure mode. */
#define KV_SEAL_FLAG_INSECURE 0x01
/* header(version u8, flags u8, cluster_id u64, sender u64, ts_ms u64,
 * counter u64, big-endian) | nonce | ciphertext+tag */
#define KV_SEAL_HEADER_LEN 34
#define KV_SEAL_OVERHEAD                                                       \
  (KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + KV_SEAL_TAG_LEN)
/* An insecure envelope carries no tag. */
#define KV_SEAL_INSECURE_OVERHEAD (KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN)
/* The replay window: the highest counter seen per sender and the 63 below. */
#define KV_SEAL_WINDOW 64
#define KV_SEAL_DEFAULT_SKEW_MS 30000
#define KV_SEAL_DEFAULT_MAX_SENDERS 4096

/* X(NAME, label). The verdicts of kv_seal_open (which lists the order its
 * checks run in); labels are for metrics and logs. Values are stable, so a
 * verdict can index an array of KV_SEAL_NVERDICTS counters. */
#define KV_SEAL_VERDICT_MAP(X)                                                 \
  X(OK, "ok")                                                                  \
  X(TRUNCATED, "truncated")                                                    \
  X(BAD_VERSION, "bad_version")                                                \
  X(WRONG_CLUSTER, "wrong_cluster")                                            \
  X(STALE, "stale")                                                            \
  X(REPLAY, "replay")                                                          \
  X(BAD_TAG, "bad_tag")                                                        \
  X(MODE_MISMATCH, "mode_mismatch")

typedef enum kv_seal_verdict {
#define KV_SEAL_VERDICT_ENUM(name, label) KV_SEAL_##name,
  KV_SEAL_VERDICT_MAP(KV_SEAL_VERDICT_ENUM)
#undef KV_SEAL_VERDICT_ENUM
      KV_SEAL_NVERDICTS
} kv_seal_verdict;

/* The static label of v ("ok", "truncated", "bad_version", "wrong_cluster",
 * "stale", "replay", "bad_tag", "mode_mismatch"), or "unknown" for a value
 * outside the enum. Never NULL; not to be freed. */
const char *kv_seal_verdict_name(kv_seal_verdict v);

/* The cluster id of a cluster name: the first 8 bytes, read big-endian, of
 * its 32-byte BLAKE2b hash (crypto_generichash, no key). name is borrowed for
 * the call and must not be NULL. */
uint64_t kv_seal_cluster_id(const char *name);

typedef struct kv_seal_opts {
  /* Cluster name (not NULL; borrowed for the kv_seal_new call). */
  const char *cluster;
  /* This replica's id, written into every envelope it seals. */
  uint64_t sender;
  /* First counter value: the server passes its boot time in microseconds, so
   * a restarted replica's counters move past those it used before. */
  uint64_t counter_start;
  /* Keyring, copied in: keys[0] seals, every key is tried when opening.
   * nkeys 0 = insecure mode (keys may then be NULL). At most
   * KV_SEAL_MAX_KEYS keys; an all-zero key is refused as unconfigured. */
  const uint8_t (*keys)[KV_SEAL_KEY_LEN];
  size_t nkeys;
  /* Largest accepted |ts_ms - now_ms|, inclusive; 0 = 30000. */
  uint64_t max_skew_ms;
  /* Most senders whose replay window is kept; 0 = 4096. When the table is
   * full, the sender least recently updated is evicted (see kv_seal_open). */
  size_t max_senders;
} kv_seal_opts;

typedef struct kv_seal kv_seal;

/* Creates a sealer/opener from *o (borrowed for the call; the keys and
 * settings are copied). On KV_OK, *out is the new handle, which the caller
 * frees with kv_seal_free. Returns KV_INVALID, with *out set to NULL, when o
 * or out is NULL, o->cluster is NULL, o->nkeys exceeds KV_SEAL_MAX_KEYS,
 * o->nkeys > 0 with o->keys NULL, or a key is all zero bytes. */
KV_WARN_UNUSED int kv_seal_new(const kv_seal_opts *o, kv_seal **out);

/* Wipes the copied keys (sodium_memzero) and frees s. NULL does nothing. */
void kv_seal_free(kv_seal *s);

/* Whether s was created without keys (insecure mode). */
bool kv_seal_insecure(const kv_seal *s);

/* The counter the next kv_seal_seal will use. */
uint64_t kv_seal_next_counter(const kv_seal *s);

/* Number of senders whose replay window s currently keeps (at most
 * max_senders). */
size_t kv_seal_senders(const kv_seal *s);

/* Seals len bytes at body (borrowed; NULL only if len is 0) into *out:
 * header | nonce | ciphertext+tag, KV_SEAL_OVERHEAD + len bytes, stamped with
 * ts_ms = now_ms and the next counter. nonce (borrowed) must be 24 fresh
 * random bytes: reusing a nonce under the same key breaks the cipher. The
 * caller frees out with kv_buf_free; the previous contents of *out are
 * overwritten, not freed. In insecure mode the body is sent in clear after
 * header|nonce, with flags bit 0 set and no tag (KV_SEAL_INSECURE_OVERHEAD +
 * len bytes); receivers in secure mode refuse it (MODE_MISMATCH), and vice
 * versa. Sealing after the counter has used UINT64_MAX is a broken invariant
 * and panics (unreachable with counter_start = boot time in microseconds). */
void kv_seal_seal(kv_seal *s, uint64_t now_ms,
                  const uint8_t nonce[KV_SEAL_NONCE_LEN], const uint8_t *body,
                  size_t len, kv_buf *out);

typedef struct kv_seal_info {
  uint64_t sender, ts_ms, counter;
  /* Index in the ring of the key that opened the envelope: 0 is the primary,
   * more means the peer still seals with an older key. 0 in insecure mode. */
  size_t key;
} kv_seal_info;

/* Opens the len bytes at env (hostile input; borrowed for the call). On
 * KV_SEAL_OK, *body holds the plaintext (caller frees with kv_buf_free; an
 * empty body is {NULL, 0}) and *info the authenticated header (info may be
 * NULL). On any other verdict, *body is {NULL, 0}, *info is untouched and
 * nothing in s changes: the caller drops the envelope and counts the verdict.
 *
 * Checks, in this order, stopping at the first failure:
 *   TRUNCATED      shorter than header|nonce
 *   BAD_VERSION    version is not KV_SEAL_VERSION, or a flag bit other than
 *                  bit 0 is set
 *   WRONG_CLUSTER  cluster id is not ours
 *   MODE_MISMATCH  flags bit 0 disagrees with our mode (secure vs insecure)
 *   TRUNCATED      (secure mode) too short to hold the tag
 *   STALE          |ts_ms - now_ms| > max_skew_ms, either direction
 *   REPLAY         the counter was already accepted from this sender or is
 *                  below its window (more than KV_SEAL_WINDOW - 1 under the
 *                  highest accepted); also an envelope carrying our own
 *                  sender id and a counter we have already used, i.e. one
 *                  of ours reflected back to us
 *   BAD_TAG        (secure mode) no key of the ring authenticates it
 * Only after all of these pass is the counter recorded in the sender's
 * window. Each (sender, counter) is thus accepted at most once while the
 * sender stays in the table; counters may arrive in any order within the
 * window (UDP reordering).
 *
 * The table keeps at most max_senders senders. Recording a sender not in a
 * full table evicts the one least recently recorded; that sender's next
 * envelope is then accepted on its timestamp alone, so an old envelope of
 * its can be replayed once within max_skew_ms. Size max_senders above the
 * cluster's replica count to rule that out. Insecure mode runs the same
 * checks but authenticates nothing: anyone can forge any envelope. */
kv_seal_verdict kv_seal_open(kv_seal *s, uint64_t now_ms, const uint8_t *env,
                             size_t len, kv_seal_info *info, kv_buf *body);

/* Opens env like kv_seal_open but whatever cluster id it names (returned in
 * *cluster_id, which may be NULL), and without consulting or moving the
 * sender's replay window: the tag, version, mode and clock skew are still
 * checked. For one purpose only: a replica that holds our key but names
 * another cluster is told why it is refused (a Hello read this way is never
 * admitted), and a joiner reads that refusal. A replayed envelope opens
 * again, so nothing opened this way may change state beyond a log line. */
kv_seal_verdict kv_seal_open_foreign(kv_seal *s, uint64_t now_ms,
                                     const uint8_t *env, size_t len,
                                     uint64_t *cluster_id, kv_seal_info *info,
                                     kv_buf *body);

#endif
