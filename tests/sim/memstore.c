/*
 * The simulator's store: what storage/store.c keeps in LMDB, kept in memory.
 * Objects are held sorted by (segment, key), as the `objects` database orders
 * them under their 4-byte segment prefix, and every change XORs
 * contribution(old bytes) ^ contribution(new bytes) into the persisted leaf,
 * computed from the bytes exactly as store.c's apply() does. The store
 * survives a simulated crash; the in-memory tree is rebuilt from the leaves.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim.h"

void ms_init(memstore *ms, unsigned bits) {
  memset(ms, 0, sizeof *ms);
  ms->bits = bits;
  ms->leaves = kv_calloc((size_t)1 << bits, sizeof *ms->leaves);
}

void ms_fini(memstore *ms) {
  for (size_t i = 0; i < ms->n; i++) {
    kv_buf_free(&ms->e[i].key);
    kv_buf_free(&ms->e[i].obj);
  }
  free(ms->e);
  free(ms->leaves);
  memset(ms, 0, sizeof *ms);
}

kv_hash ms_contribution(const uint8_t *key, size_t keylen, const uint8_t *obj,
                        size_t objlen) {
  uint8_t digest[KV_DIGEST_LEN];
  kv_object_digest(obj, objlen, digest);
  return kv_merkle_contribution(key, keylen, digest);
}

static int cmp_at(const ms_entry *e, uint32_t seg, const uint8_t *key,
                  size_t len) {
  if (e->seg != seg) return e->seg < seg ? -1 : 1;
  return kv_buf_cmp(e->key.data, e->key.len, key, len);
}

/* Index of key, or where it would go; *found says which. */
static size_t locate(const memstore *ms, uint32_t seg, const uint8_t *key,
                     size_t len, bool *found) {
  size_t lo = 0, hi = ms->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = cmp_at(&ms->e[mid], seg, key, len);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

const kv_buf *ms_get(const memstore *ms, const uint8_t *key, size_t len) {
  bool found;
  size_t i =
      locate(ms, kv_merkle_segment_of(ms->bits, key, len), key, len, &found);
  return found ? &ms->e[i].obj : NULL;
}

bool ms_put(memstore *ms, const uint8_t *key, size_t len, kv_buf obj,
            uint32_t *seg, kv_hash *delta) {
  uint32_t sg = kv_merkle_segment_of(ms->bits, key, len);
  bool found;
  size_t i = locate(ms, sg, key, len, &found);
  kv_hash d = {{0}};
  *seg = sg;
  if (found) {
    ms_entry *e = &ms->e[i];
    if (e->obj.len == obj.len &&
        (obj.len == 0 || memcmp(e->obj.data, obj.data, obj.len) == 0)) {
      kv_buf_free(&obj);
      *delta = d;
      return false; /* nothing new: store.c skips the put too */
    }
    d = ms_contribution(key, len, e->obj.data, e->obj.len);
    kv_buf_free(&e->obj);
    e->obj = obj;
  } else {
    if (ms->n == ms->cap) {
      ms->cap = ms->cap ? 2 * ms->cap : 32;
      ms->e = kv_realloc(ms->e, ms->cap * sizeof *ms->e);
    }
    memmove(&ms->e[i + 1], &ms->e[i], (ms->n - i) * sizeof *ms->e);
    ms->e[i] = (ms_entry){sg, kv_buf_dup(key, len), obj};
    ms->n++;
  }
  kv_hash nc = ms_contribution(key, len, obj.data, obj.len);
  kv_hash_xor(&d, &nc);
  kv_hash_xor(&ms->leaves[sg], &d);
  *delta = d;
  return true;
}

bool ms_remove(memstore *ms, const uint8_t *key, size_t len, uint32_t *seg,
               kv_hash *delta) {
  uint32_t sg = kv_merkle_segment_of(ms->bits, key, len);
  bool found;
  size_t i = locate(ms, sg, key, len, &found);
  *seg = sg;
  memset(delta, 0, sizeof *delta);
  if (!found) return false;
  ms_entry *e = &ms->e[i];
  *delta = ms_contribution(key, len, e->obj.data, e->obj.len);
  kv_hash_xor(&ms->leaves[sg], delta);
  kv_buf_free(&e->key);
  kv_buf_free(&e->obj);
  memmove(&ms->e[i], &ms->e[i + 1], (ms->n - i - 1) * sizeof *ms->e);
  ms->n--;
  return true;
}

void ms_segment(const memstore *ms, uint32_t seg,
                void (*fn)(void *arg, const ms_entry *e), void *arg) {
  /* The first entry of seg: the empty key sorts before every real one. */
  bool found;
  size_t i = locate(ms, seg, NULL, 0, &found);
  for (; i < ms->n && ms->e[i].seg == seg; i++)
    fn(arg, &ms->e[i]);
}

uint32_t ms_verify(const memstore *ms) {
  size_t nleaves = (size_t)1 << ms->bits;
  kv_hash *re = kv_calloc(nleaves, sizeof *re);
  for (size_t i = 0; i < ms->n; i++) {
    const ms_entry *e = &ms->e[i];
    kv_hash c =
        ms_contribution(e->key.data, e->key.len, e->obj.data, e->obj.len);
    kv_hash_xor(&re[e->seg], &c);
  }
  uint32_t bad = 0;
  for (size_t i = 0; i < nleaves; i++)
    bad += !kv_hash_equal(&re[i], &ms->leaves[i]);
  free(re);
  return bad;
}
