/*
 * The metrics endpoint (see metrics.h for the threads and the handoff): the
 * loop thread's counters and snapshot copy, and the libmicrohttpd handler
 * that renders a snapshot as Prometheus text (format 0.0.4) or /health JSON.
 * Everything below "HTTP thread" reads only its own copy of a snapshot and
 * the auth token's hash, which is fixed before the endpoint starts.
 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"
#include "server/server.h"

struct kvd_metrics {
  kvd *srv;
  struct MHD_Daemon *d;
  uv_async_t refresh; /* the HTTP thread's "copy the figures now" */
  pthread_mutex_t mu;
  pthread_cond_t cv;     /* on CLOCK_MONOTONIC; signalled by every copy */
  kvd_metrics_snap snap; /* guarded by mu */
  bool closing;          /* guarded by mu: no more uv_async_send */
  bool stopped;          /* loop thread */
};

static const char *const mop_names[] = {
#define KVD_MOP_NAME(name, label) label,
    KVD_MOPS(KVD_MOP_NAME)
#undef KVD_MOP_NAME
};

const char *kvd_mop_name(int op) {
  return op >= 0 && op < KVD_NMOPS ? mop_names[op] : mop_names[0];
}

/* Histogram bounds in microseconds, per kvd_hist_kind. */
static const uint64_t request_bounds[] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const uint64_t ae_bounds[] = {
    1000,   2500,    5000,    10000,   25000,    50000,    100000,  250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

static const uint64_t *bounds_of(kvd_hist_kind kind, size_t *n) {
  if (kind == KVD_HIST_AE) {
    *n = sizeof ae_bounds / sizeof ae_bounds[0];
    return ae_bounds;
  }
  *n = sizeof request_bounds / sizeof request_bounds[0];
  return request_bounds;
}

void kvd_hist_add(kvd_hist *h, kvd_hist_kind kind, uint64_t us) {
  size_t n, i = 0;
  const uint64_t *b = bounds_of(kind, &n);
  while (i < n && us > b[i])
    i++;
  h->b[i]++;
  h->count++;
  h->sum_us += us;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- loop thread: counting ---- */

void kvd_metrics_request(kvd *srv, int proto, int op, uint64_t us) {
  if (op < 0 || op >= KVD_NMOPS) op = KVD_MOP_INVALID;
  kvd_hist_add(&srv->counters.ops[proto == KVD_RESP][op], KVD_HIST_REQUEST, us);
}

void kvd_metrics_error(kvd *srv, int err) {
  if (err == KV_OK || err == KV_NOTFOUND) return;
  int slot = -err;
  if (slot <= 0 || slot >= KVD_NERR_SLOTS) slot = -KV_IO; /* as on the wire */
  srv->counters.errors[slot]++;
}

void kvd_metrics_ratelimited(kvd *srv, const char *what) {
  kvd_counters *c = &srv->counters;
  size_t i;
  for (i = 0; i < c->nratelimit; i++)
    if (!strncmp(c->ratelimit_what[i], what, sizeof c->ratelimit_what[i] - 1))
      break;
  if (i == c->nratelimit) {
    /* The last slot is kept for "other". */
    if (c->nratelimit < KVD_RATELIMIT_KINDS - 1) {
      snprintf(c->ratelimit_what[i], sizeof c->ratelimit_what[i], "%s", what);
      c->nratelimit++;
    } else {
      i = KVD_RATELIMIT_KINDS - 1;
      snprintf(c->ratelimit_what[i], sizeof c->ratelimit_what[i], "other");
    }
  }
  c->ratelimit_hits[i]++;
}

/* ---- loop thread: the snapshot ---- */

/* Copies every figure into s (the caller holds the mutex). */
static void collect(kvd *srv, kvd_metrics_snap *s) {
  s->gen++;
  s->took_ms = mono_ms();
  snprintf(s->name, sizeof s->name, "%s", srv->cfg->name);
  snprintf(s->version, sizeof s->version, "%s", KV_VERSION);
  s->replica_id = kv_store_replica_id(srv->store);
  s->stopping = srv->stopping;
  kv_store_stats st;
  int rc = kv_store_stats_get(srv->store, &st);
  if (rc == KV_OK) s->store = st;
  s->store_ok = rc == KV_OK && !st.failing;
  uint64_t now = wall_ms();
  s->uptime_ms = now > srv->start_ms ? now - srv->start_ms : 0;
  s->conns = srv->nconns;
  s->conns_total = srv->stats.connections;
  s->conns_rejected = srv->stats.rejected_connections;
  s->c = srv->counters;
  kvd_peers_metrics(srv, &s->peers);
}

static void on_refresh(uv_async_t *a) {
  kvd_metrics *m = a->data;
  pthread_mutex_lock(&m->mu);
  collect(m->srv, &m->snap);
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
}

void kvd_metrics_refresh(kvd *srv) {
  if (srv->metrics && !srv->metrics->stopped)
    on_refresh(&srv->metrics->refresh);
}

/* ---- HTTP thread: rendering ---- */

typedef struct text {
  char *p;
  size_t len, cap;
} text;

static void tprintf(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tprintf(text *t, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    t->cap = t->cap * 2 + (size_t)n + 1;
    t->p = kv_realloc(t->p, t->cap);
  }
}

/* Escapes a label value (backslash, quote, newline) into out. */
static const char *label_escape(const char *v, char *out, size_t cap) {
  size_t n = 0;
  for (; *v && n + 3 < cap; v++) {
    if (*v == '\\' || *v == '"') out[n++] = '\\';
    if (*v == '\n') {
      out[n++] = '\\';
      out[n++] = 'n';
      continue;
    }
    out[n++] = *v;
  }
  out[n] = 0;
  return out;
}

static void meta(text *t, const char *name, const char *type,
                 const char *help) {
  tprintf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample; labels is "" or "a=\"x\",b=\"y\"". */
static void sample(text *t, const char *name, const char *labels, uint64_t v) {
  if (*labels)
    tprintf(t, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
  else
    tprintf(t, "%s %llu\n", name, (unsigned long long)v);
}

static void sample_f(text *t, const char *name, const char *labels, double v) {
  if (*labels)
    tprintf(t, "%s{%s} %.6f\n", name, labels, v);
  else
    tprintf(t, "%s %.6f\n", name, v);
}

/* A histogram's samples from per-bucket counts b[0..nb] (b[nb] above the
 * last bound); bounds and sum are divided by scale (1e6: microseconds to
 * seconds; 1: plain counts). */
static void histogram(text *t, const char *name, const char *labels,
                      const uint64_t *bounds, size_t nb, const uint64_t *b,
                      uint64_t sum, double scale) {
  const char *sep = *labels ? "," : "";
  uint64_t cum = 0;
  for (size_t i = 0; i < nb; i++) {
    cum += b[i];
    tprintf(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
            (double)bounds[i] / scale, (unsigned long long)cum);
  }
  cum += b[nb];
  tprintf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
          (unsigned long long)cum);
  char sname[128], cname[128];
  snprintf(sname, sizeof sname, "%s_sum", name);
  snprintf(cname, sizeof cname, "%s_count", name);
  sample_f(t, sname, labels, (double)sum / scale);
  sample(t, cname, labels, cum);
}

static void kvd_histogram(text *t, const char *name, const char *labels,
                          const kvd_hist *h, kvd_hist_kind kind) {
  size_t nb;
  const uint64_t *bounds = bounds_of(kind, &nb);
  histogram(t, name, labels, bounds, nb, h->b, h->sum_us, 1e6);
}

/* Operations always shown, even before their first request, so that
 * dashboards and rate() see a series from the start. */
static bool core_op(int op) {
  return op == KVD_MOP_GET || op == KVD_MOP_PUT || op == KVD_MOP_DEL ||
         op == KVD_MOP_INCR || op == KVD_MOP_SCAN || op == KVD_MOP_STATUS;
}

static const char *const proto_names[2] = {"native", "resp"};

static void render_requests(text *t, const kvd_metrics_snap *s) {
  char l[128];
  meta(t, "epikv_requests_total", "counter",
       "Client requests answered, by protocol and operation.");
  for (int p = 0; p < 2; p++)
    for (int op = 0; op < KVD_NMOPS; op++)
      if (core_op(op) || s->c.ops[p][op].count) {
        snprintf(l, sizeof l, "proto=\"%s\",op=\"%s\"", proto_names[p],
                 kvd_mop_name(op));
        sample(t, "epikv_requests_total", l, s->c.ops[p][op].count);
      }
  meta(t, "epikv_request_duration_seconds", "histogram",
       "Time from a request's arrival to its reply, by protocol and "
       "operation.");
  for (int p = 0; p < 2; p++)
    for (int op = 0; op < KVD_NMOPS; op++)
      if (core_op(op) || s->c.ops[p][op].count) {
        snprintf(l, sizeof l, "proto=\"%s\",op=\"%s\"", proto_names[p],
                 kvd_mop_name(op));
        kvd_histogram(t, "epikv_request_duration_seconds", l, &s->c.ops[p][op],
                      KVD_HIST_REQUEST);
      }
  meta(t, "epikv_errors_total", "counter",
       "Error replies to clients, by error code (NOTFOUND is not an "
       "error).");
  for (int slot = 1; slot < KVD_NERR_SLOTS; slot++) {
    const char *name = kv_err_name(-slot);
    if (!strcmp(name, "UNKNOWN") || -slot == KV_NOTFOUND || -slot == KV_AGAIN)
      continue;
    snprintf(l, sizeof l, "code=\"%s\"", name);
    sample(t, "epikv_errors_total", l, s->c.errors[slot]);
  }
  meta(t, "epikv_connections", "gauge", "Client connections open now.");
  sample(t, "epikv_connections", "", s->conns);
  meta(t, "epikv_connections_total", "counter", "Client connections accepted.");
  sample(t, "epikv_connections_total", "", s->conns_total);
  meta(t, "epikv_connections_rejected_total", "counter",
       "Client connections refused (max-clients, shutting down).");
  sample(t, "epikv_connections_rejected_total", "", s->conns_rejected);
  meta(t, "epikv_ratelimited_total", "counter",
       "Requests or connections turned away by a rate limit, by limit.");
  for (size_t i = 0; i < KVD_RATELIMIT_KINDS; i++) {
    if (!s->c.ratelimit_hits[i]) continue;
    char v[64];
    snprintf(l, sizeof l, "what=\"%s\"",
             label_escape(s->c.ratelimit_what[i], v, sizeof v));
    sample(t, "epikv_ratelimited_total", l, s->c.ratelimit_hits[i]);
  }
}

static void render_store(text *t, const kvd_metrics_snap *s) {
  const kv_store_stats *st = &s->store;
  meta(t, "epikv_keys", "gauge", "Live keys (deleted ones not counted).");
  sample(t, "epikv_keys", "", st->keys);
  meta(t, "epikv_lmdb_map_size_bytes", "gauge",
       "LMDB map size: the most data the store can hold.");
  sample(t, "epikv_lmdb_map_size_bytes", "", st->map_size);
  meta(t, "epikv_lmdb_map_used_bytes", "gauge", "LMDB map bytes in use.");
  sample(t, "epikv_lmdb_map_used_bytes", "", st->map_used);
  meta(t, "epikv_store_commits_total", "counter",
       "Write transactions committed (group commits).");
  sample(t, "epikv_store_commits_total", "", st->commits);
  meta(t, "epikv_store_writes_total", "counter",
       "Write requests completed by the writer (clients' and peers').");
  sample(t, "epikv_store_writes_total", "", st->writes);
  meta(t, "epikv_store_txn_failures_total", "counter",
       "Write transactions failed by a storage error other than a full map.");
  sample(t, "epikv_store_txn_failures_total", "", st->txn_failures);
  static const uint64_t cb[] = KV_STORE_COMMIT_BOUNDS_US;
  static const uint64_t bb[] = KV_STORE_BATCH_BOUNDS;
  meta(t, "epikv_store_commit_duration_seconds", "histogram",
       "Time LMDB took to commit a write transaction (the fsync, with sync "
       "on).");
  histogram(t, "epikv_store_commit_duration_seconds", "", cb,
            KV_STORE_COMMIT_BUCKETS, st->commit_us, st->commit_us_sum, 1e6);
  meta(t, "epikv_store_batch_size", "histogram",
       "Write requests per committed transaction.");
  histogram(t, "epikv_store_batch_size", "", bb, KV_STORE_BATCH_BUCKETS,
            st->batch, st->batch_sum, 1);
}

static void render_peers(text *t, const kvd_metrics_snap *s) {
  const kvd_peers_snap *p = &s->peers;
  char l[128];
  meta(t, "epikv_peering", "gauge", "1 when peer networking is on.");
  sample(t, "epikv_peering", "", p->peering);
  meta(t, "epikv_insecure", "gauge",
       "1 when peer traffic is unauthenticated and clear (--insecure).");
  sample(t, "epikv_insecure", "", p->insecure);
  static const struct {
    const char *name, *help;
    size_t off;
  } counters[] = {
      {"epikv_rumors_added_total",
       "Rumors started: local writes and news "
       "received from peers.",
       offsetof(kvd_peers_snap, rumors_added)},
      {"epikv_rumors_pushed_total", "Rumor pushes sent to peers.",
       offsetof(kvd_peers_snap, rumors_pushed)},
      {"epikv_rumors_received_total", "Rumors received from peers.",
       offsetof(kvd_peers_snap, rumors_received)},
      {"epikv_rumors_news_total",
       "Rumors received that changed this replica's data.",
       offsetof(kvd_peers_snap, rumors_news)},
      {"epikv_rumors_dropped_total",
       "Rumors dropped by the bounds (evicted or refused).",
       offsetof(kvd_peers_snap, rumors_dropped)},
      {"epikv_rumors_died_total",
       "Rumors ended (enough not-news acks, rounds, or no peers).",
       offsetof(kvd_peers_snap, rumors_died)},
      {"epikv_ae_repairs_total",
       "Keys whose stored object an anti-entropy merge changed here.",
       offsetof(kvd_peers_snap, ae_repairs)},
      {"epikv_peer_hellos_refused_total",
       "Joiners refused (cluster name, protocol or segment count differ).",
       offsetof(kvd_peers_snap, refused_hellos)},
      {"epikv_peer_merges_dropped_total",
       "Peer writes dropped (too many in flight, bad key, stopping).",
       offsetof(kvd_peers_snap, dropped_merges)},
      {"epikv_peer_sends_dropped_total",
       "Messages to peers dropped (not connected or too far behind).",
       offsetof(kvd_peers_snap, dropped_sends)},
  };
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
    meta(t, counters[i].name, "counter", counters[i].help);
    sample(t, counters[i].name, "",
           *(const uint64_t *)((const char *)p + counters[i].off));
  }
  meta(t, "epikv_rumors_hot", "gauge", "Rumors still being spread.");
  sample(t, "epikv_rumors_hot", "", p->rumors_hot);

  meta(t, "epikv_ae_exchanges_total", "counter",
       "Anti-entropy exchanges this replica initiated, by outcome.");
  sample(t, "epikv_ae_exchanges_total", "outcome=\"done\"", p->ae_done);
  sample(t, "epikv_ae_exchanges_total", "outcome=\"timeout\"", p->ae_timeout);
  sample(t, "epikv_ae_exchanges_total", "outcome=\"malformed\"",
         p->ae_malformed);
  meta(t, "epikv_ae_keys_total", "counter",
       "Objects sent (pushed) to and received (pulled) from peers in "
       "exchanges this replica initiated.");
  sample(t, "epikv_ae_keys_total", "direction=\"pushed\"", p->ae_keys_pushed);
  sample(t, "epikv_ae_keys_total", "direction=\"pulled\"", p->ae_keys_pulled);
  meta(t, "epikv_ae_bytes_total", "counter",
       "Anti-entropy message bytes of exchanges this replica initiated.");
  sample(t, "epikv_ae_bytes_total", "direction=\"sent\"", p->ae_bytes_sent);
  sample(t, "epikv_ae_bytes_total", "direction=\"received\"",
         p->ae_bytes_received);
  meta(t, "epikv_ae_duration_seconds", "histogram",
       "Duration of the anti-entropy exchanges this replica initiated.");
  kvd_histogram(t, "epikv_ae_duration_seconds", "", &p->ae_duration,
                KVD_HIST_AE);
  if (p->ae_last_age_ms >= 0) {
    meta(t, "epikv_ae_last_exchange_age_seconds", "gauge",
         "Time since this replica's last anti-entropy exchange ended.");
    sample_f(t, "epikv_ae_last_exchange_age_seconds", "",
             (double)p->ae_last_age_ms / 1000);
  }

  static const char *const states[] = {"", "alive", "suspect", "dead", "left"};
  meta(t, "epikv_members", "gauge",
       "Cluster members by SWIM state, as this replica sees them (itself "
       "included).");
  for (int st = 1; st <= 4; st++) {
    snprintf(l, sizeof l, "state=\"%s\"", states[st]);
    sample(t, "epikv_members", l, p->members[st]);
  }
  meta(t, "epikv_peers_alive", "gauge",
       "Peers chosen for rumors and anti-entropy: alive and connected.");
  sample(t, "epikv_peers_alive", "", p->peers_alive);
  meta(t, "epikv_swim_messages_total", "counter", "SWIM messages.");
  sample(t, "epikv_swim_messages_total", "direction=\"sent\"", p->swim_sent);
  sample(t, "epikv_swim_messages_total", "direction=\"received\"",
         p->swim_received);
  meta(t, "epikv_swim_bytes_total", "counter", "SWIM message bytes.");
  sample(t, "epikv_swim_bytes_total", "direction=\"sent\"", p->swim_bytes_sent);
  sample(t, "epikv_swim_bytes_total", "direction=\"received\"",
         p->swim_bytes_received);
  meta(t, "epikv_swim_health", "gauge",
       "Lifeguard's local health score: 0 is healthy, higher stretches "
       "probes.");
  sample(t, "epikv_swim_health", "", p->swim_health);
  meta(t, "epikv_peer_messages_total", "counter",
       "Sealed peer messages over TCP.");
  sample(t, "epikv_peer_messages_total", "direction=\"sent\"", p->msgs_sent);
  sample(t, "epikv_peer_messages_total", "direction=\"received\"",
         p->msgs_received);
  meta(t, "epikv_peer_bytes_total", "counter",
       "Sealed peer message bytes over TCP, framing included.");
  sample(t, "epikv_peer_bytes_total", "direction=\"sent\"", p->bytes_sent);
  sample(t, "epikv_peer_bytes_total", "direction=\"received\"",
         p->bytes_received);
  meta(t, "epikv_peer_invalid_total", "counter",
       "Peer envelopes refused, by the seal's verdict, and opened messages "
       "that made no sense (malformed).");
  for (int v = 1; v < KV_SEAL_NVERDICTS; v++) {
    snprintf(l, sizeof l, "reason=\"%s\"",
             kv_seal_verdict_name((kv_seal_verdict)v));
    sample(t, "epikv_peer_invalid_total", l, p->invalid[v]);
  }
  sample(t, "epikv_peer_invalid_total", "reason=\"malformed\"", p->malformed);
}

static char *render_metrics(const kvd_metrics_snap *s, size_t *len) {
  text t = {kv_malloc(32768), 0, 32768};
  char l[512], n[300];
  meta(&t, "epikv_info", "gauge",
       "Always 1; the labels name the replica and its version.");
  snprintf(l, sizeof l, "name=\"%s\",replica_id=\"%016llx\",version=\"%s\"",
           label_escape(s->name, n, sizeof n),
           (unsigned long long)s->replica_id, s->version);
  sample(&t, "epikv_info", l, 1);
  meta(&t, "epikv_up", "gauge",
       "1 while serving; 0 while stopping or when the store failed.");
  sample(&t, "epikv_up", "", !s->stopping && s->store_ok);
  meta(&t, "epikv_uptime_seconds", "gauge", "Time since kvd started.");
  sample_f(&t, "epikv_uptime_seconds", "", (double)s->uptime_ms / 1000);
  meta(&t, "epikv_metrics_snapshot_age_seconds", "gauge",
       "Age of the figures shown: above 0.25 when the event loop was too "
       "busy to copy fresh ones.");
  uint64_t now = mono_ms();
  sample_f(&t, "epikv_metrics_snapshot_age_seconds", "",
           (double)(now > s->took_ms ? now - s->took_ms : 0) / 1000);
  render_requests(&t, s);
  render_store(&t, s);
  render_peers(&t, s);
  *len = t.len;
  return t.p;
}

static void json_str(text *t, const char *s) {
  tprintf(t, "\"");
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      tprintf(t, "\\%c", ch);
    else if (ch < 0x20)
      tprintf(t, "\\u%04x", ch);
    else
      tprintf(t, "%c", ch);
  }
  tprintf(t, "\"");
}

static const char *health_status(const kvd_metrics_snap *s) {
  return s->stopping ? "stopping" : !s->store_ok ? "store_failed" : "ok";
}

static char *render_health(const kvd_metrics_snap *s, size_t *len) {
  text t = {kv_malloc(1024), 0, 1024};
  const kvd_peers_snap *p = &s->peers;
  tprintf(&t, "{\"status\":\"%s\",\"name\":", health_status(s));
  json_str(&t, s->name);
  tprintf(&t,
          ",\"replica_id\":\"%016llx\",\"version\":\"%s\","
          "\"uptime_ms\":%llu,\"store\":\"%s\",\"peering\":%s,"
          "\"insecure\":%s,\"members\":{\"alive\":%llu,\"suspect\":%llu,"
          "\"dead\":%llu,\"left\":%llu},\"peers_alive\":%llu,"
          "\"last_ae_exchange_ms_ago\":",
          (unsigned long long)s->replica_id, s->version,
          (unsigned long long)s->uptime_ms, s->store_ok ? "ok" : "failed",
          p->peering ? "true" : "false", p->insecure ? "true" : "false",
          (unsigned long long)p->members[1], (unsigned long long)p->members[2],
          (unsigned long long)p->members[3], (unsigned long long)p->members[4],
          (unsigned long long)p->peers_alive);
  if (p->ae_last_age_ms >= 0)
    tprintf(&t, "%lld}\n", (long long)p->ae_last_age_ms);
  else
    tprintf(&t, "null}\n");
  *len = t.len;
  return t.p;
}

/* ---- HTTP thread: requests ---- */

/* A snapshot no older than this request, unless the loop does not answer
 * within KVD_METRICS_WAIT_MS (or is gone): then the last one. */
static void snapshot(kvd_metrics *m, kvd_metrics_snap *out) {
  pthread_mutex_lock(&m->mu);
  if (!m->closing) {
    uint64_t gen = m->snap.gen;
    uv_async_send(&m->refresh);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += (long)KVD_METRICS_WAIT_MS * 1000000;
    dl.tv_sec += dl.tv_nsec / 1000000000;
    dl.tv_nsec %= 1000000000;
    while (m->snap.gen == gen && !m->closing)
      if (pthread_cond_timedwait(&m->cv, &m->mu, &dl) == ETIMEDOUT) break;
  }
  *out = m->snap;
  if (m->closing) out->stopping = true; /* the loop has ended */
  pthread_mutex_unlock(&m->mu);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body, size_t len) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  if (status == MHD_HTTP_UNAUTHORIZED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  enum MHD_Result rc = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status,
                                  const char *msg) {
  size_t n = strlen(msg);
  char *body = kv_malloc(n);
  memcpy(body, msg, n);
  return reply(conn, status, "text/plain; charset=utf-8", body, n);
}

/* With an auth token configured, "Authorization: Bearer TOKEN". */
static bool authorized(kvd_metrics *m, struct MHD_Connection *conn) {
  if (!m->srv->have_token) return true;
  const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_AUTHORIZATION);
  if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
  h += 7;
  while (*h == ' ')
    h++;
  /* kvd_auth_check reads only the token's hash, fixed before we start. */
  return kvd_auth_check(m->srv, (const uint8_t *)h, strlen(h));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
  (void)version;
  (void)upload;
  kvd_metrics *m = cls;
  static int started;
  if (!*req_cls) { /* headers only so far: wait for the whole request */
    *req_cls = &started;
    return MHD_YES;
  }
  if (*upload_size) { /* a body is never needed: discard it */
    *upload_size = 0;
    return MHD_YES;
  }
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
      strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
  bool metrics = !strcmp(url, "/metrics"), health = !strcmp(url, "/health");
  if (!metrics && !health)
    return reply_text(conn, MHD_HTTP_NOT_FOUND,
                      "not found: try /metrics or /health\n");
  if (!authorized(m, conn))
    return reply_text(conn, MHD_HTTP_UNAUTHORIZED,
                      "an Authorization: Bearer token is required\n");
  kvd_metrics_snap *s = kv_malloc(sizeof *s);
  snapshot(m, s);
  size_t len;
  enum MHD_Result rc;
  if (metrics) {
    char *body = render_metrics(s, &len);
    rc = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
               body, len);
  } else {
    bool serving = !s->stopping && s->store_ok;
    char *body = render_health(s, &len);
    rc = reply(conn, serving ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
               "application/json", body, len);
  }
  free(s);
  return rc;
}

/* libmicrohttpd's own messages (mostly about clients): debug, at most one
 * line a second. Only its thread calls this. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  static kvd_log_rate rate;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  msg[strcspn(msg, "\r\n")] = 0;
  for (char *q = msg; *q; q++)
    if (*q == '"') *q = '\'';
  kvd_log_limited(&rate, KVD_LOG_DEBUG, "metrics_http", "msg=\"%s\"", msg);
}

/* ---- loop thread: start and stop ---- */

/* A listening socket on addr (host:port), or -1 (logged). */
static int listen_on(const char *addr, int *port) {
  char host[256];
  int p;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (kvd_parse_addr(addr, host, sizeof host, &p) ||
      (strchr(host, ':') ? uv_ip6_addr(host, p, (struct sockaddr_in6 *)&ss)
                         : uv_ip4_addr(host, p, (struct sockaddr_in *)&ss))) {
    log_error("listen_failed", "proto=http addr=%s err=\"bad address\"", addr);
    return -1;
  }
  socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64) ||
      getsockname(fd, (struct sockaddr *)&ss, &sl)) {
    log_error("listen_failed", "proto=http addr=%s err=\"%s\"", addr,
              strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ss.ss_family == AF_INET6
              ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

int kvd_metrics_start(kvd *srv, int *port) {
  *port = 0;
  const char *addr = srv->cfg->metrics_listen;
  if (!*addr) return KV_OK;
  int fd = listen_on(addr, port);
  if (fd < 0) return KV_IO;
  kvd_metrics *m = kv_calloc(1, sizeof *m);
  m->srv = srv;
  pthread_mutex_init(&m->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->cv, &ca);
  pthread_condattr_destroy(&ca);
  uv_async_init(srv->loop, &m->refresh, on_refresh);
  m->refresh.data = m;
  uv_unref((uv_handle_t *)&m->refresh); /* never what keeps the loop up */
  srv->metrics = m;
  collect(srv, &m->snap); /* never an empty snapshot */
  /* One internal thread serves every connection: a scrape is small, and
   * the connection limit and timeout keep idle clients from piling up. */
  m->d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
      on_request, m, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, m,
      MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (!m->d) {
    log_error("listen_failed",
              "proto=http addr=%s err=\"libmicrohttpd did not start\"", addr);
    return KV_IO;
  }
  log_info("listen", "proto=http addr=%s port=%d auth=%d", addr, *port,
           srv->have_token);
  return KV_OK;
}

void kvd_metrics_stop(kvd *srv) {
  kvd_metrics *m = srv->metrics;
  if (!m || m->stopped) return;
  m->stopped = true;
  pthread_mutex_lock(&m->mu);
  m->closing = true;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  if (m->d) MHD_stop_daemon(m->d);
  m->d = NULL;
}

void kvd_metrics_free(kvd *srv) {
  kvd_metrics *m = srv->metrics;
  if (!m) return;
  kvd_metrics_stop(srv);
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  free(m);
  srv->metrics = NULL;
}
