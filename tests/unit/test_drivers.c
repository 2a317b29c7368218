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

static void test_w1_therm_fake_tree(void **state)
{
	char *dir = t_mkdtemp();
	char *dev, *p;
	struct eb_kv kv[] = { { .key = "path" } };
	struct eb_sensor_conf c = conf(kv, 1);
	struct collect a = { .sink.emit = emit };
	struct eb_err err = { "" };
	void *st;

	(void)state;
	c.driver = "w1-therm";
	assert_true(asprintf(&dev, "%s/28-0316a2b4c1ff", dir) > 0);
	kv[0].value = dev;
	assert_int_equal(driver_w1_therm.open(&c, &st, &err), 0);
	/* no device (unplugged): says where it looked */
	assert_int_equal(driver_w1_therm.read(st, &a.sink, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "no 1-Wire device at"));
	assert_non_null(strstr(err.msg, dev));
	assert_int_equal(mkdir(dev, 0755), 0);
	/* an old kernel: w1_slave only, CRC good */
	free(t_write(dev, "w1_slave", 0644,
		     "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
		     "72 01 4b 46 7f ff 0e 10 57 t=23125\n"));
	assert_int_equal(driver_w1_therm.read(st, &a.sink, &err), 1);
	assert_true(a.v[0] == 23.125);
	/* a garbled transfer is an error, never a value */
	free(t_write(dev, "w1_slave", 0644,
		     "72 01 4b 46 7f ff 0e 10 58 : crc=57 NO\n"
		     "72 01 4b 46 7f ff 0e 10 58 t=23125\n"));
	assert_int_equal(driver_w1_therm.read(st, &a.sink, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "CRC check failed"));
	free(t_write(dev, "w1_slave", 0644, "garbage"));
	assert_int_equal(driver_w1_therm.read(st, &a.sink, &err), -EBADMSG);
	/* a newer kernel's temperature attribute wins, negative too */
	p = t_write(dev, "temperature", 0644, "-10062\n");
	assert_int_equal(driver_w1_therm.read(st, &a.sink, &err), 1);
	assert_true(a.v[1] == -10.062);
	assert_int_equal(a.n, 2);
	driver_w1_therm.close(st);
	t_rm_rf(dir);
	free(p);
	free(dev);
	free(dir);
}

static void test_iio_fake_tree(void **state)
{
	char *dir = t_mkdtemp();
	struct eb_kv kv[] = {
		{ .key = "path", .value = dir },
		{ .key = "channel", .value = "in_voltage0" },
	};
	struct eb_sensor_conf c = conf(kv, 2);
	struct collect a = { .sink.emit = emit };
	struct eb_err err = { "" };
	char *f[4];
	void *st;

	(void)state;
	c.driver = "iio";
	assert_int_equal(driver_iio.open(&c, &st, &err), 0);
	/* no raw value: an error naming the file */
	assert_int_equal(driver_iio.read(st, &a.sink, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "in_voltage0_raw"));
	/* raw alone: scale 1, offset 0 */
	f[0] = t_write(dir, "in_voltage0_raw", 0644, "1000\n");
	assert_int_equal(driver_iio.read(st, &a.sink, &err), 1);
	assert_true(a.v[0] == 1000);
	/* the type's shared scale, then the channel's own wins */
	f[1] = t_write(dir, "in_voltage_scale", 0644, "0.5\n");
	assert_int_equal(driver_iio.read(st, &a.sink, &err), 1);
	assert_true(a.v[1] == 500);
	f[2] = t_write(dir, "in_voltage0_scale", 0644, "0.25\n");
	f[3] = t_write(dir, "in_voltage0_offset", 0644, "-200\n");
	assert_int_equal(driver_iio.read(st, &a.sink, &err), 1);
	assert_true(a.v[2] == (1000 - 200) * 0.25); /* (raw + offset) * scale */
	/* a garbled scale file is an error, not the default */
	free(t_write(dir, "in_voltage0_scale", 0644, "x"));
	assert_int_equal(driver_iio.read(st, &a.sink, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "in_voltage0_scale"));
	driver_iio.close(st);
	t_rm_rf(dir);
	for (int i = 0; i < 4; i++)
		free(f[i]);
	free(dir);
}

static void test_sysfs_check_errors_have_file_line(void **state)
{
	struct eb_kv kv[] = {
		{ .key = "path", .value = "relative/dir", .loc = { "f", 7 } },
		{ .key = "channel", .value = "../x", .loc = { "f", 8 } },
	};
	struct eb_sensor_conf c = conf(kv, 2);
	struct eb_diags d = { 0 };

	(void)state;
	c.driver = "iio";
	c.loc = (struct eb_loc){ "f", 5 };
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 2);
	assert_non_null(strstr(d.msg[0], "f:7: sensor.t.path: must be"));
	assert_non_null(strstr(d.msg[1], "f:8: sensor.t.channel"));
	diags_free(&d);

	c.driver = "w1-therm";
	c.n_opt = 0;
	driver_check_config(&c, &d);
	assert_int_equal(d.n, 1);
	assert_non_null(strstr(d.msg[0], "f:5: sensor.t.path is required"));
	diags_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sim_is_deterministic_and_bounded),
		cmocka_unit_test(test_sim_waves_and_count),
		cmocka_unit_test(test_sim_check_reports_bad_options),
		cmocka_unit_test(test_hwmon_reads_a_fake_tree),
		cmocka_unit_test(test_w1_therm_fake_tree),
		cmocka_unit_test(test_iio_fake_tree),
		cmocka_unit_test(test_sysfs_check_errors_have_file_line),
	};

	return cmocka_run_group_tests_name("drivers", tests, NULL, NULL);
}
