/* SPDX-License-Identifier: MIT */
/*
 * The three systemd protocols the daemon speaks, without libsystemd:
 * sd_notify (READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to $NOTIFY_SOCKET),
 * the watchdog settings ($WATCHDOG_USEC, $WATCHDOG_PID) and native journal
 * entries (/run/systemd/journal/socket).  All three are documented by
 * systemd as stable interfaces for exactly this kind of reimplementation.
 */
#ifndef EB_SDNOTIFY_H
#define EB_SDNOTIFY_H

#include <stdint.h>

/* 1 sent, 0 not running under a notify socket, -errno on failure. */
int sdn_notify(const char *state);
int sdn_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 1 and *usec when the service manager expects watchdog pings, else 0. */
int sdn_watchdog_enabled(uint64_t *usec);

/* One journal entry; 0 or -errno (the caller falls back to stderr). */
int sdn_journal(int priority, const char *ident, const char *subsystem,
		const char *message);

#endif
