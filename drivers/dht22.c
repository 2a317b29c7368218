/* SPDX-License-Identifier: MIT */
/*
 * The "dht22" driver (model = dht11 for the DHT11): temperature and
 * humidity over one data line, reported as <series>_temperature (C) and
 * <series>_humidity (%RH).
 *
 * The protocol: we hold the line low (at least 1 ms for a DHT22, 18 ms for
 * a DHT11), release it, and the sensor answers with 80 us low, 80 us high,
 * then 40 bits of 50 us low and 26-28 us (0) or 70 us (1) high: about
 * 5 ms in all.  The kernel timestamps every edge; dht_decode() turns the
 * timestamps into bits.
 *
 * What blocks the loop, and for how long: the low start pulse does not (a
 * loop timer ends it).  The answer does, for at most FRAME_MS (6 ms): the
 * v1 uAPI of libgpiod 1.6 queues at most 16 events per line, and an answer
 * is 84 edges, so they must be read as they come, not when the loop next
 * gets round to them.  That is the ~5 ms the protocol needs, once per
 * reading.  (libgpiod 2 can ask for an event buffer of 128; a gpio_line.c
 * for it could let the loop collect the edges without blocking at all.)
 *
 * A failed reading (no answer, missing edges, a bad checksum: common with
 * userspace timing and long wires) is retried after 2 s, then 4 s, 8 s...
 * up to the interval; the third failure in a row is reported as the
 * sensor's error (once: the daemon raises its alarm), a good reading ends
 * it.  The sensors need 2 s (DHT22) or 1 s (DHT11) between readings.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "dht22.h"
#include "gpio_line.h"

#define FRAME_MS 6
#define MAX_EDGES 100
#define FAILS_REPORTED 3
#define RETRY_MIN_MS 2000

static const char *const models[] = { "dht22", "dht11", NULL };

/* ---- decoding ----------------------------------------------------------- */

#define US 1000ULL

int dht_decode(const struct dht_edge *e, size_t n, enum dht_model model,
	       struct dht_reading *out, struct eb_err *err)
{
	uint64_t high[MAX_EDGES], low[MAX_EDGES];
	size_t nh = 0, first;
	uint8_t *b = out->bytes;
	double h, t;

	memset(out, 0, sizeof(*out));
	for (size_t i = 1; i < n; i++) {
		if (e[i].level == e[i - 1].level)
			return eb_errf(err, -EIO,
				       "edges missing: two %s edges in a row "
				       "at %zu",
				       e[i].level ? "rising" : "falling", i);
		if (e[i - 1].level == 1 && e[i].level == 0 && nh < MAX_EDGES) {
			high[nh] = e[i].ts_ns - e[i - 1].ts_ns;
			/* the low before it, when the trace has it */
			low[nh++] = i >= 2 ? e[i - 1].ts_ns - e[i - 2].ts_ns
					   : 50 * US;
		}
	}
	if (nh < 40)
		return eb_errf(err, -EIO,
			       "edges missing: %zu of 40 bits (no answer, or "
			       "edges lost)",
			       nh);
	first = nh - 40;
	for (size_t i = 0; i < 40; i++) {
		uint64_t hi = high[first + i], lo = low[first + i];

		if (hi < 10 * US || hi > 100 * US)
			return eb_errf(err, -EPROTO,
				       "bit %zu: a high of %llu us", i,
				       (unsigned long long)(hi / US));
		/* a bit lost in between leaves a long low */
		if (i > 0 && (lo < 20 * US || lo > 110 * US))
			return eb_errf(err, -EIO,
				       "edges missing: a low of %llu us "
				       "before bit %zu",
				       (unsigned long long)(lo / US), i);
		b[i / 8] = (uint8_t)(b[i / 8] << 1 | (hi > 50 * US));
	}
	if ((uint8_t)(b[0] + b[1] + b[2] + b[3]) != b[4])
		return eb_errf(err, -EBADMSG,
			       "bad checksum: %02x %02x %02x %02x sum to "
			       "%02x, not %02x",
			       b[0], b[1], b[2], b[3],
			       (uint8_t)(b[0] + b[1] + b[2] + b[3]), b[4]);
	if (model == DHT_MODEL_DHT22) {
		h = ((b[0] << 8) | b[1]) / 10.0;
		t = (((b[2] & 0x7f) << 8) | b[3]) / 10.0;
		if (b[2] & 0x80)
			t = -t;
	} else {
		h = b[0] + b[1] / 10.0;
		t = b[2] + (b[3] & 0x7f) / 10.0;
		if (b[3] & 0x80)
			t = -t;
	}
	if (h > 100 || t < -40 || t > 80)
		return eb_errf(err, -ERANGE,
			       "%.1f %%RH, %.1f C is out of range for a %s "
			       "(another model?)",
			       h, t, models[model]);
	out->humidity = h;
	out->temperature = t;
	return 0;
}

/* ---- the driver --------------------------------------------------------- */

enum phase { IDLE, START };

struct dht {
	struct gpio_conf gc;
	enum dht_model model;
	uint64_t interval_ms;
	struct gpio_lines *g;
	enum phase phase;
	uint64_t due_ms; /* eb_now_ms() of the next step */
	uint64_t last_start_ms;
	unsigned fails;
	struct eb_err last;
};

static bool params(struct eb_sensor_conf *c, struct eb_diags *d, struct dht *x)
{
	bool ok = gpio_conf_parse(c, GPIO_OPT_BIAS, d, &x->gc);
	int m = driver_opt_choice(c, "model", models, 0, d);
	uint64_t min = m == DHT_MODEL_DHT11 ? 1000 : 2000;

	x->model = m < 0 ? DHT_MODEL_DHT22 : (enum dht_model)m;
	x->interval_ms = c->interval_ms;
	if (c->interval_ms < min) {
		diags_add(d, c->interval_loc.file ? &c->interval_loc : &c->loc,
			  "sensor.%s.interval: a %s needs at least %llu ms "
			  "between readings",
			  c->name, models[x->model], (unsigned long long)min);
		ok = false;
	}
	return ok && m >= 0;
}

static void dht_check(struct eb_sensor_conf *c, struct eb_diags *d)
{
	struct dht x;

	params(c, d, &x);
}

static void dht_close(void *state)
{
	struct dht *x = state;

	if (x)
		gpio_lines_close(x->g);
	free(x);
}

static int dht_open(struct eb_sensor_conf *c, void **state, struct eb_err *err)
{
	struct eb_diags d = { 0 };
	struct dht *x = calloc(1, sizeof(*x));
	int r;

	if (!x)
		return eb_errf(err, -ENOMEM, "out of memory");
	if (!params(c, &d, x)) {
		free(x);
		return driver_bad_options(&d, err);
	}
	/* idle: held as an input (pulled up), so nobody else takes it */
	if ((r = gpio_lines_open(&x->gc, c->name, &x->g, err)) < 0 ||
	    (r = gpio_lines_request_events(x->g, err)) < 0) {
		dht_close(x);
		return r;
	}
	x->due_ms = eb_now_ms();
	*state = x;
	return 0;
}

/* Collects the answer for at most FRAME_MS; see the top of the file. */
static int collect(struct dht *x, struct dht_edge *out, size_t max,
		   struct eb_err *err)
{
	uint64_t end = gpio_mono_ns() + FRAME_MS * NSEC_PER_MSEC;
	struct pollfd p = { .fd = gpio_lines_fd(x->g), .events = POLLIN };
	struct gpio_edge e[32];
	size_t n = 0;

	for (;;) {
		uint64_t now = gpio_mono_ns();
		int r;

		if (now >= end || (n >= 84 && out[n - 1].level == 1))
			break;
		r = poll(
			&p, 1,
			(int)((end - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC));
		if (r < 0 && errno != EINTR)
			return eb_errf(err, -errno, "poll: %s",
				       strerror(errno));
		r = gpio_lines_read_edges(x->g, e, EB_ARRAY_SIZE(e), err);
		if (r < 0)
			return r;
		for (int i = 0; i < r && n < max; i++)
			out[n++] = (struct dht_edge){ e[i].ts_ns, e[i].level };
	}
	return (int)n;
}

static void drain(struct dht *x)
{
	struct gpio_edge e[32];

	while (gpio_lines_read_edges(x->g, e, EB_ARRAY_SIZE(e), NULL) > 0)
		;
}

/* The reading failed: retry soon, report only a run of failures. */
static int failed(struct dht *x, int r, struct eb_err *err)
{
	uint64_t retry = RETRY_MIN_MS << (x->fails < 8 ? x->fails : 8);

	if (r == -ENODEV)
		return r;
	x->fails++;
	x->due_ms = x->last_start_ms +
		    (retry < x->interval_ms ? retry : x->interval_ms);
	if (x->fails < FAILS_REPORTED)
		return 0;
	memcpy(&x->last, err, sizeof(x->last));
	return eb_errf(err, r, "%u readings failed in a row; the last: %s",
		       x->fails, x->last.msg);
}

static int dht_read(void *state, struct sample_sink *sink, struct eb_err *err)
{
	struct dht *x = state;
	struct dht_edge e[MAX_EDGES];
	struct dht_reading rd;
	uint64_t now = eb_now_ms();
	int64_t t;
	int zero = 0, r, n;

	if (now < x->due_ms)
		return 0;
	if (x->phase == IDLE) {
		/* the start pulse; the loop's timer ends it */
		drain(x);
		r = gpio_lines_request_output(x->g, &zero, err);
		if (r < 0)
			return r == -ENODEV ? r : failed(x, r, err);
		x->phase = START;
		x->last_start_ms = now;
		x->due_ms = now + (x->model == DHT_MODEL_DHT11 ? 20 : 2);
		return 0;
	}
	x->phase = IDLE;
	r = gpio_lines_request_events(x->g, err); /* releases the line */
	if (r < 0)
		return failed(x, r, err);
	t = eb_realtime_ms();
	n = collect(x, e, EB_ARRAY_SIZE(e), err);
	if (n < 0)
		return failed(x, n, err);
	r = dht_decode(e, (size_t)n, x->model, &rd, err);
	if (r < 0)
		return failed(x, r, err);
	x->fails = 0;
	x->due_ms = x->last_start_ms + x->interval_ms;
	sink->emit_series(sink, "temperature", "C", rd.temperature, t);
	sink->emit_series(sink, "humidity", "%RH", rd.humidity, t);
	return 2;
}

static uint64_t dht_wake_at(void *state)
{
	return ((struct dht *)state)->due_ms;
}

const struct driver_ops driver_dht22 = {
	.name = "dht22",
	.check = dht_check,
	.open = dht_open,
	.fd = driver_no_fd,
	.read = dht_read,
	.wake_at = dht_wake_at,
	.close = dht_close,
};
