/*
 * The clients and what they were told, and the checkers.
 *
 * Registers: every put writes a unique value "v<op>.", so a value names the
 * operation that wrote it. A write with a context supersedes exactly the
 * values the read that produced the context returned (DESIGN.md §2.1); a
 * write with the replica's own context (RESP SET, delete without context)
 * supersedes what that replica held at that moment. The model is only that:
 * it never looks at dots or version vectors, so it checks the DVVSet rather
 * than restating it. After the final heal and quiet period, every replica
 * must show exactly the acknowledged values that no acknowledged write
 * superseded: a missing one is a lost write, a superseded one is stale (or a
 * resurrection when a delete superseded it).
 *
 * Counters: the final value on every replica must equal the sum of the
 * acknowledged deltas (no write in the simulation is indeterminate: an
 * acknowledgement is the write applied to the coordinator's store), less,
 * for PN-counters, the increments a delete observed: those the deleting
 * replica held when it deleted (observed-remove, crdt/counter.h). G-counter
 * values are sampled on every replica every 250 ms and may never go down.
 *
 * Membership: in runs without partitions and with loss <= 10%, a replica
 * that never crashed must never be seen dead, and one that restarted not
 * once it has been up for SIM_FP_WINDOW_MS (longer than any suspicion that
 * can have begun while it was down lasts).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/world.h"

#define NPN 3
#define NG 3

enum { SUP_NONE = 0, SUP_PUT, SUP_DEL };

typedef struct mval {
  uint64_t id;
  uint64_t sup_by;
  int sup_kind;
} mval;

typedef struct mkey {
  mval *v;
  size_t n, cap;
} mkey;

/* An acknowledged PN increment: the coordinator's entry field reached cum
 * with it. A delete observed it when the deleting replica's entry had. */
typedef struct minc {
  uint64_t id, cum;
  bool dec, deleted;
  int64_t delta;
} minc;

typedef struct mctr {
  minc *v;
  size_t n, cap;
} mctr;

typedef struct model {
  mkey *reg; /* [cfg.nreg] */
  mctr pnlog[NPN];
  int64_t g[NG];
  int64_t *glast; /* [replica * NG + key], -1 before the first sample */
} model;

typedef struct pending {
  int op; /* OP_PUT or OP_DEL */
  int key;
  uint64_t opid;
  kv_buf ctx;
  uint64_t *ids;
  size_t nids;
} pending;

void model_new(world *w) {
  model *m = kv_calloc(1, sizeof *m);
  m->reg = kv_calloc((size_t)w->cfg.nreg, sizeof *m->reg);
  m->glast = kv_malloc((size_t)w->n * NG * sizeof *m->glast);
  for (size_t i = 0; i < (size_t)w->n * NG; i++)
    m->glast[i] = -1;
  w->m = m;
}

void model_free(world *w) {
  model *m = w->m;
  for (int k = 0; k < w->cfg.nreg; k++)
    free(m->reg[k].v);
  free(m->reg);
  for (int k = 0; k < NPN; k++)
    free(m->pnlog[k].v);
  free(m->glast);
  free(m);
  w->m = NULL;
}

void client_drop_pending(void *p) {
  pending *x = p;
  if (!x) return;
  kv_buf_free(&x->ctx);
  free(x->ids);
  free(x);
}

static void key_name(char *out, char kind, int k) {
  snprintf(out, 8, "%c%d", kind, k);
}

static mval *find_val(mkey *k, uint64_t id) {
  for (size_t i = 0; i < k->n; i++)
    if (k->v[i].id == id) return &k->v[i];
  return NULL;
}

/* The value ids of the live siblings in o (owned array; caller frees). */
static uint64_t *live_ids(const kv_object *o, size_t *n) {
  size_t total = kv_object_live_values(o, NULL, 0);
  const kv_value **vals = kv_malloc((total ? total : 1) * sizeof *vals);
  kv_object_live_values(o, vals, total);
  uint64_t *ids = kv_malloc((total ? total : 1) * sizeof *ids);
  size_t k = 0;
  for (size_t i = 0; i < total; i++) {
    const kv_value *v = vals[i];
    if (v->data.len < 2 || v->data.data[0] != 'v') {
      ids[k++] = UINT64_MAX; /* never written by a client */
      continue;
    }
    uint64_t id = 0;
    for (size_t j = 1; j < v->data.len && v->data.data[j] != '.'; j++)
      id = id * 10 + (uint64_t)(v->data.data[j] - '0');
    ids[k++] = id;
  }
  free(vals);
  *n = k;
  return ids;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static void supersede(world *w, int key, const uint64_t *ids, size_t n,
                      uint64_t by, int kind) {
  mkey *k = &w->m->reg[key];
  for (size_t i = 0; i < n; i++) {
    mval *v = find_val(k, ids[i]);
    if (v && v->sup_kind == SUP_NONE) {
      v->sup_kind = kind;
      v->sup_by = by;
    }
  }
}

static void add_value(world *w, int key, uint64_t id) {
  mkey *k = &w->m->reg[key];
  if (k->n == k->cap) {
    k->cap = k->cap ? 2 * k->cap : 16;
    k->v = kv_realloc(k->v, k->cap * sizeof *k->v);
  }
  k->v[k->n++] = (mval){id, 0, SUP_NONE};
}

/* A fresh value "v<op>." with 0..31 filler bytes, so sizes vary. */
static size_t make_value(world *w, uint64_t op, uint8_t *buf, size_t cap) {
  int n = snprintf((char *)buf, cap, "v%" PRIu64 ".", op);
  size_t len = (size_t)n, fill = kv_rng_below(&w->rng, 32);
  for (size_t i = 0; i < fill && len < cap; i++)
    buf[len++] = (uint8_t)('a' + kv_rng_below(&w->rng, 26));
  return len;
}

/* What a read at replica i returns for register key: the live value ids and
 * the context. */
static uint64_t *read_at(world *w, int i, int key, size_t *n, kv_buf *ctx) {
  char name[8];
  key_name(name, 'r', key);
  kv_object o;
  rep_read(w, i, name, &o);
  uint64_t *ids = live_ids(&o, n);
  if (ctx) {
    kv_vv vv;
    kv_dvv_join(&o.reg, &vv);
    kv_context_encode(&vv, ctx);
    kv_vv_fini(&vv);
  }
  kv_object_fini(&o);
  return ids;
}

/* A put or delete at replica i; ctx NULL means the replica's own context,
 * whose coverage is what i holds right now. */
static void reg_write(world *w, int i, int op, int key, uint64_t opid,
                      const kv_buf *ctx, const uint64_t *seen, size_t nseen,
                      bool no_ctx) {
  char name[8];
  key_name(name, 'r', key);
  uint64_t *own = NULL;
  size_t nown = 0;
  if (!ctx && !no_ctx && w->r[i].up) {
    own = read_at(w, i, key, &nown, NULL);
    seen = own;
    nseen = nown;
  }
  uint8_t val[64];
  size_t vlen = op == OP_PUT ? make_value(w, opid, val, sizeof val) : 0;
  int rc = rep_local_write(w, i, op, name, val, vlen, ctx,
                           op == OP_PUT && !ctx && !no_ctx, 0, false);
  tr(w, "client op%" PRIu64 " %s %s @%d ctx%s rc%d", opid,
     op == OP_PUT ? "put" : "del", name, i,
     ctx      ? "=read"
     : no_ctx ? "=none"
              : "=own",
     rc);
  if (rc == KV_OK) {
    w->res->acked++;
    if (op == OP_PUT) add_value(w, key, opid);
    if (!no_ctx)
      supersede(w, key, seen, nseen, opid, op == OP_PUT ? SUP_PUT : SUP_DEL);
  }
  free(own);
}

static const kv_counter_entry *entry_of(const kv_counter *c, uint64_t id) {
  for (size_t k = 0; k < c->n; k++)
    if (c->e[k].id == id) return &c->e[k];
  return NULL;
}

static void incr(world *w, int i, bool g, int key, int64_t delta,
                 uint64_t opid) {
  char name[8];
  key_name(name, g ? 'g' : 'p', key);
  int rc = rep_local_write(w, i, OP_INCR, name, NULL, 0, NULL, false, delta, g);
  tr(w, "client op%" PRIu64 " incr %s %+" PRId64 " @%d rc%d", opid, name, delta,
     i, rc);
  if (rc == KV_OK) {
    w->res->acked++;
    if (g) {
      w->m->g[key] += delta;
      return;
    }
    kv_object o;
    rep_read(w, i, name, &o);
    const kv_counter_entry *e = entry_of(&o.ctr, w->r[i].id);
    mctr *c = &w->m->pnlog[key];
    if (c->n == c->cap) {
      c->cap = c->cap ? 2 * c->cap : 32;
      c->v = kv_realloc(c->v, c->cap * sizeof *c->v);
    }
    c->v[c->n++] = (minc){w->r[i].id, e ? (delta > 0 ? e->inc : e->dec) : 0,
                          delta < 0, false, delta};
    kv_object_fini(&o);
  }
}

/* Deletes PN counter key at replica i: the increments it has seen are gone,
 * the others (concurrent) survive (observed-remove, crdt/counter.h). */
static void del_counter(world *w, int i, int key, uint64_t opid) {
  char name[8];
  key_name(name, 'p', key);
  int rc = rep_local_write(w, i, OP_DEL, name, NULL, 0, NULL, false, 0, false);
  tr(w, "client op%" PRIu64 " del %s @%d rc%d", opid, name, i, rc);
  if (rc != KV_OK) return;
  w->res->acked++;
  kv_object o;
  rep_read(w, i, name, &o);
  mctr *c = &w->m->pnlog[key];
  for (size_t k = 0; k < c->n; k++) {
    const kv_counter_entry *e = entry_of(&o.ctr, c->v[k].id);
    if (e && (c->v[k].dec ? e->dec : e->inc) >= c->v[k].cum)
      c->v[k].deleted = true;
  }
  kv_object_fini(&o);
}

void client_op(world *w) {
  if (!w->active) return;
  uint64_t gap = w->cfg.op_gap_ms ? w->cfg.op_gap_ms : 200;
  ev_push(w, w->now + 1 + kv_rng_below(&w->rng, (uint32_t)(2 * gap)), EV_CLIENT,
          -1, 0, NULL);
  uint64_t opid = w->next_op++;
  w->res->client_ops++;
  int i = (int)kv_rng_below(&w->rng, (uint32_t)w->n);
  unsigned c = kv_rng_below(&w->rng, 100);
  int rk = (int)kv_rng_below(&w->rng, (uint32_t)w->cfg.nreg);
  if (c < 22) {
    reg_write(w, i, OP_PUT, rk, opid, NULL, NULL, 0, true);
  } else if (c < 46) {
    /* Read at i, write later at a random replica with that context. */
    if (!w->r[i].up) {
      tr(w, "client op%" PRIu64 " read @%d down", opid, i);
      return;
    }
    pending *p = kv_calloc(1, sizeof *p);
    p->op = c < 36 ? OP_PUT : OP_DEL;
    p->key = rk;
    p->opid = opid;
    p->ids = read_at(w, i, rk, &p->nids, &p->ctx);
    tr(w, "client op%" PRIu64 " read r%d @%d saw%zu", opid, rk, i, p->nids);
    int j = (int)kv_rng_below(&w->rng, (uint32_t)w->n);
    ev_push(w, w->now + kv_rng_below(&w->rng, 300), EV_CLIENT2, j, 0, p);
  } else if (c < 50) {
    reg_write(w, i, OP_DEL, rk, opid, NULL, NULL, 0, false);
  } else if (c < 55) {
    reg_write(w, i, OP_PUT, rk, opid, NULL, NULL, 0, false);
  } else if (c < 58) {
    del_counter(w, i, (int)kv_rng_below(&w->rng, NPN), opid);
  } else if (c < 78) {
    int64_t d = (int64_t)kv_rng_below(&w->rng, 9) - 5;
    if (d >= 0) d++; /* -5..4 without 0 */
    incr(w, i, false, (int)kv_rng_below(&w->rng, NPN), d, opid);
  } else {
    incr(w, i, true, (int)kv_rng_below(&w->rng, NG),
         1 + (int64_t)kv_rng_below(&w->rng, 4), opid);
  }
}

void client_op2(world *w, const event *e) {
  pending *p = e->p;
  reg_write(w, e->node, p->op, p->key, p->opid, &p->ctx, p->ids, p->nids,
            false);
  client_drop_pending(p);
}

static int64_t counter_at(world *w, int i, char kind, int key) {
  char name[8];
  key_name(name, kind, key);
  kv_object o;
  rep_read(w, i, name, &o);
  int64_t v = 0;
  if (kv_object_kind(&o) != KV_KIND_NONE &&
      kv_object_counter_value(&o, &v) != KV_OK)
    fail(w, CHK_COUNTER, "replica %d: %s overflows", i, name);
  kv_object_fini(&o);
  return v;
}

void model_sample(world *w) {
  for (int i = 0; i < w->n; i++) {
    if (!w->r[i].up) continue;
    for (int k = 0; k < NG; k++) {
      int64_t v = counter_at(w, i, 'g', k);
      int64_t *last = &w->m->glast[i * NG + k];
      if (v < *last)
        fail(w, CHK_GMONO, "replica %d: g%d went from %" PRId64 " to %" PRId64,
             i, k, *last, v);
      *last = v;
    }
  }
}

void member_event(world *w, int node, const kv_swim_event *e) {
  if (!w->m || e->new_state != KV_SWIM_DEAD) return;
  int j = node_of_id(w, e->id);
  if (j < 0 || !w->r[j].up || !w->check_member) return;
  uint64_t up = w->now - w->r[j].up_since;
  if (w->r[j].crashed && up < SIM_FP_WINDOW_MS) return;
  w->res->false_dead++;
  fail(w, CHK_MEMBER, "replica %d declared %d dead, up for %" PRIu64 " ms",
       node, j, up);
}

/* ---- final checks ---- */

static bool stores_equal(const memstore *a, const memstore *b,
                         const ms_entry **diff) {
  size_t i = 0, j = 0;
  while (i < a->n || j < b->n) {
    if (i == a->n) {
      *diff = &b->e[j];
      return false;
    }
    if (j == b->n) {
      *diff = &a->e[i];
      return false;
    }
    const ms_entry *x = &a->e[i], *y = &b->e[j];
    if (x->seg != y->seg ||
        kv_buf_cmp(x->key.data, x->key.len, y->key.data, y->key.len) != 0) {
      *diff = x->seg < y->seg || (x->seg == y->seg &&
                                  kv_buf_cmp(x->key.data, x->key.len,
                                             y->key.data, y->key.len) < 0)
                  ? x
                  : y;
      return false;
    }
    if (kv_buf_cmp(x->obj.data, x->obj.len, y->obj.data, y->obj.len) != 0) {
      *diff = x;
      return false;
    }
    i++, j++;
  }
  return true;
}

static void check_registers(world *w, int i) {
  for (int k = 0; k < w->cfg.nreg; k++) {
    mkey *mk = &w->m->reg[k];
    size_t n;
    uint64_t *ids = read_at(w, i, k, &n, NULL);
    qsort(ids, n, sizeof *ids, cmp_u64);
    for (size_t a = 0; a < n; a++) {
      mval *v = find_val(mk, ids[a]);
      if (!v)
        fail(w, CHK_STALE,
             "replica %d: r%d holds v%" PRIu64 ", never acknowledged", i, k,
             ids[a]);
      else if (v->sup_kind == SUP_DEL)
        fail(w, CHK_RESURRECT,
             "replica %d: r%d holds v%" PRIu64 ", deleted by op%" PRIu64, i, k,
             ids[a], v->sup_by);
      else if (v->sup_kind == SUP_PUT)
        fail(w, CHK_STALE,
             "replica %d: r%d holds v%" PRIu64 ", replaced by op%" PRIu64, i, k,
             ids[a], v->sup_by);
    }
    for (size_t b = 0; b < mk->n; b++) {
      if (mk->v[b].sup_kind != SUP_NONE) continue;
      if (!bsearch(&mk->v[b].id, ids, n, sizeof *ids, cmp_u64))
        fail(w, CHK_LOST,
             "replica %d: r%d lacks acknowledged v%" PRIu64
             " (%zu live, %zu expected)",
             i, k, mk->v[b].id, n, mk->n);
    }
    free(ids);
  }
}

static void check_counters(world *w, int i) {
  for (int k = 0; k < NPN; k++) {
    int64_t v = counter_at(w, i, 'p', k), want = 0;
    for (size_t j = 0; j < w->m->pnlog[k].n; j++)
      if (!w->m->pnlog[k].v[j].deleted) want += w->m->pnlog[k].v[j].delta;
    if (v != want)
      fail(w, CHK_COUNTER,
           "replica %d: p%d = %" PRId64 ", acknowledged sum %" PRId64
           " since the deletes that saw them",
           i, k, v, want);
  }
  for (int k = 0; k < NG; k++) {
    int64_t v = counter_at(w, i, 'g', k);
    if (v != w->m->g[k])
      fail(w, CHK_COUNTER,
           "replica %d: g%d = %" PRId64 ", acknowledged sum %" PRId64, i, k, v,
           w->m->g[k]);
  }
}

void model_check_final(world *w) {
  tr(w, "check");
  model_sample(w);
  for (int i = 0; i < w->n; i++) {
    replica *r = &w->r[i];
    uint32_t bad = ms_verify(&r->ms);
    if (bad)
      fail(w, CHK_INTERNAL, "replica %d: %u leaves differ from its objects", i,
           bad);
    kv_merkle *t;
    if (kv_merkle_new(r->ms.bits, &t) != KV_OK) abort();
    kv_merkle_load_leaves(t, r->ms.leaves);
    kv_hash a = kv_merkle_root(t), b = kv_merkle_root(r->tree);
    if (!kv_hash_equal(&a, &b))
      fail(w, CHK_INTERNAL, "replica %d: in-memory tree differs from leaves",
           i);
    kv_merkle_free(t);
  }
  kv_hash root0 = kv_merkle_root(w->r[0].tree);
  for (int i = 1; i < w->n; i++) {
    kv_hash ri = kv_merkle_root(w->r[i].tree);
    const ms_entry *d = NULL;
    bool same = stores_equal(&w->r[0].ms, &w->r[i].ms, &d);
    if (!kv_hash_equal(&root0, &ri) || !same) {
      size_t peers = kv_swim_alive_peers(w->r[i].swim, NULL, 0);
      fail(w, CHK_CONVERGE,
           "replicas 0 and %d differ (roots %s, first key %.*s; %d sees %zu "
           "alive of %d)",
           i, kv_hash_equal(&root0, &ri) ? "equal" : "differ",
           d ? (int)d->key.len : 4, d ? (const char *)d->key.data : "none", i,
           peers, w->n - 1);
      break;
    }
  }
  for (int i = 0; i < w->n; i++) {
    check_registers(w, i);
    check_counters(w, i);
  }
  for (int k = 0; k < w->cfg.nreg; k++) {
    size_t live = 0, put = 0, del = 0;
    for (size_t b = 0; b < w->m->reg[k].n; b++) {
      int sk = w->m->reg[k].v[b].sup_kind;
      live += sk == SUP_NONE, put += sk == SUP_PUT, del += sk == SUP_DEL;
    }
    tr(w, "model r%d live%zu replaced%zu deleted%zu", k, live, put, del);
  }
  for (int i = 0; i < w->n; i++)
    tr(w, "final %d keys%zu alive%zu", i, w->r[i].ms.n,
       kv_swim_alive_peers(w->r[i].swim, NULL, 0));
}
