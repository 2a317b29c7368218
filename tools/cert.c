/* SPDX-License-Identifier: MIT */
/*
 * cert csr / install / export: the steps of the certificate workflow that
 * touch the device's own certificate.
 *
 * Why the CSR is made here and not with `openssl req -engine`: the subject
 * rules the clouds enforce (CN = gateway.id, no ':') are checked before the
 * token signs anything, the PIN comes from the daemon's pin file instead of
 * an openssl.cnf or a URI, and the signature is verified before the file is
 * written.
 *
 * Why install orders the chain itself: the most common mistake in the
 * guides is a chain file in the wrong order or without the CA; install
 * builds leaf -> intermediates -> root from whatever order it is given,
 * checks it with the same rules as the daemon, and only then replaces the
 * configured file (atomically, keeping the previous one).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "../hsm/certcheck.h"
#include "../hsm/hsm.h"
#include "../hsm/renewal.h"
#include "tool.h"

#define MAX_CHAIN 10

/* Opens the token the configuration names; prints why not. */
static struct hsm *open_token(struct tool *t, const char *key_uri, int *rc)
{
	struct eb_config *c = tool_config(t);
	struct eb_err err = { "" };
	enum hsm_fail hf;
	struct hsm *h;

	if (!c) {
		*rc = EB_EXIT_CONFIG;
		return NULL;
	}
	h = hsm_open(c->hsm.module, c->hsm.pin_file,
		     key_uri ? key_uri : c->hsm.key, &hf, &err);
	if (!h) {
		tool_err("%s", err.msg);
		*rc = hf == HSM_FAIL_PIN	   ? EB_EXIT_NOPERM
		      : hf == HSM_FAIL_UNAVAILABLE ? EB_EXIT_UNAVAILABLE
						   : EB_EXIT_FAILURE;
	}
	return h;
}

/* "/O=Acme/OU=Boilers" -> entries added to name (CN is separate). */
static int add_subject(X509_NAME *name, const char *subject)
{
	char *dup = strdup(subject), *save = NULL, *part;
	int r = 0;

	if (!dup)
		return -ENOMEM;
	for (part = strtok_r(dup, "/", &save); part && r == 0;
	     part = strtok_r(NULL, "/", &save)) {
		char *eq = strchr(part, '=');

		if (!eq || eq == part || !eq[1]) {
			r = -EINVAL;
			break;
		}
		*eq = '\0';
		if (!strcmp(part, "CN") ||
		    !X509_NAME_add_entry_by_txt(name, part, MBSTRING_UTF8,
						(unsigned char *)eq + 1, -1, -1,
						0))
			r = -EINVAL;
	}
	free(dup);
	return r;
}

/* PEM text of a BIO (memory), NUL-terminated, for eb_write_file. */
static char *bio_text(BIO *b, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;

	if (!out)
		return NULL;
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	return out;
}

/* The CSR for cn (and subject) signed by the key (default: hsm.key). */
static int make_csr(struct tool *t, const char *key, const char *cn,
		    const char *subject, const char *out)
{
	X509_REQ *req = NULL;
	X509_NAME *name;
	struct hsm *h;
	BIO *mem = NULL;
	int rc = EB_EXIT_FAILURE;

	if (!out) {
		tool_err("cert csr: -o FILE is required (- for stdout)");
		return EB_EXIT_USAGE;
	}
	if (!cn && tool_config(t))
		cn = t->cfg->gateway.id;
	if (!cn || !*cn) {
		tool_err("cert csr: give --cn ID (the gateway.id)");
		return EB_EXIT_USAGE;
	}
	if (strchr(cn, ':')) {
		tool_err("cert csr: the CN '%s' contains ':'; Cumulocity "
			 "splits client ids at ':' and refuses it",
			 cn);
		return EB_EXIT_USAGE;
	}
	if (strlen(cn) > 23)
		fprintf(stderr,
			"edgebridge: warning: the CN has %zu characters; MQTT "
			"3.1 clients allow 23 for a client id\n",
			strlen(cn));
	if (key && (strstr(key, "pin-value") || strstr(key, "pin-source"))) {
		tool_err("cert csr: the key URI must not carry the PIN; it "
			 "comes from hsm.pin_file");
		return EB_EXIT_USAGE;
	}
	h = open_token(t, key, &rc);
	if (!h)
		return rc;
	rc = EB_EXIT_FAILURE;
	req = X509_REQ_new();
	name = X509_NAME_new();
	if (!req || !name ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0)) {
		X509_NAME_free(name);
		tool_err("cert csr: out of memory");
		goto out;
	}
	if (subject && add_subject(name, subject) < 0) {
		X509_NAME_free(name);
		tool_err("cert csr: --subject '%s' is not of the form "
			 "/O=Org/OU=Unit (CN goes in --cn)",
			 subject);
		rc = EB_EXIT_USAGE;
		goto out;
	}
	X509_REQ_set_version(req, 0);
	X509_REQ_set_subject_name(req, name);
	X509_NAME_free(name);
	if (!X509_REQ_set_pubkey(req, hsm_key(h)) ||
	    X509_REQ_sign(req, hsm_key(h), EVP_sha256()) <= 0 ||
	    X509_REQ_verify(req, hsm_key(h)) != 1) {
		char detail[512];

		hsm_openssl_errors(detail, sizeof(detail));
		tool_err("cert csr: the token could not sign the request: %s",
			 detail);
		goto out;
	}
	mem = BIO_new(BIO_s_mem());
	if (!mem || !PEM_write_bio_X509_REQ(mem, req)) {
		tool_err("cert csr: out of memory");
		goto out;
	}
	{
		size_t len;
		char *pem = bio_text(mem, &len);
		int r = 0;

		if (!pem) {
			tool_err("cert csr: out of memory");
			goto out;
		}
		if (!strcmp(out, "-"))
			fwrite(pem, 1, len, stdout);
		else
			r = eb_write_file(out, pem, len, 0644);
		free(pem);
		if (r < 0) {
			tool_err("cert csr: cannot write %s: %s", out,
				 strerror(-r));
			goto out;
		}
	}
	if (t->json) {
		printf("{\"csr\":");
		tool_json_str(stdout, out);
		printf(",\"cn\":");
		tool_json_str(stdout, cn);
		printf("}\n");
	} else if (strcmp(out, "-") && !t->quiet) {
		printf("%s: CSR for CN=%s signed by the token key\n", out, cn);
	}
	rc = EB_EXIT_OK;
out:
	BIO_free(mem);
	X509_REQ_free(req);
	hsm_close(h);
	return rc;
}

int cmd_cert_csr(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cn", required_argument, NULL, 'n' },
		{ "subject", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "out", required_argument, NULL, 'o' },
		{ 0 },
	};
	const char *cn = NULL, *subject = NULL, *key = NULL, *out = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			cn = optarg;
			break;
		case 's':
			subject = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		default:
			return EB_EXIT_USAGE;
		}
	}
	return make_csr(t, key, cn, subject, out);
}

/* Orders certs as leaf, its issuer, ... up to the self-signed root.
 * Returns how many made it into the chain. */
static int order_chain(X509 **in, int n, X509 *leaf, X509 **out)
{
	bool used[MAX_CHAIN] = { false };
	int k = 0;
	X509 *cur = leaf;

	for (int i = 0; i < n; i++)
		if (in[i] == leaf)
			used[i] = true;
	out[k++] = leaf;
	while (k < n && X509_check_issued(cur, cur) != X509_V_OK) {
		int next = -1;

		for (int i = 0; i < n && next < 0; i++)
			if (!used[i] &&
			    X509_check_issued(in[i], cur) == X509_V_OK)
				next = i;
		if (next < 0)
			break;
		used[next] = true;
		cur = out[k++] = in[next];
	}
	ERR_clear_error();
	return k;
}

int cmd_cert_install(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "on-token", no_argument, NULL, 'T' },
		{ 0 },
	};
	X509 *certs[MAX_CHAIN], *chain[MAX_CHAIN], *leaf = NULL;
	EVP_PKEY *key = NULL, *pending_key = NULL;
	struct eb_config *c;
	struct renewal rn;
	struct cc_params p;
	struct cc_report rep;
	struct hsm *h;
	size_t n = 0;
	bool on_token = false, pending = false;
	int k = 0, rc, opt;
	char target[4200], tmp[4300], prev[4300] = "";

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt != 'T')
			return EB_EXIT_USAGE;
		on_token = true;
	}
	if (optind != argc - 1) {
		tool_err("usage: edgebridge cert install CHAIN.pem "
			 "[--on-token]");
		return EB_EXIT_USAGE;
	}
	const char *file = argv[optind];
	c = tool_config(t);
	if (!c)
		return EB_EXIT_CONFIG;
	if (tool_read_certs(file, certs, MAX_CHAIN, &n) < 0) {
		tool_err("cert install: %s holds no PEM certificate", file);
		return EB_EXIT_FAILURE;
	}
	h = open_token(t, NULL, &rc);
	if (!h)
		goto free_certs;
	rc = EB_EXIT_FAILURE;
	key = hsm_key(h);
	for (size_t i = 0; i < n && !leaf; i++)
		if (EVP_PKEY_eq(X509_get0_pubkey(certs[i]), key) == 1)
			leaf = certs[i];
	/* not for the key in use: for the one a renewal waits with? */
	if (!leaf && renewal_read(c->gateway.state_dir, &rn) == 0) {
		struct eb_err err = { "" };

		pending_key = hsm_load_key(h, rn.key_uri, &err);
		for (size_t i = 0; pending_key && i < n && !leaf; i++)
			if (EVP_PKEY_eq(X509_get0_pubkey(certs[i]),
					pending_key) == 1)
				leaf = certs[i];
		if (leaf) {
			pending = true;
			key = pending_key;
		}
	}
	if (!leaf) {
		tool_err("cert install: no certificate in %s belongs to the "
			 "token key %s%s%s; it was issued for another key",
			 file, c->hsm.key,
			 pending_key ? " nor to the renewal's new key " : "",
			 pending_key ? rn.key_uri : "");
		goto out;
	}
	k = order_chain(certs, (int)n, leaf, chain);
	if ((size_t)k < n)
		fprintf(stderr,
			"edgebridge: warning: %zu certificate(s) in %s are not "
			"part of the device's chain and were left out\n",
			n - (size_t)k, file);
	if (pending)
		renewal_chain_path(c->gateway.state_dir, target,
				   sizeof(target));
	else
		eb_strlcpy(target, c->cloud.cert_file, sizeof(target));
	/* check the ordered chain with the daemon's own rules */
	snprintf(tmp, sizeof(tmp), "%s.new", target);
	{
		int r = tool_write_certs(tmp, chain, (size_t)k);

		if (r < 0) {
			tool_err("cert install: cannot write %s: %s", tmp,
				 strerror(-r));
			goto out;
		}
	}
	p = (struct cc_params){
		.cert_file = tmp,
		.key = key,
		.expect_cn = c->gateway.id,
		.now = time(NULL),
		.warn_seconds = (int64_t)(c->cloud.cert_warn_ms / 1000)
	};
	certcheck_run(&p, &rep);
	for (size_t i = 0; i < rep.n; i++)
		if (rep.r[i].status != CC_PASS)
			fprintf(stderr, "edgebridge: %s: %s\n",
				rep.r[i].status == CC_FAIL ? "error"
							   : "warning",
				rep.r[i].msg);
	if (rep.n_fail) {
		unlink(tmp);
		tool_err("cert install: not installed; %s unchanged", target);
		goto out;
	}
	/* keep the previous chain, then switch atomically */
	if (!pending) {
		snprintf(prev, sizeof(prev), "%s.prev", target);
		if (access(target, F_OK) == 0 && link(target, prev) < 0 &&
		    (errno != EEXIST || unlink(prev) < 0 ||
		     link(target, prev) < 0))
			fprintf(stderr,
				"edgebridge: warning: cannot keep the previous "
				"chain as %s: %s\n",
				prev, strerror(errno));
	}
	if (rename(tmp, target) < 0) {
		tool_err("cert install: cannot replace %s: %s", target,
			 strerror(errno));
		unlink(tmp);
		goto out;
	}
	if (pending) /* a new chain: the daemon tries it afresh */
		renewal_set_failed(c->gateway.state_dir, NULL);
	rc = EB_EXIT_OK;
out:
	EVP_PKEY_free(pending_key);
	hsm_close(h);
	/* the raw PKCS#11 session only once libp11's is closed */
	if (rc == EB_EXIT_OK && on_token) {
		rc = tool_store_leaf(t, pending ? rn.key_uri : c->hsm.key,
				     leaf);
		if (rc == EB_EXIT_OK && !t->quiet && !t->json)
			printf("stored the leaf certificate on the token "
			       "beside its key\n");
	}
	if (rc == EB_EXIT_OK && t->json) {
		printf("{\"installed\":");
		tool_json_str(stdout, target);
		printf(",\"certificates\":%d,\"renewal\":%s,\"previous\":", k,
		       pending ? "true" : "false");
		if (prev[0])
			tool_json_str(stdout, prev);
		else
			fputs("null", stdout);
		printf(",\"on_token\":%s}\n", on_token ? "true" : "false");
	} else if (rc == EB_EXIT_OK && !t->quiet && pending) {
		printf("installed %s (%d certificates, leaf first) for the "
		       "renewal with key %s\n"
		       "edgebridged switches to it after a successful test "
		       "connection (within a minute; at once on reload); "
		       "until then the current certificate stays in use\n",
		       target, k, rn.key_uri);
	} else if (rc == EB_EXIT_OK && !t->quiet) {
		printf("installed %s (%d certificates, leaf first); previous "
		       "chain kept as %s\n",
		       target, k, prev);
		printf("restart edgebridged to use it\n");
	}
free_certs:
	for (size_t i = 0; i < n; i++)
		X509_free(certs[i]);
	return rc;
}

/* The current certificate's subject without its CN ("/O=Acme/OU=Boilers"),
 * so a renewal asks the CA for the same name. */
static void subject_of(const char *cert_file, char *buf, size_t len)
{
	X509 *cert[1];
	size_t n = 0;
	X509_NAME *name;

	buf[0] = '\0';
	if (tool_read_certs(cert_file, cert, 1, &n) < 0 || !n)
		return;
	name = X509_NAME_dup(X509_get_subject_name(cert[0]));
	for (int i; name && (i = X509_NAME_get_index_by_NID(
				     name, NID_commonName, -1)) >= 0;)
		X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
	if (name && X509_NAME_entry_count(name) > 0)
		X509_NAME_oneline(name, buf, (int)len);
	X509_NAME_free(name);
	X509_free(cert[0]);
}

static int renew_status(struct tool *t, struct eb_config *c)
{
	struct renewal rn;
	int r = renewal_read(c->gateway.state_dir, &rn);
	const char *state = r == -ENOENT   ? "none"
			    : r < 0	   ? "unreadable"
			    : rn.failed[0] ? "failed"
			    : rn.has_chain ? "installed"
					   : "waiting-for-certificate";

	if (t->json) {
		printf("{\"state\":\"%s\",\"key\":", state);
		if (r == 0)
			tool_json_str(stdout, rn.key_uri);
		else
			fputs("null", stdout);
		printf(",\"reason\":");
		if (r == 0 && rn.failed[0])
			tool_json_str(stdout, rn.failed);
		else
			fputs("null", stdout);
		printf("}\n");
	} else if (r == -ENOENT) {
		printf("no renewal pending; in use: %s with %s\n",
		       c->cloud.cert_file, c->hsm.key);
	} else if (r < 0) {
		tool_err("cannot read %s/renewal: %s", c->gateway.state_dir,
			 strerror(-r));
		return EB_EXIT_FAILURE;
	} else {
		printf("renewal with key %s: ", rn.key_uri);
		if (rn.failed[0])
			printf("the daemon's test connection failed: %s\n"
			       "(retried hourly, or at once after another cert "
			       "install)\n",
			       rn.failed);
		else if (rn.has_chain)
			printf("certificate installed; edgebridged switches "
			       "after a successful test connection\n");
		else
			printf("waiting for its certificate (edgebridge cert "
			       "install CHAIN.pem)\n");
	}
	return EB_EXIT_OK;
}

int cmd_cert_renew(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "label", required_argument, NULL, 'l' },
		{ "cn", required_argument, NULL, 'n' },
		{ "subject", required_argument, NULL, 's' },
		{ "out", required_argument, NULL, 'o' },
		{ "status", no_argument, NULL, 'S' },
		{ "cancel", no_argument, NULL, 'C' },
		{ 0 },
	};
	const char *type = NULL, *label = NULL, *cn = NULL, *subject = NULL;
	const char *out = NULL;
	bool status = false, cancel = false;
	char uri[1024], subj[512];
	struct eb_config *c;
	struct renewal rn;
	int opt, rc, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			type = optarg;
			break;
		case 'l':
			label = optarg;
			break;
		case 'n':
			cn = optarg;
			break;
		case 's':
			subject = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'S':
			status = true;
			break;
		case 'C':
			cancel = true;
			break;
		default:
			return EB_EXIT_USAGE;
		}
	}
	if (optind < argc || (!status && !cancel && !out)) {
		tool_err("usage: edgebridge cert renew -o CSR [--type T] "
			 "[--label L] [--cn ID] [--subject /O=...] | --status "
			 "| --cancel");
		return EB_EXIT_USAGE;
	}
	c = tool_config(t);
	if (!c)
		return EB_EXIT_CONFIG;
	if (status)
		return renew_status(t, c);
	r = renewal_read(c->gateway.state_dir, &rn);
	if (cancel) {
		if (r == 0 && (r = renewal_cancel(c->gateway.state_dir)) < 0) {
			tool_err("cannot remove %s/renewal: %s",
				 c->gateway.state_dir, strerror(-r));
			return EB_EXIT_FAILURE;
		}
		if (!t->quiet)
			printf("%s\n", r == -ENOENT ? "no renewal was pending"
						    : "renewal cancelled; its "
						      "key stays on the token");
		return EB_EXIT_OK;
	}
	if (r != -ENOENT) {
		tool_err("cert renew: a renewal with key %s is pending "
			 "(edgebridge cert renew --status); finish it with "
			 "cert install, or cert renew --cancel first",
			 r == 0 ? rn.key_uri : "(unreadable)");
		return EB_EXIT_FAILURE;
	}
	if (!subject) {
		subject_of(c->cloud.cert_file, subj, sizeof(subj));
		subject = subj[0] ? subj : NULL;
	}
	rc = tool_renew_key(t, type, label, uri, sizeof(uri));
	if (rc)
		return rc;
	{
		bool json = t->json, quiet = t->quiet;

		t->json = false, t->quiet = true; /* one report, below */
		rc = make_csr(t, uri, cn, subject, out);
		t->json = json, t->quiet = quiet;
	}
	if (rc) {
		tool_err("cert renew: the new key %s stays on the token "
			 "unused; no renewal was recorded",
			 uri);
		return rc;
	}
	r = renewal_start(c->gateway.state_dir, uri);
	if (r < 0) {
		tool_err("cert renew: cannot record the renewal in %s: %s",
			 c->gateway.state_dir, strerror(-r));
		return EB_EXIT_FAILURE;
	}
	if (t->json) {
		printf("{\"key\":");
		tool_json_str(stdout, uri);
		printf(",\"csr\":");
		tool_json_str(stdout, out);
		printf("}\n");
	} else if (!t->quiet)
		printf("new key %s generated on the token; have %s signed by "
		       "your CA, then: edgebridge cert install CHAIN.pem\n"
		       "the current key and certificate stay in use until "
		       "edgebridged has connected with the new ones\n",
		       uri, out);
	return EB_EXIT_OK;
}

int cmd_cert_export(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ca", required_argument, NULL, 'a' },
		{ "p12", required_argument, NULL, 'p' },
		{ "pass-file", required_argument, NULL, 'P' },
		{ "chain", required_argument, NULL, 'c' },
		{ 0 },
	};
	const char *ca_out = NULL, *p12_out = NULL, *pass_file = NULL;
	const char *chain_file = NULL;
	X509 *certs[MAX_CHAIN];
	size_t n = 0;
	int c, rc = EB_EXIT_FAILURE;
	char pass[256] = "";

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			ca_out = optarg;
			break;
		case 'p':
			p12_out = optarg;
			break;
		case 'P':
			pass_file = optarg;
			break;
		case 'c':
			chain_file = optarg;
			break;
		default:
			return EB_EXIT_USAGE;
		}
	}
	if (!ca_out && !p12_out) {
		tool_err("cert export: give --ca FILE and/or --p12 FILE");
		return EB_EXIT_USAGE;
	}
	if (!chain_file) {
		if (!tool_config(t))
			return EB_EXIT_CONFIG;
		chain_file = t->cfg->cloud.cert_file;
	}
	if (tool_read_certs(chain_file, certs, MAX_CHAIN, &n) < 0) {
		tool_err("cert export: %s holds no PEM certificate",
			 chain_file);
		return EB_EXIT_FAILURE;
	}
	if (ca_out) {
		/* the CA side of the chain: what the cloud's trust store
		 * (Cumulocity trusted certificates, ThingsBoard device
		 * profile) takes */
		int r;

		if (n < 2) {
			tool_err("cert export: %s has no CA certificates after "
				 "the device certificate",
				 chain_file);
			goto out;
		}
		r = tool_write_certs(ca_out, certs + 1, n - 1);
		if (r < 0) {
			tool_err("cert export: cannot write %s: %s", ca_out,
				 strerror(-r));
			goto out;
		}
	}
	if (p12_out) {
		STACK_OF(X509) *cas = sk_X509_new_null();
		PKCS12 *p12;
		BIO *f;

		if (pass_file && tool_read_secret(pass_file, "password", pass,
						  sizeof(pass)) < 0) {
			tool_err("cert export: cannot read %s", pass_file);
			sk_X509_free(cas);
			goto out;
		}
		for (size_t i = 1; cas && i < n; i++)
			sk_X509_push(cas, certs[i]);
		/* no private key: it never leaves the token */
		p12 = PKCS12_create(pass, "edgebridge device", NULL, certs[0],
				    cas, 0, 0, 0, 0, 0);
		sk_X509_free(cas);
		f = p12 ? BIO_new_file(p12_out, "wb") : NULL;
		if (!f || i2d_PKCS12_bio(f, p12) != 1) {
			char detail[512];

			hsm_openssl_errors(detail, sizeof(detail));
			tool_err("cert export: cannot write %s: %s", p12_out,
				 detail);
			BIO_free(f);
			PKCS12_free(p12);
			goto out;
		}
		BIO_free(f);
		PKCS12_free(p12);
	}
	if (t->json) {
		printf("{\"ca\":");
		tool_json_str(stdout, ca_out ? ca_out : "");
		printf(",\"p12\":");
		tool_json_str(stdout, p12_out ? p12_out : "");
		printf("}\n");
	} else if (!t->quiet) {
		if (ca_out)
			printf("%s: %zu CA certificate(s)\n", ca_out, n - 1);
		if (p12_out)
			printf("%s: PKCS#12 with %zu certificate(s), no "
			       "private "
			       "key\n",
			       p12_out, n);
	}
	rc = EB_EXIT_OK;
out:
	OPENSSL_cleanse(pass, sizeof(pass));
	for (size_t i = 0; i < n; i++)
		X509_free(certs[i]);
	return rc;
}
