/* SPDX-License-Identifier: MIT */
/*
 * The "w1-therm" driver: a DS18B20 (or another 1-Wire thermometer of the
 * kernel's w1_therm family) in degrees Celsius.  path is the device's
 * directory, /sys/bus/w1/devices/28-<serial>.  Kernels from 5.10 on have a
 * "temperature" attribute (millidegrees); older ones only "w1_slave":
 *
 *   72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
 *   72 01 4b 46 7f ff 0e 10 57 t=23125
 *
 * where the first line says whether the scratchpad's CRC matched: a "NO"
 * is a garbled transfer (a long cable, a weak pull-up) and is an error,
 * never a value.  Each read starts a conversion, which the kernel does
 * synchronously (up to 750 ms at 12 bits) before the read returns: that
 * is the price of sysfs here, and why the interval should stay at seconds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

struct w1 {
	char *temperature; /* <dir>/temperature */
	char *w1_slave;	   /* <dir>/w1_slave */
	char *dir;
};

static void w1_close(void *state)
{
	struct w1 *w = state;

	if (w) {
		free(w->temperature);
		free(w->w1_slave);
		free(w->dir);
	}
	free(w);
}

static void w1_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	const char *path;

	driver_opt_path(c, "path", "/sys/bus/w1/devices/28-0316a2b4c1ff", d,
			&path);
}

static int w1_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	const char *path;
	struct w1 *w;

	if (!driver_opt_path(c, "path", "", &d, &path))
		return driver_bad_options(&d, err);
	w = calloc(1, sizeof(*w));
	if (!w || asprintf(&w->temperature, "%s/temperature", path) < 0 ||
	    asprintf(&w->w1_slave, "%s/w1_slave", path) < 0 ||
	    !(w->dir = strdup(path))) {
		w1_close(w);
		return eb_errf(err, -ENOMEM, "out of memory");
	}
	*state = w;
	return 0;
}

/* The w1_slave format: CRC verdict on line 1, "t=<millidegrees>" on 2. */
static int parse_w1_slave(const char *path, const char *text, double *mc,
			  struct eb_err *err)
{
	const char *nl = strchr(text, '\n');
	const char *t;

	if (!nl || nl - text < 3)
		return eb_errf(err, -EBADMSG, "%s: no CRC line", path);
	if (strncmp(nl - 3, "YES", 3))
		return eb_errf(err, -EBADMSG,
			       "%s: CRC check failed (a garbled 1-Wire "
			       "transfer)",
			       path);
	t = strstr(nl, "t=");
	if (!t)
		return eb_errf(err, -EBADMSG, "%s: no t= value", path);
	if (sscanf(t + 2, "%lf", mc) != 1)
		return eb_errf(err, -EBADMSG, "%s: bad t= value", path);
	return 0;
}

static int w1_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct w1 *w = state;
	char text[256];
	double mc;
	int r;

	if (access(w->dir, F_OK) < 0)
		return eb_errf(err, -errno,
			       "no 1-Wire device at %s (unplugged, or the "
			       "w1-gpio overlay not loaded?)",
			       w->dir);
	if (access(w->temperature, R_OK) == 0) {
		r = driver_read_number(w->temperature, &mc, err);
	} else {
		r = driver_read_text(w->w1_slave, text, sizeof(text), err);
		if (r == 0)
			r = parse_w1_slave(w->w1_slave, text, &mc, err);
	}
	if (r < 0)
		return r;
	sink->emit(sink, mc / 1000, eb_realtime_ms());
	return 1;
}

const struct driver_ops driver_w1_therm = {
	.name = "w1-therm",
	.check = w1_check,
	.open = w1_open,
	.fd = driver_no_fd,
	.read = w1_read,
	.close = w1_close,
};
