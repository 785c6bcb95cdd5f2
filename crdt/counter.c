/*
 * G/PN-counter state as a sorted array of (id, inc, dec). Sums are taken in
 * 128-bit arithmetic so that overflow of the 64-bit signed value is detected
 * exactly instead of wrapping.
 */
#include "crdt/counter.h"

#include <stdlib.h>
#include <string.h>

#include "proto/buf.h"

void kv_counter_init(kv_counter *c) {
  c->n = 0;
  c->e = NULL;
}

void kv_counter_fini(kv_counter *c) {
  if (!c) return;
  free(c->e);
  kv_counter_init(c);
}

void kv_counter_copy(kv_counter *dst, const kv_counter *src) {
  dst->n = src->n;
  dst->e = NULL;
  if (src->n) {
    dst->e = kv_malloc(src->n * sizeof *dst->e);
    memcpy(dst->e, src->e, src->n * sizeof *dst->e);
  }
}

/* The entry for id, or NULL. Counters hold one entry per replica that ever
 * updated the key, so a linear scan is as fast as anything here. */
static const kv_counter_entry *find(const kv_counter *c, uint64_t id) {
  for (size_t i = 0; i < c->n; i++)
    if (c->e[i].id == id) return &c->e[i];
  return NULL;
}

/* Value above floor in 128 bits. floor <= c holds, so each difference is
 * non-negative; the two sums fit easily in 128 bits. */
static __int128 value128(const kv_counter *c, const kv_counter *floor) {
  unsigned __int128 inc = 0, dec = 0;
  for (size_t i = 0; i < c->n; i++) {
    inc += c->e[i].inc;
    dec += c->e[i].dec;
  }
  if (floor) {
    for (size_t i = 0; i < floor->n; i++) {
      inc -= floor->e[i].inc;
      dec -= floor->e[i].dec;
    }
  }
  return (__int128)inc - (__int128)dec;
}

static int fits64(__int128 v, int64_t *out) {
  if (v > INT64_MAX || v < INT64_MIN) return KV_OVERFLOW;
  if (out) *out = (int64_t)v;
  return KV_OK;
}

int kv_counter_value(const kv_counter *c, const kv_counter *floor,
                     int64_t *out) {
  return fits64(value128(c, floor), out);
}

int kv_counter_add(kv_counter *c, const kv_counter *floor, uint64_t id,
                   int64_t delta) {
  if (delta == 0) return KV_OK;
  __int128 v = value128(c, floor) + delta;
  if (v > INT64_MAX || v < INT64_MIN) return KV_OVERFLOW;

  const kv_counter_entry *found = find(c, id);
  kv_counter_entry cur = found ? *found : (kv_counter_entry){id, 0, 0};
  /* The magnitude of INT64_MIN does not fit in int64_t; take it unsigned. */
  uint64_t mag = delta > 0 ? (uint64_t)delta : (uint64_t)0 - (uint64_t)delta;
  uint64_t *field = delta > 0 ? &cur.inc : &cur.dec;
  if (*field > UINT64_MAX - mag) return KV_OVERFLOW;
  *field += mag;

  if (found) {
    c->e[found - c->e] = cur;
    return KV_OK;
  }
  size_t pos = 0;
  while (pos < c->n && c->e[pos].id < id)
    pos++;
  c->e = kv_realloc(c->e, (c->n + 1) * sizeof *c->e);
  memmove(&c->e[pos + 1], &c->e[pos], (c->n - pos) * sizeof *c->e);
  c->e[pos] = cur;
  c->n++;
  return KV_OK;
}

static uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

void kv_counter_merge(kv_counter *out, const kv_counter *a,
                      const kv_counter *b) {
  kv_counter r = {0, NULL};
  if (a->n + b->n) r.e = kv_malloc((a->n + b->n) * sizeof *r.e);
  size_t i = 0, j = 0;
  while (i < a->n || j < b->n) {
    if (j == b->n || (i < a->n && a->e[i].id < b->e[j].id)) {
      r.e[r.n++] = a->e[i++];
    } else if (i == a->n || b->e[j].id < a->e[i].id) {
      r.e[r.n++] = b->e[j++];
    } else {
      r.e[r.n++] =
          (kv_counter_entry){a->e[i].id, max64(a->e[i].inc, b->e[j].inc),
                             max64(a->e[i].dec, b->e[j].dec)};
      i++;
      j++;
    }
  }
  *out = r;
}

bool kv_counter_leq(const kv_counter *a, const kv_counter *b) {
  for (size_t i = 0; i < a->n; i++) {
    const kv_counter_entry *e = find(b, a->e[i].id);
    uint64_t inc = e ? e->inc : 0, dec = e ? e->dec : 0;
    if (a->e[i].inc > inc || a->e[i].dec > dec) return false;
  }
  return true;
}

bool kv_counter_equal(const kv_counter *a, const kv_counter *b) {
  return a->n == b->n &&
         (a->n == 0 || memcmp(a->e, b->e, a->n * sizeof *a->e) == 0);
}

bool kv_counter_valid(const kv_counter *c) {
  for (size_t i = 0; i < c->n; i++) {
    if (c->e[i].inc == 0 && c->e[i].dec == 0) return false;
    if (i > 0 && c->e[i - 1].id >= c->e[i].id) return false;
  }
  return true;
}
