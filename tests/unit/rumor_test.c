/*
 * Unit tests for sync/rumor: peer choice (fanout distinct peers per tick,
 * uniform, never a peer known to hold the version, a round robin across
 * ticks), one batch per peer per tick, pacing (local writes at once, the
 * rest one interval apart), the feedback + counter death rule, death by
 * rounds and by running out of peers, replacement, bounds, determinism, a
 * randomised check against a brute-force model of the rules, and a 25-node
 * dissemination simulation that prints its coverage and traffic figures.
 * The run's seed is printed at start; KV_SEED=<n> replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sync/rng.h"
#include "sync/rumor.h"
#include "tests/unit/testutil.h"

/* The run's seed (testutil.h); each randomised test derives its own stream
 * from it. */
static uint64_t seed;

/* ---- helpers ---- */

#define LOG_MAX 8192
#define KEY_MAX 16
#define OBJ_MAX 64

typedef struct emit_rec {
  uint64_t peer;
  uint8_t key[KEY_MAX];
  size_t keylen;
  uint8_t obj[OBJ_MAX];
  size_t objlen;
} emit_rec;

typedef struct emit_log {
  emit_rec e[LOG_MAX];
  size_t n;
} emit_log;

static void log_emit(void *arg, uint64_t peer, const uint8_t *key,
                     size_t keylen, const uint8_t *obj, size_t objlen) {
  emit_log *l = arg;
  assert_true(l->n < LOG_MAX);
  assert_true(keylen <= KEY_MAX && objlen <= OBJ_MAX);
  emit_rec *e = &l->e[l->n++];
  e->peer = peer;
  memcpy(e->key, key, keylen);
  e->keylen = keylen;
  memcpy(e->obj, obj, objlen);
  e->objlen = objlen;
}

static emit_log *log_new(void) { return calloc(1, sizeof(emit_log)); }

static void dig(uint8_t d[16], uint8_t v) { memset(d, v, 16); }

static void add_str(kv_rumor *r, const char *key, const char *obj, uint8_t v,
                    uint64_t from, uint64_t now) {
  uint8_t d[16];
  dig(d, v);
  kv_rumor_add(r, (const uint8_t *)key, strlen(key), (const uint8_t *)obj,
               strlen(obj), d, from, now);
}

static void ack_at(kv_rumor *r, uint64_t peer, const char *key, uint8_t v,
                   bool news, uint64_t now) {
  uint8_t d[16];
  dig(d, v);
  kv_rumor_ack(r, peer, (const uint8_t *)key, strlen(key), d, news, now);
}

/* An ack when the time does not matter (a fixed interval). */
static void ack_str(kv_rumor *r, uint64_t peer, const char *key, uint8_t v,
                    bool news) {
  ack_at(r, peer, key, v, news, 0);
}

static void has_str(kv_rumor *r, uint64_t peer, const char *key, uint8_t v) {
  uint8_t d[16];
  dig(d, v);
  kv_rumor_peer_has(r, peer, (const uint8_t *)key, strlen(key), d);
}

static kv_rumor_stats stats(const kv_rumor *r) {
  kv_rumor_stats s;
  kv_rumor_stats_get(r, &s);
  return s;
}

static void iota(uint64_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = i + 1;
}

static bool in_log(const emit_log *l, size_t from, size_t to, uint64_t peer) {
  for (size_t i = from; i < to; i++)
    if (l->e[i].peer == peer) return true;
  return false;
}

/* Emits [from, to) carry distinct peers. */
static void assert_distinct(const emit_log *l, size_t from, size_t to) {
  for (size_t i = from; i < to; i++)
    if (in_log(l, i + 1, to, l->e[i].peer))
      fail_msg("peer %llu pushed twice", (unsigned long long)l->e[i].peer);
}

static bool key_is(const emit_rec *e, const char *key) {
  return e->keylen == strlen(key) && memcmp(e->key, key, e->keylen) == 0;
}

/* Whether (peer, key) was emitted in [from, to). */
static bool pushed(const emit_log *l, size_t from, size_t to, uint64_t peer,
                   const char *key) {
  for (size_t i = from; i < to; i++)
    if (l->e[i].peer == peer && key_is(&l->e[i], key)) return true;
  return false;
}

/* The distinct peers of emits [from, to), which must come in runs: once a
 * peer's emits end, it does not appear again. Returns how many. */
static size_t runs(const emit_log *l, size_t from, size_t to, uint64_t *peers) {
  size_t n = 0;
  for (size_t i = from; i < to; i++) {
    if (n > 0 && peers[n - 1] == l->e[i].peer) continue;
    for (size_t j = 0; j < n; j++)
      if (peers[j] == l->e[i].peer)
        fail_msg("peer %llu's emits are not in one run",
                 (unsigned long long)l->e[i].peer);
    peers[n++] = l->e[i].peer;
  }
  return n;
}

static void assert_emit_is(const emit_rec *e, const char *key,
                           const char *obj) {
  assert_int_equal(e->keylen, strlen(key));
  assert_memory_equal(e->key, key, e->keylen);
  assert_int_equal(e->objlen, strlen(obj));
  assert_memory_equal(e->obj, obj, e->objlen);
}

/* ---- tests ---- */

static void test_rumor_defaults_and_empty(void **state) {
  (void)state;
  kv_rumor *r = kv_rumor_new(NULL);
  kv_rumor_opts o = kv_rumor_opts_get(r);
  assert_int_equal(o.fanout, 3);
  assert_int_equal(o.k, 2);
  assert_int_equal(o.max_rounds, 4);
  assert_int_equal(o.interval_ms, 0);
  assert_int_equal(o.min_interval_ms, 5);
  assert_int_equal(o.max_interval_ms, 1000);
  assert_int_equal(o.max_rumors, 10000);
  assert_int_equal(o.max_bytes, (size_t)64 << 20);
  assert_int_equal(o.max_batch_bytes, (size_t)256 << 10);
  kv_rng rng = {seed};
  emit_log *l = log_new();
  uint64_t peers[5];
  iota(peers, 5);
  assert_true(kv_rumor_next_due(r) == UINT64_MAX);
  assert_true(kv_rumor_tick(r, 7, &rng, peers, 5, log_emit, l) == UINT64_MAX);
  assert_int_equal(l->n, 0);

  add_str(r, "k", "obj", 1, 0, 7);
  assert_true(kv_rumor_next_due(r) == 7);
  /* No round trip measured yet: the longest interval. */
  assert_true(kv_rumor_tick(r, 7, &rng, peers, 5, log_emit, l) == 1007);
  assert_int_equal(l->n, 3);
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.added, 1);
  assert_int_equal(s.pushed, 3);
  assert_int_equal(s.batches, 3);
  assert_int_equal(s.hot, 1);
  assert_int_equal(s.hot_bytes, 4);
  assert_int_equal(s.srtt_ms, 0);
  assert_int_equal(s.interval_ms, 1000);
  kv_rumor_free(r);
  kv_rumor_free(NULL);
  free(l);
}

/* The first tick goes to exactly fanout distinct peers from the list, never
 * `from`, uniformly: over many trials each peer is chosen about as often as
 * the sum over trials of fanout / eligible peers predicts. */
static void test_rumor_first_push_fanout_distinct_excludes_from(void **state) {
  (void)state;
  enum { NP = 10, TRIALS = 3000 };
  uint64_t peers[NP], hits[NP + 1] = {0};
  double expect[NP + 1] = {0};
  iota(peers, NP);
  kv_rng rng = {seed ^ 1};
  test_rng tr = {seed ^ 101};
  emit_log *l = log_new();
  for (int t = 0; t < TRIALS; t++) {
    kv_rumor *r = kv_rumor_new(NULL);
    uint64_t from = test_rng_below(&tr, NP + 1); /* 0 = local write */
    add_str(r, "key", "value", 1, from, 0);
    l->n = 0;
    (void)kv_rumor_tick(r, 0, &rng, peers, NP, log_emit, l);
    assert_int_equal(l->n, 3);
    assert_distinct(l, 0, l->n);
    for (size_t i = 0; i < l->n; i++) {
      assert_true(l->e[i].peer >= 1 && l->e[i].peer <= NP);
      assert_true(l->e[i].peer != from);
      assert_emit_is(&l->e[i], "key", "value");
      hits[l->e[i].peer]++;
    }
    for (uint64_t p = 1; p <= NP; p++)
      if (p != from) expect[p] += 3.0 / (from ? NP - 1 : NP);
    kv_rumor_free(r);
  }
  /* About 900 picks per peer, standard deviation under 30: a 15% margin is
   * some 5 deviations. */
  for (int p = 1; p <= NP; p++)
    if (hits[p] < expect[p] * 0.85 || hits[p] > expect[p] * 1.15)
      fail_msg("peer %d chosen %llu times, expected %.0f", p,
               (unsigned long long)hits[p], expect[p]);

  /* Fewer eligible peers than fanout: all of them, once; duplicates and
   * zeros in the peer list are harmless. */
  kv_rumor_opts o = {.fanout = 5};
  kv_rumor *r = kv_rumor_new(&o);
  uint64_t dup[] = {4, 2, 0, 4, 3, 2, 3, 9};
  add_str(r, "k", "v", 1, 9, 0);
  l->n = 0;
  (void)kv_rumor_tick(r, 0, &rng, dup, 8, log_emit, l);
  assert_int_equal(l->n, 3);
  assert_distinct(l, 0, 3);
  assert_false(in_log(l, 0, 3, 9));
  assert_false(in_log(l, 0, 3, 0));
  kv_rumor_free(r);
  free(l);
}

/* One tick draws its peers once for the whole hot set: each target gets, in
 * one run of emits, every hot rumor it is not known to hold, newest first,
 * and the tick costs fanout batches however many rumors are hot. */
static void test_rumor_one_batch_per_peer_per_tick(void **state) {
  (void)state;
  kv_rumor_opts o = {.k = 100, .max_rounds = 100, .interval_ms = 10};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 14};
  emit_log *l = log_new();
  uint64_t peers[12], got[12];
  iota(peers, 12);
  static const char *keys[] = {"a", "b", "c", "d", "e", "f"};
  for (int i = 0; i < 6; i++)
    add_str(r, keys[i], "v", 1, i == 2 ? 5 : 0, 0);
  (void)kv_rumor_tick(r, 0, &rng, peers, 12, log_emit, l);
  size_t nt = runs(l, 0, l->n, got);
  assert_int_equal(nt, 3);
  assert_int_equal(stats(r).batches, 3);
  size_t at = 0;
  for (size_t t = 0; t < nt; t++) {
    /* Newest first; "c" came from peer 5, which never gets it. */
    for (int i = 5; i >= 0; i--) {
      if (i == 2 && got[t] == 5) continue;
      assert_true(at < l->n);
      assert_true(l->e[at].peer == got[t]);
      assert_true(key_is(&l->e[at], keys[i]));
      at++;
    }
  }
  assert_int_equal(at, l->n);

  /* Next tick: new targets get everything, and a fresh rumor goes to every
   * target of the tick, old ones only to peers that lack them. */
  size_t start = l->n;
  add_str(r, "g", "v", 1, 0, 5);
  (void)kv_rumor_tick(r, 10, &rng, peers, 12, log_emit, l);
  uint64_t got2[12];
  size_t nt2 = runs(l, start, l->n, got2);
  assert_int_equal(nt2, 3);
  for (size_t t = 0; t < nt2; t++) {
    assert_true(pushed(l, start, l->n, got2[t], "g"));
    for (size_t u = 0; u < nt; u++)
      assert_true(got2[t] != got[u]); /* the round robin moved on */
  }
  assert_int_equal(l->n - start, 3 * 7 - (in_log(l, start, l->n, 5) ? 1 : 0));
  kv_rumor_free(r);
  free(l);
}

/* Targets go round a shuffled order: with a fresh rumor every tick (so that
 * every peer is always a candidate), each turn of n / fanout ticks reaches
 * each of the n peers exactly once. Independent draws would repeat a peer
 * within a turn almost surely. */
static void test_rumor_round_robin_targets(void **state) {
  (void)state;
  enum { NP = 12, TURNS = 5 };
  kv_rumor_opts o = {.interval_ms = 1, .max_rounds = 1};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 15};
  emit_log *l = log_new();
  uint64_t peers[NP];
  iota(peers, NP);
  uint64_t now = 0;
  for (int turn = 0; turn < TURNS; turn++) {
    size_t start = l->n;
    for (int t = 0; t < NP / 3; t++, now++) {
      char key[16];
      snprintf(key, sizeof key, "k%d", turn * NP + t);
      add_str(r, key, "v", 1, 0, now);
      (void)kv_rumor_tick(r, now, &rng, peers, NP, log_emit, l);
    }
    assert_int_equal(l->n - start, NP);
    assert_distinct(l, start, l->n);
  }
  kv_rumor_free(r);
  free(l);
}

/* A local write makes the tick due at once; anything else waits for the
 * interval since the last tick, and an early tick does nothing. Acks never
 * make a tick due. A node that has been idle for an interval ticks at once. */
static void test_rumor_ticks_paced_by_interval(void **state) {
  (void)state;
  kv_rumor_opts o = {.interval_ms = 50, .k = 100, .max_rounds = 10};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 4};
  emit_log *l = log_new();
  uint64_t peers[30];
  iota(peers, 30);
  add_str(r, "a", "v", 1, 0, 100);
  assert_true(kv_rumor_next_due(r) == 100);
  assert_true(kv_rumor_tick(r, 99, &rng, peers, 30, log_emit, l) == 100);
  assert_int_equal(l->n, 0);
  assert_true(kv_rumor_tick(r, 100, &rng, peers, 30, log_emit, l) == 150);
  assert_int_equal(l->n, 3);
  /* Early: nothing. Acks, news or not, change nothing about the time. */
  assert_true(kv_rumor_tick(r, 120, &rng, peers, 30, log_emit, l) == 150);
  assert_int_equal(l->n, 3);
  ack_str(r, l->e[0].peer, "a", 1, true);
  ack_str(r, l->e[1].peer, "a", 1, false);
  assert_true(kv_rumor_next_due(r) == 150);
  /* News from a peer waits for the paced tick. */
  add_str(r, "b", "v", 1, 7, 130);
  assert_true(kv_rumor_next_due(r) == 150);
  assert_true(kv_rumor_tick(r, 150, &rng, peers, 30, log_emit, l) == 200);
  assert_int_equal(l->n, 3 + 6 - (in_log(l, 3, l->n, 7) ? 1 : 0));
  for (size_t i = 3; i < l->n; i++) {
    if (key_is(&l->e[i], "a")) assert_false(in_log(l, 0, 3, l->e[i].peer));
    if (key_is(&l->e[i], "b")) assert_true(l->e[i].peer != 7);
  }
  /* A local write does not wait. */
  add_str(r, "c", "v", 1, 0, 160);
  assert_true(kv_rumor_next_due(r) == 160);
  assert_true(kv_rumor_tick(r, 165, &rng, peers, 30, log_emit, l) == 215);
  kv_rumor_free(r);

  /* Idle for longer than the interval: news goes at once. */
  kv_rumor_opts o1 = {.interval_ms = 50, .max_rounds = 1};
  r = kv_rumor_new(&o1);
  add_str(r, "x", "v", 1, 0, 0);
  assert_true(kv_rumor_tick(r, 0, &rng, peers, 30, log_emit, l) ==
              UINT64_MAX); /* one round: gone */
  add_str(r, "y", "v", 1, 3, 1000);
  assert_true(kv_rumor_next_due(r) <= 1000);
  size_t before = l->n;
  (void)kv_rumor_tick(r, 1000, &rng, peers, 30, log_emit, l);
  assert_int_equal(l->n - before, 3);
  kv_rumor_free(r);
  free(l);
}

/* The adaptive interval is a third of the smoothed round trip from a batch
 * to the first ack naming its first rumor (gain 1/8, the first sample sets
 * it), within its bounds; the longest before any sample. A duplicated ack
 * samples once, and an ack for a rumor that has died still samples. */
static void test_rumor_interval_follows_round_trip(void **state) {
  (void)state;
  kv_rumor_opts o = {.min_interval_ms = 5, .max_interval_ms = 400, .k = 2};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 18};
  emit_log *l = log_new();
  uint64_t peers[30];
  iota(peers, 30);
  add_str(r, "a", "v", 1, 0, 0);
  assert_true(kv_rumor_tick(r, 0, &rng, peers, 30, log_emit, l) == 400);
  assert_int_equal(l->n, 3);
  assert_int_equal(kv_rumor_interval(r), 400);
  ack_at(r, l->e[0].peer, "a", 1, true, 90);
  assert_int_equal(stats(r).srtt_ms, 90);
  assert_int_equal(kv_rumor_interval(r), 30);
  assert_true(kv_rumor_next_due(r) == 30);    /* brought forward */
  ack_at(r, l->e[0].peer, "a", 1, true, 200); /* duplicate: no sample */
  ack_at(r, l->e[1].peer, "a", 9, true, 200); /* other version: none */
  ack_at(r, 99, "a", 1, true, 200);           /* never pushed: none */
  assert_int_equal(stats(r).srtt_ms, 90);
  ack_at(r, l->e[1].peer, "a", 1, true, 150);
  assert_int_equal(stats(r).srtt_ms, 97); /* 90 + (150 - 90) / 8 */
  assert_int_equal(kv_rumor_interval(r), 32);

  /* "b" goes first in each of the next tick's batches; two not-news acks
   * kill it (k = 2), and the third batch's ack still samples. */
  add_str(r, "b", "v", 1, 0, 300);
  size_t start = l->n;
  (void)kv_rumor_tick(r, 300, &rng, peers, 30, log_emit, l);
  uint64_t got[30];
  assert_int_equal(runs(l, start, l->n, got), 3);
  ack_at(r, got[0], "b", 1, false, 310);
  ack_at(r, got[1], "b", 1, false, 310);
  assert_int_equal(stats(r).died, 1);
  assert_int_equal(stats(r).srtt_ms, 78); /* 97 -> 87 -> 78 */
  ack_at(r, got[2], "b", 1, false, 320);
  assert_int_equal(stats(r).srtt_ms, 71);
  assert_int_equal(kv_rumor_interval(r), 23);

  /* Bounds. */
  for (int i = 0; i < 40; i++) {
    char key[16];
    snprintf(key, sizeof key, "c%d", i);
    add_str(r, key, "v", 1, 0, 1000 + (uint64_t)i);
    start = l->n;
    (void)kv_rumor_tick(r, 1000 + (uint64_t)i, &rng, peers, 30, log_emit, l);
    ack_at(r, l->e[start].peer, key, 1, true, 1000 + (uint64_t)i);
  }
  assert_int_equal(kv_rumor_interval(r), 5);
  for (int i = 0; i < 40; i++) {
    char key[16];
    snprintf(key, sizeof key, "d%d", i);
    add_str(r, key, "v", 1, 0, 5000 + (uint64_t)i);
    start = l->n;
    (void)kv_rumor_tick(r, 5000 + (uint64_t)i, &rng, peers, 30, log_emit, l);
    ack_at(r, l->e[start].peer, key, 1, true, 9000 + (uint64_t)i);
  }
  assert_int_equal(kv_rumor_interval(r), 400);
  kv_rumor_free(r);

  /* A fixed interval ignores round trips. */
  kv_rumor_opts of = {.interval_ms = 20};
  r = kv_rumor_new(&of);
  add_str(r, "a", "v", 1, 0, 0);
  l->n = 0;
  (void)kv_rumor_tick(r, 0, &rng, peers, 30, log_emit, l);
  ack_at(r, l->e[0].peer, "a", 1, true, 600);
  assert_int_equal(stats(r).srtt_ms, 600);
  assert_int_equal(kv_rumor_interval(r), 20);
  kv_rumor_free(r);
  free(l);
}

/* A peer known to hold the version is never pushed it: its sender, every
 * peer it was pushed to, and peers that pushed that version to us. Knowing
 * is not feedback: it does not count towards k. */
static void test_rumor_known_holders_not_pushed(void **state) {
  (void)state;
  kv_rumor_opts o = {.k = 1, .max_rounds = 100, .interval_ms = 1};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 16};
  emit_log *l = log_new();
  uint64_t peers[8];
  iota(peers, 8);
  add_str(r, "key", "v", 3, 8, 0);
  has_str(r, 1, "key", 3);
  has_str(r, 1, "key", 3); /* once */
  has_str(r, 2, "key", 2); /* another version: ignored */
  has_str(r, 4, "kez", 3); /* another key: ignored */
  has_str(r, 0, "key", 3); /* no replica: ignored */
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.seen, 1);
  assert_int_equal(s.hot, 1);
  uint64_t now = 0;
  while (kv_rumor_next_due(r) != UINT64_MAX) {
    now = kv_rumor_next_due(r);
    (void)kv_rumor_tick(r, now, &rng, peers, 8, log_emit, l);
  }
  /* 2..7 once each, in two ticks; the third finds no one left. */
  assert_int_equal(l->n, 6);
  assert_distinct(l, 0, l->n);
  assert_false(in_log(l, 0, l->n, 1));
  assert_false(in_log(l, 0, l->n, 8));
  assert_int_equal(now, 2);
  s = stats(r);
  assert_int_equal(s.died, 1);
  assert_int_equal(s.acks, 0);
  kv_rumor_free(r);
  free(l);
}

static void test_rumor_not_news_acks_kill_at_k(void **state) {
  (void)state;
  for (unsigned k = 1; k <= 3; k++) {
    kv_rumor_opts o = {.k = k, .fanout = 4};
    kv_rumor *r = kv_rumor_new(&o);
    kv_rng rng = {seed ^ 2};
    emit_log *l = log_new();
    uint64_t peers[8];
    iota(peers, 8);
    add_str(r, "key", "v1", 1, 0, 0);
    (void)kv_rumor_tick(r, 0, &rng, peers, 8, log_emit, l);
    assert_int_equal(l->n, 4);
    /* A peer that was never pushed to cannot count, even if it is known to
     * hold the version. */
    uint64_t outsider = 1;
    while (in_log(l, 0, l->n, outsider))
      outsider++;
    ack_str(r, outsider, "key", 1, false);
    has_str(r, outsider, "key", 1);
    ack_str(r, outsider, "key", 1, false);
    assert_int_equal(stats(r).acks, 0);
    for (unsigned i = 0; i < k; i++) {
      assert_int_equal(stats(r).hot, 1);
      ack_str(r, l->e[i].peer, "key", 1, false);
      /* A duplicated ack counts once. */
      ack_str(r, l->e[i].peer, "key", 1, false);
    }
    kv_rumor_stats s = stats(r);
    assert_int_equal(s.hot, 0);
    assert_int_equal(s.hot_bytes, 0);
    assert_int_equal(s.died, 1);
    assert_int_equal(s.acks, k);
    assert_int_equal(s.news_acks, 0);
    /* Dead: acks are ignored and nothing is pending. */
    ack_str(r, l->e[k].peer, "key", 1, false);
    assert_int_equal(stats(r).acks, k);
    assert_true(kv_rumor_next_due(r) == UINT64_MAX);
    size_t before = l->n;
    assert_true(kv_rumor_tick(r, 5000, &rng, peers, 8, log_emit, l) ==
                UINT64_MAX);
    assert_int_equal(l->n, before);
    kv_rumor_free(r);
    free(l);
  }
}

/* Acks for pushes of any earlier tick count: rounds do not wait for them. */
static void test_rumor_late_acks_count(void **state) {
  (void)state;
  kv_rumor_opts o = {.k = 2, .interval_ms = 10, .max_rounds = 10};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 5};
  emit_log *l = log_new();
  uint64_t peers[30];
  iota(peers, 30);
  add_str(r, "key", "v1", 1, 0, 0);
  (void)kv_rumor_tick(r, 0, &rng, peers, 30, log_emit, l);
  (void)kv_rumor_tick(r, 10, &rng, peers, 30, log_emit, l);
  assert_int_equal(l->n, 6);
  assert_distinct(l, 0, 6);
  ack_str(r, l->e[0].peer, "key", 1, true);
  ack_str(r, l->e[1].peer, "key", 1, false);
  assert_int_equal(stats(r).hot, 1);
  ack_str(r, l->e[3].peer, "key", 1, false);
  assert_int_equal(stats(r).hot, 0);
  assert_int_equal(stats(r).died, 1);
  kv_rumor_free(r);
  free(l);
}

static void test_rumor_news_acks_do_not_kill(void **state) {
  (void)state;
  kv_rumor_opts o = {.k = 1, .max_rounds = 4, .interval_ms = 10};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 3};
  emit_log *l = log_new();
  uint64_t peers[20];
  iota(peers, 20);
  add_str(r, "key", "v1", 1, 0, 0);
  for (int round = 0; round < 3; round++) {
    size_t start = l->n;
    (void)kv_rumor_tick(r, 10 * (uint64_t)round, &rng, peers, 20, log_emit, l);
    assert_int_equal(l->n - start, 3);
    for (size_t i = start; i < l->n; i++)
      ack_str(r, l->e[i].peer, "key", 1, true);
    assert_int_equal(stats(r).hot, 1);
  }
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.news_acks, 9);
  assert_int_equal(s.acks, 9);
  assert_int_equal(s.died, 0);
  kv_rumor_free(r);
  free(l);
}

/* With nobody saying "not news", ticks continue over ever-new peers until
 * none is left (never the sender, never a repeat), then the rumor dies at
 * the next tick without a push. */
static void test_rumor_dies_when_no_peers_left(void **state) {
  (void)state;
  kv_rumor_opts o = {.max_rounds = 100};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 6};
  emit_log *l = log_new();
  uint64_t peers[9];
  iota(peers, 9);
  add_str(r, "key", "v1", 1, 5, 0);
  static const size_t per_round[] = {3, 3, 2};
  for (int round = 0; round < 3; round++) {
    size_t start = l->n;
    (void)kv_rumor_tick(r, 70 * (uint64_t)round, &rng, peers, 9, log_emit, l);
    assert_int_equal(l->n - start, per_round[round]);
    for (size_t i = start; i < l->n; i++)
      ack_str(r, l->e[i].peer, "key", 1, true);
  }
  assert_int_equal(l->n, 8);
  assert_distinct(l, 0, 8);
  assert_false(in_log(l, 0, 8, 5));
  assert_true(kv_rumor_tick(r, 210, &rng, peers, 9, log_emit, l) == UINT64_MAX);
  assert_int_equal(l->n, 8);
  assert_int_equal(stats(r).died, 1);
  assert_int_equal(stats(r).hot, 0);

  /* No peers at all, or only the sender: dies at its first tick. */
  add_str(r, "a", "x", 1, 0, 300);
  add_str(r, "b", "x", 1, 7, 300);
  uint64_t only7 = 7;
  (void)kv_rumor_tick(r, 300, &rng, NULL, 0, log_emit, l);
  assert_int_equal(stats(r).hot, 0);
  add_str(r, "b", "x", 1, 7, 400);
  (void)kv_rumor_tick(r, 400, &rng, &only7, 1, log_emit, l);
  assert_int_equal(l->n, 8);
  assert_int_equal(stats(r).died, 4);
  kv_rumor_free(r);
  free(l);
}

/* A rumor is pushed in max_rounds ticks, one interval apart, and dies on
 * the last, acks or not. */
static void test_rumor_dies_after_max_rounds(void **state) {
  (void)state;
  for (unsigned max_rounds = 1; max_rounds <= 4; max_rounds++) {
    kv_rumor_opts o = {.max_rounds = max_rounds, .interval_ms = 10};
    kv_rumor *r = kv_rumor_new(&o);
    kv_rng rng = {seed ^ 7};
    emit_log *l = log_new();
    uint64_t peers[100];
    iota(peers, 100);
    add_str(r, "key", "v1", 1, 0, 0);
    uint64_t now = 0;
    while (kv_rumor_next_due(r) != UINT64_MAX) {
      now = kv_rumor_next_due(r);
      (void)kv_rumor_tick(r, now, &rng, peers, 100, log_emit, l);
    }
    assert_int_equal(l->n, 3 * max_rounds);
    assert_distinct(l, 0, l->n);
    assert_int_equal(now, 10 * (max_rounds - 1));
    assert_int_equal(stats(r).died, 1);
    kv_rumor_free(r);
    free(l);
  }
}

/* Re-adding a hot key replaces its state and restarts it: peers pushed to
 * before may be pushed the new state, rounds and not-news counts start over,
 * acks for the old digest no longer count. */
static void test_rumor_replacement_restarts(void **state) {
  (void)state;
  kv_rumor_opts o = {.max_rounds = 2, .k = 1};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 8};
  emit_log *l = log_new();
  uint64_t peers[3];
  iota(peers, 3);
  add_str(r, "key", "old", 1, 0, 0);
  (void)kv_rumor_tick(r, 0, &rng, peers, 3, log_emit, l);
  assert_int_equal(l->n, 3);
  ack_str(r, l->e[0].peer, "key", 1, true);

  add_str(r, "key", "newer", 2, 0, 2);
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.hot, 1);
  assert_int_equal(s.hot_bytes, 3 + 5);
  assert_int_equal(s.replaced, 1);
  assert_int_equal(s.added, 2);
  assert_int_equal(s.dropped, 0);
  assert_int_equal(s.died, 0);
  assert_true(kv_rumor_next_due(r) == 2);
  (void)kv_rumor_tick(r, 2, &rng, peers, 3, log_emit, l);
  assert_int_equal(l->n, 6);
  assert_distinct(l, 3, 6);
  for (size_t i = 3; i < 6; i++)
    assert_emit_is(&l->e[i], "key", "newer");
  /* Old-digest acks, even not-news with k = 1, are ignored. */
  for (size_t i = 0; i < 3; i++)
    ack_str(r, l->e[i].peer, "key", 1, false);
  assert_int_equal(stats(r).hot, 1);
  for (size_t i = 3; i < 6; i++)
    ack_str(r, l->e[i].peer, "key", 2, true);
  assert_int_equal(stats(r).hot, 1);
  /* Every peer holds it now: the next tick ends it. */
  (void)kv_rumor_tick(r, 72, &rng, peers, 3, log_emit, l);
  assert_int_equal(l->n, 6);
  assert_int_equal(stats(r).hot, 0);

  /* A replacement from a peer excludes that peer. */
  add_str(r, "key", "a", 3, 0, 200);
  add_str(r, "key", "b", 4, 2, 200);
  (void)kv_rumor_tick(r, 200, &rng, peers, 3, log_emit, l);
  assert_int_equal(l->n, 8);
  assert_false(in_log(l, 6, 8, 2));
  kv_rumor_free(r);
  free(l);
}

static void test_rumor_stale_digest_acks_ignored(void **state) {
  (void)state;
  kv_rumor_opts o = {.k = 1};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 9};
  emit_log *l = log_new();
  uint64_t peers[10];
  iota(peers, 10);
  add_str(r, "key", "v", 7, 0, 0);
  (void)kv_rumor_tick(r, 0, &rng, peers, 10, log_emit, l);
  for (size_t i = 0; i < l->n; i++) {
    ack_str(r, l->e[i].peer, "key", 6, false);
    ack_str(r, l->e[i].peer, "kez", 7, false);
  }
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.hot, 1);
  assert_int_equal(s.acks, 0);
  assert_true(kv_rumor_next_due(r) == 1000);
  ack_str(r, l->e[0].peer, "key", 7, false);
  assert_int_equal(stats(r).hot, 0);
  kv_rumor_free(r);
  free(l);
}

static void test_rumor_bounds_evict_oldest(void **state) {
  (void)state;
  kv_rng rng = {seed ^ 10};
  uint64_t peer = 1;
  emit_log *l = log_new();

  kv_rumor_opts o = {.max_rumors = 3, .fanout = 1};
  kv_rumor *r = kv_rumor_new(&o);
  add_str(r, "k0", "v", 1, 0, 0);
  add_str(r, "k1", "v", 1, 0, 0);
  add_str(r, "k2", "v", 1, 0, 0);
  add_str(r, "k0", "w", 2, 0, 0); /* replacement makes k0 the newest */
  add_str(r, "k3", "v", 1, 0, 0); /* evicts k1 */
  add_str(r, "k4", "v", 1, 0, 0); /* evicts k2 */
  kv_rumor_stats s = stats(r);
  assert_int_equal(s.hot, 3);
  assert_int_equal(s.dropped, 2);
  assert_int_equal(s.replaced, 1);
  (void)kv_rumor_tick(r, 0, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 3);
  assert_emit_is(&l->e[0], "k4", "v");
  assert_emit_is(&l->e[1], "k3", "v");
  assert_emit_is(&l->e[2], "k0", "w");
  /* Eviction also works on rumors already pushed. */
  add_str(r, "k5", "v", 1, 0, 1);
  ack_str(r, 1, "k0", 2, false);
  assert_int_equal(stats(r).acks, 0); /* k0 was evicted */
  kv_rumor_free(r);

  /* Byte bound: each rumor is 2 + 8 bytes; 25 bytes hold two. */
  kv_rumor_opts ob = {.max_bytes = 25};
  r = kv_rumor_new(&ob);
  add_str(r, "a0", "12345678", 1, 0, 0);
  add_str(r, "a1", "12345678", 1, 0, 0);
  add_str(r, "a2", "12345678", 1, 0, 0);
  s = stats(r);
  assert_int_equal(s.hot, 2);
  assert_int_equal(s.hot_bytes, 20);
  assert_int_equal(s.dropped, 1);
  /* A rumor bigger than the whole bound is refused and leaves the others;
   * an older state of its own key is superseded and goes too. */
  add_str(r, "zz", "123456789012345678901234", 1, 0, 0);
  s = stats(r);
  assert_int_equal(s.hot, 2);
  assert_int_equal(s.dropped, 2);
  add_str(r, "a2", "123456789012345678901234", 2, 0, 0);
  s = stats(r);
  assert_int_equal(s.hot, 1);
  assert_int_equal(s.hot_bytes, 10);
  assert_int_equal(s.dropped, 3);
  l->n = 0;
  (void)kv_rumor_tick(r, 0, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 1);
  assert_emit_is(&l->e[0], "a1", "12345678");
  kv_rumor_free(r);

  /* Many keys through a small bound: the hash table and lists stay sound. */
  kv_rumor_opts om = {.max_rumors = 100};
  r = kv_rumor_new(&om);
  char key[16];
  for (int i = 0; i < 5000; i++) {
    snprintf(key, sizeof key, "key%d", i);
    add_str(r, key, "v", 1, 0, (uint64_t)i);
  }
  s = stats(r);
  assert_int_equal(s.hot, 100);
  assert_int_equal(s.dropped, 4900);
  l->n = 0;
  (void)kv_rumor_tick(r, 5000, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 100);
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof key, "key%d", 4999 - i);
    assert_emit_is(&l->e[i], key, "v");
  }
  kv_rumor_free(r);
  free(l);
}

/* A batch to one peer stops at max_batch_bytes (newest first, skipping what
 * does not fit; one rumor always goes); what is left goes in later ticks. */
static void test_rumor_batch_bytes_bounded(void **state) {
  (void)state;
  kv_rumor_opts o = {.max_batch_bytes = 25, .interval_ms = 10};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {seed ^ 17};
  uint64_t peer = 1;
  emit_log *l = log_new();
  add_str(r, "b0", "12345678", 1, 0, 0);                      /* 10 bytes */
  add_str(r, "b1", "12345678901234567890123456789", 1, 0, 0); /* 31 */
  add_str(r, "b2", "12345678", 1, 0, 0);                      /* 10 */
  add_str(r, "b3", "12345678", 1, 0, 0);                      /* 10 */
  (void)kv_rumor_tick(r, 0, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 2);
  assert_true(key_is(&l->e[0], "b3"));
  assert_true(key_is(&l->e[1], "b2"));
  (void)kv_rumor_tick(r, 10, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 3);
  assert_true(key_is(&l->e[2], "b1")); /* alone over the bound: still goes */
  (void)kv_rumor_tick(r, 20, &rng, &peer, 1, log_emit, l);
  assert_int_equal(l->n, 4);
  assert_true(key_is(&l->e[3], "b0"));
  assert_int_equal(stats(r).batches, 3);
  kv_rumor_free(r);
  free(l);
}

/* A fixed script of adds, ticks and acks, driven by rng seed s. */
static void run_script(uint64_t s, emit_log *l) {
  kv_rumor_opts o = {.interval_ms = 30, .max_rounds = 5};
  kv_rumor *r = kv_rumor_new(&o);
  kv_rng rng = {s};
  uint64_t peers[100];
  iota(peers, 100);
  char key[16];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof key, "key%d", i);
    add_str(r, key, "v", 1, (uint64_t)(i % 7), (uint64_t)i * 10);
    if (i % 5 == 4) {
      size_t start = l->n;
      (void)kv_rumor_tick(r, (uint64_t)i * 10, &rng, peers, 100, log_emit, l);
      for (size_t j = start; j < l->n; j += 2) {
        char k[KEY_MAX + 1] = {0};
        memcpy(k, l->e[j].key, l->e[j].keylen);
        ack_str(r, l->e[j].peer, k, 1, j % 4 == 0);
      }
    }
  }
  for (uint64_t t = 500; t < 1000; t += 7)
    (void)kv_rumor_tick(r, t, &rng, peers, 100, log_emit, l);
  kv_rumor_free(r);
}

static bool logs_equal(const emit_log *a, const emit_log *b) {
  if (a->n != b->n) return false;
  for (size_t i = 0; i < a->n; i++) {
    const emit_rec *x = &a->e[i], *y = &b->e[i];
    if (x->peer != y->peer || x->keylen != y->keylen ||
        memcmp(x->key, y->key, x->keylen) != 0)
      return false;
  }
  return true;
}

static void test_rumor_deterministic_same_seed(void **state) {
  (void)state;
  emit_log *a = log_new(), *b = log_new(), *c = log_new();
  run_script(seed ^ 11, a);
  run_script(seed ^ 11, b);
  run_script(seed ^ 12, c);
  assert_true(a->n > 200);
  assert_true(logs_equal(a, b));
  /* A different seed picks different peers (the chance of an identical
   * sequence of hundreds of picks is nil). */
  assert_false(logs_equal(a, c));
  free(a);
  free(b);
  free(c);
}

/* ---- randomised check against a brute-force model ---- */

#define M_KEYS 12
#define M_PEERS 12

typedef struct m_known {
  uint64_t peer;
  bool pushed, acked;
} m_known;

/* The model keeps the rules in the plainest form: linear scans. It does not
 * predict which candidates a tick picks (that is the rng's business, and
 * the round robin has its own test); it checks that the picks are
 * candidates, as many as the rules say, and that each gets exactly the
 * batch the rules say, in the order they say. */
typedef struct m_rumor {
  bool hot;
  uint8_t version;
  uint64_t seq;
  uint32_t rounds, not_news;
  m_known kn[M_PEERS + 1];
  size_t nkn;
} m_rumor;

static m_known *m_find(m_rumor *m, uint64_t peer) {
  for (size_t i = 0; i < m->nkn; i++)
    if (m->kn[i].peer == peer) return &m->kn[i];
  return NULL;
}

static void m_know(m_rumor *m, uint64_t peer, bool pushed) {
  assert_null(m_find(m, peer));
  assert_true(m->nkn < M_PEERS + 1);
  m->kn[m->nkn++] = (m_known){peer, pushed, false};
}

static void test_rumor_matches_model(void **state) {
  (void)state;
  test_rng tr = {seed ^ 13};
  for (int run = 0; run < 200; run++) {
    kv_rumor_opts o = {.fanout = 1 + (unsigned)test_rng_below(&tr, 4),
                       .k = 1 + (unsigned)test_rng_below(&tr, 3),
                       .max_rounds = 1 + (unsigned)test_rng_below(&tr, 5),
                       .interval_ms = 1 + test_rng_below(&tr, 30),
                       .max_rumors = 2 + test_rng_below(&tr, 8)};
    kv_rumor *r = kv_rumor_new(&o);
    kv_rng rng = {test_rng_next(&tr)};
    m_rumor m[M_KEYS];
    memset(m, 0, sizeof m);
    uint64_t now = 0, seq = 0, died = 0, dropped = 0, ticks = 0;
    uint64_t last_tick = 0, wake = UINT64_MAX;
    emit_log *l = log_new();
    uint8_t versions[M_KEYS] = {0};
    for (int step = 0; step < 400; step++) {
      uint64_t op = test_rng_below(&tr, 12);
      char key[8];
      size_t ki = test_rng_below(&tr, M_KEYS);
      snprintf(key, sizeof key, "k%02zu", ki);
      m_rumor *x = &m[ki];
      if (op < 3) { /* add, a third of them local */
        uint64_t from =
            test_rng_below(&tr, 3) == 0 ? 0 : 1 + test_rng_below(&tr, M_PEERS);
        uint8_t v = ++versions[ki];
        add_str(r, key, "obj", v, from, now);
        size_t hot = 0;
        for (size_t i = 0; i < M_KEYS; i++)
          hot += m[i].hot && i != ki;
        if (hot >= o.max_rumors) { /* evict the oldest other */
          size_t oldest = M_KEYS;
          for (size_t i = 0; i < M_KEYS; i++)
            if (m[i].hot && i != ki &&
                (oldest == M_KEYS || m[i].seq < m[oldest].seq))
              oldest = i;
          m[oldest].hot = false;
          dropped++;
        }
        memset(x, 0, sizeof *x);
        *x = (m_rumor){.hot = true, .version = v, .seq = seq++};
        if (from) m_know(x, from, false);
        if ((from == 0 || ticks == 0) && now < wake) wake = now;
      } else if (op < 6) { /* ack, mostly from a peer pushed to */
        uint64_t peer = 1 + test_rng_below(&tr, M_PEERS);
        if (x->hot && x->nkn && test_rng_below(&tr, 4))
          peer = x->kn[test_rng_below(&tr, x->nkn)].peer;
        uint8_t v =
            test_rng_below(&tr, 5) ? versions[ki] : (uint8_t)(versions[ki] - 1);
        bool news = test_rng_below(&tr, 2);
        ack_str(r, peer, key, v, news);
        m_known *s = x->hot && v == x->version ? m_find(x, peer) : NULL;
        if (s && s->pushed && !s->acked) {
          s->acked = true;
          if (!news && ++x->not_news >= o.k) {
            x->hot = false;
            died++;
          }
        }
      } else if (op < 7) { /* a peer pushed us a version */
        uint64_t peer = 1 + test_rng_below(&tr, M_PEERS);
        uint8_t v =
            test_rng_below(&tr, 3) ? versions[ki] : (uint8_t)(versions[ki] - 1);
        has_str(r, peer, key, v);
        if (x->hot && v == x->version && !m_find(x, peer))
          m_know(x, peer, false);
      } else { /* tick, with a random subset of peers alive */
        now += test_rng_below(&tr, 25);
        uint64_t peers[M_PEERS];
        size_t np = 0;
        for (uint64_t p = 1; p <= M_PEERS; p++)
          if (test_rng_below(&tr, 4)) peers[np++] = p;
        size_t nhot = 0;
        for (size_t i = 0; i < M_KEYS; i++)
          nhot += m[i].hot;
        uint64_t due = UINT64_MAX;
        if (nhot) {
          due = wake;
          if (ticks && last_tick + o.interval_ms < due)
            due = last_tick + o.interval_ms;
        }
        l->n = 0;
        uint64_t next = kv_rumor_tick(r, now, &rng, peers, np, log_emit, l);
        if (due > now) {
          assert_int_equal(l->n, 0);
          assert_true(next == due);
          continue;
        }
        ticks++;
        last_tick = now;
        wake = UINT64_MAX;
        /* The hot rumors newest first, and the candidates. */
        size_t byage[M_KEYS], nb = 0;
        for (size_t i = 0; i < M_KEYS; i++)
          if (m[i].hot) byage[nb++] = i;
        for (size_t i = 1; i < nb; i++)
          for (size_t j = i; j > 0 && m[byage[j]].seq > m[byage[j - 1]].seq;
               j--) {
            size_t t = byage[j];
            byage[j] = byage[j - 1];
            byage[j - 1] = t;
          }
        bool cand[M_PEERS + 1] = {false};
        size_t ncand = 0;
        for (size_t i = 0; i < np; i++)
          for (size_t j = 0; j < nb && !cand[peers[i]]; j++)
            if (!m_find(&m[byage[j]], peers[i])) {
              cand[peers[i]] = true;
              ncand++;
            }
        uint64_t targets[M_PEERS];
        size_t nt = runs(l, 0, l->n, targets);
        assert_int_equal(nt, ncand < o.fanout ? ncand : o.fanout);
        bool pushed_now[M_KEYS] = {false};
        size_t at = 0;
        for (size_t t = 0; t < nt; t++) {
          assert_true(cand[targets[t]]);
          for (size_t j = 0; j < nb; j++) {
            m_rumor *d = &m[byage[j]];
            if (m_find(d, targets[t])) continue;
            char bk[8];
            snprintf(bk, sizeof bk, "k%02zu", byage[j]);
            assert_true(at < l->n);
            assert_true(l->e[at].peer == targets[t]);
            assert_true(key_is(&l->e[at], bk));
            at++;
            m_know(d, targets[t], true);
            pushed_now[byage[j]] = true;
          }
        }
        assert_int_equal(at, l->n);
        for (size_t i = 0; i < M_KEYS; i++) {
          if (!m[i].hot) continue;
          bool left = false;
          for (size_t j = 0; j < np && !left; j++)
            left = !m_find(&m[i], peers[j]);
          if (pushed_now[i] ? ++m[i].rounds >= o.max_rounds : !left) {
            m[i].hot = false;
            died++;
          }
        }
        nhot = 0;
        for (size_t i = 0; i < M_KEYS; i++)
          nhot += m[i].hot;
        assert_true(next == (nhot ? now + o.interval_ms : UINT64_MAX));
      }
      size_t hot = 0;
      for (size_t i = 0; i < M_KEYS; i++)
        hot += m[i].hot;
      kv_rumor_stats s = stats(r);
      assert_int_equal(s.hot, hot);
      assert_int_equal(s.hot_bytes, hot * 6);
      assert_int_equal(s.died, died);
      assert_int_equal(s.dropped, dropped);
    }
    kv_rumor_free(r);
    free(l);
  }
}

/* ---- re-entry from the emit callback is a bug ---- */

static void ack_from_emit(void *arg, uint64_t peer, const uint8_t *key,
                          size_t keylen, const uint8_t *obj, size_t objlen) {
  (void)obj;
  (void)objlen;
  uint8_t d[16];
  dig(d, 1);
  kv_rumor_ack(arg, peer, key, keylen, d, false, 0);
}

static void panic_reentry(void) {
  kv_rumor *r = kv_rumor_new(NULL);
  kv_rng rng = {1};
  uint64_t peers[] = {1, 2, 3};
  add_str(r, "k", "v", 1, 0, 0);
  (void)kv_rumor_tick(r, 0, &rng, peers, 3, ack_from_emit, r);
}

static void test_rumor_emit_reentry_panics(void **state) {
  (void)state;
  assert_panics(panic_reentry);
}

/* ---- dissemination simulation ---- */

#define SIM_N 25

typedef struct sim_msg {
  bool ack, news;
  uint64_t from, to; /* replica ids, 1..SIM_N */
} sim_msg;

typedef struct sim {
  kv_rumor *node[SIM_N + 1];
  bool seen[SIM_N + 1];
  sim_msg *q;
  size_t qhead, qlen, qcap;
  uint64_t sender; /* the node whose tick is emitting */
} sim;

static void sim_send(sim *s, sim_msg m) {
  if (s->qlen == s->qcap) {
    s->qcap = s->qcap ? s->qcap * 2 : 256;
    s->q = realloc(s->q, s->qcap * sizeof *s->q);
    assert_non_null(s->q);
  }
  s->q[s->qlen++] = m;
}

static void sim_emit(void *arg, uint64_t peer, const uint8_t *key,
                     size_t keylen, const uint8_t *obj, size_t objlen) {
  (void)key;
  (void)keylen;
  (void)obj;
  (void)objlen;
  sim *s = arg;
  sim_send(s, (sim_msg){.from = s->sender, .to = peer});
}

typedef struct sim_result {
  size_t reached;
  uint64_t pushes, steps;
} sim_result;

/* One write at node 1 spread through SIM_N nodes by synchronous steps of
 * one tick interval: every node due ticks, then every message (pushes, then
 * the acks they cause) is delivered before the next step, so feedback is
 * never late. A receiver that had not seen the version takes it as news and
 * rumors it on (from = sender); otherwise it learns that the sender holds
 * it; either way it acks. */
static sim_result simulate(uint64_t s0, unsigned k, unsigned fanout) {
  static const uint8_t key[] = "key", obj[] = "object";
  uint8_t d[16];
  dig(d, 42);
  sim s = {0};
  kv_rng rng[SIM_N + 1];
  uint64_t peers[SIM_N + 1][SIM_N];
  kv_rumor_opts o = {.k = k, .fanout = fanout, .interval_ms = 10};
  for (uint64_t i = 1; i <= SIM_N; i++) {
    s.node[i] = kv_rumor_new(&o);
    rng[i].s = s0 * 1000003u + i;
    size_t n = 0;
    for (uint64_t j = 1; j <= SIM_N; j++)
      if (j != i) peers[i][n++] = j;
  }
  s.seen[1] = true;
  kv_rumor_add(s.node[1], key, sizeof key, obj, sizeof obj, d, 0, 0);

  sim_result res = {0};
  uint64_t now = 0;
  for (;;) {
    bool pending = false;
    for (uint64_t i = 1; i <= SIM_N; i++) {
      if (kv_rumor_next_due(s.node[i]) > now) continue;
      s.sender = i;
      (void)kv_rumor_tick(s.node[i], now, &rng[i], peers[i], SIM_N - 1,
                          sim_emit, &s);
    }
    for (s.qhead = 0; s.qhead < s.qlen; s.qhead++) {
      sim_msg m = s.q[s.qhead];
      if (m.ack) {
        kv_rumor_ack(s.node[m.to], m.from, key, sizeof key, d, m.news, now);
        continue;
      }
      bool news = !s.seen[m.to];
      if (news) {
        s.seen[m.to] = true;
        kv_rumor_add(s.node[m.to], key, sizeof key, obj, sizeof obj, d, m.from,
                     now);
      } else {
        kv_rumor_peer_has(s.node[m.to], m.from, key, sizeof key, d);
      }
      sim_send(
          &s, (sim_msg){.ack = true, .news = news, .from = m.to, .to = m.from});
    }
    s.qlen = 0;
    for (uint64_t i = 1; i <= SIM_N; i++)
      pending |= kv_rumor_next_due(s.node[i]) != UINT64_MAX;
    if (!pending) break;
    now += 10;
    res.steps++;
    assert_true(res.steps < 10000);
  }
  for (uint64_t i = 1; i <= SIM_N; i++) {
    res.reached += s.seen[i];
    kv_rumor_stats st = stats(s.node[i]);
    res.pushes += st.pushed;
    assert_int_equal(st.hot, 0);
    kv_rumor_free(s.node[i]);
  }
  free(s.q);
  return res;
}

/*
 * 100 seeds per configuration, fanout 3, max_rounds 4. Traffic can never
 * pass N * fanout * max_rounds = 300 pushes (each node rumors a version at
 * most once and pushes it in at most 4 ticks), and every push is answered by
 * one ack.
 *
 * Coverage is bounded by traffic (Demers: residue s ~ e^-m, m = pushes per
 * node). Here feedback is never late (acks arrive before the next tick, as
 * on a LAN), so with the defaults k = 2 not-news acks usually end a
 * late-informed node's rumor after its first tick, m ~ 3.8, and about 1% of
 * nodes are missed (anti-entropy repairs them): all 25 are reached in some
 * 77% of seeds. That figure is printed and guarded against regression. The
 * "all nodes in at least 99 of 100 seeds" property is asserted for k = 7
 * (k > 2 * fanout: every rumor lives at least three ticks, m ~ 9.4), where
 * 100,000 seeds showed no residue at all. (With 100 ms links feedback comes
 * back after rumors have had their rounds, and the simulator's scale run
 * reaches every replica by rumor: bench/RESULTS.md.)
 */
static void test_rumor_dissemination_simulation(void **state) {
  (void)state;
  enum { SEEDS = 100 };
  static const unsigned ks[] = {1, 2, 4, 7};
  double prev_avg = 0;
  for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
    unsigned k = ks[c], full = 0;
    uint64_t pushes = 0, min_p = UINT64_MAX, max_p = 0, missed = 0;
    uint64_t steps = 0;
    for (uint64_t i = 0; i < SEEDS; i++) {
      sim_result res = simulate(seed + i, k, 3);
      full += res.reached == SIM_N;
      missed += SIM_N - res.reached;
      pushes += res.pushes;
      steps += res.steps;
      if (res.pushes < min_p) min_p = res.pushes;
      if (res.pushes > max_p) max_p = res.pushes;
    }
    double avg = (double)pushes / SEEDS;
    double residue = (double)missed / (SEEDS * SIM_N);
    printf("rumor sim N=%d fanout=3 k=%u%s: all reached in %u/%d seeds, "
           "residue %.4f; pushes/write avg %.1f (min %llu, max %llu; %.2f "
           "per node; RMR %.2f), messages/write avg %.1f; steps avg %.1f\n",
           SIM_N, k, k == KV_RUMOR_DEFAULT_K ? " (defaults)" : "", full, SEEDS,
           residue, avg, (unsigned long long)min_p, (unsigned long long)max_p,
           avg / SIM_N, avg / (SIM_N - 1) - 1, 2 * avg, (double)steps / SEEDS);
    assert_true(max_p <= SIM_N * 3 * 4);
    assert_true(avg > prev_avg); /* more patience, more traffic */
    prev_avg = avg;
    if (k == KV_RUMOR_DEFAULT_K) {
      /* Measured over 100,000 seeds: 77.5% full (never under 63 in 100),
       * residue 0.010, 94.0 pushes. The bounds are several deviations
       * away. */
      assert_true(full >= 50);
      assert_true(residue < 0.03);
      assert_true(avg < 6.0 * SIM_N);
    }
    if (k == 7) assert_true(full >= 99);
  }
}

int main(void) {
  seed = test_seed("rumor_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rumor_defaults_and_empty),
      cmocka_unit_test(test_rumor_first_push_fanout_distinct_excludes_from),
      cmocka_unit_test(test_rumor_one_batch_per_peer_per_tick),
      cmocka_unit_test(test_rumor_round_robin_targets),
      cmocka_unit_test(test_rumor_ticks_paced_by_interval),
      cmocka_unit_test(test_rumor_interval_follows_round_trip),
      cmocka_unit_test(test_rumor_known_holders_not_pushed),
      cmocka_unit_test(test_rumor_not_news_acks_kill_at_k),
      cmocka_unit_test(test_rumor_late_acks_count),
      cmocka_unit_test(test_rumor_news_acks_do_not_kill),
      cmocka_unit_test(test_rumor_dies_when_no_peers_left),
      cmocka_unit_test(test_rumor_dies_after_max_rounds),
      cmocka_unit_test(test_rumor_replacement_restarts),
      cmocka_unit_test(test_rumor_stale_digest_acks_ignored),
      cmocka_unit_test(test_rumor_bounds_evict_oldest),
      cmocka_unit_test(test_rumor_batch_bytes_bounded),
      cmocka_unit_test(test_rumor_deterministic_same_seed),
      cmocka_unit_test(test_rumor_matches_model),
      cmocka_unit_test(test_rumor_emit_reentry_panics),
      cmocka_unit_test(test_rumor_dissemination_simulation),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
