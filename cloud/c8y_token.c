/* SPDX-License-Identifier: MIT */
/*
 * The JWT for Cumulocity's REST API, fetched over the MQTT connection.
 *
 * Why it works this way:
 * - s/dat is subscribed on every connect before anything is published to
 *   s/uat: MQTT keeps the order of one client's packets, so the answer
 *   cannot overtake the subscription.
 * - The platform hands out a new token only after half of the old one's
 *   lifetime; asking earlier returns the same token.  So the renewal is
 *   timed at half-life (plus a second), measured on the monotonic clock
 *   from when the token arrived, with the lifetime taken from the token's
 *   own iat/exp: the device clock may be wrong, the difference is not.
 * - An unanswered request is retried with backoff; after two of them, if
 *   configured, the token is fetched over mTLS from the REST endpoint.
 * - The token is a secret: it is never logged, and the old copy is wiped
 *   when a new one replaces it.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "c8y.h"
#include "https.h"
#include "jwt.h"

#define EXPIRY_MARGIN_MS 10000

enum state { T_IDLE, T_ASKED, T_WAIT_RETRY };

struct c8y_token {
	struct loop *loop;
	struct cloud *cloud;
	struct c8y_token_opts o;
	char *token;
	size_t token_len;
	uint64_t valid_until; /* monotonic ms */
	uint64_t renew_at;
	bool wanted;
	enum state state;
	unsigned unanswered; /* requests in a row without an answer */
	bool fallback_busy;
	struct backoff backoff;
	struct loop_timer *timer; /* answer timeout / retry / renewal */
	void (*on_new)(void *ud);
	void *on_new_ud;
	struct c8y_token_stats stats;
};

#define report(x, l, ...) EB_REPORT((x)->o.report, l, "token", __VA_ARGS__)

static void wipe(struct c8y_token *t)
{
	if (t->token) {
		OPENSSL_cleanse(t->token, t->token_len);
		free(t->token);
	}
	t->token = NULL;
	t->token_len = 0;
	t->valid_until = 0;
}

static void arm(struct c8y_token *t)
{
	uint64_t at = 0;

	if (t->state == T_ASKED || t->state == T_WAIT_RETRY)
		return; /* the timer already runs for those */
	if (t->token)
		at = t->renew_at;
	if (at)
		loop_timer_arm(t->timer, at);
	else
		loop_timer_disarm(t->timer);
}

static void fallback(struct c8y_token *t);

static void ask(struct c8y_token *t)
{
	int r;

	if (!cloud_connected(t->cloud)) {
		t->state = T_IDLE; /* asked again on connect */
		if (t->o.fallback && t->unanswered >= 2)
			fallback(t);
		return;
	}
	r = cloud_publish(t->cloud, "s/uat", "", 0, NULL, NULL);
	if (r < 0) {
		report(t, EB_LOG_WARNING, "cannot publish to s/uat: %s",
		       strerror(-r));
		t->state = T_WAIT_RETRY;
		loop_timer_arm_in(t->timer,
				  backoff_next(&t->backoff, backoff_random()));
		return;
	}
	t->stats.requests++;
	t->state = T_ASKED;
	loop_timer_arm_in(t->timer, t->o.timeout_ms);
}

/* A token arrived (s/dat or the fallback).  0 or -EINVAL. */
static int accept_token(struct c8y_token *t, const char *tok, size_t len,
			const char *via)
{
	struct jwt_claims c;
	char why[128];
	int64_t life_s, now_s = (int64_t)time(NULL);
	uint64_t now = eb_now_ms(), life_ms;
	bool same;
	char *copy;

	if (jwt_parse(tok, len, &c, why, sizeof(why)) < 0) {
		t->stats.malformed++;
		report(t, EB_LOG_WARNING,
		       "ignored a malformed token from %s: %s", via, why);
		return -EINVAL;
	}
	/* lifetime per the token; without iat, what is left of it now */
	life_s = c.iat ? c.exp - c.iat : c.exp - now_s;
	if (life_s <= 0) {
		t->stats.malformed++;
		report(t, EB_LOG_WARNING,
		       "ignored a token from %s that has already expired", via);
		return -EINVAL;
	}
	life_ms = (uint64_t)life_s * 1000;
	same = t->token && t->token_len == len && !memcmp(t->token, tok, len);
	copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, tok, len);
	copy[len] = '\0';
	wipe(t);
	t->token = copy;
	t->token_len = len;
	t->valid_until = now + (life_ms > 2 * EXPIRY_MARGIN_MS
					? life_ms - EXPIRY_MARGIN_MS
					: life_ms / 2);
	/* new tokens come after half-life; a second later to be sure */
	t->renew_at = now + life_ms / 2 + 1000;
	t->state = T_IDLE;
	t->unanswered = 0;
	backoff_reset(&t->backoff);
	t->stats.received++;
	if (same) {
		report(t, EB_LOG_DEBUG, "the platform returned the same token");
	} else {
		report(t, EB_LOG_INFO,
		       "new access token via %s: valid for %lld s, renewed in "
		       "%llu s",
		       via, (long long)life_s,
		       (unsigned long long)(life_ms / 2 + 1000) / 1000);
		if (t->on_new)
			t->on_new(t->on_new_ud);
	}
	arm(t);
	return 0;
}

static void on_fallback(void *ud, const struct https_resp *r)
{
	struct c8y_token *t = ud;
	json_t *o, *tok;
	json_error_t je;

	t->fallback_busy = false;
	if (r->status != 200) {
		report(t, EB_LOG_WARNING, "token fallback %s failed: %s%ld",
		       t->o.token_url, r->status ? "HTTP " : r->error,
		       r->status);
		return;
	}
	o = json_loadb(r->body, r->len, 0, &je);
	tok = json_object_get(o, "accessToken");
	if (!json_is_string(tok))
		report(t, EB_LOG_WARNING,
		       "token fallback: the answer has no accessToken");
	else
		accept_token(t, json_string_value(tok), json_string_length(tok),
			     "the mTLS token endpoint");
	json_decref(o);
}

static void fallback(struct c8y_token *t)
{
	static const char *const hdrs[] = { "Accept: application/json", NULL };

	if (!t->o.fallback || !t->o.mtls || t->fallback_busy)
		return;
	if (https_request(t->o.mtls, "POST", t->o.token_url, hdrs, NULL, "", 0,
			  on_fallback, t) == 0) {
		t->fallback_busy = true;
		t->stats.fallbacks++;
		report(t, EB_LOG_NOTICE,
		       "s/uat did not answer: asking %s over mTLS",
		       t->o.token_url);
	}
}

static void on_timer(struct loop *l, struct loop_timer *tm, void *data)
{
	struct c8y_token *t = data;

	(void)l;
	(void)tm;
	switch (t->state) {
	case T_ASKED: {
		uint64_t d = backoff_next(&t->backoff, backoff_random());

		t->unanswered++;
		if (t->unanswered == 1 || t->unanswered % 10 == 0)
			report(t, EB_LOG_WARNING,
			       "no answer on s/dat to the token request "
			       "within %llu s (%u in a row); asking again in "
			       "%llu s",
			       (unsigned long long)t->o.timeout_ms / 1000,
			       t->unanswered, (unsigned long long)d / 1000);
		if (t->unanswered >= 2)
			fallback(t);
		t->state = T_WAIT_RETRY;
		loop_timer_arm_in(t->timer, d);
		return;
	}
	case T_WAIT_RETRY:
		t->state = T_IDLE;
		ask(t);
		return;
	case T_IDLE:
		if (t->token && eb_now_ms() >= t->renew_at) {
			t->stats.renewals++;
			ask(t);
		}
		return;
	}
}

static void on_connected(void *ud)
{
	struct c8y_token *t = ud;

	cloud_subscribe(t->cloud, "s/dat");
	if (t->wanted && (!t->token || eb_now_ms() >= t->renew_at) &&
	    t->state != T_WAIT_RETRY)
		ask(t);
}

static void on_disconnected(void *ud)
{
	struct c8y_token *t = ud;

	if (t->state == T_ASKED) {
		/* asked again on the next connect */
		loop_timer_disarm(t->timer);
		t->state = T_IDLE;
		arm(t);
	}
}

static void on_message(void *ud, const char *topic, const char *payload,
		       size_t len)
{
	struct c8y_token *t = ud;
	const char *tok;
	size_t tok_len;
	char why[128];

	if (strcmp(topic, "s/dat"))
		return;
	if (c8y_parse_token_line(payload, len, &tok, &tok_len, why,
				 sizeof(why)) < 0) {
		t->stats.malformed++;
		/* the payload may hold a token: say how long, not what */
		report(t, EB_LOG_WARNING,
		       "ignored a malformed message on s/dat (%zu bytes): %s",
		       len, why);
		return;
	}
	if (t->state == T_ASKED)
		loop_timer_disarm(t->timer);
	if (accept_token(t, tok, tok_len, "s/uat") < 0 && t->state == T_ASKED)
		loop_timer_arm_in(t->timer, t->o.timeout_ms);
}

static const struct cloud_ext ext = {
	.connected = on_connected,
	.disconnected = on_disconnected,
	.message = on_message,
};

struct c8y_token *c8y_token_new(struct loop *loop, struct cloud *cloud,
				const struct c8y_token_opts *o,
				struct eb_err *err)
{
	struct c8y_token *t = calloc(1, sizeof(*t));

	if (!t) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	t->loop = loop;
	t->cloud = cloud;
	t->o = *o;
	backoff_init(&t->backoff, 2000, 300000);
	t->timer = loop_timer_new(loop, on_timer, t);
	if (!t->timer || cloud_add_ext(cloud, &ext, t) < 0) {
		eb_errf(err, -ENOMEM, "cannot set up the token fetcher");
		return c8y_token_free(t);
	}
	return t;
}

struct c8y_token *c8y_token_free(struct c8y_token *t)
{
	if (!t)
		return NULL;
	wipe(t);
	loop_timer_free(t->timer);
	free(t);
	return NULL;
}

void c8y_token_want(struct c8y_token *t)
{
	if (t->wanted)
		return;
	t->wanted = true;
	if (!t->token && t->state == T_IDLE)
		ask(t);
}

const char *c8y_token_get(const struct c8y_token *t)
{
	if (!t->token || eb_now_ms() >= t->valid_until)
		return NULL;
	return t->token;
}

void c8y_token_rejected(struct c8y_token *t)
{
	wipe(t);
	if (t->state == T_IDLE) {
		loop_timer_disarm(t->timer);
		ask(t);
	}
}

void c8y_token_on_new(struct c8y_token *t, void (*fn)(void *ud), void *ud)
{
	t->on_new = fn;
	t->on_new_ud = ud;
}

void c8y_token_get_stats(const struct c8y_token *t, struct c8y_token_stats *s)
{
	*s = t->stats;
}
