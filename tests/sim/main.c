/*
 * tests/sim command line. Without arguments it runs the suite `make test`
 * runs: 200 seeded runs of mixed scenarios that must all pass, a replay
 * check (the same seed twice in this process and once in a fresh one must
 * give the same trace hash), and every deliberately broken build, each of
 * which must make its checker fail. Every failure prints its seed and the
 * one-line command that replays it.
 *
 *   sim                          the suite
 *   sim --seed S [--trace F]     one run (exit 1 if a checker fails)
 *   sim --seeds N [--seed S]     N runs from seed S (default 1)
 *   sim --break NAME ...         the same with a broken build (expected to
 *                                fail; see sim_break_name for the names)
 *   sim --print-hash --seed S    prints the run's trace hash only
 *   sim --scale [gossip|membership] [--fanout F] [--rumor-k K] [--rounds R]
 *       [--interval-ms T] [--rate R] [--link-ms L] [--no-ae] [--nodes N]
 *       [--members N]
 *                                the measurements of bench/RESULTS.md
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/sim/sim.h"

/* A sanitizer build (the Makefile passes SIM_SANITIZED) runs fewer seeds and
 * leaves the broken builds, which test the checkers, to the plain pass. */
#ifdef SIM_SANITIZED
#define SIM_SUITE_SEEDS 40
#else
#define SIM_SUITE_SEEDS 200
#endif

static const char *argv0 = "sim";

/* Overrides of the seed's scenario, for exploring (and replaying it). */
static long ov_loss = -1, ov_dup = -1, ov_nodes = -1;
static char ov_args[128];

static const char *break_names[BRK_COUNT] = {
    [BRK_NONE] = "none",
    [BRK_LOSE_ACK] = "lose-ack",
    [BRK_LWW] = "lww",
    [BRK_SKIP_TOMBSTONE] = "skip-tombstone",
    [BRK_NO_AE] = "no-ae",
    [BRK_COUNTER_LWW] = "counter-lww",
    [BRK_SWIM_HASTY] = "swim-hasty",
    [BRK_NONDET] = "nondet",
    [BRK_NO_CONTEXT] = "no-context",
    [BRK_STALE_LEAF] = "stale-leaf",
};

const char *sim_break_name(int b) {
  return b >= 0 && b < BRK_COUNT ? break_names[b] : "?";
}

int sim_break_parse(const char *s) {
  for (int b = 0; b < BRK_COUNT; b++)
    if (!strcmp(s, break_names[b])) return b;
  return -1;
}

const char *sim_check_name(unsigned bit) {
  switch (bit) {
  case CHK_CONVERGE:
    return "converge";
  case CHK_LOST:
    return "lost-write";
  case CHK_STALE:
    return "stale-value";
  case CHK_RESURRECT:
    return "resurrected";
  case CHK_COUNTER:
    return "counter-sum";
  case CHK_GMONO:
    return "gcounter-monotonic";
  case CHK_MEMBER:
    return "false-dead";
  case CHK_INTERNAL:
    return "store-internal";
  case CHK_DETERMINISM:
    return "determinism";
  default:
    return "?";
  }
}

static const char *kinds[] = {"clean", "lossy", "partitions", "crashes",
                              "mixed"};

void sim_cfg_from_seed(uint64_t seed, sim_cfg *c) {
  kv_rng g = {seed ^ 0x5DEECE66Dull};
  memset(c, 0, sizeof *c);
  c->seed = seed;
  int kind = (int)(seed % 5);
  c->scenario = kinds[kind];
  c->nodes = 3 + (int)kv_rng_below(&g, 5);
  c->segment_bits = 6 + kv_rng_below(&g, 3);
  c->delay_min_ms = 1 + kv_rng_below(&g, 5);
  c->delay_max_ms = c->delay_min_ms + 5 + kv_rng_below(&g, 60);
  c->active_ms = 40000 + kv_rng_below(&g, 20001);
  c->quiet_ms = 120000;
  c->op_gap_ms = 30 + kv_rng_below(&g, 120);
  c->ae_interval_ms = 2000;
  c->max_down = (c->nodes - 1) / 2;
  c->nreg = 3 + (int)kv_rng_below(&g, 10);
  c->max_siblings = kv_rng_below(&g, 4) ? 100 : 8;
  if (kv_rng_below(&g, 3) == 0) { /* partial exchanges */
    c->ae.max_segments = 1 + kv_rng_below(&g, 8);
    c->ae.max_keys = 1 + kv_rng_below(&g, 20);
    c->ae.max_push_bytes = 64 + kv_rng_below(&g, 2000);
  }
  if (kv_rng_below(&g, 3) == 0) { /* other rumor settings, tiny hot sets */
    c->rumor.fanout = 1 + kv_rng_below(&g, 4);
    c->rumor.k = 1 + kv_rng_below(&g, 3);
    c->rumor.max_rounds = 1 + kv_rng_below(&g, 5);
    c->rumor.interval_ms = 1 + kv_rng_below(&g, 100);
    c->rumor.max_rumors = 1 + kv_rng_below(&g, 8);
    c->rumor.max_bytes = 100 + kv_rng_below(&g, 4000);
  }
  switch (kind) {
  case 1:
    c->loss_ppm = kv_rng_below(&g, 100001);
    c->dup_ppm = kv_rng_below(&g, 50001);
    break;
  case 2:
    c->partitions = true;
    c->loss_ppm = kv_rng_below(&g, 20001);
    break;
  case 3:
    c->crashes = true;
    c->loss_ppm = kv_rng_below(&g, 20001);
    c->dup_ppm = kv_rng_below(&g, 10001);
    break;
  case 4:
    c->partitions = c->crashes = true;
    c->loss_ppm = kv_rng_below(&g, 100001);
    c->dup_ppm = kv_rng_below(&g, 30001);
    break;
  default:
    break;
  }
}

static void replay_line(uint64_t seed, int brk) {
  printf("  replay: %s --seed %" PRIu64 "%s%s%s --trace /tmp/sim-%" PRIu64
         ".trace\n",
         argv0, seed, brk ? " --break " : "", brk ? sim_break_name(brk) : "",
         ov_args, seed);
}

static void apply_overrides(sim_cfg *c) {
  if (ov_loss >= 0) c->loss_ppm = (uint32_t)ov_loss;
  if (ov_dup >= 0) c->dup_ppm = (uint32_t)ov_dup;
  if (ov_nodes > 0) {
    c->nodes = (int)ov_nodes;
    c->max_down = (c->nodes - 1) / 2;
  }
  /* Membership is judged only at loss <= 10% (false-dead). */
}

/* One run; prints a line on failure (or always, if verbose). */
static unsigned run_one(uint64_t seed, int brk, FILE *trace, bool verbose,
                        sim_result *res) {
  sim_cfg cfg;
  sim_cfg_from_seed(seed, &cfg);
  cfg.brk = brk;
  apply_overrides(&cfg);
  sim_run(&cfg, trace, res);
  if (verbose || (res->failed && !brk)) {
    printf("%s seed %" PRIu64 " (%s, %d nodes, loss %.1f%%, dup %.1f%%%s): "
           "%" PRIu64 " ops, %" PRIu64 " acked, %" PRIu64 " msgs, %" PRIu64
           " dropped, %" PRIu64 " crashes, %" PRIu64 " partitions, %" PRIu64
           " AE, trace %016" PRIx64 "%s%s\n",
           res->failed ? "FAIL" : "ok", seed, cfg.scenario, cfg.nodes,
           cfg.loss_ppm / 10000.0, cfg.dup_ppm / 10000.0, brk ? ", broken" : "",
           res->client_ops, res->acked, res->messages, res->dropped,
           res->crashes, res->partitions, res->ae_exchanges, res->trace_hash,
           res->failed ? "\n  " : "", res->failed ? res->why : "");
    if (res->failed) replay_line(seed, brk);
  }
  return res->failed;
}

/* Runs seed in a fresh process (this binary) and returns its trace hash. */
static bool hash_in_child(uint64_t seed, uint64_t *out) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "/proc/%d/exe --print-hash --seed %" PRIu64,
           (int)getpid(), seed);
  FILE *p = popen(cmd, "r");
  if (!p) return false;
  unsigned long long h = 0;
  bool ok = fscanf(p, "%llx", &h) == 1;
  ok = pclose(p) == 0 && ok;
  *out = h;
  return ok;
}

typedef struct break_case {
  int brk;
  unsigned target;
} break_case;

static int fini(time_t t0, int passed, int failed) {
  printf("sim: %lds\n", (long)(time(NULL) - t0));
  printf("sim: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

static int suite(int nseeds) {
  int passed = 0, failed = 0;
  time_t t0 = time(NULL);

  /* 1. Mixed scenarios: all must pass. */
  int bad = 0;
  for (int s = 1; s <= nseeds; s++) {
    sim_result res;
    bad += run_one((uint64_t)s, BRK_NONE, NULL, false, &res) != 0;
  }
  printf("sim: %d seeds (clean, lossy <= 10%%, partitions, crashes, mixed): "
         "%d failed\n",
         nseeds, bad);
  bad ? failed++ : passed++;

  /* 2. Replay: same seed, same trace, in this process and in a new one. */
  for (uint64_t s = 3; s <= 5; s++) {
    sim_result a, b;
    run_one(s, BRK_NONE, NULL, false, &a);
    run_one(s, BRK_NONE, NULL, false, &b);
    uint64_t child = 0;
    bool ok = hash_in_child(s, &child);
    bool same = a.trace_hash == b.trace_hash && ok && child == a.trace_hash;
    printf("sim: replay seed %" PRIu64 ": %016" PRIx64 " %016" PRIx64
           " %016" PRIx64 " (new process) %s\n",
           s, a.trace_hash, b.trace_hash, child, same ? "ok" : "DIFFER");
    if (!same) replay_line(s, BRK_NONE);
    same ? passed++ : failed++;
  }

  /* 3. Broken builds: each checker must catch its break. */
  static const break_case cases[] = {
      {BRK_NO_AE, CHK_CONVERGE},      {BRK_LWW, CHK_LOST},
      {BRK_NO_CONTEXT, CHK_STALE},    {BRK_SKIP_TOMBSTONE, CHK_RESURRECT},
      {BRK_COUNTER_LWW, CHK_COUNTER}, {BRK_LOSE_ACK, CHK_GMONO},
      {BRK_SWIM_HASTY, CHK_MEMBER},   {BRK_STALE_LEAF, CHK_INTERNAL},
      {BRK_NONDET, CHK_DETERMINISM},
  };
  const int per_break = 10;
#ifdef SIM_SANITIZED
  printf("sim: broken builds skipped under a sanitizer (the plain pass runs "
         "them)\n");
  return fini(t0, passed, failed);
#endif
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int caught = 0;
    unsigned also = 0;
    for (int s = 1; s <= per_break; s++) {
      sim_result res, again;
      run_one((uint64_t)s, cases[c].brk, NULL, false, &res);
      if (cases[c].target == CHK_DETERMINISM) {
        run_one((uint64_t)s, cases[c].brk, NULL, false, &again);
        if (again.trace_hash != res.trace_hash) res.failed |= CHK_DETERMINISM;
      }
      caught += (res.failed & cases[c].target) != 0;
      also |= res.failed & ~cases[c].target;
    }
    char others[200] = "";
    for (unsigned bit = 1; bit <= CHK_DETERMINISM; bit <<= 1)
      if (also & bit) {
        strcat(others, others[0] ? "," : " (also ");
        strcat(others, sim_check_name(bit));
      }
    if (others[0]) strcat(others, ")");
    printf("sim: break %-14s -> %-18s caught in %2d/%d seeds%s %s\n",
           sim_break_name(cases[c].brk), sim_check_name(cases[c].target),
           caught, per_break, others, caught ? "ok" : "NOT CAUGHT");
    caught ? passed++ : failed++;
  }
  return fini(t0, passed, failed);
}

static void usage(void) {
  fprintf(stderr,
          "usage: %s [--seed S] [--seeds N] [--trace FILE] [--break NAME] "
          "[--print-hash] [--verbose]\n"
          "           [--loss PPM] [--dup PPM] [--nodes N] (override the "
          "seed's scenario)\n"
          "       %s --scale [gossip|membership] [--seed S] [--fanout F] "
          "[--rumor-k K] [--rounds R]\n"
          "           [--interval-ms T] [--rate R] [--link-ms L] [--no-ae] "
          "[--nodes N] [--members N]\n"
          "breaks:",
          argv0, argv0);
  for (int b = 1; b < BRK_COUNT; b++)
    fprintf(stderr, " %s", sim_break_name(b));
  fprintf(stderr, "\n");
  exit(2);
}

int main(int argc, char **argv) {
  argv0 = argv[0];
  uint64_t seed = 1;
  bool have_seed = false, print_hash = false, verbose = false, scale = false;
  long seeds = 0;
  const char *trace_path = NULL;
  int brk = BRK_NONE;
  scale_opts so = {.seed = 1, .gossip_nodes = 25, .members = 1000};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--seed") && v) {
      seed = strtoull(v, NULL, 0);
      so.seed = seed;
      have_seed = true;
      i++;
    } else if (!strcmp(a, "--seeds") && v) {
      seeds = strtol(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--trace") && v) {
      trace_path = v;
      i++;
    } else if (!strcmp(a, "--break") && v) {
      if ((brk = sim_break_parse(v)) < 0) usage();
      i++;
    } else if ((!strcmp(a, "--loss") || !strcmp(a, "--dup") ||
                !strcmp(a, "--nodes")) &&
               v) {
      long x = strtol(v, NULL, 0);
      if (a[2] == 'l') ov_loss = x;
      if (a[2] == 'd') ov_dup = x;
      if (a[2] == 'n') ov_nodes = x, so.gossip_nodes = (int)x;
      size_t used = strlen(ov_args);
      snprintf(ov_args + used, sizeof ov_args - used, " %s %ld", a, x);
      i++;
    } else if (!strcmp(a, "--print-hash")) {
      print_hash = true;
    } else if (!strcmp(a, "--verbose")) {
      verbose = true;
    } else if (!strcmp(a, "--scale")) {
      scale = true;
      if (v && (!strcmp(v, "gossip") || !strcmp(v, "membership"))) {
        so.gossip = !strcmp(v, "gossip");
        so.membership = !so.gossip;
        i++;
      }
    } else if (!strcmp(a, "--fanout") && v) {
      so.fanout = (unsigned)strtoul(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--rumor-k") && v) {
      so.rumor_k = (unsigned)strtoul(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--rounds") && v) {
      so.max_rounds = (unsigned)strtoul(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--link-ms") && v) {
      so.link_ms = (unsigned)strtoul(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--rate") && v) {
      so.rate = (unsigned)strtoul(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--no-ae")) {
      so.no_ae = true;
    } else if (!strcmp(a, "--interval-ms") && v) {
      so.interval_ms = strtoull(v, NULL, 0);
      i++;
    } else if (!strcmp(a, "--members") && v) {
      so.members = (int)strtol(v, NULL, 0);
      i++;
    } else {
      usage();
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (scale) {
    if (!so.gossip && !so.membership) so.gossip = so.membership = true;
    return sim_scale(&so);
  }
  if (!have_seed && !seeds && !brk && !trace_path && !print_hash && !ov_args[0])
    return suite(SIM_SUITE_SEEDS);

  if (seeds <= 0) seeds = 1;
  FILE *trace = NULL;
  if (trace_path) {
    if (!(trace = fopen(trace_path, "w"))) {
      perror(trace_path);
      return 2;
    }
  }
  long bad = 0;
  for (long k = 0; k < seeds; k++) {
    sim_result res;
    uint64_t s = seed + (uint64_t)k;
    if (print_hash) {
      sim_cfg cfg;
      sim_cfg_from_seed(s, &cfg);
      cfg.brk = brk;
      apply_overrides(&cfg);
      sim_run(&cfg, NULL, &res);
      printf("%016" PRIx64 "\n", res.trace_hash);
      continue;
    }
    bad += run_one(s, brk, k == 0 ? trace : NULL,
                   verbose || seeds == 1 || brk != BRK_NONE, &res) != 0;
  }
  if (trace) fclose(trace);
  if (print_hash) return 0;
  if (seeds > 1) printf("sim: %ld seeds, %ld failed\n", seeds, bad);
  return bad ? 1 : 0;
}
