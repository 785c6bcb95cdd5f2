/*
 * Fuzz harness for the RESP parser and reply builders (proto/resp.h), the
 * Redis-compatible port's input path.
 *
 * Input: byte 0 picks how the stream is split into feeds (fuzz_chunk),
 * byte 1 the limits (0: the defaults; else small ones derived from it), the
 * rest is the byte stream. Checked:
 *  - the commands handed out, the final outcome (error code and message, or
 *    the bytes still pending) are the same whether the stream is fed all at
 *    once or in chunks;
 *  - every command has at least one argument and respects the limits, and
 *    the parser's memory stays within a constant plus a multiple of what was
 *    fed (an announced count or length allocates nothing up front);
 *  - every command, re-encoded with the reply builders as an array of bulk
 *    strings, parses back to the same command (builders and parser agree);
 *  - a simple-string or error reply built from an argument is one line:
 *    the argument up to its first NUL with CR and LF turned into spaces.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/resp.h"
#include "tests/fuzz/fuzz.h"

/* A run's transcript: each command as argc and (len, bytes) per argument,
 * appended to one buffer so that two runs compare with one memcmp. */
static void log_cmd(kv_resp_out *log, const kv_resp_cmd *c) {
  uint8_t n[8];
  kv_put_be64(n, c->argc);
  kv_resp_out_append(log, n, 8);
  for (size_t i = 0; i < c->argc; i++) {
    kv_put_be64(n, c->argv[i].len);
    kv_resp_out_append(log, n, 8);
    kv_resp_out_append(log, c->argv[i].data, c->argv[i].len);
  }
}

typedef struct run {
  kv_resp_out log; /* commands */
  int rc;          /* final: KV_AGAIN or the sticky error */
  const char *msg; /* copied below before the parser is freed */
  char msgbuf[128];
  size_t pending;
} run;

static void check_cmd(const kv_resp_cmd *c, const kv_resp_limits *lim) {
  FUZZ_CHECK(c->argc >= 1, "a command with no arguments");
  if (!lim) return;
  FUZZ_CHECK(c->argc <= lim->max_args, "%zu arguments, limit %zu", c->argc,
             lim->max_args);
  size_t max_arg =
      lim->max_bulk > lim->max_inline ? lim->max_bulk : lim->max_inline;
  for (size_t i = 0; i < c->argc; i++)
    FUZZ_CHECK(c->argv[i].len <= max_arg, "argument of %zu bytes, limit %zu",
               c->argv[i].len, max_arg);
}

/* Takes every command now available; returns the status that stopped it. */
static int drain(kv_resp_parser *p, run *r, const kv_resp_limits *lim,
                 size_t fed) {
  kv_resp_cmd c;
  int rc;
  while ((rc = kv_resp_parser_next(p, &c)) == KV_OK) {
    check_cmd(&c, lim);
    log_cmd(&r->log, &c);
  }
  size_t mem = kv_resp_parser_memory(p);
  size_t bound = 8192 + 2 * fed + 24 * (16 + fed);
  FUZZ_CHECK(mem <= bound, "parser holds %zu bytes after %zu fed", mem, fed);
  return rc;
}

static void parse(const uint8_t *s, size_t len, uint8_t chunking,
                  const kv_resp_limits *lim, run *r) {
  kv_resp_parser *p = kv_resp_parser_new(lim);
  kv_resp_out_init(&r->log);
  uint64_t rs = chunking;
  size_t fed = 0;
  int rc = KV_AGAIN;
  while (fed < len) {
    size_t n = fuzz_chunk(chunking, &rs, len - fed);
    rc = kv_resp_parser_feed(p, s + fed, n);
    fed += n;
    FUZZ_CHECK(rc == KV_OK || rc == KV_BAD_REQUEST || rc == KV_FRAME_TOO_LARGE,
               "feed: %s", kv_err_name(rc));
    rc = drain(p, r, lim, fed);
    FUZZ_CHECK(rc == KV_AGAIN || rc == KV_BAD_REQUEST ||
                   rc == KV_FRAME_TOO_LARGE,
               "next: %s", kv_err_name(rc));
    if (rc != KV_AGAIN) break;
  }
  r->rc = rc;
  const char *msg = kv_resp_parser_error(p);
  FUZZ_CHECK((msg != NULL) == (rc != KV_AGAIN), "error message '%s' for %s",
             msg ? msg : "(null)", kv_err_name(rc));
  if (msg) {
    /* Sticky: both calls keep failing the same way. */
    FUZZ_CHECK(kv_resp_parser_feed(p, "PING\r\n", 6) == rc, "sticky feed");
    kv_resp_cmd c;
    FUZZ_CHECK(kv_resp_parser_next(p, &c) == rc, "sticky next");
    snprintf(r->msgbuf, sizeof r->msgbuf, "%s", msg);
    r->msg = r->msgbuf;
  } else {
    r->msg = NULL;
  }
  r->pending = kv_resp_parser_pending(p);
  kv_resp_parser_free(p);
}

/* Re-encodes the commands of a transcript as arrays of bulk strings and
 * checks that they parse back to the same transcript. */
static void check_reencode(const kv_resp_out *log) {
  kv_resp_out enc;
  kv_resp_out_init(&enc);
  for (size_t at = 0; at < log->len;) {
    size_t argc = (size_t)kv_get_be64(log->data + at);
    at += 8;
    kv_resp_add_array(&enc, argc);
    for (size_t i = 0; i < argc; i++) {
      size_t n = (size_t)kv_get_be64(log->data + at);
      kv_resp_add_bulk(&enc, log->data + at + 8, n);
      at += 8 + n;
    }
  }
  run back;
  parse(enc.data, enc.len, 0, NULL, &back);
  FUZZ_CHECK(back.rc == KV_AGAIN && back.pending == 0,
             "re-encoded commands: %s (%s), %zu bytes pending",
             kv_err_name(back.rc), back.msg ? back.msg : "no error",
             back.pending);
  FUZZ_CHECK_BYTES(back.log.data, back.log.len, log->data, log->len,
                   "re-encoded commands parse differently");
  kv_resp_out_fini(&back.log);
  kv_resp_out_fini(&enc);
}

/* A simple-string or error reply built from text is the prefix, the text up
 * to its first NUL with CR and LF as spaces, then CR LF. */
static void check_line_reply(const kv_buf *arg) {
  char *text = kv_malloc(arg->len + 1);
  if (arg->len) memcpy(text, arg->data, arg->len);
  text[arg->len] = 0;
  size_t tl = strlen(text);
  kv_resp_out o;
  kv_resp_out_init(&o);
  kv_resp_add_simple(&o, text);
  size_t simple = o.len;
  kv_resp_add_error(&o, text);
  FUZZ_CHECK(simple == tl + 3 && o.len == 2 * (tl + 3),
             "reply lengths %zu, %zu for %zu bytes of text", simple,
             o.len - simple, tl);
  for (int k = 0; k < 2; k++) {
    const uint8_t *line = o.data + k * (tl + 3);
    FUZZ_CHECK(line[0] == (k ? '-' : '+'), "reply type byte %02x", line[0]);
    for (size_t i = 0; i < tl; i++) {
      uint8_t want =
          text[i] == '\r' || text[i] == '\n' ? ' ' : (uint8_t)text[i];
      FUZZ_CHECK(line[1 + i] == want, "reply byte %zu: %02x, want %02x", i,
                 line[1 + i], want);
    }
    FUZZ_CHECK(line[tl + 1] == '\r' && line[tl + 2] == '\n',
               "reply not ended by CR LF");
  }
  /* Consuming the first reply leaves exactly the second. */
  kv_resp_out_consume(&o, simple);
  FUZZ_CHECK(o.len == tl + 3 && o.data[0] == '-', "consume");
  kv_resp_out_fini(&o);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint8_t chunking = data[0], lb = data[1];
  kv_resp_limits small = {
      .max_args = 1 + (lb & 7u),
      .max_bulk = 1 + ((lb >> 3) & 7u) * 5,
      .max_inline = 1 + ((lb >> 3) & 7u) * 7,
      .max_command = 12 + (size_t)(lb >> 6) * 25,
  };
  const kv_resp_limits *lim = lb ? &small : NULL;
  const uint8_t *s = data + 2;
  size_t len = size - 2;

  run whole, chunked;
  parse(s, len, 0, lim, &whole);
  parse(s, len, chunking, lim, &chunked);
  FUZZ_CHECK_BYTES(chunked.log.data, chunked.log.len, whole.log.data,
                   whole.log.len, "commands depend on how the stream is split");
  FUZZ_CHECK(chunked.rc == whole.rc, "outcome %s chunked, %s whole",
             kv_err_name(chunked.rc), kv_err_name(whole.rc));
  FUZZ_CHECK(!whole.msg || strcmp(whole.msg, chunked.msg) == 0,
             "error '%s' chunked, '%s' whole", chunked.msg, whole.msg);
  if (whole.rc == KV_AGAIN)
    FUZZ_CHECK(chunked.pending == whole.pending,
               "%zu bytes pending chunked, %zu whole", chunked.pending,
               whole.pending);

  check_reencode(&whole.log);

  /* The line replies, for the first argument of each command. */
  for (size_t at = 0; at < whole.log.len;) {
    size_t argc = (size_t)kv_get_be64(whole.log.data + at);
    at += 8;
    for (size_t i = 0; i < argc; i++) {
      size_t n = (size_t)kv_get_be64(whole.log.data + at);
      if (i == 0) {
        kv_buf a = {whole.log.data + at + 8, n};
        check_line_reply(&a);
      }
      at += 8 + n;
    }
  }
  kv_resp_out_fini(&whole.log);
  kv_resp_out_fini(&chunked.log);
  return 0;
}
