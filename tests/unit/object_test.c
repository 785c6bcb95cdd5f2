/*
 * The replicated object: register and counter semantics at the coordinating
 * replica, typing, sibling cap, delete floors, the canonical codec with its
 * checks against hostile bytes, and randomised properties over whole
 * replica histories: merge order and grouping never change the encoded
 * result, local updates are inflations, no value is lost unless a context
 * covered it, and counters equal the sum of applied increments.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "crdt/object.h"
#include "proto/object.pb-c.h"
#include "tests/unit/testutil.h"

#define A 0xaaull
#define B 0xbbull
#define C 0xccull
#define CAP 100

static uint64_t seed;

static void put(kv_object *o, uint64_t r, const kv_vv *ctx, const char *v,
                uint64_t ts) {
  assert_int_equal(
      kv_object_put(o, r, ctx, (const uint8_t *)v, strlen(v), ts, CAP), KV_OK);
}

static size_t live(const kv_object *o, const kv_value **vals, size_t cap) {
  return kv_object_live_values(o, vals, cap);
}

static bool has_live(const kv_object *o, const char *v) {
  const kv_value *vals[64];
  size_t n = live(o, vals, 64);
  for (size_t i = 0; i < n && i < 64; i++)
    if (vals[i]->data.len == strlen(v) &&
        memcmp(vals[i]->data.data, v, vals[i]->data.len) == 0)
      return true;
  return false;
}

static void merge_into(kv_object *dst, const kv_object *src) {
  kv_object m;
  kv_object_merge(&m, dst, src);
  kv_object_fini(dst);
  *dst = m;
}

static void assert_same_bytes(const kv_object *a, const kv_object *b) {
  kv_buf ea, eb;
  kv_object_encode(a, &ea);
  kv_object_encode(b, &eb);
  assert_int_equal(ea.len, eb.len);
  assert_memory_equal(ea.data, eb.data, ea.len);
  kv_buf_free(&ea);
  kv_buf_free(&eb);
}

static void test_object_put_siblings_and_context(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  assert_int_equal(kv_object_kind(&o), KV_KIND_NONE);
  put(&o, A, NULL, "v1", 1);
  put(&o, A, NULL, "v2", 2); /* no context: a sibling beside v1 */
  assert_int_equal(kv_object_kind(&o), KV_KIND_REGISTER);
  assert_int_equal(live(&o, NULL, 0), 2);
  kv_vv ctx;
  kv_dvv_join(&o.reg, &ctx);
  put(&o, B, &ctx, "v3", 3); /* saw both: replaces both */
  assert_int_equal(live(&o, NULL, 0), 1);
  assert_true(has_live(&o, "v3"));
  kv_vv_fini(&ctx);
  kv_object_fini(&o);
}

static void test_object_delete_tombstone_and_notfound(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  assert_int_equal(kv_object_delete(&o, A, NULL, 1, CAP), KV_NOTFOUND);
  assert_int_equal(kv_dvv_size(&o.reg), 0); /* nothing written */
  put(&o, A, NULL, "v1", 1);
  assert_int_equal(kv_object_delete(&o, A, NULL, 2, CAP), KV_OK);
  assert_int_equal(kv_object_kind(&o), KV_KIND_NONE);
  assert_int_equal(kv_dvv_size(&o.reg), 1); /* the tombstone */
  assert_null(kv_object_lww(&o));
  /* A delete with a context is written even on an absent key, so that it
   * supersedes the value it names when that value arrives. */
  kv_object other;
  kv_object_init(&other);
  put(&other, B, NULL, "remote", 3);
  kv_vv ctx;
  kv_dvv_join(&other.reg, &ctx);
  kv_object here;
  kv_object_init(&here);
  assert_int_equal(kv_object_delete(&here, A, &ctx, 4, CAP), KV_OK);
  merge_into(&here, &other);
  assert_int_equal(kv_object_kind(&here), KV_KIND_NONE);
  kv_vv_fini(&ctx);
  kv_object_fini(&o);
  kv_object_fini(&other);
  kv_object_fini(&here);
}

static void test_object_concurrent_delete_keeps_unseen_write(void **state) {
  (void)state;
  kv_object a, b;
  kv_object_init(&a);
  put(&a, A, NULL, "v1", 1);
  kv_object_copy(&b, &a);
  assert_int_equal(kv_object_delete(&a, A, NULL, 2, CAP), KV_OK);
  kv_vv ctx;
  kv_dvv_join(&b.reg, &ctx);
  put(&b, B, &ctx, "v2", 3); /* concurrent with the delete */
  merge_into(&a, &b);
  assert_int_equal(kv_object_kind(&a), KV_KIND_REGISTER);
  assert_int_equal(live(&a, NULL, 0), 1);
  assert_true(has_live(&a, "v2"));
  kv_vv_fini(&ctx);
  kv_object_fini(&a);
  kv_object_fini(&b);
}

static void test_object_wrong_type_leaves_unchanged(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  put(&o, A, NULL, "v", 1);
  kv_buf before, after;
  kv_object_encode(&o, &before);
  assert_int_equal(kv_object_incr(&o, A, 1, false, NULL), KV_WRONG_TYPE);
  kv_object_encode(&o, &after);
  assert_int_equal(before.len, after.len);
  assert_memory_equal(before.data, after.data, before.len);
  kv_buf_free(&before);
  kv_buf_free(&after);
  kv_object_fini(&o);

  kv_object_init(&o);
  assert_int_equal(kv_object_incr(&o, A, 5, false, NULL), KV_OK);
  assert_int_equal(kv_object_kind(&o), KV_KIND_PNCOUNTER);
  assert_int_equal(kv_object_put(&o, A, NULL, (const uint8_t *)"x", 1, 2, CAP),
                   KV_WRONG_TYPE);
  assert_int_equal(kv_dvv_size(&o.reg), 0);
  kv_object_fini(&o);
}

static void test_object_gcounter_refuses_decrement(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  int64_t v = 0;
  assert_int_equal(kv_object_incr(&o, A, 3, true, &v), KV_OK);
  assert_int_equal(v, 3);
  assert_int_equal(kv_object_kind(&o), KV_KIND_GCOUNTER);
  assert_int_equal(kv_object_incr(&o, A, -1, true, &v), KV_GCOUNTER_DECREMENT);
  assert_int_equal(kv_object_incr(&o, B, 4, false, &v), KV_OK);
  assert_int_equal(v, 7);
  assert_int_equal(kv_object_kind(&o), KV_KIND_GCOUNTER);
  kv_object_fini(&o);
}

static void test_object_counter_delete_and_recreate(void **state) {
  (void)state;
  kv_object a, b;
  kv_object_init(&a);
  int64_t v;
  assert_int_equal(kv_object_incr(&a, A, 10, false, &v), KV_OK);
  kv_object_copy(&b, &a);
  assert_int_equal(kv_object_delete(&a, A, NULL, 1, CAP), KV_OK);
  assert_int_equal(kv_object_kind(&a), KV_KIND_NONE);
  assert_int_equal(kv_object_incr(&a, A, 2, false, &v), KV_OK);
  assert_int_equal(v, 2); /* starts again from zero */
  /* B's increment was not observed by the delete: it survives. */
  assert_int_equal(kv_object_incr(&b, B, 5, false, &v), KV_OK);
  merge_into(&a, &b);
  assert_int_equal(kv_object_counter_value(&a, &v), KV_OK);
  assert_int_equal(v, 7);
  kv_object_fini(&a);
  kv_object_fini(&b);
}

static void test_object_sibling_cap(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  for (int i = 0; i < 3; i++)
    assert_int_equal(
        kv_object_put(&o, A, NULL, (const uint8_t *)"v", 1, (uint64_t)i, 3),
        KV_OK);
  assert_int_equal(kv_object_put(&o, A, NULL, (const uint8_t *)"v", 1, 9, 3),
                   KV_TOO_MANY_SIBLINGS);
  assert_int_equal(kv_dvv_size(&o.reg), 3);
  kv_vv ctx;
  kv_dvv_join(&o.reg, &ctx);
  assert_int_equal(kv_object_put(&o, A, &ctx, (const uint8_t *)"w", 1, 9, 3),
                   KV_OK);
  assert_int_equal(kv_dvv_size(&o.reg), 1);
  kv_vv_fini(&ctx);
  kv_object_fini(&o);
}

static void test_object_concurrent_kinds_converge(void **state) {
  (void)state;
  kv_object a, b, ab, ba;
  kv_object_init(&a);
  kv_object_init(&b);
  put(&a, A, NULL, "text", 1);
  assert_int_equal(kv_object_incr(&b, B, 4, false, NULL), KV_OK);
  kv_object_merge(&ab, &a, &b);
  kv_object_merge(&ba, &b, &a);
  assert_same_bytes(&ab, &ba);
  assert_int_equal(kv_object_kind(&ab), KV_KIND_REGISTER);
  int64_t v;
  assert_int_equal(kv_object_counter_value(&ab, &v), KV_OK);
  assert_int_equal(v, 4); /* kept, not lost */
  kv_object_fini(&a);
  kv_object_fini(&b);
  kv_object_fini(&ab);
  kv_object_fini(&ba);
}

static void test_object_lww_picks_latest(void **state) {
  (void)state;
  kv_object o;
  kv_object_init(&o);
  put(&o, A, NULL, "old", 5);
  put(&o, B, NULL, "new", 9);
  put(&o, C, NULL, "mid", 7);
  const kv_value *w = kv_object_lww(&o);
  assert_non_null(w);
  assert_memory_equal(w->data.data, "new", 3);
  kv_object_fini(&o);
}

static void test_object_encode_decode_roundtrip(void **state) {
  (void)state;
  kv_object o, d;
  kv_object_init(&o);
  put(&o, A, NULL, "v1", 1);
  put(&o, B, NULL, "", 2);
  assert_int_equal(kv_object_delete(&o, C, NULL, 3, CAP), KV_OK);
  put(&o, A, NULL, "v4", 4);
  kv_buf e;
  kv_object_encode(&o, &e);
  assert_int_equal(kv_object_decode(e.data, e.len, 1024, &d), KV_OK);
  assert_same_bytes(&o, &d);
  assert_int_equal(kv_object_decode(e.data, e.len, 1, &d), KV_CORRUPT);
  uint8_t a[KV_DIGEST_LEN], b[KV_DIGEST_LEN];
  kv_object_digest(e.data, e.len, a);
  kv_object_digest(e.data, e.len - 1, b);
  assert_memory_not_equal(a, b, KV_DIGEST_LEN);
  kv_buf_free(&e);
  kv_object_fini(&o);
  kv_object_fini(&d);

  kv_object_init(&o);
  kv_object_encode(&o, &e); /* the empty object encodes to nothing */
  assert_int_equal(e.len, 0);
  assert_int_equal(kv_object_decode(e.data, e.len, 1024, &d), KV_OK);
  assert_int_equal(kv_object_kind(&d), KV_KIND_NONE);
  kv_buf_free(&e);
  kv_object_fini(&d);
}

/* Packs a hand-made protobuf object that breaks one invariant. */
static int decode_pb(const Kvpb__Object *pb) {
  size_t n = kvpb__object__get_packed_size(pb);
  uint8_t *buf = malloc(n ? n : 1);
  kvpb__object__pack(pb, buf);
  kv_object o;
  int rc = kv_object_decode(buf, n, 1024, &o);
  if (rc == KV_OK) kv_object_fini(&o);
  free(buf);
  return rc;
}

static void test_object_decode_rejects_broken_invariants(void **state) {
  (void)state;
  Kvpb__Value v = KVPB__VALUE__INIT;
  Kvpb__Value *vp[2] = {&v, &v};
  Kvpb__DvvEntry e1 = KVPB__DVV_ENTRY__INIT, e2 = KVPB__DVV_ENTRY__INIT;
  Kvpb__DvvEntry *ep[2] = {&e1, &e2};
  Kvpb__Object pb = KVPB__OBJECT__INIT;

  e1.id = 2, e1.n = 1, e1.n_values = 1, e1.values = vp;
  e2.id = 1, e2.n = 1;
  pb.n_entries = 2, pb.entries = ep; /* ids out of order */
  assert_int_equal(decode_pb(&pb), KV_CORRUPT);
  e2.id = 2; /* duplicate id */
  assert_int_equal(decode_pb(&pb), KV_CORRUPT);
  e2.id = 3, e2.n = 1, e2.n_values = 2, e2.values = vp; /* 2 values, n=1 */
  assert_int_equal(decode_pb(&pb), KV_CORRUPT);
  e2.n = 2;
  assert_int_equal(decode_pb(&pb), KV_OK);

  Kvpb__Object pb2 = KVPB__OBJECT__INIT;
  pb2.n_anon = 1, pb2.anon = vp; /* anonymous values are never stored */
  assert_int_equal(decode_pb(&pb2), KV_CORRUPT);

  Kvpb__CounterEntry c1 = KVPB__COUNTER_ENTRY__INIT,
                     f1 = KVPB__COUNTER_ENTRY__INIT;
  Kvpb__CounterEntry *cp[1] = {&c1}, *fp[1] = {&f1};
  c1.id = 1, c1.inc = 3;
  f1.id = 1, f1.inc = 4; /* floor above the state */
  Kvpb__Object pb3 = KVPB__OBJECT__INIT;
  pb3.n_counter = 1, pb3.counter = cp, pb3.n_floor = 1, pb3.floor = fp;
  assert_int_equal(decode_pb(&pb3), KV_CORRUPT);
  f1.inc = 3;
  assert_int_equal(decode_pb(&pb3), KV_OK);

  kv_object o;
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  assert_int_equal(kv_object_decode(garbage, sizeof garbage, 1024, &o),
                   KV_CORRUPT);
  const uint8_t truncated[] = {0x0a, 0x10, 0x09};
  assert_int_equal(kv_object_decode(truncated, sizeof truncated, 1024, &o),
                   KV_CORRUPT);
}

/* One state has many protobuf spellings that protobuf-c accepts; decode
 * takes only the canonical one (found by tests/fuzz/object_fuzz.c, whose
 * regression inputs are in tests/fuzz/regress/object). */
static void test_object_decode_rejects_noncanonical(void **state) {
  (void)state;
  /* A PN-counter: counter entry {id 1, inc 5}, then pn = true. */
  const uint8_t canonical[] = {0x1a, 0x0b, 0x09, 1,    0, 0,    0, 0,
                               0,    0,    0,    0x10, 5, 0x28, 1};
  kv_object o, d;
  kv_object_init(&o);
  assert_int_equal(kv_object_incr(&o, 1, 5, false, NULL), KV_OK);
  kv_buf e;
  kv_object_encode(&o, &e);
  assert_int_equal(e.len, sizeof canonical);
  assert_memory_equal(e.data, canonical, sizeof canonical);
  assert_int_equal(kv_object_decode(e.data, e.len, 1024, &d), KV_OK);
  kv_object_fini(&d);
  kv_buf_free(&e);
  kv_object_fini(&o);

  static const struct {
    const char *what;
    uint8_t b[24];
    size_t len;
  } spellings[] = {
      {"fields out of order",
       {0x28, 1, 0x1a, 0x0b, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 5},
       15},
      {"explicit default (dec = 0)",
       {0x1a, 0x0d, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 5, 0x18, 0, 0x28, 1},
       17},
      {"overlong varint",
       {0x1a, 0x0c, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x85, 0, 0x28, 1},
       16},
      {"pn = 2",
       {0x1a, 0x0b, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 5, 0x28, 2},
       15},
      {"unknown field",
       {0x1a, 0x0b, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 5, 0x28, 1, 0x30, 1},
       17},
      {"field 0 in an overlong tag",
       {0x1a, 0x0b, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 5, 0x28, 1, 0x80, 0, 1},
       18},
  };
  for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
    /* protobuf-c itself takes each of them ... */
    Kvpb__Object *pb =
        kvpb__object__unpack(NULL, spellings[i].len, spellings[i].b);
    if (!pb) fail_msg("protobuf-c refuses '%s'", spellings[i].what);
    kvpb__object__free_unpacked(pb, NULL);
    /* ... decode does not. */
    int rc = kv_object_decode(spellings[i].b, spellings[i].len, 1024, &d);
    if (rc != KV_CORRUPT)
      fail_msg("'%s': got %s, want CORRUPT", spellings[i].what,
               kv_err_name(rc));
  }
}

static void test_object_context_roundtrip_and_checks(void **state) {
  (void)state;
  kv_vv_entry es[3] = {{1, 4}, {7, 1}, {9, 0}};
  kv_vv vv = {3, es}, d;
  kv_buf b;
  kv_context_encode(&vv, &b);
  assert_int_equal(kv_context_decode(b.data, b.len, 16, &d), KV_OK);
  assert_int_equal(d.n, 3);
  assert_memory_equal(d.e, es, sizeof es);
  kv_vv_fini(&d);
  assert_int_equal(kv_context_decode(b.data, b.len, 2, &d), KV_BAD_CONTEXT);
  kv_buf_free(&b);

  kv_vv_entry bad[2] = {{7, 1}, {1, 4}};
  kv_vv unsorted = {2, bad};
  kv_context_encode(&unsorted, &b);
  assert_int_equal(kv_context_decode(b.data, b.len, 16, &d), KV_BAD_CONTEXT);
  kv_buf_free(&b);
  const uint8_t junk[] = "not a context";
  assert_int_equal(kv_context_decode(junk, sizeof junk, 16, &d),
                   KV_BAD_CONTEXT);
}

/* ---- randomised properties ---- */

#define MAXR 4
#define MAXW 64

typedef struct written {
  char val[16];
  bool tomb;
  uint64_t id, n; /* its dot */
  bool covered;
} written;

typedef struct history {
  kv_object rep[MAXR];
  size_t nrep;
  kv_buf states[MAXW * 2]; /* every state any replica passed through */
  size_t nstates;
  written w[MAXW];
  size_t nw;
  int64_t sum;
} history;

static uint64_t rid(size_t i) { return 0x1000 + i * 0x10; }

static void record(history *h, size_t r) {
  kv_object_encode(&h->rep[r], &h->states[h->nstates++]);
}

static void cover(history *h, const kv_vv *ctx) {
  for (size_t i = 0; i < h->nw; i++)
    for (size_t j = 0; j < ctx->n; j++)
      if (ctx->e[j].id == h->w[i].id && ctx->e[j].n >= h->w[i].n)
        h->w[i].covered = true;
}

/* Writes a value or tombstone at replica r with a context picked at random:
 * none, r's own, or another replica's (possibly stale) view. */
static void random_write(history *h, test_rng *g, size_t r, bool tomb) {
  kv_vv ctx = {0, NULL}, own = {0, NULL};
  uint64_t how = test_rng_below(g, 3);
  if (how == 1) kv_dvv_join(&h->rep[r].reg, &ctx);
  if (how == 2) kv_dvv_join(&h->rep[test_rng_below(g, h->nrep)].reg, &ctx);
  const kv_vv *cp = how ? &ctx : NULL;
  /* A context-less delete covers the replica's own history; a context-less
   * put covers nothing. */
  if (tomb && !cp) kv_dvv_join(&h->rep[r].reg, &own);
  written *w = &h->w[h->nw];
  memset(w, 0, sizeof *w);
  snprintf(w->val, sizeof w->val, "v%zu", h->nw);
  w->tomb = tomb;
  int rc = tomb ? kv_object_delete(&h->rep[r], rid(r), cp, h->nw, 1000)
                : kv_object_put(&h->rep[r], rid(r), cp, (uint8_t *)w->val,
                                strlen(w->val), h->nw, 1000);
  if (rc == KV_OK) {
    cover(h, cp ? cp : &own);
    for (size_t j = 0; j < h->rep[r].reg.nent; j++)
      if (h->rep[r].reg.ent[j].id == rid(r)) {
        w->id = rid(r);
        w->n = h->rep[r].reg.ent[j].n;
      }
    h->nw++;
    record(h, r);
  } else {
    assert_int_equal(rc, KV_NOTFOUND); /* context-less delete, absent key */
  }
  kv_vv_fini(&ctx);
  kv_vv_fini(&own);
}

/* Merges the recorded states in a random order and random grouping. */
static void merge_shuffled(history *h, test_rng *g, kv_object *out) {
  size_t n = h->nstates, idx[MAXW * 2];
  for (size_t i = 0; i < n; i++)
    idx[i] = i;
  for (size_t i = n; i > 1; i--) {
    size_t j = test_rng_below(g, i), t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
  kv_object_init(out);
  size_t i = 0;
  while (i < n) {
    size_t group = 1 + test_rng_below(g, 4);
    kv_object part, m;
    kv_object_init(&part);
    for (; group && i < n; group--, i++) {
      kv_object s;
      assert_int_equal(kv_object_decode(h->states[idx[i]].data,
                                        h->states[idx[i]].len, 1024, &s),
                       KV_OK);
      merge_into(&part, &s);
      kv_object_fini(&s);
    }
    if (test_rng_below(g, 2))
      kv_object_merge(&m, out, &part);
    else
      kv_object_merge(&m, &part, out);
    kv_object_fini(&part);
    kv_object_fini(out);
    *out = m;
  }
}

static void run_case(test_rng *g, bool counters) {
  history *h = calloc(1, sizeof *h);
  h->nrep = 2 + test_rng_below(g, MAXR - 1);
  for (size_t i = 0; i < h->nrep; i++)
    kv_object_init(&h->rep[i]);
  size_t ops = 4 + test_rng_below(g, 20);
  for (size_t k = 0; k < ops && h->nw < MAXW; k++) {
    size_t r = test_rng_below(g, h->nrep);
    uint64_t what = test_rng_below(g, 10);
    if (what < 3) {
      size_t o = test_rng_below(g, h->nrep);
      merge_into(&h->rep[r], &h->rep[o]);
      record(h, r);
    } else if (counters) {
      int64_t d = (int64_t)test_rng_below(g, 11) - 5;
      assert_int_equal(kv_object_incr(&h->rep[r], rid(r), d, false, NULL),
                       KV_OK);
      h->sum += d;
      h->nw++;
      record(h, r);
    } else {
      random_write(h, g, r, what == 9);
    }
  }

  /* Every replica ends knowing everything. */
  kv_object all;
  kv_object_init(&all);
  for (size_t i = 0; i < h->nrep; i++)
    merge_into(&all, &h->rep[i]);

  kv_object shuffled;
  merge_shuffled(h, g, &shuffled);
  /* Local updates are inflations: merging every intermediate state gives
   * the same as merging the final ones, byte for byte, in any order. */
  assert_same_bytes(&all, &shuffled);

  if (counters) {
    int64_t v;
    assert_int_equal(kv_object_counter_value(&all, &v), KV_OK);
    if (v != h->sum)
      fail_msg("seed %llu: counter %lld != sum %lld", (unsigned long long)seed,
               (long long)v, (long long)h->sum);
  } else {
    /* Exactly the writes that no context covered remain. */
    size_t expect = 0, found = kv_dvv_size(&all.reg);
    for (size_t i = 0; i < h->nw; i++) {
      if (h->w[i].covered) continue;
      expect++;
      if (!h->w[i].tomb && !has_live(&all, h->w[i].val))
        fail_msg("seed %llu: uncovered value %s lost", (unsigned long long)seed,
                 h->w[i].val);
    }
    if (expect != found)
      fail_msg("seed %llu: %zu values remain, expected %zu",
               (unsigned long long)seed, found, expect);
  }

  kv_object_fini(&all);
  kv_object_fini(&shuffled);
  for (size_t i = 0; i < h->nrep; i++)
    kv_object_fini(&h->rep[i]);
  for (size_t i = 0; i < h->nstates; i++)
    kv_buf_free(&h->states[i]);
  free(h);
}

static void test_object_property_registers(void **state) {
  (void)state;
  test_rng g = {seed};
  for (int i = 0; i < 30000; i++)
    run_case(&g, false);
}

static void test_object_property_counters(void **state) {
  (void)state;
  test_rng g = {seed ^ 0x5555};
  for (int i = 0; i < 20000; i++)
    run_case(&g, true);
}

int main(void) {
  seed = test_seed("object_test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_object_put_siblings_and_context),
      cmocka_unit_test(test_object_delete_tombstone_and_notfound),
      cmocka_unit_test(test_object_concurrent_delete_keeps_unseen_write),
      cmocka_unit_test(test_object_wrong_type_leaves_unchanged),
      cmocka_unit_test(test_object_gcounter_refuses_decrement),
      cmocka_unit_test(test_object_counter_delete_and_recreate),
      cmocka_unit_test(test_object_sibling_cap),
      cmocka_unit_test(test_object_concurrent_kinds_converge),
      cmocka_unit_test(test_object_lww_picks_latest),
      cmocka_unit_test(test_object_encode_decode_roundtrip),
      cmocka_unit_test(test_object_decode_rejects_broken_invariants),
      cmocka_unit_test(test_object_decode_rejects_noncanonical),
      cmocka_unit_test(test_object_context_roundtrip_and_checks),
      cmocka_unit_test(test_object_property_registers),
      cmocka_unit_test(test_object_property_counters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
