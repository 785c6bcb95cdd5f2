/*
 * Attacks on a running cluster's peer port (DESIGN §8), TCP and UDP. The
 * test plays a peer itself: it seals envelopes with the cluster key it
 * wrote (sync/seal, the same code kvd runs), under made-up replica ids, so
 * it can send valid ones and then replay them, reorder them beyond the
 * replay window, tamper with them, cut them short, seal them with another
 * key, for another cluster, too long ago or in insecure mode, and send
 * garbage and oversize frames. Every such envelope is refused and counted
 * by reason in kvctl status, an unauthenticated sender never gets a byte
 * back (TCP: the connection is closed without a reply; UDP: nothing at all
 * comes back to the sending socket), and the cluster keeps replicating.
 *
 * Also: inbound peer connections per address (max-peer-conns-per-addr),
 * the Hello deadline (read-timeout), the per-sender rate limit (peer-rate,
 * peer-burst) with its once-a-second log line, and that the default rate
 * limit never throttles ordinary replication.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <sys/time.h>
#include <time.h>

#include "proto/peer.pb-c.h"
#include "sync/seal.h"
#include "tests/integration/itest.h"

#define CLUSTER "ptest"
#define KEY_A_B64 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n"
#define READ_TIMEOUT_MS 1500

static uint8_t key_a[KV_SEAL_KEY_LEN], key_b[KV_SEAL_KEY_LEN];
static char keyfile[IT_NKVD][256], joinarg[IT_NKVD][64];

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the test's own sealing ---- */

/* A sealer for cluster (the TCP channel's name, or "<name>/swim" for UDP)
 * as replica sender, with key (NULL: insecure mode). */
static kv_seal *sealer(const char *cluster, uint64_t sender,
                       const uint8_t *key) {
  kv_seal_opts o = {0};
  o.cluster = cluster;
  o.sender = sender;
  o.counter_start = wall_ms() * 1000;
  o.keys = (const uint8_t(*)[KV_SEAL_KEY_LEN])key;
  o.nkeys = key ? 1 : 0;
  kv_seal *s = NULL;
  assert_int_equal(kv_seal_new(&o, &s), KV_OK);
  return s;
}

/* Seals m as if at now_ms (caller frees with kv_buf_free). */
static kv_buf seal_at(kv_seal *s, const Kvpb__PeerMessage *m, uint64_t now) {
  size_t n = kvpb__peer_message__get_packed_size(m);
  uint8_t *b = malloc(n ? n : 1);
  kvpb__peer_message__pack(m, b);
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  randombytes_buf(nonce, sizeof nonce);
  kv_buf env;
  kv_seal_seal(s, now, nonce, b, n, &env);
  free(b);
  return env;
}

/* A Hello from replica id, in cluster name: it names an address where
 * nothing listens, so kvd's dialling it back harms nobody. */
static kv_buf hello(kv_seal *s, const char *name, uint64_t id) {
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  Kvpb__Hello h = KVPB__HELLO__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_HELLO;
  m.hello = &h;
  h.cluster = (char *)name;
  h.protocol = 1;
  h.segment_bits = 8; /* the harness starts kvd with --segments 256 */
  h.replica_id = id;
  h.name = (char *)"attacker";
  h.peer_addr = (char *)"127.0.0.1:1";
  return seal_at(s, &m, wall_ms());
}

/* An envelope holding an empty PeerMessage: it opens, then is counted as
 * malformed (and never answered). */
static kv_buf empty_msg(kv_seal *s) {
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  return seal_at(s, &m, wall_ms());
}

/* ---- the cluster ---- */

static void start_node(it_fixture *f, int i, const char *extra1,
                       const char *extra1v, const char *extra2,
                       const char *extra2v) {
  kvdh *p = &f->k[i];
  assert_int_equal(kvdh_prepare(p), 0);
  snprintf(keyfile[i], sizeof keyfile[i], "%s/cluster.key", p->dir);
  FILE *fp = fopen(keyfile[i], "w");
  assert_non_null(fp);
  fputs(KEY_A_B64, fp);
  fclose(fp);
  if (i > 0)
    snprintf(joinarg[i], sizeof joinarg[i], "127.0.0.1:%d", f->k[0].peer_port);
  const char *names[] = {"n1", "n2", "n3", "n4"};
  it_args(p, "--sync", "none", "--cluster", CLUSTER, "--cluster-key-file",
          keyfile[i], "--name", names[i], i > 0 ? "--join" : "--rumors",
          i > 0 ? joinarg[i] : "yes", extra1 ? extra1 : "--rumors",
          extra1 ? extra1v : "yes", extra2 ? extra2 : "--rumors",
          extra2 ? extra2v : "yes", NULL);
  it_start(p);
  assert_true(p->peer_port > 0);
}

static kvc_status_info status_of(kvdh *p) {
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  kvc_status_info s = *kvc_result_status_info(r);
  kvc_result_free(r);
  kvc_close(c);
  return s;
}

static size_t alive_peers(kvdh *p) {
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  size_t n = 0;
  for (size_t i = 0; i < s->npeers; i++)
    n += s->peers[i].alive;
  kvc_result_free(r);
  kvc_close(c);
  return n;
}

static void wait_alive(kvdh *p, size_t want) {
  uint64_t end = kvdh_now_ms() + 10000;
  while (alive_peers(p) < want)
    if (kvdh_now_ms() > end)
      fail_msg("fewer than %zu peers alive", want);
    else
      kvdh_sleep_ms(20);
}

/* A write on a is readable on b within 3 s. */
static void check_replicates(kvdh *a, kvdh *b, const char *key) {
  kvc_conn *ca = it_conn(a), *cb = it_conn(b);
  assert_kvc(kvc_put(ca, key, strlen(key), "still-works", 11, NULL, 0), KVC_OK);
  uint64_t end = kvdh_now_ms() + 3000;
  for (;;) {
    kvc_result *r = NULL;
    int rc = kvc_get(cb, key, strlen(key), &r);
    bool ok = rc == KVC_OK && it_has_sibling(r, "still-works");
    kvc_result_free(r);
    if (ok) break;
    if (kvdh_now_ms() > end) fail_msg("%s did not replicate", key);
    kvdh_sleep_ms(10);
  }
  kvc_close(ca);
  kvc_close(cb);
}

/* ---- what the attacker sees ---- */

/* The connection is closed (EOF or reset) within ms, and not one byte came
 * back on it. */
static void expect_closed_silently(int fd, int ms, const char *what) {
  uint64_t end = kvdh_now_ms() + (uint64_t)ms;
  size_t got = 0;
  char buf[4096];
  for (;;) {
    uint64_t now = kvdh_now_ms();
    if (now >= end) fail_msg("%s: the connection is still open", what);
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(end - now)) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    break; /* EOF or reset */
  }
  if (got) fail_msg("%s: kvd replied with %zu bytes", what, got);
  close(fd);
}

/* Nothing arrives on fd for ms, and it stays open. */
static void expect_open_silent(int fd, int ms, const char *what) {
  struct pollfd pf = {fd, POLLIN, 0};
  if (poll(&pf, 1, ms) != 0)
    fail_msg("%s: kvd replied or closed the connection", what);
}

static void send_frame(int fd, const void *p, size_t len) {
  assert_int_equal(kvdh_frame_write(fd, p, len), 0);
}

/* One envelope on a fresh connection; it must be closed without a reply. */
static void tcp_refused(int port, const void *env, size_t len,
                        const char *what) {
  int fd = it_fd(port);
  send_frame(fd, env, len);
  expect_closed_silently(fd, 3000, what);
}

/* Waits (up to 3 s) until p's status satisfies ok. */
static kvc_status_info wait_status(kvdh *p,
                                   bool (*ok)(const kvc_status_info *,
                                              const kvc_status_info *),
                                   const kvc_status_info *base) {
  uint64_t end = kvdh_now_ms() + 3000;
  kvc_status_info s = status_of(p);
  while (!ok(&s, base) && kvdh_now_ms() < end) {
    kvdh_sleep_ms(20);
    s = status_of(p);
  }
  return s;
}

#define DELTA(field) (s.field - s0.field)

/* ---- TCP ---- */

static bool tcp_done(const kvc_status_info *s, const kvc_status_info *s0) {
  return s->invalid_envelopes - s0->invalid_envelopes >= 13 &&
         s->peer_handshake_timeouts - s0->peer_handshake_timeouts >= 2;
}

static void test_peer_attack_tcp(void **state) {
  IT_BEGIN(f, 60);
  static char rt[16];
  snprintf(rt, sizeof rt, "%d", READ_TIMEOUT_MS);
  start_node(f, 0, "--read-timeout", rt, NULL, NULL);
  start_node(f, 1, "--read-timeout", rt, NULL, NULL);
  wait_alive(&f->k[0], 1);
  wait_alive(&f->k[1], 1);
  kvdh *p = &f->k[0];
  int port = p->peer_port;
  kvc_status_info s0 = status_of(p);

  /* Seventy Hellos from one made-up replica, sealed in order. */
  const uint64_t fake = 0xfa4e000000000001ull;
  kv_seal *fs = sealer(CLUSTER, fake, key_a);
  kv_buf e[70];
  for (int i = 0; i < 70; i++)
    e[i] = hello(fs, CLUSTER, fake);
  /* The newest is accepted (it holds the key: that is a peer). */
  int ok1 = it_fd(port);
  send_frame(ok1, e[69].data, e[69].len);
  expect_open_silent(ok1, 300, "a valid Hello");
  /* Replayed, on a new connection. */
  tcp_refused(port, e[69].data, e[69].len, "a replayed Hello");
  /* Reordered beyond the 64-counter window. */
  tcp_refused(port, e[0].data, e[0].len, "a Hello from below the window");
  /* Reordered within the window and never seen: accepted. */
  int ok2 = it_fd(port);
  send_frame(ok2, e[40].data, e[40].len);
  expect_open_silent(ok2, 300, "a Hello from inside the window");
  close(ok1);
  close(ok2);

  /* Tampered: a ciphertext bit, and a header bit (the counter, which is
   * authenticated as associated data). */
  kv_buf t = hello(fs, CLUSTER, fake);
  t.data[KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + 3] ^= 0x10;
  tcp_refused(port, t.data, t.len, "a tampered body");
  t.data[KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + 3] ^= 0x10;
  t.data[33] ^= 0x01;
  tcp_refused(port, t.data, t.len, "a tampered header");
  t.data[33] ^= 0x01;
  /* Truncated: shorter than header and nonce, and shorter than the tag. */
  tcp_refused(port, t.data, 40, "an envelope cut to 40 bytes");
  tcp_refused(port, t.data, KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + 10,
              "an envelope cut inside the tag");
  /* Bad version. */
  t.data[0] = 2;
  tcp_refused(port, t.data, t.len, "version 2");
  kv_buf_free(&t);
  /* Another key. */
  kv_seal *wk = sealer(CLUSTER, 0xfa4e000000000002ull, key_b);
  t = hello(wk, CLUSTER, 0xfa4e000000000002ull);
  tcp_refused(port, t.data, t.len, "a Hello sealed with another key");
  kv_buf_free(&t);
  kv_seal_free(wk);
  /* Another cluster, another key: an outsider, not answered. */
  kv_seal *wc = sealer("other", 0xfa4e000000000003ull, key_b);
  t = hello(wc, "other", 0xfa4e000000000003ull);
  tcp_refused(port, t.data, t.len, "a Hello for another cluster");
  kv_buf_free(&t);
  kv_seal_free(wc);
  /* Another cluster with our key: a misconfigured replica, which is told
   * why (it proved it holds the key), then closed. */
  wc = sealer("other", 0xfa4e000000000004ull, key_a);
  t = hello(wc, "other", 0xfa4e000000000004ull);
  int fd = it_fd(port);
  send_frame(fd, t.data, t.len);
  uint8_t *reply = NULL;
  size_t rlen = 0;
  assert_int_equal(kvdh_frame_read(fd, 4096, &reply, &rlen), 0);
  assert_true(rlen > 0 && rlen < t.len + 512);
  free(reply);
  assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
  close(fd);
  kv_buf_free(&t);
  kv_seal_free(wc);
  /* Stale: sealed two minutes ago (max-clock-skew is 30 s). */
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  t = seal_at(fs, &m, wall_ms() - 120000);
  tcp_refused(port, t.data, t.len, "a stale envelope");
  kv_buf_free(&t);
  /* Insecure mode (no tag) to a sealed cluster. */
  kv_seal *ins = sealer(CLUSTER, 0xfa4e000000000005ull, NULL);
  t = hello(ins, CLUSTER, 0xfa4e000000000005ull);
  tcp_refused(port, t.data, t.len, "an insecure-mode envelope");
  kv_buf_free(&t);
  kv_seal_free(ins);
  /* Garbage in a well-formed frame. */
  uint8_t junk[200];
  randombytes_buf(junk, sizeof junk);
  junk[0] = 0x77;
  tcp_refused(port, junk, sizeof junk, "garbage");

  /* Oversize: a length prefix of 4 GiB, and before any Hello a frame far
   * larger than a Hello; both closed without a reply. */
  fd = it_fd(port);
  assert_int_equal(kvdh_write_all(fd, "\xff\xff\xff\xff", 4), 0);
  expect_closed_silently(fd, 3000, "a 4 GiB length prefix");
  fd = it_fd(port);
  static uint8_t big[4 + 100000];
  big[0] = 0, big[1] = 0x0f, big[2] = 0x42, big[3] = 0x40; /* 1,000,000 */
  (void)kvdh_write_all(fd, big, sizeof big); /* kvd may close first */
  /* At once, not at the Hello deadline. */
  expect_closed_silently(fd, READ_TIMEOUT_MS / 2,
                         "a 1 MB frame before a Hello");

  /* Truncated and stalled, or silent: closed at the Hello deadline. */
  int stall = it_fd(port), silent = it_fd(port);
  uint8_t part[4 + 100] = {0, 0, 1, 0xf4}; /* announces 500 bytes */
  assert_int_equal(kvdh_write_all(stall, part, sizeof part), 0);
  expect_open_silent(stall, READ_TIMEOUT_MS / 2, "a stalled frame (early)");
  expect_closed_silently(stall, READ_TIMEOUT_MS + 2000, "a stalled frame");
  expect_closed_silently(silent, 1000, "a silent connection");

  kvc_status_info s = wait_status(p, tcp_done, &s0);
  fprintf(stderr,
          "refused: truncated %llu, bad_version %llu, wrong_cluster %llu, "
          "stale %llu, replay %llu, bad_tag %llu, mode_mismatch %llu; "
          "oversize %llu, handshake timeouts %llu\n",
          (unsigned long long)DELTA(invalid_truncated),
          (unsigned long long)DELTA(invalid_bad_version),
          (unsigned long long)DELTA(invalid_wrong_cluster),
          (unsigned long long)DELTA(invalid_stale),
          (unsigned long long)DELTA(invalid_replay),
          (unsigned long long)DELTA(invalid_bad_tag),
          (unsigned long long)DELTA(invalid_mode_mismatch),
          (unsigned long long)DELTA(peer_oversize),
          (unsigned long long)DELTA(peer_handshake_timeouts));
  assert_int_equal(DELTA(invalid_replay), 2);
  assert_int_equal(DELTA(invalid_bad_tag), 3);
  assert_int_equal(DELTA(invalid_truncated), 2);
  assert_int_equal(DELTA(invalid_bad_version), 2);
  assert_int_equal(DELTA(invalid_wrong_cluster), 2);
  assert_int_equal(DELTA(invalid_stale), 1);
  assert_int_equal(DELTA(invalid_mode_mismatch), 1);
  assert_int_equal(DELTA(invalid_envelopes), 13);
  assert_int_equal(DELTA(peer_oversize), 2);
  assert_int_equal(DELTA(peer_handshake_timeouts), 2);
  assert_true(kvdh_log_contains(p, "event=peer_envelope_rejected"));

  /* The cluster is unharmed. */
  it_alive(&f->k[0]);
  it_alive(&f->k[1]);
  check_replicates(&f->k[0], &f->k[1], "after-tcp-attack-1");
  check_replicates(&f->k[1], &f->k[0], "after-tcp-attack-2");
  for (int i = 0; i < 70; i++)
    kv_buf_free(&e[i]);
  kv_seal_free(fs);
  IT_END(f);
}

/* ---- UDP ---- */

static int udp_socket(void) {
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(u >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  assert_int_equal(bind(u, (struct sockaddr *)&a, sizeof a), 0);
  return u;
}

static void udp_send(int u, int port, const void *p, size_t len) {
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  assert_int_equal(sendto(u, p, len, 0, (struct sockaddr *)&to, sizeof to),
                   (ssize_t)len);
  kvdh_sleep_ms(5); /* in order, and no receive buffer overflow */
}

static bool udp_done(const kvc_status_info *s, const kvc_status_info *s0) {
  return s->invalid_envelopes - s0->invalid_envelopes >= 10 &&
         s->peer_malformed - s0->peer_malformed >= 2;
}

static void test_peer_attack_udp(void **state) {
  IT_BEGIN(f, 60);
  start_node(f, 0, NULL, NULL, NULL, NULL);
  start_node(f, 1, NULL, NULL, NULL, NULL);
  wait_alive(&f->k[0], 1);
  wait_alive(&f->k[1], 1);
  kvdh *p = &f->k[0];
  int port = p->peer_port; /* the same number, over UDP */
  kvc_status_info s0 = status_of(p);
  int u = udp_socket();

  const uint64_t fake = 0xfa4e000000000011ull;
  kv_seal *us = sealer(CLUSTER "/swim", fake, key_a);
  kv_buf e[70];
  for (int i = 0; i < 70; i++)
    e[i] = empty_msg(us);
  udp_send(u, port, e[69].data, e[69].len); /* opens: malformed */
  udp_send(u, port, e[69].data, e[69].len); /* replay */
  udp_send(u, port, e[0].data, e[0].len);   /* below the window */
  udp_send(u, port, e[40].data, e[40].len); /* inside it: opens */
  kv_buf t = empty_msg(us);
  t.data[KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + 2] ^= 0x01;
  udp_send(u, port, t.data, t.len); /* tampered */
  udp_send(u, port, t.data, 10);    /* truncated */
  udp_send(u, port, t.data, KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN + 4);
  kv_buf_free(&t);
  kv_seal *wk = sealer(CLUSTER "/swim", 0xfa4e000000000012ull, key_b);
  t = empty_msg(wk);
  udp_send(u, port, t.data, t.len); /* another key */
  kv_buf_free(&t);
  kv_seal_free(wk);
  /* A TCP-channel envelope replayed onto UDP: another cluster id. */
  kv_seal *tcp = sealer(CLUSTER, 0xfa4e000000000013ull, key_a);
  t = hello(tcp, CLUSTER, 0xfa4e000000000013ull);
  udp_send(u, port, t.data, t.len);
  kv_buf_free(&t);
  kv_seal_free(tcp);
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  t = seal_at(us, &m, wall_ms() - 120000);
  udp_send(u, port, t.data, t.len); /* stale */
  kv_buf_free(&t);
  static uint8_t junk[65000];
  randombytes_buf(junk, sizeof junk);
  junk[0] = 0x77;
  udp_send(u, port, junk, 1000);        /* garbage */
  udp_send(u, port, junk, sizeof junk); /* oversize garbage */

  kvc_status_info s = wait_status(p, udp_done, &s0);
  fprintf(stderr,
          "refused: truncated %llu, bad_version %llu, wrong_cluster %llu, "
          "stale %llu, replay %llu, bad_tag %llu; malformed %llu\n",
          (unsigned long long)DELTA(invalid_truncated),
          (unsigned long long)DELTA(invalid_bad_version),
          (unsigned long long)DELTA(invalid_wrong_cluster),
          (unsigned long long)DELTA(invalid_stale),
          (unsigned long long)DELTA(invalid_replay),
          (unsigned long long)DELTA(invalid_bad_tag),
          (unsigned long long)DELTA(peer_malformed));
  assert_int_equal(DELTA(invalid_replay), 2);
  assert_int_equal(DELTA(invalid_bad_tag), 2);
  assert_int_equal(DELTA(invalid_truncated), 2);
  assert_int_equal(DELTA(invalid_wrong_cluster), 1);
  assert_int_equal(DELTA(invalid_stale), 1);
  assert_int_equal(DELTA(invalid_bad_version), 2);
  assert_int_equal(DELTA(invalid_envelopes), 10);
  assert_int_equal(DELTA(peer_malformed), 2);
  /* Not one datagram came back to the sender. */
  struct pollfd pf = {u, POLLIN, 0};
  assert_int_equal(poll(&pf, 1, 500), 0);
  close(u);

  it_alive(&f->k[0]);
  it_alive(&f->k[1]);
  /* SWIM still holds both alive, and writes replicate. */
  s = status_of(p);
  assert_int_equal(s.members_alive, 2);
  assert_int_equal(s.members_suspect + s.members_dead, 0);
  check_replicates(&f->k[0], &f->k[1], "after-udp-attack-1");
  check_replicates(&f->k[1], &f->k[0], "after-udp-attack-2");
  for (int i = 0; i < 70; i++)
    kv_buf_free(&e[i]);
  kv_seal_free(us);
  IT_END(f);
}

/* ---- connections per address ---- */

static int fd_from(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, src, &a.sin_addr);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static void test_peer_attack_conns_per_addr(void **state) {
  IT_BEGIN(f, 30);
  start_node(f, 0, "--max-peer-conns-per-addr", "4", "--read-timeout", "20000");
  kvdh *p = &f->k[0];
  int fds[4];
  for (int i = 0; i < 4; i++)
    fds[i] = fd_from("127.0.0.1", p->peer_port);
  /* The fifth from the same address: closed at once, unanswered (long
   * before the 20 s Hello deadline). */
  int extra = fd_from("127.0.0.1", p->peer_port);
  expect_closed_silently(extra, 1000, "a fifth connection");
  /* Another address still gets in; the four are still open. */
  int other = fd_from("127.0.0.2", p->peer_port);
  expect_open_silent(other, 300, "a connection from 127.0.0.2");
  for (int i = 0; i < 4; i++)
    expect_open_silent(fds[i], 0, "one of the four");
  kvc_status_info s = status_of(p);
  assert_int_equal(s.peer_conns_refused, 1);
  assert_true(kvdh_log_contains(p, "reason=max_peer_conns_per_addr"));
  /* A freed slot is usable again. */
  close(fds[0]);
  kvdh_sleep_ms(200);
  fds[0] = fd_from("127.0.0.1", p->peer_port);
  expect_open_silent(fds[0], 300, "a connection in a freed slot");
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  close(other);
  it_alive(p);
  IT_END(f);
}

/* ---- rate limit ---- */

static int count_in_log(const kvdh *p, const char *needle) {
  FILE *fp = fopen(p->log, "r");
  if (!fp) return 0;
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, fp))
    n += strstr(line, needle) != NULL;
  fclose(fp);
  return n;
}

static bool all_seen(const kvc_status_info *s, const kvc_status_info *s0) {
  return (s->peer_messages_received - s0->peer_messages_received) +
             (s->peer_rate_limited - s0->peer_rate_limited) >=
         2001;
}

static void test_peer_attack_rate_limit(void **state) {
  IT_BEGIN(f, 30);
  start_node(f, 0, "--peer-rate", "200", "--peer-burst", "100");
  kvdh *p = &f->k[0];
  kvc_status_info s0 = status_of(p);

  /* A key holder's Hello and 2,000 messages in one burst over TCP. */
  const uint64_t fake = 0xfa4e000000000021ull;
  kv_seal *fs = sealer(CLUSTER, fake, key_a);
  enum { N = 2000 };
  size_t cap = (N + 1) * 256, len = 0;
  uint8_t *burst = malloc(cap);
  for (int i = 0; i <= N; i++) {
    kv_buf env = i == 0 ? hello(fs, CLUSTER, fake) : empty_msg(fs);
    burst[len] = 0, burst[len + 1] = 0,
    burst[len + 2] = (uint8_t)(env.len >> 8);
    burst[len + 3] = (uint8_t)env.len;
    memcpy(burst + len + 4, env.data, env.len);
    len += 4 + env.len;
    kv_buf_free(&env);
  }
  uint64_t t0 = kvdh_now_ms();
  int fd = it_fd(p->peer_port);
  assert_int_equal(kvdh_write_all(fd, burst, len), 0);
  free(burst);
  kvc_status_info s = wait_status(p, all_seen, &s0);
  uint64_t took = kvdh_now_ms() - t0;
  uint64_t accepted = DELTA(peer_messages_received),
           limited = DELTA(peer_rate_limited);
  fprintf(stderr, "TCP: %llu accepted, %llu dropped in %llu ms\n",
          (unsigned long long)accepted, (unsigned long long)limited,
          (unsigned long long)took);
  assert_int_equal(accepted + limited, N + 1);
  /* The burst, plus 200 a second for as long as it took, at most. */
  assert_true(accepted <= 100 + 200 * took / 1000 + 5);
  assert_true(limited >= 1500);
  /* Dropped, not disconnected. */
  expect_open_silent(fd, 100, "a rate-limited peer");

  /* UDP, another sender: 1,000 datagrams as fast as they go. */
  kv_seal *us = sealer(CLUSTER "/swim", fake + 1, key_a);
  int u = udp_socket();
  s0 = status_of(p);
  t0 = kvdh_now_ms();
  struct sockaddr_in to = {0};
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)p->peer_port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  for (int i = 0; i < 1000; i++) {
    kv_buf env = empty_msg(us);
    (void)sendto(u, env.data, env.len, 0, (struct sockaddr *)&to, sizeof to);
    kv_buf_free(&env);
    if (i % 50 == 49) kvdh_sleep_ms(1); /* let kvd's receive buffer drain */
  }
  kvdh_sleep_ms(500);
  s = status_of(p);
  took = kvdh_now_ms() - t0;
  accepted = DELTA(peer_malformed);
  limited = DELTA(peer_rate_limited);
  fprintf(stderr, "UDP: %llu accepted, %llu dropped in %llu ms\n",
          (unsigned long long)accepted, (unsigned long long)limited,
          (unsigned long long)took);
  assert_true(accepted + limited <= 1000);
  assert_true(accepted <= 100 + 200 * took / 1000 + 5);
  assert_true(limited >= 600);
  struct pollfd pf = {u, POLLIN, 0};
  assert_int_equal(poll(&pf, 1, 0), 0);
  close(u);

  /* Logged, at most once a second. */
  int lines = count_in_log(p, "event=peer_rate_limited");
  uint64_t secs = (kvdh_now_ms() - t0 + took) / 1000 + 2;
  fprintf(stderr, "peer_rate_limited logged %d times\n", lines);
  assert_true(lines >= 1);
  assert_true((uint64_t)lines <= secs + 1);

  /* A limit, not a ban: once the bucket has refilled, the sender is heard
   * again. */
  kvdh_sleep_ms(700);
  s0 = status_of(p);
  kv_buf env = empty_msg(fs);
  send_frame(fd, env.data, env.len);
  kv_buf_free(&env);
  kvdh_sleep_ms(200);
  s = status_of(p);
  assert_int_equal(DELTA(peer_messages_received), 1);
  assert_int_equal(DELTA(peer_rate_limited), 0);
  close(fd);
  kv_seal_free(fs);
  kv_seal_free(us);
  it_alive(p);
  IT_END(f);
}

/* The default rate limit never throttles replication: 20,000 writes as
 * fast as one pipelining client can make them (each a rumor to every peer,
 * each acknowledged in a message of its own) reach all three replicas, and
 * nothing was dropped anywhere. */
static void test_peer_attack_defaults_do_not_throttle(void **state) {
  IT_BEGIN(f, 60);
  for (int i = 0; i < 3; i++)
    start_node(f, i, NULL, NULL, NULL, NULL);
  for (int i = 0; i < 3; i++)
    wait_alive(&f->k[i], 2);
  kvc_conn *c = it_conn(&f->k[0]);
  enum { N = 20000, WINDOW = 500 };
  char key[32];
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "flood%d", i);
    assert_kvc(kvc_send_put(c, key, strlen(key), "v", 1, NULL, 0, NULL),
               KVC_OK);
    if (i >= WINDOW) {
      kvc_result *r = NULL;
      assert_kvc(kvc_recv(c, &r), KVC_OK);
      kvc_result_free(r);
    }
  }
  for (int i = 0; i < WINDOW; i++) {
    kvc_result *r = NULL;
    assert_kvc(kvc_recv(c, &r), KVC_OK);
    kvc_result_free(r);
  }
  kvc_close(c);
  uint64_t end = kvdh_now_ms() + 30000;
  for (int i = 1; i < 3; i++) {
    while (status_of(&f->k[i]).keys < N) {
      if (kvdh_now_ms() > end)
        fail_msg("node %d has %llu of %d keys", i + 1,
                 (unsigned long long)status_of(&f->k[i]).keys, N);
      kvdh_sleep_ms(50);
    }
  }
  for (int i = 0; i < 3; i++) {
    kvc_status_info s = status_of(&f->k[i]);
    fprintf(stderr, "node %d: %llu peer messages received, %llu dropped\n",
            i + 1, (unsigned long long)s.peer_messages_received,
            (unsigned long long)s.peer_rate_limited);
    assert_int_equal(s.peer_rate_limited, 0);
    assert_int_equal(s.invalid_envelopes, 0);
  }
  IT_END(f);
}

int main(void) {
  if (sodium_init() < 0) return 1;
  memset(key_a, 'A', sizeof key_a);
  memset(key_b, 'B', sizeof key_b);
  const struct CMUnitTest tests[] = {
      IT_TEST(test_peer_attack_tcp),
      IT_TEST(test_peer_attack_udp),
      IT_TEST(test_peer_attack_conns_per_addr),
      IT_TEST(test_peer_attack_rate_limit),
      IT_TEST(test_peer_attack_defaults_do_not_throttle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
