/* SPDX-License-Identifier: MIT */
/*
 * The "gpio-input" driver: contacts, alarm outputs, cheap digital sensors
 * on one or more GPIO lines.  Edges come from the kernel with their
 * timestamps through the event fd in the daemon's loop (no polling), pass
 * a software debounce (uAPI v1 has none in the kernel) and are reported as
 * events (Cumulocity 400, event_type) or as measurements of 0/1, with the
 * time the kernel saw the edge that began the new level.  The debounced
 * level of every line is reported again whenever the cloud connects.
 * Several lines ("lines = 3,4") are one series each: <series>_<offset>.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpio_line.h"

static const char *const reports[] = { "event", "measurement", NULL };

struct gin {
	struct gpio_conf gc;
	bool measurement;
	bool multi;
	const char *event_type;
	struct gpio_lines *g;
	struct debounce db[GPIO_MAX_LINES];
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d, struct gin *in)
{
	struct eb_kv *kv;
	bool ok = gpio_conf_parse(c,
				  GPIO_OPT_BIAS | GPIO_OPT_ACTIVE_LOW |
					  GPIO_OPT_DEBOUNCE | GPIO_OPT_MULTI,
				  d, &in->gc);
	int r = driver_opt_choice(c, "report", reports, 0, d);

	ok &= r >= 0;
	in->measurement = r == 1;
	in->multi = config_sensor_opt(c, "lines") != NULL;
	in->event_type = "edgebridge_GpioChange";
	kv = config_sensor_opt(c, "event_type");
	if (kv && (!kv->value[0] || strlen(kv->value) > 63 ||
		   strpbrk(kv->value, " ,\"\t"))) {
		diags_add(d, &kv->loc,
			  "sensor.%s.event_type: '%s' is not a type name "
			  "(1 to 63 characters, no blanks, commas or quotes)",
			  c->name, kv->value);
		ok = false;
	} else if (kv) {
		in->event_type = kv->value;
	}
	return ok;
}

static void gin_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct gin in;

	params(c, d, &in);
}

static void gin_close(void *state)
{
	struct gin *in = state;

	if (in)
		gpio_lines_close(in->g);
	free(in);
}

static int gin_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	int lv[GPIO_MAX_LINES];
	uint64_t now = gpio_mono_ns();
	struct gin *in = calloc(1, sizeof(*in));
	int r;

	if (!in)
		return eb_errf(err, -ENOMEM, "out of memory");
	if (!params(c, &d, in)) {
		free(in);
		return driver_bad_options(&d, err);
	}
	if ((r = gpio_lines_open(&in->gc, c->name, &in->g, err)) < 0 ||
	    (r = gpio_lines_request_events(in->g, err)) < 0 ||
	    (r = gpio_lines_get(in->g, lv, err)) < 0) {
		gin_close(in);
		return r;
	}
	for (unsigned i = 0; i < in->gc.n_line; i++)
		debounce_init(&in->db[i], in->gc.debounce_ms * NSEC_PER_MSEC,
			      lv[i], now);
	*state = in;
	return 0;
}

static void report(struct gin *in, struct sample_sink *sink, unsigned idx,
		   int level, uint64_t ts_ns, const char *why)
{
	unsigned off = gpio_lines_offset(in->g, idx);
	int64_t t = gpio_mono_to_realtime_ms(ts_ns);
	char text[96];

	if (in->measurement) {
		snprintf(text, sizeof(text), "%u", off);
		if (in->multi)
			sink->emit_series(sink, text, NULL, level, t);
		else
			sink->emit(sink, level, t);
		return;
	}
	snprintf(text, sizeof(text), "line %u is %d%s", off, level, why);
	sink->event(sink, in->event_type, text, t);
}

static int gin_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct gin *in = state;
	struct gpio_edge e[64];
	struct debounce_change ch;
	int n, done = 0;

	do {
		n = gpio_lines_read_edges(in->g, e, EB_ARRAY_SIZE(e), err);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			if (debounce_edge(&in->db[e[i].idx], e[i].level,
					  e[i].ts_ns, &ch)) {
				report(in, sink, e[i].idx, ch.level, ch.ts_ns,
				       "");
				done++;
			}
	} while (n == (int)EB_ARRAY_SIZE(e));
	/* what has held for the window by now */
	for (unsigned i = 0; i < in->gc.n_line; i++)
		if (debounce_poll(&in->db[i], gpio_mono_ns(), &ch)) {
			report(in, sink, i, ch.level, ch.ts_ns, "");
			done++;
		}
	return done;
}

static int gin_report_state(void *state, struct sample_sink *sink,
			    struct eb_err *err)
{
	struct gin *in = state;
	uint64_t now = gpio_mono_ns();

	(void)err;
	for (unsigned i = 0; i < in->gc.n_line; i++)
		report(in, sink, i, in->db[i].stable, now, " (current state)");
	return (int)in->gc.n_line;
}

static uint64_t gin_wake_at(void *state)
{
	struct gin *in = state;
	uint64_t due = 0;

	for (unsigned i = 0; i < in->gc.n_line; i++) {
		uint64_t t = debounce_due_ns(&in->db[i]);

		if (t && (!due || t < due))
			due = t;
	}
	/* eb_now_ms() is CLOCK_MONOTONIC too; round up */
	return due ? (due + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC : 0;
}

static int gin_fd(void *state)
{
	return gpio_lines_fd(((struct gin *)state)->g);
}

const struct driver_ops driver_gpio_input = {
	.name = "gpio-input",
	.check = gin_check,
	.open = gin_open,
	.fd = gin_fd,
	.read = gin_read,
	.wake_at = gin_wake_at,
	.report_state = gin_report_state,
	.close = gin_close,
};
