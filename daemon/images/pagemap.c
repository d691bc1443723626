/* SPDX-License-Identifier: MIT */
/* pagemap: an index of pagemap-<pid>.img and its pages file, resolved through the parent chain. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images.h"
#include "imgfile.h"
#include "pagemap.pb-c.h"

struct pagemap {
	struct imgdir *d;
	uint32_t pid;
	char path[4096];		/* pagemap-<pid>.img */
	char pages_path[4096];		/* pages-<pages_id>.img */
	int fd;				/* pages file; -1 if no entry is PRESENT */
	struct pm_entry *ents;
	uint64_t *ent_at;		/* byte offset of each entry in the pagemap file */
	size_t n;

	pthread_mutex_t lock;		/* serialises loading of parent */
	struct pagemap *parent;		/* same pid one level up; atomic, set once */
	int parent_err;			/* a failed load, kept */
	char parent_msg[sizeof(((struct lp_err *)0)->msg)];
};

uint64_t pagemap_page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

const struct pm_entry *pagemap_entries(const struct pagemap *pm, size_t *n)
{
	*n = pm->n;
	return pm->ents;
}

void pagemap_close(struct pagemap *pm)
{
	if (!pm)
		return;
	pagemap_close(pm->parent);
	if (pm->fd >= 0)
		close(pm->fd);
	pthread_mutex_destroy(&pm->lock);
	free(pm->ents);
	free(pm->ent_at);
	free(pm);
}

static uint64_t ent_end(const struct pm_entry *pe, uint64_t ps)
{
	return pe->vaddr + pe->nr_pages * ps;
}

/* Normalises one entry as CRIU's init_compat_pagemap_entry and checks it alone. */
static int pm_normalise(const struct pagemap *pm, const PagemapEntry *pe, uint64_t at,
			uint64_t ps, struct pm_entry *out, struct lp_err *e)
{
	uint64_t count = pe->has_nr_pages ? pe->nr_pages : pe->compat_nr_pages;
	uint32_t flags = pe->has_flags ? pe->flags : 0;

	if (pe->has_in_parent && pe->in_parent)
		flags |= PE_PARENT;
	else if (!pe->has_flags)
		flags = PE_PRESENT;

	if (pe->vaddr % ps)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": vaddr 0x%" PRIx64 " is not page aligned",
				  pm->path, at, pe->vaddr);
	if (count == 0)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": entry at 0x%" PRIx64
				  " has 0 pages (field 2 is 0 and field 5 nr_pages is %s; this is how a pre-4.2 reader sees a CRIU 4.2 entry)",
				  pm->path, at, pe->vaddr, pe->has_nr_pages ? "0" : "absent");
	if (count > (UINT64_MAX - pe->vaddr) / ps)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": entry at 0x%" PRIx64 " with %" PRIu64
				  " pages overflows the address space",
				  pm->path, at, pe->vaddr, count);
	if (flags & ~(PE_PARENT | PE_LAZY | PE_PRESENT))
		return lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": unknown flags 0x%" PRIx32,
				  pm->path, at, flags);
	if ((flags & PE_PARENT) && (flags & (PE_LAZY | PE_PRESENT)))
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": flags 0x%" PRIx32
				  " combine PARENT with LAZY or PRESENT",
				  pm->path, at, flags);
	if (!flags)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": flags 0 (neither PRESENT, PARENT nor LAZY)",
				  pm->path, at);
	out->vaddr = pe->vaddr;
	out->nr_pages = count;
	out->flags = flags;
	out->off = 0;
	return 0;
}

static int pm_read_entries(struct pagemap *pm, struct imgfile *f, uint32_t *pages_id,
			   struct lp_err *e)
{
	uint64_t ps = pagemap_page_size(), off = 0, at;
	PagemapHead *h = NULL;
	PagemapEntry *pe;
	const uint8_t *data;
	size_t len, cap = 0;
	int ret;

	ret = imgfile_next(f, &data, &len, &at, e);
	if (ret == 0)
		return lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": no pagemap_head", pm->path,
				  f->off);
	if (ret < 0)
		return ret;
	h = pagemap_head__unpack(NULL, len, data);
	if (!h)
		return lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": cannot decode pagemap_head",
				  pm->path, at);
	*pages_id = h->pages_id;
	pagemap_head__free_unpacked(h, NULL);

	while ((ret = imgfile_next(f, &data, &len, &at, e)) > 0) {
		struct pm_entry ent, *prev = pm->n ? &pm->ents[pm->n - 1] : NULL;

		pe = pagemap_entry__unpack(NULL, len, data);
		if (!pe)
			return lp_err_set(e, EINVAL,
					  "%s: offset %" PRIu64 ": cannot decode pagemap_entry",
					  pm->path, at);
		ret = pm_normalise(pm, pe, at, ps, &ent, e);
		pagemap_entry__free_unpacked(pe, NULL);
		if (ret < 0)
			return ret;
		if (prev && ent.vaddr < ent_end(prev, ps))
			return lp_err_set(e, EINVAL,
					  "%s: offset %" PRIu64 ": entry at 0x%" PRIx64
					  " is unsorted or overlaps the previous one [0x%" PRIx64
					  ", 0x%" PRIx64 ")",
					  pm->path, at, ent.vaddr, prev->vaddr, ent_end(prev, ps));
		if (ent.flags & PE_PRESENT) {
			if (ent.nr_pages > (UINT64_MAX - off) / ps)
				return lp_err_set(e, EINVAL,
						  "%s: offset %" PRIu64
						  ": pages file offset overflows", pm->path, at);
			ent.off = off;
			off += ent.nr_pages * ps;
		}
		if (pm->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct pm_entry *ne = realloc(pm->ents, ncap * sizeof(*ne));
			uint64_t *na;

			if (!ne)
				return lp_err_set(e, ENOMEM, "%s: out of memory", pm->path);
			pm->ents = ne;
			na = realloc(pm->ent_at, ncap * sizeof(*na));
			if (!na)
				return lp_err_set(e, ENOMEM, "%s: out of memory", pm->path);
			pm->ent_at = na;
			cap = ncap;
		}
		pm->ents[pm->n] = ent;
		pm->ent_at[pm->n] = at;
		pm->n++;
	}
	return ret;
}

/* Opens the pages file and checks that every PRESENT entry lies inside it. */
static int pm_open_pages(struct pagemap *pm, uint32_t pages_id, struct lp_err *e)
{
	uint64_t ps = pagemap_page_size();
	bool need = false;
	struct stat st;
	char name[64];

	snprintf(name, sizeof(name), "pages-%" PRIu32 ".img", pages_id);
	snprintf(pm->pages_path, sizeof(pm->pages_path), "%s/%s", imgdir_path(pm->d), name);
	for (size_t i = 0; i < pm->n && !need; i++)
		need = pm->ents[i].flags & PE_PRESENT;
	pm->fd = openat(imgdir_fd(pm->d), name, O_RDONLY | O_CLOEXEC);
	if (pm->fd < 0) {
		if (errno == ENOENT && !need)
			return 0;
		return lp_err_set(e, errno, "%s: %s (pages of %s)", pm->pages_path,
				  strerror(errno), pm->path);
	}
	if (fstat(pm->fd, &st) < 0)
		return lp_err_set(e, errno, "%s: fstat: %s", pm->pages_path, strerror(errno));
	for (size_t i = 0; i < pm->n; i++) {
		const struct pm_entry *pe = &pm->ents[i];
		uint64_t end = pe->off + pe->nr_pages * ps;

		if ((pe->flags & PE_PRESENT) && end > (uint64_t)st.st_size)
			return lp_err_set(e, EINVAL,
					  "%s: offset %" PRIu64 ": pagemap beyond the pages file %s "
					  "(entry at 0x%" PRIx64 " needs bytes [%" PRIu64 ", %" PRIu64
					  "), file has %" PRIu64 ")",
					  pm->path, pm->ent_at[i], pm->pages_path, pe->vaddr, pe->off,
					  end, (uint64_t)st.st_size);
	}
	return 0;
}

int pagemap_open(struct imgdir *d, uint32_t pid, struct pagemap **out, struct lp_err *e)
{
	struct imgfile f = { 0 };
	struct pagemap *pm;
	uint32_t pages_id = 0;
	char name[64];
	int ret;

	pm = calloc(1, sizeof(*pm));
	if (!pm)
		return lp_err_set(e, ENOMEM, "%s: out of memory", imgdir_path(d));
	pm->d = d;
	pm->pid = pid;
	pm->fd = -1;
	pthread_mutex_init(&pm->lock, NULL);
	snprintf(name, sizeof(name), "pagemap-%" PRIu32 ".img", pid);
	snprintf(pm->path, sizeof(pm->path), "%s/%s", imgdir_path(d), name);

	ret = imgfile_open(d, name, PAGEMAP_MAGIC, &f, e);
	if (ret < 0)
		goto fail;
	ret = pm_read_entries(pm, &f, &pages_id, e);
	if (ret < 0)
		goto fail;
	ret = pm_open_pages(pm, pages_id, e);
	if (ret < 0)
		goto fail;
	imgfile_close(&f);
	*out = pm;
	return 0;
fail:
	imgfile_close(&f);
	pagemap_close(pm);
	return ret;
}

/* The same pid's pagemap one level up the chain, loaded on first use. */
static int pm_parent(struct pagemap *pm, size_t i, struct pagemap **out, struct lp_err *e)
{
	struct pagemap *p = __atomic_load_n(&pm->parent, __ATOMIC_ACQUIRE);
	struct lp_err le = { 0 };
	struct imgdir *pd = NULL;
	int ret = 0;

	if (p) {
		*out = p;
		return 0;
	}
	pthread_mutex_lock(&pm->lock);
	p = pm->parent;
	if (p || pm->parent_err) {
		ret = pm->parent_err;
		goto out;
	}
	ret = imgdir_parent(pm->d, &pd, &le);
	if (ret < 0) {
		lp_err_prefix(&le, "%s: offset %" PRIu64 ": PE_PARENT entry", pm->path,
			      pm->ent_at[i]);
	} else if (!pd) {
		ret = lp_err_set(&le, ENOENT,
				 "%s: offset %" PRIu64 ": PE_PARENT entry at 0x%" PRIx64
				 " but %s has no parent link",
				 pm->path, pm->ent_at[i], pm->ents[i].vaddr, imgdir_path(pm->d));
	} else {
		ret = pagemap_open(pd, pm->pid, &p, &le);
		if (ret < 0)
			lp_err_prefix(&le, "%s: offset %" PRIu64 ": PE_PARENT entry", pm->path,
				      pm->ent_at[i]);
	}
	if (ret < 0) {
		/* kept: a broken chain does not heal, and each fault would re-read it */
		pm->parent_err = ret;
		memcpy(pm->parent_msg, le.msg, sizeof(pm->parent_msg));
	} else {
		__atomic_store_n(&pm->parent, p, __ATOMIC_RELEASE);
	}
out:
	if (ret < 0)
		lp_err_set(e, ret, "%s", pm->parent_msg);
	else
		*out = p;
	pthread_mutex_unlock(&pm->lock);
	return ret;
}

enum ent_kind { EK_DATA, EK_REMOTE, EK_PARENT };

static enum ent_kind ent_kind(const struct pm_entry *pe)
{
	if (pe->flags & PE_PRESENT)
		return EK_DATA;
	if (pe->flags & PE_PARENT)
		return EK_PARENT;
	return EK_REMOTE;
}

/* Index of the first entry whose vaddr is above A. */
static size_t pm_upper(const struct pagemap *pm, uint64_t a)
{
	size_t lo = 0, hi = pm->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pm->ents[mid].vaddr <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* pagemap_lookup, also returning the level whose pages file holds a PM_DATA run. */
static int pm_resolve(struct pagemap *pm, uint64_t a, uint64_t max_pages, struct pm_run *run,
		      struct pagemap **src, struct lp_err *e)
{
	uint64_t ps = pagemap_page_size(), limit = max_pages;
	struct pagemap *cur = pm, *child = NULL;
	size_t ci = 0;
	int ret;

	if (a % ps)
		return lp_err_set(e, EINVAL, "%s: lookup of unaligned address 0x%" PRIx64, pm->path,
				  a);
	if (max_pages == 0)
		return lp_err_set(e, EINVAL, "%s: lookup of 0 pages at 0x%" PRIx64, pm->path, a);

	for (;;) {
		size_t i = pm_upper(cur, a), j;
		struct pagemap *up = NULL;
		const struct pm_entry *pe;
		enum ent_kind kind;
		uint64_t left;

		if (i == 0 || a >= ent_end(&cur->ents[i - 1], ps)) {
			if (child)
				return lp_err_set(e, ENOENT,
						  "%s: page 0x%" PRIx64
						  " is PE_PARENT (entry at offset %" PRIu64
						  ") but %s has no entry for it",
						  child->path, a, child->ent_at[ci], cur->path);
			/* up to the next entry, or to the end of the address space */
			left = i < cur->n ? (cur->ents[i].vaddr - a) / ps : (UINT64_MAX - a) / ps + 1;
			*run = (struct pm_run){
				.kind = PM_HOLE,
				.nr_pages = left < limit ? left : limit,
				.fd = -1,
			};
			*src = cur;
			return 0;
		}

		j = i - 1;
		pe = &cur->ents[j];
		kind = ent_kind(pe);
		left = (ent_end(pe, ps) - a) / ps;
		/* a run goes on over touching entries of one kind (for data, contiguous in the file) */
		while (left < limit && j + 1 < cur->n) {
			const struct pm_entry *p = &cur->ents[j], *q = &cur->ents[j + 1];

			if (q->vaddr != ent_end(p, ps) || ent_kind(q) != kind)
				break;
			if (kind == EK_DATA && q->off != p->off + p->nr_pages * ps)
				break;
			left += q->nr_pages;
			j++;
		}
		if (left < limit)
			limit = left;

		if (kind == EK_DATA) {
			*run = (struct pm_run){
				.kind = PM_DATA,
				.nr_pages = limit,
				.fd = cur->fd,
				.off = pe->off + (a - pe->vaddr),
			};
			*src = cur;
			return 0;
		}
		if (kind == EK_REMOTE) {
			if (child)
				return lp_err_set(e, EREMOTE,
						  "%s: page 0x%" PRIx64
						  " is PE_PARENT (entry at offset %" PRIu64
						  ") but %s has it LAZY only (no bytes in the images)",
						  child->path, a, child->ent_at[ci], cur->path);
			*run = (struct pm_run){ .kind = PM_REMOTE, .nr_pages = limit, .fd = -1 };
			*src = cur;
			return 0;
		}
		ret = pm_parent(cur, i - 1, &up, e);
		if (ret < 0)
			return ret;
		child = cur;
		ci = i - 1;
		cur = up;
	}
}

int pagemap_lookup(struct pagemap *pm, uint64_t vaddr, uint64_t max_pages, struct pm_run *run,
		   struct lp_err *e)
{
	struct pagemap *src;

	return pm_resolve(pm, vaddr, max_pages, run, &src, e);
}

int pagemap_read(struct pagemap *pm, uint64_t vaddr, uint64_t nr_pages, void *buf, struct lp_err *e)
{
	uint64_t ps = pagemap_page_size(), done = 0;
	uint8_t *p = buf;

	if (nr_pages > (SIZE_MAX / ps) || nr_pages > (UINT64_MAX - vaddr) / ps)
		return lp_err_set(e, EINVAL, "%s: read of %" PRIu64 " pages at 0x%" PRIx64
				  " is too large", pm->path, nr_pages, vaddr);
	while (done < nr_pages) {
		uint64_t a = vaddr + done * ps;
		struct pagemap *src;
		struct pm_run run;
		size_t len, got = 0;
		int ret;

		ret = pm_resolve(pm, a, nr_pages - done, &run, &src, e);
		if (ret < 0)
			return ret;
		len = run.nr_pages * ps;
		switch (run.kind) {
		case PM_HOLE:
			memset(p, 0, len);
			break;
		case PM_REMOTE:
			return lp_err_set(e, EREMOTE,
					  "%s: page 0x%" PRIx64
					  " is LAZY only: its bytes are with the page server, not in the images",
					  pm->path, a);
		case PM_DATA:
			while (got < len) {
				ssize_t r = pread(run.fd, p + got, len - got, run.off + got);

				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					return lp_err_set(e, errno,
							  "%s: offset %" PRIu64 ": read: %s",
							  src->pages_path, run.off + got,
							  strerror(errno));
				if (r == 0)
					return lp_err_set(e, EIO,
							  "%s: offset %" PRIu64
							  ": unexpected end of file (page 0x%" PRIx64 ")",
							  src->pages_path, run.off + got,
							  a + got / ps * ps);
				got += r;
			}
			break;
		}
		p += len;
		done += run.nr_pages;
	}
	return 0;
}
