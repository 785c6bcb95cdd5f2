/*
 * Fuzz harness for the native client protocol's input path: the frame reader
 * (proto/frame.h), then protobuf-c's Request decoding of every frame, as
 * kvd's native listener does (and Response decoding, as libkvclient does).
 *
 * Input: byte 0 picks how the stream is split into feeds (fuzz_chunk),
 * byte 1 the reader's max_frame (64 * byte 1), byte 2 how many times the
 * rest is repeated to make the stream (1 + byte 2 - 0xe0 from 0xe0 up, else
 * once: long streams, cheaply, so that the reader's buffer grows past
 * 64 KiB, compacts and is freed again), the rest the bytes.
 * Checked: the reader hands out exactly the frames a plain model of the
 * format finds, however the stream is split, then FRAME_TOO_LARGE at the
 * first oversized header (as soon as its 4 bytes are fed) and never anything
 * after it; what it buffers after draining is less than one whole frame;
 * every frame that decodes as a Request or Response re-encodes (unknown
 * fields aside) to bytes that decode and re-encode to the same bytes.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/frame.h"
#include "proto/kv.pb-c.h"
#include "tests/fuzz/fuzz.h"

static void decode_frame(const kv_buf *f) {
  Kvpb__Request *req = kvpb__request__unpack(NULL, f->len, f->data);
  if (req) {
    FUZZ_CHECK(req->body_case == KVPB__REQUEST__BODY__NOT_SET ||
                   protobuf_c_message_descriptor_get_field(
                       &kvpb__request__descriptor, req->body_case),
               "request body case %d", (int)req->body_case);
    FUZZ_CHECK_REPACK(Kvpb__Request, kvpb__request, req);
    kvpb__request__free_unpacked(req, NULL);
  }
  Kvpb__Response *resp = kvpb__response__unpack(NULL, f->len, f->data);
  if (resp) {
    FUZZ_CHECK_REPACK(Kvpb__Response, kvpb__response, resp);
    kvpb__response__free_unpacked(resp, NULL);
  }
}

/* The longest stream: 32 repeats of 16 KiB (longer inputs are cut; the
 * fuzzer's inputs are at most 4 KiB unless -max_len says otherwise). Every
 * frame takes at least 4 bytes. */
#define MAX_STREAM (32 * 16384)
#define MAX_FRAMES (MAX_STREAM / KV_FRAME_HEADER)

/* The model: where each frame of s starts and how long it is, and whether
 * the stream then hits an oversized header. */
typedef struct model {
  size_t n;
  size_t off[MAX_FRAMES], len[MAX_FRAMES];
  bool too_large;
  size_t bad_end; /* too_large: the offset just past the oversized header */
  size_t rest;    /* bytes after the last whole frame (no error) */
} model;

static void model_of(const uint8_t *s, size_t len, size_t max, model *m) {
  size_t at = 0;
  m->n = 0;
  m->too_large = false;
  while (len - at >= KV_FRAME_HEADER) {
    uint32_t flen = kv_get_be32(s + at);
    if (flen > max) {
      m->too_large = true;
      m->bad_end = at + KV_FRAME_HEADER;
      break;
    }
    if (len - at - KV_FRAME_HEADER < flen) break;
    m->off[m->n] = at + KV_FRAME_HEADER;
    m->len[m->n] = flen;
    m->n++;
    at += KV_FRAME_HEADER + flen;
  }
  m->rest = len - at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  uint8_t chunking = data[0];
  size_t max_frame = (size_t)data[1] << 6;
  size_t repeat = data[2] >= 0xe0 ? 1 + (size_t)(data[2] & 31) : 1;
  size_t part = size - 3;
  if (part > MAX_STREAM / repeat) part = MAX_STREAM / repeat;
  size_t len = part * repeat;
  uint8_t *s = kv_malloc(len ? len : 1);
  for (size_t i = 0; i < repeat; i++)
    if (part) memcpy(s + i * part, data + 3, part);

  static model m;
  model_of(s, len, max_frame, &m);

  kv_frame_reader *r = kv_frame_reader_new(max_frame);
  uint64_t rs = chunking;
  size_t fed = 0, got = 0;
  int last = KV_AGAIN;
  while (fed < len && last == KV_AGAIN) {
    size_t n = fuzz_chunk(chunking, &rs, len - fed);
    int rc = kv_frame_reader_feed(r, s + fed, n);
    fed += n;
    FUZZ_CHECK(rc == KV_OK || rc == KV_FRAME_TOO_LARGE, "feed: %s",
               kv_err_name(rc));
    kv_buf f;
    while ((rc = kv_frame_reader_next(r, &f)) == KV_OK) {
      FUZZ_CHECK(got < m.n, "frame %zu beyond the model's %zu", got, m.n);
      FUZZ_CHECK(m.off[got] + m.len[got] <= fed,
                 "frame %zu out before its last byte was fed", got);
      FUZZ_CHECK_BYTES(f.data, f.len, s + m.off[got], m.len[got],
                       "frame body differs from the model's");
      /* The frames of a repeated stream repeat too: decoding the first few
       * hundred is enough, and keeps long streams fast. */
      if (got < 256) decode_frame(&f);
      got++;
    }
    FUZZ_CHECK(rc == KV_AGAIN || rc == KV_FRAME_TOO_LARGE, "next: %s",
               kv_err_name(rc));
    last = rc;
    /* Refused as soon as the header is here, before its body is buffered. */
    if (m.too_large && fed >= m.bad_end)
      FUZZ_CHECK(rc == KV_FRAME_TOO_LARGE,
                 "oversized header fed (%zu of %zu bytes) but not refused", fed,
                 len);
    if (rc == KV_AGAIN)
      FUZZ_CHECK(kv_frame_reader_pending(r) < KV_FRAME_HEADER + max_frame,
                 "%zu bytes buffered after draining (max_frame %zu)",
                 kv_frame_reader_pending(r), max_frame);
  }
  FUZZ_CHECK(got == m.n, "got %zu frames, the model %zu", got, m.n);
  if (m.too_large) {
    FUZZ_CHECK(last == KV_FRAME_TOO_LARGE, "oversized header not refused");
    /* Sticky: nothing more comes out, whatever is fed. */
    FUZZ_CHECK(kv_frame_reader_feed(r, s, len) == KV_FRAME_TOO_LARGE,
               "error not sticky in feed");
    kv_buf f;
    FUZZ_CHECK(kv_frame_reader_next(r, &f) == KV_FRAME_TOO_LARGE,
               "error not sticky in next");
  } else {
    FUZZ_CHECK(last == KV_AGAIN, "unexpected %s", kv_err_name(last));
    FUZZ_CHECK(kv_frame_reader_pending(r) == m.rest,
               "pending %zu, the model's rest %zu", kv_frame_reader_pending(r),
               m.rest);
  }
  kv_frame_reader_free(r);
  free(s);
  return 0;
}
