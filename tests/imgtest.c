/* SPDX-License-Identifier: MIT */
/* imgtest: writes small CRIU image sets for the unit tests. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "core.pb-c.h"
#include "imgtest.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	assert_non_null(p);
	return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_true(r >= 0);
	return s;
}

void ib_raw(struct imgbuf *b, const void *p, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

void ib_u32(struct imgbuf *b, uint32_t v)
{
	ib_raw(b, &v, sizeof(v));
}

void ib_head(struct imgbuf *b, uint32_t version, uint32_t magic)
{
	if (version == 2)
		ib_u32(b, IMG_COMMON_MAGIC);
	ib_u32(b, magic);
}

void ib_msg(struct imgbuf *b, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *p = xmalloc(n);

	assert_int_equal(protobuf_c_message_pack(m, p), n);
	ib_u32(b, (uint32_t)n);
	ib_raw(b, p, n);
	free(p);
}

void ib_write(struct imgbuf *b, const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, b->p, b->len), (ssize_t)b->len);
	close(fd);
	free(path);
	free(b->p);
	memset(b, 0, sizeof(*b));
}

char *it_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char *d = xasprintf("%s/lp-images-XXXXXX", t && *t ? t : "/tmp");

	assert_non_null(mkdtemp(d));
	return d;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void it_rmrf(const char *dir)
{
	if (dir)
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *it_subdir(const char *dir, const char *name)
{
	char *p = xasprintf("%s/%s", dir, name);

	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

void it_parent_link(const char *dir, const char *target)
{
	char *p = xasprintf("%s/parent", dir);

	assert_int_equal(symlink(target, p), 0);
	free(p);
}

void it_inventory(const char *dir, uint32_t version, bool has_fdinfo, bool fdinfo)
{
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	struct imgbuf b = { 0 };

	inv.img_version = version;
	inv.has_fdinfo_per_id = has_fdinfo;
	inv.fdinfo_per_id = fdinfo;
	inv.has_lsmtype = true;
	inv.dump_criu_run_id = "test-run";
	ib_u32(&b, INVENTORY_MAGIC);
	ib_msg(&b, &inv.base);
	ib_write(&b, dir, "inventory.img");
}

void it_pstree(const char *dir, uint32_t version, const struct pstree_ent *ents, size_t n)
{
	struct imgbuf b = { 0 };

	ib_head(&b, version, PSTREE_MAGIC);
	for (size_t i = 0; i < n; i++) {
		PstreeEntry pe = PSTREE_ENTRY__INIT;

		pe.pid = ents[i].pid;
		pe.ppid = ents[i].ppid;
		pe.pgid = ents[i].pgid;
		pe.sid = ents[i].sid;
		pe.n_threads = ents[i].nr_threads;
		pe.threads = ents[i].threads;
		ib_msg(&b, &pe.base);
	}
	ib_write(&b, dir, "pstree.img");
}

void it_core(const char *dir, uint32_t pid, uint32_t state)
{
	TaskCoreEntry tc = TASK_CORE_ENTRY__INIT;
	CoreEntry ce = CORE_ENTRY__INIT;
	struct imgbuf b = { 0 };
	char name[64];

	tc.task_state = state;
	tc.comm = "test";
	ce.mtype = 1;
	ce.tc = &tc;
	ib_head(&b, 2, CORE_MAGIC);
	ib_msg(&b, &ce.base);
	snprintf(name, sizeof(name), "core-%u.img", pid);
	ib_write(&b, dir, name);
}

void it_mm(const char *dir, uint32_t pid, const struct vma *v, size_t n)
{
	MmEntry mm = MM_ENTRY__INIT;
	VmaEntry *ves = xmalloc(n * sizeof(*ves));
	VmaEntry **vp = xmalloc(n * sizeof(*vp));
	struct imgbuf b = { 0 };
	char name[64];

	for (size_t i = 0; i < n; i++) {
		VmaEntry ve = VMA_ENTRY__INIT;

		ve.start = v[i].start;
		ve.end = v[i].end;
		ve.pgoff = v[i].pgoff;
		ve.shmid = v[i].shmid;
		ve.prot = v[i].prot;
		ve.flags = v[i].flags;
		ve.status = v[i].status;
		ve.fd = -1;
		ve.has_madv = v[i].madv != 0;
		ve.madv = v[i].madv;
		ves[i] = ve;
		vp[i] = &ves[i];
	}
	mm.n_vmas = n;
	mm.vmas = vp;
	ib_head(&b, 2, MM_MAGIC);
	ib_msg(&b, &mm.base);
	snprintf(name, sizeof(name), "mm-%u.img", pid);
	ib_write(&b, dir, name);
	free(vp);
	free(ves);
}

void it_pagemap(const char *dir, uint32_t pid, uint32_t pages_id, const struct it_pme *e,
		size_t n)
{
	PagemapHead h = PAGEMAP_HEAD__INIT;
	struct imgbuf b = { 0 };
	char name[64];

	ib_head(&b, 2, PAGEMAP_MAGIC);
	h.pages_id = pages_id;
	ib_msg(&b, &h.base);
	for (size_t i = 0; i < n; i++) {
		PagemapEntry pe = PAGEMAP_ENTRY__INIT;

		pe.vaddr = e[i].vaddr;
		pe.compat_nr_pages = e[i].compat_nr_pages;
		pe.has_in_parent = e[i].has_in_parent;
		pe.in_parent = e[i].in_parent;
		pe.has_flags = e[i].has_flags;
		pe.flags = e[i].flags;
		pe.has_nr_pages = e[i].has_nr_pages;
		pe.nr_pages = e[i].nr_pages;
		ib_msg(&b, &pe.base);
	}
	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	ib_write(&b, dir, name);
}

uint64_t it_word(uint32_t tag, uint64_t page, uint64_t w)
{
	return ((uint64_t)tag << 48) | (page << 16) | w;
}

void it_pages(const char *dir, uint32_t id, uint64_t npages, uint32_t tag)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), nw = ps / 8;
	uint64_t *pg = xmalloc(ps);
	struct imgbuf b = { 0 };
	char name[64];

	for (uint64_t k = 0; k < npages; k++) {
		for (size_t w = 0; w < nw; w++)
			pg[w] = it_word(tag, k, w);
		ib_raw(&b, pg, ps);
	}
	snprintf(name, sizeof(name), "pages-%u.img", id);
	ib_write(&b, dir, name);
	free(pg);
}

bool it_page_is(const void *p, uint32_t tag, uint64_t page)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	const uint64_t *w = p;

	for (size_t i = 0; i < ps / 8; i++)
		if (w[i] != it_word(tag, page, i))
			return false;
	return true;
}

bool it_page_is_zero(const void *p)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	const uint8_t *b = p;

	for (size_t i = 0; i < ps; i++)
		if (b[i])
			return false;
	return true;
}
