/*
 * Dotted version vector sets, following Riak's dvvset.erl operation by
 * operation (reference/riak.md §1.3). Every function builds its result in
 * fresh memory and never writes to its inputs. Entries and anonymous lists are
 * kept sorted, so sync and less are linear merges of sorted lists and equal
 * states have equal representations. Empty arrays are stored as NULL.
 */
#include "crdt/dvv.h"

#include <stdlib.h>
#include <string.h>

#include "proto/kv_err.h"

/* ---- values ---- */

int kv_value_cmp(const kv_value *a, const kv_value *b) {
  if (a->tombstone != b->tombstone) return a->tombstone ? 1 : -1;
  int c = kv_buf_cmp(a->data.data, a->data.len, b->data.data, b->data.len);
  if (c != 0) return c;
  return a->ts < b->ts ? -1 : a->ts > b->ts ? 1 : 0;
}

void kv_value_copy(kv_value *dst, const kv_value *src) {
  dst->data = kv_buf_dup(src->data.data, src->data.len);
  dst->ts = src->ts;
  dst->tombstone = src->tombstone;
}

void kv_value_fini(kv_value *v) {
  if (!v) return;
  kv_buf_free(&v->data);
}

static kv_value *values_dup(const kv_value *src, size_t n) {
  if (n == 0) return NULL;
  kv_value *v = kv_malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++)
    kv_value_copy(&v[i], &src[i]);
  return v;
}

static void values_free(kv_value *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    kv_value_fini(&v[i]);
  free(v);
}

static int value_qsort_cmp(const void *a, const void *b) {
  return kv_value_cmp(a, b);
}

/* Sorts v[0..n) and drops duplicates in place (freeing them); returns the new
 * length. Values equal under kv_value_cmp are identical in every field, so it
 * does not matter which copy survives. */
static size_t values_canonicalise(kv_value *v, size_t n) {
  bool sorted = true;
  for (size_t i = 1; i < n && sorted; i++)
    sorted = kv_value_cmp(&v[i - 1], &v[i]) < 0;
  if (sorted) return n;
  qsort(v, n, sizeof *v, value_qsort_cmp);
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w > 0 && kv_value_cmp(&v[w - 1], &v[i]) == 0)
      kv_value_fini(&v[i]);
    else
      v[w++] = v[i];
  }
  return w;
}

/* ---- version vectors ---- */

void kv_vv_fini(kv_vv *vv) {
  if (!vv) return;
  free(vv->e);
  vv->e = NULL;
  vv->n = 0;
}

void kv_vv_copy(kv_vv *dst, const kv_vv *src) {
  dst->n = src->n;
  dst->e = NULL;
  if (src->n) {
    dst->e = kv_malloc(src->n * sizeof *dst->e);
    memcpy(dst->e, src->e, src->n * sizeof *dst->e);
  }
}

bool kv_vv_valid(const kv_vv *vv) {
  if (vv->n > 0 && !vv->e) return false;
  for (size_t i = 1; i < vv->n; i++)
    if (vv->e[i - 1].id >= vv->e[i].id) return false;
  return true;
}

/* ---- clocks ---- */

void kv_dvv_init(kv_dvv *c) {
  c->nent = 0;
  c->ent = NULL;
  c->nanon = 0;
  c->anon = NULL;
}

void kv_dvv_fini(kv_dvv *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nent; i++)
    values_free(c->ent[i].vals, c->ent[i].nvals);
  free(c->ent);
  values_free(c->anon, c->nanon);
  kv_dvv_init(c);
}

/* dst gets src's id and counter and its first k values. */
static void entry_copy_prefix(kv_dvv_entry *dst, const kv_dvv_entry *src,
                              size_t k) {
  dst->id = src->id;
  dst->n = src->n;
  dst->nvals = k;
  dst->vals = values_dup(src->vals, k);
}

void kv_dvv_copy(kv_dvv *dst, const kv_dvv *src) {
  kv_dvv_init(dst);
  if (src->nent) {
    dst->ent = kv_malloc(src->nent * sizeof *dst->ent);
    for (size_t i = 0; i < src->nent; i++)
      entry_copy_prefix(&dst->ent[i], &src->ent[i], src->ent[i].nvals);
    dst->nent = src->nent;
  }
  dst->anon = values_dup(src->anon, src->nanon);
  dst->nanon = src->nanon;
}

static int vv_entry_cmp(const void *a, const void *b) {
  uint64_t x = ((const kv_vv_entry *)a)->id, y = ((const kv_vv_entry *)b)->id;
  return x < y ? -1 : x > y ? 1 : 0;
}

/* The entries of new(vv, _): (i, n, []) for each (i, n), in id order. A vv
 * that repeats an id is not a join() result; keeping the largest counter for
 * it is what join would have said about a clock holding all those events, and
 * it keeps the ids strictly increasing. */
static void entries_from_vv(kv_dvv *out, const kv_vv_entry *e, size_t n) {
  if (n == 0) return;
  kv_vv_entry *s = kv_malloc(n * sizeof *s);
  memcpy(s, e, n * sizeof *s);
  bool sorted = true;
  for (size_t i = 1; i < n && sorted; i++)
    sorted = s[i - 1].id < s[i].id;
  if (!sorted) qsort(s, n, sizeof *s, vv_entry_cmp);
  out->ent = kv_malloc(n * sizeof *out->ent);
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w > 0 && out->ent[w - 1].id == s[i].id) {
      if (s[i].n > out->ent[w - 1].n) out->ent[w - 1].n = s[i].n;
      continue;
    }
    out->ent[w++] = (kv_dvv_entry){s[i].id, s[i].n, 0, NULL};
  }
  out->nent = w;
  free(s);
}

/* The entries of new(join(c), _), without building the vector in between. */
static void entries_from_join(kv_dvv *out, const kv_dvv *c) {
  if (c->nent == 0) return;
  out->ent = kv_malloc(c->nent * sizeof *out->ent);
  for (size_t i = 0; i < c->nent; i++)
    out->ent[i] = (kv_dvv_entry){c->ent[i].id, c->ent[i].n, 0, NULL};
  out->nent = c->nent;
}

void kv_dvv_new(kv_dvv *out, const kv_vv *vv, const kv_value *vals,
                size_t nvals) {
  kv_dvv_init(out);
  if (vv) entries_from_vv(out, vv->e, vv->n);
  out->anon = values_dup(vals, nvals);
  out->nanon = values_canonicalise(out->anon, nvals);
}

void kv_dvv_join(const kv_dvv *c, kv_vv *out) {
  out->n = c->nent;
  out->e = NULL;
  if (c->nent == 0) return;
  out->e = kv_malloc(c->nent * sizeof *out->e);
  for (size_t i = 0; i < c->nent; i++)
    out->e[i] = (kv_vv_entry){c->ent[i].id, c->ent[i].n};
}

size_t kv_dvv_size(const kv_dvv *c) {
  size_t n = c->nanon;
  for (size_t i = 0; i < c->nent; i++)
    n += c->ent[i].nvals;
  return n;
}

size_t kv_dvv_values(const kv_dvv *c, const kv_value **out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < c->nanon; i++, n++)
    if (n < cap) out[n] = &c->anon[i];
  for (size_t i = 0; i < c->nent; i++)
    for (size_t j = 0; j < c->ent[i].nvals; j++, n++)
      if (n < cap) out[n] = &c->ent[i].vals[j];
  return n;
}

/* greater(b, a) of dvvset.erl: one walk over both sorted entry lists. An id
 * that only b has makes b strictly greater whatever its counter, zero
 * included; an id only a has, or a larger counter in a, rules it out. */
bool kv_dvv_less(const kv_dvv *a, const kv_dvv *b) {
  size_t i = 0, j = 0;
  bool strict = false;
  while (i < a->nent && j < b->nent) {
    const kv_dvv_entry *ea = &a->ent[i], *eb = &b->ent[j];
    if (ea->id == eb->id) {
      if (eb->n < ea->n) return false;
      if (eb->n > ea->n) strict = true;
      i++;
      j++;
    } else if (eb->id < ea->id) {
      strict = true;
      j++;
    } else {
      return false;
    }
  }
  if (i < a->nent) return false;
  return strict || j < b->nent;
}

bool kv_dvv_equal(const kv_dvv *a, const kv_dvv *b) {
  if (a->nent != b->nent) return false;
  for (size_t i = 0; i < a->nent; i++) {
    const kv_dvv_entry *x = &a->ent[i], *y = &b->ent[i];
    if (x->id != y->id || x->n != y->n || x->nvals != y->nvals) return false;
  }
  return true;
}

/* merge of dvvset.erl for one id present on both sides. The side with the
 * larger counter (the first side on a tie, as in the reference) keeps its
 * values, minus those whose dot the other side already holds as obsolete:
 * everything at or below lo->n - lo->nvals. The other side's values are all
 * at dots <= lo->n <= hi->n, so they are either among those kept or obsolete.
 * On valid clocks the count kept, hi->n - lo->n + lo->nvals, is below
 * hi->nvals whenever this branch is reached; the min is what stops a clock
 * that breaks nvals <= n from reading past its array. */
static void merge_entry(kv_dvv_entry *dst, const kv_dvv_entry *e1,
                        const kv_dvv_entry *e2) {
  const kv_dvv_entry *hi = e1, *lo = e2;
  if (e2->n > e1->n) {
    hi = e2;
    lo = e1;
  }
  if (hi->n - hi->nvals >= lo->n - lo->nvals) {
    entry_copy_prefix(dst, hi, hi->nvals);
    return;
  }
  uint64_t keep = hi->n - lo->n + lo->nvals;
  entry_copy_prefix(dst, hi, keep < hi->nvals ? (size_t)keep : hi->nvals);
}

/* set_union of two canonical anonymous lists as one sorted merge, so the
 * result is canonical too. */
static void anon_union(kv_dvv *out, const kv_dvv *a, const kv_dvv *b) {
  size_t cap = a->nanon + b->nanon, n = 0, i = 0, j = 0;
  if (cap == 0) return;
  kv_value *v = kv_malloc(cap * sizeof *v);
  while (i < a->nanon || j < b->nanon) {
    int c = i == a->nanon   ? 1
            : j == b->nanon ? -1
                            : kv_value_cmp(&a->anon[i], &b->anon[j]);
    if (c <= 0) {
      kv_value_copy(&v[n++], &a->anon[i++]);
      if (c == 0) j++;
    } else {
      kv_value_copy(&v[n++], &b->anon[j++]);
    }
  }
  out->anon = v;
  out->nanon = n;
}

/* Which list holds the next id of the merge walk at a->ent[i], b->ent[j]
 * (not both exhausted): -1 only a, 1 only b, 0 both. */
static int side(const kv_dvv *a, size_t i, const kv_dvv *b, size_t j) {
  if (j == b->nent) return -1;
  if (i == a->nent) return 1;
  uint64_t x = a->ent[i].id, y = b->ent[j].id;
  return x < y ? -1 : x > y ? 1 : 0;
}

void kv_dvv_sync(kv_dvv *out, const kv_dvv *a, const kv_dvv *b) {
  kv_dvv_init(out);

  if (kv_dvv_less(a, b)) {
    out->anon = values_dup(b->anon, b->nanon);
    out->nanon = b->nanon;
  } else if (kv_dvv_less(b, a)) {
    out->anon = values_dup(a->anon, a->nanon);
    out->nanon = a->nanon;
  } else {
    anon_union(out, a, b);
  }

  /* Count the distinct ids first so the stored clock is exactly sized. */
  size_t n = 0, i = 0, j = 0;
  while (i < a->nent || j < b->nent) {
    int s = side(a, i, b, j);
    i += s <= 0;
    j += s >= 0;
    n++;
  }
  if (n == 0) return;
  out->ent = kv_malloc(n * sizeof *out->ent);
  i = j = 0;
  for (size_t k = 0; k < n; k++) {
    int s = side(a, i, b, j);
    if (s < 0)
      entry_copy_prefix(&out->ent[k], &a->ent[i], a->ent[i].nvals);
    else if (s > 0)
      entry_copy_prefix(&out->ent[k], &b->ent[j], b->ent[j].nvals);
    else
      merge_entry(&out->ent[k], &a->ent[i], &b->ent[j]);
    i += s <= 0;
    j += s >= 0;
  }
  out->nent = n;
}

/* event(E, id, v) in place on a clock this module owns: v (whose bytes move
 * into c) becomes the newest value of id's entry, whose counter goes up by
 * one, or the only value of a new entry (id, 1, [v]). */
static void event(kv_dvv *c, uint64_t id, kv_value v) {
  size_t lo = 0, hi = c->nent;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->ent[mid].id < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < c->nent && c->ent[lo].id == id) {
    kv_dvv_entry *e = &c->ent[lo];
    e->vals = kv_realloc(e->vals, (e->nvals + 1) * sizeof *e->vals);
    memmove(&e->vals[1], &e->vals[0], e->nvals * sizeof *e->vals);
    e->vals[0] = v;
    e->nvals++;
    e->n++;
    return;
  }
  c->ent = kv_realloc(c->ent, (c->nent + 1) * sizeof *c->ent);
  memmove(&c->ent[lo + 1], &c->ent[lo], (c->nent - lo) * sizeof *c->ent);
  c->ent[lo] = (kv_dvv_entry){id, 1, 1, kv_malloc(sizeof(kv_value))};
  c->ent[lo].vals[0] = v;
  c->nent++;
}

void kv_dvv_update(kv_dvv *out, const kv_dvv *client, const kv_dvv *server,
                   uint64_t id) {
  kv_assert(client->nanon == 1);
  /* The client's history without its new value: update/3 syncs exactly
   * this with the server clock, update/2 uses it as it is. */
  kv_dvv history = *client;
  history.nanon = 0;
  history.anon = NULL;
  if (server)
    kv_dvv_sync(out, &history, server);
  else
    kv_dvv_copy(out, &history);
  kv_value v;
  kv_value_copy(&v, &client->anon[0]);
  event(out, id, v);
}

void kv_dvv_reconcile(kv_dvv *out, const kv_dvv *c, kv_dvv_reconcile_fn f,
                      void *arg) {
  size_t n = kv_dvv_size(c);
  const kv_value **vals = kv_malloc(n * sizeof *vals);
  kv_dvv_values(c, vals, n);
  kv_value result = {{NULL, 0}, 0, false};
  f(vals, n, &result, arg);
  free(vals);
  kv_dvv_init(out);
  entries_from_join(out, c);
  out->anon = kv_malloc(sizeof *out->anon);
  out->anon[0] = result;
  out->nanon = 1;
}

/* find_entry of dvvset.erl: the winner and the index of the entry it heads,
 * or c->nent when it is anonymous. */
static const kv_value *find_last(const kv_dvv *c, kv_dvv_le_fn le, void *arg,
                                 size_t *where) {
  const kv_value *best = NULL;
  *where = c->nent;
  for (size_t i = 0; i < c->nent; i++) {
    if (c->ent[i].nvals == 0) continue;
    const kv_value *cand = &c->ent[i].vals[0];
    if (!best || le(best, cand, arg)) {
      best = cand;
      *where = i;
    }
  }
  for (size_t i = 0; i < c->nanon; i++) {
    const kv_value *cand = &c->anon[i];
    if (!best || le(best, cand, arg)) {
      best = cand;
      *where = c->nent;
    }
  }
  return best;
}

const kv_value *kv_dvv_last(const kv_dvv *c, kv_dvv_le_fn le, void *arg) {
  size_t where;
  return find_last(c, le, arg, &where);
}

void kv_dvv_lww(kv_dvv *out, const kv_dvv *c, kv_dvv_le_fn le, void *arg) {
  size_t where;
  const kv_value *win = find_last(c, le, arg, &where);
  if (!win) {
    kv_dvv_copy(out, c);
    return;
  }
  kv_dvv_init(out);
  entries_from_join(out, c);
  if (where < c->nent) {
    kv_dvv_entry *e = &out->ent[where];
    e->vals = values_dup(win, 1);
    e->nvals = 1;
  } else {
    out->anon = values_dup(win, 1);
    out->nanon = 1;
  }
}

static bool value_valid(const kv_value *v) {
  return v->data.len == 0 || v->data.data != NULL;
}

bool kv_dvv_valid(const kv_dvv *c) {
  if ((c->nent > 0 && !c->ent) || (c->nanon > 0 && !c->anon)) return false;
  for (size_t i = 0; i < c->nent; i++) {
    const kv_dvv_entry *e = &c->ent[i];
    if (i > 0 && c->ent[i - 1].id >= e->id) return false;
    if (e->nvals > e->n) return false;
    if (e->nvals > 0 && !e->vals) return false;
    for (size_t j = 0; j < e->nvals; j++)
      if (!value_valid(&e->vals[j])) return false;
  }
  for (size_t i = 0; i < c->nanon; i++) {
    if (!value_valid(&c->anon[i])) return false;
    if (i > 0 && kv_value_cmp(&c->anon[i - 1], &c->anon[i]) >= 0) return false;
  }
  return true;
}
