/* SPDX-License-Identifier: MIT */
/*
 * Why it is built this way:
 *
 * - One libcoap context for the life of the transport, watched through
 *   coap_context_get_coap_fd(): libcoap's own epoll fd, which also holds
 *   its retransmission timerfd, so it becomes readable both for datagrams
 *   and for due retransmissions.  Each time it does, coap_io_process(ctx,
 *   COAP_IO_NO_WAIT) runs.  After we queued a request from outside libcoap
 *   the loop's prepare hook runs it once more, so the retransmission timer
 *   is armed before the loop sleeps.  No thread, no polling.
 * - A fresh session for every connection attempt, as mqtt.c does with its
 *   libmosquitto instance: nothing from an old session is re-sent by the
 *   library, the store is the one source of re-sends.  "Connected" means
 *   the DTLS handshake is done.
 * - Requests are confirmable; libcoap retransmits them as RFC 7252 says
 *   (ACK_TIMEOUT, MAX_RETRANSMIT, NSTART from the configuration) and
 *   answers a final failure with a NACK.  A NACK, a DTLS alert or a
 *   response that is not 2.xx ends the session: the uplink empties its
 *   window and the store offers the rows again on the next session.  A
 *   row therefore leaves the store only on its 2.xx.  (A 4.xx for one
 *   payload would make that payload come back after each backoff; it is
 *   reported with the code, never dropped silently.)
 * - CoAP keepalive (empty confirmable pings while idle) finds a server
 *   that restarted and forgot the DTLS session even when nothing is sent.
 * - libcoap calls back from inside coap_io_process(); a session is never
 *   released there.  Handlers only note that the session is lost, and the
 *   transport acts on it once libcoap has returned.
 * - libcoap's log: warnings are kept as the reason of the next failure
 *   (an alert, a verify error); a line naming the PIN never passes.
 */
#include <coap3/coap.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "../hsm/hsm.h"
#include "../hsm/hsm_coap.h"
#include "backoff.h"
#include "coaps.h"
#include "transport.h"

#define TB_PREFIX "v1/devices/me/"
#define MAX_OBSERVE 8
#define MAX_PATH 256
#define MAX_TOPIC 256
#define HANDSHAKE_TIMEOUT_MS 30000

/* ---- topics and resources (pure) ------------------------------------ */

static bool has_prefix(const char *s, const char *p)
{
	return !strncmp(s, p, strlen(p));
}

static int put(char *buf, size_t len, const char *fmt, const char *a)
{
	int n = snprintf(buf, len, fmt, a);

	return n < 0 ? -EINVAL : (size_t)n >= len ? -ENAMETOOLONG : n;
}

static bool valid_topic(const char *t)
{
	if (!*t || strpbrk(t, "+#") || *t == '/' || strstr(t, "//"))
		return false;
	return t[strlen(t) - 1] != '/';
}

static bool parse_id(const char *s, long *id)
{
	char *end;

	errno = 0;
	*id = strtol(s, &end, 10);
	return *s && !*end && !errno && *id >= 0;
}

/* "sharedKeys=a,b&clientKeys=c" of {"sharedKeys": "a,b", ...}. */
static int attr_query(const char *payload, size_t plen, char *q, size_t len)
{
	static const char *const kinds[] = { "sharedKeys", "clientKeys" };
	json_t *j = json_loadb(payload, plen, 0, NULL);
	size_t n = 0;
	int r = 0;

	q[0] = '\0';
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	for (size_t i = 0; i < EB_ARRAY_SIZE(kinds) && !r; i++) {
		json_t *v = json_object_get(j, kinds[i]);
		const char *keys;
		int w;

		if (!v)
			continue;
		if (!json_is_string(v) || strchr(json_string_value(v), '&')) {
			r = -EBADMSG;
			break;
		}
		keys = json_string_value(v);
		/* one Uri-Query option holds 255 bytes: else ask for all */
		if (strlen(kinds[i]) + 1 + strlen(keys) > 255)
			continue;
		w = snprintf(q + n, len - n, "%s%s=%s", n ? "&" : "", kinds[i],
			     keys);
		if (w < 0 || (size_t)w >= len - n)
			r = -ENAMETOOLONG;
		else
			n += (size_t)w;
	}
	json_decref(j);
	return r;
}

int coaps_route(const char *topic, const char *payload, size_t plen,
		struct coaps_route *r)
{
	const size_t plen_path = sizeof(r->path);
	const char *id;
	long n;
	int q;

	memset(r, 0, sizeof(*r));
	if (!valid_topic(topic))
		return -EINVAL;
	if (!strcmp(topic, TB_PREFIX "telemetry"))
		return put(r->path, plen_path, "%s", "/api/v1/telemetry");
	if (!strcmp(topic, TB_PREFIX "attributes"))
		return put(r->path, plen_path, "%s", "/api/v1/attributes");
	id = topic + strlen(TB_PREFIX "attributes/request/");
	if (has_prefix(topic, TB_PREFIX "attributes/request/") &&
	    parse_id(id, &n)) {
		r->get = true;
		q = attr_query(payload, plen, r->query, sizeof(r->query));
		if (q < 0)
			return q;
		q = put(r->answer, sizeof(r->answer),
			TB_PREFIX "attributes/response/%s", id);
		if (q < 0)
			return q;
		return put(r->path, plen_path, "%s", "/api/v1/attributes");
	}
	id = topic + strlen(TB_PREFIX "rpc/response/");
	if (has_prefix(topic, TB_PREFIX "rpc/response/") && parse_id(id, &n))
		return put(r->path, plen_path, "/api/v1/rpc/%s", id);
	id = topic + strlen(TB_PREFIX "rpc/request/");
	if (has_prefix(topic, TB_PREFIX "rpc/request/") && parse_id(id, &n)) {
		q = put(r->answer, sizeof(r->answer),
			TB_PREFIX "rpc/response/%s", id);
		if (q < 0)
			return q;
		return put(r->path, plen_path, "%s", "/api/v1/rpc");
	}
	return put(r->path, plen_path, "/%s", topic);
}

int coaps_observe_path(const char *topic, char *path, size_t len)
{
	if (!strcmp(topic, TB_PREFIX "attributes"))
		return put(path, len, "%s", "/api/v1/attributes");
	if (!strcmp(topic, TB_PREFIX "rpc/request/+"))
		return put(path, len, "%s", "/api/v1/rpc");
	if (!strcmp(topic, TB_PREFIX "attributes/response/+") ||
	    !strcmp(topic, TB_PREFIX "rpc/response/+"))
		return put(path, len, "%s", "");
	if (!valid_topic(topic))
		return -EINVAL;
	return put(path, len, "/%s", topic);
}

int coaps_notify_topic(const char *sub, const char *payload, size_t plen,
		       char *topic, size_t len)
{
	char id[32];
	json_t *j, *v;

	if (strcmp(sub, TB_PREFIX "rpc/request/+"))
		return put(topic, len, "%s", sub);
	j = json_loadb(payload, plen, 0, NULL);
	v = json_object_get(j, "id");
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		json_decref(j);
		return -EBADMSG;
	}
	snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(v));
	json_decref(j);
	if ((size_t)snprintf(topic, len, TB_PREFIX "rpc/request/%s", id) >= len)
		return -ENAMETOOLONG;
	return (int)strlen(topic);
}

bool coaps_is_json(const void *payload, size_t len)
{
	const char *p = payload;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')
			continue;
		return p[i] == '{' || p[i] == '[';
	}
	return false;
}

/* ---- the transport -------------------------------------------------- */

enum state {
	ST_IDLE,
	ST_CONNECTING, /* DTLS handshake under way */
	ST_CONNECTED,
	ST_WAITING, /* backoff before the next attempt */
	ST_STOPPED,
};

struct request {
	int id;
	uint64_t deadline_ms; /* no answer by then: the session is lost */
	size_t tlen;
	uint8_t token[8];
	char path[MAX_PATH];
	char answer[MAX_TOPIC]; /* "" or where a 2.xx answer's payload goes */
};

struct observation {
	char topic[MAX_TOPIC]; /* as subscribed */
	char path[MAX_PATH];
	size_t tlen;
	uint8_t token[8];
};

struct coaps {
	struct loop *loop;
	struct transport_opts o;
	char *host, *client_id;
	const struct transport_handler *h;
	void *ud;
	enum state state;
	coap_context_t *ctx;
	coap_session_t *sess;
	int fd; /* libcoap's epoll fd, registered with the loop */
	bool dirty;
	struct loop_timer *retry_timer, *handshake_timer, *request_timer;
	struct backoff backoff;
	int next_id;
	struct request *req;
	unsigned n_req, cap_req;
	struct observation obs[MAX_OBSERVE];
	unsigned n_obs;
	/* a reason the session ended, noted inside a libcoap callback */
	char lost_reason[512];
	bool lost;
	/* failure reports: the last reason, and how often in a row */
	char last_reported[512];
	unsigned long failures;
	unsigned ack_timeout_ms, max_retransmit, nstart;
};

/* libcoap's log handler has no user data: the one transport there is. */
static struct coaps *log_owner;
static char coap_last_log[300];

static void report(struct coaps *m, enum eb_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct coaps *m, enum eb_log_level lvl, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!m->o.report)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	m->o.report(lvl, "coap", "%s", buf);
}

static void on_coap_log(coap_log_t level, const char *msg)
{
	char line[sizeof(coap_last_log)];
	size_t n;

	/* "PKCS11: <the PIN>: Unable to set pin" */
	if (strcasestr(msg, "pin"))
		return;
	eb_strlcpy(line, msg, sizeof(line));
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	while (line[0] == ' ' || line[0] == '*')
		memmove(line, line + 1, n--);
	if (level <= LOG_WARNING || strstr(line, "alert"))
		eb_strlcpy(coap_last_log, line, sizeof(coap_last_log));
	if (log_owner)
		report(log_owner, EB_LOG_DEBUG, "libcoap: %s", line);
}

static void unwatch(struct coaps *m)
{
	if (m->fd >= 0)
		loop_io_del(m->loop, m->fd);
	m->fd = -1;
}

/* Ends the session, if any; libcoap must not be inside a callback. */
static void drop_session(struct coaps *m)
{
	coap_session_t *s = m->sess;

	m->sess = NULL;
	m->n_req = 0;
	m->n_obs = 0;
	if (m->request_timer)
		loop_timer_disarm(m->request_timer);
	if (s) {
		coap_session_set_app_data(s, NULL);
		coap_session_release(s);
	}
}

static void schedule_retry(struct coaps *m)
{
	uint64_t delay = backoff_next(&m->backoff, backoff_random());

	m->state = ST_WAITING;
	loop_timer_disarm(m->handshake_timer);
	loop_timer_arm_in(m->retry_timer, delay);
	report(m, EB_LOG_DEBUG, "next connection attempt in %llu ms",
	       (unsigned long long)delay);
}

/* A reason is reported when it changes, then after 10, 100... attempts. */
static void fail(struct coaps *m, const char *reason)
{
	unsigned long n = ++m->failures;

	if (strcmp(m->last_reported, reason)) {
		report(m, EB_LOG_ERR, "%s", reason);
		eb_strlcpy(m->last_reported, reason, sizeof(m->last_reported));
		return;
	}
	while (n % 10 == 0)
		n /= 10;
	report(m, n == 1 ? EB_LOG_WARNING : EB_LOG_DEBUG,
	       "still cannot connect after %lu attempts: %s", m->failures,
	       reason);
}

/* The session is gone (or never came up): plan the next attempt. */
static void lost(struct coaps *m, const char *why)
{
	bool was_connected = m->state == ST_CONNECTED;
	char reason[700];
	const char *hint;
	size_t n;

	if (m->state != ST_CONNECTED && m->state != ST_CONNECTING)
		return;
	m->lost = false;
	drop_session(m);
	if (was_connected) {
		report(m, EB_LOG_WARNING, "disconnected from %s:%u (%s)",
		       m->host, m->o.port, why);
		m->last_reported[0] = '\0';
		m->failures = 0;
		m->state = ST_WAITING;
		if (m->h->disconnected)
			m->h->disconnected(m->ud);
	} else {
		snprintf(reason, sizeof(reason),
			 "DTLS session with %s:%u failed: %s", m->host,
			 m->o.port, why);
		hint = hsm_tls_alert_hint(reason);
		n = strlen(reason);
		if (hint && n < sizeof(reason))
			snprintf(reason + n, sizeof(reason) - n, " (%s)", hint);
		fail(m, reason);
	}
	coap_last_log[0] = '\0';
	if (m->state != ST_STOPPED)
		schedule_retry(m);
}

/* Noted inside a libcoap callback; acted on once libcoap returned. */
static void note_lost(struct coaps *m, const char *fmt, const char *detail)
{
	if (m->lost)
		return;
	m->lost = true;
	snprintf(m->lost_reason, sizeof(m->lost_reason), fmt, detail);
	if (coap_last_log[0]) {
		size_t n = strlen(m->lost_reason);

		snprintf(m->lost_reason + n, sizeof(m->lost_reason) - n, ": %s",
			 coap_last_log);
	}
}

static void process(struct coaps *m)
{
	m->dirty = false;
	if (m->ctx && coap_io_process(m->ctx, COAP_IO_NO_WAIT) < 0)
		note_lost(m, "%s", "libcoap I/O failed");
	if (m->lost)
		lost(m, m->lost_reason);
}

static void on_io(struct loop *l, int fd, uint32_t ev, void *data)
{
	(void)l, (void)fd, (void)ev;
	process(data);
}

static void prepare(struct loop *l, void *data)
{
	struct coaps *m = data;

	(void)l;
	if (m->dirty || m->lost)
		process(m);
}

static struct coaps *of_session(coap_session_t *s)
{
	struct coaps *m = coap_session_get_app_data(s);

	/* callbacks for a session we already let go of */
	return m && m->sess == s ? m : NULL;
}

static int on_event(coap_session_t *s, const coap_event_t ev)
{
	struct coaps *m = of_session(s);

	if (!m)
		return 0;
	switch (ev) {
	case COAP_EVENT_DTLS_CONNECTED:
		if (m->state != ST_CONNECTING)
			break;
		m->state = ST_CONNECTED;
		loop_timer_disarm(m->handshake_timer);
		backoff_reset(&m->backoff);
		m->last_reported[0] = '\0';
		m->failures = 0;
		coap_last_log[0] = '\0';
		report(m, EB_LOG_NOTICE, "connected to %s:%u (DTLS) as '%s'",
		       m->host, m->o.port, m->client_id);
		if (m->h->connected)
			m->h->connected(m->ud);
		break;
	case COAP_EVENT_DTLS_CLOSED:
		note_lost(m, "%s", "the DTLS session was closed");
		break;
	case COAP_EVENT_XMIT_BLOCK_FAIL:
		note_lost(m, "%s", "a block-wise request failed");
		break;
	case COAP_EVENT_DTLS_ERROR:
		note_lost(m, "%s", "DTLS error");
		break;
	case COAP_EVENT_SESSION_FAILED:
	case COAP_EVENT_SESSION_CLOSED:
		note_lost(m, "%s", "session closed");
		break;
	default:
		break;
	}
	return 0;
}

static const char *nack_text(coap_nack_reason_t r)
{
	switch (r) {
	case COAP_NACK_TOO_MANY_RETRIES:
		return "no answer after the last retransmission";
	case COAP_NACK_NOT_DELIVERABLE:
		return "not deliverable";
	case COAP_NACK_RST:
		return "reset by the server";
	case COAP_NACK_TLS_FAILED:
		return "DTLS failed";
	case COAP_NACK_ICMP_ISSUE:
		return "ICMP error (port unreachable?)";
	default:
		return "failed";
	}
}

static void on_nack(coap_session_t *s, const coap_pdu_t *sent,
		    const coap_nack_reason_t reason, const coap_mid_t mid)
{
	struct coaps *m = of_session(s);

	(void)sent, (void)mid;
	if (m)
		note_lost(m, "request %s", nack_text(reason));
}

static int find_request(struct coaps *m, coap_bin_const_t tok)
{
	for (unsigned i = 0; i < m->n_req; i++)
		if (m->req[i].tlen == tok.length &&
		    !memcmp(m->req[i].token, tok.s, tok.length))
			return (int)i;
	return -1;
}

static struct observation *find_observation(struct coaps *m,
					    coap_bin_const_t tok)
{
	for (unsigned i = 0; i < m->n_obs; i++)
		if (m->obs[i].tlen == tok.length &&
		    !memcmp(m->obs[i].token, tok.s, tok.length))
			return &m->obs[i];
	return NULL;
}

static void deliver(struct coaps *m, const char *topic, const coap_pdu_t *pdu)
{
	const uint8_t *data;
	size_t len = 0, off, total;

	if (!coap_get_data_large(pdu, &len, &data, &off, &total))
		return;
	if (m->h->message)
		m->h->message(m->ud, topic, data, len);
}

static void notified(struct coaps *m, struct observation *o,
		     const coap_pdu_t *pdu, unsigned code)
{
	const uint8_t *data;
	size_t len = 0, off, total;
	char topic[MAX_TOPIC];

	if (code >> 5 != 2) {
		report(m, EB_LOG_WARNING, "cannot observe %s: %u.%02u", o->path,
		       code >> 5, code & 31);
		return;
	}
	if (!coap_get_data_large(pdu, &len, &data, &off, &total) || !len)
		return; /* registered, nothing to say yet */
	if (coaps_notify_topic(o->topic, (const char *)data, len, topic,
			       sizeof(topic)) < 0) {
		report(m, EB_LOG_WARNING,
		       "notification on %s without a usable id: ignored",
		       o->path);
		return;
	}
	deliver(m, topic, pdu);
}

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
				   const coap_pdu_t *recv, const coap_mid_t mid)
{
	struct coaps *m = of_session(s);
	coap_bin_const_t tok = coap_pdu_get_token(recv);
	unsigned code = coap_pdu_get_code(recv);
	struct observation *o;
	struct request r;
	int i;

	(void)sent, (void)mid;
	if (!m)
		return COAP_RESPONSE_OK;
	o = find_observation(m, tok);
	if (o) {
		notified(m, o, recv, code);
		return COAP_RESPONSE_OK;
	}
	i = find_request(m, tok);
	if (i < 0)
		return COAP_RESPONSE_OK; /* from before a reconnect */
	r = m->req[i];
	m->req[i] = m->req[--m->n_req];
	if (code >> 5 != 2) {
		char what[MAX_PATH + 64];

		snprintf(what, sizeof(what),
			 "the server answered %u.%02u to %s", code >> 5,
			 code & 31, r.path);
		if ((code == COAP_RESPONSE_CODE_BAD_REQUEST ||
		     code == COAP_RESPONSE_CODE_REQUEST_TOO_LARGE) &&
		    m->h->refused) {
			m->h->refused(m->ud, r.id,
				      code == COAP_RESPONSE_CODE_BAD_REQUEST
					      ? TRANSPORT_MALFORMED
					      : TRANSPORT_TOO_LARGE,
				      what);
			return COAP_RESPONSE_OK;
		}
		note_lost(m, "%s", what);
		return COAP_RESPONSE_OK;
	}
	if (r.answer[0])
		deliver(m, r.answer, recv);
	if (m->h->published)
		m->h->published(m->ud, r.id);
	return COAP_RESPONSE_OK;
}

static int resolve(struct coaps *m, coap_address_t *addr)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM,
				  .ai_family = AF_UNSPEC,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	char port[8];
	int r;

	snprintf(port, sizeof(port), "%u", m->o.port);
	r = getaddrinfo(m->host, port, &hints, &res);
	if (r)
		return r == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	coap_address_init(addr);
	addr->size = res->ai_addrlen;
	memcpy(&addr->addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static void attempt(struct coaps *m)
{
	coap_dtls_pki_t setup;
	coap_address_t addr;
	char why[300];
	int r;

	m->state = ST_CONNECTING;
	m->lost = false;
	coap_last_log[0] = '\0';
	r = resolve(m, &addr);
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot resolve %s: %s", m->host,
			 strerror(-r));
		lost(m, why);
		return;
	}
	hsm_coap_setup(m->o.coap, &setup);
	m->sess = coap_new_client_session_pki(m->ctx, NULL, &addr,
					      COAP_PROTO_DTLS, &setup);
	if (!m->sess) {
		hsm_coap_forget_pin(m->o.coap);
		note_lost(m, "%s", "cannot start the DTLS session");
		lost(m, m->lost_reason);
		return;
	}
	/* libcoap set the PIN on the engine (or failed to): once is enough */
	hsm_coap_forget_pin(m->o.coap);
	coap_session_set_app_data(m->sess, m);
	coap_session_set_ack_timeout(
		m->sess, (coap_fixed_point_t){ m->ack_timeout_ms / 1000,
					       m->ack_timeout_ms % 1000 });
	coap_session_set_max_retransmit(m->sess, m->max_retransmit);
	coap_session_set_nstart(m->sess, m->nstart);
	if (hsm_coap_session(m->o.coap, coap_session_get_tls(m->sess, NULL)) <
	    0) {
		note_lost(m, "%s", "cannot prepare the DTLS session");
		lost(m, m->lost_reason);
		return;
	}
	loop_timer_arm_in(m->handshake_timer, HANDSHAKE_TIMEOUT_MS);
	m->dirty = true;
}

static void on_retry(struct loop *l, struct loop_timer *t, void *data)
{
	(void)l, (void)t;
	attempt(data);
}

/*
 * A guard behind libcoap's own retransmission: a request still unanswered
 * well after RFC 7252's MAX_TRANSMIT_WAIT (per block) ends the session, so
 * a transfer libcoap gave up on without telling us cannot hold the window.
 */
static uint64_t request_deadline(const struct coaps *m, size_t len)
{
	uint64_t wait = (uint64_t)m->ack_timeout_ms *
			((2ULL << m->max_retransmit) - 1) * 3 / 2;

	return eb_now_ms() + (len / 1024 + 1) * wait + 1000;
}

static void arm_request_timer(struct coaps *m)
{
	uint64_t first = UINT64_MAX;

	for (unsigned i = 0; i < m->n_req; i++)
		if (m->req[i].deadline_ms < first)
			first = m->req[i].deadline_ms;
	if (first == UINT64_MAX)
		loop_timer_disarm(m->request_timer);
	else
		loop_timer_arm(m->request_timer, first);
}

static void on_request_timeout(struct loop *l, struct loop_timer *t, void *data)
{
	struct coaps *m = data;
	uint64_t now = eb_now_ms();

	(void)l, (void)t;
	for (unsigned i = 0; i < m->n_req; i++)
		if (m->req[i].deadline_ms <= now && m->state == ST_CONNECTED) {
			lost(m, "a request got no answer in time");
			return;
		}
	arm_request_timer(m);
}

static void on_handshake_timeout(struct loop *l, struct loop_timer *t,
				 void *data)
{
	struct coaps *m = data;

	(void)l, (void)t;
	if (m->state == ST_CONNECTING)
		lost(m, "the DTLS handshake did not finish in time");
}

/* Adds the Uri-Path options of path ("/a/b"). */
static int add_path(coap_pdu_t *pdu, const char *path)
{
	while (*path == '/') {
		const char *seg = path + 1, *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (!coap_add_option(pdu, COAP_OPTION_URI_PATH, n,
				     (const uint8_t *)seg))
			return -ENOMEM;
		path = seg + n;
	}
	return 0;
}

static coap_pdu_t *new_request(struct coaps *m, coap_pdu_code_t code,
			       uint8_t *tok, size_t *tlen)
{
	coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, code,
					coap_new_message_id(m->sess),
					coap_session_max_pdu_size(m->sess));

	if (!pdu)
		return NULL;
	coap_session_new_token(m->sess, tlen, tok);
	if (!coap_add_token(pdu, *tlen, tok)) {
		coap_delete_pdu(pdu);
		return NULL;
	}
	return pdu;
}

static void release_copy(coap_session_t *s, void *data)
{
	(void)s;
	free(data);
}

static struct transport *t_create(struct loop *loop,
				  const struct transport_opts *o,
				  const struct transport_handler *h, void *ud,
				  struct eb_err *err);

static struct transport *t_destroy(struct transport *t)
{
	struct coaps *m = (struct coaps *)t;

	if (!m)
		return NULL;
	unwatch(m);
	drop_session(m);
	if (m->ctx)
		coap_free_context(m->ctx);
	loop_timer_free(m->retry_timer);
	loop_timer_free(m->handshake_timer);
	loop_timer_free(m->request_timer);
	if (log_owner == m)
		log_owner = NULL;
	free(m->req);
	free(m->host);
	free(m->client_id);
	free(m);
	return NULL;
}

static struct transport *t_create(struct loop *loop,
				  const struct transport_opts *o,
				  const struct transport_handler *h, void *ud,
				  struct eb_err *err)
{
	struct coaps *m = calloc(1, sizeof(*m));
	int fd;

	if (!m) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	m->loop = loop;
	m->o = *o;
	m->h = h;
	m->ud = ud;
	m->fd = -1;
	m->ack_timeout_ms =
		o->coap_ack_timeout_ms ? o->coap_ack_timeout_ms : 2000;
	m->max_retransmit = o->coap_max_retransmit ? o->coap_max_retransmit : 4;
	m->nstart = o->coap_nstart ? o->coap_nstart : 1;
	if (!o->coap) {
		eb_errf(err, -EINVAL, "CoAP needs the device's DTLS identity");
		return t_destroy((struct transport *)m);
	}
	m->host = strdup(o->host);
	m->client_id = strdup(o->client_id);
	m->cap_req = o->max_inflight;
	m->req = calloc(m->cap_req, sizeof(*m->req));
	m->retry_timer = loop_timer_new(loop, on_retry, m);
	m->handshake_timer = loop_timer_new(loop, on_handshake_timeout, m);
	m->request_timer = loop_timer_new(loop, on_request_timeout, m);
	if (!m->host || !m->client_id || !m->req || !m->retry_timer ||
	    !m->handshake_timer || !m->request_timer ||
	    loop_prepare_add(loop, prepare, m) < 0) {
		eb_errf(err, -ENOMEM, "out of memory");
		return t_destroy((struct transport *)m);
	}
	backoff_init(&m->backoff, o->backoff_min_ms, o->backoff_max_ms);
	coap_startup();
	log_owner = m;
	coap_set_log_handler(on_coap_log);
	coap_set_log_level(LOG_INFO);
	coap_dtls_set_log_level(LOG_INFO);
	m->ctx = coap_new_context(NULL);
	if (!m->ctx) {
		eb_errf(err, -ENOMEM, "cannot create the CoAP context");
		return t_destroy((struct transport *)m);
	}
	coap_context_set_block_mode(m->ctx, COAP_BLOCK_USE_LIBCOAP |
						    COAP_BLOCK_SINGLE_BODY);
	coap_context_set_keepalive(m->ctx, o->keepalive_s);
	coap_register_response_handler(m->ctx, on_response);
	coap_register_nack_handler(m->ctx, on_nack);
	coap_register_event_handler(m->ctx, on_event);
	fd = coap_context_get_coap_fd(m->ctx);
	if (fd < 0) {
		eb_errf(err, -ENOTSUP,
			"this libcoap was built without epoll support");
		return t_destroy((struct transport *)m);
	}
	if (loop_io_add(loop, fd, EPOLLIN, on_io, m) < 0) {
		eb_errf(err, -ENOMEM, "cannot watch the CoAP context");
		return t_destroy((struct transport *)m);
	}
	m->fd = fd;
	return (struct transport *)m;
}

static void t_start(struct transport *t)
{
	attempt((struct coaps *)t);
}

static void t_stop(struct transport *t)
{
	struct coaps *m = (struct coaps *)t;
	bool was_connected = m->state == ST_CONNECTED;

	m->state = ST_STOPPED;
	loop_timer_disarm(m->retry_timer);
	loop_timer_disarm(m->handshake_timer);
	/* release sends the DTLS close_notify */
	drop_session(m);
	if (was_connected)
		report(m, EB_LOG_INFO, "disconnected from %s:%u", m->host,
		       m->o.port);
}

static bool t_connected(const struct transport *t)
{
	return ((const struct coaps *)t)->state == ST_CONNECTED;
}

/* Adds the Uri-Query options of query ("a=1&b=2"). */
static int add_query(coap_pdu_t *pdu, const char *query)
{
	while (*query) {
		size_t n = strcspn(query, "&");

		if (!coap_add_option(pdu, COAP_OPTION_URI_QUERY, n,
				     (const uint8_t *)query))
			return -ENOMEM;
		query += n + (query[n] == '&');
	}
	return 0;
}

/* A POST's Content-Format and payload (libcoap owns a copy: block-wise). */
static int add_body(struct coaps *m, coap_pdu_t *pdu, const void *payload,
		    size_t len)
{
	uint8_t cf[4];
	void *copy = malloc(len ? len : 1);

	if (!copy ||
	    !coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
			     coap_encode_var_safe(
				     cf, sizeof(cf),
				     coaps_is_json(payload, len)
					     ? COAP_MEDIATYPE_APPLICATION_JSON
					     : COAP_MEDIATYPE_TEXT_PLAIN),
			     cf)) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(copy, payload, len);
	if (!coap_add_data_large_request(m->sess, pdu, len, copy, release_copy,
					 NULL))
		return -EMSGSIZE; /* libcoap released the copy */
	return 0;
}

static int t_publish(struct transport *t, const char *topic,
		     const void *payload, size_t len, int qos, int *id)
{
	struct coaps *m = (struct coaps *)t;
	struct coaps_route route;
	struct request *r;
	coap_pdu_t *pdu;
	int n;

	(void)qos; /* every request is confirmable */
	if (m->state != ST_CONNECTED || m->lost)
		return -ENOTCONN;
	if (m->n_req == m->cap_req)
		return -EAGAIN;
	r = &m->req[m->n_req];
	n = coaps_route(topic, payload, len, &route);
	if (n < 0)
		return n;
	eb_strlcpy(r->path, route.path, sizeof(r->path));
	eb_strlcpy(r->answer, route.answer, sizeof(r->answer));
	pdu = new_request(
		m, route.get ? COAP_REQUEST_CODE_GET : COAP_REQUEST_CODE_POST,
		r->token, &r->tlen);
	if (!pdu)
		return -ENOMEM;
	n = add_path(pdu, r->path);
	if (!n)
		n = route.get ? add_query(pdu, route.query)
			      : add_body(m, pdu, payload, len);
	if (n < 0) {
		coap_delete_pdu(pdu);
		return n;
	}
	if (coap_send(m->sess, pdu) == COAP_INVALID_MID)
		return -EIO;
	r->deadline_ms = request_deadline(m, route.get ? 0 : len);
	r->id = *id = ++m->next_id;
	if (m->next_id == 0x7fffffff)
		m->next_id = 0;
	m->n_req++;
	if (!loop_timer_armed(m->request_timer))
		arm_request_timer(m);
	m->dirty = true;
	return 0;
}

static int t_subscribe(struct transport *t, const char *topic, int qos)
{
	struct coaps *m = (struct coaps *)t;
	struct observation *o;
	coap_pdu_t *pdu;
	uint8_t obs[4];
	int n;

	(void)qos;
	if (m->state != ST_CONNECTED || m->lost)
		return -ENOTCONN;
	if (m->n_obs == MAX_OBSERVE)
		return -ENOSPC;
	o = &m->obs[m->n_obs];
	n = coaps_observe_path(topic, o->path, sizeof(o->path));
	if (n <= 0)
		return n;
	eb_strlcpy(o->topic, topic, sizeof(o->topic));
	pdu = new_request(m, COAP_REQUEST_CODE_GET, o->token, &o->tlen);
	if (!pdu)
		return -ENOMEM;
	if (!coap_add_option(pdu, COAP_OPTION_OBSERVE,
			     coap_encode_var_safe(obs, sizeof(obs),
						  COAP_OBSERVE_ESTABLISH),
			     obs) ||
	    add_path(pdu, o->path) < 0) {
		coap_delete_pdu(pdu);
		return -ENOMEM;
	}
	if (coap_send(m->sess, pdu) == COAP_INVALID_MID)
		return -EIO;
	m->n_obs++;
	m->dirty = true;
	return 0;
}

static bool t_idle(const struct transport *t)
{
	const struct coaps *m = (const struct coaps *)t;

	return !m->ctx || m->n_req == 0;
}

const struct transport_ops transport_coap = {
	.name = "coap",
	/* one block: the payload plus a request's header and options stays
	 * within libcoap's default PDU size (1152) */
	.max_payload = 1024,
	.create = t_create,
	.destroy = t_destroy,
	.start = t_start,
	.stop = t_stop,
	.connected = t_connected,
	.publish = t_publish,
	.subscribe = t_subscribe,
	.idle = t_idle,
	.try_tls = NULL, /* a renewed identity: a new hsm_coap, not here */
};
