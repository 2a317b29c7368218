/* SPDX-License-Identifier: MIT */
/*
 * A sample: what a driver measured, when, and for which sensor.  The sensor
 * description is reference-counted so that queued samples stay valid when a
 * SIGHUP replaces the sensor list.
 */
#ifndef EB_SAMPLE_H
#define EB_SAMPLE_H

#include <stdint.h>

struct sensor_meta {
	unsigned refs;
	char *name;
	char *fragment;
	char *series;
	char *unit;
};

struct eb_sample {
	struct sensor_meta *meta;
	double value;
	int64_t time_ms; /* CLOCK_REALTIME, when the value was taken */
};

struct sensor_meta *sensor_meta_new(const char *name, const char *fragment,
				    const char *series, const char *unit);
struct sensor_meta *sensor_meta_ref(struct sensor_meta *m);
struct sensor_meta *sensor_meta_unref(struct sensor_meta *m);

#endif
