/* SPDX-License-Identifier: MIT */
/* prefetch: background fill, racing the fault threads on the same uffds (EEXIST is success). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fill.h"
#include "io.h"
#include "log.h"
#include "prefetch.h"
#include "proc.h"
#include "source.h"
#include "stats.h"
#include "workq.h"
#include "ws.h"

/* Sections never smaller than this (64 KiB): below it a COPY's fixed cost dominates. */
#define SECTION_MIN_PAGES 16
/* No fault for this long: faults have stopped, sections grow to the whole read. */
#define QUIET_NS 20000000ull
/* Buffers of background reads, in flight or waiting to be placed, take this much memory at most. */
#define BUF_BYTES_MAX (16u << 20)

enum { REQ_SUBMITTING, REQ_SUBMITTED, REQ_DONE_EARLY };

/*
 * Runs of a working set (ws.h) one replay read gathers into its buffer:
 * recorded pages come in short runs, and one read each (a buffer of its
 * own) would leave a page server's pipe nearly empty.
 */
#define BG_SEGS 64

struct bg_req;

/* One run of a replay read: its own read into the request's buffer. */
struct bg_seg {
	struct source_req r;
	struct bg_req *q;
	uint64_t addr;			/* run-time address */
	uint64_t got;
};

struct bg_req {
	struct workq_item item;		/* waiting to be placed */
	struct source_req r;
	struct bg_req *next;		/* free list */
	struct bg_req *all;		/* every one the pool made */
	struct prefetch_pool *pool;
	struct proc *p;
	uint64_t addr;
	uint64_t got;			/* pages read */
	int failed;
	struct lp_err e;
	atomic_int state;
	struct bg_seg *seg;		/* a replay read: NSEG runs (allocated at its first) */
	struct source_run *runs;	/* the same as one list read, where the source takes lists */
	unsigned nseg;
	atomic_uint left;		/* runs not yet read, plus one while submitting */
};

struct prefetch_thread {
	struct prefetch_pool *pool;
	pthread_t tid;
	int started;
	unsigned cursor;		/* round-robin position in the session's processes */
	double ns_per_page;		/* COPY cost measured by this thread */
};

struct prefetch_pool {
	const struct fill *f;
	int n;
	struct prefetch_thread *t;
	pthread_mutex_t lock;		/* free, all, nbufs */
	struct bg_req *free;
	struct bg_req *all;		/* freed with the pool, wherever they are then */
	unsigned nbufs, max_bufs;
};

static struct bg_req *buf_get(struct prefetch_pool *pp)
{
	struct bg_req *q;

	pthread_mutex_lock(&pp->lock);
	q = pp->free;
	if (q)
		pp->free = q->next;
	else if (pp->nbufs < pp->max_bufs)
		pp->nbufs++;
	else {
		pthread_mutex_unlock(&pp->lock);
		return NULL;
	}
	pthread_mutex_unlock(&pp->lock);
	if (q)
		return q;
	q = calloc(1, sizeof(*q));
	if (q)
		q->r.buf = io_page_alloc(pp->f->chunk * pp->f->psz);
	if (!q || !q->r.buf) {
		free(q);
		pthread_mutex_lock(&pp->lock);
		pp->nbufs--;
		pthread_mutex_unlock(&pp->lock);
		return NULL;
	}
	q->pool = pp;
	pthread_mutex_lock(&pp->lock);
	q->all = pp->all;
	pp->all = q;
	pthread_mutex_unlock(&pp->lock);
	return q;
}

/* Back to the free list; KICK: a buffer is free again, a waiting thread may read. */
static void buf_back(struct bg_req *q, bool kick)
{
	struct prefetch_pool *pp = q->pool;

	pthread_mutex_lock(&pp->lock);
	q->next = pp->free;
	pp->free = q;
	pthread_mutex_unlock(&pp->lock);
	if (kick)
		workq_kick(pp->f->q);
}

static void buf_put(struct bg_req *q)
{
	buf_back(q, true);
}

static bool buf_available(struct prefetch_pool *pp)
{
	bool ok;

	pthread_mutex_lock(&pp->lock);
	ok = pp->free || pp->nbufs < pp->max_bufs;
	pthread_mutex_unlock(&pp->lock);
	return ok;
}

/* Pages per section: as many as the thread copies in fill.section_ns, more once faults have stopped. */
static uint64_t section_pages(struct prefetch_thread *t, uint64_t left)
{
	const struct fill *f = t->pool->f;
	uint64_t n;

	if (!stats_within(&f->stats->fault_ns, QUIET_NS))
		return left;
	n = t->ns_per_page > 0 ? (uint64_t)((double)f->section_ns / t->ns_per_page) : SECTION_MIN_PAGES;
	return n < SECTION_MIN_PAGES ? SECTION_MIN_PAGES : n;
}

/*
 * Background threads do not sched_yield(): yielding every 100 us (the first
 * engine's rule, tuned on a synthetic reader's fault latency) slowed the fill
 * under a live server by ~1.6x and its requests were no faster for it
 * (redis, 1.5 GiB, local: pages all in 0.55-0.73 s without vs 0.87-1.36 s
 * with; see README "Real applications"). The scheduler's wake-up preemption
 * gives a woken fault thread or restored thread its CPU.
 */

/* Places one run read for image address IMG (GOT pages at B) at ADDR, section by section; *STOP: up to where. */
static int place_run(struct prefetch_thread *t, struct proc *p, uint64_t addr, uint64_t img, uint64_t got,
		     const uint8_t *b, uint64_t *stop_at)
{
	const struct fill *f = t->pool->f;
	uint64_t psz = f->psz, a = addr, end = addr + got * psz, stop, t0, n;
	int ret = 0;

	while (a < end) {
		n = section_pages(t, (end - a) / psz);
		t0 = stats_now_ns();
		ret = proc_place_section(p, a, img + (a - addr), (end - a) / psz, n, b + (a - addr), &stop);
		if (stop > a && !ret) {
			double ns = (double)(stats_now_ns() - t0) / (double)((stop - a) / psz);

			t->ns_per_page = t->ns_per_page > 0 ? 0.8 * t->ns_per_page + 0.2 * ns : ns;
		}
		a = stop;
		if (ret)
			break;
	}
	*stop_at = a;
	return ret;
}

/* Places a completed background read into its process, section by section. */
static void place(struct prefetch_thread *t, struct bg_req *q)
{
	const struct fill *f = t->pool->f;
	struct proc *p = q->p;
	uint64_t psz = f->psz, a = q->addr, off = 0;
	const uint8_t *b = q->r.buf;
	unsigned i;
	int ret = 0;

	if (q->failed) {
		proc_unpick(p, q->addr, 0);
		workq_fail(f->q, "pid %d: background read of 0x%llx (+%llu pages): %s", proc_pid(p),
			   (unsigned long long)q->addr, (unsigned long long)q->r.nr_pages, q->e.msg);
		return;
	}
	if (q->nseg) {
		/* a replay read: what an event stops is left to faults and the ordinary fill */
		for (i = 0; i < q->nseg && !ret; off += q->seg[i].r.nr_pages * psz, i++)
			ret = place_run(t, p, q->seg[i].addr, q->seg[i].r.img, q->seg[i].got, b + off, &a);
	} else {
		ret = place_run(t, p, q->addr, q->r.img, q->got, b, &a);
		/* stopped early (an event to read, a short reply): come back to where it stopped */
		proc_unpick(p, q->addr, a < q->addr + q->r.nr_pages * psz ? a : 0);
	}
	if (ret == -EAGAIN) {
		sched_yield();	/* the uffd reader is about to read the event */
		return;
	}
	if (ret == -ESRCH) {
		workq_finish(f->q, p, PROC_GONE);
		return;
	}
	if (ret) {
		workq_fail(f->q, "pid %d: background fill at 0x%llx: %s", proc_pid(p), (unsigned long long)a,
			   strerror(-ret));
		return;
	}
	if (proc_live(p) && proc_remaining(p) == 0)
		workq_finish(f->q, p, PROC_DONE);
}

/* A run of a replay read is in (or failed): the last one hands the request on to be placed. */
static void seg_done(struct source_req *r, uint64_t nr_pages, const struct lp_err *e)
{
	struct bg_seg *sg = (struct bg_seg *)r;
	struct bg_req *q = sg->q;

	sg->got = nr_pages;
	if (e && !q->failed) {
		q->e = *e;
		q->failed = 1;
	}
	if (atomic_fetch_sub(&q->left, 1) == 1)
		workq_push(q->pool->f->q, &q->item);	/* on a receiver thread: a background thread places it */
}

/* A replay read sent as one list: all its runs are in, or none. */
static void list_done(struct source_req *r, uint64_t nr_pages, const struct lp_err *e)
{
	struct bg_req *q = (struct bg_req *)((char *)r - offsetof(struct bg_req, r));
	struct lp_err e2;
	unsigned i;

	if (!e && nr_pages != r->nr_pages)
		e = &e2, lp_err_set(&e2, EPROTO, "a list read answered with %llu of its %llu pages",
				     (unsigned long long)nr_pages, (unsigned long long)r->nr_pages);
	for (i = 0; i < q->nseg; i++)
		q->seg[i].got = e ? 0 : q->seg[i].r.nr_pages;
	if (e) {
		q->e = *e;
		q->failed = 1;
	}
	if (atomic_fetch_sub(&q->left, 1) == 1)
		workq_push(q->pool->f->q, &q->item);
}

/*
 * Gathers up to BG_SEGS runs of P's working set, in replay order, into Q's
 * buffer (MAX pages in all) and reads them. True if there was any.
 */
static bool replay_read(struct prefetch_thread *t, struct proc *p, struct bg_req *q, uint64_t max)
{
	const struct fill *f = t->pool->f;
	uint64_t addr, img, n, a, k, end, used = 0;
	struct proc_info pi;
	unsigned i;

	if (!q->seg && !(q->seg = calloc(BG_SEGS, sizeof(*q->seg))))
		return false;
	if (!q->runs && !(q->runs = calloc(BG_SEGS, sizeof(*q->runs))))
		return false;
	proc_info(p, &pi);
	q->nseg = 0;
	/* the lazy runs inside the working set's next runs (what does not fit is given back) */
	while (q->nseg < BG_SEGS && used < max && ws_next(proc_ws(p), max - used, &a, &k)) {
		end = a + k * f->psz;
		while (a < end && proc_pick_run(p, a, (end - a) / f->psz, &addr, &img, &n)) {
			struct bg_seg *sg;

			if (q->nseg == BG_SEGS) {
				ws_unnext(proc_ws(p), a, (end - a) / f->psz);
				break;
			}
			sg = &q->seg[q->nseg++];
			sg->q = q;
			sg->addr = addr;
			sg->got = 0;
			sg->r = (struct source_req){ .pm = pi.pm, .img_pid = pi.img_pid, .img = img, .nr_pages = n,
						     .buf = (uint8_t *)q->r.buf + used * f->psz, .done = seg_done };
			used += n;
			a = addr + n * f->psz;
		}
	}
	if (!q->nseg)
		return false;
	ws_count(proc_ws(p), used);
	q->p = p;
	q->addr = q->seg[0].addr;
	q->r.nr_pages = used;
	q->failed = 0;
	if (q->nseg > 1 && source_lists(f->src) >= q->nseg) {
		/* one request for all the runs (lazy-pages-server's list GET) */
		for (i = 0; i < q->nseg; i++) {
			q->runs[i].img = q->seg[i].r.img;
			q->runs[i].nr_pages = q->seg[i].r.nr_pages;
		}
		q->r = (struct source_req){ .pm = pi.pm, .img_pid = pi.img_pid, .img = q->runs[0].img,
					    .nr_pages = used, .buf = q->r.buf, .done = list_done, .runs = q->runs,
					    .nruns = q->nseg };
		atomic_store(&q->left, 2);
		source_submit(f->src, &q->r);
	} else {
		atomic_store(&q->left, q->nseg + 1);
		for (i = 0; i < q->nseg; i++)
			source_submit(f->src, &q->seg[i].r);
	}
	if (atomic_fetch_sub(&q->left, 1) == 1) {
		/* every run is in already (local images): place it on this thread */
		place(t, q);
		buf_put(q);
	}
	return true;
}

static void req_done(struct source_req *r, uint64_t nr_pages, const struct lp_err *e)
{
	struct bg_req *q = (struct bg_req *)((char *)r - offsetof(struct bg_req, r));
	int expect = REQ_SUBMITTING;

	q->got = nr_pages;
	q->failed = e != NULL;
	if (e)
		q->e = *e;
	if (atomic_compare_exchange_strong(&q->state, &expect, REQ_DONE_EARLY))
		return;		/* the submitting thread places it */
	/* on a receiver thread: a background thread places it, the receiver reads on */
	workq_push(q->pool->f->q, &q->item);
}

/* Reads the next run of P and places it (at once, or when the reply comes). */
static void read_one(struct prefetch_thread *t, struct proc *p)
{
	const struct fill *f = t->pool->f;
	uint64_t max = source_chunk(f->src), addr, img, n;
	struct proc_info pi;
	struct bg_req *q;
	int expect = REQ_SUBMITTING;
	bool none;

	if (!max || max > f->chunk)
		max = f->chunk;
	q = buf_get(t->pool);
	if (!q)
		return;
	q->nseg = 0;
	/*
	 * The working set first, but a fault's neighbourhood before it: the
	 * process reads there now (a hot block the recording has later), and
	 * one read there saves the faults on the rest of the block.
	 */
	if (ws_pending(proc_ws(p)) && (f->replay_only || !proc_hinted(p)) && replay_read(t, p, q, max))
		return;
	if (f->replay_only || !proc_pick(p, max, &addr, &img, &n, &none)) {
		buf_back(q, false);
		if (f->replay_only)
			return;
		if (none && proc_remaining(p) == 0)
			workq_finish(f->q, p, PROC_DONE);
		else if (!none)
			sched_yield();	/* all it has left is being read by others */
		return;
	}
	proc_info(p, &pi);
	q->p = p;
	q->addr = addr;
	q->r.pm = pi.pm;
	q->r.img_pid = pi.img_pid;
	q->r.img = img;
	q->r.nr_pages = n;
	q->r.urgent = 0;
	q->r.done = req_done;
	q->r.runs = NULL;
	q->r.nruns = 0;
	atomic_store(&q->state, REQ_SUBMITTING);
	source_submit(f->src, &q->r);
	if (atomic_compare_exchange_strong(&q->state, &expect, REQ_SUBMITTED))
		return;
	place(t, q);
	buf_put(q);
}

/* Another read now? The source's window, and a buffer for it. Asked after the marker, when the source is there. */
static bool may_read(void *arg)
{
	struct prefetch_pool *pp = arg;

	return source_may_send(pp->f->src) && buf_available(pp);
}

static void *prefetch_main(void *arg)
{
	struct prefetch_thread *t = arg;
	const struct fill *f = t->pool->f;
	struct workq_item *it;
	struct proc *p;

	for (;;) {
		/* with the window shut, look again now and then: it opens as replies come */
		if (!workq_next(f->q, &t->cursor, may_read, t->pool, 5000000, &p, &it))
			break;
		if (it) {
			struct bg_req *q = (struct bg_req *)it;

			place(t, q);
			buf_put(q);
		} else if (p) {
			read_one(t, p);
		}
	}
	return NULL;
}

struct prefetch_pool *prefetch_pool_new(const struct fill *f, int nthreads, struct lp_err *e)
{
	struct prefetch_pool *pp = calloc(1, sizeof(*pp));
	struct bg_req *q;
	int i;

	if (!pp) {
		lp_err_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	pp->f = f;
	pp->n = nthreads;
	pthread_mutex_init(&pp->lock, NULL);
	pp->max_bufs = (unsigned)(BUF_BYTES_MAX / (f->chunk * f->psz));
	if (pp->max_bufs < (unsigned)nthreads + 2)
		pp->max_bufs = (unsigned)nthreads + 2;
	pp->t = calloc((size_t)nthreads, sizeof(*pp->t));
	if (!pp->t) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < nthreads; i++) {
		pp->t[i].pool = pp;
		pp->t[i].cursor = (unsigned)i;
		/* a buffer per thread and its pages now, not in the first read after the marker */
		q = buf_get(pp);
		if (!q) {
			lp_err_set(e, ENOMEM, "prefetch buffer of %llu pages", (unsigned long long)f->chunk);
			goto fail;
		}
		memset(q->r.buf, 0, f->chunk * f->psz);
		q->next = pp->free;
		pp->free = q;
	}
	return pp;
fail:
	prefetch_pool_free(pp);
	return NULL;
}

void prefetch_pool_start(struct prefetch_pool *pp)
{
	int i, ret;

	if (!pp)
		return;
	for (i = 0; i < pp->n; i++) {
		ret = pthread_create(&pp->t[i].tid, NULL, prefetch_main, &pp->t[i]);
		if (ret) {
			/* fewer threads is slower, not wrong: the faults still get served */
			log_warn("prefetch thread %d: %s", i, strerror(ret));
			continue;
		}
		pp->t[i].started = 1;
	}
}

void prefetch_pool_stop(struct prefetch_pool *pp)
{
	int i;

	for (i = 0; pp && pp->t && i < pp->n; i++)
		if (pp->t[i].started) {
			pthread_join(pp->t[i].tid, NULL);
			pp->t[i].started = 0;
		}
}

void prefetch_pool_free(struct prefetch_pool *pp)
{
	struct bg_req *q, *next;

	if (!pp)
		return;
	prefetch_pool_stop(pp);
	/* the session has closed the source: no read is in flight */
	for (q = pp->all; q; q = next) {
		next = q->all;
		free(q->seg);
		free(q->runs);
		free(q->r.buf);
		free(q);
	}
	free(pp->t);
	pthread_mutex_destroy(&pp->lock);
	free(pp);
}
