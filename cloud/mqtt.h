/* SPDX-License-Identifier: MIT */
/*
 * MQTT transport: libmosquitto driven by the daemon's epoll loop (no
 * mosquitto_loop_start, no polling), TLS through a context built by hsm/,
 * and reconnection with capped, jittered exponential backoff.
 */
#ifndef EB_MQTT_H
#define EB_MQTT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../daemon/loop.h"
#include "transport.h"

struct mqtt;

/*
 * Options and handler are the transport seam's (transport.h): tls is used,
 * the coap* options are not; published() is the QoS 1 PUBACK for that
 * message id.  transport_mqtt is this API as the seam's ops table.
 */
struct mqtt *mqtt_new(struct loop *loop, const struct transport_opts *opts,
		      const struct transport_handler *h, void *ud,
		      struct eb_err *err);
struct mqtt *mqtt_free(struct mqtt *m);

/* First connection attempt now; later ones follow the backoff. */
void mqtt_start(struct mqtt *m);
/* Sends DISCONNECT and stops reconnecting. */
void mqtt_stop(struct mqtt *m);

bool mqtt_connected(const struct mqtt *m);
/* 0 and *mid set, or -errno (-ENOTCONN when not connected). */
int mqtt_publish(struct mqtt *m, const char *topic, const void *payload,
		 size_t len, int qos, int *mid);
int mqtt_subscribe(struct mqtt *m, const char *topic, int qos);
/*
 * Reconnects at once with another TLS context (a renewed certificate and
 * key), ending the current session cleanly.  If the broker accepts it,
 * the context stays in use (the caller keeps it alive as long as the
 * transport) and done(ud, true, NULL) runs before the connected handler.
 * If that attempt fails, the previous context is restored, done(ud, false,
 * reason) runs, and the next attempt uses the old credentials.
 * 0, or -EBUSY during another trial or after mqtt_stop().
 */
typedef void (*mqtt_trial_fn)(void *ud, bool ok, const char *reason);
int mqtt_try_tls(struct mqtt *m, SSL_CTX *tls, mqtt_trial_fn done, void *ud);
/* Has every queued packet been written to the socket? */
bool mqtt_idle(const struct mqtt *m);

#endif
