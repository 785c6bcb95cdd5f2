/*
 * chaos: a Jepsen-style test of real kvd replicas (reliability.md §1, §6, §7).
 * tests/chaos/chaos.sh puts N network namespaces on a bridge; this program
 * runs one kvd (--sync always) in each, drives client threads through random
 * replicas, and plays a seeded nemesis: partitions, packet loss (nftables),
 * kill -9 and restart, SIGSTOP and SIGCONT. Every write is recorded with its
 * outcome: acknowledged, refused (the replica said no: nothing applied) or
 * indeterminate (no answer: it may or may not have been applied).
 *
 * After the faults are healed and every replica has the same Merkle root, the
 * checker reads every key on every replica and holds the reads to the history,
 * as tests/sim/check.c does with the simulator: identical reads everywhere;
 * every acknowledged value present unless a context-carrying write whose read
 * saw it was acknowledged (then it must be gone: back after a delete is a
 * resurrection); no value that was never written or was refused; each counter
 * within [acknowledged sum + indeterminate decrements, acknowledged sum +
 * indeterminate increments]. G-counters are also watched while the run goes
 * on: on one replica their value may never go down, kills included.
 *
 * Crash rounds: kill -9 a replica under load (its writer thread is then in a
 * group commit or about to be), check its LMDB file with `kvd --verify`,
 * restart it alone (no --join, no anti-entropy, no rumors, its namespace cut
 * off by nftables), and read back everything it acknowledged before any peer
 * could repair it. --self-test then breaks the checker's inputs on purpose and
 * requires the checker to notice each time.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/kvclient.h"

#define MAXN 9
#define NREG 256 /* register keys r000..r255 */
#define NPN 8    /* PN-counter keys p0..p7 */
#define NG 8     /* G-counter keys g0..g7 */
#define NCTR (NPN + NG)
#define MAXSIB 128 /* above the server's default cap of 100 siblings */
#define NATIVE_PORT 7400
#define PEER_PORT 7402
#define SHOW 8 /* detail lines printed per kind of finding */

static const char usage_text[] =
    "usage: chaos --ns-prefix P --dir D --kvd PATH [options]\n"
    "\n"
    "Normally started by tests/chaos/chaos.sh, which creates the network\n"
    "namespaces P1..PN (addresses SUBNET.1..SUBNET.N on one bridge) and the\n"
    "cluster key D/cluster.key.\n"
    "\n"
    "  --nodes N         replicas (default 5, at most 9)\n"
    "  --subnet A.B.C    the namespaces' /24 (default 10.78.0)\n"
    "  --seconds S       length of the nemesis phase (default 60)\n"
    "  --kills K         crash rounds: kill -9 under load, read back (default "
    "20)\n"
    "  --seed X          the nemesis schedule's seed (default: from the "
    "clock)\n"
    "  --clients C       client threads (default 4)\n"
    "  --rate R          client operations per second in all (default 200)\n"
    "  --timeout MS      client I/O timeout (default 2000)\n"
    "  --converge S      longest wait for identical roots (default 180)\n"
    "  --self-test       only a short calm run, then the broken-input rounds\n"
    "                    (they also follow every normal run)\n";

static struct {
  int n;
  const char *prefix, *subnet, *dir, *kvd;
  int seconds, kills, clients, rate, io_timeout_ms, converge_s;
  uint64_t seed;
  bool self_test;
} cfg = {.n = 5,
         .subnet = "10.78.0",
         .seconds = 60,
         .kills = 20,
         .clients = 4,
         .rate = 200,
         .io_timeout_ms = 2000,
         .converge_s = 180};

/* ---- small helpers ---- */

static uint64_t t0_ms;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* One line on stdout, prefixed with the time since the start. Lines from
 * different threads never interleave: each is one fputs of one buffer. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[1024];
  int k = snprintf(line, sizeof line, "chaos: %6.1fs ",
                   (double)(now_ms() - t0_ms) / 1000.0);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + k, sizeof line - (size_t)k - 1, fmt, ap);
  va_end(ap);
  strcat(line, "\n");
  fputs(line, stdout);
  fflush(stdout);
}

static void kill_all(void);

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  say("FAIL: %s", msg);
  exit(1);
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) {
    fputs("chaos: out of memory\n", stderr);
    abort();
  }
  return p;
}

/* splitmix64: the nemesis and each client thread have their own stream. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n) { return rnd(s) % n; }

/* ---- replicas: processes, namespaces, nftables ---- */

typedef struct node {
  char ns[64], name[16], addr[32];
  char data[PATH_MAX], log[PATH_MAX];
  int nsfd;            /* /run/netns/<ns>, for setns */
  pid_t pid;           /* 0 while down */
  bool paused;         /* SIGSTOPped */
  atomic_int gen;      /* bumped at every start: older connections are stale */
  atomic_bool usable;  /* clients may send to it */
  atomic_int inflight; /* client operations under way on it */
} node;

static node nodes[MAXN];
static int root_nsfd; /* this program's own network namespace */
static char keyfile[PATH_MAX];

enum { START_JOIN, START_ALONE };

/* Connects to node i's native port, 127.0.0.1 inside its namespace: the
 * calling thread enters the namespace for the socket() and returns to its
 * own at once (a socket stays in the namespace it was made in). The caller
 * frees *out with kvc_close whatever the result. */
static int ns_connect(int i, int io_timeout_ms, kvc_conn **out) {
  kvc_options o = {.connect_timeout_ms = 1000, .io_timeout_ms = io_timeout_ms};
  if (setns(nodes[i].nsfd, CLONE_NEWNET) != 0)
    die("setns %s: %s", nodes[i].ns, strerror(errno));
  int rc = kvc_connect("127.0.0.1", NATIVE_PORT, &o, out);
  if (setns(root_nsfd, CLONE_NEWNET) != 0)
    die("setns back: %s", strerror(errno));
  return rc;
}

/* Runs argv (execvp) inside node i's namespace (i < 0: this one), feeding
 * input on stdin and sending its output to node i's log. Returns the exit
 * status as waitpid gives it. */
static int run_in_ns(int i, const char *const argv[], const char *input) {
  int in[2];
  /* Close-on-exec, so the child's stdin sees EOF once we close our end. */
  if (pipe2(in, O_CLOEXEC) != 0) die("pipe: %s", strerror(errno));
  int logfd = open(i >= 0 ? nodes[i].log : "/dev/null",
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    if (i >= 0 && setns(nodes[i].nsfd, CLONE_NEWNET) != 0) _exit(126);
    dup2(in[0], 0);
    if (logfd >= 0) dup2(logfd, 1), dup2(logfd, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(in[0]);
  if (logfd >= 0) close(logfd);
  size_t len = input ? strlen(input) : 0, off = 0;
  while (off < len) {
    ssize_t w = write(in[1], input + off, len - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  close(in[1]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

/* Node i's firewall, replacing whatever it had: drop what it receives from
 * the nodes in the mask `drop` (every node drops what comes from the other
 * side, so a cut is symmetric), drop loss% of everything it receives on the
 * bridge, or with `cut` drop everything in and out on the bridge. Client
 * traffic runs on the namespace's loopback and is never touched. */
static void set_net(int i, unsigned drop, int loss, bool cut) {
  char r[2048], set[512] = "";
  int k = snprintf(r, sizeof r,
                   "table inet chaos\ndelete table inet chaos\n"
                   "table inet chaos {\n chain input {\n"
                   "  type filter hook input priority 0; policy accept;\n");
  for (int j = 0; j < cfg.n; j++)
    if (drop & (1u << j))
      snprintf(set + strlen(set), sizeof set - strlen(set), "%s%s",
               set[0] ? ", " : "", nodes[j].addr);
  if (cut)
    k += snprintf(r + k, sizeof r - (size_t)k, "  iifname \"eth0\" drop\n");
  if (!cut && set[0])
    k += snprintf(r + k, sizeof r - (size_t)k,
                  "  iifname \"eth0\" ip saddr { %s } drop\n", set);
  if (!cut && loss > 0)
    k += snprintf(r + k, sizeof r - (size_t)k,
                  "  iifname \"eth0\" numgen random mod 100 < %d drop\n", loss);
  k += snprintf(r + k, sizeof r - (size_t)k, " }\n");
  if (cut)
    k += snprintf(r + k, sizeof r - (size_t)k,
                  " chain output {\n"
                  "  type filter hook output priority 0; policy accept;\n"
                  "  oifname \"eth0\" drop\n }\n");
  snprintf(r + k, sizeof r - (size_t)k, "}\n");
  const char *argv[] = {"nft", "-f", "-", NULL};
  int st = run_in_ns(i, argv, r);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("nft refused the rules for %s (see its log)", nodes[i].name);
}

static void heal_net(void) {
  for (int i = 0; i < cfg.n; i++)
    set_net(i, 0, 0, false);
}

/* Waits for node i's process to exit, up to ms; SIGKILL after that. */
static int reap(int i, uint64_t ms) {
  int st = 0;
  uint64_t end = now_ms() + ms;
  for (;;) {
    pid_t p = waitpid(nodes[i].pid, &st, WNOHANG);
    if (p == nodes[i].pid) break;
    if (p < 0 && errno != EINTR) break;
    if (now_ms() > end) {
      kill(nodes[i].pid, SIGKILL);
      waitpid(nodes[i].pid, &st, 0);
      st = -1;
      break;
    }
    sleep_ms(5);
  }
  nodes[i].pid = 0;
  nodes[i].paused = false;
  return st;
}

/* Sends sig (SIGKILL or SIGTERM) and reaps. A paused replica is resumed
 * after SIGTERM so it can act on it. Returns the waitpid status. */
static int stop_node(int i, int sig) {
  if (!nodes[i].pid) return 0;
  kill(nodes[i].pid, sig);
  if (nodes[i].paused && sig != SIGKILL) kill(nodes[i].pid, SIGCONT);
  return reap(i, 15000);
}

static void wait_listening(int i) {
  uint64_t end = now_ms() + 20000;
  for (;;) {
    kvc_conn *c = NULL;
    int rc = ns_connect(i, 1000, &c);
    kvc_close(c);
    if (rc == KVC_OK) return;
    int st;
    if (waitpid(nodes[i].pid, &st, WNOHANG) == nodes[i].pid) {
      nodes[i].pid = 0;
      die("kvd %s exited at start (status %d); see %s", nodes[i].name, st,
          nodes[i].log);
    }
    if (now_ms() > end) die("kvd %s does not listen", nodes[i].name);
    sleep_ms(20);
  }
}

/* Starts kvd for node i in its namespace and waits until it listens.
 * START_JOIN: as in production, with every other node as a seed.
 * START_ALONE: no --join, no anti-entropy, no rumors (for read-backs). */
static void start_node(int i, int mode) {
  node *nd = &nodes[i];
  char join[MAXN * 32] = "", peer[48];
  for (int j = 0; j < cfg.n; j++)
    if (j != i)
      snprintf(join + strlen(join), sizeof join - strlen(join), "%s%s:%d",
               join[0] ? "," : "", nodes[j].addr, PEER_PORT);
  snprintf(peer, sizeof peer, "%s:%d", nd->addr, PEER_PORT);
  const char *argv[32];
  int a = 0;
  argv[a++] = cfg.kvd;
  argv[a++] = "--name", argv[a++] = nd->name;
  argv[a++] = "--data-dir", argv[a++] = nd->data;
  argv[a++] = "--listen", argv[a++] = "127.0.0.1:7400";
  argv[a++] = "--resp-listen", argv[a++] = "";
  argv[a++] = "--peer-listen", argv[a++] = peer;
  argv[a++] = "--cluster-key-file", argv[a++] = keyfile;
  argv[a++] = "--sync", argv[a++] = "always";
  if (mode == START_JOIN) {
    argv[a++] = "--join", argv[a++] = join;
  } else {
    argv[a++] = "--anti-entropy", argv[a++] = "no";
    argv[a++] = "--rumors", argv[a++] = "no";
  }
  argv[a] = NULL;
  int logfd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) die("%s: %s", nd->log, strerror(errno));
  dprintf(logfd, "---- chaos: start %s\n",
          mode == START_JOIN ? "(joins)" : "(alone: no join, AE, rumors)");
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    /* Only system calls between fork and exec: other threads may hold
     * locks. */
    if (setns(nd->nsfd, CLONE_NEWNET) != 0) _exit(126);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0), dup2(null, 1), dup2(logfd, 2);
    execv(cfg.kvd, (char *const *)argv);
    _exit(127);
  }
  close(logfd);
  nd->pid = pid;
  nd->paused = false;
  atomic_fetch_add(&nd->gen, 1);
  wait_listening(i);
}

/* A replica that exits without being told to is a failure (a crash). */
static int self_exits;

static void check_alive(void) {
  for (int i = 0; i < cfg.n; i++) {
    int st;
    if (nodes[i].pid > 0 &&
        waitpid(nodes[i].pid, &st, WNOHANG) == nodes[i].pid) {
      self_exits++;
      say("EXITED: kvd %s exited on its own (%s %d); see %s", nodes[i].name,
          WIFSIGNALED(st) ? "signal" : "status",
          WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), nodes[i].log);
      nodes[i].pid = 0;
      nodes[i].paused = false;
      start_node(i, START_JOIN);
    }
  }
}

static void kill_all(void) {
  for (int i = 0; i < cfg.n; i++)
    if (nodes[i].pid > 0) kill(nodes[i].pid, SIGKILL);
}

static void on_signal(int sig) {
  kill_all();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void pause_node(int i) {
  if (nodes[i].pid && !nodes[i].paused) kill(nodes[i].pid, SIGSTOP);
  nodes[i].paused = true;
}

static void resume_node(int i) {
  if (nodes[i].pid && nodes[i].paused) kill(nodes[i].pid, SIGCONT);
  nodes[i].paused = false;
}

/* `kvd --verify` on node i's data directory (kvd stopped): 0 if LMDB
 * opens and the stored Merkle leaves equal a rebuild from the objects. */
static int verify_node(int i) {
  const char *argv[] = {cfg.kvd, "--verify", "--data-dir", nodes[i].data, NULL};
  int st = run_in_ns(i, argv, NULL); /* its output goes to node i's log */
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the history ----
 *
 * One record per write, indexed by its op id. A put's value is
 * "v<id>.<filler>", so every value read names the write that made it. A
 * context write (put or delete) carries the context of a read, and if it is
 * acknowledged it supersedes exactly the values that read returned
 * (DESIGN.md §2.1); an indeterminate one may or may not have. */

/* OP_UPUT: a put to a key of its own, "u<id>" (crash rounds' hammers). */
enum { OP_PUT, OP_CPUT, OP_CDEL, OP_INCR, OP_UPUT };
enum { ST_PENDING, ST_ACKED, ST_FAILED, ST_INDET, ST_OMITTED };
enum { SUP_NONE, SUP_MAYBE, SUP_PUT, SUP_DEL };

typedef struct opinfo {
  uint8_t kind, state, sup;
  int8_t node; /* the replica it was sent to */
  bool seen;   /* some read returned this value */
  uint16_t key;
  int64_t delta;
  uint64_t sup_by;    /* the acknowledged write that superseded this value */
  uint64_t sup_first; /* the first write attempted with a read that saw it */
} opinfo;

typedef struct idvec {
  uint64_t *v;
  size_t n, cap;
} idvec;

typedef struct ctr {
  int64_t acked, indet_pos, indet_neg;
  /* G-counters: the highest value replica i has returned to a completed
   * operation, and to an acknowledged increment. */
  int64_t seen_max[MAXN], acked_max[MAXN];
} ctr;

/* Connection attempts refused or timed out (a killed or paused node):
 * atomic, as the checker connects while it holds H.mu. */
static atomic_uint_fast64_t unreachable;

static struct {
  pthread_mutex_t mu;
  opinfo *ops;
  size_t nops, cap;
  idvec vals[NREG]; /* the puts of each register key */
  idvec uputs;      /* the OP_UPUT writes */
  ctr ctrs[NCTR];   /* p0..p7, then g0..g7 */
  uint64_t writes, acked, failed, indet, reads;
  uint64_t run_unexpected, g_down; /* found while the run went on */
  size_t max_siblings;
} H = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void reg_name(char *out, int k) { snprintf(out, 8, "r%03d", k); }

static void ctr_name(char *out, int c) {
  snprintf(out, 8, "%c%d", c < NPN ? 'p' : 'g', c < NPN ? c : c - NPN);
}

static void idvec_push(idvec *v, uint64_t id) {
  if (v->n == v->cap) {
    v->cap = v->cap ? 2 * v->cap : 16;
    v->v = xrealloc(v->v, v->cap * sizeof *v->v);
  }
  v->v[v->n++] = id;
}

/* The op id a value names, or UINT64_MAX for a value no client wrote. */
static uint64_t value_id(const uint8_t *d, size_t len) {
  if (len < 3 || d[0] != 'v') return UINT64_MAX;
  uint64_t id = 0;
  size_t i = 1;
  for (; i < len && d[i] >= '0' && d[i] <= '9' && i < 20; i++)
    id = id * 10 + (uint64_t)(d[i] - '0');
  return i > 1 && i < len && d[i] == '.' ? id : UINT64_MAX;
}

static opinfo *op_of(uint64_t id) {
  return id < H.nops && H.ops[id].state != ST_OMITTED ? &H.ops[id] : NULL;
}

/* Records a write about to be sent; seen are the values its context saw. */
static uint64_t op_begin(int kind, int key, int node_i, int64_t delta,
                         const uint64_t *seen, size_t nseen) {
  pthread_mutex_lock(&H.mu);
  if (H.nops == H.cap) {
    H.cap = H.cap ? 2 * H.cap : 4096;
    H.ops = xrealloc(H.ops, H.cap * sizeof *H.ops);
  }
  uint64_t id = H.nops++;
  H.ops[id] = (opinfo){.kind = (uint8_t)kind,
                       .state = ST_PENDING,
                       .node = (int8_t)node_i,
                       .key = (uint16_t)key,
                       .delta = delta,
                       .sup_first = UINT64_MAX};
  if (kind == OP_PUT || kind == OP_CPUT) idvec_push(&H.vals[key], id);
  if (kind == OP_UPUT) idvec_push(&H.uputs, id);
  for (size_t i = 0; i < nseen; i++) {
    opinfo *v = op_of(seen[i]);
    if (v && v->sup_first > id) v->sup_first = id;
  }
  H.writes++;
  pthread_mutex_unlock(&H.mu);
  return id;
}

/* The outcome of a call: acknowledged; refused by the replica (nothing was
 * applied); or indeterminate (no answer, or a failure that may have come
 * after the commit). KVC_INVALID also stands for "never sent". */
static int outcome(int rc) {
  switch (rc) {
  case KVC_OK:
    return ST_ACKED;
  case KVC_NOTFOUND:
  case KVC_KEY_TOO_LONG:
  case KVC_VALUE_TOO_LARGE:
  case KVC_WRONG_TYPE:
  case KVC_TOO_MANY_SIBLINGS:
  case KVC_OVERFLOW:
  case KVC_GCOUNTER_DECREMENT:
  case KVC_BAD_CONTEXT:
  case KVC_BAD_REQUEST:
  case KVC_INVALID:
  case KVC_AUTH_REQUIRED:
  case KVC_AUTH_FAILED:
    return ST_FAILED;
  default:
    return ST_INDET;
  }
}

/* Records the outcome of write id (rc from the client library). For a
 * counter, value is what the replica answered and floor what the history
 * held for that replica when the write was sent. */
static void op_end(uint64_t id, int rc, const uint64_t *seen, size_t nseen,
                   int64_t value, int64_t floor) {
  pthread_mutex_lock(&H.mu);
  opinfo *o = &H.ops[id];
  o->state = (uint8_t)outcome(rc);
  H.acked += o->state == ST_ACKED;
  H.failed += o->state == ST_FAILED;
  H.indet += o->state == ST_INDET;
  if (o->kind == OP_CPUT || o->kind == OP_CDEL) {
    for (size_t i = 0; i < nseen; i++) {
      opinfo *v = op_of(seen[i]);
      if (!v) continue;
      if (o->state == ST_ACKED && v->sup != SUP_PUT && v->sup != SUP_DEL) {
        v->sup = o->kind == OP_CDEL ? SUP_DEL : SUP_PUT;
        v->sup_by = id;
      } else if (o->state == ST_INDET && v->sup == SUP_NONE) {
        v->sup = SUP_MAYBE;
      }
    }
  }
  if (o->kind == OP_INCR) {
    ctr *c = &H.ctrs[o->key];
    if (o->state == ST_ACKED) c->acked += o->delta;
    if (o->state == ST_INDET) {
      if (o->delta > 0)
        c->indet_pos += o->delta;
      else
        c->indet_neg += o->delta;
    }
    if (o->state == ST_ACKED && o->key >= NPN) {
      char name[8];
      ctr_name(name, o->key);
      if (value < floor) {
        H.g_down++;
        say("G-COUNTER DOWN: %s: %s answered %" PRId64
            " to an increment, after %" PRId64,
            nodes[o->node].name, name, value, floor);
      }
      if (value > c->seen_max[o->node]) c->seen_max[o->node] = value;
      if (value > c->acked_max[o->node]) c->acked_max[o->node] = value;
    }
  }
  pthread_mutex_unlock(&H.mu);
}

/* A register read on replica i during the run: every value must name a write
 * that was attempted and not refused. */
static void note_read(int i, int key, const uint64_t *ids, size_t n) {
  pthread_mutex_lock(&H.mu);
  H.reads++;
  if (n > H.max_siblings) H.max_siblings = n;
  for (size_t k = 0; k < n; k++) {
    opinfo *v = op_of(ids[k]);
    if (v && v->state != ST_FAILED) {
      v->seen = true;
      continue;
    }
    H.run_unexpected++;
    say("UNEXPECTED: %s: r%03d holds v%" PRIu64 ", %s", nodes[i].name, key,
        ids[k], v ? "a refused write" : "never written");
  }
  pthread_mutex_unlock(&H.mu);
}

static int64_t g_floor(int i, int c) {
  pthread_mutex_lock(&H.mu);
  int64_t f = H.ctrs[c].seen_max[i];
  pthread_mutex_unlock(&H.mu);
  return f;
}

/* A G-counter read on replica i: it may not be below what the replica had
 * returned to an operation completed before this read was sent (floor). */
static bool note_g_read(int i, int c, int64_t value, int64_t floor) {
  pthread_mutex_lock(&H.mu);
  bool ok = value >= floor;
  if (!ok) {
    H.g_down++;
    char name[8];
    ctr_name(name, c);
    say("G-COUNTER DOWN: %s: %s read %" PRId64 ", after %" PRId64,
        nodes[i].name, name, value, floor);
  }
  if (value > H.ctrs[c].seen_max[i]) H.ctrs[c].seen_max[i] = value;
  pthread_mutex_unlock(&H.mu);
  return ok;
}

/* The value ids of a get's result, sorted. */
static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static size_t result_ids(const kvc_result *r, uint64_t *ids) {
  size_t n = kvc_result_siblings(r);
  if (n > MAXSIB) n = MAXSIB;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *d;
    size_t len;
    ids[i] = kvc_result_sibling(r, i, &d, &len) == KVC_OK ? value_id(d, len)
                                                          : UINT64_MAX;
  }
  qsort(ids, n, sizeof *ids, cmp_u64);
  return n;
}

/* ---- clients ---- */

typedef struct client {
  pthread_t th;
  int idx;
  uint64_t rng;
  kvc_conn *conn[MAXN];
  int gen[MAXN];
} client;

static atomic_bool stop_clients;

/* The client's connection to node i, (re)made when broken or made to an
 * earlier process of that node; NULL when it cannot connect. */
static kvc_conn *conn_to(client *c, int i) {
  int g = atomic_load(&nodes[i].gen);
  if (c->conn[i] && (c->gen[i] != g || kvc_conn_error(c->conn[i]) != KVC_OK)) {
    kvc_close(c->conn[i]);
    c->conn[i] = NULL;
  }
  if (!c->conn[i]) {
    if (ns_connect(i, cfg.io_timeout_ms, &c->conn[i]) != KVC_OK) {
      kvc_close(c->conn[i]);
      c->conn[i] = NULL;
      atomic_fetch_add(&unreachable, 1);
      return NULL;
    }
    c->gen[i] = g;
  }
  return c->conn[i];
}

/* Picks a random usable node and counts the operation as under way on it
 * (the crash rounds wait for those to finish). The increment comes before
 * the check, so a node made unusable is never picked after its controller
 * saw no operation under way. */
static int claim(client *c) {
  for (int t = 0; t < 4 * cfg.n; t++) {
    int i = (int)below(&c->rng, (uint64_t)cfg.n);
    atomic_fetch_add(&nodes[i].inflight, 1);
    if (atomic_load(&nodes[i].usable)) return i;
    atomic_fetch_sub(&nodes[i].inflight, 1);
  }
  return -1;
}

static void release(int i) { atomic_fetch_sub(&nodes[i].inflight, 1); }

static size_t make_value(client *c, uint64_t id, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "v%" PRIu64 ".", id);
  size_t len = (size_t)n, fill = below(&c->rng, 25);
  for (size_t i = 0; i < fill && len + 1 < cap; i++)
    buf[len++] = (char)('a' + below(&c->rng, 26));
  return len;
}

static void client_put(client *c, int key) {
  int i = claim(c);
  if (i < 0) return;
  kvc_conn *cn = conn_to(c, i);
  if (cn) {
    char name[8], val[64];
    reg_name(name, key);
    uint64_t id = op_begin(OP_PUT, key, i, 0, NULL, 0);
    size_t vlen = make_value(c, id, val, sizeof val);
    int rc = kvc_put(cn, name, strlen(name), val, vlen, NULL, 0);
    op_end(id, rc, NULL, 0, 0, 0);
  }
  release(i);
}

/* Reads key on a random node, then writes (put or delete) with the context
 * it got on another random node. */
static void client_ctx_write(client *c, int key, int kind) {
  char name[8], val[64];
  reg_name(name, key);
  uint64_t ids[MAXSIB];
  size_t n = 0;
  uint8_t *ctx = NULL;
  size_t ctxlen = 0;
  int i = claim(c);
  if (i < 0) return;
  kvc_conn *cn = conn_to(c, i);
  kvc_result *r = NULL;
  int rc = cn ? kvc_get(cn, name, strlen(name), &r) : KVC_IO;
  if (rc == KVC_OK || rc == KVC_NOTFOUND) {
    n = result_ids(r, ids);
    const uint8_t *d;
    kvc_result_context(r, &d, &ctxlen);
    ctx = xrealloc(NULL, ctxlen);
    memcpy(ctx, d, ctxlen);
    note_read(i, key, ids, n);
  }
  kvc_result_free(r);
  release(i);
  if (!ctx) return;
  int j = claim(c);
  if (j >= 0) {
    cn = conn_to(c, j);
    if (cn) {
      uint64_t id = op_begin(kind, key, j, 0, ids, n);
      if (kind == OP_CPUT) {
        size_t vlen = make_value(c, id, val, sizeof val);
        rc = kvc_put(cn, name, strlen(name), val, vlen, ctx, ctxlen);
      } else {
        rc = kvc_del(cn, name, strlen(name), ctx, ctxlen);
      }
      op_end(id, rc, ids, n, 0, 0);
    }
    release(j);
  }
  free(ctx);
}

static void client_read(client *c, int key) {
  char name[8];
  reg_name(name, key);
  int i = claim(c);
  if (i < 0) return;
  kvc_conn *cn = conn_to(c, i);
  kvc_result *r = NULL;
  int rc = cn ? kvc_get(cn, name, strlen(name), &r) : KVC_IO;
  if (rc == KVC_OK || rc == KVC_NOTFOUND) {
    uint64_t ids[MAXSIB];
    size_t n = result_ids(r, ids);
    note_read(i, key, ids, n);
  }
  kvc_result_free(r);
  release(i);
}

static void client_incr(client *c, int ci) {
  bool g = ci >= NPN;
  int64_t d = g ? 1 + (int64_t)below(&c->rng, 4)
                : (int64_t)below(&c->rng, 8) - 3; /* -3..5 without 0 */
  if (!g && d >= 0) d++;
  char name[8];
  ctr_name(name, ci);
  int i = claim(c);
  if (i < 0) return;
  kvc_conn *cn = conn_to(c, i);
  if (cn) {
    int64_t floor = g ? g_floor(i, ci) : 0, value = 0;
    uint64_t id = op_begin(OP_INCR, ci, i, d, NULL, 0);
    int rc = kvc_incr(cn, name, strlen(name), d, g, &value);
    op_end(id, rc, NULL, 0, value, floor);
  }
  release(i);
}

static void client_read_g(client *c, int ci) {
  char name[8];
  ctr_name(name, ci);
  int i = claim(c);
  if (i < 0) return;
  kvc_conn *cn = conn_to(c, i);
  int64_t floor = g_floor(i, ci);
  kvc_result *r = NULL;
  int rc = cn ? kvc_get(cn, name, strlen(name), &r) : KVC_IO;
  if (rc == KVC_OK || rc == KVC_NOTFOUND)
    note_g_read(i, ci, kvc_result_counter(r), floor);
  kvc_result_free(r);
  release(i);
}

static void *client_main(void *arg) {
  client *c = arg;
  uint64_t gap = (uint64_t)cfg.clients * 1000000 / (uint64_t)cfg.rate; /* µs */
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!atomic_load(&stop_clients)) {
    unsigned p = (unsigned)below(&c->rng, 100);
    int key = (int)below(&c->rng, NREG);
    if (p < 30)
      client_put(c, key);
    else if (p < 50)
      client_ctx_write(c, key, OP_CPUT);
    else if (p < 56)
      client_ctx_write(c, key, OP_CDEL);
    else if (p < 64)
      client_read(c, key);
    else if (p < 84)
      client_incr(c, (int)below(&c->rng, NPN));
    else if (p < 94)
      client_incr(c, NPN + (int)below(&c->rng, NG));
    else
      client_read_g(c, NPN + (int)below(&c->rng, NG));
    /* Paced by the clock; a late operation does not make the next ones
     * hurry. */
    uint64_t ns = (uint64_t)next.tv_nsec + gap * 1000;
    next.tv_sec += (time_t)(ns / 1000000000u);
    next.tv_nsec = (long)(ns % 1000000000u);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > next.tv_sec ||
        (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
      next = now;
    else
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) ==
             EINTR) {
      }
  }
  for (int i = 0; i < cfg.n; i++)
    kvc_close(c->conn[i]);
  return NULL;
}

static client *clients;

static void start_clients(uint64_t seed) {
  atomic_store(&stop_clients, false);
  clients = calloc((size_t)cfg.clients, sizeof *clients);
  for (int k = 0; k < cfg.clients; k++) {
    clients[k].idx = k;
    clients[k].rng = seed ^ (0x1234567ull * (uint64_t)(k + 1));
    if (pthread_create(&clients[k].th, NULL, client_main, &clients[k]) != 0)
      die("pthread_create");
  }
}

static void stop_all_clients(void) {
  atomic_store(&stop_clients, true);
  for (int k = 0; k < cfg.clients; k++)
    pthread_join(clients[k].th, NULL);
  free(clients);
  clients = NULL;
}

/* ---- the checker ---- */

/* The controller's own connections (main thread only). */
static client ctl;

typedef struct findings {
  uint64_t lost, unexpected, stale, resurrected, counter, diverged, roots,
      unreadable;
  uint64_t values_present, values_expected, deleted_keys, recovered;
} findings;

static uint64_t findings_total(const findings *f) {
  return f->lost + f->unexpected + f->stale + f->resurrected + f->counter +
         f->diverged + f->roots + f->unreadable;
}

#define REPORT(counter, ...)                                                   \
  do {                                                                         \
    if ((counter)++ < SHOW) say(__VA_ARGS__);                                  \
  } while (0)

/* Reads key `name` on node i with the controller's connection, retrying a
 * broken connection once. KVC_OK or KVC_NOTFOUND with *r set, else KVC_IO
 * with *r NULL. */
static int ctl_get(int i, const char *name, kvc_result **r) {
  for (int t = 0; t < 2; t++) {
    kvc_conn *cn = conn_to(&ctl, i);
    int rc = cn ? kvc_get(cn, name, strlen(name), r) : KVC_IO;
    if (rc == KVC_OK || rc == KVC_NOTFOUND) return rc;
    kvc_result_free(*r);
    *r = NULL;
  }
  return KVC_IO;
}

static bool node_root(int i, uint8_t root[16]) {
  kvc_conn *cn = conn_to(&ctl, i);
  kvc_result *r = NULL;
  bool ok = cn && kvc_status(cn, &r) == KVC_OK;
  if (ok) {
    const kvc_status_info *s = kvc_result_status_info(r);
    ok = s && s->merkle_root_len == 16;
    if (ok) memcpy(root, s->merkle_root, 16);
  }
  kvc_result_free(r);
  return ok;
}

/* Polls every node's Merkle root until all are equal at two polls in a row
 * half a second apart. Returns the ms until the first of those, or -1. */
static int64_t wait_converged(int timeout_s) {
  uint64_t start = now_ms(), first = 0;
  uint8_t prev[16] = {0};
  bool have_prev = false;
  while (now_ms() - start < (uint64_t)timeout_s * 1000) {
    uint8_t r0[16], ri[16];
    bool same = node_root(0, r0);
    for (int i = 1; same && i < cfg.n; i++)
      same = node_root(i, ri) && memcmp(r0, ri, 16) == 0;
    if (same && have_prev && memcmp(prev, r0, 16) == 0)
      return (int64_t)(first - start);
    have_prev = same;
    if (same) memcpy(prev, r0, 16), first = now_ms();
    sleep_ms(500);
  }
  return -1;
}

/* Checks register key k on every node in mask against the history. */
static void check_register(int k, unsigned mask, findings *f) {
  char name[8];
  reg_name(name, k);
  uint64_t ids[MAXN][MAXSIB];
  size_t n[MAXN];
  int ref = -1;
  for (int i = 0; i < cfg.n; i++) {
    if (!(mask & (1u << i))) continue;
    kvc_result *r = NULL;
    if (ctl_get(i, name, &r) == KVC_IO) {
      REPORT(f->unreadable, "UNREADABLE: %s: get %s failed", nodes[i].name,
             name);
      n[i] = 0;
      continue;
    }
    n[i] = result_ids(r, ids[i]);
    kvc_result_free(r);
    if (ref < 0) {
      ref = i;
    } else if (n[i] != n[ref] ||
               memcmp(ids[i], ids[ref], n[i] * sizeof ids[i][0]) != 0) {
      REPORT(f->diverged, "DIVERGED: %s holds %zu values of %s, %s %zu",
             nodes[i].name, n[i], name, nodes[ref].name, n[ref]);
    }
    for (size_t a = 0; a < n[i]; a++) {
      opinfo *v = op_of(ids[i][a]);
      if (!v || v->state == ST_FAILED || v->kind == OP_INCR || v->key != k) {
        REPORT(f->unexpected, "UNEXPECTED: %s: %s holds v%" PRIu64 ", %s",
               nodes[i].name, name, ids[i][a],
               !v                      ? "never written"
               : v->state == ST_FAILED ? "a refused write"
                                       : "not written to this key");
      } else if (v->sup == SUP_DEL) {
        REPORT(f->resurrected,
               "RESURRECTED: %s: %s holds v%" PRIu64
               ", deleted by acknowledged op %" PRIu64,
               nodes[i].name, name, ids[i][a], v->sup_by);
      } else if (v->sup == SUP_PUT) {
        REPORT(f->stale,
               "STALE: %s: %s holds v%" PRIu64
               ", replaced by acknowledged op %" PRIu64,
               nodes[i].name, name, ids[i][a], v->sup_by);
      } else if (v->state == ST_INDET || v->state == ST_PENDING) {
        f->recovered += i == ref;
      }
    }
    idvec *vs = &H.vals[k];
    bool any_acked = false, live = false;
    for (size_t b = 0; b < vs->n; b++) {
      opinfo *v = &H.ops[vs->v[b]];
      if (v->state == ST_ACKED) any_acked = true;
      if (v->state == ST_ACKED && v->sup == SUP_NONE) {
        live = true;
        f->values_expected++;
        if (bsearch(&vs->v[b], ids[i], n[i], sizeof ids[i][0], cmp_u64)) {
          f->values_present++;
        } else {
          REPORT(f->lost,
                 "LOST: %s: %s lacks v%" PRIu64 " (acknowledged by %s)",
                 nodes[i].name, name, vs->v[b], nodes[v->node].name);
        }
      }
      if (v->state == ST_INDET && v->sup == SUP_NONE) live = true;
    }
    if (i == ref && any_acked && !live && n[i] == 0) f->deleted_keys++;
  }
}

static void check_counter(int c, unsigned mask, findings *f) {
  char name[8];
  ctr_name(name, c);
  ctr *m = &H.ctrs[c];
  int64_t lo = m->acked + m->indet_neg, hi = m->acked + m->indet_pos;
  int64_t v0 = 0;
  int ref = -1;
  for (int i = 0; i < cfg.n; i++) {
    if (!(mask & (1u << i))) continue;
    kvc_result *r = NULL;
    if (ctl_get(i, name, &r) == KVC_IO) {
      REPORT(f->unreadable, "UNREADABLE: %s: get %s failed", nodes[i].name,
             name);
      continue;
    }
    int64_t v = kvc_result_counter(r);
    kvc_result_free(r);
    if (ref < 0)
      ref = i, v0 = v;
    else if (v != v0)
      REPORT(f->diverged, "DIVERGED: %s: %s = %" PRId64 ", %s has %" PRId64,
             nodes[i].name, name, v, nodes[ref].name, v0);
    if (v < lo || v > hi)
      REPORT(f->counter,
             "COUNTER: %s: %s = %" PRId64 ", outside [%" PRId64 ", %" PRId64
             "] (acknowledged %" PRId64 ")",
             nodes[i].name, name, v, lo, hi, m->acked);
  }
}

/* The hammers' keys: one write each, so an acknowledged one must be there
 * with exactly its value, a refused one absent, an indeterminate one either
 * (the same everywhere). */
static void check_uputs(unsigned mask, findings *f) {
  for (size_t u = 0; u < H.uputs.n; u++) {
    uint64_t id = H.uputs.v[u];
    opinfo *o = &H.ops[id];
    char name[24];
    snprintf(name, sizeof name, "u%" PRIu64, id);
    int ref = -1;
    size_t nref = 0;
    for (int i = 0; i < cfg.n; i++) {
      if (!(mask & (1u << i))) continue;
      kvc_result *r = NULL;
      if (ctl_get(i, name, &r) == KVC_IO) {
        REPORT(f->unreadable, "UNREADABLE: %s: get %s failed", nodes[i].name,
               name);
        continue;
      }
      uint64_t ids[MAXSIB];
      size_t n = result_ids(r, ids);
      kvc_result_free(r);
      if (n > 1 || (n == 1 && ids[0] != id) ||
          (n == 1 && o->state == ST_FAILED))
        REPORT(f->unexpected,
               "UNEXPECTED: %s: %s holds %zu values (v%" PRIu64 ")",
               nodes[i].name, name, n, n ? ids[0] : 0);
      if (o->state == ST_ACKED) {
        f->values_expected++;
        if (n == 1 && ids[0] == id)
          f->values_present++;
        else
          REPORT(f->lost,
                 "LOST: %s: %s lacks v%" PRIu64 " (acknowledged by %s)",
                 nodes[i].name, name, id, nodes[o->node].name);
      }
      if (ref < 0) {
        ref = i, nref = n;
        f->recovered += o->state == ST_INDET && n == 1;
      } else if (n != nref) {
        REPORT(f->diverged, "DIVERGED: %s holds %zu values of %s, %s %zu",
               nodes[i].name, n, name, nodes[ref].name, nref);
      }
    }
  }
}

/* Reads every key on every node in mask and checks it against the history;
 * also compares the nodes' Merkle roots. */
static void check_all(unsigned mask, findings *f) {
  memset(f, 0, sizeof *f);
  pthread_mutex_lock(&H.mu);
  for (int k = 0; k < NREG; k++)
    check_register(k, mask, f);
  for (int c = 0; c < NCTR; c++)
    check_counter(c, mask, f);
  check_uputs(mask, f);
  pthread_mutex_unlock(&H.mu);
  uint8_t r0[16], ri[16];
  int ref = -1;
  for (int i = 0; i < cfg.n; i++) {
    if (!(mask & (1u << i))) continue;
    if (!node_root(i, ri)) {
      REPORT(f->unreadable, "UNREADABLE: %s: status failed", nodes[i].name);
    } else if (ref < 0) {
      ref = i;
      memcpy(r0, ri, 16);
    } else if (memcmp(r0, ri, 16) != 0) {
      REPORT(f->roots, "ROOTS: %s's Merkle root differs from %s's",
             nodes[i].name, nodes[ref].name);
    }
  }
}

static void print_findings(const char *what, const findings *f) {
  say("%s: lost %" PRIu64 ", unexpected %" PRIu64 ", stale %" PRIu64
      ", resurrected %" PRIu64 ", counters out of range %" PRIu64
      ", diverged reads %" PRIu64 ", differing roots %" PRIu64
      ", unreadable %" PRIu64,
      what, f->lost, f->unexpected, f->stale, f->resurrected, f->counter,
      f->diverged, f->roots, f->unreadable);
}

/* ---- crash rounds ---- */

static struct {
  int rounds, cut_kills, verify_ok, clean_stops;
  uint64_t values, counters, missing, cut_writes, hammer_acked;
} crash;

/* A hammer keeps one replica's writer busy until it is killed: it pipelines
 * up to HAMMER_DEPTH writes on one connection, G-counter increments and a
 * few puts to keys of their own (HAMMER_PUTS a round: each is a key to
 * check), so that the kill lands in the middle of group commits. The writes
 * left unanswered when the connection breaks are indeterminate; `cut` counts
 * them (the kill found them under way). Sends are paced at HAMMER_RATE a
 * second: enough to keep commits going back to back, while leaving CPU to
 * whatever else shares the machine. */
#define HAMMER_DEPTH 16
#define HAMMER_PUTS 16
#define HAMMER_RATE 1000

typedef struct hammer {
  pthread_t th;
  int node;
  uint64_t rng, acked, cut;
} hammer;

typedef struct hpend {
  uint64_t id;
  int64_t floor;
} hpend;

static void *hammer_main(void *arg) {
  hammer *h = arg;
  kvc_conn *cn = NULL;
  if (ns_connect(h->node, cfg.io_timeout_ms, &cn) != KVC_OK) {
    kvc_close(cn);
    return NULL;
  }
  hpend ring[HAMMER_DEPTH];
  size_t head = 0, n = 0;
  int puts = 0;
  uint64_t due = now_ms() * 1000, gap = 1000000 / HAMMER_RATE; /* µs */
  for (;;) {
    int rc = KVC_OK;
    uint64_t now = now_ms() * 1000;
    if (due + 20000 < now) due = now; /* no catching up after a stall */
    while (n < HAMMER_DEPTH && rc == KVC_OK && due <= now) {
      due += gap;
      hpend *p = &ring[(head + n) % HAMMER_DEPTH];
      char key[24], val[24];
      if (puts < HAMMER_PUTS && below(&h->rng, 8) == 0) {
        p->id = op_begin(OP_UPUT, 0, h->node, 0, NULL, 0);
        p->floor = 0;
        snprintf(key, sizeof key, "u%" PRIu64, p->id);
        snprintf(val, sizeof val, "v%" PRIu64 ".", p->id);
        rc =
            kvc_send_put(cn, key, strlen(key), val, strlen(val), NULL, 0, NULL);
        puts++;
      } else {
        int ci = NPN + (int)below(&h->rng, NG);
        int64_t d = 1 + (int64_t)below(&h->rng, 4);
        p->floor = g_floor(h->node, ci);
        p->id = op_begin(OP_INCR, ci, h->node, d, NULL, 0);
        ctr_name(key, ci);
        rc = kvc_send_incr(cn, key, strlen(key), d, true, NULL);
      }
      if (rc == KVC_OK)
        n++;
      else
        op_end(p->id, KVC_INVALID, NULL, 0, 0, 0); /* never sent */
    }
    if (rc != KVC_OK) break;
    if (n == 0) {
      sleep_ms(1);
      continue;
    }
    kvc_result *r = NULL;
    if (kvc_recv(cn, &r) != KVC_OK) break;
    hpend *p = &ring[head];
    head = (head + 1) % HAMMER_DEPTH, n--;
    op_end(p->id, kvc_result_error(r), NULL, 0, kvc_result_counter(r),
           p->floor);
    h->acked += kvc_result_error(r) == KVC_OK;
    kvc_result_free(r);
  }
  h->cut = n;
  for (size_t k = 0; k < n; k++)
    op_end(ring[(head + k) % HAMMER_DEPTH].id, KVC_CLOSED, NULL, 0, 0, 0);
  kvc_close(cn);
  return NULL;
}

/* Reads back on node i (just restarted alone) every value and G-counter
 * floor it acknowledged before it was killed. A value may be gone only if a
 * context write that saw it was attempted before the kill (watermark: the
 * first op id after it): that write could have reached i. */
static void read_back(int i, uint64_t watermark) {
  char name[8];
  for (int k = 0; k < NREG; k++) {
    reg_name(name, k);
    kvc_result *r = NULL;
    if (ctl_get(i, name, &r) == KVC_IO)
      die("read-back: %s: get %s failed", nodes[i].name, name);
    uint64_t ids[MAXSIB];
    size_t n = result_ids(r, ids);
    kvc_result_free(r);
    note_read(i, k, ids, n);
    pthread_mutex_lock(&H.mu);
    idvec *vs = &H.vals[k];
    for (size_t b = 0; b < vs->n && vs->v[b] < watermark; b++) {
      opinfo *v = &H.ops[vs->v[b]];
      if (v->state != ST_ACKED || v->node != i) continue;
      if (v->sup_first < watermark) continue;
      crash.values++;
      if (!bsearch(&vs->v[b], ids, n, sizeof ids[0], cmp_u64)) {
        crash.missing++;
        say("CRASH LOST: %s acknowledged v%" PRIu64 " of %s before kill -9;"
            " it is not there after the restart",
            nodes[i].name, vs->v[b], name);
      }
    }
    pthread_mutex_unlock(&H.mu);
  }
  pthread_mutex_lock(&H.mu);
  size_t nu = H.uputs.n;
  pthread_mutex_unlock(&H.mu);
  for (size_t u = 0; u < nu; u++) {
    pthread_mutex_lock(&H.mu);
    uint64_t id = H.uputs.v[u];
    bool mine =
        id < watermark && H.ops[id].state == ST_ACKED && H.ops[id].node == i;
    pthread_mutex_unlock(&H.mu);
    if (!mine) continue;
    char key[24];
    snprintf(key, sizeof key, "u%" PRIu64, id);
    kvc_result *r = NULL;
    if (ctl_get(i, key, &r) == KVC_IO)
      die("read-back: %s: get %s failed", nodes[i].name, key);
    uint64_t ids[MAXSIB];
    size_t n = result_ids(r, ids);
    kvc_result_free(r);
    crash.values++;
    if (n != 1 || ids[0] != id) {
      crash.missing++;
      say("CRASH LOST: %s acknowledged v%" PRIu64 " of %s before kill -9;"
          " it is not there after the restart",
          nodes[i].name, id, key);
    }
  }
  for (int c = NPN; c < NCTR; c++) {
    ctr_name(name, c);
    kvc_result *r = NULL;
    if (ctl_get(i, name, &r) == KVC_IO)
      die("read-back: %s: get %s failed", nodes[i].name, name);
    int64_t v = kvc_result_counter(r);
    kvc_result_free(r);
    pthread_mutex_lock(&H.mu);
    int64_t want = H.ctrs[c].acked_max[i];
    pthread_mutex_unlock(&H.mu);
    crash.counters++;
    if (v < want) {
      crash.missing++;
      say("CRASH LOST: %s acknowledged %s = %" PRId64
          " before kill -9; it reads %" PRId64 " after the restart",
          nodes[i].name, name, want, v);
    }
    note_g_read(i, c, v, g_floor(i, c));
  }
}

/* One crash round on node i: hammer it, kill -9 it, verify its data, read
 * back alone, then restart it as usual. */
static void crash_node(int i, uint64_t *rng) {
  hammer hs[2];
  for (int k = 0; k < 2; k++) {
    hs[k] = (hammer){.node = i, .rng = rnd(rng)};
    if (pthread_create(&hs[k].th, NULL, hammer_main, &hs[k]) != 0)
      die("pthread_create");
  }
  sleep_ms(100 + below(rng, 600));
  stop_node(i, SIGKILL);
  uint64_t cut = 0;
  for (int k = 0; k < 2; k++) {
    pthread_join(hs[k].th, NULL);
    cut += hs[k].cut;
    crash.hammer_acked += hs[k].acked;
  }
  crash.rounds++;
  crash.cut_kills += cut > 0;
  crash.cut_writes += cut;
  atomic_store(&nodes[i].usable, false);
  while (atomic_load(&nodes[i].inflight) > 0)
    sleep_ms(5);
  pthread_mutex_lock(&H.mu);
  uint64_t watermark = H.nops;
  pthread_mutex_unlock(&H.mu);
  int vr = verify_node(i);
  if (vr != 0)
    die("kvd --verify on %s's data after kill -9 exited %d (see %s)",
        nodes[i].name, vr, nodes[i].log);
  crash.verify_ok++;
  set_net(i, 0, 0, true);
  start_node(i, START_ALONE);
  uint64_t before = crash.missing;
  read_back(i, watermark);
  int st = stop_node(i, SIGTERM);
  crash.clean_stops += WIFEXITED(st) && WEXITSTATUS(st) == 0;
  set_net(i, 0, 0, false);
  start_node(i, START_JOIN);
  atomic_store(&nodes[i].usable, true);
  if (crash.rounds % 10 == 0 || crash.missing != before)
    say("crash round %d: kill -9 %s with %" PRIu64 " pipelined writes "
        "unanswered; verify ok; %" PRIu64 " values and %" PRIu64
        " counter floors read back so far, %" PRIu64 " missing",
        crash.rounds, nodes[i].name, cut, crash.values, crash.counters,
        crash.missing);
}

static void crash_round(uint64_t *rng) {
  sleep_ms(200 + below(rng, 800));
  check_alive();
  crash_node((int)below(rng, (uint64_t)cfg.n), rng);
}

/* ---- the nemesis ---- */

enum {
  NET_NONE,
  NET_HALVES,
  NET_ISLANDS,
  NET_ONE,
  NET_RING,
  NET_BRIDGE,
  NET_LOSS,
  NET_KINDS
};
static const char *const net_names[] = {
    "none", "halves", "islands", "isolate-one", "ring", "bridge-wide", "loss"};
enum { PROC_NONE, PROC_KILL, PROC_PAUSE, PROC_KINDS };
static const char *const proc_names[] = {"none", "kill -9", "pause"};
static int net_count[NET_KINDS], proc_count[PROC_KINDS];

/* Faults are drawn from shuffled bags holding each kind once, refilled when
 * empty, so that even a short run sees every kind. */
typedef struct bag {
  int k[NET_KINDS], left;
} bag;

static int bag_draw(bag *b, uint64_t *rng, int kinds) {
  if (b->left == 0) {
    for (int k = 0; k < kinds; k++)
      b->k[k] = k;
    for (int k = kinds - 1; k > 0; k--) {
      int j = (int)below(rng, (uint64_t)k + 1), t = b->k[k];
      b->k[k] = b->k[j], b->k[j] = t;
    }
    b->left = kinds;
  }
  return b->k[--b->left];
}

/* Puts the nodes in a random order (Fisher-Yates). */
static void shuffle(uint64_t *rng, int *perm) {
  for (int k = 0; k < cfg.n; k++)
    perm[k] = k;
  for (int k = cfg.n - 1; k > 0; k--) {
    int j = (int)below(rng, (uint64_t)k + 1), t = perm[k];
    perm[k] = perm[j], perm[j] = t;
  }
}

/* Applies a network fault; describes it in desc. group[i] is node i's side:
 * nodes drop everything from nodes on other sides. */
static void apply_net(int kind, uint64_t *rng, char *desc, size_t cap) {
  int perm[MAXN], group[MAXN];
  shuffle(rng, perm);
  int loss = 0;
  unsigned drop[MAXN] = {0};
  for (int k = 0; k < cfg.n; k++)
    group[perm[k]] = 0;
  switch (kind) {
  case NET_HALVES: /* 2 | 3 */
    for (int k = 0; k < cfg.n / 2; k++)
      group[perm[k]] = 1;
    break;
  case NET_ISLANDS: /* 2 | 2 | 1: no side has a majority */
    for (int k = 0; k < cfg.n; k++)
      group[perm[k]] = k < 2 ? 1 : k < 4 ? 2 : 3;
    break;
  case NET_ONE:
    group[perm[0]] = 1;
    break;
  case NET_BRIDGE:
    for (int k = 0; k < cfg.n; k++)
      group[perm[k]] = k + 1;
    break;
  case NET_LOSS:
    loss = 5 + (int)below(rng, 26);
    break;
  default:
    break;
  }
  for (int i = 0; i < cfg.n; i++)
    for (int j = 0; j < cfg.n; j++)
      if (group[i] != group[j]) drop[i] |= 1u << j;
  if (kind == NET_RING) {
    /* Each node hears only its two neighbours in a shuffled ring: every node
     * sees a majority, no two see the same one (Jepsen's majorities-ring). */
    int pos[MAXN];
    for (int k = 0; k < cfg.n; k++)
      pos[perm[k]] = k;
    for (int i = 0; i < cfg.n; i++)
      for (int j = 0; j < cfg.n; j++) {
        int d = abs(pos[i] - pos[j]);
        if (d > 1 && d < cfg.n - 1) drop[i] |= 1u << j;
      }
  }
  size_t k = (size_t)snprintf(desc, cap, "%s", net_names[kind]);
  if (kind == NET_LOSS) snprintf(desc + k, cap - k, " %d%%", loss);
  if (kind == NET_RING) {
    for (int p = 0; p < cfg.n && k < cap; p++)
      k += (size_t)snprintf(desc + k, cap - k, "%s%s", p ? "-" : " ",
                            nodes[perm[p]].name);
  } else if (kind != NET_NONE && kind != NET_LOSS) {
    for (int g = 0; g <= cfg.n && k < cap; g++) {
      bool first = true;
      for (int i = 0; i < cfg.n && k < cap; i++)
        if (group[i] == g) {
          k += (size_t)snprintf(desc + k, cap - k, "%s%s",
                                first ? (g ? " | " : " ") : ",", nodes[i].name);
          first = false;
        }
    }
  }
  if (kind != NET_NONE)
    for (int i = 0; i < cfg.n; i++)
      set_net(i, drop[i], loss, false);
}

static void nemesis(uint64_t seed, int seconds) {
  uint64_t rng = seed, end = now_ms() + (uint64_t)seconds * 1000;
  bag netbag = {.left = 0}, procbag = {.left = 0};
  while (now_ms() < end) {
    check_alive();
    int nk = bag_draw(&netbag, &rng, NET_KINDS);
    int pk = bag_draw(&procbag, &rng, PROC_KINDS);
    uint64_t hold = 2000 + below(&rng, 6000);
    int victims[2] = {-1, -1},
        nv = pk == PROC_NONE ? 0 : 1 + (below(&rng, 3) == 0);
    int perm[MAXN];
    shuffle(&rng, perm);
    char desc[256];
    apply_net(nk, &rng, desc, sizeof desc);
    net_count[nk]++;
    proc_count[pk]++;
    size_t k = strlen(desc);
    for (int v = 0; v < nv; v++) {
      victims[v] = perm[v];
      k += (size_t)snprintf(desc + k, sizeof desc - k, "%s%s", v ? "," : "; ",
                            nodes[perm[v]].name);
      if (pk == PROC_KILL)
        stop_node(perm[v], SIGKILL);
      else
        pause_node(perm[v]);
    }
    if (nv) snprintf(desc + k, sizeof desc - k, " %s", proc_names[pk]);
    say("nemesis: %s for %.1f s", desc, (double)hold / 1000);
    sleep_ms(hold);
    for (int v = 0; v < nv; v++) {
      if (pk == PROC_KILL)
        start_node(victims[v], START_JOIN);
      else
        resume_node(victims[v]);
    }
    if (nk != NET_NONE) heal_net();
    sleep_ms(1000 + below(&rng, 2000));
  }
}

/* ---- self-test: the checker must notice broken inputs ---- */

static int self_failures;

/* f: the checker's findings, printed (NULL: none to print). */
static void expect_caught(const char *what, const findings *f, uint64_t got) {
  if (f) print_findings(what, f);
  if (got == 0) {
    say("SELF-TEST FAILED: the checker did not notice: %s", what);
    self_failures++;
  } else {
    say("self-test: caught: %s", what);
  }
}

/* A present, acknowledged, not superseded value of some key: (key, id). */
static bool pick_live(int *key, uint64_t *id) {
  for (int k = 0; k < NREG; k++)
    for (size_t b = 0; b < H.vals[k].n; b++) {
      opinfo *v = &H.ops[H.vals[k].v[b]];
      if (v->state == ST_ACKED && v->sup == SUP_NONE) {
        *key = k, *id = H.vals[k].v[b];
        return true;
      }
    }
  return false;
}

static void self_test(void) {
  unsigned all = (1u << cfg.n) - 1;
  findings f;
  say("self-test: breaking the checker's inputs on purpose");

  /* 1. The history claims an acknowledged put that was never sent. */
  uint64_t fake = op_begin(OP_PUT, 7, 0, 0, NULL, 0);
  op_end(fake, KVC_OK, NULL, 0, 0, 0);
  check_all(all, &f);
  expect_caught("an acknowledged put that was never sent (lost)", &f, f.lost);
  H.ops[fake].state = ST_FAILED;

  /* 2. The history claims an acknowledged increment that was never sent. */
  H.ctrs[3].acked += 1000;
  check_all(all, &f);
  expect_caught("an acknowledged increment of 1000 never sent (counter)", &f,
                f.counter);
  H.ctrs[3].acked -= 1000;

  /* 3. The history claims an acknowledged delete of a live value. */
  int key;
  uint64_t id;
  if (pick_live(&key, &id)) {
    uint64_t del = op_begin(OP_CDEL, key, 0, 0, &id, 1);
    op_end(del, KVC_OK, &id, 1, 0, 0);
    check_all(all, &f);
    expect_caught("an acknowledged delete never sent (resurrected)", &f,
                  f.resurrected);
    H.ops[del].state = ST_FAILED;
    H.ops[id].sup = SUP_NONE;
  } else {
    say("SELF-TEST FAILED: no live value to delete");
    self_failures++;
  }

  /* 4. The history claims n1 acknowledged a put just before a kill -9,
   * which it never got: the crash round's read-back must miss it. */
  uint64_t ghost = op_begin(OP_UPUT, 0, 0, 0, NULL, 0);
  op_end(ghost, KVC_OK, NULL, 0, 0, 0);
  uint64_t missing = crash.missing, rng = cfg.seed;
  crash_node(0, &rng);
  expect_caught("a put n1 never got, acknowledged before kill -9 (crash "
                "read-back)",
                NULL, crash.missing - missing);
  crash.missing = missing;
  H.ops[ghost].state = ST_FAILED;

  /* 5. A put that was made but left out of the history. */
  uint64_t omitted = op_begin(OP_PUT, 11, 0, 0, NULL, 0);
  char val[32];
  snprintf(val, sizeof val, "v%" PRIu64 ".omitted", omitted);
  kvc_conn *cn = conn_to(&ctl, 0);
  int rc = cn ? kvc_put(cn, "r011", 4, val, strlen(val), NULL, 0) : KVC_IO;
  op_end(omitted, rc, NULL, 0, 0, 0);
  if (rc != KVC_OK) die("self-test: put of the omitted value failed");
  H.ops[omitted].state = ST_OMITTED;
  if (wait_converged(cfg.converge_s) < 0) die("self-test: no convergence");
  check_all(all, &f);
  expect_caught("a put left out of the history (unexpected)", &f, f.unexpected);
  H.ops[omitted].state = ST_ACKED;
  check_all(all, &f);
  print_findings("self-test: inputs restored", &f);
  if (findings_total(&f)) {
    say("SELF-TEST FAILED: the restored inputs do not check clean");
    self_failures++;
  }

  /* 6. A replica whose data directory was deleted while it was stopped,
   * restarted alone without anti-entropy or rumors: its reads miss values. */
  int w = cfg.n - 1;
  stop_node(w, SIGTERM);
  const char *rm[] = {"rm", "-rf", nodes[w].data, NULL};
  run_in_ns(-1, rm, NULL);
  set_net(w, 0, 0, true);
  start_node(w, START_ALONE);
  check_all(all, &f);
  expect_caught("a replica whose data directory was deleted (lost on it)", &f,
                f.lost && f.roots && f.diverged);
  stop_node(w, SIGTERM);
  run_in_ns(-1, rm, NULL);
  set_net(w, 0, 0, false);
  start_node(w, START_JOIN);
  int64_t ms = wait_converged(cfg.converge_s);
  if (ms < 0) die("self-test: the emptied replica did not catch up");
  check_all(all, &f);
  say("self-test: the emptied replica rejoined empty and caught up in %.1f s",
      (double)ms / 1000);
  print_findings("self-test: after it caught up", &f);
  if (findings_total(&f)) {
    say("SELF-TEST FAILED: the emptied replica did not catch up cleanly");
    self_failures++;
  }
}

/* ---- main ---- */

static int parse_int(const char *s, const char *name, int lo, int hi) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "chaos: %s must be %d..%d\n", name, lo, hi);
    exit(2);
  }
  return (int)v;
}

static void parse_args(int argc, char **argv) {
  for (int a = 1; a < argc; a++) {
    const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
    if (!strcmp(o, "--self-test")) {
      cfg.self_test = true;
      continue;
    }
    if (!strcmp(o, "--help")) {
      fputs(usage_text, stdout);
      exit(0);
    }
    if (!v) {
      fprintf(stderr, "chaos: unknown option or missing value: %s\n%s", o,
              usage_text);
      exit(2);
    }
    a++;
    if (!strcmp(o, "--ns-prefix"))
      cfg.prefix = v;
    else if (!strcmp(o, "--subnet"))
      cfg.subnet = v;
    else if (!strcmp(o, "--dir"))
      cfg.dir = v;
    else if (!strcmp(o, "--kvd"))
      cfg.kvd = v;
    else if (!strcmp(o, "--nodes"))
      cfg.n = parse_int(v, o, 3, MAXN);
    else if (!strcmp(o, "--seconds"))
      cfg.seconds = parse_int(v, o, 0, 1 << 20);
    else if (!strcmp(o, "--kills"))
      cfg.kills = parse_int(v, o, 0, 1 << 20);
    else if (!strcmp(o, "--clients"))
      cfg.clients = parse_int(v, o, 1, 64);
    else if (!strcmp(o, "--rate"))
      cfg.rate = parse_int(v, o, 1, 100000);
    else if (!strcmp(o, "--timeout"))
      cfg.io_timeout_ms = parse_int(v, o, 100, 60000);
    else if (!strcmp(o, "--converge"))
      cfg.converge_s = parse_int(v, o, 1, 3600);
    else if (!strcmp(o, "--seed"))
      cfg.seed = strtoull(v, NULL, 0);
    else {
      fprintf(stderr, "chaos: unknown option %s\n%s", o, usage_text);
      exit(2);
    }
  }
  if (!cfg.prefix || !cfg.dir || !cfg.kvd) {
    fputs(usage_text, stderr);
    exit(2);
  }
}

static void setup_nodes(void) {
  root_nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (root_nsfd < 0) die("/proc/self/ns/net: %s", strerror(errno));
  snprintf(keyfile, sizeof keyfile, "%s/cluster.key", cfg.dir);
  for (int i = 0; i < cfg.n; i++) {
    node *nd = &nodes[i];
    snprintf(nd->ns, sizeof nd->ns, "%s%d", cfg.prefix, i + 1);
    snprintf(nd->name, sizeof nd->name, "n%d", i + 1);
    snprintf(nd->addr, sizeof nd->addr, "%s.%d", cfg.subnet, i + 1);
    snprintf(nd->data, sizeof nd->data, "%s/n%d/data", cfg.dir, i + 1);
    snprintf(nd->log, sizeof nd->log, "%s/n%d.log", cfg.dir, i + 1);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/run/netns/%.64s", nd->ns);
    nd->nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nd->nsfd < 0) die("%s: %s", path, strerror(errno));
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/n%d", cfg.dir, i + 1);
    mkdir(d, 0755);
    atomic_store(&nd->usable, true);
  }
}

/* Waits until every node holds all n members alive. */
static void wait_formed(void) {
  uint64_t end = now_ms() + 60000;
  for (int i = 0; i < cfg.n; i++) {
    for (;;) {
      kvc_conn *cn = conn_to(&ctl, i);
      kvc_result *r = NULL;
      size_t alive = 0;
      if (cn && kvc_members(cn, &r) == KVC_OK) {
        const kvc_member_info *m;
        size_t nm = kvc_result_members(r, &m);
        for (size_t k = 0; k < nm; k++)
          alive += !strcmp(m[k].state, "alive");
      }
      kvc_result_free(r);
      if (alive == (size_t)cfg.n) break;
      if (now_ms() > end)
        die("%s sees %zu of %d alive", nodes[i].name, alive, cfg.n);
      sleep_ms(200);
    }
  }
}

int main(int argc, char **argv) {
  t0_ms = now_ms();
  parse_args(argc, argv);
  if (!cfg.seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s =
        (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    cfg.seed = rnd(&s) % 1000000000u + 1;
  }
  if (cfg.self_test) cfg.seconds = 0, cfg.kills = 0;
  say("seed %" PRIu64 ": %d replicas, %d crash rounds, nemesis for %d s, %d "
      "clients at %d ops/s",
      cfg.seed, cfg.n, cfg.kills, cfg.seconds, cfg.clients, cfg.rate);
  say("rerun: tests/chaos/chaos.sh --seed %" PRIu64
      " --seconds %d --kills %d%s, or make chaos CHAOS_SEED=%" PRIu64
      " CHAOS_SECONDS=%d CHAOS_KILLS=%d (the nemesis and crash schedules "
      "repeat; client timing does not)",
      cfg.seed, cfg.seconds, cfg.kills, cfg.self_test ? " --self-test" : "",
      cfg.seed, cfg.seconds, cfg.kills);
  setup_nodes();
  atexit(kill_all);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  for (int i = 0; i < cfg.n; i++)
    start_node(i, START_JOIN);
  wait_formed();
  say("%d replicas formed a cluster", cfg.n);

  uint64_t rng = cfg.seed;
  start_clients(cfg.seed);
  uint64_t phase = now_ms();
  sleep_ms(cfg.self_test ? 10000 : 3000);
  for (int k = 0; k < cfg.kills; k++)
    crash_round(&rng);
  if (cfg.kills)
    say("crash rounds done in %.1f s", (double)(now_ms() - phase) / 1000);
  nemesis(rng, cfg.seconds);
  for (int i = 0; i < cfg.n; i++)
    resume_node(i);
  heal_net();
  stop_all_clients();
  check_alive();
  say("healed; clients stopped; waiting for identical roots");
  int64_t conv = wait_converged(cfg.converge_s);
  if (conv < 0)
    say("no convergence within %d s", cfg.converge_s);
  else
    say("converged %.1f s after the last fault", (double)conv / 1000);

  findings f;
  check_all((1u << cfg.n) - 1, &f);
  print_findings("check", &f);
  uint64_t lost = f.lost, bad = findings_total(&f) + H.run_unexpected +
                                H.g_down + crash.missing + (conv < 0) +
                                (uint64_t)self_exits;
  say("history: %" PRIu64 " writes: %" PRIu64 " acknowledged, %" PRIu64
      " refused, %" PRIu64 " indeterminate (%" PRIu64
      " of those values found); %" PRIu64 " reads, %" PRIu64
      " connection attempts refused or timed out",
      H.writes, H.acked, H.failed, H.indet, f.recovered, H.reads,
      (uint64_t)atomic_load(&unreachable));
  say("registers: %" PRIu64 " acknowledged live values present of %" PRIu64
      " (%d replicas x values), %" PRIu64
      " keys deleted for good, at most %zu siblings seen",
      f.values_present, f.values_expected, cfg.n, f.deleted_keys,
      H.max_siblings);
  char line[512] = "";
  for (int c = 0; c < NCTR; c++) {
    char name[8];
    ctr_name(name, c);
    snprintf(line + strlen(line), sizeof line - strlen(line),
             " %s=%" PRId64 "(+%" PRId64 "/%" PRId64 ")", name, H.ctrs[c].acked,
             H.ctrs[c].indet_pos, H.ctrs[c].indet_neg);
  }
  say("counters, acknowledged(+indeterminate up/down):%s", line);
  say("G-counters went down on a replica: %" PRIu64
      "; unexpected values read during the run: %" PRIu64
      "; replicas that exited on their own: %d",
      H.g_down, H.run_unexpected, self_exits);
  if (cfg.kills)
    say("crash: %d kill -9 under load (%d cut off pipelined writes, %" PRIu64
        " in all; %" PRIu64 " pipelined writes acknowledged first), kvd "
        "--verify ok %d/%d, clean SIGTERM %d/%d; read back %" PRIu64
        " values and %" PRIu64 " G-counter floors: %" PRIu64 " missing",
        crash.rounds, crash.cut_kills, crash.cut_writes, crash.hammer_acked,
        crash.verify_ok, crash.rounds, crash.clean_stops, crash.rounds,
        crash.values, crash.counters, crash.missing);
  if (cfg.seconds) {
    line[0] = '\0';
    for (int k = 1; k < NET_KINDS; k++)
      snprintf(line + strlen(line), sizeof line - strlen(line), " %s %d,",
               net_names[k], net_count[k]);
    for (int k = 1; k < PROC_KINDS; k++)
      snprintf(line + strlen(line), sizeof line - strlen(line), " %s %d,",
               proc_names[k], proc_count[k]);
    line[strlen(line) - 1] = '\0';
    say("nemesis steps:%s", line);
  }
  if (bad) {
    say("FAIL: seed %" PRIu64 " (lost %" PRIu64
        "); rerun: tests/chaos/chaos.sh --seed %" PRIu64
        " --seconds %d --kills %d",
        cfg.seed, lost, cfg.seed, cfg.seconds, cfg.kills);
    return 1;
  }
  say("ok: lost 0 of %" PRIu64 " acknowledged writes", H.acked);
  self_test();
  if (self_failures) {
    say("FAIL: self-test: %d broken input(s) went unnoticed", self_failures);
    return 1;
  }
  say("ok: self-test: every broken input was caught");
  return 0;
}
