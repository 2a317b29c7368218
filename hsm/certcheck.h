/* SPDX-License-Identifier: MIT */
/*
 * The certificate rules the clouds enforce, checked locally so a device
 * says what to fix instead of being refused without a reason.  Pure
 * OpenSSL: no token access (the key is passed in).
 *
 * Rules (cc_result.rule): "read", "key-match", "cn", "chain-order",
 * "chain-ca", "validity", "x509-v3", "leaf-ca", "signer-ca", "pathlen",
 * "key-strength".
 *
 * Two modes.  The daemon's (strict = false) fails only what the cloud or
 * the TLS handshake would refuse, and reports the rest as warnings.  The
 * tool's (strict = true) fails every deviation from what the clouds
 * document (v3 everywhere, keyUsage on every CA, P-256/P-384 curves).
 */
#ifndef EB_CERTCHECK_H
#define EB_CERTCHECK_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* CC_SKIP: the rule could not be checked (reason in msg), e.g. the token
 * is unreachable; it does not count as a failure. */
enum cc_status { CC_PASS, CC_WARN, CC_FAIL, CC_SKIP };

/* cumulocity (0, the default) needs the self-signed CA in the chain;
 * thingsboard only warns about it, and recommends ECDSA (CoAP/DTLS). */
enum cc_profile { CC_PROFILE_CUMULOCITY, CC_PROFILE_THINGSBOARD };

struct cc_result {
	const char *rule; /* short rule id, e.g. "chain-order" */
	enum cc_status status;
	char msg[320];
};

#define CC_MAX_RESULTS 64

struct cc_report {
	struct cc_result r[CC_MAX_RESULTS];
	size_t n;
	size_t n_fail;
	size_t n_warn;
};

struct cc_params {
	const char *cert_file; /* leaf, intermediates, CA: in that order */
	EVP_PKEY *key;	       /* the token key, or NULL to skip */
	const char *key_skip;  /* with key NULL: report key-match skipped */
	const char *expect_cn; /* gateway.id, or NULL to skip */
	time_t now;
	int64_t warn_seconds; /* warn when the leaf expires within */
	enum cc_profile profile;
	bool strict; /* fail every documented rule, not only refusals */
};

/* Returns 0 when every rule passed (warnings allowed), -EINVAL otherwise,
 * -errno when the file cannot be read. */
int certcheck_run(const struct cc_params *p, struct cc_report *rep);

/* "pass", "warn", "fail", "skip". */
const char *certcheck_status_name(enum cc_status st);

/* "cumulocity" / "thingsboard" -> profile, or -EINVAL. */
int certcheck_profile(const char *name);

/* The worst result for rule in rep (fail, then warn, skip, pass), or NULL
 * when the rule was not reported. */
const struct cc_result *certcheck_find(const struct cc_report *rep,
				       const char *rule);

/* Seconds until the first certificate in cert_file expires (negative when
 * it has), and its notAfter as "YYYY-MM-DD".  0 or -errno. */
int certcheck_leaf_expiry(const char *cert_file, time_t now,
			  int64_t *seconds_left, char *date, size_t len);

#endif
