/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include "../../store/memq.h"

static struct sensor_meta *m;

static int setup(void **state)
{
	(void)state;
	m = sensor_meta_new("s", "f", "x", "u");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(m->refs, 1); /* every reference given back */
	m = sensor_meta_unref(m);
	return 0;
}

static void push(struct memq *q, double v)
{
	struct eb_sample s = { .meta = m, .value = v, .time_ms = 0 };

	memq_push(q, &s, NULL);
}

static void test_lease_ack_order(void **state)
{
	struct memq *q = memq_new(10);
	struct memq_stats st;
	uint64_t a, b;

	(void)state;
	for (int i = 0; i < 5; i++)
		push(q, i);
	assert_int_equal(memq_pending(q), 5);
	assert_true(memq_pending_at(q, 0)->value == 0);
	a = memq_lease(q, 2); /* 0,1 */
	assert_int_equal(memq_pending(q), 3);
	assert_true(memq_pending_at(q, 0)->value == 2);
	b = memq_lease(q, 2); /* 2,3 */
	assert_true(b > a);
	memq_ack_upto(q, a);
	memq_get_stats(q, &st);
	assert_int_equal(st.acked, 2);
	assert_int_equal(st.queued, 3);
	assert_int_equal(st.pending, 1);
	/* leases come back on unlease (nothing acknowledged) */
	memq_unlease_all(q);
	assert_int_equal(memq_pending(q), 3);
	assert_true(memq_pending_at(q, 0)->value == 2);
	/* an ack beyond what was leased cannot release pending samples */
	memq_ack_upto(q, b + 100);
	memq_get_stats(q, &st);
	assert_int_equal(st.queued, 3);
	memq_ack_upto(q, memq_lease(q, 100));
	memq_get_stats(q, &st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.acked, 5);
	assert_int_equal(st.pushed, 5);
	memq_free(q);
}

static void test_overflow_drops_oldest_and_counts(void **state)
{
	struct memq *q = memq_new(4);
	struct memq_stats st;
	struct eb_sample victim = { 0 };
	struct eb_sample s = { .meta = m, .value = 99 };
	uint64_t lease;

	(void)state;
	for (int i = 0; i < 4; i++)
		push(q, i);
	lease = memq_lease(q, 2); /* 0,1 in flight */
	assert_int_equal(memq_push(q, &s, &victim), 1);
	assert_ptr_equal(victim.meta, m); /* handed over with its reference */
	assert_true(victim.value == 0);
	sensor_meta_unref(victim.meta);
	push(q, 100); /* drops 1 */
	push(q, 101); /* drops 2 (pending) */
	memq_get_stats(q, &st);
	assert_int_equal(st.dropped, 3);
	assert_int_equal(st.queued, 4);
	assert_true(memq_pending_at(q, 0)->value == 3);
	/* the late ack for dropped samples is harmless */
	memq_ack_upto(q, lease);
	memq_get_stats(q, &st);
	assert_int_equal(st.queued, 4);
	assert_int_equal(memq_pending(q), 4);
	memq_free(q); /* releases the remaining references */
}

static void test_wraparound(void **state)
{
	struct memq *q = memq_new(3);
	double expect = 0;

	(void)state;
	for (int round = 0; round < 100; round++) {
		push(q, round * 2);
		push(q, round * 2 + 1);
		assert_true(memq_pending_at(q, 0)->value == expect);
		assert_true(memq_pending_at(q, 1)->value == expect + 1);
		memq_ack_upto(q, memq_lease(q, 2));
		expect += 2;
	}
	memq_free(q);
}

/* The ring starts small and grows, keeping order and leases. */
static void test_grows_up_to_its_cap(void **state)
{
	struct memq *q = memq_new(1000);
	struct memq_stats st;
	uint64_t lease;

	(void)state;
	for (int i = 0; i < 50; i++)
		push(q, i);
	lease = memq_lease(q, 30);
	for (int i = 50; i < 1000; i++)
		push(q, i);
	memq_get_stats(q, &st);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.queued, 1000);
	assert_true(memq_pending_at(q, 0)->value == 30);
	assert_true(memq_pending_at(q, 969)->value == 999);
	memq_ack_upto(q, lease);
	push(q, 1000);
	push(q, 1001); /* room from the ack: no drop */
	memq_get_stats(q, &st);
	assert_int_equal(st.dropped, 0);
	for (int i = 0; i < 1000; i++)
		push(q, 2000 + i); /* now at the cap: the oldest go */
	memq_get_stats(q, &st);
	assert_int_equal(st.queued, 1000);
	assert_int_equal(st.dropped, 972);
	assert_true(memq_pending_at(q, 0)->value == 2000);
	memq_free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lease_ack_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_overflow_drops_oldest_and_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wraparound, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_grows_up_to_its_cap, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("memq", tests, NULL, NULL);
}
