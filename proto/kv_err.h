/*
 * The project's one error list. KV_ERR_MAP generates the enum, kv_strerror(),
 * kv_err_name() and the wire codes, so a code means the same thing in a
 * function's return value, on the wire and in kvctl's messages.
 *
 * Invariants: KV_OK is 0 and every error is negative; the wire code of an error
 * is its negated value and is never reused or renumbered (add, don't rename).
 * KV_NOTFOUND is a normal outcome, not a failure.
 */
#ifndef KV_ERR_H
#define KV_ERR_H

#define KV_WARN_UNUSED __attribute__((warn_unused_result))

/* X(NAME, value, message). Values are stable wire codes; append new ones. */
#define KV_ERR_MAP(X)                                                          \
  X(OK, 0, "success")                                                          \
  X(NOTFOUND, -1, "key not found")                                             \
  X(KEY_TOO_LONG, -2, "key is longer than 507 bytes or empty")                 \
  X(VALUE_TOO_LARGE, -3, "value is larger than the configured maximum")        \
  X(WRONG_TYPE, -4, "operation against a key holding the wrong kind of value") \
  X(TOO_MANY_SIBLINGS, -5, "write would exceed the sibling limit")             \
  X(STORE_FULL, -6, "the store's map is full")                                 \
  X(OVERFLOW, -7, "counter would overflow 64-bit signed range")                \
  X(GCOUNTER_DECREMENT, -8, "a G-counter cannot be decremented")               \
  X(BAD_CONTEXT, -9, "malformed causal context")                               \
  X(CORRUPT, -10, "malformed or corrupt encoded object")                       \
  X(FRAME_TOO_LARGE, -11, "frame length exceeds the configured maximum")       \
  X(BAD_REQUEST, -12, "malformed request")                                     \
  X(INVALID, -13, "invalid argument")                                          \
  X(IO, -14, "input/output or system error")                                   \
  X(NOMEM, -15, "out of memory")                                               \
  X(CLOSED, -16, "shut down or connection closed")                             \
  X(TIMEOUT, -17, "timed out")                                                 \
  X(AUTH_REQUIRED, -18, "authentication required")                             \
  X(AUTH_FAILED, -19, "authentication failed")                                 \
  X(VERIFY_MISMATCH, -20, "stored Merkle leaves differ from the objects")      \
  X(INCOMPATIBLE, -21, "data directory or peer is incompatible")               \
  X(AGAIN, -22, "not enough input yet")

typedef enum kv_err {
#define KV_ERR_ENUM(name, val, msg) KV_##name = (val),
  KV_ERR_MAP(KV_ERR_ENUM)
#undef KV_ERR_ENUM
} kv_err;

/* A static description of err ("unknown error" for a value not in the list).
 * Never NULL; the string is static and must not be freed. */
const char *kv_strerror(int err);

/* The bare name of err ("NOTFOUND", "KEY_TOO_LONG", ...), or "UNKNOWN". */
const char *kv_err_name(int err);

/* The wire code of err: a non-negative integer, 0 for KV_OK. A value that is
 * not in the list (a bug) is sent as KV_IO's code, never as success. */
unsigned kv_err_to_wire(int err);

/* The error for a wire code received from outside. An unknown code maps to
 * KV_BAD_REQUEST rather than being trusted. */
int kv_err_from_wire(unsigned code);

/* Broken invariants abort with a message; bad input from outside never
 * reaches these (it gets an error code). */
_Noreturn void kv_panic_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define kv_panic(...) kv_panic_at(__FILE__, __LINE__, __VA_ARGS__)
#define kv_assert(cond)                                                        \
  do {                                                                         \
    if (!(cond)) kv_panic("assertion failed: %s", #cond);                      \
  } while (0)

#endif
