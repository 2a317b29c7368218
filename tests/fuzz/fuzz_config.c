/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for what the daemon reads from files: the INI loader
 * with its validation, and the value parsers it uses.  Built and run by
 * `make fuzz` (clang with libclang-rt-14-dev).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../config/config.h"
#include "../../drivers/driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct eb_diags d = { 0 };
	struct eb_config *c;
	char path[64], value[256];
	uint64_t u;
	double x;
	bool b;
	int fd;

	/* the value parsers, on the first bytes as a string */
	if (size) {
		size_t n = size < sizeof(value) - 1 ? size : sizeof(value) - 1;

		memcpy(value, data, n);
		value[n] = '\0';
		config_parse_duration_ms(value, &u);
		config_parse_size(value, &u);
		config_parse_uint(value, UINT32_MAX, &u);
		config_parse_double(value, &x);
		config_parse_bool(value, &b);
	}
	/* the whole loader, on the input as a configuration file */
	fd = memfd_create("edgebridge.conf", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) == (ssize_t)size) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		c = config_load(path, driver_check_config, &d);
		config_free(c);
		diags_free(&d);
	}
	close(fd);
	return 0;
}
