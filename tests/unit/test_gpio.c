/* SPDX-License-Identifier: MIT */
/*
 * The GPIO drivers' logic that needs no chip: debounce, configuration
 * checks, and the error a missing chip gives (this host has no
 * /dev/gpiochip*; the drivers against a real chip run under gpio-sim in
 * tests/gpio/).
 */
#include "helpers.h"

#include "../../drivers/driver.h"
#include "../../drivers/gpio_common.h"
#include "../../drivers/gpio_counter.h"

#define MS 1000000ULL

static void test_debounce_drops_glitches_keeps_kernel_time(void **state)
{
	struct debounce d;
	struct debounce_change ch;

	(void)state;
	debounce_init(&d, 10 * MS, 0, 0);
	/* contact bounce: 1,0,1,0,1 within 3 ms, then held */
	assert_int_equal(debounce_edge(&d, 1, 100 * MS, &ch), 0);
	assert_int_equal(debounce_edge(&d, 0, 101 * MS, &ch), 0);
	assert_int_equal(debounce_edge(&d, 1, 102 * MS, &ch), 0);
	assert_int_equal(debounce_edge(&d, 0, 102 * MS + 500, &ch), 0);
	assert_int_equal(debounce_edge(&d, 1, 103 * MS, &ch), 0);
	/* not yet held for 10 ms */
	assert_true(debounce_due_ns(&d) == 113 * MS);
	assert_int_equal(debounce_poll(&d, 112 * MS, &ch), 0);
	/* held: reported with the time of the edge that began it */
	assert_int_equal(debounce_poll(&d, 113 * MS, &ch), 1);
	assert_int_equal(ch.level, 1);
	assert_true(ch.ts_ns == 103 * MS);
	assert_int_equal(debounce_poll(&d, 200 * MS, &ch), 0);
	assert_true(debounce_due_ns(&d) == 0);

	/* a glitch shorter than the window: nothing at all */
	assert_int_equal(debounce_edge(&d, 0, 300 * MS, &ch), 0);
	assert_int_equal(debounce_edge(&d, 1, 305 * MS, &ch), 0);
	assert_int_equal(debounce_poll(&d, 400 * MS, &ch), 0);

	/* the next edge settles the level before it when that held long
	 * enough: no timer needed when edges keep coming */
	assert_int_equal(debounce_edge(&d, 0, 500 * MS, &ch), 0);
	assert_int_equal(debounce_edge(&d, 1, 520 * MS, &ch), 1);
	assert_int_equal(ch.level, 0);
	assert_true(ch.ts_ns == 500 * MS);
	assert_int_equal(debounce_poll(&d, 530 * MS, &ch), 1);
	assert_int_equal(ch.level, 1);
	assert_true(ch.ts_ns == 520 * MS);
}

static void test_debounce_off_and_time_never_goes_back(void **state)
{
	struct debounce d;
	struct debounce_change ch;
	uint64_t last = 0;
	/* two edges with the same stamp, one stamped earlier: reported
	 * times still strictly increase */
	const uint64_t ts[] = { 5 * MS, 5 * MS, 4 * MS, 6 * MS };

	(void)state;
	debounce_init(&d, 0, 0, 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(debounce_edge(&d, (i + 1) % 2, ts[i], &ch), 1);
		assert_int_equal(ch.level, (i + 1) % 2);
		assert_true(ch.ts_ns > last);
		last = ch.ts_ns;
	}
	/* an edge to the level it already has (a lost edge): no change */
	assert_int_equal(debounce_edge(&d, 0, 7 * MS, &ch), 0);
}

static void test_timestamps_convert_to_wall_clock(void **state)
{
	uint64_t now = gpio_mono_ns();
	int64_t real = eb_realtime_ms();

	(void)state;
	/* 250 ms ago on the monotonic clock is 250 ms ago on the wall */
	assert_true(llabs(gpio_mono_to_realtime_ms(now - 250 * MS) -
			  (real - 250)) <= 2);
	/* a monotonic stamp stays; a realtime one (old kernels) converts */
	assert_true(gpio_ts_to_mono_ns(now) == now);
	assert_true(llabs((long long)gpio_ts_to_mono_ns((uint64_t)real * MS) -
			  (long long)now) < (long long)(5 * MS));
}

static struct eb_sensor_conf conf(const char *driver, struct eb_kv *kv,
				  size_t n)
{
	struct eb_sensor_conf c = {
		.name = "door",
		.driver = (char *)driver,
		.interval_ms = 10000,
		.state_dir = "/nonexistent",
		.opt = kv,
		.n_opt = n,
		.loc = { "gw.conf", 10 },
	};
	return c;
}

static void expect(struct eb_diags *d, size_t i, const char *text)
{
	assert_true(i < d->n);
	if (!strstr(d->msg[i], text))
		fail_msg("diag %zu is '%s', wanted '%s'", i, d->msg[i], text);
}

static void test_gpio_config_errors_have_file_line(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "chip",
		  .value = "gpiochip0",
		  .loc = { "gw.conf", 11 } },
		{ .key = "lines", .value = "3,x y", .loc = { "gw.conf", 12 } },
		{ .key = "bias",
		  .value = "pull-sideways",
		  .loc = { "gw.conf", 13 } },
		{ .key = "active_low",
		  .value = "maybe",
		  .loc = { "gw.conf", 14 } },
		{ .key = "debounce",
		  .value = "soon",
		  .loc = { "gw.conf", 15 } },
		{ .key = "report", .value = "tweet", .loc = { "gw.conf", 16 } },
		{ .key = "event_type",
		  .value = "a,b",
		  .loc = { "gw.conf", 17 } },
	};
	struct eb_sensor_conf c = conf("gpio-input", kv, 7);
	struct eb_diags d = { 0 };

	(void)state;
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 6);
	expect(&d, 0, "gw.conf:12: sensor.door.lines: '3,x y'");
	expect(&d, 1,
	       "gw.conf:13: sensor.door.bias: 'pull-sideways' is not "
	       "one of: as-is, disable, pull-up, pull-down");
	expect(&d, 2, "gw.conf:14: sensor.door.active_low");
	expect(&d, 3, "gw.conf:15: sensor.door.debounce");
	expect(&d, 4, "gw.conf:16: sensor.door.report");
	expect(&d, 5, "gw.conf:17: sensor.door.event_type");
	diags_free(&d);

	/* no chip, no line: the section's line */
	c = conf("gpio-output", kv, 0);
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 2);
	expect(&d, 0, "gw.conf:10: sensor.door.chip is required");
	expect(&d, 1, "gw.conf:10: sensor.door.line is required");
	diags_free(&d);

	/* an output has one line and a safe default of 0, 1 or keep */
	kv[1].key = "line";
	kv[1].value = "7";
	kv[2].key = "default";
	kv[2].value = "on";
	c = conf("gpio-output", kv, 3);
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 1);
	expect(&d, 0,
	       "gw.conf:13: sensor.door.default: 'on' is not one of: "
	       "0, 1, keep");
	diags_free(&d);
}

static void test_missing_chip_is_a_clear_error(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "chip", .value = "gpiochip9" },
		{ .key = "line", .value = "3" },
	};
	const struct driver_ops *ops[] = { &driver_gpio_input,
					   &driver_gpio_output, &driver_dht22,
					   &driver_gpio_counter };
	struct eb_err err = { "" };
	void *st = NULL;

	(void)state;
	if (access("/dev/gpiochip9", F_OK) == 0)
		skip();
	for (size_t i = 0; i < EB_ARRAY_SIZE(ops); i++) {
		struct eb_sensor_conf c = conf(ops[i]->name, kv, 2);

		assert_int_equal(ops[i]->open(&c, &st, &err), -ENOENT);
		assert_null(st);
		assert_non_null(strstr(err.msg, "no GPIO chip 'gpiochip9'"));
	}
}

static char *read_file(const char *path)
{
	static char buf[128];
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_counter_total_survives_restarts(void **state)
{
	char *dir = t_mkdtemp();
	char *path, *tmp_glob;
	struct counter c;
	struct eb_err err = { "" };
	double total, rate;

	(void)state;
	assert_true(asprintf(&path, "%s/counter-meter.state", dir) > 0);
	/* the first start: no file, 0 */
	assert_int_equal(counter_open(&c, path, 1000, &err), 0);
	assert_true(c.pulses == 0);
	counter_add(&c, 500);
	/* 10 s later: saved first, then 0.5 kWh and 0.05 kWh/s */
	assert_int_equal(counter_report(&c, 11000, 1000, &total, &rate, &err),
			 0);
	assert_true(total == 0.5 && rate == 0.05);
	assert_string_equal(read_file(path), "pulses=500\n");
	/* a clean stop mid-interval saves what came since */
	counter_add(&c, 7);
	assert_int_equal(counter_close(&c, &err), 0);
	assert_string_equal(read_file(path), "pulses=507\n");

	/* the restart goes on from there: nothing lost, nothing twice */
	assert_int_equal(counter_open(&c, path, 50000, &err), 0);
	assert_true(c.pulses == 507);
	counter_add(&c, 3);
	assert_int_equal(counter_report(&c, 60000, 1000, &total, &rate, &err),
			 0);
	assert_true(total == 0.51);
	assert_true(rate > 0.0003 - 1e-12 && rate < 0.0003 + 1e-12);
	/* a crash (no close) after pulses that were not reported yet: the
	 * restart is back at the last reported total, never below it and
	 * never above what was counted */
	counter_add(&c, 9);
	free(c.path);
	assert_int_equal(counter_open(&c, path, 70000, &err), 0);
	assert_true(c.pulses == 510);
	assert_int_equal(counter_close(&c, &err), 0);
	/* the atomic writer leaves no temporary beside it */
	assert_true(asprintf(&tmp_glob,
			     "ls -A '%s' | grep -qv '^counter-meter.state$'",
			     dir) > 0);
	assert_int_not_equal(system(tmp_glob), 0);
	free(tmp_glob);

	/* a garbled file is an error naming it, not a silent 0 */
	free(t_write(dir, "counter-meter.state", 0644, "pulses=12x\n"));
	assert_int_equal(counter_open(&c, path, 0, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, path));
	assert_null(c.path);
	/* a state dir that cannot be written: the report waits, the pulses
	 * stay counted */
	free(t_write(dir, "counter-meter.state", 0644, "pulses=1\n"));
	assert_int_equal(counter_open(&c, path, 0, &err), 0);
	counter_add(&c, 1);
	chmod(dir, 0500);
	if (access(dir, W_OK) == 0) { /* root writes anyway */
		chmod(dir, 0700);
	} else {
		assert_true(counter_report(&c, 1000, 1, &total, &rate, &err) <
			    0);
		assert_non_null(strstr(err.msg, "cannot save the count"));
		chmod(dir, 0700);
	}
	assert_int_equal(counter_report(&c, 2000, 1, &total, &rate, &err), 0);
	assert_true(total == 2);
	assert_int_equal(counter_close(&c, &err), 0);
	t_rm_rf(dir);
	free(path);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_debounce_drops_glitches_keeps_kernel_time),
		cmocka_unit_test(test_debounce_off_and_time_never_goes_back),
		cmocka_unit_test(test_timestamps_convert_to_wall_clock),
		cmocka_unit_test(test_gpio_config_errors_have_file_line),
		cmocka_unit_test(test_missing_chip_is_a_clear_error),
		cmocka_unit_test(test_counter_total_survives_restarts),
	};

	return cmocka_run_group_tests_name("gpio", tests, NULL, NULL);
}
