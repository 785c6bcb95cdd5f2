/*
 * The replicated object: local updates, merge, and the canonical protobuf-c
 * encoding. Decoding treats its input as hostile (it comes from LMDB pages
 * that may have rotted, or from peers): protobuf-c checks the wire format and
 * this file then checks every structural invariant before anything is used.
 */
#include "crdt/object.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/object.pb-c.h"

void kv_object_init(kv_object *o) {
  kv_dvv_init(&o->reg);
  kv_counter_init(&o->ctr);
  kv_counter_init(&o->floor);
  o->pn = false;
}

void kv_object_fini(kv_object *o) {
  if (!o) return;
  kv_dvv_fini(&o->reg);
  kv_counter_fini(&o->ctr);
  kv_counter_fini(&o->floor);
  o->pn = false;
}

void kv_object_copy(kv_object *dst, const kv_object *src) {
  kv_dvv_copy(&dst->reg, &src->reg);
  kv_counter_copy(&dst->ctr, &src->ctr);
  kv_counter_copy(&dst->floor, &src->floor);
  dst->pn = src->pn;
}

/* Calls fn on every value of the register, anonymous ones included. */
#define FOR_EACH_VALUE(dvv, v, body)                                           \
  do {                                                                         \
    for (size_t ai_ = 0; ai_ < (dvv)->nanon; ai_++) {                          \
      const kv_value *v = &(dvv)->anon[ai_];                                   \
      body;                                                                    \
    }                                                                          \
    for (size_t ei_ = 0; ei_ < (dvv)->nent; ei_++)                             \
      for (size_t vi_ = 0; vi_ < (dvv)->ent[ei_].nvals; vi_++) {               \
        const kv_value *v = &(dvv)->ent[ei_].vals[vi_];                        \
        body;                                                                  \
      }                                                                        \
  } while (0)

static bool counter_above_floor(const kv_object *o) {
  return !kv_counter_leq(&o->ctr, &o->floor);
}

kv_kind kv_object_kind(const kv_object *o) {
  FOR_EACH_VALUE(&o->reg, v, if (!v->tombstone) return KV_KIND_REGISTER);
  if (counter_above_floor(o))
    return o->pn ? KV_KIND_PNCOUNTER : KV_KIND_GCOUNTER;
  return KV_KIND_NONE;
}

size_t kv_object_live_values(const kv_object *o, const kv_value **out,
                             size_t cap) {
  size_t n = 0;
  FOR_EACH_VALUE(&o->reg, v, {
    if (!v->tombstone) {
      if (n < cap) out[n] = v;
      n++;
    }
  });
  return n;
}

const kv_value *kv_object_lww(const kv_object *o) {
  const kv_value *best = NULL;
  FOR_EACH_VALUE(&o->reg, v, {
    if (!v->tombstone && (!best || v->ts > best->ts ||
                          (v->ts == best->ts &&
                           kv_buf_cmp(v->data.data, v->data.len,
                                      best->data.data, best->data.len) > 0)))
      best = v;
  });
  return best;
}

int kv_object_counter_value(const kv_object *o, int64_t *out) {
  return kv_counter_value(&o->ctr, &o->floor, out);
}

uint64_t kv_object_max_ts(const kv_object *o) {
  uint64_t ts = 0;
  FOR_EACH_VALUE(&o->reg, v, if (v->ts > ts) ts = v->ts);
  return ts;
}

/* Writes v under ctx (NULL: no history) as a new dot of replica, keeping the
 * result only if it respects the sibling cap. */
static int reg_write(kv_object *o, uint64_t replica, const kv_vv *ctx,
                     const kv_value *v, size_t max_siblings) {
  kv_dvv client, next;
  kv_dvv_new(&client, ctx, v, 1);
  kv_dvv_update(&next, &client, &o->reg, replica);
  kv_dvv_fini(&client);
  if (kv_dvv_size(&next) > max_siblings) {
    kv_dvv_fini(&next);
    return KV_TOO_MANY_SIBLINGS;
  }
  kv_dvv_fini(&o->reg);
  o->reg = next;
  return KV_OK;
}

int kv_object_put(kv_object *o, uint64_t replica, const kv_vv *ctx,
                  const uint8_t *val, size_t len, uint64_t ts,
                  size_t max_siblings) {
  kv_kind kind = kv_object_kind(o);
  if (kind == KV_KIND_GCOUNTER || kind == KV_KIND_PNCOUNTER)
    return KV_WRONG_TYPE;
  /* kv_dvv_new copies the value, so borrowing the caller's bytes is safe. */
  kv_value v = {{(uint8_t *)val, len}, ts, false};
  return reg_write(o, replica, ctx, &v, max_siblings);
}

int kv_object_delete(kv_object *o, uint64_t replica, const kv_vv *ctx,
                     uint64_t ts, size_t max_siblings) {
  kv_kind kind = kv_object_kind(o);
  if (!ctx && kind == KV_KIND_NONE) return KV_NOTFOUND;
  /* A counter deleted without a context needs no tombstone: raising the floor
   * is the whole delete. Otherwise the tombstone supersedes what the context
   * (or this replica's own history) covers, and only that. */
  if (ctx || kind == KV_KIND_REGISTER) {
    kv_vv own = {0, NULL};
    if (!ctx) kv_dvv_join(&o->reg, &own);
    kv_value tomb = {{NULL, 0}, ts, true};
    int rc = reg_write(o, replica, ctx ? ctx : &own, &tomb, max_siblings);
    kv_vv_fini(&own);
    if (rc) return rc;
  }
  kv_counter_fini(&o->floor);
  kv_counter_copy(&o->floor, &o->ctr);
  return KV_OK;
}

int kv_object_incr(kv_object *o, uint64_t replica, int64_t delta, bool gcounter,
                   int64_t *value) {
  kv_kind kind = kv_object_kind(o);
  if (kind == KV_KIND_REGISTER) return KV_WRONG_TYPE;
  /* Once PN, a key's counter stays PN (the flag merges by "or"). */
  bool g = kind == KV_KIND_NONE ? gcounter && !o->pn : kind == KV_KIND_GCOUNTER;
  if (g && delta < 0) return KV_GCOUNTER_DECREMENT;
  int rc = kv_counter_add(&o->ctr, &o->floor, replica, delta);
  if (rc) return rc;
  if (!g) o->pn = true;
  if (value) return kv_counter_value(&o->ctr, &o->floor, value);
  return KV_OK;
}

void kv_object_merge(kv_object *out, const kv_object *a, const kv_object *b) {
  kv_dvv_sync(&out->reg, &a->reg, &b->reg);
  kv_counter_merge(&out->ctr, &a->ctr, &b->ctr);
  kv_counter_merge(&out->floor, &a->floor, &b->floor);
  out->pn = a->pn || b->pn;
}

/* ---- encoding ---- */

/* Protobuf-c wants arrays of pointers to sub-messages; build them in one
 * scratch allocation per message kind and free them after packing. */
static void value_to_pb(Kvpb__Value *pb, const kv_value *v) {
  kvpb__value__init(pb);
  pb->data.data = v->data.data;
  pb->data.len = v->data.len;
  pb->ts = v->ts;
  pb->tombstone = v->tombstone;
}

static Kvpb__CounterEntry **counter_to_pb(const kv_counter *c,
                                          Kvpb__CounterEntry *store) {
  Kvpb__CounterEntry **ptrs = kv_malloc(c->n * sizeof *ptrs);
  for (size_t i = 0; i < c->n; i++) {
    kvpb__counter_entry__init(&store[i]);
    store[i].id = c->e[i].id;
    store[i].inc = c->e[i].inc;
    store[i].dec = c->e[i].dec;
    ptrs[i] = &store[i];
  }
  return ptrs;
}

void kv_object_encode(const kv_object *o, kv_buf *out) {
  Kvpb__Object pb = KVPB__OBJECT__INIT;
  size_t nvals = kv_dvv_size(&o->reg);
  Kvpb__Value *vals = kv_malloc(nvals * sizeof *vals);
  Kvpb__Value **valp = kv_malloc(nvals * sizeof *valp);
  Kvpb__DvvEntry *ents = kv_malloc(o->reg.nent * sizeof *ents);
  Kvpb__DvvEntry **entp = kv_malloc(o->reg.nent * sizeof *entp);
  size_t k = 0;

  for (size_t i = 0; i < o->reg.nanon; i++, k++) {
    value_to_pb(&vals[k], &o->reg.anon[i]);
    valp[k] = &vals[k];
  }
  pb.n_anon = o->reg.nanon;
  pb.anon = valp;
  for (size_t i = 0; i < o->reg.nent; i++) {
    const kv_dvv_entry *e = &o->reg.ent[i];
    kvpb__dvv_entry__init(&ents[i]);
    ents[i].id = e->id;
    ents[i].n = e->n;
    ents[i].n_values = e->nvals;
    ents[i].values = &valp[k];
    for (size_t j = 0; j < e->nvals; j++, k++) {
      value_to_pb(&vals[k], &e->vals[j]);
      valp[k] = &vals[k];
    }
    entp[i] = &ents[i];
  }
  pb.n_entries = o->reg.nent;
  pb.entries = entp;

  Kvpb__CounterEntry *cs = kv_malloc((o->ctr.n + o->floor.n) * sizeof *cs);
  pb.n_counter = o->ctr.n;
  pb.counter = counter_to_pb(&o->ctr, cs);
  pb.n_floor = o->floor.n;
  pb.floor = counter_to_pb(&o->floor, cs + o->ctr.n);
  pb.pn = o->pn;

  out->len = kvpb__object__get_packed_size(&pb);
  out->data = kv_malloc(out->len);
  size_t packed = kvpb__object__pack(&pb, out->data);
  kv_assert(packed == out->len);

  free(pb.counter);
  free(pb.floor);
  free(cs);
  free(vals);
  free(valp);
  free(ents);
  free(entp);
}

static int value_from_pb(kv_value *v, const Kvpb__Value *pb, size_t max_value) {
  if (pb->data.len > max_value) return KV_CORRUPT;
  v->data = kv_buf_dup(pb->data.data, pb->data.len);
  v->ts = pb->ts;
  v->tombstone = pb->tombstone;
  return KV_OK;
}

static int counter_from_pb(kv_counter *c, Kvpb__CounterEntry **pb, size_t n) {
  c->n = n;
  c->e = n ? kv_malloc(n * sizeof *c->e) : NULL;
  for (size_t i = 0; i < n; i++)
    c->e[i] = (kv_counter_entry){pb[i]->id, pb[i]->inc, pb[i]->dec};
  return kv_counter_valid(c) ? KV_OK : KV_CORRUPT;
}

/* Fills o from pb; o is initialised first so a partial fill can be freed. */
static int object_from_pb(kv_object *o, const Kvpb__Object *pb,
                          size_t max_value) {
  int rc = KV_OK;
  kv_object_init(o);
  if (pb->n_anon) return KV_CORRUPT; /* see object.h: never stored */
  o->reg.ent = kv_calloc(pb->n_entries, sizeof *o->reg.ent);
  for (size_t i = 0; i < pb->n_entries && !rc; i++, o->reg.nent++) {
    const Kvpb__DvvEntry *pe = pb->entries[i];
    kv_dvv_entry *e = &o->reg.ent[i];
    e->id = pe->id;
    e->n = pe->n;
    e->vals = kv_calloc(pe->n_values, sizeof *e->vals);
    for (size_t j = 0; j < pe->n_values && !rc; j++, e->nvals++)
      rc = value_from_pb(&e->vals[j], pe->values[j], max_value);
  }
  if (rc) return rc;
  if (!kv_dvv_valid(&o->reg)) return KV_CORRUPT;
  if ((rc = counter_from_pb(&o->ctr, pb->counter, pb->n_counter))) return rc;
  if ((rc = counter_from_pb(&o->floor, pb->floor, pb->n_floor))) return rc;
  if (!kv_counter_leq(&o->floor, &o->ctr)) return KV_CORRUPT;
  o->pn = pb->pn;
  return KV_OK;
}

int kv_object_decode(const uint8_t *p, size_t len, size_t max_value,
                     kv_object *o) {
  Kvpb__Object *pb = kvpb__object__unpack(NULL, len, p);
  if (!pb) return KV_CORRUPT;
  kv_object tmp;
  int rc = object_from_pb(&tmp, pb, max_value);
  kvpb__object__free_unpacked(pb, NULL);
  if (!rc) {
    /* The wire format has many spellings of one state (fields in any order,
     * explicit defaults, overlong varints, unknown fields) and protobuf-c
     * takes them all. Only the canonical one is accepted: every object is
     * stored and sent as kv_object_encode wrote it, so another spelling
     * means the bytes changed (bit rot that still parses, such as a tag
     * turned into an unknown field that takes a value with it) or the peer
     * does not follow the protocol. It also keeps bytes, digests and Merkle
     * leaves a function of the state alone. */
    kv_buf enc;
    kv_object_encode(&tmp, &enc);
    if (enc.len != len || (len && memcmp(enc.data, p, len) != 0))
      rc = KV_CORRUPT;
    kv_buf_free(&enc);
  }
  if (rc) {
    kv_object_fini(&tmp);
    return rc;
  }
  *o = tmp;
  return KV_OK;
}

void kv_object_digest(const uint8_t *enc, size_t len,
                      uint8_t out[KV_DIGEST_LEN]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(enc, len));
  memcpy(out, c.digest, KV_DIGEST_LEN);
}

void kv_context_encode(const kv_vv *vv, kv_buf *out) {
  Kvpb__Context pb = KVPB__CONTEXT__INIT;
  Kvpb__VvEntry *es = kv_malloc(vv->n * sizeof *es);
  Kvpb__VvEntry **ep = kv_malloc(vv->n * sizeof *ep);
  for (size_t i = 0; i < vv->n; i++) {
    kvpb__vv_entry__init(&es[i]);
    es[i].id = vv->e[i].id;
    es[i].n = vv->e[i].n;
    ep[i] = &es[i];
  }
  pb.n_vv = vv->n;
  pb.vv = ep;
  out->len = kvpb__context__get_packed_size(&pb);
  out->data = out->len ? kv_malloc(out->len) : NULL;
  if (out->len) kvpb__context__pack(&pb, out->data);
  free(es);
  free(ep);
}

int kv_context_decode(const uint8_t *p, size_t len, size_t max_entries,
                      kv_vv *vv) {
  Kvpb__Context *pb = kvpb__context__unpack(NULL, len, p);
  if (!pb) return KV_BAD_CONTEXT;
  int rc = KV_OK;
  kv_vv tmp = {0, NULL};
  if (pb->n_vv > max_entries) {
    rc = KV_BAD_CONTEXT;
  } else {
    tmp.e = pb->n_vv ? kv_malloc(pb->n_vv * sizeof *tmp.e) : NULL;
    for (size_t i = 0; i < pb->n_vv; i++)
      tmp.e[tmp.n++] = (kv_vv_entry){pb->vv[i]->id, pb->vv[i]->n};
    if (!kv_vv_valid(&tmp)) rc = KV_BAD_CONTEXT;
  }
  kvpb__context__free_unpacked(pb, NULL);
  if (rc) {
    kv_vv_fini(&tmp);
    return rc;
  }
  *vv = tmp;
  return KV_OK;
}
