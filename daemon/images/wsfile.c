/* SPDX-License-Identifier: MIT */
/* wsfile: the working-set file's bytes (checked field by field), its checksum, and the merge of recordings. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "wsfile.h"

static uint32_t crc_table[256];

static void crc_init(void)
{
	uint32_t c;
	int i, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t ws_crc32c(uint32_t crc, const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const uint8_t *p = buf;

	pthread_once(&once, crc_init);
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

struct ws_set *ws_set_new(uint32_t page_size, size_t nprocs)
{
	struct ws_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->page_size = page_size;
	s->recordings = 1;
	s->nprocs = nprocs;
	s->procs = calloc(nprocs ? nprocs : 1, sizeof(*s->procs));
	if (!s->procs) {
		free(s);
		return NULL;
	}
	return s;
}

void ws_set_free(struct ws_set *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->nprocs; i++)
		free(s->procs[i].pages);
	free(s->procs);
	free(s);
}

const struct ws_proc *ws_find(const struct ws_set *s, uint32_t pid)
{
	size_t i;

	for (i = 0; s && i < s->nprocs; i++)
		if (s->procs[i].pid == pid)
			return &s->procs[i];
	return NULL;
}

int ws_parse(const void *buf, size_t len, const char *name, struct ws_set **out, struct lp_err *e)
{
	const uint8_t *b = buf;
	uint64_t total, sum = 0, off, i, j;
	uint32_t v, np, psz, crc;
	struct ws_set *s;
	int ret;

	if (len < WS_HEADER_SIZE + 4)
		return lp_err_set(e, EINVAL, "%s: %zu bytes: too short for a working-set file (truncated?)", name, len);
	if (get32(b) != WS_MAGIC)
		return lp_err_set(e, EINVAL, "%s: offset 0: magic 0x%08x is not a working-set file's (0x%08x)", name,
				  get32(b), WS_MAGIC);
	v = get32(b + 4);
	if (v != WS_VERSION)
		return lp_err_set(e, EPROTONOSUPPORT, "%s: offset 4: version %u (this build reads %u)", name, v,
				  WS_VERSION);
	crc = ws_crc32c(0, b, len - 4);
	if (crc != get32(b + len - 4))
		return lp_err_set(e, EBADMSG, "%s: checksum 0x%08x at offset %zu, but the %zu bytes before it sum to 0x%08x (truncated or damaged)",
				  name, get32(b + len - 4), len - 4, len - 4, crc);
	psz = get32(b + 8);
	np = get32(b + 12);
	total = get64(b + 24);
	if (psz < 4096 || psz & (psz - 1))
		return lp_err_set(e, EINVAL, "%s: offset 8: page size %u", name, psz);
	if (np > WS_MAX_PROCS)
		return lp_err_set(e, E2BIG, "%s: offset 12: %u processes (at most %u)", name, np, WS_MAX_PROCS);
	if (get32(b + 16) == 0 || get32(b + 16) > WS_MAX_RECORDINGS)
		return lp_err_set(e, EINVAL, "%s: offset 16: %u recordings (1 to %u)", name, get32(b + 16),
				  WS_MAX_RECORDINGS);
	if (get32(b + 20))
		return lp_err_set(e, EINVAL, "%s: offset 20: unknown flags 0x%x", name, get32(b + 20));
	s = ws_set_new(psz, np);
	if (!s)
		return lp_err_set(e, ENOMEM, "%s: out of memory", name);
	s->recordings = get32(b + 16);
	off = WS_HEADER_SIZE;
	for (i = 0; i < np; i++) {
		struct ws_proc *p = &s->procs[i];

		if (len - 4 - off < WS_PROC_SIZE) {
			ret = lp_err_set(e, EINVAL, "%s: offset %llu: process %llu of %u: the file ends", name,
					 (unsigned long long)off, (unsigned long long)i, np);
			goto fail;
		}
		p->pid = get32(b + off);
		p->n = get64(b + off + 8);
		p->layout = get64(b + off + 16);
		if (get32(b + off + 4) || !p->pid || p->n > WS_MAX_PAGES || ws_find(s, p->pid) != p) {
			ret = lp_err_set(e, EINVAL, "%s: offset %llu: process %llu: pid %u, flags 0x%x, %llu pages: %s",
					 name, (unsigned long long)off, (unsigned long long)i, p->pid, get32(b + off + 4),
					 (unsigned long long)p->n,
					 ws_find(s, p->pid) != p ? "the pid comes twice" : "not a process entry");
			goto fail;
		}
		off += WS_PROC_SIZE;
		if ((len - 4 - off) / WS_PAGE_SIZE < p->n) {
			ret = lp_err_set(e, EINVAL, "%s: offset %llu: pid %u has %llu pages, the file ends after %llu",
					 name, (unsigned long long)off, p->pid, (unsigned long long)p->n,
					 (unsigned long long)((len - 4 - off) / WS_PAGE_SIZE));
			goto fail;
		}
		p->pages = malloc((p->n ? p->n : 1) * sizeof(*p->pages));
		if (!p->pages) {
			ret = lp_err_set(e, ENOMEM, "%s: out of memory for %llu pages", name, (unsigned long long)p->n);
			goto fail;
		}
		for (j = 0; j < p->n; j++, off += WS_PAGE_SIZE) {
			struct ws_page *pg = &p->pages[j];

			pg->vaddr = get64(b + off);
			pg->t_us = get32(b + off + 8);
			pg->seen = get32(b + off + 12);
			if (pg->vaddr % psz || !pg->seen || pg->seen > s->recordings) {
				ret = lp_err_set(e, EINVAL, "%s: offset %llu: pid %u page %llu: address 0x%llx, seen %u: %s",
						 name, (unsigned long long)off, p->pid, (unsigned long long)j,
						 (unsigned long long)pg->vaddr, pg->seen,
						 pg->vaddr % psz ? "not page aligned" : "seen by no or too many recordings");
				goto fail;
			}
		}
		sum += p->n;
	}
	if (off != len - 4 || sum != total) {
		ret = lp_err_set(e, EINVAL, "%s: offset %llu: %s (the header says %llu pages, the processes %llu)", name,
				 (unsigned long long)off, off != len - 4 ? "bytes after the last process" : "page count",
				 (unsigned long long)total, (unsigned long long)sum);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	ws_set_free(s);
	return ret;
}

int ws_load(const char *path, struct ws_set **out, struct lp_err *e)
{
	struct stat st;
	void *buf = NULL;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lp_err_set(e, errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = lp_err_set(e, errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > WS_MAX_FILE) {
		ret = lp_err_set(e, EINVAL, "%s: not a regular file of at most %llu bytes", path, WS_MAX_FILE);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = lp_err_set(e, ENOMEM, "%s: out of memory", path);
		goto out;
	}
	ret = io_read_full(fd, buf, (size_t)st.st_size);
	if (ret) {
		lp_err_set(e, -ret, "%s: read: %s", path, ret == -EPIPE ? "shorter than its size" : strerror(-ret));
		goto out;
	}
	ret = ws_parse(buf, (size_t)st.st_size, path, out, e);
out:
	free(buf);
	close(fd);
	return ret;
}

int ws_encode(const struct ws_set *s, void **out, size_t *len)
{
	uint64_t total = 0, n;
	size_t i, j, off;
	uint8_t *b;

	for (i = 0; i < s->nprocs; i++)
		total += s->procs[i].n;
	n = WS_HEADER_SIZE + s->nprocs * WS_PROC_SIZE + total * WS_PAGE_SIZE + 4;
	b = calloc(1, n);
	if (!b)
		return -ENOMEM;
	put32(b, WS_MAGIC);
	put32(b + 4, WS_VERSION);
	put32(b + 8, s->page_size);
	put32(b + 12, (uint32_t)s->nprocs);
	put32(b + 16, s->recordings);
	put64(b + 24, total);
	off = WS_HEADER_SIZE;
	for (i = 0; i < s->nprocs; i++) {
		const struct ws_proc *p = &s->procs[i];

		put32(b + off, p->pid);
		put64(b + off + 8, p->n);
		put64(b + off + 16, p->layout);
		off += WS_PROC_SIZE;
		for (j = 0; j < p->n; j++, off += WS_PAGE_SIZE) {
			put64(b + off, p->pages[j].vaddr);
			put32(b + off + 8, p->pages[j].t_us);
			put32(b + off + 12, p->pages[j].seen);
		}
	}
	put32(b + off, ws_crc32c(0, b, off));
	*out = b;
	*len = n;
	return 0;
}

int ws_save(const char *path, const struct ws_set *s, struct lp_err *e)
{
	char tmp[4200];
	size_t len;
	void *buf;
	int fd, ret;

	ret = ws_encode(s, &buf, &len);
	if (ret)
		return lp_err_set(e, -ret, "%s: out of memory", path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp)) {
		free(buf);
		return lp_err_set(e, ENAMETOOLONG, "%s: name too long", path);
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = lp_err_set(e, errno, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	ret = io_write_full(fd, buf, len);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret) {
		lp_err_set(e, -ret, "%s: %s", path, strerror(-ret));
		unlink(tmp);
	}
out:
	free(buf);
	return ret;
}

/* ---- merge ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* A page and its key for the order: median (absent = later than all), then the mean of the touches. */
struct mkey {
	uint64_t vaddr;
	uint64_t median;		/* UINT64_MAX: touched by fewer than half */
	uint64_t mean;
	uint32_t seen;
	uint32_t t_us;			/* median of the touches there were */
};

static int cmp_key(const void *a, const void *b)
{
	const struct mkey *x = a, *y = b;

	if (x->median != y->median)
		return x->median < y->median ? -1 : 1;
	if (x->mean != y->mean)
		return x->mean < y->mean ? -1 : 1;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

/* The first touch of VADDR in P, as (t_us, seen), or false: P's pages sorted by address in IDX. */
static bool lookup(const struct ws_proc *p, const uint64_t *sorted, const uint32_t *pos, uint64_t vaddr,
		   const struct ws_page **pg)
{
	size_t lo = 0, hi = p->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (sorted[mid] < vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == p->n || sorted[lo] != vaddr)
		return false;
	*pg = &p->pages[pos[lo]];
	return true;
}

struct pair {
	uint64_t a;
	uint32_t i;
};

static int cmp_pair(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;

	if (x->a != y->a)
		return x->a < y->a ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* P's addresses sorted (*SORTED) with each one's index in P (*POS); of a page listed twice, the first touch first. */
static int index_proc(const struct ws_proc *p, uint64_t **sorted, uint32_t **pos)
{
	size_t n = p->n ? p->n : 1, i;
	struct pair *pr = malloc(n * sizeof(*pr));
	uint64_t *k = malloc(n * sizeof(*k));
	uint32_t *ps = malloc(n * sizeof(*ps));

	if (!pr || !k || !ps) {
		free(pr);
		free(k);
		free(ps);
		return -ENOMEM;
	}
	for (i = 0; i < p->n; i++) {
		pr[i].a = p->pages[i].vaddr;
		pr[i].i = (uint32_t)i;
	}
	qsort(pr, p->n, sizeof(*pr), cmp_pair);
	for (i = 0; i < p->n; i++) {
		k[i] = pr[i].a;
		ps[i] = pr[i].i;
	}
	free(pr);
	*sorted = k;
	*pos = ps;
	return 0;
}

static int merge_proc(struct ws_set *const *in, size_t n, uint32_t pid, struct ws_proc *out)
{
	const struct ws_proc **src = calloc(n, sizeof(*src));
	uint64_t **sorted = calloc(n, sizeof(*sorted)), *all = NULL;
	uint32_t **pos = calloc(n, sizeof(*pos)), *t = calloc(n, sizeof(*t));
	struct mkey *keys = NULL;
	size_t i, j, k, nall = 0, nu = 0;
	int ret = -ENOMEM;

	if (!src || !sorted || !pos || !t)
		goto out;
	for (i = 0; i < n; i++) {
		src[i] = ws_find(in[i], pid);
		if (src[i]) {
			if (index_proc(src[i], &sorted[i], &pos[i]))
				goto out;
			nall += src[i]->n;
		}
	}
	all = malloc((nall ? nall : 1) * sizeof(*all));
	if (!all)
		goto out;
	for (i = 0, k = 0; i < n; i++)
		for (j = 0; src[i] && j < src[i]->n; j++)
			all[k++] = src[i]->pages[j].vaddr;
	qsort(all, nall, sizeof(*all), cmp_u64);
	for (i = 0; i < nall; i++)
		if (!nu || all[nu - 1] != all[i])
			all[nu++] = all[i];
	keys = calloc(nu ? nu : 1, sizeof(*keys));
	if (!keys)
		goto out;
	for (k = 0; k < nu; k++) {
		struct mkey *m = &keys[k];
		uint64_t sum = 0, weight = 0;
		size_t c = 0;

		m->vaddr = all[k];
		for (i = 0; i < n; i++) {
			const struct ws_page *pg;

			if (!src[i] || !lookup(src[i], sorted[i], pos[i], all[k], &pg))
				continue;
			t[c++] = pg->t_us;
			m->seen += pg->seen;
			sum += (uint64_t)pg->t_us * pg->seen;
			weight += pg->seen;
		}
		/* the median over all N recordings; those that did not touch it sort last */
		qsort(t, c, sizeof(*t), cmp_u32);
		m->median = (n - 1) / 2 < c ? t[(n - 1) / 2] : UINT64_MAX;
		m->t_us = t[(c - 1) / 2];
		m->mean = weight ? sum / weight : 0;
	}
	qsort(keys, nu, sizeof(*keys), cmp_key);
	out->pid = pid;
	out->n = nu;
	out->pages = malloc((nu ? nu : 1) * sizeof(*out->pages));
	if (!out->pages)
		goto out;
	for (k = 0; k < nu; k++) {
		out->pages[k].vaddr = keys[k].vaddr;
		out->pages[k].t_us = keys[k].median == UINT64_MAX ? keys[k].t_us : (uint32_t)keys[k].median;
		out->pages[k].seen = keys[k].seen;
	}
	ret = 0;
out:
	for (i = 0; sorted && pos && i < n; i++) {
		free(sorted[i]);
		free(pos[i]);
	}
	free(src);
	free(sorted);
	free(pos);
	free(t);
	free(all);
	free(keys);
	return ret;
}

int ws_merge(struct ws_set *const *in, const char *const *names, size_t n, struct ws_set **out,
	     struct lp_err *e)
{
	uint32_t *pids = NULL, recs = 0;
	size_t i, j, np = 0, cap = 0;
	struct ws_set *s = NULL;
	int ret;

	if (n == 0)
		return lp_err_set(e, EINVAL, "nothing to merge");
	for (i = 0; i < n; i++) {
		if (in[i]->page_size != in[0]->page_size) {
			ret = lp_err_set(e, EINVAL, "%s: page size %u, %s has %u", names[i], in[i]->page_size,
					 names[0], in[0]->page_size);
			goto fail;
		}
		recs += in[i]->recordings;
		if (recs > WS_MAX_RECORDINGS) {
			ret = lp_err_set(e, E2BIG, "more than %u recordings in all", WS_MAX_RECORDINGS);
			goto fail;
		}
		for (j = 0; j < in[i]->nprocs; j++) {
			const struct ws_proc *p = &in[i]->procs[j];
			size_t k;

			for (k = 0; k < i; k++) {
				const struct ws_proc *q = ws_find(in[k], p->pid);

				if (q && q->layout != p->layout) {
					ret = lp_err_set(e, EINVAL,
							 "%s: pid %u was recorded on other images than in %s (pagemap layout 0x%016llx vs 0x%016llx)",
							 names[i], p->pid, names[k], (unsigned long long)p->layout,
							 (unsigned long long)q->layout);
					goto fail;
				}
			}
			for (k = 0; k < np && pids[k] != p->pid; k++)
				;
			if (k < np)
				continue;
			if (np == cap) {
				uint32_t *np2 = realloc(pids, (cap = cap ? cap * 2 : 16) * sizeof(*pids));

				if (!np2) {
					ret = lp_err_set(e, ENOMEM, "out of memory");
					goto fail;
				}
				pids = np2;
			}
			pids[np++] = p->pid;
		}
	}
	if (np > WS_MAX_PROCS) {
		ret = lp_err_set(e, E2BIG, "more than %u processes", WS_MAX_PROCS);
		goto fail;
	}
	s = ws_set_new(in[0]->page_size, np);
	if (!s) {
		ret = lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	s->recordings = recs;
	for (i = 0; i < np; i++) {
		const struct ws_proc *any = NULL;

		for (j = 0; j < n && !(any = ws_find(in[j], pids[i])); j++)
			;
		ret = merge_proc(in, n, pids[i], &s->procs[i]);
		if (ret) {
			ret = lp_err_set(e, -ret, "out of memory");
			goto fail;
		}
		s->procs[i].layout = any->layout;
	}
	free(pids);
	*out = s;
	return 0;
fail:
	free(pids);
	ws_set_free(s);		/* NULL until every check has passed */
	return ret;
}

uint64_t ws_layout(const struct pm_entry *pe, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;
	int k;

	/* FNV-1a over (vaddr, nr_pages, flags) of every entry: the pages' places, not their bytes */
	for (i = 0; i < n; i++) {
		uint64_t w[3] = { pe[i].vaddr, pe[i].nr_pages, pe[i].flags };

		for (k = 0; k < 24; k++) {
			h ^= (uint8_t)(w[k / 8] >> (8 * (k % 8)));
			h *= 0x100000001b3ull;
		}
	}
	return h;
}
