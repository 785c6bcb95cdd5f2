/*
 * libkvclient over a non-blocking TCP socket and poll(). Requests are encoded
 * into one output buffer as they are queued; the frame reader of proto/frame.h
 * cuts the input into responses. Every response is unpacked and checked (id,
 * body) before a result is built from it, and a result owns its unpacked
 * message, so the accessors borrow from it without copying.
 *
 * Invariants: outstanding requests are exactly the ids [next_id - npending,
 * next_id), answered in that order; their kinds sit in a ring in the same
 * order. Once c->broken is set the stream is never read or written again.
 */
#include "client/kvclient.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/buf.h"
#include "proto/frame.h"
#include "proto/kv.pb-c.h"
#include "proto/kv_err.h"

/* The public codes are a copy of the project's list; this is what keeps the
 * copy honest. A code added to kv_err.h without its KVC_ twin fails here. */
#define KVC_SAME_CODE(name, val, msg)                                          \
  _Static_assert((int)KVC_##name == (int)KV_##name,                            \
                 "KVC_" #name " != KV_" #name);
KV_ERR_MAP(KVC_SAME_CODE)
#undef KVC_SAME_CODE

/* Bytes read from the socket per recv() call. */
#define READ_CHUNK 65536
/* Output buffer capacity kept once everything queued has been written. */
#define OUT_KEEP ((size_t)1 << 20)

struct kvc_conn {
  int fd;
  int io_timeout_ms; /* negative: no limit */
  size_t max_response;
  kv_frame_reader *rd;

  uint8_t *out; /* queued request frames: out[outoff..outlen) not yet sent */
  size_t outlen, outoff, outcap;

  uint64_t next_id;
  kvc_op *ring; /* kinds of the outstanding requests, oldest at head */
  size_t ringcap, head, npending;

  int broken;     /* KVC_OK while usable, else the error that broke it */
  char peer[300]; /* "host:port", for messages */
  char errmsg[512];
};

struct kvc_result {
  kvc_op op;
  uint64_t id;
  int error;
  const char *errmsg;
  char msgbuf[64];      /* errmsg's storage when the library words it */
  Kvpb__Response *resp; /* owned; never NULL */
  kvc_status_info info; /* filled for a STATUS body */
  kvc_member_info *members; /* filled for a MEMBERS body */
  size_t nmembers;
};

/* What borrowed byte pointers point at when there are no bytes, so that a
 * caller never sees NULL (an empty context must not turn into "none"). */
static const uint8_t empty_bytes[1];

/* ---- error messages ---- */

const char *kvc_strerror(int status) { return kv_strerror(status); }

const char *kvc_errname(int status) { return kv_err_name(status); }

__attribute__((format(printf, 3, 4))) static int
set_err(kvc_conn *c, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  return status;
}

/* Records a failure after which the stream cannot be trusted. */
__attribute__((format(printf, 3, 4))) static int
set_broken(kvc_conn *c, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
  va_end(ap);
  c->broken = status;
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  return status;
}

const char *kvc_errmsg(const kvc_conn *c) { return c ? c->errmsg : ""; }

int kvc_conn_error(const kvc_conn *c) { return c ? c->broken : KVC_INVALID; }

/* ---- time ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline timeout_ms from now; -1 means none. */
static int64_t deadline_in(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* The poll() timeout left until deadline: -1 (none), or >= 0 ms. */
static int remaining_ms(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t left = deadline - now_ms();
  if (left <= 0) return 0;
  return left > 1000000000 ? 1000000000 : (int)left;
}

/* ---- socket I/O ---- */

/* Besides a real oversize answer, this is what talking to something other
 * than kvd's native port looks like (an HTTP or RESP reply read as a length),
 * hence the hint. */
static int frame_too_large(kvc_conn *c) {
  return set_broken(c, KVC_FRAME_TOO_LARGE,
                    "%s sent a frame larger than the %zu bytes allowed (is "
                    "it kvd's native-protocol port?)",
                    c->peer, c->max_response);
}

/* Reads what the socket has into the frame reader. */
static int read_some(kvc_conn *c) {
  uint8_t buf[READ_CHUNK];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      int rc = kv_frame_reader_feed(c->rd, buf, (size_t)n);
      if (rc == KV_FRAME_TOO_LARGE) return frame_too_large(c);
      if (rc != KV_OK)
        return set_broken(c, rc, "reading response: %s", kv_strerror(rc));
      return KVC_OK;
    }
    if (n == 0)
      return set_broken(c, KVC_CLOSED, "%s closed the connection", c->peer);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return KVC_OK;
    if (errno == ECONNRESET)
      return set_broken(c, KVC_CLOSED, "%s reset the connection", c->peer);
    return set_broken(c, KVC_IO, "receiving from %s: %s", c->peer,
                      strerror(errno));
  }
}

/* Writes as much queued output as the socket takes. */
static int write_some(kvc_conn *c) {
  while (c->outoff < c->outlen) {
    ssize_t n =
        send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
    if (n >= 0) {
      c->outoff += (size_t)n;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return KVC_OK;
    if (errno == EPIPE || errno == ECONNRESET)
      return set_broken(c, KVC_CLOSED, "%s closed the connection", c->peer);
    return set_broken(c, KVC_IO, "sending to %s: %s", c->peer, strerror(errno));
  }
  c->outoff = c->outlen = 0;
  /* One large value should not pin its buffer for the connection's life. */
  if (c->outcap > OUT_KEEP) {
    free(c->out);
    c->out = NULL;
    c->outcap = 0;
  }
  return KVC_OK;
}

/* Drives the socket until the output is written and, if frame is not NULL,
 * a whole response frame is buffered (returned in *frame, borrowed until the
 * reader is fed again). Reads while writing so that the server is never
 * stuck on a full socket towards us; read-ahead is capped so that a server
 * sending unasked-for data cannot make us buffer without bound. */
static int pump(kvc_conn *c, int64_t deadline, kv_buf *frame) {
  size_t readahead_cap = c->max_response <= SIZE_MAX / 4
                             ? 2 * c->max_response + KV_FRAME_HEADER
                             : SIZE_MAX;
  for (;;) {
    bool out_left = c->outoff < c->outlen;
    if (out_left) {
      int rc = write_some(c);
      if (rc != KVC_OK) return rc;
      out_left = c->outoff < c->outlen;
    }
    if (!out_left) {
      if (!frame) return KVC_OK;
      int rc = kv_frame_reader_next(c->rd, frame);
      if (rc == KV_OK) return KVC_OK;
      if (rc == KV_FRAME_TOO_LARGE) return frame_too_large(c);
      if (rc != KV_AGAIN)
        return set_broken(c, rc, "reading response: %s", kv_strerror(rc));
    }
    struct pollfd p = {.fd = c->fd, .events = 0};
    if (out_left) p.events |= POLLOUT;
    if (!out_left || kv_frame_reader_pending(c->rd) < readahead_cap)
      p.events |= POLLIN;
    int timeout = remaining_ms(deadline);
    if (timeout == 0)
      return set_broken(c, KVC_TIMEOUT, "%s %s timed out after %d ms",
                        out_left ? "sending to" : "waiting for an answer from",
                        c->peer, c->io_timeout_ms);
    int n = poll(&p, 1, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return set_broken(c, KVC_IO, "poll: %s", strerror(errno));
    }
    if (n == 0) continue; /* the deadline check above reports it */
    /* A hang-up or error while only writing is reported by the next send;
     * while reading, recv() drains what arrived first, then reports it. */
    if ((p.events & POLLIN) && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      int rc = read_some(c);
      if (rc != KVC_OK) return rc;
    }
  }
}

/* ---- connecting ---- */

static kvc_conn *conn_new(void) {
  kvc_conn *c = kv_calloc(1, sizeof *c);
  c->fd = -1;
  c->next_id = 1;
  c->io_timeout_ms = KVC_DEFAULT_TIMEOUT_MS;
  c->max_response = KVC_DEFAULT_MAX_RESPONSE;
  return c;
}

/* Closes fd, keeping errno for the caller's message. */
static int close_keep_errno(int fd) {
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

/* Connects a non-blocking socket to one address before deadline. Returns the
 * socket, or -1 with errno set (ETIMEDOUT when time ran out). */
static int connect_one(const struct addrinfo *ai, int64_t deadline) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0) return -1;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
  /* EINTR leaves the connect going on asynchronously, like EINPROGRESS. */
  if (errno != EINPROGRESS && errno != EINTR) return close_keep_errno(fd);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int timeout = remaining_ms(deadline);
    if (timeout == 0) {
      errno = ETIMEDOUT;
      return close_keep_errno(fd);
    }
    int n = poll(&p, 1, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return close_keep_errno(fd);
    if (n == 0) continue;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
      return close_keep_errno(fd);
    if (soerr != 0) {
      errno = soerr;
      return close_keep_errno(fd);
    }
    return fd;
  }
}

static int send_auth(kvc_conn *c, const char *token);

int kvc_connect(const char *host, int port, const kvc_options *opts,
                kvc_conn **out) {
  if (!out) return KVC_INVALID;
  kvc_conn *c = conn_new();
  *out = c;
  if (!host) return set_broken(c, KVC_INVALID, "kvc_connect: host is NULL");
  if (port < 1 || port > 65535)
    return set_broken(c, KVC_INVALID, "kvc_connect: port %d out of range",
                      port);
  int connect_timeout = KVC_DEFAULT_TIMEOUT_MS;
  if (opts) {
    if (opts->connect_timeout_ms) connect_timeout = opts->connect_timeout_ms;
    if (opts->io_timeout_ms) c->io_timeout_ms = opts->io_timeout_ms;
    if (opts->max_response) c->max_response = opts->max_response;
  }
  if (c->max_response > UINT32_MAX) c->max_response = UINT32_MAX;
  c->rd = kv_frame_reader_new(c->max_response);

  /* IPv6 literals are bracketed in messages, as in "[::1]:7400". */
  const char *fmt_open = strchr(host, ':') ? "[" : "";
  const char *fmt_close = strchr(host, ':') ? "]" : "";
  snprintf(c->peer, sizeof c->peer, "%s%s%s:%d", fmt_open, host, fmt_close,
           port);
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, portstr, &hints, &res);
  if (gai != 0)
    return set_broken(c, KVC_IO, "cannot resolve host %s: %s", host,
                      gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));

  int64_t deadline = deadline_in(connect_timeout);
  int err = 0;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    c->fd = connect_one(ai, deadline);
    if (c->fd >= 0) break;
    err = errno;
    if (err == ETIMEDOUT && remaining_ms(deadline) == 0) break;
  }
  freeaddrinfo(res);
  if (c->fd < 0) {
    if (err == ETIMEDOUT)
      return set_broken(c, KVC_TIMEOUT, "connect to %s: timed out after %d ms",
                        c->peer, connect_timeout);
    return set_broken(c, KVC_IO, "connect to %s: %s", c->peer,
                      strerror(err ? err : ECONNREFUSED));
  }
  /* Requests are small and latency-bound; they are already coalesced into
   * one write per flush, so Nagle would only add delay. */
  int one = 1;
  (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  if (opts && opts->token) {
    int rc = send_auth(c, opts->token);
    if (rc != KVC_OK) return rc;
  }
  return KVC_OK;
}

void kvc_close(kvc_conn *c) {
  if (!c) return;
  if (c->fd >= 0) close(c->fd);
  kv_frame_reader_free(c->rd);
  free(c->out);
  free(c->ring);
  free(c);
}

size_t kvc_pending(const kvc_conn *c) { return c ? c->npending : 0; }

/* ---- encoding requests ---- */

static int check_key(kvc_conn *c, const void *key, size_t keylen) {
  if (!key && keylen)
    return set_err(c, KVC_INVALID, "key is NULL with a non-zero length");
  if (keylen == 0 || keylen > KVC_MAX_KEY)
    return set_err(c, KVC_KEY_TOO_LONG,
                   "key is %zu bytes; keys are 1 to %d bytes", keylen,
                   KVC_MAX_KEY);
  return KVC_OK;
}

static int check_bytes(kvc_conn *c, const void *p, size_t len,
                       const char *what) {
  if (!p && len)
    return set_err(c, KVC_INVALID, "%s is NULL with a non-zero length", what);
  return KVC_OK;
}

static ProtobufCBinaryData bin(const void *p, size_t len) {
  ProtobufCBinaryData b = {len, len ? (uint8_t *)p : NULL};
  return b;
}

/* Common checks before queueing a request. */
static int can_send(kvc_conn *c) {
  if (!c) return KVC_INVALID;
  if (c->broken) return KVC_CLOSED;
  return KVC_OK;
}

/* Encodes req as one frame at the end of the output buffer and records its
 * kind as the newest outstanding request. */
static int enqueue(kvc_conn *c, Kvpb__Request *req, kvc_op op, uint64_t *id) {
  req->id = c->next_id;
  size_t len = kvpb__request__get_packed_size(req);
  if (len > UINT32_MAX)
    return set_err(c, KVC_VALUE_TOO_LARGE,
                   "request of %zu bytes does not fit in a frame", len);
  size_t need = c->outlen + KV_FRAME_HEADER + len;
  if (need > c->outcap) {
    if (c->outoff > 0) {
      memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
      c->outlen -= c->outoff;
      c->outoff = 0;
      need = c->outlen + KV_FRAME_HEADER + len;
    }
    if (need > c->outcap) {
      size_t cap = c->outcap ? c->outcap : 4096;
      while (cap < need)
        cap *= 2;
      c->out = kv_realloc(c->out, cap);
      c->outcap = cap;
    }
  }
  kv_frame_header(c->out + c->outlen, len);
  size_t packed =
      kvpb__request__pack(req, c->out + c->outlen + KV_FRAME_HEADER);
  kv_assert(packed == len);
  c->outlen += KV_FRAME_HEADER + len;

  if (c->npending == c->ringcap) {
    size_t cap = c->ringcap ? c->ringcap * 2 : 16;
    kvc_op *ring = kv_malloc(cap * sizeof *ring);
    for (size_t i = 0; i < c->npending; i++)
      ring[i] = c->ring[(c->head + i) % c->ringcap];
    free(c->ring);
    c->ring = ring;
    c->ringcap = cap;
    c->head = 0;
  }
  c->ring[(c->head + c->npending) % c->ringcap] = op;
  c->npending++;
  if (id) *id = c->next_id;
  c->next_id++;
  return KVC_OK;
}

int kvc_send_get(kvc_conn *c, const void *key, size_t keylen, uint64_t *id) {
  int rc = can_send(c);
  if (rc == KVC_OK) rc = check_key(c, key, keylen);
  if (rc != KVC_OK) return rc;
  Kvpb__GetReq body = KVPB__GET_REQ__INIT;
  body.key = bin(key, keylen);
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_GET;
  req.get = &body;
  return enqueue(c, &req, KVC_OP_GET, id);
}

int kvc_send_put(kvc_conn *c, const void *key, size_t keylen, const void *value,
                 size_t vlen, const void *context, size_t contextlen,
                 uint64_t *id) {
  int rc = can_send(c);
  if (rc == KVC_OK) rc = check_key(c, key, keylen);
  if (rc == KVC_OK) rc = check_bytes(c, value, vlen, "value");
  if (rc == KVC_OK) rc = check_bytes(c, context, contextlen, "context");
  if (rc != KVC_OK) return rc;
  Kvpb__PutReq body = KVPB__PUT_REQ__INIT;
  body.key = bin(key, keylen);
  body.value = bin(value, vlen);
  body.has_context = context != NULL;
  body.context = bin(context, contextlen);
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_PUT;
  req.put = &body;
  return enqueue(c, &req, KVC_OP_PUT, id);
}

int kvc_send_del(kvc_conn *c, const void *key, size_t keylen,
                 const void *context, size_t contextlen, uint64_t *id) {
  int rc = can_send(c);
  if (rc == KVC_OK) rc = check_key(c, key, keylen);
  if (rc == KVC_OK) rc = check_bytes(c, context, contextlen, "context");
  if (rc != KVC_OK) return rc;
  Kvpb__DelReq body = KVPB__DEL_REQ__INIT;
  body.key = bin(key, keylen);
  body.has_context = context != NULL;
  body.context = bin(context, contextlen);
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_DEL;
  req.del = &body;
  return enqueue(c, &req, KVC_OP_DEL, id);
}

int kvc_send_incr(kvc_conn *c, const void *key, size_t keylen, int64_t delta,
                  bool gcounter, uint64_t *id) {
  int rc = can_send(c);
  if (rc == KVC_OK) rc = check_key(c, key, keylen);
  if (rc != KVC_OK) return rc;
  Kvpb__IncrReq body = KVPB__INCR_REQ__INIT;
  body.key = bin(key, keylen);
  body.delta = delta;
  body.gcounter = gcounter;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_INCR;
  req.incr = &body;
  return enqueue(c, &req, KVC_OP_INCR, id);
}

int kvc_send_scan(kvc_conn *c, const void *cursor, size_t cursorlen,
                  const void *prefix, size_t prefixlen, uint32_t limit,
                  uint64_t *id) {
  int rc = can_send(c);
  if (rc == KVC_OK) rc = check_bytes(c, cursor, cursorlen, "cursor");
  if (rc == KVC_OK) rc = check_bytes(c, prefix, prefixlen, "prefix");
  if (rc != KVC_OK) return rc;
  Kvpb__ScanReq body = KVPB__SCAN_REQ__INIT;
  body.cursor = bin(cursor, cursorlen);
  body.prefix = bin(prefix, prefixlen);
  body.limit = limit;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_SCAN;
  req.scan = &body;
  return enqueue(c, &req, KVC_OP_SCAN, id);
}

int kvc_send_status(kvc_conn *c, uint64_t *id) {
  int rc = can_send(c);
  if (rc != KVC_OK) return rc;
  Kvpb__StatusReq body = KVPB__STATUS_REQ__INIT;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_STATUS;
  req.status = &body;
  return enqueue(c, &req, KVC_OP_STATUS, id);
}

int kvc_send_members(kvc_conn *c, uint64_t *id) {
  int rc = can_send(c);
  if (rc != KVC_OK) return rc;
  Kvpb__MembersReq body = KVPB__MEMBERS_REQ__INIT;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_MEMBERS;
  req.members = &body;
  return enqueue(c, &req, KVC_OP_MEMBERS, id);
}

int kvc_send_verify(kvc_conn *c, uint64_t *id) {
  int rc = can_send(c);
  if (rc != KVC_OK) return rc;
  Kvpb__VerifyReq body = KVPB__VERIFY_REQ__INIT;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_VERIFY;
  req.verify = &body;
  return enqueue(c, &req, KVC_OP_VERIFY, id);
}

int kvc_send_backup(kvc_conn *c, const char *dir, uint64_t *id) {
  int rc = can_send(c);
  if (rc != KVC_OK) return rc;
  if (!dir || !*dir)
    return set_err(c, KVC_INVALID, "backup: no directory given");
  Kvpb__BackupReq body = KVPB__BACKUP_REQ__INIT;
  body.dir = (char *)dir;
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_BACKUP;
  req.backup = &body;
  return enqueue(c, &req, KVC_OP_BACKUP, id);
}

/* ---- receiving ---- */

static Kvpb__Response__BodyCase body_case_of(kvc_op op) {
  switch (op) {
  case KVC_OP_GET:
    return KVPB__RESPONSE__BODY_GET;
  case KVC_OP_PUT:
    return KVPB__RESPONSE__BODY_PUT;
  case KVC_OP_DEL:
    return KVPB__RESPONSE__BODY_DEL;
  case KVC_OP_INCR:
    return KVPB__RESPONSE__BODY_INCR;
  case KVC_OP_SCAN:
    return KVPB__RESPONSE__BODY_SCAN;
  case KVC_OP_STATUS:
    return KVPB__RESPONSE__BODY_STATUS;
  case KVC_OP_VERIFY:
    return KVPB__RESPONSE__BODY_VERIFY;
  case KVC_OP_AUTH:
    return KVPB__RESPONSE__BODY_AUTH;
  case KVC_OP_BACKUP:
    return KVPB__RESPONSE__BODY_BACKUP;
  case KVC_OP_MEMBERS:
    return KVPB__RESPONSE__BODY_MEMBERS;
  }
  kv_panic("unknown kvc_op %d", (int)op);
}

static const char *op_name(kvc_op op) {
  switch (op) {
  case KVC_OP_GET:
    return "get";
  case KVC_OP_PUT:
    return "put";
  case KVC_OP_DEL:
    return "del";
  case KVC_OP_INCR:
    return "incr";
  case KVC_OP_SCAN:
    return "scan";
  case KVC_OP_STATUS:
    return "status";
  case KVC_OP_VERIFY:
    return "verify";
  case KVC_OP_AUTH:
    return "auth";
  case KVC_OP_BACKUP:
    return "backup";
  case KVC_OP_MEMBERS:
    return "members";
  }
  return "?";
}

static const char *body_name(Kvpb__Response__BodyCase b) {
  switch (b) {
  case KVPB__RESPONSE__BODY__NOT_SET:
    return "no body";
  case KVPB__RESPONSE__BODY_GET:
    return "a get body";
  case KVPB__RESPONSE__BODY_PUT:
    return "a put body";
  case KVPB__RESPONSE__BODY_DEL:
    return "a del body";
  case KVPB__RESPONSE__BODY_INCR:
    return "an incr body";
  case KVPB__RESPONSE__BODY_SCAN:
    return "a scan body";
  case KVPB__RESPONSE__BODY_STATUS:
    return "a status body";
  case KVPB__RESPONSE__BODY_AUTH:
    return "an auth body";
  case KVPB__RESPONSE__BODY_VERIFY:
    return "a verify body";
  case KVPB__RESPONSE__BODY_BACKUP:
    return "a backup body";
  case KVPB__RESPONSE__BODY_MEMBERS:
    return "a members body";
  default:
    break;
  }
  return "an unknown body";
}

int kvc_flush(kvc_conn *c) {
  if (!c) return KVC_INVALID;
  if (c->broken) return KVC_CLOSED;
  return pump(c, deadline_in(c->io_timeout_ms), NULL);
}

/* Receives the next answer with the deadline given. */
static int recv_until(kvc_conn *c, int64_t deadline, kvc_result **out) {
  *out = NULL;
  if (c->broken) return KVC_CLOSED;
  if (c->npending == 0)
    return set_err(c, KVC_INVALID, "no request is waiting for an answer");
  kv_buf frame;
  int rc = pump(c, deadline, &frame);
  if (rc != KVC_OK) return rc;

  kvc_op op = c->ring[c->head];
  uint64_t want = c->next_id - c->npending;
  Kvpb__Response *resp = kvpb__response__unpack(NULL, frame.len, frame.data);
  if (!resp)
    return set_broken(c, KVC_CORRUPT,
                      "protocol error from %s: undecodable answer (%zu bytes) "
                      "to %s request %llu",
                      c->peer, frame.len, op_name(op),
                      (unsigned long long)want);
  /* A request the server could not decode is answered with id 0; answers
   * keep their order, so that is the answer to the oldest request. */
  if (resp->id != want && !(resp->id == 0 && resp->error != 0)) {
    uint64_t got = resp->id;
    kvpb__response__free_unpacked(resp, NULL);
    return set_broken(
        c, KVC_CORRUPT, "protocol error from %s: answer id %llu, expected %llu",
        c->peer, (unsigned long long)got, (unsigned long long)want);
  }
  int err = kv_err_from_wire(resp->error);
  Kvpb__Response__BodyCase expect = body_case_of(op);
  /* A successful answer must carry the body its request asks for, except
   * where that body is empty anyway (DEL, AUTH). */
  if (err == KVC_OK && resp->body_case != expect &&
      !(resp->body_case == KVPB__RESPONSE__BODY__NOT_SET &&
        (op == KVC_OP_DEL || op == KVC_OP_AUTH))) {
    const char *got = body_name(resp->body_case);
    kvpb__response__free_unpacked(resp, NULL);
    return set_broken(c, KVC_CORRUPT,
                      "protocol error from %s: the answer to %s request %llu "
                      "carries %s",
                      c->peer, op_name(op), (unsigned long long)want, got);
  }

  kvc_result *r = kv_calloc(1, sizeof *r);
  r->op = op;
  r->id = want;
  r->error = err;
  r->resp = resp;
  if (err == KVC_OK) {
    r->errmsg = "";
  } else if (resp->message && resp->message[0]) {
    r->errmsg = resp->message;
  } else if (kv_err_to_wire(err) != resp->error) {
    /* A code this library does not know (a newer server): say which. */
    snprintf(r->msgbuf, sizeof r->msgbuf, "server error code %u",
             (unsigned)resp->error);
    r->errmsg = r->msgbuf;
  } else {
    r->errmsg = kv_strerror(err);
  }
  if (resp->body_case == KVPB__RESPONSE__BODY_STATUS && op == KVC_OP_STATUS) {
    const Kvpb__StatusResp *s = resp->status;
    r->info.name = s->name ? s->name : "";
    r->info.replica_id = s->replica_id;
    r->info.keys = s->keys;
    r->info.merkle_root =
        s->merkle_root.len ? s->merkle_root.data : empty_bytes;
    r->info.merkle_root_len = s->merkle_root.len;
    r->info.version = s->version ? s->version : "";
    r->info.uptime_ms = s->uptime_ms;
    r->info.sync = s->sync;
    r->info.map_size = s->map_size;
    r->info.map_used = s->map_used;
    r->info.commits = s->commits;
    r->info.writes = s->writes;
    r->info.stored = s->stored;
    r->info.peering = s->peering;
    r->info.insecure = s->insecure;
    r->info.cluster = s->cluster ? s->cluster : "";
    r->info.rumors_added = s->rumors_added;
    r->info.rumors_pushed = s->rumors_pushed;
    r->info.rumor_acks = s->rumor_acks;
    r->info.rumor_news_acks = s->rumor_news_acks;
    r->info.rumors_died = s->rumors_died;
    r->info.rumors_dropped = s->rumors_dropped;
    r->info.rumors_hot = s->rumors_hot;
    r->info.invalid_envelopes = s->invalid_envelopes;
    r->info.peer_messages_sent = s->peer_messages_sent;
    r->info.peer_bytes_sent = s->peer_bytes_sent;
    r->info.peer_messages_received = s->peer_messages_received;
    r->info.peer_bytes_received = s->peer_bytes_received;
    r->info.members_alive = s->members_alive;
    r->info.members_suspect = s->members_suspect;
    r->info.members_dead = s->members_dead;
    r->info.members_left = s->members_left;
    r->info.swim_messages_sent = s->swim_messages_sent;
    r->info.swim_messages_received = s->swim_messages_received;
    r->info.swim_health = s->swim_health;
    r->info.invalid_truncated = s->invalid_truncated;
    r->info.invalid_bad_version = s->invalid_bad_version;
    r->info.invalid_wrong_cluster = s->invalid_wrong_cluster;
    r->info.invalid_stale = s->invalid_stale;
    r->info.invalid_replay = s->invalid_replay;
    r->info.invalid_bad_tag = s->invalid_bad_tag;
    r->info.invalid_mode_mismatch = s->invalid_mode_mismatch;
    r->info.peer_malformed = s->peer_malformed;
    r->info.clients_refused = s->clients_refused;
    r->info.clients_refused_per_addr = s->clients_refused_per_addr;
    r->info.read_timeouts = s->read_timeouts;
    r->info.idle_timeouts = s->idle_timeouts;
    r->info.input_buffer_refused = s->input_buffer_refused;
    r->info.input_buffer_bytes = s->input_buffer_bytes;
    r->info.output_paused = s->output_paused;
    r->info.frames_too_large = s->frames_too_large;
    r->info.peer_conns_refused = s->peer_conns_refused;
    r->info.peer_handshake_timeouts = s->peer_handshake_timeouts;
    r->info.peer_rate_limited = s->peer_rate_limited;
    r->info.peer_oversize = s->peer_oversize;
    if (s->n_peers) {
      kvc_peer_info *pi = kv_calloc(s->n_peers, sizeof *pi);
      for (size_t i = 0; i < s->n_peers; i++) {
        const Kvpb__PeerStatus *ps = s->peers[i];
        pi[i].name = ps->name ? ps->name : "";
        pi[i].addr = ps->addr ? ps->addr : "";
        pi[i].replica_id = ps->replica_id;
        pi[i].alive = ps->alive;
        pi[i].exchanges = ps->exchanges;
        pi[i].last_exchange_ms_ago = ps->last_exchange_ms_ago;
        pi[i].keys_pushed = ps->keys_pushed;
        pi[i].keys_pulled = ps->keys_pulled;
        pi[i].bytes_sent = ps->bytes_sent;
        pi[i].bytes_received = ps->bytes_received;
      }
      r->info.peers = pi;
      r->info.npeers = s->n_peers;
    }
  }
  if (resp->body_case == KVPB__RESPONSE__BODY_MEMBERS &&
      op == KVC_OP_MEMBERS && resp->members->n_members) {
    const Kvpb__MembersResp *ms = resp->members;
    kvc_member_info *mi = kv_calloc(ms->n_members, sizeof *mi);
    for (size_t i = 0; i < ms->n_members; i++) {
      const Kvpb__Member *m = ms->members[i];
      mi[i].name = m->name ? m->name : "";
      mi[i].addr = m->addr ? m->addr : "";
      mi[i].replica_id = m->replica_id;
      mi[i].state = m->state ? m->state : "";
      mi[i].incarnation = m->incarnation;
      mi[i].since_ms = m->since_ms;
      mi[i].self = m->self;
    }
    r->members = mi;
    r->nmembers = ms->n_members;
  }

  c->head = (c->head + 1) % c->ringcap;
  c->npending--;
  /* The server closes the connection after a frame it refused as too
   * large; nothing more will come. */
  if (err == KVC_FRAME_TOO_LARGE)
    set_broken(c, KVC_FRAME_TOO_LARGE, "server: %s", r->errmsg);
  *out = r;
  return KVC_OK;
}

int kvc_recv(kvc_conn *c, kvc_result **out) {
  if (!c || !out) {
    if (out) *out = NULL;
    return KVC_INVALID;
  }
  return recv_until(c, deadline_in(c->io_timeout_ms), out);
}

/* ---- requests: one at a time ---- */

static int ready_for_call(kvc_conn *c) {
  if (!c) return KVC_INVALID;
  if (c->broken) return KVC_CLOSED;
  if (c->npending > 0)
    return set_err(c, KVC_INVALID,
                   "%zu pipelined answers not yet received: kvc_recv them "
                   "first",
                   c->npending);
  return KVC_OK;
}

/* Waits for the answer to the one request just queued. On KVC_OK *out holds
 * it and the status returned is the server's; the connection's message
 * follows the answer's. */
static int call(kvc_conn *c, int64_t deadline, kvc_result **out) {
  int rc = recv_until(c, deadline, out);
  if (rc != KVC_OK) return rc;
  int err = (*out)->error;
  if (err != KVC_OK && !c->broken) set_err(c, err, "%s", (*out)->errmsg);
  return err;
}

static int send_auth(kvc_conn *c, const char *token) {
  Kvpb__AuthReq body = KVPB__AUTH_REQ__INIT;
  body.token = bin(token, strlen(token));
  Kvpb__Request req = KVPB__REQUEST__INIT;
  req.body_case = KVPB__REQUEST__BODY_AUTH;
  req.auth = &body;
  int rc = enqueue(c, &req, KVC_OP_AUTH, NULL);
  kvc_result *r = NULL;
  if (rc == KVC_OK) rc = call(c, deadline_in(c->io_timeout_ms), &r);
  kvc_result_free(r);
  if (rc != KVC_OK && !c->broken) {
    /* A refused token ends the connection: nothing else would work. */
    char why[sizeof c->errmsg];
    snprintf(why, sizeof why, "%s", c->errmsg);
    set_broken(c, rc, "authentication: %s", why);
  }
  return rc;
}

int kvc_get(kvc_conn *c, const void *key, size_t keylen, kvc_result **out) {
  if (!out) return c ? set_err(c, KVC_INVALID, "out is NULL") : KVC_INVALID;
  *out = NULL;
  int rc = ready_for_call(c);
  if (rc == KVC_OK) rc = kvc_send_get(c, key, keylen, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (rc == KVC_OK || rc == KVC_NOTFOUND)
    *out = r;
  else
    kvc_result_free(r);
  return rc;
}

int kvc_put(kvc_conn *c, const void *key, size_t keylen, const void *value,
            size_t vlen, const void *context, size_t contextlen) {
  int rc = ready_for_call(c);
  if (rc == KVC_OK)
    rc = kvc_send_put(c, key, keylen, value, vlen, context, contextlen, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  kvc_result_free(r);
  return rc;
}

int kvc_del(kvc_conn *c, const void *key, size_t keylen, const void *context,
            size_t contextlen) {
  int rc = ready_for_call(c);
  if (rc == KVC_OK)
    rc = kvc_send_del(c, key, keylen, context, contextlen, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  kvc_result_free(r);
  return rc;
}

int kvc_incr(kvc_conn *c, const void *key, size_t keylen, int64_t delta,
             bool gcounter, int64_t *value) {
  int rc = ready_for_call(c);
  if (rc == KVC_OK) rc = kvc_send_incr(c, key, keylen, delta, gcounter, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (rc == KVC_OK && value) *value = kvc_result_counter(r);
  kvc_result_free(r);
  return rc;
}

int kvc_scan(kvc_conn *c, const void *cursor, size_t cursorlen,
             const void *prefix, size_t prefixlen, uint32_t limit,
             kvc_result **out) {
  if (!out) return c ? set_err(c, KVC_INVALID, "out is NULL") : KVC_INVALID;
  *out = NULL;
  int rc = ready_for_call(c);
  if (rc == KVC_OK)
    rc = kvc_send_scan(c, cursor, cursorlen, prefix, prefixlen, limit, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (rc == KVC_OK)
    *out = r;
  else
    kvc_result_free(r);
  return rc;
}

/* A call without arguments whose whole result goes to the caller. */
static int call_no_args(kvc_conn *c, int (*send)(kvc_conn *, uint64_t *),
                        kvc_result **out) {
  if (!out) return c ? set_err(c, KVC_INVALID, "out is NULL") : KVC_INVALID;
  *out = NULL;
  int rc = ready_for_call(c);
  if (rc == KVC_OK) rc = send(c, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (rc == KVC_OK)
    *out = r;
  else
    kvc_result_free(r);
  return rc;
}

int kvc_status(kvc_conn *c, kvc_result **out) {
  return call_no_args(c, kvc_send_status, out);
}

int kvc_members(kvc_conn *c, kvc_result **out) {
  return call_no_args(c, kvc_send_members, out);
}

int kvc_verify(kvc_conn *c, uint64_t *mismatched) {
  if (mismatched) *mismatched = 0;
  int rc = ready_for_call(c);
  if (rc == KVC_OK) rc = kvc_send_verify(c, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (r && mismatched) *mismatched = kvc_result_mismatched(r);
  kvc_result_free(r);
  return rc;
}

int kvc_backup(kvc_conn *c, const char *dir, kvc_backup_info *info) {
  if (info) memset(info, 0, sizeof *info);
  int rc = ready_for_call(c);
  if (rc == KVC_OK) rc = kvc_send_backup(c, dir, NULL);
  if (rc != KVC_OK) return rc;
  kvc_result *r = NULL;
  rc = call(c, deadline_in(c->io_timeout_ms), &r);
  if (rc == KVC_OK && info) *info = kvc_result_backup(r);
  kvc_result_free(r);
  return rc;
}

/* ---- result accessors ---- */

void kvc_result_free(kvc_result *r) {
  if (!r) return;
  free((void *)r->info.peers);
  free(r->members);
  kvpb__response__free_unpacked(r->resp, NULL);
  free(r);
}

kvc_op kvc_result_op(const kvc_result *r) { return r->op; }

uint64_t kvc_result_id(const kvc_result *r) { return r->id; }

int kvc_result_error(const kvc_result *r) { return r->error; }

const char *kvc_result_errmsg(const kvc_result *r) { return r->errmsg; }

/* The body of r if it is the one expected for its request, else NULL. Every
 * accessor goes through these, so a body of the wrong kind that came with an
 * error is never misread. */
static const Kvpb__GetResp *get_body(const kvc_result *r) {
  return r->op == KVC_OP_GET && r->resp->body_case == KVPB__RESPONSE__BODY_GET
             ? r->resp->get
             : NULL;
}

static const Kvpb__ScanResp *scan_body(const kvc_result *r) {
  return r->op == KVC_OP_SCAN && r->resp->body_case == KVPB__RESPONSE__BODY_SCAN
             ? r->resp->scan
             : NULL;
}

kvc_kind kvc_result_kind(const kvc_result *r) {
  const Kvpb__GetResp *g = get_body(r);
  return g ? (kvc_kind)g->kind : KVC_KIND_NONE;
}

size_t kvc_result_siblings(const kvc_result *r) {
  const Kvpb__GetResp *g = get_body(r);
  return g ? g->n_siblings : 0;
}

int kvc_result_sibling(const kvc_result *r, size_t i, const uint8_t **data,
                       size_t *len) {
  const Kvpb__GetResp *g = get_body(r);
  if (!g || i >= g->n_siblings || !data || !len) return KVC_INVALID;
  const Kvpb__Sibling *s = g->siblings[i];
  *data = s->value.len ? s->value.data : empty_bytes;
  *len = s->value.len;
  return KVC_OK;
}

uint64_t kvc_result_sibling_ts(const kvc_result *r, size_t i) {
  const Kvpb__GetResp *g = get_body(r);
  return g && i < g->n_siblings ? g->siblings[i]->ts : 0;
}

void kvc_result_context(const kvc_result *r, const uint8_t **data,
                        size_t *len) {
  const ProtobufCBinaryData *b = NULL;
  const Kvpb__GetResp *g = get_body(r);
  if (g)
    b = &g->context;
  else if (r->op == KVC_OP_PUT &&
           r->resp->body_case == KVPB__RESPONSE__BODY_PUT)
    b = &r->resp->put->context;
  *data = b && b->len ? b->data : empty_bytes;
  *len = b ? b->len : 0;
}

int64_t kvc_result_counter(const kvc_result *r) {
  const Kvpb__GetResp *g = get_body(r);
  if (g) return g->counter;
  if (r->op == KVC_OP_INCR && r->resp->body_case == KVPB__RESPONSE__BODY_INCR)
    return r->resp->incr->value;
  return 0;
}

size_t kvc_result_keys(const kvc_result *r) {
  const Kvpb__ScanResp *s = scan_body(r);
  return s ? s->n_keys : 0;
}

int kvc_result_key(const kvc_result *r, size_t i, const uint8_t **data,
                   size_t *len) {
  const Kvpb__ScanResp *s = scan_body(r);
  if (!s || i >= s->n_keys || !data || !len) return KVC_INVALID;
  *data = s->keys[i].len ? s->keys[i].data : empty_bytes;
  *len = s->keys[i].len;
  return KVC_OK;
}

void kvc_result_cursor(const kvc_result *r, const uint8_t **data, size_t *len) {
  const Kvpb__ScanResp *s = scan_body(r);
  *data = s && s->cursor.len ? s->cursor.data : empty_bytes;
  *len = s ? s->cursor.len : 0;
}

size_t kvc_result_members(const kvc_result *r, const kvc_member_info **out) {
  bool ok = r->error == KVC_OK && r->op == KVC_OP_MEMBERS;
  *out = ok ? r->members : NULL;
  return ok ? r->nmembers : 0;
}

const kvc_status_info *kvc_result_status_info(const kvc_result *r) {
  return r->error == KVC_OK && r->op == KVC_OP_STATUS &&
                 r->resp->body_case == KVPB__RESPONSE__BODY_STATUS
             ? &r->info
             : NULL;
}

uint64_t kvc_result_mismatched(const kvc_result *r) {
  return r->op == KVC_OP_VERIFY &&
                 r->resp->body_case == KVPB__RESPONSE__BODY_VERIFY
             ? r->resp->verify->mismatched_segments
             : 0;
}

kvc_backup_info kvc_result_backup(const kvc_result *r) {
  kvc_backup_info b = {0};
  if (r->error == KVC_OK && r->op == KVC_OP_BACKUP &&
      r->resp->body_case == KVPB__RESPONSE__BODY_BACKUP) {
    b.bytes = r->resp->backup->bytes;
    b.elapsed_ms = r->resp->backup->elapsed_ms;
    b.replica_id = r->resp->backup->replica_id;
  }
  return b;
}
