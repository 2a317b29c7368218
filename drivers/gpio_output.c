/* SPDX-License-Identifier: MIT */
/*
 * The "gpio-output" driver: a relay on one GPIO line.  It is driven to its
 * safe state (default = 0 or 1) when it opens and again when it closes: at
 * shutdown, and when a reload or a lost chip closes it.  default = keep
 * takes the level the line has when we open it (read as an input first)
 * and leaves the line as it is when we close it.  write() (the cloud's
 * relay operation) drives it; every read() reports the level read back
 * from the line, so the state reported is the one the kernel holds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpio_line.h"

struct gout {
	struct gpio_conf gc;
	int safe; /* 0, 1, or -1: keep */
	struct gpio_lines *g;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d, struct gout *o)
{
	static const char *const defaults[] = { "0", "1", "keep", NULL };
	bool ok = gpio_conf_parse(c, GPIO_OPT_ACTIVE_LOW, d, &o->gc);
	int r = driver_opt_choice(c, "default", defaults, 0, d);

	o->safe = r == 2 ? -1 : r;
	return ok && r >= 0;
}

static void gout_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct gout o;

	params(c, d, &o);
}

static void gout_close(void *state)
{
	struct gout *o = state;

	if (!o)
		return;
	/* the safe state before the line is given back (the kernel keeps
	 * an output's level after the release) */
	if (o->g && o->safe >= 0)
		gpio_lines_set(o->g, &o->safe, NULL);
	gpio_lines_close(o->g);
	free(o);
}

static int gout_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	struct gout *o = calloc(1, sizeof(*o));
	int level, r;

	if (!o)
		return eb_errf(err, -ENOMEM, "out of memory");
	if (!params(c, &d, o)) {
		free(o);
		return driver_bad_options(&d, err);
	}
	r = gpio_lines_open(&o->gc, c->name, &o->g, err);
	if (r < 0)
		goto fail;
	level = o->safe;
	if (level < 0) {
		/* keep: as found (as-is: reading it must not make the relay
		 * line an input, even for a moment) */
		if ((r = gpio_lines_request_as_is(o->g, err)) < 0 ||
		    (r = gpio_lines_get(o->g, &level, err)) < 0)
			goto fail;
	}
	r = gpio_lines_request_output(o->g, &level, err);
	if (r < 0)
		goto fail;
	*state = o;
	return 0;
fail:
	o->safe = -1; /* nothing of ours to put back */
	gout_close(o);
	return r;
}

static int gout_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct gout *o = state;
	int v, r = gpio_lines_get(o->g, &v, err);

	if (r < 0)
		return r;
	sink->emit(sink, v, eb_realtime_ms());
	return 1;
}

static int gout_write(void *state, double value, struct eb_err *err)
{
	struct gout *o = state;
	int v = value != 0;

	return gpio_lines_set(o->g, &v, err);
}

const struct driver_ops driver_gpio_output = {
	.name = "gpio-output",
	.check = gout_check,
	.open = gout_open,
	.fd = driver_no_fd,
	.read = gout_read,
	.write = gout_write,
	.close = gout_close,
};
