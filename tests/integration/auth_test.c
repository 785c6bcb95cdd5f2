/*
 * Integration tests of client authentication (kvd --auth-token-file): native
 * requests before Auth get AUTH_REQUIRED, a wrong token AUTH_FAILED, the
 * right one (kvc_options.token) works; RESP commands before AUTH get
 * -NOAUTH, a wrong password -WRONGPASS, the right one +OK; an AUTH pipelined
 * with the commands after it (as redis-benchmark -a sends it) covers them.
 * kvd refuses to start with a client port on a non-loopback address and no
 * token, and with an unusable token file. The refused addresses are
 * documentation addresses (192.0.2.1, 2001:db8::1) that this machine does
 * not have, so even a kvd that failed to refuse could not listen on them.
 */
#include "tests/integration/itest.h"

#define TOKEN "s3cret-token"

static void start_with_token(it_fixture *f) {
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static char path[256];
  snprintf(path, sizeof path, "%s/token", p->dir);
  FILE *t = fopen(path, "w");
  assert_non_null(t);
  fputs(TOKEN "\n", t);
  fclose(t);
  it_args(p, "--sync", "none", "--auth-token-file", path, NULL);
  it_start(p);
}

static Kvpb__Response *native_auth(int fd, uint64_t id, const char *token) {
  Kvpb__Request req = KVPB__REQUEST__INIT;
  Kvpb__AuthReq a = KVPB__AUTH_REQ__INIT;
  req.id = id;
  req.body_case = KVPB__REQUEST__BODY_AUTH;
  req.auth = &a;
  a.token.data = (uint8_t *)token;
  a.token.len = strlen(token);
  it_native_send(fd, &req);
  return it_native_recv(fd);
}

static void test_auth_native(void **state) {
  IT_BEGIN(f, 30);
  start_with_token(f);
  kvdh *p = &f->k[0];

  /* Without a token the library connects, and every request is refused. */
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_AUTH_REQUIRED);
  assert_null(r);
  assert_kvc(kvc_put(c, "k", 1, "v", 1, NULL, 0), KVC_AUTH_REQUIRED);
  int64_t v;
  assert_kvc(kvc_incr(c, "n", 1, 1, false, &v), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_scan(c, NULL, 0, NULL, 0, 10, &r), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_status(c, &r), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_verify(c, NULL), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_members(c, &r), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_backup(c, "/nonexistent-auth-test", NULL), KVC_AUTH_REQUIRED);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  kvc_close(c);

  /* A wrong token fails the connect. */
  kvc_options o = {0};
  o.token = "wrong";
  c = NULL;
  assert_kvc(kvc_connect("127.0.0.1", p->native_port, &o, &c), KVC_AUTH_FAILED);
  kvc_close(c);
  o.token = TOKEN "x";
  c = NULL;
  assert_kvc(kvc_connect("127.0.0.1", p->native_port, &o, &c), KVC_AUTH_FAILED);
  kvc_close(c);
  assert_true(kvdh_log_contains(p, "auth_failed"));

  /* The right token works for everything. */
  o.token = TOKEN;
  c = it_conn_opts(p, &o);
  assert_kvc(kvc_put(c, "k", 1, "v", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_true(it_has_sibling(r, "v"));
  kvc_result_free(r);
  assert_kvc(kvc_incr(c, "n", 1, 2, false, &v), KVC_OK);
  assert_int_equal(v, 2);
  assert_kvc(kvc_status(c, &r), KVC_OK);
  kvc_result_free(r);
  kvc_close(c);

  /* Raw: request ids are kept; a failed Auth leaves the connection
   * unauthenticated but usable; a good one opens it. */
  int fd = it_fd(p->native_port);
  Kvpb__Response *resp = it_native_get(fd, 3, "k", 1);
  assert_int_equal(resp->id, 3);
  assert_int_equal(resp->error, WIRE(KVC_AUTH_REQUIRED));
  assert_int_equal(resp->body_case, KVPB__RESPONSE__BODY__NOT_SET);
  kvpb__response__free_unpacked(resp, NULL);
  resp = native_auth(fd, 4, "nope");
  assert_int_equal(resp->id, 4);
  assert_int_equal(resp->error, WIRE(KVC_AUTH_FAILED));
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_get(fd, 5, "k", 1);
  assert_int_equal(resp->error, WIRE(KVC_AUTH_REQUIRED));
  kvpb__response__free_unpacked(resp, NULL);
  resp = native_auth(fd, 6, TOKEN);
  assert_int_equal(resp->id, 6);
  assert_int_equal(resp->error, 0);
  assert_int_equal(resp->body_case, KVPB__RESPONSE__BODY_AUTH);
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_get(fd, 7, "k", 1);
  assert_int_equal(resp->id, 7);
  assert_int_equal(resp->error, 0);
  assert_int_equal(resp->get->n_siblings, 1);
  kvpb__response__free_unpacked(resp, NULL);
  close(fd);
  IT_END(f);
}

static void test_auth_resp(void **state) {
  IT_BEGIN(f, 30);
  start_with_token(f);
  kvdh *p = &f->k[0];
  const char *noauth = "-NOAUTH Authentication required.";
  const char *wrongpass =
      "-WRONGPASS invalid username-password pair or user is disabled.";
  int fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "GET", "k"), noauth);
  assert_string_equal(RESP(fd, "SET", "k", "v"), noauth);
  assert_string_equal(RESP(fd, "PING"), noauth);
  assert_string_equal(RESP(fd, "INFO"), noauth);
  assert_string_equal(RESP(fd, "DBSIZE"), noauth);
  assert_string_equal(RESP(fd, "KV.SIBLINGS", "k"), noauth);
  assert_string_equal(RESP(fd, "AUTH", "wrongtoken"), wrongpass);
  assert_string_equal(RESP(fd, "AUTH", ""), wrongpass);
  assert_string_equal(RESP(fd, "GET", "k"), noauth);
  assert_string_equal(RESP(fd, "AUTH", TOKEN), "OK");
  assert_string_equal(RESP(fd, "SET", "k", "v"), "OK");
  assert_string_equal(RESP(fd, "GET", "k"), "v");
  assert_string_equal(RESP(fd, "PING"), "PONG");
  close(fd);
  /* The two-argument form (user, password), as redis-cli --user sends it. */
  fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "AUTH", "default", "wrong"), wrongpass);
  assert_string_equal(RESP(fd, "AUTH", "default", TOKEN), "OK");
  assert_string_equal(RESP(fd, "GET", "k"), "v");
  close(fd);
  /* Each connection authenticates on its own; QUIT needs no auth. */
  fd = it_fd(p->resp_port);
  assert_string_equal(RESP(fd, "GET", "k"), noauth);
  assert_string_equal(RESP(fd, "QUIT"), "OK");
  assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
  close(fd);

  /* redis-cli -a. */
  const char *cli = kvdh_which("redis-cli");
  if (cli) {
    char port[16], out[256], err[512];
    snprintf(port, sizeof port, "%d", p->resp_port);
    const char *get_noauth[] = {cli, "-p", port, "GET", "k", NULL};
    assert_int_equal(
        kvdh_exec(get_noauth, NULL, out, sizeof out, err, sizeof err, 10000),
        0);
    assert_non_null(strstr(out, "NOAUTH"));
    const char *get_auth[] = {
        cli, "-p", port, "-a", TOKEN, "--no-auth-warning", "GET", "k", NULL};
    assert_int_equal(
        kvdh_exec(get_auth, NULL, out, sizeof out, err, sizeof err, 10000), 0);
    assert_string_equal(out, "v\n");
  }
  IT_END(f);
}

/* AUTH and the commands after it, sent in one write (pipelined), as
 * redis-benchmark -a and any pipelining client do: the commands after a
 * successful AUTH must run authenticated, as in Redis. */
static void test_auth_resp_pipelined_after_auth(void **state) {
  IT_BEGIN(f, 30);
  start_with_token(f);
  kvdh *p = &f->k[0];
  int fd = it_fd(p->resp_port);
  const char *in = "AUTH " TOKEN "\r\nSET pk pv\r\nGET pk\r\n";
  assert_int_equal(kvdh_write_all(fd, in, strlen(in)), 0);
  char out[256];
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "pv");
  close(fd);
  IT_END(f);
}

/* The same for the native protocol: an Auth frame and a Get frame in one
 * write. */
static void test_auth_native_pipelined_after_auth(void **state) {
  IT_BEGIN(f, 30);
  start_with_token(f);
  kvdh *p = &f->k[0];
  int fd = it_fd(p->native_port);
  Kvpb__Request a = KVPB__REQUEST__INIT, g = KVPB__REQUEST__INIT;
  Kvpb__AuthReq ar = KVPB__AUTH_REQ__INIT;
  Kvpb__GetReq gr = KVPB__GET_REQ__INIT;
  a.id = 1;
  a.body_case = KVPB__REQUEST__BODY_AUTH;
  a.auth = &ar;
  ar.token.data = (uint8_t *)TOKEN;
  ar.token.len = strlen(TOKEN);
  g.id = 2;
  g.body_case = KVPB__REQUEST__BODY_GET;
  g.get = &gr;
  gr.key.data = (uint8_t *)"nk";
  gr.key.len = 2;
  uint8_t buf[256];
  size_t n = 0, an = kvpb__request__get_packed_size(&a),
         gn = kvpb__request__get_packed_size(&g);
  buf[n++] = 0, buf[n++] = 0, buf[n++] = 0, buf[n++] = (uint8_t)an;
  kvpb__request__pack(&a, buf + n);
  n += an;
  buf[n++] = 0, buf[n++] = 0, buf[n++] = 0, buf[n++] = (uint8_t)gn;
  kvpb__request__pack(&g, buf + n);
  n += gn;
  assert_int_equal(kvdh_write_all(fd, buf, n), 0);
  Kvpb__Response *resp = it_native_recv(fd);
  assert_int_equal(resp->id, 1);
  assert_int_equal(resp->error, 0);
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_recv(fd);
  uint64_t id = resp->id;
  uint32_t error = resp->error;
  char msg[128];
  snprintf(msg, sizeof msg, "%s", resp->message ? resp->message : "");
  kvpb__response__free_unpacked(resp, NULL);
  assert_int_equal(id, 2);
  if (error != WIRE(KVC_NOTFOUND))
    fail_msg("Get pipelined after a good Auth: error %u (%s)", error, msg);
  close(fd);
  IT_END(f);
}

/* kvd refuses, before binding anything, a client port on a non-loopback
 * address without a token. */
static void test_auth_refuses_non_loopback_without_token(void **state) {
  IT_BEGIN(f, 30);
  const char *cases[][2] = {
      {"--listen", "192.0.2.1:0"},
      {"--resp-listen", "192.0.2.1:0"},
      {"--listen", "[2001:db8::1]:0"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kvdh *p = &f->k[i];
    it_args(p, cases[i][0], cases[i][1], NULL);
    int st = kvdh_start_expect_exit(p, 10000);
    if (st == -1)
      fail_msg("kvd %s %s did not refuse to start", cases[i][0], cases[i][1]);
    assert_true(WIFEXITED(st));
    assert_int_not_equal(WEXITSTATUS(st), 0);
    assert_true(kvdh_log_contains(p, "config_refused"));
    assert_true(kvdh_log_contains(p, "auth-token-file"));
    /* It refused before trying to bind. */
    assert_false(kvdh_log_contains(p, "listen_failed"));
    assert_false(kvdh_log_contains(p, "event=listen "));
  }
  /* Loopback spellings are accepted without a token. */
  kvdh *p = &f->k[3];
  it_args(p, "--sync", "none", "--listen", "[::1]:0", NULL);
  it_start(p);
  kvc_conn *c = NULL;
  assert_kvc(kvc_connect("::1", p->native_port, NULL, &c), KVC_OK);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

/* A token file that is missing or empty stops kvd at start. */
static void test_auth_bad_token_file_refused(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static char missing[256], empty[256];
  snprintf(missing, sizeof missing, "%s/no-such-token", p->dir);
  it_args(p, "--auth-token-file", missing, NULL);
  int st = kvdh_start_expect_exit(p, 10000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
  assert_true(kvdh_log_contains(p, "auth_token_unreadable"));

  kvdh *q = &f->k[1];
  assert_int_equal(kvdh_prepare(q), 0);
  snprintf(empty, sizeof empty, "%s/empty-token", q->dir);
  FILE *t = fopen(empty, "w");
  assert_non_null(t);
  fputs("\n", t);
  fclose(t);
  it_args(q, "--auth-token-file", empty, NULL);
  st = kvdh_start_expect_exit(q, 10000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
  assert_true(kvdh_log_contains(q, "auth_token_invalid"));
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_auth_native),
      IT_TEST(test_auth_resp),
      IT_TEST(test_auth_resp_pipelined_after_auth),
      IT_TEST(test_auth_native_pipelined_after_auth),
      IT_TEST(test_auth_refuses_non_loopback_without_token),
      IT_TEST(test_auth_bad_token_file_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
