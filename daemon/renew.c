/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/util.h"
#include "../hsm/certcheck.h"
#include "../hsm/renewal.h"
#include "renew.h"

#define CHECK_EVERY_MS (60 * 1000)
#define RETRY_AFTER_MS (3600 * 1000)
#define ALARM_FAILED "edgebridge_CertificateRenewalFailed"
#define ALARM_EXPIRING "edgebridge_CertificateExpiring"

struct renew {
	struct loop *loop;
	struct hsm *hsm;
	struct cloud *cloud;
	struct store *st;
	struct renew_host host;
	eb_report_fn report;
	char *config_path, *state_dir, *ca_file, *host_name, *gateway_id;
	char *key_uri; /* the key in use */
	int64_t warn_seconds;
	struct loop_timer *timer;
	/* the attempt under way */
	bool trying;
	struct renewal rn;
	EVP_PKEY *key;
	SSL_CTX *tls;
	/* the last failed attempt: its key, and when to try it again */
	char failed_key[1024];
	uint64_t retry_at;
	char waiting_for[1024]; /* key already reported as waiting */
};

#define report_r(r, lvl, ...) EB_REPORT((r)->report, lvl, "cert", __VA_ARGS__)

static void drop_attempt(struct renew *r)
{
	EVP_PKEY_free(r->key);
	SSL_CTX_free(r->tls);
	r->key = NULL;
	r->tls = NULL;
	r->trying = false;
}

static void failed(struct renew *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void failed(struct renew *r, const char *fmt, ...)
{
	char why[400], text[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(text, sizeof(text),
		 "the renewed certificate was not taken into use: %s; still "
		 "using the previous one",
		 why);
	report_r(r, EB_LOG_ERR, "%s", text);
	renewal_set_failed(r->state_dir, why);
	store_add_event(r->st, ALARM_FAILED, "MAJOR", text, eb_realtime_ms());
	eb_strlcpy(r->failed_key, r->rn.key_uri, sizeof(r->failed_key));
	r->retry_at = eb_now_ms() + RETRY_AFTER_MS;
	drop_attempt(r);
	cloud_kick(r->cloud);
}

static void on_trial(void *ud, bool ok, const char *reason)
{
	struct renew *r = ud;
	char cert[4400], date[32] = "";
	int64_t left = 0;
	int e;

	if (!ok) {
		failed(r, "the broker refused it: %s", reason);
		return;
	}
	e = renewal_commit(r->config_path, r->state_dir, &r->rn, cert,
			   sizeof(cert));
	if (e < 0) {
		/* connected with it, but a restart would not know: keep
		 * going and try the whole switch again later */
		failed(r,
		       "accepted by the broker, but it cannot be recorded: "
		       "%s",
		       strerror(-e));
		return;
	}
	certcheck_leaf_expiry(cert, time(NULL), &left, date, sizeof(date));
	report_r(r, EB_LOG_NOTICE,
		 "switched to the renewed certificate %s (valid until %s) and "
		 "key %s; the previous key stays on the token",
		 cert, date, r->rn.key_uri);
	store_add_event(r->st, "edgebridge_CertificateRenewed", NULL,
			"the device certificate was renewed; the new one is in "
			"use",
			eb_realtime_ms());
	store_add_event(r->st, ALARM_FAILED, "CLEARED", "", eb_realtime_ms());
	store_add_event(r->st, ALARM_EXPIRING, "CLEARED", "", eb_realtime_ms());
	free(r->key_uri);
	r->key_uri = strdup(r->rn.key_uri);
	r->host.switched(r->host.ud, r->key, r->tls, r->rn.key_uri, cert);
	r->key = NULL; /* the host's now */
	r->tls = NULL;
	r->trying = false;
	r->failed_key[0] = '\0';
}

/* Everything that can be judged without the broker, then the trial. */
static void attempt(struct renew *r)
{
	struct eb_err err = { "" };
	int e;
	struct cc_params cp;
	struct cc_report rep;

	r->key = hsm_load_key(r->hsm, r->rn.key_uri, &err);
	if (!r->key) {
		failed(r, "%s", err.msg);
		return;
	}
	cp = (struct cc_params){
		.cert_file = r->rn.chain_file,
		.key = r->key,
		.expect_cn = r->gateway_id,
		.now = time(NULL),
		.warn_seconds = r->warn_seconds,
	};
	certcheck_run(&cp, &rep);
	for (size_t i = 0; i < rep.n; i++)
		if (rep.r[i].status == CC_FAIL) {
			failed(r, "%s", rep.r[i].msg);
			return;
		}
	r->tls = hsm_tls_ctx_key(r->key, r->rn.chain_file, r->ca_file,
				 r->host_name, &err);
	if (!r->tls) {
		failed(r, "%s", err.msg);
		return;
	}
	report_r(r, EB_LOG_NOTICE,
		 "trying the renewed certificate %s with key %s on a new "
		 "connection",
		 r->rn.chain_file, r->rn.key_uri);
	r->trying = true;
	e = cloud_try_tls(r->cloud, r->tls, on_trial, r);
	if (e == -EOPNOTSUPP)
		failed(r,
		       "the %s transport cannot test a new certificate on a "
		       "live connection yet; use MQTT for the renewal",
		       cloud_transport_name(r->cloud));
	else if (e < 0)
		drop_attempt(r); /* busy: next check */
}

void renew_check(struct renew *r)
{
	int e;

	if (!r || r->trying)
		return;
	e = renewal_read(r->state_dir, &r->rn);
	if (e == -ENOENT)
		return;
	if (e < 0) {
		report_r(r, EB_LOG_WARNING,
			 "cannot read the pending renewal in %s/renewal: %s",
			 r->state_dir, strerror(-e));
		return;
	}
	if (streq(r->rn.key_uri, r->key_uri)) {
		/* committed, then cut off before cleaning up */
		renewal_cancel(r->state_dir);
		return;
	}
	if (!r->rn.has_chain) {
		if (!streq(r->waiting_for, r->rn.key_uri))
			report_r(r, EB_LOG_INFO,
				 "a renewal with key %s waits for its "
				 "certificate (edgebridge cert install)",
				 r->rn.key_uri);
		eb_strlcpy(r->waiting_for, r->rn.key_uri,
			   sizeof(r->waiting_for));
		return;
	}
	/* a chain that already failed: again in an hour, or at once when
	 * another one is installed (cert install removes `failed`) */
	if (r->rn.failed[0] && streq(r->failed_key, r->rn.key_uri) &&
	    eb_now_ms() < r->retry_at)
		return;
	if (!cloud_connected(r->cloud))
		return; /* a refusal now would say nothing of the cert */
	attempt(r);
}

static void on_timer(struct loop *l, struct loop_timer *t, void *ud)
{
	(void)l;
	renew_check(ud);
	loop_timer_arm_in(t, CHECK_EVERY_MS);
}

/* Soon after each connect: a renewal installed while offline is tried
 * as soon as there is a link to judge it by (not from inside the
 * connect callback: the trial reconnects). */
static void on_connected(void *ud)
{
	struct renew *r = ud;

	if (!r->trying)
		loop_timer_arm_in(r->timer, 1000);
}

struct renew *renew_new(struct loop *loop, const struct eb_config *cfg,
			const char *config_path, struct hsm *hsm,
			struct cloud *cloud, struct store *st,
			const struct renew_host *host, eb_report_fn report)
{
	struct renew *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->loop = loop;
	r->hsm = hsm;
	r->cloud = cloud;
	r->st = st;
	r->host = *host;
	r->report = report;
	r->warn_seconds = (int64_t)(cfg->cloud.cert_warn_ms / 1000);
	r->config_path = strdup(config_path);
	r->state_dir = strdup(cfg->gateway.state_dir);
	r->ca_file = strdup(cfg->cloud.ca_file);
	r->host_name = strdup(cfg->cloud.host);
	r->gateway_id = strdup(cfg->gateway.id);
	r->key_uri = strdup(cfg->hsm.key);
	r->timer = loop_timer_new(loop, on_timer, r);
	if (!r->config_path || !r->state_dir || !r->ca_file || !r->host_name ||
	    !r->gateway_id || !r->key_uri || !r->timer)
		return renew_free(r);
	static const struct cloud_ext ext = { .connected = on_connected };

	if (cloud_add_ext(cloud, &ext, r) < 0)
		return renew_free(r);
	loop_timer_arm_in(r->timer, CHECK_EVERY_MS);
	return r;
}

struct renew *renew_free(struct renew *r)
{
	if (!r)
		return NULL;
	loop_timer_free(r->timer);
	drop_attempt(r);
	free(r->config_path);
	free(r->state_dir);
	free(r->ca_file);
	free(r->host_name);
	free(r->gateway_id);
	free(r->key_uri);
	free(r);
	return NULL;
}
