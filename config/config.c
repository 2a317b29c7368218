/* SPDX-License-Identifier: MIT */
/*
 * Configuration loading in two passes.
 *
 * Pass one reads the main file and the conf.d drop-ins with libinih into a
 * flat list of (section, key, value, file:line); a later assignment replaces
 * an earlier one, which is exactly the override rule fleets rely on.
 * Pass two walks that list once against a table of known keys, converts
 * each value and reports every problem with the file:line it came from.
 * Keeping the raw list means a bad value is always reported where it was
 * written, even when it came from a drop-in.
 *
 * libinih on bookworm is built without INI_HANDLER_LINENO, so the line
 * number comes from our own reader callback: inih hands each line to the
 * handler right after reading it.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/util.h"
#include "config.h"

#define MAX_LINE 4096
#define MAX_DROPINS 256

void diags_add(struct eb_diags *d, const struct eb_loc *loc, const char *fmt,
	       ...)
{
	char body[1024];
	char *line;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	if (loc && loc->file && loc->line) {
		if (asprintf(&line, "%s:%u: %s", loc->file, loc->line, body) <
		    0)
			return;
	} else if (loc && loc->file) {
		if (asprintf(&line, "%s: %s", loc->file, body) < 0)
			return;
	} else if (!(line = strdup(body))) {
		return;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 8;
		char **m = realloc(d->msg, cap * sizeof(*m));

		if (!m) {
			free(line);
			return;
		}
		d->msg = m;
		d->cap = cap;
	}
	d->msg[d->n++] = line;
}

void diags_free(struct eb_diags *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->msg[i]);
	free(d->msg);
	memset(d, 0, sizeof(*d));
}

/* ---- value parsers ------------------------------------------------------ */

int config_parse_uint(const char *s, uint64_t max, uint64_t *v)
{
	char *end;
	unsigned long long x;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno == ERANGE || x > max)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*v = x;
	return 0;
}

int config_parse_double(const char *s, double *v)
{
	char *end;
	double x;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	x = strtod(s, &end);
	if (errno == ERANGE || !isfinite(x))
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*v = x;
	return 0;
}

/*
 * "500ms", "10s", "5m", "1h", "1d" and sums of them ("1h30m"); a bare number
 * means seconds, as in systemd.
 */
int config_parse_duration_ms(const char *s, uint64_t *ms)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{ "ms", 1 },	   { "s", 1000 },    { "sec", 1000 },
		{ "m", 60000 },	   { "min", 60000 }, { "h", 3600000 },
		{ "d", 86400000 },
	};
	uint64_t total = 0;
	const char *p = s;

	if (!s || !*s)
		return -EINVAL;
	while (*p) {
		char *end;
		unsigned long long n;
		size_t ulen = 0;
		uint64_t mult = 0;

		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		errno = 0;
		n = strtoull(p, &end, 10);
		if (errno == ERANGE)
			return -ERANGE;
		while (isalpha((unsigned char)end[ulen]))
			ulen++;
		if (ulen == 0) {
			if (end[0] || p != s) /* bare number only alone */
				return -EINVAL;
			mult = 1000;
		}
		for (size_t i = 0; ulen && i < EB_ARRAY_SIZE(units); i++)
			if (strlen(units[i].suffix) == ulen &&
			    !strncmp(end, units[i].suffix, ulen))
				mult = units[i].mult;
		if (!mult)
			return -EINVAL;
		if (n > (UINT64_MAX - total) / mult)
			return -ERANGE;
		total += n * mult;
		p = end + ulen;
	}
	*ms = total;
	return 0;
}

/* "4096", "64K", "64M", "1G" (powers of 1024; "KiB"/"MiB" also accepted). */
int config_parse_size(const char *s, uint64_t *bytes)
{
	char *end;
	unsigned long long n;
	uint64_t mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K':
			mult = 1ULL << 10;
			break;
		case 'M':
			mult = 1ULL << 20;
			break;
		case 'G':
			mult = 1ULL << 30;
			break;
		case 'T':
			mult = 1ULL << 40;
			break;
		default:
			return -EINVAL;
		}
		end++;
		if (*end && strcmp(end, "iB") && strcmp(end, "B"))
			return -EINVAL;
	}
	if (n > UINT64_MAX / mult)
		return -ERANGE;
	*bytes = n * mult;
	return 0;
}

int config_parse_bool(const char *s, bool *b)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < EB_ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*b = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*b = false;
			return 0;
		}
	}
	return -EINVAL;
}

static const struct {
	const char *name;
	enum eb_log_level level;
} log_levels[] = {
	{ "error", EB_LOG_ERR },     { "warning", EB_LOG_WARNING },
	{ "notice", EB_LOG_NOTICE }, { "info", EB_LOG_INFO },
	{ "debug", EB_LOG_DEBUG },
};

int config_parse_log_level(const char *s, enum eb_log_level *l)
{
	for (size_t i = 0; i < EB_ARRAY_SIZE(log_levels); i++)
		if (!strcasecmp(s, log_levels[i].name)) {
			*l = log_levels[i].level;
			return 0;
		}
	return -EINVAL;
}

const char *config_log_level_name(enum eb_log_level l)
{
	for (size_t i = 0; i < EB_ARRAY_SIZE(log_levels); i++)
		if (log_levels[i].level == l)
			return log_levels[i].name;
	return "?";
}

/* ---- pass one: raw assignments ------------------------------------------ */

struct raw {
	char *section;
	char *key;
	char *value;
	struct eb_loc loc;
};

/* Where each "[section]" header was written (for section-level errors). */
struct header {
	char *section;
	struct eb_loc loc;
};

struct loader {
	struct header *hdr;
	size_t n_hdr;
	struct raw *raw;
	size_t n_raw, cap_raw;
	struct eb_config *cfg;
	struct eb_diags *diags;
	const char *file; /* current file (owned by cfg->files) */
	unsigned line;	  /* current line */
	bool at_line_start;
	FILE *fp;
	/* a drop-in read from another file (a candidate being checked) */
	const char *subst_name, *subst_file;
};

static void note_header(struct loader *l, const char *line)
{
	const char *p = line + strspn(line, " \t"), *end;
	struct header *h;

	if (*p != '[' || !(end = strchr(p, ']')))
		return;
	h = realloc(l->hdr, (l->n_hdr + 1) * sizeof(*h));
	if (!h)
		return;
	l->hdr = h;
	h = &l->hdr[l->n_hdr];
	h->section = strndup(p + 1, (size_t)(end - p - 1));
	if (!h->section)
		return;
	h->loc.file = l->file;
	h->loc.line = l->line;
	l->n_hdr++;
}

static char *reader(char *str, int num, void *stream)
{
	struct loader *l = stream;
	bool start = l->at_line_start;
	char *r;

	if (start)
		l->line++;
	r = fgets(str, num, l->fp);
	if (r) {
		size_t len = strlen(r);

		if (start)
			note_header(l, r);
		l->at_line_start = len && r[len - 1] == '\n';
	}
	return r;
}

/* The header that opened the section a key at loc belongs to. */
static const struct eb_loc *
header_of(const struct loader *l, const char *section, const struct eb_loc *loc)
{
	const struct eb_loc *best = loc;

	for (size_t i = 0; i < l->n_hdr; i++) {
		const struct header *h = &l->hdr[i];

		if (h->loc.file == loc->file && h->loc.line <= loc->line &&
		    streq(h->section, section))
			best = &h->loc;
	}
	return best;
}

static int add_raw(struct loader *l, const char *section, const char *key,
		   const char *value)
{
	struct raw *r = NULL;

	for (size_t i = 0; i < l->n_raw; i++)
		if (streq(l->raw[i].section, section) &&
		    streq(l->raw[i].key, key))
			r = &l->raw[i];
	if (!r) {
		if (l->n_raw == l->cap_raw) {
			size_t cap = l->cap_raw ? l->cap_raw * 2 : 32;
			struct raw *n = realloc(l->raw, cap * sizeof(*n));

			if (!n)
				return -ENOMEM;
			l->raw = n;
			l->cap_raw = cap;
		}
		r = &l->raw[l->n_raw++];
		memset(r, 0, sizeof(*r));
		r->section = strdup(section);
		r->key = strdup(key);
		if (!r->section || !r->key)
			return -ENOMEM;
	}
	free(r->value);
	r->value = strdup(value);
	if (!r->value)
		return -ENOMEM;
	r->loc.file = l->file;
	r->loc.line = l->line;
	return 0;
}

static int handler(void *user, const char *section, const char *name,
		   const char *value)
{
	struct loader *l = user;
	struct eb_loc loc = { l->file, l->line };

	if (!*section) {
		diags_add(l->diags, &loc,
			  "'%s' is outside any section (start with [gateway])",
			  name);
		return 1;
	}
	if (add_raw(l, section, name, value) < 0) {
		diags_add(l->diags, &loc, "out of memory");
		return 0;
	}
	return 1;
}

static const char *keep_file_name(struct eb_config *c, const char *path)
{
	char **n = realloc(c->files, (c->n_files + 1) * sizeof(*n));

	if (!n)
		return NULL;
	c->files = n;
	c->files[c->n_files] = strdup(path);
	if (!c->files[c->n_files])
		return NULL;
	return c->files[c->n_files++];
}

static int parse_file(struct loader *l, const char *path, bool required)
{
	struct eb_loc loc = { path, 0 };
	int r;

	l->fp = fopen(path, "re");
	if (!l->fp) {
		if (!required && errno == ENOENT)
			return 0;
		diags_add(l->diags, &loc, "cannot open: %s", strerror(errno));
		return -errno;
	}
	l->file = keep_file_name(l->cfg, path);
	if (!l->file) {
		fclose(l->fp);
		return -ENOMEM;
	}
	l->line = 0;
	l->at_line_start = true;

	/* Runtime knobs of Debian's libinih: long lines (pkcs11 URIs), no
	 * Python-style continuation lines (an indented line is more likely a
	 * mistake than a continuation), ';' inline comments. */
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = MAX_LINE;
	ini_allow_multiline = false;
	ini_allow_inline_comments = true;

	r = ini_parse_stream(reader, l, handler, l);
	fclose(l->fp);
	l->fp = NULL;
	if (r > 0) {
		loc.file = l->file;
		loc.line = (unsigned)r;
		diags_add(
			l->diags, &loc,
			"syntax error: expected '[section]' or 'key = value'");
	} else if (r < 0) {
		diags_add(l->diags, &loc, "cannot read");
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* conf.d/ beside the main file: every "*.conf", lexical (C locale) order. */
char *config_dropin_dir(const char *main_path)
{
	const char *slash = strrchr(main_path, '/');
	char *dir;

	if (asprintf(&dir, "%.*s%sconf.d", slash ? (int)(slash - main_path) : 0,
		     main_path, slash ? "/" : "") < 0)
		return NULL;
	return dir;
}

static void parse_dropins(struct loader *l, const char *main_path)
{
	_cleanup_free_ char *dir = config_dropin_dir(main_path);
	char *names[MAX_DROPINS];
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	if (!dir)
		return;
	d = opendir(dir);
	if (!d)
		return; /* no drop-in directory: fine */
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.' || len < 6 ||
		    strcmp(de->d_name + len - 5, ".conf"))
			continue;
		if (l->subst_name && streq(de->d_name, l->subst_name))
			continue; /* replaced by the candidate below */
		if (n == MAX_DROPINS) {
			struct eb_loc loc = { dir, 0 };

			diags_add(l->diags, &loc,
				  "more than %d drop-ins; the rest are ignored",
				  MAX_DROPINS);
			break;
		}
		if (asprintf(&names[n], "%s/%s", dir, de->d_name) >= 0)
			n++;
	}
	closedir(d);
	if (l->subst_name && n < MAX_DROPINS &&
	    asprintf(&names[n], "%s/%s", dir, l->subst_name) >= 0)
		n++;
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (size_t i = 0; i < n; i++) {
		const char *base = strrchr(names[i], '/') + 1;

		if (l->subst_name && streq(base, l->subst_name))
			parse_file(l, l->subst_file, false);
		else
			parse_file(l, names[i], false);
		free(names[i]);
	}
}

/* ---- pass two: the table of known keys ---------------------------------- */

enum kind {
	K_STRING,
	K_PATH, /* absolute path */
	K_DURATION,
	K_PORT,
	K_UINT,
	K_SIZE,
	K_LOGLEVEL,
	K_CHOICE, /* index into choices, stored as int */
	K_BOOL,
};

struct key_def {
	const char *section;
	const char *key;
	enum kind kind;
	size_t offset;
	bool required;
	uint64_t min, max; /* for K_DURATION / K_UINT / K_SIZE; max 0 = none */
	const char *const *choices; /* K_CHOICE */
};

static const char *const overflow_choices[] = { "drop-oldest", "drop-newest",
						NULL };
static const char *const sync_choices[] = { "normal", "full", NULL };

#define OFF(f) offsetof(struct eb_config, f)

#define KEY(s, k, kind_, field, req, lo, hi)                                   \
	{                                                                      \
		.section = s, .key = k, .kind = kind_, .offset = OFF(field),   \
		.required = req, .min = lo, .max = hi                          \
	}
#define KEYC(s, k, field, list)                                                \
	{                                                                      \
		.section = s, .key = k, .kind = K_CHOICE,                      \
		.offset = OFF(field), .choices = list                          \
	}

static const struct key_def keys[] = {
	KEY("gateway", "id", K_STRING, gateway.id, true, 0, 0),
	KEY("gateway", "name", K_STRING, gateway.name, false, 0, 0),
	KEY("gateway", "type", K_STRING, gateway.type, false, 0, 0),
	KEY("gateway", "state_dir", K_PATH, gateway.state_dir, false, 0, 0),
	KEY("gateway", "log_level", K_LOGLEVEL, gateway.log_level, false, 0, 0),
	KEY("hsm", "module", K_PATH, hsm.module, true, 0, 0),
	KEY("hsm", "key", K_STRING, hsm.key, true, 0, 0),
	KEY("hsm", "pin_file", K_PATH, hsm.pin_file, false, 0, 0),
	KEY("cloud", "profile", K_STRING, cloud.profile, false, 0, 0),
	KEY("cloud", "transport", K_STRING, cloud.transport, false, 0, 0),
	KEY("cloud", "host", K_STRING, cloud.host, true, 0, 0),
	KEY("cloud", "port", K_PORT, cloud.port, false, 1, 65535),
	KEY("cloud", "ca_file", K_PATH, cloud.ca_file, true, 0, 0),
	KEY("cloud", "cert_file", K_PATH, cloud.cert_file, true, 0, 0),
	KEY("cloud", "keepalive", K_DURATION, cloud.keepalive_ms, false, 5000,
	    65535000),
	KEY("cloud", "backoff_min", K_DURATION, cloud.backoff_min_ms, false, 10,
	    3600000),
	KEY("cloud", "backoff_max", K_DURATION, cloud.backoff_max_ms, false,
	    100, 86400000),
	KEY("cloud", "required_interval", K_DURATION,
	    cloud.required_interval_min, false, 60000, 0),
	KEY("cloud", "max_inflight", K_UINT, cloud.max_inflight, false, 1,
	    1000),
	KEY("cloud", "coap_ack_timeout", K_DURATION, cloud.coap_ack_timeout_ms,
	    false, 100, 60000),
	KEY("cloud", "coap_max_retransmit", K_UINT, cloud.coap_max_retransmit,
	    false, 1, 20),
	KEY("cloud", "coap_nstart", K_UINT, cloud.coap_nstart, false, 1, 64),
	KEY("cloud", "shutdown_timeout", K_DURATION, cloud.shutdown_timeout_ms,
	    false, 0, 600000),
	KEY("cloud", "cert_warn", K_DURATION, cloud.cert_warn_ms, false, 0, 0),
	KEY("cloud", "bulk", K_BOOL, cloud.bulk, false, 0, 0),
	KEY("cloud", "http_url", K_STRING, cloud.http_url, false, 0, 0),
	KEY("cloud", "http_ca_file", K_PATH, cloud.http_ca_file, false, 0, 0),
	KEY("cloud", "http_mtls", K_BOOL, cloud.http_mtls, false, 0, 0),
	KEY("cloud", "http_timeout", K_DURATION, cloud.http_timeout_ms, false,
	    1000, 0),
	KEY("cloud", "bulk_threshold", K_UINT, cloud.bulk_threshold, false, 1,
	    0),
	KEY("cloud", "bulk_batch", K_UINT, cloud.bulk_batch, false, 1, 10000),
	KEY("cloud", "bulk_max_body", K_SIZE, cloud.bulk_max_body, false, 4096,
	    64ULL << 20),
	KEY("cloud", "bulk_parallel", K_UINT, cloud.bulk_parallel, false, 1,
	    16),
	KEY("cloud", "token_timeout", K_DURATION, cloud.token_timeout_ms, false,
	    1000, 0),
	KEY("cloud", "token_fallback", K_BOOL, cloud.token_fallback, false, 0,
	    0),
	KEY("cloud", "token_url", K_STRING, cloud.token_url, false, 0, 0),
	KEY("cloud", "restart_command", K_STRING, cloud.restart_command, false,
	    0, 0),
	KEY("cloud", "relay", K_STRING, cloud.relay, false, 0, 0),
	KEY("cloud", "gpio_pins", K_STRING, cloud.gpio_pins, false, 0, 0),
	KEY("store", "max_size", K_SIZE, store.max_size, false, 65536, 0),
	KEY("store", "max_age", K_DURATION, store.max_age_ms, false, 0, 0),
	KEYC("store", "overflow", store.overflow, overflow_choices),
	KEYC("store", "sync", store.sync, sync_choices),
	KEY("store", "ram_samples", K_UINT, store.ram_samples, false, 16,
	    10000000),
};

static const struct key_def *find_key(const char *section, const char *key,
				      bool *section_known)
{
	*section_known = false;
	for (size_t i = 0; i < EB_ARRAY_SIZE(keys); i++) {
		if (!streq(keys[i].section, section))
			continue;
		*section_known = true;
		if (streq(keys[i].key, key))
			return &keys[i];
	}
	return NULL;
}

static void convert(struct eb_config *c, const struct key_def *k,
		    const struct raw *r, struct eb_diags *d)
{
	void *field = (char *)c + k->offset;
	const struct eb_loc *loc = &r->loc;
	uint64_t v = 0;
	int e;

	switch (k->kind) {
	case K_PATH:
		if (r->value[0] != '/') {
			diags_add(d, loc,
				  "%s.%s: '%s' must be an absolute path",
				  k->section, k->key, r->value);
			return;
		}
		/* fall through */
	case K_STRING:
		if (!*r->value) {
			diags_add(d, loc, "%s.%s: empty value", k->section,
				  k->key);
			return;
		}
		free(*(char **)field);
		*(char **)field = strdup(r->value);
		return;
	case K_CHOICE: {
		char names[128] = "";

		for (int i = 0; k->choices[i]; i++) {
			if (streq(k->choices[i], r->value)) {
				*(int *)field = i;
				return;
			}
			snprintf(names + strlen(names),
				 sizeof(names) - strlen(names), "%s%s",
				 i ? ", " : "", k->choices[i]);
		}
		diags_add(d, loc, "%s.%s: '%s' is not one of: %s", k->section,
			  k->key, r->value, names);
		return;
	}
	case K_BOOL:
		if (config_parse_bool(r->value, field) < 0)
			diags_add(d, loc,
				  "%s.%s: '%s' is not a boolean "
				  "(yes, no, true, false, on, off, 1, 0)",
				  k->section, k->key, r->value);
		return;
	case K_LOGLEVEL:
		if (config_parse_log_level(r->value, field) < 0)
			diags_add(d, loc,
				  "%s.%s: '%s' is not a log level "
				  "(error, warning, notice, info, debug)",
				  k->section, k->key, r->value);
		return;
	case K_DURATION:
		e = config_parse_duration_ms(r->value, &v);
		if (e < 0) {
			diags_add(d, loc,
				  "%s.%s: '%s' is not a duration "
				  "(use e.g. 500ms, 10s, 5m, 1h)",
				  k->section, k->key, r->value);
			return;
		}
		break;
	case K_SIZE:
		e = config_parse_size(r->value, &v);
		if (e < 0) {
			diags_add(d, loc,
				  "%s.%s: '%s' is not a size "
				  "(use e.g. 4096, 64K, 64M, 1G)",
				  k->section, k->key, r->value);
			return;
		}
		break;
	case K_PORT:
	case K_UINT:
		e = config_parse_uint(r->value, UINT32_MAX, &v);
		if (e < 0) {
			diags_add(d, loc, "%s.%s: '%s' is not a whole number",
				  k->section, k->key, r->value);
			return;
		}
		break;
	}
	if (v < k->min || (k->max && v > k->max)) {
		const char *unit = k->kind == K_DURATION ? " ms" : "";

		if (k->max)
			diags_add(d, loc,
				  "%s.%s: '%s' is out of range (%" PRIu64
				  "..%" PRIu64 "%s)",
				  k->section, k->key, r->value, k->min, k->max,
				  unit);
		else
			diags_add(
				d, loc,
				"%s.%s: '%s' is out of range (at least %" PRIu64
				"%s)",
				k->section, k->key, r->value, k->min, unit);
		return;
	}
	/* Store into the field's own width. */
	if (k->offset == OFF(cloud.port))
		c->cloud.port = (unsigned)v;
	else if (k->offset == OFF(cloud.required_interval_min))
		c->cloud.required_interval_min = (unsigned)(v / 60000);
	else if (k->offset == OFF(cloud.max_inflight))
		c->cloud.max_inflight = (unsigned)v;
	else if (k->offset == OFF(cloud.coap_max_retransmit))
		c->cloud.coap_max_retransmit = (unsigned)v;
	else if (k->offset == OFF(cloud.coap_nstart))
		c->cloud.coap_nstart = (unsigned)v;
	else if (k->offset == OFF(cloud.bulk_threshold))
		c->cloud.bulk_threshold = (unsigned)v;
	else if (k->offset == OFF(cloud.bulk_batch))
		c->cloud.bulk_batch = (unsigned)v;
	else if (k->offset == OFF(cloud.bulk_parallel))
		c->cloud.bulk_parallel = (unsigned)v;
	else if (k->offset == OFF(store.ram_samples))
		c->store.ram_samples = (size_t)v;
	else
		*(uint64_t *)field = v;
}

static struct eb_sensor_conf *sensor_get(struct eb_config *c, const char *name,
					 const struct eb_loc *loc)
{
	struct eb_sensor_conf *s;

	for (size_t i = 0; i < c->n_sensor; i++)
		if (streq(c->sensor[i].name, name))
			return &c->sensor[i];
	s = realloc(c->sensor, (c->n_sensor + 1) * sizeof(*s));
	if (!s)
		return NULL;
	c->sensor = s;
	s = &c->sensor[c->n_sensor++];
	memset(s, 0, sizeof(*s));
	s->name = strdup(name);
	s->interval_ms = 10000;
	s->loc = *loc;
	return s->name ? s : NULL;
}

static int sensor_add_opt(struct eb_sensor_conf *s, const struct raw *r)
{
	struct eb_kv *kv = realloc(s->opt, (s->n_opt + 1) * sizeof(*kv));

	if (!kv)
		return -ENOMEM;
	s->opt = kv;
	kv = &s->opt[s->n_opt++];
	kv->key = strdup(r->key);
	kv->value = strdup(r->value);
	kv->loc = r->loc;
	kv->used = false;
	return kv->key && kv->value ? 0 : -ENOMEM;
}

struct eb_kv *config_sensor_opt(struct eb_sensor_conf *s, const char *key)
{
	for (size_t i = 0; i < s->n_opt; i++)
		if (streq(s->opt[i].key, key)) {
			s->opt[i].used = true;
			return &s->opt[i];
		}
	return NULL;
}

static bool valid_name(const char *s, bool allow_space)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch == 0x7f || (!allow_space && ch == ' '))
			return false;
	}
	return true;
}

static void check_sensor(struct eb_sensor_conf *s, struct eb_diags *d)
{
	struct eb_kv *kv;

	if (!valid_name(s->name, false) || strpbrk(s->name, ",\"")) {
		diags_add(d, &s->loc,
			  "[sensor.%s]: a sensor name may not contain spaces, "
			  "commas or quotes",
			  s->name);
	}
	kv = config_sensor_opt(s, "driver");
	if (!kv)
		diags_add(d, &s->loc, "[sensor.%s]: 'driver' is required",
			  s->name);
	else
		s->driver = strdup(kv->value);
	kv = config_sensor_opt(s, "interval");
	if (kv) {
		s->interval_loc = kv->loc;
		if (config_parse_duration_ms(kv->value, &s->interval_ms) < 0)
			diags_add(d, &kv->loc,
				  "sensor.%s.interval: '%s' is not a duration "
				  "(use e.g. 500ms, 10s, 5m, 1h)",
				  s->name, kv->value);
	}
	kv = config_sensor_opt(s, "fragment");
	s->fragment = strdup(kv ? kv->value : s->name);
	kv = config_sensor_opt(s, "series");
	s->series = strdup(kv ? kv->value : s->name);
	kv = config_sensor_opt(s, "unit");
	s->unit = strdup(kv ? kv->value : "");
	/* SmartREST template 200 takes these as plain CSV fields; the
	 * formatter quotes values, but names are identifiers. */
	if (s->fragment &&
	    (!valid_name(s->fragment, false) || strpbrk(s->fragment, ",\"")))
		diags_add(d, &s->loc,
			  "sensor.%s.fragment: '%s' may not contain spaces, "
			  "commas or quotes",
			  s->name, s->fragment);
	if (s->series &&
	    (!valid_name(s->series, false) || strpbrk(s->series, ",\"")))
		diags_add(d, &s->loc,
			  "sensor.%s.series: '%s' may not contain spaces, "
			  "commas or quotes",
			  s->name, s->series);
}

static bool is_readable_file(const char *path, struct eb_diags *d,
			     const struct eb_loc *loc, const char *what)
{
	if (access(path, R_OK) < 0) {
		diags_add(d, loc, "%s '%s': %s", what, path, strerror(errno));
		return false;
	}
	return true;
}

static struct eb_loc loc_of(const struct loader *l, const char *section,
			    const char *key, const char *main_file)
{
	struct eb_loc loc = { main_file, 0 };

	for (size_t i = 0; i < l->n_raw; i++)
		if (streq(l->raw[i].section, section) &&
		    streq(l->raw[i].key, key))
			return l->raw[i].loc;
	return loc;
}

static bool same_path(const char *a, const char *b)
{
	return a && b && streq(a, b);
}

static bool has_sensor(const struct eb_config *c, const char *name)
{
	for (size_t i = 0; i < c->n_sensor; i++)
		if (streq(c->sensor[i].name, name))
			return true;
	return false;
}

/* "7:relay, 8:valve" (commas or blanks between pairs): every pin once,
 * every sensor configured.  The drivers check that it is an output. */
static void parse_gpio_pins(struct loader *l, const char *main_file)
{
	struct eb_config *c = l->cfg;
	struct eb_loc loc = loc_of(l, "cloud", "gpio_pins", main_file);
	const char *p = c->cloud.gpio_pins;

	while (p && *p) {
		struct eb_gpio_pin *a;
		uint64_t pin;
		size_t n;
		char item[160], *colon;

		p += strspn(p, " \t,");
		n = strcspn(p, " \t,");
		if (!n)
			break;
		snprintf(item, sizeof(item), "%.*s", (int)n, p);
		p += n;
		colon = strchr(item, ':');
		if (!colon || n >= sizeof(item)) {
			diags_add(l->diags, &loc,
				  "cloud.gpio_pins: '%s' is not PIN:SENSOR "
				  "(e.g. 7:relay)",
				  item);
			continue;
		}
		*colon = '\0';
		if (config_parse_uint(item, 65535, &pin) < 0) {
			diags_add(l->diags, &loc,
				  "cloud.gpio_pins: '%s' is not a pin number",
				  item);
			continue;
		}
		if (!has_sensor(c, colon + 1)) {
			diags_add(l->diags, &loc,
				  "cloud.gpio_pins: no [sensor.%s] is "
				  "configured",
				  colon + 1);
			continue;
		}
		for (size_t i = 0; i < c->cloud.n_gpio_pin; i++)
			if (c->cloud.gpio_pin[i].pin == pin) {
				diags_add(l->diags, &loc,
					  "cloud.gpio_pins: pin %llu is "
					  "mapped twice",
					  (unsigned long long)pin);
				goto next;
			}
		a = realloc(c->cloud.gpio_pin,
			    (c->cloud.n_gpio_pin + 1) * sizeof(*a));
		if (!a)
			return;
		c->cloud.gpio_pin = a;
		a[c->cloud.n_gpio_pin].pin = (unsigned)pin;
		a[c->cloud.n_gpio_pin].sensor = strdup(colon + 1);
		if (a[c->cloud.n_gpio_pin].sensor)
			c->cloud.n_gpio_pin++;
	next:;
	}
}

static void check_semantics(struct loader *l, const char *main_file)
{
	struct eb_config *c = l->cfg;
	struct eb_diags *d = l->diags;
	struct eb_loc loc;

	if (c->gateway.id) {
		loc = loc_of(l, "gateway", "id", main_file);
		if (strchr(c->gateway.id, ':'))
			diags_add(d, &loc,
				  "gateway.id: '%s' contains ':'; the "
				  "certificate CN and MQTT client id must not",
				  c->gateway.id);
		else if (!valid_name(c->gateway.id, false) ||
			 strpbrk(c->gateway.id, "/+#,\""))
			diags_add(d, &loc,
				  "gateway.id: '%s' may not contain spaces or "
				  "any of / + # , \"",
				  c->gateway.id);
		else if (strlen(c->gateway.id) > 64)
			diags_add(d, &loc,
				  "gateway.id: longer than 64 characters (the "
				  "X.509 CN limit)");
	}
	if (c->gateway.name && strchr(c->gateway.name, '\n'))
		diags_add(d, &loc, "gateway.name: contains a newline");
	if (c->hsm.key) {
		loc = loc_of(l, "hsm", "key", main_file);
		if (strncmp(c->hsm.key, "pkcs11:", 7))
			diags_add(d, &loc,
				  "hsm.key: must be an RFC 7512 URI starting "
				  "with 'pkcs11:'");
		else if (strstr(c->hsm.key, "pin-value") ||
			 strstr(c->hsm.key, "pin-source"))
			diags_add(d, &loc,
				  "hsm.key: the URI must not carry the PIN "
				  "(pin-value/pin-source); use hsm.pin_file");
	}
	if (c->hsm.module) {
		loc = loc_of(l, "hsm", "module", main_file);
		is_readable_file(c->hsm.module, d, &loc, "hsm.module");
	}
	if (!c->hsm.pin_file) {
		const char *cred = getenv("CREDENTIALS_DIRECTORY");

		if (cred && *cred &&
		    asprintf(&c->hsm.pin_file, "%s/pin", cred) < 0)
			c->hsm.pin_file = NULL;
	}
	loc = loc_of(l, "hsm", "pin_file", main_file);
	if (!c->hsm.pin_file) {
		diags_add(d, &loc,
			  "hsm.pin_file is required (or the systemd "
			  "credential 'pin')");
		d->n_unset++;
	} else {
		struct stat st;

		if (stat(c->hsm.pin_file, &st) < 0)
			diags_add(d, &loc, "hsm.pin_file '%s': %s",
				  c->hsm.pin_file, strerror(errno));
		else if (!S_ISREG(st.st_mode))
			diags_add(d, &loc,
				  "hsm.pin_file '%s': not a regular file",
				  c->hsm.pin_file);
		else if (st.st_mode & (S_IROTH | S_IWOTH))
			diags_add(d, &loc,
				  "hsm.pin_file '%s' is accessible by others "
				  "(mode %04o); run: chmod 600 %s",
				  c->hsm.pin_file, st.st_mode & 07777,
				  c->hsm.pin_file);
		else if (access(c->hsm.pin_file, R_OK) < 0)
			diags_add(d, &loc, "hsm.pin_file '%s': %s",
				  c->hsm.pin_file, strerror(errno));
	}
	if (c->cloud.profile && !streq(c->cloud.profile, "cumulocity") &&
	    !streq(c->cloud.profile, "thingsboard")) {
		loc = loc_of(l, "cloud", "profile", main_file);
		diags_add(d, &loc,
			  "cloud.profile: '%s' is not supported "
			  "(supported: cumulocity, thingsboard)",
			  c->cloud.profile);
	}
	loc = loc_of(l, "cloud", "transport", main_file);
	if (!streq(c->cloud.transport, "mqtt") &&
	    !streq(c->cloud.transport, "coap"))
		diags_add(d, &loc,
			  "cloud.transport: '%s' is not supported "
			  "(supported: mqtt, coap)",
			  c->cloud.transport);
	/* CoAP over DTLS has its own well-known port (RFC 7252) */
	if (streq(c->cloud.transport, "coap") &&
	    !loc_of(l, "cloud", "port", main_file).line)
		c->cloud.port = 5684;
	if (c->cloud.ca_file) {
		loc = loc_of(l, "cloud", "ca_file", main_file);
		is_readable_file(c->cloud.ca_file, d, &loc, "cloud.ca_file");
	}
	if (c->cloud.cert_file) {
		loc = loc_of(l, "cloud", "cert_file", main_file);
		is_readable_file(c->cloud.cert_file, d, &loc,
				 "cloud.cert_file");
	}
	if (c->cloud.backoff_max_ms < c->cloud.backoff_min_ms) {
		loc = loc_of(l, "cloud", "backoff_max", main_file);
		diags_add(d, &loc, "cloud.backoff_max is below backoff_min");
	}
	/* the JWT travels in these requests: TLS only */
	if (c->cloud.http_url && strncmp(c->cloud.http_url, "https://", 8)) {
		loc = loc_of(l, "cloud", "http_url", main_file);
		diags_add(d, &loc,
			  "cloud.http_url: '%s' must start with https://",
			  c->cloud.http_url);
	}
	if (c->cloud.token_url && strncmp(c->cloud.token_url, "https://", 8)) {
		loc = loc_of(l, "cloud", "token_url", main_file);
		diags_add(d, &loc,
			  "cloud.token_url: '%s' must start with https://",
			  c->cloud.token_url);
	}
	if (c->cloud.http_ca_file &&
	    !same_path(c->cloud.http_ca_file, c->cloud.ca_file)) {
		loc = loc_of(l, "cloud", "http_ca_file", main_file);
		is_readable_file(c->cloud.http_ca_file, d, &loc,
				 "cloud.http_ca_file");
	}
	if (c->cloud.relay && !has_sensor(c, c->cloud.relay)) {
		loc = loc_of(l, "cloud", "relay", main_file);
		diags_add(d, &loc, "cloud.relay: no [sensor.%s] is configured",
			  c->cloud.relay);
	}
	parse_gpio_pins(l, main_file);
}

static void set_defaults(struct eb_config *c)
{
	c->gateway.log_level = EB_LOG_INFO;
	c->cloud.port = 8883;
	c->cloud.keepalive_ms = 60000;
	c->cloud.backoff_min_ms = 1000;
	c->cloud.backoff_max_ms = 300000;
	c->cloud.max_inflight = 10;
	c->cloud.coap_ack_timeout_ms = 2000;
	c->cloud.coap_max_retransmit = 4;
	c->cloud.coap_nstart = 1;
	c->cloud.shutdown_timeout_ms = 3000;
	c->cloud.cert_warn_ms = 30ULL * 86400000;
	c->cloud.bulk = true;
	c->cloud.http_timeout_ms = 60000;
	c->cloud.bulk_threshold = 1000;
	c->cloud.bulk_batch = 1000;
	c->cloud.bulk_max_body = 1ULL << 20;
	c->cloud.bulk_parallel = 4;
	c->cloud.token_timeout_ms = 30000;
	c->store.max_size = 64ULL << 20;
	c->store.ram_samples = 10000;
}

static int fill_string_defaults(struct eb_config *c)
{
	if (!c->gateway.name && c->gateway.id)
		c->gateway.name = strdup(c->gateway.id);
	if (!c->gateway.type)
		c->gateway.type = strdup("c8y_EdgeBridge");
	if (!c->gateway.state_dir)
		c->gateway.state_dir = strdup("/var/lib/edgebridge");
	if (!c->cloud.profile)
		c->cloud.profile = strdup("cumulocity");
	if (!c->cloud.transport)
		c->cloud.transport = strdup("mqtt");
	if (!c->cloud.http_url && c->cloud.host &&
	    asprintf(&c->cloud.http_url, "https://%s", c->cloud.host) < 0)
		c->cloud.http_url = NULL;
	if (!c->cloud.http_ca_file && c->cloud.ca_file)
		c->cloud.http_ca_file = strdup(c->cloud.ca_file);
	if (!c->cloud.token_url && c->cloud.host &&
	    asprintf(&c->cloud.token_url,
		     "https://%s:8443/devicecontrol/deviceAccessToken",
		     c->cloud.host) < 0)
		c->cloud.token_url = NULL;
	return c->gateway.type && c->gateway.state_dir && c->cloud.profile &&
			       c->cloud.transport
		       ? 0
		       : -ENOMEM;
}

static void free_headers(struct loader *l)
{
	for (size_t i = 0; i < l->n_hdr; i++)
		free(l->hdr[i].section);
	free(l->hdr);
}

struct eb_config *config_load(const char *path, config_sensor_check_fn check,
			      struct eb_diags *diags)
{
	return config_load_with(path, NULL, NULL, check, diags);
}

struct eb_config *config_load_with(const char *path, const char *dropin,
				   const char *file,
				   config_sensor_check_fn check,
				   struct eb_diags *diags)
{
	struct loader l = { .subst_name = dropin, .subst_file = file };
	struct eb_config *c;
	size_t before = diags->n;
	const char *main_file;

	c = calloc(1, sizeof(*c));
	if (c)
		c->refs = 1;
	if (!c)
		return NULL;
	set_defaults(c);
	l.cfg = c;
	l.diags = diags;

	if (parse_file(&l, path, true) < 0)
		goto fail;
	main_file = c->files[0];
	parse_dropins(&l, path);

	for (size_t i = 0; i < l.n_raw; i++) {
		struct raw *r = &l.raw[i];
		const struct key_def *k;
		bool known;

		if (!strncmp(r->section, "sensor.", 7)) {
			struct eb_sensor_conf *s =
				sensor_get(c, r->section + 7,
					   header_of(&l, r->section, &r->loc));

			if (!s || sensor_add_opt(s, r) < 0)
				goto fail;
			continue;
		}
		k = find_key(r->section, r->key, &known);
		if (!known)
			(void)0; /* reported per header below */
		else if (!k)
			diags_add(diags, &r->loc, "unknown key '%s' in [%s]",
				  r->key, r->section);
		else
			convert(c, k, r, diags);
	}
	for (size_t i = 0; i < l.n_hdr; i++) {
		bool known;

		if (strncmp(l.hdr[i].section, "sensor.", 7) &&
		    (find_key(l.hdr[i].section, "", &known), !known))
			diags_add(diags, &l.hdr[i].loc,
				  "unknown section [%s] (known: gateway, hsm, "
				  "cloud, store, sensor.NAME)",
				  l.hdr[i].section);
	}
	for (size_t i = 0; i < EB_ARRAY_SIZE(keys); i++) {
		const struct key_def *k = &keys[i];
		struct eb_loc loc = { main_file, 0 };

		if (k->required && !*(char **)((char *)c + k->offset)) {
			diags_add(diags, &loc, "%s.%s is required", k->section,
				  k->key);
			diags->n_unset++;
		}
	}
	if (fill_string_defaults(c) < 0)
		goto fail;
	check_semantics(&l, main_file);

	for (size_t i = 0; i < c->n_sensor; i++) {
		struct eb_sensor_conf *s = &c->sensor[i];

		s->state_dir = c->gateway.state_dir;
		check_sensor(s, diags);
		if (check && s->driver)
			check(s, diags);
		for (size_t j = 0; j < s->n_opt; j++)
			if (!s->opt[j].used)
				diags_add(diags, &s->opt[j].loc,
					  "unknown key '%s' in [sensor.%s]%s%s",
					  s->opt[j].key, s->name,
					  s->driver ? " for driver " : "",
					  s->driver ? s->driver : "");
	}

	for (size_t i = 0; i < l.n_raw; i++) {
		free(l.raw[i].section);
		free(l.raw[i].key);
		free(l.raw[i].value);
	}
	free(l.raw);
	free_headers(&l);
	if (diags->n > before)
		return config_free(c);
	return c;
fail:
	for (size_t i = 0; i < l.n_raw; i++) {
		free(l.raw[i].section);
		free(l.raw[i].key);
		free(l.raw[i].value);
	}
	free(l.raw);
	free_headers(&l);
	if (diags->n == before)
		diags_add(diags, NULL, "%s: out of memory", path);
	return config_free(c);
}

struct eb_config *config_ref(struct eb_config *c)
{
	c->refs++;
	return c;
}

struct eb_config *config_free(struct eb_config *c)
{
	if (!c || --c->refs > 0)
		return NULL;
	free(c->gateway.id);
	free(c->gateway.name);
	free(c->gateway.type);
	free(c->gateway.state_dir);
	free(c->hsm.module);
	free(c->hsm.key);
	free(c->hsm.pin_file);
	free(c->cloud.profile);
	free(c->cloud.transport);
	free(c->cloud.host);
	free(c->cloud.ca_file);
	free(c->cloud.cert_file);
	free(c->cloud.http_url);
	free(c->cloud.http_ca_file);
	free(c->cloud.token_url);
	free(c->cloud.restart_command);
	free(c->cloud.relay);
	free(c->cloud.gpio_pins);
	for (size_t i = 0; i < c->cloud.n_gpio_pin; i++)
		free(c->cloud.gpio_pin[i].sensor);
	free(c->cloud.gpio_pin);
	for (size_t i = 0; i < c->n_sensor; i++) {
		struct eb_sensor_conf *s = &c->sensor[i];

		free(s->name);
		free(s->driver);
		free(s->fragment);
		free(s->series);
		free(s->unit);
		for (size_t j = 0; j < s->n_opt; j++) {
			free(s->opt[j].key);
			free(s->opt[j].value);
		}
		free(s->opt);
	}
	free(c->sensor);
	for (size_t i = 0; i < c->n_files; i++)
		free(c->files[i]);
	free(c->files);
	free(c);
	return NULL;
}
