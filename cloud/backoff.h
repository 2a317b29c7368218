/* SPDX-License-Identifier: MIT */
/*
 * Reconnect backoff: exponential with "equal jitter" and a cap.
 * delay(n) = b/2 + r * b/2 with b = min(max, min * 2^n), r in [0, 1).
 * Half of the delay is guaranteed (no hammering), half is random (a fleet
 * that lost the same broker does not come back in lockstep).
 */
#ifndef EB_BACKOFF_H
#define EB_BACKOFF_H

#include <stdint.h>

struct backoff {
	uint64_t min_ms;
	uint64_t max_ms;
	unsigned attempt;
};

void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms);
void backoff_reset(struct backoff *b);
/* r: a random number in [0, 1); injected so tests can pin it. */
uint64_t backoff_next(struct backoff *b, double r);
/* A random number in [0, 1) for backoff_next(). */
double backoff_random(void);

#endif
