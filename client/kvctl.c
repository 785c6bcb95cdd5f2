/*
 * kvctl, the command-line client (DESIGN.md §10): one command against one
 * replica through libkvclient, nothing but the public kvclient.h. What it
 * prints and how it exits is a contract scripts rely on: exit 0 ok, 1 not
 * found, 2 usage, 3 any other error (with "kvctl: <message>" on stderr), and
 * plain output carries values and nothing else.
 *
 * `kvctl cluster ...` (a local cluster of kvd processes) is parsed and checked
 * here like every other command and carried out by cluster.c.
 *
 * JSON output (--json) writes keys and values as JSON strings when they are
 * UTF-8 text without control characters other than tab, newline and carriage
 * return, and as {"base64":"..."} objects otherwise, so that any bytes round
 * trip; contexts and cursors are always base64 strings.
 */
#include "client/cluster.h"
#include "client/kvclient.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#ifndef KV_VERSION
#define KV_VERSION "unknown"
#endif

enum {
  EXIT_OK = 0,
  EXIT_NOTFOUND = 1,
  EXIT_USAGE = 2,
  EXIT_ERROR = 3,
};

#define DEFAULT_HOST "127.0.0.1"
#define VERIFY_TIMEOUT_MS 600000  /* verify reads the whole store */
#define BACKUP_TIMEOUT_MS 3600000 /* backup copies the whole store */
#define SCAN_PAGE 1000            /* keys asked for per scan request */
#define MAX_TOKEN 4096
#define MAX_STDIN_VALUE ((size_t)1 << 30)

static const char usage_text[] =
    "kvctl: command-line client for epikv, an eventually consistent\n"
    "replicated key-value store.\n"
    "\n"
    "Usage: kvctl [OPTIONS] COMMAND [ARGS]     (options may also follow the "
    "command)\n"
    "\n"
    "Commands:\n"
    "  get KEY           print each value of KEY on a line of its own (more "
    "than\n"
    "                    one after concurrent writes); a counter prints its "
    "integer\n"
    "  put KEY VALUE     store VALUE under KEY, replacing the values a read "
    "just\n"
    "                    before saw; VALUE - reads the value from standard "
    "input\n"
    "  del KEY           delete KEY (the values a read just before saw)\n"
    "  incr KEY [N]      add N (default 1) to the counter KEY and print the "
    "result;\n"
    "                    a new key becomes a counter that can go up and down\n"
    "  decr KEY [N]      subtract N (default 1) from the counter KEY\n"
    "  scan              print the keys, one per line, in no particular "
    "order\n"
    "  status            show the replica's name, id, key count, Merkle root, "
    "...\n"
    "  verify            check the replica's Merkle tree against its stored "
    "data\n"
    "  members           the cluster's members as the replica sees them "
    "(SWIM):\n"
    "                    name, address, state (alive, suspect, dead, left),\n"
    "                    incarnation and time in that state\n"
    "  keygen            print a new random 32-byte cluster key (base64)\n"
    "  backup --dir D    make the replica write a consistent, compacted copy "
    "of its\n"
    "                    store into D, an absolute path on the replica's "
    "machine\n"
    "                    (empty or new); kvd --restore D starts a new replica "
    "from it\n"
    "  help              show this text\n"
    "\n"
    "Local clusters (N kvd processes on this machine, all in directory D):\n"
    "  cluster up -n N --dir D [--base-port P] [--kvd PATH]\n"
    "                    create the cluster in D (the first time: D must be "
    "new or\n"
    "                    empty) and start its stopped nodes; node K lives in\n"
    "                    D/nodeK/ and listens on 127.0.0.1, ports P+10(K-1)\n"
    "                    (native), +1 (RESP), +2 (peer), +3 (metrics); P "
    "defaults\n"
    "                    to 7400\n"
    "  cluster start --dir D [--node K] [--kvd PATH]\n"
    "                    start the stopped nodes (or only node K); waits up "
    "to 10 s\n"
    "                    for each to answer\n"
    "  cluster stop --dir D [--node K]\n"
    "                    stop the nodes (SIGTERM, waits up to 15 s)\n"
    "  cluster status --dir D\n"
    "                    each node's pid, state, ports, key count and Merkle "
    "root\n"
    "                    (abbreviated; --json gives it whole)\n"
    "  cluster logs --dir D [--node K] [-n LINES]\n"
    "                    the last lines (default 20) of each node's kvd.log\n"
    "  cluster down --dir D [--purge]\n"
    "                    stop every node; --purge then deletes D\n"
    "\n"
    "Options:\n"
    "  -h HOST:PORT      the replica to talk to (default 127.0.0.1:7400; "
    "[::1]:7400\n"
    "                    for IPv6)\n"
    "  --token-file F    authenticate with the token stored in file F\n"
    "  --timeout MS      give up after MS milliseconds (default 5000, verify "
    "600000,\n"
    "                    backup 3600000)\n"
    "  --json            machine-readable output; keys and values are JSON "
    "strings\n"
    "                    when they are text, else {\"base64\":\"...\"}\n"
    "  --context C       put, del: act on what context C saw (base64, as "
    "printed by\n"
    "                    get --json) instead of reading the key first\n"
    "  --no-context      put: add VALUE beside the existing values (a "
    "sibling);\n"
    "                    del: delete everything the replica holds for KEY\n"
    "  --gcounter        incr: create a counter that only goes up (first "
    "write only)\n"
    "  --prefix P        scan: only keys that start with P\n"
    "  --limit N         scan: stop after N keys\n"
    "  -n N              cluster up: the number of nodes (1 to 100); "
    "cluster logs:\n"
    "                    lines per node\n"
    "  --dir D           cluster: the cluster's directory; backup: where "
    "the copy goes\n"
    "  --base-port P     cluster up: node 1's native port (default 7400)\n"
    "  --node K          cluster start, stop, logs: only node K (1 to N)\n"
    "  --kvd PATH        cluster up, start: the kvd to run (default: $KVD, "
    "else the\n"
    "                    kvd beside kvctl, else kvd on PATH)\n"
    "  --purge           cluster down: also delete D (only a kvctl cluster "
    "dir)\n"
    "  --help, --version\n"
    "  --                end of options (for a key that starts with -)\n"
    "\n"
    "Exit status: 0 ok, 1 key not found (nothing printed), 2 usage error,\n"
    "3 any other error (\"kvctl: <message>\" on standard error).\n"
    "\n"
    "Examples:\n"
    "  kvctl put greeting hello\n"
    "  kvctl get greeting                         # hello\n"
    "  kvctl put greeting hi --no-context         # two siblings: hello, hi\n"
    "  kvctl put greeting hey                     # replaces both\n"
    "  kvctl -h 127.0.0.1:7410 get greeting --json\n"
    "  kvctl incr visits 10; kvctl decr visits\n"
    "  kvctl scan --prefix user: --limit 20\n"
    "  kvctl put photo - < photo.jpg\n"
    "  kvctl keygen > cluster.key\n"
    "  kvctl backup --dir /var/backups/epikv/2024-06-01\n"
    "  kvctl cluster up -n 3 --dir /tmp/c3      # nodes on ports 7400, 7410, "
    "7420\n"
    "  kvctl -h 127.0.0.1:7410 put greeting hello\n"
    "  kvctl cluster status --dir /tmp/c3\n"
    "  kvctl cluster stop --dir /tmp/c3 --node 2; kvctl cluster start --dir "
    "/tmp/c3\n"
    "  kvctl cluster logs --dir /tmp/c3 --node 1 -n 50\n"
    "  kvctl cluster down --dir /tmp/c3 --purge\n";

/* ---- options ---- */

typedef enum cmd_opt {
  OPT_CONTEXT = 1 << 0,
  OPT_NO_CONTEXT = 1 << 1,
  OPT_GCOUNTER = 1 << 2,
  OPT_PREFIX = 1 << 3,
  OPT_LIMIT = 1 << 4,
  OPT_COUNT = 1 << 5, /* -n: cluster up's nodes, cluster logs' lines */
  OPT_DIR = 1 << 6,
  OPT_BASE_PORT = 1 << 7,
  OPT_NODE = 1 << 8,
  OPT_PURGE = 1 << 9,
  OPT_KVD = 1 << 10,
} cmd_opt;

#define MAX_POS 8

typedef struct options {
  char host[256];
  int port;
  const char *token_file;
  bool json;
  int timeout_ms; /* 0: the command's default */
  unsigned given; /* cmd_opt bits seen on the command line */
  const char *context_b64;
  const char *prefix;
  uint64_t limit;
  int count;                /* -n */
  const char *dir;          /* --dir */
  int base_port;            /* --base-port */
  int node;                 /* --node */
  const char *kvd;          /* --kvd */
  const char *pos[MAX_POS]; /* the command and its arguments */
  int npos;
} options;

typedef struct command {
  const char *name;       /* one word, or two: "cluster up" */
  int min_args, max_args; /* after the command name */
  unsigned allowed;       /* cmd_opt bits that apply */
  bool connects;
  int (*run)(kvc_conn *c, const options *o);
  const char *synopsis;
} command;

static void usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kvctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\nTry 'kvctl --help' for usage and examples.\n", stderr);
  exit(EXIT_USAGE);
}

/* A decimal integer that must be the whole string. */
static bool parse_i64(const char *s, int64_t *out) {
  if (!*s) return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

/* HOST:PORT, [V6]:PORT, HOST, :PORT. */
static void parse_host(options *o, const char *arg) {
  const char *host = arg, *port = NULL;
  size_t hostlen;
  if (arg[0] == '[') {
    const char *close = strchr(arg, ']');
    if (!close || (close[1] && close[1] != ':'))
      usage_error("-h %s: expected HOST:PORT or [IPV6]:PORT", arg);
    host = arg + 1;
    hostlen = (size_t)(close - host);
    if (close[1] == ':') port = close + 2;
  } else {
    const char *colon = strchr(arg, ':');
    if (colon && strchr(colon + 1, ':'))
      colon = NULL; /* a bare IPv6 address: no port */
    hostlen = colon ? (size_t)(colon - arg) : strlen(arg);
    if (colon) port = colon + 1;
  }
  if (hostlen == 0) {
    host = DEFAULT_HOST;
    hostlen = strlen(DEFAULT_HOST);
  }
  if (hostlen >= sizeof o->host) usage_error("-h %s: host name too long", arg);
  memcpy(o->host, host, hostlen);
  o->host[hostlen] = '\0';
  o->port = KVC_DEFAULT_PORT;
  if (port) {
    int64_t p;
    if (!parse_i64(port, &p) || p < 1 || p > 65535)
      usage_error("-h %s: port must be a number from 1 to 65535", arg);
    o->port = (int)p;
  }
}

/* Returns the value of an option that takes one: "--name=value" or the next
 * argument. */
static const char *opt_value(const char *name, const char *eq, int argc,
                             char **argv, int *i) {
  if (eq) return eq + 1;
  if (*i + 1 >= argc) {
    if (strcmp(name, "-h") == 0)
      usage_error("-h needs HOST:PORT (for help, use --help)");
    usage_error("%s needs a value", name);
  }
  return argv[++*i];
}

static void add_pos(options *o, const char *arg) {
  if (o->npos == MAX_POS)
    usage_error("too many arguments (starting at '%s')", arg);
  o->pos[o->npos++] = arg;
}

static void print_usage(FILE *f) { fputs(usage_text, f); }

static void parse_args(options *o, int argc, char **argv) {
  parse_host(o, DEFAULT_HOST);
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    /* "-" is stdin, "-5" a number: arguments, not options. */
    if (only_pos || a[0] != '-' || a[1] == '\0' ||
        (a[1] >= '0' && a[1] <= '9')) {
      add_pos(o, a);
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = true;
      continue;
    }
    char name[64];
    const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
    size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
    if (nlen >= sizeof name) usage_error("unknown option %s", a);
    memcpy(name, a, nlen);
    name[nlen] = '\0';
    bool takes_value = true;
    if (strcmp(name, "--help") == 0) {
      print_usage(stdout);
      exit(EXIT_OK);
    } else if (strcmp(name, "--version") == 0) {
      printf("kvctl %s\n", KV_VERSION);
      exit(EXIT_OK);
    } else if (strcmp(name, "-h") == 0) {
      parse_host(o, opt_value(name, eq, argc, argv, &i));
    } else if (strcmp(name, "--token-file") == 0) {
      o->token_file = opt_value(name, eq, argc, argv, &i);
    } else if (strcmp(name, "--timeout") == 0) {
      const char *v = opt_value(name, eq, argc, argv, &i);
      int64_t ms;
      if (!parse_i64(v, &ms) || ms < 1 || ms > 86400000)
        usage_error("--timeout %s: expected milliseconds from 1 to 86400000",
                    v);
      o->timeout_ms = (int)ms;
    } else if (strcmp(name, "--context") == 0) {
      o->context_b64 = opt_value(name, eq, argc, argv, &i);
      o->given |= OPT_CONTEXT;
    } else if (strcmp(name, "--prefix") == 0) {
      o->prefix = opt_value(name, eq, argc, argv, &i);
      o->given |= OPT_PREFIX;
    } else if (strcmp(name, "--limit") == 0) {
      const char *v = opt_value(name, eq, argc, argv, &i);
      int64_t n;
      if (!parse_i64(v, &n) || n < 1)
        usage_error("--limit %s: expected a positive number of keys", v);
      o->limit = (uint64_t)n;
      o->given |= OPT_LIMIT;
    } else if (strcmp(name, "-n") == 0) {
      const char *v = opt_value(name, eq, argc, argv, &i);
      int64_t n;
      if (!parse_i64(v, &n) || n < 1 || n > 1000000)
        usage_error("-n %s: expected a positive number", v);
      o->count = (int)n;
      o->given |= OPT_COUNT;
    } else if (strcmp(name, "--dir") == 0) {
      o->dir = opt_value(name, eq, argc, argv, &i);
      if (!*o->dir) usage_error("--dir needs a directory");
      o->given |= OPT_DIR;
    } else if (strcmp(name, "--base-port") == 0) {
      const char *v = opt_value(name, eq, argc, argv, &i);
      int64_t p;
      if (!parse_i64(v, &p) || p < 1 || p > 65535)
        usage_error("--base-port %s: expected a port from 1 to 65535", v);
      o->base_port = (int)p;
      o->given |= OPT_BASE_PORT;
    } else if (strcmp(name, "--node") == 0) {
      const char *v = opt_value(name, eq, argc, argv, &i);
      int64_t k;
      if (!parse_i64(v, &k) || k < 1 || k > 1000000)
        usage_error("--node %s: expected a node number (1 for node1)", v);
      o->node = (int)k;
      o->given |= OPT_NODE;
    } else if (strcmp(name, "--kvd") == 0) {
      o->kvd = opt_value(name, eq, argc, argv, &i);
      o->given |= OPT_KVD;
    } else {
      takes_value = false;
      if (strcmp(name, "--json") == 0)
        o->json = true;
      else if (strcmp(name, "--no-context") == 0)
        o->given |= OPT_NO_CONTEXT;
      else if (strcmp(name, "--gcounter") == 0)
        o->given |= OPT_GCOUNTER;
      else if (strcmp(name, "--purge") == 0)
        o->given |= OPT_PURGE;
      else
        usage_error("unknown option %s (put -- before arguments that start "
                    "with -)",
                    a);
    }
    if (eq && !takes_value) usage_error("%s takes no value", name);
  }
}

/* ---- encodings ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void print_base64(const uint8_t *p, size_t n) {
  char out[4];
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    out[0] = b64_alphabet[v >> 18 & 63];
    out[1] = b64_alphabet[v >> 12 & 63];
    out[2] = i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=';
    out[3] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    fwrite(out, 1, 4, stdout);
  }
}

static int b64_value(char ch) {
  const char *p = ch ? strchr(b64_alphabet, ch) : NULL;
  return p ? (int)(p - b64_alphabet) : -1;
}

/* Decodes standard base64 (padding optional). Returns false on anything
 * else. *out is malloc'ed (never NULL on success); the caller frees it. */
static bool decode_base64(const char *s, uint8_t **out, size_t *outlen) {
  size_t total = strlen(s), n = total, pad = 0;
  while (n > 0 && s[n - 1] == '=' && pad < 2) {
    n--;
    pad++;
  }
  if ((pad > 0 && total % 4 != 0) || n % 4 == 1) return false;
  uint8_t *buf = malloc(n / 4 * 3 + 3);
  if (!buf) return false;
  size_t len = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64_value(s[i]);
    if (v < 0) {
      free(buf);
      return false;
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[len++] = (uint8_t)(acc >> bits);
    }
  }
  /* Leftover bits must be zero, so each string has one meaning. */
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    free(buf);
    return false;
  }
  *out = buf;
  *outlen = len;
  return true;
}

static void print_hex(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    printf("%02x", p[i]);
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), 0 if there is none. *cp receives
 * the code point. */
static size_t utf8_seq(const uint8_t *p, size_t n, uint32_t *cp) {
  uint8_t b = p[0];
  size_t len;
  uint32_t min;
  if (b < 0x80) {
    *cp = b;
    return 1;
  } else if (b >= 0xc2 && b <= 0xdf) {
    len = 2, min = 0x80, *cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3, min = 0x800, *cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4, min = 0x10000, *cp = b & 0x07;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    *cp = *cp << 6 | (p[i] & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) return 0;
  return len;
}

/* Text: valid UTF-8 and no control characters but tab, newline and CR. */
static bool is_text(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t len = utf8_seq(p + i, n - i, &cp);
    if (len == 0) return false;
    bool control = cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
    if (control && cp != '\t' && cp != '\n' && cp != '\r') return false;
    i += len;
  }
  return true;
}

/* A JSON string of text bytes (is_text must hold). */
static void print_json_text(const uint8_t *p, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    switch (p[i]) {
    case '"':
      fputs("\\\"", stdout);
      break;
    case '\\':
      fputs("\\\\", stdout);
      break;
    case '\n':
      fputs("\\n", stdout);
      break;
    case '\r':
      fputs("\\r", stdout);
      break;
    case '\t':
      fputs("\\t", stdout);
      break;
    default:
      putchar(p[i]);
    }
  }
  putchar('"');
}

static void print_json_str(const char *s) {
  size_t n = strlen(s);
  if (is_text((const uint8_t *)s, n))
    print_json_text((const uint8_t *)s, n);
  else {
    /* A server string that is not clean text: keep the JSON valid. */
    fputs("\"", stdout);
    for (; *s; s++)
      putchar((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f &&
                      *s != '"' && *s != '\\'
                  ? *s
                  : '?');
    fputs("\"", stdout);
  }
}

/* Keys and values: a string when text, else {"base64":"..."}. */
static void print_json_bytes(const uint8_t *p, size_t n) {
  if (is_text(p, n)) {
    print_json_text(p, n);
    return;
  }
  fputs("{\"base64\":\"", stdout);
  print_base64(p, n);
  fputs("\"}", stdout);
}

static void print_json_base64(const uint8_t *p, size_t n) {
  putchar('"');
  print_base64(p, n);
  putchar('"');
}

/* ---- helpers ---- */

/* Prints the error for rc and returns the exit status that goes with it. */
static int fail(kvc_conn *c, int rc) {
  if (rc == KVC_NOTFOUND) return EXIT_NOTFOUND;
  const char *msg = c ? kvc_errmsg(c) : "";
  fprintf(stderr, "kvctl: %s\n", msg[0] ? msg : kvc_strerror(rc));
  return EXIT_ERROR;
}

static const char *kind_name(kvc_kind k) {
  switch (k) {
  case KVC_KIND_NONE:
    return "none";
  case KVC_KIND_REGISTER:
    return "register";
  case KVC_KIND_GCOUNTER:
    return "gcounter";
  case KVC_KIND_PNCOUNTER:
    return "pncounter";
  }
  return "unknown";
}

static bool is_counter(kvc_kind k) {
  return k == KVC_KIND_GCOUNTER || k == KVC_KIND_PNCOUNTER;
}

static const uint8_t *key_of(const options *o, size_t *len) {
  *len = strlen(o->pos[1]);
  return (const uint8_t *)o->pos[1];
}

/* Reads all of standard input (VALUE "-"). */
static int read_stdin(uint8_t **out, size_t *outlen) {
  size_t cap = 65536, len = 0;
  uint8_t *buf = malloc(cap);
  if (!buf) {
    fprintf(stderr, "kvctl: out of memory\n");
    return EXIT_ERROR;
  }
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_STDIN_VALUE) {
        free(buf);
        fprintf(stderr, "kvctl: value on standard input is larger than "
                        "1 GiB\n");
        return EXIT_ERROR;
      }
      uint8_t *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        fprintf(stderr, "kvctl: out of memory\n");
        return EXIT_ERROR;
      }
      buf = nb;
      cap *= 2;
    }
    size_t n = fread(buf + len, 1, cap - len, stdin);
    len += n;
    if (n == 0) {
      if (ferror(stdin)) {
        free(buf);
        fprintf(stderr, "kvctl: reading standard input: %s\n", strerror(errno));
        return EXIT_ERROR;
      }
      break;
    }
  }
  *out = buf;
  *outlen = len;
  return EXIT_OK;
}

/* The context for put and del: the one given with --context, none with
 * --no-context (*ctx NULL), else what a GET of the key returns now. *held
 * keeps the bytes alive (free with free() and kvc_result_free). Returns an
 * exit status; *notfound tells whether the GET found nothing. */
typedef struct ctx_hold {
  const uint8_t *ctx;
  size_t len;
  uint8_t *decoded;
  kvc_result *r;
  bool notfound;
} ctx_hold;

static int context_for(kvc_conn *c, const options *o, ctx_hold *h) {
  memset(h, 0, sizeof *h);
  if (o->given & OPT_NO_CONTEXT) return EXIT_OK;
  if (o->given & OPT_CONTEXT) {
    if (!decode_base64(o->context_b64, &h->decoded, &h->len))
      usage_error("--context: not a base64 context (copy it from the "
                  "\"context\" field of get --json)");
    h->ctx = h->decoded;
    return EXIT_OK;
  }
  size_t klen;
  const uint8_t *key = key_of(o, &klen);
  int rc = kvc_get(c, key, klen, &h->r);
  if (rc != KVC_OK && rc != KVC_NOTFOUND) return fail(c, rc);
  h->notfound = rc == KVC_NOTFOUND;
  kvc_result_context(h->r, &h->ctx, &h->len);
  return EXIT_OK;
}

static void ctx_release(ctx_hold *h) {
  free(h->decoded);
  kvc_result_free(h->r);
}

/* ---- commands ---- */

static int cmd_get(kvc_conn *c, const options *o) {
  size_t klen;
  const uint8_t *key = key_of(o, &klen);
  kvc_result *r = NULL;
  int rc = kvc_get(c, key, klen, &r);
  if (rc != KVC_OK && rc != KVC_NOTFOUND) return fail(c, rc);
  kvc_kind kind = kvc_result_kind(r);
  size_t n = kvc_result_siblings(r);
  if (o->json) {
    fputs("{\"key\":", stdout);
    print_json_bytes(key, klen);
    printf(",\"kind\":\"%s\"", kind_name(kind));
    if (is_counter(kind)) printf(",\"value\":%" PRId64, kvc_result_counter(r));
    fputs(",\"siblings\":[", stdout);
    for (size_t i = 0; i < n; i++) {
      const uint8_t *v;
      size_t vlen;
      if (kvc_result_sibling(r, i, &v, &vlen) != KVC_OK) continue;
      if (i) putchar(',');
      print_json_bytes(v, vlen);
    }
    const uint8_t *ctx;
    size_t ctxlen;
    kvc_result_context(r, &ctx, &ctxlen);
    fputs("],\"context\":", stdout);
    print_json_base64(ctx, ctxlen);
    fputs("}\n", stdout);
  } else if (rc == KVC_OK && is_counter(kind)) {
    printf("%" PRId64 "\n", kvc_result_counter(r));
  } else if (rc == KVC_OK) {
    for (size_t i = 0; i < n; i++) {
      const uint8_t *v;
      size_t vlen;
      if (kvc_result_sibling(r, i, &v, &vlen) != KVC_OK) continue;
      fwrite(v, 1, vlen, stdout);
      putchar('\n');
    }
  }
  kvc_result_free(r);
  return rc == KVC_NOTFOUND ? EXIT_NOTFOUND : EXIT_OK;
}

static int cmd_put(kvc_conn *c, const options *o) {
  size_t klen;
  const uint8_t *key = key_of(o, &klen);
  uint8_t *stdin_value = NULL;
  const uint8_t *value = (const uint8_t *)o->pos[2];
  size_t vlen = strlen(o->pos[2]);
  if (strcmp(o->pos[2], "-") == 0) {
    int st = read_stdin(&stdin_value, &vlen);
    if (st != EXIT_OK) return st;
    value = stdin_value;
  }
  ctx_hold h;
  int st = context_for(c, o, &h);
  if (st == EXIT_OK) {
    int rc = kvc_put(c, key, klen, value, vlen, h.ctx, h.len);
    if (rc != KVC_OK) st = fail(c, rc);
  }
  ctx_release(&h);
  free(stdin_value);
  return st;
}

static int cmd_del(kvc_conn *c, const options *o) {
  size_t klen;
  const uint8_t *key = key_of(o, &klen);
  ctx_hold h;
  int st = context_for(c, o, &h);
  /* Nothing visible to delete: say so rather than write a tombstone. */
  if (st == EXIT_OK && h.notfound) st = EXIT_NOTFOUND;
  if (st == EXIT_OK) {
    int rc = kvc_del(c, key, klen, h.ctx, h.len);
    if (rc != KVC_OK) st = fail(c, rc);
  }
  ctx_release(&h);
  return st;
}

static int incr_by(kvc_conn *c, const options *o, bool down) {
  size_t klen;
  const uint8_t *key = key_of(o, &klen);
  int64_t n = 1;
  if (o->npos > 2 && !parse_i64(o->pos[2], &n))
    usage_error("%s: N must be an integer, not '%s'", o->pos[0], o->pos[2]);
  if (down) {
    if (n == INT64_MIN) usage_error("decr: N is out of range");
    n = -n;
  }
  int64_t value = 0;
  int rc = kvc_incr(c, key, klen, n, (o->given & OPT_GCOUNTER) != 0, &value);
  if (rc != KVC_OK) return fail(c, rc);
  if (o->json) {
    fputs("{\"key\":", stdout);
    print_json_bytes(key, klen);
    printf(",\"value\":%" PRId64 "}\n", value);
  } else {
    printf("%" PRId64 "\n", value);
  }
  return EXIT_OK;
}

static int cmd_incr(kvc_conn *c, const options *o) {
  return incr_by(c, o, false);
}

static int cmd_decr(kvc_conn *c, const options *o) {
  return incr_by(c, o, true);
}

static int cmd_scan(kvc_conn *c, const options *o) {
  const char *prefix = o->prefix ? o->prefix : "";
  uint8_t *cursor = NULL;
  size_t cursorlen = 0;
  uint64_t printed = 0;
  bool limited = (o->given & OPT_LIMIT) != 0;
  int st = EXIT_OK;
  if (o->json) fputs("{\"keys\":[", stdout);
  for (;;) {
    uint32_t page = 0;
    if (limited)
      page = o->limit - printed < SCAN_PAGE ? (uint32_t)(o->limit - printed)
                                            : SCAN_PAGE;
    kvc_result *r = NULL;
    int rc = kvc_scan(c, cursor, cursorlen, prefix, strlen(prefix), page, &r);
    if (rc != KVC_OK) {
      st = fail(c, rc);
      break;
    }
    size_t n = kvc_result_keys(r);
    for (size_t i = 0; i < n && !(limited && printed >= o->limit); i++) {
      const uint8_t *k;
      size_t klen;
      if (kvc_result_key(r, i, &k, &klen) != KVC_OK) continue;
      if (o->json) {
        if (printed) putchar(',');
        print_json_bytes(k, klen);
      } else {
        fwrite(k, 1, klen, stdout);
        putchar('\n');
      }
      printed++;
    }
    const uint8_t *next;
    size_t nextlen;
    kvc_result_cursor(r, &next, &nextlen);
    /* A server handing back the cursor it was given would loop forever. */
    bool stuck = nextlen > 0 && nextlen == cursorlen &&
                 memcmp(next, cursor, nextlen) == 0;
    free(cursor);
    cursor = NULL;
    if (nextlen > 0) {
      cursor = malloc(nextlen);
      if (!cursor) {
        kvc_result_free(r);
        fprintf(stderr, "kvctl: out of memory\n");
        st = EXIT_ERROR;
        break;
      }
      memcpy(cursor, next, nextlen);
    }
    cursorlen = nextlen;
    kvc_result_free(r);
    if (stuck) {
      fprintf(stderr, "kvctl: scan: the server returned the same cursor "
                      "twice; stopping\n");
      st = EXIT_ERROR;
      break;
    }
    if (cursorlen == 0 || (limited && printed >= o->limit)) break;
  }
  free(cursor);
  if (o->json && st == EXIT_OK) fputs("]}\n", stdout);
  if (o->json && st != EXIT_OK) putchar('\n');
  return st;
}

static void print_size(const char *label, uint64_t bytes) {
  static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    printf("%s: %" PRIu64 " bytes\n", label, bytes);
  else
    printf("%s: %.1f %s (%" PRIu64 " bytes)\n", label, v, units[u], bytes);
}

static int cmd_status(kvc_conn *c, const options *o) {
  kvc_result *r = NULL;
  int rc = kvc_status(c, &r);
  if (rc != KVC_OK) return fail(c, rc);
  const kvc_status_info *s = kvc_result_status_info(r);
  if (!s) {
    kvc_result_free(r);
    fprintf(stderr, "kvctl: status: the server sent no status\n");
    return EXIT_ERROR;
  }
  if (o->json) {
    fputs("{\"name\":", stdout);
    print_json_str(s->name);
    printf(",\"replica_id\":\"%016" PRIx64 "\",\"version\":", s->replica_id);
    print_json_str(s->version);
    printf(",\"uptime_ms\":%" PRIu64 ",\"keys\":%" PRIu64 ",\"merkle_root\":\"",
           s->uptime_ms, s->keys);
    print_hex(s->merkle_root, s->merkle_root_len);
    printf("\",\"sync\":%s,\"map_size\":%" PRIu64 ",\"map_used\":%" PRIu64
           ",\"commits\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"stored\":%" PRIu64
           ",\"cluster\":",
           s->sync ? "true" : "false", s->map_size, s->map_used, s->commits,
           s->writes, s->stored);
    print_json_str(s->cluster);
    printf(",\"peer_messages_sent\":%" PRIu64 ",\"peer_bytes_sent\":%" PRIu64
           ",\"peer_messages_received\":%" PRIu64
           ",\"peer_bytes_received\":%" PRIu64,
           s->peer_messages_sent, s->peer_bytes_sent, s->peer_messages_received,
           s->peer_bytes_received);
    printf(",\"peering\":%s,\"insecure\":%s,\"invalid_envelopes\":%" PRIu64
           ",\"rumors\":{\"added\":%" PRIu64 ",\"pushed\":%" PRIu64
           ",\"acks\":%" PRIu64 ",\"news_acks\":%" PRIu64 ",\"died\":%" PRIu64
           ",\"dropped\":%" PRIu64 ",\"hot\":%" PRIu64 "},",
           s->peering ? "true" : "false", s->insecure ? "true" : "false",
           s->invalid_envelopes, s->rumors_added, s->rumors_pushed,
           s->rumor_acks, s->rumor_news_acks, s->rumors_died, s->rumors_dropped,
           s->rumors_hot);
    printf("\"invalid\":{\"truncated\":%" PRIu64 ",\"bad_version\":%" PRIu64
           ",\"wrong_cluster\":%" PRIu64 ",\"stale\":%" PRIu64
           ",\"replay\":%" PRIu64 ",\"bad_tag\":%" PRIu64
           ",\"mode_mismatch\":%" PRIu64 ",\"malformed\":%" PRIu64 "},",
           s->invalid_truncated, s->invalid_bad_version,
           s->invalid_wrong_cluster, s->invalid_stale, s->invalid_replay,
           s->invalid_bad_tag, s->invalid_mode_mismatch, s->peer_malformed);
    printf("\"limits\":{\"clients_refused\":%" PRIu64
           ",\"clients_refused_per_addr\":%" PRIu64
           ",\"read_timeouts\":%" PRIu64 ",\"idle_timeouts\":%" PRIu64
           ",\"input_buffer_refused\":%" PRIu64
           ",\"input_buffer_bytes\":%" PRIu64 ",\"output_paused\":%" PRIu64
           ",\"frames_too_large\":%" PRIu64 ",\"peer_conns_refused\":%" PRIu64
           ",\"peer_handshake_timeouts\":%" PRIu64
           ",\"peer_rate_limited\":%" PRIu64 ",\"peer_oversize\":%" PRIu64 "},",
           s->clients_refused, s->clients_refused_per_addr, s->read_timeouts,
           s->idle_timeouts, s->input_buffer_refused, s->input_buffer_bytes,
           s->output_paused, s->frames_too_large, s->peer_conns_refused,
           s->peer_handshake_timeouts, s->peer_rate_limited, s->peer_oversize);
    printf("\"members\":{\"alive\":%" PRIu64 ",\"suspect\":%" PRIu64
           ",\"dead\":%" PRIu64 ",\"left\":%" PRIu64 "},\"swim\":{\"sent\":%" PRIu64
           ",\"received\":%" PRIu64 ",\"health\":%u},\"peers\":[",
           s->members_alive, s->members_suspect, s->members_dead,
           s->members_left, s->swim_messages_sent, s->swim_messages_received,
           s->swim_health);
    for (size_t i = 0; i < s->npeers; i++) {
      const kvc_peer_info *p = &s->peers[i];
      fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
      print_json_str(p->name);
      fputs(",\"addr\":", stdout);
      print_json_str(p->addr);
      printf(",\"replica_id\":\"%016" PRIx64
             "\",\"alive\":%s,\"exchanges\":%" PRIu64
             ",\"last_exchange_ms_ago\":%" PRIu64 ",\"keys_pushed\":%" PRIu64
             ",\"keys_pulled\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
             ",\"bytes_received\":%" PRIu64 "}",
             p->replica_id, p->alive ? "true" : "false", p->exchanges,
             p->last_exchange_ms_ago, p->keys_pushed, p->keys_pulled,
             p->bytes_sent, p->bytes_received);
    }
    fputs("]}\n", stdout);
  } else {
    uint64_t up = s->uptime_ms / 1000;
    printf("name: %s\n", s->name);
    printf("replica_id: %016" PRIx64 "\n", s->replica_id);
    printf("version: %s\n", s->version);
    printf("uptime: %" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m %02" PRIu64
           "s\n",
           up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
    printf("keys: %" PRIu64 "\n", s->keys);
    fputs("merkle_root: ", stdout);
    print_hex(s->merkle_root, s->merkle_root_len);
    putchar('\n');
    printf("sync: %s\n", s->sync ? "always (fsync on every commit)"
                                 : "none (writes are not fsynced)");
    print_size("map_size", s->map_size);
    print_size("map_used", s->map_used);
    printf("commits: %" PRIu64 "\n", s->commits);
    printf("writes: %" PRIu64 "\n", s->writes);
    printf("stored: %" PRIu64 " (deleted keys included)\n", s->stored);
    printf("cluster: %s\n", s->cluster);
    printf("limits: refused %" PRIu64 " clients (max-clients), %" PRIu64
           " (max-clients-per-addr), %" PRIu64
           " (max-input-buffer-bytes, %" PRIu64 " bytes held now), %" PRIu64
           " oversize requests; timeouts %" PRIu64 " read, %" PRIu64
           " idle; output paused %" PRIu64 " times\n",
           s->clients_refused, s->clients_refused_per_addr,
           s->input_buffer_refused, s->input_buffer_bytes, s->frames_too_large,
           s->read_timeouts, s->idle_timeouts, s->output_paused);
    if (!s->peering) {
      puts("peering: off (no cluster key: a single replica)");
    } else {
      printf("peering: %s\n", s->insecure ? "INSECURE (--insecure: peer "
                                            "traffic is not authenticated)"
                                          : "sealed");
      printf("invalid_envelopes: %" PRIu64 " (truncated %" PRIu64
             ", bad_version %" PRIu64 ", wrong_cluster %" PRIu64
             ", stale %" PRIu64 ", replay %" PRIu64 ", bad_tag %" PRIu64
             ", mode_mismatch %" PRIu64 "); malformed messages %" PRIu64 "\n",
             s->invalid_envelopes, s->invalid_truncated, s->invalid_bad_version,
             s->invalid_wrong_cluster, s->invalid_stale, s->invalid_replay,
             s->invalid_bad_tag, s->invalid_mode_mismatch, s->peer_malformed);
      printf("peer_limits: connections refused %" PRIu64
             ", handshake timeouts %" PRIu64 ", rate limited %" PRIu64
             ", oversize frames %" PRIu64 "\n",
             s->peer_conns_refused, s->peer_handshake_timeouts,
             s->peer_rate_limited, s->peer_oversize);
      printf("peer_traffic: sent %" PRIu64 " messages (%" PRIu64
             " bytes), received %" PRIu64 " (%" PRIu64 " bytes)\n",
             s->peer_messages_sent, s->peer_bytes_sent,
             s->peer_messages_received, s->peer_bytes_received);
      printf("rumors: added %" PRIu64 ", pushed %" PRIu64 ", acks %" PRIu64
             " (news %" PRIu64 "), died %" PRIu64 ", dropped %" PRIu64
             ", hot %" PRIu64 "\n",
             s->rumors_added, s->rumors_pushed, s->rumor_acks,
             s->rumor_news_acks, s->rumors_died, s->rumors_dropped,
             s->rumors_hot);
      printf("members: %" PRIu64 " alive, %" PRIu64 " suspect, %" PRIu64
             " dead, %" PRIu64 " left (self included; kvctl members lists "
             "them)\n",
             s->members_alive, s->members_suspect, s->members_dead,
             s->members_left);
      printf("swim: sent %" PRIu64 ", received %" PRIu64
             " messages, local health %u%s\n",
             s->swim_messages_sent, s->swim_messages_received, s->swim_health,
             s->swim_health ? " (degraded: probes slowed)" : " (healthy)");
      printf("peers: %zu\n", s->npeers);
      for (size_t i = 0; i < s->npeers; i++) {
        const kvc_peer_info *p = &s->peers[i];
        printf("  %-10s %-21s %-5s", p->name[0] ? p->name : "?", p->addr,
               p->alive ? "alive" : "down");
        if (p->exchanges)
          printf(" exchanges %" PRIu64
                 ", last %.1fs ago, repaired there %" PRIu64 ", here %" PRIu64,
                 p->exchanges, (double)p->last_exchange_ms_ago / 1000.0,
                 p->keys_pushed, p->keys_pulled);
        else
          fputs(" no exchange yet", stdout);
        putchar('\n');
      }
    }
  }
  kvc_result_free(r);
  return EXIT_OK;
}

static void print_duration(uint64_t ms) {
  uint64_t s = ms / 1000;
  if (s < 60)
    printf("%.1fs", (double)ms / 1000.0);
  else if (s < 3600)
    printf("%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
  else
    printf("%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
}

static int cmd_members(kvc_conn *c, const options *o) {
  kvc_result *r = NULL;
  int rc = kvc_members(c, &r);
  if (rc != KVC_OK) return fail(c, rc);
  const kvc_member_info *m;
  size_t n = kvc_result_members(r, &m);
  if (o->json) {
    putchar('[');
    for (size_t i = 0; i < n; i++) {
      fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
      print_json_str(m[i].name);
      fputs(",\"addr\":", stdout);
      print_json_str(m[i].addr);
      printf(",\"replica_id\":\"%016" PRIx64 "\",\"state\":", m[i].replica_id);
      print_json_str(m[i].state);
      printf(",\"incarnation\":%" PRIu64 ",\"since_ms\":%" PRIu64
             ",\"self\":%s}",
             m[i].incarnation, m[i].since_ms, m[i].self ? "true" : "false");
    }
    puts("]");
  } else if (n == 0) {
    puts("no members: peer networking is off (no cluster key)");
  } else {
    printf("%-16s %-22s %-8s %-12s %s\n", "NAME", "ADDRESS", "STATE",
           "INCARNATION", "SINCE");
    for (size_t i = 0; i < n; i++) {
      printf("%-16s %-22s %-8s %-12" PRIu64 " ", m[i].name, m[i].addr,
             m[i].state, m[i].incarnation);
      print_duration(m[i].since_ms);
      puts(m[i].self ? " (this replica)" : "");
    }
  }
  kvc_result_free(r);
  return EXIT_OK;
}

static int cmd_verify(kvc_conn *c, const options *o) {
  uint64_t mismatched = 0;
  int rc = kvc_verify(c, &mismatched);
  if (rc != KVC_OK && rc != KVC_VERIFY_MISMATCH) return fail(c, rc);
  if (o->json)
    printf("{\"ok\":%s,\"mismatched_segments\":%" PRIu64 "}\n",
           rc == KVC_OK ? "true" : "false", mismatched);
  else if (rc == KVC_OK)
    puts("ok: the Merkle tree matches the stored objects");
  if (rc == KVC_OK) return EXIT_OK;
  fprintf(stderr,
          "kvctl: verify: %" PRIu64 " Merkle segment(s) differ from the "
          "stored objects (%s)\n",
          mismatched, kvc_errmsg(c));
  return EXIT_ERROR;
}

static int cmd_keygen(kvc_conn *c, const options *o) {
  (void)c;
  (void)o;
  uint8_t key[32];
  size_t got = 0;
  while (got < sizeof key) {
    ssize_t n = getrandom(key + got, sizeof key - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fprintf(stderr, "kvctl: getrandom: %s\n", strerror(errno));
      return EXIT_ERROR;
    }
    got += (size_t)n;
  }
  print_base64(key, sizeof key);
  putchar('\n');
  return EXIT_OK;
}

static int cmd_backup(kvc_conn *c, const options *o) {
  kvc_backup_info b;
  int rc = kvc_backup(c, o->dir, &b);
  if (rc != KVC_OK) return fail(c, rc);
  if (o->json) {
    fputs("{\"dir\":", stdout);
    print_json_str(o->dir);
    printf(",\"bytes\":%" PRIu64 ",\"elapsed_ms\":%" PRIu64
           ",\"replica_id\":\"%016" PRIx64 "\"}\n",
           b.bytes, b.elapsed_ms, b.replica_id);
  } else {
    printf("backup of replica %016" PRIx64 " written to %s: %" PRIu64
           " bytes in %" PRIu64 " ms\n",
           b.replica_id, o->dir, b.bytes, b.elapsed_ms);
  }
  return EXIT_OK;
}

static int cmd_help(kvc_conn *c, const options *o) {
  (void)c;
  (void)o;
  print_usage(stdout);
  return EXIT_OK;
}

static int cmd_cluster(kvc_conn *c, const options *o) {
  (void)c;
  kvctl_cluster_args a = {
      .sub = o->pos[1],
      .dir = o->dir,
      .nodes = strcmp(o->pos[1], "up") == 0 ? o->count : 0,
      .base_port = o->base_port,
      .node = o->node,
      .lines = strcmp(o->pos[1], "logs") == 0 ? o->count : 0,
      .purge = (o->given & OPT_PURGE) != 0,
      .kvd = o->kvd,
      .json = o->json,
  };
  return kvctl_cluster_run(&a);
}

static const command commands[] = {
    {"get", 1, 1, 0, true, cmd_get, "get KEY"},
    {"put", 2, 2, OPT_CONTEXT | OPT_NO_CONTEXT, true, cmd_put,
     "put KEY VALUE [--context C | --no-context]"},
    {"del", 1, 1, OPT_CONTEXT | OPT_NO_CONTEXT, true, cmd_del,
     "del KEY [--context C | --no-context]"},
    {"incr", 1, 2, OPT_GCOUNTER, true, cmd_incr, "incr KEY [N] [--gcounter]"},
    {"decr", 1, 2, 0, true, cmd_decr, "decr KEY [N]"},
    {"scan", 0, 0, OPT_PREFIX | OPT_LIMIT, true, cmd_scan,
     "scan [--prefix P] [--limit N]"},
    {"status", 0, 0, 0, true, cmd_status, "status"},
    {"verify", 0, 0, 0, true, cmd_verify, "verify"},
    {"members", 0, 0, 0, true, cmd_members, "members [--json]"},
    {"keygen", 0, 0, 0, false, cmd_keygen, "keygen"},
    {"backup", 0, 0, OPT_DIR, true, cmd_backup, "backup --dir D"},
    {"help", 0, 1, 0, false, cmd_help, "help [COMMAND]"},
    {"cluster up", 0, 0, OPT_COUNT | OPT_DIR | OPT_BASE_PORT | OPT_KVD, false,
     cmd_cluster, "cluster up -n N --dir D [--base-port P] [--kvd PATH]"},
    {"cluster start", 0, 0, OPT_DIR | OPT_NODE | OPT_KVD, false, cmd_cluster,
     "cluster start --dir D [--node K] [--kvd PATH]"},
    {"cluster stop", 0, 0, OPT_DIR | OPT_NODE, false, cmd_cluster,
     "cluster stop --dir D [--node K]"},
    {"cluster status", 0, 0, OPT_DIR, false, cmd_cluster,
     "cluster status --dir D [--json]"},
    {"cluster logs", 0, 0, OPT_DIR | OPT_NODE | OPT_COUNT, false, cmd_cluster,
     "cluster logs --dir D [--node K] [-n LINES]"},
    {"cluster down", 0, 0, OPT_DIR | OPT_PURGE, false, cmd_cluster,
     "cluster down --dir D [--purge]"},
};

static const struct {
  cmd_opt bit;
  const char *name;
} opt_names[] = {
    {OPT_CONTEXT, "--context"},   {OPT_NO_CONTEXT, "--no-context"},
    {OPT_GCOUNTER, "--gcounter"}, {OPT_PREFIX, "--prefix"},
    {OPT_LIMIT, "--limit"},       {OPT_COUNT, "-n"},
    {OPT_DIR, "--dir"},           {OPT_BASE_PORT, "--base-port"},
    {OPT_NODE, "--node"},         {OPT_PURGE, "--purge"},
    {OPT_KVD, "--kvd"},
};

/* The command named by the first one or two arguments; *words says how many
 * it took. */
static const command *find_command(const options *o, int *words) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    const char *name = commands[i].name, *space = strchr(name, ' ');
    if (!space && strcmp(o->pos[0], name) == 0) {
      *words = 1;
      return &commands[i];
    }
    if (space && strlen(o->pos[0]) == (size_t)(space - name) &&
        strncmp(o->pos[0], name, (size_t)(space - name)) == 0 && o->npos > 1 &&
        strcmp(o->pos[1], space + 1) == 0) {
      *words = 2;
      return &commands[i];
    }
  }
  if (strcmp(o->pos[0], "cluster") == 0 && o->npos == 1)
    usage_error("cluster needs a subcommand: up, start, stop, status, logs or "
                "down");
  if (strcmp(o->pos[0], "cluster") == 0)
    usage_error("unknown command 'cluster %s' (cluster up, start, stop, "
                "status, logs or down)",
                o->pos[1]);
  usage_error("unknown command '%s'", o->pos[0]);
}

/* Reads the token: the file's first line without trailing whitespace. */
static int read_token(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "kvctl: cannot open token file %s: %s\n", path,
            strerror(errno));
    return EXIT_ERROR;
  }
  size_t n = fread(buf, 1, cap - 1, f);
  bool err = ferror(f) != 0;
  bool more = !err && fgetc(f) != EOF;
  fclose(f);
  if (err) {
    fprintf(stderr, "kvctl: cannot read token file %s\n", path);
    return EXIT_ERROR;
  }
  buf[n] = '\0';
  char *nl = strpbrk(buf, "\r\n");
  if (nl)
    *nl = '\0';
  else if (more) {
    fprintf(stderr, "kvctl: token file %s: token longer than %zu bytes\n", path,
            cap - 2);
    return EXIT_ERROR;
  }
  n = strlen(buf);
  while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    buf[--n] = '\0';
  if (n == 0) {
    fprintf(stderr, "kvctl: token file %s holds no token\n", path);
    return EXIT_ERROR;
  }
  return EXIT_OK;
}

int main(int argc, char **argv) {
  options o = {0};
  parse_args(&o, argc, argv);
  if (o.npos == 0) {
    fputs("kvctl: no command given\n\n", stderr);
    print_usage(stderr);
    return EXIT_USAGE;
  }
  int words;
  const command *cmd = find_command(&o, &words);
  int nargs = o.npos - words;
  if (nargs < cmd->min_args || nargs > cmd->max_args)
    usage_error("%s: wrong number of arguments\nusage: kvctl %s", cmd->name,
                cmd->synopsis);
  for (size_t i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
    if ((o.given & opt_names[i].bit) && !(cmd->allowed & opt_names[i].bit))
      usage_error("%s does not apply to %s\nusage: kvctl %s", opt_names[i].name,
                  cmd->name, cmd->synopsis);
  if ((o.given & OPT_CONTEXT) && (o.given & OPT_NO_CONTEXT))
    usage_error("%s: give --context or --no-context, not both", cmd->name);
  if ((cmd->run == cmd_cluster || cmd->run == cmd_backup) &&
      !(o.given & OPT_DIR))
    usage_error("%s needs --dir D\nusage: kvctl %s", cmd->name, cmd->synopsis);
  if (cmd->run == cmd_backup && o.dir[0] != '/')
    usage_error("backup: --dir must be an absolute path (the directory is on "
                "the replica's machine)");
  if (nargs >= 1 && cmd->min_args >= 1 && o.pos[1][0] == '\0')
    usage_error("%s: KEY must not be empty", cmd->name);
  /* Arguments are checked before connecting, so a typo costs no request. */
  int64_t n = 1;
  if ((cmd->run == cmd_incr || cmd->run == cmd_decr) && nargs == 2 &&
      !parse_i64(o.pos[2], &n))
    usage_error("%s: N must be an integer, not '%s'", cmd->name, o.pos[2]);
  if (cmd->run == cmd_decr && nargs == 2 && n == INT64_MIN)
    usage_error("decr: N is out of range");
  uint8_t *ctx;
  size_t ctxlen;
  if (o.given & OPT_CONTEXT) {
    if (!decode_base64(o.context_b64, &ctx, &ctxlen))
      usage_error("--context: not a base64 context (copy it from the "
                  "\"context\" field of get --json)");
    free(ctx);
  }

  kvc_conn *c = NULL;
  char token[MAX_TOKEN + 2];
  if (cmd->connects) {
    kvc_options copts = {0};
    int timeout = o.timeout_ms;
    if (!timeout && cmd->run == cmd_verify) timeout = VERIFY_TIMEOUT_MS;
    if (!timeout && cmd->run == cmd_backup) timeout = BACKUP_TIMEOUT_MS;
    copts.connect_timeout_ms = o.timeout_ms;
    copts.io_timeout_ms = timeout;
    if (o.token_file) {
      int st = read_token(o.token_file, token, sizeof token);
      if (st != EXIT_OK) return st;
      copts.token = token;
    }
    int rc = kvc_connect(o.host, o.port, &copts, &c);
    if (rc != KVC_OK) {
      bool net = rc == KVC_IO || rc == KVC_TIMEOUT;
      fprintf(stderr, "kvctl: %s%s\n", kvc_errmsg(c),
              net ? " (check -h HOST:PORT and that kvd is running there)" : "");
      kvc_close(c);
      return EXIT_ERROR;
    }
  }
  int st = cmd->run(c, &o);
  kvc_close(c);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "kvctl: writing output: %s\n", strerror(errno));
    return EXIT_ERROR;
  }
  return st;
}
