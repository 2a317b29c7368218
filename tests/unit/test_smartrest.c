/* SPDX-License-Identifier: MIT */
#include <math.h>

#include "helpers.h"

#include "../../cloud/profile.h"

static void test_time_format(void **state)
{
	char buf[40];

	(void)state;
	assert_int_equal(c8y_format_time(0, buf, sizeof(buf)), 24);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	assert_true(c8y_format_time(1795348800123LL, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "2026-11-22T12:00:00.123Z");
	assert_true(c8y_format_time(-1, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
	/* the per-second cache never serves a stale second */
	c8y_format_time(1795348800999LL, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-22T12:00:00.999Z");
	c8y_format_time(1795348801000LL, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-22T12:00:01.000Z");
	c8y_format_time(1795348800007LL, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-22T12:00:00.007Z");
	assert_int_equal(c8y_format_time(0, buf, 10), -ENOSPC);
}

static void test_field_escaping(void **state)
{
	char buf[64];

	(void)state;
	assert_int_equal(c8y_field("plain", buf, sizeof(buf)), 5);
	assert_string_equal(buf, "plain");
	assert_int_equal(c8y_field("", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	c8y_field("a,b", buf, sizeof(buf));
	assert_string_equal(buf, "\"a,b\"");
	c8y_field("say \"hi\"", buf, sizeof(buf));
	assert_string_equal(buf, "\"say \"\"hi\"\"\"");
	c8y_field("two\nlines", buf, sizeof(buf));
	assert_string_equal(buf, "\"two\nlines\"");
	c8y_field(" padded", buf, sizeof(buf));
	assert_string_equal(buf, "\" padded\"");
	c8y_field("°C", buf, sizeof(buf));
	assert_string_equal(buf, "°C");
	/* too small: never a truncated field */
	assert_int_equal(c8y_field("a,b", buf, 5), -ENOSPC);
	assert_int_equal(c8y_field("abc", buf, 3), -ENOSPC);
	assert_int_equal(c8y_field("a,b", buf, 6), 5);
}

static struct sensor_meta *meta(const char *unit)
{
	return sensor_meta_new("boiler", "c8y_Temperature", "T", unit);
}

static void test_measurement_line(void **state)
{
	struct eb_sample s = { .value = 21.5, .time_ms = 1795348800123LL };
	char buf[256];
	int n;

	(void)state;
	s.meta = meta("C");
	n = profile_cumulocity.format(&s, buf, sizeof(buf));
	assert_true(n > 0);
	assert_string_equal(
		buf, "200,c8y_Temperature,T,21.5,C,2026-11-22T12:00:00.123Z");
	assert_int_equal(n, (int)strlen(buf));

	s.value = -0.001;
	profile_cumulocity.format(&s, buf, sizeof(buf));
	assert_string_equal(
		buf, "200,c8y_Temperature,T,-0.001,C,2026-11-22T12:00:00.123Z");
	s.value = 123456789012.0;
	profile_cumulocity.format(&s, buf, sizeof(buf));
	assert_string_equal(buf, "200,c8y_Temperature,T,123456789012,C,2026-11-"
				 "22T12:00:00.123Z");

	/* decimals as written, never exponent notation or binary noise */
	{
		static const struct {
			double v;
			const char *text;
		} nums[] = {
			{ 21.37, "21.37" },
			{ 0.1, "0.1" },
			{ -0.5, "-0.5" },
			{ 1013, "1013" },
			{ 0.00001, "0.00001" },
			{ 0, "0" },
			{ 999999999.999999, "999999999.999999" },
			{ 1.0 / 3, "0.333333333333333" },
			{ 6.02e23, "6.02e+23" },
		};
		for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
			char want[128];

			s.value = nums[i].v;
			profile_cumulocity.format(&s, buf, sizeof(buf));
			snprintf(want, sizeof(want),
				 "200,c8y_Temperature,T,%s,C,"
				 "2026-11-22T12:00:00.123Z",
				 nums[i].text);
			assert_string_equal(buf, want);
		}
	}

	s.value = NAN;
	assert_int_equal(profile_cumulocity.format(&s, buf, sizeof(buf)),
			 -EDOM);
	s.value = INFINITY;
	assert_int_equal(profile_cumulocity.format(&s, buf, sizeof(buf)),
			 -EDOM);
	s.value = 1;
	assert_int_equal(profile_cumulocity.format(&s, buf, 20), -ENOSPC);
	sensor_meta_unref(s.meta);

	s.meta = meta("kWh, total");
	profile_cumulocity.format(&s, buf, sizeof(buf));
	assert_string_equal(buf, "200,c8y_Temperature,T,1,\"kWh, "
				 "total\",2026-11-22T12:00:00.123Z");
	sensor_meta_unref(s.meta);
}

static void test_bootstrap(void **state)
{
	struct eb_sensor_conf sensors[2] = {
		{ .interval_ms = 10000 },
		{ .interval_ms = 3600000 },
	};
	struct eb_config c = { 0 };
	char buf[512];

	(void)state;
	c.gateway.id = "gw-0001";
	c.gateway.name = "Boiler room, north";
	c.gateway.type = "c8y_EdgeBridge";
	c.sensor = sensors;
	c.n_sensor = 1;
	assert_true(profile_cumulocity.bootstrap(&c, "1.2.3", buf,
						 sizeof(buf)) > 0);
	assert_string_equal(buf, "100,\"Boiler room, north\",c8y_EdgeBridge\n"
				 "110,gw-0001,edgebridge,1.2.3\n"
				 "117,10");
	c.n_sensor = 2; /* hourly sensor: required interval 2 h */
	profile_cumulocity.bootstrap(&c, "1.2.3", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\n117,120"));
	c.cloud.required_interval_min = 5;
	profile_cumulocity.bootstrap(&c, "1.2.3", buf, sizeof(buf));
	assert_non_null(strstr(buf, "\n117,5"));
	assert_int_equal(profile_cumulocity.bootstrap(&c, "1.2.3", buf, 30),
			 -ENOSPC);
}

static void test_events_and_alarms(void **state)
{
	char buf[256];

	(void)state;
	assert_true(profile_cumulocity.format_event(
			    "edgebridge_StoreReset", NULL, "moved, kept",
			    1795348800123LL, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "400,edgebridge_StoreReset,\"moved, kept\","
				 "2026-11-22T12:00:00.123Z");
	/* free text is always quoted */
	profile_cumulocity.format_event("t", "", "plain", 0, buf, sizeof(buf));
	assert_string_equal(buf, "400,t,\"plain\",1970-01-01T00:00:00.000Z");
	profile_cumulocity.format_event("t", "MAJOR", "soon", 0, buf,
					sizeof(buf));
	assert_string_equal(buf, "302,t,\"soon\",1970-01-01T00:00:00.000Z");
	profile_cumulocity.format_event("t", "CRITICAL", "x", 0, buf,
					sizeof(buf));
	assert_true(!strncmp(buf, "301,", 4));
	profile_cumulocity.format_event("t", "WARNING", "x", 0, buf,
					sizeof(buf));
	assert_true(!strncmp(buf, "304,", 4));
	assert_int_equal(
		profile_cumulocity.format_event("t", NULL, "x", 0, buf, 10),
		-ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_format),
		cmocka_unit_test(test_field_escaping),
		cmocka_unit_test(test_measurement_line),
		cmocka_unit_test(test_bootstrap),
		cmocka_unit_test(test_events_and_alarms),
	};

	return cmocka_run_group_tests_name("smartrest", tests, NULL, NULL);
}
