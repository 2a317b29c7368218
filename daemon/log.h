/* SPDX-License-Identifier: MIT */
/*
 * Logging for daemon/ only (library-like modules return errors instead).
 * Human-readable lines on stderr; under systemd (JOURNAL_STREAM names our
 * stderr) structured entries go to journald with PRIORITY and EB_* fields.
 */
#ifndef EB_LOG_H
#define EB_LOG_H

#include "../config/config.h"

void log_open(const char *ident);
void log_set_level(enum eb_log_level level);
enum eb_log_level log_get_level(void);

void log_msg(enum eb_log_level level, const char *subsys, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(sub, ...) log_msg(EB_LOG_ERR, sub, __VA_ARGS__)
#define log_warning(sub, ...) log_msg(EB_LOG_WARNING, sub, __VA_ARGS__)
#define log_notice(sub, ...) log_msg(EB_LOG_NOTICE, sub, __VA_ARGS__)
#define log_info(sub, ...) log_msg(EB_LOG_INFO, sub, __VA_ARGS__)
#define log_debug(sub, ...) log_msg(EB_LOG_DEBUG, sub, __VA_ARGS__)

#endif
