/* SPDX-License-Identifier: MIT */
/*
 * CoAP over DTLS transport (RFC 7252, coaps://): libcoap 4.3 in the
 * daemon's epoll loop, the device key on the token (hsm/hsm_coap.h).
 * Its instance is reached through transport_coap (transport.h); what is
 * declared here is the pure part, exported for the unit tests: how MQTT
 * device topics map to CoAP resources (ThingsBoard's CoAP device API).
 */
#ifndef EB_COAPS_H
#define EB_COAPS_H

#include <stdbool.h>
#include <stddef.h>

/* What a publish on an MQTT topic becomes over CoAP. */
struct coaps_route {
	bool get;	  /* GET with query, the payload not sent; else POST */
	char path[256];	  /* "/api/v1/..." */
	char query[512];  /* GET: Uri-Query options, '&' between them */
	char answer[256]; /* "" or the topic a 2.xx answer's payload goes to */
};
/*
 *   v1/devices/me/telemetry          POST /api/v1/telemetry
 *   v1/devices/me/attributes         POST /api/v1/attributes
 *   v1/devices/me/attributes/request/ID
 *                                    GET /api/v1/attributes?sharedKeys=..
 *                                    &clientKeys=.. (the keys of the JSON
 *                                    payload; the answer is delivered on
 *                                    .../attributes/response/ID)
 *   v1/devices/me/rpc/response/ID    POST /api/v1/rpc/ID
 *   v1/devices/me/rpc/request/ID     POST /api/v1/rpc (the answer is
 *                                    delivered on .../rpc/response/ID)
 *   anything else                    POST /TOPIC (same segments)
 * Returns the path length, -EINVAL for an empty topic, a wildcard or an
 * empty segment, -ENAMETOOLONG when it does not fit, -EBADMSG for an
 * attribute request that is not {"sharedKeys": "a,b", "clientKeys": ..}.
 * A key list longer than one Uri-Query option (255 bytes) is left out:
 * the server then answers with every attribute of that kind.
 */
int coaps_route(const char *topic, const char *payload, size_t plen,
		struct coaps_route *r);
/*
 * The resource observed for a subscription:
 *   v1/devices/me/attributes         /api/v1/attributes
 *   v1/devices/me/rpc/request/+      /api/v1/rpc
 *   v1/devices/me/attributes/response/+ and .../rpc/response/+: nothing
 *                                    to observe (answers come with their
 *                                    requests): returns 0 and path ""
 *   anything else without wildcards  /TOPIC
 * Returns the path length, or -EINVAL / -ENAMETOOLONG.
 */
int coaps_observe_path(const char *topic, char *path, size_t len);
/*
 * The topic a notification for subscription sub is delivered on: sub
 * itself, or for .../rpc/request/+ the request id from the JSON payload
 * ({"id":N,...}).  Returns the length, -EBADMSG without an id.
 */
int coaps_notify_topic(const char *sub, const char *payload, size_t plen,
		       char *topic, size_t len);
/* Is this payload JSON (first non-blank byte '{' or '[')? */
bool coaps_is_json(const void *payload, size_t len);

#endif
