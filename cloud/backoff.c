/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <sys/random.h>

#include "backoff.h"

void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms)
{
	b->min_ms = min_ms ? min_ms : 1;
	b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
	b->attempt = 0;
}

void backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}

uint64_t backoff_next(struct backoff *b, double r)
{
	uint64_t base = b->min_ms;

	for (unsigned i = 0; i < b->attempt && base < b->max_ms; i++)
		base *= 2;
	if (base > b->max_ms)
		base = b->max_ms;
	if (b->attempt < 64)
		b->attempt++;
	if (r < 0)
		r = 0;
	if (r >= 1)
		r = 0.999999;
	return base / 2 + (uint64_t)(r * (double)(base - base / 2));
}

double backoff_random(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = (uint64_t)random();
	return (double)(v >> 11) / (double)(1ULL << 53);
}
