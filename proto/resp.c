/*
 * RESP2 parser and reply builders. The parser is a resumable state machine
 * over one buffer. Its position is kept as offsets from the start of the
 * command in progress, which survive compaction and reallocation, and it
 * never parses a byte twice: only an incomplete header line (at most HDR_MAX
 * bytes) is looked at again when more input arrives, and the search for an
 * inline command's LF resumes where it stopped. Inline commands are split in
 * place, since unquoting never makes an argument longer than its source.
 */
#include "proto/resp.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No valid header line is this long before its CR: "$", a sign and the 19
 * digits of the largest int64 are 21 bytes. A longer one is refused without
 * waiting for its end, which bounds what a header can make us buffer. */
#define HDR_MAX 32

/* The smallest encoding of one argument, "$0\r\n\r\n", used to refuse a
 * command that cannot fit max_command however short its arguments. */
#define MIN_ARG 6

#define BUF_MIN 4096
/* Above this, an input buffer mostly empty is shrunk, and an output buffer
 * that is reset is freed, so one big command or reply pins no memory. */
#define BUF_KEEP (64u << 10)
#define ARGS_MIN 16
#define ARGS_KEEP 1024
#define OUT_MIN 1024

enum state {
  ST_START,     /* at the first byte of a command */
  ST_INLINE,    /* looking for the LF that ends an inline command */
  ST_COUNT,     /* reading "*<n>\r\n" */
  ST_BULK_HDR,  /* reading "$<len>\r\n" */
  ST_BULK_BODY, /* waiting for <len> bytes and CR LF */
  ST_READY      /* a whole command is parsed, not yet handed out */
};

struct kv_resp_parser {
  uint8_t *buf;
  size_t cap, start, end; /* live bytes are buf[start..end) */
  kv_resp_limits lim;
  enum state st;
  /* Offsets from start, the first byte of the command in progress. */
  size_t pos;    /* first byte not yet parsed */
  size_t scan;   /* ST_INLINE: where the search for LF resumes */
  size_t cmdlen; /* ST_READY: the command's size */
  size_t want;   /* arguments still to come in this multibulk */
  size_t bulk;   /* ST_BULK_BODY: the announced length */
  /* Arguments parsed so far. argoff[i] is argv[i]'s offset from start; the
   * data pointers are filled in only when the command is handed out, since
   * the buffer may move until then. */
  kv_buf *argv;
  size_t *argoff;
  size_t argc, argcap;
  int err; /* sticky */
  const char *msg;
  char msgbuf[64];
};

static const char MSG_MBULK_LEN[] = "Protocol error: invalid multibulk length";
static const char MSG_BULK_LEN[] = "Protocol error: invalid bulk length";
static const char MSG_MBULK_HDR[] =
    "Protocol error: too big mbulk count string";
static const char MSG_BULK_HDR[] = "Protocol error: too big bulk count string";
static const char MSG_INLINE[] = "Protocol error: too big inline request";
static const char MSG_QUOTES[] = "Protocol error: unbalanced quotes in request";
static const char MSG_ARGS[] = "Protocol error: too many arguments";
static const char MSG_CRLF[] = "Protocol error: missing CRLF after bulk data";
static const char MSG_COMMAND[] =
    "Protocol error: command larger than the configured maximum";

static int fail(kv_resp_parser *p, int err, const char *msg) {
  p->err = err;
  p->msg = msg;
  return err;
}

static void apply_limits(kv_resp_parser *p, const kv_resp_limits *lim) {
  kv_resp_limits l = {0};
  if (lim) l = *lim;
  if (!l.max_args) l.max_args = KV_RESP_DEFAULT_MAX_ARGS;
  if (!l.max_bulk) l.max_bulk = KV_RESP_DEFAULT_MAX_BULK;
  if (!l.max_inline) l.max_inline = KV_RESP_DEFAULT_MAX_INLINE;
  if (!l.max_command) l.max_command = KV_RESP_DEFAULT_MAX_COMMAND;
  p->lim = l;
}

kv_resp_parser *kv_resp_parser_new(const kv_resp_limits *lim) {
  kv_resp_parser *p = kv_calloc(1, sizeof *p);
  apply_limits(p, lim);
  return p;
}

void kv_resp_parser_free(kv_resp_parser *p) {
  if (!p) return;
  free(p->buf);
  free(p->argv);
  free(p->argoff);
  free(p);
}

void kv_resp_parser_set_limits(kv_resp_parser *p, const kv_resp_limits *lim) {
  apply_limits(p, lim);
}

const char *kv_resp_parser_error(const kv_resp_parser *p) {
  return p->err ? p->msg : NULL;
}

size_t kv_resp_parser_pending(const kv_resp_parser *p) {
  return p->end - p->start;
}

size_t kv_resp_parser_memory(const kv_resp_parser *p) {
  return sizeof *p + p->cap + p->argcap * (sizeof(kv_buf) + sizeof(size_t));
}

/* ---- Input buffer ---- */

/* Half as much room again as needed: enough that growth is amortised O(1)
 * per byte without doubling a 16 MiB bulk's buffer to 32 MiB. */
static size_t roomy(size_t need) {
  size_t cap = need + need / 2;
  return cap < BUF_MIN ? BUF_MIN : cap;
}

static void rebuffer(kv_resp_parser *p, size_t cap) {
  size_t live = p->end - p->start;
  uint8_t *b = kv_malloc(cap);
  if (live) memcpy(b, p->buf + p->start, live);
  free(p->buf);
  p->buf = b;
  p->cap = cap;
  p->start = 0;
  p->end = live;
}

/* Makes room for len more bytes at end. Only feed calls this, because it
 * moves bytes that handed-out views point at. Sliding the live bytes to the
 * front is done only when they fill at most half the buffer: then at least as
 * many bytes were consumed since the last slide as are moved, so the copying
 * is paid for by the commands consumed. */
static void make_room(kv_resp_parser *p, size_t len) {
  size_t live = p->end - p->start;
  if (live == 0) p->start = p->end = 0;
  if (len > SIZE_MAX / 4 - live) kv_panic("resp: feed of %zu bytes", len);
  size_t need = live + len;
  if (p->cap > BUF_KEEP && need <= p->cap / 4) {
    rebuffer(p, roomy(need));
  } else if (p->end + len > p->cap) {
    if (need <= p->cap / 2) {
      memmove(p->buf, p->buf + p->start, live);
      p->start = 0;
      p->end = live;
    } else {
      rebuffer(p, roomy(need));
    }
  }
}

/* Drops n bytes at start (a command handed out or skipped) and gets ready
 * for the next command. The bytes stay where they are, so views into them
 * remain good until the next feed. */
static void consume(kv_resp_parser *p, size_t n) {
  p->start += n;
  if (p->start == p->end) p->start = p->end = 0;
  p->st = ST_START;
}

/* Appends an argument; total is the most the command can have, so that the
 * arrays never grow past what the peer has announced or the limit allows. */
static void push_arg(kv_resp_parser *p, size_t off, size_t len, size_t total) {
  if (p->argc == p->argcap) {
    size_t cap = p->argcap ? p->argcap * 2 : ARGS_MIN;
    if (cap > total) cap = total;
    kv_assert(cap > p->argc);
    p->argv = kv_realloc(p->argv, cap * sizeof *p->argv);
    p->argoff = kv_realloc(p->argoff, cap * sizeof *p->argoff);
    p->argcap = cap;
  }
  p->argv[p->argc].data = NULL;
  p->argv[p->argc].len = len;
  p->argoff[p->argc] = off;
  p->argc++;
}

static void start_command(kv_resp_parser *p) {
  p->pos = p->scan = p->cmdlen = p->want = p->bulk = 0;
  p->argc = 0;
  /* The arrays of a command with many arguments are not kept for the
   * commands of two or three that usually follow. */
  if (p->argcap > ARGS_KEEP) {
    free(p->argv);
    free(p->argoff);
    p->argv = NULL;
    p->argoff = NULL;
    p->argcap = 0;
  }
}

/* ---- Multibulk ---- */

/* Parses s[0..n) as Redis's string2ll does: an optional '-', then digits
 * with no leading zero; "0" is allowed, "-0", "+1", "01" and "" are not, nor
 * is anything outside int64. Being as strict as Redis means a stream Redis
 * refuses is refused here too. */
static bool parse_ll(const uint8_t *s, size_t n, int64_t *out) {
  size_t i = 0;
  bool neg = n > 0 && s[0] == '-';
  if (neg) i++;
  if (i == n) return false;
  if (s[i] == '0') {
    if (n != 1) return false;
    *out = 0;
    return true;
  }
  uint64_t v = 0;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  if (neg) {
    if (v > (uint64_t)INT64_MAX + 1) return false;
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  } else {
    if (v > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)v;
  }
  return true;
}

/* Reads the header line at pos, "*<n>\r\n" or "$<n>\r\n" (the type byte is
 * already checked), into *val and moves pos past it. KV_AGAIN while the line
 * is incomplete. A CR must be followed by LF: Redis skips whatever byte comes
 * after the CR, but a stream with anything else there is not RESP. */
static int header_line(kv_resp_parser *p, const char *too_long,
                       const char *invalid, int64_t *val) {
  const uint8_t *s = p->buf + p->start + p->pos;
  size_t avail = p->end - p->start - p->pos;
  const uint8_t *cr = memchr(s, '\r', avail < HDR_MAX ? avail : HDR_MAX);
  if (!cr)
    return avail >= HDR_MAX ? fail(p, KV_BAD_REQUEST, too_long) : KV_AGAIN;
  size_t i = (size_t)(cr - s);
  if (i + 1 == avail) return KV_AGAIN;
  if (s[i + 1] != '\n' || !parse_ll(s + 1, i - 1, val))
    return fail(p, KV_BAD_REQUEST, invalid);
  p->pos += i + 2;
  return KV_OK;
}

/* Whether a command whose first pos bytes are parsed can still fit
 * max_command with next more bytes due now and more_args arguments after
 * them. Checked at each header, so an oversized command is refused before
 * its payload arrives, however it is spread over its arguments. */
static bool command_fits(const kv_resp_parser *p, uint64_t next,
                         size_t more_args) {
  size_t max = p->lim.max_command;
  if (p->pos > max) return false;
  size_t room = max - p->pos;
  if (next > room) return false;
  room -= (size_t)next;
  return more_args <= room / MIN_ARG;
}

static int parse_count(kv_resp_parser *p) {
  int64_t n = 0;
  int rc = header_line(p, MSG_MBULK_HDR, MSG_MBULK_LEN, &n);
  if (rc != KV_OK) return rc;
  if (n <= 0) {
    /* Redis treats "*0" and "*-N" as an empty command and skips it. */
    consume(p, p->pos);
    return KV_OK;
  }
  if ((uint64_t)n > p->lim.max_args)
    return fail(p, KV_FRAME_TOO_LARGE, MSG_MBULK_LEN);
  if (!command_fits(p, 0, (size_t)n))
    return fail(p, KV_FRAME_TOO_LARGE, MSG_COMMAND);
  p->want = (size_t)n;
  p->st = ST_BULK_HDR;
  return KV_OK;
}

static int parse_bulk_header(kv_resp_parser *p) {
  if (p->pos == p->end - p->start) return KV_AGAIN;
  uint8_t c = p->buf[p->start + p->pos];
  if (c != '$') {
    /* A byte that is not printable is shown escaped, so that the message
     * stays one readable line. */
    if (c >= 0x20 && c < 0x7f)
      snprintf(p->msgbuf, sizeof p->msgbuf,
               "Protocol error: expected '$', got '%c'", c);
    else
      snprintf(p->msgbuf, sizeof p->msgbuf,
               "Protocol error: expected '$', got '\\x%02x'", c);
    return fail(p, KV_BAD_REQUEST, p->msgbuf);
  }
  int64_t n = 0;
  int rc = header_line(p, MSG_BULK_HDR, MSG_BULK_LEN, &n);
  if (rc != KV_OK) return rc;
  if (n < 0) return fail(p, KV_BAD_REQUEST, MSG_BULK_LEN);
  if ((uint64_t)n > p->lim.max_bulk)
    return fail(p, KV_FRAME_TOO_LARGE, MSG_BULK_LEN);
  if (!command_fits(p, (uint64_t)n + 2, p->want - 1))
    return fail(p, KV_FRAME_TOO_LARGE, MSG_COMMAND);
  p->bulk = (size_t)n;
  p->st = ST_BULK_BODY;
  return KV_OK;
}

static int parse_bulk_body(kv_resp_parser *p) {
  size_t avail = p->end - p->start;
  size_t cr = p->pos + p->bulk;
  const uint8_t *s = p->buf + p->start;
  /* Each terminator byte is checked as soon as it is here, so a wrong one
   * fails at once rather than when the next byte arrives. */
  if (avail > cr && s[cr] != '\r') return fail(p, KV_BAD_REQUEST, MSG_CRLF);
  if (avail > cr + 1 && s[cr + 1] != '\n')
    return fail(p, KV_BAD_REQUEST, MSG_CRLF);
  if (avail < cr + 2) return KV_AGAIN;
  push_arg(p, p->pos, p->bulk, p->argc + p->want);
  p->pos = cr + 2;
  if (--p->want > 0) {
    p->st = ST_BULK_HDR;
  } else {
    p->cmdlen = p->pos;
    p->st = ST_READY;
  }
  return KV_OK;
}

/* ---- Inline ---- */

static bool is_blank(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
         c == '\f';
}

static int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Splits the line s[0..n) into arguments the way Redis's sdssplitargs does:
 * blanks separate words; "..." takes the escapes \xHH \n \r \t \b \a and \
 * before any other byte; '...' takes only \'; a closing quote must be
 * followed by a blank or the end of the line. The one difference is that a
 * NUL byte is an ordinary byte here, where Redis ends the line at it. The
 * unquoted bytes are written back over the line (w never passes r). */
static int split_inline(kv_resp_parser *p, uint8_t *s, size_t n) {
  size_t r = 0, w = 0;
  for (;;) {
    while (r < n && is_blank(s[r]))
      r++;
    if (r == n) return KV_OK;
    size_t arg = w;
    bool dq = false, sq = false, done = false;
    while (!done) {
      if (dq) {
        if (r == n) return fail(p, KV_BAD_REQUEST, MSG_QUOTES);
        if (s[r] == '\\' && r + 3 < n && s[r + 1] == 'x' &&
            hex_value(s[r + 2]) >= 0 && hex_value(s[r + 3]) >= 0) {
          s[w++] = (uint8_t)(hex_value(s[r + 2]) * 16 + hex_value(s[r + 3]));
          r += 4;
        } else if (s[r] == '\\' && r + 1 < n) {
          static const char from[] = "nrtba", to[] = "\n\r\t\b\a";
          const char *k = memchr(from, s[r + 1], sizeof from - 1);
          uint8_t c = k ? (uint8_t)to[k - from] : s[r + 1];
          s[w++] = c;
          r += 2;
        } else if (s[r] == '"') {
          if (r + 1 < n && !is_blank(s[r + 1]))
            return fail(p, KV_BAD_REQUEST, MSG_QUOTES);
          r++;
          done = true;
        } else {
          s[w++] = s[r++];
        }
      } else if (sq) {
        if (r == n) return fail(p, KV_BAD_REQUEST, MSG_QUOTES);
        if (s[r] == '\\' && r + 1 < n && s[r + 1] == '\'') {
          s[w++] = '\'';
          r += 2;
        } else if (s[r] == '\'') {
          if (r + 1 < n && !is_blank(s[r + 1]))
            return fail(p, KV_BAD_REQUEST, MSG_QUOTES);
          r++;
          done = true;
        } else {
          s[w++] = s[r++];
        }
      } else if (r == n || is_blank(s[r])) {
        done = true;
      } else if (s[r] == '"') {
        dq = true;
        r++;
      } else if (s[r] == '\'') {
        sq = true;
        r++;
      } else {
        s[w++] = s[r++];
      }
    }
    if (p->argc == p->lim.max_args)
      return fail(p, KV_FRAME_TOO_LARGE, MSG_ARGS);
    push_arg(p, arg, w - arg, p->lim.max_args);
  }
}

/* An inline command is one line ending in LF, with an optional CR before
 * it. Its length is checked against max_inline while it is still arriving,
 * and the CR that may end it is not counted, so the outcome does not depend
 * on how the line was split across feeds. */
static int parse_inline(kv_resp_parser *p) {
  size_t avail = p->end - p->start;
  uint8_t *s = p->buf + p->start;
  const uint8_t *lf = memchr(s + p->scan, '\n', avail - p->scan);
  if (!lf) {
    p->scan = avail;
    if (avail - (s[avail - 1] == '\r') > p->lim.max_inline)
      return fail(p, KV_FRAME_TOO_LARGE, MSG_INLINE);
    return KV_AGAIN;
  }
  size_t nl = (size_t)(lf - s);
  size_t n = nl - (nl > 0 && s[nl - 1] == '\r');
  if (n > p->lim.max_inline) return fail(p, KV_FRAME_TOO_LARGE, MSG_INLINE);
  int rc = split_inline(p, s, n);
  if (rc != KV_OK) return rc;
  if (p->argc == 0) {
    consume(p, nl + 1); /* a blank line, skipped as Redis does */
  } else {
    p->cmdlen = nl + 1;
    p->st = ST_READY;
  }
  return KV_OK;
}

/* ---- Driver ---- */

/* Parses as far as the buffered bytes allow, stopping at the first whole
 * command: KV_OK when one is ready, KV_AGAIN when more bytes are needed, or
 * the (now sticky) error. */
static int advance(kv_resp_parser *p) {
  for (;;) {
    int rc = KV_OK;
    switch (p->st) {
    case ST_READY:
      return KV_OK;
    case ST_START:
      if (p->end == p->start) return KV_AGAIN;
      start_command(p);
      /* Like Redis: a command is multibulk if and only if it starts with
       * '*', anything else is an inline line. */
      p->st = p->buf[p->start] == '*' ? ST_COUNT : ST_INLINE;
      break;
    case ST_INLINE:
      rc = parse_inline(p);
      break;
    case ST_COUNT:
      rc = parse_count(p);
      break;
    case ST_BULK_HDR:
      rc = parse_bulk_header(p);
      break;
    case ST_BULK_BODY:
      rc = parse_bulk_body(p);
      break;
    }
    if (rc != KV_OK) return rc;
  }
}

int kv_resp_parser_feed(kv_resp_parser *p, const void *data, size_t len) {
  if (p->err) return p->err;
  if (len == 0) return KV_OK;
  make_room(p, len);
  memcpy(p->buf + p->end, data, len);
  p->end += len;
  int rc = advance(p);
  return rc == KV_AGAIN ? KV_OK : rc;
}

int kv_resp_parser_next(kv_resp_parser *p, kv_resp_cmd *out) {
  if (p->err) return p->err;
  int rc = advance(p);
  if (rc != KV_OK) return rc;
  uint8_t *base = p->buf + p->start;
  for (size_t i = 0; i < p->argc; i++)
    p->argv[i].data = base + p->argoff[i];
  out->argc = p->argc;
  out->argv = p->argv;
  /* The command's bytes are released now but not moved or overwritten
   * before the next feed, which is what keeps the views good until then. */
  consume(p, p->cmdlen);
  return KV_OK;
}

/* ---- Output buffer ---- */

static void out_reserve(kv_resp_out *o, size_t n) {
  if (o->data && o->cap - o->len >= n) return;
  if (n > SIZE_MAX / 4 - o->len) kv_panic("resp: reply of %zu bytes", n);
  size_t cap = o->cap ? o->cap : OUT_MIN;
  while (cap < o->len + n)
    cap *= 2;
  o->data = kv_realloc(o->data, cap);
  o->cap = cap;
}

void kv_resp_out_init(kv_resp_out *o) {
  o->data = NULL;
  o->len = o->cap = 0;
}

void kv_resp_out_fini(kv_resp_out *o) {
  free(o->data);
  kv_resp_out_init(o);
}

void kv_resp_out_append(kv_resp_out *o, const void *p, size_t len) {
  if (len == 0) return;
  out_reserve(o, len);
  memcpy(o->data + o->len, p, len);
  o->len += len;
}

uint8_t *kv_resp_out_extend(kv_resp_out *o, size_t n) {
  out_reserve(o, n);
  uint8_t *d = o->data + o->len;
  o->len += n;
  return d;
}

void kv_resp_out_consume(kv_resp_out *o, size_t n) {
  kv_assert(n <= o->len);
  if (n == 0) return;
  memmove(o->data, o->data + n, o->len - n);
  o->len -= n;
}

void kv_resp_out_reset(kv_resp_out *o) {
  o->len = 0;
  if (o->cap > BUF_KEEP) kv_resp_out_fini(o);
}

/* ---- Replies ---- */

static void sanitize(uint8_t *d, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (d[i] == '\r' || d[i] == '\n') d[i] = ' ';
}

/* "<type><text>\r\n" with CR and LF in text made spaces. */
static void put_line(kv_resp_out *o, char type, const char *text) {
  size_t n = strlen(text);
  uint8_t *d = kv_resp_out_extend(o, n + 3);
  d[0] = (uint8_t)type;
  memcpy(d + 1, text, n);
  sanitize(d + 1, n);
  d[n + 1] = '\r';
  d[n + 2] = '\n';
}

/* Writes the decimal form of a value of magnitude mag into the end of
 * tmp[0..24) and returns where it starts. Done by hand rather than with
 * snprintf, which is slower and depends on the locale. */
static char *format_int(char tmp[24], bool neg, uint64_t mag) {
  char *q = tmp + 24;
  do {
    *--q = (char)('0' + mag % 10);
    mag /= 10;
  } while (mag);
  if (neg) *--q = '-';
  return q;
}

/* "<type><n>\r\n": an integer reply or a bulk or array header. */
static void put_header(kv_resp_out *o, char type, bool neg, uint64_t mag) {
  char tmp[24];
  char *q = format_int(tmp, neg, mag);
  size_t n = (size_t)(tmp + 24 - q);
  uint8_t *d = kv_resp_out_extend(o, n + 3);
  d[0] = (uint8_t)type;
  memcpy(d + 1, q, n);
  d[n + 1] = '\r';
  d[n + 2] = '\n';
}

static uint64_t magnitude(int64_t v) {
  return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

void kv_resp_add_simple(kv_resp_out *o, const char *s) { put_line(o, '+', s); }

void kv_resp_add_error(kv_resp_out *o, const char *msg) {
  put_line(o, '-', msg);
}

void kv_resp_add_errorf(kv_resp_out *o, const char *fmt, ...) {
  va_list ap, again;
  va_start(ap, fmt);
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  kv_assert(n >= 0);
  /* One byte more than the reply, for the NUL that vsnprintf writes where
   * the CR then goes. */
  out_reserve(o, (size_t)n + 4);
  uint8_t *d = o->data + o->len;
  d[0] = '-';
  vsnprintf((char *)d + 1, (size_t)n + 1, fmt, again);
  va_end(again);
  sanitize(d + 1, (size_t)n);
  d[n + 1] = '\r';
  d[n + 2] = '\n';
  o->len += (size_t)n + 3;
}

void kv_resp_add_kv_error(kv_resp_out *o, int err) {
  kv_assert(err != KV_OK);
  switch (err) {
  case KV_WRONG_TYPE:
    kv_resp_add_error(
        o, "WRONGTYPE Operation against a key holding the wrong kind of value");
    break;
  case KV_AUTH_REQUIRED:
    kv_resp_add_error(o, "NOAUTH Authentication required.");
    break;
  case KV_AUTH_FAILED:
    kv_resp_add_error(
        o, "WRONGPASS invalid username-password pair or user is disabled.");
    break;
  case KV_OVERFLOW:
    kv_resp_add_error(o, "ERR increment or decrement would overflow");
    break;
  default:
    kv_resp_add_errorf(o, "ERR %s", kv_strerror(err));
    break;
  }
}

void kv_resp_add_int(kv_resp_out *o, int64_t v) {
  put_header(o, ':', v < 0, magnitude(v));
}

void kv_resp_add_bulk(kv_resp_out *o, const void *p, size_t len) {
  put_header(o, '$', false, len);
  uint8_t *d = kv_resp_out_extend(o, len + 2);
  if (len) memcpy(d, p, len);
  d[len] = '\r';
  d[len + 1] = '\n';
}

void kv_resp_add_bulk_int(kv_resp_out *o, int64_t v) {
  char tmp[24];
  char *q = format_int(tmp, v < 0, magnitude(v));
  kv_resp_add_bulk(o, q, (size_t)(tmp + 24 - q));
}

void kv_resp_add_null(kv_resp_out *o) { kv_resp_out_append(o, "$-1\r\n", 5); }

void kv_resp_add_array(kv_resp_out *o, size_t n) {
  put_header(o, '*', false, n);
}

void kv_resp_add_null_array(kv_resp_out *o) {
  kv_resp_out_append(o, "*-1\r\n", 5);
}
