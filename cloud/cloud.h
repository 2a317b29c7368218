/* SPDX-License-Identifier: MIT */
/*
 * The uplink: takes samples from the store, packs them into publishes as
 * the cloud profile says, sends them over the configured transport (MQTT
 * with QoS 1, or CoAP confirmable requests: cloud/transport.h) and
 * acknowledges them to the store only on PUBACK (or the CoAP 2.xx).  Store
 * events (drop reports, resets) go out the same way.
 */
#ifndef EB_CLOUD_H
#define EB_CLOUD_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../config/config.h"
#include "../daemon/loop.h"
#include "../store/store.h"

struct cloud;

struct cloud_stats {
	bool connected;
	uint64_t connects;
	uint64_t publishes;	/* measurement publishes sent */
	uint64_t samples_sent;	/* samples in them (incl. re-sends) */
	uint64_t samples_acked; /* acknowledged by the broker */
	uint64_t quarantined;	/* samples that could not be formatted */
	uint64_t events;	/* events published (drop reports...) */
	unsigned inflight;	/* publishes awaiting PUBACK */
};

struct hsm_coap;
/*
 * The transport is cfg->cloud.transport: "mqtt" authenticates with tls,
 * "coap" (DTLS) with coap (hsm/hsm_coap.h); the other may be NULL.
 */
struct cloud *cloud_new(struct loop *loop, const struct eb_config *cfg,
			SSL_CTX *tls, struct hsm_coap *coap, struct store *st,
			const char *version, eb_report_fn report,
			struct eb_err *err);
struct cloud *cloud_free(struct cloud *c);

/* Called after the broker acknowledged samples (space freed in the store). */
void cloud_on_acked(struct cloud *c, void (*fn)(void *ud), void *ud);

void cloud_start(struct cloud *c);
/* New samples are waiting: publish what the window allows. */
void cloud_kick(struct cloud *c);
/* Nothing in flight. */
bool cloud_idle(const struct cloud *c);
void cloud_stop(struct cloud *c);
void cloud_get_stats(const struct cloud *c, struct cloud_stats *st);

/*
 * Companions of the uplink (a platform's token fetcher, its operation
 * handler): told about the connection and given the messages on the topics
 * they subscribed to.  At most CLOUD_MAX_EXT.
 */
#define CLOUD_MAX_EXT 4
struct cloud_ext {
	void (*connected)(void *ud);
	void (*disconnected)(void *ud);
	/* payload is NUL-terminated (len excludes the NUL) */
	void (*message)(void *ud, const char *topic, const char *payload,
			size_t len);
};
int cloud_add_ext(struct cloud *c, const struct cloud_ext *ext, void *ud);

bool cloud_connected(const struct cloud *c);
/* QoS 1 subscription, for this connection (call it from connected()). */
int cloud_subscribe(struct cloud *c, const char *topic);
/*
 * A QoS 1 publish outside the sample window.  done(ud, true) after the
 * PUBACK; done(ud, false) when the connection went first (then it may or
 * may not have arrived).  0 or -errno (-ENOTCONN: not sent, no callback).
 */
int cloud_publish(struct cloud *c, const char *topic, const char *payload,
		  size_t len, void (*done)(void *ud, bool ok), void *ud);
/*
 * Switches the connection to a renewed certificate and key if the broker
 * accepts them (see mqtt_try_tls()); done() says whether it did.  What was
 * in flight is offered again on the next connection, as after any
 * reconnect.
 */
int cloud_try_tls(struct cloud *c, SSL_CTX *tls,
		  void (*done)(void *ud, bool ok, const char *reason),
		  void *ud);
/*
 * This session's payload limit, as the platform reported it (ThingsBoard's
 * getSessionLimits), clamped to [CLOUD_MIN_PAYLOAD, the profile's
 * max_payload_cap].  Returns the limit now in force.  Every connect starts
 * again from the profile's max_payload.
 */
#define CLOUD_MIN_PAYLOAD 64
size_t cloud_set_max_payload(struct cloud *c, size_t bytes);
size_t cloud_max_payload(const struct cloud *c);
/*
 * Holds samples and events back in this session (a companion asks for the
 * session's limit first: publishing above it would close the connection);
 * false sends what waits.  A disconnect releases the hold.
 */
void cloud_hold(struct cloud *c, bool hold);
/* The profile's uplink topic (where s/us lines go). */
const char *cloud_uplink_topic(const struct cloud *c);
/* The transport's name ("mqtt", "coap"), for messages. */
const char *cloud_transport_name(const struct cloud *c);

#endif
