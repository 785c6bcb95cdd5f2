/*
 * The engine: a min-heap of events ordered by (time, sequence number), a
 * network that drops, delays, duplicates (and so reorders) and partitions
 * messages, replicas that crash and restart, and the drivers of the real
 * sans-I/O cores, written to mirror server/peer.c: a rumor tick's pushes to
 * a peer travel as one message, answered by one ack message, anti-entropy
 * runs one exchange at a time every ae_interval with the next alive peer and
 * routes replies exactly as peer.c's handle_ae does, and the peers both
 * choose from are the alive members of sync/membership.
 *
 * Determinism: one kv_rng (w->rng) makes every random choice, in event
 * order, and event order is total. Every event that does something writes a
 * trace line; the FNV-1a hash of all lines is the run's fingerprint.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/peer.pb-c.h"
#include "tests/sim/world.h"

/* ---- trace ---- */

void tr(world *w, const char *fmt, ...) {
  if (!w->tracing) return;
  char line[512];
  int n = snprintf(line, sizeof line, "%llu ", (unsigned long long)w->now);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (size_t)m;
  if (len >= sizeof line - 1) len = sizeof line - 2;
  line[len++] = '\n';
  line[len] = 0;
  uint64_t h = w->th;
  for (size_t i = 0; i < len; i++) {
    h ^= (uint8_t)line[i];
    h *= 0x100000001b3ull;
  }
  w->th = h;
  if (w->trace) fputs(line, w->trace);
}

void fail(world *w, unsigned chk, const char *fmt, ...) {
  char why[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  tr(w, "FAIL %s %s", sim_check_name(chk), why);
  if (!w->res->failed)
    snprintf(w->res->why, sizeof w->res->why, "%s: %s", sim_check_name(chk),
             why);
  w->res->failed |= chk;
}

static uint64_t h64(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* ---- event queue ---- */

static bool ev_less(const event *a, const event *b) {
  return a->t != b->t ? a->t < b->t : a->seq < b->seq;
}

void ev_push(world *w, uint64_t t, int type, int node, uint64_t gen, void *p) {
  if (w->hn == w->hcap) {
    w->hcap = w->hcap ? 2 * w->hcap : 1024;
    w->heap = kv_realloc(w->heap, w->hcap * sizeof *w->heap);
  }
  event e = {t < w->now ? w->now : t, w->seq++, type, node, gen, p};
  size_t i = w->hn++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_less(&e, &w->heap[parent])) break;
    w->heap[i] = w->heap[parent];
    i = parent;
  }
  w->heap[i] = e;
}

static event ev_pop(world *w) {
  event top = w->heap[0];
  event last = w->heap[--w->hn];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= w->hn) break;
    if (c + 1 < w->hn && ev_less(&w->heap[c + 1], &w->heap[c])) c++;
    if (!ev_less(&w->heap[c], &last)) break;
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (w->hn) w->heap[i] = last;
  return top;
}

static uint64_t uniform(world *w, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return lo;
  uint64_t span = hi - lo + 1;
  return lo + (span > UINT32_MAX ? kv_rng_next(&w->rng) % span
                                 : kv_rng_below(&w->rng, (uint32_t)span));
}

static bool chance_ppm(world *w, uint32_t ppm) {
  return ppm && kv_rng_below(&w->rng, 1000000) < ppm;
}

/* ---- messages ---- */

static char *sdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = kv_malloc(n);
  memcpy(d, s, n);
  return d;
}

static void msg_free(msg *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nitems; i++) {
    kv_buf_free(&m->items[i].key);
    kv_buf_free(&m->items[i].obj);
  }
  free(m->items);
  kv_buf_free(&m->bytes);
  if (m->kind == MK_SWIM) {
    free((char *)m->sm.from_addr);
    free((char *)m->sm.target_addr);
    for (size_t i = 0; i < m->sm.nupdates; i++) {
      free((char *)m->up[i].name);
      free((char *)m->up[i].addr);
    }
    free(m->up);
  }
  free(m);
}

static void swim_copy(msg *d, const kv_swim_msg *s) {
  d->sm = *s;
  d->sm.from_addr = sdup(s->from_addr);
  d->sm.target_addr = sdup(s->target_addr);
  d->up = s->nupdates ? kv_malloc(s->nupdates * sizeof *d->up) : NULL;
  size_t size = 24;
  for (size_t i = 0; i < s->nupdates; i++) {
    d->up[i] = s->updates[i];
    d->up[i].name = sdup(s->updates[i].name);
    d->up[i].addr = sdup(s->updates[i].addr);
    size += kv_swim_update_size(&s->updates[i]);
  }
  d->sm.updates = d->up;
  d->size = size;
}

static msg *msg_clone(const msg *s) {
  msg *d = kv_calloc(1, sizeof *d);
  d->kind = s->kind;
  d->src = s->src;
  d->dst = s->dst;
  d->size = s->size;
  if (s->nitems) {
    d->items = kv_malloc(s->nitems * sizeof *d->items);
    for (size_t i = 0; i < s->nitems; i++) {
      d->items[i].key = kv_buf_dup(s->items[i].key.data, s->items[i].key.len);
      d->items[i].obj = kv_buf_dup(s->items[i].obj.data, s->items[i].obj.len);
    }
    d->nitems = s->nitems;
  }
  d->bytes = kv_buf_dup(s->bytes.data, s->bytes.len);
  if (s->kind == MK_SWIM) swim_copy(d, &s->sm);
  return d;
}

static const char *kind_name(int k) {
  switch (k) {
  case MK_RUMORS:
    return "rumors";
  case MK_ACK:
    return "ack";
  case MK_AE:
    return "ae";
  default:
    return "swim";
  }
}

static void count_msg(world *w, const msg *m) {
  w->res->messages++;
  switch (m->kind) {
  case MK_RUMORS:
    w->n_rumor_msgs++;
    w->n_rumor_items += m->nitems;
    w->b_rumor += m->size;
    break;
  case MK_ACK:
    w->n_ack_msgs++;
    w->b_ack += m->size;
    break;
  case MK_AE:
    w->n_ae_msgs++;
    w->b_ae += m->size;
    break;
  default:
    if (m->sm.type == KV_SWIM_PUSH_PULL) {
      w->n_swim_tcp++;
      w->b_swim_tcp += m->size;
    } else {
      w->n_swim_udp++;
      w->b_swim_udp += m->size;
    }
  }
}

static bool is_blocked(const world *w, int src, int dst) {
  return w->blocked[(size_t)src * (size_t)w->n + (size_t)dst] != 0;
}

/* Sends m (ownership moves in): dropped by a partition or by loss, else
 * delivered after a random delay, sometimes twice. */
static void net_send(world *w, msg *m) {
  count_msg(w, m);
  const char *why = NULL;
  /* Push-pull travels over TCP in memberlist (and kvd): a partition or a
   * dead peer stops it, random loss and duplication do not. Everything else
   * gets the full treatment, TCP or not: the rumor and anti-entropy cores
   * must tolerate loss anyway, and peer.c drops what it cannot send. */
  bool tcp = m->kind == MK_SWIM && m->sm.type == KV_SWIM_PUSH_PULL;
  if (m->dst < 0 || m->dst >= w->n)
    why = "nowhere";
  else if (is_blocked(w, m->src, m->dst))
    why = "partition";
  else if (!tcp && chance_ppm(w, w->loss_ppm))
    why = "loss";
  if (why) {
    w->res->dropped++;
    w->n_drop++;
    tr(w, "drop %s %d>%d %s", kind_name(m->kind), m->src, m->dst, why);
    msg_free(m);
    return;
  }
  bool dup = !tcp && chance_ppm(w, w->dup_ppm);
  uint64_t d1 = uniform(w, w->dmin, w->dmax);
  if (dup) {
    uint64_t d2 = uniform(w, w->dmin, w->dmax);
    tr(w, "dup %s %d>%d +%llu", kind_name(m->kind), m->src, m->dst,
       (unsigned long long)d2);
    ev_push(w, w->now + d2, EV_MSG, m->dst, 0, msg_clone(m));
  }
  ev_push(w, w->now + d1, EV_MSG, m->dst, 0, m);
}

int node_of_id(const world *w, uint64_t id) {
  int i = (int)(id & 0xFFFF) - 1;
  if (i < 0 || i >= w->n || w->r[i].id != id) return -1;
  return i;
}

static int node_of_addr(const world *w, const char *addr) {
  if (!addr || addr[0] != 'n') return -1;
  char *end;
  long v = strtol(addr + 1, &end, 10);
  if (*end || v < 0 || v >= w->n) return -1;
  return (int)v;
}

/* ---- timers ---- */

static void arm_swim(world *w, replica *r) {
  uint64_t t = kv_swim_next_due(r->swim);
  if (t < w->now) t = w->now;
  if (t == r->swim_at) return;
  r->swim_at = t;
  ev_push(w, t, EV_SWIM, r->i, ++r->swim_gen, NULL);
}

static void arm_rumor(world *w, replica *r, uint64_t t) {
  if (t == UINT64_MAX) return;
  if (t < w->now) t = w->now;
  if (r->rumor_at != UINT64_MAX && r->rumor_at <= t) return;
  r->rumor_at = t;
  ev_push(w, t, EV_RUMOR, r->i, ++r->rumor_gen, NULL);
}

/* ---- membership driver ---- */

typedef struct emit_ctx {
  world *w;
  int src;
} emit_ctx;

static void swim_emit(void *arg, uint64_t to, const char *to_addr,
                      const kv_swim_msg *m) {
  emit_ctx *c = arg;
  world *w = c->w;
  msg *x = kv_calloc(1, sizeof *x);
  x->kind = MK_SWIM;
  x->src = c->src;
  int d = node_of_addr(w, to_addr);
  x->dst = d >= 0 ? d : node_of_id(w, to);
  swim_copy(x, m);
  tr(w, "swim %d>%d t%d seq%u up%zu", x->src, x->dst, (int)m->type, m->seq,
     m->nupdates);
  net_send(w, x);
}

static void swim_after(world *w, replica *r) {
  kv_swim_event e;
  while (kv_swim_next_event(r->swim, &e)) {
    int j = node_of_id(w, e.id);
    tr(w, "member %d sees %d %d>%d inc%llu", r->i, j, (int)e.old_state,
       (int)e.new_state, (unsigned long long)e.incarnation);
    member_event(w, r->i, &e);
    if (w->on_swim_event) w->on_swim_event(w, r->i, &e);
  }
  arm_swim(w, r);
}

static void swim_tick(world *w, replica *r) {
  emit_ctx c = {w, r->i};
  kv_swim_tick(r->swim, w->now, &w->rng, swim_emit, &c);
  swim_after(w, r);
}

static size_t alive_peers(world *w, replica *r) {
  size_t n = kv_swim_alive_peers(r->swim, w->peers, (size_t)w->n);
  return n < (size_t)w->n ? n : (size_t)w->n;
}

/* Joining: at boot whatever has been heard by then, and again every second
 * while alone (--join, retried). Once in, every 30 s, a push-pull join
 * through a member held dead, as serf's reconnect does, so that the two
 * sides of a healed partition, each holding the other dead, find each other
 * again (memberlist itself never contacts the dead). */
static void do_join(world *w, replica *r) {
  emit_ctx c = {w, r->i};
  uint64_t next;
  if (!r->joined || alive_peers(w, r) == 0) {
    r->joined = true;
    if (w->data) {
      /* --join with every replica's address, as memberlist's Join(addrs)
       * contacts each: joining through one random replica could form
       * islands that never meet. */
      tr(w, "join %d via all", r->i);
      for (int j = 0; j < w->n; j++)
        if (j != r->i) kv_swim_join(r->swim, w->r[j].addr, swim_emit, &c);
    } else {
      int j;
      if (w->join_lower) {
        j = r->i ? (int)kv_rng_below(&w->rng, (uint32_t)r->i) : -1;
      } else {
        j = (int)kv_rng_below(&w->rng, (uint32_t)(w->n - 1));
        if (j >= r->i) j++;
      }
      if (j >= 0) {
        tr(w, "join %d via %d", r->i, j);
        kv_swim_join(r->swim, w->r[j].addr, swim_emit, &c);
      }
    }
    next = w->now + SIM_JOIN_RETRY_MS + uniform(w, 0, 200);
  } else {
    const kv_swim_update *rows;
    size_t n, ndead = 0;
    kv_swim_export(r->swim, &rows, &n);
    for (size_t k = 0; k < n; k++)
      ndead += rows[k].state == KV_SWIM_DEAD;
    if (ndead) {
      size_t pick = kv_rng_below(&w->rng, (uint32_t)ndead);
      for (size_t k = 0; k < n; k++) {
        if (rows[k].state != KV_SWIM_DEAD || pick--) continue;
        int j = node_of_id(w, rows[k].id);
        if (j >= 0) {
          tr(w, "reconnect %d via %d", r->i, j);
          kv_swim_join(r->swim, w->r[j].addr, swim_emit, &c);
        }
        break;
      }
    }
    next = w->now + SIM_RECONNECT_MS;
  }
  swim_after(w, r);
  ev_push(w, next, EV_JOIN, r->i, r->boot, NULL);
}

/* ---- store operations (storage/store.c's compute() and apply()) ---- */

static uint64_t hlc_next(world *w, replica *r) {
  uint64_t phys = w->now << 16;
  r->hlc = phys > r->hlc ? phys : r->hlc + 1;
  return r->hlc;
}

static void lww_merge(kv_object *out, const kv_object *a, const kv_object *b) {
  /* BRK_LWW: the whole object with the later timestamp wins. */
  uint64_t ta = kv_object_max_ts(a), tb = kv_object_max_ts(b);
  bool pick_a = ta != tb ? ta > tb : true;
  if (ta == tb) {
    kv_buf ea, eb;
    kv_object_encode(a, &ea);
    kv_object_encode(b, &eb);
    pick_a = kv_buf_cmp(ea.data, ea.len, eb.data, eb.len) >= 0;
    kv_buf_free(&ea);
    kv_buf_free(&eb);
  }
  kv_object_init(out);
  kv_object_copy(out, pick_a ? a : b);
  /* Counters still merge, so this break shows up in the registers only. */
  kv_counter_fini(&out->ctr);
  kv_counter_fini(&out->floor);
  kv_counter_merge(&out->ctr, &a->ctr, &b->ctr);
  kv_counter_merge(&out->floor, &a->floor, &b->floor);
  out->pn = a->pn || b->pn;
}

static int64_t counter_total(const kv_counter *c) {
  int64_t v = 0;
  return kv_counter_value(c, NULL, &v) == KV_OK ? v : INT64_MAX;
}

/* BRK_COUNTER_LWW: the counter with the larger total wins whole (ties go
 * to the larger state, so replicas still agree), which drops the
 * increments the loser had and the winner lacked. */
static void counter_lww(kv_counter *out, const kv_counter *a,
                        const kv_counter *b) {
  int64_t va = counter_total(a), vb = counter_total(b);
  bool pick_a = va != vb ? va > vb
                : a->n != b->n
                    ? a->n > b->n
                    : a->n == 0 || memcmp(a->e, b->e, a->n * sizeof *a->e) >= 0;
  kv_counter_fini(out);
  kv_counter_copy(out, pick_a ? a : b);
}

typedef struct wreq {
  int op;
  const uint8_t *key;
  size_t keylen;
  const uint8_t *val;
  size_t vlen;
  const kv_buf *ctx;
  bool local_ctx;
  int64_t delta;
  bool g;
  const uint8_t *remote;
  size_t rlen;
} wreq;

static void remember(world *w, replica *r, const uint8_t *key, size_t len,
                     const kv_buf *old) {
  size_t k = 0;
  for (size_t i = 0; i < r->nrecent; i++) {
    if (r->recent[i].t + 1000 < w->now) {
      kv_buf_free(&r->recent[i].key);
      kv_buf_free(&r->recent[i].old);
    } else {
      r->recent[k++] = r->recent[i];
    }
  }
  r->nrecent = k;
  if (r->nrecent == r->caprecent) {
    r->caprecent = r->caprecent ? 2 * r->caprecent : 16;
    r->recent = kv_realloc(r->recent, r->caprecent * sizeof *r->recent);
  }
  r->recent[r->nrecent++] =
      (recent_write){w->now, kv_buf_dup(key, len),
                     old ? kv_buf_dup(old->data, old->len) : (kv_buf){0}};
}

/* Applies q at replica r. Returns the status; *changed when the stored bytes
 * changed, in which case the tree has the delta and, for local and rumor
 * writes, the caller makes a rumor of the new bytes (ms_get). */
static int apply(world *w, replica *r, const wreq *q, bool *changed) {
  *changed = false;
  const kv_buf *oldb = ms_get(&r->ms, q->key, q->keylen);
  kv_object cur;
  kv_object_init(&cur);
  if (oldb) {
    int drc = kv_object_decode(oldb->data, oldb->len, SIZE_MAX, &cur);
    if (drc && q->op != OP_MERGE) return drc;
  }
  kv_vv ctx = {0, NULL};
  int rc = KV_OK;
  if ((q->op == OP_PUT || q->op == OP_DEL) && q->ctx) {
    rc = kv_context_decode(q->ctx->data, q->ctx->len, SIM_MAX_CONTEXT, &ctx);
    if (rc) {
      kv_object_fini(&cur);
      return rc;
    }
  }
  bool own = q->op == OP_PUT && !q->ctx && q->local_ctx;
  if (own) kv_dvv_join(&cur.reg, &ctx);
  const kv_vv *ctxp = q->ctx || own ? &ctx : NULL;
  if (q->op == OP_PUT && w->cfg.brk == BRK_NO_CONTEXT) ctxp = NULL;

  if (q->op == OP_DEL && w->cfg.brk == BRK_SKIP_TOMBSTONE && oldb) {
    kv_object_fini(&cur);
    kv_vv_fini(&ctx);
    uint32_t seg;
    kv_hash delta;
    ms_remove(&r->ms, q->key, q->keylen, &seg, &delta);
    kv_merkle_apply(r->tree, seg, &delta);
    *changed = false; /* nothing left to gossip */
    return KV_OK;
  }

  switch (q->op) {
  case OP_PUT:
    rc = kv_object_put(&cur, r->id, ctxp, q->val, q->vlen, hlc_next(w, r),
                       w->cfg.max_siblings);
    break;
  case OP_DEL:
    rc = kv_object_delete(&cur, r->id, ctxp, hlc_next(w, r),
                          w->cfg.max_siblings);
    break;
  case OP_INCR:
    rc = kv_object_incr(&cur, r->id, q->delta, q->g, NULL);
    break;
  case OP_MERGE: {
    kv_object remote;
    rc = kv_object_decode(q->remote, q->rlen, SIM_MAX_VALUE, &remote);
    if (rc) break;
    uint64_t ts = kv_object_max_ts(&remote);
    if (ts > r->hlc) r->hlc = ts;
    kv_object merged;
    if (w->cfg.brk == BRK_LWW)
      lww_merge(&merged, &cur, &remote);
    else
      kv_object_merge(&merged, &cur, &remote);
    if (w->cfg.brk == BRK_COUNTER_LWW) {
      counter_lww(&merged.ctr, &cur.ctr, &remote.ctr);
      /* keep floor <= counter, or the object would not decode */
      kv_counter_fini(&merged.floor);
    }
    kv_object_fini(&remote);
    kv_object_fini(&cur);
    cur = merged;
    break;
  }
  default:
    rc = KV_INVALID;
  }
  kv_vv_fini(&ctx);
  if (rc) {
    kv_object_fini(&cur);
    return rc;
  }
  kv_buf enc;
  kv_object_encode(&cur, &enc);
  kv_object_fini(&cur);
  if (q->op != OP_MERGE && w->cfg.brk == BRK_LOSE_ACK)
    remember(w, r, q->key, q->keylen, oldb);
  uint32_t seg;
  kv_hash delta;
  if (ms_put(&r->ms, q->key, q->keylen, enc, &seg, &delta)) {
    kv_merkle_apply(r->tree, seg, &delta);
    if (q->op == OP_MERGE && w->cfg.brk == BRK_STALE_LEAF)
      kv_hash_xor(&r->ms.leaves[seg], &delta);
    *changed = true;
    if (w->on_change) w->on_change(w, r->i, q->key, q->keylen);
  }
  return KV_OK;
}

/* Arms the rumor timer for the core's next tick (it paces itself). */
static void rumor_soon(world *w, replica *r) {
  if (!w->rumors_on) return;
  arm_rumor(w, r, kv_rumor_next_due(r->rumor));
}

static void rumor_add(world *w, replica *r, const uint8_t *key, size_t keylen,
                      uint64_t from) {
  if (!w->rumors_on) return;
  const kv_buf *obj = ms_get(&r->ms, key, keylen);
  uint8_t d[16];
  kv_object_digest(obj->data, obj->len, d);
  kv_rumor_add(r->rumor, key, keylen, obj->data, obj->len, d, from, w->now);
  rumor_soon(w, r);
}

int rep_local_write(world *w, int i, int op, const char *key,
                    const uint8_t *val, size_t vlen, const kv_buf *ctx,
                    bool local_ctx, int64_t delta, bool g) {
  replica *r = &w->r[i];
  if (!r->up) return KV_CLOSED;
  wreq q = {.op = op,
            .key = (const uint8_t *)key,
            .keylen = strlen(key),
            .val = val,
            .vlen = vlen,
            .ctx = ctx,
            .local_ctx = local_ctx,
            .delta = delta,
            .g = g};
  bool changed;
  w->cause = CAUSE_CLIENT;
  int rc = apply(w, r, &q, &changed);
  if (rc == KV_OK && changed) rumor_add(w, r, q.key, q.keylen, 0);
  return rc;
}

void rep_read(world *w, int i, const char *key, kv_object *o) {
  kv_object_init(o);
  const kv_buf *b = ms_get(&w->r[i].ms, (const uint8_t *)key, strlen(key));
  if (b && kv_object_decode(b->data, b->len, SIZE_MAX, o) != KV_OK) {
    fail(w, CHK_INTERNAL, "replica %d: stored object of %s does not decode", i,
         key);
    kv_object_init(o);
  }
}

/* ---- rumor driver ---- */

static void rumor_emit(void *arg, uint64_t peer, const uint8_t *key,
                       size_t keylen, const uint8_t *obj, size_t objlen) {
  emit_ctx *c = arg;
  world *w = c->w;
  int d = node_of_id(w, peer);
  if (d < 0) return;
  rbatch *b = &w->r[c->src].batch[d];
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 8;
    b->items = kv_realloc(b->items, b->cap * sizeof *b->items);
  }
  b->items[b->n++] =
      (rumor_item){kv_buf_dup(key, keylen), kv_buf_dup(obj, objlen)};
}

static void rumor_tick(world *w, replica *r) {
  r->rumor_at = UINT64_MAX;
  size_t n = alive_peers(w, r);
  emit_ctx c = {w, r->i};
  uint64_t next =
      kv_rumor_tick(r->rumor, w->now, &w->rng, w->peers, n, rumor_emit, &c);
  for (int d = 0; d < w->n; d++) {
    rbatch *b = &r->batch[d];
    if (!b->n) continue;
    msg *m = kv_calloc(1, sizeof *m);
    m->kind = MK_RUMORS;
    m->src = r->i;
    m->dst = d;
    m->items = b->items;
    m->nitems = b->n;
    m->size = 8;
    uint64_t h = 0;
    for (size_t k = 0; k < b->n; k++) {
      m->size += b->items[k].key.len + b->items[k].obj.len + 6;
      h ^= h64(b->items[k].obj.data, b->items[k].obj.len);
    }
    *b = (rbatch){0};
    tr(w, "rumors %d>%d n%zu h%016llx", m->src, d, m->nitems,
       (unsigned long long)h);
    w->res->rumors_pushed += m->nitems;
    net_send(w, m);
  }
  arm_rumor(w, r, next);
}

/* Merges each rumor of m, then answers the whole message with one ack
 * message, as peer.c does: news or not for every rumor. A rumor that is not
 * news tells us the sender holds the version we rumor, if it is the same. */
static void recv_rumors(world *w, replica *r, msg *m) {
  msg *acks = kv_calloc(1, sizeof *acks);
  acks->kind = MK_ACK;
  acks->src = r->i;
  acks->dst = m->src;
  acks->items = kv_calloc(m->nitems, sizeof *acks->items);
  acks->size = 8;
  for (size_t k = 0; k < m->nitems; k++) {
    rumor_item *it = &m->items[k];
    uint8_t d[16];
    kv_object_digest(it->obj.data, it->obj.len, d);
    wreq q = {.op = OP_MERGE,
              .key = it->key.data,
              .keylen = it->key.len,
              .remote = it->obj.data ? it->obj.data : (const uint8_t *)"",
              .rlen = it->obj.len};
    bool changed = false;
    int rc = KV_BAD_REQUEST;
    w->cause = CAUSE_RUMOR;
    if (it->key.len >= 1 && it->key.len <= KV_AE_MAX_KEY)
      rc = apply(w, r, &q, &changed);
    bool news = rc == KV_OK && changed;
    tr(w, "rumor-merge %d<%d rc%d news%d", r->i, m->src, rc, news);
    if (it->key.len < 1 || it->key.len > KV_AE_MAX_KEY)
      continue; /* peer.c drops it unmerged and unacked */
    if (rc == KV_OK && w->on_rumor)
      w->on_rumor(w, r->i, it->key.data, it->key.len);
    uint8_t dn[17];
    memcpy(dn, d, 16);
    dn[16] = news;
    acks->items[acks->nitems++] = (rumor_item){
        kv_buf_dup(it->key.data, it->key.len), kv_buf_dup(dn, sizeof dn)};
    acks->size += it->key.len + 20;
    if (news)
      rumor_add(w, r, it->key.data, it->key.len, w->r[m->src].id);
    else if (w->rumors_on)
      kv_rumor_peer_has(r->rumor, w->r[m->src].id, it->key.data, it->key.len,
                        d);
  }
  if (acks->nitems)
    net_send(w, acks);
  else
    msg_free(acks);
}

/* ---- anti-entropy driver ---- */

typedef struct ae_list_ctx {
  kv_ae_key_fn fn;
  void *arg;
} ae_list_ctx;

static void ae_visit(void *arg, const ms_entry *e) {
  ae_list_ctx *c = arg;
  uint8_t d[16];
  kv_object_digest(e->obj.data, e->obj.len, d);
  c->fn(c->arg, e->key.data, e->key.len, d);
}

static int ae_list_segment(void *ctx, uint32_t seg, kv_ae_key_fn fn,
                           void *arg) {
  replica *r = ctx;
  ae_list_ctx c = {fn, arg};
  ms_segment(&r->ms, seg, ae_visit, &c);
  return KV_OK;
}

static int ae_get_object(void *ctx, const uint8_t *key, size_t keylen,
                         kv_buf *obj) {
  replica *r = ctx;
  const kv_buf *b = ms_get(&r->ms, key, keylen);
  if (!b) return KV_NOTFOUND;
  *obj = kv_buf_dup(b->data, b->len);
  return KV_OK;
}

static kv_ae_store ae_store_of(replica *r) {
  kv_ae_store st = {r, r->tree, ae_list_segment, ae_get_object};
  return st;
}

static void ae_send(void *arg, const uint8_t *p, size_t len) {
  ae_ctx *c = arg;
  msg *m = kv_calloc(1, sizeof *m);
  m->kind = MK_AE;
  m->src = c->self;
  m->dst = c->peer;
  m->bytes = kv_buf_dup(p, len);
  m->size = len;
  tr(c->w, "ae %d>%d len%zu h%016llx", c->self, c->peer, len,
     (unsigned long long)h64(p, len));
  net_send(c->w, m);
}

static void ae_merge(void *arg, const uint8_t *key, size_t keylen,
                     const uint8_t *obj, size_t objlen) {
  ae_ctx *c = arg;
  world *w = c->w;
  replica *r = &w->r[c->self];
  wreq q = {.op = OP_MERGE,
            .key = key,
            .keylen = keylen,
            .remote = obj,
            .rlen = objlen};
  bool changed = false;
  int rc = KV_BAD_REQUEST;
  w->cause = CAUSE_AE;
  if (keylen >= 1 && keylen <= KV_AE_MAX_KEY) rc = apply(w, r, &q, &changed);
  if (changed) w->res->ae_repaired++;
  tr(w, "ae-merge %d<%d rc%d changed%d", c->self, c->peer, rc, changed);
}

static ae_ctx *ae_ctx_of(world *w, replica *r) {
  r->aectx = (ae_ctx){w, r->i, r->ae_peer};
  return &r->aectx;
}

static void ae_finish(world *w, replica *r, const char *outcome) {
  const kv_ae_stats *st = kv_ae_stats_of(r->ae);
  tr(w, "ae-end %d-%d %s sync%d pushed%llu pulled%llu", r->i, r->ae_peer,
     outcome, st->in_sync, (unsigned long long)st->keys_pushed,
     (unsigned long long)st->keys_pulled);
  w->res->ae_exchanges++;
  kv_ae_free(r->ae);
  r->ae = NULL;
  r->ae_peer = -1;
}

static void ae_timer(world *w, replica *r) {
  ev_push(w, w->now + w->cfg.ae_interval_ms, EV_AE, r->i, r->boot, NULL);
  if (!w->ae_on) return;
  if (r->ae) {
    if (w->now - r->ae_started < SIM_AE_TIMEOUT_MS) return;
    ae_finish(w, r, "timeout");
  }
  size_t n = alive_peers(w, r);
  if (!n) return;
  int peer = node_of_id(w, w->peers[r->ae_next++ % n]);
  if (peer < 0) return;
  r->ae_peer = peer;
  r->ae_started = w->now;
  r->ae_xid = kv_rng_next(&w->rng);
  kv_ae_store st = ae_store_of(r);
  tr(w, "ae-start %d-%d", r->i, peer);
  r->ae = kv_ae_start(&w->cfg.ae, &st, r->ae_xid, ae_send, ae_ctx_of(w, r));
}

static void recv_ae(world *w, replica *r, msg *m) {
  uint64_t xid;
  bool to_init;
  if (kv_ae_message_exchange(m->bytes.data, m->bytes.len, &xid, &to_init) !=
      KV_OK) {
    fail(w, CHK_INTERNAL, "replica %d: malformed AE message from %d", r->i,
         m->src);
    return;
  }
  Kvpb__PeerMessage *pm =
      kvpb__peer_message__unpack(NULL, m->bytes.len, m->bytes.data);
  bool is_push = pm && pm->body_case == KVPB__PEER_MESSAGE__BODY_AE_PUSH;
  if (pm) kvpb__peer_message__free_unpacked(pm, NULL);
  bool ours = r->ae && r->ae_peer == m->src && xid == r->ae_xid;
  ae_ctx mc = {w, r->i, m->src};
  if (to_init && !ours && !is_push) {
    tr(w, "ae-stale %d<%d", r->i, m->src);
    return;
  }
  if (to_init && ours) {
    int rc = kv_ae_feed(r->ae, m->bytes.data, m->bytes.len, ae_merge, &mc);
    if (rc == KV_CLOSED)
      ae_finish(w, r, "done");
    else if (rc != KV_OK)
      ae_finish(w, r, "refused");
    return;
  }
  kv_ae_store st = ae_store_of(r);
  int rc = kv_ae_respond(&w->cfg.ae, &st, m->bytes.data, m->bytes.len, ae_send,
                         &mc, ae_merge, &mc);
  if (rc != KV_OK) tr(w, "ae-respond %d<%d rc%d", r->i, m->src, rc);
}

/* ---- delivery ---- */

static void deliver(world *w, msg *m) {
  replica *r = &w->r[m->dst];
  if (!r->up || is_blocked(w, m->src, m->dst)) {
    w->res->dropped++;
    w->n_drop++;
    tr(w, "lost %s %d>%d %s", kind_name(m->kind), m->src, m->dst,
       r->up ? "partition" : "down");
    msg_free(m);
    return;
  }
  switch (m->kind) {
  case MK_RUMORS:
    recv_rumors(w, r, m);
    break;
  case MK_ACK:
    tr(w, "ack %d<%d n%zu", r->i, m->src, m->nitems);
    for (size_t k = 0; k < m->nitems; k++)
      kv_rumor_ack(r->rumor, w->r[m->src].id, m->items[k].key.data,
                   m->items[k].key.len, m->items[k].obj.data,
                   m->items[k].obj.data[16] != 0, w->now);
    rumor_soon(w, r); /* a round-trip sample may bring the tick forward */
    break;
  case MK_AE:
    recv_ae(w, r, m);
    break;
  case MK_SWIM: {
    emit_ctx c = {w, r->i};
    tr(w, "swim-in %d<%d t%d", r->i, m->src, (int)m->sm.type);
    if (kv_swim_recv(r->swim, w->now, &w->rng, &m->sm, swim_emit, &c) != KV_OK)
      fail(w, CHK_INTERNAL, "replica %d refused a membership message", r->i);
    swim_after(w, r);
    break;
  }
  }
  msg_free(m);
}

/* ---- replica lifecycle ---- */

void rep_boot(world *w, int i) {
  replica *r = &w->r[i];
  r->up = true;
  r->up_since = w->now;
  r->boot++;
  r->hlc = 0;
  kv_merkle *t;
  if (kv_merkle_new(r->ms.bits, &t) != KV_OK) abort();
  kv_merkle_load_leaves(t, r->ms.leaves);
  r->tree = t;
  r->rumor = kv_rumor_new(&w->ropts);
  r->rumor_at = r->swim_at = UINT64_MAX;
  r->batch = kv_calloc((size_t)w->n, sizeof *r->batch);
  r->ae = NULL;
  r->ae_peer = -1;
  r->ae_next = 0;
  r->joined = false;
  /* A restarted member comes back above every incarnation it used before
   * (kvd persists nothing for this and uses its boot time in seconds; the
   * simulator keeps the last one it had, as if stored with the data). */
  kv_swim_opts so = w->sopts;
  so.incarnation = r->inc + 1;
  r->swim = kv_swim_new(&so, r->id, r->addr, r->addr, w->now, &w->rng);
  tr(w, "boot %d inc%llu keys%zu", i, (unsigned long long)so.incarnation,
     r->ms.n);
  swim_after(w, r);
  ev_push(w, w->now + uniform(w, 0, 500), EV_JOIN, i, r->boot, NULL);
  ev_push(w, w->now + uniform(w, 1, w->cfg.ae_interval_ms), EV_AE, i, r->boot,
          NULL);
}

void rep_crash(world *w, int i) {
  replica *r = &w->r[i];
  if (!r->up) return;
  kv_swim_member me;
  if (kv_swim_member_get(r->swim, r->id, &me) == KV_OK) r->inc = me.incarnation;
  if (w->cfg.brk == BRK_LOSE_ACK) {
    for (size_t k = r->nrecent; k-- > 0;) {
      recent_write *x = &r->recent[k];
      if (x->t + 1000 < w->now) continue;
      uint32_t seg;
      kv_hash d;
      if (x->old.len)
        ms_put(&r->ms, x->key.data, x->key.len,
               kv_buf_dup(x->old.data, x->old.len), &seg, &d);
      else
        ms_remove(&r->ms, x->key.data, x->key.len, &seg, &d);
    }
  }
  for (size_t k = 0; k < r->nrecent; k++) {
    kv_buf_free(&r->recent[k].key);
    kv_buf_free(&r->recent[k].old);
  }
  r->nrecent = 0;
  r->up = false;
  r->crashed = true;
  r->down_since = w->now;
  r->boot++;
  kv_ae_free(r->ae);
  r->ae = NULL;
  kv_rumor_free(r->rumor);
  r->rumor = NULL;
  kv_swim_free(r->swim);
  r->swim = NULL;
  kv_merkle_free(r->tree);
  r->tree = NULL;
  for (int d = 0; d < w->n; d++) {
    for (size_t k = 0; k < r->batch[d].n; k++) {
      kv_buf_free(&r->batch[d].items[k].key);
      kv_buf_free(&r->batch[d].items[k].obj);
    }
    free(r->batch[d].items);
  }
  free(r->batch);
  r->batch = NULL;
  tr(w, "crash %d inc%llu", i, (unsigned long long)r->inc);
}

/* ---- nemesis ---- */

static void set_partition(world *w) {
  memset(w->blocked, 0, (size_t)w->n * (size_t)w->n);
  int kind = (int)kv_rng_below(&w->rng, 3);
  uint8_t *side = kv_calloc((size_t)w->n, 1);
  if (kind == 2) {
    side[kv_rng_below(&w->rng, (uint32_t)w->n)] = 1;
  } else {
    int ones = 0;
    while (ones == 0 || ones == w->n) {
      ones = 0;
      for (int i = 0; i < w->n; i++)
        ones += side[i] = (uint8_t)kv_rng_below(&w->rng, 2);
    }
  }
  for (int a = 0; a < w->n; a++)
    for (int b = 0; b < w->n; b++)
      if (side[a] != side[b] && (kind != 1 || side[a]))
        w->blocked[(size_t)a * (size_t)w->n + (size_t)b] = 1;
  char desc[80] = {0};
  for (int i = 0; i < w->n && i < 64; i++)
    desc[i] = side[i] ? '1' : '0';
  free(side);
  w->part_active = true;
  w->res->partitions++;
  tr(w, "partition %s %s",
     kind == 0   ? "split"
     : kind == 1 ? "oneway"
                 : "isolate",
     desc);
}

static void heal(world *w) {
  memset(w->blocked, 0, (size_t)w->n * (size_t)w->n);
  if (w->part_active) tr(w, "heal");
  w->part_active = false;
}

static void nemesis(world *w) {
  if (!w->active) return;
  ev_push(w, w->now + uniform(w, 2000, 6000), EV_NEMESIS, -1, 0, NULL);
  int down = 0;
  for (int i = 0; i < w->n; i++)
    down += !w->r[i].up;
  bool can_crash = w->cfg.crashes && down < w->cfg.max_down;
  bool can_part = w->cfg.partitions && !w->part_active;
  if (!can_crash && !can_part) return;
  bool crash = can_crash && (!can_part || kv_rng_below(&w->rng, 2));
  if (crash) {
    int i = (int)kv_rng_below(&w->rng, (uint32_t)w->n);
    if (!w->r[i].up) return;
    rep_crash(w, i);
    w->res->crashes++;
    ev_push(w, w->now + uniform(w, 1000, 20000), EV_RESTART, i, w->r[i].boot,
            NULL);
  } else {
    set_partition(w);
    ev_push(w, w->now + uniform(w, 2000, 20000), EV_HEAL, -1, 0, NULL);
  }
}

static void end_active(world *w) {
  w->active = false;
  heal(w);
  w->loss_ppm = w->dup_ppm = 0;
  tr(w, "quiet");
  for (int i = 0; i < w->n; i++)
    if (!w->r[i].up) rep_boot(w, i);
}

/* ---- the world ---- */

world *world_new(const sim_cfg *cfg, FILE *trace, sim_result *res, bool data) {
  static uint64_t leak; /* BRK_NONDET: state carried from run to run */
  world *w = kv_calloc(1, sizeof *w);
  w->cfg = *cfg;
  w->rng.s = cfg->seed * 0x2545F4914F6CDD1Dull + 0x9E3779B97F4A7C15ull;
  if (cfg->brk == BRK_NONDET) w->rng.s ^= leak++;
  w->n = cfg->nodes;
  w->data = data;
  w->ropts = cfg->rumor;
  if (!w->cfg.max_siblings) w->cfg.max_siblings = SIM_MAX_SIBLINGS;
  if (!w->cfg.nreg) w->cfg.nreg = 6;
  w->trace = trace;
  w->tracing = true;
  w->th = 0xcbf29ce484222325ull;
  w->res = res;
  memset(res, 0, sizeof *res);
  w->loss_ppm = cfg->loss_ppm;
  w->dup_ppm = cfg->dup_ppm;
  w->dmin = cfg->delay_min_ms;
  w->dmax = cfg->delay_max_ms;
  w->blocked = kv_calloc((size_t)w->n * (size_t)w->n, 1);
  w->peers = kv_calloc((size_t)w->n + 1, sizeof *w->peers);
  w->rumors_on = data;
  w->ae_on = data && cfg->brk != BRK_NO_AE;
  w->check_member =
      !cfg->partitions && cfg->loss_ppm <= 100000 && cfg->dup_ppm <= 100000;
  if (cfg->brk == BRK_SWIM_HASTY) {
    w->sopts.probe_interval_ms = 50;
    w->sopts.probe_timeout_ms = 5;
    w->sopts.suspicion_mult = 1;
    w->sopts.suspicion_max_mult = 2;
  }
  w->r = kv_calloc((size_t)w->n, sizeof *w->r);
  for (int i = 0; i < w->n; i++) {
    replica *r = &w->r[i];
    r->i = i;
    r->id = (kv_rng_next(&w->rng) & ~0xFFFFull) | (uint64_t)(i + 1);
    snprintf(r->addr, sizeof r->addr, "n%d", i);
    ms_init(&r->ms, cfg->segment_bits);
    r->ae_peer = -1;
  }
  w->next_op = 1;
  if (data) model_new(w);
  return w;
}

void world_free(world *w) {
  if (!w) return;
  w->tracing = false;
  for (int i = 0; i < w->n; i++) {
    rep_crash(w, i);
    for (size_t k = 0; k < w->r[i].nrecent; k++) {
      kv_buf_free(&w->r[i].recent[k].key);
      kv_buf_free(&w->r[i].recent[k].old);
    }
    free(w->r[i].recent);
    ms_fini(&w->r[i].ms);
  }
  for (size_t k = 0; k < w->hn; k++) {
    event *e = &w->heap[k];
    if (e->type == EV_MSG) msg_free(e->p);
    if (e->type == EV_CLIENT2) client_drop_pending(e->p);
  }
  free(w->heap);
  if (w->m) model_free(w);
  free(w->r);
  free(w->blocked);
  free(w->peers);
  free(w);
}

void world_start(world *w) {
  tr(w,
     "start seed%llu nodes%d bits%u loss%u dup%u delay%u-%u part%d "
     "crash%d break%d",
     (unsigned long long)w->cfg.seed, w->n, w->cfg.segment_bits,
     w->cfg.loss_ppm, w->cfg.dup_ppm, w->cfg.delay_min_ms, w->cfg.delay_max_ms,
     w->cfg.partitions, w->cfg.crashes, w->cfg.brk);
  for (int i = 0; i < w->n; i++)
    rep_boot(w, i);
}

static bool current(const world *w, const event *e) {
  return e->node >= 0 && w->r[e->node].up && e->gen == w->r[e->node].boot;
}

void world_run(world *w, uint64_t until) {
  while (w->hn && w->heap[0].t <= until) {
    event e = ev_pop(w);
    w->now = e.t;
    w->res->events++;
    replica *r = e.node >= 0 && e.node < w->n ? &w->r[e.node] : NULL;
    switch (e.type) {
    case EV_MSG:
      deliver(w, e.p);
      break;
    case EV_SWIM:
      if (r->up && e.gen == r->swim_gen) {
        r->swim_at = UINT64_MAX;
        swim_tick(w, r);
      }
      break;
    case EV_RUMOR:
      if (r->up && e.gen == r->rumor_gen) rumor_tick(w, r);
      break;
    case EV_AE:
      if (current(w, &e)) ae_timer(w, r);
      break;
    case EV_JOIN:
      if (current(w, &e)) do_join(w, r);
      break;
    case EV_CLIENT:
      client_op(w);
      break;
    case EV_CLIENT2:
      client_op2(w, &e);
      break;
    case EV_NEMESIS:
      nemesis(w);
      break;
    case EV_RESTART:
      if (!r->up && e.gen == r->boot) rep_boot(w, e.node);
      break;
    case EV_HEAL:
      heal(w);
      break;
    case EV_SAMPLE:
      model_sample(w);
      if (w->now < w->cfg.active_ms + w->cfg.quiet_ms)
        ev_push(w, w->now + 250, EV_SAMPLE, -1, 0, NULL);
      break;
    case EV_END_ACTIVE:
      end_active(w);
      break;
    case EV_SCALE:
      if (w->on_scale) w->on_scale(w, &e);
      break;
    }
  }
  if (w->now < until) w->now = until;
}

/* ---- one run ---- */

void sim_run(const sim_cfg *cfg, FILE *trace, sim_result *res) {
  world *w = world_new(cfg, trace, res, true);
  world_start(w);
  ev_push(w, uniform(w, 100, 1000), EV_CLIENT, -1, 0, NULL);
  if (cfg->partitions || cfg->crashes)
    ev_push(w, uniform(w, 2000, 5000), EV_NEMESIS, -1, 0, NULL);
  ev_push(w, 250, EV_SAMPLE, -1, 0, NULL);
  ev_push(w, cfg->active_ms, EV_END_ACTIVE, -1, 0, NULL);
  w->active = true;
  uint64_t end = cfg->active_ms + cfg->quiet_ms;
  world_run(w, end);
  model_check_final(w);
  res->trace_hash = w->th;
  res->sim_ms = w->now;
  world_free(w);
}
