/*
 * The random source handed to the sans-I/O cores (DESIGN.md §7): they never
 * call rand() or getrandom(); the server seeds a kv_rng from the OS, the
 * simulator from its seed, so a simulated run is reproducible. splitmix64:
 * tiny, fast, and good enough for choosing peers and shuffles.
 */
#ifndef KV_RNG_H
#define KV_RNG_H

#include <stdint.h>

typedef struct kv_rng {
  uint64_t s;
} kv_rng;

static inline uint64_t kv_rng_next(kv_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n) for n > 0 (Lemire's multiply-shift; bias < 2^-32). */
static inline uint32_t kv_rng_below(kv_rng *r, uint32_t n) {
  return (uint32_t)(((kv_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

#endif
