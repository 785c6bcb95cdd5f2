/*
 * Storage benchmark: durable writes per second through the store's writer
 * (group commit) with 1, 16 and 64 concurrent submitters, beside plain LMDB
 * doing one put per fsynced commit, measured in the same run on the same
 * disk; then point reads per second. Every figure comes with p50/p99/p999
 * latency. Keys come from a fixed seed, so runs differ only by the machine.
 *
 * Usage: storage_bench [--seconds S] [--dir D] [--value-bytes N]
 *                      [--sync always|none]   (none: no fsync, labelled so)
 */
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "storage/store.h"

#define SEED 0x5eedULL
#define KEYSPACE 100000

static double seconds = 3.0;
static size_t value_bytes = 100;
static char dirbase[256] = "/tmp";
static bool sync_writes = true;

static uint64_t now_ns(void) { return bench_now_ns(); }

static uint64_t mix(uint64_t x) { return bench_rng(&x); }

static void report(const char *name, samples *all, double elapsed) {
  sort_samples(all);
  double p50 = pct_us(all, 0.5), p99 = pct_us(all, 0.99),
         p999 = pct_us(all, 0.999);
  printf("%-34s %10.0f ops/s  p50 %8.1f us  p99 %8.1f us  p999 %8.1f us  "
         "(%zu ops)\n",
         name, all->n / elapsed, p50, p99, p999, all->n);
  fflush(stdout);
}

static void make_dir(char *out, size_t len, const char *tag) {
  snprintf(out, len, "%s/kvbench-%s-XXXXXX", dirbase, tag);
  if (!mkdtemp(out)) {
    perror("mkdtemp");
    exit(1);
  }
}

static void remove_dir(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", d);
}

/* ---- baselines: plain LMDB, fsynced commits ---- */

/* Puts `batch` random keys per fsynced commit into one database, or, with
 * leaves, also one 16-byte record per put into a second database (the store's
 * persisted Merkle leaf). batch 1 is the one-put-per-commit baseline; batch 64
 * with leaves is what a perfect 64-way group commit could reach on this disk
 * with the store's layout: the ceiling for the store's own figure. */
static void bench_lmdb(int batch, bool leaves, const char *name) {
  char dir[300];
  make_dir(dir, sizeof dir, "lmdb");
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi, tree;
  if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 2) ||
      mdb_env_set_mapsize(env, (size_t)1 << 32) ||
      mdb_env_open(env, dir, 0, 0644) || mdb_txn_begin(env, NULL, 0, &txn) ||
      mdb_dbi_open(txn, "objects", MDB_CREATE, &dbi) ||
      mdb_dbi_open(txn, "tree", MDB_CREATE, &tree) || mdb_txn_commit(txn)) {
    fprintf(stderr, "lmdb open failed\n");
    exit(1);
  }
  char *val = calloc(1, value_bytes);
  memset(val, 'v', value_bytes);
  samples all = {0};
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), i = 0;
  while (now_ns() < end) {
    uint64_t t0 = now_ns();
    if (mdb_txn_begin(env, NULL, 0, &txn)) exit(1);
    for (int b = 0; b < batch; b++, i++) {
      char key[32];
      uint64_t h = mix(SEED ^ i);
      int kl = snprintf(key, sizeof key, "key-%llu",
                        (unsigned long long)(h % KEYSPACE));
      MDB_val k = {(size_t)kl, key}, v = {value_bytes, val};
      uint8_t seg[4], leaf[16] = {0};
      kv_put_be32(seg, (uint32_t)(h >> 48));
      MDB_val sk = {4, seg}, sv = {16, leaf};
      if (mdb_put(txn, dbi, &k, &v, 0) ||
          (leaves && mdb_put(txn, tree, &sk, &sv, 0))) {
        fprintf(stderr, "lmdb write failed\n");
        exit(1);
      }
    }
    if (mdb_txn_commit(txn)) exit(1);
    uint64_t lat = now_ns() - t0;
    for (int b = 0; b < batch; b++)
      add_sample(&all, lat);
  }
  report(name, &all, (now_ns() - start) / 1e9);
  free(all.v);
  free(val);
  mdb_env_close(env);
  remove_dir(dir);
}

/* ---- the store ---- */

typedef struct worker {
  kv_store *s;
  int id;
  bool write;
  uint64_t end;
  samples lat;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  char *val = calloc(1, value_bytes);
  memset(val, 'v', value_bytes);
  for (uint64_t i = 0;; i++) {
    uint64_t t0 = now_ns();
    if (t0 >= w->end) break;
    char key[32];
    int kl =
        snprintf(key, sizeof key, "key-%llu",
                 (unsigned long long)(mix(SEED ^ ((uint64_t)w->id << 40) ^ i) %
                                      KEYSPACE));
    if (w->write) {
      kv_write req;
      kv_write_init(&req);
      req.op = KV_WRITE_PUT;
      req.key = (const uint8_t *)key;
      req.keylen = (size_t)kl;
      req.value = (const uint8_t *)val;
      req.valuelen = value_bytes;
      /* The replica's own context replaces what the key holds (RESP SET),
       * so objects stay one sibling and every write costs the same. */
      req.local_context = true;
      int rc = kv_store_write_sync(w->s, &req);
      kv_write_fini(&req);
      if (rc) {
        fprintf(stderr, "write failed: %s\n", kv_strerror(rc));
        exit(1);
      }
    } else {
      kv_object o;
      int rc = kv_store_get(w->s, key, (size_t)kl, &o);
      if (rc == KV_OK)
        kv_object_fini(&o);
      else if (rc != KV_NOTFOUND) {
        fprintf(stderr, "read failed: %s\n", kv_strerror(rc));
        exit(1);
      }
    }
    add_sample(&w->lat, now_ns() - t0);
  }
  free(val);
  return NULL;
}

static void run_workers(kv_store *s, int n, bool write, const char *name) {
  worker *ws = calloc((size_t)n, sizeof *ws);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  kv_store_stats before, after;
  if (kv_store_stats_get(s, &before)) exit(1);
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
  for (int i = 0; i < n; i++) {
    ws[i] = (worker){s, i, write, end, {0}};
    pthread_create(&th[i], NULL, worker_main, &ws[i]);
  }
  samples all = {0};
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    for (size_t j = 0; j < ws[i].lat.n; j++)
      add_sample(&all, ws[i].lat.v[j]);
    free(ws[i].lat.v);
  }
  double elapsed = (now_ns() - start) / 1e9;
  report(name, &all, elapsed);
  if (write) {
    if (kv_store_stats_get(s, &after)) exit(1);
    uint64_t c = after.commits - before.commits;
    printf("%-34s %10.1f writes per commit\n", "",
           c ? (double)(after.writes - before.writes) / (double)c : 0.0);
  }
  free(all.v);
  free(ws);
  free(th);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      snprintf(dirbase, sizeof dirbase, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--sync") && i + 1 < argc)
      sync_writes = strcmp(argv[++i], "none") != 0;
    else if (!strcmp(argv[i], "--value-bytes") && i + 1 < argc)
      value_bytes = (size_t)atol(argv[++i]);
    else {
      fprintf(stderr, "usage: storage_bench [--seconds S] [--dir D] "
                      "[--value-bytes N] [--sync always|none]\n");
      return 2;
    }
  }
  printf("storage_bench: %.1f s per case, %zu-byte values, %d keys, dir %s, "
         "%ld cpus\n",
         seconds, value_bytes, KEYSPACE, dirbase,
         sysconf(_SC_NPROCESSORS_ONLN));
  bench_lmdb(1, false, "lmdb: 1 put per fsynced commit");
  bench_lmdb(64, false, "lmdb: 64 puts per commit");
  bench_lmdb(64, true, "lmdb: 64 puts+leaves per commit");

  char dir[300];
  make_dir(dir, sizeof dir, "store");
  kv_store_opts o = kv_store_opts_default();
  o.dir = dir;
  o.sync = sync_writes;
  if (!sync_writes) printf("store runs with --sync none: NOT durable\n");
  kv_store *s;
  if (kv_store_open(&o, &s) != KV_OK) return 1;
  const char *mode = sync_writes ? "durable" : "NO-FSYNC";
  int submitters[] = {1, 16, 64};
  for (int i = 0; i < 3; i++) {
    char name[64];
    snprintf(name, sizeof name, "store: %s put, %d submitter%s", mode,
             submitters[i], submitters[i] > 1 ? "s" : "");
    run_workers(s, submitters[i], true, name);
  }
  run_workers(s, 1, false, "store: get, 1 reader");
  run_workers(s, 2, false, "store: get, 2 readers");
  kv_store_close(s);
  remove_dir(dir);
  return 0;
}
