/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <sys/epoll.h>

#include "helpers.h"

#include "../../common/util.h"
#include "../../daemon/loop.h"

struct ctx {
	int fired[4];
	int order[8];
	int n_order;
	struct loop_timer *t[4];
	int pipe[2];
	int reads;
	int signo;
};

static void on_t(struct loop *l, struct loop_timer *t, void *data)
{
	struct ctx *c = data;

	for (int i = 0; i < 4; i++)
		if (c->t[i] == t) {
			c->fired[i]++;
			c->order[c->n_order++] = i;
		}
	if (c->n_order == 3)
		loop_quit(l, 7);
}

static void test_timers_fire_in_deadline_order(void **state)
{
	struct loop *l = loop_new();
	struct ctx c = { 0 };
	uint64_t start = eb_now_ms();

	(void)state;
	for (int i = 0; i < 4; i++)
		c.t[i] = loop_timer_new(l, on_t, &c);
	loop_timer_arm_in(c.t[0], 30);
	loop_timer_arm_in(c.t[1], 10);
	loop_timer_arm_in(c.t[2], 20);
	loop_timer_arm_in(c.t[3], 5);
	loop_timer_disarm(c.t[3]); /* disarmed: never fires */
	assert_int_equal(loop_run(l), 7);
	assert_int_equal(c.order[0], 1);
	assert_int_equal(c.order[1], 2);
	assert_int_equal(c.order[2], 0);
	assert_int_equal(c.fired[3], 0);
	assert_true(eb_now_ms() - start >= 30);
	loop_free(l);
}

/* A timer re-armed for "now" runs once per round, not in a busy loop
 * inside one round; other fds still get served in between. */
static void on_rearm(struct loop *l, struct loop_timer *t, void *data)
{
	struct ctx *c = data;

	c->fired[0]++;
	if (c->fired[0] == 1)
		assert_int_equal(write(c->pipe[1], "x", 1), 1);
	if (c->reads && c->fired[0] >= 3)
		loop_quit(l, 0);
	else
		loop_timer_arm_in(t, 0);
}

static void on_pipe(struct loop *l, int fd, uint32_t ev, void *data)
{
	struct ctx *c = data;
	char b;

	(void)l, (void)ev;
	assert_int_equal(read(fd, &b, 1), 1);
	c->reads++;
}

static void test_immediate_rearm_does_not_starve_io(void **state)
{
	struct loop *l = loop_new();
	struct ctx c = { 0 };

	(void)state;
	assert_int_equal(pipe(c.pipe), 0);
	assert_int_equal(loop_io_add(l, c.pipe[0], EPOLLIN, on_pipe, &c), 0);
	c.t[0] = loop_timer_new(l, on_rearm, &c);
	loop_timer_arm_in(c.t[0], 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(c.reads, 1);
	assert_true(c.fired[0] >= 3);
	assert_int_equal(loop_io_del(l, c.pipe[0]), 0);
	assert_int_equal(loop_io_del(l, c.pipe[0]), -ENOENT);
	close(c.pipe[0]);
	close(c.pipe[1]);
	loop_free(l);
}

static void on_sig(struct loop *l, int signo, void *data)
{
	struct ctx *c = data;

	c->signo = signo;
	loop_quit(l, 3);
}

static void test_signals_arrive_as_data(void **state)
{
	struct loop *l = loop_new();
	struct ctx c = { 0 };
	int sigs[] = { SIGUSR2 };

	(void)state;
	assert_int_equal(loop_signals(l, sigs, 1, on_sig, &c), 0);
	raise(SIGUSR2); /* blocked: queued for the signalfd */
	assert_int_equal(loop_run(l), 3);
	assert_int_equal(c.signo, SIGUSR2);
	loop_free(l);
}

/* Deleting the fd being served (as on a reconnect) is safe. */
static void on_self_delete(struct loop *l, int fd, uint32_t ev, void *data)
{
	struct ctx *c = data;

	(void)ev;
	c->reads++;
	loop_io_del(l, fd);
	close(fd);
	loop_quit(l, 0);
}

static void test_delete_inside_callback(void **state)
{
	struct loop *l = loop_new();
	struct ctx c = { 0 };

	(void)state;
	assert_int_equal(pipe(c.pipe), 0);
	assert_int_equal(write(c.pipe[1], "xy", 2), 2);
	loop_io_add(l, c.pipe[0], EPOLLIN, on_self_delete, &c);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(c.reads, 1);
	close(c.pipe[1]);
	loop_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_deadline_order),
		cmocka_unit_test(test_immediate_rearm_does_not_starve_io),
		cmocka_unit_test(test_signals_arrive_as_data),
		cmocka_unit_test(test_delete_inside_callback),
	};

	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
