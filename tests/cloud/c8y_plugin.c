/*
 * c8y_plugin.c - a test emulator of Cumulocity IoT's MQTT endpoint, as a
 * mosquitto 2.0 plugin (plugin API v5).  Test use only.
 *
 * What it enforces, as the platform does (see tests/harness/README.md):
 *  - identity: a device's client id is <id>, d:<id> or d:<id>:<xid> and <id>
 *    equals the CN of its certificate, else CONNACK "not authorized"; one
 *    connection per device (a second one with another client id kicks the
 *    first).  CNs listed in "admin" may use any client id and topic.
 *  - ACL: devices publish only to s/us t/us q/us c/us s/uat s/ut/X s/uc/X and
 *    subscribe only to s/ds s/dat s/e s/dt s/dc/X.  Nobody publishes to those
 *    downstream topics: what arrives there is sent by this plugin to one
 *    client (mosquitto_broker_publish_copy with a client id), so a device
 *    never sees another device's messages.
 *  - SmartREST on s/us t/us q/us c/us: CSV with "" inside quoted values, the
 *    static templates' mandatory values and types; a bad line gets an error
 *    line on s/e (to that client only), a too large message is dropped.
 *  - JWT on s/uat: "71,<HS256 token>" on s/dat, the same token until half
 *    its lifetime has passed.
 *  - nothing goes down to a device (s/dat answers, s/e errors, injected
 *    s/ds) until it has published upstream in this connection; injected
 *    messages wait in a per-device queue until then (and until the device
 *    subscribes to their topic); answers and errors to a client that is not
 *    subscribed to their topic are dropped (and recorded as not delivered).
 *
 * Tests drive it as an admin client: c8y/<id>/s/ds (s/dat, s/e, s/dt,
 * s/dc/X) sends the payload to device <id> on s/ds; c8y/control takes a JSON
 * object ({"uat":"answer"|"ignore"}, {"jwt_lifetime":N},
 * {"reject_connect":bool}, {"max_payload":N}, {"forget_tokens":true},
 * {"kick":"<device>"}).
 *
 * Everything is appended to record_file as JSON lines, flushed at once.
 *
 * Options (plugin_opt_NAME VALUE): jwt_secret_file (required), record_file
 * (required), jwt_lifetime (3600 s), tenant (t100), admin (observer; CNs
 * separated by spaces or commas), max_payload (16184), max_payload_header
 * (true: the limit counts the whole PUBLISH packet, as the platform
 * documents; false: the payload only).
 *
 * The broker must run with use_identity_as_username false (with it, mosquitto
 * 2.0 never calls MOSQ_EVT_BASIC_AUTH); the plugin reads the CN itself and
 * sets it as the username, so the log still reads "u'<CN>'".
 */

#include <errno.h>
#include <stdarg.h>
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
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define DEFAULT_LIFETIME 3600
#define DEFAULT_MAX_PAYLOAD 16184
#define MAX_FIELDS 4096
#define MAX_SECRET 4096

/* ------------------------------------------------------------------ */
/* state                                                              */

struct sub {
	struct sub *next;
	char *topic;
	int qos;
};

/* Subscriptions by client id (they outlive a connection without clean
 * session, as mosquitto's do). */
struct subs {
	struct subs *next;
	char *client_id;
	struct sub *list;
};

struct session {
	struct session *next;
	const struct mosquitto *client; /* identity only */
	char *client_id;
	char *cn;
	char *device; /* NULL for admins */
	bool admin;
	bool active; /* published upstream in this connection */
};

struct pending {
	struct pending *next;
	char *topic;
	void *payload;
	int len;
};

struct device {
	struct device *next;
	char *id;
	char *token, *jti;
	double issued; /* when the token was made, for the half-life rule */
	long iat, exp;
	struct pending *queue;
};

static struct {
	mosquitto_plugin_id_t *pid;
	unsigned char *secret;
	size_t secret_len;
	long lifetime;
	char *tenant;
	char **admins;
	size_t n_admins;
	long max_payload;
	bool max_header;
	bool uat_answer;
	bool reject_connect;
	FILE *rec;
	struct session *sessions;
	struct subs *subs;
	struct device *devices;
} g;

/* ------------------------------------------------------------------ */
/* small helpers                                                      */

struct buf {
	char *p;
	size_t n, cap;
	bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_add(b, tmp,
			(size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* One CSV value as the platform writes it: quoted when it holds a comma,
 * quote, CR, LF, tab or leading/trailing blanks; quotes doubled. */
static void buf_csv(struct buf *b, const char *s, size_t n)
{
	bool quote = n && (s[0] == ' ' || s[n - 1] == ' ');
	for (size_t i = 0; i < n && !quote; i++)
		quote = s[i] && strchr(",\"\r\n\t", s[i]);
	if (!quote) {
		buf_add(b, s, n);
		return;
	}
	buf_add(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			buf_add(b, "\"", 1);
		buf_add(b, s + i, 1);
	}
	buf_add(b, "\"", 1);
}

static double now_f(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool topic_is(const char *t, const char *want)
{
	return t && strcmp(t, want) == 0;
}

/* "prefix" followed by one non-empty level without wildcards */
static bool topic_one_level(const char *t, const char *prefix)
{
	size_t n = strlen(prefix);
	if (!t || strncmp(t, prefix, n) != 0 || !t[n])
		return false;
	return !strpbrk(t + n, "/+#");
}

static bool is_upstream(const char *t)
{
	return topic_is(t, "s/us") || topic_is(t, "t/us") ||
	       topic_is(t, "q/us") || topic_is(t, "c/us");
}

static bool is_downstream(const char *t)
{
	return topic_is(t, "s/ds") || topic_is(t, "s/dat") ||
	       topic_is(t, "s/e") || topic_is(t, "s/dt") ||
	       topic_one_level(t, "s/dc/");
}

/* anything under the downstream names (also with wildcards or sublevels) */
static bool under_downstream(const char *t)
{
	return is_downstream(t) || strncmp(t, "s/dc/", 5) == 0;
}

/* ------------------------------------------------------------------ */
/* the record file                                                    */

/* A JSON string from arbitrary bytes: invalid UTF-8 becomes U+FFFD. */
static json_t *jstr(const void *p, size_t n)
{
	json_t *j = json_stringn(p ? p : "", p ? n : 0);
	if (j)
		return j;
	struct buf b = { 0 };
	const unsigned char *s = p;
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t len = c < 0x80		  ? 1
			     : (c & 0xe0) == 0xc0 ? 2
			     : (c & 0xf0) == 0xe0 ? 3
			     : (c & 0xf8) == 0xf0 ? 4
						  : 0;
		json_t *t = len && i + len <= n
				    ? json_stringn((const char *)s + i, len)
				    : NULL;
		if (t) {
			json_decref(t);
			buf_add(&b, (const char *)s + i, len);
			i += len;
		} else {
			buf_adds(&b, "\xef\xbf\xbd");
			i++;
		}
	}
	j = json_stringn(b.p ? b.p : "", b.n);
	free(b.p);
	return j;
}

static json_t *jstr0(const char *s)
{
	return s ? jstr(s, strlen(s)) : json_null();
}

/* Appends obj (consumed) with "t" and "ev" to the record file. */
static void record(const char *ev, json_t *obj)
{
	if (!obj)
		return;
	json_t *line = json_object();
	if (line) {
		json_object_set_new(line, "t", json_real(now_f()));
		json_object_set_new(line, "ev", json_string(ev));
		json_object_update(line, obj);
		char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (s && g.rec) {
			fputs(s, g.rec);
			fputc('\n', g.rec);
			fflush(g.rec);
		}
		free(s);
		json_decref(line);
	}
	json_decref(obj);
}

static json_t *who(const struct session *s)
{
	return json_pack("{s:o, s:o}", "client", jstr0(s->client_id), "device",
			 jstr0(s->device));
}

/* ------------------------------------------------------------------ */
/* sessions, subscriptions, devices                                   */

static struct session *session_of(const struct mosquitto *client)
{
	for (struct session *s = g.sessions; s; s = s->next)
		if (s->client == client)
			return s;
	return NULL;
}

/* the newest connection of a device */
static struct session *session_of_device(const char *id)
{
	for (struct session *s = g.sessions; s; s = s->next)
		if (!s->admin && s->device && strcmp(s->device, id) == 0)
			return s;
	return NULL;
}

static void session_free(struct session *s)
{
	free(s->client_id);
	free(s->cn);
	free(s->device);
	free(s);
}

static void session_remove(const struct mosquitto *client)
{
	for (struct session **pp = &g.sessions; *pp; pp = &(*pp)->next) {
		if ((*pp)->client == client) {
			struct session *s = *pp;
			*pp = s->next;
			session_free(s);
			return;
		}
	}
}

static struct subs *subs_of(const char *client_id, bool create)
{
	for (struct subs *e = g.subs; e; e = e->next)
		if (strcmp(e->client_id, client_id) == 0)
			return e;
	if (!create)
		return NULL;
	struct subs *e = calloc(1, sizeof *e);
	if (!e || !(e->client_id = strdup(client_id))) {
		free(e);
		return NULL;
	}
	e->next = g.subs;
	g.subs = e;
	return e;
}

static void sub_list_free(struct sub *l)
{
	while (l) {
		struct sub *n = l->next;
		free(l->topic);
		free(l);
		l = n;
	}
}

static void subs_clear(const char *client_id)
{
	for (struct subs **pp = &g.subs; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->client_id, client_id) == 0) {
			struct subs *e = *pp;
			*pp = e->next;
			sub_list_free(e->list);
			free(e->client_id);
			free(e);
			return;
		}
	}
}

static void subs_set(const char *client_id, const char *topic, int qos)
{
	struct subs *e = subs_of(client_id, true);
	if (!e)
		return;
	for (struct sub *s = e->list; s; s = s->next) {
		if (strcmp(s->topic, topic) == 0) {
			s->qos = qos;
			return;
		}
	}
	struct sub *s = calloc(1, sizeof *s);
	if (!s || !(s->topic = strdup(topic))) {
		free(s);
		return;
	}
	s->qos = qos;
	s->next = e->list;
	e->list = s;
}

static void subs_unset(const char *client_id, const char *topic)
{
	struct subs *e = subs_of(client_id, false);
	if (!e)
		return;
	for (struct sub **pp = &e->list; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->topic, topic) == 0) {
			struct sub *s = *pp;
			*pp = s->next;
			free(s->topic);
			free(s);
			return;
		}
	}
}

/* the QoS the client subscribed to topic with, or -1 */
static int subs_qos(const char *client_id, const char *topic)
{
	struct subs *e = subs_of(client_id, false);
	for (struct sub *s = e ? e->list : NULL; s; s = s->next)
		if (strcmp(s->topic, topic) == 0)
			return s->qos;
	return -1;
}

static struct device *device_of(const char *id, bool create)
{
	for (struct device *d = g.devices; d; d = d->next)
		if (strcmp(d->id, id) == 0)
			return d;
	if (!create)
		return NULL;
	struct device *d = calloc(1, sizeof *d);
	if (!d || !(d->id = strdup(id))) {
		free(d);
		return NULL;
	}
	d->next = g.devices;
	g.devices = d;
	return d;
}

static void pending_free(struct pending *p)
{
	free(p->topic);
	free(p->payload);
	free(p);
}

static void device_forget_token(struct device *d)
{
	free(d->token);
	free(d->jti);
	d->token = d->jti = NULL;
	d->issued = 0;
	d->iat = d->exp = 0;
}

static void devices_free(void)
{
	while (g.devices) {
		struct device *d = g.devices;
		g.devices = d->next;
		while (d->queue) {
			struct pending *p = d->queue;
			d->queue = p->next;
			pending_free(p);
		}
		device_forget_token(d);
		free(d->id);
		free(d);
	}
}

/* ------------------------------------------------------------------ */
/* sending to one client                                              */

/* Sends payload on topic to the client if it subscribed to topic (with the
 * QoS of its subscription).  Returns whether it was sent. */
static bool send_to(const struct session *s, const char *topic,
		    const void *payload, size_t len)
{
	int qos = subs_qos(s->client_id, topic);
	if (qos < 0 || len > INT32_MAX)
		return false;
	return mosquitto_broker_publish_copy(s->client_id, topic, (int)len,
					     payload, qos, false,
					     NULL) == MOSQ_ERR_SUCCESS;
}

/* Sends what waits for the device and can go now (in order). */
static void flush_device(const char *id)
{
	if (!id)
		return;
	struct device *d = device_of(id, false);
	struct session *s = session_of_device(id);
	if (!d || !s || !s->active)
		return;
	for (struct pending **pp = &d->queue; *pp;) {
		struct pending *p = *pp;
		if (!send_to(s, p->topic, p->payload, (size_t)p->len)) {
			pp = &p->next;
			continue;
		}
		json_t *o = who(s);
		json_object_set_new(o, "topic", json_string(p->topic));
		json_object_set_new(o, "payload",
				    jstr(p->payload, (size_t)p->len));
		record("delivered", o);
		*pp = p->next;
		pending_free(p);
	}
}

/* An error line on s/e to the client (if it subscribed to s/e). */
static bool send_error(const struct session *s, const char *line)
{
	return send_to(s, "s/e", line, strlen(line));
}

/* ------------------------------------------------------------------ */
/* SmartREST                                                          */

struct record_ {
	const char *raw; /* the record as sent, without its line end */
	size_t raw_len;
	size_t nf;	 /* values */
	const char *err; /* why it is malformed, or NULL */
};

struct fields {
	size_t *off, *len;
	size_t cap;
	char *text; /* the unescaped values, each NUL-terminated */
};

static bool fields_push(struct fields *f, size_t i, size_t off, size_t len)
{
	if (i >= MAX_FIELDS)
		return false;
	if (i >= f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 16;
		size_t *o = realloc(f->off, cap * sizeof *o);
		if (!o)
			return false;
		f->off = o;
		size_t *l = realloc(f->len, cap * sizeof *l);
		if (!l)
			return false;
		f->len = l;
		f->cap = cap;
	}
	f->off[i] = off;
	f->len[i] = len;
	return true;
}

/*
 * Parses the next record of s[0..n) at *pos into f (f->text holds at least
 * 2n + 2 bytes).  Records end at a LF outside quotes (a CR before it is
 * dropped); a quoted value may hold commas, CR and LF, and "" for a quote.
 * Returns false when there is no record left.
 */
static bool next_record(const char *s, size_t n, size_t *pos, struct fields *f,
			struct record_ *r)
{
	size_t i = *pos, o = 0;
	if (i >= n)
		return false;
	r->raw = s + i;
	r->nf = 0;
	r->err = NULL;
	for (;;) {
		size_t start = o;
		if (i < n && s[i] == '"') {
			i++;
			for (;;) {
				if (i >= n) {
					r->err = "unterminated quoted value";
					goto end;
				}
				if (s[i] == '"') {
					if (i + 1 < n && s[i + 1] == '"') {
						f->text[o++] = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				f->text[o++] = s[i++];
			}
			if (i + 1 < n && s[i] == '\r' && s[i + 1] == '\n')
				i++;
			else if (i + 1 == n && s[i] == '\r')
				i++;
			if (i < n && s[i] != ',' && s[i] != '\n') {
				r->err = "text after a closing quote";
				goto skip;
			}
		} else {
			while (i < n && s[i] != ',' && s[i] != '\n') {
				if (s[i] == '"') {
					r->err = "quote in an unquoted value";
					goto skip;
				}
				if (s[i] == '\r' &&
				    (i + 1 == n || s[i + 1] == '\n')) {
					i++;
					continue;
				}
				f->text[o++] = s[i++];
			}
		}
		if (!fields_push(f, r->nf, start, o - start)) {
			r->err = "too many values";
			goto skip;
		}
		r->nf++;
		f->text[o++] = '\0';
		if (i < n && s[i] == ',') {
			i++;
			continue;
		}
		goto end;
	}
skip:
	while (i < n && s[i] != '\n')
		i++;
end:
	r->raw_len = (size_t)(s + i - r->raw);
	if (r->raw_len && r->raw[r->raw_len - 1] == '\r')
		r->raw_len--;
	*pos = i < n ? i + 1 : n;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_number(const char *p, size_t n)
{
	size_t i = 0, digits = 0;
	if (i < n && (p[i] == '+' || p[i] == '-'))
		i++;
	for (; i < n && is_digit(p[i]); i++)
		digits++;
	if (i < n && p[i] == '.')
		for (i++; i < n && is_digit(p[i]); i++)
			digits++;
	if (!digits)
		return false;
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		size_t ed = 0;
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		for (; i < n && is_digit(p[i]); i++)
			ed++;
		if (!ed)
			return false;
	}
	return i == n;
}

static bool is_integer(const char *p, size_t n)
{
	size_t i = 0;
	if (i < n && (p[i] == '+' || p[i] == '-'))
		i++;
	if (i == n || n - i > 18)
		return false;
	for (; i < n; i++)
		if (!is_digit(p[i]))
			return false;
	return true;
}

/* reads exactly k digits at p[*i] */
static bool digits(const char *p, size_t n, size_t *i, int k, int *v)
{
	*v = 0;
	for (int j = 0; j < k; j++, (*i)++) {
		if (*i >= n || !is_digit(p[*i]))
			return false;
		*v = *v * 10 + (p[*i] - '0');
	}
	return true;
}

static bool expect_char(const char *p, size_t n, size_t *i, char c)
{
	if (*i >= n || p[*i] != c)
		return false;
	(*i)++;
	return true;
}

/* ISO 8601 date-time with a zone: YYYY-MM-DDThh:mm[:ss[.f]](Z|+hh:mm|
 * +hhmm|+hh) */
static bool is_date(const char *p, size_t n)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30,
				     31, 31, 30, 31, 30, 31 };
	size_t i = 0;
	int y, mo, d, h, mi, sec = 0, zh, zm = 0;
	if (!digits(p, n, &i, 4, &y) || !expect_char(p, n, &i, '-') ||
	    !digits(p, n, &i, 2, &mo) || !expect_char(p, n, &i, '-') ||
	    !digits(p, n, &i, 2, &d) || !expect_char(p, n, &i, 'T') ||
	    !digits(p, n, &i, 2, &h) || !expect_char(p, n, &i, ':') ||
	    !digits(p, n, &i, 2, &mi))
		return false;
	if (i < n && p[i] == ':') {
		i++;
		if (!digits(p, n, &i, 2, &sec))
			return false;
		if (i < n && (p[i] == '.' || p[i] == ',')) {
			size_t f = 0;
			for (i++; i < n && is_digit(p[i]); i++)
				f++;
			if (f < 1 || f > 9)
				return false;
		}
	}
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
	    mi > 59 || sec > 59)
		return false;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 || y % 400 == 0)))
		return false;
	if (i < n && p[i] == 'Z')
		return i + 1 == n;
	if (i >= n || (p[i] != '+' && p[i] != '-'))
		return false;
	i++;
	if (!digits(p, n, &i, 2, &zh) || zh > 18)
		return false;
	if (i < n && p[i] == ':')
		i++;
	if (i < n && (!digits(p, n, &i, 2, &zm) || zm > 59))
		return false;
	return i == n;
}

static bool is_severity(const char *p, size_t n)
{
	static const char *const sev[] = { "CRITICAL", "MAJOR", "MINOR",
					   "WARNING" };
	for (size_t i = 0; i < sizeof sev / sizeof *sev; i++)
		if (strlen(sev[i]) == n && memcmp(sev[i], p, n) == 0)
			return true;
	return false;
}

/*
 * The static templates the emulator knows (documented in "MQTT static
 * templates").  spec: one letter a value, upper case = mandatory: S string,
 * N number, I integer, D date, V severity; a final '*' allows any number of
 * further strings, a final '+' wants one or more further (non-empty) ones.
 * 201 and 210 have extra rules in code.
 */
struct tmpl {
	unsigned id;
	const char *spec;
	const char *names;
};

static const struct tmpl tmpls[] = {
	{ 100, "ss", "device name,device type" },
	{ 101, "Sss", "child id,device name,device type" },
	{ 102, "SSSS",
	  "service external id,service type,service name,service status" },
	{ 104, "S", "service status" },
	{ 105, "", "" },
	{ 107, "+", "fragment" },
	{ 110, "sss", "serial number,model,revision" },
	{ 111, "sssssss", "imei,iccid,imsi,mcc,mnc,lac,cell id" },
	{ 112, "nnni", "latitude,longitude,altitude,accuracy" },
	{ 113, "s", "configuration" },
	{ 114, "*", "supported operation" },
	{ 115, "sss", "name,version,url" },
	{ 116, "*", "software" },
	{ 117, "i", "required interval" },
	{ 118, "*", "supported log" },
	{ 119, "*", "supported configuration" },
	{ 120, "SSsd", "configuration type,url,file name,time" },
	{ 121, "Ss", "profile executed,profile id" },
	{ 122, "SSsS", "agent name,agent version,agent url,agent maintainer" },
	{ 123, "", "" },
	{ 140, "SSss*", "name,version,type,url,software" },
	{ 141, "SSss*", "name,version,type,url,software" },
	{ 142, "SS*", "name,version,software" },
	{ 200, "SSNsd", "fragment,series,value,unit,time" },
	{ 201, "Sd", "type,time" },
	{ 210, "nnd", "rssi,ber,time" },
	{ 211, "Nd", "temperature,time" },
	{ 212, "Nd", "battery,time" },
	{ 301, "Ssd", "type,text,time" },
	{ 302, "Ssd", "type,text,time" },
	{ 303, "Ssd", "type,text,time" },
	{ 304, "Ssd", "type,text,time" },
	{ 305, "SV", "type,severity" },
	{ 306, "S", "type" },
	{ 307, "S+", "type,fragment" },
	{ 400, "SSd", "type,text,time" },
	{ 401, "nnnnd", "latitude,longitude,altitude,accuracy,time" },
	{ 402, "nnnnd", "latitude,longitude,altitude,accuracy,time" },
	{ 407, "S*", "type,fragment" },
	{ 500, "", "" },
	{ 501, "S", "fragment" },
	{ 502, "Ss", "fragment,failure reason" },
	{ 503, "S*", "fragment,parameter" },
	{ 504, "S", "operation id" },
	{ 505, "Ss", "operation id,failure reason" },
	{ 506, "S*", "operation id,parameter" },
};

static const struct tmpl *tmpl_of(const char *id, size_t n)
{
	if (n == 0 || n > 6)
		return NULL;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(id[i]))
			return NULL;
		v = v * 10 + (unsigned)(id[i] - '0');
	}
	for (size_t i = 0; i < sizeof tmpls / sizeof *tmpls; i++)
		if (tmpls[i].id == v)
			return &tmpls[i];
	return NULL;
}

/* the k-th name of names (the last one for positions beyond) */
static void name_of(struct buf *b, const char *names, size_t k)
{
	const char *p = names;
	for (size_t i = 0; i < k; i++) {
		const char *c = strchr(p, ',');
		if (!c)
			break;
		p = c + 1;
	}
	buf_add(b, p, strcspn(p, ","));
}

/* Checks one value v (len n) against spec letter c; on error writes the
 * message to e. */
static bool check_value(char c, const char *v, size_t n, const char *names,
			size_t k, struct buf *e)
{
	bool mandatory = c >= 'A' && c <= 'Z';
	if (n == 0) {
		if (!mandatory)
			return true;
		buf_adds(e, "Missing mandatory value: ");
		name_of(e, names, k);
		return false;
	}
	const char *what = NULL;
	switch (c) {
	case 'N':
	case 'n':
		what = is_number(v, n) ? NULL : "NUMBER";
		break;
	case 'I':
	case 'i':
		what = is_integer(v, n) ? NULL : "INTEGER";
		break;
	case 'D':
	case 'd':
		what = is_date(v, n) ? NULL : "DATE";
		break;
	case 'V':
		what = is_severity(v, n) ? NULL : "SEVERITY";
		break;
	default:
		break;
	}
	if (!what)
		return true;
	buf_printf(e, "Value is not %s %s: ", what[0] == 'I' ? "an" : "a",
		   what);
	buf_csv(e, v, n);
	return false;
}

#define FV(i) (f->text + f->off[(i)])
#define FL(i) (f->len[(i)])

/*
 * Validates record r (values in f) against the static templates.  On error
 * returns the code (40 unknown template, 41 invalid line, 42 malformed) and
 * writes the message (without code and template id) to e.
 */
static int validate(const struct record_ *r, const struct fields *f,
		    struct buf *e)
{
	if (r->err) {
		buf_printf(e, "Malformed request line: %s", r->err);
		return 42;
	}
	const struct tmpl *t = tmpl_of(FV(0), FL(0));
	if (!t) {
		buf_adds(e, "No static template for this message id");
		return 40;
	}
	size_t na = r->nf - 1; /* values after the id; trailing empty ones
				  do not count ("100,," is "100") */
	while (na > 0 && FL(na) == 0)
		na--;
	if (t->id == 201) {
		/* type, [time], then fragment,series,value,[unit] groups (the
		 * last one may end after its value) */
		if (!check_value('S', na >= 1 ? FV(1) : "", na >= 1 ? FL(1) : 0,
				 t->names, 0, e) ||
		    (na >= 2 &&
		     !check_value('d', FV(2), FL(2), t->names, 1, e)))
			return 41;
		if (na < 3) {
			buf_adds(e, "Missing mandatory value: fragment");
			return 41;
		}
		for (size_t i = 3; i <= na; i++) {
			static const char g4[] = "SSNs";
			size_t k = (i - 3) % 4;
			if (!check_value(g4[k], FV(i), FL(i),
					 "fragment,series,value,unit", k, e))
				return 41;
		}
		size_t k = (na - 2) % 4; /* values in the last group */
		if (k == 1 || k == 2) {
			buf_adds(e, "Missing mandatory value: ");
			name_of(e, "fragment,series,value", k);
			return 41;
		}
		return 0;
	}
	size_t ns = strlen(t->spec);
	size_t i;
	for (i = 0; i < ns; i++) {
		char c = t->spec[i];
		if (c == '*')
			return 0;
		if (c == '+') {
			if (i >= na) {
				buf_adds(e, "Missing mandatory value: ");
				name_of(e, t->names, i);
				return 41;
			}
			for (size_t j = i + 1; j <= na; j++)
				if (!check_value('S', FV(j), FL(j), t->names, i,
						 e))
					return 41;
			return 0;
		}
		bool have = i < na;
		if (!check_value(c, have ? FV(i + 1) : "", have ? FL(i + 1) : 0,
				 t->names, i, e))
			return 41;
	}
	if (na > ns) {
		buf_printf(e, "Wrong number of arguments: %zu (at most %zu)",
			   na, ns);
		return 41;
	}
	if (t->id == 210 && (na < 1 || FL(1) == 0) && (na < 2 || FL(2) == 0)) {
		buf_adds(e, "Missing mandatory value: rssi or ber");
		return 41;
	}
	return 0;
}

/* the whole PUBLISH packet (fixed header, topic, packet id, payload) */
static size_t packet_size(const struct mosquitto *client, const char *topic,
			  uint32_t plen, int qos)
{
	size_t rem = 2 + strlen(topic) + (qos > 0 ? 2 : 0) + plen;
	if (mosquitto_client_protocol_version(client) == 5)
		rem += 1; /* property length, properties not counted */
	size_t lb = rem < 128 ? 1 : rem < 16384 ? 2 : rem < 2097152 ? 3 : 4;
	return 1 + lb + rem;
}

static void handle_smartrest(struct session *s, const char *topic,
			     const char *p, size_t n)
{
	bool validate_lines = is_upstream(topic);
	struct fields f = { 0 };
	f.text = malloc(2 * n + 2);
	if (!f.text) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "c8y: out of memory");
		return;
	}
	size_t pos = 0;
	struct record_ r;
	while (next_record(p, n, &pos, &f, &r)) {
		if (r.raw_len == 0 && !r.err)
			continue; /* blank line */
		struct buf e = { 0 };
		int code = validate_lines || r.err ? validate(&r, &f, &e) : 0;
		json_t *o = who(s);
		json_object_set_new(o, "topic", json_string(topic));
		json_object_set_new(o, "line", jstr(r.raw, r.raw_len));
		if (!r.err) {
			json_t *a = json_array();
			for (size_t i = 0; i < r.nf; i++)
				json_array_append_new(
					a, jstr(f.text + f.off[i], f.len[i]));
			json_object_set_new(o, "fields", a);
		}
		if (code == 0) {
			record("line", o);
		} else {
			struct buf el = { 0 };
			buf_printf(&el, "%d,", code);
			if (r.nf > 0)
				buf_csv(&el, f.text + f.off[0], f.len[0]);
			buf_adds(&el, ",");
			buf_csv(&el, e.p ? e.p : "", e.n);
			const char *line = el.p ? el.p : "";
			bool sent = send_error(s, line);
			json_object_set_new(o, "code", json_integer(code));
			json_object_set_new(o, "error", jstr0(line));
			json_object_set_new(o, "delivered", json_boolean(sent));
			record("rejected", o);
			free(el.p);
		}
		free(e.p);
	}
	free(f.text);
	free(f.off);
	free(f.len);
}

/* ------------------------------------------------------------------ */
/* JWT                                                                */

static char *b64url(const unsigned char *in, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (!out)
		return NULL;
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (int i = 0; i < len; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return out;
}

static bool random_hex(char *out, size_t bytes)
{
	unsigned char r[32];
	if (bytes > sizeof r || RAND_bytes(r, (int)bytes) != 1)
		return false;
	for (size_t i = 0; i < bytes; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
	return true;
}

/* A new HS256 token for device d, stored in d. */
static bool issue_token(struct device *d)
{
	char jti[33], tci[33], xsrf[41];
	if (!random_hex(jti, 16) || !random_hex(tci, 16) ||
	    !random_hex(xsrf, 20))
		return false;
	double now = now_f();
	long iat = (long)now;
	struct buf iss = { 0 }, sub = { 0 };
	buf_printf(&iss, "%s.c8y.test", g.tenant);
	buf_adds(&sub, "device_");
	buf_adds(&sub, d->id);
	json_t *pl = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:s}",
		"jti", jti, "iss", iss.p ? iss.p : "", "aud", "c8y.test", "sub",
		sub.p ? sub.p : "", "ten", g.tenant, "tci", tci, "iat",
		(json_int_t)iat, "nbf", (json_int_t)iat, "exp",
		(json_int_t)(iat + g.lifetime), "tfa", 0, "xsrfToken", xsrf);
	free(iss.p);
	free(sub.p);
	char *pls =
		pl ? json_dumps(pl, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(pl);
	static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char *h64 = b64url((const unsigned char *)hdr, strlen(hdr));
	char *p64 = pls ? b64url((unsigned char *)pls, strlen(pls)) : NULL;
	free(pls);
	struct buf tok = { 0 };
	char *s64 = NULL;
	if (h64 && p64) {
		buf_adds(&tok, h64);
		buf_adds(&tok, ".");
		buf_adds(&tok, p64);
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;
		if (!tok.oom &&
		    HMAC(EVP_sha256(), g.secret, (int)g.secret_len,
			 (unsigned char *)tok.p, tok.n, mac, &maclen))
			s64 = b64url(mac, maclen);
	}
	free(h64);
	free(p64);
	if (!s64 || tok.oom) {
		free(s64);
		free(tok.p);
		return false;
	}
	buf_adds(&tok, ".");
	buf_adds(&tok, s64);
	free(s64);
	char *jti_copy = strdup(jti);
	if (tok.oom || !jti_copy) {
		free(tok.p);
		free(jti_copy);
		return false;
	}
	device_forget_token(d);
	d->token = tok.p;
	d->jti = jti_copy;
	d->issued = now;
	d->iat = iat;
	d->exp = iat + g.lifetime;
	return true;
}

static void handle_uat(struct session *s)
{
	json_t *o = who(s);
	json_object_set_new(o, "answered", json_boolean(g.uat_answer));
	record("uat", o);
	if (!g.uat_answer)
		return;
	struct device *d = device_of(s->device, true);
	if (!d)
		return;
	bool fresh = false;
	double now = now_f();
	if (!d->token || now >= d->issued + (double)(d->exp - d->iat) / 2.0) {
		if (!issue_token(d)) {
			mosquitto_log_printf(MOSQ_LOG_ERR,
					     "c8y: cannot make a token");
			return;
		}
		fresh = true;
	}
	struct buf line = { 0 };
	buf_adds(&line, "71,");
	buf_adds(&line, d->token);
	bool sent = !line.oom && send_to(s, "s/dat", line.p, line.n);
	free(line.p);
	o = who(s);
	json_object_set_new(o, "jti", json_string(d->jti));
	json_object_set_new(o, "iat", json_integer(d->iat));
	json_object_set_new(o, "exp", json_integer(d->exp));
	json_object_set_new(o, "new", json_boolean(fresh));
	json_object_set_new(o, "token", json_string(d->token));
	json_object_set_new(o, "delivered", json_boolean(sent));
	record("jwt", o);
}

/* ------------------------------------------------------------------ */
/* admin control                                                      */

static void control_error(const struct session *s, const char *msg)
{
	json_t *o = who(s);
	json_object_set_new(o, "error", json_string(msg));
	record("control_error", o);
}

static void handle_control(struct session *s, const void *payload, size_t len)
{
	json_error_t err;
	json_t *j = json_loadb(payload, len, 0, &err);
	if (!json_is_object(j)) {
		control_error(s, "c8y/control wants a JSON object");
		json_decref(j);
		return;
	}
	const char *key;
	json_t *v;
	json_object_foreach(j, key, v)
	{
		if (strcmp(key, "uat") == 0 && json_is_string(v) &&
		    (strcmp(json_string_value(v), "answer") == 0 ||
		     strcmp(json_string_value(v), "ignore") == 0)) {
			g.uat_answer =
				strcmp(json_string_value(v), "answer") == 0;
		} else if (strcmp(key, "jwt_lifetime") == 0 &&
			   json_is_integer(v) && json_integer_value(v) >= 1) {
			g.lifetime = (long)json_integer_value(v);
		} else if (strcmp(key, "reject_connect") == 0 &&
			   json_is_boolean(v)) {
			g.reject_connect = json_is_true(v);
		} else if (strcmp(key, "max_payload") == 0 &&
			   json_is_integer(v) && json_integer_value(v) >= 1) {
			g.max_payload = (long)json_integer_value(v);
		} else if (strcmp(key, "forget_tokens") == 0 &&
			   json_is_true(v)) {
			for (struct device *d = g.devices; d; d = d->next)
				device_forget_token(d);
		} else if (strcmp(key, "kick") == 0 && json_is_string(v)) {
			struct session *k =
				session_of_device(json_string_value(v));
			char *id = k ? strdup(k->client_id) : NULL;
			if (id)
				mosquitto_kick_client_by_clientid(id, false);
			free(id);
		} else {
			struct buf b = { 0 };
			buf_adds(&b, "bad control setting: ");
			buf_adds(&b, key);
			control_error(s, b.p ? b.p : key);
			free(b.p);
		}
	}
	json_t *o = who(s);
	json_object_set_new(o, "settings", j);
	record("control", o);
}

/* c8y/<id>/<downstream topic>: for device <id> only */
static void handle_inject(struct session *s, const char *topic,
			  const void *payload, size_t len)
{
	const char *id = topic + 4;
	const char *slash = strchr(id, '/');
	if (!slash || slash == id || !is_downstream(slash + 1) ||
	    len > INT32_MAX) {
		control_error(s, "not c8y/<device>/<downstream topic>");
		return;
	}
	char *dev = strndup(id, (size_t)(slash - id));
	struct device *d = dev ? device_of(dev, true) : NULL;
	struct pending *p = calloc(1, sizeof *p);
	if (!d || !p || !(p->topic = strdup(slash + 1)) ||
	    (len && !(p->payload = malloc(len)))) {
		free(dev);
		if (p)
			pending_free(p);
		return;
	}
	if (len)
		memcpy(p->payload, payload, len);
	p->len = (int)len;
	struct pending **tail = &d->queue;
	while (*tail)
		tail = &(*tail)->next;
	*tail = p;
	json_t *o = json_pack("{s:o, s:o, s:s}", "by", jstr0(s->client_id),
			      "device", jstr0(dev), "topic", slash + 1);
	json_object_set_new(o, "payload", jstr(payload, len));
	record("inject", o);
	flush_device(dev);
	free(dev);
}

/* ------------------------------------------------------------------ */
/* callbacks                                                          */

static void refuse(const char *client_id, const char *cn, const char *why)
{
	record("refused",
	       json_pack("{s:o, s:o, s:s}", "client", jstr0(client_id), "cn",
			 jstr0(cn), "reason", why));
}

/* the certificate's CN (malloc'd), or NULL */
static char *client_cn(const struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	if (!cert)
		return NULL;
	char *cn = NULL;
	X509_NAME *name = X509_get_subject_name(cert);
	int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1)
		     : -1;
	X509_NAME_ENTRY *e = i >= 0 ? X509_NAME_get_entry(name, i) : NULL;
	ASN1_STRING *a = e ? X509_NAME_ENTRY_get_data(e) : NULL;
	if (a) {
		const unsigned char *d = ASN1_STRING_get0_data(a);
		int len = ASN1_STRING_length(a);
		if (d && len > 0 && memchr(d, '\0', (size_t)len) == NULL)
			cn = strndup((const char *)d, (size_t)len);
	}
	X509_free(cert);
	return cn;
}

/* the certificate's serial number in hex (malloc'd), or NULL: tells a
 * renewed certificate from the one before it */
static char *client_serial(const struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	char *out = NULL;
	if (!cert)
		return NULL;
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex)
		out = strdup(hex);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(cert);
	return out;
}

static bool is_admin(const char *cn)
{
	for (size_t i = 0; i < g.n_admins; i++)
		if (strcmp(g.admins[i], cn) == 0)
			return true;
	return false;
}

/* <id>, d:<id> or d:<id>:<xid> -> the device id (malloc'd) and xid */
static char *device_of_client_id(const char *cid, const char **xid)
{
	*xid = NULL;
	if (!cid || !*cid)
		return NULL;
	const char *id = strncmp(cid, "d:", 2) == 0 ? cid + 2 : cid;
	const char *colon = strchr(id, ':');
	if (colon) {
		if (id == cid || !colon[1] || strchr(colon + 1, ':'))
			return NULL;
		*xid = colon + 1;
	}
	size_t n = colon ? (size_t)(colon - id) : strlen(id);
	return n ? strndup(id, n) : NULL;
}

static int on_basic_auth(int event, void *data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_basic_auth *ev = data;
	const char *cid = mosquitto_client_id(ev->client);
	char *cn = client_cn(ev->client);
	char *dev = NULL;
	const char *xid = NULL;
	if (!cn) {
		refuse(cid, NULL, "no certificate CN");
		return MOSQ_ERR_AUTH;
	}
	bool admin = is_admin(cn);
	if (!admin) {
		const char *why = NULL;
		if (g.reject_connect)
			why = "reject_connect";
		else if (!(dev = device_of_client_id(cid, &xid)))
			why = "client id is not <id>, d:<id> or d:<id>:<xid>";
		else if (strcmp(dev, cn) != 0)
			why = "client id does not match the certificate CN";
		if (why) {
			refuse(cid, cn, why);
			free(cn);
			free(dev);
			return MOSQ_ERR_AUTH;
		}
		/* one connection per device: drop an older one with another
		 * client id (same client id: mosquitto does it) */
		struct session *old = session_of_device(dev);
		char *kick = old && strcmp(old->client_id, cid) != 0
				     ? strdup(old->client_id)
				     : NULL;
		if (kick) {
			mosquitto_kick_client_by_clientid(kick, false);
			free(kick);
		}
	}
	struct session *s = calloc(1, sizeof *s);
	if (!s || !(s->client_id = strdup(cid)) || !(s->cn = strdup(cn)) ||
	    (dev && !(s->device = strdup(dev)))) {
		if (s)
			session_free(s);
		free(cn);
		free(dev);
		return MOSQ_ERR_NOMEM;
	}
	s->client = ev->client;
	s->admin = admin;
	session_remove(ev->client);
	s->next = g.sessions;
	g.sessions = s;
	bool clean = mosquitto_client_clean_session(ev->client);
	if (clean)
		subs_clear(cid);
	mosquitto_set_username(ev->client, cn);
	json_t *o = who(s);
	json_object_set_new(o, "cn", jstr0(cn));
	json_object_set_new(o, "xid", jstr0(xid));
	json_object_set_new(o, "admin", json_boolean(admin));
	json_object_set_new(o, "clean_session", json_boolean(clean));
	char *serial = client_serial(ev->client);
	json_object_set_new(o, "serial", jstr0(serial));
	free(serial);
	record("connect", o);
	free(cn);
	free(dev);
	return MOSQ_ERR_SUCCESS;
}

static const char *access_name(int access)
{
	switch (access) {
	case MOSQ_ACL_READ:
		return "read";
	case MOSQ_ACL_WRITE:
		return "write";
	case MOSQ_ACL_SUBSCRIBE:
		return "subscribe";
	case MOSQ_ACL_UNSUBSCRIBE:
		return "unsubscribe";
	default:
		return "?";
	}
}

static int deny(const struct session *s, int access, const char *topic,
		const char *why)
{
	json_t *o = s ? who(s) : json_object();
	json_object_set_new(o, "access", json_string(access_name(access)));
	json_object_set_new(o, "topic", jstr0(topic));
	json_object_set_new(o, "reason", json_string(why));
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
	if (!s) {
		/* mosquitto tells plugins of a disconnect before it sends the
		 * client's last will: a will on an upstream topic is what
		 * Cumulocity documents (400 on s/us), so it goes through */
		if (ev->access == MOSQ_ACL_WRITE && is_upstream(t))
			return MOSQ_ERR_SUCCESS;
		return deny(NULL, ev->access, t, "unknown client");
	}
	if (ev->access == MOSQ_ACL_UNSUBSCRIBE) {
		subs_unset(s->client_id, t);
		return MOSQ_ERR_SUCCESS;
	}
	if (s->admin) {
		/* downstream topics only ever carry this plugin's messages
		 * to one device; tests use c8y/<id>/... */
		if (ev->access == MOSQ_ACL_WRITE && under_downstream(t))
			return deny(s, ev->access, t,
				    "downstream topic: publish to "
				    "c8y/<device>/<topic>");
		return MOSQ_ERR_SUCCESS;
	}
	switch (ev->access) {
	case MOSQ_ACL_WRITE:
		if (is_upstream(t) || topic_is(t, "s/uat") ||
		    topic_one_level(t, "s/ut/") || topic_one_level(t, "s/uc/"))
			return MOSQ_ERR_SUCCESS;
		return deny(s, ev->access, t, "not a device publish topic");
	case MOSQ_ACL_SUBSCRIBE:
		if (is_downstream(t)) {
			subs_set(s->client_id, t, ev->qos);
			flush_device(s->device);
			return MOSQ_ERR_SUCCESS;
		}
		return deny(s, ev->access, t, "not a device subscribe topic");
	case MOSQ_ACL_READ:
		if (is_downstream(t))
			return MOSQ_ERR_SUCCESS;
		return deny(s, ev->access, t, "not for this device");
	default:
		return deny(s, ev->access, t, "unknown access");
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
		if (strcmp(t, "c8y/control") == 0)
			handle_control(s, ev->payload, ev->payloadlen);
		else if (strncmp(t, "c8y/", 4) == 0)
			handle_inject(s, t, ev->payload, ev->payloadlen);
		return MOSQ_ERR_SUCCESS;
	}
	size_t size = g.max_header ? packet_size(ev->client, t, ev->payloadlen,
						 ev->qos)
				   : ev->payloadlen;
	if (size > (size_t)g.max_payload) {
		struct buf e = { 0 };
		buf_printf(&e, "41,,Message too large: %zu bytes (at most %ld)",
			   size, g.max_payload);
		bool sent = !e.oom && send_error(s, e.p);
		json_t *o = who(s);
		json_object_set_new(o, "topic", jstr0(t));
		json_object_set_new(o, "size", json_integer((json_int_t)size));
		json_object_set_new(o, "payload_len",
				    json_integer(ev->payloadlen));
		json_object_set_new(o, "max", json_integer(g.max_payload));
		json_object_set_new(o, "error", jstr0(e.p));
		json_object_set_new(o, "delivered", json_boolean(sent));
		record("payload_too_large", o);
		free(e.p);
		s->active = true;
		flush_device(s->device);
		return MOSQ_ERR_ACL_DENIED; /* dropped, not routed */
	}
	s->active = true;
	ev->retain = false; /* "no practical difference" on the platform */
	if (strcmp(t, "s/uat") == 0)
		handle_uat(s);
	else
		handle_smartrest(s, t, ev->payload, ev->payloadlen);
	flush_device(s->device);
	return MOSQ_ERR_SUCCESS;
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
	if (mosquitto_client_clean_session(ev->client))
		subs_clear(s->client_id);
	session_remove(ev->client);
	return MOSQ_ERR_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* plugin entry points                                                */

static void state_free(void)
{
	while (g.sessions) {
		struct session *s = g.sessions;
		g.sessions = s->next;
		session_free(s);
	}
	while (g.subs) {
		struct subs *e = g.subs;
		g.subs = e->next;
		sub_list_free(e->list);
		free(e->client_id);
		free(e);
	}
	devices_free();
	for (size_t i = 0; i < g.n_admins; i++)
		free(g.admins[i]);
	free(g.admins);
	if (g.secret)
		OPENSSL_cleanse(g.secret, g.secret_len);
	free(g.secret);
	free(g.tenant);
	if (g.rec)
		fclose(g.rec);
	memset(&g, 0, sizeof g);
}

static bool parse_long(const char *v, long min, long *out)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < min)
		return false;
	*out = x;
	return true;
}

static bool set_admins(const char *v)
{
	for (size_t i = 0; i < g.n_admins; i++)
		free(g.admins[i]);
	free(g.admins);
	g.admins = NULL;
	g.n_admins = 0;
	const char *p = v;
	while (*p) {
		size_t skip = strspn(p, " ,\t");
		p += skip;
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

static bool read_secret(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	unsigned char *b = malloc(MAX_SECRET);
	size_t n = b ? fread(b, 1, MAX_SECRET, f) : 0;
	bool ok = b && n > 0 && !ferror(f);
	fclose(f);
	if (!ok) {
		free(b);
		return false;
	}
	g.secret = b;
	g.secret_len = n;
	return true;
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
	mosquitto_log_printf(MOSQ_LOG_ERR, "c8y plugin: %s%s%s", what,
			     value ? ": " : "", value ? value : "");
	state_free();
	return MOSQ_ERR_INVAL;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
			  struct mosquitto_opt *options, int option_count)
{
	const char *secret_file = NULL, *record_file = NULL;
	*userdata = NULL;
	memset(&g, 0, sizeof g);
	g.pid = identifier;
	g.lifetime = DEFAULT_LIFETIME;
	g.max_payload = DEFAULT_MAX_PAYLOAD;
	g.max_header = true;
	g.uat_answer = true;
	if (!(g.tenant = strdup("t100")) || !set_admins("observer"))
		return init_fail("out of memory", NULL);
	for (int i = 0; i < option_count; i++) {
		const char *k = options[i].key, *v = options[i].value;
		if (!k || !v)
			continue;
		if (strcmp(k, "jwt_secret_file") == 0) {
			secret_file = v;
		} else if (strcmp(k, "record_file") == 0) {
			record_file = v;
		} else if (strcmp(k, "jwt_lifetime") == 0) {
			if (!parse_long(v, 1, &g.lifetime))
				return init_fail("bad jwt_lifetime", v);
		} else if (strcmp(k, "max_payload") == 0) {
			if (!parse_long(v, 1, &g.max_payload))
				return init_fail("bad max_payload", v);
		} else if (strcmp(k, "max_payload_header") == 0) {
			if (strcmp(v, "true") && strcmp(v, "false"))
				return init_fail("bad max_payload_header", v);
			g.max_header = strcmp(v, "true") == 0;
		} else if (strcmp(k, "tenant") == 0) {
			free(g.tenant);
			if (!*v || !(g.tenant = strdup(v)))
				return init_fail("bad tenant", v);
		} else if (strcmp(k, "admin") == 0) {
			if (!set_admins(v))
				return init_fail("out of memory", NULL);
		} else {
			return init_fail("unknown option", k);
		}
	}
	if (!secret_file || !read_secret(secret_file))
		return init_fail("jwt_secret_file missing or unreadable",
				 secret_file);
	if (!record_file || !(g.rec = fopen(record_file, "a")))
		return init_fail("record_file missing or not writable",
				 record_file);
	for (size_t i = 0; i < sizeof callbacks / sizeof *callbacks; i++) {
		int rc = mosquitto_callback_register(
			identifier, callbacks[i].event, callbacks[i].cb, NULL,
			NULL);
		if (rc != MOSQ_ERR_SUCCESS) {
			for (size_t j = 0; j < i; j++)
				mosquitto_callback_unregister(
					identifier, callbacks[j].event,
					callbacks[j].cb, NULL);
			return init_fail("cannot register a callback", NULL);
		}
	}
	record("start", json_pack("{s:s, s:I, s:I, s:b}", "tenant", g.tenant,
				  "jwt_lifetime", (json_int_t)g.lifetime,
				  "max_payload", (json_int_t)g.max_payload,
				  "max_payload_header", g.max_header));
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
			     int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if (g.pid)
		for (size_t i = 0; i < sizeof callbacks / sizeof *callbacks;
		     i++)
			mosquitto_callback_unregister(g.pid, callbacks[i].event,
						      callbacks[i].cb, NULL);
	record("stop", json_object());
	state_free();
	return MOSQ_ERR_SUCCESS;
}
