/*
 * Integration tests of kvd's native protocol, through libkvclient and, where
 * the library would refuse to send something, through raw frames: every
 * request (get, put with and without context, del, incr/decr, scan paging
 * and prefixes, status, verify), the error codes a client can provoke
 * (WRONG_TYPE, KEY_TOO_LONG, VALUE_TOO_LARGE, TOO_MANY_SIBLINGS, STORE_FULL,
 * OVERFLOW, GCOUNTER_DECREMENT, BAD_CONTEXT, BAD_REQUEST), siblings and
 * their resolution, pipelining order, and exact counters under concurrent
 * pipelined clients. Durability is not tested here, so kvd runs with
 * --sync none.
 */
#include <pthread.h>

#include "tests/integration/itest.h"

/* ---- basic requests ---- */

static void test_native_get_put_del(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  kvc_result *r = NULL;
  char buf[64];

  /* Absent: NOTFOUND is a normal outcome with a result. */
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_NOTFOUND);
  assert_non_null(r);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_NONE);
  assert_int_equal(kvc_result_siblings(r), 0);
  kvc_result_free(r);

  assert_kvc(kvc_put(c, "k", 1, "v1", 2, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_REGISTER);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_string_equal(it_sibling(r, 0, buf, sizeof buf), "v1");
  assert_true(kvc_result_sibling_ts(r, 0) > 0);
  const uint8_t *ctx;
  size_t ctxlen;
  kvc_result_context(r, &ctx, &ctxlen);
  assert_true(ctxlen > 0);

  /* With the context just read, the put replaces. */
  assert_kvc(kvc_put(c, "k", 1, "v2", 2, ctx, ctxlen), KVC_OK);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_string_equal(it_sibling(r, 0, buf, sizeof buf), "v2");
  kvc_result_free(r);

  /* Empty values are values. */
  assert_kvc(kvc_put(c, "empty", 5, "", 0, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "empty", 5, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  const uint8_t *d;
  size_t n;
  assert_kvc(kvc_result_sibling(r, 0, &d, &n), KVC_OK);
  assert_int_equal(n, 0);
  kvc_result_free(r);

  /* Binary keys and values round-trip byte for byte. */
  const uint8_t bk[] = {0, 1, 2, 0xff, 0, '\r', '\n'};
  uint8_t bv[300];
  for (size_t i = 0; i < sizeof bv; i++)
    bv[i] = (uint8_t)(i * 7);
  assert_kvc(kvc_put(c, bk, sizeof bk, bv, sizeof bv, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, bk, sizeof bk, &r), KVC_OK);
  assert_kvc(kvc_result_sibling(r, 0, &d, &n), KVC_OK);
  assert_int_equal(n, sizeof bv);
  assert_memory_equal(d, bv, sizeof bv);
  kvc_result_free(r);

  /* The longest key allowed works. */
  char longkey[KVC_MAX_KEY];
  memset(longkey, 'L', sizeof longkey);
  assert_kvc(kvc_put(c, longkey, sizeof longkey, "x", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, longkey, sizeof longkey, &r), KVC_OK);
  kvc_result_free(r);

  /* Delete, then it reads as not found; a second delete finds nothing. */
  assert_kvc(kvc_del(c, "k", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_NOTFOUND);
  assert_int_equal(kvc_result_siblings(r), 0);
  kvc_result_free(r);
  assert_kvc(kvc_del(c, "k", 1, NULL, 0), KVC_NOTFOUND);
  assert_kvc(kvc_del(c, "never", 5, NULL, 0), KVC_NOTFOUND);
  /* The key can be written again after a delete. */
  assert_kvc(kvc_put(c, "k", 1, "v3", 2, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_string_equal(it_sibling(r, 0, buf, sizeof buf), "v3");
  kvc_result_free(r);

  kvc_close(c);
  IT_END(f);
}

/* Two context-less puts make siblings (seen through libkvclient and RESP
 * KV.SIBLINGS); a put with the merged context resolves them; a put or del
 * with a stale context keeps the concurrent sibling it did not see. */
static void test_native_siblings_resolved_by_context(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  int fd = it_fd(f->k[0].resp_port);
  kvc_result *r = NULL;

  assert_kvc(kvc_put(c, "s", 1, "alpha", 5, NULL, 0), KVC_OK);
  kvdh_sleep_ms(3); /* distinct timestamps for the lww view */
  assert_kvc(kvc_put(c, "s", 1, "beta", 4, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 2);
  assert_true(it_has_sibling(r, "alpha"));
  assert_true(it_has_sibling(r, "beta"));
  const char *sib = RESP(fd, "KV.SIBLINGS", "s");
  assert_true(!strcmp(sib, "[alpha,beta]") || !strcmp(sib, "[beta,alpha]"));
  /* RESP GET shows the last writer's value. */
  assert_string_equal(RESP(fd, "GET", "s"), "beta");
  assert_string_equal(RESP(fd, "EXISTS", "s"), "1");

  /* Resolve with the context that saw both. */
  const uint8_t *ctx;
  size_t ctxlen;
  kvc_result_context(r, &ctx, &ctxlen);
  assert_kvc(kvc_put(c, "s", 1, "merged", 6, ctx, ctxlen), KVC_OK);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_true(it_has_sibling(r, "merged"));
  assert_string_equal(RESP(fd, "KV.SIBLINGS", "s"), "[merged]");

  /* A stale context: "gamma" arrives concurrently and must survive. */
  uint8_t stale[512];
  kvc_result_context(r, &ctx, &ctxlen);
  assert_true(ctxlen <= sizeof stale);
  memcpy(stale, ctx, ctxlen);
  size_t stalelen = ctxlen;
  kvc_result_free(r);
  assert_kvc(kvc_put(c, "s", 1, "gamma", 5, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "s", 1, "delta", 5, stale, stalelen), KVC_OK);
  assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 2);
  assert_true(it_has_sibling(r, "gamma"));
  assert_true(it_has_sibling(r, "delta"));
  assert_false(it_has_sibling(r, "merged"));
  kvc_result_free(r);

  /* A delete with the stale context removes only what it saw. */
  assert_kvc(kvc_put(c, "t", 1, "one", 3, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "t", 1, &r), KVC_OK);
  kvc_result_context(r, &ctx, &ctxlen);
  memcpy(stale, ctx, ctxlen);
  stalelen = ctxlen;
  kvc_result_free(r);
  assert_kvc(kvc_put(c, "t", 1, "two", 3, NULL, 0), KVC_OK);
  assert_kvc(kvc_del(c, "t", 1, stale, stalelen), KVC_OK);
  assert_kvc(kvc_get(c, "t", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_true(it_has_sibling(r, "two"));
  kvc_result_free(r);

  /* An empty context (not "none") sees nothing: a sibling too. */
  assert_kvc(kvc_put(c, "t", 1, "three", 5, "", 0), KVC_OK);
  assert_kvc(kvc_get(c, "t", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 2);
  kvc_result_free(r);

  /* RESP SET replaces every sibling this replica holds. */
  assert_string_equal(RESP(fd, "SET", "t", "four"), "OK");
  assert_kvc(kvc_get(c, "t", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_true(it_has_sibling(r, "four"));
  kvc_result_free(r);

  /* A context that does not decode is refused and changes nothing. */
  assert_kvc(kvc_put(c, "t", 1, "bad", 3, "\xff\xfe\xfd", 3), KVC_BAD_CONTEXT);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  assert_kvc(kvc_get(c, "t", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_true(it_has_sibling(r, "four"));
  kvc_result_free(r);

  close(fd);
  kvc_close(c);
  IT_END(f);
}

static void test_native_counters(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  int fd = it_fd(f->k[0].resp_port);
  kvc_result *r = NULL;
  int64_t v = 0;

  assert_kvc(kvc_incr(c, "n", 1, 1, false, &v), KVC_OK);
  assert_int_equal(v, 1);
  assert_kvc(kvc_incr(c, "n", 1, 41, false, &v), KVC_OK);
  assert_int_equal(v, 42);
  assert_kvc(kvc_incr(c, "n", 1, -50, false, &v), KVC_OK); /* decr */
  assert_int_equal(v, -8);
  assert_kvc(kvc_get(c, "n", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_PNCOUNTER);
  assert_int_equal(kvc_result_counter(r), -8);
  assert_int_equal(kvc_result_siblings(r), 0);
  kvc_result_free(r);
  assert_string_equal(RESP(fd, "GET", "n"), "-8");
  assert_string_equal(RESP(fd, "DECRBY", "n", "2"), "-10");
  assert_kvc(kvc_incr(c, "n", 1, 0, false, &v), KVC_OK);
  assert_int_equal(v, -10);

  /* The type is fixed at the first write, in both directions. */
  assert_kvc(kvc_put(c, "n", 1, "x", 1, NULL, 0), KVC_WRONG_TYPE);
  assert_kvc(kvc_put(c, "reg", 3, "x", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_incr(c, "reg", 3, 1, false, &v), KVC_WRONG_TYPE);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  assert_kvc(kvc_get(c, "n", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_counter(r), -10);
  kvc_result_free(r);

  /* G-counter: increments only. */
  assert_kvc(kvc_incr(c, "g", 1, 5, true, &v), KVC_OK);
  assert_int_equal(v, 5);
  assert_kvc(kvc_incr(c, "g", 1, -1, false, &v), KVC_GCOUNTER_DECREMENT);
  assert_kvc(kvc_incr(c, "g", 1, 2, false, &v), KVC_OK);
  assert_int_equal(v, 7);
  assert_kvc(kvc_get(c, "g", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_kind(r), KVC_KIND_GCOUNTER);
  assert_int_equal(kvc_result_counter(r), 7);
  kvc_result_free(r);
  /* gcounter is ignored after the first write: a PN-counter stays one. */
  assert_kvc(kvc_incr(c, "n", 1, 1, true, &v), KVC_OK);
  assert_kvc(kvc_incr(c, "n", 1, -1, false, &v), KVC_OK);

  /* Overflow is an error, never a wrap, and changes nothing. */
  assert_kvc(kvc_incr(c, "big", 3, INT64_MAX, false, &v), KVC_OK);
  assert_true(v == INT64_MAX);
  assert_kvc(kvc_incr(c, "big", 3, 1, false, &v), KVC_OVERFLOW);
  assert_kvc(kvc_get(c, "big", 3, &r), KVC_OK);
  assert_true(kvc_result_counter(r) == INT64_MAX);
  kvc_result_free(r);
  assert_string_equal(RESP(fd, "INCR", "big"),
                      "-ERR increment or decrement would overflow");
  assert_kvc(kvc_incr(c, "small", 5, -INT64_MAX, false, &v), KVC_OK);
  assert_true(v == -INT64_MAX);
  assert_kvc(kvc_incr(c, "small", 5, -2, false, &v), KVC_OVERFLOW);
  assert_kvc(kvc_get(c, "small", 5, &r), KVC_OK);
  assert_true(kvc_result_counter(r) == -INT64_MAX);
  kvc_result_free(r);

  /* A deleted counter reads as not found. */
  assert_kvc(kvc_del(c, "n", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "n", 1, &r), KVC_NOTFOUND);
  kvc_result_free(r);

  close(fd);
  kvc_close(c);
  IT_END(f);
}

/* Collects a full scan of the keys starting with prefix, in pages of at most
 * limit keys (the server's default of 100 for 0), into keys; returns how
 * many there were. The callers sort them to check each came exactly once. */
static size_t scan_all(kvc_conn *c, const char *prefix, uint32_t limit,
                       char keys[][16], size_t cap) {
  uint8_t cursor[1024];
  size_t cursorlen = 0, n = 0;
  int pages = 0;
  for (;;) {
    kvc_result *r = NULL;
    assert_kvc(
        kvc_scan(c, cursor, cursorlen, prefix, strlen(prefix), limit, &r),
        KVC_OK);
    size_t k = kvc_result_keys(r);
    assert_true(k <= (limit ? limit : 100));
    for (size_t i = 0; i < k; i++) {
      const uint8_t *d;
      size_t len;
      assert_kvc(kvc_result_key(r, i, &d, &len), KVC_OK);
      assert_true(len < 16 && n < cap);
      memcpy(keys[n], d, len);
      keys[n][len] = 0;
      assert_memory_equal(keys[n], prefix, strlen(prefix));
      n++;
    }
    const uint8_t *cur;
    size_t curlen;
    kvc_result_cursor(r, &cur, &curlen);
    assert_true(curlen <= sizeof cursor);
    memcpy(cursor, cur, curlen);
    cursorlen = curlen;
    kvc_result_free(r);
    assert_true(++pages < 10000);
    if (cursorlen == 0) break;
  }
  return n;
}

static int cmp_key(const void *a, const void *b) { return strcmp(a, b); }

static void test_native_scan_cursor_paging_and_prefix(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  char key[16];
  for (int i = 0; i < 120; i++) {
    int n = snprintf(key, sizeof key, "a:%03d", i);
    assert_kvc(kvc_send_put(c, key, (size_t)n, "v", 1, NULL, 0, NULL), KVC_OK);
  }
  for (int i = 0; i < 30; i++) {
    int n = snprintf(key, sizeof key, "b:%02d", i);
    assert_kvc(kvc_send_put(c, key, (size_t)n, "v", 1, NULL, 0, NULL), KVC_OK);
  }
  assert_kvc(kvc_send_incr(c, "b:counter", 9, 1, false, NULL), KVC_OK);
  while (kvc_pending(c)) {
    kvc_result *r = NULL;
    assert_kvc(kvc_recv(c, &r), KVC_OK);
    assert_kvc(kvc_result_error(r), KVC_OK);
    kvc_result_free(r);
  }
  /* Deleted keys are not listed. */
  assert_kvc(kvc_del(c, "a:000", 5, NULL, 0), KVC_OK);
  assert_kvc(kvc_del(c, "b:00", 4, NULL, 0), KVC_OK);

  static char keys[400][16];
  size_t n = scan_all(c, "", 7, keys, 400);
  assert_int_equal(n, 119 + 29 + 1);
  qsort(keys, n, sizeof keys[0], cmp_key);
  for (size_t i = 1; i < n; i++)
    assert_true(strcmp(keys[i - 1], keys[i]) < 0);
  assert_string_equal(keys[0], "a:001");
  assert_string_equal(keys[n - 1], "b:counter");

  n = scan_all(c, "b:", 4, keys, 400);
  assert_int_equal(n, 30);
  qsort(keys, n, sizeof keys[0], cmp_key);
  assert_string_equal(keys[0], "b:01");
  for (size_t i = 1; i < n; i++)
    assert_true(strcmp(keys[i - 1], keys[i]) < 0);

  /* The server's default page (limit 0). */
  n = scan_all(c, "a:", 0, keys, 400);
  assert_int_equal(n, 119);
  n = scan_all(c, "a:05", 1000, keys, 400);
  assert_int_equal(n, 10);
  n = scan_all(c, "zzz", 5, keys, 400);
  assert_int_equal(n, 0);

  /* A cursor the server never handed out is refused, and the connection
   * stays usable. */
  kvc_result *r = NULL;
  assert_kvc(kvc_scan(c, "zz", 2, NULL, 0, 10, &r), KVC_BAD_REQUEST);
  assert_null(r);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  assert_kvc(kvc_get(c, "a:001", 5, &r), KVC_OK);
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

static void test_native_status_and_verify(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", "--name", "nodeA", "--map-size", "64m",
          NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  kvc_result *r = NULL;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  const kvc_status_info *s = kvc_result_status_info(r);
  assert_non_null(s);
  assert_string_equal(s->name, "nodeA");
  assert_true(s->replica_id != 0);
  assert_true(strlen(s->version) > 0);
  assert_false(s->sync);
  assert_int_equal(s->keys, 0);
  assert_true(s->map_size == 64u << 20);
  assert_true(s->map_used > 0 && s->map_used <= s->map_size);
  assert_int_equal(s->merkle_root_len, 16);
  uint8_t root0[16];
  memcpy(root0, s->merkle_root, 16);
  uint64_t id = s->replica_id, writes0 = s->writes;
  kvc_result_free(r);

  for (int i = 0; i < 10; i++) {
    char k[8];
    int n = snprintf(k, sizeof k, "k%d", i);
    assert_kvc(kvc_put(c, k, (size_t)n, "v", 1, NULL, 0), KVC_OK);
  }
  assert_kvc(kvc_status(c, &r), KVC_OK);
  s = kvc_result_status_info(r);
  assert_int_equal(s->keys, 10);
  assert_true(s->replica_id == id);
  assert_true(s->writes >= writes0 + 10);
  assert_true(s->commits >= 1);
  assert_memory_not_equal(s->merkle_root, root0, 16);
  kvc_result_free(r);

  uint64_t bad = 99;
  assert_kvc(kvc_verify(c, &bad), KVC_OK);
  assert_int_equal(bad, 0);

  /* The RESP view agrees. */
  int fd = it_fd(f->k[0].resp_port);
  char want[64];
  snprintf(want, sizeof want, "epikv_replica_id:%016llx",
           (unsigned long long)id);
  assert_non_null(strstr(RESP(fd, "INFO"), want));
  close(fd);
  kvc_close(c);
  IT_END(f);
}

/* Requests on one connection are answered in order, with their ids, and a
 * read sees the writes queued before it. */
static void test_native_pipeline_keeps_order(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  enum { N = 300 };
  uint64_t ids[3 * N + 1];
  size_t q = 0;
  char k[16], v[16];
  for (int i = 0; i < N; i++) {
    int kn = snprintf(k, sizeof k, "p%d", i),
        vn = snprintf(v, sizeof v, "v%d", i);
    assert_kvc(
        kvc_send_put(c, k, (size_t)kn, v, (size_t)vn, NULL, 0, &ids[q++]),
        KVC_OK);
    assert_kvc(kvc_send_get(c, k, (size_t)kn, &ids[q++]), KVC_OK);
    assert_kvc(kvc_send_incr(c, "pc", 2, 1, false, &ids[q++]), KVC_OK);
  }
  assert_kvc(kvc_send_status(c, &ids[q++]), KVC_OK);
  assert_int_equal(kvc_pending(c), q);
  for (size_t i = 0; i < q; i++) {
    kvc_result *r = NULL;
    assert_kvc(kvc_recv(c, &r), KVC_OK);
    assert_true(kvc_result_id(r) == ids[i]);
    if (i > 0) assert_true(ids[i] == ids[i - 1] + 1);
    assert_kvc(kvc_result_error(r), KVC_OK);
    if (i == q - 1) {
      assert_int_equal(kvc_result_op(r), KVC_OP_STATUS);
      assert_true(kvc_result_status_info(r)->keys >= N);
    } else if (i % 3 == 0) {
      assert_int_equal(kvc_result_op(r), KVC_OP_PUT);
    } else if (i % 3 == 1) {
      assert_int_equal(kvc_result_op(r), KVC_OP_GET);
      char want[24], got[24];
      snprintf(want, sizeof want, "v%zu", i / 3);
      assert_int_equal(kvc_result_siblings(r), 1);
      assert_string_equal(it_sibling(r, 0, got, sizeof got), want);
    } else {
      assert_int_equal(kvc_result_op(r), KVC_OP_INCR);
      assert_int_equal(kvc_result_counter(r), (int64_t)(i / 3 + 1));
    }
    kvc_result_free(r);
  }
  kvc_close(c);
  IT_END(f);
}

/* ---- errors a client can provoke ---- */

static void test_native_key_too_long(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  char key[508];
  memset(key, 'K', sizeof key);

  /* libkvclient refuses before sending... */
  kvc_conn *c = it_conn(&f->k[0]);
  assert_kvc(kvc_put(c, key, sizeof key, "v", 1, NULL, 0), KVC_KEY_TOO_LONG);
  kvc_close(c);

  /* ...so the server's own check is tested with raw frames. */
  int fd = it_fd(f->k[0].native_port);
  Kvpb__Response *resp = it_native_get(fd, 11, key, sizeof key);
  assert_int_equal(resp->id, 11);
  assert_int_equal(resp->error, WIRE(KVC_KEY_TOO_LONG));
  assert_true(resp->message && strlen(resp->message) > 0);
  kvpb__response__free_unpacked(resp, NULL);

  Kvpb__Request req = KVPB__REQUEST__INIT;
  Kvpb__PutReq p = KVPB__PUT_REQ__INIT;
  req.id = 12;
  req.body_case = KVPB__REQUEST__BODY_PUT;
  req.put = &p;
  p.key.data = (uint8_t *)key;
  p.key.len = sizeof key;
  p.value.data = (uint8_t *)"v";
  p.value.len = 1;
  it_native_send(fd, &req);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 12);
  assert_int_equal(resp->error, WIRE(KVC_KEY_TOO_LONG));
  kvpb__response__free_unpacked(resp, NULL);

  Kvpb__IncrReq in = KVPB__INCR_REQ__INIT;
  req.id = 13;
  req.body_case = KVPB__REQUEST__BODY_INCR;
  req.incr = &in;
  in.key.data = (uint8_t *)key;
  in.key.len = sizeof key;
  in.delta = 1;
  it_native_send(fd, &req);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 13);
  assert_int_equal(resp->error, WIRE(KVC_KEY_TOO_LONG));
  kvpb__response__free_unpacked(resp, NULL);

  /* An empty key is refused the same way. */
  resp = it_native_get(fd, 14, "", 0);
  assert_int_equal(resp->error, WIRE(KVC_KEY_TOO_LONG));
  kvpb__response__free_unpacked(resp, NULL);

  /* 507 bytes is fine, and the connection is still in step. */
  resp = it_native_get(fd, 15, key, 507);
  assert_int_equal(resp->id, 15);
  assert_int_equal(resp->error, WIRE(KVC_NOTFOUND));
  kvpb__response__free_unpacked(resp, NULL);
  close(fd);
  it_alive(&f->k[0]);
  IT_END(f);
}

static void test_native_value_too_large(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", "--max-value-bytes", "1k", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  char v[1025];
  memset(v, 'v', sizeof v);
  assert_kvc(kvc_put(c, "k", 1, v, 1024, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "k", 1, v, 1025, NULL, 0), KVC_VALUE_TOO_LARGE);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  assert_kvc(kvc_put(c, "new", 3, v, 1025, NULL, 0), KVC_VALUE_TOO_LARGE);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  const uint8_t *d;
  size_t n;
  assert_kvc(kvc_result_sibling(r, 0, &d, &n), KVC_OK);
  assert_int_equal(n, 1024);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "new", 3, &r), KVC_NOTFOUND);
  kvc_result_free(r);

  /* RESP SET of the same value. */
  int fd = it_fd(f->k[0].resp_port);
  char out[256];
  const char *argv[] = {"SET", "r", v};
  size_t lens[] = {3, 1, 1025};
  assert_int_equal(kvdh_resp(fd, 3, argv, lens, out, sizeof out), 0);
  assert_string_equal(out, "-ERR value is larger than the configured maximum");
  assert_string_equal(RESP(fd, "EXISTS", "r"), "0");
  lens[2] = 1024;
  assert_int_equal(kvdh_resp(fd, 3, argv, lens, out, sizeof out), 0);
  assert_string_equal(out, "OK");
  close(fd);
  kvc_close(c);
  IT_END(f);
}

static void test_native_too_many_siblings(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", "--max-siblings", "3", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  assert_kvc(kvc_put(c, "s", 1, "1", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "s", 1, "2", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "s", 1, "3", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "s", 1, "4", 1, NULL, 0), KVC_TOO_MANY_SIBLINGS);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 3);
  assert_false(it_has_sibling(r, "4"));
  /* A put that saw all three replaces them. */
  const uint8_t *ctx;
  size_t ctxlen;
  kvc_result_context(r, &ctx, &ctxlen);
  assert_kvc(kvc_put(c, "s", 1, "5", 1, ctx, ctxlen), KVC_OK);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "s", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  assert_true(it_has_sibling(r, "5"));
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

static void test_native_store_full(void **state) {
  IT_BEGIN(f, 60);
  it_args(&f->k[0], "--sync", "none", "--map-size", "1m", NULL);
  it_start(&f->k[0]);
  kvc_conn *c = it_conn(&f->k[0]);
  char v[1001];
  memset(v, 'f', sizeof v - 1);
  v[sizeof v - 1] = 0;
  int ok = 0, full = 0, other = 0;
  char k[32];
  for (int i = 0; i < 5000 && full < 20; i++) {
    int n = snprintf(k, sizeof k, "fill:%05d", i);
    int rc = kvc_put(c, k, (size_t)n, v, sizeof v - 1, NULL, 0);
    if (rc == KVC_OK)
      ok++;
    else if (rc == KVC_STORE_FULL)
      full++;
    else
      other++, fprintf(stderr, "put %s: %s\n", k, kvc_errname(rc));
  }
  assert_true(ok > 10);
  assert_int_equal(full, 20);
  assert_int_equal(other, 0);
  assert_kvc(kvc_conn_error(c), KVC_OK);
  /* What was acknowledged is still there, reads and status still work. */
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, "fill:00000", 10, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  kvc_result_free(r);
  assert_kvc(kvc_status(c, &r), KVC_OK);
  assert_int_equal(kvc_result_status_info(r)->keys, (uint64_t)ok);
  kvc_result_free(r);
  uint64_t bad = 1;
  assert_kvc(kvc_verify(c, &bad), KVC_OK);
  assert_int_equal(bad, 0);
  /* RESP reports it too. */
  int fd = it_fd(f->k[0].resp_port);
  char rk[32];
  const char *argv[] = {"SET", rk, v};
  size_t lens[] = {3, 0, sizeof v - 1};
  char out[128];
  int tries = 0;
  do {
    lens[1] = (size_t)snprintf(rk, sizeof rk, "resp:full:%d", tries);
    assert_int_equal(kvdh_resp(fd, 3, argv, lens, out, sizeof out), 0);
  } while (strcmp(out, "OK") == 0 && ++tries < 500);
  assert_string_equal(out, "-ERR the store's map is full");
  assert_string_equal(RESP(fd, "GET", "fill:00000"), v);
  close(fd);
  kvc_close(c);
  IT_END(f);
}

/* A frame whose body is not a Request gets BAD_REQUEST (id 0) and the
 * connection stays usable: the frame boundary is intact. */
static void test_native_malformed_request_keeps_connection(void **state) {
  IT_BEGIN(f, 30);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  int fd = it_fd(f->k[0].native_port);

  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  assert_int_equal(kvdh_frame_write(fd, garbage, sizeof garbage), 0);
  Kvpb__Response *resp = it_native_recv(fd);
  assert_int_equal(resp->id, 0);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  assert_true(resp->message && strlen(resp->message) > 0);
  kvpb__response__free_unpacked(resp, NULL);

  /* A field of the wrong wire type. */
  const uint8_t wrongtype[] = {0x0a, 0x03, 'a', 'b', 'c'};
  assert_int_equal(kvdh_frame_write(fd, wrongtype, sizeof wrongtype), 0);
  resp = it_native_recv(fd);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  kvpb__response__free_unpacked(resp, NULL);

  /* A Request with an id but no body: BAD_REQUEST with that id. */
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.id = 77;
  it_native_send(fd, &req);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 77);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  kvpb__response__free_unpacked(resp, NULL);

  /* An empty frame. */
  assert_int_equal(kvdh_frame_write(fd, "", 0), 0);
  resp = it_native_recv(fd);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  kvpb__response__free_unpacked(resp, NULL);

  /* Then valid requests on the same connection: a put and a get. */
  Kvpb__PutReq p = KVPB__PUT_REQ__INIT;
  req.id = 78;
  req.body_case = KVPB__REQUEST__BODY_PUT;
  req.put = &p;
  p.key.data = (uint8_t *)"after";
  p.key.len = 5;
  p.value.data = (uint8_t *)"garbage";
  p.value.len = 7;
  it_native_send(fd, &req);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 78);
  assert_int_equal(resp->error, 0);
  assert_int_equal(resp->body_case, KVPB__RESPONSE__BODY_PUT);
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_get(fd, 79, "after", 5);
  assert_int_equal(resp->id, 79);
  assert_int_equal(resp->error, 0);
  assert_int_equal(resp->body_case, KVPB__RESPONSE__BODY_GET);
  assert_int_equal(resp->get->n_siblings, 1);
  assert_int_equal(resp->get->siblings[0]->value.len, 7);
  assert_memory_equal(resp->get->siblings[0]->value.data, "garbage", 7);
  kvpb__response__free_unpacked(resp, NULL);

  /* Garbage and a valid request in one write: answered in order. */
  uint8_t both[64];
  size_t n = 0;
  both[n++] = 0, both[n++] = 0, both[n++] = 0, both[n++] = 2;
  both[n++] = 0xff, both[n++] = 0xff;
  Kvpb__GetReq g = KVPB__GET_REQ__INIT;
  req.id = 80;
  req.body_case = KVPB__REQUEST__BODY_GET;
  req.get = &g;
  g.key.data = (uint8_t *)"after";
  g.key.len = 5;
  size_t plen = kvpb__request__get_packed_size(&req);
  both[n++] = 0, both[n++] = 0, both[n++] = 0, both[n++] = (uint8_t)plen;
  kvpb__request__pack(&req, both + n);
  n += plen;
  assert_int_equal(kvdh_write_all(fd, both, n), 0);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 0);
  assert_int_equal(resp->error, WIRE(KVC_BAD_REQUEST));
  kvpb__response__free_unpacked(resp, NULL);
  resp = it_native_recv(fd);
  assert_int_equal(resp->id, 80);
  assert_int_equal(resp->error, 0);
  kvpb__response__free_unpacked(resp, NULL);
  close(fd);
  IT_END(f);
}

/* ---- counters under concurrent pipelined clients ---- */

typedef struct counter_job {
  int port;
  const char *key;
  int64_t delta;
  int count, window;
  int errors;     /* failures seen by the thread */
  bool monotonic; /* every value returned was above the one before */
  char msg[160];
} counter_job;

static void *counter_worker(void *arg) {
  counter_job *j = arg;
  kvc_conn *c = NULL;
  j->monotonic = true;
  if (kvc_connect("127.0.0.1", j->port, NULL, &c) != KVC_OK) {
    snprintf(j->msg, sizeof j->msg, "connect: %s", kvc_errmsg(c));
    j->errors++;
    kvc_close(c);
    return NULL;
  }
  int sent = 0, got = 0;
  int64_t last = INT64_MIN;
  while (got < j->count) {
    while (sent < j->count && sent - got < j->window) {
      if (kvc_send_incr(c, j->key, strlen(j->key), j->delta, false, NULL) !=
          KVC_OK) {
        j->errors++;
        goto out;
      }
      sent++;
    }
    kvc_result *r = NULL;
    int rc = kvc_recv(c, &r);
    if (rc != KVC_OK) {
      snprintf(j->msg, sizeof j->msg, "recv: %s %s", kvc_errname(rc),
               kvc_errmsg(c));
      j->errors++;
      goto out;
    }
    if (kvc_result_error(r) != KVC_OK) {
      snprintf(j->msg, sizeof j->msg, "incr: %s", kvc_result_errmsg(r));
      j->errors++;
    }
    int64_t v = kvc_result_counter(r);
    if (j->delta > 0 && v <= last) j->monotonic = false;
    last = v;
    kvc_result_free(r);
    got++;
  }
out:
  kvc_close(c);
  return NULL;
}

static int64_t run_counter_jobs(kvdh *p, const char *key, const int64_t *deltas,
                                int nthreads, int count) {
  pthread_t th[16];
  counter_job jobs[16];
  for (int i = 0; i < nthreads; i++) {
    jobs[i] =
        (counter_job){p->native_port, key, deltas[i], count, 64, 0, true, ""};
    assert_int_equal(pthread_create(&th[i], NULL, counter_worker, &jobs[i]), 0);
  }
  for (int i = 0; i < nthreads; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < nthreads; i++)
    if (jobs[i].errors)
      fail_msg("thread %d: %d errors, %s", i, jobs[i].errors, jobs[i].msg);
  bool all_up = true;
  for (int i = 0; i < nthreads; i++)
    all_up = all_up && deltas[i] > 0;
  if (all_up)
    for (int i = 0; i < nthreads; i++)
      assert_true(jobs[i].monotonic);
  kvc_conn *c = it_conn(p);
  kvc_result *r = NULL;
  assert_kvc(kvc_get(c, key, strlen(key), &r), KVC_OK);
  int64_t v = kvc_result_counter(r);
  kvc_result_free(r);
  kvc_close(c);
  return v;
}

static void test_native_counters_exact_under_concurrency(void **state) {
  IT_BEGIN(f, 60);
  it_args(&f->k[0], "--sync", "none", NULL);
  it_start(&f->k[0]);
  const int64_t up[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  assert_int_equal(run_counter_jobs(&f->k[0], "hits", up, 8, 10000), 80000);
  /* Mixed: four threads add 3, four subtract 1. */
  const int64_t mixed[8] = {3, -1, 3, -1, 3, -1, 3, -1};
  assert_int_equal(run_counter_jobs(&f->k[0], "mixed", mixed, 8, 10000), 80000);
  int fd = it_fd(f->k[0].resp_port);
  assert_string_equal(RESP(fd, "GET", "hits"), "80000");
  assert_string_equal(RESP(fd, "GET", "mixed"), "80000");
  close(fd);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_native_get_put_del),
      IT_TEST(test_native_siblings_resolved_by_context),
      IT_TEST(test_native_counters),
      IT_TEST(test_native_scan_cursor_paging_and_prefix),
      IT_TEST(test_native_status_and_verify),
      IT_TEST(test_native_pipeline_keeps_order),
      IT_TEST(test_native_key_too_long),
      IT_TEST(test_native_value_too_large),
      IT_TEST(test_native_too_many_siblings),
      IT_TEST(test_native_store_full),
      IT_TEST(test_native_malformed_request_keeps_connection),
      IT_TEST(test_native_counters_exact_under_concurrency),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
