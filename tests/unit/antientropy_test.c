/*
 * Unit tests for sync/antientropy: two in-memory replicas (sorted arrays of
 * real CRDT objects, each with its own incrementally maintained Merkle tree)
 * joined by a synchronous message loop that routes like a driver would.
 * Checked: the in-sync cost, convergence after random divergence (values,
 * tombstones, keys on one side), bounded work converging over several
 * exchanges, wire bytes against the repaired objects' bytes, and hostile or
 * garbage messages at both entry points. The run's seed is printed at start;
 * KV_SEED=<n> replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/object.h"
#include "proto/buf.h"
#include "proto/peer.pb-c.h"
#include "proto/frame.h"
#include "sync/antientropy.h"
#include "sync/seal.h"
#include "sync/merkle.h"
#include "tests/unit/testutil.h"

#define CAP 100
#define MAX_VALUE (16u << 20)
/* Inputs per run of the garbage fuzz; raise with -DFUZZ_ITERS=n for a soak. */
#ifndef FUZZ_ITERS
#define FUZZ_ITERS 4000
#endif

static uint64_t seed;

/* ---- an in-memory replica ---- */

typedef struct ment {
  uint32_t seg;
  kv_buf key, obj;
  uint8_t digest[16];
} ment;

typedef struct mem {
  unsigned bits;
  uint64_t replica, ts;
  kv_merkle *tree;
  ment *e; /* sorted by (segment, key) */
  size_t n, cap;
  size_t merges, bad_merges;
  bool frozen;       /* merges are counted, not applied */
  bool hide_objects; /* get_object says NOTFOUND for every key */
  int fail_list;     /* list_segment returns this when non-zero */
  kv_ae_store st;
} mem;

static int ment_cmp(uint32_t seg, const uint8_t *key, size_t len,
                    const ment *e) {
  if (seg != e->seg) return seg < e->seg ? -1 : 1;
  return kv_buf_cmp(key, len, e->key.data, e->key.len);
}

static size_t mem_lower(const mem *m, uint32_t seg, const uint8_t *key,
                        size_t len) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ment_cmp(seg, key, len, &m->e[mid]) > 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static size_t mem_find(const mem *m, const uint8_t *key, size_t len) {
  uint32_t seg = kv_merkle_segment_of(m->bits, key, len);
  size_t i = mem_lower(m, seg, key, len);
  if (i < m->n && ment_cmp(seg, key, len, &m->e[i]) == 0) return i;
  return SIZE_MAX;
}

static int mem_list(void *ctx, uint32_t seg, kv_ae_key_fn fn, void *arg) {
  mem *m = ctx;
  if (m->fail_list) return m->fail_list;
  for (size_t i = mem_lower(m, seg, NULL, 0); i < m->n && m->e[i].seg == seg;
       i++)
    fn(arg, m->e[i].key.data, m->e[i].key.len, m->e[i].digest);
  return KV_OK;
}

static int mem_get(void *ctx, const uint8_t *key, size_t keylen, kv_buf *obj) {
  mem *m = ctx;
  size_t i = mem_find(m, key, keylen);
  if (i == SIZE_MAX || m->hide_objects) return KV_NOTFOUND;
  *obj = kv_buf_dup(m->e[i].obj.data, m->e[i].obj.len);
  return KV_OK;
}

static mem *mem_new(unsigned bits, uint64_t replica) {
  mem *m = kv_calloc(1, sizeof *m);
  m->bits = bits;
  m->replica = replica;
  assert_int_equal(kv_merkle_new(bits, &m->tree), KV_OK);
  m->st = (kv_ae_store){m, m->tree, mem_list, mem_get};
  return m;
}

static void mem_free(mem *m) {
  for (size_t i = 0; i < m->n; i++) {
    kv_buf_free(&m->e[i].key);
    kv_buf_free(&m->e[i].obj);
  }
  free(m->e);
  kv_merkle_free(m->tree);
  free(m);
}

/* Stores encoded object bytes enc (ownership moves in) under key and XORs
 * old ^ new contribution into the tree, as the writer thread does. */
static void mem_set_bytes(mem *m, const uint8_t *key, size_t len, kv_buf enc) {
  uint32_t seg = kv_merkle_segment_of(m->bits, key, len);
  size_t i = mem_lower(m, seg, key, len);
  uint8_t d[16];
  kv_object_digest(enc.data, enc.len, d);
  kv_hash delta = kv_merkle_contribution(key, len, d);
  if (i < m->n && ment_cmp(seg, key, len, &m->e[i]) == 0) {
    kv_hash old = kv_merkle_contribution(key, len, m->e[i].digest);
    kv_hash_xor(&delta, &old);
    kv_buf_free(&m->e[i].obj);
  } else {
    if (m->n == m->cap) {
      m->cap = m->cap ? 2 * m->cap : 64;
      m->e = kv_realloc(m->e, m->cap * sizeof *m->e);
    }
    memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof *m->e);
    m->n++;
    m->e[i].seg = seg;
    m->e[i].key = kv_buf_dup(key, len);
  }
  m->e[i].obj = enc;
  memcpy(m->e[i].digest, d, 16);
  kv_merkle_apply(m->tree, seg, &delta);
}

static void mem_load(const mem *m, const uint8_t *key, size_t len,
                     kv_object *o) {
  size_t i = mem_find(m, key, len);
  if (i == SIZE_MAX) {
    kv_object_init(o);
    return;
  }
  assert_int_equal(
      kv_object_decode(m->e[i].obj.data, m->e[i].obj.len, MAX_VALUE, o), KV_OK);
}

static void mem_store(mem *m, const uint8_t *key, size_t len,
                      const kv_object *o) {
  kv_buf enc;
  kv_object_encode(o, &enc);
  mem_set_bytes(m, key, len, enc);
}

/* A local SET: replaces what this replica holds (its own join as context). */
static void mem_put(mem *m, const uint8_t *key, size_t len, const uint8_t *val,
                    size_t vlen) {
  kv_object o;
  mem_load(m, key, len, &o);
  kv_vv ctx;
  kv_dvv_join(&o.reg, &ctx);
  assert_int_equal(kv_object_put(&o, m->replica, &ctx, val, vlen, ++m->ts, CAP),
                   KV_OK);
  kv_vv_fini(&ctx);
  mem_store(m, key, len, &o);
  kv_object_fini(&o);
}

static void mem_del(mem *m, const uint8_t *key, size_t len) {
  kv_object o;
  mem_load(m, key, len, &o);
  assert_int_equal(kv_object_delete(&o, m->replica, NULL, ++m->ts, CAP), KV_OK);
  mem_store(m, key, len, &o);
  kv_object_fini(&o);
}

/* The driver's merge: decode the peer's bytes (dropping what fails, as the
 * server does) and CRDT-merge them into the local object. */
static void mem_merge(void *arg, const uint8_t *key, size_t keylen,
                      const uint8_t *obj, size_t objlen) {
  mem *m = arg;
  assert_true(objlen > 0);
  m->merges++;
  if (m->frozen) return;
  kv_object remote, local, out;
  if (kv_object_decode(obj, objlen, MAX_VALUE, &remote) != KV_OK) {
    m->bad_merges++;
    return;
  }
  mem_load(m, key, keylen, &local);
  kv_object_merge(&out, &local, &remote);
  mem_store(m, key, keylen, &out);
  kv_object_fini(&remote);
  kv_object_fini(&local);
  kv_object_fini(&out);
}

static void assert_mem_equal(const mem *a, const mem *b) {
  kv_hash ra = kv_merkle_root(a->tree), rb = kv_merkle_root(b->tree);
  assert_true(kv_hash_equal(&ra, &rb));
  assert_int_equal(a->n, b->n);
  for (size_t i = 0; i < a->n; i++) {
    assert_int_equal(a->e[i].key.len, b->e[i].key.len);
    assert_memory_equal(a->e[i].key.data, b->e[i].key.data, a->e[i].key.len);
    assert_int_equal(a->e[i].obj.len, b->e[i].obj.len);
    assert_memory_equal(a->e[i].obj.data, b->e[i].obj.data, a->e[i].obj.len);
  }
  uint32_t d[1];
  assert_int_equal(kv_merkle_diff(a->tree, b->tree, d, 1), 0);
}

/* ---- keys, values and divergence ---- */

/* A unique key for index i: a readable prefix, then random filler up to a
 * random length (now and then the 507-byte maximum). */
static size_t make_key(test_rng *r, size_t i, uint8_t *key) {
  int n = snprintf((char *)key, 32, "k%zu:", i);
  size_t len = test_rng_below(r, 50) == 0 ? KV_AE_MAX_KEY
                                          : (size_t)n + test_rng_below(r, 40);
  for (size_t j = (size_t)n; j < len; j++)
    key[j] = (uint8_t)('a' + test_rng_below(r, 26));
  return len > (size_t)n ? len : (size_t)n;
}

static size_t make_val(test_rng *r, size_t vlen, uint8_t *val) {
  size_t len = 1 + test_rng_below(r, vlen);
  for (size_t j = 0; j < len; j++)
    val[j] = (uint8_t)test_rng_next(r);
  return len;
}

typedef struct divergence {
  size_t only_i, only_r, both;
  size_t own_bytes; /* encoded bytes of the divergent objects on both sides */
} divergence;

static size_t obj_len(const mem *m, const uint8_t *key, size_t len) {
  size_t i = mem_find(m, key, len);
  return i == SIZE_MAX ? 0 : m->e[i].obj.len;
}

/* Fills I and R with `common` equal keys, then makes n_div keys diverge:
 * keys on one side only (some deleted there: tombstones), concurrent values
 * on both, a delete on one side against a write or nothing on the other. */
static void diverge(mem *I, mem *R, test_rng *r, size_t common, size_t n_div,
                    size_t vlen, divergence *d) {
  static uint8_t key[KV_AE_MAX_KEY], val[4096];
  assert_true(vlen <= sizeof val);
  memset(d, 0, sizeof *d);
  for (size_t i = 0; i < common; i++) {
    size_t kl = make_key(r, i, key);
    mem_put(I, key, kl, val, make_val(r, vlen, val));
    size_t at = mem_find(I, key, kl);
    mem_set_bytes(R, key, kl, kv_buf_dup(I->e[at].obj.data, I->e[at].obj.len));
  }
  /* The common keys to touch: a random subset, each used once. */
  size_t *idx = kv_malloc((common ? common : 1) * sizeof *idx);
  for (size_t i = 0; i < common; i++)
    idx[i] = i;
  size_t used = 0;
  for (size_t k = 0; k < n_div; k++) {
    unsigned kind = (unsigned)test_rng_below(r, 5);
    if (kind >= 2 && used == common) kind = (unsigned)test_rng_below(r, 2);
    if (kind < 2) {
      size_t kl = make_key(r, common + k, key);
      mem *side = kind == 0 ? I : R;
      mem_put(side, key, kl, val, make_val(r, vlen, val));
      if (test_rng_below(r, 4) == 0) mem_del(side, key, kl);
      d->own_bytes += obj_len(side, key, kl);
      if (kind == 0)
        d->only_i++;
      else
        d->only_r++;
      continue;
    }
    size_t pick = used + test_rng_below(r, common - used);
    size_t c = idx[pick];
    idx[pick] = idx[used];
    idx[used++] = c;
    /* Find the common key by its index: its prefix is unique. */
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, "k%zu:", c);
    size_t at = SIZE_MAX;
    for (size_t i = 0; i < I->n; i++)
      if (I->e[i].key.len >= (size_t)pl &&
          memcmp(I->e[i].key.data, prefix, (size_t)pl) == 0) {
        at = i;
        break;
      }
    assert_true(at != SIZE_MAX);
    size_t kl = I->e[at].key.len;
    memcpy(key, I->e[at].key.data, kl);
    if (kind == 2) {
      mem_put(I, key, kl, val, make_val(r, vlen, val));
      mem_put(R, key, kl, val, make_val(r, vlen, val));
    } else if (kind == 3) {
      mem_del(I, key, kl);
    } else {
      mem_del(R, key, kl);
      mem_put(I, key, kl, val, make_val(r, vlen, val));
    }
    d->own_bytes += obj_len(I, key, kl) + obj_len(R, key, kl);
    d->both++;
  }
  free(idx);
}

/* ---- the message loop ---- */

typedef struct msgq {
  kv_buf *m;
  size_t n, cap;
} msgq;

static void q_push(void *arg, const uint8_t *msg, size_t len) {
  msgq *q = arg;
  assert_true(len > 0);
  if (q->n == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 16;
    q->m = kv_realloc(q->m, q->cap * sizeof *q->m);
  }
  q->m[q->n++] = kv_buf_dup(msg, len);
}

static void q_clear(msgq *q) {
  for (size_t i = 0; i < q->n; i++)
    kv_buf_free(&q->m[i]);
  free(q->m);
  *q = (msgq){0};
}

static int body_of(const kv_buf *b) {
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, b->len, b->data);
  assert_non_null(m);
  int c = (int)m->body_case;
  kvpb__peer_message__free_unpacked(m, NULL);
  return c;
}

typedef struct run {
  kv_ae_stats st;
  size_t round_trips;
  uint64_t bytes_ir, bytes_ri, msgs_ir, msgs_ri;
  uint64_t by_type[14]; /* encoded bytes per PeerMessage body case */
  uint64_t payload;     /* object bytes carried by AePush */
  size_t push_max;      /* largest AePush holding more than one object */
} run;

static void account(run *out, const kv_buf *b, bool to_r) {
  if (to_r) {
    out->bytes_ir += b->len;
    out->msgs_ir++;
  } else {
    out->bytes_ri += b->len;
    out->msgs_ri++;
  }
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, b->len, b->data);
  assert_non_null(m);
  assert_true(m->body_case < 14);
  out->by_type[m->body_case] += b->len;
  if (m->body_case == KVPB__PEER_MESSAGE__BODY_AE_PUSH) {
    for (size_t i = 0; i < m->ae_push->n_objects; i++)
      out->payload += m->ae_push->objects[i]->object.len;
    if (m->ae_push->n_objects > 1 && b->len > out->push_max)
      out->push_max = b->len;
  }
  kvpb__peer_message__free_unpacked(m, NULL);
}

/* Runs one exchange from I to R to completion, routing every message with
 * kv_ae_message_exchange as a driver would (R has no exchange of its own
 * open, so everything reaching it goes to kv_ae_respond). */
static void run_exchange(mem *I, mem *R, const kv_ae_opts *o, uint64_t id,
                         run *out) {
  memset(out, 0, sizeof *out);
  msgq to_r = {0}, to_i = {0};
  kv_ae *x = kv_ae_start(o, &I->st, id, q_push, &to_r);
  bool done = false;
  while (to_r.n || to_i.n) {
    msgq batch = to_r;
    to_r = (msgq){0};
    for (size_t i = 0; i < batch.n; i++) {
      const kv_buf *b = &batch.m[i];
      account(out, b, true);
      uint64_t mid = 0;
      bool ti = true;
      assert_int_equal(kv_ae_message_exchange(b->data, b->len, &mid, &ti),
                       KV_OK);
      assert_true(mid == id);
      if (ti) assert_int_equal(body_of(b), KVPB__PEER_MESSAGE__BODY_AE_PUSH);
      assert_int_equal(kv_ae_respond(o, &R->st, b->data, b->len, q_push, &to_i,
                                     mem_merge, R),
                       KV_OK);
    }
    q_clear(&batch);
    if (!to_i.n) continue;
    out->round_trips++;
    batch = to_i;
    to_i = (msgq){0};
    for (size_t i = 0; i < batch.n; i++) {
      const kv_buf *b = &batch.m[i];
      account(out, b, false);
      uint64_t mid = 0;
      bool ti = false;
      assert_int_equal(kv_ae_message_exchange(b->data, b->len, &mid, &ti),
                       KV_OK);
      assert_true(ti);
      assert_true(mid == id);
      assert_false(done);
      int rc = kv_ae_feed(x, b->data, b->len, mem_merge, I);
      if (rc == KV_CLOSED)
        done = true;
      else
        assert_int_equal(rc, KV_OK);
    }
    q_clear(&batch);
  }
  assert_true(done);
  out->st = *kv_ae_stats_of(x);
  assert_int_equal(out->st.bytes_sent, out->bytes_ir);
  assert_int_equal(out->st.bytes_received, out->bytes_ri);
  assert_int_equal(out->st.messages_sent, out->msgs_ir);
  assert_int_equal(out->st.messages_received, out->msgs_ri);
  /* A finished exchange takes nothing more. */
  uint8_t junk[2] = {0x6a, 0};
  assert_int_equal(kv_ae_feed(x, junk, sizeof junk, mem_merge, I),
                   KV_BAD_REQUEST);
  kv_ae_free(x);
}

/* ---- tests: convergence ---- */

static void test_ae_in_sync_one_round_trip(void **state) {
  (void)state;
  test_rng r = {seed ^ 1};
  mem *I = mem_new(16, 1), *R = mem_new(16, 2);
  divergence d;
  diverge(I, R, &r, 300, 0, 64, &d);
  assert_mem_equal(I, R);
  uint64_t ids[] = {0, 1, UINT64_MAX, test_rng_next(&r)};
  for (size_t k = 0; k < sizeof ids / sizeof *ids; k++) {
    run out;
    run_exchange(I, R, NULL, ids[k], &out);
    assert_true(out.st.in_sync);
    assert_int_equal(out.round_trips, 1);
    assert_int_equal(out.msgs_ir, 1);
    assert_int_equal(out.msgs_ri, 1);
    /* On the wire each message is also sealed and framed. */
    assert_true(out.bytes_ir + KV_SEAL_OVERHEAD + KV_FRAME_HEADER <= 100);
    assert_true(out.bytes_ri + KV_SEAL_OVERHEAD + KV_FRAME_HEADER <= 100);
    assert_int_equal(out.st.keys_pushed + out.st.keys_pulled, 0);
    if (k == 3)
      printf("in sync: AeRoot %llu B, AeRootReply %llu B (encoded, before "
             "sealing)\n",
             (unsigned long long)out.bytes_ir,
             (unsigned long long)out.bytes_ri);
  }
  assert_int_equal(I->merges + R->merges, 0);
  mem_free(I);
  mem_free(R);

  /* Two empty replicas are in sync too. */
  I = mem_new(4, 1);
  R = mem_new(4, 2);
  run out;
  run_exchange(I, R, NULL, 7, &out);
  assert_true(out.st.in_sync);
  mem_free(I);
  mem_free(R);
}

static void test_ae_random_divergence_converges(void **state) {
  (void)state;
  static const unsigned bits[] = {4, 5, 8, 13, 16};
  for (int iter = 0; iter < 25; iter++) {
    test_rng r = {seed + 1000 + (uint64_t)iter};
    unsigned b = bits[iter % 5];
    mem *I = mem_new(b, 0x11), *R = mem_new(b, 0x22);
    size_t common = test_rng_below(&r, 400);
    size_t n_div = test_rng_below(&r, 120);
    divergence d;
    diverge(I, R, &r, common, n_div, 200, &d);
    run out;
    run_exchange(I, R, NULL, test_rng_next(&r), &out);
    if (n_div == 0) {
      assert_true(out.st.in_sync);
    } else {
      assert_false(out.st.in_sync);
      assert_true(out.st.segments_differing >= 1);
      assert_true(out.st.segments_differing <= n_div);
    }
    assert_false(out.st.partial);
    assert_int_equal(out.st.keys_pushed, d.only_i + d.both);
    assert_int_equal(out.st.keys_pulled, d.only_r + d.both);
    assert_int_equal(R->merges, d.only_i + d.both);
    assert_int_equal(I->merges, d.only_r + d.both);
    assert_int_equal(I->bad_merges + R->bad_merges, 0);
    assert_mem_equal(I, R);
    /* Nothing is left to repair. */
    run again;
    run_exchange(R, I, NULL, 42, &again);
    assert_true(again.st.in_sync);
    mem_free(I);
    mem_free(R);
  }
}

/* Concurrent writes survive the exchange as siblings on both replicas. */
static void test_ae_concurrent_values_become_siblings(void **state) {
  (void)state;
  mem *I = mem_new(8, 0x11), *R = mem_new(8, 0x22);
  const uint8_t k[] = "shared";
  mem_put(I, k, 6, (const uint8_t *)"left", 4);
  mem_put(R, k, 6, (const uint8_t *)"right", 5);
  mem_put(R, (const uint8_t *)"gone", 4, (const uint8_t *)"x", 1);
  mem_del(R, (const uint8_t *)"gone", 4);
  run out;
  run_exchange(I, R, NULL, 9, &out);
  assert_mem_equal(I, R);
  kv_object o;
  mem_load(I, k, 6, &o);
  const kv_value *vals[4];
  assert_int_equal(kv_object_live_values(&o, vals, 4), 2);
  kv_object_fini(&o);
  /* The tombstone reached I and reads as absent there. */
  mem_load(I, (const uint8_t *)"gone", 4, &o);
  assert_true(mem_find(I, (const uint8_t *)"gone", 4) != SIZE_MAX);
  assert_int_equal(kv_object_kind(&o), KV_KIND_NONE);
  kv_object_fini(&o);
  mem_free(I);
  mem_free(R);
}

static void test_ae_bounded_work_converges(void **state) {
  (void)state;
  test_rng r = {seed ^ 2};
  mem *I = mem_new(8, 0x11), *R = mem_new(8, 0x22);
  divergence d;
  diverge(I, R, &r, 600, 300, 100, &d);
  kv_ae_opts o = {.max_segments = 3, .max_keys = 2, .max_push_bytes = 400};
  size_t exchanges = 0, pushed = 0, pulled = 0;
  bool saw_partial = false;
  for (;;) {
    run out;
    run_exchange(exchanges % 2 ? R : I, exchanges % 2 ? I : R, &o,
                 exchanges + 1, &out);
    exchanges++;
    assert_true(out.st.segments_differing <= o.max_segments);
    assert_true(out.push_max <= o.max_push_bytes);
    saw_partial |= out.st.partial;
    pushed += out.st.keys_pushed;
    pulled += out.st.keys_pulled;
    if (out.st.in_sync) break;
    assert_true(exchanges < 2000);
  }
  printf("bounded work: %zu exchanges (max_segments 3, max_keys 2, "
         "max_push_bytes 400) repaired %zu divergent keys\n",
         exchanges, d.only_i + d.only_r + d.both);
  assert_true(exchanges > 10);
  assert_true(saw_partial);
  assert_true(pushed + pulled >= d.only_i + d.only_r + 2 * d.both);
  assert_mem_equal(I, R);
  mem_free(I);
  mem_free(R);
}

static void test_ae_ratio_10k_keys_1pct(void **state) {
  (void)state;
  static const size_t vlens[] = {100, 1000, 4000};
  for (size_t v = 0; v < sizeof vlens / sizeof *vlens; v++) {
    test_rng r = {seed ^ (3 + v)};
    mem *I = mem_new(KV_MERKLE_DEFAULT_BITS, 0x11);
    mem *R = mem_new(KV_MERKLE_DEFAULT_BITS, 0x22);
    divergence d;
    diverge(I, R, &r, 10000, 100, vlens[v], &d);
    run out;
    run_exchange(I, R, NULL, test_rng_next(&r), &out);
    assert_mem_equal(I, R);
    uint64_t total = out.bytes_ir + out.bytes_ri;
    uint64_t tree = out.by_type[KVPB__PEER_MESSAGE__BODY_AE_ROOT] +
                    out.by_type[KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY] +
                    out.by_type[KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ] +
                    out.by_type[KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY];
    uint64_t lists = out.by_type[KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ] +
                     out.by_type[KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY] +
                     out.by_type[KVPB__PEER_MESSAGE__BODY_AE_PULL] +
                     out.by_type[KVPB__PEER_MESSAGE__BODY_AE_DONE];
    uint64_t push = out.by_type[KVPB__PEER_MESSAGE__BODY_AE_PUSH];
    printf("10k keys, 1%% divergent (%zu only-I, %zu only-R, %zu both), "
           "values 1..%zu B: %llu B on the wire (tree %llu, key lists %llu, "
           "pushes %llu) in %zu round trips; divergent objects %zu B "
           "(ratio %.2f), objects carried %llu B (ratio %.2f)\n",
           d.only_i, d.only_r, d.both, vlens[v], (unsigned long long)total,
           (unsigned long long)tree, (unsigned long long)lists,
           (unsigned long long)push, out.round_trips, d.own_bytes,
           (double)total / (double)d.own_bytes, (unsigned long long)out.payload,
           (double)total / (double)out.payload);
    /* Root, four inner levels, segments, pulls: seven round trips. */
    assert_int_equal(out.round_trips, 7);
    assert_int_equal(out.st.keys_pushed, d.only_i + d.both);
    assert_int_equal(out.st.keys_pulled, d.only_r + d.both);
    /* The overhead besides the objects is bounded by the tree walk and the
     * key lists, whatever the value size. */
    assert_true(tree + lists < 100 * 700);
    /* Pulls go before pushes, so each divergent object crosses exactly
     * once, never merged; the rest is the fixed cost of the walk. */
    assert_int_equal(out.payload, d.own_bytes);
    if (vlens[v] >= 4000)
      assert_true((double)total / (double)d.own_bytes <= 2.0);
    mem_free(I);
    mem_free(R);
  }
}

/* ---- tests: edge cases of the protocol ---- */

static void test_ae_pull_of_vanished_key_completes(void **state) {
  (void)state;
  test_rng r = {seed ^ 4};
  mem *I = mem_new(8, 0x11), *R = mem_new(8, 0x22);
  divergence d;
  diverge(I, R, &r, 50, 0, 50, &d);
  mem_put(R, (const uint8_t *)"only-r", 6, (const uint8_t *)"v", 1);
  /* R lists the key but can no longer read it (purged in between). */
  R->hide_objects = true;
  run out;
  run_exchange(I, R, NULL, 5, &out);
  assert_int_equal(out.st.keys_pulled, 0);
  assert_true(out.st.keys_compared >= 1);
  assert_int_equal(out.st.keys_pushed, 0);
  assert_int_equal(I->merges, 0);
  assert_int_equal(out.by_type[KVPB__PEER_MESSAGE__BODY_AE_DONE] > 0, 1);
  mem_free(I);
  mem_free(R);
}

static void test_ae_store_error_ends_exchange(void **state) {
  (void)state;
  mem *I = mem_new(8, 0x11), *R = mem_new(8, 0x22);
  mem_put(I, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1);
  mem_put(R, (const uint8_t *)"b", 1, (const uint8_t *)"2", 1);

  /* The responder's list fails: its error comes back, nothing is sent. */
  R->fail_list = KV_IO;
  msgq to_r = {0}, to_i = {0};
  kv_ae *x = kv_ae_start(NULL, &I->st, 1, q_push, &to_r);
  int rc = KV_OK;
  for (int step = 0; step < 10 && rc == KV_OK; step++) {
    assert_int_equal(to_r.n, 1);
    kv_buf m = to_r.m[0];
    to_r.n = 0;
    rc =
        kv_ae_respond(NULL, &R->st, m.data, m.len, q_push, &to_i, mem_merge, R);
    kv_buf_free(&m);
    if (rc != KV_OK) break;
    assert_int_equal(to_i.n, 1);
    m = to_i.m[0];
    to_i.n = 0;
    assert_int_equal(kv_ae_feed(x, m.data, m.len, mem_merge, I), KV_OK);
    kv_buf_free(&m);
  }
  assert_int_equal(rc, KV_IO);
  assert_int_equal(to_i.n, 0);
  kv_ae_free(x);
  q_clear(&to_r);
  q_clear(&to_i);

  /* The initiator's list fails: feed returns it and the exchange is over. */
  R->fail_list = 0;
  I->fail_list = KV_IO;
  x = kv_ae_start(NULL, &I->st, 2, q_push, &to_r);
  rc = KV_OK;
  while (rc == KV_OK) {
    assert_int_equal(to_r.n, 1);
    kv_buf m = to_r.m[0];
    to_r.n = 0;
    assert_int_equal(
        kv_ae_respond(NULL, &R->st, m.data, m.len, q_push, &to_i, mem_merge, R),
        KV_OK);
    kv_buf_free(&m);
    m = to_i.m[0];
    to_i.n = 0;
    rc = kv_ae_feed(x, m.data, m.len, mem_merge, I);
    kv_buf_free(&m);
  }
  assert_int_equal(rc, KV_IO);
  assert_int_equal(to_r.n, 0);
  kv_ae_free(x);
  q_clear(&to_r);
  q_clear(&to_i);
  mem_free(I);
  mem_free(R);
}

static kv_buf pack(const Kvpb__PeerMessage *m) {
  kv_buf b;
  b.len = kvpb__peer_message__get_packed_size(m);
  b.data = kv_malloc(b.len ? b.len : 1);
  assert_int_equal(kvpb__peer_message__pack(m, b.data), b.len);
  return b;
}

static void test_ae_responder_answers_whole_segments(void **state) {
  (void)state;
  mem *R = mem_new(4, 0x22);
  /* Find keys for segments 2 (three keys), 5 (one key), 9 (two keys). */
  size_t want[16] = {0};
  want[2] = 3, want[5] = 1, want[9] = 2;
  char key[32];
  for (unsigned i = 0; i < 10000; i++) {
    int kl = snprintf(key, sizeof key, "seg-%u", i);
    uint32_t s = kv_merkle_segment_of(4, key, (size_t)kl);
    if (want[s]) {
      want[s]--;
      mem_put(R, (const uint8_t *)key, (size_t)kl, (const uint8_t *)"v", 1);
    }
  }
  assert_int_equal(want[2] + want[5] + want[9], 0);

  static const struct {
    size_t max_keys, max_segments, answered, entries;
  } cases[] = {
      {1, 0, 1, 3},  /* the first segment alone, over the cap */
      {3, 0, 1, 3},  /* the next one would exceed */
      {4, 0, 2, 4},  /* two whole segments */
      {6, 0, 3, 6},  /* everything */
      {100, 2, 2, 4} /* max_segments bounds the answer */
  };
  uint32_t segs[] = {2, 5, 9};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    Kvpb__AeSegmentsReq q = KVPB__AE_SEGMENTS_REQ__INIT;
    q.exchange = 77;
    q.n_segments = 3;
    q.segments = segs;
    Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
    m.body_case = KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ;
    m.ae_segments_req = &q;
    kv_buf b = pack(&m);
    kv_ae_opts o = {.max_keys = cases[c].max_keys,
                    .max_segments = cases[c].max_segments};
    msgq out = {0};
    assert_int_equal(
        kv_ae_respond(&o, &R->st, b.data, b.len, q_push, &out, mem_merge, R),
        KV_OK);
    assert_int_equal(out.n, 1);
    Kvpb__PeerMessage *rep =
        kvpb__peer_message__unpack(NULL, out.m[0].len, out.m[0].data);
    assert_non_null(rep);
    assert_int_equal(rep->body_case,
                     KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY);
    const Kvpb__AeSegmentsReply *sr = rep->ae_segments_reply;
    assert_true(sr->exchange == 77);
    assert_int_equal(sr->n_segments, cases[c].answered);
    for (size_t i = 0; i < sr->n_segments; i++)
      assert_int_equal(sr->segments[i], segs[i]);
    assert_int_equal(sr->n_entries, cases[c].entries);
    kvpb__peer_message__free_unpacked(rep, NULL);
    q_clear(&out);
    kv_buf_free(&b);
  }
  mem_free(R);
}

static void test_ae_message_routing(void **state) {
  (void)state;
  static const struct {
    int body;
    bool to_init;
  } cases[] = {
      {KVPB__PEER_MESSAGE__BODY_AE_ROOT, false},
      {KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY, true},
      {KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ, false},
      {KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY, true},
      {KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ, false},
      {KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY, true},
      {KVPB__PEER_MESSAGE__BODY_AE_PUSH, true},
      {KVPB__PEER_MESSAGE__BODY_AE_PULL, false},
      {KVPB__PEER_MESSAGE__BODY_AE_DONE, false},
  };
  Kvpb__AeRoot root = KVPB__AE_ROOT__INIT;
  Kvpb__AeRootReply root_reply = KVPB__AE_ROOT_REPLY__INIT;
  Kvpb__AeLevelReq level_req = KVPB__AE_LEVEL_REQ__INIT;
  Kvpb__AeLevelReply level_reply = KVPB__AE_LEVEL_REPLY__INIT;
  Kvpb__AeSegmentsReq seg_req = KVPB__AE_SEGMENTS_REQ__INIT;
  Kvpb__AeSegmentsReply seg_reply = KVPB__AE_SEGMENTS_REPLY__INIT;
  Kvpb__AePush push = KVPB__AE_PUSH__INIT;
  Kvpb__AePull pull = KVPB__AE_PULL__INIT;
  Kvpb__AeDone done = KVPB__AE_DONE__INIT;
  uint64_t id = 0x0123456789abcdefull;
  root.exchange = root_reply.exchange = level_req.exchange = id;
  level_reply.exchange = seg_req.exchange = seg_reply.exchange = id;
  push.exchange = pull.exchange = done.exchange = id;
  void *bodies[] = {&root,      &root_reply, &level_req, &level_reply, &seg_req,
                    &seg_reply, &push,       &pull,      &done};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
    m.body_case = (Kvpb__PeerMessage__BodyCase)cases[c].body;
    m.ae_root = bodies[c]; /* every member of the union is a pointer */
    kv_buf b = pack(&m);
    uint64_t got = 0;
    bool ti = !cases[c].to_init;
    assert_int_equal(kv_ae_message_exchange(b.data, b.len, &got, &ti), KV_OK);
    assert_true(got == id);
    assert_int_equal(ti, cases[c].to_init);
    kv_buf_free(&b);
  }
  /* Not AE, empty, garbage. */
  Kvpb__HelloRefused refused = KVPB__HELLO_REFUSED__INIT;
  refused.reason = (char *)"no";
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_REFUSED;
  m.refused = &refused;
  kv_buf b = pack(&m);
  uint64_t got;
  bool ti;
  assert_int_equal(kv_ae_message_exchange(b.data, b.len, &got, &ti),
                   KV_BAD_REQUEST);
  kv_buf_free(&b);
  assert_int_equal(kv_ae_message_exchange(NULL, 0, &got, &ti), KV_BAD_REQUEST);
  const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  assert_int_equal(kv_ae_message_exchange(junk, sizeof junk, &got, &ti),
                   KV_BAD_REQUEST);
}

/* ---- tests: hostile input ---- */

typedef struct sink {
  size_t sent;
} sink;

static void sink_send(void *arg, const uint8_t *msg, size_t len) {
  (void)msg;
  (void)len;
  ((sink *)arg)->sent++;
}

static void expect_respond_bad(mem *R, const Kvpb__PeerMessage *m,
                               const kv_ae_opts *o) {
  kv_buf b = pack(m);
  sink s = {0};
  size_t merges = R->merges;
  assert_int_equal(
      kv_ae_respond(o, &R->st, b.data, b.len, sink_send, &s, mem_merge, R),
      KV_BAD_REQUEST);
  assert_int_equal(s.sent, 0);
  assert_int_equal(R->merges, merges);
  kv_buf_free(&b);
}

static void test_ae_responder_refuses_hostile(void **state) {
  (void)state;
  mem *R = mem_new(13, 0x22); /* narrow root: 2 children */
  R->frozen = true;
  mem_put(R, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1);
  unsigned depth = kv_merkle_depth(R->tree);
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;

  uint8_t h15[15] = {0};
  Kvpb__AeRoot root = KVPB__AE_ROOT__INIT;
  root.root.data = h15;
  root.root.len = sizeof h15;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_ROOT;
  m.ae_root = &root;
  expect_respond_bad(R, &m, NULL);

  /* Level requests: the leaf level (no children), beyond the tree, no nodes,
   * a node past the level, unsorted, repeated. */
  Kvpb__AeLevelReq lq = KVPB__AE_LEVEL_REQ__INIT;
  uint32_t nodes[3];
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ;
  m.ae_level_req = &lq;
  struct {
    uint32_t level;
    size_t n;
    uint32_t v[3];
  } lcases[] = {
      {depth - 1, 1, {0}},  {depth, 1, {0}},
      {UINT32_MAX, 1, {0}}, {1, 0, {0}},
      {0, 1, {1}},          {1, 1, {2}},
      {2, 1, {32}},         {2, 2, {5, 3}},
      {2, 2, {4, 4}},       {2, 3, {1, 2, UINT32_MAX}},
  };
  for (size_t c = 0; c < sizeof lcases / sizeof *lcases; c++) {
    lq.level = lcases[c].level;
    lq.n_nodes = lcases[c].n;
    memcpy(nodes, lcases[c].v, sizeof nodes);
    lq.nodes = nodes;
    expect_respond_bad(R, &m, NULL);
  }

  Kvpb__AeSegmentsReq sq = KVPB__AE_SEGMENTS_REQ__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ;
  m.ae_segments_req = &sq;
  uint32_t segs[2] = {1u << 13, 0};
  sq.segments = segs;
  sq.n_segments = 0;
  expect_respond_bad(R, &m, NULL);
  sq.n_segments = 1;
  expect_respond_bad(R, &m, NULL);
  segs[0] = 9, segs[1] = 9;
  sq.n_segments = 2;
  expect_respond_bad(R, &m, NULL);

  /* Pulls: no keys, an empty key, a key too long, a key twice, more keys
   * than max_keys. */
  static uint8_t longkey[KV_AE_MAX_KEY + 1];
  ProtobufCBinaryData keys[3] = {
      {1, (uint8_t *)"a"}, {1, (uint8_t *)"b"}, {1, (uint8_t *)"c"}};
  Kvpb__AePull pq = KVPB__AE_PULL__INIT;
  pq.keys = keys;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_PULL;
  m.ae_pull = &pq;
  expect_respond_bad(R, &m, NULL);
  pq.n_keys = 3;
  keys[1].len = 0;
  expect_respond_bad(R, &m, NULL);
  keys[1] = (ProtobufCBinaryData){sizeof longkey, longkey};
  expect_respond_bad(R, &m, NULL);
  keys[1] = keys[2];
  expect_respond_bad(R, &m, NULL);
  keys[1] = (ProtobufCBinaryData){1, (uint8_t *)"b"};
  kv_ae_opts two = {.max_keys = 2};
  expect_respond_bad(R, &m, &two);

  /* Pushes: none, a key twice, an empty key. Nothing may be merged. */
  Kvpb__KeyObject ko[2] = {KVPB__KEY_OBJECT__INIT, KVPB__KEY_OBJECT__INIT};
  Kvpb__KeyObject *kop[2] = {&ko[0], &ko[1]};
  ko[0].key = ko[1].key = (ProtobufCBinaryData){1, (uint8_t *)"k"};
  ko[0].object = ko[1].object = (ProtobufCBinaryData){1, (uint8_t *)"x"};
  Kvpb__AePush push = KVPB__AE_PUSH__INIT;
  push.objects = kop;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_PUSH;
  m.ae_push = &push;
  expect_respond_bad(R, &m, NULL);
  push.n_objects = 2;
  expect_respond_bad(R, &m, NULL);
  ko[1].key.len = 0;
  expect_respond_bad(R, &m, NULL);

  /* Initiator-bound replies and non-AE messages. */
  Kvpb__AeRootReply rr = KVPB__AE_ROOT_REPLY__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY;
  m.ae_root_reply = &rr;
  expect_respond_bad(R, &m, NULL);
  Kvpb__Rumors rumors = KVPB__RUMORS__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_RUMORS;
  m.rumors = &rumors;
  expect_respond_bad(R, &m, NULL);
  m.body_case = KVPB__PEER_MESSAGE__BODY__NOT_SET;
  expect_respond_bad(R, &m, NULL);

  /* Garbage and a truncated valid request. */
  sink s = {0};
  const uint8_t junk[] = {0x3a, 0x10, 0x08, 0x01, 0xff};
  assert_int_equal(kv_ae_respond(NULL, &R->st, junk, sizeof junk, sink_send, &s,
                                 mem_merge, R),
                   KV_BAD_REQUEST);
  lq.level = 0, lq.n_nodes = 1, nodes[0] = 0;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ;
  m.ae_level_req = &lq;
  kv_buf b = pack(&m);
  assert_int_equal(
      kv_ae_respond(NULL, &R->st, b.data, b.len, sink_send, &s, mem_merge, R),
      KV_OK);
  assert_int_equal(s.sent, 1);
  for (size_t cut = 1; cut < b.len; cut++)
    assert_int_equal(kv_ae_respond(NULL, &R->st, b.data, b.len - cut, sink_send,
                                   &s, mem_merge, R),
                     KV_BAD_REQUEST);
  assert_int_equal(s.sent, 1);
  kv_buf_free(&b);
  mem_free(R);
}

/* An exchange driven until the responder's next message to the initiator is
 * of body type `want`, which is kept in *reply instead of being fed. Both
 * stores are frozen so any number of these start from the same divergence. */
typedef struct harness {
  mem *I, *R;
  msgq to_r, to_i;
  kv_ae *x;
  kv_buf reply;
} harness;

static void advance_to(harness *h, int want, uint64_t id) {
  h->to_r = h->to_i = (msgq){0};
  h->x = kv_ae_start(NULL, &h->I->st, id, q_push, &h->to_r);
  for (int guard = 0; guard < 100; guard++) {
    for (size_t i = 0; i < h->to_r.n; i++)
      assert_int_equal(kv_ae_respond(NULL, &h->R->st, h->to_r.m[i].data,
                                     h->to_r.m[i].len, q_push, &h->to_i,
                                     mem_merge, h->R),
                       KV_OK);
    q_clear(&h->to_r);
    msgq batch = h->to_i;
    h->to_i = (msgq){0};
    for (size_t i = 0; i < batch.n; i++) {
      if (body_of(&batch.m[i]) == want) {
        h->reply = batch.m[i];
        batch.m[i] = (kv_buf){NULL, 0};
        q_clear(&batch);
        return;
      }
      assert_int_equal(
          kv_ae_feed(h->x, batch.m[i].data, batch.m[i].len, mem_merge, h->I),
          KV_OK);
    }
    q_clear(&batch);
  }
  fail_msg("body %d never reached", want);
}

static void harness_end(harness *h) {
  kv_ae_free(h->x);
  kv_buf_free(&h->reply);
  q_clear(&h->to_r);
  q_clear(&h->to_i);
}

/* Feeds b to the exchange and expects a refusal with nothing sent or merged;
 * the exchange is then over, so even the genuine reply is refused. */
static void expect_feed_bad(harness *h, const uint8_t *b, size_t len) {
  size_t sent = h->to_r.n, merges = h->I->merges;
  assert_int_equal(kv_ae_feed(h->x, b, len, mem_merge, h->I), KV_BAD_REQUEST);
  assert_int_equal(h->to_r.n, sent);
  assert_int_equal(h->I->merges, merges);
  assert_int_equal(
      kv_ae_feed(h->x, h->reply.data, h->reply.len, mem_merge, h->I),
      KV_BAD_REQUEST);
}

static Kvpb__PeerMessage *unpack_reply(const harness *h) {
  Kvpb__PeerMessage *m =
      kvpb__peer_message__unpack(NULL, h->reply.len, h->reply.data);
  assert_non_null(m);
  return m;
}

/* A pair of frozen replicas whose exchange goes through every phase: keys
 * only on I, only on R, and on both with different values. */
static void hostile_pair(harness *h, unsigned bits) {
  test_rng r = {seed ^ 5};
  h->I = mem_new(bits, 0x11);
  h->R = mem_new(bits, 0x22);
  divergence d;
  diverge(h->I, h->R, &r, 40, 0, 20, &d);
  mem_put(h->I, (const uint8_t *)"only-i", 6, (const uint8_t *)"1", 1);
  mem_put(h->R, (const uint8_t *)"only-r", 6, (const uint8_t *)"2", 1);
  mem_put(h->R, (const uint8_t *)"only-r2", 7, (const uint8_t *)"3", 1);
  h->I->frozen = h->R->frozen = true;
}

static void test_ae_initiator_refuses_hostile_root_reply(void **state) {
  (void)state;
  harness h = {0};
  hostile_pair(&h, 8);
  for (int v = 0; v < 6; v++) {
    advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY, 1000);
    Kvpb__PeerMessage *m = unpack_reply(&h);
    Kvpb__AeRootReply *rr = m->ae_root_reply;
    kv_buf b = {NULL, 0};
    uint8_t junk[40];
    if (v == 0) { /* short root */
      rr->root.len = KV_AE_ROOT_PREFIX - 1;
      b = pack(m);
      rr->root.len = KV_AE_ROOT_PREFIX;
    } else if (v == 1) { /* another exchange */
      rr->exchange++;
      b = pack(m);
    } else if (v == 2) { /* a responder-bound message */
      Kvpb__AeRoot root = KVPB__AE_ROOT__INIT;
      root.exchange = 1000;
      root.root = rr->root;
      Kvpb__PeerMessage other = KVPB__PEER_MESSAGE__INIT;
      other.body_case = KVPB__PEER_MESSAGE__BODY_AE_ROOT;
      other.ae_root = &root;
      b = pack(&other);
    } else if (v == 3) { /* garbage */
      test_rng r = {seed ^ 6};
      for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)test_rng_next(&r);
      junk[0] = 0x32; /* field 6, length-delimited: an AeRootReply... */
      junk[1] = 0x7f; /* ...longer than what follows */
      b = kv_buf_dup(junk, sizeof junk);
    } else if (v == 4) { /* truncated */
      b = kv_buf_dup(h.reply.data, h.reply.len - 1);
    } else { /* empty */
      b = (kv_buf){NULL, 0};
    }
    kvpb__peer_message__free_unpacked(m, NULL);
    expect_feed_bad(&h, b.data, b.len);
    kv_buf_free(&b);
    harness_end(&h);
  }
  mem_free(h.I);
  mem_free(h.R);
}

static void test_ae_initiator_refuses_hostile_level_reply(void **state) {
  (void)state;
  harness h = {0};
  hostile_pair(&h, 13); /* narrow root: level 0 has 2 children */
  for (int v = 0; v < 10; v++) {
    advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY, 2000);
    Kvpb__PeerMessage *m = unpack_reply(&h);
    Kvpb__AeLevelReply *lr = m->ae_level_reply;
    Kvpb__AeLevelReply saved = *lr;
    size_t fan = kv_merkle_fanout_at(h.I->tree, lr->level);
    uint32_t nodes[64];
    assert_true(lr->n_nodes + 1 <= 64);
    memcpy(nodes, lr->nodes, lr->n_nodes * sizeof *nodes);
    /* The genuine hashes followed by room for one more node's children. */
    uint8_t *hashes = kv_calloc(lr->hashes.len + fan * 16, 1);
    memcpy(hashes, lr->hashes.data, lr->hashes.len);
    switch (v) {
    case 0: /* the next level */
      lr->level++;
      break;
    case 1: /* far beyond the tree */
      lr->level = 1000;
      break;
    case 2: /* a node index out of range */
      nodes[0] = UINT32_MAX;
      lr->nodes = nodes;
      break;
    case 3: /* one node more than asked (out of range), with its hashes */
      nodes[lr->n_nodes++] = 1u << 13;
      lr->nodes = nodes;
      lr->hashes.data = hashes;
      lr->hashes.len += fan * 16;
      break;
    case 4: /* no nodes */
      lr->n_nodes = 0;
      break;
    case 5: /* a hash short */
      lr->hashes.len -= 16;
      break;
    case 6: /* a hash extra */
      lr->hashes.data = hashes;
      lr->hashes.len += 16;
      break;
    case 7: /* a byte short */
      lr->hashes.len -= 1;
      break;
    case 8: /* another exchange */
      lr->exchange = 2001;
      break;
    default:
      break;
    }
    kv_buf b = v == 9 ? kv_buf_dup(h.reply.data, h.reply.len / 2) : pack(m);
    *lr = saved;
    kvpb__peer_message__free_unpacked(m, NULL);
    free(hashes);
    expect_feed_bad(&h, b.data, b.len);
    kv_buf_free(&b);
    harness_end(&h);
  }
  mem_free(h.I);
  mem_free(h.R);
}

/* A key whose segment (under bits) is not in segs[0..n). */
static size_t key_outside(unsigned bits, const uint32_t *segs, size_t n,
                          uint8_t *key) {
  for (unsigned i = 0;; i++) {
    int kl = snprintf((char *)key, 32, "outside-%u", i);
    uint32_t s = kv_merkle_segment_of(bits, key, (size_t)kl);
    bool in = false;
    for (size_t j = 0; j < n; j++)
      in |= segs[j] == s;
    if (!in) return (size_t)kl;
  }
}

static void test_ae_initiator_refuses_hostile_segments_reply(void **state) {
  (void)state;
  harness h = {0};
  hostile_pair(&h, 8);
  for (int v = 0; v < 9; v++) {
    advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY, 3000);
    Kvpb__PeerMessage *m = unpack_reply(&h);
    Kvpb__AeSegmentsReply *sr = m->ae_segments_reply;
    Kvpb__AeSegmentsReply saved = *sr;
    assert_true(sr->n_segments >= 1 && sr->n_entries >= 1);
    uint32_t segs[300];
    Kvpb__KeyDigest *ents[300];
    assert_true(sr->n_segments < 300 && sr->n_entries < 300);
    memcpy(segs, sr->segments, sr->n_segments * sizeof *segs);
    memcpy(ents, sr->entries, sr->n_entries * sizeof *ents);
    Kvpb__KeyDigest extra = KVPB__KEY_DIGEST__INIT;
    static uint8_t key[KV_AE_MAX_KEY + 1];
    uint8_t digest[16] = {1};
    extra.digest = (ProtobufCBinaryData){16, digest};
    sr->segments = segs;
    sr->entries = ents;
    switch (v) {
    case 0: /* a segment not asked for */
      segs[0]++;
      break;
    case 1: /* one segment more than asked */
      segs[sr->n_segments++] = 255;
      break;
    case 2: /* an empty key */
      extra.key = (ProtobufCBinaryData){0, key};
      ents[sr->n_entries++] = &extra;
      break;
    case 3: /* a key too long, in an answered segment or not */
      memset(key, 'x', sizeof key);
      extra.key = (ProtobufCBinaryData){sizeof key, key};
      ents[sr->n_entries++] = &extra;
      break;
    case 4: /* a short digest */
      extra = *ents[0];
      extra.digest.len = 15;
      ents[0] = &extra;
      break;
    case 5: /* a key twice */
      ents[sr->n_entries++] = ents[0];
      break;
    case 6: /* a key of a segment that was not answered */
      extra.key.len = key_outside(8, segs, sr->n_segments, key);
      extra.key.data = key;
      ents[sr->n_entries++] = &extra;
      break;
    case 7: /* another exchange */
      sr->exchange ^= 1;
      break;
    default:
      break;
    }
    kv_buf b = v == 8 ? kv_buf_dup(h.reply.data, h.reply.len - 3) : pack(m);
    *sr = saved;
    kvpb__peer_message__free_unpacked(m, NULL);
    expect_feed_bad(&h, b.data, b.len);
    kv_buf_free(&b);
    harness_end(&h);
  }
  mem_free(h.I);
  mem_free(h.R);
}

static void test_ae_initiator_refuses_hostile_push(void **state) {
  (void)state;
  harness h = {0};
  hostile_pair(&h, 8);
  for (int v = 0; v < 5; v++) {
    advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_PUSH, 4000);
    Kvpb__PeerMessage *m = unpack_reply(&h);
    Kvpb__AePush *p = m->ae_push;
    Kvpb__AePush saved = *p;
    assert_true(p->n_objects >= 1 && p->n_objects < 64);
    Kvpb__KeyObject *objs[64];
    memcpy(objs, p->objects, p->n_objects * sizeof *objs);
    Kvpb__KeyObject extra = *objs[0];
    static uint8_t key[600];
    p->objects = objs;
    switch (v) {
    case 0: /* a key that was not pulled */
      extra.key = (ProtobufCBinaryData){9, (uint8_t *)"not-asked"};
      objs[0] = &extra;
      break;
    case 1: /* a key twice */
      objs[p->n_objects++] = objs[0];
      break;
    case 2: /* nothing */
      p->n_objects = 0;
      break;
    case 3: /* an empty key */
      extra.key.len = 0;
      objs[0] = &extra;
      break;
    default: /* a key too long */
      extra.key = (ProtobufCBinaryData){sizeof key, key};
      objs[0] = &extra;
      break;
    }
    kv_buf b = pack(m);
    *p = saved;
    kvpb__peer_message__free_unpacked(m, NULL);
    expect_feed_bad(&h, b.data, b.len);
    kv_buf_free(&b);
    harness_end(&h);
  }
  mem_free(h.I);
  mem_free(h.R);
}

/* A duplicated reply is a protocol violation, not a second answer. */
static void test_ae_replayed_reply_refused(void **state) {
  (void)state;
  harness h = {0};
  hostile_pair(&h, 8);
  advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY, 5000);
  assert_int_equal(kv_ae_feed(h.x, h.reply.data, h.reply.len, mem_merge, h.I),
                   KV_OK);
  assert_int_equal(kv_ae_feed(h.x, h.reply.data, h.reply.len, mem_merge, h.I),
                   KV_BAD_REQUEST);
  harness_end(&h);

  advance_to(&h, KVPB__PEER_MESSAGE__BODY_AE_PUSH, 5001);
  size_t merges = h.I->merges;
  int rc = kv_ae_feed(h.x, h.reply.data, h.reply.len, mem_merge, h.I);
  assert_true(rc == KV_OK || rc == KV_CLOSED);
  assert_true(h.I->merges > merges);
  merges = h.I->merges;
  assert_int_equal(kv_ae_feed(h.x, h.reply.data, h.reply.len, mem_merge, h.I),
                   KV_BAD_REQUEST);
  assert_int_equal(h.I->merges, merges);
  harness_end(&h);
  mem_free(h.I);
  mem_free(h.R);
}

/* Random bytes and mutated genuine messages at every entry point and in
 * every initiator state: never a crash, only the documented results. */
static void test_ae_fuzz_garbage(void **state) {
  (void)state;
  test_rng r = {seed ^ 7};
  harness h = {0};
  hostile_pair(&h, 8);
  mem *R2 = mem_new(8, 0x33); /* takes the fuzzed pushes */
  mem_put(R2, (const uint8_t *)"only-r", 6, (const uint8_t *)"2", 1);

  /* A corpus of genuine messages in both directions. */
  msgq corpus = {0};
  static const int phases[] = {
      KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY,
      KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY,
      KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY,
      KVPB__PEER_MESSAGE__BODY_AE_PUSH,
  };
  for (size_t p = 0; p < 4; p++) {
    advance_to(&h, phases[p], 6000);
    q_push(&corpus, h.reply.data, h.reply.len);
    harness_end(&h);
  }
  {
    msgq to_r = {0}, to_i = {0};
    kv_ae *x = kv_ae_start(NULL, &h.I->st, 6000, q_push, &to_r);
    for (int round = 0; round < 20 && to_r.n; round++) {
      for (size_t i = 0; i < to_r.n; i++) {
        q_push(&corpus, to_r.m[i].data, to_r.m[i].len);
        assert_int_equal(kv_ae_respond(NULL, &h.R->st, to_r.m[i].data,
                                       to_r.m[i].len, q_push, &to_i, mem_merge,
                                       h.R),
                         KV_OK);
      }
      q_clear(&to_r);
      for (size_t i = 0; i < to_i.n; i++) {
        q_push(&corpus, to_i.m[i].data, to_i.m[i].len);
        int rc = kv_ae_feed(x, to_i.m[i].data, to_i.m[i].len, mem_merge, h.I);
        assert_true(rc == KV_OK || rc == KV_CLOSED);
      }
      q_clear(&to_i);
    }
    kv_ae_free(x);
    q_clear(&to_r);
  }

  uint8_t buf[4096];
  size_t counts[3] = {0};
  for (int iter = 0; iter < FUZZ_ITERS; iter++) {
    size_t len;
    if (test_rng_below(&r, 4) == 0) {
      len = test_rng_below(&r, 200);
      for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)test_rng_next(&r);
    } else {
      const kv_buf *src = &corpus.m[test_rng_below(&r, corpus.n)];
      len = src->len < sizeof buf ? src->len : sizeof buf;
      memcpy(buf, src->data, len);
      unsigned flips = 1 + (unsigned)test_rng_below(&r, 4);
      for (unsigned f = 0; f < flips && len; f++) {
        size_t at = test_rng_below(&r, len);
        switch (test_rng_below(&r, 3)) {
        case 0:
          buf[at] ^= (uint8_t)(1u << test_rng_below(&r, 8));
          break;
        case 1:
          buf[at] = (uint8_t)test_rng_next(&r);
          break;
        default:
          len = at; /* truncate */
          break;
        }
      }
    }
    uint64_t id;
    bool ti;
    int rc = kv_ae_message_exchange(buf, len, &id, &ti);
    assert_true(rc == KV_OK || rc == KV_BAD_REQUEST);

    sink s = {0};
    rc = kv_ae_respond(NULL, &R2->st, buf, len, sink_send, &s, mem_merge, R2);
    assert_true(rc == KV_OK || rc == KV_BAD_REQUEST);
    if (rc == KV_BAD_REQUEST) assert_int_equal(s.sent, 0);
    counts[0] += rc == KV_OK;

    advance_to(&h, phases[test_rng_below(&r, 4)], 6000);
    rc = kv_ae_feed(h.x, buf, len, mem_merge, h.I);
    assert_true(rc == KV_OK || rc == KV_CLOSED || rc == KV_BAD_REQUEST);
    counts[1] += rc == KV_OK;
    counts[2] += rc == KV_CLOSED;
    harness_end(&h);
  }
  printf("fuzz: %d inputs; respond accepted %zu; feed continued %zu, "
         "closed %zu\n",
         FUZZ_ITERS, counts[0], counts[1], counts[2]);
  q_clear(&corpus);
  mem_free(R2);
  mem_free(h.I);
  mem_free(h.R);
}

int main(void) {
  seed = test_seed("antientropy_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ae_in_sync_one_round_trip),
      cmocka_unit_test(test_ae_random_divergence_converges),
      cmocka_unit_test(test_ae_concurrent_values_become_siblings),
      cmocka_unit_test(test_ae_bounded_work_converges),
      cmocka_unit_test(test_ae_ratio_10k_keys_1pct),
      cmocka_unit_test(test_ae_pull_of_vanished_key_completes),
      cmocka_unit_test(test_ae_store_error_ends_exchange),
      cmocka_unit_test(test_ae_responder_answers_whole_segments),
      cmocka_unit_test(test_ae_message_routing),
      cmocka_unit_test(test_ae_responder_refuses_hostile),
      cmocka_unit_test(test_ae_initiator_refuses_hostile_root_reply),
      cmocka_unit_test(test_ae_initiator_refuses_hostile_level_reply),
      cmocka_unit_test(test_ae_initiator_refuses_hostile_segments_reply),
      cmocka_unit_test(test_ae_initiator_refuses_hostile_push),
      cmocka_unit_test(test_ae_replayed_reply_refused),
      cmocka_unit_test(test_ae_fuzz_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
