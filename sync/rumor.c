/*
 * The hot set is one allocation per rumor (header, then key, then object
 * bytes) threaded through a chained hash table by key and a list in add
 * order (oldest first, for eviction and for deterministic processing). Each
 * rumor carries the peers known to hold its version. A tick walks the whole
 * hot set, which stays small in steady state (a rumor lives max_rounds
 * ticks at most) and is bounded by max_rumors.
 * Invariants: bytes is the sum of key+object lengths and never exceeds
 * max_bytes; count never exceeds max_rumors; a peer appears at most once in
 * a rumor's known list; a hot rumor has been pushed in fewer than
 * max_rounds ticks (it dies on its last).
 */
#include "sync/rumor.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/buf.h"
#include "proto/kv_err.h"

#define MIN_BUCKETS 64
/* Batches remembered for round-trip samples: enough for several ticks of
 * fanout batches, few enough to scan on every ack. */
#define RTT_RING 64

enum { K_PUSHED = 1, K_ACKED = 2 };

/* A peer known to hold this version. K_PUSHED: we pushed it (an ack from it
 * is accepted); K_ACKED: it has acked (a second ack is a duplicate). A peer
 * known without K_PUSHED is the sender or one that pushed it to us. */
typedef struct known {
  uint64_t peer;
  uint8_t flags;
} known;

typedef struct rumor {
  struct rumor *hnext;         /* hash chain */
  struct rumor *older, *newer; /* add order */
  uint64_t hash;
  uint64_t pushed_tick; /* the last tick that pushed it (0: none) */
  uint32_t rounds;      /* ticks that pushed it */
  uint32_t not_news;    /* not-news acks received */
  known *kn;
  uint32_t nkn, capkn;
  uint8_t digest[16];
  size_t keylen, objlen;
  uint8_t data[]; /* key, then object */
} rumor;

/* A recent batch: to whom, when, and a signature of its first rumor (key
 * hash and digest), whose ack identifies the batch. */
typedef struct sent_batch {
  uint64_t peer, sig, at;
} sent_batch;

struct kv_rumor {
  kv_rumor_opts o;
  rumor **buckets;
  size_t nbuckets, count, bytes;
  rumor *oldest, *newest;
  uint64_t *cand; /* tick scratch: the candidates not yet picked */
  size_t cand_cap;
  /* The round robin: a shuffled copy of the candidates when it was last
   * restarted, and the next position in it. */
  uint64_t *order;
  size_t norder, at, order_cap;
  uint64_t ticks;     /* ticks so far (numbers them from 1) */
  uint64_t last_tick; /* time of the last tick, if ticks > 0 */
  uint64_t wake;      /* earliest add since the last tick that wants a tick
                         at once (a local write, or any add before the first
                         tick); UINT64_MAX if none */
  uint64_t srtt;      /* smoothed round trip, ms; 0 before the first sample */
  bool sampled;       /* srtt holds a sample */
  sent_batch ring[RTT_RING];
  size_t ring_next;
  bool in_tick;
  kv_rumor_stats st;
};

kv_rumor *kv_rumor_new(const kv_rumor_opts *o) {
  kv_rumor *r = kv_calloc(1, sizeof *r);
  if (o) r->o = *o;
  if (!r->o.fanout) r->o.fanout = KV_RUMOR_DEFAULT_FANOUT;
  if (!r->o.k) r->o.k = KV_RUMOR_DEFAULT_K;
  if (!r->o.max_rounds) r->o.max_rounds = KV_RUMOR_DEFAULT_MAX_ROUNDS;
  if (!r->o.min_interval_ms)
    r->o.min_interval_ms = KV_RUMOR_DEFAULT_MIN_INTERVAL_MS;
  if (!r->o.max_interval_ms)
    r->o.max_interval_ms = KV_RUMOR_DEFAULT_MAX_INTERVAL_MS;
  if (r->o.max_interval_ms < r->o.min_interval_ms)
    r->o.max_interval_ms = r->o.min_interval_ms;
  if (!r->o.max_rumors) r->o.max_rumors = KV_RUMOR_DEFAULT_MAX_RUMORS;
  if (!r->o.max_bytes) r->o.max_bytes = KV_RUMOR_DEFAULT_MAX_BYTES;
  if (!r->o.max_batch_bytes)
    r->o.max_batch_bytes = KV_RUMOR_DEFAULT_MAX_BATCH_BYTES;
  /* Rounds are counted in 32 bits; more than that many rounds is no rumor. */
  if (r->o.max_rounds > UINT32_MAX / 2) r->o.max_rounds = UINT32_MAX / 2;
  r->nbuckets = MIN_BUCKETS;
  r->buckets = kv_calloc(r->nbuckets, sizeof *r->buckets);
  r->wake = UINT64_MAX;
  return r;
}

kv_rumor_opts kv_rumor_opts_get(const kv_rumor *r) { return r->o; }

static void rumor_destroy(rumor *x) {
  free(x->kn);
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
  free(r->cand);
  free(r->order);
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
  r->count--;
  r->bytes -= x->keylen + x->objlen;
  rumor_destroy(x);
}

static void rumor_die(kv_rumor *r, rumor *x) {
  r->st.died++;
  rumor_remove(r, x);
}

static known *find_known(const rumor *x, uint64_t peer) {
  for (uint32_t i = 0; i < x->nkn; i++)
    if (x->kn[i].peer == peer) return &x->kn[i];
  return NULL;
}

static void known_append(rumor *x, uint64_t peer, uint8_t flags) {
  if (x->nkn == x->capkn) {
    kv_assert(x->capkn < UINT32_MAX / 2);
    x->capkn = x->capkn ? x->capkn * 2 : 4;
    x->kn = kv_realloc(x->kn, x->capkn * sizeof *x->kn);
  }
  x->kn[x->nkn++] = (known){.peer = peer, .flags = flags};
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
  memcpy(x->digest, digest, sizeof x->digest);
  x->keylen = keylen;
  x->objlen = objlen;
  if (keylen) memcpy(x->data, key, keylen);
  if (objlen) memcpy(x->data + keylen, obj, objlen);
  if (from) known_append(x, from, 0);
  if ((from == 0 || r->ticks == 0) && now_ms < r->wake) r->wake = now_ms;

  hash_insert(r, x);
  x->older = r->newest;
  if (r->newest)
    r->newest->newer = x;
  else
    r->oldest = x;
  r->newest = x;
  r->count++;
  r->bytes += total;
}

/* The hot rumor for key at exactly digest, or NULL. */
static rumor *find_version(const kv_rumor *r, const uint8_t *key, size_t keylen,
                           const uint8_t digest[16]) {
  rumor *x = lookup(r, key, keylen, XXH3_64bits(key, keylen));
  if (!x || memcmp(x->digest, digest, sizeof x->digest) != 0) return NULL;
  return x;
}

static uint64_t batch_sig(uint64_t keyhash, const uint8_t digest[16]) {
  uint64_t d;
  memcpy(&d, digest, sizeof d);
  return keyhash ^ d;
}

/* If this ack answers a remembered batch, its age is a round-trip sample:
 * srtt moves an eighth of the way to it (the first sample sets it), as
 * TCP's does. The entry is spent, so a duplicated ack samples once. */
static void rtt_sample(kv_rumor *r, uint64_t peer, uint64_t sig,
                       uint64_t now_ms) {
  for (size_t i = 0; i < RTT_RING; i++) {
    sent_batch *b = &r->ring[i];
    if (b->peer != peer || b->sig != sig) continue;
    uint64_t rtt = now_ms > b->at ? now_ms - b->at : 0;
    b->peer = 0;
    if (!r->sampled)
      r->srtt = rtt;
    else if (rtt >= r->srtt)
      r->srtt += (rtt - r->srtt) / 8;
    else
      r->srtt -= (r->srtt - rtt) / 8;
    r->sampled = true;
    return;
  }
}

void kv_rumor_ack(kv_rumor *r, uint64_t peer, const uint8_t *key, size_t keylen,
                  const uint8_t digest[16], bool news, uint64_t now_ms) {
  kv_assert(!r->in_tick);
  uint64_t h = XXH3_64bits(key, keylen);
  if (peer != 0) rtt_sample(r, peer, batch_sig(h, digest), now_ms);
  rumor *x = lookup(r, key, keylen, h);
  if (x && memcmp(x->digest, digest, sizeof x->digest) != 0) x = NULL;
  if (!x) return;
  known *s = find_known(x, peer);
  if (!s || !(s->flags & K_PUSHED) || (s->flags & K_ACKED)) return;
  s->flags |= K_ACKED;
  r->st.acks++;
  if (news)
    r->st.news_acks++;
  else if (++x->not_news >= r->o.k)
    rumor_die(r, x);
}

void kv_rumor_peer_has(kv_rumor *r, uint64_t peer, const uint8_t *key,
                       size_t keylen, const uint8_t digest[16]) {
  kv_assert(!r->in_tick);
  rumor *x = find_version(r, key, keylen, digest);
  if (!x || peer == 0 || find_known(x, peer)) return;
  known_append(x, peer, 0);
  r->st.seen++;
}

/* ---- tick ---- */

static bool eligible(const rumor *x, uint64_t peer) {
  return !find_known(x, peer);
}

/* Whether some peer in peers[0..npeers) may still be pushed x. */
static bool any_eligible(const rumor *x, const uint64_t *peers, size_t npeers) {
  for (size_t i = 0; i < npeers; i++)
    if (peers[i] != 0 && eligible(x, peers[i])) return true;
  return false;
}

/* Pushes to peer every hot rumor it may be pushed, newest first, as long as
 * the batch stays within max_batch_bytes (the first rumor always goes). */
static void push_batch(kv_rumor *r, uint64_t peer, uint64_t now_ms,
                       kv_rumor_emit_fn emit, void *arg) {
  size_t bytes = 0;
  bool any = false;
  for (rumor *x = r->newest; x; x = x->older) {
    if (!eligible(x, peer)) continue;
    size_t sz = x->keylen + x->objlen, max = r->o.max_batch_bytes;
    if (any && (bytes >= max || sz > max - bytes)) continue;
    bytes += sz;
    if (!any) {
      r->ring[r->ring_next] =
          (sent_batch){peer, batch_sig(x->hash, x->digest), now_ms};
      r->ring_next = (r->ring_next + 1) % RTT_RING;
    }
    any = true;
    known_append(x, peer, K_PUSHED);
    x->pushed_tick = r->ticks;
    r->st.pushed++;
    emit(arg, peer, x->data, x->keylen, x->data + x->keylen, x->objlen);
  }
  if (any) r->st.batches++;
}

/* Removes peer from cand[0..*m) if it is there; returns whether it was. */
static bool take_candidate(uint64_t *cand, size_t *m, uint64_t peer) {
  for (size_t j = 0; j < *m; j++) {
    if (cand[j] == peer) {
      cand[j] = cand[--*m];
      return true;
    }
  }
  return false;
}

/* Restarts the round robin as a uniform shuffle of cand[0..m). */
static void restart_order(kv_rumor *r, size_t m, kv_rng *rng) {
  if (m > r->order_cap) {
    r->order_cap = m;
    r->order = kv_realloc(r->order, m * sizeof *r->order);
  }
  memcpy(r->order, r->cand, m * sizeof *r->order);
  for (size_t i = m; i > 1; i--) {
    size_t j = kv_rng_below(rng, (uint32_t)i);
    uint64_t t = r->order[i - 1];
    r->order[i - 1] = r->order[j];
    r->order[j] = t;
  }
  r->norder = m;
  r->at = 0;
}

uint64_t kv_rumor_tick(kv_rumor *r, uint64_t now_ms, kv_rng *rng,
                       const uint64_t *peers, size_t npeers,
                       kv_rumor_emit_fn emit, void *arg) {
  kv_assert(!r->in_tick);
  uint64_t due = kv_rumor_next_due(r);
  if (due == UINT64_MAX || now_ms < due) return due;
  r->ticks++;
  r->last_tick = now_ms;
  r->wake = UINT64_MAX;
  if (npeers > r->cand_cap) {
    r->cand_cap = npeers;
    r->cand = kv_realloc(r->cand, r->cand_cap * sizeof *r->cand);
  }

  /* The candidates: each distinct peer that may be pushed at least one hot
   * rumor. The newest rumors are the likeliest to qualify, so the search
   * usually stops at the first. */
  size_t m = 0;
  for (size_t i = 0; i < npeers; i++) {
    uint64_t p = peers[i];
    bool dup = p == 0;
    for (size_t j = 0; j < m && !dup; j++)
      dup = r->cand[j] == p;
    if (dup) continue;
    for (rumor *x = r->newest; x; x = x->older) {
      if (eligible(x, p)) {
        r->cand[m++] = p;
        break;
      }
    }
  }
  kv_assert(m <= UINT32_MAX);

  /* The targets, from the round robin. A peer drawn independently every
   * tick is often one this node pushed the same rumors to a tick ago, which
   * wastes the slot; going round a shuffled order reaches every candidate
   * once per turn. Peers that became candidates during a turn wait for the
   * next one; those that stopped being candidates are skipped. */
  r->in_tick = true;
  bool restarted = false;
  for (unsigned picked = 0; picked < r->o.fanout && m > 0;) {
    if (r->at == r->norder) {
      if (restarted) break; /* every candidate has been picked */
      restart_order(r, m, rng);
      restarted = true;
    }
    uint64_t p = r->order[r->at++];
    if (!take_candidate(r->cand, &m, p)) continue;
    push_batch(r, p, now_ms, emit, arg);
    picked++;
  }
  r->in_tick = false;

  /* A rumor pushed in this tick has had one more round, and dies on its
   * max_rounds-th; one that was not pushed dies if no alive peer is left
   * that may be pushed it. */
  for (rumor *x = r->oldest, *next; x; x = next) {
    next = x->newer;
    if (x->pushed_tick == r->ticks) {
      if (++x->rounds >= r->o.max_rounds) rumor_die(r, x);
    } else if (!any_eligible(x, peers, npeers)) {
      rumor_die(r, x);
    }
  }
  return kv_rumor_next_due(r);
}

uint64_t kv_rumor_interval(const kv_rumor *r) {
  if (r->o.interval_ms) return r->o.interval_ms;
  if (!r->sampled) return r->o.max_interval_ms;
  uint64_t i = r->srtt / KV_RUMOR_RTT_DIVISOR;
  if (i < r->o.min_interval_ms) i = r->o.min_interval_ms;
  if (i > r->o.max_interval_ms) i = r->o.max_interval_ms;
  return i;
}

uint64_t kv_rumor_next_due(const kv_rumor *r) {
  if (r->count == 0) return UINT64_MAX;
  uint64_t t = r->wake;
  if (r->ticks > 0) {
    uint64_t i = kv_rumor_interval(r);
    uint64_t paced =
        r->last_tick > UINT64_MAX - i ? UINT64_MAX : r->last_tick + i;
    if (paced < t) t = paced;
  }
  return t;
}

void kv_rumor_stats_get(const kv_rumor *r, kv_rumor_stats *out) {
  *out = r->st;
  out->srtt_ms = r->sampled ? r->srtt : 0;
  out->interval_ms = kv_rumor_interval(r);
  out->hot = r->count;
  out->hot_bytes = r->bytes;
}
