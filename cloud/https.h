/* SPDX-License-Identifier: MIT */
/*
 * HTTPS requests with libcurl's multi interface, driven by the daemon's
 * epoll loop (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION): no threads, no
 * polling.  Connections are kept alive and reused between requests; the
 * server is verified against a CA file with its host name checked, and the
 * client certificate, when asked for, is signed by the token key through
 * the same OpenSSL engine that the MQTT connection uses.
 */
#ifndef EB_HTTPS_H
#define EB_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/util.h"
#include "../daemon/loop.h"

struct https;

struct https_opts {
	const char *ca_file;   /* trust anchors for the server */
	const char *cert_file; /* client chain for mTLS, or NULL */
	const char *key_uri;   /* pkcs11: URI of the token key (with cert) */
	uint64_t timeout_ms;   /* whole request */
	eb_report_fn report;
};

struct https_resp {
	long status;		 /* HTTP status, 0 when none came */
	uint64_t retry_after_ms; /* from Retry-After, 0 if absent */
	const char *body;	 /* NUL-terminated, at most 64 KiB kept */
	size_t len;
	const char *error; /* why no status came ("" otherwise) */
	long new_conns;	   /* connections this request opened (0: reused) */
};

typedef void (*https_done_fn)(void *ud, const struct https_resp *r);

struct https *https_new(struct loop *loop, const struct https_opts *o,
			struct eb_err *err);
/* Cancels what is in flight without calling back. */
struct https *https_free(struct https *h);

/*
 * Starts a request.  headers: NULL-terminated "Name: value" lines.
 * bearer: a token for "Authorization: Bearer" (copied; never logged), or
 * NULL.  body/len: what to send (not copied: keep it until done()), NULL
 * for a GET.  done() runs from the loop, never from inside this call.
 * 0 or -errno.
 */
int https_request(struct https *h, const char *method, const char *url,
		  const char *const *headers, const char *bearer,
		  const char *body, size_t len, https_done_fn done, void *ud);
/* Requests from now on present this chain and key (a renewal), if this
 * client presents one at all.  0 or -ENOMEM. */
int https_set_client(struct https *h, const char *cert_file,
		     const char *key_uri);
unsigned https_inflight(const struct https *h);

#endif
