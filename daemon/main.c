/* SPDX-License-Identifier: MIT */
/*
 * edgebridged: reads local sensors and sends their samples to the cloud
 * over MQTT with mutual TLS, the device key staying on a PKCS#11 token.
 *
 * Start-up order matters and is chosen so that every problem a person can
 * fix is reported before anything touches the network:
 *   1. configuration (all problems at once, file:line),
 *   2. the token (one login; a wrong PIN stops us for good, exit 77),
 *   3. what the cloud will check of our certificate (exit 78),
 *   4. then the loop: sensors, uplink, signals, watchdog, READY=1.
 * READY=1 does not wait for the broker: a gateway with no network is still
 * a working gateway, it queues.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cloud/c8y.h"
#include "../cloud/cloud.h"
#include "../cloud/https.h"
#include "../cloud/tb.h"
#include "../common/util.h"
#include "../drivers/driver.h"
#include "../hsm/certcheck.h"
#include "../hsm/hsm.h"
#include "../hsm/hsm_coap.h"
#include "../store/store.h"
#include "log.h"
#include "loop.h"
#include "renew.h"
#include "sdnotify.h"
#include "sensors.h"

#ifndef EB_VERSION
#define EB_VERSION "0.1.0"
#endif

static const int loop_sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };

struct daemon {
	const char *config_path;
	struct eb_config *cfg;
	struct loop *loop;
	struct hsm *hsm;
	SSL_CTX *tls;
	struct hsm_coap
		*coap; /* the DTLS identity ([cloud] transport = coap) */
	struct store *st;
	struct cloud *cloud;
	struct https *https;	  /* REST calls with the JWT */
	struct https *https_mtls; /* the token fallback (client cert) */
	struct c8y_token *token;
	struct c8y_bulk *bulk;
	struct c8y_ops *ops;
	struct tb_device *tb;
	struct renew *renew;
	struct sensors *sensors;
	struct loop_timer *watchdog;
	struct loop_timer *shutdown;
	struct loop_timer *cert_timer;
	/* the key and chain in use (a renewal changes them while running) */
	char *key_uri, *cert_file;
	uint64_t watchdog_ms;
	uint64_t shutdown_deadline;
	bool stopping;
	bool kick; /* samples arrived this round */
	int exit_code;
	char unset[512]; /* not configured yet: the required settings unset */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: edgebridged [-c FILE] [--check-config] [--version]\n"
		"\n"
		"  -c, --config FILE   configuration file "
		"(default /etc/edgebridge/edgebridge.conf);\n"
		"                      drop-ins are read from conf.d/ beside "
		"it\n"
		"      --check-config  validate the configuration and the "
		"certificate chain, then exit\n"
		"  -v, --verbose       log at debug level\n"
		"      --version       print the version and exit\n");
}

/*
 * A fresh installation: the packaged file sets none of the required keys.
 * When every problem is a required key left unset (config.c counts them;
 * nothing set is wrong), collect their names into `unset` ("gateway.id,
 * hsm.key, ...").
 */
static bool only_unset(const struct eb_diags *d, char *unset, size_t len)
{
	size_t used = 0;

	if (!d->n || d->n_unset != d->n)
		return false;
	unset[0] = '\0';
	for (size_t i = 0; i < d->n; i++) {
		/* "file: hsm.key is required" -> "hsm.key" */
		const char *end = strstr(d->msg[i], " is required");
		const char *key = end;

		while (key && key > d->msg[i] && key[-1] != ' ')
			key--;
		if (key && used < len)
			used += (size_t)snprintf(unset + used, len - used,
						 "%s%.*s", i ? ", " : "",
						 (int)(end - key), key);
	}
	return true;
}

/* With `unset`, a configuration that only lacks required keys is not
 * reported: the names are left there for the caller (and NULL returned). */
static struct eb_config *load_config(const char *path, bool to_stderr_plain,
				     char *unset, size_t unset_len)
{
	struct eb_diags d = { 0 };
	struct eb_config *cfg = config_load(path, driver_check_config, &d);

	if (unset) {
		unset[0] = '\0';
		if (!cfg && only_unset(&d, unset, unset_len)) {
			diags_free(&d);
			return NULL;
		}
		unset[0] = '\0';
	}
	for (size_t i = 0; i < d.n; i++) {
		if (to_stderr_plain)
			fprintf(stderr, "%s\n", d.msg[i]);
		else
			log_error("config", "%s", d.msg[i]);
	}
	if (!cfg && !d.n)
		log_error("config", "%s: cannot load", path);
	diags_free(&d);
	return cfg;
}

/* The certificate rules of the configured cloud. */
static enum cc_profile cert_profile(const struct eb_config *c)
{
	int p = certcheck_profile(c->cloud.profile);

	return p < 0 ? CC_PROFILE_CUMULOCITY : (enum cc_profile)p;
}

/* Reports a certificate check; returns the number of failures. */
static size_t report_certcheck(const struct cc_report *rep, bool quiet_pass)
{
	for (size_t i = 0; i < rep->n; i++) {
		const struct cc_result *r = &rep->r[i];

		if (r->status == CC_FAIL)
			log_error("cert", "%s", r->msg);
		else if (r->status == CC_WARN)
			log_warning("cert", "%s", r->msg);
		else if (!quiet_pass)
			log_debug("cert", "%s", r->msg);
	}
	return rep->n_fail;
}

static void status(struct daemon *d)
{
	struct cloud_stats cs;
	struct store_stats ss;

	if (!d->cloud)
		return;
	cloud_get_stats(d->cloud, &cs);
	store_get_stats(d->st, &ss);
	sdn_notifyf("STATUS=%s %s:%u; %zu sensors; %llu sent, %llu queued, "
		    "%llu dropped%s",
		    cs.connected ? "connected to" : "connecting to",
		    d->cfg->cloud.host, d->cfg->cloud.port,
		    d->sensors ? sensors_count(d->sensors) : 0,
		    (unsigned long long)ss.acked,
		    (unsigned long long)(ss.stored + ss.inbox),
		    (unsigned long long)ss.dropped,
		    ss.disk_ok ? "" : "; CANNOT WRITE THE QUEUE");
}

static void log_stats(struct daemon *d)
{
	struct cloud_stats cs;
	struct store_stats ss;

	cloud_get_stats(d->cloud, &cs);
	store_get_stats(d->st, &ss);
	log_info("stats",
		 "%s; samples: %llu queued in total, %llu acknowledged, %llu "
		 "waiting (%llu stored, %llu in RAM), %llu dropped, %llu "
		 "quarantined; store %llu KiB%s; %llu publishes, %u in "
		 "flight, %llu events; %llu connects; %llu wakeups",
		 cs.connected ? "connected" : "not connected",
		 (unsigned long long)ss.pushed, (unsigned long long)ss.acked,
		 (unsigned long long)(ss.stored + ss.inbox),
		 (unsigned long long)ss.stored, (unsigned long long)ss.inbox,
		 (unsigned long long)ss.dropped,
		 (unsigned long long)(ss.quarantined + cs.quarantined),
		 (unsigned long long)(ss.bytes / 1024),
		 ss.disk_ok ? "" : " (cannot write)",
		 (unsigned long long)cs.publishes, cs.inflight,
		 (unsigned long long)cs.events, (unsigned long long)cs.connects,
		 (unsigned long long)loop_wakeups(d->loop));
	if (d->tb) {
		struct tb_device_stats ts;

		tb_device_get_stats(d->tb, &ts);
		log_info("stats",
			 "thingsboard: %llu RPCs (%llu answered with an "
			 "error), %llu shared attributes applied, %llu "
			 "malformed messages; %zu bytes per publish",
			 (unsigned long long)ts.rpc_requests,
			 (unsigned long long)ts.rpc_errors,
			 (unsigned long long)ts.attr_updates,
			 (unsigned long long)ts.malformed, ts.max_payload);
	}
	if (d->bulk) {
		struct c8y_bulk_stats bs;
		struct c8y_token_stats ts;

		c8y_bulk_get_stats(d->bulk, &bs);
		c8y_token_get_stats(d->token, &ts);
		log_info("stats",
			 "bulk: %s; %llu posts, %llu samples sent, %llu "
			 "acknowledged, %llu quarantined, %llu failures, %llu "
			 "drains; tokens: %llu requested, %llu received, %llu "
			 "malformed, %llu fallbacks",
			 bs.active ? "draining" : "idle",
			 (unsigned long long)bs.posts,
			 (unsigned long long)bs.rows_sent,
			 (unsigned long long)bs.rows_acked,
			 (unsigned long long)bs.rows_quarantined,
			 (unsigned long long)bs.failures,
			 (unsigned long long)bs.drains,
			 (unsigned long long)ts.requests,
			 (unsigned long long)ts.received,
			 (unsigned long long)ts.malformed,
			 (unsigned long long)ts.fallbacks);
	}
}

/* Sensors fired: the uplink runs once at the end of this loop round, so
 * samples of sensors due together share one commit and one publish. */
static void on_samples(void *ud)
{
	struct daemon *d = ud;

	d->kick = true;
}

static void on_acked(void *ud)
{
	struct daemon *d = ud;

	sensors_resume(d->sensors);
}

/* The cloud connection came up: inputs report their current state (a
 * door contact that changed while we were offline, or before we ran). */
static void on_cloud_connected(void *ud)
{
	struct daemon *d = ud;

	sensors_set_connected(d->sensors, true);
}

static void on_cloud_disconnected(void *ud)
{
	struct daemon *d = ud;

	sensors_set_connected(d->sensors, false);
}

static const struct cloud_ext sensors_ext = {
	.connected = on_cloud_connected,
	.disconnected = on_cloud_disconnected,
};

static void finish(struct daemon *d)
{
	struct store_stats ss;

	loop_timer_disarm(d->shutdown);
	store_flush(d->st);
	store_get_stats(d->st, &ss);
	if (ss.stored + ss.inbox)
		log_info("main", "stopping with %llu samples queued for later",
			 (unsigned long long)(ss.stored + ss.inbox));
	cloud_stop(d->cloud);
	loop_quit(d->loop, d->exit_code);
}

static void on_shutdown_tick(struct loop *l, struct loop_timer *t, void *ud)
{
	struct daemon *d = ud;

	(void)l;
	if ((cloud_idle(d->cloud) && (!d->bulk || c8y_bulk_idle(d->bulk))) ||
	    eb_now_ms() >= d->shutdown_deadline) {
		finish(d);
		return;
	}
	loop_timer_arm_in(t, 20);
}

static void begin_shutdown(struct daemon *d)
{
	struct cloud_stats cs;

	if (d->stopping)
		return;
	d->stopping = true;
	sdn_notify("STOPPING=1");
	log_info("main", "stopping");
	/* No new samples; give what is in flight a moment to be confirmed. */
	d->sensors = sensors_free(d->sensors);
	cloud_get_stats(d->cloud, &cs);
	if (!cs.connected || d->cfg->cloud.shutdown_timeout_ms == 0) {
		finish(d);
		return;
	}
	d->shutdown_deadline = eb_now_ms() + d->cfg->cloud.shutdown_timeout_ms;
	loop_timer_arm_in(d->shutdown, 0);
}

/* SIGHUP: a new sensor list applies at once; identity and cloud settings
 * need a restart (the token session and TLS context are built once). */
static void reload(struct daemon *d)
{
	struct eb_config *n;

	log_info("main", "reloading %s", d->config_path);
	n = load_config(d->config_path, false, NULL, 0);
	if (!n) {
		log_error("main", "reload failed; keeping the running "
				  "configuration");
		return;
	}
	if (!streq_null(n->gateway.id, d->cfg->gateway.id) ||
	    !streq_null(n->hsm.key, d->key_uri) ||
	    !streq_null(n->hsm.module, d->cfg->hsm.module) ||
	    !streq_null(n->cloud.host, d->cfg->cloud.host) ||
	    !streq_null(n->cloud.transport, d->cfg->cloud.transport) ||
	    n->cloud.port != d->cfg->cloud.port ||
	    !streq_null(n->cloud.cert_file, d->cert_file) ||
	    !streq_null(n->cloud.ca_file, d->cfg->cloud.ca_file))
		log_warning("main",
			    "[gateway]/[hsm]/[cloud] changes take effect "
			    "after a restart");
	struct sensors_reload_stats rs;

	if (sensors_reload(d->sensors, n, &rs) < 0) {
		log_error("main", "reload failed (out of memory); keeping the "
				  "running configuration");
		config_free(n);
		return;
	}
	log_set_level(n->gateway.log_level);
	/* The uplink keeps pointers to nothing in the old config (it
	 * rendered what it needs at start), and a sensor kept running holds
	 * its own reference, so ours can go now. */
	config_free(d->cfg);
	d->cfg = n;
	log_info("main",
		 "reloaded: %zu sensors (%zu unchanged and left running, %zu "
		 "opened, %zu closed)",
		 sensors_count(d->sensors), rs.kept, rs.opened, rs.closed);
	status(d);
	renew_check(d->renew);
}

/* ---- what the platform's operations do --------------------------------- */

static int op_restart(void *ud, char *why, size_t len)
{
	struct daemon *d = ud;
	const char *cmd = d->cfg->cloud.restart_command;
	posix_spawnattr_t a;
	sigset_t none;
	pid_t pid;
	int r;

	if (!cmd) {
		log_notice("main",
			   "restart asked by the platform: stopping with exit "
			   "status %d for the service manager to start us "
			   "again",
			   EB_EXIT_RESTART);
		d->exit_code = EB_EXIT_RESTART;
		begin_shutdown(d);
		return 0;
	}
	/* the command restarts us (systemctl restart edgebridge, reboot) */
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	sigemptyset(&none);
	posix_spawnattr_init(&a);
	posix_spawnattr_setflags(&a,
				 POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
	posix_spawnattr_setsigmask(&a, &none);
	r = posix_spawn(&pid, "/bin/sh", NULL, &a, argv, environ);
	posix_spawnattr_destroy(&a);
	if (r) {
		snprintf(why, len, "cannot run restart_command: %s",
			 strerror(r));
		return -r;
	}
	log_notice("main", "restart asked by the platform: running '%s'", cmd);
	return 0;
}

/* 513: the text becomes conf.d/90-cloud.conf if the whole configuration
 * with it passes the same checks as --check-config; else nothing changes. */
#define CLOUD_DROPIN "90-cloud.conf"

static int op_configure(void *ud, const char *text, char *why, size_t len)
{
	struct daemon *d = ud;
	_cleanup_free_ char *dir = config_dropin_dir(d->config_path);
	_cleanup_free_ char *final = NULL, *pending = NULL, *body = NULL;
	struct eb_diags dg = { 0 };
	struct eb_config *n;
	int r;

	if (!dir || asprintf(&final, "%s/%s", dir, CLOUD_DROPIN) < 0 ||
	    asprintf(&pending, "%s.pending", final) < 0) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	r = eb_mkdir_p(dir, 0755, 0755);
	if (r < 0) {
		snprintf(why, len, "cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	if (asprintf(&body, "%s%s", text, text[0] ? "\n" : "") < 0) {
		body = NULL;
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	r = eb_write_file(pending, body, strlen(body), 0644);
	if (r < 0) {
		snprintf(why, len, "cannot write %s: %s", pending,
			 strerror(-r));
		return r;
	}
	n = config_load_with(d->config_path, CLOUD_DROPIN, pending,
			     driver_check_config, &dg);
	if (!n || dg.n) {
		snprintf(why, len, "invalid configuration: %s",
			 dg.n ? dg.msg[0] : "cannot load");
		log_warning("main",
			    "configuration from the platform refused: "
			    "%s",
			    dg.n ? dg.msg[0] : "cannot load");
		config_free(n);
		diags_free(&dg);
		unlink(pending);
		return -EINVAL;
	}
	config_free(n);
	diags_free(&dg);
	if (rename(pending, final) < 0) {
		r = -errno;
		snprintf(why, len, "cannot install %s: %s", final,
			 strerror(errno));
		unlink(pending);
		return r;
	}
	eb_fsync_dir(dir);
	log_notice("main", "configuration from the platform written to %s",
		   final);
	reload(d);
	return 0;
}

static int op_relay(void *ud, bool closed, char *why, size_t len)
{
	struct daemon *d = ud;
	struct eb_err err = { "" };
	int r;

	r = sensors_write(d->sensors, d->cfg->cloud.relay, closed ? 1 : 0,
			  &err);
	if (r < 0) {
		snprintf(why, len, "%s", err.msg);
		return r;
	}
	log_notice("main", "relay %s: %s", d->cfg->cloud.relay,
		   closed ? "CLOSED" : "OPEN");
	return 0;
}

/* A renewed certificate and key passed their test connection and are
 * committed: everything that presents them switches too. */
static void on_renewed(void *ud, EVP_PKEY *key, SSL_CTX *tls,
		       const char *key_uri, const char *cert_file)
{
	struct daemon *d = ud;
	char *k = strdup(key_uri), *c = strdup(cert_file);

	hsm_set_key(d->hsm, key);
	SSL_CTX_free(d->tls);
	d->tls = tls;
	if (!k || !c) {
		free(k);
		free(c);
		log_error("main", "out of memory");
		return;
	}
	free(d->key_uri);
	free(d->cert_file);
	d->key_uri = k;
	d->cert_file = c;
	if ((d->https && https_set_client(d->https, c, k) < 0) ||
	    (d->https_mtls && https_set_client(d->https_mtls, c, k) < 0))
		log_error("main", "out of memory");
	if (d->cert_timer)
		loop_timer_arm_in(d->cert_timer, 0);
}

/* Cumulocity's companions: operations always, the token and the bulk
 * drain when [cloud] bulk is on. */
static int start_c8y(struct daemon *d)
{
	const struct c8y_ops_host host = {
		.restart = op_restart,
		.configure = op_configure,
		.relay = op_relay,
		.ud = d,
	};
	const struct eb_config *c = d->cfg;
	struct eb_err err = { "" };

	d->ops = c8y_ops_new(d->loop, c, d->cloud, &host, log_msg, &err);
	if (!d->ops)
		goto fail;
	if (!c->cloud.bulk)
		return EB_EXIT_OK;
	struct https_opts ho = {
		.ca_file = c->cloud.http_ca_file,
		.cert_file = c->cloud.http_mtls ? c->cloud.cert_file : NULL,
		.key_uri = c->hsm.key,
		.timeout_ms = c->cloud.http_timeout_ms,
		.report = log_msg,
	};
	d->https = https_new(d->loop, &ho, &err);
	if (!d->https)
		goto fail;
	if (c->cloud.token_fallback) {
		ho.cert_file = c->cloud.cert_file;
		d->https_mtls = https_new(d->loop, &ho, &err);
		if (!d->https_mtls)
			goto fail;
	}
	struct c8y_token_opts to = {
		.timeout_ms = c->cloud.token_timeout_ms,
		.fallback = c->cloud.token_fallback,
		.token_url = c->cloud.token_url,
		.mtls = d->https_mtls,
		.report = log_msg,
	};
	d->token = c8y_token_new(d->loop, d->cloud, &to, &err);
	if (!d->token)
		goto fail;
	d->bulk = c8y_bulk_new(d->loop, c, d->st, d->token, d->https, log_msg,
			       &err);
	if (!d->bulk)
		goto fail;
	c8y_bulk_on_acked(d->bulk, on_acked, d);
	return EB_EXIT_OK;
fail:
	log_error("cloud", "%s", err.msg);
	return EB_EXIT_FAILURE;
}

/* ---- what ThingsBoard's shared attributes and RPCs do ------------------ */

/* r, with the reason of a failure copied to why */
static int with_why(int r, const struct eb_err *err, char *why, size_t len)
{
	if (r < 0)
		snprintf(why, len, "%s", err->msg);
	return r;
}

static int tb_set_interval(void *ud, const char *sensor, uint64_t ms, char *why,
			   size_t len)
{
	struct daemon *d = ud;
	struct eb_err err = { "" };

	return with_why(sensors_set_interval(d->sensors, sensor, ms, &err),
			&err, why, len);
}

static int tb_write(void *ud, const char *sensor, double value, char *why,
		    size_t len)
{
	struct daemon *d = ud;
	struct eb_err err = { "" };

	return with_why(sensors_write(d->sensors, sensor, value, &err), &err,
			why, len);
}

static int tb_last(void *ud, size_t i, const char **name, const char **series,
		   double *value, int64_t *time_ms)
{
	struct daemon *d = ud;

	return sensors_last(d->sensors, i, name, series, value, time_ms);
}

/* ThingsBoard's companion: attributes, RPC, the session's limits. */
static int start_tb(struct daemon *d)
{
	const struct tb_device_host host = {
		.set_interval = tb_set_interval,
		.write = tb_write,
		.last = tb_last,
		.ud = d,
	};
	struct eb_err err = { "" };

	d->tb = tb_device_new(d->loop, d->cfg, d->cloud, &host, log_msg, &err);
	if (!d->tb) {
		log_error("cloud", "%s", err.msg);
		return EB_EXIT_FAILURE;
	}
	return EB_EXIT_OK;
}

/* Each profile's companions; adding a platform adds a line here. */
static const struct {
	const char *profile;
	int (*start)(struct daemon *d);
} companions[] = {
	{ "cumulocity", start_c8y },
	{ "thingsboard", start_tb },
};

static int start_companions(struct daemon *d)
{
	for (size_t i = 0; i < EB_ARRAY_SIZE(companions); i++)
		if (!strcmp(d->cfg->cloud.profile, companions[i].profile))
			return companions[i].start(d);
	return EB_EXIT_OK;
}

static void on_signal(struct loop *l, int signo, void *ud)
{
	struct daemon *d = ud;

	(void)l;
	switch (signo) {
	case SIGTERM:
	case SIGINT:
		begin_shutdown(d);
		break;
	case SIGHUP:
		if (!d->stopping)
			reload(d);
		break;
	case SIGUSR1:
		log_stats(d);
		break;
	}
}

/*
 * A certificate about to expire becomes a major alarm in the cloud (queued
 * in the store like any event, so it is sent once connected and survives
 * restarts), at start and then once a day, until it is renewed.
 */
static void check_cert_expiry(struct loop *l, struct loop_timer *t, void *ud)
{
	struct daemon *d = ud;
	int64_t left;
	char date[32], text[320];

	(void)l;
	if (certcheck_leaf_expiry(d->cert_file, time(NULL), &left, date,
				  sizeof(date)) == 0 &&
	    left < (int64_t)(d->cfg->cloud.cert_warn_ms / 1000)) {
		snprintf(text, sizeof(text),
			 "the device certificate of %s expires on %s (in %lld "
			 "days): renew it (edgebridge cert renew, then cert "
			 "install)",
			 d->cfg->gateway.id, date, (long long)(left / 86400));
		log_warning("cert", "%s", text);
		store_add_event(d->st, "edgebridge_CertificateExpiring",
				"MAJOR", text, eb_realtime_ms());
		cloud_kick(d->cloud);
	}
	loop_timer_arm_in(t, 86400ULL * 1000);
}

static void on_watchdog(struct loop *l, struct loop_timer *t, void *ud)
{
	struct daemon *d = ud;

	(void)l;
	sdn_notify("WATCHDOG=1");
	status(d);
	loop_timer_arm_in(t, d->watchdog_ms);
}

/* WATCHDOG=1 at half the period systemd asked for (WatchdogSec=). */
static void start_watchdog(struct daemon *d)
{
	uint64_t wd_usec = 0;

	if (sdn_watchdog_enabled(&wd_usec) <= 0 || !wd_usec)
		return;
	d->watchdog_ms = wd_usec / 2000 ? wd_usec / 2000 : 1;
	d->watchdog = loop_timer_new(d->loop, on_watchdog, d);
	if (d->watchdog)
		loop_timer_arm_in(d->watchdog, d->watchdog_ms);
}

/* Before every sleep: commit what this loop round produced, in one
 * transaction (never one per sample), then publish it.  Registered before
 * the MQTT transport's own hook, which then sees what this queued. */
static void on_tick_end(struct loop *l, void *ud)
{
	struct daemon *d = ud;

	(void)l;
	if (d->st && store_dirty(d->st))
		store_flush(d->st);
	if (d->kick && d->cloud) {
		d->kick = false;
		cloud_kick(d->cloud);
	}
	if (d->bulk && !d->stopping)
		c8y_bulk_kick(d->bulk);
}

static int open_store(struct daemon *d)
{
	struct store_opts so = {
		.max_size = d->cfg->store.max_size,
		.max_age_ms = d->cfg->store.max_age_ms,
		.drop_newest = d->cfg->store.overflow == 1,
		.sync_full = d->cfg->store.sync == 1,
		.ram_samples = d->cfg->store.ram_samples,
		.report = log_msg,
	};
	struct eb_err err = { "" };
	char path[4200];
	int r;

	r = eb_mkdir_p(d->cfg->gateway.state_dir, 0755, 0750);
	if (r < 0) {
		log_error("store", "cannot create gateway.state_dir %s: %s",
			  d->cfg->gateway.state_dir, strerror(-r));
		return EB_EXIT_CONFIG;
	}
	snprintf(path, sizeof(path), "%s/queue.db", d->cfg->gateway.state_dir);
	so.path = path;
	d->st = store_open(&so, &err);
	if (!d->st) {
		log_error("store", "%s", err.msg);
		return EB_EXIT_FAILURE;
	}
	return EB_EXIT_OK;
}

static int run(struct daemon *d)
{
	struct eb_err err = { "" };
	struct cc_params cp;
	struct cc_report rep;
	enum hsm_fail hf;
	int r;

	d->hsm = hsm_open(d->cfg->hsm.module, d->cfg->hsm.pin_file,
			  d->cfg->hsm.key, &hf, &err);
	if (!d->hsm) {
		log_error("hsm", "%s", err.msg);
		switch (hf) {
		case HSM_FAIL_PIN:
			return EB_EXIT_NOPERM;
		case HSM_FAIL_UNAVAILABLE:
			return EB_EXIT_UNAVAILABLE;
		case HSM_FAIL_KEY:
			return EB_EXIT_CONFIG;
		default:
			return EB_EXIT_FAILURE;
		}
	}
	log_info("hsm", "token key loaded: %s", d->cfg->hsm.key);

	cp = (struct cc_params){
		.cert_file = d->cfg->cloud.cert_file,
		.key = hsm_key(d->hsm),
		.expect_cn = d->cfg->gateway.id,
		.now = time(NULL),
		.warn_seconds = (int64_t)(d->cfg->cloud.cert_warn_ms / 1000),
		.profile = cert_profile(d->cfg),
	};
	certcheck_run(&cp, &rep);
	if (report_certcheck(&rep, false)) {
		log_error("cert", "refusing to start: fix %s",
			  d->cfg->cloud.cert_file);
		return EB_EXIT_CONFIG;
	}

	d->tls = hsm_tls_ctx(d->hsm, d->cfg->cloud.cert_file,
			     d->cfg->cloud.ca_file, d->cfg->cloud.host, &err);
	if (!d->tls) {
		log_error("tls", "%s", err.msg);
		return EB_EXIT_CONFIG;
	}

	d->loop = loop_new();
	if (!d->loop) {
		log_error("main", "out of memory");
		return EB_EXIT_FAILURE;
	}
	if (loop_prepare_add(d->loop, on_tick_end, d) < 0) {
		log_error("main", "out of memory");
		return EB_EXIT_FAILURE;
	}
	r = open_store(d);
	if (r != EB_EXIT_OK)
		return r;
	r = loop_signals(d->loop, loop_sigs, (int)EB_ARRAY_SIZE(loop_sigs),
			 on_signal, d);
	if (r < 0) {
		log_error("main", "cannot set up signals: %s", strerror(-r));
		return EB_EXIT_FAILURE;
	}
	if (!strcmp(d->cfg->cloud.transport, "coap")) {
		d->coap = hsm_coap_new(d->hsm, d->cfg->cloud.cert_file,
				       d->cfg->cloud.ca_file, d->cfg->hsm.key,
				       d->cfg->hsm.pin_file, d->cfg->cloud.host,
				       &err);
		if (!d->coap) {
			log_error("coap", "%s", err.msg);
			return EB_EXIT_CONFIG;
		}
	}
	d->cloud = cloud_new(d->loop, d->cfg, d->tls, d->coap, d->st,
			     EB_VERSION, log_msg, &err);
	if (!d->cloud) {
		log_error("cloud", "%s", err.msg);
		return EB_EXIT_FAILURE;
	}
	cloud_on_acked(d->cloud, on_acked, d);
	if (cloud_add_ext(d->cloud, &sensors_ext, d) < 0) {
		log_error("main", "too many cloud companions");
		return EB_EXIT_FAILURE;
	}
	r = start_companions(d);
	if (r != EB_EXIT_OK)
		return r;
	d->key_uri = strdup(d->cfg->hsm.key);
	d->cert_file = strdup(d->cfg->cloud.cert_file);
	{
		const struct renew_host rh = { .switched = on_renewed,
					       .ud = d };

		d->renew = renew_new(d->loop, d->cfg, d->config_path, d->hsm,
				     d->cloud, d->st, &rh, log_msg);
	}
	if (!d->key_uri || !d->cert_file || !d->renew) {
		log_error("main", "out of memory");
		return EB_EXIT_FAILURE;
	}
	d->shutdown = loop_timer_new(d->loop, on_shutdown_tick, d);
	d->sensors = sensors_new(d->loop, d->cfg, d->st,
				 d->cfg->store.ram_samples, on_samples, d);
	if (!d->shutdown || !d->sensors) {
		log_error("main", "out of memory");
		return EB_EXIT_FAILURE;
	}
	if (d->cfg->n_sensor == 0)
		log_notice("main",
			   "no sensors configured: add [sensor.NAME] "
			   "sections to %s or its conf.d/",
			   d->config_path);

	start_watchdog(d);

	d->cert_timer = loop_timer_new(d->loop, check_cert_expiry, d);
	if (d->cert_timer)
		check_cert_expiry(d->loop, d->cert_timer, d);

	cloud_start(d->cloud);
	sdn_notify("READY=1");
	status(d);
	log_info("main", "edgebridged %s running as '%s', %zu sensors",
		 EB_VERSION, d->cfg->gateway.id, sensors_count(d->sensors));

	r = loop_run(d->loop);
	if (r < 0) {
		log_error("main", "event loop failed: %s", strerror(-r));
		return EB_EXIT_FAILURE;
	}
	log_stats(d);
	return r;
}

/* ---- not configured yet ------------------------------------------------ */

static void announce_unset(struct daemon *d)
{
	log_notice("main",
		   "not configured yet: set %s in %s or a conf.d/*.conf "
		   "beside it, and add [sensor.NAME] sections (see "
		   "edgebridge.conf(5)); then reload (SIGHUP). No sensors "
		   "are running until then",
		   d->unset, d->config_path);
	sdn_notifyf("STATUS=not configured: set %s; no sensors configured",
		    d->unset);
}

static void on_signal_unset(struct loop *l, int signo, void *ud)
{
	struct daemon *d = ud;
	struct eb_config *c;

	switch (signo) {
	case SIGTERM:
	case SIGINT:
		sdn_notify("STOPPING=1");
		loop_quit(l, EB_EXIT_OK);
		break;
	case SIGHUP:
		log_info("main", "reloading %s", d->config_path);
		c = load_config(d->config_path, false, d->unset,
				sizeof(d->unset));
		if (c) {
			/* the identity, token and cloud are set up once, at
			 * start: the service manager starts us again */
			log_notice("main",
				   "configuration complete: exiting with "
				   "status %d to be started with it",
				   EB_EXIT_RESTART);
			config_free(c);
			sdn_notify("STOPPING=1");
			loop_quit(l, EB_EXIT_RESTART);
		} else if (d->unset[0]) {
			announce_unset(d);
		} else {
			log_error("main", "fix the configuration above, then "
					  "reload again");
			sdn_notify("STATUS=not configured: the configuration "
				   "has errors (edgebridged --check-config)");
		}
		break;
	case SIGUSR1:
		announce_unset(d);
		break;
	}
}

/*
 * The packaged configuration sets nothing yet.  Failing would leave a
 * failed unit behind every `apt install`; instead run idle and say what to
 * set: READY=1, a STATUS naming the keys, watchdog pings, and SIGHUP looks
 * again.  Nothing touches the token, the store or the network.
 */
static int wait_for_configuration(struct daemon *d)
{
	int r;

	d->loop = loop_new();
	if (!d->loop) {
		log_error("main", "out of memory");
		return EB_EXIT_FAILURE;
	}
	r = loop_signals(d->loop, loop_sigs, (int)EB_ARRAY_SIZE(loop_sigs),
			 on_signal_unset, d);
	if (r < 0) {
		log_error("main", "cannot set up signals: %s", strerror(-r));
		return EB_EXIT_FAILURE;
	}
	start_watchdog(d);
	sdn_notify("READY=1");
	announce_unset(d);
	r = loop_run(d->loop);
	if (r < 0) {
		log_error("main", "event loop failed: %s", strerror(-r));
		return EB_EXIT_FAILURE;
	}
	return r;
}

static void teardown(struct daemon *d)
{
	d->sensors = sensors_free(d->sensors);
	d->bulk = c8y_bulk_free(d->bulk);
	d->token = c8y_token_free(d->token);
	d->ops = c8y_ops_free(d->ops);
	d->tb = tb_device_free(d->tb);
	d->https = https_free(d->https);
	d->https_mtls = https_free(d->https_mtls);
	d->cloud = cloud_free(d->cloud);
	d->renew = renew_free(d->renew); /* after the transport using it */
	d->coap = hsm_coap_free(d->coap);
	free(d->key_uri);
	free(d->cert_file);
	loop_timer_free(d->watchdog);
	loop_timer_free(d->shutdown);
	loop_timer_free(d->cert_timer);
	d->loop = loop_free(d->loop);
	d->st = store_close(d->st);
	SSL_CTX_free(d->tls);
	d->hsm = hsm_close(d->hsm);
	d->cfg = config_free(d->cfg);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct daemon d = { .config_path = "/etc/edgebridge/edgebridge.conf" };
	bool check_only = false, verbose = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			d.config_path = optarg;
			break;
		case 'C':
			check_only = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'V':
			printf("edgebridged %s\n", EB_VERSION);
			return EB_EXIT_OK;
		case 'h':
			usage(stdout);
			return EB_EXIT_OK;
		default:
			usage(stderr);
			return EB_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return EB_EXIT_USAGE;
	}
	log_open("edgebridged");
	/* A peer that vanished mid-write must be an error code, not death. */
	signal(SIGPIPE, SIG_IGN);
	/* Block the signals the loop will read from its signalfd right away:
	 * a SIGUSR1 or SIGHUP during the token login must wait, not kill. */
	{
		sigset_t set;

		sigemptyset(&set);
		for (size_t i = 0; i < EB_ARRAY_SIZE(loop_sigs); i++)
			sigaddset(&set, loop_sigs[i]);
		sigprocmask(SIG_BLOCK, &set, NULL);
	}

	if (check_only) {
		struct cc_params cp;
		struct cc_report rep;

		d.cfg = load_config(d.config_path, true, NULL, 0);
		if (!d.cfg)
			return EB_EXIT_CONFIG;
		/* Everything but the key match, which needs the token. */
		cp = (struct cc_params){
			.cert_file = d.cfg->cloud.cert_file,
			.expect_cn = d.cfg->gateway.id,
			.now = time(NULL),
			.warn_seconds =
				(int64_t)(d.cfg->cloud.cert_warn_ms / 1000),
			.profile = cert_profile(d.cfg),
		};
		certcheck_run(&cp, &rep);
		for (size_t i = 0; i < rep.n; i++)
			if (rep.r[i].status != CC_PASS)
				fprintf(stderr, "%s: %s: %s\n",
					d.cfg->cloud.cert_file,
					rep.r[i].status == CC_FAIL ? "error"
								   : "warning",
					rep.r[i].msg);
		rc = rep.n_fail ? EB_EXIT_CONFIG : EB_EXIT_OK;
		if (rc == EB_EXIT_OK)
			printf("%s: configuration OK (%zu sensors)\n",
			       d.config_path, d.cfg->n_sensor);
		config_free(d.cfg);
		return rc;
	}

	d.cfg = load_config(d.config_path, false, d.unset, sizeof(d.unset));
	if (!d.cfg && d.unset[0]) {
		rc = wait_for_configuration(&d);
		teardown(&d);
		return rc;
	}
	if (!d.cfg) {
		log_error("main",
			  "invalid configuration in %s; see above "
			  "(check with: edgebridged --check-config)",
			  d.config_path);
		return EB_EXIT_CONFIG;
	}
	log_set_level(verbose ? EB_LOG_DEBUG : d.cfg->gateway.log_level);
	rc = run(&d);
	teardown(&d);
	return rc;
}
