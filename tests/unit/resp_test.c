/*
 * Unit tests for proto/resp: the RESP2 command parser and the reply
 * builders. Streams of multibulk and inline commands must parse to the same
 * commands however they are split; every limit must be refused by the byte
 * that completes the offending header, before any payload, and stay refused;
 * malformed input must get Redis's message and never crash (run these under
 * ASan too); replies must be byte-exact. The run's seed is printed at start;
 * KV_SEED=<n> replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/resp.h"
#include "tests/unit/testutil.h"

/* The run's seed (testutil.h); each randomised test derives its own stream
 * from it. */
static uint64_t seed;

/* A string literal as (pointer, length), embedded NULs included. */
#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)
/* A string literal as an expected argument. */
#define ARG(s) ((kv_buf){(uint8_t *)(s), sizeof(s) - 1})

/* ---- Streams: encoded bytes plus what they must parse to ---- */

typedef struct tcmd {
  size_t argc;
  kv_buf *argv; /* owned copies */
} tcmd;

/* An item is a command or something the parser must skip (a blank line,
 * "*0"); end is the offset just past it in the stream. */
typedef struct item {
  size_t end;
  bool is_cmd;
} item;

typedef struct stream {
  kv_resp_out bytes;
  tcmd *cmds;
  size_t ncmds, cap_cmds;
  item *items;
  size_t nitems, cap_items;
} stream;

static tcmd tcmd_copy(size_t argc, const kv_buf *argv) {
  tcmd c = {argc, kv_malloc(argc * sizeof(kv_buf))};
  for (size_t i = 0; i < argc; i++)
    c.argv[i] = kv_buf_dup(argv[i].data, argv[i].len);
  return c;
}

static void tcmd_free(tcmd *c) {
  for (size_t i = 0; i < c->argc; i++)
    kv_buf_free(&c->argv[i]);
  free(c->argv);
}

static void stream_free(stream *s) {
  for (size_t i = 0; i < s->ncmds; i++)
    tcmd_free(&s->cmds[i]);
  free(s->cmds);
  free(s->items);
  kv_resp_out_fini(&s->bytes);
}

/* Records an item ending at the current end of the stream; a command is
 * taken over by the stream. */
static void end_item(stream *s, const tcmd *c) {
  if (s->nitems == s->cap_items) {
    s->cap_items = s->cap_items ? 2 * s->cap_items : 64;
    s->items = kv_realloc(s->items, s->cap_items * sizeof *s->items);
  }
  s->items[s->nitems++] = (item){s->bytes.len, c != NULL};
  if (!c) return;
  if (s->ncmds == s->cap_cmds) {
    s->cap_cmds = s->cap_cmds ? 2 * s->cap_cmds : 64;
    s->cmds = kv_realloc(s->cmds, s->cap_cmds * sizeof *s->cmds);
  }
  s->cmds[s->ncmds++] = *c;
}

/* Multibulk encoding, by the reply builders (whose bytes are checked on
 * their own below): a command is an array of bulk strings. */
static void enc_multibulk(stream *s, const tcmd *c) {
  kv_resp_add_array(&s->bytes, c->argc);
  for (size_t i = 0; i < c->argc; i++)
    kv_resp_add_bulk(&s->bytes, c->argv[i].data, c->argv[i].len);
  end_item(s, c);
}

/* Hand-written bytes that must parse to argc arguments (0: skipped). */
static void raw_item(stream *s, const uint8_t *b, size_t n, size_t argc,
                     const kv_buf *argv) {
  kv_resp_out_append(&s->bytes, b, n);
  if (argc == 0) {
    end_item(s, NULL);
  } else {
    tcmd c = tcmd_copy(argc, argv);
    end_item(s, &c);
  }
}

static bool blank(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
         c == '\f';
}

static void put_blanks(kv_resp_out *o, test_rng *r) {
  static const char blanks[] = "  \t \v\f\r";
  size_t n = 1 + test_rng_below(r, 3);
  for (size_t i = 0; i < n; i++)
    kv_resp_out_append(o, &blanks[test_rng_below(r, sizeof blanks - 1)], 1);
}

static void put_hex(kv_resp_out *o, test_rng *r, uint8_t b) {
  const char *digits =
      test_rng_below(r, 2) ? "0123456789abcdef" : "0123456789ABCDEF";
  char e[4] = {'\\', 'x', digits[b >> 4], digits[b & 15]};
  kv_resp_out_append(o, e, 4);
}

/* One argument inside "...", using every escape the parser knows. */
static void put_double_quoted(kv_resp_out *o, test_rng *r, const kv_buf *a) {
  kv_resp_out_append(o, "\"", 1);
  for (size_t j = 0; j < a->len; j++) {
    uint8_t b = a->data[j];
    const char *esc = NULL;
    switch (b) {
    case '"':
      esc = "\\\"";
      break;
    case '\\':
      esc = "\\\\";
      break;
    case '\n':
      esc = "\\n";
      break;
    case '\r':
      esc = test_rng_below(r, 2) ? "\\r" : NULL;
      break;
    case '\t':
      esc = "\\t";
      break;
    case '\a':
      esc = "\\a";
      break;
    case '\b':
      esc = "\\b";
      break;
    default:
      break;
    }
    if (esc) {
      kv_resp_out_append(o, esc, strlen(esc));
    } else if (test_rng_below(r, 8) == 0) {
      put_hex(o, r, b);
    } else if (b >= 'c' && b <= 'z' && !strchr("nrtbx", b) &&
               test_rng_below(r, 8) == 0) {
      /* A backslash before a byte with no escape meaning stands for it. */
      char e[2] = {'\\', (char)b};
      kv_resp_out_append(o, e, 2);
    } else {
      kv_resp_out_append(o, &b, 1); /* raw, even a CR or a NUL */
    }
  }
  kv_resp_out_append(o, "\"", 1);
}

/* An inline line for c, each argument bare, '...' or "..." at random where
 * that form can carry it. */
static void enc_inline(stream *s, const tcmd *c, test_rng *r) {
  kv_resp_out *o = &s->bytes;
  bool lead = test_rng_below(r, 4) == 0;
  if (lead) put_blanks(o, r);
  for (size_t i = 0; i < c->argc; i++) {
    const kv_buf *a = &c->argv[i];
    if (i > 0) put_blanks(o, r);
    /* A line starting with '*' would be read as multibulk. */
    bool bare = a->len > 0 && !(i == 0 && !lead && a->data[0] == '*');
    /* '...' has only the \' escape, so it cannot hold an LF (the line
     * would end) nor end in a backslash (\' would not close it). */
    bool single = !(a->len > 0 && a->data[a->len - 1] == '\\');
    for (size_t j = 0; j < a->len; j++) {
      uint8_t b = a->data[j];
      if (blank(b) || b == '"' || b == '\'') bare = false;
      if (b == '\n') single = false;
    }
    uint64_t form = test_rng_below(r, 3);
    if (form == 0 && bare) {
      kv_resp_out_append(o, a->data, a->len);
    } else if (form == 1 && single) {
      kv_resp_out_append(o, "'", 1);
      for (size_t j = 0; j < a->len; j++) {
        if (a->data[j] == '\'') kv_resp_out_append(o, "\\", 1);
        kv_resp_out_append(o, &a->data[j], 1);
      }
      kv_resp_out_append(o, "'", 1);
    } else {
      put_double_quoted(o, r, a);
    }
  }
  if (test_rng_below(r, 4) == 0) put_blanks(o, r);
  if (test_rng_below(r, 2))
    kv_resp_out_append(o, "\r\n", 2);
  else
    kv_resp_out_append(o, "\n", 1);
  end_item(s, c);
}

static uint8_t rand_byte(test_rng *r) {
  static const char special[] = "\r\n\"'\\ \t*$\0x";
  switch (test_rng_below(r, 4)) {
  case 0:
    return (uint8_t)test_rng_below(r, 256);
  case 1:
    return (uint8_t)special[test_rng_below(r, sizeof special - 1)];
  default:
    return (uint8_t)('a' + test_rng_below(r, 26));
  }
}

/* A random command; big ones have many or long arguments. */
static tcmd rand_cmd(test_rng *r, bool big) {
  tcmd c;
  c.argc = 1 + (size_t)test_rng_below(r, big ? 40 : 6);
  c.argv = kv_malloc(c.argc * sizeof(kv_buf));
  for (size_t i = 0; i < c.argc; i++) {
    size_t len = test_rng_below(r, 4) == 0 ? 0 : test_rng_below(r, 13);
    if (test_rng_below(r, 10) == 0) len = test_rng_below(r, 300);
    if (big && test_rng_below(r, 4) == 0) len = test_rng_below(r, 5000);
    c.argv[i].len = len;
    c.argv[i].data = kv_malloc(len);
    for (size_t j = 0; j < len; j++)
      c.argv[i].data[j] = rand_byte(r);
  }
  return c;
}

static const char *const skips[] = {"\r\n",   "\n",      " \t \r\n", "\t\n",
                                    "*0\r\n", "*-1\r\n", "*-3\r\n"};
#define NSKIPS (sizeof skips / sizeof skips[0])

static void rand_stream(stream *s, test_rng *r, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (test_rng_below(r, 10) == 0) {
      const char *k = skips[test_rng_below(r, NSKIPS)];
      raw_item(s, (const uint8_t *)k, strlen(k), 0, NULL);
    }
    bool big = test_rng_below(r, 10) == 0;
    tcmd c = rand_cmd(r, big);
    if (!big && test_rng_below(r, 3) == 0)
      enc_inline(s, &c, r);
    else
      enc_multibulk(s, &c);
  }
}

/* ---- Checking what comes out ---- */

static void assert_cmd(const tcmd *want, const kv_resp_cmd *got, size_t i) {
  if (got->argc != want->argc)
    fail_msg("command %zu: argc %zu, want %zu", i, got->argc, want->argc);
  for (size_t a = 0; a < want->argc; a++) {
    const kv_buf *g = &got->argv[a], *w = &want->argv[a];
    if (g->len != w->len || (w->len && memcmp(g->data, w->data, w->len)))
      fail_msg("command %zu arg %zu: got %zu bytes '%.*s', want %zu '%.*s'", i,
               a, g->len, (int)g->len, (const char *)g->data, w->len,
               (int)w->len, (const char *)w->data);
  }
}

/* Takes every command now available, checking each against the stream;
 * *got counts commands taken so far. Then checks that exactly the commands
 * whose last byte was fed have come out, and that pending() holds the bytes
 * after the last whole item (skipped items are consumed as they complete). */
static void drain(kv_resp_parser *p, const stream *s, size_t fed, size_t *got) {
  kv_resp_cmd c;
  int rc;
  while ((rc = kv_resp_parser_next(p, &c)) == KV_OK) {
    assert_true(*got < s->ncmds);
    assert_cmd(&s->cmds[*got], &c, *got);
    (*got)++;
  }
  if (rc != KV_AGAIN)
    fail_msg("next: %s (%s) after %zu of %zu bytes", kv_err_name(rc),
             kv_resp_parser_error(p), fed, s->bytes.len);
  size_t cmds = 0, consumed = 0;
  for (size_t i = 0; i < s->nitems && s->items[i].end <= fed; i++) {
    consumed = s->items[i].end;
    cmds += s->items[i].is_cmd;
  }
  assert_int_equal(*got, cmds);
  assert_int_equal(kv_resp_parser_pending(p), fed - consumed);
}

/* After a failure: the message is the one expected, and every later call
 * returns the same error without buffering anything, even for valid input. */
static void assert_sticky(kv_resp_parser *p, int err, const char *msg) {
  assert_non_null(kv_resp_parser_error(p));
  assert_string_equal(kv_resp_parser_error(p), msg);
  size_t pending = kv_resp_parser_pending(p);
  kv_resp_cmd c;
  assert_int_equal(kv_resp_parser_next(p, &c), err);
  assert_int_equal(kv_resp_parser_feed(p, LIT("PING\r\n")), err);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*1\r\n$4\r\nPING\r\n")), err);
  assert_int_equal(kv_resp_parser_pending(p), pending);
  assert_int_equal(kv_resp_parser_next(p, &c), err);
  assert_int_equal(kv_resp_parser_next(p, &c), err);
  assert_string_equal(kv_resp_parser_error(p), msg);
}

/* Feeds b one byte at a time, taking commands after each byte. Every byte
 * but the last must be accepted; the last must fail with err and msg, after
 * exactly ncmds commands. Then the failure must be sticky. */
static void refused_at_last_byte(const kv_resp_limits *lim, const uint8_t *b,
                                 size_t n, int err, const char *msg,
                                 size_t ncmds) {
  kv_resp_parser *p = kv_resp_parser_new(lim);
  size_t got = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = kv_resp_parser_feed(p, b + i, 1);
    kv_resp_cmd c;
    if (rc == KV_OK)
      while ((rc = kv_resp_parser_next(p, &c)) == KV_OK)
        got++;
    if (i + 1 < n && rc != KV_AGAIN)
      fail_msg("'%.*s': byte %zu of %zu gave %s (%s)", (int)n, b, i, n,
               kv_err_name(rc), kv_resp_parser_error(p));
    if (i + 1 == n && rc != err)
      fail_msg("'%.*s': last byte gave %s, want %s", (int)n, b, kv_err_name(rc),
               kv_err_name(err));
  }
  assert_int_equal(got, ncmds);
  assert_sticky(p, err, msg);
  kv_resp_parser_free(p);
}

/* The same bytes in one feed: the commands before the bad bytes come out,
 * then the error. */
static void refused_in_one_feed(const kv_resp_limits *lim, const uint8_t *b,
                                size_t n, int err, const char *msg,
                                size_t ncmds) {
  kv_resp_parser *p = kv_resp_parser_new(lim);
  size_t got = 0;
  kv_resp_cmd c;
  int rc = kv_resp_parser_feed(p, b, n);
  if (rc == KV_OK)
    while ((rc = kv_resp_parser_next(p, &c)) == KV_OK)
      got++;
  if (rc != err)
    fail_msg("'%.*s': got %s, want %s", (int)n, b, kv_err_name(rc),
             kv_err_name(err));
  assert_int_equal(got, ncmds);
  assert_sticky(p, err, msg);
  kv_resp_parser_free(p);
}

static void refused(const kv_resp_limits *lim, const uint8_t *b, size_t n,
                    int err, const char *msg, size_t ncmds) {
  refused_at_last_byte(lim, b, n, err, msg, ncmds);
  refused_in_one_feed(lim, b, n, err, msg, ncmds);
}

/* Feeds b whole and expects exactly the commands given, each as argc
 * C-string arguments in a row of args. */
static void parses_to(const kv_resp_limits *lim, const uint8_t *b, size_t n,
                      size_t ncmds, const size_t *argc, const kv_buf *args) {
  kv_resp_parser *p = kv_resp_parser_new(lim);
  assert_int_equal(kv_resp_parser_feed(p, b, n), KV_OK);
  kv_resp_cmd c;
  for (size_t i = 0; i < ncmds; i++) {
    int rc = kv_resp_parser_next(p, &c);
    if (rc != KV_OK)
      fail_msg("'%.*s' command %zu: %s (%s)", (int)n, b, i, kv_err_name(rc),
               kv_resp_parser_error(p));
    tcmd want = {argc[i], (kv_buf *)args};
    assert_cmd(&want, &c, i);
    args += argc[i];
  }
  assert_int_equal(kv_resp_parser_next(p, &c), KV_AGAIN);
  assert_int_equal(kv_resp_parser_pending(p), 0);
  kv_resp_parser_free(p);
}

/* ---- Parser: lifecycle and well-formed input ---- */

static void test_resp_new_free(void **state) {
  (void)state;
  kv_resp_limits zero = {0};
  const kv_resp_limits *lims[] = {NULL, &zero};
  for (size_t i = 0; i < 2; i++) {
    kv_resp_parser *p = kv_resp_parser_new(lims[i]);
    assert_non_null(p);
    assert_int_equal(kv_resp_parser_pending(p), 0);
    assert_null(kv_resp_parser_error(p));
    kv_resp_cmd c = {99, NULL};
    assert_int_equal(kv_resp_parser_next(p, &c), KV_AGAIN);
    assert_int_equal(c.argc, 99);
    assert_int_equal(kv_resp_parser_feed(p, NULL, 0), KV_OK);
    assert_int_equal(kv_resp_parser_next(p, &c), KV_AGAIN);
    assert_true(kv_resp_parser_memory(p) > 0);
    kv_resp_parser_free(p);
  }
  kv_resp_parser_free(NULL);
}

static void test_resp_multibulk(void **state) {
  (void)state;
  const size_t argc[] = {3, 1};
  const kv_buf args[] = {ARG("SET"), ARG("key"), ARG("hello"), ARG("PING")};
  parses_to(NULL,
            LIT("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nhello\r\n"
                "*1\r\n$4\r\nPING\r\n"),
            2, argc, args);
}

static void test_resp_empty_bulk(void **state) {
  (void)state;
  const size_t argc[] = {3, 1};
  const kv_buf args[] = {ARG("SET"), ARG(""), ARG(""), ARG("")};
  parses_to(NULL,
            LIT("*3\r\n$3\r\nSET\r\n$0\r\n\r\n$0\r\n\r\n*1\r\n$0\r\n\r\n"), 2,
            argc, args);
}

/* Bulk payloads are taken by length: NULs, CR LF and protocol characters
 * inside them are data. */
static void test_resp_binary_safe_bulk(void **state) {
  (void)state;
  const size_t argc[] = {3};
  const kv_buf args[] = {ARG("SET"), ARG("k\0y"),
                         ARG("\r\n*1\r\n$4\r\nPING\r\n\0\xff\r")};
  parses_to(NULL,
            LIT("*3\r\n$3\r\nSET\r\n$3\r\nk\0y\r\n"
                "$19\r\n\r\n*1\r\n$4\r\nPING\r\n\0\xff\r\r\n"),
            1, argc, args);
}

/* Inline commands are split like Redis's sdssplitargs: blanks separate,
 * "..." takes escapes, '...' takes only \', the line may end in LF or CR LF,
 * and blank lines are skipped. */
static void test_resp_inline(void **state) {
  (void)state;
  const size_t argc[] = {1, 3, 2, 3, 2, 2, 2, 2, 1, 2};
  const kv_buf args[] = {
      ARG("PING"),
      ARG("SET"),
      ARG("a"),
      ARG("b"),
      ARG("GET"),
      ARG("a"),
      ARG("SET"),
      ARG("k"),
      ARG("hello world"),
      ARG("ECHO"),
      ARG("A\0\n\r\t\a\b\"\\q"),
      ARG("ECHO"),
      ARG("it's \\n"),
      ARG("ECHO"),
      ARG(""),
      ARG("ECHO"),
      ARG("ab c"),
      ARG("*x"),
      ARG("ECHO"),
      ARG("a\0b"),
  };
  parses_to(NULL,
            LIT("PING\r\n"
                "SET a b\n"
                "\r\n"
                "\n"
                "   \t \r\n"
                "  GET\t\ta  \r\n"
                "SET k \"hello world\"\r\n"
                "ECHO \"\\x41\\x00\\n\\r\\t\\a\\b\\\"\\\\\\q\"\r\n"
                "ECHO 'it\\'s \\n'\n"
                "ECHO \"\"\r\n"
                "ECHO a\"b c\"\r\n"
                " *x\r\n"
                "ECHO\va\0b\r\n"),
            10, argc, args);
}

/* Redis skips "*0" and "*-N" as empty commands, as it skips blank lines;
 * so does the parser, rather than failing the connection. */
static void test_resp_empty_commands_skipped(void **state) {
  (void)state;
  const size_t argc[] = {1, 1};
  const kv_buf args[] = {ARG("PING"), ARG("PING")};
  parses_to(NULL,
            LIT("*0\r\n*-1\r\n*-10\r\n\r\n*1\r\n$4\r\nPING\r\n*0\r\nPING\r\n"
                "*-1\r\n"),
            2, argc, args);
}

static void fixed_stream(stream *s) {
  static const char *const set[] = {"SET", "key", "value"};
  kv_buf a[3];
  for (size_t i = 0; i < 3; i++)
    a[i] = (kv_buf){(uint8_t *)set[i], strlen(set[i])};
  tcmd c = tcmd_copy(3, a);
  enc_multibulk(s, &c);
  kv_buf ping = ARG("PING");
  raw_item(s, LIT("PING\r\n"), 1, &ping);
  raw_item(s, LIT("\r\n"), 0, NULL);
  kv_buf hw[] = {ARG("SET"), ARG("k"), ARG("hello world")};
  raw_item(s, LIT("SET k \"hello world\"\n"), 3, hw);
  kv_buf bin[] = {ARG("SET"), ARG(""), ARG("a\0\r\nb")};
  c = tcmd_copy(3, bin);
  enc_multibulk(s, &c);
  raw_item(s, LIT("*0\r\n"), 0, NULL);
  kv_buf sq[] = {ARG("ECHO"), ARG("it's")};
  raw_item(s, LIT("ECHO 'it\\'s'\r\n"), 2, sq);
  kv_buf hex[] = {ARG("ECHO"), ARG("A\0\n")};
  raw_item(s, LIT("ECHO \"\\x41\\x00\\n\"\r\n"), 2, hex);
  raw_item(s, LIT("*-1\r\n"), 0, NULL);
  kv_buf big[2] = {ARG("ECHO"), {kv_malloc(5000), 5000}};
  for (size_t i = 0; i < 5000; i++)
    big[1].data[i] = (uint8_t)(i * 7);
  c = tcmd_copy(2, big);
  free(big[1].data);
  enc_multibulk(s, &c);
}

static void test_resp_byte_at_a_time(void **state) {
  (void)state;
  stream s = {0};
  fixed_stream(&s);
  kv_resp_parser *p = kv_resp_parser_new(NULL);
  size_t got = 0;
  for (size_t i = 0; i < s.bytes.len; i++) {
    assert_int_equal(kv_resp_parser_feed(p, s.bytes.data + i, 1), KV_OK);
    drain(p, &s, i + 1, &got);
  }
  assert_int_equal(got, s.ncmds);
  assert_int_equal(kv_resp_parser_pending(p), 0);
  kv_resp_parser_free(p);
  stream_free(&s);
}

/* What redis-benchmark does: many small commands in one read. The caller
 * may also rewrite a command's bytes in place (folding case) without
 * disturbing what follows. */
static void test_resp_pipelined_in_one_feed(void **state) {
  (void)state;
  const size_t n = 100000;
  stream s = {0};
  for (size_t i = 0; i < n; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "key:%06zu", i);
    snprintf(val, sizeof val, "%zu", i * 31);
    kv_buf a[3] = {ARG("set"),
                   {(uint8_t *)key, strlen(key)},
                   {(uint8_t *)val, strlen(val)}};
    tcmd c = tcmd_copy(i % 10 == 9 ? 2 : 3, a);
    if (i % 7 == 3) {
      kv_resp_out_append(&s.bytes, "set ", 4);
      kv_resp_out_append(&s.bytes, key, strlen(key));
      if (c.argc == 3) {
        kv_resp_out_append(&s.bytes, " ", 1);
        kv_resp_out_append(&s.bytes, val, strlen(val));
      }
      kv_resp_out_append(&s.bytes, "\r\n", 2);
      end_item(&s, &c);
    } else {
      enc_multibulk(&s, &c);
    }
  }
  kv_resp_parser *p = kv_resp_parser_new(NULL);
  assert_int_equal(kv_resp_parser_feed(p, s.bytes.data, s.bytes.len), KV_OK);
  assert_int_equal(kv_resp_parser_pending(p), s.bytes.len);
  kv_resp_cmd c;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
    assert_cmd(&s.cmds[i], &c, i);
    assert_int_equal(kv_resp_parser_pending(p), s.bytes.len - s.items[i].end);
    memcpy(c.argv[0].data, "SET", 3);
  }
  assert_int_equal(kv_resp_parser_next(p, &c), KV_AGAIN);

  /* The parser is reusable after being drained. */
  assert_int_equal(kv_resp_parser_feed(p, s.bytes.data, s.items[2].end), KV_OK);
  size_t got = 0;
  drain(p, &s, s.items[2].end, &got);
  assert_int_equal(got, 3);
  kv_resp_parser_free(p);
  stream_free(&s);
}

/* Random commands, encoded as multibulk or as inline lines with random
 * quoting, with skipped lines between; the stream is split at random points
 * and commands are taken only now and then, so that bytes pile up across
 * feeds and the buffer moves with commands in flight. */
static void test_resp_random_roundtrip(void **state) {
  (void)state;
  test_rng rg = {seed ^ 0x5245535052455350ull};
  for (int round = 0; round < 40; round++) {
    stream s = {0};
    rand_stream(&s, &rg, 300);
    kv_resp_parser *p = kv_resp_parser_new(NULL);
    size_t fed = 0, got = 0;
    while (fed < s.bytes.len) {
      size_t n = 1 + test_rng_below(&rg, test_rng_below(&rg, 4) ? 64 : 20000);
      if (n > s.bytes.len - fed) n = s.bytes.len - fed;
      int rc = kv_resp_parser_feed(p, s.bytes.data + fed, n);
      if (rc != KV_OK)
        fail_msg("round %d: feed at %zu: %s (%s)", round, fed, kv_err_name(rc),
                 kv_resp_parser_error(p));
      fed += n;
      if (test_rng_below(&rg, 3) == 0 || fed == s.bytes.len)
        drain(p, &s, fed, &got);
    }
    assert_int_equal(got, s.ncmds);
    assert_int_equal(kv_resp_parser_pending(p), 0);
    kv_resp_parser_free(p);
    stream_free(&s);
  }
}

/* ---- Parser: malformed input ---- */

typedef struct bad_case {
  const uint8_t *b;
  size_t n;
  int err;
  const char *msg;
  size_t ncmds; /* commands before the bad bytes */
} bad_case;

#define BAD(s, err, msg, ncmds)                                                \
  { LIT(s), err, msg, ncmds }
#define MBULK "Protocol error: invalid multibulk length"
#define BULK "Protocol error: invalid bulk length"
#define QUOTES "Protocol error: unbalanced quotes in request"
#define CRLF "Protocol error: missing CRLF after bulk data"

/* Each input is refused by its last byte, with Redis's message where Redis
 * has one (its own protocol tests send several of these). */
static void test_resp_malformed(void **state) {
  (void)state;
  static const bad_case cases[] = {
      BAD("*abc\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*1x\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*01\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*-0\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*+1\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("* 1\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*1\rX", KV_BAD_REQUEST, MBULK, 0),
      BAD("*99999999999999999999\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*-99999999999999999999\r\n", KV_BAD_REQUEST, MBULK, 0),
      BAD("*20000000\r\n", KV_FRAME_TOO_LARGE, MBULK, 0),
      BAD("*9223372036854775807\r\n", KV_FRAME_TOO_LARGE, MBULK, 0),
      BAD("*1\r\n$-1\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*3\r\n$3\r\nSET\r\n$-10\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*3\r\n$3\r\nSET\r\n$blabla\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*1\r\n$\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*1\r\n$3x\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*1\r\n$ 3\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*1\r\n$03\r\n", KV_BAD_REQUEST, BULK, 0),
      BAD("*1\r\n$3\r\r", KV_BAD_REQUEST, BULK, 0),
      BAD("*3\r\n$3\r\nSET\r\n$2000000000\r\n", KV_FRAME_TOO_LARGE, BULK, 0),
      BAD("*1\r\nf", KV_BAD_REQUEST, "Protocol error: expected '$', got 'f'",
          0),
      BAD("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nf", KV_BAD_REQUEST,
          "Protocol error: expected '$', got 'f'", 0),
      BAD("*2\r\n$4\r\nPING\r\n\0", KV_BAD_REQUEST,
          "Protocol error: expected '$', got '\\x00'", 0),
      BAD("*2\r\n$4\r\nPING\r\n\r", KV_BAD_REQUEST,
          "Protocol error: expected '$', got '\\x0d'", 0),
      BAD("*1\r\n$3\r\nfooX", KV_BAD_REQUEST, CRLF, 0),
      BAD("*1\r\n$3\r\nfoo\rX", KV_BAD_REQUEST, CRLF, 0),
      BAD("*1\r\n$3\r\nfoo\n", KV_BAD_REQUEST, CRLF, 0),
      BAD("*1\r\n$0\r\n\n", KV_BAD_REQUEST, CRLF, 0),
      BAD("*1\r\n$1\r\nab", KV_BAD_REQUEST, CRLF, 0),
      BAD("set \"\"\"test-key\"\"\" test-value\r\n", KV_BAD_REQUEST, QUOTES, 0),
      BAD("GET \"abc\r\n", KV_BAD_REQUEST, QUOTES, 0),
      BAD("GET 'abc\n", KV_BAD_REQUEST, QUOTES, 0),
      BAD("GET 'abc'x\n", KV_BAD_REQUEST, QUOTES, 0),
      BAD("GET \"a\\\"\n", KV_BAD_REQUEST, QUOTES, 0),
      /* Commands before the bad bytes still come out, in order. */
      BAD("PING\r\n*1\r\nX", KV_BAD_REQUEST,
          "Protocol error: expected '$', got 'X'", 1),
      BAD("*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$-5\r\n", KV_BAD_REQUEST, BULK, 2),
      BAD("\r\n*0\r\n*1\r\n$1\r\na\r\nGET \"x\n", KV_BAD_REQUEST, QUOTES, 1),
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case *k = &cases[i];
    refused(NULL, k->b, k->n, k->err, k->msg, k->ncmds);
  }
}

/* A header line that goes on without a CR is refused after a few dozen
 * bytes, whatever its digits: no valid header is that long. */
static void test_resp_header_line_too_long(void **state) {
  (void)state;
  static const struct {
    const char *prefix, *msg;
  } cases[] = {
      {"*", "Protocol error: too big mbulk count string"},
      {"*1\r\n$", "Protocol error: too big bulk count string"},
  };
  for (size_t k = 0; k < 2; k++) {
    kv_resp_parser *p = kv_resp_parser_new(NULL);
    const char *pre = cases[k].prefix;
    assert_int_equal(kv_resp_parser_feed(p, pre, strlen(pre)), KV_OK);
    size_t i = 0;
    int rc = KV_OK;
    while (rc == KV_OK && i < 1000) {
      rc = kv_resp_parser_feed(p, "1", 1);
      i++;
    }
    assert_int_equal(rc, KV_BAD_REQUEST);
    assert_true(i <= 64);
    assert_true(kv_resp_parser_pending(p) <= 64 + strlen(pre));
    assert_sticky(p, KV_BAD_REQUEST, cases[k].msg);
    kv_resp_parser_free(p);
  }
}

/* Random bytes, biased to protocol characters, fed in random chunks: the
 * parser returns commands, KV_AGAIN or a sticky error, never anything else,
 * and never reads or writes out of bounds (the point of running it under
 * ASan). */
static void test_resp_random_garbage(void **state) {
  (void)state;
  test_rng rg = {seed ^ 0x6761726261676521ull};
  static const char alphabet[] = "*$\r\n\r\n0123456789-  \"'\\xab";
  uint8_t b[512];
  kv_resp_limits lim = {
      .max_args = 8, .max_bulk = 64, .max_inline = 128, .max_command = 256};
  size_t errors = 0, commands = 0;
  for (int round = 0; round < 3000; round++) {
    size_t n = 1 + test_rng_below(&rg, sizeof b);
    for (size_t i = 0; i < n; i++)
      b[i] = test_rng_below(&rg, 8) == 0
                 ? (uint8_t)test_rng_below(&rg, 256)
                 : (uint8_t)alphabet[test_rng_below(&rg, sizeof alphabet - 1)];
    kv_resp_parser *p = kv_resp_parser_new(round % 2 ? &lim : NULL);
    size_t fed = 0;
    int rc = KV_OK;
    while (fed < n && (rc == KV_OK || rc == KV_AGAIN)) {
      size_t k = 1 + test_rng_below(&rg, 16);
      if (k > n - fed) k = n - fed;
      rc = kv_resp_parser_feed(p, b + fed, k);
      fed += k;
      kv_resp_cmd c;
      while (rc == KV_OK && (rc = kv_resp_parser_next(p, &c)) == KV_OK) {
        assert_true(c.argc >= 1);
        for (size_t a = 0; a < c.argc; a++)
          for (size_t j = 0; j < c.argv[a].len; j++)
            (void)*(volatile uint8_t *)&c.argv[a].data[j];
        commands++;
      }
      assert_true(kv_resp_parser_pending(p) <= fed);
    }
    if (rc != KV_OK && rc != KV_AGAIN) {
      assert_true(rc == KV_BAD_REQUEST || rc == KV_FRAME_TOO_LARGE);
      assert_non_null(kv_resp_parser_error(p));
      assert_int_equal(strncmp(kv_resp_parser_error(p), "Protocol error: ", 16),
                       0);
      errors++;
    }
    kv_resp_parser_free(p);
  }
  /* Both outcomes must have happened, or the input was not varied enough to
   * exercise anything. */
  assert_true(errors > 0);
  assert_true(commands > 0);
}

/* ---- Parser: limits ---- */

static void test_resp_max_args_refused_at_header(void **state) {
  (void)state;
  kv_resp_limits lim = {.max_args = 3};
  const size_t argc[] = {3, 3};
  const kv_buf args[] = {ARG("a"), ARG("b"), ARG("c"),
                         ARG("a"), ARG("b"), ARG("c")};
  parses_to(&lim, LIT("*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\na b c\r\n"), 2,
            argc, args);
  refused(&lim, LIT("*4\r\n"), KV_FRAME_TOO_LARGE, MBULK, 0);
  refused(&lim, LIT("*1\r\n$1\r\na\r\n*4\r\n"), KV_FRAME_TOO_LARGE, MBULK, 1);
  refused(&lim, LIT("a b c d\r\n"), KV_FRAME_TOO_LARGE,
          "Protocol error: too many arguments", 0);
}

static void test_resp_max_bulk_refused_at_header(void **state) {
  (void)state;
  kv_resp_limits lim = {.max_bulk = 1000};
  kv_resp_out o = {0};
  kv_resp_add_array(&o, 2);
  kv_resp_add_bulk(&o, "GET", 3);
  uint8_t body[1000];
  memset(body, 'v', sizeof body);
  kv_resp_add_bulk(&o, body, sizeof body);
  const size_t argc[] = {2};
  const kv_buf args[] = {ARG("GET"), {body, sizeof body}};
  parses_to(&lim, o.data, o.len, 1, argc, args);
  kv_resp_out_fini(&o);

  refused(&lim, LIT("*2\r\n$3\r\nGET\r\n$1001\r\n"), KV_FRAME_TOO_LARGE, BULK,
          0);

  /* The defaults: 20 MiB is accepted, one byte more is not. A header
   * claiming 1 GiB is refused with nothing of the body buffered. */
  kv_resp_parser *p = kv_resp_parser_new(NULL);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*1\r\n$20971520\r\n")), KV_OK);
  kv_resp_cmd c;
  assert_int_equal(kv_resp_parser_next(p, &c), KV_AGAIN);
  kv_resp_parser_free(p);
  refused(NULL, LIT("*1\r\n$20971521\r\n"), KV_FRAME_TOO_LARGE, BULK, 0);
  p = kv_resp_parser_new(NULL);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n"
                                              "$1073741824\r\n")),
                   KV_FRAME_TOO_LARGE);
  assert_true(kv_resp_parser_memory(p) < 16384);
  assert_int_equal(kv_resp_parser_feed(p, body, sizeof body),
                   KV_FRAME_TOO_LARGE);
  assert_true(kv_resp_parser_memory(p) < 16384);
  kv_resp_parser_free(p);
}

/* An inline line may have max_inline bytes before its LF or CR LF; the
 * refusal comes with the byte that makes it longer, before any LF. */
static void test_resp_max_inline_refused(void **state) {
  (void)state;
  kv_resp_limits lim = {.max_inline = 100};
  char line[110];
  memset(line, 'a', sizeof line);
  for (size_t end = 0; end < 2; end++) {
    memcpy(line + 100, end ? "\r\n" : "\n", 2);
    const size_t argc[] = {1};
    const kv_buf args[] = {{(uint8_t *)line, 100}};
    parses_to(&lim, (const uint8_t *)line, end ? 102 : 101, 1, argc, args);
  }
  memset(line, 'a', sizeof line);
  refused(&lim, (const uint8_t *)line, 101, KV_FRAME_TOO_LARGE,
          "Protocol error: too big inline request", 0);
  memcpy(line + 100, "\rb", 2);
  refused(&lim, (const uint8_t *)line, 102, KV_FRAME_TOO_LARGE,
          "Protocol error: too big inline request", 0);
  /* Arriving whole, LF included, makes no difference. */
  memcpy(line + 101, "\r\n", 2);
  refused_in_one_feed(&lim, (const uint8_t *)line, 103, KV_FRAME_TOO_LARGE,
                      "Protocol error: too big inline request", 0);

  /* The default of 64 KiB, and memory stays near it. */
  kv_resp_parser *p = kv_resp_parser_new(NULL);
  uint8_t chunk[1024];
  memset(chunk, 'x', sizeof chunk);
  for (size_t i = 0; i < 64; i++)
    assert_int_equal(kv_resp_parser_feed(p, chunk, sizeof chunk), KV_OK);
  assert_int_equal(kv_resp_parser_feed(p, "x", 1), KV_FRAME_TOO_LARGE);
  assert_true(kv_resp_parser_memory(p) < 128 * 1024);
  kv_resp_parser_free(p);
}

/* max_command is checked at each header against what is parsed, what the
 * header announces and the smallest possible rest ("$0\r\n\r\n" for each
 * argument still due), so a command too big to fit is refused before its
 * payload arrives. */
static void test_resp_max_command_refused_at_header(void **state) {
  (void)state;
  kv_resp_limits lim = {.max_command = 100};
  const char *msg =
      "Protocol error: command larger than the configured maximum";
  /* "*2\r\n$3\r\nSET\r\n" is 13 bytes, "$80\r\n" 5, the body 80 + 2. */
  kv_resp_out o = {0};
  kv_resp_add_array(&o, 2);
  kv_resp_add_bulk(&o, "SET", 3);
  char body[81];
  memset(body, 'b', sizeof body);
  kv_resp_add_bulk(&o, body, 80);
  assert_int_equal(o.len, 100);
  const size_t argc[] = {2};
  const kv_buf args[] = {ARG("SET"), {(uint8_t *)body, 80}};
  parses_to(&lim, o.data, o.len, 1, argc, args);
  kv_resp_out_fini(&o);

  refused(&lim, LIT("*2\r\n$3\r\nSET\r\n$81\r\n"), KV_FRAME_TOO_LARGE, msg, 0);
  /* With an argument still due after this one, 6 bytes less fit. */
  refused(&lim, LIT("*3\r\n$3\r\nSET\r\n$75\r\n"), KV_FRAME_TOO_LARGE, msg, 0);
  kv_resp_parser *p = kv_resp_parser_new(&lim);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*3\r\n$3\r\nSET\r\n$74\r\n")),
                   KV_OK);
  kv_resp_parser_free(p);
  /* The count alone: 5 + 16 * 6 > 100, 5 + 15 * 6 is not. */
  refused(&lim, LIT("*16\r\n"), KV_FRAME_TOO_LARGE, msg, 0);
  p = kv_resp_parser_new(&lim);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*15\r\n")), KV_OK);
  kv_resp_parser_free(p);
}

/* Limits changed between commands govern the commands after: tight until
 * AUTH, say, then relaxed. */
static void test_resp_set_limits(void **state) {
  (void)state;
  kv_resp_limits tight = {.max_args = 2, .max_bulk = 16};
  kv_resp_parser *p = kv_resp_parser_new(&tight);
  assert_int_equal(
      kv_resp_parser_feed(p, LIT("*2\r\n$4\r\nAUTH\r\n$3\r\ntok\r\n"
                                 "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n"
                                 "01234567890123456789\r\n")),
      KV_OK);
  kv_resp_cmd c;
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_int_equal(c.argc, 2);
  kv_resp_parser_set_limits(p, NULL);
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_int_equal(c.argc, 3);
  assert_int_equal(c.argv[2].len, 20);

  /* And tightened again, the next command is refused. */
  kv_resp_parser_set_limits(p, &tight);
  assert_int_equal(
      kv_resp_parser_feed(p, LIT("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")),
      KV_FRAME_TOO_LARGE);
  assert_sticky(p, KV_FRAME_TOO_LARGE, MBULK);
  kv_resp_parser_free(p);
}

/* After a large command the buffer and argument arrays shrink back, so one
 * big SET or MSET does not pin memory for the connection's lifetime; while
 * the large command arrives, memory stays proportional to it. */
static void test_resp_memory_shrinks(void **state) {
  (void)state;
  const size_t big = 16u << 20;
  kv_resp_parser *p = kv_resp_parser_new(NULL);
  assert_int_equal(kv_resp_parser_feed(p, LIT("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n"
                                              "$16777216\r\n")),
                   KV_OK);
  uint8_t *chunk = kv_malloc(65536);
  for (size_t off = 0; off < big; off += 65536) {
    for (size_t j = 0; j < 65536; j++)
      chunk[j] = (uint8_t)((off + j) * 13 >> 3);
    assert_int_equal(kv_resp_parser_feed(p, chunk, 65536), KV_OK);
    assert_true(kv_resp_parser_memory(p) <=
                2 * kv_resp_parser_pending(p) + 65536);
  }
  assert_int_equal(kv_resp_parser_feed(p, LIT("\r\nPING\r\n")), KV_OK);
  kv_resp_cmd c;
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_int_equal(c.argc, 3);
  assert_int_equal(c.argv[2].len, big);
  for (size_t j = 0; j < big; j += 4093)
    assert_int_equal(c.argv[2].data[j], (uint8_t)(j * 13 >> 3));
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_int_equal(kv_resp_parser_feed(p, LIT("PING\r\n")), KV_OK);
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_true(kv_resp_parser_memory(p) < 16384);

  /* 20000 arguments, then a small command. */
  kv_resp_out o = {0};
  kv_resp_add_array(&o, 20000);
  for (size_t i = 0; i < 20000; i++)
    kv_resp_add_bulk(&o, "x", 1);
  assert_int_equal(kv_resp_parser_feed(p, o.data, o.len), KV_OK);
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_int_equal(c.argc, 20000);
  assert_true(kv_resp_parser_memory(p) > 20000 * sizeof(kv_buf));
  assert_int_equal(kv_resp_parser_feed(p, LIT("PING\r\n")), KV_OK);
  assert_int_equal(kv_resp_parser_next(p, &c), KV_OK);
  assert_true(kv_resp_parser_memory(p) < 16384);
  kv_resp_out_fini(&o);
  free(chunk);
  kv_resp_parser_free(p);
}

/* ---- Replies ---- */

static void assert_out(kv_resp_out *o, const uint8_t *want, size_t n) {
  if (o->len != n || memcmp(o->data, want, n))
    fail_msg("got %zu bytes '%.*s', want %zu '%.*s'", o->len, (int)o->len,
             (const char *)o->data, n, (int)n, (const char *)want);
  kv_resp_out_reset(o);
}

static void test_resp_reply_simple_and_error(void **state) {
  (void)state;
  kv_resp_out o;
  kv_resp_out_init(&o);
  kv_resp_add_simple(&o, "OK");
  assert_out(&o, LIT("+OK\r\n"));
  kv_resp_add_simple(&o, "");
  assert_out(&o, LIT("+\r\n"));
  kv_resp_add_simple(&o, "a\r\nb\n");
  assert_out(&o, LIT("+a  b \r\n"));
  kv_resp_add_error(&o, "ERR syntax error");
  assert_out(&o, LIT("-ERR syntax error\r\n"));
  kv_resp_add_error(&o, "ERR a\nb\rc\r\n");
  assert_out(&o, LIT("-ERR a b c  \r\n"));
  kv_resp_add_errorf(&o, "ERR unknown command '%.*s'", 6, "ab\r\ncdef");
  assert_out(&o, LIT("-ERR unknown command 'ab  cd'\r\n"));
  kv_resp_add_errorf(&o, "ERR %s", "Protocol error: invalid bulk length");
  assert_out(&o, LIT("-ERR Protocol error: invalid bulk length\r\n"));

  /* A long formatted message, grown past the first allocation mid-buffer. */
  kv_resp_add_simple(&o, "OK");
  char lng[5001];
  memset(lng, 'z', 5000);
  lng[5000] = '\0';
  lng[2500] = '\n';
  kv_resp_add_errorf(&o, "ERR %s!", lng);
  assert_int_equal(o.len, 5 + 1 + 4 + 5000 + 1 + 2);
  assert_memory_equal(o.data, "+OK\r\n-ERR zz", 12);
  assert_int_equal(o.data[5 + 5 + 2500], ' ');
  assert_memory_equal(o.data + o.len - 4, "z!\r\n", 4);
  kv_resp_out_fini(&o);
}

static void test_resp_reply_kv_error(void **state) {
  (void)state;
  kv_resp_out o = {0};
  static const struct {
    int err;
    const char *want;
  } cases[] = {
      {KV_WRONG_TYPE, "-WRONGTYPE Operation against a key holding the wrong "
                      "kind of value\r\n"},
      {KV_AUTH_REQUIRED, "-NOAUTH Authentication required.\r\n"},
      {KV_AUTH_FAILED,
       "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
      {KV_OVERFLOW, "-ERR increment or decrement would overflow\r\n"},
      {KV_VALUE_TOO_LARGE,
       "-ERR value is larger than the configured maximum\r\n"},
      {KV_KEY_TOO_LONG, "-ERR key is longer than 507 bytes or empty\r\n"},
      {KV_BAD_REQUEST, "-ERR malformed request\r\n"},
      {-9999, "-ERR unknown error\r\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kv_resp_add_kv_error(&o, cases[i].err);
    assert_out(&o, (const uint8_t *)cases[i].want, strlen(cases[i].want));
  }
  kv_resp_out_fini(&o);
}

static void test_resp_reply_int(void **state) {
  (void)state;
  kv_resp_out o = {0};
  static const struct {
    int64_t v;
    const char *want, *bulk;
  } cases[] = {
      {0, ":0\r\n", "$1\r\n0\r\n"},
      {1, ":1\r\n", "$1\r\n1\r\n"},
      {-1, ":-1\r\n", "$2\r\n-1\r\n"},
      {42, ":42\r\n", "$2\r\n42\r\n"},
      {1000000007, ":1000000007\r\n", "$10\r\n1000000007\r\n"},
      {INT64_MAX, ":9223372036854775807\r\n", "$19\r\n9223372036854775807\r\n"},
      {INT64_MIN, ":-9223372036854775808\r\n",
       "$20\r\n-9223372036854775808\r\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kv_resp_add_int(&o, cases[i].v);
    assert_out(&o, (const uint8_t *)cases[i].want, strlen(cases[i].want));
    kv_resp_add_bulk_int(&o, cases[i].v);
    assert_out(&o, (const uint8_t *)cases[i].bulk, strlen(cases[i].bulk));
  }
  kv_resp_out_fini(&o);
}

static void test_resp_reply_bulk_and_arrays(void **state) {
  (void)state;
  kv_resp_out o = {0};
  kv_resp_add_bulk(&o, NULL, 0);
  assert_out(&o, LIT("$0\r\n\r\n"));
  kv_resp_add_bulk(&o, "hello", 5);
  assert_out(&o, LIT("$5\r\nhello\r\n"));
  kv_resp_add_bulk(&o, "a\0\r\nb", 5);
  assert_out(&o, LIT("$5\r\na\0\r\nb\r\n"));
  kv_resp_add_null(&o);
  assert_out(&o, LIT("$-1\r\n"));
  kv_resp_add_array(&o, 0);
  assert_out(&o, LIT("*0\r\n"));
  kv_resp_add_null_array(&o);
  assert_out(&o, LIT("*-1\r\n"));
  /* A composite reply, as MGET of a present and a missing key. */
  kv_resp_add_array(&o, 3);
  kv_resp_add_bulk(&o, "v", 1);
  kv_resp_add_null(&o);
  kv_resp_add_int(&o, 7);
  assert_out(&o, LIT("*3\r\n$1\r\nv\r\n$-1\r\n:7\r\n"));
  kv_resp_add_array(&o, 1234567);
  assert_out(&o, LIT("*1234567\r\n"));

  /* A bulk larger than any buffer so far. */
  size_t n = 100000;
  uint8_t *big = kv_malloc(n);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)(i * 11);
  kv_resp_add_simple(&o, "x");
  kv_resp_add_bulk(&o, big, n);
  assert_int_equal(o.len, 4 + 9 + n + 2);
  assert_memory_equal(o.data, "+x\r\n$100000\r\n", 13);
  assert_memory_equal(o.data + 13, big, n);
  assert_memory_equal(o.data + 13 + n, "\r\n", 2);
  free(big);
  kv_resp_out_fini(&o);
}

static void test_resp_out_buffer(void **state) {
  (void)state;
  kv_resp_out o = {0}; /* zeroed is valid */
  kv_resp_out_append(&o, NULL, 0);
  assert_int_equal(o.len, 0);
  kv_resp_add_simple(&o, "OK");
  kv_resp_add_int(&o, 5);
  uint8_t *d = kv_resp_out_extend(&o, 3);
  memcpy(d, "abc", 3);
  kv_resp_out_append(&o, "de", 2);
  assert_int_equal(o.len, 14);
  assert_memory_equal(o.data, "+OK\r\n:5\r\nabcde", 14);

  /* A partial write took 7 bytes: the rest move to the front. */
  kv_resp_out_consume(&o, 7);
  assert_int_equal(o.len, 7);
  assert_memory_equal(o.data, "\r\nabcde", 7);
  kv_resp_out_consume(&o, 0);
  assert_int_equal(o.len, 7);
  kv_resp_out_consume(&o, 7);
  assert_int_equal(o.len, 0);

  /* reset keeps a small buffer for the next replies ... */
  kv_resp_add_simple(&o, "PONG");
  size_t cap = o.cap;
  uint8_t *data = o.data;
  kv_resp_out_reset(&o);
  assert_int_equal(o.len, 0);
  assert_int_equal(o.cap, cap);
  assert_ptr_equal(o.data, data);
  /* ... but not a large one. */
  uint8_t *chunk = kv_calloc(1, 200000);
  kv_resp_add_bulk(&o, chunk, 200000);
  assert_true(o.cap >= 200000);
  kv_resp_out_reset(&o);
  assert_int_equal(o.len, 0);
  assert_true(o.cap <= 65536);
  kv_resp_add_null(&o);
  assert_out(&o, LIT("$-1\r\n"));
  free(chunk);
  kv_resp_out_fini(&o);
  assert_null(o.data);
  assert_int_equal(o.len, 0);
  kv_resp_out_fini(&o);
}

/* Consuming more than the buffer holds is a bug in the caller: it must
 * abort, not wrap len around. */
static void consume_too_much(void) {
  kv_resp_out o = {0};
  kv_resp_add_simple(&o, "OK");
  kv_resp_out_consume(&o, 6);
}

static void test_resp_out_consume_too_much_panics(void **state) {
  (void)state;
  assert_panics(consume_too_much);
}

int main(void) {
  seed = test_seed("resp_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resp_new_free),
      cmocka_unit_test(test_resp_multibulk),
      cmocka_unit_test(test_resp_empty_bulk),
      cmocka_unit_test(test_resp_binary_safe_bulk),
      cmocka_unit_test(test_resp_inline),
      cmocka_unit_test(test_resp_empty_commands_skipped),
      cmocka_unit_test(test_resp_byte_at_a_time),
      cmocka_unit_test(test_resp_pipelined_in_one_feed),
      cmocka_unit_test(test_resp_random_roundtrip),
      cmocka_unit_test(test_resp_malformed),
      cmocka_unit_test(test_resp_header_line_too_long),
      cmocka_unit_test(test_resp_random_garbage),
      cmocka_unit_test(test_resp_max_args_refused_at_header),
      cmocka_unit_test(test_resp_max_bulk_refused_at_header),
      cmocka_unit_test(test_resp_max_inline_refused),
      cmocka_unit_test(test_resp_max_command_refused_at_header),
      cmocka_unit_test(test_resp_set_limits),
      cmocka_unit_test(test_resp_memory_shrinks),
      cmocka_unit_test(test_resp_reply_simple_and_error),
      cmocka_unit_test(test_resp_reply_kv_error),
      cmocka_unit_test(test_resp_reply_int),
      cmocka_unit_test(test_resp_reply_bulk_and_arrays),
      cmocka_unit_test(test_resp_out_buffer),
      cmocka_unit_test(test_resp_out_consume_too_much_panics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
