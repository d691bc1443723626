/* SPDX-License-Identifier: MIT */
/* ws: first touches kept per process in chunks (the fault path appends), replay runs handed out in recorded order. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ranges.h"
#include "ws.h"
#include "wsfile.h"

#define WS_CHUNK 4096

struct touch {
	uint64_t img;
	uint32_t nr_pages;
	uint32_t t_us;
};

struct chunk {
	struct chunk *next;
	uint32_t n;
	struct touch t[WS_CHUNK];
};

struct run {
	uint64_t addr, nr_pages;
};

struct ws_track {
	struct ws *w;
	uint32_t pid;
	bool live;			/* under w->lock */
	uint64_t layout;
	pthread_mutex_t lock;		/* the touches, the runs and next */
	struct chunk *head, *tail;
	uint64_t ntouch;
	struct run *runs;
	size_t nruns, next;
	struct run back[8];		/* given back (ws_unnext), handed out first */
	unsigned nback;
	atomic_bool pending;
};

struct ws {
	uint64_t psz;
	size_t n;
	struct ws_track *tracks;
	atomic_bool recording;
	atomic_uint_fast64_t t0;	/* the marker, 0 before it */
	atomic_uint_fast64_t planned, read;
	pthread_mutex_t lock;		/* what follows */
	char *path;
	uint64_t limit_ns;
	bool record, written, replay, bad;
	uint64_t recorded;
	struct ws_set *set;
	char *set_name;
};

struct ws *ws_new(const uint32_t *pids, size_t n, uint64_t psz)
{
	struct ws *w = calloc(1, sizeof(*w));
	size_t i;

	if (!w)
		return NULL;
	w->tracks = calloc(n ? n : 1, sizeof(*w->tracks));
	if (!w->tracks) {
		free(w);
		return NULL;
	}
	w->n = n;
	w->psz = psz;
	pthread_mutex_init(&w->lock, NULL);
	for (i = 0; i < n; i++) {
		w->tracks[i].w = w;
		w->tracks[i].pid = pids[i];
		pthread_mutex_init(&w->tracks[i].lock, NULL);
	}
	return w;
}

void ws_free(struct ws *w)
{
	struct chunk *c, *next;
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->n; i++) {
		for (c = w->tracks[i].head; c; c = next) {
			next = c->next;
			free(c);
		}
		free(w->tracks[i].runs);
		pthread_mutex_destroy(&w->tracks[i].lock);
	}
	free(w->tracks);
	ws_set_free(w->set);
	free(w->set_name);
	free(w->path);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

struct ws_track *ws_track(struct ws *w, size_t idx)
{
	return w && idx < w->n ? &w->tracks[idx] : NULL;
}

void ws_record(struct ws *w, const char *path, uint64_t limit_ns)
{
	pthread_mutex_lock(&w->lock);
	free(w->path);
	w->path = strdup(path);
	w->limit_ns = limit_ns;
	w->record = w->path != NULL;
	atomic_store(&w->recording, w->record);
	pthread_mutex_unlock(&w->lock);
}

bool ws_recording(struct ws *w)
{
	return w && atomic_load(&w->recording);
}

void ws_start(struct ws *w, uint64_t t0)
{
	size_t i;

	atomic_store(&w->t0, t0 ? t0 : 1);
	pthread_mutex_lock(&w->lock);
	if (w->bad) {
		/* a process's pages say the file is not for these images: replay nothing at all */
		for (i = 0; i < w->n; i++)
			atomic_store(&w->tracks[i].pending, false);
		w->replay = false;
		atomic_store(&w->planned, 0);
	}
	pthread_mutex_unlock(&w->lock);
}

uint64_t ws_record_deadline(struct ws *w)
{
	uint64_t t0 = atomic_load(&w->t0), d = 0;

	pthread_mutex_lock(&w->lock);
	if (atomic_load(&w->recording) && w->limit_ns && t0)
		d = t0 + w->limit_ns;
	pthread_mutex_unlock(&w->lock);
	return d;
}

void ws_track_layout(struct ws_track *t, uint64_t layout)
{
	pthread_mutex_lock(&t->w->lock);
	t->layout = layout;
	pthread_mutex_unlock(&t->w->lock);
}

void ws_track_live(struct ws_track *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->w->lock);
	t->live = true;
	pthread_mutex_unlock(&t->w->lock);
}

void ws_touch(struct ws_track *t, uint64_t img, uint64_t nr_pages, uint64_t now)
{
	uint64_t t0, us;
	struct chunk *c;

	if (!t || !atomic_load_explicit(&t->w->recording, memory_order_relaxed))
		return;
	t0 = atomic_load_explicit(&t->w->t0, memory_order_relaxed);
	us = t0 && now > t0 ? (now - t0) / 1000 : 0;
	pthread_mutex_lock(&t->lock);
	if (t->ntouch >= WS_MAX_TOUCHES)
		goto out;
	c = t->tail;
	if (!c || c->n == WS_CHUNK) {
		/* once per 4096 faults; a failed allocation loses touches, never a page */
		c = malloc(sizeof(*c));
		if (!c)
			goto out;
		c->next = NULL;
		c->n = 0;
		if (t->tail)
			t->tail->next = c;
		else
			t->head = c;
		t->tail = c;
	}
	c->t[c->n].img = img;
	c->t[c->n].nr_pages = nr_pages > UINT32_MAX ? UINT32_MAX : (uint32_t)nr_pages;
	c->t[c->n].t_us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	c->n++;
	t->ntouch++;
out:
	pthread_mutex_unlock(&t->lock);
}

struct tpage {
	uint64_t vaddr;
	uint64_t idx;			/* touch order */
	uint32_t t_us;
};

static int cmp_addr(const void *a, const void *b)
{
	const struct tpage *x = a, *y = b;

	if (x->vaddr != y->vaddr)
		return x->vaddr < y->vaddr ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_idx(const void *a, const void *b)
{
	const struct tpage *x = a, *y = b;

	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Track T's touches as pages in first-touch order, each page once, into P. */
static int collect(struct ws_track *t, uint64_t psz, struct ws_proc *p)
{
	uint64_t n = 0, k = 0, i, j, u;
	struct tpage *tp;
	struct chunk *c;

	pthread_mutex_lock(&t->lock);
	for (c = t->head; c; c = c->next)
		for (i = 0; i < c->n; i++)
			n += c->t[i].nr_pages;
	tp = malloc((n ? n : 1) * sizeof(*tp));
	if (!tp) {
		pthread_mutex_unlock(&t->lock);
		return -ENOMEM;
	}
	for (c = t->head; c; c = c->next)
		for (i = 0; i < c->n; i++)
			for (j = 0; j < c->t[i].nr_pages; j++, k++) {
				tp[k].vaddr = c->t[i].img + j * psz;
				tp[k].idx = k;
				tp[k].t_us = c->t[i].t_us;
			}
	pthread_mutex_unlock(&t->lock);
	qsort(tp, n, sizeof(*tp), cmp_addr);
	for (i = 0, u = 0; i < n; i++)
		if (!u || tp[u - 1].vaddr != tp[i].vaddr)
			tp[u++] = tp[i];
	qsort(tp, u, sizeof(*tp), cmp_idx);
	p->pid = t->pid;
	p->layout = t->layout;
	p->n = u;
	p->pages = malloc((u ? u : 1) * sizeof(*p->pages));
	if (!p->pages) {
		free(tp);
		return -ENOMEM;
	}
	for (i = 0; i < u; i++) {
		p->pages[i].vaddr = tp[i].vaddr;
		p->pages[i].t_us = tp[i].t_us;
		p->pages[i].seen = 1;
	}
	free(tp);
	return 0;
}

int ws_write(struct ws *w, uint64_t *pages, struct lp_err *e)
{
	struct ws_set *s = NULL;
	size_t i, nlive = 0, k = 0;
	uint64_t total = 0;
	int ret = 0;

	*pages = 0;
	pthread_mutex_lock(&w->lock);
	if (!w->record || w->written)
		goto out;
	w->written = true;
	atomic_store(&w->recording, false);
	for (i = 0; i < w->n; i++)
		nlive += w->tracks[i].live;
	s = ws_set_new((uint32_t)w->psz, nlive);
	if (!s) {
		ret = lp_err_set(e, ENOMEM, "%s: out of memory", w->path);
		goto out;
	}
	for (i = 0; i < w->n; i++) {
		if (!w->tracks[i].live)
			continue;
		ret = collect(&w->tracks[i], w->psz, &s->procs[k]);
		if (ret) {
			lp_err_set(e, -ret, "%s: out of memory", w->path);
			goto out;
		}
		total += s->procs[k++].n;
	}
	ret = ws_save(w->path, s, e);
	if (!ret)
		w->recorded = *pages = total;
out:
	pthread_mutex_unlock(&w->lock);
	ws_set_free(s);
	return ret;
}

int ws_replay(struct ws *w, struct ws_set *s, const char *name, struct lp_err *e)
{
	size_t i, k;
	int ret = 0;

	if (s->page_size != w->psz) {
		ret = lp_err_set(e, EINVAL, "%s: recorded with %u-byte pages, this host has %llu", name, s->page_size,
				 (unsigned long long)w->psz);
		goto fail;
	}
	for (i = 0; i < s->nprocs; i++) {
		for (k = 0; k < w->n && w->tracks[k].pid != s->procs[i].pid; k++)
			;
		if (k == w->n) {
			ret = lp_err_set(e, ESTALE, "%s: recorded for other images: pid %u is not in pstree.img", name,
					 s->procs[i].pid);
			goto fail;
		}
	}
	pthread_mutex_lock(&w->lock);
	w->set_name = strdup(name);
	if (!w->set_name) {
		pthread_mutex_unlock(&w->lock);
		ret = lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	w->set = s;
	w->replay = true;
	pthread_mutex_unlock(&w->lock);
	return 0;
fail:
	ws_set_free(s);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Appends group G (N addresses) sorted, each once, near pages merged, to T's runs (room for N more). */
static void add_group(struct ws_track *t, uint64_t *g, size_t n, uint64_t psz)
{
	size_t i;

	qsort(g, n, sizeof(*g), cmp_u64);
	for (i = 0; i < n; i++) {
		struct run *last = t->nruns ? &t->runs[t->nruns - 1] : NULL;

		if (i && g[i] == g[i - 1])
			continue;
		/* a short gap is read with them: those pages are lazy too, and one read costs less than two */
		if (i && last && g[i] - (last->addr + last->nr_pages * psz) <= WS_GAP_PAGES * psz) {
			last->nr_pages = (g[i] - last->addr) / psz + 1;
			continue;
		}
		t->runs[t->nruns].addr = g[i];
		t->runs[t->nruns].nr_pages = 1;
		t->nruns++;
	}
}

int ws_plan(struct ws_track *t, const struct ranges *r, struct lp_err *e)
{
	struct ws *w = t->w;
	const struct ws_proc *wp;
	uint64_t missing = 0, kept = 0, img, i, g[WS_GROUP_PAGES];
	size_t ng = 0;
	const char *name;
	bool differs;

	pthread_mutex_lock(&w->lock);
	wp = w->replay ? ws_find(w->set, t->pid) : NULL;
	name = w->set_name;
	differs = wp && t->layout != wp->layout;
	pthread_mutex_unlock(&w->lock);
	if (!wp || !wp->n)
		return 0;
	/* more pages than the process has lazy ones: most cannot be there (and nothing is allocated for them) */
	if (wp->n / 2 > ranges_remaining(r)) {
		pthread_mutex_lock(&w->lock);
		w->bad = true;
		pthread_mutex_unlock(&w->lock);
		return lp_err_set(e, ESTALE, "%s: recorded for other images: it lists %llu pages for pid %u, which has %llu lazy pages",
				  name, (unsigned long long)wp->n, t->pid, (unsigned long long)ranges_remaining(r));
	}
	t->runs = malloc(wp->n * sizeof(*t->runs));
	if (!t->runs)
		return lp_err_set(e, ENOMEM, "%s: pid %u: out of memory for %llu pages", name, t->pid,
				  (unsigned long long)wp->n);
	t->nruns = t->next = 0;
	for (i = 0; i < wp->n; i++) {
		uint64_t a = wp->pages[i].vaddr;

		if (!ranges_lookup(r, a, &img) || img != a) {
			missing++;
			continue;
		}
		g[ng++] = a;
		kept++;
		if (ng == WS_GROUP_PAGES) {
			add_group(t, g, ng, w->psz);
			ng = 0;
		}
	}
	if (ng)
		add_group(t, g, ng, w->psz);
	if (missing * 2 > wp->n) {
		free(t->runs);
		t->runs = NULL;
		t->nruns = 0;
		pthread_mutex_lock(&w->lock);
		w->bad = true;
		pthread_mutex_unlock(&w->lock);
		return lp_err_set(e, ESTALE,
				  "%s: recorded for other images: %llu of the %llu pages it lists for pid %u are not lazy pages of its pagemap%s",
				  name, (unsigned long long)missing, (unsigned long long)wp->n, t->pid,
				  differs ? " (whose layout differs from the recording's)" : "");
	}
	atomic_fetch_add(&w->planned, kept);
	atomic_store(&t->pending, t->nruns > 0);
	if (!missing)
		return 0;
	lp_err_set(e, 0, "%s: pid %u: %llu of %llu recorded pages are no longer in the images%s; replaying the other %llu",
		   name, t->pid, (unsigned long long)missing, (unsigned long long)wp->n,
		   differs ? " (they were dumped again)" : "", (unsigned long long)kept);
	return 1;
}

bool ws_pending(const struct ws_track *t)
{
	return t && atomic_load_explicit(&t->pending, memory_order_relaxed);
}

bool ws_next(struct ws_track *t, uint64_t max, uint64_t *addr, uint64_t *nr_pages)
{
	struct run *r;
	bool ok = false;

	pthread_mutex_lock(&t->lock);
	if (t->nback && atomic_load(&t->pending)) {
		r = &t->back[t->nback - 1];
		*addr = r->addr;
		*nr_pages = r->nr_pages < max ? r->nr_pages : max;
		r->addr += *nr_pages * t->w->psz;
		r->nr_pages -= *nr_pages;
		if (!r->nr_pages)
			t->nback--;
		pthread_mutex_unlock(&t->lock);
		return true;
	}
	if (t->next < t->nruns && atomic_load(&t->pending)) {
		r = &t->runs[t->next];
		*addr = r->addr;
		*nr_pages = r->nr_pages < max ? r->nr_pages : max;
		r->addr += *nr_pages * t->w->psz;
		r->nr_pages -= *nr_pages;
		if (!r->nr_pages)
			t->next++;
		ok = true;
	}
	if (t->next >= t->nruns && !t->nback)
		atomic_store(&t->pending, false);
	pthread_mutex_unlock(&t->lock);
	return ok;
}

void ws_unnext(struct ws_track *t, uint64_t addr, uint64_t nr_pages)
{
	pthread_mutex_lock(&t->lock);
	/* more given back at once than fit: the ordinary fill and faults get those pages */
	if (nr_pages && t->nback < sizeof(t->back) / sizeof(t->back[0])) {
		t->back[t->nback].addr = addr;
		t->back[t->nback].nr_pages = nr_pages;
		t->nback++;
		atomic_store(&t->pending, true);
	}
	pthread_mutex_unlock(&t->lock);
}

void ws_count(struct ws_track *t, uint64_t nr_pages)
{
	atomic_fetch_add_explicit(&t->w->read, nr_pages, memory_order_relaxed);
}

void ws_figures(struct ws *w, struct ws_figures *o)
{
	memset(o, 0, sizeof(*o));
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	o->replay = w->replay;
	o->record = w->record;
	o->recorded = w->recorded;
	pthread_mutex_unlock(&w->lock);
	o->planned = atomic_load(&w->planned);
	o->read = atomic_load(&w->read);
}
