/*
 * kvbench: a load generator for kvd's native protocol, through libkvclient
 * only. Each thread owns one connection and keeps a fixed number of requests
 * in flight (a sliding window: a new request goes out as soon as an answer
 * comes back), and times every request from the moment it is queued to the
 * moment its answer is decoded. Ops and keys come from a fixed seed, so two
 * runs send the same sequence and differ only by the server and the machine.
 *
 * It reports ops/s and p50/p99/p999 per op type and errors by code. Errors the
 * server answers are counted, never fatal: the exit status is non-zero only
 * for a usage error or a connection that failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "client/kvclient.h"

enum { EXIT_OK = 0, EXIT_CONN = 1, EXIT_USAGE = 2 };

enum { OP_GET, OP_PUT, OP_INCR, NOPS };
static const char *const op_names[NOPS] = {"get", "put", "incr"};

/* Error slots: index -status for the library's codes 0..-22, then one for
 * any code this build does not know. */
#define NERR 24
#define ERR_OTHER (NERR - 1)

typedef enum put_mode { PUT_UPDATE, PUT_FRESH, PUT_BLIND } put_mode;
static const char *const put_mode_names[] = {"update", "fresh", "blind"};

#define DEFAULT_SEED 0x5eedULL
#define PRELOAD_DEPTH 64
#define CTX_LOCKS 1024

static const char usage_text[] =
    "usage: kvbench [options]\n"
    "\n"
    "Load generator for kvd's native protocol. Each of N threads owns one\n"
    "connection and keeps D requests in flight: a sliding window, where a new\n"
    "request is sent as soon as an answer arrives. Latency is per request, "
    "from\n"
    "the moment it is queued to the moment its answer is decoded. Ops and "
    "keys\n"
    "come from a fixed seed, so runs with the same options send the same\n"
    "sequence.\n"
    "\n"
    "  -h HOST:PORT         server (default 127.0.0.1:7400; IPv6 as "
    "[addr]:port)\n"
    "  --connections N      threads, one connection each (default 16)\n"
    "  --pipeline D         requests in flight per connection (default 1)\n"
    "  --requests N         send N requests in total, or\n"
    "  --seconds S          send for S seconds, then wait for the answers\n"
    "                       (default: --seconds 10)\n"
    "  --mix OP=PCT,...     op mix, ops get, put, incr; unnamed ops get 0\n"
    "                       (default get=80,put=15,incr=5)\n"
    "  --keys K             key space (default 100000): get and put use\n"
    "                       key:<i>, incr uses counter:<i> (a PN-counter,\n"
    "                       +1), with i uniform in [0, K)\n"
    "  --value-bytes B      size of each put's value (default 100)\n"
    "  --put-mode MODE      what a put writes (default update):\n"
    "     update   a put on key:<i> carries the newest causal context kvbench\n"
    "              has seen for that key (from any connection's get or put\n"
    "              answer), so it replaces the value, like Redis SET. "
    "Siblings\n"
    "              stay bounded by the concurrent writes to one key.\n"
    "     fresh    every put creates a key never written before\n"
    "              (fresh:<run>:<conn>:<n>), with no context: creates only.\n"
    "     blind    a put on key:<i> without context: each one adds a sibling\n"
    "              beside the key's values, until the server refuses with\n"
    "              TOO_MANY_SIBLINGS (kvd --max-siblings, default 100),\n"
    "              counted as errors.\n"
    "              This measures sibling growth, not a normal workload.\n"
    "              (A context-less put never replaces; an empty context\n"
    "              covers nothing, so it would not either.)\n"
    "  --context            same as --put-mode update\n"
    "  --no-preload         skip the preload. Unless given, before timing\n"
    "                       starts kvbench reads every key:<i> when the mix "
    "has\n"
    "                       gets or update puts (learning contexts), and "
    "writes\n"
    "                       the missing ones when it has gets, so gets hit.\n"
    "                       Without it, update puts on keys not yet seen go "
    "out\n"
    "                       without context, and gets may miss (NOTFOUND is\n"
    "                       counted as not found, not as an error).\n"
    "  --seed S             seed of the op and key sequence (default 0x5eed)\n"
    "  --timeout-ms MS      longest wait for one answer (default 10000)\n"
    "  --token-file F       authenticate with the token in F\n"
    "  --json               print one JSON object instead of the table\n"
    "  --help               this text\n"
    "\n"
    "Baseline against candidate: start both kvd builds on fresh data dirs and\n"
    "run kvbench with the same options against each in turn, alternating, in\n"
    "one session; the fixed seed makes both see the same requests.\n"
    "\n"
    "Exit status: 0 when the run completed, even if the server answered "
    "errors\n"
    "(they are reported by code); 1 when a connection could not be made or\n"
    "broke during the run (what was measured is still reported); 2 for a "
    "usage\n"
    "error.\n";

static struct {
  char host[256];
  int port;
  int conns;
  size_t depth;
  bool by_requests;
  uint64_t requests;
  double seconds;
  unsigned weight[NOPS];
  unsigned wtotal;
  uint64_t keys;
  size_t value_bytes;
  uint64_t seed;
  put_mode pmode;
  bool preload;
  bool json;
  int timeout_ms;
  char *token;
} cfg = {
    .host = "127.0.0.1",
    .port = KVC_DEFAULT_PORT,
    .conns = 16,
    .depth = 1,
    .seconds = 10.0,
    .weight = {80, 15, 5},
    .wtotal = 100,
    .keys = 100000,
    .value_bytes = 100,
    .seed = DEFAULT_SEED,
    .pmode = PUT_UPDATE,
    .preload = true,
    .timeout_ms = 10000,
};

static uint8_t *value_buf;
static uint32_t run_nonce; /* names fresh keys; not part of the sequence */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "kvbench: out of memory\n");
    exit(EXIT_CONN);
  }
  return p;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fprintf(stderr, "kvbench: out of memory\n");
    exit(EXIT_CONN);
  }
  return p;
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) {
    fprintf(stderr, "kvbench: out of memory\n");
    exit(EXIT_CONN);
  }
  return p;
}

static int err_slot(int status) {
  return status <= 0 && status > -ERR_OTHER ? -status : ERR_OTHER;
}

static const char *err_slot_name(int slot) {
  return slot == ERR_OTHER ? "UNKNOWN" : kvc_errname(-slot);
}

/* ---- causal contexts of key:<i>, shared by all connections ----
 *
 * An update put must carry the context of the values it replaces. Reading
 * the key before each put would double the requests, so kvbench remembers
 * the context of the newest answer it got for each key (get or put, any
 * connection) and sends that. Answers from different connections can arrive
 * out of order, so a put may now and then carry a slightly older context and
 * leave a sibling beside its value; the next put to that key covers it. */

typedef struct ctx_entry {
  uint8_t *data;
  size_t len, cap;
  bool known;
} ctx_entry;

static ctx_entry *ctxs;
static pthread_mutex_t ctx_locks[CTX_LOCKS];

static void ctx_store(uint64_t k, const kvc_result *r) {
  const uint8_t *d;
  size_t len;
  kvc_result_context(r, &d, &len);
  pthread_mutex_lock(&ctx_locks[k % CTX_LOCKS]);
  ctx_entry *e = &ctxs[k];
  if (len > e->cap) {
    e->data = xrealloc(e->data, len);
    e->cap = len;
  }
  if (len) memcpy(e->data, d, len);
  e->len = len;
  e->known = true;
  pthread_mutex_unlock(&ctx_locks[k % CTX_LOCKS]);
}

/* Copies key k's context into *buf (grown as needed, never left NULL).
 * False when none is known. */
static bool ctx_load(uint64_t k, uint8_t **buf, size_t *cap, size_t *len) {
  pthread_mutex_lock(&ctx_locks[k % CTX_LOCKS]);
  const ctx_entry *e = &ctxs[k];
  bool known = e->known;
  if (known) {
    if (e->len > *cap) {
      *buf = xrealloc(*buf, e->len);
      *cap = e->len;
    }
    if (e->len) memcpy(*buf, e->data, e->len);
    *len = e->len;
  }
  pthread_mutex_unlock(&ctx_locks[k % CTX_LOCKS]);
  return known;
}

/* ---- workers ---- */

/* One request in flight. */
typedef struct slot {
  uint64_t t0;
  uint64_t key;
  int op;
} slot;

typedef struct worker {
  int id;
  kvc_conn *c;
  pthread_t th;
  uint64_t rng;
  uint64_t quota, sent; /* --requests */
  uint64_t fresh_n;
  uint8_t *ctx;
  size_t ctxcap;

  /* preload */
  uint64_t pl_next, pl_read, pl_written, pl_errors;
  uint64_t *missing;
  size_t nmissing, missingcap, pl_put_next;

  /* measurement */
  samples lat[NOPS];
  uint64_t notfound[NOPS];
  uint64_t errs[NOPS][NERR];
  char errmsg[NOPS][NERR][160]; /* the first message seen for each */
  uint64_t t_last;
  int broken; /* the transport error that broke the connection */
  char brokenmsg[256];
  uint64_t lost; /* requests in flight when it broke */
} worker;

static uint64_t run_end_ns; /* --seconds: no request is sent after this */
static pthread_barrier_t start_barrier;

typedef int (*next_fn)(worker *w, slot *s);
typedef void (*done_fn)(worker *w, const slot *s, kvc_result *r, uint64_t t);

static int key_name(char *buf, size_t len, const char *prefix, uint64_t k) {
  return snprintf(buf, len, "%s:%012" PRIu64, prefix, k);
}

/* The sliding window: keeps up to depth requests queued or in flight,
 * calling next to queue one (1: queued, 0: nothing more to send, negative:
 * not queued, already counted) and done for each answer, in order. Returns
 * KVC_OK, or the transport error that broke the connection. */
static int pump(worker *w, size_t depth, next_fn next, done_fn done) {
  slot *ring = xcalloc(depth, sizeof *ring);
  size_t head = 0, n = 0;
  bool more = true;
  int rc = KVC_OK;
  for (;;) {
    while (more && n < depth) {
      int st = next(w, &ring[(head + n) % depth]);
      if (st == 1)
        n++;
      else if (st == 0)
        more = false;
      else if (kvc_conn_error(w->c) != KVC_OK) {
        rc = kvc_conn_error(w->c);
        goto out;
      }
    }
    if (n == 0) break;
    kvc_result *r;
    rc = kvc_recv(w->c, &r);
    uint64_t t = now_ns();
    if (rc != KVC_OK) goto out;
    done(w, &ring[head], r, t);
    kvc_result_free(r);
    head = (head + 1) % depth;
    n--;
  }
out:
  if (rc != KVC_OK) {
    w->broken = rc;
    w->lost = n;
    snprintf(w->brokenmsg, sizeof w->brokenmsg, "%s", kvc_errmsg(w->c));
  }
  free(ring);
  return rc;
}

static void count_error(worker *w, int op, int status, const char *msg) {
  int e = err_slot(status);
  if (w->errs[op][e]++ == 0)
    snprintf(w->errmsg[op][e], sizeof w->errmsg[op][e], "%s", msg);
}

/* Preload, pass 1: read key:<i> for each i of this connection's share
 * (i % connections == id), learning contexts and which keys are missing. */
static int pl_next_get(worker *w, slot *s) {
  if (w->pl_next >= cfg.keys) return 0;
  s->key = w->pl_next;
  w->pl_next += (uint64_t)cfg.conns;
  char key[64];
  int kl = key_name(key, sizeof key, "key", s->key);
  int rc = kvc_send_get(w->c, key, (size_t)kl, NULL);
  if (rc != KVC_OK) w->pl_errors++;
  return rc == KVC_OK ? 1 : rc;
}

static void pl_done_get(worker *w, const slot *s, kvc_result *r, uint64_t t) {
  (void)t;
  int e = kvc_result_error(r);
  w->pl_read++;
  if (e != KVC_OK && e != KVC_NOTFOUND) {
    w->pl_errors++;
    return;
  }
  if (ctxs) ctx_store(s->key, r);
  if (e == KVC_NOTFOUND && cfg.weight[OP_GET] > 0) {
    if (w->nmissing == w->missingcap) {
      w->missingcap = w->missingcap ? w->missingcap * 2 : 1024;
      w->missing = xrealloc(w->missing, w->missingcap * sizeof *w->missing);
    }
    w->missing[w->nmissing++] = s->key;
  }
}

/* Preload, pass 2: write the missing keys, with the context pass 1 got. */
static int pl_next_put(worker *w, slot *s) {
  if (w->pl_put_next >= w->nmissing) return 0;
  s->key = w->missing[w->pl_put_next++];
  char key[64];
  int kl = key_name(key, sizeof key, "key", s->key);
  size_t clen = 0;
  bool known = ctxs && ctx_load(s->key, &w->ctx, &w->ctxcap, &clen);
  int rc = kvc_send_put(w->c, key, (size_t)kl, value_buf, cfg.value_bytes,
                        known ? w->ctx : NULL, clen, NULL);
  if (rc != KVC_OK) w->pl_errors++;
  return rc == KVC_OK ? 1 : rc;
}

static void pl_done_put(worker *w, const slot *s, kvc_result *r, uint64_t t) {
  (void)t;
  if (kvc_result_error(r) != KVC_OK) {
    w->pl_errors++;
    return;
  }
  w->pl_written++;
  if (ctxs) ctx_store(s->key, r);
}

static bool more_to_send(worker *w) {
  if (cfg.by_requests) return w->sent < w->quota;
  return now_ns() < run_end_ns;
}

static int run_next(worker *w, slot *s) {
  if (!more_to_send(w)) return 0;
  w->sent++;
  uint64_t x = bench_rng(&w->rng) % cfg.wtotal;
  int op = 0;
  while (x >= cfg.weight[op])
    x -= cfg.weight[op++];
  s->op = op;
  s->key = bench_rng(&w->rng) % cfg.keys;
  char key[96];
  int kl, rc;
  s->t0 = now_ns();
  switch (op) {
  case OP_GET:
    kl = key_name(key, sizeof key, "key", s->key);
    rc = kvc_send_get(w->c, key, (size_t)kl, NULL);
    break;
  case OP_PUT:
    if (cfg.pmode == PUT_FRESH) {
      kl = snprintf(key, sizeof key, "fresh:%08" PRIx32 ":%d:%" PRIu64,
                    run_nonce, w->id, w->fresh_n++);
      rc = kvc_send_put(w->c, key, (size_t)kl, value_buf, cfg.value_bytes, NULL,
                        0, NULL);
    } else {
      kl = key_name(key, sizeof key, "key", s->key);
      size_t clen = 0;
      bool known = cfg.pmode == PUT_UPDATE &&
                   ctx_load(s->key, &w->ctx, &w->ctxcap, &clen);
      rc = kvc_send_put(w->c, key, (size_t)kl, value_buf, cfg.value_bytes,
                        known ? w->ctx : NULL, clen, NULL);
    }
    break;
  default:
    kl = key_name(key, sizeof key, "counter", s->key);
    rc = kvc_send_incr(w->c, key, (size_t)kl, 1, false, NULL);
    break;
  }
  if (rc != KVC_OK) {
    count_error(w, op, rc, kvc_errmsg(w->c));
    return rc;
  }
  return 1;
}

static void run_done(worker *w, const slot *s, kvc_result *r, uint64_t t) {
  add_sample(&w->lat[s->op], t - s->t0);
  w->t_last = t;
  int e = kvc_result_error(r);
  if (e == KVC_NOTFOUND && s->op == OP_GET)
    w->notfound[s->op]++;
  else if (e != KVC_OK)
    count_error(w, s->op, e, kvc_result_errmsg(r));
  if (ctxs && (e == KVC_OK || e == KVC_NOTFOUND) &&
      (s->op == OP_GET || (s->op == OP_PUT && cfg.pmode == PUT_UPDATE)))
    ctx_store(s->key, r);
}

static void *preload_main(void *arg) {
  worker *w = arg;
  w->pl_next = (uint64_t)w->id;
  if (pump(w, PRELOAD_DEPTH, pl_next_get, pl_done_get) == KVC_OK)
    (void)pump(w, PRELOAD_DEPTH, pl_next_put, pl_done_put);
  return NULL;
}

static void *run_main(void *arg) {
  worker *w = arg;
  pthread_barrier_wait(&start_barrier);
  if (!w->broken) (void)pump(w, cfg.depth, run_next, run_done);
  return NULL;
}

/* ---- options ---- */

static _Noreturn void usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "kvbench: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(kvbench --help for the options)\n");
  exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *s, const char *opt, uint64_t min,
                          uint64_t max) {
  char *end;
  errno = 0;
  if (!*s || *s == '-') usage_error("%s: expected a non-negative number", opt);
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || v < min || v > max)
    usage_error("%s: number out of range or malformed", opt);
  return (uint64_t)v;
}

static void parse_host(const char *arg) {
  const char *colon, *host = arg;
  size_t hl;
  if (arg[0] == '[') {
    const char *close = strchr(arg, ']');
    if (!close || (close[1] && close[1] != ':'))
      usage_error("-h %s: expected [ADDR]:PORT", arg);
    host = arg + 1;
    hl = (size_t)(close - host);
    colon = close[1] ? close + 1 : NULL;
  } else {
    colon = strrchr(arg, ':');
    hl = colon ? (size_t)(colon - arg) : strlen(arg);
  }
  if (hl == 0 || hl >= sizeof cfg.host) usage_error("-h %s: bad host", arg);
  memcpy(cfg.host, host, hl);
  cfg.host[hl] = '\0';
  if (colon) cfg.port = (int)parse_u64(colon + 1, "-h (port)", 1, 65535);
}

static void parse_mix(const char *arg) {
  char *copy = strdup(arg), *save = NULL;
  if (!copy) exit(EXIT_CONN);
  memset(cfg.weight, 0, sizeof cfg.weight);
  for (char *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq) usage_error("--mix: expected OP=PCT, got \"%s\"", tok);
    *eq = '\0';
    int op = -1;
    for (int i = 0; i < NOPS; i++)
      if (!strcmp(tok, op_names[i])) op = i;
    if (op < 0) usage_error("--mix: unknown op \"%s\" (get, put, incr)", tok);
    cfg.weight[op] = (unsigned)parse_u64(eq + 1, "--mix", 0, 100);
  }
  free(copy);
  cfg.wtotal = 0;
  for (int i = 0; i < NOPS; i++)
    cfg.wtotal += cfg.weight[i];
  if (cfg.wtotal != 100)
    usage_error("--mix %s: the percentages must add up to 100", arg);
}

static void read_token(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "kvbench: %s: %s\n", path, strerror(errno));
    exit(EXIT_USAGE);
  }
  char buf[4096];
  if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\r\n")] = '\0';
  cfg.token = strdup(buf);
}

static void parse_args(int argc, char **argv) {
  bool have_requests = false, have_seconds = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    char name[64];
    const char *val = NULL;
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    if (eq && (size_t)(eq - a) < sizeof name) {
      memcpy(name, a, (size_t)(eq - a));
      name[eq - a] = '\0';
      val = eq + 1;
    } else {
      snprintf(name, sizeof name, "%s", a);
    }
#define FLAG(s) (!strcmp(name, s))
#define NOVALUE() (val ? usage_error("%s takes no value", name) : (void)0)
#define VALUE()                                                                \
  (val ? val                                                                   \
       : (i + 1 < argc ? argv[++i]                                             \
                       : (usage_error("%s needs a value", name), "")))
    if (FLAG("--help")) {
      NOVALUE();
      fputs(usage_text, stdout);
      exit(EXIT_OK);
    } else if (FLAG("-h") || FLAG("--host")) {
      parse_host(VALUE());
    } else if (FLAG("--connections")) {
      cfg.conns = (int)parse_u64(VALUE(), name, 1, 4096);
    } else if (FLAG("--pipeline")) {
      cfg.depth = (size_t)parse_u64(VALUE(), name, 1, 1 << 20);
    } else if (FLAG("--requests")) {
      cfg.requests = parse_u64(VALUE(), name, 1, UINT64_MAX / 2);
      have_requests = true;
    } else if (FLAG("--seconds")) {
      const char *v = VALUE();
      char *end;
      cfg.seconds = strtod(v, &end);
      if (*end || !(cfg.seconds > 0) || cfg.seconds > 86400)
        usage_error("--seconds %s: expected a positive number", v);
      have_seconds = true;
    } else if (FLAG("--mix")) {
      parse_mix(VALUE());
    } else if (FLAG("--keys")) {
      cfg.keys = parse_u64(VALUE(), name, 1, (uint64_t)1 << 32);
    } else if (FLAG("--value-bytes")) {
      cfg.value_bytes = (size_t)parse_u64(VALUE(), name, 0, (uint64_t)1 << 30);
    } else if (FLAG("--put-mode")) {
      const char *v = VALUE();
      if (!strcmp(v, "update"))
        cfg.pmode = PUT_UPDATE;
      else if (!strcmp(v, "fresh"))
        cfg.pmode = PUT_FRESH;
      else if (!strcmp(v, "blind"))
        cfg.pmode = PUT_BLIND;
      else
        usage_error("--put-mode %s: expected update, fresh or blind", v);
    } else if (FLAG("--context")) {
      NOVALUE();
      cfg.pmode = PUT_UPDATE;
    } else if (FLAG("--no-preload")) {
      NOVALUE();
      cfg.preload = false;
    } else if (FLAG("--seed")) {
      cfg.seed = parse_u64(VALUE(), name, 0, UINT64_MAX);
    } else if (FLAG("--timeout-ms")) {
      cfg.timeout_ms = (int)parse_u64(VALUE(), name, 1, 3600000);
    } else if (FLAG("--token-file")) {
      read_token(VALUE());
    } else if (FLAG("--json")) {
      NOVALUE();
      cfg.json = true;
    } else {
      usage_error("unknown option %s", a);
    }
#undef FLAG
#undef NOVALUE
#undef VALUE
  }
  if (have_requests && have_seconds)
    usage_error("%s", "give --requests or --seconds, not both");
  cfg.by_requests = have_requests;
}

/* ---- report ---- */

typedef struct totals {
  samples lat[NOPS], all;
  uint64_t notfound[NOPS];
  uint64_t errs[NOPS][NERR];
  const char *errmsg[NOPS][NERR];
  uint64_t errors, broken, lost;
  uint64_t pl_read, pl_written, pl_errors;
  double pl_seconds, elapsed;
} totals;

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static void json_latency(const samples *s, double elapsed) {
  printf("\"ops\":%zu,\"ops_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
         "\"p999_us\":%.1f",
         s->n, elapsed > 0 ? (double)s->n / elapsed : 0.0, pct_us(s, 0.50),
         pct_us(s, 0.99), pct_us(s, 0.999));
}

static void print_json(const totals *t, worker *ws) {
  printf("{\"host\":");
  json_str(cfg.host);
  printf(",\"port\":%d,\"connections\":%d,\"pipeline\":%zu,", cfg.port,
         cfg.conns, cfg.depth);
  if (cfg.by_requests)
    printf("\"requests\":%" PRIu64 ",\"seconds\":null,", cfg.requests);
  else
    printf("\"requests\":null,\"seconds\":%.3f,", cfg.seconds);
  printf("\"mix\":{\"get\":%u,\"put\":%u,\"incr\":%u},", cfg.weight[OP_GET],
         cfg.weight[OP_PUT], cfg.weight[OP_INCR]);
  printf("\"keys\":%" PRIu64 ",\"value_bytes\":%zu,\"put_mode\":\"%s\","
         "\"seed\":%" PRIu64 ",\"cpus\":%ld,",
         cfg.keys, cfg.value_bytes, put_mode_names[cfg.pmode], cfg.seed,
         sysconf(_SC_NPROCESSORS_ONLN));
  printf("\"preload\":{\"enabled\":%s,\"keys_read\":%" PRIu64
         ",\"keys_written\":%" PRIu64 ",\"errors\":%" PRIu64
         ",\"seconds\":%.3f},",
         cfg.preload ? "true" : "false", t->pl_read, t->pl_written,
         t->pl_errors, t->pl_seconds);
  printf("\"elapsed_s\":%.3f,", t->elapsed);
  json_latency(&t->all, t->elapsed);
  printf(",\"by_op\":{");
  bool first = true;
  for (int op = 0; op < NOPS; op++) {
    if (!cfg.weight[op]) continue;
    printf("%s\"%s\":{", first ? "" : ",", op_names[op]);
    first = false;
    json_latency(&t->lat[op], t->elapsed);
    printf(",\"notfound\":%" PRIu64 ",\"errors\":{", t->notfound[op]);
    bool ef = true;
    for (int e = 1; e < NERR; e++) {
      if (!t->errs[op][e]) continue;
      printf("%s\"%s\":%" PRIu64, ef ? "" : ",", err_slot_name(e),
             t->errs[op][e]);
      ef = false;
    }
    printf("}}");
  }
  printf("},\"errors\":{");
  first = true;
  for (int e = 1; e < NERR; e++) {
    uint64_t n = 0;
    for (int op = 0; op < NOPS; op++)
      n += t->errs[op][e];
    if (!n) continue;
    printf("%s\"%s\":%" PRIu64, first ? "" : ",", err_slot_name(e), n);
    first = false;
  }
  printf("},\"broken_connections\":%" PRIu64 ",\"lost_requests\":%" PRIu64
         ",\"broken\":[",
         t->broken, t->lost);
  first = true;
  for (int i = 0; i < cfg.conns; i++) {
    if (!ws[i].broken) continue;
    printf("%s{\"connection\":%d,\"error\":\"%s\",\"message\":",
           first ? "" : ",", i, kvc_errname(ws[i].broken));
    json_str(ws[i].brokenmsg);
    printf("}");
    first = false;
  }
  printf("]}\n");
}

static void print_row(const char *name, const samples *s, double elapsed,
                      uint64_t notfound, uint64_t errors) {
  printf("%-5s %11zu %12.1f %9.1f %9.1f %9.1f %9" PRIu64 " %9" PRIu64 "\n",
         name, s->n, elapsed > 0 ? (double)s->n / elapsed : 0.0,
         pct_us(s, 0.50), pct_us(s, 0.99), pct_us(s, 0.999), notfound, errors);
}

static void print_header(void) {
  bool v6 = strchr(cfg.host, ':') != NULL;
  printf("kvbench %s%s%s:%d: %d connection%s x pipeline %zu, ", v6 ? "[" : "",
         cfg.host, v6 ? "]" : "", cfg.port, cfg.conns, cfg.conns > 1 ? "s" : "",
         cfg.depth);
  if (cfg.by_requests)
    printf("%" PRIu64 " requests", cfg.requests);
  else
    printf("%.1f s", cfg.seconds);
  printf(", mix get=%u,put=%u,incr=%u, %" PRIu64 " keys, %zu-byte values, "
         "put-mode %s, seed 0x%" PRIx64 ", %ld cpus\n",
         cfg.weight[OP_GET], cfg.weight[OP_PUT], cfg.weight[OP_INCR], cfg.keys,
         cfg.value_bytes, put_mode_names[cfg.pmode], cfg.seed,
         sysconf(_SC_NPROCESSORS_ONLN));
  fflush(stdout);
}

static void print_text(const totals *t, worker *ws) {
  if (cfg.preload)
    printf("preload: %" PRIu64 " keys read, %" PRIu64 " written, %" PRIu64
           " errors, %.2f s (not measured)\n",
           t->pl_read, t->pl_written, t->pl_errors, t->pl_seconds);
  printf("elapsed %.3f s\n", t->elapsed);
  printf("%-5s %11s %12s %9s %9s %9s %9s %9s\n", "op", "ops", "ops/s", "p50 us",
         "p99 us", "p999 us", "notfound", "errors");
  uint64_t nf = 0;
  for (int op = 0; op < NOPS; op++)
    nf += t->notfound[op];
  print_row("all", &t->all, t->elapsed, nf, t->errors);
  for (int op = 0; op < NOPS; op++) {
    if (!cfg.weight[op]) continue;
    uint64_t e = 0;
    for (int k = 1; k < NERR; k++)
      e += t->errs[op][k];
    print_row(op_names[op], &t->lat[op], t->elapsed, t->notfound[op], e);
  }
  if (!t->errors) printf("errors: none\n");
  for (int op = 0; op < NOPS; op++)
    for (int e = 1; e < NERR; e++)
      if (t->errs[op][e])
        printf("error: %-4s %-18s %10" PRIu64 "  (first: %s)\n", op_names[op],
               err_slot_name(e), t->errs[op][e],
               t->errmsg[op][e] ? t->errmsg[op][e] : "");
  for (int i = 0; i < cfg.conns; i++)
    if (ws[i].broken)
      printf("connection %d broke: %s (%s), %" PRIu64
             " requests in flight lost\n",
             i, kvc_errname(ws[i].broken), ws[i].brokenmsg, ws[i].lost);
}

/* Closes the connections and frees what main and the workers allocated.
 * Workers never connected have NULL fields, which every free here accepts. */
static void free_all(worker *ws) {
  for (int i = 0; i < cfg.conns; i++) {
    kvc_close(ws[i].c);
    free(ws[i].ctx);
    free(ws[i].missing);
    for (int op = 0; op < NOPS; op++)
      free(ws[i].lat[op].v);
  }
  if (ctxs) {
    for (uint64_t k = 0; k < cfg.keys; k++)
      free(ctxs[k].data);
    free(ctxs);
  }
  free(ws);
  free(value_buf);
  free(cfg.token);
}

int main(int argc, char **argv) {
  parse_args(argc, argv);

  /* A put with more bytes than a frame can carry is refused by the library
   * before anything is sent, and counted as an error like any other. */
  value_buf = xmalloc(cfg.value_bytes);
  memset(value_buf, 'x', cfg.value_bytes ? cfg.value_bytes : 1);
  run_nonce = (uint32_t)(time(NULL) ^ ((uint64_t)getpid() << 16));

  bool keys_read = cfg.weight[OP_GET] > 0 ||
                   (cfg.weight[OP_PUT] > 0 && cfg.pmode == PUT_UPDATE);
  if (!keys_read) cfg.preload = false;
  if (cfg.weight[OP_PUT] > 0 && cfg.pmode == PUT_UPDATE) {
    ctxs = xcalloc((size_t)cfg.keys, sizeof *ctxs);
    for (int i = 0; i < CTX_LOCKS; i++)
      pthread_mutex_init(&ctx_locks[i], NULL);
  }

  if (!cfg.json) print_header();

  worker *ws = xcalloc((size_t)cfg.conns, sizeof *ws);
  kvc_options opts = {0};
  opts.io_timeout_ms = cfg.timeout_ms;
  opts.token = cfg.token;
  for (int i = 0; i < cfg.conns; i++) {
    worker *w = &ws[i];
    w->id = i;
    w->rng = cfg.seed ^ ((uint64_t)(i + 1) * 0xd1b54a32d192ed03ull);
    w->quota = cfg.by_requests
                   ? cfg.requests / (uint64_t)cfg.conns +
                         ((uint64_t)i < cfg.requests % (uint64_t)cfg.conns)
                   : 0;
    w->ctxcap = 64;
    w->ctx = xmalloc(w->ctxcap);
    int rc = kvc_connect(cfg.host, cfg.port, &opts, &w->c);
    if (rc != KVC_OK) {
      fprintf(stderr, "kvbench: connection %d: %s\n", i, kvc_errmsg(w->c));
      free_all(ws);
      return EXIT_CONN;
    }
  }

  totals t = {0};
  if (cfg.preload) {
    if (!cfg.json) {
      printf("preload: reading %" PRIu64 " keys...\n", cfg.keys);
      fflush(stdout);
    }
    uint64_t p0 = now_ns();
    for (int i = 0; i < cfg.conns; i++)
      pthread_create(&ws[i].th, NULL, preload_main, &ws[i]);
    for (int i = 0; i < cfg.conns; i++) {
      pthread_join(ws[i].th, NULL);
      t.pl_read += ws[i].pl_read;
      t.pl_written += ws[i].pl_written;
      t.pl_errors += ws[i].pl_errors;
    }
    t.pl_seconds = (double)(now_ns() - p0) / 1e9;
  }

  /* Connections broken by the preload sit the run out (reported below). */
  pthread_barrier_init(&start_barrier, NULL, (unsigned)cfg.conns + 1);
  for (int i = 0; i < cfg.conns; i++)
    pthread_create(&ws[i].th, NULL, run_main, &ws[i]);
  uint64_t start = now_ns();
  run_end_ns = start + (uint64_t)(cfg.seconds * 1e9);
  pthread_barrier_wait(&start_barrier);
  uint64_t last = start;
  for (int i = 0; i < cfg.conns; i++) {
    worker *w = &ws[i];
    pthread_join(w->th, NULL);
    if (w->t_last > last) last = w->t_last;
    for (int op = 0; op < NOPS; op++) {
      append_samples(&t.lat[op], &w->lat[op]);
      t.notfound[op] += w->notfound[op];
      for (int e = 1; e < NERR; e++) {
        t.errs[op][e] += w->errs[op][e];
        t.errors += w->errs[op][e];
        if (w->errs[op][e] && !t.errmsg[op][e])
          t.errmsg[op][e] = w->errmsg[op][e];
      }
    }
    if (w->broken) {
      t.broken++;
      t.lost += w->lost;
    }
  }
  t.elapsed = (double)(last - start) / 1e9;
  for (int op = 0; op < NOPS; op++) {
    append_samples(&t.all, &t.lat[op]);
    if (t.lat[op].n) sort_samples(&t.lat[op]);
  }
  sort_samples(&t.all);

  if (cfg.json)
    print_json(&t, ws);
  else
    print_text(&t, ws);
  fflush(stdout);

  for (int op = 0; op < NOPS; op++)
    free(t.lat[op].v);
  free(t.all.v);
  free_all(ws);
  pthread_barrier_destroy(&start_barrier);
  return t.broken ? EXIT_CONN : EXIT_OK;
}
