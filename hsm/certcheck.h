/* SPDX-License-Identifier: MIT */
/*
 * The certificate rules the clouds enforce, checked locally so a device
 * says what to fix instead of being refused without a reason.  Pure
 * OpenSSL: no token access (the key is passed in).
 */
#ifndef EB_CERTCHECK_H
#define EB_CERTCHECK_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum cc_status { CC_PASS, CC_WARN, CC_FAIL };

struct cc_result {
	const char *rule; /* short rule id, e.g. "chain-order" */
	enum cc_status status;
	char msg[320];
};

#define CC_MAX_RESULTS 32

struct cc_report {
	struct cc_result r[CC_MAX_RESULTS];
	size_t n;
	size_t n_fail;
	size_t n_warn;
};

struct cc_params {
	const char *cert_file; /* leaf, intermediates, CA: in that order */
	EVP_PKEY *key;	       /* the token key, or NULL to skip */
	const char *expect_cn; /* gateway.id, or NULL to skip */
	time_t now;
	int64_t warn_seconds; /* warn when the leaf expires within */
};

/* Returns 0 when every rule passed (warnings allowed), -EINVAL otherwise,
 * -errno when the file cannot be read. */
int certcheck_run(const struct cc_params *p, struct cc_report *rep);

#endif
