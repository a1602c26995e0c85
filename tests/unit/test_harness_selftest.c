/* test_harness_selftest.c — checks the harness itself: one test that passes, one that skips
 * with a reason, so tests/test_unit.py can be seen turning both into pytest results. */
#include "harness.h"

static void passes(void **state) {
        (void)state;
        test_alarm(10);
        assert_int_equal(1 + 1, 2);
        assert_non_null(helper_path());
        assert_true(helper_path()[0] == '/');
        assert_non_null(strstr(helper_path(), "/tests/helper"));
}

static void skips_with_reason(void **state) {
        (void)state;
        skip_with_reason("the harness self-test always skips this one (%d)", 42);
        fail_msg("skip_with_reason() returned");
}

static const struct CMUnitTest tests[] = {
        cmocka_unit_test(passes),
        cmocka_unit_test(skips_with_reason),
};

TEND_TEST_MAIN(tests)
