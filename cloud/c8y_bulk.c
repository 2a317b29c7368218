/* SPDX-License-Identifier: MIT */
/*
 * Draining a backlog over HTTPS: POST /measurement/measurements with the
 * JWT, hundreds of measurements per request, a few requests in flight.
 *
 * Why it works this way:
 * - Only the backlog goes this way (rows stored before the MQTT connection
 *   came up, and rows released after a failure); live samples keep their
 *   low latency over MQTT.  The store leases each batch to the drain
 *   (STORE_BULK), so no row travels both ways, and a reconnect of MQTT does
 *   not touch a batch in flight.
 * - 2xx deletes the batch; 401 fetches a new token once, then backs off;
 *   429 and 5xx (and no answer) back off, honouring Retry-After; 413 halves
 *   the batch; 403 and 404 look the device up again; any other 4xx is the
 *   batch's fault: it is quarantined (kept aside, counted), never retried
 *   forever.
 * - When HTTPS does not work for a while (no token, endpoint down) the
 *   backlog is handed back to MQTT, so it drains anyway, and HTTPS is tried
 *   again later.
 * - The body is written by hand from pieces escaped once per sensor by
 *   jansson: a million measurements are not a million JSON trees.
 * - The managed-object id (the measurement's source) is looked up once
 *   with the JWT and cached in state_dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "c8y.h"
#include "https.h"
#include "profile.h"

#define MAX_PARALLEL 16
#define GIVE_UP_MS (120 * 1000) /* no success this long: back to MQTT */
#define RETRY_BULK_MS (600 * 1000)

struct post {
	bool busy;
	struct store_lease lease;
	size_t rows;
	char *body;
	struct c8y_bulk *b;
};

struct prefix {
	const struct sensor_meta *meta;
	char *text; /* "type":"..","frag":{"series":{"unit":"..","value": */
};

struct c8y_bulk {
	struct loop *loop;
	struct store *st;
	struct c8y_token *tok;
	/* from the configuration (a reload frees it) */
	char *gateway_id;
	size_t max_body;
	uint64_t threshold;
	struct https *h;
	eb_report_fn report;
	char *url, *id_url, *mo_file;
	char mo_id[32];
	bool looking_up;
	bool active;
	bool handed_back; /* HTTPS gave up: MQTT drains for now */
	unsigned batch;
	struct post posts[MAX_PARALLEL];
	unsigned parallel, inflight;
	struct store_row *rows;
	bool *bad; /* rows[i] cannot be expressed */
	struct prefix *prefixes;
	size_t n_prefixes;
	struct backoff backoff;
	uint64_t pause_until;
	uint64_t trying_since; /* first failure since the last success */
	unsigned unauthorized; /* 401s in a row */
	uint64_t drain_start;
	uint64_t drain_rows;
	struct loop_timer *timer;
	void (*acked_fn)(void *ud);
	void *acked_ud;
	struct c8y_bulk_stats stats;
};

#define report(x, l, ...) EB_REPORT((x)->report, l, "bulk", __VA_ARGS__)

static void pump(struct c8y_bulk *b);

/* ---- the managed-object id ------------------------------------------------ */

static void load_mo_id(struct c8y_bulk *b)
{
	char buf[160], dev[96], id[32];
	FILE *f = fopen(b->mo_file, "re");

	if (!f)
		return;
	/* "<gateway id> <managed object id>": stale when the id changed */
	if (fgets(buf, sizeof(buf), f) &&
	    sscanf(buf, "%95s %31s", dev, id) == 2 &&
	    !strcmp(dev, b->gateway_id) &&
	    strspn(id, "0123456789") == strlen(id))
		snprintf(b->mo_id, sizeof(b->mo_id), "%s", id);
	fclose(f);
}

static void save_mo_id(struct c8y_bulk *b)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "%s %s\n", b->gateway_id,
			 b->mo_id);

	/* a cache: if it cannot be written, the next start looks it up */
	if (n > 0 && (size_t)n < sizeof(line))
		eb_write_file(b->mo_file, line, (size_t)n, 0644);
}

static void on_identity(void *ud, const struct https_resp *r)
{
	struct c8y_bulk *b = ud;
	json_t *o = NULL, *id;
	json_error_t je;

	b->looking_up = false;
	if (r->status == 401) {
		c8y_token_rejected(b->tok);
		return;
	}
	if (r->status == 200)
		o = json_loadb(r->body, r->len, 0, &je);
	id = json_object_get(json_object_get(o, "managedObject"), "id");
	if (json_is_string(id) && json_string_length(id) < sizeof(b->mo_id) &&
	    strspn(json_string_value(id), "0123456789") ==
		    json_string_length(id) &&
	    json_string_length(id)) {
		snprintf(b->mo_id, sizeof(b->mo_id), "%s",
			 json_string_value(id));
		save_mo_id(b);
		report(b, EB_LOG_INFO, "this device is managed object %s",
		       b->mo_id);
	} else {
		uint64_t d = backoff_next(&b->backoff, backoff_random());

		report(b, EB_LOG_WARNING,
		       "cannot look this device up at %s: %s%ld; again in "
		       "%llu s",
		       b->id_url, r->status ? "HTTP " : r->error, r->status,
		       (unsigned long long)d / 1000);
		b->pause_until = eb_now_ms() + d;
		loop_timer_arm(b->timer, b->pause_until);
	}
	json_decref(o);
	pump(b);
}

static void lookup(struct c8y_bulk *b, const char *token)
{
	static const char *const hdrs[] = { "Accept: application/json", NULL };

	if (b->looking_up)
		return;
	if (https_request(b->h, "GET", b->id_url, hdrs, token, NULL, 0,
			  on_identity, b) == 0)
		b->looking_up = true;
}

/* ---- the body --------------------------------------------------------------- */

static int append_json_string(char *buf, size_t cap, size_t *o, const char *s)
{
	json_t *j = json_string(s);
	size_t n;

	if (!j)
		return -EINVAL; /* not UTF-8 */
	n = json_dumpb(j, buf + *o, cap - *o, JSON_ENCODE_ANY);
	json_decref(j);
	if (n == 0 || *o + n >= cap)
		return -ENOSPC;
	*o += n;
	return 0;
}

static const char *prefix_of(struct c8y_bulk *b, const struct sensor_meta *m)
{
	char buf[1024];
	size_t o = 0;
	struct prefix *p;

	for (size_t i = 0; i < b->n_prefixes; i++)
		if (b->prefixes[i].meta == m)
			return b->prefixes[i].text;
			/* "type":"F","F":{"S":{"unit":"U","value": */
#define LIT(s)                                                                 \
	do {                                                                   \
		if (o + sizeof(s) > sizeof(buf))                               \
			return NULL;                                           \
		memcpy(buf + o, s, sizeof(s) - 1);                             \
		o += sizeof(s) - 1;                                            \
	} while (0)
	LIT("\"type\":");
	if (append_json_string(buf, sizeof(buf), &o, m->fragment) < 0)
		return NULL;
	LIT(",");
	if (append_json_string(buf, sizeof(buf), &o, m->fragment) < 0)
		return NULL;
	LIT(":{");
	if (append_json_string(buf, sizeof(buf), &o, m->series) < 0)
		return NULL;
	LIT(":{");
	if (m->unit && *m->unit) {
		LIT("\"unit\":");
		if (append_json_string(buf, sizeof(buf), &o, m->unit) < 0)
			return NULL;
		LIT(",");
	}
	LIT("\"value\":");
#undef LIT
	buf[o] = '\0';
	p = realloc(b->prefixes, (b->n_prefixes + 1) * sizeof(*p));
	if (!p)
		return NULL;
	b->prefixes = p;
	p = &p[b->n_prefixes];
	p->text = strdup(buf);
	if (!p->text)
		return NULL;
	p->meta = m;
	b->n_prefixes++;
	return p->text;
}

/*
 * rows[0..n) as a measurement collection, at most max_body bytes.  Returns
 * the body (malloc'd) and sets *used to the rows it holds (the first ones);
 * bad[i] marks rows that cannot be expressed (non-finite, bad UTF-8).
 */
static char *build_body(struct c8y_bulk *b, char *body, size_t n, size_t *used,
			size_t *len, bool *bad)
{
	size_t cap = b->max_body, o = 0;
	bool first = true;

	*used = 0;
	o = (size_t)snprintf(body, cap, "{\"measurements\":[");
	for (size_t i = 0; i < n; i++) {
		const struct eb_sample *s = &b->rows[i].s;
		const char *pre = prefix_of(b, s->meta);
		char num[64], when[40], item[1400];
		int k;

		bad[i] = false;
		if (!pre || !isfinite(s->value) ||
		    c8y_format_value(s->value, num, sizeof(num)) < 0 ||
		    c8y_format_time(s->time_ms, when, sizeof(when)) < 0) {
			bad[i] = true;
			*used = i + 1;
			continue;
		}
		k = snprintf(
			item, sizeof(item),
			"%s{\"source\":{\"id\":\"%s\"},\"time\":\"%s\",%s%s}}}",
			first ? "" : ",", b->mo_id, when, pre, num);
		if (k < 0 || (size_t)k >= sizeof(item))
			bad[i] = true;
		else if (o + (size_t)k + 3 > cap)
			break; /* full: the rest goes in the next post */
		else {
			memcpy(body + o, item, (size_t)k);
			o += (size_t)k;
			first = false;
		}
		*used = i + 1;
	}
	memcpy(body + o, "]}", 3);
	*len = o + 2;
	if (first)
		return NULL; /* nothing expressible */
	return body;
}

/* ---- the drain -------------------------------------------------------------- */

static void set_active(struct c8y_bulk *b, bool on)
{
	if (b->active == on)
		return;
	b->active = on;
	if (!on)
		store_reserve_backlog(b->st, false);
	/* on: reserved once a post can go (token and device id known);
	 * until then the uplink keeps draining over MQTT */
	if (on) {
		b->drain_start = eb_now_ms();
		b->drain_rows = 0;
		b->trying_since = 0;
		report(b, EB_LOG_NOTICE,
		       "draining a backlog of about %llu samples over HTTPS",
		       (unsigned long long)store_backlog(b->st));
	}
}

static void hand_back(struct c8y_bulk *b, const char *why)
{
	report(b, EB_LOG_WARNING,
	       "HTTPS has not worked for %llu s (%s): the backlog goes over "
	       "MQTT; HTTPS is tried again in %llu s",
	       (unsigned long long)GIVE_UP_MS / 1000, why,
	       (unsigned long long)RETRY_BULK_MS / 1000);
	b->handed_back = true;
	set_active(b, false);
	b->pause_until = eb_now_ms() + RETRY_BULK_MS;
	loop_timer_arm(b->timer, b->pause_until);
}

static void failed(struct c8y_bulk *b, uint64_t at_least_ms, const char *why)
{
	uint64_t d = backoff_next(&b->backoff, backoff_random());
	uint64_t now = eb_now_ms();

	if (at_least_ms > d)
		d = at_least_ms;
	b->stats.failures++;
	if (!b->trying_since)
		b->trying_since = now;
	if (now + d > b->pause_until)
		b->pause_until = now + d;
	loop_timer_arm(b->timer, b->pause_until);
	if (b->active && now - b->trying_since >= GIVE_UP_MS) {
		hand_back(b, why);
		return;
	}
	report(b, EB_LOG_WARNING, "bulk post failed: %s; next in %llu ms", why,
	       (unsigned long long)(b->pause_until - now));
}

static void on_posted(void *ud, const struct https_resp *r)
{
	struct post *p = ud;
	struct c8y_bulk *b = p->b;
	char why[256];

	p->busy = false;
	b->inflight--;
	if (r->status >= 200 && r->status < 300) {
		store_ack(b->st, &p->lease);
		b->stats.rows_acked += p->rows;
		b->drain_rows += p->rows;
		b->unauthorized = 0;
		b->trying_since = 0;
		backoff_reset(&b->backoff);
		if (b->acked_fn)
			b->acked_fn(b->acked_ud);
		pump(b);
		return;
	}
	if (r->status == 0) {
		store_release(b->st, &p->lease);
		failed(b, 0, r->error);
	} else if (r->status == 401) {
		store_release(b->st, &p->lease);
		/* once: a fresh token; a second 401 in a row: back off */
		if (++b->unauthorized == 1) {
			report(b, EB_LOG_NOTICE,
			       "the platform refused the token (HTTP 401): "
			       "fetching a new one");
			c8y_token_rejected(b->tok);
		} else {
			c8y_token_rejected(b->tok);
			failed(b, 0, "HTTP 401 again with a new token");
		}
	} else if (r->status == 429 || r->status >= 500) {
		store_release(b->st, &p->lease);
		snprintf(why, sizeof(why), "HTTP %ld%s", r->status,
			 r->retry_after_ms ? " (with Retry-After)" : "");
		failed(b, r->retry_after_ms, why);
	} else if (r->status == 413 && b->batch > 1) {
		store_release(b->st, &p->lease);
		b->batch /= 2;
		report(b, EB_LOG_NOTICE,
		       "HTTP 413: the platform wants smaller posts; now %u "
		       "measurements each",
		       b->batch);
	} else if (r->status == 403 || r->status == 404) {
		store_release(b->st, &p->lease);
		b->mo_id[0] = '\0'; /* look it up again */
		unlink(b->mo_file);
		snprintf(why, sizeof(why),
			 "HTTP %ld: not this device's to write; looking the "
			 "device up again",
			 r->status);
		failed(b, 0, why);
	} else {
		uint64_t n = store_quarantine_lease(b->st, &p->lease,
						    "refused by the platform");

		b->stats.rows_quarantined += n;
		report(b, EB_LOG_ERR,
		       "the platform refused %zu measurements with HTTP %ld "
		       "(%.200s): quarantined, %llu so far",
		       p->rows, r->status, r->body,
		       (unsigned long long)b->stats.rows_quarantined);
		if (b->acked_fn)
			b->acked_fn(b->acked_ud);
	}
	pump(b);
}

enum post_result {
	POST_SENT,  /* one more post in flight */
	POST_MORE,  /* rows taken care of without a post: call again */
	POST_EMPTY, /* nothing left to take */
	POST_STOP,  /* no free slot, or it failed: wait for a callback */
};

static enum post_result post_one(struct c8y_bulk *b, const char *token)
{
	struct post *p = NULL;
	size_t n, used, len, nbad = 0;
	char *body;
	static const char *const hdrs[] = {
		"Content-Type: application/"
		"vnd.com.nsn.cumulocity.measurementcollection+json",
		"Accept: application/json", NULL
	};

	for (unsigned i = 0; i < b->parallel; i++)
		if (!b->posts[i].busy) {
			p = &b->posts[i];
			break;
		}
	if (!p)
		return POST_STOP;
	/* one buffer per slot for the daemon's life: a megabyte allocated
	 * and freed per post fragments the heap of a long drain */
	if (!p->body && !(p->body = malloc(b->max_body + 1)))
		return POST_STOP;
	n = store_next_backlog(b->st, b->rows, b->batch);
	if (!n)
		return POST_EMPTY;
	body = build_body(b, p->body, n, &used, &len, b->bad);
	for (size_t i = 0; i < used; i++)
		if (b->bad[i]) {
			store_quarantine(b->st, &b->rows[i]);
			nbad++;
		}
	if (nbad) {
		b->stats.rows_quarantined += nbad;
		report(b, EB_LOG_WARNING,
		       "%zu samples cannot be expressed in JSON: quarantined",
		       nbad);
	}
	if (!body)
		return used > 0 ? POST_MORE : POST_STOP; /* all bad */
	store_lease_as(b->st, STORE_BULK, b->rows, used, &p->lease);
	p->rows = used - nbad;
	p->b = b;
	if (https_request(b->h, "POST", b->url, hdrs, token, body, len,
			  on_posted, p) < 0) {
		store_release(b->st, &p->lease);
		return POST_STOP;
	}
	p->busy = true;
	b->inflight++;
	b->stats.posts++;
	b->stats.rows_sent += p->rows;
	return POST_SENT;
}

static void pump(struct c8y_bulk *b)
{
	const char *token;
	uint64_t now = eb_now_ms();
	enum post_result r;

	if (!b->active)
		return;
	if (now < b->pause_until) {
		loop_timer_arm(b->timer, b->pause_until);
		return;
	}
	token = c8y_token_get(b->tok);
	if (!token) {
		c8y_token_want(b->tok);
		if (!b->trying_since)
			b->trying_since = now;
		else if (now - b->trying_since >= GIVE_UP_MS && !b->inflight) {
			hand_back(b, "no access token");
			return;
		}
		/* woken by the token's arrival; and checked again then */
		loop_timer_arm_in(b->timer, 5000);
		return;
	}
	if (!b->mo_id[0]) {
		lookup(b, token);
		return;
	}
	store_reserve_backlog(b->st, true);
	do
		r = post_one(b, token);
	while (r == POST_SENT || r == POST_MORE);
	if (!b->inflight && r == POST_EMPTY) {
		uint64_t ms = eb_now_ms() - b->drain_start;

		b->stats.drains++;
		report(b, EB_LOG_NOTICE,
		       "backlog drained over HTTPS: %llu samples in "
		       "%llu.%03llu "
		       "s",
		       (unsigned long long)b->drain_rows,
		       (unsigned long long)ms / 1000,
		       (unsigned long long)ms % 1000);
		set_active(b, false);
	}
}

static void on_timer(struct loop *l, struct loop_timer *t, void *data)
{
	struct c8y_bulk *b = data;

	(void)l;
	(void)t;
	if (b->handed_back && eb_now_ms() >= b->pause_until)
		b->handed_back = false;
	c8y_bulk_kick(b);
	pump(b);
}

static void on_token(void *ud)
{
	struct c8y_bulk *b = ud;

	/* a fresh token may clear a 401 pause */
	if (b->unauthorized)
		b->pause_until = 0;
	pump(b);
}

void c8y_bulk_kick(struct c8y_bulk *b)
{
	if (b->active) {
		if (!b->inflight)
			pump(b);
		return;
	}
	if (b->handed_back)
		return;
	if (store_backlog(b->st) < b->threshold)
		return;
	set_active(b, true);
	c8y_token_want(b->tok);
	pump(b);
}

struct c8y_bulk *c8y_bulk_new(struct loop *loop, const struct eb_config *cfg,
			      struct store *st, struct c8y_token *tok,
			      struct https *h, eb_report_fn report_fn,
			      struct eb_err *err)
{
	struct c8y_bulk *b = calloc(1, sizeof(*b));
	const char *base = cfg->cloud.http_url;
	size_t bl;

	if (!b) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	b->loop = loop;
	b->st = st;
	b->gateway_id = strdup(cfg->gateway.id);
	b->max_body = cfg->cloud.bulk_max_body;
	b->threshold = cfg->cloud.bulk_threshold;
	b->tok = tok;
	b->h = h;
	b->report = report_fn;
	b->batch = cfg->cloud.bulk_batch;
	b->parallel = cfg->cloud.bulk_parallel < MAX_PARALLEL
			      ? cfg->cloud.bulk_parallel
			      : MAX_PARALLEL;
	bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	if (asprintf(&b->url, "%.*s/measurement/measurements", (int)bl, base) <
	    0)
		b->url = NULL;
	if (asprintf(&b->id_url, "%.*s/identity/externalIds/c8y_Serial/%s",
		     (int)bl, base, cfg->gateway.id) < 0)
		b->id_url = NULL;
	if (asprintf(&b->mo_file, "%s/c8y-managed-object",
		     cfg->gateway.state_dir) < 0)
		b->mo_file = NULL;
	b->rows = calloc(cfg->cloud.bulk_batch, sizeof(*b->rows));
	b->bad = calloc(cfg->cloud.bulk_batch, sizeof(*b->bad));
	b->timer = loop_timer_new(loop, on_timer, b);
	if (!b->url || !b->id_url || !b->mo_file || !b->rows || !b->bad ||
	    !b->timer || !b->gateway_id) {
		eb_errf(err, -ENOMEM, "out of memory");
		return c8y_bulk_free(b);
	}
	backoff_init(&b->backoff, 1000, 300000);
	load_mo_id(b);
	c8y_token_on_new(tok, on_token, b);
	return b;
}

struct c8y_bulk *c8y_bulk_free(struct c8y_bulk *b)
{
	if (!b)
		return NULL;
	for (unsigned i = 0; i < MAX_PARALLEL; i++)
		free(b->posts[i].body);
	for (size_t i = 0; i < b->n_prefixes; i++)
		free(b->prefixes[i].text);
	free(b->prefixes);
	free(b->rows);
	free(b->bad);
	loop_timer_free(b->timer);
	free(b->url);
	free(b->id_url);
	free(b->mo_file);
	free(b->gateway_id);
	free(b);
	return NULL;
}

void c8y_bulk_on_acked(struct c8y_bulk *b, void (*fn)(void *ud), void *ud)
{
	b->acked_fn = fn;
	b->acked_ud = ud;
}

bool c8y_bulk_idle(const struct c8y_bulk *b)
{
	return b->inflight == 0;
}

void c8y_bulk_get_stats(const struct c8y_bulk *b, struct c8y_bulk_stats *s)
{
	*s = b->stats;
	s->active = b->active;
}
