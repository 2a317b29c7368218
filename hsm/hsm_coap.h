/* SPDX-License-Identifier: MIT */
/*
 * The device identity for CoAP over DTLS (libcoap 4.3, OpenSSL flavour):
 * libcoap's COAP_PKI_KEY_PKCS11 with the key by its PKCS#11 URI, the
 * certificate and the CA as DER, and the PIN from the PIN file.
 *
 * libcoap loads a DER certificate file as one certificate, so the
 * intermediates of cloud.cert_file and the further CAs of cloud.ca_file
 * are put on each new session's SSL object by hsm_coap_session(), together
 * with the server name to verify (libcoap checks none by itself).
 */
#ifndef EB_HSM_COAP_H
#define EB_HSM_COAP_H

#include <coap3/coap.h>

#include "../common/util.h"
#include "hsm.h"

struct hsm_coap;

/*
 * Reads the certificate chain and the CA file, writes the leaf and the
 * first CA as DER to memory files, and reads the PIN into locked memory
 * (until hsm_coap_forget_pin()).  h must be open: its engine, registered
 * under the id "pkcs11", is the one libcoap finds, so libcoap uses the
 * configured module and the existing login.
 */
struct hsm_coap *hsm_coap_new(struct hsm *h, const char *cert_file,
			      const char *ca_file, const char *key_uri,
			      const char *pin_file, const char *host,
			      struct eb_err *err);
struct hsm_coap *hsm_coap_free(struct hsm_coap *p);

/* libcoap's client setup; it points into p (valid while p lives). */
void hsm_coap_setup(struct hsm_coap *p, coap_dtls_pki_t *setup);
/*
 * For a session just made from that setup (ssl: coap_session_get_tls()):
 * sends the intermediates with the leaf, trusts every CA of the CA file
 * and verifies the server's name.  0 or -errno.
 */
int hsm_coap_session(struct hsm_coap *p, void *ssl);
/* Wipes the PIN: libcoap's engine holds it once the first session ran. */
void hsm_coap_forget_pin(struct hsm_coap *p);

#endif
