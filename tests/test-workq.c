/* SPDX-License-Identifier: MIT */
/* Unit tests of workq: the registry of processes, the background threads' next job, the session's end. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include <cmocka.h>

#include "fill.h"
#include "ranges.h"
#include "stats.h"
#include "workq.h"

static uint64_t pg;

struct fx {
	struct stats st;
	struct fill f;
	struct workq *q;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	struct lp_err e;

	assert_non_null(x);
	stats_init(&x->st);
	fill_init(&x->f, pg);
	x->f.stats = &x->st;
	x->q = workq_new(&x->f, 4, &e);
	assert_non_null(x->q);
	x->f.q = x->q;
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	workq_free(x->q);
	fill_destroy(&x->f);
	free(x);
	return 0;
}

/* A process with NPAGES lazy pages at a made-up address, on a real (unregistered) userfaultfd. */
static struct proc *mkproc(struct fx *x, int32_t pid, uint64_t npages)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct ranges *r = ranges_new();

	assert_true(fd >= 0);
	assert_int_equal(ioctl(fd, UFFDIO_API, &api), 0);
	assert_non_null(r);
	if (npages)
		assert_int_equal(ranges_add(r, 0x10000000ull, 0x10000000ull + npages * pg, 0), 0);
	return proc_new(&x->f, fill_new_proc(&x->f, 1, (uint64_t)pid, 0, 0), pid, (uint32_t)pid, NULL, fd, r);
}

static bool yes(void *arg)
{
	(void)arg;
	return true;
}

static bool no(void *arg)
{
	(void)arg;
	return false;
}

static void test_add_take(void **state)
{
	struct fx *x = *state;
	struct proc *a = mkproc(x, 10, 4), *b = mkproc(x, 11, 4), *c = mkproc(x, 12, 4);
	struct lp_err e;
	uint64_t v;

	proc_set_ended(c, PROC_DONE);	/* recovered, finished before the restart */
	assert_int_equal(workq_add(x->q, a, false, &e), 0);
	assert_int_equal(workq_add(x->q, b, false, &e), 0);
	assert_int_equal(workq_add(x->q, c, false, &e), 0);
	assert_int_equal(workq_count(x->q), 3);
	assert_int_equal(workq_live(x->q), 2);
	/* the fault threads learn of the live ones, in order, through the eventfd */
	assert_true(read(workq_eventfd(x->q), &v, sizeof(v)) == sizeof(v));
	assert_int_equal(v, 2);
	assert_ptr_equal(workq_take_new(x->q), a);
	assert_ptr_equal(workq_take_new(x->q), b);
	assert_null(workq_take_new(x->q));
}

static void test_limit(void **state)
{
	struct fx *x = *state;
	struct lp_err e;
	int i;

	for (i = 0; i < 4; i++)
		assert_int_equal(workq_add(x->q, mkproc(x, 20 + i, 1), false, &e), 0);
	/* the fifth is refused, the session fails, and the process is kept (to be killed with the others) */
	assert_int_equal(workq_add(x->q, mkproc(x, 30, 1), false, &e), -EMFILE);
	assert_non_null(strstr(e.msg, "more than 4 processes"));
	assert_int_equal(workq_count(x->q), 5);
	assert_non_null(workq_failure(x->q));
	assert_true(workq_wait(x->q, 0));
}

static void test_fail_first(void **state)
{
	struct fx *x = *state;

	assert_null(workq_failure(x->q));
	workq_fail(x->q, "first %d", 1);
	workq_fail(x->q, "second %d", 2);
	assert_string_equal(workq_failure(x->q), "first 1");
	assert_true(workq_wait(x->q, 1000000));
}

static void test_finish_wait(void **state)
{
	struct fx *x = *state;
	struct proc *a = mkproc(x, 10, 0), *b = mkproc(x, 11, 3);
	struct lp_err e;

	assert_int_equal(workq_add(x->q, a, false, &e), 0);
	assert_int_equal(workq_add(x->q, b, false, &e), 0);
	assert_false(workq_wait(x->q, 1000000));	/* 1 ms: two live */
	workq_finish(x->q, a, PROC_DONE);		/* nothing lazy: done */
	assert_int_equal(workq_live(x->q), 1);
	workq_finish(x->q, b, PROC_DONE);		/* pages lazy: not done */
	assert_int_equal(workq_live(x->q), 1);
	workq_finish(x->q, b, PROC_GONE);
	workq_finish(x->q, b, PROC_GONE);		/* counted once */
	assert_int_equal(workq_live(x->q), 0);
	assert_true(workq_wait(x->q, 0));
	assert_null(workq_failure(x->q));
}

static void test_next_order(void **state)
{
	struct fx *x = *state;
	struct proc *a = mkproc(x, 10, 8), *b = mkproc(x, 11, 8), *c = mkproc(x, 12, 0), *p;
	struct workq_item it1, it2, *it;
	unsigned cursor = 0;
	struct lp_err e;

	assert_int_equal(workq_add(x->q, a, false, &e), 0);
	assert_int_equal(workq_add(x->q, b, false, &e), 0);
	assert_int_equal(workq_add(x->q, c, false, &e), 0);
	workq_start(x->q);
	/* round robin over live processes with lazy pages (c has none) */
	assert_true(workq_next(x->q, &cursor, yes, NULL, 0, &p, &it));
	assert_ptr_equal(p, a);
	assert_true(workq_next(x->q, &cursor, yes, NULL, 0, &p, &it));
	assert_ptr_equal(p, b);
	assert_true(workq_next(x->q, &cursor, yes, NULL, 0, &p, &it));
	assert_ptr_equal(p, a);
	/* items first, in order, even when reading is allowed */
	workq_push(x->q, &it1);
	workq_push(x->q, &it2);
	assert_true(workq_next(x->q, &cursor, yes, NULL, 0, &p, &it));
	assert_ptr_equal(it, &it1);
	assert_null(p);
	assert_true(workq_next(x->q, &cursor, no, NULL, 1000000, &p, &it));
	assert_ptr_equal(it, &it2);
	/* not allowed to read and nothing waiting: back after WAIT_NS with neither */
	assert_true(workq_next(x->q, &cursor, no, NULL, 1000000, &p, &it));
	assert_null(p);
	assert_null(it);
	workq_stop(x->q);
	assert_false(workq_next(x->q, &cursor, yes, NULL, 0, &p, &it));
}

struct waiter {
	struct workq *q;
	bool ret;
	struct proc *p;
};

static void *next_thread(void *arg)
{
	struct waiter *w = arg;
	struct workq_item *it;
	unsigned cursor = 0;

	w->ret = workq_next(w->q, &cursor, yes, NULL, 0, &w->p, &it);
	return NULL;
}

static void test_next_waits_for_marker(void **state)
{
	struct fx *x = *state;
	struct waiter w = { .q = x->q };
	struct proc *a = mkproc(x, 10, 8);
	struct lp_err e;
	pthread_t t;

	assert_int_equal(workq_add(x->q, a, false, &e), 0);
	assert_int_equal(pthread_create(&t, NULL, next_thread, &w), 0);
	usleep(20000);
	/* before the marker, no background work */
	assert_int_equal(pthread_tryjoin_np(t, NULL), EBUSY);
	workq_start(x->q);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(w.ret);
	assert_ptr_equal(w.p, a);
}

static void test_next_ends_on_failure(void **state)
{
	struct fx *x = *state;
	struct waiter w = { .q = x->q };
	pthread_t t;

	workq_start(x->q);
	assert_int_equal(pthread_create(&t, NULL, next_thread, &w), 0);
	usleep(20000);
	assert_int_equal(pthread_tryjoin_np(t, NULL), EBUSY);	/* nothing to do yet */
	workq_fail(x->q, "the page server went away");
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(w.ret);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_add_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finish_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_waits_for_marker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_ends_on_failure, setup, teardown),
	};

	pg = (uint64_t)sysconf(_SC_PAGESIZE);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
