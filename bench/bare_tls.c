/* SPDX-License-Identifier: MIT */
/*
 * bare_tls: the memory baseline for bench/store_forward.py.
 *
 * The least a client with the daemon's identity can be: libmosquitto, the
 * OpenSSL pkcs11 engine (libp11) with the same PKCS#11 module and token key,
 * an SSL_CTX built the way hsm/hsm.c builds it (certificate chain, token
 * key, CA, peer verification, TLS >= 1.2) handed to libmosquitto with
 * MOSQ_OPT_SSL_CTX, connected with QoS-less idleness: it publishes nothing,
 * subscribes to nothing and only answers keepalives until SIGTERM/SIGINT.
 * Whatever edgebridged uses beyond this process's peak RSS is the daemon's
 * own cost (queue, SQLite, sensors, loop).
 *
 *   bare_tls HOST PORT CAFILE CERT-CHAIN MODULE KEY-URI PIN-FILE [CLIENT-ID]
 *
 * Prints "bare_tls connected" (flushed) once the CONNACK arrived, and on
 * exit one line:
 *   bare_tls vmhwm_kib=K vmrss_kib=K private_dirty_kib=K
 * Exit 0 after a clean stop by signal, 1 on any error (on stderr).
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <mosquitto.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void ssl_fail(const char *what)
{
	unsigned long e;

	fprintf(stderr, "bare_tls: %s", what);
	while ((e = ERR_get_error()) != 0) {
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		fprintf(stderr, "; %s", one);
	}
	fputc('\n', stderr);
}

static int read_pin(const char *path, char *pin, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f) {
		fprintf(stderr, "bare_tls: %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = fread(pin, 1, size - 1, f);
	fclose(f);
	pin[n] = '\0';
	while (n && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
		pin[--n] = '\0';
	if (!n) {
		fprintf(stderr, "bare_tls: %s: empty PIN file\n", path);
		return -1;
	}
	return 0;
}

static long proc_kib(const char *file, const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	long v = -1;
	FILE *f = fopen(file, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtol(line + klen + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	bool *connected = ud;

	if (rc != 0) {
		fprintf(stderr, "bare_tls: connection refused: %s\n",
			mosquitto_connack_string(rc));
		stop = 1;
		mosquitto_disconnect(m);
		return;
	}
	if (!*connected) {
		*connected = true;
		printf("bare_tls connected\n");
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	const char *host, *ca, *chain, *module, *uri, *pin_file, *id;
	struct sigaction sa = { 0 };
	bool connected = false;
	struct mosquitto *m;
	X509_VERIFY_PARAM *param;
	ASN1_OCTET_STRING *ip;
	EVP_PKEY *key;
	SSL_CTX *ctx;
	ENGINE *e;
	char pin[256];
	char *end;
	int port, rc;

	if (argc < 8 || argc > 9) {
		fprintf(stderr,
			"usage: %s HOST PORT CAFILE CERT-CHAIN MODULE KEY-URI "
			"PIN-FILE [CLIENT-ID]\n",
			argv[0]);
		return 2;
	}
	host = argv[1];
	port = (int)strtol(argv[2], &end, 10);
	if (*end || port <= 0 || port > 65535) {
		fprintf(stderr, "bare_tls: bad port %s\n", argv[2]);
		return 2;
	}
	ca = argv[3];
	chain = argv[4];
	module = argv[5];
	uri = argv[6];
	pin_file = argv[7];
	id = argc > 8 ? argv[8] : "bare-tls";

	sa.sa_handler = on_signal; /* no SA_RESTART: interrupt the poll */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (read_pin(pin_file, pin, sizeof(pin)) < 0)
		return 1;
	ENGINE_load_builtin_engines();
	e = ENGINE_by_id("pkcs11");
	if (!e) {
		ssl_fail("ENGINE_by_id(pkcs11)");
		return 1;
	}
	ENGINE_ctrl_cmd_string(e, "QUIET", NULL, 0);
	if (!ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) ||
	    !ENGINE_ctrl_cmd_string(e, "PIN", pin, 0)) {
		ssl_fail("engine MODULE_PATH/PIN");
		return 1;
	}
	OPENSSL_cleanse(pin, sizeof(pin));
	if (!ENGINE_init(e)) {
		ssl_fail("ENGINE_init");
		return 1;
	}
	key = ENGINE_load_private_key(e, uri, NULL, NULL);
	if (!key) {
		ssl_fail("ENGINE_load_private_key");
		return 1;
	}

	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_fail("SSL_CTX_new");
		return 1;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, chain) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ssl_fail("TLS context (chain, key, CA)");
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	param = SSL_CTX_get0_param(ctx);
	ip = a2i_IPADDRESS(host);
	if (ip)
		X509_VERIFY_PARAM_set1_ip_asc(param, host);
	else
		X509_VERIFY_PARAM_set1_host(param, host, 0);
	ASN1_OCTET_STRING_free(ip);

	mosquitto_lib_init();
	m = mosquitto_new(id, true, &connected);
	if (!m) {
		fprintf(stderr, "bare_tls: mosquitto_new: %s\n",
			strerror(errno));
		return 1;
	}
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	if (mosquitto_void_option(m, MOSQ_OPT_SSL_CTX, ctx) ||
	    mosquitto_int_option(m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0)) {
		fprintf(stderr, "bare_tls: cannot set the TLS context\n");
		return 1;
	}
	mosquitto_connect_callback_set(m, on_connect);
	rc = mosquitto_connect(m, host, port, 60);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bare_tls: connect %s:%d: %s\n", host, port,
			rc == MOSQ_ERR_ERRNO ? strerror(errno)
					     : mosquitto_strerror(rc));
		return 1;
	}
	while (!stop) {
		rc = mosquitto_loop(m, 1000, 1);
		if (rc == MOSQ_ERR_ERRNO && errno == EINTR)
			continue;
		if (rc != MOSQ_ERR_SUCCESS && !stop) {
			fprintf(stderr, "bare_tls: connection lost: %s\n",
				rc == MOSQ_ERR_ERRNO ? strerror(errno)
						     : mosquitto_strerror(rc));
			return 1;
		}
	}
	printf("bare_tls vmhwm_kib=%ld vmrss_kib=%ld private_dirty_kib=%ld\n",
	       proc_kib("/proc/self/status", "VmHWM"),
	       proc_kib("/proc/self/status", "VmRSS"),
	       proc_kib("/proc/self/smaps_rollup", "Private_Dirty"));
	fflush(stdout);
	if (!connected)
		return 1;
	mosquitto_disconnect(m);
	mosquitto_loop(m, 100, 1);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	SSL_CTX_free(ctx);
	EVP_PKEY_free(key);
	ENGINE_finish(e);
	ENGINE_free(e);
	return 0;
}
