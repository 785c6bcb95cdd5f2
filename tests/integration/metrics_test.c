/*
 * The metrics endpoint (--metrics-listen): real kvd processes scraped over
 * HTTP (a plain socket: GET, read to the end) while a workload runs. The
 * counters move exactly as the workload says: N puts add N to the put
 * counter and to its latency histogram's count, and the store's writes and
 * batch sizes add up; error replies are counted by code; on a two-replica
 * cluster where one replica holds K keys the other lacks, anti-entropy
 * repairs exactly K (summed over both replicas and both directions) and the
 * membership gauge shows 2 alive. /health answers 200 with the replica's
 * fields, and 503 while kvd is stopping (held open by a client that does
 * not read its replies); unknown paths are 404 and other methods 405; a
 * non-loopback address without an auth token is refused, and with a token
 * the endpoints want it. Every scrape must parse as Prometheus text, and the
 * Grafana dashboard (docs/) may query only metrics kvd exports.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>

#include "tests/integration/itest.h"

#define KEY "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n"
#define TOKEN "metrics-s3cret"

/* ---- HTTP ---- */

typedef struct http_reply {
  int status;
  char *head; /* status line and headers, NUL-terminated */
  char *body; /* NUL-terminated; len bytes */
  size_t len;
} http_reply;

static void http_free(http_reply *r) {
  free(r->head);
  free(r->body);
  memset(r, 0, sizeof *r);
}

/* One request on a fresh connection (Connection: close), read to the end.
 * 0, or -1 if the connection failed or the reply is not HTTP. */
static int http(int port, const char *method, const char *path,
                const char *auth, http_reply *out) {
  memset(out, 0, sizeof *out);
  int fd = kvdh_connect(port);
  if (fd < 0) return -1;
  char req[512];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   "%s%s%s\r\n",
                   method, path, auth ? "Authorization: " : "",
                   auth ? auth : "", auth ? "\r\n" : "");
  if (kvdh_write_all(fd, req, (size_t)n)) {
    close(fd);
    return -1;
  }
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = 0;
  char *sep = strstr(buf, "\r\n\r\n");
  if (!sep || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
    free(buf);
    return -1;
  }
  size_t hlen = (size_t)(sep - buf);
  out->head = strndup(buf, hlen);
  out->len = len - hlen - 4;
  out->body = malloc(out->len + 1);
  memcpy(out->body, sep + 4, out->len);
  out->body[out->len] = 0;
  free(buf);
  return 0;
}

/* ---- Prometheus text ---- */

static bool name_char(int c, bool first) {
  return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Fails the test, naming the line, unless text is Prometheus text format
 * 0.0.4 as kvd writes it: "# HELP name text" and "# TYPE name type" lines,
 * and samples "name{label="value",...} value" (labels optional) of a family
 * whose TYPE came first (name_bucket, _sum and _count for a histogram),
 * each series once. */
static void check_prometheus(const char *text) {
  enum { MAXF = 256, MAXS = 4096 };
  static char fam[MAXF][128], famtype[MAXF][16], series[MAXS][256];
  size_t nfam = 0, nseries = 0, lineno = 0;
  if (!*text || text[strlen(text) - 1] != '\n')
    fail_msg("metrics text is empty or does not end with a newline");
  for (const char *l = text; *l; lineno++) {
    const char *end = strchr(l, '\n');
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)(end - l), l);
    l = end + 1;
    if (line[0] == '#') {
      char kw[16], name[128], rest[512] = "";
      if (sscanf(line, "# %15s %127s %511[^\n]", kw, name, rest) < 3)
        fail_msg("line %zu: a comment that is not HELP or TYPE: %s", lineno,
                 line);
      if (!strcmp(kw, "TYPE")) {
        if (strcmp(rest, "counter") && strcmp(rest, "gauge") &&
            strcmp(rest, "histogram") && strcmp(rest, "summary") &&
            strcmp(rest, "untyped"))
          fail_msg("line %zu: unknown type: %s", lineno, line);
        for (size_t i = 0; i < nfam; i++)
          if (!strcmp(fam[i], name))
            fail_msg("line %zu: second TYPE for %s", lineno, name);
        assert_true(nfam < MAXF);
        snprintf(fam[nfam], sizeof fam[0], "%s", name);
        snprintf(famtype[nfam++], sizeof famtype[0], "%.15s", rest);
      } else if (strcmp(kw, "HELP") != 0) {
        fail_msg("line %zu: a comment that is not HELP or TYPE: %s", lineno,
                 line);
      }
      continue;
    }
    const char *p = line;
    if (!name_char((unsigned char)*p, true))
      fail_msg("line %zu: no metric name: %s", lineno, line);
    while (name_char((unsigned char)*p, false))
      p++;
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(p - line), line);
    if (*p == '{') {
      p++;
      while (*p != '}') {
        if (!name_char((unsigned char)*p, true))
          fail_msg("line %zu: bad label name: %s", lineno, line);
        while (name_char((unsigned char)*p, false))
          p++;
        if (p[0] != '=' || p[1] != '"')
          fail_msg("line %zu: label without =\"value\": %s", lineno, line);
        p += 2;
        while (*p && *p != '"') {
          if (*p == '\\') {
            if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
              fail_msg("line %zu: bad escape in a label: %s", lineno, line);
            p++;
          }
          p++;
        }
        if (*p != '"')
          fail_msg("line %zu: unterminated label: %s", lineno, line);
        p++;
        if (*p == ',')
          p++;
        else if (*p != '}')
          fail_msg("line %zu: labels not separated by commas: %s", lineno,
                   line);
      }
      p++;
    }
    size_t slen = (size_t)(p - line);
    if (*p != ' ')
      fail_msg("line %zu: no space before the value: %s", lineno, line);
    char *vend;
    errno = 0;
    strtod(p + 1, &vend);
    if (vend == p + 1 || *vend != 0 || errno)
      fail_msg("line %zu: the value is not a number: %s", lineno, line);
    /* Its family: the name itself, or a histogram's parts. */
    bool known = false;
    for (size_t i = 0; i < nfam && !known; i++) {
      size_t fl = strlen(fam[i]);
      if (!strcmp(name, fam[i]))
        known = strcmp(famtype[i], "histogram") != 0;
      else if (!strcmp(famtype[i], "histogram") && !strncmp(name, fam[i], fl) &&
               (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
                !strcmp(name + fl, "_count")))
        known = true;
    }
    if (!known)
      fail_msg("line %zu: a sample of no TYPE'd family: %s", lineno, line);
    char s[256];
    snprintf(s, sizeof s, "%.*s", (int)slen, line);
    for (size_t i = 0; i < nseries; i++)
      if (!strcmp(series[i], s))
        fail_msg("line %zu: series %s appears twice", lineno, s);
    assert_true(nseries < MAXS);
    snprintf(series[nseries++], sizeof series[0], "%s", s);
  }
  if (nfam < 30)
    fail_msg("only %zu metric families: the endpoint lost some", nfam);
}

/* The value of the sample whose series is exactly series ("name" or
 * "name{labels}" as kvd writes it), or -1 if there is none. */
static double metric(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *l = text; l && *l;) {
    if (!strncmp(l, series, n) && l[n] == ' ') return strtod(l + n + 1, NULL);
    l = strchr(l, '\n');
    if (l) l++;
  }
  return -1;
}

/* Like metric, but the test fails if the series is missing. */
static double must(const char *text, const char *series) {
  double v = metric(text, series);
  if (v < 0) fail_msg("the scrape has no %s", series);
  return v;
}

/* Checks histogram name{labels}: buckets cumulative, +Inf equal to _count;
 * returns _count. */
static double check_histogram(const char *text, const char *name,
                              const char *labels) {
  char key[600], prefix[512];
  snprintf(prefix, sizeof prefix, "%s_bucket{%s%sle=\"", name, labels,
           *labels ? "," : "");
  double last = 0;
  size_t buckets = 0, pl = strlen(prefix);
  for (const char *l = text; l && *l;) {
    if (!strncmp(l, prefix, pl)) {
      const char *v = strchr(l, ' ');
      double x = strtod(v + 1, NULL);
      if (x < last)
        fail_msg("%s: bucket %.40s below the one before", name, l + pl);
      last = x;
      buckets++;
    }
    l = strchr(l, '\n');
    if (l) l++;
  }
  if (buckets < 5) fail_msg("%s{%s}: only %zu buckets", name, labels, buckets);
  snprintf(key, sizeof key, "%s+Inf\"}", prefix);
  double inf = must(text, key);
  snprintf(key, sizeof key, *labels ? "%s_count{%s}" : "%s_count", name,
           labels);
  double count = must(text, key);
  if (inf != count || last != count)
    fail_msg("%s{%s}: +Inf bucket %.0f, count %.0f", name, labels, inf, count);
  return count;
}

/* GET /metrics from p: 200 and valid text, or the test fails. Caller frees. */
static char *scrape_auth(kvdh *p, const char *auth) {
  http_reply r;
  if (http(p->metrics_port, "GET", "/metrics", auth, &r))
    fail_msg("no HTTP answer from the metrics port %d", p->metrics_port);
  if (r.status != 200) fail_msg("GET /metrics: status %d", r.status);
  if (!strstr(r.head, "text/plain; version=0.0.4"))
    fail_msg("GET /metrics: wrong content type: %s", r.head);
  check_prometheus(r.body);
  char *body = r.body;
  r.body = NULL;
  http_free(&r);
  return body;
}

static char *scrape(kvdh *p) { return scrape_auth(p, NULL); }

/* ---- replicas ---- */

static char keyfile[IT_NKVD][256], joinarg[IT_NKVD][64];

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  assert_int_equal(fclose(fp), 0);
}

static void start_single(it_fixture *f) {
  kvdh *p = &f->k[0];
  it_args(p, "--sync", "none", "--name", "m1", "--metrics-listen",
          "127.0.0.1:0", NULL);
  it_start(p);
  if (p->metrics_port <= 0) fail_msg("no metrics= line in the ports file");
}

#define REQS(proto, op)                                                        \
  "epikv_requests_total{proto=\"" proto "\",op=\"" op "\"}"

static void test_metrics_counts_requests(void **state) {
  IT_BEGIN(f, 60);
  start_single(f);
  kvdh *p = &f->k[0];
  char *s0 = scrape(p);
  kvc_conn *c = it_conn(p);
  int fd = it_fd(p->resp_port);
  enum { N = 120, M = 30, G = 7 };
  char key[32];
  /* The first half, then a scrape in the middle of the workload. */
  for (int i = 0; i < N / 2; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_kvc(kvc_put(c, key, strlen(key), "v", 1, NULL, 0), KVC_OK);
  }
  char *s1 = scrape(p);
  assert_int_equal(
      must(s1, REQS("native", "put")) - must(s0, REQS("native", "put")), N / 2);
  for (int i = N / 2; i < N; i++) {
    snprintf(key, sizeof key, "k%d", i);
    assert_kvc(kvc_put(c, key, strlen(key), "v", 1, NULL, 0), KVC_OK);
  }
  for (int i = 0; i < G; i++) {
    kvc_result *r;
    assert_kvc(kvc_get(c, "k1", 2, &r), KVC_OK);
    kvc_result_free(r);
  }
  for (int i = 0; i < M; i++) {
    snprintf(key, sizeof key, "r%d", i);
    assert_string_equal(RESP(fd, "SET", key, "x"), "OK");
  }
  char *s2 = scrape(p);

  const char *put_labels = "proto=\"native\",op=\"put\"";
  assert_int_equal(
      must(s2, REQS("native", "put")) - must(s0, REQS("native", "put")), N);
  assert_int_equal(
      check_histogram(s2, "epikv_request_duration_seconds", put_labels) -
          check_histogram(s0, "epikv_request_duration_seconds", put_labels),
      N);
  assert_true(must(s2, "epikv_request_duration_seconds_sum{proto=\"native\","
                       "op=\"put\"}") > 0);
  assert_int_equal(
      must(s2, REQS("native", "get")) - must(s0, REQS("native", "get")), G);
  assert_int_equal(
      must(s2, REQS("resp", "put")) - must(s0, REQS("resp", "put")), M);
  check_histogram(s2, "epikv_request_duration_seconds",
                  "proto=\"resp\",op=\"put\"");

  /* The store wrote exactly those N + M requests, in group commits whose
   * batch sizes add up to them. */
  assert_int_equal(must(s2, "epikv_keys"), N + M);
  assert_int_equal(must(s2, "epikv_store_writes_total") -
                       must(s0, "epikv_store_writes_total"),
                   N + M);
  double commits = must(s2, "epikv_store_commits_total");
  assert_true(commits - must(s0, "epikv_store_commits_total") >= 1);
  assert_int_equal(check_histogram(s2, "epikv_store_batch_size", ""), commits);
  assert_int_equal(must(s2, "epikv_store_batch_size_sum"),
                   must(s2, "epikv_store_writes_total"));
  assert_int_equal(
      check_histogram(s2, "epikv_store_commit_duration_seconds", ""), commits);
  assert_true(must(s2, "epikv_lmdb_map_used_bytes") > 0);
  assert_true(must(s2, "epikv_lmdb_map_size_bytes") >=
              must(s2, "epikv_lmdb_map_used_bytes"));

  assert_int_equal(must(s2, "epikv_connections"), 2);
  assert_true(must(s2, "epikv_connections_total") >= 2);
  assert_int_equal(must(s2, "epikv_up"), 1);
  assert_int_equal(must(s2, "epikv_peering"), 0);
  assert_non_null(strstr(s2, "epikv_info{name=\"m1\","));
  free(s0);
  free(s1);
  free(s2);
  close(fd);
  kvc_close(c);
  IT_END(f);
}

#define ERRS(code) "epikv_errors_total{code=\"" code "\"}"

static void test_metrics_counts_errors_by_code(void **state) {
  IT_BEGIN(f, 60);
  start_single(f);
  kvdh *p = &f->k[0];
  char *s0 = scrape(p);
  int fd = it_fd(p->resp_port);
  kvc_conn *c = it_conn(p);
  assert_string_equal(RESP(fd, "SET", "reg", "v"), "OK");
  assert_true(it_prefix(RESP(fd, "INCR", "reg"), "-WRONGTYPE"));
  assert_kvc(kvc_incr(c, "reg", 3, 1, false, NULL), KVC_WRONG_TYPE);
  assert_true(it_prefix(RESP(fd, "NOSUCHCMD", "x"), "-ERR unknown command"));
  /* Not found is a normal outcome, not an error. */
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "absent", 6, &r), KVC_NOTFOUND);
  kvc_result_free(r);
  char *s1 = scrape(p);
  assert_int_equal(must(s1, ERRS("WRONG_TYPE")) - must(s0, ERRS("WRONG_TYPE")),
                   2);
  assert_int_equal(
      must(s1, ERRS("BAD_REQUEST")) - must(s0, ERRS("BAD_REQUEST")), 1);
  assert_int_equal(must(s1, ERRS("AUTH_FAILED")), 0);
  assert_null(strstr(s1, "code=\"NOTFOUND\""));
  /* The failed INCR counts as an incr, the unknown command as invalid. */
  assert_int_equal(must(s1, REQS("resp", "incr")), 1);
  assert_int_equal(must(s1, REQS("native", "incr")), 1);
  assert_int_equal(must(s1, REQS("resp", "invalid")), 1);
  free(s0);
  free(s1);
  close(fd);
  kvc_close(c);
  IT_END(f);
}

static void test_metrics_health_and_paths(void **state) {
  IT_BEGIN(f, 60);
  start_single(f);
  kvdh *p = &f->k[0];
  kvc_conn *c = it_conn(p);
  kvc_result *st;
  assert_kvc(kvc_status(c, &st), KVC_OK);
  char want[64];
  snprintf(want, sizeof want, "\"replica_id\":\"%016llx\"",
           (unsigned long long)kvc_result_status_info(st)->replica_id);
  kvc_result_free(st);
  kvc_close(c);

  http_reply r;
  assert_int_equal(http(p->metrics_port, "GET", "/health", NULL, &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(strstr(r.head, "application/json"));
  static const char *const fields[] = {"{\"status\":\"ok\",",
                                       "\"name\":\"m1\"",
                                       "\"store\":\"ok\"",
                                       "\"insecure\":false",
                                       "\"peering\":false",
                                       "\"members\":{\"alive\":",
                                       "\"last_ae_exchange_ms_ago\":null"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (!strstr(r.body, fields[i]))
      fail_msg("/health lacks %s: %s", fields[i], r.body);
  if (!strstr(r.body, want)) fail_msg("/health lacks %s: %s", want, r.body);
  http_free(&r);

  static const struct {
    const char *method, *path;
    int status;
  } cases[] = {
      {"GET", "/", 404},          {"GET", "/nope", 404},
      {"GET", "/metrics/x", 404}, {"GET", "/healthz", 404},
      {"POST", "/metrics", 405},  {"DELETE", "/health", 405},
      {"HEAD", "/metrics", 200},  {"GET", "/metrics?x=1", 200},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(
        http(p->metrics_port, cases[i].method, cases[i].path, NULL, &r), 0);
    if (r.status != cases[i].status)
      fail_msg("%s %s: status %d, want %d", cases[i].method, cases[i].path,
               r.status, cases[i].status);
    if (!strcmp(cases[i].method, "HEAD") && r.len != 0)
      fail_msg("HEAD /metrics sent a body of %zu bytes", r.len);
    http_free(&r);
  }
  it_alive(p);
  IT_END(f);
}

/* A client that pipelines large reads and never reads the replies keeps
 * kvd's socket backlogged, so a SIGTERM leaves kvd stopping (answering
 * what it received) until the client goes or the stop times out. */
static void test_metrics_health_503_while_stopping(void **state) {
  IT_BEGIN(f, 60);
  start_single(f);
  kvdh *p = &f->k[0];
  int fd = it_fd(p->resp_port);
  size_t big = 1u << 20;
  char *v = malloc(big);
  memset(v, 'x', big);
  const char *set[] = {"SET", "big", v};
  size_t lens[] = {3, 3, big};
  char out[64];
  assert_int_equal(kvdh_resp(fd, 3, set, lens, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  free(v);
  const char *get[] = {"GET", "big"};
  for (int i = 0; i < 64; i++)
    assert_int_equal(kvdh_resp_send(fd, 2, get, NULL), 0);
  kvdh_sleep_ms(300);

  http_reply r;
  assert_int_equal(http(p->metrics_port, "GET", "/health", NULL, &r), 0);
  assert_int_equal(r.status, 200);
  http_free(&r);

  kill(p->pid, SIGTERM);
  uint64_t end = kvdh_now_ms() + 5000;
  for (;;) {
    if (http(p->metrics_port, "GET", "/health", NULL, &r) == 0 &&
        r.status == 503)
      break;
    if (r.head) http_free(&r);
    if (kvdh_now_ms() > end)
      fail_msg("/health did not answer 503 while kvd was stopping");
    kvdh_sleep_ms(20);
  }
  if (!strstr(r.body, "\"status\":\"stopping\""))
    fail_msg("/health while stopping: %s", r.body);
  http_free(&r);
  char *s = scrape(p);
  assert_int_equal(must(s, "epikv_up"), 0);
  free(s);
  /* The client goes: kvd finishes stopping and exits 0. */
  close(fd);
  assert_int_equal(kvdh_stop(p, SIGTERM, 15000), 0);
  IT_END(f);
}

static void test_metrics_address_and_token(void **state) {
  IT_BEGIN(f, 60);
  /* Off the loopback without a token: refused like the client ports. */
  kvdh *p = &f->k[0];
  it_args(p, "--metrics-listen", "0.0.0.0:0", NULL);
  int st = kvdh_start_expect_exit(p, 10000);
  if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
    fail_msg("kvd with --metrics-listen 0.0.0.0:0 and no token did not exit "
             "with an error (status %d)",
             st);
  assert_true(kvdh_log_contains(p, "metrics on a non-loopback address"));

  /* With a token (on loopback here), the endpoints want it. */
  kvdh *q = &f->k[1];
  assert_int_equal(kvdh_prepare(q), 0);
  static char tok[256];
  snprintf(tok, sizeof tok, "%s/token", q->dir);
  write_file(tok, TOKEN "\n");
  it_args(q, "--sync", "none", "--auth-token-file", tok, "--metrics-listen",
          "127.0.0.1:0", NULL);
  it_start(q);
  http_reply r;
  static const char *const bad[] = {NULL, "Bearer wrong", "Basic " TOKEN,
                                    "Bearer"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(http(q->metrics_port, "GET", "/metrics", bad[i], &r), 0);
    if (r.status != 401)
      fail_msg("Authorization '%s': status %d, want 401",
               bad[i] ? bad[i] : "(none)", r.status);
    http_free(&r);
  }
  assert_int_equal(http(q->metrics_port, "GET", "/health", NULL, &r), 0);
  assert_int_equal(r.status, 401);
  http_free(&r);
  assert_int_equal(http(q->metrics_port, "GET", "/health", "Bearer " TOKEN, &r),
                   0);
  assert_int_equal(r.status, 200);
  http_free(&r);
  free(scrape_auth(q, "Bearer " TOKEN));
  IT_END(f);
}

/* Every epikv_ name docs/grafana-dashboard.json queries is a family of the
 * scrape text (or a histogram's _bucket, _sum or _count), so the dashboard
 * cannot silently fall behind a renamed metric. Runs from the repository
 * root, as make test does. */
static void check_dashboard(const char *text) {
  FILE *fp = fopen("docs/grafana-dashboard.json", "r");
  if (!fp) fail_msg("cannot open docs/grafana-dashboard.json");
  static char json[1 << 20];
  size_t n = fread(json, 1, sizeof json - 1, fp);
  fclose(fp);
  json[n] = 0;
  size_t names = 0;
  for (const char *q = strstr(json, "epikv_"); q; q = strstr(q, "epikv_")) {
    char name[128], type[160];
    size_t k = 0;
    while ((islower((unsigned char)q[k]) || isdigit((unsigned char)q[k]) ||
            q[k] == '_') &&
           k + 1 < sizeof name) {
      name[k] = q[k];
      k++;
    }
    name[k] = 0;
    q += k;
    static const char *const parts[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
      size_t pl = strlen(parts[i]);
      if (k > pl && !strcmp(name + k - pl, parts[i])) name[k - pl] = 0;
    }
    snprintf(type, sizeof type, "# TYPE %s ", name);
    if (!strstr(text, type))
      fail_msg("docs/grafana-dashboard.json queries %s, which kvd does not "
               "export",
               name);
    names++;
  }
  if (names < 30)
    fail_msg("docs/grafana-dashboard.json queries only %zu metrics", names);
}

/* ---- a cluster ---- */

/* Starts node i named name, joining node join (-1: none). The fixed
 * settings take the --name=value form: kvdh has room for 15 arguments. */
static void start_node(it_fixture *f, int i, const char *name,
                       const char *rumors, const char *ae, int join) {
  kvdh *p = &f->k[i];
  assert_int_equal(kvdh_prepare(p), 0);
  snprintf(keyfile[i], sizeof keyfile[i], "%s/cluster.key", p->dir);
  write_file(keyfile[i], KEY);
  snprintf(joinarg[i], sizeof joinarg[i], "127.0.0.1:%d",
           join >= 0 ? f->k[join].peer_port : 0);
  it_args(p, "--sync=none", "--ae-interval=200", "--metrics-listen=127.0.0.1:0",
          "--cluster-key-file", keyfile[i], "--name", name, "--rumors", rumors,
          "--anti-entropy", ae, join >= 0 ? "--join" : NULL, joinarg[i], NULL);
  it_start(p);
  assert_true(p->peer_port > 0 && p->metrics_port > 0);
}

static void merkle_root(kvdh *p, uint8_t root[16]) {
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  assert_int_equal(s->merkle_root_len, 16);
  memcpy(root, s->merkle_root, 16);
  kvc_result_free(r);
  kvc_close(c);
}

/* The sum over nodes [0, n) of the given series. */
static double cluster_sum(it_fixture *f, int n, const char *series) {
  double sum = 0;
  for (int i = 0; i < n; i++) {
    char *s = scrape(&f->k[i]);
    sum += must(s, series);
    free(s);
  }
  return sum;
}

#define AE_KEYS(dir) "epikv_ae_keys_total{direction=\"" dir "\"}"
#define MEMBERS(st) "epikv_members{state=\"" st "\"}"

/* n1 holds K keys, written with rumors off, before n2 (anti-entropy off:
 * it only answers) joins: only n1's exchanges can repair n2, and each of
 * the K keys must be repaired exactly once. */
static void test_metrics_anti_entropy_repairs_counted(void **state) {
  IT_BEGIN(f, 90);
  enum { K = 37 };
  start_node(f, 0, "n1", "no", "yes", -1);
  kvc_conn *c = it_conn(&f->k[0]);
  char key[32];
  for (int i = 0; i < K; i++) {
    snprintf(key, sizeof key, "ae%d", i);
    assert_kvc(kvc_put(c, key, strlen(key), "v", 1, NULL, 0), KVC_OK);
  }
  kvc_close(c);
  start_node(f, 1, "n2", "yes", "no", 0);

  /* Both see both alive. */
  uint64_t end = kvdh_now_ms() + 15000;
  for (int i = 0; i < 2; i++) {
    for (;;) {
      char *s = scrape(&f->k[i]);
      double alive = must(s, MEMBERS("alive"));
      free(s);
      if (alive == 2) break;
      if (kvdh_now_ms() > end)
        fail_msg("node %d's epikv_members{state=alive} is %.0f, want 2", i + 1,
                 alive);
      kvdh_sleep_ms(50);
    }
  }
  /* Converged: equal roots, and every repair landed. */
  end = kvdh_now_ms() + 30000;
  for (;;) {
    uint8_t a[16], b[16];
    merkle_root(&f->k[0], a);
    merkle_root(&f->k[1], b);
    if (!memcmp(a, b, 16) && cluster_sum(f, 2, "epikv_ae_repairs_total") >= K)
      break;
    if (kvdh_now_ms() > end)
      fail_msg("the replicas did not converge within 30 s");
    kvdh_sleep_ms(100);
  }
  /* Give later exchanges time to (wrongly) repair anything again. */
  kvdh_sleep_ms(1000);
  assert_int_equal(cluster_sum(f, 2, "epikv_ae_repairs_total"), K);
  assert_int_equal(cluster_sum(f, 2, AE_KEYS("pushed")) +
                       cluster_sum(f, 2, AE_KEYS("pulled")),
                   K);

  char *s1 = scrape(&f->k[0]), *s2 = scrape(&f->k[1]);
  assert_true(must(s1, "epikv_ae_exchanges_total{outcome=\"done\"}") >= 1);
  assert_int_equal(must(s2, "epikv_ae_exchanges_total{outcome=\"done\"}"), 0);
  assert_true(must(s1, "epikv_ae_bytes_total{direction=\"sent\"}") > 0);
  assert_true(check_histogram(s1, "epikv_ae_duration_seconds", "") >= 1);
  assert_true(must(s1, "epikv_ae_last_exchange_age_seconds") >= 0);
  assert_int_equal(must(s1, "epikv_ae_repairs_total"), 0);
  assert_int_equal(must(s2, "epikv_ae_repairs_total"), K);
  assert_int_equal(must(s2, "epikv_keys"), K);
  for (int i = 0; i < 2; i++) {
    const char *s = i ? s2 : s1;
    assert_int_equal(must(s, MEMBERS("alive")), 2);
    assert_int_equal(must(s, MEMBERS("dead")), 0);
    assert_int_equal(must(s, "epikv_peering"), 1);
    assert_int_equal(must(s, "epikv_insecure"), 0);
    assert_true(must(s, "epikv_swim_messages_total{direction=\"sent\"}") > 0);
    assert_true(must(s, "epikv_peer_messages_total{direction=\"received\"}") >
                0);
    assert_int_equal(must(s, "epikv_peer_invalid_total{reason=\"bad_tag\"}"),
                     0);
  }
  check_dashboard(s1);
  /* n1's rumors are off: none pushed, none received by n2. */
  assert_int_equal(must(s1, "epikv_rumors_pushed_total"), 0);
  assert_int_equal(must(s2, "epikv_rumors_received_total"), 0);
  free(s1);
  free(s2);

  http_reply r;
  assert_int_equal(http(f->k[0].metrics_port, "GET", "/health", NULL, &r), 0);
  assert_int_equal(r.status, 200);
  static const char *const fields[] = {
      "\"name\":\"n1\"", "\"peering\":true", "\"insecure\":false",
      "\"members\":{\"alive\":2,\"suspect\":0,\"dead\":0,\"left\":0}",
      "\"peers_alive\":1"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (!strstr(r.body, fields[i]))
      fail_msg("/health lacks %s: %s", fields[i], r.body);
  if (strstr(r.body, "\"last_ae_exchange_ms_ago\":null"))
    fail_msg("/health shows no exchange: %s", r.body);
  http_free(&r);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_metrics_counts_requests),
      IT_TEST(test_metrics_counts_errors_by_code),
      IT_TEST(test_metrics_health_and_paths),
      IT_TEST(test_metrics_health_503_while_stopping),
      IT_TEST(test_metrics_address_and_token),
      IT_TEST(test_metrics_anti_entropy_repairs_counted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
