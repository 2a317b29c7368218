/* SPDX-License-Identifier: MIT */
/*
 * Packing is what makes QoS 1 fast: one PUBACK round trip confirms a whole
 * publish of lines instead of one.  The limit is the platform's, counted
 * in bytes of payload including separators.
 */
#include <string.h>

#include "../common/util.h"
#include "../store/store.h"
#include "profile.h"

size_t profile_pack(const struct cloud_profile *p, const struct store_row *rows,
		    size_t n, char *buf, size_t *len, bool *bad)
{
	return profile_pack_limit(p, p->max_payload, rows, n, buf, len, bad);
}

size_t profile_pack_limit(const struct cloud_profile *p, size_t limit,
			  const struct store_row *rows, size_t n, char *buf,
			  size_t *len, bool *bad)
{
	size_t open = strlen(p->batch_open), sep = strlen(p->batch_sep);
	size_t close = strlen(p->batch_close);
	size_t o = open, records = 0, used = 0;
	char line[1024];

	if (p->pack)
		return p->pack(p, limit, rows, n, buf, len, bad);
	memcpy(buf, p->batch_open, open);
	for (; used < n; used++) {
		int k = p->format(&rows[used].s, line, sizeof(line));
		size_t need;

		bad[used] = k < 0;
		if (k < 0)
			continue;
		need = (records ? sep : 0) + (size_t)k + close;
		if (o + need > limit) {
			if (!records) {
				/* can never fit: consume it as bad */
				bad[used] = true;
				used++;
			}
			break;
		}
		if (records) {
			memcpy(buf + o, p->batch_sep, sep);
			o += sep;
		}
		memcpy(buf + o, line, (size_t)k);
		o += (size_t)k;
		records++;
	}
	memcpy(buf + o, p->batch_close, close);
	o += close;
	buf[o] = '\0';
	*len = records ? o : 0;
	return used;
}

/* Adding a platform: one file and one entry here. */
const struct cloud_profile *profile_find(const char *name)
{
	static const struct cloud_profile *const all[] = {
		&profile_cumulocity,
		&profile_thingsboard,
	};

	for (size_t i = 0; i < EB_ARRAY_SIZE(all); i++)
		if (!strcmp(name, all[i]->name))
			return all[i];
	return NULL;
}
