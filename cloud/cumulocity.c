/* SPDX-License-Identifier: MIT */
/*
 * Cumulocity over MQTT with SmartREST 2.0 static templates:
 *   100,<name>,<type>              create the device (no-op if it exists)
 *   110,<serial>,<model>,<rev>     c8y_Hardware
 *   117,<minutes>                  required interval (availability)
 *   200,<fragment>,<series>,<value>,<unit>,<time>   one measurement
 *   400,<type>,<text>,<time>       an event (drop reports, store resets)
 *   301..304,<type>,<text>,<time>  an alarm (certificate about to expire)
 * Several lines go in one publish, separated by '\n', up to the platform's
 * 16184-byte limit for the whole packet (header included).
 *
 * Field escaping follows the SmartREST CSV rules: a value containing a
 * comma, a double quote, a line break or leading/trailing blanks is put in
 * double quotes, and a double quote inside is doubled (""), as Cumulocity's
 * "SmartREST escaping" documents (the older guide's backslash is wrong).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/util.h"
#include "profile.h"

/* 16184 bytes is the platform's limit for the whole PUBLISH packet; the
 * header of a QoS 1 publish to s/us takes 11 of them. */
#define C8Y_MAX_PAYLOAD (16184 - 11)

/*
 * Samples packed into one publish mostly share their second, and gmtime plus
 * snprintf per sample was the uplink's largest cost under backlog: keep the
 * "YYYY-MM-DDTHH:MM:SS" of the last second and append only the milliseconds.
 * (One loop thread: a static cache is safe.)
 */
int c8y_format_time(int64_t time_ms, char *buf, size_t len)
{
	static int64_t cached_sec = INT64_MIN;
	static char cached[32];
	int64_t sec = time_ms / 1000 - (time_ms % 1000 < 0);
	int ms = (int)(time_ms - sec * 1000);

	if (len < 25)
		return -ENOSPC;
	if (sec != cached_sec) {
		if (eb_format_utc(sec * 1000, cached, sizeof(cached)) < 0)
			return -EINVAL;
		cached_sec = sec;
	}
	memcpy(buf, cached, 19);
	buf[19] = '.';
	buf[20] = (char)('0' + ms / 100);
	buf[21] = (char)('0' + ms / 10 % 10);
	buf[22] = (char)('0' + ms % 10);
	buf[23] = 'Z';
	buf[24] = '\0';
	return 24;
}

/*
 * Numbers: "%.15g" (15 significant digits, enough for any sensor), with a
 * fast path for the common case, a value below 1e9 that is exactly the
 * double nearest to a decimal with at most 6 places (21.37, -0.5, 1013):
 * those are written with integer arithmetic as that decimal, which is the
 * same number "%.15g" prints, never in exponent notation.
 */
int c8y_format_value(double v, char *buf, size_t len)
{
	int n;

	if (fabs(v) < 1e9 && (double)llround(v * 1e6) / 1e6 == v) {
		long long x = llround(v * 1e6);
		unsigned long long ip, fp;
		char frac[8];
		int fl = 6;

		ip = (unsigned long long)(x < 0 ? -x : x) / 1000000ULL;
		fp = (unsigned long long)(x < 0 ? -x : x) % 1000000ULL;
		while (fl && fp % 10 == 0) {
			fp /= 10;
			fl--;
		}
		if (fl)
			snprintf(frac, sizeof(frac), ".%0*llu", fl, fp);
		else
			frac[0] = '\0';
		n = snprintf(buf, len, "%s%llu%s", x < 0 ? "-" : "", ip, frac);
	} else {
		n = snprintf(buf, len, "%.15g", v);
	}
	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

static int field(const char *value, char *buf, size_t len, bool force)
{
	size_t vlen = strlen(value), o = 0;
	bool quote =
		force || strpbrk(value, ",\"\r\n") != NULL ||
		(vlen && (value[0] == ' ' || value[0] == '\t' ||
			  value[vlen - 1] == ' ' || value[vlen - 1] == '\t'));

	if (!quote) {
		if (vlen >= len)
			return -ENOSPC;
		memcpy(buf, value, vlen + 1);
		return (int)vlen;
	}
	if (o + 1 >= len)
		return -ENOSPC;
	buf[o++] = '"';
	for (const char *p = value; *p; p++) {
		if (*p == '"') {
			if (o + 1 >= len)
				return -ENOSPC;
			buf[o++] = '"'; /* doubled, as in CSV */
		}
		if (o + 1 >= len)
			return -ENOSPC;
		buf[o++] = *p;
	}
	if (o + 2 > len)
		return -ENOSPC;
	buf[o++] = '"';
	buf[o] = '\0';
	return (int)o;
}

int c8y_field(const char *value, char *buf, size_t len)
{
	return field(value, buf, len, false);
}

static int append(char *buf, size_t len, size_t *o, const char *s)
{
	size_t n = strlen(s);

	if (*o + n >= len)
		return -ENOSPC;
	memcpy(buf + *o, s, n + 1);
	*o += n;
	return 0;
}

static int append_field(char *buf, size_t len, size_t *o, const char *v)
{
	int n = field(v, buf + *o, len - *o, false);

	if (n < 0)
		return n;
	*o += (size_t)n;
	return 0;
}

/* Free text is always quoted: it may hold anything. */
static int append_text(char *buf, size_t len, size_t *o, const char *v)
{
	int n = field(v, buf + *o, len - *o, true);

	if (n < 0)
		return n;
	*o += (size_t)n;
	return 0;
}

static int c8y_format(const struct eb_sample *s, char *buf, size_t len)
{
	char num[64], when[40];
	size_t o = 0;
	int r;

	if (!isfinite(s->value))
		return -EDOM;
	c8y_format_value(s->value, num, sizeof(num));
	r = c8y_format_time(s->time_ms, when, sizeof(when));
	if (r < 0)
		return r;
	if ((r = append(buf, len, &o, "200,")) < 0 ||
	    (r = append_field(buf, len, &o, s->meta->fragment)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append_field(buf, len, &o, s->meta->series)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append(buf, len, &o, num)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append_field(buf, len, &o, s->meta->unit)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append(buf, len, &o, when)) < 0)
		return r;
	return (int)o;
}

static unsigned required_interval(const struct eb_config *c)
{
	uint64_t max_ms = 0;

	if (c->cloud.required_interval_min)
		return c->cloud.required_interval_min;
	/* Default: 10 minutes, or twice the slowest sensor if longer. */
	for (size_t i = 0; i < c->n_sensor; i++)
		if (c->sensor[i].interval_ms > max_ms)
			max_ms = c->sensor[i].interval_ms;
	max_ms = (2 * max_ms + 59999) / 60000;
	return max_ms > 10 ? (unsigned)max_ms : 10;
}

static int c8y_bootstrap(const struct eb_config *c, const char *version,
			 char *buf, size_t len)
{
	char num[16];
	size_t o = 0;
	int r;

	snprintf(num, sizeof(num), "%u", required_interval(c));
	if ((r = append(buf, len, &o, "100,")) < 0 ||
	    (r = append_field(buf, len, &o, c->gateway.name)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append_field(buf, len, &o, c->gateway.type)) < 0 ||
	    (r = append(buf, len, &o, "\n110,")) < 0 ||
	    (r = append_field(buf, len, &o, c->gateway.id)) < 0 ||
	    (r = append(buf, len, &o, ",edgebridge,")) < 0 ||
	    (r = append_field(buf, len, &o, version)) < 0 ||
	    (r = append(buf, len, &o, "\n117,")) < 0 ||
	    (r = append(buf, len, &o, num)) < 0)
		return r;
	return (int)o;
}

/* 400 creates an event; 301..304 an alarm (critical, major, minor,
 * warning), which the platform keeps active and de-duplicates by type. */
static const char *template_of(const char *severity)
{
	static const struct {
		const char *severity, *tpl;
	} t[] = {
		{ "CRITICAL", "301," },
		{ "MAJOR", "302," },
		{ "MINOR", "303," },
		{ "WARNING", "304," },
	};

	for (size_t i = 0; severity && i < EB_ARRAY_SIZE(t); i++)
		if (!strcmp(severity, t[i].severity))
			return t[i].tpl;
	return "400,";
}

static int c8y_format_event(const char *type, const char *severity,
			    const char *text, int64_t time_ms, char *buf,
			    size_t len)
{
	char when[40];
	size_t o = 0;
	int r;

	/* 306 clears the active alarm of that type */
	if (severity && !strcmp(severity, "CLEARED")) {
		if ((r = append(buf, len, &o, "306,")) < 0 ||
		    (r = append_field(buf, len, &o, type)) < 0)
			return r;
		return (int)o;
	}
	r = c8y_format_time(time_ms, when, sizeof(when));
	if (r < 0)
		return r;
	if ((r = append(buf, len, &o, template_of(severity))) < 0 ||
	    (r = append_field(buf, len, &o, type)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append_text(buf, len, &o, text)) < 0 ||
	    (r = append(buf, len, &o, ",")) < 0 ||
	    (r = append(buf, len, &o, when)) < 0)
		return r;
	return (int)o;
}

const struct cloud_profile profile_cumulocity = {
	.name = "cumulocity",
	.uplink_topic = "s/us",
	.max_payload = C8Y_MAX_PAYLOAD,
	/* Cumulocity's own example of a last will (static template 400) */
	.will_payload = "400,c8y_ConnectionEvent,\"Device connection was "
			"lost.\"",
	.batch_open = "",
	.batch_sep = "\n",
	.batch_close = "",
	.bootstrap = c8y_bootstrap,
	.format = c8y_format,
	.format_event = c8y_format_event,
};
