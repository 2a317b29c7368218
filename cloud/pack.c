/* SPDX-License-Identifier: MIT */
/*
 * Packing is what makes QoS 1 fast: one PUBACK round trip confirms a whole
 * publish of lines instead of one.  The limit is the platform's, counted
 * in bytes of payload including separators.
 */
#include <string.h>

#include "../store/memq.h"
#include "profile.h"

size_t profile_pack(const struct cloud_profile *p, const struct memq *q,
		    char *buf, size_t *len, size_t *bad)
{
	size_t pending = memq_pending(q);
	size_t open = strlen(p->batch_open), sep = strlen(p->batch_sep);
	size_t close = strlen(p->batch_close);
	size_t o = open, records = 0, used = 0;
	char line[1024];

	*bad = 0;
	memcpy(buf, p->batch_open, open);
	for (; used < pending; used++) {
		const struct eb_sample *s = memq_pending_at(q, used);
		int n = p->format(s, line, sizeof(line));
		size_t need;

		if (n < 0) {
			(*bad)++;
			continue;
		}
		need = (records ? sep : 0) + (size_t)n + close;
		if (o + need > p->max_payload) {
			if (!records) {
				/* can never fit: consume it as bad */
				(*bad)++;
				used++;
			}
			break;
		}
		if (records) {
			memcpy(buf + o, p->batch_sep, sep);
			o += sep;
		}
		memcpy(buf + o, line, (size_t)n);
		o += (size_t)n;
		records++;
	}
	memcpy(buf + o, p->batch_close, close);
	o += close;
	buf[o] = '\0';
	*len = records ? o : 0;
	return used;
}
