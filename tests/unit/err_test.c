/*
 * Unit tests for the error list in proto/kv_err.h: every code has its name and
 * message, KV_OK is 0 and every error negative and distinct, wire codes round
 * trip and are pinned (they are never renumbered), and values that are not in
 * the list get the documented fallbacks, KV_BAD_REQUEST from the wire above
 * all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "proto/kv_err.h"

typedef struct entry {
  int code;
  const char *name, *msg;
} entry;

static const entry all[] = {
#define ENTRY(name, val, msg) {KV_##name, #name, msg},
    KV_ERR_MAP(ENTRY)
#undef ENTRY
};
#define NALL (sizeof all / sizeof all[0])

static void test_err_names_and_messages(void **state) {
  (void)state;
  for (size_t i = 0; i < NALL; i++) {
    assert_string_equal(kv_err_name(all[i].code), all[i].name);
    assert_string_equal(kv_strerror(all[i].code), all[i].msg);
    assert_true(strlen(all[i].msg) > 0);
    assert_string_not_equal(kv_strerror(all[i].code), "unknown error");
    assert_string_not_equal(kv_err_name(all[i].code), "UNKNOWN");
  }
  assert_string_equal(kv_err_name(KV_OK), "OK");
  assert_string_equal(kv_err_name(KV_FRAME_TOO_LARGE), "FRAME_TOO_LARGE");
  assert_string_equal(kv_strerror(KV_NOTFOUND), "key not found");
}

static void test_err_values_distinct_and_signed(void **state) {
  (void)state;
  assert_int_equal(KV_OK, 0);
  assert_int_equal(all[0].code, KV_OK);
  for (size_t i = 0; i < NALL; i++) {
    if (i > 0) assert_true(all[i].code < 0);
    for (size_t j = 0; j < i; j++) {
      assert_int_not_equal(all[i].code, all[j].code);
      assert_string_not_equal(all[i].name, all[j].name);
    }
  }
}

static void test_err_wire_round_trip(void **state) {
  (void)state;
  for (size_t i = 0; i < NALL; i++) {
    unsigned w = kv_err_to_wire(all[i].code);
    assert_int_equal(w, (unsigned)-all[i].code);
    assert_int_equal(kv_err_from_wire(w), all[i].code);
  }
}

/* Wire codes are a protocol: a code that moves breaks every older peer and
 * client. A new code must be appended to the list and pinned here. */
static void test_err_wire_codes_pinned(void **state) {
  (void)state;
  static const struct {
    int code;
    unsigned wire;
  } pinned[] = {
      {KV_OK, 0},
      {KV_NOTFOUND, 1},
      {KV_KEY_TOO_LONG, 2},
      {KV_VALUE_TOO_LARGE, 3},
      {KV_WRONG_TYPE, 4},
      {KV_TOO_MANY_SIBLINGS, 5},
      {KV_STORE_FULL, 6},
      {KV_OVERFLOW, 7},
      {KV_GCOUNTER_DECREMENT, 8},
      {KV_BAD_CONTEXT, 9},
      {KV_CORRUPT, 10},
      {KV_FRAME_TOO_LARGE, 11},
      {KV_BAD_REQUEST, 12},
      {KV_INVALID, 13},
      {KV_IO, 14},
      {KV_NOMEM, 15},
      {KV_CLOSED, 16},
      {KV_TIMEOUT, 17},
      {KV_AUTH_REQUIRED, 18},
      {KV_AUTH_FAILED, 19},
      {KV_VERIFY_MISMATCH, 20},
      {KV_INCOMPATIBLE, 21},
      {KV_AGAIN, 22},
  };
  assert_int_equal(sizeof pinned / sizeof pinned[0], NALL);
  for (size_t i = 0; i < NALL; i++) {
    assert_int_equal(kv_err_to_wire(pinned[i].code), pinned[i].wire);
    assert_int_equal(kv_err_from_wire(pinned[i].wire), pinned[i].code);
  }
}

static void test_err_unknown_wire_code_is_bad_request(void **state) {
  (void)state;
  static const unsigned unknown[] = {NALL,        NALL + 1,    100,     1000,
                                     0x7fffffffu, 0x80000000u, UINT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
    assert_int_equal(kv_err_from_wire(unknown[i]), KV_BAD_REQUEST);
  /* Every value the list does not hold, up to well past its end. */
  for (unsigned w = 0; w < 4096; w++) {
    bool known = false;
    for (size_t i = 0; i < NALL; i++)
      if ((unsigned)-all[i].code == w) known = true;
    if (!known) assert_int_equal(kv_err_from_wire(w), KV_BAD_REQUEST);
  }
}

static void test_err_unknown_value_fallbacks(void **state) {
  (void)state;
  static const int unknown[] = {1, 7, -1000, INT_MAX, INT_MIN};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_string_equal(kv_strerror(unknown[i]), "unknown error");
    assert_string_equal(kv_err_name(unknown[i]), "UNKNOWN");
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_err_names_and_messages),
      cmocka_unit_test(test_err_values_distinct_and_signed),
      cmocka_unit_test(test_err_wire_round_trip),
      cmocka_unit_test(test_err_wire_codes_pinned),
      cmocka_unit_test(test_err_unknown_wire_code_is_bad_request),
      cmocka_unit_test(test_err_unknown_value_fallbacks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
