/*
 * Crash test for the store: a child process opens the store with fsync on,
 * runs several submitter threads doing puts and counter increments, and
 * reports each write on a pipe only after the store has acknowledged it. The
 * parent kills the child with SIGKILL at a random moment, reopens the store,
 * and checks that every acknowledged write is present (values among the
 * siblings, counters at least the acknowledged value) and that the persisted
 * Merkle leaves equal a rebuild from the objects. The data directory is kept
 * across rounds, so later rounds re-check everything acknowledged before.
 *
 * Usage: crash_test [rounds]   (default 25; KV_SEED replays kill timings)
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"
#include "tests/unit/testutil.h"

#define THREADS 8
#define LINE 96

static int ack_fd;

typedef struct submitter {
  kv_store *s;
  int round, thread;
} submitter;

/* Writes one report line; a line under PIPE_BUF is written atomically, so
 * lines from different threads never interleave. */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
  char line[LINE];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (write(ack_fd, line, (size_t)n) != n) _exit(3);
}

static void *submit_loop(void *arg) {
  submitter *sb = arg;
  char key[48], val[48], ckey[32];
  snprintf(ckey, sizeof ckey, "ctr-%d", sb->thread);
  for (unsigned seq = 0;; seq++) {
    kv_write w;
    kv_write_init(&w);
    if (seq % 4 == 3) {
      w.op = KV_WRITE_INCR;
      w.key = (const uint8_t *)ckey;
      w.keylen = strlen(ckey);
      w.delta = 1;
      if (kv_store_write_sync(sb->s, &w) != KV_OK) _exit(4);
      report("I %s %lld\n", ckey, (long long)w.counter);
    } else {
      snprintf(key, sizeof key, "k-%d-%d-%u", sb->round, sb->thread, seq);
      snprintf(val, sizeof val, "v-%d-%d-%u", sb->round, sb->thread, seq);
      w.op = KV_WRITE_PUT;
      w.key = (const uint8_t *)key;
      w.keylen = strlen(key);
      w.value = (const uint8_t *)val;
      w.valuelen = strlen(val);
      if (kv_store_write_sync(sb->s, &w) != KV_OK) _exit(4);
      report("P %s %s\n", key, val);
    }
    kv_write_fini(&w);
  }
  return NULL;
}

static _Noreturn void child(const char *dir, int round, int fd) {
  ack_fd = fd;
  kv_store_opts o = kv_store_opts_default();
  o.dir = dir;
  o.segment_bits = 10;
  kv_store *s;
  if (kv_store_open(&o, &s) != KV_OK) _exit(2);
  pthread_t th[THREADS];
  submitter sb[THREADS];
  for (int i = 0; i < THREADS; i++) {
    sb[i] = (submitter){s, round, i};
    pthread_create(&th[i], NULL, submit_loop, &sb[i]);
  }
  for (;;)
    pause();
}

/* What the parent has seen acknowledged, across all rounds. */
typedef struct acked {
  char (*puts)[2][LINE / 2];
  size_t nputs, cap;
  long long ctr[THREADS];
} acked;

static void parse_line(acked *a, const char *line) {
  char k[LINE], v[LINE];
  if (sscanf(line, "P %47s %47s", k, v) == 2) {
    if (a->nputs == a->cap) {
      a->cap = a->cap ? a->cap * 2 : 1024;
      a->puts = realloc(a->puts, a->cap * sizeof *a->puts);
    }
    snprintf(a->puts[a->nputs][0], LINE / 2, "%.47s", k);
    snprintf(a->puts[a->nputs][1], LINE / 2, "%.47s", v);
    a->nputs++;
  } else if (sscanf(line, "I ctr-%47s %47s", k, v) == 2) {
    int t = atoi(k);
    long long n = atoll(v);
    if (t >= 0 && t < THREADS && n > a->ctr[t]) a->ctr[t] = n;
  } else {
    fprintf(stderr, "crash_test: bad report line: %s\n", line);
    exit(1);
  }
}

/* Reads reports until deadline_ms has passed (or EOF), splitting lines. */
static size_t drain(int fd, acked *a, char *buf, size_t *have, int wait_ms) {
  size_t lines = 0;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long el = (now.tv_sec - start.tv_sec) * 1000 +
              (now.tv_nsec - start.tv_nsec) / 1000000;
    int left = wait_ms < 0 ? -1 : (int)(wait_ms - el);
    if (wait_ms >= 0 && left <= 0) break;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t n = read(fd, buf + *have, 8192 - *have);
    if (n <= 0) break;
    *have += (size_t)n;
    char *nl;
    while ((nl = memchr(buf, '\n', *have))) {
      *nl = 0;
      parse_line(a, buf);
      lines++;
      size_t used = (size_t)(nl - buf) + 1;
      memmove(buf, nl + 1, *have - used);
      *have -= used;
    }
  }
  return lines;
}

static int check(const char *dir, const acked *a) {
  kv_store_opts o = kv_store_opts_default();
  o.dir = dir;
  kv_store *s;
  int rc = kv_store_open(&o, &s);
  if (rc) {
    fprintf(stderr, "crash_test: reopen failed: %s\n", kv_strerror(rc));
    return 1;
  }
  int bad = 0;
  for (size_t i = 0; i < a->nputs; i++) {
    kv_object obj;
    const char *k = a->puts[i][0], *v = a->puts[i][1];
    if (kv_store_get(s, k, strlen(k), &obj) != KV_OK) {
      fprintf(stderr, "crash_test: LOST acknowledged put %s\n", k);
      bad++;
      continue;
    }
    const kv_value *vals[8];
    size_t n = kv_object_live_values(&obj, vals, 8);
    bool found = false;
    for (size_t j = 0; j < n && j < 8; j++)
      found |= vals[j]->data.len == strlen(v) &&
               memcmp(vals[j]->data.data, v, strlen(v)) == 0;
    if (!found) {
      fprintf(stderr, "crash_test: LOST value %s of %s\n", v, k);
      bad++;
    }
    kv_object_fini(&obj);
  }
  for (int t = 0; t < THREADS; t++) {
    if (!a->ctr[t]) continue;
    char k[32];
    snprintf(k, sizeof k, "ctr-%d", t);
    kv_object obj;
    int64_t v = 0;
    if (kv_store_get(s, k, strlen(k), &obj) != KV_OK ||
        kv_object_counter_value(&obj, &v) != KV_OK || v < a->ctr[t]) {
      fprintf(stderr, "crash_test: counter %s is %lld < acknowledged %lld\n", k,
              (long long)v, a->ctr[t]);
      bad++;
    }
    kv_object_fini(&obj);
  }
  uint64_t mism = 0;
  if ((rc = kv_store_verify(s, &mism)) != KV_OK) {
    fprintf(stderr, "crash_test: verify: %s (%llu segments)\n", kv_strerror(rc),
            (unsigned long long)mism);
    bad++;
  }
  kv_store_close(s);
  return bad;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 25;
  uint64_t seed = test_seed("crash_test");
  test_rng g = {seed};
  char dir[] = "/tmp/kvcrash-XXXXXX";
  if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
  acked a = {0};
  char buf[8192];
  int failures = 0, done = 0;
  size_t total_lines = 0;

  for (int r = 0; r < rounds && !failures; r++, done++) {
    int fds[2];
    if (pipe(fds)) return perror("pipe"), 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      child(dir, r, fds[1]);
    }
    close(fds[1]);
    size_t have = 0;
    int wait_ms = 20 + (int)test_rng_below(&g, 280);
    size_t lines = drain(fds[0], &a, buf, &have, wait_ms);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* Reports written before the kill are still in the pipe. */
    lines += drain(fds[0], &a, buf, &have, -1);
    close(fds[0]);
    if (!WIFSIGNALED(status)) {
      fprintf(stderr, "crash_test: child exited on its own (status %d)\n",
              status);
      failures++;
      break;
    }
    total_lines += lines;
    int bad = check(dir, &a);
    printf("round %d: killed after %d ms, %zu acks this round, %zu puts "
           "checked, %s\n",
           r + 1, wait_ms, lines, a.nputs, bad ? "FAILED" : "ok");
    failures += bad;
  }
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "crash_test: cleanup failed\n");
  free(a.puts);
  printf("crash_test: %d rounds, %zu acknowledged writes, %s (seed %llu)\n",
         done, total_lines, failures ? "FAILED" : "none lost",
         (unsigned long long)seed);
  return failures ? 1 : 0;
}
