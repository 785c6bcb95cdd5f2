/*
 * The client side of kvd's event loop: listeners, connections, each
 * connection's operation FIFO (see server.h for the ordering rule), the
 * writer's completions and graceful shutdown.
 *
 * Back-pressure: a connection stops being read while its FIFO holds
 * max-pipeline operations or max-output-buffer-bytes of its replies are
 * unsent, and while that much is unsent no further reply is even built; both
 * resume when the client reads. So a client that pipelines without reading
 * costs kvd at most max-output-buffer-bytes plus one reply, plus the
 * requests of one read.
 *
 * Limits (DESIGN §8) enforced here, each a counted refusal with an error to
 * the client where the protocol has one, never a crash: max-clients and
 * max-clients-per-addr at accept; read-timeout for a request begun but not
 * finished (slowloris); idle-timeout for a connection on which nothing moves;
 * max-input-buffer-bytes for the bytes of incomplete requests held for all
 * clients together. A connection closed for a timeout or a limit is aborted:
 * closed at once, without waiting for a client that does not read to take
 * its replies.
 */
#include <sodium.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <time.h>

#include "server/log.h"
#include "server/server.h"

#define READ_CHUNK 65536

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t kvd_mono_ms(void) { return mono_ns() / 1000000u; }

static void maybe_finish_stop(kvd *srv);

/* ---- operations ---- */

kvd_op *kvd_op_new(kvd_conn *c, kvd_finish_fn finish) {
  kvd_op *op = kv_calloc(1, sizeof *op);
  op->c = c;
  op->finish = finish;
  op->started_ns = mono_ns();
  if (c->tail)
    c->tail->next = op;
  else
    c->head = op;
  c->tail = op;
  c->queued++;
  c->reads++; /* until kvd_op_writes says otherwise */
  c->srv->stats.requests++;
  return op;
}

kv_write *kvd_op_writes(kvd_op *op, size_t n) {
  kv_assert(!op->writes && n > 0);
  op->c->reads--;
  op->writes = kv_calloc(n, sizeof *op->writes);
  op->nwrites = n;
  for (size_t i = 0; i < n; i++) {
    kv_write_init(&op->writes[i].w);
    op->writes[i].op = op;
  }
  return &op->writes[0].w;
}

/* Runs on the writer thread: hand the finished write to the loop. */
static void write_done(kv_write *w, void *arg) {
  kvd *srv = arg;
  kvd_write *kw = (kvd_write *)w;
  kw->done_next = NULL;
  pthread_mutex_lock(&srv->done_mu);
  if (srv->done_tail)
    srv->done_tail->done_next = kw;
  else
    srv->done_head = kw;
  srv->done_tail = kw;
  pthread_mutex_unlock(&srv->done_mu);
  uv_async_send(&srv->wake);
}

/* An operation's writes go to the store as one atomic group (MSET, DEL of
 * several keys: all or nothing, as in Redis). */
static void submit_now(kvd_op *op) {
  kvd *srv = op->c->srv;
  op->deferred = false;
  kv_write *one[1],
      **ws = op->nwrites == 1 ? one : kv_malloc(op->nwrites * sizeof *ws);
  for (size_t i = 0; i < op->nwrites; i++) {
    kv_write *w = &op->writes[i].w;
    w->done = write_done;
    w->arg = srv;
    ws[i] = w;
  }
  if (kv_store_submit_group(srv->store, ws, op->nwrites) == KV_OK) {
    op->pending = op->nwrites;
  } else {
    /* Only possible while the store closes, after the loop has stopped
     * taking requests; answer with the error rather than hang. */
    for (size_t i = 0; i < op->nwrites; i++)
      ws[i]->status = KV_CLOSED;
  }
  if (ws != one) free(ws);
}

void kvd_op_submit(kvd_op *op) {
  /* The op is the FIFO's tail, so every counted read is ahead of it. */
  if (op->c->reads > 0)
    op->deferred = true;
  else
    submit_now(op);
}

/* Submits deferred writes from the head up to the first read. */
static void submit_deferred(kvd_conn *c) {
  for (kvd_op *op = c->head; op && op->nwrites; op = op->next)
    if (op->deferred) submit_now(op);
}

static void op_free(kvd_op *op) {
  for (size_t i = 0; i < op->nwrites; i++)
    kv_write_fini(&op->writes[i].w);
  free(op->writes);
  if (op->free_req) op->free_req(op->req);
  free(op);
}

/* ---- connections ---- */

typedef struct out_req {
  uv_write_t req;
  kv_resp_out buf;
} out_req;

static void conn_maybe_free(kvd_conn *c);
static void conn_abort(kvd_conn *c);

static void on_written(uv_write_t *req, int status) {
  out_req *o = (out_req *)req;
  kvd_conn *c = req->data;
  kvd *srv = c->srv;
  kv_resp_out_fini(&o->buf);
  free(o);
  if (status < 0 && !c->closing)
    log_debug("client_write_failed", "peer=%s err=\"%s\"", c->peer,
              uv_strerror(status));
  if (status == 0) {
    c->last_io = kvd_mono_ms();
    /* The backlog shrank: replies held back (max-output-buffer-bytes) may
     * be built now, and reading may resume. */
    if (!c->closing) kvd_conn_flush(c);
  } else if (!c->closing) {
    /* The client is gone. It may never be read again (kvd stops reading a
     * client with a backlog), so this is where its end is noticed. */
    conn_abort(c);
  }
  conn_maybe_free(c);
  /* A drained backlog may be the last thing a shutdown waits for. */
  if (srv->stopping) maybe_finish_stop(srv);
}

void kvd_conn_send(kvd_conn *c, const void *p, size_t len) {
  kv_resp_out_append(&c->out, p, len);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = kv_malloc(READ_CHUNK);
  buf->len = READ_CHUNK;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void account_input(kvd_conn *c);

static void set_reading(kvd_conn *c, bool on) {
  if (on == c->reading || c->finalizing) return;
  if (on) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    /* The client could not send while kvd was not reading: its request in
     * progress gets a whole read-timeout from now. */
    if (c->partial_since) c->partial_since = kvd_mono_ms();
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
  c->reading = on;
}

static void on_closed(uv_handle_t *h) {
  kvd_conn *c = h->data;
  kvd *srv = c->srv;
  kv_frame_reader_free(c->frames);
  kv_resp_parser_free(c->resp);
  kv_resp_out_fini(&c->out);
  free(c);
  srv->alive--;
  if (srv->stopping) maybe_finish_stop(srv);
}

static void conn_unlink(kvd_conn *c) {
  kvd *srv = c->srv;
  if (c->prev_conn)
    c->prev_conn->next_conn = c->next_conn;
  else
    srv->conns = c->next_conn;
  if (c->next_conn) c->next_conn->prev_conn = c->prev_conn;
  srv->nconns--;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  kvd_conn *c = req->data;
  free(req);
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Frees c once it is closing and no operation or socket write refers to it:
 * the store may still complete writes for operations of a closed client.
 * The socket is half-closed first (FIN after the last reply) and input is
 * drained until then, so the client reads every reply instead of a reset.
 * An aborted connection does not wait for its replies: closing the handle
 * cancels the writes still queued. */
static void conn_maybe_free(kvd_conn *c) {
  if (!c->closing || c->finalizing) return;
  for (kvd_op *op = c->head; op; op = op->next)
    if (op->pending) return;
  if (!c->abort && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0)
    return;
  c->finalizing = true;
  while (c->head) {
    kvd_op *op = c->head;
    c->head = op->next;
    op_free(op);
  }
  conn_unlink(c);
  c->srv->input_bytes -= c->inbuf;
  c->inbuf = 0;
  if (c->abort) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_shutdown_t *req = kv_calloc(1, sizeof *req);
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(req);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
  }
}

static void conn_close(kvd_conn *c) {
  if (c->closing) return;
  set_reading(c, true); /* drain, do not process (see on_read) */
  c->closing = true;
  c->closing_since = kvd_mono_ms();
  conn_maybe_free(c);
}

/* Closes c at once (see conn_maybe_free): for a limit or a timeout, where
 * the client is not to be waited for. */
static void conn_abort(kvd_conn *c) {
  if (c->finalizing) return;
  set_reading(c, false);
  c->abort = true;
  if (!c->closing) c->closing_since = kvd_mono_ms();
  c->closing = true;
  conn_maybe_free(c);
}

/* Tells c why it is refused, in its protocol's error form, then aborts it.
 * The error is sent only if it can go out at once, behind nothing: a client
 * that does not read gets the close alone. */
static void conn_refuse(kvd_conn *c, int err, const char *msg) {
  kv_resp_out_fini(&c->out);
  if (c->proto == KVD_NATIVE) {
    kvd_native_error(c, err, msg);
  } else {
    char line[256];
    snprintf(line, sizeof line, "ERR %s", msg);
    kv_resp_add_error(&c->out, line);
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  }
  kv_resp_out_fini(&c->out);
  conn_abort(c);
}

void kvd_conn_close_after_flush(kvd_conn *c) { c->close_after_flush = true; }

void kvd_conn_flush(kvd_conn *c) {
  if (c->closing) {
    conn_maybe_free(c);
    return;
  }
  kvd *srv = c->srv;
  size_t max_out = srv->cfg->max_output_buffer_n;
  size_t queued_out = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  bool held = false;
  for (;;) {
    submit_deferred(c);
    kvd_op *op = c->head;
    if (!op || op->pending) break;
    /* A client that does not read its replies gets no more of them built
     * (on_written resumes once it reads). */
    if (queued_out + c->out.len >= max_out) {
      held = true;
      break;
    }
    op->finish(op);
    kvd_metrics_request(c->srv, c->proto, op->mop,
                        (mono_ns() - op->started_ns) / 1000);
    c->head = op->next;
    if (!c->head) c->tail = NULL;
    c->queued--;
    if (!op->nwrites) c->reads--;
    op_free(op);
  }
  if (c->out.len) {
    out_req *o = kv_calloc(1, sizeof *o);
    o->buf = c->out;
    memset(&c->out, 0, sizeof c->out);
    o->req.data = c;
    uv_buf_t b = uv_buf_init((char *)o->buf.data, (unsigned)o->buf.len);
    int rc = uv_write(&o->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
      kv_resp_out_fini(&o->buf);
      free(o);
      conn_close(c);
      return;
    }
  }
  if (c->close_after_flush && !c->head) {
    conn_close(c);
    return;
  }
  size_t unsent = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  bool out_full = held || unsent >= max_out;
  if (out_full && !c->out_full) srv->stats.output_paused++;
  c->out_full = out_full;
  bool room = c->queued < srv->cfg->max_pipeline_n && !out_full;
  /* While closing or stopping, input is read and dropped (see on_read). */
  set_reading(c, room || c->close_after_flush || srv->stopping);
  if (srv->stopping) maybe_finish_stop(srv);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kvd_conn *c = s->data;
  bool discard = c->closing || c->close_after_flush || c->srv->stopping;
  if (n > 0 && discard) {
    /* Nothing more is taken from this client; reading keeps its data from
     * turning our close into a reset that could destroy replies in flight. */
  } else if (n > 0) {
    c->last_io = kvd_mono_ms();
    if (c->proto == KVD_NATIVE)
      kvd_native_input(c, (uint8_t *)buf->base, (size_t)n);
    else
      kvd_resp_input(c, (uint8_t *)buf->base, (size_t)n);
    kvd_conn_flush(c);
    account_input(c);
  } else if (n < 0) {
    if (n != UV_EOF)
      log_debug("client_read_failed", "peer=%s err=\"%s\"", c->peer,
                uv_strerror((int)n));
    conn_close(c);
  }
  free(buf->base);
}

/* What is left of an incomplete request after c's input was processed:
 * counted towards max-input-buffer-bytes, and timed by read-timeout. The
 * connection whose bytes take the total over the limit is refused. */
static void account_input(kvd_conn *c) {
  kvd *srv = c->srv;
  if (c->closing) return;
  size_t pending = c->proto == KVD_NATIVE ? kv_frame_reader_pending(c->frames)
                                          : kv_resp_parser_pending(c->resp);
  if (c->close_after_flush) pending = 0; /* nothing more is parsed */
  srv->input_bytes = srv->input_bytes - c->inbuf + pending;
  c->inbuf = pending;
  if (!pending)
    c->partial_since = 0;
  else if (!c->partial_since)
    c->partial_since = kvd_mono_ms();
  if (pending && srv->input_bytes > srv->cfg->max_input_buffer_n) {
    static kvd_log_rate rate;
    srv->stats.input_refused++;
    kvd_metrics_ratelimited(srv, "client_input_buffer");
    kvd_log_limited(&rate, KVD_LOG_WARN, "client_refused",
                    "peer=%s reason=max_input_buffer held=%zu max=%llu "
                    "total=%llu",
                    c->peer, srv->input_bytes,
                    (unsigned long long)srv->cfg->max_input_buffer_n,
                    (unsigned long long)srv->stats.input_refused);
    conn_refuse(c, KV_NOMEM,
                "kvd holds too many bytes of incomplete requests "
                "(max-input-buffer-bytes); try again later");
  }
}

/* "host:port" of c's client into c->peer, and the host alone into c->ip. */
static void peer_name(kvd_conn *c) {
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  char host[48] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
  snprintf(c->ip, sizeof c->ip, "%s", host);
}

/* Connections kvd holds from ip (closing ones included: they still hold
 * their descriptor and buffers). */
static size_t conns_from(const kvd *srv, const char *ip) {
  size_t n = 0;
  for (const kvd_conn *o = srv->conns; o; o = o->next_conn)
    n += strcmp(o->ip, ip) == 0;
  return n;
}

/* Refuses a connection just accepted (not linked): the error goes out if
 * the socket takes it at once, then the connection is closed. */
static void refuse_accepted(kvd_conn *c, const char *msg) {
  if (c->proto == KVD_NATIVE) {
    kvd_native_error(c, KV_CLOSED, msg);
  } else {
    char line[256];
    snprintf(line, sizeof line, "ERR %s", msg);
    kv_resp_add_error(&c->out, line);
  }
  uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
  (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  kv_resp_out_fini(&c->out);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_connection(uv_stream_t *lsn, int status) {
  kvd *srv = lsn->data;
  /* Both can repeat for every connection attempt of a flood (or every
   * loop iteration while out of descriptors): one line a second each. */
  static kvd_log_rate accept_rate, reject_rate;
  if (status < 0) {
    kvd_log_limited(&accept_rate, KVD_LOG_WARN, "accept_failed", "err=\"%s\"",
                    uv_strerror(status));
    return;
  }
  kvd_conn *c = kv_calloc(1, sizeof *c);
  c->srv = srv;
  srv->alive++; /* until on_closed, whatever happens below */
  c->proto = lsn == (uv_stream_t *)&srv->native_lsn ? KVD_NATIVE : KVD_RESP;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(lsn, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  if (srv->stopping || srv->nconns >= srv->cfg->max_clients_n) {
    srv->stats.rejected_connections++;
    kvd_log_limited(&reject_rate, KVD_LOG_WARN, "client_rejected",
                    "reason=%s max_clients=%llu total=%llu",
                    srv->stopping ? "shutting_down" : "max_clients",
                    (unsigned long long)srv->cfg->max_clients_n,
                    (unsigned long long)srv->stats.rejected_connections);
    refuse_accepted(c, srv->stopping ? "kvd is shutting down"
                                     : "max number of clients reached");
    return;
  }
  peer_name(c);
  if (conns_from(srv, c->ip) >= srv->cfg->max_clients_per_addr_n) {
    srv->stats.rejected_per_addr++;
    kvd_metrics_ratelimited(srv, "client_connections_per_addr");
    kvd_log_limited(&reject_rate, KVD_LOG_WARN, "client_rejected",
                    "reason=max_clients_per_addr addr=%s max=%llu total=%llu",
                    c->ip, (unsigned long long)srv->cfg->max_clients_per_addr_n,
                    (unsigned long long)srv->stats.rejected_per_addr);
    refuse_accepted(c, "max number of clients per address reached "
                       "(max-clients-per-addr)");
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->authed = !srv->have_token;
  if (c->proto == KVD_NATIVE) {
    c->frames = kv_frame_reader_new(srv->cfg->max_frame_n);
  } else {
    kv_resp_limits lim = {0};
    lim.max_bulk = srv->cfg->max_value_n + 1024;
    c->resp = kv_resp_parser_new(&lim);
  }
  c->next_conn = srv->conns;
  if (srv->conns) srv->conns->prev_conn = c;
  srv->conns = c;
  srv->nconns++;
  srv->stats.connections++;
  c->last_io = kvd_mono_ms();
  set_reading(c, true);
}

/* ---- completions ---- */

static void client_write_done(kvd *srv, kvd_write *kw) {
  kvd_op *op = kw->op;
  if (kw->w.status == KV_OK && kw->w.changed && kw->w.op != KV_WRITE_MERGE)
    kvd_peers_local_write(srv, &kw->w);
  if (--op->pending == 0 && !op->c->flush_queued) {
    op->c->flush_queued = true;
    op->c->flush_next = srv->to_flush;
    srv->to_flush = op->c;
  }
}

static void on_wake(uv_async_t *a) {
  kvd *srv = a->data;
  pthread_mutex_lock(&srv->done_mu);
  kvd_write *list = srv->done_head;
  srv->done_head = srv->done_tail = NULL;
  pthread_mutex_unlock(&srv->done_mu);

  /* First account every completion, then flush each touched connection
   * once: a group commit completes many writes of the same client. */
  for (kvd_write *kw = list, *next; kw; kw = next) {
    next = kw->done_next;
    kv_write *w = &kw->w;
    if (w->status == KV_OK && w->changed)
      kv_merkle_apply(srv->tree, w->segment, &w->delta_hash);
    if (kw->op)
      client_write_done(srv, kw);
    else
      kw->complete(kw); /* may free kw */
  }
  while (srv->to_flush) {
    kvd_conn *c = srv->to_flush;
    srv->to_flush = c->flush_next;
    c->flush_queued = false;
    kvd_conn_flush(c);
  }
  if (srv->stopping) maybe_finish_stop(srv);
}

int kvd_submit_write(kvd *srv, kvd_write *kw) {
  kw->w.done = write_done;
  kw->w.arg = srv;
  return kv_store_submit(srv->store, &kw->w);
}

/* ---- auth ---- */

bool kvd_auth_check(kvd *srv, const uint8_t *token, size_t len) {
  if (!srv->have_token) return true;
  /* Hashing first makes the comparison independent of the token's length;
   * sodium_memcmp then compares in constant time. */
  uint8_t h[32];
  crypto_generichash(h, sizeof h, token, len, NULL, 0);
  return sodium_memcmp(h, srv->token_hash, sizeof h) == 0;
}

/* ---- timeouts ---- */

/* Every connection, a few times per timeout: a request begun more than
 * read-timeout ago and still incomplete (while kvd was reading), nothing
 * moving for idle-timeout, or a close whose replies the client has not
 * taken within read-timeout. Operations still with the store or a backup
 * worker are waited for; a timeout never cuts one short. */
static void on_sweep(uv_timer_t *t) {
  kvd *srv = t->data;
  const kvd_config *cfg = srv->cfg;
  static kvd_log_rate read_rate, idle_rate;
  static uint64_t requests_seen;
  static bool trimmed = true;
  uint64_t now = kvd_mono_ms();
  /* Once a burst is over (a whole period without a request), hand the
   * memory it freed back to the system: glibc keeps freed heap pages,
   * notably in the writer thread's arena, so without this kvd would stay at
   * the size of its busiest moment. */
  if (srv->stats.requests != requests_seen) {
    requests_seen = srv->stats.requests;
    trimmed = false;
  } else if (!trimmed) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    trimmed = true;
  }
  for (kvd_conn *c = srv->conns, *next; c; c = next) {
    next = c->next_conn;
    if (c->finalizing) continue;
    bool busy = false;
    for (kvd_op *op = c->head; op && !busy; op = op->next)
      busy = op->pending > 0;
    if (c->closing) {
      if (!busy && now - c->closing_since >= cfg->read_timeout_n) {
        srv->stats.idle_timeouts++;
        kvd_log_limited(&idle_rate, KVD_LOG_INFO, "client_timeout",
                        "peer=%s reason=replies_not_taken total=%llu", c->peer,
                        (unsigned long long)srv->stats.idle_timeouts);
        conn_abort(c);
      }
    } else if (c->reading && c->partial_since &&
               now - c->partial_since >= cfg->read_timeout_n) {
      srv->stats.read_timeouts++;
      kvd_metrics_ratelimited(srv, "client_read_timeout");
      kvd_log_limited(&read_rate, KVD_LOG_WARN, "client_timeout",
                      "peer=%s reason=read held=%zu read_timeout=%llu "
                      "total=%llu",
                      c->peer, c->inbuf,
                      (unsigned long long)cfg->read_timeout_n,
                      (unsigned long long)srv->stats.read_timeouts);
      conn_refuse(c, KV_TIMEOUT,
                  "read timeout: a request was begun but not completed "
                  "within read-timeout");
    } else if (cfg->idle_timeout_n && !busy && !c->partial_since &&
               now - c->last_io >= cfg->idle_timeout_n) {
      srv->stats.idle_timeouts++;
      kvd_log_limited(&idle_rate, KVD_LOG_INFO, "client_timeout",
                      "peer=%s reason=idle idle_timeout=%llu total=%llu",
                      c->peer, (unsigned long long)cfg->idle_timeout_n,
                      (unsigned long long)srv->stats.idle_timeouts);
      conn_abort(c);
    }
  }
}

/* The sweep's period: a tenth of the shortest timeout, from 10 ms to 1 s. */
static uint64_t sweep_period(const kvd_config *cfg) {
  uint64_t t = cfg->read_timeout_n;
  if (cfg->idle_timeout_n && cfg->idle_timeout_n < t) t = cfg->idle_timeout_n;
  t /= 10;
  return t < 10 ? 10 : t > 1000 ? 1000 : t;
}

/* ---- listeners and shutdown ---- */

static int bind_listener(kvd *srv, uv_tcp_t *t, const char *addr,
                         int *bound_port) {
  char host[256];
  int port;
  struct sockaddr_storage ss;
  if (kvd_parse_addr(addr, host, sizeof host, &port)) return UV_EINVAL;
  int rc = strchr(host, ':')
               ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
               : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc) return rc;
  uv_tcp_init(srv->loop, t);
  t->data = srv;
  if ((rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0)) ||
      (rc = uv_listen((uv_stream_t *)t, 511, on_connection)))
    return rc;
  int sl = sizeof ss;
  uv_tcp_getsockname(t, (struct sockaddr *)&ss, &sl);
  *bound_port = ss.ss_family == AF_INET
                    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                    : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return 0;
}

bool kvd_is_loopback(const char *addr) {
  char host[256];
  int port;
  if (kvd_parse_addr(addr, host, sizeof host, &port)) return false;
  return !strncmp(host, "127.", 4) || !strcmp(host, "::1") ||
         !strcmp(host, "localhost");
}

static void on_stop_timeout(uv_timer_t *t) {
  kvd *srv = t->data;
  log_warn("shutdown_timeout", "clients=%zu", srv->nconns);
  for (kvd_conn *c = srv->conns, *n; c; c = n) {
    n = c->next_conn;
    conn_close(c);
  }
  uv_stop(srv->loop);
}

/* Once every connection has been answered, close them; the loop ends when
 * the last one has closed. */
static void maybe_finish_stop(kvd *srv) {
  for (kvd_conn *c = srv->conns; c; c = c->next_conn)
    if (c->head || uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0)
      return;
  for (kvd_conn *c = srv->conns, *n; c; c = n) {
    n = c->next_conn;
    conn_close(c);
  }
  if (srv->alive == 0 && !kvd_peers_busy(srv)) uv_stop(srv->loop);
}

void kvd_net_check_stop(kvd *srv) {
  if (srv->stopping) maybe_finish_stop(srv);
}

static void on_signal(uv_signal_t *s, int signum) {
  kvd *srv = s->data;
  if (srv->stopping) return;
  log_info("shutdown", "signal=%d clients=%zu", signum, srv->nconns);
  kvd_net_stop(srv);
}

void kvd_net_stop(kvd *srv) {
  srv->stopping = true;
  kvd_metrics_refresh(srv); /* /health answers 503 from now on */
  uv_timer_stop(&srv->sweep_timer);
  kvd_peers_stop(srv);
  uv_close((uv_handle_t *)&srv->native_lsn, NULL);
  if (srv->have_resp) uv_close((uv_handle_t *)&srv->resp_lsn, NULL);
  /* Stop taking requests (input is now drained and dropped, see on_read);
   * answer what was already received. */
  uv_timer_start(&srv->stop_timer, on_stop_timeout, 10000, 0);
  maybe_finish_stop(srv);
}

int kvd_net_start(kvd *srv) {
  kvd_config *cfg = srv->cfg;
#ifdef __GLIBC__
  /* Large buffers (a big value's frame, its encoding, LMDB's overflow
   * pages) get their own mappings, returned to the system when freed.
   * glibc would otherwise raise this threshold after the first such free
   * and serve later ones from an arena that never shrinks back. Setting it
   * also fixes the trim threshold at its default. */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  if (!srv->have_token &&
      (!kvd_is_loopback(cfg->listen) ||
       (*cfg->resp_listen && !kvd_is_loopback(cfg->resp_listen)))) {
    log_error("config_refused",
              "reason=\"client ports on a non-loopback address need "
              "--auth-token-file\" listen=%s resp_listen=%s",
              cfg->listen, cfg->resp_listen);
    return KV_INVALID;
  }
  if (!srv->have_token && *cfg->metrics_listen &&
      !kvd_is_loopback(cfg->metrics_listen)) {
    log_error("config_refused",
              "reason=\"metrics on a non-loopback address need "
              "--auth-token-file\" metrics_listen=%s",
              cfg->metrics_listen);
    return KV_INVALID;
  }
  int native_port = 0, resp_port = 0, metrics_port = 0, rc;
  if ((rc = bind_listener(srv, &srv->native_lsn, cfg->listen, &native_port))) {
    log_error("listen_failed", "addr=%s err=\"%s\"", cfg->listen,
              uv_strerror(rc));
    return KV_IO;
  }
  log_info("listen", "proto=native addr=%s port=%d", cfg->listen, native_port);
  if (*cfg->resp_listen) {
    srv->have_resp = true;
    if ((rc = bind_listener(srv, &srv->resp_lsn, cfg->resp_listen,
                            &resp_port))) {
      log_error("listen_failed", "addr=%s err=\"%s\"", cfg->resp_listen,
                uv_strerror(rc));
      return KV_IO;
    }
    log_info("listen", "proto=resp addr=%s port=%d", cfg->resp_listen,
             resp_port);
  }
  pthread_mutex_init(&srv->done_mu, NULL);
  uv_async_init(srv->loop, &srv->wake, on_wake);
  srv->wake.data = srv;
  uv_timer_init(srv->loop, &srv->stop_timer);
  srv->stop_timer.data = srv;
  uv_timer_init(srv->loop, &srv->sweep_timer);
  srv->sweep_timer.data = srv;
  uint64_t period = sweep_period(cfg);
  uv_timer_start(&srv->sweep_timer, on_sweep, period, period);
  uv_signal_init(srv->loop, &srv->sigterm);
  uv_signal_init(srv->loop, &srv->sigint);
  srv->sigterm.data = srv->sigint.data = srv;
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  if ((rc = kvd_peers_start(srv))) return rc;
  if ((rc = kvd_metrics_start(srv, &metrics_port))) return rc;
  if (*cfg->ports_file) {
    /* Written aside and renamed, so a reader never sees half of it. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", cfg->ports_file);
    FILE *f = fopen(tmp, "w");
    if (!f ||
        fprintf(f, "native=%d\nresp=%d\npeer=%d\nmetrics=%d\n", native_port,
                resp_port, srv->peer_port, metrics_port) < 0 ||
        fclose(f) != 0 || rename(tmp, cfg->ports_file) != 0) {
      log_error("ports_file_failed", "path=%s", cfg->ports_file);
      return KV_IO;
    }
  }
  return KV_OK;
}
