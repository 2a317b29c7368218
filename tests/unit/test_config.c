/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include "../../config/config.h"
#include "../../drivers/driver.h"

struct fx {
	char *dir;
	char *main;
	struct eb_diags d;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->dir = t_mkdtemp();
	free(t_write(f->dir, "module.so", 0644, "x"));
	free(t_write(f->dir, "pin", 0600, "1234\n"));
	free(t_write(f->dir, "ca.pem", 0644, "x"));
	free(t_write(f->dir, "chain.pem", 0644, "x"));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	diags_free(&f->d);
	t_rm_rf(f->dir);
	free(f->dir);
	free(f->main);
	free(f);
	return 0;
}

/* A valid base configuration; extra is appended verbatim. */
static void write_main(struct fx *f, const char *extra)
{
	free(f->main);
	f->main = t_write(f->dir, "edgebridge.conf", 0644,
			  "[gateway]\n"			    /* 1 */
			  "id = gw-0001\n"		    /* 2 */
			  "name = Boiler room\n"	    /* 3 */
			  "\n"				    /* 4 */
			  "[hsm]\n"			    /* 5 */
			  "module = %s/module.so\n"	    /* 6 */
			  "key = pkcs11:token=t;object=k\n" /* 7 */
			  "pin_file = %s/pin\n"		    /* 8 */
			  "[cloud]\n"			    /* 9 */
			  "host = example.com\n"	    /* 10 */
			  "ca_file = %s/ca.pem\n"	    /* 11 */
			  "cert_file = %s/chain.pem\n"	    /* 12 */
			  "%s",
			  f->dir, f->dir, f->dir, f->dir, extra);
}

static struct eb_config *load(struct fx *f)
{
	diags_free(&f->d);
	return config_load(f->main, driver_check_config, &f->d);
}

/* Is there a diagnostic containing both needles? */
static bool has_diag(const struct fx *f, const char *a, const char *b)
{
	for (size_t i = 0; i < f->d.n; i++)
		if (strstr(f->d.msg[i], a) && (!b || strstr(f->d.msg[i], b)))
			return true;
	return false;
}

static void dump(const struct fx *f)
{
	for (size_t i = 0; i < f->d.n; i++)
		fprintf(stderr, "  diag: %s\n", f->d.msg[i]);
}

static void test_durations(void **state)
{
	uint64_t ms;

	(void)state;
	assert_int_equal(config_parse_duration_ms("500ms", &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(config_parse_duration_ms("10s", &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(config_parse_duration_ms("5m", &ms), 0);
	assert_int_equal(ms, 300000);
	assert_int_equal(config_parse_duration_ms("1h", &ms), 0);
	assert_int_equal(ms, 3600000);
	assert_int_equal(config_parse_duration_ms("1h30m", &ms), 0);
	assert_int_equal(ms, 5400000);
	assert_int_equal(config_parse_duration_ms("10", &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(config_parse_duration_ms("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_true(config_parse_duration_ms("", &ms) < 0);
	assert_true(config_parse_duration_ms("10 parsecs", &ms) < 0);
	assert_true(config_parse_duration_ms("10parsecs", &ms) < 0);
	assert_true(config_parse_duration_ms("s", &ms) < 0);
	assert_true(config_parse_duration_ms("-5s", &ms) < 0);
	assert_true(config_parse_duration_ms("1.5s", &ms) < 0);
	assert_true(config_parse_duration_ms("5s10", &ms) < 0);
	assert_int_equal(config_parse_duration_ms("99999999999999999999d", &ms),
			 -ERANGE);
	assert_int_equal(config_parse_duration_ms("999999999999999d", &ms),
			 -ERANGE);
}

static void test_sizes(void **state)
{
	uint64_t b;

	(void)state;
	assert_int_equal(config_parse_size("4096", &b), 0);
	assert_int_equal(b, 4096);
	assert_int_equal(config_parse_size("64K", &b), 0);
	assert_int_equal(b, 65536);
	assert_int_equal(config_parse_size("64M", &b), 0);
	assert_int_equal(b, 64ULL << 20);
	assert_int_equal(config_parse_size("1G", &b), 0);
	assert_int_equal(b, 1ULL << 30);
	assert_int_equal(config_parse_size("2MiB", &b), 0);
	assert_int_equal(b, 2ULL << 20);
	assert_true(config_parse_size("12Q", &b) < 0);
	assert_true(config_parse_size("K", &b) < 0);
	assert_true(config_parse_size("1Kx", &b) < 0);
	assert_true(config_parse_size("", &b) < 0);
	assert_int_equal(config_parse_size("99999999999G", &b), -ERANGE);
}

static void test_bools_levels(void **state)
{
	bool v;
	enum eb_log_level l;

	(void)state;
	assert_int_equal(config_parse_bool("yes", &v), 0);
	assert_true(v);
	assert_int_equal(config_parse_bool("Off", &v), 0);
	assert_false(v);
	assert_true(config_parse_bool("maybe", &v) < 0);
	assert_int_equal(config_parse_log_level("debug", &l), 0);
	assert_int_equal(l, EB_LOG_DEBUG);
	assert_true(config_parse_log_level("loud", &l) < 0);
}

static void test_valid_and_defaults(void **state)
{
	struct fx *f = *state;
	struct eb_config *c;

	write_main(f,
		   "keepalive = 30s\n"
		   "[sensor.boiler]\n"
		   "driver = sim\n"
		   "interval = 500ms\n"
		   "fragment = c8y_Temperature\n"
		   "series = T\n"
		   "unit = C\n"
		   "waveform = ramp\n"
		   "[sensor.cpu]\n"
		   "driver = hwmon\n"
		   "path = /sys/class/thermal/thermal_zone0/temp ; inline\n");
	c = load(f);
	dump(f);
	assert_non_null(c);
	assert_int_equal(f->d.n, 0);
	assert_string_equal(c->gateway.id, "gw-0001");
	assert_string_equal(c->gateway.name, "Boiler room");
	assert_string_equal(c->gateway.state_dir, "/var/lib/edgebridge");
	assert_string_equal(c->cloud.profile, "cumulocity");
	assert_int_equal(c->cloud.port, 8883);
	assert_int_equal(c->cloud.keepalive_ms, 30000);
	assert_int_equal(c->gateway.log_level, EB_LOG_INFO);
	assert_int_equal(c->n_sensor, 2);
	assert_string_equal(c->sensor[0].name, "boiler");
	assert_int_equal(c->sensor[0].interval_ms, 500);
	assert_string_equal(c->sensor[0].fragment, "c8y_Temperature");
	assert_string_equal(c->sensor[1].fragment, "cpu"); /* derived */
	assert_string_equal(c->sensor[1].unit, "");
	assert_string_equal(c->sensor[1].opt[1].value,
			    "/sys/class/thermal/thermal_zone0/temp");
	config_free(c);
}

static void test_unknown_section_and_key(void **state)
{
	struct fx *f = *state;

	write_main(f, "colour = blue\n" /* 13 */
		      "[gatway]\n"	/* 14 */
		      "id = x\n");	/* 15 */
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "edgebridge.conf:13:", "unknown key 'colour'"));
	assert_true(
		has_diag(f, "edgebridge.conf:14:", "unknown section [gatway]"));
	assert_int_equal(f->d.n, 2); /* every problem, once each */
}

static void test_bad_values(void **state)
{
	struct fx *f = *state;

	write_main(f, "port = 70000\n"		 /* 13 */
		      "keepalive = 10 parsecs\n" /* 14 */
		      "[sensor.x]\n"		 /* 15 */
		      "driver = sim\n"		 /* 16 */
		      "interval = soon\n"	 /* 17 */
		      "waveform = square\n"	 /* 18 */
		      "min = low\n"		 /* 19 */
		      "[gateway]\n"		 /* 20 */
		      "log_level = loud\n");	 /* 21 */
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "edgebridge.conf:13:", "out of range"));
	assert_true(has_diag(f, "edgebridge.conf:14:", "not a duration"));
	assert_true(has_diag(f, "edgebridge.conf:17:", "not a duration"));
	assert_true(has_diag(f, "edgebridge.conf:18:", "square"));
	assert_true(has_diag(f, "edgebridge.conf:19:", "not a number"));
	assert_true(has_diag(f, "edgebridge.conf:21:", "not a log level"));
}

static void test_missing_required(void **state)
{
	struct fx *f = *state;

	free(f->main);
	f->main = t_write(f->dir, "edgebridge.conf", 0644,
			  "[gateway]\nname = x\n");
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "gateway.id is required", NULL));
	assert_true(has_diag(f, "hsm.key is required", NULL));
	assert_true(has_diag(f, "cloud.host is required", NULL));
	assert_true(has_diag(f, "cloud.cert_file is required", NULL));
}

static void test_identity_rules(void **state)
{
	struct fx *f = *state;

	write_main(f, "[gateway]\nid = tenant:gw\n" /* 13-14 */
		      "[hsm]\nkey = pkcs11:token=t;object=k;pin-value=1234\n");
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "edgebridge.conf:14:", "contains ':'"));
	assert_true(
		has_diag(f, "edgebridge.conf:16:", "must not carry the PIN"));
	/* and the PIN is not echoed back */
	assert_false(has_diag(f, "1234", NULL));
}

static void test_pin_file_mode(void **state)
{
	struct fx *f = *state;
	char *pin;

	assert_true(asprintf(&pin, "%s/pin", f->dir) > 0);
	chmod(pin, 0644);
	write_main(f, "");
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "edgebridge.conf:8:", "accessible by others"));
	chmod(pin, 0640);
	assert_non_null(config_free(load(f)) == NULL ? (void *)1 : NULL);
	assert_int_equal(f->d.n, 0);
	unlink(pin);
	assert_null(load(f));
	assert_true(has_diag(f, "edgebridge.conf:8:", "No such file"));
	free(pin);
}

static void test_credentials_directory(void **state)
{
	struct fx *f = *state;
	struct eb_config *c;

	free(f->main);
	f->main = t_write(f->dir, "edgebridge.conf", 0644,
			  "[gateway]\nid = gw\n[hsm]\nmodule = %s/module.so\n"
			  "key = pkcs11:object=k\n[cloud]\nhost = h\n"
			  "ca_file = %s/ca.pem\ncert_file = %s/chain.pem\n",
			  f->dir, f->dir, f->dir);
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_null(load(f));
	assert_true(has_diag(f, "hsm.pin_file is required", "credential"));
	setenv("CREDENTIALS_DIRECTORY", f->dir, 1);
	c = load(f);
	dump(f);
	assert_non_null(c);
	assert_true(strstr(c->hsm.pin_file, "/pin") != NULL);
	config_free(c);
	unsetenv("CREDENTIALS_DIRECTORY");
}

static void test_dropin_order(void **state)
{
	struct fx *f = *state;
	struct eb_config *c;
	char *dropdir;

	assert_true(asprintf(&dropdir, "%s/conf.d", f->dir) > 0);
	mkdir(dropdir, 0755);
	write_main(f, "[sensor.s]\ndriver = sim\ninterval = 1s\n");
	free(t_write(dropdir, "10-bad.conf", 0644,
		     "[sensor.s]\ninterval = x\n"));
	free(t_write(dropdir, "20-good.conf", 0644,
		     "[sensor.s]\ninterval = 7s\n"));
	free(t_write(dropdir, "ignored.txt", 0644, "[nonsense]\n"));
	c = load(f);
	dump(f);
	assert_non_null(c); /* the later drop-in wins */
	assert_int_equal(c->sensor[0].interval_ms, 7000);
	config_free(c);

	/* reversed: the bad value comes last and is reported where written */
	free(t_write(dropdir, "30-bad.conf", 0644,
		     "\n[sensor.s]\ninterval = 9 parsecs\n"));
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "conf.d/30-bad.conf:3:", "not a duration"));
	free(dropdir);
}

static void test_sensor_rules(void **state)
{
	struct fx *f = *state;

	write_main(f, "[sensor.a]\n"	  /* 13 */
		      "driver = laser\n"  /* 14 */
		      "[sensor.b]\n"	  /* 15 */
		      "driver = hwmon\n"  /* 16 */
		      "interval = 0\n"	  /* 17 */
		      "[sensor.c]\n"	  /* 18 */
		      "driver = sim\n"	  /* 19 */
		      "colour = red\n"	  /* 20 */
		      "[sensor.d]\n"	  /* 21 */
		      "interval = 1s\n"); /* 22 */
	assert_null(load(f));
	dump(f);
	assert_true(
		has_diag(f, "edgebridge.conf:14:", "unknown driver 'laser'"));
	assert_true(has_diag(f, "edgebridge.conf:17:", "must be more than 0"));
	assert_true(has_diag(f, "path is required", NULL));
	assert_true(has_diag(f, "edgebridge.conf:20:", "unknown key 'colour'"));
	assert_true(has_diag(f, "edgebridge.conf:21: [sensor.d]",
			     "'driver' is required"));
}

static void test_syntax_error(void **state)
{
	struct fx *f = *state;

	write_main(f, "this line has no equals sign\n" /* 13 */
		      "[empty]\n");		       /* 14 */
	assert_null(load(f));
	dump(f);
	assert_true(has_diag(f, "edgebridge.conf:13:", "syntax error"));
	assert_true(has_diag(f, "edgebridge.conf:14:", "unknown section"));
}

static void test_missing_file(void **state)
{
	struct fx *f = *state;

	free(f->main);
	assert_true(asprintf(&f->main, "%s/nope.conf", f->dir) > 0);
	assert_null(load(f));
	assert_true(has_diag(f, "nope.conf", "cannot open"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_bools_levels),
		cmocka_unit_test_setup_teardown(test_valid_and_defaults, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unknown_section_and_key,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_values, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_missing_required, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_identity_rules, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pin_file_mode, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_credentials_directory,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropin_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sensor_rules, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_syntax_error, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
