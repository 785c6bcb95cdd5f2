/*
 * The replicated object stored under one key (DESIGN.md §2): a register part
 * (a DVVSet of sibling values, tombstones included), a counter part (counter
 * state, a delete floor and a PN flag), and their canonical encoding and
 * digest.
 *
 * The object is the product of join-semilattices, so kv_object_merge is a
 * CRDT merge and no replica's update is ever dropped by it. That needs one
 * restriction: the register never holds anonymous DVVSet values. Riak's sync
 * rule for the anonymous list is not associative (tests/unit/dvv_test.c,
 * test_dvv_sync_anon_grouping), and only reconcile/lww create such values,
 * which the server never stores; decode refuses objects that carry them. The
 * kind a reader sees is derived, not stored: a register if any sibling is live
 * (not a tombstone), else a counter if the counter has risen above its floor,
 * else absent. Local operations enforce Redis-style typing against that kind
 * (KV_WRONG_TYPE), so a key is one kind at a time; if two replicas create the
 * same key concurrently with different kinds, merge keeps both parts and the
 * register is shown (deterministically, on every replica).
 *
 * Pure functions: no I/O, clock or randomness; timestamps and replica ids are
 * parameters. Allocation failure panics.
 */
#ifndef KV_OBJECT_H
#define KV_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/counter.h"
#include "crdt/dvv.h"
#include "proto/buf.h"
#include "proto/kv_err.h"

#define KV_DIGEST_LEN 16

typedef enum kv_kind {
  KV_KIND_NONE = 0, /* absent: never written, or deleted */
  KV_KIND_REGISTER = 1,
  KV_KIND_GCOUNTER = 2,
  KV_KIND_PNCOUNTER = 3,
} kv_kind;

typedef struct kv_object {
  kv_dvv reg;
  kv_counter ctr;
  kv_counter floor;
  bool pn; /* merge: or */
} kv_object;

/* An empty object (kind NONE). */
void kv_object_init(kv_object *o);
void kv_object_fini(kv_object *o); /* NULL does nothing */
void kv_object_copy(kv_object *dst, const kv_object *src);

kv_kind kv_object_kind(const kv_object *o);

/* Live (non-tombstone) sibling values, as borrowed pointers into o (valid
 * while o is unchanged): writes at most cap and returns the total. */
size_t kv_object_live_values(const kv_object *o, const kv_value **out,
                             size_t cap);

/* The live value with the greatest (ts, bytes), for last-writer-wins views
 * such as RESP GET; NULL when there is none. Borrowed from o. */
const kv_value *kv_object_lww(const kv_object *o);

/* The counter's value above its floor. KV_OVERFLOW if it does not fit. */
KV_WARN_UNUSED int kv_object_counter_value(const kv_object *o, int64_t *out);

/* ---- local updates at the coordinating replica. Each leaves *o unchanged
 * when it returns an error. ---- */

/* Writes val (copied) with timestamp ts as a new sibling dotted by replica.
 * ctx (borrowed; NULL = no context) names the history the client saw: the
 * siblings it covers are replaced. Errors: KV_WRONG_TYPE if o is a counter;
 * KV_TOO_MANY_SIBLINGS if the result would hold more than max_siblings
 * values. */
KV_WARN_UNUSED int kv_object_put(kv_object *o, uint64_t replica,
                                 const kv_vv *ctx, const uint8_t *val,
                                 size_t len, uint64_t ts, size_t max_siblings);

/* Deletes: a tombstone sibling written with ctx, or with o's own join when
 * ctx is NULL, and the counter's floor raised to its state. Errors:
 * KV_NOTFOUND (nothing written) when ctx is NULL and o is absent;
 * KV_TOO_MANY_SIBLINGS as for put. */
KV_WARN_UNUSED int kv_object_delete(kv_object *o, uint64_t replica,
                                    const kv_vv *ctx, uint64_t ts,
                                    size_t max_siblings);

/* Adds delta under replica's id and returns the new value in *value (may be
 * NULL). An absent key becomes a G-counter when gcounter is true, else a
 * PN-counter. Errors: KV_WRONG_TYPE if o is a register;
 * KV_GCOUNTER_DECREMENT for delta < 0 on a G-counter; KV_OVERFLOW. */
KV_WARN_UNUSED int kv_object_incr(kv_object *o, uint64_t replica, int64_t delta,
                                  bool gcounter, int64_t *value);

/* ---- replication ---- */

/* out = merge(a, b): DVVSet sync of the registers, counter and floor merge,
 * pn or-ed. Commutative, associative, idempotent. */
void kv_object_merge(kv_object *out, const kv_object *a, const kv_object *b);

/* Largest timestamp of any value in o (0 when none), for the HLC. */
uint64_t kv_object_max_ts(const kv_object *o);

/* ---- encoding ---- */

/* Canonical bytes of o into *out (caller frees with kv_buf_free). Equal
 * states give equal bytes. */
void kv_object_encode(const kv_object *o, kv_buf *out);

/* Decodes and checks len bytes at p (hostile input) into *o (caller frees
 * with kv_object_fini; untouched on error). KV_CORRUPT when the bytes are not
 * a valid, canonical object, carries anonymous register values, or any value
 * exceeds max_value bytes. */
KV_WARN_UNUSED int kv_object_decode(const uint8_t *p, size_t len,
                                    size_t max_value, kv_object *o);

/* XXH3-128 of encoded object bytes, big-endian (high 64 bits first). */
void kv_object_digest(const uint8_t *enc, size_t len,
                      uint8_t out[KV_DIGEST_LEN]);

/* The causal context given to clients: join(o.reg), encoded (caller frees
 * with kv_buf_free). An object without history gives an empty buffer. */
void kv_context_encode(const kv_vv *vv, kv_buf *out);

/* Decodes a client-supplied context (hostile input) into *vv (caller frees
 * with kv_vv_fini; untouched on error). KV_BAD_CONTEXT when malformed,
 * unsorted, or longer than max_entries entries. */
KV_WARN_UNUSED int kv_context_decode(const uint8_t *p, size_t len,
                                     size_t max_entries, kv_vv *vv);

#endif
