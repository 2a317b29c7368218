/* SPDX-License-Identifier: MIT */
/*
 * DHT22 (AM2302) and DHT11 frames decoded from edge timestamps: a pure
 * function, so recorded and synthesised traces test it without a sensor.
 */
#ifndef EB_DHT22_H
#define EB_DHT22_H

#include <stddef.h>
#include <stdint.h>

#include "../common/util.h"

enum dht_model { DHT_MODEL_DHT22, DHT_MODEL_DHT11 };

struct dht_edge {
	uint64_t ts_ns; /* kernel timestamp */
	int level;	/* after the edge: 1 rising, 0 falling */
};

struct dht_reading {
	double temperature; /* degrees Celsius */
	double humidity;    /* % relative humidity */
	uint8_t bytes[5];   /* the frame, checksum last */
};

/*
 * The 40 bits are the last 40 high pulses of the trace (the response's
 * 80 us high, when it was caught, comes before them); a bit is 1 when its
 * high lasted more than 50 us (26-28 us is 0, 70 us is 1).  Returns 0, or
 * with err set: -EIO edges missing (fewer than 40 bits, two edges to the
 * same level, a gap where a bit was lost), -EPROTO a pulse no DHT sends,
 * -EBADMSG a bad checksum, -ERANGE values outside the sensor's range (the
 * other model's frame, typically).
 */
int dht_decode(const struct dht_edge *e, size_t n, enum dht_model model,
	       struct dht_reading *out, struct eb_err *err);

#endif
