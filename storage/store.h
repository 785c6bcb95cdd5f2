/*
 * A replica's persistent store (DESIGN.md §4): one LMDB environment with the
 * named databases `objects` (segment u32 BE || user key -> canonical object
 * bytes), `tree` (segment u32 BE -> 16-byte Merkle leaf) and `meta` (replica
 * id, format version, segment bits).
 *
 * Writes: every update goes through one writer thread. Callers submit
 * kv_write requests; the writer takes everything queued, applies it in one
 * write transaction (read the current object, apply or merge, encode, put the
 * object, XOR the contribution delta into its persisted leaf), commits once
 * (one fsync for the whole batch) and only then calls each request's done
 * callback. So a completed request is durable (with sync on), and the leaves
 * on disk always match the objects: they change in the same transaction.
 *
 * Reads run in read-only transactions on the calling thread, concurrently
 * with the writer. The store never touches the in-memory Merkle tree: each
 * completion carries the leaf delta for its owner to apply.
 *
 * Errors: KV_KEY_TOO_LONG, KV_VALUE_TOO_LARGE, KV_WRONG_TYPE,
 * KV_TOO_MANY_SIBLINGS, KV_STORE_FULL, KV_OVERFLOW, KV_GCOUNTER_DECREMENT,
 * KV_BAD_CONTEXT, KV_CORRUPT — a request that fails changes nothing, and the
 * other requests of its batch are unaffected. KV_IO for system failures.
 */
#ifndef KV_STORE_H
#define KV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt/object.h"
#include "proto/buf.h"
#include "proto/kv_err.h"
#include "sync/merkle.h"

#define KV_STORE_MAX_KEY 507 /* LMDB's 511-byte key limit minus the prefix */
#define KV_STORE_FORMAT 1

typedef struct kv_store kv_store;

typedef struct kv_store_opts {
  const char *dir;        /* data directory; created if missing */
  size_t map_size;        /* LMDB map size in bytes; 0 = 8 GiB */
  unsigned segment_bits;  /* 0 = KV_MERKLE_DEFAULT_BITS; must match an
                             existing store */
  bool sync;              /* fsync every commit (default true via
                             kv_store_opts_default); false = --sync=none */
  size_t max_value_bytes; /* 0 = 16 MiB */
  size_t max_siblings;    /* 0 = 100 */
  size_t max_batch;       /* requests per transaction; 0 = 1024 */
} kv_store_opts;

/* The defaults listed above, with sync on and dir NULL. */
kv_store_opts kv_store_opts_default(void);

/* Opens (creating if needed) the store in opts->dir and starts its writer
 * thread. A new data directory mints a random non-zero replica id and keeps
 * it. Errors: KV_IO (cannot create or open; errno-level detail is logged to
 * stderr), KV_INCOMPATIBLE (format version or segment bits differ from what
 * the directory holds), KV_INVALID (bad options). */
KV_WARN_UNUSED int kv_store_open(const kv_store_opts *opts, kv_store **out);

/* Stops accepting writes, lets the writer finish and commit everything
 * already submitted (their callbacks run), joins it and closes LMDB.
 * NULL does nothing. */
void kv_store_close(kv_store *s);

uint64_t kv_store_replica_id(const kv_store *s);
unsigned kv_store_segment_bits(const kv_store *s);

/* ---- writes ---- */

typedef enum kv_write_op {
  KV_WRITE_PUT,   /* value, optional context */
  KV_WRITE_DEL,   /* optional context */
  KV_WRITE_INCR,  /* delta, gcounter */
  KV_WRITE_MERGE, /* remote: encoded object from a peer */
} kv_write_op;

typedef struct kv_write kv_write;
typedef void (*kv_write_done_fn)(kv_write *w, void *arg);

/* A write request. The caller owns it and everything its input fields point
 * to; all of that must stay valid and unchanged from kv_store_submit until
 * the done callback has been called. Output fields are written by the writer
 * thread before done is called. */
struct kv_write {
  /* input */
  kv_write_op op;
  const uint8_t *key;
  size_t keylen;
  const uint8_t *value; /* PUT */
  size_t valuelen;
  const uint8_t *context; /* PUT, DEL: encoded context, NULL = none */
  size_t contextlen;
  bool local_context;    /* PUT without context: use this replica's own current
                            context, read in the same transaction (RESP SET) */
  int64_t delta;         /* INCR */
  bool gcounter;         /* INCR: create a G-counter if absent */
  const uint8_t *remote; /* MERGE */
  size_t remotelen;
  kv_write_done_fn done; /* called on the writer thread; must not block */
  void *arg;

  /* output */
  int status;         /* KV_OK or an error listed at the top of this file */
  bool changed;       /* the stored object changed (MERGE: news) */
  uint32_t segment;   /* the key's segment */
  kv_hash delta_hash; /* XOR this into the in-memory tree's leaf */
  int64_t counter;    /* INCR: the new value */
  kv_buf object;      /* the stored object's canonical bytes after the write
                         when changed (for rumors); free with kv_write_fini */

  /* private to the store */
  kv_write *next;
  size_t group;   /* writes in the atomic group this one starts; 0 inside one */
  int live_delta; /* change in the number of live keys if committed */
};

/* Zeroes w (all inputs empty, op PUT). */
void kv_write_init(kv_write *w);

/* Frees w's outputs (object). The caller's inputs are not touched. */
void kv_write_fini(kv_write *w);

/* Queues w for the writer. Returns KV_OK, after which done will be called
 * exactly once; or KV_CLOSED (store closing; done is never called).
 * Input checks (key and value size) happen on the writer and are reported
 * through status. */
KV_WARN_UNUSED int kv_store_submit(kv_store *s, kv_write *w);

/* Queues ws[0..n) as one atomic group: the writer applies them together in
 * one transaction, and if any fails (any status but KV_OK or KV_NOTFOUND)
 * none is applied: the failing ones keep their error and the others get the
 * first failing one's. Each done callback is called exactly once, in order.
 * Returns KV_OK or KV_CLOSED (then no callback is called). */
KV_WARN_UNUSED int kv_store_submit_group(kv_store *s, kv_write **ws, size_t n);

/* Submits w and waits for its completion (w->done and w->arg are
 * overwritten). Returns w->status, or KV_CLOSED. */
KV_WARN_UNUSED int kv_store_write_sync(kv_store *s, kv_write *w);

/* ---- reads ---- */

/* The decoded object stored under key into *o (caller frees with
 * kv_object_fini). Returns KV_NOTFOUND when nothing is stored (an object
 * whose kind is NONE, such as a deleted key, is still returned with KV_OK:
 * callers decide what absent means). KV_KEY_TOO_LONG, KV_CORRUPT, KV_IO. */
KV_WARN_UNUSED int kv_store_get(kv_store *s, const void *key, size_t keylen,
                                kv_object *o);

/* The stored canonical bytes under key, copied into *out (caller frees with
 * kv_buf_free). KV_NOTFOUND, KV_KEY_TOO_LONG, KV_IO. */
KV_WARN_UNUSED int kv_store_get_raw(kv_store *s, const void *key, size_t keylen,
                                    kv_buf *out);

/* Called for each key: key and obj are borrowed for the call only. Return
 * false to stop early. */
typedef bool (*kv_store_visit_fn)(const uint8_t *key, size_t keylen,
                                  const uint8_t *obj, size_t objlen, void *arg);

/* Visits every key of segment seg in one read transaction (anti-entropy's
 * range read). KV_INVALID for a segment out of range, KV_IO. */
KV_WARN_UNUSED int kv_store_segment(kv_store *s, uint32_t seg,
                                    kv_store_visit_fn fn, void *arg);

/* Unordered scan with a cursor, like Redis SCAN. Starting after *cursor
 * (empty = from the start), visits stored keys whose kind is not NONE and
 * whose name starts with prefix (may be empty), until fn has been called
 * limit times or the store ends. On return *cursor is replaced (old buffer
 * freed) by the position to resume from, empty when the scan is complete.
 * KV_BAD_REQUEST for a malformed cursor, KV_IO. */
KV_WARN_UNUSED int kv_store_scan(kv_store *s, kv_buf *cursor,
                                 const uint8_t *prefix, size_t prefixlen,
                                 size_t limit, kv_store_visit_fn fn, void *arg);

/* Copies the persisted leaves into a tree of the store's shape, recomputing
 * inner levels (start-up). *out caller frees with kv_merkle_free. */
KV_WARN_UNUSED int kv_store_load_tree(kv_store *s, kv_merkle **out);

/* The writer's histograms. Bucket i counts the events whose value was at
 * most bounds[i] and above bounds[i-1]; the last bucket (index BUCKETS)
 * counts everything above the last bound. Counts are per bucket, not
 * cumulative. */
#define KV_STORE_COMMIT_BUCKETS 12 /* commit latency, microseconds */
#define KV_STORE_COMMIT_BOUNDS_US                                              \
  {                                                                            \
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,      \
        1000000                                                                \
  }
#define KV_STORE_BATCH_BUCKETS 11 /* requests per committed transaction */
#define KV_STORE_BATCH_BOUNDS                                                  \
  { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024 }

/* Statistics for status and metrics. The writer thread updates the counters
 * with atomic adds and kv_store_stats_get reads each atomically, from any
 * thread; figures that belong together (a histogram's buckets and its sum)
 * may be a commit apart in one reading. */
typedef struct kv_store_stats {
  uint64_t keys;     /* live keys: stored objects whose kind is not NONE */
  uint64_t stored;   /* entries in `objects`, deleted keys included */
  uint64_t map_size; /* bytes */
  uint64_t map_used; /* bytes in use (pages * page size) */
  uint64_t commits;  /* write transactions committed since open */
  uint64_t writes;   /* requests completed since open */
  /* Time spent in LMDB's commit (the fsync, with sync on) of each committed
   * transaction: per-bucket counts and the sum in microseconds. */
  uint64_t commit_us[KV_STORE_COMMIT_BUCKETS + 1];
  uint64_t commit_us_sum;
  /* Requests per committed transaction (group commit's batch sizes). */
  uint64_t batch[KV_STORE_BATCH_BUCKETS + 1];
  uint64_t batch_sum;
  /* Write transactions that failed with an LMDB error other than a full
   * map (a failing disk, say), and whether the most recent one did. */
  uint64_t txn_failures;
  bool failing;
} kv_store_stats;

KV_WARN_UNUSED int kv_store_stats_get(kv_store *s, kv_store_stats *out);

/* Rebuilds every leaf from `objects` and compares with `tree`. *mismatched
 * receives the number of differing segments. Returns KV_OK when they all
 * match, KV_VERIFY_MISMATCH when some differ, KV_CORRUPT if an object does
 * not decode, KV_IO. */
KV_WARN_UNUSED int kv_store_verify(kv_store *s, uint64_t *mismatched);

/* ---- backup and restore ---- */

/* The file a complete backup holds beside LMDB's data.mdb, written last. */
#define KV_STORE_BACKUP_INFO "backup.info"

typedef struct kv_store_backup_info {
  uint64_t bytes;      /* size of the copy (data.mdb) */
  uint64_t elapsed_ms; /* time the copy took */
} kv_store_backup_info;

/* Writes a consistent, compacted copy of the store into dir: LMDB's
 * compacting copy (free pages left out) of one read transaction, so it holds
 * every write committed before the call and nothing half-applied, then
 * KV_STORE_BACKUP_INFO; both are fsynced. dir (borrowed for the call) must
 * be an absolute path naming an empty directory, or nothing, in which case
 * it is created (mode 0700; its parent must exist). It blocks for as long as
 * the copy takes, so call it off any latency-sensitive thread; writers and
 * readers carry on meanwhile, and kv_store_close waits for it to finish.
 * On failure nothing is left in dir (a directory it created is removed).
 * *info, if info is not NULL, is filled on KV_OK. msg (msglen bytes; may be
 * NULL when msglen is 0) receives a one-line reason on error.
 * Errors: KV_INVALID (dir relative, not a directory, or not empty),
 * KV_CLOSED (the store is closing), KV_IO (cannot create or write; the
 * reason names the system error). */
KV_WARN_UNUSED int kv_store_backup(kv_store *s, const char *dir,
                                   kv_store_backup_info *info, char *msg,
                                   size_t msglen);

/* Makes data_dir a new replica's store from a backup written by
 * kv_store_backup: copies backup_dir's data into data_dir (which must be
 * empty or missing; it is created) and replaces the stored replica id with a
 * freshly minted one, so the restored replica never writes under the id of
 * the replica it was copied from (two writers with one id would break DVV
 * causality). backup_dir is only read. Nothing else runs on data_dir
 * meanwhile (call it before kv_store_open). *old_id and *new_id (either may
 * be NULL) receive the ids on KV_OK. msg as for kv_store_backup. On failure
 * data_dir is left as it was found. Errors: KV_INVALID (not a complete
 * backup: KV_STORE_BACKUP_INFO or data.mdb missing; data_dir not empty),
 * KV_INCOMPATIBLE (another store format), KV_CORRUPT (no replica meta),
 * KV_IO. */
KV_WARN_UNUSED int kv_store_restore(const char *backup_dir,
                                    const char *data_dir, uint64_t *old_id,
                                    uint64_t *new_id, char *msg, size_t msglen);

#endif
