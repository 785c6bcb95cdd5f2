/*
 * The integration-test harness (see harness.h).
 */
#include "tests/integration/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64

static kvdh *procs[MAX_PROCS];
static int nprocs;

static void cleanup_all(void) {
  while (nprocs > 0)
    kvdh_cleanup(procs[nprocs - 1]);
}

/* Forgets p (its memory may be freed after kvdh_cleanup). */
static void untrack(kvdh *p) {
  for (int i = 0; i < nprocs; i++)
    if (procs[i] == p) {
      procs[i] = procs[--nprocs];
      procs[nprocs] = NULL;
      return;
    }
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

uint64_t kvdh_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void kvdh_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* ---- watchdog ---- */

static const char *watched_test;

/* Async-signal-safe: write, kill, fork, execv, waitpid, _exit only. */
static void on_alarm(int sig) {
  (void)sig;
  static const char a[] = "\nharness: TIMEOUT in ";
  static const char b[] = "; killing kvd and exiting\n";
  (void)!write(2, a, sizeof a - 1);
  if (watched_test) (void)!write(2, watched_test, strlen(watched_test));
  (void)!write(2, b, sizeof b - 1);
  for (int i = 0; i < nprocs; i++) {
    if (!procs[i]) continue;
    if (procs[i]->pid > 0) kill(procs[i]->pid, SIGKILL);
    if (procs[i]->dir[0]) {
      pid_t pid = fork();
      if (pid == 0) {
        static char rm[] = "rm", rf[] = "-rf";
        char *const argv[] = {rm, rf, procs[i]->dir, NULL};
        execv("/bin/rm", argv);
        _exit(127);
      }
      if (pid > 0) waitpid(pid, NULL, 0);
    }
  }
  _exit(1);
}

void kvdh_watchdog(const char *test, unsigned seconds) {
  static bool installed;
  if (!installed) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    /* The tests write to sockets kvd may have closed: an error, not death. */
    signal(SIGPIPE, SIG_IGN);
    installed = true;
  }
  watched_test = test;
  alarm(seconds);
}

/* ---- processes ---- */

static bool read_ports(kvdh *p, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  int n = 0, r = 0, pp = 0, m = 0;
  /* kvd writes the file whole (renamed into place) once it is ready. */
  bool ok = fscanf(f, "native=%d resp=%d peer=%d", &n, &r, &pp) == 3 && n > 0;
  if (ok && fscanf(f, " metrics=%d", &m) != 1) m = 0;
  fclose(f);
  if (ok) {
    p->native_port = n;
    p->resp_port = r;
    p->peer_port = pp;
    p->metrics_port = m;
  }
  return ok;
}

/* The child's signal state as a shell would give it: default actions, no
 * signal blocked (the test process ignores SIGPIPE, and an ignored signal
 * would stay ignored across exec). */
static void child_signals(void) {
  signal(SIGPIPE, SIG_DFL);
  signal(SIGALRM, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  alarm(0);
}

int kvdh_prepare(kvdh *p) {
  track(p);
  if (p->dir[0]) return 0;
  snprintf(p->dir, sizeof p->dir, "/tmp/kvd-it-XXXXXX");
  if (!mkdtemp(p->dir)) {
    perror("mkdtemp");
    p->dir[0] = 0;
    return -1;
  }
  snprintf(p->data, sizeof p->data, "%s/data", p->dir);
  snprintf(p->log, sizeof p->log, "%s/kvd.log", p->dir);
  return 0;
}

static int spawn(kvdh *p, char *ports, size_t portslen) {
  const char *bin = getenv("KVD");
  if (!bin || !*bin) bin = "build/kvd";
  if (kvdh_prepare(p)) return -1;
  snprintf(ports, portslen, "%s/ports", p->dir);
  unlink(ports);
  const char *args[48] = {
      bin,           "--data-dir",    p->data,       "--listen",
      "127.0.0.1:0", "--resp-listen", "127.0.0.1:0", "--peer-listen",
      "127.0.0.1:0", "--ports-file",  ports,         "--segments",
      "256",         "--metrics-listen", "127.0.0.1:0"};
  int na = 15;
  for (int i = 0; p->extra[i] && na < 46; i++)
    args[na++] = p->extra[i];
  args[na] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    child_signals();
    /* If the test process dies without cleaning up (a sanitizer abort, a
     * kill), kvd must not outlive it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 2);
      dup2(fd, 1);
    }
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    execv(bin, (char *const *)args);
    fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  p->pid = pid;
  return 0;
}

int kvdh_start(kvdh *p) {
  char ports[192];
  if (spawn(p, ports, sizeof ports)) return -1;
  for (int i = 0; i < 1000; i++) {
    if (read_ports(p, ports)) return 0;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->pid = 0;
      fprintf(stderr, "harness: kvd exited at start (status %d)\n", st);
      kvdh_dump_log(p);
      return -1;
    }
    kvdh_sleep_ms(10);
  }
  fprintf(stderr, "harness: kvd did not start listening within 10 s\n");
  kvdh_dump_log(p);
  return -1;
}

int kvdh_start_expect_exit(kvdh *p, int timeout_ms) {
  char ports[192];
  if (spawn(p, ports, sizeof ports)) return -1;
  for (int waited = 0; waited <= timeout_ms; waited += 5) {
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->pid = 0;
      return st;
    }
    if (read_ports(p, ports)) {
      fprintf(stderr, "harness: kvd listened although it should refuse\n");
      break;
    }
    kvdh_sleep_ms(5);
  }
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  p->pid = 0;
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
    kvdh_sleep_ms(5);
  }
  kill(p->pid, SIGKILL);
  waitpid(p->pid, NULL, 0);
  p->pid = 0;
  return -1;
}

bool kvdh_alive(kvdh *p, int *status) {
  if (p->pid <= 0) return false;
  int st;
  if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
    p->pid = 0;
    if (status) *status = st;
    return false;
  }
  return true;
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
    if (system(cmd) != 0)
      fprintf(stderr, "harness: cannot remove %s\n", p->dir);
    p->dir[0] = 0;
  }
  untrack(p);
}

void kvdh_dump_log(const kvdh *p) {
  if (!p->dir[0]) return;
  char cmd[256];
  fprintf(stderr, "---- last lines of %s ----\n", p->log);
  fflush(stderr);
  snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", p->log);
  if (system(cmd) != 0) fprintf(stderr, "harness: no log at %s\n", p->log);
}

bool kvdh_log_contains(const kvdh *p, const char *needle) {
  FILE *f = fopen(p->log, "r");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f))
    found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

/* ---- sockets ---- */

void kvdh_set_recv_timeout(int fd, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
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
    ssize_t n = send(fd, c, len, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = write(fd, c, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    c += n;
    len -= (size_t)n;
  }
  return 0;
}

int kvdh_wait_closed(int fd, int timeout_ms) {
  uint64_t end = kvdh_now_ms() + (uint64_t)timeout_ms;
  char buf[65536];
  for (;;) {
    uint64_t now = kvdh_now_ms();
    if (now >= end) return 0;
    struct pollfd pf = {fd, POLLIN, 0};
    int r = poll(&pf, 1, (int)(end - now));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return 1; /* reset */
  }
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

static int read_exact(int fd, void *buf, size_t len) {
  char *b = buf;
  while (len) {
    ssize_t r = read(fd, b, len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b += r;
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
  char line[1024];
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

int kvdh_resp_send(int fd, int argc, const char **argv, const size_t *lens) {
  size_t total = 32;
  for (int i = 0; i < argc; i++)
    total += (lens ? lens[i] : strlen(argv[i])) + 32;
  char *buf = malloc(total);
  size_t n = (size_t)snprintf(buf, total, "*%d\r\n", argc);
  for (int i = 0; i < argc; i++) {
    size_t len = lens ? lens[i] : strlen(argv[i]);
    n += (size_t)snprintf(buf + n, total - n, "$%zu\r\n", len);
    memcpy(buf + n, argv[i], len);
    n += len;
    memcpy(buf + n, "\r\n", 2);
    n += 2;
  }
  int rc = kvdh_write_all(fd, buf, n);
  free(buf);
  return rc;
}

int kvdh_resp(int fd, int argc, const char **argv, const size_t *lens,
              char *out, size_t outlen) {
  if (kvdh_resp_send(fd, argc, argv, lens)) return -1;
  return kvdh_resp_read(fd, out, outlen);
}

int kvdh_frame_write(int fd, const void *body, size_t len) {
  uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
                    (uint8_t)(len >> 8), (uint8_t)len};
  uint8_t *buf = malloc(len + 4);
  memcpy(buf, hdr, 4);
  if (len) memcpy(buf + 4, body, len);
  int rc = kvdh_write_all(fd, buf, len + 4);
  free(buf);
  return rc;
}

int kvdh_frame_read(int fd, size_t max, uint8_t **body, size_t *len) {
  uint8_t hdr[4];
  if (read_exact(fd, hdr, 4)) return -1;
  size_t n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 |
             hdr[3];
  if (n > max) return -1;
  uint8_t *b = malloc(n ? n : 1);
  if (read_exact(fd, b, n)) {
    free(b);
    return -1;
  }
  *body = b;
  *len = n;
  return 0;
}

/* ---- child programs ---- */

const char *kvdh_which(const char *name) {
  static char buf[1024];
  const char *path = getenv("PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *end = strchr(path, ':');
    size_t len = end ? (size_t)(end - path) : strlen(path);
    snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, name);
    if (len && access(buf, X_OK) == 0) return buf;
    path += len + (end ? 1 : 0);
  }
  return NULL;
}

int kvdh_exec(const char *const argv[], const char *stdin_data, char *out,
              size_t outlen, char *err, size_t errlen, int timeout_ms) {
  int in[2], o[2], e[2];
  if (pipe(in) || pipe(o) || pipe(e)) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    child_signals();
    dup2(in[0], 0);
    dup2(o[1], 1);
    dup2(e[1], 2);
    close(in[0]), close(in[1]), close(o[0]), close(o[1]), close(e[0]),
        close(e[1]);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(in[0]), close(o[1]), close(e[1]);
  size_t inlen = stdin_data ? strlen(stdin_data) : 0, inoff = 0;
  int infd = in[1];
  if (inlen == 0)
    close(infd), infd = -1;
  else
    fcntl(infd, F_SETFL, O_NONBLOCK);
  size_t got[2] = {0, 0};
  char *bufs[2] = {out, err};
  size_t caps[2] = {outlen, errlen};
  int fds[2] = {o[0], e[0]};
  if (out && outlen) out[0] = 0;
  if (err && errlen) err[0] = 0;
  uint64_t end = kvdh_now_ms() + (uint64_t)timeout_ms;
  bool timed_out = false;
  while (fds[0] >= 0 || fds[1] >= 0) {
    struct pollfd pf[3];
    int np = 0, idx[3];
    for (int i = 0; i < 2; i++)
      if (fds[i] >= 0)
        pf[np] = (struct pollfd){fds[i], POLLIN, 0}, idx[np++] = i;
    if (infd >= 0) pf[np] = (struct pollfd){infd, POLLOUT, 0}, idx[np++] = 2;
    uint64_t now = kvdh_now_ms();
    if (now >= end) {
      timed_out = true;
      break;
    }
    int r = poll(pf, (nfds_t)np, (int)(end - now));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    for (int k = 0; k < np; k++) {
      if (!pf[k].revents) continue;
      int i = idx[k];
      if (i == 2) {
        ssize_t n = write(infd, stdin_data + inoff, inlen - inoff);
        if (n > 0) inoff += (size_t)n;
        if (n < 0 && errno != EAGAIN) inoff = inlen;
        if (inoff == inlen) close(infd), infd = -1;
        continue;
      }
      char tmp[4096];
      ssize_t n = read(fds[i], tmp, sizeof tmp);
      if (n <= 0) {
        close(fds[i]);
        fds[i] = -1;
        continue;
      }
      if (bufs[i] && caps[i] > got[i] + 1) {
        size_t c =
            (size_t)n < caps[i] - got[i] - 1 ? (size_t)n : caps[i] - got[i] - 1;
        memcpy(bufs[i] + got[i], tmp, c);
        got[i] += c;
        bufs[i][got[i]] = 0;
      }
    }
  }
  if (infd >= 0) close(infd);
  for (int i = 0; i < 2; i++)
    if (fds[i] >= 0) close(fds[i]);
  int st = 0;
  if (timed_out) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fprintf(stderr, "harness: %s timed out after %d ms\n", argv[0], timeout_ms);
    return -1;
  }
  /* Output closed: the program has exited or is about to. */
  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (kvdh_now_ms() >= end) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      return -1;
    }
    kvdh_sleep_ms(2);
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}
