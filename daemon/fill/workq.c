/* SPDX-License-Identifier: MIT */
/* workq: the registry of a session's processes, the background threads' next job, and the session's end. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fill.h"
#include "log.h"
#include "persist.h"
#include "stats.h"
#include "workq.h"
#include "ws.h"

struct workq {
	const struct fill *f;
	uint32_t max_procs;
	int efd;			/* processes added, not yet watched */

	pthread_mutex_t lock;
	pthread_cond_t work_cv;		/* background threads: work, an item, or stop */
	pthread_cond_t done_cv;		/* the session: a process ended, or failure */
	struct proc **procs;		/* every process, in number order of adding */
	size_t nprocs, cap;
	size_t nnew;			/* procs[nprocs - nnew ..] wait for a fault thread, in order */
	struct proc **newq;
	size_t newcap, newhead;
	uint64_t live;
	struct workq_item *head, *tail;	/* items waiting */
	bool started, stopping, failed;
	char fail_msg[512];
};

static void deadline(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ns / 1000000000ull);
	ts->tv_nsec += (long)(ns % 1000000000ull);
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

struct workq *workq_new(const struct fill *f, uint32_t max_procs, struct lp_err *e)
{
	struct workq *q = calloc(1, sizeof(*q));
	pthread_condattr_t ca;

	if (!q) {
		lp_err_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	q->f = f;
	q->max_procs = max_procs;
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		lp_err_set(e, errno, "eventfd: %s", strerror(errno));
		free(q);
		return NULL;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->work_cv, &ca);
	pthread_cond_init(&q->done_cv, &ca);
	pthread_condattr_destroy(&ca);
	return q;
}

void workq_free(struct workq *q)
{
	size_t i;

	if (!q)
		return;
	for (i = 0; i < q->nprocs; i++)
		proc_free(q->procs[i]);
	free(q->procs);
	free(q->newq);
	close(q->efd);
	pthread_cond_destroy(&q->work_cv);
	pthread_cond_destroy(&q->done_cv);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static int grow(struct proc ***a, size_t *cap, size_t need)
{
	struct proc **n;
	size_t c;

	if (need <= *cap)
		return 0;
	c = *cap ? *cap * 2 : 16;
	if (c < need)
		c = need;
	n = realloc(*a, c * sizeof(*n));
	if (!n)
		return -ENOMEM;
	*a = n;
	*cap = c;
	return 0;
}

int workq_add(struct workq *q, struct proc *p, bool kept, struct lp_err *e)
{
	uint64_t one = 1;
	bool live = proc_live(p);
	struct proc_info pi;
	int ret = 0, unkept = 0;

	pthread_mutex_lock(&q->lock);
	if (grow(&q->procs, &q->cap, q->nprocs + 1) ||
	    (live && grow(&q->newq, &q->newcap, q->newhead + q->nnew + 1))) {
		pthread_mutex_unlock(&q->lock);
		/* nowhere to keep it: it cannot be killed by the session either */
		workq_fail(q, "pid %d: out of memory adding it", proc_pid(p));
		return lp_err_set(e, ENOMEM, "pid %d: out of memory adding it", proc_pid(p));
	}
	q->procs[q->nprocs++] = p;
	if (live) {
		q->live++;
		q->newq[q->newhead + q->nnew++] = p;
	}
	if (q->nprocs > q->max_procs)
		ret = -EMFILE;
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
	if (ret) {
		lp_err_set(e, EMFILE, "more than %u processes in one session", q->max_procs);
		workq_fail(q, "%s", e->msg);
		return ret;
	}
	if (live) {
		/*
		 * A uffd the fd store would not keep is lost with the daemon: not
		 * served unprotected. A fork's child that finds no slot is served
		 * all the same (it is found and killed with the others) and fails
		 * the session.
		 */
		proc_info(p, &pi);
		unkept = persist_take_slot(q->f->journal, pi.forked && !kept, 1);
		if (!unkept)
			persist_store_fd(q->f->journal, pi.id, kept ? -1 : proc_uffd(p));
		if (write(q->efd, &one, sizeof(one)) < 0)
			log_warn("workq: eventfd: %s", strerror(errno));
	}
	if (unkept) {
		lp_err_set(e, ENOSPC, "pid %d%s: no room left in the service manager's fd store "
			   "(FileDescriptorStoreMax=) for its userfaultfd: it could not survive a daemon restart",
			   pi.pid, pi.forked ? " (forked child)" : "");
		workq_fail(q, "%s", e->msg);
		return -ENOSPC;
	}
	return 0;
}

int workq_eventfd(struct workq *q)
{
	return q->efd;
}

struct proc *workq_take_new(struct workq *q)
{
	struct proc *p = NULL;
	uint64_t v;

	pthread_mutex_lock(&q->lock);
	if (q->nnew) {
		p = q->newq[q->newhead++];
		q->nnew--;
	}
	if (!q->nnew) {
		q->newhead = 0;
		/* reset the counter while nothing waits: the next add makes it readable again */
		if (read(q->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_warn("workq: eventfd: %s", strerror(errno));
	}
	pthread_mutex_unlock(&q->lock);
	return p;
}

void workq_finish(struct workq *q, struct proc *p, enum proc_state why)
{
	struct proc *children[PROC_MAX_MSGS];
	struct lp_err e;
	int n, i;
	bool ended = proc_finish(p, why, children, &n);

	for (i = 0; i < n; i++)
		if (workq_add(q, children[i], false, &e) == 0)
			log_info("pid %d: forked a child", proc_pid(p));
	if (!ended)
		return;
	pthread_mutex_lock(&q->lock);
	q->live--;
	pthread_cond_broadcast(&q->done_cv);
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
}

void workq_start(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	q->started = true;
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
}

void workq_stop(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->work_cv);
	pthread_cond_broadcast(&q->done_cv);
	pthread_mutex_unlock(&q->lock);
}

void workq_fail(struct workq *q, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&q->lock);
	if (!q->failed) {
		q->failed = true;
		va_start(ap, fmt);
		vsnprintf(q->fail_msg, sizeof(q->fail_msg), fmt, ap);
		va_end(ap);
		log_err("%s", q->fail_msg);
	}
	pthread_cond_broadcast(&q->done_cv);
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
}

const char *workq_failure(struct workq *q)
{
	const char *m;

	pthread_mutex_lock(&q->lock);
	m = q->failed ? q->fail_msg : NULL;	/* written once, before failed is set */
	pthread_mutex_unlock(&q->lock);
	return m;
}

/*
 * A live process with lazy pages: those with a working set left to replay
 * first (ws.h), then those that faulted lately, then round robin. Under lock.
 */
static struct proc *pick(struct workq *q, unsigned *cursor)
{
	size_t n = q->nprocs, k, i;
	uint64_t recent = 0, t;
	struct proc *p, *best = NULL;

	for (k = 0; k < n; k++) {
		i = (*cursor + k) % n;
		p = q->procs[i];
		if (ws_pending(proc_ws(p)) && proc_live(p) && proc_remaining(p)) {
			*cursor = (unsigned)(i + 1);
			return p;
		}
	}
	if (q->f->replay_only)
		return NULL;
	for (k = 0; k < n; k++) {
		p = q->procs[(*cursor + k) % n];
		if (proc_live(p) && proc_remaining(p) && (t = proc_last_fault_ns(p)) > recent) {
			recent = t;
			best = p;
		}
	}
	/* "lately": within the last 10 ms; older faults say nothing about what is read next */
	if (best && stats_now_ns() - recent < 10000000ull)
		return best;
	for (k = 0; k < n; k++) {
		i = (*cursor + k) % n;
		p = q->procs[i];
		if (proc_live(p) && proc_remaining(p)) {
			*cursor = (unsigned)(i + 1);
			return p;
		}
	}
	return NULL;
}

bool workq_next(struct workq *q, unsigned *cursor, bool (*may_read)(void *arg), void *arg, uint64_t wait_ns,
		struct proc **p, struct workq_item **it)
{
	struct timespec ts;
	bool may;

	*p = NULL;
	*it = NULL;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		if (q->stopping || q->failed) {
			pthread_mutex_unlock(&q->lock);
			return false;
		}
		if (q->head) {
			*it = q->head;
			q->head = q->head->next;
			if (!q->head)
				q->tail = NULL;
			break;
		}
		if (!q->started) {
			pthread_cond_wait(&q->work_cv, &q->lock);
			continue;
		}
		may = may_read(arg);
		if (may && (*p = pick(q, cursor)))
			break;
		if (may) {
			/* nothing to read: wait for a process, an item, or the end */
			pthread_cond_wait(&q->work_cv, &q->lock);
			continue;
		}
		/* not allowed to read now: wait for an item, then let the caller look again */
		deadline(&ts, wait_ns);
		if (pthread_cond_timedwait(&q->work_cv, &q->lock, &ts) && !q->head)
			break;
	}
	pthread_mutex_unlock(&q->lock);
	return true;
}

void workq_push(struct workq *q, struct workq_item *it)
{
	it->next = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = it;
	else
		q->head = it;
	q->tail = it;
	pthread_cond_signal(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
}

void workq_kick(struct workq *q)
{
	pthread_mutex_lock(&q->lock);
	pthread_cond_broadcast(&q->work_cv);
	pthread_mutex_unlock(&q->lock);
}

bool workq_wait(struct workq *q, uint64_t wait_ns)
{
	struct timespec ts;
	bool done;

	pthread_mutex_lock(&q->lock);
	if (wait_ns)
		deadline(&ts, wait_ns);
	while (!(done = q->failed || !q->live || q->stopping)) {
		if (!wait_ns)
			pthread_cond_wait(&q->done_cv, &q->lock);
		else if (pthread_cond_timedwait(&q->done_cv, &q->lock, &ts))
			break;
	}
	pthread_mutex_unlock(&q->lock);
	return done;
}

uint64_t workq_live(struct workq *q)
{
	uint64_t n;

	pthread_mutex_lock(&q->lock);
	n = q->live;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void workq_each(struct workq *q, void (*fn)(void *arg, struct proc *p), void *arg)
{
	size_t i;

	pthread_mutex_lock(&q->lock);
	for (i = 0; i < q->nprocs; i++)
		fn(arg, q->procs[i]);
	pthread_mutex_unlock(&q->lock);
}

size_t workq_count(struct workq *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->nprocs;
	pthread_mutex_unlock(&q->lock);
	return n;
}
