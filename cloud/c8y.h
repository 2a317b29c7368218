/* SPDX-License-Identifier: MIT */
/*
 * What Cumulocity offers beyond the SmartREST uplink, as companions of the
 * MQTT connection (struct cloud_ext):
 *
 *   c8y_token.c  the JWT: asked for on s/uat, answered on s/dat as
 *                "71,<jwt>", renewed after half its lifetime
 *   c8y_bulk.c   a big backlog drained over HTTPS with that JWT
 *                (POST /measurement/measurements), while live samples keep
 *                going over MQTT
 *   c8y_ops.c    operations from s/ds (restart, configuration, relay) and
 *                the platform's error lines on s/e
 */
#ifndef EB_C8Y_H
#define EB_C8Y_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../config/config.h"
#include "../daemon/loop.h"
#include "../store/store.h"
#include "cloud.h"

/* ---- token ---------------------------------------------------------------- */

struct c8y_token;

struct c8y_token_opts {
	uint64_t timeout_ms; /* wait for an s/dat answer */
	bool fallback;	     /* POST token_url over mTLS when s/uat is mute */
	const char *token_url;
	struct https *mtls; /* for the fallback; may be NULL */
	eb_report_fn report;
};

struct c8y_token *c8y_token_new(struct loop *loop, struct cloud *cloud,
				const struct c8y_token_opts *o,
				struct eb_err *err);
struct c8y_token *c8y_token_free(struct c8y_token *t);
/* Someone needs a token: fetch one if there is none. */
void c8y_token_want(struct c8y_token *t);
/* The current token, or NULL when there is no valid one. */
const char *c8y_token_get(const struct c8y_token *t);
/* The platform refused it (HTTP 401): forget it and fetch a new one. */
void c8y_token_rejected(struct c8y_token *t);
/* Told when a new token arrived. */
void c8y_token_on_new(struct c8y_token *t, void (*fn)(void *ud), void *ud);

struct c8y_token_stats {
	uint64_t requests, received, renewals, malformed, fallbacks;
};
void c8y_token_get_stats(const struct c8y_token *t, struct c8y_token_stats *s);

/* ---- bulk drain ------------------------------------------------------------ */

struct c8y_bulk;

struct c8y_bulk *c8y_bulk_new(struct loop *loop, const struct eb_config *cfg,
			      struct store *st, struct c8y_token *tok,
			      struct https *h, eb_report_fn report,
			      struct eb_err *err);
struct c8y_bulk *c8y_bulk_free(struct c8y_bulk *b);
/* Samples were stored: start a drain when the backlog is big enough. */
void c8y_bulk_kick(struct c8y_bulk *b);
/* Told after rows were delivered (room in the store). */
void c8y_bulk_on_acked(struct c8y_bulk *b, void (*fn)(void *ud), void *ud);
bool c8y_bulk_idle(const struct c8y_bulk *b);

struct c8y_bulk_stats {
	bool active;
	uint64_t posts, rows_sent, rows_acked, rows_quarantined;
	uint64_t failures, drains;
};
void c8y_bulk_get_stats(const struct c8y_bulk *b, struct c8y_bulk_stats *s);

/* ---- operations ------------------------------------------------------------ */

struct c8y_ops;

/* What the daemon does for an operation.  Each returns 0, or -errno with a
 * reason in why (sent to the platform as the failure reason). */
struct c8y_ops_host {
	/* restart: called once 501 is acknowledged; the daemon exits or runs
	 * restart_command */
	int (*restart)(void *ud, char *why, size_t len);
	/* apply a configuration text (validated, written, reloaded) */
	int (*configure)(void *ud, const char *text, char *why, size_t len);
	/* drive the relay output: closed = true for CLOSED */
	int (*relay)(void *ud, bool closed, char *why, size_t len);
	void *ud;
};

struct c8y_ops *c8y_ops_new(struct loop *loop, const struct eb_config *cfg,
			    struct cloud *cloud, const struct c8y_ops_host *h,
			    eb_report_fn report, struct eb_err *err);
struct c8y_ops *c8y_ops_free(struct c8y_ops *o);
/* Nothing waits to be reported (a shutdown may go on). */
bool c8y_ops_idle(const struct c8y_ops *o);

/*
 * One SmartREST line split into fields ("..." quoting, "" for a quote).
 * Returns the number of fields (at most max), or -EINVAL for a malformed
 * line.  Fields point into buf (at least len + 1 bytes).  Pure, for the
 * fuzzers.
 */
int c8y_split_line(const char *line, size_t len, char *buf, char **fields,
		   int max);

#endif
