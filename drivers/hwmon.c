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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

struct hwmon {
	char *path;
	double scale, offset;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d,
		   struct hwmon *h)
{
	struct eb_kv *kv = config_sensor_opt(c, "path");
	bool ok = true;

	h->scale = 0.001;
	h->offset = 0;
	h->path = NULL;
	if (!kv) {
		diags_add(d, &c->loc,
			  "sensor.%s.path is required for driver hwmon "
			  "(e.g. /sys/class/hwmon/hwmon0/temp1_input)",
			  c->name);
		ok = false;
	} else if (kv->value[0] != '/') {
		diags_add(d, &kv->loc, "sensor.%s.path: must be absolute",
			  c->name);
		ok = false;
	} else {
		h->path = kv->value;
	}
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

	if (!params(c, &d, &h)) {
		eb_errf(err, -EINVAL, "%s", d.n ? d.msg[0] : "bad options");
		diags_free(&d);
		return -EINVAL;
	}
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
	_cleanup_close_ int fd = open(h->path, O_RDONLY | O_CLOEXEC);
	char buf[64];
	double raw;
	ssize_t n;

	if (fd < 0)
		return eb_errf(err, -errno, "cannot open %s: %s", h->path,
			       strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return eb_errf(err, -errno, "cannot read %s: %s", h->path,
			       strerror(errno));
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (config_parse_double(buf, &raw) < 0)
		return eb_errf(err, -EBADMSG, "%s holds '%s', not a number",
			       h->path, buf);
	sink->emit(sink, raw * h->scale + h->offset, eb_realtime_ms());
	return 1;
}

static int hwmon_fd(void *state)
{
	(void)state;
	return -1;
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
	.fd = hwmon_fd,
	.read = hwmon_read,
	.close = hwmon_close,
};
