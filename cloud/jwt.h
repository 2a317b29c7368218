/* SPDX-License-Identifier: MIT */
/*
 * What the daemon reads of a JSON Web Token: the claims that say when it
 * was issued and when it expires.  The signature is the platform's to
 * check; we only need the times, to renew the token in time.  Pure
 * functions, so the fuzzers can call them.
 */
#ifndef EB_JWT_H
#define EB_JWT_H

#include <stddef.h>
#include <stdint.h>

struct jwt_claims {
	int64_t iat; /* issued at, seconds since the epoch (0: absent) */
	int64_t exp; /* expires at */
	char sub[128];
};

/*
 * Parses header.payload.signature (base64url parts).  0, or -EINVAL with
 * a reason in why (which never quotes the token).
 */
int jwt_parse(const char *token, size_t len, struct jwt_claims *c, char *why,
	      size_t why_len);

/*
 * The token in a Cumulocity "71,<token>" line on s/dat: sets *tok and *tok_len
 * to it (inside payload).  0, or -EINVAL with a reason.
 */
int c8y_parse_token_line(const char *payload, size_t len, const char **tok,
			 size_t *tok_len, char *why, size_t why_len);

#endif
