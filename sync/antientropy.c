/*
 * The anti-entropy exchange. The initiator is a small state machine (root,
 * level descent, segments, pulls, over) that keeps only what the next reply
 * must be checked against: the nodes or segments it asked for and the keys it
 * pulled. Every reply is validated in full against that before any of it is
 * used or merged, so the Merkle API (which panics on bad indices) only ever
 * sees indices this side produced. The responder keeps no state at all.
 */
#include "sync/antientropy.h"

#include <stdlib.h>
#include <string.h>

#include "proto/peer.pb-c.h"

_Static_assert(sizeof(kv_hash) == 16, "kv_hash is sent as 16 raw bytes");

/* Upper bound of the bytes around an AePush or AePull's repeated field: the
 * PeerMessage tag and length (at most 1 + 5) and the fixed64 exchange (9). */
#define MSG_OVERHEAD 15

typedef enum ae_state {
  ST_ROOT,     /* AeRoot sent, waiting for AeRootReply */
  ST_LEVEL,    /* AeLevelReq sent for x->req at x->level */
  ST_SEGMENTS, /* AeSegmentsReq sent for the segments x->req */
  ST_PULL,     /* pushes and pulls sent, waiting for the pulled objects */
  ST_OVER,
} ae_state;

struct kv_ae {
  kv_ae_opts o;
  kv_ae_store st;
  uint64_t id;
  kv_ae_send_fn send;
  void *arg;
  ae_state state;
  unsigned level;
  uint32_t *req; /* nodes or segments asked for, strictly increasing */
  size_t nreq;
  kv_buf *pulls; /* keys pulled, sorted, owned */
  uint8_t *got;  /* pulls[i] answered */
  size_t npulls, left;
  kv_ae_stats stats;
};

/* A key with its digest, copied out of a list_segment callback. */
typedef struct key_digest {
  uint8_t *key;
  size_t len;
  uint8_t digest[16];
} key_digest;

typedef struct kd_vec {
  key_digest *v;
  size_t n, cap;
} kd_vec;

static kv_ae_opts resolve(const kv_ae_opts *o) {
  kv_ae_opts r = o ? *o : (kv_ae_opts){0};
  if (!r.max_segments) r.max_segments = KV_AE_DEFAULT_MAX_SEGMENTS;
  if (!r.max_keys) r.max_keys = KV_AE_DEFAULT_MAX_KEYS;
  if (!r.max_push_bytes) r.max_push_bytes = KV_AE_DEFAULT_MAX_PUSH_BYTES;
  return r;
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Bytes of a length-delimited field of len bytes (tag 1 byte: tags < 16). */
static size_t field_len(size_t len) { return 1 + varint_len(len) + len; }

static bool key_ok(const ProtobufCBinaryData *k) {
  return k->len >= 1 && k->len <= KV_AE_MAX_KEY;
}

static int bin_cmp(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  return kv_buf_cmp(a->data, a->len, b->data, b->len);
}

/* ---- encoding and sending ---- */

/* Packs m and hands it to send; returns the encoded size. */
static size_t send_msg(const Kvpb__PeerMessage *m, kv_ae_send_fn send,
                       void *arg) {
  size_t n = kvpb__peer_message__get_packed_size(m);
  uint8_t stack[256];
  uint8_t *p = n <= sizeof stack ? stack : kv_malloc(n);
  size_t w = kvpb__peer_message__pack(m, p);
  kv_assert(w == n);
  send(arg, p, n);
  if (p != stack) free(p);
  return n;
}

static void x_send(kv_ae *x, const Kvpb__PeerMessage *m) {
  x->stats.bytes_sent += send_msg(m, x->send, x->arg);
  x->stats.messages_sent++;
}

static Kvpb__PeerMessage *decode(const uint8_t *msg, size_t len) {
  if (!msg && len) return NULL;
  return kvpb__peer_message__unpack(NULL, len, msg);
}

/* The exchange id and direction of an AE message; false for anything else. */
static bool ae_route(const Kvpb__PeerMessage *m, uint64_t *id, bool *to_init) {
  switch (m->body_case) {
  case KVPB__PEER_MESSAGE__BODY_AE_ROOT:
    *id = m->ae_root->exchange, *to_init = false;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY:
    *id = m->ae_root_reply->exchange, *to_init = true;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ:
    *id = m->ae_level_req->exchange, *to_init = false;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY:
    *id = m->ae_level_reply->exchange, *to_init = true;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ:
    *id = m->ae_segments_req->exchange, *to_init = false;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY:
    *id = m->ae_segments_reply->exchange, *to_init = true;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_PUSH:
    *id = m->ae_push->exchange, *to_init = true;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_PULL:
    *id = m->ae_pull->exchange, *to_init = false;
    return true;
  case KVPB__PEER_MESSAGE__BODY_AE_DONE:
    *id = m->ae_done->exchange, *to_init = false;
    return true;
  default:
    return false;
  }
}

/* Batches KeyObjects into AePush messages of at most max bytes (a single
 * larger object goes alone). The key bytes are borrowed until the flush; the
 * object buffers are owned and freed by it. */
typedef struct pusher {
  uint64_t id;
  size_t max;
  kv_ae_send_fn send;
  void *arg;
  Kvpb__KeyObject *ko;
  Kvpb__KeyObject **kop;
  kv_buf *objs;
  size_t n, cap, bytes;
  uint64_t sent_bytes, sent_msgs;
} pusher;

static void push_flush(pusher *p) {
  if (!p->n) return;
  Kvpb__AePush body = KVPB__AE_PUSH__INIT;
  body.exchange = p->id;
  /* The pointer array is filled only now: ko may have moved while growing. */
  for (size_t i = 0; i < p->n; i++)
    p->kop[i] = &p->ko[i];
  body.n_objects = p->n;
  body.objects = p->kop;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_PUSH;
  m.ae_push = &body;
  p->sent_bytes += send_msg(&m, p->send, p->arg);
  p->sent_msgs++;
  for (size_t i = 0; i < p->n; i++)
    kv_buf_free(&p->objs[i]);
  p->n = 0;
  p->bytes = 0;
}

static void push_add(pusher *p, const uint8_t *key, size_t klen, kv_buf obj) {
  size_t inner = field_len(klen) + (obj.len ? field_len(obj.len) : 0);
  size_t entry = field_len(inner);
  if (p->n && p->bytes + entry + MSG_OVERHEAD > p->max) push_flush(p);
  if (p->n == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 64;
    p->ko = kv_realloc(p->ko, p->cap * sizeof *p->ko);
    p->kop = kv_realloc(p->kop, p->cap * sizeof *p->kop);
    p->objs = kv_realloc(p->objs, p->cap * sizeof *p->objs);
  }
  Kvpb__KeyObject *k = &p->ko[p->n];
  kvpb__key_object__init(k);
  k->key.data = (uint8_t *)key;
  k->key.len = klen;
  k->object.data = obj.data;
  k->object.len = obj.len;
  p->objs[p->n] = obj;
  p->n++;
  p->bytes += entry;
}

static void push_fini(pusher *p) {
  for (size_t i = 0; i < p->n; i++)
    kv_buf_free(&p->objs[i]);
  free(p->ko);
  free(p->kop);
  free(p->objs);
}

/* ---- key lists ---- */

static void kd_collect(void *arg, const uint8_t *key, size_t keylen,
                       const uint8_t digest[16]) {
  kd_vec *v = arg;
  /* The store's keys are trusted, but one that could not be sent would only
   * get the whole exchange refused by the peer, so it is left out. */
  if (keylen < 1 || keylen > KV_AE_MAX_KEY) return;
  if (v->n == v->cap) {
    v->cap = v->cap ? 2 * v->cap : 64;
    v->v = kv_realloc(v->v, v->cap * sizeof *v->v);
  }
  key_digest *e = &v->v[v->n++];
  e->key = kv_malloc(keylen);
  memcpy(e->key, key, keylen);
  e->len = keylen;
  memcpy(e->digest, digest, 16);
}

static void kd_truncate(kd_vec *v, size_t n) {
  while (v->n > n)
    free(v->v[--v->n].key);
}

static void kd_free(kd_vec *v) {
  kd_truncate(v, 0);
  free(v->v);
}

static int kd_cmp(const void *a, const void *b) {
  const key_digest *x = a, *y = b;
  return kv_buf_cmp(x->key, x->len, y->key, y->len);
}

static int kdp_cmp(const void *a, const void *b) {
  const Kvpb__KeyDigest *const *x = a, *const *y = b;
  return bin_cmp(&(*x)->key, &(*y)->key);
}

static int binp_cmp(const void *a, const void *b) {
  const ProtobufCBinaryData *const *x = a, *const *y = b;
  return bin_cmp(*x, *y);
}

/* True when the n keys (pointers into a message) are all distinct. */
static bool keys_distinct(const ProtobufCBinaryData **keys, size_t n) {
  if (n < 2) return true;
  const ProtobufCBinaryData **s = kv_malloc(n * sizeof *s);
  memcpy(s, keys, n * sizeof *s);
  qsort(s, n, sizeof *s, binp_cmp);
  bool ok = true;
  for (size_t i = 1; i < n && ok; i++)
    ok = bin_cmp(s[i - 1], s[i]) != 0;
  free(s);
  return ok;
}

static bool seg_in(const uint32_t *segs, size_t n, uint32_t seg) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (segs[mid] == seg) return true;
    if (segs[mid] < seg)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

/* Lists segs[0..n) of the store into v (appending). */
static int list_segments(const kv_ae_store *st, const uint32_t *segs, size_t n,
                         kd_vec *v) {
  for (size_t i = 0; i < n; i++) {
    int rc = st->list_segment(st->ctx, segs[i], kd_collect, v);
    if (rc != KV_OK) return rc;
  }
  return KV_OK;
}

/* ---- initiator ---- */

kv_ae *kv_ae_start(const kv_ae_opts *o, const kv_ae_store *st,
                   uint64_t exchange_id, kv_ae_send_fn send, void *arg) {
  kv_assert(st && st->tree && st->list_segment && st->get_object && send);
  kv_ae *x = kv_calloc(1, sizeof *x);
  x->o = resolve(o);
  x->st = *st;
  x->id = exchange_id;
  x->send = send;
  x->arg = arg;

  kv_hash root = kv_merkle_root(st->tree);
  Kvpb__AeRoot body = KVPB__AE_ROOT__INIT;
  body.exchange = exchange_id;
  body.root.data = root.b;
  body.root.len = KV_AE_ROOT_PREFIX;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_ROOT;
  m.ae_root = &body;
  x_send(x, &m);
  x->state = ST_ROOT;
  return x;
}

void kv_ae_free(kv_ae *x) {
  if (!x) return;
  free(x->req);
  for (size_t i = 0; i < x->npulls; i++)
    kv_buf_free(&x->pulls[i]);
  free(x->pulls);
  free(x->got);
  free(x);
}

const kv_ae_stats *kv_ae_stats_of(const kv_ae *x) { return &x->stats; }

static int finish(kv_ae *x) {
  Kvpb__AeDone body = KVPB__AE_DONE__INIT;
  body.exchange = x->id;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_DONE;
  m.ae_done = &body;
  x_send(x, &m);
  return KV_CLOSED;
}

static void send_level_req(kv_ae *x) {
  Kvpb__AeLevelReq body = KVPB__AE_LEVEL_REQ__INIT;
  body.exchange = x->id;
  body.level = x->level;
  body.n_nodes = x->nreq;
  body.nodes = x->req;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ;
  m.ae_level_req = &body;
  x_send(x, &m);
}

static void send_segments_req(kv_ae *x) {
  Kvpb__AeSegmentsReq body = KVPB__AE_SEGMENTS_REQ__INIT;
  body.exchange = x->id;
  body.n_segments = x->nreq;
  body.segments = x->req;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ;
  m.ae_segments_req = &body;
  x_send(x, &m);
}

/* Continues the descent with the differing nodes at level (ownership of
 * nodes moves in): asks for their children, or, at the leaf level, for the
 * keys of those segments. */
static int descend(kv_ae *x, unsigned level, uint32_t *nodes, size_t n) {
  free(x->req);
  x->req = nodes;
  x->nreq = n;
  /* Every differing node holds at least one differing segment and nodes
   * cover contiguous segment ranges, so keeping the lowest max_segments
   * nodes at each level keeps exactly the lowest differing segments. */
  if (n > x->o.max_segments) {
    x->nreq = x->o.max_segments;
    x->stats.partial = true;
  }
  /* Roots that differ over equal children mean a tree changed in between;
   * there is nothing to repair now. */
  if (!x->nreq) return finish(x);
  if (level == kv_merkle_depth(x->st.tree) - 1) {
    x->stats.segments_differing = x->nreq;
    send_segments_req(x);
    x->state = ST_SEGMENTS;
  } else {
    x->level = level;
    send_level_req(x);
    x->state = ST_LEVEL;
  }
  return KV_OK;
}

static int on_root_reply(kv_ae *x, const Kvpb__AeRootReply *r) {
  if (r->root.len != KV_AE_ROOT_PREFIX) return KV_BAD_REQUEST;
  kv_hash mine = kv_merkle_root(x->st.tree);
  if (memcmp(mine.b, r->root.data, KV_AE_ROOT_PREFIX) == 0) {
    x->stats.in_sync = true;
    return KV_CLOSED;
  }
  uint32_t *root = kv_malloc(sizeof *root);
  root[0] = 0;
  return descend(x, 0, root, 1);
}

static int on_level_reply(kv_ae *x, const Kvpb__AeLevelReply *r) {
  const kv_merkle *t = x->st.tree;
  /* The reply must be for the level asked and answer a non-empty prefix of
   * the nodes asked (a responder with a smaller bound answers fewer). Since
   * the nodes are then this side's own, the Merkle calls below are safe. */
  if (r->level != x->level || r->n_nodes == 0 || r->n_nodes > x->nreq)
    return KV_BAD_REQUEST;
  for (size_t i = 0; i < r->n_nodes; i++)
    if (r->nodes[i] != x->req[i]) return KV_BAD_REQUEST;
  size_t fan = kv_merkle_fanout_at(t, x->level);
  size_t nh = r->n_nodes * fan;
  if (r->hashes.len != nh * sizeof(kv_hash)) return KV_BAD_REQUEST;
  if (r->n_nodes < x->nreq) x->stats.partial = true;

  kv_hash *theirs = kv_malloc(nh * sizeof *theirs);
  memcpy(theirs, r->hashes.data, nh * sizeof *theirs);
  uint32_t *out = kv_malloc(nh * sizeof *out);
  size_t nd =
      kv_merkle_diff_children(t, x->level, x->req, r->n_nodes, theirs, out);
  free(theirs);
  return descend(x, x->level + 1, out, nd);
}

/* Pushes the objects for keys mine[idx[0..n)]. */
static int send_pushes(kv_ae *x, const kd_vec *mine, const size_t *idx,
                       size_t n) {
  pusher p = {
      .id = x->id, .max = x->o.max_push_bytes, .send = x->send, .arg = x->arg};
  int rc = KV_OK;
  for (size_t i = 0; i < n && rc == KV_OK; i++) {
    const key_digest *k = &mine->v[idx[i]];
    kv_buf obj = {NULL, 0};
    rc = x->st.get_object(x->st.ctx, k->key, k->len, &obj);
    if (rc == KV_NOTFOUND) { /* gone since it was listed: nothing to push */
      rc = KV_OK;
      continue;
    }
    if (rc != KV_OK) break;
    if (!obj.len) { /* an empty object carries nothing to merge */
      kv_buf_free(&obj);
      continue;
    }
    push_add(&p, k->key, k->len, obj);
    x->stats.keys_pushed++;
  }
  if (rc == KV_OK) push_flush(&p);
  x->stats.bytes_sent += p.sent_bytes;
  x->stats.messages_sent += p.sent_msgs;
  push_fini(&p);
  return rc;
}

/* Sends x->pulls in AePull messages of at most max_keys keys and
 * max_push_bytes bytes. */
static void send_pulls(kv_ae *x) {
  ProtobufCBinaryData *keys = kv_malloc(x->npulls * sizeof *keys);
  size_t first = 0;
  while (first < x->npulls) {
    size_t n = 0, bytes = 0;
    while (first + n < x->npulls && n < x->o.max_keys) {
      size_t e = field_len(x->pulls[first + n].len);
      if (n && bytes + e + MSG_OVERHEAD > x->o.max_push_bytes) break;
      keys[n].data = x->pulls[first + n].data;
      keys[n].len = x->pulls[first + n].len;
      bytes += e;
      n++;
    }
    Kvpb__AePull body = KVPB__AE_PULL__INIT;
    body.exchange = x->id;
    body.n_keys = n;
    body.keys = keys;
    Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
    m.body_case = KVPB__PEER_MESSAGE__BODY_AE_PULL;
    m.ae_pull = &body;
    x_send(x, &m);
    first += n;
  }
  free(keys);
}

static int on_segments_reply(kv_ae *x, const Kvpb__AeSegmentsReply *r) {
  if (r->n_segments > x->nreq) return KV_BAD_REQUEST;
  for (size_t i = 0; i < r->n_segments; i++)
    if (r->segments[i] != x->req[i]) return KV_BAD_REQUEST;

  /* Validate every entry before using any: a sane key, a digest, a segment
   * that was answered, no key twice. */
  unsigned bits = kv_merkle_segment_bits(x->st.tree);
  size_t nt = r->n_entries;
  const Kvpb__KeyDigest **theirs = kv_malloc(nt * sizeof *theirs);
  for (size_t i = 0; i < nt; i++) {
    const Kvpb__KeyDigest *e = r->entries[i];
    if (!key_ok(&e->key) || e->digest.len != 16 ||
        !seg_in(r->segments, r->n_segments,
                kv_merkle_segment_of(bits, e->key.data, e->key.len))) {
      free(theirs);
      return KV_BAD_REQUEST;
    }
    theirs[i] = e;
  }
  if (nt > 1) qsort(theirs, nt, sizeof *theirs, kdp_cmp);
  for (size_t i = 1; i < nt; i++)
    if (bin_cmp(&theirs[i - 1]->key, &theirs[i]->key) == 0) {
      free(theirs);
      return KV_BAD_REQUEST;
    }
  if (r->n_segments < x->nreq) x->stats.partial = true;

  kd_vec mine = {0};
  int rc = list_segments(&x->st, r->segments, r->n_segments, &mine);
  if (rc != KV_OK) {
    kd_free(&mine);
    free(theirs);
    return rc;
  }
  if (mine.n > 1) qsort(mine.v, mine.n, sizeof *mine.v, kd_cmp);

  /* One merge-join over both sorted lists: a key only here or with another
   * digest is pushed; a key only there or with another digest is pulled. */
  size_t *push = kv_malloc((mine.n ? mine.n : 1) * sizeof *push);
  size_t *pull = kv_malloc((nt ? nt : 1) * sizeof *pull);
  size_t npush = 0, npull = 0, i = 0, j = 0;
  while (i < mine.n || j < nt) {
    int c = i == mine.n ? 1
            : j == nt   ? -1
                        : kv_buf_cmp(mine.v[i].key, mine.v[i].len,
                                     theirs[j]->key.data, theirs[j]->key.len);
    x->stats.keys_compared++;
    if (c < 0) {
      push[npush++] = i++;
    } else if (c > 0) {
      pull[npull++] = j++;
    } else {
      if (memcmp(mine.v[i].digest, theirs[j]->digest.data, 16) != 0) {
        push[npush++] = i;
        pull[npull++] = j;
      }
      i++, j++;
    }
  }

  /* Pulls go first: a responder answers them before it merges this side's
   * pushes, so a key that differs crosses once each way as each side's own
   * object, not as the merged (larger) one on the way back. Both sides still
   * end with merge(mine, theirs), in whichever order the merges land. */
  if (npull) {
    x->pulls = kv_malloc(npull * sizeof *x->pulls);
    x->got = kv_calloc(npull, 1);
    for (size_t k = 0; k < npull; k++)
      x->pulls[k] =
          kv_buf_dup(theirs[pull[k]]->key.data, theirs[pull[k]]->key.len);
    x->npulls = x->left = npull;
    send_pulls(x);
    x->state = ST_PULL;
  }
  rc = send_pushes(x, &mine, push, npush);
  free(push);
  free(pull);
  free(theirs);
  kd_free(&mine);
  if (rc != KV_OK) return rc;
  return npull ? KV_OK : finish(x);
}

static size_t find_pull(const kv_ae *x, const ProtobufCBinaryData *key) {
  size_t lo = 0, hi = x->npulls;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c =
        kv_buf_cmp(x->pulls[mid].data, x->pulls[mid].len, key->data, key->len);
    if (c == 0) return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return SIZE_MAX;
}

static int on_push(kv_ae *x, const Kvpb__AePush *r, kv_ae_merge_fn merge,
                   void *marg) {
  if (r->n_objects == 0) return KV_BAD_REQUEST;
  /* Only keys this exchange pulled and has not had yet; marks made before a
   * refusal do not matter, since a refusal ends the exchange. */
  for (size_t i = 0; i < r->n_objects; i++) {
    const Kvpb__KeyObject *k = r->objects[i];
    if (!key_ok(&k->key)) return KV_BAD_REQUEST;
    size_t at = find_pull(x, &k->key);
    if (at == SIZE_MAX || x->got[at]) return KV_BAD_REQUEST;
    x->got[at] = 1;
  }
  for (size_t i = 0; i < r->n_objects; i++) {
    const Kvpb__KeyObject *k = r->objects[i];
    if (!k->object.len) continue; /* the peer no longer holds it */
    merge(marg, k->key.data, k->key.len, k->object.data, k->object.len);
    x->stats.keys_pulled++;
  }
  x->left -= r->n_objects;
  return x->left ? KV_OK : finish(x);
}

int kv_ae_feed(kv_ae *x, const uint8_t *msg, size_t len, kv_ae_merge_fn merge,
               void *marg) {
  if (x->state == ST_OVER) return KV_BAD_REQUEST;
  x->stats.messages_received++;
  x->stats.bytes_received += len;
  Kvpb__PeerMessage *m = decode(msg, len);
  uint64_t id;
  bool to_init;
  int rc = KV_BAD_REQUEST;
  if (m && ae_route(m, &id, &to_init) && to_init && id == x->id) {
    switch (x->state) {
    case ST_ROOT:
      if (m->body_case == KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY)
        rc = on_root_reply(x, m->ae_root_reply);
      break;
    case ST_LEVEL:
      if (m->body_case == KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY)
        rc = on_level_reply(x, m->ae_level_reply);
      break;
    case ST_SEGMENTS:
      if (m->body_case == KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY)
        rc = on_segments_reply(x, m->ae_segments_reply);
      break;
    case ST_PULL:
      if (m->body_case == KVPB__PEER_MESSAGE__BODY_AE_PUSH)
        rc = on_push(x, m->ae_push, merge, marg);
      break;
    case ST_OVER:
      break;
    }
  }
  if (m) kvpb__peer_message__free_unpacked(m, NULL);
  if (rc != KV_OK) x->state = ST_OVER;
  return rc;
}

/* ---- responder ---- */

static int resp_root(const kv_ae_store *st, const Kvpb__AeRoot *q,
                     kv_ae_send_fn send, void *arg) {
  if (q->root.len != KV_AE_ROOT_PREFIX) return KV_BAD_REQUEST;
  kv_hash root = kv_merkle_root(st->tree);
  Kvpb__AeRootReply body = KVPB__AE_ROOT_REPLY__INIT;
  body.exchange = q->exchange;
  body.root.data = root.b;
  body.root.len = KV_AE_ROOT_PREFIX;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_ROOT_REPLY;
  m.ae_root_reply = &body;
  send_msg(&m, send, arg);
  return KV_OK;
}

/* True when n indices are strictly increasing and all below size. */
static bool indices_ok(const uint32_t *v, size_t n, uint32_t size) {
  for (size_t i = 0; i < n; i++)
    if (v[i] >= size || (i && v[i] <= v[i - 1])) return false;
  return true;
}

static int resp_level(const kv_ae_opts *o, const kv_ae_store *st,
                      const Kvpb__AeLevelReq *q, kv_ae_send_fn send,
                      void *arg) {
  const kv_merkle *t = st->tree;
  if (q->level >= kv_merkle_depth(t) - 1 || q->n_nodes == 0 ||
      !indices_ok(q->nodes, q->n_nodes, kv_merkle_level_size(t, q->level)))
    return KV_BAD_REQUEST;
  size_t n = q->n_nodes < o->max_segments ? q->n_nodes : o->max_segments;
  uint32_t fan = kv_merkle_fanout_at(t, q->level);
  kv_hash *h = kv_malloc(n * fan * sizeof *h);
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < fan; j++)
      h[i * fan + j] =
          kv_merkle_node(t, q->level + 1, q->nodes[i] * KV_MERKLE_FANOUT + j);
  Kvpb__AeLevelReply body = KVPB__AE_LEVEL_REPLY__INIT;
  body.exchange = q->exchange;
  body.level = q->level;
  body.n_nodes = n;
  body.nodes = q->nodes;
  body.hashes.data = (uint8_t *)h;
  body.hashes.len = n * fan * sizeof *h;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REPLY;
  m.ae_level_reply = &body;
  send_msg(&m, send, arg);
  free(h);
  return KV_OK;
}

static int resp_segments(const kv_ae_opts *o, const kv_ae_store *st,
                         const Kvpb__AeSegmentsReq *q, kv_ae_send_fn send,
                         void *arg) {
  if (q->n_segments == 0 ||
      !indices_ok(q->segments, q->n_segments, kv_merkle_segments(st->tree)))
    return KV_BAD_REQUEST;
  size_t want =
      q->n_segments < o->max_segments ? q->n_segments : o->max_segments;
  /* Whole segments only, up to max_keys entries; the first is answered
   * whatever its size, or an overfull segment would never be repaired. */
  kd_vec v = {0};
  size_t answered = 0;
  for (; answered < want; answered++) {
    size_t before = v.n;
    int rc = st->list_segment(st->ctx, q->segments[answered], kd_collect, &v);
    if (rc != KV_OK) {
      kd_free(&v);
      return rc;
    }
    if (v.n > o->max_keys) {
      if (answered == 0) {
        answered = 1;
      } else {
        kd_truncate(&v, before);
      }
      break;
    }
  }

  Kvpb__KeyDigest *kd = kv_malloc((v.n ? v.n : 1) * sizeof *kd);
  Kvpb__KeyDigest **kdp = kv_malloc((v.n ? v.n : 1) * sizeof *kdp);
  for (size_t i = 0; i < v.n; i++) {
    kvpb__key_digest__init(&kd[i]);
    kd[i].key.data = v.v[i].key;
    kd[i].key.len = v.v[i].len;
    kd[i].digest.data = v.v[i].digest;
    kd[i].digest.len = 16;
    kdp[i] = &kd[i];
  }
  Kvpb__AeSegmentsReply body = KVPB__AE_SEGMENTS_REPLY__INIT;
  body.exchange = q->exchange;
  body.n_segments = answered;
  body.segments = q->segments;
  body.n_entries = v.n;
  body.entries = kdp;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REPLY;
  m.ae_segments_reply = &body;
  send_msg(&m, send, arg);
  free(kd);
  free(kdp);
  kd_free(&v);
  return KV_OK;
}

static int resp_push(const Kvpb__AePush *q, kv_ae_merge_fn merge, void *marg) {
  if (q->n_objects == 0) return KV_BAD_REQUEST;
  const ProtobufCBinaryData **keys = kv_malloc(q->n_objects * sizeof *keys);
  bool ok = true;
  for (size_t i = 0; i < q->n_objects && ok; i++) {
    ok = key_ok(&q->objects[i]->key);
    keys[i] = &q->objects[i]->key;
  }
  ok = ok && keys_distinct(keys, q->n_objects);
  free(keys);
  if (!ok) return KV_BAD_REQUEST;
  for (size_t i = 0; i < q->n_objects; i++) {
    const Kvpb__KeyObject *k = q->objects[i];
    if (k->object.len)
      merge(marg, k->key.data, k->key.len, k->object.data, k->object.len);
  }
  return KV_OK;
}

static int resp_pull(const kv_ae_opts *o, const kv_ae_store *st,
                     const Kvpb__AePull *q, kv_ae_send_fn send, void *arg) {
  if (q->n_keys == 0 || q->n_keys > o->max_keys) return KV_BAD_REQUEST;
  const ProtobufCBinaryData **keys = kv_malloc(q->n_keys * sizeof *keys);
  bool ok = true;
  for (size_t i = 0; i < q->n_keys && ok; i++) {
    ok = key_ok(&q->keys[i]);
    keys[i] = &q->keys[i];
  }
  ok = ok && keys_distinct(keys, q->n_keys);
  free(keys);
  if (!ok) return KV_BAD_REQUEST;

  pusher p = {
      .id = q->exchange, .max = o->max_push_bytes, .send = send, .arg = arg};
  int rc = KV_OK;
  for (size_t i = 0; i < q->n_keys && rc == KV_OK; i++) {
    kv_buf obj = {NULL, 0};
    rc = st->get_object(st->ctx, q->keys[i].data, q->keys[i].len, &obj);
    if (rc == KV_NOTFOUND) {
      /* Empty bytes say "nothing here", so the initiator can count every
       * pull as answered. */
      kv_buf_free(&obj);
      obj = (kv_buf){NULL, 0};
      rc = KV_OK;
    }
    if (rc == KV_OK) push_add(&p, q->keys[i].data, q->keys[i].len, obj);
  }
  if (rc == KV_OK) push_flush(&p);
  push_fini(&p);
  return rc;
}

int kv_ae_respond(const kv_ae_opts *o, const kv_ae_store *st,
                  const uint8_t *msg, size_t len, kv_ae_send_fn send, void *arg,
                  kv_ae_merge_fn merge, void *marg) {
  kv_assert(st && st->tree && st->list_segment && st->get_object && send &&
            merge);
  kv_ae_opts op = resolve(o);
  Kvpb__PeerMessage *m = decode(msg, len);
  if (!m) return KV_BAD_REQUEST;
  int rc = KV_BAD_REQUEST;
  switch (m->body_case) {
  case KVPB__PEER_MESSAGE__BODY_AE_ROOT:
    rc = resp_root(st, m->ae_root, send, arg);
    break;
  case KVPB__PEER_MESSAGE__BODY_AE_LEVEL_REQ:
    rc = resp_level(&op, st, m->ae_level_req, send, arg);
    break;
  case KVPB__PEER_MESSAGE__BODY_AE_SEGMENTS_REQ:
    rc = resp_segments(&op, st, m->ae_segments_req, send, arg);
    break;
  case KVPB__PEER_MESSAGE__BODY_AE_PUSH:
    rc = resp_push(m->ae_push, merge, marg);
    break;
  case KVPB__PEER_MESSAGE__BODY_AE_PULL:
    rc = resp_pull(&op, st, m->ae_pull, send, arg);
    break;
  case KVPB__PEER_MESSAGE__BODY_AE_DONE:
    rc = KV_OK;
    break;
  default:
    break;
  }
  kvpb__peer_message__free_unpacked(m, NULL);
  return rc;
}

int kv_ae_message_exchange(const uint8_t *msg, size_t len, uint64_t *exchange,
                           bool *to_initiator) {
  Kvpb__PeerMessage *m = decode(msg, len);
  if (!m) return KV_BAD_REQUEST;
  uint64_t id = 0;
  bool to_init = false;
  bool ok = ae_route(m, &id, &to_init);
  kvpb__peer_message__free_unpacked(m, NULL);
  if (!ok) return KV_BAD_REQUEST;
  *exchange = id;
  *to_initiator = to_init;
  return KV_OK;
}
