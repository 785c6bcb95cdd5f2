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

#endif
