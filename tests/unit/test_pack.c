/* SPDX-License-Identifier: MIT */
#include <math.h>

#include "helpers.h"

#include "../../cloud/profile.h"
#include "../../store/store.h"

#define LIMIT (16184 - 11)

static struct store_row rows[6000];
static bool bad[6000];

static size_t fill(size_t n, struct sensor_meta *m, double nan_at)
{
	for (size_t i = 0; i < n; i++) {
		rows[i].seq = (int64_t)i + 1;
		rows[i].s.meta = m;
		rows[i].s.value = (double)i == nan_at ? NAN : (double)i;
		rows[i].s.time_ms = 1795348800000LL + (int64_t)i;
	}
	return n;
}

static size_t count_lines(const char *buf)
{
	size_t n = 1;

	for (; *buf; buf++)
		n += *buf == '\n';
	return n;
}

static void test_single_sample_is_one_line(void **state)
{
	struct sensor_meta *m = sensor_meta_new("b", "c8y_T", "T", "C");
	size_t n = fill(1, m, -1);
	char buf[LIMIT + 1];
	size_t len;

	(void)state;
	assert_int_equal(
		profile_pack(&profile_cumulocity, rows, n, buf, &len, bad), 1);
	assert_false(bad[0]);
	assert_int_equal(len, strlen(buf));
	assert_null(strchr(buf, '\n'));
	sensor_meta_unref(m);
}

static void test_packs_to_the_byte_limit(void **state)
{
	struct sensor_meta *m = sensor_meta_new("b", "c8y_T", "T", "C");
	size_t n = fill(5000, m, -1), off = 0;
	char buf[LIMIT + 1], one[256];
	size_t len, used, total = 0;
	int line_len;

	(void)state;
	used = profile_pack(&profile_cumulocity, rows, n, buf, &len, bad);
	assert_true(used > 100);
	assert_true(len <= LIMIT);
	assert_int_equal(len, strlen(buf));
	assert_int_equal(count_lines(buf), used);
	/* Full: one more line would not have fit. */
	line_len = profile_cumulocity.format(&rows[used].s, one, sizeof(one));
	assert_true(len + 1 + (size_t)line_len > LIMIT);
	/* In order, nothing skipped. */
	assert_true(strncmp(buf, "200,c8y_T,T,0,C,", 16) == 0);

	/* Draining: every row goes exactly once. */
	while (off < n && (used = profile_pack(&profile_cumulocity, rows + off,
					       n - off, buf, &len, bad))) {
		total += used;
		off += used;
		assert_true(len <= LIMIT);
	}
	assert_int_equal(total, 5000);
	sensor_meta_unref(m);
}

static void test_bad_sample_is_consumed_not_sent(void **state)
{
	struct sensor_meta *m = sensor_meta_new("b", "c8y_T", "T", "C");
	size_t n = fill(3, m, 1);
	char buf[LIMIT + 1];
	size_t len;

	(void)state;
	assert_int_equal(
		profile_pack(&profile_cumulocity, rows, n, buf, &len, bad), 3);
	assert_false(bad[0]);
	assert_true(bad[1]);
	assert_false(bad[2]);
	assert_int_equal(count_lines(buf), 2);
	assert_null(strstr(buf, "nan"));

	/* Only bad samples: consumed, nothing to send. */
	n = fill(1, m, 0);
	assert_int_equal(
		profile_pack(&profile_cumulocity, rows, n, buf, &len, bad), 1);
	assert_true(bad[0]);
	assert_int_equal(len, 0);
	sensor_meta_unref(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_sample_is_one_line),
		cmocka_unit_test(test_packs_to_the_byte_limit),
		cmocka_unit_test(test_bad_sample_is_consumed_not_sent),
	};

	return cmocka_run_group_tests_name("pack", tests, NULL, NULL);
}
