/*
 * Writes the fuzzers' seed corpora: `mkcorpus DIR` fills DIR/<harness>/ with
 * small valid and edge-case inputs, made with the project's own encoders so
 * that they follow the formats as they are now (`make fuzz-corpus` runs it
 * into tests/fuzz/corpus). Deterministic: fixed ids, timestamps and nonces,
 * so the same tree always gives the same files. Each harness's input format
 * is described at the top of its tests/fuzz/<name>_fuzz.c.
 */
#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crdt/object.h"
#include "proto/frame.h"
#include "proto/kv.pb-c.h"
#include "proto/peer.pb-c.h"
#include "proto/resp.h"
#include "sync/antientropy.h"
#include "sync/membership.h"
#include "sync/seal.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/peer_store.h"

static const char *outdir;

/* A growable byte string (kv_resp_out is exactly that). */
typedef kv_resp_out bytes;

static void put(bytes *b, const void *p, size_t n) {
  kv_resp_out_append(b, p, n);
}
static void puts_(bytes *b, const char *s) { put(b, s, strlen(s)); }
static void put_u8(bytes *b, uint8_t c) { put(b, &c, 1); }

static void put_frame(bytes *b, const void *p, size_t n) {
  uint8_t h[KV_FRAME_HEADER];
  kv_frame_header(h, n);
  put(b, h, sizeof h);
  put(b, p, n);
}

static void mkdir_p(const char *path) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "mkcorpus: mkdir %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

static void write_file(const char *harness, const char *name, const void *p,
                       size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", outdir, harness);
  mkdir_p(path);
  snprintf(path, sizeof path, "%s/%s/%s", outdir, harness, name);
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
    fprintf(stderr, "mkcorpus: cannot write %s\n", path);
    exit(1);
  }
}

static void emit(const char *harness, const char *name, bytes *b) {
  write_file(harness, name, b->data, b->len);
  kv_resp_out_fini(b);
}

/* ---- frame: byte 0 chunking, byte 1 max_frame / 64, byte 2 repeats,
 * then frames ---- */

static void frame_head(bytes *b, uint8_t chunking, uint8_t max64,
                       uint8_t repeats) {
  put_u8(b, chunking);
  put_u8(b, max64);
  put_u8(b, repeats > 1 ? (uint8_t)(0xe0 + repeats - 1) : 0);
}

static void put_request(bytes *b, Kvpb__Request *r) {
  size_t n = kvpb__request__get_packed_size(r);
  uint8_t *p = kv_malloc(n);
  kvpb__request__pack(r, p);
  put_frame(b, p, n);
  free(p);
}

static void put_response(bytes *b, Kvpb__Response *r) {
  size_t n = kvpb__response__get_packed_size(r);
  uint8_t *p = kv_malloc(n);
  kvpb__response__pack(r, p);
  put_frame(b, p, n);
  free(p);
}

static ProtobufCBinaryData bin(const char *s) {
  return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* Every request kind once, in one pipelined stream. */
static void all_requests(bytes *b) {
  Kvpb__GetReq get = KVPB__GET_REQ__INIT;
  get.key = bin("user:1");
  Kvpb__PutReq putr = KVPB__PUT_REQ__INIT;
  putr.key = bin("user:1");
  putr.value = bin("alice");
  putr.has_context = true;
  putr.context = bin("\x0a\x0b\x09\x01\x00\x00\x00\x00\x00\x00\x00\x10\x03");
  Kvpb__DelReq del = KVPB__DEL_REQ__INIT;
  del.key = bin("user:1");
  Kvpb__IncrReq incr = KVPB__INCR_REQ__INIT;
  incr.key = bin("hits");
  incr.delta = -5;
  incr.gcounter = false;
  Kvpb__ScanReq scan = KVPB__SCAN_REQ__INIT;
  scan.prefix = bin("user:");
  scan.limit = 10;
  Kvpb__StatusReq status = KVPB__STATUS_REQ__INIT;
  Kvpb__AuthReq auth = KVPB__AUTH_REQ__INIT;
  auth.token = bin("secret-token");
  Kvpb__VerifyReq verify = KVPB__VERIFY_REQ__INIT;

  Kvpb__Request r = KVPB__REQUEST__INIT;
  r.id = 1, r.body_case = KVPB__REQUEST__BODY_GET, r.get = &get;
  put_request(b, &r);
  r.id = 2, r.body_case = KVPB__REQUEST__BODY_PUT, r.put = &putr;
  put_request(b, &r);
  r.id = 3, r.body_case = KVPB__REQUEST__BODY_DEL, r.del = &del;
  put_request(b, &r);
  r.id = 4, r.body_case = KVPB__REQUEST__BODY_INCR, r.incr = &incr;
  put_request(b, &r);
  r.id = 5, r.body_case = KVPB__REQUEST__BODY_SCAN, r.scan = &scan;
  put_request(b, &r);
  r.id = 6, r.body_case = KVPB__REQUEST__BODY_STATUS, r.status = &status;
  put_request(b, &r);
  r.id = 7, r.body_case = KVPB__REQUEST__BODY_AUTH, r.auth = &auth;
  put_request(b, &r);
  r.id = 8, r.body_case = KVPB__REQUEST__BODY_VERIFY, r.verify = &verify;
  put_request(b, &r);
}

static void frame_corpus(void) {
  bytes b = {0};
  /* Whole, a byte at a time, and in random chunks. */
  static const uint8_t chunkings[] = {0, 1, 7};
  for (size_t i = 0; i < sizeof chunkings; i++) {
    char name[64];
    snprintf(name, sizeof name, "requests-chunking-%u", chunkings[i]);
    frame_head(&b, chunkings[i], 0xff, 1);
    all_requests(&b);
    emit("frame", name, &b);
  }

  /* Past the reader's first 4 KiB buffer, so that it grows and compacts;
   * fed whole, past 64 KiB, so that it is freed once drained. */
  frame_head(&b, 200, 0xff, 4);
  for (int i = 0; i < 20; i++)
    all_requests(&b);
  emit("frame", "long-pipeline-chunked", &b);
  frame_head(&b, 0, 0xff, 32);
  for (int i = 0; i < 20; i++)
    all_requests(&b);
  emit("frame", "long-pipeline-whole", &b);

  frame_head(&b, 0, 0x10, 1);
  emit("frame", "empty-stream", &b);

  /* An empty frame (an empty Request), then a truncated one. */
  frame_head(&b, 3, 0x10, 1);
  put_frame(&b, NULL, 0);
  puts_(&b, "\x00\x00\x00\x09\x08\x01\x12");
  emit("frame", "empty-then-partial", &b);

  /* A header above max_frame after a good frame: refused at once. */
  frame_head(&b, 0, 0x01, 1);
  put_frame(&b, "\x08\x2a", 2);
  puts_(&b, "\xff\xff\xff\xff"
            "garbage");
  emit("frame", "oversized-header", &b);

  /* Exactly max_frame, and one above. */
  frame_head(&b, 2, 0x01, 1);
  uint8_t body[65];
  memset(body, 0x20, sizeof body);
  put_frame(&b, body, 64);
  put_frame(&b, body, 65);
  emit("frame", "at-and-above-max", &b);

  /* Responses, as a client reads them. */
  Kvpb__Sibling s1 = KVPB__SIBLING__INIT, s2 = KVPB__SIBLING__INIT;
  s1.value = bin("v1"), s1.ts = 1ull << 20;
  s2.value = bin("v2"), s2.ts = 2ull << 20;
  Kvpb__Sibling *sibs[] = {&s1, &s2};
  Kvpb__GetResp gr = KVPB__GET_RESP__INIT;
  gr.kind = KVPB__KIND__KIND_REGISTER;
  gr.n_siblings = 2, gr.siblings = sibs;
  gr.context = bin("\x0a\x0b\x09\x01\x00\x00\x00\x00\x00\x00\x00\x10\x02");
  Kvpb__Response resp = KVPB__RESPONSE__INIT;
  resp.id = 9, resp.body_case = KVPB__RESPONSE__BODY_GET, resp.get = &gr;
  frame_head(&b, 0, 0xff, 1);
  put_response(&b, &resp);
  Kvpb__Response err = KVPB__RESPONSE__INIT;
  err.id = 10, err.error = 7, err.message = (char *)"key too long";
  put_response(&b, &err);
  emit("frame", "responses", &b);

  /* Not protobuf at all, in frames. */
  frame_head(&b, 5, 0x08, 1);
  put_frame(&b, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
  put_frame(&b, "\x12\x80\x80\x80\x80\x10", 6);
  emit("frame", "bad-protobuf", &b);
}

/* ---- resp: byte 0 chunking, byte 1 limits (0 = defaults), stream ---- */

static void resp_case(const char *name, uint8_t chunking, uint8_t limits,
                      const char *stream, size_t len) {
  bytes b = {0};
  put_u8(&b, chunking);
  put_u8(&b, limits);
  put(&b, stream, len);
  emit("resp", name, &b);
}

#define RESP(name, ch, lim, s) resp_case(name, ch, lim, s, sizeof(s) - 1)

static void resp_corpus(void) {
  RESP("ping-multibulk", 0, 0, "*1\r\n$4\r\nPING\r\n");
  RESP("ping-inline", 0, 0, "PING\r\n");
  RESP("set-get-pipelined", 1, 0,
       "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
       "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
  RESP("mset-chunked", 9, 0,
       "*7\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
       "$1\r\nc\r\n$0\r\n\r\n");
  RESP("binary-bulk", 3, 0, "*2\r\n$3\r\nGET\r\n$4\r\n\x00\r\n\xff\r\n");
  RESP("inline-quotes", 4, 0,
       "SET \"k\\x41y\" 'it\\'s' \"a\\tb\\n\"\r\nGET kAy\n");
  RESP("blank-and-empty", 1, 0, "\r\n   \r\n*0\r\n*-1\r\nPING\r\n");
  RESP("inline-then-multibulk", 2, 0,
       "INCRBY n 5\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n");
  RESP("bad-count", 0, 0, "*abc\r\n");
  RESP("leading-zero", 0, 0, "*01\r\n$4\r\nPING\r\n");
  RESP("negative-bulk", 0, 0, "*1\r\n$-5\r\n");
  RESP("missing-crlf", 1, 0, "*1\r\n$4\r\nPINGxx");
  RESP("not-dollar", 0, 0, "*2\r\n$3\r\nGET\r\n:3\r\n");
  RESP("unbalanced-quotes", 0, 0, "SET \"abc\r\n");
  RESP("quote-then-text", 0, 0, "SET \"a\"b c\r\n");
  RESP("long-header", 0, 0, "*11111111111111111111111111111111111\r\n");
  RESP("int64-min-count", 0, 0, "*-9223372036854775808\r\n");
  RESP("huge-bulk", 0, 0, "*1\r\n$9223372036854775807\r\n");
  RESP("cr-without-lf", 0, 0, "*1\r\r$4\r\nPING\r\n");
  /* Small limits: 0x41 is 2 arguments of 41 bytes, command of 37. */
  RESP("small-limits-ok", 1, 0x41, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
  RESP("small-limits-too-many-args", 0, 0x41,
       "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
  RESP("small-limits-long-bulk", 3, 0x09,
       "*2\r\n$3\r\nGET\r\n$20\r\n01234567890123456789\r\n");
  RESP("small-limits-long-inline", 2, 0x08,
       "GET aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
  RESP("small-limits-inline-args", 0, 0x3a, "a b c d e f g h i j k\r\n");
}

/* ---- object: the encoded object (or context) itself ---- */

static void emit_object(const char *name, const kv_object *o) {
  kv_buf enc;
  kv_object_encode(o, &enc);
  write_file("object", name, enc.data, enc.len);
  kv_buf_free(&enc);
}

static void emit_context(const char *name, const kv_object *o) {
  kv_vv vv;
  kv_dvv_join(&o->reg, &vv);
  kv_buf enc;
  kv_context_encode(&vv, &enc);
  write_file("object", name, enc.data, enc.len);
  kv_buf_free(&enc);
  kv_vv_fini(&vv);
}

static void must(int rc) {
  if (rc != KV_OK) {
    fprintf(stderr, "mkcorpus: %s\n", kv_err_name(rc));
    exit(1);
  }
}

#define VAL(s) (const uint8_t *)(s), sizeof(s) - 1

static void object_corpus(void) {
  kv_object o;
  kv_object_init(&o);
  emit_object("empty", &o);

  must(kv_object_put(&o, 1, NULL, VAL("hello"), 100, 100));
  emit_object("register-one", &o);
  emit_context("context-one", &o);

  /* Concurrent writes on three replicas: siblings. */
  kv_object b, c, m1, m2;
  kv_object_init(&b);
  kv_object_init(&c);
  must(kv_object_put(&b, 2, NULL, VAL("world"), 101, 100));
  must(kv_object_put(&c, 0xffffffffffffffffull, NULL, VAL(""), 102, 100));
  kv_object_merge(&m1, &o, &b);
  kv_object_merge(&m2, &m1, &c);
  emit_object("register-siblings", &m2);
  emit_context("context-three", &m2);

  /* A write that saw the siblings replaces them; then a delete. */
  kv_vv ctx;
  kv_dvv_join(&m2.reg, &ctx);
  must(kv_object_put(&m2, 1, &ctx, VAL("resolved"), 200, 100));
  emit_object("register-resolved", &m2);
  must(kv_object_delete(&m2, 2, NULL, 300, 100));
  emit_object("register-deleted", &m2);
  kv_vv_fini(&ctx);

  /* A binary value. */
  kv_object bin_o;
  kv_object_init(&bin_o);
  uint8_t v[300];
  for (size_t i = 0; i < sizeof v; i++)
    v[i] = (uint8_t)(i * 7);
  must(kv_object_put(&bin_o, 5, NULL, v, sizeof v, 1ull << 40, 100));
  emit_object("register-binary", &bin_o);

  /* Counters: G, PN with decrements on two replicas, deleted (floor). */
  kv_object g, pn, pn2, pnm;
  kv_object_init(&g);
  kv_object_init(&pn);
  kv_object_init(&pn2);
  must(kv_object_incr(&g, 1, 41, true, NULL));
  must(kv_object_incr(&g, 1, 1, true, NULL));
  emit_object("gcounter", &g);
  must(kv_object_incr(&pn, 1, 10, false, NULL));
  must(kv_object_incr(&pn, 1, -3, false, NULL));
  must(kv_object_incr(&pn2, 9, -100, false, NULL));
  kv_object_merge(&pnm, &pn, &pn2);
  emit_object("pncounter", &pnm);
  must(kv_object_delete(&pnm, 1, NULL, 400, 100));
  emit_object("pncounter-deleted", &pnm);
  must(kv_object_incr(&pnm, 1, 7, false, NULL));
  emit_object("pncounter-after-delete", &pnm);

  /* A register and a counter created concurrently: both parts kept. */
  kv_object both;
  kv_object_merge(&both, &o, &g);
  emit_object("register-and-counter", &both);

  /* Non-canonical encodings of valid states: decode refuses them. */
  uint8_t reordered[] = {0x28, 0x01, 0x1a, 0x0b, 0x09, 1,    0,   0,
                         0,    0,    0,    0,    0,    0x10, 0x05};
  write_file("object", "noncanonical-field-order", reordered, sizeof reordered);
  uint8_t explicit_default[] = {0x28, 0x00};
  write_file("object", "noncanonical-explicit-default", explicit_default,
             sizeof explicit_default);
  uint8_t long_varint[] = {0x1a, 0x0c, 0x09, 1, 0,    0,    0,
                           0,    0,    0,    0, 0x10, 0x85, 0x00};
  write_file("object", "noncanonical-long-varint", long_varint,
             sizeof long_varint);
  uint8_t unknown_field[] = {0x28, 0x01, 0x30, 0x01};
  write_file("object", "unknown-field", unknown_field, sizeof unknown_field);
  /* Unsorted entries and an anonymous value: invalid. */
  uint8_t anon[] = {0x12, 0x03, 0x0a, 0x01, 0x78};
  write_file("object", "anonymous-value", anon, sizeof anon);

  kv_object_fini(&o);
  kv_object_fini(&b);
  kv_object_fini(&c);
  kv_object_fini(&m1);
  kv_object_fini(&m2);
  kv_object_fini(&bin_o);
  kv_object_fini(&g);
  kv_object_fini(&pn);
  kv_object_fini(&pn2);
  kv_object_fini(&pnm);
  kv_object_fini(&both);
}

/* ---- peer: frames of envelopes (or of bare bodies) ---- */

typedef struct msg {
  kv_buf bytes;
  bool to_initiator;
} msg;

typedef struct convo {
  msg q[4096];
  size_t head, tail;
  bool to_initiator;      /* direction of what the current callback sends */
  bytes to_init, to_resp; /* framed, as recorded */
} convo;

static void convo_send(void *arg, const uint8_t *m, size_t len) {
  convo *c = arg;
  if (c->tail == sizeof c->q / sizeof c->q[0]) abort();
  c->q[c->tail++] = (msg){kv_buf_dup(m, len), c->to_initiator};
  put_frame(c->to_initiator ? &c->to_init : &c->to_resp, m, len);
}

static void convo_merge(void *arg, const uint8_t *k, size_t kl,
                        const uint8_t *o, size_t ol) {
  (void)arg, (void)k, (void)kl, (void)o, (void)ol;
}

/* Runs one exchange of initiator against responder to the end, recording
 * what each side sent as a stream of frames. */
static void run_exchange(fuzz_store *initiator, fuzz_store *responder,
                         convo *c) {
  memset(c, 0, sizeof *c);
  c->to_initiator = false;
  kv_ae *x = kv_ae_start(&fuzz_ae_opts, &initiator->st, FUZZ_AE_EXCHANGE,
                         convo_send, c);
  int rc = KV_OK;
  while (c->head < c->tail && rc == KV_OK) {
    msg m = c->q[c->head++];
    if (m.to_initiator) {
      c->to_initiator = false;
      rc = kv_ae_feed(x, m.bytes.data, m.bytes.len, convo_merge, NULL);
    } else {
      c->to_initiator = true;
      must(kv_ae_respond(&fuzz_ae_opts, &responder->st, m.bytes.data,
                         m.bytes.len, convo_send, c, convo_merge, NULL));
    }
    kv_buf_free(&m.bytes);
  }
  if (rc != KV_CLOSED) {
    fprintf(stderr, "mkcorpus: exchange ended with %s\n", kv_err_name(rc));
    exit(1);
  }
  while (c->head < c->tail)
    kv_buf_free(&c->q[c->head++].bytes);
  kv_ae_free(x);
}

/* Re-frames the frames of in, each body sealed by s at FUZZ_NOW_MS. */
static void seal_frames(kv_seal *s, const bytes *in, bytes *out) {
  kv_frame_reader *r = kv_frame_reader_new(1u << 20);
  must(kv_frame_reader_feed(r, in->data, in->len));
  kv_buf f;
  uint8_t nonce[KV_SEAL_NONCE_LEN] = {0};
  for (uint64_t i = 0; kv_frame_reader_next(r, &f) == KV_OK; i++) {
    kv_put_be64(nonce, 0x6e6f6e6365000000ull + i);
    kv_buf env;
    kv_seal_seal(s, FUZZ_NOW_MS, nonce, f.data, f.len, &env);
    put_frame(out, env.data, env.len);
    kv_buf_free(&env);
  }
  kv_frame_reader_free(r);
}

static kv_seal *sealer(uint64_t sender, bool secure) {
  kv_seal_opts o = {.cluster = FUZZ_CLUSTER,
                    .sender = sender,
                    .counter_start = 1000,
                    .keys = secure ? &fuzz_key : NULL,
                    .nkeys = secure ? 1 : 0};
  kv_seal *s;
  must(kv_seal_new(&o, &s));
  return s;
}

static void put_peer_message(bytes *b, const Kvpb__PeerMessage *m) {
  size_t n = kvpb__peer_message__get_packed_size(m);
  uint8_t *p = kv_malloc(n);
  kvpb__peer_message__pack(m, p);
  put_frame(b, p, n);
  free(p);
}

static void peer_corpus(void) {
  fuzz_store a, bst;
  fuzz_store_init(&a, 'a');
  fuzz_store_init(&bst, 'b');
  kv_seal *sec = sealer(0xbb, true), *ins = sealer(0xbb, false);

  /* The harness's store as initiator: what the peer answers drives its
   * exchange to the end, bare and sealed both ways. */
  static convo c;
  run_exchange(&a, &bst, &c);
  bytes b = {0};
  put(&b, c.to_init.data, c.to_init.len);
  emit("peer", "ae-answers-bare", &b);
  seal_frames(ins, &c.to_init, &b);
  emit("peer", "ae-answers-insecure", &b);
  seal_frames(sec, &c.to_init, &b);
  emit("peer", "ae-answers-sealed", &b);
  kv_resp_out_fini(&c.to_init);
  kv_resp_out_fini(&c.to_resp);

  /* The harness's store as responder: a peer's requests. */
  run_exchange(&bst, &a, &c);
  put(&b, c.to_resp.data, c.to_resp.len);
  emit("peer", "ae-requests-bare", &b);
  seal_frames(ins, &c.to_resp, &b);
  emit("peer", "ae-requests-insecure", &b);
  kv_resp_out_fini(&c.to_init);
  kv_resp_out_fini(&c.to_resp);

  /* The other peer messages, once each. */
  bytes msgs = {0};
  Kvpb__Hello hello = KVPB__HELLO__INIT;
  hello.cluster = (char *)FUZZ_CLUSTER, hello.protocol = 1;
  hello.segment_bits = 16, hello.replica_id = 0xbb;
  hello.name = (char *)"node2", hello.peer_addr = (char *)"127.0.0.1:7412";
  Kvpb__PeerMessage pm = KVPB__PEER_MESSAGE__INIT;
  pm.body_case = KVPB__PEER_MESSAGE__BODY_HELLO, pm.hello = &hello;
  put_peer_message(&msgs, &pm);
  Kvpb__HelloRefused ref = KVPB__HELLO_REFUSED__INIT;
  ref.reason = (char *)"cluster name differs";
  pm.body_case = KVPB__PEER_MESSAGE__BODY_REFUSED, pm.refused = &ref;
  put_peer_message(&msgs, &pm);
  Kvpb__Rumor r1 = KVPB__RUMOR__INIT;
  r1.key = (ProtobufCBinaryData){a.e[0].key.len, a.e[0].key.data};
  r1.object = (ProtobufCBinaryData){a.e[0].obj.len, a.e[0].obj.data};
  Kvpb__Rumor *rp[] = {&r1};
  Kvpb__Rumors rs = KVPB__RUMORS__INIT;
  rs.n_rumors = 1, rs.rumors = rp;
  pm.body_case = KVPB__PEER_MESSAGE__BODY_RUMORS, pm.rumors = &rs;
  put_peer_message(&msgs, &pm);
  Kvpb__RumorAck ack = KVPB__RUMOR_ACK__INIT;
  ack.key = r1.key;
  ack.digest = (ProtobufCBinaryData){16, a.e[0].digest};
  ack.news = true;
  Kvpb__RumorAck *ap[] = {&ack};
  Kvpb__RumorAcks acks = KVPB__RUMOR_ACKS__INIT;
  acks.n_acks = 1, acks.acks = ap;
  pm.body_case = KVPB__PEER_MESSAGE__BODY_RUMOR_ACKS, pm.rumor_acks = &acks;
  put_peer_message(&msgs, &pm);
  /* SWIM (sync/membership): ping, ack, ping-req, nack, gossip, push-pull,
   * from the harness's known peer 0xbb to self 0xaa. */
  kv_swim_update rows[] = {{0xbb, 6, KV_SWIM_ALIVE, 0, "peer", "peer:1"},
                           {0xaa, 1, KV_SWIM_SUSPECT, 0xbb, NULL, NULL},
                           {0xcc, 3, KV_SWIM_DEAD, 0xbb, "n3", "n3:1"}};
  kv_swim_msg sm[] = {
      {.type = KV_SWIM_PING, .seq = 1, .from = 0xbb, .from_addr = "peer:1",
       .target = 0xaa, .updates = rows, .nupdates = 1},
      {.type = KV_SWIM_ACK, .seq = 1, .from = 0xbb, .from_addr = "peer:1"},
      {.type = KV_SWIM_PING_REQ, .seq = 2, .from = 0xbb,
       .from_addr = "peer:1", .target = 0xcc, .target_addr = "n3:1"},
      {.type = KV_SWIM_NACK, .seq = 2, .from = 0xbb, .from_addr = "peer:1"},
      {.type = KV_SWIM_GOSSIP, .from = 0xbb, .from_addr = "peer:1",
       .updates = rows + 1, .nupdates = 2},
      {.type = KV_SWIM_PUSH_PULL, .from = 0xbb, .from_addr = "peer:1",
       .join = true, .updates = rows, .nupdates = 3},
  };
  for (size_t i = 0; i < sizeof sm / sizeof sm[0]; i++) {
    kv_buf enc;
    kv_swim_encode(&sm[i], &enc);
    put_frame(&msgs, enc.data, enc.len);
    kv_buf_free(&enc);
  }
  put(&b, msgs.data, msgs.len);
  emit("peer", "other-messages-bare", &b);
  seal_frames(ins, &msgs, &b);
  emit("peer", "other-messages-insecure", &b);
  kv_resp_out_fini(&msgs);

  /* Envelopes the openers refuse: truncated, a bad version, another
   * cluster, stale, and a secure one with its tag cut. */
  bytes one = {0};
  put_frame(&one, "\x6a\x09\x09\x1d\0\0\0\0\0\0\0", 11); /* AeDone */
  seal_frames(ins, &one, &b);
  kv_resp_out_fini(&one);
  uint8_t env[KV_SEAL_INSECURE_OVERHEAD + 2] = {0};
  put_frame(&b, env, 10); /* truncated */
  env[0] = 2;             /* version 2 */
  put_frame(&b, env, sizeof env);
  env[0] = KV_SEAL_VERSION;
  env[1] = KV_SEAL_FLAG_INSECURE;
  kv_put_be64(env + 2, kv_seal_cluster_id("other"));
  put_frame(&b, env, sizeof env);
  kv_put_be64(env + 2, kv_seal_cluster_id(FUZZ_CLUSTER));
  kv_put_be64(env + 18, FUZZ_NOW_MS - 10 * 60 * 1000); /* stale */
  kv_put_be64(env + 26, 5000);
  put_frame(&b, env, sizeof env);
  env[1] = 0; /* secure, without a tag */
  kv_put_be64(env + 18, FUZZ_NOW_MS);
  put_frame(&b, env, sizeof env);
  emit("peer", "refused-envelopes", &b);

  put_frame(&b, NULL, 0);
  emit("peer", "empty-frame", &b);

  kv_seal_free(sec);
  kv_seal_free(ins);
  fuzz_store_fini(&a);
  fuzz_store_fini(&bst);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: mkcorpus DIR\n");
    return 2;
  }
  if (sodium_init() < 0) return 1;
  outdir = argv[1];
  mkdir_p(outdir);
  frame_corpus();
  resp_corpus();
  object_corpus();
  peer_corpus();
  return 0;
}
