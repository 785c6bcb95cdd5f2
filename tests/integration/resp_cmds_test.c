/*
 * Integration tests of kvd's Redis-protocol (RESP) front end, byte for byte
 * over a plain socket: every command of the table (PING, ECHO, AUTH without
 * a token, GET, SET, DEL, EXISTS, INCR, INCRBY, DECR, DECRBY, MGET, MSET,
 * SCAN with cursor/MATCH/COUNT, INFO, COMMAND, CONFIG GET, SELECT, DBSIZE,
 * QUIT, KV.SIBLINGS), unknown commands, wrong arity, WRONGTYPE, key and
 * value limits, inline commands and pipelining. Durability is not tested
 * here, so kvd runs with --sync none.
 */
#include "tests/integration/itest.h"

static int start_resp(it_fixture *f) {
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  return it_fd(f->k[0].resp_port);
}

static void test_resp_ping_echo_select_quit(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "PING"), "PONG");
  assert_string_equal(RESP(fd, "ping", "hello world"), "hello world");
  assert_string_equal(RESP(fd, "ECHO", "x\r\ny"), "x\r\ny");
  assert_string_equal(RESP(fd, "echo", ""), "");
  assert_string_equal(RESP(fd, "SELECT", "0"), "OK");
  assert_string_equal(RESP(fd, "SELECT", "1"), "-ERR DB index is out of range");
  assert_string_equal(RESP(fd, "SELECT", "x"), "-ERR DB index is out of range");
  /* AUTH on a kvd without a token says so, as Redis does. */
  const char *auth = RESP(fd, "AUTH", "secret");
  assert_true(
      it_prefix(auth, "-ERR AUTH <password> called without any password"));
  assert_string_equal(RESP(fd, "QUIT"), "OK");
  assert_int_equal(kvdh_wait_closed(fd, 3000), 1);
  close(fd);
  /* QUIT closed that connection only. */
  fd = it_fd(f->k[0].resp_port);
  assert_string_equal(RESP(fd, "PING"), "PONG");
  close(fd);
  IT_END(f);
}

static void test_resp_get_set_del_exists_mget_mset(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "GET", "k"), "(nil)");
  assert_string_equal(RESP(fd, "SET", "k", "v1"), "OK");
  assert_string_equal(RESP(fd, "GET", "k"), "v1");
  assert_string_equal(RESP(fd, "SET", "k", "v2"), "OK");
  assert_string_equal(RESP(fd, "GET", "k"), "v2");
  assert_string_equal(RESP(fd, "KV.SIBLINGS", "k"), "[v2]");
  assert_string_equal(RESP(fd, "SET", "e", ""), "OK");
  assert_string_equal(RESP(fd, "GET", "e"), "");
  assert_string_equal(RESP(fd, "EXISTS", "e"), "1");

  /* Binary-safe values. */
  char out[256];
  const char *argv[] = {"SET", "bin", "a\0b\r\nc"};
  size_t lens[] = {3, 3, 6};
  assert_int_equal(kvdh_resp(fd, 3, argv, lens, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  assert_int_equal(kvdh_resp_send(fd, 2, (const char *[]){"GET", "bin"}, NULL),
                   0);
  char raw[32] = {0};
  ssize_t n = recv(fd, raw, 12, MSG_WAITALL);
  assert_int_equal(n, 12);
  assert_memory_equal(raw, "$6\r\na\0b\r\nc\r\n", 12);

  assert_string_equal(RESP(fd, "EXISTS", "k", "e", "nope", "k"), "3");
  assert_string_equal(RESP(fd, "DEL", "k", "nope"), "1");
  assert_string_equal(RESP(fd, "GET", "k"), "(nil)");
  assert_string_equal(RESP(fd, "EXISTS", "k"), "0");
  assert_string_equal(RESP(fd, "DEL", "k"), "0");
  assert_string_equal(RESP(fd, "KV.SIBLINGS", "k"), "[]");
  assert_string_equal(RESP(fd, "SET", "k", "again"), "OK");
  assert_string_equal(RESP(fd, "GET", "k"), "again");

  assert_string_equal(RESP(fd, "MSET", "m1", "a", "m2", "b", "m3", "c"), "OK");
  assert_string_equal(RESP(fd, "INCR", "cnt"), "1");
  assert_string_equal(RESP(fd, "MGET", "m1", "nope", "m3", "cnt", "m2"),
                      "[a,(nil),c,1,b]");
  assert_string_equal(RESP(fd, "DEL", "m1", "m2", "m3", "m1"), "3");
  assert_string_equal(RESP(fd, "MGET", "m1", "m2"), "[(nil),(nil)]");
  /* An odd number of MSET arguments is an error and writes nothing. */
  assert_true(it_prefix(RESP(fd, "MSET", "x1", "a", "x2"), "-ERR"));
  assert_string_equal(RESP(fd, "EXISTS", "x1", "x2"), "0");
  /* SET options (expiry, NX/XX) are refused rather than ignored. */
  assert_true(it_prefix(RESP(fd, "SET", "o", "v", "EX", "10"), "-ERR"));
  assert_true(it_prefix(RESP(fd, "SET", "o", "v", "NX"), "-ERR"));
  assert_string_equal(RESP(fd, "EXISTS", "o"), "0");
  close(fd);
  IT_END(f);
}

static void test_resp_counters(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "INCR", "c"), "1");
  assert_string_equal(RESP(fd, "INCR", "c"), "2");
  assert_string_equal(RESP(fd, "INCRBY", "c", "40"), "42");
  assert_string_equal(RESP(fd, "DECR", "c"), "41");
  assert_string_equal(RESP(fd, "DECRBY", "c", "50"), "-9");
  assert_string_equal(RESP(fd, "INCRBY", "c", "-1"), "-10");
  assert_string_equal(RESP(fd, "DECRBY", "c", "-10"), "0");
  assert_string_equal(RESP(fd, "GET", "c"), "0");
  assert_string_equal(RESP(fd, "DECR", "d"), "-1");
  assert_string_equal(RESP(fd, "GET", "d"), "-1");
  assert_string_equal(RESP(fd, "INCRBY", "big", "9223372036854775807"),
                      "9223372036854775807");
  assert_string_equal(RESP(fd, "INCR", "big"),
                      "-ERR increment or decrement would overflow");
  assert_string_equal(RESP(fd, "GET", "big"), "9223372036854775807");
  /* DECRBY of the most negative int64 cannot be negated. */
  assert_true(
      it_prefix(RESP(fd, "DECRBY", "c", "-9223372036854775808"), "-ERR"));
  assert_string_equal(RESP(fd, "GET", "c"), "0");
  /* Not integers. */
  assert_true(it_prefix(RESP(fd, "INCRBY", "c", "abc"), "-ERR"));
  assert_true(it_prefix(RESP(fd, "INCRBY", "c", "1.5"), "-ERR"));
  assert_true(it_prefix(RESP(fd, "INCRBY", "c", " 1"), "-ERR"));
  assert_true(
      it_prefix(RESP(fd, "INCRBY", "c", "99999999999999999999"), "-ERR"));
  assert_true(it_prefix(RESP(fd, "DECRBY", "c", ""), "-ERR"));
  assert_string_equal(RESP(fd, "GET", "c"), "0");
  /* A deleted counter starts again from zero. */
  assert_string_equal(RESP(fd, "DEL", "c"), "1");
  assert_string_equal(RESP(fd, "GET", "c"), "(nil)");
  close(fd);
  IT_END(f);
}

static void test_resp_wrongtype(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  const char *wt =
      "-WRONGTYPE Operation against a key holding the wrong kind of value";
  assert_string_equal(RESP(fd, "SET", "s", "text"), "OK");
  assert_string_equal(RESP(fd, "INCR", "s"), wt);
  assert_string_equal(RESP(fd, "INCRBY", "s", "2"), wt);
  assert_string_equal(RESP(fd, "DECR", "s"), wt);
  assert_string_equal(RESP(fd, "DECRBY", "s", "2"), wt);
  assert_string_equal(RESP(fd, "GET", "s"), "text");
  assert_string_equal(RESP(fd, "INCR", "n"), "1");
  assert_string_equal(RESP(fd, "SET", "n", "x"), wt);
  assert_string_equal(RESP(fd, "KV.SIBLINGS", "n"), wt);
  assert_string_equal(RESP(fd, "GET", "n"), "1");
  close(fd);
  IT_END(f);
}

/* MSET is all or nothing, as in Redis: when it answers an error, none of
 * its keys was written (here one key is a counter, so SET cannot apply). */
static void test_resp_mset_error_writes_nothing(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  const char *wt =
      "-WRONGTYPE Operation against a key holding the wrong kind of value";
  assert_string_equal(RESP(fd, "INCR", "n"), "1");
  assert_string_equal(RESP(fd, "SET", "old", "before"), "OK");
  assert_string_equal(RESP(fd, "MSET", "fresh", "1", "n", "x", "old", "after"),
                      wt);
  assert_string_equal(RESP(fd, "MGET", "fresh", "n", "old"),
                      "[(nil),1,before]");
  close(fd);
  IT_END(f);
}

/* Keys of 508 bytes and empty keys are refused with a clear error by every
 * command that takes a key, and kvd keeps running. */
static void test_resp_key_too_long_and_empty_key(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  static char key[508];
  memset(key, 'K', sizeof key);
  const char *tl = "-ERR key is longer than 507 bytes or empty";
  struct {
    const char *cmd;
    const char *arg2;
    const char *want; /* NULL: tl */
  } cases[] = {
      {"SET", "v", NULL},    {"GET", NULL, NULL},
      {"INCR", NULL, NULL},  {"INCRBY", "5", NULL},
      {"DEL", NULL, NULL},   {"KV.SIBLINGS", NULL, NULL},
      {"EXISTS", NULL, "0"}, {"MGET", NULL, "[(nil)]"},
  };
  for (size_t klen = 0; klen <= sizeof key; klen += sizeof key) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      const char *argv[] = {cases[i].cmd, key, cases[i].arg2};
      size_t lens[] = {strlen(cases[i].cmd), klen,
                       cases[i].arg2 ? strlen(cases[i].arg2) : 0};
      char out[256];
      int argc = cases[i].arg2 ? 3 : 2;
      if (kvdh_resp(fd, argc, argv, lens, out, sizeof out) != 0) {
        fprintf(stderr, "%s with a %zu-byte key: no reply\n", cases[i].cmd,
                klen);
        it_alive(&f->k[0]);
        fail_msg("%s with a %zu-byte key: no reply", cases[i].cmd, klen);
      }
      const char *want = cases[i].want ? cases[i].want : tl;
      if (strcmp(out, want) != 0)
        fail_msg("%s with a %zu-byte key: got '%s', want '%s'", cases[i].cmd,
                 klen, out, want);
    }
  }
  assert_string_equal(RESP(fd, "DBSIZE"), "0");
  assert_string_equal(RESP(fd, "PING"), "PONG");
  close(fd);
  it_alive(&f->k[0]);
  IT_END(f);
}

/* Parses a rendered SCAN reply "[cursor,[k1,k2,...]]": copies the cursor
 * and appends the keys to keys[*n]. */
static void parse_scan(const char *reply, char *cursor, size_t cursorcap,
                       char keys[][16], size_t *n, size_t cap) {
  if (reply[0] != '[') fail_msg("not a SCAN reply: %s", reply);
  const char *comma = strchr(reply, ',');
  assert_non_null(comma);
  size_t cl = (size_t)(comma - reply - 1);
  assert_true(cl < cursorcap);
  memcpy(cursor, reply + 1, cl);
  cursor[cl] = 0;
  const char *p = comma + 1;
  assert_int_equal(*p, '[');
  p++;
  while (*p && *p != ']') {
    const char *e = p + strcspn(p, ",]");
    size_t kl = (size_t)(e - p);
    assert_true(kl < 16 && *n < cap);
    memcpy(keys[*n], p, kl);
    keys[*n][kl] = 0;
    (*n)++;
    p = *e == ',' ? e + 1 : e;
  }
}

static int cmp_key(const void *a, const void *b) { return strcmp(a, b); }

/* A full SCAN with the given options; returns the keys found (sorted). */
static size_t scan_all(int fd, const char *match, const char *count,
                       char keys[][16], size_t cap) {
  char cursor[1100] = "0";
  size_t n = 0;
  int pages = 0;
  do {
    const char *argv[6] = {"SCAN", cursor};
    int argc = 2;
    if (match) argv[argc++] = "MATCH", argv[argc++] = match;
    if (count) argv[argc++] = "COUNT", argv[argc++] = count;
    char out[8192];
    assert_int_equal(kvdh_resp(fd, argc, argv, NULL, out, sizeof out), 0);
    size_t before = n;
    parse_scan(out, cursor, sizeof cursor, keys, &n, cap);
    if (count) assert_true(n - before <= (size_t)atoi(count));
    assert_true(++pages < 1000);
  } while (strcmp(cursor, "0") != 0);
  qsort(keys, n, sizeof keys[0], cmp_key);
  for (size_t i = 1; i < n; i++)
    if (strcmp(keys[i - 1], keys[i]) == 0)
      fail_msg("key %s listed twice", keys[i]);
  return n;
}

static void test_resp_scan_cursor_match_count(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  char k[16];
  for (int i = 0; i < 25; i++) {
    snprintf(k, sizeof k, "s:%02d", i);
    assert_string_equal(RESP(fd, "SET", k, "v"), "OK");
  }
  for (int i = 0; i < 5; i++) {
    snprintf(k, sizeof k, "t:%d", i);
    assert_string_equal(RESP(fd, "INCR", k), "1");
  }
  assert_string_equal(RESP(fd, "DEL", "s:00"), "1");

  static char keys[100][16];
  size_t n = scan_all(fd, NULL, "4", keys, 100);
  assert_int_equal(n, 29);
  assert_string_equal(keys[0], "s:01");
  assert_string_equal(keys[28], "t:4");
  n = scan_all(fd, NULL, NULL, keys, 100); /* default COUNT */
  assert_int_equal(n, 29);
  n = scan_all(fd, "s:*", "3", keys, 100); /* a prefix */
  assert_int_equal(n, 24);
  assert_string_equal(keys[0], "s:01");
  n = scan_all(fd, "t:*", "1000", keys, 100);
  assert_int_equal(n, 5);
  n = scan_all(fd, "*1", "7", keys, 100); /* a pattern: filters pages */
  assert_int_equal(n, 4);
  assert_string_equal(keys[0], "s:01");
  assert_string_equal(keys[1], "s:11");
  assert_string_equal(keys[2], "s:21");
  assert_string_equal(keys[3], "t:1");
  n = scan_all(fd, "s:1?", "100", keys, 100);
  assert_int_equal(n, 10);
  n = scan_all(fd, "nomatch*", "10", keys, 100);
  assert_int_equal(n, 0);
  n = scan_all(fd, "*", "50", keys, 100);
  assert_int_equal(n, 29);

  assert_string_equal(RESP(fd, "SCAN", "0", "COUNT", "0"), "-ERR syntax error");
  assert_string_equal(RESP(fd, "SCAN", "0", "COUNT", "x"), "-ERR syntax error");
  assert_string_equal(RESP(fd, "SCAN", "0", "MATCH"), "-ERR syntax error");
  assert_string_equal(RESP(fd, "SCAN", "0", "TYPE", "string"),
                      "-ERR syntax error");
  assert_string_equal(RESP(fd, "SCAN", "xyz"), "-ERR invalid cursor");
  assert_string_equal(RESP(fd, "SCAN", "0", "count", "100", "match", "t:3"),
                      "[0,[t:3]]");
  close(fd);
  IT_END(f);
}

static void test_resp_info_command_config_dbsize(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "DBSIZE"), "0");
  assert_string_equal(RESP(fd, "MSET", "a", "1", "b", "2"), "OK");
  assert_string_equal(RESP(fd, "INCR", "c"), "1");
  assert_string_equal(RESP(fd, "DBSIZE"), "3");
  const char *info = RESP(fd, "INFO");
  assert_non_null(strstr(info, "# Server\r\n"));
  assert_non_null(strstr(info, "redis_version:"));
  assert_non_null(strstr(info, "connected_clients:1\r\n"));
  assert_non_null(strstr(info, "epikv_sync:none\r\n"));
  assert_non_null(strstr(info, "db0:keys=3,"));
  assert_non_null(strstr(RESP(fd, "info", "server"), "redis_version:"));
  assert_string_equal(RESP(fd, "COMMAND"), "[]");
  assert_string_equal(RESP(fd, "COMMAND", "DOCS"), "[]");
  assert_string_equal(RESP(fd, "COMMAND", "COUNT"), "0");
  assert_string_equal(RESP(fd, "CONFIG", "GET", "appendonly"),
                      "[appendonly,no]");
  assert_string_equal(RESP(fd, "CONFIG", "GET", "save"), "[save,]");
  assert_string_equal(RESP(fd, "CONFIG", "GET", "nosuch"), "[]");
  const char *all = RESP(fd, "config", "get", "*");
  assert_non_null(strstr(all, "databases,1"));
  assert_non_null(strstr(all, "appendfsync,no"));
  assert_true(it_prefix(RESP(fd, "CONFIG", "SET", "save", ""), "-ERR"));
  assert_true(it_prefix(RESP(fd, "CONFIG", "RESETSTAT"), "-ERR"));
  close(fd);
  IT_END(f);
}

/* DBSIZE counts the keys a client can see: SCAN and EXISTS agree that a
 * deleted key is gone, so DBSIZE must not count it either. */
static void test_resp_dbsize_counts_live_keys(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "MSET", "a", "1", "b", "2"), "OK");
  assert_string_equal(RESP(fd, "DBSIZE"), "2");
  assert_string_equal(RESP(fd, "DEL", "a"), "1");
  assert_string_equal(RESP(fd, "EXISTS", "a"), "0");
  assert_string_equal(RESP(fd, "SCAN", "0", "COUNT", "100"), "[0,[b]]");
  assert_string_equal(RESP(fd, "DBSIZE"), "1");
  close(fd);
  IT_END(f);
}

static void test_resp_unknown_command_and_wrong_arity(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  assert_string_equal(RESP(fd, "FOO"),
                      "-ERR unknown command 'FOO', with args beginning with: ");
  assert_string_equal(RESP(fd, "foo", "bar", "baz"),
                      "-ERR unknown command 'foo', with args beginning with: "
                      "'bar' 'baz' ");
  assert_string_equal(RESP(fd, "HSET", "h", "f", "v"),
                      "-ERR unknown command 'HSET', with args beginning with: "
                      "'h' 'f' 'v' ");
  assert_string_equal(RESP(fd, "PING"), "PONG");
  struct {
    const char *argv[4];
    int argc;
    const char *name;
  } bad[] = {
      {{"GET"}, 1, "get"},
      {{"GET", "a", "b"}, 3, "get"},
      {{"SET", "a"}, 2, "set"},
      {{"DEL"}, 1, "del"},
      {{"EXISTS"}, 1, "exists"},
      {{"INCR"}, 1, "incr"},
      {{"INCR", "a", "b"}, 3, "incr"},
      {{"INCRBY", "a"}, 2, "incrby"},
      {{"DECR"}, 1, "decr"},
      {{"DECRBY", "a", "1", "2"}, 4, "decrby"},
      {{"MGET"}, 1, "mget"},
      {{"MSET", "a"}, 2, "mset"},
      {{"ECHO"}, 1, "echo"},
      {{"ECHO", "a", "b"}, 3, "echo"},
      {{"SELECT"}, 1, "select"},
      {{"SCAN"}, 1, "scan"},
      {{"CONFIG"}, 1, "config"},
      {{"DBSIZE", "x"}, 2, "dbsize"},
      {{"KV.SIBLINGS"}, 1, "kv.siblings"},
      {{"AUTH"}, 1, "auth"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char out[256], want[128];
    assert_int_equal(
        kvdh_resp(fd, bad[i].argc, bad[i].argv, NULL, out, sizeof out), 0);
    snprintf(want, sizeof want,
             "-ERR wrong number of arguments for '%s' command", bad[i].name);
    if (strcmp(out, want) != 0) fail_msg("%s: got '%s'", bad[i].argv[0], out);
  }
  /* Nothing was written by the refused commands, and the connection is
   * still in step. */
  assert_string_equal(RESP(fd, "DBSIZE"), "0");
  assert_string_equal(RESP(fd, "ECHO", "still here"), "still here");
  close(fd);
  IT_END(f);
}

/* Inline commands (as typed into telnet) and a pipeline answered in order. */
static void test_resp_inline_and_pipeline(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  const char *in = "SET greeting \"hello world\"\r\nGET greeting\r\nPING\r\n"
                   "\r\nEXISTS greeting nope\n";
  assert_int_equal(kvdh_write_all(fd, in, strlen(in)), 0);
  char out[256];
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "hello world");
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "PONG");
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "1");

  /* 2,000 commands in one write: every reply, in order. */
  enum { N = 1000 };
  static char buf[N * 80];
  size_t len = 0;
  for (int i = 0; i < N; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "p%d", i);
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                            "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n",
                            kl, k, kl, k);
  }
  assert_int_equal(kvdh_write_all(fd, buf, len), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    assert_string_equal(out, "OK");
    assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
    assert_int_equal(atoi(out), i + 1);
  }
  assert_string_equal(RESP(fd, "GET", "p999"), "p999");
  assert_string_equal(RESP(fd, "DBSIZE"), "1002");
  close(fd);
  IT_END(f);
}

/* QUIT answers +OK and closes: commands pipelined after it are not run,
 * as in Redis. */
static void test_resp_quit_discards_pipelined_commands(void **state) {
  IT_BEGIN(f, 30);
  int fd = start_resp(f);
  const char *in = "QUIT\r\nSET afterquit 1\r\n";
  assert_int_equal(kvdh_write_all(fd, in, strlen(in)), 0);
  char out[256];
  assert_int_equal(kvdh_resp_read(fd, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  /* Nothing more: the connection closes without another reply. */
  kvdh_set_recv_timeout(fd, 2000);
  char extra[64];
  ssize_t n = recv(fd, extra, sizeof extra, 0);
  if (n > 0) fail_msg("a reply after QUIT: %.*s", (int)n, extra);
  close(fd);
  fd = it_fd(f->k[0].resp_port);
  assert_string_equal(RESP(fd, "GET", "afterquit"), "(nil)");
  close(fd);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_resp_ping_echo_select_quit),
      IT_TEST(test_resp_get_set_del_exists_mget_mset),
      IT_TEST(test_resp_counters),
      IT_TEST(test_resp_wrongtype),
      IT_TEST(test_resp_mset_error_writes_nothing),
      IT_TEST(test_resp_key_too_long_and_empty_key),
      IT_TEST(test_resp_scan_cursor_match_count),
      IT_TEST(test_resp_info_command_config_dbsize),
      IT_TEST(test_resp_dbsize_counts_live_keys),
      IT_TEST(test_resp_unknown_command_and_wrong_arity),
      IT_TEST(test_resp_inline_and_pipeline),
      IT_TEST(test_resp_quit_discards_pipelined_commands),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
