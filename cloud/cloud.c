/* SPDX-License-Identifier: MIT */
/*
 * Why batches are tracked here: a publish carries one leased run of rows
 * per store lane, so remembering (mid, lease) per publish is enough to
 * acknowledge exactly what the broker confirmed, in whatever order the
 * PUBACKs come.  After a disconnect nothing old is waited for: the
 * transport starts every connection with a fresh libmosquitto instance (no
 * library-side re-sends), the window is emptied, and the store offers the
 * unacknowledged rows again.
 *
 * Live data: a sample is published as soon as it is stored when the window
 * has room (low latency); under backlog the same code packs as many lines
 * as fit into each publish (throughput).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "cloud.h"
#include "profile.h"
#include "transport.h"

#define MAX_ROWS 512
#define MAX_EVENTS 4

struct batch {
	int mid;
	bool is_event;
	int64_t event_id;
	struct store_lease lease;
	size_t rows, len; /* what the publish carried */
};

struct side_pub {
	int mid;
	void (*done)(void *ud, bool ok);
	void *ud;
};

#define MAX_SIDE 32

struct cloud {
	struct loop *loop;
	struct {
		const struct cloud_ext *ops;
		void *ud;
	} ext[CLOUD_MAX_EXT];
	unsigned n_ext;
	struct side_pub side[MAX_SIDE];
	unsigned n_side;
	struct store *st;
	const struct cloud_profile *profile;
	const struct transport_ops *tp;
	struct transport *t;
	eb_report_fn report;
	char *bootstrap;
	size_t bootstrap_len;
	char *buf; /* one payload: buf_cap + 1 bytes */
	size_t buf_cap;
	size_t max_payload; /* this session's limit (<= buf_cap) */
	struct store_row rows[MAX_ROWS];
	bool bad[MAX_ROWS];
	size_t want_rows; /* rows to read per publish, adapted to use */
	/* at most this many rows per publish while a refused payload is
	 * being narrowed down to its row (0: no such limit) */
	size_t row_cap;
	struct batch *win;
	unsigned win_cap, win_n;
	bool pumping;
	bool held; /* a companion waits for the session's limits */
	struct cloud_stats st_;
	void (*acked_fn)(void *ud);
	void *acked_ud;
};

static void pump(struct cloud *c);

static void on_connected(void *ud)
{
	struct cloud *c = ud;
	int mid, r;

	c->st_.connected = true;
	c->st_.connects++;
	c->win_n = 0;
	c->row_cap = 0;
	/* a limit the platform told the last session may not hold now */
	cloud_set_max_payload(c, c->profile->max_payload);
	store_connected(c->st);
	if (c->bootstrap_len) {
		r = c->tp->publish(c->t,
				   c->profile->bootstrap_topic
					   ? c->profile->bootstrap_topic
					   : c->profile->uplink_topic,
				   c->bootstrap, c->bootstrap_len, 1, &mid);
		if (r < 0 && c->report)
			c->report(EB_LOG_WARNING, "cloud",
				  "cannot publish the device bootstrap: %s",
				  strerror(-r));
	}
	for (unsigned i = 0; i < c->n_ext; i++)
		if (c->ext[i].ops->connected)
			c->ext[i].ops->connected(c->ext[i].ud);
	pump(c);
}

static void on_disconnected(void *ud)
{
	struct cloud *c = ud;

	c->st_.connected = false;
	c->held = false;
	c->win_n = 0; /* offered again after the next connect */
	while (c->n_side) {
		struct side_pub p = c->side[--c->n_side];

		if (p.done)
			p.done(p.ud, false);
	}
	for (unsigned i = 0; i < c->n_ext; i++)
		if (c->ext[i].ops->disconnected)
			c->ext[i].ops->disconnected(c->ext[i].ud);
}

static void on_message(void *ud, const char *topic, const void *payload,
		       size_t len)
{
	struct cloud *c = ud;
	char *copy = malloc(len + 1);

	if (!copy)
		return;
	if (len) /* an empty message has no payload pointer */
		memcpy(copy, payload, len);
	copy[len] = '\0';
	for (unsigned i = 0; i < c->n_ext; i++)
		if (c->ext[i].ops->message)
			c->ext[i].ops->message(c->ext[i].ud, topic, copy, len);
	free(copy);
}

static void on_published(void *ud, int mid)
{
	struct cloud *c = ud;

	for (unsigned i = 0; i < c->n_side; i++) {
		struct side_pub p = c->side[i];

		if (p.mid != mid)
			continue;
		c->side[i] = c->side[--c->n_side];
		if (p.done)
			p.done(p.ud, true);
		return;
	}
	for (unsigned i = 0; i < c->win_n; i++) {
		struct batch b = c->win[i];

		if (b.mid != mid)
			continue;
		c->win[i] = c->win[--c->win_n];
		if (b.is_event) {
			store_event_ack(c->st, b.event_id);
		} else {
			store_ack(c->st, &b.lease);
			if (c->acked_fn)
				c->acked_fn(c->acked_ud);
		}
		pump(c);
		return;
	}
	/* the bootstrap, or a PUBACK from before a reconnect */
}

static void quarantine(struct cloud *c, const struct batch *b, const char *why)
{
	/* the store counts them (its quarantined statistic) */
	uint64_t n = store_quarantine_lease(c->st, &b->lease, why);

	if (c->report)
		c->report(EB_LOG_WARNING, "cloud",
			  "%llu samples refused for good (%s): quarantined",
			  (unsigned long long)n, why);
}

/*
 * The server refused one publish, and only it (transport.h).  A payload
 * too large comes back in smaller ones: the session's limit drops to half
 * of it, as a platform's own limit would set it.  A malformed one is
 * narrowed down: its rows come back at most half as many per publish,
 * until the one row that is refused alone is quarantined (counted, kept
 * aside, never blocking the queue).  An event cannot be split: it goes
 * the way of an event that cannot be formatted.
 */
static void on_refused(void *ud, int mid, enum transport_refusal r,
		       const char *why)
{
	struct cloud *c = ud;
	struct batch b;
	unsigned i;

	for (i = 0; i < c->n_side; i++) {
		struct side_pub p = c->side[i];

		if (p.mid != mid)
			continue;
		c->side[i] = c->side[--c->n_side];
		if (c->report)
			c->report(EB_LOG_WARNING, "cloud", "%s", why);
		if (p.done)
			p.done(p.ud, false);
		return;
	}
	for (i = 0; i < c->win_n && c->win[i].mid != mid; i++)
		;
	if (i == c->win_n) {
		if (c->report) /* the bootstrap */
			c->report(EB_LOG_WARNING, "cloud", "%s", why);
		return;
	}
	b = c->win[i];
	c->win[i] = c->win[--c->win_n];
	if (b.is_event) {
		store_event_ack(c->st, b.event_id);
		if (c->report)
			c->report(EB_LOG_WARNING, "cloud",
				  "an event was refused for good (%s): dropped",
				  why);
	} else if (r == TRANSPORT_TOO_LARGE && b.rows > 1 &&
		   b.len / 2 >= CLOUD_MIN_PAYLOAD) {
		store_release(c->st, &b.lease);
		if (b.len / 2 < c->max_payload)
			cloud_set_max_payload(c, b.len / 2);
		if (c->report)
			c->report(EB_LOG_WARNING, "cloud",
				  "%s: %zu bytes per message from now on", why,
				  c->max_payload);
	} else if (r == TRANSPORT_MALFORMED && b.rows > 1) {
		store_release(c->st, &b.lease);
		if (!c->row_cap || b.rows / 2 < c->row_cap)
			c->row_cap = b.rows / 2;
		if (c->report)
			c->report(EB_LOG_WARNING, "cloud",
				  "%s: looking for the refused sample, %zu "
				  "per message",
				  why, c->row_cap);
	} else {
		quarantine(c, &b, why);
		c->row_cap = 0; /* found it */
		if (c->acked_fn)
			c->acked_fn(c->acked_ud); /* space freed */
	}
	pump(c);
}

static const struct transport_handler handler = {
	.connected = on_connected,
	.disconnected = on_disconnected,
	.published = on_published,
	.refused = on_refused,
	.message = on_message,
};

static bool publish(struct cloud *c, const char *payload, size_t len, int *mid)
{
	int r = c->tp->publish(c->t, c->profile->uplink_topic, payload, len, 1,
			       mid);

	if (r < 0 && r != -ENOTCONN && c->report)
		c->report(EB_LOG_WARNING, "cloud", "publish failed: %s",
			  strerror(-r));
	return r == 0;
}

static void pump_events(struct cloud *c)
{
	struct store_event ev[MAX_EVENTS];
	size_t n;

	if (!c->profile->format_event || c->win_n >= c->win_cap)
		return;
	n = store_events(c->st, ev, MAX_EVENTS);
	for (size_t i = 0; i < n && c->win_n < c->win_cap; i++) {
		struct batch *b;
		int len, mid;

		len = c->profile->format_event(ev[i].type, ev[i].severity,
					       ev[i].text, ev[i].time_ms,
					       c->buf, c->max_payload + 1);
		if (len < 0) {
			store_event_ack(c->st, ev[i].id); /* unsendable */
			continue;
		}
		if (!publish(c, c->buf, (size_t)len, &mid))
			return;
		store_event_inflight(c->st, ev[i].id);
		b = &c->win[c->win_n++];
		b->mid = mid;
		b->is_event = true;
		b->event_id = ev[i].id;
		c->st_.events++;
		if (c->report)
			c->report(EB_LOG_NOTICE, "cloud", "event %s: %s",
				  ev[i].type, ev[i].text);
	}
}

static void pump(struct cloud *c)
{
	/* on_published() may run inside mqtt_publish(): no re-entry */
	if (c->pumping)
		return;
	c->pumping = true;
	if (c->tp->connected(c->t) && !c->held)
		pump_events(c);
	while (c->tp->connected(c->t) && !c->held && c->win_n < c->win_cap) {
		size_t n = store_next(c->st, c->rows,
				      c->row_cap && c->row_cap < c->want_rows
					      ? c->row_cap
					      : c->want_rows);
		size_t len, used, bad = 0;
		struct batch *b;
		int mid = 0;

		if (!n)
			break;
		used = profile_pack_limit(c->profile, c->max_payload, c->rows,
					  n, c->buf, &len, c->bad);
		/* read a little more than one publish takes, next time */
		if (used == n)
			c->want_rows = n * 2 < MAX_ROWS ? n * 2 : MAX_ROWS;
		else
			c->want_rows =
				used + 16 < MAX_ROWS ? used + 16 : MAX_ROWS;
		if (c->want_rows < 16)
			c->want_rows = 16;
		for (size_t i = 0; i < used; i++)
			if (c->bad[i]) {
				store_quarantine(c->st, &c->rows[i]);
				bad++;
			}
		if (bad) {
			c->st_.quarantined += bad;
			if (c->report)
				c->report(
					EB_LOG_WARNING, "cloud",
					"%zu samples cannot be formatted: "
					"quarantined, %llu so far",
					bad,
					(unsigned long long)c->st_.quarantined);
		}
		if (len && !publish(c, c->buf, len, &mid))
			break;
		b = &c->win[c->win_n++];
		b->mid = mid;
		b->is_event = false;
		b->rows = used - bad;
		b->len = len;
		store_lease(c->st, c->rows, used, &b->lease);
		c->st_.publishes += len != 0;
		c->st_.samples_sent += used - bad;
		if (!len) {
			/* nothing sent: nothing to wait for */
			store_ack(c->st, &b->lease);
			c->win_n--;
		}
	}
	c->pumping = false;
}

const struct transport_ops *transport_find(const char *name)
{
	static const struct transport_ops *const all[] = {
		&transport_mqtt,
		&transport_coap,
	};

	for (size_t i = 0; i < EB_ARRAY_SIZE(all); i++)
		if (!strcmp(all[i]->name, name))
			return all[i];
	return NULL;
}

struct cloud *cloud_new(struct loop *loop, const struct eb_config *cfg,
			SSL_CTX *tls, struct hsm_coap *coap, struct store *st,
			const char *version, eb_report_fn report,
			struct eb_err *err)
{
	struct transport_opts o = {
		.host = cfg->cloud.host,
		.port = cfg->cloud.port,
		.client_id = cfg->gateway.id,
		.keepalive_s = (unsigned)(cfg->cloud.keepalive_ms / 1000),
		/* our window, the bootstrap and the events */
		.max_inflight =
			cfg->cloud.max_inflight + MAX_EVENTS + MAX_SIDE + 1,
		.backoff_min_ms = cfg->cloud.backoff_min_ms,
		.backoff_max_ms = cfg->cloud.backoff_max_ms,
		.tls = tls,
		.coap = coap,
		.coap_ack_timeout_ms = (unsigned)cfg->cloud.coap_ack_timeout_ms,
		.coap_max_retransmit = cfg->cloud.coap_max_retransmit,
		.coap_nstart = cfg->cloud.coap_nstart,
		.report = report,
	};
	const struct cloud_profile *p = profile_find(cfg->cloud.profile);
	struct cloud *c = calloc(1, sizeof(*c));
	int n;

	if (!c) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->st = st;
	c->report = report;
	c->want_rows = 64;
	c->profile = p;
	if (p && p->will_payload) {
		o.will_topic = p->uplink_topic;
		o.will_payload = p->will_payload;
	}
	if (!c->profile) {
		eb_errf(err, -EINVAL, "unknown cloud profile '%s'",
			cfg->cloud.profile);
		return cloud_free(c);
	}
	c->max_payload = c->profile->max_payload;
	c->buf_cap = c->profile->max_payload_cap > c->max_payload
			     ? c->profile->max_payload_cap
			     : c->max_payload;
	c->buf = malloc(c->buf_cap + 1);
	c->bootstrap = malloc(c->profile->max_payload + 1);
	c->win_cap = cfg->cloud.max_inflight;
	c->win = calloc(c->win_cap, sizeof(*c->win));
	if (!c->buf || !c->bootstrap || !c->win) {
		eb_errf(err, -ENOMEM, "out of memory");
		return cloud_free(c);
	}
	n = c->profile->bootstrap(cfg, version, c->bootstrap,
				  c->profile->max_payload + 1);
	if (n < 0) {
		eb_errf(err, n, "the device bootstrap message is too long");
		return cloud_free(c);
	}
	c->bootstrap_len = (size_t)n;
	c->tp = transport_find(cfg->cloud.transport);
	if (!c->tp) {
		eb_errf(err, -EINVAL, "unknown cloud transport '%s'",
			cfg->cloud.transport);
		return cloud_free(c);
	}
	c->t = c->tp->create(loop, &o, &handler, c, err);
	if (!c->t)
		return cloud_free(c);
	return c;
}

struct cloud *cloud_free(struct cloud *c)
{
	if (!c)
		return NULL;
	if (c->t)
		c->tp->destroy(c->t);
	free(c->buf);
	free(c->bootstrap);
	free(c->win);
	free(c);
	return NULL;
}

void cloud_on_acked(struct cloud *c, void (*fn)(void *ud), void *ud)
{
	c->acked_fn = fn;
	c->acked_ud = ud;
}

void cloud_start(struct cloud *c)
{
	c->tp->start(c->t);
}

void cloud_kick(struct cloud *c)
{
	pump(c);
}

bool cloud_idle(const struct cloud *c)
{
	return c->win_n == 0;
}

int cloud_try_tls(struct cloud *c, SSL_CTX *tls,
		  void (*done)(void *ud, bool ok, const char *reason), void *ud)
{
	if (!c->tp->try_tls)
		return -EOPNOTSUPP;
	return c->tp->try_tls(c->t, tls, done, ud);
}

void cloud_stop(struct cloud *c)
{
	c->tp->stop(c->t);
	c->st_.connected = false;
}

void cloud_get_stats(const struct cloud *c, struct cloud_stats *out)
{
	*out = c->st_;
	out->inflight = c->win_n;
}

int cloud_add_ext(struct cloud *c, const struct cloud_ext *ext, void *ud)
{
	if (c->n_ext == CLOUD_MAX_EXT)
		return -ENOSPC;
	c->ext[c->n_ext].ops = ext;
	c->ext[c->n_ext].ud = ud;
	c->n_ext++;
	return 0;
}

bool cloud_connected(const struct cloud *c)
{
	return c->tp->connected(c->t);
}

int cloud_subscribe(struct cloud *c, const char *topic)
{
	return c->tp->subscribe(c->t, topic, 1);
}

int cloud_publish(struct cloud *c, const char *topic, const char *payload,
		  size_t len, void (*done)(void *ud, bool ok), void *ud)
{
	int mid = 0, r;

	if (c->n_side == MAX_SIDE)
		return -EAGAIN;
	r = c->tp->publish(c->t, topic, payload, len, 1, &mid);
	if (r < 0)
		return r;
	c->side[c->n_side++] = (struct side_pub){ mid, done, ud };
	return 0;
}

size_t cloud_set_max_payload(struct cloud *c, size_t bytes)
{
	if (bytes < CLOUD_MIN_PAYLOAD)
		bytes = CLOUD_MIN_PAYLOAD;
	if (bytes > c->buf_cap)
		bytes = c->buf_cap;
	if (c->tp->max_payload && bytes > c->tp->max_payload)
		bytes = c->tp->max_payload;
	c->max_payload = bytes;
	return bytes;
}

void cloud_hold(struct cloud *c, bool hold)
{
	c->held = hold;
	if (!hold)
		pump(c);
}

size_t cloud_max_payload(const struct cloud *c)
{
	return c->max_payload;
}

const char *cloud_transport_name(const struct cloud *c)
{
	return c->tp->name;
}

const char *cloud_uplink_topic(const struct cloud *c)
{
	return c->profile->uplink_topic;
}
