/* SPDX-License-Identifier: MIT */
/* test-fixtures: the image reader against real CRIU 4.2 dumps (shared/fixtures/criu-4.2). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "images.h"
#include "pagemap.pb-c.h"

/*
 * Where the fixtures are: argv[1], else $LP_FIXTURES, else
 * ../shared/fixtures/criu-4.2 from the repo root (the cwd, or two levels
 * above build/tests/). Missing fixtures fail the test: they are the only
 * check against what CRIU really writes.
 */
static char fixtures[PATH_MAX];

#define BUF_PAGES 1024
#define DUMP_BUF 0x7f6cd6400000ull
#define LAZY_BUF 0x7f4754800000ull

/* snprintf into a PATH_MAX buffer; a path that does not fit is a failed test */
static void pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *buf, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, PATH_MAX, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= PATH_MAX)
		fail_msg("path too long: %s", buf);
}

static bool has_fixtures(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;

	pathf(p, "%s/dump/inventory.img", dir);
	return stat(p, &st) == 0;
}

static void find_fixtures(int argc, char **argv)
{
	char exe[PATH_MAX], cand[PATH_MAX];
	const char *env = getenv("LP_FIXTURES");
	ssize_t n;

	if (argc > 1) {
		pathf(fixtures, "%s", argv[1]);
		return;
	}
	if (env && *env) {
		pathf(fixtures, "%s", env);
		return;
	}
	pathf(cand, "../shared/fixtures/criu-4.2");
	if (has_fixtures(cand)) {
		pathf(fixtures, "%s", cand);
		return;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		/* <repo>/build/tests/test-fixtures -> <repo>/../shared/... */
		pathf(cand, "%s/../../../shared/fixtures/criu-4.2", dirname(exe));
		if (has_fixtures(cand)) {
			pathf(fixtures, "%s", cand);
			return;
		}
	}
	fixtures[0] = '\0';
}

static struct imgdir *open_set(const char *set)
{
	struct lp_err e = { 0 };
	struct imgdir *d = NULL;
	char p[PATH_MAX];

	if (!fixtures[0] || !has_fixtures(fixtures))
		fail_msg("CRIU 4.2 fixtures not found (tried \"%s\"): pass the directory as argv[1] "
			 "or in LP_FIXTURES, e.g. LP_FIXTURES=../shared/fixtures/criu-4.2",
			 fixtures[0] ? fixtures : "argv[1], LP_FIXTURES, ../shared/fixtures/criu-4.2");
	pathf(p, "%s/%s", fixtures, set);
	if (imgdir_open(p, &d, &e))
		fail_msg("imgdir_open(%s): %s", p, e.msg);
	return d;
}

static struct pagemap *open_pm(struct imgdir *d, uint32_t pid)
{
	struct lp_err e = { 0 };
	struct pagemap *pm = NULL;

	if (pagemap_open(d, pid, &pm, &e))
		fail_msg("pagemap_open(%u): %s", pid, e.msg);
	return pm;
}

static uint64_t mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static void check_pstree(const char *set, uint32_t parent, uint32_t child)
{
	struct imgdir *d = open_set(set);
	struct lp_err e = { 0 };
	struct pstree_ent *ps;
	uint32_t st;
	size_t n;

	assert_int_equal(imgdir_version(d), 2);
	if (imgdir_read_pstree(d, &ps, &n, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(n, 2);
	assert_int_equal(ps[0].pid, parent);
	assert_int_equal(ps[0].ppid, 0);
	assert_int_equal(ps[1].pid, child);
	assert_int_equal(ps[1].ppid, parent);
	assert_int_equal(ps[1].pgid, parent);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ps[i].nr_threads, 1);
		assert_int_equal(ps[i].threads[0], ps[i].pid);
		assert_int_equal(imgdir_task_state(d, ps[i].pid, &st, &e), 0);
		assert_int_equal(st, TASK_ALIVE);
	}
	pstree_free(ps, n);
	imgdir_close(d);
}

static void test_pstree(void **state)
{
	(void)state;
	check_pstree("dump", 12498, 12500);
	check_pstree("lazy-dump", 12539, 12541);
}

static void check_vmas(const char *set, uint32_t pid, uint64_t buf)
{
	struct imgdir *d = open_set(set);
	struct lp_err e = { 0 };
	int found = 0, vvar = 0, vdso = 0, vsyscall = 0, lazy = 0;
	struct vma *v;
	size_t n;

	if (imgdir_read_vmas(d, pid, &v, &n, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(n, 23);
	for (size_t i = 0; i < n; i++) {
		if (i)
			assert_true(v[i].start >= v[i - 1].end);
		if (v[i].start == buf) {
			assert_int_equal(v[i].end, buf + BUF_PAGES * 4096ull);
			assert_int_equal(v[i].flags, 0x22);	/* MAP_PRIVATE | MAP_ANONYMOUS */
			assert_true(vma_lazyable(&v[i]));
			found++;
		}
		if (v[i].status & VMA_AREA_VVAR) {
			assert_int_equal(v[i].end - v[i].start, 6 * 4096);
			vvar++;
		}
		if (v[i].status & VMA_AREA_VDSO)
			vdso++;
		if (v[i].status & VMA_AREA_VSYSCALL)
			vsyscall++;
		/* all three are MAP_PRIVATE|MAP_ANONYMOUS: only the status keeps them out */
		if (v[i].status & (VMA_AREA_VVAR | VMA_AREA_VDSO | VMA_AREA_VSYSCALL)) {
			assert_int_equal(v[i].flags & 0x22, 0x22);
			assert_false(vma_lazyable(&v[i]));
		}
		lazy += vma_lazyable(&v[i]);
	}
	assert_int_equal(found, 1);
	assert_int_equal(vvar, 1);
	assert_int_equal(vdso, 1);
	assert_int_equal(vsyscall, 1);
	/* the buffer, three small anonymous VMAs and the stack */
	assert_int_equal(lazy, 5);
	free(v);
	imgdir_close(d);
}

static void test_vmas(void **state)
{
	(void)state;
	check_vmas("dump", 12498, DUMP_BUF);
	check_vmas("dump", 12500, DUMP_BUF);
	check_vmas("lazy-dump", 12539, LAZY_BUF);
	check_vmas("lazy-dump", 12541, LAZY_BUF);
}

/* Every entry on disk has field 2 = 0 and the count in field 5, as the index says. */
static void check_raw_entries(const char *set, uint32_t pid, size_t want)
{
	struct imgdir *d = open_set(set);
	struct pagemap *pm = open_pm(d, pid);
	const struct pm_entry *ents;
	uint8_t *img = malloc(1 << 16);
	char p[PATH_MAX];
	size_t n, off = 8, i = 0;
	ssize_t len;
	uint32_t l;
	int fd;

	ents = pagemap_entries(pm, &n);
	assert_int_equal(n, want);
	pathf(p, "%s/pagemap-%u.img", imgdir_path(d), pid);
	fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	len = read(fd, img, 1 << 16);
	close(fd);
	assert_true(len > 8);
	memcpy(&l, img + off, 4);
	off += 4 + l;				/* pagemap_head */
	while (off < (size_t)len) {
		PagemapEntry *pe;

		memcpy(&l, img + off, 4);
		pe = pagemap_entry__unpack(NULL, l, img + off + 4);
		assert_non_null(pe);
		assert_true(i < n);
		assert_int_equal(pe->compat_nr_pages, 0);
		assert_true(pe->has_nr_pages);
		assert_true(pe->has_flags);
		assert_int_equal(ents[i].nr_pages, pe->nr_pages);
		assert_int_equal(ents[i].flags, pe->flags);
		assert_int_equal(ents[i].vaddr, pe->vaddr);
		pagemap_entry__free_unpacked(pe, NULL);
		off += 4 + l;
		i++;
	}
	assert_int_equal(i, n);
	free(img);
	pagemap_close(pm);
	imgdir_close(d);
}

static void test_entries(void **state)
{
	(void)state;
	check_raw_entries("dump", 12498, 15);
	check_raw_entries("dump", 12500, 15);
	check_raw_entries("lazy-dump", 12539, 12);
	check_raw_entries("lazy-dump", 12541, 12);
}

static void check_buffer(uint32_t pid, bool child)
{
	struct imgdir *d = open_set("dump");
	struct pagemap *pm = open_pm(d, pid);
	uint64_t *buf = malloc(BUF_PAGES * 4096);
	struct lp_err e = { 0 };
	const struct pm_entry *ents;
	struct pm_run r;
	size_t n, bad = 0;

	assert_int_equal(pagemap_page_size(), 4096);
	/* the buffer's first byte is at offset 12288 of pages-1/pages-2.img */
	ents = pagemap_entries(pm, &n);
	for (size_t i = 0; i < n; i++)
		if (ents[i].vaddr == DUMP_BUF)
			assert_int_equal(ents[i].off, 12288);
	if (pagemap_lookup(pm, DUMP_BUF, BUF_PAGES * 2, &r, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(r.kind, PM_DATA);
	assert_int_equal(r.off, 12288);
	/* four 1 MiB entries, contiguous in the file: one run */
	assert_int_equal(r.nr_pages, BUF_PAGES);

	if (pagemap_read(pm, DUMP_BUF, BUF_PAGES, buf, &e))
		fail_msg("%s", e.msg);
	for (uint64_t i = 0; i < BUF_PAGES * 512; i++) {
		uint64_t seed = child && (i / 512) % 8 == 0 ? 0x5eee : 0x5eed;

		if (buf[i] != mix(i ^ (seed << 48)) && !bad++)
			print_error("pid %u: word %llu (page %llu) differs\n", pid,
				    (unsigned long long)i, (unsigned long long)(i / 512));
	}
	assert_int_equal(bad, 0);
	free(buf);
	pagemap_close(pm);
	imgdir_close(d);
}

static void test_buffer_bytes(void **state)
{
	(void)state;
	check_buffer(12498, false);
	check_buffer(12500, true);
}

static void check_lazy(uint32_t pid)
{
	struct imgdir *d = open_set("lazy-dump");
	struct pagemap *pm = open_pm(d, pid);
	uint8_t *buf = malloc(8 * 4096);
	struct lp_err e = { 0 };
	const struct pm_entry *ents;
	int remote = 0, data = 0;
	struct pm_run r;
	size_t n;

	ents = pagemap_entries(pm, &n);
	for (size_t i = 0; i < n; i++) {
		if (pagemap_lookup(pm, ents[i].vaddr, ents[i].nr_pages, &r, &e))
			fail_msg("%s", e.msg);
		assert_int_equal(r.nr_pages, ents[i].nr_pages);
		if (ents[i].flags == PE_LAZY) {
			assert_int_equal(r.kind, PM_REMOTE);
			assert_int_equal(pagemap_read(pm, ents[i].vaddr, 1, buf, &e), -EREMOTE);
			remote++;
		} else {
			assert_int_equal(ents[i].flags, PE_PRESENT);
			assert_int_equal(r.kind, PM_DATA);
			assert_int_equal(r.off, ents[i].off);
			assert_int_equal(pagemap_read(pm, ents[i].vaddr, 1, buf, &e), 0);
			data++;
		}
	}
	assert_int_equal(remote, 7);
	assert_int_equal(data, 5);
	/* the 4 MiB buffer is one LAZY entry here, not split at 1 MiB */
	if (pagemap_lookup(pm, LAZY_BUF + 4096 * 100, 2048, &r, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(r.kind, PM_REMOTE);
	assert_int_equal(r.nr_pages, BUF_PAGES - 100);
	free(buf);
	pagemap_close(pm);
	imgdir_close(d);
}

static void test_lazy_dump(void **state)
{
	(void)state;
	check_lazy(12539);
	check_lazy(12541);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pstree),
		cmocka_unit_test(test_vmas),
		cmocka_unit_test(test_entries),
		cmocka_unit_test(test_buffer_bytes),
		cmocka_unit_test(test_lazy_dump),
	};

	find_fixtures(argc, argv);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
