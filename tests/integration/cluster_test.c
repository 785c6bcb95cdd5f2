/*
 * Replication integration tests: real kvd processes on loopback joined into
 * a cluster with a sealed peer transport. A write reaches every replica
 * within a second by rumors alone; a replica that was down is repaired by
 * anti-entropy alone (same Merkle root, same reads, no deleted key back);
 * concurrent context-less puts become the same siblings everywhere and a put
 * with the merged context resolves them; concurrent counters converge to the
 * exact sum; and a replica with the wrong cluster key is not admitted.
 */
#include <time.h>

#include "tests/integration/itest.h"

#define KEY_A "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n"
#define KEY_B "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n"

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Per-node argument storage (kvdh keeps pointers). */
static char keyfile[IT_NKVD][256], joinarg[IT_NKVD][256];

/* Starts node i with the given key and extra settings, joining the peers
 * started before it (their Hellos make the earlier ones connect back). */
static void start_node(it_fixture *f, int i, const char *key,
                       const char *rumors, const char *ae) {
  kvdh *p = &f->k[i];
  assert_int_equal(kvdh_prepare(p), 0);
  snprintf(keyfile[i], sizeof keyfile[i], "%s/cluster.key", p->dir);
  FILE *fp = fopen(keyfile[i], "w");
  assert_non_null(fp);
  fputs(key, fp);
  fclose(fp);
  size_t used = 0;
  joinarg[i][0] = 0;
  for (int j = 0; j < i; j++)
    if (f->k[j].peer_port)
      used += (size_t)snprintf(joinarg[i] + used, sizeof joinarg[i] - used,
                               "%s127.0.0.1:%d", used ? "," : "",
                               f->k[j].peer_port);
  if (used)
    it_args(p, "--sync", "none", "--cluster-key-file", keyfile[i], "--rumors",
            rumors, "--anti-entropy", ae, "--ae-interval", "200", "--name",
            i == 0   ? "n1"
            : i == 1 ? "n2"
            : i == 2 ? "n3"
                     : "n4",
            "--join", joinarg[i], NULL);
  else
    it_args(p, "--sync", "none", "--cluster-key-file", keyfile[i], "--rumors",
            rumors, "--anti-entropy", ae, "--ae-interval", "200", "--name",
            "n1", NULL);
  it_start(p);
  assert_true(p->peer_port > 0);
}

/* Waits until node i sees want alive peers. */
static void wait_alive(kvdh *p, size_t want) {
  uint64_t end = mono_ms() + 10000;
  for (;;) {
    kvc_conn *c = it_conn(p);
    kvc_result *r;
    assert_kvc(kvc_status(c, &r), KVC_OK);
    size_t alive = 0;
    const kvc_status_info *s = kvc_result_status_info(r);
    for (size_t i = 0; i < s->npeers; i++)
      alive += s->peers[i].alive;
    kvc_result_free(r);
    kvc_close(c);
    if (alive >= want) return;
    if (mono_ms() > end) fail_msg("only %zu of %zu peers alive", alive, want);
    sleep_ms(20);
  }
}

static void start_cluster(it_fixture *f, int n, const char *rumors,
                          const char *ae) {
  for (int i = 0; i < n; i++)
    start_node(f, i, KEY_A, rumors, ae);
  for (int i = 0; i < n; i++)
    wait_alive(&f->k[i], (size_t)n - 1);
}

static void root_of(kvdh *p, uint8_t root[16], uint64_t *keys) {
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  assert_int_equal(s->merkle_root_len, 16);
  memcpy(root, s->merkle_root, 16);
  if (keys) *keys = s->keys;
  kvc_result_free(r);
  kvc_close(c);
}

/* Waits until every node in [0, n) has the same Merkle root. */
static void wait_converged(it_fixture *f, int n, int timeout_ms) {
  uint64_t end = mono_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint8_t r0[16], ri[16];
    root_of(&f->k[0], r0, NULL);
    bool same = true;
    for (int i = 1; i < n && same; i++) {
      root_of(&f->k[i], ri, NULL);
      same = memcmp(r0, ri, 16) == 0;
    }
    if (same) return;
    if (mono_ms() > end) {
      for (int i = 0; i < n; i++)
        kvdh_dump_log(&f->k[i]);
      fail_msg("replicas did not converge within %d ms", timeout_ms);
    }
    sleep_ms(50);
  }
}

static void test_cluster_rumors_reach_every_replica(void **state) {
  IT_BEGIN(f, 60);
  start_cluster(f, 3, "yes", "no");
  kvc_conn *c[3];
  for (int i = 0; i < 3; i++)
    c[i] = it_conn(&f->k[i]);
  for (int w = 0; w < 30; w++) {
    int src = w % 3;
    char key[32], val[32];
    snprintf(key, sizeof key, "r%d", w);
    snprintf(val, sizeof val, "v%d", w);
    assert_kvc(kvc_put(c[src], key, strlen(key), val, strlen(val), NULL, 0),
               KVC_OK);
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 3; i++) {
      for (;;) {
        kvc_result *r;
        int rc = kvc_get(c[i], key, strlen(key), &r);
        bool seen = rc == KVC_OK && it_has_sibling(r, val);
        kvc_result_free(r);
        if (seen) break;
        if (mono_ms() - t0 > 1000)
          fail_msg("%s written on node %d not on node %d after 1 s", key,
                   src + 1, i + 1);
        sleep_ms(2);
      }
    }
  }
  for (int i = 0; i < 3; i++)
    kvc_close(c[i]);
  IT_END(f);
}

static void
test_cluster_anti_entropy_repairs_a_returning_replica(void **state) {
  IT_BEGIN(f, 120);
  start_cluster(f, 3, "yes", "yes");
  kvc_conn *c0 = it_conn(&f->k[0]);
  char key[32], val[32];
  /* Keys every replica has, 1,000 of which are deleted while n3 is down. */
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "old%d", i);
    assert_kvc(kvc_put(c0, key, strlen(key), "x", 1, NULL, 0), KVC_OK);
  }
  wait_converged(f, 3, 20000);
  assert_int_equal(kvdh_stop(&f->k[2], SIGTERM, 10000), 0);

  kvc_conn *c1 = it_conn(&f->k[1]);
  for (int i = 0; i < 10000; i++) {
    snprintf(key, sizeof key, "new%d", i);
    snprintf(val, sizeof val, "v%d", i);
    kvc_conn *c = i % 2 ? c1 : c0;
    assert_kvc(kvc_put(c, key, strlen(key), val, strlen(val), NULL, 0), KVC_OK);
  }
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "old%d", i);
    assert_kvc(kvc_del(i % 2 ? c1 : c0, key, strlen(key), NULL, 0), KVC_OK);
  }
  for (int i = 0; i < 100; i++) {
    int64_t v;
    assert_kvc(kvc_incr(i % 2 ? c1 : c0, "ctr", 3, 2, false, &v), KVC_OK);
  }
  kvc_close(c0);
  kvc_close(c1);
  wait_converged(f, 2, 20000);

  /* n3 comes back with rumors off: only anti-entropy can repair it. */
  it_args(&f->k[2], "--sync", "none", "--cluster-key-file", keyfile[2],
          "--rumors", "no", "--anti-entropy", "yes", "--ae-interval", "200",
          "--name", "n3", "--join", joinarg[2], NULL);
  it_start(&f->k[2]);
  wait_converged(f, 3, 60000);

  kvc_conn *c2 = it_conn(&f->k[2]);
  for (int i = 0; i < 10000; i += 97) {
    kvc_result *r;
    snprintf(key, sizeof key, "new%d", i);
    snprintf(val, sizeof val, "v%d", i);
    assert_kvc(kvc_get(c2, key, strlen(key), &r), KVC_OK);
    assert_true(it_has_sibling(r, val));
    kvc_result_free(r);
  }
  for (int i = 0; i < 1000; i++) {
    kvc_result *r;
    snprintf(key, sizeof key, "old%d", i);
    for (int n = 0; n < 3; n++) {
      kvc_conn *c = n == 2 ? c2 : it_conn(&f->k[n]);
      int rc = kvc_get(c, key, strlen(key), &r);
      kvc_result_free(r);
      if (n != 2) kvc_close(c);
      if (rc != KVC_NOTFOUND)
        fail_msg("deleted %s is back on node %d", key, n + 1);
    }
  }
  kvc_result *r;
  assert_kvc(kvc_get(c2, "ctr", 3, &r), KVC_OK);
  assert_int_equal(kvc_result_counter(r), 200);
  kvc_result_free(r);
  kvc_close(c2);
  IT_END(f);
}

/* Only n1 runs exchanges and only it has the data: the repair must come
 * from its pushes, which n2 has to merge although they belong to n1's
 * exchange, not to one of its own. */
static void test_cluster_anti_entropy_pushes_repair_the_peer(void **state) {
  IT_BEGIN(f, 60);
  start_node(f, 0, KEY_A, "no", "yes");
  start_node(f, 1, KEY_A, "no", "no");
  wait_alive(&f->k[0], 1);
  wait_alive(&f->k[1], 1);
  kvc_conn *c = it_conn(&f->k[0]);
  char key[32];
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof key, "only-on-n1-%d", i);
    assert_kvc(kvc_put(c, key, strlen(key), "v", 1, NULL, 0), KVC_OK);
  }
  kvc_close(c);
  wait_converged(f, 2, 20000);
  c = it_conn(&f->k[1]);
  kvc_result *r;
  assert_kvc(kvc_get(c, "only-on-n1-199", 14, &r), KVC_OK);
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

static void
test_cluster_concurrent_puts_become_siblings_everywhere(void **state) {
  IT_BEGIN(f, 60);
  start_cluster(f, 3, "yes", "yes");
  kvc_conn *a = it_conn(&f->k[0]), *b = it_conn(&f->k[1]);
  assert_kvc(kvc_put(a, "s", 1, "from-a", 6, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(b, "s", 1, "from-b", 6, NULL, 0), KVC_OK);
  wait_converged(f, 3, 10000);
  for (int i = 0; i < 3; i++) {
    kvc_conn *c = it_conn(&f->k[i]);
    kvc_result *r;
    assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
    assert_int_equal(kvc_result_siblings(r), 2);
    assert_true(it_has_sibling(r, "from-a") && it_has_sibling(r, "from-b"));
    kvc_result_free(r);
    kvc_close(c);
  }
  /* Resolve with the merged context read on n3. */
  kvc_conn *c3 = it_conn(&f->k[2]);
  kvc_result *r;
  assert_kvc(kvc_get(c3, "s", 1, &r), KVC_OK);
  const uint8_t *ctx;
  size_t ctxlen;
  kvc_result_context(r, &ctx, &ctxlen);
  assert_kvc(kvc_put(c3, "s", 1, "merged", 6, ctx, ctxlen), KVC_OK);
  kvc_result_free(r);
  wait_converged(f, 3, 10000);
  for (int i = 0; i < 3; i++) {
    kvc_conn *c = it_conn(&f->k[i]);
    assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
    assert_int_equal(kvc_result_siblings(r), 1);
    assert_true(it_has_sibling(r, "merged"));
    kvc_result_free(r);
    kvc_close(c);
  }
  kvc_close(a);
  kvc_close(b);
  kvc_close(c3);
  IT_END(f);
}

static void
test_cluster_concurrent_counters_converge_to_exact_sum(void **state) {
  IT_BEGIN(f, 60);
  start_cluster(f, 3, "yes", "yes");
  kvc_conn *c[3];
  for (int i = 0; i < 3; i++)
    c[i] = it_conn(&f->k[i]);
  int64_t expect = 0;
  for (int round = 0; round < 300; round++) {
    int i = round % 3;
    int64_t d = (round % 7) - 2, v;
    assert_kvc(kvc_incr(c[i], "hits", 4, d, false, &v), KVC_OK);
    expect += d;
  }
  wait_converged(f, 3, 10000);
  for (int i = 0; i < 3; i++) {
    kvc_result *r;
    assert_kvc(kvc_get(c[i], "hits", 4, &r), KVC_OK);
    if (kvc_result_counter(r) != expect)
      fail_msg("node %d: %lld, expected %lld", i + 1,
               (long long)kvc_result_counter(r), (long long)expect);
    kvc_result_free(r);
    kvc_close(c[i]);
  }
  IT_END(f);
}

static void test_cluster_wrong_key_is_not_admitted(void **state) {
  IT_BEGIN(f, 60);
  start_cluster(f, 2, "yes", "yes");
  /* n3 has another key but joins both. */
  start_node(f, 2, KEY_B, "yes", "yes");
  kvc_conn *bad = it_conn(&f->k[2]);
  assert_kvc(kvc_put(bad, "intruder", 8, "x", 1, NULL, 0), KVC_OK);
  kvc_conn *good = it_conn(&f->k[0]);
  assert_kvc(kvc_put(good, "member", 6, "y", 1, NULL, 0), KVC_OK);
  sleep_ms(1500); /* several anti-entropy rounds */
  for (int i = 0; i < 2; i++) {
    kvc_conn *c = it_conn(&f->k[i]);
    kvc_result *r;
    assert_kvc(kvc_get(c, "intruder", 8, &r), KVC_NOTFOUND);
    kvc_result_free(r);
    assert_kvc(kvc_status(c, &r), KVC_OK);
    const kvc_status_info *s = kvc_result_status_info(r);
    assert_true(s->invalid_envelopes > 0);
    for (size_t p = 0; p < s->npeers; p++)
      if (s->peers[p].alive) assert_string_not_equal(s->peers[p].name, "n3");
    kvc_result_free(r);
    kvc_close(c);
  }
  kvc_result *r;
  assert_kvc(kvc_get(bad, "member", 6, &r), KVC_NOTFOUND);
  kvc_result_free(r);
  kvc_close(bad);
  kvc_close(good);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_cluster_rumors_reach_every_replica),
      IT_TEST(test_cluster_anti_entropy_repairs_a_returning_replica),
      IT_TEST(test_cluster_anti_entropy_pushes_repair_the_peer),
      IT_TEST(test_cluster_concurrent_puts_become_siblings_everywhere),
      IT_TEST(test_cluster_concurrent_counters_converge_to_exact_sum),
      IT_TEST(test_cluster_wrong_key_is_not_admitted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
