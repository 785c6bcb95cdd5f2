/*
 * G/PN-counter state: value, add with exact overflow detection, merge as the
 * per-replica maximum, the floor a delete leaves behind, and validity checks
 * for decoded state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crdt/counter.h"

static int64_t value(const kv_counter *c, const kv_counter *floor) {
  int64_t v = 0;
  assert_int_equal(kv_counter_value(c, floor, &v), KV_OK);
  return v;
}

static void test_counter_add_and_value(void **state) {
  (void)state;
  kv_counter c;
  kv_counter_init(&c);
  assert_int_equal(value(&c, NULL), 0);
  assert_int_equal(kv_counter_add(&c, NULL, 7, 5), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 3, -2), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 7, 10), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 5, 0), KV_OK);
  assert_int_equal(value(&c, NULL), 13);
  assert_int_equal(c.n, 2); /* delta 0 adds no entry */
  assert_int_equal(c.e[0].id, 3);
  assert_int_equal(c.e[0].dec, 2);
  assert_int_equal(c.e[1].id, 7);
  assert_int_equal(c.e[1].inc, 15);
  assert_true(kv_counter_valid(&c));
  kv_counter_fini(&c);
}

static void test_counter_overflow_is_error_not_wrap(void **state) {
  (void)state;
  kv_counter c;
  kv_counter_init(&c);
  assert_int_equal(kv_counter_add(&c, NULL, 1, INT64_MAX), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 2, 1), KV_OVERFLOW);
  assert_int_equal(value(&c, NULL), INT64_MAX);
  assert_int_equal(c.n, 1); /* unchanged */
  assert_int_equal(kv_counter_add(&c, NULL, 2, INT64_MIN), KV_OK);
  assert_int_equal(value(&c, NULL), -1);
  assert_int_equal(kv_counter_add(&c, NULL, 2, INT64_MIN), KV_OVERFLOW);
  assert_int_equal(kv_counter_add(&c, NULL, 2, -1), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 2, INT64_MIN), KV_OVERFLOW);
  assert_int_equal(value(&c, NULL), -2);
  kv_counter_fini(&c);
}

static void test_counter_value_overflow_reported(void **state) {
  (void)state;
  /* Merged state from two replicas may sum past int64: reading says so. */
  kv_counter_entry e[2] = {{1, INT64_MAX, 0}, {2, INT64_MAX, 0}};
  kv_counter c = {2, e};
  int64_t v;
  assert_int_equal(kv_counter_value(&c, NULL, &v), KV_OVERFLOW);
}

static void test_counter_merge_is_per_replica_max(void **state) {
  (void)state;
  kv_counter_entry ea[] = {{1, 5, 1}, {3, 2, 0}};
  kv_counter_entry eb[] = {{1, 4, 3}, {2, 9, 0}};
  kv_counter a = {2, ea}, b = {2, eb}, m, m2, m3;
  kv_counter_merge(&m, &a, &b);
  assert_int_equal(m.n, 3);
  assert_int_equal(m.e[0].inc, 5);
  assert_int_equal(m.e[0].dec, 3);
  assert_int_equal(m.e[1].id, 2);
  assert_int_equal(m.e[2].id, 3);
  assert_int_equal(value(&m, NULL), 5 - 3 + 9 + 2);
  kv_counter_merge(&m2, &b, &a);
  assert_true(kv_counter_equal(&m, &m2));
  kv_counter_merge(&m3, &m, &m);
  assert_true(kv_counter_equal(&m, &m3));
  assert_true(kv_counter_leq(&a, &m));
  assert_true(kv_counter_leq(&b, &m));
  assert_false(kv_counter_leq(&m, &a));
  kv_counter_fini(&m);
  kv_counter_fini(&m2);
  kv_counter_fini(&m3);
}

static void test_counter_floor_resets_value(void **state) {
  (void)state;
  kv_counter c, floor;
  kv_counter_init(&c);
  assert_int_equal(kv_counter_add(&c, NULL, 1, 10), KV_OK);
  assert_int_equal(kv_counter_add(&c, NULL, 2, -3), KV_OK);
  kv_counter_copy(&floor, &c); /* a delete observed this state */
  assert_int_equal(value(&c, &floor), 0);
  assert_int_equal(kv_counter_add(&c, &floor, 1, 4), KV_OK);
  assert_int_equal(value(&c, &floor), 4);
  /* Overflow is measured above the floor. */
  assert_int_equal(kv_counter_add(&c, &floor, 2, INT64_MAX), KV_OVERFLOW);
  assert_int_equal(kv_counter_add(&c, &floor, 2, INT64_MAX - 4), KV_OK);
  assert_int_equal(value(&c, &floor), INT64_MAX);
  kv_counter_fini(&c);
  kv_counter_fini(&floor);
}

static void test_counter_valid_rejects_bad_state(void **state) {
  (void)state;
  kv_counter_entry unsorted[] = {{2, 1, 0}, {1, 1, 0}};
  kv_counter_entry dup[] = {{1, 1, 0}, {1, 2, 0}};
  kv_counter_entry zero[] = {{1, 0, 0}};
  kv_counter a = {2, unsorted}, b = {2, dup}, c = {1, zero};
  assert_false(kv_counter_valid(&a));
  assert_false(kv_counter_valid(&b));
  assert_false(kv_counter_valid(&c));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_add_and_value),
      cmocka_unit_test(test_counter_overflow_is_error_not_wrap),
      cmocka_unit_test(test_counter_value_overflow_reported),
      cmocka_unit_test(test_counter_merge_is_per_replica_max),
      cmocka_unit_test(test_counter_floor_resets_value),
      cmocka_unit_test(test_counter_valid_rejects_bad_state),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
