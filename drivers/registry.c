/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

static const struct driver_ops *const drivers[] = {
	&driver_sim,	      &driver_hwmon,	  &driver_w1_therm,
	&driver_iio,	      &driver_gpio_input, &driver_gpio_output,
	&driver_gpio_counter, &driver_dht22,
};

const struct driver_ops *driver_find(const char *name)
{
	for (size_t i = 0; i < EB_ARRAY_SIZE(drivers); i++)
		if (streq(drivers[i]->name, name))
			return drivers[i];
	return NULL;
}

void driver_check_config(struct eb_sensor_conf *conf, struct eb_diags *d)
{
	const struct driver_ops *ops = driver_find(conf->driver);
	struct eb_kv *kv = config_sensor_opt(conf, "driver");
	char names[256] = "";

	if (!ops) {
		for (size_t i = 0; i < EB_ARRAY_SIZE(drivers); i++) {
			strncat(names, i ? ", " : "",
				sizeof(names) - strlen(names) - 1);
			strncat(names, drivers[i]->name,
				sizeof(names) - strlen(names) - 1);
		}
		diags_add(d, kv ? &kv->loc : &conf->loc,
			  "sensor.%s.driver: unknown driver '%s' (known: %s)",
			  conf->name, conf->driver, names);
		/* Its other keys cannot be judged: don't report them too. */
		for (size_t i = 0; i < conf->n_opt; i++)
			conf->opt[i].used = true;
		return;
	}
	if (conf->interval_ms == 0 && !ops->allow_zero_interval)
		diags_add(d,
			  conf->interval_loc.file ? &conf->interval_loc
						  : &conf->loc,
			  "sensor.%s.interval: must be more than 0 for driver "
			  "%s",
			  conf->name, ops->name);
	if (ops->check)
		ops->check(conf, d);
}

bool driver_opt_double(struct eb_sensor_conf *c, const char *key,
		       struct eb_diags *d, double *out)
{
	struct eb_kv *kv = config_sensor_opt(c, key);

	if (!kv)
		return true;
	if (config_parse_double(kv->value, out) < 0) {
		diags_add(d, &kv->loc, "sensor.%s.%s: '%s' is not a number",
			  c->name, key, kv->value);
		return false;
	}
	return true;
}

bool driver_opt_uint(struct eb_sensor_conf *c, const char *key, uint64_t max,
		     struct eb_diags *d, uint64_t *out)
{
	struct eb_kv *kv = config_sensor_opt(c, key);

	if (!kv)
		return true;
	if (config_parse_uint(kv->value, max, out) < 0) {
		diags_add(d, &kv->loc,
			  "sensor.%s.%s: '%s' is not a whole number up to "
			  "%llu",
			  c->name, key, kv->value, (unsigned long long)max);
		return false;
	}
	return true;
}

bool driver_opt_duration(struct eb_sensor_conf *c, const char *key,
			 struct eb_diags *d, uint64_t *out_ms)
{
	struct eb_kv *kv = config_sensor_opt(c, key);

	if (!kv)
		return true;
	if (config_parse_duration_ms(kv->value, out_ms) < 0) {
		diags_add(d, &kv->loc,
			  "sensor.%s.%s: '%s' is not a duration "
			  "(use e.g. 500ms, 10s, 5m, 1h)",
			  c->name, key, kv->value);
		return false;
	}
	return true;
}

int driver_opt_choice(struct eb_sensor_conf *c, const char *key,
		      const char *const *choices, int def, struct eb_diags *d)
{
	struct eb_kv *kv = config_sensor_opt(c, key);
	char names[256] = "";

	if (!kv)
		return def;
	for (int i = 0; choices[i]; i++) {
		if (streq(choices[i], kv->value))
			return i;
		strncat(names, i ? ", " : "",
			sizeof(names) - strlen(names) - 1);
		strncat(names, choices[i], sizeof(names) - strlen(names) - 1);
	}
	diags_add(d, &kv->loc, "sensor.%s.%s: '%s' is not one of: %s", c->name,
		  key, kv->value, names);
	return -1;
}

bool driver_opt_path(struct eb_sensor_conf *c, const char *key,
		     const char *example, struct eb_diags *d, const char **out)
{
	struct eb_kv *kv = config_sensor_opt(c, key);

	*out = NULL;
	if (!kv) {
		diags_add(d, &c->loc,
			  "sensor.%s.%s is required for driver %s (e.g. %s)",
			  c->name, key, c->driver, example);
		return false;
	}
	if (kv->value[0] != '/') {
		diags_add(d, &kv->loc, "sensor.%s.%s: must be absolute",
			  c->name, key);
		return false;
	}
	*out = kv->value;
	return true;
}

int driver_bad_options(struct eb_diags *d, struct eb_err *err)
{
	eb_errf(err, -EINVAL, "%s", d->n ? d->msg[0] : "bad options");
	diags_free(d);
	return -EINVAL;
}

int driver_no_fd(void *state)
{
	(void)state;
	return -1;
}

/* sysfs attributes are refreshed only by a new read from offset 0, and a
 * device that goes away and comes back must be picked up again: the file
 * is opened anew every time. */
int driver_read_text(const char *path, char *buf, size_t len,
		     struct eb_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return eb_errf(err, -errno, "cannot open %s: %s", path,
			       strerror(errno));
	n = read(fd, buf, len - 1);
	if (n < 0)
		return eb_errf(err, -errno, "cannot read %s: %s", path,
			       strerror(errno));
	buf[n] = '\0';
	return 0;
}

int driver_read_line(const char *path, char *buf, size_t len,
		     struct eb_err *err)
{
	int r = driver_read_text(path, buf, len, err);

	if (r == 0)
		buf[strcspn(buf, "\r\n")] = '\0';
	return r;
}

int driver_read_number(const char *path, double *out, struct eb_err *err)
{
	char buf[64];
	int r = driver_read_line(path, buf, sizeof(buf), err);

	if (r < 0)
		return r;
	if (config_parse_double(buf, out) < 0)
		return eb_errf(err, -EBADMSG, "%s holds '%s', not a number",
			       path, buf);
	return 0;
}
