/* SPDX-License-Identifier: MIT */
/*
 * coap_client: the CoAP over DTLS figures of bench/coap_throughput.py,
 * with the daemon's own identity code (hsm/hsm.c, hsm/hsm_coap.c): the key
 * on the token, libcoap's COAP_PKI_KEY_PKCS11.
 *
 *   coap_client HOST PORT CAFILE CERT-CHAIN MODULE KEY-URI PIN-FILE
 *               HANDSHAKES REQUESTS NSTART
 *
 * 1. HANDSHAKES fresh DTLS sessions, one after the other: the time from
 *    coap_new_client_session_pki() to COAP_EVENT_DTLS_CONNECTED (the
 *    client's signature is made on the token);
 * 2. on one session, REQUESTS confirmable POSTs of a 60-byte JSON body to
 *    /api/v1/telemetry, at most NSTART unanswered at once (NSTART 1 is
 *    RFC 7252's default: one in flight).
 * Prints one line:
 *   coap_client handshake_ms_median=X handshake_ms_min=X requests=N
 *   seconds=X requests_per_s=X nstart=N
 * Exit 1 on any failure (on stderr).
 */
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "../hsm/hsm.h"
#include "../hsm/hsm_coap.h"

static int connected, failed, answered;

static int on_event(coap_session_t *s, const coap_event_t ev)
{
	(void)s;
	if (ev == COAP_EVENT_DTLS_CONNECTED)
		connected = 1;
	else if (ev == COAP_EVENT_DTLS_ERROR || ev == COAP_EVENT_SESSION_FAILED)
		failed = 1;
	return 0;
}

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
				   const coap_pdu_t *recv, const coap_mid_t mid)
{
	(void)s, (void)sent, (void)mid;
	if (coap_pdu_get_code(recv) >> 5 != 2)
		failed = 1;
	answered++;
	return COAP_RESPONSE_OK;
}

static void on_nack(coap_session_t *s, const coap_pdu_t *sent,
		    const coap_nack_reason_t r, const coap_mid_t mid)
{
	(void)s, (void)sent, (void)r, (void)mid;
	failed = 1;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_s(void)
{
	return (double)eb_now_ms() / 1000.0;
}

static coap_session_t *handshake(coap_context_t *ctx, struct hsm_coap *p,
				 coap_address_t *addr, double *ms)
{
	coap_dtls_pki_t setup;
	coap_session_t *s;
	double t0 = now_s();

	hsm_coap_setup(p, &setup);
	connected = failed = 0;
	s = coap_new_client_session_pki(ctx, NULL, addr, COAP_PROTO_DTLS,
					&setup);
	hsm_coap_forget_pin(p);
	if (!s || hsm_coap_session(p, coap_session_get_tls(s, NULL)) < 0)
		return NULL;
	while (!connected && !failed && now_s() - t0 < 20)
		coap_io_process(ctx, 100);
	*ms = (now_s() - t0) * 1000;
	if (!connected) {
		coap_session_release(s);
		return NULL;
	}
	return s;
}

static int post(coap_session_t *s)
{
	static const char body[] =
		"{\"ts\":1700000000000,\"values\":{\"temperature\":21.5}}";
	coap_pdu_t *pdu = coap_pdu_init(
		COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST,
		coap_new_message_id(s), coap_session_max_pdu_size(s));
	uint8_t tok[8];
	size_t tlen;

	coap_session_new_token(s, &tlen, tok);
	coap_add_token(pdu, tlen, tok);
	coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"api");
	coap_add_option(pdu, COAP_OPTION_URI_PATH, 2, (const uint8_t *)"v1");
	coap_add_option(pdu, COAP_OPTION_URI_PATH, 9,
			(const uint8_t *)"telemetry");
	coap_add_data(pdu, sizeof(body) - 1, (const uint8_t *)body);
	return coap_send(s, pdu) == COAP_INVALID_MID ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct eb_err err = { "" };
	enum hsm_fail hf;
	struct hsm *h;
	struct hsm_coap *p;
	coap_context_t *ctx;
	coap_address_t addr;
	coap_session_t *s = NULL;
	int handshakes, requests, nstart, sent = 0;
	double *ms, t0, secs;

	if (argc != 11) {
		fprintf(stderr, "usage: see bench/coap_client.c\n");
		return 2;
	}
	handshakes = atoi(argv[8]);
	requests = atoi(argv[9]);
	nstart = atoi(argv[10]);
	h = hsm_open(argv[5], argv[7], argv[6], &hf, &err);
	if (!h) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	p = hsm_coap_new(h, argv[4], argv[3], argv[6], argv[7], argv[1], &err);
	if (!p) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	coap_startup();
	coap_set_log_level(LOG_ERR);
	ctx = coap_new_context(NULL);
	coap_register_event_handler(ctx, on_event);
	coap_register_response_handler(ctx, on_response);
	coap_register_nack_handler(ctx, on_nack);
	coap_address_init(&addr);
	addr.addr.sin.sin_family = AF_INET;
	addr.addr.sin.sin_port = htons((uint16_t)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &addr.addr.sin.sin_addr);
	addr.size = sizeof(addr.addr.sin);
	ms = calloc((size_t)handshakes, sizeof(*ms));
	for (int i = 0; i < handshakes; i++) {
		if (s)
			coap_session_release(s);
		s = handshake(ctx, p, &addr, &ms[i]);
		if (!s) {
			fprintf(stderr, "DTLS handshake %d failed\n", i + 1);
			return 1;
		}
	}
	qsort(ms, (size_t)handshakes, sizeof(*ms), cmp);
	coap_session_set_nstart(s, (uint16_t)nstart);
	t0 = now_s();
	while (answered < requests && !failed) {
		while (sent < requests && sent - answered < nstart) {
			if (post(s) < 0)
				return 1;
			sent++;
		}
		coap_io_process(ctx, 100);
	}
	secs = now_s() - t0;
	if (failed) {
		fprintf(stderr, "a request failed\n");
		return 1;
	}
	printf("coap_client handshake_ms_median=%.1f handshake_ms_min=%.1f "
	       "requests=%d seconds=%.3f requests_per_s=%.0f nstart=%d\n",
	       ms[handshakes / 2], ms[0], requests, secs, requests / secs,
	       nstart);
	coap_session_release(s);
	coap_free_context(ctx);
	hsm_coap_free(p);
	hsm_close(h);
	free(ms);
	return 0;
}
