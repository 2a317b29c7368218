/* SPDX-License-Identifier: MIT */
/*
 * The `edgebridge` command: the certificate workflow around a key that
 * never leaves the token.  One file per command group; each command is a
 * `int cmd_GROUP_VERB(struct tool *t, int argc, char **argv)` returning an
 * exit code, registered in the table in edgebridge.c.
 */
#ifndef EB_TOOL_H
#define EB_TOOL_H

#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "../config/config.h"

struct tool {
	const char *config_path; /* -c FILE, or the default */
	struct eb_config *cfg;	 /* loaded on demand by tool_config() */
	bool json;		 /* --json: machine-readable output */
	bool quiet;
};

/* Loads (once) and returns the configuration, or NULL after printing every
 * problem as file:line. */
struct eb_config *tool_config(struct tool *t);

/* Errors: "edgebridge: <message>" on stderr, with what to do. */
void tool_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads a secret (PIN) from a file (one trailing newline stripped) or, when
 * path is NULL or "-" and stdin is a terminal, from a prompt without echo.
 * Never from argv.  Returns 0 or -errno; the caller cleanses buf. */
int tool_read_secret(const char *path, const char *prompt, char *buf,
		     size_t len);

/* The certificates as PEM, in order, through eb_write_file (0644). */
int tool_write_certs(const char *path, X509 *const *certs, size_t n);
/* Up to max PEM certificates of path; -ENOENT, -EINVAL when none. */
int tool_read_certs(const char *path, X509 **certs, size_t max, size_t *n);

/* A JSON string literal of s on f (escaped). */
void tool_json_str(FILE *f, const char *s);

/* cert renew's new key: on the configured token, of the current key's type
 * unless type is given, labelled label or <current label>-<YYYYMMDD>; its
 * URI in uri.  0 or an exit code (the reason printed). */
int tool_renew_key(struct tool *t, const char *type, const char *label,
		   char *uri, size_t uri_len);
/* Stores leaf on the token beside the key key_uri names (same CKA_ID and
 * label).  0 or an exit code (the reason printed). */
int tool_store_leaf(struct tool *t, const char *key_uri, X509 *leaf);
/* Exit codes: 0 ok, 1 a check failed / operation failed, 2 usage,
 * 77 wrong PIN, 78 configuration problem (as the daemon). */

int cmd_token_list(struct tool *t, int argc, char **argv);
int cmd_token_init(struct tool *t, int argc, char **argv);
int cmd_key_create(struct tool *t, int argc, char **argv);
int cmd_key_list(struct tool *t, int argc, char **argv);
int cmd_cert_csr(struct tool *t, int argc, char **argv);
int cmd_cert_check(struct tool *t, int argc, char **argv);
int cmd_cert_install(struct tool *t, int argc, char **argv);
int cmd_cert_renew(struct tool *t, int argc, char **argv);
int cmd_cert_export(struct tool *t, int argc, char **argv);
int cmd_ca_init(struct tool *t, int argc, char **argv);
int cmd_ca_intermediate(struct tool *t, int argc, char **argv);
int cmd_ca_sign(struct tool *t, int argc, char **argv);
int cmd_ca_crl(struct tool *t, int argc, char **argv);

#endif
