/* SPDX-License-Identifier: MIT */
/*
 * What the GPIO drivers share that does not touch libgpiod: their common
 * keys (chip, line/lines, bias, active_low, debounce), the software
 * debounce (libgpiod 1.6, uAPI v1, has none in the kernel) and the
 * conversion of kernel edge timestamps.  Pure functions, unit-tested.
 */
#ifndef EB_GPIO_COMMON_H
#define EB_GPIO_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "driver.h"

#define GPIO_MAX_LINES 8

enum gpio_bias {
	GPIO_BIAS_AS_IS,
	GPIO_BIAS_DISABLE,
	GPIO_BIAS_PULL_UP,
	GPIO_BIAS_PULL_DOWN,
};

struct gpio_conf {
	const char *chip; /* name, /dev path, number or label */
	/* offsets ("3") or line names, as configured */
	const char *line[GPIO_MAX_LINES];
	char line_buf[256]; /* storage for a split "lines = 3,4" */
	unsigned n_line;
	enum gpio_bias bias;
	bool active_low;
	uint64_t debounce_ms;
};

/* chip and line (or, with multi, lines = a,b,...) are required; bias,
 * active_low and debounce where the flags say the driver takes them.
 * Problems are reported with file:line; false when there was one. */
#define GPIO_OPT_BIAS 1u
#define GPIO_OPT_ACTIVE_LOW 2u
#define GPIO_OPT_DEBOUNCE 4u
#define GPIO_OPT_MULTI 8u
bool gpio_conf_parse(struct eb_sensor_conf *c, unsigned opts,
		     struct eb_diags *d, struct gpio_conf *out);

/*
 * Debounce: a new level is reported once it has held for the window, with
 * the kernel timestamp of the edge that began it, so a contact's bounces
 * (and glitches shorter than the window) vanish and the time of the change
 * stays the true one.  Reported timestamps strictly increase.  Window 0:
 * every edge that changes the level is reported at once.
 */
struct debounce {
	uint64_t window_ns;
	int stable;	   /* the reported level */
	int pending;	   /* the level last seen */
	uint64_t since_ns; /* when pending began */
	uint64_t last_ns;  /* timestamp of the last report */
};

struct debounce_change {
	int level;
	uint64_t ts_ns;
};

void debounce_init(struct debounce *d, uint64_t window_ns, int level,
		   uint64_t now_ns);
/* An edge to level at ts_ns.  1 (and *out) when it settled a change: the
 * one before it, which held long enough, or (window 0) this one. */
int debounce_edge(struct debounce *d, int level, uint64_t ts_ns,
		  struct debounce_change *out);
/* 1 (and *out) when the pending level has held for the window by now. */
int debounce_poll(struct debounce *d, uint64_t now_ns,
		  struct debounce_change *out);
/* When debounce_poll() can next report (CLOCK_MONOTONIC ns), 0: nothing
 * pending. */
uint64_t debounce_due_ns(const struct debounce *d);

/* CLOCK_MONOTONIC now, in ns (the clock of kernel edge timestamps). */
uint64_t gpio_mono_ns(void);
/* Kernel edge timestamp (CLOCK_MONOTONIC ns since Linux 5.7; older kernels
 * gave CLOCK_REALTIME, recognised and converted) to CLOCK_MONOTONIC ns. */
uint64_t gpio_ts_to_mono_ns(uint64_t ts_ns);
/* CLOCK_MONOTONIC ns of the recent past to CLOCK_REALTIME ms: sample time. */
int64_t gpio_mono_to_realtime_ms(uint64_t mono_ns);

#endif
