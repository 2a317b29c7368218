/* SPDX-License-Identifier: MIT */
/*
 * Why it is built this way:
 *
 * - libcoap 4.3.1 takes a PKCS#11 key only as COAP_PKI_KEY_PKCS11, where
 *   every item that is not a pkcs11: URI must be a DER file.  Our
 *   certificates are PEM files (a chain), so the leaf and the first CA are
 *   converted once, into memfd files named by /proc/self/fd/N: nothing is
 *   written to disk and nothing goes stale.
 * - libcoap looks the engine up with ENGINE_by_id("pkcs11").  OpenSSL
 *   lists a dynamically loaded engine under its id, so that finds the very
 *   engine hsm_open() configured (our module, never the p11-kit proxy) and
 *   logged in with; hsm_coap_new() checks it, because a second instance
 *   would load libp11's default module and log in again.
 * - The PIN: libcoap hands user_pin to the engine on every new session
 *   when it is set, so it is set for the first session only, then wiped
 *   here; the engine keeps its own copy (as after hsm_open()).  libcoap
 *   names the PIN in one warning ("Unable to set pin"): coap.c drops that
 *   line from its log.
 * - A DER file holds one certificate: the intermediates are added to each
 *   session's SSL object, the further CAs to the store libcoap verifies
 *   with, and the server name to check, before the server's first flight
 *   can arrive (libcoap only sent the ClientHello yet).
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>

#include "hsm_coap.h"

#define PIN_MAX 256

struct hsm_coap {
	char *key_uri;
	char *host;
	bool host_is_ip;
	int cert_fd, ca_fd;
	char cert_path[40], ca_path[40];
	STACK_OF(X509) * chain; /* after the leaf in cert_file */
	STACK_OF(X509) * cas;	/* all of ca_file */
	char pin[PIN_MAX];
	bool have_pin;
};

static STACK_OF(X509) * read_pem_certs(const char *path, struct eb_err *err)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *in = BIO_new_file(path, "r");
	X509 *x;

	if (!sk || !in) {
		eb_errf(err, -errno ? -errno : -ENOMEM, "cannot read %s: %s",
			path, strerror(errno ? errno : ENOMEM));
		goto fail;
	}
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)))
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			eb_errf(err, -ENOMEM, "out of memory");
			goto fail;
		}
	ERR_clear_error(); /* the end of the file */
	BIO_free(in);
	if (sk_X509_num(sk) == 0) {
		eb_errf(err, -EINVAL, "%s holds no PEM certificate", path);
		sk_X509_free(sk);
		return NULL;
	}
	return sk;
fail:
	BIO_free(in);
	sk_X509_pop_free(sk, X509_free);
	return NULL;
}

/* One certificate as DER in a memory file; its /proc path in path. */
static int der_file(X509 *x, const char *name, char *path, size_t len,
		    struct eb_err *err)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	int fd;

	if (n <= 0)
		return eb_errf(err, -EINVAL, "cannot encode %s as DER", name);
	fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || write(fd, der, (size_t)n) != n) {
		int e = errno;

		OPENSSL_free(der);
		if (fd >= 0)
			close(fd);
		return eb_errf(err, -e, "cannot write %s to memory: %s", name,
			       strerror(e));
	}
	OPENSSL_free(der);
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

static bool is_ip_address(const char *host)
{
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);

	ASN1_OCTET_STRING_free(ip);
	return ip != NULL;
}

struct hsm_coap *hsm_coap_new(struct hsm *h, const char *cert_file,
			      const char *ca_file, const char *key_uri,
			      const char *pin_file, const char *host,
			      struct eb_err *err)
{
	struct hsm_coap *p = calloc(1, sizeof(*p));
	ENGINE *e;
	int r;

	if (!p) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	p->cert_fd = p->ca_fd = -1;
	mlock(p->pin, sizeof(p->pin));
	e = ENGINE_by_id("pkcs11");
	if (e)
		ENGINE_free(e); /* only compared */
	if (!e || e != hsm_engine(h)) {
		ERR_clear_error();
		eb_errf(err, -ENODEV,
			"the pkcs11 engine libcoap would use is not the one "
			"the token was opened with");
		return hsm_coap_free(p);
	}
	p->key_uri = strdup(key_uri);
	p->host = strdup(host);
	if (!p->key_uri || !p->host) {
		eb_errf(err, -ENOMEM, "out of memory");
		return hsm_coap_free(p);
	}
	p->host_is_ip = is_ip_address(host);
	p->chain = read_pem_certs(cert_file, err);
	if (!p->chain)
		return hsm_coap_free(p);
	p->cas = read_pem_certs(ca_file, err);
	if (!p->cas)
		return hsm_coap_free(p);
	p->cert_fd = der_file(sk_X509_value(p->chain, 0), "device-cert.der",
			      p->cert_path, sizeof(p->cert_path), err);
	if (p->cert_fd < 0)
		return hsm_coap_free(p);
	X509_free(sk_X509_shift(p->chain)); /* the leaf: in the DER file */
	p->ca_fd = der_file(sk_X509_value(p->cas, 0), "cloud-ca.der",
			    p->ca_path, sizeof(p->ca_path), err);
	if (p->ca_fd < 0)
		return hsm_coap_free(p);
	r = hsm_read_pin(pin_file, p->pin, sizeof(p->pin), err);
	if (r < 0)
		return hsm_coap_free(p);
	p->have_pin = true;
	return p;
}

struct hsm_coap *hsm_coap_free(struct hsm_coap *p)
{
	if (!p)
		return NULL;
	hsm_coap_forget_pin(p);
	munlock(p->pin, sizeof(p->pin));
	if (p->cert_fd >= 0)
		close(p->cert_fd);
	if (p->ca_fd >= 0)
		close(p->ca_fd);
	sk_X509_pop_free(p->chain, X509_free);
	sk_X509_pop_free(p->cas, X509_free);
	free(p->key_uri);
	free(p->host);
	free(p);
	return NULL;
}

void hsm_coap_setup(struct hsm_coap *p, coap_dtls_pki_t *s)
{
	memset(s, 0, sizeof(*s));
	s->version = COAP_DTLS_PKI_SETUP_VERSION;
	s->verify_peer_cert = 1;
	s->check_common_ca = 1;
	s->cert_chain_validation = 1;
	s->cert_chain_verify_depth = 4;
	/* SNI carries names only (RFC 6066) */
	s->client_sni = p->host_is_ip ? NULL : p->host;
	s->pki_key.key_type = COAP_PKI_KEY_PKCS11;
	s->pki_key.key.pkcs11.private_key = p->key_uri;
	s->pki_key.key.pkcs11.public_cert = p->cert_path;
	s->pki_key.key.pkcs11.ca = p->ca_path;
	s->pki_key.key.pkcs11.user_pin = p->have_pin ? p->pin : NULL;
}

int hsm_coap_session(struct hsm_coap *p, void *ssl_)
{
	SSL *ssl = ssl_;
	X509_STORE *store;
	X509_VERIFY_PARAM *param;

	if (!ssl)
		return -EINVAL;
	for (int i = 0; i < sk_X509_num(p->chain); i++)
		if (!SSL_add1_chain_cert(ssl, sk_X509_value(p->chain, i)))
			return -ENOMEM;
	store = SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl));
	for (int i = 1; i < sk_X509_num(p->cas); i++)
		X509_STORE_add_cert(store, sk_X509_value(p->cas, i));
	ERR_clear_error(); /* "cert already in hash table" */
	param = SSL_get0_param(ssl);
	if (p->host_is_ip)
		return X509_VERIFY_PARAM_set1_ip_asc(param, p->host) ? 0
								     : -EINVAL;
	X509_VERIFY_PARAM_set_hostflags(param,
					X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return X509_VERIFY_PARAM_set1_host(param, p->host, 0) ? 0 : -EINVAL;
}

void hsm_coap_forget_pin(struct hsm_coap *p)
{
	OPENSSL_cleanse(p->pin, sizeof(p->pin));
	p->have_pin = false;
}
