/* SPDX-License-Identifier: MIT */
/*
 * The transport seam: what the uplink (cloud.c) needs from a connection to
 * the cloud, as one ops table.  MQTT (mqtt.c, libmosquitto) and CoAP over
 * DTLS (coap.c, libcoap) implement it; the uplink's window, leases and
 * acknowledgements are the same over either.
 *
 * Topics are MQTT topics on every transport: a transport that has no
 * topics maps them to its own addresses (coap.c: v1/devices/me/telemetry
 * is POST /api/v1/telemetry) and delivers what it receives under the
 * MQTT-equivalent topic, so the companions of the uplink do not know
 * which transport carries them.
 */
#ifndef EB_TRANSPORT_H
#define EB_TRANSPORT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../daemon/loop.h"

struct transport; /* an instance; each implementation defines its own */

/* Why the server refused one publish for good (not the session). */
enum transport_refusal {
	TRANSPORT_MALFORMED, /* this payload will never be accepted (4.00) */
	TRANSPORT_TOO_LARGE, /* smaller payloads would be (4.13) */
};
struct hsm_coap;

struct transport_handler {
	void (*connected)(void *ud);
	/* The session is gone: nothing still in flight will be confirmed. */
	void (*disconnected)(void *ud);
	/* The server confirmed the publish with this id (MQTT PUBACK, CoAP
	 * 2.xx to a confirmable request). */
	void (*published)(void *ud, int id);
	/* The server refused the publish with this id, and only it: the
	 * session goes on, and sending the same payload again would get the
	 * same answer.  why is for the log (the code and the path). */
	void (*refused)(void *ud, int id, enum transport_refusal r,
			const char *why);
	void (*message)(void *ud, const char *topic, const void *payload,
			size_t len);
};

struct transport_opts {
	const char *host;
	unsigned port;
	const char *client_id;
	unsigned keepalive_s;
	unsigned max_inflight;
	uint64_t backoff_min_ms;
	uint64_t backoff_max_ms;
	SSL_CTX *tls;	       /* MQTT: referenced, not owned */
	struct hsm_coap *coap; /* CoAP: referenced, not owned */
	/* CoAP (RFC 7252 4.8): 0 means the RFC's default (2 s, 4, 1) */
	unsigned coap_ack_timeout_ms;
	unsigned coap_max_retransmit;
	unsigned coap_nstart;
	/* last will, published by the broker when we vanish (NULL: none) */
	const char *will_topic;
	const char *will_payload;
	eb_report_fn report;
};

typedef void (*transport_trial_fn)(void *ud, bool ok, const char *reason);

struct transport_ops {
	const char *name;
	/* The largest payload one request carries whole (0: the protocol
	 * sets none of its own).  The uplink packs within it: CoAP's
	 * block-wise transfer of a bigger one can stall inside libcoap
	 * 4.3.1 without an error, holding its rows. */
	size_t max_payload;
	struct transport *(*create)(struct loop *loop,
				    const struct transport_opts *opts,
				    const struct transport_handler *h, void *ud,
				    struct eb_err *err);
	struct transport *(*destroy)(struct transport *t);
	/* First connection attempt now; later ones follow the backoff. */
	void (*start)(struct transport *t);
	/* Ends the session cleanly and stops reconnecting. */
	void (*stop)(struct transport *t);
	bool (*connected)(const struct transport *t);
	/* 0 and *id set, or -errno (-ENOTCONN when not connected). */
	int (*publish)(struct transport *t, const char *topic,
		       const void *payload, size_t len, int qos, int *id);
	int (*subscribe)(struct transport *t, const char *topic, int qos);
	/* Has everything queued been handed to the network? */
	bool (*idle)(const struct transport *t);
	/* Optional (NULL: -EOPNOTSUPP): see mqtt_try_tls(). */
	int (*try_tls)(struct transport *t, SSL_CTX *tls,
		       transport_trial_fn done, void *ud);
};

extern const struct transport_ops transport_mqtt;
extern const struct transport_ops transport_coap;

/* The table for a [cloud] transport name ("mqtt", "coap"), or NULL. */
const struct transport_ops *transport_find(const char *name);

#endif
