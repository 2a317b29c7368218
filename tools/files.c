/* SPDX-License-Identifier: MIT */
/*
 * Files the tool writes (chains, CSRs, CA bookkeeping) are replaced
 * atomically: written to a temporary file, synced, then renamed, so a power
 * cut leaves the old file or the new one, never half of one.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../common/util.h"
#include "tool.h"

int tool_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4200];
	int fd, e;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path,
			     (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) < 0) {
		e = errno ? -errno : -EIO;
		close(fd);
		unlink(tmp);
		return e;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

int tool_write_certs(const char *path, X509 *const *certs, size_t n)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *pem;
	long len;
	int r = -ENOMEM;

	for (size_t i = 0; mem && i < n; i++)
		if (!PEM_write_bio_X509(mem, certs[i]))
			goto out;
	if (mem) {
		len = BIO_get_mem_data(mem, &pem);
		r = len >= 0 ? tool_write_file(path, pem, (size_t)len, 0644)
			     : -EIO;
	}
out:
	BIO_free(mem);
	return r;
}

int tool_read_certs(const char *path, X509 **certs, size_t max, size_t *n)
{
	BIO *bio = BIO_new_file(path, "r");
	X509 *x;

	*n = 0;
	if (!bio) {
		ERR_clear_error();
		return -ENOENT;
	}
	while (*n < max && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		certs[(*n)++] = x;
	ERR_clear_error(); /* the end of the file shows up as an error */
	BIO_free(bio);
	return *n ? 0 : -EINVAL;
}
