/* SPDX-License-Identifier: MIT */
/* Small helpers for the cmocka unit tests: temp dirs and files. */
#ifndef EB_TEST_HELPERS_H
#define EB_TEST_HELPERS_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka.h needs the headers above first. */
#include <cmocka.h>

static inline char *t_mkdtemp(void)
{
	char *d = strdup("/tmp/eb-unit-XXXXXX");

	assert_non_null(mkdtemp(d));
	return d;
}

static inline char *t_write(const char *dir, const char *name, mode_t mode,
			    const char *fmt, ...)
{
	char *path;
	FILE *f;
	va_list ap;

	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	chmod(path, mode);
	return path;
}

static inline void t_rm_rf(const char *dir)
{
	char *cmd;

	assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

#endif
