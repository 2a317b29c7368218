/* SPDX-License-Identifier: MIT */
/*
 * Why batches are tracked here and not in the store: a publish carries a
 * contiguous run of sequence numbers, so remembering (mid, end) per publish
 * is enough to acknowledge exactly what the broker confirmed.  PUBACKs are
 * matched by message id and the store is told "everything before end" only
 * once every older publish was acknowledged too, so an out-of-order PUBACK
 * can never release a sample that is still unconfirmed.
 *
 * Live data: a sample is published as soon as it is queued when the window
 * has room (low latency); under backlog the same code packs as many lines
 * as fit into each publish (throughput).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "cloud.h"
#include "mqtt.h"
#include "profile.h"

struct batch {
	int mid;
	uint64_t end; /* store sequence just past the batch */
	bool acked;
};

struct cloud {
	struct loop *loop;
	struct memq *q;
	const struct cloud_profile *profile;
	struct mqtt *mqtt;
	eb_report_fn report;
	char *bootstrap;
	size_t bootstrap_len;
	char *buf; /* one payload */
	struct batch *win;
	unsigned win_cap, win_head, win_n;
	struct cloud_stats st;
	void (*acked_fn)(void *ud);
	void *acked_ud;
};

static void pump(struct cloud *c);

static void on_connected(void *ud)
{
	struct cloud *c = ud;
	int mid, r;

	c->st.connected = true;
	c->st.connects++;
	if (c->bootstrap_len) {
		r = mqtt_publish(c->mqtt, c->profile->uplink_topic,
				 c->bootstrap, c->bootstrap_len, 1, &mid);
		if (r < 0 && c->report)
			c->report(EB_LOG_WARNING, "cloud",
				  "cannot publish the device bootstrap: %s",
				  strerror(-r));
	}
	pump(c);
}

static void on_disconnected(void *ud)
{
	struct cloud *c = ud;

	c->st.connected = false;
}

/* Releases the acknowledged publishes at the front of the window. */
static void settle(struct cloud *c)
{
	uint64_t upto = 0;

	while (c->win_n && c->win[c->win_head].acked) {
		upto = c->win[c->win_head].end;
		c->win_head = (c->win_head + 1) % c->win_cap;
		c->win_n--;
	}
	if (upto) {
		struct memq_stats before, after;

		memq_get_stats(c->q, &before);
		memq_ack_upto(c->q, upto);
		memq_get_stats(c->q, &after);
		c->st.samples_acked += after.acked - before.acked;
		if (c->acked_fn)
			c->acked_fn(c->acked_ud);
	}
}

static void on_published(void *ud, int mid)
{
	struct cloud *c = ud;

	for (unsigned i = 0; i < c->win_n; i++) {
		struct batch *b = &c->win[(c->win_head + i) % c->win_cap];

		if (b->mid == mid && !b->acked) {
			b->acked = true;
			settle(c);
			pump(c);
			return;
		}
	}
	/* the bootstrap, or a duplicate PUBACK */
}

static const struct mqtt_handler handler = {
	.connected = on_connected,
	.disconnected = on_disconnected,
	.published = on_published,
};

static void pump(struct cloud *c)
{
	while (mqtt_connected(c->mqtt) && c->win_n < c->win_cap &&
	       memq_pending(c->q)) {
		size_t len, bad = 0;
		size_t used =
			profile_pack(c->profile, c->q, c->buf, &len, &bad);
		struct batch *b;
		int mid = 0, r;

		if (!used)
			break;
		if (bad) {
			/* Leased with this batch so they cannot block the
			 * queue forever; counted and reported. */
			c->st.quarantined += bad;
			if (c->report)
				c->report(
					EB_LOG_WARNING, "cloud",
					"%zu samples cannot be formatted "
					"(not a finite number): skipped, "
					"%llu so far",
					bad,
					(unsigned long long)c->st.quarantined);
		}
		if (len) {
			r = mqtt_publish(c->mqtt, c->profile->uplink_topic,
					 c->buf, len, 1, &mid);
			if (r < 0) {
				if (r != -ENOTCONN && c->report)
					c->report(EB_LOG_WARNING, "cloud",
						  "publish failed: %s",
						  strerror(-r));
				return;
			}
			c->st.publishes++;
		}
		b = &c->win[(c->win_head + c->win_n) % c->win_cap];
		b->mid = mid;
		b->end = memq_lease(c->q, used);
		b->acked = len == 0; /* nothing sent: nothing to wait for */
		c->win_n++;
		c->st.samples_sent += used;
		if (b->acked)
			settle(c);
	}
}

struct cloud *cloud_new(struct loop *loop, const struct eb_config *cfg,
			SSL_CTX *tls, struct memq *q, const char *version,
			eb_report_fn report, struct eb_err *err)
{
	struct mqtt_opts o = {
		.host = cfg->cloud.host,
		.port = cfg->cloud.port,
		.client_id = cfg->gateway.id,
		.keepalive_s = (unsigned)(cfg->cloud.keepalive_ms / 1000),
		.max_inflight = cfg->cloud.max_inflight + 1, /* + bootstrap */
		.backoff_min_ms = cfg->cloud.backoff_min_ms,
		.backoff_max_ms = cfg->cloud.backoff_max_ms,
		.tls = tls,
		.report = report,
	};
	struct cloud *c = calloc(1, sizeof(*c));
	int n;

	if (!c) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	c->loop = loop;
	c->q = q;
	c->report = report;
	c->profile = profile_find(cfg->cloud.profile);
	if (!c->profile) {
		eb_errf(err, -EINVAL, "unknown cloud profile '%s'",
			cfg->cloud.profile);
		return cloud_free(c);
	}
	c->buf = malloc(c->profile->max_payload + 1);
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
	c->mqtt = mqtt_new(loop, &o, &handler, c, err);
	if (!c->mqtt)
		return cloud_free(c);
	return c;
}

struct cloud *cloud_free(struct cloud *c)
{
	if (!c)
		return NULL;
	mqtt_free(c->mqtt);
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
	mqtt_start(c->mqtt);
}

void cloud_kick(struct cloud *c)
{
	pump(c);
}

bool cloud_flushed(const struct cloud *c)
{
	return c->win_n == 0 && memq_pending(c->q) == 0;
}

void cloud_stop(struct cloud *c)
{
	mqtt_stop(c->mqtt);
	c->st.connected = false;
}

void cloud_get_stats(const struct cloud *c, struct cloud_stats *st)
{
	*st = c->st;
	st->inflight = c->win_n;
}
