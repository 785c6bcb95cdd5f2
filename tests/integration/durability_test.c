/*
 * Integration tests of kvd's durability promise: with --sync always (the
 * default, used by every test here) an acknowledged write survives a restart
 * after SIGTERM and after SIGKILL, including a SIGTERM that arrives in the
 * middle of a write load from several clients, which must also end with exit
 * status 0 (a graceful stop). Registers, siblings, counters, deletes, binary
 * and large values are read back through both protocols; the replica id and
 * Merkle root must be unchanged and verify must pass.
 */
#include <pthread.h>

#include "tests/integration/itest.h"

/* ---- a fixed workload and its expected state ---- */

enum { NKEYS = 400, NDEL = 40, NINCR = 100 };

static void drain_ok(kvc_conn *c) {
  while (kvc_pending(c)) {
    kvc_result *r = NULL;
    assert_kvc(kvc_recv(c, &r), KVC_OK);
    if (kvc_result_error(r) != KVC_OK)
      fail_msg("pipelined request %llu: %s",
               (unsigned long long)kvc_result_id(r), kvc_result_errmsg(r));
    kvc_result_free(r);
  }
}

static void write_workload(kvdh *p, const char *big, size_t biglen) {
  kvc_conn *c = it_conn(p);
  char k[32], v[64];
  for (int i = 0; i < NKEYS; i++) {
    int kn = snprintf(k, sizeof k, "reg:%04d", i);
    int vn = snprintf(v, sizeof v, "value-%d-%s", i, i % 2 ? "odd" : "even");
    assert_kvc(kvc_send_put(c, k, (size_t)kn, v, (size_t)vn, NULL, 0, NULL),
               KVC_OK);
    if (kvc_pending(c) >= 64) drain_ok(c);
  }
  drain_ok(c);
  for (int i = 0; i < NDEL; i++) {
    int kn = snprintf(k, sizeof k, "reg:%04d", i * 10);
    assert_kvc(kvc_del(c, k, (size_t)kn, NULL, 0), KVC_OK);
  }
  for (int i = 0; i < NINCR; i++) {
    assert_kvc(kvc_send_incr(c, "pn", 2, i % 3 == 0 ? -2 : 5, false, NULL),
               KVC_OK);
    assert_kvc(kvc_send_incr(c, "g", 1, 1, true, NULL), KVC_OK);
  }
  drain_ok(c);
  assert_kvc(kvc_put(c, "sib", 3, "left", 4, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "sib", 3, "right", 5, NULL, 0), KVC_OK);
  const uint8_t bk[] = {0, 0xff, '\n', 0};
  const uint8_t bv[] = {0xde, 0xad, 0, 0xbe, 0xef, '\r', '\n'};
  assert_kvc(kvc_put(c, bk, sizeof bk, bv, sizeof bv, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "big", 3, big, biglen, NULL, 0), KVC_OK);
  kvc_close(c);
  /* Writes through RESP too. */
  int fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "MSET", "r1", "one", "r2", "two"), "OK");
  assert_string_equal(RESP(fd, "INCRBY", "rc", "77"), "77");
  assert_string_equal(RESP(fd, "DEL", "r2"), "1");
  close(fd);
}

static int64_t pn_expected(void) {
  int64_t v = 0;
  for (int i = 0; i < NINCR; i++)
    v += i % 3 == 0 ? -2 : 5;
  return v;
}

static void check_workload(kvdh *p, const char *big, size_t biglen,
                           size_t extra_keys) {
  kvc_conn *c = it_conn(p);
  char k[32], v[64], got[64];
  kvc_result *r = NULL;
  for (int i = 0; i < NKEYS; i++) {
    int kn = snprintf(k, sizeof k, "reg:%04d", i);
    snprintf(v, sizeof v, "value-%d-%s", i, i % 2 ? "odd" : "even");
    int rc = kvc_get(c, k, (size_t)kn, &r);
    if (i % 10 == 0 && i / 10 < NDEL) {
      if (rc != KVC_NOTFOUND)
        fail_msg("%s was deleted but reads %s", k, kvc_errname(rc));
    } else {
      if (rc != KVC_OK) fail_msg("%s: %s", k, kvc_errname(rc));
      assert_int_equal(kvc_result_siblings(r), 1);
      assert_string_equal(it_sibling(r, 0, got, sizeof got), v);
    }
    kvc_result_free(r);
  }
  assert_kvc(kvc_get(c, "pn", 2, &r), KVC_OK);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_PNCOUNTER);
  assert_int_equal(kvc_result_counter(r), pn_expected());
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "g", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_GCOUNTER);
  assert_int_equal(kvc_result_counter(r), NINCR);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "sib", 3, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 2);
  assert_true(it_has_sibling(r, "left") && it_has_sibling(r, "right"));
  kvc_result_free(r);
  const uint8_t bk[] = {0, 0xff, '\n', 0};
  const uint8_t bv[] = {0xde, 0xad, 0, 0xbe, 0xef, '\r', '\n'};
  assert_kvc(kvc_get(c, bk, sizeof bk, &r), KVC_OK);
  const uint8_t *d;
  size_t n;
  assert_kvc(kvc_result_sibling(r, 0, &d, &n), KVC_OK);
  assert_int_equal(n, sizeof bv);
  assert_memory_equal(d, bv, sizeof bv);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "big", 3, &r), KVC_OK);
  assert_kvc(kvc_result_sibling(r, 0, &d, &n), KVC_OK);
  assert_int_equal(n, biglen);
  assert_memory_equal(d, big, biglen);
  kvc_result_free(r);
  uint64_t bad = 1;
  assert_kvc(kvc_verify(c, &bad), KVC_OK);
  assert_int_equal(bad, 0);
  kvc_close(c);
  int fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "MGET", "r1", "r2", "rc", "reg:0001"),
                      "[one,(nil),77,value-1-odd]");
  close(fd);
  /* Live keys: registers not deleted, pn, g, sib, the binary key, big, r1,
   * rc; a full scan lists each once. */
  c = it_conn(p);
  uint8_t cursor[1024];
  size_t cursorlen = 0, live = 0;
  do {
    assert_kvc(kvc_scan(c, cursor, cursorlen, NULL, 0, 50, &r), KVC_OK);
    live += kvc_result_keys(r);
    const uint8_t *cur;
    kvc_result_cursor(r, &cur, &cursorlen);
    assert_true(cursorlen <= sizeof cursor);
    memcpy(cursor, cur, cursorlen);
    kvc_result_free(r);
  } while (cursorlen);
  assert_int_equal(live, NKEYS - NDEL + 7 + extra_keys);
  kvc_close(c);
}

typedef struct snapshot {
  uint64_t replica_id, keys;
  uint8_t root[16];
} snapshot;

static snapshot take_snapshot(kvdh *p) {
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  snapshot sn = {s->replica_id, s->keys, {0}};
  assert_true(s->sync); /* these tests need fsync on every commit */
  assert_int_equal(s->merkle_root_len, 16);
  memcpy(sn.root, s->merkle_root, 16);
  kvc_result_free(r);
  kvc_close(c);
  return sn;
}

static void restart_keeps_writes(it_fixture *f, int sig) {
  static char big[300 * 1024];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)('a' + i % 26);
  kvdh *p = &f->k[0];
  it_start(p);
  write_workload(p, big, sizeof big);
  check_workload(p, big, sizeof big, 0);
  snapshot before = take_snapshot(p);
  int st = kvdh_stop(p, sig, 15000);
  assert_true(st != -1);
  if (sig == SIGTERM) {
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(kvdh_log_contains(p, "event=stopped"));
  } else {
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == sig);
  }
  /* The data directory is consistent on disk: kvd --verify says so. */
  const char *kvd = getenv("KVD") ? getenv("KVD") : "build/kvd";
  const char *verify[] = {kvd,   "--data-dir", p->data, "--segments",
                          "256", "--verify",   NULL};
  char vout[1024], verr[4096];
  int vrc =
      kvdh_exec(verify, NULL, vout, sizeof vout, verr, sizeof verr, 30000);
  if (vrc != 0) fail_msg("kvd --verify: exit %d: %s %s", vrc, vout, verr);
  assert_non_null(strstr(vout, "verify: ok"));
  it_start(p);
  check_workload(p, big, sizeof big, 0);
  snapshot after = take_snapshot(p);
  assert_true(after.replica_id == before.replica_id);
  assert_int_equal(after.keys, before.keys);
  assert_memory_equal(after.root, before.root, 16);
  /* And once more, so that a restarted kvd also persists what it is given. */
  kvc_conn *c = it_conn(p);
  assert_kvc(kvc_put(c, "after-restart", 13, "yes", 3, NULL, 0), KVC_OK);
  kvc_close(c);
  st = kvdh_stop(p, sig, 15000);
  assert_true(st != -1);
  it_start(p);
  c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "after-restart", 13, &r), KVC_OK);
  assert_true(it_has_sibling(r, "yes"));
  kvc_result_free(r);
  kvc_close(c);
  check_workload(p, big, sizeof big, 1);
}

static void test_durability_restart_after_sigterm(void **state) {
  IT_BEGIN(f, 60);
  restart_keeps_writes(f, SIGTERM);
  IT_END(f);
}

static void test_durability_restart_after_sigkill(void **state) {
  IT_BEGIN(f, 60);
  restart_keeps_writes(f, SIGKILL);
  IT_END(f);
}

/* Counters across several crash/stop cycles: each cycle's acknowledged
 * increments are all there, exactly. */
static void test_durability_counter_across_restarts(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  int64_t want = 0;
  for (int cycle = 0; cycle < 6; cycle++) {
    it_start(p);
    kvc_conn *c = it_conn(p);
    kvc_result *r = NULL;
    int rc = kvc_get(c, "ctr", 3, &r);
    if (cycle == 0)
      assert_kvc(rc, KVC_NOTFOUND);
    else
      assert_kvc(rc, KVC_OK);
    assert_int_equal(kvc_result_counter(r), want);
    kvc_result_free(r);
    for (int i = 0; i < 200; i++)
      assert_kvc(kvc_send_incr(c, "ctr", 3, cycle + 1, false, NULL), KVC_OK);
    drain_ok(c);
    want += 200 * (cycle + 1);
    kvc_close(c);
    const int sigs[3] = {SIGTERM, SIGKILL, SIGINT};
    int sig = sigs[cycle % 3];
    int st = kvdh_stop(p, sig, 15000);
    assert_true(st != -1);
    if (sig == SIGKILL)
      assert_true(WIFSIGNALED(st));
    else
      assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  it_start(p);
  int fd = it_fd(p->resp_port);
  char w[32];
  snprintf(w, sizeof w, "%lld", (long long)want);
  assert_string_equal(RESP(fd, "GET", "ctr"), w);
  close(fd);
  IT_END(f);
}

/* ---- SIGTERM in the middle of a write load ---- */

enum { LOAD_THREADS = 4, LOAD_MAX = 200000, LOAD_WINDOW = 16, LOAD_ROUNDS = 3 };

typedef struct load_job {
  int port, round, id;
  uint8_t *acked;   /* acked[i]: put i was acknowledged */
  int sent, nacked; /* puts sent, acknowledged */
  int incr_sent, incr_acked;
  int bad;    /* answers that were errors (not transport) */
  int end_rc; /* the transport status that ended the thread */
  char msg[160];
} load_job;

static int load_key(char *k, size_t cap, const load_job *j, int i) {
  return snprintf(k, cap, "load:%d:%d:%06d", j->round, j->id, i);
}

static int load_counter(char *k, size_t cap, const load_job *j) {
  return snprintf(k, cap, "load:ctr:%d:%d", j->round, j->id);
}

/* Pipelines puts of unique keys (value = key) and, every eighth request, an
 * increment of the thread's counter, until the connection ends. */
static void *load_worker(void *arg) {
  load_job *j = arg;
  kvc_options o = {0};
  o.io_timeout_ms = 20000;
  kvc_conn *c = NULL;
  if (kvc_connect("127.0.0.1", j->port, &o, &c) != KVC_OK) {
    snprintf(j->msg, sizeof j->msg, "connect: %s", kvc_errmsg(c));
    j->end_rc = KVC_IO;
    kvc_close(c);
    return NULL;
  }
  /* What each pending request was: -1 an increment, else a put's index. */
  int inflight[LOAD_WINDOW * 2];
  size_t head = 0, tail = 0;
  char k[48], ck[32];
  int ckn = load_counter(ck, sizeof ck, j);
  for (;;) {
    while (kvc_pending(c) < LOAD_WINDOW && j->sent < LOAD_MAX) {
      int rc;
      if ((j->sent + j->incr_sent) % 8 == 7) {
        rc = kvc_send_incr(c, ck, (size_t)ckn, 1, false, NULL);
        if (rc == KVC_OK)
          inflight[tail++ % (LOAD_WINDOW * 2)] = -1, j->incr_sent++;
      } else {
        int kn = load_key(k, sizeof k, j, j->sent);
        rc = kvc_send_put(c, k, (size_t)kn, k, (size_t)kn, NULL, 0, NULL);
        if (rc == KVC_OK) inflight[tail++ % (LOAD_WINDOW * 2)] = j->sent++;
      }
      if (rc != KVC_OK) {
        j->end_rc = rc;
        goto out;
      }
    }
    if (kvc_pending(c) == 0) break;
    kvc_result *r = NULL;
    int rc = kvc_recv(c, &r);
    if (rc != KVC_OK) {
      j->end_rc = rc;
      snprintf(j->msg, sizeof j->msg, "%s", kvc_errmsg(c));
      goto out;
    }
    int what = inflight[head++ % (LOAD_WINDOW * 2)];
    if (kvc_result_error(r) == KVC_OK) {
      if (what < 0)
        j->incr_acked++;
      else
        j->acked[what] = 1, __atomic_fetch_add(&j->nacked, 1, __ATOMIC_RELAXED);
    } else {
      j->bad++;
      snprintf(j->msg, sizeof j->msg, "answer: %s", kvc_result_errmsg(r));
    }
    kvc_result_free(r);
  }
out:
  kvc_close(c);
  return NULL;
}

/* Checks that every put jobs acknowledged reads back, and each counter
 * holds between its acknowledged and its sent increments. Returns how many
 * unacknowledged puts were nevertheless committed. */
static int check_load(kvdh *p, load_job *jobs, int njobs) {
  kvc_conn *c = it_conn(p);
  int missing = 0, present_unacked = 0;
  char k[48];
  for (int t = 0; t < njobs; t++) {
    load_job *j = &jobs[t];
    for (int i = 0; i < j->sent; i++) {
      int kn = load_key(k, sizeof k, j, i);
      assert_kvc(kvc_send_get(c, k, (size_t)kn, NULL), KVC_OK);
    }
    for (int i = 0; i < j->sent; i++) {
      kvc_result *r = NULL;
      assert_kvc(kvc_recv(c, &r), KVC_OK);
      int rc = kvc_result_error(r);
      if (j->acked[i]) {
        int kn = load_key(k, sizeof k, j, i);
        const uint8_t *d;
        size_t n;
        if (rc != KVC_OK || kvc_result_sibling(r, 0, &d, &n) != KVC_OK ||
            n != (size_t)kn || memcmp(d, k, n) != 0) {
          if (missing++ < 10)
            fprintf(stderr, "acknowledged %s lost (%s)\n", k, kvc_errname(rc));
        }
      } else if (rc == KVC_OK) {
        present_unacked++; /* committed, answer lost in the stop: allowed */
      }
      kvc_result_free(r);
    }
    char ck[32];
    int ckn = load_counter(ck, sizeof ck, j);
    kvc_result *r = NULL;
    int rc = kvc_get(c, ck, (size_t)ckn, &r);
    int64_t v = rc == KVC_OK ? kvc_result_counter(r) : 0;
    kvc_result_free(r);
    if (v < j->incr_acked || v > j->incr_sent)
      fail_msg("counter %s is %lld; %d increments acknowledged, %d sent", ck,
               (long long)v, j->incr_acked, j->incr_sent);
  }
  uint64_t bad = 1;
  assert_kvc(kvc_verify(c, &bad), KVC_OK);
  assert_int_equal(bad, 0);
  kvc_close(c);
  if (missing) fail_msg("%d acknowledged writes lost", missing);
  return present_unacked;
}

/* Rounds of: several clients pipelining writes, SIGTERM in the middle (at a
 * different point each round), exit status 0, restart, every acknowledged
 * write of every round present. */
static void test_durability_sigterm_during_write_load(void **state) {
  IT_BEGIN(f, 90);
  kvdh *p = &f->k[0];
  static load_job jobs[LOAD_ROUNDS * LOAD_THREADS];
  const int min_ms[LOAD_ROUNDS] = {50, 300, 700};
  it_start(p);
  for (int round = 0; round < LOAD_ROUNDS; round++) {
    load_job *rj = &jobs[round * LOAD_THREADS];
    pthread_t th[LOAD_THREADS];
    for (int i = 0; i < LOAD_THREADS; i++) {
      rj[i] = (load_job){.port = p->native_port,
                         .round = round,
                         .id = i,
                         .acked = calloc(LOAD_MAX, 1)};
      assert_int_equal(pthread_create(&th[i], NULL, load_worker, &rj[i]), 0);
    }
    uint64_t t0 = kvdh_now_ms();
    for (;;) {
      int acked = 0;
      for (int i = 0; i < LOAD_THREADS; i++)
        acked += __atomic_load_n(&rj[i].nacked, __ATOMIC_RELAXED);
      uint64_t ran = kvdh_now_ms() - t0;
      if ((acked >= 500 && ran >= (uint64_t)min_ms[round]) || ran > 5000) break;
      kvdh_sleep_ms(5);
    }
    int st = kvdh_stop(p, SIGTERM, 20000);
    for (int i = 0; i < LOAD_THREADS; i++)
      pthread_join(th[i], NULL);
    if (st == -1)
      fail_msg("round %d: kvd did not exit within 20 s of SIGTERM", round);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fail_msg("round %d: kvd did not stop gracefully: %s %d", round,
               WIFSIGNALED(st) ? "signal" : "exit status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    int acked = 0, sent = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
      load_job *j = &rj[i];
      if (j->bad)
        fail_msg("round %d thread %d: %d error answers (%s)", round, i, j->bad,
                 j->msg);
      /* The load was cut short by the stop, not finished. */
      assert_true(j->sent < LOAD_MAX);
      assert_true(j->end_rc != KVC_OK);
      acked += j->nacked;
      sent += j->sent;
    }
    assert_true(acked >= 500);
    it_start(p);
    int extra = check_load(p, jobs, (round + 1) * LOAD_THREADS);
    fprintf(stderr,
            "round %d: %d of %d puts acknowledged; %d unacknowledged ones "
            "were committed (their answers were lost in the stop)\n",
            round, acked, sent, extra);
  }
  assert_true(kvdh_log_contains(p, "event=shutdown"));
  assert_true(kvdh_log_contains(p, "event=stopped"));
  for (int i = 0; i < LOAD_ROUNDS * LOAD_THREADS; i++)
    free(jobs[i].acked);
  IT_END(f);
}

/* A store that filled up keeps what it acknowledged across a restart, and
 * a restart with a larger map takes more writes. */
static void test_durability_store_full_then_restart(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  it_args(p, "--map-size", "1m", NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  char v[1000], k[32];
  memset(v, 'x', sizeof v);
  static uint8_t acked[5000];
  int nacked = 0, full = 0, i;
  for (i = 0; i < 5000 && full < 10; i++) {
    int kn = snprintf(k, sizeof k, "full:%05d", i);
    int rc = kvc_put(c, k, (size_t)kn, v, sizeof v, NULL, 0);
    if (rc == KVC_OK)
      acked[i] = 1, nacked++;
    else if (rc == KVC_STORE_FULL)
      full++;
    else
      fail_msg("put %s: %s", k, kvc_errname(rc));
  }
  int tried = i;
  assert_int_equal(full, 10);
  kvc_close(c);
  int st = kvdh_stop(p, SIGTERM, 15000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  it_args(p, "--map-size", "4m", NULL);
  it_start(p);
  c = it_conn(p);
  for (i = 0; i < tried; i++) {
    int kn = snprintf(k, sizeof k, "full:%05d", i);
    kvc_result *r = NULL;
    int rc = kvc_get(c, k, (size_t)kn, &r);
    if (acked[i] && rc != KVC_OK)
      fail_msg("acknowledged %s lost: %s", k, kvc_errname(rc));
    if (!acked[i] && rc != KVC_NOTFOUND)
      fail_msg("refused %s is present: %s", k, kvc_errname(rc));
    kvc_result_free(r);
  }
  uint64_t bad = 1;
  assert_kvc(kvc_verify(c, &bad), KVC_OK);
  assert_int_equal(bad, 0);
  for (i = 0; i < 200; i++) {
    int kn = snprintf(k, sizeof k, "more:%05d", i);
    assert_kvc(kvc_put(c, k, (size_t)kn, v, sizeof v, NULL, 0), KVC_OK);
  }
  kvc_close(c);
  fprintf(stderr, "%d writes fitted in 1m\n", nacked);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_durability_restart_after_sigterm),
      IT_TEST(test_durability_restart_after_sigkill),
      IT_TEST(test_durability_counter_across_restarts),
      IT_TEST(test_durability_sigterm_during_write_load),
      IT_TEST(test_durability_store_full_then_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
