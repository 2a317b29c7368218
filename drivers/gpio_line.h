/* SPDX-License-Identifier: MIT */
/*
 * The seam to libgpiod: the only code that includes gpiod.h.  This is the
 * 1.6 API of Debian bookworm (uAPI v1: one event fd per line, a 16-event
 * kernel FIFO per line, no kernel debounce); a gpio_line.c for libgpiod 2.x
 * (trixie: gpiod_line_request, one fd for all lines, kernel debounce and
 * an event buffer size) can replace it behind this same header.
 *
 * The lines of one sensor are requested together and watched through one
 * epoll fd of their own, so the daemon's loop sees a single, stable fd per
 * sensor whatever the number of lines and however often they are
 * re-requested (the DHT22 switches between output and events).
 */
#ifndef EB_GPIO_LINE_H
#define EB_GPIO_LINE_H

#include "gpio_common.h"

struct gpio_lines;

struct gpio_edge {
	unsigned idx;	/* which of the sensor's lines */
	int level;	/* after the edge: 1 rising, 0 falling (logical) */
	uint64_t ts_ns; /* kernel timestamp, CLOCK_MONOTONIC */
};

/* Opens the chip (gpiod_chip_open_lookup) and finds the lines; requests
 * nothing yet.  -ENOENT (no such chip or line) or -errno, err saying
 * which. */
int gpio_lines_open(const struct gpio_conf *c, const char *consumer,
		    struct gpio_lines **out, struct eb_err *err);
struct gpio_lines *gpio_lines_close(struct gpio_lines *g);

unsigned gpio_lines_count(const struct gpio_lines *g);
unsigned gpio_lines_offset(const struct gpio_lines *g, unsigned idx);

/* Requests every line as an input with edge events on both edges (bias
 * and active_low from the configuration).  -EBUSY with the holder named
 * when another process has a line. */
int gpio_lines_request_events(struct gpio_lines *g, struct eb_err *err);
/* Requests every line as an output driven to values[i] (logical). */
int gpio_lines_request_output(struct gpio_lines *g, const int *values,
			      struct eb_err *err);
/* Requests the lines without changing their direction (to read an output's
 * level as found). */
int gpio_lines_request_as_is(struct gpio_lines *g, struct eb_err *err);
/* Gives the lines back (an output keeps its level: the kernel leaves it). */
void gpio_lines_release(struct gpio_lines *g);

/* Readable when edges wait; stable for the life of g. */
int gpio_lines_fd(const struct gpio_lines *g);
/* The edges waiting, oldest first across lines; never blocks.  Count,
 * or -ENODEV when the chip went away, or -errno. */
int gpio_lines_read_edges(struct gpio_lines *g, struct gpio_edge *e,
			  unsigned max, struct eb_err *err);
/* Logical levels of the requested lines. */
int gpio_lines_get(struct gpio_lines *g, int *values, struct eb_err *err);
int gpio_lines_set(struct gpio_lines *g, const int *values, struct eb_err *err);

#endif
