/* SPDX-License-Identifier: MIT */
/*
 * edgebridge cert check [CHAIN.pem] [--cloud cumulocity|thingsboard]
 *                       [--cn ID] [--no-token] [--json]
 *
 * Every rule the clouds enforce (hsm/certcheck.c, strict mode), each
 * reported pass/warn/fail/skip with its reason.  The chain and the expected
 * CN come from the configuration when it is readable; the key match needs
 * the token, and is reported as skipped (not failed) when the token cannot
 * be opened, so the other rules still say what they found.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../hsm/certcheck.h"
#include "../hsm/hsm.h"
#include "tool.h"

#define DEFAULT_WARN_SECONDS (30 * 86400)

static void print_text(const struct cc_report *rep, const char *file,
		       const char *cloud)
{
	printf("%s (%s):\n", file, cloud);
	for (size_t i = 0; i < rep->n; i++) {
		const struct cc_result *r = &rep->r[i];
		char st[8];
		size_t k;

		/* "PASS", "WARN", ... */
		eb_strlcpy(st, certcheck_status_name(r->status), sizeof(st));
		for (k = 0; st[k]; k++)
			st[k] = (char)(st[k] - 'a' + 'A');
		printf("  %-4s %-13s %s\n", st, r->rule, r->msg);
	}
	printf("%s: %zu failed, %zu warnings: %s\n", file, rep->n_fail,
	       rep->n_warn,
	       rep->n_fail ? "fix the failures above"
			   : "the cloud will take it");
}

static void print_json(const struct cc_report *rep, const char *file,
		       const char *cloud, const char *cn)
{
	printf("{\"file\":");
	tool_json_str(stdout, file);
	printf(",\"cloud\":");
	tool_json_str(stdout, cloud);
	printf(",\"cn\":");
	if (cn)
		tool_json_str(stdout, cn);
	else
		printf("null");
	printf(",\"ok\":%s,\"failures\":%zu,\"warnings\":%zu,\"results\":[",
	       rep->n_fail ? "false" : "true", rep->n_fail, rep->n_warn);
	for (size_t i = 0; i < rep->n; i++) {
		printf("%s{\"rule\":", i ? "," : "");
		tool_json_str(stdout, rep->r[i].rule);
		printf(",\"status\":\"%s\",\"message\":",
		       certcheck_status_name(rep->r[i].status));
		tool_json_str(stdout, rep->r[i].msg);
		printf("}");
	}
	printf("]}\n");
}

int cmd_cert_check(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cloud", required_argument, NULL, 'C' },
		{ "cn", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "no-token", no_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *chain = NULL, *cloud = NULL, *cn = NULL;
	struct eb_config *cfg = NULL;
	struct hsm *h = NULL;
	struct eb_err err = { "" };
	struct cc_params p = { 0 };
	struct cc_report rep;
	char skip[sizeof(err.msg) + 64];
	bool no_token = false, readable;
	int c, prof;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'C':
			cloud = optarg;
			break;
		case 'n':
			cn = optarg;
			break;
		case 'j':
			t->json = true;
			break;
		case 'T':
			no_token = true;
			break;
		case 'h':
			printf("Usage: edgebridge cert check [CHAIN.pem] "
			       "[--cloud cumulocity|thingsboard] [--cn ID] "
			       "[--no-token] [--json]\n");
			return 0;
		case ':':
			tool_err("cert check: %s needs a value",
				 argv[optind - 1]);
			return 2;
		default:
			tool_err("cert check: unknown option '%s' (see "
				 "edgebridge cert check --help)",
				 argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc)
		chain = argv[optind++];
	if (optind < argc) {
		tool_err("cert check: one chain file at a time ('%s' is extra)",
			 argv[optind]);
		return 2;
	}

	/* The configuration is optional when the chain is given. */
	readable = access(t->config_path, R_OK) == 0;
	if (readable) {
		cfg = tool_config(t);
		if (!cfg && !chain) {
			tool_err("cannot load %s (see above): fix it, or give "
				 "the chain file as an argument",
				 t->config_path);
			return 78;
		}
	} else if (!chain) {
		tool_err("no chain file given and %s is not readable (%s): "
			 "give CHAIN.pem, or the configuration with -c FILE",
			 t->config_path, strerror(errno));
		return 78;
	}
	if (!chain)
		chain = cfg->cloud.cert_file;
	if (!cn && cfg)
		cn = cfg->gateway.id;
	if (!cloud)
		cloud = cfg && cfg->cloud.profile ? cfg->cloud.profile
						  : "cumulocity";
	prof = certcheck_profile(cloud);
	if (prof < 0) {
		tool_err("cert check: unknown cloud '%s': use cumulocity or "
			 "thingsboard",
			 cloud);
		return 2;
	}

	p = (struct cc_params){
		.cert_file = chain,
		.expect_cn = cn,
		.now = time(NULL),
		.warn_seconds =
			cfg && cfg->cloud.cert_warn_ms
				? (int64_t)(cfg->cloud.cert_warn_ms / 1000)
				: DEFAULT_WARN_SECONDS,
		.profile = (enum cc_profile)prof,
		.strict = true,
	};
	if (no_token) {
		p.key_skip = "--no-token given";
	} else if (!cfg) {
		snprintf(skip, sizeof(skip),
			 "%s configuration (%s) to find the token: %s",
			 readable ? "an invalid" : "no readable",
			 t->config_path,
			 readable ? "fix it (see above)" : "give -c FILE");
		p.key_skip = skip;
	} else if (!cfg->hsm.pin_file) {
		p.key_skip = "no hsm.pin_file (nor $CREDENTIALS_DIRECTORY/pin) "
			     "to log in to the token";
	} else {
		enum hsm_fail hf;

		h = hsm_open(cfg->hsm.module, cfg->hsm.pin_file, cfg->hsm.key,
			     &hf, &err);
		if (h) {
			p.key = hsm_key(h);
		} else {
			snprintf(skip, sizeof(skip), "token not reachable: %s",
				 err.msg);
			p.key_skip = skip;
		}
	}

	certcheck_run(&p, &rep);
	if (t->json)
		print_json(&rep, chain, cloud, cn);
	else
		print_text(&rep, chain, cloud);
	fflush(stdout);
	hsm_close(h);
	return rep.n_fail ? 1 : 0;
}
