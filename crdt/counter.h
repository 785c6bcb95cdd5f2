/*
 * G-counter and PN-counter state (DESIGN.md §2.2, riak_dt's pncounter v2):
 * a list of (replica id, inc, dec) sorted by id. The value is sum(inc - dec);
 * merge is the per-replica maximum of each field, so it is commutative,
 * associative and idempotent. A G-counter is the same state with every dec 0.
 *
 * A "floor" is another counter state, recorded by a delete: the value shown is
 * measured above it, so a deleted counter reads as absent and a later
 * increment starts again from 0, while increments the delete did not observe
 * survive (observed-remove). floor <= state holds per replica and field and is
 * preserved by merge, because both merge by maximum.
 *
 * Pure functions, no I/O. Values are 64-bit signed: any result outside that
 * range is KV_OVERFLOW, never a wrap. Allocation failure panics.
 */
#ifndef KV_COUNTER_H
#define KV_COUNTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/kv_err.h"

typedef struct kv_counter_entry {
  uint64_t id;
  uint64_t inc;
  uint64_t dec;
} kv_counter_entry;

typedef struct kv_counter {
  size_t n;
  kv_counter_entry *e; /* strictly increasing by id */
} kv_counter;

void kv_counter_init(kv_counter *c);
void kv_counter_fini(kv_counter *c); /* NULL does nothing */
void kv_counter_copy(kv_counter *dst, const kv_counter *src);

/* The value of c above floor (NULL: no floor) into *out.
 * KV_OVERFLOW when it does not fit in int64_t. */
KV_WARN_UNUSED int kv_counter_value(const kv_counter *c,
                                    const kv_counter *floor, int64_t *out);

/* Adds delta (positive: inc, negative: dec) to replica id's entry in place.
 * KV_OVERFLOW, with c unchanged, when the entry's field would pass 2^64-1 or
 * the value above floor would leave int64_t's range. delta == 0 changes
 * nothing and returns KV_OK. */
KV_WARN_UNUSED int kv_counter_add(kv_counter *c, const kv_counter *floor,
                                  uint64_t id, int64_t delta);

/* out = per-replica maximum of a and b (out is written fresh; free with
 * kv_counter_fini). */
void kv_counter_merge(kv_counter *out, const kv_counter *a,
                      const kv_counter *b);

/* True when every field of a is <= the same field of b (missing = 0). */
bool kv_counter_leq(const kv_counter *a, const kv_counter *b);

/* True when a and b hold the same entries. */
bool kv_counter_equal(const kv_counter *a, const kv_counter *b);

/* True when ids are strictly increasing and no entry is all zero (the
 * canonical form; a decoded counter must be). */
bool kv_counter_valid(const kv_counter *c);

#endif
