/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "driver.h"

static const struct driver_ops *const drivers[] = {
	&driver_sim,
	&driver_hwmon,
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
