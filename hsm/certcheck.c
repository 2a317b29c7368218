/* SPDX-License-Identifier: MIT */
/*
 * Why these rules: Cumulocity rejects a device whose chain does not include
 * the CA it trusts, whose CN is not the client id, or whose CN contains ':'
 * (it separates tenant and template in the client id).  mosquitto and any
 * TLS server reject leaves outside their validity period.  A private key
 * that does not match the leaf fails the handshake with a useless alert.
 * Checking all of it at start turns each of those into one line saying
 * what to fix.
 *
 * The structural rules follow what OpenSSL's verifier (and so the cloud's
 * TLS server) refuses: a signer that is not a CA, a CA whose keyUsage
 * lacks keyCertSign, a pathlen exceeded, an RSA key under 2048 bits (the
 * default security level).  What the clouds only document (v3 everywhere,
 * keyUsage present on every CA, P-256/P-384) fails in strict mode and is
 * a warning for the daemon, which must not refuse a chain the cloud takes.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "certcheck.h"

#define MAX_CHAIN 10

static void add(struct cc_report *rep, const char *rule, enum cc_status st,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void add(struct cc_report *rep, const char *rule, enum cc_status st,
		const char *fmt, ...)
{
	struct cc_result *r;
	va_list ap;

	if (rep->n == CC_MAX_RESULTS)
		return;
	r = &rep->r[rep->n++];
	r->rule = rule;
	r->status = st;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	if (st == CC_FAIL)
		rep->n_fail++;
	else if (st == CC_WARN)
		rep->n_warn++;
}

static void subject_of(X509 *x, char *buf, size_t len)
{
	X509_NAME_oneline(X509_get_subject_name(x), buf, (int)len);
}

static int leaf_cn(X509 *x, char *buf, size_t len)
{
	X509_NAME *n = X509_get_subject_name(x);

	return X509_NAME_get_text_by_NID(n, NID_commonName, buf, (int)len);
}

static int days_until(const ASN1_TIME *t, time_t now, int *days, int *secs)
{
	ASN1_TIME *ref = ASN1_TIME_set(NULL, now);
	int r = ASN1_TIME_diff(days, secs, ref, t);

	ASN1_TIME_free(ref);
	return r;
}

static void check_validity(struct cc_report *rep, X509 *x, int idx,
			   const struct cc_params *p)
{
	char subj[256];
	int d, s;

	subject_of(x, subj, sizeof(subj));
	if (X509_cmp_time(X509_get0_notBefore(x), &((time_t){ p->now })) > 0) {
		add(rep, "validity", CC_FAIL,
		    "certificate %d (%s) is not yet valid: check the clock or "
		    "the certificate's notBefore",
		    idx, subj);
		return;
	}
	if (X509_cmp_time(X509_get0_notAfter(x), &((time_t){ p->now })) < 0) {
		add(rep, "validity", CC_FAIL,
		    "certificate %d (%s) has expired: renew it", idx, subj);
		return;
	}
	if (idx == 0 && days_until(X509_get0_notAfter(x), p->now, &d, &s) &&
	    (int64_t)d * 86400 + s < p->warn_seconds)
		add(rep, "validity", CC_WARN,
		    "the device certificate expires in %d days: renew it soon",
		    d);
}

/* A rule the cloud documents but whose breach the TLS handshake accepts. */
static enum cc_status doc_rule(const struct cc_params *p)
{
	return p->strict ? CC_FAIL : CC_WARN;
}

static void check_version(struct cc_report *rep, X509 *const *chain, size_t n,
			  const struct cc_params *p)
{
	char subj[256];
	size_t bad = 0;

	for (size_t i = 0; i < n; i++) {
		long v = X509_get_version(chain[i]);

		if (v == X509_VERSION_3)
			continue;
		subject_of(chain[i], subj, sizeof(subj));
		add(rep, "x509-v3", doc_rule(p),
		    "certificate %zu (%s) is X.509 v%ld: the cloud needs v3 "
		    "(with extensions): reissue it as v3",
		    i, subj, v + 1);
		bad++;
	}
	if (!bad)
		add(rep, "x509-v3", CC_PASS,
		    "all %zu certificates are X.509 v3", n);
}

static void check_leaf_ca(struct cc_report *rep, X509 *leaf,
			  const struct cc_params *p)
{
	BASIC_CONSTRAINTS *bc;
	int crit = 0;

	bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
	if (!bc && crit == -2)
		add(rep, "leaf-ca", CC_FAIL,
		    "the device certificate has basicConstraints twice: "
		    "reissue it with one, CA:FALSE");
	else if (bc && bc->ca)
		add(rep, "leaf-ca", doc_rule(p),
		    "the device certificate is a CA (basicConstraints "
		    "CA:TRUE): reissue it with CA:FALSE");
	else if (!bc && p->strict)
		add(rep, "leaf-ca", CC_WARN,
		    "the device certificate has no basicConstraints: "
		    "reissue it with CA:FALSE to be explicit");
	else
		add(rep, "leaf-ca", CC_PASS,
		    "the device certificate is not a CA (CA:FALSE)");
	BASIC_CONSTRAINTS_free(bc);
	ERR_clear_error();
}

/*
 * Every certificate after the leaf signs the one before it (when in order),
 * so it must be a CA: basicConstraints CA:TRUE, and keyUsage with
 * keyCertSign.  OpenSSL refuses a keyUsage without keyCertSign but accepts
 * none at all; the clouds document it as required.
 */
static void check_signers(struct cc_report *rep, X509 *const *chain, size_t n,
			  const struct cc_params *p)
{
	char subj[256];
	size_t bad = 0;

	for (size_t i = 1; i < n; i++) {
		BASIC_CONSTRAINTS *bc;
		uint32_t flags = X509_get_extension_flags(chain[i]);
		int crit = 0;

		subject_of(chain[i], subj, sizeof(subj));
		bc = X509_get_ext_d2i(chain[i], NID_basic_constraints, &crit,
				      NULL);
		if (!bc || !bc->ca) {
			add(rep, "signer-ca", CC_FAIL,
			    "certificate %zu (%s) signs the one before it but "
			    "is not a CA (basicConstraints %s): reissue "
			    "it as a CA, or remove it from the chain",
			    i, subj, bc ? "CA:FALSE" : "missing");
			bad++;
		} else if (!(flags & EXFLAG_KUSAGE)) {
			add(rep, "signer-ca", doc_rule(p),
			    "CA certificate %zu (%s) has no keyUsage: reissue "
			    "it with keyUsage critical, keyCertSign, cRLSign",
			    i, subj);
			bad++;
		} else if (!(X509_get_key_usage(chain[i]) & KU_KEY_CERT_SIGN)) {
			add(rep, "signer-ca", CC_FAIL,
			    "CA certificate %zu (%s) has a keyUsage without "
			    "keyCertSign, so it may not sign certificates: "
			    "reissue it with keyUsage keyCertSign, cRLSign",
			    i, subj);
			bad++;
		}
		BASIC_CONSTRAINTS_free(bc);
	}
	ERR_clear_error();
	if (!bad && n > 1)
		add(rep, "signer-ca", CC_PASS,
		    "every signer is a CA with keyCertSign");
}

/*
 * pathlen:N on a CA allows at most N intermediate CAs below it (not
 * counting the leaf, nor self-issued certificates), as OpenSSL counts.
 */
static void check_pathlen(struct cc_report *rep, X509 *const *chain, size_t n)
{
	char subj[256];
	size_t bad = 0;
	long below = 0;

	for (size_t i = 1; i < n; i++) {
		long pl = X509_get_pathlen(chain[i]);

		if (pl >= 0 && below > pl) {
			subject_of(chain[i], subj, sizeof(subj));
			add(rep, "pathlen", CC_FAIL,
			    "CA certificate %zu (%s) has pathlen:%ld but %ld "
			    "CA(s) below it in the chain: reissue it with "
			    "pathlen >= %ld, or shorten the chain",
			    i, subj, pl, below, below);
			bad++;
		}
		if (!(X509_get_extension_flags(chain[i]) & EXFLAG_SI))
			below++;
	}
	if (!bad && n > 1)
		add(rep, "pathlen", CC_PASS,
		    "every CA's pathlen allows the CAs below it");
}

static void check_key_strength(struct cc_report *rep, X509 *const *chain,
			       size_t n, const struct cc_params *p)
{
	char subj[256], group[64];
	size_t bad = 0;

	for (size_t i = 0; i < n; i++) {
		EVP_PKEY *k = X509_get0_pubkey(chain[i]);
		int id = k ? EVP_PKEY_get_base_id(k) : NID_undef;
		int bits = k ? EVP_PKEY_get_bits(k) : 0;
		int nid = NID_undef;

		subject_of(chain[i], subj, sizeof(subj));
		if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
			if (bits < 2048) {
				add(rep, "key-strength", CC_FAIL,
				    "certificate %zu (%s) has a %d-bit RSA "
				    "key: the cloud needs RSA >= 2048 bits or "
				    "EC P-256/P-384: issue a new key",
				    i, subj, bits);
				bad++;
			} else if (i == 0 &&
				   p->profile == CC_PROFILE_THINGSBOARD) {
				add(rep, "key-strength", CC_WARN,
				    "the device key is RSA-%d: ThingsBoard "
				    "over CoAP (DTLS) recommends ECDSA; use an "
				    "ec-p256 key if the device speaks CoAP",
				    bits);
				bad++;
			}
			continue;
		}
		if (id == EVP_PKEY_EC &&
		    EVP_PKEY_get_group_name(k, group, sizeof(group), NULL))
			nid = OBJ_sn2nid(group);
		if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1)
			continue;
		if (id == EVP_PKEY_EC)
			add(rep, "key-strength", doc_rule(p),
			    "certificate %zu (%s) has an EC key on curve %s: "
			    "the clouds take P-256 or P-384",
			    i, subj, nid == NID_undef ? "(unknown)" : group);
		else
			add(rep, "key-strength", doc_rule(p),
			    "certificate %zu (%s) has a %s key: the clouds "
			    "take EC P-256/P-384 or RSA >= 2048",
			    i, subj, k ? OBJ_nid2sn(id) : "unreadable");
		bad++;
	}
	ERR_clear_error();
	if (!bad)
		add(rep, "key-strength", CC_PASS,
		    "every key is EC P-256/P-384 or RSA >= 2048");
}

const char *certcheck_status_name(enum cc_status st)
{
	switch (st) {
	case CC_PASS:
		return "pass";
	case CC_WARN:
		return "warn";
	case CC_FAIL:
		return "fail";
	case CC_SKIP:
		return "skip";
	}
	return "?";
}

int certcheck_profile(const char *name)
{
	if (!strcmp(name, "cumulocity"))
		return CC_PROFILE_CUMULOCITY;
	if (!strcmp(name, "thingsboard"))
		return CC_PROFILE_THINGSBOARD;
	return -EINVAL;
}

const struct cc_result *certcheck_find(const struct cc_report *rep,
				       const char *rule)
{
	static const int rank[] = {
		[CC_PASS] = 0, [CC_SKIP] = 1, [CC_WARN] = 2, [CC_FAIL] = 3
	};
	const struct cc_result *best = NULL;

	for (size_t i = 0; i < rep->n; i++) {
		const struct cc_result *r = &rep->r[i];

		if (strcmp(r->rule, rule))
			continue;
		if (!best || rank[r->status] > rank[best->status])
			best = r;
	}
	return best;
}

/*
 * Issued by name and signed by the key: the order question only.  Whether
 * the issuer may sign (CA:TRUE, keyCertSign) is the signer-ca rule, so a
 * chain in order with a bad signer is not reported as out of order.
 */
static bool signed_by(X509 *x, X509 *issuer)
{
	EVP_PKEY *ik = X509_get0_pubkey(issuer);
	bool ok = ik &&
		  !X509_NAME_cmp(X509_get_issuer_name(x),
				 X509_get_subject_name(issuer)) &&
		  X509_verify(x, ik) == 1;

	ERR_clear_error();
	return ok;
}

static int load_chain(const char *file, X509 **chain, size_t *n)
{
	BIO *bio = BIO_new_file(file, "r");
	X509 *x;

	*n = 0;
	if (!bio)
		return -errno ? -errno : -ENOENT;
	while (*n < MAX_CHAIN &&
	       (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		chain[(*n)++] = x;
	ERR_clear_error(); /* the end of the file shows up as an error */
	BIO_free(bio);
	return 0;
}

int certcheck_run(const struct cc_params *p, struct cc_report *rep)
{
	X509 *chain[MAX_CHAIN];
	char subj[256], cn[256];
	size_t n = 0;
	bool ordered = true;
	int r;

	memset(rep, 0, sizeof(*rep));
	r = load_chain(p->cert_file, chain, &n);
	if (r < 0) {
		add(rep, "read", CC_FAIL, "cannot read %s: %s", p->cert_file,
		    strerror(-r));
		return r;
	}
	if (n == 0) {
		add(rep, "read", CC_FAIL, "%s contains no PEM certificate",
		    p->cert_file);
		return -EINVAL;
	}

	/* The leaf. */
	if (p->key) {
		if (EVP_PKEY_eq(X509_get0_pubkey(chain[0]), p->key) == 1)
			add(rep, "key-match", CC_PASS,
			    "the device certificate matches the token key");
		else
			add(rep, "key-match", CC_FAIL,
			    "the first certificate in %s does not belong to "
			    "the token key: put the device certificate first, "
			    "or issue one for this key",
			    p->cert_file);
	} else if (p->key_skip) {
		add(rep, "key-match", CC_SKIP, "skipped: %s", p->key_skip);
	}
	if (p->expect_cn) {
		if (leaf_cn(chain[0], cn, sizeof(cn)) < 0)
			add(rep, "cn", CC_FAIL,
			    "the device certificate has no CN: it must be "
			    "'%s' (gateway.id)",
			    p->expect_cn);
		else if (strchr(cn, ':'))
			add(rep, "cn", CC_FAIL,
			    "the device certificate CN '%s' contains ':', "
			    "which the cloud refuses",
			    cn);
		else if (strcmp(cn, p->expect_cn))
			add(rep, "cn", CC_FAIL,
			    "the device certificate CN '%s' does not match "
			    "gateway.id '%s'",
			    cn, p->expect_cn);
		else
			add(rep, "cn", CC_PASS, "CN '%s' = gateway.id", cn);
	} else if (p->strict) {
		if (leaf_cn(chain[0], cn, sizeof(cn)) < 0)
			add(rep, "cn", CC_FAIL,
			    "the device certificate has no CN: it must be "
			    "the gateway.id");
		else if (strchr(cn, ':'))
			add(rep, "cn", CC_FAIL,
			    "the device certificate CN '%s' contains ':', "
			    "which the cloud refuses",
			    cn);
		else
			add(rep, "cn", CC_SKIP,
			    "skipped: CN '%s' has no ':', but there is no "
			    "gateway.id to compare it with (give --cn ID or "
			    "-c FILE)",
			    cn);
	}

	/* Order: each certificate is issued and signed by the next one. */
	for (size_t i = 0; i + 1 < n; i++) {
		if (!signed_by(chain[i], chain[i + 1])) {
			subject_of(chain[i], subj, sizeof(subj));
			add(rep, "chain-order", CC_FAIL,
			    "certificate %zu (%s) in %s is not signed by the "
			    "one after it: order the file leaf, "
			    "intermediate(s), CA",
			    i, subj, p->cert_file);
			ordered = false;
			break;
		}
	}
	ERR_clear_error();
	if (ordered && n > 1)
		add(rep, "chain-order", CC_PASS, "chain of %zu in order", n);
	else if (n == 1)
		add(rep, "chain-order", CC_PASS,
		    "the device certificate alone: nothing to order");

	/* The chain must end with (include) the self-signed CA. */
	{
		if (signed_by(chain[n - 1], chain[n - 1]) && n > 1)
			add(rep, "chain-ca", CC_PASS,
			    "chain ends with the self-signed CA");
		else
			add(rep, "chain-ca",
			    p->profile == CC_PROFILE_THINGSBOARD ? CC_WARN
								 : CC_FAIL,
			    "the chain in %s does not end with a self-signed "
			    "CA certificate: append the intermediate(s) and "
			    "the root CA after the device certificate",
			    p->cert_file);
		ERR_clear_error();
	}

	{
		size_t before = rep->n_fail + rep->n_warn;

		for (size_t i = 0; i < n; i++)
			check_validity(rep, chain[i], (int)i, p);
		if (rep->n_fail + rep->n_warn == before)
			add(rep, "validity", CC_PASS,
			    "every certificate is valid now");
	}

	check_version(rep, chain, n, p);
	check_leaf_ca(rep, chain[0], p);
	if (ordered) {
		check_signers(rep, chain, n, p);
		check_pathlen(rep, chain, n);
	} else {
		add(rep, "signer-ca", CC_SKIP,
		    "skipped: the chain is out of order (see chain-order)");
		add(rep, "pathlen", CC_SKIP,
		    "skipped: the chain is out of order (see chain-order)");
	}
	check_key_strength(rep, chain, n, p);

	for (size_t i = 0; i < n; i++)
		X509_free(chain[i]);
	return rep->n_fail ? -EINVAL : 0;
}

int certcheck_leaf_expiry(const char *cert_file, time_t now,
			  int64_t *seconds_left, char *date, size_t len)
{
	BIO *b = BIO_new_file(cert_file, "r");
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	ASN1_TIME *ref = NULL;
	struct tm tm;
	int days = 0, secs = 0, r = -EINVAL;

	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		return -ENOENT;
	}
	ref = ASN1_TIME_set(NULL, now);
	if (ref && ASN1_TIME_diff(&days, &secs, ref, X509_get0_notAfter(x)) &&
	    ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) {
		*seconds_left = (int64_t)days * 86400 + secs;
		snprintf(date, len, "%04d-%02d-%02d", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday);
		r = 0;
	}
	ASN1_TIME_free(ref);
	X509_free(x);
	return r;
}
