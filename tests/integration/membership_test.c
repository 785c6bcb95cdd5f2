/*
 * Membership integration tests (DESIGN §6.3): real kvd processes on loopback
 * running SWIM over sealed UDP, with timers shortened so that a test takes
 * seconds (probe every 300 ms; the bound below is computed from them). A
 * replica killed with SIGKILL is declared dead by every other within the
 * bound and, restarted, comes back alive with a higher incarnation and
 * catches up; a replica paused for less than the suspicion timeout refutes
 * and is never declared dead, while one paused past it is declared dead and
 * comes back when resumed; a sixth replica joining through one seed
 * learns every member and every key; SIGTERM is seen as a leave, not a
 * death; a join is refused with the reason when the cluster name or segment
 * count differ; and a replica away longer than tombstone-grace is refused.
 */
#include <time.h>

#include "tests/integration/itest.h"

#define KEY "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n"
#define N 5

/* The SWIM settings every node gets, and the detection bound they imply:
 * every other member probes the dead one within one round of N-1 probes,
 * the probe takes one interval, the suspicion lasts at most
 * suspicion-max-mult x suspicion-mult x probe-interval (one accuser, no
 * confirmations), and the verdict then spreads by gossip (allowed 1 s). */
#define PROBE_MS 300
#define SUSPICION_MULT 5
#define SUSPICION_MAX_MULT 6
#define DETECT_BOUND_MS                                                        \
  ((N - 1) * PROBE_MS + PROBE_MS +                                             \
   SUSPICION_MAX_MULT * SUSPICION_MULT * PROBE_MS + 1000)
/* The shortest suspicion: suspicion-mult x probe-interval (log10(5) < 1). */
#define SUSPICION_MIN_MS (SUSPICION_MULT * PROBE_MS)

static char conf[IT_NKVD][256], joinarg[IT_NKVD][256], peerarg[IT_NKVD][64];
static const char *names[IT_NKVD] = {"n1", "n2", "n3", "n4",
                                     "n5", "n6", "n7", "n8"};

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  assert_int_equal(fclose(fp), 0);
}

/* Writes node i's config (cluster, key, timers, plus extra lines). */
static void configure(it_fixture *f, int i, const char *extra) {
  kvdh *p = &f->k[i];
  assert_int_equal(kvdh_prepare(p), 0);
  char key[300], text[2048];
  snprintf(key, sizeof key, "%s/cluster.key", p->dir);
  write_file(key, KEY);
  snprintf(text, sizeof text,
           "name = %s\nsync = none\ncluster = mtest\ncluster-key-file = %s\n"
           "ae-interval = 200\nprobe-interval = %d\nprobe-timeout = %d\n"
           "gossip-interval = 100\nsuspicion-mult = %d\n"
           "suspicion-max-mult = %d\nlog-level = debug\n%s",
           names[i], key, PROBE_MS, PROBE_MS / 2, SUSPICION_MULT,
           SUSPICION_MAX_MULT, extra ? extra : "");
  snprintf(conf[i], sizeof conf[i], "%s/kvd.conf", p->dir);
  write_file(conf[i], text);
}

/* Starts node i (configured), joining through the nodes in seeds (a list
 * of indexes, -1-terminated) or none. On a restart it keeps its peer port,
 * so that it comes back at the address the others know. */
static void start(it_fixture *f, int i, const int *seeds) {
  kvdh *p = &f->k[i];
  size_t used = 0;
  joinarg[i][0] = 0;
  for (int j = 0; seeds && seeds[j] >= 0; j++)
    used += (size_t)snprintf(joinarg[i] + used, sizeof joinarg[i] - used,
                             "%s127.0.0.1:%d", used ? "," : "",
                             f->k[seeds[j]].peer_port);
  snprintf(peerarg[i], sizeof peerarg[i], "127.0.0.1:%d", p->peer_port);
  if (used)
    it_args(p, "--config", conf[i], "--peer-listen", peerarg[i], "--join",
            joinarg[i], NULL);
  else
    it_args(p, "--config", conf[i], "--peer-listen", peerarg[i], NULL);
  it_start(p);
  assert_true(p->peer_port > 0);
}

static uint64_t mono_ms(void) { return kvdh_now_ms(); }

/* Member `name` as node p sees it: its state ("" if unknown) and
 * incarnation. Returns the number of members p holds in state want_state
 * (for counting), or -1 if p did not answer. */
static int member_of(kvdh *p, const char *name, char *state, size_t cap,
                     uint64_t *inc, const char *want_state) {
  kvc_conn *c = NULL;
  if (kvc_connect("127.0.0.1", p->native_port, NULL, &c) != KVC_OK) {
    kvc_close(c);
    return -1;
  }
  kvc_result *r = NULL;
  if (kvc_members(c, &r) != KVC_OK) {
    kvc_close(c);
    return -1;
  }
  const kvc_member_info *m;
  size_t n = kvc_result_members(r, &m);
  int count = 0;
  if (state) snprintf(state, cap, "%s", "");
  for (size_t i = 0; i < n; i++) {
    if (want_state && !strcmp(m[i].state, want_state)) count++;
    if (name && !strcmp(m[i].name, name)) {
      if (state) snprintf(state, cap, "%s", m[i].state);
      if (inc) *inc = m[i].incarnation;
    }
  }
  kvc_result_free(r);
  kvc_close(c);
  return count;
}

/* Waits until each node in [0, n) except skip holds want alive members. */
static void wait_alive_count(it_fixture *f, int n, int skip, int want,
                             int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  for (int i = 0; i < n; i++) {
    if (i == skip) continue;
    int got;
    while ((got = member_of(&f->k[i], NULL, NULL, 0, NULL, "alive")) != want) {
      if (mono_ms() > end)
        fail_msg("%s holds %d alive members, want %d", names[i], got, want);
      kvdh_sleep_ms(50);
    }
  }
}

/* Waits until every node in [0, n) except skip sees `name` in state st;
 * returns the time it took. */
static uint64_t wait_state(it_fixture *f, int n, int skip, const char *name,
                           const char *st, int timeout_ms) {
  uint64_t start = mono_ms(), end = start + (uint64_t)timeout_ms;
  for (int i = 0; i < n; i++) {
    if (i == skip) continue;
    char got[16];
    for (;;) {
      member_of(&f->k[i], name, got, sizeof got, NULL, NULL);
      if (!strcmp(got, st)) break;
      if (mono_ms() > end)
        fail_msg("%s sees %s as '%s' after %d ms, want %s", names[i], name,
                 got, timeout_ms, st);
      kvdh_sleep_ms(25);
    }
  }
  return mono_ms() - start;
}

static void start_cluster(it_fixture *f, int n) {
  const int first[] = {0, -1}, two[] = {0, 1, -1};
  for (int i = 0; i < n; i++) {
    configure(f, i, NULL);
    start(f, i, i == 0 ? NULL : i == 1 ? first : two);
  }
  wait_alive_count(f, n, -1, n, 10000);
}

static void put_keys(kvdh *p, const char *prefix, int count) {
  kvc_conn *c = it_conn(p);
  for (int k = 0; k < count; k++) {
    char key[64], val[64];
    snprintf(key, sizeof key, "%s%04d", prefix, k);
    snprintf(val, sizeof val, "v%d", k);
    assert_kvc(kvc_put(c, key, strlen(key), val, strlen(val), NULL, 0),
               KVC_OK);
  }
  kvc_close(c);
}

static void root_keys(kvdh *p, uint8_t root[16], uint64_t *keys) {
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  memcpy(root, s->merkle_root, 16);
  *keys = s->keys;
  kvc_result_free(r);
  kvc_close(c);
}

/* Waits until every node in [0, n) holds want keys and the same root. */
static void wait_converged(it_fixture *f, int n, uint64_t want,
                           int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint8_t r0[16], ri[16];
    uint64_t k0, ki;
    root_keys(&f->k[0], r0, &k0);
    bool same = k0 == want;
    for (int i = 1; i < n && same; i++) {
      root_keys(&f->k[i], ri, &ki);
      same = ki == want && !memcmp(r0, ri, 16);
    }
    if (same) return;
    if (mono_ms() > end)
      fail_msg("replicas did not converge on %llu keys within %d ms",
               (unsigned long long)want, timeout_ms);
    kvdh_sleep_ms(50);
  }
}

/* True if any node in [0, n) logged event for name. */
static bool any_logged(it_fixture *f, int n, const char *event,
                       const char *name) {
  char needle[128];
  snprintf(needle, sizeof needle, "event=%s name=%s ", event, name);
  for (int i = 0; i < n; i++)
    if (kvdh_log_contains(&f->k[i], needle)) return true;
  return false;
}

static void test_kill9_detected_then_rejoins(void **state) {
  IT_BEGIN(f, 120);
  start_cluster(f, N);
  put_keys(&f->k[0], "a", 100);
  uint64_t inc_before = 0;
  char st[16];
  member_of(&f->k[0], "n5", st, sizeof st, &inc_before, NULL);
  assert_string_equal(st, "alive");

  assert_int_equal(kvdh_stop(&f->k[4], SIGKILL, 5000) >= 0, 1);
  uint64_t took = wait_state(f, N - 1, 4, "n5", "dead", DETECT_BOUND_MS);
  fprintf(stderr, "kill -9 -> dead everywhere in %llu ms (bound %d ms)\n",
          (unsigned long long)took, DETECT_BOUND_MS);
  /* Written while n5 is down: it must catch up by anti-entropy. */
  put_keys(&f->k[1], "b", 100);

  start(f, 4, (const int[]){0, 1, 2, 3, -1});
  wait_state(f, N, 4, "n5", "alive", 10000);
  for (int i = 0; i < N - 1; i++) {
    uint64_t inc = 0;
    member_of(&f->k[i], "n5", st, sizeof st, &inc, NULL);
    if (inc <= inc_before)
      fail_msg("%s holds n5 at incarnation %llu, not above %llu", names[i],
               (unsigned long long)inc, (unsigned long long)inc_before);
  }
  wait_alive_count(f, N, -1, N, 10000);
  wait_converged(f, N, 200, 20000);
  IT_END(f);
}

static void test_sigstop_refutes_never_dead(void **state) {
  IT_BEGIN(f, 120);
  start_cluster(f, N);
  uint64_t inc0 = 0, inc1 = 0;
  char st[16];
  member_of(&f->k[0], "n3", st, sizeof st, &inc0, NULL);
  /* Pause n3 for 60% of the shortest suspicion timeout, until some member
   * has suspected it (so the refutation is really exercised). */
  int pause_ms = SUSPICION_MIN_MS * 6 / 10, rounds = 0;
  do {
    assert_int_equal(kill(f->k[2].pid, SIGSTOP), 0);
    kvdh_sleep_ms(pause_ms);
    assert_int_equal(kill(f->k[2].pid, SIGCONT), 0);
    kvdh_sleep_ms(2 * PROBE_MS);
  } while (!any_logged(f, N, "member_suspect", "n3") && ++rounds < 5);
  assert_true(any_logged(f, N, "member_suspect", "n3"));
  /* Let every suspicion timer that could fire, fire. */
  kvdh_sleep_ms(SUSPICION_MAX_MULT * SUSPICION_MIN_MS + 1000);
  if (any_logged(f, N, "member_dead", "n3"))
    fail_msg("n3 was declared dead although paused only %d ms", pause_ms);
  wait_state(f, N, 2, "n3", "alive", 5000);
  member_of(&f->k[0], "n3", st, sizeof st, &inc1, NULL);
  if (inc1 <= inc0)
    fail_msg("n3 did not refute: incarnation %llu -> %llu",
             (unsigned long long)inc0, (unsigned long long)inc1);
  IT_END(f);
}

/* Paused past the suspicion timeout it is declared dead; resumed, it learns
 * that from a push-pull (or the others' reconnect attempts) and refutes. */
static void test_paused_past_timeout_comes_back(void **state) {
  IT_BEGIN(f, 90);
  const int first[] = {0, -1};
  for (int i = 0; i < 3; i++) {
    configure(f, i,
              "push-pull-interval = 1500\ngossip-to-the-dead = 1000\n");
    start(f, i, i ? first : NULL);
  }
  wait_alive_count(f, 3, -1, 3, 10000);
  assert_int_equal(kill(f->k[2].pid, SIGSTOP), 0);
  wait_state(f, 2, -1, "n3", "dead", DETECT_BOUND_MS);
  kvdh_sleep_ms(1500); /* past gossip-to-the-dead: nobody tells it */
  assert_int_equal(kill(f->k[2].pid, SIGCONT), 0);
  wait_state(f, 3, 2, "n3", "alive", 10000);
  wait_alive_count(f, 3, -1, 3, 10000);
  IT_END(f);
}

static void test_sixth_joins_through_one_seed(void **state) {
  IT_BEGIN(f, 120);
  start_cluster(f, N);
  put_keys(&f->k[3], "k", 300);
  configure(f, 5, NULL);
  start(f, 5, (const int[]){1, -1}); /* knows only n2 */
  wait_alive_count(f, N + 1, -1, N + 1, 10000);
  wait_converged(f, N + 1, 300, 30000);
  IT_END(f);
}

static void test_sigterm_is_a_leave(void **state) {
  IT_BEGIN(f, 60);
  start_cluster(f, N);
  assert_int_equal(kvdh_stop(&f->k[1], SIGTERM, 10000), 0);
  assert_true(kvdh_log_contains(&f->k[1], "event=left "));
  wait_state(f, N, 1, "n2", "left", 5000);
  kvdh_sleep_ms(SUSPICION_MAX_MULT * SUSPICION_MIN_MS / 2);
  wait_state(f, N, 1, "n2", "left", 1000);
  assert_false(any_logged(f, N, "member_dead", "n2"));
  IT_END(f);
}

/* Starts node i expecting it to exit on its own (after it listened, since
 * the refusal comes from the seed); returns its wait status. */
static int start_until_exit(it_fixture *f, int i) {
  kvdh *p = &f->k[i];
  it_start(p);
  uint64_t end = mono_ms() + 10000;
  int st = 0;
  while (kvdh_alive(p, &st)) {
    if (mono_ms() > end) fail_msg("%s is still running", names[i]);
    kvdh_sleep_ms(50);
  }
  return st;
}

static void test_join_refused_with_reason(void **state) {
  IT_BEGIN(f, 60);
  configure(f, 0, NULL);
  start(f, 0, NULL);
  snprintf(joinarg[1], sizeof joinarg[1], "127.0.0.1:%d", f->k[0].peer_port);
  /* Another cluster name, same key. */
  configure(f, 1, NULL);
  it_args(&f->k[1], "--config", conf[1], "--cluster", "elsewhere", "--join",
          joinarg[1], NULL);
  int st = start_until_exit(f, 1);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  assert_true(kvdh_log_contains(&f->k[1], "event=join_refused"));
  assert_true(kvdh_log_contains(&f->k[1], "cluster name differs"));
  assert_true(kvdh_log_contains(&f->k[0], "event=peer_refused"));
  /* Another segment count. */
  configure(f, 2, NULL);
  it_args(&f->k[2], "--config", conf[2], "--segments", "1024", "--join",
          joinarg[1], NULL);
  st = start_until_exit(f, 2);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  assert_true(kvdh_log_contains(&f->k[2], "segment count differs"));
  /* The seed is unharmed and alone. */
  assert_int_equal(member_of(&f->k[0], NULL, NULL, 0, NULL, "alive"), 1);
  IT_END(f);
}

static void test_away_longer_than_grace_refused(void **state) {
  IT_BEGIN(f, 60);
  configure(f, 0, "tombstone-grace = 1\n");
  start(f, 0, NULL);
  configure(f, 1, "tombstone-grace = 1\n");
  start(f, 1, (const int[]){0, -1});
  wait_alive_count(f, 2, -1, 2, 10000);
  kvdh_sleep_ms(500); /* a contact time is written */
  assert_int_equal(kvdh_stop(&f->k[1], SIGTERM, 10000), 0);
  kvdh_sleep_ms(2500);
  int st = kvdh_start_expect_exit(&f->k[1], 10000);
  assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
  assert_true(kvdh_log_contains(&f->k[1], "event=rejoin_refused"));
  /* Reset as the message says: an empty data directory starts. */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->k[1].data);
  assert_int_equal(system(cmd), 0);
  start(f, 1, (const int[]){0, -1});
  wait_alive_count(f, 2, -1, 2, 10000);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_kill9_detected_then_rejoins),
      IT_TEST(test_sigstop_refutes_never_dead),
      IT_TEST(test_paused_past_timeout_comes_back),
      IT_TEST(test_sixth_joins_through_one_seed),
      IT_TEST(test_sigterm_is_a_leave),
      IT_TEST(test_join_refused_with_reason),
      IT_TEST(test_away_longer_than_grace_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
