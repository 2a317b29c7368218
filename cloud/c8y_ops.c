/* SPDX-License-Identifier: MIT */
/*
 * Cumulocity operations from s/ds, one at a time, in the order they came:
 * 501 (executing) is acknowledged by the broker before the work starts,
 * then 503 (successful) or 502 (failed, with the reason).  The platform
 * applies 501/502/503 to the oldest operation of that fragment, so the
 * order matters.
 *
 * Why it works this way:
 * - Restart: the state file is written (and synced) before 501 goes out,
 *   so a daemon that comes back always finds it and reports 503, even when
 *   the restart was a crash.  Operations queued behind the restart are
 *   written to the same directory and handled after it.
 * - On every connect: 114 (what we support), the 503 of a finished
 *   restart, and 500 (the platform re-sends operations still PENDING).
 * - Unknown operations get 502 with a reason instead of staying PENDING
 *   forever in the platform's UI.
 * - Errors the platform reports on s/e are logged as they are: they are
 *   the only way to learn that a line we sent was refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "c8y.h"
#include "profile.h"

#define MAX_FIELDS 16
#define MAX_QUEUE 64

struct op {
	char *line; /* the s/ds line as received */
};

struct c8y_ops {
	struct loop *loop;
	char *gateway_id; /* copied: a reload frees the configuration */
	struct cloud *cloud;
	struct c8y_ops_host h;
	eb_report_fn report;
	char *restart_file, *queue_file;
	struct op queue[MAX_QUEUE];
	unsigned n_queue;
	bool busy;	      /* the head of the queue is being handled */
	bool restart_done;    /* 503 of a restart waits for the connection */
	bool restart_pending; /* we are going down for a restart */
	bool relay;
	char supported[128];
	char fragment[64]; /* of the operation being handled */
};

/* The fragment of each static operation template we may receive. */
static const struct {
	const char *id, *fragment;
} templates[] = {
	{ "510", "c8y_Restart" },
	{ "511", "c8y_Command" },
	{ "513", "c8y_Configuration" },
	{ "515", "c8y_Firmware" },
	{ "516", "c8y_SoftwareList" },
	{ "517", "c8y_MeasurementRequestOperation" },
	{ "518", "c8y_Relay" },
	{ "519", "c8y_RelayArray" },
	{ "520", "c8y_UploadConfigFile" },
	{ "521", "c8y_DownloadConfigFile" },
	{ "522", "c8y_LogfileRequest" },
	{ "523", "c8y_CommunicationMode" },
	{ "524", "c8y_DownloadConfigFile" },
	{ "525", "c8y_Firmware" },
	{ "526", "c8y_UploadConfigFile" },
	{ "528", "c8y_SoftwareUpdate" },
	{ "529", "c8y_SoftwareUpdate" },
	{ "530", "c8y_DeviceProfile" },
};

#define report(x, l, ...) EB_REPORT((x)->report, l, "operation", __VA_ARGS__)

int c8y_split_line(const char *line, size_t len, char *buf, char **fields,
		   int max)
{
	size_t i = 0, o = 0;
	int n = 0;

	if (max <= 0)
		return -EINVAL;
	while (len && (line[len - 1] == '\r'))
		len--;
	for (;;) {
		if (n == max)
			return -EINVAL;
		fields[n++] = buf + o;
		if (i < len && line[i] == '"') {
			i++;
			for (;;) {
				if (i >= len)
					return -EINVAL; /* unterminated */
				if (line[i] == '"') {
					if (i + 1 < len && line[i + 1] == '"') {
						buf[o++] = '"';
						i += 2;
						continue;
					}
					i++;
					break;
				}
				buf[o++] = line[i++];
			}
			if (i < len && line[i] != ',')
				return -EINVAL; /* text after the quote */
		} else {
			while (i < len && line[i] != ',') {
				if (line[i] == '"')
					return -EINVAL;
				buf[o++] = line[i++];
			}
		}
		buf[o++] = '\0';
		if (i >= len)
			return n;
		i++; /* the comma */
	}
}

/* ---- the state files -------------------------------------------------------- */

static void save_queue(struct c8y_ops *o, unsigned from)
{
	size_t len = 0;
	char *all = NULL;

	for (unsigned i = from; i < o->n_queue; i++)
		len += strlen(o->queue[i].line) + 1;
	if (!len) {
		unlink(o->queue_file);
		return;
	}
	all = malloc(len + 1);
	if (!all)
		return;
	len = 0;
	for (unsigned i = from; i < o->n_queue; i++) {
		size_t l = strlen(o->queue[i].line);

		/* NUL-separated: a line may hold newlines (513) */
		memcpy(all + len, o->queue[i].line, l);
		all[len + l] = '\0';
		len += l + 1;
	}
	if (eb_write_file(o->queue_file, all, len, 0600) < 0)
		report(o, EB_LOG_ERR, "cannot save %u queued operations to %s",
		       o->n_queue - from, o->queue_file);
	free(all);
}

/* ---- the queue --------------------------------------------------------------- */

static void next(struct c8y_ops *o);

static int enqueue(struct c8y_ops *o, const char *line, size_t len)
{
	char *copy;

	if (o->n_queue == MAX_QUEUE) {
		report(o, EB_LOG_WARNING,
		       "%d operations are waiting: this one is left PENDING "
		       "for the platform to send again",
		       MAX_QUEUE);
		return -ENOSPC;
	}
	copy = strndup(line, len);
	if (!copy)
		return -ENOMEM;
	o->queue[o->n_queue++].line = copy;
	return 0;
}

static void pop(struct c8y_ops *o)
{
	free(o->queue[0].line);
	memmove(&o->queue[0], &o->queue[1],
		(o->n_queue - 1) * sizeof(o->queue[0]));
	o->n_queue--;
	o->busy = false;
}

static int send_line(struct c8y_ops *o, void (*done)(void *, bool),
		     const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int send_line(struct c8y_ops *o, void (*done)(void *, bool),
		     const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENOSPC;
	return cloud_publish(o->cloud, cloud_uplink_topic(o->cloud), buf,
			     (size_t)n, done, o);
}

/* The operation's outcome went out (or the connection did). */
static void on_final(void *ud, bool ok)
{
	struct c8y_ops *o = ud;

	if (!ok) {
		/* the platform may not know: 500 on reconnect re-sends it if
		 * it is still pending; executing ones we cannot redo */
		report(o, EB_LOG_WARNING,
		       "the connection went before the platform confirmed "
		       "the result of %s",
		       o->fragment);
	}
	if (o->busy)
		pop(o);
	next(o);
}

static void finish(struct c8y_ops *o, int r, const char *why)
{
	char field[600];

	if (r == 0) {
		report(o, EB_LOG_NOTICE, "%s: successful", o->fragment);
		if (send_line(o, on_final, "503,%s", o->fragment) < 0)
			on_final(o, false);
		return;
	}
	report(o, EB_LOG_WARNING, "%s failed: %s", o->fragment, why);
	if (c8y_field(why, field, sizeof(field)) < 0)
		snprintf(field, sizeof(field), "\"failed\"");
	if (send_line(o, on_final, "502,%s,%s", o->fragment, field) < 0)
		on_final(o, false);
}

static void do_restart(struct c8y_ops *o)
{
	char why[256] = "";
	int r;

	o->restart_pending = true;
	save_queue(o, 1); /* what came after the restart */
	r = o->h.restart(o->h.ud, why, sizeof(why));
	if (r < 0) {
		o->restart_pending = false;
		unlink(o->restart_file);
		unlink(o->queue_file);
		finish(o, r, why);
	}
	/* else: the daemon is going down; the queue stays busy */
}

/* 501 for the head operation was acknowledged: do the work. */
static void on_executing(void *ud, bool ok)
{
	struct c8y_ops *o = ud;
	char buf[16384], *f[MAX_FIELDS], why[512] = "";
	const char *line;
	int n, r;

	if (!ok) {
		/* not confirmed: the operation stays where it was; the
		 * platform sends it again after 500 */
		if (!strcmp(o->fragment, "c8y_Restart"))
			unlink(o->restart_file);
		o->busy = false;
		return;
	}
	line = o->queue[0].line;
	n = c8y_split_line(line, strlen(line), buf, f, MAX_FIELDS);
	if (!strcmp(f[0], "510")) {
		do_restart(o);
		return;
	}
	if (!strcmp(f[0], "513")) {
		r = n >= 3 ? o->h.configure(o->h.ud, f[2], why, sizeof(why))
			   : (snprintf(why, sizeof(why),
				       "no configuration text"),
			      -EINVAL);
		finish(o, r, why);
		return;
	}
	if (!strcmp(f[0], "518")) {
		bool closed = n >= 3 && !strcmp(f[2], "CLOSED");

		if (n < 3 || (!closed && strcmp(f[2], "OPEN"))) {
			snprintf(why, sizeof(why),
				 "relay state must be OPEN or CLOSED");
			r = -EINVAL;
		} else {
			r = o->h.relay(o->h.ud, closed, why, sizeof(why));
		}
		finish(o, r, why);
		return;
	}
}

static void next(struct c8y_ops *o)
{
	char buf[16384], *f[MAX_FIELDS];
	const char *line, *fragment = NULL;
	int n, r;

	while (!o->busy && o->n_queue && cloud_connected(o->cloud) &&
	       !o->restart_pending) {
		line = o->queue[0].line;
		n = c8y_split_line(line, strlen(line), buf, f, MAX_FIELDS);
		fragment = NULL;
		for (size_t i = 0; n > 0 && i < EB_ARRAY_SIZE(templates); i++)
			if (!strcmp(f[0], templates[i].id))
				fragment = templates[i].fragment;
		if (!fragment) {
			report(o, EB_LOG_WARNING,
			       "ignored a line on s/ds that is no known "
			       "operation: %.80s",
			       line);
			pop(o);
			continue;
		}
		if (n < 2 || strcmp(f[1], o->gateway_id)) {
			report(o, EB_LOG_WARNING,
			       "ignored %s for device '%s': not this device",
			       fragment, n >= 2 ? f[1] : "");
			pop(o);
			continue;
		}
		snprintf(o->fragment, sizeof(o->fragment), "%s", fragment);
		o->busy = true;
		if (strcmp(f[0], "510") && strcmp(f[0], "513") &&
		    (strcmp(f[0], "518") || !o->relay)) {
			report(o, EB_LOG_WARNING,
			       "%s (%s) is not supported here", fragment, f[0]);
			r = send_line(o, on_final, "502,%s,\"%s\"", fragment,
				      !strcmp(f[0], "518")
					      ? "no relay is configured"
					      : "operation not supported by "
						"this device");
			if (r < 0)
				o->busy = false;
			return;
		}
		report(o, EB_LOG_NOTICE, "%s: executing", fragment);
		if (!strcmp(f[0], "510") &&
		    eb_write_file(o->restart_file, "510\n", 4, 0600) < 0) {
			finish(o, -EIO,
			       "cannot record the restart in "
			       "state_dir");
			return;
		}
		if (send_line(o, on_executing, "501,%s", fragment) < 0) {
			o->busy = false;
			return;
		}
		return;
	}
}

/* ---- the connection -------------------------------------------------------- */

static void on_restart_reported(void *ud, bool ok)
{
	struct c8y_ops *o = ud;

	if (!ok)
		return; /* again on the next connect */
	o->restart_done = false;
	unlink(o->restart_file);
	report(o, EB_LOG_NOTICE, "c8y_Restart: successful");
}

static void on_connected(void *ud)
{
	struct c8y_ops *o = ud;

	cloud_subscribe(o->cloud, "s/ds");
	cloud_subscribe(o->cloud, "s/e");
	send_line(o, NULL, "%s", o->supported);
	if (o->restart_done)
		send_line(o, on_restart_reported, "503,c8y_Restart");
	/* operations still PENDING are delivered again */
	send_line(o, NULL, "500");
	o->busy = false;
	next(o);
}

static void on_message(void *ud, const char *topic, const char *payload,
		       size_t len)
{
	struct c8y_ops *o = ud;
	const char *p = payload, *end = payload + len;

	if (!strcmp(topic, "s/e")) {
		report(o, EB_LOG_WARNING, "the platform reports: %.300s",
		       payload);
		return;
	}
	if (strcmp(topic, "s/ds"))
		return;
	while (p < end) {
		/* a line ends at a newline outside "..." (a configuration
		 * text spans lines) */
		const char *q = p;
		bool quoted = false;
		size_t l;
		char buf[16384], *f[MAX_FIELDS];

		for (; q < end && (quoted || *q != '\n'); q++)
			if (*q == '"')
				quoted = !quoted;
		l = (size_t)(q - p);
		if (l && l < sizeof(buf) &&
		    c8y_split_line(p, l, buf, f, MAX_FIELDS) > 0)
			enqueue(o, p, l);
		else if (l)
			report(o, EB_LOG_WARNING,
			       "ignored a malformed line on s/ds (%zu bytes)",
			       l);
		p = q + 1;
	}
	if (o->restart_pending)
		save_queue(o, 1);
	next(o);
}

static const struct cloud_ext ext = {
	.connected = on_connected,
	/* no disconnected(): the callbacks of what was in flight say it */
	.message = on_message,
};

static void load_state(struct c8y_ops *o)
{
	char *all = NULL;
	size_t len = 0;
	FILE *f;

	o->restart_done = access(o->restart_file, F_OK) == 0;
	f = fopen(o->queue_file, "re");
	if (!f)
		return;
	all = malloc(MAX_QUEUE * 16384);
	if (all)
		len = fread(all, 1, MAX_QUEUE * 16384 - 1, f);
	fclose(f);
	for (size_t i = 0; all && i < len;) {
		size_t l = strnlen(all + i, len - i);

		if (l)
			enqueue(o, all + i, l);
		i += l + 1;
	}
	free(all);
	unlink(o->queue_file);
	if (o->n_queue)
		report(o, EB_LOG_INFO,
		       "%u operations queued before the restart are next",
		       o->n_queue);
}

struct c8y_ops *c8y_ops_new(struct loop *loop, const struct eb_config *cfg,
			    struct cloud *cloud, const struct c8y_ops_host *h,
			    eb_report_fn report_fn, struct eb_err *err)
{
	struct c8y_ops *o = calloc(1, sizeof(*o));

	if (!o) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	o->loop = loop;
	o->gateway_id = strdup(cfg->gateway.id);
	o->cloud = cloud;
	o->h = *h;
	o->report = report_fn;
	o->relay = cfg->cloud.relay != NULL;
	snprintf(o->supported, sizeof(o->supported),
		 "114,c8y_Restart,c8y_Configuration%s",
		 o->relay ? ",c8y_Relay" : "");
	if (asprintf(&o->restart_file, "%s/c8y-restart",
		     cfg->gateway.state_dir) < 0)
		o->restart_file = NULL;
	if (asprintf(&o->queue_file, "%s/c8y-operations",
		     cfg->gateway.state_dir) < 0)
		o->queue_file = NULL;
	if (!o->restart_file || !o->queue_file || !o->gateway_id ||
	    cloud_add_ext(cloud, &ext, o) < 0) {
		eb_errf(err, -ENOMEM, "cannot set up the operation handler");
		return c8y_ops_free(o);
	}
	load_state(o);
	return o;
}

struct c8y_ops *c8y_ops_free(struct c8y_ops *o)
{
	if (!o)
		return NULL;
	for (unsigned i = 0; i < o->n_queue; i++)
		free(o->queue[i].line);
	free(o->restart_file);
	free(o->queue_file);
	free(o->gateway_id);
	free(o);
	return NULL;
}

bool c8y_ops_idle(const struct c8y_ops *o)
{
	return !o->busy || o->restart_pending;
}
