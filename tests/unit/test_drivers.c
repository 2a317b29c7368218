/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include "../../drivers/driver.h"

struct collect {
	struct sample_sink sink;
	double v[64];
	int n;
};

static void emit(struct sample_sink *s, double value, int64_t time_ms)
{
	struct collect *c = (struct collect *)s;

	assert_true(time_ms > 1600000000000LL); /* wall clock, in ms */
	c->v[c->n++] = value;
}

static struct eb_sensor_conf conf(struct eb_kv *kv, size_t n)
{
	struct eb_sensor_conf c = {
		.name = "t",
		.driver = "sim",
		.interval_ms = 1000,
		.opt = kv,
		.n_opt = n,
	};
	return c;
}

static void run(const struct driver_ops *ops, struct eb_sensor_conf *c,
		struct collect *out, int reads, int *last_rc,
		struct eb_err *err)
{
	void *st = NULL;

	assert_int_equal(ops->open(c, &st, err), 0);
	assert_int_equal(ops->fd(st), -1);
	for (int i = 0; i < reads; i++)
		*last_rc = ops->read(st, &out->sink, err);
	ops->close(st);
}

static void test_sim_is_deterministic_and_bounded(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "waveform", .value = "random-walk" },
		{ .key = "min", .value = "10" },
		{ .key = "max", .value = "20" },
		{ .key = "seed", .value = "42" },
	};
	struct eb_sensor_conf c = conf(kv, 4);
	struct collect a = { .sink.emit = emit }, b = { .sink.emit = emit };
	struct eb_err err = { "" };
	int rc;

	(void)state;
	run(&driver_sim, &c, &a, 50, &rc, &err);
	run(&driver_sim, &c, &b, 50, &rc, &err);
	assert_int_equal(a.n, 50);
	for (int i = 0; i < 50; i++) {
		assert_true(a.v[i] == b.v[i]);
		assert_true(a.v[i] >= 10 && a.v[i] <= 20);
	}
	assert_true(a.v[0] != a.v[49]); /* it does walk */
}

static void test_sim_waves_and_count(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "waveform", .value = "ramp" },
		{ .key = "period", .value = "4s" },
		{ .key = "count", .value = "6" },
	};
	struct eb_sensor_conf c = conf(kv, 3);
	struct collect a = { .sink.emit = emit };
	struct eb_err err = { "" };
	int rc = 0;

	(void)state;
	run(&driver_sim, &c, &a, 7, &rc, &err);
	assert_int_equal(a.n, 6);
	assert_int_equal(rc, -ENODATA); /* exhausted after count */
	assert_true(a.v[0] == 0 && a.v[1] == 25 && a.v[2] == 50);
	assert_true(a.v[4] == 0); /* period wraps */

	kv[0].value = "sine";
	kv[2].value = "2";
	a.n = 0;
	run(&driver_sim, &c, &a, 2, &rc, &err);
	assert_true(a.v[0] == 50 && a.v[1] == 100);
}

static void test_sim_check_reports_bad_options(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "waveform", .value = "square", .loc = { "f", 3 } },
		{ .key = "min", .value = "9" },
		{ .key = "max", .value = "1" },
	};
	struct eb_sensor_conf c = conf(kv, 3);
	struct eb_diags d = { 0 };

	(void)state;
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 2);
	assert_non_null(strstr(d.msg[0], "f:3:"));
	assert_non_null(strstr(d.msg[1], "max is below min"));
	diags_free(&d);
}

static void test_hwmon_reads_a_fake_tree(void **state)
{
	char *dir = t_mkdtemp();
	char *path = t_write(dir, "temp1_input", 0644, "42500\n");
	struct eb_kv kv[] = { { .key = "path", .value = path } };
	struct eb_sensor_conf c = conf(kv, 1);
	struct collect a = { .sink.emit = emit };
	struct eb_err err = { "" };
	void *st;
	int rc;

	(void)state;
	c.driver = "hwmon";
	run(&driver_hwmon, &c, &a, 1, &rc, &err);
	assert_int_equal(rc, 1);
	assert_true(a.v[0] == 42.5);

	/* garbage, then a vanished file: errors that say what happened */
	assert_int_equal(driver_hwmon.open(&c, &st, &err), 0);
	free(t_write(dir, "temp1_input", 0644, "n/a\n"));
	assert_int_equal(driver_hwmon.read(st, &a.sink, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "not a number"));
	unlink(path);
	assert_int_equal(driver_hwmon.read(st, &a.sink, &err), -ENOENT);
	assert_non_null(strstr(err.msg, path));
	/* and it comes back */
	free(t_write(dir, "temp1_input", 0644, "-1000"));
	assert_int_equal(driver_hwmon.read(st, &a.sink, &err), 1);
	assert_true(a.v[1] == -1);
	driver_hwmon.close(st);
	t_rm_rf(dir);
	free(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sim_is_deterministic_and_bounded),
		cmocka_unit_test(test_sim_waves_and_count),
		cmocka_unit_test(test_sim_check_reports_bad_options),
		cmocka_unit_test(test_hwmon_reads_a_fake_tree),
	};

	return cmocka_run_group_tests_name("drivers", tests, NULL, NULL);
}
