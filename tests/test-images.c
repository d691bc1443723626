/* SPDX-License-Identifier: MIT */
/* test-images: the image dir reader (inventory, framing, pstree, core, mm) on images made here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "imgtest.h"
#include "pstree.pb-c.h"

#define MAP_P 0x02u
#define MAP_A 0x20u

static int setup(void **state)
{
	*state = it_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	it_rmrf(*state);
	free(*state);
	return 0;
}

static char *path_of(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static void assert_msg_has(const struct lp_err *e, const char *needle)
{
	if (!strstr(e->msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", e->msg, needle);
}

static struct imgdir *open_ok(const char *dir)
{
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;
	int ret = imgdir_open(dir, &d, &e);

	if (ret)
		fail_msg("imgdir_open(%s) = %d: %s", dir, ret, e.msg);
	return d;
}

static void test_inventory_v2(void **state)
{
	const char *dir = *state;
	struct imgdir *d;

	it_inventory(dir, 2, true, true);
	d = open_ok(dir);
	assert_int_equal(imgdir_version(d), 2);
	assert_string_equal(imgdir_path(d), dir);
	imgdir_close(d);
}

static void test_inventory_v1(void **state)
{
	const char *dir = *state;
	uint32_t t[] = { 7 };
	struct pstree_ent in = { .pid = 7, .ppid = 0, .pgid = 7, .sid = 7, .nr_threads = 1,
				 .threads = t };
	struct pstree_ent *ps;
	struct lp_err e = { 0 };
	struct imgdir *d;
	size_t n;

	it_inventory(dir, 1, true, true);
	/* version 1 files carry the type magic alone */
	it_pstree(dir, 1, &in, 1);
	d = open_ok(dir);
	assert_int_equal(imgdir_version(d), 1);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ps[0].pid, 7);
	pstree_free(ps, n);

	/* and a version 2 file in a version 1 set has a wrong magic */
	it_pstree(dir, 2, &in, 1);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	assert_msg_has(&e, "pstree.img");
	imgdir_close(d);
}

static void test_inventory_bad_version(void **state)
{
	const char *dir = *state;
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;

	it_inventory(dir, 3, true, true);
	assert_int_equal(imgdir_open(dir, &d, &e), -EINVAL);
	assert_null(d);
	assert_msg_has(&e, "inventory.img");
	assert_msg_has(&e, "img_version 3");

	it_inventory(dir, 0, true, true);
	assert_int_equal(imgdir_open(dir, &d, &e), -EINVAL);
}

static void test_inventory_fdinfo(void **state)
{
	const char *dir = *state;
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;

	it_inventory(dir, 2, true, false);
	assert_int_equal(imgdir_open(dir, &d, &e), -EINVAL);
	assert_msg_has(&e, "fdinfo_per_id");
	it_inventory(dir, 2, false, false);
	assert_int_equal(imgdir_open(dir, &d, &e), -EINVAL);
	assert_msg_has(&e, "fdinfo_per_id");
	assert_null(d);
}

static void test_missing_inventory(void **state)
{
	const char *dir = *state;
	char *p = path_of(dir, "inventory.img");
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;

	assert_int_equal(imgdir_open(dir, &d, &e), -ENOENT);
	assert_msg_has(&e, p);
	free(p);
	p = path_of(dir, "nonexistent");
	assert_int_equal(imgdir_open(p, &d, &e), -ENOENT);
	assert_msg_has(&e, p);
	free(p);
}

static void test_missing_image(void **state)
{
	const char *dir = *state;
	char *pp = path_of(dir, "pstree.img"), *pm = path_of(dir, "mm-5.img");
	char *pc = path_of(dir, "core-5.img");
	struct lp_err e = { 0 };
	struct pstree_ent *ps;
	struct vma *v;
	uint32_t st;
	size_t n;
	struct imgdir *d;

	it_inventory(dir, 2, true, true);
	d = open_ok(dir);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -ENOENT);
	assert_msg_has(&e, pp);
	assert_int_equal(imgdir_read_vmas(d, 5, &v, &n, &e), -ENOENT);
	assert_msg_has(&e, pm);
	assert_int_equal(imgdir_task_state(d, 5, &st, &e), -ENOENT);
	assert_msg_has(&e, pc);
	imgdir_close(d);
	free(pp);
	free(pm);
	free(pc);
}

static void test_relative_path(void **state)
{
	const char *dir = *state;
	char *base = strdup(dir), *slash = strrchr(base, '/'), cwd[4096];
	struct imgdir *d;

	it_inventory(dir, 2, true, true);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	*slash = '\0';
	assert_int_equal(chdir(base), 0);
	d = open_ok(slash + 1);
	/* messages must name full paths even for a relative dir */
	assert_string_equal(imgdir_path(d), dir);
	imgdir_close(d);
	assert_int_equal(chdir(cwd), 0);
	free(base);
}

static void test_wrong_magic(void **state)
{
	const char *dir = *state;
	char *p = path_of(dir, "pstree.img");
	struct lp_err e = { 0 };
	struct imgbuf b = { 0 };
	struct pstree_ent *ps;
	struct imgdir *d;
	size_t n;

	it_inventory(dir, 2, true, true);
	d = open_ok(dir);

	ib_head(&b, 2, MM_MAGIC);
	ib_write(&b, dir, "pstree.img");
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	assert_msg_has(&e, p);
	assert_msg_has(&e, "offset 4");
	assert_msg_has(&e, "expected 0x50273030");
	assert_msg_has(&e, "found 0x57492820");

	ib_u32(&b, IMG_SERVICE_MAGIC);
	ib_u32(&b, PSTREE_MAGIC);
	ib_write(&b, dir, "pstree.img");
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	assert_msg_has(&e, p);
	assert_msg_has(&e, "expected 0x54564319");
	assert_msg_has(&e, "found 0x55105940");

	/* a file shorter than its head */
	ib_u32(&b, IMG_COMMON_MAGIC);
	ib_raw(&b, "\x30\x30", 2);
	ib_write(&b, dir, "pstree.img");
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	assert_msg_has(&e, p);
	assert_msg_has(&e, "truncated head");

	/* inventory.img: INVENTORY_MAGIC alone */
	ib_u32(&b, IMG_COMMON_MAGIC);
	ib_u32(&b, INVENTORY_MAGIC);
	ib_write(&b, dir, "inventory.img");
	imgdir_close(d);
	d = NULL;
	assert_int_equal(imgdir_open(dir, &d, &e), -EINVAL);
	assert_msg_has(&e, "inventory.img");
	assert_msg_has(&e, "expected 0x58313116");
	free(p);
}

/* a pstree with one good entry at offset 8, then B's bytes */
static void pstree_then(const char *dir, struct imgbuf *b, uint64_t *second_off)
{
	PstreeEntry pe = PSTREE_ENTRY__INIT;
	uint32_t t = 1;
	struct imgbuf head = { 0 };

	pe.pid = 1;
	pe.pgid = 1;
	pe.sid = 1;
	pe.n_threads = 1;
	pe.threads = &t;
	ib_head(&head, 2, PSTREE_MAGIC);
	ib_msg(&head, &pe.base);
	*second_off = head.len;
	ib_raw(&head, b->p, b->len);
	free(b->p);
	memset(b, 0, sizeof(*b));
	ib_write(&head, dir, "pstree.img");
}

static void test_truncated_entry(void **state)
{
	const char *dir = *state;
	char *p = path_of(dir, "pstree.img"), want[64];
	struct lp_err e = { 0 };
	struct imgbuf b = { 0 };
	struct pstree_ent *ps = NULL;
	struct imgdir *d;
	uint64_t off;
	size_t n;

	it_inventory(dir, 2, true, true);
	d = open_ok(dir);

	/* length says 17, only 3 bytes follow */
	ib_u32(&b, 17);
	ib_raw(&b, "\x08\x02\x10", 3);
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	assert_null(ps);
	snprintf(want, sizeof(want), "offset %llu: truncated entry", (unsigned long long)off);
	assert_msg_has(&e, p);
	assert_msg_has(&e, want);
	assert_msg_has(&e, "need 17 bytes, have 3");

	/* EOF inside the length word */
	ib_raw(&b, "\x05\x00", 2);
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	snprintf(want, sizeof(want), "offset %llu: truncated entry length", (unsigned long long)off);
	assert_msg_has(&e, want);

	/* garbage protobuf */
	ib_u32(&b, 2);
	ib_raw(&b, "\xff\xff", 2);
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	snprintf(want, sizeof(want), "offset %llu: cannot decode", (unsigned long long)off);
	assert_msg_has(&e, want);

	/* EOF right at the boundary is the end of a good list */
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), 0);
	assert_int_equal(n, 1);
	pstree_free(ps, n);
	imgdir_close(d);
	free(p);
}

static void test_oversize_entry(void **state)
{
	const char *dir = *state;
	struct lp_err e = { 0 };
	struct imgbuf b = { 0 };
	struct pstree_ent *ps;
	struct imgdir *d;
	char want[64];
	uint64_t off;
	size_t n;

	it_inventory(dir, 2, true, true);
	d = open_ok(dir);
	ib_u32(&b, IMG_MAX_ENTRY + 1);
	ib_raw(&b, "\x08\x01", 2);
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EFBIG);
	snprintf(want, sizeof(want), "offset %llu: entry of %u bytes", (unsigned long long)off,
		 IMG_MAX_ENTRY + 1);
	assert_msg_has(&e, want);
	ib_u32(&b, 0xffffffffu);
	pstree_then(dir, &b, &off);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EFBIG);
	imgdir_close(d);
}

static void test_pstree_order(void **state)
{
	const char *dir = *state;
	uint32_t t5[] = { 5, 8, 9 }, t2[] = { 2 }, t3[] = { 3 };
	struct pstree_ent in[] = {
		{ .pid = 5, .ppid = 0, .pgid = 5, .sid = 5, .nr_threads = 3, .threads = t5 },
		{ .pid = 2, .ppid = 5, .pgid = 5, .sid = 5, .nr_threads = 1, .threads = t2 },
		{ .pid = 3, .ppid = 2, .pgid = 3, .sid = 5, .nr_threads = 1, .threads = t3 },
	};
	struct lp_err e = { 0 };
	struct pstree_ent *ps;
	struct imgdir *d;
	size_t n;

	it_inventory(dir, 2, true, true);
	it_pstree(dir, 2, in, 3);
	d = open_ok(dir);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ps[i].pid, in[i].pid);
		assert_int_equal(ps[i].ppid, in[i].ppid);
		assert_int_equal(ps[i].pgid, in[i].pgid);
		assert_int_equal(ps[i].sid, in[i].sid);
		assert_int_equal(ps[i].nr_threads, in[i].nr_threads);
		assert_memory_equal(ps[i].threads, in[i].threads, in[i].nr_threads * 4);
	}
	pstree_free(ps, n);
	pstree_free(NULL, 0);

	/* an empty pstree has no root: an error */
	it_pstree(dir, 2, in, 0);
	assert_int_equal(imgdir_read_pstree(d, &ps, &n, &e), -EINVAL);
	imgdir_close(d);
	imgdir_close(NULL);
}

static void test_task_state(void **state)
{
	const char *dir = *state;
	struct lp_err e = { 0 };
	struct imgdir *d;
	uint32_t st = 0;

	it_inventory(dir, 2, true, true);
	it_core(dir, 10, TASK_ALIVE);
	it_core(dir, 11, TASK_DEAD);
	it_core(dir, 12, TASK_STOPPED);
	d = open_ok(dir);
	assert_int_equal(imgdir_task_state(d, 10, &st, &e), 0);
	assert_int_equal(st, TASK_ALIVE);
	assert_int_equal(imgdir_task_state(d, 11, &st, &e), 0);
	assert_int_equal(st, TASK_DEAD);
	assert_int_equal(imgdir_task_state(d, 12, &st, &e), 0);
	assert_int_equal(st, TASK_STOPPED);
	imgdir_close(d);
}

#define PG 4096ull

static void test_vmas(void **state)
{
	const char *dir = *state;
	uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
	struct vma in[] = {
		{ .start = 0x7000 * ps, .end = 0x7010 * ps, .prot = 3, .flags = MAP_P | MAP_A,
		  .status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE },
		{ .start = 0x1000 * ps, .end = 0x1004 * ps, .prot = 5, .flags = MAP_P,
		  .status = VMA_AREA_REGULAR | VMA_FILE_PRIVATE, .pgoff = 4096, .madv = 1 << 14 },
		{ .start = 0x4000 * ps, .end = 0x4001 * ps, .prot = 3, .flags = MAP_P | MAP_A,
		  .status = VMA_AREA_REGULAR | VMA_AREA_HEAP | VMA_ANON_PRIVATE },
		/* 4.2 guard ranges: appended, overlapping real VMAs */
		{ .start = 0x7002 * ps, .end = 0x7003 * ps, .status = VMA_AREA_GUARD },
		{ .start = 0x1000 * ps, .end = 0x1001 * ps, .status = VMA_AREA_GUARD },
	};
	struct lp_err e = { 0 };
	struct imgdir *d;
	struct vma *v;
	size_t n;

	it_inventory(dir, 2, true, true);
	it_mm(dir, 42, in, 5);
	d = open_ok(dir);
	assert_int_equal(imgdir_read_vmas(d, 42, &v, &n, &e), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].start, in[1].start);
	assert_int_equal(v[0].end, in[1].end);
	assert_int_equal(v[0].pgoff, 4096);
	assert_int_equal(v[0].prot, 5);
	assert_int_equal(v[0].madv, 1 << 14);
	assert_int_equal(v[0].status, in[1].status);
	assert_int_equal(v[1].start, in[2].start);
	assert_int_equal(v[2].start, in[0].start);
	assert_int_equal(v[2].flags, MAP_P | MAP_A);
	free(v);

	/* two real VMAs that overlap */
	in[1].end = 0x4001 * ps + ps;
	it_mm(dir, 42, in, 5);
	assert_int_equal(imgdir_read_vmas(d, 42, &v, &n, &e), -EINVAL);
	assert_msg_has(&e, "mm-42.img");
	assert_msg_has(&e, "overlaps");

	/* unaligned and empty */
	in[1].end = 0x1004 * ps + 1;
	it_mm(dir, 42, in, 3);
	assert_int_equal(imgdir_read_vmas(d, 42, &v, &n, &e), -EINVAL);
	assert_msg_has(&e, "not page aligned");
	in[1].end = in[1].start;
	it_mm(dir, 42, in, 3);
	assert_int_equal(imgdir_read_vmas(d, 42, &v, &n, &e), -EINVAL);

	/* no VMAs at all is an empty list */
	it_mm(dir, 43, in, 0);
	assert_int_equal(imgdir_read_vmas(d, 43, &v, &n, &e), 0);
	assert_int_equal(n, 0);
	free(v);
	imgdir_close(d);
}

static void test_vma_lazyable(void **state)
{
	static const struct {
		uint32_t flags, status;
		bool lazy;
		const char *what;
	} t[] = {
		{ MAP_P | MAP_A, VMA_AREA_REGULAR | VMA_ANON_PRIVATE, true, "anon private" },
		{ MAP_P | MAP_A, VMA_AREA_REGULAR | VMA_AREA_HEAP | VMA_ANON_PRIVATE, true, "heap" },
		{ MAP_P | MAP_A | 0x100, VMA_AREA_REGULAR | VMA_AREA_STACK | VMA_ANON_PRIVATE, true,
		  "stack (growsdown)" },
		/* the rule looks at flags, not at the ANON_PRIVATE status bit */
		{ MAP_P | MAP_A, VMA_AREA_REGULAR, true, "anon private, no status bit" },
		{ MAP_P | MAP_A | 0x2000, VMA_AREA_REGULAR | VMA_ANON_PRIVATE, false, "locked" },
		{ MAP_P | MAP_A | 0x40000, VMA_AREA_REGULAR | VMA_ANON_PRIVATE, false, "hugetlb" },
		{ 0x01 | MAP_A, VMA_AREA_REGULAR | VMA_ANON_SHARED, false, "shared anon" },
		{ MAP_P, VMA_AREA_REGULAR | VMA_FILE_PRIVATE, false, "file private" },
		{ 0x01, VMA_AREA_REGULAR | VMA_FILE_SHARED, false, "file shared" },
		{ MAP_P | MAP_A, VMA_AREA_REGULAR | VMA_AREA_VDSO, false, "vdso" },
		{ MAP_P | MAP_A, VMA_AREA_REGULAR | VMA_AREA_VSYSCALL, false, "vsyscall" },
		{ MAP_P | MAP_A, VMA_AREA_REGULAR | VMA_AREA_VVAR, false, "vvar" },
		{ MAP_A, VMA_AREA_REGULAR, false, "anon without private" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct vma v = { .start = 0, .end = PG, .flags = t[i].flags, .status = t[i].status };

		if (vma_lazyable(&v) != t[i].lazy)
			fail_msg("vma_lazyable(%s) = %d", t[i].what, !t[i].lazy);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_inventory_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inventory_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inventory_bad_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inventory_fdinfo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_inventory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_entry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversize_entry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pstree_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_task_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmas, setup, teardown),
		cmocka_unit_test(test_vma_lazyable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
