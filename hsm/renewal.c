/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "../config/config.h"
#include "renewal.h"

static int path_of(char *buf, size_t len, const char *state_dir,
		   const char *name)
{
	int n = snprintf(buf, len, "%s/renewal%s%s", state_dir, name ? "/" : "",
			 name ? name : "");

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* A small text file without its trailing newline: length or -errno. */
static int read_line(const char *path, char *buf, size_t len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		return -errno;
	if ((size_t)n == len - 1)
		return -E2BIG;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return (int)strlen(buf);
}

int renewal_chain_path(const char *state_dir, char *buf, size_t len)
{
	return path_of(buf, len, state_dir, "chain.pem");
}

int renewal_read(const char *state_dir, struct renewal *r)
{
	char path[4200];
	struct stat st;
	int n;

	memset(r, 0, sizeof(*r));
	if (path_of(path, sizeof(path), state_dir, "key") < 0)
		return -ENAMETOOLONG;
	n = read_line(path, r->key_uri, sizeof(r->key_uri));
	if (n < 0)
		return n;
	if (n == 0 || strncmp(r->key_uri, "pkcs11:", 7))
		return -EINVAL;
	if (renewal_chain_path(state_dir, r->chain_file,
			       sizeof(r->chain_file)) < 0)
		return -ENAMETOOLONG;
	r->has_chain = stat(r->chain_file, &st) == 0;
	if (path_of(path, sizeof(path), state_dir, "failed") == 0 &&
	    read_line(path, r->failed, sizeof(r->failed)) < 0)
		r->failed[0] = '\0';
	return 0;
}

static int remove_files(const char *state_dir)
{
	static const char *const names[] = { "chain.pem", "failed", "key" };
	char path[4200];

	for (size_t i = 0; i < EB_ARRAY_SIZE(names); i++) {
		if (path_of(path, sizeof(path), state_dir, names[i]) < 0)
			return -ENAMETOOLONG;
		if (unlink(path) < 0 && errno != ENOENT)
			return -errno;
	}
	if (path_of(path, sizeof(path), state_dir, NULL) == 0)
		eb_fsync_dir(path);
	return 0;
}

int renewal_start(const char *state_dir, const char *key_uri)
{
	char path[4200], line[1100];
	int r;

	if (strncmp(key_uri, "pkcs11:", 7) || strpbrk(key_uri, "\r\n"))
		return -EINVAL;
	if (path_of(path, sizeof(path), state_dir, NULL) < 0)
		return -ENAMETOOLONG;
	r = eb_mkdir_p(path, 0755, 0750);
	if (r < 0)
		return r;
	r = remove_files(state_dir);
	if (r < 0)
		return r;
	snprintf(line, sizeof(line), "%s\n", key_uri);
	path_of(path, sizeof(path), state_dir, "key");
	return eb_write_file(path, line, strlen(line), 0640);
}

int renewal_set_failed(const char *state_dir, const char *reason)
{
	char path[4200], line[600];

	if (path_of(path, sizeof(path), state_dir, "failed") < 0)
		return -ENAMETOOLONG;
	if (!reason)
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	snprintf(line, sizeof(line), "%.500s\n", reason);
	return eb_write_file(path, line, strlen(line), 0640);
}

int renewal_cancel(const char *state_dir)
{
	return remove_files(state_dir);
}

static int copy_file(const char *from, const char *to)
{
	_cleanup_close_ int fd = open(from, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	ssize_t n;
	int r;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || st.st_size > 1 << 20)
		return -EINVAL;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	n = read(fd, buf, (size_t)st.st_size);
	r = n == st.st_size ? eb_write_file(to, buf, (size_t)n, 0644)
			    : (n < 0 ? -errno : -EIO);
	free(buf);
	return r;
}

int renewal_commit(const char *config_path, const char *state_dir,
		   const struct renewal *rn, char *cert_out, size_t len)
{
	_cleanup_free_ char *dir = config_dropin_dir(config_path);
	char certs[4200], dropin[4400], stamp[32], text[6000];
	time_t now = time(NULL);
	struct tm tm;
	int r;

	if (!dir || !rn->has_chain)
		return !dir ? -ENOMEM : -EINVAL;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(certs, sizeof(certs), "%s/certs", state_dir);
	r = eb_mkdir_p(certs, 0755, 0755);
	if (r < 0)
		return r;
	if (snprintf(cert_out, len, "%s/device-%s.pem", certs, stamp) >=
	    (int)len)
		return -ENAMETOOLONG;
	r = copy_file(rn->chain_file, cert_out);
	if (r < 0)
		return r;
	eb_fsync_dir(certs);
	r = eb_mkdir_p(dir, 0755, 0755);
	if (r < 0)
		return r;
	snprintf(dropin, sizeof(dropin), "%s/%s", dir, RENEWAL_DROPIN);
	snprintf(text, sizeof(text),
		 "# Written by edgebridged at %s, after the broker accepted "
		 "the renewed\n"
		 "# certificate.  Delete this file (and restart) to go back "
		 "to the previous\n"
		 "# key and certificate, which were left as they were.\n"
		 "[hsm]\n"
		 "key = %s\n"
		 "\n"
		 "[cloud]\n"
		 "cert_file = %s\n",
		 stamp, rn->key_uri, cert_out);
	/* the one switch: before this rename the old pair is in force */
	r = eb_write_file(dropin, text, strlen(text), 0644);
	if (r < 0)
		return r;
	eb_fsync_dir(dir);
	return remove_files(state_dir);
}
