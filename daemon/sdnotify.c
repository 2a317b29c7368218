/* SPDX-License-Identifier: MIT */
/*
 * Why not libsystemd: it is a fine library, but linking it maps libgcrypt,
 * zstd, lzma, lz4 and libcap too, about 1 MiB of resident memory on a Pi
 * for three datagram protocols of a few lines each (systemd's own docs,
 * sd_notify(3) "Notes" and the journal's native protocol page, describe
 * them as stable for independent implementations).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/util.h"
#include "sdnotify.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static int send_to(const char *path, const struct iovec *iov, size_t n)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	socklen_t salen;
	struct msghdr mh = { 0 };
	_cleanup_close_ int fd = -1;

	if (len == 0 || len >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@') /* abstract namespace */
		sa.sun_path[0] = '\0';
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
			    (path[0] == '@' ? 0 : 1));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	mh.msg_name = &sa;
	mh.msg_namelen = salen;
	mh.msg_iov = (struct iovec *)iov;
	mh.msg_iovlen = n;
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0)
		return -errno;
	return 1;
}

int sdn_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct iovec iov = { .iov_base = (void *)state,
			     .iov_len = strlen(state) };

	if (!path || !*path)
		return 0;
	return send_to(path, &iov, 1);
}

int sdn_notifyf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return sdn_notify(buf);
}

int sdn_watchdog_enabled(uint64_t *usec)
{
	const char *u = getenv("WATCHDOG_USEC");
	const char *p = getenv("WATCHDOG_PID");
	char *end;
	unsigned long long v;

	if (!u || !*u)
		return 0;
	if (p && *p && strtoul(p, NULL, 10) != (unsigned long)getpid())
		return 0; /* meant for another process */
	errno = 0;
	v = strtoull(u, &end, 10);
	if (errno || *end || v == 0)
		return 0;
	*usec = v;
	return 1;
}

int sdn_journal(int priority, const char *ident, const char *subsystem,
		const char *message)
{
	char head[256];
	uint64_t len = strlen(subsystem) + 2 + strlen(message);
	unsigned char le[8];
	struct iovec iov[6];
	const char *path;
	int n;

	n = snprintf(head, sizeof(head),
		     "PRIORITY=%d\nSYSLOG_IDENTIFIER=%s\nEB_SUBSYSTEM=%s\n"
		     "MESSAGE\n",
		     priority, ident, subsystem);
	if (n < 0 || (size_t)n >= sizeof(head))
		return -EINVAL;
	/* MESSAGE in the binary-safe form: name, newline, 64-bit little
	 * endian length, data, newline (a message may hold a newline). */
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(len >> (8 * i));
	iov[0] = (struct iovec){ head, (size_t)n };
	iov[1] = (struct iovec){ le, sizeof(le) };
	iov[2] = (struct iovec){ (void *)subsystem, strlen(subsystem) };
	iov[3] = (struct iovec){ (void *)": ", 2 };
	iov[4] = (struct iovec){ (void *)message, strlen(message) };
	iov[5] = (struct iovec){ (void *)"\n", 1 };
	/* EB_JOURNAL_SOCKET: where tests put a socket of their own */
	path = getenv("EB_JOURNAL_SOCKET");
	n = send_to(path && *path ? path : JOURNAL_SOCKET, iov, 6);
	return n < 0 ? n : 0;
}
