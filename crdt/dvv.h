/*
 * Dotted version vector sets (DVVSet), exactly as reference/riak.md §1.2-1.3
 * (Riak's dvvset.erl). A clock is (entries, anon): entries sorted by replica
 * id, each (id, n, values newest first) where values[i] carries the dot
 * (id, n - i); anon holds values with no dot (from reconcile/lww).
 *
 * Invariants of every kv_dvv this module returns (kv_dvv_valid checks them on
 * clocks that came from outside):
 *   - entries strictly increasing by id; nvals <= n for every entry;
 *   - anon strictly increasing under kv_value_cmp (sorted, no duplicates),
 *     which makes the representation canonical: equal states are equal structs.
 *
 * Pure functions: no I/O, clock or randomness. Every result is a fresh deep
 * copy written to an out-parameter that the caller initialises nothing for and
 * frees with kv_dvv_fini; inputs are borrowed for the call only. Allocation
 * failure panics (proto/buf.h).
 */
#ifndef KV_DVV_H
#define KV_DVV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"

/* One sibling value. data is owned by whatever holds the kv_value. ts is the
 * hybrid-logical-clock timestamp used only for lww views and tombstone age. */
typedef struct kv_value {
  kv_buf data;
  uint64_t ts;
  bool tombstone;
} kv_value;

typedef struct kv_dvv_entry {
  uint64_t id;
  uint64_t n;
  size_t nvals;
  kv_value *vals; /* newest first */
} kv_dvv_entry;

typedef struct kv_dvv {
  size_t nent;
  kv_dvv_entry *ent;
  size_t nanon;
  kv_value *anon;
} kv_dvv;

/* A version vector: join() of a clock, the context given to clients. */
typedef struct kv_vv_entry {
  uint64_t id;
  uint64_t n;
} kv_vv_entry;

typedef struct kv_vv {
  size_t n;
  kv_vv_entry *e; /* strictly increasing by id */
} kv_vv;

/* ---- values ---- */

/* Total order used for the anonymous list: tombstone flag, then bytes, then
 * ts. Returns <0, 0, >0. */
int kv_value_cmp(const kv_value *a, const kv_value *b);

/* Deep copy of src into *dst. */
void kv_value_copy(kv_value *dst, const kv_value *src);

/* Frees v's bytes. NULL does nothing. */
void kv_value_fini(kv_value *v);

/* ---- version vectors ---- */

void kv_vv_fini(kv_vv *vv);
void kv_vv_copy(kv_vv *dst, const kv_vv *src);

/* True when ids are strictly increasing (a decoded context must be). */
bool kv_vv_valid(const kv_vv *vv);

/* ---- clocks ---- */

/* The empty clock ([], []). */
void kv_dvv_init(kv_dvv *c);

/* Frees everything c owns and leaves it empty. NULL does nothing. */
void kv_dvv_fini(kv_dvv *c);

void kv_dvv_copy(kv_dvv *dst, const kv_dvv *src);

/* new(vv, vs): entries (i, n, []) for vv (NULL means new(vs) with no causal
 * history), anon = vals (copied, sorted, duplicates dropped). */
void kv_dvv_new(kv_dvv *out, const kv_vv *vv, const kv_value *vals,
                size_t nvals);

/* join(C): the version vector [(i, n)] of C's entries. */
void kv_dvv_join(const kv_dvv *c, kv_vv *out);

/* size(C): number of values, anonymous ones included. */
size_t kv_dvv_size(const kv_dvv *c);

/* values(C) = anon ++ concat(entry values), as borrowed pointers into c
 * (valid while c is unchanged). Writes at most cap pointers and returns the
 * total number of values. */
size_t kv_dvv_values(const kv_dvv *c, const kv_value **out, size_t cap);

/* update(client, server, id): client must hold exactly one anonymous value
 * (the new write) and is synced without that value with server (NULL: the
 * update/2 form with no server clock); then event() gives the value a new dot
 * for id. Siblings the client's history covers are discarded. */
void kv_dvv_update(kv_dvv *out, const kv_dvv *client, const kv_dvv *server,
                   uint64_t id);

/* less(a, b): join(b) strictly dominates join(a). */
bool kv_dvv_less(const kv_dvv *a, const kv_dvv *b);

/* equal(a, b): same ids, counters and number of values per entry; values and
 * the anonymous lists are ignored. */
bool kv_dvv_equal(const kv_dvv *a, const kv_dvv *b);

/* sync(a, b): the merge. Commutative, associative and idempotent. */
void kv_dvv_sync(kv_dvv *out, const kv_dvv *a, const kv_dvv *b);

/* reconcile(f, C) = new(join(C), [f(values(C))]). f receives borrowed
 * pointers to all values and writes one value it owns into *result; it must be
 * deterministic. */
typedef void (*kv_dvv_reconcile_fn)(const kv_value **vals, size_t n,
                                    kv_value *result, void *arg);
void kv_dvv_reconcile(kv_dvv *out, const kv_dvv *c, kv_dvv_reconcile_fn f,
                      void *arg);

/* le(a, b) answers "a <= b". */
typedef bool (*kv_dvv_le_fn)(const kv_value *a, const kv_value *b, void *arg);

/* last(le, C): the greatest value among each entry's head and every anonymous
 * value, scanning entries by id then anon, ties going to the later candidate.
 * Borrowed from c; NULL when C has no value. */
const kv_value *kv_dvv_last(const kv_dvv *c, kv_dvv_le_fn le, void *arg);

/* lww(le, C): keeps only last(le, C). A winner from entry i keeps its dot; an
 * anonymous winner gives new(join(C), [v]). C without values is copied. */
void kv_dvv_lww(kv_dvv *out, const kv_dvv *c, kv_dvv_le_fn le, void *arg);

/* True when c keeps every invariant listed at the top of this file. */
bool kv_dvv_valid(const kv_dvv *c);

#endif
