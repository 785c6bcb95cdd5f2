/*
 * The Redis protocol (RESP2) for kvd's Redis-compatible port, sans-I/O: a
 * parser that takes whatever bytes arrived and hands out whole commands, and
 * reply builders that append to an output buffer the server writes out.
 *
 * The parser keeps one input buffer and hands out arguments as views into it,
 * so no bulk payload is copied twice. Every length a peer announces is checked
 * against kv_resp_limits as soon as its header line is complete, before the
 * payload is buffered, so a connection's memory is bounded by the limits plus
 * what the server fed in one call. Errors are sticky: after one, the
 * connection is to get the error as a reply and be closed, as Redis does.
 */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"
#include "proto/kv_err.h"

/* ---- Parser ---- */

/* Limits on what one command may announce. A field left 0 takes its default.
 * Exceeding one is KV_FRAME_TOO_LARGE. */
typedef struct kv_resp_limits {
  size_t max_args;    /* arguments in one command */
  size_t max_bulk;    /* bytes in one bulk argument */
  size_t max_inline;  /* bytes in one inline command line, CR LF excluded */
  size_t max_command; /* bytes of one multibulk command as sent, headers
                         included */
} kv_resp_limits;

/* Defaults. Redis allows 1M+ arguments and 512 MiB bulks; ours are sized to
 * the store: a value may be up to max-value-bytes (16 MiB), and a bulk a
 * little above that still reaches the store, which refuses it with a clean
 * reply instead of the connection being dropped. 20 MiB is also the native
 * protocol's default max-frame-bytes. */
#define KV_RESP_DEFAULT_MAX_ARGS 65536u
#define KV_RESP_DEFAULT_MAX_BULK (20u << 20)
#define KV_RESP_DEFAULT_MAX_INLINE (64u << 10)
#define KV_RESP_DEFAULT_MAX_COMMAND (64u << 20)

typedef struct kv_resp_parser kv_resp_parser;

/* One command: argc >= 1 arguments, argv[0] being the command name as sent
 * (not case-folded). Each argv[i] is a view into the parser's buffer, borrowed
 * until the next kv_resp_parser_feed, _next or _free call on that parser; the
 * caller may modify those bytes in place (to fold case, say) but must not
 * free them. argv itself is the parser's array, borrowed likewise. */
typedef struct kv_resp_cmd {
  size_t argc;
  kv_buf *argv;
} kv_resp_cmd;

/* A parser with the given limits (copied; NULL means all defaults). Caller
 * frees with kv_resp_parser_free. Never NULL (allocation failure panics). */
kv_resp_parser *kv_resp_parser_new(const kv_resp_limits *lim);

/* NULL does nothing. Invalidates every view the parser handed out. */
void kv_resp_parser_free(kv_resp_parser *p);

/* Replaces the limits (copied; NULL means defaults). They apply to every
 * header not yet parsed; a header already accepted stays accepted. The
 * parser never reads past the first whole command buffered, so calling this
 * between two _next calls governs everything from the next command on (a
 * server can, say, keep limits small until AUTH succeeds, as Redis does for
 * unauthenticated clients). */
void kv_resp_parser_set_limits(kv_resp_parser *p, const kv_resp_limits *lim);

/* Appends len bytes at data (copied; data may be NULL if len is 0) and checks
 * the headers of the command in progress, so that a bad or oversized header
 * is refused by the feed that completes it. Invalidates the views of the last
 * command handed out. Returns KV_OK or the sticky error (see _next): one
 * found in these bytes, or an earlier one, in which case the bytes are
 * dropped.
 *
 * Headers past the first whole command are checked by _next, not here: call
 * _next until it returns something other than KV_OK before feeding again, or
 * bytes pile up unchecked (kv_resp_parser_pending counts them). */
KV_WARN_UNUSED int kv_resp_parser_feed(kv_resp_parser *p, const void *data,
                                       size_t len);

/* Takes the next whole command into *out (see kv_resp_cmd for how long its
 * views live). Empty commands are skipped as Redis skips them: blank inline
 * lines, "*0" and "*-N". Returns
 *   KV_OK              a command is in *out;
 *   KV_AGAIN           no whole command is buffered yet (*out untouched);
 *   KV_BAD_REQUEST     malformed input: a length that is not a number as
 *                      Redis writes them, a negative bulk length, a header
 *                      line too long to be valid, a bulk not followed by
 *                      CR LF, something other than '$' where a bulk was
 *                      due, unbalanced quotes in an inline command;
 *   KV_FRAME_TOO_LARGE a limit is exceeded.
 * Both errors are sticky: every later _feed and _next returns the same one
 * and kv_resp_parser_error says why. Commands that arrived before the bad
 * bytes are still handed out first, in order. Consuming a command costs
 * O(its size); the buffer is compacted lazily. */
KV_WARN_UNUSED int kv_resp_parser_next(kv_resp_parser *p, kv_resp_cmd *out);

/* Why the parser failed, in Redis's words where Redis has them ("Protocol
 * error: invalid bulk length"), without the "ERR " code word, the leading '-'
 * or CR LF; NULL while the parser has not failed. The string belongs to the
 * parser and lives until kv_resp_parser_free. A server replies with it as
 * kv_resp_add_errorf(out, "ERR %s", msg) and then closes the connection. */
const char *kv_resp_parser_error(const kv_resp_parser *p);

/* Bytes fed but not yet handed out as commands or skipped: the partial
 * command in progress plus anything buffered behind a whole command. */
size_t kv_resp_parser_pending(const kv_resp_parser *p);

/* Bytes of heap the parser holds (buffer and argument arrays), for memory
 * accounting. It grows with the command in progress and shrinks again once
 * a large command has been consumed. */
size_t kv_resp_parser_memory(const kv_resp_parser *p);

/* ---- Replies ---- */

/* A growable output buffer: data[0..len) are the bytes to send. Caller
 * storage; a zeroed struct is a valid empty buffer, as is one after
 * kv_resp_out_init. Appending may move data, so a pointer into it is good
 * only until the next append. Nothing bounds len here: a server that lets a
 * client pipeline without reading replies should check len (Redis's
 * client-output-buffer-limit). */
typedef struct kv_resp_out {
  uint8_t *data;
  size_t len, cap;
} kv_resp_out;

void kv_resp_out_init(kv_resp_out *o);

/* Frees the bytes and leaves *o empty (reusable). */
void kv_resp_out_fini(kv_resp_out *o);

/* Appends len bytes at p verbatim (copied; p may be NULL if len is 0). */
void kv_resp_out_append(kv_resp_out *o, const void *p, size_t len);

/* Grows len by n and returns the first of those n bytes, uninitialised, for
 * the caller to fill (a protobuf packed in place, say); the pointer is good
 * until the next call on o. */
uint8_t *kv_resp_out_extend(kv_resp_out *o, size_t n);

/* Drops the first n bytes (those a socket write took), n <= len; the rest
 * move to the front, which costs O(len - n). */
void kv_resp_out_consume(kv_resp_out *o, size_t n);

/* Empties the buffer. Capacity up to 64 KiB is kept for the next replies; a
 * larger buffer (one big reply) is freed so that it does not stay pinned. */
void kv_resp_out_reset(kv_resp_out *o);

/* The builders append one RESP2 reply (or an array header) each. Text
 * arguments are NUL-terminated and copied; a CR or LF in them would end the
 * line early and desynchronise the client, so each becomes a space. */

/* "+<s>\r\n", e.g. kv_resp_add_simple(o, "OK"). */
void kv_resp_add_simple(kv_resp_out *o, const char *s);

/* "-<msg>\r\n". msg is the whole error text starting with its upper-case
 * code word, as Redis sends it: "ERR syntax error", "WRONGTYPE ...". */
void kv_resp_add_error(kv_resp_out *o, const char *msg);

/* kv_resp_add_error with printf formatting, for messages quoting what the
 * client sent: kv_resp_add_errorf(o, "ERR unknown command '%.*s'", n, s). */
void kv_resp_add_errorf(kv_resp_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The error reply for a kv_err code (err != KV_OK), in Redis's words where
 * Redis has an equivalent: KV_WRONG_TYPE "-WRONGTYPE Operation against a key
 * holding the wrong kind of value", KV_AUTH_REQUIRED "-NOAUTH Authentication
 * required.", KV_AUTH_FAILED "-WRONGPASS invalid username-password pair or
 * user is disabled.", KV_OVERFLOW "-ERR increment or decrement would
 * overflow"; any other code "-ERR <kv_strerror(err)>". */
void kv_resp_add_kv_error(kv_resp_out *o, int err);

/* ":<v>\r\n". */
void kv_resp_add_int(kv_resp_out *o, int64_t v);

/* "$<len>\r\n<bytes>\r\n", binary-safe (p copied; NULL if len is 0). */
void kv_resp_add_bulk(kv_resp_out *o, const void *p, size_t len);

/* v in decimal as a bulk string, as Redis's GET returns a counter. */
void kv_resp_add_bulk_int(kv_resp_out *o, int64_t v);

/* "$-1\r\n": the null bulk string (GET of a missing key). */
void kv_resp_add_null(kv_resp_out *o);

/* "*<n>\r\n": the header of an array whose n elements follow as replies. */
void kv_resp_add_array(kv_resp_out *o, size_t n);

/* "*-1\r\n": the null array. */
void kv_resp_add_null_array(kv_resp_out *o);

#endif
