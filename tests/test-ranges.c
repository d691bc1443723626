/* SPDX-License-Identifier: MIT */
/* Unit tests of ranges: direct cases, a randomised page-array model, and a 1 GiB workout. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ranges.h"

static uint64_t pg;		/* page size */

#define P(n) ((uint64_t)(n) * pg)
#define BASE 0x10000000ULL	/* run-time addresses of the direct cases */
#define IMG 0x40000000ULL	/* image addresses of the direct cases */

static void expect_run(const struct rrun *run, uint64_t addr, uint64_t img, uint64_t nr)
{
	assert_int_equal(run->addr, addr);
	assert_int_equal(run->img, img);
	assert_int_equal(run->nr_pages, nr);
}

/* Every page i of [start, start + nr pages): lazy iff LAZY(OFF + i), with image IMG0 + i pages. */
static void expect_pages_at(const struct ranges *r, uint64_t start, uint64_t nr, uint64_t img0,
			    bool (*lazy)(uint64_t), uint64_t off)
{
	uint64_t i, img;

	for (i = 0; i < nr; i++) {
		bool want = lazy(off + i);

		if (ranges_lookup(r, start + P(i), &img) != want)
			fail_msg("page %" PRIu64 ": lookup %s", i, want ? "false" : "true");
		if (want)
			assert_int_equal(img, img0 + P(i));
	}
}

static void expect_pages(const struct ranges *r, uint64_t start, uint64_t nr, uint64_t img0,
			 bool (*lazy)(uint64_t))
{
	expect_pages_at(r, start, nr, img0, lazy, 0);
}

static void test_add(void **state)
{
	struct ranges *r = ranges_new();

	(void)state;
	assert_non_null(r);
	assert_int_equal(ranges_add(r, BASE, BASE + P(10), IMG), 0);
	assert_int_equal(ranges_remaining(r), 10);
	assert_int_equal(ranges_segments(r), 1);

	/* empty, reversed, unaligned */
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(20), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(21), BASE + P(20), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(20) + 1, BASE + P(22), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(22) - 8, IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(22), IMG + 16), -EINVAL);
	/* image range wrapping around */
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(22), UINT64_MAX - P(1) + 1), -EINVAL);

	/* overlaps: same, left, right, containing, contained */
	assert_int_equal(ranges_add(r, BASE, BASE + P(10), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE - P(2), BASE + P(1), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(9), BASE + P(12), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE - P(1), BASE + P(11), IMG), -EINVAL);
	assert_int_equal(ranges_add(r, BASE + P(3), BASE + P(4), IMG), -EINVAL);
	assert_int_equal(ranges_remaining(r), 10);
	assert_int_equal(ranges_segments(r), 1);

	/* adjacent on both sides, and out of order */
	assert_int_equal(ranges_add(r, BASE + P(10), BASE + P(12), IMG + P(100)), 0);
	assert_int_equal(ranges_add(r, BASE - P(3), BASE, IMG + P(200)), 0);
	assert_int_equal(ranges_add(r, BASE - P(100), BASE - P(90), IMG), 0);
	assert_int_equal(ranges_remaining(r), 25);
	assert_int_equal(ranges_segments(r), 4);

	/* a segment with nothing lazy left no longer blocks an add */
	assert_int_equal(ranges_clear(r, BASE - P(100), 10), 10);
	assert_int_equal(ranges_segments(r), 3);
	assert_int_equal(ranges_add(r, BASE - P(95), BASE - P(94), IMG), 0);
	assert_int_equal(ranges_segments(r), 4);
	ranges_free(r);
	ranges_free(NULL);
}

static void test_lookup_edges(void **state)
{
	struct ranges *r = ranges_new();
	uint64_t img = 0;

	(void)state;
	assert_int_equal(ranges_add(r, BASE, BASE + P(10), IMG), 0);
	assert_int_equal(ranges_add(r, BASE + P(10), BASE + P(20), IMG + P(1000)), 0);
	assert_false(ranges_lookup(r, BASE - P(1), &img));
	assert_false(ranges_lookup(r, BASE - 1, &img));
	assert_true(ranges_lookup(r, BASE, &img));
	assert_int_equal(img, IMG);
	assert_true(ranges_lookup(r, BASE + P(9), &img));
	assert_int_equal(img, IMG + P(9));
	assert_true(ranges_lookup(r, BASE + P(10), &img));
	assert_int_equal(img, IMG + P(1000));
	assert_true(ranges_lookup(r, BASE + P(19), &img));
	assert_int_equal(img, IMG + P(1009));
	assert_false(ranges_lookup(r, BASE + P(20), &img));
	/* an address inside a page finds the page */
	assert_true(ranges_lookup(r, BASE + P(3) + 123, &img));
	assert_int_equal(img, IMG + P(3));
	assert_true(ranges_lookup(r, BASE + P(5), NULL));
	assert_false(ranges_lookup(r, 0, NULL));
	assert_false(ranges_lookup(r, UINT64_MAX, NULL));

	assert_int_equal(ranges_clear(r, BASE + P(9), 2), 2);
	assert_false(ranges_lookup(r, BASE + P(9), &img));
	assert_false(ranges_lookup(r, BASE + P(10), &img));
	assert_true(ranges_lookup(r, BASE + P(8), &img));
	assert_int_equal(img, IMG + P(8));
	ranges_free(r);
}

static void test_run(void **state)
{
	struct ranges *r = ranges_new();
	struct rrun run;

	(void)state;
	assert_int_equal(ranges_add(r, BASE, BASE + P(100), IMG), 0);
	assert_int_equal(ranges_add(r, BASE + P(100), BASE + P(200), IMG + P(500)), 0);
	assert_true(ranges_run(r, BASE, 3, &run));
	expect_run(&run, BASE, IMG, 3);
	/* capped at the segment end even though the next segment is adjacent */
	assert_true(ranges_run(r, BASE + P(10), 1000, &run));
	expect_run(&run, BASE + P(10), IMG + P(10), 90);
	assert_true(ranges_run(r, BASE + P(99), 1000, &run));
	expect_run(&run, BASE + P(99), IMG + P(99), 1);
	/* stops at a page already present */
	assert_int_equal(ranges_clear(r, BASE + P(70), 1), 1);
	assert_true(ranges_run(r, BASE + P(5), 1000, &run));
	expect_run(&run, BASE + P(5), IMG + P(5), 65);
	assert_true(ranges_run(r, BASE + P(64), 6, &run));
	expect_run(&run, BASE + P(64), IMG + P(64), 6);
	assert_false(ranges_run(r, BASE + P(70), 10, &run));
	assert_true(ranges_run(r, BASE + P(71), 1000, &run));
	expect_run(&run, BASE + P(71), IMG + P(71), 29);
	assert_true(ranges_run(r, BASE + P(150), 1000, &run));
	expect_run(&run, BASE + P(150), IMG + P(550), 50);
	assert_false(ranges_run(r, BASE + P(200), 10, &run));
	assert_false(ranges_run(r, BASE, 0, &run));
	ranges_free(r);
}

static void test_next(void **state)
{
	struct ranges *r = ranges_new();
	struct rrun run;

	(void)state;
	assert_false(ranges_next(r, 0, 10, &run));
	assert_int_equal(ranges_add(r, BASE, BASE + P(10), IMG), 0);
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(30), IMG + P(100)), 0);
	assert_int_equal(ranges_add(r, BASE + P(30), BASE + P(40), IMG + P(200)), 0);

	assert_true(ranges_next(r, 0, 100, &run));
	expect_run(&run, BASE, IMG, 10);
	assert_true(ranges_next(r, BASE + P(3), 4, &run));
	expect_run(&run, BASE + P(3), IMG + P(3), 4);
	/* in a gap: the next segment */
	assert_true(ranges_next(r, BASE + P(12), 100, &run));
	expect_run(&run, BASE + P(20), IMG + P(100), 10);
	/* past everything: wraps to the lowest */
	assert_true(ranges_next(r, BASE + P(40), 100, &run));
	expect_run(&run, BASE, IMG, 10);
	assert_true(ranges_next(r, UINT64_MAX, 2, &run));
	expect_run(&run, BASE, IMG, 2);

	/* lazy pages of the hint's segment only below the hint: the next segment first */
	assert_int_equal(ranges_clear(r, BASE + P(25), 5), 5);
	assert_true(ranges_next(r, BASE + P(26), 100, &run));
	expect_run(&run, BASE + P(30), IMG + P(200), 10);
	/* ... and the hint's segment itself on the wrap */
	assert_int_equal(ranges_clear(r, BASE, 10), 10);
	assert_int_equal(ranges_clear(r, BASE + P(30), 10), 10);
	assert_true(ranges_next(r, BASE + P(27), 100, &run));
	expect_run(&run, BASE + P(20), IMG + P(100), 5);
	assert_true(ranges_next(r, BASE + P(22), 100, &run));
	expect_run(&run, BASE + P(22), IMG + P(102), 3);
	assert_int_equal(ranges_clear(r, BASE + P(20), 5), 5);
	assert_int_equal(ranges_remaining(r), 0);
	assert_false(ranges_next(r, 0, 100, &run));
	assert_false(ranges_next(r, BASE + P(22), 100, &run));
	ranges_free(r);
}

static bool pattern_clear(uint64_t i)
{
	return !((i >= 3 && i < 80) || (i >= 120 && i < 130) || i == 199);
}

static void test_clear(void **state)
{
	struct ranges *r = ranges_new();
	uint64_t left;

	(void)state;
	assert_int_equal(ranges_add(r, BASE, BASE + P(200), IMG), 0);
	assert_int_equal(ranges_add(r, BASE + P(300), BASE + P(310), IMG + P(1000)), 0);
	assert_int_equal(ranges_add(r, BASE + P(310), BASE + P(320), IMG + P(2000)), 0);
	assert_int_equal(ranges_clear(r, BASE + P(3), 68), 68);
	assert_int_equal(ranges_clear(r, BASE + P(60), 20), 9);
	assert_int_equal(ranges_clear(r, BASE + P(120), 10), 10);
	assert_int_equal(ranges_clear(r, BASE + P(199), 1), 1);
	assert_int_equal(ranges_clear(r, BASE + P(3), 68), 0);
	assert_int_equal(ranges_remaining(r), 200 - 68 - 9 - 10 - 1 + 20);
	expect_pages(r, BASE, 200, IMG, pattern_clear);
	/* unaligned start: its page */
	assert_int_equal(ranges_clear(r, BASE + P(2) + 5, 1), 1);
	assert_false(ranges_lookup(r, BASE + P(2), NULL));

	/* across segments and gaps, partly cleared already; emptied segments are not counted */
	assert_int_equal(ranges_clear(r, BASE + P(150), 165), 49 + 10 + 5);
	assert_int_equal(ranges_segments(r), 2);
	assert_int_equal(ranges_remaining(r), 200 - 68 - 9 - 10 - 1 - 1 - 49 + 5);
	assert_true(ranges_lookup(r, BASE + P(315), NULL));
	assert_false(ranges_lookup(r, BASE + P(314), NULL));
	left = ranges_remaining(r);
	assert_int_equal(ranges_clear(r, 0, UINT64_MAX), left);
	assert_int_equal(ranges_remaining(r), 0);
	assert_int_equal(ranges_segments(r), 0);
	assert_int_equal(ranges_clear(r, 0, UINT64_MAX), 0);
	ranges_free(r);
}

static bool pattern_drop_mid(uint64_t i)
{
	return (i < 67 || i >= 131) && i % 7 != 3;
}

static void test_drop(void **state)
{
	struct ranges *r = ranges_new();
	uint64_t i, before;
	struct rrun run;

	(void)state;
	assert_int_equal(ranges_add(r, BASE, BASE + P(300), IMG), 0);
	for (i = 3; i < 300; i += 7)
		assert_int_equal(ranges_clear(r, BASE + P(i), 1), 1);
	before = ranges_remaining(r);

	/* in the middle, at odd bit offsets: two segments, image addresses kept */
	assert_int_equal(ranges_drop(r, BASE + P(67), BASE + P(131)), 64 - 9);
	assert_int_equal(ranges_segments(r), 2);
	assert_int_equal(ranges_remaining(r), before - 55);
	expect_pages(r, BASE, 300, IMG, pattern_drop_mid);
	assert_true(ranges_run(r, BASE + P(60), 100, &run));
	expect_run(&run, BASE + P(60), IMG + P(60), 6);
	assert_true(ranges_run(r, BASE + P(131), 100, &run));
	expect_run(&run, BASE + P(131), IMG + P(131), 5);
	/* the hole takes a new segment again */
	assert_int_equal(ranges_add(r, BASE + P(67), BASE + P(131), IMG + P(5000)), 0);
	assert_int_equal(ranges_drop(r, BASE + P(67), BASE + P(131)), 64);
	assert_int_equal(ranges_segments(r), 2);

	/* at the edges */
	assert_int_equal(ranges_drop(r, BASE - P(5), BASE + P(2)), 2);
	assert_false(ranges_lookup(r, BASE + P(1), NULL));
	assert_true(ranges_lookup(r, BASE + P(2), NULL));
	assert_int_equal(ranges_drop(r, BASE + P(290), BASE + P(400)), 8);
	assert_true(ranges_lookup(r, BASE + P(289), NULL));
	assert_false(ranges_lookup(r, BASE + P(290), NULL));
	assert_int_equal(ranges_segments(r), 2);
	/* in a gap or outside: nothing */
	assert_int_equal(ranges_drop(r, BASE + P(70), BASE + P(130)), 0);
	assert_int_equal(ranges_drop(r, BASE + P(1000), BASE + P(2000)), 0);
	assert_int_equal(ranges_drop(r, BASE + P(5), BASE + P(5)), 0);
	/* unaligned: every page touched goes */
	assert_int_equal(ranges_drop(r, BASE + P(11) + 1, BASE + P(12) + 1), 2);
	assert_true(ranges_lookup(r, BASE + P(9), NULL));
	assert_false(ranges_lookup(r, BASE + P(11), NULL));
	assert_false(ranges_lookup(r, BASE + P(12), NULL));
	assert_true(ranges_lookup(r, BASE + P(13), NULL));
	assert_int_equal(ranges_segments(r), 3);

	/* spanning several: partial first and last, whole ones between */
	ranges_free(r);
	r = ranges_new();
	for (i = 0; i < 5; i++)
		assert_int_equal(ranges_add(r, BASE + P(100 * i), BASE + P(100 * i + 50),
					    IMG + P(1000 * i)), 0);
	assert_int_equal(ranges_drop(r, BASE + P(30), BASE + P(420)), 20 + 50 + 50 + 50 + 20);
	assert_int_equal(ranges_segments(r), 2);
	assert_int_equal(ranges_remaining(r), 30 + 30);
	assert_true(ranges_run(r, BASE, 100, &run));
	expect_run(&run, BASE, IMG, 30);
	assert_true(ranges_next(r, BASE + P(30), 100, &run));
	expect_run(&run, BASE + P(420), IMG + P(4020), 30);
	assert_int_equal(ranges_drop(r, 0, UINT64_MAX), 60);
	assert_int_equal(ranges_segments(r), 0);
	assert_false(ranges_next(r, 0, 1, &run));
	ranges_free(r);
}

static bool pattern_move(uint64_t i)
{
	return i % 5 != 1 && (i < 40 || i > 44);
}

/* [BASE, BASE + 100 pages) at IMG, lazy as pattern_move says */
static struct ranges *move_setup(void)
{
	struct ranges *r = ranges_new();
	uint64_t i;

	assert_int_equal(ranges_add(r, BASE, BASE + P(100), IMG), 0);
	for (i = 1; i < 100; i += 5)
		assert_int_equal(ranges_clear(r, BASE + P(i), 1), 1);
	assert_int_equal(ranges_clear(r, BASE + P(40), 5), 4);
	return r;
}

/* page J of the segment after moving old pages [10, 60) by SHIFT pages */
static void expect_overlap_move(const struct ranges *r, int shift)
{
	uint64_t img;
	int j;

	for (j = 0; j < 100; j++) {
		int old = j >= 10 + shift && j < 60 + shift ? j - shift
			  : j >= 10 && j < 60 ? -1 : j;
		bool want = old >= 0 && pattern_move(old);

		if (ranges_lookup(r, BASE + P(j), &img) != want)
			fail_msg("shift %d page %d: lookup %s", shift, j, want ? "false" : "true");
		if (want)
			assert_int_equal(img, IMG + P(old));
	}
}

static void test_move(void **state)
{
	struct ranges *r;
	struct rrun run;
	uint64_t before;

	(void)state;
	/* forward, far: the whole segment; then back by an odd number of pages */
	r = move_setup();
	before = ranges_remaining(r);
	assert_int_equal(ranges_move(r, BASE, BASE + P(1000), P(100)), 0);
	assert_int_equal(ranges_remaining(r), before);
	assert_int_equal(ranges_segments(r), 1);
	expect_pages(r, BASE + P(1000), 100, IMG, pattern_move);
	assert_false(ranges_lookup(r, BASE, NULL));
	assert_int_equal(ranges_move(r, BASE + P(1000), BASE + P(3), P(100)), 0);
	expect_pages(r, BASE + P(3), 100, IMG, pattern_move);
	assert_false(ranges_lookup(r, BASE + P(1000), NULL));
	assert_false(ranges_lookup(r, BASE + P(103), NULL));
	assert_int_equal(ranges_remaining(r), before);
	ranges_free(r);

	/* a piece from the middle, at odd bit offsets */
	r = move_setup();
	assert_int_equal(ranges_move(r, BASE + P(37), BASE + P(501), P(13)), 0);
	assert_int_equal(ranges_segments(r), 3);
	assert_int_equal(ranges_remaining(r), before);
	expect_pages_at(r, BASE + P(501), 13, IMG + P(37), pattern_move, 37);
	expect_pages(r, BASE, 37, IMG, pattern_move);
	expect_pages_at(r, BASE + P(50), 50, IMG + P(50), pattern_move, 50);
	assert_false(ranges_lookup(r, BASE + P(38), NULL));
	ranges_free(r);

	/* overlapping source and destination, forward and backward */
	r = move_setup();
	assert_int_equal(ranges_move(r, BASE + P(10), BASE + P(15), P(50)), 0);
	expect_overlap_move(r, 5);
	/* the moved piece is its own segment: a run stops at its end */
	assert_true(ranges_run(r, BASE + P(62), 100, &run));
	expect_run(&run, BASE + P(62), IMG + P(57), 3);
	assert_true(ranges_lookup(r, BASE + P(65), NULL));
	ranges_free(r);
	r = move_setup();
	assert_int_equal(ranges_move(r, BASE + P(10), BASE + P(5), P(50)), 0);
	expect_overlap_move(r, -5);
	ranges_free(r);

	/* onto a lazy destination: it is dropped first */
	r = move_setup();
	assert_int_equal(ranges_add(r, BASE + P(200), BASE + P(300), IMG + P(1000)), 0);
	before = ranges_remaining(r);
	assert_int_equal(ranges_move(r, BASE, BASE + P(220), P(50)), 0);
	assert_int_equal(ranges_remaining(r), before - 50);
	assert_int_equal(ranges_segments(r), 4);
	expect_pages(r, BASE + P(220), 50, IMG, pattern_move);
	expect_pages_at(r, BASE + P(50), 50, IMG + P(50), pattern_move, 50);
	assert_true(ranges_run(r, BASE + P(200), 100, &run));
	expect_run(&run, BASE + P(200), IMG + P(1000), 20);
	assert_true(ranges_run(r, BASE + P(270), 100, &run));
	expect_run(&run, BASE + P(270), IMG + P(1070), 30);
	/* nothing lazy at the source: the destination still goes */
	before = ranges_remaining(r);
	assert_int_equal(ranges_move(r, BASE + P(5000), BASE + P(205), P(10)), 0);
	assert_int_equal(ranges_remaining(r), before - 10);
	assert_false(ranges_lookup(r, BASE + P(205), NULL));
	assert_true(ranges_lookup(r, BASE + P(215), NULL));
	assert_false(ranges_lookup(r, BASE + P(5000), NULL));

	/* bad arguments */
	assert_int_equal(ranges_move(r, BASE + 1, BASE + P(1000), P(1)), -EINVAL);
	assert_int_equal(ranges_move(r, BASE, BASE + P(1000) + 8, P(1)), -EINVAL);
	assert_int_equal(ranges_move(r, BASE, BASE + P(1000), P(1) - 1), -EINVAL);
	assert_int_equal(ranges_move(r, BASE, UINT64_MAX - P(1) + 1, P(2)), -EINVAL);
	assert_int_equal(ranges_move(r, BASE, BASE + P(1000), 0), 0);
	assert_int_equal(ranges_remaining(r), before - 10);
	ranges_free(r);

	/* several segments with gaps and an adjacent pair */
	r = ranges_new();
	assert_int_equal(ranges_add(r, BASE, BASE + P(10), IMG), 0);
	assert_int_equal(ranges_add(r, BASE + P(20), BASE + P(30), IMG + P(100)), 0);
	assert_int_equal(ranges_add(r, BASE + P(30), BASE + P(40), IMG + P(200)), 0);
	assert_int_equal(ranges_move(r, BASE + P(5), BASE + P(1005), P(30)), 0);
	assert_int_equal(ranges_segments(r), 5);
	assert_int_equal(ranges_remaining(r), 30);
	assert_true(ranges_run(r, BASE, 100, &run));
	expect_run(&run, BASE, IMG, 5);
	assert_true(ranges_run(r, BASE + P(1005), 100, &run));
	expect_run(&run, BASE + P(1005), IMG + P(5), 5);
	assert_true(ranges_run(r, BASE + P(1020), 100, &run));
	expect_run(&run, BASE + P(1020), IMG + P(100), 10);
	assert_true(ranges_run(r, BASE + P(1030), 100, &run));
	expect_run(&run, BASE + P(1030), IMG + P(200), 5);
	assert_true(ranges_next(r, BASE + P(6), 100, &run));
	expect_run(&run, BASE + P(35), IMG + P(205), 5);
	ranges_free(r);
}

static void test_clone(void **state)
{
	struct ranges *r = move_setup(), *c;
	uint64_t before = ranges_remaining(r);
	struct rrun run;

	(void)state;
	assert_int_equal(ranges_add(r, BASE + P(200), BASE + P(210), IMG + P(1000)), 0);
	assert_int_equal(ranges_clear(r, BASE + P(200), 10), 10);
	c = ranges_clone(r);
	assert_non_null(c);
	assert_int_equal(ranges_remaining(c), before);
	assert_int_equal(ranges_segments(c), 1);
	expect_pages(c, BASE, 100, IMG, pattern_move);

	assert_int_equal(ranges_clear(r, BASE, 100), before);
	expect_pages(c, BASE, 100, IMG, pattern_move);
	assert_int_equal(ranges_drop(c, BASE + P(50), BASE + P(100)), 40);
	assert_int_equal(ranges_remaining(r), 0);
	assert_int_equal(ranges_remaining(c), before - 40);
	assert_int_equal(ranges_move(c, BASE, BASE + P(300), P(50)), 0);
	ranges_free(r);
	expect_pages(c, BASE + P(300), 50, IMG, pattern_move);
	assert_true(ranges_next(c, 0, 100, &run));
	expect_run(&run, BASE + P(300), IMG, 1);

	r = ranges_clone(c);
	ranges_free(c);
	expect_pages(r, BASE + P(300), 50, IMG, pattern_move);
	ranges_free(r);

	r = ranges_new();
	c = ranges_clone(r);
	assert_non_null(c);
	assert_int_equal(ranges_segments(c), 0);
	assert_int_equal(ranges_add(c, BASE, BASE + P(1), IMG), 0);
	assert_int_equal(ranges_remaining(r), 0);
	ranges_free(r);
	ranges_free(c);
}

/* Many segments, most emptied one by one: next must find the rest, in order, and wrap. */
static void test_many_segments(void **state)
{
	struct ranges *r = ranges_new();
	const uint64_t n = 100000;
	uint64_t i, hint, found = 0;
	struct rrun run;

	(void)state;
	for (i = 0; i < n; i++)
		assert_int_equal(ranges_add(r, BASE + P(3 * i), BASE + P(3 * i + 2),
					    IMG + P(2 * i)), 0);
	for (i = 0; i < n; i++)
		if (i % 1000 != 999)
			assert_int_equal(ranges_clear(r, BASE + P(3 * i), 2), 2);
	assert_int_equal(ranges_segments(r), n / 1000);
	assert_int_equal(ranges_remaining(r), 2 * n / 1000);
	for (hint = 0; ranges_next(r, hint, 100, &run); hint = run.addr + P(run.nr_pages)) {
		i = 999 + 1000 * found;
		expect_run(&run, BASE + P(3 * i), IMG + P(2 * i), 2);
		if (++found == n / 1000)
			break;
	}
	assert_int_equal(found, n / 1000);
	/* past the last one: wraps to the first */
	assert_true(ranges_next(r, run.addr + P(2), 100, &run));
	expect_run(&run, BASE + P(3 * 999), IMG + P(2 * 999), 2);
	/* an edit compacts; the survivors are still all there */
	assert_int_equal(ranges_drop(r, BASE + P(3 * 999), BASE + P(3 * 999 + 1)), 1);
	assert_int_equal(ranges_segments(r), n / 1000);
	assert_int_equal(ranges_add(r, BASE + P(3 * 5), BASE + P(3 * 5 + 2), IMG), 0);
	assert_true(ranges_next(r, 0, 100, &run));
	expect_run(&run, BASE + P(15), IMG, 2);
	assert_true(ranges_next(r, BASE + P(16), 100, &run));
	expect_run(&run, BASE + P(16), IMG + P(1), 1);
	assert_true(ranges_next(r, BASE + P(17), 100, &run));
	expect_run(&run, BASE + P(3 * 999 + 1), IMG + P(2 * 999 + 1), 1);
	assert_int_equal(ranges_clear(r, 0, UINT64_MAX), 2 * n / 1000 - 1 + 2);
	assert_false(ranges_next(r, 0, 100, &run));
	ranges_free(r);
}

/*
 * The model: one byte per page of a small address space, with the
 * segment each page belongs to (so runs stop at segment boundaries) and
 * its image address. Segments are the maximal stretches of one id; the
 * ones with no lazy page left do not count (ranges forgets them).
 */
#define MP 4096
#define MBASE 0x7f0000000000ULL
#define MIMG 0x100000000ULL

struct model {
	uint8_t lazy[MP];
	int id[MP];
	uint64_t img[MP];
	int next_id;
};

static struct {
	unsigned long long seed;
	int step;
	const char *op;
	uint64_t s;
} mt;

#define MT_FAIL(fmt, ...) do { \
	print_error("model test seed %llu step %d op %s: " fmt " (line %d)\n", \
		    mt.seed, mt.step, mt.op, __VA_ARGS__, __LINE__); \
	fail(); \
} while (0)
#define MT_EQ(a, b) do { \
	uint64_t a_ = (a), b_ = (b); \
	if (a_ != b_) \
		MT_FAIL("%s == %" PRIu64 ", expected %" PRIu64, #a, a_, b_); \
} while (0)

static uint64_t rnd(void)
{
	/* xorshift64*: the same sequence everywhere */
	mt.s ^= mt.s >> 12;
	mt.s ^= mt.s << 25;
	mt.s ^= mt.s >> 27;
	return mt.s * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

static uint64_t maddr(int64_t p)
{
	return MBASE + (uint64_t)p * pg;
}

/* A random number of pages: mostly a few, sometimes many. */
static uint64_t rnd_len(void)
{
	uint64_t k = rnd_below(100);

	if (k < 55)
		return 1 + rnd_below(8);
	if (k < 95)
		return 1 + rnd_below(300);
	return 1 + rnd_below(MP);
}

static bool m_alive(const struct model *m, int p)
{
	int a = p, b = p;

	if (m->id[p] < 0)
		return false;
	while (a > 0 && m->id[a - 1] == m->id[p])
		a--;
	while (b < MP - 1 && m->id[b + 1] == m->id[p])
		b++;
	for (; a <= b; a++)
		if (m->lazy[a])
			return true;
	return false;
}

static uint64_t m_segments(const struct model *m)
{
	uint64_t n = 0;
	int p = 0, q;

	while (p < MP) {
		bool lazy = false;

		if (m->id[p] < 0) {
			p++;
			continue;
		}
		for (q = p; q < MP && m->id[q] == m->id[p]; q++)
			lazy |= m->lazy[q];
		n += lazy;
		p = q;
	}
	return n;
}

static uint64_t m_remaining(const struct model *m)
{
	uint64_t n = 0;
	int p;

	for (p = 0; p < MP; p++)
		n += m->lazy[p];
	return n;
}

static bool m_run(const struct model *m, int p, uint64_t max, struct rrun *out)
{
	uint64_t k = 1;

	if (p < 0 || p >= MP || !m->lazy[p] || !max)
		return false;
	while (p + k < MP && k < max && m->lazy[p + k] && m->id[p + k] == m->id[p])
		k++;
	out->addr = maddr(p);
	out->img = m->img[p];
	out->nr_pages = k;
	return true;
}

static bool m_next(const struct model *m, int64_t hint, uint64_t max, struct rrun *out)
{
	int64_t p;

	for (p = hint < 0 ? 0 : hint; p < MP; p++)
		if (m->lazy[p])
			return m_run(m, p, max, out);
	for (p = 0; p < MP; p++)
		if (m->lazy[p])
			return m_run(m, p, max, out);
	return false;
}

static uint64_t m_clear(struct model *m, int64_t start, int64_t end)
{
	uint64_t n = 0;
	int64_t p;

	for (p = start < 0 ? 0 : start; p < end && p < MP; p++) {
		n += m->lazy[p];
		m->lazy[p] = 0;
	}
	return n;
}

static uint64_t m_drop(struct model *m, int64_t start, int64_t end)
{
	uint64_t n = m_clear(m, start, end);
	int64_t p;

	for (p = start < 0 ? 0 : start; p < end && p < MP; p++)
		m->id[p] = -1;
	return n;
}

static void m_move(struct model *m, int from, int to, int len)
{
	static uint8_t lazy[MP];
	static int id[MP];
	static uint64_t img[MP];
	int map_old[MP], map_new[MP], nmap = 0, i, k;

	/* ranges_move to the same place changes nothing, segments included */
	if (from == to)
		return;
	memcpy(lazy, m->lazy + from, len);
	memcpy(id, m->id + from, len * sizeof(*id));
	memcpy(img, m->img + from, len * sizeof(*img));
	m_drop(m, from, from + len);
	m_drop(m, to, to + len);
	for (i = 0; i < len; i++) {
		if (id[i] < 0)
			continue;
		/* each source segment lands as a segment of its own */
		for (k = 0; k < nmap && map_old[k] != id[i]; k++)
			;
		if (k == nmap) {
			map_old[nmap] = id[i];
			map_new[nmap++] = m->next_id++;
		}
		m->lazy[to + i] = lazy[i];
		m->id[to + i] = map_new[k];
		m->img[to + i] = img[i];
	}
}

static void m_add(struct model *m, int start, int end, uint64_t img)
{
	int p, id = m->next_id++;

	for (p = start; p < end; p++) {
		m->lazy[p] = 1;
		m->id[p] = id;
		m->img[p] = img + P(p - start);
	}
}

static void mt_expect_run(bool got, const struct rrun *g, bool want, const struct rrun *w)
{
	if (got != want)
		MT_FAIL("%s", want ? "no run, expected one" : "a run, expected none");
	if (!want)
		return;
	MT_EQ(g->addr, w->addr);
	MT_EQ(g->img, w->img);
	MT_EQ(g->nr_pages, w->nr_pages);
}

static void mt_check(const struct ranges *r, const struct model *m)
{
	struct rrun g, w;
	uint64_t img;
	int p, k;

	MT_EQ(ranges_remaining(r), m_remaining(m));
	for (p = 0; p < MP; p++) {
		bool got = ranges_lookup(r, maddr(p), &img);

		if (got != m->lazy[p])
			MT_FAIL("lookup of page %d: %d, expected %d", p, got, m->lazy[p]);
		if (got)
			MT_EQ(img, m->img[p]);
	}
	MT_EQ(ranges_segments(r), m_segments(m));
	assert_false(ranges_lookup(r, maddr(-1), NULL));
	assert_false(ranges_lookup(r, maddr(MP), NULL));
	for (k = 0; k < 6; k++) {
		int64_t h = (int64_t)rnd_below(MP + 20) - 10;
		uint64_t max = 1 + rnd_below(k & 1 ? 8 : 600), off = rnd_below(pg);

		mt_expect_run(ranges_next(r, maddr(h) + off, max, &g), &g, m_next(m, h, max, &w),
			      &w);
		p = rnd_below(MP);
		mt_expect_run(ranges_run(r, maddr(p) + off, max, &g), &g, m_run(m, p, max, &w), &w);
	}
}

/* One random change, applied to both. */
static void mt_op(struct ranges *r, struct model *m, bool allow_clone, struct ranges **clone)
{
	uint64_t k = rnd_below(100), len = rnd_len(), start = rnd_below(MP);
	struct rrun g, w;
	int64_t from, to;

	if (start + len > MP)
		len = MP - start;
	if (k < 25) {
		mt.op = "clear";
		MT_EQ(ranges_clear(r, maddr(start), len), m_clear(m, start, start + len));
	} else if (k < 40) {
		mt.op = "fault";
		mt_expect_run(ranges_run(r, maddr(start), len, &g), &g, m_run(m, start, len, &w),
			      &w);
		if (w.nr_pages && m->lazy[start])
			MT_EQ(ranges_clear(r, w.addr, w.nr_pages),
			      m_clear(m, start, start + w.nr_pages));
	} else if (k < 52) {
		int64_t h = (int64_t)rnd_below(MP + 2) - 1;

		mt.op = "prefetch";
		mt_expect_run(ranges_next(r, maddr(h), len, &g), &g, m_next(m, h, len, &w), &w);
		if (m_remaining(m))
			MT_EQ(ranges_clear(r, w.addr, w.nr_pages),
			      m_clear(m, (w.addr - MBASE) / pg,
				      (w.addr - MBASE) / pg + w.nr_pages));
	} else if (k < 66) {
		mt.op = "drop";
		MT_EQ(ranges_drop(r, maddr(start), maddr(start + len)),
		      m_drop(m, start, start + len));
	} else if (k < 84) {
		mt.op = "move";
		from = rnd_below(MP - len + 1);
		if (rnd_below(3) == 0) {
			/* overlapping source and destination */
			to = from + (int64_t)rnd_below(2 * len + 1) - (int64_t)len;
			to = to < 0 ? 0 : to > (int64_t)(MP - len) ? (int64_t)(MP - len) : to;
		} else {
			to = rnd_below(MP - len + 1);
		}
		MT_EQ(ranges_move(r, maddr(from), maddr(to), P(len)), 0);
		m_move(m, from, to, len);
	} else if (k < 95) {
		uint64_t img = MIMG + P(rnd_below(1 << 20));
		bool ok = true;
		uint64_t p;

		mt.op = "add";
		len = 1 + len % 64;
		if (start + len > MP)
			len = MP - start;
		for (p = start; p < start + len; p++)
			ok &= !m_alive(m, p);
		MT_EQ(ranges_add(r, maddr(start), maddr(start + len), img),
		      ok ? 0 : (uint64_t)-EINVAL);
		if (ok)
			m_add(m, start, start + len, img);
	} else if (allow_clone) {
		mt.op = "clone";
		*clone = ranges_clone(r);
		assert_non_null(*clone);
	} else {
		mt.op = "clear all of one page";
		MT_EQ(ranges_clear(r, maddr(start), 1), m_clear(m, start, start + 1));
	}
}

static void model_run(unsigned long long seed, int steps)
{
	struct model *m = calloc(2, sizeof(*m)), *mc = m + 1;
	struct ranges *r = ranges_new(), *c;
	int64_t p;

	assert_non_null(m);
	mt.seed = seed;
	mt.s = seed * 0x9E3779B97F4A7C15ULL + 1;
	mt.step = -1;
	mt.op = "setup";
	for (p = 0; p < MP; p++)
		m->id[p] = -1;
	for (p = rnd_below(30); p < MP;) {
		int64_t len = 1 + rnd_below(400);
		uint64_t img = MIMG + P(rnd_below(1 << 20));

		if (p + len > MP)
			len = MP - p;
		MT_EQ(ranges_add(r, maddr(p), maddr(p + len), img), 0);
		m_add(m, p, p + len, img);
		p += len + (rnd_below(3) ? (int64_t)rnd_below(40) : 0);
	}
	mt_check(r, m);
	for (mt.step = 0; mt.step < steps; mt.step++) {
		c = NULL;
		mt_op(r, m, true, &c);
		if (c) {
			/* fork: the child changes alone, the parent stays; go on with the child */
			*mc = *m;
			mt_check(c, mc);
			mt_op(c, mc, false, NULL);
			mt.op = "clone (parent after the child changed)";
			mt_check(r, m);
			ranges_free(r);
			r = c;
			*m = *mc;
			mt.op = "clone (child)";
		}
		mt_check(r, m);
		/* when everything is gone, start over on top */
		if (!m_remaining(m) && rnd_below(2)) {
			mt.op = "refill";
			MT_EQ(ranges_drop(r, maddr(0), maddr(MP)), 0);
			m_drop(m, 0, MP);
			MT_EQ(ranges_add(r, maddr(0), maddr(MP / 2), MIMG), 0);
			m_add(m, 0, MP / 2, MIMG);
			mt_check(r, m);
		}
	}
	ranges_free(r);
	free(m);
}

static void test_model(void **state)
{
	const char *env = getenv("RANGES_SEED");
	unsigned long long seed;

	(void)state;
	if (env) {
		model_run(strtoull(env, NULL, 0), 20000);
		return;
	}
	for (seed = 1; seed <= 4; seed++)
		model_run(seed, 2500);
}

/*
 * 1 GiB worth of pages in one segment, faulted at random (a lookup, then
 * a single-page clear), then drained by prefetch. Not timed: it only has
 * to finish quickly, which it cannot if a step is O(pages).
 */
static void test_big(void **state)
{
	const uint64_t n = 262144;
	struct ranges *r = ranges_new();
	uint64_t i, img, left, drained = 0, hint;
	struct rrun run;

	(void)state;
	mt.s = 12345;
	assert_int_equal(ranges_add(r, BASE, BASE + P(n), IMG), 0);
	for (i = 0; i < n; i++) {
		uint64_t p = rnd_below(n);
		bool lazy = ranges_lookup(r, BASE + P(p), &img);

		if (lazy)
			assert_int_equal(img, IMG + P(p));
		assert_int_equal(ranges_clear(r, BASE + P(p), 1), lazy);
	}
	left = ranges_remaining(r);
	assert_true(left > n / 4 && left < n / 2);
	/* half the time from the start (the worst hint), half from where the last run ended */
	for (i = 0, hint = BASE; ranges_next(r, hint, 64, &run); i++) {
		assert_true(ranges_lookup(r, run.addr, &img));
		assert_int_equal(img, run.img);
		assert_int_equal(ranges_clear(r, run.addr, run.nr_pages), run.nr_pages);
		drained += run.nr_pages;
		hint = i & 1 ? BASE : run.addr + P(run.nr_pages);
	}
	assert_int_equal(drained, left);
	assert_int_equal(ranges_remaining(r), 0);
	ranges_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_lookup_edges),
		cmocka_unit_test(test_run),
		cmocka_unit_test(test_next),
		cmocka_unit_test(test_clear),
		cmocka_unit_test(test_drop),
		cmocka_unit_test(test_move),
		cmocka_unit_test(test_clone),
		cmocka_unit_test(test_many_segments),
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_big),
	};

	pg = sysconf(_SC_PAGESIZE);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
