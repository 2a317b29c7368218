/*
 * tb_plugin.c - a test emulator of ThingsBoard's MQTT device API, as a
 * mosquitto 2.0 plugin (plugin API v5).  Test use only.
 *
 * What it enforces, as ThingsBoard does with X.509 device credentials:
 *  - authentication by the client certificate alone (client id and user
 *    name are not looked at): either the certificate itself is registered
 *    for a device ("per device", option device_certs), or it was issued by
 *    a CA registered on a device profile ("chain", ThingsBoard >= 3.5,
 *    option profile_cas), and then the device is created from the CN on
 *    the first connect.  Anything else gets CONNACK "not authorized".
 *    CNs listed in "admin" are test clients (the observer, the control
 *    client): they may use any topic.
 *  - topics: a device publishes only to v1/devices/me/telemetry,
 *    .../attributes, .../attributes/request/<n>, .../rpc/request/<n> (its
 *    client-side RPC) and .../rpc/response/<n> (answers to server-side
 *    RPC), and subscribes only to .../attributes, .../attributes/response/+,
 *    .../rpc/request/+ and .../rpc/response/+.  Other topics are refused.
 *    Devices never receive each other's messages: what a device gets is
 *    sent by this plugin to that one client.
 *  - the payload limit (max_payload, 65536 by default as in ThingsBoard's
 *    transport): a larger publish closes the connection without a PUBACK,
 *    as the platform's decoder does.
 *  - telemetry must be JSON: {"ts": <int>, "values": {...}}, an array of
 *    those, or a flat object of key/values; attributes a flat object.
 *    Anything else closes the connection (no PUBACK), so a device bug
 *    cannot pass as delivered data.
 *  - getSessionLimits (client-side RPC) is answered with maxPayloadSize =
 *    max_payload; attribute requests with the device's shared attributes.
 *
 * Tests drive it as an admin client:
 *   tb/<device>/attributes  a JSON object merged into the device's shared
 *                           attributes and pushed to it if subscribed
 *   tb/<device>/rpc/<id>    the payload sent as a server-side RPC request
 *                           (queued until the device subscribed)
 *   tb/control              {"max_payload": N, "limits": bool,
 *                           "kick": "<device>"}
 * Everything is appended to record_file as JSON lines, flushed at once.
 *
 * Options (plugin_opt_NAME VALUE): record_file (required), device_certs
 * and profile_cas (PEM files, either or both), admin (CNs, separated by
 * spaces or commas; default observer), max_payload, reported_max_payload
 * (what getSessionLimits reports, default max_payload: a benchmark makes
 * the device send one object per publish without the platform refusing its
 * attributes).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tb_json.h"

#define DEFAULT_MAX_PAYLOAD 65536
#define ME "v1/devices/me/"
#define MAX_SUBS 16
#define MAX_CERTS 64

struct session {
	struct session *next;
	const struct mosquitto *client;
	char *client_id;
	char *device; /* NULL for admins */
	bool admin;
	char *subs[MAX_SUBS];
};

struct pending {
	struct pending *next;
	char *device, *topic, *payload;
};

struct device {
	struct device *next;
	char *name;
	json_t *shared; /* shared attributes */
};

static struct {
	mosquitto_plugin_id_t *pid;
	FILE *rec;
	char **admins;
	size_t n_admins;
	X509 *certs[MAX_CERTS], *cas[MAX_CERTS];
	size_t n_certs, n_cas;
	long max_payload;
	long reported; /* what getSessionLimits says (0: max_payload) */
	bool limits;
	struct session *sessions;
	struct pending *pending;
	struct device *devices;
} g;

/* ---- helpers ---------------------------------------------------------- */

static void record(const char *ev, json_t *o)
{
	struct timespec ts;

	if (!o)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(o, "ev", json_string(ev));
	json_object_set_new(o, "t",
			    json_real((double)ts.tv_sec + ts.tv_nsec / 1e9));
	if (g.rec) {
		char *s = json_dumps(o, JSON_COMPACT);
		if (s) {
			fprintf(g.rec, "%s\n", s);
			fflush(g.rec);
			free(s);
		}
	}
	json_decref(o);
}

static json_t *who(const struct session *s)
{
	return json_pack("{s:s, s:s?}", "client", s->client_id, "device",
			 s->device);
}

/* payload as JSON if it parses, else as a string */
static json_t *as_json(const void *p, size_t n, bool *ok)
{
	json_t *o = json_loadb(p, n, JSON_DECODE_ANY, NULL);

	*ok = o != NULL;
	return o ? o : json_stringn_nocheck(p, n);
}

static struct session *session_of(const struct mosquitto *client)
{
	for (struct session *s = g.sessions; s; s = s->next)
		if (s->client == client)
			return s;
	return NULL;
}

static struct session *session_of_device(const char *name)
{
	for (struct session *s = g.sessions; s; s = s->next)
		if (s->device && !strcmp(s->device, name))
			return s;
	return NULL;
}

static void session_free(struct session *s)
{
	for (int i = 0; i < MAX_SUBS; i++)
		free(s->subs[i]);
	free(s->client_id);
	free(s->device);
	free(s);
}

static void session_remove(const struct mosquitto *client)
{
	for (struct session **pp = &g.sessions; *pp; pp = &(*pp)->next)
		if ((*pp)->client == client) {
			struct session *s = *pp;
			*pp = s->next;
			session_free(s);
			return;
		}
}

static struct device *device_of(const char *name, bool create)
{
	for (struct device *d = g.devices; d; d = d->next)
		if (!strcmp(d->name, name))
			return d;
	if (!create)
		return NULL;
	struct device *d = calloc(1, sizeof *d);
	if (!d || !(d->name = strdup(name)) || !(d->shared = json_object())) {
		if (d)
			free(d->name);
		free(d);
		return NULL;
	}
	d->next = g.devices;
	g.devices = d;
	return d;
}

static bool subscribed(const struct session *s, const char *topic)
{
	for (int i = 0; i < MAX_SUBS; i++) {
		bool m = false;
		if (s->subs[i] &&
		    mosquitto_topic_matches_sub(s->subs[i], topic, &m) ==
			    MOSQ_ERR_SUCCESS &&
		    m)
			return true;
	}
	return false;
}

/* Sends to the device's one session if it subscribed to the topic. */
static bool send_to(const char *device, const char *topic, const char *payload)
{
	struct session *s = session_of_device(device);
	bool sent = s && subscribed(s, topic) &&
		    mosquitto_broker_publish_copy(
			    s->client_id, topic, (int)strlen(payload), payload,
			    1, false, NULL) == MOSQ_ERR_SUCCESS;

	record("sent",
	       json_pack("{s:s, s:s, s:s, s:b}", "device", device, "topic",
			 topic, "payload", payload, "delivered", sent));
	return sent;
}

static void send_json(const char *device, const char *topic, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	if (s)
		send_to(device, topic, s);
	free(s);
	json_decref(o);
}

/* Queued messages (server-side RPCs) that can go now. */
static void flush(const char *device)
{
	struct session *s = session_of_device(device);

	for (struct pending **pp = &g.pending; *pp;) {
		struct pending *p = *pp;
		if (strcmp(p->device, device) || !s ||
		    !subscribed(s, p->topic)) {
			pp = &p->next;
			continue;
		}
		send_to(device, p->topic, p->payload);
		*pp = p->next;
		free(p->device);
		free(p->topic);
		free(p->payload);
		free(p);
	}
}

/* "<prefix><digits>" */
static bool numbered(const char *t, const char *prefix)
{
	size_t n = strlen(prefix);
	return !strncmp(t, prefix, n) && t[n] &&
	       strspn(t + n, "0123456789") == strlen(t + n);
}

/* ---- device messages --------------------------------------------------- */

static void attr_request(struct session *s, const char *id, const json_t *req)
{
	struct device *d = device_of(s->device, true);
	json_t *keys = json_object_get(req, "sharedKeys"), *shared;
	char topic[128];

	if (!d)
		return;
	shared = json_object();
	if (json_is_string(keys)) {
		char *list = strdup(json_string_value(keys)), *save = NULL;
		for (char *k = list ? strtok_r(list, ",", &save) : NULL; k;
		     k = strtok_r(NULL, ",", &save)) {
			json_t *v = json_object_get(d->shared, k);
			if (v)
				json_object_set(shared, k, v);
		}
		free(list);
	}
	snprintf(topic, sizeof topic, ME "attributes/response/%s", id);
	send_json(s->device, topic, json_pack("{s:o}", "shared", shared));
}

static void client_rpc(struct session *s, const char *id, const json_t *req)
{
	json_t *m = json_object_get(req, "method");
	char topic[128];

	if (!json_is_string(m) ||
	    strcmp(json_string_value(m), "getSessionLimits") || !g.limits)
		return;
	snprintf(topic, sizeof topic, ME "rpc/response/%s", id);
	send_json(
		s->device, topic,
		json_pack("{s:I, s:i, s:{s:s, s:s, s:s}}", "maxPayloadSize",
			  (json_int_t)(g.reported ? g.reported : g.max_payload),
			  "maxInflightMessages", 100, "rateLimits", "messages",
			  "200:1,6000:60,14000:3600", "telemetryMessages",
			  "100:1,3000:60,7000:3600", "telemetryDataPoints",
			  "200:1,6000:60,14000:3600"));
}

/* Returns a mosquitto error to close the connection (no PUBACK). */
static int device_message(struct session *s, const char *t, const void *p,
			  size_t n)
{
	bool ok;
	json_t *data;
	json_t *o = who(s);

	json_object_set_new(o, "topic", json_string(t));
	json_object_set_new(o, "size", json_integer((json_int_t)n));
	if ((long)n > g.max_payload) {
		json_object_set_new(o, "max", json_integer(g.max_payload));
		record("payload_too_large", o);
		return MOSQ_ERR_PAYLOAD_SIZE;
	}
	data = as_json(p, n, &ok);
	json_object_set(o, "data", data);
	if (!strcmp(t, ME "telemetry") || !strcmp(t, ME "attributes")) {
		bool tele = !strcmp(t, ME "telemetry");
		if (!ok ||
		    !(tele ? tb_valid_telemetry(data) : tb_flat_object(data))) {
			record("invalid", o);
			json_decref(data);
			return MOSQ_ERR_MALFORMED_PACKET;
		}
		record(tele ? "telemetry" : "attributes", o);
	} else if (numbered(t, ME "attributes/request/")) {
		record("attr_request", o);
		if (json_is_object(data))
			attr_request(s, t + strlen(ME "attributes/request/"),
				     data);
	} else if (numbered(t, ME "rpc/request/")) {
		record("client_rpc", o);
		if (json_is_object(data))
			client_rpc(s, t + strlen(ME "rpc/request/"), data);
	} else if (numbered(t, ME "rpc/response/")) {
		json_object_set_new(o, "id",
				    json_string(t + strlen(ME "rpc/"
							      "response"
							      "/")));
		json_object_set_new(o, "valid", json_boolean(ok));
		record("rpc_response", o);
	} else {
		json_decref(o);
	}
	json_decref(data);
	return MOSQ_ERR_SUCCESS;
}

/* ---- admin control ------------------------------------------------------ */

static void control(const void *p, size_t n)
{
	json_t *o = json_loadb(p, n, 0, NULL), *v;

	if (!json_is_object(o)) {
		record("control_error", json_object());
		json_decref(o);
		return;
	}
	if ((v = json_object_get(o, "max_payload")) && json_is_integer(v))
		g.max_payload = (long)json_integer_value(v);
	if ((v = json_object_get(o, "limits")) && json_is_boolean(v))
		g.limits = json_is_true(v);
	if ((v = json_object_get(o, "kick")) && json_is_string(v)) {
		struct session *s = session_of_device(json_string_value(v));
		if (s)
			mosquitto_kick_client_by_clientid(s->client_id, false);
	}
	record("control", json_pack("{s:O}", "settings", o));
	json_decref(o);
}

/* tb/<device>/attributes, tb/<device>/rpc/<id> */
static void inject(const char *t, const void *p, size_t n)
{
	const char *dev = t + 3, *slash = strchr(dev, '/');
	char name[256], topic[128];

	if (!slash || (size_t)(slash - dev) >= sizeof name)
		return;
	snprintf(name, sizeof name, "%.*s", (int)(slash - dev), dev);
	if (!strcmp(slash, "/attributes")) {
		struct device *d = device_of(name, true);
		json_t *o = json_loadb(p, n, 0, NULL);
		if (d && json_is_object(o))
			json_object_update(d->shared, o);
		record("shared_update",
		       json_pack("{s:s, s:O?}", "device", name, "data", o));
		if (o) {
			char *s = json_dumps(o, JSON_COMPACT);
			if (s)
				send_to(name, ME "attributes", s);
			free(s);
		} else {
			/* a malformed push, for the device's parser */
			char *raw = strndup(p, n);
			if (raw)
				send_to(name, ME "attributes", raw);
			free(raw);
		}
		json_decref(o);
	} else if (numbered(slash, "/rpc/")) {
		struct pending *q = calloc(1, sizeof *q);
		snprintf(topic, sizeof topic, ME "rpc/request/%s", slash + 5);
		if (!q || !(q->device = strdup(name)) ||
		    !(q->topic = strdup(topic)) ||
		    !(q->payload = strndup(p, n))) {
			if (q) {
				free(q->device);
				free(q->topic);
			}
			free(q);
			return;
		}
		struct pending **pp = &g.pending;
		while (*pp)
			pp = &(*pp)->next;
		*pp = q;
		record("rpc_queued",
		       json_pack("{s:s, s:s, s:s%}", "device", name, "id",
				 slash + 5, "payload", p, n));
		flush(name);
	}
}

/* ---- authentication and ACL ------------------------------------------- */

static char *cn_of(X509 *cert)
{
	X509_NAME *nm = X509_get_subject_name(cert);
	int i = nm ? X509_NAME_get_index_by_NID(nm, NID_commonName, -1) : -1;
	X509_NAME_ENTRY *e = i >= 0 ? X509_NAME_get_entry(nm, i) : NULL;
	ASN1_STRING *a = e ? X509_NAME_ENTRY_get_data(e) : NULL;
	const unsigned char *d = a ? ASN1_STRING_get0_data(a) : NULL;
	int len = a ? ASN1_STRING_length(a) : 0;

	if (!d || len <= 0 || memchr(d, 0, (size_t)len))
		return NULL;
	return strndup((const char *)d, (size_t)len);
}

static bool is_admin(const char *cn)
{
	for (size_t i = 0; i < g.n_admins; i++)
		if (!strcmp(g.admins[i], cn))
			return true;
	return false;
}

/* "certificate" or "chain", or NULL: how ThingsBoard would know it */
static const char *credentials(X509 *cert)
{
	for (size_t i = 0; i < g.n_certs; i++)
		if (!X509_cmp(g.certs[i], cert))
			return "certificate";
	for (size_t i = 0; i < g.n_cas; i++)
		if (X509_check_issued(g.cas[i], cert) == X509_V_OK &&
		    X509_verify(cert, X509_get0_pubkey(g.cas[i])) == 1)
			return "chain";
	return NULL;
}

static int on_basic_auth(int event, void *data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_basic_auth *ev = data;
	const char *cid = mosquitto_client_id(ev->client);
	X509 *cert = mosquitto_client_certificate(ev->client);
	char *cn = cert ? cn_of(cert) : NULL;
	const char *how = NULL;
	bool admin = cn && is_admin(cn);

	if (cn && !admin)
		how = credentials(cert);
	X509_free(cert);
	if (!cn || (!admin && !how)) {
		record("refused",
		       json_pack("{s:s?, s:s?, s:s}", "client", cid, "cn", cn,
				 "reason",
				 cn ? "certificate not registered" : "no CN"));
		free(cn);
		return MOSQ_ERR_AUTH;
	}
	if (!admin && !strcmp(how, "chain") && !device_of(cn, false))
		record("device_created",
		       json_pack("{s:s, s:s}", "device", cn, "from", "CN"));
	if (!admin)
		device_of(cn, true);
	struct session *s = calloc(1, sizeof *s);
	if (!s || !(s->client_id = strdup(cid ? cid : "")) ||
	    (!admin && !(s->device = strdup(cn)))) {
		if (s)
			session_free(s);
		free(cn);
		return MOSQ_ERR_NOMEM;
	}
	s->client = ev->client;
	s->admin = admin;
	session_remove(ev->client);
	s->next = g.sessions;
	g.sessions = s;
	mosquitto_set_username(ev->client, cn);
	json_t *o = who(s);
	json_object_set_new(o, "cn", json_string(cn));
	json_object_set_new(o, "admin", json_boolean(admin));
	json_object_set_new(o, "credentials", json_string(how ? how : "admin"));
	record("connect", o);
	free(cn);
	return MOSQ_ERR_SUCCESS;
}

static bool device_write(const char *t)
{
	return !strcmp(t, ME "telemetry") || !strcmp(t, ME "attributes") ||
	       numbered(t, ME "attributes/request/") ||
	       numbered(t, ME "rpc/request/") ||
	       numbered(t, ME "rpc/response/");
}

static bool device_sub(const char *t)
{
	return !strcmp(t, ME "attributes") ||
	       !strcmp(t, ME "attributes/response/+") ||
	       !strcmp(t, ME "rpc/request/+") ||
	       !strcmp(t, ME "rpc/response/+");
}

static int deny(const struct session *s, const char *access, const char *t)
{
	json_t *o = s ? who(s) : json_object();
	json_object_set_new(o, "access", json_string(access));
	json_object_set_new(o, "topic", json_string(t));
	record("acl_denied", o);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_acl(int event, void *data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_acl_check *ev = data;
	struct session *s = session_of(ev->client);
	const char *t = ev->topic ? ev->topic : "";

	if (!s)
		return deny(NULL, "unknown client", t);
	if (s->admin)
		return MOSQ_ERR_SUCCESS;
	switch (ev->access) {
	case MOSQ_ACL_WRITE:
		return device_write(t) ? MOSQ_ERR_SUCCESS : deny(s, "write", t);
	case MOSQ_ACL_SUBSCRIBE:
		if (!device_sub(t))
			return deny(s, "subscribe", t);
		for (int i = 0; i < MAX_SUBS; i++)
			if (s->subs[i] && !strcmp(s->subs[i], t))
				return MOSQ_ERR_SUCCESS;
		for (int i = 0; i < MAX_SUBS; i++)
			if (!s->subs[i]) {
				s->subs[i] = strdup(t);
				break;
			}
		record("subscribe", json_pack("{s:s, s:s}", "device", s->device,
					      "topic", t));
		/* the broker sends the SUBACK first, then these */
		flush(s->device);
		return MOSQ_ERR_SUCCESS;
	case MOSQ_ACL_UNSUBSCRIBE:
		return MOSQ_ERR_SUCCESS;
	default:
		/* a device reads only what this plugin sends it (directed
		 * sends skip this check): never another device's messages */
		return MOSQ_ERR_ACL_DENIED;
	}
}

static int on_message(int event, void *data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_message *ev = data;
	struct session *s = session_of(ev->client);
	const char *t = ev->topic;

	if (!s || !t)
		return MOSQ_ERR_SUCCESS;
	if (s->admin) {
		if (!strcmp(t, "tb/control"))
			control(ev->payload, ev->payloadlen);
		else if (!strncmp(t, "tb/", 3))
			inject(t, ev->payload, ev->payloadlen);
		return MOSQ_ERR_SUCCESS;
	}
	ev->retain = false;
	return device_message(s, t, ev->payload, ev->payloadlen);
}

static int on_disconnect(int event, void *data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_disconnect *ev = data;
	struct session *s = session_of(ev->client);

	if (!s)
		return MOSQ_ERR_SUCCESS;
	json_t *o = who(s);
	json_object_set_new(o, "reason", json_integer(ev->reason));
	record("disconnect", o);
	session_remove(ev->client);
	return MOSQ_ERR_SUCCESS;
}

/* ---- plugin entry points ------------------------------------------------ */

static bool load_certs(const char *path, X509 **out, size_t *n)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f)
		return false;
	while (*n < MAX_CERTS && (x = PEM_read_X509(f, NULL, NULL, NULL)))
		out[(*n)++] = x;
	fclose(f);
	return *n > 0;
}

static bool set_admins(const char *v)
{
	const char *p = v;

	while (*p) {
		p += strspn(p, " ,\t");
		size_t n = strcspn(p, " ,\t");
		if (!n)
			break;
		char **a = realloc(g.admins, (g.n_admins + 1) * sizeof *a);
		if (!a)
			return false;
		g.admins = a;
		if (!(g.admins[g.n_admins] = strndup(p, n)))
			return false;
		g.n_admins++;
		p += n;
	}
	return true;
}

static void state_free(void)
{
	while (g.sessions) {
		struct session *s = g.sessions;
		g.sessions = s->next;
		session_free(s);
	}
	while (g.pending) {
		struct pending *p = g.pending;
		g.pending = p->next;
		free(p->device);
		free(p->topic);
		free(p->payload);
		free(p);
	}
	while (g.devices) {
		struct device *d = g.devices;
		g.devices = d->next;
		json_decref(d->shared);
		free(d->name);
		free(d);
	}
	for (size_t i = 0; i < g.n_admins; i++)
		free(g.admins[i]);
	free(g.admins);
	for (size_t i = 0; i < g.n_certs; i++)
		X509_free(g.certs[i]);
	for (size_t i = 0; i < g.n_cas; i++)
		X509_free(g.cas[i]);
	if (g.rec)
		fclose(g.rec);
	memset(&g, 0, sizeof g);
}

int mosquitto_plugin_version(int supported_version_count,
			     const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++)
		if (supported_versions[i] == 5)
			return 5;
	return -1;
}

static const struct {
	int event;
	MOSQ_FUNC_generic_callback cb;
} callbacks[] = {
	{ MOSQ_EVT_BASIC_AUTH, on_basic_auth },
	{ MOSQ_EVT_ACL_CHECK, on_acl },
	{ MOSQ_EVT_MESSAGE, on_message },
	{ MOSQ_EVT_DISCONNECT, on_disconnect },
};

static int init_fail(const char *what, const char *value)
{
	mosquitto_log_printf(MOSQ_LOG_ERR, "tb plugin: %s%s%s", what,
			     value ? ": " : "", value ? value : "");
	state_free();
	return MOSQ_ERR_INVAL;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
			  struct mosquitto_opt *options, int option_count)
{
	const char *record_file = NULL;

	*userdata = NULL;
	memset(&g, 0, sizeof g);
	g.pid = identifier;
	g.max_payload = DEFAULT_MAX_PAYLOAD;
	g.limits = true;
	if (!set_admins("observer"))
		return init_fail("out of memory", NULL);
	for (int i = 0; i < option_count; i++) {
		const char *k = options[i].key, *v = options[i].value;
		char *end;
		if (!k || !v)
			continue;
		if (!strcmp(k, "record_file")) {
			record_file = v;
		} else if (!strcmp(k, "device_certs")) {
			if (!load_certs(v, g.certs, &g.n_certs))
				return init_fail("bad device_certs", v);
		} else if (!strcmp(k, "profile_cas")) {
			if (!load_certs(v, g.cas, &g.n_cas))
				return init_fail("bad profile_cas", v);
		} else if (!strcmp(k, "admin")) {
			if (!set_admins(v))
				return init_fail("out of memory", NULL);
		} else if (!strcmp(k, "reported_max_payload")) {
			g.reported = strtol(v, &end, 10);
			if (*end || g.reported < 1)
				return init_fail("bad reported_max_payload", v);
		} else if (!strcmp(k, "max_payload")) {
			g.max_payload = strtol(v, &end, 10);
			if (*end || g.max_payload < 1)
				return init_fail("bad max_payload", v);
		} else {
			return init_fail("unknown option", k);
		}
	}
	if (!record_file || !(g.rec = fopen(record_file, "a")))
		return init_fail("record_file missing or not writable",
				 record_file);
	for (size_t i = 0; i < sizeof callbacks / sizeof *callbacks; i++)
		if (mosquitto_callback_register(identifier, callbacks[i].event,
						callbacks[i].cb, NULL, NULL))
			return init_fail("cannot register a callback", NULL);
	record("start", json_pack("{s:I, s:I, s:I}", "max_payload",
				  (json_int_t)g.max_payload, "device_certs",
				  (json_int_t)g.n_certs, "profile_cas",
				  (json_int_t)g.n_cas));
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
			     int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	for (size_t i = 0; i < sizeof callbacks / sizeof *callbacks; i++)
		mosquitto_callback_unregister(g.pid, callbacks[i].event,
					      callbacks[i].cb, NULL);
	record("stop", json_object());
	state_free();
	return MOSQ_ERR_SUCCESS;
}
