/* SPDX-License-Identifier: MIT */
/*
 * A ThingsBoard CoAP device endpoint for the tests, on libcoap 4.3 (DTLS
 * with OpenSSL): a client certificate chaining to --client-ca is required
 * (the client must send its intermediates: the store holds the root only),
 * as ThingsBoard's X.509 device authentication does.
 *
 *   POST /api/v1/telemetry   2.01; 4.00 unless it is ThingsBoard's JSON
 *                       ({"ts": <int>, "values": {...}}, an array of those,
 *                       or a flat object of key/values), as tb_plugin.c
 *   POST /api/v1/attributes  2.01 for a flat JSON object (kept as the
 *                       device's client attributes), else 4.00
 *   POST /api/v1/rpc/{id}    an RPC response: 2.01 for JSON, else 4.00
 *   POST /api/v1/rpc    (a client-side RPC) 2.05 {"result":"ok"}
 *   GET  /api/v1/attributes?clientKeys=a,b&sharedKeys=c,d
 *                       2.05 {"client": {...}, "shared": {...}} with the
 *                       keys asked for that are set (every one of a kind
 *                       when its list is missing)
 *   GET  /api/v1/attributes, /api/v1/rpc with Observe: notifications with
 *                       what the control channel pushes (confirmable)
 *   --post PATH / --observe PATH: more of the same, without validation
 *   --max-body N        4.13 for a POST body above N bytes
 *
 * Every request is a JSON line in --record: {"t", "ev", "path", "cn",
 * "payload", "code"}; "ev" is "post", "observe", "attr_request" (payload:
 * the query), "notify", "session", "start".  The control channel is
 * stdin, one command a line:
 *   notify PATH TEXT    the new state of PATH, sent to its observers
 *   shared JSON         shared attributes set (merged), and the object
 *                       sent to the observers of /api/v1/attributes, as
 *                       ThingsBoard pushes an update
 *   fail N CODE         answer the next N POSTs with CODE (e.g. 5.03)
 *   quit
 * "ready PORT" on stdout once it listens; "ok" after each command.
 */
#include <coap3/coap.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "tb_json.h"

#define MAX_RES 16

struct res {
	coap_resource_t *r;
	char path[128];
	bool observable;
	char *state; /* what observers get */
	size_t state_len;
};

static struct res res[MAX_RES];
static int n_res;
static FILE *rec;
static int fail_n;
static unsigned fail_code;
static bool quit;
static X509 *chain_cert;
static bool verbose;
static size_t max_body;
static json_t *shared_attrs, *client_attrs;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void peer_cn(coap_session_t *s, char *cn, size_t len)
{
	SSL *ssl = coap_session_get_tls(s, NULL);
	X509 *x = ssl ? SSL_get1_peer_certificate(ssl) : NULL;

	cn[0] = '\0';
	if (x) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					  NID_commonName, cn, (int)len);
		X509_free(x);
	}
}

static void record(const char *ev, const char *path, coap_session_t *s,
		   const uint8_t *data, size_t len, unsigned code)
{
	char cn[256] = "";
	json_t *j;

	if (s)
		peer_cn(s, cn, sizeof(cn));
	j = json_pack("{s:f,s:s,s:s,s:s,s:s%,s:s}", "t", now(), "ev", ev,
		      "path", path, "cn", cn, "payload",
		      data ? (const char *)data : "", data ? len : 0, "code",
		      "");
	if (!j) /* not UTF-8 */
		j = json_pack("{s:f,s:s,s:s,s:s,s:i}", "t", now(), "ev", ev,
			      "path", path, "cn", cn, "payload_bytes",
			      (int)len);
	if (code) {
		char c[24];

		snprintf(c, sizeof(c), "%u.%02u", code >> 5, code & 31);
		json_object_set_new(j, "code", json_string(c));
	}
	json_dumpf(j, rec, JSON_COMPACT);
	fputc('\n', rec);
	fflush(rec);
	json_decref(j);
}

static struct res *res_of(coap_resource_t *r)
{
	for (int i = 0; i < n_res; i++)
		if (res[i].r == r)
			return &res[i];
	return NULL;
}

/* 0 when path takes this body, else the code it is refused with. */
static unsigned check_body(const char *path, const uint8_t *data, size_t len)
{
	json_t *j;
	unsigned code = 0;

	if (max_body && len > max_body)
		return COAP_RESPONSE_CODE_REQUEST_TOO_LARGE;
	if (strcmp(path, "api/v1/telemetry") &&
	    strcmp(path, "api/v1/attributes") &&
	    strncmp(path, "api/v1/rpc/", 11))
		return 0;
	j = json_loadb((const char *)data, len, 0, NULL);
	if (!strcmp(path, "api/v1/telemetry")) {
		if (!tb_valid_telemetry(j))
			code = COAP_RESPONSE_CODE_BAD_REQUEST;
	} else if (!strcmp(path, "api/v1/attributes")) {
		if (!tb_flat_object(j))
			code = COAP_RESPONSE_CODE_BAD_REQUEST;
		else
			json_object_update(client_attrs, j);
	} else if (!j) {
		code = COAP_RESPONSE_CODE_BAD_REQUEST;
	}
	json_decref(j);
	return code;
}

static void on_post(coap_resource_t *r, coap_session_t *s,
		    const coap_pdu_t *req, const coap_string_t *q,
		    coap_pdu_t *resp)
{
	struct res *x = res_of(r);
	const uint8_t *data = NULL;
	size_t len = 0, off, total;
	unsigned code = COAP_RESPONSE_CODE_CREATED;

	(void)q;
	coap_get_data_large(req, &len, &data, &off, &total);
	if (fail_n > 0) {
		fail_n--;
		code = fail_code;
	} else if (check_body(x->path, data, len)) {
		code = check_body(x->path, data, len);
	} else if (!strcmp(x->path, "api/v1/rpc")) {
		static const char ok[] = "{\"result\":\"ok\"}";
		uint8_t buf[4];

		coap_pdu_set_code(resp, COAP_RESPONSE_CODE_CONTENT);
		coap_add_option(
			resp, COAP_OPTION_CONTENT_FORMAT,
			coap_encode_var_safe(buf, sizeof(buf),
					     COAP_MEDIATYPE_APPLICATION_JSON),
			buf);
		coap_add_data(resp, sizeof(ok) - 1, (const uint8_t *)ok);
		record("post", x->path, s, data, len,
		       COAP_RESPONSE_CODE_CONTENT);
		return;
	}
	record("post", x->path, s, data, len, code);
	coap_pdu_set_code(resp, (coap_pdu_code_t)code);
}

/* POST /api/v1/rpc/{id}: an RPC response, recorded with its path. */
static void on_post_unknown(coap_resource_t *r, coap_session_t *s,
			    const coap_pdu_t *req, const coap_string_t *q,
			    coap_pdu_t *resp)
{
	coap_string_t *path = coap_get_uri_path(req);
	const uint8_t *data = NULL;
	size_t len = 0, off, total;
	unsigned code;
	char p[256];

	(void)r, (void)q;
	snprintf(p, sizeof(p), "%.*s", path ? (int)path->length : 0,
		 path ? (const char *)path->s : "");
	coap_delete_string(path);
	if (strncmp(p, "api/v1/rpc/", 11)) {
		coap_pdu_set_code(resp, COAP_RESPONSE_CODE_NOT_FOUND);
		return;
	}
	coap_get_data_large(req, &len, &data, &off, &total);
	code = check_body(p, data, len);
	if (!code)
		code = COAP_RESPONSE_CODE_CREATED;
	record("post", p, s, data, len, code);
	coap_pdu_set_code(resp, (coap_pdu_code_t)code);
}

/* The attributes of list ("a,b", NULL: all) that are set in from. */
static json_t *pick(json_t *from, const char *list)
{
	json_t *o = json_object();
	char *copy, *save = NULL;

	if (!list)
		return json_object_update(o, from), o;
	copy = strdup(list);
	for (char *k = strtok_r(copy, ",", &save); k;
	     k = strtok_r(NULL, ",", &save))
		if (json_object_get(from, k))
			json_object_set(o, k, json_object_get(from, k));
	free(copy);
	return o;
}

/* GET /api/v1/attributes?clientKeys=..&sharedKeys=.. */
static void attr_request(coap_session_t *s, const coap_string_t *q,
			 coap_pdu_t *resp)
{
	char query[1024], *save = NULL, *client = NULL, *shared = NULL;
	json_t *o;
	char *text;
	uint8_t buf[4];

	snprintf(query, sizeof(query), "%.*s", q ? (int)q->length : 0,
		 q ? (const char *)q->s : "");
	record("attr_request", "api/v1/attributes", s, (const uint8_t *)query,
	       strlen(query), COAP_RESPONSE_CODE_CONTENT);
	for (char *kv = strtok_r(query, "&", &save); kv;
	     kv = strtok_r(NULL, "&", &save)) {
		if (!strncmp(kv, "clientKeys=", 11))
			client = kv + 11;
		else if (!strncmp(kv, "sharedKeys=", 11))
			shared = kv + 11;
	}
	o = json_pack("{s:o, s:o}", "client", pick(client_attrs, client),
		      "shared", pick(shared_attrs, shared));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	coap_pdu_set_code(resp, COAP_RESPONSE_CODE_CONTENT);
	coap_add_option(resp, COAP_OPTION_CONTENT_FORMAT,
			coap_encode_var_safe(buf, sizeof(buf),
					     COAP_MEDIATYPE_APPLICATION_JSON),
			buf);
	coap_add_data(resp, strlen(text), (const uint8_t *)text);
	free(text);
}

static void on_get(coap_resource_t *r, coap_session_t *s, const coap_pdu_t *req,
		   const coap_string_t *q, coap_pdu_t *resp)
{
	struct res *x = res_of(r);
	uint8_t buf[4];

	if (coap_check_option(req, COAP_OPTION_OBSERVE,
			      &(coap_opt_iterator_t){ 0 })) {
		record("observe", x->path, s, NULL, 0, 0);
	} else if (!strcmp(x->path, "api/v1/attributes")) {
		attr_request(s, q, resp);
		return;
	}
	coap_pdu_set_code(resp, COAP_RESPONSE_CODE_CONTENT);
	coap_add_option(resp, COAP_OPTION_CONTENT_FORMAT,
			coap_encode_var_safe(buf, sizeof(buf),
					     COAP_MEDIATYPE_APPLICATION_JSON),
			buf);
	if (x->state_len)
		coap_add_data(resp, x->state_len, (const uint8_t *)x->state);
}

static void add_res(coap_context_t *ctx, const char *path, bool observable)
{
	struct res *x = &res[n_res++];

	snprintf(x->path, sizeof(x->path), "%s",
		 path[0] == '/' ? path + 1 : path);
	x->observable = observable;
	x->r = coap_resource_init(coap_make_str_const(x->path),
				  COAP_RESOURCE_FLAGS_NOTIFY_CON);
	coap_register_handler(x->r, COAP_REQUEST_POST, on_post);
	if (observable) {
		coap_register_handler(x->r, COAP_REQUEST_GET, on_get);
		coap_resource_set_get_observable(x->r, 1);
	}
	coap_add_resource(ctx, x->r);
}

static int on_event(coap_session_t *s, const coap_event_t ev)
{
	const char *what = NULL;

	switch (ev) {
	case COAP_EVENT_DTLS_CONNECTED:
		what = "dtls_connected";
		break;
	case COAP_EVENT_DTLS_ERROR:
		what = "dtls_error";
		break;
	case COAP_EVENT_DTLS_CLOSED:
		what = "dtls_closed";
		break;
	default:
		break;
	}
	if (what)
		record("session", what,
		       ev == COAP_EVENT_DTLS_CONNECTED ? s : NULL, NULL, 0, 0);
	return 0;
}

/* The server's intermediate goes with its certificate. */
static int add_chain(void *ssl, coap_dtls_pki_t *setup)
{
	(void)setup;
	if (chain_cert)
		SSL_add1_chain_cert((SSL *)ssl, chain_cert);
	return 1;
}

/* stdout is the control channel's: libcoap logs to stderr */
static void log_stderr(coap_log_t level, const char *msg)
{
	if (verbose || level <= LOG_WARNING)
		fputs(msg, stderr);
}

static unsigned parse_code(const char *s)
{
	unsigned c, d;

	if (sscanf(s, "%u.%u", &c, &d) != 2)
		return 0;
	return c << 5 | d;
}

static void notify(const char *path, const char *text)
{
	for (int i = 0; i < n_res; i++) {
		struct res *x = &res[i];

		if (strcmp(x->path, path[0] == '/' ? path + 1 : path))
			continue;
		free(x->state);
		x->state = strdup(text);
		x->state_len = strlen(x->state);
		record("notify", x->path, NULL, (const uint8_t *)x->state,
		       x->state_len, 0);
		coap_resource_notify_observers(x->r, NULL);
	}
}

static void command(char *line)
{
	char *arg = strchr(line, ' ');

	line[strcspn(line, "\r\n")] = '\0';
	if (arg)
		*arg++ = '\0';
	if (!strcmp(line, "quit")) {
		quit = true;
	} else if (!strcmp(line, "fail") && arg) {
		char code[16];

		if (sscanf(arg, "%d %15s", &fail_n, code) == 2)
			fail_code = parse_code(code);
	} else if (!strcmp(line, "shared") && arg) {
		json_t *j = json_loads(arg, 0, NULL);

		if (json_is_object(j))
			json_object_update(shared_attrs, j);
		json_decref(j);
		notify("api/v1/attributes", arg);
	} else if (!strcmp(line, "notify") && arg) {
		char *text = strchr(arg, ' ');

		if (text)
			*text++ = '\0';
		notify(arg, text ? text : "");
	}
	printf("ok\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },
		{ "chain", required_argument, NULL, 'i' },
		{ "client-ca", required_argument, NULL, 'a' },
		{ "record", required_argument, NULL, 'r' },
		{ "post", required_argument, NULL, 'P' },
		{ "observe", required_argument, NULL, 'O' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "max-body", required_argument, NULL, 'm' },
		{ 0 },
	};
	const char *cert = NULL, *key = NULL, *ca = NULL, *recf = NULL;
	const char *extra_post[8], *extra_obs[8];
	int n_post = 0, n_obs = 0, port = 0, opt, efd;
	coap_dtls_pki_t pki = { 0 };
	coap_address_t addr;
	coap_context_t *ctx;
	struct epoll_event ev;
	char line[4096];
	size_t used = 0;

	coap_set_log_handler(log_stderr);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'i': {
			FILE *f = fopen(optarg, "r");

			chain_cert =
				f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
			if (f)
				fclose(f);
			break;
		}
		case 'a':
			ca = optarg;
			break;
		case 'r':
			recf = optarg;
			break;
		case 'P':
			if (n_post < 8)
				extra_post[n_post++] = optarg;
			break;
		case 'O':
			if (n_obs < 8)
				extra_obs[n_obs++] = optarg;
			break;
		case 'm':
			max_body = (size_t)atol(optarg);
			break;
		case 'v':
			verbose = true;
			coap_set_log_level(LOG_DEBUG);
			break;
		default:
			return 2;
		}
	}
	if (!port || !cert || !key || !ca || !recf) {
		fprintf(stderr,
			"usage: %s --port P --cert C --key K [--chain I]"
			" --client-ca CA --record FILE\n",
			argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	shared_attrs = json_object();
	client_attrs = json_object();
	rec = fopen(recf, "a");
	if (!rec)
		return 1;
	coap_startup();
	/*
	 * Observed with libcoap 4.3.1 (bookworm): below LOG_DEBUG for DTLS, the
	 * server never answers a client's second flight when it carries a
	 * certificate chain; at LOG_DEBUG it does.  The lines are filtered in
	 * log_stderr() instead.
	 */
	coap_dtls_set_log_level(LOG_DEBUG);
	ctx = coap_new_context(NULL);
	coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP |
						 COAP_BLOCK_SINGLE_BODY);
	pki.version = COAP_DTLS_PKI_SETUP_VERSION;
	pki.verify_peer_cert = 1;
	pki.check_common_ca = 1;
	pki.cert_chain_validation = 1;
	pki.cert_chain_verify_depth = 4;
	pki.additional_tls_setup_call_back = add_chain;
	pki.pki_key.key_type = COAP_PKI_KEY_PEM;
	pki.pki_key.key.pem.public_cert = cert;
	pki.pki_key.key.pem.private_key = key;
	pki.pki_key.key.pem.ca_file = ca;
	if (!coap_context_set_pki(ctx, &pki)) {
		fprintf(stderr, "cannot set up the PKI\n");
		return 1;
	}
	coap_address_init(&addr);
	addr.addr.sin.sin_family = AF_INET;
	addr.addr.sin.sin_port = htons((uint16_t)port);
	addr.addr.sin.sin_addr.s_addr = htonl(0x7f000001);
	addr.size = sizeof(addr.addr.sin);
	if (!coap_new_endpoint(ctx, &addr, COAP_PROTO_DTLS)) {
		fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
		return 1;
	}
	add_res(ctx, "api/v1/telemetry", false);
	add_res(ctx, "api/v1/attributes", true);
	add_res(ctx, "api/v1/rpc", true);
	for (int i = 0; i < n_post; i++)
		add_res(ctx, extra_post[i], false);
	for (int i = 0; i < n_obs; i++)
		add_res(ctx, extra_obs[i], true);
	{
		/* (its argument is the PUT handler) */
		coap_resource_t *u =
			coap_resource_unknown_init(on_post_unknown);

		coap_register_handler(u, COAP_REQUEST_POST, on_post_unknown);
		coap_add_resource(ctx, u);
	}
	coap_register_event_handler(ctx, on_event);
	record("start", "", NULL, NULL, 0, 0);

	efd = epoll_create1(EPOLL_CLOEXEC);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.fd = 0 };
	epoll_ctl(efd, EPOLL_CTL_ADD, 0, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN,
				   .data.fd = coap_context_get_coap_fd(ctx) };
	epoll_ctl(efd, EPOLL_CTL_ADD, ev.data.fd, &ev);
	printf("ready %d\n", port);
	fflush(stdout);
	while (!quit) {
		struct epoll_event got[4];
		int n = epoll_wait(efd, got, 4, -1);

		for (int i = 0; i < n; i++) {
			if (got[i].data.fd == 0) {
				ssize_t r = read(0, line + used,
						 sizeof(line) - 1 - used);
				char *nl;

				if (r <= 0) {
					quit = true;
					break;
				}
				used += (size_t)r;
				line[used] = '\0';
				while ((nl = strchr(line, '\n'))) {
					*nl = '\0';
					command(line);
					used -= (size_t)(nl + 1 - line);
					memmove(line, nl + 1, used + 1);
				}
			}
		}
		coap_io_process(ctx, COAP_IO_NO_WAIT);
	}
	coap_free_context(ctx);
	coap_cleanup();
	fclose(rec);
	return 0;
}
