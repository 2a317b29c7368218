/* SPDX-License-Identifier: MIT */
/*
 * ThingsBoard's MQTT device API (v1/devices/me/...), as a cloud profile.
 *
 * Telemetry goes to v1/devices/me/telemetry as {"ts": <ms>, "values":
 * {...}}, and a backlog as an array of such objects in one publish: one
 * PUBACK then confirms them all, as SmartREST lines do for Cumulocity.
 * Samples of one timestamp (sensors due together) share one object, which
 * is what the platform stores as one row of its time series; a key seen
 * twice at one timestamp starts a new object, so nothing is overwritten.
 *
 * The limit is the session's (getSessionLimits, 64 KiB by default: the
 * platform's transport default), so pack() takes it as an argument.  JSON
 * is built with jansson: keys and texts come from the configuration and
 * from drivers, and a hand-written escaper is one more parser to fuzz.
 *
 * Events and alarms: a ThingsBoard device has no event or alarm API (alarms
 * are raised by the device profile's alarm rules or the rule engine, from
 * telemetry).  So an event is telemetry too, under the keys "event",
 * "event_severity" and "event_text": it is kept in the time series, and an
 * alarm rule such as event_severity == MAJOR raises the platform's alarm
 * (CLEARED clears it).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common/util.h"
#include "../store/store.h"
#include "profile.h"
#include "tb.h"

/* ThingsBoard's transport default (transport.mqtt.max_payload_size) */
#define TB_MAX_PAYLOAD 65536
/* what a session may be allowed, at most, before we stop following */
#define TB_MAX_PAYLOAD_CAP (1024 * 1024)
/* 15 significant digits, as the Cumulocity profile writes numbers */
#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

int tb_key(const char *sensor, const char *series, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s.%s", sensor, series);

	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

/* Dumps o into buf; its length, or -ENOSPC. */
static int dump(const json_t *o, char *buf, size_t len)
{
	size_t n = json_dumpb(o, buf, len, DUMP_FLAGS);

	if (!n || n >= len)
		return -ENOSPC;
	buf[n] = '\0';
	return (int)n;
}

static json_t *number(double v)
{
	/* whole numbers as integers: 21 reads as 21, not 21.0 */
	if (fabs(v) < 9007199254740992.0 && v == floor(v))
		return json_integer((json_int_t)v);
	return json_real(v);
}

static int tb_format(const struct eb_sample *s, char *buf, size_t len)
{
	char key[256];
	json_t *o;
	int r;

	if (!isfinite(s->value))
		return -EDOM;
	if (tb_key(s->meta->name, s->meta->series, key, sizeof(key)) < 0)
		return -ENOSPC;
	o = json_pack("{s:I, s:{s:o}}", "ts", (json_int_t)s->time_ms, "values",
		      key, number(s->value));
	if (!o)
		return -ENOMEM;
	r = dump(o, buf, len);
	json_decref(o);
	return r;
}

/*
 * Builds the array piece by piece: `done` holds the serialised objects
 * already closed (comma-separated), `cur` the open one.  The size counted
 * is always the array's; a single object goes out bare, which is smaller.
 */
struct packer {
	char *buf;
	size_t limit;
	size_t done_len; /* bytes in buf + 1 */
	size_t n_done;
	json_t *cur, *values;
	int64_t ts;
	size_t cur_len; /* of cur serialised, when it fits */
};

static size_t total(const struct packer *k, size_t cur_len)
{
	return 2 + k->done_len + (k->n_done && cur_len ? 1 : 0) + cur_len;
}

/* Moves the open object into done (it was measured to fit). */
static void close_cur(struct packer *k)
{
	if (!k->cur)
		return;
	if (json_object_size(k->values)) {
		char *at = k->buf + 1 + k->done_len;

		if (k->n_done)
			*at++ = ',';
		dump(k->cur, at, k->limit + 1 - (size_t)(at - k->buf));
		k->done_len += k->cur_len + (k->n_done ? 1 : 0);
		k->n_done++;
	}
	json_decref(k->cur);
	k->cur = k->values = NULL;
	k->cur_len = 0;
}

/* 1: added; 0: does not fit (nothing changed); <0: error. */
static int add(struct packer *k, const char *key, double v, int64_t ts,
	       char *tmp, size_t tmp_len)
{
	int n;

	if (k->cur && (ts != k->ts || json_object_get(k->values, key)))
		close_cur(k);
	if (!k->cur) {
		k->values = json_object();
		k->cur = json_pack("{s:I, s:O}", "ts", (json_int_t)ts, "values",
				   k->values);
		json_decref(k->values); /* cur holds it */
		if (!k->cur)
			return -ENOMEM;
		k->ts = ts;
	}
	if (json_object_set_new(k->values, key, number(v)) < 0)
		return -ENOMEM;
	n = dump(k->cur, tmp, tmp_len);
	if (n < 0 || total(k, (size_t)n) > k->limit) {
		json_object_del(k->values, key);
		return 0;
	}
	k->cur_len = (size_t)n;
	return 1;
}

static size_t tb_pack(const struct cloud_profile *p, size_t limit,
		      const struct store_row *rows, size_t n, char *buf,
		      size_t *len, bool *bad)
{
	struct packer k = { .buf = buf, .limit = limit };
	char *tmp = malloc(limit + 1);
	size_t used = 0;

	(void)p;
	*len = 0;
	if (!tmp)
		return 0;
	for (; used < n; used++) {
		const struct eb_sample *s = &rows[used].s;
		char key[256];
		int r;

		bad[used] = !isfinite(s->value) ||
			    tb_key(s->meta->name, s->meta->series, key,
				   sizeof(key)) < 0;
		if (bad[used])
			continue;
		r = add(&k, key, s->value, s->time_ms, tmp, limit + 1);
		if (r < 0)
			break; /* out of memory: send what we have */
		if (r == 0) {
			if (!k.n_done && !json_object_size(k.values)) {
				/* alone it does not fit: never will */
				bad[used] = true;
				used++;
			}
			break;
		}
	}
	close_cur(&k);
	free(tmp);
	if (!k.n_done)
		return used;
	if (k.n_done == 1) {
		/* one object: send it bare */
		memmove(buf, buf + 1, k.done_len);
		*len = k.done_len;
	} else {
		buf[0] = '[';
		buf[1 + k.done_len] = ']';
		*len = k.done_len + 2;
	}
	buf[*len] = '\0';
	return used;
}

static int tb_format_event(const char *type, const char *severity,
			   const char *text, int64_t time_ms, char *buf,
			   size_t len)
{
	json_t *o =
		json_pack("{s:I, s:{s:s, s:s, s:s}}", "ts", (json_int_t)time_ms,
			  "values", "event", type, "event_severity",
			  severity ? severity : "", "event_text", text);
	int r;

	if (!o)
		return -EINVAL; /* not UTF-8: cannot be expressed */
	r = dump(o, buf, len);
	json_decref(o);
	return r;
}

/* Client attributes, published on every connect: what runs here. */
static int tb_bootstrap(const struct eb_config *c, const char *version,
			char *buf, size_t len)
{
	json_t *o, *sensors = json_array(), *pins = json_object();
	int r;

	for (size_t i = 0; sensors && i < c->n_sensor; i++) {
		const struct eb_sensor_conf *s = &c->sensor[i];
		char key[256];

		if (tb_key(s->name, s->series, key, sizeof(key)) < 0)
			continue;
		json_array_append_new(
			sensors, json_pack("{s:s, s:s, s:s, s:s, s:I}", "name",
					   s->name, "driver", s->driver, "key",
					   key, "unit", s->unit, "interval_ms",
					   (json_int_t)s->interval_ms));
	}
	for (size_t i = 0; pins && i < c->cloud.n_gpio_pin; i++) {
		char pin[16];

		snprintf(pin, sizeof(pin), "%u", c->cloud.gpio_pin[i].pin);
		json_object_set_new(pins, pin,
				    json_string(c->cloud.gpio_pin[i].sensor));
	}
	o = json_pack("{s:s, s:s, s:s?, s:s?, s:o, s:o}", "current_fw_title",
		      "edgebridge", "current_fw_version", version, "gatewayId",
		      c->gateway.id, "gatewayType", c->gateway.type, "sensors",
		      sensors, "gpioPins", pins);
	if (!o)
		return -ENOMEM;
	r = dump(o, buf, len);
	json_decref(o);
	return r;
}

const struct cloud_profile profile_thingsboard = {
	.name = "thingsboard",
	.uplink_topic = TB_TOPIC_TELEMETRY,
	.max_payload = TB_MAX_PAYLOAD,
	.max_payload_cap = TB_MAX_PAYLOAD_CAP,
	.bootstrap_topic = TB_TOPIC_ATTRIBUTES,
	/* format() alone: one object per publish (the pack() is the norm) */
	.batch_open = "[",
	.batch_sep = ",",
	.batch_close = "]",
	.bootstrap = tb_bootstrap,
	.format = tb_format,
	.format_event = tb_format_event,
	.pack = tb_pack,
};
