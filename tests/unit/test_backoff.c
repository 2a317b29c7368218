/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include "../../cloud/backoff.h"
#include "../../common/util.h"

static void test_schedule_doubles_and_caps(void **state)
{
	struct backoff b;
	/* r = 0: the guaranteed half; r -> 1: the whole base */
	static const uint64_t lo[] = {
		500, 1000, 2000, 4000, 8000, 15000, 15000
	};

	(void)state;
	backoff_init(&b, 1000, 30000);
	for (size_t i = 0; i < EB_ARRAY_SIZE(lo); i++)
		assert_int_equal(backoff_next(&b, 0.0), lo[i]);
	backoff_reset(&b);
	assert_int_equal(backoff_next(&b, 0.999999), 999);
	assert_int_equal(backoff_next(&b, 0.5), 1500);
}

static void test_jitter_bounds(void **state)
{
	struct backoff b;

	(void)state;
	backoff_init(&b, 100, 60000);
	for (int i = 0; i < 200; i++) {
		uint64_t base = 100ULL << (i < 10 ? i : 10);
		uint64_t d;

		if (base > 60000)
			base = 60000;
		d = backoff_next(&b, backoff_random());
		assert_true(d >= base / 2);
		assert_true(d <= base);
	}
	/* many attempts never overflow */
	for (int i = 0; i < 1000; i++)
		assert_true(backoff_next(&b, 0.3) <= 60000);
}

static void test_degenerate_settings(void **state)
{
	struct backoff b;

	(void)state;
	backoff_init(&b, 0, 0);
	assert_true(backoff_next(&b, 0.9) <= 1);
	backoff_init(&b, 5000, 10); /* max below min: min wins */
	assert_int_equal(backoff_next(&b, 0.0), 2500);
	assert_true(backoff_next(&b, 2.0) <= 5000); /* r clamped */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedule_doubles_and_caps),
		cmocka_unit_test(test_jitter_bounds),
		cmocka_unit_test(test_degenerate_settings),
	};

	return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
