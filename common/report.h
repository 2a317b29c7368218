/* SPDX-License-Identifier: MIT */
/*
 * How library-like modules tell the daemon about events (a connection came
 * up, a broker refused us): the daemon injects its logger, the module never
 * decides where or how a line is written.  Same idea as libmosquitto's
 * on_log callback.
 */
#ifndef EB_REPORT_H
#define EB_REPORT_H

#include "../config/config.h"

typedef void (*eb_report_fn)(enum eb_log_level level, const char *subsys,
			     const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Reports through fn when the caller was given one. */
#define EB_REPORT(fn, level, subsys, ...)                                      \
	do {                                                                   \
		if (fn)                                                        \
			(fn)(level, subsys, __VA_ARGS__);                      \
	} while (0)

#endif
