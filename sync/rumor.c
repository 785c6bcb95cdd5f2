/*
 * The hot set is one allocation per rumor (header, then key, then object
 * bytes) threaded through four structures: a chained hash table by key, a
 * list in add order (oldest first, for eviction and for deterministic
 * processing), and exactly one of the ready list (due at the next tick) or
 * the deadline heap (a round in flight, keyed by (deadline, seq)), except
 * inside kv_rumor_tick. So a tick touches only due rumors, and every removal
 * is O(1) or O(log n).
 * Invariants: bytes is the sum of key+object lengths and never exceeds
 * max_bytes; count never exceeds max_rumors; a rumor's `pending` is the
 * number of peers of its latest round that have not acked.
 */
#include "sync/rumor.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/buf.h"
#include "proto/kv_err.h"

#define NO_HEAP SIZE_MAX
#define MIN_BUCKETS 64

/* One peer this version was pushed to: in which round, and whether it has
 * acked (a second ack from it is a duplicate and is ignored). */
typedef struct target {
  uint64_t peer;
  uint32_t round;
  bool acked;
} target;

typedef struct rumor {
  struct rumor *hnext;         /* hash chain */
  struct rumor *older, *newer; /* add order */
  struct rumor *rprev, *rnext; /* ready list, when ready */
  uint64_t hash, seq, from;
  uint64_t due;  /* ready: when it became due; else its round's deadline */
  size_t heap_i; /* index in the heap, else NO_HEAP */
  bool ready;
  uint32_t rounds;   /* push rounds done */
  uint32_t not_news; /* not-news acks received */
  uint32_t pending;  /* acks outstanding in round `rounds` */
  target *sent;
  uint32_t nsent, capsent;
  uint8_t digest[16];
  size_t keylen, objlen;
  uint8_t data[]; /* key, then object */
} rumor;

struct kv_rumor {
  kv_rumor_opts o;
  rumor **buckets;
  size_t nbuckets, count, bytes;
  rumor *oldest, *newest;
  rumor *ready_head, *ready_tail;
  uint64_t ready_min; /* <= every ready rumor's due (equal unless removed) */
  rumor **heap;
  size_t heap_len, heap_cap;
  rumor **due; /* tick scratch */
  size_t due_cap;
  uint64_t *cand; /* tick scratch */
  size_t cand_cap;
  uint64_t next_seq;
  bool in_tick;
  kv_rumor_stats st;
};

kv_rumor *kv_rumor_new(const kv_rumor_opts *o) {
  kv_rumor *r = kv_calloc(1, sizeof *r);
  if (o) r->o = *o;
  if (!r->o.fanout) r->o.fanout = KV_RUMOR_DEFAULT_FANOUT;
  if (!r->o.k) r->o.k = KV_RUMOR_DEFAULT_K;
  if (!r->o.max_rounds) r->o.max_rounds = KV_RUMOR_DEFAULT_MAX_ROUNDS;
  if (!r->o.ack_timeout_ms)
    r->o.ack_timeout_ms = KV_RUMOR_DEFAULT_ACK_TIMEOUT_MS;
  if (!r->o.max_rumors) r->o.max_rumors = KV_RUMOR_DEFAULT_MAX_RUMORS;
  if (!r->o.max_bytes) r->o.max_bytes = KV_RUMOR_DEFAULT_MAX_BYTES;
  /* Rounds are counted in 32 bits; more than that many rounds is no rumor. */
  if (r->o.max_rounds > UINT32_MAX / 2) r->o.max_rounds = UINT32_MAX / 2;
  r->nbuckets = MIN_BUCKETS;
  r->buckets = kv_calloc(r->nbuckets, sizeof *r->buckets);
  return r;
}

kv_rumor_opts kv_rumor_opts_get(const kv_rumor *r) { return r->o; }

static void rumor_destroy(rumor *x) {
  free(x->sent);
  free(x);
}

void kv_rumor_free(kv_rumor *r) {
  if (!r) return;
  kv_assert(!r->in_tick);
  for (rumor *x = r->oldest, *next; x; x = next) {
    next = x->newer;
    rumor_destroy(x);
  }
  free(r->buckets);
  free(r->heap);
  free(r->due);
  free(r->cand);
  free(r);
}

/* ---- hash table ---- */

static rumor *lookup(const kv_rumor *r, const uint8_t *key, size_t keylen,
                     uint64_t h) {
  for (rumor *x = r->buckets[h & (r->nbuckets - 1)]; x; x = x->hnext)
    if (x->hash == h && x->keylen == keylen &&
        (keylen == 0 || memcmp(x->data, key, keylen) == 0))
      return x;
  return NULL;
}

static void hash_grow(kv_rumor *r) {
  size_t n = r->nbuckets * 2;
  rumor **b = kv_calloc(n, sizeof *b);
  for (size_t i = 0; i < r->nbuckets; i++) {
    for (rumor *x = r->buckets[i], *next; x; x = next) {
      next = x->hnext;
      rumor **slot = &b[x->hash & (n - 1)];
      x->hnext = *slot;
      *slot = x;
    }
  }
  free(r->buckets);
  r->buckets = b;
  r->nbuckets = n;
}

static void hash_insert(kv_rumor *r, rumor *x) {
  if (r->count >= r->nbuckets) hash_grow(r);
  rumor **slot = &r->buckets[x->hash & (r->nbuckets - 1)];
  x->hnext = *slot;
  *slot = x;
}

static void hash_remove(kv_rumor *r, rumor *x) {
  rumor **p = &r->buckets[x->hash & (r->nbuckets - 1)];
  while (*p != x) {
    kv_assert(*p);
    p = &(*p)->hnext;
  }
  *p = x->hnext;
}

/* ---- deadline heap, ordered by (due, seq) so ties break by age ---- */

static bool heap_less(const rumor *a, const rumor *b) {
  return a->due != b->due ? a->due < b->due : a->seq < b->seq;
}

static void heap_set(kv_rumor *r, size_t i, rumor *x) {
  r->heap[i] = x;
  x->heap_i = i;
}

static void heap_up(kv_rumor *r, size_t i) {
  rumor *x = r->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(x, r->heap[p])) break;
    heap_set(r, i, r->heap[p]);
    i = p;
  }
  heap_set(r, i, x);
}

static void heap_down(kv_rumor *r, size_t i) {
  rumor *x = r->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= r->heap_len) break;
    if (c + 1 < r->heap_len && heap_less(r->heap[c + 1], r->heap[c])) c++;
    if (!heap_less(r->heap[c], x)) break;
    heap_set(r, i, r->heap[c]);
    i = c;
  }
  heap_set(r, i, x);
}

static void heap_push(kv_rumor *r, rumor *x) {
  if (r->heap_len == r->heap_cap) {
    r->heap_cap = r->heap_cap ? r->heap_cap * 2 : 64;
    r->heap = kv_realloc(r->heap, r->heap_cap * sizeof *r->heap);
  }
  heap_set(r, r->heap_len++, x);
  heap_up(r, x->heap_i);
}

static void heap_remove(kv_rumor *r, rumor *x) {
  size_t i = x->heap_i;
  kv_assert(i < r->heap_len && r->heap[i] == x);
  x->heap_i = NO_HEAP;
  rumor *last = r->heap[--r->heap_len];
  if (last == x) return;
  heap_set(r, i, last);
  heap_up(r, i);
  heap_down(r, last->heap_i);
}

/* ---- ready list ---- */

static void ready_append(kv_rumor *r, rumor *x, uint64_t now_ms) {
  x->ready = true;
  x->due = now_ms;
  if (!r->ready_head || now_ms < r->ready_min) r->ready_min = now_ms;
  x->rnext = NULL;
  x->rprev = r->ready_tail;
  if (r->ready_tail)
    r->ready_tail->rnext = x;
  else
    r->ready_head = x;
  r->ready_tail = x;
}

static void ready_remove(kv_rumor *r, rumor *x) {
  if (x->rprev)
    x->rprev->rnext = x->rnext;
  else
    r->ready_head = x->rnext;
  if (x->rnext)
    x->rnext->rprev = x->rprev;
  else
    r->ready_tail = x->rprev;
  x->rprev = x->rnext = NULL;
  x->ready = false;
}

/* ---- whole rumors ---- */

/* Unthreads x from everything and frees it. The caller counts why. */
static void rumor_remove(kv_rumor *r, rumor *x) {
  hash_remove(r, x);
  if (x->older)
    x->older->newer = x->newer;
  else
    r->oldest = x->newer;
  if (x->newer)
    x->newer->older = x->older;
  else
    r->newest = x->older;
  if (x->ready)
    ready_remove(r, x);
  else if (x->heap_i != NO_HEAP)
    heap_remove(r, x);
  r->count--;
  r->bytes -= x->keylen + x->objlen;
  rumor_destroy(x);
}

static void rumor_die(kv_rumor *r, rumor *x) {
  r->st.died++;
  rumor_remove(r, x);
}

static target *find_sent(const rumor *x, uint64_t peer) {
  for (uint32_t i = 0; i < x->nsent; i++)
    if (x->sent[i].peer == peer) return &x->sent[i];
  return NULL;
}

void kv_rumor_add(kv_rumor *r, const uint8_t *key, size_t keylen,
                  const uint8_t *obj, size_t objlen, const uint8_t digest[16],
                  uint64_t from, uint64_t now_ms) {
  kv_assert(!r->in_tick);
  r->st.added++;
  uint64_t h = XXH3_64bits(key, keylen);
  rumor *old = lookup(r, key, keylen, h);
  if (old) {
    r->st.replaced++;
    rumor_remove(r, old);
  }
  if (objlen > r->o.max_bytes || keylen > r->o.max_bytes - objlen) {
    r->st.dropped++;
    return;
  }
  size_t total = keylen + objlen;
  while (r->count >= r->o.max_rumors || total > r->o.max_bytes - r->bytes) {
    kv_assert(r->oldest);
    r->st.dropped++;
    rumor_remove(r, r->oldest);
  }

  rumor *x = kv_malloc(sizeof *x + total);
  memset(x, 0, sizeof *x);
  x->hash = h;
  x->seq = r->next_seq++;
  x->from = from;
  x->heap_i = NO_HEAP;
  memcpy(x->digest, digest, sizeof x->digest);
  x->keylen = keylen;
  x->objlen = objlen;
  if (keylen) memcpy(x->data, key, keylen);
  if (objlen) memcpy(x->data + keylen, obj, objlen);

  hash_insert(r, x);
  x->older = r->newest;
  if (r->newest)
    r->newest->newer = x;
  else
    r->oldest = x;
  r->newest = x;
  ready_append(r, x, now_ms);
  r->count++;
  r->bytes += total;
}

void kv_rumor_ack(kv_rumor *r, uint64_t peer, const uint8_t *key, size_t keylen,
                  const uint8_t digest[16], bool news, uint64_t now_ms) {
  kv_assert(!r->in_tick);
  rumor *x = lookup(r, key, keylen, XXH3_64bits(key, keylen));
  if (!x || memcmp(x->digest, digest, sizeof x->digest) != 0) return;
  target *s = find_sent(x, peer);
  if (!s || s->acked) return;
  s->acked = true;
  r->st.acks++;
  if (news) {
    r->st.news_acks++;
  } else if (++x->not_news >= r->o.k) {
    rumor_die(r, x);
    return;
  }
  /* Only the latest round holds the rumor back; an ack from a round that
   * already timed out still counted above but changes nothing here. */
  if (!x->ready && s->round == x->rounds) {
    kv_assert(x->pending > 0);
    if (--x->pending == 0) {
      heap_remove(r, x);
      ready_append(r, x, now_ms);
    }
  }
}

/* ---- tick ---- */

static int cmp_seq(const void *a, const void *b) {
  const rumor *x = *(rumor *const *)a, *y = *(rumor *const *)b;
  return (x->seq > y->seq) - (x->seq < y->seq);
}

static void sent_append(rumor *x, uint64_t peer, uint32_t round) {
  if (x->nsent == x->capsent) {
    kv_assert(x->capsent < UINT32_MAX / 2);
    x->capsent = x->capsent ? x->capsent * 2 : 4;
    x->sent = kv_realloc(x->sent, x->capsent * sizeof *x->sent);
  }
  x->sent[x->nsent++] = (target){.peer = peer, .round = round, .acked = false};
}

/* One round for a due rumor x: either it dies, or it is pushed to up to
 * fanout new peers and waits for their acks. */
static void push_round(kv_rumor *r, rumor *x, uint64_t now_ms, kv_rng *rng,
                       const uint64_t *peers, size_t npeers,
                       kv_rumor_emit_fn emit, void *arg) {
  if (x->rounds >= r->o.max_rounds) {
    rumor_die(r, x);
    return;
  }
  size_t m = 0;
  for (size_t i = 0; i < npeers; i++) {
    if (x->from != 0 && peers[i] == x->from) continue;
    if (find_sent(x, peers[i])) continue;
    r->cand[m++] = peers[i];
  }
  kv_assert(m <= UINT32_MAX);

  /* A partial Fisher-Yates shuffle: each pick is uniform among the
   * candidates not yet picked. A repeated id in peers is skipped when met a
   * second time, since it is then found in x->sent. */
  uint32_t round = x->rounds + 1, picked = 0;
  for (size_t i = 0; i < m && picked < r->o.fanout; i++) {
    size_t j = i + kv_rng_below(rng, (uint32_t)(m - i));
    uint64_t p = r->cand[j];
    r->cand[j] = r->cand[i];
    r->cand[i] = p;
    if (find_sent(x, p)) continue;
    sent_append(x, p, round);
    picked++;
    r->st.pushed++;
    emit(arg, p, x->data, x->keylen, x->data + x->keylen, x->objlen);
  }
  if (picked == 0) {
    rumor_die(r, x);
    return;
  }
  x->rounds = round;
  x->pending = picked;
  x->due = now_ms > UINT64_MAX - r->o.ack_timeout_ms
               ? UINT64_MAX
               : now_ms + r->o.ack_timeout_ms;
  heap_push(r, x);
}

uint64_t kv_rumor_tick(kv_rumor *r, uint64_t now_ms, kv_rng *rng,
                       const uint64_t *peers, size_t npeers,
                       kv_rumor_emit_fn emit, void *arg) {
  kv_assert(!r->in_tick);
  /* Due rumors leave the ready list and the heap for the scratch array;
   * until push_round puts each back in the heap (or frees it) it is in
   * neither. */
  size_t d = 0;
  while (r->ready_head || (r->heap_len > 0 && r->heap[0]->due <= now_ms)) {
    rumor *x = r->ready_head ? r->ready_head : r->heap[0];
    if (x->ready)
      ready_remove(r, x);
    else
      heap_remove(r, x);
    if (d == r->due_cap) {
      r->due_cap = r->due_cap ? r->due_cap * 2 : 64;
      r->due = kv_realloc(r->due, r->due_cap * sizeof *r->due);
    }
    r->due[d++] = x;
  }
  if (d == 0) return kv_rumor_next_due(r);
  if (npeers > r->cand_cap) {
    r->cand_cap = npeers;
    r->cand = kv_realloc(r->cand, r->cand_cap * sizeof *r->cand);
  }
  /* Oldest first, whatever made each rumor due, so that equal inputs give
   * equal emits. */
  qsort(r->due, d, sizeof *r->due, cmp_seq);

  r->in_tick = true;
  for (size_t i = 0; i < d; i++)
    push_round(r, r->due[i], now_ms, rng, peers, npeers, emit, arg);
  r->in_tick = false;
  return kv_rumor_next_due(r);
}

uint64_t kv_rumor_next_due(const kv_rumor *r) {
  uint64_t t = r->ready_head ? r->ready_min : UINT64_MAX;
  if (r->heap_len > 0 && r->heap[0]->due < t) t = r->heap[0]->due;
  return t;
}

void kv_rumor_stats_get(const kv_rumor *r, kv_rumor_stats *out) {
  *out = r->st;
  out->hot = r->count;
  out->hot_bytes = r->bytes;
}
