/*
 * Settings parsing for kvd, generated from the KVD_SETTINGS table. Values are
 * kept as strings while the file and flags are read, so a later source simply
 * replaces an earlier one; kvd_config_finish then validates each value once
 * and fills the parsed fields, naming the setting in any error.
 */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"

typedef struct setting {
  const char *name;
  kvd_setting_type type;
  const char *def;
  const char *help;
  size_t offset;
} setting;

static const setting settings[] = {
#define KVD_ROW(field, name, type, def, help)                                  \
  {name, KVD_##type, def, help, offsetof(kvd_config, field)},
    KVD_SETTINGS(KVD_ROW)
#undef KVD_ROW
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static char **slot(kvd_config *cfg, const setting *s) {
  return (char **)((char *)cfg + s->offset);
}

static const setting *find(const char *name, size_t len) {
  for (size_t i = 0; i < NSETTINGS; i++)
    if (strlen(settings[i].name) == len &&
        strncmp(settings[i].name, name, len) == 0)
      return &settings[i];
  return NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return KV_INVALID;
}

static void set(kvd_config *cfg, const setting *s, const char *val,
                size_t len) {
  char **p = slot(cfg, s);
  free(*p);
  *p = strndup(val, len);
  if (!*p) kv_panic("out of memory");
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1]))
    *--e = 0;
  return s;
}

/* A flat INI file: "name = value" lines, '#' or ';' comments, blank lines.
 * Sections are not used and refused, so a misplaced setting is not silently
 * ignored. */
static int read_file(kvd_config *cfg, const char *path, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f)
    return fail(err, errlen, "config: cannot open %s: %s", path,
                strerror(errno));
  char line[4096];
  int lineno = 0, rc = KV_OK;
  while (rc == KV_OK && fgets(line, sizeof line, f)) {
    lineno++;
    char *l = trim(line);
    if (!*l || *l == '#' || *l == ';') continue;
    char *eq = strchr(l, '=');
    if (!eq) {
      rc = fail(err, errlen, "config %s:%d: expected 'name = value'", path,
                lineno);
      break;
    }
    *eq = 0;
    char *name = trim(l), *val = trim(eq + 1);
    const setting *s = find(name, strlen(name));
    if (!s || s->offset == offsetof(kvd_config, config))
      rc = fail(err, errlen, "config %s:%d: unknown setting '%s'", path, lineno,
                name);
    else
      set(cfg, s, val, strlen(val));
  }
  fclose(f);
  return rc;
}

static int parse_size(const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || end == v || *v == '-') return KV_INVALID;
  uint64_t mul = 1;
  switch (tolower((unsigned char)*end)) {
  case 0:
    break;
  case 'k':
    mul = 1ull << 10;
    end++;
    break;
  case 'm':
    mul = 1ull << 20;
    end++;
    break;
  case 'g':
    mul = 1ull << 30;
    end++;
    break;
  default:
    return KV_INVALID;
  }
  if (*end == 'b' || *end == 'B') end++;
  if (*end || n > UINT64_MAX / mul) return KV_INVALID;
  *out = n * mul;
  return KV_OK;
}

static int parse_bool(const char *v, bool *out) {
  if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1"))
    *out = true;
  else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0"))
    *out = false;
  else
    return KV_INVALID;
  return KV_OK;
}

int kvd_parse_addr(const char *addr, char *host, size_t hostlen, int *port) {
  const char *colon = strrchr(addr, ':');
  if (!colon || colon == addr) return KV_INVALID;
  size_t hl = (size_t)(colon - addr);
  if (addr[0] == '[' && colon[-1] == ']') addr++, hl -= 2; /* [::1]:7400 */
  if (hl + 1 > hostlen) return KV_INVALID;
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
    return KV_INVALID;
  memcpy(host, addr, hl);
  host[hl] = 0;
  *port = (int)p;
  return KV_OK;
}

static int check(kvd_config *cfg, const setting *s, char *err, size_t errlen) {
  const char *v = *slot(cfg, s);
  uint64_t n;
  bool b;
  char host[256];
  int port;
  switch (s->type) {
  case KVD_STR:
    return KV_OK;
  case KVD_SIZE:
    if (parse_size(v, &n))
      return fail(err, errlen, "invalid %s '%s': expected bytes such as 16m",
                  s->name, v);
    return KV_OK;
  case KVD_UINT:
    if (parse_size(v, &n) || strpbrk(v, "kKmMgGbB"))
      return fail(err, errlen, "invalid %s '%s': expected a whole number",
                  s->name, v);
    return KV_OK;
  case KVD_BOOL:
    if (parse_bool(v, &b))
      return fail(err, errlen, "invalid %s '%s': expected yes or no", s->name,
                  v);
    return KV_OK;
  case KVD_ADDR:
    if (*v && kvd_parse_addr(v, host, sizeof host, &port))
      return fail(err, errlen, "invalid %s '%s': expected host:port", s->name,
                  v);
    return KV_OK;
  }
  return KV_OK;
}

static int finish(kvd_config *c, char *err, size_t errlen) {
  for (size_t i = 0; i < NSETTINGS; i++) {
    int rc = check(c, &settings[i], err, errlen);
    if (rc) return rc;
  }
  (void)parse_size(c->map_size, &c->map_size_n);
  (void)parse_size(c->max_value_bytes, &c->max_value_n);
  (void)parse_size(c->max_frame_bytes, &c->max_frame_n);
  (void)parse_size(c->segments, &c->segments_n);
  (void)parse_size(c->max_siblings, &c->max_siblings_n);
  (void)parse_size(c->max_clients, &c->max_clients_n);
  (void)parse_size(c->max_pipeline, &c->max_pipeline_n);
  (void)parse_bool(c->verify, &c->verify_n);
  (void)parse_bool(c->insecure, &c->insecure_n);
  (void)parse_bool(c->rumors, &c->rumors_n);
  (void)parse_bool(c->anti_entropy, &c->anti_entropy_n);
  (void)parse_size(c->ae_interval, &c->ae_interval_n);
  (void)parse_size(c->ae_max_segments, &c->ae_max_segments_n);
  (void)parse_size(c->ae_max_keys, &c->ae_max_keys_n);
  (void)parse_size(c->fanout, &c->fanout_n);
  (void)parse_size(c->rumor_k, &c->rumor_k_n);
  (void)parse_size(c->peer_max_frame, &c->peer_max_frame_n);
  (void)parse_size(c->max_clock_skew, &c->max_clock_skew_n);
  (void)parse_size(c->probe_interval, &c->probe_interval_n);
  (void)parse_size(c->probe_timeout, &c->probe_timeout_n);
  (void)parse_size(c->indirect_checks, &c->indirect_checks_n);
  (void)parse_size(c->suspicion_mult, &c->suspicion_mult_n);
  (void)parse_size(c->suspicion_max_mult, &c->suspicion_max_mult_n);
  (void)parse_size(c->retransmit_mult, &c->retransmit_mult_n);
  (void)parse_size(c->awareness_max, &c->awareness_max_n);
  (void)parse_size(c->gossip_interval, &c->gossip_interval_n);
  (void)parse_size(c->gossip_nodes, &c->gossip_nodes_n);
  (void)parse_size(c->gossip_to_the_dead, &c->gossip_to_the_dead_n);
  (void)parse_size(c->push_pull_interval, &c->push_pull_interval_n);
  (void)parse_size(c->tombstone_grace, &c->tombstone_grace_n);
  (void)parse_size(c->udp_buffer, &c->udp_buffer_n);
  (void)parse_size(c->max_clients_per_addr, &c->max_clients_per_addr_n);
  (void)parse_size(c->read_timeout, &c->read_timeout_n);
  (void)parse_size(c->idle_timeout, &c->idle_timeout_n);
  (void)parse_size(c->max_input_buffer, &c->max_input_buffer_n);
  (void)parse_size(c->max_output_buffer, &c->max_output_buffer_n);
  (void)parse_size(c->max_peer_conns_per_addr, &c->max_peer_conns_per_addr_n);
  (void)parse_size(c->peer_rate, &c->peer_rate_n);
  (void)parse_size(c->peer_burst, &c->peer_burst_n);

  if (!strcmp(c->sync, "always"))
    c->sync_n = true;
  else if (!strcmp(c->sync, "none"))
    c->sync_n = false;
  else
    return fail(err, errlen, "invalid sync '%s': expected always or none",
                c->sync);
  if ((c->log_level_n = kvd_log_level_parse(c->log_level)) < 0)
    return fail(err, errlen,
                "invalid log-level '%s': expected debug, info, warn or error",
                c->log_level);
  uint64_t seg = c->segments_n;
  if (seg < 16 || seg > (1u << 24) || (seg & (seg - 1)))
    return fail(err, errlen,
                "invalid segments %llu: a power of two from 16 to 16777216",
                (unsigned long long)seg);
  if (c->max_siblings_n < 1 || c->max_siblings_n > 100000)
    return fail(err, errlen, "invalid max-siblings: from 1 to 100000");
  if (c->max_value_n < 1 || c->max_value_n > (1ull << 30))
    return fail(err, errlen, "invalid max-value-bytes: from 1 to 1g");
  if (c->max_frame_n < 1024 || c->max_frame_n > (2ull << 30))
    return fail(err, errlen, "invalid max-frame-bytes: from 1k to 2g");
  if (c->max_frame_n < c->max_value_n + 4096)
    return fail(err, errlen,
                "max-frame-bytes must exceed max-value-bytes by at least 4k");
  if (c->max_clients_n < 1 || c->max_pipeline_n < 1)
    return fail(err, errlen, "max-clients and max-pipeline must be positive");
  if (c->max_clients_per_addr_n < 1 || c->max_peer_conns_per_addr_n < 1)
    return fail(err, errlen,
                "max-clients-per-addr and max-peer-conns-per-addr must be "
                "positive");
  if (c->read_timeout_n < 100 || c->read_timeout_n > 3600000)
    return fail(err, errlen, "invalid read-timeout: from 100 to 3600000 ms");
  if (c->idle_timeout_n > 0 && c->idle_timeout_n < 100)
    return fail(err, errlen,
                "invalid idle-timeout: 0 (never) or at least 100 ms");
  if (c->max_input_buffer_n < c->max_frame_n)
    return fail(err, errlen,
                "max-input-buffer-bytes must be at least max-frame-bytes");
  if (c->max_output_buffer_n < (64u << 10))
    return fail(err, errlen, "invalid max-output-buffer-bytes: at least 64k");
  if (c->peer_rate_n > 0 && c->peer_burst_n < 1)
    return fail(err, errlen, "peer-burst must be positive");
  if (c->map_size_n < (1u << 20))
    return fail(err, errlen, "invalid map-size: at least 1m");
  if (!*c->data_dir) return fail(err, errlen, "data-dir must not be empty");
  if (c->ae_interval_n < 10)
    return fail(err, errlen, "invalid ae-interval: at least 10 ms");
  if (c->fanout_n < 1 || c->fanout_n > 64 || c->rumor_k_n < 1 ||
      c->rumor_k_n > 64)
    return fail(err, errlen, "fanout and rumor-k must be from 1 to 64");
  if (c->ae_max_segments_n < 1 || c->ae_max_keys_n < 1)
    return fail(err, errlen,
                "ae-max-segments and ae-max-keys must be positive");
  if (c->peer_max_frame_n < (1u << 20) || c->peer_max_frame_n > (1ull << 31))
    return fail(err, errlen, "invalid peer-max-frame-bytes: from 1m to 2g");
  if (c->probe_interval_n < 10 || c->probe_interval_n > 600000 ||
      c->probe_timeout_n < 1 || c->probe_timeout_n >= c->probe_interval_n)
    return fail(err, errlen,
                "invalid probe-interval/probe-timeout: probe-interval from 10 "
                "to 600000 ms, probe-timeout from 1 ms to below it");
  if (c->indirect_checks_n < 1 || c->indirect_checks_n > 16 ||
      c->gossip_nodes_n < 1 ||
      c->gossip_nodes_n > 64)
    return fail(err, errlen,
                "invalid indirect-checks (1 to 16) or gossip-nodes (1 to 64)");
  if (c->suspicion_mult_n < 1 || c->suspicion_mult_n > 100 ||
      c->suspicion_max_mult_n < 1 || c->suspicion_max_mult_n > 100 ||
      c->retransmit_mult_n < 1 || c->retransmit_mult_n > 100 ||
      c->awareness_max_n < 1 || c->awareness_max_n > 100)
    return fail(err, errlen,
                "suspicion-mult, suspicion-max-mult, retransmit-mult and "
                "awareness-max must be from 1 to 100");
  if (c->gossip_interval_n < 1 || c->gossip_interval_n > 600000 ||
      c->push_pull_interval_n < 100 || c->gossip_to_the_dead_n < 1)
    return fail(err, errlen,
                "invalid gossip-interval (1 to 600000 ms), push-pull-interval "
                "(at least 100 ms) or gossip-to-the-dead (at least 1 ms)");
  if (c->udp_buffer_n < 512 || c->udp_buffer_n > 65000)
    return fail(err, errlen, "invalid udp-buffer: from 512 to 65000 bytes");
  if (c->tombstone_grace_n < 1)
    return fail(err, errlen, "invalid tombstone-grace: at least 1 second");
  if (!*c->cluster || strlen(c->cluster) > 64)
    return fail(err, errlen, "cluster name must be 1 to 64 bytes");
  if (*c->join) {
    /* Every entry must be host:port; kvd dials them, so refuse typos now. */
    char *copy = strdup(c->join), *save = NULL, host[256];
    int port, bad = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !bad;
         t = strtok_r(NULL, ",", &save))
      bad = kvd_parse_addr(trim(t), host, sizeof host, &port) || port == 0;
    free(copy);
    if (bad)
      return fail(err, errlen, "invalid join '%s': expected host:port[,...]",
                  c->join);
  }
  if (!*c->listen) return fail(err, errlen, "listen must not be empty");
  return KV_OK;
}

int kvd_config_load(kvd_config *cfg, int argc, char **argv, char *err,
                    size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < NSETTINGS; i++)
    set(cfg, &settings[i], settings[i].def, strlen(settings[i].def));

  /* First pass: --help, --version and --config, so the file can be read
   * before the flags that override it. */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) cfg->help = true;
    if (!strcmp(argv[i], "--version")) cfg->version = true;
  }
  if (cfg->help || cfg->version) return KV_OK;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--config") && i + 1 < argc) {
      set(cfg, find("config", 6), argv[i + 1], strlen(argv[i + 1]));
    } else if (!strncmp(a, "--config=", 9)) {
      set(cfg, find("config", 6), a + 9, strlen(a + 9));
    }
  }
  if (*cfg->config) {
    int rc = read_file(cfg, cfg->config, err, errlen);
    if (rc) return rc;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0)
      return fail(err, errlen, "unexpected argument '%s' (see --help)", a);
    a += 2;
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    const setting *s = find(a, nl);
    if (!s)
      return fail(err, errlen, "unknown option '--%.*s' (see --help)", (int)nl,
                  a);
    if (eq) {
      set(cfg, s, eq + 1, strlen(eq + 1));
    } else if (s->type == KVD_BOOL) {
      /* "--rumors no" as well as "--rumors" and "--rumors=no". */
      bool b;
      if (i + 1 < argc && parse_bool(argv[i + 1], &b) == KV_OK) {
        i++;
        set(cfg, s, argv[i], strlen(argv[i]));
      } else {
        set(cfg, s, "yes", 3);
      }
    } else if (i + 1 < argc) {
      i++;
      set(cfg, s, argv[i], strlen(argv[i]));
    } else {
      return fail(err, errlen, "option '--%s' needs a value", s->name);
    }
  }
  return finish(cfg, err, errlen);
}

void kvd_config_fini(kvd_config *cfg) {
  for (size_t i = 0; i < NSETTINGS; i++) {
    char **p = slot(cfg, &settings[i]);
    free(*p);
    *p = NULL;
  }
}

void kvd_config_usage(FILE *out) {
  fprintf(out,
          "usage: kvd [--config FILE] [--SETTING VALUE | --SETTING=VALUE]...\n"
          "\n"
          "kvd is the epikv replica daemon. Every setting can be given as a "
          "flag or,\nwithout the leading dashes, as 'name = value' in the "
          "INI file of --config;\nflags override the file.\n\n"
          "  --help                 this text\n"
          "  --version              print the version and exit\n");
  for (size_t i = 0; i < NSETTINGS; i++) {
    const setting *s = &settings[i];
    char flag[64];
    snprintf(flag, sizeof flag, "--%s%s", s->name,
             s->type == KVD_BOOL ? "" : " V");
    fprintf(out, "  %-22s %s", flag, s->help);
    if (*s->def) fprintf(out, " (default: %s)", s->def);
    fputc('\n', out);
  }
  fprintf(out, "\nExamples:\n"
               "  kvd --data-dir /var/lib/epikv --name node1\n"
               "  kvd --config /etc/epikv/kvd.conf --log-level debug\n"
               "  kvd --data-dir ./data --verify\n");
}
