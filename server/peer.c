/*
 * Replication and membership for kvd: the peer listener (TCP) and socket
 * (UDP) on --peer-listen, one outbound TCP connection per member, envelope
 * sealing, and the libuv driver of the sans-I/O membership (sync/membership),
 * rumor (sync/rumor) and anti-entropy (sync/antientropy) cores.
 *
 * Sending rule: a replica sends to a peer only on its own outbound connection
 * to it; inbound connections are receive-only. So every envelope from A to B
 * travels on one ordered stream, and B's replay window (sync/seal) never sees
 * A's counters out of order because of two connections racing. Replies (rumor
 * acks, anti-entropy answers) therefore go out on the replier's outbound
 * connection. A peer is "alive", and can be chosen for rumors and exchanges,
 * once our outbound connection is up and its Hello has reached us.
 *
 * Membership is SWIM (DESIGN §6.3): probes, acks, ping-reqs, nacks and
 * gossip travel as sealed UDP datagrams; push-pull (whole member tables) on
 * the TCP connection. UDP envelopes are sealed under a separate cluster id
 * ("<cluster>/swim") with their own counter stream, so neither channel can be
 * replayed into the other and a TCP burst never pushes UDP counters out of
 * the replay window. --join names seeds: on connecting to one we send a join
 * push-pull and learn the whole table from its answer. Members SWIM declares
 * dead or left are no longer dialled; rumors and anti-entropy choose only
 * members SWIM holds alive whose connection is up. A peer whose connection
 * fails is retried with exponential backoff while SWIM holds it alive.
 *
 * Join refusal: a replica refuses a Hello whose cluster name, protocol
 * version or segment count differ and answers it with a sealed HelloRefused
 * naming the reason (a different cluster name is detected when the envelope
 * opens under our key but names another cluster id); the joiner logs it and,
 * if every seed refused, exits. Envelopes that do not open under our key are
 * never answered, so an outsider cannot make us send anything.
 *
 * Limits (DESIGN §8), each counted (kvctl status) and logged at most once a
 * second: at most max-peer-conns-per-addr inbound connections from one
 * address (and MAX_INBOUND in all); a connection that has not introduced
 * itself with a Hello within read-timeout, or holds more than PRE_HELLO_MAX
 * bytes before its Hello, is closed without a reply; and envelopes that open
 * are rate-limited per sender (a token bucket of peer-burst envelopes
 * refilled at peer-rate a second), the excess dropped. The bucket is keyed
 * by the authenticated sender id, so a forger cannot spend a real peer's
 * tokens; a key holder can of course claim any id.
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
#include "sync/membership.h"
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
#define MAX_PENDING 64            /* messages held for a connecting peer */
#define UDP_MAX (64u << 10)       /* largest datagram accepted */
#define LEAVE_MAX_MS 3000         /* longest a leave waits for its gossip */
#define MAX_INBOUND 1024          /* inbound peer connections in all */
#define PRE_HELLO_MAX (64u << 10) /* bytes held before a connection's Hello */
#define RATE_SLOTS 4096           /* senders with a token bucket (2^12) */

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
  bool seed;    /* named by --join: we send it a join push-pull */
  bool down;    /* SWIM holds it dead or left: not dialled */
  bool refused; /* it refused our Hello: not dialled again */
  bool reconnect; /* dialled although dead, to heal a partition */
  uv_tcp_t *tcp; /* outbound; NULL while not connected */
  kv_frame_reader *back; /* what the peer sends on our outbound connection
                            (only a HelloRefused is expected) */
  /* Messages (unsealed) for a peer whose connection is being made. */
  kv_buf pending[MAX_PENDING];
  size_t npending;
  bool connected;
  uv_timer_t retry;
  uint64_t backoff_ms;
  /* Rumor pushes gathered during one tick, sent as one message. */
  Kvpb__Rumor **batch;
  size_t nbatch, capbatch;
  /* Figures for status. */
  uint64_t exchanges, keys_pushed, keys_pulled, bytes_sent, bytes_received;
  uint64_t last_exchange_ms, dropped_sends;
  /* A peer that accepts and then drops us (it refuses our envelopes, say)
   * is redialled every BACKOFF_MIN_MS: its connect and its disconnect
   * lines are limited to one a second each. */
  kvd_log_rate connected_log, disconnected_log;
} peer;

typedef struct pconn {
  uv_tcp_t tcp;
  struct kvd_peers *ps;
  kv_frame_reader *frames;
  uint64_t sender;
  bool hello;
  uint64_t accepted_ms; /* monotonic: the Hello is due read-timeout later */
  char from[64];
  struct pconn *prev, *next;
} pconn;

/* A sender's token bucket (peer-rate, peer-burst). The table is direct
 * mapped by sender id: a sender that lands on another's slot takes it over
 * with a full bucket, so a collision can only make the limit laxer. */
typedef struct rate_slot {
  uint64_t sender, last_ms;
  double tokens;
  bool used;
} rate_slot;

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
  /* For the metrics endpoint (kvd_peers_metrics). */
  uint64_t rumors_received, rumors_news;
  uint64_t ae_done, ae_timeout, ae_malformed, ae_repairs;
  uint64_t ae_bytes_sent, ae_bytes_received;
  kvd_hist ae_duration;
  /* Membership. */
  kv_swim *swim;
  kv_seal *useal; /* UDP envelopes */
  uv_udp_t udp;
  uv_timer_t swim_timer, leave_timer, contact_timer, reconnect_timer;
  uint64_t swim_sent, swim_received, swim_bytes_sent, swim_bytes_received;
  uint64_t leave_started;
  size_t nseeds, seeds_refused;
  bool leaving, left, udp_open;
  bool stopping;
  char advertise[128]; /* our peer address as bound (port 0 resolved) */
  /* Limits (see the top). */
  size_t ninbound;
  uv_timer_t handshake_timer;
  rate_slot *rate; /* RATE_SLOTS of them */
  uint64_t conns_refused, handshake_timeouts, rate_limited, oversize;
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
 * While that connection is being made, up to MAX_PENDING messages wait for
 * it (a push-pull answer to a joiner is sent before our connection to the
 * joiner is up); otherwise a message to a peer that is not connected, or
 * too far behind, is dropped and counted: rumors, anti-entropy and SWIM all
 * tolerate loss. */
static void send_bytes(peer *pe, const uint8_t *msg, size_t len) {
  kvd_peers *ps = pe->ps;
  if (!pe->connected) {
    if (!pe->down && !pe->refused && !ps->stopping &&
        pe->npending < MAX_PENDING) {
      pe->pending[pe->npending++] = kv_buf_dup(msg, len);
      return;
    }
    pe->dropped_sends++;
    return;
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)pe->tcp) > MAX_UNSENT) {
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

static void drop_pending(peer *pe) {
  for (size_t i = 0; i < pe->npending; i++)
    kv_buf_free(&pe->pending[i]);
  pe->npending = 0;
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

/* SWIM's view of a member (KV_SWIM_NONE if it is not in the table). */
static kv_swim_state member_state(const kvd_peers *ps, uint64_t id) {
  kv_swim_member m;
  if (!ps->swim || kv_swim_member_get(ps->swim, id, &m) != KV_OK)
    return KV_SWIM_NONE;
  return m.state;
}

/* A peer rumors and anti-entropy may choose (DESIGN §6.3): SWIM holds it
 * alive and our connection to it is up. */
static bool peer_alive(const peer *pe) {
  return pe->connected && pe->id_known &&
         member_state(pe->ps, pe->id) == KV_SWIM_ALIVE;
}

/* ---- outbound connections ---- */

static void connect_peer(peer *pe);
static void swim_join_seed(peer *pe);

static void on_retry(uv_timer_t *t) { connect_peer(t->data); }

static void on_out_closed(uv_handle_t *h) { free(h); }

static void schedule_retry(peer *pe) {
  if (pe->ps->stopping) return;
  pe->backoff_ms = pe->backoff_ms ? pe->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (pe->backoff_ms > BACKOFF_MAX_MS) pe->backoff_ms = BACKOFF_MAX_MS;
  uv_timer_start(&pe->retry, on_retry, pe->backoff_ms, 0);
}

/* Closes our outbound connection to pe; it is dialled again later unless
 * SWIM holds it dead or left, it refused us, or we are stopping. */
static void drop_outbound(peer *pe, const char *why) {
  if (!pe->tcp) return;
  if (pe->connected)
    kvd_log_limited(&pe->disconnected_log, KVD_LOG_INFO,
                    "peer_disconnected", "peer=%s name=%s reason=%s", pe->addr,
                    pe->name[0] ? pe->name : "?", why);
  pe->connected = false;
  if (!uv_is_closing((uv_handle_t *)pe->tcp))
    uv_close((uv_handle_t *)pe->tcp, on_out_closed);
  pe->tcp = NULL;
  kv_frame_reader_free(pe->back);
  pe->back = NULL;
  if (pe->reconnect) { /* the attempt on a dead member failed */
    pe->reconnect = false;
    pe->down = true;
  }
  if (pe->down || pe->refused) {
    drop_pending(pe);
    uv_timer_stop(&pe->retry);
    return;
  }
  schedule_retry(pe);
}

static void handle_refusal(peer *pe, const Kvpb__HelloRefused *r);

/* The outbound side writes; the peer sends nothing back on it except a
 * HelloRefused before it closes. Reading also tells us when it closed. */
static void on_out_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char scratch[4096];
  buf->base = scratch;
  buf->len = sizeof scratch;
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  peer *pe = s->data;
  kvd_peers *ps = pe->ps;
  if (n < 0) {
    drop_outbound(pe, n == UV_EOF ? "closed" : uv_strerror((int)n));
    return;
  }
  if (!pe->back) pe->back = kv_frame_reader_new(4096);
  kv_buf frame;
  if (kv_frame_reader_feed(pe->back, buf->base, (size_t)n) != KV_OK ||
      kv_frame_reader_next(pe->back, &frame) != KV_OK)
    return; /* nothing whole yet, or junk: the close will follow */
  /* The refusing replica may be of another cluster: open without the
   * cluster check (the tag still proves it holds our key). */
  kv_buf body;
  if (kv_seal_open_foreign(ps->seal, now_ms(), frame.data, frame.len, NULL,
                           NULL, &body) != KV_SEAL_OK)
    return;
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, body.len, body.data);
  kv_buf_free(&body);
  if (m && m->body_case == KVPB__PEER_MESSAGE__BODY_REFUSED)
    handle_refusal(pe, m->refused);
  if (m) kvpb__peer_message__free_unpacked(m, NULL);
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
  kvd_log_limited(&pe->connected_log, KVD_LOG_INFO, "peer_connected",
                  "peer=%s", pe->addr);
  send_hello(pe);
  for (size_t i = 0; i < pe->npending; i++)
    send_bytes(pe, pe->pending[i].data, pe->pending[i].len);
  drop_pending(pe);
  if (pe->seed || pe->reconnect) swim_join_seed(pe);
  pe->reconnect = false;
}

static void connect_peer(peer *pe) {
  kvd_peers *ps = pe->ps;
  if (pe->tcp || ps->stopping || pe->down || pe->refused) return;
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

/* The rumor core runs on the monotonic clock: its ticks are paced, and a
 * wall-clock step back must not hold them up. */
static void rumor_tick(kvd_peers *ps) {
  uint64_t alive[MAX_PEERS];
  size_t n = 0;
  for (size_t i = 0; i < ps->npeers; i++)
    if (peer_alive(ps->peers[i])) alive[n++] = ps->peers[i]->id;
  uint64_t now = kvd_mono_ms();
  uint64_t next =
      kv_rumor_tick(ps->rumor, now, &ps->rng, alive, n, rumor_emit, ps);
  flush_batches(ps);
  uv_timer_stop(&ps->rumor_timer);
  if (next != UINT64_MAX && !ps->stopping)
    uv_timer_start(&ps->rumor_timer, on_rumor_timer,
                   next > now ? next - now : 0, 0);
}

static void on_rumor_timer(uv_timer_t *t) { rumor_tick(t->data); }

/* Arms the timer for the core's next tick: for a local write, on the next
 * loop iteration, so every write completed in this wake-up goes in one
 * batch per peer; for news from a peer, when the core's interval allows. */
static void rumor_soon(kvd_peers *ps) {
  uint64_t due = kv_rumor_next_due(ps->rumor), now = kvd_mono_ms();
  if (ps->stopping || due == UINT64_MAX) return;
  uv_timer_start(&ps->rumor_timer, on_rumor_timer, due > now ? due - now : 0,
                 0);
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
               0, kvd_mono_ms());
  rumor_soon(ps);
}

/* The acks owed for one Rumors message: one RumorAcks answers the whole
 * message, sent when the last of its merges has completed. A rumor whose
 * merge was never submitted (dropped) gets no ack. */
typedef struct ack_batch {
  uint64_t to;
  size_t holds; /* merges in flight, plus one while they are submitted */
  size_t n;     /* acks filled in */
  Kvpb__RumorAck *acks;
  Kvpb__RumorAck **ackp;
  uint8_t (*digests)[16];
} ack_batch;

static ack_batch *ack_batch_new(uint64_t to, size_t cap) {
  ack_batch *ab = kv_calloc(1, sizeof *ab);
  ab->to = to;
  ab->holds = 1;
  ab->acks = kv_calloc(cap ? cap : 1, sizeof *ab->acks);
  ab->ackp = kv_calloc(cap ? cap : 1, sizeof *ab->ackp);
  ab->digests = kv_calloc(cap ? cap : 1, sizeof *ab->digests);
  return ab;
}

/* Takes key (ownership moves in) and a copy of digest. */
static void ack_batch_put(ack_batch *ab, kv_buf *key, const uint8_t digest[16],
                          bool news) {
  Kvpb__RumorAck *a = &ab->acks[ab->n];
  kvpb__rumor_ack__init(a);
  a->key.data = key->data;
  a->key.len = key->len;
  *key = (kv_buf){0};
  memcpy(ab->digests[ab->n], digest, 16);
  a->digest.data = ab->digests[ab->n];
  a->digest.len = 16;
  a->news = news;
  ab->ackp[ab->n] = a;
  ab->n++;
}

/* Drops one hold; the last sends the acks (if any, and unless stopping) and
 * frees the batch. */
static void ack_batch_release(kvd_peers *ps, ack_batch *ab) {
  if (--ab->holds > 0) return;
  peer *pe = peer_by_id(ps, ab->to);
  if (pe && ab->n > 0 && !ps->stopping) {
    Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
    Kvpb__RumorAcks as = KVPB__RUMOR_ACKS__INIT;
    m.body_case = KVPB__PEER_MESSAGE__BODY_RUMOR_ACKS;
    m.rumor_acks = &as;
    as.n_acks = ab->n;
    as.acks = ab->ackp;
    send_msg(pe, &m);
  }
  for (size_t i = 0; i < ab->n; i++)
    free(ab->acks[i].key.data);
  free(ab->acks);
  free(ab->ackp);
  free(ab->digests);
  free(ab);
}

/* A merge on behalf of a peer: a rumor (acked, maybe forwarded; acks is its
 * message's batch) or an anti-entropy repair (acks is NULL). Owns copies of
 * key and object. */
typedef struct peer_merge {
  kvd_write kw;
  kvd_peers *ps;
  uint64_t sender;
  ack_batch *acks;
  uint8_t digest[16];
  kv_buf key, obj;
} peer_merge;

static void merge_done(kvd_write *kw) {
  peer_merge *pm = (peer_merge *)kw;
  kvd_peers *ps = pm->ps;
  kv_write *w = &kw->w;
  ps->merges_in_flight--;
  if (w->status != KV_OK)
    log_debug("peer_merge_failed", "err=%s", kv_err_name(w->status));
  if (w->status == KV_OK && w->changed) {
    if (pm->acks)
      ps->rumors_news++;
    else
      ps->ae_repairs++;
  }
  if (pm->acks && !ps->stopping) {
    bool news = w->status == KV_OK && w->changed;
    if (news && ps->srv->cfg->rumors_n) {
      uint8_t d[16];
      digest_of(w->object.data, w->object.len, d);
      kv_rumor_add(ps->rumor, pm->key.data, pm->key.len, w->object.data,
                   w->object.len, d, pm->sender, kvd_mono_ms());
      rumor_soon(ps);
    } else if (!news) {
      /* The sender holds what it sent: never push it that version. */
      kv_rumor_peer_has(ps->rumor, pm->sender, pm->key.data, pm->key.len,
                        pm->digest);
    }
    ack_batch_put(pm->acks, &pm->key, pm->digest, news);
  }
  if (pm->acks) ack_batch_release(ps, pm->acks);
  kv_write_fini(w);
  kv_buf_free(&pm->key);
  kv_buf_free(&pm->obj);
  free(pm);
}

static void submit_merge(kvd_peers *ps, uint64_t sender, ack_batch *acks,
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
  pm->acks = acks;
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
  /* Held before submitting, in case the merge completes at once. */
  if (acks) acks->holds++;
  if (kvd_submit_write(ps->srv, &pm->kw) != KV_OK) {
    if (acks) acks->holds--; /* the caller's hold keeps it above 0 */
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
  submit_merge(c->ps, c->sender, NULL, key, keylen, obj, objlen);
}

static void ae_finish(kvd_peers *ps, const char *outcome) {
  const kv_ae_stats *st = kv_ae_stats_of(ps->ae);
  peer *pe = ps->ae_peer;
  pe->exchanges++;
  pe->keys_pushed += st->keys_pushed;
  pe->keys_pulled += st->keys_pulled;
  pe->last_exchange_ms = now_ms();
  if (!strcmp(outcome, "done"))
    ps->ae_done++;
  else if (!strcmp(outcome, "timeout"))
    ps->ae_timeout++;
  else
    ps->ae_malformed++;
  ps->ae_bytes_sent += st->bytes_sent;
  ps->ae_bytes_received += st->bytes_received;
  uint64_t took = pe->last_exchange_ms > ps->ae_started
                      ? pe->last_exchange_ms - ps->ae_started
                      : 0; /* the wall clock stepped back */
  kvd_hist_add(&ps->ae_duration, KVD_HIST_AE, took * 1000);
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

/* ---- membership (SWIM) ---- */

static const char *state_name(kv_swim_state st) {
  switch (st) {
  case KV_SWIM_ALIVE:
    return "alive";
  case KV_SWIM_SUSPECT:
    return "suspect";
  case KV_SWIM_DEAD:
    return "dead";
  case KV_SWIM_LEFT:
    return "left";
  default:
    return "none";
  }
}

static int sockaddr_of(const char *addr, struct sockaddr_storage *ss) {
  char host[128];
  int port;
  if (kvd_parse_addr(addr, host, sizeof host, &port) || port <= 0) return -1;
  return strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss)
                           : uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

/* Sends a SWIM datagram: sealed with the UDP sealer, sent at once or
 * dropped (UDP is lossy anyway; SWIM expects it). */
static void udp_send(kvd_peers *ps, const char *to_addr, const uint8_t *msg,
                     size_t len) {
  struct sockaddr_storage ss;
  if (!ps->udp_open || !to_addr || sockaddr_of(to_addr, &ss)) return;
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  randombytes_buf(nonce, sizeof nonce);
  kv_buf env;
  kv_seal_seal(ps->useal, now_ms(), nonce, msg, len, &env);
  uv_buf_t b = uv_buf_init((char *)env.data, (unsigned)env.len);
  if (uv_udp_try_send(&ps->udp, &b, 1, (struct sockaddr *)&ss) >= 0) {
    ps->swim_sent++;
    ps->swim_bytes_sent += env.len;
  }
  kv_buf_free(&env);
}

static void swim_emit(void *arg, uint64_t to, const char *to_addr,
                      const kv_swim_msg *m) {
  kvd_peers *ps = arg;
  kv_buf enc;
  kv_swim_encode(m, &enc);
  const uint8_t *msg = enc.data;
  size_t len = enc.len;
  if (m->type != KV_SWIM_PUSH_PULL) {
    udp_send(ps, to_addr, msg, len);
    kv_buf_free(&enc);
    return;
  }
  /* Whole tables go on the TCP connection (a join's to is 0: by address). */
  peer *pe = to ? peer_by_id(ps, to) : NULL;
  if (!pe && to_addr) pe = peer_by_addr(ps, to_addr);
  if (!pe && to_addr) pe = add_peer(ps, to_addr);
  if (pe) {
    if (to && !pe->id_known) {
      pe->id = to;
      pe->id_known = true;
    }
    ps->swim_sent++;
    ps->swim_bytes_sent += len;
    send_bytes(pe, msg, len);
  }
  kv_buf_free(&enc);
}

static void on_swim_timer(uv_timer_t *t);

/* Acts on what SWIM decided: connects to members that are (again) alive,
 * stops dialling dead and left ones, logs each change, and re-arms the
 * timer for SWIM's next deadline. Call after every kv_swim_* call. */
static void swim_after(kvd_peers *ps) {
  kv_swim_event ev;
  uint64_t self = kv_store_replica_id(ps->srv->store);
  while (kv_swim_next_event(ps->swim, &ev)) {
    kv_swim_member m;
    if (ev.id == self || kv_swim_member_get(ps->swim, ev.id, &m) != KV_OK)
      continue;
    int level = ev.new_state == KV_SWIM_ALIVE || ev.new_state == KV_SWIM_LEFT
                    ? KVD_LOG_INFO
                    : KVD_LOG_WARN;
    const char *what = ev.old_state == KV_SWIM_NONE && ev.new_state ==
                                                           KV_SWIM_ALIVE
                           ? "member_joined"
                       : ev.new_state == KV_SWIM_ALIVE ? "member_alive"
                       : ev.new_state == KV_SWIM_SUSPECT ? "member_suspect"
                       : ev.new_state == KV_SWIM_DEAD    ? "member_dead"
                                                         : "member_left";
    kvd_log(level, what,
            "name=%s addr=%s replica_id=%016llx incarnation=%llu was=%s",
            m.name, m.addr, (unsigned long long)m.id,
            (unsigned long long)m.incarnation, state_name(ev.old_state));
    peer *pe = peer_by_id(ps, m.id);
    if (!pe && *m.addr) pe = peer_by_addr(ps, m.addr);
    if (ev.new_state == KV_SWIM_ALIVE) {
      if (!pe && !ps->stopping && *m.addr &&
          strcmp(m.addr, ps->advertise) != 0)
        pe = add_peer(ps, m.addr);
      if (!pe) continue;
      pe->id = m.id;
      pe->id_known = true;
      if (!pe->name[0]) snprintf(pe->name, sizeof pe->name, "%s", m.name);
      if (pe->down) {
        pe->down = false;
        pe->backoff_ms = 0;
        connect_peer(pe);
      }
    } else if (pe && (ev.new_state == KV_SWIM_DEAD ||
                      ev.new_state == KV_SWIM_LEFT)) {
      pe->down = true;
      drop_outbound(pe, state_name(ev.new_state));
      uv_timer_stop(&pe->retry);
      drop_pending(pe);
    }
  }
  if (ps->stopping && !ps->leaving) return;
  uint64_t due = kv_swim_next_due(ps->swim), now = now_ms();
  uv_timer_start(&ps->swim_timer, on_swim_timer, due > now ? due - now : 0, 0);
}

static void on_swim_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  kv_swim_tick(ps->swim, now_ms(), &ps->rng, swim_emit, ps);
  swim_after(ps);
}

/* A Swim from an authenticated sender (the envelope's); tcp says which
 * channel it came on: whole tables only on TCP, the rest only on UDP. */
static void handle_swim(kvd_peers *ps, const Kvpb__Swim *sw, uint64_t sender,
                        bool tcp) {
  kv_swim_decoded d;
  if (sw->from != sender || (sw->type == KV_SWIM_PUSH_PULL) != tcp ||
      kv_swim_decode(sw, &d) != KV_OK) {
    ps->malformed++;
    return;
  }
  ps->swim_received++;
  if (kv_swim_recv(ps->swim, now_ms(), &ps->rng, &d.msg, swim_emit, ps) !=
      KV_OK)
    ps->malformed++;
  kv_swim_decoded_fini(&d);
  swim_after(ps);
}

static void on_udp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char dgram[UDP_MAX];
  buf->base = dgram;
  buf->len = sizeof dgram;
}

/* True if sender may have one more envelope now (peer-rate, peer-burst);
 * false if the envelope is to be dropped. */
static bool rate_take(kvd_peers *ps, uint64_t sender) {
  const kvd_config *cfg = ps->srv->cfg;
  if (cfg->peer_rate_n == 0) return true;
  /* Fibonacci hashing: the top 12 bits pick one of RATE_SLOTS. */
  rate_slot *r = &ps->rate[(sender * 0x9e3779b97f4a7c15ull) >> 52];
  uint64_t now = kvd_mono_ms();
  double burst = (double)cfg->peer_burst_n;
  if (!r->used || r->sender != sender) {
    r->sender = sender;
    r->last_ms = now;
    r->tokens = burst;
    r->used = true;
  } else if (now > r->last_ms) {
    r->tokens += (double)(now - r->last_ms) * (double)cfg->peer_rate_n / 1e3;
    if (r->tokens > burst) r->tokens = burst;
    r->last_ms = now;
  }
  if (r->tokens < 1.0) return false;
  r->tokens -= 1.0;
  return true;
}

static void note_rate_limited(kvd_peers *ps, uint64_t sender,
                              const char *channel) {
  static kvd_log_rate rate;
  ps->rate_limited++;
  kvd_metrics_ratelimited(ps->srv, "peer_messages");
  kvd_log_limited(&rate, KVD_LOG_WARN, "peer_rate_limited",
                  "sender=%016llx channel=%s peer_rate=%llu total=%llu",
                  (unsigned long long)sender, channel,
                  (unsigned long long)ps->srv->cfg->peer_rate_n,
                  (unsigned long long)ps->rate_limited);
}

static void on_udp_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *from, unsigned flags) {
  kvd_peers *ps = h->data;
  if (n <= 0 || !from || (flags & UV_UDP_PARTIAL) ||
      (ps->stopping && !ps->leaving))
    return;
  kv_seal_info info;
  kv_buf body;
  kv_seal_verdict v = kv_seal_open(ps->useal, now_ms(), (uint8_t *)buf->base,
                                   (size_t)n, &info, &body);
  if (v != KV_SEAL_OK) {
    /* Counted by reason and never answered: no amplification. */
    static uint64_t last_log;
    ps->invalid[v]++;
    if (now_ms() - last_log >= 1000) {
      last_log = now_ms();
      char ip[64] = "?";
      if (from->sa_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)from, ip, sizeof ip);
      log_warn("peer_datagram_rejected", "from=%s reason=%s total=%llu", ip,
               kv_seal_verdict_name(v), (unsigned long long)ps->invalid[v]);
    }
    return;
  }
  if (!rate_take(ps, info.sender)) {
    kv_buf_free(&body);
    note_rate_limited(ps, info.sender, "udp");
    return;
  }
  ps->swim_bytes_received += (uint64_t)n;
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, body.len, body.data);
  kv_buf_free(&body);
  if (!m || m->body_case != KVPB__PEER_MESSAGE__BODY_SWIM)
    ps->malformed++;
  else
    handle_swim(ps, m->swim, info.sender, false);
  if (m) kvpb__peer_message__free_unpacked(m, NULL);
}

/* On (re)connecting to a seed: a join push-pull, answered with its whole
 * table. Cheap, so it is sent on every connection to a seed. */
static void swim_join_seed(peer *pe) {
  kvd_peers *ps = pe->ps;
  if (ps->leaving || ps->stopping) return;
  kv_swim_join(ps->swim, pe->addr, swim_emit, ps);
  swim_after(ps);
}

static void handle_refusal(peer *pe, const Kvpb__HelloRefused *r) {
  kvd_peers *ps = pe->ps;
  if (pe->refused) return;
  pe->refused = true;
  log_error("join_refused", "peer=%s reason=\"%.200s\"", pe->addr, r->reason);
  drop_outbound(pe, "refused");
  if (pe->seed && ++ps->seeds_refused == ps->nseeds &&
      kv_swim_alive_peers(ps->swim, NULL, 0) == 0) {
    log_error("join_failed",
              "reason=\"every seed refused this replica (see join_refused)\"");
    ps->srv->exit_code = 1;
    if (!ps->srv->stopping) kvd_net_stop(ps->srv);
  }
}

/* The last time this replica saw another member alive, kept in the data
 * directory (DESIGN §2.3: one away longer than tombstone-grace must not
 * rejoin with its old data). */
static void contact_path(kvd_peers *ps, char *out, size_t len) {
  snprintf(out, len, "%s/%s", ps->srv->cfg->data_dir, KVD_CONTACT_FILE);
}

static void write_contact(kvd_peers *ps) {
  char path[1024], tmp[1100];
  contact_path(ps, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  int ok = fprintf(f, "%llu\n", (unsigned long long)now_ms()) > 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    log_warn("contact_write_failed", "path=%s", path);
  }
}

static void on_contact_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  if (kv_swim_alive_peers(ps->swim, NULL, 0) > 0) write_contact(ps);
}

/* Partition healing, as Serf does it: SWIM stops talking to a member once
 * it is dead, so after a partition both sides could hold each other dead
 * for ever. Every push-pull interval, one dead (not left) member is dialled
 * and sent a join push-pull; if it is up, the tables merge and whichever
 * side was wrongly held dead refutes. */
static void on_reconnect_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  const kv_swim_update *rows;
  size_t n, ndead = 0;
  kv_swim_export(ps->swim, &rows, &n);
  for (size_t i = 0; i < n; i++)
    ndead += rows[i].state == KV_SWIM_DEAD;
  if (ndead == 0 || ps->stopping) return;
  size_t pick = (size_t)kv_rng_below(&ps->rng, ndead);
  for (size_t i = 0; i < n; i++) {
    if (rows[i].state != KV_SWIM_DEAD || pick-- != 0) continue;
    peer *pe = peer_by_id(ps, rows[i].id);
    if (pe && pe->down && !pe->tcp) {
      log_debug("member_reconnect", "peer=%s", pe->addr);
      pe->down = false;
      pe->reconnect = true;
      pe->backoff_ms = 0;
      connect_peer(pe);
    }
    break;
  }
}

/* KV_OK, or KV_INVALID (logged, with how to recover) when this replica has
 * been away from its cluster for longer than tombstone-grace. */
static int check_contact(kvd_peers *ps) {
  char path[1024], line[64];
  contact_path(ps, path, sizeof path);
  FILE *f = fopen(path, "r");
  if (!f) return KV_OK; /* never in a cluster: nothing to resurrect */
  unsigned long long last = 0;
  bool ok = fgets(line, sizeof line, f) && sscanf(line, "%llu", &last) == 1;
  fclose(f);
  uint64_t grace = ps->srv->cfg->tombstone_grace_n * 1000, now = now_ms();
  if (!ok || now <= last || now - last <= grace) return KV_OK;
  log_error("rejoin_refused",
            "reason=\"this replica last saw its cluster %llu s ago, longer "
            "than tombstone-grace (%llu s): its data could bring deleted keys "
            "back\" fix=\"stop, move %s away (or delete it), and start again "
            "empty: anti-entropy copies the cluster's data back\"",
            (unsigned long long)((now - last) / 1000),
            (unsigned long long)ps->srv->cfg->tombstone_grace_n,
            ps->srv->cfg->data_dir);
  return KV_INVALID;
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
  ps->ninbound--;
  uv_close((uv_handle_t *)&pc->tcp, on_in_closed);
}

/* Inbound connections that have not sent a Hello within read-timeout are
 * closed, unanswered (an unauthenticated sender gets nothing). */
static void on_handshake_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  static kvd_log_rate rate;
  uint64_t now = kvd_mono_ms(), limit = ps->srv->cfg->read_timeout_n;
  for (pconn *pc = ps->inbound, *next; pc; pc = next) {
    next = pc->next;
    if (pc->hello || now - pc->accepted_ms < limit) continue;
    ps->handshake_timeouts++;
    kvd_log_limited(&rate, KVD_LOG_WARN, "peer_handshake_timeout",
                    "from=%s held=%zu read_timeout=%llu total=%llu", pc->from,
                    kv_frame_reader_pending(pc->frames),
                    (unsigned long long)limit,
                    (unsigned long long)ps->handshake_timeouts);
    close_inbound(pc);
  }
}

/* Answers a Hello we refuse with a sealed HelloRefused on the connection it
 * came on (the one exception to the sending rule: there is no other
 * connection to the refused replica), then closes it. The answer is about
 * as long as the Hello, and only replicas holding our key get one. */
static void refuse_inbound(kvd_peers *ps, pconn *pc, const char *reason) {
  Kvpb__PeerMessage m = KVPB__PEER_MESSAGE__INIT;
  Kvpb__HelloRefused r = KVPB__HELLO_REFUSED__INIT;
  m.body_case = KVPB__PEER_MESSAGE__BODY_REFUSED;
  m.refused = &r;
  r.reason = (char *)reason;
  size_t n = kvpb__peer_message__get_packed_size(&m);
  uint8_t *msg = kv_malloc(n);
  kvpb__peer_message__pack(&m, msg);
  uint8_t nonce[KV_SEAL_NONCE_LEN];
  randombytes_buf(nonce, sizeof nonce);
  kv_buf env;
  kv_seal_seal(ps->seal, now_ms(), nonce, msg, n, &env);
  free(msg);
  uint8_t *out = kv_malloc(KV_FRAME_HEADER + env.len);
  kv_frame_header(out, env.len);
  memcpy(out + KV_FRAME_HEADER, env.data, env.len);
  uv_buf_t b = uv_buf_init((char *)out, (unsigned)(KV_FRAME_HEADER + env.len));
  /* A fresh connection's send buffer is empty: a short try_write goes out
   * whole, and if it does not the refused side still sees the close. */
  (void)uv_try_write((uv_stream_t *)&pc->tcp, &b, 1);
  free(out);
  kv_buf_free(&env);
  close_inbound(pc);
}

static bool handle_hello(kvd_peers *ps, pconn *pc, const Kvpb__Hello *h,
                         uint64_t sender) {
  kvd *srv = ps->srv;
  char why[256] = "";
  if (strcmp(h->cluster, srv->cfg->cluster) != 0)
    snprintf(why, sizeof why,
             "cluster name differs: this replica is in cluster '%s', the "
             "joiner in '%.64s'",
             srv->cfg->cluster, h->cluster);
  else if (h->protocol != PROTOCOL)
    snprintf(why, sizeof why,
             "protocol version differs: this replica speaks %d, the joiner "
             "%u",
             PROTOCOL, h->protocol);
  else if (h->segment_bits != kv_store_segment_bits(srv->store))
    snprintf(why, sizeof why,
             "segment count differs: this replica has %u segments, the "
             "joiner %llu (--segments is fixed per cluster)",
             1u << kv_store_segment_bits(srv->store),
             h->segment_bits < 32 ? 1ull << h->segment_bits : 0ull);
  else if (h->replica_id != sender)
    snprintf(why, sizeof why, "hello sender mismatch");
  else if (sender == kv_store_replica_id(srv->store))
    snprintf(why, sizeof why,
             "same replica id as this replica (a copied data directory?)");
  if (*why) {
    ps->refused_hellos++;
    static kvd_log_rate refused_rate; /* a misconfigured joiner may retry */
    kvd_log_limited(&refused_rate, KVD_LOG_WARN, "peer_refused",
                    "from=%s name=%.64s reason=\"%s\" their_cluster=%.64s "
                    "their_protocol=%u their_segment_bits=%u total=%llu",
                    pc->from, h->name, why, h->cluster, h->protocol,
                    h->segment_bits, (unsigned long long)ps->refused_hellos);
    refuse_inbound(ps, pc, why);
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
  /* It is up and admitted (perhaps a new replica at the address of one
   * that left, or one that refused us before and was fixed): dial it, so
   * that we can answer it; SWIM will judge it from here. */
  if (pe->down || pe->refused) {
    pe->down = pe->refused = false;
    pe->backoff_ms = 0;
    connect_peer(pe);
  }
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
    if (m->body_case != KVPB__PEER_MESSAGE__BODY_HELLO)
      close_inbound(pc);
    else if (!handle_hello(ps, pc, m->hello, sender))
      close_inbound(pc); /* already closed after the refusal: no-op */
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
  case KVPB__PEER_MESSAGE__BODY_RUMORS: {
    ps->rumors_received += m->rumors->n_rumors;
    ack_batch *ab = ack_batch_new(sender, m->rumors->n_rumors);
    for (size_t i = 0; i < m->rumors->n_rumors; i++) {
      Kvpb__Rumor *r = m->rumors->rumors[i];
      submit_merge(ps, sender, ab, r->key.data, r->key.len, r->object.data,
                   r->object.len);
    }
    ack_batch_release(ps, ab);
    break;
  }
  case KVPB__PEER_MESSAGE__BODY_RUMOR_ACKS:
    for (size_t i = 0; i < m->rumor_acks->n_acks; i++) {
      Kvpb__RumorAck *a = m->rumor_acks->acks[i];
      if (a->digest.len != 16 || a->key.len == 0 ||
          a->key.len > KV_STORE_MAX_KEY)
        continue;
      kv_rumor_ack(ps->rumor, sender, a->key.data, a->key.len, a->digest.data,
                   a->news, kvd_mono_ms());
    }
    rumor_soon(ps); /* a round-trip sample may bring the tick forward */
    break;
  case KVPB__PEER_MESSAGE__BODY_HELLO:
    handle_hello(ps, pc, m->hello, sender);
    break;
  case KVPB__PEER_MESSAGE__BODY_SWIM:
    handle_swim(ps, m->swim, sender, true);
    break;
  case KVPB__PEER_MESSAGE__BODY_REFUSED:
    break; /* only meaningful on our outbound connection */
  default:
    /* --anti-entropy no only stops this replica starting exchanges; it
     * still answers its peers', so they can repair it and it them. */
    handle_ae(ps, pc, msg, len,
              m->body_case == KVPB__PEER_MESSAGE__BODY_AE_PUSH);
    break;
  }
  kvpb__peer_message__free_unpacked(m, NULL);
}

/* A first envelope naming another cluster: if it opens under our key and
 * is a Hello, its sender is a replica configured with another cluster name
 * (not an outsider), so tell it why it is refused. True if it was. */
static bool refuse_foreign_hello(kvd_peers *ps, pconn *pc, const uint8_t *env,
                                 size_t len) {
  kv_buf body;
  if (kv_seal_open_foreign(ps->seal, now_ms(), env, len, NULL, NULL, &body) !=
      KV_SEAL_OK)
    return false;
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, body.len, body.data);
  kv_buf_free(&body);
  bool hello = m && m->body_case == KVPB__PEER_MESSAGE__BODY_HELLO &&
               strcmp(m->hello->cluster, ps->srv->cfg->cluster) != 0;
  if (hello) {
    ps->invalid[KV_SEAL_WRONG_CLUSTER]++;
    handle_hello(ps, pc, m->hello, m->hello->replica_id);
  }
  if (m) kvpb__peer_message__free_unpacked(m, NULL);
  return hello;
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
    if (v == KV_SEAL_WRONG_CLUSTER && !pc->hello &&
        refuse_foreign_hello(ps, pc, frame.data, frame.len))
      return;
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
    if (!rate_take(ps, info.sender)) {
      kv_buf_free(&body);
      note_rate_limited(ps, info.sender, "tcp");
      continue;
    }
    ps->msgs_received++;
    ps->bytes_received += KV_FRAME_HEADER + frame.len;
    handle_message(ps, pc, body.data, body.len, info.sender);
    kv_buf_free(&body);
  }
  if (rc == KV_FRAME_TOO_LARGE) {
    /* One per connection, but anyone can open connections. */
    static kvd_log_rate too_large_rate;
    ps->oversize++;
    kvd_log_limited(&too_large_rate, KVD_LOG_WARN, "peer_frame_too_large",
                    "from=%s", pc->from);
    close_inbound(pc);
  } else if (!pc->hello && !uv_is_closing((uv_handle_t *)&pc->tcp) &&
             kv_frame_reader_pending(pc->frames) > PRE_HELLO_MAX) {
    /* A Hello is a few hundred bytes: before one, nobody gets to make us
     * hold a large frame. */
    static kvd_log_rate pre_hello_rate;
    ps->oversize++;
    kvd_log_limited(&pre_hello_rate, KVD_LOG_WARN, "peer_frame_too_large",
                    "from=%s reason=before_hello held=%zu max=%u", pc->from,
                    kv_frame_reader_pending(pc->frames), PRE_HELLO_MAX);
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
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  snprintf(pc->from, sizeof pc->from, "?");
  if (uv_tcp_getpeername(&pc->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&ss, pc->from, sizeof pc->from);
    else if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, pc->from, sizeof pc->from);
  }
  size_t same = 0;
  for (const pconn *o = ps->inbound; o; o = o->next)
    same += strcmp(o->from, pc->from) == 0;
  bool all = ps->ninbound >= MAX_INBOUND;
  if (all || same >= ps->srv->cfg->max_peer_conns_per_addr_n) {
    /* Closed unanswered: the sender is not authenticated. */
    static kvd_log_rate refuse_rate;
    unsigned long long max =
        all ? MAX_INBOUND : ps->srv->cfg->max_peer_conns_per_addr_n;
    ps->conns_refused++;
    kvd_metrics_ratelimited(ps->srv, "peer_connections");
    kvd_log_limited(&refuse_rate, KVD_LOG_WARN, "peer_conn_refused",
                    "from=%s reason=%s max=%llu total=%llu", pc->from,
                    all ? "max_inbound" : "max_peer_conns_per_addr", max,
                    (unsigned long long)ps->conns_refused);
    uv_close((uv_handle_t *)&pc->tcp, on_in_closed);
    return;
  }
  pc->frames = kv_frame_reader_new(ps->srv->cfg->peer_max_frame_n + 1024);
  pc->accepted_ms = kvd_mono_ms();
  ps->ninbound++;
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
  if (rc == KV_OK) {
    /* The UDP channel's own cluster id and counter stream (see the top). */
    char ucluster[128];
    snprintf(ucluster, sizeof ucluster, "%s/swim", cfg->cluster);
    so.cluster = ucluster;
    if ((rc = kv_seal_new(&so, &ps->useal))) kv_seal_free(ps->seal);
  }
  sodium_memzero(keys, sizeof keys);
  if (rc) {
    free(ps);
    return rc;
  }
  /* From here on kvd_peers_free releases ps, also when starting fails. */
  srv->peers = ps;
  if (*cfg->join && check_contact(ps) != KV_OK) return KV_INVALID;
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
  /* SWIM's datagrams use the same address and port, over UDP. */
  if (strchr(host, ':'))
    uv_ip6_addr(host, srv->peer_port, (struct sockaddr_in6 *)&ss);
  else
    uv_ip4_addr(host, srv->peer_port, (struct sockaddr_in *)&ss);
  uv_udp_init(srv->loop, &ps->udp);
  ps->udp.data = ps;
  ps->udp_open = true;
  if ((rc = uv_udp_bind(&ps->udp, (struct sockaddr *)&ss, 0)) ||
      (rc = uv_udp_recv_start(&ps->udp, on_udp_alloc, on_udp_recv))) {
    log_error("listen_failed", "addr=%s proto=udp err=\"%s\"", ps->advertise,
              uv_strerror(rc));
    return KV_IO;
  }
  log_info("listen", "proto=peer addr=%s secure=%d udp=1", ps->advertise,
           have_key);
  kv_swim_opts mo = {0};
  mo.probe_interval_ms = cfg->probe_interval_n;
  mo.probe_timeout_ms = cfg->probe_timeout_n;
  mo.indirect_checks = (unsigned)cfg->indirect_checks_n;
  mo.suspicion_mult = (unsigned)cfg->suspicion_mult_n;
  mo.suspicion_max_mult = (unsigned)cfg->suspicion_max_mult_n;
  mo.retransmit_mult = (unsigned)cfg->retransmit_mult_n;
  mo.awareness_max = (unsigned)cfg->awareness_max_n;
  mo.gossip_interval_ms = cfg->gossip_interval_n;
  mo.gossip_nodes = (unsigned)cfg->gossip_nodes_n;
  mo.gossip_to_the_dead_ms = cfg->gossip_to_the_dead_n;
  mo.push_pull_interval_ms = cfg->push_pull_interval_n;
  /* The datagram holds the seal's overhead and the message's own fields
   * besides the updates (addresses, ids: under 100 bytes more). */
  mo.piggyback_bytes = cfg->udp_buffer_n - KV_SEAL_OVERHEAD - 100;
  /* Boot time in seconds: above any incarnation a previous run used (unless
   * it refuted more often than once a second), so others take our alive
   * over the dead they hold of the previous run at once. */
  mo.incarnation = now_ms() / 1000;
  ps->swim = kv_swim_new(&mo, kv_store_replica_id(srv->store), cfg->name,
                         ps->advertise, now_ms(), &ps->rng);
  uv_timer_init(srv->loop, &ps->swim_timer);
  ps->swim_timer.data = ps;
  uv_timer_init(srv->loop, &ps->leave_timer);
  ps->leave_timer.data = ps;
  uv_timer_init(srv->loop, &ps->contact_timer);
  ps->contact_timer.data = ps;
  uint64_t every = cfg->tombstone_grace_n * 1000 / 4;
  if (every > 60000) every = 60000;
  if (every < 100) every = 100;
  uv_timer_start(&ps->contact_timer, on_contact_timer, every, every);
  uv_timer_init(srv->loop, &ps->reconnect_timer);
  ps->reconnect_timer.data = ps;
  uv_timer_start(&ps->reconnect_timer, on_reconnect_timer,
                 cfg->push_pull_interval_n, cfg->push_pull_interval_n);
  uv_timer_init(srv->loop, &ps->rumor_timer);
  ps->rumor_timer.data = ps;
  uv_timer_init(srv->loop, &ps->ae_timer);
  ps->ae_timer.data = ps;
  ps->rate = kv_calloc(RATE_SLOTS, sizeof *ps->rate);
  uv_timer_init(srv->loop, &ps->handshake_timer);
  ps->handshake_timer.data = ps;
  uint64_t hs_every = cfg->read_timeout_n / 10;
  hs_every = hs_every < 10 ? 10 : hs_every > 1000 ? 1000 : hs_every;
  uv_timer_start(&ps->handshake_timer, on_handshake_timer, hs_every, hs_every);
  srv->peers = ps;
  swim_after(ps);
  if (*cfg->join) {
    char *copy = strdup(cfg->join), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
      while (*t == ' ')
        t++;
      if (strcmp(t, cfg->peer_listen) == 0 || strcmp(t, ps->advertise) == 0)
        continue;
      peer *pe = add_peer(ps, t);
      if (pe && !pe->seed) {
        pe->seed = true;
        ps->nseeds++;
      }
    }
    free(copy);
  }
  if (cfg->anti_entropy_n)
    uv_timer_start(&ps->ae_timer, on_ae_timer, cfg->ae_interval_n,
                   cfg->ae_interval_n);
  return KV_OK;
}

static void finish_peers_stop(kvd_peers *ps);

/* Graceful leave (DESIGN §6.3): while our LEFT is gossiped, keep SWIM
 * running (probes answered, gossip sent), then stop for good. */
static void on_leave_timer(uv_timer_t *t) {
  kvd_peers *ps = t->data;
  kv_swim_tick(ps->swim, now_ms(), &ps->rng, swim_emit, ps);
  swim_after(ps);
  kv_swim_stats st;
  kv_swim_stats_get(ps->swim, &st);
  bool alone = kv_swim_alive_peers(ps->swim, NULL, 0) == 0;
  if (st.queued == 0 || alone || now_ms() - ps->leave_started > LEAVE_MAX_MS) {
    log_info("left", "queued=%zu ms=%llu", st.queued,
             (unsigned long long)(now_ms() - ps->leave_started));
    ps->leaving = false;
    ps->left = true;
    finish_peers_stop(ps);
    kvd_net_check_stop(ps->srv);
  }
}

bool kvd_peers_busy(kvd *srv) {
  return srv->peers && srv->peers->leaving;
}

void kvd_peers_stop(kvd *srv) {
  kvd_peers *ps = srv->peers;
  if (!ps || ps->stopping) return;
  ps->stopping = true;
  uv_timer_stop(&ps->rumor_timer);
  uv_timer_stop(&ps->ae_timer);
  uv_timer_stop(&ps->handshake_timer);
  uv_timer_stop(&ps->contact_timer);
  uv_timer_stop(&ps->reconnect_timer);
  if (kv_swim_alive_peers(ps->swim, NULL, 0) > 0) {
    write_contact(ps);
    if (srv->exit_code == 0) {
      ps->leaving = true;
      ps->leave_started = now_ms();
      kv_swim_leave(ps->swim, now_ms());
      log_info("leaving", "name=%s", srv->cfg->name);
      uv_timer_start(&ps->leave_timer, on_leave_timer, 0, 50);
      return;
    }
  }
  finish_peers_stop(ps);
}

static void finish_peers_stop(kvd_peers *ps) {
  uv_timer_stop(&ps->leave_timer);
  uv_timer_stop(&ps->swim_timer);
  if (ps->udp_open) {
    uv_udp_recv_stop(&ps->udp);
    uv_close((uv_handle_t *)&ps->udp, NULL);
    ps->udp_open = false;
  }
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
    drop_pending(pe);
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
    drop_pending(ps->peers[i]);
    kv_frame_reader_free(ps->peers[i]->back);
    free(ps->peers[i]->batch);
    free(ps->peers[i]);
  }
  kv_swim_free(ps->swim);
  kv_seal_free(ps->useal);
  free(ps->rate);
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
  s->invalid_truncated = ps->invalid[KV_SEAL_TRUNCATED];
  s->invalid_bad_version = ps->invalid[KV_SEAL_BAD_VERSION];
  s->invalid_wrong_cluster = ps->invalid[KV_SEAL_WRONG_CLUSTER];
  s->invalid_stale = ps->invalid[KV_SEAL_STALE];
  s->invalid_replay = ps->invalid[KV_SEAL_REPLAY];
  s->invalid_bad_tag = ps->invalid[KV_SEAL_BAD_TAG];
  s->invalid_mode_mismatch = ps->invalid[KV_SEAL_MODE_MISMATCH];
  s->peer_malformed = ps->malformed;
  s->peer_conns_refused = ps->conns_refused;
  s->peer_handshake_timeouts = ps->handshake_timeouts;
  s->peer_rate_limited = ps->rate_limited;
  s->peer_oversize = ps->oversize;
  s->peer_messages_sent = ps->msgs_sent;
  s->peer_bytes_sent = ps->bytes_sent;
  s->peer_messages_received = ps->msgs_received;
  s->peer_bytes_received = ps->bytes_received;
  const kv_swim_update *rows;
  size_t nrows;
  kv_swim_export(ps->swim, &rows, &nrows);
  for (size_t i = 0; i < nrows; i++) {
    s->members_alive += rows[i].state == KV_SWIM_ALIVE;
    s->members_suspect += rows[i].state == KV_SWIM_SUSPECT;
    s->members_dead += rows[i].state == KV_SWIM_DEAD;
    s->members_left += rows[i].state == KV_SWIM_LEFT;
  }
  s->swim_messages_sent = ps->swim_sent;
  s->swim_messages_received = ps->swim_received;
  s->swim_health = kv_swim_health(ps->swim);
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

void *kvd_peers_members(kvd *srv, Kvpb__MembersResp *r) {
  kvd_peers *ps = srv->peers;
  if (!ps) return NULL;
  const kv_swim_update *rows;
  size_t n;
  kv_swim_export(ps->swim, &rows, &n);
  /* Copy the ids first: member_get's strings stay valid while only
   * getters are called. */
  char *mem = kv_calloc(1, n * (sizeof(Kvpb__Member) + sizeof(void *)) + 1);
  Kvpb__Member *ms = (Kvpb__Member *)mem;
  Kvpb__Member **ptr = (Kvpb__Member **)(mem + n * sizeof *ms);
  uint64_t now = now_ms(), self = kv_store_replica_id(srv->store);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    kv_swim_member m;
    if (kv_swim_member_get(ps->swim, rows[i].id, &m) != KV_OK) continue;
    kvpb__member__init(&ms[k]);
    ms[k].name = (char *)(m.name ? m.name : "");
    ms[k].addr = (char *)(m.addr ? m.addr : "");
    ms[k].replica_id = m.id;
    ms[k].state = (char *)state_name(m.state);
    ms[k].incarnation = m.incarnation;
    ms[k].since_ms = now > m.state_since_ms ? now - m.state_since_ms : 0;
    ms[k].self = m.id == self;
    ptr[k] = &ms[k];
    k++;
  }
  r->n_members = k;
  r->members = ptr;
  return mem;
}

void kvd_peers_metrics(kvd *srv, kvd_peers_snap *out) {
  kvd_peers *ps = srv->peers;
  memset(out, 0, sizeof *out);
  out->ae_last_age_ms = -1;
  if (!ps) return;
  out->peering = true;
  out->insecure = kv_seal_insecure(ps->seal);
  kv_rumor_stats rs;
  kv_rumor_stats_get(ps->rumor, &rs);
  out->rumors_added = rs.added;
  out->rumors_pushed = rs.pushed;
  out->rumors_received = ps->rumors_received;
  out->rumors_news = ps->rumors_news;
  out->rumors_dropped = rs.dropped;
  out->rumors_died = rs.died;
  out->rumors_hot = rs.hot;
  out->ae_done = ps->ae_done;
  out->ae_timeout = ps->ae_timeout;
  out->ae_malformed = ps->ae_malformed;
  out->ae_bytes_sent = ps->ae_bytes_sent;
  out->ae_bytes_received = ps->ae_bytes_received;
  out->ae_duration = ps->ae_duration;
  out->ae_repairs = ps->ae_repairs;
  uint64_t last = 0, now = now_ms();
  for (size_t i = 0; i < ps->npeers; i++) {
    peer *pe = ps->peers[i];
    out->ae_keys_pushed += pe->keys_pushed;
    out->ae_keys_pulled += pe->keys_pulled;
    out->dropped_sends += pe->dropped_sends;
    out->peers_alive += peer_alive(pe);
    if (pe->last_exchange_ms > last) last = pe->last_exchange_ms;
  }
  out->peers = ps->npeers;
  if (last) out->ae_last_age_ms = now > last ? (int64_t)(now - last) : 0;
  const kv_swim_update *rows;
  size_t n;
  kv_swim_export(ps->swim, &rows, &n);
  for (size_t i = 0; i < n; i++)
    if (rows[i].state >= KV_SWIM_ALIVE && rows[i].state <= KV_SWIM_LEFT)
      out->members[rows[i].state]++;
  out->swim_sent = ps->swim_sent;
  out->swim_received = ps->swim_received;
  out->swim_bytes_sent = ps->swim_bytes_sent;
  out->swim_bytes_received = ps->swim_bytes_received;
  out->swim_health = kv_swim_health(ps->swim);
  out->msgs_sent = ps->msgs_sent;
  out->msgs_received = ps->msgs_received;
  out->bytes_sent = ps->bytes_sent;
  out->bytes_received = ps->bytes_received;
  memcpy(out->invalid, ps->invalid, sizeof out->invalid);
  out->malformed = ps->malformed;
  out->refused_hellos = ps->refused_hellos;
  out->dropped_merges = ps->dropped_merges;
}
