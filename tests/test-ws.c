/* SPDX-License-Identifier: MIT */
/* Unit tests of wsfile (the working-set file: every truncation and flipped byte, merge order) and ws (record, plan, replay order). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "images.h"
#include "ranges.h"
#include "stats.h"
#include "ws.h"
#include "wsfile.h"

#define PG 4096ull
#define A(n) (0x10000000ull + (uint64_t)(n) * PG)

/* A set of one process PID with the pages at page numbers NUM[0..N) in that order, touched at T[i]. */
static struct ws_set *mkset(uint32_t pid, uint64_t layout, const unsigned *num, const uint32_t *t, size_t n)
{
	struct ws_set *s = ws_set_new(PG, 1);
	size_t i;

	assert_non_null(s);
	s->procs[0].pid = pid;
	s->procs[0].layout = layout;
	s->procs[0].n = n;
	s->procs[0].pages = calloc(n ? n : 1, sizeof(struct ws_page));
	assert_non_null(s->procs[0].pages);
	for (i = 0; i < n; i++) {
		s->procs[0].pages[i].vaddr = A(num[i]);
		s->procs[0].pages[i].t_us = t ? t[i] : (uint32_t)i;
		s->procs[0].pages[i].seen = 1;
	}
	return s;
}

static void test_roundtrip(void **state)
{
	static const unsigned num[] = { 5, 3, 9, 4 };
	struct ws_set *s = mkset(42, 0x1234, num, NULL, 4), *r;
	struct lp_err e;
	size_t len;
	void *buf;

	(void)state;
	assert_int_equal(ws_encode(s, &buf, &len), 0);
	assert_int_equal(len, WS_HEADER_SIZE + WS_PROC_SIZE + 4 * WS_PAGE_SIZE + 4);
	assert_int_equal(ws_parse(buf, len, "f.ws", &r, &e), 0);
	assert_int_equal(r->nprocs, 1);
	assert_int_equal(r->procs[0].pid, 42);
	assert_int_equal(r->procs[0].layout, 0x1234);
	assert_int_equal(r->procs[0].n, 4);
	assert_int_equal(r->procs[0].pages[2].vaddr, A(9));
	assert_int_equal(r->procs[0].pages[3].t_us, 3);
	ws_set_free(r);
	ws_set_free(s);
	free(buf);
}

/* Cut at every length and flip every byte: each is an error naming the file, none parses. */
static void test_damage(void **state)
{
	static const unsigned num[] = { 1, 2, 3 };
	struct ws_set *s = mkset(7, 1, num, NULL, 3), *r;
	struct lp_err e;
	uint8_t *buf;
	size_t len, i;
	int bit;

	(void)state;
	assert_int_equal(ws_encode(s, (void **)&buf, &len), 0);
	for (i = 0; i < len; i++) {
		assert_true(ws_parse(buf, i, "cut.ws", &r, &e) < 0);
		assert_non_null(strstr(e.msg, "cut.ws"));
	}
	for (i = 0; i < len; i++)
		for (bit = 0; bit < 8; bit++) {
			buf[i] ^= (uint8_t)(1u << bit);
			assert_true(ws_parse(buf, len, "flip.ws", &r, &e) < 0);
			assert_non_null(strstr(e.msg, "flip.ws"));
			buf[i] ^= (uint8_t)(1u << bit);
		}
	assert_int_equal(ws_parse(buf, len, "good.ws", &r, &e), 0);
	ws_set_free(r);
	ws_set_free(s);
	free(buf);
}

/* Fields that pass the checksum but not the checks: re-summed after each change. */
static void resum(uint8_t *buf, size_t len)
{
	uint32_t c = ws_crc32c(0, buf, len - 4);

	memcpy(buf + len - 4, &c, 4);
}

static void test_fields(void **state)
{
	static const unsigned num[] = { 1, 2 };
	struct ws_set *s = mkset(7, 1, num, NULL, 2), *r;
	struct lp_err e;
	uint8_t *buf, *b2;
	size_t len;
	uint32_t v;
	uint64_t big = WS_MAX_PAGES + 1;

	(void)state;
	assert_int_equal(ws_encode(s, (void **)&buf, &len), 0);
	b2 = malloc(len);
	/* version 2 */
	memcpy(b2, buf, len);
	v = 2;
	memcpy(b2 + 4, &v, 4);
	resum(b2, len);
	assert_int_equal(ws_parse(b2, len, "v.ws", &r, &e), -EPROTONOSUPPORT);
	/* a page count past the file */
	memcpy(b2, buf, len);
	memcpy(b2 + WS_HEADER_SIZE + 8, &big, 8);
	resum(b2, len);
	assert_true(ws_parse(b2, len, "n.ws", &r, &e) < 0);
	assert_non_null(strstr(e.msg, "offset"));
	/* an address not page aligned */
	memcpy(b2, buf, len);
	b2[WS_HEADER_SIZE + WS_PROC_SIZE] = 1;
	resum(b2, len);
	assert_true(ws_parse(b2, len, "a.ws", &r, &e) < 0);
	assert_non_null(strstr(e.msg, "not page aligned"));
	/* seen by no recording */
	memcpy(b2, buf, len);
	memset(b2 + WS_HEADER_SIZE + WS_PROC_SIZE + 12, 0, 4);
	resum(b2, len);
	assert_true(ws_parse(b2, len, "s.ws", &r, &e) < 0);
	/* the header's total disagrees */
	memcpy(b2, buf, len);
	b2[24] = 3;
	resum(b2, len);
	assert_true(ws_parse(b2, len, "t.ws", &r, &e) < 0);
	free(b2);
	free(buf);
	ws_set_free(s);
}

static void test_load_errors(void **state)
{
	char dir[] = "/tmp/test-ws.XXXXXX", path[128];
	struct ws_set *r;
	struct lp_err e;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/none.ws", dir);
	assert_int_equal(ws_load(path, &r, &e), -ENOENT);
	snprintf(path, sizeof(path), "%s/garbage.ws", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("this is not a working set, but it is long enough to have a header\n", f);
	fclose(f);
	assert_int_equal(ws_load(path, &r, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "magic"));
	unlink(path);
	rmdir(dir);
}

/* Three recordings: the order is the median's; one unlucky run does not move a page. */
static void test_merge(void **state)
{
	/* pages 1..4; recording b is the unlucky one for page 1 */
	static const unsigned na[] = { 1, 2, 3 }, nb[] = { 2, 3, 1, 4 }, nc[] = { 1, 3, 2 };
	static const uint32_t ta[] = { 10, 20, 30 }, tb[] = { 21, 31, 900, 950 }, tc[] = { 12, 25, 28 };
	struct ws_set *in[3], *out, *bad;
	const char *names[] = { "a.ws", "b.ws", "c.ws" };
	struct lp_err e;

	(void)state;
	in[0] = mkset(9, 5, na, ta, 3);
	in[1] = mkset(9, 5, nb, tb, 4);
	in[2] = mkset(9, 5, nc, tc, 3);
	assert_int_equal(ws_merge(in, names, 3, &out, &e), 0);
	assert_int_equal(out->recordings, 3);
	assert_int_equal(out->procs[0].n, 4);
	/* medians: page 1: 12, page 2: 21, page 3: 28 (25, 30, 31 -> 30? sorted 25,30,31: 30), page 4: absent twice */
	assert_int_equal(out->procs[0].pages[0].vaddr, A(1));
	assert_int_equal(out->procs[0].pages[0].t_us, 12);
	assert_int_equal(out->procs[0].pages[1].vaddr, A(2));
	assert_int_equal(out->procs[0].pages[2].vaddr, A(3));
	assert_int_equal(out->procs[0].pages[2].t_us, 30);
	assert_int_equal(out->procs[0].pages[3].vaddr, A(4));
	assert_int_equal(out->procs[0].pages[3].seen, 1);
	assert_int_equal(out->procs[0].pages[0].seen, 3);
	ws_set_free(out);
	/* another layout for the same pid: another image set */
	bad = mkset(9, 6, na, ta, 3);
	ws_set_free(in[2]);
	in[2] = bad;
	assert_int_equal(ws_merge(in, names, 3, &out, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "c.ws"));
	for (int i = 0; i < 3; i++)
		ws_set_free(in[i]);
}

/* Record through the fault-path call, write, read back: first touches only, in order. */
static void test_record(void **state)
{
	char dir[] = "/tmp/test-ws.XXXXXX", path[128];
	uint32_t pids[] = { 100, 200 };
	struct ws *w = ws_new(pids, 2, PG);
	struct ws_set *r;
	struct lp_err e;
	uint64_t n, t0 = 1000000000ull;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/rec.ws", dir);
	ws_record(w, path, 0);
	ws_track_layout(ws_track(w, 0), 77);
	ws_track_live(ws_track(w, 0));
	ws_start(w, t0);
	ws_touch(ws_track(w, 0), A(10), 2, t0 + 5000);	/* pages 10, 11 at 5 us */
	ws_touch(ws_track(w, 0), A(3), 1, t0 + 9000);
	ws_touch(ws_track(w, 0), A(11), 1, t0 + 12000);	/* touched again: not a first touch */
	ws_touch(ws_track(w, 1), A(1), 1, t0 + 1000);	/* not live: not written */
	ws_touch(NULL, A(1), 1, t0);
	assert_int_equal(ws_write(w, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_int_equal(ws_write(w, &n, &e), 0);	/* once */
	assert_int_equal(n, 0);
	assert_int_equal(ws_load(path, &r, &e), 0);
	assert_int_equal(r->nprocs, 1);
	assert_int_equal(r->procs[0].pid, 100);
	assert_int_equal(r->procs[0].layout, 77);
	assert_int_equal(r->procs[0].n, 3);
	assert_int_equal(r->procs[0].pages[0].vaddr, A(10));
	assert_int_equal(r->procs[0].pages[0].t_us, 5);
	assert_int_equal(r->procs[0].pages[1].vaddr, A(11));
	assert_int_equal(r->procs[0].pages[2].vaddr, A(3));
	assert_int_equal(r->procs[0].pages[2].t_us, 9);
	ws_set_free(r);
	ws_free(w);
	unlink(path);
	rmdir(dir);
}

/* The replay of pid 300, whose lazy pages are A(0) up to A(64) (*R). */
static struct ws *plan_fixture(struct ranges **r)
{
	uint32_t pid = 300;

	*r = ranges_new();
	assert_non_null(*r);
	assert_int_equal(ranges_add(*r, A(0), A(64), A(0)), 0);
	return ws_new(&pid, 1, PG);
}

/* The plan: pages checked against the lazy ranges, groups sorted and merged, handed out in order. */
static void test_plan(void **state)
{
	/* group 1 (pages 20, 5, 6, 21 -> runs 5-6, 20-21: 14 pages apart, more than WS_GAP_PAGES), page 99 is not lazy */
	static const unsigned num[] = { 20, 5, 99, 6, 21 };
	struct ranges *r;
	struct ws *w = plan_fixture(&r);
	struct lp_err e;
	uint64_t a, n;

	(void)state;
	assert_int_equal(ws_replay(w, mkset(300, 1, num, NULL, 5), "p.ws", &e), 0);
	ws_track_layout(ws_track(w, 0), 1);
	assert_int_equal(ws_plan(ws_track(w, 0), r, &e), 1);
	assert_non_null(strstr(e.msg, "1 of 5 recorded pages are no longer in the images"));
	assert_true(ws_pending(ws_track(w, 0)));
	assert_true(ws_next(ws_track(w, 0), 16, &a, &n));
	assert_int_equal(a, A(5));
	assert_int_equal(n, 2);
	assert_true(ws_next(ws_track(w, 0), 1, &a, &n));	/* split at max */
	assert_int_equal(a, A(20));
	assert_int_equal(n, 1);
	assert_true(ws_next(ws_track(w, 0), 16, &a, &n));
	assert_int_equal(a, A(21));
	assert_false(ws_next(ws_track(w, 0), 16, &a, &n));
	assert_false(ws_pending(ws_track(w, 0)));
	/* what a read could not take is handed out again first */
	ws_unnext(ws_track(w, 0), A(21), 1);
	assert_true(ws_pending(ws_track(w, 0)));
	assert_true(ws_next(ws_track(w, 0), 16, &a, &n));
	assert_int_equal(a, A(21));
	assert_int_equal(n, 1);
	assert_false(ws_next(ws_track(w, 0), 16, &a, &n));
	ws_free(w);
	ranges_free(r);
}

/* More than half the pages not lazy: other images, nothing replayed; a pid not in pstree.img: refused. */
static void test_plan_other_images(void **state)
{
	static const unsigned num[] = { 100, 101, 102, 1 };
	struct ranges *r;
	struct ws *w = plan_fixture(&r);
	struct lp_err e;
	uint64_t a, n;

	(void)state;
	assert_int_equal(ws_replay(w, mkset(301, 1, num, NULL, 4), "pid.ws", &e), -ESTALE);
	assert_non_null(strstr(e.msg, "pid.ws: recorded for other images: pid 301 is not in pstree.img"));
	assert_int_equal(ws_replay(w, mkset(300, 1, num, NULL, 4), "o.ws", &e), 0);
	ws_track_layout(ws_track(w, 0), 2);
	assert_int_equal(ws_plan(ws_track(w, 0), r, &e), -ESTALE);
	assert_non_null(strstr(e.msg, "o.ws: recorded for other images: 3 of the 4 pages"));
	assert_non_null(strstr(e.msg, "layout differs"));
	ws_start(w, 1);
	assert_false(ws_pending(ws_track(w, 0)));
	assert_false(ws_next(ws_track(w, 0), 16, &a, &n));
	ws_free(w);
	/* far more pages than the process has lazy ones: refused before anything is allocated for them */
	{
		uint32_t pid = 300;
		unsigned many[200];

		for (unsigned i = 0; i < 200; i++)
			many[i] = i;
		w = ws_new(&pid, 1, PG);
		assert_int_equal(ws_replay(w, mkset(300, 1, many, NULL, 200), "big.ws", &e), 0);
		assert_int_equal(ws_plan(ws_track(w, 0), r, &e), -ESTALE);
		assert_non_null(strstr(e.msg, "big.ws: recorded for other images: it lists 200 pages for pid 300, which has 64"));
		ws_free(w);
	}
	ranges_free(r);
}

static void test_layout(void **state)
{
	struct pm_entry pe[2] = { { .vaddr = A(0), .nr_pages = 4, .flags = PE_LAZY | PE_PRESENT },
				  { .vaddr = A(8), .nr_pages = 1, .flags = PE_PRESENT } };
	uint64_t h = ws_layout(pe, 2);

	(void)state;
	pe[1].nr_pages = 2;
	assert_int_not_equal(ws_layout(pe, 2), h);
	pe[1].nr_pages = 1;
	assert_int_equal(ws_layout(pe, 2), h);
	pe[0].flags = PE_PRESENT;
	assert_int_not_equal(ws_layout(pe, 2), h);
	/* the CRC-32C check value */
	assert_int_equal(ws_crc32c(0, "123456789", 9), 0xe3069283);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_damage),
		cmocka_unit_test(test_fields),        cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_merge),         cmocka_unit_test(test_record),
		cmocka_unit_test(test_plan),          cmocka_unit_test(test_plan_other_images),
		cmocka_unit_test(test_layout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
