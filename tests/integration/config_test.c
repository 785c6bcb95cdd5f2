/*
 * Integration tests of kvd's settings: --help lists every setting with its
 * default, an INI file given with --config is applied and flags override it,
 * and an unknown setting or an invalid value stops kvd at start with a
 * message naming it.
 */
#include "tests/integration/itest.h"

static const char *kvd_bin(void) {
  const char *bin = getenv("KVD");
  return bin && *bin ? bin : "build/kvd";
}

static char out[65536], err[8192];

static void test_config_help_lists_every_setting(void **state) {
  IT_BEGIN(f, 20);
  const char *argv[] = {kvd_bin(), "--help", NULL};
  assert_int_equal(
      kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 10000), 0);
  const char *names[] = {"--config",       "--name",
                         "--data-dir",     "--listen",
                         "--resp-listen",  "--auth-token-file",
                         "--sync",         "--verify",
                         "--log-level",    "--segments",
                         "--map-size",     "--max-value-bytes",
                         "--max-siblings", "--max-frame-bytes",
                         "--max-clients",  "--max-pipeline",
                         "--ports-file"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strstr(out, names[i])) fail_msg("--help does not list %s", names[i]);
  assert_non_null(strstr(out, "(default: 127.0.0.1:7400)"));
  assert_non_null(strstr(out, "(default: always)"));
  const char *vargv[] = {kvd_bin(), "--version", NULL};
  assert_int_equal(
      kvdh_exec(vargv, NULL, out, sizeof out, err, sizeof err, 10000), 0);
  assert_true(it_prefix(out, "kvd "));
  IT_END(f);
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static void test_config_file_applied_and_flags_override(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  static char conf[256];
  snprintf(conf, sizeof conf, "%s/kvd.conf", p->dir);
  write_file(conf, "# a comment\n"
                   "; another\n"
                   "name = from-file\n"
                   "max-siblings = 2\n"
                   "sync = none\n"
                   "\n");
  it_args(p, "--config", conf, NULL);
  it_start(p);
  kvc_conn *c = it_conn(p);
  kvc_result *r;
  assert_kvc(kvc_status(c, &r), KVC_OK);
  assert_string_equal(kvc_result_status_info(r)->name, "from-file");
  assert_false(kvc_result_status_info(r)->sync);
  kvc_result_free(r);
  assert_kvc(kvc_put(c, "k", 1, "a", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "k", 1, "b", 1, NULL, 0), KVC_OK);
  assert_kvc(kvc_put(c, "k", 1, "c", 1, NULL, 0), KVC_TOO_MANY_SIBLINGS);
  kvc_close(c);
  assert_int_equal(kvdh_stop(p, SIGTERM, 10000), 0);

  /* The same file, with a flag overriding one of its settings. */
  it_args(p, "--config", conf, "--name", "from-flag", NULL);
  it_start(p);
  c = it_conn(p);
  assert_kvc(kvc_status(c, &r), KVC_OK);
  assert_string_equal(kvc_result_status_info(r)->name, "from-flag");
  kvc_result_free(r);
  kvc_close(c);
  IT_END(f);
}

/* kvd must refuse to start and name the offending setting. */
static void expect_refusal(const char *const *argv, const char *needle) {
  int rc = kvdh_exec(argv, NULL, out, sizeof out, err, sizeof err, 10000);
  if (rc == 0) fail_msg("kvd started with %s", argv[1]);
  if (!strstr(err, needle))
    fail_msg("kvd's message does not name '%s': %s", needle, err);
}

static void test_config_invalid_settings_stop_kvd(void **state) {
  IT_BEGIN(f, 30);
  kvdh *p = &f->k[0];
  assert_int_equal(kvdh_prepare(p), 0);
  char conf[256], data[256];
  snprintf(conf, sizeof conf, "%s/bad.conf", p->dir);
  snprintf(data, sizeof data, "%s/data", p->dir);
  write_file(conf, "name = x\nbogus-setting = 1\n");
  const char *a1[] = {kvd_bin(), "--config", conf, "--data-dir", data, NULL};
  expect_refusal(a1, "bogus-setting");
  write_file(conf, "[section]\n");
  expect_refusal(a1, "expected 'name = value'");
  const char *a2[] = {kvd_bin(), "--max-siblings", "lots", "--data-dir", data,
                      NULL};
  expect_refusal(a2, "max-siblings");
  const char *a3[] = {kvd_bin(),    "--segments", "1000",
                      "--data-dir", data,         NULL};
  expect_refusal(a3, "segments");
  const char *a4[] = {kvd_bin(),    "--sync", "sometimes",
                      "--data-dir", data,     NULL};
  expect_refusal(a4, "sync");
  const char *a5[] = {kvd_bin(), "--no-such-flag", "--data-dir", data, NULL};
  expect_refusal(a5, "no-such-flag");
  const char *a6[] = {kvd_bin(),    "--listen", "nonsense",
                      "--data-dir", data,       NULL};
  expect_refusal(a6, "listen");
  const char *a7[] = {kvd_bin(), "--config", "/nonexistent/kvd.conf", NULL};
  expect_refusal(a7, "/nonexistent/kvd.conf");
  IT_END(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      IT_TEST(test_config_help_lists_every_setting),
      IT_TEST(test_config_file_applied_and_flags_override),
      IT_TEST(test_config_invalid_settings_stop_kvd),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
