/* SPDX-License-Identifier: MIT */
/*
 * Why these rules: Cumulocity rejects a device whose chain does not include
 * the CA it trusts, whose CN is not the client id, or whose CN contains ':'
 * (it separates tenant and template in the client id).  mosquitto and any
 * TLS server reject leaves outside their validity period.  A private key
 * that does not match the leaf fails the handshake with a useless alert.
 * Checking all of it at start turns each of those into one line saying
 * what to fix.
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
	}

	/* Order: each certificate is issued and signed by the next one. */
	for (size_t i = 0; i + 1 < n; i++) {
		EVP_PKEY *ik = X509_get0_pubkey(chain[i + 1]);

		if (X509_check_issued(chain[i + 1], chain[i]) != X509_V_OK ||
		    !ik || X509_verify(chain[i], ik) != 1) {
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

	/* The chain must end with (include) the self-signed CA. */
	{
		X509 *last = chain[n - 1];
		EVP_PKEY *lk = X509_get0_pubkey(last);

		if (X509_check_issued(last, last) == X509_V_OK && lk &&
		    X509_verify(last, lk) == 1 && n > 1)
			add(rep, "chain-ca", CC_PASS,
			    "chain ends with the self-signed CA");
		else
			add(rep, "chain-ca", CC_FAIL,
			    "the chain in %s does not end with a self-signed "
			    "CA certificate: append the intermediate(s) and "
			    "the root CA after the device certificate",
			    p->cert_file);
		ERR_clear_error();
	}

	for (size_t i = 0; i < n; i++)
		check_validity(rep, chain[i], (int)i, p);

	for (size_t i = 0; i < n; i++)
		X509_free(chain[i]);
	return rep->n_fail ? -EINVAL : 0;
}
