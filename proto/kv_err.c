/*
 * Tables generated from KV_ERR_MAP, and the panic path for broken invariants.
 */
#include "proto/kv_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *kv_strerror(int err) {
  switch (err) {
#define KV_ERR_MSG(name, val, msg)                                             \
  case val:                                                                    \
    return msg;
    KV_ERR_MAP(KV_ERR_MSG)
#undef KV_ERR_MSG
  }
  return "unknown error";
}

const char *kv_err_name(int err) {
  switch (err) {
#define KV_ERR_NAME(name, val, msg)                                            \
  case val:                                                                    \
    return #name;
    KV_ERR_MAP(KV_ERR_NAME)
#undef KV_ERR_NAME
  }
  return "UNKNOWN";
}

unsigned kv_err_to_wire(int err) {
  switch (err) {
#define KV_ERR_TO_WIRE(name, val, msg)                                         \
  case val:                                                                    \
    return (unsigned)-(val);
    KV_ERR_MAP(KV_ERR_TO_WIRE)
#undef KV_ERR_TO_WIRE
  }
  /* A value outside the list is a bug on this side; never send it as success
   * or negate an arbitrary int. */
  return (unsigned)-KV_IO;
}

int kv_err_from_wire(unsigned code) {
  switch (code) {
#define KV_ERR_WIRE(name, val, msg)                                            \
  case (unsigned)-(val):                                                       \
    return val;
    KV_ERR_MAP(KV_ERR_WIRE)
#undef KV_ERR_WIRE
  }
  return KV_BAD_REQUEST;
}

void kv_panic_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "level=fatal event=panic at=%s:%d msg=\"", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\"\n", stderr);
  abort();
}
