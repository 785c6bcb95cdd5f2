/*
 * Unit tests for sync/merkle: tree shapes, segment and contribution hashing,
 * and the properties the rest of the system leans on: applying deltas
 * incrementally gives the same tree as rebuilding from scratch or loading the
 * leaves, and the level-by-level diff finds exactly the segments that differ.
 * The run's seed is printed at start; KV_SEED=<n> replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "proto/buf.h"
#include "sync/merkle.h"
#include "tests/unit/testutil.h"

#define MAX_KEY 507
/* The run's seed (testutil.h); each randomised test derives its own stream
 * from it. */
static uint64_t seed;

static void fill(test_rng *r, uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)test_rng_next(r);
}

/* A random hash that is never zero, so applying it always changes a node. */
static kv_hash random_hash(test_rng *r) {
  kv_hash h;
  fill(r, h.b, sizeof h.b);
  h.b[0] |= 1;
  return h;
}

static kv_merkle *new_tree(unsigned bits) {
  kv_merkle *t = NULL;
  assert_int_equal(kv_merkle_new(bits, &t), KV_OK);
  assert_non_null(t);
  return t;
}

static void assert_trees_equal(const kv_merkle *a, const kv_merkle *b) {
  assert_int_equal(kv_merkle_depth(a), kv_merkle_depth(b));
  for (unsigned l = 0; l < kv_merkle_depth(a); l++) {
    assert_int_equal(kv_merkle_level_size(a, l), kv_merkle_level_size(b, l));
    for (uint32_t i = 0; i < kv_merkle_level_size(a, l); i++) {
      kv_hash x = kv_merkle_node(a, l, i), y = kv_merkle_node(b, l, i);
      if (!kv_hash_equal(&x, &y)) fail_msg("level %u node %u differs", l, i);
    }
  }
}

static void assert_tree_zero(const kv_merkle *t) {
  for (unsigned l = 0; l < kv_merkle_depth(t); l++)
    for (uint32_t i = 0; i < kv_merkle_level_size(t, l); i++) {
      kv_hash h = kv_merkle_node(t, l, i);
      if (!kv_hash_is_zero(&h)) fail_msg("level %u node %u not zero", l, i);
    }
}

/* Every inner node must be the XOR of its children, whatever built it. */
static void assert_tree_consistent(const kv_merkle *t) {
  for (unsigned l = 0; l + 1 < kv_merkle_depth(t); l++) {
    uint32_t fan = kv_merkle_fanout_at(t, l);
    for (uint32_t i = 0; i < kv_merkle_level_size(t, l); i++) {
      kv_hash acc = {{0}};
      for (uint32_t j = 0; j < fan; j++) {
        kv_hash c = kv_merkle_node(t, l + 1, i * KV_MERKLE_FANOUT + j);
        kv_hash_xor(&acc, &c);
      }
      kv_hash h = kv_merkle_node(t, l, i);
      if (!kv_hash_equal(&acc, &h))
        fail_msg("level %u node %u is not the XOR of its children", l, i);
    }
  }
}

/* Runs fn in a child process and checks that it dies by kv_panic (abort).
 * The child restores the default SIGABRT action so cmocka's handler does not
 * turn the abort into a failed test that carries on in the child. */

static void test_merkle_shapes(void **state) {
  (void)state;
  static const struct {
    unsigned bits, depth;
    uint32_t sizes[8];
  } cases[] = {
      {4, 2, {1, 16}},
      {5, 3, {1, 2, 32}},
      {6, 3, {1, 4, 64}},
      {7, 3, {1, 8, 128}},
      {8, 3, {1, 16, 256}},
      {9, 4, {1, 2, 32, 512}},
      {12, 4, {1, 16, 256, 4096}},
      {16, 5, {1, 16, 256, 4096, 65536}},
      {17, 6, {1, 2, 32, 512, 8192, 131072}},
      {24, 7, {1, 16, 256, 4096, 65536, 1048576, 16777216}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kv_merkle *t = new_tree(cases[c].bits);
    assert_int_equal(kv_merkle_segment_bits(t), cases[c].bits);
    assert_int_equal(kv_merkle_segments(t), (uint32_t)1 << cases[c].bits);
    assert_int_equal(kv_merkle_depth(t), cases[c].depth);
    for (unsigned l = 0; l < cases[c].depth; l++)
      assert_int_equal(kv_merkle_level_size(t, l), cases[c].sizes[l]);
    for (unsigned l = 0; l + 1 < cases[c].depth; l++)
      assert_int_equal(kv_merkle_fanout_at(t, l),
                       cases[c].sizes[l + 1] / cases[c].sizes[l]);
    assert_int_equal(kv_merkle_fanout_at(t, cases[c].depth - 1), 0);
    kv_hash root = kv_merkle_root(t);
    assert_true(kv_hash_is_zero(&root));
    kv_merkle_free(t);
  }
}

/* The general rule for every allowed size: one level per 4 bits plus the
 * root, 16 children per inner node except possibly under the root. */
static void test_merkle_shapes_all_bits(void **state) {
  (void)state;
  for (unsigned bits = KV_MERKLE_MIN_BITS; bits <= KV_MERKLE_MAX_BITS; bits++) {
    kv_merkle *t = new_tree(bits);
    unsigned depth = kv_merkle_depth(t);
    assert_int_equal(depth, 1 + (bits + 3) / 4);
    assert_int_equal(kv_merkle_level_size(t, 0), 1);
    assert_int_equal(kv_merkle_level_size(t, depth - 1), (uint32_t)1 << bits);
    uint32_t root_fan = bits % 4 ? (uint32_t)1 << (bits % 4) : 16;
    assert_int_equal(kv_merkle_fanout_at(t, 0), root_fan);
    for (unsigned l = 1; l + 1 < depth; l++) {
      assert_int_equal(kv_merkle_fanout_at(t, l), KV_MERKLE_FANOUT);
      assert_int_equal(kv_merkle_level_size(t, l + 1),
                       kv_merkle_level_size(t, l) * KV_MERKLE_FANOUT);
    }
    kv_merkle_free(t);
  }
}

static void test_merkle_new_and_empty_tree(void **state) {
  (void)state;
  kv_merkle *t = new_tree(KV_MERKLE_DEFAULT_BITS);
  assert_int_equal(kv_merkle_depth(t), 5);
  assert_tree_zero(t);
  kv_merkle_free(t);
  kv_merkle_free(NULL);
}

static void test_merkle_invalid_bits_rejected(void **state) {
  (void)state;
  static const unsigned bad[] = {0, 1, 3, 25, 32, 64, 0xffffffffu};
  kv_merkle *good = new_tree(KV_MERKLE_MIN_BITS);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kv_merkle *t = good; /* a failed call must not leave a stale pointer */
    assert_int_equal(kv_merkle_new(bad[i], &t), KV_INVALID);
    assert_null(t);
  }
  kv_merkle_free(good);
  kv_merkle *t = new_tree(KV_MERKLE_MAX_BITS);
  assert_int_equal(kv_merkle_segments(t), (uint32_t)1 << KV_MERKLE_MAX_BITS);
  kv_merkle_free(t);
}

static void test_merkle_segment_of_uses_top_bits(void **state) {
  (void)state;
  test_rng r = {seed ^ 1};
  uint8_t key[MAX_KEY];
  uint32_t seen16 = 0;
  for (int n = 0; n < 2000; n++) {
    size_t len = 1 + test_rng_below(&r, MAX_KEY);
    fill(&r, key, len);
    uint64_t h = XXH3_64bits(key, len);
    for (unsigned bits = KV_MERKLE_MIN_BITS; bits <= KV_MERKLE_MAX_BITS;
         bits++) {
      uint32_t s = kv_merkle_segment_of(bits, key, len);
      assert_int_equal(s, kv_merkle_segment_of(bits, key, len));
      assert_int_equal(s, (uint32_t)(h >> (64 - bits)));
      assert_true(s < (uint32_t)1 << bits);
      /* One more bit refines the segment, it does not reshuffle it. */
      if (bits < KV_MERKLE_MAX_BITS)
        assert_int_equal(kv_merkle_segment_of(bits + 1, key, len) >> 1, s);
    }
    seen16 |= (uint32_t)1 << kv_merkle_segment_of(4, key, len);
  }
  assert_int_equal(seen16, 0xffffu);
  /* Known answers (XXH3-64("hello") = 0x9555e8555c62dcfd): segments are
   * persisted and must agree across replicas, builds and library versions. */
  assert_int_equal(kv_merkle_segment_of(4, "hello", 5), 0x9);
  assert_int_equal(kv_merkle_segment_of(16, "hello", 5), 0x9555);
  assert_int_equal(kv_merkle_segment_of(24, "hello", 5), 0x9555e8);
}

static void expect_contribution(const void *key, size_t len,
                                const uint8_t digest[16]) {
  uint8_t *in = kv_malloc(len + 16);
  if (len) memcpy(in, key, len);
  memcpy(in + len, digest, 16);
  XXH128_hash_t h = XXH3_128bits(in, len + 16);
  free(in);
  kv_hash want;
  kv_put_be64(want.b, h.high64);
  kv_put_be64(want.b + 8, h.low64);
  kv_hash got = kv_merkle_contribution(key, len, digest);
  assert_memory_equal(got.b, want.b, 16);
}

static void test_merkle_contribution_is_xxh128_be(void **state) {
  (void)state;
  test_rng r = {seed ^ 2};
  uint8_t digest[16], key[4096];
  fill(&r, digest, sizeof digest);
  fill(&r, key, sizeof key);
  static const size_t lens[] = {0,   1,   2,   15,   16,   17,
                                128, 506, 507, 1008, 1009, 4096};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    expect_contribution(key, lens[i], digest);

  /* Known answer, pinned for the same reason as segments: XXH3-128 of
   * "hello" followed by the bytes 0..15 is 2eab380d000c8d87 d1154432707707e6
   * (high, low), stored high half first. */
  static const uint8_t kat[16] = {0x2e, 0xab, 0x38, 0x0d, 0x00, 0x0c,
                                  0x8d, 0x87, 0xd1, 0x15, 0x44, 0x32,
                                  0x70, 0x77, 0x07, 0xe6};
  uint8_t counting[16];
  for (int i = 0; i < 16; i++)
    counting[i] = (uint8_t)i;
  kv_hash k = kv_merkle_contribution("hello", 5, counting);
  assert_memory_equal(k.b, kat, 16);

  kv_hash a = kv_merkle_contribution("k", 1, digest);
  digest[15] ^= 1;
  kv_hash b = kv_merkle_contribution("k", 1, digest);
  assert_false(kv_hash_equal(&a, &b));
  kv_hash c = kv_merkle_contribution("j", 1, digest);
  assert_false(kv_hash_equal(&b, &c));
}

static void test_merkle_hash_helpers(void **state) {
  (void)state;
  kv_hash z = {{0}}, a, b;
  for (int i = 0; i < 16; i++) {
    a.b[i] = (uint8_t)(i * 17 + 1);
    b.b[i] = (uint8_t)(0xa5 ^ i);
  }
  assert_true(kv_hash_is_zero(&z));
  assert_false(kv_hash_is_zero(&a));
  kv_hash one_bit = z;
  one_bit.b[15] = 0x80;
  assert_false(kv_hash_is_zero(&one_bit));

  kv_hash x = a;
  kv_hash_xor(&x, &b);
  for (int i = 0; i < 16; i++)
    assert_int_equal(x.b[i], a.b[i] ^ b.b[i]);
  assert_false(kv_hash_equal(&x, &a));
  kv_hash_xor(&x, &b);
  assert_true(kv_hash_equal(&x, &a));
  kv_hash_xor(&x, &a);
  assert_true(kv_hash_is_zero(&x));
  assert_true(kv_hash_equal(&x, &z));
}

/* A delta reaches its leaf and every ancestor and nothing else; applying it
 * again cancels it everywhere. */
static void test_merkle_apply_twice_restores_zero(void **state) {
  (void)state;
  test_rng r = {seed ^ 3};
  static const unsigned sizes[] = {4, 5, 9, 16};
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    kv_merkle *t = new_tree(sizes[c]);
    unsigned depth = kv_merkle_depth(t);
    uint32_t segs[] = {0, kv_merkle_segments(t) - 1,
                       (uint32_t)test_rng_below(&r, kv_merkle_segments(t))};
    for (size_t s = 0; s < 3; s++) {
      kv_hash d = random_hash(&r);
      kv_merkle_apply(t, segs[s], &d);
      kv_hash root = kv_merkle_root(t);
      assert_true(kv_hash_equal(&root, &d));
      for (unsigned l = 0; l < depth; l++) {
        uint32_t on_path = segs[s];
        for (unsigned up = depth - 1; up > l; up--)
          on_path /= 16;
        for (uint32_t i = 0; i < kv_merkle_level_size(t, l); i++) {
          kv_hash h = kv_merkle_node(t, l, i);
          if (i == on_path)
            assert_true(kv_hash_equal(&h, &d));
          else
            assert_true(kv_hash_is_zero(&h));
        }
      }
      kv_merkle_apply(t, segs[s], &d);
      assert_tree_zero(t);
    }
    kv_merkle_free(t);
  }
}

/* The model: a pool of distinct keys, each absent or present with a digest. */
typedef struct model {
  size_t n;
  uint8_t (*key)[MAX_KEY];
  size_t *len;
  bool *present;
  uint8_t (*digest)[16];
} model;

static model model_new(test_rng *r, size_t n) {
  model m = {n, kv_malloc(n * MAX_KEY), kv_malloc(n * sizeof(size_t)),
             kv_calloc(n, sizeof(bool)), kv_malloc(n * 16)};
  for (size_t i = 0; i < n; i++) {
    /* Single-byte keys first, then an index prefix keeps the rest distinct
     * whatever the random tail; lengths reach the 507-byte maximum. */
    if (i < 16) {
      m.key[i][0] = (uint8_t)i;
      m.len[i] = 1;
    } else {
      kv_put_be32(m.key[i], (uint32_t)i);
      m.len[i] = 4 + (i % 7 == 0 ? MAX_KEY - 4 : test_rng_below(r, 60));
      fill(r, m.key[i] + 4, m.len[i] - 4);
    }
  }
  return m;
}

static void model_free(model *m) {
  free(m->key);
  free(m->len);
  free(m->present);
  free(m->digest);
}

static kv_hash model_contribution(const model *m, size_t i) {
  return kv_merkle_contribution(m->key[i], m->len[i], m->digest[i]);
}

/* One random insert, update or delete, applied to t as old ^ new. */
static void model_step(model *m, test_rng *r, kv_merkle *t) {
  size_t i = test_rng_below(r, m->n);
  unsigned bits = kv_merkle_segment_bits(t);
  uint32_t seg = kv_merkle_segment_of(bits, m->key[i], m->len[i]);
  kv_hash delta = {{0}};
  if (m->present[i]) {
    kv_hash old = model_contribution(m, i);
    kv_hash_xor(&delta, &old);
  }
  if (!m->present[i] || test_rng_below(r, 2)) {
    fill(r, m->digest[i], 16);
    m->present[i] = true;
    kv_hash now = model_contribution(m, i);
    kv_hash_xor(&delta, &now);
  } else {
    m->present[i] = false;
  }
  kv_merkle_apply(t, seg, &delta);
}

static void test_merkle_incremental_equals_rebuilt(void **state) {
  (void)state;
  test_rng r = {seed ^ 4};
  static const unsigned sizes[] = {4, 5, 7, 12, 16};
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    unsigned bits = sizes[c];
    model m = model_new(&r, 3000);
    kv_merkle *inc = new_tree(bits);
    for (int op = 0; op < 20000; op++)
      model_step(&m, &r, inc);

    kv_merkle *fresh = new_tree(bits);
    size_t live = 0;
    for (size_t i = 0; i < m.n; i++) {
      if (!m.present[i]) continue;
      live++;
      kv_hash h = model_contribution(&m, i);
      kv_merkle_apply(fresh, kv_merkle_segment_of(bits, m.key[i], m.len[i]),
                      &h);
    }
    assert_true(live > 0);
    kv_hash root = kv_merkle_root(inc);
    assert_false(kv_hash_is_zero(&root));
    assert_trees_equal(inc, fresh);
    assert_tree_consistent(inc);

    /* Deleting everything that is left takes the tree back to empty. */
    for (size_t i = 0; i < m.n; i++) {
      if (!m.present[i]) continue;
      kv_hash h = model_contribution(&m, i);
      kv_merkle_apply(inc, kv_merkle_segment_of(bits, m.key[i], m.len[i]), &h);
    }
    assert_tree_zero(inc);

    kv_merkle_free(inc);
    kv_merkle_free(fresh);
    model_free(&m);
  }
}

static void test_merkle_load_leaves_equals_incremental(void **state) {
  (void)state;
  test_rng r = {seed ^ 5};
  static const unsigned sizes[] = {4, 5, 6, 11, 16};
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    unsigned bits = sizes[c];
    model m = model_new(&r, 2000);
    kv_merkle *inc = new_tree(bits);
    for (int op = 0; op < 8000; op++)
      model_step(&m, &r, inc);

    uint32_t nseg = kv_merkle_segments(inc);
    kv_hash *leaves = kv_calloc(nseg, sizeof *leaves);
    for (size_t i = 0; i < m.n; i++) {
      if (!m.present[i]) continue;
      kv_hash h = model_contribution(&m, i);
      kv_hash_xor(&leaves[kv_merkle_segment_of(bits, m.key[i], m.len[i])], &h);
    }

    kv_merkle *loaded = new_tree(bits);
    kv_merkle_load_leaves(loaded, leaves);
    assert_trees_equal(inc, loaded);
    assert_tree_consistent(loaded);

    /* Loading over a tree that already holds something replaces all of it. */
    kv_merkle *dirty = new_tree(bits);
    for (int k = 0; k < 50; k++) {
      kv_hash d = random_hash(&r);
      kv_merkle_apply(dirty, (uint32_t)test_rng_below(&r, nseg), &d);
    }
    kv_merkle_load_leaves(dirty, leaves);
    assert_trees_equal(inc, dirty);

    memset(leaves, 0, nseg * sizeof *leaves);
    kv_merkle_load_leaves(dirty, leaves);
    assert_tree_zero(dirty);

    free(leaves);
    kv_merkle_free(inc);
    kv_merkle_free(loaded);
    kv_merkle_free(dirty);
    model_free(&m);
  }
}

/* Builds a and b with a shared random background, then makes b differ from a
 * in each segment with probability num/den (0 = none, den = all); returns
 * the differing segments in increasing order in want. */
static size_t diverge(test_rng *r, kv_merkle *a, kv_merkle *b, uint64_t num,
                      uint64_t den, uint32_t *want) {
  uint32_t nseg = kv_merkle_segments(a);
  for (uint32_t k = 0; k < nseg / 2 + 8; k++) {
    kv_hash d = random_hash(r);
    uint32_t s = (uint32_t)test_rng_below(r, nseg);
    kv_merkle_apply(a, s, &d);
    kv_merkle_apply(b, s, &d);
  }
  size_t n = 0;
  for (uint32_t s = 0; s < nseg; s++) {
    if (test_rng_below(r, den) >= num) continue;
    kv_hash d = random_hash(r);
    kv_merkle_apply(test_rng_below(r, 2) ? a : b, s, &d);
    want[n++] = s;
  }
  return n;
}

static void test_merkle_diff_finds_exactly_differing_segments(void **state) {
  (void)state;
  test_rng r = {seed ^ 6};
  static const unsigned sizes[] = {4, 5, 9, 12, 16};
  static const uint64_t odds[][2] = {{0, 1},  {1, 1},    {1, 2},
                                     {1, 50}, {1, 2000}, {3, 4}};
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    uint32_t nseg = (uint32_t)1 << sizes[c];
    uint32_t *want = kv_malloc(nseg * sizeof *want);
    uint32_t *got = kv_malloc(nseg * sizeof *got);
    for (size_t o = 0; o < sizeof odds / sizeof odds[0]; o++) {
      for (int round = 0; round < 3; round++) {
        kv_merkle *a = new_tree(sizes[c]), *b = new_tree(sizes[c]);
        size_t n = diverge(&r, a, b, odds[o][0], odds[o][1], want);
        if (odds[o][0] == 0) assert_int_equal(n, 0);
        if (odds[o][0] == odds[o][1]) assert_int_equal(n, nseg);

        assert_int_equal(kv_merkle_diff(a, b, got, nseg), n);
        assert_memory_equal(got, want, n * sizeof *got);
        assert_int_equal(kv_merkle_diff(b, a, got, nseg), n);
        assert_memory_equal(got, want, n * sizeof *got);
        assert_int_equal(kv_merkle_diff(a, a, got, nseg), 0);

        /* A short out still reports the full count, and holds the prefix. */
        size_t cap = n / 3;
        memset(got, 0xff, nseg * sizeof *got);
        assert_int_equal(kv_merkle_diff(a, b, got, cap), n);
        assert_memory_equal(got, want, cap * sizeof *got);
        if (cap < nseg) assert_int_equal(got[cap], 0xffffffffu);
        assert_int_equal(kv_merkle_diff(a, b, NULL, 0), n);

        kv_merkle_free(a);
        kv_merkle_free(b);
      }
    }
    free(want);
    free(got);
  }
}

static void test_merkle_diff_children_edge_cases(void **state) {
  (void)state;
  test_rng r = {seed ^ 7};
  uint32_t out[64];
  kv_hash theirs[32];

  /* bits 5: a root with only two children. */
  kv_merkle *t = new_tree(5);
  kv_hash d = random_hash(&r);
  kv_merkle_apply(t, 20, &d); /* under level-1 node 1 */
  uint32_t root = 0;
  memset(theirs, 0, sizeof theirs);
  out[0] = 77;
  assert_int_equal(kv_merkle_diff_children(t, 0, &root, 0, theirs, out), 0);
  assert_int_equal(out[0], 77);
  assert_int_equal(kv_merkle_diff_children(t, 0, &root, 1, theirs, out), 1);
  assert_int_equal(out[0], 1);
  theirs[1] = kv_merkle_node(t, 1, 1);
  assert_int_equal(kv_merkle_diff_children(t, 0, &root, 1, theirs, out), 0);
  /* Only fanout_at(0) == 2 hashes are read under this root: a difference in
   * theirs[2] must not be seen. */
  theirs[2] = d;
  assert_int_equal(kv_merkle_diff_children(t, 0, &root, 1, theirs, out), 0);
  uint32_t one = 1;
  memset(theirs, 0, sizeof theirs);
  assert_int_equal(kv_merkle_diff_children(t, 1, &one, 1, theirs, out), 1);
  assert_int_equal(out[0], 20);
  kv_merkle_free(t);

  /* bits 12: two parents at level 1, differences at their first and last
   * children, in the order the parents were given. */
  t = new_tree(12);
  kv_merkle_apply(t, 16 * 16, &d);     /* level-2 node 16 */
  kv_merkle_apply(t, 63 * 16 + 5, &d); /* level-2 node 63 */
  kv_merkle_apply(t, 40 * 16, &d);     /* not asked about */
  uint32_t parents[2] = {1, 3};
  for (int i = 0; i < 32; i++)
    theirs[i] = kv_merkle_node(t, 2, (uint32_t)(parents[i / 16] * 16 + i % 16));
  assert_int_equal(kv_merkle_diff_children(t, 1, parents, 2, theirs, out), 0);
  memset(theirs, 0, sizeof theirs);
  assert_int_equal(kv_merkle_diff_children(t, 1, parents, 2, theirs, out), 2);
  assert_int_equal(out[0], 16);
  assert_int_equal(out[1], 63);
  uint32_t reversed[2] = {3, 1};
  assert_int_equal(kv_merkle_diff_children(t, 1, reversed, 2, theirs, out), 2);
  assert_int_equal(out[0], 63);
  assert_int_equal(out[1], 16);

  /* Everything differs: count * fan-out indices, increasing. */
  for (int i = 0; i < 32; i++)
    theirs[i] = random_hash(&r);
  assert_int_equal(kv_merkle_diff_children(t, 1, parents, 2, theirs, out), 32);
  for (uint32_t i = 0; i < 32; i++)
    assert_int_equal(out[i], parents[i / 16] * 16 + i % 16);

  /* Last inner level: the results are segment numbers. */
  uint32_t leaf_parent = 63;
  for (int i = 0; i < 16; i++)
    theirs[i] = kv_merkle_node(t, 3, (uint32_t)(leaf_parent * 16 + i));
  assert_int_equal(kv_merkle_diff_children(t, 2, &leaf_parent, 1, theirs, out),
                   0);
  memset(theirs, 0, sizeof theirs);
  assert_int_equal(kv_merkle_diff_children(t, 2, &leaf_parent, 1, theirs, out),
                   1);
  assert_int_equal(out[0], 63 * 16 + 5);
  kv_merkle_free(t);
}

static void panic_apply_out_of_range(void) {
  kv_merkle *t = new_tree(4);
  kv_hash d = {{1}};
  kv_merkle_apply(t, 16, &d);
}

static void panic_node_out_of_range(void) {
  kv_merkle *t = new_tree(5);
  (void)kv_merkle_node(t, 1, 2);
}

static void panic_diff_children_at_leaves(void) {
  kv_merkle *t = new_tree(4);
  uint32_t node = 0, out[16];
  kv_hash theirs[16] = {{{0}}};
  (void)kv_merkle_diff_children(t, 1, &node, 1, theirs, out);
}

static void panic_diff_shapes(void) {
  kv_merkle *a = new_tree(8), *b = new_tree(9);
  (void)kv_merkle_diff(a, b, NULL, 0);
}

/* Out-of-range indices and mismatched shapes are caller bugs, not input
 * errors (callers validate what peers send), so they panic. */
static void test_merkle_out_of_range_panics(void **state) {
  (void)state;
  assert_panics(panic_apply_out_of_range);
  assert_panics(panic_node_out_of_range);
  assert_panics(panic_diff_children_at_leaves);
  assert_panics(panic_diff_shapes);
}

int main(void) {
  seed = test_seed("merkle_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_merkle_shapes),
      cmocka_unit_test(test_merkle_shapes_all_bits),
      cmocka_unit_test(test_merkle_new_and_empty_tree),
      cmocka_unit_test(test_merkle_invalid_bits_rejected),
      cmocka_unit_test(test_merkle_segment_of_uses_top_bits),
      cmocka_unit_test(test_merkle_contribution_is_xxh128_be),
      cmocka_unit_test(test_merkle_hash_helpers),
      cmocka_unit_test(test_merkle_apply_twice_restores_zero),
      cmocka_unit_test(test_merkle_incremental_equals_rebuilt),
      cmocka_unit_test(test_merkle_load_leaves_equals_incremental),
      cmocka_unit_test(test_merkle_diff_finds_exactly_differing_segments),
      cmocka_unit_test(test_merkle_diff_children_edge_cases),
      cmocka_unit_test(test_merkle_out_of_range_panics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
