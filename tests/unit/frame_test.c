/*
 * Unit tests for proto/frame: the length-prefixed frame reader and header
 * encoding. Streams are checked however they are split (byte at a time, all
 * at once, random chunks), oversize lengths must be refused as soon as their
 * header is complete and stay refused, and pending() must account for every
 * buffered byte. The run's seed is printed at start; KV_SEED=<n> replays a
 * run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/frame.h"
#include "tests/unit/testutil.h"

/* The run's seed (testutil.h); each randomised test derives its own stream
 * from it. */
static uint64_t seed;

/* A stream of frames: the encoded bytes plus where each frame ends. The body
 * of frame i is the byte pattern body_byte(i, j), so any misplaced byte shows
 * up as a mismatch. */
typedef struct stream {
  uint8_t *bytes;
  size_t len;
  size_t n;
  size_t *body_len;
  size_t *end; /* offset just past frame i in bytes */
} stream;

static uint8_t body_byte(size_t frame, size_t j) {
  return (uint8_t)(frame * 31 + j * 7 + (j >> 8));
}

static stream make_stream(const size_t *lens, size_t n) {
  stream s = {NULL, 0, n, kv_malloc(n * sizeof(size_t)),
              kv_malloc(n * sizeof(size_t))};
  for (size_t i = 0; i < n; i++)
    s.len += KV_FRAME_HEADER + lens[i];
  s.bytes = kv_malloc(s.len);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    kv_frame_header(s.bytes + off, lens[i]);
    off += KV_FRAME_HEADER;
    for (size_t j = 0; j < lens[i]; j++)
      s.bytes[off++] = body_byte(i, j);
    s.body_len[i] = lens[i];
    s.end[i] = off;
  }
  return s;
}

static void stream_free(stream *s) {
  free(s->bytes);
  free(s->body_len);
  free(s->end);
}

static void assert_frame(const stream *s, size_t i, const kv_buf *f) {
  assert_int_equal(f->len, s->body_len[i]);
  for (size_t j = 0; j < f->len; j++)
    if (f->data[j] != body_byte(i, j))
      fail_msg("frame %zu byte %zu: got %u want %u", i, j, f->data[j],
               body_byte(i, j));
}

/* Takes every whole frame now buffered, checking each against the stream;
 * *got counts frames taken so far. Then checks that exactly the frames whose
 * last byte was fed have come out and that pending() holds the rest. */
static void drain(kv_frame_reader *r, const stream *s, size_t fed,
                  size_t *got) {
  kv_buf f;
  int rc;
  while ((rc = kv_frame_reader_next(r, &f)) == KV_OK) {
    assert_true(*got < s->n);
    assert_frame(s, *got, &f);
    (*got)++;
  }
  assert_int_equal(rc, KV_AGAIN);
  size_t complete = 0;
  while (complete < s->n && s->end[complete] <= fed)
    complete++;
  assert_int_equal(*got, complete);
  size_t consumed = complete ? s->end[complete - 1] : 0;
  assert_int_equal(kv_frame_reader_pending(r), fed - consumed);
}

/* Sizes around the reader's first 4 KiB buffer and its doubling, so that
 * growth and compaction both happen mid-frame. */
static const size_t mixed[] = {0,    1,    5,    0,  300, 4091, 4092,
                               4096, 4097, 9000, 17, 0,   1000, 70000};
#define NMIXED (sizeof mixed / sizeof mixed[0])

static void test_frame_new_free(void **state) {
  (void)state;
  kv_frame_reader *r = kv_frame_reader_new(16);
  assert_non_null(r);
  assert_int_equal(kv_frame_reader_pending(r), 0);
  kv_buf f;
  assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
  assert_int_equal(kv_frame_reader_feed(r, NULL, 0), KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), 0);
  kv_frame_reader_free(r);
  kv_frame_reader_free(NULL);
}

static void test_frame_header_encoding(void **state) {
  (void)state;
  static const struct {
    size_t len;
    uint8_t hdr[4];
  } cases[] = {
      {0, {0, 0, 0, 0}},
      {1, {0, 0, 0, 1}},
      {255, {0, 0, 0, 0xff}},
      {256, {0, 0, 1, 0}},
      {0x01020304, {1, 2, 3, 4}},
      {0x7fffffff, {0x7f, 0xff, 0xff, 0xff}},
      {0xffffffff, {0xff, 0xff, 0xff, 0xff}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t hdr[KV_FRAME_HEADER + 1] = {0, 0, 0, 0, 0xee};
    kv_frame_header(hdr, cases[i].len);
    assert_memory_equal(hdr, cases[i].hdr, KV_FRAME_HEADER);
    assert_int_equal(hdr[KV_FRAME_HEADER], 0xee);
    assert_int_equal(kv_get_be32(hdr), cases[i].len);
  }
}

static void header_too_long(void) {
  uint8_t hdr[KV_FRAME_HEADER];
  kv_frame_header(hdr, (size_t)UINT32_MAX + 1);
}

/* A body of 2^32 bytes or more cannot be framed: a broken invariant, so it
 * must abort rather than silently truncate the length. */
static void test_frame_header_too_long_panics(void **state) {
  (void)state;
  if (SIZE_MAX <= UINT32_MAX) skip();
  assert_panics(header_too_long);
}

static void test_frame_byte_at_a_time(void **state) {
  (void)state;
  stream s = make_stream(mixed, NMIXED);
  kv_frame_reader *r = kv_frame_reader_new(1 << 20);
  size_t got = 0;
  for (size_t i = 0; i < s.len; i++) {
    assert_int_equal(kv_frame_reader_feed(r, s.bytes + i, 1), KV_OK);
    drain(r, &s, i + 1, &got);
  }
  assert_int_equal(got, NMIXED);
  assert_int_equal(kv_frame_reader_pending(r), 0);
  kv_frame_reader_free(r);
  stream_free(&s);
}

static void test_frame_pipelined_in_one_feed(void **state) {
  (void)state;
  size_t lens[1000];
  for (size_t i = 0; i < 1000; i++)
    lens[i] = (i * 37) % 101;
  stream s = make_stream(lens, 1000);
  kv_frame_reader *r = kv_frame_reader_new(100);
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.len), KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), s.len);
  size_t got = 0;
  drain(r, &s, s.len, &got);
  assert_int_equal(got, 1000);
  assert_int_equal(kv_frame_reader_pending(r), 0);

  /* The reader is reusable after being drained. */
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.end[2]), KV_OK);
  got = 0;
  drain(r, &s, s.end[2], &got);
  assert_int_equal(got, 3);
  kv_frame_reader_free(r);
  stream_free(&s);
}

/* Random split points, and frames taken only now and then, so that bytes
 * pile up across feeds and the buffer is compacted with frames in flight. */
static void test_frame_random_chunks(void **state) {
  (void)state;
  test_rng rg = {seed};
  for (int round = 0; round < 50; round++) {
    size_t lens[200];
    for (size_t i = 0; i < 200; i++)
      lens[i] = test_rng_below(&rg, 8) == 0 ? test_rng_below(&rg, 9000)
                                            : test_rng_below(&rg, 64);
    stream s = make_stream(lens, 200);
    kv_frame_reader *r = kv_frame_reader_new(9000);
    size_t fed = 0, got = 0;
    while (fed < s.len) {
      size_t n = 1 + test_rng_below(&rg, test_rng_below(&rg, 4) ? 64 : 20000);
      if (n > s.len - fed) n = s.len - fed;
      assert_int_equal(kv_frame_reader_feed(r, s.bytes + fed, n), KV_OK);
      fed += n;
      if (test_rng_below(&rg, 3) == 0 || fed == s.len) drain(r, &s, fed, &got);
    }
    assert_int_equal(got, 200);
    assert_int_equal(kv_frame_reader_pending(r), 0);
    kv_frame_reader_free(r);
    stream_free(&s);
  }
}

static void test_frame_zero_length(void **state) {
  (void)state;
  kv_frame_reader *r = kv_frame_reader_new(0);
  uint8_t hdr[KV_FRAME_HEADER];
  kv_frame_header(hdr, 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(kv_frame_reader_feed(r, hdr, sizeof hdr), KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), 12);
  kv_buf f;
  for (int i = 0; i < 3; i++) {
    f.len = 99;
    assert_int_equal(kv_frame_reader_next(r, &f), KV_OK);
    assert_int_equal(f.len, 0);
    assert_int_equal(kv_frame_reader_pending(r), (size_t)(2 - i) * 4);
  }
  assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);

  /* With a maximum of 0, any body at all is too large. */
  kv_frame_header(hdr, 1);
  assert_int_equal(kv_frame_reader_feed(r, hdr, sizeof hdr),
                   KV_FRAME_TOO_LARGE);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);
  kv_frame_reader_free(r);
}

static void test_frame_exactly_max_accepted(void **state) {
  (void)state;
  static const size_t maxes[] = {1, 100, 4096, 65536};
  for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
    size_t lens[] = {maxes[m], 0, maxes[m]};
    stream s = make_stream(lens, 3);
    kv_frame_reader *r = kv_frame_reader_new(maxes[m]);
    assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.len), KV_OK);
    size_t got = 0;
    drain(r, &s, s.len, &got);
    assert_int_equal(got, 3);
    kv_frame_reader_free(r);
    stream_free(&s);
  }
}

/* max+1 is refused by the feed that completes its header, however the
 * header is split, with no body byte sent; every later call says the same. */
static void test_frame_over_max_refused_at_header(void **state) {
  (void)state;
  const size_t max = 1000;
  uint8_t hdr[KV_FRAME_HEADER];
  kv_frame_header(hdr, max + 1);
  for (size_t split = 0; split < KV_FRAME_HEADER; split++) {
    kv_frame_reader *r = kv_frame_reader_new(max);
    kv_buf f;
    if (split > 0) {
      assert_int_equal(kv_frame_reader_feed(r, hdr, split), KV_OK);
      assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
      assert_int_equal(kv_frame_reader_pending(r), split);
    }
    assert_int_equal(
        kv_frame_reader_feed(r, hdr + split, KV_FRAME_HEADER - split),
        KV_FRAME_TOO_LARGE);
    assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);

    /* Sticky: nothing more is buffered, and even a valid frame is refused. */
    size_t pending = kv_frame_reader_pending(r);
    uint8_t body[64] = {0};
    assert_int_equal(kv_frame_reader_feed(r, body, sizeof body),
                     KV_FRAME_TOO_LARGE);
    assert_int_equal(kv_frame_reader_pending(r), pending);
    uint8_t ok[KV_FRAME_HEADER + 1];
    kv_frame_header(ok, 1);
    ok[KV_FRAME_HEADER] = 'x';
    assert_int_equal(kv_frame_reader_feed(r, ok, sizeof ok),
                     KV_FRAME_TOO_LARGE);
    assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);
    assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);
    kv_frame_reader_free(r);
  }
}

/* An oversize header behind good frames: the frames that arrived before it
 * are still delivered, in order, and the error comes right after them,
 * without waiting for any of the oversize body. */
static void test_frame_over_max_after_good_frames(void **state) {
  (void)state;
  size_t lens[] = {10, 0, 10};
  stream s = make_stream(lens, 3);
  kv_frame_reader *r = kv_frame_reader_new(10);
  uint8_t bad[KV_FRAME_HEADER];
  kv_frame_header(bad, 0xffffffffu);
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.len), KV_OK);
  assert_int_equal(kv_frame_reader_feed(r, bad, sizeof bad), KV_OK);
  kv_buf f;
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(kv_frame_reader_next(r, &f), KV_OK);
    assert_frame(&s, i, &f);
  }
  /* Taking the last good frame exposed the bad header: body bytes arriving
   * now are refused without being buffered. */
  assert_int_equal(kv_frame_reader_pending(r), KV_FRAME_HEADER);
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.len), KV_FRAME_TOO_LARGE);
  assert_int_equal(kv_frame_reader_pending(r), KV_FRAME_HEADER);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, s.len), KV_FRAME_TOO_LARGE);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_FRAME_TOO_LARGE);
  kv_frame_reader_free(r);
  stream_free(&s);
}

/* A maximum at or above 2^32 admits every length a header can carry. */
static void test_frame_huge_max_admits_any_header(void **state) {
  (void)state;
  kv_frame_reader *r = kv_frame_reader_new(SIZE_MAX);
  uint8_t hdr[KV_FRAME_HEADER];
  kv_frame_header(hdr, 0xffffffffu);
  assert_int_equal(kv_frame_reader_feed(r, hdr, sizeof hdr), KV_OK);
  kv_buf f;
  assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
  kv_frame_reader_free(r);
}

static void test_frame_truncated_stays_again(void **state) {
  (void)state;
  size_t lens[] = {10};
  stream s = make_stream(lens, 1);
  kv_frame_reader *r = kv_frame_reader_new(64);
  kv_buf f;
  for (size_t cut = 0; cut < s.len; cut++) {
    if (cut > 0)
      assert_int_equal(kv_frame_reader_feed(r, s.bytes + cut - 1, 1), KV_OK);
    for (int again = 0; again < 3; again++)
      assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
    assert_int_equal(kv_frame_reader_pending(r), cut);
  }
  assert_int_equal(kv_frame_reader_feed(r, s.bytes + s.len - 1, 1), KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), s.len);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_OK);
  assert_frame(&s, 0, &f);
  assert_int_equal(kv_frame_reader_pending(r), 0);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
  kv_frame_reader_free(r);
  stream_free(&s);
}

/* pending() after each step of a frame and a half: header and body bytes
 * count until their frame is taken, the partial frame's bytes after that. */
static void test_frame_pending_accounting(void **state) {
  (void)state;
  size_t lens[] = {6, 20};
  stream s = make_stream(lens, 2);
  kv_frame_reader *r = kv_frame_reader_new(64);
  kv_buf f;
  size_t part = s.end[0] + 7;
  assert_int_equal(kv_frame_reader_feed(r, s.bytes, part), KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), part);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_OK);
  assert_frame(&s, 0, &f);
  assert_int_equal(kv_frame_reader_pending(r), 7);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_AGAIN);
  assert_int_equal(kv_frame_reader_pending(r), 7);
  assert_int_equal(kv_frame_reader_feed(r, s.bytes + part, s.len - part),
                   KV_OK);
  assert_int_equal(kv_frame_reader_pending(r), s.len - s.end[0]);
  assert_int_equal(kv_frame_reader_next(r, &f), KV_OK);
  assert_frame(&s, 1, &f);
  assert_int_equal(kv_frame_reader_pending(r), 0);
  kv_frame_reader_free(r);
  stream_free(&s);
}

int main(void) {
  seed = test_seed("frame_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_frame_new_free),
      cmocka_unit_test(test_frame_header_encoding),
      cmocka_unit_test(test_frame_header_too_long_panics),
      cmocka_unit_test(test_frame_byte_at_a_time),
      cmocka_unit_test(test_frame_pipelined_in_one_feed),
      cmocka_unit_test(test_frame_random_chunks),
      cmocka_unit_test(test_frame_zero_length),
      cmocka_unit_test(test_frame_exactly_max_accepted),
      cmocka_unit_test(test_frame_over_max_refused_at_header),
      cmocka_unit_test(test_frame_over_max_after_good_frames),
      cmocka_unit_test(test_frame_huge_max_admits_any_header),
      cmocka_unit_test(test_frame_truncated_stays_again),
      cmocka_unit_test(test_frame_pending_accounting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
