/*
 * Unit tests for sync/seal: sealing and opening peer envelopes. Round trips
 * and the documented wire layout; every single-bit change of an envelope and
 * every truncation refused with the right verdict; keys, keyring rotation,
 * cluster, version, mode and clock-skew checks and the order they run in; the
 * per-sender replay window (exact replays, reordering inside the window,
 * counters below it, forgeries that must not move it, reflection of our own
 * envelopes) against a reference model; the bounded sender table. Nonces and
 * reorderings come from the run's seed, printed at start; KV_SEED=<n> replays
 * a run.
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

#include <sodium.h>

#include "sync/seal.h"
#include "tests/unit/testutil.h"

static uint64_t seed;

/* A clock reading in the range the server sees (ms since the epoch), and a
 * counter_start like the server's (boot time in microseconds). */
#define NOW 1700000000000ull
#define BOOT_US 1700000000000000ull

/* A keyring of distinct, non-zero keys; filled in main. */
static uint8_t ring[KV_SEAL_MAX_KEYS][KV_SEAL_KEY_LEN];

static test_rng rng_for(uint64_t salt) {
  return (test_rng){seed ^ (salt * 0x9e3779b97f4a7c15ull)};
}

static kv_seal *mk(const char *cluster, uint64_t sender, uint64_t start,
                   const uint8_t (*keys)[KV_SEAL_KEY_LEN], size_t nkeys) {
  kv_seal_opts o = {.cluster = cluster,
                    .sender = sender,
                    .counter_start = start,
                    .keys = keys,
                    .nkeys = nkeys};
  kv_seal *s = NULL;
  assert_int_equal(kv_seal_new(&o, &s), KV_OK);
  assert_non_null(s);
  return s;
}

/* A secure peer of cluster "epikv" sealing with ring[k]. */
static kv_seal *peer(uint64_t sender, size_t k) {
  return mk("epikv", sender, BOOT_US,
            (const uint8_t(*)[KV_SEAL_KEY_LEN]) & ring[k], 1);
}

static uint8_t body_byte(size_t j) { return (uint8_t)(j * 7 + 3 + (j >> 8)); }

static kv_buf seal_with(kv_seal *s, test_rng *r, uint64_t now,
                        const uint8_t *body, size_t len) {
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  for (size_t i = 0; i < sizeof nonce; i++)
    nonce[i] = (uint8_t)test_rng_next(r);
  kv_buf out = {NULL, 0};
  kv_seal_seal(s, now, nonce, body, len, &out);
  assert_non_null(out.data);
  return out;
}

/* Seals len bytes of the body_byte pattern. */
static kv_buf seal_n(kv_seal *s, test_rng *r, uint64_t now, size_t len) {
  uint8_t *b = kv_malloc(len);
  for (size_t j = 0; j < len; j++)
    b[j] = body_byte(j);
  kv_buf out = seal_with(s, r, now, len ? b : NULL, len);
  free(b);
  return out;
}

#define assert_verdict(got, want)                                              \
  do {                                                                         \
    kv_seal_verdict g_ = (got), w_ = (want);                                   \
    if (g_ != w_)                                                              \
      fail_msg("verdict %s, want %s", kv_seal_verdict_name(g_),                \
               kv_seal_verdict_name(w_));                                      \
  } while (0)

/* Opens env and returns the verdict. On OK the body must be the body_byte
 * pattern (of whatever length was sealed); on anything else it must be
 * {NULL, 0}. */
static kv_seal_verdict open_v(kv_seal *r, uint64_t now, const uint8_t *env,
                              size_t len, kv_seal_info *info) {
  kv_buf body = {(uint8_t *)"junk", 4};
  kv_seal_info tmp;
  kv_seal_verdict v = kv_seal_open(r, now, env, len, info ? info : &tmp, &body);
  if (v != KV_SEAL_OK) {
    assert_null(body.data);
    assert_int_equal(body.len, 0);
  } else {
    if (body.len == 0) assert_null(body.data);
    for (size_t j = 0; j < body.len; j++)
      if (body.data[j] != body_byte(j))
        fail_msg("body byte %zu: got %u want %u", j, body.data[j],
                 body_byte(j));
    kv_buf_free(&body);
  }
  return v;
}

static kv_seal_verdict open_buf(kv_seal *r, uint64_t now, kv_buf env) {
  return open_v(r, now, env.data, env.len, NULL);
}

static void test_seal_round_trip(void **state) {
  (void)state;
  test_rng rg = rng_for(1);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  static const size_t lens[] = {0, 1, 15, 16, 17, 100, 1000, 65536};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t n = lens[i];
    kv_buf env = seal_n(a, &rg, NOW + i, n);
    assert_int_equal(env.len, KV_SEAL_OVERHEAD + n);
    if (n >= 16) {
      /* Encrypted: the body does not appear in clear. */
      uint8_t *clear = kv_malloc(n);
      for (size_t j = 0; j < n; j++)
        clear[j] = body_byte(j);
      assert_true(memcmp(env.data + KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN,
                         clear, n) != 0);
      free(clear);
    }
    kv_buf body = {NULL, 0};
    kv_seal_info info = {0, 0, 0, 99};
    assert_verdict(kv_seal_open(b, NOW, env.data, env.len, &info, &body),
                   KV_SEAL_OK);
    assert_int_equal(body.len, n);
    for (size_t j = 0; j < n; j++)
      assert_int_equal(body.data[j], body_byte(j));
    assert_int_equal(info.sender, 7);
    assert_int_equal(info.ts_ms, NOW + i);
    assert_int_equal(info.counter, BOOT_US + i);
    assert_int_equal(info.key, 0);
    kv_buf_free(&body);
    kv_buf_free(&env);
  }
  /* Both directions over one pair of handles. */
  kv_buf env = seal_n(b, &rg, NOW, 5);
  assert_verdict(open_buf(a, NOW, env), KV_SEAL_OK);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_wire_layout(void **state) {
  (void)state;
  test_rng rg = rng_for(2);
  kv_seal *a = mk("layout", 0x0102030405060708ull, 42,
                  (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  for (size_t i = 0; i < sizeof nonce; i++)
    nonce[i] = (uint8_t)test_rng_next(&rg);
  static const uint8_t msg[] = "hello, replica";
  kv_buf env = {NULL, 0};
  kv_seal_seal(a, NOW, nonce, msg, sizeof msg, &env);
  assert_int_equal(env.len, KV_SEAL_OVERHEAD + sizeof msg);
  assert_int_equal(KV_SEAL_OVERHEAD, 74);
  const uint8_t *p = env.data;
  assert_int_equal(p[0], KV_SEAL_VERSION);
  assert_int_equal(p[1], 0);
  assert_int_equal(kv_get_be64(p + 2), kv_seal_cluster_id("layout"));
  assert_int_equal(p[10], 0x01);
  assert_int_equal(p[17], 0x08);
  assert_int_equal(kv_get_be64(p + 18), NOW);
  assert_int_equal(kv_get_be64(p + 26), 42);
  assert_memory_equal(p + 34, nonce, sizeof nonce);
  /* Independently: XChaCha20-Poly1305 of the body with the 34-byte header as
   * associated data and ring[0] as key. */
  uint8_t m[sizeof msg];
  unsigned long long mlen = 0;
  assert_int_equal(
      crypto_aead_xchacha20poly1305_ietf_decrypt(
          m, &mlen, NULL, p + 58, env.len - 58, p, 34, nonce, ring[0]),
      0);
  assert_int_equal(mlen, sizeof msg);
  assert_memory_equal(m, msg, sizeof msg);
  kv_buf_free(&env);
  kv_seal_free(a);
}

static void test_seal_cluster_id_is_blake2b_prefix(void **state) {
  (void)state;
  /* BLAKE2b-256("") = 0e5751c026e543b2 e8ab2eb0... (RFC 7693 test vectors
   * family; also libsodium's crypto_generichash of nothing). */
  assert_int_equal(kv_seal_cluster_id(""), 0x0e5751c026e543b2ull);
  uint8_t h[32];
  crypto_generichash(h, sizeof h, (const unsigned char *)"epikv", 5, NULL, 0);
  assert_int_equal(kv_seal_cluster_id("epikv"), kv_get_be64(h));
  assert_true(kv_seal_cluster_id("epikv") != kv_seal_cluster_id("epikw"));
}

/* What opening an envelope with bit `bit` of byte `i` flipped must give.
 * The receiver has seen nothing from the sender, so no counter is a replay;
 * the sealing time equals the opening time. */
static kv_seal_verdict tamper_expect(size_t i, unsigned bit,
                                     uint64_t max_skew) {
  if (i == 0) return KV_SEAL_BAD_VERSION;
  if (i == 1) return bit == 0 ? KV_SEAL_MODE_MISMATCH : KV_SEAL_BAD_VERSION;
  if (i < 10) return KV_SEAL_WRONG_CLUSTER;
  if (i >= 18 && i < 26) {
    /* ts_ms: the change is 2^k ms for k the bit's weight in the u64. */
    unsigned k = (unsigned)(25 - i) * 8 + bit;
    return ((uint64_t)1 << k) > max_skew ? KV_SEAL_STALE : KV_SEAL_BAD_TAG;
  }
  return KV_SEAL_BAD_TAG; /* sender, counter, nonce, ciphertext, tag */
}

static void test_seal_tamper_every_bit_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(3);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf env = seal_n(a, &rg, NOW, 40);
  uint8_t *t = kv_malloc(env.len);
  size_t counts[KV_SEAL_NVERDICTS] = {0};
  for (size_t i = 0; i < env.len; i++) {
    for (unsigned bit = 0; bit < 8; bit++) {
      memcpy(t, env.data, env.len);
      t[i] ^= (uint8_t)(1u << bit);
      kv_seal_verdict want = tamper_expect(i, bit, KV_SEAL_DEFAULT_SKEW_MS);
      kv_seal_verdict got = open_v(b, NOW, t, env.len, NULL);
      if (got != want)
        fail_msg("byte %zu bit %u: verdict %s, want %s", i, bit,
                 kv_seal_verdict_name(got), kv_seal_verdict_name(want));
      counts[got]++;
    }
  }
  assert_int_equal(counts[KV_SEAL_OK], 0);
  assert_true(counts[KV_SEAL_STALE] > 0 && counts[KV_SEAL_BAD_TAG] > 0);
  /* No forgery was recorded: the genuine envelope still opens, once. */
  assert_int_equal(kv_seal_senders(b), 0);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_REPLAY);
  free(t);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_truncated_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(4);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  assert_verdict(open_v(b, NOW, NULL, 0, NULL), KV_SEAL_TRUNCATED);

  /* Empty body: exactly the overhead; every shorter prefix is truncated. */
  kv_buf e0 = seal_n(a, &rg, NOW, 0);
  assert_int_equal(e0.len, KV_SEAL_OVERHEAD);
  for (size_t n = 0; n < KV_SEAL_OVERHEAD; n++)
    assert_verdict(open_v(b, NOW, e0.data, n, NULL), KV_SEAL_TRUNCATED);

  /* With a body, prefixes that still hold a tag's worth of bytes fail the
   * tag instead. */
  kv_buf e = seal_n(a, &rg, NOW, 32);
  for (size_t n = 0; n < e.len; n++)
    assert_verdict(open_v(b, NOW, e.data, n, NULL),
                   n < KV_SEAL_OVERHEAD ? KV_SEAL_TRUNCATED : KV_SEAL_BAD_TAG);
  assert_verdict(open_buf(b, NOW, e), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, e0), KV_SEAL_OK);

  /* Insecure mode: anything shorter than header|nonce. */
  kv_seal *ia = mk("epikv", 7, 1, NULL, 0), *ib = mk("epikv", 9, 1, NULL, 0);
  kv_buf ie = seal_n(ia, &rg, NOW, 0);
  assert_int_equal(ie.len, KV_SEAL_INSECURE_OVERHEAD);
  for (size_t n = 0; n < KV_SEAL_INSECURE_OVERHEAD; n++)
    assert_verdict(open_v(ib, NOW, ie.data, n, NULL), KV_SEAL_TRUNCATED);
  assert_verdict(open_buf(ib, NOW, ie), KV_SEAL_OK);

  kv_buf_free(&e0);
  kv_buf_free(&e);
  kv_buf_free(&ie);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(ia);
  kv_seal_free(ib);
}

static void test_seal_wrong_key_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(5);
  kv_seal *a = peer(7, 0), *b = peer(9, 1);
  kv_buf env = seal_n(a, &rg, NOW, 20);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_BAD_TAG);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_BAD_TAG);
  assert_int_equal(kv_seal_senders(b), 0);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_keyring_rotation(void **state) {
  (void)state;
  test_rng rg = rng_for(6);
  /* Old nodes hold {k0}; rotated nodes hold {k1 (primary), k0}. */
  const uint8_t(*old_ring)[KV_SEAL_KEY_LEN] =
      (const uint8_t(*)[KV_SEAL_KEY_LEN])ring;
  uint8_t rotated[2][KV_SEAL_KEY_LEN];
  memcpy(rotated[0], ring[1], KV_SEAL_KEY_LEN);
  memcpy(rotated[1], ring[0], KV_SEAL_KEY_LEN);
  kv_seal *old_node = mk("epikv", 1, BOOT_US, old_ring, 1);
  kv_seal *new_node =
      mk("epikv", 2, BOOT_US, (const uint8_t(*)[KV_SEAL_KEY_LEN])rotated, 2);
  kv_seal *new_only = peer(3, 1);

  /* A rotated node opens the old key's envelopes with its second key. */
  kv_buf from_old = seal_n(old_node, &rg, NOW, 10);
  kv_seal_info info = {0, 0, 0, 99};
  assert_verdict(open_v(new_node, NOW, from_old.data, from_old.len, &info),
                 KV_SEAL_OK);
  assert_int_equal(info.key, 1);
  assert_int_equal(info.sender, 1);
  assert_verdict(open_buf(new_only, NOW, from_old), KV_SEAL_BAD_TAG);

  /* It seals with its primary: the new key, which old nodes lack. */
  kv_buf from_new = seal_n(new_node, &rg, NOW, 10);
  assert_verdict(open_buf(old_node, NOW, from_new), KV_SEAL_BAD_TAG);
  assert_verdict(open_v(new_only, NOW, from_new.data, from_new.len, &info),
                 KV_SEAL_OK);
  assert_int_equal(info.key, 0);

  /* A full ring: the matching key is the last one tried. */
  kv_seal *full = mk("epikv", 4, BOOT_US,
                     (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, KV_SEAL_MAX_KEYS);
  kv_seal *last = peer(5, KV_SEAL_MAX_KEYS - 1);
  kv_buf from_last = seal_n(last, &rg, NOW, 3);
  assert_verdict(open_v(full, NOW, from_last.data, from_last.len, &info),
                 KV_SEAL_OK);
  assert_int_equal(info.key, KV_SEAL_MAX_KEYS - 1);

  kv_buf_free(&from_old);
  kv_buf_free(&from_new);
  kv_buf_free(&from_last);
  kv_seal_free(old_node);
  kv_seal_free(new_node);
  kv_seal_free(new_only);
  kv_seal_free(full);
  kv_seal_free(last);
}

static void test_seal_keys_copied(void **state) {
  (void)state;
  test_rng rg = rng_for(7);
  uint8_t k[1][KV_SEAL_KEY_LEN];
  memcpy(k[0], ring[0], KV_SEAL_KEY_LEN);
  kv_seal *a = mk("epikv", 7, 1, (const uint8_t(*)[KV_SEAL_KEY_LEN])k, 1);
  memset(k[0], 0xEE, KV_SEAL_KEY_LEN); /* the caller reuses its buffer */
  kv_seal *b = peer(9, 0);
  kv_buf env = seal_n(a, &rg, NOW, 8);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_OK);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_wrong_cluster(void **state) {
  (void)state;
  test_rng rg = rng_for(8);
  const uint8_t(*k)[KV_SEAL_KEY_LEN] = (const uint8_t(*)[KV_SEAL_KEY_LEN])ring;
  kv_seal *a = mk("alpha", 7, 1, k, 1);
  kv_seal *b = mk("beta", 9, 1, k, 1);
  kv_seal *c = mk("alpha", 9, 1, k, 1);
  kv_buf env = seal_n(a, &rg, NOW, 8);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_WRONG_CLUSTER);
  assert_verdict(open_buf(c, NOW, env), KV_SEAL_OK);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(c);
}

/* kv_seal_open_foreign: another cluster's envelope opens if the key is
 * ours and says which cluster; the tag is still checked; and the replay
 * window neither rejects nor remembers what it opened. */
static void test_seal_open_foreign(void **state) {
  (void)state;
  test_rng rg = rng_for(21);
  const uint8_t(*k)[KV_SEAL_KEY_LEN] = (const uint8_t(*)[KV_SEAL_KEY_LEN])ring;
  kv_seal *a = mk("alpha", 7, 1, k, 1);
  kv_seal *b = mk("beta", 9, 1, k, 1);
  kv_seal *other = mk("alpha", 7, 1, k + 1, 1); /* another key */
  kv_buf env = seal_n(a, &rg, NOW, 8);
  uint64_t cid = 0;
  kv_seal_info info;
  kv_buf body;
  for (int round = 0; round < 2; round++) { /* a replay opens again */
    assert_verdict(kv_seal_open_foreign(b, NOW, env.data, env.len, &cid, &info,
                                        &body),
                   KV_SEAL_OK);
    assert_int_equal(cid, kv_seal_cluster_id("alpha"));
    assert_int_equal(info.sender, 7);
    assert_int_equal(body.len, 8);
    kv_buf_free(&body);
  }
  /* Nothing was recorded: the same sender's envelope of our own cluster,
   * with the same counter, is not taken for a replay. */
  kv_seal *c = mk("alpha", 9, 1, k, 1);
  assert_verdict(kv_seal_open_foreign(c, NOW, env.data, env.len, NULL, NULL,
                                      &body),
                 KV_SEAL_OK);
  kv_buf_free(&body);
  assert_verdict(open_buf(c, NOW, env), KV_SEAL_OK);
  /* Wrong key or a flipped bit: refused, body empty. */
  kv_buf env2 = seal_n(other, &rg, NOW, 8);
  assert_verdict(kv_seal_open_foreign(b, NOW, env2.data, env2.len, &cid, NULL,
                                      &body),
                 KV_SEAL_BAD_TAG);
  assert_null(body.data);
  env.data[env.len - 1] ^= 1;
  assert_verdict(kv_seal_open_foreign(b, NOW, env.data, env.len, &cid, NULL,
                                      &body),
                 KV_SEAL_BAD_TAG);
  /* Stale is still stale. */
  env.data[env.len - 1] ^= 1;
  assert_verdict(kv_seal_open_foreign(b, NOW + 3600000, env.data, env.len,
                                      &cid, NULL, &body),
                 KV_SEAL_STALE);
  kv_buf_free(&env);
  kv_buf_free(&env2);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(c);
  kv_seal_free(other);
}

static void test_seal_bad_version(void **state) {
  (void)state;
  test_rng rg = rng_for(9);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf env = seal_n(a, &rg, NOW, 8);
  static const uint8_t versions[] = {0, 2, 0x81, 255};
  for (size_t i = 0; i < sizeof versions; i++) {
    uint8_t save = env.data[0];
    env.data[0] = versions[i];
    assert_verdict(open_buf(b, NOW, env), KV_SEAL_BAD_VERSION);
    env.data[0] = save;
  }
  /* Flag bits version 1 does not define. */
  static const uint8_t flags[] = {0x02, 0x40, 0x80, 0xFE, 0xFF};
  for (size_t i = 0; i < sizeof flags; i++) {
    env.data[1] = flags[i];
    assert_verdict(open_buf(b, NOW, env), KV_SEAL_BAD_VERSION);
  }
  env.data[1] = 0;
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_OK);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_stale_past_and_future(void **state) {
  (void)state;
  test_rng rg = rng_for(10);
  kv_seal *a = peer(7, 0), *b = peer(9, 0); /* max_skew_ms 0 = 30000 */
  struct {
    uint64_t open_at;
    kv_seal_verdict want;
  } cases[] = {
      {NOW + 30000, KV_SEAL_OK},      {NOW + 30001, KV_SEAL_STALE},
      {NOW - 30000, KV_SEAL_OK},      {NOW - 30001, KV_SEAL_STALE},
      {NOW + 3600000, KV_SEAL_STALE}, {0, KV_SEAL_STALE},
      {UINT64_MAX, KV_SEAL_STALE},    {NOW, KV_SEAL_OK},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kv_buf env = seal_n(a, &rg, NOW, 4);
    assert_verdict(open_buf(b, cases[i].open_at, env), cases[i].want);
    kv_buf_free(&env);
  }
  /* Timestamps at the ends of the range: no wrap-around in the check. */
  kv_buf e0 = seal_n(a, &rg, 0, 4);
  assert_verdict(open_buf(b, UINT64_MAX, e0), KV_SEAL_STALE);
  assert_verdict(open_buf(b, 30000, e0), KV_SEAL_OK);
  kv_buf emax = seal_n(a, &rg, UINT64_MAX, 4);
  assert_verdict(open_buf(b, 0, emax), KV_SEAL_STALE);
  assert_verdict(open_buf(b, UINT64_MAX - 30000, emax), KV_SEAL_OK);
  kv_buf_free(&e0);
  kv_buf_free(&emax);

  /* A configured skew. */
  kv_seal_opts o = {.cluster = "epikv",
                    .sender = 11,
                    .keys = (const uint8_t(*)[KV_SEAL_KEY_LEN])ring,
                    .nkeys = 1,
                    .max_skew_ms = 500};
  kv_seal *c = NULL;
  assert_int_equal(kv_seal_new(&o, &c), KV_OK);
  kv_buf e1 = seal_n(a, &rg, NOW, 4), e2 = seal_n(a, &rg, NOW, 4);
  assert_verdict(open_buf(c, NOW - 501, e1), KV_SEAL_STALE);
  assert_verdict(open_buf(c, NOW + 501, e1), KV_SEAL_STALE);
  assert_verdict(open_buf(c, NOW + 500, e1), KV_SEAL_OK);
  assert_verdict(open_buf(c, NOW - 500, e2), KV_SEAL_OK);
  kv_buf_free(&e1);
  kv_buf_free(&e2);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(c);
}

/* Each check runs before the next: an envelope failing two of them gets the
 * earlier verdict. */
static void test_seal_check_order(void **state) {
  (void)state;
  test_rng rg = rng_for(11);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_seal *other_cluster_insecure = mk("other", 7, 1, NULL, 0);
  kv_seal *insecure = mk("epikv", 7, 1, NULL, 0);

  kv_buf e = seal_n(a, &rg, NOW, 8);
  /* bad version + wrong cluster */
  e.data[0] ^= 0x10;
  e.data[5] ^= 0x01;
  assert_verdict(open_buf(b, NOW, e), KV_SEAL_BAD_VERSION);
  e.data[0] ^= 0x10;
  e.data[5] ^= 0x01;
  /* truncated + bad version */
  e.data[0] = 9;
  assert_verdict(open_v(b, NOW, e.data, 20, NULL), KV_SEAL_TRUNCATED);
  e.data[0] = KV_SEAL_VERSION;

  /* wrong cluster + mode mismatch + stale */
  kv_buf x = seal_n(other_cluster_insecure, &rg, 0, 8);
  assert_verdict(open_buf(b, NOW, x), KV_SEAL_WRONG_CLUSTER);
  /* mode mismatch + stale */
  kv_buf y = seal_n(insecure, &rg, 0, 8);
  assert_verdict(open_buf(b, NOW, y), KV_SEAL_MODE_MISMATCH);

  /* stale + replay */
  assert_verdict(open_buf(b, NOW, e), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW + 3600000, e), KV_SEAL_STALE);
  /* replay + bad tag */
  e.data[e.len - 1] ^= 0x01;
  assert_verdict(open_buf(b, NOW, e), KV_SEAL_REPLAY);

  kv_buf_free(&e);
  kv_buf_free(&x);
  kv_buf_free(&y);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(other_cluster_insecure);
  kv_seal_free(insecure);
}

static void test_seal_replay_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(12);
  kv_seal *a = peer(7, 0), *b = peer(9, 0), *c = peer(10, 0);
  kv_buf env = seal_n(a, &rg, NOW, 8);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_REPLAY);
  assert_verdict(open_buf(b, NOW + 1000, env), KV_SEAL_REPLAY);
  /* Windows are per receiver. */
  assert_verdict(open_buf(c, NOW, env), KV_SEAL_OK);
  /* The same counter under a fresh nonce is still a replay. */
  uint8_t copy[KV_SEAL_OVERHEAD + 8];
  memcpy(copy, env.data, env.len);
  copy[KV_SEAL_HEADER_LEN] ^= 0xFF;
  assert_verdict(open_v(b, NOW, copy, env.len, NULL), KV_SEAL_REPLAY);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(c);
}

/* Seals n envelopes from s (counters BOOT_US.., one per envelope). */
static kv_buf *seal_many(kv_seal *s, test_rng *rg, size_t n) {
  kv_buf *e = kv_malloc(n * sizeof *e);
  for (size_t i = 0; i < n; i++)
    e[i] = seal_n(s, rg, NOW, i % 5);
  return e;
}

static void free_many(kv_buf *e, size_t n) {
  for (size_t i = 0; i < n; i++)
    kv_buf_free(&e[i]);
  free(e);
}

static void shuffle(size_t *v, size_t n, test_rng *rg) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)test_rng_below(rg, i);
    size_t t = v[i - 1];
    v[i - 1] = v[j];
    v[j] = t;
  }
}

static void test_seal_reorder_within_window_accepted(void **state) {
  (void)state;
  test_rng rg = rng_for(13);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf *e = seal_many(a, &rg, KV_SEAL_WINDOW);
  /* The newest first, then the 63 below it in random order. */
  assert_verdict(open_buf(b, NOW, e[KV_SEAL_WINDOW - 1]), KV_SEAL_OK);
  size_t order[KV_SEAL_WINDOW - 1];
  for (size_t i = 0; i < KV_SEAL_WINDOW - 1; i++)
    order[i] = i;
  shuffle(order, KV_SEAL_WINDOW - 1, &rg);
  for (size_t i = 0; i < KV_SEAL_WINDOW - 1; i++)
    if (open_buf(b, NOW, e[order[i]]) != KV_SEAL_OK)
      fail_msg("envelope %zu (step %zu) refused", order[i], i);
  /* Each was accepted exactly once. */
  for (size_t i = 0; i < KV_SEAL_WINDOW; i++)
    assert_verdict(open_buf(b, NOW, e[i]), KV_SEAL_REPLAY);
  free_many(e, KV_SEAL_WINDOW);
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_below_window_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(14);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf *e = seal_many(a, &rg, 200);
  assert_verdict(open_buf(b, NOW, e[65]), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, e[1]), KV_SEAL_REPLAY); /* top - 64 */
  assert_verdict(open_buf(b, NOW, e[0]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(b, NOW, e[2]), KV_SEAL_OK); /* top - 63 */
  /* A jump of more than the window forgets everything below it... */
  assert_verdict(open_buf(b, NOW, e[199]), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, e[135]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(b, NOW, e[136]), KV_SEAL_OK);
  /* ...and a smaller jump keeps what it already saw. */
  kv_seal *c = peer(10, 0);
  assert_verdict(open_buf(c, NOW, e[100]), KV_SEAL_OK);
  assert_verdict(open_buf(c, NOW, e[110]), KV_SEAL_OK);
  assert_verdict(open_buf(c, NOW, e[100]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(c, NOW, e[105]), KV_SEAL_OK);
  assert_verdict(open_buf(c, NOW, e[105]), KV_SEAL_REPLAY);
  free_many(e, 200);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(c);
}

static void test_seal_forged_counter_does_not_poison_window(void **state) {
  (void)state;
  test_rng rg = rng_for(15);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf g1 = seal_n(a, &rg, NOW, 8), g2 = seal_n(a, &rg, NOW, 8);

  /* A genuine envelope with its counter raised to near the top. */
  kv_buf f1 = kv_buf_dup(g1.data, g1.len);
  kv_put_be64(f1.data + 26, UINT64_MAX - 1);
  assert_verdict(open_buf(b, NOW, f1), KV_SEAL_BAD_TAG);
  /* Attackers without the key, sealing as sender 7: a huge counter, and
   * exactly the counter of the genuine envelope still in flight. */
  kv_seal *mallory_hi = mk("epikv", 7, UINT64_MAX - 5,
                           (const uint8_t(*)[KV_SEAL_KEY_LEN]) & ring[1], 1);
  kv_seal *mallory_eq = mk("epikv", 7, BOOT_US + 1,
                           (const uint8_t(*)[KV_SEAL_KEY_LEN]) & ring[1], 1);
  kv_buf f2 = seal_n(mallory_hi, &rg, NOW, 8);
  kv_buf f3 = seal_n(mallory_eq, &rg, NOW, 8);
  assert_verdict(open_buf(b, NOW, f2), KV_SEAL_BAD_TAG);
  assert_verdict(open_buf(b, NOW, f3), KV_SEAL_BAD_TAG);
  assert_int_equal(kv_seal_senders(b), 0);

  /* The genuine ones open, in either order. */
  assert_verdict(open_buf(b, NOW, g2), KV_SEAL_OK);
  assert_verdict(open_buf(b, NOW, f1), KV_SEAL_BAD_TAG);
  assert_verdict(open_buf(b, NOW, f2), KV_SEAL_BAD_TAG);
  assert_verdict(open_buf(b, NOW, g1), KV_SEAL_OK);
  kv_buf g3 = seal_n(a, &rg, NOW, 8);
  assert_verdict(open_buf(b, NOW, g3), KV_SEAL_OK);

  kv_buf_free(&g1);
  kv_buf_free(&g2);
  kv_buf_free(&g3);
  kv_buf_free(&f1);
  kv_buf_free(&f2);
  kv_buf_free(&f3);
  kv_seal_free(a);
  kv_seal_free(b);
  kv_seal_free(mallory_hi);
  kv_seal_free(mallory_eq);
}

static void test_seal_reflection_rejected(void **state) {
  (void)state;
  test_rng rg = rng_for(16);
  kv_seal *a = peer(7, 0), *b = peer(9, 0);
  kv_buf env = seal_n(a, &rg, NOW, 8);
  /* Captured on its way to b and sent back to a. */
  assert_verdict(open_buf(a, NOW, env), KV_SEAL_REPLAY);
  assert_verdict(open_buf(b, NOW, env), KV_SEAL_OK);
  /* A restarted a (later counter_start) refuses its previous life's. */
  kv_seal *a2 = mk("epikv", 7, BOOT_US + 1000000,
                   (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
  assert_verdict(open_buf(a2, NOW, env), KV_SEAL_REPLAY);
  /* Our id with a counter we have not used is not ours: it is judged by the
   * ordinary window (two processes misconfigured with one id). */
  kv_buf from_a2 = seal_n(a2, &rg, NOW, 8);
  assert_verdict(open_buf(a, NOW, from_a2), KV_SEAL_OK);
  assert_verdict(open_buf(a, NOW, from_a2), KV_SEAL_REPLAY);
  kv_buf_free(&env);
  kv_buf_free(&from_a2);
  kv_seal_free(a);
  kv_seal_free(a2);
  kv_seal_free(b);
}

static void test_seal_insecure_round_trip(void **state) {
  (void)state;
  test_rng rg = rng_for(17);
  kv_seal *a = mk("epikv", 7, 100, NULL, 0), *b = mk("epikv", 9, 1, NULL, 0);
  assert_true(kv_seal_insecure(a));
  kv_seal *s = peer(1, 0);
  assert_false(kv_seal_insecure(s));
  kv_seal_free(s);

  static const size_t lens[] = {0, 1, 33, 4096};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t n = lens[i];
    kv_buf env = seal_n(a, &rg, NOW, n);
    assert_int_equal(env.len, KV_SEAL_INSECURE_OVERHEAD + n);
    assert_int_equal(env.data[0], KV_SEAL_VERSION);
    assert_int_equal(env.data[1], KV_SEAL_FLAG_INSECURE);
    assert_int_equal(kv_get_be64(env.data + 26), 100 + i);
    for (size_t j = 0; j < n; j++) /* in clear, after header|nonce */
      assert_int_equal(env.data[KV_SEAL_INSECURE_OVERHEAD + j], body_byte(j));
    kv_seal_info info = {0, 0, 0, 99};
    assert_verdict(open_v(b, NOW, env.data, env.len, &info), KV_SEAL_OK);
    assert_int_equal(info.sender, 7);
    assert_int_equal(info.counter, 100 + i);
    assert_int_equal(info.ts_ms, NOW);
    assert_int_equal(info.key, 0);
    /* Duplicates are still dropped. */
    assert_verdict(open_buf(b, NOW, env), KV_SEAL_REPLAY);
    kv_buf_free(&env);
  }
  kv_seal_free(a);
  kv_seal_free(b);
}

static void test_seal_mode_mismatch_both_ways(void **state) {
  (void)state;
  test_rng rg = rng_for(18);
  kv_seal *sec_a = peer(7, 0), *sec_b = peer(9, 0);
  kv_seal *ins_a = mk("epikv", 7, 1, NULL, 0),
          *ins_b = mk("epikv", 9, 1, NULL, 0);
  kv_buf from_sec = seal_n(sec_a, &rg, NOW, 16);
  kv_buf from_ins = seal_n(ins_a, &rg, NOW, 16);
  assert_verdict(open_buf(sec_b, NOW, from_ins), KV_SEAL_MODE_MISMATCH);
  assert_verdict(open_buf(ins_b, NOW, from_sec), KV_SEAL_MODE_MISMATCH);
  /* A secure envelope relabelled insecure, and the reverse. */
  from_sec.data[1] = KV_SEAL_FLAG_INSECURE;
  assert_verdict(open_buf(sec_b, NOW, from_sec), KV_SEAL_MODE_MISMATCH);
  from_ins.data[1] = 0;
  assert_verdict(open_buf(ins_b, NOW, from_ins), KV_SEAL_MODE_MISMATCH);
  from_sec.data[1] = 0;
  from_ins.data[1] = KV_SEAL_FLAG_INSECURE;
  assert_verdict(open_buf(sec_b, NOW, from_sec), KV_SEAL_OK);
  assert_verdict(open_buf(ins_b, NOW, from_ins), KV_SEAL_OK);
  kv_buf_free(&from_sec);
  kv_buf_free(&from_ins);
  kv_seal_free(sec_a);
  kv_seal_free(sec_b);
  kv_seal_free(ins_a);
  kv_seal_free(ins_b);
}

static void test_seal_counter_starts_at_counter_start(void **state) {
  (void)state;
  test_rng rg = rng_for(19);
  static const uint64_t starts[] = {0, 1, BOOT_US, UINT64_MAX - 20};
  for (size_t k = 0; k < 2 * (sizeof starts / sizeof starts[0]); k++) {
    uint64_t start = starts[k / 2];
    bool insecure = k % 2;
    kv_seal *a = insecure ? mk("epikv", 7, start, NULL, 0)
                          : mk("epikv", 7, start,
                               (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
    kv_seal *b = insecure ? mk("epikv", 9, 1, NULL, 0)
                          : mk("epikv", 9, 1,
                               (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
    assert_int_equal(kv_seal_next_counter(a), start);
    for (uint64_t i = 0; i < 10; i++) {
      kv_buf env = seal_n(a, &rg, NOW, 3);
      assert_int_equal(kv_get_be64(env.data + 26), start + i);
      kv_seal_info info;
      assert_verdict(open_v(b, NOW, env.data, env.len, &info), KV_SEAL_OK);
      assert_int_equal(info.counter, start + i);
      kv_buf_free(&env);
    }
    assert_int_equal(kv_seal_next_counter(a), start + 10);
    kv_seal_free(a);
    kv_seal_free(b);
  }
}

static void seal_after_exhaustion(void) {
  test_rng rg = rng_for(20);
  kv_seal *a =
      mk("epikv", 7, UINT64_MAX, (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
  kv_buf env = seal_n(a, &rg, NOW, 1);
  kv_buf_free(&env);
  env = seal_n(a, &rg, NOW, 1); /* panics */
  kv_buf_free(&env);
  kv_seal_free(a);
}

static void test_seal_counter_exhaustion_panics(void **state) {
  (void)state;
  /* The last counter is usable... */
  test_rng rg = rng_for(21);
  kv_seal *a =
      mk("epikv", 7, UINT64_MAX, (const uint8_t(*)[KV_SEAL_KEY_LEN])ring, 1);
  kv_seal *b = peer(9, 0);
  kv_buf env = seal_n(a, &rg, NOW, 1);
  kv_seal_info info;
  assert_verdict(open_v(b, NOW, env.data, env.len, &info), KV_SEAL_OK);
  assert_int_equal(info.counter, UINT64_MAX);
  /* ...and, once used, is ours: reflected back, it is a replay. */
  assert_verdict(open_buf(a, NOW, env), KV_SEAL_REPLAY);
  kv_buf_free(&env);
  kv_seal_free(a);
  kv_seal_free(b);
  /* ...but the counter never wraps to reuse a value. */
  assert_panics(seal_after_exhaustion);
}

static void test_seal_sender_table_eviction(void **state) {
  (void)state;
  test_rng rg = rng_for(22);
  kv_seal_opts o = {.cluster = "epikv",
                    .sender = 100,
                    .keys = (const uint8_t(*)[KV_SEAL_KEY_LEN])ring,
                    .nkeys = 1,
                    .max_senders = 4};
  kv_seal *r = NULL;
  assert_int_equal(kv_seal_new(&o, &r), KV_OK);
  kv_seal *p[6];
  kv_buf ea[6], eb[6];
  for (size_t i = 1; i <= 5; i++) {
    p[i] = peer(i, 0);
    ea[i] = seal_n(p[i], &rg, NOW, 4);
    eb[i] = seal_n(p[i], &rg, NOW, 4);
  }
  for (size_t i = 1; i <= 4; i++)
    assert_verdict(open_buf(r, NOW, ea[i]), KV_SEAL_OK);
  assert_int_equal(kv_seal_senders(r), 4);
  assert_verdict(open_buf(r, NOW, eb[1]), KV_SEAL_OK); /* 2 is now oldest */
  assert_verdict(open_buf(r, NOW, ea[5]), KV_SEAL_OK); /* evicts 2 */
  assert_int_equal(kv_seal_senders(r), 4);
  /* 1, 3, 4, 5 are remembered; 2 was forgotten, so its old envelope is
   * accepted again on its timestamp (the documented cost of eviction); that
   * evicts 3, now the least recently updated. */
  assert_verdict(open_buf(r, NOW, ea[1]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(r, NOW, ea[4]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(r, NOW, ea[5]), KV_SEAL_REPLAY);
  assert_verdict(open_buf(r, NOW, ea[2]), KV_SEAL_OK);
  assert_int_equal(kv_seal_senders(r), 4);
  assert_verdict(open_buf(r, NOW, ea[3]), KV_SEAL_OK);
  assert_verdict(open_buf(r, NOW, ea[2]), KV_SEAL_REPLAY);
  assert_int_equal(kv_seal_senders(r), 4);
  for (size_t i = 1; i <= 5; i++) {
    kv_buf_free(&ea[i]);
    kv_buf_free(&eb[i]);
    kv_seal_free(p[i]);
  }
  kv_seal_free(r);

  /* The default bound, 4096, holds under more senders than that. */
  kv_seal *d = peer(0, 0);
  for (uint64_t id = 1; id <= KV_SEAL_DEFAULT_MAX_SENDERS + 100; id++) {
    kv_seal *s = peer(id, 0);
    kv_buf env = seal_n(s, &rg, NOW, 0);
    assert_verdict(open_buf(d, NOW, env), KV_SEAL_OK);
    assert_int_equal(kv_seal_senders(d), id < KV_SEAL_DEFAULT_MAX_SENDERS
                                             ? id
                                             : KV_SEAL_DEFAULT_MAX_SENDERS);
    kv_buf_free(&env);
    kv_seal_free(s);
  }
  kv_seal_free(d);
}

/* Random interleavings of several senders' envelopes, with reordering and
 * duplicates, checked against a model of the window: an envelope is
 * accepted iff its counter is above the sender's highest accepted, or no
 * more than 63 below it and not accepted before. */
#define MODEL_SENDERS 3
#define MODEL_MSGS 400
static void test_seal_window_matches_model(void **state) {
  (void)state;
  test_rng rg = rng_for(23);
  kv_seal *r = peer(99, 0);
  kv_seal *p[MODEL_SENDERS];
  kv_buf *e[MODEL_SENDERS];
  bool accepted[MODEL_SENDERS][MODEL_MSGS] = {{false}};
  bool any[MODEL_SENDERS] = {false};
  size_t top[MODEL_SENDERS] = {0}, front[MODEL_SENDERS] = {0};
  for (size_t s = 0; s < MODEL_SENDERS; s++) {
    p[s] = peer(s + 1, 0);
    e[s] = seal_many(p[s], &rg, MODEL_MSGS);
  }
  size_t counts[KV_SEAL_NVERDICTS] = {0}, reordered = 0, below = 0;
  for (size_t step = 0; step < 4000; step++) {
    size_t s = (size_t)test_rng_below(&rg, MODEL_SENDERS);
    /* Mostly near the sender's front, sometimes far behind or ahead. */
    size_t i;
    uint64_t kind = test_rng_below(&rg, 10);
    if (kind < 6)
      i = front[s] + (size_t)test_rng_below(&rg, 3);
    else if (kind < 9)
      i = front[s] -
          (size_t)test_rng_below(&rg, 80 < front[s] ? 80 : front[s] + 1);
    else
      i = (size_t)test_rng_below(&rg, MODEL_MSGS);
    if (i >= MODEL_MSGS) i = MODEL_MSGS - 1;
    if (i > front[s]) front[s] = i;

    bool want_ok;
    if (!any[s] || i > top[s])
      want_ok = true;
    else
      want_ok = top[s] - i < KV_SEAL_WINDOW && !accepted[s][i];
    kv_seal_verdict got = open_buf(r, NOW, e[s][i]);
    kv_seal_verdict want = want_ok ? KV_SEAL_OK : KV_SEAL_REPLAY;
    if (got != want)
      fail_msg("step %zu sender %zu msg %zu (top %zu): %s, want %s", step, s, i,
               top[s], kv_seal_verdict_name(got), kv_seal_verdict_name(want));
    counts[got]++;
    if (want_ok) {
      if (any[s] && i < top[s]) reordered++;
      accepted[s][i] = true;
      if (!any[s] || i > top[s]) top[s] = i;
      any[s] = true;
    } else if (top[s] - i >= KV_SEAL_WINDOW) {
      below++;
    }
  }
  /* The run exercised every case. */
  assert_true(counts[KV_SEAL_OK] > 100);
  assert_true(counts[KV_SEAL_REPLAY] > 100);
  assert_true(reordered > 10);
  assert_true(below > 10);
  for (size_t s = 0; s < MODEL_SENDERS; s++) {
    free_many(e[s], MODEL_MSGS);
    kv_seal_free(p[s]);
  }
  kv_seal_free(r);
}

static void test_seal_new_rejects_bad_opts(void **state) {
  (void)state;
  const uint8_t(*k)[KV_SEAL_KEY_LEN] = (const uint8_t(*)[KV_SEAL_KEY_LEN])ring;
  kv_seal *s = (kv_seal *)&s; /* any non-NULL value, to see it reset */
  kv_seal_opts good = {.cluster = "epikv", .keys = k, .nkeys = 1};
  assert_int_equal(kv_seal_new(NULL, &s), KV_INVALID);
  assert_null(s);
  assert_int_equal(kv_seal_new(&good, NULL), KV_INVALID);

  kv_seal_opts o = good;
  o.cluster = NULL;
  s = (kv_seal *)&s;
  assert_int_equal(kv_seal_new(&o, &s), KV_INVALID);
  assert_null(s);

  o = good;
  o.nkeys = KV_SEAL_MAX_KEYS + 1;
  assert_int_equal(kv_seal_new(&o, &s), KV_INVALID);
  o.keys = NULL;
  o.nkeys = 1;
  assert_int_equal(kv_seal_new(&o, &s), KV_INVALID);

  uint8_t zero_second[2][KV_SEAL_KEY_LEN] = {{0}};
  memcpy(zero_second[0], ring[0], KV_SEAL_KEY_LEN);
  o.keys = (const uint8_t(*)[KV_SEAL_KEY_LEN])zero_second;
  o.nkeys = 2;
  assert_int_equal(kv_seal_new(&o, &s), KV_INVALID);
  assert_null(s);
  o.nkeys = 1; /* the zero key is outside the ring */
  assert_int_equal(kv_seal_new(&o, &s), KV_OK);
  assert_non_null(s);
  kv_seal_free(s);

  o = good;
  o.nkeys = KV_SEAL_MAX_KEYS;
  assert_int_equal(kv_seal_new(&o, &s), KV_OK);
  kv_seal_free(s);
  o = good;
  o.keys = NULL;
  o.nkeys = 0;
  assert_int_equal(kv_seal_new(&o, &s), KV_OK);
  assert_true(kv_seal_insecure(s));
  kv_seal_free(s);
  kv_seal_free(NULL);
}

static void test_seal_verdict_names(void **state) {
  (void)state;
  static const char *const want[KV_SEAL_NVERDICTS] = {
      "ok",    "truncated", "bad_version", "wrong_cluster",
      "stale", "replay",    "bad_tag",     "mode_mismatch"};
  assert_int_equal(KV_SEAL_OK, 0);
  assert_int_equal(KV_SEAL_NVERDICTS, 8);
  for (int v = 0; v < KV_SEAL_NVERDICTS; v++)
    assert_string_equal(kv_seal_verdict_name((kv_seal_verdict)v), want[v]);
  assert_string_equal(kv_seal_verdict_name(KV_SEAL_MODE_MISMATCH),
                      "mode_mismatch");
  assert_string_equal(kv_seal_verdict_name(KV_SEAL_NVERDICTS), "unknown");
  assert_string_equal(kv_seal_verdict_name((kv_seal_verdict)77), "unknown");
}

int main(void) {
  seed = test_seed("seal_test");
  if (sodium_init() < 0) {
    fprintf(stderr, "sodium_init failed\n");
    return 1;
  }
  for (size_t k = 0; k < KV_SEAL_MAX_KEYS; k++)
    for (size_t i = 0; i < KV_SEAL_KEY_LEN; i++)
      ring[k][i] = (uint8_t)(k * 37 + i * 11 + 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seal_round_trip),
      cmocka_unit_test(test_seal_wire_layout),
      cmocka_unit_test(test_seal_cluster_id_is_blake2b_prefix),
      cmocka_unit_test(test_seal_tamper_every_bit_rejected),
      cmocka_unit_test(test_seal_truncated_rejected),
      cmocka_unit_test(test_seal_wrong_key_rejected),
      cmocka_unit_test(test_seal_keyring_rotation),
      cmocka_unit_test(test_seal_keys_copied),
      cmocka_unit_test(test_seal_wrong_cluster),
      cmocka_unit_test(test_seal_open_foreign),
      cmocka_unit_test(test_seal_bad_version),
      cmocka_unit_test(test_seal_stale_past_and_future),
      cmocka_unit_test(test_seal_check_order),
      cmocka_unit_test(test_seal_replay_rejected),
      cmocka_unit_test(test_seal_reorder_within_window_accepted),
      cmocka_unit_test(test_seal_below_window_rejected),
      cmocka_unit_test(test_seal_forged_counter_does_not_poison_window),
      cmocka_unit_test(test_seal_reflection_rejected),
      cmocka_unit_test(test_seal_insecure_round_trip),
      cmocka_unit_test(test_seal_mode_mismatch_both_ways),
      cmocka_unit_test(test_seal_counter_starts_at_counter_start),
      cmocka_unit_test(test_seal_counter_exhaustion_panics),
      cmocka_unit_test(test_seal_sender_table_eviction),
      cmocka_unit_test(test_seal_window_matches_model),
      cmocka_unit_test(test_seal_new_rejects_bad_opts),
      cmocka_unit_test(test_seal_verdict_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
