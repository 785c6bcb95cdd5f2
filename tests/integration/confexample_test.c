/*
 * kvd.conf.example stays true to kvd: it documents every setting `kvd --help`
 * lists, each under a comment saying what it does, and names none that kvd
 * does not know; a commented-out line shows the default --help states. kvd
 * starts from the file as it is, and from it with every documented default
 * uncommented. An invalid value inside a config file stops kvd before it
 * touches its data directory, with a message naming the setting.
 *
 * Someone adding a setting to server/config.h is told here to document it.
 * Runs from the repository root (as `make test` does).
 */
#include "tests/integration/itest.h"

#include <ctype.h>
#include <sys/stat.h>

#define EXAMPLE "kvd.conf.example"
#define MAX_SETTINGS 256

typedef struct setting {
  char name[64];
  char def[160];
  bool has_def;
} setting;

static setting settings[MAX_SETTINGS];
static size_t nsettings;
static char out[65536], err[8192];

static const char *kvd_bin(void) {
  const char *bin = getenv("KVD");
  return bin && *bin ? bin : "build/kvd";
}

/* Fills settings[] from `kvd --help`: lines "  --name [V]  help (default:
 * X)", --help and --version excepted. */
static void load_help(void) {
  const char *argv[] = {kvd_bin(), "--help", NULL};
  assert_int_equal(
      kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 10000), 0);
  nsettings = 0;
  for (char *l = out, *next; l && *l; l = next) {
    next = strchr(l, '\n');
    if (next) *next++ = 0;
    if (strncmp(l, "  --", 4) != 0) continue;
    setting *s = &settings[nsettings];
    size_t n = 0;
    for (const char *p = l + 4; (islower((unsigned char)*p) ||
                                 isdigit((unsigned char)*p) || *p == '-') &&
                                n + 1 < sizeof s->name;
         p++)
      s->name[n++] = *p;
    s->name[n] = 0;
    if (!strcmp(s->name, "help") || !strcmp(s->name, "version")) continue;
    const char *d = strstr(l, "(default: ");
    const char *close = d ? strrchr(d, ')') : NULL;
    s->has_def = close != NULL;
    if (s->has_def) {
      d += strlen("(default: ");
      snprintf(s->def, sizeof s->def, "%.*s", (int)(close - d), d);
    }
    assert_true(++nsettings < MAX_SETTINGS);
  }
  /* A parser that found nothing would make every check below vacuous. */
  if (nsettings < 20)
    fail_msg("kvd --help lists only %zu settings: its format changed?",
             nsettings);
}

static const setting *find_setting(const char *name) {
  for (size_t i = 0; i < nsettings; i++)
    if (!strcmp(settings[i].name, name)) return &settings[i];
  return NULL;
}

/* A setting line: "name = value", or commented out: "# name = value". */
typedef struct conf_line {
  char name[64], value[256];
  bool commented;
} conf_line;

static bool parse_setting_line(const char *l, conf_line *c) {
  while (*l == ' ' || *l == '\t')
    l++;
  c->commented = *l == '#' || *l == ';';
  if (c->commented) l++;
  while (*l == ' ' || *l == '\t')
    l++;
  if (!islower((unsigned char)*l)) return false;
  size_t n = 0;
  while (
      (islower((unsigned char)*l) || isdigit((unsigned char)*l) || *l == '-') &&
      n + 1 < sizeof c->name)
    c->name[n++] = *l++;
  c->name[n] = 0;
  while (*l == ' ' || *l == '\t')
    l++;
  if (*l++ != '=') return false;
  while (*l == ' ' || *l == '\t')
    l++;
  snprintf(c->value, sizeof c->value, "%s", l);
  n = strlen(c->value);
  while (n > 0 && isspace((unsigned char)c->value[n - 1]))
    c->value[--n] = 0;
  return true;
}

#define MAX_LINES 1024
static char lines[MAX_LINES][512];
static size_t nlines;

static void load_example(void) {
  FILE *f = fopen(EXAMPLE, "r");
  if (!f)
    fail_msg("cannot open %s (the tests run from the repository root)",
             EXAMPLE);
  nlines = 0;
  while (nlines < MAX_LINES && fgets(lines[nlines], sizeof lines[0], f)) {
    lines[nlines][strcspn(lines[nlines], "\n")] = 0;
    nlines++;
  }
  fclose(f);
  assert_true(nlines > 0 && nlines < MAX_LINES);
}

static void test_confexample_documents_every_setting(void **state) {
  IT_BEGIN(f, 30);
  load_help();
  load_example();
  bool seen[MAX_SETTINGS] = {false};
  for (size_t i = 0; i < nlines; i++) {
    conf_line c;
    if (!parse_setting_line(lines[i], &c)) continue;
    const setting *s = find_setting(c.name);
    if (!s)
      fail_msg("%s:%zu names '%s', which `kvd --help` does not list (a "
               "removed or misspelt setting?)",
               EXAMPLE, i + 1, c.name);
    size_t k = (size_t)(s - settings);
    if (seen[k]) continue;
    seen[k] = true;
    /* What it does: a prose comment right above the setting's line. */
    conf_line prev;
    if (i == 0 || lines[i - 1][0] != '#' ||
        parse_setting_line(lines[i - 1], &prev))
      fail_msg("%s:%zu: '%s' has no comment above it saying what it does",
               EXAMPLE, i + 1, c.name);
    if (c.commented && s->has_def && strcmp(c.value, s->def) != 0)
      fail_msg("%s:%zu shows '# %s = %s', but the default is '%s'", EXAMPLE,
               i + 1, c.name, c.value, s->def);
  }
  for (size_t k = 0; k < nsettings; k++)
    if (!seen[k])
      fail_msg("%s does not document the setting '%s': add a comment saying "
               "what it does and a line '# %s = %s'",
               EXAMPLE, settings[k].name, settings[k].name,
               settings[k].has_def ? settings[k].def : "<example value>");
  IT_END(f);
}

static void test_confexample_starts_kvd_as_is(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  /* The harness's flags (--data-dir in a temporary directory, port 0)
   * override the file's, as flags always do. */
  it_args(p, "--config", EXAMPLE, NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  assert_string_equal(kvc_result_status_info(r)->name, "kvd");
  assert_true(kvc_result_status_info(r)->sync);
  kvc_result_free(r);
  assert_kvc(kvc_put(c, "k", 1, "v", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_get(c, "k", 1, &r), KVC_OK);
  assert_int_equal(kvc_result_siblings(r), 1);
  kvc_result_free(r);
  kvc_close(c);
  assert_int_equal(kvdh_stop(p, SIGTERM, 10000), 0);
  IT_END(f);
}

static void test_confexample_defaults_all_apply(void **state) {
  IT_BEGIN(f, 30);
  load_help();
  load_example();
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static char conf[256];
  snprintf(conf, sizeof conf, "%s/defaults.conf", p->dir);
  FILE *fp = fopen(conf, "w");
  assert_non_null(fp);
  size_t uncommented = 0, want = 0;
  for (size_t k = 0; k < nsettings; k++)
    want += settings[k].has_def;
  for (size_t i = 0; i < nlines; i++) {
    conf_line c;
    const setting *s;
    if (parse_setting_line(lines[i], &c) && c.commented &&
        (s = find_setting(c.name)) && s->has_def && !strcmp(c.value, s->def)) {
      fprintf(fp, "%s = %s\n", c.name, c.value);
      uncommented++;
    } else {
      fprintf(fp, "%s\n", lines[i]);
    }
  }
  fclose(fp);
  /* Every setting with a default, except those the file sets on purpose
   * (data-dir), now stands uncommented. */
  assert_true(uncommented + 1 >= want);
  it_args(p, "--config", conf, NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  assert_string_equal(kvc_result_status_info(r)->name, "kvd");
  assert_string_equal(kvc_result_status_info(r)->cluster, "epikv");
  kvc_result_free(r);
  kvc_close(c);
  assert_int_equal(kvdh_stop(p, SIGTERM, 10000), 0);
  IT_END(f);
}

/* config_test covers unknown names in a file and invalid values given as
 * flags; these are invalid values inside the file. */
static void test_confexample_invalid_value_in_file_stops_kvd(void **state) {
  IT_BEGIN(f, 60);
  load_example();
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static const struct {
    const char *line, *names;
  } cases[] = {
      {"max-siblings = lots", "max-siblings"}, {"sync = sometimes", "sync"},
      {"map-size = huge", "map-size"},         {"listen = nowhere", "listen"},
      {"rumors = perhaps", "rumors"},          {"segments = 1000", "segments"},
  };
  char conf[256], data[256];
  snprintf(conf, sizeof conf, "%s/bad.conf", p->dir);
  snprintf(data, sizeof data, "%s/never", p->dir);
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    FILE *fp = fopen(conf, "w");
    assert_non_null(fp);
    for (size_t i = 0; i < nlines; i++)
      fprintf(fp, "%s\n", lines[i]);
    fprintf(fp, "%s\n", cases[k].line);
    fclose(fp);
    const char *argv[] = {kvd_bin(),    "--config", conf,
                          "--data-dir", data,       NULL};
    int rc = kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 10000);
    if (rc != 2)
      fail_msg("kvd with '%s' in its config file exited %d, want 2",
               cases[k].line, rc);
    if (!strstr(err, cases[k].names))
      fail_msg("kvd's message for '%s' does not name '%s': %s", cases[k].line,
               cases[k].names, err);
    struct stat st;
    if (stat(data, &st) == 0)
      fail_msg("kvd created its data directory despite '%s'", cases[k].line);
  }
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_confexample_documents_every_setting),
      IT_TEST(test_confexample_starts_kvd_as_is),
      IT_TEST(test_confexample_defaults_all_apply),
      IT_TEST(test_confexample_invalid_value_in_file_stops_kvd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
