/* SPDX-License-Identifier: MIT */
/*
 * ThingsBoard: the device API over MQTT besides telemetry (which the
 * profile in thingsboard.c shapes for the uplink).
 *
 *   thingsboard.c  the cloud profile: telemetry objects and arrays, events
 *                  as telemetry, client attributes as the bootstrap
 *   tb_device.c    the companion: shared attributes (fetched on connect,
 *                  then pushed), server-side RPC (setGpio, getGpio,
 *                  getTelemetry), and the client-side RPC getSessionLimits
 *                  that sets the session's payload limit
 */
#ifndef EB_TB_H
#define EB_TB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../config/config.h"
#include "../daemon/loop.h"

#define TB_TOPIC_TELEMETRY "v1/devices/me/telemetry"
#define TB_TOPIC_ATTRIBUTES "v1/devices/me/attributes"
#define TB_TOPIC_ATTR_REQUEST "v1/devices/me/attributes/request/"
#define TB_TOPIC_ATTR_RESPONSE "v1/devices/me/attributes/response/"
#define TB_TOPIC_RPC_REQUEST "v1/devices/me/rpc/request/"
#define TB_TOPIC_RPC_RESPONSE "v1/devices/me/rpc/response/"

/* A sample's telemetry key: "<sensor>.<series>" (e.g. "boiler.T").
 * Its length, or -ENOSPC. */
int tb_key(const char *sensor, const char *series, char *buf, size_t len);

/* The shared attribute that sets a sensor's interval:
 * "sensor.<name>.interval", a duration ("30s") or a number of seconds. */
#define TB_ATTR_INTERVAL_PREFIX "sensor."
#define TB_ATTR_INTERVAL_SUFFIX ".interval"

struct cloud;
struct tb_device;

/* What the companion asks of the daemon.  why gets the reason of a
 * failure (sent back to the platform: no secrets in it). */
struct tb_device_host {
	/* A sensor's sampling interval changes (0 or -errno). */
	int (*set_interval)(void *ud, const char *sensor, uint64_t ms,
			    char *why, size_t len);
	/* Drives an output sensor (0 or -errno). */
	int (*write)(void *ud, const char *sensor, double value, char *why,
		     size_t len);
	/* The i-th running sensor's name, series and last value: 0, -EAGAIN
	 * (no value yet), -ENOENT (no i-th sensor). */
	int (*last)(void *ud, size_t i, const char **name, const char **series,
		    double *value, int64_t *time_ms);
	void *ud;
};

struct tb_device_stats {
	uint64_t rpc_requests; /* server-side RPCs received */
	uint64_t rpc_errors;   /* answered with an error object */
	uint64_t attr_updates; /* shared attribute messages applied */
	uint64_t malformed;    /* messages that were not the JSON we want */
	size_t max_payload;    /* the session's limit in force */
};

struct tb_device *tb_device_new(struct loop *loop, const struct eb_config *cfg,
				struct cloud *cloud,
				const struct tb_device_host *h,
				eb_report_fn report, struct eb_err *err);
struct tb_device *tb_device_free(struct tb_device *t);
void tb_device_get_stats(const struct tb_device *t, struct tb_device_stats *st);

/*
 * Handles one message from the platform (exported for the unit tests and
 * the fuzz target; the companion gets them from cloud.c).  Anything that
 * is not what the API says is counted and ignored, or answered with an
 * error object when it was an RPC with an id.
 */
void tb_device_message(struct tb_device *t, const char *topic,
		       const char *payload, size_t len);

#endif
