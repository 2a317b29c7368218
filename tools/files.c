/* SPDX-License-Identifier: MIT */
/*
 * Files the tool writes (chains, CSRs, CA bookkeeping) are replaced
 * atomically through eb_write_file() (common/util.c).
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "../common/util.h"
#include "tool.h"

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
		r = len >= 0 ? eb_write_file(path, pem, (size_t)len, 0644)
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
