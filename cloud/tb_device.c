/* SPDX-License-Identifier: MIT */
/*
 * ThingsBoard's device API besides telemetry, over the uplink's MQTT
 * session (cloud_subscribe/cloud_publish, QoS 1).
 *
 * Why it works this way:
 * - On every connect the shared attributes we use are fetched with an
 *   attribute request, then kept current by the pushes on
 *   v1/devices/me/attributes.  The platform is the source of truth: a value
 *   changed while we were offline, or before a restart, applies as soon as
 *   we are back.  A sensor's interval changes in place (the sensor is not
 *   re-opened, so an output keeps its state); it lasts until the daemon
 *   restarts or reloads, and the next connect fetches it again.
 * - getSessionLimits (client-side RPC) is asked on every connect: its
 *   maxPayloadSize becomes the uplink's packing limit for this session.
 *   Telemetry waits for the answer (a publish above the platform's limit
 *   closes the connection, and a backlog would then never drain); when the
 *   platform does not answer within LIMITS_WAIT_MS (before ThingsBoard 3.5
 *   there is no such RPC), the profile's default (64 KiB) applies.
 * - A server-side RPC always gets an answer on .../response/<id>: the
 *   result, or {"error": "..."} (unknown method, bad params, malformed
 *   JSON), so the platform's call fails fast instead of timing out.  A
 *   request without a usable id cannot be answered and is only counted.
 * - GPIO pins are the ones [cloud] gpio_pins maps to output sensors; the
 *   state reported back is read from the driver after the write.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloud.h"
#include "tb.h"

#define MAX_ID 16
/* how long telemetry waits for getSessionLimits before the default */
#define LIMITS_WAIT_MS 5000

struct pin {
	unsigned pin;
	char *sensor;
};

struct tb_device {
	struct cloud *cloud;
	struct loop_timer *limits_timer;
	struct tb_device_host h;
	eb_report_fn report;
	char *shared_keys; /* for the attribute request */
	struct pin *pins;
	size_t n_pins;
	unsigned next_id;
	unsigned limits_id, attr_id; /* pending client requests */
	struct tb_device_stats st;
};

#define report(t, l, ...) EB_REPORT((t)->report, l, "thingsboard", __VA_ARGS__)

/* ---- sending ----------------------------------------------------------- */

static void publish_json(struct tb_device *t, const char *topic, json_t *o)
{
	char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15))
		       : NULL;
	int r;

	json_decref(o);
	if (!text) {
		report(t, EB_LOG_WARNING, "cannot build a message for %s",
		       topic);
		return;
	}
	r = cloud_publish(t->cloud, topic, text, strlen(text), NULL, NULL);
	if (r < 0 && r != -ENOTCONN)
		report(t, EB_LOG_WARNING, "cannot publish to %s: %s", topic,
		       strerror(-r));
	free(text);
}

static unsigned request(struct tb_device *t, const char *prefix, json_t *o)
{
	char topic[128];
	unsigned id = ++t->next_id;

	if (!id)
		id = ++t->next_id;
	snprintf(topic, sizeof(topic), "%s%u", prefix, id);
	publish_json(t, topic, o);
	return id;
}

static void respond(struct tb_device *t, const char *id, json_t *o)
{
	char topic[128];

	snprintf(topic, sizeof(topic), "%s%s", TB_TOPIC_RPC_RESPONSE, id);
	publish_json(t, topic, o);
}

static void respond_error(struct tb_device *t, const char *id, const char *fmt,
			  ...) __attribute__((format(printf, 3, 4)));

static void respond_error(struct tb_device *t, const char *id, const char *fmt,
			  ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t->st.rpc_errors++;
	report(t, EB_LOG_WARNING, "RPC %s refused: %s", id, msg);
	respond(t, id, json_pack("{s:s}", "error", msg));
}

/* ---- shared attributes ------------------------------------------------- */

/* "sensor.<name>.interval" -> name (in buf), or NULL */
static const char *interval_sensor(const char *key, char *buf, size_t len)
{
	size_t pl = strlen(TB_ATTR_INTERVAL_PREFIX);
	size_t sl = strlen(TB_ATTR_INTERVAL_SUFFIX), kl = strlen(key);

	if (kl <= pl + sl || strncmp(key, TB_ATTR_INTERVAL_PREFIX, pl) ||
	    strcmp(key + kl - sl, TB_ATTR_INTERVAL_SUFFIX) ||
	    kl - pl - sl >= len)
		return NULL;
	memcpy(buf, key + pl, kl - pl - sl);
	buf[kl - pl - sl] = '\0';
	return buf;
}

/* A duration string as in the configuration, or a number of seconds. */
static int interval_of(const json_t *v, uint64_t *ms)
{
	double sec;

	if (json_is_string(v))
		return config_parse_duration_ms(json_string_value(v), ms);
	if (!json_is_number(v))
		return -EINVAL;
	sec = json_number_value(v);
	if (!isfinite(sec) || sec < 0 || sec > 86400.0 * 365)
		return -ERANGE;
	*ms = (uint64_t)llround(sec * 1000);
	return 0;
}

static void apply_shared(struct tb_device *t, json_t *attrs)
{
	const char *key;
	json_t *v;

	if (!json_is_object(attrs)) {
		t->st.malformed++;
		report(t, EB_LOG_WARNING,
		       "shared attributes that are not a JSON object: "
		       "ignored");
		return;
	}
	json_object_foreach(attrs, key, v)
	{
		char name[128], why[256] = "";
		const char *sensor = interval_sensor(key, name, sizeof(name));
		uint64_t ms = 0;
		int r;

		if (!sensor)
			continue; /* not ours (or "deleted") */
		r = interval_of(v, &ms);
		if (r < 0 || ms == 0) {
			t->st.malformed++;
			report(t, EB_LOG_WARNING,
			       "shared attribute %s: not a duration above 0 "
			       "(e.g. \"30s\" or 30): ignored",
			       key);
			continue;
		}
		r = t->h.set_interval(t->h.ud, sensor, ms, why, sizeof(why));
		if (r < 0) {
			report(t, EB_LOG_WARNING,
			       "shared attribute %s not applied: %s", key, why);
			continue;
		}
		t->st.attr_updates++;
		report(t, EB_LOG_NOTICE,
		       "shared attribute %s: sensor %s now every %llu ms", key,
		       sensor, (unsigned long long)ms);
	}
}

/* ---- RPC --------------------------------------------------------------- */

static const char *sensor_of_pin(const struct tb_device *t, json_int_t pin)
{
	for (size_t i = 0; i < t->n_pins; i++)
		if ((json_int_t)t->pins[i].pin == pin)
			return t->pins[i].sensor;
	return NULL;
}

/* The last value of a sensor's main series: 0 or -errno. */
static int last_of(const struct tb_device *t, const char *sensor, double *v)
{
	for (size_t i = 0;; i++) {
		const char *name, *series;
		int64_t ts;
		int r = t->h.last(t->h.ud, i, &name, &series, v, &ts);

		if (r == -ENOENT)
			return r;
		if (!strcmp(name, sensor))
			return r;
	}
}

static json_t *pin_state(const struct tb_device *t, json_int_t pin,
			 const char *sensor)
{
	double v = 0;

	if (last_of(t, sensor, &v) < 0)
		return json_pack("{s:I, s:n}", "pin", pin, "enabled");
	return json_pack("{s:I, s:b}", "pin", pin, "enabled", v != 0);
}

/* The output sensor of params.pin; NULL when answered with an error. */
static const char *pin_sensor(struct tb_device *t, const char *id,
			      const char *method, json_t *params,
			      json_int_t *pin)
{
	json_t *p = json_object_get(params, "pin");
	const char *sensor;

	if (!json_is_integer(p)) {
		respond_error(
			t, id, "%s wants params {\"pin\": <int>%s}", method,
			strcmp(method, "setGpio") ? ""
						  : ", \"enabled\": <bool>");
		return NULL;
	}
	*pin = json_integer_value(p);
	sensor = sensor_of_pin(t, *pin);
	if (!sensor)
		respond_error(t, id, "no GPIO pin %lld (see gpio_pins)",
			      (long long)*pin);
	return sensor;
}

static void rpc_set_gpio(struct tb_device *t, const char *id, json_t *params)
{
	json_t *on = json_object_get(params, "enabled");
	const char *sensor;
	char why[256] = "";
	json_int_t pin;

	if (!json_is_boolean(on)) {
		respond_error(t, id,
			      "setGpio wants params {\"pin\": <int>, "
			      "\"enabled\": <bool>}");
		return;
	}
	sensor = pin_sensor(t, id, "setGpio", params, &pin);
	if (!sensor)
		return;
	if (t->h.write(t->h.ud, sensor, json_is_true(on) ? 1 : 0, why,
		       sizeof(why)) < 0) {
		respond_error(t, id, "pin %lld: %s", (long long)pin, why);
		return;
	}
	report(t, EB_LOG_NOTICE, "RPC %s: pin %lld (%s) %s", id, (long long)pin,
	       sensor, json_is_true(on) ? "on" : "off");
	respond(t, id, pin_state(t, pin, sensor));
}

static void rpc_get_gpio(struct tb_device *t, const char *id, json_t *params)
{
	const char *sensor;
	json_int_t pin;
	json_t *all;

	if (json_object_get(params, "pin")) {
		sensor = pin_sensor(t, id, "getGpio", params, &pin);
		if (sensor)
			respond(t, id, pin_state(t, pin, sensor));
		return;
	}
	/* all of them, as ThingsBoard's GPIO widgets read them */
	all = json_object();
	for (size_t i = 0; all && i < t->n_pins; i++) {
		char k[16];
		double v = 0;
		int r = last_of(t, t->pins[i].sensor, &v);

		snprintf(k, sizeof(k), "%u", t->pins[i].pin);
		json_object_set_new(all, k,
				    r < 0 ? json_null() : json_boolean(v != 0));
	}
	respond(t, id, all);
}

static void rpc_get_telemetry(struct tb_device *t, const char *id)
{
	json_t *o = json_object();

	for (size_t i = 0; o; i++) {
		const char *name, *series;
		char key[256];
		double v;
		int64_t ts;
		int r = t->h.last(t->h.ud, i, &name, &series, &v, &ts);

		if (r == -ENOENT)
			break;
		if (r < 0 || !isfinite(v) ||
		    tb_key(name, series, key, sizeof(key)) < 0)
			continue;
		json_object_set_new(o, key,
				    json_pack("{s:I, s:f}", "ts",
					      (json_int_t)ts, "value", v));
	}
	respond(t, id, o);
}

/* The id of .../request/<id> or .../response/<id>: digits only. */
static const char *topic_id(const char *topic, const char *prefix)
{
	size_t pl = strlen(prefix);
	const char *id = topic + pl;
	size_t n;

	if (strncmp(topic, prefix, pl))
		return NULL;
	n = strlen(id);
	if (!n || n >= MAX_ID || strspn(id, "0123456789") != n)
		return NULL;
	return id;
}

static void server_rpc(struct tb_device *t, const char *id, const char *payload,
		       size_t len)
{
	json_error_t e;
	json_t *req = json_loadb(payload, len, 0, &e);
	json_t *m = json_object_get(req, "method");
	json_t *params = json_object_get(req, "params");
	const char *method;

	t->st.rpc_requests++;
	if (!req || !json_is_object(req) || !json_is_string(m)) {
		t->st.malformed++;
		respond_error(t, id, "malformed request: %s",
			      req ? "want {\"method\": ..., \"params\": ...}"
				  : e.text);
		json_decref(req);
		return;
	}
	method = json_string_value(m);
	if (params && !json_is_object(params))
		params = NULL; /* "params": "" and the like: no params */
	if (!strcmp(method, "setGpio"))
		rpc_set_gpio(t, id, params);
	else if (!strcmp(method, "getGpio"))
		rpc_get_gpio(t, id, params);
	else if (!strcmp(method, "getTelemetry"))
		rpc_get_telemetry(t, id);
	else
		respond_error(t, id, "unknown method '%.64s'", method);
	json_decref(req);
}

/* The session's limit is known (or will not be): telemetry may go. */
static void release(struct tb_device *t)
{
	loop_timer_disarm(t->limits_timer);
	cloud_hold(t->cloud, false);
}

static void on_limits_timeout(struct loop *l, struct loop_timer *timer,
			      void *ud)
{
	struct tb_device *t = ud;

	(void)l;
	(void)timer;
	report(t, EB_LOG_INFO,
	       "no answer to getSessionLimits: %zu bytes per message",
	       cloud_max_payload(t->cloud));
	t->limits_id = 0;
	cloud_hold(t->cloud, false);
}

/* An answer to one of our requests (attributes, getSessionLimits). */
static void answer(struct tb_device *t, unsigned id, json_t *o)
{
	if (id == t->attr_id) {
		t->attr_id = 0;
		json_t *shared = json_object_get(o, "shared");

		if (shared)
			apply_shared(t, shared);
	} else if (id == t->limits_id) {
		json_t *max = json_object_get(o, "maxPayloadSize");
		size_t now;

		t->limits_id = 0;
		if (!json_is_integer(max) || json_integer_value(max) <= 0) {
			release(t);
			t->st.malformed++;
			report(t, EB_LOG_WARNING,
			       "getSessionLimits without a maxPayloadSize: "
			       "keeping %zu bytes",
			       cloud_max_payload(t->cloud));
			return;
		}
		now = cloud_set_max_payload(t->cloud,
					    (size_t)json_integer_value(max));
		release(t);
		report(t, EB_LOG_INFO,
		       "session limit: %lld bytes per message (packing up to "
		       "%zu)",
		       (long long)json_integer_value(max), now);
	}
}

void tb_device_message(struct tb_device *t, const char *topic,
		       const char *payload, size_t len)
{
	const char *id;
	json_error_t e;
	json_t *o;

	if ((id = topic_id(topic, TB_TOPIC_RPC_REQUEST))) {
		server_rpc(t, id, payload, len);
		return;
	}
	if (strcmp(topic, TB_TOPIC_ATTRIBUTES) &&
	    !(id = topic_id(topic, TB_TOPIC_ATTR_RESPONSE)) &&
	    !(id = topic_id(topic, TB_TOPIC_RPC_RESPONSE)))
		return; /* not for us */
	o = json_loadb(payload, len, 0, &e);
	if (!json_is_object(o)) {
		t->st.malformed++;
		report(t, EB_LOG_WARNING, "malformed message on %s: ignored",
		       topic);
	} else if (!id) {
		apply_shared(t, o);
	} else {
		answer(t, (unsigned)strtoul(id, NULL, 10), o);
	}
	json_decref(o);
}

/* ---- the companion ------------------------------------------------------- */

static void on_connected(void *ud)
{
	struct tb_device *t = ud;
	static const char *const topics[] = {
		TB_TOPIC_ATTRIBUTES,
		TB_TOPIC_ATTR_RESPONSE "+",
		TB_TOPIC_RPC_REQUEST "+",
		TB_TOPIC_RPC_RESPONSE "+",
	};

	for (size_t i = 0; i < EB_ARRAY_SIZE(topics); i++)
		if (cloud_subscribe(t->cloud, topics[i]) < 0)
			report(t, EB_LOG_WARNING, "cannot subscribe to %s",
			       topics[i]);
	/* subscriptions first: the answers come on them */
	if (t->shared_keys[0])
		t->attr_id = request(
			t, TB_TOPIC_ATTR_REQUEST,
			json_pack("{s:s}", "sharedKeys", t->shared_keys));
	cloud_hold(t->cloud, true);
	loop_timer_arm_in(t->limits_timer, LIMITS_WAIT_MS);
	t->limits_id = request(t, TB_TOPIC_RPC_REQUEST,
			       json_pack("{s:s, s:{}}", "method",
					 "getSessionLimits", "params"));
}

static void on_disconnected(void *ud)
{
	struct tb_device *t = ud;

	t->attr_id = t->limits_id = 0;
	loop_timer_disarm(t->limits_timer);
}

static void on_message(void *ud, const char *topic, const char *payload,
		       size_t len)
{
	tb_device_message(ud, topic, payload, len);
}

static const struct cloud_ext ext = {
	.connected = on_connected,
	.disconnected = on_disconnected,
	.message = on_message,
};

struct tb_device *tb_device_new(struct loop *loop, const struct eb_config *cfg,
				struct cloud *cloud,
				const struct tb_device_host *h,
				eb_report_fn report, struct eb_err *err)
{
	struct tb_device *t = calloc(1, sizeof(*t));
	size_t keys = 1;

	if (!t)
		goto oom;
	t->cloud = cloud;
	t->h = *h;
	t->report = report;
	for (size_t i = 0; i < cfg->n_sensor; i++)
		keys += strlen(TB_ATTR_INTERVAL_PREFIX
				       TB_ATTR_INTERVAL_SUFFIX) +
			strlen(cfg->sensor[i].name) + 1;
	t->limits_timer = loop_timer_new(loop, on_limits_timeout, t);
	t->shared_keys = calloc(1, keys);
	t->pins = calloc(cfg->cloud.n_gpio_pin + 1, sizeof(*t->pins));
	if (!t->limits_timer || !t->shared_keys || !t->pins)
		goto oom;
	for (size_t i = 0, o = 0; i < cfg->n_sensor; i++)
		o += (size_t)sprintf(t->shared_keys + o, "%s%s%s%s",
				     i ? "," : "", TB_ATTR_INTERVAL_PREFIX,
				     cfg->sensor[i].name,
				     TB_ATTR_INTERVAL_SUFFIX);
	for (; t->n_pins < cfg->cloud.n_gpio_pin; t->n_pins++) {
		t->pins[t->n_pins].pin = cfg->cloud.gpio_pin[t->n_pins].pin;
		t->pins[t->n_pins].sensor =
			strdup(cfg->cloud.gpio_pin[t->n_pins].sensor);
		if (!t->pins[t->n_pins].sensor)
			goto oom;
	}
	t->st.max_payload = cloud_max_payload(cloud);
	if (cloud_add_ext(cloud, &ext, t) < 0) {
		eb_errf(err, -ENOSPC, "too many cloud companions");
		return tb_device_free(t);
	}
	return t;
oom:
	eb_errf(err, -ENOMEM, "out of memory");
	return tb_device_free(t);
}

struct tb_device *tb_device_free(struct tb_device *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->n_pins; i++)
		free(t->pins[i].sensor);
	free(t->pins);
	free(t->shared_keys);
	loop_timer_free(t->limits_timer);
	free(t);
	return NULL;
}

void tb_device_get_stats(const struct tb_device *t, struct tb_device_stats *st)
{
	*st = t->st;
	st->max_payload = cloud_max_payload(t->cloud);
}
