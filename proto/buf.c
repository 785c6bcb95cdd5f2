/*
 * Allocation wrappers and byte-buffer helpers (see buf.h for why allocation
 * failure is fatal).
 */
#include "proto/buf.h"

#include <stdlib.h>
#include <string.h>

#include "proto/kv_err.h"

void *kv_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) kv_panic("out of memory allocating %zu bytes", n);
  return p;
}

void *kv_calloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) kv_panic("out of memory allocating %zu x %zu bytes", count, size);
  return p;
}

void *kv_realloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) kv_panic("out of memory reallocating to %zu bytes", n);
  return q;
}

kv_buf kv_buf_dup(const void *p, size_t len) {
  kv_buf b = {NULL, 0};
  if (len == 0) return b;
  b.data = kv_malloc(len);
  memcpy(b.data, p, len);
  b.len = len;
  return b;
}

void kv_buf_free(kv_buf *b) {
  if (!b) return;
  free(b->data);
  b->data = NULL;
  b->len = 0;
}

int kv_buf_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  size_t n = alen < blen ? alen : blen;
  int c = n ? memcmp(a, b, n) : 0;
  if (c != 0) return c;
  return alen < blen ? -1 : alen > blen ? 1 : 0;
}
