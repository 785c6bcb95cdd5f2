/*
 * Shared scaffolding of the integration tests: a cmocka fixture that owns up
 * to four kvd instances, arms a per-test watchdog, prints each instance's log
 * tail when a test did not reach its end, and always cleans up; plus small
 * helpers for libkvclient connections, raw native requests (the generated
 * protobuf-c code that libkvclient.a carries) and RESP commands. Included by
 * each *_test.c; everything here is static inline so a binary may use any
 * subset.
 *
 * Assertions run on the test's main thread only: worker threads record
 * their failures and the main thread checks them (cmocka's longjmp must not
 * cross threads).
 */
#ifndef KV_ITEST_H
#define KV_ITEST_H

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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/kvclient.h"
#include "proto/kv.pb-c.h"
#include "tests/integration/harness.h"

#define IT_NKVD 8

typedef struct it_fixture {
  kvdh k[IT_NKVD];
  bool passed; /* set by IT_END: the body ran to its end */
} it_fixture;

static inline int it_setup(void **state) {
  it_fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  *state = f;
  return 0;
}

static inline int it_teardown(void **state) {
  it_fixture *f = *state;
  kvdh_watchdog(NULL, 0);
  for (int i = 0; i < IT_NKVD; i++) {
    if (!f->passed && f->k[i].dir[0]) {
      fprintf(stderr, "[ kvd %d ] log (the test failed):\n", i);
      kvdh_dump_log(&f->k[i]);
    }
    kvdh_cleanup(&f->k[i]);
  }
  free(f);
  return 0;
}

/* Starts a test body: f is the fixture; the watchdog gets secs seconds. */
#define IT_BEGIN(f, secs)                                                      \
  it_fixture *f = *state;                                                      \
  kvdh_watchdog(__func__, (secs))
#define IT_END(f) ((f)->passed = true)
#define IT_TEST(fn) cmocka_unit_test_setup_teardown(fn, it_setup, it_teardown)

/* Sets p's extra arguments (NULL-terminated list). */
static inline void it_args(kvdh *p, ...) {
  va_list ap;
  va_start(ap, p);
  int n = 0;
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && n < 15)
    p->extra[n++] = a;
  p->extra[n] = NULL;
  va_end(ap);
}

/* Starts p or fails the test. */
static inline void it_start(kvdh *p) {
  if (kvdh_start(p) != 0) fail_msg("kvd did not start");
}

/* Fails the test if p's kvd has died (saying how it ended). */
static inline void it_alive(kvdh *p) {
  int st = 0;
  if (!kvdh_alive(p, &st))
    fail_msg("kvd is not running any more (%s %d)",
             WIFSIGNALED(st) ? "killed by signal" : "exit status",
             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

/* A libkvclient connection to p's native port, or the test fails. */
static inline kvc_conn *it_conn_opts(kvdh *p, const kvc_options *o) {
  kvc_conn *c = NULL;
  int rc = kvc_connect("127.0.0.1", p->native_port, o, &c);
  if (rc != KVC_OK) {
    fprintf(stderr, "kvc_connect: %s (%s)\n", kvc_errname(rc), kvc_errmsg(c));
    kvc_close(c);
    fail_msg("cannot connect to kvd's native port %d", p->native_port);
  }
  return c;
}

static inline kvc_conn *it_conn(kvdh *p) { return it_conn_opts(p, NULL); }

/* A raw TCP connection to port, or the test fails. */
static inline int it_fd(int port) {
  int fd = kvdh_connect(port);
  if (fd < 0) fail_msg("cannot connect to port %d", port);
  return fd;
}

/* Asserts a kvc status with both names in the message. */
#define assert_kvc(rc, want)                                                   \
  do {                                                                         \
    int rc_ = (rc), want_ = (want);                                            \
    if (rc_ != want_)                                                          \
      fail_msg("%s:%d: got %s (%d), want %s (%d)", __FILE__, __LINE__,         \
               kvc_errname(rc_), rc_, kvc_errname(want_), want_);              \
  } while (0)

/* The bytes of a GET result's sibling i, as a NUL-terminated copy in buf. */
static inline const char *it_sibling(const kvc_result *r, size_t i, char *buf,
                                     size_t cap) {
  const uint8_t *d;
  size_t n;
  if (kvc_result_sibling(r, i, &d, &n) != KVC_OK) return NULL;
  if (n >= cap) n = cap - 1;
  memcpy(buf, d, n);
  buf[n] = 0;
  return buf;
}

/* True if the GET result r holds a sibling equal to s. */
static inline bool it_has_sibling(const kvc_result *r, const char *s) {
  for (size_t i = 0; i < kvc_result_siblings(r); i++) {
    const uint8_t *d;
    size_t n;
    if (kvc_result_sibling(r, i, &d, &n) == KVC_OK && n == strlen(s) &&
        memcmp(d, s, n) == 0)
      return true;
  }
  return false;
}

/* ---- raw native requests ---- */

/* Packs req and sends it as one frame. */
static inline void it_native_send(int fd, const Kvpb__Request *req) {
  size_t n = kvpb__request__get_packed_size(req);
  uint8_t *b = malloc(n ? n : 1);
  kvpb__request__pack(req, b);
  int rc = kvdh_frame_write(fd, b, n);
  free(b);
  if (rc) fail_msg("cannot send a native frame");
}

/* Reads one response frame and decodes it (caller frees with
 * kvpb__response__free_unpacked); fails the test if none arrives or it
 * does not decode. */
static inline Kvpb__Response *it_native_recv(int fd) {
  uint8_t *b;
  size_t n;
  if (kvdh_frame_read(fd, 64u << 20, &b, &n)) fail_msg("no native response");
  Kvpb__Response *r = kvpb__response__unpack(NULL, n, b);
  free(b);
  if (!r) fail_msg("native response does not decode");
  return r;
}

/* A Get request for key (len bytes). */
static inline Kvpb__Response *it_native_get(int fd, uint64_t id,
                                            const void *key, size_t len) {
  Kvpb__Request req = KVPB__REQUEST__INIT;
  Kvpb__GetReq g = KVPB__GET_REQ__INIT;
  req.id = id;
  req.body_case = KVPB__REQUEST__BODY_GET;
  req.get = &g;
  g.key.data = (uint8_t *)key;
  g.key.len = len;
  it_native_send(fd, &req);
  return it_native_recv(fd);
}

/* The wire code of a KVC_* status (the codes are the negated values). */
#define WIRE(kvc) ((uint32_t)(-(kvc)))

/* ---- RESP ---- */

/* Sends a command given as words (NULL-terminated) and returns the rendered
 * reply in a static buffer; fails the test if the connection broke. */
static inline const char *it_cmd(int fd, ...) {
  static char out[65536];
  const char *argv[64];
  int argc = 0;
  va_list ap;
  va_start(ap, fd);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 64)
    argv[argc++] = a;
  va_end(ap);
  if (kvdh_resp(fd, argc, argv, NULL, out, sizeof out))
    fail_msg("RESP connection failed during %s", argv[0]);
  return out;
}

/* True if s starts with prefix. */
static inline bool it_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

#define RESP(fd, ...) it_cmd((fd), __VA_ARGS__, (const char *)NULL)

#endif
