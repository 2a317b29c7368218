/* SPDX-License-Identifier: MIT */
/*
 * Why JOURNAL_STREAM: systemd sets it to "dev:ino" of the stream it connected
 * to our stderr.  If it matches, stderr already goes to the journal, and
 * sending native entries instead keeps the priority and our own fields
 * (EB_SUBSYSTEM) searchable with journalctl.  Anywhere else (a terminal, a
 * test harness capturing output) plain lines are what a person wants.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "sdnotify.h"

static enum eb_log_level max_level = EB_LOG_INFO;
static const char *log_ident = "edgebridged";
static int use_journal;

static const char *const level_names[] = {
	[EB_LOG_ERR] = "error",	    [EB_LOG_WARNING] = "warning",
	[EB_LOG_NOTICE] = "notice", [EB_LOG_INFO] = "info",
	[EB_LOG_DEBUG] = "debug",
};

void log_open(const char *ident)
{
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;
	unsigned long long dev, ino;

	log_ident = ident;
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(2, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		use_journal = 1;
}

void log_set_level(enum eb_log_level level)
{
	max_level = level;
}

enum eb_log_level log_get_level(void)
{
	return max_level;
}

void log_msg(enum eb_log_level level, const char *subsys, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (use_journal && sdn_journal((int)level, log_ident, subsys, msg) == 0)
		return;
	fprintf(stderr, "%s: %s: %s: %s\n", log_ident, level_names[level],
		subsys, msg);
}
