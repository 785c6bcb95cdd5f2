/*
 * Measurements at scale, in the simulator (bench/RESULTS.md, "Simulator").
 *
 * gossip: Gossip Glomers 3d on the rumor core. 25 replicas, every link a
 * constant 100 ms, no loss; after 30 s for membership to form, 2,000 writes
 * of fresh keys to random replicas at 100/s (--rate), then 30 s more. For each
 * write, the stable latency is the time until all 25 replicas hold it (whether
 * by rumor or by anti-entropy); messages per write count the rumor messages
 * (one per peer per tick with all of the tick's rumors for that peer, and
 * one ack message per rumor message, as peer.c sends them) from the first
 * write to the end, divided by the writes. Anti-entropy and membership
 * traffic are reported beside it, and so is whether rumors alone reached
 * every replica with each write (anti-entropy, running every 2 s, sometimes
 * gets a write to a replica before a rumor still in flight does: that is a
 * race, not a write left to anti-entropy). --no-ae leaves rumors alone.
 *
 * membership: N members (1,000) of sync/membership alone, links 1-5 ms, no
 * loss. Members boot 20 ms apart, each joining through a random earlier one;
 * after 120 s, UDP and TCP (push-pull) messages per member per second are
 * counted over 60 s; then members are crashed one at a time and the time
 * until every other member holds each dead is measured.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/world.h"

enum { SC_BOOT = 1, SC_WRITE, SC_CRASH };

/* ---- gossip ---- */

#define G_WARMUP_MS 30000
#define G_RATE 100 /* writes/s unless --rate says otherwise */
#define G_WRITES 2000
#define G_TAIL_MS 30000

typedef struct gstate {
  int n;
  uint64_t gap_ms; /* between writes */
  uint64_t *t0;    /* write time per write index */
  uint64_t *lat;   /* time until all replicas held it; UINT64_MAX: not yet */
  uint32_t *have;  /* bitmap words per write: which replicas hold it */
  int *count;
  int *by_ae;         /* replicas that got it through anti-entropy first */
  uint32_t *by_rumor; /* which replicas a rumor of it reached (or wrote it) */
  int written;
} gstate;

static int key_index(const uint8_t *key, size_t len) {
  if (len < 2 || key[0] != 'b') return -1;
  int v = 0;
  for (size_t i = 1; i < len; i++)
    v = v * 10 + (key[i] - '0');
  return v;
}

static void g_change(world *w, int node, const uint8_t *key, size_t len) {
  gstate *g = w->scale;
  int k = key_index(key, len);
  if (k < 0 || k >= g->written) return;
  uint32_t bit = 1u << node;
  if (g->have[k] & bit) return;
  g->have[k] |= bit;
  if (w->cause == CAUSE_AE) g->by_ae[k]++;
  if (++g->count[k] == g->n) g->lat[k] = w->now - g->t0[k];
}

static void g_rumor(world *w, int node, const uint8_t *key, size_t len) {
  gstate *g = w->scale;
  int k = key_index(key, len);
  if (k >= 0 && k < g->written) g->by_rumor[k] |= 1u << node;
}

static void g_event(world *w, const event *e) {
  gstate *g = w->scale;
  if (e->gen != SC_WRITE || g->written >= G_WRITES) return;
  ev_push(w, w->now + g->gap_ms, EV_SCALE, -1, SC_WRITE, NULL);
  int k = g->written++;
  int node = (int)kv_rng_below(&w->rng, (uint32_t)w->n);
  char key[16];
  snprintf(key, sizeof key, "b%d", k);
  uint8_t val[100];
  memset(val, 'x', sizeof val);
  g->t0[k] = w->now;
  g->lat[k] = UINT64_MAX;
  g->by_rumor[k] = 1u << node;
  if (rep_local_write(w, node, OP_PUT, key, val, sizeof val, NULL, false, 0,
                      false) != KV_OK)
    fprintf(stderr, "gossip: write %d failed\n", k);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static void gossip_run(const scale_opts *o) {
  sim_cfg cfg = {0};
  cfg.seed = o->seed;
  cfg.nodes = o->gossip_nodes > 32 ? 32 : o->gossip_nodes; /* bitmap */
  cfg.segment_bits = 8;
  cfg.delay_min_ms = cfg.delay_max_ms = o->link_ms ? o->link_ms : 100;
  unsigned rate = o->rate ? o->rate : G_RATE;
  uint64_t gap = rate >= 1000 ? 1 : 1000 / rate;
  cfg.active_ms = G_WARMUP_MS + G_WRITES * gap + G_TAIL_MS;
  cfg.ae_interval_ms = 2000;
  cfg.rumor.fanout = o->fanout;
  cfg.rumor.k = o->rumor_k;
  cfg.rumor.max_rounds = o->max_rounds;
  cfg.rumor.interval_ms = o->interval_ms;
  cfg.scenario = "gossip";
  sim_result res;
  world *w = world_new(&cfg, NULL, &res, true);
  w->tracing = false;
  w->ae_on = !o->no_ae;
  gstate g = {0};
  g.n = w->n;
  g.gap_ms = gap;
  g.t0 = kv_calloc(G_WRITES, sizeof *g.t0);
  g.lat = kv_calloc(G_WRITES, sizeof *g.lat);
  g.have = kv_calloc(G_WRITES, sizeof *g.have);
  g.count = kv_calloc(G_WRITES, sizeof *g.count);
  g.by_ae = kv_calloc(G_WRITES, sizeof *g.by_ae);
  g.by_rumor = kv_calloc(G_WRITES, sizeof *g.by_rumor);
  w->scale = &g;
  w->on_change = g_change;
  w->on_rumor = g_rumor;
  w->on_scale = g_event;
  world_start(w);
  world_run(w, G_WARMUP_MS);
  size_t minalive = SIZE_MAX;
  for (int i = 0; i < w->n; i++) {
    size_t a = kv_swim_alive_peers(w->r[i].swim, NULL, 0);
    if (a < minalive) minalive = a;
  }
  uint64_t r0 = w->n_rumor_msgs, a0 = w->n_ack_msgs, i0 = w->n_rumor_items;
  uint64_t e0 = w->n_ae_msgs, s0 = w->n_swim_udp + w->n_swim_tcp;
  uint64_t br0 = w->b_rumor + w->b_ack;
  ev_push(w, w->now, EV_SCALE, -1, SC_WRITE, NULL);
  world_run(w, cfg.active_ms);
  uint64_t pushes = w->n_rumor_msgs - r0, acks = w->n_ack_msgs - a0;
  uint64_t items = w->n_rumor_items - i0, ae = w->n_ae_msgs - e0;
  uint64_t swim = w->n_swim_udp + w->n_swim_tcp - s0;
  double writes = g.written;
  uint64_t *l = kv_malloc(G_WRITES * sizeof *l);
  int full = 0, ae_first = 0, by_rumor = 0;
  uint32_t all = g.n >= 32 ? UINT32_MAX : (1u << g.n) - 1;
  for (int k = 0; k < g.written; k++) {
    l[k] = g.lat[k];
    full += g.lat[k] != UINT64_MAX;
    ae_first += g.by_ae[k] > 0;
    by_rumor += g.by_rumor[k] == all;
  }
  qsort(l, (size_t)g.written, sizeof *l, cmp_u64);
  size_t n = (size_t)g.written;
  kv_rumor_opts ro = kv_rumor_opts_get(w->r[0].rumor);
  kv_rumor_stats rs;
  kv_rumor_stats_get(w->r[0].rumor, &rs);
  char iv[64];
  if (ro.interval_ms)
    snprintf(iv, sizeof iv, "%" PRIu64 " ms", ro.interval_ms);
  else
    snprintf(iv, sizeof iv,
             "adaptive (replica 0: round trip %" PRIu64 " ms, interval %" PRIu64
             " ms)",
             rs.srtt_ms, rs.interval_ms);
  printf("gossip: %d replicas, %u ms links, %d writes at %.0f/s; fanout %u, "
         "k %u, rounds %u, interval %s; seed %" PRIu64 "\n",
         w->n, cfg.delay_min_ms, g.written, 1000.0 / (double)gap, ro.fanout,
         ro.k, ro.max_rounds, iv, o->seed);
  printf("gossip:   membership before writes: every replica sees >= %zu of "
         "%d alive\n",
         minalive, w->n - 1);
  printf("gossip:   rumor messages/write %.2f (pushes %.2f in messages of "
         "%.2f rumors, acks %.2f), rumor bytes/write %.0f\n",
         (double)(pushes + acks) / writes, (double)pushes / writes,
         pushes ? (double)items / (double)pushes : 0.0, (double)acks / writes,
         (double)(w->b_rumor + w->b_ack - br0) / writes);
  printf("gossip:   all messages/write %.2f (anti-entropy %.2f, membership "
         "%.2f)\n",
         (double)(pushes + acks + ae + swim) / writes, (double)ae / writes,
         (double)swim / writes);
  printf("gossip:   stable latency (all %d hold it): median %" PRIu64
         " ms, p90 %" PRIu64 " ms, p99 %" PRIu64 " ms, max %" PRIu64
         " ms; %d/%d reached everyone\n",
         w->n, l[n / 2], l[(n * 9) / 10], l[(n * 99) / 100], l[n - 1], full,
         g.written);
  printf("gossip:   %d/%d reached every replica by rumor; %d/%d were left to "
         "anti-entropy somewhere; anti-entropy got there first for %d\n",
         by_rumor, g.written, g.written - by_rumor, g.written, ae_first);
  free(l);
  free(g.t0);
  free(g.lat);
  free(g.have);
  free(g.count);
  free(g.by_ae);
  free(g.by_rumor);
  world_free(w);
}

/* ---- membership ---- */

#define M_GAP_MS 20
#define M_SETTLE_MS 120000
#define M_WINDOW_MS 60000
#define M_CRASHES 3
#define M_DETECT_MAX_MS 180000

typedef struct mstate {
  int victim;
  uint64_t crash_at, first_suspect, first_dead, all_dead;
  int dead_seen;
  uint8_t *seen; /* per member: holds the victim dead */
  int down;      /* members crashed so far */
  uint64_t false_dead;
  bool measuring;
} mstate;

static void m_swim(world *w, int node, const kv_swim_event *e) {
  mstate *m = w->scale;
  int j = node_of_id(w, e->id);
  if (e->new_state == KV_SWIM_DEAD && j >= 0 && w->r[j].up && !w->r[j].crashed)
    m->false_dead++;
  if (!m->measuring || j != m->victim) return;
  if (e->new_state == KV_SWIM_SUSPECT && !m->first_suspect)
    m->first_suspect = w->now;
  if (e->new_state == KV_SWIM_DEAD && !m->seen[node]) {
    m->seen[node] = 1;
    if (!m->first_dead) m->first_dead = w->now;
    if (++m->dead_seen == w->n - 1 - m->down) m->all_dead = w->now;
  }
  if (e->new_state == KV_SWIM_ALIVE && m->seen[node]) {
    m->seen[node] = 0;
    m->dead_seen--;
  }
}

static void m_event(world *w, const event *e) {
  if (e->gen == SC_BOOT) rep_boot(w, e->node);
}

static void membership_run(const scale_opts *o) {
  sim_cfg cfg = {0};
  cfg.seed = o->seed;
  cfg.nodes = o->members;
  cfg.segment_bits = 4;
  cfg.delay_min_ms = 1;
  cfg.delay_max_ms = 5;
  cfg.ae_interval_ms = 2000;
  cfg.scenario = "membership";
  sim_result res;
  world *w = world_new(&cfg, NULL, &res, false);
  w->tracing = false;
  w->join_lower = true;
  mstate m = {0};
  m.victim = -1;
  m.seen = kv_calloc((size_t)w->n, 1);
  w->scale = &m;
  w->on_scale = m_event;
  w->on_swim_event = m_swim;
  for (int i = 0; i < w->n; i++)
    ev_push(w, (uint64_t)i * M_GAP_MS, EV_SCALE, i, SC_BOOT, NULL);
  uint64_t booted = (uint64_t)w->n * M_GAP_MS;
  world_run(w, booted + M_SETTLE_MS);
  size_t minalive = SIZE_MAX, maxq = 0;
  for (int i = 0; i < w->n; i++) {
    size_t a = kv_swim_alive_peers(w->r[i].swim, NULL, 0);
    if (a < minalive) minalive = a;
    kv_swim_stats st;
    kv_swim_stats_get(w->r[i].swim, &st);
    if (st.queued > maxq) maxq = st.queued;
  }
  uint64_t u0 = w->n_swim_udp, t0 = w->n_swim_tcp, bu0 = w->b_swim_udp,
           bt0 = w->b_swim_tcp;
  world_run(w, w->now + M_WINDOW_MS);
  double member_s = (double)w->n * (M_WINDOW_MS / 1000.0);
  printf("membership: %d members, links 1-5 ms, memberlist LAN defaults; "
         "seed %" PRIu64 "\n",
         w->n, o->seed);
  printf("membership:   %d joined %d ms apart; %d s later every member sees "
         ">= %zu of %d alive (largest broadcast queue %zu)\n",
         w->n, M_GAP_MS, M_SETTLE_MS / 1000, minalive, w->n - 1, maxq);
  printf("membership:   steady state: %.2f UDP messages/member/s (%.0f "
         "bytes), %.3f push-pulls/member/s (%.0f bytes)\n",
         (double)(w->n_swim_udp - u0) / member_s,
         (double)(w->b_swim_udp - bu0) / member_s,
         (double)(w->n_swim_tcp - t0) / member_s,
         (double)(w->b_swim_tcp - bt0) / member_s);
  for (int c = 0; c < M_CRASHES; c++) {
    int v;
    do
      v = (int)kv_rng_below(&w->rng, (uint32_t)w->n);
    while (!w->r[v].up);
    memset(m.seen, 0, (size_t)w->n);
    m.victim = v;
    m.first_suspect = m.first_dead = m.all_dead = 0;
    m.dead_seen = 0;
    m.measuring = true;
    m.crash_at = w->now;
    rep_crash(w, v);
    m.down = c;
    uint64_t u1 = w->n_swim_udp;
    while (!m.all_dead && w->now < m.crash_at + M_DETECT_MAX_MS)
      world_run(w, w->now + 1000);
    double secs = (double)(w->now - m.crash_at) / 1000.0;
    if (m.all_dead)
      printf("membership:   crash %d (member %d): first suspicion after %.1f "
             "s, first dead %.1f s, all %d others hold it dead after %.1f s "
             "(%.2f UDP msgs/member/s meanwhile)\n",
             c + 1, v, (double)(m.first_suspect - m.crash_at) / 1000.0,
             (double)(m.first_dead - m.crash_at) / 1000.0, w->n - 1 - c,
             (double)(m.all_dead - m.crash_at) / 1000.0,
             (double)(w->n_swim_udp - u1) / ((double)w->n * secs));
    else
      printf("membership:   crash %d (member %d): only %d of %d hold it dead "
             "after %.0f s\n",
             c + 1, v, m.dead_seen, w->n - 1 - c, secs);
    m.measuring = false;
    world_run(w, w->now + 10000);
  }
  printf("membership:   members declared dead while up: %" PRIu64 "\n",
         m.false_dead);
  free(m.seen);
  world_free(w);
}

int sim_scale(const scale_opts *o) {
  if (o->gossip) gossip_run(o);
  if (o->membership) membership_run(o);
  return 0;
}
