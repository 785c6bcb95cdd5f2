/*
 * Integration tests with the real Redis tools against kvd's RESP port:
 * redis-cli one-shot commands, a session fed on standard input, --scan with
 * and without a pattern, and a redis-benchmark run (ping, set, get, incr,
 * mset with 50 clients) that must finish without a single error. A test
 * whose tool is not installed is skipped with a message saying so (the
 * Makefile's deps target installs redis-tools). Durability is not tested
 * here, so kvd runs with --sync none.
 */

#include "tests/integration/itest.h"

static const char *need(const char *tool) {
  const char *path = kvdh_which(tool);
  if (!path) {
    fprintf(stderr,
            "SKIPPED: %s is not installed (apt-get install redis-tools)\n",
            tool);
    return NULL;
  }
  static char copy[2][1024];
  static int which;
  which ^= 1;
  snprintf(copy[which], sizeof copy[which], "%s", path);
  return copy[which];
}

static char port_s[16];
static const char *cli;

/* Runs redis-cli -p PORT args... and returns its stdout (static). */
static const char *redis_cli(int *rc, const char *stdin_data, ...) {
  static char out[65536];
  char err[4096];
  const char *argv[32] = {cli, "-p", port_s};
  int argc = 3;
  va_list ap;
  va_start(ap, stdin_data);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  *rc = kvdh_exec(argv, stdin_data, out, sizeof out, err, sizeof err, 20000);
  if (err[0]) fprintf(stderr, "redis-cli stderr: %s\n", err);
  return out;
}

#define CLI(rc, ...) redis_cli((rc), NULL, __VA_ARGS__, (const char *)NULL)

static void start(it_fixture *f) {
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  snprintf(port_s, sizeof port_s, "%d", f->k[0].resp_port);
}

static void test_rediscli_one_shot_commands(void **state) {
  IT_BEGIN(f, 60);
  if (!(cli = need("redis-cli"))) {
    IT_END(f);
    skip();
  }
  start(f);
  int rc;
  assert_string_equal(CLI(&rc, "set", "k", "v"), "OK\n");
  assert_int_equal(rc, 0);
  assert_string_equal(CLI(&rc, "get", "k"), "v\n");
  assert_int_equal(rc, 0);
  assert_string_equal(CLI(&rc, "get", "missing"), "\n");
  assert_string_equal(CLI(&rc, "set", "spaced", "hello world"), "OK\n");
  assert_string_equal(CLI(&rc, "get", "spaced"), "hello world\n");
  assert_string_equal(CLI(&rc, "incr", "c"), "1\n");
  assert_string_equal(CLI(&rc, "incrby", "c", "41"), "42\n");
  assert_string_equal(CLI(&rc, "decr", "c"), "41\n");
  assert_string_equal(CLI(&rc, "exists", "k", "c", "missing"), "2\n");
  assert_string_equal(CLI(&rc, "kv.siblings", "k"), "v\n");
  assert_string_equal(CLI(&rc, "ping"), "PONG\n");
  assert_string_equal(CLI(&rc, "echo", "hi"), "hi\n");
  assert_string_equal(CLI(&rc, "del", "k", "missing"), "1\n");
  assert_string_equal(CLI(&rc, "get", "k"), "\n");
  assert_non_null(strstr(CLI(&rc, "info"), "redis_version:"));
  assert_non_null(
      strstr(CLI(&rc, "config", "get", "appendonly"), "appendonly\nno"));
  const char *unk = CLI(&rc, "nosuchcommand", "x");
  assert_non_null(strstr(unk, "ERR unknown command 'nosuchcommand'"));
  assert_non_null(strstr(CLI(&rc, "incr", "spaced"), "WRONGTYPE"));
  it_alive(&f->k[0]);
  IT_END(f);
}

static void test_rediscli_session_on_stdin(void **state) {
  IT_BEGIN(f, 60);
  if (!(cli = need("redis-cli"))) {
    IT_END(f);
    skip();
  }
  start(f);
  int rc;
  const char *session = "set a hello\n"
                        "get a\n"
                        "nosuch arg\n"
                        "incr c\n"
                        "incr c\n"
                        "kv.siblings a\n"
                        "mset x 1 y 2\n"
                        "mget x y nope\n"
                        "del x\n"
                        "exists x y\n"
                        "select 0\n"
                        "ping\n";
  const char *out = redis_cli(&rc, session, (const char *)NULL);
  assert_int_equal(rc, 0);
  const char *want[] = {"OK", "hello", "ERR unknown command 'nosuch'",
                        "1",  "2",     "hello",
                        "OK", "1",     "2",
                        "",   "1",     "1",
                        "OK", "PONG"};
  const char *p = out;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    while (*p == '\n' && want[i][0] != '\0')
      p++; /* blank lines after errors */
    size_t len = strcspn(p, "\n");
    if (strncmp(p, want[i], strlen(want[i])) != 0 ||
        (want[i][0] == '\0' && len != 0))
      fail_msg("reply %zu: want '%s' in:\n%s", i, want[i], out);
    p += len + (p[len] == '\n');
  }
  IT_END(f);
}

static int cmp_line(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits text into sorted lines (in place); returns the count. */
static size_t sorted_lines(char *text, char **lines, size_t cap) {
  size_t n = 0;
  for (char *s = strtok(text, "\n"); s && n < cap; s = strtok(NULL, "\n"))
    lines[n++] = s;
  qsort(lines, n, sizeof *lines, cmp_line);
  return n;
}

static void test_rediscli_scan_iterates_every_key(void **state) {
  IT_BEGIN(f, 60);
  if (!(cli = need("redis-cli"))) {
    IT_END(f);
    skip();
  }
  start(f);
  int fd = it_fd(f->k[0].resp_port);
  char k[32];
  for (int i = 0; i < 120; i++) {
    snprintf(k, sizeof k, "user:%03d", i);
    assert_string_equal(RESP(fd, "SET", k, "v"), "OK");
  }
  for (int i = 0; i < 15; i++) {
    snprintf(k, sizeof k, "item:%02d", i);
    assert_string_equal(RESP(fd, "INCR", k), "1");
  }
  assert_string_equal(RESP(fd, "DEL", "user:000"), "1");
  close(fd);
  int rc;
  static char buf[65536];
  static char *lines[1000];
  /* redis-cli --scan passes the cursor back as an unsigned decimal (as do
   * redis-py and go-redis): kvd's cursors must survive that round trip. */
  snprintf(buf, sizeof buf, "%s", CLI(&rc, "--scan"));
  assert_int_equal(rc, 0);
  size_t n = sorted_lines(buf, lines, 1000);
  if (n != 119 + 15)
    fail_msg("redis-cli --scan listed %zu of %d keys (see its stderr above)", n,
             119 + 15);
  assert_int_equal(n, 119 + 15);
  for (size_t i = 1; i < n; i++)
    assert_true(strcmp(lines[i - 1], lines[i]) < 0);
  assert_string_equal(lines[0], "item:00");
  assert_string_equal(lines[15], "user:001");
  snprintf(buf, sizeof buf, "%s",
           CLI(&rc, "--scan", "--pattern", "item:*"));
  n = sorted_lines(buf, lines, 1000);
  assert_int_equal(n, 15);
  snprintf(buf, sizeof buf, "%s", CLI(&rc, "--scan", "--pattern", "user:*5"));
  n = sorted_lines(buf, lines, 1000);
  assert_int_equal(n, 12);
  IT_END(f);
}

static void test_rediscli_benchmark_runs_clean(void **state) {
  IT_BEGIN(f, 120);
  const char *bench = need("redis-benchmark");
  if (!bench) {
    IT_END(f);
    skip();
  }
  start(f);
  static char out[1 << 20], err[1 << 16];
  const char *argv[] = {bench,
                        "-p",
                        port_s,
                        "-c",
                        "50",
                        "-n",
                        "2000",
                        "-r",
                        "1000",
                        "-t",
                        "ping,set,get,incr,mset",
                        "-q",
                        NULL};
  int rc = kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 100000);
  fprintf(stderr, "%s", out);
  if (err[0]) fprintf(stderr, "stderr: %s\n", err);
  assert_int_equal(rc, 0);
  /* Every test printed its line; none printed an error. */
  const char *tests[] = {"PING_INLINE: ", "PING_MBULK: ", "SET: ",
                         "GET: ",         "INCR: ",       "MSET (10 keys): "};
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
    if (!strstr(out, tests[i])) fail_msg("no result line for %s", tests[i]);
  /* Progress lines end with \r: check each \r- or \n-separated piece. */
  for (char *s = out; *s;) {
    size_t len = strcspn(s, "\r\n");
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), s);
    if (strstr(line, "ERR") || strstr(line, "error") || strstr(line, "Error"))
      fail_msg("redis-benchmark reported an error: %s", line);
    s += len;
    while (*s == '\r' || *s == '\n')
      s++;
  }
  assert_null(strstr(err, "ERR"));
  assert_null(strstr(err, "rror"));
  /* kvd is fine afterwards and holds what the benchmark wrote. */
  it_alive(&f->k[0]);
  int fd = it_fd(f->k[0].resp_port);
  assert_true(atoi(RESP(fd, "DBSIZE")) > 0);
  assert_non_null(
      strstr(RESP(fd, "SCAN", "0", "MATCH", "counter:*", "COUNT", "10000"),
             "counter:"));
  close(fd);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_rediscli_one_shot_commands),
      IT_TEST(test_rediscli_session_on_stdin),
      IT_TEST(test_rediscli_scan_iterates_every_key),
      IT_TEST(test_rediscli_benchmark_runs_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
