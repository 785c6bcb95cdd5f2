/*
 * The member table is one array (self included) that only grows, so a member
 * index stays valid for the life of the kv_swim; the probe order is a list of
 * those indices, reshuffled on every wrap, with newcomers inserted at random
 * positions. At most one probe of our own is in flight. The broadcast queue
 * holds at most one update per member (a newer one replaces it) and each is
 * dropped after retransmit_limit sends. Lookups are linear in the table size,
 * which is fine for the cluster sizes epikv targets (tens of nodes).
 * Invariants: self's state is ALIVE or LEFT; a member has a suspicion timer
 * only while SUSPECT; awareness < awareness_max.
 */
#include "sync/membership.h"

#include <stdlib.h>
#include <string.h>

#include "proto/buf.h"

#define NONE SIZE_MAX
#define UPDATE_OVERHEAD 32

typedef struct member {
  uint64_t id;
  char *name, *addr;
  kv_swim_state state;
  uint64_t inc, since;
  /* Lifeguard suspicion timer, while SUSPECT. */
  bool susp;
  uint64_t susp_start, susp_min, susp_max, susp_deadline, susp_from;
  unsigned susp_k, susp_n;
  uint64_t *confirmers; /* susp_k slots */
} member;

typedef struct bcast {
  kv_swim_update u; /* name and addr owned */
  unsigned transmits;
  uint64_t order; /* enqueue order: newer first within a transmit tier */
} bcast;

/* A probe we run on someone else's behalf (they sent a PING_REQ). */
typedef struct helped {
  uint32_t local_seq, origin_seq;
  uint64_t origin, deadline;
  char *origin_addr;
} helped;

struct kv_swim {
  kv_swim_opts o;
  uint64_t self_id;
  member *m;
  size_t n, cap;
  size_t *order;
  size_t norder, ordercap, probe_i;

  bool probing, pindirect;
  uint64_t ptarget, pstart, pdirect, pdeadline;
  uint32_t pseq;
  unsigned pexpected, pnacks;

  uint64_t next_probe, next_gossip, next_push_pull;
  unsigned awareness;
  uint32_t seq;
  bool leaving, in_emit;

  bcast *q;
  size_t qn, qcap;
  uint64_t qorder;
  helped *h;
  size_t hn, hcap;
  kv_swim_event *ev;
  size_t evhead, evn, evcap;
  kv_swim_update *exp, *scratch;
  size_t expcap, scratchcap;
  size_t *sidx;
  size_t sidxcap;
  /* While kv_swim_recv applies a message's updates (collect, from its
   * sender): the alive updates to send directly, as (member index, to)
   * pairs, to whoever accused a member we know (or just made) alive at a
   * higher incarnation. */
  bool collect;
  uint64_t collect_sender;
  struct corr {
    size_t i;
    uint64_t to;
  } * corr;
  size_t ncorr, corrcap;
  kv_swim_stats st;
};

/* ---- small numeric helpers (no libm: the unit-test link has no -lm) ---- */

/* Natural log for x > 0: scale into [1, 2), then the atanh series, which
 * converges fast there (|y| <= 1/3). Plenty for timer arithmetic. */
static double ln_(double x) {
  const double ln2 = 0.69314718055994530942;
  int e = 0;
  while (x >= 2.0) {
    x /= 2.0;
    e++;
  }
  while (x < 1.0) {
    x *= 2.0;
    e--;
  }
  double y = (x - 1.0) / (x + 1.0), y2 = y * y, term = y, sum = 0.0;
  for (int k = 1; k < 60; k += 2) {
    sum += term / k;
    term *= y2;
  }
  return 2.0 * sum + e * ln2;
}

static kv_swim_opts fill_opts(const kv_swim_opts *in) {
  kv_swim_opts o = in ? *in : (kv_swim_opts){0};
  if (!o.probe_interval_ms)
    o.probe_interval_ms = KV_SWIM_DEFAULT_PROBE_INTERVAL_MS;
  if (!o.probe_timeout_ms)
    o.probe_timeout_ms = KV_SWIM_DEFAULT_PROBE_TIMEOUT_MS;
  if (!o.indirect_checks) o.indirect_checks = KV_SWIM_DEFAULT_INDIRECT_CHECKS;
  if (!o.suspicion_mult) o.suspicion_mult = KV_SWIM_DEFAULT_SUSPICION_MULT;
  if (!o.suspicion_max_mult)
    o.suspicion_max_mult = KV_SWIM_DEFAULT_SUSPICION_MAX_TIMEOUT_MULT;
  if (!o.suspicion_k)
    o.suspicion_k = o.suspicion_mult > 2 ? o.suspicion_mult - 2 : 0;
  if (!o.retransmit_mult) o.retransmit_mult = KV_SWIM_DEFAULT_RETRANSMIT_MULT;
  if (!o.awareness_max) o.awareness_max = KV_SWIM_DEFAULT_AWARENESS_MAX_MULT;
  if (!o.gossip_nodes) o.gossip_nodes = KV_SWIM_DEFAULT_GOSSIP_NODES;
  if (!o.gossip_interval_ms)
    o.gossip_interval_ms = KV_SWIM_DEFAULT_GOSSIP_INTERVAL_MS;
  if (!o.gossip_to_the_dead_ms)
    o.gossip_to_the_dead_ms = KV_SWIM_DEFAULT_GOSSIP_TO_THE_DEAD_MS;
  if (!o.push_pull_interval_ms)
    o.push_pull_interval_ms = KV_SWIM_DEFAULT_PUSH_PULL_INTERVAL_MS;
  if (!o.piggyback_bytes) o.piggyback_bytes = KV_SWIM_DEFAULT_PIGGYBACK_BYTES;
  if (!o.piggyback_max) o.piggyback_max = KV_SWIM_DEFAULT_PIGGYBACK_MAX;
  return o;
}

uint64_t kv_swim_suspicion_timeout(const kv_swim_opts *in, size_t n, unsigned k,
                                   unsigned c) {
  kv_swim_opts o = fill_opts(in);
  double scale = n > 1 ? ln_((double)n) / ln_(10.0) : 1.0;
  if (scale < 1.0) scale = 1.0;
  /* memberlist truncates the scale to thousandths before multiplying. */
  uint64_t min = o.suspicion_mult * (uint64_t)(scale * 1000.0) *
                 o.probe_interval_ms / 1000;
  uint64_t max = o.suspicion_max_mult * min;
  if (k < 1) return min;
  double frac = ln_((double)c + 1.0) / ln_((double)k + 1.0);
  double t = (double)max - frac * (double)(max - min);
  if (t < (double)min) return min;
  return (uint64_t)t;
}

unsigned kv_swim_retransmit_limit(const kv_swim_opts *in, size_t n) {
  kv_swim_opts o = fill_opts(in);
  unsigned digits = 0; /* ceil(log10(n + 1)) */
  for (size_t v = n; v > 0; v /= 10)
    digits++;
  return o.retransmit_mult * digits;
}

size_t kv_swim_update_size(const kv_swim_update *u) {
  return UPDATE_OVERHEAD + (u->name ? strlen(u->name) : 0) +
         (u->addr ? strlen(u->addr) : 0);
}

static char *dupstr(const char *p) {
  if (!p) return NULL;
  size_t len = strlen(p);
  char *d = kv_malloc(len + 1);
  memcpy(d, p, len + 1);
  return d;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return p;
  size_t c = *cap ? *cap : 8;
  while (c < need)
    c *= 2;
  *cap = c;
  return kv_realloc(p, c * elem);
}

/* ---- table ---- */

static size_t find(const kv_swim *s, uint64_t id) {
  for (size_t i = 0; i < s->n; i++)
    if (s->m[i].id == id) return i;
  return NONE;
}

static member *self_m(kv_swim *s) { return &s->m[0]; }

/* memberlist's N is its node list, whose dead entries are reaped after
 * GossipToTheDeadTime; counting dead/left members only that long matches. */
static size_t est_nodes(const kv_swim *s, uint64_t now) {
  size_t c = 0;
  for (size_t i = 0; i < s->n; i++) {
    const member *x = &s->m[i];
    if (x->state == KV_SWIM_ALIVE || x->state == KV_SWIM_SUSPECT ||
        now - x->since < s->o.gossip_to_the_dead_ms)
      c++;
  }
  return c;
}

static void push_event(kv_swim *s, uint64_t id, kv_swim_state old,
                       kv_swim_state now_state, uint64_t inc, uint64_t now) {
  if (s->evhead == s->evn) s->evhead = s->evn = 0;
  s->ev = grow(s->ev, &s->evcap, s->evn + 1, sizeof *s->ev);
  s->ev[s->evn++] = (kv_swim_event){id, old, now_state, inc, now};
}

static void set_state(kv_swim *s, size_t i, kv_swim_state st, uint64_t now) {
  member *x = &s->m[i];
  if (x->state == st) return;
  push_event(s, x->id, x->state, st, x->inc, now);
  x->state = st;
  x->since = now;
}

static void clear_susp(member *x) {
  x->susp = false;
  x->susp_n = 0;
}

static size_t add_member(kv_swim *s, const kv_swim_update *u, uint64_t now,
                         kv_rng *rng) {
  s->m = grow(s->m, &s->cap, s->n + 1, sizeof *s->m);
  member *x = &s->m[s->n];
  *x = (member){.id = u->id,
                .name = dupstr(u->name),
                .addr = dupstr(u->addr),
                .state = u->state,
                .inc = u->incarnation,
                .since = now};
  size_t i = s->n++;
  push_event(s, x->id, KV_SWIM_NONE, x->state, x->inc, now);
  /* SWIM's strong completeness: a newcomer goes to a random position of the
   * probe order, so it is probed within this round or the next. */
  s->order = grow(s->order, &s->ordercap, s->norder + 1, sizeof *s->order);
  size_t pos = s->norder ? kv_rng_below(rng, (uint32_t)s->norder + 1) : 0;
  memmove(s->order + pos + 1, s->order + pos,
          (s->norder - pos) * sizeof *s->order);
  s->order[pos] = i;
  s->norder++;
  if (pos < s->probe_i) s->probe_i++;
  return i;
}

/* ---- broadcast queue ---- */

static void bcast_free(bcast *b) {
  free((char *)b->u.name);
  free((char *)b->u.addr);
}

static void enqueue(kv_swim *s, const kv_swim_update *u) {
  for (size_t i = 0; i < s->qn; i++) {
    if (s->q[i].u.id == u->id) {
      bcast_free(&s->q[i]);
      s->q[i] = s->q[--s->qn];
      break;
    }
  }
  s->q = grow(s->q, &s->qcap, s->qn + 1, sizeof *s->q);
  bcast *b = &s->q[s->qn++];
  b->u = *u;
  b->u.name = dupstr(u->name);
  b->u.addr = dupstr(u->addr);
  b->transmits = 0;
  b->order = ++s->qorder;
}

static void enqueue_member(kv_swim *s, size_t i, kv_swim_state st,
                           uint64_t from) {
  member *x = &s->m[i];
  kv_swim_update u = {x->id, x->inc, st, from, x->name, x->addr};
  enqueue(s, &u);
}

/* Queue order: fewer transmits first, then newer first. */
static bool bcast_before(const bcast *x, const bcast *y) {
  if (x->transmits != y->transmits) return x->transmits < y->transmits;
  return x->order > y->order;
}

/* Emits m to `to` with queued updates piggybacked, fewest-sent and newest
 * first within the byte and count budgets (memberlist's queue order), after
 * nfirst leading updates (the buddy-system suspicion, or corrections of a
 * stale accusation). */
static void send_msg(kv_swim *s, uint64_t now, uint64_t to, const char *to_addr,
                     kv_swim_msg *msg, const kv_swim_update *first,
                     size_t nfirst, kv_swim_emit_fn emit, void *arg) {
  size_t nsel = 0, nup = 0, bytes = 0;
  s->scratch =
      grow(s->scratch, &s->scratchcap, s->qn + nfirst, sizeof *s->scratch);
  for (size_t j = 0; j < nfirst; j++) {
    s->scratch[nup++] = first[j];
    bytes += kv_swim_update_size(&first[j]);
  }
  if (s->qn) {
    s->sidx = grow(s->sidx, &s->sidxcap, s->qn, sizeof *s->sidx);
    for (size_t i = 0; i < s->qn; i++)
      s->sidx[i] = i;
    /* Insertion sort: the queue holds at most one update per member. */
    for (size_t i = 1; i < s->qn; i++) {
      size_t v = s->sidx[i], j = i;
      for (; j > 0 && bcast_before(&s->q[v], &s->q[s->sidx[j - 1]]); j--)
        s->sidx[j] = s->sidx[j - 1];
      s->sidx[j] = v;
    }
    for (size_t j = 0; j < s->qn && nup < s->o.piggyback_max; j++) {
      const bcast *b = &s->q[s->sidx[j]];
      size_t sz = kv_swim_update_size(&b->u);
      if (bytes + sz > s->o.piggyback_bytes) continue;
      bytes += sz;
      s->scratch[nup++] = b->u;
      s->sidx[nsel++] = s->sidx[j];
    }
  }
  msg->from = s->self_id;
  msg->from_addr = self_m(s)->addr;
  msg->updates = nup ? s->scratch : NULL;
  msg->nupdates = nup;
  s->st.sent++;
  s->st.updates_sent += nup;
  s->in_emit = true;
  emit(arg, to, to_addr, msg);
  s->in_emit = false;
  if (!nsel) return;
  unsigned limit = kv_swim_retransmit_limit(&s->o, est_nodes(s, now));
  for (size_t j = 0; j < nsel; j++)
    s->q[s->sidx[j]].transmits++;
  size_t w = 0;
  for (size_t i = 0; i < s->qn; i++) {
    if (s->q[i].transmits >= limit)
      bcast_free(&s->q[i]);
    else
      s->q[w++] = s->q[i];
  }
  s->qn = w;
}

static const char *addr_of(const kv_swim *s, uint64_t id,
                           const char *fallback) {
  size_t i = find(s, id);
  return i != NONE && s->m[i].addr ? s->m[i].addr : fallback;
}

/* ---- the update rules (memberlist's aliveNode/suspectNode/deadNode) ---- */

static void awareness_delta(kv_swim *s, int d) {
  int a = (int)s->awareness + d;
  if (a < 0) a = 0;
  if (a > (int)s->o.awareness_max - 1) a = (int)s->o.awareness_max - 1;
  s->awareness = (unsigned)a;
}

/* Only a member raises its own incarnation, and it jumps past the accuser's
 * so that its alive beats the accusation everywhere. */
static void refute(kv_swim *s, uint64_t accused_inc) {
  member *me = self_m(s);
  me->inc++;
  if (accused_inc >= me->inc) me->inc = accused_inc + 1;
  enqueue_member(s, 0, KV_SWIM_ALIVE, 0);
  awareness_delta(s, 1);
  s->st.refuted++;
}

static void apply_alive(kv_swim *s, const kv_swim_update *u, uint64_t now,
                        kv_rng *rng) {
  if (u->id == s->self_id) {
    if (!s->leaving && u->incarnation > self_m(s)->inc)
      refute(s, u->incarnation);
    return;
  }
  size_t i = find(s, u->id);
  if (i == NONE) {
    kv_swim_update a = *u;
    a.state = KV_SWIM_ALIVE;
    a.from = 0;
    i = add_member(s, &a, now, rng);
    enqueue_member(s, i, KV_SWIM_ALIVE, 0);
    return;
  }
  member *x = &s->m[i];
  if (u->incarnation <= x->inc) return;
  clear_susp(x);
  if (strcmp(x->addr, u->addr) != 0) {
    free(x->addr);
    x->addr = dupstr(u->addr);
  }
  if (strcmp(x->name, u->name) != 0) {
    free(x->name);
    x->name = dupstr(u->name);
  }
  x->inc = u->incarnation;
  enqueue_member(s, i, KV_SWIM_ALIVE, 0);
  set_state(s, i, KV_SWIM_ALIVE, now);
}

/* A suspicion timer counts distinct confirmers other than the originator, up
 * to k; each one shortens the timeout (Lifeguard). */
static bool confirm(member *x, uint64_t from) {
  if (x->susp_n >= x->susp_k || from == x->susp_from) return false;
  for (unsigned j = 0; j < x->susp_n; j++)
    if (x->confirmers[j] == from) return false;
  x->confirmers[x->susp_n++] = from;
  uint64_t min = x->susp_min, max = x->susp_max;
  double frac = ln_((double)x->susp_n + 1.0) / ln_((double)x->susp_k + 1.0);
  double t = (double)max - frac * (double)(max - min);
  uint64_t timeout = t < (double)min ? min : (uint64_t)t;
  x->susp_deadline = x->susp_start + timeout;
  return true;
}

static void corr_add(kv_swim *s, size_t i, uint64_t to) {
  if (!to || to == s->self_id || to == s->m[i].id) return;
  for (size_t j = 0; j < s->ncorr; j++)
    if (s->corr[j].i == i && s->corr[j].to == to) return;
  s->corr = grow(s->corr, &s->corrcap, s->ncorr + 1, sizeof *s->corr);
  s->corr[s->ncorr++] = (struct corr){i, to};
}

/* Gossip spreads an update to random members a bounded number of times
 * (retransmit_limit each), so a member can miss every copy of a refutation;
 * if it holds a suspicion timer it then declares the refuted member dead
 * when the timer runs out (as soon as the Lifeguard minimum, 4 s at N=8,
 * once confirmed), and the accusers are exactly the members that hold
 * timers. memberlist leaves this to chance and push-pull. So an accusation
 * we can answer is also answered directly, with the alive we hold, to the
 * message's sender and to the accuser the update names (kv_swim_recv sends
 * it after applying the message): when we refute an accusation against
 * ourselves, and when an accusation is stale (below the incarnation of the
 * ALIVE we hold: its sender and accuser missed the refutation). About
 * ourselves a stale one also requeues our alive for gossip. An alive never
 * draws a correction, so corrections cannot loop. */
static void answer_accusation(kv_swim *s, size_t i, uint64_t accuser) {
  if (!s->collect) return;
  corr_add(s, i, s->collect_sender);
  corr_add(s, i, accuser);
}

static void stale_accusation(kv_swim *s, size_t i, uint64_t accuser) {
  const member *x = &s->m[i];
  if (i == 0 ? s->leaving : x->state != KV_SWIM_ALIVE) return;
  if (i == 0) enqueue_member(s, 0, KV_SWIM_ALIVE, 0);
  answer_accusation(s, i, accuser);
}

static void apply_suspect(kv_swim *s, const kv_swim_update *u, uint64_t now) {
  size_t i = find(s, u->id);
  if (i == NONE) return;
  member *x = &s->m[i];
  if (u->incarnation < x->inc) {
    stale_accusation(s, i, u->from);
    return;
  }
  if (x->state == KV_SWIM_LEFT) {
    /* Whoever suspects a member that left missed its leave; tell it again
     * rather than let it declare the member dead. */
    if (u->incarnation == x->inc) enqueue_member(s, i, KV_SWIM_LEFT, x->id);
    return;
  }
  if (x->susp && u->incarnation > x->inc) {
    /* SWIM: Suspect(i) overrides Suspect(j) for i > j. The member refuted
     * the suspicion we hold (we missed that) and is suspected afresh, so
     * the old timer, which memberlist would keep, restarts. */
    clear_susp(x);
    x->state = KV_SWIM_ALIVE;
  }
  if (x->susp) {
    if (confirm(x, u->from)) {
      kv_swim_update c = {x->id,   x->inc,  KV_SWIM_SUSPECT,
                          u->from, x->name, x->addr};
      enqueue(s, &c);
    }
    return;
  }
  if (x->state != KV_SWIM_ALIVE) return;
  if (i == 0) {
    refute(s, u->incarnation);
    answer_accusation(s, 0, u->from);
    return;
  }
  x->inc = u->incarnation;
  enqueue_member(s, i, KV_SWIM_SUSPECT, u->from);
  set_state(s, i, KV_SWIM_SUSPECT, now);
  s->st.suspected++;
  size_t n = est_nodes(s, now);
  unsigned k = s->o.suspicion_k;
  if (n < 2 || n - 2 < k) k = 0;
  x->susp = true;
  x->susp_start = now;
  x->susp_from = u->from;
  x->susp_k = k;
  x->susp_n = 0;
  x->susp_min = kv_swim_suspicion_timeout(&s->o, n, 0, 0);
  x->susp_max = s->o.suspicion_max_mult * x->susp_min;
  x->susp_deadline = now + (k ? x->susp_max : x->susp_min);
  free(x->confirmers);
  x->confirmers = kv_calloc(k ? k : 1, sizeof *x->confirmers);
}

static void apply_dead(kv_swim *s, const kv_swim_update *u, uint64_t now) {
  size_t i = find(s, u->id);
  if (i == NONE) return;
  member *x = &s->m[i];
  if (u->incarnation < x->inc) {
    stale_accusation(s, i, u->from);
    return;
  }
  clear_susp(x);
  if (x->state == KV_SWIM_DEAD || x->state == KV_SWIM_LEFT) return;
  if (i == 0) {
    if (!s->leaving) {
      refute(s, u->incarnation);
      answer_accusation(s, 0, u->from);
    }
    return;
  }
  x->inc = u->incarnation;
  enqueue_member(s, i, u->state, u->from);
  set_state(s, i, u->state, now);
}

static void apply_update(kv_swim *s, const kv_swim_update *u, uint64_t now,
                         kv_rng *rng) {
  switch (u->state) {
  case KV_SWIM_ALIVE:
    apply_alive(s, u, now, rng);
    break;
  case KV_SWIM_SUSPECT:
    apply_suspect(s, u, now);
    break;
  case KV_SWIM_DEAD:
  case KV_SWIM_LEFT:
    apply_dead(s, u, now);
    break;
  default:
    kv_panic("bad state %d", (int)u->state);
  }
}

/* memberlist's mergeState: a remote table's DEAD is only a suspicion of ours
 * (the member gets a chance to refute), LEFT is final. Unlike memberlist,
 * which accuses in its own name, the suspicion keeps its accuser (or else
 * the sender's name): a relayed suspicion is not an independent
 * confirmation, and counting it as one let synchronized push-pulls cut a
 * suspicion to its minimum timeout in the simulation. */
static void merge_row(kv_swim *s, const kv_swim_update *u, uint64_t sender,
                      uint64_t now, kv_rng *rng) {
  kv_swim_update c = *u;
  switch (u->state) {
  case KV_SWIM_ALIVE:
    apply_alive(s, &c, now, rng);
    break;
  case KV_SWIM_LEFT:
    apply_dead(s, &c, now);
    break;
  case KV_SWIM_DEAD:
  case KV_SWIM_SUSPECT:
    c.state = KV_SWIM_SUSPECT;
    if (!c.from || c.from == u->id) c.from = sender;
    apply_suspect(s, &c, now);
    break;
  default:
    kv_panic("bad state %d", (int)u->state);
  }
}

/* ---- lifecycle ---- */

static uint64_t stagger(kv_rng *rng, uint64_t iv) {
  uint32_t cap = iv > UINT32_MAX ? UINT32_MAX : (uint32_t)iv;
  return 1 + kv_rng_below(rng, cap);
}

kv_swim *kv_swim_new(const kv_swim_opts *o, uint64_t self_id, const char *name,
                     const char *addr, uint64_t now_ms, kv_rng *rng) {
  kv_assert(self_id != 0 && name && addr);
  kv_assert(strlen(name) <= KV_SWIM_MAX_STR && strlen(addr) <= KV_SWIM_MAX_STR);
  kv_swim *s = kv_calloc(1, sizeof *s);
  s->o = fill_opts(o);
  s->self_id = self_id;
  s->cap = 8;
  s->m = kv_calloc(s->cap, sizeof *s->m);
  s->m[0] = (member){.id = self_id,
                     .name = dupstr(name),
                     .addr = dupstr(addr),
                     .state = KV_SWIM_ALIVE,
                     .inc = s->o.incarnation ? s->o.incarnation : 1,
                     .since = now_ms};
  s->n = 1;
  /* memberlist staggers each periodic timer by a random fraction of its
   * interval so that nodes started together do not act in lockstep. */
  s->next_probe = now_ms + stagger(rng, s->o.probe_interval_ms);
  s->next_gossip = now_ms + stagger(rng, s->o.gossip_interval_ms);
  s->next_push_pull = now_ms + stagger(rng, s->o.push_pull_interval_ms);
  enqueue_member(s, 0, KV_SWIM_ALIVE, 0);
  return s;
}

void kv_swim_free(kv_swim *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    free(s->m[i].name);
    free(s->m[i].addr);
    free(s->m[i].confirmers);
  }
  for (size_t i = 0; i < s->qn; i++)
    bcast_free(&s->q[i]);
  for (size_t i = 0; i < s->hn; i++)
    free(s->h[i].origin_addr);
  free(s->m);
  free(s->order);
  free(s->q);
  free(s->h);
  free(s->ev);
  free(s->exp);
  free(s->scratch);
  free(s->sidx);
  free(s->corr);
  free(s);
}

kv_swim_opts kv_swim_opts_get(const kv_swim *s) { return s->o; }

/* ---- probing ---- */

static void shuffle(kv_swim *s, kv_rng *rng) {
  for (size_t i = s->norder; i > 1; i--) {
    size_t j = kv_rng_below(rng, (uint32_t)i);
    size_t t = s->order[i - 1];
    s->order[i - 1] = s->order[j];
    s->order[j] = t;
  }
}

static bool probeable(const member *x) {
  return x->state == KV_SWIM_ALIVE || x->state == KV_SWIM_SUSPECT;
}

static void start_probe(kv_swim *s, uint64_t now, kv_rng *rng,
                        kv_swim_emit_fn emit, void *arg) {
  size_t pick = NONE;
  for (size_t steps = 0; steps <= s->norder && pick == NONE; steps++) {
    if (s->probe_i >= s->norder) {
      shuffle(s, rng);
      s->probe_i = 0;
      if (!s->norder) break;
    }
    size_t i = s->order[s->probe_i++];
    if (probeable(&s->m[i])) pick = i;
  }
  if (pick == NONE) {
    s->next_probe = now + s->o.probe_interval_ms;
    return;
  }
  member *x = &s->m[pick];
  s->probing = true;
  s->pindirect = false;
  s->ptarget = x->id;
  s->pseq = ++s->seq;
  s->pstart = now;
  s->pdirect = now + s->o.probe_timeout_ms;
  /* Lifeguard: the whole probe (and so the probe rate) stretches with our
   * local health score; the direct-ack wait does not, as in memberlist. */
  s->pdeadline = now + s->o.probe_interval_ms * (s->awareness + 1);
  s->pexpected = s->pnacks = 0;
  s->st.probes++;
  s->st.pings++;
  kv_swim_update buddy = {x->id,      x->inc,  KV_SWIM_SUSPECT,
                          s->self_id, x->name, x->addr};
  kv_swim_msg msg = {.type = KV_SWIM_PING, .seq = s->pseq, .target = x->id};
  send_msg(s, now, x->id, x->addr, &msg,
           x->state == KV_SWIM_SUSPECT ? &buddy : NULL,
           x->state == KV_SWIM_SUSPECT, emit, arg);
}

/* memberlist's probe ticker skips the ticks a long probe ran over. */
static void end_probe(kv_swim *s, uint64_t now) {
  uint64_t iv = s->o.probe_interval_ms;
  uint64_t k = (now - s->pstart + iv - 1) / iv;
  if (k == 0) k = 1;
  s->probing = false;
  s->next_probe = s->pstart + k * iv;
  if (s->leaving) s->next_probe = UINT64_MAX;
}

/* Up to k distinct random members satisfying ok, other than self and skip,
 * written to out (partial Fisher–Yates over the candidates). */
static size_t random_members(kv_swim *s, kv_rng *rng, size_t k, uint64_t skip,
                             uint64_t now, bool alive_only, size_t *out) {
  size_t c = 0;
  s->sidx = grow(s->sidx, &s->sidxcap, s->n, sizeof *s->sidx);
  for (size_t i = 1; i < s->n; i++) {
    const member *x = &s->m[i];
    if (x->id == skip) continue;
    bool ok = alive_only
                  ? x->state == KV_SWIM_ALIVE
                  : probeable(x) || now - x->since < s->o.gossip_to_the_dead_ms;
    if (ok) s->sidx[c++] = i;
  }
  size_t take = k < c ? k : c;
  for (size_t j = 0; j < take; j++) {
    size_t r = j + kv_rng_below(rng, (uint32_t)(c - j));
    size_t t = s->sidx[j];
    s->sidx[j] = s->sidx[r];
    s->sidx[r] = t;
    out[j] = s->sidx[j];
  }
  return take;
}

static void probe_timers(kv_swim *s, uint64_t now, kv_rng *rng,
                         kv_swim_emit_fn emit, void *arg) {
  if (s->probing && !s->pindirect && now >= s->pdirect) {
    s->pindirect = true;
    size_t k = s->o.indirect_checks;
    size_t *pick = kv_malloc(k * sizeof *pick);
    size_t got = random_members(s, rng, k, s->ptarget, now, true, pick);
    size_t ti = find(s, s->ptarget);
    const char *taddr = ti != NONE ? s->m[ti].addr : NULL;
    for (size_t j = 0; j < got; j++) {
      const member *hlp = &s->m[pick[j]];
      kv_swim_msg msg = {.type = KV_SWIM_PING_REQ,
                         .seq = s->pseq,
                         .target = s->ptarget,
                         .target_addr = taddr};
      s->st.ping_reqs++;
      send_msg(s, now, hlp->id, hlp->addr, &msg, NULL, 0, emit, arg);
    }
    s->pexpected = (unsigned)got;
    free(pick);
  }
  if (s->probing && now >= s->pdeadline) {
    s->st.probes_failed++;
    /* Lifeguard: helpers that could not even send a nack suggest the
     * problem is on our side; with no helpers any failure counts. */
    if (s->pexpected)
      awareness_delta(s, (int)(s->pexpected - s->pnacks));
    else
      awareness_delta(s, 1);
    size_t ti = find(s, s->ptarget);
    end_probe(s, now);
    if (ti != NONE) {
      kv_swim_update u = {s->ptarget, s->m[ti].inc, KV_SWIM_SUSPECT,
                          s->self_id, NULL,         NULL};
      apply_suspect(s, &u, now);
    }
  }
  if (!s->probing && !s->leaving && now >= s->next_probe)
    start_probe(s, now, rng, emit, arg);
}

/* ---- tick ---- */

static uint64_t push_pull_scaled(const kv_swim *s, uint64_t now) {
  size_t n = est_nodes(s, now);
  if (n <= 32) return s->o.push_pull_interval_ms;
  unsigned lg = 0; /* ceil(log2 n) */
  while (((size_t)1 << lg) < n)
    lg++;
  return s->o.push_pull_interval_ms * (lg - 5 + 1);
}

static void send_table(kv_swim *s, uint64_t now, uint64_t to,
                       const char *to_addr, bool join, bool reply,
                       kv_swim_emit_fn emit, void *arg) {
  const kv_swim_update *rows;
  size_t n;
  kv_swim_export(s, &rows, &n);
  kv_swim_msg msg = {.type = KV_SWIM_PUSH_PULL,
                     .from = s->self_id,
                     .from_addr = self_m(s)->addr,
                     .join = join,
                     .reply = reply,
                     .updates = rows,
                     .nupdates = n};
  (void)now;
  s->st.sent++;
  s->st.push_pulls++;
  s->in_emit = true;
  emit(arg, to, to_addr, &msg);
  s->in_emit = false;
}

uint64_t kv_swim_tick(kv_swim *s, uint64_t now, kv_rng *rng,
                      kv_swim_emit_fn emit, void *arg) {
  kv_assert(!s->in_emit);
  probe_timers(s, now, rng, emit, arg);

  for (size_t j = 0; j < s->hn;) {
    helped *h = &s->h[j];
    if (now < h->deadline) {
      j++;
      continue;
    }
    helped done = *h;
    s->h[j] = s->h[--s->hn];
    kv_swim_msg msg = {.type = KV_SWIM_NACK, .seq = done.origin_seq};
    s->st.nacks++;
    send_msg(s, now, done.origin, addr_of(s, done.origin, done.origin_addr),
             &msg, NULL, 0, emit, arg);
    free(done.origin_addr);
  }

  for (size_t i = 1; i < s->n; i++) {
    member *x = &s->m[i];
    if (x->susp && now >= x->susp_deadline && x->state == KV_SWIM_SUSPECT) {
      kv_swim_update d = {x->id, x->inc, KV_SWIM_DEAD, s->self_id, NULL, NULL};
      s->st.declared_dead++;
      apply_dead(s, &d, now);
    }
  }

  if (now >= s->next_gossip) {
    s->next_gossip += s->o.gossip_interval_ms;
    if (s->next_gossip <= now) s->next_gossip = now + s->o.gossip_interval_ms;
    if (s->qn) {
      size_t k = s->o.gossip_nodes;
      size_t *pick = kv_malloc(k * sizeof *pick);
      size_t got = random_members(s, rng, k, 0, now, false, pick);
      for (size_t j = 0; j < got && s->qn; j++) {
        uint64_t id = s->m[pick[j]].id;
        kv_swim_msg msg = {.type = KV_SWIM_GOSSIP};
        s->st.gossips++;
        send_msg(s, now, id, s->m[pick[j]].addr, &msg, NULL, 0, emit, arg);
      }
      free(pick);
    }
  }

  if (now >= s->next_push_pull) {
    s->next_push_pull = now + push_pull_scaled(s, now);
    size_t pick;
    if (!s->leaving && random_members(s, rng, 1, 0, now, true, &pick) == 1)
      send_table(s, now, s->m[pick].id, s->m[pick].addr, false, false, emit,
                 arg);
  }
  return kv_swim_next_due(s);
}

uint64_t kv_swim_next_due(const kv_swim *s) {
  uint64_t t = s->next_gossip;
  if (s->next_push_pull < t) t = s->next_push_pull;
  if (s->probing) {
    if (!s->pindirect && s->pdirect < t) t = s->pdirect;
    if (s->pdeadline < t) t = s->pdeadline;
  } else if (!s->leaving && s->next_probe < t) {
    t = s->next_probe;
  }
  for (size_t j = 0; j < s->hn; j++)
    if (s->h[j].deadline < t) t = s->h[j].deadline;
  for (size_t i = 1; i < s->n; i++)
    if (s->m[i].susp && s->m[i].susp_deadline < t) t = s->m[i].susp_deadline;
  return t;
}

/* ---- receive ---- */

static bool str_ok(const char *p) {
  return !p || strnlen(p, KV_SWIM_MAX_STR + 1) <= KV_SWIM_MAX_STR;
}

static int validate(const kv_swim *s, const kv_swim_msg *m) {
  if (!m || m->from == 0 || m->from == s->self_id) return KV_BAD_REQUEST;
  if (m->type < KV_SWIM_PING || m->type > KV_SWIM_PUSH_PULL)
    return KV_BAD_REQUEST;
  /* Probing ourselves for someone would send a ping to ourselves (the peer
   * fuzzer found it). */
  if (m->type == KV_SWIM_PING_REQ &&
      (m->target == 0 || m->target == s->self_id))
    return KV_BAD_REQUEST;
  if (!str_ok(m->from_addr) || !str_ok(m->target_addr)) return KV_BAD_REQUEST;
  if (m->nupdates > KV_SWIM_MAX_UPDATES || (m->nupdates && !m->updates))
    return KV_BAD_REQUEST;
  for (size_t i = 0; i < m->nupdates; i++) {
    const kv_swim_update *u = &m->updates[i];
    if (u->id == 0 || u->state < KV_SWIM_ALIVE || u->state > KV_SWIM_LEFT)
      return KV_BAD_REQUEST;
    if (u->state == KV_SWIM_ALIVE && (!u->name || !u->addr))
      return KV_BAD_REQUEST;
    if (!str_ok(u->name) || !str_ok(u->addr)) return KV_BAD_REQUEST;
  }
  return KV_OK;
}

int kv_swim_recv(kv_swim *s, uint64_t now, kv_rng *rng, const kv_swim_msg *m,
                 kv_swim_emit_fn emit, void *arg) {
  kv_assert(!s->in_emit);
  int rc = validate(s, m);
  if (rc != KV_OK) return rc;

  if (m->type == KV_SWIM_PUSH_PULL) {
    if (!m->reply)
      send_table(s, now, m->from, m->from_addr, false, true, emit, arg);
    for (size_t i = 0; i < m->nupdates; i++)
      merge_row(s, &m->updates[i], m->from, now, rng);
    return KV_OK;
  }
  s->collect = true;
  s->collect_sender = m->from;
  s->ncorr = 0;
  for (size_t i = 0; i < m->nupdates; i++)
    apply_update(s, &m->updates[i], now, rng);
  s->collect = false;
  if (s->ncorr) {
    /* One gossip message per destination, in order of first mention. */
    size_t ncorr = s->ncorr;
    struct corr *c = kv_malloc(ncorr * sizeof *c);
    memcpy(c, s->corr, ncorr * sizeof *c);
    s->ncorr = 0;
    kv_swim_update *fix = kv_malloc(ncorr * sizeof *fix);
    for (size_t j = 0; j < ncorr; j++) {
      uint64_t to = c[j].to;
      if (!to) continue;
      size_t nfix = 0;
      for (size_t k = j; k < ncorr; k++) {
        if (c[k].to != to) continue;
        c[k].to = 0;
        const member *x = &s->m[c[k].i];
        /* Still alive at the incarnation to tell after the whole message? */
        if (x->state != KV_SWIM_ALIVE) continue;
        fix[nfix++] =
            (kv_swim_update){x->id, x->inc, KV_SWIM_ALIVE, 0, x->name, x->addr};
      }
      const char *addr = addr_of(s, to, to == m->from ? m->from_addr : NULL);
      if (!nfix || !addr) continue;
      kv_swim_msg g = {.type = KV_SWIM_GOSSIP};
      s->st.gossips++;
      send_msg(s, now, to, addr, &g, fix, nfix, emit, arg);
    }
    free(fix);
    free(c);
  }

  switch (m->type) {
  case KV_SWIM_PING:
    /* A ping meant for another id (we restarted under a new one) gets no
     * ack, so the prober does not take us for the member it meant. */
    if (m->target == 0 || m->target == s->self_id) {
      kv_swim_msg ack = {.type = KV_SWIM_ACK, .seq = m->seq};
      s->st.acks++;
      send_msg(s, now, m->from, addr_of(s, m->from, m->from_addr), &ack, NULL,
               0, emit, arg);
    }
    break;
  case KV_SWIM_PING_REQ: {
    s->h = grow(s->h, &s->hcap, s->hn + 1, sizeof *s->h);
    helped *h = &s->h[s->hn++];
    h->local_seq = ++s->seq;
    h->origin_seq = m->seq;
    h->origin = m->from;
    h->origin_addr = dupstr(m->from_addr);
    h->deadline = now + s->o.probe_timeout_ms;
    kv_swim_msg ping = {
        .type = KV_SWIM_PING, .seq = h->local_seq, .target = m->target};
    s->st.pings++;
    send_msg(s, now, m->target, addr_of(s, m->target, m->target_addr), &ping,
             NULL, 0, emit, arg);
    break;
  }
  case KV_SWIM_ACK:
    if (s->probing && m->seq == s->pseq) {
      awareness_delta(s, -1);
      end_probe(s, now);
      break;
    }
    for (size_t j = 0; j < s->hn; j++) {
      if (s->h[j].local_seq != m->seq) continue;
      helped done = s->h[j];
      s->h[j] = s->h[--s->hn];
      kv_swim_msg ack = {.type = KV_SWIM_ACK, .seq = done.origin_seq};
      s->st.acks++;
      send_msg(s, now, done.origin, addr_of(s, done.origin, done.origin_addr),
               &ack, NULL, 0, emit, arg);
      free(done.origin_addr);
      break;
    }
    break;
  case KV_SWIM_NACK:
    if (s->probing && s->pindirect && m->seq == s->pseq &&
        s->pnacks < s->pexpected)
      s->pnacks++;
    break;
  default:
    break;
  }
  return KV_OK;
}

/* ---- join, leave, getters ---- */

void kv_swim_join(kv_swim *s, const char *addr, kv_swim_emit_fn emit,
                  void *arg) {
  kv_assert(!s->in_emit);
  send_table(s, 0, 0, addr, true, false, emit, arg);
}

void kv_swim_leave(kv_swim *s, uint64_t now) {
  kv_assert(!s->in_emit);
  if (s->leaving) return;
  s->leaving = true;
  s->probing = false;
  s->next_probe = UINT64_MAX;
  enqueue_member(s, 0, KV_SWIM_LEFT, s->self_id);
  set_state(s, 0, KV_SWIM_LEFT, now);
}

void kv_swim_export(kv_swim *s, const kv_swim_update **out, size_t *n) {
  s->exp = grow(s->exp, &s->expcap, s->n, sizeof *s->exp);
  for (size_t i = 0; i < s->n; i++) {
    const member *x = &s->m[i];
    uint64_t from = x->state == KV_SWIM_SUSPECT && x->susp ? x->susp_from : 0;
    s->exp[i] =
        (kv_swim_update){x->id, x->inc, x->state, from, x->name, x->addr};
  }
  *out = s->exp;
  *n = s->n;
}

int kv_swim_member_get(const kv_swim *s, uint64_t id, kv_swim_member *out) {
  size_t i = find(s, id);
  if (i == NONE) return KV_NOTFOUND;
  const member *x = &s->m[i];
  *out = (kv_swim_member){x->id, x->name, x->addr, x->state, x->inc, x->since};
  return KV_OK;
}

size_t kv_swim_count(const kv_swim *s) { return s->n; }

size_t kv_swim_alive_peers(const kv_swim *s, uint64_t *out, size_t cap) {
  size_t c = 0;
  for (size_t i = 1; i < s->n; i++) {
    if (s->m[i].state != KV_SWIM_ALIVE) continue;
    if (c < cap) out[c] = s->m[i].id;
    c++;
  }
  return c;
}

bool kv_swim_next_event(kv_swim *s, kv_swim_event *out) {
  if (s->evhead == s->evn) return false;
  *out = s->ev[s->evhead++];
  return true;
}

unsigned kv_swim_health(const kv_swim *s) { return s->awareness; }

void kv_swim_stats_get(const kv_swim *s, kv_swim_stats *out) {
  *out = s->st;
  out->queued = s->qn;
}
