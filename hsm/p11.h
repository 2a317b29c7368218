/* SPDX-License-Identifier: MIT */
/*
 * The raw PKCS#11 layer, for what libp11 0.4.12 cannot do: list every slot,
 * initialise a token, generate EC keys on it.  It dlopen()s the configured
 * module itself (never the p11-kit proxy) and talks to it through
 * C_GetFunctionList; nothing outside hsm/ sees a CK_ type.
 *
 * Every function returns >= 0 or -errno and fills err with what to do.
 * A PIN failure (incorrect, locked, expired) is always -EACCES and nothing
 * here ever retries a login.  PINs are only borrowed: this layer keeps no
 * copy; the caller cleanses its buffers.
 */
#ifndef EB_P11_H
#define EB_P11_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/util.h"

struct p11;

/* Longest label, serial, ... plus the terminating NUL. */
#define P11_LABEL_MAX 33
#define P11_DESC_MAX 65
#define P11_ID_MAX 64

struct p11_token_info {
	unsigned long slot;
	char description[P11_DESC_MAX]; /* of the slot, blanks trimmed */
	bool present;			/* a token is in the slot */
	/* the rest only when present */
	char label[P11_LABEL_MAX];
	char manufacturer[P11_LABEL_MAX];
	char model[17];
	char serial[17];
	bool initialized;
	bool user_pin_initialized;
	bool login_required;
	bool user_pin_count_low;
	bool user_pin_final_try;
	bool user_pin_locked;
	bool user_pin_to_be_changed;
	bool so_pin_count_low;
	bool so_pin_final_try;
	bool so_pin_locked;
	unsigned long min_pin_len, max_pin_len;
};

enum p11_key_kind {
	P11_KEY_EC,
	P11_KEY_RSA,
	P11_KEY_OTHER,
};

/* What to generate: EC with a NIST curve of `bits` (256, 384, 521) or RSA
 * with a modulus of `bits` (>= 2048). */
struct p11_key_spec {
	enum p11_key_kind kind;
	unsigned bits;
};

struct p11_key_info {
	char label[P11_LABEL_MAX * 4]; /* CKA_LABEL may be longer than 32 */
	unsigned char id[P11_ID_MAX];
	size_t id_len;
	enum p11_key_kind kind;
	unsigned bits;	/* RSA modulus / EC field size; 0 if unknown */
	char curve[32]; /* "P-256", an OID, or "" */
	bool sensitive; /* each false when the token does not say */
	bool extractable;
	bool always_sensitive;
	bool never_extractable;
};

/* Loads the module, C_Initialize.  *out is freed by p11_close_module(). */
int p11_open_module(struct p11 **out, const char *module, struct eb_err *err);
/* Logs out, closes the session, C_Finalize, unloads.  Returns NULL. */
struct p11 *p11_close_module(struct p11 *p);

/* Every slot (with or without a token).  *out is malloc()ed. */
int p11_list_tokens(struct p11 *p, struct p11_token_info **out, size_t *n,
		    struct eb_err *err);

/*
 * The slot of the token an RFC 7512 URI names (its token, manufacturer,
 * model and serial attributes; slot-id too).  A URI naming no token
 * matches the only initialised one.  -ENOENT if none matches, -EEXIST if
 * several do.
 */
int p11_find_token(struct p11 *p, const char *uri, struct p11_token_info *info,
		   struct eb_err *err);

/*
 * C_InitToken with so_pin and label (at most 32 bytes), then logs in as SO
 * and sets the user PIN with C_InitPIN.  A wrong SO PIN (re-initialising)
 * is -EACCES.
 */
int p11_init_token(struct p11 *p, unsigned long slot, const char *label,
		   const char *so_pin, const char *pin, struct eb_err *err);

/* Opens a read-write session on slot and logs in as the user: exactly one
 * C_Login.  The session lives until p11_close_module(). */
int p11_login_user(struct p11 *p, unsigned long slot, const char *pin,
		   struct eb_err *err);

/* Whether an object with this label exists on the logged-in token
 * (1 yes, 0 no, or -errno). */
int p11_find_label(struct p11 *p, const char *label, struct eb_err *err);
/* Same for a private key with this CKA_ID. */
int p11_find_key_id(struct p11 *p, const unsigned char *id, size_t id_len,
		    struct eb_err *err);

/*
 * Generates a key pair on the logged-in token: private key token, private,
 * sensitive, never extractable, sign only; public key token, verify only;
 * both with label and id.  Reads the attributes back and destroys the pair
 * if the token did not honour them.
 */
int p11_create_key(struct p11 *p, const struct p11_key_spec *spec,
		   const char *label, const unsigned char *id, size_t id_len,
		   struct eb_err *err);

/* The private keys on the logged-in token.  *out is malloc()ed. */
int p11_list_keys(struct p11 *p, struct p11_key_info **out, size_t *n,
		  struct eb_err *err);

/* A certificate's DER parts, as PKCS#11 stores them. */
struct p11_cert_der {
	const unsigned char *value, *subject, *issuer, *serial;
	size_t value_len, subject_len, issuer_len, serial_len;
};
/*
 * Stores a certificate object (public, on the token) with the label and
 * CKA_ID of its key, so PKCS#11 tools and libp11 find the pair; replaces a
 * certificate already stored for that id.  Returns how many were replaced.
 */
int p11_store_cert(struct p11 *p, const char *label, const unsigned char *id,
		   size_t id_len, const struct p11_cert_der *c,
		   struct eb_err *err);
/* The decoded value of one path attribute of an RFC 7512 URI ("object",
 * "token", ...): 0, -ENOENT when absent, -EINVAL, -ENAMETOOLONG. */
int p11_uri_attr(const char *uri, const char *attr, char *buf, size_t len);
/*
 * "pkcs11:token=T;object=O;type=private" with both values escaped per
 * RFC 7512 (never a PIN).  Returns the length, or -ENOSPC.
 */
int p11_format_uri(char *buf, size_t len, const char *token,
		   const char *object);

#endif
