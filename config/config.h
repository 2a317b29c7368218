/* SPDX-License-Identifier: MIT */
/*
 * Configuration: the main INI file, then every *.conf in the conf.d/
 * directory beside it in lexical order; later values override earlier ones.
 *
 * config_load() returns one validated, immutable struct or NULL.  Every
 * problem found is appended to a diagnostics list as "file:line: message"
 * so that --check-config can print all of them at once.
 */
#ifndef EB_CONFIG_H
#define EB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Log levels use syslog priorities so journald gets them unchanged. */
enum eb_log_level {
	EB_LOG_ERR = 3,
	EB_LOG_WARNING = 4,
	EB_LOG_NOTICE = 5,
	EB_LOG_INFO = 6,
	EB_LOG_DEBUG = 7,
};

/* Where a value came from. */
struct eb_loc {
	const char *file; /* owned by the config */
	unsigned line;
};

/* A list of "file:line: message" strings. */
struct eb_diags {
	char **msg;
	size_t n;
	size_t cap;
	/* how many of them say only that a required key is not set (a fresh
	 * installation), as opposed to a value that is wrong */
	size_t n_unset;
};

void diags_add(struct eb_diags *d, const struct eb_loc *loc, const char *fmt,
	       ...) __attribute__((format(printf, 3, 4)));
void diags_free(struct eb_diags *d);

/* A raw "key = value" of a sensor section, for the driver to interpret. */
struct eb_kv {
	char *key;
	char *value;
	struct eb_loc loc;
	bool used;
};

struct eb_sensor_conf {
	char *name; /* the part after "sensor." */
	char *driver;
	uint64_t interval_ms; /* 0 = as fast as the queue accepts */
	char *fragment;
	char *series;
	char *unit;
	struct eb_loc loc; /* of the section's first key */
	struct eb_loc interval_loc;
	struct eb_kv *opt; /* every key of the section, common ones too */
	size_t n_opt;
	/* gateway.state_dir, for drivers that keep state across restarts
	 * (a pulse counter's total); not owned, set by config_load() */
	const char *state_dir;
};

/* [cloud] gpio_pins: a platform's GPIO pin number -> an output sensor */
struct eb_gpio_pin {
	unsigned pin;
	char *sensor;
};

struct eb_config {
	struct {
		char *id;
		char *name;
		char *type;
		char *state_dir;
		enum eb_log_level log_level;
	} gateway;
	struct {
		char *module;
		char *key;
		char *pin_file; /* resolved: pin_file or $CREDENTIALS_DIRECTORY/pin */
	} hsm;
	struct {
		char *profile;
		char *transport; /* mqtt (default) | coap (DTLS, port 5684) */
		char *host;
		unsigned port;
		char *ca_file;
		char *cert_file;
		uint64_t keepalive_ms;
		uint64_t backoff_min_ms;
		uint64_t backoff_max_ms;
		unsigned required_interval_min; /* 117: 0 = derived */
		unsigned max_inflight;
		/* CoAP (RFC 7252 4.8) */
		uint64_t coap_ack_timeout_ms;
		unsigned coap_max_retransmit;
		unsigned coap_nstart;
		uint64_t shutdown_timeout_ms;
		uint64_t cert_warn_ms; /* warn when the leaf expires within */

		/* HTTPS: bulk drain of the backlog with a JWT from s/uat */
		bool bulk;	    /* drain big backlogs over HTTPS */
		char *http_url;	    /* https://host[:port], default host */
		char *http_ca_file; /* default ca_file */
		bool http_mtls;	    /* client certificate from the token */
		uint64_t http_timeout_ms;
		unsigned bulk_threshold;   /* backlog rows that start a drain */
		unsigned bulk_batch;	   /* measurements per post */
		uint64_t bulk_max_body;	   /* bytes per post */
		unsigned bulk_parallel;	   /* posts in flight */
		uint64_t token_timeout_ms; /* s/uat answer wait */
		bool token_fallback;	   /* mTLS deviceAccessToken */
		char *token_url;

		/* operations */
		char *restart_command; /* none: exit, systemd restarts us */
		char *relay; /* sensor whose driver drives the relay */
		/* ThingsBoard setGpio/getGpio: "7:relay, 8:valve" */
		char *gpio_pins;
		struct eb_gpio_pin *gpio_pin;
		size_t n_gpio_pin;
	} cloud;
	struct {
		uint64_t max_size;   /* cap of the queue database */
		uint64_t max_age_ms; /* 0 = none */
		int overflow;	     /* 0 drop-oldest, 1 drop-newest */
		int sync;	     /* 0 normal, 1 full */
		size_t ram_samples;  /* RAM inbox cap (disk trouble) */
	} store;
	struct eb_sensor_conf *sensor;
	size_t n_sensor;

	/* private: references (config_ref), and storage for the file names
	 * struct eb_loc points to */
	unsigned refs;
	char **files;
	size_t n_files;
};

/*
 * Hook for checks that belong to other modules (driver options): called for
 * every sensor after the generic checks; it reports into diags and marks
 * the options it understood as used.  Unused options are then reported as
 * unknown keys.
 */
typedef void (*config_sensor_check_fn)(struct eb_sensor_conf *s,
				       struct eb_diags *d);

struct eb_config *config_load(const char *path, config_sensor_check_fn check,
			      struct eb_diags *diags);
/* Where the drop-ins of main_path are: conf.d beside it (malloc'd). */
char *config_dropin_dir(const char *main_path);

/*
 * The same, with the drop-in conf.d/<dropin> read from `file` instead (a
 * candidate that is checked before it replaces the real one).
 */
struct eb_config *config_load_with(const char *path, const char *dropin,
				   const char *file,
				   config_sensor_check_fn check,
				   struct eb_diags *diags);
/* Another reference (a running sensor keeps the section it was opened
 * with); config_free() drops one and frees with the last. */
struct eb_config *config_ref(struct eb_config *c);
struct eb_config *config_free(struct eb_config *c);

/* Option lookup for drivers; marks it used.  NULL when absent. */
struct eb_kv *config_sensor_opt(struct eb_sensor_conf *s, const char *key);

/* Value parsers, shared with drivers and the tool; 0 or -EINVAL/-ERANGE. */
int config_parse_duration_ms(const char *s, uint64_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);
int config_parse_bool(const char *s, bool *b);
int config_parse_uint(const char *s, uint64_t max, uint64_t *v);
int config_parse_double(const char *s, double *v);
int config_parse_log_level(const char *s, enum eb_log_level *l);
const char *config_log_level_name(enum eb_log_level l);

#endif
