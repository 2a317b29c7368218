/* SPDX-License-Identifier: MIT */
/*
 * edgebridge: token, key, certificate and development-CA commands.
 *
 *   edgebridge [-c FILE] [--json] GROUP VERB [options]
 *
 * It reads the daemon's configuration (the same [hsm] and [cloud] keys), so
 * a fleet script needs no extra arguments to find the token and the chain.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "../common/util.h"
#include "../drivers/driver.h"
#include "tool.h"

#ifndef EB_VERSION
#define EB_VERSION "0.1.0"
#endif

static const struct {
	const char *group, *verb;
	int (*fn)(struct tool *t, int argc, char **argv);
	const char *help;
} commands[] = {
	{ "token", "list", cmd_token_list,
	  "slots and tokens of the configured PKCS#11 module" },
	{ "token", "init", cmd_token_init,
	  "--label L [--so-pin-file F] [--pin-file F]: initialise a token" },
	{ "key", "create", cmd_key_create,
	  "--type ec-p256|ec-p384|rsa-2048|rsa-3072|rsa-4096 --label L: "
	  "generate a key pair on the token (never extractable)" },
	{ "key", "list", cmd_key_list, "keys on the token" },
	{ "cert", "csr", cmd_cert_csr,
	  "--cn ID [--subject /O=.../OU=...] [--label L] -o FILE: a CSR "
	  "signed by the token key" },
	{ "cert", "check", cmd_cert_check,
	  "[CHAIN.pem] [--cloud cumulocity|thingsboard]: every rule the "
	  "cloud enforces" },
	{ "cert", "install", cmd_cert_install,
	  "CHAIN.pem [--on-token]: verify against the token key (or a "
	  "renewal's), order, install (the previous one kept)" },
	{ "cert", "renew", cmd_cert_renew,
	  "-o CSR [--type T] [--label L] | --status | --cancel: a new key "
	  "on the token and its CSR; edgebridged switches after a test "
	  "connection" },
	{ "cert", "export", cmd_cert_export,
	  "--ca PEM | --p12 FILE: what the cloud's trust store takes" },
	{ "ca", "init", cmd_ca_init,
	  "--dir D [--cn NAME] [--pathlen N]: a development root CA" },
	{ "ca", "intermediate", cmd_ca_intermediate,
	  "--dir D --parent P [--cn NAME] [--pathlen N]: an intermediate" },
	{ "ca", "sign", cmd_ca_sign,
	  "--dir D CSR [-o FILE] [--days N]: sign a device CSR" },
	{ "ca", "crl", cmd_ca_crl, "--dir D [--revoke SERIAL] [-o FILE]" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: edgebridge [-c FILE] [--json] GROUP VERB "
		   "[options]\n\n");
	for (size_t i = 0; i < EB_ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-5s %-12s %s\n", commands[i].group,
			commands[i].verb, commands[i].help);
	fprintf(f, "\n  -c FILE   configuration (default "
		   "/etc/edgebridge/edgebridge.conf)\n"
		   "  --json    machine-readable output\n"
		   "Secrets (PINs) are read from files or a prompt, never "
		   "from the command line.\n");
}

void tool_err(const char *fmt, ...)
{
	va_list ap;

	fputs("edgebridge: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

struct eb_config *tool_config(struct tool *t)
{
	struct eb_diags d = { 0 };

	if (t->cfg)
		return t->cfg;
	t->cfg = config_load(t->config_path, driver_check_config, &d);
	for (size_t i = 0; i < d.n; i++)
		fprintf(stderr, "%s\n", d.msg[i]);
	diags_free(&d);
	return t->cfg;
}

int tool_read_secret(const char *path, const char *prompt, char *buf,
		     size_t len)
{
	ssize_t n;
	int fd;

	if (path && strcmp(path, "-")) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		n = read(fd, buf, len - 1);
		close(fd);
		if (n < 0)
			return -errno;
	} else {
		struct termios old, quiet;
		bool tty = isatty(0) && tcgetattr(0, &old) == 0;

		if (!tty)
			return -ENOTTY; /* no prompt without a terminal */
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
		/* prompt only once echo is off: nothing typed is lost */
		fprintf(stderr, "%s: ", prompt);
		n = read(0, buf, len - 1);
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
		if (n < 0)
			return -errno;
	}
	buf[n] = '\0';
	if (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return n ? 0 : -EINVAL;
}

void tool_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

int main(int argc, char **argv)
{
	struct tool t = { .config_path = "/etc/edgebridge/edgebridge.conf" };
	int i = 1, rc;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-c") && i + 1 < argc)
			t.config_path = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			t.json = true;
		else if (!strcmp(argv[i], "-q"))
			t.quiet = true;
		else if (!strcmp(argv[i], "--version")) {
			printf("edgebridge %s\n", EB_VERSION);
			return 0;
		} else if (!strcmp(argv[i], "-h") ||
			   !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (argc - i < 2) {
		usage(stderr);
		return 2;
	}
	for (size_t k = 0; k < EB_ARRAY_SIZE(commands); k++) {
		if (strcmp(commands[k].group, argv[i]) ||
		    strcmp(commands[k].verb, argv[i + 1]))
			continue;
		/* the command sees its own options from argv[0] = verb */
		rc = commands[k].fn(&t, argc - i - 1, argv + i + 1);
		config_free(t.cfg);
		return rc;
	}
	tool_err("unknown command '%s %s' (see edgebridge --help)", argv[i],
		 argv[i + 1]);
	return 2;
}
