/* SPDX-License-Identifier: MIT */
/*
 * Why it is built this way:
 *
 * - The multi "socket" API lets curl tell us which descriptors to watch and
 *   when to time out; the loop calls curl_multi_socket_action() only when
 *   something happened, so an idle gateway does not wake up for HTTPS.
 * - Easy handles are kept after use (one per request in flight at most):
 *   curl keeps their TLS session and the multi keeps the connections, so a
 *   drain of thousands of posts opens one connection per parallel request.
 * - Completed transfers are collected after curl_multi_socket_action()
 *   returns, and callbacks run from there, so a callback may start the
 *   next request at once.
 * - The bearer token goes through CURLOPT_XOAUTH2_BEARER, not a header we
 *   format, and verbose output is never switched on: nothing of it can
 *   reach the log.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "https.h"

#define MAX_BODY (64 * 1024)

struct req {
	struct https *h;
	CURL *easy;
	struct curl_slist *hdrs;
	https_done_fn done;
	void *ud;
	char *body;
	size_t len, cap; /* the body buffer is kept between requests */
	char errbuf[CURL_ERROR_SIZE];
	struct req *next; /* idle list */
	bool busy;
};

struct https {
	struct loop *loop;
	CURLM *multi;
	struct loop_timer *timer;
	struct https_opts o;
	char *ca_file, *cert_file, *key_uri;
	struct req **all;
	size_t n_all;
	struct req *idle;
	unsigned inflight;
};

#define report(x, l, ...) EB_REPORT((x)->o.report, l, "https", __VA_ARGS__)

static void finish(struct https *h, struct req *r, CURLcode rc)
{
	struct https_resp resp = { 0 };
	curl_off_t retry = 0;
	https_done_fn done = r->done;
	void *ud = r->ud;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &resp.new_conns);
	if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &retry) ==
		    CURLE_OK &&
	    retry > 0)
		resp.retry_after_ms = (uint64_t)retry * 1000;
	resp.body = r->body && r->len ? r->body : "";
	resp.len = r->len;
	resp.error = "";
	if (rc != CURLE_OK) {
		resp.status = 0;
		resp.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
	}
	curl_multi_remove_handle(h->multi, r->easy);
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
	/* the token copy curl holds is replaced on the next use; clear it */
	curl_easy_setopt(r->easy, CURLOPT_XOAUTH2_BEARER, NULL);
	r->busy = false;
	r->next = h->idle;
	h->idle = r;
	h->inflight--;
	if (done)
		done(ud, &resp);
	r->len = 0;
}

static void collect(struct https *h)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(h->multi, &left))) {
		struct req *r = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &r);
		if (r)
			finish(h, r, m->data.result);
	}
}

static void on_io(struct loop *l, int fd, uint32_t events, void *data)
{
	struct https *h = data;
	int running, mask = 0;

	(void)l;
	if (events & EPOLLIN)
		mask |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		mask |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		mask |= CURL_CSELECT_ERR;
	curl_multi_socket_action(h->multi, fd, mask, &running);
	collect(h);
}

static void on_timer(struct loop *l, struct loop_timer *t, void *data)
{
	struct https *h = data;
	int running;

	(void)l;
	(void)t;
	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	collect(h);
}

static int cb_socket(CURL *e, curl_socket_t s, int what, void *userp,
		     void *socketp)
{
	struct https *h = userp;
	uint32_t ev = 0;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (socketp) {
			loop_io_del(h->loop, s);
			curl_multi_assign(h->multi, s, NULL);
		}
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev |= EPOLLOUT;
	if (socketp) {
		loop_io_mod(h->loop, s, ev);
	} else if (loop_io_add(h->loop, s, ev, on_io, h) == 0) {
		curl_multi_assign(h->multi, s, h); /* "watched" */
	} else {
		report(h, EB_LOG_ERR, "cannot watch socket %d", s);
		return -1;
	}
	return 0;
}

static int cb_timer(CURLM *m, long timeout_ms, void *userp)
{
	struct https *h = userp;

	(void)m;
	if (timeout_ms < 0)
		loop_timer_disarm(h->timer);
	else
		loop_timer_arm_in(h->timer, (uint64_t)timeout_ms);
	return 0;
}

static size_t cb_write(char *ptr, size_t size, size_t n, void *ud)
{
	struct req *r = ud;
	size_t len = size * n, keep = len;
	char *b;

	if (r->len + keep > MAX_BODY)
		keep = MAX_BODY - r->len;
	if (!keep)
		return len; /* read and dropped: only the start matters */
	if (r->len + keep + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;

		while (cap < r->len + keep + 1)
			cap *= 2;
		b = realloc(r->body, cap);
		if (!b)
			return 0;
		r->body = b;
		r->cap = cap;
	}
	memcpy(r->body + r->len, ptr, keep);
	r->len += keep;
	r->body[r->len] = '\0';
	return len;
}

static struct req *get_req(struct https *h)
{
	struct req *r = h->idle, **all;

	if (r) {
		h->idle = r->next;
		return r;
	}
	all = realloc(h->all, (h->n_all + 1) * sizeof(*all));
	if (!all)
		return NULL;
	h->all = all;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->h = h;
	r->easy = curl_easy_init();
	if (!r->easy) {
		free(r);
		return NULL;
	}
	h->all[h->n_all++] = r;
	return r;
}

static int setup(struct https *h, struct req *r, const char *method,
		 const char *url, const char *bearer, const char *body,
		 size_t len)
{
	CURL *e = r->easy;
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                          \
	do {                                                                   \
		if (rc == CURLE_OK)                                            \
			rc = curl_easy_setopt(e, opt, val);                    \
	} while (0)
	curl_easy_reset(e);
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_PRIVATE, r);
	SET(CURLOPT_ERRORBUFFER, r->errbuf);
	SET(CURLOPT_WRITEFUNCTION, cb_write);
	SET(CURLOPT_WRITEDATA, r);
	SET(CURLOPT_TIMEOUT_MS, (long)h->o.timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_CAINFO, h->ca_file);
	SET(CURLOPT_CAPATH, NULL); /* this CA only, not the system's */
	if (h->cert_file) {
		SET(CURLOPT_SSLENGINE, "pkcs11");
		SET(CURLOPT_SSLCERT, h->cert_file);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
		SET(CURLOPT_SSLKEYTYPE, "ENG");
		SET(CURLOPT_SSLKEY, h->key_uri);
	}
	if (bearer) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		SET(CURLOPT_XOAUTH2_BEARER, bearer);
	}
	if (body) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, body);
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	if (strcmp(method, body ? "POST" : "GET"))
		SET(CURLOPT_CUSTOMREQUEST, method);
	SET(CURLOPT_HTTPHEADER, r->hdrs);
#undef SET
	if (rc != CURLE_OK) {
		report(h, EB_LOG_ERR, "cannot set up a request to %s: %s", url,
		       curl_easy_strerror(rc));
		return -EINVAL;
	}
	return 0;
}

int https_request(struct https *h, const char *method, const char *url,
		  const char *const *headers, const char *bearer,
		  const char *body, size_t len, https_done_fn done, void *ud)
{
	struct req *r = get_req(h);
	int rc;

	if (!r)
		return -ENOMEM;
	r->errbuf[0] = '\0';
	r->len = 0;
	r->hdrs = NULL;
	for (size_t i = 0; headers && headers[i]; i++) {
		struct curl_slist *n = curl_slist_append(r->hdrs, headers[i]);

		if (!n) {
			rc = -ENOMEM;
			goto fail;
		}
		r->hdrs = n;
	}
	/* no "Expect: 100-continue" round trip before each body */
	if (body) {
		struct curl_slist *n = curl_slist_append(r->hdrs, "Expect:");

		if (!n) {
			rc = -ENOMEM;
			goto fail;
		}
		r->hdrs = n;
	}
	rc = setup(h, r, method, url, bearer, body, len);
	if (rc < 0)
		goto fail;
	r->done = done;
	r->ud = ud;
	if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		rc = -EIO;
		goto fail;
	}
	r->busy = true;
	h->inflight++;
	return 0;
fail:
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
	curl_easy_setopt(r->easy, CURLOPT_XOAUTH2_BEARER, NULL);
	r->next = h->idle;
	h->idle = r;
	return rc;
}

unsigned https_inflight(const struct https *h)
{
	return h->inflight;
}

int https_set_client(struct https *h, const char *cert_file,
		     const char *key_uri)
{
	char *c, *k;

	if (!h->cert_file)
		return 0; /* no client certificate in use */
	c = strdup(cert_file);
	k = strdup(key_uri);
	if (!c || !k) {
		free(c);
		free(k);
		return -ENOMEM;
	}
	free(h->cert_file);
	free(h->key_uri);
	h->cert_file = c;
	h->key_uri = k;
	return 0;
}

struct https *https_new(struct loop *loop, const struct https_opts *o,
			struct eb_err *err)
{
	static bool global_done;
	struct https *h;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			eb_errf(err, -EIO, "cannot initialise libcurl");
			return NULL;
		}
		global_done = true;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->o = *o;
	h->ca_file = strdup(o->ca_file);
	h->cert_file = o->cert_file ? strdup(o->cert_file) : NULL;
	h->key_uri = o->key_uri ? strdup(o->key_uri) : NULL;
	h->multi = curl_multi_init();
	h->timer = loop_timer_new(loop, on_timer, h);
	if (!h->ca_file || (o->cert_file && (!h->cert_file || !h->key_uri)) ||
	    !h->multi || !h->timer) {
		eb_errf(err, -ENOMEM, "out of memory");
		return https_free(h);
	}
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, cb_socket);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, cb_timer);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	/* a few idle connections are enough for the bulk posts */
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 4L);
	return h;
}

struct https *https_free(struct https *h)
{
	if (!h)
		return NULL;
	for (size_t i = 0; i < h->n_all; i++) {
		struct req *r = h->all[i];

		if (r->busy)
			curl_multi_remove_handle(h->multi, r->easy);
		curl_easy_cleanup(r->easy);
		curl_slist_free_all(r->hdrs);
		free(r->body);
		free(r);
	}
	free(h->all);
	if (h->multi)
		curl_multi_cleanup(h->multi);
	loop_timer_free(h->timer);
	free(h->ca_file);
	free(h->cert_file);
	free(h->key_uri);
	free(h);
	return NULL;
}
