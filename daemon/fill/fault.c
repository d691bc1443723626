/* SPDX-License-Identifier: MIT */
/* fault: per-thread epoll over uffds; a fault's own page is placed before anything else. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fault.h"
#include "fill.h"
#include "io.h"
#include "log.h"
#include "proc.h"
#include "source.h"
#include "stats.h"
#include "workq.h"
#include "ws.h"

#define FAULT_BATCH 128

/* epoll data of the thread's own fds (a process's is its struct proc) */
static char tag_stop, tag_new, tag_retry;

/* The state of a read in flight: its completion may come before source_submit returns, or after. */
enum { REQ_SUBMITTING, REQ_SUBMITTED, REQ_DONE_EARLY };

struct fault_req {
	struct source_req r;		/* first: source_req* and fault_req* convert */
	struct fault_req *next;		/* free list, retry queue */
	struct fault_thread *t;
	struct proc *p;
	uint64_t addr;			/* where the read's pages go */
	uint64_t t0;			/* when the fault was read */
	int own;			/* the fault's own page (else the rest of its window) */
	atomic_int state;
	int ret;			/* the placement's result, for the submitter */
};

struct fault_thread {
	const struct fill *f;
	pthread_t tid;
	int started;
	int epfd;
	int stopfd;			/* eventfd: stop */
	int retryfd;			/* eventfd: retry has faults */
	unsigned window;
	pthread_mutex_t lock;		/* free, retry */
	struct fault_req *free;		/* requests with a buffer of WINDOW pages */
	struct fault_req *retry;	/* replies that could not be placed: serve again */
	uint64_t addr[FAULT_BATCH];	/* faults read and not yet served */
	uint64_t t0[FAULT_BATCH];
};

struct fault_pool {
	const struct fill *f;
	int n;
	struct fault_thread *t;
};

static struct fault_req *req_get(struct fault_thread *t)
{
	struct fault_req *q;

	pthread_mutex_lock(&t->lock);
	q = t->free;
	if (q)
		t->free = q->next;
	pthread_mutex_unlock(&t->lock);
	if (q)
		return q;
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->r.buf = io_page_alloc(t->window * t->f->psz);
	if (!q->r.buf) {
		free(q);
		return NULL;
	}
	q->t = t;
	return q;
}

static void req_put(struct fault_req *q)
{
	struct fault_thread *t = q->t;

	pthread_mutex_lock(&t->lock);
	q->next = t->free;
	t->free = q;
	pthread_mutex_unlock(&t->lock);
}

static void req_free_list(struct fault_req *q)
{
	struct fault_req *next;

	for (; q; q = next) {
		next = q->next;
		free(q->r.buf);
		free(q);
	}
}

/* Places a completed read. 0: the fault is served (or the rest placed), else as proc_place_fault. */
static int req_place(struct fault_req *q, uint64_t nr_pages, const struct lp_err *e)
{
	const struct fill *f = q->t->f;
	uint64_t stop;
	int ret;

	if (e) {
		workq_fail(f->q, "pid %d: fault at 0x%llx: %s", proc_pid(q->p), (unsigned long long)q->addr, e->msg);
		return -EIO;
	}
	if (!q->own) {
		/* the rest of the window: a hint, whatever stops it */
		ret = proc_place_section(q->p, q->addr, q->r.img, nr_pages, nr_pages, q->r.buf, &stop);
		return ret == -ESRCH ? ret : 0;
	}
	proc_unpick(q->p, q->addr, 0);
	ret = proc_place_fault(q->p, q->addr, q->r.img, nr_pages, q->r.buf);
	if (!ret)
		proc_fault_served(q->p, q->t0);
	return ret;
}

/* A reply placed on a receiver thread: what could not be done goes back to the fault thread. */
static void req_done(struct source_req *r, uint64_t nr_pages, const struct lp_err *e)
{
	struct fault_req *q = (struct fault_req *)r;
	struct fault_thread *t = q->t;
	int expect = REQ_SUBMITTING, ret;
	uint64_t one = 1;

	ret = req_place(q, nr_pages, e);
	q->ret = ret;
	if (atomic_compare_exchange_strong(&q->state, &expect, REQ_DONE_EARLY))
		return;		/* the submitter takes it from here */
	if (ret == 1 || ret == -EAGAIN) {
		pthread_mutex_lock(&t->lock);
		q->next = t->retry;
		t->retry = q;
		pthread_mutex_unlock(&t->lock);
		if (write(t->retryfd, &one, sizeof(one)) < 0)
			log_warn("fault thread: eventfd: %s", strerror(errno));
		return;
	}
	if (ret == -ESRCH)
		workq_finish(t->f->q, q->p, PROC_GONE);
	else if (ret < 0 && ret != -EIO)
		workq_fail(t->f->q, "pid %d: serving fault at 0x%llx: %s", proc_pid(q->p), (unsigned long long)q->addr,
			   strerror(-ret));
	else if (proc_live(q->p) && proc_remaining(q->p) == 0)
		workq_finish(t->f->q, q->p, PROC_DONE);
	req_put(q);
}

/*
 * Submits one read. Returns 1 if its completion is (or will be) handled
 * on another thread, else the placement's result (the source answered
 * before submit returned).
 */
static int submit(struct fault_thread *t, struct proc *p, uint64_t addr, uint64_t img, uint64_t n, int own,
		  uint64_t t0)
{
	struct fault_req *q = req_get(t);
	struct proc_info pi;
	int expect = REQ_SUBMITTING, ret;

	if (!q)
		return -ENOMEM;
	proc_info(p, &pi);
	q->p = p;
	q->addr = addr;
	q->t0 = t0;
	q->own = own;
	q->r.pm = pi.pm;
	q->r.img_pid = pi.img_pid;
	q->r.img = img;
	q->r.nr_pages = n;
	q->r.urgent = 1;
	q->r.done = req_done;
	atomic_store(&q->state, REQ_SUBMITTING);
	source_submit(t->f->src, &q->r);
	if (atomic_compare_exchange_strong(&q->state, &expect, REQ_SUBMITTED))
		return 1;
	ret = q->ret;
	req_put(q);
	return ret == 1 ? 1 + own : ret;	/* 2: the fault's page moved; ask again */
}

/* Serves the fault at ADDR: 0 (or on its way), -EAGAIN (after the next event), -ESRCH, -errno. */
static int serve(struct fault_thread *t, struct proc *p, uint64_t addr, uint64_t t0)
{
	uint64_t psz = t->f->psz, img, n;
	int tries, ret;

	for (tries = 0; tries < 16; tries++) {
		if (!proc_fault_run(p, addr, t->window, &img, &n)) {
			/* not lazy: a zero page (dropped), or present already (EEXIST) */
			ret = proc_place_fault(p, addr, 0, 0, NULL);
			if (!ret)
				proc_fault_served(p, t0);
			return ret;
		}
		/* a first touch: the page was lazy (--ws-record; nothing but a load otherwise) */
		if (!tries)
			ws_touch(proc_ws(p), img, n, t0);
		ret = submit(t, p, addr, img, 1, 1, t0);
		if (ret == 2)
			continue;	/* moved between the look-up and the COPY: look again */
		if (ret == 1)
			ret = 0;
		if (ret || n == 1)
			return ret;
		/* the rest of the window; the fault is served whatever becomes of it */
		ret = submit(t, p, addr + psz, img + psz, n - 1, 0, t0);
		return ret == -ESRCH ? ret : 0;
	}
	return -EAGAIN;
}

/*
 * Reads P's uffd and serves what it read, with NSEED faults already
 * pending (t->addr[0..]). A fault that meets EAGAIN (a layout event
 * queued behind it) is kept and served again after the event is read and
 * applied: a fault is never dropped.
 */
static void fault_serve(struct fault_thread *t, struct proc *p, int nseed)
{
	const struct fill *f = t->f;
	struct proc *children[PROC_MAX_MSGS];
	int np = nseed, more, n, i, k, again, nch;
	struct lp_err e;
	uint64_t now;

	for (;;) {
		n = proc_read(p, t->addr + np, FAULT_BATCH - np, &more, children, &nch, &e);
		for (i = 0; i < nch; i++)
			if (workq_add(f->q, children[i], false, &e) == 0)
				log_info("pid %d: forked a child", proc_pid(p));
		if (n == -ENOENT)
			return;		/* ended by another thread */
		if (n == -EPIPE) {
			workq_finish(f->q, p, PROC_GONE);
			return;
		}
		if (n < 0) {
			workq_fail(f->q, "%s", e.msg);
			return;
		}
		now = stats_now_ns();
		for (i = np; i < np + n; i++)
			t->t0[i] = now;
		np += n;
		again = 0;
		for (i = 0, k = 0; i < np; i++) {
			int ret = serve(t, p, t->addr[i], t->t0[i]);

			if (ret == -EAGAIN) {
				t->addr[k] = t->addr[i];
				t->t0[k++] = t->t0[i];
				again = 1;
			} else if (ret == -ESRCH) {
				workq_finish(f->q, p, PROC_GONE);
				return;
			} else if (ret < 0) {
				if (ret != -EIO)
					workq_fail(f->q, "pid %d: serving fault at 0x%llx: %s", proc_pid(p),
						   (unsigned long long)t->addr[i], strerror(-ret));
				return;
			}
		}
		np = k;
		if (proc_live(p) && proc_remaining(p) == 0 && !np)
			workq_finish(f->q, p, PROC_DONE);
		if (!np && !more)
			return;
		if (again && !n)
			sched_yield();	/* the event is being queued right now */
	}
}

static void take_new(struct fault_thread *t)
{
	struct proc *p;
	int ret;

	while ((p = workq_take_new(t->f->q))) {
		ret = proc_watch(p, t->epfd);
		if (ret)
			workq_fail(t->f->q, "pid %d: epoll: %s", proc_pid(p), strerror(-ret));
		else
			fault_serve(t, p, 0);	/* faults may have come before it was watched */
	}
}

static void take_retry(struct fault_thread *t)
{
	struct fault_req *q, *next;
	uint64_t v;

	if (read(t->retryfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("fault thread: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&t->lock);
	q = t->retry;
	t->retry = NULL;
	pthread_mutex_unlock(&t->lock);
	for (; q; q = next) {
		next = q->next;
		t->addr[0] = q->addr;
		t->t0[0] = q->t0;
		if (proc_live(q->p))
			fault_serve(t, q->p, 1);
		req_put(q);
	}
}

static void *fault_main(void *arg)
{
	struct fault_thread *t = arg;
	struct epoll_event ev[64];
	int n, i;

	for (;;) {
		n = epoll_wait(t->epfd, ev, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			workq_fail(t->f->q, "fault thread: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == &tag_stop)
				return NULL;
			if (ev[i].data.ptr == &tag_new)
				take_new(t);
			else if (ev[i].data.ptr == &tag_retry)
				take_retry(t);
			else
				fault_serve(t, ev[i].data.ptr, 0);
		}
	}
}

static int add_fd(int epfd, int fd, void *tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

struct fault_pool *fault_pool_new(const struct fill *f, int nthreads, struct lp_err *e)
{
	struct fault_pool *fp = calloc(1, sizeof(*fp));
	struct fault_req *q;
	int i, ret;

	if (!fp) {
		lp_err_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	fp->f = f;
	fp->t = calloc((size_t)nthreads, sizeof(*fp->t));
	if (!fp->t) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	fp->n = nthreads;
	for (i = 0; i < nthreads; i++) {
		fp->t[i].epfd = fp->t[i].stopfd = fp->t[i].retryfd = -1;
		pthread_mutex_init(&fp->t[i].lock, NULL);
	}
	for (i = 0; i < nthreads; i++) {
		struct fault_thread *t = &fp->t[i];

		t->f = f;
		t->window = f->fault_around ? f->fault_around : 1;
		errno = 0;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		t->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		t->retryfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->epfd < 0 || t->stopfd < 0 || t->retryfd < 0 || add_fd(t->epfd, t->stopfd, &tag_stop) < 0 ||
		    add_fd(t->epfd, t->retryfd, &tag_retry) < 0 ||
		    add_fd(t->epfd, workq_eventfd(f->q), &tag_new) < 0) {
			lp_err_set(e, errno, "fault thread setup: %s", strerror(errno));
			goto fail;
		}
		/* a buffer and its pages now, not in the first fault */
		q = req_get(t);
		if (!q) {
			lp_err_set(e, ENOMEM, "fault thread: out of memory");
			goto fail;
		}
		memset(q->r.buf, 0, t->window * f->psz);
		req_put(q);
		ret = pthread_create(&t->tid, NULL, fault_main, t);
		if (ret) {
			lp_err_set(e, ret, "fault thread: %s", strerror(ret));
			goto fail;
		}
		t->started = 1;
	}
	return fp;
fail:
	fault_pool_free(fp);
	return NULL;
}

void fault_pool_stop(struct fault_pool *fp)
{
	uint64_t one = 1;
	int i;

	for (i = 0; fp && fp->t && i < fp->n; i++) {
		struct fault_thread *t = &fp->t[i];

		if (t->started) {
			if (write(t->stopfd, &one, sizeof(one)) < 0)
				log_warn("fault thread stop: %s", strerror(errno));
			pthread_join(t->tid, NULL);
			t->started = 0;
		}
	}
}

void fault_pool_free(struct fault_pool *fp)
{
	int i;

	if (!fp)
		return;
	fault_pool_stop(fp);
	for (i = 0; fp->t && i < fp->n; i++) {
		struct fault_thread *t = &fp->t[i];

		if (t->epfd >= 0)
			close(t->epfd);
		if (t->stopfd >= 0)
			close(t->stopfd);
		if (t->retryfd >= 0)
			close(t->retryfd);
		req_free_list(t->free);
		req_free_list(t->retry);
		pthread_mutex_destroy(&t->lock);
	}
	free(fp->t);
	free(fp);
}
