/* SPDX-License-Identifier: MIT */
/*
 * hsm/: the only code that knows PKCS#11, libp11 and OpenSSL ENGINEs.
 *
 * It loads the "pkcs11" engine with an explicit MODULE_PATH (never the
 * p11-kit proxy), logs in once with the PIN from a file, loads the private
 * key by RFC 7512 URI, and hands cloud/ a ready SSL_CTX.  The key never
 * leaves the token: OpenSSL signs through the engine.
 */
#ifndef EB_HSM_H
#define EB_HSM_H

#include <openssl/ssl.h>

#include "../common/util.h"

struct hsm;

/* Error classes, so the daemon can pick its exit code. */
enum hsm_fail {
	HSM_FAIL_NONE,
	HSM_FAIL_PIN,	      /* CKR_PIN_INCORRECT / _LOCKED: never retry */
	HSM_FAIL_UNAVAILABLE, /* engine, module or token missing */
	HSM_FAIL_KEY,	      /* key not found or unusable */
	HSM_FAIL_OTHER,
};

/*
 * Reads the PIN from pin_file (one trailing newline stripped), loads the
 * engine and the key, and wipes every copy of the PIN this code holds.
 * Exactly one login attempt is made.  On failure returns NULL with *fail
 * and err set.
 */
struct hsm *hsm_open(const char *module, const char *pin_file,
		     const char *key_uri, enum hsm_fail *fail,
		     struct eb_err *err);
struct hsm *hsm_close(struct hsm *h);

/*
 * The PIN from pin_file into pin (size bytes, NUL-terminated, one trailing
 * newline stripped).  The caller keeps it locked and cleanses it.
 */
int hsm_read_pin(const char *path, char *pin, size_t size, struct eb_err *err);

/* The token key (owned by h). */
EVP_PKEY *hsm_key(struct hsm *h);

/*
 * Another key on the same token (a renewal's new key), without a new
 * login.  The caller owns it; NULL with err set if it cannot be loaded.
 */
EVP_PKEY *hsm_load_key(struct hsm *h, const char *key_uri, struct eb_err *err);
/* Makes key (taken over) the one hsm_key() returns; the old one is freed. */
void hsm_set_key(struct hsm *h, EVP_PKEY *key);
/* The engine (owned by h), for libcurl's CURLOPT_SSLENGINE and friends. */
void *hsm_engine(struct hsm *h);

/*
 * A TLS client context: TLS >= 1.2, certificate chain from cert_file, the
 * token key, peers verified against ca_file with the host name (or IP
 * address) checked.  The caller owns the returned reference.
 */
SSL_CTX *hsm_tls_ctx(struct hsm *h, const char *cert_file, const char *ca_file,
		     const char *host, struct eb_err *err);

/* The same with another token key (from hsm_load_key()). */
SSL_CTX *hsm_tls_ctx_key(EVP_PKEY *key, const char *cert_file,
			 const char *ca_file, const char *host,
			 struct eb_err *err);
/*
 * The reason the last handshake on a context from hsm_tls_ctx() failed
 * certificate verification ("hostname mismatch", "unable to get local
 * issuer certificate", ...), or "" if it did not.  Clears it.
 */
void hsm_tls_take_verify_error(SSL_CTX *ctx, char *buf, size_t len);

/*
 * What a TLS/DTLS alert named in reason ("... alert unknown ca") means for
 * the person fixing it, or NULL.
 */
const char *hsm_tls_alert_hint(const char *reason);

/* Collects the OpenSSL error queue into one line (and clears it). */
void hsm_openssl_errors(char *buf, size_t len);

#endif
