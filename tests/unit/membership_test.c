/*
 * Unit tests for sync/membership: the suspicion and retransmit formulas,
 * direct and indirect probes with nacks and Lifeguard's health score,
 * suspicion timeouts shortened by confirmations, refutation, the buddy
 * system, update precedence, the broadcast queue, push-pull merging, leave
 * and input validation; then a deterministic N-node network simulation
 * (virtual clock, delay, loss, crash, pause, join, leave) that prints its
 * detection times and traffic. The run's seed is printed; KV_SEED replays it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/peer.pb-c.h"
#include "sync/membership.h"
#include "sync/rng.h"
#include "tests/unit/testutil.h"

static uint64_t seed;

/* ---- captured messages (deep copies) ---- */

typedef struct cmsg {
  uint64_t to;
  char *to_addr;
  kv_swim_msg m;
} cmsg;

static char *sdup(const char *p) {
  if (!p) return NULL;
  size_t n = strlen(p) + 1;
  char *d = malloc(n);
  assert_non_null(d);
  memcpy(d, p, n);
  return d;
}

static void cmsg_copy(cmsg *c, uint64_t to, const char *to_addr,
                      const kv_swim_msg *m) {
  c->to = to;
  c->to_addr = sdup(to_addr);
  c->m = *m;
  c->m.from_addr = sdup(m->from_addr);
  c->m.target_addr = sdup(m->target_addr);
  kv_swim_update *u = NULL;
  if (m->nupdates) {
    u = calloc(m->nupdates, sizeof *u);
    assert_non_null(u);
    for (size_t i = 0; i < m->nupdates; i++) {
      u[i] = m->updates[i];
      u[i].name = sdup(m->updates[i].name);
      u[i].addr = sdup(m->updates[i].addr);
    }
  }
  c->m.updates = u;
}

static void cmsg_free(cmsg *c) {
  free(c->to_addr);
  free((char *)c->m.from_addr);
  free((char *)c->m.target_addr);
  for (size_t i = 0; i < c->m.nupdates; i++) {
    free((char *)c->m.updates[i].name);
    free((char *)c->m.updates[i].addr);
  }
  free((void *)c->m.updates);
}

#define OUT_MAX 256
typedef struct outbox {
  cmsg msg[OUT_MAX];
  size_t n;
} outbox;

static void out_emit(void *arg, uint64_t to, const char *to_addr,
                     const kv_swim_msg *m) {
  outbox *o = arg;
  assert_true(o->n < OUT_MAX);
  cmsg_copy(&o->msg[o->n++], to, to_addr, m);
}

static void out_clear(outbox *o) {
  for (size_t i = 0; i < o->n; i++)
    cmsg_free(&o->msg[i]);
  o->n = 0;
}

static size_t out_count(const outbox *o, kv_swim_msg_type t) {
  size_t c = 0;
  for (size_t i = 0; i < o->n; i++)
    c += o->msg[i].m.type == t;
  return c;
}

static const cmsg *out_find(const outbox *o, kv_swim_msg_type t) {
  for (size_t i = 0; i < o->n; i++)
    if (o->msg[i].m.type == t) return &o->msg[i];
  return NULL;
}

/* ---- unit helpers ---- */

static char names[64][16], addrs[64][16];

static void init_names(void) {
  for (int i = 0; i < 64; i++) {
    snprintf(names[i], sizeof names[i], "n%d", i);
    snprintf(addrs[i], sizeof addrs[i], "a%d", i);
  }
}

/* A node whose timers are not staggered (rng state chosen so the first
 * stagger draws are irrelevant: tests tick from 1000 on). */
static kv_swim *mk_opts(const kv_swim_opts *o, uint64_t id) {
  kv_rng r = {id};
  return kv_swim_new(o, id, names[id], addrs[id], 0, &r);
}

static kv_swim *mk(uint64_t id) { return mk_opts(NULL, id); }

static kv_swim_update upd(uint64_t id, uint64_t inc, kv_swim_state st,
                          uint64_t from) {
  return (kv_swim_update){id, inc, st, from, names[id], addrs[id]};
}

/* Delivers one gossip message from `from` carrying the given updates. */
static void feed(kv_swim *s, uint64_t now, uint64_t from,
                 const kv_swim_update *u, size_t n, outbox *o) {
  kv_rng r = {1};
  kv_swim_msg m = {.type = KV_SWIM_GOSSIP,
                   .from = from,
                   .from_addr = addrs[from],
                   .updates = u,
                   .nupdates = n};
  assert_int_equal(kv_swim_recv(s, now, &r, &m, out_emit, o), KV_OK);
}

static void know(kv_swim *s, uint64_t id) {
  outbox o = {0};
  kv_swim_update u = upd(id, 1, KV_SWIM_ALIVE, 0);
  feed(s, 0, id, &u, 1, &o);
  out_clear(&o);
}

static kv_swim_state state_of(const kv_swim *s, uint64_t id) {
  kv_swim_member m;
  assert_int_equal(kv_swim_member_get(s, id, &m), KV_OK);
  return m.state;
}

static uint64_t inc_of(const kv_swim *s, uint64_t id) {
  kv_swim_member m;
  assert_int_equal(kv_swim_member_get(s, id, &m), KV_OK);
  return m.incarnation;
}

static void drain_events(kv_swim *s) {
  kv_swim_event e;
  while (kv_swim_next_event(s, &e)) {
  }
}

/* ---- formulas ---- */

static void test_swim_suspicion_timeout_formula(void **st) {
  (void)st;
  /* N=8: log10(8) < 1 so min = 4 * 1 * 1 s, max = 6 * min. */
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 8, 2, 0), 24000);
  /* 24000 - 20000 * ln 2 / ln 3 = 11381.4 */
  uint64_t one = kv_swim_suspicion_timeout(NULL, 8, 2, 1);
  assert_true(one >= 11380 && one <= 11382);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 8, 2, 2), 4000);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 8, 2, 5), 4000);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 8, 0, 0), 4000);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 1, 2, 0), 24000);
  /* memberlist's LAN figures: N=100 -> 8 s / 48 s, N=10k -> 16 s / 96 s. */
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 100, 2, 2), 8000);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 100, 2, 0), 48000);
  assert_int_equal(kv_swim_suspicion_timeout(NULL, 10000, 2, 0), 96000);
  kv_swim_opts o = {.probe_interval_ms = 200, .suspicion_mult = 3};
  assert_int_equal(kv_swim_suspicion_timeout(&o, 5, 1, 0), 3600);
  assert_int_equal(kv_swim_suspicion_timeout(&o, 5, 1, 1), 600);
}

static void test_swim_retransmit_limit(void **st) {
  (void)st;
  /* RetransmitMult * ceil(log10(N+1)): N<=9 -> 4, <100 -> 8, ... */
  assert_int_equal(kv_swim_retransmit_limit(NULL, 1), 4);
  assert_int_equal(kv_swim_retransmit_limit(NULL, 9), 4);
  assert_int_equal(kv_swim_retransmit_limit(NULL, 10), 8);
  assert_int_equal(kv_swim_retransmit_limit(NULL, 99), 8);
  assert_int_equal(kv_swim_retransmit_limit(NULL, 100), 12);
  assert_int_equal(kv_swim_retransmit_limit(NULL, 1000), 16);
  kv_swim_opts o = {.retransmit_mult = 2};
  assert_int_equal(kv_swim_retransmit_limit(&o, 50), 4);
}

static void test_swim_defaults_are_memberlist_lan(void **st) {
  (void)st;
  kv_swim *s = mk(1);
  kv_swim_opts o = kv_swim_opts_get(s);
  assert_int_equal(o.probe_interval_ms, 1000);
  assert_int_equal(o.probe_timeout_ms, 500);
  assert_int_equal(o.indirect_checks, 3);
  assert_int_equal(o.suspicion_mult, 4);
  assert_int_equal(o.suspicion_max_mult, 6);
  assert_int_equal(o.suspicion_k, 2);
  assert_int_equal(o.retransmit_mult, 4);
  assert_int_equal(o.awareness_max, 8);
  assert_int_equal(o.gossip_nodes, 3);
  assert_int_equal(o.gossip_interval_ms, 200);
  assert_int_equal(o.push_pull_interval_ms, 30000);
  assert_true(kv_swim_next_due(s) >= 1 && kv_swim_next_due(s) <= 200);
  kv_swim_free(s);
  kv_swim_free(NULL);
}

/* A restarted member starts above the incarnation of its previous life, so
 * its alive beats the dead entry the others keep of it at once. */
static void test_swim_start_incarnation(void **st) {
  (void)st;
  kv_rng r = {3};
  kv_swim_opts o = {.incarnation = 5000};
  kv_swim *a = kv_swim_new(&o, 1, "n1", "a:1", 0, &r);
  kv_swim_member m;
  assert_int_equal(kv_swim_member_get(a, 1, &m), KV_OK);
  assert_int_equal(m.incarnation, 5000);
  /* b holds a dead at 4999 (its previous life); a's alive at 5000 wins. */
  kv_swim *b = mk(2);
  kv_swim_update old = {1, 4999, KV_SWIM_ALIVE, 0, "n1", "a:1"};
  kv_swim_update dead = {1, 4999, KV_SWIM_DEAD, 2, "n1", "a:1"};
  kv_swim_update alive = {1, 5000, KV_SWIM_ALIVE, 0, "n1", "a:1"};
  kv_swim_msg g = {.type = KV_SWIM_GOSSIP, .from = 3, .from_addr = "c:3",
                   .updates = &old, .nupdates = 1};
  outbox ob = {0};
  assert_int_equal(kv_swim_recv(b, 5, &r, &g, out_emit, &ob), KV_OK);
  g.updates = &dead;
  assert_int_equal(kv_swim_recv(b, 10, &r, &g, out_emit, &ob), KV_OK);
  assert_int_equal(state_of(b, 1), KV_SWIM_DEAD);
  g.updates = &alive;
  assert_int_equal(kv_swim_recv(b, 20, &r, &g, out_emit, &ob), KV_OK);
  assert_int_equal(state_of(b, 1), KV_SWIM_ALIVE);
  out_clear(&ob);
  kv_swim_free(a);
  kv_swim_free(b);
}

/* The wire form: encode, unpack as a peer message, decode: the same
 * message; hostile states and counts are refused. */
static void test_swim_wire_round_trip(void **st) {
  (void)st;
  kv_swim_update ups[2] = {{7, 42, KV_SWIM_SUSPECT, 9, NULL, NULL},
                           {8, 1, KV_SWIM_ALIVE, 0, "n8", "h:8"}};
  kv_swim_msg m = {.type = KV_SWIM_PING_REQ, .seq = 77, .from = 3,
                   .from_addr = "h:3", .target = 8, .target_addr = "h:8",
                   .updates = ups, .nupdates = 2};
  kv_buf enc;
  kv_swim_encode(&m, &enc);
  Kvpb__PeerMessage *pm = kvpb__peer_message__unpack(NULL, enc.len, enc.data);
  assert_non_null(pm);
  assert_int_equal(pm->body_case, KVPB__PEER_MESSAGE__BODY_SWIM);
  kv_swim_decoded d;
  assert_int_equal(kv_swim_decode(pm->swim, &d), KV_OK);
  assert_int_equal(d.msg.type, KV_SWIM_PING_REQ);
  assert_int_equal(d.msg.seq, 77);
  assert_int_equal(d.msg.from, 3);
  assert_string_equal(d.msg.from_addr, "h:3");
  assert_int_equal(d.msg.target, 8);
  assert_string_equal(d.msg.target_addr, "h:8");
  assert_false(d.msg.join || d.msg.reply);
  assert_int_equal(d.msg.nupdates, 2);
  assert_int_equal(d.msg.updates[0].id, 7);
  assert_int_equal(d.msg.updates[0].incarnation, 42);
  assert_int_equal(d.msg.updates[0].state, KV_SWIM_SUSPECT);
  assert_int_equal(d.msg.updates[0].from, 9);
  assert_null(d.msg.updates[0].name); /* empty on the wire: NULL again */
  assert_string_equal(d.msg.updates[1].addr, "h:8");
  kv_swim_decoded_fini(&d);
  /* A state outside 1..4 is refused, and so is a count above the bound. */
  pm->swim->updates[1]->state = 5;
  assert_int_equal(kv_swim_decode(pm->swim, &d), KV_BAD_REQUEST);
  assert_null(d.ups);
  pm->swim->updates[1]->state = 0;
  assert_int_equal(kv_swim_decode(pm->swim, &d), KV_BAD_REQUEST);
  pm->swim->updates[1]->state = KV_SWIM_LEFT;
  size_t n = pm->swim->n_updates;
  pm->swim->n_updates = KV_SWIM_MAX_UPDATES + 1;
  assert_int_equal(kv_swim_decode(pm->swim, &d), KV_BAD_REQUEST);
  pm->swim->n_updates = n;
  kvpb__peer_message__free_unpacked(pm, NULL);
  kv_buf_free(&enc);
}

/* A ping-req asking us to probe ourselves is refused: it would make us
 * ping ourselves (found by the peer fuzzer). */
static void test_swim_ping_req_for_self_refused(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  know(a, 2);
  kv_rng r = {9};
  outbox o = {0};
  kv_swim_msg m = {.type = KV_SWIM_PING_REQ, .seq = 5, .from = 2,
                   .from_addr = "n2", .target = 1, .target_addr = "n1"};
  assert_int_equal(kv_swim_recv(a, 10, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  assert_int_equal(out_count(&o, KV_SWIM_PING), 0);
  m.target = 0;
  assert_int_equal(kv_swim_recv(a, 10, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  out_clear(&o);
  kv_swim_free(a);
}

/* ---- probing ---- */

static void test_swim_probe_direct_ack(void **st) {
  (void)st;
  kv_swim *a = mk(1), *b = mk(2);
  know(a, 2);
  outbox o = {0};
  kv_rng r = {7};
  kv_swim_tick(a, 1000, &r, out_emit, &o);
  const cmsg *ping = out_find(&o, KV_SWIM_PING);
  assert_non_null(ping);
  assert_int_equal(ping->to, 2);
  assert_int_equal(ping->m.target, 2);
  assert_int_equal(ping->m.from, 1);
  outbox ob = {0};
  assert_int_equal(kv_swim_recv(b, 1001, &r, &ping->m, out_emit, &ob), KV_OK);
  const cmsg *ack = out_find(&ob, KV_SWIM_ACK);
  assert_non_null(ack);
  assert_int_equal(ack->to, 1);
  assert_int_equal(ack->m.seq, ping->m.seq);
  /* b learned a from the piggybacked alive update. */
  assert_int_equal(state_of(b, 1), KV_SWIM_ALIVE);
  out_clear(&o);
  assert_int_equal(kv_swim_recv(a, 1002, &r, &ack->m, out_emit, &o), KV_OK);
  /* Probe done: no ping-req at +500, next probe at +1000. */
  assert_int_equal(kv_swim_tick(a, 1500, &r, out_emit, &o) > 1500, true);
  assert_int_equal(out_count(&o, KV_SWIM_PING_REQ), 0);
  kv_swim_tick(a, 2000, &r, out_emit, &o);
  assert_int_equal(out_count(&o, KV_SWIM_PING), 1);
  assert_int_equal(state_of(a, 2), KV_SWIM_ALIVE);
  assert_int_equal(kv_swim_health(a), 0);
  out_clear(&o);
  out_clear(&ob);
  kv_swim_free(a);
  kv_swim_free(b);
}

static void test_swim_ping_for_other_id_not_acked(void **st) {
  (void)st;
  kv_swim *b = mk(2);
  outbox o = {0};
  kv_rng r = {1};
  kv_swim_msg m = {.type = KV_SWIM_PING, .seq = 5, .from = 1, .target = 9};
  assert_int_equal(kv_swim_recv(b, 0, &r, &m, out_emit, &o), KV_OK);
  assert_int_equal(o.n, 0);
  kv_swim_free(b);
}

/* a probes its only-target candidate 2 among helpers 3..6; returns the
 * outbox with the ping-reqs sent at +500. */
static kv_swim *probe_setup(uint64_t *target, outbox *o, kv_rng *r) {
  kv_swim *a = mk(1);
  for (uint64_t id = 2; id <= 6; id++)
    know(a, id);
  drain_events(a);
  kv_swim_tick(a, 1000, r, out_emit, o);
  const cmsg *ping = out_find(o, KV_SWIM_PING);
  assert_non_null(ping);
  *target = ping->m.target;
  out_clear(o);
  kv_swim_tick(a, 1499, r, out_emit, o);
  assert_int_equal(out_count(o, KV_SWIM_PING_REQ), 0);
  kv_swim_tick(a, 1500, r, out_emit, o);
  return a;
}

static void test_swim_probe_indirect_then_suspect(void **st) {
  (void)st;
  outbox o = {0};
  kv_rng r = {11};
  uint64_t t;
  kv_swim *a = probe_setup(&t, &o, &r);
  assert_int_equal(out_count(&o, KV_SWIM_PING_REQ), 3);
  uint64_t seen[3];
  size_t k = 0;
  for (size_t i = 0; i < o.n; i++) {
    if (o.msg[i].m.type != KV_SWIM_PING_REQ) continue;
    assert_int_equal(o.msg[i].m.target, t);
    assert_string_equal(o.msg[i].m.target_addr, addrs[t]);
    assert_true(o.msg[i].to != t && o.msg[i].to != 1);
    for (size_t j = 0; j < k; j++)
      assert_true(seen[j] != o.msg[i].to);
    seen[k++] = o.msg[i].to;
  }
  out_clear(&o);
  kv_swim_tick(a, 1999, &r, out_emit, &o);
  assert_int_equal(state_of(a, t), KV_SWIM_ALIVE);
  kv_swim_tick(a, 2000, &r, out_emit, &o);
  assert_int_equal(state_of(a, t), KV_SWIM_SUSPECT);
  /* Three helpers, no nacks: Lifeguard charges all three to our health. */
  assert_int_equal(kv_swim_health(a), 3);
  kv_swim_event e;
  bool found = false;
  while (kv_swim_next_event(a, &e))
    if (e.id == t && e.old_state == KV_SWIM_ALIVE &&
        e.new_state == KV_SWIM_SUSPECT)
      found = true;
  assert_true(found);
  out_clear(&o);
  kv_swim_free(a);
}

static void test_swim_nacks_spare_health(void **st) {
  (void)st;
  outbox o = {0};
  kv_rng r = {12};
  uint64_t t;
  kv_swim *a = probe_setup(&t, &o, &r);
  for (size_t i = 0; i < o.n; i++) {
    if (o.msg[i].m.type != KV_SWIM_PING_REQ) continue;
    kv_swim_msg nack = {
        .type = KV_SWIM_NACK, .seq = o.msg[i].m.seq, .from = o.msg[i].to};
    outbox x = {0};
    assert_int_equal(kv_swim_recv(a, 1900, &r, &nack, out_emit, &x), KV_OK);
    /* A duplicate nack counts once. */
    assert_int_equal(kv_swim_recv(a, 1900, &r, &nack, out_emit, &x), KV_OK);
  }
  out_clear(&o);
  kv_swim_tick(a, 2000, &r, out_emit, &o);
  assert_int_equal(state_of(a, t), KV_SWIM_SUSPECT);
  /* 3 expected, but duplicates were capped at the 3 helpers: 0 charged. */
  assert_int_equal(kv_swim_health(a), 0);
  out_clear(&o);
  kv_swim_free(a);
}

static void test_swim_indirect_ack_saves_target(void **st) {
  (void)st;
  outbox o = {0};
  kv_rng r = {13};
  uint64_t t;
  kv_swim *a = probe_setup(&t, &o, &r);
  const cmsg *req = out_find(&o, KV_SWIM_PING_REQ);
  kv_swim_msg ack = {.type = KV_SWIM_ACK, .seq = req->m.seq, .from = req->to};
  outbox x = {0};
  assert_int_equal(kv_swim_recv(a, 1800, &r, &ack, out_emit, &x), KV_OK);
  kv_swim_tick(a, 2000, &r, out_emit, &x);
  assert_int_equal(state_of(a, t), KV_SWIM_ALIVE);
  assert_int_equal(kv_swim_health(a), 0);
  out_clear(&o);
  out_clear(&x);
  kv_swim_free(a);
}

static void test_swim_helper_relays_ack_or_nacks(void **st) {
  (void)st;
  kv_swim *h = mk(3);
  know(h, 2);
  outbox o = {0};
  kv_rng r = {3};
  kv_swim_msg req = {.type = KV_SWIM_PING_REQ,
                     .seq = 77,
                     .from = 1,
                     .from_addr = addrs[1],
                     .target = 2,
                     .target_addr = addrs[2]};
  assert_int_equal(kv_swim_recv(h, 100, &r, &req, out_emit, &o), KV_OK);
  const cmsg *ping = out_find(&o, KV_SWIM_PING);
  assert_non_null(ping);
  assert_int_equal(ping->to, 2);
  assert_int_equal(ping->m.target, 2);
  kv_swim_msg ack = {.type = KV_SWIM_ACK, .seq = ping->m.seq, .from = 2};
  outbox o2 = {0};
  assert_int_equal(kv_swim_recv(h, 150, &r, &ack, out_emit, &o2), KV_OK);
  const cmsg *rel = out_find(&o2, KV_SWIM_ACK);
  assert_non_null(rel);
  assert_int_equal(rel->to, 1);
  assert_string_equal(rel->to_addr, addrs[1]);
  assert_int_equal(rel->m.seq, 77);
  out_clear(&o2);
  kv_swim_tick(h, 700, &r, out_emit, &o2);
  assert_int_equal(out_count(&o2, KV_SWIM_NACK), 0);
  out_clear(&o2);
  out_clear(&o);

  /* Unanswered: a nack to the origin after probe_timeout, not before. */
  req.seq = 78;
  assert_int_equal(kv_swim_recv(h, 1000, &r, &req, out_emit, &o), KV_OK);
  kv_swim_tick(h, 1499, &r, out_emit, &o2);
  assert_int_equal(out_count(&o2, KV_SWIM_NACK), 0);
  kv_swim_tick(h, 1500, &r, out_emit, &o2);
  const cmsg *nack = out_find(&o2, KV_SWIM_NACK);
  assert_non_null(nack);
  assert_int_equal(nack->to, 1);
  assert_int_equal(nack->m.seq, 78);
  out_clear(&o);
  out_clear(&o2);
  kv_swim_free(h);
}

static void test_swim_awareness_stretches_probe(void **st) {
  (void)st;
  outbox o = {0};
  kv_rng r = {14};
  uint64_t t;
  kv_swim *a = probe_setup(&t, &o, &r);
  out_clear(&o);
  kv_swim_tick(a, 2000, &r, out_emit, &o); /* fails: health 3 */
  assert_int_equal(kv_swim_health(a), 3);
  /* The next probe started at 2000 and now runs 4 intervals. */
  const cmsg *ping = out_find(&o, KV_SWIM_PING);
  assert_non_null(ping);
  uint32_t seq = ping->m.seq;
  uint64_t pinged = ping->to;
  out_clear(&o);
  kv_swim_tick(a, 2500, &r, out_emit, &o);
  assert_int_equal(out_count(&o, KV_SWIM_PING_REQ), 3); /* not scaled */
  out_clear(&o);
  kv_swim_tick(a, 5999, &r, out_emit, &o);
  assert_int_equal(out_count(&o, KV_SWIM_PING), 0);
  kv_swim_msg ack = {.type = KV_SWIM_ACK, .seq = seq, .from = pinged};
  assert_int_equal(kv_swim_recv(a, 5999, &r, &ack, out_emit, &o), KV_OK);
  assert_int_equal(kv_swim_health(a), 2);
  /* Health never exceeds awareness_max - 1. */
  for (uint64_t now = 6000; now < 200000; now += 100)
    kv_swim_tick(a, now, &r, out_emit, &o), out_clear(&o);
  assert_true(kv_swim_health(a) <= 7);
  assert_true(kv_swim_health(a) >= 1);
  kv_swim_free(a);
}

/* ---- suspicion ---- */

static void test_swim_suspicion_expires_to_dead(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  for (uint64_t id = 2; id <= 5; id++)
    know(a, id);
  outbox o = {0};
  kv_rng r = {2};
  kv_swim_update s = upd(2, 1, KV_SWIM_SUSPECT, 3);
  feed(a, 100, 3, &s, 1, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_SUSPECT);
  /* N=5, K=2, no confirmations: max = 24 s from the suspicion. */
  uint64_t to = kv_swim_suspicion_timeout(NULL, 5, 2, 0);
  assert_int_equal(to, 24000);
  kv_swim_tick(a, 100 + to - 1, &r, out_emit, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_SUSPECT);
  out_clear(&o);
  kv_swim_tick(a, 100 + to, &r, out_emit, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_DEAD);
  kv_swim_stats ss;
  kv_swim_stats_get(a, &ss);
  assert_int_equal(ss.declared_dead, 1);
  out_clear(&o);
  kv_swim_free(a);
}

static void test_swim_confirmations_shorten_timeout(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  for (uint64_t id = 2; id <= 5; id++)
    know(a, id);
  outbox o = {0};
  kv_rng r = {2};
  kv_swim_update s = upd(2, 1, KV_SWIM_SUSPECT, 3);
  feed(a, 0, 3, &s, 1, &o);
  /* The originator again, and a repeat, do not count. */
  feed(a, 10, 3, &s, 1, &o);
  s.from = 4;
  feed(a, 20, 4, &s, 1, &o);
  feed(a, 30, 4, &s, 1, &o);
  uint64_t one = kv_swim_suspicion_timeout(NULL, 5, 2, 1);
  kv_swim_tick(a, one - 1, &r, out_emit, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_SUSPECT);
  out_clear(&o);
  /* Second independent confirmer: the timeout falls to min (4 s), which
   * has already passed, so the next tick declares it dead. */
  s.from = 5;
  feed(a, one - 1, 5, &s, 1, &o);
  assert_int_equal(kv_swim_next_due(a), 4000);
  kv_swim_tick(a, one, &r, out_emit, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_DEAD);
  out_clear(&o);
  kv_swim_free(a);
}

static void test_swim_alive_clears_suspicion(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  for (uint64_t id = 2; id <= 5; id++)
    know(a, id);
  outbox o = {0};
  kv_rng r = {2};
  kv_swim_update s = upd(2, 1, KV_SWIM_SUSPECT, 3);
  feed(a, 0, 3, &s, 1, &o);
  kv_swim_update al = upd(2, 1, KV_SWIM_ALIVE, 0);
  feed(a, 10, 2, &al, 1, &o); /* same incarnation: ignored */
  assert_int_equal(state_of(a, 2), KV_SWIM_SUSPECT);
  al.incarnation = 2;
  feed(a, 20, 2, &al, 1, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_ALIVE);
  kv_swim_tick(a, 100000, &r, out_emit, &o);
  assert_int_equal(state_of(a, 2), KV_SWIM_ALIVE);
  out_clear(&o);
  kv_swim_free(a);
}

/* ---- refutation and buddy system ---- */

static void test_swim_refutes_suspicion_and_death(void **st) {
  (void)st;
  kv_swim *b = mk(2);
  know(b, 1);
  outbox o = {0};
  assert_int_equal(inc_of(b, 2), 1);
  kv_swim_update s = upd(2, 0, KV_SWIM_SUSPECT, 1);
  feed(b, 0, 1, &s, 1, &o); /* older than ours: no refutation */
  assert_int_equal(inc_of(b, 2), 1);
  /* but the accuser is told our current alive at once */
  assert_int_equal(o.n, 1);
  assert_int_equal(o.msg[0].m.type, KV_SWIM_GOSSIP);
  assert_int_equal(o.msg[0].to, 1);
  assert_true(o.msg[0].m.nupdates >= 1);
  assert_int_equal(o.msg[0].m.updates[0].id, 2);
  assert_int_equal(o.msg[0].m.updates[0].state, KV_SWIM_ALIVE);
  assert_int_equal(o.msg[0].m.updates[0].incarnation, 1);
  out_clear(&o);
  s.incarnation = 1;
  feed(b, 0, 1, &s, 1, &o);
  assert_int_equal(inc_of(b, 2), 2);
  assert_int_equal(state_of(b, 2), KV_SWIM_ALIVE);
  assert_int_equal(kv_swim_health(b), 1);
  kv_swim_update d = upd(2, 5, KV_SWIM_DEAD, 1);
  feed(b, 0, 1, &d, 1, &o);
  assert_int_equal(inc_of(b, 2), 6); /* jumps past the accuser */
  assert_int_equal(state_of(b, 2), KV_SWIM_ALIVE);
  kv_swim_stats ss;
  kv_swim_stats_get(b, &ss);
  assert_int_equal(ss.refuted, 2);
  /* Each refutation was also sent straight to the accuser. */
  assert_int_equal(o.n, 2);
  assert_int_equal(o.msg[1].to, 1);
  assert_int_equal(o.msg[1].m.type, KV_SWIM_GOSSIP);
  assert_int_equal(o.msg[1].m.updates[0].id, 2);
  assert_int_equal(o.msg[1].m.updates[0].incarnation, 6);
  out_clear(&o);
  /* The refutation is what gets gossiped next. */
  kv_rng r = {1};
  kv_swim_tick(b, 200, &r, out_emit, &o);
  const cmsg *g = out_find(&o, KV_SWIM_GOSSIP);
  assert_non_null(g);
  bool found = false;
  for (size_t i = 0; i < g->m.nupdates; i++)
    if (g->m.updates[i].id == 2 && g->m.updates[i].state == KV_SWIM_ALIVE &&
        g->m.updates[i].incarnation == 6)
      found = true;
  assert_true(found);
  out_clear(&o);
  kv_swim_free(b);
}

/* A stale accusation against a member we know alive at a higher
 * incarnation (its sender missed the refutation) is answered to the sender
 * with that alive, so it cancels its suspicion timer; a current accusation
 * is not answered. */
static void test_swim_stale_accusation_corrected(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  know(a, 2);
  know(a, 3);
  outbox o = {0};
  kv_swim_update al = upd(3, 2, KV_SWIM_ALIVE, 0); /* 3 refuted: inc 2 */
  feed(a, 0, 2, &al, 1, &o);
  out_clear(&o);
  kv_swim_update su = upd(3, 1, KV_SWIM_SUSPECT, 2);
  feed(a, 10, 2, &su, 1, &o);
  assert_int_equal(state_of(a, 3), KV_SWIM_ALIVE);
  assert_int_equal(o.n, 1);
  assert_int_equal(o.msg[0].to, 2);
  assert_int_equal(o.msg[0].m.type, KV_SWIM_GOSSIP);
  assert_int_equal(o.msg[0].m.updates[0].id, 3);
  assert_int_equal(o.msg[0].m.updates[0].state, KV_SWIM_ALIVE);
  assert_int_equal(o.msg[0].m.updates[0].incarnation, 2);
  out_clear(&o);
  kv_swim_update de = upd(3, 1, KV_SWIM_DEAD, 2); /* stale dead too */
  feed(a, 20, 2, &de, 1, &o);
  assert_int_equal(o.n, 1);
  assert_int_equal(o.msg[0].m.updates[0].incarnation, 2);
  out_clear(&o);
  /* The sender, suspecting 3 at inc 1, takes the correction. */
  kv_swim *b = mk(2);
  know(b, 1);
  know(b, 3);
  kv_swim_update s1 = upd(3, 1, KV_SWIM_SUSPECT, 1);
  feed(b, 0, 1, &s1, 1, &o);
  assert_int_equal(state_of(b, 3), KV_SWIM_SUSPECT);
  assert_int_equal(o.n, 0); /* current accusation: no answer */
  kv_swim_update s2 = upd(3, 2, KV_SWIM_ALIVE, 0);
  feed(b, 5, 1, &s2, 1, &o);
  assert_int_equal(state_of(b, 3), KV_SWIM_ALIVE);
  assert_int_equal(inc_of(b, 3), 2);
  assert_int_equal(o.n, 0); /* an alive never draws a correction */
  kv_rng r = {1};
  kv_swim_tick(b, 60000, &r, out_emit, &o);
  out_clear(&o);
  assert_int_equal(state_of(b, 3), KV_SWIM_ALIVE); /* timer cancelled */
  kv_swim_free(a);
  kv_swim_free(b);
}

static void test_swim_buddy_ping_carries_suspicion(void **st) {
  (void)st;
  kv_swim *a = mk(1), *b = mk(2);
  know(a, 2);
  know(a, 3);
  know(a, 4);
  know(b, 1);
  outbox o = {0};
  kv_rng r = {5};
  kv_swim_update s = upd(2, 1, KV_SWIM_SUSPECT, 3);
  feed(a, 0, 3, &s, 1, &o);
  out_clear(&o);
  /* Find the probe of 2 within one round. */
  const cmsg *ping = NULL;
  for (uint64_t now = 1000; now < 10000 && !ping; now += 1000) {
    out_clear(&o);
    kv_swim_tick(a, now, &r, out_emit, &o);
    kv_swim_tick(a, now + 500, &r, out_emit, &o);
    for (size_t i = 0; i < o.n; i++)
      if (o.msg[i].m.type == KV_SWIM_PING && o.msg[i].to == 2) ping = &o.msg[i];
  }
  assert_non_null(ping);
  assert_true(ping->m.nupdates >= 1);
  assert_int_equal(ping->m.updates[0].id, 2);
  assert_int_equal(ping->m.updates[0].state, KV_SWIM_SUSPECT);
  outbox ob = {0};
  assert_int_equal(kv_swim_recv(b, 5000, &r, &ping->m, out_emit, &ob), KV_OK);
  assert_int_equal(inc_of(b, 2), 2);
  const cmsg *ack = out_find(&ob, KV_SWIM_ACK);
  assert_non_null(ack);
  /* The ack piggybacks the refutation, which clears a's suspicion. */
  assert_int_equal(kv_swim_recv(a, 5001, &r, &ack->m, out_emit, &o), KV_OK);
  assert_int_equal(state_of(a, 2), KV_SWIM_ALIVE);
  assert_int_equal(inc_of(a, 2), 2);
  out_clear(&o);
  out_clear(&ob);
  kv_swim_free(a);
  kv_swim_free(b);
}

/* ---- precedence ---- */

typedef struct prec_case {
  kv_swim_state st1;
  uint64_t inc1;
  kv_swim_state st2;
  uint64_t inc2;
  kv_swim_state want;
} prec_case;

static void test_swim_update_precedence(void **st) {
  (void)st;
  const prec_case cases[] = {
      {KV_SWIM_ALIVE, 3, KV_SWIM_ALIVE, 2, KV_SWIM_ALIVE},
      {KV_SWIM_ALIVE, 3, KV_SWIM_SUSPECT, 3, KV_SWIM_SUSPECT},
      {KV_SWIM_ALIVE, 3, KV_SWIM_SUSPECT, 2, KV_SWIM_ALIVE},
      {KV_SWIM_SUSPECT, 3, KV_SWIM_ALIVE, 3, KV_SWIM_SUSPECT},
      {KV_SWIM_SUSPECT, 3, KV_SWIM_ALIVE, 4, KV_SWIM_ALIVE},
      {KV_SWIM_SUSPECT, 3, KV_SWIM_DEAD, 3, KV_SWIM_DEAD},
      {KV_SWIM_ALIVE, 3, KV_SWIM_DEAD, 3, KV_SWIM_DEAD},
      {KV_SWIM_ALIVE, 3, KV_SWIM_DEAD, 2, KV_SWIM_ALIVE},
      {KV_SWIM_DEAD, 3, KV_SWIM_ALIVE, 3, KV_SWIM_DEAD},
      {KV_SWIM_DEAD, 3, KV_SWIM_SUSPECT, 4, KV_SWIM_DEAD},
      {KV_SWIM_DEAD, 3, KV_SWIM_ALIVE, 4, KV_SWIM_ALIVE},
      {KV_SWIM_ALIVE, 3, KV_SWIM_LEFT, 3, KV_SWIM_LEFT},
      {KV_SWIM_LEFT, 3, KV_SWIM_DEAD, 5, KV_SWIM_LEFT},
      {KV_SWIM_LEFT, 3, KV_SWIM_ALIVE, 4, KV_SWIM_ALIVE},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    kv_swim *a = mk(1);
    for (uint64_t id = 3; id <= 5; id++)
      know(a, id);
    outbox o = {0};
    kv_swim_update al = upd(2, cases[c].inc1, KV_SWIM_ALIVE, 0);
    feed(a, 0, 3, &al, 1, &o);
    if (cases[c].st1 != KV_SWIM_ALIVE) {
      kv_swim_update u = upd(2, cases[c].inc1, cases[c].st1, 3);
      feed(a, 0, 3, &u, 1, &o);
    }
    kv_swim_update u2 = upd(2, cases[c].inc2, cases[c].st2, 4);
    feed(a, 10, 4, &u2, 1, &o);
    if (state_of(a, 2) != cases[c].want)
      fail_msg("case %zu: got %d want %d", c, state_of(a, 2), cases[c].want);
    out_clear(&o);
    kv_swim_free(a);
  }
}

/* ---- queue ---- */

static size_t updates_about(const cmsg *c, uint64_t id) {
  size_t n = 0;
  for (size_t i = 0; i < c->m.nupdates; i++)
    n += c->m.updates[i].id == id;
  return n;
}

static void test_swim_queue_replaces_and_retires(void **st) {
  (void)st;
  /* No probes in the window: only gossip carries the queue. */
  kv_swim_opts op = {.probe_interval_ms = 1000000};
  kv_swim *a = mk_opts(&op, 1);
  for (uint64_t id = 2; id <= 5; id++)
    know(a, id);
  outbox o = {0};
  kv_rng r = {9};
  kv_swim_update s = upd(2, 1, KV_SWIM_SUSPECT, 3);
  feed(a, 0, 3, &s, 1, &o);
  kv_swim_stats ss;
  kv_swim_stats_get(a, &ss);
  assert_int_equal(ss.queued, 5); /* self + 4 members, one each */
  /* Every gossip round sends to 3 members; each update goes 4 times
   * (N=5), newest first, so the suspicion leads the first message. */
  size_t sends_about_2 = 0;
  bool first = true;
  for (uint64_t now = 200; now <= 2000; now += 200) {
    kv_swim_tick(a, now, &r, out_emit, &o);
    for (size_t i = 0; i < o.n; i++) {
      if (o.msg[i].m.type != KV_SWIM_GOSSIP) continue;
      if (first) {
        assert_int_equal(o.msg[i].m.updates[0].id, 2);
        assert_int_equal(o.msg[i].m.updates[0].state, KV_SWIM_SUSPECT);
        first = false;
      }
      assert_true(updates_about(&o.msg[i], 2) <= 1);
      sends_about_2 += updates_about(&o.msg[i], 2);
    }
    out_clear(&o);
  }
  assert_int_equal(sends_about_2, kv_swim_retransmit_limit(NULL, 5));
  kv_swim_stats_get(a, &ss);
  assert_int_equal(ss.queued, 0);
  kv_swim_free(a);
}

static void test_swim_piggyback_budget(void **st) {
  (void)st;
  kv_swim_opts op = {.piggyback_bytes = 3 * (32 + 4), .piggyback_max = 10};
  kv_swim *a = mk_opts(&op, 1);
  for (uint64_t id = 2; id <= 9; id++)
    know(a, id);
  outbox o = {0};
  kv_rng r = {9};
  kv_swim_tick(a, 200, &r, out_emit, &o);
  const cmsg *g = out_find(&o, KV_SWIM_GOSSIP);
  assert_non_null(g);
  assert_int_equal(g->m.nupdates, 3);
  size_t bytes = 0;
  for (size_t i = 0; i < g->m.nupdates; i++)
    bytes += kv_swim_update_size(&g->m.updates[i]);
  assert_true(bytes <= op.piggyback_bytes);
  out_clear(&o);
  kv_swim_free(a);
  op = (kv_swim_opts){.piggyback_max = 2};
  a = mk_opts(&op, 1);
  for (uint64_t id = 2; id <= 9; id++)
    know(a, id);
  kv_swim_tick(a, 200, &r, out_emit, &o);
  assert_int_equal(out_find(&o, KV_SWIM_GOSSIP)->m.nupdates, 2);
  out_clear(&o);
  kv_swim_free(a);
}

/* ---- push-pull, leave, events, input ---- */

static void test_swim_push_pull_merge(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  know(a, 2);
  know(a, 3);
  know(a, 4);
  know(a, 5);
  outbox o = {0};
  kv_rng r = {4};
  kv_swim_update rows[] = {
      upd(2, 1, KV_SWIM_DEAD, 0),  /* merged as a suspicion only */
      upd(3, 1, KV_SWIM_LEFT, 0),  /* final */
      upd(4, 7, KV_SWIM_ALIVE, 0), /* newer incarnation */
      upd(6, 1, KV_SWIM_ALIVE, 0), /* new member */
      upd(7, 1, KV_SWIM_DEAD, 0),  /* unknown and not alive: ignored */
  };
  kv_swim_msg m = {.type = KV_SWIM_PUSH_PULL,
                   .from = 5,
                   .from_addr = addrs[5],
                   .updates = rows,
                   .nupdates = 5};
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_OK);
  /* Not a reply: our table goes back first (before the merge). */
  const cmsg *rep = out_find(&o, KV_SWIM_PUSH_PULL);
  assert_non_null(rep);
  assert_true(rep->m.reply);
  assert_int_equal(rep->to, 5);
  assert_int_equal(rep->m.nupdates, 5);
  assert_int_equal(state_of(a, 2), KV_SWIM_SUSPECT);
  assert_int_equal(state_of(a, 3), KV_SWIM_LEFT);
  assert_int_equal(inc_of(a, 4), 7);
  assert_int_equal(state_of(a, 6), KV_SWIM_ALIVE);
  assert_int_equal(kv_swim_member_get(a, 7, &(kv_swim_member){0}), KV_NOTFOUND);
  const kv_swim_update *tab;
  size_t n;
  kv_swim_export(a, &tab, &n);
  assert_int_equal(n, 6);
  assert_int_equal(kv_swim_count(a), 6);
  assert_int_equal(tab[0].id, 1);
  out_clear(&o);
  /* A reply is merged without answering. */
  m.reply = true;
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_OK);
  assert_int_equal(o.n, 0);
  kv_swim_free(a);
}

static void test_swim_join_emits_push_pull(void **st) {
  (void)st;
  kv_swim *j = mk(9);
  outbox o = {0};
  kv_swim_join(j, "seedaddr", out_emit, &o);
  assert_int_equal(o.n, 1);
  assert_int_equal(o.msg[0].to, 0);
  assert_string_equal(o.msg[0].to_addr, "seedaddr");
  assert_true(o.msg[0].m.join);
  assert_false(o.msg[0].m.reply);
  assert_int_equal(o.msg[0].m.nupdates, 1);
  assert_int_equal(o.msg[0].m.updates[0].id, 9);
  out_clear(&o);
  kv_swim_free(j);
}

static void test_swim_leave(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  know(a, 2);
  drain_events(a);
  outbox o = {0};
  kv_rng r = {6};
  kv_swim_leave(a, 50);
  kv_swim_leave(a, 60);
  assert_int_equal(state_of(a, 1), KV_SWIM_LEFT);
  kv_swim_event e;
  assert_true(kv_swim_next_event(a, &e));
  assert_int_equal(e.id, 1);
  assert_int_equal(e.new_state, KV_SWIM_LEFT);
  assert_false(kv_swim_next_event(a, &e));
  /* No more probes; the leave is gossiped; a dead claim is not refuted. */
  for (uint64_t now = 200; now <= 5000; now += 100)
    kv_swim_tick(a, now, &r, out_emit, &o);
  assert_int_equal(out_count(&o, KV_SWIM_PING), 0);
  const cmsg *g = out_find(&o, KV_SWIM_GOSSIP);
  assert_non_null(g);
  bool left = false;
  for (size_t i = 0; i < g->m.nupdates; i++)
    left |= g->m.updates[i].id == 1 && g->m.updates[i].state == KV_SWIM_LEFT;
  assert_true(left);
  out_clear(&o);
  kv_swim_update d = upd(1, 1, KV_SWIM_DEAD, 2);
  feed(a, 6000, 2, &d, 1, &o);
  assert_int_equal(state_of(a, 1), KV_SWIM_LEFT);
  assert_int_equal(inc_of(a, 1), 1);
  /* It still answers pings while draining. */
  kv_swim_msg ping = {.type = KV_SWIM_PING, .seq = 3, .from = 2, .target = 1};
  assert_int_equal(kv_swim_recv(a, 6000, &r, &ping, out_emit, &o), KV_OK);
  assert_non_null(out_find(&o, KV_SWIM_ACK));
  out_clear(&o);

  /* The receiving side: LEFT is final and never probed. */
  kv_swim *b = mk(2);
  know(b, 1);
  kv_swim_update l = upd(1, 1, KV_SWIM_LEFT, 1);
  feed(b, 0, 1, &l, 1, &o);
  assert_int_equal(state_of(b, 1), KV_SWIM_LEFT);
  for (uint64_t now = 1000; now <= 60000; now += 250)
    kv_swim_tick(b, now, &r, out_emit, &o), out_clear(&o);
  assert_int_equal(state_of(b, 1), KV_SWIM_LEFT);
  kv_swim_stats ss;
  kv_swim_stats_get(b, &ss);
  assert_int_equal(ss.pings, 0);
  kv_swim_free(a);
  kv_swim_free(b);
}

static void test_swim_events_and_peers(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  outbox o = {0};
  kv_swim_event e;
  assert_false(kv_swim_next_event(a, &e));
  know(a, 2);
  know(a, 3);
  assert_true(kv_swim_next_event(a, &e));
  assert_int_equal(e.id, 2);
  assert_int_equal(e.old_state, KV_SWIM_NONE);
  assert_int_equal(e.new_state, KV_SWIM_ALIVE);
  assert_true(kv_swim_next_event(a, &e));
  assert_int_equal(e.id, 3);
  assert_false(kv_swim_next_event(a, &e));
  kv_swim_update s = upd(3, 1, KV_SWIM_SUSPECT, 2);
  feed(a, 40, 2, &s, 1, &o);
  assert_true(kv_swim_next_event(a, &e));
  assert_int_equal(e.id, 3);
  assert_int_equal(e.old_state, KV_SWIM_ALIVE);
  assert_int_equal(e.new_state, KV_SWIM_SUSPECT);
  assert_int_equal(e.at_ms, 40);
  /* Only alive peers, never self. */
  uint64_t peers[4];
  assert_int_equal(kv_swim_alive_peers(a, peers, 4), 1);
  assert_int_equal(peers[0], 2);
  assert_int_equal(kv_swim_alive_peers(a, peers, 0), 1);
  kv_swim_member m;
  assert_int_equal(kv_swim_member_get(a, 3, &m), KV_OK);
  assert_string_equal(m.name, "n3");
  assert_string_equal(m.addr, "a3");
  assert_int_equal(m.state_since_ms, 40);
  out_clear(&o);
  kv_swim_free(a);
}

static void test_swim_rejects_bad_input(void **st) {
  (void)st;
  kv_swim *a = mk(1);
  know(a, 2);
  kv_rng r = {1};
  outbox o = {0};
  char longstr[KV_SWIM_MAX_STR + 2];
  memset(longstr, 'x', sizeof longstr - 1);
  longstr[sizeof longstr - 1] = 0;
  kv_swim_update good = upd(3, 1, KV_SWIM_ALIVE, 0);
  kv_swim_update bad[5] = {good, good, good, good, good};
  bad[0].id = 0;
  bad[1].state = (kv_swim_state)9;
  bad[2].name = NULL;
  bad[3].addr = longstr;
  bad[4].state = KV_SWIM_NONE;
  for (size_t i = 0; i < 5; i++) {
    kv_swim_msg m = {
        .type = KV_SWIM_GOSSIP, .from = 2, .updates = &bad[i], .nupdates = 1};
    assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  }
  kv_swim_msg m = {.type = KV_SWIM_PING, .from = 0};
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  m.from = 1;
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  m.from = 2;
  m.type = (kv_swim_msg_type)42;
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  m.type = KV_SWIM_PING_REQ;
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  m = (kv_swim_msg){.type = KV_SWIM_GOSSIP, .from = 2, .nupdates = 1};
  assert_int_equal(kv_swim_recv(a, 0, &r, &m, out_emit, &o), KV_BAD_REQUEST);
  assert_int_equal(o.n, 0);
  assert_int_equal(kv_swim_count(a), 2); /* nothing applied */
  kv_swim_free(a);
}

static kv_swim *reentry_s;
static void reentry_emit(void *arg, uint64_t to, const char *to_addr,
                         const kv_swim_msg *m) {
  (void)arg, (void)to, (void)to_addr, (void)m;
  kv_swim_leave(reentry_s, 0);
}
static void reentry(void) {
  reentry_s = mk(1);
  kv_swim_join(reentry_s, "x", reentry_emit, NULL);
}

static void test_swim_emit_reentry_panics(void **st) {
  (void)st;
  assert_panics(reentry);
}

/* ---- deterministic network simulation ---- */

#define SIM_MAX 16

typedef struct pend {
  uint64_t at, order;
  int from, to;
  cmsg c;
} pend;

typedef struct sim {
  int n;
  kv_swim *node[SIM_MAX];
  kv_rng rng[SIM_MAX];
  bool up[SIM_MAX];
  uint64_t due[SIM_MAX];
  uint64_t now, order;
  test_rng net;
  double loss;
  uint64_t delay_min, delay_max;
  pend *q;
  size_t qn, qcap;
  uint64_t sent, dropped;
  /* first time node i saw member j (id j+1) in a state; 0 = never */
  uint64_t dead_at[SIM_MAX][SIM_MAX], left_at[SIM_MAX][SIM_MAX];
  uint64_t dead_events, suspect_events;
} sim;

typedef struct sim_arg {
  sim *s;
  int from;
} sim_arg;

static sim_arg sim_args[SIM_MAX];

static void sim_emit(void *arg, uint64_t to, const char *to_addr,
                     const kv_swim_msg *m) {
  sim_arg *a = arg;
  sim *s = a->s;
  int dst;
  if (to)
    dst = (int)to - 1;
  else
    dst = atoi(to_addr + 1) - 1;
  assert_true(dst >= 0 && dst < s->n);
  s->sent++;
  /* Push-pull runs over TCP in the server: reliable. */
  if (m->type != KV_SWIM_PUSH_PULL &&
      (double)(test_rng_next(&s->net) >> 11) / 9007199254740992.0 < s->loss) {
    s->dropped++;
    return;
  }
  if (s->qn == s->qcap) {
    s->qcap = s->qcap ? s->qcap * 2 : 256;
    s->q = realloc(s->q, s->qcap * sizeof *s->q);
    assert_non_null(s->q);
  }
  pend *p = &s->q[s->qn++];
  p->at = s->now + s->delay_min +
          test_rng_below(&s->net, s->delay_max - s->delay_min + 1);
  p->order = ++s->order;
  p->from = a->from;
  p->to = dst;
  cmsg_copy(&p->c, to, to_addr, m);
}

static void sim_events(sim *s, int i) {
  kv_swim_event e;
  while (kv_swim_next_event(s->node[i], &e)) {
    int j = (int)e.id - 1;
    if (e.new_state == KV_SWIM_DEAD) {
      s->dead_events++;
      if (!s->dead_at[i][j]) s->dead_at[i][j] = s->now;
    }
    if (e.new_state == KV_SWIM_LEFT && !s->left_at[i][j])
      s->left_at[i][j] = s->now;
    if (e.new_state == KV_SWIM_SUSPECT) s->suspect_events++;
  }
  s->due[i] = kv_swim_next_due(s->node[i]);
}

static void sim_add(sim *s, int i, uint64_t now) {
  s->rng[i].s = seed ^ (0x9e37ull * (uint64_t)(i + 1)) ^ s->net.s;
  s->node[i] = kv_swim_new(NULL, (uint64_t)i + 1, names[i + 1], addrs[i + 1],
                           now, &s->rng[i]);
  s->up[i] = true;
  sim_args[i] = (sim_arg){s, i};
  if (i > 0) kv_swim_join(s->node[i], addrs[1], sim_emit, &sim_args[i]);
  sim_events(s, i);
}

static void sim_init(sim *s, int n, uint64_t sd, double loss) {
  memset(s, 0, sizeof *s);
  s->n = n;
  s->net.s = sd;
  s->loss = loss;
  s->delay_min = 1;
  s->delay_max = 10;
}

static void sim_free(sim *s) {
  for (size_t k = 0; k < s->qn; k++)
    cmsg_free(&s->q[k].c);
  free(s->q);
  for (int i = 0; i < s->n; i++)
    kv_swim_free(s->node[i]);
}

static void sim_run(sim *s, uint64_t until) {
  for (;;) {
    uint64_t t = UINT64_MAX;
    for (size_t k = 0; k < s->qn; k++)
      if (s->q[k].at < t) t = s->q[k].at;
    for (int i = 0; i < s->n; i++)
      if (s->node[i] && s->up[i] && s->due[i] < t) t = s->due[i];
    if (t > until) break;
    if (t > s->now) s->now = t;
    /* Deliver everything due, oldest send first. */
    for (;;) {
      size_t best = SIZE_MAX;
      for (size_t k = 0; k < s->qn; k++)
        if (s->q[k].at <= s->now &&
            (best == SIZE_MAX || s->q[k].order < s->q[best].order))
          best = k;
      if (best == SIZE_MAX) break;
      pend p = s->q[best];
      s->q[best] = s->q[--s->qn];
      if (s->node[p.to] && s->up[p.to]) {
        int rc = kv_swim_recv(s->node[p.to], s->now, &s->rng[p.to], &p.c.m,
                              sim_emit, &sim_args[p.to]);
        assert_int_equal(rc, KV_OK);
        sim_events(s, p.to);
      }
      cmsg_free(&p.c);
    }
    for (int i = 0; i < s->n; i++) {
      if (!s->node[i] || !s->up[i] || s->due[i] > s->now) continue;
      kv_swim_tick(s->node[i], s->now, &s->rng[i], sim_emit, &sim_args[i]);
      sim_events(s, i);
    }
  }
  s->now = until;
}

/* Every up node other than j sees node j in state want. */
static bool sim_all_see(const sim *s, int j, kv_swim_state want) {
  for (int i = 0; i < s->n; i++) {
    if (!s->node[i] || !s->up[i] || i == j) continue;
    kv_swim_member m;
    if (kv_swim_member_get(s->node[i], (uint64_t)j + 1, &m) != KV_OK ||
        m.state != want)
      return false;
  }
  return true;
}

static bool sim_converged(const sim *s) {
  for (int j = 0; j < s->n; j++)
    if (s->up[j] && !sim_all_see(s, j, KV_SWIM_ALIVE)) return false;
  return true;
}

/* Runs to `from` (past the first push-pull at 30 s, which repairs any
 * join announcement gossip missed), then until every up node sees every up
 * node alive, or `until`. Loss makes transient suspicions, so convergence is
 * a moment to wait for, not a state to sample. */
static bool sim_settle(sim *s, uint64_t from, uint64_t until) {
  sim_run(s, from);
  for (;;) {
    if (sim_converged(s)) return true;
    if (s->now >= until) return false;
    sim_run(s, s->now + 100);
  }
}

static void sim_start(sim *s, int n) {
  for (int i = 0; i < n; i++)
    sim_add(s, i, s->now);
}

/* Worst-case detection bound from the protocol's own numbers, with all
 * probers healthy when the crash happens: SWIM's round-robin guarantees the
 * crashed member is probed within 2(N-1)-1 of a prober's periods, the probe
 * itself lasts one period, the suspicion lasts at most the Lifeguard max
 * timeout, and the declaration then spreads by gossip (allow 3 s). */
static uint64_t detection_bound(int n) {
  return (uint64_t)(2 * (n - 1) - 1) * 1000 + 1000 +
         kv_swim_suspicion_timeout(NULL, (size_t)n, 2, 0) + 3000;
}

static void test_swim_sim_crash_detected_within_bound(void **st) {
  (void)st;
  const int n = 8;
  uint64_t worst = 0, sum = 0, cnt = 0, first_sum = 0;
  for (int run = 0; run < 3; run++) {
    sim s;
    sim_init(&s, n, seed + 100 + (uint64_t)run, 0.0);
    sim_start(&s, n);
    assert_true(sim_settle(&s, 31000, 60000));
    assert_int_equal(s.dead_events, 0);
    uint64_t sent0 = s.sent, t0 = s.now;
    sim_run(&s, t0 + 30000);
    double rate = (double)(s.sent - sent0) / n / 30.0;
    int victim = 1 + (int)(seed % (uint64_t)(n - 1));
    uint64_t crash = s.now;
    s.up[victim] = false;
    uint64_t bound = detection_bound(n);
    sim_run(&s, crash + bound);
    uint64_t first = UINT64_MAX;
    for (int i = 0; i < n; i++) {
      if (i == victim) continue;
      if (!s.dead_at[i][victim])
        fail_msg("run %d: node %d did not see %d dead within %llu ms", run, i,
                 victim, (unsigned long long)bound);
      uint64_t d = s.dead_at[i][victim] - crash;
      if (d > worst) worst = d;
      if (d < first) first = d;
      sum += d;
      cnt++;
      for (int j = 0; j < n; j++)
        if (j != victim) assert_int_equal(s.dead_at[i][j], 0);
    }
    first_sum += first;
    printf("  crash run %d: first declared dead after %.1f s, steady "
           "traffic %.2f msgs/member/s\n",
           run, first / 1000.0, rate);
    sim_free(&s);
  }
  printf("  crash detection (N=%d): mean %.1f s, worst %.1f s, mean first "
         "%.1f s, bound %.1f s\n",
         n, sum / 1000.0 / cnt, worst / 1000.0, first_sum / 3000.0,
         detection_bound(n) / 1000.0);
}

#define PAUSE_MS 1500

static void test_swim_sim_paused_node_refutes(void **st) {
  (void)st;
  const int n = 8;
  uint64_t susp = 0;
  for (int run = 0; run < 3; run++) {
    sim s;
    sim_init(&s, n, seed + 200 + (uint64_t)run, 0.0);
    sim_start(&s, n);
    assert_true(sim_settle(&s, 31000, 60000));
    int victim = 1 + (int)((seed + (uint64_t)run) % (uint64_t)(n - 1));
    uint64_t se0 = s.suspect_events;
    /* Paused for 1.5 s. Confirmations can bring the suspicion timeout
     * down to its minimum (4 s at N=8) from the first suspicion, which can
     * come as early as 0.5 s into the pause; a buddy ping or gossip has to
     * reach the node and its refutation everyone within what is left. */
    s.up[victim] = false;
    sim_run(&s, s.now + PAUSE_MS);
    s.up[victim] = true;
    s.due[victim] = s.now;
    sim_run(&s, s.now + 60000);
    susp += s.suspect_events - se0;
    for (int i = 0; i < n; i++)
      assert_int_equal(s.dead_at[i][victim], 0);
    assert_int_equal(s.dead_events, 0);
    assert_true(sim_all_see(&s, victim, KV_SWIM_ALIVE));
    kv_swim_member m;
    assert_int_equal(
        kv_swim_member_get(s.node[victim], (uint64_t)victim + 1, &m), KV_OK);
    printf("  pause run %d: victim incarnation now %llu\n", run,
           (unsigned long long)m.incarnation);
    sim_free(&s);
  }
  printf("  paused node: %llu suspicions raised over 3 runs, 0 deaths\n",
         (unsigned long long)susp);
}

static void test_swim_sim_lossy_no_false_deaths(void **st) {
  (void)st;
  const int n = 8;
  for (int run = 0; run < 4; run++) {
    sim s;
    sim_init(&s, n, seed + 300 + (uint64_t)run, 0.10);
    sim_start(&s, n);
    assert_true(sim_settle(&s, 31000, 60000));
    uint64_t sent0 = s.sent, t0 = s.now;
    sim_run(&s, t0 + 300000);
    assert_int_equal(s.dead_events, 0);
    double secs = (double)(s.now - t0) / 1000.0;
    assert_true(sim_settle(&s, s.now, s.now + 30000));
    unsigned h = 0;
    kv_swim_stats ss;
    uint64_t refuted = 0;
    for (int i = 0; i < n; i++) {
      if (kv_swim_health(s.node[i]) > h) h = kv_swim_health(s.node[i]);
      kv_swim_stats_get(s.node[i], &ss);
      refuted += ss.refuted;
    }
    printf("  10%% loss run %d: 300 s, %llu suspicions, %llu refutations, 0 "
           "deaths, %.2f msgs/member/s, max health score %u\n",
           run, (unsigned long long)s.suspect_events,
           (unsigned long long)refuted, (double)(s.sent - sent0) / n / secs, h);
    sim_free(&s);
  }
}

static void test_swim_sim_joiner_learns_everyone(void **st) {
  (void)st;
  const int n = 10;
  sim s;
  sim_init(&s, n, seed + 400, 0.05);
  sim_start(&s, n - 1);
  s.n = n - 1;
  assert_true(sim_settle(&s, 31000, 60000));
  s.n = n;
  sim_add(&s, n - 1, s.now);
  uint64_t joined = s.now, all = 0;
  for (uint64_t t = s.now; t < joined + 20000 && !all; t += 100) {
    sim_run(&s, t);
    if (sim_converged(&s)) all = s.now;
  }
  assert_true(all != 0);
  assert_int_equal(kv_swim_count(s.node[n - 1]), n);
  assert_int_equal(s.dead_events, 0);
  printf("  joiner (N=%d, 5%% loss): full view everywhere after %.1f s\n", n,
         (all - joined) / 1000.0);
  sim_free(&s);
}

static void test_swim_sim_leaver_is_left_not_dead(void **st) {
  (void)st;
  const int n = 8;
  sim s;
  sim_init(&s, n, seed + 500, 0.05);
  sim_start(&s, n);
  assert_true(sim_settle(&s, 31000, 60000));
  int leaver = 3;
  uint64_t t0 = s.now;
  kv_swim_leave(s.node[leaver], s.now);
  sim_events(&s, leaver);
  sim_run(&s, s.now + 1000); /* drain the leave by gossip, then stop */
  s.up[leaver] = false;
  sim_run(&s, s.now + 90000);
  uint64_t worst = 0;
  for (int i = 0; i < n; i++) {
    if (i == leaver) continue;
    assert_int_equal(s.dead_at[i][leaver], 0);
    assert_true(s.left_at[i][leaver] != 0);
    if (s.left_at[i][leaver] - t0 > worst) worst = s.left_at[i][leaver] - t0;
  }
  assert_true(sim_all_see(&s, leaver, KV_SWIM_LEFT));
  assert_int_equal(s.dead_events, 0);
  printf("  leave: seen as left everywhere within %.2f s\n", worst / 1000.0);
  sim_free(&s);
}

static void test_swim_sim_deterministic(void **st) {
  (void)st;
  uint64_t sent[2], susp[2];
  for (int k = 0; k < 2; k++) {
    sim s;
    sim_init(&s, 6, seed + 600, 0.2);
    sim_start(&s, 6);
    sim_run(&s, 60000);
    sent[k] = s.sent;
    susp[k] = s.suspect_events;
    sim_free(&s);
  }
  assert_int_equal(sent[0], sent[1]);
  assert_int_equal(susp[0], susp[1]);
}

int main(void) {
  seed = test_seed("membership_test");
  init_names();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_swim_suspicion_timeout_formula),
      cmocka_unit_test(test_swim_retransmit_limit),
      cmocka_unit_test(test_swim_defaults_are_memberlist_lan),
      cmocka_unit_test(test_swim_start_incarnation),
      cmocka_unit_test(test_swim_wire_round_trip),
      cmocka_unit_test(test_swim_ping_req_for_self_refused),
      cmocka_unit_test(test_swim_probe_direct_ack),
      cmocka_unit_test(test_swim_ping_for_other_id_not_acked),
      cmocka_unit_test(test_swim_probe_indirect_then_suspect),
      cmocka_unit_test(test_swim_nacks_spare_health),
      cmocka_unit_test(test_swim_indirect_ack_saves_target),
      cmocka_unit_test(test_swim_helper_relays_ack_or_nacks),
      cmocka_unit_test(test_swim_awareness_stretches_probe),
      cmocka_unit_test(test_swim_suspicion_expires_to_dead),
      cmocka_unit_test(test_swim_confirmations_shorten_timeout),
      cmocka_unit_test(test_swim_alive_clears_suspicion),
      cmocka_unit_test(test_swim_refutes_suspicion_and_death),
      cmocka_unit_test(test_swim_stale_accusation_corrected),
      cmocka_unit_test(test_swim_buddy_ping_carries_suspicion),
      cmocka_unit_test(test_swim_update_precedence),
      cmocka_unit_test(test_swim_queue_replaces_and_retires),
      cmocka_unit_test(test_swim_piggyback_budget),
      cmocka_unit_test(test_swim_push_pull_merge),
      cmocka_unit_test(test_swim_join_emits_push_pull),
      cmocka_unit_test(test_swim_leave),
      cmocka_unit_test(test_swim_events_and_peers),
      cmocka_unit_test(test_swim_rejects_bad_input),
      cmocka_unit_test(test_swim_emit_reentry_panics),
      cmocka_unit_test(test_swim_sim_crash_detected_within_bound),
      cmocka_unit_test(test_swim_sim_paused_node_refutes),
      cmocka_unit_test(test_swim_sim_lossy_no_false_deaths),
      cmocka_unit_test(test_swim_sim_joiner_learns_everyone),
      cmocka_unit_test(test_swim_sim_leaver_is_left_not_dead),
      cmocka_unit_test(test_swim_sim_deterministic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
