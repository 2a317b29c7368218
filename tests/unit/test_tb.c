/* SPDX-License-Identifier: MIT */
/* The ThingsBoard profile: telemetry objects, arrays, the session limit. */
#include <jansson.h>
#include <math.h>

#include "helpers.h"

#include "../../cloud/profile.h"
#include "../../store/store.h"

static struct store_row rows[4000];
static bool bad[4000];
static char buf[70000];

static void set(size_t i, struct sensor_meta *m, double v, int64_t ts)
{
	rows[i].seq = (int64_t)i + 1;
	rows[i].s.meta = m;
	rows[i].s.value = v;
	rows[i].s.time_ms = ts;
}

static json_t *parse(const char *s)
{
	json_error_t e;
	json_t *o = json_loads(s, 0, &e);

	assert_non_null(o);
	return o;
}

static void test_one_sample_is_a_bare_object(void **state)
{
	struct sensor_meta *m = sensor_meta_new("boiler", "c8y_T", "T", "C");
	size_t len;
	json_t *o;

	(void)state;
	set(0, m, 21.37, 1700000000123LL);
	assert_int_equal(profile_pack_limit(&profile_thingsboard, 65536, rows,
					    1, buf, &len, bad),
			 1);
	assert_string_equal(buf,
			    "{\"ts\":1700000000123,\"values\":{\"boiler.T\":"
			    "21.37}}");
	assert_int_equal(len, strlen(buf));
	o = parse(buf);
	json_decref(o);
	sensor_meta_unref(m);
}

static void test_one_timestamp_is_one_object(void **state)
{
	struct sensor_meta *a = sensor_meta_new("a", "f", "T", "C");
	struct sensor_meta *b = sensor_meta_new("b", "f", "P", "bar");
	size_t len;

	(void)state;
	set(0, a, 1, 1000);
	set(1, b, 2.5, 1000);
	set(2, a, 3, 1000); /* same key again: a new object */
	set(3, b, 4, 2000);
	assert_int_equal(profile_pack_limit(&profile_thingsboard, 65536, rows,
					    4, buf, &len, bad),
			 4);
	assert_string_equal(buf, "[{\"ts\":1000,\"values\":{\"a.T\":1,\"b.P\":"
				 "2.5}},{\"ts\":1000,\"values\":{\"a.T\":3}},"
				 "{\"ts\":2000,\"values\":{\"b.P\":4}}]");
	sensor_meta_unref(a);
	sensor_meta_unref(b);
}

static void test_packs_up_to_the_limit(void **state)
{
	struct sensor_meta *m = sensor_meta_new("boiler", "c8y_T", "T", "C");
	size_t n = 4000, off = 0, total = 0, used, len, limit = 4096;

	(void)state;
	for (size_t i = 0; i < n; i++)
		set(i, m, i == 77 ? NAN : (double)i / 3, 1700000000000LL + i);
	while (off < n) {
		json_t *o;

		used = profile_pack_limit(&profile_thingsboard, limit,
					  rows + off, n - off, buf, &len,
					  bad + off);
		assert_true(used > 0);
		assert_true(len <= limit);
		assert_int_equal(len, strlen(buf));
		if (off + used < n)
			assert_true(len > limit - 80); /* full */
		o = parse(buf);
		total += json_is_array(o) ? json_array_size(o) : 1;
		json_decref(o);
		off += used;
	}
	assert_int_equal(total, n - 1);
	assert_true(bad[77]);
	sensor_meta_unref(m);
}

static void test_a_sample_that_never_fits_is_bad(void **state)
{
	struct sensor_meta *m = sensor_meta_new("boiler", "c8y_T", "T", "C");
	size_t len;

	(void)state;
	set(0, m, 1, 1700000000000LL);
	assert_int_equal(profile_pack_limit(&profile_thingsboard, 20, rows, 1,
					    buf, &len, bad),
			 1);
	assert_true(bad[0]);
	assert_int_equal(len, 0);
	sensor_meta_unref(m);
}

static void test_events_are_telemetry(void **state)
{
	char out[512];
	json_t *o;
	int n;

	(void)state;
	n = profile_thingsboard.format_event("edgebridge_X", "MAJOR",
					     "a \"quoted\"\ntext", 5, out,
					     sizeof(out));
	assert_true(n > 0);
	o = parse(out);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(o, "values"),
						  "event_text")),
		"a \"quoted\"\ntext");
	json_decref(o);
	assert_int_equal(
		profile_thingsboard.format_event("t", NULL, "x", 5, out, 10),
		-ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_sample_is_a_bare_object),
		cmocka_unit_test(test_one_timestamp_is_one_object),
		cmocka_unit_test(test_packs_up_to_the_limit),
		cmocka_unit_test(test_a_sample_that_never_fits_is_bad),
		cmocka_unit_test(test_events_are_telemetry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
