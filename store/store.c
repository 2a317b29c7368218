/* SPDX-License-Identifier: MIT */
/*
 * Why it is built this way:
 *
 * - One connection, prepared statements, and one transaction per loop tick
 *   for everything that tick produced (inserts, acknowledgement deletes,
 *   drop counters): a transaction per sample would cost a WAL commit each
 *   and wear an SD card out.
 * - WAL mode: readers never block the writer, a kill -9 leaves a consistent
 *   database, and synchronous=NORMAL only risks the last commits on power
 *   loss (not corruption); FULL makes every commit durable at the price of
 *   an fsync each.
 * - The page cache is capped (cache_size) so a million-row backlog costs
 *   disk, not RAM.
 * - Sequence numbers come from an AUTOINCREMENT key, so they never repeat,
 *   even after the queue was emptied and the daemon restarted.
 * - Leases are two cursors, one per lane: everything up to a cursor was
 *   handed out and not yet acknowledged (acknowledged rows are deleted).
 *   Dropping never touches leased rows, so a counted drop is always a
 *   sample that will not arrive.
 * - NaN cannot be stored in SQLite (it reads back as NULL): such a sample is
 *   quarantined at once, counted, and never blocks the queue.
 */
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "memq.h"
#include "store.h"

#define FLUSH_RETRY_MS 2000
#define AGE_CHECK_MS 10000
#define MAX_EVENTS_INFLIGHT 16
#define MIN_DROP_CHUNK 64

enum { REASON_FULL, REASON_OLD, REASON_DISK, N_REASONS };
static const char *const reason_text[N_REASONS] = { "store full", "too old",
						    "disk full" };

struct sensor_entry {
	int64_t id;
	struct sensor_meta *meta;
};

/* Drops counted in RAM until the next successful commit. */
struct drop_acc {
	struct sensor_meta *meta;
	int reason;
	uint64_t count;
	int64_t first_ms, last_ms;
};

struct range {
	int64_t lo, hi;
};

struct held {
	struct store_lease l;
	enum store_owner owner;
};

enum stmt {
	S_INSERT,
	S_NEXT_LIVE,
	S_NEXT_BACK,
	S_NEXT_REDO,
	S_AGE_COUNT,
	S_AGE_DEL,
	S_DELETE_RANGE,
	S_SENSOR_FIND,
	S_SENSOR_ADD,
	S_SENSOR_GET,
	S_DROP_ADD,
	S_OLDEST,
	S_COUNT_RANGE,
	S_EVENT_ADD,
	S_EVENT_DEL,
	S_EVENTS,
	N_STMT
};

static const char *const sql[N_STMT] = {
	[S_INSERT] = "INSERT INTO samples(seq, sensor, value, time_ms) "
		     "VALUES(?, ?, ?, ?)",
	[S_NEXT_LIVE] = "SELECT seq, sensor, value, time_ms FROM samples "
			"WHERE seq > ? ORDER BY seq LIMIT ?",
	[S_NEXT_BACK] = "SELECT seq, sensor, value, time_ms FROM samples "
			"WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
	[S_NEXT_REDO] = "SELECT seq, sensor, value, time_ms FROM samples "
			"WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
	[S_AGE_COUNT] =
		"SELECT sensor, count(*), min(time_ms), max(time_ms) "
		"FROM samples WHERE time_ms < ? AND seq BETWEEN ? AND ? "
		"GROUP BY sensor",
	[S_AGE_DEL] = "DELETE FROM samples WHERE time_ms < ? AND "
		      "seq BETWEEN ? AND ?",
	[S_DELETE_RANGE] = "DELETE FROM samples WHERE seq BETWEEN ? AND ?",
	[S_SENSOR_FIND] = "SELECT id FROM sensors WHERE name = ? AND "
			  "fragment = ? AND series = ? AND unit = ?",
	[S_SENSOR_ADD] = "INSERT INTO sensors(name, fragment, series, unit) "
			 "VALUES(?, ?, ?, ?)",
	[S_SENSOR_GET] = "SELECT name, fragment, series, unit FROM sensors "
			 "WHERE id = ?",
	[S_DROP_ADD] = "INSERT INTO drops(sensor, reason, count, first_ms, "
		       "last_ms) VALUES(?, ?, ?, ?, ?) "
		       "ON CONFLICT(sensor, reason) DO UPDATE SET "
		       "count = count + excluded.count, "
		       "first_ms = min(first_ms, excluded.first_ms), "
		       "last_ms = max(last_ms, excluded.last_ms)",
	[S_OLDEST] = "SELECT seq FROM samples WHERE seq > ? AND seq < ? "
		     "ORDER BY seq LIMIT 1 OFFSET ?",
	[S_COUNT_RANGE] = "SELECT sensor, count(*), min(time_ms), "
			  "max(time_ms) FROM samples WHERE seq BETWEEN ? AND ? "
			  "GROUP BY sensor",
	[S_EVENT_ADD] = "INSERT INTO events(type, text, time_ms, severity) "
			"VALUES(?, ?, ?, ?)",
	[S_EVENT_DEL] = "DELETE FROM events WHERE id = ?",
	[S_EVENTS] = "SELECT id, type, text, time_ms, severity FROM events "
		     "ORDER BY id LIMIT ?",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS sensors("
	" id INTEGER PRIMARY KEY, name TEXT NOT NULL, fragment TEXT NOT NULL,"
	" series TEXT NOT NULL, unit TEXT NOT NULL,"
	" UNIQUE(name, fragment, series, unit));"
	"CREATE TABLE IF NOT EXISTS samples("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT, sensor INTEGER NOT NULL,"
	" value REAL NOT NULL, time_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS quarantine("
	" seq INTEGER, sensor INTEGER, value REAL, time_ms INTEGER,"
	" reason TEXT);"
	"CREATE TABLE IF NOT EXISTS drops("
	" sensor INTEGER NOT NULL, reason TEXT NOT NULL, count INTEGER,"
	" first_ms INTEGER, last_ms INTEGER, PRIMARY KEY(sensor, reason));"
	"CREATE TABLE IF NOT EXISTS events("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,"
	" text TEXT NOT NULL, time_ms INTEGER NOT NULL,"
	" severity TEXT NOT NULL DEFAULT '');";

struct store {
	sqlite3 *db;
	sqlite3_stmt *st[N_STMT];
	struct store_opts o;
	char *path;
	struct memq *inbox;

	struct sensor_entry *sensors;
	size_t n_sensors;

	struct drop_acc *drops;
	size_t n_drops;

	struct range *acks; /* acknowledged, not yet deleted */
	size_t n_acks, cap_acks;

	int64_t next_seq;
	int64_t live_start;  /* first seq of the live lane */
	int64_t live_cursor; /* live rows <= this are leased */
	int64_t back_cursor; /* backlog rows <= this are leased */
	struct range *redo;  /* released rows, offered before the backlog */
	size_t n_redo, cap_redo;
	struct held *held; /* outstanding leases */
	size_t n_held, cap_held;
	uint64_t next_lease;
	bool backlog_reserved; /* the uplink leaves backlog and redo alone */

	int64_t ev_inflight[MAX_EVENTS_INFLIGHT];
	size_t n_ev_inflight;
	bool events_dirty;

	bool disk_ok;
	char last_err[256]; /* SQLite's reason for the last failed write */
	uint64_t retry_at;
	uint64_t age_check_at;
	uint64_t page_size;

	uint64_t pushed, acked, dropped, quarantined, stored, bytes;
	uint64_t dropped_by[N_REASONS];
};

static void report(struct store *st, enum eb_log_level l, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct store *st, enum eb_log_level l, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!st->o.report)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	st->o.report(l, "store", "%s", buf);
}

static int sql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_IOERR:
		return -EIO;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_CANTOPEN:
		return -EACCES;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	default:
		return -EIO;
	}
}

static int exec(struct store *st, const char *q)
{
	int rc = sqlite3_exec(st->db, q, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : sql_errno(rc);
}

static sqlite3_stmt *stmt(struct store *st, enum stmt i)
{
	sqlite3_reset(st->st[i]);
	sqlite3_clear_bindings(st->st[i]);
	return st->st[i];
}

static int64_t query_int(struct store *st, const char *q, int64_t dflt)
{
	sqlite3_stmt *s;
	int64_t v = dflt;

	if (sqlite3_prepare_v2(st->db, q, -1, &s, NULL) != SQLITE_OK)
		return dflt;
	if (sqlite3_step(s) == SQLITE_ROW &&
	    sqlite3_column_type(s, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* ---- sensors ------------------------------------------------------------ */

static struct sensor_entry *sensor_by_meta(struct store *st,
					   const struct sensor_meta *m)
{
	for (size_t i = 0; i < st->n_sensors; i++) {
		struct sensor_meta *x = st->sensors[i].meta;

		if (x == m ||
		    (streq(x->name, m->name) &&
		     streq(x->fragment, m->fragment) &&
		     streq(x->series, m->series) && streq(x->unit, m->unit)))
			return &st->sensors[i];
	}
	return NULL;
}

static struct sensor_entry *sensor_add_entry(struct store *st, int64_t id,
					     struct sensor_meta *m)
{
	struct sensor_entry *n =
		realloc(st->sensors, (st->n_sensors + 1) * sizeof(*n));

	if (!n)
		return NULL;
	st->sensors = n;
	n = &st->sensors[st->n_sensors++];
	n->id = id;
	n->meta = sensor_meta_ref(m);
	return n;
}

/* The id of a sensor description, created in the database if new.  Only
 * called inside the flush transaction. */
static int64_t sensor_id(struct store *st, struct sensor_meta *m)
{
	struct sensor_entry *e = sensor_by_meta(st, m);
	sqlite3_stmt *s;
	int64_t id = -1;

	if (e)
		return e->id;
	s = stmt(st, S_SENSOR_FIND);
	sqlite3_bind_text(s, 1, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, m->fragment, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, m->series, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, m->unit, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	if (id < 0) {
		s = stmt(st, S_SENSOR_ADD);
		sqlite3_bind_text(s, 1, m->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, m->fragment, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, m->series, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, m->unit, -1, SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE) {
			sqlite3_reset(s);
			return -1;
		}
		sqlite3_reset(s);
		id = sqlite3_last_insert_rowid(st->db);
	}
	/* The id only becomes valid with the commit; an entry made now
	 * that the transaction then rolls back would be wrong, but the
	 * UNIQUE lookup above finds the same id again either way. */
	return sensor_add_entry(st, id, m) ? id : -1;
}

static struct sensor_meta *meta_by_id(struct store *st, int64_t id)
{
	sqlite3_stmt *s;
	struct sensor_meta *m = NULL;

	for (size_t i = 0; i < st->n_sensors; i++)
		if (st->sensors[i].id == id)
			return st->sensors[i].meta;
	s = stmt(st, S_SENSOR_GET);
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW)
		m = sensor_meta_new((const char *)sqlite3_column_text(s, 0),
				    (const char *)sqlite3_column_text(s, 1),
				    (const char *)sqlite3_column_text(s, 2),
				    (const char *)sqlite3_column_text(s, 3));
	sqlite3_reset(s);
	if (!m)
		m = sensor_meta_new("unknown", "unknown", "unknown", "");
	if (!m)
		return NULL;
	if (!sensor_add_entry(st, id, m)) {
		sensor_meta_unref(m);
		return NULL;
	}
	sensor_meta_unref(m); /* the entry holds it */
	return st->sensors[st->n_sensors - 1].meta;
}

/* ---- drops and events --------------------------------------------------- */

static void count_drop(struct store *st, struct sensor_meta *m, int reason,
		       uint64_t n, int64_t first_ms, int64_t last_ms)
{
	struct drop_acc *d = NULL;
	uint64_t before = st->dropped_by[reason], p;

	st->dropped += n;
	st->dropped_by[reason] += n;
	/* In the log: the first drop for a reason, then at every power of
	 * ten, so a long outage is visible without a line per sample. */
	for (p = 1; p <= st->dropped_by[reason] && p <= UINT64_MAX / 10;
	     p *= 10)
		if (p > before)
			break;
	if (p > before && p <= st->dropped_by[reason])
		report(st, EB_LOG_WARNING,
		       "dropping samples (%s): %llu so far, sensor %s among "
		       "them; counted and reported to the cloud",
		       reason_text[reason],
		       (unsigned long long)st->dropped_by[reason], m->name);
	for (size_t i = 0; i < st->n_drops; i++)
		if (st->drops[i].reason == reason &&
		    (st->drops[i].meta == m ||
		     streq(st->drops[i].meta->name, m->name)))
			d = &st->drops[i];
	if (!d) {
		d = realloc(st->drops, (st->n_drops + 1) * sizeof(*d));
		if (!d)
			return; /* counted in the total, not per sensor */
		st->drops = d;
		d = &st->drops[st->n_drops++];
		d->meta = sensor_meta_ref(m);
		d->reason = reason;
		d->count = 0;
		d->first_ms = first_ms;
		d->last_ms = last_ms;
	}
	d->count += n;
	if (first_ms < d->first_ms)
		d->first_ms = first_ms;
	if (last_ms > d->last_ms)
		d->last_ms = last_ms;
}

/* Inside the flush transaction: RAM drop counters into the drops table. */
static int write_drops(struct store *st)
{
	for (size_t i = 0; i < st->n_drops; i++) {
		struct drop_acc *d = &st->drops[i];
		int64_t id = sensor_id(st, d->meta);
		sqlite3_stmt *s;

		if (id < 0)
			return -EIO;
		s = stmt(st, S_DROP_ADD);
		sqlite3_bind_int64(s, 1, id);
		sqlite3_bind_text(s, 2, reason_text[d->reason], -1,
				  SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, (int64_t)d->count);
		sqlite3_bind_int64(s, 4, d->first_ms);
		sqlite3_bind_int64(s, 5, d->last_ms);
		if (sqlite3_step(s) != SQLITE_DONE)
			return sql_errno(sqlite3_errcode(st->db));
	}
	return 0;
}

static void forget_drops(struct store *st)
{
	for (size_t i = 0; i < st->n_drops; i++)
		sensor_meta_unref(st->drops[i].meta);
	free(st->drops);
	st->drops = NULL;
	if (st->n_drops)
		st->events_dirty = true;
	st->n_drops = 0;
}

static int add_event(struct store *st, const char *type, const char *text,
		     int64_t time_ms, const char *severity)
{
	sqlite3_stmt *s = stmt(st, S_EVENT_ADD);

	sqlite3_bind_text(s, 1, type, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, time_ms);
	sqlite3_bind_text(s, 4, severity ? severity : "", -1, SQLITE_STATIC);
	st->events_dirty = true;
	return sqlite3_step(s) == SQLITE_DONE
		       ? 0
		       : sql_errno(sqlite3_errcode(st->db));
}

/* Turns every drop counter row into an event for the cloud (one txn). */
static int drops_to_events(struct store *st)
{
	sqlite3_stmt *s;
	int r = 0;

	if (exec(st, "BEGIN IMMEDIATE") < 0)
		return -EIO;
	if (sqlite3_prepare_v2(st->db,
			       "SELECT d.count, d.reason, d.first_ms, "
			       "d.last_ms, s.name FROM drops d LEFT JOIN "
			       "sensors s ON s.id = d.sensor",
			       -1, &s, NULL) != SQLITE_OK) {
		exec(st, "ROLLBACK");
		return -EIO;
	}
	while (r == 0 && sqlite3_step(s) == SQLITE_ROW) {
		char text[320], t1[72], t2[72];
		const char *name = (const char *)sqlite3_column_text(s, 4);

		eb_format_utc(sqlite3_column_int64(s, 2), t1, sizeof(t1));
		eb_format_utc(sqlite3_column_int64(s, 3), t2, sizeof(t2));
		snprintf(text, sizeof(text),
			 "sensor %s: %lld samples dropped (%s) between %s and "
			 "%s",
			 name ? name : "?",
			 (long long)sqlite3_column_int64(s, 0),
			 (const char *)sqlite3_column_text(s, 1), t1, t2);
		r = add_event(st, "edgebridge_SamplesDropped", text,
			      eb_realtime_ms(), NULL);
	}
	sqlite3_finalize(s);
	if (r == 0)
		r = exec(st, "DELETE FROM drops");
	if (r == 0 && exec(st, "COMMIT") == 0)
		return 0;
	exec(st, "ROLLBACK");
	return r ? r : -EIO;
}

size_t store_events(struct store *st, struct store_event *ev, size_t max)
{
	sqlite3_stmt *s;
	size_t n = 0;

	if (!st->events_dirty)
		return 0;
	if (st->disk_ok && drops_to_events(st) < 0)
		return 0;
	s = stmt(st, S_EVENTS);
	sqlite3_bind_int64(s, 1, (int64_t)(max + st->n_ev_inflight));
	while (n < max && sqlite3_step(s) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		bool busy = false;

		for (size_t i = 0; i < st->n_ev_inflight; i++)
			busy |= st->ev_inflight[i] == id;
		if (busy)
			continue;
		ev[n].id = id;
		eb_strlcpy(ev[n].type, (const char *)sqlite3_column_text(s, 1),
			   sizeof(ev[n].type));
		eb_strlcpy(ev[n].text, (const char *)sqlite3_column_text(s, 2),
			   sizeof(ev[n].text));
		ev[n].time_ms = sqlite3_column_int64(s, 3);
		eb_strlcpy(ev[n].severity,
			   (const char *)sqlite3_column_text(s, 4),
			   sizeof(ev[n].severity));
		n++;
	}
	sqlite3_reset(s);
	if (n == 0)
		st->events_dirty = false;
	return n;
}

int store_add_event(struct store *st, const char *type, const char *severity,
		    const char *text, int64_t time_ms)
{
	return add_event(st, type, text, time_ms, severity);
}

void store_event_inflight(struct store *st, int64_t id)
{
	if (st->n_ev_inflight < MAX_EVENTS_INFLIGHT)
		st->ev_inflight[st->n_ev_inflight++] = id;
}

void store_event_ack(struct store *st, int64_t id)
{
	sqlite3_stmt *s = stmt(st, S_EVENT_DEL);

	sqlite3_bind_int64(s, 1, id);
	sqlite3_step(s);
	sqlite3_reset(s);
	for (size_t i = 0; i < st->n_ev_inflight; i++)
		if (st->ev_inflight[i] == id)
			st->ev_inflight[i] =
				st->ev_inflight[--st->n_ev_inflight];
	st->events_dirty = true;
}

/* ---- size and age caps -------------------------------------------------- */

static uint64_t used_bytes(struct store *st)
{
	int64_t pages = query_int(st, "PRAGMA page_count", 0);
	int64_t free_pages = query_int(st, "PRAGMA freelist_count", 0);

	return (uint64_t)(pages - free_pages) * st->page_size;
}

/* Counts and deletes rows [lo, hi] (all unleased) as dropped. */
static int drop_range(struct store *st, int64_t lo, int64_t hi, int reason)
{
	sqlite3_stmt *s = stmt(st, S_COUNT_RANGE);

	sqlite3_bind_int64(s, 1, lo);
	sqlite3_bind_int64(s, 2, hi);
	while (sqlite3_step(s) == SQLITE_ROW) {
		struct sensor_meta *m =
			meta_by_id(st, sqlite3_column_int64(s, 0));
		uint64_t n = (uint64_t)sqlite3_column_int64(s, 1);

		if (m)
			count_drop(st, m, reason, n, sqlite3_column_int64(s, 2),
				   sqlite3_column_int64(s, 3));
		st->stored -= n;
	}
	sqlite3_reset(s);
	s = stmt(st, S_DELETE_RANGE);
	sqlite3_bind_int64(s, 1, lo);
	sqlite3_bind_int64(s, 2, hi);
	if (sqlite3_step(s) != SQLITE_DONE)
		return sql_errno(sqlite3_errcode(st->db));
	return 0;
}

/*
 * Every row nobody holds, oldest first: the released ranges, the backlog
 * lane beyond its cursor, the live lane beyond its cursor.  Returns how many
 * ranges it wrote (at most max; redo ranges past that are left out).
 */
static size_t unleased(const struct store *st, struct range *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < st->n_redo && n + 2 < max; i++)
		out[n++] = st->redo[i];
	if (st->back_cursor + 1 <= st->live_start - 1)
		out[n++] = (struct range){ st->back_cursor + 1,
					   st->live_start - 1 };
	out[n++] = (struct range){ st->live_cursor + 1, INT64_MAX };
	return n;
}

#define MAX_UNLEASED 64

/* The oldest n unleased rows. */
static int drop_oldest(struct store *st, uint64_t n, int reason)
{
	struct range rs[MAX_UNLEASED];
	size_t nr = unleased(st, rs, MAX_UNLEASED);

	for (size_t l = 0; l < nr && n; l++) {
		sqlite3_stmt *s = stmt(st, S_OLDEST);
		int64_t first = -1, last = -1;

		/* first and (up to) n-th row of this range (S_OLDEST is
		 * exclusive at both ends) */
		sqlite3_bind_int64(s, 1, rs[l].lo - 1);
		sqlite3_bind_int64(
			s, 2, rs[l].hi == INT64_MAX ? INT64_MAX : rs[l].hi + 1);
		sqlite3_bind_int64(s, 3, 0);
		if (sqlite3_step(s) == SQLITE_ROW)
			first = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		if (first < 0)
			continue;
		for (uint64_t k = n; k > 0 && last < 0; k /= 2) {
			s = stmt(st, S_OLDEST);
			sqlite3_bind_int64(s, 1, rs[l].lo - 1);
			sqlite3_bind_int64(s, 2,
					   rs[l].hi == INT64_MAX
						   ? INT64_MAX
						   : rs[l].hi + 1);
			sqlite3_bind_int64(s, 3, (int64_t)k - 1);
			if (sqlite3_step(s) == SQLITE_ROW) {
				last = sqlite3_column_int64(s, 0);
				n -= k;
			}
			sqlite3_reset(s);
		}
		if (last >= first) {
			int r = drop_range(st, first, last, reason);

			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int enforce_size(struct store *st)
{
	for (int i = 0; i < 200; i++) {
		uint64_t used = used_bytes(st);
		uint64_t chunk;
		int r;

		st->bytes = used;
		if (used <= st->o.max_size || st->stored == 0)
			return 0;
		chunk = st->stored / 50;
		if (chunk < MIN_DROP_CHUNK)
			chunk = MIN_DROP_CHUNK;
		r = drop_oldest(st, chunk, REASON_FULL);
		if (r < 0)
			return r;
	}
	return 0;
}

static int enforce_age(struct store *st)
{
	struct range rs[MAX_UNLEASED];
	size_t nr;
	int64_t cutoff;

	if (!st->o.max_age_ms || eb_now_ms() < st->age_check_at)
		return 0;
	st->age_check_at = eb_now_ms() + AGE_CHECK_MS;
	cutoff = eb_realtime_ms() - (int64_t)st->o.max_age_ms;
	/* unleased rows only */
	nr = unleased(st, rs, MAX_UNLEASED);
	for (size_t i = 0; i < nr; i++) {
		sqlite3_stmt *s = stmt(st, S_AGE_COUNT);

		sqlite3_bind_int64(s, 1, cutoff);
		sqlite3_bind_int64(s, 2, rs[i].lo);
		sqlite3_bind_int64(s, 3, rs[i].hi);
		while (sqlite3_step(s) == SQLITE_ROW) {
			struct sensor_meta *m =
				meta_by_id(st, sqlite3_column_int64(s, 0));
			uint64_t n = (uint64_t)sqlite3_column_int64(s, 1);

			if (m)
				count_drop(st, m, REASON_OLD, n,
					   sqlite3_column_int64(s, 2),
					   sqlite3_column_int64(s, 3));
			st->stored -= n;
		}
		sqlite3_reset(s);
		s = stmt(st, S_AGE_DEL);
		sqlite3_bind_int64(s, 1, cutoff);
		sqlite3_bind_int64(s, 2, rs[i].lo);
		sqlite3_bind_int64(s, 3, rs[i].hi);
		if (sqlite3_step(s) != SQLITE_DONE)
			return sql_errno(sqlite3_errcode(st->db));
	}
	return 0;
}

/* ---- flush -------------------------------------------------------------- */

bool store_dirty(const struct store *st)
{
	return memq_pending(st->inbox) || st->n_acks || st->n_drops;
}

static int write_tick(struct store *st, size_t *written)
{
	size_t n = memq_pending(st->inbox);
	uint64_t acked = 0;
	int64_t seq = st->next_seq;
	int r;

	*written = 0;
	if (exec(st, "BEGIN IMMEDIATE") < 0) {
		eb_strlcpy(st->last_err, sqlite3_errmsg(st->db),
			   sizeof(st->last_err));
		return sql_errno(sqlite3_errcode(st->db));
	}
	/* drop-newest: what does not fit is not written at all (counted
	 * after the commit, so a failed attempt counts nothing) */
	if (st->o.drop_newest && n) {
		uint64_t used = used_bytes(st);
		uint64_t per_row = st->stored ? used / (st->stored + 1) : 64;
		uint64_t room = used < st->o.max_size
					? (st->o.max_size - used) /
						  (per_row ? per_row : 1)
					: 0;

		if (room < n)
			n = (size_t)room;
	}
	for (size_t i = 0; i < n; i++) {
		const struct eb_sample *s = memq_pending_at(st->inbox, i);
		int64_t id = sensor_id(st, s->meta);
		sqlite3_stmt *ins = stmt(st, S_INSERT);

		if (id < 0)
			goto fail;
		sqlite3_bind_int64(ins, 1, seq++);
		sqlite3_bind_int64(ins, 2, id);
		sqlite3_bind_double(ins, 3, s->value);
		sqlite3_bind_int64(ins, 4, s->time_ms);
		if (sqlite3_step(ins) != SQLITE_DONE)
			goto fail;
	}
	for (size_t i = 0; i < st->n_acks; i++) {
		sqlite3_stmt *del = stmt(st, S_DELETE_RANGE);

		sqlite3_bind_int64(del, 1, st->acks[i].lo);
		sqlite3_bind_int64(del, 2, st->acks[i].hi);
		if (sqlite3_step(del) != SQLITE_DONE)
			goto fail;
		acked += (uint64_t)sqlite3_changes(st->db);
	}
	if ((r = write_drops(st)) < 0)
		goto fail_r;
	if (exec(st, "COMMIT") < 0)
		goto fail;
	/* the drop counters went into this transaction */
	forget_drops(st);
	/* drop-newest leftovers: counted now, written with the caps */
	for (size_t i = n; i < memq_pending(st->inbox); i++) {
		const struct eb_sample *s = memq_pending_at(st->inbox, i);

		count_drop(st, s->meta, REASON_FULL, 1, s->time_ms, s->time_ms);
	}
	*written = memq_pending(st->inbox);
	st->next_seq = seq;
	st->stored += n;
	st->stored -= acked < st->stored ? acked : st->stored;
	st->acked += acked;
	st->n_acks = 0;
	return 0;
fail:
	r = sql_errno(sqlite3_errcode(st->db));
fail_r:
	/* before ROLLBACK replaces it (SQLite may have rolled back already) */
	eb_strlcpy(st->last_err, sqlite3_errmsg(st->db), sizeof(st->last_err));
	exec(st, "ROLLBACK");
	/* sensor ids made in the rolled-back transaction are not valid:
	 * they are looked up again next time (the UNIQUE key finds them) */
	for (size_t i = 0; i < st->n_sensors; i++)
		sensor_meta_unref(st->sensors[i].meta);
	free(st->sensors);
	st->sensors = NULL;
	st->n_sensors = 0;
	return r;
}

int store_flush(struct store *st)
{
	size_t written = 0;
	int r;

	if (!store_dirty(st) && !st->o.max_age_ms)
		return 0;
	if (!st->disk_ok && eb_now_ms() < st->retry_at)
		return -EAGAIN;
	r = write_tick(st, &written);
	if (r < 0) {
		if (st->disk_ok)
			report(st, EB_LOG_ERR,
			       "cannot write to %s: %s; holding up to %zu "
			       "samples in RAM and retrying",
			       st->path, st->last_err, st->o.ram_samples);
		st->disk_ok = false;
		st->retry_at = eb_now_ms() + FLUSH_RETRY_MS;
		return r;
	}
	if (written)
		memq_ack_upto(st->inbox, memq_lease(st->inbox, written));
	if (!st->disk_ok)
		report(st, EB_LOG_NOTICE, "writing again to %s", st->path);
	st->disk_ok = true;
	/* Caps after the commit, in their own transaction. */
	if (exec(st, "BEGIN IMMEDIATE") == 0) {
		r = enforce_size(st);
		if (r == 0)
			r = enforce_age(st);
		if (r == 0)
			r = write_drops(st);
		if (r == 0 && exec(st, "COMMIT") == 0)
			forget_drops(st);
		else
			exec(st, "ROLLBACK");
	}
	return 0;
}

void store_push(struct store *st, const struct eb_sample *s)
{
	struct eb_sample victim = { 0 };

	st->pushed++;
	if (!isfinite(s->value)) {
		/* NaN/Inf cannot be stored nor sent: set aside, counted */
		st->quarantined++;
		report(st, EB_LOG_WARNING,
		       "sensor %s produced a value that is not a finite "
		       "number: quarantined",
		       s->meta->name);
		return;
	}
	if (memq_push(st->inbox, s, &victim)) {
		/* The inbox only fills while the disk fails. */
		count_drop(st, victim.meta, REASON_DISK, 1, victim.time_ms,
			   victim.time_ms);
		sensor_meta_unref(victim.meta);
	}
}

/* ---- lanes and leases ----------------------------------------------------- */

/* Adds [lo, hi] to the released ranges, kept sorted and merged. */
static int redo_add(struct store *st, int64_t lo, int64_t hi)
{
	size_t i;

	if (lo > hi)
		return 0;
	if (st->n_redo == st->cap_redo) {
		size_t cap = st->cap_redo ? st->cap_redo * 2 : 16;
		struct range *r = realloc(st->redo, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		st->redo = r;
		st->cap_redo = cap;
	}
	for (i = 0; i < st->n_redo && st->redo[i].lo < lo; i++)
		;
	memmove(&st->redo[i + 1], &st->redo[i],
		(st->n_redo - i) * sizeof(*st->redo));
	st->redo[i] = (struct range){ lo, hi };
	st->n_redo++;
	/* merge neighbours that touch */
	for (size_t k = 0; k + 1 < st->n_redo;) {
		if (st->redo[k].hi + 1 >= st->redo[k + 1].lo) {
			if (st->redo[k + 1].hi > st->redo[k].hi)
				st->redo[k].hi = st->redo[k + 1].hi;
			memmove(&st->redo[k + 1], &st->redo[k + 2],
				(st->n_redo - k - 2) * sizeof(*st->redo));
			st->n_redo--;
		} else {
			k++;
		}
	}
	return 0;
}

static void redo_remove(struct store *st, size_t i)
{
	memmove(&st->redo[i], &st->redo[i + 1],
		(st->n_redo - i - 1) * sizeof(*st->redo));
	st->n_redo--;
}

static struct held *held_find(struct store *st, uint64_t id)
{
	for (size_t i = 0; i < st->n_held; i++)
		if (st->held[i].l.id == id)
			return &st->held[i];
	return NULL;
}

static void held_remove(struct store *st, struct held *h)
{
	*h = st->held[--st->n_held];
}

static void release(struct store *st, const struct store_lease *l)
{
	for (unsigned i = 0; i < l->n; i++)
		if (redo_add(st, l->lo[i], l->hi[i]) < 0)
			report(st, EB_LOG_ERR,
			       "out of memory: rows %lld-%lld wait for a "
			       "restart",
			       (long long)l->lo[i], (long long)l->hi[i]);
}

void store_connected(struct store *st)
{
	int64_t old_live_start = st->live_start;
	int64_t old_live_cursor = st->live_cursor;

	/* acknowledged rows are deleted first, so that the old live lane
	 * holds only what is released below or taken by nobody */
	store_flush(st);
	for (size_t i = 0; i < st->n_held;) {
		if (st->held[i].owner == STORE_UPLINK) {
			release(st, &st->held[i].l);
			held_remove(st, &st->held[i]);
		} else {
			i++;
		}
	}
	/* What was taken before this moment is the backlog.  Its unleased
	 * rows are the old backlog lane past its cursor and the old live lane
	 * past its cursor; one cursor cannot say both when the old live lane
	 * was used, so the former becomes a released range. */
	if (old_live_cursor >= old_live_start) {
		redo_add(st, st->back_cursor + 1, old_live_start - 1);
		st->back_cursor = old_live_cursor;
	}
	st->live_start = st->next_seq;
	st->live_cursor = st->next_seq - 1;
	st->n_ev_inflight = 0;
	st->events_dirty = true;
}

void store_reserve_backlog(struct store *st, bool on)
{
	st->backlog_reserved = on;
}

static size_t read_rows(struct store *st, sqlite3_stmt *s,
			struct store_row *rows, size_t max)
{
	size_t n = 0;

	while (n < max && sqlite3_step(s) == SQLITE_ROW) {
		struct store_row *r = &rows[n];

		r->seq = sqlite3_column_int64(s, 0);
		r->s.meta = meta_by_id(st, sqlite3_column_int64(s, 1));
		r->s.value = sqlite3_column_double(s, 2);
		r->s.time_ms = sqlite3_column_int64(s, 3);
		if (r->s.meta)
			n++;
	}
	sqlite3_reset(s);
	return n;
}

/* The released ranges, then the backlog lane; at most `runs` sources so a
 * lease of what is returned fits in struct store_lease. */
static size_t next_old(struct store *st, struct store_row *rows, size_t max,
		       unsigned runs)
{
	size_t n = 0;
	sqlite3_stmt *s;

	for (size_t i = 0; i < st->n_redo && n < max && runs > 1;) {
		size_t got;

		s = stmt(st, S_NEXT_REDO);
		sqlite3_bind_int64(s, 1, st->redo[i].lo);
		sqlite3_bind_int64(s, 2, st->redo[i].hi);
		sqlite3_bind_int64(s, 3, (int64_t)(max - n));
		got = read_rows(st, s, rows + n, max - n);
		if (!got) {
			redo_remove(st, i); /* its rows were dropped */
			continue;
		}
		n += got;
		runs--;
		i++;
	}
	if (n < max && runs) {
		s = stmt(st, S_NEXT_BACK);
		sqlite3_bind_int64(s, 1, st->back_cursor);
		sqlite3_bind_int64(s, 2, st->live_start);
		sqlite3_bind_int64(s, 3, (int64_t)(max - n));
		n += read_rows(st, s, rows + n, max - n);
	}
	return n;
}

size_t store_next(struct store *st, struct store_row *rows, size_t max)
{
	sqlite3_stmt *s;
	size_t n;

	if (memq_pending(st->inbox))
		store_flush(st);
	s = stmt(st, S_NEXT_LIVE);
	sqlite3_bind_int64(s, 1, st->live_cursor);
	sqlite3_bind_int64(s, 2, (int64_t)max);
	n = read_rows(st, s, rows, max);
	if (n < max && !st->backlog_reserved)
		n += next_old(st, rows + n, max - n, STORE_LEASE_RUNS - 1);
	return n;
}

size_t store_next_backlog(struct store *st, struct store_row *rows, size_t max)
{
	if (memq_pending(st->inbox))
		store_flush(st);
	return next_old(st, rows, max, STORE_LEASE_RUNS);
}

/* Which source a row came from: -1 live lane, -2 backlog lane, else the
 * index of its released range. */
static long source_of(const struct store *st, int64_t seq)
{
	if (seq >= st->live_start)
		return -1;
	for (size_t i = 0; i < st->n_redo; i++)
		if (seq >= st->redo[i].lo && seq <= st->redo[i].hi)
			return (long)i;
	return -2;
}

void store_lease_as(struct store *st, enum store_owner owner,
		    const struct store_row *rows, size_t n,
		    struct store_lease *l)
{
	long src[STORE_LEASE_RUNS];

	memset(l, 0, sizeof(*l));
	l->id = ++st->next_lease;
	for (size_t i = 0; i < n; i++) {
		long so = source_of(st, rows[i].seq);

		if (!l->n || src[l->n - 1] != so) {
			if (l->n == STORE_LEASE_RUNS)
				break; /* cannot happen: next_old limits */
			src[l->n] = so;
			l->lo[l->n] = rows[i].seq;
			l->n++;
		}
		l->hi[l->n - 1] = rows[i].seq;
	}
	/* advance the cursors, trim the released ranges (back to front, so
	 * the indexes stay valid) */
	for (unsigned k = l->n; k-- > 0;) {
		if (src[k] == -1) {
			st->live_cursor = l->hi[k];
		} else if (src[k] == -2) {
			st->back_cursor = l->hi[k];
		} else {
			struct range *r = &st->redo[src[k]];

			r->lo = l->hi[k] + 1;
			if (r->lo > r->hi)
				redo_remove(st, (size_t)src[k]);
		}
	}
	if (!l->n)
		return;
	if (st->n_held == st->cap_held) {
		size_t cap = st->cap_held ? st->cap_held * 2 : 16;
		struct held *h = realloc(st->held, cap * sizeof(*h));

		if (!h)
			return; /* not released on reconnect: re-sent at
				 * the next start */
		st->held = h;
		st->cap_held = cap;
	}
	st->held[st->n_held].l = *l;
	st->held[st->n_held].owner = owner;
	st->n_held++;
}

void store_lease(struct store *st, const struct store_row *rows, size_t n,
		 struct store_lease *l)
{
	store_lease_as(st, STORE_UPLINK, rows, n, l);
}

void store_release(struct store *st, const struct store_lease *l)
{
	struct held *h = held_find(st, l->id);

	if (!h)
		return; /* released already (a reconnect) */
	release(st, &h->l);
	held_remove(st, h);
}

void store_ack(struct store *st, const struct store_lease *l)
{
	struct held *h = held_find(st, l->id);

	if (h)
		held_remove(st, h);
	for (unsigned i = 0; i < l->n; i++) {
		if (st->n_acks == st->cap_acks) {
			size_t cap = st->cap_acks ? st->cap_acks * 2 : 64;
			struct range *r = realloc(st->acks, cap * sizeof(*r));

			if (!r)
				return; /* re-sent after a restart: dup */
			st->acks = r;
			st->cap_acks = cap;
		}
		st->acks[st->n_acks].lo = l->lo[i];
		st->acks[st->n_acks].hi = l->hi[i];
		st->n_acks++;
	}
}

uint64_t store_backlog(const struct store *st)
{
	uint64_t n = 0;

	for (size_t i = 0; i < st->n_redo; i++)
		n += (uint64_t)(st->redo[i].hi - st->redo[i].lo + 1);
	if (st->live_start - 1 > st->back_cursor)
		n += (uint64_t)(st->live_start - 1 - st->back_cursor);
	return n < st->stored ? n : st->stored;
}

/* Moves rows [lo, hi] to the quarantine table; returns how many. */
static uint64_t quarantine_range(struct store *st, int64_t lo, int64_t hi,
				 const char *reason)
{
	char *q = sqlite3_mprintf(
		"INSERT INTO quarantine SELECT seq, sensor, value, time_ms, %Q "
		"FROM samples WHERE seq BETWEEN %lld AND %lld; DELETE FROM "
		"samples WHERE seq BETWEEN %lld AND %lld",
		reason, (long long)lo, (long long)hi, (long long)lo,
		(long long)hi);
	uint64_t n = 0;

	if (q && exec(st, q) == 0)
		n = (uint64_t)sqlite3_changes(st->db);
	sqlite3_free(q);
	st->quarantined += n;
	st->stored = st->stored > n ? st->stored - n : 0;
	return n;
}

void store_quarantine(struct store *st, const struct store_row *row)
{
	quarantine_range(st, row->seq, row->seq, "cannot be formatted");
}

uint64_t store_quarantine_lease(struct store *st, const struct store_lease *l,
				const char *reason)
{
	struct held *h = held_find(st, l->id);
	uint64_t n = 0;

	if (h)
		held_remove(st, h);
	for (unsigned i = 0; i < l->n; i++)
		n += quarantine_range(st, l->lo[i], l->hi[i], reason);
	return n;
}

/* ---- open / close ------------------------------------------------------- */

static int open_db(struct store *st)
{
	char pragmas[256];
	const char *check;
	sqlite3_stmt *s;
	int rc;

	rc = sqlite3_open_v2(st->path, &st->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc);
	sqlite3_extended_result_codes(st->db, 0);
	/* no lookaside buffers: ~120 KiB per connection we do not need */
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_LOOKASIDE, NULL, 0, 0);
	sqlite3_busy_timeout(st->db, 1000);
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
		 "PRAGMA cache_size=-64; PRAGMA temp_store=FILE; "
		 "PRAGMA journal_size_limit=4194304; PRAGMA mmap_size=0;",
		 st->o.sync_full ? "FULL" : "NORMAL");
	rc = sqlite3_exec(st->db, pragmas, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc);
	if (sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &s, NULL) !=
	    SQLITE_OK)
		return sql_errno(sqlite3_errcode(st->db));
	rc = sqlite3_step(s);
	check = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0)
				 : NULL;
	rc = check && streq(check, "ok") ? 0 : -EBADMSG;
	sqlite3_finalize(s);
	if (rc < 0)
		return rc;
	rc = sqlite3_exec(st->db, schema, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rc);
	/* queues made before events had a severity: add it (an error here
	 * only means the column is there already) */
	sqlite3_exec(st->db,
		     "ALTER TABLE events ADD COLUMN severity TEXT NOT NULL "
		     "DEFAULT ''",
		     NULL, NULL, NULL);
	for (int i = 0; i < N_STMT; i++)
		if (sqlite3_prepare_v3(st->db, sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &st->st[i],
				       NULL) != SQLITE_OK)
			return sql_errno(sqlite3_errcode(st->db));
	return 0;
}

static void close_db(struct store *st)
{
	for (int i = 0; i < N_STMT; i++) {
		sqlite3_finalize(st->st[i]);
		st->st[i] = NULL;
	}
	if (st->db)
		sqlite3_close(st->db);
	st->db = NULL;
}

/* Keeps a damaged database for inspection and starts a new one. */
static int move_aside(struct store *st, char *moved, size_t len)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(moved, len, "%s.corrupt-%s", st->path, stamp);
	for (size_t i = 0; i < EB_ARRAY_SIZE(sfx); i++) {
		char from[4096], to[4096];

		snprintf(from, sizeof(from), "%s%s", st->path, sfx[i]);
		snprintf(to, sizeof(to), "%s%s", moved, sfx[i]);
		if (rename(from, to) < 0 && errno != ENOENT)
			return -errno;
	}
	return 0;
}

struct store *store_open(const struct store_opts *o, struct eb_err *err)
{
	struct store *st = calloc(1, sizeof(*st));
	char moved[4200] = "";
	int r;

	if (!st) {
		eb_errf(err, -ENOMEM, "out of memory");
		return NULL;
	}
	st->o = *o;
	st->path = strdup(o->path);
	st->inbox = memq_new(o->ram_samples ? o->ram_samples : 1);
	st->disk_ok = true;
	if (!st->path || !st->inbox) {
		eb_errf(err, -ENOMEM, "out of memory");
		return store_close(st);
	}
	r = open_db(st);
	if (r == -EBADMSG) {
		close_db(st);
		r = move_aside(st, moved, sizeof(moved));
		if (r < 0) {
			eb_errf(err, r,
				"%s is corrupt and cannot be moved aside: %s",
				st->path, strerror(-r));
			return store_close(st);
		}
		report(st, EB_LOG_ERR,
		       "%s was corrupt: moved to %s and started a new queue",
		       st->path, moved);
		r = open_db(st);
	}
	if (r < 0) {
		eb_errf(err, r, "cannot open the queue %s: %s", st->path,
			st->db ? sqlite3_errmsg(st->db) : strerror(-r));
		return store_close(st);
	}
	st->page_size = (uint64_t)query_int(st, "PRAGMA page_size", 4096);
	st->next_seq = query_int(st,
				 "SELECT seq FROM sqlite_sequence WHERE name = "
				 "'samples'",
				 0) +
		       1;
	st->stored = (uint64_t)query_int(st, "SELECT count(*) FROM samples", 0);
	st->bytes = used_bytes(st);
	st->live_start = st->next_seq;
	st->live_cursor = st->next_seq - 1;
	st->events_dirty = true;
	if (moved[0]) {
		char text[320];

		snprintf(text, sizeof(text),
			 "the sample queue was corrupt at start; moved to %s "
			 "and a new one started",
			 moved);
		add_event(st, "edgebridge_StoreReset", text, eb_realtime_ms(),
			  NULL);
	}
	return st;
}

struct store *store_close(struct store *st)
{
	if (!st)
		return NULL;
	if (st->db) {
		store_flush(st);
		close_db(st);
	}
	memq_free(st->inbox);
	for (size_t i = 0; i < st->n_sensors; i++)
		sensor_meta_unref(st->sensors[i].meta);
	free(st->sensors);
	for (size_t i = 0; i < st->n_drops; i++)
		sensor_meta_unref(st->drops[i].meta);
	free(st->drops);
	free(st->acks);
	free(st->redo);
	free(st->held);
	free(st->path);
	free(st);
	return NULL;
}

void store_get_stats(const struct store *st, struct store_stats *o)
{
	o->pushed = st->pushed;
	o->acked = st->acked;
	o->stored = st->stored;
	o->inbox = memq_pending(st->inbox);
	o->dropped = st->dropped;
	o->quarantined = st->quarantined;
	o->bytes = st->bytes;
	o->disk_ok = st->disk_ok;
}
