/*
 * Byte buffers and allocation. A kv_buf is a plain {data, len} value; whether
 * it owns its bytes is said by each function that takes or returns one.
 *
 * Allocation failure is treated as fatal (kv_panic), as Redis does: every size
 * that an outsider controls is bounded before anything is allocated, so running
 * out of memory means the machine is out of memory, not that input was hostile.
 */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_buf {
  uint8_t *data;
  size_t len;
} kv_buf;

/* malloc/calloc/realloc that never return NULL (they panic instead).
 * kv_malloc(0) returns a unique non-NULL pointer. Free with free(). */
void *kv_malloc(size_t n);
void *kv_calloc(size_t count, size_t size);
void *kv_realloc(void *p, size_t n);

/* A heap copy of len bytes at p (caller frees .data with free()). len == 0
 * gives {NULL, 0}. */
kv_buf kv_buf_dup(const void *p, size_t len);

/* Frees b->data and sets *b to {NULL, 0}. NULL or empty does nothing. */
void kv_buf_free(kv_buf *b);

/* Lexicographic byte comparison, shorter-is-smaller on a common prefix. */
int kv_buf_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* Big-endian helpers for framing and key prefixes. */
static inline void kv_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline uint32_t kv_get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static inline void kv_put_be64(uint8_t *p, uint64_t v) {
  kv_put_be32(p, (uint32_t)(v >> 32));
  kv_put_be32(p + 4, (uint32_t)v);
}

static inline uint64_t kv_get_be64(const uint8_t *p) {
  return (uint64_t)kv_get_be32(p) << 32 | kv_get_be32(p + 4);
}

#endif
