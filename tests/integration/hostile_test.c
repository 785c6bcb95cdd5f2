/*
 * Integration tests of kvd against hostile or broken clients: garbage bytes,
 * oversize length prefixes, truncated frames (closed, or stalled and then
 * completed), RESP protocol errors and floods of unknown commands, clients
 * that vanish (RST) while replies are queued for them, and a SIGTERM while a
 * slow reader holds a backlog. Each case checks that the offender gets a
 * clear error (or is closed) while OTHER clients keep being served, during
 * and after, and that kvd is still running. Durability is not tested here,
 * so kvd runs with --sync none.
 */
#include <netinet/in.h>
#include <poll.h>

#include "tests/integration/itest.h"

/* Another client, connected before the hostile one: it must keep working. */
typedef struct bystander {
  kvdh *p;
  kvc_conn *c;
  int resp;
  int n;
} bystander;

static void bystander_open(bystander *b, kvdh *p) {
  b->p = p;
  b->c = it_conn(p);
  b->resp = it_fd(p->resp_port);
  b->n = 0;
}

/* A write and read on the old connections and on fresh ones. */
static void bystander_check(bystander *b) {
  it_alive(b->p);
  char k[32];
  int kn = snprintf(k, sizeof k, "bystander:%d", b->n++);
  assert_kvc(kvc_put(b->c, k, (size_t)kn, "ok", 2, NULL, 0), KVC_OK);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(b->c, k, (size_t)kn, &r), KVC_OK);
  assert_true(it_has_sibling(r, "ok"));
  kvc_result_free(r);
  assert_string_equal(RESP(b->resp, "GET", k), "ok");
  kvc_conn *c = it_conn(b->p);
  assert_kvc(kvc_get(c, k, (size_t)kn, &r), KVC_OK);
  kvc_result_free(r);
  kvc_close(c);
  int fd = it_fd(b->p->resp_port);
  assert_string_equal(RESP(fd, "PING"), "PONG");
  close(fd);
}

static void bystander_close(bystander *b) {
  kvc_close(b->c);
  close(b->resp);
}

/* connected_clients from INFO (the asking connection included). */
static int connected_clients(kvdh *p) {
  int fd = it_fd(p->resp_port);
  const char *info = RESP(fd, "INFO");
  const char *cc = strstr(info, "connected_clients:");
  int n = cc ? atoi(cc + 18) : -1;
  close(fd);
  return n;
}

/* Waits (up to 3 s) for kvd to count want connections. */
static void wait_clients(kvdh *p, int want) {
  int n = -1;
  for (int i = 0; i < 300 && (n = connected_clients(p)) != want; i++)
    kvdh_sleep_ms(10);
  if (n != want) fail_msg("connected_clients is %d, want %d", n, want);
}

static void close_with_reset(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static void start_plain(it_fixture *f) {
  it_args(&f->k[0], "--sync", "none", "--max-value-bytes", "16k",
          "--max-frame-bytes", "64k", NULL);
  it_start(&f->k[0]);
}

/* ---- native ---- */

static void test_hostile_native_garbage_bytes(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);

  /* Text sent to the native port: "GET " is a length of ~1.2 GB. */
  int fd = it_fd(f->k[0].native_port);
  assert_int_equal(kvdh_write_all(fd, "GET foo\r\n", 9), 0);
  bystander_check(&b);
  Kvpb__Response *resp = it_native_recv(fd);
  assert_int_equal(resp->error, WIRE(KVC_FRAME_TOO_LARGE));
  kvpb__response__free_unpacked(resp, NULL);
  assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
  close(fd);
  bystander_check(&b);

  /* Frames of the right size holding random bytes: one BAD_REQUEST each
   * (or, where the bytes happen to decode, some other answer), and the
   * connection stays open. */
  fd = it_fd(f->k[0].native_port);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 50; i++) {
    uint8_t body[64];
    size_t len = 1 + (size_t)(i % 63);
    for (size_t j = 0; j < len; j++) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      body[j] = (uint8_t)seed;
    }
    body[0] = 0xff; /* an invalid field number: never decodes */
    assert_int_equal(kvdh_frame_write(fd, body, len), 0);
  }
  for (int i = 0; i < 50; i++) {
    resp = it_native_recv(fd);
    assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
    kvpb__response__free_unpacked(resp, NULL);
  }
  bystander_check(&b);
  resp = it_native_get(fd, 5, "bystander:0", 11);
  assert_int_equal(resp->id, 5);
  assert_int_equal(resp->error, 0);
  kvpb__response__free_unpacked(resp, NULL);
  close(fd);
  bystander_close(&b);
  IT_END(f);
}

static void test_hostile_native_oversize_length_prefix(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);
  const uint32_t lens[] = {64 * 1024 + 1, 0x7fffffff, 0xffffffff};
  for (size_t i = 0; i < 3; i++) {
    int fd = it_fd(f->k[0].native_port);
    uint8_t hdr[4] = {(uint8_t)(lens[i] >> 24), (uint8_t)(lens[i] >> 16),
                      (uint8_t)(lens[i] >> 8), (uint8_t)lens[i]};
    assert_int_equal(kvdh_write_all(fd, hdr, 4), 0);
    /* Some of the announced body follows; kvd must not wait for it. */
    static uint8_t junk[8192];
    assert_int_equal(kvdh_write_all(fd, junk, sizeof junk), 0);
    Kvpb__Response *resp = it_native_recv(fd);
    assert_int_equal(resp->id, 0);
    assert_int_equal(resp->error, WIRE(KVC_FRAME_TOO_LARGE));
    assert_true(resp->message && strlen(resp->message) > 0);
    kvpb__response__free_unpacked(resp, NULL);
    bystander_check(&b);
    assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
    close(fd);
    bystander_check(&b);
  }
  assert_true(kvdh_log_contains(&f->k[0], "frame_too_large"));

  /* A frame of exactly the maximum is accepted (and, being garbage, gets
   * BAD_REQUEST on a connection that stays open). */
  int fd = it_fd(f->k[0].native_port);
  static uint8_t body[64 * 1024];
  memset(body, 0xff, sizeof body);
  assert_int_equal(kvdh_frame_write(fd, body, sizeof body), 0);
  Kvpb__Response *resp = it_native_recv(fd);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_get(fd, 9, "x", 1);
  assert_int_equal(resp->id, 9);
  assert_int_equal(resp->error, WIRE(KVC_NOTFOUND));
  kvpb__response__free_unpacked(resp, NULL);
  close(fd);
  bystander_close(&b);
  IT_END(f);
}

static void test_hostile_native_truncated_frame_then_close(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);
  int base = connected_clients(&f->k[0]);
  for (int i = 0; i < 50; i++) {
    int fd = it_fd(f->k[0].native_port);
    /* Half a header, or a header and half a body. */
    static const uint8_t half_hdr[2] = {0, 0};
    static const uint8_t half_body[4 + 10] = {0, 0, 0, 20, 8, 1};
    if (i % 2)
      assert_int_equal(kvdh_write_all(fd, half_hdr, 2), 0);
    else
      assert_int_equal(kvdh_write_all(fd, half_body, sizeof half_body), 0);
    if (i % 5 == 0)
      close_with_reset(fd);
    else
      close(fd);
  }
  bystander_check(&b);
  /* Every one of them is gone: nothing leaks per broken client. */
  wait_clients(&f->k[0], base);
  bystander_check(&b);
  bystander_close(&b);
  IT_END(f);
}

static void test_hostile_native_truncated_frame_then_stall(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);
  int fd = it_fd(f->k[0].native_port);
  Kvpb__Request req = KVPB__REQUEST__INIT;
  Kvpb__PutReq p = KVPB__PUT_REQ__INIT;
  req.id = 42;
  req.body_case = KVPB__REQUEST__BODY_PUT;
  req.put = &p;
  p.key.data = (uint8_t *)"stalled";
  p.key.len = 7;
  p.value.data = (uint8_t *)"finally";
  p.value.len = 7;
  size_t n = kvpb__request__get_packed_size(&req);
  uint8_t buf[128];
  buf[0] = 0, buf[1] = 0, buf[2] = 0, buf[3] = (uint8_t)n;
  kvpb__request__pack(&req, buf + 4);
  /* Half the frame, then nothing for a while: others are served. */
  assert_int_equal(kvdh_write_all(fd, buf, 4 + n / 2), 0);
  for (int i = 0; i < 20; i++)
    bystander_check(&b);
  kvdh_sleep_ms(200);
  bystander_check(&b);
  /* The stalled client finishes its frame and gets its answer. */
  assert_int_equal(kvdh_write_all(fd, buf + 4 + n / 2, n - n / 2), 0);
  Kvpb__Response *resp = it_native_recv(fd);
  assert_int_equal(resp->id, 42);
  assert_int_equal(resp->error, 0);
  kvpb__response__free_unpacked(resp, NULL);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(b.c, "stalled", 7, &r), KVC_OK);
  assert_true(it_has_sibling(r, "finally"));
  kvc_result_free(r);
  /* A stalled header (two of four bytes) does not block others either. */
  int fd2 = it_fd(f->k[0].native_port);
  assert_int_equal(kvdh_write_all(fd2, buf, 2), 0);
  bystander_check(&b);
  close(fd2);
  close(fd);
  bystander_close(&b);
  IT_END(f);
}

/* ---- RESP ---- */

static void test_hostile_resp_protocol_errors(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);
  struct {
    const char *in;
    const char *want;
  } cases[] = {
      {"*1\r\n+foo\r\n", "-ERR Protocol error: expected '$', got '+'"},
      {"*abc\r\n", "-ERR Protocol error: invalid multibulk length"},
      {"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"},
      {"*1\r\n$99999999999\r\n", "-ERR Protocol error: invalid bulk length"},
      {"*2\r\n$3\r\nGET\r\n$1\r\nabXY",
       "-ERR Protocol error: missing CRLF after bulk data"},
      {"SET k \"unterminated\r\n",
       "-ERR Protocol error: unbalanced quotes in request"},
      {"*99999999\r\n", "-ERR Protocol error: invalid multibulk length"},
      {"*1\r\n$1111111111111111111111111111111111111\r\n",
       "-ERR Protocol error: too big bulk count string"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int fd = it_fd(f->k[0].resp_port);
    /* A good command first, in the same write: it is answered. */
    char in[256];
    int n = snprintf(in, sizeof in, "PING\r\n%s", cases[i].in);
    assert_int_equal(kvdh_write_all(fd, in, (size_t)n), 0);
    char out[256];
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    assert_string_equal(out, "PONG");
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    if (strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: got '%s', want '%s'", i, out, cases[i].want);
    bystander_check(&b);
    /* A protocol error ends the connection. */
    assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
    close(fd);
    bystander_check(&b);
  }
  assert_true(kvdh_log_contains(&f->k[0], "resp_protocol_error"));
  bystander_close(&b);
  IT_END(f);
}

static void test_hostile_resp_unknown_commands_and_garbage(void **state) {
  IT_BEGIN(f, 30);
  start_plain(f);
  bystander b;
  bystander_open(&b, &f->k[0]);
  int fd = it_fd(f->k[0].resp_port);
  /* A flood of unknown commands: an error each, the connection stays. */
  enum { N = 2000 };
  static char buf[N * 24];
  size_t len = 0;
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            "*1\r\n$6\r\nNOPE%02d\r\n", i % 100);
  assert_int_equal(kvdh_write_all(fd, buf, len), 0);
  bystander_check(&b);
  for (int i = 0; i < N; i++) {
    char out[256], want[128];
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    snprintf(
        want, sizeof want,
        "-ERR unknown command 'NOPE%02d', with args beginning with: ", i % 100);
    assert_string_equal(out, want);
  }
  assert_string_equal(RESP(fd, "PING"), "PONG");
  /* Binary garbage as an inline command: an error, not a crash. */
  const uint8_t junk[] = {0x01, 0x02, 0xfe, 0xff, ' ', 0x80, '\r', '\n'};
  assert_int_equal(kvdh_write_all(fd, junk, sizeof junk), 0);
  char out[256];
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_true(it_prefix(out, "-ERR unknown command"));
  assert_string_equal(RESP(fd, "PING"), "PONG");
  bystander_check(&b);
  close(fd);
  bystander_close(&b);
  IT_END(f);
}

/* ---- clients that vanish, slow readers ---- */

/* Sends count requests for a 1 MiB value, one every 10 ms, never reading
 * the replies, so that kvd's queue for this client grows past what the
 * socket holds; then resets the connection. */
static void vanish_with_backlog(int port, bool native, int count) {
  int fd = it_fd(port);
  for (int i = 0; i < count; i++) {
    if (native) {
      Kvpb__Request req = KVPB__REQUEST__INIT;
      Kvpb__GetReq g = KVPB__GET_REQ__INIT;
      req.id = (uint64_t)i + 1;
      req.body_case = KVPB__REQUEST__BODY_GET;
      req.get = &g;
      g.key.data = (uint8_t *)"big";
      g.key.len = 3;
      it_native_send(fd, &req);
    } else {
      const char *get = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
      if (kvdh_write_all(fd, get, strlen(get))) break;
    }
    kvdh_sleep_ms(10);
  }
  close_with_reset(fd);
}

/* A client that disappears while kvd still has replies queued for it must
 * cost kvd that connection only (a write to a reset socket is EPIPE: kvd
 * must not die of SIGPIPE). */
static void test_hostile_client_vanishes_with_reply_backlog(void **state) {
  IT_BEGIN(f, 60);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  bystander b;
  bystander_open(&b, &f->k[0]);
  static char big[1 << 20];
  memset(big, 'B', sizeof big);
  assert_kvc(kvc_put(b.c, "big", 3, big, sizeof big, NULL, 0), KVC_OK);
  int base = connected_clients(&f->k[0]);
  for (int round = 0; round < 2; round++) {
    vanish_with_backlog(f->k[0].resp_port, false, 40);
    kvdh_sleep_ms(300);
    bystander_check(&b);
    vanish_with_backlog(f->k[0].native_port, true, 40);
    kvdh_sleep_ms(300);
    bystander_check(&b);
  }
  wait_clients(&f->k[0], base);
  bystander_close(&b);
  IT_END(f);
}

/* SIGTERM while a slow reader has megabytes of replies queued: kvd answers
 * everything it received, and exits (0) as soon as the reader has drained
 * them, not after its 10 s shutdown timeout. */
static void test_hostile_sigterm_with_slow_reader_exits_promptly(void **state) {
  IT_BEGIN(f, 60);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  static char big[1 << 20];
  memset(big, 'B', sizeof big);
  assert_kvc(kvc_put(c, "big", 3, big, sizeof big, NULL, 0), KVC_OK);
  kvc_close(c);

  int fd = it_fd(f->k[0].resp_port);
  enum { N = 12 };
  /* One write, so that kvd reads all N requests at once: it stops reading
   * a client whose unsent replies pass --max-output-buffer-bytes, and
   * requests still in the socket when SIGTERM comes were never received. */
  char gets[N * 32] = "";
  for (int i = 0; i < N; i++)
    strcat(gets, "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
  assert_int_equal(kvdh_write_all(fd, gets, strlen(gets)), 0);
  kvdh_sleep_ms(300); /* kvd has read them and queued 12 MiB */
  kill(f->k[0].pid, SIGTERM);
  kvdh_sleep_ms(100);
  /* Now read every reply. */
  const size_t one = 12 + sizeof big; /* "$1048576\r\n" + value + CRLF */
  size_t total = 0;
  static char buf[1 << 16];
  uint64_t t0 = kvdh_now_ms();
  bool eof = false, reset = false;
  kvdh_set_recv_timeout(fd, 15000);
  while (!eof && !reset) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0)
      total += (size_t)n;
    else if (n == 0)
      eof = true;
    else
      reset = true;
    if (total == N * one) break;
  }
  uint64_t drained = kvdh_now_ms();
  assert_int_equal(total, N * one);
  /* kvd closes the connection and exits soon after the last byte left. */
  int closed = kvdh_wait_closed(fd, 15000);
  uint64_t closed_at = kvdh_now_ms();
  close(fd);
  int st = kvdh_stop(&f->k[0], SIGTERM, 15000);
  uint64_t exited = kvdh_now_ms();
  fprintf(stderr,
          "drained after %llu ms, closed %llu ms later, exited %llu ms later\n",
          (unsigned long long)(drained - t0),
          (unsigned long long)(closed_at - drained),
          (unsigned long long)(exited - drained));
  assert_int_equal(closed, 1);
  assert_true(st != -1 && WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  if (exited - drained > 3000)
    fail_msg("kvd took %llu ms to exit after the slow reader drained its "
             "replies (the 10 s shutdown timeout, not a graceful stop)",
             (unsigned long long)(exited - drained));
  assert_false(kvdh_log_contains(&f->k[0], "shutdown_timeout"));
  IT_END(f);
}

/* --max-clients: one more connection is refused (closed at once) while the
 * others keep working, and a slot freed is a slot usable again. Idle
 * connections cost nothing but their slot. */
static void test_hostile_max_clients(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", "--max-clients", "4", NULL);
  it_start(&f->k[0]);
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = it_fd(i % 2 ? f->k[0].resp_port : f->k[0].native_port);
    if (i % 2) assert_string_equal(RESP(fds[i], "PING"), "PONG");
  }
  int extra = it_fd(f->k[0].resp_port);
  (void)!kvdh_write_all(extra, "PING\r\n", 6);
  assert_int_equal(kvdh_wait_closed(extra, 3000), 1);
  close(extra);
  kvc_conn *c = NULL;
  int rc = kvc_connect("127.0.0.1", f->k[0].native_port, NULL, &c);
  if (rc == KVC_OK) rc = kvc_put(c, "k", 1, "v", 1, NULL, 0);
  assert_true(rc != KVC_OK);
  kvc_close(c);
  assert_true(kvdh_log_contains(&f->k[0], "client_rejected"));
  assert_string_equal(RESP(fds[1], "SET", "k", "v"), "OK");
  close(fds[0]);
  kvdh_sleep_ms(100);
  c = it_conn(&f->k[0]);
  assert_kvc(kvc_put(c, "k2", 2, "v", 1, NULL, 0), KVC_OK);
  kvc_close(c);
  for (int i = 1; i < 4; i++)
    close(fds[i]);
  it_alive(&f->k[0]);
  IT_END(f);
}

/* --max-pipeline: a client that pipelines far more requests than kvd
 * queues per connection gets every answer, in order, on both ports. */
static void test_hostile_pipeline_flood_small_max_pipeline(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", "--max-pipeline", "4", NULL);
  it_start(&f->k[0]);
  bystander b;
  bystander_open(&b, &f->k[0]);
  int fd = it_fd(f->k[0].resp_port);
  enum { N = 5000 };
  static char buf[N * 10];
  size_t len = 0;
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(buf + len, sizeof buf - len, "INCR pc\r\n");
  assert_int_equal(kvdh_write_all(fd, buf, len), 0);
  bystander_check(&b);
  for (int i = 0; i < N; i++) {
    char out[64];
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    assert_int_equal(atoi(out), i + 1);
  }
  close(fd);
  kvc_conn *c = it_conn(&f->k[0]);
  for (int i = 0; i < N; i++)
    assert_kvc(kvc_send_incr(c, "nc", 2, 1, false, NULL), KVC_OK);
  for (int i = 0; i < N; i++) {
    kvc_result *r = NULL;
    assert_kvc(kvc_recv(c, &r), KVC_OK);
    assert_int_equal(kvc_result_counter(r), i + 1);
    kvc_result_free(r);
  }
  kvc_close(c);
  bystander_check(&b);
  bystander_close(&b);
  IT_END(f);
}

/* SIGTERM with idle clients, a client stalled mid-frame and one mid-RESP
 * command: kvd does not wait for them, and exits 0 at once. */
static void test_hostile_sigterm_with_idle_and_stalled_clients(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  int fds[6];
  for (int i = 0; i < 6; i++)
    fds[i] = it_fd(i % 2 ? f->k[0].resp_port : f->k[0].native_port);
  assert_int_equal(kvdh_write_all(fds[0], "\0\0\0\x10\x08", 5), 0);
  assert_int_equal(kvdh_write_all(fds[1], "*2\r\n$3\r\nGET\r\n$5\r\nab", 20),
                   0);
  assert_string_equal(RESP(fds[3], "SET", "k", "v"), "OK");
  uint64_t t0 = kvdh_now_ms();
  int st = kvdh_stop(&f->k[0], SIGTERM, 15000);
  uint64_t took = kvdh_now_ms() - t0;
  assert_true(st != -1 && WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  if (took > 2000)
    fail_msg("kvd took %llu ms to stop", (unsigned long long)took);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(kvdh_wait_closed(fds[i], 1000), 1);
    close(fds[i]);
  }
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_hostile_native_garbage_bytes),
      IT_TEST(test_hostile_native_oversize_length_prefix),
      IT_TEST(test_hostile_native_truncated_frame_then_close),
      IT_TEST(test_hostile_native_truncated_frame_then_stall),
      IT_TEST(test_hostile_resp_protocol_errors),
      IT_TEST(test_hostile_resp_unknown_commands_and_garbage),
      IT_TEST(test_hostile_client_vanishes_with_reply_backlog),
      IT_TEST(test_hostile_sigterm_with_slow_reader_exits_promptly),
      IT_TEST(test_hostile_max_clients),
      IT_TEST(test_hostile_pipeline_flood_small_max_pipeline),
      IT_TEST(test_hostile_sigterm_with_idle_and_stalled_clients),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
