/* SPDX-License-Identifier: MIT */
/*
 * The durable sample queue: SQLite in WAL mode under gateway.state_dir.
 *
 * Samples get a sequence number that never repeats, also across restarts.
 * They are pushed into a bounded RAM inbox and committed in one transaction
 * per loop tick (store_flush), never one per sample.  The uplink asks for
 * the next rows (store_next), leases the ones it packed into a publish
 * (store_lease) and acknowledges them after the PUBACK (store_ack); only
 * then are they deleted.  Leases live in RAM: after a disconnect
 * (store_connected) everything unacknowledged is offered again.
 *
 * Two lanes keep live data from starving behind a backlog: rows taken since
 * the connection came up (live) are offered first, oldest first; the rows
 * that accumulated before it (backlog) fill what room is left, oldest first.
 *
 * Bounded by max_size (and max_age); overflow drops the oldest (or the
 * newest) unleased rows.  Every drop is counted per sensor and becomes an
 * event for the cloud, as does a corrupt database found at start.  When the
 * disk cannot be written, samples wait in the inbox (ram_samples at most,
 * then the oldest are dropped and counted) and the write is retried.
 */
#ifndef EB_STORE_H
#define EB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/report.h"
#include "../common/sample.h"
#include "../common/util.h"

struct store;

struct store_opts {
	const char *path; /* the database file */
	uint64_t max_size;
	uint64_t max_age_ms; /* 0 = no limit */
	bool drop_newest;    /* overflow policy; default drop-oldest */
	bool sync_full;	     /* synchronous=FULL instead of NORMAL */
	size_t ram_samples;  /* inbox cap */
	eb_report_fn report;
};

struct store_row {
	int64_t seq;
	struct eb_sample s; /* s.meta is owned by the store */
};

/* What one publish (or bulk post) carried: runs of consecutive rows, one
 * per source (live lane, released ranges, backlog lane). */
#define STORE_LEASE_RUNS 4
struct store_lease {
	uint64_t id;
	int64_t lo[STORE_LEASE_RUNS], hi[STORE_LEASE_RUNS];
	unsigned n;
};

/* Who holds a lease: a reconnect of the uplink releases only its own. */
enum store_owner { STORE_UPLINK, STORE_BULK };

struct store_event {
	int64_t id;
	char type[64];
	char severity[16]; /* "" for an event, else an alarm: CRITICAL, MAJOR,
			    * MINOR or WARNING; CLEARED ends the active
			    * alarm of that type */
	char text[320];
	int64_t time_ms;
};

struct store_stats {
	uint64_t pushed;      /* samples taken */
	uint64_t acked;	      /* acknowledged and deleted */
	uint64_t stored;      /* rows in the database now */
	uint64_t inbox;	      /* waiting in RAM to be written */
	uint64_t dropped;     /* by policy or disk trouble, all reasons */
	uint64_t quarantined; /* moved aside: could not be formatted */
	uint64_t bytes;	      /* database pages in use */
	bool disk_ok;
};

struct store *store_open(const struct store_opts *o, struct eb_err *err);
struct store *store_close(struct store *s);

/* Queues a sample in RAM (takes a reference on s->meta). */
void store_push(struct store *st, const struct eb_sample *s);
/* Commits the inbox and the acknowledgements; enforces the caps.  Returns
 * 0, or -errno when the disk failed (nothing is lost: retried later). */
int store_flush(struct store *st);
/* True when the inbox should be flushed before sleeping. */
bool store_dirty(const struct store *st);

/* A connection came up: a new live lane; the uplink's leases are released
 * (the bulk drainer's are not: its requests do not ride on that
 * connection). */
void store_connected(struct store *st);
/* The next rows to send, live lane first, then released rows, then the
 * backlog (unless reserved for the bulk drainer); not leased yet. */
size_t store_next(struct store *st, struct store_row *rows, size_t max);
/* The oldest rows nobody holds that are not in the live lane: what a bulk
 * drain takes.  Not leased yet. */
size_t store_next_backlog(struct store *st, struct store_row *rows, size_t max);
/* While on, store_next() offers the live lane only. */
void store_reserve_backlog(struct store *st, bool on);
/* About how many rows wait outside the live lane (an upper bound). */
uint64_t store_backlog(const struct store *st);
/* Leases rows[0..n) of what store_next*() just returned, for the uplink
 * (store_lease) or another owner. */
void store_lease(struct store *st, const struct store_row *rows, size_t n,
		 struct store_lease *l);
void store_lease_as(struct store *st, enum store_owner owner,
		    const struct store_row *rows, size_t n,
		    struct store_lease *l);
/* Delivered: the rows are deleted at the next flush. */
void store_ack(struct store *st, const struct store_lease *l);
/* Not delivered: the rows are offered again, before the backlog. */
void store_release(struct store *st, const struct store_lease *l);
/* A row that can never be sent: keep it aside, counted. */
void store_quarantine(struct store *st, const struct store_row *row);
/* Every row of a lease the platform refused for good: kept aside, counted.
 * Returns how many rows. */
uint64_t store_quarantine_lease(struct store *st, const struct store_lease *l,
				const char *reason);

/* Events for the cloud (drop reports, store resets), oldest first, that
 * are not in flight.  Drop counters are turned into events here. */
size_t store_events(struct store *st, struct store_event *ev, size_t max);
/* Queues an event (severity NULL or "") or an alarm for the cloud; it
 * survives restarts until acknowledged.  0 or -errno. */
int store_add_event(struct store *st, const char *type, const char *severity,
		    const char *text, int64_t time_ms);
void store_event_inflight(struct store *st, int64_t id);
void store_event_ack(struct store *st, int64_t id);

void store_get_stats(const struct store *st, struct store_stats *out);

#endif
