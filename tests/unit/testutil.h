/*
 * Shared helpers for randomised tests: one seed per run, taken from KV_SEED
 * when set (to replay a failure) or from the clock, printed at start so any
 * failure can be rerun; and a small deterministic PRNG (splitmix64), since
 * rand() is neither seedable per test nor the same across libcs.
 */
#ifndef KV_TESTUTIL_H
#define KV_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct test_rng {
  uint64_t s;
} test_rng;

static inline uint64_t test_rng_next(test_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. The modulo bias is irrelevant for tests. */
static inline uint64_t test_rng_below(test_rng *r, uint64_t n) {
  return test_rng_next(r) % n;
}

/* The run's seed: KV_SEED if set, else time-based; printed once. */
static inline uint64_t test_seed(const char *prog) {
  const char *env = getenv("KV_SEED");
  uint64_t seed;
  if (env && *env) {
    seed = strtoull(env, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
  }
  printf("%s seed=%llu (rerun with KV_SEED=%llu)\n", prog,
         (unsigned long long)seed, (unsigned long long)seed);
  fflush(stdout);
  return seed;
}

/* With cmocka included: broken invariants must abort (kv_panic,
 * kv_assert). test_aborts runs fn(arg) in a forked child, with cmocka's
 * SIGABRT handler reset there (it would turn the abort into a failed test
 * that then carries on in the child) and stderr silenced, and says whether
 * the child died of SIGABRT. */
#ifdef CMOCKA_H_
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

static inline bool test_aborts(void (*fn)(void *), void *arg) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGABRT, SIG_DFL);
    if (!freopen("/dev/null", "w", stderr)) _exit(3);
    fn(arg);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static inline void call_void_fn(void *fn) { ((void (*)(void))fn)(); }

/* Asserts that fn() aborts. */
static inline void assert_panics(void (*fn)(void)) {
  assert_true(test_aborts(call_void_fn, (void *)fn));
}
#endif

#endif
