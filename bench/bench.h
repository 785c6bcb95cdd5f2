/*
 * Helpers shared by the benchmarks: a monotonic clock in nanoseconds, the
 * splitmix64 generator behind their fixed-seed key sequences, and latency
 * samples with nearest-rank percentiles. Header-only: each benchmark is one
 * program.
 */
#ifndef KV_BENCH_H
#define KV_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64 step: advances *s and returns the next value. */
static inline uint64_t bench_rng(uint64_t *s) {
  uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Latency samples in nanoseconds; zero-initialise, free v when done. */
typedef struct samples {
  uint64_t *v;
  size_t n, cap;
} samples;

static inline void add_sample(samples *s, uint64_t ns) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4096;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) {
      fprintf(stderr, "benchmark: out of memory\n");
      exit(1);
    }
  }
  s->v[s->n++] = ns;
}

static inline void append_samples(samples *to, const samples *from) {
  for (size_t i = 0; i < from->n; i++)
    add_sample(to, from->v[i]);
}

static inline int bench_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static inline void sort_samples(samples *s) {
  if (s->n) qsort(s->v, s->n, sizeof *s->v, bench_cmp_u64);
}

/* Nearest-rank percentile (p in 0..1) of sorted samples, in microseconds. */
static inline double pct_us(const samples *s, double p) {
  if (!s->n) return 0;
  size_t rank = (size_t)(p * (double)s->n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > s->n) rank = s->n;
  return (double)s->v[rank - 1] / 1e3;
}

#endif
