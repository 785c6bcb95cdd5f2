/*
 * Tests of crdt/dvv: every test vector of reference/riak.md §1.4 (and the
 * rest of dvvset.erl's eunit assertions), each operation's edge cases, and
 * randomised runs that simulate replicas and clients. The randomised runs
 * check sync's laws, less/equal against a model of version-vector dominance,
 * and that a value disappears only when a write whose context covered its dot
 * replaced it. Their seed comes from KV_SEED or the clock and is printed at
 * start and with every failure.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka.h needs these four headers before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crdt/dvv.h"
#include "tests/unit/testutil.h"
#include "proto/buf.h"

/* ---- building and printing clocks ----
 *
 * Clocks are written the way riak.md writes them: "a:4[5,2] b:1[] | 0,10" is
 * ([(a,4,[5,2]),(b,1,[])], [0,10]). An id is one character (its code is the
 * id, so 'a' < 'b' as in Erlang); a value is its bytes, with a leading '!' for
 * a tombstone and a trailing "@ts" for a non-zero timestamp. */

static void parse_value(kv_value *v, const char **pp) {
  const char *p = *pp;
  v->tombstone = false;
  v->ts = 0;
  if (*p == '!') {
    v->tombstone = true;
    p++;
  }
  const char *start = p;
  while (*p && *p != ',' && *p != ']' && *p != ' ' && *p != '@')
    p++;
  v->data = kv_buf_dup(start, (size_t)(p - start));
  if (*p == '@') {
    char *end;
    v->ts = strtoull(p + 1, &end, 10);
    p = end;
  }
  *pp = p;
}

static kv_value val(const char *s) {
  kv_value v;
  parse_value(&v, &s);
  return v;
}

/* Builds the clock exactly as written, without canonicalising anything. */
static void clock_of(kv_dvv *c, const char *spec) {
  kv_dvv_init(c);
  const char *p = spec;
  for (;;) {
    while (*p == ' ')
      p++;
    if (!*p) return;
    if (*p == '|') {
      p++;
      break;
    }
    c->ent = kv_realloc(c->ent, (c->nent + 1) * sizeof *c->ent);
    kv_dvv_entry *e = &c->ent[c->nent++];
    *e = (kv_dvv_entry){(uint64_t)(unsigned char)*p, 0, 0, NULL};
    assert_int_equal(p[1], ':');
    char *end;
    e->n = strtoull(p + 2, &end, 10);
    p = end;
    assert_int_equal(*p, '[');
    p++;
    while (*p != ']') {
      assert_true(*p != '\0');
      if (*p == ',') p++;
      e->vals = kv_realloc(e->vals, (e->nvals + 1) * sizeof *e->vals);
      parse_value(&e->vals[e->nvals++], &p);
    }
    p++;
  }
  for (;;) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p) return;
    c->anon = kv_realloc(c->anon, (c->nanon + 1) * sizeof *c->anon);
    parse_value(&c->anon[c->nanon++], &p);
  }
}

typedef struct strbuf {
  char s[4096];
  size_t n;
} strbuf;

static void put_str(strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put_str(strbuf *b, const char *fmt, ...) {
  if (b->n >= sizeof b->s) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(b->s + b->n, sizeof b->s - b->n, fmt, ap);
  va_end(ap);
  if (k > 0) b->n += (size_t)k;
}

static void put_id(strbuf *b, uint64_t id) {
  if (id >= 'a' && id <= 'z')
    put_str(b, "%c", (char)id);
  else
    put_str(b, "#%llu", (unsigned long long)id);
}

static void put_value(strbuf *b, const kv_value *v) {
  put_str(b, "%s%.*s", v->tombstone ? "!" : "", (int)v->data.len,
          v->data.len ? (const char *)v->data.data : "");
  if (v->ts) put_str(b, "@%llu", (unsigned long long)v->ts);
}

/* A rotating set of buffers, so one assertion can print several clocks. */
static strbuf *next_buf(void) {
  static strbuf bufs[8];
  static unsigned i;
  strbuf *b = &bufs[i++ % 8];
  b->n = 0;
  b->s[0] = '\0';
  return b;
}

static const char *str(const kv_dvv *c) {
  strbuf *b = next_buf();
  for (size_t i = 0; i < c->nent; i++) {
    const kv_dvv_entry *e = &c->ent[i];
    if (i) put_str(b, " ");
    put_id(b, e->id);
    put_str(b, ":%llu[", (unsigned long long)e->n);
    for (size_t j = 0; j < e->nvals; j++) {
      if (j) put_str(b, ",");
      put_value(b, &e->vals[j]);
    }
    put_str(b, "]");
  }
  if (c->nanon) {
    put_str(b, c->nent ? " | " : "| ");
    for (size_t i = 0; i < c->nanon; i++) {
      if (i) put_str(b, ",");
      put_value(b, &c->anon[i]);
    }
  }
  return b->s;
}

static const char *vv_str(const kv_vv *vv) {
  strbuf *b = next_buf();
  for (size_t i = 0; i < vv->n; i++) {
    if (i) put_str(b, " ");
    put_id(b, vv->e[i].id);
    put_str(b, ":%llu", (unsigned long long)vv->e[i].n);
  }
  return b->s;
}

static bool same_value(const kv_value *a, const kv_value *b) {
  return a->tombstone == b->tombstone && a->ts == b->ts &&
         a->data.len == b->data.len &&
         (a->data.len == 0 ||
          memcmp(a->data.data, b->data.data, a->data.len) == 0);
}

static bool same_entries(const kv_dvv *a, const kv_dvv *b) {
  if (a->nent != b->nent) return false;
  for (size_t i = 0; i < a->nent; i++) {
    const kv_dvv_entry *x = &a->ent[i], *y = &b->ent[i];
    if (x->id != y->id || x->n != y->n || x->nvals != y->nvals) return false;
    for (size_t j = 0; j < x->nvals; j++)
      if (!same_value(&x->vals[j], &y->vals[j])) return false;
  }
  return true;
}

/* Structural equality: entries, their values and the anonymous list, byte
 * for byte. Canonical form makes this the equality of states. */
static bool same(const kv_dvv *a, const kv_dvv *b) {
  if (!same_entries(a, b) || a->nanon != b->nanon) return false;
  for (size_t i = 0; i < a->nanon; i++)
    if (!same_value(&a->anon[i], &b->anon[i])) return false;
  return true;
}

#define assert_clock(c, spec) assert_string_equal(str(c), spec)

/* ---- integer values, as in dvvset.erl's lww/last/reconcile tests ---- */

static long long num(const kv_value *v) {
  long long x = 0;
  bool neg = false;
  for (size_t i = 0; i < v->data.len; i++) {
    uint8_t ch = v->data.data[i];
    if (i == 0 && ch == '-')
      neg = true;
    else
      x = x * 10 + (ch - '0');
  }
  return neg ? -x : x;
}

static kv_value num_value(long long x) {
  char s[32];
  int k = snprintf(s, sizeof s, "%lld", x);
  return (kv_value){kv_buf_dup(s, (size_t)k), 0, false};
}

static bool le_num(const kv_value *a, const kv_value *b, void *arg) {
  (void)arg;
  return num(a) <= num(b);
}

static bool le_ts(const kv_value *a, const kv_value *b, void *arg) {
  (void)arg;
  return a->ts <= b->ts;
}

/* dvvset.erl's sync_test passes F = (L > R) as "le"; kept as the oddity it
 * is, on bytes. */
static bool gt_bytes(const kv_value *a, const kv_value *b, void *arg) {
  (void)arg;
  return kv_buf_cmp(a->data.data, a->data.len, b->data.data, b->data.len) > 0;
}

static bool le_always(const kv_value *a, const kv_value *b, void *arg) {
  (void)a, (void)b, (void)arg;
  return true;
}

static bool le_never(const kv_value *a, const kv_value *b, void *arg) {
  (void)a, (void)b, (void)arg;
  return false;
}

static void sum_fn(const kv_value **vals, size_t n, kv_value *result,
                   void *arg) {
  (void)arg;
  long long s = 0;
  for (size_t i = 0; i < n; i++)
    s += num(vals[i]);
  *result = num_value(s);
}

static void min_fn(const kv_value **vals, size_t n, kv_value *result,
                   void *arg) {
  (void)arg;
  assert_true(n > 0);
  long long m = num(vals[0]);
  for (size_t i = 1; i < n; i++)
    if (num(vals[i]) < m) m = num(vals[i]);
  *result = num_value(m);
}

/* ---- helpers for the test vectors ---- */

/* update(new(join(ctx_of), [v]), server, id), or update(new([v]), ...) when
 * ctx_of is NULL; server NULL is update/2. */
static void put(kv_dvv *out, const kv_dvv *ctx_of, const char *v,
                const kv_dvv *server, uint64_t id) {
  kv_vv vv = {0, NULL};
  if (ctx_of) kv_dvv_join(ctx_of, &vv);
  kv_value x = val(v);
  kv_dvv client;
  kv_dvv_new(&client, ctx_of ? &vv : NULL, &x, 1);
  kv_dvv_update(out, &client, server, id);
  kv_dvv_fini(&client);
  kv_value_fini(&x);
  kv_vv_fini(&vv);
}

static void sync_of(kv_dvv *out, const char *a, const char *b) {
  kv_dvv x, y;
  clock_of(&x, a);
  clock_of(&y, b);
  kv_dvv_sync(out, &x, &y);
  kv_dvv_fini(&x);
  kv_dvv_fini(&y);
}

static void fini_all(kv_dvv *c, size_t n) {
  for (size_t i = 0; i < n; i++)
    kv_dvv_fini(&c[i]);
}

/* ---- riak.md §1.4 test vectors ---- */

static void test_dvv_vector_update_without_server(void **state) {
  (void)state;
  kv_dvv a0;
  put(&a0, NULL, "v1", NULL, 'a');
  assert_clock(&a0, "a:1[v1]");
  kv_dvv_fini(&a0);
}

/* The A0..A4 chain of update_test, each step checked on its own. */
static void update_chain(kv_dvv c[5]) {
  put(&c[0], NULL, "v1", NULL, 'a');
  put(&c[1], &c[0], "v2", &c[0], 'a');
  put(&c[2], &c[1], "v3", &c[1], 'b');
  put(&c[3], &c[0], "v4", &c[1], 'b');
  put(&c[4], &c[0], "v5", &c[1], 'a');
}

static void test_dvv_vector_update_drops_seen_value(void **state) {
  (void)state;
  kv_dvv c[5];
  update_chain(c);
  assert_clock(&c[1], "a:2[v2]");
  fini_all(c, 5);
}

static void test_dvv_vector_update_new_id_obsoletes(void **state) {
  (void)state;
  kv_dvv c[5];
  update_chain(c);
  assert_clock(&c[2], "a:2[] b:1[v3]");
  fini_all(c, 5);
}

static void test_dvv_vector_update_concurrent_other_id(void **state) {
  (void)state;
  kv_dvv c[5];
  update_chain(c);
  assert_clock(&c[3], "a:2[v2] b:1[v4]");
  fini_all(c, 5);
}

static void test_dvv_vector_update_concurrent_same_id(void **state) {
  (void)state;
  kv_dvv c[5];
  update_chain(c);
  assert_clock(&c[4], "a:3[v5,v2]");
  fini_all(c, 5);
}

static void test_dvv_vector_mary_peter(void **state) {
  (void)state;
  kv_dvv a0, a1, a2;
  put(&a0, NULL, "v1", NULL, 'a');
  kv_vv vv1;
  kv_dvv_join(&a0, &vv1);
  assert_string_equal(vv_str(&vv1), "a:1");
  put(&a1, NULL, "v2", &a0, 'a');
  assert_clock(&a0, "a:1[v1]");
  assert_clock(&a1, "a:2[v2,v1]");
  kv_value v3 = val("v3");
  kv_dvv client;
  kv_dvv_new(&client, &vv1, &v3, 1);
  kv_dvv_update(&a2, &client, &a1, 'a');
  assert_clock(&a2, "a:3[v3,v2]");
  kv_value_fini(&v3);
  kv_vv_fini(&vv1);
  kv_dvv_fini(&client);
  kv_dvv_fini(&a0);
  kv_dvv_fini(&a1);
  kv_dvv_fini(&a2);
}

static void test_dvv_vector_sync_drops_obsolete(void **state) {
  (void)state;
  kv_dvv wz, zw;
  sync_of(&wz, "a:1[]", "a:2[v2,v1]");
  sync_of(&zw, "a:2[v2,v1]", "a:1[]");
  assert_clock(&wz, "a:2[v2]");
  assert_clock(&zw, "a:2[v2]");
  kv_dvv_fini(&wz);
  kv_dvv_fini(&zw);
}

static void test_dvv_vector_sync_disjoint_ids(void **state) {
  (void)state;
  kv_dvv x, a, xa, ax;
  clock_of(&x, "x:1[]");
  put(&a, NULL, "v1", NULL, 'a');
  kv_dvv_sync(&xa, &x, &a);
  kv_dvv_sync(&ax, &a, &x);
  assert_clock(&xa, "a:1[v1] x:1[]");
  assert_clock(&ax, "a:1[v1] x:1[]");
  kv_dvv_fini(&x);
  kv_dvv_fini(&a);
  kv_dvv_fini(&xa);
  kv_dvv_fini(&ax);
}

static void test_dvv_vector_reconcile_sum(void **state) {
  (void)state;
  kv_dvv y, r;
  clock_of(&y, "a:4[5,2] b:1[] c:1[3] | 0,10");
  kv_dvv_reconcile(&r, &y, sum_fn, NULL);
  assert_clock(&r, "a:4[] b:1[] c:1[] | 20");
  kv_dvv_fini(&y);
  kv_dvv_fini(&r);
}

static void test_dvv_vector_last_heads_only(void **state) {
  (void)state;
  kv_dvv x;
  clock_of(&x, "a:4[5,2] b:1[] c:1[3]");
  const kv_value *v = kv_dvv_last(&x, le_num, NULL);
  assert_non_null(v);
  assert_int_equal(num(v), 5);
  kv_dvv_fini(&x);
  /* The same clock with 7 in place of the non-head 2 still says 5. */
  clock_of(&x, "a:4[5,7] b:1[] c:1[3]");
  assert_int_equal(num(kv_dvv_last(&x, le_num, NULL)), 5);
  kv_dvv_fini(&x);
}

static void test_dvv_vector_lww_anon_winner(void **state) {
  (void)state;
  kv_dvv y, r;
  clock_of(&y, "a:4[5,2] b:1[] c:1[3] | 0,10");
  kv_dvv_lww(&r, &y, le_num, NULL);
  assert_clock(&r, "a:4[] b:1[] c:1[] | 10");
  kv_dvv_fini(&y);
  kv_dvv_fini(&r);
}

static void test_dvv_vector_equal_ignores_values(void **state) {
  (void)state;
  kv_dvv a, b;
  clock_of(&a, "a:4[v5,v0] b:0[] c:1[v3] | v0");
  clock_of(&b, "a:4[v555,v0] b:0[] c:1[v3]");
  assert_true(kv_dvv_equal(&a, &b));
  assert_true(kv_dvv_equal(&b, &a));
  kv_dvv_fini(&a);
  kv_dvv_fini(&b);
}

/* ---- the rest of dvvset.erl's eunit assertions ---- */

static void test_dvv_eunit_join(void **state) {
  (void)state;
  kv_dvv a, a1, b1;
  kv_value v1 = val("v1");
  kv_dvv_new(&a, NULL, &v1, 1);
  kv_dvv_update(&a1, &a, NULL, 'a');
  put(&b1, &a1, "v2", &a1, 'b');
  kv_vv j;
  kv_dvv_join(&a, &j);
  assert_int_equal(j.n, 0);
  kv_vv_fini(&j);
  kv_dvv_join(&a1, &j);
  assert_string_equal(vv_str(&j), "a:1");
  kv_vv_fini(&j);
  kv_dvv_join(&b1, &j);
  assert_string_equal(vv_str(&j), "a:1 b:1");
  kv_vv_fini(&j);
  kv_value_fini(&v1);
  kv_dvv_fini(&a);
  kv_dvv_fini(&a1);
  kv_dvv_fini(&b1);
}

static void test_dvv_eunit_event(void **state) {
  (void)state;
  kv_dvv a, ea, eb;
  clock_of(&a, "a:1[v1] | v2");
  kv_dvv_update(&ea, &a, NULL, 'a');
  kv_dvv_update(&eb, &a, NULL, 'b');
  assert_clock(&ea, "a:2[v2,v1]");
  assert_clock(&eb, "a:1[v1] b:1[v2]");
  kv_dvv_fini(&a);
  kv_dvv_fini(&ea);
  kv_dvv_fini(&eb);
}

static void test_dvv_eunit_sync(void **state) {
  (void)state;
  kv_dvv a, y, a1, a3, a4, s1, s2, l, ls;
  put(&a, NULL, "v1", NULL, 'a');
  put(&y, NULL, "v2", NULL, 'b');
  put(&a1, &a, "v2", NULL, 'a');
  put(&a3, &a1, "v3", NULL, 'b');
  put(&a4, &a1, "v3", NULL, 'c');
  assert_clock(&a1, "a:2[v2]");

  kv_dvv_sync(&s1, &a, &a1);
  kv_dvv_sync(&s2, &a1, &a);
  assert_true(same(&s1, &s2));
  assert_clock(&s1, "a:2[v2]");
  fini_all((kv_dvv[]){s1, s2}, 2);

  kv_dvv_sync(&s1, &a4, &a3);
  kv_dvv_sync(&s2, &a3, &a4);
  assert_clock(&s1, "a:2[] b:1[v3] c:1[v3]");
  assert_true(same(&s1, &s2));
  fini_all((kv_dvv[]){s1, s2}, 2);

  kv_dvv_sync(&s1, &a, &y);
  kv_dvv_sync(&s2, &y, &a);
  assert_clock(&s1, "a:1[v1] b:1[v2]");
  assert_true(same(&s1, &s2));
  fini_all((kv_dvv[]){s1, s2}, 2);

  kv_dvv_lww(&l, &a4, gt_bytes, NULL);
  kv_dvv_sync(&ls, &a4, &l);
  assert_true(same(&l, &ls));
  fini_all((kv_dvv[]){a, y, a1, a3, a4, l, ls}, 7);
}

static void test_dvv_eunit_lww_last(void **state) {
  (void)state;
  kv_dvv x, y, z, a, r;
  clock_of(&x, "a:4[5,2] b:1[] c:1[3]");
  clock_of(&y, "a:4[5,2] b:1[] c:1[3] | 0,10");
  clock_of(&z, "a:4[5,2] b:1[1] | 3");
  clock_of(&a, "a:4[5@1002345,7@1002340] b:1[4@1001340] | 2@1001140");
  assert_int_equal(num(kv_dvv_last(&y, le_num, NULL)), 10);
  kv_dvv_lww(&r, &x, le_num, NULL);
  assert_clock(&r, "a:4[5] b:1[] c:1[]");
  kv_dvv_fini(&r);
  kv_dvv_lww(&r, &z, le_num, NULL);
  assert_clock(&r, "a:4[5] b:1[]");
  kv_dvv_fini(&r);
  kv_dvv_lww(&r, &a, le_ts, NULL);
  assert_clock(&r, "a:4[5@1002345] b:1[]");
  kv_dvv_fini(&r);
  fini_all((kv_dvv[]){x, y, z, a}, 4);
}

static void test_dvv_eunit_reconcile(void **state) {
  (void)state;
  kv_dvv x, y, r;
  clock_of(&x, "a:4[5,2] b:1[] c:1[3]");
  clock_of(&y, "a:4[5,2] b:1[] c:1[3] | 0,10");
  kv_dvv_reconcile(&r, &x, sum_fn, NULL);
  assert_clock(&r, "a:4[] b:1[] c:1[] | 10");
  kv_dvv_fini(&r);
  kv_dvv_reconcile(&r, &x, min_fn, NULL);
  assert_clock(&r, "a:4[] b:1[] c:1[] | 2");
  kv_dvv_fini(&r);
  kv_dvv_reconcile(&r, &y, min_fn, NULL);
  assert_clock(&r, "a:4[] b:1[] c:1[] | 0");
  kv_dvv_fini(&r);
  fini_all((kv_dvv[]){x, y}, 2);
}

/* ---- unit tests ---- */

static void test_dvv_value_cmp_order(void **state) {
  (void)state;
  /* In increasing order: empty < bytes (prefix first) < later ts < any
   * tombstone. */
  const char *order[] = {"", "a", "a@1", "a@9", "ab", "b", "!", "!a@0", "!a@2"};
  size_t n = sizeof order / sizeof *order;
  for (size_t i = 0; i < n; i++) {
    kv_value x = val(order[i]);
    for (size_t j = 0; j < n; j++) {
      kv_value y = val(order[j]);
      int c = kv_value_cmp(&x, &y);
      if (i < j) assert_true(c < 0);
      if (i == j) assert_int_equal(c, 0);
      if (i > j) assert_true(c > 0);
      kv_value_fini(&y);
    }
    kv_value_fini(&x);
  }
}

static void test_dvv_value_copy_is_deep(void **state) {
  (void)state;
  kv_value a = val("!abc@7"), b;
  kv_value_copy(&b, &a);
  assert_true(same_value(&a, &b));
  assert_ptr_not_equal(a.data.data, b.data.data);
  a.data.data[0] = 'x';
  assert_memory_equal(b.data.data, "abc", 3);
  kv_value_fini(&a);
  assert_null(a.data.data);
  kv_value_fini(&b);
  kv_value_fini(NULL);
}

static void test_dvv_new_sorts_and_dedups(void **state) {
  (void)state;
  kv_vv_entry e[] = {{'c', 1}, {'a', 2}, {'b', 0}};
  kv_vv vv = {3, e};
  kv_value vals[] = {val("v2"),  val("v1"),   val("v2"),
                     val("!v0"), val("v1@3"), val("v1")};
  kv_dvv c;
  kv_dvv_new(&c, &vv, vals, 6);
  assert_clock(&c, "a:2[] b:0[] c:1[] | v1,v1@3,v2,!v0");
  assert_true(kv_dvv_valid(&c));
  /* The inputs are borrowed, not reordered. */
  assert_int_equal(e[0].id, 'c');
  assert_memory_equal(vals[0].data.data, "v2", 2);
  kv_dvv_fini(&c);

  kv_dvv_new(&c, NULL, vals, 1);
  assert_clock(&c, "| v2");
  kv_dvv_fini(&c);
  kv_dvv_new(&c, NULL, NULL, 0);
  assert_int_equal(c.nent + c.nanon, 0);
  kv_dvv_fini(&c);
  for (size_t i = 0; i < 6; i++)
    kv_value_fini(&vals[i]);
}

/* A context that repeats an id is not a join() result; new() keeps the
 * largest counter so that the result is still a valid clock. */
static void test_dvv_new_repeated_id_keeps_max(void **state) {
  (void)state;
  kv_vv_entry e[] = {{'b', 1}, {'a', 5}, {'b', 4}, {'a', 2}};
  kv_vv vv = {4, e};
  kv_value v = val("v");
  kv_dvv c;
  kv_dvv_new(&c, &vv, &v, 1);
  assert_clock(&c, "a:5[] b:4[] | v");
  assert_true(kv_dvv_valid(&c));
  kv_dvv_fini(&c);
  kv_value_fini(&v);
}

static void test_dvv_join_and_vv(void **state) {
  (void)state;
  kv_dvv c;
  clock_of(&c, "a:3[x] b:0[] z:7[p,q] | y");
  kv_vv j, k;
  kv_dvv_join(&c, &j);
  assert_string_equal(vv_str(&j), "a:3 b:0 z:7");
  assert_true(kv_vv_valid(&j));
  kv_vv_copy(&k, &j);
  assert_ptr_not_equal(k.e, j.e);
  assert_string_equal(vv_str(&k), "a:3 b:0 z:7");
  k.e[1].id = 'a';
  assert_false(kv_vv_valid(&k));
  k.e[1].id = 'z';
  assert_false(kv_vv_valid(&k));
  kv_vv_fini(&k);
  assert_int_equal(k.n, 0);
  kv_vv_fini(&j);
  kv_vv_fini(NULL);
  kv_dvv_fini(&c);

  kv_dvv_init(&c);
  kv_dvv_join(&c, &j);
  assert_int_equal(j.n, 0);
  assert_true(kv_vv_valid(&j));
  kv_vv_fini(&j);
}

static void test_dvv_values_and_size(void **state) {
  (void)state;
  kv_dvv c;
  clock_of(&c, "a:3[a3,a2] b:1[] c:2[c2] | x,y");
  assert_int_equal(kv_dvv_size(&c), 5);
  const kv_value *out[8];
  assert_int_equal(kv_dvv_values(&c, out, 8), 5);
  const char *want[] = {"x", "y", "a3", "a2", "c2"};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(out[i]->data.len, strlen(want[i]));
    assert_memory_equal(out[i]->data.data, want[i], strlen(want[i]));
  }
  /* Borrowed pointers into c, and a short cap still reports the total. */
  assert_ptr_equal(out[2], &c.ent[0].vals[0]);
  const kv_value *few[2] = {NULL, NULL};
  assert_int_equal(kv_dvv_values(&c, few, 1), 5);
  assert_ptr_equal(few[0], out[0]);
  assert_null(few[1]);
  assert_int_equal(kv_dvv_values(&c, NULL, 0), 5);
  kv_dvv_fini(&c);

  kv_dvv_init(&c);
  assert_int_equal(kv_dvv_size(&c), 0);
  assert_int_equal(kv_dvv_values(&c, out, 8), 0);
}

static void test_dvv_less(void **state) {
  (void)state;
  static const struct {
    const char *a, *b;
    bool less;
  } cases[] = {
      {"", "", false},
      {"", "a:0[]", true}, /* an entry with n = 0 still counts */
      {"a:0[]", "", false},
      {"a:0[]", "a:0[]", false},
      {"a:1[x]", "a:1[]", false},
      {"a:1[]", "a:2[]", true},
      {"a:2[]", "a:1[]", false},
      {"a:1[]", "a:1[] b:0[]", true},
      {"a:1[] b:0[]", "a:1[]", false},
      {"b:1[]", "a:0[] b:1[]", true},
      {"b:1[]", "a:0[] b:0[]", false},
      {"a:1[] c:1[]", "a:1[] b:1[]", false},
      {"a:1[] c:1[]", "a:1[] b:0[] c:1[]", true},
      {"a:2[] b:1[]", "a:1[] b:2[]", false},
      {"a:1[] b:1[]", "a:1[] b:1[] c:1[]", true},
      {"a:1[] b:1[] | p", "a:1[] b:1[] c:1[]", true},
      {"a:1[] b:1[] d:1[]", "a:1[] b:1[] c:1[]", false},
      {"z:1[]", "a:5[]", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kv_dvv a, b;
    clock_of(&a, cases[i].a);
    clock_of(&b, cases[i].b);
    if (kv_dvv_less(&a, &b) != cases[i].less)
      fail_msg("less(%s, %s) should be %d", cases[i].a, cases[i].b,
               cases[i].less);
    kv_dvv_fini(&a);
    kv_dvv_fini(&b);
  }
}

static void test_dvv_equal(void **state) {
  (void)state;
  static const struct {
    const char *a, *b;
    bool equal;
  } cases[] = {
      {"", "", true},
      {"| x", "", true},
      {"a:1[x]", "a:1[y]", true},
      {"a:1[x] | p", "a:1[y] | q", true},
      {"a:2[x]", "a:2[x,y]", false},
      {"a:1[]", "a:2[]", false},
      {"a:1[]", "b:1[]", false},
      {"a:1[]", "a:1[] b:0[]", false},
      {"a:1[] b:0[]", "a:1[]", false},
      {"a:0[]", "", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kv_dvv a, b;
    clock_of(&a, cases[i].a);
    clock_of(&b, cases[i].b);
    if (kv_dvv_equal(&a, &b) != cases[i].equal ||
        kv_dvv_equal(&b, &a) != cases[i].equal)
      fail_msg("equal(%s, %s) should be %d", cases[i].a, cases[i].b,
               cases[i].equal);
    kv_dvv_fini(&a);
    kv_dvv_fini(&b);
  }
}

static void test_dvv_sync_with_empty(void **state) {
  (void)state;
  const char *specs[] = {"", "| x,y", "a:2[v2] b:0[]", "a:3[v3,v2] | x"};
  for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
    kv_dvv e, c, l, r;
    kv_dvv_init(&e);
    clock_of(&c, specs[i]);
    kv_dvv_sync(&l, &e, &c);
    kv_dvv_sync(&r, &c, &e);
    assert_string_equal(str(&l), specs[i]);
    assert_string_equal(str(&r), specs[i]);
    fini_all((kv_dvv[]){c, l, r}, 3);
  }
}

/* The anonymous lists follow sync2 exactly: the dominated side's list goes,
 * concurrent lists are united (sorted, without duplicates). */
static void test_dvv_sync_anon_rule(void **state) {
  (void)state;
  kv_dvv s;
  sync_of(&s, "a:1[] | x", "a:2[] | y");
  assert_clock(&s, "a:2[] | y");
  kv_dvv_fini(&s);
  sync_of(&s, "a:2[] | y", "a:1[] | x");
  assert_clock(&s, "a:2[] | y");
  kv_dvv_fini(&s);
  sync_of(&s, "a:1[] | p,x,z", "b:1[] | q,x,!x");
  assert_clock(&s, "a:1[] b:1[] | p,q,x,z,!x");
  kv_dvv_fini(&s);
  sync_of(&s, "a:1[] | x", "a:1[] | w,x");
  assert_clock(&s, "a:1[] | w,x");
  kv_dvv_fini(&s);
}

/* Because of that rule sync is associative on entries but not on anonymous
 * lists: x survives one grouping and not the other (c dominates a but not
 * a's union with b). This pins the reference behaviour. */
static void test_dvv_sync_anon_grouping(void **state) {
  (void)state;
  kv_dvv a, b, c, ab, bc, ab_c, a_bc;
  clock_of(&a, "a:1[] | x");
  clock_of(&b, "b:1[] | y");
  clock_of(&c, "a:1[] c:1[] | z");
  kv_dvv_sync(&ab, &a, &b);
  kv_dvv_sync(&ab_c, &ab, &c);
  kv_dvv_sync(&bc, &b, &c);
  kv_dvv_sync(&a_bc, &a, &bc);
  assert_clock(&ab_c, "a:1[] b:1[] c:1[] | x,y,z");
  assert_clock(&a_bc, "a:1[] b:1[] c:1[] | y,z");
  fini_all((kv_dvv[]){a, b, c, ab, bc, ab_c, a_bc}, 7);
}

static void test_dvv_sync_leaves_inputs(void **state) {
  (void)state;
  const char *sa = "a:3[v3] b:2[w2,w1] | x", *sb = "a:4[v4,v3] c:1[u1] | y";
  kv_dvv a, b, s;
  clock_of(&a, sa);
  clock_of(&b, sb);
  kv_dvv_sync(&s, &a, &b);
  assert_clock(&s, "a:4[v4,v3] b:2[w2,w1] c:1[u1] | x,y");
  kv_dvv_fini(&s);
  assert_string_equal(str(&a), sa);
  assert_string_equal(str(&b), sb);
  fini_all((kv_dvv[]){a, b}, 2);
}

/* merge_entry: the larger counter wins and loses every value at or below the
 * other side's obsolete mark n - len(L). */
static void test_dvv_sync_merge_entry(void **state) {
  (void)state;
  static const char *cases[][3] = {
      {"a:5[v5,v4,v3]", "a:3[]", "a:5[v5,v4]"},
      {"a:5[v5,v4,v3]", "a:3[v3]", "a:5[v5,v4,v3]"},
      {"a:5[v5]", "a:3[v3,v2]", "a:5[v5]"},
      {"a:5[v5,v4,v3,v2]", "a:4[v4,v3]", "a:5[v5,v4,v3]"},
      {"a:5[v5,v4,v3,v2]", "a:5[v5]", "a:5[v5]"},
      {"a:5[v5,v4,v3,v2]", "a:5[]", "a:5[]"},
      {"a:0[]", "a:0[]", "a:0[]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    kv_dvv l, r;
    sync_of(&l, cases[i][0], cases[i][1]);
    sync_of(&r, cases[i][1], cases[i][0]);
    assert_clock(&l, cases[i][2]);
    assert_clock(&r, cases[i][2]);
    kv_dvv_fini(&l);
    kv_dvv_fini(&r);
  }
}

static void test_dvv_copy_is_deep(void **state) {
  (void)state;
  kv_dvv a, b;
  clock_of(&a, "a:3[v3,v2] b:0[] | !x@4");
  kv_dvv_copy(&b, &a);
  assert_true(same(&a, &b));
  assert_ptr_not_equal(a.ent, b.ent);
  assert_ptr_not_equal(a.ent[0].vals, b.ent[0].vals);
  a.ent[0].vals[0].data.data[0] = 'q';
  a.anon[0].data.data[0] = 'q';
  assert_clock(&b, "a:3[v3,v2] b:0[] | !x@4");
  kv_dvv_fini(&a);
  assert_int_equal(a.nent + a.nanon, 0);
  kv_dvv_fini(&b);
  kv_dvv_fini(NULL);

  kv_dvv_init(&a);
  kv_dvv_copy(&b, &a);
  assert_int_equal(b.nent + b.nanon, 0);
  kv_dvv_fini(&b);
}

static void test_dvv_valid_accepts(void **state) {
  (void)state;
  const char *ok[] = {"", "a:0[]", "a:2[x,y]", "a:1[] b:0[] | x,!", "| p,p@1"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    kv_dvv c;
    clock_of(&c, ok[i]);
    if (!kv_dvv_valid(&c)) fail_msg("valid(%s) should hold", ok[i]);
    kv_dvv_fini(&c);
  }
}

static void test_dvv_valid_rejects(void **state) {
  (void)state;
  const char *bad[] = {
      "a:1[] a:2[]",       /* repeated id */
      "b:1[] a:1[]",       /* ids decreasing */
      "a:1[] c:1[] b:1[]", /* ids out of order further on */
      "a:1[x,y]",          /* more values than events */
      "a:0[x]",            /* a value without any event */
      "| y,x",             /* anon unsorted */
      "| x,x",             /* anon duplicate */
      "| !x,x",            /* tombstones sort last */
      "| x@2,x@1",         /* then ts */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kv_dvv c;
    clock_of(&c, bad[i]);
    if (kv_dvv_valid(&c)) fail_msg("valid(%s) should fail", bad[i]);
    kv_dvv_fini(&c);
  }

  /* Pointers a hostile decoder could leave NULL. */
  kv_dvv c;
  clock_of(&c, "a:2[x] | y");
  assert_true(kv_dvv_valid(&c));
  kv_dvv_entry *ent = c.ent;
  c.ent = NULL;
  assert_false(kv_dvv_valid(&c));
  c.ent = ent;
  kv_value *vals = c.ent[0].vals;
  c.ent[0].vals = NULL;
  assert_false(kv_dvv_valid(&c));
  c.ent[0].vals = vals;
  kv_value *anon = c.anon;
  c.anon = NULL;
  assert_false(kv_dvv_valid(&c));
  c.anon = anon;
  uint8_t *data = c.anon[0].data.data;
  c.anon[0].data.data = NULL;
  assert_false(kv_dvv_valid(&c));
  c.anon[0].data.data = data;
  assert_true(kv_dvv_valid(&c));
  kv_dvv_fini(&c);
}

static void test_dvv_last_empty_and_ties(void **state) {
  (void)state;
  kv_dvv c, r;
  clock_of(&c, "a:2[] b:1[]");
  assert_null(kv_dvv_last(&c, le_num, NULL));
  kv_dvv_lww(&r, &c, le_num, NULL);
  assert_true(same(&r, &c));
  kv_dvv_fini(&r);
  kv_dvv_fini(&c);

  /* Ties go to the later candidate in the scan: entries by id, then anon. */
  clock_of(&c, "a:2[p,q] b:0[] c:1[r] | s,t");
  assert_memory_equal(kv_dvv_last(&c, le_always, NULL)->data.data, "t", 1);
  assert_memory_equal(kv_dvv_last(&c, le_never, NULL)->data.data, "p", 1);
  kv_dvv_lww(&r, &c, le_never, NULL);
  assert_clock(&r, "a:2[p] b:0[] c:1[]");
  kv_dvv_fini(&r);
  kv_dvv_fini(&c);
  clock_of(&c, "a:2[p,q] b:0[] c:1[r]");
  assert_memory_equal(kv_dvv_last(&c, le_always, NULL)->data.data, "r", 1);
  kv_dvv_fini(&c);
  clock_of(&c, "| s,t");
  assert_memory_equal(kv_dvv_last(&c, le_never, NULL)->data.data, "s", 1);
  kv_dvv_fini(&c);
}

static void reconcile_check_order(const kv_value **vals, size_t n,
                                  kv_value *result, void *arg) {
  size_t *calls = arg;
  (*calls)++;
  const char *want[] = {"x", "a3", "a2", "c1"};
  assert_int_equal(n, 4);
  for (size_t i = 0; i < n; i++)
    assert_memory_equal(vals[i]->data.data, want[i], vals[i]->data.len);
  *result = val("!r@5");
}

static void test_dvv_reconcile_sees_all_values(void **state) {
  (void)state;
  kv_dvv c, r;
  size_t calls = 0;
  clock_of(&c, "a:3[a3,a2] b:1[] c:1[c1] | x");
  kv_dvv_reconcile(&r, &c, reconcile_check_order, &calls);
  assert_int_equal(calls, 1);
  assert_clock(&r, "a:3[] b:1[] c:1[] | !r@5");
  kv_dvv_fini(&r);
  kv_dvv_fini(&c);

  kv_dvv_init(&c);
  kv_dvv_reconcile(&r, &c, sum_fn, NULL);
  assert_clock(&r, "| 0");
  kv_dvv_fini(&r);
}

/* update/3 keeps anonymous values unless the client's history strictly
 * dominates the server's (sync of ([], Ec) with Cr). */
static void test_dvv_update_anon_survival(void **state) {
  (void)state;
  kv_dvv server, seen, ahead, r;
  clock_of(&server, "a:1[] | x");
  clock_of(&seen, "a:1[]");
  clock_of(&ahead, "a:1[] b:1[]");
  put(&r, &seen, "v", &server, 'a');
  assert_clock(&r, "a:2[v] | x");
  kv_dvv_fini(&r);
  put(&r, &ahead, "v", &server, 'a');
  assert_clock(&r, "a:2[v] b:1[]");
  kv_dvv_fini(&r);
  put(&r, NULL, "v", &server, 'c');
  assert_clock(&r, "a:1[] c:1[v] | x");
  kv_dvv_fini(&r);
  fini_all((kv_dvv[]){server, seen, ahead}, 3);
}

/* A context from another replica that knows more of id b than the server:
 * the server's b values are all covered, and the counter jumps. */
static void test_dvv_update_context_ahead_of_server(void **state) {
  (void)state;
  kv_dvv server, ctx, r;
  clock_of(&server, "a:1[a1] b:2[b2]");
  clock_of(&ctx, "b:4[]");
  put(&r, &ctx, "v", &server, 'a');
  assert_clock(&r, "a:2[v,a1] b:4[]");
  kv_dvv_fini(&r);
  fini_all((kv_dvv[]){server, ctx}, 2);
}

/* Runs update with a client holding nanon anonymous values in a child and
 * reports whether it died of SIGABRT (kv_assert). */
static void update_with_anon(void *arg) {
  size_t nanon = *(size_t *)arg;
  kv_dvv client, out;
  clock_of(&client, nanon == 0 ? "a:1[]" : "a:1[] | x,y");
  kv_dvv_update(&out, &client, NULL, 'a');
}

static bool update_aborts(size_t nanon) {
  return test_aborts(update_with_anon, &nanon);
}

static void test_dvv_update_requires_one_anon(void **state) {
  (void)state;
  assert_true(update_aborts(0));
  assert_true(update_aborts(2));
}

/* ---- randomised properties ---- */

static unsigned long long g_seed;
static const char *g_prop = "";
static unsigned long g_case;

typedef test_rng prng;

static uint64_t rnd(prng *r) { return test_rng_next(r); }

static size_t below(prng *r, size_t n) { return (size_t)(rnd(r) % n); }

static bool chance(prng *r, unsigned pct) { return below(r, 100) < pct; }

/* Each property test has its own stream, so one can be rerun alone. */
static prng prop_prng(const char *name) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *p = name; *p; p++)
    h = (h ^ (uint8_t)*p) * 1099511628211ULL;
  prng r = {g_seed ^ h};
  rnd(&r);
  return r;
}

static void prop_fail(const char *file, int line, const char *what,
                      const kv_dvv *a, const kv_dvv *b, const kv_dvv *c) {
  print_error("%s:%d: %s: property failed: %s\n  case %lu, dvv_test "
              "seed=%llu (rerun with KV_SEED=%llu)\n",
              file, line, g_prop, what, g_case, g_seed, g_seed);
  if (a) print_error("  a = %s\n", str(a));
  if (b) print_error("  b = %s\n", str(b));
  if (c) print_error("  c = %s\n", str(c));
  _fail(file, line);
}

#define PCHECK(cond, a, b, c)                                                  \
  do {                                                                         \
    if (!(cond)) prop_fail(__FILE__, __LINE__, #cond, a, b, c);                \
  } while (0)

/* A model of less/equal/join over entries looked up by id, independent of
 * the sorted walks in dvv.c. */
static const kv_dvv_entry *find_entry(const kv_dvv *c, uint64_t id) {
  for (size_t i = 0; i < c->nent; i++)
    if (c->ent[i].id == id) return &c->ent[i];
  return NULL;
}

static bool model_geq(const kv_dvv *b, const kv_dvv *a) {
  for (size_t i = 0; i < a->nent; i++) {
    const kv_dvv_entry *e = find_entry(b, a->ent[i].id);
    if (!e || e->n < a->ent[i].n) return false;
  }
  return true;
}

static bool same_join(const kv_dvv *a, const kv_dvv *b) {
  return model_geq(a, b) && model_geq(b, a);
}

static bool model_less(const kv_dvv *a, const kv_dvv *b) {
  return model_geq(b, a) && !model_geq(a, b);
}

static bool model_equal(const kv_dvv *a, const kv_dvv *b) {
  if (!same_join(a, b)) return false;
  for (size_t i = 0; i < a->nent; i++)
    if (find_entry(b, a->ent[i].id)->nvals != a->ent[i].nvals) return false;
  return true;
}

/* join(s) is the pointwise max of join(a) and join(b) over the union of
 * their ids. */
static bool join_is_max(const kv_dvv *s, const kv_dvv *a, const kv_dvv *b) {
  if (!model_geq(s, a) || !model_geq(s, b)) return false;
  for (size_t i = 0; i < s->nent; i++) {
    const kv_dvv_entry *x = find_entry(a, s->ent[i].id);
    const kv_dvv_entry *y = find_entry(b, s->ent[i].id);
    if (!x && !y) return false;
    if ((!x || x->n != s->ent[i].n) && (!y || y->n != s->ent[i].n))
      return false;
  }
  return true;
}

#define NREP 4
#define NCLI 3
#define MAXOPS 20
#define POOL 10

typedef struct sim_write {
  uint64_t id, k; /* the dot the write got */
  kv_vv ctx;      /* the context it carried, empty without one */
} sim_write;

/* Replicas, clients and everything written. With anon set the simulation
 * also stores reconcile and lww results, which add anonymous values; the
 * write model then no longer applies and only sync's laws are checked. */
typedef struct sim {
  prng r;
  bool anon;
  size_t nrep;
  uint64_t ids[NREP];
  kv_dvv rep[NREP];
  bool has_ctx[NCLI];
  kv_vv ctx[NCLI];
  size_t nw;
  sim_write w[MAXOPS];
  size_t npool;
  kv_dvv pool[POOL];
} sim;

static void sim_init(sim *s, prng r, bool anon) {
  memset(s, 0, sizeof *s);
  s->r = r;
  s->anon = anon;
  s->nrep = 2 + below(&s->r, NREP - 1);
  for (size_t i = 0; i < s->nrep; i++) {
    uint64_t id;
    bool fresh;
    do {
      id = chance(&s->r, 25) ? UINT64_MAX - below(&s->r, 4)
                             : 1 + below(&s->r, 6);
      fresh = true;
      for (size_t j = 0; j < i; j++)
        fresh = fresh && s->ids[j] != id;
    } while (!fresh);
    s->ids[i] = id;
    kv_dvv_init(&s->rep[i]);
  }
}

static void sim_fini(sim *s) {
  fini_all(s->rep, s->nrep);
  fini_all(s->pool, s->npool);
  for (size_t i = 0; i < NCLI; i++)
    kv_vv_fini(&s->ctx[i]);
  for (size_t i = 0; i < s->nw; i++)
    kv_vv_fini(&s->w[i].ctx);
}

static void remember(sim *s, const kv_dvv *c) {
  kv_dvv *slot;
  if (s->npool < POOL) {
    slot = &s->pool[s->npool++];
  } else {
    slot = &s->pool[below(&s->r, POOL)];
    kv_dvv_fini(slot);
  }
  kv_dvv_copy(slot, c);
}

static uint64_t vv_get(const kv_vv *vv, uint64_t id) {
  for (size_t i = 0; i < vv->n; i++)
    if (vv->e[i].id == id) return vv->e[i].n;
  return 0;
}

/* The write model: c holds exactly the writes whose dot it knows and that no
 * write it knows replaced (a write replaces every dot its context covers),
 * each at its own dot. */
static void check_model(const sim *s, const kv_dvv *c) {
  bool known[MAXOPS], live[MAXOPS], seen[MAXOPS];
  for (size_t i = 0; i < s->nw; i++) {
    const kv_dvv_entry *e = find_entry(c, s->w[i].id);
    known[i] = e && e->n >= s->w[i].k;
    seen[i] = false;
  }
  for (size_t i = 0; i < s->nw; i++) {
    live[i] = known[i];
    for (size_t j = 0; j < s->nw && live[i]; j++)
      if (known[j] && vv_get(&s->w[j].ctx, s->w[i].id) >= s->w[i].k)
        live[i] = false;
  }
  PCHECK(c->nanon == 0, c, NULL, NULL);
  for (size_t i = 0; i < c->nent; i++) {
    const kv_dvv_entry *e = &c->ent[i];
    for (size_t j = 0; j < e->nvals; j++) {
      const kv_value *v = &e->vals[j];
      PCHECK(v->data.len >= 2 && v->data.data[0] == 'w', c, NULL, NULL);
      size_t idx = 0;
      for (size_t k = 1; k < v->data.len; k++)
        idx = idx * 10 + (size_t)(v->data.data[k] - '0');
      PCHECK(idx < s->nw && live[idx] && !seen[idx], c, NULL, NULL);
      PCHECK(s->w[idx].id == e->id && s->w[idx].k == e->n - j, c, NULL, NULL);
      seen[idx] = true;
    }
  }
  for (size_t i = 0; i < s->nw; i++)
    PCHECK(!live[i] || seen[i], c, NULL, NULL);
}

static void replace(kv_dvv *dst, kv_dvv *src) {
  kv_dvv_fini(dst);
  *dst = *src;
}

static void sim_put(sim *s) {
  size_t c = below(&s->r, NCLI), r = below(&s->r, s->nrep);
  char name[16];
  int len = snprintf(name, sizeof name, "w%zu", s->nw);
  kv_value v = {kv_buf_dup(name, (size_t)len), below(&s->r, 4),
                chance(&s->r, 12)};
  bool with_ctx = s->has_ctx[c] && chance(&s->r, 75);
  kv_vv none = {0, NULL};
  kv_dvv client, next;
  kv_dvv_new(&client,
             with_ctx            ? &s->ctx[c]
             : chance(&s->r, 50) ? &none
                                 : NULL,
             &v, 1);
  bool no_server =
      s->rep[r].nent == 0 && s->rep[r].nanon == 0 && chance(&s->r, 50);
  kv_dvv_update(&next, &client, no_server ? NULL : &s->rep[r], s->ids[r]);
  PCHECK(kv_dvv_valid(&next), &next, &client, &s->rep[r]);
  PCHECK(kv_dvv_less(&s->rep[r], &next), &s->rep[r], &next, NULL);
  PCHECK(kv_dvv_less(&client, &next), &client, &next, NULL);
  const kv_dvv_entry *e = find_entry(&next, s->ids[r]);
  PCHECK(e && e->nvals >= 1 && same_value(&e->vals[0], &v), &next, NULL, NULL);
  sim_write *w = &s->w[s->nw++];
  w->id = s->ids[r];
  w->k = e->n;
  if (with_ctx)
    kv_vv_copy(&w->ctx, &s->ctx[c]);
  else
    w->ctx = none;
  if (chance(&s->r, 50)) {
    kv_vv_fini(&s->ctx[c]);
    s->has_ctx[c] = false;
  }
  replace(&s->rep[r], &next);
  kv_dvv_fini(&client);
  kv_value_fini(&v);
  if (!s->anon) check_model(s, &s->rep[r]);
  remember(s, &s->rep[r]);
}

static void sim_get(sim *s) {
  size_t c = below(&s->r, NCLI), r1 = below(&s->r, s->nrep),
         r2 = below(&s->r, s->nrep);
  kv_vv_fini(&s->ctx[c]);
  if (chance(&s->r, 50)) {
    kv_dvv_join(&s->rep[r1], &s->ctx[c]);
  } else {
    kv_dvv both;
    kv_dvv_sync(&both, &s->rep[r1], &s->rep[r2]);
    kv_dvv_join(&both, &s->ctx[c]);
    kv_dvv_fini(&both);
  }
  s->has_ctx[c] = true;
}

static void sim_sync(sim *s) {
  size_t r1 = below(&s->r, s->nrep), r2 = below(&s->r, s->nrep);
  kv_dvv next;
  if (chance(&s->r, 50))
    kv_dvv_sync(&next, &s->rep[r1], &s->rep[r2]);
  else
    kv_dvv_sync(&next, &s->rep[r2], &s->rep[r1]);
  PCHECK(kv_dvv_valid(&next), &next, &s->rep[r1], &s->rep[r2]);
  replace(&s->rep[r1], &next);
  if (!s->anon) check_model(s, &s->rep[r1]);
  remember(s, &s->rep[r1]);
}

/* A deterministic reconcile: the greatest value under kv_value_cmp, marked
 * with an 'm' in front. */
static void merge_fn(const kv_value **vals, size_t n, kv_value *result,
                     void *arg) {
  (void)arg;
  const kv_value *best = NULL;
  for (size_t i = 0; i < n; i++)
    if (!best || kv_value_cmp(best, vals[i]) < 0) best = vals[i];
  uint8_t buf[64] = {'m'};
  size_t len = 1;
  if (best) {
    len += best->data.len < 63 ? best->data.len : 63;
    memcpy(buf + 1, best->data.data, len - 1);
  }
  *result = (kv_value){kv_buf_dup(buf, len), best ? best->ts : 0,
                       best && best->tombstone};
}

static void sim_collapse(sim *s) {
  size_t r = below(&s->r, s->nrep);
  kv_dvv next;
  size_t want = 1;
  if (chance(&s->r, 50)) {
    kv_dvv_reconcile(&next, &s->rep[r], merge_fn, NULL);
  } else {
    kv_dvv_lww(&next, &s->rep[r], le_ts, NULL);
    if (kv_dvv_size(&s->rep[r]) == 0) want = 0;
  }
  PCHECK(kv_dvv_valid(&next), &next, &s->rep[r], NULL);
  PCHECK(kv_dvv_size(&next) == want, &next, &s->rep[r], NULL);
  PCHECK(same_join(&next, &s->rep[r]), &next, &s->rep[r], NULL);
  replace(&s->rep[r], &next);
  remember(s, &s->rep[r]);
}

static void sim_run(sim *s) {
  size_t ops = 1 + below(&s->r, MAXOPS);
  for (size_t i = 0; i < ops; i++) {
    size_t p = below(&s->r, 100);
    if (p < 45)
      sim_put(s);
    else if (p < 65)
      sim_get(s);
    else if (!s->anon || p < 88)
      sim_sync(s);
    else
      sim_collapse(s);
  }
}

static const kv_dvv *pick(sim *s, const kv_dvv *empty) {
  size_t k = below(&s->r, s->npool + s->nrep + 1);
  if (k < s->npool) return &s->pool[k];
  if (k < s->npool + s->nrep) return &s->rep[k - s->npool];
  return empty;
}

/* sync's laws and less/equal against the model, on three clocks of one
 * history (dots are unique within it, as in a real cluster). */
static void check_laws(sim *s, const kv_dvv *a, const kv_dvv *b,
                       const kv_dvv *c) {
  kv_dvv ab, ba, aa, bc, ab_c, a_bc;
  kv_dvv_sync(&ab, a, b);
  kv_dvv_sync(&ba, b, a);
  PCHECK(same(&ab, &ba), a, b, NULL);
  PCHECK(kv_dvv_valid(&ab), a, b, NULL);
  PCHECK(join_is_max(&ab, a, b), a, b, &ab);

  kv_dvv_sync(&aa, a, a);
  PCHECK(same(&aa, a), a, NULL, NULL);

  kv_dvv_sync(&bc, b, c);
  kv_dvv_sync(&ab_c, &ab, c);
  kv_dvv_sync(&a_bc, a, &bc);
  PCHECK(kv_dvv_valid(&ab_c) && kv_dvv_valid(&a_bc), a, b, c);
  if (s->anon)
    PCHECK(same_entries(&ab_c, &a_bc), a, b, c);
  else
    PCHECK(same(&ab_c, &a_bc), a, b, c);

  bool less = kv_dvv_less(a, b), equal = kv_dvv_equal(a, b);
  PCHECK(less == model_less(a, b), a, b, NULL);
  PCHECK(equal == model_equal(a, b), a, b, NULL);
  PCHECK(!(less && kv_dvv_less(b, a)), a, b, NULL);
  PCHECK(!(equal && less), a, b, NULL);
  PCHECK(!kv_dvv_less(&ab, a) && !kv_dvv_less(&ab, b), a, b, &ab);
  if (!s->anon) {
    /* Without stored reconciles a clock is a function of the events it
     * knows, so equal histories mean equal clocks and a dominated clock adds
     * nothing to a sync. */
    if (same_join(a, b)) PCHECK(same(a, b), a, b, NULL);
    if (less) PCHECK(same(&ab, b), a, b, &ab);
  }
  fini_all((kv_dvv[]){ab, ba, aa, bc, ab_c, a_bc}, 6);
}

/* Syncs every replica into one clock, in a random order. */
static void sync_all(sim *s, kv_dvv *out) {
  size_t order[NREP];
  for (size_t i = 0; i < s->nrep; i++)
    order[i] = i;
  for (size_t i = s->nrep; i > 1; i--) {
    size_t j = below(&s->r, i), t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  kv_dvv_init(out);
  for (size_t i = 0; i < s->nrep; i++) {
    kv_dvv next;
    kv_dvv_sync(&next, out, &s->rep[order[i]]);
    replace(out, &next);
  }
}

static void run_sims(const char *name, bool anon, unsigned long cases) {
  prng r = prop_prng(name);
  g_prop = name;
  kv_dvv empty;
  kv_dvv_init(&empty);
  for (g_case = 0; g_case < cases; g_case++) {
    sim s;
    sim_init(&s, (prng){rnd(&r)}, anon);
    sim_run(&s);
    for (int t = 0; t < 3; t++)
      check_laws(&s, pick(&s, &empty), pick(&s, &empty), pick(&s, &empty));

    kv_dvv all, again;
    sync_all(&s, &all);
    sync_all(&s, &again);
    PCHECK(kv_dvv_valid(&all), &all, NULL, NULL);
    if (anon) {
      /* Anonymous lists depend on the order of the syncs (see
       * test_dvv_sync_anon_grouping); one more sync of the two results
       * unites them, and that is a fixpoint. */
      PCHECK(same_entries(&all, &again), &all, &again, NULL);
      kv_dvv u, u2;
      kv_dvv_sync(&u, &all, &again);
      kv_dvv_sync(&u2, &u, &s.rep[below(&s.r, s.nrep)]);
      PCHECK(same(&u, &u2), &u, &u2, NULL);
      kv_dvv_fini(&u);
      kv_dvv_fini(&u2);
    } else {
      PCHECK(same(&all, &again), &all, &again, NULL);
    }
    if (!anon) {
      /* After a full sync every write is known, so the model reduces to:
       * present exactly when no write's context covered its dot. */
      for (size_t i = 0; i < s.nw; i++) {
        const kv_dvv_entry *e = find_entry(&all, s.w[i].id);
        PCHECK(e && e->n >= s.w[i].k, &all, NULL, NULL);
      }
      check_model(&s, &all);
    }
    kv_dvv_fini(&all);
    kv_dvv_fini(&again);
    sim_fini(&s);
  }
}

static void test_dvv_prop_writes_and_laws(void **state) {
  (void)state;
  run_sims("test_dvv_prop_writes_and_laws", false, 40000);
}

static void test_dvv_prop_laws_with_anon(void **state) {
  (void)state;
  run_sims("test_dvv_prop_laws_with_anon", true, 30000);
}

/* new() on random contexts and value lists: entries strictly increasing with
 * the max counter per id, anon the sorted set of the given values. */
static void test_dvv_prop_new_canonical(void **state) {
  (void)state;
  prng r = prop_prng("test_dvv_prop_new_canonical");
  g_prop = "test_dvv_prop_new_canonical";
  for (g_case = 0; g_case < 10000; g_case++) {
    kv_vv_entry e[8];
    size_t ne = below(&r, 9), nv = below(&r, 9);
    for (size_t i = 0; i < ne; i++)
      e[i] = (kv_vv_entry){below(&r, 6), below(&r, 4)};
    kv_vv vv = {ne, e};
    kv_value v[8];
    for (size_t i = 0; i < nv; i++) {
      char b[2] = {(char)('a' + below(&r, 3)), (char)('a' + below(&r, 2))};
      v[i] =
          (kv_value){kv_buf_dup(b, below(&r, 3)), below(&r, 2), chance(&r, 20)};
    }
    kv_dvv c;
    kv_dvv_new(&c, chance(&r, 80) ? &vv : NULL, v, nv);
    PCHECK(kv_dvv_valid(&c), &c, NULL, NULL);
    for (size_t i = 0; i < c.nent; i++) {
      uint64_t max = 0;
      bool found = false;
      for (size_t j = 0; j < ne; j++)
        if (e[j].id == c.ent[i].id) {
          found = true;
          if (e[j].n > max) max = e[j].n;
        }
      PCHECK(found && max == c.ent[i].n && c.ent[i].nvals == 0, &c, NULL, NULL);
    }
    size_t distinct = 0;
    for (size_t i = 0; i < nv; i++) {
      bool first = true;
      for (size_t j = 0; j < i; j++)
        first = first && kv_value_cmp(&v[i], &v[j]) != 0;
      distinct += first;
      bool present = false;
      for (size_t j = 0; j < c.nanon; j++)
        present = present || same_value(&c.anon[j], &v[i]);
      PCHECK(present, &c, NULL, NULL);
    }
    PCHECK(c.nanon == distinct, &c, NULL, NULL);
    kv_dvv_fini(&c);
    for (size_t i = 0; i < nv; i++)
      kv_value_fini(&v[i]);
  }
}

int main(void) {
  g_seed = test_seed("dvv_test");

  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dvv_vector_update_without_server),
      cmocka_unit_test(test_dvv_vector_update_drops_seen_value),
      cmocka_unit_test(test_dvv_vector_update_new_id_obsoletes),
      cmocka_unit_test(test_dvv_vector_update_concurrent_other_id),
      cmocka_unit_test(test_dvv_vector_update_concurrent_same_id),
      cmocka_unit_test(test_dvv_vector_mary_peter),
      cmocka_unit_test(test_dvv_vector_sync_drops_obsolete),
      cmocka_unit_test(test_dvv_vector_sync_disjoint_ids),
      cmocka_unit_test(test_dvv_vector_reconcile_sum),
      cmocka_unit_test(test_dvv_vector_last_heads_only),
      cmocka_unit_test(test_dvv_vector_lww_anon_winner),
      cmocka_unit_test(test_dvv_vector_equal_ignores_values),
      cmocka_unit_test(test_dvv_eunit_join),
      cmocka_unit_test(test_dvv_eunit_event),
      cmocka_unit_test(test_dvv_eunit_sync),
      cmocka_unit_test(test_dvv_eunit_lww_last),
      cmocka_unit_test(test_dvv_eunit_reconcile),
      cmocka_unit_test(test_dvv_value_cmp_order),
      cmocka_unit_test(test_dvv_value_copy_is_deep),
      cmocka_unit_test(test_dvv_new_sorts_and_dedups),
      cmocka_unit_test(test_dvv_new_repeated_id_keeps_max),
      cmocka_unit_test(test_dvv_join_and_vv),
      cmocka_unit_test(test_dvv_values_and_size),
      cmocka_unit_test(test_dvv_less),
      cmocka_unit_test(test_dvv_equal),
      cmocka_unit_test(test_dvv_sync_with_empty),
      cmocka_unit_test(test_dvv_sync_anon_rule),
      cmocka_unit_test(test_dvv_sync_anon_grouping),
      cmocka_unit_test(test_dvv_sync_leaves_inputs),
      cmocka_unit_test(test_dvv_sync_merge_entry),
      cmocka_unit_test(test_dvv_copy_is_deep),
      cmocka_unit_test(test_dvv_valid_accepts),
      cmocka_unit_test(test_dvv_valid_rejects),
      cmocka_unit_test(test_dvv_last_empty_and_ties),
      cmocka_unit_test(test_dvv_reconcile_sees_all_values),
      cmocka_unit_test(test_dvv_update_anon_survival),
      cmocka_unit_test(test_dvv_update_context_ahead_of_server),
      cmocka_unit_test(test_dvv_update_requires_one_anon),
      cmocka_unit_test(test_dvv_prop_writes_and_laws),
      cmocka_unit_test(test_dvv_prop_laws_with_anon),
      cmocka_unit_test(test_dvv_prop_new_canonical),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
