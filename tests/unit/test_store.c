/* SPDX-License-Identifier: MIT */
#include <math.h>

#include "helpers.h"

#include "../../store/store.h"

struct fx {
	char *dir;
	char path[512];
	struct sensor_meta *a, *b;
	struct store *st;
	struct store_opts o;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->dir = t_mkdtemp();
	snprintf(f->path, sizeof(f->path), "%s/queue.db", f->dir);
	f->a = sensor_meta_new("a", "c8y_A", "A", "C");
	f->b = sensor_meta_new("b", "c8y_B", "B", "bar");
	f->o = (struct store_opts){ .path = f->path,
				    .max_size = 64ULL << 20,
				    .ram_samples = 1000 };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	store_close(f->st);
	/* every reference the store took was given back */
	assert_int_equal(f->a->refs, 1);
	assert_int_equal(f->b->refs, 1);
	sensor_meta_unref(f->a);
	sensor_meta_unref(f->b);
	t_rm_rf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static void open_store(struct fx *f)
{
	struct eb_err err = { "" };

	f->st = store_open(&f->o, &err);
	if (!f->st)
		fail_msg("store_open: %s", err.msg);
}

static void push(struct fx *f, struct sensor_meta *m, double v, int64_t t)
{
	struct eb_sample s = { .meta = m, .value = v, .time_ms = t };

	store_push(f->st, &s);
}

static size_t take(struct fx *f, struct store_row *rows, size_t max,
		   struct store_lease *l)
{
	size_t n = store_next(f->st, rows, max);

	store_lease(f->st, rows, n, l);
	return n;
}

static void test_lease_ack_order_and_persistence(void **state)
{
	struct fx *f = *state;
	struct store_row rows[16];
	struct store_lease l1, l2;
	struct store_stats s;
	size_t n;

	open_store(f);
	store_connected(f->st);
	for (int i = 0; i < 10; i++)
		push(f, i % 2 ? f->b : f->a, i, 1000 + i);
	assert_true(store_dirty(f->st));
	assert_int_equal(store_flush(f->st), 0);
	n = take(f, rows, 4, &l1);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		assert_true(rows[i].s.value == (double)i); /* oldest first */
		assert_string_equal(rows[i].s.meta->name, i % 2 ? "b" : "a");
		assert_true(i == 0 || rows[i].seq > rows[i - 1].seq);
	}
	/* leased rows are not offered twice */
	n = take(f, rows, 16, &l2);
	assert_int_equal(n, 6);
	assert_true(rows[0].s.value == 4);
	store_ack(f->st, &l2); /* acknowledgements may come out of order */
	store_flush(f->st);
	store_get_stats(f->st, &s);
	assert_int_equal(s.acked, 6);
	assert_int_equal(s.stored, 4);

	/* a restart: unacknowledged rows are still there, and sequence
	 * numbers continue after the highest ever used */
	f->st = store_close(f->st);
	open_store(f);
	store_connected(f->st);
	n = take(f, rows, 16, &l1);
	assert_int_equal(n, 4);
	assert_true(rows[0].s.value == 0 && rows[3].s.value == 3);
	assert_string_equal(rows[1].s.meta->unit, "bar");
	store_ack(f->st, &l1);
	push(f, f->a, 42, 2000);
	store_flush(f->st);
	n = take(f, rows, 16, &l1);
	assert_int_equal(n, 1);
	assert_true(rows[0].seq > 10);
	store_ack(f->st, &l1);
	store_flush(f->st);
	f->st = store_close(f->st);
	open_store(f);
	push(f, f->a, 43, 2001);
	store_connected(f->st);
	n = take(f, rows, 16, &l1);
	assert_int_equal(n, 1);
	assert_true(rows[0].seq > 11); /* never reused, even when empty */
}

static void test_live_lane_first_and_release(void **state)
{
	struct fx *f = *state;
	struct store_row rows[32];
	struct store_lease l;
	size_t n;

	open_store(f);
	for (int i = 0; i < 5; i++) /* taken while offline: backlog */
		push(f, f->a, i, 1000 + i);
	store_connected(f->st);
	n = take(f, rows, 2, &l); /* two backlog rows in flight */
	assert_int_equal(n, 2);
	for (int i = 0; i < 3; i++) /* live */
		push(f, f->b, 100 + i, 5000 + i);
	n = store_next(f->st, rows, 32);
	assert_int_equal(n, 6);
	assert_true(rows[0].s.value == 100); /* live first, oldest first */
	assert_true(rows[2].s.value == 102);
	assert_true(rows[3].s.value == 2); /* then the rest of the backlog */
	assert_true(rows[5].s.value == 4);
	store_lease(f->st, rows, 4, &l);
	assert_int_equal(l.n, 2); /* one run per lane */

	/* a reconnect releases every lease: all 8 rows are offered again,
	 * and the 3 former live rows are now backlog */
	store_connected(f->st);
	n = store_next(f->st, rows, 32);
	assert_int_equal(n, 8);
	assert_true(rows[0].s.value == 0);
	assert_true(rows[7].s.value == 102);
}

/* The bulk drainer and the uplink share the backlog without ever holding
 * the same row; a reconnect releases the uplink's leases only, and a failed
 * bulk post puts its rows back first in line. */
static void test_bulk_and_uplink_never_share_a_row(void **state)
{
	struct fx *f = *state;
	struct store_row rows[64];
	struct store_lease up, b1, b2;
	int seen[40] = { 0 };
	size_t n;

	open_store(f);
	for (int i = 0; i < 30; i++) /* backlog: values 0..29 */
		push(f, f->a, i, 1000 + i);
	store_connected(f->st);
	assert_int_equal(store_backlog(f->st), 30);

	/* the uplink took 5 backlog rows before the drain began */
	n = take(f, rows, 5, &up);
	assert_int_equal(n, 5);
	store_reserve_backlog(f->st, true);
	for (int i = 0; i < 3; i++) /* live rows keep flowing */
		push(f, f->b, 100 + i, 5000 + i);
	n = store_next(f->st, rows, 64);
	assert_int_equal(n, 3); /* live only while reserved */
	assert_true(rows[0].s.value == 100);

	n = store_next_backlog(f->st, rows, 10);
	assert_int_equal(n, 10);
	assert_true(rows[0].s.value == 5); /* past the uplink's lease */
	store_lease_as(f->st, STORE_BULK, rows, n, &b1);
	n = store_next_backlog(f->st, rows, 10);
	assert_true(rows[0].s.value == 15);
	store_lease_as(f->st, STORE_BULK, rows, n, &b2);

	/* the uplink reconnects: its 5 rows come back, the bulk leases stay */
	store_connected(f->st);
	store_release(f->st, &b1); /* b1 failed: first in line again */
	n = store_next_backlog(f->st, rows, 64);
	for (size_t i = 0; i < n; i++) {
		int v = (int)rows[i].s.value;

		assert_true(v < 15 || v >= 25 || v >= 100); /* b2 is held */
		if (v < 40)
			seen[v]++;
	}
	/* 0-4 (uplink, released), 5-14 (b1, released), 25-29 (backlog) and
	 * the three former live rows */
	assert_int_equal(n, 5 + 10 + 5 + 3);
	for (int v = 0; v < 15; v++)
		assert_int_equal(seen[v], 1);
	for (int v = 15; v < 25; v++)
		assert_int_equal(seen[v], 0);
	assert_true(rows[0].s.value == 0);
	assert_true(rows[5].s.value == 5);
	store_lease_as(f->st, STORE_BULK, rows, 0, &b1);

	/* acknowledged bulk rows are gone after the flush */
	store_ack(f->st, &b2);
	store_flush(f->st);
	store_reserve_backlog(f->st, false);
	n = store_next(f->st, rows, 64);
	assert_int_equal(n, 23);
	for (size_t i = 0; i < n; i++)
		assert_true(rows[i].s.value < 15 || rows[i].s.value >= 25);
}

static void test_drop_oldest_counts_and_reports(void **state)
{
	struct fx *f = *state;
	struct store_row rows[8];
	struct store_event ev[8];
	struct store_lease l;
	struct store_stats s;
	uint64_t left = 0, seen = 0;
	size_t n;

	f->o.max_size = 128 * 1024;
	f->o.ram_samples = 100000;
	open_store(f);
	store_connected(f->st);
	push(f, f->a, -1, 500);
	store_flush(f->st);
	n = take(f, rows, 1, &l); /* leased: must never be dropped */
	assert_int_equal(n, 1);
	for (int i = 0; i < 20000; i++)
		push(f, f->a, i, 1000 + i);
	store_flush(f->st);
	store_get_stats(f->st, &s);
	assert_true(s.dropped > 0);
	assert_true(s.bytes <= f->o.max_size);
	assert_int_equal(s.stored + s.dropped, 20001);
	/* the survivors are the newest, in one piece, plus the leased one */
	store_connected(f->st);
	while ((n = store_next(f->st, rows, 8))) {
		for (size_t i = 0; i < n; i++) {
			if (rows[i].s.value == -1) {
				seen++;
				continue;
			}
			assert_true(rows[i].s.value >= (double)s.dropped);
			left++;
		}
		store_lease(f->st, rows, n, &l);
		store_ack(f->st, &l);
	}
	assert_int_equal(seen, 1);
	assert_int_equal(left + s.dropped, 20000);
	/* one event names the sensor, the count and the reason */
	n = store_events(f->st, ev, 8);
	assert_int_equal(n, 1);
	assert_string_equal(ev[0].type, "edgebridge_SamplesDropped");
	{
		char want[128];

		snprintf(want, sizeof(want),
			 "sensor a: %llu samples dropped "
			 "(store full) between ",
			 (unsigned long long)s.dropped);
		assert_non_null(strstr(ev[0].text, want));
	}
	/* in flight: not offered again; acknowledged: gone */
	store_event_inflight(f->st, ev[0].id);
	assert_int_equal(store_events(f->st, ev, 8), 0);
	store_event_ack(f->st, ev[0].id);
	assert_int_equal(store_events(f->st, ev, 8), 0);
}

static void test_drop_newest(void **state)
{
	struct fx *f = *state;
	struct store_row rows[64];
	struct store_stats s;
	double expect = 0;
	size_t n;

	f->o.max_size = 96 * 1024;
	f->o.drop_newest = true;
	f->o.ram_samples = 100000;
	open_store(f);
	for (int i = 0; i < 20000; i++)
		push(f, f->b, i, 1000 + i);
	store_flush(f->st);
	store_get_stats(f->st, &s);
	assert_true(s.dropped > 0);
	assert_int_equal(s.stored + s.dropped, 20000);
	/* the survivors are the oldest */
	store_connected(f->st);
	while ((n = store_next(f->st, rows, 64))) {
		struct store_lease l;

		for (size_t i = 0; i < n; i++)
			assert_true(rows[i].s.value == expect++);
		store_lease(f->st, rows, n, &l);
	}
	assert_true(expect == (double)s.stored);
}

static void test_corrupt_database_is_moved_aside(void **state)
{
	struct fx *f = *state;
	struct store_event ev[4];
	char *junk;

	junk = t_write(f->dir, "queue.db", 0644,
		       "SQLite format 3%c this is not a database at all", 0);
	open_store(f);
	assert_int_equal(store_events(f->st, ev, 4), 1);
	assert_string_equal(ev[0].type, "edgebridge_StoreReset");
	assert_non_null(strstr(ev[0].text, "queue.db.corrupt-"));
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd),
			 "grep -q 'not a database' %s/queue.db.corrupt-*",
			 f->dir);
		assert_int_equal(system(cmd), 0); /* kept, not deleted */
	}
	/* and the new queue works */
	push(f, f->a, 1, 1);
	assert_int_equal(store_flush(f->st), 0);
	free(junk);
}

static void test_nan_is_quarantined_not_queued(void **state)
{
	struct fx *f = *state;
	struct store_row rows[4];
	struct store_stats s;

	open_store(f);
	push(f, f->a, NAN, 1);
	push(f, f->a, 7, 2);
	store_flush(f->st);
	store_connected(f->st);
	assert_int_equal(store_next(f->st, rows, 4), 1);
	assert_true(rows[0].s.value == 7);
	store_get_stats(f->st, &s);
	assert_int_equal(s.quarantined, 1);
	assert_int_equal(s.pushed, 2);
}

static void test_max_age(void **state)
{
	struct fx *f = *state;
	struct store_row rows[8];
	struct store_event ev[4];
	struct store_stats s;
	int64_t now = eb_realtime_ms();

	f->o.max_age_ms = 3600 * 1000;
	open_store(f);
	push(f, f->a, 1, now - 7200 * 1000); /* two hours old */
	push(f, f->b, 2, now - 7100 * 1000);
	push(f, f->a, 3, now);
	store_flush(f->st);
	store_get_stats(f->st, &s);
	assert_int_equal(s.dropped, 2);
	store_connected(f->st);
	assert_int_equal(store_next(f->st, rows, 8), 1);
	assert_true(rows[0].s.value == 3);
	assert_int_equal(store_events(f->st, ev, 4), 2);
	assert_non_null(strstr(ev[0].text, "(too old)"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
			test_lease_ack_order_and_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_live_lane_first_and_release, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_bulk_and_uplink_never_share_a_row, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_drop_oldest_counts_and_reports, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_newest, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_corrupt_database_is_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_nan_is_quarantined_not_queued, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_age, setup, teardown),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
