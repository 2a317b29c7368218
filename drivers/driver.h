/* SPDX-License-Identifier: MIT */
/*
 * Sensor drivers behind one ops table.  Adding a driver means one file in
 * drivers/ and one entry in registry.c.
 *
 * A driver is either polled (the daemon calls read() every interval) or
 * event-driven (it exposes an fd; the daemon calls read() when it is
 * readable).  read() hands samples to the sink; it never blocks and never
 * touches the network.
 */
#ifndef EB_DRIVER_H
#define EB_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/util.h"
#include "../config/config.h"

struct sample_sink {
	/* time_ms: CLOCK_REALTIME milliseconds when the value was taken */
	void (*emit)(struct sample_sink *sink, double value, int64_t time_ms);
};

struct driver_ops {
	const char *name;
	/* interval = 0 ("as fast as the queue accepts") makes sense */
	bool allow_zero_interval;
	/* Validate the driver's own keys (config_sensor_opt() marks them
	 * used) and report problems with their file:line. */
	void (*check)(struct eb_sensor_conf *conf, struct eb_diags *d);
	/* Create the driver state from a checked configuration. */
	int (*open)(struct eb_sensor_conf *conf, void **state,
		    struct eb_err *err);
	/* fd to watch for event-driven drivers, or -1 for polled ones. */
	int (*fd)(void *state);
	/* Emit zero or more samples.  Returns the number emitted, -ENODATA
	 * when the source is exhausted for good, or another -errno. */
	int (*read)(void *state, struct sample_sink *sink, struct eb_err *err);
	/* Outputs only (a relay): drive the output to value.  NULL for a
	 * driver that only reads.  0 or -errno with err set. */
	int (*write)(void *state, double value, struct eb_err *err);
	void (*close)(void *state);
};

const struct driver_ops *driver_find(const char *name);

/* config_load() hook: known driver, interval, then the driver's check. */
void driver_check_config(struct eb_sensor_conf *conf, struct eb_diags *d);

/* Option helpers for check(): a missing key leaves *out untouched; a bad
 * value is reported with its file:line and false is returned. */
bool driver_opt_double(struct eb_sensor_conf *c, const char *key,
		       struct eb_diags *d, double *out);
bool driver_opt_uint(struct eb_sensor_conf *c, const char *key, uint64_t max,
		     struct eb_diags *d, uint64_t *out);
bool driver_opt_duration(struct eb_sensor_conf *c, const char *key,
			 struct eb_diags *d, uint64_t *out_ms);
/* Returns the index of the value in choices, or -1 (reported). */
int driver_opt_choice(struct eb_sensor_conf *c, const char *key,
		      const char *const *choices, int def, struct eb_diags *d);

extern const struct driver_ops driver_sim;
extern const struct driver_ops driver_hwmon;

#endif
