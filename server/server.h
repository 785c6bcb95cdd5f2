/*
 * kvd internals shared by the server's files: the server, its client
 * connections and the operations queued on them.
 *
 * Ordering rule: each connection keeps its requests in a FIFO of operations.
 * An operation's reply is produced only when it reaches the head of the FIFO
 * and all of its writes have completed, so replies leave in request order, as
 * RESP requires and the native protocol promises. Reads run at the head, so
 * they see every earlier write of the connection (read-your-writes). Writes
 * are submitted to the store as soon as no read is ahead of them: a pipelined
 * burst of writes becomes one group commit, while a write that follows a read
 * waits until that read has run, so the read cannot see it.
 *
 * Threads: everything here runs on the libuv loop thread except the store's
 * done callback, which only pushes the finished write onto a mutex-guarded
 * list and wakes the loop with uv_async_send.
 */
#ifndef KVD_SERVER_H
#define KVD_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "proto/buf.h"
#include "proto/frame.h"
#include "proto/resp.h"
#include "server/config.h"
#include "server/metrics.h"
#include "storage/store.h"
#include "sync/merkle.h"

typedef struct kvd kvd;
typedef struct kvd_conn kvd_conn;
typedef struct kvd_op kvd_op;

typedef enum kvd_proto { KVD_NATIVE, KVD_RESP } kvd_proto;

/* A write submitted to the store, on behalf of a client operation (op set)
 * or of a peer (complete set). Completions are handled on the loop thread. */
typedef struct kvd_write {
  kv_write w; /* first: the store's callback gets &w */
  kvd_op *op;
  void (*complete)(struct kvd_write *kw); /* peer writes; NULL for client ops */
  struct kvd_write *done_next;
} kvd_write;

/* Builds the operation's reply into c's output; runs at the head of the
 * FIFO once every write of the operation has completed. */
typedef void (*kvd_finish_fn)(kvd_op *op);

struct kvd_op {
  kvd_conn *c;
  kvd_op *next;
  kvd_finish_fn finish;
  kvd_write *writes; /* nwrites of them, or NULL */
  size_t nwrites, pending;
  bool deferred; /* writes not yet submitted: a read is ahead */
  void *req;     /* protocol request, owned (freed by free_req) */
  void (*free_req)(void *req);
  uint64_t id; /* native request id */
  int err;     /* an error decided before execution (reported by finish) */
  uint64_t started_ns;
  uint8_t mop; /* kvd_mop it is counted under (metrics) */
};

struct kvd_conn {
  uv_tcp_t tcp;
  kvd *srv;
  kvd_proto proto;
  kv_frame_reader *frames; /* native */
  kv_resp_parser *resp;    /* RESP */
  kvd_op *head, *tail;
  size_t queued;
  size_t reads;    /* operations in the FIFO without writes */
  kv_resp_out out; /* replies not yet handed to the socket */
  bool reading, closing, finalizing, close_after_flush, authed;
  bool flush_queued; /* on the server's list of connections to flush */
  kvd_conn *flush_next;
  /* Limits (net.c): abort closes without waiting for replies to drain. */
  bool abort;
  bool out_full;          /* max-output-buffer-bytes unsent: paused */
  uint64_t partial_since; /* ms (monotonic) an incomplete request began; 0 */
  uint64_t last_io;       /* ms of the last byte received or reply taken */
  uint64_t closing_since; /* ms the close began */
  size_t inbuf;           /* this connection's share of srv->input_bytes */
  char ip[48];            /* the client's address without the port */
  char peer[64];
  kvd_conn *prev_conn, *next_conn;
};

typedef struct kvd_stats {
  uint64_t connections, rejected_connections, requests, errors;
  /* Limits: see StatusResp in proto/kv.proto. rejected_connections counts
   * max-clients refusals, rejected_per_addr max-clients-per-addr ones. */
  uint64_t rejected_per_addr, read_timeouts, idle_timeouts, input_refused;
  uint64_t output_paused, frames_too_large;
} kvd_stats;

struct kvd {
  uv_loop_t *loop;
  kvd_config *cfg;
  kv_store *store;
  kv_merkle *tree;
  uv_tcp_t native_lsn, resp_lsn;
  bool have_resp;
  uv_async_t wake;
  uv_signal_t sigterm, sigint;
  uv_timer_t stop_timer;
  uv_timer_t sweep_timer; /* read and idle timeouts (net.c) */
  size_t input_bytes;     /* incomplete request bytes held, all clients */

  pthread_mutex_t done_mu;
  kvd_write *done_head, *done_tail;

  kvd_conn *conns;
  kvd_conn *to_flush;      /* connections with completed writes, this wake */
  struct kvd_peers *peers; /* peer networking (peer.c); NULL when off */
  size_t nconns;           /* linked: accepted and not yet closing for good */
  size_t alive;            /* accepted and not yet freed */
  bool stopping;
  uint8_t token_hash[32];
  bool have_token;
  uint64_t start_ms;
  int peer_port; /* bound peer port, 0 when peer networking is off */
  int exit_code; /* kvd's exit status once the loop ends */
  kvd_stats stats;
  kvd_counters counters; /* for the metrics endpoint (metrics.h) */
  kvd_metrics *metrics;  /* the endpoint; NULL when off */
};

/* ---- net.c: connections, the operation FIFO, completions ---- */

int kvd_net_start(kvd *srv);
void kvd_net_stop(kvd *srv);
/* Ends the loop if a stop is under way and nothing is left to wait for. */
void kvd_net_check_stop(kvd *srv);

/* A new operation appended to c's FIFO (finish may be NULL only if set
 * before the next flush). */
kvd_op *kvd_op_new(kvd_conn *c, kvd_finish_fn finish);

/* n writes for op, zeroed, owned by op. */
kv_write *kvd_op_writes(kvd_op *op, size_t n);

/* Submits op's writes to the store. */
void kvd_op_submit(kvd_op *op);

/* Appends bytes to c's output (copied). */
void kvd_conn_send(kvd_conn *c, const void *p, size_t len);

/* Produces every reply that is ready, then writes them out. */
void kvd_conn_flush(kvd_conn *c);

/* Closes c once everything queued has been answered. */
void kvd_conn_close_after_flush(kvd_conn *c);

/* True when addr (host:port) names a loopback host. */
bool kvd_is_loopback(const char *addr);

/* Milliseconds on the monotonic clock. */
uint64_t kvd_mono_ms(void);

/* True when token matches the configured auth token (constant time). */
bool kvd_auth_check(kvd *srv, const uint8_t *token, size_t len);

/* Submits a write that is not a client operation (its complete hook is
 * called on the loop thread). KV_CLOSED if the store is closing. */
int kvd_submit_write(kvd *srv, kvd_write *kw);

/* ---- peer.c: replication ---- */

/* Starts peer networking per the config (listener, joins, timers). KV_OK
 * also when peer networking is off (no key, not insecure, no join). */
int kvd_peers_start(kvd *srv);
void kvd_peers_stop(kvd *srv);
/* Fills the peer and rumor fields of a status reply; returns memory the
 * caller frees after sending it. */
struct Kvpb__StatusResp;
void *kvd_peers_status(kvd *srv, struct Kvpb__StatusResp *s);
/* The member table for a Members reply (self first); returns memory the
 * caller frees after sending it, NULL (and r untouched) when peer
 * networking is off. */
struct Kvpb__MembersResp;
void *kvd_peers_members(kvd *srv, struct Kvpb__MembersResp *r);
/* Fills the replication and membership figures for the metrics endpoint
 * (out zeroed first; only peering false when peer networking is off). */
void kvd_peers_metrics(kvd *srv, kvd_peers_snap *out);
/* In the data directory: when this replica last saw another member alive
 * (ms since the epoch, one decimal line), for the tombstone-grace check. */
#define KVD_CONTACT_FILE "cluster-contact"
/* True while a graceful leave is still gossiping (the loop must not end). */
bool kvd_peers_busy(kvd *srv);
/* Frees what peer networking holds, once the loop has closed its handles. */
void kvd_peers_free(kvd *srv);
/* A local write committed: make it a rumor (obj borrowed). */
void kvd_peers_local_write(kvd *srv, const kv_write *w);

/* ---- native.c and resp_cmds.c: protocol front ends ---- */

/* Feed bytes received on c; parse and start operations. */
void kvd_native_input(kvd_conn *c, const uint8_t *p, size_t len);
void kvd_resp_input(kvd_conn *c, const uint8_t *p, size_t len);
/* Appends a native error Response with id 0 to c's output (msg borrowed;
 * NULL: kv_strerror of err). For refusals that answer no request. */
void kvd_native_error(kvd_conn *c, int err, const char *msg);

#endif
