/*
 * Fuzz harness for the stored-object codec (crdt/object.h): the bytes kvd
 * reads back from LMDB and receives from peers in rumors and anti-entropy
 * pushes, and the causal contexts clients hand back.
 *
 * Input: the bytes themselves, decoded both as an object and as a context.
 * Checked, when the object decodes:
 *  - re-encoding gives the input back byte for byte (decode accepts only the
 *    canonical encoding, so equal states have equal bytes and digests);
 *  - max_value is honoured exactly at the largest value's length;
 *  - two local updates by different replicas (put, else incr, else delete)
 *    give objects whose merges are commutative, idempotent, and absorb the
 *    original; every result encodes to bytes that decode and round-trip;
 *  - the register's join encodes to a context that decodes to the same
 *    version vector.
 * When the context decodes: it re-encodes to a context that decodes to the
 * same version vector and re-encodes to the same bytes, and max_entries is
 * honoured exactly at its length.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "crdt/object.h"
#include "tests/fuzz/fuzz.h"

static bool vv_equal(const kv_vv *a, const kv_vv *b) {
  if (a->n != b->n) return false;
  for (size_t i = 0; i < a->n; i++)
    if (a->e[i].id != b->e[i].id || a->e[i].n != b->e[i].n) return false;
  return true;
}

/* The canonical bytes of o, which must decode and encode to themselves.
 * Caller frees with kv_buf_free. */
static kv_buf encode_checked(const kv_object *o, const char *what) {
  kv_buf b;
  kv_object_encode(o, &b);
  kv_object back;
  int rc = kv_object_decode(b.data, b.len, SIZE_MAX, &back);
  FUZZ_CHECK(rc == KV_OK, "%s: encoding does not decode: %s", what,
             kv_err_name(rc));
  kv_buf again;
  kv_object_encode(&back, &again);
  FUZZ_CHECK_BYTES(again.data, again.len, b.data, b.len, what);
  kv_buf_free(&again);
  kv_object_fini(&back);
  return b;
}

static void check_equal(const kv_object *a, const kv_object *b,
                        const char *what) {
  kv_buf x = encode_checked(a, what), y = encode_checked(b, what);
  FUZZ_CHECK_BYTES(x.data, x.len, y.data, y.len, what);
  kv_buf_free(&x);
  kv_buf_free(&y);
}

/* A local update of o by replica: a put of val when o takes one, else an
 * increment, else a delete. False when none applies. */
static bool mutate(kv_object *o, uint64_t replica, const char *val) {
  uint64_t ts = kv_object_max_ts(o) + 1;
  size_t len = strlen(val);
  if (kv_object_put(o, replica, NULL, (const uint8_t *)val, len, ts, 100) ==
      KV_OK) {
    const kv_value *live[128];
    size_t n = kv_object_live_values(o, live, 128);
    bool found = false;
    for (size_t i = 0; i < n && i < 128; i++)
      found |= fuzz_same(live[i]->data.data, live[i]->data.len, val, len);
    FUZZ_CHECK(found, "a put's value is not among the live values");
    FUZZ_CHECK(kv_object_kind(o) == KV_KIND_REGISTER, "kind after a put");
    return true;
  }
  int64_t v;
  if (kv_object_incr(o, replica, 1, false, &v) == KV_OK) return true;
  return kv_object_delete(o, replica, NULL, ts, SIZE_MAX) == KV_OK;
}

static void check_merges(const kv_object *o) {
  check_equal(o, o, "encoding is not deterministic");
  kv_object m;
  kv_object_merge(&m, o, o);
  check_equal(&m, o, "merge(o, o) != o");
  kv_object_fini(&m);

  uint64_t r1 = 7, r2 = o->reg.nent ? o->reg.ent[0].id : 9;
  if (r2 == r1) r2 = 9;
  kv_object a, b;
  kv_object_init(&a);
  kv_object_init(&b);
  kv_object_copy(&a, o);
  kv_object_copy(&b, o);
  if (mutate(&a, r1, "fz-a") && mutate(&b, r2, "fz-b")) {
    kv_object ab, ba, abo, abab;
    kv_object_merge(&ab, &a, &b);
    kv_object_merge(&ba, &b, &a);
    check_equal(&ab, &ba, "merge is not commutative");
    kv_object_merge(&abo, &ab, o);
    check_equal(&abo, &ab, "merge does not absorb an older state");
    kv_object_merge(&abab, &ab, &ab);
    check_equal(&abab, &ab, "merge is not idempotent");
    kv_object ao;
    kv_object_merge(&ao, o, &a);
    check_equal(&ao, &a, "merge(o, update(o)) != update(o)");
    kv_object_fini(&ao);
    kv_object_fini(&ab);
    kv_object_fini(&ba);
    kv_object_fini(&abo);
    kv_object_fini(&abab);
  }
  kv_object_fini(&a);
  kv_object_fini(&b);
}

static void check_object(const uint8_t *data, size_t size) {
  kv_object o;
  if (kv_object_decode(data, size, SIZE_MAX, &o) != KV_OK) return;

  kv_buf enc;
  kv_object_encode(&o, &enc);
  FUZZ_CHECK_BYTES(enc.data, enc.len, data, size,
                   "decode accepted bytes that do not re-encode to themselves");
  kv_buf_free(&enc);

  size_t maxv = 0;
  for (size_t i = 0; i < o.reg.nent; i++)
    for (size_t j = 0; j < o.reg.ent[i].nvals; j++)
      if (o.reg.ent[i].vals[j].data.len > maxv)
        maxv = o.reg.ent[i].vals[j].data.len;
  kv_object t;
  FUZZ_CHECK(kv_object_decode(data, size, maxv, &t) == KV_OK,
             "refused at max_value = its largest value (%zu)", maxv);
  kv_object_fini(&t);
  if (maxv > 0)
    FUZZ_CHECK(kv_object_decode(data, size, maxv - 1, &t) == KV_CORRUPT,
               "a %zu-byte value accepted at max_value %zu", maxv, maxv - 1);

  /* The readers' views must not trip over anything decode accepted. */
  (void)kv_object_kind(&o);
  (void)kv_object_lww(&o);
  int64_t cv;
  (void)kv_object_counter_value(&o, &cv);

  kv_vv join = {0, NULL}, back = {0, NULL};
  kv_dvv_join(&o.reg, &join);
  kv_buf ctx;
  kv_context_encode(&join, &ctx);
  FUZZ_CHECK(kv_context_decode(ctx.data, ctx.len, SIZE_MAX, &back) == KV_OK,
             "the register's context does not decode");
  FUZZ_CHECK(vv_equal(&join, &back), "context round trip changed it");
  kv_vv_fini(&join);
  kv_vv_fini(&back);
  kv_buf_free(&ctx);

  check_merges(&o);
  kv_object_fini(&o);
}

static void check_context(const uint8_t *data, size_t size) {
  kv_vv vv = {0, NULL};
  if (kv_context_decode(data, size, SIZE_MAX, &vv) != KV_OK) return;
  kv_buf enc;
  kv_context_encode(&vv, &enc);
  kv_vv back = {0, NULL};
  FUZZ_CHECK(kv_context_decode(enc.data, enc.len, SIZE_MAX, &back) == KV_OK,
             "a re-encoded context does not decode");
  FUZZ_CHECK(vv_equal(&vv, &back), "context changed by a round trip");
  kv_buf again;
  kv_context_encode(&back, &again);
  FUZZ_CHECK_BYTES(again.data, again.len, enc.data, enc.len,
                   "context re-encoding is not stable");
  kv_vv t = {0, NULL};
  FUZZ_CHECK(kv_context_decode(data, size, vv.n, &t) == KV_OK,
             "refused at max_entries = its length %zu", vv.n);
  kv_vv_fini(&t);
  if (vv.n > 0)
    FUZZ_CHECK(kv_context_decode(data, size, vv.n - 1, &t) == KV_BAD_CONTEXT,
               "%zu entries accepted at max_entries %zu", vv.n, vv.n - 1);
  kv_buf_free(&again);
  kv_buf_free(&enc);
  kv_vv_fini(&vv);
  kv_vv_fini(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_object(data, size);
  check_context(data, size);
  return 0;
}
