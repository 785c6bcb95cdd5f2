/*
 * kvd, the epikv replica daemon: reads its settings, opens the store (minting
 * a replica id in a new data directory), rebuilds the in-memory Merkle tree
 * from the persisted leaves, serves clients on the libuv loop, and on
 * SIGTERM/SIGINT stops accepting, answers what it already received, lets the
 * writer commit everything submitted, and exits 0.
 */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/log.h"
#include "server/server.h"

#define MAX_TOKEN 4096

static int read_token(kvd *srv, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    log_error("auth_token_unreadable", "path=%s err=\"%s\"", path,
              strerror(errno));
    return KV_IO;
  }
  char buf[MAX_TOKEN + 2];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  /* Trailing blanks and line ends are not part of the token (kvctl reads
   * it the same way): an editor's newline must not lock a client out. */
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
               buf[n - 1] == '\t'))
    n--;
  if (n == 0 || n > MAX_TOKEN) {
    log_error("auth_token_invalid", "path=%s reason=\"empty or over %d bytes\"",
              path, MAX_TOKEN);
    return KV_INVALID;
  }
  crypto_generichash(srv->token_hash, sizeof srv->token_hash, (uint8_t *)buf, n,
                     NULL, 0);
  sodium_memzero(buf, sizeof buf);
  srv->have_token = true;
  return KV_OK;
}

static unsigned log2u(uint64_t v) {
  unsigned b = 0;
  while (v > 1)
    v >>= 1, b++;
  return b;
}

static int open_store(kvd *srv) {
  kvd_config *cfg = srv->cfg;
  kv_store_opts o = kv_store_opts_default();
  o.dir = cfg->data_dir;
  o.map_size = cfg->map_size_n;
  o.segment_bits = log2u(cfg->segments_n);
  o.sync = cfg->sync_n;
  o.max_value_bytes = cfg->max_value_n;
  o.max_siblings = cfg->max_siblings_n;
  int rc = kv_store_open(&o, &srv->store);
  if (rc) {
    log_error("store_open_failed", "dir=%s err=%s msg=\"%s\"", cfg->data_dir,
              kv_err_name(rc), kv_strerror(rc));
    return rc;
  }
  return KV_OK;
}

/* --restore: fills the data directory from a backup before the store opens
 * it, under a freshly minted replica id (see kv_store_restore). */
static int run_restore(const kvd_config *cfg) {
  char msg[512];
  uint64_t old_id = 0, new_id = 0;
  int rc = kv_store_restore(cfg->restore, cfg->data_dir, &old_id, &new_id, msg,
                            sizeof msg);
  if (rc) {
    log_error("restore_failed", "from=%s data_dir=%s err=%s msg=\"%s\"",
              cfg->restore, cfg->data_dir, kv_err_name(rc), msg);
    return rc;
  }
  log_info("restored",
           "from=%s data_dir=%s replica_id=%016llx backup_replica_id=%016llx",
           cfg->restore, cfg->data_dir, (unsigned long long)new_id,
           (unsigned long long)old_id);
  /* The restored data is as old as the backup: that is when it last saw
   * the cluster (DESIGN 2.3), so a backup older than tombstone-grace is
   * refused when it joins, like a replica away that long. */
  char path[1024], line[128];
  unsigned long long created = 0;
  snprintf(path, sizeof path, "%s/backup.info", cfg->restore);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "created_ms=%llu", &created) == 1) break;
  if (f) fclose(f);
  snprintf(path, sizeof path, "%s/%s", cfg->data_dir, KVD_CONTACT_FILE);
  if (created && (f = fopen(path, "w")) != NULL) {
    fprintf(f, "%llu\n", created);
    if (fclose(f) != 0) log_warn("contact_write_failed", "path=%s", path);
  }
  return KV_OK;
}

static int run_verify(kvd *srv) {
  uint64_t bad = 0;
  int rc = kv_store_verify(srv->store, &bad);
  if (rc == KV_OK) {
    printf("verify: ok, stored Merkle leaves match the objects\n");
    return 0;
  }
  if (rc == KV_VERIFY_MISMATCH)
    printf("verify: MISMATCH in %llu segments: the stored leaves differ from "
           "the objects (bit rot or a bug); anti-entropy will not be "
           "reliable until this is repaired\n",
           (unsigned long long)bad);
  else
    printf("verify: failed: %s\n", kv_strerror(rc));
  return 3;
}

static void close_cb_noop(uv_handle_t *h) { (void)h; }

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, close_cb_noop);
}

int main(int argc, char **argv) {
  kvd_config cfg;
  char err[512];
  if (kvd_config_load(&cfg, argc, argv, err, sizeof err) != KV_OK) {
    fprintf(stderr, "kvd: %s\n", err);
    kvd_config_fini(&cfg);
    return 2;
  }
  if (cfg.help) {
    kvd_config_usage(stdout);
    kvd_config_fini(&cfg);
    return 0;
  }
  if (cfg.version) {
    printf("kvd %s\n", KV_VERSION);
    kvd_config_fini(&cfg);
    return 0;
  }
  kvd_log_set_level(cfg.log_level_n);
  signal(SIGPIPE, SIG_IGN); /* a vanished client is EPIPE, not death */
  if (sodium_init() < 0) kv_panic("libsodium failed to initialise");

  kvd srv;
  memset(&srv, 0, sizeof srv);
  srv.cfg = &cfg;
  srv.loop = uv_default_loop();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  srv.start_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;

  int code = 1;
  if (*cfg.auth_token_file && read_token(&srv, cfg.auth_token_file)) goto out;
  if (*cfg.restore && run_restore(&cfg)) goto out;
  if (open_store(&srv)) goto out;
  if (cfg.verify_n) {
    code = run_verify(&srv);
    kv_store_close(srv.store);
    goto out;
  }
  int rc = kv_store_load_tree(srv.store, &srv.tree);
  if (rc) {
    log_error("tree_load_failed", "err=%s", kv_err_name(rc));
    kv_store_close(srv.store);
    goto out;
  }
  if (kvd_net_start(&srv) != KV_OK) {
    kvd_metrics_stop(&srv);
    uv_walk(srv.loop, walk_close, NULL);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    kvd_metrics_free(&srv);
    kvd_peers_free(&srv);
    kv_store_close(srv.store);
    kv_merkle_free(srv.tree);
    goto out;
  }
  log_info("started",
           "name=%s version=%s replica_id=%016llx data_dir=%s sync=%s "
           "segments=%llu",
           cfg.name, KV_VERSION,
           (unsigned long long)kv_store_replica_id(srv.store), cfg.data_dir,
           cfg.sync, (unsigned long long)cfg.segments_n);
  if (!cfg.sync_n)
    log_warn("sync_none",
             "msg=\"--sync none: writes are not fsynced; an OS crash or power "
             "loss may lose acknowledged writes\"");

  uv_run(srv.loop, UV_RUN_DEFAULT);
  /* The HTTP thread may no longer wake the loop (metrics.h). */
  kvd_metrics_stop(&srv);

  /* The loop has stopped taking requests. Closing the store lets the writer
   * commit everything it was given; its completions then land on the async
   * handle, which is still open, and are drained below before the handles
   * close. */
  kv_store_close(srv.store);
  uv_run(srv.loop, UV_RUN_NOWAIT);
  uv_walk(srv.loop, walk_close, NULL);
  uv_run(srv.loop, UV_RUN_DEFAULT);
  uv_loop_close(srv.loop);
  kvd_metrics_free(&srv);
  kvd_peers_free(&srv);
  kv_merkle_free(srv.tree);
  pthread_mutex_destroy(&srv.done_mu);
  log_info("stopped", "name=%s", cfg.name);
  code = srv.exit_code;
out:
  kvd_config_fini(&cfg);
  return code;
}
