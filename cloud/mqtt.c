/* SPDX-License-Identifier: MIT */
/*
 * Why it is built this way:
 *
 * - The socket is watched for EPOLLIN always and for EPOLLOUT only while
 *   mosquitto_want_write() says there is something to write; the interest
 *   set is synced in a loop "prepare" hook, right before each sleep, which
 *   is the only point where it can have changed.
 * - mosquitto_loop_misc() (keepalive PINGREQ, ping timeout) runs on a timer
 *   at a quarter of the keepalive, clamped to 1..15 s: often enough to ping
 *   in time, rare enough that an idle gateway hardly wakes up.
 * - Connection attempts are asynchronous (mosquitto_connect_async), so the
 *   TLS handshake proceeds through the same loop.  A TCP or TLS failure
 *   surfaces as an error from loop_read/loop_write; a refusal as a CONNACK
 *   code.  Either way we schedule the next attempt with backoff.
 * - Failures are reported when the reason changes, not on every retry: a
 *   gateway that cannot reach its broker for a week must not fill the
 *   journal (and the SD card) with identical lines.
 * - Every connection attempt gets a fresh libmosquitto instance, so the
 *   library never re-sends old QoS 1 messages by itself after a reconnect:
 *   the store is the one source of re-sends (see make_client()).
 */
#include <errno.h>
#include <mosquitto.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "../common/util.h"
#include "../hsm/hsm.h"
#include "backoff.h"
#include "mqtt.h"

enum state {
	ST_IDLE,
	ST_CONNECTING, /* TCP/TLS/CONNECT under way */
	ST_CONNECTED,
	ST_WAITING, /* backoff before the next attempt */
	ST_STOPPED,
};

struct mqtt {
	struct loop *loop;
	struct mosquitto *mosq;
	struct transport_opts o;
	char *host, *client_id;
	const struct transport_handler *h;
	void *ud;
	enum state state;
	int fd;		 /* registered with the loop, or -1 */
	uint32_t events; /* registered interest */
	struct loop_timer *misc_timer;
	struct loop_timer *retry_timer;
	struct backoff backoff;
	char last_log_err[256]; /* libmosquitto's last error line */
	/* Reasons already reported in this run of failures (a flapping pair
	 * of reasons must not flood the log either), and the attempt count. */
	char reported[4][512];
	unsigned n_reported;
	unsigned long failures;
	int connack;  /* last CONNACK code, -1 none */
	int sock_err; /* SO_ERROR of a socket that hung up */
	/* mqtt_try_tls(): the attempt under way uses a new context; the
	 * previous one comes back if it fails */
	bool trial;
	SSL_CTX *trial_prev;
	mqtt_trial_fn trial_done;
	void *trial_ud;
};

static void report(struct mqtt *m, enum eb_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct mqtt *m, enum eb_log_level lvl, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!m->o.report)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	m->o.report(lvl, "mqtt", "%s", buf);
}

static uint64_t misc_period_ms(const struct mqtt *m)
{
	uint64_t p = (uint64_t)m->o.keepalive_s * 1000 / 4;

	if (p < 1000)
		p = 1000;
	if (p > 15000)
		p = 15000;
	return p;
}

static void unwatch(struct mqtt *m)
{
	if (m->fd >= 0)
		loop_io_del(m->loop, m->fd);
	m->fd = -1;
	m->events = 0;
}

static void schedule_retry(struct mqtt *m)
{
	uint64_t delay = backoff_next(&m->backoff, backoff_random());

	m->state = ST_WAITING;
	loop_timer_disarm(m->misc_timer);
	loop_timer_arm_in(m->retry_timer, delay);
	report(m, EB_LOG_DEBUG, "next connection attempt in %llu ms",
	       (unsigned long long)delay);
}

/*
 * Reports a failure once per distinct reason within a run of failures, and
 * a reminder after 10, 100, 1000... attempts, so a box that cannot reach
 * its broker for a week says so without filling the journal.
 */
static void fail(struct mqtt *m, const char *reason)
{
	unsigned long n = ++m->failures;
	bool seen = false;

	for (unsigned i = 0; i < m->n_reported; i++)
		seen |= !strcmp(m->reported[i], reason);
	if (!seen && m->n_reported < EB_ARRAY_SIZE(m->reported)) {
		report(m, EB_LOG_ERR, "%s", reason);
		eb_strlcpy(m->reported[m->n_reported++], reason,
			   sizeof(m->reported[0]));
		return;
	}
	while (n % 10 == 0)
		n /= 10;
	if (n == 1)
		report(m, EB_LOG_WARNING,
		       "still cannot connect after %lu attempts: %s",
		       m->failures, reason);
	else
		report(m, EB_LOG_DEBUG, "still failing: %s", reason);
}

static void clear_failures(struct mqtt *m)
{
	m->n_reported = 0;
	m->failures = 0;
}

static void describe_failure(struct mqtt *m, int rc, char *buf, size_t len)
{
	char verify[300], ssl_err[300];

	hsm_tls_take_verify_error(m->o.tls, verify, sizeof(verify));
	if (verify[0]) {
		snprintf(buf, len,
			 "TLS handshake with %s:%u failed: server certificate "
			 "verify failed: %s; check cloud.ca_file and "
			 "cloud.host",
			 m->host, m->o.port, verify);
	} else if (m->connack > 0) {
		snprintf(buf, len,
			 "broker %s:%u refused the connection: %s (CONNACK "
			 "%d)",
			 m->host, m->o.port,
			 mosquitto_connack_string(m->connack), m->connack);
	} else if (m->last_log_err[0]) {
		snprintf(buf, len, "connection to %s:%u failed: %s", m->host,
			 m->o.port, m->last_log_err);
	} else if (hsm_openssl_errors(ssl_err, sizeof(ssl_err)), ssl_err[0]) {
		snprintf(buf, len, "connection to %s:%u failed: %s", m->host,
			 m->o.port, ssl_err);
	} else if (m->sock_err) {
		snprintf(buf, len, "connection to %s:%u failed: %s", m->host,
			 m->o.port, strerror(m->sock_err));
	} else if (rc == MOSQ_ERR_CONN_LOST && m->state == ST_CONNECTING) {
		snprintf(buf, len,
			 "connection to %s:%u failed: refused or closed by the "
			 "server before the MQTT session started",
			 m->host, m->o.port);
	} else if (rc == MOSQ_ERR_ERRNO && errno) {
		snprintf(buf, len, "connection to %s:%u failed: %s", m->host,
			 m->o.port, strerror(errno));
	} else {
		snprintf(buf, len, "connection to %s:%u failed: %s", m->host,
			 m->o.port, mosquitto_strerror(rc));
	}
}

/* The connection is gone (or never came up): clean up, plan the next try. */
static void lost(struct mqtt *m, int rc)
{
	bool was_connected = m->state == ST_CONNECTED;
	char reason[700];

	if (m->state == ST_STOPPED || m->state == ST_WAITING)
		return;
	unwatch(m);
	if (was_connected) {
		if (rc == MOSQ_ERR_KEEPALIVE)
			snprintf(reason, sizeof(reason),
				 "no answer from %s:%u within the keepalive",
				 m->host, m->o.port);
		else
			describe_failure(m, rc, reason, sizeof(reason));
		report(m, EB_LOG_WARNING, "disconnected from %s:%u (%s)",
		       m->host, m->o.port, reason);
		clear_failures(m);
		if (m->h->disconnected)
			m->h->disconnected(m->ud);
	} else {
		const char *hint;
		size_t n;

		describe_failure(m, rc, reason, sizeof(reason));
		hint = hsm_tls_alert_hint(reason);
		n = strlen(reason);
		if (hint && n < sizeof(reason))
			snprintf(reason + n, sizeof(reason) - n, " (%s)", hint);
		if (m->trial) {
			/* the new credentials failed, not the link: back to
			 * the old ones at once */
			m->trial = false;
			m->o.tls = m->trial_prev;
			backoff_reset(&m->backoff);
			m->trial_done(m->trial_ud, false, reason);
		} else {
			fail(m, reason);
		}
	}
	m->last_log_err[0] = '\0';
	m->connack = -1;
	m->sock_err = 0;
	ERR_clear_error();
	schedule_retry(m);
}

/*
 * A socket that hung up or failed is gone for good, whatever libmosquitto
 * makes of it: during a non-blocking connect it keeps retrying the TLS
 * handshake on a refused socket and reports success each time.  So an
 * EPOLLHUP/EPOLLERR ends the attempt here, after one last read for what
 * may still be buffered.
 */
static void on_io(struct loop *l, int fd, uint32_t ev, void *data)
{
	struct mqtt *m = data;
	int rc = MOSQ_ERR_SUCCESS;

	(void)l;
	if (ev & (EPOLLERR | EPOLLHUP)) {
		socklen_t sl = sizeof(m->sock_err);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &m->sock_err, &sl) < 0)
			m->sock_err = errno;
		/* may hold a TLS alert that says why */
		rc = mosquitto_loop_read(m->mosq, 1);
		if (rc == MOSQ_ERR_SUCCESS)
			rc = MOSQ_ERR_CONN_LOST;
		lost(m, rc);
		return;
	}
	if (ev & EPOLLIN)
		rc = mosquitto_loop_read(m->mosq, 1);
	if (rc == MOSQ_ERR_SUCCESS && (ev & EPOLLOUT) && m->fd >= 0)
		rc = mosquitto_loop_write(m->mosq, 1);
	if (rc != MOSQ_ERR_SUCCESS)
		lost(m, rc);
}

/* Before each sleep: follow the socket and the write interest. */
static void prepare(struct loop *l, void *data)
{
	struct mqtt *m = data;
	int fd;
	uint32_t ev;

	if (m->state != ST_CONNECTING && m->state != ST_CONNECTED)
		return;
	fd = mosquitto_socket(m->mosq);
	if (fd != m->fd)
		unwatch(m);
	if (fd < 0)
		return;
	ev = EPOLLIN | (mosquitto_want_write(m->mosq) ? EPOLLOUT : 0);
	if (m->fd < 0) {
		if (loop_io_add(l, fd, ev, on_io, m) == 0) {
			m->fd = fd;
			m->events = ev;
		}
	} else if (ev != m->events) {
		if (loop_io_mod(l, fd, ev) == 0)
			m->events = ev;
	}
}

static void on_misc(struct loop *l, struct loop_timer *t, void *data)
{
	struct mqtt *m = data;
	int rc;

	(void)l;
	rc = mosquitto_loop_misc(m->mosq);
	if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
		lost(m, rc);
		return;
	}
	/* loop_misc closes the socket itself on a ping timeout */
	if (m->state == ST_CONNECTED && mosquitto_socket(m->mosq) < 0) {
		lost(m, MOSQ_ERR_KEEPALIVE);
		return;
	}
	loop_timer_arm_in(t, misc_period_ms(m));
}

static void cb_connect(struct mosquitto *mosq, void *ud, int rc);
static void cb_disconnect(struct mosquitto *mosq, void *ud, int rc);
static void cb_publish(struct mosquitto *mosq, void *ud, int mid);
static void cb_message(struct mosquitto *mosq, void *ud,
		       const struct mosquitto_message *msg);
static void cb_log(struct mosquitto *mosq, void *ud, int level, const char *s);

/*
 * A fresh libmosquitto instance for every connection attempt: with the old
 * one, unacknowledged QoS 1 messages would be re-sent by the library after
 * the reconnect, on top of the store offering the same rows again.  The
 * store is the one source of re-sends.
 */
static int make_client(struct mqtt *m)
{
	if (m->mosq) {
		unwatch(m);
		mosquitto_destroy(m->mosq);
	}
	/* clean session: Cumulocity requires it */
	m->mosq = mosquitto_new(m->client_id, true, m);
	if (!m->mosq)
		return -ENOMEM;
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
			     MQTT_PROTOCOL_V311);
	if (mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, m->o.tls) ||
	    mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0))
		return -EINVAL;
	if (m->o.will_topic &&
	    mosquitto_will_set(m->mosq, m->o.will_topic,
			       (int)strlen(m->o.will_payload),
			       m->o.will_payload, 1, false) != MOSQ_ERR_SUCCESS)
		return -EINVAL;
	mosquitto_max_inflight_messages_set(m->mosq, m->o.max_inflight);
	mosquitto_connect_callback_set(m->mosq, cb_connect);
	mosquitto_disconnect_callback_set(m->mosq, cb_disconnect);
	mosquitto_publish_callback_set(m->mosq, cb_publish);
	mosquitto_message_callback_set(m->mosq, cb_message);
	mosquitto_log_callback_set(m->mosq, cb_log);
	return 0;
}

static void attempt(struct mqtt *m)
{
	int rc;

	m->state = ST_CONNECTING;
	m->connack = -1;
	m->last_log_err[0] = '\0';
	if (make_client(m) < 0) {
		fail(m, "cannot create the MQTT client (out of memory?)");
		schedule_retry(m);
		return;
	}
	errno = 0;
	rc = mosquitto_connect_async(m->mosq, m->host, (int)m->o.port,
				     (int)m->o.keepalive_s);
	if (rc != MOSQ_ERR_SUCCESS) {
		lost(m, rc);
		return;
	}
	loop_timer_arm_in(m->misc_timer, misc_period_ms(m));
}

static void on_retry(struct loop *l, struct loop_timer *t, void *data)
{
	(void)l, (void)t;
	attempt(data);
}

static void cb_connect(struct mosquitto *mosq, void *ud, int rc)
{
	struct mqtt *m = ud;

	(void)mosq;
	if (rc != 0) {
		m->connack = rc;
		return; /* the library disconnects; lost() follows */
	}
	m->state = ST_CONNECTED;
	backoff_reset(&m->backoff);
	clear_failures(m);
	report(m, EB_LOG_NOTICE, "connected to %s:%u as '%s'", m->host,
	       m->o.port, m->client_id);
	if (m->trial) {
		m->trial = false;
		m->trial_done(m->trial_ud, true, NULL);
	}
	if (m->h->connected)
		m->h->connected(m->ud);
}

static void cb_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
	struct mqtt *m = ud;

	(void)mosq;
	if (m->state == ST_CONNECTED || m->state == ST_CONNECTING)
		lost(m, rc ? rc : MOSQ_ERR_CONN_LOST);
}

static void cb_publish(struct mosquitto *mosq, void *ud, int mid)
{
	struct mqtt *m = ud;

	(void)mosq;
	if (m->h->published)
		m->h->published(m->ud, mid);
}

static void cb_message(struct mosquitto *mosq, void *ud,
		       const struct mosquitto_message *msg)
{
	struct mqtt *m = ud;

	(void)mosq;
	if (m->h->message)
		m->h->message(m->ud, msg->topic, msg->payload,
			      (size_t)msg->payloadlen);
}

static void cb_log(struct mosquitto *mosq, void *ud, int level, const char *s)
{
	struct mqtt *m = ud;

	(void)mosq;
	if (level & MOSQ_LOG_ERR)
		eb_strlcpy(m->last_log_err, s, sizeof(m->last_log_err));
}

struct mqtt *mqtt_new(struct loop *loop, const struct transport_opts *opts,
		      const struct transport_handler *h, void *ud,
		      struct eb_err *err)
{
	struct mqtt *m;

	mosquitto_lib_init();
	m = calloc(1, sizeof(*m));
	if (!m)
		goto oom;
	m->loop = loop;
	m->o = *opts;
	m->h = h;
	m->ud = ud;
	m->fd = -1;
	m->connack = -1;
	m->host = strdup(opts->host);
	m->client_id = strdup(opts->client_id);
	if (!m->host || !m->client_id)
		goto oom;
	backoff_init(&m->backoff, opts->backoff_min_ms, opts->backoff_max_ms);
	m->misc_timer = loop_timer_new(loop, on_misc, m);
	m->retry_timer = loop_timer_new(loop, on_retry, m);
	if (!m->misc_timer || !m->retry_timer ||
	    loop_prepare_add(loop, prepare, m) < 0)
		goto oom;
	return m;
oom:
	eb_errf(err, -ENOMEM, "out of memory");
	return mqtt_free(m);
}

struct mqtt *mqtt_free(struct mqtt *m)
{
	if (!m)
		return NULL;
	unwatch(m);
	loop_timer_free(m->misc_timer);
	loop_timer_free(m->retry_timer);
	if (m->mosq)
		mosquitto_destroy(m->mosq);
	free(m->host);
	free(m->client_id);
	/* The prepare hook stays registered but does nothing once stopped;
	 * the loop is torn down together with us. */
	free(m);
	mosquitto_lib_cleanup();
	return NULL;
}

void mqtt_start(struct mqtt *m)
{
	attempt(m);
}

/* A clean DISCONNECT (no last will), flushed on the non-blocking socket. */
static void say_goodbye(struct mqtt *m)
{
	mosquitto_disconnect(m->mosq);
	for (int i = 0; i < 10 && mosquitto_want_write(m->mosq); i++)
		if (mosquitto_loop_write(m->mosq, 1) != MOSQ_ERR_SUCCESS)
			break;
	report(m, EB_LOG_INFO, "disconnected from %s:%u", m->host, m->o.port);
}

void mqtt_stop(struct mqtt *m)
{
	bool was_connected = m->state == ST_CONNECTED;

	/* First, so the disconnect callback knows this one is ours. */
	m->state = ST_STOPPED;
	if (was_connected)
		say_goodbye(m);
	unwatch(m);
	loop_timer_disarm(m->misc_timer);
	loop_timer_disarm(m->retry_timer);
}

int mqtt_try_tls(struct mqtt *m, SSL_CTX *tls, mqtt_trial_fn done, void *ud)
{
	bool was_connected = m->state == ST_CONNECTED;

	if (m->trial || m->state == ST_STOPPED)
		return -EBUSY;
	/* a connection with other credentials is a new session: the old
	 * one ends cleanly first (the broker would drop it anyway) */
	m->state = ST_WAITING;
	if (was_connected)
		say_goodbye(m);
	unwatch(m);
	loop_timer_disarm(m->retry_timer);
	if (was_connected && m->h->disconnected)
		m->h->disconnected(m->ud);
	m->trial = true;
	m->trial_prev = m->o.tls;
	m->trial_done = done;
	m->trial_ud = ud;
	m->o.tls = tls;
	clear_failures(m);
	report(m, EB_LOG_NOTICE, "connecting to %s:%u with the new certificate",
	       m->host, m->o.port);
	attempt(m);
	return 0;
}

bool mqtt_connected(const struct mqtt *m)
{
	return m->state == ST_CONNECTED;
}

int mqtt_publish(struct mqtt *m, const char *topic, const void *payload,
		 size_t len, int qos, int *mid)
{
	int rc;

	if (m->state != ST_CONNECTED)
		return -ENOTCONN;
	rc = mosquitto_publish(m->mosq, mid, topic, (int)len, payload, qos,
			       false);
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
		return 0;
	case MOSQ_ERR_NO_CONN:
		return -ENOTCONN;
	case MOSQ_ERR_NOMEM:
		return -ENOMEM;
	case MOSQ_ERR_PAYLOAD_SIZE:
	case MOSQ_ERR_OVERSIZE_PACKET:
		return -EMSGSIZE;
	default:
		return -EIO;
	}
}

int mqtt_subscribe(struct mqtt *m, const char *topic, int qos)
{
	if (m->state != ST_CONNECTED)
		return -ENOTCONN;
	return mosquitto_subscribe(m->mosq, NULL, topic, qos) ==
			       MOSQ_ERR_SUCCESS
		       ? 0
		       : -EIO;
}

bool mqtt_idle(const struct mqtt *m)
{
	return !m->mosq || !mosquitto_want_write(m->mosq);
}

/* The transport seam: thin wrappers, the same behaviour. */
static struct transport *t_create(struct loop *loop,
				  const struct transport_opts *o,
				  const struct transport_handler *h, void *ud,
				  struct eb_err *err)
{
	return (struct transport *)mqtt_new(loop, o, h, ud, err);
}

static struct transport *t_destroy(struct transport *t)
{
	mqtt_free((struct mqtt *)t);
	return NULL;
}

static void t_start(struct transport *t)
{
	mqtt_start((struct mqtt *)t);
}

static void t_stop(struct transport *t)
{
	mqtt_stop((struct mqtt *)t);
}

static bool t_connected(const struct transport *t)
{
	return mqtt_connected((const struct mqtt *)t);
}

static int t_publish(struct transport *t, const char *topic,
		     const void *payload, size_t len, int qos, int *id)
{
	return mqtt_publish((struct mqtt *)t, topic, payload, len, qos, id);
}

static int t_subscribe(struct transport *t, const char *topic, int qos)
{
	return mqtt_subscribe((struct mqtt *)t, topic, qos);
}

static bool t_idle(const struct transport *t)
{
	return mqtt_idle((const struct mqtt *)t);
}

static int t_try_tls(struct transport *t, SSL_CTX *tls, transport_trial_fn done,
		     void *ud)
{
	return mqtt_try_tls((struct mqtt *)t, tls, done, ud);
}

const struct transport_ops transport_mqtt = {
	.name = "mqtt",
	.create = t_create,
	.destroy = t_destroy,
	.start = t_start,
	.stop = t_stop,
	.connected = t_connected,
	.publish = t_publish,
	.subscribe = t_subscribe,
	.idle = t_idle,
	.try_tls = t_try_tls,
};
