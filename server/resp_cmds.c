/*
 * The Redis-protocol front end: a command table with arity checked before
 * dispatch (as Redis's processCommand does), and one handler per command.
 * Semantics follow DESIGN.md §3: GET shows the last-writer-wins sibling, SET
 * and DEL replace what this replica holds, INCR on a new key makes a
 * PN-counter and GET on a counter returns its integer, KV.SIBLINGS shows all
 * siblings. Each command becomes one operation in the connection's FIFO, so
 * replies keep request order and reads see the connection's earlier writes.
 */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"
#include "server/server.h"

#define SCAN_DEFAULT_COUNT 10
#define SCAN_MAX_COUNT 10000

/* A command's arguments, copied out of the parser's buffer: the operation
 * outlives the parser's views. One allocation holds the array and bytes. */
typedef struct resp_req {
  size_t argc;
  kv_buf argv[];
} resp_req;

static resp_req *copy_args(const kv_resp_cmd *cmd) {
  size_t bytes = 0;
  for (size_t i = 0; i < cmd->argc; i++)
    bytes += cmd->argv[i].len + 1;
  resp_req *r = kv_malloc(sizeof *r + cmd->argc * sizeof(kv_buf) + bytes);
  uint8_t *p = (uint8_t *)&r->argv[cmd->argc];
  r->argc = cmd->argc;
  for (size_t i = 0; i < cmd->argc; i++) {
    if (cmd->argv[i].len) memcpy(p, cmd->argv[i].data, cmd->argv[i].len);
    p[cmd->argv[i].len] = 0; /* NUL-terminated for numbers and patterns */
    r->argv[i].data = p;
    r->argv[i].len = cmd->argv[i].len;
    p += cmd->argv[i].len + 1;
  }
  return r;
}

static resp_req *args(kvd_op *op) { return op->req; }
static kv_resp_out *out(kvd_op *op) { return &op->c->out; }

/* An error reply for err, counted in the metrics under its code. */
static void add_kv_error(kvd_op *op, int err) {
  kvd_metrics_error(op->c->srv, err);
  kv_resp_add_kv_error(out(op), err);
}

/* An error reply in Redis's words (line), counted under err's code. */
static void add_error(kvd_op *op, int err, const char *line) {
  kvd_metrics_error(op->c->srv, err);
  kv_resp_add_error(out(op), line);
}

/* Strict decimal int64, as Redis's string2ll: no spaces, no plus sign. */
static bool parse_i64(const kv_buf *b, int64_t *v) {
  if (b->len == 0 || b->len > 20) return false;
  const char *s = (const char *)b->data;
  if (s[0] == '+' || isspace((unsigned char)s[0])) return false;
  char *end;
  errno = 0;
  long long n = strtoll(s, &end, 10);
  if (errno || end != s + b->len) return false;
  *v = n;
  return true;
}

/* ---- finishers ---- */

static void fin_error(kvd_op *op) { add_kv_error(op, op->err); }

static void fin_pong(kvd_op *op) {
  resp_req *r = args(op);
  if (r->argc == 2)
    kv_resp_add_bulk(out(op), r->argv[1].data, r->argv[1].len);
  else
    kv_resp_add_simple(out(op), "PONG");
}

static void fin_echo(kvd_op *op) {
  kv_resp_add_bulk(out(op), args(op)->argv[1].data, args(op)->argv[1].len);
}

static void fin_quit(kvd_op *op) { kv_resp_add_simple(out(op), "OK"); }

/* AUTH's outcome was decided when it arrived (st_auth); reported in order. */
static void fin_auth(kvd_op *op) {
  if (op->err == KV_INVALID)
    add_error(op, KV_INVALID,
              "ERR AUTH <password> called without any password "
              "configured for the default user. Are you sure your "
              "configuration is correct?");
  else if (op->err)
    add_kv_error(op, op->err);
  else
    kv_resp_add_simple(out(op), "OK");
}

/* Reads key; *o is initialised either way (empty when absent). */
static int read_key(kvd_op *op, const kv_buf *key, kv_object *o) {
  int rc = kv_store_get(op->c->srv->store, key->data, key->len, o);
  if (rc == KV_NOTFOUND) {
    kv_object_init(o);
    return KV_OK;
  }
  if (rc != KV_OK) kv_object_init(o); /* callers fini it on errors too */
  return rc;
}

/* The GET view of an object: the lww sibling, a counter's integer, or nil. */
static void add_get_view(kvd_op *op, const kv_object *o) {
  int64_t v;
  switch (kv_object_kind(o)) {
  case KV_KIND_REGISTER: {
    const kv_value *w = kv_object_lww(o);
    kv_resp_add_bulk(out(op), w->data.data, w->data.len);
    break;
  }
  case KV_KIND_GCOUNTER:
  case KV_KIND_PNCOUNTER:
    if (kv_object_counter_value(o, &v) == KV_OK)
      kv_resp_add_bulk_int(out(op), v);
    else
      add_kv_error(op, KV_OVERFLOW);
    break;
  default:
    kv_resp_add_null(out(op));
  }
}

static void fin_get(kvd_op *op) {
  kv_object o;
  int rc = read_key(op, &args(op)->argv[1], &o);
  if (rc)
    add_kv_error(op, rc);
  else
    add_get_view(op, &o);
  kv_object_fini(&o);
}

static void fin_mget(kvd_op *op) {
  resp_req *r = args(op);
  kv_resp_add_array(out(op), r->argc - 1);
  for (size_t i = 1; i < r->argc; i++) {
    kv_object o;
    /* MGET answers nil for a key it cannot show, as Redis does for a key of
     * another type; an element cannot carry an error. */
    if (read_key(op, &r->argv[i], &o) == KV_OK &&
        kv_object_kind(&o) != KV_KIND_NONE)
      add_get_view(op, &o);
    else
      kv_resp_add_null(out(op));
    kv_object_fini(&o);
  }
}

static void fin_exists(kvd_op *op) {
  resp_req *r = args(op);
  int64_t n = 0;
  for (size_t i = 1; i < r->argc; i++) {
    kv_object o;
    if (read_key(op, &r->argv[i], &o) == KV_OK &&
        kv_object_kind(&o) != KV_KIND_NONE)
      n++;
    kv_object_fini(&o);
  }
  kv_resp_add_int(out(op), n);
}

static void fin_siblings(kvd_op *op) {
  kv_object o;
  int rc = read_key(op, &args(op)->argv[1], &o);
  if (rc) {
    add_kv_error(op, rc);
  } else if (kv_object_kind(&o) == KV_KIND_GCOUNTER ||
             kv_object_kind(&o) == KV_KIND_PNCOUNTER) {
    add_kv_error(op, KV_WRONG_TYPE);
  } else {
    size_t n = kv_object_live_values(&o, NULL, 0);
    const kv_value **vals = kv_malloc(n * sizeof *vals);
    kv_object_live_values(&o, vals, n);
    kv_resp_add_array(out(op), n);
    for (size_t i = 0; i < n; i++)
      kv_resp_add_bulk(out(op), vals[i]->data.data, vals[i]->data.len);
    free(vals);
  }
  kv_object_fini(&o);
}

/* The first error among op's writes, or KV_OK. NOTFOUND is not an error for
 * DEL (it counts 0). */
static int first_error(kvd_op *op, bool notfound_ok) {
  for (size_t i = 0; i < op->nwrites; i++) {
    int st = op->writes[i].w.status;
    if (st && !(notfound_ok && st == KV_NOTFOUND)) return st;
  }
  return KV_OK;
}

static void fin_set(kvd_op *op) {
  int rc = first_error(op, false);
  if (rc)
    add_kv_error(op, rc);
  else
    kv_resp_add_simple(out(op), "OK");
}

static void fin_del(kvd_op *op) {
  int rc = first_error(op, true);
  if (rc) {
    add_kv_error(op, rc);
    return;
  }
  int64_t n = 0;
  for (size_t i = 0; i < op->nwrites; i++)
    n += op->writes[i].w.status == KV_OK;
  kv_resp_add_int(out(op), n);
}

static void fin_incr(kvd_op *op) {
  kv_write *w = &op->writes[0].w;
  if (w->status)
    add_kv_error(op, w->status);
  else
    kv_resp_add_int(out(op), w->counter);
}

/* ---- SCAN ----
 * Redis clients parse the cursor as a decimal integer (redis-cli does), so
 * the RESP cursor is the next Merkle segment to visit: keys are stored
 * segment by segment, and a page always ends on a segment boundary, so no key
 * is skipped or repeated however the store changes between calls. "0" starts
 * and ends a scan. COUNT is a hint, as in Redis: a page stops after COUNT
 * keys (finishing its segment) or after SCAN_SEGMENTS_PER_CALL segments. */
#define SCAN_SEGMENTS_PER_CALL 4096

typedef struct scan_acc {
  kv_buf *keys;
  size_t n, cap;
  const char *pattern; /* NULL: every live key */
} scan_acc;

static bool scan_visit(const uint8_t *k, size_t kl, const uint8_t *obj,
                       size_t ol, void *arg) {
  scan_acc *a = arg;
  if (a->pattern) {
    if (memchr(k, 0, kl)) return true; /* fnmatch cannot see past a NUL */
    char *z = kv_malloc(kl + 1);
    memcpy(z, k, kl);
    z[kl] = 0;
    bool match = fnmatch(a->pattern, z, 0) == 0;
    free(z);
    if (!match) return true;
  }
  kv_object o;
  if (kv_object_decode(obj, ol, SIZE_MAX, &o) != KV_OK) return true;
  bool live = kv_object_kind(&o) != KV_KIND_NONE;
  kv_object_fini(&o);
  if (!live) return true;
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 16;
    a->keys = kv_realloc(a->keys, a->cap * sizeof *a->keys);
  }
  a->keys[a->n++] = kv_buf_dup(k, kl);
  return true;
}

static void fin_scan(kvd_op *op) {
  resp_req *r = args(op);
  kv_store *store = op->c->srv->store;
  uint64_t nsegs = 1ull << kv_store_segment_bits(store);
  int64_t cur, count = SCAN_DEFAULT_COUNT;
  if (!parse_i64(&r->argv[1], &cur) || cur < 0 || (uint64_t)cur >= nsegs) {
    add_error(op, KV_BAD_REQUEST, "ERR invalid cursor");
    return;
  }
  const char *pattern = NULL;
  for (size_t i = 2; i < r->argc; i += 2) {
    const char *opt = (const char *)r->argv[i].data;
    if (i + 1 >= r->argc) goto syntax;
    if (!strcasecmp(opt, "MATCH"))
      pattern = (const char *)r->argv[i + 1].data;
    else if (!strcasecmp(opt, "COUNT")) {
      if (!parse_i64(&r->argv[i + 1], &count) || count < 1) goto syntax;
    } else
      goto syntax;
  }
  if (count > SCAN_MAX_COUNT) count = SCAN_MAX_COUNT;
  scan_acc acc = {NULL, 0, 0,
                  pattern && strcmp(pattern, "*") != 0 ? pattern : NULL};
  uint64_t seg = (uint64_t)cur;
  int rc = KV_OK;
  for (uint64_t visited = 0; seg < nsegs && acc.n < (size_t)count &&
                             visited < SCAN_SEGMENTS_PER_CALL && rc == KV_OK;
       visited++, seg++)
    rc = kv_store_segment(store, (uint32_t)seg, scan_visit, &acc);
  if (rc) {
    add_kv_error(op, rc);
  } else {
    kv_resp_add_array(out(op), 2);
    kv_resp_add_bulk_int(out(op), seg >= nsegs ? 0 : (int64_t)seg);
    kv_resp_add_array(out(op), acc.n);
    for (size_t i = 0; i < acc.n; i++)
      kv_resp_add_bulk(out(op), acc.keys[i].data, acc.keys[i].len);
  }
  for (size_t i = 0; i < acc.n; i++)
    kv_buf_free(&acc.keys[i]);
  free(acc.keys);
  return;
syntax:
  add_error(op, KV_BAD_REQUEST, "ERR syntax error");
}

static void fin_info(kvd_op *op) {
  kvd *srv = op->c->srv;
  kv_store_stats st = {0};
  (void)!kv_store_stats_get(srv->store, &st);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  kv_hash root = kv_merkle_root(srv->tree);
  char rh[33];
  for (int i = 0; i < 16; i++)
    sprintf(rh + 2 * i, "%02x", root.b[i]);
  char buf[2048];
  int n =
      snprintf(buf, sizeof buf,
               "# Server\r\nredis_version:7.0.0\r\nepikv_version:%s\r\n"
               "process_id:%d\r\nuptime_in_seconds:%llu\r\n"
               "# Clients\r\nconnected_clients:%zu\r\n"
               "# Persistence\r\naof_enabled:%d\r\nepikv_sync:%s\r\n"
               "# Stats\r\ntotal_connections_received:%llu\r\n"
               "total_commands_processed:%llu\r\n"
               "# Replication\r\nrole:master\r\nepikv_replica_id:%016llx\r\n"
               "epikv_merkle_root:%s\r\n"
               "# Keyspace\r\ndb0:keys=%llu,expires=0,avg_ttl=0\r\n",
               KV_VERSION, (int)getpid(),
               (unsigned long long)((now - srv->start_ms) / 1000), srv->nconns,
               srv->cfg->sync_n, srv->cfg->sync,
               (unsigned long long)srv->stats.connections,
               (unsigned long long)srv->stats.requests,
               (unsigned long long)kv_store_replica_id(srv->store), rh,
               (unsigned long long)st.keys);
  kv_resp_add_bulk(out(op), buf, (size_t)n);
}

static void fin_command(kvd_op *op) {
  resp_req *r = args(op);
  if (r->argc >= 2 && !strcasecmp((char *)r->argv[1].data, "COUNT"))
    kv_resp_add_int(out(op), 0);
  else
    kv_resp_add_array(out(op), 0); /* COMMAND, COMMAND DOCS: no metadata */
}

static void fin_config(kvd_op *op) {
  resp_req *r = args(op);
  kvd *srv = op->c->srv;
  if (strcasecmp((char *)r->argv[1].data, "GET") != 0) {
    add_error(op, KV_BAD_REQUEST,
              "ERR only CONFIG GET is supported; kvd is configured with "
              "flags or its config file");
    return;
  }
  const char *pairs[][2] = {
      {"save", ""},
      {"appendonly", srv->cfg->sync_n ? "yes" : "no"},
      {"appendfsync", srv->cfg->sync_n ? "always" : "no"},
      {"databases", "1"},
      {"maxmemory", "0"},
  };
  size_t np = sizeof pairs / sizeof pairs[0], hits = 0;
  bool hit[8] = {0};
  for (size_t i = 2; i < r->argc; i++)
    for (size_t j = 0; j < np; j++)
      if (!hit[j] &&
          fnmatch((char *)r->argv[i].data, pairs[j][0], FNM_CASEFOLD) == 0)
        hit[j] = true, hits++;
  kv_resp_add_array(out(op), hits * 2);
  for (size_t j = 0; j < np; j++)
    if (hit[j]) {
      kv_resp_add_bulk(out(op), pairs[j][0], strlen(pairs[j][0]));
      kv_resp_add_bulk(out(op), pairs[j][1], strlen(pairs[j][1]));
    }
}

static void fin_dbsize(kvd_op *op) {
  kv_store_stats st;
  int rc = kv_store_stats_get(op->c->srv->store, &st);
  if (rc)
    add_kv_error(op, rc);
  else
    kv_resp_add_int(out(op), (int64_t)st.keys);
}

static void fin_select(kvd_op *op) {
  int64_t db;
  if (parse_i64(&args(op)->argv[1], &db) && db == 0)
    kv_resp_add_simple(out(op), "OK");
  else
    add_error(op, KV_BAD_REQUEST, "ERR DB index is out of range");
}

static void reply_now(kvd_conn *c, resp_req *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Queues a ready-made error line as an operation, keeping reply order. */
typedef struct err_req {
  char msg[256];
} err_req;

static void fin_text_error(kvd_op *op) {
  add_error(op, KV_BAD_REQUEST, ((err_req *)op->req)->msg);
}

static void reply_now(kvd_conn *c, resp_req *r, const char *fmt, ...) {
  free(r);
  err_req *e = kv_calloc(1, sizeof *e);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  kvd_op *op = kvd_op_new(c, fin_text_error);
  op->req = e;
  op->free_req = free;
  c->srv->stats.errors++;
}

/* ---- starters: parse arguments and queue the operation ---- */

typedef void (*start_fn)(kvd_conn *c, resp_req *r);

static kvd_op *op_for(kvd_conn *c, resp_req *r, kvd_finish_fn fin) {
  kvd_op *op = kvd_op_new(c, fin);
  op->req = r;
  op->free_req = free;
  return op;
}

static void queue_error(kvd_conn *c, resp_req *r, int err) {
  op_for(c, r, fin_error)->err = err;
}

static void start_simple(kvd_conn *c, resp_req *r, kvd_finish_fn fin) {
  op_for(c, r, fin);
}

#define SIMPLE(name, fin)                                                      \
  static void name(kvd_conn *c, resp_req *r) { start_simple(c, r, fin); }
SIMPLE(st_echo, fin_echo)
SIMPLE(st_get, fin_get)
SIMPLE(st_mget, fin_mget)
SIMPLE(st_exists, fin_exists)
SIMPLE(st_siblings, fin_siblings)
SIMPLE(st_scan, fin_scan)
SIMPLE(st_info, fin_info)
SIMPLE(st_command, fin_command)
SIMPLE(st_config, fin_config)
SIMPLE(st_select, fin_select)
SIMPLE(st_dbsize, fin_dbsize)
#undef SIMPLE

static void st_ping(kvd_conn *c, resp_req *r) {
  if (r->argc > 2)
    reply_now(c, r, "ERR wrong number of arguments for 'ping' command");
  else
    op_for(c, r, fin_pong);
}

/* Nothing after QUIT runs, even if it was pipelined behind it. */
static void st_quit(kvd_conn *c, resp_req *r) {
  op_for(c, r, fin_quit);
  kvd_conn_close_after_flush(c);
}

/* Checked when it arrives, so commands pipelined behind it are covered. */
static void st_auth(kvd_conn *c, resp_req *r) {
  kvd_op *op = op_for(c, r, fin_auth);
  const kv_buf *tok = &r->argv[r->argc - 1]; /* AUTH [user] token */
  if (!c->srv->have_token) {
    op->err = KV_INVALID;
  } else if (kvd_auth_check(c->srv, tok->data, tok->len)) {
    c->authed = true;
  } else {
    static kvd_log_rate auth_rate; /* a guessing client: a line per guess */
    kvd_log_limited(&auth_rate, KVD_LOG_WARN, "auth_failed",
                    "peer=%s proto=resp", c->peer);
    op->err = KV_AUTH_FAILED;
  }
}

static void set_put(kv_write *w, const kv_buf *k, const kv_buf *v) {
  w->op = KV_WRITE_PUT;
  w->key = k->data;
  w->keylen = k->len;
  w->value = v->data;
  w->valuelen = v->len;
  w->local_context = true;
}

static void st_set(kvd_conn *c, resp_req *r) {
  if (r->argc != 3) {
    /* EX, PX, NX, XX, GET...: epikv has no expiry and no conditional
     * writes (they cannot be honoured across replicas). */
    reply_now(c, r,
              "ERR SET options (EX, PX, NX, XX, GET, ...) are not supported: "
              "epikv has no expiry or conditional writes");
    return;
  }
  kvd_op *op = op_for(c, r, fin_set);
  set_put(kvd_op_writes(op, 1), &r->argv[1], &r->argv[2]);
  kvd_op_submit(op);
}

static void st_mset(kvd_conn *c, resp_req *r) {
  if (r->argc % 2 == 0) {
    reply_now(c, r, "ERR wrong number of arguments for 'mset' command");
    return;
  }
  kvd_op *op = op_for(c, r, fin_set);
  size_t n = (r->argc - 1) / 2;
  kvd_op_writes(op, n);
  for (size_t i = 0; i < n; i++)
    set_put(&op->writes[i].w, &r->argv[1 + 2 * i], &r->argv[2 + 2 * i]);
  kvd_op_submit(op);
}

static void st_del(kvd_conn *c, resp_req *r) {
  kvd_op *op = op_for(c, r, fin_del);
  kvd_op_writes(op, r->argc - 1);
  for (size_t i = 1; i < r->argc; i++) {
    kv_write *w = &op->writes[i - 1].w;
    w->op = KV_WRITE_DEL;
    w->key = r->argv[i].data;
    w->keylen = r->argv[i].len;
  }
  kvd_op_submit(op);
}

static void start_incr(kvd_conn *c, resp_req *r, int64_t delta) {
  kvd_op *op = op_for(c, r, fin_incr);
  kv_write *w = kvd_op_writes(op, 1);
  w->op = KV_WRITE_INCR;
  w->key = r->argv[1].data;
  w->keylen = r->argv[1].len;
  w->delta = delta;
  kvd_op_submit(op);
}

static void st_incr(kvd_conn *c, resp_req *r) { start_incr(c, r, 1); }
static void st_decr(kvd_conn *c, resp_req *r) { start_incr(c, r, -1); }

static void st_incrby(kvd_conn *c, resp_req *r, bool negate) {
  int64_t d;
  if (!parse_i64(&r->argv[2], &d) || (negate && d == INT64_MIN)) {
    reply_now(c, r, "ERR value is not an integer or out of range");
    return;
  }
  start_incr(c, r, negate ? -d : d);
}

static void st_incrby_pos(kvd_conn *c, resp_req *r) { st_incrby(c, r, false); }
static void st_decrby(kvd_conn *c, resp_req *r) { st_incrby(c, r, true); }

/* ---- the table ---- */

typedef struct command {
  const char *name;
  int arity; /* > 0: exactly, < 0: at least -arity, the name included */
  start_fn start;
  bool no_auth; /* allowed before AUTH */
  kvd_mop mop;  /* the operation it is counted under (metrics.h) */
} command;

static const command commands[] = {
    {"ping", -1, st_ping, false, KVD_MOP_PING},
    {"echo", 2, st_echo, false, KVD_MOP_ECHO},
    {"auth", -2, st_auth, true, KVD_MOP_AUTH},
    {"quit", -1, st_quit, true, KVD_MOP_QUIT},
    {"get", 2, st_get, false, KVD_MOP_GET},
    {"set", -3, st_set, false, KVD_MOP_PUT},
    {"del", -2, st_del, false, KVD_MOP_DEL},
    {"exists", -2, st_exists, false, KVD_MOP_EXISTS},
    {"incr", 2, st_incr, false, KVD_MOP_INCR},
    {"decr", 2, st_decr, false, KVD_MOP_INCR},
    {"incrby", 3, st_incrby_pos, false, KVD_MOP_INCR},
    {"decrby", 3, st_decrby, false, KVD_MOP_INCR},
    {"mget", -2, st_mget, false, KVD_MOP_MGET},
    {"mset", -3, st_mset, false, KVD_MOP_MSET},
    {"scan", -2, st_scan, false, KVD_MOP_SCAN},
    {"info", -1, st_info, false, KVD_MOP_INFO},
    {"command", -1, st_command, false, KVD_MOP_COMMAND},
    {"config", -2, st_config, false, KVD_MOP_CONFIG},
    {"select", 2, st_select, false, KVD_MOP_SELECT},
    {"kv.siblings", 2, st_siblings, false, KVD_MOP_SIBLINGS},
    {"dbsize", 1, st_dbsize, false, KVD_MOP_DBSIZE},
};

static const command *lookup(const kv_buf *name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strlen(commands[i].name) == name->len &&
        strncasecmp(commands[i].name, (const char *)name->data, name->len) == 0)
      return &commands[i];
  return NULL;
}

static void dispatch(kvd_conn *c, const kv_resp_cmd *cmd) {
  resp_req *r = copy_args(cmd);
  const command *k = lookup(&r->argv[0]);
  int name_len = (int)(r->argv[0].len > 64 ? 64 : r->argv[0].len);
  if (!k) {
    /* Redis's wording, quoting up to a few arguments. */
    char rest[128] = "";
    size_t used = 0;
    for (size_t i = 1; i < r->argc && used < sizeof rest - 16; i++)
      used += (size_t)snprintf(rest + used, sizeof rest - used, "'%.*s' ",
                               (int)(r->argv[i].len > 16 ? 16 : r->argv[i].len),
                               (char *)r->argv[i].data);
    reply_now(c, r, "ERR unknown command '%.*s', with args beginning with: %s",
              name_len, (char *)r->argv[0].data, rest);
    return;
  }
  if ((k->arity > 0 && (int)r->argc != k->arity) ||
      (k->arity < 0 && (int)r->argc < -k->arity))
    reply_now(c, r, "ERR wrong number of arguments for '%s' command", k->name);
  else if (!c->authed && !k->no_auth)
    queue_error(c, r, KV_AUTH_REQUIRED);
  else
    k->start(c, r);
  /* Each path above queued exactly one operation: count it as k's. */
  c->tail->mop = (uint8_t)k->mop;
}

void kvd_resp_input(kvd_conn *c, const uint8_t *p, size_t len) {
  if (c->close_after_flush) return;
  int rc = kv_resp_parser_feed(c->resp, p, len);
  kv_resp_cmd cmd;
  while (rc == KV_OK && !c->close_after_flush &&
         (rc = kv_resp_parser_next(c->resp, &cmd)) == KV_OK)
    dispatch(c, &cmd);
  if (rc != KV_AGAIN && rc != KV_OK) {
    const char *why = kv_resp_parser_error(c->resp);
    static kvd_log_rate proto_rate; /* one per connection, but many */
    if (rc == KV_FRAME_TOO_LARGE) c->srv->stats.frames_too_large++;
    kvd_log_limited(&proto_rate, KVD_LOG_WARN, "resp_protocol_error",
                    "peer=%s reason=\"%s\"", c->peer,
                    why ? why : kv_strerror(rc));
    err_req *e = kv_calloc(1, sizeof *e);
    snprintf(e->msg, sizeof e->msg, "ERR %s", why ? why : kv_strerror(rc));
    kvd_op *op = kvd_op_new(c, fin_text_error);
    op->req = e;
    op->free_req = free;
    kvd_conn_close_after_flush(c);
  }
}
