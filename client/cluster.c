/*
 * `kvctl cluster`: creating, starting, stopping and inspecting a local
 * cluster of kvd processes (the layout is described in cluster.h). kvctl keeps
 * no state of its own: each call reads D/cluster.conf and the pid files, acts
 * and exits, and the kvd processes run in sessions of their own so that they
 * outlive the kvctl that started them.
 *
 * Calls that change D hold an exclusive flock on the directory itself, so two
 * kvctl calls on one cluster (a start racing a stop) take turns instead of
 * both acting on the same pid files.
 */
#include "client/cluster.h"

#include "client/kvclient.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* kvctl's exit statuses (DESIGN.md §10). */
enum { EXIT_OK = 0, EXIT_USAGE = 2, EXIT_ERROR = 3 };

#define HOST "127.0.0.1"
#define CLUSTER_NAME "local"
#define DEFAULT_BASE_PORT 7400
#define PORT_STRIDE                                                            \
  10 /* ports per node: native, RESP, peer, metrics, spare                     \
      */
#define MAX_NODES 100
#define PATH_BUF 4096
/* The longest D: every path below it, and every kvd.conf line (kvd reads
 * lines of up to 4096 bytes), must fit. */
#define MAX_DIR 3000
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 15000
#define POLL_MS 100
#define PROBE_TIMEOUT_MS 1000
#define FAIL_LOG_LINES 20
#define DEFAULT_LOG_LINES 20
#define SHORT_ROOT_HEX 16 /* hex digits of the Merkle root in the table */

typedef struct cluster {
  char dir[PATH_BUF]; /* absolute, resolved, no trailing slash */
  int nodes;
  int base_port;
  char name[64]; /* the kvd `cluster` setting */
  int lock_fd;   /* the flock on dir, -1 when not held */
} cluster;

/* ---- messages ---- */

static int report_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int report_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Prints "kvctl: <message>" and returns EXIT_ERROR. */
static int report_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kvctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return EXIT_ERROR;
}

static int report_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kvctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\nTry 'kvctl --help' for usage and examples.\n", stderr);
  return EXIT_USAGE;
}

/* ---- paths and ports ---- */

static void fmt_path(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats a path into a PATH_BUF buffer. MAX_DIR leaves room for every path
 * kvctl builds, so truncation would be a bug here, not bad input. */
static void fmt_path(char *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, PATH_BUF, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= PATH_BUF) {
    fprintf(stderr, "kvctl: internal error: path too long: %s\n", buf);
    abort();
  }
}

/* D/nodeK/FILE, or D/nodeK when file is NULL. */
static void node_path(char *buf, const cluster *c, int k, const char *file) {
  if (file)
    fmt_path(buf, "%s/node%d/%s", c->dir, k, file);
  else
    fmt_path(buf, "%s/node%d", c->dir, k);
}

static int native_port(const cluster *c, int k) {
  return c->base_port + PORT_STRIDE * (k - 1);
}

static bool file_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- small file helpers ---- */

/* A new file (it must not exist), opened for writing with mode. */
static FILE *create_file(const char *path, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return NULL;
  FILE *f = fdopen(fd, "w");
  if (!f) close(fd);
  return f;
}

static int finish_file(FILE *f, const char *path) {
  bool bad = ferror(f) != 0;
  if (fclose(f) != 0 || bad)
    return report_error("writing %s: %s", path, strerror(errno ? errno : EIO));
  return EXIT_OK;
}

/* mkdir -p. */
static int make_dirs(const char *path) {
  char buf[PATH_BUF];
  fmt_path(buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return report_error("creating %s: %s", buf, strerror(errno));
    *p = saved;
    if (!saved) break;
  }
  return EXIT_OK;
}

static bool remove_reported; /* remove_entry has printed an error */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  if (remove(path) == 0 || errno == ENOENT) return 0;
  report_error("removing %s: %s", path, strerror(errno));
  remove_reported = true;
  return -1;
}

/* rm -rf that neither follows symbolic links nor leaves the file system. A
 * path that does not exist is already removed. */
static int remove_tree(const char *path) {
  remove_reported = false;
  if (nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == 0)
    return EXIT_OK;
  if (remove_reported) return EXIT_ERROR;
  if (errno == ENOENT) return EXIT_OK;
  return report_error("removing %s: %s", path, strerror(errno));
}

static bool dir_is_empty(const char *path) {
  DIR *d = opendir(path);
  if (!d) return false;
  struct dirent *e;
  bool empty = true;
  while (empty && (e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      empty = false;
  closedir(d);
  return empty;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  char *e = s + strlen(s);
  while (e > s &&
         (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
    *--e = '\0';
  return s;
}

static bool parse_int(const char *s, long lo, long hi, int *out) {
  if (!*s) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

/* Writes JSON string s to stdout. Bytes of 0x80 and above pass through: the
 * strings are paths and messages, UTF-8 in practice. */
static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20 || ch == 0x7f)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* ---- cluster.conf ---- */

/* Whether nodes and base_port make a cluster whose ports all exist; *msg
 * says why not. */
static bool geometry_ok(int nodes, int base_port, char *msg, size_t msglen) {
  long last = (long)base_port + (long)PORT_STRIDE * (nodes - 1) + 3;
  if (nodes < 1 || nodes > MAX_NODES)
    snprintf(msg, msglen, "a local cluster has 1 to %d nodes, not %d",
             MAX_NODES, nodes);
  else if (base_port < 1 || last > 65535)
    snprintf(msg, msglen,
             "%d nodes from base port %d need ports up to %ld, above 65535",
             nodes, base_port, last);
  else
    return true;
  return false;
}

static int read_cluster_conf(cluster *c) {
  char path[PATH_BUF];
  fmt_path(path, "%s/cluster.conf", c->dir);
  FILE *f = fopen(path, "r");
  if (!f && errno == ENOENT)
    return report_error("%s is not a kvctl cluster directory (it has no "
                        "cluster.conf); 'kvctl cluster up -n N --dir D' "
                        "creates one",
                        c->dir);
  if (!f) return report_error("opening %s: %s", path, strerror(errno));
  c->nodes = 0;
  c->base_port = 0;
  snprintf(c->name, sizeof c->name, "%s", CLUSTER_NAME);
  char line[512];
  int lineno = 0, st = EXIT_OK;
  while (st == EXIT_OK && fgets(line, sizeof line, f)) {
    lineno++;
    char *l = trim(line);
    if (!*l || *l == '#' || *l == ';') continue;
    char *eq = strchr(l, '=');
    if (!eq) {
      st = report_error("%s:%d: expected 'name = value'", path, lineno);
      break;
    }
    *eq = '\0';
    char *name = trim(l), *val = trim(eq + 1);
    if (strcmp(name, "nodes") == 0) {
      if (!parse_int(val, 1, MAX_NODES, &c->nodes))
        st = report_error("%s:%d: nodes must be 1 to %d", path, lineno,
                          MAX_NODES);
    } else if (strcmp(name, "base-port") == 0) {
      if (!parse_int(val, 1, 65535, &c->base_port))
        st = report_error("%s:%d: base-port must be 1 to 65535", path, lineno);
    } else if (strcmp(name, "cluster") == 0) {
      if (!*val || strlen(val) >= sizeof c->name)
        st = report_error("%s:%d: cluster must be 1 to %zu characters", path,
                          lineno, sizeof c->name - 1);
      else
        snprintf(c->name, sizeof c->name, "%s", val);
    } else {
      st = report_error("%s:%d: unknown setting '%s'", path, lineno, name);
    }
  }
  bool bad = ferror(f) != 0;
  fclose(f);
  if (st != EXIT_OK) return st;
  if (bad) return report_error("reading %s failed", path);
  if (!c->nodes || !c->base_port)
    return report_error("%s: nodes and base-port must both be set", path);
  char msg[128];
  if (!geometry_ok(c->nodes, c->base_port, msg, sizeof msg))
    return report_error("%s: %s", path, msg);
  return EXIT_OK;
}

/* Takes the flock on c->dir, waiting (and saying so) if another kvctl holds
 * it. The descriptor is close-on-exec, so kvd never inherits the lock. */
static int lock_cluster(cluster *c) {
  c->lock_fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (c->lock_fd < 0)
    return report_error("opening %s: %s", c->dir, strerror(errno));
  if (flock(c->lock_fd, LOCK_EX | LOCK_NB) == 0) return EXIT_OK;
  if (errno == EWOULDBLOCK) {
    fprintf(stderr, "kvctl: waiting for another kvctl working on %s\n", c->dir);
    if (flock(c->lock_fd, LOCK_EX) == 0) return EXIT_OK;
  }
  return report_error("locking %s: %s", c->dir, strerror(errno));
}

/* Resolves dir into c->dir (which must be short enough for kvd.conf). */
static int resolve_dir(const char *dir, cluster *c) {
  char abs[PATH_MAX];
  if (!realpath(dir, abs)) {
    if (errno == ENOENT)
      return report_error("%s: no such directory ('kvctl cluster up -n N "
                          "--dir D' creates a cluster)",
                          dir);
    return report_error("%s: %s", dir, strerror(errno));
  }
  size_t len = strlen(abs);
  if (len > MAX_DIR)
    return report_error("%s: path longer than %d bytes", dir, MAX_DIR);
  /* kvd.conf holds the path on a line of its own, trimmed of blanks. */
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)abs[i] < 0x20 || abs[i] == 0x7f)
      return report_error("%s: a cluster directory's path must not contain "
                          "control characters",
                          dir);
  if (abs[len - 1] == ' ' || abs[len - 1] == '\t')
    return report_error("%s: a cluster directory's path must not end in a "
                        "blank",
                        dir);
  memcpy(c->dir, abs, len + 1);
  return EXIT_OK;
}

/* Opens the existing cluster in dir: resolves it, locks it if asked, reads
 * cluster.conf. */
static int open_cluster(const char *dir, bool lock, cluster *c) {
  c->lock_fd = -1;
  int st = resolve_dir(dir, c);
  if (st == EXIT_OK && lock) st = lock_cluster(c);
  if (st == EXIT_OK) st = read_cluster_conf(c);
  return st;
}

static void close_cluster(cluster *c) {
  if (c->lock_fd >= 0) close(c->lock_fd);
  c->lock_fd = -1;
}

/* ---- processes ---- */

/* The pid in nodeK/kvd.pid; 0 when there is no file or it holds no pid. */
static pid_t read_pid(const cluster *c, int k) {
  char path[PATH_BUF], buf[32];
  node_path(path, c, k, "kvd.pid");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  int pid;
  return parse_int(trim(buf), 1, INT_MAX, &pid) ? (pid_t)pid : 0;
}

static int write_pid(const cluster *c, int k, pid_t pid) {
  char path[PATH_BUF], tmp[PATH_BUF];
  node_path(path, c, k, "kvd.pid");
  node_path(tmp, c, k, "kvd.pid.tmp");
  unlink(tmp);
  FILE *f = create_file(tmp, 0644);
  if (!f) return report_error("creating %s: %s", tmp, strerror(errno));
  fprintf(f, "%d\n", (int)pid);
  int st = finish_file(f, tmp);
  if (st == EXIT_OK && rename(tmp, path) != 0)
    st = report_error("renaming %s: %s", tmp, strerror(errno));
  if (st != EXIT_OK) unlink(tmp);
  return st;
}

/* Removes nodeK/kvd.pid if it still names pid (a concurrent start may have
 * replaced it). */
static void remove_pid(const cluster *c, int k, pid_t pid) {
  char path[PATH_BUF];
  node_path(path, c, k, "kvd.pid");
  if (read_pid(c, k) == pid || pid == 0) unlink(path);
}

/* Whether pid is node k's kvd: a live process whose argv[0] is a kvd and
 * whose --config is this node's kvd.conf (compared as files, so a relative
 * path given by hand counts too). A zombie has an empty command line and so
 * is not. */
static bool is_node_kvd(const cluster *c, int k, pid_t pid) {
  char path[64], buf[16384 + 1];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char *base = strrchr(buf, '/');
  if (!strstr(base ? base + 1 : buf, "kvd")) return false;
  const char *conf = NULL;
  for (const char *p = buf + strlen(buf) + 1; p < buf + n; p += strlen(p) + 1) {
    const char *next = p + strlen(p) + 1;
    if (strcmp(p, "--config") == 0 && next < buf + n)
      conf = next;
    else if (strncmp(p, "--config=", 9) == 0)
      conf = p + 9;
  }
  if (!conf) return false;
  char ours[PATH_BUF], theirs[PATH_BUF];
  node_path(ours, c, k, "kvd.conf");
  if (conf[0] == '/')
    snprintf(theirs, sizeof theirs, "%s", conf);
  else
    snprintf(theirs, sizeof theirs, "/proc/%d/cwd/%s", (int)pid, conf);
  struct stat a, b;
  return stat(ours, &a) == 0 && stat(theirs, &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

/* The pid of node k's running kvd, or 0. With tidy, a pid file that names
 * no such process is removed (and that is said). */
static pid_t running_pid(const cluster *c, int k, bool tidy) {
  pid_t pid = read_pid(c, k);
  if (pid && is_node_kvd(c, k, pid)) return pid;
  char path[PATH_BUF];
  node_path(path, c, k, "kvd.pid");
  if (tidy && file_exists(path)) {
    unlink(path);
    if (pid)
      printf("node%d: removed a stale pid file (pid %d is not this node's "
             "kvd)\n",
             k, (int)pid);
    else
      printf("node%d: removed an unreadable pid file\n", k);
  }
  return 0;
}

static bool is_executable(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* The kvd to run, as an absolute path: --kvd, else $KVD, else the kvd next to
 * this kvctl, else the first kvd on $PATH. */
static int find_kvd(const char *given, char *out) {
  const char *from = "--kvd ";
  if (!given && getenv("KVD") && *getenv("KVD")) {
    given = getenv("KVD");
    from = "KVD=";
  }
  if (given) {
    if (!realpath(given, out))
      return report_error("%s%s: %s", from, given, strerror(errno));
    if (!is_executable(out))
      return report_error("%s%s: not an executable file", from, given);
    return EXIT_OK;
  }
  char self[PATH_BUF];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = '\0';
      if (strlen(self) + 5 < PATH_BUF) {
        fmt_path(out, "%s/kvd", self);
        if (is_executable(out)) return EXIT_OK;
      }
    }
  }
  const char *path = getenv("PATH");
  for (const char *p = path ? path : ""; *p;) {
    size_t len = strcspn(p, ":");
    char cand[PATH_BUF];
    if (len + 5 < PATH_BUF) {
      snprintf(cand, sizeof cand, "%.*s/kvd", (int)len, len ? p : ".");
      if (is_executable(cand) && realpath(cand, out)) return EXIT_OK;
    }
    p += len;
    if (*p == ':') p++;
  }
  return report_error("cannot find kvd (not next to kvctl, not on PATH); "
                      "give --kvd PATH or set KVD");
}

/* Whether something on this machine already has 127.0.0.1:port (TCP: a
 * listener; UDP: a bound socket). The TCP probe sets SO_REUSEADDR as libuv
 * does, so a port in TIME_WAIT is not taken for busy. */
static bool port_busy(int port, int type) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  if (type == SOCK_STREAM)
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, HOST, &a.sin_addr);
  bool busy =
      bind(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno == EADDRINUSE;
  close(fd);
  return busy;
}

static int check_ports(const cluster *c, int k) {
  static const struct {
    int offset, type;
    const char *what;
  } ports[] = {{0, SOCK_STREAM, "native"},
               {1, SOCK_STREAM, "RESP"},
               {2, SOCK_STREAM, "peer, TCP"},
               {2, SOCK_DGRAM, "peer, UDP"},
               {3, SOCK_STREAM, "metrics"}};
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
    int port = native_port(c, k) + ports[i].offset;
    if (port_busy(port, ports[i].type))
      return report_error("node%d: %s:%d (%s) is already in use by another "
                          "process; stop it, or put a new cluster on another "
                          "--base-port",
                          k, HOST, port, ports[i].what);
  }
  return EXIT_OK;
}

/* What the child tells the parent through the close-on-exec pipe when it
 * cannot exec kvd; silence (end of file) means exec succeeded. */
typedef struct child_failure {
  int step; /* index into child_steps */
  int err;
} child_failure;

static const char *const child_steps[] = {"entering the node directory",
                                          "opening /dev/null",
                                          "opening the log", "running kvd"};

static void child_fail(int fd, int step) __attribute__((noreturn));

static void child_fail(int fd, int step) {
  child_failure f = {step, errno};
  ssize_t n = write(fd, &f, sizeof f);
  (void)n;
  _exit(127);
}

/* In the forked child: a session of its own (no terminal, no signals meant
 * for kvctl's process group), stdin /dev/null, stdout and stderr appended to
 * the log, no other inherited descriptors, then exec kvd. */
static void child_exec(int fd, const char *dir, const char *log,
                       const char *kvd, const char *conf)
    __attribute__((noreturn));

static void child_exec(int fd, const char *dir, const char *log,
                       const char *kvd, const char *conf) {
  setsid();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (chdir(dir) != 0) child_fail(fd, 0);
  int in = open("/dev/null", O_RDONLY);
  if (in < 0 || dup2(in, 0) < 0) child_fail(fd, 1);
  int out = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (out < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) child_fail(fd, 2);
  if (in > 2) close(in);
  if (out > 2) close(out);
  /* Descriptors kvctl inherited (a test harness's pipes, say) must not stay
   * open in a daemon: the harness would wait for their end forever. */
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 65536) maxfd = 65536;
    for (int i = 3; i < maxfd; i++)
      if (i != fd) close(i);
  }
  char *argv[] = {(char *)kvd, (char *)"--config", (char *)conf, NULL};
  execv(kvd, argv);
  child_fail(fd, 3);
}

/* Starts node k's kvd in the background; *pid receives its pid. */
static int spawn_node(const cluster *c, int k, const char *kvd, pid_t *pid) {
  char dir[PATH_BUF], log[PATH_BUF], conf[PATH_BUF];
  node_path(dir, c, k, NULL);
  node_path(log, c, k, "kvd.log");
  node_path(conf, c, k, "kvd.conf");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return report_error("pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t child = fork();
  if (child < 0) {
    close(p[0]);
    close(p[1]);
    return report_error("fork: %s", strerror(errno));
  }
  if (child == 0) child_exec(p[1], dir, log, kvd, conf);
  close(p[1]);
  child_failure f;
  ssize_t n;
  do
    n = read(p[0], &f, sizeof f);
  while (n < 0 && errno == EINTR);
  close(p[0]);
  if (n == (ssize_t)sizeof f) {
    waitpid(child, NULL, 0);
    const char *step = f.step >= 0 && f.step < 4 ? child_steps[f.step] : "?";
    return report_error("node%d: %s (%s): %s", k, step,
                        f.step == 3   ? kvd
                        : f.step == 2 ? log
                                      : dir,
                        strerror(f.err));
  }
  *pid = child;
  return EXIT_OK;
}

/* Prints the last `lines` lines of path that lie at or after byte `from`. */
static void print_tail(FILE *out, const char *path, off_t from, int lines) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= from) {
    fputs("  (nothing in the log)\n", out);
    if (fd >= 0) close(fd);
    return;
  }
  char buf[8192];
  off_t end = st.st_size, pos = end, start = from;
  int seen = 0;
  bool found = false;
  /* Walk back counting newlines; the one ending the last line is not a
   * line of its own. */
  while (pos > from && !found) {
    off_t chunk =
        pos - from < (off_t)sizeof buf ? pos - from : (off_t)sizeof buf;
    pos -= chunk;
    ssize_t n = pread(fd, buf, (size_t)chunk, pos);
    if (n != chunk) break;
    for (off_t i = chunk - 1; i >= 0; i--) {
      if (buf[i] != '\n' || pos + i == end - 1) continue;
      if (++seen == lines) {
        start = pos + i + 1;
        found = true;
        break;
      }
    }
  }
  char last = '\n';
  for (off_t at = start; at < end;) {
    ssize_t n = pread(fd, buf, sizeof buf, at);
    if (n <= 0) break;
    fwrite(buf, 1, (size_t)n, out);
    last = buf[n - 1];
    at += n;
  }
  if (last != '\n') fputc('\n', out);
  close(fd);
}

/* ---- start and stop ---- */

typedef struct launch {
  int k;
  pid_t pid;
  off_t log_from; /* the log's size before the start */
  enum { LAUNCH_WAITING, LAUNCH_UP, LAUNCH_FAILED } state;
  char why[256];
} launch;

typedef enum answer { ANSWER_NONE, ANSWER_OK, ANSWER_WRONG } answer;

/* Whether node k answers a status request, and as itself (ANSWER_WRONG: some
 * other replica holds its port); *err says why not. */
static answer node_answers(const cluster *c, int k, char *err, size_t errlen) {
  kvc_options o = {.connect_timeout_ms = PROBE_TIMEOUT_MS,
                   .io_timeout_ms = PROBE_TIMEOUT_MS};
  kvc_conn *conn = NULL;
  kvc_result *r = NULL;
  int rc = kvc_connect(HOST, native_port(c, k), &o, &conn);
  if (rc == KVC_OK) rc = kvc_status(conn, &r);
  answer ok = ANSWER_NONE;
  if (rc != KVC_OK) {
    snprintf(err, errlen, "%s", kvc_errmsg(conn));
  } else {
    const kvc_status_info *s = kvc_result_status_info(r);
    char want[32];
    snprintf(want, sizeof want, "node%d", k);
    ok = s && strcmp(s->name, want) == 0 ? ANSWER_OK : ANSWER_WRONG;
    if (ok == ANSWER_WRONG)
      snprintf(err, errlen, "%s:%d is answered by a replica named '%s', not %s",
               HOST, native_port(c, k), s ? s->name : "?", want);
  }
  kvc_result_free(r);
  kvc_close(conn);
  return ok;
}

/* Waits until each launched node answers, exits or runs out of time. */
static void wait_started(const cluster *c, launch *l, int n) {
  uint64_t deadline = now_ms() + START_TIMEOUT_MS;
  for (;;) {
    bool waiting = false;
    for (int i = 0; i < n; i++) {
      if (l[i].state != LAUNCH_WAITING) continue;
      int ws;
      if (waitpid(l[i].pid, &ws, WNOHANG) == l[i].pid) {
        l[i].state = LAUNCH_FAILED;
        if (WIFEXITED(ws))
          snprintf(l[i].why, sizeof l[i].why, "kvd exited with status %d",
                   WEXITSTATUS(ws));
        else
          snprintf(l[i].why, sizeof l[i].why, "kvd was killed by signal %d",
                   WTERMSIG(ws));
        remove_pid(c, l[i].k, l[i].pid);
        continue;
      }
      char err[256];
      answer ans = node_answers(c, l[i].k, err, sizeof err);
      if (ans == ANSWER_OK) {
        l[i].state = LAUNCH_UP;
        printf("node%d: started (pid %d) on %s:%d\n", l[i].k, (int)l[i].pid,
               HOST, native_port(c, l[i].k));
      } else if (ans == ANSWER_WRONG) {
        l[i].state = LAUNCH_FAILED;
        snprintf(l[i].why, sizeof l[i].why, "%s", err);
      } else {
        waiting = true;
      }
    }
    if (!waiting) return;
    if (now_ms() >= deadline) break;
    sleep_ms(POLL_MS);
  }
  for (int i = 0; i < n; i++)
    if (l[i].state == LAUNCH_WAITING) {
      l[i].state = LAUNCH_FAILED;
      snprintf(l[i].why, sizeof l[i].why,
               "kvd did not answer on %s:%d within %d s (it is still running "
               "as pid %d; 'kvctl cluster stop' stops it)",
               HOST, native_port(c, l[i].k), START_TIMEOUT_MS / 1000,
               (int)l[i].pid);
    }
}

/* Starts the stopped nodes among only (0: all); running ones are left as
 * they are. */
static int start_nodes(const cluster *c, const char *kvd_arg, int only) {
  launch l[MAX_NODES];
  int n = 0, st = EXIT_OK;
  char kvd[PATH_BUF];
  bool have_kvd = false;
  for (int k = 1; k <= c->nodes; k++) {
    if (only && k != only) continue;
    pid_t pid = running_pid(c, k, true);
    if (pid) {
      printf("node%d: already running (pid %d)\n", k, (int)pid);
      continue;
    }
    if (!have_kvd) {
      if (find_kvd(kvd_arg, kvd) != EXIT_OK) return EXIT_ERROR;
      have_kvd = true;
    }
    char conf[PATH_BUF], log[PATH_BUF];
    node_path(conf, c, k, "kvd.conf");
    node_path(log, c, k, "kvd.log");
    if (access(conf, R_OK) != 0) {
      st = report_error("node%d: %s: %s", k, conf, strerror(errno));
      continue;
    }
    if (check_ports(c, k) != EXIT_OK) {
      st = EXIT_ERROR;
      continue;
    }
    struct stat ls;
    l[n].k = k;
    l[n].log_from = stat(log, &ls) == 0 ? ls.st_size : 0;
    l[n].state = LAUNCH_WAITING;
    l[n].why[0] = '\0';
    if (spawn_node(c, k, kvd, &l[n].pid) != EXIT_OK) {
      st = EXIT_ERROR;
      continue;
    }
    if (write_pid(c, k, l[n].pid) != EXIT_OK) {
      /* A kvd without a pid file could not be stopped by kvctl. */
      kill(l[n].pid, SIGTERM);
      waitpid(l[n].pid, NULL, 0);
      st = EXIT_ERROR;
      continue;
    }
    n++;
  }
  wait_started(c, l, n);
  for (int i = 0; i < n; i++) {
    if (l[i].state != LAUNCH_FAILED) continue;
    char log[PATH_BUF];
    node_path(log, c, l[i].k, "kvd.log");
    st = report_error("node%d did not start: %s; the end of %s:", l[i].k,
                      l[i].why, log);
    print_tail(stderr, log, l[i].log_from, FAIL_LOG_LINES);
  }
  return st;
}

/* Sends SIGTERM to the running nodes among only (0: all) and waits for them
 * to exit. A node still running after STOP_TIMEOUT_MS is an error; kvctl
 * does not escalate to SIGKILL, which could cut off writes being flushed. */
static int stop_nodes(const cluster *c, int only) {
  struct {
    int k;
    pid_t pid;
    bool done;
  } s[MAX_NODES];
  int n = 0, st = EXIT_OK;
  for (int k = 1; k <= c->nodes; k++) {
    if (only && k != only) continue;
    pid_t pid = running_pid(c, k, true);
    if (!pid) {
      printf("node%d: not running\n", k);
      continue;
    }
    if (kill(pid, SIGTERM) != 0 && errno != ESRCH) {
      st = report_error("node%d: kill %d: %s", k, (int)pid, strerror(errno));
      continue;
    }
    s[n].k = k;
    s[n].pid = pid;
    s[n].done = false;
    n++;
  }
  uint64_t deadline = now_ms() + STOP_TIMEOUT_MS;
  for (;;) {
    bool waiting = false;
    for (int i = 0; i < n; i++) {
      if (s[i].done) continue;
      if (is_node_kvd(c, s[i].k, s[i].pid)) {
        waiting = true;
        continue;
      }
      s[i].done = true;
      remove_pid(c, s[i].k, s[i].pid);
      printf("node%d: stopped (pid %d)\n", s[i].k, (int)s[i].pid);
    }
    if (!waiting || now_ms() >= deadline) break;
    sleep_ms(POLL_MS);
  }
  for (int i = 0; i < n; i++)
    if (!s[i].done)
      st = report_error("node%d (pid %d) is still running %d s after SIGTERM; "
                        "see its log, run stop again, or kill -KILL %d",
                        s[i].k, (int)s[i].pid, STOP_TIMEOUT_MS / 1000,
                        (int)s[i].pid);
  return st;
}

/* ---- creating a cluster ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int write_key(const cluster *c) {
  uint8_t key[32];
  size_t got = 0;
  while (got < sizeof key) {
    ssize_t n = getrandom(key + got, sizeof key - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return report_error("getrandom: %s", strerror(errno));
    got += (size_t)n;
  }
  char text[48], *o = text;
  for (size_t i = 0; i < sizeof key; i += 3) {
    uint32_t v = (uint32_t)key[i] << 16;
    if (i + 1 < sizeof key) v |= (uint32_t)key[i + 1] << 8;
    if (i + 2 < sizeof key) v |= key[i + 2];
    *o++ = b64_alphabet[v >> 18 & 63];
    *o++ = b64_alphabet[v >> 12 & 63];
    *o++ = i + 1 < sizeof key ? b64_alphabet[v >> 6 & 63] : '=';
    *o++ = i + 2 < sizeof key ? b64_alphabet[v & 63] : '=';
  }
  *o = '\0';
  memset(key, 0, sizeof key);
  char path[PATH_BUF];
  fmt_path(path, "%s/cluster.key", c->dir);
  FILE *f = create_file(path, 0600);
  if (!f) return report_error("creating %s: %s", path, strerror(errno));
  fprintf(f, "%s\n", text);
  return finish_file(f, path);
}

static int write_node_conf(const cluster *c, int k) {
  char dir[PATH_BUF], data[PATH_BUF], path[PATH_BUF];
  node_path(dir, c, k, NULL);
  node_path(data, c, k, "data");
  node_path(path, c, k, "kvd.conf");
  if (mkdir(dir, 0755) != 0)
    return report_error("creating %s: %s", dir, strerror(errno));
  if (mkdir(data, 0700) != 0)
    return report_error("creating %s: %s", data, strerror(errno));
  FILE *f = create_file(path, 0644);
  if (!f) return report_error("creating %s: %s", path, strerror(errno));
  int port = native_port(c, k);
  fprintf(f,
          "# node%d of the local cluster in %s, written by kvctl cluster up.\n"
          "# Ports: native %d, RESP %d, peer %d (TCP and UDP), metrics %d "
          "(HTTP: /metrics, /health).\n"
          "name = node%d\n"
          "data-dir = %s\n"
          "listen = %s:%d\n"
          "resp-listen = %s:%d\n"
          "peer-listen = %s:%d\n"
          "metrics-listen = %s:%d\n"
          "cluster = %s\n"
          "cluster-key-file = %s/cluster.key\n",
          k, c->dir, port, port + 1, port + 2, port + 3, k, data, HOST, port,
          HOST, port + 1, HOST, port + 2, HOST, port + 3, c->name, c->dir);
  if (c->nodes > 1) {
    fputs("join = ", f);
    for (int j = 1, first = 1; j <= c->nodes; j++) {
      if (j == k) continue;
      fprintf(f, "%s%s:%d", first ? "" : ",", HOST, native_port(c, j) + 2);
      first = 0;
    }
    fputc('\n', f);
  }
  return finish_file(f, path);
}

/* cluster.conf goes in last, through a rename: a directory that has one is
 * complete. */
static int write_cluster_conf(const cluster *c) {
  char path[PATH_BUF], tmp[PATH_BUF];
  fmt_path(path, "%s/cluster.conf", c->dir);
  fmt_path(tmp, "%s/cluster.conf.tmp", c->dir);
  FILE *f = create_file(tmp, 0644);
  if (!f) return report_error("creating %s: %s", tmp, strerror(errno));
  fprintf(f,
          "# A local epikv cluster managed by kvctl ('kvctl cluster status "
          "--dir %s').\n"
          "# Node K lives in nodeK/ and listens on base-port + 10(K-1) "
          "(native), +1 (RESP),\n"
          "# +2 (peer), +3 (metrics, reserved).\n"
          "nodes = %d\n"
          "base-port = %d\n"
          "cluster = %s\n",
          c->dir, c->nodes, c->base_port, c->name);
  int st = finish_file(f, tmp);
  if (st == EXIT_OK && rename(tmp, path) != 0)
    st = report_error("renaming %s: %s", tmp, strerror(errno));
  return st;
}

/* Removes what a failed creation wrote, so that D is as it was. */
static void undo_create(const cluster *c, bool made_dir) {
  char path[PATH_BUF];
  static const char *const files[] = {"cluster.key", "cluster.conf.tmp",
                                      "cluster.conf"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    fmt_path(path, "%s/%s", c->dir, files[i]);
    unlink(path);
  }
  for (int k = 1; k <= c->nodes; k++) {
    node_path(path, c, k, NULL);
    (void)remove_tree(path);
  }
  if (made_dir) rmdir(c->dir);
}

static int create_cluster(cluster *c, bool made_dir) {
  int st = write_key(c);
  for (int k = 1; st == EXIT_OK && k <= c->nodes; k++)
    st = write_node_conf(c, k);
  if (st == EXIT_OK) st = write_cluster_conf(c);
  if (st != EXIT_OK) {
    undo_create(c, made_dir);
    return st;
  }
  printf("created a %d-node cluster in %s (ports %d-%d, key in "
         "cluster.key)\n",
         c->nodes, c->dir, c->base_port, native_port(c, c->nodes) + 3);
  return EXIT_OK;
}

/* ---- subcommands ---- */

static int cmd_up(const kvctl_cluster_args *a, cluster *c) {
  char conf[PATH_BUF];
  struct stat st;
  bool exists = stat(a->dir, &st) == 0;
  if (!exists && errno != ENOENT)
    return report_error("%s: %s", a->dir, strerror(errno));
  if (exists && !S_ISDIR(st.st_mode))
    return report_error("%s exists and is not a directory", a->dir);
  bool made_dir = false;
  if (!exists) {
    /* Check what creating needs before leaving a directory behind. */
    if (!a->nodes)
      return report_usage("cluster up: -n N is needed to create a cluster in "
                          "%s",
                          a->dir);
    char msg[128];
    int bp = a->base_port ? a->base_port : DEFAULT_BASE_PORT;
    if (!geometry_ok(a->nodes, bp, msg, sizeof msg))
      return report_usage("cluster up: %s", msg);
    if (strlen(a->dir) > MAX_DIR)
      return report_error("%s: path longer than %d bytes", a->dir, MAX_DIR);
    int rc = make_dirs(a->dir);
    if (rc != EXIT_OK) return rc;
    made_dir = true;
  }
  c->lock_fd = -1;
  int rc = resolve_dir(a->dir, c);
  if (rc == EXIT_OK) rc = lock_cluster(c);
  if (rc != EXIT_OK) {
    if (made_dir) rmdir(a->dir);
    return rc;
  }
  fmt_path(conf, "%s/cluster.conf", c->dir);
  if (file_exists(conf)) {
    rc = read_cluster_conf(c);
    if (rc != EXIT_OK) return rc;
    if (a->nodes && a->nodes != c->nodes)
      return report_usage("cluster up: %s holds a %d-node cluster, not %d "
                          "(leave out -n)",
                          c->dir, c->nodes, a->nodes);
    if (a->base_port && a->base_port != c->base_port)
      return report_usage("cluster up: %s uses base port %d, not %d (leave "
                          "out --base-port)",
                          c->dir, c->base_port, a->base_port);
  } else {
    if (!dir_is_empty(c->dir))
      return report_error("%s exists and is not a kvctl cluster directory (no "
                          "cluster.conf); give a new or an empty directory",
                          c->dir);
    if (!a->nodes)
      return report_usage("cluster up: -n N is needed to create a cluster in "
                          "%s",
                          c->dir);
    c->nodes = a->nodes;
    c->base_port = a->base_port ? a->base_port : DEFAULT_BASE_PORT;
    snprintf(c->name, sizeof c->name, "%s", CLUSTER_NAME);
    char msg[128];
    if (!geometry_ok(c->nodes, c->base_port, msg, sizeof msg))
      return report_usage("cluster up: %s", msg);
    /* A cluster that could not start for want of a kvd is not worth
     * leaving behind. */
    char kvd[PATH_BUF];
    if (find_kvd(a->kvd, kvd) != EXIT_OK) {
      if (made_dir) rmdir(c->dir);
      return EXIT_ERROR;
    }
    rc = create_cluster(c, made_dir);
    if (rc != EXIT_OK) return rc;
  }
  rc = start_nodes(c, a->kvd, 0);
  if (rc != EXIT_OK) return rc;
  printf("cluster '%s' is up: %d node%s in %s\n"
         "  kvctl -h %s:%d put greeting hello\n"
         "  kvctl cluster status --dir %s\n"
         "  kvctl cluster down --dir %s\n",
         c->name, c->nodes, c->nodes == 1 ? "" : "s", c->dir, HOST,
         c->base_port, a->dir, a->dir);
  return EXIT_OK;
}

typedef struct node_row {
  pid_t pid; /* 0: stopped */
  bool answered;
  uint64_t keys;
  char root[129]; /* hex */
  char err[256];
} node_row;

static int cmd_status(const kvctl_cluster_args *a, const cluster *c) {
  node_row rows[MAX_NODES];
  int running = 0, answered = 0;
  for (int k = 1; k <= c->nodes; k++) {
    node_row *r = &rows[k - 1];
    memset(r, 0, sizeof *r);
    r->pid = running_pid(c, k, false);
    if (!r->pid) continue;
    running++;
    kvc_options o = {.connect_timeout_ms = PROBE_TIMEOUT_MS,
                     .io_timeout_ms = PROBE_TIMEOUT_MS};
    kvc_conn *conn = NULL;
    kvc_result *res = NULL;
    int rc = kvc_connect(HOST, native_port(c, k), &o, &conn);
    if (rc == KVC_OK) rc = kvc_status(conn, &res);
    const kvc_status_info *s = rc == KVC_OK ? kvc_result_status_info(res) : 0;
    if (s) {
      r->answered = true;
      r->keys = s->keys;
      size_t len = s->merkle_root_len < 64 ? s->merkle_root_len : 64;
      for (size_t i = 0; i < len; i++)
        snprintf(r->root + 2 * i, 3, "%02x", s->merkle_root[i]);
      answered++;
    } else {
      snprintf(r->err, sizeof r->err, "%s",
               rc != KVC_OK ? kvc_errmsg(conn) : "no status in the answer");
    }
    kvc_result_free(res);
    kvc_close(conn);
  }
  /* Converged replicas have equal roots: compare each with the first. */
  bool roots_agree = answered > 0;
  const char *ref = NULL;
  for (int i = 0; i < c->nodes; i++) {
    if (!rows[i].answered) continue;
    if (!ref) ref = rows[i].root;
    if (strcmp(ref, rows[i].root) != 0) roots_agree = false;
  }
  if (a->json) {
    fputs("{\"dir\":", stdout);
    json_str(c->dir);
    fputs(",\"cluster\":", stdout);
    json_str(c->name);
    printf(",\"base_port\":%d,\"nodes\":[", c->base_port);
    for (int k = 1; k <= c->nodes; k++) {
      const node_row *r = &rows[k - 1];
      int port = native_port(c, k);
      printf("%s{\"node\":%d,\"name\":\"node%d\",", k > 1 ? "," : "", k, k);
      if (r->pid)
        printf("\"pid\":%d,", (int)r->pid);
      else
        fputs("\"pid\":null,", stdout);
      printf("\"state\":\"%s\",\"native_port\":%d,\"resp_port\":%d,"
             "\"peer_port\":%d,\"metrics_port\":%d",
             r->pid ? "running" : "stopped", port, port + 1, port + 2,
             port + 3);
      if (r->answered)
        printf(",\"keys\":%" PRIu64 ",\"merkle_root\":\"%s\"", r->keys,
               r->root);
      else if (r->pid) {
        fputs(",\"error\":", stdout);
        json_str(r->err);
      }
      putchar('}');
    }
    printf("],\"running\":%d,\"roots_agree\":%s}\n", running,
           roots_agree ? "true" : "false");
    return EXIT_OK;
  }
  printf("%-7s %-8s %-8s %-6s %-6s %-6s %-7s %-10s %s\n", "NODE", "PID",
         "STATE", "NATIVE", "RESP", "PEER", "METRICS", "KEYS", "MERKLE ROOT");
  for (int k = 1; k <= c->nodes; k++) {
    const node_row *r = &rows[k - 1];
    int port = native_port(c, k);
    char node[16], pid[16], keys[24];
    snprintf(node, sizeof node, "node%d", k);
    snprintf(pid, sizeof pid, "%d", (int)r->pid);
    snprintf(keys, sizeof keys, "%" PRIu64, r->keys);
    printf("%-7s %-8s %-8s %-6d %-6d %-6d %-7d ", node, r->pid ? pid : "-",
           r->pid ? "running" : "stopped", port, port + 1, port + 2, port + 3);
    if (r->answered)
      printf("%-10s %.*s\n", keys, SHORT_ROOT_HEX, r->root);
    else if (r->pid)
      printf("%-10s (no answer: %s)\n", "?", r->err);
    else
      printf("%-10s -\n", "-");
  }
  printf("%d of %d node%s running", running, c->nodes,
         c->nodes == 1 ? "" : "s");
  if (answered < running) printf(", %d not answering", running - answered);
  if (answered > 1)
    printf("; Merkle roots %s", roots_agree ? "agree" : "differ");
  putchar('\n');
  return EXIT_OK;
}

static int cmd_logs(const kvctl_cluster_args *a, const cluster *c) {
  int lines = a->lines ? a->lines : DEFAULT_LOG_LINES;
  bool first = true;
  for (int k = 1; k <= c->nodes; k++) {
    if (a->node && k != a->node) continue;
    char log[PATH_BUF];
    node_path(log, c, k, "kvd.log");
    printf("%s==> node%d: %s <==\n", first ? "" : "\n", k, log);
    first = false;
    fflush(stdout);
    if (file_exists(log))
      print_tail(stdout, log, 0, lines);
    else
      puts("  (no log yet: the node has never been started)");
  }
  return EXIT_OK;
}

static int cmd_down(const kvctl_cluster_args *a, const cluster *c) {
  int st = stop_nodes(c, 0);
  if (st != EXIT_OK || !a->purge) return st;
  if (remove_tree(c->dir) != EXIT_OK)
    return report_error("could not remove all of %s", c->dir);
  printf("removed %s\n", c->dir);
  return EXIT_OK;
}

int kvctl_cluster_run(const kvctl_cluster_args *a) {
  if (!a->dir || !*a->dir)
    return report_usage("cluster %s needs --dir D (the cluster's directory)",
                        a->sub);
  cluster c;
  memset(&c, 0, sizeof c);
  c.lock_fd = -1;
  int st;
  if (strcmp(a->sub, "up") == 0) {
    st = cmd_up(a, &c);
    close_cluster(&c);
    return st;
  }
  bool changes = strcmp(a->sub, "status") != 0 && strcmp(a->sub, "logs") != 0;
  st = open_cluster(a->dir, changes, &c);
  if (st == EXIT_OK && a->node > c.nodes)
    st = report_usage("--node %d: %s has nodes 1 to %d", a->node, c.dir,
                      c.nodes);
  if (st == EXIT_OK) {
    if (strcmp(a->sub, "start") == 0)
      st = start_nodes(&c, a->kvd, a->node);
    else if (strcmp(a->sub, "stop") == 0)
      st = stop_nodes(&c, a->node);
    else if (strcmp(a->sub, "status") == 0)
      st = cmd_status(a, &c);
    else if (strcmp(a->sub, "logs") == 0)
      st = cmd_logs(a, &c);
    else if (strcmp(a->sub, "down") == 0)
      st = cmd_down(a, &c);
    else
      st = report_usage("unknown cluster command '%s'", a->sub);
  }
  close_cluster(&c);
  return st;
}
