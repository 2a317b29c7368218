/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

#define MAX_TOKEN 8192

static int fail(char *why, size_t n, const char *msg)
{
	snprintf(why, n, "%s", msg);
	return -EINVAL;
}

static bool is_b64url(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/* base64url (no padding) -> bytes, through OpenSSL's decoder.  Returns the
 * length or -1. */
static int b64url_decode(const char *in, size_t len, unsigned char *out,
			 size_t out_len)
{
	char *std;
	size_t padded = (len + 3) / 4 * 4;
	int n;

	if (len % 4 == 1 || padded / 4 * 3 > out_len)
		return -1;
	std = malloc(padded + 1);
	if (!std)
		return -1;
	for (size_t i = 0; i < len; i++)
		std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	for (size_t i = len; i < padded; i++)
		std[i] = '=';
	std[padded] = '\0';
	n = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
	free(std);
	if (n < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as zero bytes */
	n -= (int)(padded - len);
	return n;
}

static int64_t claim_time(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (int64_t)json_real_value(v);
	return -1;
}

int jwt_parse(const char *token, size_t len, struct jwt_claims *c, char *why,
	      size_t why_len)
{
	const char *dot1, *dot2;
	unsigned char *buf;
	json_t *o;
	json_error_t je;
	json_t *sub;
	int n;

	memset(c, 0, sizeof(*c));
	if (len == 0 || len > MAX_TOKEN)
		return fail(why, why_len, "the token is empty or too long");
	for (size_t i = 0; i < len; i++)
		if (!is_b64url(token[i]) && token[i] != '.')
			return fail(why, why_len,
				    "the token has characters outside "
				    "base64url");
	dot1 = memchr(token, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))
		    : NULL;
	if (!dot1 || !dot2 ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
		return fail(why, why_len,
			    "the token is not header.payload.signature");
	if (dot1 == token || dot2 == dot1 + 1 || dot2 + 1 == token + len)
		return fail(why, why_len, "the token has an empty part");
	buf = malloc(len);
	if (!buf)
		return fail(why, why_len, "out of memory");
	n = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, len);
	if (n <= 0) {
		free(buf);
		return fail(why, why_len, "the token payload is not base64url");
	}
	o = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES,
		       &je);
	free(buf);
	if (!json_is_object(o)) {
		json_decref(o);
		return fail(why, why_len,
			    "the token payload is not a JSON object");
	}
	c->exp = claim_time(o, "exp");
	c->iat = claim_time(o, "iat");
	sub = json_object_get(o, "sub");
	if (json_is_string(sub))
		snprintf(c->sub, sizeof(c->sub), "%s", json_string_value(sub));
	json_decref(o);
	if (c->exp <= 0)
		return fail(why, why_len, "the token has no valid 'exp' claim");
	if (c->iat < 0)
		c->iat = 0;
	if (c->iat && c->iat > c->exp)
		return fail(why, why_len,
			    "the token expires before it was "
			    "issued");
	return 0;
}

int c8y_parse_token_line(const char *payload, size_t len, const char **tok,
			 size_t *tok_len, char *why, size_t why_len)
{
	size_t end = len;

	if (len < 3 || memcmp(payload, "71,", 3))
		return fail(why, why_len, "not a '71,<token>' line");
	/* one line; a trailing newline is tolerated */
	while (end > 3 &&
	       (payload[end - 1] == '\n' || payload[end - 1] == '\r'))
		end--;
	if (end == 3)
		return fail(why, why_len, "the token is empty");
	if (memchr(payload + 3, '\n', end - 3) ||
	    memchr(payload + 3, ',', end - 3))
		return fail(why, why_len, "more than one field after 71");
	*tok = payload + 3;
	*tok_len = end - 3;
	return 0;
}
