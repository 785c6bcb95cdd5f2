/*
 * The integration-test harness (see harness.h).
 */
#include "tests/integration/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64

static kvdh *procs[MAX_PROCS];
static int nprocs;

static void cleanup_all(void) {
  for (int i = 0; i < nprocs; i++)
    if (procs[i]) kvdh_cleanup(procs[i]);
}

static void track(kvdh *p) {
  static bool hooked;
  if (!hooked) {
    atexit(cleanup_all);
    hooked = true;
  }
  for (int i = 0; i < nprocs; i++)
    if (procs[i] == p) return;
  if (nprocs < MAX_PROCS) procs[nprocs++] = p;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static bool read_ports(kvdh *p, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  int n = 0, r = 0;
  bool ok = fscanf(f, "native=%d resp=%d", &n, &r) == 2 && n > 0;
  fclose(f);
  if (ok) {
    p->native_port = n;
    p->resp_port = r;
  }
  return ok;
}

int kvdh_start(kvdh *p) {
  const char *bin = getenv("KVD");
  if (!bin || !*bin) bin = "build/kvd";
  if (!p->dir[0]) {
    snprintf(p->dir, sizeof p->dir, "/tmp/kvd-it-XXXXXX");
    if (!mkdtemp(p->dir)) {
      perror("mkdtemp");
      return -1;
    }
    snprintf(p->data, sizeof p->data, "%s/data", p->dir);
    snprintf(p->log, sizeof p->log, "%s/kvd.log", p->dir);
  }
  track(p);
  char ports[192];
  snprintf(ports, sizeof ports, "%s/ports", p->dir);
  unlink(ports);
  const char *args[48] = {bin,      "--data-dir",   p->data,
                          "--listen", "127.0.0.1:0", "--resp-listen",
                          "127.0.0.1:0", "--ports-file", ports,
                          "--segments", "256"};
  int na = 11;
  for (int i = 0; p->extra[i] && na < 46; i++) args[na++] = p->extra[i];
  args[na] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 2);
      dup2(fd, 1);
    }
    execv(bin, (char *const *)args);
    fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  p->pid = pid;
  for (int i = 0; i < 1000; i++) {
    if (read_ports(p, ports)) return 0;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      p->pid = 0;
      fprintf(stderr, "harness: kvd exited at start (status %d)\n", st);
      kvdh_dump_log(p);
      return -1;
    }
    sleep_ms(10);
  }
  fprintf(stderr, "harness: kvd did not start listening within 10 s\n");
  kvdh_dump_log(p);
  return -1;
}

int kvdh_stop(kvdh *p, int sig, int timeout_ms) {
  if (p->pid <= 0) return -1;
  kill(p->pid, sig);
  for (int waited = 0; waited <= timeout_ms; waited += 5) {
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->pid = 0;
      return st;
    }
    sleep_ms(5);
  }
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  p->pid = 0;
  return -1;
}

void kvdh_cleanup(kvdh *p) {
  if (p->pid > 0) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
  }
  if (p->dir[0]) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (system(cmd) != 0) fprintf(stderr, "harness: cannot remove %s\n", p->dir);
    p->dir[0] = 0;
  }
}

void kvdh_dump_log(const kvdh *p) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", p->log);
  if (system(cmd) != 0) fprintf(stderr, "harness: no log at %s\n", p->log);
}

int kvdh_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int kvdh_write_all(int fd, const void *p, size_t len) {
  const char *c = p;
  while (len) {
    ssize_t n = write(fd, c, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads one CRLF-terminated line into line (without CRLF). */
static int read_line(int fd, char *line, size_t cap) {
  size_t n = 0;
  for (;;) {
    char ch;
    ssize_t r = read(fd, &ch, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (ch == '\n' && n > 0 && line[n - 1] == '\r') {
      line[n - 1] = 0;
      return 0;
    }
    if (n + 1 < cap) line[n++] = ch;
  }
}

static int read_exact(int fd, char *buf, size_t len) {
  while (len) {
    ssize_t r = read(fd, buf, len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    buf += r;
    len -= (size_t)r;
  }
  return 0;
}

static void append(char *out, size_t outlen, const char *s, size_t n) {
  size_t have = strlen(out);
  if (have + n + 1 > outlen) n = outlen - have - 1;
  memcpy(out + have, s, n);
  out[have + n] = 0;
}

static int read_reply(int fd, char *out, size_t outlen) {
  char line[256];
  if (read_line(fd, line, sizeof line)) return -1;
  switch (line[0]) {
  case '+':
  case ':':
    append(out, outlen, line + 1, strlen(line + 1));
    return 0;
  case '-':
    append(out, outlen, line, strlen(line));
    return 0;
  case '$': {
    long n = atol(line + 1);
    if (n < 0) {
      append(out, outlen, "(nil)", 5);
      return 0;
    }
    char *b = malloc((size_t)n + 2);
    int rc = read_exact(fd, b, (size_t)n + 2);
    if (!rc) append(out, outlen, b, (size_t)n);
    free(b);
    return rc;
  }
  case '*': {
    long n = atol(line + 1);
    if (n < 0) {
      append(out, outlen, "(nil)", 5);
      return 0;
    }
    append(out, outlen, "[", 1);
    for (long i = 0; i < n; i++) {
      if (i) append(out, outlen, ",", 1);
      if (read_reply(fd, out, outlen)) return -1;
    }
    append(out, outlen, "]", 1);
    return 0;
  }
  }
  append(out, outlen, "?", 1);
  append(out, outlen, line, strlen(line));
  return 0;
}

int kvdh_resp_read(int fd, char *out, size_t outlen) {
  out[0] = 0;
  return read_reply(fd, out, outlen);
}

int kvdh_resp(int fd, int argc, const char **argv, const size_t *lens,
              char *out, size_t outlen) {
  char hdr[32];
  int n = snprintf(hdr, sizeof hdr, "*%d\r\n", argc);
  if (kvdh_write_all(fd, hdr, (size_t)n)) return -1;
  for (int i = 0; i < argc; i++) {
    size_t len = lens ? lens[i] : strlen(argv[i]);
    n = snprintf(hdr, sizeof hdr, "$%zu\r\n", len);
    if (kvdh_write_all(fd, hdr, (size_t)n) || kvdh_write_all(fd, argv[i], len) ||
        kvdh_write_all(fd, "\r\n", 2))
      return -1;
  }
  return kvdh_resp_read(fd, out, outlen);
}
