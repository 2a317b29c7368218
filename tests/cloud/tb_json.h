/* SPDX-License-Identifier: MIT */
/*
 * What ThingsBoard accepts as device telemetry and attributes, shared by
 * its two emulators (tb_plugin.c over MQTT, tb_coap_server.c over CoAP):
 * attributes are one flat, non-empty object; telemetry is a flat object,
 * one {"ts": ms, "values": {...}} object, or a non-empty array of either.
 */
#ifndef EB_TB_JSON_H
#define EB_TB_JSON_H

#include <jansson.h>
#include <stdbool.h>

static inline bool tb_flat_object(const json_t *o)
{
	return json_is_object(o) && json_object_size(o) > 0;
}

static inline bool tb_ts_object(const json_t *o)
{
	json_t *ts = json_object_get(o, "ts"),
	       *v = json_object_get(o, "values");

	return json_is_object(o) && json_object_size(o) == 2 &&
	       json_is_integer(ts) && json_integer_value(ts) > 0 &&
	       tb_flat_object(v);
}

static inline bool tb_valid_telemetry(const json_t *o)
{
	size_t i;
	json_t *e;

	if (json_is_array(o)) {
		if (!json_array_size(o))
			return false;
		json_array_foreach(o, i, e)
		{
			if (!tb_ts_object(e) &&
			    !(tb_flat_object(e) && !json_object_get(e, "ts")))
				return false;
		}
		return true;
	}
	if (json_object_get(o, "ts") || json_object_get(o, "values"))
		return tb_ts_object(o);
	return tb_flat_object(o);
}

#endif
