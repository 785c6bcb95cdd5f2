/*
 * libkvclient: the C client library for epikv's native protocol (DESIGN.md §3
 * and §10). A kvc_conn is one TCP connection to one replica. Requests carry
 * ids and the server answers them in the order it received them, so many
 * requests may be in flight on one connection (kvc_send_* and kvc_recv); the
 * plain calls (kvc_get, kvc_put, ...) are one request and its answer.
 *
 * Invariants the library keeps: no call blocks longer than its timeout; a
 * response is never larger than opts->max_response bytes, is fully decoded and
 * checked (id, body) before anything is handed out, and a server that breaks
 * the protocol gets an error, never a crash. Calls never raise SIGPIPE.
 *
 * Conventions for every function below:
 *   - Status: an int, KVC_OK (0) or a negative KVC_* code. The codes are the
 *     project's error list (proto/kv_err.h) copied here with the same values
 *     and the same wire meaning, so that this header includes nothing of the
 *     project's; kvclient.c refuses to compile if the two lists disagree.
 *     KVC_NOTFOUND is a normal outcome, not a failure.
 *   - Pointers passed in are borrowed for the call only (copied if needed).
 *     Pointers handed out are borrowed from the object they came from, until
 *     that object is freed, unless a function says otherwise.
 *   - A kvc_conn is used by one thread at a time; separate connections are
 *     independent. Out of memory aborts the process, as everywhere in epikv.
 *
 * Broken connections: a transport failure (KVC_IO, KVC_CLOSED, KVC_TIMEOUT,
 * KVC_FRAME_TOO_LARGE) or a server that breaks the protocol (KVC_CORRUPT with
 * kvc_errmsg saying so: undecodable response, wrong id, wrong body) leaves the
 * byte stream in an unknown state, so the connection is then broken: every
 * later call returns KVC_CLOSED without touching the network, and kvc_errmsg
 * keeps describing the first failure. kvc_conn_error tells whether that has
 * happened. An error answered by the server (KVC_WRONG_TYPE, KVC_NOTFOUND, ...)
 * leaves the connection usable.
 */
#ifndef KVCLIENT_H
#define KVCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KVC_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define KVC_WARN_UNUSED
#endif

/* ---- status codes (values = proto/kv_err.h, never renumbered) ---- */

enum {
  KVC_OK = 0,
  KVC_NOTFOUND = -1,           /* key not found: a normal outcome */
  KVC_KEY_TOO_LONG = -2,       /* key empty or longer than KVC_MAX_KEY */
  KVC_VALUE_TOO_LARGE = -3,    /* value above the server's maximum */
  KVC_WRONG_TYPE = -4,         /* e.g. incr on a register, put on a counter */
  KVC_TOO_MANY_SIBLINGS = -5,  /* the write would exceed the sibling cap */
  KVC_STORE_FULL = -6,         /* the replica's store is full */
  KVC_OVERFLOW = -7,           /* counter would leave the int64 range */
  KVC_GCOUNTER_DECREMENT = -8, /* a G-counter cannot go down */
  KVC_BAD_CONTEXT = -9,        /* the context given is malformed */
  KVC_CORRUPT = -10,           /* corrupt data, or a protocol violation */
  KVC_FRAME_TOO_LARGE = -11,   /* a message above the size limit */
  KVC_BAD_REQUEST = -12,       /* the server could not decode a request */
  KVC_INVALID = -13,           /* invalid argument */
  KVC_IO = -14,                /* system or network error (see kvc_errmsg) */
  KVC_NOMEM = -15,             /* out of memory (server side) */
  KVC_CLOSED = -16,            /* connection closed or broken */
  KVC_TIMEOUT = -17,           /* a call ran out of time */
  KVC_AUTH_REQUIRED = -18,     /* the server wants a token */
  KVC_AUTH_FAILED = -19,       /* the token was refused */
  KVC_VERIFY_MISMATCH = -20,   /* kvc_verify found differing segments */
  KVC_INCOMPATIBLE = -21,      /* server-side incompatibility */
  KVC_AGAIN = -22,             /* never returned by this library */
};

/* A static description of status ("success", "key not found", ...; "unknown
 * error" for a value not in the list). Never NULL; do not free. */
const char *kvc_strerror(int status);

/* The bare name of status ("OK", "NOTFOUND", ...; "UNKNOWN"). Static. */
const char *kvc_errname(int status);

/* ---- limits and defaults ---- */

#define KVC_MAX_KEY 507       /* bytes; keys are 1..KVC_MAX_KEY bytes */
#define KVC_DEFAULT_PORT 7400 /* the native protocol's port */
#define KVC_DEFAULT_TIMEOUT_MS 5000
/* Largest response accepted by default: a 64 MiB value plus room for the
 * rest of the message. */
#define KVC_DEFAULT_MAX_RESPONSE ((size_t)64 * 1024 * 1024 + 1024 * 1024)

/* ---- connections ---- */

typedef struct kvc_conn kvc_conn;

/* Connection options. A zeroed struct (or opts == NULL) means the defaults. */
typedef struct kvc_options {
  /* Time allowed to establish the TCP connection, over all addresses the
   * host resolves to. 0 = KVC_DEFAULT_TIMEOUT_MS, negative = no limit. */
  int connect_timeout_ms;
  /* The longest any later call may block, for all of its sending and
   * receiving (the token exchange of kvc_connect included). 0 =
   * KVC_DEFAULT_TIMEOUT_MS, negative = no limit. */
  int io_timeout_ms;
  /* Auth token, NUL-terminated, copied. When not NULL, kvc_connect sends it
   * before anything else and fails if the server refuses it. */
  const char *token;
  /* Largest response frame accepted, in bytes; a larger one is refused as
   * soon as its length is seen (KVC_FRAME_TOO_LARGE). 0 =
   * KVC_DEFAULT_MAX_RESPONSE. */
  size_t max_response;
} kvc_options;

/* Connects to host (a name or a numeric IPv4/IPv6 address, copied) on port
 * (1..65535), then, if opts->token is set, authenticates.
 *
 * *out is set whenever out is not NULL, even on failure: on failure it is a
 * broken connection whose kvc_errmsg says what went wrong ("connect to
 * 127.0.0.1:7400: Connection refused"). Either way the caller frees it with
 * kvc_close.
 *
 * Returns KVC_OK; KVC_INVALID (NULL host or out, port out of range);
 * KVC_IO (name resolution or connect failed); KVC_TIMEOUT; KVC_AUTH_FAILED or
 * any other error the server answers the token with; the transport errors. */
KVC_WARN_UNUSED int kvc_connect(const char *host, int port,
                                const kvc_options *opts, kvc_conn **out);

/* Closes the connection and frees it. Responses not yet received are
 * discarded; results already returned stay valid (they own their memory).
 * NULL does nothing. */
void kvc_close(kvc_conn *c);

/* A description of the error returned by the most recent failing call on c:
 * the server's own message when it sent one, otherwise the library's (which
 * names the system error, timeout or protocol violation). "" if no call has
 * failed. Never NULL; borrowed until the next call on c or kvc_close. */
const char *kvc_errmsg(const kvc_conn *c);

/* KVC_OK while c is usable; once broken, the error that broke it. */
int kvc_conn_error(const kvc_conn *c);

/* ---- results ---- */

typedef struct kvc_result kvc_result;

/* The kind of object a key holds (fixed at its first write). Values from a
 * newer server that are not listed here are passed through unchanged. */
typedef enum kvc_kind {
  KVC_KIND_NONE = 0, /* absent, or only deletes remain */
  KVC_KIND_REGISTER = 1,
  KVC_KIND_GCOUNTER = 2,
  KVC_KIND_PNCOUNTER = 3,
} kvc_kind;

/* The request a result answers. */
typedef enum kvc_op {
  KVC_OP_GET = 1,
  KVC_OP_PUT,
  KVC_OP_DEL,
  KVC_OP_INCR,
  KVC_OP_SCAN,
  KVC_OP_STATUS,
  KVC_OP_VERIFY,
  KVC_OP_AUTH,
  KVC_OP_BACKUP,
  KVC_OP_MEMBERS,
} kvc_op;

/* A replica's status (kvc_status). Strings are NUL-terminated; all pointers
 * are borrowed from the result. Fields are only ever appended. */
/* One peer as the replica sees it (kvc_status_info.peers). */
typedef struct kvc_peer_info {
  const char *name; /* the peer's --name, "" until it introduced itself */
  const char *addr; /* its peer address */
  uint64_t replica_id;
  bool alive;                    /* connected and introduced */
  uint64_t exchanges;            /* anti-entropy exchanges run with it */
  uint64_t last_exchange_ms_ago; /* 0: none yet */
  uint64_t keys_pushed;          /* keys those exchanges repaired there */
  uint64_t keys_pulled;          /* keys those exchanges repaired here */
  uint64_t bytes_sent, bytes_received;
} kvc_peer_info;

typedef struct kvc_status_info {
  const char *name;           /* the replica's --name */
  uint64_t replica_id;        /* random id minted with its data directory */
  uint64_t keys;              /* live keys (deleted ones not counted) */
  uint64_t stored;            /* stored objects, deleted keys included */
  const uint8_t *merkle_root; /* root hash of the Merkle tree */
  size_t merkle_root_len;
  const char *version; /* kvd's version */
  uint64_t uptime_ms;
  bool sync;         /* fsync on every commit (false: --sync none) */
  uint64_t map_size; /* LMDB map size, bytes */
  uint64_t map_used; /* bytes in use */
  uint64_t commits;  /* write transactions since start */
  uint64_t writes;   /* writes applied since start */
  bool peering;      /* peer networking on */
  bool insecure;     /* peer traffic unauthenticated (--insecure) */
  const char *cluster;
  size_t npeers;
  const kvc_peer_info *peers; /* npeers of them */
  uint64_t rumors_added, rumors_pushed, rumor_acks, rumor_news_acks;
  uint64_t rumors_died, rumors_dropped, rumors_hot;
  uint64_t invalid_envelopes; /* peer envelopes dropped (tamper, key, replay) */
  uint64_t peer_messages_sent, peer_bytes_sent; /* bytes framed, on the wire */
  uint64_t peer_messages_received, peer_bytes_received;
  /* Membership (SWIM), self included: members by state. */
  uint64_t members_alive, members_suspect, members_dead, members_left;
  uint64_t swim_messages_sent, swim_messages_received;
  unsigned swim_health; /* Lifeguard local health, 0 = healthy */
  /* Peer envelopes dropped, by reason (they sum to invalid_envelopes):
   * shorter than a header, unknown version, another cluster, timestamp
   * beyond --max-clock-skew, replayed (or below the replay window), bad tag
   * (tampered or another key), secure/insecure mode mismatch. */
  uint64_t invalid_truncated, invalid_bad_version, invalid_wrong_cluster;
  uint64_t invalid_stale, invalid_replay, invalid_bad_tag;
  uint64_t invalid_mode_mismatch;
  uint64_t peer_malformed; /* opened, but not a valid message */
  /* Limits: refusals and closes since start (README, Limits). */
  uint64_t clients_refused;          /* --max-clients reached */
  uint64_t clients_refused_per_addr; /* --max-clients-per-addr reached */
  uint64_t read_timeouts;        /* request not finished in --read-timeout */
  uint64_t idle_timeouts;        /* --idle-timeout (or a stuck close) */
  uint64_t input_buffer_refused; /* --max-input-buffer-bytes reached */
  uint64_t input_buffer_bytes;   /* incomplete request bytes held now */
  uint64_t output_paused; /* times --max-output-buffer-bytes paused a client */
  uint64_t frames_too_large;        /* client requests above the size limits */
  uint64_t peer_conns_refused;      /* --max-peer-conns-per-addr reached */
  uint64_t peer_handshake_timeouts; /* no Hello within --read-timeout */
  uint64_t peer_rate_limited;       /* envelopes over --peer-rate, dropped */
  uint64_t peer_oversize;           /* peer frames above the size limits */
} kvc_status_info;

/* One member of the cluster as a replica sees it (kvc_members). Strings are
 * borrowed from the result. */
typedef struct kvc_member_info {
  const char *name;  /* its --name */
  const char *addr;  /* its peer address (TCP and UDP) */
  uint64_t replica_id;
  const char *state; /* "alive", "suspect", "dead" or "left" */
  uint64_t incarnation;
  uint64_t since_ms; /* time in this state, as the replica learned it */
  bool self;         /* the replica that answered */
} kvc_member_info;

/* The accessors below take a result from kvc_get, kvc_scan, kvc_status or
 * kvc_recv (never NULL) and never fail for a result of another kind: they
 * give 0, empty or NULL as stated. */

/* Frees r and everything borrowed from it. NULL does nothing. */
void kvc_result_free(kvc_result *r);

/* Which request r answers, and that request's id (kvc_send_*). */
kvc_op kvc_result_op(const kvc_result *r);
uint64_t kvc_result_id(const kvc_result *r);

/* The outcome the server reported for this request: KVC_OK or an error code.
 * (The plain calls return it directly; kvc_recv hands it over here.) */
int kvc_result_error(const kvc_result *r);

/* The server's message for that outcome, or kvc_strerror of it when the
 * server sent none; "" on success. Never NULL. */
const char *kvc_result_errmsg(const kvc_result *r);

/* GET: the kind of object the key holds. KVC_KIND_NONE for other results. */
kvc_kind kvc_result_kind(const kvc_result *r);

/* GET of a register: the number of sibling values (more than one after
 * concurrent writes); 0 for anything else. */
size_t kvc_result_siblings(const kvc_result *r);

/* Sibling i (0 <= i < kvc_result_siblings): *data, *len receive its bytes,
 * borrowed from r (never NULL, even when empty). KVC_INVALID if i is out of
 * range (*data, *len untouched). */
KVC_WARN_UNUSED int kvc_result_sibling(const kvc_result *r, size_t i,
                                       const uint8_t **data, size_t *len);

/* Sibling i's hybrid-logical-clock timestamp (ms << 16 | logical), 0 when i
 * is out of range. For display only: causality never depends on it. */
uint64_t kvc_result_sibling_ts(const kvc_result *r, size_t i);

/* GET (also with KVC_NOTFOUND) and PUT: the causal context, opaque bytes
 * borrowed from r. *data is never NULL, so it can go straight to kvc_put or
 * kvc_del as a context (possibly an empty one); *len is 0 when the server
 * sent none and for other results. */
void kvc_result_context(const kvc_result *r, const uint8_t **data, size_t *len);

/* GET of a counter: its value. INCR: the value after the increment.
 * 0 otherwise. */
int64_t kvc_result_counter(const kvc_result *r);

/* SCAN: the number of keys in this page (0 for other results). */
size_t kvc_result_keys(const kvc_result *r);

/* SCAN: key i (0 <= i < kvc_result_keys), borrowed from r, never NULL.
 * KVC_INVALID if i is out of range (*data, *len untouched). */
KVC_WARN_UNUSED int kvc_result_key(const kvc_result *r, size_t i,
                                   const uint8_t **data, size_t *len);

/* SCAN: the cursor to continue from, borrowed from r (never NULL); *len is
 * 0 when the scan is complete. */
void kvc_result_cursor(const kvc_result *r, const uint8_t **data, size_t *len);

/* STATUS: the replica's status, borrowed from r; NULL for other results or
 * when the server answered with an error. */
const kvc_status_info *kvc_result_status_info(const kvc_result *r);

/* MEMBERS: the member table (self first), borrowed from r: *out receives
 * the array and the count is returned; 0 and NULL for other results or when
 * the server answered with an error (also when peer networking is off). */
size_t kvc_result_members(const kvc_result *r, const kvc_member_info **out);

/* VERIFY: the number of Merkle segments whose stored leaf differs from a
 * rebuild (0 for other results). */
uint64_t kvc_result_mismatched(const kvc_result *r);

/* A backup written by the replica (kvc_backup). */
typedef struct kvc_backup_info {
  uint64_t bytes;      /* size of the copy */
  uint64_t elapsed_ms; /* time the replica took to write it */
  uint64_t replica_id; /* the replica that was copied */
} kvc_backup_info;

/* BACKUP: what the replica wrote; all zero for other results and errors. */
kvc_backup_info kvc_result_backup(const kvc_result *r);

/* ---- requests: one at a time ----
 *
 * Each sends one request and waits for its answer, within the io timeout.
 * Keys must be 1..KVC_MAX_KEY bytes (else KVC_KEY_TOO_LONG, nothing sent).
 * A context is the opaque bytes kvc_result_context gave; context == NULL
 * means "no context" (contextlen must then be 0), while a non-NULL pointer
 * with contextlen 0 is an empty context.
 *
 * Besides the errors listed per function, each may return KVC_INVALID (bad
 * arguments, or pipelined responses not yet received with kvc_recv), the
 * transport errors (KVC_IO, KVC_TIMEOUT, KVC_CLOSED, KVC_FRAME_TOO_LARGE,
 * KVC_CORRUPT for a protocol violation), KVC_AUTH_REQUIRED, and whatever
 * error the server answers (KVC_STORE_FULL, KVC_NOMEM, KVC_BAD_REQUEST, ...).
 */

/* Reads key. On KVC_OK and on KVC_NOTFOUND, *out receives the result (the
 * caller frees it with kvc_result_free): siblings or counter, and the
 * context, which after a not-found still names the deletes the replica holds.
 * On any other status *out is NULL. */
KVC_WARN_UNUSED int kvc_get(kvc_conn *c, const void *key, size_t keylen,
                            kvc_result **out);

/* Writes value (vlen bytes, may be 0) under key. With a context, the siblings
 * that context saw are replaced; with none (NULL), the value becomes a new
 * sibling beside what exists. Errors: KVC_VALUE_TOO_LARGE, KVC_WRONG_TYPE,
 * KVC_TOO_MANY_SIBLINGS, KVC_BAD_CONTEXT. */
KVC_WARN_UNUSED int kvc_put(kvc_conn *c, const void *key, size_t keylen,
                            const void *value, size_t vlen, const void *context,
                            size_t contextlen);

/* Deletes key: what the context saw, or, with none (NULL), everything the
 * replica holds. Errors: KVC_NOTFOUND if the server reports nothing to
 * delete, KVC_BAD_CONTEXT. */
KVC_WARN_UNUSED int kvc_del(kvc_conn *c, const void *key, size_t keylen,
                            const void *context, size_t contextlen);

/* Adds delta (negative to decrement) to the counter at key, creating it at
 * first write: a G-counter if gcounter, else a PN-counter (gcounter is ignored
 * afterwards). *value, if value is not NULL, receives the new value on KVC_OK.
 * Errors: KVC_WRONG_TYPE, KVC_OVERFLOW, KVC_GCOUNTER_DECREMENT. */
KVC_WARN_UNUSED int kvc_incr(kvc_conn *c, const void *key, size_t keylen,
                             int64_t delta, bool gcounter, int64_t *value);

/* One page of an unordered scan of the keys starting with prefix (prefixlen
 * 0 = all keys), like Redis SCAN. Start with an empty cursor (cursorlen 0,
 * cursor may be NULL) and pass each page's kvc_result_cursor to the next call
 * until that cursor is empty. limit bounds the keys per page (0 = the
 * server's default). On KVC_OK *out receives the page (caller frees with
 * kvc_result_free); otherwise *out is NULL. Errors: KVC_BAD_REQUEST for a
 * cursor the server does not accept. */
KVC_WARN_UNUSED int kvc_scan(kvc_conn *c, const void *cursor, size_t cursorlen,
                             const void *prefix, size_t prefixlen,
                             uint32_t limit, kvc_result **out);

/* The replica's status. On KVC_OK *out receives it (read it with
 * kvc_result_status_info; caller frees with kvc_result_free); otherwise *out
 * is NULL. */
KVC_WARN_UNUSED int kvc_status(kvc_conn *c, kvc_result **out);

/* The replica's member table (SWIM). On KVC_OK *out receives it (read it
 * with kvc_result_members; caller frees with kvc_result_free); otherwise
 * *out is NULL. */
KVC_WARN_UNUSED int kvc_members(kvc_conn *c, kvc_result **out);

/* Asks the replica to rebuild its Merkle leaves from the stored objects and
 * compare them with the persisted ones (a bit-rot check; it reads the whole
 * store, so give it a generous io timeout). *mismatched, if not NULL,
 * receives the number of differing segments (0 when unknown). Returns KVC_OK
 * when all match, KVC_VERIFY_MISMATCH when some differ, KVC_CORRUPT when a
 * stored object does not decode. */
KVC_WARN_UNUSED int kvc_verify(kvc_conn *c, uint64_t *mismatched);

/* Asks the replica to write a consistent, compacted copy of its store into
 * dir (NUL-terminated, copied), a directory on the replica's machine: an
 * absolute path naming an empty directory, or nothing (it is then created;
 * its parent must exist). The copy holds every write acknowledged before the
 * request; the replica keeps serving while it is written, so give the call
 * an io timeout long enough for the whole copy. `kvd --restore dir` starts a
 * new replica from it. *info, if not NULL, is filled on KVC_OK. Errors:
 * KVC_INVALID (dir NULL, empty, relative, not a directory or not empty:
 * kvc_errmsg says which), KVC_IO (the replica could not write it). */
KVC_WARN_UNUSED int kvc_backup(kvc_conn *c, const char *dir,
                               kvc_backup_info *info);

/* ---- requests: pipelined ----
 *
 * kvc_send_* encode a request and queue it on c; they do not touch the
 * network. kvc_flush writes everything queued; kvc_recv writes everything
 * queued, then returns the answer to the oldest request not yet received.
 * Answers come back in the order the requests were queued, each matched
 * against its request's id. Example, a pipeline of depth D:
 *
 *   for (i = 0; i < D; i++) rc = kvc_send_get(c, key[i], len[i], NULL);
 *   while (kvc_pending(c) > 0) {
 *     if ((rc = kvc_recv(c, &r)) != KVC_OK) break;   (connection broken)
 *     ... kvc_result_error(r), kvc_result_sibling(r, ...) ...
 *     kvc_result_free(r);
 *     if (more) rc = kvc_send_get(c, next, nextlen, NULL);
 *   }
 *
 * While writing, the library also reads the answers that arrive, so a long
 * pipeline cannot deadlock against a server that stops reading until its
 * answers are read; it buffers up to twice max_response bytes of answers this
 * way, and a pipeline that outgrows that while still writing may time out.
 * The synchronous calls above return KVC_INVALID while answers are pending.
 *
 * The send functions take the same arguments as their synchronous
 * counterparts; *id, if id is not NULL, receives the request's id (ids start
 * at 1 and increase by one per request on a connection). They return KVC_OK,
 * KVC_KEY_TOO_LONG, KVC_VALUE_TOO_LARGE (the request would not fit a frame),
 * KVC_INVALID, or KVC_CLOSED on a broken connection; on error nothing is
 * queued. */
KVC_WARN_UNUSED int kvc_send_get(kvc_conn *c, const void *key, size_t keylen,
                                 uint64_t *id);
KVC_WARN_UNUSED int kvc_send_put(kvc_conn *c, const void *key, size_t keylen,
                                 const void *value, size_t vlen,
                                 const void *context, size_t contextlen,
                                 uint64_t *id);
KVC_WARN_UNUSED int kvc_send_del(kvc_conn *c, const void *key, size_t keylen,
                                 const void *context, size_t contextlen,
                                 uint64_t *id);
KVC_WARN_UNUSED int kvc_send_incr(kvc_conn *c, const void *key, size_t keylen,
                                  int64_t delta, bool gcounter, uint64_t *id);
KVC_WARN_UNUSED int kvc_send_scan(kvc_conn *c, const void *cursor,
                                  size_t cursorlen, const void *prefix,
                                  size_t prefixlen, uint32_t limit,
                                  uint64_t *id);
KVC_WARN_UNUSED int kvc_send_status(kvc_conn *c, uint64_t *id);
KVC_WARN_UNUSED int kvc_send_members(kvc_conn *c, uint64_t *id);
KVC_WARN_UNUSED int kvc_send_verify(kvc_conn *c, uint64_t *id);
KVC_WARN_UNUSED int kvc_send_backup(kvc_conn *c, const char *dir, uint64_t *id);

/* Writes every queued request, within the io timeout. Returns KVC_OK or a
 * transport error (the connection is then broken). */
KVC_WARN_UNUSED int kvc_flush(kvc_conn *c);

/* Writes every queued request, then waits (within the io timeout, for both)
 * for the answer to the oldest request not yet received. On KVC_OK, *out
 * receives it, whatever the server's answer was: read that with
 * kvc_result_error (KVC_NOTFOUND, KVC_WRONG_TYPE, ...) and the accessors; the
 * caller frees it with kvc_result_free. Otherwise *out is NULL and the status
 * is KVC_INVALID (nothing pending, or out NULL) or a transport error (the
 * connection is then broken). */
KVC_WARN_UNUSED int kvc_recv(kvc_conn *c, kvc_result **out);

/* Requests queued or sent whose answers kvc_recv has not yet returned. */
size_t kvc_pending(const kvc_conn *c);

#ifdef __cplusplus
}
#endif

#endif
