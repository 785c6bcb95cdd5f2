/*
 * Envelope sealing. The replay state is a sorted array of per-sender windows
 * (binary search to find one; senders join rarely, so the memmove on insert
 * costs nothing that matters), bounded by max_senders. A window is the
 * highest counter accepted and a bitmap whose bit i says that counter
 * top - i was accepted (bit 0 is top itself), as in IPsec's anti-replay
 * window (RFC 4303 §3.4.3). Only authenticated envelopes touch the table, so
 * an outsider can neither advance a window nor evict a sender.
 */
#include "sync/seal.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

_Static_assert(KV_SEAL_KEY_LEN == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
               "key length");
_Static_assert(KV_SEAL_NONCE_LEN ==
                   crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
               "nonce length");
_Static_assert(KV_SEAL_TAG_LEN == crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "tag length");
_Static_assert(KV_SEAL_HEADER_LEN == 2 + 4 * 8, "header layout");
_Static_assert(KV_SEAL_WINDOW == 64, "the window is one uint64_t bitmap");

/* Header field offsets (seal.h). */
enum {
  OFF_VERSION = 0,
  OFF_FLAGS = 1,
  OFF_CLUSTER = 2,
  OFF_SENDER = 10,
  OFF_TS = 18,
  OFF_COUNTER = 26,
  OFF_NONCE = KV_SEAL_HEADER_LEN,
  OFF_BODY = KV_SEAL_HEADER_LEN + KV_SEAL_NONCE_LEN,
};

typedef struct window {
  uint64_t sender;
  uint64_t top;  /* highest counter accepted */
  uint64_t seen; /* bit i: counter top - i accepted */
  uint64_t tick; /* s->tick when last recorded, for eviction */
} window;

struct kv_seal {
  uint8_t keys[KV_SEAL_MAX_KEYS][KV_SEAL_KEY_LEN];
  size_t nkeys;
  uint64_t cluster_id;
  uint64_t sender;
  uint64_t next_counter;
  bool exhausted; /* the counter UINT64_MAX has been used */
  uint64_t max_skew_ms;
  size_t max_senders;
  window *win; /* sorted by sender */
  size_t nwin, capwin;
  uint64_t tick;
};

const char *kv_seal_verdict_name(kv_seal_verdict v) {
  switch (v) {
#define KV_SEAL_VERDICT_CASE(name, label)                                      \
  case KV_SEAL_##name:                                                         \
    return label;
    KV_SEAL_VERDICT_MAP(KV_SEAL_VERDICT_CASE)
#undef KV_SEAL_VERDICT_CASE
  case KV_SEAL_NVERDICTS:
    break;
  }
  return "unknown";
}

uint64_t kv_seal_cluster_id(const char *name) {
  uint8_t h[crypto_generichash_BYTES];
  kv_assert(name != NULL);
  crypto_generichash(h, sizeof h, (const unsigned char *)name, strlen(name),
                     NULL, 0);
  return kv_get_be64(h);
}

int kv_seal_new(const kv_seal_opts *o, kv_seal **out) {
  if (out) *out = NULL;
  if (!o || !out || !o->cluster) return KV_INVALID;
  if (o->nkeys > KV_SEAL_MAX_KEYS) return KV_INVALID;
  if (o->nkeys > 0 && !o->keys) return KV_INVALID;
  for (size_t i = 0; i < o->nkeys; i++)
    if (sodium_is_zero(o->keys[i], KV_SEAL_KEY_LEN)) return KV_INVALID;

  kv_seal *s = kv_calloc(1, sizeof *s);
  if (o->nkeys > 0) memcpy(s->keys, o->keys, o->nkeys * KV_SEAL_KEY_LEN);
  s->nkeys = o->nkeys;
  s->cluster_id = kv_seal_cluster_id(o->cluster);
  s->sender = o->sender;
  s->next_counter = o->counter_start;
  s->max_skew_ms = o->max_skew_ms ? o->max_skew_ms : KV_SEAL_DEFAULT_SKEW_MS;
  s->max_senders =
      o->max_senders ? o->max_senders : KV_SEAL_DEFAULT_MAX_SENDERS;
  *out = s;
  return KV_OK;
}

void kv_seal_free(kv_seal *s) {
  if (!s) return;
  sodium_memzero(s->keys, sizeof s->keys);
  free(s->win);
  free(s);
}

bool kv_seal_insecure(const kv_seal *s) { return s->nkeys == 0; }

uint64_t kv_seal_next_counter(const kv_seal *s) { return s->next_counter; }

size_t kv_seal_senders(const kv_seal *s) { return s->nwin; }

static void put_header(uint8_t *p, uint8_t flags, uint64_t cluster_id,
                       uint64_t sender, uint64_t ts_ms, uint64_t counter) {
  p[OFF_VERSION] = KV_SEAL_VERSION;
  p[OFF_FLAGS] = flags;
  kv_put_be64(p + OFF_CLUSTER, cluster_id);
  kv_put_be64(p + OFF_SENDER, sender);
  kv_put_be64(p + OFF_TS, ts_ms);
  kv_put_be64(p + OFF_COUNTER, counter);
}

void kv_seal_seal(kv_seal *s, uint64_t now_ms,
                  const uint8_t nonce[KV_SEAL_NONCE_LEN], const uint8_t *body,
                  size_t len, kv_buf *out) {
  kv_assert(nonce != NULL && out != NULL);
  kv_assert(body != NULL || len == 0);
  kv_assert(len <= SIZE_MAX - KV_SEAL_OVERHEAD &&
            len <= crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX);
  if (s->exhausted) kv_panic("kv_seal: message counter exhausted");
  uint64_t counter = s->next_counter;
  if (counter == UINT64_MAX)
    s->exhausted = true;
  else
    s->next_counter++;

  bool insecure = kv_seal_insecure(s);
  size_t n = (insecure ? KV_SEAL_INSECURE_OVERHEAD : KV_SEAL_OVERHEAD) + len;
  uint8_t *p = kv_malloc(n);
  put_header(p, insecure ? KV_SEAL_FLAG_INSECURE : 0, s->cluster_id, s->sender,
             now_ms, counter);
  memcpy(p + OFF_NONCE, nonce, KV_SEAL_NONCE_LEN);
  if (insecure) {
    if (len) memcpy(p + OFF_BODY, body, len);
  } else {
    unsigned long long clen = 0;
    int rc = crypto_aead_xchacha20poly1305_ietf_encrypt(
        p + OFF_BODY, &clen, body, len, p, KV_SEAL_HEADER_LEN, NULL, nonce,
        s->keys[0]);
    kv_assert(rc == 0 && clen == len + KV_SEAL_TAG_LEN);
  }
  out->data = p;
  out->len = n;
}

/* The window of sender, or NULL with *at set to where it would be inserted
 * to keep the array sorted. */
static window *find_window(kv_seal *s, uint64_t sender, size_t *at) {
  size_t lo = 0, hi = s->nwin;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->win[mid].sender < sender)
      lo = mid + 1;
    else
      hi = mid;
  }
  *at = lo;
  return lo < s->nwin && s->win[lo].sender == sender ? &s->win[lo] : NULL;
}

/* Whether counter has been used by this sealer itself: an envelope carrying
 * our own sender id and such a counter can only be one of ours, reflected
 * back by someone who captured it. Counters below counter_start are ours
 * from before a restart. */
static bool own_counter(const kv_seal *s, uint64_t counter) {
  return s->exhausted || counter < s->next_counter;
}

static bool is_replay(kv_seal *s, uint64_t sender, uint64_t counter) {
  if (sender == s->sender && own_counter(s, counter)) return true;
  size_t at;
  const window *w = find_window(s, sender, &at);
  if (!w || counter > w->top) return false;
  uint64_t d = w->top - counter;
  if (d >= KV_SEAL_WINDOW) return true;
  return (w->seen >> d) & 1;
}

/* Records an accepted (sender, counter); is_replay said it was new. */
static void record(kv_seal *s, uint64_t sender, uint64_t counter) {
  size_t at;
  window *w = find_window(s, sender, &at);
  if (!w) {
    if (s->nwin == s->max_senders) {
      size_t old = 0;
      for (size_t i = 1; i < s->nwin; i++)
        if (s->win[i].tick < s->win[old].tick) old = i;
      memmove(s->win + old, s->win + old + 1,
              (s->nwin - old - 1) * sizeof *s->win);
      s->nwin--;
      if (old < at) at--;
    }
    if (s->nwin == s->capwin) {
      size_t cap = s->capwin ? s->capwin * 2 : 16;
      if (cap > s->max_senders) cap = s->max_senders;
      s->win = kv_realloc(s->win, cap * sizeof *s->win);
      s->capwin = cap;
    }
    memmove(s->win + at + 1, s->win + at, (s->nwin - at) * sizeof *s->win);
    s->nwin++;
    w = &s->win[at];
    *w = (window){sender, counter, 1, 0};
  } else if (counter > w->top) {
    uint64_t shift = counter - w->top;
    w->seen = shift >= KV_SEAL_WINDOW ? 1 : (w->seen << shift) | 1;
    w->top = counter;
  } else {
    w->seen |= (uint64_t)1 << (w->top - counter);
  }
  w->tick = ++s->tick;
}

static kv_seal_verdict open_env(kv_seal *s, uint64_t now_ms, const uint8_t *env,
                                size_t len, bool foreign, kv_seal_info *info,
                                kv_buf *body) {
  *body = (kv_buf){NULL, 0};
  if (len < KV_SEAL_INSECURE_OVERHEAD) return KV_SEAL_TRUNCATED;
  uint8_t flags = env[OFF_FLAGS];
  if (env[OFF_VERSION] != KV_SEAL_VERSION || (flags & ~KV_SEAL_FLAG_INSECURE))
    return KV_SEAL_BAD_VERSION;
  if (!foreign && kv_get_be64(env + OFF_CLUSTER) != s->cluster_id)
    return KV_SEAL_WRONG_CLUSTER;
  bool insecure = kv_seal_insecure(s);
  if (((flags & KV_SEAL_FLAG_INSECURE) != 0) != insecure)
    return KV_SEAL_MODE_MISMATCH;
  if (!insecure && len < KV_SEAL_OVERHEAD) return KV_SEAL_TRUNCATED;

  uint64_t sender = kv_get_be64(env + OFF_SENDER);
  uint64_t ts = kv_get_be64(env + OFF_TS);
  uint64_t counter = kv_get_be64(env + OFF_COUNTER);
  /* Subtract the smaller from the larger: no wrap at either end of the
   * range, whatever a hostile ts holds. */
  uint64_t skew = ts > now_ms ? ts - now_ms : now_ms - ts;
  if (skew > s->max_skew_ms) return KV_SEAL_STALE;
  if (!foreign && is_replay(s, sender, counter)) return KV_SEAL_REPLAY;

  size_t key = 0;
  kv_buf plain = {NULL, 0};
  if (insecure) {
    plain = kv_buf_dup(env + OFF_BODY, len - OFF_BODY);
  } else {
    /* The allocation precedes authentication, but len is already bounded by
     * the caller's frame limit, so it is no worse than buffering the frame. */
    size_t mlen = len - KV_SEAL_OVERHEAD;
    uint8_t *m = kv_malloc(mlen);
    for (key = 0; key < s->nkeys; key++) {
      unsigned long long got = 0;
      if (crypto_aead_xchacha20poly1305_ietf_decrypt(
              m, &got, NULL, env + OFF_BODY, len - OFF_BODY, env,
              KV_SEAL_HEADER_LEN, env + OFF_NONCE, s->keys[key]) == 0)
        break;
    }
    if (key == s->nkeys) {
      free(m);
      return KV_SEAL_BAD_TAG;
    }
    if (mlen == 0) {
      free(m);
      m = NULL;
    }
    plain = (kv_buf){m, mlen};
  }

  if (!foreign) record(s, sender, counter);
  if (info) *info = (kv_seal_info){sender, ts, counter, key};
  *body = plain;
  return KV_SEAL_OK;
}

kv_seal_verdict kv_seal_open(kv_seal *s, uint64_t now_ms, const uint8_t *env,
                             size_t len, kv_seal_info *info, kv_buf *body) {
  return open_env(s, now_ms, env, len, false, info, body);
}

kv_seal_verdict kv_seal_open_foreign(kv_seal *s, uint64_t now_ms,
                                     const uint8_t *env, size_t len,
                                     uint64_t *cluster_id, kv_seal_info *info,
                                     kv_buf *body) {
  kv_seal_verdict v = open_env(s, now_ms, env, len, true, info, body);
  if (v == KV_SEAL_OK && cluster_id)
    *cluster_id = kv_get_be64(env + OFF_CLUSTER);
  return v;
}
