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

/*
 * The resource a publish on topic is POSTed to:
 *   v1/devices/me/telemetry          /api/v1/telemetry
 *   v1/devices/me/attributes         /api/v1/attributes
 *   v1/devices/me/rpc/response/ID    /api/v1/rpc/ID
 *   v1/devices/me/rpc/request/ID     /api/v1/rpc (*rpc_id = ID: the answer
 *                                    is delivered on .../rpc/response/ID)
 *   anything else                    /TOPIC (same segments)
 * Returns the path length, -EINVAL for an empty topic, a wildcard or an
 * empty segment, -ENAMETOOLONG when it does not fit len.
 */
int coaps_publish_path(const char *topic, char *path, size_t len, long *rpc_id);
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
