/* SPDX-License-Identifier: MIT */
/*
 * The one event loop: a single epoll fd, signals through a signalfd, and all
 * deadlines multiplexed onto one timerfd armed to the earliest of them.
 * With nothing due, loop_run() sleeps in epoll_wait(-1).
 */
#ifndef EB_LOOP_H
#define EB_LOOP_H

#include <stdint.h>

struct loop;
struct loop_timer;

typedef void (*loop_io_fn)(struct loop *l, int fd, uint32_t events, void *data);
typedef void (*loop_timer_fn)(struct loop *l, struct loop_timer *t, void *data);
typedef void (*loop_signal_fn)(struct loop *l, int signo, void *data);
/* Runs before every sleep: the place to sync interest sets (want_write). */
typedef void (*loop_prepare_fn)(struct loop *l, void *data);

struct loop *loop_new(void);
struct loop *loop_free(struct loop *l);

int loop_io_add(struct loop *l, int fd, uint32_t events, loop_io_fn fn,
		void *data);
int loop_io_mod(struct loop *l, int fd, uint32_t events);
/* Safe to call from inside any callback, also for the fd being served. */
int loop_io_del(struct loop *l, int fd);

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *data);
/* Deadline in eb_now_ms() time; a deadline in the past fires at once. */
void loop_timer_arm(struct loop_timer *t, uint64_t deadline_ms);
void loop_timer_arm_in(struct loop_timer *t, uint64_t delay_ms);
void loop_timer_disarm(struct loop_timer *t);
int loop_timer_armed(const struct loop_timer *t);
struct loop_timer *loop_timer_free(struct loop_timer *t);

/* Blocks the signals and delivers them through a signalfd. */
int loop_signals(struct loop *l, const int *signals, int n, loop_signal_fn fn,
		 void *data);
int loop_prepare_add(struct loop *l, loop_prepare_fn fn, void *data);

/* Runs until loop_quit(); returns the code given to it, or -errno. */
int loop_run(struct loop *l);
void loop_quit(struct loop *l, int code);

/* Number of epoll_wait returns so far (for idle-wakeup measurements). */
uint64_t loop_wakeups(const struct loop *l);

#endif
