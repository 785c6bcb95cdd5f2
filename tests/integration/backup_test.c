/*
 * Backup and restore against real kvd processes. A running replica writes a
 * compacted copy of its store (kvctl backup, kvc_backup); `kvd --restore`
 * brings a second replica up from it with a fresh replica id, and every key
 * reads the same there: values, siblings, counters, deletes and causal
 * contexts. The copy is a snapshot: writes after it are not in it. Each
 * refusal (relative, non-empty, non-directory, missing parent, no auth; a
 * restore from something that is not a complete backup or into a data
 * directory that already holds a store) is checked to leave nothing behind.
 */
#include "tests/integration/itest.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

static char out[65536], err[8192];

static const char *kvctl_bin(void) {
  const char *bin = getenv("KVCTL");
  return bin && *bin ? bin : "build/kvctl";
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The names in dir (but . and ..), sorted, joined by spaces, into buf. */
static const char *listing(const char *dir, char *buf, size_t cap) {
  char names[16][256];
  int n = 0;
  DIR *d = opendir(dir);
  if (!d) fail_msg("cannot open %s: %s", dir, strerror(errno));
  struct dirent *e;
  while ((e = readdir(d)) && n < 16)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      snprintf(names[n++], sizeof names[0], "%s", e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0],
        (int (*)(const void *, const void *))strcmp);
  buf[0] = 0;
  for (int i = 0; i < n; i++)
    snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? " " : "",
             names[i]);
  return buf;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  fclose(fp);
}

static void put(kvc_conn *c, const char *key, const void *v, size_t vlen) {
  assert_kvc(kvc_put(c, key, strlen(key), v, vlen, NULL, 0), KVC_OK);
}

static void incr(kvc_conn *c, const char *key, int64_t d, bool g) {
  assert_kvc(kvc_incr(c, key, strlen(key), d, g, NULL), KVC_OK);
}

#define NREG 300
#define BIG (1u << 20)

/* Registers, siblings, counters of both kinds, binary, empty and large
 * values, and a deleted key. */
static void write_dataset(kvc_conn *c) {
  char k[32], v[32];
  for (int i = 0; i < NREG; i++) {
    snprintf(k, sizeof k, "reg:%03d", i);
    snprintf(v, sizeof v, "value-%d", i * 7);
    put(c, k, v, strlen(v));
  }
  put(c, "sib", "left", 4); /* no context: concurrent siblings */
  put(c, "sib", "right", 5);
  put(c, "sib3", "a", 1);
  put(c, "sib3", "b", 1);
  put(c, "sib3", "c", 1);
  incr(c, "pn", 10, false);
  incr(c, "pn", -3, false);
  incr(c, "neg", -42, false);
  incr(c, "g", 5, true);
  incr(c, "g", 6, true);
  incr(c, "post-counter", 1, false);
  uint8_t bin[256];
  for (int i = 0; i < 256; i++)
    bin[i] = (uint8_t)i;
  put(c, "bin", bin, sizeof bin);
  put(c, "empty", "", 0);
  uint8_t *big = malloc(BIG);
  for (size_t i = 0; i < BIG; i++)
    big[i] = (uint8_t)(i * 31 + 7);
  put(c, "big", big, BIG);
  free(big);
  put(c, "gone", "soon", 4);
  assert_kvc(kvc_del(c, "gone", 4, NULL, 0), KVC_OK);
}

/* Every key of a scan of c, as NUL-terminated strings (the data set's keys
 * are text). */
static size_t scan_all(kvc_conn *c, char keys[][64], size_t cap) {
  size_t n = 0;
  uint8_t cursor[512];
  size_t cursorlen = 0;
  do {
    kvc_result *r;
    assert_kvc(kvc_scan(c, cursor, cursorlen, NULL, 0, 97, &r), KVC_OK);
    for (size_t i = 0; i < kvc_result_keys(r); i++) {
      const uint8_t *d;
      size_t len;
      assert_kvc(kvc_result_key(r, i, &d, &len), KVC_OK);
      assert_true(n < cap && len < 64);
      memcpy(keys[n], d, len);
      keys[n++][len] = 0;
    }
    const uint8_t *next;
    kvc_result_cursor(r, &next, &cursorlen);
    assert_true(cursorlen <= sizeof cursor);
    memcpy(cursor, next, cursorlen);
    kvc_result_free(r);
  } while (cursorlen > 0);
  return n;
}

/* The siblings of r, each as "len:bytes-hash", sorted, so that two reads
 * compare as multisets whatever order the server lists them in. */
static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static size_t sibling_digests(const kvc_result *r, uint64_t *dig, size_t cap) {
  size_t n = kvc_result_siblings(r);
  assert_true(n <= cap);
  for (size_t i = 0; i < n; i++) {
    const uint8_t *d;
    size_t len;
    assert_kvc(kvc_result_sibling(r, i, &d, &len), KVC_OK);
    uint64_t h = 1469598103934665603ull ^ len;
    for (size_t j = 0; j < len; j++)
      h = (h ^ d[j]) * 1099511628211ull;
    dig[i] = h;
  }
  qsort(dig, n, sizeof *dig, cmp_u64);
  return n;
}

/* Asserts that key reads the same on a and b: status, kind, siblings,
 * counter and causal context. */
static void assert_same_key(kvc_conn *a, kvc_conn *b, const char *key) {
  kvc_result *ra = NULL, *rb = NULL;
  int sa = kvc_get(a, key, strlen(key), &ra);
  int sb = kvc_get(b, key, strlen(key), &rb);
  if (sa != sb)
    fail_msg("key %s: %s on the original, %s on the restored replica", key,
             kvc_errname(sa), kvc_errname(sb));
  assert_non_null(ra);
  assert_non_null(rb);
  if (kvc_result_kind(ra) != kvc_result_kind(rb))
    fail_msg("key %s: kind %d vs %d", key, kvc_result_kind(ra),
             kvc_result_kind(rb));
  uint64_t da[8], db[8];
  size_t na = sibling_digests(ra, da, 8), nb = sibling_digests(rb, db, 8);
  if (na != nb || memcmp(da, db, na * sizeof *da) != 0)
    fail_msg("key %s: siblings differ (%zu vs %zu values)", key, na, nb);
  if (kvc_result_counter(ra) != kvc_result_counter(rb))
    fail_msg("key %s: counter %lld vs %lld", key,
             (long long)kvc_result_counter(ra),
             (long long)kvc_result_counter(rb));
  const uint8_t *ca, *cb;
  size_t la, lb;
  kvc_result_context(ra, &ca, &la);
  kvc_result_context(rb, &cb, &lb);
  if (la != lb || memcmp(ca, cb, la) != 0)
    fail_msg("key %s: causal contexts differ", key);
  kvc_result_free(ra);
  kvc_result_free(rb);
}

static uint64_t replica_id(kvc_conn *c) {
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  uint64_t id = kvc_result_status_info(r)->replica_id;
  kvc_result_free(r);
  return id;
}

static int64_t counter(kvc_conn *c, const char *key) {
  kvc_result *r;
  assert_kvc(kvc_get(c, key, strlen(key), &r), KVC_OK);
  int64_t v = kvc_result_counter(r);
  kvc_result_free(r);
  return v;
}

static void test_backup_restore_same_reads_fresh_id(void **state) {
  IT_BEGIN(f, 120);
  kvdh *a = &f->k[0], *b = &f->k[1];
  it_start(a);
  kvc_conn *ca = it_conn(a);
  write_dataset(ca);
  uint64_t id_a = replica_id(ca);

  /* The backup through kvctl, as an operator would take it. */
  static char bdir[256];
  snprintf(bdir, sizeof bdir, "%s/backup", a->dir);
  char hp[64];
  snprintf(hp, sizeof hp, "127.0.0.1:%d", a->native_port);
  const char *argv[] = {kvctl_bin(), "-h",    hp,   "--json",
                        "backup",    "--dir", bdir, NULL};
  int rc = kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 60000);
  if (rc != 0) fail_msg("kvctl backup exited %d: %s", rc, err);
  char want[64];
  snprintf(want, sizeof want, "\"replica_id\":\"%016llx\"",
           (unsigned long long)id_a);
  if (!strstr(out, want) || !strstr(out, "\"bytes\":"))
    fail_msg("kvctl backup --json printed: %s", out);
  char names[512];
  assert_string_equal(listing(bdir, names, sizeof names),
                      "backup.info data.mdb");

  /* After the backup: not in it. The original keeps serving. */
  put(ca, "after", "x", 1);
  incr(ca, "post-counter", 100, false);

  it_args(b, "--restore", bdir, NULL);
  it_start(b);
  assert_true(kvdh_log_contains(b, "event=restored"));
  kvc_conn *cb = it_conn(b);
  uint64_t id_b = replica_id(cb);
  if (id_b == id_a)
    fail_msg("the restored replica kept the replica id %016llx",
             (unsigned long long)id_a);
  assert_true(id_b != 0);

  static char keys_a[NREG + 64][64], keys_b[NREG + 64][64];
  size_t na = scan_all(ca, keys_a, NREG + 64);
  size_t nb = scan_all(cb, keys_b, NREG + 64);
  /* The data set's live keys, plus "after" on the original only. */
  assert_int_equal(na, NREG + 10);
  assert_int_equal(nb, NREG + 9);
  size_t compared = 0;
  for (size_t i = 0; i < na; i++) {
    if (!strcmp(keys_a[i], "after") || !strcmp(keys_a[i], "post-counter"))
      continue;
    assert_same_key(ca, cb, keys_a[i]);
    compared++;
  }
  assert_int_equal(compared, NREG + 8);
  assert_same_key(ca, cb, "gone"); /* deleted: NOTFOUND, same context */
  kvc_result *r;
  assert_kvc(kvc_get(cb, "after", 5, &r), KVC_NOTFOUND);
  kvc_result_free(r);
  assert_int_equal(counter(cb, "post-counter"), 1);
  assert_int_equal(counter(ca, "post-counter"), 101);
  assert_int_equal(counter(cb, "pn"), 7);
  assert_int_equal(counter(cb, "g"), 11);
  assert_int_equal(counter(cb, "neg"), -42);
  assert_kvc(kvc_get(cb, "sib3", 4, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 3);
  kvc_result_free(r);
  /* The restored store's Merkle leaves match its objects, and it takes
   * writes under its own id. */
  assert_kvc(kvc_verify(cb, NULL), KVC_OK);
  incr(cb, "pn", 1, false);
  assert_int_equal(counter(cb, "pn"), 8);
  kvc_close(ca);
  kvc_close(cb);
  IT_END(f);
}

/* Writes w:0, w:1, ... one after the other (each acknowledged before the
 * next is sent) until told to stop. Failures are recorded for the main
 * thread to report. */
typedef struct writer {
  int port;
  atomic_bool stop;
  atomic_int written;
  char failure[256];
} writer;

static void *write_loop(void *arg) {
  writer *w = arg;
  kvc_conn *c = NULL;
  if (kvc_connect("127.0.0.1", w->port, NULL, &c) != KVC_OK) {
    snprintf(w->failure, sizeof w->failure, "connect: %s", kvc_errmsg(c));
    kvc_close(c);
    return NULL;
  }
  char k[32];
  for (int i = 0; !atomic_load(&w->stop) && i < 1000000; i++) {
    snprintf(k, sizeof k, "w:%d", i);
    int rc = kvc_put(c, k, strlen(k), "x", 1, NULL, 0);
    if (rc != KVC_OK) {
      snprintf(w->failure, sizeof w->failure, "put %s: %s", k, kvc_errmsg(c));
      break;
    }
    atomic_store(&w->written, i + 1);
  }
  kvc_close(c);
  return NULL;
}

/* Backups taken while a client writes are snapshots: a restored copy holds
 * w:0 .. w:n-1 for some n, with no gap (a later write never without an
 * earlier one), and its Merkle leaves match its objects. */
static void test_backup_during_writes_is_a_snapshot(void **state) {
  IT_BEGIN(f, 120);
  kvdh *a = &f->k[0];
  it_args(a, "--sync", "none", NULL);
  it_start(a);
  writer w = {.port = a->native_port};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, write_loop, &w), 0);
  kvc_conn *c = it_conn(a);
  static char dirs[3][256];
  for (int i = 0; i < 3; i++) {
    while (atomic_load(&w.written) < 200 * (i + 1) && !w.failure[0])
      kvdh_sleep_ms(1);
    snprintf(dirs[i], sizeof dirs[i], "%s/b%d", a->dir, i);
    assert_kvc(kvc_backup(c, dirs[i], NULL), KVC_OK);
  }
  atomic_store(&w.stop, true);
  pthread_join(t, NULL);
  if (w.failure[0]) fail_msg("writer: %s", w.failure);
  kvc_close(c);
  int last = -1;
  for (int i = 0; i < 3; i++) {
    kvdh *b = &f->k[1 + i];
    it_args(b, "--restore", dirs[i], NULL);
    it_start(b);
    kvc_conn *cb = it_conn(b);
    assert_kvc(kvc_verify(cb, NULL), KVC_OK);
    static char keys[1000000 / 64][64];
    size_t n = scan_all(cb, keys, sizeof keys / sizeof keys[0]);
    int max = -1;
    for (size_t j = 0; j < n; j++) {
      int idx = atoi(keys[j] + 2);
      if (idx > max) max = idx;
    }
    if ((size_t)(max + 1) != n)
      fail_msg("backup %d holds %zu of the writes w:0..w:%d: a gap", i, n, max);
    if (max + 1 < 200 * (i + 1) || max < last)
      fail_msg("backup %d holds w:0..w:%d, taken after %d writes", i, max,
               200 * (i + 1));
    last = max;
    kvc_close(cb);
    assert_int_equal(kvdh_stop(b, SIGTERM, 10000), 0);
  }
  IT_END(f);
}

/* A native Backup request with dir as is (kvc_backup refuses "" itself). */
static Kvpb__Response *raw_backup(int fd, const char *dir) {
  Kvpb__Request req = KVPB__REQUEST__INIT;
  Kvpb__BackupReq b = KVPB__BACKUP_REQ__INIT;
  req.id = 7;
  req.body_case = KVPB__REQUEST__BODY_BACKUP;
  req.backup = &b;
  b.dir = (char *)dir;
  it_native_send(fd, &req);
  return it_native_recv(fd);
}

static void expect_refused(kvc_conn *c, const char *dir, const char *needle) {
  int rc = kvc_backup(c, dir, NULL);
  if (rc != KVC_INVALID)
    fail_msg("backup to '%s': %s, want INVALID", dir, kvc_errname(rc));
  if (!strstr(kvc_errmsg(c), needle))
    fail_msg("backup to '%s': message '%s' does not say '%s'", dir,
             kvc_errmsg(c), needle);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK); /* the connection stays usable */
  kvc_result_free(r);
}

static void test_backup_refusals(void **state) {
  IT_BEGIN(f, 60);
  kvdh *a = &f->k[0];
  it_start(a);
  kvc_conn *c = it_conn(a);
  put(c, "k", "v", 1);
  char path[256], names[512];

  expect_refused(c, "relative/backup", "absolute");
  assert_false(exists("relative"));
  int fd = it_fd(a->native_port);
  Kvpb__Response *resp = raw_backup(fd, "");
  close(fd);
  assert_int_equal(resp->error, WIRE(KVC_INVALID));
  assert_non_null(strstr(resp->message, "absolute"));
  kvpb__response__free_unpacked(resp, NULL);

  snprintf(path, sizeof path, "%s/full", a->dir);
  assert_int_equal(mkdir(path, 0755), 0);
  snprintf(path, sizeof path, "%s/full/keep", a->dir);
  write_file(path, "x", 1);
  snprintf(path, sizeof path, "%s/full", a->dir);
  expect_refused(c, path, "not empty");
  assert_string_equal(listing(path, names, sizeof names), "keep");

  snprintf(path, sizeof path, "%s/afile", a->dir);
  write_file(path, "x", 1);
  expect_refused(c, path, "not a directory");

  snprintf(path, sizeof path, "%s/no/such", a->dir);
  expect_refused(c, path, "cannot create");
  snprintf(path, sizeof path, "%s/no", a->dir);
  assert_false(exists(path));

  /* An existing empty directory is fine. */
  snprintf(path, sizeof path, "%s/empty", a->dir);
  assert_int_equal(mkdir(path, 0755), 0);
  kvc_backup_info info;
  assert_kvc(kvc_backup(c, path, &info), KVC_OK);
  assert_true(info.bytes > 0);
  assert_int_equal(info.replica_id, replica_id(c));
  assert_string_equal(listing(path, names, sizeof names),
                      "backup.info data.mdb");
  kvc_close(c);

  /* kvctl checks what it can before connecting (exit 2), and reports the
   * replica's refusals (exit 3). */
  char hp[64];
  snprintf(hp, sizeof hp, "127.0.0.1:%d", a->native_port);
  const char *no_dir[] = {kvctl_bin(), "-h", hp, "backup", NULL};
  assert_int_equal(
      kvdh_exec(no_dir, NULL, out, sizeof out, err, sizeof err, 10000), 2);
  assert_non_null(strstr(err, "--dir"));
  const char *rel[] = {kvctl_bin(), "-h", hp, "backup", "--dir", "b", NULL};
  assert_int_equal(
      kvdh_exec(rel, NULL, out, sizeof out, err, sizeof err, 10000), 2);
  assert_non_null(strstr(err, "absolute"));
  const char *full[] = {kvctl_bin(), "-h", hp, "backup", "--dir", path, NULL};
  assert_int_equal(
      kvdh_exec(full, NULL, out, sizeof out, err, sizeof err, 10000), 3);
  assert_non_null(strstr(err, "not empty"));
  IT_END(f);
}

static void test_backup_requires_auth(void **state) {
  IT_BEGIN(f, 30);
  kvdh *a = &f->k[0];
  assert_int_equal(kvdh_prepare(a), 0);
  static char tok[256];
  snprintf(tok, sizeof tok, "%s/token", a->dir);
  write_file(tok, "s3cret\n", 7);
  it_args(a, "--auth-token-file", tok, NULL);
  it_start(a);
  char path[256];
  snprintf(path, sizeof path, "%s/backup", a->dir);
  kvc_conn *c = it_conn(a);
  assert_kvc(kvc_backup(c, path, NULL), KVC_AUTH_REQUIRED);
  kvc_close(c);
  assert_false(exists(path));
  kvc_options o = {0};
  o.token = "s3cret";
  c = it_conn_opts(a, &o);
  assert_kvc(kvc_backup(c, path, NULL), KVC_OK);
  kvc_close(c);
  assert_true(exists(path));
  IT_END(f);
}

/* kvd must exit at start (status 1) with needle in its log. */
static void expect_restore_refused(kvdh *p, const char *needle) {
  int st = kvdh_start_expect_exit(p, 10000);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
    fail_msg("kvd did not refuse to start (status %d)", st);
  if (!kvdh_log_contains(p, needle)) {
    kvdh_dump_log(p);
    fail_msg("kvd's log does not say '%s'", needle);
  }
}

static void test_restore_refusals(void **state) {
  IT_BEGIN(f, 60);
  kvdh *a = &f->k[0], *b = &f->k[1];
  it_start(a);
  kvc_conn *c = it_conn(a);
  put(c, "k", "v", 1);
  static char good[256], partial[256], junk[256];
  snprintf(good, sizeof good, "%s/good", a->dir);
  assert_kvc(kvc_backup(c, good, NULL), KVC_OK);
  kvc_close(c);

  /* A data directory without backup.info: an interrupted backup, or not a
   * backup at all. The data directory is left as it was (absent). */
  assert_int_equal(kvdh_prepare(b), 0);
  snprintf(partial, sizeof partial, "%s/partial", a->dir);
  assert_int_equal(mkdir(partial, 0755), 0);
  char src[512], dst[512];
  snprintf(src, sizeof src, "%s/data.mdb", good);
  snprintf(dst, sizeof dst, "%s/data.mdb", partial);
  assert_int_equal(link(src, dst), 0);
  it_args(b, "--restore", partial, NULL);
  expect_restore_refused(b, "not a complete epikv backup");
  assert_false(exists(b->data));

  /* backup.info present, data.mdb garbage. */
  snprintf(junk, sizeof junk, "%s/junk", a->dir);
  assert_int_equal(mkdir(junk, 0755), 0);
  snprintf(dst, sizeof dst, "%s/backup.info", junk);
  write_file(dst, "epikv-backup 1\n", 15);
  snprintf(dst, sizeof dst, "%s/data.mdb", junk);
  static char garbage[65536];
  memset(garbage, 0x5a, sizeof garbage);
  write_file(dst, garbage, sizeof garbage);
  it_args(b, "--restore", junk, NULL);
  expect_restore_refused(b, "event=restore_failed");
  assert_false(exists(b->data));

  /* A data directory that already holds a store is never overwritten. */
  it_args(b, NULL);
  it_start(b);
  c = it_conn(b);
  put(c, "mine", "kept", 4);
  uint64_t id = replica_id(c);
  kvc_close(c);
  assert_int_equal(kvdh_stop(b, SIGTERM, 10000), 0);
  it_args(b, "--restore", good, NULL);
  expect_restore_refused(b, "not empty");
  it_args(b, NULL);
  it_start(b);
  c = it_conn(b);
  assert_true(replica_id(c) == id);
  kvc_result *r;
  assert_kvc(kvc_get(c, "mine", 4, &r), KVC_OK);
  kvc_result_free(r);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_NOTFOUND);
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_backup_restore_same_reads_fresh_id),
      IT_TEST(test_backup_during_writes_is_a_snapshot),
      IT_TEST(test_backup_refusals),
      IT_TEST(test_backup_requires_auth),
      IT_TEST(test_restore_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
