/* SPDX-License-Identifier: MIT */
/*
 * Cumulocity over MQTT with SmartREST 2.0 static templates:
 *   100,<name>,<type>              create the device (no-op if it exists)
 *   110,<serial>,<model>,<rev>     c8y_Hardware
 *   117,<minutes>                  required interval (availability)
 *   200,<fragment>,<series>,<value>,<unit>,<time>   one measurement
 * Several lines go in one publish, separated by '\n', up to the platform's
 * 16184-byte limit.
 *
 * Field escaping follows the SmartREST CSV rules: a value containing a
 * comma, a double quote, a line break or leading/trailing blanks is put in
 * double quotes, and a double quote inside is preceded by a backslash.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "profile.h"

#define C8Y_MAX_PAYLOAD 16184

int c8y_format_time(int64_t time_ms, char *buf, size_t len)
{
	time_t sec = (time_t)(time_ms / 1000);
	int ms = (int)(time_ms % 1000);
	struct tm tm;
	int n;

	if (ms < 0) {
		ms += 1000;
		sec -= 1;
	}
	if (!gmtime_r(&sec, &tm))
		return -EINVAL;
	n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ms);
	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int c8y_field(const char *value, char *buf, size_t len)
{
	size_t vlen = strlen(value), o = 0;
	bool quote =
		strpbrk(value, ",\"\r\n") != NULL ||
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
			buf[o++] = '\\';
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
	int n = c8y_field(v, buf + *o, len - *o);

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
	snprintf(num, sizeof(num), "%.15g", s->value);
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

const struct cloud_profile profile_cumulocity = {
	.name = "cumulocity",
	.uplink_topic = "s/us",
	.max_payload = C8Y_MAX_PAYLOAD,
	.batch_open = "",
	.batch_sep = "\n",
	.batch_close = "",
	.bootstrap = c8y_bootstrap,
	.format = c8y_format,
};

const struct cloud_profile *profile_find(const char *name)
{
	if (!strcmp(name, profile_cumulocity.name))
		return &profile_cumulocity;
	return NULL;
}
