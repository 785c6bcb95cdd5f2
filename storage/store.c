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
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
  unsigned backups;      /* kv_store_backup calls running, guarded by mu */
  pthread_cond_t idle;   /* signalled when backups drops to 0 */

  uint64_t hlc;          /* writer thread only */
  _Atomic uint64_t live; /* live keys; written by the writer thread */
  uint64_t id;           /* never reused, names the store in thread-locals */
  MDB_txn *readers[MAX_CACHED_READERS]; /* cached per thread, guarded by mu */
  size_t nreaders;
  _Atomic uint64_t commits, writes;
  /* Histograms and failures for kv_store_stats: writer thread adds. */
  _Atomic uint64_t commit_us[KV_STORE_COMMIT_BUCKETS + 1], commit_us_sum;
  _Atomic uint64_t batch[KV_STORE_BATCH_BUCKETS + 1], batch_sum;
  _Atomic uint64_t txn_failures;
  _Atomic bool failing;
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

static int meta_read(MDB_txn *txn, MDB_dbi meta, const char *name,
                     uint64_t *out) {
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc) return rc;
  if (v.mv_size != 8) return MDB_CORRUPTED;
  *out = kv_get_be64(v.mv_data);
  return 0;
}

static int meta_write(MDB_txn *txn, MDB_dbi meta, const char *name,
                      uint64_t val) {
  uint8_t b[8];
  kv_put_be64(b, val);
  MDB_val k = {strlen(name), (void *)name}, v = {8, b};
  return mdb_put(txn, meta, &k, &v, 0);
}

static int meta_get_u64(kv_store *s, MDB_txn *txn, const char *name,
                        uint64_t *out) {
  return meta_read(txn, s->meta, name, out);
}

static int meta_put_u64(kv_store *s, MDB_txn *txn, const char *name,
                        uint64_t val) {
  return meta_write(txn, s->meta, name, val);
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

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The bucket of v among bounds[0..n): the first bound v does not exceed,
 * or n. */
static size_t bucket_of(uint64_t v, const uint64_t *bounds, size_t n) {
  size_t i = 0;
  while (i < n && v > bounds[i])
    i++;
  return i;
}

/* A committed transaction of n requests whose commit took us microseconds. */
static void record_commit(kv_store *s, uint64_t us, size_t n) {
  static const uint64_t cb[] = KV_STORE_COMMIT_BOUNDS_US;
  static const uint64_t bb[] = KV_STORE_BATCH_BOUNDS;
  size_t ci = bucket_of(us, cb, KV_STORE_COMMIT_BUCKETS);
  size_t bi = bucket_of(n, bb, KV_STORE_BATCH_BUCKETS);
  atomic_fetch_add_explicit(&s->commit_us[ci], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->commit_us_sum, us, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->batch[bi], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->batch_sum, n, memory_order_relaxed);
  atomic_store(&s->failing, false);
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
  uint64_t t0 = mono_us();
  if ((rc = mdb_txn_commit(txn))) return rc;
  s->live += (uint64_t)live;
  atomic_fetch_add(&s->commits, 1);
  record_commit(s, mono_us() - t0, n);
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
  if (rc != MDB_MAP_FULL) {
    log_mdb("write_txn", rc);
    atomic_fetch_add(&s->txn_failures, 1);
    atomic_store(&s->failing, true);
  }
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
  pthread_cond_init(&s->idle, NULL);
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
  /* A backup reads through the environment: it must end before it closes. */
  pthread_mutex_lock(&s->mu);
  while (s->backups > 0)
    pthread_cond_wait(&s->idle, &s->mu);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < s->nreaders; i++)
    mdb_txn_abort(s->readers[i]);
  mdb_env_close(s->env);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_cond_destroy(&s->idle);
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
  for (size_t i = 0; i <= KV_STORE_COMMIT_BUCKETS; i++)
    out->commit_us[i] = atomic_load(&s->commit_us[i]);
  out->commit_us_sum = atomic_load(&s->commit_us_sum);
  for (size_t i = 0; i <= KV_STORE_BATCH_BUCKETS; i++)
    out->batch[i] = atomic_load(&s->batch[i]);
  out->batch_sum = atomic_load(&s->batch_sum);
  out->txn_failures = atomic_load(&s->txn_failures);
  out->failing = atomic_load(&s->failing);
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

/* ---- backup and restore ---- */

static int say(char *msg, size_t msglen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int say(char *msg, size_t msglen, int rc, const char *fmt, ...) {
  if (msg && msglen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 1 if dir holds nothing but . and .., 0 if it holds more, -1 (errno). */
static int dir_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int empty = 1;
  struct dirent *e;
  errno = 0;
  while (empty && (e = readdir(d)))
    empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
  int err = errno;
  closedir(d);
  if (empty && err) {
    errno = err;
    return -1;
  }
  return empty;
}

/* Makes sure dir is an empty directory, creating it (mode) when missing;
 * *created says whether it did. what names dir in messages. */
static int empty_dir(const char *dir, mode_t mode, const char *what,
                     bool *created, char *msg, size_t msglen) {
  *created = false;
  struct stat st;
  if (stat(dir, &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return say(msg, msglen, KV_INVALID, "%s %s is not a directory", what,
                 dir);
    int e = dir_empty(dir);
    if (e < 0)
      return say(msg, msglen, KV_IO, "cannot read %s %s: %s", what, dir,
                 strerror(errno));
    if (e == 0)
      return say(msg, msglen, KV_INVALID,
                 "%s %s is not empty (it must be empty or not exist yet)", what,
                 dir);
    return KV_OK;
  }
  if (errno != ENOENT)
    return say(msg, msglen, KV_IO, "cannot access %s %s: %s", what, dir,
               strerror(errno));
  if (mkdir(dir, mode) != 0)
    return say(msg, msglen, errno == ENOENT ? KV_INVALID : KV_IO,
               "cannot create %s %s: %s", what, dir, strerror(errno));
  *created = true;
  return KV_OK;
}

/* fsync of a file or directory by name. 0 or -1 (errno). */
static int sync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd), err = errno;
  close(fd);
  errno = err;
  return rc;
}

/* Undoes a failed backup or restore: removes the files it may have made in
 * dir (names, NULL-terminated), then dir if it created it. */
static void undo_dir(const char *dir, const char *const *names, bool created) {
  char path[PATH_MAX];
  for (; *names; names++) {
    snprintf(path, sizeof path, "%s/%s", dir, *names);
    unlink(path);
  }
  if (created) rmdir(dir);
}

/* Writes env's data (one read transaction, LMDB's copy with flags) into a
 * new dir/data.mdb and fsyncs it; *bytes receives its size. The file is
 * created exclusively, so a second copy into the same directory fails here
 * without touching the first one's; on failure the file made is removed. */
static int copy_env(MDB_env *env, unsigned flags, const char *dir, mode_t mode,
                    uint64_t *bytes, char *msg, size_t msglen) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return say(msg, msglen, errno == EEXIST ? KV_INVALID : KV_IO,
               "creating %s: %s", path, strerror(errno));
  int rc = KV_OK, mrc = mdb_env_copyfd2(env, fd, flags);
  struct stat st;
  if (mrc)
    rc = say(msg, msglen,
             mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH ? KV_INCOMPATIBLE
                                                               : KV_IO,
             "copying into %s: %s", dir, mdb_strerror(mrc));
  else if (fsync(fd) != 0 || fstat(fd, &st) != 0)
    rc = say(msg, msglen, KV_IO, "syncing %s: %s", path, strerror(errno));
  close(fd);
  if (rc) {
    unlink(path);
    return rc;
  }
  *bytes = (uint64_t)st.st_size;
  return KV_OK;
}

/* The backup itself, into the empty directory dir. */
static int backup_into(kv_store *s, const char *dir, uint64_t *bytes, char *msg,
                       size_t msglen) {
  /* LMDB's copy runs in one read transaction: a snapshot, taken while the
   * writer goes on committing (pages it frees meanwhile are kept until the
   * copy ends, which may grow the file for a while). */
  int rc = copy_env(s->env, MDB_CP_COMPACT, dir, 0600, bytes, msg, msglen);
  if (rc) return rc;
  /* Written last: a directory without it is an interrupted backup, which
   * restore refuses. */
  char path[PATH_MAX], data[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, KV_STORE_BACKUP_INFO);
  snprintf(data, sizeof data, "%s/data.mdb", dir);
  FILE *f = fopen(path, "wx");
  if (!f) {
    rc = say(msg, msglen, KV_IO, "creating %s: %s", path, strerror(errno));
    unlink(data);
    return rc;
  }
  fprintf(f,
          "epikv-backup 1\nformat=%d\nreplica_id=%016llx\nsegment_bits=%u\n"
          "bytes=%llu\ncreated_ms=%llu\n",
          KV_STORE_FORMAT, (unsigned long long)s->replica_id, s->bits,
          (unsigned long long)*bytes, (unsigned long long)wall_ms());
  bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  ok = fclose(f) == 0 && ok;
  if (ok && sync_path(dir) != 0) ok = false, err = errno;
  if (!ok) {
    rc = say(msg, msglen, KV_IO, "writing %s: %s", path, strerror(err));
    unlink(path);
    unlink(data);
  }
  return rc;
}

int kv_store_backup(kv_store *s, const char *dir, kv_store_backup_info *info,
                    char *msg, size_t msglen) {
  if (msg && msglen) msg[0] = 0;
  if (!dir || dir[0] != '/')
    return say(msg, msglen, KV_INVALID,
               "backup directory '%s' is not an absolute path (it names a "
               "directory on the replica's machine)",
               dir ? dir : "");
  if (strlen(dir) > PATH_MAX - 64)
    return say(msg, msglen, KV_INVALID, "backup directory path too long");
  pthread_mutex_lock(&s->mu);
  bool closing = s->closing;
  if (!closing) s->backups++;
  pthread_mutex_unlock(&s->mu);
  if (closing) return say(msg, msglen, KV_CLOSED, "the store is closing");

  uint64_t t0 = mono_ms(), bytes = 0;
  bool created;
  int rc = empty_dir(dir, 0700, "backup directory", &created, msg, msglen);
  if (rc == KV_OK) {
    rc = backup_into(s, dir, &bytes, msg, msglen);
    if (rc && created) rmdir(dir);
  }
  if (rc == KV_OK && info) {
    info->bytes = bytes;
    info->elapsed_ms = mono_ms() - t0;
  }
  pthread_mutex_lock(&s->mu);
  if (--s->backups == 0) pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* Checks that backup_dir holds a complete backup. */
static int check_backup(const char *backup_dir, char *msg, size_t msglen) {
  char path[PATH_MAX], line[64];
  snprintf(path, sizeof path, "%s/%s", backup_dir, KV_STORE_BACKUP_INFO);
  FILE *f = fopen(path, "r");
  if (!f)
    return say(msg, msglen, errno == ENOENT ? KV_INVALID : KV_IO,
               "%s is not a complete epikv backup: cannot open %s: %s",
               backup_dir, path, strerror(errno));
  bool ok = fgets(line, sizeof line, f) && !strcmp(line, "epikv-backup 1\n");
  fclose(f);
  if (!ok)
    return say(msg, msglen, KV_INVALID,
               "%s is not an epikv backup: %s does not start with "
               "'epikv-backup 1'",
               backup_dir, path);
  struct stat st;
  snprintf(path, sizeof path, "%s/data.mdb", backup_dir);
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
    return say(msg, msglen, KV_INVALID,
               "%s is not a complete epikv backup: %s is missing", backup_dir,
               path);
  return KV_OK;
}

int kv_store_restore(const char *backup_dir, const char *data_dir,
                     uint64_t *old_id, uint64_t *new_id, char *msg,
                     size_t msglen) {
  if (msg && msglen) msg[0] = 0;
  if (strlen(backup_dir) > PATH_MAX - 64 || strlen(data_dir) > PATH_MAX - 64)
    return say(msg, msglen, KV_INVALID, "restore: path too long");
  int rc = check_backup(backup_dir, msg, msglen);
  if (rc) return rc;
  bool created;
  rc = empty_dir(data_dir, 0755, "data directory", &created, msg, msglen);
  if (rc) return rc;

  static const char *const made[] = {"data.mdb", "lock.mdb", NULL};
  MDB_env *src = NULL, *dst = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi meta;
  uint64_t format, old, fresh, bytes;
  bool copied = false; /* data.mdb is ours to remove on failure */
  int mrc;
  /* The backup is opened read-only and without a lock file, so a backup on
   * read-only media restores, and the backup directory is never changed. */
  if ((mrc = mdb_env_create(&src)) || (mrc = mdb_env_set_maxdbs(src, 4)) ||
      (mrc = mdb_env_open(src, backup_dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS,
                          0))) {
    rc = say(msg, msglen,
             mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH ? KV_INCOMPATIBLE
                                                               : KV_IO,
             "opening the backup in %s: %s", backup_dir, mdb_strerror(mrc));
    goto fail;
  }
  if ((rc = copy_env(src, 0, data_dir, 0644, &bytes, msg, msglen))) goto fail;
  copied = true;
  mdb_env_close(src);
  src = NULL;
  if ((mrc = mdb_env_create(&dst)) || (mrc = mdb_env_set_maxdbs(dst, 4)) ||
      (mrc = mdb_env_open(dst, data_dir, MDB_NOTLS, 0644)) ||
      (mrc = mdb_txn_begin(dst, NULL, 0, &txn))) {
    rc = say(msg, msglen, KV_IO, "opening the restored store in %s: %s",
             data_dir, mdb_strerror(mrc));
    goto fail;
  }
  if ((mrc = mdb_dbi_open(txn, "meta", 0, &meta)) ||
      (mrc = meta_read(txn, meta, "format", &format)) ||
      (mrc = meta_read(txn, meta, "replica_id", &old))) {
    rc = say(msg, msglen,
             mrc == MDB_NOTFOUND || mrc == MDB_CORRUPTED ? KV_CORRUPT : KV_IO,
             "%s holds no valid epikv store meta (format, replica id): %s",
             backup_dir, mdb_strerror(mrc));
    goto fail;
  }
  if (format != KV_STORE_FORMAT) {
    rc = say(msg, msglen, KV_INCOMPATIBLE,
             "%s holds store format %llu; this kvd reads format %d", backup_dir,
             (unsigned long long)format, KV_STORE_FORMAT);
    goto fail;
  }
  do
    fresh = mint_replica_id();
  while (fresh == old);
  if ((mrc = meta_write(txn, meta, "replica_id", fresh))) {
    rc = say(msg, msglen, from_mdb(mrc), "writing the new replica id: %s",
             mdb_strerror(mrc));
    goto fail;
  }
  mrc = mdb_txn_commit(txn);
  txn = NULL;
  if (mrc || (mrc = mdb_env_sync(dst, 1))) {
    rc = say(msg, msglen, from_mdb(mrc), "committing the new replica id: %s",
             mdb_strerror(mrc));
    goto fail;
  }
  mdb_env_close(dst);
  if (sync_path(data_dir) != 0)
    return say(msg, msglen, KV_IO, "syncing %s: %s", data_dir, strerror(errno));
  if (old_id) *old_id = old;
  if (new_id) *new_id = fresh;
  return KV_OK;
fail:
  if (txn) mdb_txn_abort(txn);
  if (src) mdb_env_close(src);
  if (dst) mdb_env_close(dst);
  if (copied)
    undo_dir(data_dir, made, created);
  else if (created)
    rmdir(data_dir);
  return rc;
}
