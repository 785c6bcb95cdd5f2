/*
 * Integration tests of kvd's limits on what a client controls (DESIGN §8):
 * connections per client address, the read timeout for a request begun but
 * not finished (1,000 slowloris connections while a real client is served
 * within 100 ms at p99), the idle timeout, the memory held for incomplete
 * requests (max-input-buffer-bytes), the unsent replies of a client that
 * does not read (max-output-buffer-bytes), a request flood during which
 * kvd's memory stays under a stated bound and after which it recovers, and
 * the RESP oversize and truncated inputs hostile_test.c does not cover.
 * Each limit is checked from both sides: the offender is refused with a
 * clear error (or closed) and counted in kvctl status, and everyone else
 * keeps being served.
 *
 * Source addresses: Linux routes all of 127.0.0.0/8 to the loopback, so a
 * test can connect from 127.0.0.2, 127.0.0.3, ... to reach kvd on 127.0.0.1
 * as several different clients.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/time.h>

#include "tests/integration/itest.h"

/* A TCP connection to 127.0.0.1:port from source address src (10 s I/O
 * timeouts), or -1. */
static int connect_from(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, src, &a.sin_addr);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int it_fd_from(const char *src, int port) {
  int fd = connect_from(src, port);
  if (fd < 0) fail_msg("cannot connect to port %d from %s", port, src);
  return fd;
}

/* Memory bounds hold for kvd as shipped; under a sanitizer (make test's
 * ASan and UBSan passes set SAN_LOG) freed memory is quarantined and shadow
 * memory added, so RSS says nothing about kvd and the bounds are not
 * checked (everything else in these tests still is). */
static bool memory_bounds_checked(void) {
  static int said;
  bool on = getenv("SAN_LOG") == NULL;
  if (!on && !said++)
    fprintf(stderr, "limits_test: under a sanitizer: memory bounds are "
                    "measured but not enforced\n");
  return on;
}

/* kvd's resident memory (VmRSS) in KiB; -1 if unreadable. */
static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kib = atol(line + 6);
  fclose(f);
  return kib;
}

/* Prints kvd's RssAnon and RssFile (where the memory is), for the log. */
static void print_rss_detail(pid_t pid, const char *when) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return;
  fprintf(stderr, "kvd memory %s:", when);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "RssAnon:", 8) || !strncmp(line, "RssFile:", 8)) {
      line[strcspn(line, "\n")] = 0;
      fprintf(stderr, " %s", line);
    }
  fputc('\n', stderr);
  fclose(f);
}

/* kvd's RssAnon (heap, not the LMDB map) in KiB; -1 if unreadable. */
static long anon_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "RssAnon:", 8)) kib = atol(line + 8);
  fclose(f);
  return kib;
}

/* The replica's status, copied (its string and array fields are not to be
 * used: they pointed into the freed result). */
static kvc_status_info status_of(kvdh *p) {
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  kvc_status_info s = *kvc_result_status_info(r);
  kvc_result_free(r);
  kvc_close(c);
  return s;
}

/* True if fd has something to read or was closed (within ms). */
static bool readable(int fd, int ms) {
  struct pollfd pf = {fd, POLLIN, 0};
  return poll(&pf, 1, ms) > 0;
}

/* A native request answered on its own connection: fails the test if the
 * answer is an error. */
static void native_put_ok(kvc_conn *c, const char *k, const char *v) {
  assert_kvc(kvc_put(c, k, strlen(k), v, strlen(v), NULL, 0), KVC_OK);
}

/* Reads one native error reply (a Response with id 0) and checks its code;
 * returns nothing, fails the test otherwise. */
static void expect_native_error(int fd, int kvc_code) {
  Kvpb__Response *r = it_native_recv(fd);
  if (r->error != WIRE(kvc_code))
    fail_msg("native error %u (%s), want %u", r->error,
             r->message ? r->message : "", WIRE(kvc_code));
  assert_true(r->message && strlen(r->message) > 10);
  kvpb__response__free_unpacked(r, NULL);
}

/* ---- connections per address ---- */

static void test_limits_clients_per_addr(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--max-clients-per-addr", "4", NULL);
  it_start(p);
  /* Four from 127.0.0.1 (the status helper's connections come and go). */
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = it_fd_from("127.0.0.1", i % 2 ? p->resp_port : p->native_port);
    if (i % 2) assert_string_equal(RESP(fds[i], "PING"), "PONG");
  }
  /* A fifth from the same address: a clear error, then the close. */
  int extra = it_fd_from("127.0.0.1", p->resp_port);
  char out[256];
  assert_int_equal(kvdh_resp_read(extra, out, sizeof out), 0);
  assert_string_equal(out, "-ERR max number of clients per address reached "
                           "(max-clients-per-addr)");
  assert_int_equal(kvdh_wait_closed(extra, 2000), 1);
  close(extra);
  extra = it_fd_from("127.0.0.1", p->native_port);
  expect_native_error(extra, KVC_CLOSED);
  assert_int_equal(kvdh_wait_closed(extra, 2000), 1);
  close(extra);
  /* Other addresses are not affected, and neither are the four. */
  int other = it_fd_from("127.0.0.2", p->resp_port);
  assert_string_equal(RESP(other, "SET", "k", "v"), "OK");
  int other2 = it_fd_from("127.0.0.3", p->native_port);
  Kvpb__Response *r = it_native_get(other2, 7, "k", 1);
  assert_int_equal(r->error, 0);
  kvpb__response__free_unpacked(r, NULL);
  assert_string_equal(RESP(fds[1], "GET", "k"), "v");
  assert_string_equal(RESP(fds[3], "GET", "k"), "v");
  /* A slot freed is usable again. */
  close(fds[0]);
  kvdh_sleep_ms(200);
  fds[0] = it_fd_from("127.0.0.1", p->resp_port);
  assert_string_equal(RESP(fds[0], "GET", "k"), "v");
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  close(other);
  close(other2);
  kvdh_sleep_ms(200);
  kvc_status_info s = status_of(p);
  assert_int_equal(s.clients_refused_per_addr, 2);
  assert_int_equal(s.clients_refused, 0);
  assert_true(kvdh_log_contains(p, "reason=max_clients_per_addr"));
  it_alive(p);
  IT_END(f);
}

/* ---- slowloris ---- */

enum { NSLOW = 1000, NTRICKLE = 20, READ_TIMEOUT_MS = 2000 };

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* 1,000 connections each send part of a request and stall, and 20 more
 * trickle a byte every 100 ms into a request they never finish. A real
 * client meanwhile gets every answer, p99 under 100 ms; the stalled and the
 * trickling ones are all still open at half the read timeout and all closed,
 * with a timeout error, soon after it. */
static void test_limits_slowloris(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--read-timeout", "2000", NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  int resp = it_fd(p->resp_port);
  static int fds[NSLOW + NTRICKLE];
  static const uint8_t native_part[] = {0, 0, 0, 100, 0x0a, 0x05, 'a'};
  static const char resp_part[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\nabc";
  static const char trickle_hdr[] = "*3\r\n$3\r\nSET\r\n$1\r\nt\r\n$100000\r\n";
  uint64_t t0 = kvdh_now_ms();
  for (int i = 0; i < NSLOW + NTRICKLE; i++) {
    /* Spread over eight addresses: the default max-clients-per-addr (1000)
     * is not what this test is about. */
    char src[16];
    snprintf(src, sizeof src, "127.0.0.%d", 2 + i % 8);
    bool native = i < NSLOW && i % 2 == 0;
    fds[i] = it_fd_from(src, native ? p->native_port : p->resp_port);
    int rc = native ? kvdh_write_all(fds[i], native_part, sizeof native_part)
             : i < NSLOW
                 ? kvdh_write_all(fds[i], resp_part, sizeof resp_part - 1)
                 : kvdh_write_all(fds[i], trickle_hdr, sizeof trickle_hdr - 1);
    assert_int_equal(rc, 0);
  }
  uint64_t opened = kvdh_now_ms();
  fprintf(stderr, "opened %d stalled connections in %llu ms\n",
          NSLOW + NTRICKLE, (unsigned long long)(opened - t0));

  enum { MAXLAT = 200000 };
  static uint64_t lat[MAXLAT];
  size_t nlat = 0;
  uint64_t next_trickle = kvdh_now_ms(), checked_half = 0;
  int i = 0;
  /* Until every stalled one is past its deadline, with a margin. */
  while (kvdh_now_ms() < opened + READ_TIMEOUT_MS + 1200) {
    uint64_t now = kvdh_now_ms();
    if (now >= next_trickle) {
      for (int j = NSLOW; j < NSLOW + NTRICKLE; j++)
        (void)kvdh_write_all(fds[j], "x", 1); /* fails once closed */
      next_trickle = now + 100;
    }
    if (!checked_half && now >= t0 + READ_TIMEOUT_MS / 2) {
      /* Half-way: nobody has been closed or answered yet. */
      checked_half = now;
      for (int j = 0; j < NSLOW + NTRICKLE; j++)
        if (readable(fds[j], 0))
          fail_msg("stalled connection %d was answered or closed after "
                   "%llu ms, before read-timeout (%d ms)",
                   j, (unsigned long long)(now - t0), READ_TIMEOUT_MS);
    }
    char key[32], val[32];
    snprintf(key, sizeof key, "real%d", i / 2 % 100); /* written, then read */
    snprintf(val, sizeof val, "v%d", i);
    uint64_t a = kvdh_now_ms();
    switch (i % 4) {
    case 0:
      native_put_ok(c, key, val);
      break;
    case 1: {
      kvc_result *r = NULL;
      assert_kvc(kvc_get(c, key, strlen(key), &r), KVC_OK);
      kvc_result_free(r);
      break;
    }
    case 2:
      assert_string_equal(RESP(resp, "SET", key, val), "OK");
      break;
    default:
      assert_true(strlen(RESP(resp, "GET", key)) > 0);
    }
    if (nlat < MAXLAT) lat[nlat++] = kvdh_now_ms() - a;
    i++;
    kvdh_sleep_ms(1);
  }
  assert_true(checked_half > 0);
  qsort(lat, nlat, sizeof lat[0], cmp_u64);
  uint64_t p50 = lat[nlat / 2], p99 = lat[nlat * 99 / 100], max = lat[nlat - 1];
  fprintf(stderr,
          "real client: %zu requests, p50 %llu ms, p99 %llu ms, max %llu ms\n",
          nlat, (unsigned long long)p50, (unsigned long long)p99,
          (unsigned long long)max);
  if (p99 >= 100)
    fail_msg("real client p99 %llu ms with %d stalled connections",
             (unsigned long long)p99, NSLOW + NTRICKLE);

  /* Every stalled connection got the timeout error and was closed. */
  for (int j = 0; j < NSLOW + NTRICKLE; j++) {
    kvdh_set_recv_timeout(fds[j], 1000);
    if (j < NSLOW && j % 2 == 0) {
      expect_native_error(fds[j], KVC_TIMEOUT);
    } else {
      char out[256];
      if (kvdh_resp_read(fds[j], out, sizeof out))
        fail_msg("stalled RESP connection %d: no reply", j);
      if (!it_prefix(out, "-ERR read timeout"))
        fail_msg("stalled RESP connection %d: got '%s'", j, out);
    }
    if (kvdh_wait_closed(fds[j], 1000) != 1)
      fail_msg("stalled connection %d still open %llu ms after it stalled", j,
               (unsigned long long)(kvdh_now_ms() - t0));
    close(fds[j]);
  }
  kvc_status_info s = status_of(p);
  assert_true(s.read_timeouts >= NSLOW + NTRICKLE);
  assert_int_equal(s.input_buffer_bytes, 0);
  /* The real connections were never idle or slow: still fine. */
  native_put_ok(c, "after", "ok");
  assert_string_equal(RESP(resp, "GET", "after"), "ok");
  kvc_close(c);
  close(resp);
  it_alive(p);
  IT_END(f);
}

/* ---- idle timeout ---- */

static void test_limits_idle_timeout(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--idle-timeout", "1000", NULL);
  it_start(p);
  int idle_resp = it_fd(p->resp_port);
  assert_string_equal(RESP(idle_resp, "PING"), "PONG");
  int idle_native = it_fd(p->native_port);
  Kvpb__Response *r = it_native_get(idle_native, 1, "k", 1);
  kvpb__response__free_unpacked(r, NULL);
  int silent = it_fd(p->native_port); /* never sends anything */
  int busy = it_fd(p->resp_port);
  uint64_t t0 = kvdh_now_ms();
  /* A client that talks every 300 ms outlives them all. */
  while (kvdh_now_ms() < t0 + 2500) {
    assert_string_equal(RESP(busy, "PING"), "PONG");
    kvdh_sleep_ms(300);
  }
  int fds[3] = {idle_resp, idle_native, silent};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(kvdh_wait_closed(fds[i], 1000), 1);
    close(fds[i]);
  }
  assert_string_equal(RESP(busy, "PING"), "PONG");
  close(busy);
  kvc_status_info s = status_of(p);
  assert_true(s.idle_timeouts >= 3);
  assert_int_equal(s.read_timeouts, 0);
  it_alive(p);
  IT_END(f);
}

/* An idle connection is not closed early: just under the timeout it still
 * answers. Separate from the above so that each assertion has its own
 * timing. */
static void test_limits_idle_timeout_not_early(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--idle-timeout", "2000", NULL);
  it_start(p);
  int fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "PING"), "PONG");
  kvdh_sleep_ms(1000);
  assert_false(readable(fd, 0));
  assert_string_equal(RESP(fd, "PING"), "PONG");
  assert_int_equal(kvdh_wait_closed(fd, 4000), 1);
  close(fd);
  IT_END(f);
}

/* ---- memory held for incomplete requests ---- */

static void test_limits_input_buffer(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--max-value-bytes", "16k", "--max-frame-bytes",
          "64k", "--max-input-buffer-bytes", "128k", NULL);
  it_start(p);
  /* Two native clients each hold 60,000 bytes of a 64,000-byte frame. */
  static uint8_t frame[4 + 64000];
  memset(frame, 0xff, sizeof frame); /* a body that never decodes */
  frame[0] = 0, frame[1] = 0, frame[2] = 64000 >> 8, frame[3] = 64000 & 0xff;
  int a = it_fd(p->native_port), b = it_fd(p->native_port);
  assert_int_equal(kvdh_write_all(a, frame, 4 + 60000), 0);
  assert_int_equal(kvdh_write_all(b, frame, 4 + 60000), 0);
  kvdh_sleep_ms(200);
  kvc_status_info s = status_of(p);
  assert_int_equal(s.input_buffer_bytes, 2 * (4 + 60000));
  /* A RESP client whose incomplete MSET takes the total past 128 KiB is
   * refused with an error and closed. */
  int c = it_fd(p->resp_port);
  static char mset[40000];
  int n =
      snprintf(mset, sizeof mset, "*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$16000\r\n");
  memset(mset + n, 'v', 16000);
  n += 16000;
  n += snprintf(mset + n, sizeof mset - (size_t)n, "\r\n$1\r\nb\r\n$16000\r\n");
  memset(mset + n, 'w', 10000);
  n += 10000;
  assert_int_equal(kvdh_write_all(c, mset, (size_t)n), 0);
  char out[256];
  assert_int_equal(kvdh_resp_read(c, out, sizeof out), 0);
  assert_true(it_prefix(out, "-ERR kvd holds too many bytes of incomplete "
                             "requests (max-input-buffer-bytes)"));
  assert_int_equal(kvdh_wait_closed(c, 2000), 1);
  close(c);
  /* The two holders were not touched: they finish and are answered. */
  assert_int_equal(kvdh_write_all(a, frame + 4 + 60000, 4000), 0);
  assert_int_equal(kvdh_write_all(b, frame + 4 + 60000, 4000), 0);
  for (int i = 0; i < 2; i++) {
    int fd = i ? b : a;
    Kvpb__Response *r = it_native_recv(fd);
    assert_int_equal(r->error, WIRE(KVC_BAD_REQUEST));
    kvpb__response__free_unpacked(r, NULL);
    r = it_native_get(fd, 3, "k", 1);
    assert_int_equal(r->id, 3);
    assert_int_equal(r->error, WIRE(KVC_NOTFOUND));
    kvpb__response__free_unpacked(r, NULL);
  }
  /* Nothing is held any more, and a new incomplete request fits again. */
  s = status_of(p);
  assert_int_equal(s.input_buffer_bytes, 0);
  assert_int_equal(s.input_buffer_refused, 1);
  int d = it_fd(p->native_port);
  assert_int_equal(kvdh_write_all(d, frame, 4 + 60000), 0);
  kvdh_sleep_ms(100);
  assert_false(readable(d, 0));
  close(d);
  kvdh_sleep_ms(100);
  assert_int_equal(status_of(p).input_buffer_bytes, 0);
  close(a);
  close(b);
  assert_true(kvdh_log_contains(p, "reason=max_input_buffer"));
  it_alive(p);
  IT_END(f);
}

/* ---- a client that does not read its replies ---- */

/* 4,000 pipelined GETs of a 64 KiB value (250 MiB of replies) from a
 * client that reads nothing for 2 s: kvd holds at most about
 * max-output-buffer-bytes (8 MiB) of them, not the 186 MiB its first read
 * alone asks for; another client is served meanwhile; and once the client
 * reads, it gets every reply, whole and in order. */
static void test_limits_output_buffer_bounded(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", NULL);
  it_start(p);
  enum { VAL = 64 << 10, N = 4000 };
  static char big[VAL];
  memset(big, 'B', sizeof big);
  kvc_conn *c = it_conn(p);
  assert_kvc(kvc_put(c, "big", 3, big, sizeof big, NULL, 0), KVC_OK);
  kvdh_sleep_ms(200);
  long base = rss_kib(p->pid);
  int fd = it_fd(p->resp_port);
  static char reqs[N * 22 + 1];
  size_t len = 0;
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(reqs + len, sizeof reqs - len,
                            "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
  assert_int_equal(kvdh_write_all(fd, reqs, len), 0);
  long peak = base;
  for (int t = 0; t < 40; t++) {
    kvdh_sleep_ms(50);
    long r = rss_kib(p->pid);
    if (r > peak) peak = r;
    if (t % 10 == 0) native_put_ok(c, "other", "served");
  }
  fprintf(stderr, "RSS base %ld KiB, peak %ld KiB (+%ld KiB)\n", base, peak,
          peak - base);
  if (peak - base > 64 * 1024 && memory_bounds_checked())
    fail_msg("kvd grew by %ld KiB for a client that does not read",
             peak - base);
  kvc_status_info s = status_of(p);
  assert_true(s.output_paused >= 1);
  /* Now it reads: every reply, in order. */
  const size_t one = 8 + VAL + 2; /* "$65536\r\n" value "\r\n" */
  static char buf[1 << 16];
  size_t total = 0;
  kvdh_set_recv_timeout(fd, 10000);
  while (total < N * one) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) fail_msg("reply stream ended after %zu bytes", total);
    for (ssize_t k = 0; k < n; k++) {
      size_t off = (total + (size_t)k) % one;
      char want = off < 8         ? "$65536\r\n"[off]
                  : off < 8 + VAL ? 'B'
                                  : "\r\n"[off - 8 - VAL];
      if (buf[k] != want)
        fail_msg("reply byte %zu is '%c', want '%c'", total + (size_t)k, buf[k],
                 want);
    }
    total += (size_t)n;
  }
  assert_string_equal(RESP(fd, "PING"), "PONG");
  close(fd);
  kvc_close(c);
  it_alive(p);
  IT_END(f);
}

/* A connection that once sent a 16 MiB request and stays open does not
 * keep the buffer that request needed: kvd's heap is back within 8 MiB of
 * where it was once the connection has sent something small and kvd has
 * been quiet for a moment. */
static void test_limits_big_request_memory_released(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--read-timeout", "1000", NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  native_put_ok(c, "small", "v");
  kvdh_sleep_ms(1200); /* a quiet sweep period: kvd trims */
  long base = anon_kib(p->pid);
  enum { VAL = 16 << 20 };
  char *big = malloc(VAL);
  memset(big, 'M', VAL);
  assert_kvc(kvc_put(c, "big", 3, big, VAL, NULL, 0), KVC_OK);
  free(big);
  long peak = anon_kib(p->pid);
  native_put_ok(c, "small", "w"); /* the connection stays, and speaks */
  kvdh_sleep_ms(1200);
  long after = anon_kib(p->pid);
  fprintf(stderr,
          "kvd heap: %ld KiB before, %ld after a 16 MiB request, %ld "
          "once quiet\n",
          base, peak, after);
  if (after - base > 8 * 1024 && memory_bounds_checked())
    fail_msg("kvd still holds +%ld KiB after a 16 MiB request", after - base);
  native_put_ok(c, "small", "x");
  kvc_close(c);
  IT_END(f);
}

/* ---- a request flood ---- */

/* The bound this test states (and README repeats): with 16 clients
 * flooding, half of them never reading a reply, kvd's resident memory
 * stays within FLOOD_BOUND_MIB of what it was before the flood, and within
 * RECOVER_MIB of it again a few seconds after the flood stops. */
#define FLOOD_CLIENTS 16
#define FLOOD_MS 4000
#define FLOOD_BOUND_MIB 160
#define RECOVER_MIB 16

typedef struct flooder {
  int port;
  bool native, reads;
  volatile bool *stop;
  uint64_t sent, received;
  char err[128];
} flooder;

/* One pipelined batch: writes to 1,000 keys; a client that never reads
 * mostly GETs a 16 KiB value instead (large replies nobody takes), with a
 * write every 20 commands. */
static size_t flood_batch(const flooder *fl, char *buf, size_t cap,
                          unsigned seed) {
  static char val[100];
  memset(val, 'f', sizeof val);
  size_t len = 0;
  for (int i = 0; i < 200 && len + 512 < cap; i++) {
    char key[16];
    int kl = snprintf(key, sizeof key, "f%u", (seed + (unsigned)i) % 1000);
    bool get = !fl->reads && i % 20 != 0;
    if (fl->native) {
      Kvpb__Request req = KVPB__REQUEST__INIT;
      Kvpb__PutReq put = KVPB__PUT_REQ__INIT;
      Kvpb__GetReq g = KVPB__GET_REQ__INIT;
      req.id = (uint64_t)i + 1;
      if (get) {
        req.body_case = KVPB__REQUEST__BODY_GET;
        req.get = &g;
        g.key.data = (uint8_t *)"fbig";
        g.key.len = 4;
      } else {
        req.body_case = KVPB__REQUEST__BODY_PUT;
        req.put = &put;
        put.key.data = (uint8_t *)key;
        put.key.len = (size_t)kl;
        put.value.data = (uint8_t *)val;
        put.value.len = sizeof val;
      }
      size_t n = kvpb__request__get_packed_size(&req);
      buf[len] = 0, buf[len + 1] = 0, buf[len + 2] = (char)(n >> 8),
      buf[len + 3] = (char)n;
      kvpb__request__pack(&req, (uint8_t *)buf + len + 4);
      len += 4 + n;
    } else if (get) {
      len += (size_t)snprintf(buf + len, cap - len,
                              "*2\r\n$3\r\nGET\r\n$4\r\nfbig\r\n");
    } else {
      len +=
          (size_t)snprintf(buf + len, cap - len,
                           "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n", kl, key);
      memcpy(buf + len, val, sizeof val);
      len += sizeof val;
      memcpy(buf + len, "\r\n", 2);
      len += 2;
    }
  }
  return len;
}

static void *flood_main(void *arg) {
  flooder *fl = arg;
  int fd = kvdh_connect(fl->port);
  if (fd < 0) {
    snprintf(fl->err, sizeof fl->err, "cannot connect");
    return NULL;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  enum { CAP = 128 << 10, INCAP = 1 << 16 };
  char *buf = malloc(CAP), *in = malloc(INCAP);
  size_t len = 0, off = 0;
  unsigned seed = (unsigned)fd * 7919u;
  while (!*fl->stop) {
    if (off == len) {
      len = flood_batch(fl, buf, CAP, seed += 200);
      off = 0;
    }
    bool progress = false;
    ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
      fl->sent += (uint64_t)n;
      progress = true;
    } else if (n < 0 && errno != EAGAIN) {
      snprintf(fl->err, sizeof fl->err, "send: %s", strerror(errno));
      break;
    }
    if (fl->reads) {
      while ((n = recv(fd, in, INCAP, 0)) > 0) {
        fl->received += (uint64_t)n;
        progress = true;
      }
      if (n == 0) {
        snprintf(fl->err, sizeof fl->err, "kvd closed the connection");
        break;
      }
    }
    if (!progress) {
      struct pollfd pf = {fd, (short)(POLLOUT | (fl->reads ? POLLIN : 0)), 0};
      poll(&pf, 1, 10);
    }
  }
  close(fd);
  free(buf);
  free(in);
  return NULL;
}

static void test_limits_request_flood(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  static char val16k[16384];
  memset(val16k, 'g', sizeof val16k);
  assert_kvc(kvc_put(c, "fbig", 4, val16k, sizeof val16k, NULL, 0), KVC_OK);
  kvc_close(c);
  kvdh_sleep_ms(300);
  long base = rss_kib(p->pid);
  print_rss_detail(p->pid, "before the flood");

  volatile bool stop = false;
  flooder fl[FLOOD_CLIENTS];
  pthread_t th[FLOOD_CLIENTS];
  for (int i = 0; i < FLOOD_CLIENTS; i++) {
    memset(&fl[i], 0, sizeof fl[i]);
    fl[i].native = i % 2 == 0;
    fl[i].port = fl[i].native ? p->native_port : p->resp_port;
    fl[i].reads = i % 4 < 2;
    fl[i].stop = &stop;
    assert_int_equal(pthread_create(&th[i], NULL, flood_main, &fl[i]), 0);
  }
  long peak = base;
  uint64_t t0 = kvdh_now_ms();
  bool over = false;
  /* Under a sanitizer the bound is not enforced, but the flood still stops
   * before it could eat the machine. */
  long cap_kib = memory_bounds_checked() ? FLOOD_BOUND_MIB * 1024 : 1L << 20;
  while (kvdh_now_ms() < t0 + FLOOD_MS) {
    kvdh_sleep_ms(20);
    long r = rss_kib(p->pid);
    if (r > peak) peak = r;
    if (peak - base > FLOOD_BOUND_MIB * 1024) over = true;
    if (peak - base > cap_kib) break; /* stop at once */
  }
  stop = true;
  uint64_t sent = 0, received = 0;
  for (int i = 0; i < FLOOD_CLIENTS; i++) {
    pthread_join(th[i], NULL);
    sent += fl[i].sent;
    received += fl[i].received;
  }
  fprintf(stderr,
          "flood: %d clients for %llu ms sent %llu MiB, read %llu MiB; kvd "
          "RSS base %ld KiB, peak %ld KiB (+%ld MiB)\n",
          FLOOD_CLIENTS, (unsigned long long)(kvdh_now_ms() - t0),
          (unsigned long long)(sent >> 20),
          (unsigned long long)(received >> 20), base, peak,
          (peak - base) >> 10);
  if (over && memory_bounds_checked())
    fail_msg("kvd's RSS grew by more than %d MiB during the flood",
             FLOOD_BOUND_MIB);
  for (int i = 0; i < FLOOD_CLIENTS; i++)
    if (fl[i].err[0]) fail_msg("flood client %d: %s", i, fl[i].err);
  assert_true(sent > (64u << 20)); /* it was a flood */
  it_alive(p);

  /* Recovery: prompt answers at once, memory back near the baseline. */
  uint64_t t1 = kvdh_now_ms(), worst = 0;
  c = it_conn(p);
  for (int i = 0; i < 50; i++) {
    uint64_t a = kvdh_now_ms();
    native_put_ok(c, "after-flood", "ok");
    if (kvdh_now_ms() - a > worst) worst = kvdh_now_ms() - a;
  }
  kvc_close(c);
  fprintf(stderr, "after the flood: 50 writes, slowest %llu ms\n",
          (unsigned long long)worst);
  /* Under a sanitizer kvd is several times slower and returns the flood's
   * quarantined memory first: the bound is 1 s there. */
  uint64_t bound_ms = memory_bounds_checked() ? 200 : 1000;
  if (worst > bound_ms)
    fail_msg("a write took %llu ms after the flood (bound %llu ms)",
             (unsigned long long)worst, (unsigned long long)bound_ms);
  kvdh_sleep_ms(2000);
  long now_rss = rss_kib(p->pid);
  while (now_rss - base > RECOVER_MIB * 1024 && kvdh_now_ms() < t1 + 5000) {
    kvdh_sleep_ms(100);
    now_rss = rss_kib(p->pid);
  }
  print_rss_detail(p->pid, "after the flood");
  fprintf(stderr, "RSS %ld KiB %llu ms after the flood (+%ld MiB)\n", now_rss,
          (unsigned long long)(kvdh_now_ms() - t1), (now_rss - base) >> 10);
  if (now_rss - base > RECOVER_MIB * 1024 && memory_bounds_checked())
    fail_msg("kvd still holds +%ld MiB 5 s after the flood",
             (now_rss - base) >> 10);
  kvc_status_info s = status_of(p);
  /* The non-reading flooders pile up enough replies to pause their output
   * only at full speed (under a sanitizer kvd may not get there in 4 s;
   * the output-buffer test checks the pause on its own). */
  if (memory_bounds_checked()) assert_true(s.output_paused >= 1);
  assert_int_equal(s.input_buffer_bytes, 0);
  IT_END(f);
}

/* ---- RESP oversize and truncated input ---- */

/* hostile_test.c covers malformed lengths and unknown commands; these are
 * lengths that parse but exceed a limit, and commands cut short. */
static void test_limits_resp_oversize_and_truncated(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--max-value-bytes", "16k", "--max-frame-bytes",
          "64k", NULL);
  it_start(p);
  int bystander = it_fd(p->resp_port);
  struct {
    const char *in;
    size_t fill; /* bytes of 'x' after in, no CR LF */
    const char *want;
  } cases[] = {
      /* A bulk above max-value-bytes + 1k, announced but not sent. */
      {"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n", 0,
       "-ERR Protocol error: invalid bulk length"},
      /* An inline command longer than 64 KiB. */
      {"SET k ", 70000, "-ERR Protocol error: too big inline request"},
      /* More arguments than a command may have. */
      {"*100000\r\n", 0, "-ERR Protocol error: invalid multibulk length"},
  };
  static char big[80000];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int fd = it_fd(p->resp_port);
    size_t n = strlen(cases[i].in);
    memcpy(big, cases[i].in, n);
    memset(big + n, 'x', cases[i].fill);
    (void)kvdh_write_all(fd, big, n + cases[i].fill); /* may be cut short */
    char out[256];
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    if (strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: got '%s', want '%s'", i, out, cases[i].want);
    assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
    close(fd);
    assert_string_equal(RESP(bystander, "PING"), "PONG");
  }
  kvc_status_info s = status_of(p);
  assert_int_equal(s.frames_too_large, 3);
  /* Commands cut short, then the client goes away: nothing is left behind
   * (connections or held bytes). */
  for (int i = 0; i < 50; i++) {
    int fd = it_fd(p->resp_port);
    const char *part = i % 2 ? "*2\r\n$3\r\nGET\r\n$5\r\nab" : "GET incompl";
    assert_int_equal(kvdh_write_all(fd, part, strlen(part)), 0);
    close(fd);
  }
  for (int t = 0; t < 100 && status_of(p).input_buffer_bytes != 0; t++)
    kvdh_sleep_ms(20);
  assert_int_equal(status_of(p).input_buffer_bytes, 0);
  const char *info = RESP(bystander, "INFO");
  const char *cc = strstr(info, "connected_clients:");
  assert_non_null(cc);
  assert_int_equal(atoi(cc + 18), 1);
  assert_string_equal(RESP(bystander, "SET", "k", "v"), "OK");
  close(bystander);
  it_alive(p);
  IT_END(f);
}

/* ---- settings ---- */

static void test_limits_settings_validated(void **state) {
  IT_BEGIN(f, 30);
  const char *bad[][2] = {
      {"--read-timeout", "0"},
      {"--idle-timeout", "5"},
      {"--max-clients-per-addr", "0"},
      {"--max-input-buffer-bytes", "1m"}, /* below max-frame-bytes (20m) */
      {"--max-output-buffer-bytes", "1k"},
      {"--max-peer-conns-per-addr", "0"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kvdh *p = &f->k[i];
    it_args(p, bad[i][0], bad[i][1], NULL);
    int st = kvdh_start_expect_exit(p, 10000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
      fail_msg("kvd %s %s was not refused", bad[i][0], bad[i][1]);
  }
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_limits_clients_per_addr),
      IT_TEST(test_limits_slowloris),
      IT_TEST(test_limits_idle_timeout),
      IT_TEST(test_limits_idle_timeout_not_early),
      IT_TEST(test_limits_input_buffer),
      IT_TEST(test_limits_output_buffer_bounded),
      IT_TEST(test_limits_big_request_memory_released),
      IT_TEST(test_limits_request_flood),
      IT_TEST(test_limits_resp_oversize_and_truncated),
      IT_TEST(test_limits_settings_validated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
