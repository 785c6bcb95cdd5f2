/*
 * End-to-end tests of kvctl (the binary named by $KVCTL) against a real kvd:
 * get/put/del/incr/decr/scan/status/verify/keygen, --json, the exit status
 * contract (0 ok, 1 not found, 2 usage, 3 any other error, with "kvctl: ..."
 * on stderr), put reading the context first so that it replaces, --no-context
 * adding a sibling, --context taken from get --json, values from standard
 * input, and --token-file against a kvd that wants a token. Durability is
 * not tested here, so kvd runs with --sync none.
 */
#include <netinet/in.h>

#include "tests/integration/itest.h"

static char hostport[64];
static char out[65536], err[8192];

/* Runs kvctl -h HOSTPORT args... (NULL-terminated) with stdin_data; returns
 * its exit status, with stdout in out and stderr in err. */
static int kvctl_in(const char *stdin_data, ...) {
  const char *bin = getenv("KVCTL");
  if (!bin || !*bin) bin = "build/kvctl";
  const char *argv[40] = {bin, "-h", hostport};
  int argc = 3;
  va_list ap;
  va_start(ap, stdin_data);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 39)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  int rc = kvdh_exec(argv, stdin_data, out, sizeof out, err, sizeof err, 20000);
  if (rc == -1) fail_msg("kvctl could not run or timed out");
  return rc;
}

#define KVCTL(...) kvctl_in(NULL, __VA_ARGS__, (const char *)NULL)

static void start(it_fixture *f) {
  it_args(&f->k[0], "--sync", "none", "--name", "ctl-node", NULL);
  it_start(&f->k[0]);
  snprintf(hostport, sizeof hostport, "127.0.0.1:%d", f->k[0].native_port);
}

/* Sorted, newline-separated lines of out, joined with '|'. */
static const char *lines_of(const char *text) {
  static char buf[65536];
  char tmp[65536], *lines[1024];
  snprintf(tmp, sizeof tmp, "%s", text);
  size_t n = 0;
  for (char *s = strtok(tmp, "\n"); s && n < 1024; s = strtok(NULL, "\n"))
    lines[n++] = s;
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(lines[j - 1], lines[j]) > 0; j--) {
      char *t = lines[j];
      lines[j] = lines[j - 1];
      lines[j - 1] = t;
    }
  buf[0] = 0;
  for (size_t i = 0; i < n; i++) {
    if (i) strcat(buf, "|");
    strncat(buf, lines[i], sizeof buf - strlen(buf) - 2);
  }
  return buf;
}

/* The "context" field of get --json output (static copy). */
static const char *json_context(const char *json) {
  static char ctx[4096];
  const char *p = strstr(json, "\"context\":\"");
  if (!p) fail_msg("no context in %s", json);
  p += 11;
  size_t n = strcspn(p, "\"");
  assert_true(n < sizeof ctx);
  memcpy(ctx, p, n);
  ctx[n] = 0;
  return ctx;
}

static void test_kvctl_get_put_del(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  assert_int_equal(KVCTL("put", "k", "v1"), 0);
  assert_string_equal(out, "");
  assert_int_equal(KVCTL("get", "k"), 0);
  assert_string_equal(out, "v1\n");
  /* put reads the context first, so it replaces. */
  assert_int_equal(KVCTL("put", "k", "v2"), 0);
  assert_int_equal(KVCTL("get", "k"), 0);
  assert_string_equal(out, "v2\n");
  /* --no-context adds a sibling. */
  assert_int_equal(KVCTL("put", "k", "v3", "--no-context"), 0);
  assert_int_equal(KVCTL("get", "k"), 0);
  assert_string_equal(lines_of(out), "v2|v3");
  /* A plain put replaces both siblings it saw. */
  assert_int_equal(KVCTL("put", "k", "v4"), 0);
  assert_int_equal(KVCTL("get", "k"), 0);
  assert_string_equal(out, "v4\n");
  /* Options may come before the command; -- ends them. */
  assert_int_equal(KVCTL("--no-context", "put", "--", "-dash", "-5"), 0);
  assert_int_equal(KVCTL("get", "--", "-dash"), 0);
  assert_string_equal(out, "-5\n");
  /* The value from standard input, bytes as they are. */
  assert_int_equal(
      kvctl_in("line one\nline two\n", "put", "multi", "-", (const char *)NULL),
      0);
  assert_int_equal(KVCTL("get", "multi"), 0);
  assert_string_equal(out, "line one\nline two\n\n");
  assert_int_equal(KVCTL("get", "multi", "--json"), 0);
  assert_non_null(strstr(out, "\"siblings\":[\"line one\\nline two\\n\"]"));
  /* Delete: then not found (exit 1, nothing printed); a second delete
   * finds nothing. */
  assert_int_equal(KVCTL("del", "k"), 0);
  assert_int_equal(KVCTL("get", "k"), 1);
  assert_string_equal(out, "");
  assert_string_equal(err, "");
  assert_int_equal(KVCTL("del", "k"), 1);
  assert_int_equal(KVCTL("get", "never-written"), 1);
  assert_int_equal(KVCTL("get", "never-written", "--json"), 1);
  assert_non_null(strstr(out, "\"kind\":\"none\""));
  /* What kvctl wrote, RESP reads. */
  int fd = it_fd(f->k[0].resp_port);
  assert_string_equal(RESP(fd, "GET", "-dash"), "-5");
  close(fd);
  IT_END(f);
}

static void test_kvctl_context_from_get_json(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  assert_int_equal(KVCTL("put", "s", "a"), 0);
  assert_int_equal(KVCTL("put", "s", "b", "--no-context"), 0);
  assert_int_equal(KVCTL("get", "s", "--json"), 0);
  assert_non_null(strstr(out, "\"key\":\"s\""));
  assert_non_null(strstr(out, "\"kind\":\"register\""));
  assert_true(strstr(out, "\"siblings\":[\"a\",\"b\"]") ||
              strstr(out, "\"siblings\":[\"b\",\"a\"]"));
  char ctx[4096];
  snprintf(ctx, sizeof ctx, "%s", json_context(out));
  assert_true(strlen(ctx) > 0);
  /* A concurrent write the context did not see. */
  assert_int_equal(KVCTL("put", "s", "c", "--no-context"), 0);
  assert_int_equal(KVCTL("put", "s", "merged", "--context", ctx), 0);
  assert_int_equal(KVCTL("get", "s"), 0);
  assert_string_equal(lines_of(out), "c|merged");
  /* --context=C spelling, and del with a context: removes what it saw. */
  assert_int_equal(KVCTL("get", "s", "--json"), 0);
  char opt[4200];
  snprintf(opt, sizeof opt, "--context=%s", json_context(out));
  assert_int_equal(KVCTL("put", "s", "d", "--no-context"), 0);
  assert_int_equal(KVCTL("del", "s", opt), 0);
  assert_int_equal(KVCTL("get", "s"), 0);
  assert_string_equal(out, "d\n");
  /* An empty context from a not-found get is a valid context. */
  assert_int_equal(KVCTL("get", "fresh", "--json"), 1);
  snprintf(opt, sizeof opt, "--context=%s", json_context(out));
  assert_int_equal(KVCTL("put", "fresh", "x", opt), 0);
  assert_int_equal(KVCTL("get", "fresh"), 0);
  assert_string_equal(out, "x\n");
  /* A context that is not base64 is a usage error; one that is base64 but
   * not a context is refused by the server. */
  assert_int_equal(KVCTL("put", "s", "e", "--context", "%%%"), 2);
  assert_non_null(strstr(err, "kvctl: --context"));
  assert_int_equal(KVCTL("put", "s", "e", "--context", "/////w=="), 3);
  assert_non_null(strstr(err, "kvctl: "));
  assert_int_equal(KVCTL("get", "s"), 0);
  assert_string_equal(out, "d\n");
  IT_END(f);
}

static void test_kvctl_counters(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  assert_int_equal(KVCTL("incr", "n"), 0);
  assert_string_equal(out, "1\n");
  assert_int_equal(KVCTL("incr", "n", "5"), 0);
  assert_string_equal(out, "6\n");
  assert_int_equal(KVCTL("decr", "n"), 0);
  assert_string_equal(out, "5\n");
  assert_int_equal(KVCTL("decr", "n", "10"), 0);
  assert_string_equal(out, "-5\n");
  assert_int_equal(KVCTL("incr", "n", "-3"), 0);
  assert_string_equal(out, "-8\n");
  assert_int_equal(KVCTL("get", "n"), 0);
  assert_string_equal(out, "-8\n");
  assert_int_equal(KVCTL("incr", "n", "--json"), 0);
  assert_string_equal(out, "{\"key\":\"n\",\"value\":-7}\n");
  assert_int_equal(KVCTL("get", "n", "--json"), 0);
  assert_non_null(strstr(out, "\"kind\":\"pncounter\",\"value\":-7"));
  assert_int_equal(KVCTL("incr", "g", "--gcounter"), 0);
  assert_string_equal(out, "1\n");
  assert_int_equal(KVCTL("decr", "g"), 3);
  assert_non_null(strstr(err, "kvctl: "));
  assert_non_null(strstr(err, "G-counter"));
  assert_int_equal(KVCTL("get", "g", "--json"), 0);
  assert_non_null(strstr(out, "\"kind\":\"gcounter\",\"value\":1"));
  /* Wrong type both ways: exit 3 with the server's message. */
  assert_int_equal(KVCTL("put", "n", "x"), 3);
  assert_non_null(strstr(err, "wrong kind"));
  assert_int_equal(KVCTL("put", "r", "x"), 0);
  assert_int_equal(KVCTL("incr", "r"), 3);
  assert_non_null(strstr(err, "wrong kind"));
  assert_int_equal(KVCTL("incr", "big", "9223372036854775807"), 0);
  assert_int_equal(KVCTL("incr", "big"), 3);
  assert_non_null(strstr(err, "overflow"));
  IT_END(f);
}

static void test_kvctl_scan(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  int fd = it_fd(f->k[0].resp_port);
  char k[32];
  for (int i = 0; i < 1500; i++) {
    snprintf(k, sizeof k, "u:%04d", i);
    if (kvdh_resp_send(fd, 3, (const char *[]){"SET", k, "v"}, NULL))
      fail_msg("send");
  }
  for (int i = 0; i < 1500; i++) {
    char r[64];
    assert_int_equal(kvdh_resp_read(fd, r, sizeof r), 0);
    assert_string_equal(r, "OK");
  }
  assert_string_equal(RESP(fd, "MSET", "v:1", "a", "v:2", "b", "gone", "c"),
                      "OK");
  assert_string_equal(RESP(fd, "DEL", "gone"), "1");
  close(fd);
  /* More keys than one page (kvctl asks for 1,000 at a time). */
  assert_int_equal(KVCTL("scan"), 0);
  size_t n = 0;
  for (const char *p = out; *p; p++)
    n += *p == '\n';
  assert_int_equal(n, 1502);
  assert_null(strstr(out, "gone\n"));
  assert_int_equal(KVCTL("scan", "--prefix", "v:"), 0);
  assert_string_equal(lines_of(out), "v:1|v:2");
  assert_int_equal(KVCTL("scan", "--prefix", "u:", "--limit", "7"), 0);
  n = 0;
  for (const char *p = out; *p; p++)
    n += *p == '\n';
  assert_int_equal(n, 7);
  assert_int_equal(KVCTL("scan", "--prefix=v:", "--json"), 0);
  assert_true(!strcmp(out, "{\"keys\":[\"v:1\",\"v:2\"]}\n") ||
              !strcmp(out, "{\"keys\":[\"v:2\",\"v:1\"]}\n"));
  assert_int_equal(KVCTL("scan", "--prefix", "none:"), 0);
  assert_string_equal(out, "");
  IT_END(f);
}

static void test_kvctl_status_verify_keygen(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  assert_int_equal(KVCTL("put", "a", "1"), 0);
  assert_int_equal(KVCTL("put", "b", "2"), 0);
  assert_int_equal(KVCTL("status"), 0);
  assert_non_null(strstr(out, "name: ctl-node\n"));
  assert_non_null(strstr(out, "replica_id: "));
  assert_non_null(strstr(out, "keys: 2\n"));
  assert_non_null(strstr(out, "merkle_root: "));
  assert_non_null(strstr(out, "sync: none"));
  assert_int_equal(KVCTL("status", "--json"), 0);
  assert_true(out[0] == '{');
  assert_non_null(strstr(out, "\"name\":\"ctl-node\""));
  assert_non_null(strstr(out, "\"keys\":2,"));
  assert_non_null(strstr(out, "\"sync\":false"));
  assert_int_equal(KVCTL("verify"), 0);
  assert_true(it_prefix(out, "ok"));
  assert_int_equal(KVCTL("verify", "--json"), 0);
  assert_string_equal(out, "{\"ok\":true,\"mismatched_segments\":0}\n");
  /* keygen needs no server: 32 random bytes in base64, new each time. */
  char first[128];
  const char *bin = getenv("KVCTL") ? getenv("KVCTL") : "build/kvctl";
  const char *kg[] = {bin, "keygen", NULL};
  assert_int_equal(kvdh_exec(kg, NULL, out, sizeof out, err, sizeof err, 10000),
                   0);
  assert_int_equal(strlen(out), 45);
  assert_int_equal(out[43], '=');
  memcpy(first, out, 46); /* 44 characters, newline, NUL */
  assert_int_equal(kvdh_exec(kg, NULL, out, sizeof out, err, sizeof err, 10000),
                   0);
  assert_string_not_equal(out, first);
  IT_END(f);
}

/* A local port nothing listens on. */
static int dead_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(s, (struct sockaddr *)&a, sizeof a) ||
      getsockname(s, (struct sockaddr *)&a, &len))
    fail_msg("cannot find a free port");
  close(s);
  return ntohs(a.sin_port);
}

static void test_kvctl_exit_codes(void **state) {
  IT_BEGIN(f, 60);
  start(f);
  /* 1: not found (nothing printed). */
  assert_int_equal(KVCTL("get", "nope"), 1);
  assert_string_equal(out, "");
  assert_int_equal(KVCTL("del", "nope"), 1);
  /* 2: usage errors, before any request. */
  struct {
    const char *argv[8]; /* NULL-terminated */
  } usage[] = {
      {{"bogus"}},
      {{"get"}},
      {{"get", "a", "b"}},
      {{"put", "k"}},
      {{"get", ""}},
      {{"incr", "k", "notanumber"}},
      {{"incr", "k", "1", "2"}},
      {{"decr", "k", "-9223372036854775808"}},
      {{"scan", "--limit", "0"}},
      {{"get", "k", "--context", "AAAA"}},
      {{"put", "k", "v", "--context", "AAAA", "--no-context"}},
      {{"get", "k", "--frobnicate"}},
      {{"get", "k", "--timeout", "0"}},
      {{"status", "--json=yes"}},
  };
  for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
    const char *bin = getenv("KVCTL") ? getenv("KVCTL") : "build/kvctl";
    const char *argv[10] = {bin, "-h", hostport};
    int argc = 3;
    for (int j = 0; usage[i].argv[j]; j++)
      argv[argc++] = usage[i].argv[j];
    argv[argc] = NULL;
    int rc = kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 10000);
    if (rc != 2)
      fail_msg("kvctl %s ...: exit %d, want 2 (stderr: %s)", usage[i].argv[0],
               rc, err);
    assert_true(it_prefix(err, "kvctl: "));
  }
  const char *bin = getenv("KVCTL") ? getenv("KVCTL") : "build/kvctl";
  const char *none[] = {bin, NULL};
  assert_int_equal(
      kvdh_exec(none, NULL, out, sizeof out, err, sizeof err, 10000), 2);
  const char *badhost[] = {bin, "-h", "127.0.0.1:99999", "status", NULL};
  assert_int_equal(
      kvdh_exec(badhost, NULL, out, sizeof out, err, sizeof err, 10000), 2);
  const char *help[] = {bin, "--help", NULL};
  assert_int_equal(
      kvdh_exec(help, NULL, out, sizeof out, err, sizeof err, 10000), 0);
  assert_non_null(strstr(out, "Usage: kvctl"));
  /* 3: connection refused, and other errors, with a message. */
  char dead[64];
  snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port());
  const char *refused[] = {bin, "-h", dead, "get", "k", NULL};
  assert_int_equal(
      kvdh_exec(refused, NULL, out, sizeof out, err, sizeof err, 10000), 3);
  assert_non_null(strstr(err, "kvctl: "));
  assert_non_null(strstr(err, "refused"));
  assert_string_equal(out, "");
  const char *refused2[] = {bin, "-h", dead, "status", "--json", NULL};
  assert_int_equal(
      kvdh_exec(refused2, NULL, out, sizeof out, err, sizeof err, 10000), 3);
  char longkey[600];
  memset(longkey, 'k', 508);
  longkey[508] = 0;
  assert_int_equal(KVCTL("put", longkey, "v"), 3);
  assert_non_null(strstr(err, "507"));
  IT_END(f);
}

static void test_kvctl_token_file(void **state) {
  IT_BEGIN(f, 60);
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static char tok[256], bad[256];
  snprintf(tok, sizeof tok, "%s/token", p->dir);
  snprintf(bad, sizeof bad, "%s/bad-token", p->dir);
  FILE *t = fopen(tok, "w");
  assert_non_null(t);
  fputs("kvctl-secret\n", t);
  fclose(t);
  t = fopen(bad, "w");
  assert_non_null(t);
  fputs("not-the-secret\n", t);
  fclose(t);
  it_args(p, "--sync", "none", "--auth-token-file", tok, NULL);
  it_start(p);
  snprintf(hostport, sizeof hostport, "127.0.0.1:%d", p->native_port);
  assert_int_equal(KVCTL("put", "k", "v"), 3);
  assert_non_null(strstr(err, "authentication required"));
  assert_int_equal(KVCTL("put", "k", "v", "--token-file", bad), 3);
  assert_non_null(strstr(err, "authentication failed"));
  assert_int_equal(KVCTL("put", "k", "v", "--token-file", tok), 0);
  assert_int_equal(KVCTL("--token-file", tok, "get", "k"), 0);
  assert_string_equal(out, "v\n");
  assert_int_equal(KVCTL("get", "k", "--token-file", "/nonexistent/token"), 3);
  assert_non_null(strstr(err, "token file"));
  IT_END(f);
}

/* The token file kvd reads is the one an operator hands kvctl: any file kvd
 * accepts must authenticate kvctl too. kvd takes the whole file less its
 * trailing CR/LF, so blanks at the end of the line are part of the token. */
static void test_kvctl_token_file_shared_with_kvd(void **state) {
  IT_BEGIN(f, 60);
  const char *tokens[] = {"crlf-token\r\n", "trailing-blank \n"};
  for (int i = 0; i < 2; i++) {
    kvdh *p = &f->k[i];
    assert_int_equal(kvdh_prepare(p), 0);
    static char tok[2][256];
    snprintf(tok[i], sizeof tok[i], "%s/token", p->dir);
    FILE *t = fopen(tok[i], "w");
    assert_non_null(t);
    fputs(tokens[i], t);
    fclose(t);
    it_args(p, "--sync", "none", "--auth-token-file", tok[i], NULL);
    it_start(p);
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", p->native_port);
    int rc = KVCTL("status", "--token-file", tok[i]);
    if (rc != 0)
      fail_msg("kvctl --token-file with the file kvd uses (%s): exit %d: %s",
               i ? "a blank before the newline" : "CRLF", rc, err);
  }
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_kvctl_get_put_del),
      IT_TEST(test_kvctl_context_from_get_json),
      IT_TEST(test_kvctl_counters),
      IT_TEST(test_kvctl_scan),
      IT_TEST(test_kvctl_status_verify_keygen),
      IT_TEST(test_kvctl_exit_codes),
      IT_TEST(test_kvctl_token_file),
      IT_TEST(test_kvctl_token_file_shared_with_kvd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
