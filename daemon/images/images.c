/* SPDX-License-Identifier: MIT */
/* images: reading a CRIU image directory, its parent chain, and the pstree, core and mm images. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.pb-c.h"
#include "images.h"
#include "imgfile.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pstree.pb-c.h"

/* x86_64 MAP_* values as the dump host stores them in vma_entry.flags */
#define IMG_MAP_PRIVATE 0x02u
#define IMG_MAP_ANONYMOUS 0x20u
#define IMG_MAP_LOCKED 0x2000u
#define IMG_MAP_HUGETLB 0x40000u

struct imgdir {
	int dfd;
	char *path;
	uint32_t version;
	int depth;			/* 0 for the dir given to imgdir_open */
	dev_t dev;
	ino_t ino;
	struct imgdir *child;		/* the dir whose "parent" this is */

	pthread_mutex_t lock;		/* guards the three below */
	int parent_state;		/* 0 not looked up, 1 done */
	int parent_err;
	struct imgdir *parent;
	char parent_msg[sizeof(((struct lp_err *)0)->msg)];
};

static int imgdir_new(int dfd, const char *path, uint32_t version, int depth, struct imgdir **out,
		      struct lp_err *e)
{
	struct imgdir *d;
	struct stat st;

	if (fstat(dfd, &st) < 0)
		return lp_err_set(e, errno, "%s: fstat: %s", path, strerror(errno));
	d = calloc(1, sizeof(*d));
	if (!d)
		return lp_err_set(e, ENOMEM, "%s: out of memory", path);
	d->path = strdup(path);
	if (!d->path) {
		free(d);
		return lp_err_set(e, ENOMEM, "%s: out of memory", path);
	}
	d->dfd = dfd;
	d->version = version;
	d->depth = depth;
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	pthread_mutex_init(&d->lock, NULL);
	*out = d;
	return 0;
}

static void imgdir_free_one(struct imgdir *d)
{
	if (d->dfd >= 0)
		close(d->dfd);
	pthread_mutex_destroy(&d->lock);
	free(d->path);
	free(d);
}

void imgdir_close(struct imgdir *d)
{
	struct imgdir *p;

	while (d) {
		p = d->parent;
		imgdir_free_one(d);
		d = p;
	}
}

const char *imgdir_path(const struct imgdir *d)
{
	return d->path;
}

uint32_t imgdir_version(const struct imgdir *d)
{
	return d->version;
}

int imgdir_fd(const struct imgdir *d)
{
	return d->dfd;
}

static int imgdir_open_parent(struct imgdir *d, struct imgdir **out, struct lp_err *e)
{
	struct imgdir *p = NULL, *c;
	char path[4096], real[PATH_MAX];
	struct stat st;
	int dfd, ret;

	*out = NULL;
	if (fstatat(d->dfd, "parent", &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return lp_err_set(e, errno, "%s/parent: %s", d->path, strerror(errno));
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/parent", d->path) >= sizeof(path))
		return lp_err_set(e, ENAMETOOLONG, "%s/parent: path too long", d->path);
	if (d->depth + 1 > IMG_MAX_PARENTS)
		return lp_err_set(e, ELOOP, "%s: parent chain deeper than %d levels", d->path,
				  IMG_MAX_PARENTS);
	dfd = openat(d->dfd, "parent", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return lp_err_set(e, errno, "%s: cannot open parent image dir: %s", path,
				  strerror(errno));
	/* name the parent by where the link leads: "a/parent/parent/..." says little */
	if (realpath(path, real))
		memcpy(path, real, sizeof(path));
	/* CRIU reads the whole chain with the top inventory's img_version. */
	ret = imgdir_new(dfd, path, d->version, d->depth + 1, &p, e);
	if (ret < 0) {
		close(dfd);
		return ret;
	}
	for (c = d; c; c = c->child) {
		if (c->dev == p->dev && c->ino == p->ino) {
			ret = lp_err_set(e, ELOOP, "%s: parent chain loops back to %s", path,
					 c->path);
			imgdir_free_one(p);
			return ret;
		}
	}
	p->child = d;
	*out = p;
	return 0;
}

int imgdir_parent(struct imgdir *d, struct imgdir **out, struct lp_err *e)
{
	int ret;

	pthread_mutex_lock(&d->lock);
	if (!d->parent_state) {
		struct lp_err pe = { 0 };

		d->parent_err = imgdir_open_parent(d, &d->parent, &pe);
		memcpy(d->parent_msg, pe.msg, sizeof(d->parent_msg));
		d->parent_state = 1;
	}
	ret = d->parent_err;
	if (ret < 0)
		lp_err_set(e, ret, "%s", d->parent_msg);
	else
		*out = d->parent;
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* ---- framing ---- */

static int imgfile_read(struct imgfile *f, void *buf, size_t len, size_t *got, struct lp_err *e)
{
	*got = fread(buf, 1, len, f->f);
	if (*got < len && ferror(f->f))
		return lp_err_set(e, EIO, "%s: offset %" PRIu64 ": read error", f->path,
				  f->off + *got);
	return 0;
}

static int imgfile_magic(struct imgfile *f, uint32_t want, const char *what, struct lp_err *e)
{
	uint64_t at = f->off;
	uint32_t m;
	size_t got;
	int ret;

	ret = imgfile_read(f, &m, sizeof(m), &got, e);
	if (ret < 0)
		return ret;
	f->off += got;
	if (got < sizeof(m))
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": truncated head (need 4 bytes of %s magic, have %zu)",
				  f->path, at, what, got);
	if (m != want)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": wrong %s magic (expected 0x%08x, found 0x%08x)",
				  f->path, at, what, want, m);
	return 0;
}

int imgfile_open(struct imgdir *d, const char *name, uint32_t magic, struct imgfile *f,
		 struct lp_err *e)
{
	int fd, ret;

	memset(f, 0, sizeof(*f));
	if ((size_t)snprintf(f->path, sizeof(f->path), "%s/%s", d->path, name) >= sizeof(f->path))
		return lp_err_set(e, ENAMETOOLONG, "%s/%s: path too long", d->path, name);
	fd = openat(d->dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lp_err_set(e, errno, "%s: %s", f->path, strerror(errno));
	f->f = fdopen(fd, "r");
	if (!f->f) {
		ret = lp_err_set(e, errno, "%s: %s", f->path, strerror(errno));
		close(fd);
		return ret;
	}
	if (magic != INVENTORY_MAGIC && d->version == 2) {
		ret = imgfile_magic(f, IMG_COMMON_MAGIC, "common", e);
		if (ret < 0)
			goto fail;
	}
	ret = imgfile_magic(f, magic, "image", e);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	imgfile_close(f);
	return ret;
}

void imgfile_close(struct imgfile *f)
{
	if (f->f)
		fclose(f->f);
	f->f = NULL;
	free(f->buf);
	f->buf = NULL;
	f->cap = 0;
}

int imgfile_next(struct imgfile *f, const uint8_t **data, size_t *len, uint64_t *entry_off,
		 struct lp_err *e)
{
	uint64_t at = f->off;
	uint32_t n;
	size_t got;
	int ret;

	ret = imgfile_read(f, &n, sizeof(n), &got, e);
	if (ret < 0)
		return ret;
	if (got == 0)
		return 0;
	if (got < sizeof(n))
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": truncated entry length (need 4 bytes, have %zu)",
				  f->path, at, got);
	if (n > IMG_MAX_ENTRY)
		return lp_err_set(e, EFBIG,
				  "%s: offset %" PRIu64 ": entry of %" PRIu32 " bytes exceeds the limit of %u",
				  f->path, at, n, IMG_MAX_ENTRY);
	if (n > f->cap) {
		uint8_t *b = realloc(f->buf, n);

		if (!b)
			return lp_err_set(e, ENOMEM, "%s: offset %" PRIu64 ": out of memory",
					  f->path, at);
		f->buf = b;
		f->cap = n;
	}
	ret = imgfile_read(f, f->buf, n, &got, e);
	if (ret < 0)
		return ret;
	if (got < n)
		return lp_err_set(e, EINVAL,
				  "%s: offset %" PRIu64 ": truncated entry (need %" PRIu32 " bytes, have %zu)",
				  f->path, at, n, got);
	f->off += 4 + (uint64_t)n;
	*data = f->buf;
	*len = n;
	*entry_off = at;
	return 1;
}

/* Reads the first entry of a one-entry image; a file without one is an error. */
static int imgfile_one(struct imgfile *f, const char *what, const uint8_t **data, size_t *len,
		       uint64_t *at, struct lp_err *e)
{
	int ret = imgfile_next(f, data, len, at, e);

	if (ret == 0)
		return lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": no %s entry", f->path,
				  f->off, what);
	return ret < 0 ? ret : 0;
}

/* ---- inventory ---- */

static int imgdir_read_inventory(struct imgdir *d, struct lp_err *e)
{
	InventoryEntry *inv = NULL;
	struct imgfile f;
	const uint8_t *data;
	size_t len;
	uint64_t at;
	int ret;

	ret = imgfile_open(d, "inventory.img", INVENTORY_MAGIC, &f, e);
	if (ret < 0)
		return ret;
	ret = imgfile_one(&f, "inventory", &data, &len, &at, e);
	if (ret < 0)
		goto out;
	inv = inventory_entry__unpack(NULL, len, data);
	if (!inv) {
		ret = lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": cannot decode inventory_entry",
				 f.path, at);
		goto out;
	}
	if (inv->img_version != 1 && inv->img_version != 2) {
		ret = lp_err_set(e, EINVAL, "%s: unsupported img_version %" PRIu32 " (want 1 or 2)",
				 f.path, inv->img_version);
		goto out;
	}
	if (!inv->has_fdinfo_per_id || !inv->fdinfo_per_id) {
		ret = lp_err_set(e, EINVAL, "%s: fdinfo_per_id is not set (image too old)", f.path);
		goto out;
	}
	if (inv->has_root_cg_set && inv->root_cg_set == 0) {
		ret = lp_err_set(e, EINVAL, "%s: corrupted root_cg_set (0)", f.path);
		goto out;
	}
	d->version = inv->img_version;
	ret = 0;
out:
	if (inv)
		inventory_entry__free_unpacked(inv, NULL);
	imgfile_close(&f);
	return ret;
}

int imgdir_open(const char *path, struct imgdir **out, struct lp_err *e)
{
	struct imgdir *d = NULL;
	char full[4096], cwd[4096];
	int dfd, ret;

	if (path[0] == '/' || !getcwd(cwd, sizeof(cwd))) {
		if ((size_t)snprintf(full, sizeof(full), "%s", path) >= sizeof(full))
			return lp_err_set(e, ENAMETOOLONG, "%s: path too long", path);
	} else if ((size_t)snprintf(full, sizeof(full), "%s/%s", cwd, path) >= sizeof(full)) {
		return lp_err_set(e, ENAMETOOLONG, "%s: path too long", path);
	}
	/* messages name files as "<dir>/<file>": drop trailing slashes */
	for (size_t l = strlen(full); l > 1 && full[l - 1] == '/'; l--)
		full[l - 1] = '\0';

	dfd = open(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return lp_err_set(e, errno, "%s: %s", full, strerror(errno));
	ret = imgdir_new(dfd, full, 2, 0, &d, e);
	if (ret < 0) {
		close(dfd);
		return ret;
	}
	ret = imgdir_read_inventory(d, e);
	if (ret < 0) {
		imgdir_close(d);
		return ret;
	}
	*out = d;
	return 0;
}

/* ---- pstree ---- */

void pstree_free(struct pstree_ent *ents, size_t n)
{
	if (!ents)
		return;
	for (size_t i = 0; i < n; i++)
		free(ents[i].threads);
	free(ents);
}

int imgdir_read_pstree(struct imgdir *d, struct pstree_ent **out, size_t *n, struct lp_err *e)
{
	struct pstree_ent *ents = NULL, *t;
	size_t nr = 0, cap = 0;
	PstreeEntry *pe = NULL;
	struct imgfile f;
	const uint8_t *data;
	size_t len;
	uint64_t at;
	int ret;

	ret = imgfile_open(d, "pstree.img", PSTREE_MAGIC, &f, e);
	if (ret < 0)
		return ret;
	while ((ret = imgfile_next(&f, &data, &len, &at, e)) > 0) {
		pe = pstree_entry__unpack(NULL, len, data);
		if (!pe) {
			ret = lp_err_set(e, EINVAL,
					 "%s: offset %" PRIu64 ": cannot decode pstree_entry", f.path,
					 at);
			goto fail;
		}
		if (pe->pid == 0) {
			ret = lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": pid 0", f.path, at);
			goto fail;
		}
		if (nr == cap) {
			cap = cap ? cap * 2 : 8;
			t = realloc(ents, cap * sizeof(*ents));
			if (!t) {
				ret = lp_err_set(e, ENOMEM, "%s: out of memory", f.path);
				goto fail;
			}
			ents = t;
		}
		t = &ents[nr];
		memset(t, 0, sizeof(*t));
		t->pid = pe->pid;
		t->ppid = pe->ppid;
		t->pgid = pe->pgid;
		t->sid = pe->sid;
		if (pe->n_threads) {
			t->threads = malloc(pe->n_threads * sizeof(*t->threads));
			if (!t->threads) {
				ret = lp_err_set(e, ENOMEM, "%s: out of memory", f.path);
				goto fail;
			}
			memcpy(t->threads, pe->threads, pe->n_threads * sizeof(*t->threads));
		}
		t->nr_threads = pe->n_threads;
		nr++;
		pstree_entry__free_unpacked(pe, NULL);
		pe = NULL;
	}
	if (ret < 0)
		goto fail;
	if (nr == 0) {
		ret = lp_err_set(e, EINVAL, "%s: no pstree_entry", f.path);
		goto fail;
	}
	imgfile_close(&f);
	*out = ents;
	*n = nr;
	return 0;
fail:
	if (pe)
		pstree_entry__free_unpacked(pe, NULL);
	pstree_free(ents, nr);
	imgfile_close(&f);
	return ret;
}

/* ---- core ---- */

int imgdir_task_state(struct imgdir *d, uint32_t pid, uint32_t *state, struct lp_err *e)
{
	CoreEntry *ce = NULL;
	struct imgfile f;
	const uint8_t *data;
	char name[64];
	size_t len;
	uint64_t at;
	int ret;

	snprintf(name, sizeof(name), "core-%" PRIu32 ".img", pid);
	ret = imgfile_open(d, name, CORE_MAGIC, &f, e);
	if (ret < 0)
		return ret;
	ret = imgfile_one(&f, "core", &data, &len, &at, e);
	if (ret < 0)
		goto out;
	ce = core_entry__unpack(NULL, len, data);
	if (!ce) {
		ret = lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": cannot decode core_entry",
				 f.path, at);
		goto out;
	}
	if (!ce->tc) {
		ret = lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": core_entry has no tc", f.path,
				 at);
		goto out;
	}
	*state = ce->tc->task_state;
	ret = 0;
out:
	if (ce)
		core_entry__free_unpacked(ce, NULL);
	imgfile_close(&f);
	return ret;
}

/* ---- mm ---- */

static int vma_cmp(const void *a, const void *b)
{
	const struct vma *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int imgdir_read_vmas(struct imgdir *d, uint32_t pid, struct vma **out, size_t *n, struct lp_err *e)
{
	uint64_t ps = pagemap_page_size();
	struct vma *v = NULL;
	MmEntry *mm = NULL;
	struct imgfile f;
	const uint8_t *data;
	char name[64];
	size_t len, nr = 0;
	uint64_t at;
	int ret;

	snprintf(name, sizeof(name), "mm-%" PRIu32 ".img", pid);
	ret = imgfile_open(d, name, MM_MAGIC, &f, e);
	if (ret < 0)
		return ret;
	ret = imgfile_one(&f, "mm", &data, &len, &at, e);
	if (ret < 0)
		goto out;
	mm = mm_entry__unpack(NULL, len, data);
	if (!mm) {
		ret = lp_err_set(e, EINVAL, "%s: offset %" PRIu64 ": cannot decode mm_entry", f.path,
				 at);
		goto out;
	}
	v = malloc((mm->n_vmas ? mm->n_vmas : 1) * sizeof(*v));
	if (!v) {
		ret = lp_err_set(e, ENOMEM, "%s: out of memory", f.path);
		goto out;
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *ve = mm->vmas[i];

		/* 4.2 appends MADV_GUARD_INSTALL ranges as fake, overlapping VMAs */
		if ((ve->status & VMA_AREA_GUARD) == VMA_AREA_GUARD)
			continue;
		if (ve->start % ps || ve->end % ps || ve->start >= ve->end) {
			ret = lp_err_set(e, EINVAL,
					 "%s: offset %" PRIu64 ": vma %zu [0x%" PRIx64 ", 0x%" PRIx64
					 ") is empty or not page aligned",
					 f.path, at, i, ve->start, ve->end);
			goto out;
		}
		v[nr] = (struct vma){
			.start = ve->start,
			.end = ve->end,
			.pgoff = ve->pgoff,
			.shmid = ve->shmid,
			.prot = ve->prot,
			.flags = ve->flags,
			.status = ve->status,
			.madv = ve->has_madv ? ve->madv : 0,
		};
		nr++;
	}
	qsort(v, nr, sizeof(*v), vma_cmp);
	for (size_t i = 1; i < nr; i++) {
		if (v[i].start < v[i - 1].end) {
			ret = lp_err_set(e, EINVAL,
					 "%s: offset %" PRIu64 ": vma [0x%" PRIx64 ", 0x%" PRIx64
					 ") overlaps [0x%" PRIx64 ", 0x%" PRIx64 ")",
					 f.path, at, v[i].start, v[i].end, v[i - 1].start,
					 v[i - 1].end);
			goto out;
		}
	}
	*out = v;
	*n = nr;
	v = NULL;
	ret = 0;
out:
	free(v);
	if (mm)
		mm_entry__free_unpacked(mm, NULL);
	imgfile_close(&f);
	return ret;
}

bool vma_lazyable(const struct vma *v)
{
	if ((v->flags & (IMG_MAP_ANONYMOUS | IMG_MAP_PRIVATE)) != (IMG_MAP_ANONYMOUS | IMG_MAP_PRIVATE))
		return false;
	if (v->flags & (IMG_MAP_LOCKED | IMG_MAP_HUGETLB))
		return false;
	if (v->status & (VMA_AREA_VDSO | VMA_AREA_VSYSCALL | VMA_AREA_VVAR))
		return false;
	return true;
}
