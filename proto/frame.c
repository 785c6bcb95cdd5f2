/*
 * Frame reader. Bytes accumulate in one buffer; consumed frames advance a read
 * offset and the buffer is compacted lazily, so a pipelined burst of small
 * frames costs one memmove, not one per frame. A buffer grown for a large
 * frame is freed once it is empty again, so an idle connection does not
 * keep the memory of its largest request.
 */
#include "proto/frame.h"

#include <stdlib.h>
#include <string.h>

#define KEEP_CAP (64u << 10) /* an empty buffer larger than this is freed */

struct kv_frame_reader {
  uint8_t *buf;
  size_t cap, start, end; /* live bytes are buf[start..end) */
  size_t max_frame;
  int err; /* sticky */
};

kv_frame_reader *kv_frame_reader_new(size_t max_frame) {
  kv_frame_reader *r = kv_calloc(1, sizeof *r);
  r->max_frame = max_frame;
  return r;
}

void kv_frame_reader_free(kv_frame_reader *r) {
  if (!r) return;
  free(r->buf);
  free(r);
}

/* Checks the header of the next frame, if there is one, so that an oversize
 * length is refused before its body is buffered. */
static int check_header(kv_frame_reader *r) {
  if (r->end - r->start < KV_FRAME_HEADER) return KV_OK;
  uint32_t len = kv_get_be32(r->buf + r->start);
  if (len > r->max_frame) r->err = KV_FRAME_TOO_LARGE;
  return r->err;
}

/* Frees an empty oversized buffer. Only where the last frame's view may be
 * invalidated: at the start of _feed and _next. */
static void shrink(kv_frame_reader *r) {
  if (r->start == r->end && r->cap > KEEP_CAP) {
    free(r->buf);
    r->buf = NULL;
    r->cap = r->start = r->end = 0;
  }
}

int kv_frame_reader_feed(kv_frame_reader *r, const void *p, size_t len) {
  if (r->err) return r->err;
  if (len == 0) return KV_OK;
  shrink(r);
  if (r->start > 0 && r->end + len > r->cap) {
    memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
  }
  if (r->end + len > r->cap) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->end + len)
      cap *= 2;
    r->buf = kv_realloc(r->buf, cap);
    r->cap = cap;
  }
  memcpy(r->buf + r->end, p, len);
  r->end += len;
  return check_header(r);
}

int kv_frame_reader_next(kv_frame_reader *r, kv_buf *frame) {
  if (r->err) return r->err;
  shrink(r);
  size_t avail = r->end - r->start;
  if (avail < KV_FRAME_HEADER) return KV_AGAIN;
  uint32_t len = kv_get_be32(r->buf + r->start);
  if (len > r->max_frame) return r->err = KV_FRAME_TOO_LARGE;
  if (avail - KV_FRAME_HEADER < len) return KV_AGAIN;
  frame->data = r->buf + r->start + KV_FRAME_HEADER;
  frame->len = len;
  r->start += KV_FRAME_HEADER + len;
  if (r->start == r->end) r->start = r->end = 0;
  /* The following frame's header may already be here: refuse it early. */
  (void)check_header(r);
  return KV_OK;
}

size_t kv_frame_reader_pending(const kv_frame_reader *r) {
  return r->end - r->start;
}

void kv_frame_header(uint8_t hdr[KV_FRAME_HEADER], size_t len) {
  kv_assert(len <= UINT32_MAX);
  kv_put_be32(hdr, (uint32_t)len);
}
