/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "sample.h"

struct sensor_meta *sensor_meta_new(const char *name, const char *fragment,
				    const char *series, const char *unit)
{
	struct sensor_meta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->refs = 1;
	m->name = strdup(name);
	m->fragment = strdup(fragment);
	m->series = strdup(series);
	m->unit = strdup(unit);
	if (!m->name || !m->fragment || !m->series || !m->unit) {
		m->refs = 1;
		return sensor_meta_unref(m);
	}
	return m;
}

struct sensor_meta *sensor_meta_ref(struct sensor_meta *m)
{
	if (m)
		m->refs++;
	return m;
}

struct sensor_meta *sensor_meta_unref(struct sensor_meta *m)
{
	if (!m || --m->refs)
		return NULL;
	free(m->name);
	free(m->fragment);
	free(m->series);
	free(m->unit);
	free(m);
	return NULL;
}
