/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every module: cleanup attributes in the style of
 * systemd (a local is freed when it goes out of scope, a result is handed
 * out with TAKE_PTR), time helpers and bounded string copies.
 */
#ifndef EB_UTIL_H
#define EB_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define TAKE_PTR(p)                                                            \
	({                                                                     \
		__typeof__(p) _p_ = (p);                                       \
		(p) = NULL;                                                    \
		_p_;                                                           \
	})

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

#define NSEC_PER_SEC 1000000000ULL
#define NSEC_PER_MSEC 1000000ULL
#define USEC_PER_SEC 1000000ULL
#define MSEC_PER_SEC 1000ULL

/* Milliseconds on CLOCK_MONOTONIC: every deadline in the daemon uses it. */
static inline uint64_t eb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * MSEC_PER_SEC +
	       (uint64_t)ts.tv_nsec / NSEC_PER_MSEC;
}

/* Wall-clock time in milliseconds since the epoch: sample timestamps. */
static inline int64_t eb_realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* strlcpy semantics: always terminates, returns strlen(src). */
static inline size_t eb_strlcpy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size) {
		size_t n = len < size - 1 ? len : size - 1;

		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

static inline int streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* The same, where either may be NULL (two NULLs are equal). */
static inline bool streq_null(const char *a, const char *b)
{
	return (!a && !b) || (a && b && streq(a, b));
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) for a CLOCK_REALTIME millisecond time;
 * returns its length (24), or -EINVAL / -ENOSPC (len must be >= 25). */
int eb_format_utc(int64_t time_ms, char *buf, size_t len);

/* mkdir -p: missing parents get parent_mode, the last component mode.
 * Existing directories are left as they are.  0 or -errno. */
int eb_mkdir_p(const char *path, unsigned parent_mode, unsigned mode);

/* Replaces path atomically: a temporary file beside it, fsync, rename, so
 * a power cut leaves the old file or the new one, never half of one.
 * 0 or -errno; nothing printed. */
int eb_write_file(const char *path, const void *data, size_t len,
		  unsigned mode);

/* fsync() of a directory, so a rename() into it survives a power cut.
 * 0 or -errno. */
int eb_fsync_dir(const char *path);

/* Exit codes (sysexits.h values, so systemd units can name them). */
enum {
	EB_EXIT_OK = 0,
	EB_EXIT_FAILURE = 1,
	EB_EXIT_USAGE = 2,
	EB_EXIT_UNAVAILABLE = 69, /* token or module missing */
	EB_EXIT_RESTART = 75,	  /* asked to restart (c8y_Restart) */
	EB_EXIT_NOPERM = 77,	  /* wrong or locked PIN: never retried */
	EB_EXIT_CONFIG = 78,	  /* config, certificate or identity invalid */
};

/*
 * An error message buffer in the style of curl's CURLOPT_ERRORBUFFER:
 * library-like modules never log; they fill one of these and return -errno,
 * and daemon/ logs it once with context.
 */
#define EB_ERRLEN 512
struct eb_err {
	char msg[EB_ERRLEN];
};

/* Fill err (may be NULL) and return code, so callers can write
 * "return eb_errf(err, -EINVAL, ...)". */
__attribute__((format(printf, 3, 4))) int eb_errf(struct eb_err *err, int code,
						  const char *fmt, ...);

#endif
