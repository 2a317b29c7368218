/* SPDX-License-Identifier: MIT */
/*
 * libgpiod 1.6 behind gpio_line.h.  Event fds are made non-blocking, so a
 * read finds what the kernel queued and returns at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <gpiod.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "gpio_line.h"

struct gpio_lines {
	struct gpiod_chip *chip;
	struct gpiod_line *line[GPIO_MAX_LINES];
	unsigned n;
	int flags;
	char *consumer;
	char *chip_desc;
	int ep;
	bool requested, events;
};

/* errno of a chip that went away (gpio-sim removed, a USB GPIO unplugged) */
static bool gone(int e)
{
	return e == ENODEV || e == ENXIO || e == EBADF || e == ESHUTDOWN;
}

struct gpio_lines *gpio_lines_close(struct gpio_lines *g)
{
	if (!g)
		return NULL;
	gpio_lines_release(g);
	if (g->chip)
		gpiod_chip_close(g->chip);
	if (g->ep >= 0)
		close(g->ep);
	free(g->consumer);
	free(g->chip_desc);
	free(g);
	return NULL;
}

static bool is_number(const char *s)
{
	return s[0] && strspn(s, "0123456789") == strlen(s);
}

int gpio_lines_open(const struct gpio_conf *c, const char *consumer,
		    struct gpio_lines **out, struct eb_err *err)
{
	struct gpio_lines *g = calloc(1, sizeof(*g));
	int r;

	*out = NULL;
	if (!g)
		return eb_errf(err, -ENOMEM, "out of memory");
	g->ep = epoll_create1(EPOLL_CLOEXEC);
	g->consumer = strdup(consumer);
	g->chip_desc = strdup(c->chip);
	if (g->ep < 0 || !g->consumer || !g->chip_desc) {
		r = eb_errf(err, g->ep < 0 ? -errno : -ENOMEM,
			    "cannot set up: %s",
			    strerror(g->ep < 0 ? errno : ENOMEM));
		gpio_lines_close(g);
		return r;
	}
	g->chip = gpiod_chip_open_lookup(c->chip);
	if (!g->chip) {
		r = errno ? -errno : -ENOENT;
		gpio_lines_close(g);
		if (r == -ENOENT || r == -ENODEV)
			return eb_errf(err, -ENOENT,
				       "no GPIO chip '%s' (looked for it as a "
				       "name, /dev path, number and label)",
				       c->chip);
		return eb_errf(err, r, "cannot open GPIO chip '%s': %s",
			       c->chip, strerror(-r));
	}
	for (unsigned i = 0; i < c->n_line; i++) {
		const char *l = c->line[i];

		errno = 0;
		g->line[i] = is_number(l)
				     ? gpiod_chip_get_line(
					       g->chip,
					       (unsigned)strtoul(l, NULL, 10))
				     : gpiod_chip_find_line(g->chip, l);
		if (!g->line[i]) {
			eb_errf(err, -ENOENT,
				"GPIO chip %s (%s, %u lines) has no line %s",
				gpiod_chip_name(g->chip),
				gpiod_chip_label(g->chip),
				gpiod_chip_num_lines(g->chip), l);
			gpio_lines_close(g);
			return -ENOENT;
		}
		g->n++;
	}
	switch (c->bias) {
	case GPIO_BIAS_DISABLE:
		g->flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE;
		break;
	case GPIO_BIAS_PULL_UP:
		g->flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP;
		break;
	case GPIO_BIAS_PULL_DOWN:
		g->flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN;
		break;
	case GPIO_BIAS_AS_IS:
		break;
	}
	if (c->active_low)
		g->flags |= GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;
	*out = g;
	return 0;
}

unsigned gpio_lines_count(const struct gpio_lines *g)
{
	return g->n;
}

unsigned gpio_lines_offset(const struct gpio_lines *g, unsigned idx)
{
	return gpiod_line_offset(g->line[idx]);
}

int gpio_lines_fd(const struct gpio_lines *g)
{
	return g->ep;
}

void gpio_lines_release(struct gpio_lines *g)
{
	if (!g->requested)
		return;
	for (unsigned i = 0; i < g->n; i++) {
		if (g->events)
			epoll_ctl(g->ep, EPOLL_CTL_DEL,
				  gpiod_line_event_get_fd(g->line[i]), NULL);
		gpiod_line_release(g->line[i]);
	}
	g->requested = g->events = false;
}

/* A failed request: say who holds the line when it is busy. */
static int request_failed(struct gpio_lines *g, unsigned i, int e,
			  struct eb_err *err)
{
	struct gpiod_line *l = g->line[i];
	const char *who;

	gpio_lines_release(g);
	if (gone(e))
		return eb_errf(err, -ENODEV, "GPIO chip %s went away",
			       g->chip_desc);
	if (e == EBUSY) {
		gpiod_line_update(l);
		who = gpiod_line_consumer(l);
		return eb_errf(err, -EBUSY,
			       "line %u of %s is busy: held by %s%s%s",
			       gpiod_line_offset(l), g->chip_desc,
			       who ? "'" : "another process or driver",
			       who ? who : "", who ? "'" : "");
	}
	return eb_errf(err, -e, "cannot request line %u of %s: %s",
		       gpiod_line_offset(l), g->chip_desc, strerror(e));
}

/* Releasing a line that was never requested is harmless in libgpiod 1.6,
 * so a request that failed half way releases all of them. */
int gpio_lines_request_events(struct gpio_lines *g, struct eb_err *err)
{
	gpio_lines_release(g);
	g->requested = g->events = true;
	for (unsigned i = 0; i < g->n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		int fd, e;

		if (gpiod_line_request_both_edges_events_flags(
			    g->line[i], g->consumer, g->flags) < 0)
			return request_failed(g, i, errno, err);
		fd = gpiod_line_event_get_fd(g->line[i]);
		if (fd < 0 ||
		    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
		    epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			e = errno;
			gpio_lines_release(g);
			return eb_errf(err, -e, "cannot watch line events: %s",
				       strerror(e));
		}
	}
	return 0;
}

int gpio_lines_request_output(struct gpio_lines *g, const int *values,
			      struct eb_err *err)
{
	int flags = g->flags & GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;

	gpio_lines_release(g);
	g->requested = true;
	for (unsigned i = 0; i < g->n; i++)
		if (gpiod_line_request_output_flags(g->line[i], g->consumer,
						    flags, values[i]) < 0)
			return request_failed(g, i, errno, err);
	return 0;
}

int gpio_lines_request_as_is(struct gpio_lines *g, struct eb_err *err)
{
	const struct gpiod_line_request_config rc = {
		.consumer = g->consumer,
		.request_type = GPIOD_LINE_REQUEST_DIRECTION_AS_IS,
		.flags = g->flags & GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW,
	};

	gpio_lines_release(g);
	g->requested = true;
	for (unsigned i = 0; i < g->n; i++)
		if (gpiod_line_request(g->line[i], &rc, 0) < 0)
			return request_failed(g, i, errno, err);
	return 0;
}

static int io_failed(struct gpio_lines *g, unsigned i, const char *what, int e,
		     struct eb_err *err)
{
	if (gone(e))
		return eb_errf(err, -ENODEV, "GPIO chip %s went away",
			       g->chip_desc);
	return eb_errf(err, -e, "cannot %s line %u of %s: %s", what,
		       gpiod_line_offset(g->line[i]), g->chip_desc,
		       strerror(e));
}

int gpio_lines_read_edges(struct gpio_lines *g, struct gpio_edge *e,
			  unsigned max, struct eb_err *err)
{
	struct gpiod_line_event ev[16];
	unsigned n = 0;

	for (unsigned i = 0; g->events && i < g->n && n < max; i++) {
		unsigned want = max - n < 16 ? max - n : 16;
		int got = gpiod_line_event_read_multiple(g->line[i], ev, want);

		if (got < 0 && errno == EAGAIN)
			continue;
		if (got < 0)
			return io_failed(g, i, "read events of", errno, err);
		for (int k = 0; k < got; k++) {
			struct gpio_edge x = {
				.idx = i,
				.level = ev[k].event_type ==
					 GPIOD_LINE_EVENT_RISING_EDGE,
				.ts_ns = gpio_ts_to_mono_ns(
					(uint64_t)ev[k].ts.tv_sec *
						NSEC_PER_SEC +
					(uint64_t)ev[k].ts.tv_nsec),
			};
			unsigned j = n++;

			/* oldest first across lines (insertion: few) */
			for (; j > 0 && e[j - 1].ts_ns > x.ts_ns; j--)
				e[j] = e[j - 1];
			e[j] = x;
		}
		if (got == (int)want)
			i--; /* more may wait on this line */
	}
	return (int)n;
}

int gpio_lines_get(struct gpio_lines *g, int *values, struct eb_err *err)
{
	for (unsigned i = 0; i < g->n; i++) {
		int v = gpiod_line_get_value(g->line[i]);

		if (v < 0)
			return io_failed(g, i, "read", errno, err);
		values[i] = v;
	}
	return 0;
}

int gpio_lines_set(struct gpio_lines *g, const int *values, struct eb_err *err)
{
	for (unsigned i = 0; i < g->n; i++)
		if (gpiod_line_set_value(g->line[i], values[i]) < 0)
			return io_failed(g, i, "set", errno, err);
	return 0;
}
