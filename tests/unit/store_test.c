/*
 * The LMDB store through its public interface: replica id minting and
 * keeping, local updates and merges through the writer, every refusal leaving
 * the store unchanged, group commit, the persisted Merkle leaves against
 * completions' deltas and a rebuild, segment range reads, cursor scans and
 * verify catching a tampered leaf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store.h"
#include "tests/unit/testutil.h"

static uint64_t seed;

typedef struct fixture {
  char dir[64];
  kv_store *s;
  kv_store_opts opts;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/kvstore-test-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  f->opts = kv_store_opts_default();
  f->opts.dir = f->dir;
  f->opts.segment_bits = 8;
  f->opts.sync = false; /* durability is the crash test's job */
  if (kv_store_open(&f->opts, &f->s) != KV_OK) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  kv_store_close(f->s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  if (system(cmd) != 0) return -1;
  free(f);
  return 0;
}

static void reopen(fixture *f) {
  kv_store_close(f->s);
  f->s = NULL;
  assert_int_equal(kv_store_open(&f->opts, &f->s), KV_OK);
}

static int do_put(kv_store *s, const char *k, const char *v,
                  const kv_buf *ctx) {
  kv_write w;
  kv_write_init(&w);
  w.op = KV_WRITE_PUT;
  w.key = (const uint8_t *)k;
  w.keylen = strlen(k);
  w.value = (const uint8_t *)v;
  w.valuelen = strlen(v);
  if (ctx) {
    w.context = ctx->data ? ctx->data : (const uint8_t *)"";
    w.contextlen = ctx->len;
  }
  int rc = kv_store_write_sync(s, &w);
  kv_write_fini(&w);
  return rc;
}

static int do_simple(kv_store *s, kv_write_op op, const char *k, int64_t delta,
                     int64_t *out) {
  kv_write w;
  kv_write_init(&w);
  w.op = op;
  w.key = (const uint8_t *)k;
  w.keylen = strlen(k);
  w.delta = delta;
  int rc = kv_store_write_sync(s, &w);
  if (out) *out = w.counter;
  kv_write_fini(&w);
  return rc;
}

static size_t nlive(kv_store *s, const char *k) {
  kv_object o;
  if (kv_store_get(s, k, strlen(k), &o) != KV_OK) return 0;
  size_t n = kv_object_live_values(&o, NULL, 0);
  kv_object_fini(&o);
  return n;
}

static kv_buf context_of(kv_store *s, const char *k) {
  kv_object o;
  assert_int_equal(kv_store_get(s, k, strlen(k), &o), KV_OK);
  kv_vv vv;
  kv_dvv_join(&o.reg, &vv);
  kv_buf b;
  kv_context_encode(&vv, &b);
  kv_vv_fini(&vv);
  kv_object_fini(&o);
  return b;
}

static kv_buf raw(kv_store *s, const char *k) {
  kv_buf b = {NULL, 0};
  int rc = kv_store_get_raw(s, k, strlen(k), &b);
  assert_true(rc == KV_OK || rc == KV_NOTFOUND);
  return b;
}

static void assert_verified(kv_store *s) {
  uint64_t bad = 99;
  assert_int_equal(kv_store_verify(s, &bad), KV_OK);
  assert_int_equal(bad, 0);
}

static void test_store_replica_id_minted_and_kept(void **state) {
  fixture *f = *state;
  uint64_t id = kv_store_replica_id(f->s);
  assert_true(id != 0);
  reopen(f);
  assert_true(kv_store_replica_id(f->s) == id);
  assert_int_equal(kv_store_segment_bits(f->s), 8);

  kv_store_opts other = f->opts;
  other.segment_bits = 10;
  kv_store *s2 = NULL;
  kv_store_close(f->s);
  f->s = NULL;
  assert_int_equal(kv_store_open(&other, &s2), KV_INCOMPATIBLE);
  reopen(f);

  /* A different directory is a different replica. */
  fixture *g;
  assert_int_equal(setup((void **)&g), 0);
  assert_true(kv_store_replica_id(g->s) != id);
  assert_int_equal(teardown((void **)&g), 0);
}

static void test_store_put_get_siblings_context_delete(void **state) {
  fixture *f = *state;
  kv_object o;
  assert_int_equal(kv_store_get(f->s, "k", 1, &o), KV_NOTFOUND);
  assert_int_equal(do_put(f->s, "k", "v1", NULL), KV_OK);
  assert_int_equal(do_put(f->s, "k", "v2", NULL), KV_OK);
  assert_int_equal(nlive(f->s, "k"), 2);
  kv_buf ctx = context_of(f->s, "k");
  assert_int_equal(do_put(f->s, "k", "v3", &ctx), KV_OK);
  kv_buf_free(&ctx);
  assert_int_equal(nlive(f->s, "k"), 1);
  assert_int_equal(kv_store_get(f->s, "k", 1, &o), KV_OK);
  const kv_value *v = kv_object_lww(&o);
  assert_memory_equal(v->data.data, "v3", 2);
  kv_object_fini(&o);

  assert_int_equal(do_simple(f->s, KV_WRITE_DEL, "k", 0, NULL), KV_OK);
  assert_int_equal(nlive(f->s, "k"), 0);
  assert_int_equal(kv_store_get(f->s, "k", 1, &o), KV_OK);
  assert_int_equal(kv_object_kind(&o), KV_KIND_NONE);
  kv_object_fini(&o);
  assert_int_equal(do_simple(f->s, KV_WRITE_DEL, "nope", 0, NULL), KV_NOTFOUND);
  reopen(f);
  assert_int_equal(nlive(f->s, "k"), 0);
  assert_verified(f->s);
}

static void test_store_counters(void **state) {
  fixture *f = *state;
  int64_t v;
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "c", 5, &v), KV_OK);
  assert_int_equal(v, 5);
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "c", -7, &v), KV_OK);
  assert_int_equal(v, -2);
  kv_write w;
  kv_write_init(&w);
  w.op = KV_WRITE_INCR, w.key = (const uint8_t *)"g", w.keylen = 1;
  w.delta = 3, w.gcounter = true;
  assert_int_equal(kv_store_write_sync(f->s, &w), KV_OK);
  kv_write_fini(&w);
  w.delta = -1;
  assert_int_equal(kv_store_write_sync(f->s, &w), KV_GCOUNTER_DECREMENT);
  kv_write_fini(&w);
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "c", INT64_MIN, &v),
                   KV_OVERFLOW);
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "c", 0, &v), KV_OK);
  assert_int_equal(v, -2);
  assert_verified(f->s);
}

/* Each refusal must leave the stored bytes, and the tree, as they were. */
static void test_store_errors_leave_store_unchanged(void **state) {
  fixture *f = *state;
  assert_int_equal(do_put(f->s, "reg", "v", NULL), KV_OK);
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "ctr", 1, NULL), KV_OK);
  kv_buf reg0 = raw(f->s, "reg"), ctr0 = raw(f->s, "ctr");

  char longkey[KV_STORE_MAX_KEY + 2];
  memset(longkey, 'k', sizeof longkey);
  longkey[KV_STORE_MAX_KEY + 1] = 0;
  assert_int_equal(do_put(f->s, longkey, "v", NULL), KV_KEY_TOO_LONG);
  longkey[KV_STORE_MAX_KEY] = 0; /* exactly the maximum is fine */
  assert_int_equal(do_put(f->s, longkey, "v", NULL), KV_OK);
  assert_int_equal(do_put(f->s, "", "v", NULL), KV_KEY_TOO_LONG);

  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "reg", 1, NULL),
                   KV_WRONG_TYPE);
  assert_int_equal(do_put(f->s, "ctr", "v", NULL), KV_WRONG_TYPE);
  kv_buf junk = {(uint8_t *)"\xff\xff", 2};
  assert_int_equal(do_put(f->s, "reg", "v", &junk), KV_BAD_CONTEXT);

  kv_write w;
  kv_write_init(&w);
  w.op = KV_WRITE_MERGE, w.key = (const uint8_t *)"reg", w.keylen = 3;
  w.remote = (const uint8_t *)"\x0a\x05xx", w.remotelen = 4;
  assert_int_equal(kv_store_write_sync(f->s, &w), KV_CORRUPT);
  kv_write_fini(&w);

  kv_buf reg1 = raw(f->s, "reg"), ctr1 = raw(f->s, "ctr");
  assert_int_equal(reg0.len, reg1.len);
  assert_memory_equal(reg0.data, reg1.data, reg0.len);
  assert_int_equal(ctr0.len, ctr1.len);
  assert_memory_equal(ctr0.data, ctr1.data, ctr0.len);
  kv_buf_free(&reg0), kv_buf_free(&reg1), kv_buf_free(&ctr0),
      kv_buf_free(&ctr1);
  assert_verified(f->s);
}

static void test_store_value_and_sibling_limits(void **state) {
  fixture *f = *state;
  kv_store_close(f->s);
  f->opts.max_value_bytes = 10;
  f->opts.max_siblings = 3;
  assert_int_equal(kv_store_open(&f->opts, &f->s), KV_OK);
  assert_int_equal(do_put(f->s, "k", "0123456789", NULL), KV_OK);
  assert_int_equal(do_put(f->s, "k", "0123456789a", NULL), KV_VALUE_TOO_LARGE);
  assert_int_equal(do_put(f->s, "k", "b", NULL), KV_OK);
  assert_int_equal(do_put(f->s, "k", "c", NULL), KV_OK);
  kv_buf before = raw(f->s, "k");
  assert_int_equal(do_put(f->s, "k", "d", NULL), KV_TOO_MANY_SIBLINGS);
  kv_buf after = raw(f->s, "k");
  assert_int_equal(before.len, after.len);
  assert_memory_equal(before.data, after.data, before.len);
  kv_buf_free(&before), kv_buf_free(&after);
  kv_buf ctx = context_of(f->s, "k");
  assert_int_equal(do_put(f->s, "k", "e", &ctx), KV_OK);
  kv_buf_free(&ctx);
  assert_int_equal(nlive(f->s, "k"), 1);
}

static void test_store_full_is_clean_error(void **state) {
  fixture *f = *state;
  kv_store_close(f->s);
  f->opts.map_size = 1 << 20;
  assert_int_equal(kv_store_open(&f->opts, &f->s), KV_OK);
  char val[20000];
  memset(val, 'x', sizeof val - 1);
  val[sizeof val - 1] = 0;
  char key[32];
  int i, rc = KV_OK;
  for (i = 0; i < 1000 && rc == KV_OK; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    rc = do_put(f->s, key, val, NULL);
  }
  assert_int_equal(rc, KV_STORE_FULL);
  assert_int_equal(raw(f->s, key).len, 0); /* the refused key is absent */
  for (int j = 0; j < i - 1; j++) {
    snprintf(key, sizeof key, "key-%d", j);
    assert_int_equal(nlive(f->s, key), 1);
  }
  assert_verified(f->s);
  /* Small writes still fit in the remaining space, or fail cleanly. */
  rc = do_put(f->s, "small", "v", NULL);
  assert_true(rc == KV_OK || rc == KV_STORE_FULL);
  assert_verified(f->s);
}

static int do_set(kv_store *s, const char *k, const char *v) {
  kv_write w;
  kv_write_init(&w);
  w.op = KV_WRITE_PUT;
  w.key = (const uint8_t *)k;
  w.keylen = strlen(k);
  w.value = (const uint8_t *)v;
  w.valuelen = strlen(v);
  w.local_context = true;
  int rc = kv_store_write_sync(s, &w);
  kv_write_fini(&w);
  return rc;
}

/* RESP SET: replaces whatever this replica holds, siblings included. */
static void test_store_put_with_local_context(void **state) {
  fixture *f = *state;
  assert_int_equal(do_put(f->s, "k", "a", NULL), KV_OK);
  assert_int_equal(do_put(f->s, "k", "b", NULL), KV_OK);
  assert_int_equal(nlive(f->s, "k"), 2);
  assert_int_equal(do_set(f->s, "k", "c"), KV_OK);
  assert_int_equal(nlive(f->s, "k"), 1);
  assert_int_equal(do_set(f->s, "k", "d"), KV_OK);
  assert_int_equal(nlive(f->s, "k"), 1);
  assert_int_equal(do_set(f->s, "new", "x"), KV_OK);
  assert_int_equal(nlive(f->s, "new"), 1);
}

static void count_done(kv_write *w, void *arg) {
  (void)w;
  __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

/* An atomic group is all or nothing; NOTFOUND does not count as failure. */
static void test_store_group_is_atomic(void **state) {
  fixture *f = *state;
  assert_int_equal(do_simple(f->s, KV_WRITE_INCR, "ctr", 1, NULL), KV_OK);
  kv_write w[3];
  kv_write *ws[3] = {&w[0], &w[1], &w[2]};
  const char *keys[3] = {"g1", "ctr", "g3"};
  int done = 0;
  for (int i = 0; i < 3; i++) {
    kv_write_init(&w[i]);
    w[i].op = KV_WRITE_PUT;
    w[i].key = (const uint8_t *)keys[i];
    w[i].keylen = strlen(keys[i]);
    w[i].value = (const uint8_t *)"v";
    w[i].valuelen = 1;
    w[i].done = count_done;
    w[i].arg = &done;
  }
  assert_int_equal(kv_store_submit_group(f->s, ws, 3), KV_OK);
  while (__atomic_load_n(&done, __ATOMIC_SEQ_CST) < 3)
    usleep(1000);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(w[i].status, KV_WRONG_TYPE);
    assert_false(w[i].changed);
    kv_write_fini(&w[i]);
  }
  assert_int_equal(raw(f->s, "g1").len, 0);
  assert_int_equal(raw(f->s, "g3").len, 0);

  /* A group of deletes where one key is absent still commits. */
  assert_int_equal(do_put(f->s, "g1", "v", NULL), KV_OK);
  done = 0;
  const char *dkeys[2] = {"g1", "absent"};
  for (int i = 0; i < 2; i++) {
    kv_write_init(&w[i]);
    w[i].op = KV_WRITE_DEL;
    w[i].key = (const uint8_t *)dkeys[i];
    w[i].keylen = strlen(dkeys[i]);
    w[i].done = count_done;
    w[i].arg = &done;
  }
  assert_int_equal(kv_store_submit_group(f->s, ws, 2), KV_OK);
  while (__atomic_load_n(&done, __ATOMIC_SEQ_CST) < 2)
    usleep(1000);
  assert_int_equal(w[0].status, KV_OK);
  assert_int_equal(w[1].status, KV_NOTFOUND);
  assert_int_equal(nlive(f->s, "g1"), 0);
  kv_write_fini(&w[0]);
  kv_write_fini(&w[1]);
  assert_verified(f->s);
}

static void test_store_merge_and_news(void **state) {
  fixture *f = *state;
  /* Build a remote object the way another replica would. */
  kv_object r;
  kv_object_init(&r);
  assert_int_equal(
      kv_object_put(&r, 42, NULL, (const uint8_t *)"remote", 6, 1, 100), KV_OK);
  kv_buf enc;
  kv_object_encode(&r, &enc);
  assert_int_equal(do_put(f->s, "k", "local", NULL), KV_OK);

  kv_write w;
  kv_write_init(&w);
  w.op = KV_WRITE_MERGE, w.key = (const uint8_t *)"k", w.keylen = 1;
  w.remote = enc.data, w.remotelen = enc.len;
  assert_int_equal(kv_store_write_sync(f->s, &w), KV_OK);
  assert_true(w.changed);
  assert_true(w.object.len > 0);
  kv_write_fini(&w);
  assert_int_equal(nlive(f->s, "k"), 2);
  assert_int_equal(kv_store_write_sync(f->s, &w), KV_OK);
  assert_false(w.changed); /* already known: no news, nothing written */
  assert_true(kv_hash_is_zero(&w.delta_hash));
  kv_write_fini(&w);
  kv_buf_free(&enc);
  kv_object_fini(&r);
  assert_verified(f->s);
}

typedef struct async_state {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t done;
  kv_merkle *tree;
} async_state;

static void async_done(kv_write *w, void *arg) {
  async_state *a = arg;
  pthread_mutex_lock(&a->mu);
  assert_int_equal(w->status, KV_OK);
  if (w->changed) kv_merkle_apply(a->tree, w->segment, &w->delta_hash);
  a->done++;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

/* Submitting many writes at once must batch them, and the deltas carried by
 * completions must keep an in-memory tree equal to the persisted leaves. */
static void test_store_group_commit_and_tree_deltas(void **state) {
  fixture *f = *state;
  enum { N = 2000 };
  async_state a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                   NULL};
  assert_int_equal(kv_store_load_tree(f->s, &a.tree), KV_OK);
  kv_store_stats before;
  assert_int_equal(kv_store_stats_get(f->s, &before), KV_OK);
  kv_write *ws = calloc(N, sizeof *ws);
  char(*keys)[16] = calloc(N, 16);
  test_rng g = {seed};
  for (int i = 0; i < N; i++) {
    kv_write_init(&ws[i]);
    snprintf(keys[i], 16, "k%d", (int)test_rng_below(&g, 500));
    ws[i].key = (const uint8_t *)keys[i];
    ws[i].keylen = strlen(keys[i]);
    ws[i].op = i % 3 == 0 ? KV_WRITE_DEL : KV_WRITE_PUT;
    ws[i].value = (const uint8_t *)keys[i];
    ws[i].valuelen = ws[i].keylen;
    ws[i].done = async_done;
    ws[i].arg = &a;
    if (ws[i].op == KV_WRITE_DEL) ws[i].context = (const uint8_t *)"";
    assert_int_equal(kv_store_submit(f->s, &ws[i]), KV_OK);
  }
  pthread_mutex_lock(&a.mu);
  while (a.done < N)
    pthread_cond_wait(&a.cv, &a.mu);
  pthread_mutex_unlock(&a.mu);
  kv_store_stats after;
  assert_int_equal(kv_store_stats_get(f->s, &after), KV_OK);
  assert_int_equal(after.writes - before.writes, N);
  assert_true(after.commits - before.commits < N / 4);

  kv_merkle *persisted;
  assert_int_equal(kv_store_load_tree(f->s, &persisted), KV_OK);
  kv_hash r1 = kv_merkle_root(a.tree), r2 = kv_merkle_root(persisted);
  assert_true(kv_hash_equal(&r1, &r2));
  assert_false(kv_hash_is_zero(&r1));
  assert_verified(f->s);
  for (int i = 0; i < N; i++)
    kv_write_fini(&ws[i]);
  free(ws);
  free(keys);
  kv_merkle_free(a.tree);
  kv_merkle_free(persisted);
}

typedef struct collect {
  size_t n;
  char keys[512][16];
} collect;

static bool collect_key(const uint8_t *k, size_t kl, const uint8_t *o,
                        size_t ol, void *arg) {
  (void)o, (void)ol;
  collect *c = arg;
  if (c->n < 512) snprintf(c->keys[c->n], 16, "%.*s", (int)kl, (char *)k);
  c->n++;
  return true;
}

static void test_store_segment_and_scan(void **state) {
  fixture *f = *state;
  char key[16];
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof key, "%s%d", i % 2 ? "odd" : "even", i);
    assert_int_equal(do_put(f->s, key, "v", NULL), KV_OK);
  }
  assert_int_equal(do_simple(f->s, KV_WRITE_DEL, "even0", 0, NULL), KV_OK);
  kv_store_stats st;
  assert_int_equal(kv_store_stats_get(f->s, &st), KV_OK);
  assert_int_equal(st.keys, 299);   /* live keys */
  assert_int_equal(st.stored, 300); /* the tombstone is stored */
  reopen(f);
  assert_int_equal(kv_store_stats_get(f->s, &st), KV_OK);
  assert_int_equal(st.keys, 299);

  /* Segments partition the keys. */
  size_t total = 0;
  collect *c = calloc(1, sizeof *c);
  for (uint32_t seg = 0; seg < 256; seg++) {
    c->n = 0;
    assert_int_equal(kv_store_segment(f->s, seg, collect_key, c), KV_OK);
    for (size_t i = 0; i < c->n; i++)
      assert_int_equal(kv_merkle_segment_of(8, c->keys[i], strlen(c->keys[i])),
                       seg);
    total += c->n;
  }
  assert_int_equal(total, 300); /* the deleted key's tombstone is stored */
  assert_int_equal(kv_store_segment(f->s, 256, collect_key, c), KV_INVALID);

  /* A paged scan visits every live key exactly once. */
  kv_buf cursor = {NULL, 0};
  c->n = 0;
  int pages = 0;
  do {
    assert_int_equal(kv_store_scan(f->s, &cursor, NULL, 0, 7, collect_key, c),
                     KV_OK);
    pages++;
  } while (cursor.len && pages < 1000);
  assert_int_equal(c->n, 299);
  for (size_t i = 0; i < c->n; i++)
    for (size_t j = i + 1; j < c->n; j++)
      assert_string_not_equal(c->keys[i], c->keys[j]);
  assert_true(pages >= 299 / 7);

  c->n = 0;
  assert_int_equal(kv_store_scan(f->s, &cursor, (const uint8_t *)"odd", 3, 1000,
                                 collect_key, c),
                   KV_OK);
  assert_int_equal(c->n, 150);
  assert_int_equal(cursor.len, 0);
  kv_buf bad = {(uint8_t *)"xy", 2};
  assert_int_equal(kv_store_scan(f->s, &bad, NULL, 0, 1, collect_key, c),
                   KV_BAD_REQUEST);
  free(c);
}

static void test_store_verify_detects_tampered_leaf(void **state) {
  fixture *f = *state;
  for (int i = 0; i < 50; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    assert_int_equal(do_put(f->s, key, "v", NULL), KV_OK);
  }
  assert_verified(f->s);
  kv_store_close(f->s);
  f->s = NULL;

  /* Flip one bit of one persisted leaf behind the store's back. */
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cur;
  MDB_val k, v;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
  assert_int_equal(mdb_env_open(env, f->dir, 0, 0644), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "tree", 0, &dbi), 0);
  assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
  assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
  uint8_t leaf[16];
  memcpy(leaf, v.mv_data, 16);
  leaf[3] ^= 1;
  MDB_val nv = {16, leaf};
  assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
  mdb_cursor_close(cur);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  assert_int_equal(kv_store_open(&f->opts, &f->s), KV_OK);
  uint64_t bad = 0;
  assert_int_equal(kv_store_verify(f->s, &bad), KV_VERIFY_MISMATCH);
  assert_int_equal(bad, 1);
}

static void test_store_close_drains_queue(void **state) {
  fixture *f = *state;
  enum { N = 500 };
  kv_write ws[N];
  char keys[N][16];
  int done = 0;
  for (int i = 0; i < N; i++) {
    kv_write_init(&ws[i]);
    snprintf(keys[i], sizeof keys[i], "d%d", i);
    ws[i].op = KV_WRITE_PUT;
    ws[i].key = (const uint8_t *)keys[i];
    ws[i].keylen = strlen(keys[i]);
    ws[i].value = (const uint8_t *)"v";
    ws[i].valuelen = 1;
    ws[i].done = count_done;
    ws[i].arg = &done;
    assert_int_equal(kv_store_submit(f->s, &ws[i]), KV_OK);
  }
  kv_store_close(f->s);
  f->s = NULL;
  assert_int_equal(done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(ws[i].status, KV_OK);
    kv_write_fini(&ws[i]);
  }
  assert_int_equal(kv_store_open(&f->opts, &f->s), KV_OK);
  for (int i = 0; i < N; i++)
    assert_int_equal(nlive(f->s, keys[i]), 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
  seed = test_seed("store_test");
  const struct CMUnitTest tests[] = {
      T(test_store_replica_id_minted_and_kept),
      T(test_store_put_get_siblings_context_delete),
      T(test_store_counters),
      T(test_store_errors_leave_store_unchanged),
      T(test_store_value_and_sibling_limits),
      T(test_store_full_is_clean_error),
      T(test_store_put_with_local_context),
      T(test_store_group_is_atomic),
      T(test_store_merge_and_news),
      T(test_store_group_commit_and_tree_deltas),
      T(test_store_segment_and_scan),
      T(test_store_verify_detects_tampered_leaf),
      T(test_store_close_drains_queue),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
