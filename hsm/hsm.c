/* SPDX-License-Identifier: MIT */
/*
 * Why an ENGINE and our own SSL_CTX: libmosquitto 2.0 fopen()s whatever it
 * is given as a key file, so a pkcs11: URI cannot pass through it.  We load
 * the key through libp11's engine once and build the context ourselves;
 * libmosquitto and (later) libcurl both take it from here, so the token is
 * logged in to exactly once per process.
 *
 * The PIN: read into a locked buffer, handed to the engine, and cleansed
 * right after the key is loaded.  libp11 keeps its own copy inside the
 * engine and slot (it needs it to log in again after a fork); nothing in
 * this process writes it anywhere else.
 */
/* The ENGINE API is deprecated in OpenSSL 3, but libp11's engine is what
 * bookworm ships for PKCS#11 (and what libcurl 7.88 and libcoap 4.3 take),
 * so hsm/ -- and only hsm/ -- uses it. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <fcntl.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm.h"

#define PIN_MAX 256

/* PKCS#11 return values libp11 passes through as error reasons. */
#define CKR_PIN_INCORRECT 0xA0
#define CKR_PIN_LEN_RANGE 0xA2
#define CKR_PIN_EXPIRED 0xA3
#define CKR_PIN_LOCKED 0xA4

struct hsm {
	ENGINE *engine;
	EVP_PKEY *key;
};

struct verify_state {
	char reason[256];
};

static int ex_index = -1;

void hsm_openssl_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%s",
						 used ? "; " : "", one);
	}
}

/*
 * libp11 reports the PKCS#11 CK_RV as the reason code of its errors.  Drain
 * the queue into one line and say whether it holds a PIN failure, which
 * must never lead to another login attempt.
 */
static bool drain_errors(char *detail, size_t len)
{
	unsigned long e;
	size_t used = 0;
	bool pin = false;

	detail[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		int reason = ERR_GET_REASON(e);

		ERR_error_string_n(e, one, sizeof(one));
		if (used < len)
			used += (size_t)snprintf(detail + used, len - used,
						 "%s%s", used ? "; " : "", one);
		if (ERR_GET_LIB(e) >= ERR_LIB_USER &&
		    (reason == CKR_PIN_INCORRECT || reason == CKR_PIN_LOCKED ||
		     reason == CKR_PIN_LEN_RANGE || reason == CKR_PIN_EXPIRED))
			pin = true;
	}
	return pin || strstr(detail, "PIN incorrect") ||
	       strstr(detail, "PIN locked");
}

int hsm_read_pin(const char *path, char *pin, size_t size, struct eb_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;
	size_t len;

	if (fd < 0)
		return eb_errf(err, -errno, "cannot open PIN file %s: %s", path,
			       strerror(errno));
	n = read(fd, pin, size - 1);
	if (n < 0)
		return eb_errf(err, -errno, "cannot read PIN file %s: %s", path,
			       strerror(errno));
	len = (size_t)n;
	if (len == size - 1)
		return eb_errf(err, -E2BIG, "PIN file %s is too long", path);
	pin[len] = '\0';
	if (len && pin[len - 1] == '\n')
		pin[--len] = '\0';
	if (len && pin[len - 1] == '\r')
		pin[--len] = '\0';
	if (!len)
		return eb_errf(err, -EINVAL, "PIN file %s is empty", path);
	return 0;
}

struct hsm *hsm_open(const char *module, const char *pin_file,
		     const char *key_uri, enum hsm_fail *fail,
		     struct eb_err *err)
{
	char pin[PIN_MAX] = "";
	char detail[1024];
	struct hsm *h;
	int r;

	*fail = HSM_FAIL_OTHER;
	h = calloc(1, sizeof(*h));
	if (!h) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	/* Keep the PIN out of swap and core dumps. */
	mlock(pin, sizeof(pin));
	r = hsm_read_pin(pin_file, pin, sizeof(pin), err);
	if (r < 0)
		goto fail;

	ENGINE_load_builtin_engines();
	h->engine = ENGINE_by_id("pkcs11");
	if (!h->engine) {
		hsm_openssl_errors(detail, sizeof(detail));
		*fail = HSM_FAIL_UNAVAILABLE;
		eb_errf(err, -ENOENT,
			"the OpenSSL pkcs11 engine is not installed "
			"(apt-get install libengine-pkcs11-openssl)");
		goto fail;
	}
	/* QUIET: libp11 would print its own lines (with the whole URI) to
	 * stderr; our error says the same with context, in the log format. */
	ENGINE_ctrl_cmd_string(h->engine, "QUIET", NULL, 0);
	if (!ENGINE_ctrl_cmd_string(h->engine, "MODULE_PATH", module, 0) ||
	    !ENGINE_ctrl_cmd_string(h->engine, "PIN", pin, 0)) {
		hsm_openssl_errors(detail, sizeof(detail));
		eb_errf(err, -EINVAL, "cannot configure the pkcs11 engine: %s",
			detail);
		goto fail;
	}
	OPENSSL_cleanse(pin, sizeof(pin));
	if (!ENGINE_init(h->engine)) {
		hsm_openssl_errors(detail, sizeof(detail));
		*fail = HSM_FAIL_UNAVAILABLE;
		eb_errf(err, -ENODEV, "cannot initialise PKCS#11 module %s: %s",
			module, detail);
		ENGINE_free(h->engine);
		h->engine = NULL;
		goto fail;
	}
	/* The one login: libp11 logs in while looking up the private key. */
	h->key = ENGINE_load_private_key(h->engine, key_uri, NULL, NULL);
	if (!h->key) {
		if (drain_errors(detail, sizeof(detail))) {
			*fail = HSM_FAIL_PIN;
			eb_errf(err, -EACCES,
				"token login failed: PIN incorrect or locked "
				"(not retried: a token locks after a few "
				"attempts); fix the PIN file %s",
				pin_file);
			goto fail;
		}
		*fail = HSM_FAIL_KEY;
		eb_errf(err, -ENOKEY,
			"private key %s not found on the token or not "
			"usable%s%s",
			key_uri, detail[0] ? ": " : "", detail);
		goto fail;
	}
	*fail = HSM_FAIL_NONE;
	return h;
fail:
	OPENSSL_cleanse(pin, sizeof(pin));
	munlock(pin, sizeof(pin));
	return hsm_close(h);
}

struct hsm *hsm_close(struct hsm *h)
{
	if (!h)
		return NULL;
	EVP_PKEY_free(h->key);
	if (h->engine) {
		ENGINE_finish(h->engine);
		ENGINE_free(h->engine);
	}
	free(h);
	return NULL;
}

EVP_PKEY *hsm_key(struct hsm *h)
{
	return h->key;
}

/* The engine is logged in already (libp11 keeps the session), so this
 * makes no new login attempt for a key on the same token. */
EVP_PKEY *hsm_load_key(struct hsm *h, const char *key_uri, struct eb_err *err)
{
	char detail[1024];
	EVP_PKEY *key = ENGINE_load_private_key(h->engine, key_uri, NULL, NULL);

	if (!key) {
		hsm_openssl_errors(detail, sizeof(detail));
		eb_errf(err, -ENOKEY,
			"private key %s not found on the token or not "
			"usable%s%s",
			key_uri, detail[0] ? ": " : "", detail);
	}
	return key;
}

void hsm_set_key(struct hsm *h, EVP_PKEY *key)
{
	EVP_PKEY_free(h->key);
	h->key = key;
}

void *hsm_engine(struct hsm *h)
{
	return h->engine;
}

static void free_verify_state(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
			      int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

/* Records why verification failed; the library's own decision stands. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(
		store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct verify_state *vs;
	char subject[256] = "";
	X509 *cert;

	if (ok || !ssl)
		return ok;
	vs = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
	if (!vs || vs->reason[0])
		return ok; /* keep the first, most specific reason */
	cert = X509_STORE_CTX_get_current_cert(store);
	if (cert)
		X509_NAME_oneline(X509_get_subject_name(cert), subject,
				  sizeof(subject));
	snprintf(vs->reason, sizeof(vs->reason), "%s (depth %d, %s)",
		 X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)),
		 X509_STORE_CTX_get_error_depth(store), subject);
	return ok;
}

void hsm_tls_take_verify_error(SSL_CTX *ctx, char *buf, size_t len)
{
	struct verify_state *vs =
		ex_index >= 0 ? SSL_CTX_get_ex_data(ctx, ex_index) : NULL;

	if (!vs) {
		if (len)
			buf[0] = '\0';
		return;
	}
	eb_strlcpy(buf, vs->reason, len);
	vs->reason[0] = '\0';
}

static bool is_ip_address(const char *host)
{
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);

	ASN1_OCTET_STRING_free(ip);
	return ip != NULL;
}

SSL_CTX *hsm_tls_ctx(struct hsm *h, const char *cert_file, const char *ca_file,
		     const char *host, struct eb_err *err)
{
	return hsm_tls_ctx_key(h->key, cert_file, ca_file, host, err);
}

SSL_CTX *hsm_tls_ctx_key(EVP_PKEY *key, const char *cert_file,
			 const char *ca_file, const char *host,
			 struct eb_err *err)
{
	char detail[1024];
	X509_VERIFY_PARAM *param;
	struct verify_state *vs;
	SSL_CTX *ctx;

	if (ex_index < 0)
		ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
						    free_verify_state);
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		eb_errf(err, -ENOMEM, "cannot create a TLS context");
		return NULL;
	}
	vs = calloc(1, sizeof(*vs));
	if (!vs || !SSL_CTX_set_ex_data(ctx, ex_index, vs)) {
		free(vs);
		eb_errf(err, -ENOMEM, "out of memory");
		goto fail;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		hsm_openssl_errors(detail, sizeof(detail));
		eb_errf(err, -EINVAL, "cannot load certificate chain %s: %s",
			cert_file, detail);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
		hsm_openssl_errors(detail, sizeof(detail));
		eb_errf(err, -EINVAL,
			"the token key does not match the certificate in %s: "
			"%s",
			cert_file, detail);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		hsm_openssl_errors(detail, sizeof(detail));
		eb_errf(err, -EINVAL, "cannot load CA file %s: %s", ca_file,
			detail);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	/* With our own context libmosquitto checks no names: we must. */
	param = SSL_CTX_get0_param(ctx);
	if (is_ip_address(host)) {
		if (!X509_VERIFY_PARAM_set1_ip_asc(param, host))
			goto bad_host;
	} else {
		X509_VERIFY_PARAM_set_hostflags(
			param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (!X509_VERIFY_PARAM_set1_host(param, host, 0))
			goto bad_host;
	}
	return ctx;
bad_host:
	eb_errf(err, -EINVAL, "cannot set '%s' as the name to verify", host);
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* What a TLS alert from the server means for the person fixing it. */
const char *hsm_tls_alert_hint(const char *reason)
{
	static const struct {
		const char *alert, *hint;
	} hints[] = {
		{ "alert unknown ca",
		  "the server does not trust the CA of the device certificate: "
		  "register that CA with the cloud" },
		{ "alert certificate expired",
		  "the server says the device certificate has expired" },
		{ "alert bad certificate",
		  "the server rejected the device certificate" },
		{ "alert certificate unknown",
		  "the server rejected the device certificate" },
		{ "alert handshake failure",
		  "no common TLS parameters with the server" },
	};

	for (size_t i = 0; i < EB_ARRAY_SIZE(hints); i++)
		if (strstr(reason, hints[i].alert))
			return hints[i].hint;
	return NULL;
}
