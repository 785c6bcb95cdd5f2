/*
 * The native client protocol (proto/kv.proto) on kvd's side: frames in,
 * Request decoded and validated, one operation per request, Response framed
 * out. A request that does not decode gets BAD_REQUEST and the connection
 * stays usable (the frame boundary is intact); an oversize frame gets
 * FRAME_TOO_LARGE and the connection is closed once that reply is sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/kv.pb-c.h"
#include "server/log.h"
#include "server/server.h"

#define SCAN_DEFAULT 100
#define SCAN_MAX 10000

static void free_request(void *req) { kvpb__request__free_unpacked(req, NULL); }

/* Frames and sends resp, then frees nothing: resp is caller storage. */
static void send_response(kvd_conn *c, Kvpb__Response *resp) {
  size_t n = kvpb__response__get_packed_size(resp);
  uint8_t hdr[KV_FRAME_HEADER];
  kv_frame_header(hdr, n);
  kvd_conn_send(c, hdr, sizeof hdr);
  uint8_t stack[4096];
  uint8_t *buf = n <= sizeof stack ? stack : kv_malloc(n);
  kvpb__response__pack(resp, buf);
  kvd_conn_send(c, buf, n);
  if (buf != stack) free(buf);
}

static void send_error(kvd_conn *c, uint64_t id, int err, const char *msg) {
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  r.id = id;
  r.error = kv_err_to_wire(err);
  r.message = (char *)(msg ? msg : kv_strerror(err));
  c->srv->stats.errors++;
  kvd_metrics_error(c->srv, err);
  send_response(c, &r);
}

void kvd_native_error(kvd_conn *c, int err, const char *msg) {
  send_error(c, 0, err, msg);
}

static Kvpb__Request *req_of(kvd_op *op) { return op->req; }

/* ---- finishers: run at the head of the FIFO ---- */

static void fin_error(kvd_op *op) { send_error(op->c, op->id, op->err, NULL); }

static void encode_context(const kv_object *o, kv_buf *out) {
  kv_vv vv;
  kv_dvv_join(&o->reg, &vv);
  kv_context_encode(&vv, out);
  kv_vv_fini(&vv);
}

static void fin_get(kvd_op *op) {
  kvd *srv = op->c->srv;
  Kvpb__GetReq *g = req_of(op)->get;
  kv_object o;
  int rc = kv_store_get(srv->store, g->key.data, g->key.len, &o);
  if (rc != KV_OK && rc != KV_NOTFOUND) {
    send_error(op->c, op->id, rc, NULL);
    return;
  }
  if (rc == KV_NOTFOUND) kv_object_init(&o);
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__GetResp gr = KVPB__GET_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_GET;
  r.get = &gr;
  kv_kind kind = kv_object_kind(&o);
  gr.kind = (Kvpb__Kind)kind;
  size_t n = kv_object_live_values(&o, NULL, 0);
  const kv_value **vals = kv_malloc(n * sizeof *vals);
  Kvpb__Sibling *sib = kv_malloc(n * sizeof *sib);
  Kvpb__Sibling **sibp = kv_malloc(n * sizeof *sibp);
  kv_object_live_values(&o, vals, n);
  for (size_t i = 0; i < n; i++) {
    kvpb__sibling__init(&sib[i]);
    sib[i].value.data = vals[i]->data.data;
    sib[i].value.len = vals[i]->data.len;
    sib[i].ts = vals[i]->ts;
    sibp[i] = &sib[i];
  }
  gr.n_siblings = n;
  gr.siblings = sibp;
  kv_buf ctx;
  encode_context(&o, &ctx);
  gr.context.data = ctx.data;
  gr.context.len = ctx.len;
  int64_t v = 0;
  if ((kind == KV_KIND_GCOUNTER || kind == KV_KIND_PNCOUNTER) &&
      kv_object_counter_value(&o, &v) != KV_OK) {
    send_error(op->c, op->id, KV_OVERFLOW, NULL);
  } else {
    gr.counter = v;
    if (kind == KV_KIND_NONE) {
      r.error = kv_err_to_wire(KV_NOTFOUND);
      r.message = (char *)kv_strerror(KV_NOTFOUND);
    }
    send_response(op->c, &r);
  }
  kv_buf_free(&ctx);
  free(vals);
  free(sib);
  free(sibp);
  kv_object_fini(&o);
}

/* The context after a successful write, from the object the writer
 * returned; empty if it did not change anything. */
static void context_after(const kv_write *w, kv_buf *out) {
  kv_object o;
  out->data = NULL;
  out->len = 0;
  if (!w->object.len ||
      kv_object_decode(w->object.data, w->object.len, SIZE_MAX, &o) != KV_OK)
    return;
  encode_context(&o, out);
  kv_object_fini(&o);
}

/* Sends the error of a failed write (true), or does nothing (false). */
static bool reply_failed(kvd_op *op, const kv_write *w) {
  if (w->status) send_error(op->c, op->id, w->status, NULL);
  return w->status != KV_OK;
}

static void fin_put(kvd_op *op) {
  kv_write *w = &op->writes[0].w;
  if (reply_failed(op, w)) return;
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__PutResp pr = KVPB__PUT_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_PUT;
  r.put = &pr;
  kv_buf ctx;
  context_after(w, &ctx);
  pr.context.data = ctx.data;
  pr.context.len = ctx.len;
  send_response(op->c, &r);
  kv_buf_free(&ctx);
}

static void fin_del(kvd_op *op) {
  kv_write *w = &op->writes[0].w;
  if (reply_failed(op, w)) return;
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__DelResp dr = KVPB__DEL_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_DEL;
  r.del = &dr;
  send_response(op->c, &r);
}

static void fin_incr(kvd_op *op) {
  kv_write *w = &op->writes[0].w;
  if (reply_failed(op, w)) return;
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__IncrResp ir = KVPB__INCR_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_INCR;
  r.incr = &ir;
  ir.value = w->counter;
  send_response(op->c, &r);
}

typedef struct scan_acc {
  ProtobufCBinaryData *keys;
  size_t n;
} scan_acc;

static bool scan_visit(const uint8_t *k, size_t kl, const uint8_t *o, size_t ol,
                       void *arg) {
  (void)o;
  (void)ol;
  scan_acc *a = arg;
  kv_buf b = kv_buf_dup(k, kl);
  a->keys[a->n].data = b.data;
  a->keys[a->n].len = b.len;
  a->n++;
  return true;
}

static void fin_scan(kvd_op *op) {
  Kvpb__ScanReq *sr = req_of(op)->scan;
  size_t limit = sr->limit ? sr->limit : SCAN_DEFAULT;
  if (limit > SCAN_MAX) limit = SCAN_MAX;
  kv_buf cursor = kv_buf_dup(sr->cursor.data, sr->cursor.len);
  scan_acc acc = {kv_calloc(limit, sizeof *acc.keys), 0};
  int rc = kv_store_scan(op->c->srv->store, &cursor, sr->prefix.data,
                         sr->prefix.len, limit, scan_visit, &acc);
  if (rc) {
    send_error(op->c, op->id, rc,
               rc == KV_BAD_REQUEST ? "malformed cursor" : NULL);
  } else {
    Kvpb__Response r = KVPB__RESPONSE__INIT;
    Kvpb__ScanResp s = KVPB__SCAN_RESP__INIT;
    r.id = op->id;
    r.body_case = KVPB__RESPONSE__BODY_SCAN;
    r.scan = &s;
    s.n_keys = acc.n;
    s.keys = acc.keys;
    s.cursor.data = cursor.data;
    s.cursor.len = cursor.len;
    send_response(op->c, &r);
  }
  for (size_t i = 0; i < acc.n; i++)
    free(acc.keys[i].data);
  free(acc.keys);
  kv_buf_free(&cursor);
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fin_status(kvd_op *op) {
  kvd *srv = op->c->srv;
  kv_store_stats st;
  int rc = kv_store_stats_get(srv->store, &st);
  if (rc) {
    send_error(op->c, op->id, rc, NULL);
    return;
  }
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__StatusResp s = KVPB__STATUS_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_STATUS;
  r.status = &s;
  kv_hash root = kv_merkle_root(srv->tree);
  s.name = srv->cfg->name;
  s.replica_id = kv_store_replica_id(srv->store);
  s.keys = st.keys;
  s.merkle_root.data = root.b;
  s.merkle_root.len = sizeof root.b;
  s.version = (char *)KV_VERSION;
  s.uptime_ms = wall_ms() - srv->start_ms;
  s.sync = srv->cfg->sync_n;
  s.map_size = st.map_size;
  s.map_used = st.map_used;
  s.commits = st.commits;
  s.writes = st.writes;
  s.stored = st.stored;
  s.clients_refused = srv->stats.rejected_connections;
  s.clients_refused_per_addr = srv->stats.rejected_per_addr;
  s.read_timeouts = srv->stats.read_timeouts;
  s.idle_timeouts = srv->stats.idle_timeouts;
  s.input_buffer_refused = srv->stats.input_refused;
  s.input_buffer_bytes = srv->input_bytes;
  s.output_paused = srv->stats.output_paused;
  s.frames_too_large = srv->stats.frames_too_large;
  void *scratch = kvd_peers_status(srv, &s);
  send_response(op->c, &r);
  free(scratch);
}

static void fin_verify(kvd_op *op) {
  uint64_t bad = 0;
  int rc = kv_store_verify(op->c->srv->store, &bad);
  if (rc && rc != KV_VERIFY_MISMATCH) {
    send_error(op->c, op->id, rc, NULL);
    return;
  }
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__VerifyResp v = KVPB__VERIFY_RESP__INIT;
  r.id = op->id;
  r.error = kv_err_to_wire(rc);
  if (rc) r.message = (char *)kv_strerror(rc);
  r.body_case = KVPB__RESPONSE__BODY_VERIFY;
  r.verify = &v;
  v.mismatched_segments = bad;
  send_response(op->c, &r);
}

/* The SWIM member table; an empty list when peer networking is off. */
static void fin_members(kvd_op *op) {
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__MembersResp m = KVPB__MEMBERS_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_MEMBERS;
  r.members = &m;
  void *scratch = kvd_peers_members(op->c->srv, &m);
  send_response(op->c, &r);
  free(scratch);
}

/* The token was checked when the request arrived (see dispatch); this only
 * reports the outcome in its place in the reply order. */
static void fin_auth(kvd_op *op) {
  if (op->err) {
    send_error(op->c, op->id, op->err, NULL);
    return;
  }
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__AuthResp ar = KVPB__AUTH_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_AUTH;
  r.auth = &ar;
  send_response(op->c, &r);
}

/* ---- backup: the copy runs on libuv's thread pool ---- */

/* One backup request. The operation stays pending in its connection's FIFO
 * while the copy runs off the loop thread, so the replica keeps serving
 * (this connection's later requests wait behind it, in order). */
typedef struct backup_job {
  uv_work_t work;
  kvd_op *op;
  kv_store *store;
  Kvpb__Request *req; /* owned, freed with the job */
  int rc;
  kv_store_backup_info info;
  char msg[512];
} backup_job;

static void free_backup_job(void *p) {
  backup_job *j = p;
  kvpb__request__free_unpacked(j->req, NULL);
  free(j);
}

static void backup_work(uv_work_t *w) {
  backup_job *j = w->data;
  j->rc = kv_store_backup(j->store, j->req->backup->dir, &j->info, j->msg,
                          sizeof j->msg);
}

static void backup_done(uv_work_t *w, int status) {
  backup_job *j = w->data;
  kvd_conn *c = j->op->c;
  if (status < 0 && j->rc == KV_OK) j->rc = KV_CLOSED;
  j->op->pending = 0;
  if (j->rc)
    log_warn("backup_failed", "peer=%s dir=\"%s\" err=%s msg=\"%s\"", c->peer,
             j->req->backup->dir, kv_err_name(j->rc), j->msg);
  else
    log_info("backup_done", "peer=%s dir=\"%s\" bytes=%llu elapsed_ms=%llu",
             c->peer, j->req->backup->dir, (unsigned long long)j->info.bytes,
             (unsigned long long)j->info.elapsed_ms);
  /* After a shutdown timed out, the loop's last run closes every handle
   * before this may be called: the reply has nowhere to go then. */
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  kvd_conn_flush(c);
}

static void fin_backup(kvd_op *op) {
  backup_job *j = op->req;
  if (j->rc) {
    send_error(op->c, op->id, j->rc, j->msg[0] ? j->msg : NULL);
    return;
  }
  Kvpb__Response r = KVPB__RESPONSE__INIT;
  Kvpb__BackupResp b = KVPB__BACKUP_RESP__INIT;
  r.id = op->id;
  r.body_case = KVPB__RESPONSE__BODY_BACKUP;
  r.backup = &b;
  b.dir = j->req->backup->dir;
  b.bytes = j->info.bytes;
  b.elapsed_ms = j->info.elapsed_ms;
  b.replica_id = kv_store_replica_id(op->c->srv->store);
  send_response(op->c, &r);
}

static void start_backup(kvd_conn *c, Kvpb__Request *req) {
  kvd_op *op = kvd_op_new(c, fin_backup);
  op->mop = KVD_MOP_BACKUP;
  backup_job *j = kv_calloc(1, sizeof *j);
  j->op = op;
  j->store = c->srv->store;
  j->req = req;
  j->work.data = j;
  op->id = req->id;
  op->req = j;
  op->free_req = free_backup_job;
  log_info("backup_started", "peer=%s dir=\"%s\"", c->peer, req->backup->dir);
  int rc = uv_queue_work(c->srv->loop, &j->work, backup_work, backup_done);
  if (rc < 0) {
    j->rc = KV_IO;
    snprintf(j->msg, sizeof j->msg, "cannot start the backup: %s",
             uv_strerror(rc));
    return;
  }
  op->pending = 1;
}

/* ---- dispatch ---- */

/* An operation that only reports err, in its place in the FIFO. */
static kvd_op *queue_error(kvd_conn *c, uint64_t id, int err) {
  kvd_op *op = kvd_op_new(c, fin_error);
  op->id = id;
  op->err = err;
  return op;
}

/* The operation a request is counted under in the metrics. */
static kvd_mop mop_of(Kvpb__Request__BodyCase body) {
  switch (body) {
  case KVPB__REQUEST__BODY_GET:
    return KVD_MOP_GET;
  case KVPB__REQUEST__BODY_PUT:
    return KVD_MOP_PUT;
  case KVPB__REQUEST__BODY_DEL:
    return KVD_MOP_DEL;
  case KVPB__REQUEST__BODY_INCR:
    return KVD_MOP_INCR;
  case KVPB__REQUEST__BODY_SCAN:
    return KVD_MOP_SCAN;
  case KVPB__REQUEST__BODY_STATUS:
    return KVD_MOP_STATUS;
  case KVPB__REQUEST__BODY_VERIFY:
    return KVD_MOP_VERIFY;
  case KVPB__REQUEST__BODY_MEMBERS:
    return KVD_MOP_MEMBERS;
  case KVPB__REQUEST__BODY_BACKUP:
    return KVD_MOP_BACKUP;
  case KVPB__REQUEST__BODY_AUTH:
    return KVD_MOP_AUTH;
  default:
    return KVD_MOP_INVALID;
  }
}

static void start_write(kvd_op *op, kv_write_op kind, ProtobufCBinaryData key) {
  kv_write *w = kvd_op_writes(op, 1);
  w->op = kind;
  w->key = key.data;
  w->keylen = key.len;
}

static void dispatch(kvd_conn *c, Kvpb__Request *req) {
  if (!c->authed && req->body_case != KVPB__REQUEST__BODY_AUTH) {
    queue_error(c, req->id, KV_AUTH_REQUIRED)->mop = mop_of(req->body_case);
    kvpb__request__free_unpacked(req, NULL);
    return;
  }
  kvd_op *op;
  kv_write *w;
  switch (req->body_case) {
  case KVPB__REQUEST__BODY_GET:
    op = kvd_op_new(c, fin_get);
    break;
  case KVPB__REQUEST__BODY_PUT:
    op = kvd_op_new(c, fin_put);
    start_write(op, KV_WRITE_PUT, req->put->key);
    w = &op->writes[0].w;
    w->value = req->put->value.data;
    w->valuelen = req->put->value.len;
    if (req->put->has_context) {
      w->context =
          req->put->context.data ? req->put->context.data : (const uint8_t *)"";
      w->contextlen = req->put->context.len;
    }
    break;
  case KVPB__REQUEST__BODY_DEL:
    op = kvd_op_new(c, fin_del);
    start_write(op, KV_WRITE_DEL, req->del->key);
    w = &op->writes[0].w;
    if (req->del->has_context) {
      w->context =
          req->del->context.data ? req->del->context.data : (const uint8_t *)"";
      w->contextlen = req->del->context.len;
    }
    break;
  case KVPB__REQUEST__BODY_INCR:
    op = kvd_op_new(c, fin_incr);
    start_write(op, KV_WRITE_INCR, req->incr->key);
    op->writes[0].w.delta = req->incr->delta;
    op->writes[0].w.gcounter = req->incr->gcounter;
    break;
  case KVPB__REQUEST__BODY_SCAN:
    op = kvd_op_new(c, fin_scan);
    break;
  case KVPB__REQUEST__BODY_STATUS:
    op = kvd_op_new(c, fin_status);
    break;
  case KVPB__REQUEST__BODY_VERIFY:
    op = kvd_op_new(c, fin_verify);
    break;
  case KVPB__REQUEST__BODY_MEMBERS:
    op = kvd_op_new(c, fin_members);
    break;
  case KVPB__REQUEST__BODY_BACKUP:
    start_backup(c, req);
    return;
  case KVPB__REQUEST__BODY_AUTH:
    /* Checked now, not at the head of the FIFO, so that requests pipelined
     * right behind it are already authenticated. */
    op = kvd_op_new(c, fin_auth);
    if (kvd_auth_check(c->srv, req->auth->token.data, req->auth->token.len)) {
      c->authed = true;
    } else {
      /* A guessing client would write a line per guess. */
      static kvd_log_rate auth_rate;
      kvd_log_limited(&auth_rate, KVD_LOG_WARN, "auth_failed",
                      "peer=%s proto=native", c->peer);
      op->err = KV_AUTH_FAILED;
    }
    break;
  default:
    queue_error(c, req->id, KV_BAD_REQUEST);
    kvpb__request__free_unpacked(req, NULL);
    return;
  }
  op->id = req->id;
  op->req = req;
  op->free_req = free_request;
  op->mop = mop_of(req->body_case);
  if (op->nwrites) kvd_op_submit(op);
}

void kvd_native_input(kvd_conn *c, const uint8_t *p, size_t len) {
  if (c->close_after_flush) return;
  int rc = kv_frame_reader_feed(c->frames, p, len);
  kv_buf frame;
  while (rc == KV_OK &&
         (rc = kv_frame_reader_next(c->frames, &frame)) == KV_OK) {
    Kvpb__Request *req = kvpb__request__unpack(NULL, frame.len, frame.data);
    if (!req) {
      log_debug("bad_request", "peer=%s reason=undecodable bytes=%zu", c->peer,
                frame.len);
      queue_error(c, 0, KV_BAD_REQUEST);
      continue;
    }
    dispatch(c, req);
  }
  if (rc == KV_FRAME_TOO_LARGE) {
    static kvd_log_rate too_large_rate; /* one per connection, but many */
    c->srv->stats.frames_too_large++;
    kvd_log_limited(&too_large_rate, KVD_LOG_WARN, "frame_too_large",
                    "peer=%s max=%llu", c->peer,
                    (unsigned long long)c->srv->cfg->max_frame_n);
    queue_error(c, 0, KV_FRAME_TOO_LARGE);
    kvd_conn_close_after_flush(c);
  }
}
