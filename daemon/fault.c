/* SPDX-License-Identifier: MIT */
/* fault: per-thread epoll over uffds; a fault's own page is copied before anything else. */
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
#include "io.h"
#include "log.h"
#include "proc.h"
#include "ranges.h"
#include "remote.h"
#include "session.h"
#include "source.h"
#include "stats.h"

#define FAULT_BATCH 128

struct fault_thread {
	struct fault_pool *pool;
	pthread_t tid;
	int started;
	int epfd;
	int stopfd;			/* eventfd: stop */
	atomic_int load;		/* processes watched */
	uint8_t *buf;			/* window pages */
	uint64_t addr[FAULT_BATCH];	/* faults read and not yet served */
	uint64_t t0[FAULT_BATCH];
};

struct fault_pool {
	struct session *s;
	unsigned window;
	int n;
	struct fault_thread *t;
};

/*
 * Fault-around pays when the process reads on from where it faulted, and
 * costs when it does not: a random reader faults again within microseconds
 * and waits behind the window's COPY. So the window follows the faults:
 * the whole window when this fault is near the last one, else one page.
 */
static unsigned fault_window(struct fault_thread *t, struct proc *p, uint64_t addr, uint64_t psz)
{
	uint64_t w = t->pool->window, last = p->last_fault;

	p->last_fault = addr;
	if (w > 1 && last && addr + w * psz >= last && addr <= last + 2 * w * psz)
		return (unsigned)w;
	return 1;
}

/* Serves one fault: its page first, then the window after it. */
static int fault_one(struct fault_thread *t, struct proc *p, uint64_t addr, uint64_t t0)
{
	struct session *s = t->pool->s;
	uint64_t psz = session_page_size(s);
	struct lp_err e;
	struct rrun run;
	int in, ret;

	pthread_rwlock_rdlock(&p->evlock);
	if (!proc_live(p)) {
		pthread_rwlock_unlock(&p->evlock);
		return 0;
	}
	pthread_mutex_lock(&p->lock);
	in = ranges_run(p->ranges, addr, fault_window(t, p, addr, psz), &run);
	pthread_mutex_unlock(&p->lock);
	if (!in) {
		ret = proc_zero_fault(p, addr);
		goto out;
	}
	if (session_remote(s)) {
		/* the reply wakes the thread; its latency is counted when it lands */
		ret = remote_fault(session_remote(s), p, addr, &run, t0);
		pthread_rwlock_unlock(&p->evlock);
		return ret;
	}
	ret = source_read(session_source(s), p->pm, run.img, 1, t->buf, &e);
	if (ret) {
		session_fail(s, "pid %d: fault at 0x%llx: %s", p->pid, (unsigned long long)addr, e.msg);
		goto out;
	}
	ret = proc_fill(p, addr, 1, t->buf);
	if (ret)
		goto out;
	proc_fault_served(p, t0);
	atomic_store_explicit(&p->hint, addr + run.nr_pages * psz, memory_order_relaxed);
	if (run.nr_pages > 1) {
		ret = source_read(session_source(s), p->pm, run.img + psz, run.nr_pages - 1, t->buf, &e);
		if (ret) {
			session_fail(s, "pid %d: fault-around at 0x%llx: %s", p->pid,
				     (unsigned long long)addr + psz, e.msg);
			goto out;
		}
		ret = proc_fill(p, addr + psz, run.nr_pages - 1, t->buf);
		if (ret == -EAGAIN)
			ret = 0;	/* the fault itself is served; the rest stays lazy */
	}
	pthread_rwlock_unlock(&p->evlock);
	return ret;
out:
	if (!ret && !in)
		proc_fault_served(p, t0);
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

/*
 * Reads P's uffd and serves what it read. A fault that meets EAGAIN (a
 * layout event queued behind it) is kept and retried after the event is
 * read and applied: a fault is never dropped.
 */
static void fault_serve(struct fault_thread *t, struct proc *p)
{
	struct session *s = t->pool->s;
	int np = 0, more, n, i, k, again;
	struct lp_err e;
	uint64_t now;

	for (;;) {
		proc_lock_reader(p);
		if (!proc_live(p)) {
			proc_unlock_reader(p);
			return;
		}
		n = proc_drain(p, t->addr + np, FAULT_BATCH - np, &more, &e);
		proc_unlock_reader(p);
		if (n == -EPIPE) {
			proc_finish(p, PROC_GONE);
			return;
		}
		if (n < 0) {
			session_fail(s, "%s", e.msg);
			return;
		}
		now = stats_now_ns();
		if (n > 0) {
			atomic_store_explicit(&p->fault_ns, now, memory_order_relaxed);
			atomic_store_explicit(&session_stats(s)->fault_ns, now, memory_order_relaxed);
		}
		for (i = np; i < np + n; i++)
			t->t0[i] = now;
		np += n;
		again = 0;
		for (i = 0, k = 0; i < np; i++) {
			int ret = fault_one(t, p, t->addr[i], t->t0[i]);

			if (ret == -EAGAIN) {
				t->addr[k] = t->addr[i];
				t->t0[k++] = t->t0[i];
				again = 1;
			} else if (ret == -ESRCH) {
				proc_finish(p, PROC_GONE);
				return;
			} else if (ret < 0) {
				session_fail(s, "pid %d: serving fault at 0x%llx: %s", p->pid,
					     (unsigned long long)t->addr[i], strerror(-ret));
				return;
			}
		}
		np = k;
		if (atomic_load(&p->remaining) == 0 && !np)
			proc_finish(p, PROC_DONE);
		if (!np && !more)
			return;
		if (again && !n)
			sched_yield();	/* the event is being queued right now */
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
			session_fail(t->pool->s, "fault thread: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		for (i = 0; i < n; i++) {
			if (!ev[i].data.ptr)
				return NULL;	/* stop */
			fault_serve(t, ev[i].data.ptr);
		}
	}
}

struct fault_pool *fault_pool_new(struct session *s, int nthreads, unsigned window, struct lp_err *e)
{
	struct fault_pool *fp = calloc(1, sizeof(*fp));
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	int i, ret;

	if (!fp)
		return NULL;
	fp->s = s;
	fp->window = window ? window : 1;
	fp->t = calloc((size_t)nthreads, sizeof(*fp->t));
	if (!fp->t)
		goto fail;
	fp->n = nthreads;
	for (i = 0; i < nthreads; i++)
		fp->t[i].epfd = fp->t[i].stopfd = -1;
	for (i = 0; i < nthreads; i++) {
		struct fault_thread *t = &fp->t[i];

		t->pool = fp;
		errno = 0;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		t->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		t->buf = io_page_alloc(fp->window * session_page_size(s));
		if (t->buf)	/* its pages now, not in the first fault */
			memset(t->buf, 0, fp->window * session_page_size(s));
		if (t->epfd < 0 || t->stopfd < 0 || !t->buf ||
		    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->stopfd, &ev) < 0) {
			lp_err_set(e, errno ? errno : ENOMEM, "fault thread setup: %s", strerror(errno));
			goto fail;
		}
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

void fault_pool_free(struct fault_pool *fp)
{
	uint64_t one = 1;
	int i;

	if (!fp)
		return;
	for (i = 0; fp->t && i < fp->n; i++) {
		struct fault_thread *t = &fp->t[i];

		if (t->started) {
			if (write(t->stopfd, &one, sizeof(one)) < 0)
				log_warn("fault thread stop: %s", strerror(errno));
			pthread_join(t->tid, NULL);
		}
		if (t->epfd >= 0)
			close(t->epfd);
		if (t->stopfd >= 0)
			close(t->stopfd);
		free(t->buf);
	}
	free(fp->t);
	free(fp);
}

int fault_watch(struct fault_pool *fp, struct proc *p)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
	struct fault_thread *best = &fp->t[0];
	int i;

	for (i = 1; i < fp->n; i++)
		if (atomic_load(&fp->t[i].load) < atomic_load(&best->load))
			best = &fp->t[i];
	p->fault_thread = best;
	if (epoll_ctl(best->epfd, EPOLL_CTL_ADD, p->uffd, &ev) < 0)
		return -errno;
	atomic_fetch_add(&best->load, 1);
	return 0;
}

void fault_unwatch(struct proc *p)
{
	struct fault_thread *t = p->fault_thread;

	if (!t || p->uffd < 0)
		return;
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, p->uffd, NULL);
	atomic_fetch_sub(&t->load, 1);
	p->fault_thread = NULL;
}
