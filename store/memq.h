/* SPDX-License-Identifier: MIT */
/*
 * A bounded in-memory sample queue with leases.
 *
 * Samples get consecutive sequence numbers.  [head, sent) are leased (handed
 * to the cloud, not yet acknowledged), [sent, tail) are pending.  The cloud
 * leases from the front of the pending part and acknowledges by sequence
 * number; only then does a sample leave.  When the queue is full the oldest
 * sample is dropped and counted (a dropped leased sample may still arrive).
 *
 * This is the RAM stage of the store: the durable SQLite queue builds on the
 * same lease/ack contract.
 */
#ifndef EB_MEMQ_H
#define EB_MEMQ_H

#include <stddef.h>
#include <stdint.h>

#include "../common/sample.h"

struct memq;

struct memq_stats {
	uint64_t pushed;
	uint64_t acked;
	uint64_t dropped; /* overflow: oldest dropped */
	size_t queued;	  /* leased + pending */
	size_t pending;
	size_t cap;
};

struct memq *memq_new(size_t cap);
struct memq *memq_free(struct memq *q);

/* Takes a reference on s->meta.  Returns 1 if the oldest sample had to be
 * dropped to make room, else 0.  The dropped sample is moved to *dropped
 * (the caller then owns its meta reference) or released if that is NULL. */
int memq_push(struct memq *q, const struct eb_sample *s,
	      struct eb_sample *dropped);

size_t memq_pending(const struct memq *q);
/* The i-th pending sample (i < memq_pending()). */
const struct eb_sample *memq_pending_at(const struct memq *q, size_t i);
/* Leases the first n pending samples; returns the sequence number just past
 * them, which acknowledges them in memq_ack_upto(). */
uint64_t memq_lease(struct memq *q, size_t n);
/* Everything before seq is acknowledged: release it. */
void memq_ack_upto(struct memq *q, uint64_t seq);
/* Returns every lease to pending (nothing was acknowledged). */
void memq_unlease_all(struct memq *q);

void memq_get_stats(const struct memq *q, struct memq_stats *st);

#endif
