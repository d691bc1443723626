/* SPDX-License-Identifier: MIT */
/* test-pagemap: pagemap normalisation, offsets, lookups, reads, parent chains, on images made here. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "imgtest.h"

#define PID 9
#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t ps;

static int setup(void **state)
{
	char *dir = it_tmpdir();

	it_inventory(dir, 2, true, true);
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	it_rmrf(*state);
	free(*state);
	return 0;
}

static void assert_msg_has(const struct lp_err *e, const char *needle)
{
	if (!strstr(e->msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e->msg, needle);
}

static char *path_of(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static struct imgdir *dir_ok(const char *dir)
{
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;

	if (imgdir_open(dir, &d, &e))
		fail_msg("imgdir_open: %s", e.msg);
	return d;
}

static struct pagemap *pm_ok(struct imgdir *d, uint32_t pid)
{
	struct lp_err e = { 0 };
	struct pagemap *pm = NULL;

	if (pagemap_open(d, pid, &pm, &e))
		fail_msg("pagemap_open: %s", e.msg);
	return pm;
}

/* pagemap_open of one entry list in DIR fails with ERR and a message holding NEEDLE */
static void open_fails(const char *dir, const struct it_pme *pe, size_t n, uint64_t pages,
		       int err, const char *needle)
{
	char *p = path_of(dir, "pagemap-9.img");
	struct lp_err e = { 0 };
	struct pagemap *pm = NULL;
	struct imgdir *d;

	it_pagemap(dir, PID, 1, pe, n);
	it_pages(dir, 1, pages, 0);
	d = dir_ok(dir);
	assert_int_equal(pagemap_open(d, PID, &pm, &e), err);
	assert_null(pm);
	assert_msg_has(&e, p);
	assert_msg_has(&e, needle);
	imgdir_close(d);
	free(p);
}

static void run_is(struct pagemap *pm, uint64_t page, uint64_t max, enum pm_kind kind,
		   uint64_t nr, uint64_t off)
{
	struct lp_err e = { 0 };
	struct pm_run r;
	int ret;

	memset(&r, 0xa5, sizeof(r));
	ret = pagemap_lookup(pm, page * ps, max, &r, &e);
	if (ret)
		fail_msg("lookup(0x%llx) = %d: %s", (unsigned long long)page, ret, e.msg);
	if (r.kind != kind || r.nr_pages != nr || (kind == PM_DATA && r.off != off))
		fail_msg("lookup(page 0x%llx, %llu): kind %d nr %llu off %llu; want %d %llu %llu",
			 (unsigned long long)page, (unsigned long long)max, r.kind,
			 (unsigned long long)r.nr_pages, (unsigned long long)r.off, kind,
			 (unsigned long long)nr, (unsigned long long)off);
	if (kind == PM_DATA)
		assert_true(r.fd >= 0);
}

static void test_forms(void **state)
{
	const char *dir = *state;
	struct it_pme pe[] = {
		/* 3.x: count in field 2, flags set */
		{ .vaddr = 0x10 * ps, .compat_nr_pages = 3, .has_flags = true, .flags = PE_PRESENT },
		/* 4.2: field 2 is 0, count in field 5 */
		IT_PE(0x20 * ps, 2, PE_PRESENT | PE_LAZY),
		/* legacy in_parent, no flags */
		{ .vaddr = 0x30 * ps, .compat_nr_pages = 2, .has_in_parent = true, .in_parent = true },
		/* no flags field at all: PRESENT */
		{ .vaddr = 0x40 * ps, .compat_nr_pages = 1 },
		/* in_parent false and no flags: PRESENT */
		{ .vaddr = 0x41 * ps, .compat_nr_pages = 1, .has_in_parent = true },
		IT_PE(0x50 * ps, 4, PE_LAZY),
		IT_PE(0x60 * ps, 2, PE_PRESENT),
		/* field 5 wins over field 2 */
		{ .vaddr = 0x70 * ps, .compat_nr_pages = 9, .has_flags = true, .flags = PE_PRESENT,
		  .has_nr_pages = true, .nr_pages = 1 },
	};
	static const struct { uint64_t page, nr; uint32_t flags; uint64_t off; } want[] = {
		{ 0x10, 3, PE_PRESENT, 0 },
		{ 0x20, 2, PE_PRESENT | PE_LAZY, 3 },
		{ 0x30, 2, PE_PARENT, 0 },
		{ 0x40, 1, PE_PRESENT, 5 },
		{ 0x41, 1, PE_PRESENT, 6 },
		{ 0x50, 4, PE_LAZY, 0 },
		{ 0x60, 2, PE_PRESENT, 7 },
		{ 0x70, 1, PE_PRESENT, 9 },
	};
	const struct pm_entry *ents;
	struct imgdir *d;
	struct pagemap *pm;
	size_t n;

	it_pagemap(dir, PID, 1, pe, N(pe));
	it_pages(dir, 1, 10, 0);
	d = dir_ok(dir);
	pm = pm_ok(d, PID);
	ents = pagemap_entries(pm, &n);
	assert_int_equal(n, N(want));
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ents[i].vaddr, want[i].page * ps);
		assert_int_equal(ents[i].nr_pages, want[i].nr);
		assert_int_equal(ents[i].flags, want[i].flags);
		/* offsets advance only over PRESENT entries */
		if (ents[i].flags & PE_PRESENT)
			assert_int_equal(ents[i].off, want[i].off * ps);
	}
	assert_int_equal(pagemap_page_size(), (uint64_t)sysconf(_SC_PAGESIZE));
	pagemap_close(pm);
	pagemap_close(NULL);
	imgdir_close(d);
}

static void test_zero_count(void **state)
{
	const char *dir = *state;
	struct it_pme z42[] = { IT_PE(0x10 * ps, 0, PE_PRESENT) };
	/* a 4.2 entry stripped of field 5: what a 3.x reader sees */
	struct it_pme z3[] = { { .vaddr = 0x10 * ps, .has_flags = true, .flags = PE_PRESENT } };

	open_fails(dir, z42, 1, 1, -EINVAL, "has 0 pages");
	open_fails(dir, z3, 1, 1, -EINVAL, "pre-4.2 reader");
	open_fails(dir, z3, 1, 1, -EINVAL, "offset 14:");
}

static void test_bad_entries(void **state)
{
	const char *dir = *state;
	uint64_t top = UINT64_MAX & ~(ps - 1);
	struct it_pme unsorted[] = { IT_PE(0x20 * ps, 1, PE_PRESENT), IT_PE(0x10 * ps, 1, PE_PRESENT) };
	struct it_pme overlap[] = { IT_PE(0x10 * ps, 4, PE_PRESENT), IT_PE(0x13 * ps, 1, PE_LAZY) };
	struct it_pme unaligned[] = { IT_PE(0x10 * ps + 8, 1, PE_PRESENT) };
	struct it_pme overflow[] = { IT_PE(top, 2, PE_LAZY) };
	struct it_pme huge[] = { IT_PE(0, UINT64_MAX / 2, PE_LAZY) };
	struct it_pme parent_lazy[] = { IT_PE(0, 1, PE_PARENT | PE_LAZY) };
	struct it_pme noflags[] = { IT_PE(0, 1, 0) };
	struct it_pme unknown[] = { IT_PE(0, 1, PE_PRESENT | 8) };

	open_fails(dir, unsorted, 2, 2, -EINVAL, "unsorted or overlaps");
	open_fails(dir, overlap, 2, 4, -EINVAL, "unsorted or overlaps");
	open_fails(dir, unaligned, 1, 1, -EINVAL, "not page aligned");
	open_fails(dir, overflow, 1, 0, -EINVAL, "overflows");
	open_fails(dir, huge, 1, 0, -EINVAL, "overflows");
	open_fails(dir, parent_lazy, 1, 0, -EINVAL, "combine PARENT");
	open_fails(dir, noflags, 1, 0, -EINVAL, "flags 0");
	open_fails(dir, unknown, 1, 1, -EINVAL, "unknown flags");
}

static void test_beyond_pages(void **state)
{
	const char *dir = *state;
	char *pages = path_of(dir, "pages-1.img"), *pages7 = path_of(dir, "pages-7.img");
	struct it_pme pe[] = { IT_PE(0x10 * ps, 2, PE_PRESENT), IT_PE(0x20 * ps, 2, PE_LAZY),
			       IT_PE(0x30 * ps, 2, PE_PRESENT | PE_LAZY) };
	struct it_pme lazy[] = { IT_PE(0x20 * ps, 2, PE_LAZY) };
	struct lp_err e = { 0 };
	struct pagemap *pm = NULL;
	struct imgdir *d;

	open_fails(dir, pe, 3, 3, -EINVAL, "pagemap beyond the pages file");
	open_fails(dir, pe, 3, 3, -EINVAL, pages);
	open_fails(dir, pe, 3, 0, -EINVAL, "pagemap beyond the pages file");

	/* pages_id, not the pid, names the pages file */
	it_pagemap(dir, PID, 7, pe, 3);
	d = dir_ok(dir);
	assert_int_equal(pagemap_open(d, PID, &pm, &e), -ENOENT);
	assert_msg_has(&e, pages7);
	it_pages(dir, 7, 4, 0);
	pm = pm_ok(d, PID);
	pagemap_close(pm);

	/* a pagemap without PRESENT entries needs no pages file */
	it_pagemap(dir, PID, 8, lazy, 1);
	pm = pm_ok(d, PID);
	run_is(pm, 0x20, 4, PM_REMOTE, 2, 0);
	pagemap_close(pm);

	/* a missing pagemap names its path */
	assert_int_equal(pagemap_open(d, 77, &pm, &e), -ENOENT);
	assert_msg_has(&e, "pagemap-77.img");
	imgdir_close(d);
	free(pages);
	free(pages7);
}

static void test_lookup(void **state)
{
	const char *dir = *state;
	struct it_pme pe[] = {
		IT_PE(0x10 * ps, 2, PE_PRESENT),
		IT_PE(0x12 * ps, 3, PE_PRESENT | PE_LAZY),	/* touches: one run */
		IT_PE(0x20 * ps, 4, PE_LAZY),
		IT_PE(0x24 * ps, 2, PE_LAZY),			/* touches: one remote run */
		IT_PE(0x26 * ps, 2, PE_PRESENT),		/* kind changes */
	};
	struct lp_err e = { 0 };
	struct pagemap *pm;
	struct pm_run r;
	struct imgdir *d;
	uint8_t *buf = malloc(0x40 * ps);

	it_pagemap(dir, PID, 1, pe, N(pe));
	it_pages(dir, 1, 7, 0);
	d = dir_ok(dir);
	pm = pm_ok(d, PID);

	run_is(pm, 0, 100, PM_HOLE, 0x10, 0);
	run_is(pm, 0, 3, PM_HOLE, 3, 0);
	run_is(pm, 0x10, 100, PM_DATA, 5, 0);
	run_is(pm, 0x11, 100, PM_DATA, 4, ps);
	run_is(pm, 0x11, 2, PM_DATA, 2, ps);
	run_is(pm, 0x14, 1, PM_DATA, 1, 4 * ps);
	run_is(pm, 0x15, 100, PM_HOLE, 0xb, 0);
	run_is(pm, 0x1f, 100, PM_HOLE, 1, 0);
	run_is(pm, 0x20, 100, PM_REMOTE, 6, 0);
	run_is(pm, 0x23, 1, PM_REMOTE, 1, 0);
	run_is(pm, 0x25, 100, PM_REMOTE, 1, 0);
	run_is(pm, 0x26, 100, PM_DATA, 2, 5 * ps);
	run_is(pm, 0x28, 100, PM_HOLE, 100, 0);
	run_is(pm, 0x28, UINT64_MAX, PM_HOLE, (UINT64_MAX - 0x28 * ps) / ps + 1, 0);

	assert_int_equal(pagemap_lookup(pm, 0x10 * ps + 1, 1, &r, &e), -EINVAL);
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 0, &r, &e), -EINVAL);

	/* holes read as zeros, data as the pages file */
	memset(buf, 0xff, 0x40 * ps);
	assert_int_equal(pagemap_read(pm, 0xe * ps, 0x12, buf, &e), 0);
	for (uint64_t p = 0xe; p < 0x20; p++) {
		const uint8_t *pg = buf + (p - 0xe) * ps;

		if (p >= 0x10 && p < 0x15)
			assert_true(it_page_is(pg, 0, p - 0x10));
		else
			assert_true(it_page_is_zero(pg));
	}
	assert_int_equal(pagemap_read(pm, 0x26 * ps, 4, buf, &e), 0);
	assert_true(it_page_is(buf, 0, 5));
	assert_true(it_page_is(buf + ps, 0, 6));
	assert_true(it_page_is_zero(buf + 2 * ps));
	assert_true(it_page_is_zero(buf + 3 * ps));
	assert_int_equal(pagemap_read(pm, 0x26 * ps, 0, buf, &e), 0);

	/* LAZY-only pages are only with the page server */
	assert_int_equal(pagemap_read(pm, 0x1e * ps, 4, buf, &e), -EREMOTE);
	assert_msg_has(&e, "pagemap-9.img");
	assert_msg_has(&e, "LAZY");

	pagemap_close(pm);
	imgdir_close(d);
	free(buf);
}

static void test_short_pages_file(void **state)
{
	const char *dir = *state;
	char *pages = path_of(dir, "pages-1.img"), want[64];
	struct it_pme pe[] = { IT_PE(0x10 * ps, 3, PE_PRESENT) };
	struct lp_err e = { 0 };
	uint8_t *buf = malloc(3 * ps);
	struct pagemap *pm;
	struct imgdir *d;

	it_pagemap(dir, PID, 1, pe, 1);
	it_pages(dir, 1, 3, 0);
	d = dir_ok(dir);
	pm = pm_ok(d, PID);
	/* the file shrinks under us: a read past its end is -EIO, not zeros */
	assert_int_equal(truncate(pages, ps + 100), 0);
	assert_int_equal(pagemap_read(pm, 0x10 * ps, 3, buf, &e), -EIO);
	assert_msg_has(&e, pages);
	snprintf(want, sizeof(want), "offset %llu", (unsigned long long)(ps + 100));
	assert_msg_has(&e, want);
	assert_int_equal(pagemap_read(pm, 0x10 * ps, 1, buf, &e), 0);
	assert_true(it_page_is(buf, 0, 0));
	pagemap_close(pm);
	imgdir_close(d);
	free(pages);
	free(buf);
}

/*
 * top -> parent -> ../l1 -> parent -> ../l2; page k of [0x10, 0x20):
 * top has 0x10-0x11 and 0x1c-0x1d, l1 has 0x14-0x17, l2 has all.
 */
static void make_chain(const char *base, char **top_out)
{
	char *l2 = it_subdir(base, "l2"), *l1 = it_subdir(base, "l1"), *top = it_subdir(base, "top");
	struct it_pme p2[] = { IT_PE(0x10 * ps, 8, PE_PRESENT), IT_PE(0x18 * ps, 8, PE_PRESENT) };
	struct it_pme p1[] = { IT_PE(0x10 * ps, 4, PE_PARENT), IT_PE(0x14 * ps, 4, PE_PRESENT),
			       IT_PE(0x18 * ps, 8, PE_PARENT) };
	struct it_pme p0[] = {
		IT_PE(0x10 * ps, 2, PE_PRESENT | PE_LAZY),
		IT_PE(0x12 * ps, 6, PE_PARENT),
		IT_PE(0x18 * ps, 4, PE_PARENT),
		IT_PE(0x1c * ps, 2, PE_PRESENT),
		IT_PE(0x1e * ps, 2, PE_PARENT),
		IT_PE(0x20 * ps, 1, PE_PARENT),		/* nobody has it */
	};

	it_pagemap(l2, PID, 3, p2, N(p2));
	it_pages(l2, 3, 16, 2);
	it_pagemap(l1, PID, 2, p1, N(p1));
	it_pages(l1, 2, 4, 1);
	it_parent_link(l1, "../l2");
	it_inventory(top, 2, true, true);
	it_pagemap(top, PID, 1, p0, N(p0));
	it_pages(top, 1, 4, 0);
	it_parent_link(top, "../l1");
	free(l2);
	free(l1);
	*top_out = top;
}

static int chain_expect(uint64_t p, uint32_t *tag, uint64_t *k)
{
	if (p < 0x10 || p >= 0x20)
		return -1;
	if (p < 0x12 || (p >= 0x1c && p < 0x1e)) {
		*tag = 0;
		*k = p < 0x12 ? p - 0x10 : p - 0x1c + 2;
	} else if (p >= 0x14 && p < 0x18) {
		*tag = 1;
		*k = p - 0x14;
	} else {
		*tag = 2;
		*k = p - 0x10;
	}
	return 0;
}

static void test_parent_chain(void **state)
{
	const char *base = *state;
	uint8_t *buf = malloc(0x10 * ps);
	struct lp_err e = { 0 };
	struct pagemap *pm;
	struct imgdir *d;
	struct pm_run r;
	char *top;

	make_chain(base, &top);
	d = dir_ok(top);
	pm = pm_ok(d, PID);

	run_is(pm, 0x10, 100, PM_DATA, 2, 0);
	run_is(pm, 0x12, 100, PM_DATA, 2, 2 * ps);	/* l2, up to l1's entry end */
	run_is(pm, 0x13, 100, PM_DATA, 1, 3 * ps);
	run_is(pm, 0x14, 100, PM_DATA, 4, 0);		/* l1 */
	run_is(pm, 0x15, 2, PM_DATA, 2, ps);
	run_is(pm, 0x18, 100, PM_DATA, 4, 8 * ps);	/* l2 across its entry boundary, up to top's */
	run_is(pm, 0x1c, 100, PM_DATA, 2, 2 * ps);	/* top */
	run_is(pm, 0x1e, 100, PM_DATA, 2, 0xe * ps);

	/* runs from different levels come from different files */
	assert_int_equal(pagemap_lookup(pm, 0x13 * ps, 1, &r, &e), 0);
	{
		int fd2 = r.fd;

		assert_int_equal(pagemap_lookup(pm, 0x14 * ps, 1, &r, &e), 0);
		assert_int_not_equal(r.fd, fd2);
		assert_int_equal(pagemap_lookup(pm, 0x18 * ps, 1, &r, &e), 0);
		assert_int_equal(r.fd, fd2);
	}

	memset(buf, 0xff, 0x10 * ps);
	assert_int_equal(pagemap_read(pm, 0x10 * ps, 0x10, buf, &e), 0);
	for (uint64_t p = 0x10; p < 0x20; p++) {
		uint32_t tag = 0;
		uint64_t k = 0;

		assert_int_equal(chain_expect(p, &tag, &k), 0);
		if (!it_page_is(buf + (p - 0x10) * ps, tag, k))
			fail_msg("page 0x%llx: want tag %u page %llu", (unsigned long long)p, tag,
				 (unsigned long long)k);
	}

	/* PE_PARENT for a page no parent has: an error naming both levels */
	assert_int_equal(pagemap_lookup(pm, 0x20 * ps, 1, &r, &e), -ENOENT);
	assert_msg_has(&e, "top/pagemap-9.img");
	assert_msg_has(&e, "/l1/pagemap-9.img");
	assert_msg_has(&e, "0x");
	assert_int_equal(pagemap_read(pm, 0x1f * ps, 2, buf, &e), -ENOENT);

	pagemap_close(pm);
	imgdir_close(d);
	free(top);
	free(buf);
}

static void test_parent_missing(void **state)
{
	const char *dir = *state;
	struct it_pme pe[] = { IT_PE(0x10 * ps, 2, PE_PARENT) };
	struct lp_err e = { 0 };
	struct pagemap *pm;
	struct imgdir *d;
	struct pm_run r;
	char *par;

	it_pagemap(dir, PID, 1, pe, 1);
	it_pages(dir, 1, 0, 0);
	d = dir_ok(dir);
	pm = pm_ok(d, PID);
	/* no parent link at all */
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ENOENT);
	assert_msg_has(&e, "no parent link");
	pagemap_close(pm);
	imgdir_close(d);

	/* a parent dir without this pid's pagemap */
	par = it_subdir(dir, "p");
	it_parent_link(dir, "p");
	d = dir_ok(dir);
	pm = pm_ok(d, PID);
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ENOENT);
	assert_msg_has(&e, "/p/pagemap-9.img");
	memset(&e, 0, sizeof(e));
	assert_int_equal(pagemap_lookup(pm, 0x11 * ps, 1, &r, &e), -ENOENT);
	assert_msg_has(&e, "/p/pagemap-9.img");
	assert_int_equal(pagemap_lookup(pm, 0x11 * ps, 1, &r, NULL), -ENOENT);
	pagemap_close(pm);
	imgdir_close(d);
	free(par);
}

static void test_parent_loop(void **state)
{
	const char *base = *state;
	struct it_pme pe[] = { IT_PE(0x10 * ps, 2, PE_PARENT) };
	struct lp_err e = { 0 };
	struct pagemap *pm;
	struct imgdir *d;
	struct pm_run r;
	char *a = it_subdir(base, "a"), *b = it_subdir(base, "b"), *c = it_subdir(base, "c");

	/* a -> b -> a */
	it_inventory(a, 2, true, true);
	it_pagemap(a, PID, 1, pe, 1);
	it_pagemap(b, PID, 1, pe, 1);
	it_parent_link(a, "../b");
	it_parent_link(b, "../a");
	d = dir_ok(a);
	pm = pm_ok(d, PID);
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ELOOP);
	assert_msg_has(&e, "loops");
	/* the failure is remembered, not retried forever */
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ELOOP);
	pagemap_close(pm);
	imgdir_close(d);

	/* c -> c */
	it_inventory(c, 2, true, true);
	it_pagemap(c, PID, 1, pe, 1);
	it_parent_link(c, ".");
	d = dir_ok(c);
	pm = pm_ok(d, PID);
	assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ELOOP);
	pagemap_close(pm);
	imgdir_close(d);
	free(a);
	free(b);
	free(c);
}

static void test_parent_depth(void **state)
{
	const char *base = *state;
	struct it_pme pe[] = { IT_PE(0x10 * ps, 1, PE_PARENT) };
	struct it_pme data[] = { IT_PE(0x10 * ps, 1, PE_PRESENT) };
	struct lp_err e = { 0 };
	struct pagemap *pm;
	struct imgdir *d;
	struct pm_run r;
	char name[32], target[32], *dirs[IMG_MAX_PARENTS + 2];

	/* d0 -> d1 -> ... -> dN, only dN has the data */
	for (int depth = IMG_MAX_PARENTS; depth <= IMG_MAX_PARENTS + 1; depth++) {
		char sub[32];
		char *root;

		snprintf(sub, sizeof(sub), "chain%d", depth);
		root = it_subdir(base, sub);
		for (int i = 0; i <= depth; i++) {
			snprintf(name, sizeof(name), "d%d", i);
			dirs[i] = it_subdir(root, name);
			if (i < depth) {
				it_pagemap(dirs[i], PID, 1, pe, 1);
				snprintf(target, sizeof(target), "../d%d", i + 1);
				it_parent_link(dirs[i], target);
			} else {
				it_pagemap(dirs[i], PID, 1, data, 1);
				it_pages(dirs[i], 1, 1, 5);
			}
		}
		it_inventory(dirs[0], 2, true, true);
		d = dir_ok(dirs[0]);
		pm = pm_ok(d, PID);
		if (depth == IMG_MAX_PARENTS) {
			run_is(pm, 0x10, 1, PM_DATA, 1, 0);
		} else {
			assert_int_equal(pagemap_lookup(pm, 0x10 * ps, 1, &r, &e), -ELOOP);
			assert_msg_has(&e, "deeper than");
		}
		pagemap_close(pm);
		imgdir_close(d);
		for (int i = 0; i <= depth; i++)
			free(dirs[i]);
		free(root);
	}
}

/* ---- concurrency: random layout over three levels, checked against a model ---- */

#define CN 700		/* pages in the model */
#define CBASE 0x1000	/* first page */

enum { M_HOLE, M_DATA, M_REMOTE, M_PARENT };

struct model {
	uint8_t kind[3][CN];	/* per level */
	uint64_t k[3][CN];	/* page index in that level's pages file */
	uint32_t eid[3][CN];	/* entry number, for the boundaries between entries */
};

struct cstate {
	const struct model *m;
	struct pagemap *pm;
	uint64_t seed;
	int bad;
	char why[1024];
};

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = (*s += 0x9E3779B97F4A7C15ull);

	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* Level and index that hold page p, or M_HOLE / M_REMOTE at the top. */
static int model_at(const struct model *m, uint64_t p, int *lvl, uint64_t *k)
{
	*lvl = 0;
	*k = 0;
	for (int l = 0; l < 3; l++) {
		int kind = m->kind[l][p];

		if (kind == M_PARENT)
			continue;
		*lvl = l;
		*k = m->k[l][p];
		return kind;
	}
	return -1;
}

static void write_level(const char *dir, const struct model *m, int l, uint32_t pages_id)
{
	struct it_pme *pe = calloc(CN, sizeof(*pe));
	size_t n = 0;
	uint64_t data = 0;
	static const uint32_t fl[] = { 0, PE_PRESENT | PE_LAZY, PE_LAZY, PE_PARENT };

	for (uint64_t p = 0; p < CN; p++) {
		if (m->kind[l][p] == M_HOLE)
			continue;
		if (n && m->eid[l][p] == m->eid[l][p - 1] && m->kind[l][p - 1] == m->kind[l][p]) {
			pe[n - 1].nr_pages++;
		} else {
			pe[n++] = IT_PE((CBASE + p) * ps, 1, fl[m->kind[l][p]]);
		}
		if (m->kind[l][p] == M_DATA)
			data++;
	}
	it_pagemap(dir, PID, pages_id, pe, n);
	it_pages(dir, pages_id, data, (uint32_t)l);
	free(pe);
}

static void build_model(struct model *m, uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	for (int l = 0; l < 3; l++) {
		uint64_t p = 0, data = 0;
		uint32_t eid = 0;

		while (p < CN) {
			uint64_t len = 1 + rnd(&seed) % 9;
			int kind;

			if (l == 0)
				kind = (int)(rnd(&seed) % 4);
			else if (l == 1)
				kind = rnd(&seed) % 2 ? M_DATA : M_PARENT;
			else
				kind = M_DATA;
			eid++;
			for (uint64_t i = 0; i < len && p < CN; i++, p++) {
				m->kind[l][p] = (uint8_t)kind;
				m->eid[l][p] = eid;
				if (kind == M_DATA)
					m->k[l][p] = data++;
			}
		}
	}
}

/* the longest run from p as the model sees it */
static void model_run(const struct model *m, uint64_t p, uint64_t max, int *kind, uint64_t *nr,
		      int *lvl, uint64_t *k)
{
	int l0, l1;
	uint64_t k0, k1, q;

	*kind = model_at(m, p, &l0, &k0);
	*lvl = l0;
	*k = k0;
	for (q = p + 1; q < p + max && q < CN; q++) {
		if (model_at(m, q, &l1, &k1) != *kind)
			break;
		if (*kind == M_DATA && (l1 != l0 || k1 != k0 + (q - p)))
			break;
	}
	if (q == CN && *kind == M_HOLE)
		q = p + max;	/* past the last entry: hole to the limit */
	*nr = q - p;
}

static void *cthread(void *arg)
{
	struct cstate *c = arg;
	uint8_t *buf = malloc(16 * ps);
	static const enum pm_kind want_kind[] = { PM_HOLE, PM_DATA, PM_REMOTE };

	for (int i = 0; i < 3000 && !c->bad; i++) {
		uint64_t p = rnd(&c->seed) % CN, max = 1 + rnd(&c->seed) % 20, nr, k;
		struct lp_err e = { 0 };
		struct pm_run r;
		int kind, lvl, ret;

		model_run(c->m, p, max, &kind, &nr, &lvl, &k);
		ret = pagemap_lookup(c->pm, (CBASE + p) * ps, max, &r, &e);
		if (ret || r.kind != want_kind[kind] || r.nr_pages != nr ||
		    (kind == M_DATA && r.off != k * ps)) {
			c->bad = 1;
			snprintf(c->why, sizeof(c->why),
				 "lookup page %llu max %llu: ret %d kind %d nr %llu off %llu; want %d %llu %llu (%s)",
				 (unsigned long long)p, (unsigned long long)max, ret, r.kind,
				 (unsigned long long)r.nr_pages, (unsigned long long)r.off, kind,
				 (unsigned long long)nr, (unsigned long long)(k * ps), e.msg);
			break;
		}
		if (kind == M_DATA) {
			if (pread(r.fd, buf, ps, r.off) != (ssize_t)ps || !it_page_is(buf, lvl, k)) {
				c->bad = 1;
				snprintf(c->why, sizeof(c->why), "page %llu: wrong bytes at fd offset",
					 (unsigned long long)p);
				break;
			}
		}

		/* and a read of up to 16 pages */
		max = 1 + rnd(&c->seed) % 16;
		if (p + max > CN)
			max = CN - p;
		ret = pagemap_read(c->pm, (CBASE + p) * ps, max, buf, &e);
		{
			bool remote = false, ok = true;

			for (uint64_t q = p; q < p + max; q++) {
				int kq = model_at(c->m, q, &lvl, &k);

				if (kq == M_REMOTE)
					remote = true;
				else if (!remote && kq == M_HOLE)
					ok = ok && it_page_is_zero(buf + (q - p) * ps);
				else if (!remote)
					ok = ok && it_page_is(buf + (q - p) * ps, lvl, k);
			}
			if (remote ? ret != -EREMOTE : (ret != 0 || !ok)) {
				c->bad = 1;
				snprintf(c->why, sizeof(c->why), "read page %llu n %llu: ret %d (%s)",
					 (unsigned long long)p, (unsigned long long)max, ret, e.msg);
			}
		}
	}
	free(buf);
	return NULL;
}

static void test_concurrent(void **state)
{
	const char *base = *state;
	struct model *m = malloc(sizeof(*m));
	char *l2 = it_subdir(base, "l2"), *l1 = it_subdir(base, "l1"), *top = it_subdir(base, "top");
	struct cstate cs[8];
	pthread_t th[8];
	struct pagemap *pm;
	struct imgdir *d;

	for (uint64_t round = 0; round < 3; round++) {
		build_model(m, 0x1234 + round);
		write_level(l2, m, 2, 3);
		write_level(l1, m, 1, 2);
		write_level(top, m, 0, 1);
		if (round == 0) {
			it_parent_link(l1, "../l2");
			it_parent_link(top, "../l1");
			it_inventory(top, 2, true, true);
		}
		/* a fresh pagemap each round, so the threads race to load the parents */
		d = dir_ok(top);
		pm = pm_ok(d, PID);
		for (int i = 0; i < 8; i++) {
			cs[i] = (struct cstate){ .m = m, .pm = pm, .seed = round * 100 + (uint64_t)i };
			assert_int_equal(pthread_create(&th[i], NULL, cthread, &cs[i]), 0);
		}
		for (int i = 0; i < 8; i++)
			pthread_join(th[i], NULL);
		for (int i = 0; i < 8; i++)
			if (cs[i].bad)
				fail_msg("thread %d: %s", i, cs[i].why);
		pagemap_close(pm);
		imgdir_close(d);
	}
	free(l2);
	free(l1);
	free(top);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_forms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_entries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_beyond_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_pages_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parent_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parent_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parent_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parent_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
	};

	ps = (uint64_t)sysconf(_SC_PAGESIZE);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
