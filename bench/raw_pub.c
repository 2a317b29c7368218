/* SPDX-License-Identifier: MIT */
/*
 * raw_pub: the throughput baseline for bench/throughput.py.
 *
 * A plain libmosquitto client with a FILE key (no PKCS#11), mutual TLS to the
 * broker, QoS 1, ONE SmartREST 200 line per PUBLISH and a window of 1000
 * unacknowledged publishes.  It runs single-threaded (mosquitto_loop) and
 * keeps the window full from the callbacks: 1000 publishes once
 * connected, then one more for every PUBACK, so at most 1000 messages are
 * ever held in memory (the peak RSS it prints is a bare TLS client's).
 *
 * The clock starts at the first publish (after CONNACK) and stops when the
 * last PUBACK arrived (on_publish count).
 *
 *   raw_pub HOST PORT CAFILE CERTFILE KEYFILE N [CLIENT-ID [LINES [WINDOW]]]
 *
 * N lines in all; LINES per PUBLISH (default 1; more are joined with '\n'
 * like the daemon's packed publishes, at most 16184 bytes); WINDOW publishes
 * in flight (default 1000).  Prints one line (rate = lines per second):
 *   raw_pub messages=N seconds=S rate=R publishes=P lines_per_publish=L
 *           window=W vmhwm_kib=K vmrss_kib=K
 * Exit 0 on success, 1 on any error (reported on stderr).
 */
#include <errno.h>
#include <mosquitto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_WINDOW 1000
#define MAX_PAYLOAD 16184
#define TOPIC "s/us"

struct bench {
	long lines;   /* N */
	long per_pub; /* lines per publish */
	long window;  /* publishes in flight */
	long total;   /* publishes */
	long sent;    /* publishes sent */
	long acked;   /* PUBACKs */
	long line_no; /* next line's index */
	bool connected;
	bool failed;
	struct timespec t0, t1;
	char payload[MAX_PAYLOAD + 128];
};

static double now_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Typical SmartREST 2.0 measurement lines (~55 bytes); the value varies. */
static int make_payload(struct bench *b)
{
	int len = 0;

	for (long k = 0; k < b->per_pub && b->line_no < b->lines; k++) {
		long i = b->line_no++;

		len += snprintf(b->payload + len,
				sizeof(b->payload) - (size_t)len,
				"%s200,c8y_Temperature,T,%ld.%02ld,C,"
				"2024-05-01T12:00:00.123Z",
				k ? "\n" : "", 20 + i % 60, i % 100);
	}
	return len;
}

static void fail(struct mosquitto *m, struct bench *b, const char *what, int rc)
{
	fprintf(stderr, "raw_pub: %s: %s\n", what, mosquitto_strerror(rc));
	b->failed = true;
	mosquitto_disconnect(m);
}

static void publish_more(struct mosquitto *m, struct bench *b)
{
	while (!b->failed && b->sent < b->total &&
	       b->sent - b->acked < b->window) {
		int len = make_payload(b);
		int rc = mosquitto_publish(m, NULL, TOPIC, len, b->payload, 1,
					   false);

		if (rc != MOSQ_ERR_SUCCESS) {
			fail(m, b, "publish", rc);
			return;
		}
		b->sent++;
	}
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	struct bench *b = ud;

	if (rc != 0) {
		fprintf(stderr, "raw_pub: connection refused: %s\n",
			mosquitto_connack_string(rc));
		b->failed = true;
		mosquitto_disconnect(m);
		return;
	}
	if (b->connected)
		return; /* a reconnect would be a broken benchmark anyway */
	b->connected = true;
	clock_gettime(CLOCK_MONOTONIC, &b->t0);
	publish_more(m, b);
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
	struct bench *b = ud;

	(void)mid;
	b->acked++;
	if (b->acked == b->total) {
		clock_gettime(CLOCK_MONOTONIC, &b->t1);
		mosquitto_disconnect(m);
		return;
	}
	publish_more(m, b);
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc)
{
	struct bench *b = ud;

	(void)m;
	if (rc != 0 && b->acked < b->total) {
		fprintf(stderr,
			"raw_pub: disconnected after %ld of %ld PUBACKs: %s\n",
			b->acked, b->total, mosquitto_strerror(rc));
		b->failed = true;
	}
}

static long status_kib(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

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

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct mosquitto *m;
	char id[64];
	char *end;
	int port, rc;
	long hwm, rss;
	double secs;

	if (argc < 7 || argc > 10) {
		fprintf(stderr,
			"usage: %s HOST PORT CAFILE CERTFILE KEYFILE N "
			"[CLIENT-ID [LINES [WINDOW]]]\n",
			argv[0]);
		return 2;
	}
	port = (int)strtol(argv[2], &end, 10);
	if (*end || port <= 0 || port > 65535) {
		fprintf(stderr, "raw_pub: bad port %s\n", argv[2]);
		return 2;
	}
	b.lines = strtol(argv[6], &end, 10);
	if (*end || b.lines <= 0) {
		fprintf(stderr, "raw_pub: bad message count %s\n", argv[6]);
		return 2;
	}
	b.per_pub = 1;
	if (argc >= 9) {
		b.per_pub = strtol(argv[8], &end, 10);
		/* 55 bytes a line with its newline: within MAX_PAYLOAD */
		if (*end || b.per_pub <= 0 || b.per_pub > MAX_PAYLOAD / 55) {
			fprintf(stderr,
				"raw_pub: bad lines per publish %s "
				"(1..%d)\n",
				argv[8], MAX_PAYLOAD / 55);
			return 2;
		}
	}
	b.window = DEFAULT_WINDOW;
	if (argc >= 10) {
		b.window = strtol(argv[9], &end, 10);
		if (*end || b.window <= 0 || b.window > 65535) {
			fprintf(stderr, "raw_pub: bad window %s\n", argv[9]);
			return 2;
		}
	}
	b.total = (b.lines + b.per_pub - 1) / b.per_pub;
	if (argc >= 8 && argv[7][0])
		snprintf(id, sizeof(id), "%s", argv[7]);
	else
		snprintf(id, sizeof(id), "raw-pub-%ld", (long)getpid());

	mosquitto_lib_init();
	m = mosquitto_new(id, true, &b);
	if (!m) {
		fprintf(stderr, "raw_pub: mosquitto_new: %s\n",
			strerror(errno));
		return 1;
	}
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_max_inflight_messages_set(m, (unsigned)b.window);
	mosquitto_connect_callback_set(m, on_connect);
	mosquitto_publish_callback_set(m, on_publish);
	mosquitto_disconnect_callback_set(m, on_disconnect);
	rc = mosquitto_tls_set(m, argv[3], NULL, argv[4], argv[5], NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "raw_pub: tls_set: %s\n",
			mosquitto_strerror(rc));
		return 1;
	}
	rc = mosquitto_connect(m, argv[1], port, 60);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "raw_pub: connect %s:%d: %s\n", argv[1], port,
			rc == MOSQ_ERR_ERRNO ? strerror(errno)
					     : mosquitto_strerror(rc));
		return 1;
	}
	/* Until our mosquitto_disconnect() (done or failed) went out or the
	 * connection broke: no reconnect (mosquitto_loop_forever would retry
	 * forever, e.g. after a refused TLS handshake). */
	do
		rc = mosquitto_loop(m, 1000, 1);
	while (rc == MOSQ_ERR_SUCCESS);
	if (!b.failed && b.acked < b.total) {
		fprintf(stderr,
			"raw_pub: loop ended after %ld of %ld PUBACKs: %s\n",
			b.acked, b.total, mosquitto_strerror(rc));
		b.failed = true;
	}
	hwm = status_kib("VmHWM");
	rss = status_kib("VmRSS");
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	if (b.failed)
		return 1;
	secs = now_diff(&b.t0, &b.t1);
	printf("raw_pub messages=%ld seconds=%.6f rate=%.1f publishes=%ld "
	       "lines_per_publish=%ld window=%ld vmhwm_kib=%ld vmrss_kib=%ld\n",
	       b.lines, secs, secs > 0 ? (double)b.lines / secs : 0.0, b.total,
	       b.per_pub, b.window, hwm, rss);
	return 0;
}
