/* SPDX-License-Identifier: MIT */
/*
 * hsm/certcheck: one broken chain per rule, built here with OpenSSL and
 * written to a temp dir at run time (no binary fixtures), each reported
 * under the right rule as a failure; a good chain passes every rule.
 */
#include "helpers.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../../common/util.h"
#include "../../hsm/certcheck.h"

#define DAY 86400L
#define GW "gw-0001"

/* What one certificate looks like; zero = the usual. */
struct spec {
	const char *cn;
	int v1;		/* X.509 v1: no extensions at all */
	int ca;		/* 0 CA:FALSE, 1 CA:TRUE, -1 no basicConstraints */
	int pathlen;	/* with ca: -1 none */
	const char *ku; /* keyUsage, NULL: by role */
	long nb, na;	/* notBefore/notAfter from now (s), 0: by role */
	EVP_PKEY *key;	/* subject key */
	X509 *issuer;	/* NULL: self-signed */
	EVP_PKEY *ikey; /* issuer key (self: key) */
};

static EVP_PKEY *k_root, *k_inter, *k_inter2, *k_leaf, *k_other, *k_rsa1024;
static char *dir;

static void ext(X509 *x, X509V3_CTX *ctx, int nid, const char *val)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, val);

	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static X509 *mk(const struct spec *s)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	EVP_PKEY *ikey = s->ikey ? s->ikey : s->key;
	X509V3_CTX ctx;
	char bc[64];

	assert_non_null(x);
	assert_int_equal(
		X509_set_version(x, s->v1 ? X509_VERSION_1 : X509_VERSION_3),
		1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
				   (const unsigned char *)s->cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, s->issuer ? X509_get_subject_name(s->issuer)
					  : name);
	X509_NAME_free(name);
	X509_gmtime_adj(X509_getm_notBefore(x), s->nb ? s->nb : -DAY);
	X509_gmtime_adj(X509_getm_notAfter(x), s->na ? s->na : 365 * DAY);
	X509_set_pubkey(x, s->key);
	if (!s->v1) {
		X509V3_set_ctx(&ctx, s->issuer ? s->issuer : x, x, NULL, NULL,
			       0);
		if (s->ca == 1 && s->pathlen >= 0)
			snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d",
				 s->pathlen);
		else
			snprintf(bc, sizeof(bc), "critical,CA:%s",
				 s->ca == 1 ? "TRUE" : "FALSE");
		if (s->ca >= 0)
			ext(x, &ctx, NID_basic_constraints, bc);
		ext(x, &ctx, NID_key_usage,
		    s->ku	 ? s->ku
		    : s->ca == 1 ? "critical,keyCertSign,cRLSign"
				 : "critical,digitalSignature");
		ext(x, &ctx, NID_subject_key_identifier, "hash");
		if (s->ca != 1)
			ext(x, &ctx, NID_ext_key_usage, "clientAuth");
	}
	assert_true(X509_sign(x, ikey, EVP_sha256()) > 0);
	return x;
}

static X509 *root(int pathlen)
{
	return mk(&(struct spec){ .cn = "test root CA",
				  .ca = 1,
				  .pathlen = pathlen,
				  .key = k_root });
}

static X509 *inter(X509 *r, int ca, const char *ku)
{
	return mk(&(struct spec){ .cn = "test intermediate CA",
				  .ca = ca,
				  .pathlen = 0,
				  .ku = ku,
				  .key = k_inter,
				  .issuer = r,
				  .ikey = k_root });
}

/* the usual leaf, with one change by the caller's spec */
static X509 *leaf(struct spec s, X509 *i)
{
	s.cn = s.cn ? s.cn : GW;
	s.key = s.key ? s.key : k_leaf;
	s.issuer = i;
	s.ikey = k_inter;
	return mk(&s);
}

/* Writes the chain (freeing it) to DIR/name; returns the path. */
static char *write_chain(const char *name, X509 **certs, size_t n)
{
	char *path;
	FILE *f;

	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(PEM_write_X509(f, certs[i]), 1);
		X509_free(certs[i]);
	}
	fclose(f);
	return path;
}

enum broken {
	GOOD,
	WRONG_ORDER,
	MISSING_CA,
	SIGNER_CA_FALSE,
	SIGNER_NO_KEYCERTSIGN,
	PATHLEN_EXCEEDED,
	EXPIRED,
	NOT_YET_VALID,
	CN_COLON,
	CN_MISMATCH,
	RSA_1024,
	X509_V1,
	KEY_MISMATCH,
};

static const struct {
	enum broken what;
	const char *name, *rule;
} cases[] = {
	{ WRONG_ORDER, "wrong-order", "chain-order" },
	{ MISSING_CA, "missing-ca", "chain-ca" },
	{ SIGNER_CA_FALSE, "signer-ca-false", "signer-ca" },
	{ SIGNER_NO_KEYCERTSIGN, "signer-no-keycertsign", "signer-ca" },
	{ PATHLEN_EXCEEDED, "pathlen-exceeded", "pathlen" },
	{ EXPIRED, "expired", "validity" },
	{ NOT_YET_VALID, "not-yet-valid", "validity" },
	{ CN_COLON, "cn-colon", "cn" },
	{ CN_MISMATCH, "cn-mismatch", "cn" },
	{ RSA_1024, "rsa-1024", "key-strength" },
	{ X509_V1, "x509-v1", "x509-v3" },
	{ KEY_MISMATCH, "key-mismatch", "key-match" },
};

/* Builds the chain for one case; fills *p (cert_file, key, CN). */
static void build(enum broken what, const char *name, struct cc_params *p)
{
	X509 *c[4], *r, *i;
	size_t n = 3;

	r = root(-1);
	i = inter(r, 1, NULL);
	switch (what) {
	case SIGNER_CA_FALSE:
		X509_free(i);
		i = inter(r, 0, NULL);
		break;
	case SIGNER_NO_KEYCERTSIGN:
		X509_free(i);
		i = inter(r, 1, "critical,digitalSignature");
		break;
	default:
		break;
	}
	switch (what) {
	case EXPIRED:
		c[0] = leaf((struct spec){ .nb = -30 * DAY, .na = -DAY }, i);
		break;
	case NOT_YET_VALID:
		c[0] = leaf((struct spec){ .nb = DAY, .na = 30 * DAY }, i);
		break;
	case CN_COLON:
		c[0] = leaf((struct spec){ .cn = "gw:0001" }, i);
		break;
	case CN_MISMATCH:
		c[0] = leaf((struct spec){ .cn = "gw-0002" }, i);
		break;
	case RSA_1024:
		c[0] = leaf((struct spec){ .key = k_rsa1024 }, i);
		break;
	case X509_V1:
		c[0] = leaf((struct spec){ .v1 = 1 }, i);
		break;
	default:
		c[0] = leaf((struct spec){ 0 }, i);
		break;
	}
	c[1] = i;
	c[2] = r;
	if (what == WRONG_ORDER) {
		/* root, intermediate, leaf */
		c[2] = c[0];
		c[0] = r;
	}
	if (what == MISSING_CA) {
		X509_free(r);
		n = 2;
	}
	if (what == PATHLEN_EXCEEDED) {
		/* root (pathlen:0) -> inter (pathlen:0) -> inter2 -> leaf */
		X509 *r0 = root(0), *i1, *i2;

		X509_free(r);
		X509_free(i);
		X509_free(c[0]);
		i1 = mk(&(struct spec){ .cn = "test intermediate CA",
					.ca = 1,
					.pathlen = -1,
					.key = k_inter,
					.issuer = r0,
					.ikey = k_root });
		i2 = mk(&(struct spec){ .cn = "test intermediate 2 CA",
					.ca = 1,
					.pathlen = -1,
					.key = k_inter2,
					.issuer = i1,
					.ikey = k_inter });
		c[0] = mk(&(struct spec){ .cn = GW,
					  .key = k_leaf,
					  .issuer = i2,
					  .ikey = k_inter2 });
		c[1] = i2;
		c[2] = i1;
		c[3] = r0;
		n = 4;
	}
	*p = (struct cc_params){
		.cert_file = write_chain(name, c, n),
		.key = what == KEY_MISMATCH ? k_other
		       : what == RSA_1024   ? k_rsa1024
					    : k_leaf,
		.expect_cn = GW,
		.now = time(NULL),
		.warn_seconds = 30 * DAY,
		.strict = true,
	};
}

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	assert_non_null(k);
	return k;
}

static int setup(void **state)
{
	(void)state;
	dir = t_mkdtemp();
	k_root = ec_key();
	k_inter = ec_key();
	k_inter2 = ec_key();
	k_leaf = ec_key();
	k_other = ec_key();
	k_rsa1024 = EVP_RSA_gen(1024);
	assert_non_null(k_rsa1024);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(k_root);
	EVP_PKEY_free(k_inter);
	EVP_PKEY_free(k_inter2);
	EVP_PKEY_free(k_leaf);
	EVP_PKEY_free(k_other);
	EVP_PKEY_free(k_rsa1024);
	t_rm_rf(dir);
	free(dir);
	return 0;
}

static void dump(const struct cc_report *rep)
{
	for (size_t i = 0; i < rep->n; i++)
		print_message("  %s %s: %s\n",
			      certcheck_status_name(rep->r[i].status),
			      rep->r[i].rule, rep->r[i].msg);
}

static void test_good_chain_passes_every_rule(void **state)
{
	static const char *const rules[] = {
		"key-match", "cn",	     "chain-order", "chain-ca",
		"validity",  "x509-v3",	     "leaf-ca",	    "signer-ca",
		"pathlen",   "key-strength",
	};
	struct cc_report rep;
	struct cc_params p;

	(void)state;
	build(GOOD, "good.pem", &p);
	assert_int_equal(certcheck_run(&p, &rep), 0);
	dump(&rep);
	for (size_t i = 0; i < rep.n; i++)
		assert_int_equal(rep.r[i].status, CC_PASS);
	for (size_t i = 0; i < EB_ARRAY_SIZE(rules); i++)
		assert_non_null(certcheck_find(&rep, rules[i]));
	/* the daemon's mode agrees */
	p.strict = false;
	assert_int_equal(certcheck_run(&p, &rep), 0);
	assert_int_equal(rep.n_fail + rep.n_warn, 0);
	free((char *)p.cert_file);
}

static void test_each_broken_chain_fails_its_rule(void **state)
{
	(void)state;
	for (size_t k = 0; k < EB_ARRAY_SIZE(cases); k++) {
		const struct cc_result *r;
		struct cc_report rep;
		struct cc_params p;

		build(cases[k].what, cases[k].name, &p);
		print_message("%s -> %s\n", cases[k].name, cases[k].rule);
		assert_int_equal(certcheck_run(&p, &rep), -EINVAL);
		dump(&rep);
		r = certcheck_find(&rep, cases[k].rule);
		assert_non_null(r);
		assert_int_equal(r->status, CC_FAIL);
		/* a broken signer is not mistaken for a wrong order */
		if (cases[k].what != WRONG_ORDER)
			assert_int_equal(
				certcheck_find(&rep, "chain-order")->status,
				CC_PASS);
		assert_true(rep.n_fail >= 1);
		free((char *)p.cert_file);
	}
}

/* Only what the cloud or the TLS handshake refuses stops the daemon. */
static void test_daemon_mode_warns_for_documented_rules(void **state)
{
	const struct cc_result *r;
	struct cc_report rep;
	struct cc_params p;

	(void)state;
	build(X509_V1, "v1-daemon.pem", &p);
	p.strict = false;
	assert_int_equal(certcheck_run(&p, &rep), 0);
	r = certcheck_find(&rep, "x509-v3");
	assert_non_null(r);
	assert_int_equal(r->status, CC_WARN);
	free((char *)p.cert_file);

	/* refusals stay refusals */
	build(SIGNER_CA_FALSE, "ca-false-daemon.pem", &p);
	p.strict = false;
	assert_int_equal(certcheck_run(&p, &rep), -EINVAL);
	assert_int_equal(certcheck_find(&rep, "signer-ca")->status, CC_FAIL);
	free((char *)p.cert_file);
}

static void test_thingsboard_missing_ca_is_a_warning(void **state)
{
	struct cc_report rep;
	struct cc_params p;

	(void)state;
	build(MISSING_CA, "tb-missing-ca.pem", &p);
	p.profile = CC_PROFILE_THINGSBOARD;
	assert_int_equal(certcheck_run(&p, &rep), 0);
	assert_int_equal(certcheck_find(&rep, "chain-ca")->status, CC_WARN);
	free((char *)p.cert_file);
}

static void test_key_skipped_with_reason(void **state)
{
	const struct cc_result *r;
	struct cc_report rep;
	struct cc_params p;

	(void)state;
	build(GOOD, "skip.pem", &p);
	p.key = NULL;
	p.key_skip = "token not reachable";
	assert_int_equal(certcheck_run(&p, &rep), 0);
	r = certcheck_find(&rep, "key-match");
	assert_non_null(r);
	assert_int_equal(r->status, CC_SKIP);
	assert_non_null(strstr(r->msg, "skipped: token not reachable"));
	free((char *)p.cert_file);
}

static void test_unreadable_file(void **state)
{
	struct cc_params p = { .cert_file = "/nonexistent/chain.pem" };
	struct cc_report rep;

	(void)state;
	assert_int_equal(certcheck_run(&p, &rep), -ENOENT);
	assert_int_equal(certcheck_find(&rep, "read")->status, CC_FAIL);
	assert_int_equal(certcheck_profile("thingsboard"),
			 CC_PROFILE_THINGSBOARD);
	assert_int_equal(certcheck_profile("aws"), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_chain_passes_every_rule),
		cmocka_unit_test(test_each_broken_chain_fails_its_rule),
		cmocka_unit_test(test_daemon_mode_warns_for_documented_rules),
		cmocka_unit_test(test_thingsboard_missing_ca_is_a_warning),
		cmocka_unit_test(test_key_skipped_with_reason),
		cmocka_unit_test(test_unreadable_file),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
