/*
 * kvload: the known-key-set loader behind bench/repair-bench.sh.
 *
 *   kvload load    -h H:P --keys N [--value-bytes B] [--seed S]
 *       puts key:%07d for i in [0, N), without context (fresh keys), through
 *       one connection with a sliding window of --pipeline requests. The
 *       value of key i is a function of (seed, i, version 0).
 *   kvload update  -h H:P --keys N --count M [--seed S] --out FILE
 *       picks M distinct keys of [0, N) (partial Fisher-Yates, fixed seed),
 *       reads each one (pipelined gets) and writes it back with the context
 *       it read and a new value (seed, i, version 1), so each key keeps one
 *       sibling, as an application update would. The keys go to FILE, one a
 *       line.
 *   kvload check   -h H:P --list FILE [--seed S]
 *       counts the keys of FILE whose value on H:P is not the version-1
 *       value `update` wrote (missing, old or with siblings).
 *   kvload objsize --data-dir D [--list FILE]
 *       opens D's LMDB environment read-only (kvd may keep running) and sums
 *       the bytes of the `objects` database: user-key bytes (the 4-byte
 *       segment prefix of the stored key left out) and canonical object
 *       bytes, over every key and over the keys of FILE.
 *
 * Every command prints one "RESULT name=value ..." line for scripts.
 */
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "client/kvclient.h"

#define DEFAULT_SEED 0x5eedULL
#define MAX_KEYS 100000000ull

static struct {
  char host[256];
  int port;
  uint64_t keys, count;
  size_t value_bytes;
  uint64_t seed;
  size_t depth;
  const char *out, *list, *data_dir;
  char host2[256];
  int port2;
  int nhosts;
  uint64_t divergent;
  double interval_ms, timeout_s, seconds;
  const char *csv, *start_cmd;
  uint64_t sample;
} cfg = {
    .host = "127.0.0.1",
    .port = KVC_DEFAULT_PORT,
    .value_bytes = 100,
    .seed = DEFAULT_SEED,
    .depth = 256,
    .interval_ms = 100,
    .timeout_s = 600,
    .seconds = 10,
    .sample = 1000,
};

static const char usage_text[] =
    "usage: kvload load    -h HOST:PORT --keys N [--value-bytes B] [--seed S]\n"
    "                      [--pipeline D]\n"
    "       kvload update  -h HOST:PORT --keys N --count M --out FILE\n"
    "                      [--value-bytes B] [--seed S] [--pipeline D]\n"
    "       kvload check   -h HOST:PORT --list FILE [--value-bytes B] "
    "[--seed S]\n"
    "       kvload objsize --data-dir D [--list FILE]\n"
    "       kvload watch   -h A -h B [--divergent N] [--start-cmd CMD]\n"
    "                      [--csv FILE] [--interval-ms MS] [--timeout S]\n"
    "                      [--list FILE [--sample K] [--seed S]]\n"
    "       kvload idle    -h A -h B [--seconds S]\n"
    "\n"
    "Keys are key:%07d. Value of key i, version v: B printable bytes from\n"
    "splitmix64(seed, i, v). load writes version 0 of every key; update\n"
    "rewrites M distinct keys (fixed seed) with version 1, carrying the\n"
    "context it read; check counts keys of FILE not holding version 1;\n"
    "objsize sums key and canonical object bytes in an LMDB data dir.\n"
    "watch samples the status of replicas A and B every MS (default 100) "
    "until\n"
    "their Merkle roots and key counts are equal: repaired keys (A's\n"
    "keys_pushed + B's keys_pulled since the start; B is taken as freshly\n"
    "started), N - repaired remaining, peer bytes; with --start-cmd it runs "
    "CMD\n"
    "(sh -c) right after taking A's baseline: time 0 is that moment. With\n"
    "--list (the keys `update` changed on A), each sample also reads the "
    "first\n"
    "K (default 1000) of them from B and estimates remaining = N x the "
    "share\n"
    "not yet holding the updated value (exact when K >= N).\n"
    "idle measures the peer traffic of A and B over S seconds while in sync:\n"
    "bytes per anti-entropy exchange and per message.\n";

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "kvload: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  exit(2);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "kvload: out of memory\n");
    exit(1);
  }
  return p;
}

static uint64_t parse_u64(const char *s, const char *name) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || !*s) die("bad number for %s", name);
  return v;
}

static void parse_host(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || (size_t)(colon - s) >= sizeof cfg.host)
    die("-h %s: expected HOST:PORT", s);
  char *h = cfg.nhosts ? cfg.host2 : cfg.host;
  int *p = cfg.nhosts ? &cfg.port2 : &cfg.port;
  if (cfg.nhosts == 2) die("-h %s: at most two replicas", s);
  memcpy(h, s, (size_t)(colon - s));
  h[colon - s] = 0;
  *p = (int)parse_u64(colon + 1, "-h");
  cfg.nhosts++;
}

static int keyname(char *buf, uint64_t i) {
  return snprintf(buf, 32, "key:%07" PRIu64, i);
}

static void value_of(uint8_t *v, uint64_t i, uint64_t version) {
  uint64_t s = cfg.seed ^ (i * 0x9e3779b97f4a7c15ull) ^
               (version * 0xc2b2ae3d27d4eb4full);
  uint64_t x = 0;
  for (size_t j = 0; j < cfg.value_bytes; j++) {
    if (j % 8 == 0) x = bench_rng(&s);
    v[j] = (uint8_t)('a' + (x & 0xff) % 26);
    x >>= 8;
  }
}

static kvc_conn *connect_or_die(void) {
  kvc_options o = {0};
  o.io_timeout_ms = 60000;
  kvc_conn *c;
  if (kvc_connect(cfg.host, cfg.port, &o, &c) != KVC_OK) {
    fprintf(stderr, "kvload: %s\n", kvc_errmsg(c));
    exit(1);
  }
  return c;
}

static kvc_result *recv_or_die(kvc_conn *c) {
  kvc_result *r;
  if (kvc_recv(c, &r) != KVC_OK) {
    fprintf(stderr, "kvload: %s\n", kvc_errmsg(c));
    exit(1);
  }
  return r;
}

/* ---- load ---- */

static int cmd_load(void) {
  kvc_conn *c = connect_or_die();
  uint8_t *v = xmalloc(cfg.value_bytes);
  char k[32];
  uint64_t errors = 0, t0 = bench_now_ns();
  for (uint64_t i = 0; i < cfg.keys || kvc_pending(c);) {
    while (i < cfg.keys && kvc_pending(c) < cfg.depth) {
      int kl = keyname(k, i);
      value_of(v, i, 0);
      if (kvc_send_put(c, k, (size_t)kl, v, cfg.value_bytes, NULL, 0, NULL))
        die("send failed: %s", kvc_errmsg(c));
      i++;
    }
    kvc_result *r = recv_or_die(c);
    if (kvc_result_error(r) != KVC_OK) errors++;
    kvc_result_free(r);
  }
  double secs = (double)(bench_now_ns() - t0) / 1e9;
  printf("loaded %" PRIu64 " keys of %zu-byte values in %.1f s (%.0f puts/s), "
         "%" PRIu64 " errors\n",
         cfg.keys, cfg.value_bytes, secs, (double)cfg.keys / secs, errors);
  printf("RESULT keys=%" PRIu64 " seconds=%.3f errors=%" PRIu64 "\n", cfg.keys,
         secs, errors);
  kvc_close(c);
  free(v);
  return errors ? 1 : 0;
}

/* ---- update ---- */

static int cmd_update(void) {
  if (!cfg.out) die("update needs --out FILE%s", "");
  if (cfg.count > cfg.keys) die("--count above --keys%s", "");
  /* Partial Fisher-Yates over [0, keys): the first count slots. */
  uint32_t *perm = xmalloc(cfg.keys * sizeof *perm);
  for (uint64_t i = 0; i < cfg.keys; i++)
    perm[i] = (uint32_t)i;
  uint64_t s = cfg.seed ^ 0x0dd5eedull;
  for (uint64_t i = 0; i < cfg.count; i++) {
    uint64_t j = i + bench_rng(&s) % (cfg.keys - i);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  FILE *f = fopen(cfg.out, "w");
  if (!f) die("cannot write %s", cfg.out);
  kvc_conn *c = connect_or_die();
  uint8_t *v = xmalloc(cfg.value_bytes);
  char k[32];
  uint64_t errors = 0, missing = 0, t0 = bench_now_ns();
  size_t batch = cfg.depth;
  kvc_result **gets = xmalloc(batch * sizeof *gets);
  for (uint64_t b = 0; b < cfg.count; b += batch) {
    size_t n = (size_t)(cfg.count - b < batch ? cfg.count - b : batch);
    for (size_t j = 0; j < n; j++) {
      int kl = keyname(k, perm[b + j]);
      if (kvc_send_get(c, k, (size_t)kl, NULL))
        die("send failed: %s", kvc_errmsg(c));
    }
    for (size_t j = 0; j < n; j++)
      gets[j] = recv_or_die(c);
    for (size_t j = 0; j < n; j++) {
      uint64_t i = perm[b + j];
      int kl = keyname(k, i);
      fprintf(f, "%s\n", k);
      if (kvc_result_error(gets[j]) == KVC_NOTFOUND) missing++;
      const uint8_t *ctx;
      size_t ctxlen;
      kvc_result_context(gets[j], &ctx, &ctxlen);
      value_of(v, i, 1);
      if (kvc_send_put(c, k, (size_t)kl, v, cfg.value_bytes, ctx, ctxlen,
                       NULL))
        die("send failed: %s", kvc_errmsg(c));
    }
    for (size_t j = 0; j < n; j++) {
      kvc_result_free(gets[j]);
      kvc_result *r = recv_or_die(c);
      if (kvc_result_error(r) != KVC_OK) errors++;
      kvc_result_free(r);
    }
  }
  double secs = (double)(bench_now_ns() - t0) / 1e9;
  if (fclose(f) != 0) die("writing %s failed", cfg.out);
  printf("updated %" PRIu64 " distinct keys of %" PRIu64
         " (get + put with context) in %.2f s, %" PRIu64
         " were missing, %" PRIu64 " errors; list in %s\n",
         cfg.count, cfg.keys, secs, missing, errors, cfg.out);
  printf("RESULT updated=%" PRIu64 " missing=%" PRIu64 " errors=%" PRIu64 "\n",
         cfg.count, missing, errors);
  kvc_close(c);
  free(gets);
  free(v);
  free(perm);
  return errors ? 1 : 0;
}

/* ---- key lists ---- */

typedef struct keylist {
  char **k;
  size_t n, cap;
} keylist;

static void read_list(const char *path, keylist *l) {
  FILE *f = fopen(path, "r");
  if (!f) die("cannot read %s", path);
  char line[600];
  while (fgets(line, sizeof line, f)) {
    size_t len = strcspn(line, "\r\n");
    if (!len) continue;
    line[len] = 0;
    if (l->n == l->cap) {
      l->cap = l->cap ? l->cap * 2 : 1024;
      l->k = realloc(l->k, l->cap * sizeof *l->k);
      if (!l->k) die("out of memory%s", "");
    }
    l->k[l->n++] = strdup(line);
  }
  fclose(f);
}

static void free_list(keylist *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->k[i]);
  free(l->k);
  l->k = NULL;
  l->n = l->cap = 0;
}

/* ---- check ---- */

static int cmd_check(void) {
  if (!cfg.list) die("check needs --list FILE%s", "");
  keylist l = {0};
  read_list(cfg.list, &l);
  kvc_conn *c = connect_or_die();
  uint8_t *v = xmalloc(cfg.value_bytes);
  uint64_t stale = 0;
  size_t sent = 0, got = 0;
  while (got < l.n) {
    while (sent < l.n && kvc_pending(c) < cfg.depth) {
      if (kvc_send_get(c, l.k[sent], strlen(l.k[sent]), NULL))
        die("send failed: %s", kvc_errmsg(c));
      sent++;
    }
    kvc_result *r = recv_or_die(c);
    const char *k = l.k[got++];
    uint64_t i = strtoull(k + 4, NULL, 10);
    value_of(v, i, 1);
    const uint8_t *d;
    size_t len;
    if (kvc_result_error(r) != KVC_OK || kvc_result_siblings(r) != 1 ||
        kvc_result_sibling(r, 0, &d, &len) != KVC_OK ||
        len != cfg.value_bytes || memcmp(d, v, len) != 0)
      stale++;
    kvc_result_free(r);
  }
  printf("%" PRIu64 " of %zu keys do not hold the updated value on %s:%d\n",
         stale, l.n, cfg.host, cfg.port);
  printf("RESULT listed=%zu stale=%" PRIu64 "\n", l.n, stale);
  kvc_close(c);
  free_list(&l);
  free(v);
  return 0;
}

/* ---- objsize ---- */

static uint64_t hash_str(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

static int cmd_objsize(void) {
  if (!cfg.data_dir) die("objsize needs --data-dir D%s", "");
  keylist l = {0};
  size_t hcap = 1;
  char **table = NULL;
  if (cfg.list) {
    read_list(cfg.list, &l);
    while (hcap < l.n * 2 + 2)
      hcap <<= 1;
    table = calloc(hcap, sizeof *table);
    for (size_t i = 0; i < l.n; i++) {
      size_t h = hash_str(l.k[i], strlen(l.k[i])) & (hcap - 1);
      while (table[h])
        h = (h + 1) & (hcap - 1);
      table[h] = l.k[i];
    }
  }
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cur;
  int rc;
  if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, 4)) ||
      (rc = mdb_env_open(env, cfg.data_dir, MDB_RDONLY | MDB_NOTLS, 0644)) ||
      (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) ||
      (rc = mdb_dbi_open(txn, "objects", 0, &dbi)) ||
      (rc = mdb_cursor_open(txn, dbi, &cur))) {
    fprintf(stderr, "kvload: %s: %s\n", cfg.data_dir, mdb_strerror(rc));
    return 1;
  }
  uint64_t n = 0, kb = 0, ob = 0, ln = 0, lkb = 0, lob = 0, omin = UINT64_MAX,
           omax = 0;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    size_t klen = k.mv_size > 4 ? k.mv_size - 4 : 0;
    const char *key = (const char *)k.mv_data + 4;
    n++;
    kb += klen;
    ob += v.mv_size;
    if (v.mv_size < omin) omin = v.mv_size;
    if (v.mv_size > omax) omax = v.mv_size;
    if (table) {
      size_t h = hash_str(key, klen) & (hcap - 1);
      while (table[h]) {
        if (strlen(table[h]) == klen && !memcmp(table[h], key, klen)) {
          ln++;
          lkb += klen;
          lob += v.mv_size;
          break;
        }
        h = (h + 1) & (hcap - 1);
      }
    }
  }
  MDB_stat st;
  mdb_stat(txn, dbi, &st);
  uint64_t pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  printf("objects: %" PRIu64 " keys, %" PRIu64 " key bytes + %" PRIu64
         " object bytes = %" PRIu64 " (object %" PRIu64 "..%" PRIu64
         " bytes, mean %.1f); %" PRIu64 " pages of %u bytes\n",
         n, kb, ob, kb + ob, n ? omin : 0, omax, n ? (double)ob / (double)n : 0,
         pages, st.ms_psize);
  if (table)
    printf("listed: %" PRIu64 " of %zu keys found, %" PRIu64
           " key bytes + %" PRIu64 " object bytes = %" PRIu64 "\n",
           ln, l.n, lkb, lob, lkb + lob);
  printf("RESULT keys=%" PRIu64 " key_bytes=%" PRIu64 " object_bytes=%" PRIu64
         " pages=%" PRIu64 " page_size=%u listed=%" PRIu64
         " listed_key_bytes=%" PRIu64 " listed_object_bytes=%" PRIu64 "\n",
         n, kb, ob, pages, st.ms_psize, ln, lkb, lob);
  free(table);
  free_list(&l);
  return 0;
}

/* ---- watch and idle: two replicas' status ---- */

typedef struct rstat {
  bool ok;
  uint8_t root[64];
  size_t rootlen;
  uint64_t keys, msgs_sent, bytes_sent, msgs_recv, bytes_recv;
  uint64_t exchanges, keys_pushed, keys_pulled;
  int alive, npeers;
} rstat;

static kvc_conn *try_connect(const char *host, int port) {
  kvc_options o = {0};
  o.io_timeout_ms = 5000;
  o.connect_timeout_ms = 1000;
  kvc_conn *c;
  if (kvc_connect(host, port, &o, &c) == KVC_OK) return c;
  kvc_close(c);
  return NULL;
}

/* Status through *c, reconnecting (one try) when it is NULL or broken. */
static rstat get_rstat(kvc_conn **c, const char *host, int port) {
  rstat s = {0};
  if (*c && kvc_conn_error(*c) != KVC_OK) {
    kvc_close(*c);
    *c = NULL;
  }
  if (!*c) *c = try_connect(host, port);
  if (!*c) return s;
  kvc_result *r;
  if (kvc_status(*c, &r) != KVC_OK) return s;
  const kvc_status_info *st = kvc_result_status_info(r);
  if (st) {
    s.ok = true;
    s.rootlen = st->merkle_root_len < sizeof s.root ? st->merkle_root_len
                                                    : sizeof s.root;
    memcpy(s.root, st->merkle_root, s.rootlen);
    s.keys = st->keys;
    s.msgs_sent = st->peer_messages_sent;
    s.bytes_sent = st->peer_bytes_sent;
    s.msgs_recv = st->peer_messages_received;
    s.bytes_recv = st->peer_bytes_received;
    s.npeers = (int)st->npeers;
    for (size_t i = 0; i < st->npeers; i++) {
      s.exchanges += st->peers[i].exchanges;
      s.keys_pushed += st->peers[i].keys_pushed;
      s.keys_pulled += st->peers[i].keys_pulled;
      s.alive += st->peers[i].alive;
    }
  }
  kvc_result_free(r);
  return s;
}

static bool in_sync(const rstat *a, const rstat *b) {
  return a->ok && b->ok && a->rootlen == b->rootlen &&
         !memcmp(a->root, b->root, a->rootlen) && a->keys == b->keys;
}

static void sleep_ns_until(uint64_t t) {
  struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* How many of keys[0..n) do not hold exactly their version-1 value on c
 * (pipelined gets); n when c is NULL or breaks. */
static uint64_t count_stale(kvc_conn *c, char **keys, size_t n, uint8_t *v) {
  if (!c) return n;
  uint64_t stale = 0;
  size_t sent = 0, got = 0;
  while (got < n) {
    while (sent < n && kvc_pending(c) < cfg.depth) {
      if (kvc_send_get(c, keys[sent], strlen(keys[sent]), NULL)) return n;
      sent++;
    }
    kvc_result *r;
    if (kvc_recv(c, &r) != KVC_OK) return n;
    uint64_t i = strtoull(keys[got++] + 4, NULL, 10);
    value_of(v, i, 1);
    const uint8_t *d;
    size_t len;
    if (kvc_result_error(r) != KVC_OK || kvc_result_siblings(r) != 1 ||
        kvc_result_sibling(r, 0, &d, &len) != KVC_OK ||
        len != cfg.value_bytes || memcmp(d, v, len) != 0)
      stale++;
    kvc_result_free(r);
  }
  return stale;
}

static int cmd_watch(void) {
  if (cfg.nhosts != 2) die("watch needs -h A -h B%s", "");
  FILE *csv = NULL;
  if (cfg.csv) {
    csv = fopen(cfg.csv, "w");
    if (!csv) die("cannot write %s", cfg.csv);
    fprintf(csv, "t_s,remaining,sample_stale,sample,remaining_by_counters,"
                 "repaired_by_counters,roots_equal,a_alive,b_up,"
                 "a_exchanges,b_exchanges,a_bytes_sent,b_bytes_sent\n");
  }
  kvc_conn *ca = NULL, *cb = NULL;
  keylist l = {0};
  size_t ns = 0;
  uint8_t *vbuf = xmalloc(cfg.value_bytes);
  if (cfg.list) {
    read_list(cfg.list, &l);
    ns = l.n < cfg.sample ? l.n : (size_t)cfg.sample;
    if (!cfg.divergent) cfg.divergent = l.n;
  }
  rstat a0 = get_rstat(&ca, cfg.host, cfg.port);
  if (!a0.ok) die("no status from replica A (%s)", cfg.host);
  /* B's baseline: its own status now if it runs, else zero (it restarts). */
  rstat b0 = {0};
  if (!cfg.start_cmd) b0 = get_rstat(&cb, cfg.host2, cfg.port2);
  uint64_t t0 = bench_now_ns();
  pid_t child = -1;
  if (cfg.start_cmd) {
    child = fork();
    if (child == 0) {
      execl("/bin/sh", "sh", "-c", cfg.start_cmd, (char *)NULL);
      _exit(127);
    }
    if (child < 0) die("fork failed%s", "");
  }
  uint64_t step = (uint64_t)(cfg.interval_ms * 1e6), next = t0;
  double t_alive = -1, t_first_repair = -1, t_done = -1;
  uint64_t repaired = 0;
  rstat a = a0, b = b0;
  for (;;) {
    next += step;
    sleep_ns_until(next);
    double t = (double)(bench_now_ns() - t0) / 1e9;
    /* A failed sample keeps the last figures. */
    rstat na = get_rstat(&ca, cfg.host, cfg.port);
    rstat nb = get_rstat(&cb, cfg.host2, cfg.port2);
    if (na.ok) a = na;
    if (nb.ok) b = nb;
    if (b.ok)
      repaired = (a.keys_pushed - a0.keys_pushed) +
                 (b.keys_pulled - b0.keys_pulled);
    bool eq = na.ok && nb.ok && in_sync(&a, &b);
    uint64_t by_counters =
        eq ? 0 : (repaired < cfg.divergent ? cfg.divergent - repaired : 0);
    uint64_t stale = 0, remaining = by_counters;
    if (ns) {
      stale = count_stale(nb.ok ? cb : NULL, l.k, ns, vbuf);
      remaining = eq ? 0
                     : (uint64_t)((double)cfg.divergent * (double)stale /
                                      (double)ns +
                                  0.5);
    }
    if (t_alive < 0 && a.ok && b.ok && a.alive >= 1 && b.alive >= 1)
      t_alive = t;
    if (t_first_repair < 0 &&
        (ns ? remaining < cfg.divergent : repaired > 0))
      t_first_repair = t;
    if (csv)
      fprintf(csv,
              "%.3f,%" PRIu64 ",%" PRIu64 ",%zu,%" PRIu64 ",%" PRIu64
              ",%d,%d,%d,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n",
              t, remaining, stale, ns, by_counters, repaired, eq, a.alive,
              nb.ok,
              a.exchanges - a0.exchanges, b.exchanges - b0.exchanges,
              a.bytes_sent - a0.bytes_sent, b.ok ? b.bytes_sent - b0.bytes_sent : 0);
    if (eq) {
      t_done = t;
      break;
    }
    if (t > cfg.timeout_s) break;
  }
  if (child > 0) {
    int st;
    waitpid(child, &st, 0);
  }
  if (csv) fclose(csv);
  uint64_t a_sent = a.bytes_sent - a0.bytes_sent,
           b_sent = b.bytes_sent - b0.bytes_sent;
  uint64_t a_msgs = a.msgs_sent - a0.msgs_sent, b_msgs = b.msgs_sent - b0.msgs_sent;
  if (t_done >= 0)
    printf("in sync after %.2f s (B seen alive at %.2f s, first repair counted "
           "at %.2f s); %" PRIu64 " keys repaired by %" PRIu64
           " exchanges from A + %" PRIu64 " from B\n",
           t_done, t_alive, t_first_repair, repaired,
           a.exchanges - a0.exchanges, b.exchanges - b0.exchanges);
  else
    printf("NOT in sync after %.0f s; %" PRIu64 " keys repaired\n",
           cfg.timeout_s, repaired);
  printf("peer bytes on the wire: A sent %" PRIu64 " in %" PRIu64
         " messages, B sent %" PRIu64 " in %" PRIu64 " messages; total %" PRIu64
         "\n",
         a_sent, a_msgs, b_sent, b_msgs, a_sent + b_sent);
  printf("RESULT synced=%d seconds=%.3f alive_s=%.3f first_repair_s=%.3f "
         "repaired=%" PRIu64 " a_exchanges=%" PRIu64 " b_exchanges=%" PRIu64
         " a_bytes_sent=%" PRIu64 " b_bytes_sent=%" PRIu64 " a_msgs=%" PRIu64
         " b_msgs=%" PRIu64 " keys=%" PRIu64 "\n",
         t_done >= 0, t_done, t_alive, t_first_repair, repaired,
         a.exchanges - a0.exchanges, b.exchanges - b0.exchanges, a_sent, b_sent,
         a_msgs, b_msgs, a.keys);
  kvc_close(ca);
  kvc_close(cb);
  free_list(&l);
  free(vbuf);
  return 0;
}

static int cmd_idle(void) {
  if (cfg.nhosts != 2) die("idle needs -h A -h B%s", "");
  kvc_conn *ca = NULL, *cb = NULL;
  rstat a0 = get_rstat(&ca, cfg.host, cfg.port);
  rstat b0 = get_rstat(&cb, cfg.host2, cfg.port2);
  if (!in_sync(&a0, &b0)) die("replicas not in sync at the start%s", "");
  sleep_ns_until(bench_now_ns() + (uint64_t)(cfg.seconds * 1e9));
  rstat a = get_rstat(&ca, cfg.host, cfg.port);
  rstat b = get_rstat(&cb, cfg.host2, cfg.port2);
  bool still = in_sync(&a, &b);
  uint64_t ex = (a.exchanges - a0.exchanges) + (b.exchanges - b0.exchanges);
  uint64_t msgs = (a.msgs_sent - a0.msgs_sent) + (b.msgs_sent - b0.msgs_sent);
  uint64_t bytes =
      (a.bytes_sent - a0.bytes_sent) + (b.bytes_sent - b0.bytes_sent);
  printf("idle %.0f s, %s: %" PRIu64 " exchanges, %" PRIu64
         " messages, %" PRIu64 " bytes on the wire (both replicas' "
         "peer_bytes_sent)\n",
         cfg.seconds, still ? "in sync throughout" : "NOT in sync at the end",
         ex, msgs, bytes);
  if (ex && msgs)
    printf("per exchange: %.2f messages, %.1f bytes both ways; %.1f bytes per "
           "message\n",
           (double)msgs / (double)ex, (double)bytes / (double)ex,
           (double)bytes / (double)msgs);
  printf("RESULT in_sync=%d exchanges=%" PRIu64 " msgs=%" PRIu64
         " bytes=%" PRIu64 " bytes_per_msg=%.1f bytes_per_exchange=%.1f\n",
         still, ex, msgs, bytes, msgs ? (double)bytes / (double)msgs : 0,
         ex ? (double)bytes / (double)ex : 0);
  kvc_close(ca);
  kvc_close(cb);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *cmd = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) die("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "-h"))
      parse_host(v);
    else if (!strcmp(a, "--keys"))
      cfg.keys = parse_u64(v, a);
    else if (!strcmp(a, "--count"))
      cfg.count = parse_u64(v, a);
    else if (!strcmp(a, "--value-bytes"))
      cfg.value_bytes = (size_t)parse_u64(v, a);
    else if (!strcmp(a, "--seed"))
      cfg.seed = parse_u64(v, a);
    else if (!strcmp(a, "--pipeline"))
      cfg.depth = (size_t)parse_u64(v, a);
    else if (!strcmp(a, "--out"))
      cfg.out = v;
    else if (!strcmp(a, "--list"))
      cfg.list = v;
    else if (!strcmp(a, "--data-dir"))
      cfg.data_dir = v;
    else if (!strcmp(a, "--divergent"))
      cfg.divergent = parse_u64(v, a);
    else if (!strcmp(a, "--interval-ms"))
      cfg.interval_ms = strtod(v, NULL);
    else if (!strcmp(a, "--timeout"))
      cfg.timeout_s = strtod(v, NULL);
    else if (!strcmp(a, "--seconds"))
      cfg.seconds = strtod(v, NULL);
    else if (!strcmp(a, "--csv"))
      cfg.csv = v;
    else if (!strcmp(a, "--sample"))
      cfg.sample = parse_u64(v, a);
    else if (!strcmp(a, "--start-cmd"))
      cfg.start_cmd = v;
    else
      die("unknown option %s (kvload --help)", a);
  }
  if (cfg.keys > MAX_KEYS) die("--keys too large%s", "");
  if (cfg.depth < 1) cfg.depth = 1;
  if (!strcmp(cmd, "load")) return cmd_load();
  if (!strcmp(cmd, "update")) return cmd_update();
  if (!strcmp(cmd, "check")) return cmd_check();
  if (!strcmp(cmd, "objsize")) return cmd_objsize();
  if (!strcmp(cmd, "watch")) return cmd_watch();
  if (!strcmp(cmd, "idle")) return cmd_idle();
  die("unknown command %s (kvload --help)", cmd);
  return 2;
}
