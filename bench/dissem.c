/*
 * dissem: how fast a write acknowledged by one replica becomes visible on all
 * the others, and what it costs in peer messages.
 *
 * Writes: unique keys (dissem:<run>:<i>), one value each, at a steady rate
 * paced by the clock (write i is due at t0 + i/rate), round-robin over the
 * replicas: write i goes to replica i mod N. One writer thread per replica,
 * one connection each, one put at a time (a put is acknowledged after the
 * replica's commit, fsynced unless that replica runs with sync = none). A put
 * that is still waiting when the next one is due delays it; such late sends
 * are counted.
 *
 * Visibility: one poller thread per replica, with its own connection. Every
 * write acknowledged by another replica joins the poller's pending set at
 * once; the poller sends pipelined gets for every pending key that is due,
 * and a key not yet visible is due again poll-interval (default 500 µs) after
 * its previous get was sent. A key is visible on a replica when a get returns
 * exactly the value written; its visibility time is the moment that answer
 * was decoded (an upper bound: resolution about one poll interval plus one
 * round trip). Latency of write i = max over the other replicas of their
 * visibility time - the time its put was acknowledged.
 *
 * Cost: kvc_status of every replica before the first write and after the
 * last write became visible everywhere (plus --settle seconds, so the acks
 * and later rumor rounds it caused are counted): the sum of
 * peer_messages_sent / peer_bytes_sent deltas, divided by the writes. These
 * counters include anti-entropy exchanges run meanwhile (reported too).
 *
 * Exit status 0 when the run completed, 1 on a connection failure, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "client/kvclient.h"

#define MAXN 32
#define DEFAULT_SEED 0x5eedULL
#define MAX_BATCH 512

static const char usage_text[] =
    "usage: dissem [options]\n"
    "\n"
    "Writes unique keys at a steady rate, round-robin over N replicas, and\n"
    "polls every other replica until each write is visible there. Reports\n"
    "ack-to-visible-on-all latency and peer messages/bytes per write.\n"
    "\n"
    "  -h H:P[,H:P...]      the replicas (or --base-port/--nodes)\n"
    "  --base-port P        replicas at 127.0.0.1:P+10(k-1) (kvctl cluster)\n"
    "  --nodes N            with --base-port (default 5)\n"
    "  --rate R             writes per second in total (default 1000)\n"
    "  --seconds D          writing time (default 20)\n"
    "  --value-bytes B      value size (default 100)\n"
    "  --poll-us U          least time between two gets of one pending key\n"
    "                       on one replica (default 500)\n"
    "  --drain S            after the last write, wait at most S s for the\n"
    "                       pending keys (default 10)\n"
    "  --settle S           then wait S s before the final status (default "
    "2)\n"
    "  --wait-alive S       first wait up to S s until every replica sees\n"
    "                       all the others alive (default 20)\n"
    "  --seed S             value sequence seed (default 0x5eed)\n"
    "  --label TEXT         printed with the results\n"
    "  --csv FILE           one row per write: index, origin replica, times\n"
    "                       since the start (us) of its ack, put latency and\n"
    "                       ack-to-visible-on-all (-1: never seen)\n"
    "  --help               this text\n";

static struct {
  char host[MAXN][128];
  int port[MAXN];
  int n;
  double rate, seconds, drain, settle, wait_alive;
  size_t value_bytes;
  uint64_t poll_ns;
  uint64_t seed;
  const char *label;
  const char *csv;
} cfg = {
    .rate = 1000,
    .seconds = 20,
    .drain = 10,
    .settle = 2,
    .wait_alive = 20,
    .value_bytes = 100,
    .poll_ns = 500000,
    .seed = DEFAULT_SEED,
    .label = "",
};

typedef struct wrec {
  uint64_t sched_ns, sent_ns, ack_ns;
  int status; /* put result; 1 = not sent */
  _Atomic uint64_t vis_ns[MAXN];
} wrec;

static wrec *recs;
static uint64_t nrecs;
static uint32_t run_tag;
static uint64_t t0;
static atomic_bool writers_done;
static atomic_uint writers_left;
static uint64_t drain_deadline_ns; /* set when writers finish */

typedef struct inbox {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t *v;
  size_t n, cap;
} inbox;

typedef struct node {
  int idx;
  kvc_conn *wc, *pc; /* writer and poller connections */
  pthread_t wt, pt;
  inbox in;
  uint64_t late, put_errors, gets, polls_batches;
  bool broken;
  samples put_lat;
} node;

static node nodes[MAXN];

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "dissem: out of memory\n");
    exit(1);
  }
  return p;
}

static void usage_error(const char *msg, const char *arg) {
  fprintf(stderr, "dissem: ");
  fprintf(stderr, msg, arg);
  fputs("\nTry 'dissem --help'.\n", stderr);
  exit(2);
}

static int keyname(char *buf, uint64_t i) {
  return snprintf(buf, 64, "dissem:%08x:%09" PRIu64, run_tag, i);
}

static void value_of(uint8_t *v, uint64_t i) {
  uint64_t s = cfg.seed ^ (i * 0x9e3779b97f4a7c15ull);
  for (size_t j = 0; j < cfg.value_bytes; j++) {
    uint64_t x = bench_rng(&s);
    v[j] = (uint8_t)('a' + x % 26);
  }
  /* The index in front makes every value distinct. */
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%" PRIu64 ":", i);
  memcpy(v, tmp, (size_t)n < cfg.value_bytes ? (size_t)n : cfg.value_bytes);
}

static void sleep_until(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void inbox_push(inbox *b, uint64_t i) {
  pthread_mutex_lock(&b->mu);
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 1024;
    b->v = realloc(b->v, b->cap * sizeof *b->v);
    if (!b->v) {
      fprintf(stderr, "dissem: out of memory\n");
      exit(1);
    }
  }
  b->v[b->n++] = i;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* ---- writers ---- */

static void *writer_main(void *arg) {
  node *nd = arg;
  uint8_t *v = xmalloc(cfg.value_bytes);
  char k[64];
  for (uint64_t i = (uint64_t)nd->idx; i < nrecs; i += (uint64_t)cfg.n) {
    wrec *r = &recs[i];
    sleep_until(r->sched_ns);
    int kl = keyname(k, i);
    value_of(v, i);
    r->sent_ns = bench_now_ns();
    if (r->sent_ns > r->sched_ns + 1000000) nd->late++;
    int rc = kvc_put(nd->wc, k, (size_t)kl, v, cfg.value_bytes, NULL, 0);
    r->ack_ns = bench_now_ns();
    r->status = rc;
    if (rc != KVC_OK) {
      nd->put_errors++;
      if (kvc_conn_error(nd->wc) != KVC_OK) {
        fprintf(stderr, "dissem: writer %d: %s\n", nd->idx + 1,
                kvc_errmsg(nd->wc));
        nd->broken = true;
        break;
      }
      continue;
    }
    add_sample(&nd->put_lat, r->ack_ns - r->sent_ns);
    for (int j = 0; j < cfg.n; j++)
      if (j != nd->idx) inbox_push(&nodes[j].in, i);
  }
  free(v);
  if (atomic_fetch_sub(&writers_left, 1) == 1) {
    drain_deadline_ns = bench_now_ns() + (uint64_t)(cfg.drain * 1e9);
    atomic_store(&writers_done, true);
    for (int j = 0; j < cfg.n; j++) {
      pthread_mutex_lock(&nodes[j].in.mu);
      pthread_cond_signal(&nodes[j].in.cv);
      pthread_mutex_unlock(&nodes[j].in.mu);
    }
  }
  return NULL;
}

/* ---- pollers ---- */

typedef struct pend {
  uint64_t i, due_ns;
} pend;

static void *poller_main(void *arg) {
  node *nd = arg;
  int me = nd->idx;
  pend *p = NULL;
  size_t np = 0, capp = 0;
  uint64_t batch[MAX_BATCH];
  size_t bpos[MAX_BATCH];
  uint8_t *v = xmalloc(cfg.value_bytes);
  char k[64];
  for (;;) {
    uint64_t now = bench_now_ns();
    /* Take new arrivals; wait when nothing is due. */
    pthread_mutex_lock(&nd->in.mu);
    uint64_t next_due = UINT64_MAX;
    for (size_t j = 0; j < np; j++)
      if (p[j].due_ns < next_due) next_due = p[j].due_ns;
    while (nd->in.n == 0 && next_due > now) {
      if (atomic_load(&writers_done) &&
          (np == 0 || now >= drain_deadline_ns))
        break;
      uint64_t until = next_due;
      if (atomic_load(&writers_done) && drain_deadline_ns < until)
        until = drain_deadline_ns;
      if (until == UINT64_MAX) until = now + 100000000; /* 100 ms */
      struct timespec ts = {(time_t)(until / 1000000000u),
                            (long)(until % 1000000000u)};
      pthread_cond_timedwait(&nd->in.cv, &nd->in.mu, &ts);
      now = bench_now_ns();
    }
    for (size_t j = 0; j < nd->in.n; j++) {
      if (np == capp) {
        capp = capp ? capp * 2 : 1024;
        p = realloc(p, capp * sizeof *p);
        if (!p) {
          fprintf(stderr, "dissem: out of memory\n");
          exit(1);
        }
      }
      p[np].i = nd->in.v[j];
      p[np].due_ns = now;
      np++;
    }
    nd->in.n = 0;
    pthread_mutex_unlock(&nd->in.mu);
    if (atomic_load(&writers_done) && (np == 0 || now >= drain_deadline_ns))
      break;
    /* One pipelined batch of every due key. */
    size_t nb = 0;
    for (size_t j = 0; j < np && nb < MAX_BATCH; j++)
      if (p[j].due_ns <= now) {
        bpos[nb] = j;
        batch[nb++] = p[j].i;
      }
    if (!nb) continue;
    uint64_t sent = bench_now_ns();
    for (size_t j = 0; j < nb; j++) {
      int kl = keyname(k, batch[j]);
      if (kvc_send_get(nd->pc, k, (size_t)kl, NULL) != KVC_OK) {
        nd->broken = true;
        break;
      }
    }
    if (nd->broken) break;
    nd->polls_batches++;
    for (size_t j = 0; j < nb; j++) {
      kvc_result *r;
      if (kvc_recv(nd->pc, &r) != KVC_OK) {
        fprintf(stderr, "dissem: poller %d: %s\n", me + 1, kvc_errmsg(nd->pc));
        nd->broken = true;
        break;
      }
      uint64_t got = bench_now_ns();
      nd->gets++;
      bool seen = false;
      if (kvc_result_error(r) == KVC_OK) {
        value_of(v, batch[j]);
        for (size_t s = 0; s < kvc_result_siblings(r); s++) {
          const uint8_t *d;
          size_t len;
          if (kvc_result_sibling(r, s, &d, &len) == KVC_OK &&
              len == cfg.value_bytes && !memcmp(d, v, len))
            seen = true;
        }
      }
      kvc_result_free(r);
      if (seen) {
        atomic_store(&recs[batch[j]].vis_ns[me], got);
        p[bpos[j]].due_ns = UINT64_MAX; /* removed below */
      } else {
        p[bpos[j]].due_ns = sent + cfg.poll_ns;
      }
    }
    if (nd->broken) break;
    size_t w = 0;
    for (size_t j = 0; j < np; j++)
      if (p[j].due_ns != UINT64_MAX) p[w++] = p[j];
    np = w;
  }
  free(p);
  free(v);
  return NULL;
}

/* ---- status ---- */

typedef struct snap {
  uint64_t msgs, bytes, msgs_recv, bytes_recv, exchanges, rumors_added,
      rumors_pushed, acks, dropped, keys_pushed, keys_pulled, commits, writes;
  int alive, npeers;
  bool ok;
} snap;

static snap take_status(int j) {
  snap s = {0};
  kvc_options o = {0};
  o.io_timeout_ms = 10000;
  kvc_conn *c;
  kvc_result *r = NULL;
  if (kvc_connect(cfg.host[j], cfg.port[j], &o, &c) == KVC_OK &&
      kvc_status(c, &r) == KVC_OK) {
    const kvc_status_info *st = kvc_result_status_info(r);
    if (st) {
      s.ok = true;
      s.msgs = st->peer_messages_sent;
      s.bytes = st->peer_bytes_sent;
      s.msgs_recv = st->peer_messages_received;
      s.bytes_recv = st->peer_bytes_received;
      s.rumors_added = st->rumors_added;
      s.rumors_pushed = st->rumors_pushed;
      s.acks = st->rumor_acks;
      s.dropped = st->rumors_dropped;
      s.npeers = (int)st->npeers;
      s.commits = st->commits;
      s.writes = st->writes;
      for (size_t p = 0; p < st->npeers; p++) {
        s.exchanges += st->peers[p].exchanges;
        s.keys_pushed += st->peers[p].keys_pushed;
        s.keys_pulled += st->peers[p].keys_pulled;
        s.alive += st->peers[p].alive;
      }
    }
  }
  kvc_result_free(r);
  kvc_close(c);
  return s;
}

/* ---- arguments ---- */

static void add_host(const char *s, size_t len) {
  if (cfg.n == MAXN) usage_error("at most 32 replicas%s", "");
  char buf[160];
  if (len >= sizeof buf) usage_error("address too long%s", "");
  memcpy(buf, s, len);
  buf[len] = 0;
  char *colon = strrchr(buf, ':');
  if (!colon || colon == buf || colon - buf >= 128)
    usage_error("%s: expected HOST:PORT", buf);
  *colon = 0;
  memcpy(cfg.host[cfg.n], buf, (size_t)(colon - buf) + 1);
  cfg.port[cfg.n] = atoi(colon + 1);
  if (cfg.port[cfg.n] <= 0 || cfg.port[cfg.n] > 65535)
    usage_error("%s: bad port", colon + 1);
  cfg.n++;
}

static double parse_num(const char *v, const char *name) {
  char *end;
  double d = strtod(v, &end);
  if (*end || !*v || !(d >= 0)) usage_error("bad value for %s", name);
  return d;
}

static void parse_args(int argc, char **argv) {
  int base = 0, nn = 5;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help")) {
      fputs(usage_text, stdout);
      exit(0);
    }
    if (i + 1 >= argc) usage_error("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "-h")) {
      for (const char *s = v; *s;) {
        size_t len = strcspn(s, ",");
        add_host(s, len);
        s += len;
        if (*s) s++;
      }
    } else if (!strcmp(a, "--base-port"))
      base = (int)parse_num(v, a);
    else if (!strcmp(a, "--nodes"))
      nn = (int)parse_num(v, a);
    else if (!strcmp(a, "--rate"))
      cfg.rate = parse_num(v, a);
    else if (!strcmp(a, "--seconds"))
      cfg.seconds = parse_num(v, a);
    else if (!strcmp(a, "--value-bytes"))
      cfg.value_bytes = (size_t)parse_num(v, a);
    else if (!strcmp(a, "--poll-us"))
      cfg.poll_ns = (uint64_t)(parse_num(v, a) * 1000);
    else if (!strcmp(a, "--drain"))
      cfg.drain = parse_num(v, a);
    else if (!strcmp(a, "--wait-alive"))
      cfg.wait_alive = parse_num(v, a);
    else if (!strcmp(a, "--settle"))
      cfg.settle = parse_num(v, a);
    else if (!strcmp(a, "--seed"))
      cfg.seed = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--label"))
      cfg.label = v;
    else if (!strcmp(a, "--csv"))
      cfg.csv = v;
    else
      usage_error("unknown option %s", a);
  }
  if (base) {
    if (nn < 2 || nn > MAXN) usage_error("--nodes: 2 to 32%s", "");
    for (int k = 0; k < nn; k++) {
      char buf[64];
      int len = snprintf(buf, sizeof buf, "127.0.0.1:%d", base + 10 * k);
      add_host(buf, (size_t)len);
    }
  }
  if (cfg.n < 2) usage_error("need at least 2 replicas%s", "");
  if (!(cfg.rate > 0) || !(cfg.seconds > 0))
    usage_error("--rate and --seconds must be positive%s", "");
  if (cfg.value_bytes < 24) usage_error("--value-bytes: at least 24%s", "");
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  run_tag = (uint32_t)(time(NULL) ^ ((uint64_t)getpid() << 16));
  nrecs = (uint64_t)(cfg.rate * cfg.seconds);
  recs = calloc(nrecs ? nrecs : 1, sizeof *recs);
  if (!recs) {
    fprintf(stderr, "dissem: out of memory\n");
    return 1;
  }
  kvc_options o = {0};
  o.io_timeout_ms = 10000;
  for (int j = 0; j < cfg.n; j++) {
    node *nd = &nodes[j];
    nd->idx = j;
    pthread_mutex_init(&nd->in.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&nd->in.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (kvc_connect(cfg.host[j], cfg.port[j], &o, &nd->wc) != KVC_OK ||
        kvc_connect(cfg.host[j], cfg.port[j], &o, &nd->pc) != KVC_OK) {
      fprintf(stderr, "dissem: replica %d (%s:%d): %s\n", j + 1, cfg.host[j],
              cfg.port[j],
              kvc_errmsg(kvc_conn_error(nd->wc) ? nd->wc : nd->pc));
      return 1;
    }
  }
  snap before[MAXN], after[MAXN];
  /* Every replica must see all the others alive before timing starts. */
  uint64_t wait_end = bench_now_ns() + (uint64_t)(cfg.wait_alive * 1e9);
  for (;;) {
    int ready = 0;
    for (int j = 0; j < cfg.n; j++) {
      snap s = take_status(j);
      if (s.ok && s.alive >= cfg.n - 1) ready++;
    }
    if (ready == cfg.n) break;
    if (bench_now_ns() > wait_end) {
      fprintf(stderr,
              "dissem: after %.0f s only %d of %d replicas see all %d peers "
              "alive\n",
              cfg.wait_alive, ready, cfg.n, cfg.n - 1);
      return 1;
    }
    sleep_until(bench_now_ns() + 100000000);
  }
  for (int j = 0; j < cfg.n; j++) {
    before[j] = take_status(j);
    if (!before[j].ok) {
      fprintf(stderr, "dissem: status of replica %d failed\n", j + 1);
      return 1;
    }
  }
  printf("dissem%s%s: %d replicas, %.0f writes/s for %.0f s (%" PRIu64
         " writes), %zu-byte values, round-robin, seed 0x%" PRIx64 "\n",
         *cfg.label ? " " : "", cfg.label, cfg.n, cfg.rate, cfg.seconds, nrecs,
         cfg.value_bytes, cfg.seed);
  printf("polling: one connection per replica, pipelined gets of every "
         "pending key; a key is re-polled at most every %.0f us per replica; "
         "visible = the get answer showing the value was decoded\n",
         (double)cfg.poll_ns / 1e3);
  fflush(stdout);

  t0 = bench_now_ns() + 50000000; /* 50 ms from now */
  for (uint64_t i = 0; i < nrecs; i++) {
    recs[i].sched_ns = t0 + (uint64_t)((double)i * 1e9 / cfg.rate);
    recs[i].status = 1;
  }
  atomic_store(&writers_left, (unsigned)cfg.n);
  for (int j = 0; j < cfg.n; j++) {
    pthread_create(&nodes[j].pt, NULL, poller_main, &nodes[j]);
    pthread_create(&nodes[j].wt, NULL, writer_main, &nodes[j]);
  }
  for (int j = 0; j < cfg.n; j++)
    pthread_join(nodes[j].wt, NULL);
  uint64_t writes_end = bench_now_ns();
  for (int j = 0; j < cfg.n; j++)
    pthread_join(nodes[j].pt, NULL);
  uint64_t drained = bench_now_ns();
  sleep_until(drained + (uint64_t)(cfg.settle * 1e9));
  for (int j = 0; j < cfg.n; j++)
    after[j] = take_status(j);

  /* ---- results ---- */
  samples all = {0}, first = {0}, puts = {0};
  uint64_t acked = 0, invisible = 0, late = 0, put_err = 0, gets = 0;
  bool broken = false;
  for (int j = 0; j < cfg.n; j++) {
    late += nodes[j].late;
    put_err += nodes[j].put_errors;
    gets += nodes[j].gets;
    broken |= nodes[j].broken;
    append_samples(&puts, &nodes[j].put_lat);
  }
  FILE *csv = cfg.csv ? fopen(cfg.csv, "w") : NULL;
  if (cfg.csv && !csv) fprintf(stderr, "dissem: cannot write %s\n", cfg.csv);
  if (csv) fprintf(csv, "i,origin,ack_us,put_us,visible_all_us\n");
  for (uint64_t i = 0; i < nrecs; i++) {
    wrec *r = &recs[i];
    if (r->status != KVC_OK) continue;
    acked++;
    int origin = (int)(i % (uint64_t)cfg.n);
    uint64_t mx = 0, mn = UINT64_MAX;
    bool all_seen = true;
    for (int j = 0; j < cfg.n; j++) {
      if (j == origin) continue;
      uint64_t t = atomic_load(&r->vis_ns[j]);
      if (!t) {
        all_seen = false;
        continue;
      }
      if (t > mx) mx = t;
      if (t < mn) mn = t;
    }
    if (mn != UINT64_MAX) add_sample(&first, mn - r->ack_ns);
    if (all_seen)
      add_sample(&all, mx - r->ack_ns);
    else
      invisible++;
    if (csv)
      fprintf(csv, "%" PRIu64 ",%d,%.0f,%.0f,%.0f\n", i, origin + 1,
              (double)(r->ack_ns - t0) / 1e3,
              (double)(r->ack_ns - r->sent_ns) / 1e3,
              all_seen ? (double)(mx - r->ack_ns) / 1e3 : -1.0);
  }
  if (csv) fclose(csv);
  sort_samples(&all);
  sort_samples(&first);
  sort_samples(&puts);
  snap d = {0};
  int status_ok = 1;
  for (int j = 0; j < cfg.n; j++) {
    if (!after[j].ok) status_ok = 0;
    d.msgs += after[j].msgs - before[j].msgs;
    d.bytes += after[j].bytes - before[j].bytes;
    d.exchanges += after[j].exchanges - before[j].exchanges;
    d.rumors_added += after[j].rumors_added - before[j].rumors_added;
    d.rumors_pushed += after[j].rumors_pushed - before[j].rumors_pushed;
    d.acks += after[j].acks - before[j].acks;
    d.dropped += after[j].dropped - before[j].dropped;
    d.keys_pushed += after[j].keys_pushed - before[j].keys_pushed;
    d.keys_pulled += after[j].keys_pulled - before[j].keys_pulled;
    d.commits += after[j].commits - before[j].commits;
    d.writes += after[j].writes - before[j].writes;
  }
  double span = (double)(writes_end - t0) / 1e9;
  double window = (double)(after[0].ok ? bench_now_ns() - t0 : 0) / 1e9;
  printf("writes: %" PRIu64 " acknowledged in %.2f s (%.0f/s), %" PRIu64
         " put errors, %" PRIu64 " sent more than 1 ms late\n",
         acked, span, (double)acked / span, put_err, late);
  printf("put ack latency us: p50 %.0f  p99 %.0f  p999 %.0f  max %.0f\n",
         pct_us(&puts, .50), pct_us(&puts, .99), pct_us(&puts, .999),
         pct_us(&puts, 1));
  printf("ack -> visible on ALL other replicas, us (%zu writes): p50 %.0f  "
         "p99 %.0f  p999 %.0f  max %.0f\n",
         all.n, pct_us(&all, .50), pct_us(&all, .99), pct_us(&all, .999),
         pct_us(&all, 1));
  printf("ack -> visible on the FIRST other replica, us: p50 %.0f  p99 %.0f  "
         "max %.0f\n",
         pct_us(&first, .50), pct_us(&first, .99), pct_us(&first, 1));
  printf("not visible everywhere within the %.0f s drain: %" PRIu64 "\n",
         cfg.drain, invisible);
  printf("polling: %" PRIu64 " gets (%.1f per write)\n", gets,
         acked ? (double)gets / (double)acked : 0);
  if (status_ok && acked) {
    printf("peer traffic over %.1f s (writes + drain + %.0f s settle), all "
           "replicas:\n",
           window, cfg.settle);
    printf("  messages sent %" PRIu64 " = %.2f per write; bytes sent %" PRIu64
           " = %.0f per write\n",
           d.msgs, (double)d.msgs / (double)acked, d.bytes,
           (double)d.bytes / (double)acked);
    printf("  rumors added %" PRIu64 ", pushed %" PRIu64 ", acks %" PRIu64
           ", dropped %" PRIu64 "; anti-entropy exchanges %" PRIu64
           " (keys pushed %" PRIu64 ", pulled %" PRIu64 ")\n",
           d.rumors_added, d.rumors_pushed, d.acks, d.dropped, d.exchanges,
           d.keys_pushed, d.keys_pulled);
    printf("  store: %.2f write requests and %.2f commits per write, summed "
           "over the replicas (merges of rumors included)\n",
           (double)d.writes / (double)acked, (double)d.commits / (double)acked);
  } else {
    printf("peer traffic: final status unavailable\n");
  }
  printf("RESULT label=%s writes=%" PRIu64 " p50_us=%.0f p99_us=%.0f "
         "p999_us=%.0f max_us=%.0f invisible=%" PRIu64
         " msgs_per_write=%.2f bytes_per_write=%.0f ae_exchanges=%" PRIu64
         " late=%" PRIu64 " put_p50_us=%.0f put_p99_us=%.0f gets=%" PRIu64
         " first_p50_us=%.0f first_p99_us=%.0f commits_per_write=%.2f\n",
         *cfg.label ? cfg.label : "-", acked, pct_us(&all, .50),
         pct_us(&all, .99), pct_us(&all, .999), pct_us(&all, 1), invisible,
         acked ? (double)d.msgs / (double)acked : 0,
         acked ? (double)d.bytes / (double)acked : 0, d.exchanges, late,
         pct_us(&puts, .50), pct_us(&puts, .99), gets, pct_us(&first, .50),
         pct_us(&first, .99),
         acked ? (double)d.commits / (double)acked : 0);
  for (int j = 0; j < cfg.n; j++) {
    kvc_close(nodes[j].wc);
    kvc_close(nodes[j].pc);
    free(nodes[j].put_lat.v);
    free(nodes[j].in.v);
  }
  free(all.v);
  free(first.v);
  free(puts.v);
  free(recs);
  return broken ? 1 : 0;
}
