/* SPDX-License-Identifier: MIT */
/* prefetch: background fill, racing the fault threads on the same uffds (EEXIST is success). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "prefetch.h"
#include "proc.h"
#include "ranges.h"
#include "session.h"
#include "source.h"
#include "stats.h"

struct prefetch_thread {
	struct prefetch_pool *pool;
	pthread_t tid;
	int started;
	unsigned cursor;		/* round-robin position in the session's processes */
	int spare;			/* works only while no process faults (a core of the faulting ones) */
	uint8_t *buf;
};

struct prefetch_pool {
	struct session *s;
	uint64_t chunk, sub;
	long ncpu;
	int n;
	struct prefetch_thread *t;
};

static void prefetch_one(struct prefetch_thread *t, struct proc *p)
{
	struct session *s = t->pool->s;
	uint64_t psz = session_page_size(s), hint, stop;
	struct lp_err e;
	struct rrun run;
	int ok, ret;

	pthread_mutex_lock(&p->lock);
	hint = atomic_exchange(&p->hint, 0);
	ok = ranges_next(p->ranges, hint ? hint : p->cursor, t->pool->chunk, &run);
	if (ok)
		p->cursor = run.addr + run.nr_pages * psz;	/* the next thread takes the next chunk */
	pthread_mutex_unlock(&p->lock);
	if (!ok) {
		proc_finish(p, PROC_DONE);
		return;
	}
	proc_bg_yield();
	ret = source_read(session_source(s), p->pm, run.img, run.nr_pages, t->buf, &e);
	if (ret) {
		session_fail(s, "pid %d: prefetch of 0x%llx (+%llu pages): %s", p->pid,
			     (unsigned long long)run.addr, (unsigned long long)run.nr_pages, e.msg);
		return;
	}
	ret = proc_place_run(p, run.addr, run.img, run.nr_pages, t->buf, t->pool->sub, &stop);
	if (ret == -EAGAIN) {
		/* come back here once the event has been read */
		pthread_mutex_lock(&p->lock);
		p->cursor = stop;
		pthread_mutex_unlock(&p->lock);
	}
	if (ret == -EAGAIN) {
		sched_yield();
		return;
	}
	if (ret == -ESRCH) {
		proc_finish(p, PROC_GONE);
		return;
	}
	if (ret) {
		session_fail(s, "pid %d: prefetch at 0x%llx: %s", p->pid, (unsigned long long)run.addr,
			     strerror(-ret));
		return;
	}
	if (atomic_load(&p->remaining) == 0)
		proc_finish(p, PROC_DONE);
}

/*
 * Threads that want a CPU now, this one included (/proc/loadavg's fourth
 * field, "runnable/total"); 0 if it cannot be read.
 */
static long runnable(int fd)
{
	char b[128], *p;
	ssize_t n = fd >= 0 ? pread(fd, b, sizeof(b) - 1, 0) : -1;
	long r = 0;

	if (n <= 0)
		return 0;
	b[n] = 0;
	p = strchr(b, '/');
	if (!p)
		return 0;
	while (p > b && p[-1] >= '0' && p[-1] <= '9')
		p--;
	while (*p >= '0' && *p <= '9')
		r = r * 10 + (*p++ - '0');
	return r;
}

/*
 * A spare thread has a core only while nothing else wants it: no process
 * of the session faulted lately and no more threads are runnable than
 * there are cores (the restored processes running flat out, or anything
 * else on the machine, come first).
 */
static int spare_may_run(struct prefetch_thread *t, int loadfd)
{
	if (stats_within(&session_stats(t->pool->s)->fault_ns, PROC_BUSY_NS))
		return 0;
	return runnable(loadfd) <= t->pool->ncpu;
}

static void *prefetch_main(void *arg)
{
	struct prefetch_thread *t = arg;
	int loadfd = t->spare ? open("/proc/loadavg", O_RDONLY | O_CLOEXEC) : -1;
	struct proc *p;

	while ((p = session_next_work(t->pool->s, &t->cursor))) {
		if (t->spare && !spare_may_run(t, loadfd)) {
			usleep(1000);
			continue;
		}
		prefetch_one(t, p);
	}
	if (loadfd >= 0)
		close(loadfd);
	return NULL;
}

struct prefetch_pool *prefetch_pool_new(struct session *s, int nthreads, uint64_t chunk, uint64_t sub,
					struct lp_err *e)
{
	struct prefetch_pool *pp = calloc(1, sizeof(*pp));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int i;

	if (!pp)
		return NULL;
	pp->s = s;
	pp->ncpu = ncpu > 0 ? ncpu : 1;
	pp->chunk = chunk;
	pp->sub = sub ? sub : chunk;
	pp->n = nthreads;
	pp->t = calloc((size_t)nthreads, sizeof(*pp->t));
	if (!pp->t)
		goto fail;
	for (i = 0; i < nthreads; i++) {
		pp->t[i].pool = pp;
		pp->t[i].cursor = (unsigned)i;
		pp->t[i].spare = i > 0 && i >= ncpu - 1;
		pp->t[i].buf = io_page_alloc(chunk * session_page_size(s));
		if (!pp->t[i].buf) {
			lp_err_set(e, ENOMEM, "prefetch buffer of %llu pages", (unsigned long long)chunk);
			goto fail;
		}
		/* its pages now, not in the first chunk after the marker, when the processes resume */
		memset(pp->t[i].buf, 0, chunk * session_page_size(s));
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

void prefetch_pool_free(struct prefetch_pool *pp)
{
	int i;

	if (!pp)
		return;
	/* session_stop_work() has made session_next_work return NULL */
	for (i = 0; pp->t && i < pp->n; i++) {
		if (pp->t[i].started)
			pthread_join(pp->t[i].tid, NULL);
		free(pp->t[i].buf);
	}
	free(pp->t);
	free(pp);
}
