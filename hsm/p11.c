/* SPDX-License-Identifier: MIT */
/*
 * Raw PKCS#11 through the module's own function list.
 *
 * Why not libp11: 0.4.12 (bookworm) cannot initialise a token's user PIN in
 * one go nor generate EC keys, and it hides slots without a token.  This
 * file does the few management operations the `edgebridge` tool needs; the
 * daemon keeps using libp11's engine (hsm.c) for signing.
 *
 * PINs are borrowed from the caller for the duration of one call and never
 * copied; a PIN failure is -EACCES and is never retried.
 */
#include <dlfcn.h>
#include <errno.h>
#include <openssl/objects.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <stdio.h>
#include <string.h>

#include "p11.h"

struct p11 {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	bool initialized; /* we called C_Initialize and must finalise */
	bool have_session;
	bool logged_in;
	CK_SESSION_HANDLE session;
};

static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
	{ CKR_OK, "CKR_OK" },
	{ CKR_HOST_MEMORY, "CKR_HOST_MEMORY" },
	{ CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID" },
	{ CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR" },
	{ CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED" },
	{ CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD" },
	{ CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY" },
	{ CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE" },
	{ CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID" },
	{ CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID" },
	{ CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR" },
	{ CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY" },
	{ CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED" },
	{ CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED" },
	{ CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE" },
	{ CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID" },
	{ CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID" },
	{ CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID" },
	{ CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE" },
	{ CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT" },
	{ CKR_PIN_INVALID, "CKR_PIN_INVALID" },
	{ CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE" },
	{ CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED" },
	{ CKR_PIN_LOCKED, "CKR_PIN_LOCKED" },
	{ CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED" },
	{ CKR_SESSION_EXISTS, "CKR_SESSION_EXISTS" },
	{ CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY" },
	{ CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE" },
	{ CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT" },
	{ CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT" },
	{ CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED" },
	{ CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED" },
	{ CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN" },
	{ CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN" },
	{ CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED" },
	{ CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID" },
	{ CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
	  "CKR_USER_ANOTHER_ALREADY_LOGGED_IN" },
	{ CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL" },
	{ CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED" },
	{ CKR_CRYPTOKI_ALREADY_INITIALIZED,
	  "CKR_CRYPTOKI_ALREADY_INITIALIZED" },
};

static const char *rv_name(CK_RV rv)
{
	static char other[32];

	for (size_t i = 0; i < EB_ARRAY_SIZE(rv_names); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	snprintf(other, sizeof(other), "CKR 0x%lx", (unsigned long)rv);
	return other;
}

static bool is_pin_failure(CK_RV rv)
{
	return rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED ||
	       rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE ||
	       rv == CKR_PIN_INVALID;
}

static int rv_errno(CK_RV rv)
{
	switch (rv) {
	case CKR_HOST_MEMORY:
	case CKR_DEVICE_MEMORY:
		return -ENOMEM;
	case CKR_SLOT_ID_INVALID:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_DEVICE_REMOVED:
		return -ENODEV;
	case CKR_FUNCTION_NOT_SUPPORTED:
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_SIZE_RANGE:
	case CKR_TEMPLATE_INCONSISTENT:
	case CKR_ATTRIBUTE_VALUE_INVALID:
	case CKR_ATTRIBUTE_TYPE_INVALID:
		return -EOPNOTSUPP;
	case CKR_SESSION_EXISTS:
	case CKR_OPERATION_ACTIVE:
		return -EBUSY;
	case CKR_TOKEN_WRITE_PROTECTED:
		return -EROFS;
	default:
		return is_pin_failure(rv) ? -EACCES : -EIO;
	}
}

/* Copies a blank-padded, unterminated PKCS#11 string and trims it. */
static void copy_padded(char *dst, size_t dst_len, const CK_UTF8CHAR *src,
			size_t src_len)
{
	size_t n = src_len < dst_len - 1 ? src_len : dst_len - 1;

	memcpy(dst, src, n);
	while (n && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		n--;
	dst[n] = '\0';
}

int p11_open_module(struct p11 **out, const char *module, struct eb_err *err)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_C_GetFunctionList get_list;
	struct p11 *p;
	CK_RV rv;

	*out = NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return eb_errf(err, -ENOMEM, "out of memory");
	p->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	if (!p->dl) {
		const char *why = dlerror();

		free(p);
		return eb_errf(err, -ENOENT,
			       "cannot load PKCS#11 module %s: %s; check "
			       "hsm.module (and that its package is installed)",
			       module, why ? why : "unknown error");
	}
	*(void **)&get_list = dlsym(p->dl, "C_GetFunctionList");
	if (!get_list) {
		p11_close_module(p);
		return eb_errf(err, -ENOEXEC,
			       "%s is not a PKCS#11 module (no "
			       "C_GetFunctionList); check hsm.module",
			       module);
	}
	rv = get_list(&p->f);
	if (rv != CKR_OK || !p->f) {
		p->f = NULL;
		p11_close_module(p);
		return eb_errf(err, -ENOEXEC,
			       "C_GetFunctionList of %s failed: %s", module,
			       rv_name(rv));
	}
	rv = p->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p->f = NULL;
		p11_close_module(p);
		return eb_errf(err, -ENODEV,
			       "cannot initialise PKCS#11 module %s: %s "
			       "(for SoftHSM2, check SOFTHSM2_CONF and its "
			       "tokendir)",
			       module, rv_name(rv));
	}
	p->initialized = rv == CKR_OK;
	*out = p;
	return 0;
}

static void end_session(struct p11 *p)
{
	if (!p->have_session)
		return;
	if (p->logged_in)
		p->f->C_Logout(p->session);
	p->f->C_CloseSession(p->session);
	p->have_session = p->logged_in = false;
}

struct p11 *p11_close_module(struct p11 *p)
{
	if (!p)
		return NULL;
	if (p->f) {
		end_session(p);
		if (p->initialized)
			p->f->C_Finalize(NULL);
	}
	if (p->dl)
		dlclose(p->dl);
	free(p);
	return NULL;
}

static void fill_token(struct p11_token_info *t, const CK_TOKEN_INFO *ti)
{
	CK_FLAGS fl = ti->flags;

	copy_padded(t->label, sizeof(t->label), ti->label, sizeof(ti->label));
	copy_padded(t->manufacturer, sizeof(t->manufacturer),
		    ti->manufacturerID, sizeof(ti->manufacturerID));
	copy_padded(t->model, sizeof(t->model), ti->model, sizeof(ti->model));
	copy_padded(t->serial, sizeof(t->serial), ti->serialNumber,
		    sizeof(ti->serialNumber));
	t->initialized = fl & CKF_TOKEN_INITIALIZED;
	t->user_pin_initialized = fl & CKF_USER_PIN_INITIALIZED;
	t->login_required = fl & CKF_LOGIN_REQUIRED;
	t->user_pin_count_low = fl & CKF_USER_PIN_COUNT_LOW;
	t->user_pin_final_try = fl & CKF_USER_PIN_FINAL_TRY;
	t->user_pin_locked = fl & CKF_USER_PIN_LOCKED;
	t->user_pin_to_be_changed = fl & CKF_USER_PIN_TO_BE_CHANGED;
	t->so_pin_count_low = fl & CKF_SO_PIN_COUNT_LOW;
	t->so_pin_final_try = fl & CKF_SO_PIN_FINAL_TRY;
	t->so_pin_locked = fl & CKF_SO_PIN_LOCKED;
	t->min_pin_len = ti->ulMinPinLen;
	t->max_pin_len = ti->ulMaxPinLen;
}

int p11_list_tokens(struct p11 *p, struct p11_token_info **out, size_t *n,
		    struct eb_err *err)
{
	_cleanup_free_ CK_SLOT_ID *slots = NULL;
	struct p11_token_info *info;
	CK_ULONG count = 0;
	CK_RV rv;

	*out = NULL;
	*n = 0;
	for (;;) {
		rv = p->f->C_GetSlotList(CK_FALSE, NULL, &count);
		if (rv != CKR_OK)
			return eb_errf(err, rv_errno(rv),
				       "cannot list the slots: %s",
				       rv_name(rv));
		free(slots);
		slots = calloc(count ? count : 1, sizeof(*slots));
		if (!slots)
			return eb_errf(err, -ENOMEM, "out of memory");
		rv = p->f->C_GetSlotList(CK_FALSE, slots, &count);
		if (rv == CKR_OK)
			break;
		if (rv != CKR_BUFFER_TOO_SMALL)
			return eb_errf(err, rv_errno(rv),
				       "cannot list the slots: %s",
				       rv_name(rv));
	}
	info = calloc(count ? count : 1, sizeof(*info));
	if (!info)
		return eb_errf(err, -ENOMEM, "out of memory");
	for (CK_ULONG i = 0; i < count; i++) {
		struct p11_token_info *t = &info[i];
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;

		t->slot = slots[i];
		rv = p->f->C_GetSlotInfo(slots[i], &si);
		if (rv != CKR_OK)
			continue;
		copy_padded(t->description, sizeof(t->description),
			    si.slotDescription, sizeof(si.slotDescription));
		if (!(si.flags & CKF_TOKEN_PRESENT))
			continue;
		rv = p->f->C_GetTokenInfo(slots[i], &ti);
		if (rv != CKR_OK)
			continue; /* removed or unrecognised: not present */
		t->present = true;
		fill_token(t, &ti);
	}
	*out = info;
	*n = count;
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes [s, end) into buf; -EINVAL on a bad escape. */
static int pct_decode(const char *s, const char *end, char *buf, size_t len)
{
	size_t o = 0;

	for (; s < end; s++) {
		int c = (unsigned char)*s;

		if (c == '%') {
			int hi, lo;

			if (end - s < 3)
				return -EINVAL;
			hi = hexval(s[1]);
			lo = hexval(s[2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = hi << 4 | lo;
			s += 2;
		}
		if (o + 1 >= len)
			return -ENAMETOOLONG;
		buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return 0;
}

int p11_uri_attr(const char *uri, const char *attr, char *buf, size_t len)
{
	size_t alen = strlen(attr);
	const char *s, *end;

	if (!uri || strncmp(uri, "pkcs11:", 7))
		return -EINVAL;
	s = uri + 7;
	end = s + strcspn(s, "?");
	while (s < end) {
		const char *semi = memchr(s, ';', (size_t)(end - s));
		const char *stop = semi ? semi : end;

		if ((size_t)(stop - s) > alen && !strncmp(s, attr, alen) &&
		    s[alen] == '=')
			return pct_decode(s + alen + 1, stop, buf, len);
		s = semi ? semi + 1 : end;
	}
	return -ENOENT;
}

struct token_match {
	char token[P11_LABEL_MAX], manufacturer[P11_LABEL_MAX];
	char model[17], serial[17];
	bool has_token, has_manufacturer, has_model, has_serial, has_slot;
	unsigned long slot;
};

static int parse_uri(const char *uri, struct token_match *m, struct eb_err *err)
{
	const char *s, *end;

	memset(m, 0, sizeof(*m));
	if (!uri)
		return 0;
	if (strncmp(uri, "pkcs11:", 7))
		return eb_errf(err, -EINVAL,
			       "'%s' is not an RFC 7512 pkcs11: URI", uri);
	s = uri + 7;
	end = s + strcspn(s, "?");
	while (s < end) {
		const char *semi = memchr(s, ';', (size_t)(end - s));
		const char *stop = semi ? semi : end;
		const char *eq = memchr(s, '=', (size_t)(stop - s));
		char val[P11_LABEL_MAX * 3];
		char *dst = NULL;
		size_t dst_len = 0;
		bool *flag = NULL;
		size_t klen;

		if (!eq)
			goto next;
		klen = (size_t)(eq - s);
		if (klen == 5 && !strncmp(s, "token", 5)) {
			dst = m->token, dst_len = sizeof(m->token);
			flag = &m->has_token;
		} else if (klen == 12 && !strncmp(s, "manufacturer", 12)) {
			dst = m->manufacturer;
			dst_len = sizeof(m->manufacturer);
			flag = &m->has_manufacturer;
		} else if (klen == 5 && !strncmp(s, "model", 5)) {
			dst = m->model, dst_len = sizeof(m->model);
			flag = &m->has_model;
		} else if (klen == 6 && !strncmp(s, "serial", 6)) {
			dst = m->serial, dst_len = sizeof(m->serial);
			flag = &m->has_serial;
		} else if (klen == 7 && !strncmp(s, "slot-id", 7)) {
			dst = val, dst_len = sizeof(val);
			flag = &m->has_slot;
		}
		if (!dst)
			goto next;
		if (pct_decode(eq + 1, stop, dst, dst_len) < 0)
			return eb_errf(err, -EINVAL,
				       "bad value of '%.*s' in URI '%s'",
				       (int)klen, s, uri);
		*flag = true;
		if (dst == val) {
			char *e;

			errno = 0;
			m->slot = strtoul(val, &e, 10);
			if (errno || e == val || *e)
				return eb_errf(err, -EINVAL,
					       "bad slot-id in URI '%s'", uri);
		}
	next:
		s = semi ? semi + 1 : end;
	}
	return 0;
}

static bool matches(const struct token_match *m, const struct p11_token_info *t)
{
	return t->present && t->initialized &&
	       (!m->has_token || streq(m->token, t->label)) &&
	       (!m->has_manufacturer ||
		streq(m->manufacturer, t->manufacturer)) &&
	       (!m->has_model || streq(m->model, t->model)) &&
	       (!m->has_serial || streq(m->serial, t->serial)) &&
	       (!m->has_slot || m->slot == t->slot);
}

int p11_find_token(struct p11 *p, const char *uri, struct p11_token_info *info,
		   struct eb_err *err)
{
	_cleanup_free_ struct p11_token_info *all = NULL;
	struct token_match m;
	size_t n, found = 0;
	int r;

	r = parse_uri(uri, &m, err);
	if (r < 0)
		return r;
	r = p11_list_tokens(p, &all, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		if (!matches(&m, &all[i]))
			continue;
		if (!found++)
			*info = all[i];
	}
	if (found == 1)
		return 0;
	if (found > 1)
		return eb_errf(err, -EEXIST,
			       "%zu initialised tokens match%s%s; name one "
			       "by its label (token=...) or serial",
			       found, uri ? " " : "", uri ? uri : "");
	if (m.has_token)
		return eb_errf(err, -ENOENT,
			       "no initialised token labelled '%s' in the "
			       "module; see 'edgebridge token list'",
			       m.token);
	return eb_errf(err, -ENOENT,
		       "no initialised token matches%s%s; initialise one "
		       "with 'edgebridge token init'",
		       uri ? " " : "", uri ? uri : "");
}

static int open_session(struct p11 *p, unsigned long slot, struct eb_err *err)
{
	CK_RV rv;

	end_session(p);
	rv = p->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				 NULL, NULL, &p->session);
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv),
			       "cannot open a session on slot %lu: %s", slot,
			       rv_name(rv));
	p->have_session = true;
	return 0;
}

static int login(struct p11 *p, CK_USER_TYPE who, const char *pin,
		 struct eb_err *err)
{
	const char *name = who == CKU_SO ? "SO" : "user";
	CK_RV rv;

	rv = p->f->C_Login(p->session, who, (CK_UTF8CHAR_PTR)pin,
			   (CK_ULONG)strlen(pin));
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		p->logged_in = true;
		return 0;
	}
	if (rv == CKR_PIN_LOCKED)
		return eb_errf(err, -EACCES,
			       "token login failed: the %s PIN is locked "
			       "(CKR_PIN_LOCKED); not retried",
			       name);
	if (is_pin_failure(rv))
		return eb_errf(err, -EACCES,
			       "token login failed: %s PIN incorrect (%s); "
			       "not retried: a token locks after a few failed "
			       "attempts",
			       name, rv_name(rv));
	if (rv == CKR_USER_PIN_NOT_INITIALIZED)
		return eb_errf(err, -EINVAL,
			       "the token has no user PIN yet: initialise it "
			       "with 'edgebridge token init'");
	return eb_errf(err, rv_errno(rv), "token login as %s failed: %s", name,
		       rv_name(rv));
}

int p11_init_token(struct p11 *p, unsigned long slot, const char *label,
		   const char *so_pin, const char *pin, struct eb_err *err)
{
	CK_UTF8CHAR padded[32];
	size_t len = strlen(label);
	CK_RV rv;
	int r;

	if (!len || len > sizeof(padded))
		return eb_errf(err, -EINVAL,
			       "token label '%s' must be 1 to 32 bytes long",
			       label);
	memset(padded, ' ', sizeof(padded));
	memcpy(padded, label, len);
	rv = p->f->C_InitToken(slot, (CK_UTF8CHAR_PTR)so_pin,
			       (CK_ULONG)strlen(so_pin), padded);
	if (rv == CKR_PIN_LEN_RANGE)
		return eb_errf(err, -EINVAL,
			       "the token refuses the length of the SO PIN "
			       "(CKR_PIN_LEN_RANGE); choose another");
	if (is_pin_failure(rv))
		return eb_errf(err, -EACCES,
			       "the token refused the SO PIN (%s): "
			       "re-initialising needs the token's current SO "
			       "PIN; not retried",
			       rv_name(rv));
	if (rv == CKR_SESSION_EXISTS)
		return eb_errf(err, -EBUSY,
			       "the token is in use (CKR_SESSION_EXISTS): stop "
			       "edgebridged and other programs using it first");
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv),
			       "cannot initialise the token in slot %lu: %s",
			       slot, rv_name(rv));
	r = open_session(p, slot, err);
	if (r < 0)
		return r;
	r = login(p, CKU_SO, so_pin, err);
	if (r < 0)
		goto out;
	rv = p->f->C_InitPIN(p->session, (CK_UTF8CHAR_PTR)pin,
			     (CK_ULONG)strlen(pin));
	if (rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_INVALID)
		r = eb_errf(err, -EINVAL,
			    "token initialised, but it refuses this user PIN "
			    "(%s); run token init again with --force and "
			    "another PIN",
			    rv_name(rv));
	else if (rv != CKR_OK)
		r = eb_errf(err, rv_errno(rv),
			    "token initialised, but setting the user PIN "
			    "failed: %s",
			    rv_name(rv));
out:
	end_session(p);
	return r;
}

int p11_login_user(struct p11 *p, unsigned long slot, const char *pin,
		   struct eb_err *err)
{
	int r = open_session(p, slot, err);

	if (r < 0)
		return r;
	r = login(p, CKU_USER, pin, err);
	if (r < 0)
		end_session(p);
	return r;
}

/* Up to max handles of objects matching tmpl; returns how many. */
static int find_objects(struct p11 *p, CK_ATTRIBUTE *tmpl, CK_ULONG n,
			CK_OBJECT_HANDLE *out, CK_ULONG max, struct eb_err *err)
{
	CK_ULONG found = 0;
	CK_RV rv;

	if (!p->logged_in)
		return eb_errf(err, -EPERM, "not logged in to the token");
	rv = p->f->C_FindObjectsInit(p->session, tmpl, n);
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv), "cannot search the token: %s",
			       rv_name(rv));
	rv = p->f->C_FindObjects(p->session, out, max, &found);
	p->f->C_FindObjectsFinal(p->session);
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv), "cannot search the token: %s",
			       rv_name(rv));
	return (int)found;
}

int p11_find_label(struct p11 *p, const char *label, struct eb_err *err)
{
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_LABEL, (void *)label, (CK_ULONG)strlen(label) },
	};
	CK_OBJECT_HANDLE h;
	int r = find_objects(p, tmpl, 1, &h, 1, err);

	return r < 0 ? r : r > 0;
}

int p11_find_key_id(struct p11 *p, const unsigned char *id, size_t id_len,
		    struct eb_err *err)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
	};
	CK_OBJECT_HANDLE h;
	int r = find_objects(p, tmpl, 2, &h, 1, err);

	return r < 0 ? r : r > 0;
}

/* DER OIDs of the curves we generate on (CKA_EC_PARAMS). */
static const struct {
	unsigned bits;
	const char *name;
	unsigned char der[10];
	size_t len;
} curves[] = {
	{ 256,
	  "P-256",
	  { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 },
	  10 },
	{ 384, "P-384", { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 }, 7 },
	{ 521, "P-521", { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 }, 7 },
};

/* Reads a boolean attribute; -1 when the token does not say. */
static int get_bool(struct p11 *p, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE a = { type, &v, sizeof(v) };

	if (p->f->C_GetAttributeValue(p->session, o, &a, 1) != CKR_OK ||
	    a.ulValueLen != sizeof(v))
		return -1;
	return v == CK_TRUE;
}

/* Reads a variable-length attribute into a malloc()ed buffer. */
static void *get_attr(struct p11 *p, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
		      CK_ULONG *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	void *v;

	*len = 0;
	if (p->f->C_GetAttributeValue(p->session, o, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return NULL;
	v = malloc(a.ulValueLen + 1);
	if (!v)
		return NULL;
	a.pValue = v;
	if (p->f->C_GetAttributeValue(p->session, o, &a, 1) != CKR_OK) {
		free(v);
		return NULL;
	}
	((char *)v)[a.ulValueLen] = '\0';
	*len = a.ulValueLen;
	return v;
}

int p11_create_key(struct p11 *p, const struct p11_key_spec *spec,
		   const char *label, const unsigned char *id, size_t id_len,
		   struct eb_err *err)
{
	static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static CK_BYTE exponent[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ULONG label_len = (CK_ULONG)strlen(label);
	CK_ULONG modulus_bits = spec->bits;
	CK_OBJECT_HANDLE pub, priv;
	CK_ATTRIBUTE pub_tmpl[10] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, label_len },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
	};
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, label_len },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
	};
	CK_ULONG n_pub = 7;
	CK_RV rv;

	if (!p->logged_in)
		return eb_errf(err, -EPERM, "not logged in to the token");
	if (spec->kind == P11_KEY_EC) {
		size_t i;

		for (i = 0; i < EB_ARRAY_SIZE(curves); i++)
			if (curves[i].bits == spec->bits)
				break;
		if (i == EB_ARRAY_SIZE(curves))
			return eb_errf(err, -EINVAL,
				       "no NIST curve of %u bits (use 256, "
				       "384 or 521)",
				       spec->bits);
		pub_tmpl[n_pub++] =
			(CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)curves[i].der,
					curves[i].len };
	} else if (spec->kind == P11_KEY_RSA) {
		if (spec->bits < 2048)
			return eb_errf(err, -EINVAL,
				       "RSA keys of %u bits are too weak: use "
				       "2048 bits or more",
				       spec->bits);
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		pub_tmpl[n_pub++] =
			(CK_ATTRIBUTE){ CKA_MODULUS_BITS, &modulus_bits,
					sizeof(modulus_bits) };
		pub_tmpl[n_pub++] =
			(CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, exponent,
					sizeof(exponent) };
	} else {
		return eb_errf(err, -EINVAL, "unsupported key type");
	}
	rv = p->f->C_GenerateKeyPair(p->session, &mech, pub_tmpl, n_pub,
				     priv_tmpl, EB_ARRAY_SIZE(priv_tmpl), &pub,
				     &priv);
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv),
			       "the token could not generate the %s-%u key "
			       "pair: %s%s",
			       spec->kind == P11_KEY_EC ? "EC" : "RSA",
			       spec->bits, rv_name(rv),
			       rv_errno(rv) == -EOPNOTSUPP
				       ? " (the token does not support this "
					 "type; try another --type)"
				       : "");
	/* Trust, but verify: a key that can leave the token is refused. */
	if (get_bool(p, priv, CKA_SENSITIVE) != 1 ||
	    get_bool(p, priv, CKA_EXTRACTABLE) != 0) {
		p->f->C_DestroyObject(p->session, priv);
		p->f->C_DestroyObject(p->session, pub);
		return eb_errf(err, -EPERM,
			       "the token did not make the new private key "
			       "sensitive and non-extractable; it was "
			       "destroyed. Use a token that honours "
			       "CKA_SENSITIVE/CKA_EXTRACTABLE");
	}
	return 0;
}

int p11_store_cert(struct p11 *p, const char *label, const unsigned char *id,
		   size_t id_len, const struct p11_cert_der *c,
		   struct eb_err *err)
{
	static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	static CK_CERTIFICATE_TYPE type = CKC_X_509;
	CK_ATTRIBUTE find[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
	};
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &type, sizeof(type) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, (CK_ULONG)strlen(label) },
		{ CKA_ID, (void *)id, (CK_ULONG)id_len },
		{ CKA_SUBJECT, (void *)c->subject, (CK_ULONG)c->subject_len },
		{ CKA_ISSUER, (void *)c->issuer, (CK_ULONG)c->issuer_len },
		{ CKA_SERIAL_NUMBER, (void *)c->serial,
		  (CK_ULONG)c->serial_len },
		{ CKA_VALUE, (void *)c->value, (CK_ULONG)c->value_len },
	};
	CK_OBJECT_HANDLE old[8], obj;
	int n = find_objects(p, find, 2, old, 8, err);
	CK_RV rv;

	if (n < 0)
		return n;
	rv = p->f->C_CreateObject(p->session, tmpl, EB_ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK)
		return eb_errf(err, rv_errno(rv),
			       "the token refused to store the certificate: %s",
			       rv_name(rv));
	/* only a certificate for the same key is replaced, and only once
	 * its successor is stored */
	for (int i = 0; i < n; i++)
		p->f->C_DestroyObject(p->session, old[i]);
	return n;
}

static void describe_key(struct p11 *p, CK_OBJECT_HANDLE o,
			 struct p11_key_info *k)
{
	CK_KEY_TYPE type = (CK_KEY_TYPE)-1;
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &type, sizeof(type) };
	_cleanup_free_ unsigned char *v = NULL;
	CK_ULONG len;

	v = get_attr(p, o, CKA_LABEL, &len);
	if (v)
		eb_strlcpy(k->label, (char *)v, sizeof(k->label));
	free(v);
	v = get_attr(p, o, CKA_ID, &len);
	if (v && len <= sizeof(k->id)) {
		memcpy(k->id, v, len);
		k->id_len = len;
	}
	free(v);
	v = NULL;
	k->sensitive = get_bool(p, o, CKA_SENSITIVE) == 1;
	k->extractable = get_bool(p, o, CKA_EXTRACTABLE) == 1;
	k->always_sensitive = get_bool(p, o, CKA_ALWAYS_SENSITIVE) == 1;
	k->never_extractable = get_bool(p, o, CKA_NEVER_EXTRACTABLE) == 1;
	k->kind = P11_KEY_OTHER;
	if (p->f->C_GetAttributeValue(p->session, o, &a, 1) != CKR_OK)
		return;
	if (type == CKK_RSA) {
		k->kind = P11_KEY_RSA;
		v = get_attr(p, o, CKA_MODULUS, &len);
		if (v) {
			CK_ULONG i = 0;
			unsigned bits;

			while (i < len && !v[i])
				i++;
			bits = (unsigned)(len - i) * 8;
			for (unsigned char top = i < len ? v[i] : 0;
			     bits && !(top & 0x80); top <<= 1)
				bits--;
			k->bits = bits;
		}
	} else if (type == CKK_EC) {
		k->kind = P11_KEY_EC;
		v = get_attr(p, o, CKA_EC_PARAMS, &len);
		if (!v)
			return;
		for (size_t i = 0; i < EB_ARRAY_SIZE(curves); i++)
			if (curves[i].len == len &&
			    !memcmp(curves[i].der, v, len)) {
				eb_strlcpy(k->curve, curves[i].name,
					   sizeof(k->curve));
				k->bits = curves[i].bits;
				return;
			}
		{
			const unsigned char *q = v;
			ASN1_OBJECT *obj = d2i_ASN1_OBJECT(NULL, &q, (long)len);

			if (obj)
				OBJ_obj2txt(k->curve, sizeof(k->curve), obj, 0);
			ASN1_OBJECT_free(obj);
		}
	}
}

int p11_list_keys(struct p11 *p, struct p11_key_info **out, size_t *n,
		  struct eb_err *err)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE h[256];
	struct p11_key_info *keys;
	int r;

	*out = NULL;
	*n = 0;
	r = find_objects(p, tmpl, 1, h, EB_ARRAY_SIZE(h), err);
	if (r < 0)
		return r;
	keys = calloc(r ? (size_t)r : 1, sizeof(*keys));
	if (!keys)
		return eb_errf(err, -ENOMEM, "out of memory");
	for (int i = 0; i < r; i++)
		describe_key(p, h[i], &keys[i]);
	*out = keys;
	*n = (size_t)r;
	return 0;
}

/* RFC 7512 path attribute value: unreserved characters stay, the rest is
 * percent-encoded (always valid, if not always the shortest). */
static size_t escape(char *buf, size_t len, size_t o, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("-._~", c)) {
			if (o + 1 < len)
				buf[o] = (char)c;
			o++;
		} else {
			if (o + 3 < len) {
				buf[o] = '%';
				buf[o + 1] = hex[c >> 4];
				buf[o + 2] = hex[c & 15];
			}
			o += 3;
		}
	}
	return o;
}

int p11_format_uri(char *buf, size_t len, const char *token, const char *object)
{
	static const char *const parts[] = { "pkcs11:token=", ";object=",
					     ";type=private" };
	size_t o = 0;

	for (size_t i = 0; i < EB_ARRAY_SIZE(parts); i++) {
		const char *val = i == 0 ? token : i == 1 ? object : NULL;
		size_t plen = strlen(parts[i]);

		if (o + plen < len)
			memcpy(buf + o, parts[i], plen);
		o += plen;
		if (val)
			o = escape(buf, len, o, val);
	}
	if (o >= len) {
		if (len)
			buf[0] = '\0';
		return -ENOSPC;
	}
	buf[o] = '\0';
	return (int)o;
}
