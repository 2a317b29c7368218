/* SPDX-License-Identifier: MIT */
/*
 * edgebridge token list|init, key create|list: the token and the key that
 * never leaves it.  The PKCS#11 work is hsm/p11.c's; this file parses
 * options, reads PINs (files or a prompt, never argv), and prints.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../hsm/p11.h"
#include "tool.h"

#define PIN_MAX 256
#define URI_MAX 512

/* A PIN buffer: out of swap while held, wiped when it goes out of scope. */
struct secret {
	char buf[PIN_MAX];
};

static void secret_wipe(struct secret *s)
{
	OPENSSL_cleanse(s->buf, sizeof(s->buf));
	munlock(s->buf, sizeof(s->buf));
}
#define _cleanup_secret_ _cleanup_(secret_wipe)

static void secret_init(struct secret *s)
{
	memset(s->buf, 0, sizeof(s->buf));
	mlock(s->buf, sizeof(s->buf));
}

static void p11_closep(struct p11 **p)
{
	p11_close_module(*p);
}
#define _cleanup_p11_ _cleanup_(p11_closep)

/* Exit code for an hsm/ error. */
static int exit_code(int r)
{
	switch (r) {
	case -EACCES:
		return EB_EXIT_NOPERM;
	case -ENOENT:
	case -ENODEV:
	case -ENOEXEC:
		return EB_EXIT_UNAVAILABLE;
	default:
		return EB_EXIT_FAILURE;
	}
}

static int fail(int r, const struct eb_err *err)
{
	tool_err("%s", err->msg);
	return exit_code(r);
}

/* Loads the configuration and the module it names. */
static int open_module(struct tool *t, struct p11 **p)
{
	struct eb_config *cfg = tool_config(t);
	struct eb_err err = { "" };
	int r;

	if (!cfg) {
		tool_err("the configuration %s is not valid (see above)",
			 t->config_path);
		return EB_EXIT_CONFIG;
	}
	r = p11_open_module(p, cfg->hsm.module, &err);
	if (r < 0)
		return fail(r, &err);
	return 0;
}

static int bad_usage(const char *cmd, const char *synopsis)
{
	tool_err("usage: edgebridge %s %s", cmd, synopsis);
	return EB_EXIT_USAGE;
}

static int parse_ulong(const char *s, unsigned long *v)
{
	char *end;

	errno = 0;
	*v = strtoul(s, &end, 0);
	return errno || end == s || *end || *s == '-' ? -EINVAL : 0;
}

/* ------------------------------------------------------------------ */
/* token list */

static void token_flags(FILE *f, const struct p11_token_info *tk, bool json)
{
	const struct {
		bool on;
		const char *name, *text;
	} fl[] = {
		{ tk->initialized, "initialized", "initialised" },
		{ tk->user_pin_initialized, "user_pin_initialized",
		  "user PIN initialised" },
		{ tk->login_required, "login_required", "login required" },
		{ tk->user_pin_count_low, "user_pin_count_low",
		  "user PIN count low" },
		{ tk->user_pin_final_try, "user_pin_final_try",
		  "user PIN final try" },
		{ tk->user_pin_locked, "user_pin_locked", "user PIN LOCKED" },
		{ tk->user_pin_to_be_changed, "user_pin_to_be_changed",
		  "user PIN to be changed" },
		{ tk->so_pin_count_low, "so_pin_count_low",
		  "SO PIN count low" },
		{ tk->so_pin_final_try, "so_pin_final_try",
		  "SO PIN final try" },
		{ tk->so_pin_locked, "so_pin_locked", "SO PIN LOCKED" },
	};
	bool first = true;

	if (!json && !tk->initialized) {
		fputs("NOT INITIALISED", f);
		first = false;
	}
	for (size_t i = 0; i < EB_ARRAY_SIZE(fl); i++) {
		if (json) {
			fprintf(f, "%s\"%s\": %s", i ? ", " : "", fl[i].name,
				fl[i].on ? "true" : "false");
		} else if (fl[i].on) {
			fprintf(f, "%s%s", first ? "" : ", ", fl[i].text);
			first = false;
		}
	}
	if (!json && first)
		fputs("-", f);
}

static void json_field(const char *name, const char *value, bool last)
{
	printf("\"%s\": ", name);
	if (value)
		tool_json_str(stdout, value);
	else
		fputs("null", stdout);
	fputs(last ? "" : ", ", stdout);
}

static void print_token_json(const struct p11_token_info *tk, bool last)
{
	printf("  {\"slot\": %lu, ", tk->slot);
	json_field("description", tk->description, false);
	printf("\"token_present\": %s, ", tk->present ? "true" : "false");
	json_field("label", tk->present ? tk->label : NULL, false);
	json_field("manufacturer", tk->present ? tk->manufacturer : NULL,
		   false);
	json_field("model", tk->present ? tk->model : NULL, false);
	json_field("serial", tk->present ? tk->serial : NULL, false);
	if (tk->present) {
		fputs("\"flags\": {", stdout);
		token_flags(stdout, tk, true);
		fputs("}}", stdout);
	} else {
		fputs("\"flags\": null}", stdout);
	}
	puts(last ? "" : ",");
}

static void print_token(const struct p11_token_info *tk, bool first)
{
	printf("%sslot %lu: %s\n", first ? "" : "\n", tk->slot,
	       tk->description);
	if (!tk->present) {
		printf("  token:        not present\n");
		return;
	}
	printf("  token:        present\n");
	printf("  label:        %s\n", tk->initialized ? tk->label : "");
	printf("  manufacturer: %s\n", tk->manufacturer);
	printf("  model:        %s\n", tk->model);
	printf("  serial:       %s\n", tk->serial);
	printf("  flags:        ");
	token_flags(stdout, tk, false);
	putchar('\n');
}

int cmd_token_list(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ 0 },
	};
	_cleanup_free_ struct p11_token_info *tk = NULL;
	_cleanup_p11_ struct p11 *p = NULL;
	struct eb_err err = { "" };
	size_t n;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'j')
			t->json = true;
		else
			return bad_usage("token list", "[--json]");
	}
	if (optind < argc)
		return bad_usage("token list", "[--json]");
	r = open_module(t, &p);
	if (r)
		return r;
	r = p11_list_tokens(p, &tk, &n, &err);
	if (r < 0)
		return fail(r, &err);
	if (t->json) {
		puts("[");
		for (size_t i = 0; i < n; i++)
			print_token_json(&tk[i], i + 1 == n);
		puts("]");
	} else if (!n) {
		printf("no slots in module %s\n", t->cfg->hsm.module);
	}
	for (size_t i = 0; !t->json && i < n; i++)
		print_token(&tk[i], i == 0);
	return 0;
}

/* ------------------------------------------------------------------ */
/* token init */

#define INIT_SYNOPSIS                                                          \
	"--label L [--so-pin-file F] [--pin-file F] [--slot N] [--force]"

/* A new PIN from a file, or typed twice at a prompt. */
static int read_new_pin(const char *path, const char *what,
			const struct p11_token_info *tk, struct secret *pin)
{
	_cleanup_secret_ struct secret again;
	char prompt[128];
	size_t len;
	int r;

	secret_init(&again);
	snprintf(prompt, sizeof(prompt), "New %s for token", what);
	r = tool_read_secret(path, prompt, pin->buf, sizeof(pin->buf));
	if (r < 0) {
		if (path)
			tool_err("cannot read the %s from %s: %s", what, path,
				 r == -EINVAL ? "the file is empty"
					      : strerror(-r));
		else
			tool_err("no %s entered", what);
		return EB_EXIT_FAILURE;
	}
	if (!path) {
		snprintf(prompt, sizeof(prompt), "Repeat the %s", what);
		r = tool_read_secret(NULL, prompt, again.buf,
				     sizeof(again.buf));
		if (r < 0 || strcmp(pin->buf, again.buf)) {
			tool_err("the two %ss differ; nothing was changed",
				 what);
			return EB_EXIT_FAILURE;
		}
	}
	len = strlen(pin->buf);
	if ((tk->min_pin_len && len < tk->min_pin_len) ||
	    (tk->max_pin_len && len > tk->max_pin_len)) {
		tool_err("the token takes %ss of %lu to %lu characters; "
			 "this one has %zu",
			 what, tk->min_pin_len, tk->max_pin_len, len);
		return EB_EXIT_FAILURE;
	}
	return 0;
}

/*
 * The slot to initialise: --slot; else the token that already has this
 * label (a second one would make URIs ambiguous; only --force takes it);
 * else the first uninitialised token.
 */
static int pick_slot(const struct p11_token_info *tk, size_t n, bool has_slot,
		     unsigned long slot, const char *label, size_t *pick)
{
	for (size_t i = 0; has_slot && i < n; i++) {
		if (tk[i].slot != slot)
			continue;
		if (!tk[i].present) {
			tool_err("slot %lu has no token; see 'edgebridge "
				 "token list'",
				 slot);
			return EB_EXIT_UNAVAILABLE;
		}
		*pick = i;
		return 0;
	}
	if (has_slot) {
		tool_err("there is no slot %lu; see 'edgebridge token list'",
			 slot);
		return EB_EXIT_UNAVAILABLE;
	}
	for (size_t i = 0; i < n; i++)
		if (tk[i].present && tk[i].initialized &&
		    streq(tk[i].label, label)) {
			*pick = i;
			return 0;
		}
	for (size_t i = 0; i < n; i++)
		if (tk[i].present && !tk[i].initialized) {
			*pick = i;
			return 0;
		}
	tool_err("no uninitialised token in the module: every token is "
		 "initialised already (see 'edgebridge token list'); to "
		 "re-initialise one, erasing its keys, pass --slot N --force");
	return EB_EXIT_UNAVAILABLE;
}

int cmd_token_init(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "label", required_argument, NULL, 'l' },
		{ "so-pin-file", required_argument, NULL, 'S' },
		{ "pin-file", required_argument, NULL, 'P' },
		{ "slot", required_argument, NULL, 's' },
		{ "force", no_argument, NULL, 'f' },
		{ 0 },
	};
	const char *label = NULL, *so_pin_file = NULL, *pin_file = NULL;
	_cleanup_free_ struct p11_token_info *tk = NULL;
	_cleanup_secret_ struct secret so_pin, pin;
	_cleanup_p11_ struct p11 *p = NULL;
	struct eb_err err = { "" };
	unsigned long slot = 0;
	bool has_slot = false, force = false;
	size_t n, i = 0;
	int c, r;

	secret_init(&so_pin);
	secret_init(&pin);
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			label = optarg;
			break;
		case 'S':
			so_pin_file = optarg;
			break;
		case 'P':
			pin_file = optarg;
			break;
		case 's':
			if (parse_ulong(optarg, &slot) < 0) {
				tool_err("--slot: '%s' is not a slot number",
					 optarg);
				return EB_EXIT_USAGE;
			}
			has_slot = true;
			break;
		case 'f':
			force = true;
			break;
		default:
			return bad_usage("token init", INIT_SYNOPSIS);
		}
	}
	if (optind < argc || !label)
		return bad_usage("token init", INIT_SYNOPSIS);
	if (!*label || strlen(label) > 32) {
		tool_err("--label: a token label has 1 to 32 bytes");
		return EB_EXIT_USAGE;
	}
	if ((!so_pin_file || !pin_file) && !isatty(0)) {
		tool_err("no %s: pass %s FILE (stdin is not a terminal, so "
			 "there is no prompt; PINs are never taken from the "
			 "command line)",
			 !so_pin_file ? "SO PIN" : "user PIN",
			 !so_pin_file ? "--so-pin-file" : "--pin-file");
		return EB_EXIT_USAGE;
	}
	r = open_module(t, &p);
	if (r)
		return r;
	r = p11_list_tokens(p, &tk, &n, &err);
	if (r < 0)
		return fail(r, &err);
	r = pick_slot(tk, n, has_slot, slot, label, &i);
	if (r)
		return r;
	if (tk[i].initialized && !force) {
		tool_err("the token in slot %lu is already initialised "
			 "(label '%s'); re-initialising ERASES every key and "
			 "certificate on it and needs its current SO PIN. "
			 "Refused: pass --force if that is really what you "
			 "want",
			 tk[i].slot, tk[i].label);
		return EB_EXIT_FAILURE;
	}
	r = read_new_pin(so_pin_file, "SO PIN", &tk[i], &so_pin);
	if (r)
		return r;
	r = read_new_pin(pin_file, "user PIN", &tk[i], &pin);
	if (r)
		return r;
	r = p11_init_token(p, tk[i].slot, label, so_pin.buf, pin.buf, &err);
	if (r < 0)
		return fail(r, &err);
	if (!t->quiet)
		printf("initialised token '%s' and set its user PIN.\nNext: "
		       "edgebridge key create --type ec-p256 --label device\n",
		       label);
	return 0;
}

/* ------------------------------------------------------------------ */
/* key create / key list */

/* Opens the module, finds the token (--token, else the one hsm.key names)
 * and logs in once with the PIN from --pin-file or hsm.pin_file. */
static int login_token(struct tool *t, struct p11 **p, const char *token,
		       const char *pin_file, struct p11_token_info *tk)
{
	_cleanup_secret_ struct secret pin;
	struct eb_err err = { "" };
	char uri[URI_MAX];
	int r;

	secret_init(&pin);
	r = open_module(t, p);
	if (r)
		return r;
	if (!pin_file)
		pin_file = t->cfg->hsm.pin_file;
	if (token && p11_format_uri(uri, sizeof(uri), token, "") < 0) {
		tool_err("--token: label too long");
		return EB_EXIT_USAGE;
	}
	r = p11_find_token(*p, token ? uri : t->cfg->hsm.key, tk, &err);
	if (r < 0)
		return fail(r, &err);
	r = tool_read_secret(pin_file, "User PIN", pin.buf, sizeof(pin.buf));
	if (r < 0) {
		tool_err("cannot read the PIN file %s: %s", pin_file,
			 r == -EINVAL ? "it is empty" : strerror(-r));
		return EB_EXIT_CONFIG;
	}
	r = p11_login_user(*p, tk->slot, pin.buf, &err);
	if (r == -EACCES) {
		tool_err("%s; fix the PIN file %s", err.msg, pin_file);
		return EB_EXIT_NOPERM;
	}
	if (r < 0)
		return fail(r, &err);
	return 0;
}

static int parse_type(const char *s, struct p11_key_spec *spec)
{
	unsigned long bits;

	if (streq(s, "ec-p256") || streq(s, "ec-p384")) {
		*spec = (struct p11_key_spec){ P11_KEY_EC,
					       s[4] == '2' ? 256 : 384 };
		return 0;
	}
	if (!strncmp(s, "rsa-", 4) && parse_ulong(s + 4, &bits) == 0) {
		if (bits < 2048) {
			tool_err("--type %s: RSA keys shorter than 2048 bits "
				 "are refused (too weak, and clouds reject "
				 "them); use rsa-2048 or more, or ec-p256",
				 s);
			return -EINVAL;
		}
		if (bits == 2048 || bits == 3072 || bits == 4096) {
			*spec = (struct p11_key_spec){ P11_KEY_RSA,
						       (unsigned)bits };
			return 0;
		}
	}
	tool_err("--type: unknown key type '%s' (known: ec-p256, ec-p384, "
		 "rsa-2048, rsa-3072, rsa-4096)",
		 s);
	return -EINVAL;
}

static int parse_hex(const char *s, unsigned char *id, size_t max, size_t *len)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2, n -= 2;
	if (!n || n % 2 || n / 2 > max)
		return -EINVAL;
	for (size_t i = 0; i < n / 2; i++) {
		char byte[3] = { s[2 * i], s[2 * i + 1], '\0' };
		char *end;

		id[i] = (unsigned char)strtoul(byte, &end, 16);
		if (*end || !isxdigit((unsigned char)byte[0]))
			return -EINVAL;
	}
	*len = n / 2;
	return 0;
}

static void hex(char *out, const unsigned char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", v[i]);
	out[2 * n] = '\0';
}

static const char *type_name(const struct p11_key_info *k, char *buf,
			     size_t len)
{
	if (k->kind == P11_KEY_RSA)
		snprintf(buf, len, "rsa-%u", k->bits);
	else if (k->kind == P11_KEY_EC && k->bits)
		snprintf(buf, len, "ec-p%u", k->bits);
	else if (k->kind == P11_KEY_EC)
		snprintf(buf, len, "ec");
	else
		snprintf(buf, len, "other");
	return buf;
}

#define CREATE_SYNOPSIS                                                        \
	"--type ec-p256|ec-p384|rsa-2048|rsa-3072|rsa-4096 --label L "         \
	"[--id HEX] [--pin-file F] [--token LABEL] [--json]"

int cmd_key_create(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "label", required_argument, NULL, 'l' },
		{ "id", required_argument, NULL, 'i' },
		{ "pin-file", required_argument, NULL, 'P' },
		{ "token", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ 0 },
	};
	const char *type = NULL, *label = NULL, *id_hex = NULL;
	const char *pin_file = NULL, *token = NULL;
	_cleanup_p11_ struct p11 *p = NULL;
	struct p11_key_spec spec;
	struct p11_token_info tk;
	struct eb_err err = { "" };
	unsigned char id[P11_ID_MAX];
	char id_str[2 * P11_ID_MAX + 1], uri[URI_MAX];
	size_t id_len = 8;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			type = optarg;
			break;
		case 'l':
			label = optarg;
			break;
		case 'i':
			id_hex = optarg;
			break;
		case 'P':
			pin_file = optarg;
			break;
		case 'T':
			token = optarg;
			break;
		case 'j':
			t->json = true;
			break;
		default:
			return bad_usage("key create", CREATE_SYNOPSIS);
		}
	}
	if (optind < argc || !type || !label)
		return bad_usage("key create", CREATE_SYNOPSIS);
	if (parse_type(type, &spec) < 0)
		return EB_EXIT_USAGE;
	if (!*label || strlen(label) > 64) {
		tool_err("--label: a key label has 1 to 64 bytes");
		return EB_EXIT_USAGE;
	}
	if (id_hex && parse_hex(id_hex, id, sizeof(id), &id_len) < 0) {
		tool_err("--id: '%s' is not 1 to %d bytes of hex (e.g. 01 or "
			 "a1b2c3d4)",
			 id_hex, P11_ID_MAX);
		return EB_EXIT_USAGE;
	}
	if (!id_hex && RAND_bytes(id, (int)id_len) != 1) {
		tool_err("cannot generate a random key id; pass --id HEX");
		return EB_EXIT_FAILURE;
	}
	hex(id_str, id, id_len);
	r = login_token(t, &p, token, pin_file, &tk);
	if (r)
		return r;
	r = p11_find_label(p, label, &err);
	if (r < 0)
		return fail(r, &err);
	if (r > 0) {
		tool_err("token '%s' already has an object labelled '%s'; "
			 "keys are never replaced: choose another --label",
			 tk.label, label);
		return EB_EXIT_FAILURE;
	}
	r = p11_find_key_id(p, id, id_len, &err);
	if (r < 0)
		return fail(r, &err);
	if (r > 0) {
		tool_err("token '%s' already has a private key with id %s: "
			 "choose another --id (or omit it for a random one)",
			 tk.label, id_str);
		return EB_EXIT_FAILURE;
	}
	if (!t->quiet && !t->json && spec.kind == P11_KEY_RSA &&
	    spec.bits > 2048)
		fprintf(stderr,
			"generating an RSA-%u key on the token; this "
			"can take a while...\n",
			spec.bits);
	r = p11_create_key(p, &spec, label, id, id_len, &err);
	if (r < 0)
		return fail(r, &err);
	if (p11_format_uri(uri, sizeof(uri), tk.label, label) < 0) {
		tool_err("the key URI is too long");
		return EB_EXIT_FAILURE;
	}
	if (t->json) {
		printf("{\"token\": ");
		tool_json_str(stdout, tk.label);
		printf(", \"label\": ");
		tool_json_str(stdout, label);
		printf(", \"id\": \"%s\", \"type\": \"%s\", \"uri\": ", id_str,
		       type);
		tool_json_str(stdout, uri);
		printf("}\n");
		return 0;
	}
	if (!t->quiet)
		fprintf(stderr,
			"created %s key '%s' (id %s) on token '%s'; the "
			"private key is sensitive and never leaves the "
			"token.\nPut this URI in [hsm] key (the PIN stays in "
			"hsm.pin_file):\n",
			type, label, id_str, tk.label);
	printf("%s\n", uri);
	return 0;
}

/* Logs in (as login_token()) and lists the token's private keys. */
static int login_list_keys(struct tool *t, struct p11 **p, const char *token,
			   const char *pin_file, struct p11_token_info *tk,
			   struct p11_key_info **keys, size_t *n)
{
	struct eb_err err = { "" };
	int r = login_token(t, p, token, pin_file, tk);

	if (r)
		return r;
	r = p11_list_keys(*p, keys, n, &err);
	return r < 0 ? fail(r, &err) : 0;
}

int cmd_key_list(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pin-file", required_argument, NULL, 'P' },
		{ "token", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ 0 },
	};
	const char *pin_file = NULL, *token = NULL;
	_cleanup_free_ struct p11_key_info *keys = NULL;
	_cleanup_p11_ struct p11 *p = NULL;
	struct p11_token_info tk;
	size_t n;
	int c, r;

	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'P':
			pin_file = optarg;
			break;
		case 'T':
			token = optarg;
			break;
		case 'j':
			t->json = true;
			break;
		default:
			return bad_usage("key list", "[--pin-file F] [--token "
						     "LABEL] [--json]");
		}
	}
	if (optind < argc)
		return bad_usage("key list",
				 "[--pin-file F] [--token LABEL] [--json]");
	r = login_list_keys(t, &p, token, pin_file, &tk, &keys, &n);
	if (r)
		return r;
	if (t->json)
		puts("[");
	else if (!n)
		printf("no private keys on token '%s'\n", tk.label);
	for (size_t i = 0; i < n; i++) {
		const struct p11_key_info *k = &keys[i];
		char id_str[2 * P11_ID_MAX + 1], uri[URI_MAX], type[32];

		hex(id_str, k->id, k->id_len);
		type_name(k, type, sizeof(type));
		if (p11_format_uri(uri, sizeof(uri), tk.label, k->label) < 0)
			uri[0] = '\0';
		if (t->json) {
			printf("  {\"label\": ");
			tool_json_str(stdout, k->label);
			printf(", \"id\": \"%s\", \"type\": \"%s\", "
			       "\"bits\": %u, \"curve\": ",
			       id_str, type, k->bits);
			if (k->curve[0])
				tool_json_str(stdout, k->curve);
			else
				fputs("null", stdout);
			printf(", \"sensitive\": %s, \"extractable\": %s, "
			       "\"always_sensitive\": %s, "
			       "\"never_extractable\": %s, \"uri\": ",
			       k->sensitive ? "true" : "false",
			       k->extractable ? "true" : "false",
			       k->always_sensitive ? "true" : "false",
			       k->never_extractable ? "true" : "false");
			tool_json_str(stdout, uri);
			puts(i + 1 == n ? "}" : "},");
			continue;
		}
		printf("%s%s\n", i ? "\n" : "", k->label);
		printf("  id:    %s\n", id_str);
		if (k->kind == P11_KEY_EC)
			printf("  type:  EC %s\n",
			       k->curve[0] ? k->curve : "(unknown curve)");
		else if (k->kind == P11_KEY_RSA)
			printf("  type:  RSA %u bits\n", k->bits);
		else
			printf("  type:  other\n");
		printf("  flags: %s, %s, %s%s\n",
		       k->sensitive ? "sensitive" : "NOT SENSITIVE",
		       k->extractable ? "EXTRACTABLE" : "not extractable",
		       k->always_sensitive ? "always sensitive"
					   : "not always sensitive",
		       k->never_extractable ? ", never extractable"
					    : ", was extractable");
		printf("  uri:   %s\n", uri);
	}
	if (t->json)
		puts("]");
	return 0;
}

/* ------------------------------------------------------------------ */
/* for cert renew and cert install --on-token */

/* The key the URI names among keys (by its object label). */
static const struct p11_key_info *key_of_uri(const struct p11_key_info *keys,
					     size_t n, const char *uri,
					     char *label, size_t len)
{
	if (p11_uri_attr(uri, "object", label, len) < 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (streq(keys[i].label, label))
			return &keys[i];
	return NULL;
}

int tool_renew_key(struct tool *t, const char *type, const char *label,
		   char *uri, size_t uri_len)
{
	_cleanup_free_ struct p11_key_info *keys = NULL;
	_cleanup_p11_ struct p11 *p = NULL;
	const struct p11_key_info *cur;
	struct p11_key_spec spec;
	struct p11_token_info tk;
	struct eb_err err = { "" };
	unsigned char id[8];
	char cur_label[P11_LABEL_MAX * 4], fresh[P11_LABEL_MAX * 4 + 16];
	size_t n;
	int r;

	if (type && parse_type(type, &spec) < 0)
		return EB_EXIT_USAGE;
	r = login_list_keys(t, &p, NULL, NULL, &tk, &keys, &n);
	if (r)
		return r;
	cur = key_of_uri(keys, n, t->cfg->hsm.key, cur_label,
			 sizeof(cur_label));
	if (!type) {
		if (!cur || (cur->kind != P11_KEY_RSA && !cur->bits) ||
		    cur->kind == P11_KEY_OTHER) {
			tool_err("cert renew: cannot tell the type of the "
				 "current key %s; give --type",
				 t->cfg->hsm.key);
			return EB_EXIT_USAGE;
		}
		spec = (struct p11_key_spec){ cur->kind, cur->bits };
	}
	if (!label) {
		/* <current label>-<UTC date>, then -2, -3... */
		char date[16];
		time_t now = time(NULL);
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(date, sizeof(date), "%Y%m%d", &tm);
		for (int k = 1; k < 100; k++) {
			snprintf(fresh, sizeof(fresh), "%.40s-%s%s%.0d",
				 cur ? cur_label : "device", date,
				 k > 1 ? "-" : "", k > 1 ? k : 0);
			r = p11_find_label(p, fresh, &err);
			if (r <= 0)
				break;
		}
		if (r < 0)
			return fail(r, &err);
		label = fresh;
	} else {
		r = p11_find_label(p, label, &err);
		if (r < 0)
			return fail(r, &err);
		if (r > 0) {
			tool_err(
				"token '%s' already has an object labelled "
				"'%s'; keys are never replaced: choose another "
				"--label",
				tk.label, label);
			return EB_EXIT_FAILURE;
		}
	}
	do {
		if (RAND_bytes(id, sizeof(id)) != 1) {
			tool_err("cannot generate a random key id");
			return EB_EXIT_FAILURE;
		}
		r = p11_find_key_id(p, id, sizeof(id), &err);
	} while (r > 0);
	if (r < 0)
		return fail(r, &err);
	r = p11_create_key(p, &spec, label, id, sizeof(id), &err);
	if (r < 0)
		return fail(r, &err);
	if (p11_format_uri(uri, uri_len, tk.label, label) < 0) {
		tool_err("the key URI is too long");
		return EB_EXIT_FAILURE;
	}
	return 0;
}

int tool_store_leaf(struct tool *t, const char *key_uri, X509 *leaf)
{
	_cleanup_free_ struct p11_key_info *keys = NULL;
	_cleanup_p11_ struct p11 *p = NULL;
	const struct p11_key_info *k;
	struct p11_token_info tk;
	struct eb_err err = { "" };
	unsigned char *value = NULL, *subject = NULL, *issuer = NULL;
	unsigned char *serial = NULL;
	char label[P11_LABEL_MAX * 4];
	int lv, ls, li, lsn;
	size_t n;
	int r;

	r = login_list_keys(t, &p, NULL, NULL, &tk, &keys, &n);
	if (r)
		return r;
	k = key_of_uri(keys, n, key_uri, label, sizeof(label));
	if (!k) {
		tool_err("--on-token: no private key on token '%s' matches %s",
			 tk.label, key_uri);
		return EB_EXIT_FAILURE;
	}
	lv = i2d_X509(leaf, &value);
	ls = i2d_X509_NAME(X509_get_subject_name(leaf), &subject);
	li = i2d_X509_NAME(X509_get_issuer_name(leaf), &issuer);
	lsn = i2d_ASN1_INTEGER(X509_get_serialNumber(leaf), &serial);
	if (lv <= 0 || ls <= 0 || li <= 0 || lsn <= 0) {
		r = -ENOMEM;
		eb_errf(&err, r, "cannot encode the certificate");
	} else {
		const struct p11_cert_der der = {
			value,	    subject,	issuer,	    serial,
			(size_t)lv, (size_t)ls, (size_t)li, (size_t)lsn,
		};

		r = p11_store_cert(p, k->label, k->id, k->id_len, &der, &err);
	}
	OPENSSL_free(value);
	OPENSSL_free(subject);
	OPENSSL_free(issuer);
	OPENSSL_free(serial);
	if (r < 0)
		return fail(r, &err);
	return 0;
}
