/* SPDX-License-Identifier: MIT */
/*
 * Sensor drivers behind one ops table.  Adding a driver means one file in
 * drivers/ and one entry in registry.c.
 *
 * A driver is either polled (the daemon calls read() every interval) or
 * event-driven (it exposes an fd; the daemon calls read() when it is
 * readable).  Either kind may also ask for a wake-up of its own (wake_at:
 * a debounce window settling, an interval report, a protocol step); then
 * the daemon calls read() at that time instead of every interval.
 * read() hands samples and events to the sink; it never blocks (but for
 * the few milliseconds of a bit-banged protocol, see dht22.c) and never
 * touches the network.
 *
 * A sensor that cannot be opened, or whose read() says its device is gone
 * (-ENODEV), is closed and opened again by the daemon with a backoff; its
 * failure and its recovery reach the cloud as an alarm and an event, once
 * per change, never once per attempt.
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
	/* A further series of the same sensor (one per GPIO line, humidity
	 * beside temperature): "<series>_<suffix>", in unit (NULL: the
	 * sensor's unit).  At most SINK_MAX_SERIES suffixes per sensor. */
	void (*emit_series)(struct sample_sink *sink, const char *suffix,
			    const char *unit, double value, int64_t time_ms);
	/* An event for the cloud (Cumulocity 400, type and text); the sink
	 * prefixes the text with "sensor NAME: ". */
	void (*event)(struct sample_sink *sink, const char *type,
		      const char *text, int64_t time_ms);
};

#define SINK_MAX_SERIES 16

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
	 * when the source is exhausted for good, -ENODEV when the device is
	 * gone (the daemon closes and re-opens it), or another -errno. */
	int (*read)(void *state, struct sample_sink *sink, struct eb_err *err);
	/* Optional: eb_now_ms() time at which read() wants to be called even
	 * without fd activity, 0 for none.  A driver with wake_at is
	 * scheduled by it alone, never by interval. */
	uint64_t (*wake_at)(void *state);
	/* Optional: report the current state now (an input's level): called
	 * when the cloud connection comes up, and when the sensor opens
	 * while connected.  Returns like read(). */
	int (*report_state)(void *state, struct sample_sink *sink,
			    struct eb_err *err);
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
/* The required absolute path key (example goes into the message). */
bool driver_opt_path(struct eb_sensor_conf *c, const char *key,
		     const char *example, struct eb_diags *d, const char **out);
/* open() of a driver whose params() failed: the first problem as err. */
int driver_bad_options(struct eb_diags *d, struct eb_err *err);

/* .fd of a polled driver. */
int driver_no_fd(void *state);

/* Reads a small (sysfs) file from offset 0 into buf, NUL-terminated (what
 * fits).  0 or -errno with err naming the path. */
int driver_read_text(const char *path, char *buf, size_t len,
		     struct eb_err *err);
/* The same, its first line only. */
int driver_read_line(const char *path, char *buf, size_t len,
		     struct eb_err *err);
/* The same, parsed as a number: 0, -errno or -EBADMSG. */
int driver_read_number(const char *path, double *out, struct eb_err *err);

extern const struct driver_ops driver_sim;
extern const struct driver_ops driver_hwmon;
extern const struct driver_ops driver_w1_therm;
extern const struct driver_ops driver_iio;
extern const struct driver_ops driver_gpio_input;
extern const struct driver_ops driver_gpio_output;
extern const struct driver_ops driver_dht22;
extern const struct driver_ops driver_gpio_counter;

#endif
