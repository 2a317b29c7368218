/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gpio_common.h"

static const char *const biases[] = { "as-is", "disable", "pull-up",
				      "pull-down", NULL };

/* A line is an offset (digits) or a name; names have no ',' or blanks. */
static bool line_ok(const char *s)
{
	return s[0] && !strpbrk(s, " \t,");
}

static bool parse_lines(struct eb_sensor_conf *c, struct eb_kv *kv,
			struct eb_diags *d, struct gpio_conf *g)
{
	char *save = NULL, *tok;

	if (strlen(kv->value) >= sizeof(g->line_buf)) {
		diags_add(d, &kv->loc, "sensor.%s.%s: too long", c->name,
			  kv->key);
		return false;
	}
	eb_strlcpy(g->line_buf, kv->value, sizeof(g->line_buf));
	for (tok = strtok_r(g->line_buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t len;

		tok += strspn(tok, " \t");
		len = strlen(tok);
		while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
			tok[--len] = '\0';
		if (!line_ok(tok)) {
			diags_add(d, &kv->loc,
				  "sensor.%s.%s: '%s' is not a list of line "
				  "offsets or names (e.g. 3,4)",
				  c->name, kv->key, kv->value);
			return false;
		}
		if (g->n_line == GPIO_MAX_LINES) {
			diags_add(d, &kv->loc,
				  "sensor.%s.%s: at most %d lines per sensor",
				  c->name, kv->key, GPIO_MAX_LINES);
			return false;
		}
		for (unsigned i = 0; i < g->n_line; i++)
			if (streq(g->line[i], tok)) {
				diags_add(d, &kv->loc,
					  "sensor.%s.%s: line %s twice",
					  c->name, kv->key, tok);
				return false;
			}
		g->line[g->n_line++] = tok;
	}
	if (!g->n_line) {
		diags_add(d, &kv->loc, "sensor.%s.%s: no line given", c->name,
			  kv->key);
		return false;
	}
	return true;
}

bool gpio_conf_parse(struct eb_sensor_conf *c, unsigned opts,
		     struct eb_diags *d, struct gpio_conf *g)
{
	struct eb_kv *chip = config_sensor_opt(c, "chip");
	struct eb_kv *line = config_sensor_opt(c, "line");
	struct eb_kv *lines =
		opts & GPIO_OPT_MULTI ? config_sensor_opt(c, "lines") : NULL;
	bool ok = true;
	int b;

	memset(g, 0, sizeof(*g));
	if (!chip || !chip->value[0]) {
		diags_add(d, chip ? &chip->loc : &c->loc,
			  "sensor.%s.chip is required for driver %s (a name "
			  "like gpiochip0, a /dev path, a number or a label)",
			  c->name, c->driver);
		ok = false;
	} else {
		g->chip = chip->value;
	}
	if (line && lines) {
		diags_add(d, &lines->loc,
			  "sensor.%s: line and lines both given; use one",
			  c->name);
		ok = false;
	} else if (!line && !lines) {
		diags_add(d, &c->loc,
			  "sensor.%s.line is required for driver %s (an "
			  "offset like 3, or a line name)",
			  c->name, c->driver);
		ok = false;
	} else if (line && !line_ok(line->value)) {
		diags_add(d, &line->loc,
			  "sensor.%s.line: '%s' is not a line offset or name%s",
			  c->name, line->value,
			  opts & GPIO_OPT_MULTI ? " (several: lines = 3,4)"
						: "");
		ok = false;
	} else if (line) {
		g->line[g->n_line++] = line->value;
	} else {
		ok &= parse_lines(c, lines, d, g);
	}
	if (opts & GPIO_OPT_BIAS) {
		b = driver_opt_choice(c, "bias", biases, GPIO_BIAS_AS_IS, d);
		ok &= b >= 0;
		g->bias = b < 0 ? GPIO_BIAS_AS_IS : (enum gpio_bias)b;
	}
	if (opts & GPIO_OPT_ACTIVE_LOW) {
		struct eb_kv *kv = config_sensor_opt(c, "active_low");

		if (kv && config_parse_bool(kv->value, &g->active_low) < 0) {
			diags_add(d, &kv->loc,
				  "sensor.%s.active_low: '%s' is not yes or no",
				  c->name, kv->value);
			ok = false;
		}
	}
	if (opts & GPIO_OPT_DEBOUNCE)
		ok &= driver_opt_duration(c, "debounce", d, &g->debounce_ms);
	return ok;
}

void debounce_init(struct debounce *d, uint64_t window_ns, int level,
		   uint64_t now_ns)
{
	d->window_ns = window_ns;
	d->stable = d->pending = level;
	d->since_ns = now_ns;
	d->last_ns = 0;
}

int debounce_poll(struct debounce *d, uint64_t now_ns,
		  struct debounce_change *out)
{
	if (d->pending == d->stable || now_ns < d->since_ns + d->window_ns)
		return 0;
	d->stable = d->pending;
	out->level = d->stable;
	/* the kernel's order is the truth; never report time going back */
	out->ts_ns = d->since_ns > d->last_ns ? d->since_ns : d->last_ns + 1;
	d->last_ns = out->ts_ns;
	return 1;
}

int debounce_edge(struct debounce *d, int level, uint64_t ts_ns,
		  struct debounce_change *out)
{
	/* what was pending held from since_ns until this edge */
	int r = debounce_poll(d, ts_ns, out);

	level = !!level;
	if (level != d->pending) {
		d->pending = level;
		d->since_ns = ts_ns;
	}
	if (!r && d->window_ns == 0)
		r = debounce_poll(d, ts_ns, out);
	return r;
}

uint64_t debounce_due_ns(const struct debounce *d)
{
	return d->pending == d->stable ? 0 : d->since_ns + d->window_ns;
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t gpio_mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

uint64_t gpio_ts_to_mono_ns(uint64_t ts_ns)
{
	uint64_t mono = clock_ns(CLOCK_MONOTONIC);
	uint64_t real = clock_ns(CLOCK_REALTIME);

	/* Later than a day from now on the monotonic clock: a realtime
	 * stamp (Linux before 5.7). */
	if (ts_ns > mono + 86400 * NSEC_PER_SEC && real > mono)
		return ts_ns - (real - mono);
	return ts_ns;
}

int64_t gpio_mono_to_realtime_ms(uint64_t mono_ns)
{
	uint64_t mono = clock_ns(CLOCK_MONOTONIC);
	uint64_t real = clock_ns(CLOCK_REALTIME);
	uint64_t t = real - (mono > mono_ns ? mono - mono_ns : 0);

	return (int64_t)(t / NSEC_PER_MSEC);
}
