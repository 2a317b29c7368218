/* SPDX-License-Identifier: MIT */
/*
 * Scheduling: each polled sensor has its own loop timer, advanced by whole
 * intervals from the first deadline so readings do not drift; a sensor that
 * fell behind (suspend, a stalled read) skips ahead instead of bursting.
 * A sensor with interval 0 (sim only) produces as fast as the uplink takes
 * it: up to a burst per loop round while fewer than max_waiting samples
 * wait, then it pauses until acknowledgements come, so a benchmark
 * measures the uplink and the store, not overflow drops.
 *
 * A failing sensor is reported when its state changes (ok -> failing with
 * the reason, and back), never once per attempt; the other sensors go on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "../common/sample.h"
#include "../drivers/driver.h"
#include "log.h"
#include "sensors.h"

#define MAX_RATE_BURST 1024

struct sensor {
	struct sample_sink sink; /* first: emit() casts back */
	struct sensors *set;
	struct eb_sensor_conf *conf;
	const struct driver_ops *ops;
	void *state;
	struct sensor_meta *meta;
	struct loop_timer *timer;
	int fd;
	uint64_t next_due;
	bool failing;
	bool exhausted;
	uint64_t emitted;
};

struct sensors {
	struct loop *loop;
	struct store *st;
	size_t max_waiting;
	sensors_notify_fn notify;
	void *ud;
	struct sensor *s;
	size_t n;
};

static void emit(struct sample_sink *sink, double value, int64_t time_ms)
{
	struct sensor *s = (struct sensor *)sink;
	struct eb_sample smp = {
		.meta = s->meta,
		.value = value,
		.time_ms = time_ms,
	};

	s->emitted++;
	store_push(s->set->st, &smp);
}

static size_t waiting(const struct sensors *set)
{
	struct store_stats st;

	store_get_stats(set->st, &st);
	return (size_t)(st.stored + st.inbox);
}

static void read_once(struct sensor *s)
{
	struct eb_err err = { "" };
	int r = s->ops->read(s->state, &s->sink, &err);

	if (r == -ENODATA) {
		if (!s->exhausted)
			log_info("sensor", "%s: no more samples (%llu sent)",
				 s->conf->name, (unsigned long long)s->emitted);
		s->exhausted = true;
		return;
	}
	if (r < 0) {
		if (!s->failing)
			log_error("sensor", "%s: %s", s->conf->name,
				  err.msg[0] ? err.msg : strerror(-r));
		s->failing = true;
		return;
	}
	if (s->failing)
		log_notice("sensor", "%s: reading again", s->conf->name);
	s->failing = false;
}

static void on_timer(struct loop *l, struct loop_timer *t, void *data)
{
	struct sensor *s = data;
	uint64_t now = eb_now_ms();

	(void)l;
	if (s->conf->interval_ms == 0) {
		size_t w = waiting(s->set);

		for (int i = 0; i < MAX_RATE_BURST && !s->exhausted &&
				w + (size_t)i < s->set->max_waiting;
		     i++)
			read_once(s);
		/* Below the mark: again next round.  Above: parked until
		 * the uplink has samples acknowledged (sensors_resume), no
		 * polling. */
		if (!s->exhausted && waiting(s->set) < s->set->max_waiting)
			loop_timer_arm_in(t, 0);
	} else {
		read_once(s);
		s->next_due += s->conf->interval_ms;
		if (s->next_due <= now)
			s->next_due = now + s->conf->interval_ms;
		if (!s->exhausted)
			loop_timer_arm(t, s->next_due);
	}
	if (s->set->notify)
		s->set->notify(s->set->ud);
}

static void on_fd(struct loop *l, int fd, uint32_t ev, void *data)
{
	struct sensor *s = data;

	(void)l, (void)fd, (void)ev;
	read_once(s);
	if (s->set->notify)
		s->set->notify(s->set->ud);
}

static int open_one(struct sensors *set, struct sensor *s,
		    struct eb_sensor_conf *c)
{
	struct eb_err err = { "" };
	int r;

	s->set = set;
	s->conf = c;
	s->fd = -1;
	s->sink.emit = emit;
	s->ops = driver_find(c->driver);
	if (!s->ops)
		return -ENOENT; /* config_load() already refused this */
	s->meta = sensor_meta_new(c->name, c->fragment, c->series, c->unit);
	if (!s->meta)
		return -ENOMEM;
	r = s->ops->open(c, &s->state, &err);
	if (r < 0) {
		log_error("sensor", "%s: cannot open: %s", c->name,
			  err.msg[0] ? err.msg : strerror(-r));
		return r;
	}
	s->fd = s->ops->fd ? s->ops->fd(s->state) : -1;
	if (s->fd >= 0) {
		r = loop_io_add(set->loop, s->fd, EPOLLIN, on_fd, s);
		if (r < 0)
			return r;
	} else {
		s->timer = loop_timer_new(set->loop, on_timer, s);
		if (!s->timer)
			return -ENOMEM;
		/* first reading right away, then every interval */
		s->next_due = eb_now_ms();
		loop_timer_arm(s->timer, s->next_due);
	}
	log_info("sensor", "%s: driver %s, every %llu ms", c->name,
		 s->ops->name, (unsigned long long)c->interval_ms);
	return 0;
}

static void close_one(struct sensor *s)
{
	if (s->fd >= 0)
		loop_io_del(s->set->loop, s->fd);
	loop_timer_free(s->timer);
	if (s->ops && s->state)
		s->ops->close(s->state);
	sensor_meta_unref(s->meta);
}

struct sensors *sensors_new(struct loop *loop, struct eb_config *cfg,
			    struct store *st, size_t max_waiting,
			    sensors_notify_fn notify, void *ud)
{
	struct sensors *set = calloc(1, sizeof(*set));

	if (!set)
		return NULL;
	set->loop = loop;
	set->st = st;
	set->max_waiting = max_waiting;
	set->notify = notify;
	set->ud = ud;
	set->s = calloc(cfg->n_sensor ? cfg->n_sensor : 1, sizeof(*set->s));
	if (!set->s)
		return sensors_free(set);
	for (size_t i = 0; i < cfg->n_sensor; i++) {
		/* A sensor that cannot open is reported and left out; the
		 * others run.  (Drivers with hardware retry on their own.) */
		if (open_one(set, &set->s[set->n], &cfg->sensor[i]) == 0)
			set->n++;
		else
			close_one(&set->s[set->n]),
				memset(&set->s[set->n], 0, sizeof(set->s[0]));
	}
	return set;
}

struct sensors *sensors_free(struct sensors *set)
{
	if (!set)
		return NULL;
	for (size_t i = 0; i < set->n; i++)
		close_one(&set->s[i]);
	free(set->s);
	free(set);
	return NULL;
}

void sensors_resume(struct sensors *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct sensor *s = &set->s[i];

		if (s->timer && s->conf->interval_ms == 0 && !s->exhausted &&
		    !loop_timer_armed(s->timer))
			loop_timer_arm_in(s->timer, 0);
	}
}

size_t sensors_count(const struct sensors *s)
{
	return s->n;
}

int sensors_write(struct sensors *set, const char *name, double value,
		  struct eb_err *err)
{
	for (size_t i = 0; set && i < set->n; i++) {
		struct sensor *s = &set->s[i];
		int r;

		if (strcmp(s->conf->name, name))
			continue;
		if (!s->ops->write)
			return eb_errf(err, -ENOTSUP,
				       "sensor %s (driver %s) is not an output",
				       name, s->ops->name);
		r = s->ops->write(s->state, value, err);
		if (r < 0)
			return r;
		/* the new state is a sample too, at once */
		read_once(s);
		if (set->notify)
			set->notify(set->ud);
		return 0;
	}
	return eb_errf(err, -ENOENT, "no sensor named %s is running", name);
}
