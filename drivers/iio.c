/* SPDX-License-Identifier: MIT */
/*
 * The "iio" driver: one channel of an Industrial I/O device (an ADC, a
 * light or pressure sensor) through sysfs.  path is the device directory
 * (/sys/bus/iio/devices/iio:device0), channel the attribute stem
 * (in_voltage0).  As the kernel's ABI (sysfs-bus-iio) defines it:
 *
 *   value = (<channel>_raw + offset) * scale
 *
 * where scale is <channel>_scale, else the type's shared <type>_scale
 * (in_voltage_scale for in_voltage0), else 1; offset likewise, else 0.
 * Both are read with every sample: a driver may change them when the
 * range changes.  Units are the kernel's (millivolts for a voltage).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

struct iio {
	char *raw;
	char *scale[2];	 /* own, shared by the type */
	char *offset[2]; /* own, shared by the type */
};

static void iio_close(void *state)
{
	struct iio *io = state;

	if (io) {
		free(io->raw);
		for (int i = 0; i < 2; i++)
			free(io->scale[i]), free(io->offset[i]);
	}
	free(io);
}

static bool params(struct eb_sensor_conf *c, struct eb_diags *d,
		   const char **path, const char **channel)
{
	struct eb_kv *kv;
	bool ok = driver_opt_path(c, "path", "/sys/bus/iio/devices/iio:device0",
				  d, path);

	*channel = NULL;
	kv = config_sensor_opt(c, "channel");
	if (!kv) {
		diags_add(d, &c->loc,
			  "sensor.%s.channel is required for driver iio (e.g. "
			  "in_voltage0)",
			  c->name);
		return false;
	}
	if (!kv->value[0] || strchr(kv->value, '/')) {
		diags_add(d, &kv->loc,
			  "sensor.%s.channel: '%s' is not an attribute stem "
			  "like in_voltage0",
			  c->name, kv->value);
		return false;
	}
	*channel = kv->value;
	return ok;
}

static void iio_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	const char *path, *channel;

	params(c, d, &path, &channel);
}

static int iio_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	const char *path, *ch;
	struct iio *io;
	int type_len;

	if (!params(c, &d, &path, &ch))
		return driver_bad_options(&d, err);
	/* in_voltage0 -> in_voltage; in_temp -> in_temp */
	type_len = (int)strlen(ch);
	while (type_len > 0 && ch[type_len - 1] >= '0' &&
	       ch[type_len - 1] <= '9')
		type_len--;
	io = calloc(1, sizeof(*io));
	if (!io || asprintf(&io->raw, "%s/%s_raw", path, ch) < 0 ||
	    asprintf(&io->scale[0], "%s/%s_scale", path, ch) < 0 ||
	    asprintf(&io->scale[1], "%s/%.*s_scale", path, type_len, ch) < 0 ||
	    asprintf(&io->offset[0], "%s/%s_offset", path, ch) < 0 ||
	    asprintf(&io->offset[1], "%s/%.*s_offset", path, type_len, ch) <
		    0) {
		iio_close(io);
		return eb_errf(err, -ENOMEM, "out of memory");
	}
	*state = io;
	return 0;
}

/* The channel's own attribute, else the type's, else def; a file that is
 * there but unreadable or garbled is an error, not the default. */
static int optional(char *const paths[2], double def, double *out,
		    struct eb_err *err)
{
	*out = def;
	for (int i = 0; i < 2; i++)
		if (access(paths[i], F_OK) == 0)
			return driver_read_number(paths[i], out, err);
	return 0;
}

static int iio_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct iio *io = state;
	double raw, scale, offset;
	int r;

	if ((r = driver_read_number(io->raw, &raw, err)) < 0 ||
	    (r = optional(io->scale, 1, &scale, err)) < 0 ||
	    (r = optional(io->offset, 0, &offset, err)) < 0)
		return r;
	sink->emit(sink, (raw + offset) * scale, eb_realtime_ms());
	return 1;
}

const struct driver_ops driver_iio = {
	.name = "iio",
	.check = iio_check,
	.open = iio_open,
	.fd = driver_no_fd,
	.read = iio_read,
	.close = iio_close,
};
