/* SPDX-License-Identifier: MIT */
/* persist: session files and journals under the state dir; uffds in systemd's fd store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fdstore.h"
#include "io.h"
#include "persist.h"

struct persist {
	char dir[4096];
	uint32_t id;
	int jfd;
	pthread_mutex_t lock;
	struct fdstore *fs;
	/*
	 * Slots, under lock: RESERVED of the store's are this session's;
	 * PENDING of them wait for pstree records still to come (zombies
	 * among them are only known at the end: they keep theirs), USED
	 * hold a uffd.
	 */
	unsigned reserved, pending, used;
	char named[64];		/* lp-<id>-WHAT of persist_store_named, "" if none */
	uint8_t *stored;	/* under lock: a bit per process whose uffd is in the store */
	size_t nstored;		/* bits */
};

static int rm_dir(const char *dir)
{
	char path[4400];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	closedir(d);
	return rmdir(dir) < 0 ? -errno : 0;
}

int persist_open(const char *state, uint32_t id, const char *text, struct fdstore *fs, struct persist **out,
		 struct lp_err *e)
{
	struct persist *p = calloc(1, sizeof(*p));
	char path[4400];
	int fd, ret;

	if (!p)
		return lp_err_set(e, ENOMEM, "out of memory");
	p->id = id;
	p->jfd = -1;
	p->fs = fs;
	pthread_mutex_init(&p->lock, NULL);
	snprintf(p->dir, sizeof(p->dir), "%s/%u", state, id);
	if ((mkdir(state, 0700) < 0 && errno != EEXIST)) {
		ret = lp_err_set(e, errno, "%s: mkdir: %s", state, strerror(errno));
		goto fail;
	}
	if (!text) {
		snprintf(path, sizeof(path), "%s/journal", p->dir);
		p->jfd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (p->jfd < 0) {
			ret = lp_err_set(e, errno, "%s: %s", path, strerror(errno));
			free(p);
			return ret;
		}
		*out = p;
		return 0;
	}
	rm_dir(p->dir);
	if (mkdir(p->dir, 0700) < 0) {
		ret = lp_err_set(e, errno, "%s: mkdir: %s", p->dir, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/session", p->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || io_write_full(fd, text, strlen(text)) < 0) {
		ret = lp_err_set(e, errno, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto fail;
	}
	close(fd);
	snprintf(path, sizeof(path), "%s/journal", p->dir);
	p->jfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (p->jfd < 0) {
		ret = lp_err_set(e, errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	*out = p;
	return 0;
fail:
	persist_close(p, 1);
	return ret;
}

void persist_add(struct persist *p, uint32_t type, uint32_t proc, uint64_t a, uint64_t b, uint64_t c)
{
	struct persist_rec_t r = { .type = type, .proc = proc, .a = a, .b = b, .c = c };

	if (!p)
		return;
	/* one write of a whole record: a crash leaves the journal at a record boundary */
	pthread_mutex_lock(&p->lock);
	if (io_write_full(p->jfd, &r, sizeof(r)) < 0) {
		close(p->jfd);
		p->jfd = -1;	/* writes to -1 fail quietly: resuming then fails, serving does not */
	}
	pthread_mutex_unlock(&p->lock);
}

int persist_reserve(struct persist *p, unsigned records)
{
	int ret;

	if (!p)
		return 0;
	ret = fdstore_reserve(p->fs, records, 0);
	if (ret)
		return ret;
	pthread_mutex_lock(&p->lock);
	p->reserved += records;
	p->pending += records;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void persist_adopt(struct persist *p, unsigned kept)
{
	if (!p)
		return;
	fdstore_reserve(p->fs, kept, 1);
	pthread_mutex_lock(&p->lock);
	p->reserved += kept;
	p->pending += kept;
	pthread_mutex_unlock(&p->lock);
}

int persist_take_slot(struct persist *p, int forked, int force)
{
	int ret = 0;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	if (!forked && p->pending) {
		p->pending--;
	} else if (p->reserved > p->pending + p->used) {
		/* a slot a finished process left */
	} else {
		ret = fdstore_reserve(p->fs, 1, 0);
		if (ret && force)
			fdstore_reserve(p->fs, 1, 1);
		if (!ret || force)
			p->reserved++;
	}
	if (!ret || force)
		p->used++;
	pthread_mutex_unlock(&p->lock);
	return ret;
}

void persist_store_fd(struct persist *p, uint32_t proc, int fd)
{
	char name[64];
	uint8_t *b;

	if (!p)
		return;
	snprintf(name, sizeof(name), "lp-%u-%u", p->id, proc);
	/* noted first: a session that ends without its processes (killed) takes them out at close */
	pthread_mutex_lock(&p->lock);
	if (proc >= p->nstored) {
		size_t n = ((size_t)proc + 1024) & ~(size_t)1023;

		b = realloc(p->stored, n / 8);
		if (b) {
			memset(b + p->nstored / 8, 0, (n - p->nstored) / 8);
			p->stored = b;
			p->nstored = n;
		}
	}
	if (proc < p->nstored)
		p->stored[proc / 8] |= (uint8_t)(1u << (proc % 8));
	pthread_mutex_unlock(&p->lock);
	if (fd >= 0)
		fdstore_keep(p->fs, name, fd);
}

void persist_drop_fd(struct persist *p, uint32_t proc)
{
	char name[64];

	if (!p)
		return;
	snprintf(name, sizeof(name), "lp-%u-%u", p->id, proc);
	fdstore_forget(p->fs, name);
	pthread_mutex_lock(&p->lock);
	if (proc < p->nstored)
		p->stored[proc / 8] &= (uint8_t)~(1u << (proc % 8));
	if (p->used) {
		p->used--;
		p->reserved--;
		fdstore_release(p->fs, 1);
	}
	pthread_mutex_unlock(&p->lock);
}

int persist_store_named(struct persist *p, const char *what, int fd)
{
	int ret;

	if (!p)
		return 0;
	snprintf(p->named, sizeof(p->named), "lp-%u-%s", p->id, what);
	if (fd < 0)
		return 0;
	ret = persist_take_slot(p, 0, 0);
	if (ret) {
		p->named[0] = '\0';
		return ret;
	}
	fdstore_keep(p->fs, p->named, fd);
	return 0;
}

void persist_close(struct persist *p, int remove)
{
	char name[64];
	size_t i;

	if (!p)
		return;
	if (remove && p->named[0])
		fdstore_forget(p->fs, p->named);
	for (i = 0; remove && i < p->nstored; i++)
		if (p->stored[i / 8] & (1u << (i % 8))) {
			snprintf(name, sizeof(name), "lp-%u-%zu", p->id, i);
			fdstore_forget(p->fs, name);
		}
	free(p->stored);
	if (p->jfd >= 0)
		close(p->jfd);
	if (remove)
		rm_dir(p->dir);
	fdstore_release(p->fs, p->reserved);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int persist_load(const char *state, uint32_t id, char **text, struct persist_rec_t **recs, size_t *n,
		 struct lp_err *e)
{
	char path[4400];
	struct stat st;
	char *t = NULL;
	void *r = NULL;
	int fd = -1, ret;

	snprintf(path, sizeof(path), "%s/%u/session", state, id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > (1 << 20) || !(t = calloc(1, (size_t)st.st_size + 1)) ||
	    io_read_full(fd, t, (size_t)st.st_size) < 0) {
		ret = lp_err_set(e, errno ? errno : EIO, "%s: cannot be read", path);
		goto fail;
	}
	close(fd);
	snprintf(path, sizeof(path), "%s/%u/journal", state, id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > (64 << 20)) {
		ret = lp_err_set(e, errno ? errno : EFBIG, "%s: cannot be read", path);
		goto fail;
	}
	/* a record cut short by the crash is dropped */
	*n = (size_t)st.st_size / sizeof(struct persist_rec_t);
	r = calloc(*n ? *n : 1, sizeof(struct persist_rec_t));
	if (!r || io_read_full(fd, r, *n * sizeof(struct persist_rec_t)) < 0) {
		ret = lp_err_set(e, EIO, "%s: cannot be read", path);
		goto fail;
	}
	close(fd);
	*text = t;
	*recs = r;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(t);
	free(r);
	return ret;
}

uint64_t persist_ticks(void)
{
	struct timespec ts;
	long hz = sysconf(_SC_CLK_TCK);

	clock_gettime(CLOCK_BOOTTIME, &ts);
	if (hz <= 0)
		hz = 100;
	return (uint64_t)ts.tv_sec * (uint64_t)hz + (uint64_t)ts.tv_nsec / (1000000000ull / (uint64_t)hz);
}

int persist_procs(const struct persist_rec_t *recs, size_t n, struct persist_proc **out, size_t *np)
{
	struct persist_proc *v = calloc(n ? n : 1, sizeof(*v));
	size_t k = 0, i;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct persist_rec_t *r = &recs[i];

		if (r->type == PREC_PROC || r->type == PREC_FORK) {
			if (r->proc != k || (r->type == PREC_FORK && r->a >= k))
				break;
			if (r->type == PREC_PROC) {
				v[k].pid = (int32_t)r->a;
			} else {
				v[k].pid = v[r->a].pid;
				v[k].forked = 1;
				v[k].parent = (uint32_t)r->a;
				v[k].fork_ticks = r->c;
			}
			k++;
		} else if (r->proc >= k) {
			break;
		} else if (r->type == PREC_HOST) {
			v[r->proc].host = (int32_t)r->a;
			v[r->proc].start = r->b;
		} else if (r->type == PREC_DONE) {
			v[r->proc].done = 1;
		}
	}
	*out = v;
	*np = k;
	return 0;
}
