/*
 * kvd's metrics: the figures the event loop counts (requests and latency by
 * operation and protocol, errors by code, rate-limit hits), and the HTTP
 * endpoint on --metrics-listen that serves them, with the store's,
 * replication's and membership's, as Prometheus text on /metrics and a JSON
 * summary on /health. The HTTP side is libmicrohttpd: a maintained Debian
 * package, so kvd carries no HTTP parser of its own.
 *
 * Threads and the handoff. The loop thread owns every figure (the counters
 * below, peer.c's counters, the member table) and is the only thread that
 * reads or writes them. libmicrohttpd answers on its own internal polling
 * thread, which never touches loop state: for each request it asks the loop
 * for a fresh snapshot (uv_async_send) and waits on a condition variable,
 * at most KVD_METRICS_WAIT_MS, until the loop has copied every figure into
 * the mutex-guarded kvd_metrics_snap and bumped its generation. If the loop
 * does not answer in time (a long operation, or the loop has ended), the
 * previous snapshot is served, and its age is exported. The HTTP thread
 * copies the snapshot out under the mutex and renders the reply from its
 * copy, outside the lock, so the loop never waits for a slow scraper.
 *
 * Shutdown: kvd_metrics_stop, on the loop thread once the loop has ended,
 * marks the endpoint closing under the mutex (so no request sends to the
 * async handle after that) and wakes any request waiting, then stops
 * libmicrohttpd, which joins its thread. While kvd is stopping but its loop
 * still runs (draining clients, gossiping its leave), /health answers 503.
 */
#ifndef KVD_METRICS_H
#define KVD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"
#include "sync/seal.h"

struct kvd;
typedef struct kvd_metrics kvd_metrics; /* the endpoint (metrics.c) */

/* Longest a request waits for the loop's fresh snapshot. */
#define KVD_METRICS_WAIT_MS 250

/* X(NAME, label): the operations requests are counted under, the same for
 * both protocols. A RESP command is counted as the operation it performs:
 * SET is put; INCR, DECR, INCRBY and DECRBY are incr. "invalid" counts
 * requests that named no operation (undecodable, unknown command, wrong
 * arity). INVALID is 0, so a zeroed kvd_op counts as invalid. */
#define KVD_MOPS(X)                                                            \
  X(INVALID, "invalid")                                                        \
  X(GET, "get")                                                                \
  X(PUT, "put")                                                                \
  X(DEL, "del")                                                                \
  X(INCR, "incr")                                                              \
  X(SCAN, "scan")                                                              \
  X(STATUS, "status")                                                          \
  X(MEMBERS, "members")                                                        \
  X(VERIFY, "verify")                                                          \
  X(BACKUP, "backup")                                                          \
  X(AUTH, "auth")                                                              \
  X(MGET, "mget")                                                              \
  X(MSET, "mset")                                                              \
  X(EXISTS, "exists")                                                          \
  X(SIBLINGS, "siblings")                                                      \
  X(DBSIZE, "dbsize")                                                          \
  X(INFO, "info")                                                              \
  X(PING, "ping")                                                              \
  X(ECHO, "echo")                                                              \
  X(QUIT, "quit")                                                              \
  X(SELECT, "select")                                                          \
  X(CONFIG, "config")                                                          \
  X(COMMAND, "command")

typedef enum kvd_mop {
#define KVD_MOP_ENUM(name, label) KVD_MOP_##name,
  KVD_MOPS(KVD_MOP_ENUM)
#undef KVD_MOP_ENUM
      KVD_NMOPS
} kvd_mop;

/* The label of op ("invalid" for a value out of range). */
const char *kvd_mop_name(int op);

/* A histogram of microsecond values. b[i] counts values at most bound i of
 * its kind (and above bound i-1); b[nbounds] counts the rest. Per bucket,
 * not cumulative: the renderer accumulates. */
#define KVD_HIST_MAX 16
typedef struct kvd_hist {
  uint64_t count, sum_us;
  uint64_t b[KVD_HIST_MAX + 1];
} kvd_hist;

typedef enum kvd_hist_kind {
  KVD_HIST_REQUEST, /* request latency: 100 us to 10 s */
  KVD_HIST_AE,      /* anti-entropy exchange duration: 1 ms to 60 s */
} kvd_hist_kind;

void kvd_hist_add(kvd_hist *h, kvd_hist_kind kind, uint64_t us);

#define KVD_NERR_SLOTS 64 /* errors[-code]; codes are 0 down to -63 */
#define KVD_RATELIMIT_KINDS 16

/* What the loop counts for the endpoint; embedded in struct kvd, loop
 * thread only. */
typedef struct kvd_counters {
  kvd_hist ops[2][KVD_NMOPS];      /* [kvd_proto][kvd_mop]: answered requests */
  uint64_t errors[KVD_NERR_SLOTS]; /* error replies by -code */
  char ratelimit_what[KVD_RATELIMIT_KINDS][32];
  uint64_t ratelimit_hits[KVD_RATELIMIT_KINDS];
  size_t nratelimit;
} kvd_counters;

/* Replication's and membership's figures (peer.c fills them). Counters are
 * totals since start. */
typedef struct kvd_peers_snap {
  bool peering;  /* peer networking on */
  bool insecure; /* --insecure: peer traffic unauthenticated */
  uint64_t rumors_added, rumors_pushed, rumors_received, rumors_news;
  uint64_t rumors_dropped, rumors_died, rumors_hot;
  /* Anti-entropy exchanges this replica initiated, by outcome. */
  uint64_t ae_done, ae_timeout, ae_malformed;
  uint64_t ae_keys_pushed, ae_keys_pulled; /* objects sent / received */
  uint64_t ae_bytes_sent, ae_bytes_received;
  kvd_hist ae_duration;
  /* Keys whose stored object an anti-entropy merge changed here (as
   * initiator or responder): each repair counted once, where it landed. */
  uint64_t ae_repairs;
  int64_t ae_last_age_ms; /* since the last exchange ended; -1: none yet */
  uint64_t members[5];    /* by kv_swim_state (ALIVE..LEFT); self included */
  uint64_t swim_sent, swim_received, swim_bytes_sent, swim_bytes_received;
  uint64_t swim_health; /* Lifeguard awareness: 0 is healthy */
  uint64_t msgs_sent, msgs_received, bytes_sent, bytes_received;
  uint64_t invalid[KV_SEAL_NVERDICTS]; /* envelopes refused, by verdict */
  uint64_t malformed;      /* messages that opened but did not make sense */
  uint64_t refused_hellos; /* joiners refused (cluster, version, segments) */
  uint64_t dropped_merges, dropped_sends;
  uint64_t peers, peers_alive; /* known peers; of them chosen for gossip */
} kvd_peers_snap;

/* Everything one scrape shows, copied by the loop thread. */
typedef struct kvd_metrics_snap {
  uint64_t gen;     /* bumped by every copy */
  uint64_t took_ms; /* monotonic time of the copy */
  char name[128];
  char version[32];
  uint64_t replica_id;
  bool stopping;
  bool store_ok; /* stats readable and the last write transaction did not
                    fail (see kv_store_stats.failing) */
  uint64_t uptime_ms;
  uint64_t conns, conns_total, conns_rejected;
  kvd_counters c;
  kv_store_stats store;
  kvd_peers_snap peers;
} kvd_metrics_snap;

/* ---- loop thread ---- */

/* Starts the endpoint on cfg->metrics_listen if set (*port receives the
 * bound port, 0 when off). Refuses (KV_INVALID) an address that is not
 * loopback unless an auth token is configured: the endpoints then require
 * "Authorization: Bearer TOKEN". KV_IO if the address cannot be bound. */
KV_WARN_UNUSED int kvd_metrics_start(struct kvd *srv, int *port);

/* Copies the figures for the endpoint now, so that a change the HTTP side
 * must see at once (kvd starts stopping) does not wait for a scrape the
 * loop may be too busy to answer. Nothing when the endpoint is off. */
void kvd_metrics_refresh(struct kvd *srv);

/* Stops serving (see the top); call once the loop has ended. Idempotent. */
void kvd_metrics_stop(struct kvd *srv);

/* Frees the endpoint after kvd_metrics_stop, once the loop has closed its
 * handles. NULL endpoint (off) does nothing. */
void kvd_metrics_free(struct kvd *srv);

/* An answered request of op on protocol proto (kvd_proto) that took us
 * microseconds from its arrival to its reply. */
void kvd_metrics_request(struct kvd *srv, int proto, int op, uint64_t us);

/* An error reply with code err. KV_NOTFOUND is a normal outcome and not
 * counted. */
void kvd_metrics_error(struct kvd *srv, int err);

/* A rate limiter turned something away; what (copied; at most 31 bytes
 * kept) names the limit, e.g. "client_connections", and becomes the label
 * of epikv_ratelimited_total. The first KVD_RATELIMIT_KINDS names each get
 * a series; later ones are counted as "other". */
void kvd_metrics_ratelimited(struct kvd *srv, const char *what);

#endif
