/* SPDX-License-Identifier: MIT */
/*
 * Scheduling: each polled sensor has its own loop timer, advanced by whole
 * intervals from the first deadline so readings do not drift; a sensor that
 * fell behind (suspend, a stalled read) skips ahead instead of bursting.
 * A sensor with interval 0 (sim only) produces as fast as the uplink takes
 * it: up to a burst per loop round while fewer than max_waiting samples
 * wait, then it pauses until acknowledgements come, so a benchmark
 * measures the uplink and the store, not overflow drops.  A driver that
 * names its own wake-up time (wake_at) is woken then, and by its fd.
 *
 * A sensor that cannot be opened (a missing GPIO chip, a line another
 * process holds), or whose device went away, stays in the list, closed,
 * and is opened again after a backoff (1 s doubling to a minute).  A
 * failing sensor is reported when its state changes (ok -> failing with
 * the reason, and back), never once per attempt: in the log, and to the
 * cloud as a major alarm edgebridge_SensorFailed_<name>, cleared again on
 * recovery with an event edgebridge_SensorRecovered.  The other sensors go
 * on.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "../cloud/backoff.h"
#include "../common/sample.h"
#include "../drivers/driver.h"
#include "log.h"
#include "sensors.h"

#define MAX_RATE_BURST 1024
#define REOPEN_MIN_MS 1000
#define REOPEN_MAX_MS 60000

struct series {
	char *suffix;
	char *unit; /* NULL: the sensor's */
	struct sensor_meta *meta;
};

struct sensor {
	struct sample_sink sink; /* first: emit() casts back */
	struct sensors *set;
	struct eb_config *cfg; /* referenced: conf lives in it */
	struct eb_sensor_conf *conf;
	const struct driver_ops *ops;
	void *state; /* NULL while closed */
	struct sensor_meta *meta;
	struct series series[SINK_MAX_SERIES];
	size_t n_series;
	bool series_full_logged;
	struct loop_timer *timer;
	struct backoff reopen;
	int fd;
	uint64_t next_due;
	bool failing;
	bool exhausted;
	uint64_t emitted;
	/* the main series' last sample (a platform asks for it) */
	bool has_last;
	double last;
	int64_t last_ms;
};

struct sensors {
	struct loop *loop;
	struct store *st;
	size_t max_waiting;
	sensors_notify_fn notify;
	void *ud;
	bool connected;
	struct sensor **s; /* each its own allocation: the loop holds them */
	size_t n;
};

static void push(struct sensor *s, struct sensor_meta *meta, double value,
		 int64_t time_ms)
{
	struct eb_sample smp = {
		.meta = meta,
		.value = value,
		.time_ms = time_ms,
	};

	s->emitted++;
	if (meta == s->meta) {
		s->has_last = true;
		s->last = value;
		s->last_ms = time_ms;
	}
	store_push(s->set->st, &smp);
}

static void emit(struct sample_sink *sink, double value, int64_t time_ms)
{
	struct sensor *s = (struct sensor *)sink;

	push(s, s->meta, value, time_ms);
}

/* The meta of "<series>_<suffix>": made on first use, kept while the
 * sensor lives (queued samples hold their own reference). */
static struct sensor_meta *series_meta(struct sensor *s, const char *suffix,
				       const char *unit)
{
	struct series *se;
	_cleanup_free_ char *name = NULL;

	for (size_t i = 0; i < s->n_series; i++)
		if (streq(s->series[i].suffix, suffix) &&
		    streq_null(s->series[i].unit, unit))
			return s->series[i].meta;
	if (s->n_series == SINK_MAX_SERIES) {
		if (!s->series_full_logged)
			log_error("sensor",
				  "%s: more than %d series; %s_%s "
				  "dropped",
				  s->conf->name, SINK_MAX_SERIES,
				  s->conf->series, suffix);
		s->series_full_logged = true;
		return NULL;
	}
	if (asprintf(&name, "%s_%s", s->conf->series, suffix) < 0)
		return NULL;
	se = &s->series[s->n_series];
	se->meta = sensor_meta_new(s->conf->name, s->conf->fragment, name,
				   unit ? unit : s->conf->unit);
	se->suffix = strdup(suffix);
	se->unit = unit ? strdup(unit) : NULL;
	if (!se->meta || !se->suffix || (unit && !se->unit)) {
		se->meta = sensor_meta_unref(se->meta);
		free(se->suffix);
		free(se->unit);
		return NULL;
	}
	s->n_series++;
	return se->meta;
}

static void emit_series(struct sample_sink *sink, const char *suffix,
			const char *unit, double value, int64_t time_ms)
{
	struct sensor *s = (struct sensor *)sink;
	struct sensor_meta *m = series_meta(s, suffix, unit);

	if (m)
		push(s, m, value, time_ms);
}

static void add_event(struct sensor *s, const char *type, const char *severity,
		      const char *text, int64_t time_ms)
{
	char buf[320];

	snprintf(buf, sizeof(buf), "sensor %s: %s", s->conf->name, text);
	store_add_event(s->set->st, type, severity, buf, time_ms);
}

static void event(struct sample_sink *sink, const char *type, const char *text,
		  int64_t time_ms)
{
	add_event((struct sensor *)sink, type, NULL, text, time_ms);
}

static void notify(struct sensors *set)
{
	if (set->notify)
		set->notify(set->ud);
}

/* ok -> failing: once, in the log and as an alarm. */
static void failed(struct sensor *s, const char *what, const char *msg)
{
	char type[64], text[300];

	if (s->failing)
		return;
	s->failing = true;
	log_error("sensor", "%s: %s%s", s->conf->name, what, msg);
	snprintf(type, sizeof(type), "edgebridge_SensorFailed_%s",
		 s->conf->name);
	snprintf(text, sizeof(text), "%s%s", what, msg);
	add_event(s, type, "MAJOR", text, eb_realtime_ms());
	notify(s->set);
}

/* failing -> ok: once; the alarm is cleared, an event says how. */
static void recovered(struct sensor *s, const char *how)
{
	char type[64];

	if (!s->failing)
		return;
	s->failing = false;
	log_notice("sensor", "%s: %s", s->conf->name, how);
	snprintf(type, sizeof(type), "edgebridge_SensorFailed_%s",
		 s->conf->name);
	add_event(s, type, "CLEARED", "", eb_realtime_ms());
	add_event(s, "edgebridge_SensorRecovered", NULL, how, eb_realtime_ms());
	notify(s->set);
}

static size_t waiting(const struct sensors *set)
{
	struct store_stats st;

	store_get_stats(set->st, &st);
	return (size_t)(st.stored + st.inbox);
}

static void close_driver(struct sensor *s)
{
	if (s->fd >= 0)
		loop_io_del(s->set->loop, s->fd);
	s->fd = -1;
	if (s->state)
		s->ops->close(s->state);
	s->state = NULL;
}

static void schedule_reopen(struct sensor *s)
{
	loop_timer_arm_in(s->timer, backoff_next(&s->reopen, backoff_random()));
}

/* The device is gone: closed now, opened again after the backoff. */
static void lost(struct sensor *s, const char *msg)
{
	failed(s, "", msg);
	close_driver(s);
	schedule_reopen(s);
}

static void arm_wake(struct sensor *s)
{
	uint64_t at;

	if (!s->state || !s->ops->wake_at)
		return;
	at = s->ops->wake_at(s->state);
	if (at)
		loop_timer_arm(s->timer, at);
	else
		loop_timer_disarm(s->timer);
}

/* What read() or report_state() returned. */
static void judge(struct sensor *s, int r, const struct eb_err *err)
{
	const char *msg = err->msg[0] ? err->msg : strerror(-r);

	if (r == -ENODATA) {
		if (!s->exhausted)
			log_info("sensor", "%s: no more samples (%llu sent)",
				 s->conf->name, (unsigned long long)s->emitted);
		s->exhausted = true;
	} else if (r == -ENODEV) {
		lost(s, msg);
	} else if (r < 0) {
		failed(s, "", msg);
	} else if (r > 0) {
		/* 0 is "nothing to say yet" (a protocol step, a retry) */
		recovered(s, "reading again");
	}
}

static void read_once(struct sensor *s)
{
	struct eb_err err = { "" };

	judge(s, s->ops->read(s->state, &s->sink, &err), &err);
}

static void report_state(struct sensor *s)
{
	struct eb_err err = { "" };

	if (s->state && s->ops->report_state)
		judge(s, s->ops->report_state(s->state, &s->sink, &err), &err);
}

static void on_fd(struct loop *l, int fd, uint32_t ev, void *data)
{
	struct sensor *s = data;

	(void)l, (void)fd;
	if ((ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN)) {
		lost(s, "its event file descriptor hung up");
		return;
	}
	read_once(s);
	arm_wake(s);
	notify(s->set);
}

static int try_open(struct sensor *s)
{
	struct eb_sensor_conf *c = s->conf;
	struct eb_err err = { "" };
	int r;

	r = s->ops->open(c, &s->state, &err);
	if (r < 0) {
		s->state = NULL;
		failed(s, "cannot open: ", err.msg[0] ? err.msg : strerror(-r));
		schedule_reopen(s);
		return r;
	}
	backoff_reset(&s->reopen);
	s->fd = s->ops->fd ? s->ops->fd(s->state) : -1;
	if (s->fd >= 0) {
		r = loop_io_add(s->set->loop, s->fd, EPOLLIN, on_fd, s);
		if (r < 0) {
			s->fd = -1;
			close_driver(s);
			failed(s, "cannot watch its fd: ", strerror(-r));
			schedule_reopen(s);
			return r;
		}
	}
	log_info("sensor", "%s: driver %s, every %llu ms", c->name,
		 s->ops->name, (unsigned long long)c->interval_ms);
	recovered(s, "opened");
	if (s->set->connected)
		report_state(s);
	if (!s->state) /* report_state() found it gone */
		return -ENODEV;
	if (s->ops->wake_at) {
		arm_wake(s);
	} else if (s->fd < 0) {
		/* first reading right away, then every interval */
		s->next_due = eb_now_ms();
		loop_timer_arm(s->timer, s->next_due);
	}
	return 0;
}

static void on_timer(struct loop *l, struct loop_timer *t, void *data)
{
	struct sensor *s = data;
	uint64_t now = eb_now_ms();

	(void)l;
	if (!s->state) {
		try_open(s);
	} else if (s->ops->wake_at) {
		read_once(s);
		arm_wake(s);
	} else if (s->conf->interval_ms == 0) {
		size_t w = waiting(s->set);

		for (int i = 0; i < MAX_RATE_BURST && !s->exhausted &&
				s->state && w + (size_t)i < s->set->max_waiting;
		     i++)
			read_once(s);
		/* Below the mark: again next round.  Above: parked until
		 * the uplink has samples acknowledged (sensors_resume), no
		 * polling. */
		if (!s->exhausted && s->state &&
		    waiting(s->set) < s->set->max_waiting)
			loop_timer_arm_in(t, 0);
	} else {
		read_once(s);
		s->next_due += s->conf->interval_ms;
		if (s->next_due <= now)
			s->next_due = now + s->conf->interval_ms;
		if (!s->exhausted && s->state)
			loop_timer_arm(t, s->next_due);
	}
	notify(s->set);
}

static int open_one(struct sensors *set, struct sensor *s,
		    struct eb_config *cfg, struct eb_sensor_conf *c)
{
	s->set = set;
	s->cfg = config_ref(cfg);
	s->conf = c;
	s->fd = -1;
	s->sink.emit = emit;
	s->sink.emit_series = emit_series;
	s->sink.event = event;
	s->ops = driver_find(c->driver);
	if (!s->ops)
		return -ENOENT; /* config_load() already refused this */
	s->meta = sensor_meta_new(c->name, c->fragment, c->series, c->unit);
	s->timer = loop_timer_new(set->loop, on_timer, s);
	if (!s->meta || !s->timer)
		return -ENOMEM;
	backoff_init(&s->reopen, REOPEN_MIN_MS, REOPEN_MAX_MS);
	/* A failure is reported and retried; the others run meanwhile. */
	try_open(s);
	return 0;
}

static void close_one(struct sensor *s)
{
	if (!s)
		return;
	if (!s->set) {
		free(s);
		return;
	}
	close_driver(s);
	loop_timer_free(s->timer);
	sensor_meta_unref(s->meta);
	for (size_t i = 0; i < s->n_series; i++) {
		sensor_meta_unref(s->series[i].meta);
		free(s->series[i].suffix);
		free(s->series[i].unit);
	}
	config_free(s->cfg);
	free(s);
}

struct sensors *sensors_new(struct loop *loop, struct eb_config *cfg,
			    struct store *st, size_t max_waiting,
			    sensors_notify_fn notify_fn, void *ud)
{
	struct sensors *set = calloc(1, sizeof(*set));

	if (!set)
		return NULL;
	set->loop = loop;
	set->st = st;
	set->max_waiting = max_waiting;
	set->notify = notify_fn;
	set->ud = ud;
	set->s = calloc(cfg->n_sensor ? cfg->n_sensor : 1, sizeof(*set->s));
	if (!set->s)
		return sensors_free(set);
	for (size_t i = 0; i < cfg->n_sensor; i++) {
		struct sensor *s = calloc(1, sizeof(*s));

		if (s && open_one(set, s, cfg, &cfg->sensor[i]) == 0)
			set->s[set->n++] = s;
		else
			close_one(s);
	}
	return set;
}

/* Would this section open the same sensor as that one? */
static bool same_section(const struct eb_sensor_conf *a,
			 const struct eb_sensor_conf *b)
{
	if (!streq_null(a->name, b->name) ||
	    !streq_null(a->driver, b->driver) ||
	    a->interval_ms != b->interval_ms ||
	    !streq_null(a->fragment, b->fragment) ||
	    !streq_null(a->series, b->series) ||
	    !streq_null(a->unit, b->unit) ||
	    !streq_null(a->state_dir, b->state_dir) || a->n_opt != b->n_opt)
		return false;
	for (size_t i = 0; i < a->n_opt; i++)
		if (!streq_null(a->opt[i].key, b->opt[i].key) ||
		    !streq_null(a->opt[i].value, b->opt[i].value))
			return false;
	return true;
}

int sensors_reload(struct sensors *set, struct eb_config *cfg,
		   struct sensors_reload_stats *rs)
{
	struct sensor **old = set->s, **now;
	size_t n_old = set->n;

	memset(rs, 0, sizeof(*rs));
	now = calloc(cfg->n_sensor ? cfg->n_sensor : 1, sizeof(*now));
	if (!now)
		return -ENOMEM;
	set->s = now;
	set->n = 0;
	for (size_t i = 0; i < cfg->n_sensor; i++) {
		struct eb_sensor_conf *c = &cfg->sensor[i];
		struct sensor *s = NULL;

		for (size_t k = 0; k < n_old && !s; k++)
			if (old[k] && same_section(old[k]->conf, c))
				s = old[k], old[k] = NULL;
		if (s) { /* untouched: it keeps running, outputs keep */
			now[set->n++] = s;
			rs->kept++;
			continue;
		}
		s = calloc(1, sizeof(*s));
		if (s && open_one(set, s, cfg, c) == 0) {
			now[set->n++] = s;
			rs->opened++;
		} else {
			close_one(s);
		}
	}
	for (size_t k = 0; k < n_old; k++)
		if (old[k]) {
			close_one(old[k]);
			rs->closed++;
		}
	free(old);
	notify(set);
	return 0;
}

struct sensors *sensors_free(struct sensors *set)
{
	if (!set)
		return NULL;
	for (size_t i = 0; i < set->n; i++)
		close_one(set->s[i]);
	free(set->s);
	free(set);
	return NULL;
}

void sensors_resume(struct sensors *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct sensor *s = set->s[i];

		if (s->state && !s->ops->wake_at && s->fd < 0 &&
		    s->conf->interval_ms == 0 && !s->exhausted &&
		    !loop_timer_armed(s->timer))
			loop_timer_arm_in(s->timer, 0);
	}
}

void sensors_set_connected(struct sensors *set, bool connected)
{
	if (!set)
		return;
	set->connected = connected;
	if (!connected)
		return;
	for (size_t i = 0; i < set->n; i++) {
		report_state(set->s[i]);
		arm_wake(set->s[i]);
	}
	notify(set);
}

size_t sensors_count(const struct sensors *set)
{
	size_t n = 0;

	for (size_t i = 0; i < set->n; i++)
		n += set->s[i]->state != NULL;
	return n;
}

int sensors_write(struct sensors *set, const char *name, double value,
		  struct eb_err *err)
{
	for (size_t i = 0; set && i < set->n; i++) {
		struct sensor *s = set->s[i];
		int r;

		if (strcmp(s->conf->name, name))
			continue;
		if (!s->ops->write)
			return eb_errf(err, -ENOTSUP,
				       "sensor %s (driver %s) is not an output",
				       name, s->ops->name);
		if (!s->state)
			return eb_errf(err, -ENODEV,
				       "sensor %s is not working (see its "
				       "alarm); retrying",
				       name);
		r = s->ops->write(s->state, value, err);
		if (r == -ENODEV)
			lost(s, err->msg);
		if (r < 0)
			return r;
		/* the new state, read back, is a sample too, at once */
		read_once(s);
		notify(set);
		return 0;
	}
	return eb_errf(err, -ENOENT, "no sensor named %s is running", name);
}

int sensors_last(const struct sensors *set, size_t i, const char **name,
		 const char **series, double *value, int64_t *time_ms)
{
	const struct sensor *s;

	if (!set || i >= set->n)
		return -ENOENT;
	s = set->s[i];
	*name = s->conf->name;
	*series = s->conf->series;
	if (!s->has_last)
		return -EAGAIN;
	*value = s->last;
	*time_ms = s->last_ms;
	return 0;
}

int sensors_set_interval(struct sensors *set, const char *name,
			 uint64_t interval_ms, struct eb_err *err)
{
	for (size_t i = 0; set && i < set->n; i++) {
		struct sensor *s = set->s[i];

		if (strcmp(s->conf->name, name))
			continue;
		if (!interval_ms || !s->conf->interval_ms || s->fd >= 0 ||
		    s->ops->wake_at)
			return eb_errf(err, -ENOTSUP,
				       "sensor %s is not polled on an "
				       "interval",
				       name);
		/* in place: the driver stays open (an output keeps its
		 * state); the next reading is one new interval from now */
		s->conf->interval_ms = interval_ms;
		if (s->state && loop_timer_armed(s->timer)) {
			s->next_due = eb_now_ms() + interval_ms;
			loop_timer_arm(s->timer, s->next_due);
		}
		return 0;
	}
	return eb_errf(err, -ENOENT, "no sensor %s", name);
}
