/* SPDX-License-Identifier: MIT */
/*
 * fuzz-images: a CRIU image directory (spec §1-3) read as lazy-pagesd
 * reads it. The input is a list of files, each
 *     u8 kind | u32 num | u32 len | len bytes       (integers little-endian)
 * written under a tmpfs dir with three levels d0 (the images dir), d1, d2.
 *   kind & 7:         0 inventory.img  1 pstree.img  2 mm-NUM.img
 *                     3 core-NUM.img   4 pagemap-NUM.img  5 pages-NUM.img
 *                     6 the "parent" entry  7 ids-NUM.img
 *   (kind >> 3) & 3:  the level (3 is 0)
 *   kind & 0x20:      the first 4 bytes are a size (at most 64 MiB): the
 *                     file is the rest, then extended (sparse) to that size
 * For "parent" byte 0 of the data picks what it is: a link to the next
 * level (relative, or absolute), to d0, to itself, to nothing, to "."; a
 * regular file; a directory with no images.
 * Then: imgdir_open(d0), read_pstree, and for each pid in pstree.img or
 * named by a level-0 mm/core/pagemap file: task_state, read_vmas (sorted,
 * aligned, no overlap, no guard), pagemap_open (entries sorted, offsets
 * contiguous), lookups and reads over the entries and VMAs, each read
 * checked page by page against a lookup of that page alone.
 */
#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "images.h"

#define LEVELS 3
#define MAX_PIDS 8
#define MAX_READ 8		/* pages per pagemap_read */
#define MAX_SPARSE (64u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[64];
static int dfd[LEVELS];
static uint64_t ps;
static uint8_t *buf, *page;

static void cleanup(void)
{
	char p[128];

	for (int l = 0; l < LEVELS; l++) {
		snprintf(p, sizeof(p), "%s/d%d", base, l);
		rmdir(p);
	}
	rmdir(base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char p[128];

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	ps = pagemap_page_size();
	buf = malloc(MAX_READ * ps);
	page = malloc(ps);
	snprintf(base, sizeof(base), "/dev/shm/fuzz-images.XXXXXX");
	if (!buf || !page || !mkdtemp(base)) {
		perror("fuzz-images: setup");
		exit(1);
	}
	for (int l = 0; l < LEVELS; l++) {
		snprintf(p, sizeof(p), "%s/d%d", base, l);
		if (mkdir(p, 0700) < 0 || (dfd[l] = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			perror(p);
			exit(1);
		}
	}
	atexit(cleanup);
	return 0;
}

/* Removes everything in every level (a "parent" directory too). */
static void clear_dirs(void)
{
	for (int l = 0; l < LEVELS; l++) {
		int fd = dup(dfd[l]);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;

		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		rewinddir(d);
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (unlinkat(dfd[l], de->d_name, 0) < 0 && errno == EISDIR)
				unlinkat(dfd[l], de->d_name, AT_REMOVEDIR);
		}
		closedir(d);
	}
}

static void make_parent(int l, uint8_t how)
{
	char target[128];
	int fd;

	unlinkat(dfd[l], "parent", 0);
	unlinkat(dfd[l], "parent", AT_REMOVEDIR);
	switch (how % 8) {
	case 0:
		snprintf(target, sizeof(target), "../d%d", (l + 1) % LEVELS);
		break;
	case 1:
		snprintf(target, sizeof(target), "%s/d%d", base, (l + 1) % LEVELS);
		break;
	case 2:
		snprintf(target, sizeof(target), "../d0");
		break;
	case 3:
		snprintf(target, sizeof(target), "../d%d", l);
		break;
	case 4:
		snprintf(target, sizeof(target), "../missing");
		break;
	case 5:
		snprintf(target, sizeof(target), ".");
		break;
	case 6:
		fd = openat(dfd[l], "parent", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
		return;
	default:
		mkdirat(dfd[l], "parent", 0700);
		return;
	}
	if (symlinkat(target, dfd[l], "parent") < 0)
		perror("symlinkat");
}

static void write_file(int l, const char *name, const uint8_t *p, size_t n, bool sparse)
{
	uint64_t sz = 0;
	int fd;

	if (sparse) {
		if (n < 4)
			return;
		sz = fuzz_get32(p);
		if (sz > MAX_SPARSE)
			sz = MAX_SPARSE;
		p += 4;
		n -= 4;
	}
	fd = openat(dfd[l], name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (n && write(fd, p, n) != (ssize_t)n)
		perror("write");
	if (sz > n && ftruncate(fd, (off_t)sz) < 0)
		perror("ftruncate");
	close(fd);
}

static void add_pid(uint32_t *pids, size_t *n, uint32_t pid)
{
	for (size_t i = 0; i < *n; i++)
		if (pids[i] == pid)
			return;
	if (*n < MAX_PIDS)
		pids[(*n)++] = pid;
}

/* The bytes of one page, the way a lookup of that page alone says they are. */
static bool page_by_lookup(struct pagemap *pm, uint64_t a, uint8_t *out)
{
	struct pm_run run;
	struct lp_err e;
	size_t got = 0;

	if (pagemap_lookup(pm, a, 1, &run, &e) < 0)
		return false;
	FUZZ_CHECK(run.nr_pages == 1);
	if (run.kind == PM_HOLE) {
		memset(out, 0, ps);
		return true;
	}
	if (run.kind != PM_DATA)
		return false;
	FUZZ_CHECK(run.fd >= 0);
	while (got < ps) {
		ssize_t r = pread(run.fd, out + got, ps - got, (off_t)(run.off + got));

		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

static void check_read(struct pagemap *pm, uint64_t a, uint64_t n)
{
	struct lp_err e;

	if (n > MAX_READ)
		n = MAX_READ;
	if (n == 0 || a % ps)
		return;
	if (pagemap_read(pm, a, n, buf, &e) < 0) {
		FUZZ_CHECK(e.msg[0]);
		return;
	}
	for (uint64_t k = 0; k < n; k++) {
		FUZZ_CHECK(page_by_lookup(pm, a + k * ps, page));
		FUZZ_CHECK(memcmp(page, buf + k * ps, ps) == 0);
	}
}

static void check_lookup(struct pagemap *pm, uint64_t a, uint64_t max)
{
	struct pm_run run;
	struct lp_err e;

	if (a % ps || max == 0)
		return;
	if (pagemap_lookup(pm, a, max, &run, &e) < 0) {
		FUZZ_CHECK(e.msg[0]);
		return;
	}
	FUZZ_CHECK(run.nr_pages >= 1 && run.nr_pages <= max);
	FUZZ_CHECK(run.kind == PM_HOLE || run.kind == PM_DATA || run.kind == PM_REMOTE);
	if (run.kind == PM_DATA) {
		struct stat st;

		FUZZ_CHECK(run.fd >= 0 && fstat(run.fd, &st) == 0);
		FUZZ_CHECK(run.off % ps == 0);
		FUZZ_CHECK(run.off + run.nr_pages * ps <= (uint64_t)st.st_size);
	}
	/* the run's last page, looked up alone, is of the same kind (and, for data, where the run says) */
	if (run.nr_pages > 1) {
		struct pm_run last;

		FUZZ_CHECK(pagemap_lookup(pm, a + (run.nr_pages - 1) * ps, 1, &last, &e) == 0);
		FUZZ_CHECK(last.kind == run.kind && last.nr_pages == 1);
		if (run.kind == PM_DATA)
			FUZZ_CHECK(last.off == run.off + (run.nr_pages - 1) * ps);
	}
}

static void check_pagemap(struct pagemap *pm, const struct vma *v, size_t nv)
{
	const struct pm_entry *ents;
	uint64_t off = 0;
	size_t n;

	ents = pagemap_entries(pm, &n);
	for (size_t i = 0; i < n; i++) {
		const struct pm_entry *pe = &ents[i];

		FUZZ_CHECK(pe->vaddr % ps == 0 && pe->nr_pages > 0);
		FUZZ_CHECK(pe->nr_pages <= (UINT64_MAX - pe->vaddr) / ps);
		FUZZ_CHECK(pe->flags && !(pe->flags & ~(PE_PARENT | PE_LAZY | PE_PRESENT)));
		FUZZ_CHECK(!((pe->flags & PE_PARENT) && (pe->flags & (PE_LAZY | PE_PRESENT))));
		if (i)
			FUZZ_CHECK(pe->vaddr >= ents[i - 1].vaddr + ents[i - 1].nr_pages * ps);
		if (pe->flags & PE_PRESENT) {
			FUZZ_CHECK(pe->off == off);
			off += pe->nr_pages * ps;
		}
	}
	for (size_t i = 0; i < n && i < 16; i++) {
		const struct pm_entry *pe = &ents[i];
		uint64_t last = pe->vaddr + (pe->nr_pages - 1) * ps;

		check_lookup(pm, pe->vaddr, pe->nr_pages < 64 ? pe->nr_pages : 64);
		check_lookup(pm, pe->vaddr, 1u << 20);
		check_lookup(pm, last, 3);
		if (last + ps > last)
			check_lookup(pm, last + ps, 2);
		if (pe->vaddr >= 2 * ps) {
			check_lookup(pm, pe->vaddr - 2 * ps, 4);
			check_read(pm, pe->vaddr - 2 * ps, 4);
		}
		check_read(pm, pe->vaddr, pe->nr_pages + 1);
		check_read(pm, last, 2);
	}
	for (size_t i = 0; i < nv && i < 8; i++) {
		uint64_t np = (v[i].end - v[i].start) / ps;

		check_lookup(pm, v[i].start, np);
		check_read(pm, v[i].start, np);
	}
	check_lookup(pm, 0, UINT64_MAX);
	check_read(pm, UINT64_MAX - ps + 1, 1);
}

static void check_vmas(const struct vma *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(v[i].start % ps == 0 && v[i].end % ps == 0 && v[i].start < v[i].end);
		FUZZ_CHECK((v[i].status & VMA_AREA_GUARD) != VMA_AREA_GUARD);
		if (i)
			FUZZ_CHECK(v[i].start >= v[i - 1].end);
		(void)vma_lazyable(&v[i]);
	}
}

static void run_images(uint32_t *pids, size_t npids)
{
	struct pstree_ent *pst = NULL;
	struct imgdir *d = NULL;
	char path[96];
	size_t npst = 0;
	struct lp_err e;

	snprintf(path, sizeof(path), "%s/d0", base);
	if (imgdir_open(path, &d, &e) < 0) {
		FUZZ_CHECK(e.msg[0]);
		return;
	}
	FUZZ_CHECK(imgdir_version(d) == 1 || imgdir_version(d) == 2);
	if (imgdir_read_pstree(d, &pst, &npst, &e) == 0) {
		FUZZ_CHECK(npst > 0);
		for (size_t i = 0; i < npst; i++) {
			FUZZ_CHECK(pst[i].pid != 0);
			FUZZ_CHECK(!pst[i].nr_threads || pst[i].threads);
			add_pid(pids, &npids, pst[i].pid);
		}
		pstree_free(pst, npst);
	}
	for (size_t i = 0; i < npids; i++) {
		struct pagemap *pm = NULL;
		struct vma *v = NULL;
		uint32_t state;
		size_t nv = 0;

		(void)imgdir_task_state(d, pids[i], &state, &e);
		if (imgdir_read_vmas(d, pids[i], &v, &nv, &e) == 0)
			check_vmas(v, nv);
		if (pagemap_open(d, pids[i], &pm, &e) == 0) {
			check_pagemap(pm, v, nv);
			pagemap_close(pm);
		} else {
			FUZZ_CHECK(e.msg[0]);
		}
		free(v);
	}
	imgdir_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "inventory.img", "pstree.img", "mm-%u.img", "core-%u.img",
					     "pagemap-%u.img", "pages-%u.img", "parent", "ids-%u.img" };
	uint32_t pids[MAX_PIDS];
	size_t npids = 0, off = 0;
	int before = fuzz_count_fds();

	while (size - off >= 9) {
		uint8_t kind = data[off];
		uint32_t num = fuzz_get32(data + off + 1), len = fuzz_get32(data + off + 5);
		int l = ((kind >> 3) & 3) % LEVELS;
		char name[64];

		off += 9;
		if (len > size - off)
			len = (uint32_t)(size - off);
		if ((kind & 7) == 6) {
			make_parent(l, len ? data[off] : 0);
		} else {
			snprintf(name, sizeof(name), names[kind & 7], num);
			write_file(l, name, data + off, len, kind & 0x20);
			if (l == 0 && ((kind & 7) == 2 || (kind & 7) == 3 || (kind & 7) == 4))
				add_pid(pids, &npids, num);
		}
		off += len;
	}
	run_images(pids, npids);
	clear_dirs();
	FUZZ_CHECK(fuzz_count_fds() == before);
	return 0;
}
