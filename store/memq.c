/* SPDX-License-Identifier: MIT */
/*
 * Why sequence numbers over a ring: slot = seq % cap makes push, lease, ack
 * and drop O(1) without moving data, and an acknowledgement for samples that
 * were meanwhile dropped by overflow is simply a no-op (seq < head).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "memq.h"

struct memq {
	struct eb_sample *ring;
	size_t cap;	/* current ring size */
	size_t max_cap; /* it grows by doubling up to this */
	uint64_t head, sent, tail;
	uint64_t pushed, acked, dropped;
};

/* Starts small: the ring normally holds one loop round of samples, and a
 * large one would only cost RAM once every slot was touched. */
#define MEMQ_INITIAL 64

struct memq *memq_new(size_t cap)
{
	struct memq *q = calloc(1, sizeof(*q));

	if (!q || !cap)
		return memq_free(q);
	q->max_cap = cap;
	q->cap = cap < MEMQ_INITIAL ? cap : MEMQ_INITIAL;
	q->ring = calloc(q->cap, sizeof(*q->ring));
	if (!q->ring)
		return memq_free(q);
	return q;
}

static struct eb_sample *slot(const struct memq *q, uint64_t seq)
{
	return &q->ring[seq % q->cap];
}

/* Doubles the ring (up to max_cap); 0, or -ENOMEM / -ENOSPC. */
static int grow(struct memq *q)
{
	size_t cap = q->cap * 2 < q->max_cap ? q->cap * 2 : q->max_cap;
	struct eb_sample *ring;

	if (cap <= q->cap)
		return -ENOSPC;
	ring = calloc(cap, sizeof(*ring));
	if (!ring)
		return -ENOMEM;
	for (uint64_t s = q->head; s < q->tail; s++)
		ring[s % cap] = *slot(q, s);
	free(q->ring);
	q->ring = ring;
	q->cap = cap;
	return 0;
}

static void release(struct memq *q, uint64_t seq)
{
	struct eb_sample *s = slot(q, seq);

	s->meta = sensor_meta_unref(s->meta);
}

struct memq *memq_free(struct memq *q)
{
	if (!q)
		return NULL;
	if (q->ring)
		for (uint64_t s = q->head; s < q->tail; s++)
			release(q, s);
	free(q->ring);
	free(q);
	return NULL;
}

int memq_push(struct memq *q, const struct eb_sample *s,
	      struct eb_sample *dropped)
{
	int was_full = 0;

	if (q->tail - q->head == q->cap && grow(q) < 0) {
		struct eb_sample *old = slot(q, q->head);

		if (dropped) {
			*dropped = *old;
			old->meta = NULL;
		} else {
			release(q, q->head);
		}
		q->head++;
		if (q->sent < q->head)
			q->sent = q->head;
		q->dropped++;
		was_full = 1;
	}
	*slot(q, q->tail) = *s;
	sensor_meta_ref(s->meta);
	q->tail++;
	q->pushed++;
	return was_full;
}

size_t memq_pending(const struct memq *q)
{
	return (size_t)(q->tail - q->sent);
}

const struct eb_sample *memq_pending_at(const struct memq *q, size_t i)
{
	return slot(q, q->sent + i);
}

uint64_t memq_lease(struct memq *q, size_t n)
{
	if (n > memq_pending(q))
		n = memq_pending(q);
	q->sent += n;
	return q->sent;
}

void memq_ack_upto(struct memq *q, uint64_t seq)
{
	if (seq > q->sent)
		seq = q->sent;
	while (q->head < seq) {
		release(q, q->head);
		q->head++;
		q->acked++;
	}
}

void memq_unlease_all(struct memq *q)
{
	q->sent = q->head;
}

void memq_get_stats(const struct memq *q, struct memq_stats *st)
{
	st->pushed = q->pushed;
	st->acked = q->acked;
	st->dropped = q->dropped;
	st->queued = (size_t)(q->tail - q->head);
	st->pending = memq_pending(q);
	st->cap = q->max_cap;
}
