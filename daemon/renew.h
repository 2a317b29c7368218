/* SPDX-License-Identifier: MIT */
/*
 * Completes a certificate renewal prepared with `edgebridge cert renew` and
 * `cert install` (hsm/renewal.h): once the new chain is there, and the
 * uplink is connected (so a failure means the credentials, not the link),
 * the transport reconnects with the new key and chain.  Accepted: the
 * switch is committed and the host told.  Refused: the old pair comes
 * back at once, the reason goes to the log, the renewal's `failed` file
 * and a major alarm, and the attempt is repeated hourly or as soon as a
 * new chain is installed.
 */
#ifndef EB_RENEW_H
#define EB_RENEW_H

#include <openssl/ssl.h>

#include "../cloud/cloud.h"
#include "../common/report.h"
#include "../config/config.h"
#include "../hsm/hsm.h"
#include "../store/store.h"
#include "loop.h"

struct renew;

struct renew_host {
	/* Committed: key and tls are now the host's (the transport already
	 * uses tls); key_uri/cert_file are what the drop-in says. */
	void (*switched)(void *ud, EVP_PKEY *key, SSL_CTX *tls,
			 const char *key_uri, const char *cert_file);
	void *ud;
};

struct renew *renew_new(struct loop *loop, const struct eb_config *cfg,
			const char *config_path, struct hsm *hsm,
			struct cloud *cloud, struct store *st,
			const struct renew_host *host, eb_report_fn report);
struct renew *renew_free(struct renew *r);
/* Looks for a renewal now (SIGHUP, connected); also done every minute. */
void renew_check(struct renew *r);

#endif
