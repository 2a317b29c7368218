/* SPDX-License-Identifier: MIT */
/*
 * The "sim" driver: deterministic signals for the demo, the tests and the
 * benchmarks.  The value depends only on the sample index n (and the seed),
 * never on wall time, so two runs with the same configuration produce the
 * same sequence:
 *   sine:        mid + amp * sin(2 pi n interval / period)
 *   ramp:        min .. max, then back to min, once per period
 *   random-walk: steps of at most (max - min) / 50 from the middle, clamped
 *   counter:     offset + n, exactly (tests account for every sample)
 *   output:      a simulated output (a relay): reads back what was last
 *                written, min until then
 * count = N stops after N samples (benchmarks account for every one).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "driver.h"

enum wave { WAVE_SINE, WAVE_RAMP, WAVE_WALK, WAVE_COUNTER, WAVE_OUTPUT };

static const char *const waves[] = { "sine",	"ramp",	  "random-walk",
				     "counter", "output", NULL };

struct sim {
	enum wave wave;
	double min, max;
	uint64_t period_ms, step_ms;
	uint64_t seed, count, n;
	double walk, offset;
	double out;   /* WAVE_OUTPUT */
	double scale; /* 10^decimals */
};

struct sim_params {
	int wave;
	double min, max, offset;
	uint64_t period_ms, seed, count, decimals;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d,
		   struct sim_params *p)
{
	bool ok = true, range_ok = true, period_ok;

	p->min = 0;
	p->max = 100;
	p->period_ms = 60000;
	p->seed = 1;
	p->count = 0;
	p->decimals = 2;
	p->offset = 0;
	p->wave = driver_opt_choice(c, "waveform", waves, WAVE_SINE, d);
	ok &= p->wave >= 0;
	range_ok &= driver_opt_double(c, "min", d, &p->min);
	range_ok &= driver_opt_double(c, "max", d, &p->max);
	period_ok = driver_opt_duration(c, "period", d, &p->period_ms);
	ok &= driver_opt_uint(c, "seed", UINT64_MAX, d, &p->seed);
	ok &= driver_opt_uint(c, "count", UINT64_MAX, d, &p->count);
	ok &= driver_opt_uint(c, "decimals", 6, d, &p->decimals);
	ok &= driver_opt_double(c, "offset", d, &p->offset);
	if (range_ok && p->max < p->min) {
		diags_add(d, &c->loc, "sensor.%s: max is below min", c->name);
		range_ok = false;
	}
	if (period_ok && p->period_ms == 0) {
		diags_add(d, &c->loc, "sensor.%s: period must be > 0", c->name);
		period_ok = false;
	}
	return ok && range_ok && period_ok;
}

static void sim_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct sim_params p;

	params(c, d, &p);
}

static int sim_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	struct sim_params p;
	struct sim *s;

	if (!params(c, &d, &p))
		return driver_bad_options(&d, err);
	s = calloc(1, sizeof(*s));
	if (!s)
		return eb_errf(err, -ENOMEM, "out of memory");
	s->wave = (enum wave)p.wave;
	s->min = p.min;
	s->max = p.max;
	s->period_ms = p.period_ms;
	s->step_ms = c->interval_ms ? c->interval_ms : 1;
	s->seed = p.seed ? p.seed : 1;
	s->count = p.count;
	s->walk = (p.min + p.max) / 2;
	s->offset = p.offset;
	s->out = p.min;
	s->scale = pow(10, (double)p.decimals);
	*state = s;
	return 0;
}

/* xorshift64: small, deterministic, good enough for a random walk. */
static double next_random(struct sim *s)
{
	s->seed ^= s->seed << 13;
	s->seed ^= s->seed >> 7;
	s->seed ^= s->seed << 17;
	return (double)(s->seed >> 11) / (double)(1ULL << 53);
}

static int sim_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct sim *s = state;
	double t, v, span = s->max - s->min;

	(void)err;
	if (s->count && s->n >= s->count)
		return -ENODATA;
	t = (double)((s->n * s->step_ms) % s->period_ms) / (double)s->period_ms;
	switch (s->wave) {
	case WAVE_SINE:
		v = s->min + span * (0.5 + 0.5 * sin(2 * M_PI * t));
		break;
	case WAVE_RAMP:
		v = s->min + span * t;
		break;
	case WAVE_COUNTER:
		v = s->offset + (double)s->n;
		break;
	case WAVE_OUTPUT:
		v = s->out;
		break;
	case WAVE_WALK:
	default:
		s->walk += (next_random(s) * 2 - 1) * span / 50;
		if (s->walk < s->min)
			s->walk = s->min;
		if (s->walk > s->max)
			s->walk = s->max;
		v = s->walk;
		break;
	}
	s->n++;
	sink->emit(sink, round(v * s->scale) / s->scale, eb_realtime_ms());
	return 1;
}

static int sim_write(void *state, double value, struct eb_err *err)
{
	struct sim *s = state;

	if (s->wave != WAVE_OUTPUT)
		return eb_errf(err, -ENOTSUP,
			       "a simulated %s is not an output (use "
			       "waveform = output)",
			       waves[s->wave]);
	s->out = value;
	return 0;
}

static void sim_close(void *state)
{
	free(state);
}

const struct driver_ops driver_sim = {
	.name = "sim",
	.allow_zero_interval = true,
	.check = sim_check,
	.open = sim_open,
	.fd = driver_no_fd,
	.read = sim_read,
	.write = sim_write,
	.close = sim_close,
};
