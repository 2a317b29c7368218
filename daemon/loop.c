/* SPDX-License-Identifier: MIT */
/*
 * Why one timerfd for all deadlines: the number of timers is small (one per
 * sensor plus a few protocol timers), so a linear scan for the earliest one
 * before each sleep is cheaper and simpler than a heap, and the process
 * wakes exactly when something is due (OpenBSD ntpd computes its poll
 * timeout the same way from "nextaction").  The timerfd is re-armed only
 * when the earliest deadline changes, to keep idle syscalls at zero.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../common/util.h"
#include "loop.h"

struct io {
	int fd;
	loop_io_fn fn;
	void *data;
	bool dead;
	struct io *next_dead;
};

struct loop_timer {
	struct loop *loop;
	loop_timer_fn fn;
	void *data;
	uint64_t deadline; /* 0 = disarmed */
	bool due;	   /* selected in this round */
};

struct prepare {
	loop_prepare_fn fn;
	void *data;
};

struct loop {
	int epfd;
	int tfd;
	int sfd;
	uint64_t tfd_armed; /* deadline the timerfd is armed for, 0 = none */
	struct io **io;
	size_t n_io, cap_io;
	struct io *dead; /* freed after the current dispatch round */
	struct loop_timer **timers;
	size_t n_timers;
	struct prepare *prep;
	size_t n_prep;
	loop_signal_fn sig_fn;
	void *sig_data;
	bool quit;
	int code;
	uint64_t wakeups;
};

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	struct epoll_event ev = { .events = EPOLLIN };

	if (!l)
		return NULL;
	l->sfd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->epfd < 0 || l->tfd < 0)
		return loop_free(l);
	ev.data.ptr = &l->tfd; /* tagged by address: see dispatch */
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->tfd, &ev) < 0)
		return loop_free(l);
	return l;
}

static void reap_dead(struct loop *l)
{
	while (l->dead) {
		struct io *n = l->dead->next_dead;

		free(l->dead);
		l->dead = n;
	}
}

struct loop *loop_free(struct loop *l)
{
	if (!l)
		return NULL;
	for (size_t i = 0; i < l->n_io; i++)
		free(l->io[i]);
	free(l->io);
	reap_dead(l);
	for (size_t i = 0; i < l->n_timers; i++)
		free(l->timers[i]);
	free(l->timers);
	free(l->prep);
	if (l->sfd >= 0)
		close(l->sfd);
	if (l->tfd >= 0)
		close(l->tfd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l);
	return NULL;
}

int loop_io_add(struct loop *l, int fd, uint32_t events, loop_io_fn fn,
		void *data)
{
	struct epoll_event ev = { .events = events };
	struct io *io;

	if (l->n_io == l->cap_io) {
		size_t cap = l->cap_io ? l->cap_io * 2 : 8;
		struct io **n = realloc(l->io, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		l->io = n;
		l->cap_io = cap;
	}
	io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	io->fd = fd;
	io->fn = fn;
	io->data = data;
	ev.data.ptr = io;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = -errno;

		free(io);
		return e;
	}
	l->io[l->n_io++] = io;
	return 0;
}

static struct io *find_io(struct loop *l, int fd, size_t *idx)
{
	for (size_t i = 0; i < l->n_io; i++)
		if (l->io[i]->fd == fd) {
			if (idx)
				*idx = i;
			return l->io[i];
		}
	return NULL;
}

int loop_io_mod(struct loop *l, int fd, uint32_t events)
{
	struct io *io = find_io(l, fd, NULL);
	struct epoll_event ev = { .events = events };

	if (!io)
		return -ENOENT;
	ev.data.ptr = io;
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int loop_io_del(struct loop *l, int fd)
{
	size_t i;
	struct io *io = find_io(l, fd, &i);

	if (!io)
		return -ENOENT;
	/* The fd may already be closed (then epoll dropped it itself). */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	l->io[i] = l->io[--l->n_io];
	io->dead = true;
	io->next_dead = l->dead;
	l->dead = io;
	return 0;
}

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *data)
{
	struct loop_timer **n, *t;

	n = realloc(l->timers, (l->n_timers + 1) * sizeof(*n));
	if (!n)
		return NULL;
	l->timers = n;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->loop = l;
	t->fn = fn;
	t->data = data;
	l->timers[l->n_timers++] = t;
	return t;
}

void loop_timer_arm(struct loop_timer *t, uint64_t deadline_ms)
{
	t->deadline = deadline_ms ? deadline_ms : 1;
	t->due = false;
}

void loop_timer_arm_in(struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_arm(t, eb_now_ms() + delay_ms);
}

void loop_timer_disarm(struct loop_timer *t)
{
	if (t) {
		t->deadline = 0;
		t->due = false;
	}
}

int loop_timer_armed(const struct loop_timer *t)
{
	return t && t->deadline != 0;
}

struct loop_timer *loop_timer_free(struct loop_timer *t)
{
	struct loop *l;

	if (!t)
		return NULL;
	l = t->loop;
	for (size_t i = 0; i < l->n_timers; i++)
		if (l->timers[i] == t) {
			l->timers[i] = l->timers[--l->n_timers];
			break;
		}
	free(t);
	return NULL;
}

int loop_signals(struct loop *l, const int *signals, int n, loop_signal_fn fn,
		 void *data)
{
	struct epoll_event ev = { .events = EPOLLIN };
	sigset_t set;

	sigemptyset(&set);
	for (int i = 0; i < n; i++)
		sigaddset(&set, signals[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	l->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (l->sfd < 0)
		return -errno;
	l->sig_fn = fn;
	l->sig_data = data;
	ev.data.ptr = &l->sfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->sfd, &ev) < 0)
		return -errno;
	return 0;
}

int loop_prepare_add(struct loop *l, loop_prepare_fn fn, void *data)
{
	struct prepare *p = realloc(l->prep, (l->n_prep + 1) * sizeof(*p));

	if (!p)
		return -ENOMEM;
	l->prep = p;
	l->prep[l->n_prep].fn = fn;
	l->prep[l->n_prep].data = data;
	l->n_prep++;
	return 0;
}

void loop_quit(struct loop *l, int code)
{
	l->quit = true;
	l->code = code;
}

uint64_t loop_wakeups(const struct loop *l)
{
	return l->wakeups;
}

static int arm_timerfd(struct loop *l)
{
	uint64_t earliest = 0;
	struct itimerspec its = { 0 };

	for (size_t i = 0; i < l->n_timers; i++) {
		uint64_t d = l->timers[i]->deadline;

		if (d && (!earliest || d < earliest))
			earliest = d;
	}
	if (earliest == l->tfd_armed)
		return 0;
	if (earliest) {
		/* An absolute deadline of 0 would disarm: use at least 1 ns. */
		its.it_value.tv_sec = (time_t)(earliest / MSEC_PER_SEC);
		its.it_value.tv_nsec =
			(long)((earliest % MSEC_PER_SEC) * NSEC_PER_MSEC);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	if (timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -errno;
	l->tfd_armed = earliest;
	return 0;
}

static void run_timers(struct loop *l)
{
	uint64_t now = eb_now_ms();
	uint64_t exp;

	if (read(l->tfd, &exp, sizeof(exp)) < 0) {
		/* EAGAIN: spurious; the loop re-arms below anyway */
	}
	l->tfd_armed = 0;
	/* Select what is due first, then fire: a callback that re-arms its
	 * timer for "now" runs again next round, not in an endless loop, and
	 * one that frees another timer removes it from the array. */
	for (size_t i = 0; i < l->n_timers; i++) {
		struct loop_timer *t = l->timers[i];

		t->due = t->deadline && t->deadline <= now;
	}
	for (bool again = true; again && !l->quit;) {
		again = false;
		for (size_t i = 0; i < l->n_timers; i++) {
			struct loop_timer *t = l->timers[i];

			if (t->due) {
				t->due = false;
				t->deadline = 0;
				t->fn(l, t, t->data);
				again = true;
				break;
			}
		}
	}
}

static void run_signals(struct loop *l)
{
	struct signalfd_siginfo si;

	while (read(l->sfd, &si, sizeof(si)) == sizeof(si))
		if (l->sig_fn)
			l->sig_fn(l, (int)si.ssi_signo, l->sig_data);
}

int loop_run(struct loop *l)
{
	struct epoll_event ev[16];

	l->quit = false;
	while (!l->quit) {
		int n, r;

		for (size_t i = 0; i < l->n_prep; i++)
			l->prep[i].fn(l, l->prep[i].data);
		if (l->quit)
			break;
		r = arm_timerfd(l);
		if (r < 0)
			return r;
		n = epoll_wait(l->epfd, ev, (int)EB_ARRAY_SIZE(ev), -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		l->wakeups++;
		for (int i = 0; i < n && !l->quit; i++) {
			void *p = ev[i].data.ptr;
			struct io *io;

			if (p == &l->tfd) {
				run_timers(l);
				continue;
			}
			if (p == &l->sfd) {
				run_signals(l);
				continue;
			}
			io = p;
			if (!io->dead)
				io->fn(l, io->fd, ev[i].events, io->data);
		}
		reap_dead(l);
	}
	return l->code;
}
