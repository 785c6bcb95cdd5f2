/*
 * Fuzz harness for the peer input path: frames of sealed envelopes
 * (sync/seal.h) as they arrive on a peer connection, their bodies decoded as
 * PeerMessages (proto/peer.proto) and handed to anti-entropy
 * (sync/antientropy.h), both as a responder and as the initiator of one
 * running exchange against a fixed local store (tests/fuzz/peer_store.h),
 * and, for SWIM bodies, to the membership decoder and core
 * (sync/membership.h), whose every answer must survive the wire.
 *
 * Input: a stream of frames (4-byte big-endian length, then bytes). Each
 * frame is
 *  - opened by a secure opener holding the test key and by an insecure one
 *    (the fuzzer can forge insecure envelopes, so their bodies reach the
 *    decoders), and each body that opens is handled as below;
 *  - sealed as a body by a second replica and opened again: the body must
 *    come back unchanged, a replay must be refused, and so must the envelope
 *    with any one bit flipped (and that forgery must not use up the
 *    counter); then, if it opened as neither, the frame itself is handled
 *    as a body.
 * Handling a body checks: protobuf re-encoding is stable; the AE router
 * accepts exactly the AE messages and reports their exchange id and
 * direction; a responder's refusal sends and merges nothing, and what it
 * sends is initiator-bound AE traffic of the request's exchange; the
 * initiator's results are OK, CLOSED or BAD_REQUEST, nothing is merged from
 * a refused message, a finished exchange refuses everything after, and what
 * it sends is well formed; merged keys and objects are within bounds.
 */
#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/frame.h"
#include "proto/peer.pb-c.h"
#include "sync/antientropy.h"
#include "sync/membership.h"
#include "sync/seal.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/peer_store.h"

#define SELF_ID 0xaa
#define PEER_ID 0xbb
#define MAX_FRAME (1u << 20)

/* What the cores sent and merged during one call. */
typedef struct sink {
  size_t sent, merged;
  kv_buf msgs[64];
  size_t nmsgs; /* copies of the first 64 sent */
} sink;

static void sink_reset(sink *k) {
  for (size_t i = 0; i < k->nmsgs; i++)
    kv_buf_free(&k->msgs[i]);
  memset(k, 0, sizeof *k);
}

static void on_send(void *arg, const uint8_t *msg, size_t len) {
  sink *k = arg;
  if (k->nmsgs < 64) k->msgs[k->nmsgs++] = kv_buf_dup(msg, len);
  k->sent++;
}

static void on_merge(void *arg, const uint8_t *key, size_t keylen,
                     const uint8_t *obj, size_t objlen) {
  sink *k = arg;
  FUZZ_CHECK(keylen >= 1 && keylen <= KV_AE_MAX_KEY, "merge of a %zu-byte key",
             keylen);
  FUZZ_CHECK(objlen > 0, "merge of empty object bytes");
  /* As the server does: decode, and drop what fails. */
  kv_object o;
  if (kv_object_decode(obj, objlen, 1u << 20, &o) == KV_OK) kv_object_fini(&o);
  (void)key;
  k->merged++;
}

/* Every message a core sent is AE traffic of exchange id; to_initiator says
 * which way it must be bound (AePush, bound both ways, is not checked). */
static void check_sent(const sink *k, uint64_t id, bool to_initiator) {
  for (size_t i = 0; i < k->nmsgs; i++) {
    uint64_t ex;
    bool ti;
    int rc = kv_ae_message_exchange(k->msgs[i].data, k->msgs[i].len, &ex, &ti);
    FUZZ_CHECK(rc == KV_OK, "sent a message the router refuses: %s",
               kv_err_name(rc));
    FUZZ_CHECK(ex == id, "sent for exchange %llx, want %llx",
               (unsigned long long)ex, (unsigned long long)id);
    Kvpb__PeerMessage *m =
        kvpb__peer_message__unpack(NULL, k->msgs[i].len, k->msgs[i].data);
    FUZZ_CHECK(m != NULL, "sent message does not decode");
    if (m->body_case != KVPB__PEER_MESSAGE__BODY_AE_PUSH)
      FUZZ_CHECK(ti == to_initiator, "sent %d bound the wrong way",
                 (int)m->body_case);
    kvpb__peer_message__free_unpacked(m, NULL);
  }
}

static bool is_ae(int c) {
  return c >= KVPB__PEER_MESSAGE__BODY_AE_ROOT &&
         c <= KVPB__PEER_MESSAGE__BODY_AE_DONE;
}

/* The per-input state: the local store is built once and never changes (the
 * merges are checked, not applied), so every input runs the same way. */
static fuzz_store local;
static kv_ae *exchange;
static sink xsink;

static void start_exchange(void) {
  kv_ae_free(exchange);
  sink_reset(&xsink);
  exchange =
      kv_ae_start(&fuzz_ae_opts, &local.st, FUZZ_AE_EXCHANGE, on_send, &xsink);
  FUZZ_CHECK(xsink.sent == 1, "an exchange starts with %zu messages",
             xsink.sent);
  check_sent(&xsink, FUZZ_AE_EXCHANGE, false);
}

/* Every message the membership core sends must survive the wire: encoded
 * and decoded again it is accepted by kv_swim_decode. */
static size_t swim_emits;
static void on_swim_emit(void *arg, uint64_t to, const char *to_addr,
                         const kv_swim_msg *m) {
  (void)arg;
  (void)to_addr;
  swim_emits++;
  FUZZ_CHECK(to != SELF_ID, "membership sent a message to itself");
  FUZZ_CHECK(m->from == SELF_ID, "membership sent as %llx",
             (unsigned long long)m->from);
  kv_buf enc;
  kv_swim_encode(m, &enc);
  Kvpb__PeerMessage *pm = kvpb__peer_message__unpack(NULL, enc.len, enc.data);
  FUZZ_CHECK(pm && pm->body_case == KVPB__PEER_MESSAGE__BODY_SWIM,
             "an emitted SWIM message does not decode");
  kv_swim_decoded d;
  FUZZ_CHECK(kv_swim_decode(pm->swim, &d) == KV_OK,
             "an emitted SWIM message is refused");
  FUZZ_CHECK(d.msg.type == m->type && d.msg.nupdates == m->nupdates,
             "a SWIM message changed on the wire");
  kv_swim_decoded_fini(&d);
  kvpb__peer_message__free_unpacked(pm, NULL);
  kv_buf_free(&enc);
}

/* A Swim body: decoded and handed to a fresh membership core (which knows
 * one member), then its timers run; it must refuse or take the message,
 * never crash, and what it sends must be well formed. */
static void handle_swim(const Kvpb__Swim *sw) {
  kv_swim_decoded d;
  if (kv_swim_decode(sw, &d) != KV_OK) return;
  kv_rng r = {1};
  kv_swim *s = kv_swim_new(NULL, SELF_ID, "self", "self:1", 1000, &r);
  kv_swim_update peer = {PEER_ID, 5, KV_SWIM_ALIVE, 0, "peer", "peer:1"};
  kv_swim_msg hello = {.type = KV_SWIM_GOSSIP, .from = PEER_ID,
                       .from_addr = "peer:1", .updates = &peer,
                       .nupdates = 1};
  swim_emits = 0;
  FUZZ_CHECK(kv_swim_recv(s, 1000, &r, &hello, on_swim_emit, NULL) == KV_OK,
             "a valid gossip was refused");
  int rc = kv_swim_recv(s, 1001, &r, &d.msg, on_swim_emit, NULL);
  FUZZ_CHECK(rc == KV_OK || rc == KV_BAD_REQUEST, "swim recv: %s",
             kv_err_name(rc));
  for (uint64_t t = 1000; t < 12000; t = kv_swim_tick(s, t, &r, on_swim_emit,
                                                      NULL) + 1)
    ;
  kv_swim_free(s);
  kv_swim_decoded_fini(&d);
}

static void handle_body(const uint8_t *body, size_t len) {
  Kvpb__PeerMessage *m = kvpb__peer_message__unpack(NULL, len, body);
  int c = m ? (int)m->body_case : -1;
  if (m) FUZZ_CHECK_REPACK(Kvpb__PeerMessage, kvpb__peer_message, m);
  if (c == KVPB__PEER_MESSAGE__BODY_SWIM) handle_swim(m->swim);

  uint64_t id = 0;
  bool ti = false;
  int rc = kv_ae_message_exchange(body, len, &id, &ti);
  FUZZ_CHECK(rc == KV_OK || rc == KV_BAD_REQUEST, "router: %s",
             kv_err_name(rc));
  FUZZ_CHECK((rc == KV_OK) == is_ae(c), "router says %s for body case %d",
             kv_err_name(rc), c);

  /* As a responder. */
  sink rs = {0};
  rc = kv_ae_respond(&fuzz_ae_opts, &local.st, body, len, on_send, &rs,
                     on_merge, &rs);
  FUZZ_CHECK(rc == KV_OK || rc == KV_BAD_REQUEST, "respond: %s",
             kv_err_name(rc));
  if (rc == KV_OK) {
    FUZZ_CHECK(is_ae(c) && (!ti || c == KVPB__PEER_MESSAGE__BODY_AE_PUSH),
               "responder accepted body case %d", c);
    check_sent(&rs, id, true);
  } else {
    FUZZ_CHECK(rs.sent == 0 && rs.merged == 0,
               "a refused request sent %zu and merged %zu", rs.sent, rs.merged);
  }
  sink_reset(&rs);

  /* As the initiator of the running exchange. */
  sink_reset(&xsink);
  sink ms = {0};
  rc = kv_ae_feed(exchange, body, len, on_merge, &ms);
  FUZZ_CHECK(rc == KV_OK || rc == KV_CLOSED || rc == KV_BAD_REQUEST, "feed: %s",
             kv_err_name(rc));
  check_sent(&xsink, FUZZ_AE_EXCHANGE, false);
  if (rc == KV_BAD_REQUEST)
    FUZZ_CHECK(ms.merged == 0, "a refused message merged %zu objects",
               ms.merged);
  if (rc == KV_OK || rc == KV_CLOSED)
    FUZZ_CHECK(c >= 0 && is_ae(c) && ti && id == FUZZ_AE_EXCHANGE,
               "the exchange accepted body case %d of exchange %llx", c,
               (unsigned long long)id);
  if (rc != KV_OK) {
    const kv_ae_stats st = *kv_ae_stats_of(exchange);
    sink_reset(&xsink);
    sink again = {0};
    FUZZ_CHECK(kv_ae_feed(exchange, body, len, on_merge, &again) ==
                       KV_BAD_REQUEST &&
                   xsink.sent == 0 && again.merged == 0,
               "a finished exchange took a message");
    FUZZ_CHECK(kv_ae_stats_of(exchange)->keys_pulled == st.keys_pulled &&
                   kv_ae_stats_of(exchange)->keys_pushed == st.keys_pushed,
               "a finished exchange's stats moved");
    start_exchange();
  }
  if (m) kvpb__peer_message__free_unpacked(m, NULL);
}

static kv_seal *seal_new(uint64_t sender, bool secure) {
  kv_seal_opts o = {.cluster = FUZZ_CLUSTER,
                    .sender = sender,
                    .counter_start = 1,
                    .keys = secure ? &fuzz_key : NULL,
                    .nkeys = secure ? 1 : 0,
                    .max_senders = 4};
  kv_seal *s;
  FUZZ_CHECK(kv_seal_new(&o, &s) == KV_OK, "kv_seal_new");
  return s;
}

/* Opens f with s and handles the body if it opens; says whether it did. */
static bool open_and_handle(kv_seal *s, const kv_buf *f) {
  kv_buf body = {(uint8_t *)1, 1};
  kv_seal_info info;
  kv_seal_verdict v =
      kv_seal_open(s, FUZZ_NOW_MS, f->data, f->len, &info, &body);
  FUZZ_CHECK((unsigned)v < KV_SEAL_NVERDICTS, "verdict %d", (int)v);
  if (v != KV_SEAL_OK) {
    FUZZ_CHECK(body.data == NULL && body.len == 0, "verdict %s left a body",
               kv_seal_verdict_name(v));
    return false;
  }
  FUZZ_CHECK(info.ts_ms + KV_SEAL_DEFAULT_SKEW_MS >= FUZZ_NOW_MS &&
                 info.ts_ms <= FUZZ_NOW_MS + KV_SEAL_DEFAULT_SKEW_MS,
             "opened an envelope stamped %llu", (unsigned long long)info.ts_ms);
  handle_body(body.data, body.len);
  kv_buf_free(&body);
  return true;
}

/* Seals f as a body from the peer, checks that it opens to f exactly once
 * and not with a bit flipped. */
static void round_trip(kv_seal *peer, kv_seal *self, const kv_buf *f,
                       uint64_t i) {
  uint8_t nonce[KV_SEAL_NONCE_LEN] = {0};
  kv_put_be64(nonce, i);
  uint64_t counter = kv_seal_next_counter(peer);
  kv_buf env;
  kv_seal_seal(peer, FUZZ_NOW_MS, nonce, f->data, f->len, &env);
  FUZZ_CHECK(env.len == f->len + KV_SEAL_OVERHEAD, "sealed length");

  /* One bit flipped, anywhere: refused, and the counter stays unused. */
  size_t bit = (size_t)((i * 0x9e3779b97f4a7c15ull + f->len) % (env.len * 8));
  env.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  kv_buf body;
  kv_seal_verdict v =
      kv_seal_open(self, FUZZ_NOW_MS, env.data, env.len, NULL, &body);
  FUZZ_CHECK(v != KV_SEAL_OK, "bit %zu of %zu flipped and still opened", bit,
             env.len * 8);
  env.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));

  kv_seal_info info;
  v = kv_seal_open(self, FUZZ_NOW_MS, env.data, env.len, &info, &body);
  FUZZ_CHECK(v == KV_SEAL_OK, "a sealed envelope: %s", kv_seal_verdict_name(v));
  FUZZ_CHECK_BYTES(body.data, body.len, f->data, f->len,
                   "the body changed in a seal round trip");
  FUZZ_CHECK(info.sender == PEER_ID && info.counter == counter &&
                 info.ts_ms == FUZZ_NOW_MS && info.key == 0,
             "header changed in a seal round trip");
  kv_buf_free(&body);
  v = kv_seal_open(self, FUZZ_NOW_MS, env.data, env.len, NULL, &body);
  FUZZ_CHECK(v == KV_SEAL_REPLAY, "a replay: %s", kv_seal_verdict_name(v));
  kv_buf_free(&env);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (sodium_init() < 0) abort();
  fuzz_store_init(&local, 'a');
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kv_seal *secure = seal_new(SELF_ID, true);
  kv_seal *insecure = seal_new(SELF_ID, false);
  kv_seal *peer = seal_new(PEER_ID, true);
  kv_seal *self = seal_new(SELF_ID, true);
  start_exchange();

  kv_frame_reader *r = kv_frame_reader_new(MAX_FRAME);
  if (kv_frame_reader_feed(r, data, size) == KV_OK) {
    kv_buf f;
    for (uint64_t i = 0; kv_frame_reader_next(r, &f) == KV_OK; i++) {
      bool opened = open_and_handle(secure, &f);
      opened |= open_and_handle(insecure, &f);
      round_trip(peer, self, &f, i);
      /* A frame that is no envelope is taken as a bare body (as if it had
       * come out of one), so that the fuzzer reaches the decoders without
       * building headers; an envelope's body has been handled already. */
      if (!opened) handle_body(f.data, f.len);
    }
  }
  kv_frame_reader_free(r);

  kv_ae_free(exchange);
  exchange = NULL;
  sink_reset(&xsink);
  kv_seal_free(secure);
  kv_seal_free(insecure);
  kv_seal_free(peer);
  kv_seal_free(self);
  return 0;
}
