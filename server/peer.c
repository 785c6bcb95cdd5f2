/*
 * Replication for kvd: the peer listener, one outbound TCP connection per
 * known peer, envelope sealing, and the libuv driver of the sans-I/O rumor
 * (sync/rumor) and anti-entropy (sync/antientropy) cores.
 *
 * Sending rule: a replica sends to a peer only on its own outbound connection
 * to it; inbound connections are receive-only. So every envelope from A to B
 * travels on one ordered stream, and B's replay window (sync/seal) never sees
 * A's counters out of order because of two connections racing. Replies (rumor
 * acks, anti-entropy answers) therefore go out on the replier's outbound
 * connection. A peer is "alive", and can be chosen for rumors and exchanges,
 * once our outbound connection is up and its Hello has reached us.
 *
 * Peers come from --join; a replica that says Hello from an address we do not
 * know is added, so joining through one seed connects both ways. A peer that
 * is down is retried with exponential backoff, never forgotten.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/kv.pb-c.h"
#include "proto/peer.pb-c.h"
#include "server/log.h"
#include "server/server.h"
#include "sync/antientropy.h"
#include "sync/rng.h"
#include "sync/rumor.h"
#include "sync/seal.h"

#define PROTOCOL 1
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_UNSENT (32u << 20) /* bytes queued to one peer */
#define MAX_PEER_MERGES 20000  /* peer writes in flight */
#define AE_TIMEOUT_MS 30000
#define MAX_PEERS 1024

typedef struct kvd_peers kvd_peers;

typedef struct ae_send_ctx {
  struct peer *to;
} ae_send_ctx;

typedef struct peer {
  struct kvd_peers *ps;
  char addr[128];
  char name[64];
  uint64_t id;
  bool id_known;
  uv_tcp_t *tcp; /* outbound; NULL while not connected */
  bool connected;
  uv_timer_t retry;
  uint64_t backoff_ms;
  /* Rumor pushes gathered during one tick, sent as one message. */
  Kvpb__Rumor **batch;
  size_t nbatch, capbatch;
  /* Figures for status. */
  uint64_t exchanges, keys_pushed, keys_pulled, bytes_sent, bytes_received;
  uint64_t last_exchange_ms, dropped_sends;
} peer;

typedef struct pconn {
  uv_tcp_t tcp;
  struct kvd_peers *ps;
  kv_frame_reader *frames;
  uint64_t sender;
  bool hello;
  char from[64];
  struct pconn *prev, *next;
} pconn;

struct kvd_peers {
  kvd *srv;
  kv_seal *seal;
  kv_rumor *rumor;
  kv_rng rng;
  uv_tcp_t lsn;
  uv_timer_t rumor_timer, ae_timer;
  peer *peers[MAX_PEERS];
  size_t npeers;
  pconn *inbound;
  size_t merges_in_flight;
  /* The one exchange this replica is running as initiator, if any. */
  kv_ae *ae;
  peer *ae_peer;
  uint64_t ae_started;
  uint64_t ae_xid; /* id of the exchange we run as initiator */
  size_t ae_next;  /* round robin position */
  ae_send_ctx ae_send;
  uint64_t invalid[KV_SEAL_NVERDICTS];
  uint64_t refused_hellos, dropped_merges, malformed;
  uint64_t msgs_sent, bytes_sent, msgs_received, bytes_received;
  bool stopping;
  char advertise[128]; /* our peer address as bound (port 0 resolved) */
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- sending ---- */

typedef struct out_req {
  uv_write_t req;
  uint8_t *data;
} out_req;

static void on_peer_written(uv_write_t *req, int status) {
  (void)status;
  out_req *o = (out_req *)req;
  free(o->data);
  free(o);
}

/* Seals and sends an encoded PeerMessage to pe on our outbound connection.
 * Dropped (and counted) when pe is not connected or too far behind: rumors
 * and anti-entropy both tolerate loss. */
static void send_bytes(peer *pe, const uint8_t *msg, size_t len) {
  kvd_peers *ps = pe->ps;
  if (!pe->connected ||
      uv_stream_get_write_queue_size((uv_stream_t *)pe->tcp) > MAX_UNSENT) {
    pe->dropped_sends++;
    return;
  }
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  randombytes_buf(nonce, sizeof nonce);
  kv_buf env;
  kv_seal_seal(ps->seal, now_ms(), nonce, msg, len, &env);
  out_req *o = kv_calloc(1, sizeof *o);
  o->data = kv_malloc(KV_FRAME_HEADER + env.len);
  kv_frame_header(o->data, env.len);
  memcpy(o->data + KV_FRAME_HEADER, env.data, env.len);
  uv_buf_t b =
      uv_buf_init((char *)o->data, (unsigned)(KV_FRAME_HEADER + env.len));
  pe->bytes_sent += KV_FRAME_HEADER + env.len;
  ps->msgs_sent++;
  ps->bytes_sent += KV_FRAME_HEADER + env.len;
  kv_buf_free(&env);
  if (uv_write(&o->req, (uv_stream_t *)pe->tcp, &b, 1, on_peer_written) < 0) {
    free(o->data);
    free(o);
  }
}

static void send_msg(peer *pe, const Kvpb__PeerMessage *m) {
  size_t n = kvpb__peer_message__get_packed_size(m);
  uint8_t *buf = kv_malloc(n);
  kvpb__peer_message__pack(m, buf);
  send_bytes(pe, buf, n);
  free(buf);
}

static peer *peer_by_id(kvd_peers *ps, uint64_t id) {
  for (size_t i = 0; i < ps->npeers; i++)
    if (ps->peers[i]->id_known && ps->peers[i]->id == id) return ps->peers[i];
  return NULL;
}

static peer *peer_by_addr(kvd_peers *ps, const char *addr) {
  for (size_t i = 0; i < ps->npeers; i++)
    if (!strcmp(ps->peers[i]->addr, addr)) return ps->peers[i];
  return NULL;
}

static bool peer_alive(const peer *pe) { return pe->connected && pe->id_known; }

/* ---- outbound connections ---- */

static void connect_peer(peer *pe);

static void on_retry(uv_timer_t *t) { connect_peer(t->data); }

static void on_out_closed(uv_handle_t *h) { free(h); }

static void schedule_retry(peer *pe) {
  if (pe->ps->stopping) return;
  pe->backoff_ms = pe->backoff_ms ? pe->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (pe->backoff_ms > BACKOFF_MAX_MS) pe->backoff_ms = BACKOFF_MAX_MS;
  uv_timer_start(&pe->retry, on_retry, pe->backoff_ms, 0);
}

static void drop_outbound(peer *pe, const char *why) {
  if (!pe->tcp) return;
  if (pe->connected)
    log_info("peer_disconnected", "peer=%s name=%s reason=%s", pe->addr,
             pe->name[0] ? pe->name : "?", why);
  pe->connected = false;
  if (!uv_is_closing((uv_handle_t *)pe->tcp))
    uv_close((uv_handle_t *)pe->tcp, on_out_closed);
  pe->tcp = NULL;
  schedule_retry(pe);
}

/* The outbound side only writes; reading tells us when the peer closed. */
static void on_out_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char sink[4096];
  buf->base = sink;
  buf->len = sizeof sink;
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n < 0)
    drop_outbound(s->data, n == UV_EOF ? "closed" : uv_strerror((int)n));
}

static void send_hello(peer *pe) {
  kvd_peers *ps = pe->ps;
  kvd_config *cfg = ps->srv->cfg;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  Kvpb__Hello h = KVPB__HELLO__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_HELLO;
  m.hello = &h;
  h.cluster = cfg->cluster;
  h.protocol = PROTOCOL;
  h.segment_bits = kv_store_segment_bits(ps->srv->store);
  h.replica_id = kv_store_replica_id(ps->srv->store);
  h.name = cfg->name;
  h.peer_addr = ps->advertise;
  send_msg(pe, &m);
}

static void on_connected(uv_connect_t *req, int status) {
  peer *pe = req->data;
  uv_tcp_t *tcp = (uv_tcp_t *)req->handle;
  free(req);
  if (tcp != pe->tcp) return; /* superseded */
  if (status < 0) {
    log_debug("peer_connect_failed", "peer=%s err=\"%s\"", pe->addr,
              uv_strerror(status));
    drop_outbound(pe, "connect_failed");
    return;
  }
  pe->connected = true;
  pe->backoff_ms = 0;
  uv_tcp_nodelay(tcp, 1);
  uv_read_start((uv_stream_t *)tcp, on_out_alloc, on_out_read);
  log_info("peer_connected", "peer=%s", pe->addr);
  send_hello(pe);
}

static void connect_peer(peer *pe) {
  kvd_peers *ps = pe->ps;
  if (pe->tcp || ps->stopping) return;
  char host[128];
  int port;
  struct sockaddr_storage ss;
  if (kvd_parse_addr(pe->addr, host, sizeof host, &port) ||
      (strchr(host, ':')
           ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
           : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss))) {
    log_warn("peer_bad_address", "peer=%s", pe->addr);
    return;
  }
  pe->tcp = kv_calloc(1, sizeof *pe->tcp);
  uv_tcp_init(ps->srv->loop, pe->tcp);
  pe->tcp->data = pe;
  uv_connect_t *req = kv_calloc(1, sizeof *req);
  req->data = pe;
  if (uv_tcp_connect(req, pe->tcp, (struct sockaddr *)&ss, on_connected) < 0) {
    free(req);
    drop_outbound(pe, "connect_failed");
  }
}

static peer *add_peer(kvd_peers *ps, const char *addr) {
  peer *pe = peer_by_addr(ps, addr);
  if (pe) return pe;
  if (ps->npeers == MAX_PEERS) return NULL;
  pe = kv_calloc(1, sizeof *pe);
  pe->ps = ps;
  snprintf(pe->addr, sizeof pe->addr, "%s", addr);
  uv_timer_init(ps->srv->loop, &pe->retry);
  pe->retry.data = pe;
  ps->peers[ps->npeers++] = pe;
  connect_peer(pe);
  return pe;
}

/* ---- rumors ---- */

static void rumor_emit(void *arg, uint64_t to, const uint8_t *key,
                       size_t keylen, const uint8_t *obj, size_t objlen) {
  kvd_peers *ps = arg;
  peer *pe = peer_by_id(ps, to);
  if (!pe) return;
  if (pe->nbatch == pe->capbatch) {
    pe->capbatch = pe->capbatch ? pe->capbatch * 2 : 16;
    pe->batch = kv_realloc(pe->batch, pe->capbatch * sizeof *pe->batch);
  }
  Kvpb__Rumor *r = kv_malloc(sizeof *r);
  kvpb__rumor__init(r);
  kv_buf k = kv_buf_dup(key, keylen), o = kv_buf_dup(obj, objlen);
  r->key.data = k.data;
  r->key.len = k.len;
  r->object.data = o.data;
  r->object.len = o.len;
  pe->batch[pe->nbatch++] = r;
}

static void flush_batches(kvd_peers *ps) {
  for (size_t i = 0; i < ps->npeers; i++) {
    peer *pe = ps->peers[i];
    if (!pe->nbatch) continue;
    Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
    Kvpb__Rumors rs = KVPB__RUMORS__INIT;
    m.body_case = KVPB__PEER_MESSAGE__BODY_RUMORS;
    m.rumors = &rs;
    rs.n_rumors = pe->nbatch;
    rs.rumors = pe->batch;
    send_msg(pe, &m);
    for (size_t j = 0; j < pe->nbatch; j++) {
      free(pe->batch[j]->key.data);
      free(pe->batch[j]->object.data);
      free(pe->batch[j]);
    }
    pe->nbatch = 0;
  }
}

static void on_rumor_timer(uv_timer_t *t);

static void rumor_tick(kvd_peers *ps) {
  uint64_t alive[MAX_PEERS];
  size_t n = 0;
  for (size_t i = 0; i < ps->npeers; i++)
    if (peer_alive(ps->peers[i])) alive[n++] = ps->peers[i]->id;
  uint64_t now = now_ms();
  uint64_t next =
      kv_rumor_tick(ps->rumor, now, &ps->rng, alive, n, rumor_emit, ps);
  flush_batches(ps);
  uv_timer_stop(&ps->rumor_timer);
  if (next != UINT64_MAX && !ps->stopping)
    uv_timer_start(&ps->rumor_timer, on_rumor_timer,
                   next > now ? next - now : 0, 0);
}

static void on_rumor_timer(uv_timer_t *t) { rumor_tick(t->data); }

/* Pushes on the next loop iteration, so every write completed in this
 * wake-up is coalesced into one message per peer. */
static void rumor_soon(kvd_peers *ps) {
  if (!ps->stopping) uv_timer_start(&ps->rumor_timer, on_rumor_timer, 0, 0);
}

static void digest_of(const uint8_t *obj, size_t len, uint8_t d[16]) {
  kv_object_digest(obj, len, d);
}

void kvd_peers_local_write(kvd *srv, const kv_write *w) {
  kvd_peers *ps = srv->peers;
  if (!ps || !srv->cfg->rumors_n || !w->object.len) return;
  uint8_t d[16];
  digest_of(w->object.data, w->object.len, d);
  kv_rumor_add(ps->rumor, w->key, w->keylen, w->object.data, w->object.len, d,
               0, now_ms());
  rumor_soon(ps);
}

/* A merge on behalf of a peer: a rumor (acked, maybe forwarded) or an
 * anti-entropy repair. Owns copies of key and object. */
typedef struct peer_merge {
  kvd_write kw;
  kvd_peers *ps;
  uint64_t sender;
  bool rumor;
  uint8_t digest[16];
  kv_buf key, obj;
} peer_merge;

static void send_ack(kvd_peers *ps, uint64_t to, const kv_buf *key,
                     const uint8_t digest[16], bool news) {
  peer *pe = peer_by_id(ps, to);
  if (!pe) return;
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  Kvpb__RumorAcks as = KVPB__RUMOR_ACKS__INIT;
  Kvpb__RumorAck a = KVPB__RUMOR_ACK__INIT, *ap = &a;
  m.body_case = KVPB__PEER_MESSAGE__BODY_RUMOR_ACKS;
  m.rumor_acks = &as;
  as.n_acks = 1;
  as.acks = &ap;
  a.key.data = key->data;
  a.key.len = key->len;
  a.digest.data = (uint8_t *)digest;
  a.digest.len = 16;
  a.news = news;
  send_msg(pe, &m);
}

static void merge_done(kvd_write *kw) {
  peer_merge *pm = (peer_merge *)kw;
  kvd_peers *ps = pm->ps;
  kv_write *w = &kw->w;
  ps->merges_in_flight--;
  if (w->status != KV_OK)
    log_debug("peer_merge_failed", "err=%s", kv_err_name(w->status));
  if (pm->rumor && !ps->stopping) {
    bool news = w->status == KV_OK && w->changed;
    send_ack(ps, pm->sender, &pm->key, pm->digest, news);
    if (news && ps->srv->cfg->rumors_n) {
      uint8_t d[16];
      digest_of(w->object.data, w->object.len, d);
      kv_rumor_add(ps->rumor, pm->key.data, pm->key.len, w->object.data,
                   w->object.len, d, pm->sender, now_ms());
      rumor_soon(ps);
    }
  }
  kv_write_fini(w);
  kv_buf_free(&pm->key);
  kv_buf_free(&pm->obj);
  free(pm);
}

static void submit_merge(kvd_peers *ps, uint64_t sender, bool rumor,
                         const uint8_t *key, size_t keylen, const uint8_t *obj,
                         size_t objlen) {
  if (keylen == 0 || keylen > KV_STORE_MAX_KEY ||
      ps->merges_in_flight >= MAX_PEER_MERGES || ps->stopping) {
    ps->dropped_merges++;
    return;
  }
  peer_merge *pm = kv_calloc(1, sizeof *pm);
  pm->ps = ps;
  pm->sender = sender;
  pm->rumor = rumor;
  pm->key = kv_buf_dup(key, keylen);
  pm->obj = kv_buf_dup(obj, objlen);
  digest_of(obj, objlen, pm->digest);
  kv_write_init(&pm->kw.w);
  pm->kw.complete = merge_done;
  pm->kw.w.op = KV_WRITE_MERGE;
  pm->kw.w.key = pm->key.data;
  pm->kw.w.keylen = pm->key.len;
  pm->kw.w.remote = pm->obj.data ? pm->obj.data : (const uint8_t *)"";
  pm->kw.w.remotelen = pm->obj.len;
  if (kvd_submit_write(ps->srv, &pm->kw) != KV_OK) {
    kv_buf_free(&pm->key);
    kv_buf_free(&pm->obj);
    free(pm);
    return;
  }
  ps->merges_in_flight++;
}

/* ---- anti-entropy ---- */

typedef struct ae_list_ctx {
  kv_ae_key_fn fn;
  void *arg;
} ae_list_ctx;

static bool ae_visit(const uint8_t *key, size_t keylen, const uint8_t *obj,
                     size_t objlen, void *arg) {
  ae_list_ctx *c = arg;
  uint8_t d[16];
  digest_of(obj, objlen, d);
  c->fn(c->arg, key, keylen, d);
  return true;
}

static int ae_list_segment(void *ctx, uint32_t seg, kv_ae_key_fn fn,
                           void *arg) {
  kvd_peers *ps = ctx;
  ae_list_ctx c = {fn, arg};
  return kv_store_segment(ps->srv->store, seg, ae_visit, &c);
}

static int ae_get_object(void *ctx, const uint8_t *key, size_t keylen,
                         kv_buf *obj) {
  kvd_peers *ps = ctx;
  return kv_store_get_raw(ps->srv->store, key, keylen, obj);
}

static kv_ae_store ae_store_of(kvd_peers *ps) {
  kv_ae_store st = {ps, ps->srv->tree, ae_list_segment, ae_get_object};
  return st;
}

static kv_ae_opts ae_opts_of(kvd_peers *ps) {
  kv_ae_opts o = {0};
  o.max_segments = ps->srv->cfg->ae_max_segments_n;
  o.max_keys = ps->srv->cfg->ae_max_keys_n;
  return o;
}

static void ae_send(void *arg, const uint8_t *msg, size_t len) {
  ae_send_ctx *c = arg;
  send_bytes(c->to, msg, len);
}

typedef struct ae_merge_ctx {
  kvd_peers *ps;
  uint64_t sender;
} ae_merge_ctx;

static void ae_merge(void *arg, const uint8_t *key, size_t keylen,
                     const uint8_t *obj, size_t objlen) {
  ae_merge_ctx *c = arg;
  submit_merge(c->ps, c->sender, false, key, keylen, obj, objlen);
}

static void ae_finish(kvd_peers *ps, const char *outcome) {
  const kv_ae_stats *st = kv_ae_stats_of(ps->ae);
  peer *pe = ps->ae_peer;
  pe->exchanges++;
  pe->keys_pushed += st->keys_pushed;
  pe->keys_pulled += st->keys_pulled;
  pe->last_exchange_ms = now_ms();
  int level = st->in_sync ? KVD_LOG_DEBUG : KVD_LOG_INFO;
  kvd_log(level, "ae_exchange",
          "peer=%s outcome=%s in_sync=%d segments=%llu keys_pushed=%llu "
          "keys_pulled=%llu bytes_sent=%llu bytes_received=%llu ms=%llu",
          pe->name[0] ? pe->name : pe->addr, outcome, st->in_sync,
          (unsigned long long)st->segments_differing,
          (unsigned long long)st->keys_pushed,
          (unsigned long long)st->keys_pulled,
          (unsigned long long)st->bytes_sent,
          (unsigned long long)st->bytes_received,
          (unsigned long long)(now_ms() - ps->ae_started));
  kv_ae_free(ps->ae);
  ps->ae = NULL;
  ps->ae_peer = NULL;
}

static void on_ae_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  if (ps->ae) {
    if (now_ms() - ps->ae_started < AE_TIMEOUT_MS) return;
    ae_finish(ps, "timeout");
  }
  /* The next alive peer in round-robin order (DESIGN §6.1). */
  for (size_t tries = 0; tries < ps->npeers; tries++) {
    peer *pe = ps->peers[ps->ae_next++ % ps->npeers];
    if (!peer_alive(pe)) continue;
    kv_ae_opts o = ae_opts_of(ps);
    kv_ae_store st = ae_store_of(ps);
    ps->ae_peer = pe;
    ps->ae_started = now_ms();
    ps->ae_send.to = pe;
    ps->ae_xid = kv_rng_next(&ps->rng);
    ps->ae = kv_ae_start(&o, &st, ps->ae_xid, ae_send, &ps->ae_send);
    break;
  }
}

static void handle_ae(kvd_peers *ps, pconn *pc, const uint8_t *msg, size_t len,
                      bool is_push) {
  uint64_t xid;
  bool to_initiator;
  if (kv_ae_message_exchange(msg, len, &xid, &to_initiator) != KV_OK) {
    ps->malformed++;
    return;
  }
  peer *from = peer_by_id(ps, pc->sender);
  if (!from) return;
  ae_merge_ctx mc = {ps, pc->sender};
  /* An AePush is also how the peer's own exchange pushes to us: only one
   * for our open exchange (same peer, same id) is fed to it; any other goes
   * to kv_ae_respond, which merges it. */
  bool ours = ps->ae && ps->ae_peer == from && xid == ps->ae_xid;
  if (to_initiator && !ours && !is_push) return; /* stale or unknown */
  if (to_initiator && ours) {
    int rc = kv_ae_feed(ps->ae, msg, len, ae_merge, &mc);
    if (rc == KV_CLOSED)
      ae_finish(ps, "done");
    else if (rc != KV_OK) {
      ps->malformed++;
      ae_finish(ps, "malformed");
    }
    return;
  }
  kv_ae_opts o = ae_opts_of(ps);
  kv_ae_store st = ae_store_of(ps);
  ae_send_ctx sc = {from};
  if (kv_ae_respond(&o, &st, msg, len, ae_send, &sc, ae_merge, &mc) != KV_OK)
    ps->malformed++;
}

/* ---- inbound connections ---- */

static void on_in_closed(uv_handle_t *h) {
  pconn *pc = h->data;
  kv_frame_reader_free(pc->frames);
  free(pc);
}

static void close_inbound(pconn *pc) {
  kvd_peers *ps = pc->ps;
  if (uv_is_closing((uv_handle_t *)&pc->tcp)) return;
  if (pc->prev)
    pc->prev->next = pc->next;
  else
    ps->inbound = pc->next;
  if (pc->next) pc->next->prev = pc->prev;
  uv_close((uv_handle_t *)&pc->tcp, on_in_closed);
}

static bool handle_hello(kvd_peers *ps, pconn *pc, const Kvpb__Hello *h,
                         uint64_t sender) {
  kvd *srv = ps->srv;
  const char *why = NULL;
  if (strcmp(h->cluster, srv->cfg->cluster) != 0)
    why = "cluster name differs";
  else if (h->protocol != PROTOCOL)
    why = "protocol version differs";
  else if (h->segment_bits != kv_store_segment_bits(srv->store))
    why = "segment count differs";
  else if (h->replica_id != sender)
    why = "hello sender mismatch";
  else if (sender == kv_store_replica_id(srv->store))
    why = "own replica id";
  if (why) {
    ps->refused_hellos++;
    log_warn("peer_refused",
             "from=%s name=%s reason=\"%s\" their_cluster=%s "
             "their_protocol=%u their_segment_bits=%u",
             pc->from, h->name, why, h->cluster, h->protocol, h->segment_bits);
    return false;
  }
  pc->hello = true;
  pc->sender = sender;
  peer *pe = peer_by_addr(ps, h->peer_addr);
  if (!pe) pe = add_peer(ps, h->peer_addr); /* learned from the peer itself */
  if (!pe) return false;
  /* Another entry may hold this id (the peer moved address): forget it. */
  peer *old = peer_by_id(ps, sender);
  if (old && old != pe) old->id_known = false;
  if (!pe->id_known || pe->id != sender)
    log_info("peer_known", "peer=%s name=%s replica_id=%016llx", pe->addr,
             h->name, (unsigned long long)sender);
  pe->id = sender;
  pe->id_known = true;
  snprintf(pe->name, sizeof pe->name, "%s", h->name);
  return true;
}

static void handle_message(kvd_peers *ps, pconn *pc, const uint8_t *msg,
                           size_t len, uint64_t sender) {
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, len, msg);
  if (!m) {
    ps->malformed++;
    return;
  }
  if (!pc->hello) {
    if (m->body_case != KVPB__PEER_MESSAGE__BODY_HELLO ||
        !handle_hello(ps, pc, m->hello, sender))
      close_inbound(pc);
    kvpb__peer_message__free_unpacked(m, NULL);
    return;
  }
  if (sender != pc->sender) { /* a connection speaks for one replica */
    ps->malformed++;
    close_inbound(pc);
    kvpb__peer_message__free_unpacked(m, NULL);
    return;
  }
  peer *pe = peer_by_id(ps, sender);
  if (pe) pe->bytes_received += len;
  switch (m->body_case) {
  case KVPB__PEER_MESSAGE__BODY_RUMORS:
    for (size_t i = 0; i < m->rumors->n_rumors; i++) {
      Kvpb__Rumor *r = m->rumors->rumors[i];
      submit_merge(ps, sender, true, r->key.data, r->key.len, r->object.data,
                   r->object.len);
    }
    break;
  case KVPB__PEER_MESSAGE__BODY_RUMOR_ACKS:
    for (size_t i = 0; i < m->rumor_acks->n_acks; i++) {
      Kvpb__RumorAck *a = m->rumor_acks->acks[i];
      if (a->digest.len != 16 || a->key.len == 0 ||
          a->key.len > KV_STORE_MAX_KEY)
        continue;
      kv_rumor_ack(ps->rumor, sender, a->key.data, a->key.len, a->digest.data,
                   a->news, now_ms());
    }
    rumor_soon(ps);
    break;
  case KVPB__PEER_MESSAGE__BODY_HELLO:
    handle_hello(ps, pc, m->hello, sender);
    break;
  default:
    /* --anti-entropy no only stops this replica starting exchanges; it
     * still answers its peers', so they can repair it and it them. */
    handle_ae(ps, pc, msg, len,
              m->body_case == KVPB__PEER_MESSAGE__BODY_AE_PUSH);
    break;
  }
  kvpb__peer_message__free_unpacked(m, NULL);
}

static void on_in_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = kv_malloc(65536);
  buf->len = 65536;
}

static void on_in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pconn *pc = s->data;
  kvd_peers *ps = pc->ps;
  if (n < 0) {
    free(buf->base);
    close_inbound(pc);
    return;
  }
  int rc = kv_frame_reader_feed(pc->frames, buf->base, (size_t)n);
  free(buf->base);
  kv_buf frame;
  while (rc == KV_OK && !uv_is_closing((uv_handle_t *)&pc->tcp) &&
         (rc = kv_frame_reader_next(pc->frames, &frame)) == KV_OK) {
    kv_seal_info info;
    kv_buf body;
    kv_seal_verdict v =
        kv_seal_open(ps->seal, now_ms(), frame.data, frame.len, &info, &body);
    if (v != KV_SEAL_OK) {
      /* Counted by reason; logged at most once a second so that a flood
       * cannot flood the log too. */
      static uint64_t last_log;
      ps->invalid[v]++;
      if (now_ms() - last_log >= 1000) {
        last_log = now_ms();
        log_warn("peer_envelope_rejected", "from=%s reason=%s total=%llu",
                 pc->from, kv_seal_verdict_name(v),
                 (unsigned long long)ps->invalid[v]);
      }
      close_inbound(pc);
      return;
    }
    ps->msgs_received++;
    ps->bytes_received += KV_FRAME_HEADER + frame.len;
    handle_message(ps, pc, body.data, body.len, info.sender);
    kv_buf_free(&body);
  }
  if (rc == KV_FRAME_TOO_LARGE) {
    log_warn("peer_frame_too_large", "from=%s", pc->from);
    close_inbound(pc);
  }
}

static void on_peer_connection(uv_stream_t *lsn, int status) {
  kvd_peers *ps = lsn->data;
  if (status < 0) return;
  pconn *pc = kv_calloc(1, sizeof *pc);
  pc->ps = ps;
  uv_tcp_init(ps->srv->loop, &pc->tcp);
  pc->tcp.data = pc;
  if (uv_accept(lsn, (uv_stream_t *)&pc->tcp) < 0 || ps->stopping) {
    uv_close((uv_handle_t *)&pc->tcp, on_in_closed);
    return;
  }
  pc->frames = kv_frame_reader_new(ps->srv->cfg->peer_max_frame_n + 1024);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  if (uv_tcp_getpeername(&pc->tcp, (struct sockaddr *)&ss, &sl) == 0 &&
      ss.ss_family == AF_INET)
    uv_ip4_name((struct sockaddr_in *)&ss, pc->from, sizeof pc->from);
  pc->next = ps->inbound;
  if (ps->inbound) ps->inbound->prev = pc;
  ps->inbound = pc;
  uv_read_start((uv_stream_t *)&pc->tcp, on_in_alloc, on_in_read);
}

/* ---- start and stop ---- */

/* Reads the keyring: one base64 key per line, the first seals. */
static int read_keys(const char *path, uint8_t keys[][KV_SEAL_KEY_LEN],
                     size_t *n) {
  FILE *f = fopen(path, "r");
  if (!f) {
    log_error("cluster_key_unreadable", "path=%s", path);
    return KV_IO;
  }
  char line[256];
  *n = 0;
  int rc = KV_OK;
  while (fgets(line, sizeof line, f) && *n < KV_SEAL_MAX_KEYS) {
    size_t len = strcspn(line, "\r\n \t");
    if (len == 0) continue;
    size_t got = 0;
    if (sodium_base642bin(keys[*n], KV_SEAL_KEY_LEN, line, len, NULL, &got,
                          NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        got != KV_SEAL_KEY_LEN) {
      log_error("cluster_key_invalid",
                "path=%s reason=\"each line must be a base64 32-byte key "
                "(kvctl keygen)\"",
                path);
      rc = KV_INVALID;
      break;
    }
    (*n)++;
  }
  sodium_memzero(line, sizeof line);
  fclose(f);
  if (rc == KV_OK && *n == 0) {
    log_error("cluster_key_invalid", "path=%s reason=empty", path);
    rc = KV_INVALID;
  }
  return rc;
}

int kvd_peers_start(kvd *srv) {
  kvd_config *cfg = srv->cfg;
  bool have_key = *cfg->cluster_key_file != 0;
  if (!have_key && !cfg->insecure_n) {
    if (*cfg->join) {
      log_error("peer_networking_refused",
                "reason=\"--join needs --cluster-key-file (or --insecure)\"");
      return KV_INVALID;
    }
    log_info("peer_networking_off",
             "reason=\"no cluster key; kvd runs as a single replica\"");
    return KV_OK;
  }
  uint8_t keys[KV_SEAL_MAX_KEYS][KV_SEAL_KEY_LEN];
  size_t nkeys = 0;
  if (have_key && read_keys(cfg->cluster_key_file, keys, &nkeys))
    return KV_INVALID;
  if (!have_key)
    log_warn("insecure",
             "msg=\"peer traffic is neither authenticated nor encrypted "
             "(--insecure)\"");

  kvd_peers *ps = kv_calloc(1, sizeof *ps);
  ps->srv = srv;
  randombytes_buf(&ps->rng.s, sizeof ps->rng.s);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  kv_seal_opts so = {0};
  so.cluster = cfg->cluster;
  so.sender = kv_store_replica_id(srv->store);
  so.counter_start =
      (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
  so.keys = (const uint8_t(*)[KV_SEAL_KEY_LEN])keys;
  so.nkeys = nkeys;
  so.max_skew_ms = cfg->max_clock_skew_n;
  int rc = kv_seal_new(&so, &ps->seal);
  sodium_memzero(keys, sizeof keys);
  if (rc) {
    free(ps);
    return rc;
  }
  kv_rumor_opts ro = {0};
  ro.fanout = (unsigned)cfg->fanout_n;
  ro.k = (unsigned)cfg->rumor_k_n;
  ps->rumor = kv_rumor_new(&ro);

  char host[256];
  int port;
  struct sockaddr_storage ss;
  if (kvd_parse_addr(cfg->peer_listen, host, sizeof host, &port) ||
      (strchr(host, ':')
           ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
           : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss))) {
    log_error("listen_failed", "addr=%s err=\"bad address\"", cfg->peer_listen);
    return KV_INVALID;
  }
  uv_tcp_init(srv->loop, &ps->lsn);
  ps->lsn.data = ps;
  if ((rc = uv_tcp_bind(&ps->lsn, (struct sockaddr *)&ss, 0)) ||
      (rc = uv_listen((uv_stream_t *)&ps->lsn, 128, on_peer_connection))) {
    log_error("listen_failed", "addr=%s err=\"%s\"", cfg->peer_listen,
              uv_strerror(rc));
    return KV_IO;
  }
  int sl = sizeof ss;
  uv_tcp_getsockname(&ps->lsn, (struct sockaddr *)&ss, &sl);
  srv->peer_port = ss.ss_family == AF_INET
                       ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  snprintf(ps->advertise, sizeof ps->advertise,
           strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, srv->peer_port);
  log_info("listen", "proto=peer addr=%s secure=%d", ps->advertise, have_key);
  uv_timer_init(srv->loop, &ps->rumor_timer);
  ps->rumor_timer.data = ps;
  uv_timer_init(srv->loop, &ps->ae_timer);
  ps->ae_timer.data = ps;
  srv->peers = ps;
  if (*cfg->join) {
    char *copy = strdup(cfg->join), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
      while (*t == ' ')
        t++;
      if (strcmp(t, cfg->peer_listen) != 0 && strcmp(t, ps->advertise) != 0)
        add_peer(ps, t);
    }
    free(copy);
  }
  if (cfg->anti_entropy_n)
    uv_timer_start(&ps->ae_timer, on_ae_timer, cfg->ae_interval_n,
                   cfg->ae_interval_n);
  return KV_OK;
}

void kvd_peers_stop(kvd *srv) {
  kvd_peers *ps = srv->peers;
  if (!ps || ps->stopping) return;
  ps->stopping = true;
  uv_close((uv_handle_t *)&ps->lsn, NULL);
  uv_timer_stop(&ps->rumor_timer);
  uv_timer_stop(&ps->ae_timer);
  for (size_t i = 0; i < ps->npeers; i++) {
    peer *pe = ps->peers[i];
    uv_timer_stop(&pe->retry);
    if (pe->tcp && !uv_is_closing((uv_handle_t *)pe->tcp))
      uv_close((uv_handle_t *)pe->tcp, on_out_closed);
    pe->tcp = NULL;
    pe->connected = false;
  }
  for (pconn *pc = ps->inbound, *n; pc; pc = n) {
    n = pc->next;
    close_inbound(pc);
  }
}

void kvd_peers_free(kvd *srv) {
  kvd_peers *ps = srv->peers;
  if (!ps) return;
  for (size_t i = 0; i < ps->npeers; i++) {
    free(ps->peers[i]->batch);
    free(ps->peers[i]);
  }
  kv_ae_free(ps->ae);
  kv_rumor_free(ps->rumor);
  kv_seal_free(ps->seal);
  free(ps);
  srv->peers = NULL;
}

void *kvd_peers_status(kvd *srv, Kvpb__StatusResp *s) {
  kvd_peers *ps = srv->peers;
  s->cluster = srv->cfg->cluster;
  s->peering = ps != NULL;
  if (!ps) return NULL;
  s->insecure = kv_seal_insecure(ps->seal);
  kv_rumor_stats rs;
  kv_rumor_stats_get(ps->rumor, &rs);
  s->rumors_added = rs.added;
  s->rumors_pushed = rs.pushed;
  s->rumor_acks = rs.acks;
  s->rumor_news_acks = rs.news_acks;
  s->rumors_died = rs.died;
  s->rumors_dropped = rs.dropped;
  s->rumors_hot = rs.hot;
  for (int v = 1; v < KV_SEAL_NVERDICTS; v++)
    s->invalid_envelopes += ps->invalid[v];
  s->peer_messages_sent = ps->msgs_sent;
  s->peer_bytes_sent = ps->bytes_sent;
  s->peer_messages_received = ps->msgs_received;
  s->peer_bytes_received = ps->bytes_received;
  /* One allocation: the array of structs, then the array of pointers. */
  size_t n = ps->npeers;
  char *mem = kv_calloc(1, n * (sizeof(Kvpb__PeerStatus) + sizeof(void *)) + 1);
  Kvpb__PeerStatus *st = (Kvpb__PeerStatus *)mem;
  Kvpb__PeerStatus **ptr = (Kvpb__PeerStatus **)(mem + n * sizeof *st);
  uint64_t now = now_ms();
  for (size_t i = 0; i < n; i++) {
    peer *pe = ps->peers[i];
    kvpb__peer_status__init(&st[i]);
    st[i].name = pe->name;
    st[i].addr = pe->addr;
    st[i].replica_id = pe->id_known ? pe->id : 0;
    st[i].alive = peer_alive(pe);
    st[i].exchanges = pe->exchanges;
    st[i].last_exchange_ms_ago =
        pe->last_exchange_ms ? now - pe->last_exchange_ms + 1 : 0;
    st[i].keys_pushed = pe->keys_pushed;
    st[i].keys_pulled = pe->keys_pulled;
    st[i].bytes_sent = pe->bytes_sent;
    st[i].bytes_received = pe->bytes_received;
    ptr[i] = &st[i];
  }
  s->n_peers = n;
  s->peers = ptr;
  return mem;
}
