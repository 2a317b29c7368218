/* SPDX-License-Identifier: MIT */
/*
 * The daemon's running sensors: one driver instance per [sensor.*] section,
 * polled on its interval or woken by its fd, feeding samples to the queue.
 */
#ifndef EB_SENSORS_H
#define EB_SENSORS_H

#include <stdbool.h>
#include <stdint.h>

#include "../config/config.h"
#include "../store/store.h"
#include "loop.h"

struct sensors;

/* Called after samples were queued (the uplink publishes them). */
typedef void (*sensors_notify_fn)(void *ud);

/* max_waiting: a max-rate sensor (interval 0) pauses while this many
 * samples wait to be acknowledged. */
struct sensors *sensors_new(struct loop *loop, struct eb_config *cfg,
			    struct store *st, size_t max_waiting,
			    sensors_notify_fn notify, void *ud);
/*
 * A new configuration (SIGHUP, a platform's configuration operation): a
 * sensor whose section is unchanged keeps running as it is (a relay keeps
 * its state, a counter its pulses); the others are closed (outputs to their
 * safe state) and the new ones opened.  0 or -ENOMEM (nothing changed).
 */
struct sensors_reload_stats {
	size_t kept, opened, closed;
};
int sensors_reload(struct sensors *s, struct eb_config *cfg,
		   struct sensors_reload_stats *rs);
/* Closes every driver: outputs go to their safe state. */
struct sensors *sensors_free(struct sensors *s);
/* Sensors whose driver is open (the others are retried). */
size_t sensors_count(const struct sensors *s);
/* The cloud connection came up (or went): on true every sensor reports its
 * current state (an input's level), and sensors opened later while
 * connected do so at once. */
void sensors_set_connected(struct sensors *s, bool connected);
/* The queue has room again: wake sensors that wait for it (interval 0). */
void sensors_resume(struct sensors *s);
/* Drives an output sensor (a relay) and reads its new state at once.
 * 0, or -ENOENT / -ENOTSUP / the driver's -errno with err set. */
int sensors_write(struct sensors *s, const char *name, double value,
		  struct eb_err *err);
/* The i-th sensor's name, series and last sample of its main series.
 * 0, -EAGAIN (nothing read yet: name and series are set), -ENOENT (past
 * the end). */
int sensors_last(const struct sensors *s, size_t i, const char **name,
		 const char **series, double *value, int64_t *time_ms);
/* A polled sensor's interval changes in place (the driver is not
 * re-opened).  0, or -ENOENT / -ENOTSUP with err set.  Lasts until the
 * sensor list is rebuilt (reload). */
int sensors_set_interval(struct sensors *s, const char *name,
			 uint64_t interval_ms, struct eb_err *err);

#endif
