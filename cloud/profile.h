/* SPDX-License-Identifier: MIT */
/*
 * A cloud profile: how one platform wants its messages.  The uplink in
 * cloud.c is written against this table only; adding a platform means one
 * file and one entry in profile_find().
 */
#ifndef EB_PROFILE_H
#define EB_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/sample.h"
#include "../config/config.h"

struct store_row;

struct cloud_profile {
	const char *name;
	const char *uplink_topic; /* where samples are published */
	size_t max_payload;	  /* platform's publish limit in bytes */
	/* A platform that tells each session its own limit may raise it at
	 * run time up to this (cloud_set_max_payload()); 0: max_payload is
	 * fixed. */
	size_t max_payload_cap;
	/* where the bootstrap message goes (NULL: uplink_topic) */
	const char *bootstrap_topic;
	/* the last will: what the broker says when we vanish (NULL: none) */
	const char *will_payload;
	/* A batch is open + rec (sep rec)* + close. */
	const char *batch_open, *batch_sep, *batch_close;
	/* The message published on every connect, or 0 bytes for none.
	 * Returns its length, or -ENOSPC. */
	int (*bootstrap)(const struct eb_config *c, const char *version,
			 char *buf, size_t len);
	/* One sample as one record.  Returns its length, -ENOSPC when it
	 * does not fit, -EDOM when it cannot be expressed (NaN). */
	int (*format)(const struct eb_sample *s, char *buf, size_t len);
	/* A platform event (severity "" or NULL) or alarm (CRITICAL, MAJOR,
	 * MINOR, WARNING) with a type, free text and time, as one record. */
	int (*format_event)(const char *type, const char *severity,
			    const char *text, int64_t time_ms, char *buf,
			    size_t len);
	/* Optional: packs rows itself, where records merge (samples of one
	 * timestamp in one object).  Same contract as profile_pack(), with
	 * the session's limit instead of max_payload.  NULL: open + rec
	 * (sep rec)* + close of format(). */
	size_t (*pack)(const struct cloud_profile *p, size_t limit,
		       const struct store_row *rows, size_t n, char *buf,
		       size_t *len, bool *bad);
};

const struct cloud_profile *profile_find(const char *name);

/*
 * Packs rows, in order, into one payload of at most p->max_payload bytes in
 * buf (which holds max_payload + 1).  Returns how many rows it consumed;
 * *len is the payload size (0 if none could be formatted).  bad[i] is set
 * for a consumed row that can never be formatted: the caller sets it
 * aside so it cannot block the queue.
 */
size_t profile_pack(const struct cloud_profile *p, const struct store_row *rows,
		    size_t n, char *buf, size_t *len, bool *bad);
/* The same with another limit (buf holds limit + 1). */
size_t profile_pack_limit(const struct cloud_profile *p, size_t limit,
			  const struct store_row *rows, size_t n, char *buf,
			  size_t *len, bool *bad);

extern const struct cloud_profile profile_cumulocity;
extern const struct cloud_profile profile_thingsboard;

/* Cumulocity helpers, exported for the unit tests. */
int c8y_format_time(int64_t time_ms, char *buf, size_t len);
int c8y_field(const char *value, char *buf, size_t len);
/* A finite value as SmartREST and the REST API get it ("%.15g"). */
int c8y_format_value(double v, char *buf, size_t len);

#endif
