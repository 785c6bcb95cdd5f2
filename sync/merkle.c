/*
 * The Merkle tree keeps every level as one flat array of kv_hash, the levels
 * laid end to end in one allocation, root first. Node i at level L > 0 has
 * parent i / 16 at level L-1; this holds under a narrow root too, because a
 * level of at most 16 nodes all map to index 0. Invariant: every inner node is
 * the XOR of its children, which apply and load_leaves both preserve.
 */
#include "sync/merkle.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/buf.h"

/* Root plus one level per 4 bits, rounded up: 7 at KV_MERKLE_MAX_BITS. */
#define MAX_DEPTH (1 + (KV_MERKLE_MAX_BITS + 3) / 4)

/* Keys are at most 507 bytes, so a contribution's input fits on the stack;
 * anything longer takes the heap path rather than being refused. */
#define STACK_INPUT 1024

/* Parents handled per kv_merkle_diff_children call inside kv_merkle_diff,
 * which bounds its scratch space whatever the number of differences. */
#define DIFF_BATCH 256

struct kv_merkle {
  unsigned bits, depth;
  uint32_t size[MAX_DEPTH];
  kv_hash *level[MAX_DEPTH]; /* pointers into nodes */
  kv_hash *nodes;
};

int kv_merkle_new(unsigned segment_bits, kv_merkle **out) {
  *out = NULL;
  if (segment_bits < KV_MERKLE_MIN_BITS || segment_bits > KV_MERKLE_MAX_BITS)
    return KV_INVALID;

  /* Sizes are found leaves-up, because only the root may be narrow; they are
   * then stored root-first to match the level numbering. */
  uint32_t up[MAX_DEPTH];
  unsigned depth = 0;
  uint32_t s = (uint32_t)1 << segment_bits;
  up[depth++] = s;
  while (s > 1) {
    s = s <= KV_MERKLE_FANOUT ? 1 : s / KV_MERKLE_FANOUT;
    up[depth++] = s;
  }

  kv_merkle *t = kv_calloc(1, sizeof *t);
  t->bits = segment_bits;
  t->depth = depth;
  size_t total = 0;
  for (unsigned l = 0; l < depth; l++) {
    t->size[l] = up[depth - 1 - l];
    total += t->size[l];
  }
  t->nodes = kv_calloc(total, sizeof *t->nodes);
  kv_hash *p = t->nodes;
  for (unsigned l = 0; l < depth; l++) {
    t->level[l] = p;
    p += t->size[l];
  }
  *out = t;
  return KV_OK;
}

void kv_merkle_free(kv_merkle *t) {
  if (!t) return;
  free(t->nodes);
  free(t);
}

unsigned kv_merkle_segment_bits(const kv_merkle *t) { return t->bits; }

uint32_t kv_merkle_segments(const kv_merkle *t) {
  return t->size[t->depth - 1];
}

unsigned kv_merkle_depth(const kv_merkle *t) { return t->depth; }

uint32_t kv_merkle_level_size(const kv_merkle *t, unsigned level) {
  kv_assert(level < t->depth);
  return t->size[level];
}

uint32_t kv_merkle_fanout_at(const kv_merkle *t, unsigned level) {
  kv_assert(level < t->depth);
  if (level == t->depth - 1) return 0;
  return t->size[level + 1] / t->size[level];
}

uint32_t kv_merkle_segment_of(unsigned segment_bits, const void *key,
                              size_t len) {
  kv_assert(segment_bits >= KV_MERKLE_MIN_BITS &&
            segment_bits <= KV_MERKLE_MAX_BITS);
  return (uint32_t)(XXH3_64bits(key, len) >> (64 - segment_bits));
}

kv_hash kv_merkle_contribution(const void *key, size_t keylen,
                               const uint8_t digest[16]) {
  uint8_t stack[STACK_INPUT];
  uint8_t *in = keylen + 16 <= sizeof stack ? stack : kv_malloc(keylen + 16);
  if (keylen) memcpy(in, key, keylen);
  memcpy(in + keylen, digest, 16);
  XXH128_hash_t h = XXH3_128bits(in, keylen + 16);
  if (in != stack) free(in);

  /* The canonical form is big-endian, high half first: the byte order that
   * is persisted and sent to peers, independent of the host. */
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  kv_hash out;
  memcpy(out.b, c.digest, sizeof out.b);
  return out;
}

void kv_hash_xor(kv_hash *a, const kv_hash *b) {
  for (size_t i = 0; i < sizeof a->b; i++)
    a->b[i] ^= b->b[i];
}

bool kv_hash_is_zero(const kv_hash *h) {
  uint8_t acc = 0;
  for (size_t i = 0; i < sizeof h->b; i++)
    acc |= h->b[i];
  return acc == 0;
}

bool kv_hash_equal(const kv_hash *a, const kv_hash *b) {
  return memcmp(a->b, b->b, sizeof a->b) == 0;
}

void kv_merkle_apply(kv_merkle *t, uint32_t seg, const kv_hash *delta) {
  kv_assert(seg < kv_merkle_segments(t));
  uint32_t idx = seg;
  for (unsigned l = t->depth; l-- > 0;) {
    kv_hash_xor(&t->level[l][idx], delta);
    idx /= KV_MERKLE_FANOUT;
  }
}

void kv_merkle_load_leaves(kv_merkle *t, const kv_hash *leaves) {
  unsigned last = t->depth - 1;
  memcpy(t->level[last], leaves, t->size[last] * sizeof *leaves);
  for (unsigned l = last; l-- > 0;) {
    memset(t->level[l], 0, t->size[l] * sizeof *t->level[l]);
    for (uint32_t i = 0; i < t->size[l + 1]; i++)
      kv_hash_xor(&t->level[l][i / KV_MERKLE_FANOUT], &t->level[l + 1][i]);
  }
}

kv_hash kv_merkle_root(const kv_merkle *t) { return t->level[0][0]; }

kv_hash kv_merkle_node(const kv_merkle *t, unsigned level, uint32_t idx) {
  kv_assert(level < t->depth && idx < t->size[level]);
  return t->level[level][idx];
}

size_t kv_merkle_diff_children(const kv_merkle *t, unsigned level,
                               const uint32_t *nodes, size_t count,
                               const kv_hash *theirs, uint32_t *out) {
  kv_assert(level + 1 < t->depth);
  uint32_t fan = kv_merkle_fanout_at(t, level);
  const kv_hash *mine = t->level[level + 1];
  size_t n = 0;
  for (size_t i = 0; i < count; i++) {
    kv_assert(nodes[i] < t->size[level]);
    uint32_t first = nodes[i] * KV_MERKLE_FANOUT;
    for (uint32_t j = 0; j < fan; j++, theirs++)
      if (!kv_hash_equal(&mine[first + j], theirs)) out[n++] = first + j;
  }
  return n;
}

size_t kv_merkle_diff(const kv_merkle *a, const kv_merkle *b, uint32_t *out,
                      size_t cap) {
  kv_assert(a->bits == b->bits);
  kv_hash ra = kv_merkle_root(a), rb = kv_merkle_root(b);
  if (kv_hash_equal(&ra, &rb)) return 0;

  /* The differing nodes of the current level and of the next one. The leaf
   * level is never stored whole: its differences go straight to out, so the
   * lists only need the room of the widest inner level (depth is at least 2).
   */
  unsigned last = a->depth - 1;
  uint32_t inner = a->size[last - 1];
  uint32_t *cur = kv_malloc(inner * sizeof *cur);
  uint32_t *next = kv_malloc(inner * sizeof *next);
  kv_hash *theirs = kv_malloc(DIFF_BATCH * KV_MERKLE_FANOUT * sizeof *theirs);
  uint32_t *found = kv_malloc(DIFF_BATCH * KV_MERKLE_FANOUT * sizeof *found);
  size_t ncur = 1, total = 0;
  cur[0] = 0;

  for (unsigned l = 0; l < last; l++) {
    uint32_t fan = kv_merkle_fanout_at(a, l);
    size_t nnext = 0;
    for (size_t i = 0; i < ncur; i += DIFF_BATCH) {
      size_t batch = ncur - i < DIFF_BATCH ? ncur - i : DIFF_BATCH;
      /* Gather the peer's hashes exactly as a remote responder would send
       * them: all children of each requested node, in order. */
      size_t k = 0;
      for (size_t p = 0; p < batch; p++)
        for (uint32_t j = 0; j < fan; j++)
          theirs[k++] = b->level[l + 1][cur[i + p] * KV_MERKLE_FANOUT + j];
      size_t nf = kv_merkle_diff_children(a, l, cur + i, batch, theirs, found);
      if (l + 1 == last) {
        for (size_t f = 0; f < nf; f++, total++)
          if (total < cap) out[total] = found[f];
      } else {
        memcpy(next + nnext, found, nf * sizeof *found);
        nnext += nf;
      }
    }
    uint32_t *swap = cur;
    cur = next;
    next = swap;
    ncur = nnext;
  }

  free(cur);
  free(next);
  free(theirs);
  free(found);
  return total;
}
