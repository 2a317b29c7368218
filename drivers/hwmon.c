/* SPDX-License-Identifier: MIT */
/*
 * The "hwmon" driver: one number from a sysfs file, such as
 * /sys/class/hwmon/hwmon0/temp1_input or /sys/class/thermal/thermal_zone0/temp
 * (millidegrees Celsius, hence the default scale of 0.001).
 * value = raw * scale + offset.  The path is configurable so that tests
 * point it at a fake tree.  The file is re-opened on every read: sysfs
 * attributes are only refreshed by a new read from offset 0, and a device
 * that goes away and comes back must be picked up again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

struct hwmon {
	char *path;
	double scale, offset;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d,
		   struct hwmon *h)
{
	bool ok;

	h->scale = 0.001;
	h->offset = 0;
	ok = driver_opt_path(c, "path", "/sys/class/hwmon/hwmon0/temp1_input",
			     d, (const char **)&h->path);
	ok &= driver_opt_double(c, "scale", d, &h->scale);
	ok &= driver_opt_double(c, "offset", d, &h->offset);
	return ok;
}

static void hwmon_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct hwmon h;

	params(c, d, &h);
}

static int hwmon_open(struct eb_sensor_conf *c, void **state,
		      struct eb_err *err)
{
	struct eb_diags d = { 0 };
	struct hwmon h, *p;

	if (!params(c, &d, &h))
		return driver_bad_options(&d, err);
	p = malloc(sizeof(*p));
	if (!p)
		return eb_errf(err, -ENOMEM, "out of memory");
	*p = h;
	p->path = strdup(h.path);
	if (!p->path) {
		free(p);
		return eb_errf(err, -ENOMEM, "out of memory");
	}
	*state = p;
	return 0;
}

static int hwmon_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct hwmon *h = state;
	double raw;
	int r = driver_read_number(h->path, &raw, err);

	if (r < 0)
		return r;
	sink->emit(sink, raw * h->scale + h->offset, eb_realtime_ms());
	return 1;
}

static void hwmon_close(void *state)
{
	struct hwmon *h = state;

	if (h)
		free(h->path);
	free(h);
}

const struct driver_ops driver_hwmon = {
	.name = "hwmon",
	.check = hwmon_check,
	.open = hwmon_open,
	.fd = driver_no_fd,
	.read = hwmon_read,
	.close = hwmon_close,
};
