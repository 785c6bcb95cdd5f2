/*
 * LMDB-backed store with a single writer thread and group commit.
 *
 * Why one writer: LMDB allows one write transaction at a time, and an fsync
 * per transaction is the dominant cost of a durable write. Funnelling every
 * update through one thread that drains its whole queue into one transaction
 * turns N concurrent writes into one fsync, while each caller is still told
 * of its write only after the commit that holds it.
 *
 * A request that fails a check (type, size, siblings) is skipped before it
 * writes anything, so the rest of its batch commits normally. LMDB errors
 * that poison a transaction (MDB_MAP_FULL above all) abort the whole batch,
 * which is then replayed one request per transaction so that only the
 * requests that really do not fit fail.
 */
#include "storage/store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_MAP_SIZE ((size_t)8 << 30)
#define DEFAULT_MAX_VALUE ((size_t)16 << 20)
#define DEFAULT_MAX_SIBLINGS 100
#define DEFAULT_MAX_BATCH 1024
#define PREFIX 4
#define DBKEY_MAX (PREFIX + KV_STORE_MAX_KEY)
/* A context names at most one entry per replica id that ever wrote the key;
 * anything far beyond a cluster's size is hostile. */
#define MAX_CONTEXT_ENTRIES 1024
#define MAX_CACHED_READERS 64

/* Each thread keeps one reset read transaction per store and renews it for
 * the next read: beginning a fresh one takes a reader slot under LMDB's lock
 * every time, which is most of the cost of a small get. The thread-local
 * names its store by a never-reused id, not a pointer, so a store closed and
 * another opened at the same address is never confused with it. */
typedef struct cached_reader {
  uint64_t store_id;
  MDB_txn *txn;
  bool busy;
} cached_reader;

static _Thread_local cached_reader tls_reader;
static _Atomic uint64_t next_store_id = 1;

struct kv_store {
  MDB_env *env;
  MDB_dbi objects, tree, meta;
  kv_store_opts opts;
  uint64_t replica_id;
  unsigned bits;

  pthread_t writer;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  kv_write *head, *tail; /* queue, guarded by mu */
  bool closing;          /* guarded by mu */

  uint64_t hlc;          /* writer thread only */
  _Atomic uint64_t live; /* live keys; written by the writer thread */
  uint64_t id;           /* never reused, names the store in thread-locals */
  MDB_txn *readers[MAX_CACHED_READERS]; /* cached per thread, guarded by mu */
  size_t nreaders;
  _Atomic uint64_t commits, writes;
};

kv_store_opts kv_store_opts_default(void) {
  kv_store_opts o = {0};
  o.sync = true;
  return o;
}

static void log_mdb(const char *what, int rc) {
  fprintf(stderr, "level=error event=lmdb op=%s err=\"%s\"\n", what,
          mdb_strerror(rc));
}

/* LMDB return codes that are not ours become KV_IO, except a full map. */
static int from_mdb(int rc) {
  if (rc == 0) return KV_OK;
  if (rc == MDB_NOTFOUND) return KV_NOTFOUND;
  if (rc == MDB_MAP_FULL) return KV_STORE_FULL;
  return KV_IO;
}

static size_t dbkey(const kv_store *s, const void *key, size_t keylen,
                    uint8_t out[DBKEY_MAX], uint32_t *seg) {
  uint32_t sg = kv_merkle_segment_of(s->bits, key, keylen);
  kv_put_be32(out, sg);
  memcpy(out + PREFIX, key, keylen);
  if (seg) *seg = sg;
  return PREFIX + keylen;
}

static bool key_ok(size_t keylen) {
  return keylen > 0 && keylen <= KV_STORE_MAX_KEY;
}

/* ---- meta ---- */

static int meta_get_u64(kv_store *s, MDB_txn *txn, const char *name,
                        uint64_t *out) {
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, s->meta, &k, &v);
  if (rc) return rc;
  if (v.mv_size != 8) return MDB_CORRUPTED;
  *out = kv_get_be64(v.mv_data);
  return 0;
}

static int meta_put_u64(kv_store *s, MDB_txn *txn, const char *name,
                        uint64_t val) {
  uint8_t b[8];
  kv_put_be64(b, val);
  MDB_val k = {strlen(name), (void *)name}, v = {8, b};
  return mdb_put(txn, s->meta, &k, &v, 0);
}

static uint64_t mint_replica_id(void) {
  uint64_t id = 0;
  while (id == 0)
    if (getrandom(&id, sizeof id, 0) != sizeof id)
      kv_panic("getrandom failed: %s", strerror(errno));
  return id;
}

/* Counts stored objects whose kind is not NONE (a data directory written
 * before the count was kept). */
static int count_live(kv_store *s, MDB_txn *txn, uint64_t *out) {
  MDB_cursor *cur;
  MDB_val k, v;
  uint64_t n = 0;
  int rc = mdb_cursor_open(txn, s->objects, &cur);
  if (rc) return rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    kv_object o;
    if (kv_object_decode(v.mv_data, v.mv_size, SIZE_MAX, &o) != KV_OK) continue;
    n += kv_object_kind(&o) != KV_KIND_NONE;
    kv_object_fini(&o);
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return rc;
  *out = n;
  return 0;
}

/* Opens the named databases and reads or creates the meta records. */
static int init_meta(kv_store *s) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc) return log_mdb("txn_begin", rc), KV_IO;
  if ((rc = mdb_dbi_open(txn, "objects", MDB_CREATE, &s->objects)) ||
      (rc = mdb_dbi_open(txn, "tree", MDB_CREATE, &s->tree)) ||
      (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta))) {
    mdb_txn_abort(txn);
    return log_mdb("dbi_open", rc), KV_IO;
  }

  uint64_t format, id, bits;
  rc = meta_get_u64(s, txn, "format", &format);
  if (rc == MDB_NOTFOUND) {
    s->bits =
        s->opts.segment_bits ? s->opts.segment_bits : KV_MERKLE_DEFAULT_BITS;
    s->replica_id = mint_replica_id();
    if ((rc = meta_put_u64(s, txn, "format", KV_STORE_FORMAT)) ||
        (rc = meta_put_u64(s, txn, "replica_id", s->replica_id)) ||
        (rc = meta_put_u64(s, txn, "segment_bits", s->bits))) {
      mdb_txn_abort(txn);
      return log_mdb("meta_put", rc), from_mdb(rc);
    }
  } else if (rc == 0 && (rc = meta_get_u64(s, txn, "replica_id", &id)) == 0 &&
             (rc = meta_get_u64(s, txn, "segment_bits", &bits)) == 0) {
    if (format != KV_STORE_FORMAT ||
        (s->opts.segment_bits && s->opts.segment_bits != bits) || id == 0 ||
        bits < KV_MERKLE_MIN_BITS || bits > KV_MERKLE_MAX_BITS) {
      fprintf(stderr,
              "level=error event=store_incompatible format=%llu "
              "segment_bits=%llu want_segment_bits=%u\n",
              (unsigned long long)format, (unsigned long long)bits,
              s->opts.segment_bits);
      mdb_txn_abort(txn);
      return KV_INCOMPATIBLE;
    }
    s->replica_id = id;
    s->bits = (unsigned)bits;
  } else {
    mdb_txn_abort(txn);
    return log_mdb("meta_get", rc), KV_IO;
  }
  uint64_t live = 0;
  rc = meta_get_u64(s, txn, "live_keys", &live);
  if (rc == MDB_NOTFOUND) {
    if ((rc = count_live(s, txn, &live)) == 0)
      rc = meta_put_u64(s, txn, "live_keys", live);
  }
  if (rc) {
    mdb_txn_abort(txn);
    return log_mdb("live_keys", rc), from_mdb(rc);
  }
  s->live = live;
  rc = mdb_txn_commit(txn);
  if (rc) return log_mdb("txn_commit", rc), from_mdb(rc);
  return KV_OK;
}

/* ---- writer ---- */

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Hybrid logical clock: physical ms in the high 48 bits, a logical counter in
 * the low 16, never going backwards and always past anything received. */
static uint64_t hlc_next(kv_store *s) {
  uint64_t phys = wall_ms() << 16;
  s->hlc = phys > s->hlc ? phys : s->hlc + 1;
  return s->hlc;
}

static void hlc_observe(kv_store *s, uint64_t ts) {
  if (ts > s->hlc) s->hlc = ts;
}

static kv_hash contribution(const uint8_t *key, size_t keylen,
                            const uint8_t *obj, size_t objlen) {
  uint8_t digest[KV_DIGEST_LEN];
  kv_object_digest(obj, objlen, digest);
  return kv_merkle_contribution(key, keylen, digest);
}

/* Computes the new object for w from the current one (cur, absent when
 * has_cur is false). Returns a KV_ error for w; KV_OK with *out set. */
static int compute(kv_store *s, kv_write *w, kv_object *cur, kv_object *out) {
  const kv_store_opts *o = &s->opts;
  kv_vv ctx = {0, NULL};
  int rc = KV_OK;

  if ((w->op == KV_WRITE_PUT || w->op == KV_WRITE_DEL) && w->context) {
    rc =
        kv_context_decode(w->context, w->contextlen, MAX_CONTEXT_ENTRIES, &ctx);
    if (rc) return rc;
  }
  bool own = w->op == KV_WRITE_PUT && !w->context && w->local_context;
  if (own) kv_dvv_join(&cur->reg, &ctx);
  const kv_vv *ctxp = w->context || own ? &ctx : NULL;

  switch (w->op) {
  case KV_WRITE_PUT:
    if (w->valuelen > o->max_value_bytes) {
      rc = KV_VALUE_TOO_LARGE;
      break;
    }
    rc = kv_object_put(cur, s->replica_id, ctxp, w->value, w->valuelen,
                       hlc_next(s), o->max_siblings);
    break;
  case KV_WRITE_DEL:
    rc = kv_object_delete(cur, s->replica_id, ctxp, hlc_next(s),
                          o->max_siblings);
    break;
  case KV_WRITE_INCR:
    rc = kv_object_incr(cur, s->replica_id, w->delta, w->gcounter, &w->counter);
    break;
  case KV_WRITE_MERGE: {
    kv_object remote;
    rc = kv_object_decode(w->remote, w->remotelen, o->max_value_bytes, &remote);
    if (rc) break;
    hlc_observe(s, kv_object_max_ts(&remote));
    kv_object merged;
    kv_object_merge(&merged, cur, &remote);
    kv_object_fini(&remote);
    kv_object_fini(cur);
    *cur = merged;
    break;
  }
  default:
    rc = KV_INVALID;
  }
  kv_vv_fini(&ctx);
  if (rc == KV_OK) {
    *out = *cur;
    kv_object_init(cur);
  }
  return rc;
}

/* Applies one request inside txn. Returns 0, or an LMDB error that poisons
 * the transaction (the caller aborts it); request-level errors go to
 * w->status. */
static int apply(kv_store *s, MDB_txn *txn, kv_write *w) {
  w->status = KV_OK;
  w->live_delta = 0;
  w->changed = false;
  memset(&w->delta_hash, 0, sizeof w->delta_hash);
  kv_buf_free(&w->object);
  if (!key_ok(w->keylen)) {
    w->status = KV_KEY_TOO_LONG;
    return 0;
  }

  uint8_t kb[DBKEY_MAX];
  MDB_val k = {dbkey(s, w->key, w->keylen, kb, &w->segment), kb}, v;
  int rc = mdb_get(txn, s->objects, &k, &v);
  if (rc && rc != MDB_NOTFOUND) return rc;
  bool has_old = rc == 0;

  kv_object cur, next;
  kv_object_init(&cur);
  if (has_old) {
    int drc = kv_object_decode(v.mv_data, v.mv_size, SIZE_MAX, &cur);
    /* A local object that no longer decodes (bit rot) can only be repaired
     * by a peer's copy: a merge treats it as absent, everything else fails. */
    if (drc && w->op != KV_WRITE_MERGE) {
      w->status = drc;
      return 0;
    }
  }
  /* The old contribution must come from the old bytes before any put: the
   * LMDB view is only valid until the transaction writes. */
  kv_hash delta = {{0}};
  if (has_old) delta = contribution(w->key, w->keylen, v.mv_data, v.mv_size);
  kv_buf old = has_old ? kv_buf_dup(v.mv_data, v.mv_size) : (kv_buf){NULL, 0};

  bool was_live = has_old && kv_object_kind(&cur) != KV_KIND_NONE;
  w->status = compute(s, w, &cur, &next);
  if (w->status == KV_OK)
    w->live_delta = (kv_object_kind(&next) != KV_KIND_NONE) - was_live;
  kv_object_fini(&cur);
  if (w->status) {
    kv_buf_free(&old);
    return 0;
  }
  kv_buf enc;
  kv_object_encode(&next, &enc);
  kv_object_fini(&next);
  if (has_old && enc.len == old.len &&
      memcmp(enc.data, old.data, old.len) == 0) {
    kv_buf_free(&old);
    kv_buf_free(&enc);
    return 0; /* nothing new: a merge of what we already hold */
  }
  kv_buf_free(&old);

  kv_hash nc = contribution(w->key, w->keylen, enc.data, enc.len);
  kv_hash_xor(&delta, &nc);

  MDB_val nv = {enc.len, enc.data};
  if ((rc = mdb_put(txn, s->objects, &k, &nv, 0))) {
    kv_buf_free(&enc);
    return rc;
  }
  uint8_t sb[PREFIX];
  kv_put_be32(sb, w->segment);
  MDB_val lk = {PREFIX, sb}, lv;
  kv_hash leaf = {{0}};
  rc = mdb_get(txn, s->tree, &lk, &lv);
  if (rc == 0 && lv.mv_size == sizeof leaf)
    memcpy(leaf.b, lv.mv_data, sizeof leaf);
  else if (rc && rc != MDB_NOTFOUND) {
    kv_buf_free(&enc);
    return rc;
  }
  kv_hash_xor(&leaf, &delta);
  lv = (MDB_val){sizeof leaf, leaf.b};
  if ((rc = mdb_put(txn, s->tree, &lk, &lv, 0))) {
    kv_buf_free(&enc);
    return rc;
  }
  w->changed = true;
  w->delta_hash = delta;
  w->object = enc;
  return 0;
}

static void complete(kv_store *s, kv_write *w) {
  atomic_fetch_add(&s->writes, 1);
  w->done(w, w->arg);
}

static void undo_request(kv_write *w) {
  w->changed = false;
  w->live_delta = 0;
  memset(&w->delta_hash, 0, sizeof w->delta_hash);
  kv_buf_free(&w->object);
}

/* Applies the atomic group reqs[0..n) in a nested transaction: all or none.
 * Returns 0 or an LMDB error that poisons the outer transaction. */
static int apply_group(kv_store *s, MDB_txn *txn, kv_write **reqs, size_t n) {
  MDB_txn *child;
  int rc = mdb_txn_begin(s->env, txn, 0, &child);
  if (rc) return rc;
  int failed = KV_OK;
  for (size_t i = 0; i < n; i++) {
    if ((rc = apply(s, child, reqs[i]))) {
      mdb_txn_abort(child);
      return rc;
    }
    int st = reqs[i]->status;
    if (!failed && st != KV_OK && st != KV_NOTFOUND) failed = st;
  }
  if (!failed) return mdb_txn_commit(child);
  mdb_txn_abort(child);
  for (size_t i = 0; i < n; i++) {
    undo_request(reqs[i]);
    if (reqs[i]->status == KV_OK || reqs[i]->status == KV_NOTFOUND)
      reqs[i]->status = failed;
  }
  return 0;
}

/* Runs reqs[0..n) (whole groups) in one transaction. Returns 0, or the LMDB
 * error that aborted the transaction, in which case nothing was written and
 * no request has completed. */
static int run_txn(kv_store *s, kv_write **reqs, size_t n) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc) return rc;
  for (size_t i = 0; i < n; i += reqs[i]->group) {
    rc = reqs[i]->group == 1 ? apply(s, txn, reqs[i])
                             : apply_group(s, txn, &reqs[i], reqs[i]->group);
    if (rc) {
      mdb_txn_abort(txn);
      return rc;
    }
  }
  /* The live-key count changes in the same transaction as the objects. */
  int64_t live = 0;
  for (size_t i = 0; i < n; i++)
    live += reqs[i]->live_delta;
  if (live &&
      (rc = meta_put_u64(s, txn, "live_keys", s->live + (uint64_t)live))) {
    mdb_txn_abort(txn);
    return rc;
  }
  if ((rc = mdb_txn_commit(txn))) return rc;
  s->live += (uint64_t)live;
  atomic_fetch_add(&s->commits, 1);
  return 0;
}

static void fail_request(kv_write *w, int rc) {
  w->status = from_mdb(rc);
  undo_request(w);
}

static void run_batch(kv_store *s, kv_write **reqs, size_t n) {
  int rc = run_txn(s, reqs, n);
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      complete(s, reqs[i]);
    return;
  }
  if (rc != MDB_MAP_FULL) log_mdb("write_txn", rc);
  if (n == reqs[0]->group) {
    for (size_t i = 0; i < n; i++) {
      fail_request(reqs[i], rc);
      complete(s, reqs[i]);
    }
    return;
  }
  /* Replay one request (or group) per transaction so that only what cannot
   * be committed fails; the rest still complete in submission order. */
  for (size_t i = 0; i < n; i += reqs[i]->group)
    run_batch(s, &reqs[i], reqs[i]->group);
}

static void *writer_main(void *arg) {
  kv_store *s = arg;
  size_t limit = s->opts.max_batch, alloc = limit;
  kv_write **batch = kv_malloc(alloc * sizeof *batch);
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->head && !s->closing)
      pthread_cond_wait(&s->cv, &s->mu);
    if (!s->head) {
      pthread_mutex_unlock(&s->mu);
      break;
    }
    size_t n = 0;
    /* Whole groups only: a group may overrun the batch limit. */
    while (s->head && n < limit) {
      for (size_t g = s->head->group; g > 0; g--) {
        if (n == alloc) {
          alloc *= 2;
          batch = kv_realloc(batch, alloc * sizeof *batch);
        }
        batch[n++] = s->head;
        s->head = s->head->next;
      }
    }
    if (!s->head) s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    run_batch(s, batch, n);
  }
  free(batch);
  return NULL;
}

/* ---- lifecycle ---- */

int kv_store_open(const kv_store_opts *opts, kv_store **out) {
  if (!opts->dir) return KV_INVALID;
  if (opts->segment_bits && (opts->segment_bits < KV_MERKLE_MIN_BITS ||
                             opts->segment_bits > KV_MERKLE_MAX_BITS))
    return KV_INVALID;
  if (mkdir(opts->dir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "level=error event=mkdir dir=%s err=\"%s\"\n", opts->dir,
            strerror(errno));
    return KV_IO;
  }
  kv_store *s = kv_calloc(1, sizeof *s);
  s->opts = *opts;
  if (!s->opts.map_size) s->opts.map_size = DEFAULT_MAP_SIZE;
  if (!s->opts.max_value_bytes) s->opts.max_value_bytes = DEFAULT_MAX_VALUE;
  if (!s->opts.max_siblings) s->opts.max_siblings = DEFAULT_MAX_SIBLINGS;
  if (!s->opts.max_batch) s->opts.max_batch = DEFAULT_MAX_BATCH;
  s->opts.dir = NULL; /* not kept: the caller's string */

  int rc = mdb_env_create(&s->env);
  unsigned flags = MDB_NOTLS | (opts->sync ? 0 : MDB_NOSYNC);
  if (rc || (rc = mdb_env_set_maxdbs(s->env, 4)) ||
      (rc = mdb_env_set_mapsize(s->env, s->opts.map_size)) ||
      (rc = mdb_env_open(s->env, opts->dir, flags, 0644))) {
    fprintf(stderr, "level=error event=store_open dir=%s err=\"%s\"\n",
            opts->dir, mdb_strerror(rc));
    if (s->env) mdb_env_close(s->env);
    free(s);
    return rc == MDB_VERSION_MISMATCH || rc == MDB_INVALID ? KV_INCOMPATIBLE
                                                           : KV_IO;
  }
  /* Readers killed with -9 leave stale slots behind; clear them. */
  int dead = 0;
  mdb_reader_check(s->env, &dead);

  if ((rc = init_meta(s))) {
    mdb_env_close(s->env);
    free(s);
    return rc;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->id = atomic_fetch_add(&next_store_id, 1);
  if (pthread_create(&s->writer, NULL, writer_main, s) != 0)
    kv_panic("cannot start the writer thread");
  *out = s;
  return KV_OK;
}

void kv_store_close(kv_store *s) {
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  s->closing = true;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->writer, NULL);
  for (size_t i = 0; i < s->nreaders; i++)
    mdb_txn_abort(s->readers[i]);
  mdb_env_close(s->env);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}

uint64_t kv_store_replica_id(const kv_store *s) { return s->replica_id; }
unsigned kv_store_segment_bits(const kv_store *s) { return s->bits; }

void kv_write_init(kv_write *w) { memset(w, 0, sizeof *w); }

void kv_write_fini(kv_write *w) {
  if (w) kv_buf_free(&w->object);
}

int kv_store_submit_group(kv_store *s, kv_write **ws, size_t n) {
  kv_assert(n > 0);
  for (size_t i = 0; i < n; i++) {
    kv_assert(ws[i]->done);
    ws[i]->next = i + 1 < n ? ws[i + 1] : NULL;
    ws[i]->group = i == 0 ? n : 0;
  }
  pthread_mutex_lock(&s->mu);
  if (s->closing) {
    pthread_mutex_unlock(&s->mu);
    return KV_CLOSED;
  }
  if (s->tail)
    s->tail->next = ws[0];
  else
    s->head = ws[0];
  s->tail = ws[n - 1];
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return KV_OK;
}

int kv_store_submit(kv_store *s, kv_write *w) {
  return kv_store_submit_group(s, &w, 1);
}

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
} waiter;

static void wake(kv_write *w, void *arg) {
  (void)w;
  waiter *wt = arg;
  pthread_mutex_lock(&wt->mu);
  wt->done = true;
  pthread_cond_signal(&wt->cv);
  pthread_mutex_unlock(&wt->mu);
}

int kv_store_write_sync(kv_store *s, kv_write *w) {
  waiter wt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  w->done = wake;
  w->arg = &wt;
  int rc = kv_store_submit(s, w);
  if (rc) return rc;
  pthread_mutex_lock(&wt.mu);
  while (!wt.done)
    pthread_cond_wait(&wt.cv, &wt.mu);
  pthread_mutex_unlock(&wt.mu);
  pthread_mutex_destroy(&wt.mu);
  pthread_cond_destroy(&wt.cv);
  return w->status;
}

/* ---- reads ---- */

static int read_begin(kv_store *s, MDB_txn **txn) {
  cached_reader *c = &tls_reader;
  if (c->store_id == s->id && c->txn && !c->busy) {
    if (mdb_txn_renew(c->txn) == 0) {
      c->busy = true;
      *txn = c->txn;
      return KV_OK;
    }
  }
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
  if (rc) {
    log_mdb("read_txn", rc);
    return KV_IO;
  }
  if (c->store_id != s->id || !c->txn) {
    /* Adopt it as this thread's cached reader; the store aborts it at
     * close, whichever thread made it. */
    pthread_mutex_lock(&s->mu);
    if (s->nreaders < MAX_CACHED_READERS) {
      s->readers[s->nreaders++] = *txn;
      c->store_id = s->id;
      c->txn = *txn;
      c->busy = true;
    }
    pthread_mutex_unlock(&s->mu);
  }
  return KV_OK;
}

static void read_end(kv_store *s, MDB_txn *txn) {
  cached_reader *c = &tls_reader;
  if (c->store_id == s->id && c->txn == txn) {
    mdb_txn_reset(txn);
    c->busy = false;
  } else {
    mdb_txn_abort(txn);
  }
}

/* Looks key up in txn; *v is an LMDB view valid until the txn ends. */
static int lookup(kv_store *s, MDB_txn *txn, const void *key, size_t keylen,
                  MDB_val *v) {
  uint8_t kb[DBKEY_MAX];
  MDB_val k = {dbkey(s, key, keylen, kb, NULL), kb};
  return from_mdb(mdb_get(txn, s->objects, &k, v));
}

int kv_store_get(kv_store *s, const void *key, size_t keylen, kv_object *o) {
  if (!key_ok(keylen)) return KV_KEY_TOO_LONG;
  MDB_txn *txn;
  int rc = read_begin(s, &txn);
  if (rc) return rc;
  MDB_val v;
  if ((rc = lookup(s, txn, key, keylen, &v)) == KV_OK)
    rc = kv_object_decode(v.mv_data, v.mv_size, SIZE_MAX, o);
  read_end(s, txn);
  return rc;
}

int kv_store_get_raw(kv_store *s, const void *key, size_t keylen, kv_buf *out) {
  if (!key_ok(keylen)) return KV_KEY_TOO_LONG;
  MDB_txn *txn;
  int rc = read_begin(s, &txn);
  if (rc) return rc;
  MDB_val v;
  if ((rc = lookup(s, txn, key, keylen, &v)) == KV_OK)
    *out = kv_buf_dup(v.mv_data, v.mv_size);
  read_end(s, txn);
  return rc;
}

int kv_store_segment(kv_store *s, uint32_t seg, kv_store_visit_fn fn,
                     void *arg) {
  if (seg >= (1u << s->bits)) return KV_INVALID;
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = read_begin(s, &txn);
  if (rc) return rc;
  if ((rc = mdb_cursor_open(txn, s->objects, &cur))) {
    read_end(s, txn);
    return KV_IO;
  }
  uint8_t sb[PREFIX];
  kv_put_be32(sb, seg);
  MDB_val k = {PREFIX, sb}, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size < PREFIX || kv_get_be32(k.mv_data) != seg) break;
    if (!fn((const uint8_t *)k.mv_data + PREFIX, k.mv_size - PREFIX, v.mv_data,
            v.mv_size, arg))
      break;
  }
  mdb_cursor_close(cur);
  read_end(s, txn);
  return rc == 0 || rc == MDB_NOTFOUND ? KV_OK : KV_IO;
}

int kv_store_scan(kv_store *s, kv_buf *cursor, const uint8_t *prefix,
                  size_t prefixlen, size_t limit, kv_store_visit_fn fn,
                  void *arg) {
  if (cursor->len && (cursor->len <= PREFIX || cursor->len > DBKEY_MAX))
    return KV_BAD_REQUEST;
  if (limit == 0) return KV_OK; /* nothing asked: the cursor stays */
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = read_begin(s, &txn);
  if (rc) return rc;
  if ((rc = mdb_cursor_open(txn, s->objects, &cur))) {
    read_end(s, txn);
    return KV_IO;
  }
  MDB_val k = {cursor->len, cursor->data}, v;
  rc = cursor->len ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                   : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  /* Resume strictly after the cursor key. */
  if (rc == 0 && cursor->len && k.mv_size == cursor->len &&
      memcmp(k.mv_data, cursor->data, cursor->len) == 0)
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);

  size_t visited = 0;
  MDB_val last = {0, NULL}; /* valid until the transaction ends */
  for (; rc == 0 && visited < limit;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const uint8_t *ukey = (const uint8_t *)k.mv_data + PREFIX;
    size_t ulen = k.mv_size - PREFIX;
    last = k;
    if (ulen < prefixlen || (prefixlen && memcmp(ukey, prefix, prefixlen) != 0))
      continue;
    kv_object o;
    if (kv_object_decode(v.mv_data, v.mv_size, SIZE_MAX, &o) != KV_OK)
      continue; /* bit rot is for verify to report, not scan */
    kv_kind kind = kv_object_kind(&o);
    kv_object_fini(&o);
    if (kind == KV_KIND_NONE) continue;
    visited++;
    if (!fn(ukey, ulen, v.mv_data, v.mv_size, arg)) break;
  }
  kv_buf next = {NULL, 0};
  if (rc == 0) next = kv_buf_dup(last.mv_data, last.mv_size);
  mdb_cursor_close(cur);
  read_end(s, txn);
  if (rc && rc != MDB_NOTFOUND) return KV_IO;
  kv_buf_free(cursor);
  *cursor = next;
  return KV_OK;
}

int kv_store_load_tree(kv_store *s, kv_merkle **out) {
  kv_merkle *t;
  int rc = kv_merkle_new(s->bits, &t);
  if (rc) return rc;
  uint32_t n = kv_merkle_segments(t);
  kv_hash *leaves = kv_calloc(n, sizeof *leaves);
  MDB_txn *txn;
  MDB_cursor *cur;
  if ((rc = read_begin(s, &txn))) goto fail;
  if (mdb_cursor_open(txn, s->tree, &cur)) {
    read_end(s, txn);
    rc = KV_IO;
    goto fail;
  }
  MDB_val k, v;
  int mrc;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != PREFIX || v.mv_size != sizeof(kv_hash)) continue;
    uint32_t seg = kv_get_be32(k.mv_data);
    if (seg < n) memcpy(leaves[seg].b, v.mv_data, sizeof(kv_hash));
  }
  mdb_cursor_close(cur);
  read_end(s, txn);
  if (mrc != MDB_NOTFOUND) {
    rc = KV_IO;
    goto fail;
  }
  kv_merkle_load_leaves(t, leaves);
  free(leaves);
  *out = t;
  return KV_OK;
fail:
  free(leaves);
  kv_merkle_free(t);
  return rc;
}

int kv_store_stats_get(kv_store *s, kv_store_stats *out) {
  MDB_txn *txn;
  int rc = read_begin(s, &txn);
  if (rc) return rc;
  MDB_stat st;
  MDB_envinfo info;
  rc = mdb_stat(txn, s->objects, &st);
  read_end(s, txn);
  if (rc || mdb_env_info(s->env, &info)) return KV_IO;
  out->keys = atomic_load(&s->live);
  out->stored = st.ms_entries;
  out->map_size = info.me_mapsize;
  out->map_used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
  out->commits = atomic_load(&s->commits);
  out->writes = atomic_load(&s->writes);
  return KV_OK;
}

int kv_store_verify(kv_store *s, uint64_t *mismatched) {
  kv_merkle *rebuilt, *stored;
  int rc = kv_merkle_new(s->bits, &rebuilt);
  if (rc) return rc;
  if ((rc = kv_store_load_tree(s, &stored))) {
    kv_merkle_free(rebuilt);
    return rc;
  }
  MDB_txn *txn;
  MDB_cursor *cur;
  uint64_t bad = 0;
  if ((rc = read_begin(s, &txn))) goto out;
  if (mdb_cursor_open(txn, s->objects, &cur)) {
    read_end(s, txn);
    rc = KV_IO;
    goto out;
  }
  MDB_val k, v;
  int mrc;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const uint8_t *ukey = (const uint8_t *)k.mv_data + PREFIX;
    size_t ulen = k.mv_size - PREFIX;
    kv_object o;
    if (k.mv_size <= PREFIX ||
        kv_object_decode(v.mv_data, v.mv_size, SIZE_MAX, &o) != KV_OK) {
      rc = KV_CORRUPT;
      break;
    }
    kv_object_fini(&o);
    uint32_t seg = kv_merkle_segment_of(s->bits, ukey, ulen);
    if (seg != kv_get_be32(k.mv_data)) {
      rc = KV_CORRUPT;
      break;
    }
    kv_hash c = contribution(ukey, ulen, v.mv_data, v.mv_size);
    kv_merkle_apply(rebuilt, seg, &c);
  }
  mdb_cursor_close(cur);
  read_end(s, txn);
  if (rc) goto out;
  if (mrc != MDB_NOTFOUND) {
    rc = KV_IO;
    goto out;
  }
  unsigned leaf_level = kv_merkle_depth(rebuilt) - 1;
  for (uint32_t i = 0; i < kv_merkle_segments(rebuilt); i++) {
    kv_hash a = kv_merkle_node(rebuilt, leaf_level, i);
    kv_hash b = kv_merkle_node(stored, leaf_level, i);
    if (!kv_hash_equal(&a, &b)) bad++;
  }
  rc = bad ? KV_VERIFY_MISMATCH : KV_OK;
out:
  if (mismatched) *mismatched = bad;
  kv_merkle_free(rebuilt);
  kv_merkle_free(stored);
  return rc;
}
