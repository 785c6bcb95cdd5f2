/*
 * The replicas the peer harness and the corpus generator run anti-entropy
 * between: small in-memory stores (a few dozen keys, 256 segments) built the
 * same way every time, so an exchange recorded by the generator replays
 * step for step against the harness's store. Store "a" is the harness's
 * local replica; store "b" differs from it in some keys, values and
 * deletions, so an exchange between them descends the whole tree, compares
 * keys, pulls and pushes.
 */
#ifndef KV_FUZZ_PEER_STORE_H
#define KV_FUZZ_PEER_STORE_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/object.h"
#include "sync/antientropy.h"
#include "sync/merkle.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_AE_BITS 8
#define FUZZ_AE_EXCHANGE 0x1d
#define FUZZ_AE_KEYS 40

typedef struct fuzz_entry {
  uint32_t seg;
  kv_buf key, obj;
  uint8_t digest[KV_DIGEST_LEN];
} fuzz_entry;

typedef struct fuzz_store {
  kv_merkle *tree;
  fuzz_entry e[FUZZ_AE_KEYS];
  size_t n;
  kv_ae_store st;
} fuzz_store;

static int fuzz_store_list(void *ctx, uint32_t seg, kv_ae_key_fn fn,
                           void *arg) {
  fuzz_store *s = ctx;
  for (size_t i = 0; i < s->n; i++)
    if (s->e[i].seg == seg)
      fn(arg, s->e[i].key.data, s->e[i].key.len, s->e[i].digest);
  return KV_OK;
}

static int fuzz_store_get(void *ctx, const uint8_t *key, size_t keylen,
                          kv_buf *obj) {
  fuzz_store *s = ctx;
  for (size_t i = 0; i < s->n; i++)
    if (fuzz_same(s->e[i].key.data, s->e[i].key.len, key, keylen)) {
      *obj = kv_buf_dup(s->e[i].obj.data, s->e[i].obj.len);
      return KV_OK;
    }
  return KV_NOTFOUND;
}

/* Fills *s as replica "a" (which = 'a') or "b". Keys key-0 .. key-39: both
 * hold most of them with the same value; "b" has other values for every
 * fifth key, lacks every seventh and deletes every eleventh; "a" lacks every
 * thirteenth. Panics on failure (this is test setup). */
static inline void fuzz_store_init(fuzz_store *s, char which) {
  memset(s, 0, sizeof *s);
  if (kv_merkle_new(FUZZ_AE_BITS, &s->tree) != KV_OK) abort();
  uint64_t replica = which == 'a' ? 0xaa : 0xbb;
  for (unsigned i = 0; i < FUZZ_AE_KEYS; i++) {
    if (which == 'a' ? i % 13 == 5 : i % 7 == 3) continue;
    char key[16], val[32];
    snprintf(key, sizeof key, "key-%u", i);
    if (which == 'b' && i % 5 == 0)
      snprintf(val, sizeof val, "b-value-%u", i);
    else
      snprintf(val, sizeof val, "value-%u", i);
    kv_object o;
    kv_object_init(&o);
    /* The common values are written by one replica id, so that equal keys
     * have equal bytes on both sides. */
    uint64_t writer = which == 'b' && i % 5 == 0 ? replica : 0x11;
    if (kv_object_put(&o, writer, NULL, (const uint8_t *)val, strlen(val),
                      1000 + i, 100) != KV_OK)
      abort();
    if (which == 'b' && i % 11 == 2 &&
        kv_object_delete(&o, replica, NULL, 2000 + i, 100) != KV_OK)
      abort();
    fuzz_entry *e = &s->e[s->n++];
    e->key = kv_buf_dup(key, strlen(key));
    e->seg = kv_merkle_segment_of(FUZZ_AE_BITS, key, strlen(key));
    kv_object_encode(&o, &e->obj);
    kv_object_fini(&o);
    kv_object_digest(e->obj.data, e->obj.len, e->digest);
    kv_hash c = kv_merkle_contribution(key, strlen(key), e->digest);
    kv_merkle_apply(s->tree, e->seg, &c);
  }
  s->st = (kv_ae_store){s, s->tree, fuzz_store_list, fuzz_store_get};
}

static inline void fuzz_store_fini(fuzz_store *s) {
  for (size_t i = 0; i < s->n; i++) {
    kv_buf_free(&s->e[i].key);
    kv_buf_free(&s->e[i].obj);
  }
  kv_merkle_free(s->tree);
}

/* Small bounds, so that the fuzzer reaches the caps with small inputs. */
static const kv_ae_opts fuzz_ae_opts = {
    .max_segments = 24, .max_keys = 24, .max_push_bytes = 256};

#endif
