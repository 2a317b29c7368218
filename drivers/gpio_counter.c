/* SPDX-License-Identifier: MIT */
/*
 * The "gpio-counter" driver: the S0 pulse output of an energy, water or
 * gas meter on one GPIO line.  Edges (rising, falling or both) come with
 * the kernel's timestamps from the event fd, pass the same debounce as
 * gpio-input, and are counted; every interval the total (pulses / scale,
 * the sensor's series and unit) and the rate over the interval
 * (<series>_rate, in units per second) are reported.
 *
 * The count survives restarts in <state_dir>/counter-<name>.state.  It is
 * saved before each report and when the sensor closes (a stop, a reload):
 * across a clean restart no pulse is lost or counted twice, and the total
 * the cloud saw never goes back.  A crash or power cut loses the pulses
 * of the interval in progress (never more), and pulses while the daemon
 * does not run are not seen.  Saving on every pulse would cost an fsync
 * per pulse on an SD card: the interval is the trade-off to tune.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpio_counter.h"
#include "gpio_line.h"

/* ---- the persistent count ----------------------------------------------- */

int counter_open(struct counter *c, const char *path, uint64_t now_ms,
		 struct eb_err *err)
{
	char buf[64], *end;
	int r;

	memset(c, 0, sizeof(*c));
	c->report_ms = now_ms;
	c->path = strdup(path);
	if (!c->path)
		return eb_errf(err, -ENOMEM, "out of memory");
	r = driver_read_line(path, buf, sizeof(buf), err);
	if (r == -ENOENT)
		return 0;
	if (r == 0 && strncmp(buf, "pulses=", 7) == 0) {
		errno = 0;
		c->pulses = strtoull(buf + 7, &end, 10);
		if (!errno && end != buf + 7 && !*end && buf[7] != '-') {
			c->at_report = c->pulses;
			return 0;
		}
	}
	if (r == 0)
		r = eb_errf(err, -EBADMSG,
			    "%s holds '%s', not pulses=<count>: fix or remove "
			    "it (the meter's total restarts from 0 then)",
			    path, buf);
	free(c->path);
	c->path = NULL;
	return r;
}

void counter_add(struct counter *c, uint64_t pulses)
{
	c->pulses += pulses;
}

static int save(struct counter *c, struct eb_err *err)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "pulses=%" PRIu64 "\n", c->pulses);
	int r = eb_write_file(c->path, buf, (size_t)n, 0644);

	if (r < 0)
		return eb_errf(err, r, "cannot save the count to %s: %s",
			       c->path, strerror(-r));
	return 0;
}

int counter_report(struct counter *c, uint64_t now_ms, double scale,
		   double *total, double *rate, struct eb_err *err)
{
	uint64_t dt = now_ms > c->report_ms ? now_ms - c->report_ms : 0;
	int r = save(c, err);

	if (r < 0)
		return r;
	*total = (double)c->pulses / scale;
	*rate = dt ? (double)(c->pulses - c->at_report) / scale * 1000 /
				(double)dt
		   : 0;
	c->at_report = c->pulses;
	c->report_ms = now_ms;
	return 0;
}

int counter_close(struct counter *c, struct eb_err *err)
{
	int r = c->path ? save(c, err) : 0;

	free(c->path);
	c->path = NULL;
	return r;
}

/* ---- the driver --------------------------------------------------------- */

static const char *const edges[] = { "rising", "falling", "both", NULL };

enum { EDGE_RISING, EDGE_FALLING, EDGE_BOTH };

struct gcount {
	struct gpio_conf gc;
	int edge;
	double scale;
	uint64_t interval_ms;
	char *rate_unit;
	struct gpio_lines *g;
	struct debounce db;
	struct counter cnt;
	uint64_t next_ms;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d,
		   struct gcount *x)
{
	bool ok = gpio_conf_parse(
		c, GPIO_OPT_BIAS | GPIO_OPT_ACTIVE_LOW | GPIO_OPT_DEBOUNCE, d,
		&x->gc);
	struct eb_kv *kv = config_sensor_opt(c, "scale");

	x->edge = driver_opt_choice(c, "edge", edges, EDGE_RISING, d);
	x->scale = 1;
	x->interval_ms = c->interval_ms;
	if (kv && (config_parse_double(kv->value, &x->scale) < 0 ||
		   !(x->scale > 0))) {
		diags_add(d, &kv->loc,
			  "sensor.%s.scale: '%s' is not a number of pulses "
			  "per unit above 0 (e.g. 1000)",
			  c->name, kv->value);
		ok = false;
	}
	return ok && x->edge >= 0;
}

static void gcount_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct gcount x;

	params(c, d, &x);
}

static void gcount_close(void *state)
{
	struct gcount *x = state;

	if (!x)
		return;
	counter_close(&x->cnt, NULL);
	gpio_lines_close(x->g);
	free(x->rate_unit);
	free(x);
}

static int gcount_open(struct eb_sensor_conf *c, void **state,
		       struct eb_err *err)
{
	struct eb_diags d = { 0 };
	struct gcount *x = calloc(1, sizeof(*x));
	_cleanup_free_ char *path = NULL;
	int level, r;

	if (!x)
		return eb_errf(err, -ENOMEM, "out of memory");
	if (!params(c, &d, x)) {
		free(x);
		return driver_bad_options(&d, err);
	}
	if (asprintf(&path, "%s/counter-%s.state",
		     c->state_dir ? c->state_dir : ".", c->name) < 0 ||
	    asprintf(&x->rate_unit, "%s/s", c->unit ? c->unit : "") < 0) {
		path = NULL;
		free(x);
		return eb_errf(err, -ENOMEM, "out of memory");
	}
	if ((r = counter_open(&x->cnt, path, eb_now_ms(), err)) < 0 ||
	    (r = gpio_lines_open(&x->gc, c->name, &x->g, err)) < 0 ||
	    (r = gpio_lines_request_events(x->g, err)) < 0 ||
	    (r = gpio_lines_get(x->g, &level, err)) < 0) {
		gcount_close(x);
		return r;
	}
	debounce_init(&x->db, x->gc.debounce_ms * NSEC_PER_MSEC, level,
		      gpio_mono_ns());
	x->next_ms = eb_now_ms() + x->interval_ms;
	*state = x;
	return 0;
}

static void count(struct gcount *x, const struct debounce_change *ch)
{
	if (x->edge == EDGE_BOTH || (x->edge == EDGE_RISING) == ch->level)
		counter_add(&x->cnt, 1);
}

static int gcount_read(void *state, struct sample_sink *sink,
		       struct eb_err *err)
{
	struct gcount *x = state;
	struct gpio_edge e[64];
	struct debounce_change ch;
	uint64_t now;
	double total, rate;
	int n, r;

	do {
		n = gpio_lines_read_edges(x->g, e, EB_ARRAY_SIZE(e), err);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			if (debounce_edge(&x->db, e[i].level, e[i].ts_ns, &ch))
				count(x, &ch);
	} while (n == (int)EB_ARRAY_SIZE(e));
	if (debounce_poll(&x->db, gpio_mono_ns(), &ch))
		count(x, &ch);
	now = eb_now_ms();
	if (now < x->next_ms)
		return 0;
	x->next_ms += x->interval_ms;
	if (x->next_ms <= now)
		x->next_ms = now + x->interval_ms;
	r = counter_report(&x->cnt, now, x->scale, &total, &rate, err);
	if (r < 0)
		return r;
	sink->emit(sink, total, eb_realtime_ms());
	sink->emit_series(sink, "rate", x->rate_unit, rate, eb_realtime_ms());
	return 2;
}

static uint64_t gcount_wake_at(void *state)
{
	struct gcount *x = state;
	uint64_t due = debounce_due_ns(&x->db);
	uint64_t due_ms = due ? (due + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC : 0;

	return due_ms && due_ms < x->next_ms ? due_ms : x->next_ms;
}

static int gcount_fd(void *state)
{
	return gpio_lines_fd(((struct gcount *)state)->g);
}

const struct driver_ops driver_gpio_counter = {
	.name = "gpio-counter",
	.check = gcount_check,
	.open = gcount_open,
	.fd = gcount_fd,
	.read = gcount_read,
	.wake_at = gcount_wake_at,
	.close = gcount_close,
};
