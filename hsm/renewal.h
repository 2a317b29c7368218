/* SPDX-License-Identifier: MIT */
/*
 * A certificate renewal, prepared by the tool and completed by the daemon,
 * kept as files in <state_dir>/renewal/ so either side can stop (or lose
 * power) at any step:
 *
 *   key        the new key's pkcs11: URI    `edgebridge cert renew`
 *   chain.pem  its chain, leaf first        `edgebridge cert install`
 *   failed     why the broker refused it    edgebridged
 *
 * The daemon tries the new pair on a real connection first.  Only when
 * the broker accepts it does it commit, by one atomic rename: the chain is
 * copied to <state_dir>/certs/ and conf.d/95-renewal.conf names the new
 * [hsm] key and [cloud] cert_file.  Until then, and whenever the test
 * connection fails, the old key and certificate stay in use untouched;
 * deleting the drop-in goes back to them.
 */
#ifndef EB_RENEWAL_H
#define EB_RENEWAL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define RENEWAL_DROPIN "95-renewal.conf"

struct renewal {
	char key_uri[1024];
	bool has_chain;
	char chain_file[4200]; /* <state_dir>/renewal/chain.pem */
	char failed[512];      /* "" unless a test connection failed */
};

/* The pending renewal: 0, -ENOENT when there is none, or -errno. */
int renewal_read(const char *state_dir, struct renewal *r);
/* A new renewal for key_uri (a previous pending one is replaced). */
int renewal_start(const char *state_dir, const char *key_uri);
/* Path of the chain file of the pending renewal (for cert install). */
int renewal_chain_path(const char *state_dir, char *buf, size_t len);
/* Records (or, with NULL, clears) why the test connection failed. */
int renewal_set_failed(const char *state_dir, const char *reason);
/* Forgets the pending renewal (the key stays on the token). */
int renewal_cancel(const char *state_dir);
/*
 * Makes the renewal permanent: the chain goes to
 * <state_dir>/certs/device-<UTC time>.pem (its path in cert_out) and the
 * drop-in RENEWAL_DROPIN beside config_path names it and the key.  The
 * renewal files are removed after that.  0 or -errno.
 */
int renewal_commit(const char *config_path, const char *state_dir,
		   const struct renewal *r, char *cert_out, size_t len);

#endif
