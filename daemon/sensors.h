/* SPDX-License-Identifier: MIT */
/*
 * The daemon's running sensors: one driver instance per [sensor.*] section,
 * polled on its interval or woken by its fd, feeding samples to the queue.
 */
#ifndef EB_SENSORS_H
#define EB_SENSORS_H

#include <stdint.h>

#include "../config/config.h"
#include "../store/memq.h"
#include "loop.h"

struct sensors;

/* Called after samples were queued (the uplink publishes them). */
typedef void (*sensors_notify_fn)(void *ud);

struct sensors *sensors_new(struct loop *loop, struct eb_config *cfg,
			    struct memq *q, sensors_notify_fn notify, void *ud);
struct sensors *sensors_free(struct sensors *s);
size_t sensors_count(const struct sensors *s);
/* The queue has room again: wake sensors that wait for it (interval 0). */
void sensors_resume(struct sensors *s);
uint64_t sensors_dropped(const struct sensors *s);

#endif
