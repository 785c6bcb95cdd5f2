/*
 * The anti-entropy Merkle tree (DESIGN.md §5), Tictac style: a key's
 * contribution is XXH3-128(key || object digest); a leaf (segment) is the XOR
 * of its keys' contributions and every inner node the XOR of its children.
 * Because XOR is its own inverse, a write updates the tree by XOR-ing
 * old ^ new into one leaf and its ancestors: O(depth), no rescans.
 *
 * Shape: 2^segment_bits leaves (segment_bits 4..24), fan-out 16 per level;
 * when segment_bits is not a multiple of 4 the root has fewer children.
 * Level 0 is the root and level depth-1 holds the leaves. A key's segment is
 * the top segment_bits bits of XXH3-64(key).
 *
 * Indices, levels and shapes passed in are trusted: an out-of-range one is a
 * broken invariant and panics. Anything from a peer (levels, node lists,
 * hash counts) must be checked by the caller before it reaches this API.
 * XOR leaves can in principle cancel (two changes with equal deltas under one
 * parent); with 128-bit hashes of distinct content this is negligible, and
 * the periodic exchange retries anyway.
 *
 * Pure: no I/O, clock or randomness; storage persists the leaves and the
 * event-loop thread owns the in-memory tree. Allocation failure panics.
 */
#ifndef KV_MERKLE_H
#define KV_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/kv_err.h"

#define KV_MERKLE_FANOUT 16
#define KV_MERKLE_DEFAULT_BITS 16
#define KV_MERKLE_MIN_BITS 4
#define KV_MERKLE_MAX_BITS 24

/* A node hash: 16 bytes, all zero for an empty subtree. */
typedef struct kv_hash {
  uint8_t b[16];
} kv_hash;

typedef struct kv_merkle kv_merkle;

/* An empty tree with 2^segment_bits leaves (*out NULL on error). KV_INVALID
 * when segment_bits is
 * outside KV_MERKLE_MIN_BITS..KV_MERKLE_MAX_BITS. Caller frees with
 * kv_merkle_free. */
KV_WARN_UNUSED int kv_merkle_new(unsigned segment_bits, kv_merkle **out);
void kv_merkle_free(kv_merkle *t); /* NULL does nothing */

unsigned kv_merkle_segment_bits(const kv_merkle *t);
uint32_t kv_merkle_segments(const kv_merkle *t);

/* Number of levels, root included (segment_bits 16 gives 5). */
unsigned kv_merkle_depth(const kv_merkle *t);

/* Number of nodes at level (1 at level 0, segments at depth-1). */
uint32_t kv_merkle_level_size(const kv_merkle *t, unsigned level);

/* The segment of key under segment_bits (no tree needed). */
uint32_t kv_merkle_segment_of(unsigned segment_bits, const void *key,
                              size_t len);

/* XXH3-128(key || digest), the key's contribution to its leaf. */
kv_hash kv_merkle_contribution(const void *key, size_t keylen,
                               const uint8_t digest[16]);

/* a ^= b. */
void kv_hash_xor(kv_hash *a, const kv_hash *b);
bool kv_hash_is_zero(const kv_hash *h);
bool kv_hash_equal(const kv_hash *a, const kv_hash *b);

/* XORs delta into leaf seg and all its ancestors. */
void kv_merkle_apply(kv_merkle *t, uint32_t seg, const kv_hash *delta);

/* Sets every leaf from leaves[0..segments) (e.g. as persisted) and recomputes
 * the inner levels. */
void kv_merkle_load_leaves(kv_merkle *t, const kv_hash *leaves);

kv_hash kv_merkle_root(const kv_merkle *t);

/* The hash of node idx at level (idx < level_size). */
kv_hash kv_merkle_node(const kv_merkle *t, unsigned level, uint32_t idx);

/* One step of a level-by-level comparison: for each node nodes[i] at level
 * (level < depth-1), compare its children with the peer's hashes of the same
 * children, given in theirs[] in order (children of nodes[0] first). Writes
 * the indices (at level+1) of differing children to out, in increasing order
 * within each parent, and returns how many (at most count*fan-out of the
 * level; out must have that room). */
size_t kv_merkle_diff_children(const kv_merkle *t, unsigned level,
                               const uint32_t *nodes, size_t count,
                               const kv_hash *theirs, uint32_t *out);

/* Number of children of a node at level (16, fewer under a small root, 0 at
 * the leaf level). */
uint32_t kv_merkle_fanout_at(const kv_merkle *t, unsigned level);

/* The differing segments of two trees of the same shape, found level by
 * level with kv_merkle_diff_children. Writes at most cap segments in
 * increasing order and returns the total number that differ. */
size_t kv_merkle_diff(const kv_merkle *a, const kv_merkle *b, uint32_t *out,
                      size_t cap);

#endif
