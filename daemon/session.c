/* SPDX-License-Identifier: MIT */
/* session: takes CRIU's hand-off, builds each process's lazy ranges and runs it to completion. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "images.h"
#include "log.h"
#include "prefetch.h"
#include "persist.h"
#include "pidfind.h"
#include "proc.h"
#include "ps_wire.h"
#include "remote.h"
#include "ranges.h"
#include "restore_sock.h"
#include "session.h"
#include "source.h"
#include "stats.h"
#include "uffd.h"

struct prep {
	struct ranges *r;		/* until take_live takes it */
	int ret;
	struct lp_err e;
};

struct session {
	struct session_cfg cfg;
	uint64_t psz;
	struct imgdir *dir;
	struct pstree_ent *pstree;
	size_t nr_tasks;
	unsigned char *seen;		/* per pstree entry: its record arrived */
	struct pagemap **pms;		/* per pstree entry, owned (written by the prep thread under lock) */
	struct prep *prep;		/* per pstree entry: what prep_main built, under lock */
	size_t prep_done;		/* entries prep_main is done with, under lock */
	pthread_cond_t prep_cv;
	pthread_t prep_tid;
	int prep_started;
	struct source *src;
	struct stats stats;
	struct fault_pool *faults;
	struct prefetch_pool *prefetch;
	struct remote *remote;
	int lfd, cfd;

	pthread_mutex_t lock;
	pthread_cond_t work_cv;		/* prefetch threads: work or stop */
	pthread_cond_t done_cv;		/* session_serve: a process ended, or failure */
	struct proc **procs;		/* under lock; freed at session_free */
	size_t nprocs, cap;
	size_t live;
	unsigned zombies, forks;
	int started, stopping, failed, cancelled;
	atomic_int phase;
	uid_t allow_uid;
	pid_t peer_pid;			/* the restore (or hand-off) peer, for pidfind */
	int handoff;			/* a non-CRIU hand-off: one process, no images */
	int recovered;			/* rebuilt from the journal: no restore socket */
	int replaying;			/* adding recovered processes: already in the journal */
	unsigned lost;			/* recovered: processes whose uffds were not kept (killed) */
	char lost_msg[256];
	struct persist *persist;	/* not owned */
	struct proc *handoff_proc;
	char fail_msg[512];
	uint64_t t_rstf, t_done;
};

void session_cfg_defaults(struct session_cfg *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->fault_threads = 1;
	/*
	 * COPY is a kernel memcpy: a prefetch thread per core, the last of
	 * them (prefetch.c: spare) working only while no process faults, so
	 * an idle restore fills with every core and a busy one keeps a core
	 * for its own threads and the fault thread.
	 */
	cfg->prefetch_threads = n > 1 ? (int)(n < 8 ? n : 8) : 1;
	cfg->fault_around = 16;
	cfg->chunk_pages = 256;
	cfg->sub_pages = 16;	/* 64 KiB: a fault waits behind one such COPY at most */
	cfg->max_procs = 65536;
	cfg->ps_socket = -1;
	cfg->ps_wire = PS_WIRE_4;
	cfg->ps_timeout_ms = 30000;
}

struct stats *session_stats(struct session *s)
{
	return &s->stats;
}

struct source *session_source(struct session *s)
{
	return s->src;
}

struct remote *session_remote(struct session *s)
{
	return s->remote;
}

uint64_t session_page_size(const struct session *s)
{
	return s->psz;
}

void session_fail(struct session *s, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	if (!s->failed) {
		s->failed = 1;
		va_start(ap, fmt);
		vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
		va_end(ap);
		log_err("%s", s->fail_msg);
	}
	pthread_cond_broadcast(&s->done_cv);
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
}

static struct session *session_alloc(const struct session_cfg *cfg, struct lp_err *e)
{
	struct session *s = calloc(1, sizeof(*s));

	if (!s) {
		lp_err_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	s->cfg = *cfg;
	if (!s->cfg.work_dir)
		s->cfg.work_dir = s->cfg.images_dir;
	s->psz = (uint64_t)sysconf(_SC_PAGESIZE);
	s->lfd = s->cfd = -1;
	s->allow_uid = geteuid();
	atomic_init(&s->phase, SESSION_LISTENING);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_cond_init(&s->done_cv, NULL);
	pthread_cond_init(&s->prep_cv, NULL);
	stats_init(&s->stats);
	return s;
}

struct session *session_new(const struct session_cfg *cfg, struct lp_err *e)
{
	struct session *s = session_alloc(cfg, e);
	int ret;

	if (!s)
		return NULL;
	ret = imgdir_open(cfg->images_dir, &s->dir, e);
	if (ret)
		goto fail;
	ret = imgdir_read_pstree(s->dir, &s->pstree, &s->nr_tasks, e);
	if (ret)
		goto fail;
	if (!s->nr_tasks) {
		lp_err_set(e, EINVAL, "%s/pstree.img: no processes", cfg->images_dir);
		goto fail;
	}
	s->seen = calloc(s->nr_tasks, 1);
	s->pms = calloc(s->nr_tasks, sizeof(*s->pms));
	s->src = source_local_new();
	if (!s->seen || !s->pms || !s->src) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	s->prefetch = prefetch_pool_new(s, cfg->prefetch_threads, cfg->chunk_pages, cfg->sub_pages, e);
	if (!s->prefetch)
		goto fail;
	return s;
fail:
	session_free(s);
	return NULL;
}

/*
 * A hand-off session without its process yet: the memory file (taken,
 * closed on failure too) as the page source, and the lazy ranges of the
 * regions in *RG.
 */
static struct session *handoff_alloc(const struct session_cfg *cfg, int mem_fd, const struct session_region *r,
				     size_t n, struct ranges **rg, struct lp_err *e)
{
	struct session *s = session_alloc(cfg, e);
	struct stat st;
	size_t i;
	int ret;

	*rg = NULL;
	if (!s)
		goto fail;
	s->handoff = 1;
	if (fstat(mem_fd, &st) < 0) {
		lp_err_set(e, errno, "hand-off: the memory file: %s", strerror(errno));
		goto fail;
	}
	s->src = source_raw_new(mem_fd);
	if (!s->src) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	mem_fd = -1;	/* the source has it */
	if (n == 0 || n > SESSION_MAX_REGIONS) {
		lp_err_set(e, EINVAL, "hand-off: %zu regions (1 to %d)", n, SESSION_MAX_REGIONS);
		goto fail;
	}
	*rg = ranges_new();
	if (!*rg) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (r[i].len == 0 || (r[i].addr | r[i].len | r[i].offset) % s->psz ||
		    r[i].addr + r[i].len < r[i].addr || r[i].offset + r[i].len < r[i].offset) {
			lp_err_set(e, EINVAL, "hand-off: region %zu (0x%llx +%llu at offset %llu): not page aligned or wraps",
				   i, (unsigned long long)r[i].addr, (unsigned long long)r[i].len,
				   (unsigned long long)r[i].offset);
			goto fail;
		}
		if (S_ISREG(st.st_mode) && r[i].offset + r[i].len > (uint64_t)st.st_size) {
			lp_err_set(e, EINVAL, "hand-off: region %zu ends at offset %llu, past the memory file's %lld bytes",
				   i, (unsigned long long)(r[i].offset + r[i].len), (long long)st.st_size);
			goto fail;
		}
		ret = ranges_add(*rg, r[i].addr, r[i].addr + r[i].len, r[i].offset);
		if (ret) {
			lp_err_set(e, -ret, "hand-off: region %zu (0x%llx +%llu) overlaps another", i,
				   (unsigned long long)r[i].addr, (unsigned long long)r[i].len);
			goto fail;
		}
	}
	s->prefetch = prefetch_pool_new(s, cfg->prefetch_threads, cfg->chunk_pages, cfg->sub_pages, e);
	if (!s->prefetch)
		goto fail;
	return s;
fail:
	ranges_free(*rg);
	*rg = NULL;
	if (mem_fd >= 0)
		close(mem_fd);
	session_free(s);
	return NULL;
}

struct session *session_new_handoff(const struct session_cfg *cfg, int uffd, int mem_fd,
				    const struct session_region *r, size_t n, int32_t pid, struct lp_err *e)
{
	struct ranges *rg;
	struct session *s;

	if (uffd_check_fd(uffd) < 0) {
		lp_err_set(e, EINVAL, "hand-off: the first fd is not a userfaultfd");
		close(uffd);
		close(mem_fd);
		return NULL;
	}
	s = handoff_alloc(cfg, mem_fd, r, n, &rg, e);
	if (!s) {
		close(uffd);
		return NULL;
	}
	s->handoff_proc = proc_new(s, pid, 0, NULL, uffd, rg);
	if (!s->handoff_proc) {
		lp_err_set(e, ENOMEM, "out of memory");
		session_free(s);
		return NULL;
	}
	return s;
}

size_t session_nr_tasks(const struct session *s)
{
	return s->nr_tasks;
}

void session_allow_uid(struct session *s, uid_t uid)
{
	s->allow_uid = uid;
}

void session_set_persist(struct session *s, struct persist *p)
{
	s->persist = p;
}

struct persist *session_persist(struct session *s)
{
	return s->persist;
}

void session_set_peer(struct session *s, pid_t pid)
{
	s->peer_pid = pid;
}

enum session_phase session_phase(struct session *s)
{
	return atomic_load(&s->phase);
}

int session_cancel(struct session *s)
{
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (atomic_load(&s->phase) != SESSION_LISTENING || s->nprocs)
		ret = -EBUSY;
	else {
		s->cancelled = 1;
		/* wakes the accept() in session_serve */
		if (s->lfd >= 0)
			shutdown(s->lfd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int session_snapshot(struct session *s, struct session_snap *out)
{
	struct stats *st = &s->stats;
	uint64_t end;
	size_t i;

	memset(out, 0, sizeof(*out));
	out->phase = atomic_load(&s->phase);
	out->handoff = s->handoff;
	out->pages_copied = atomic_load(&st->pages_copied);
	out->zero_pages = atomic_load(&st->zero_pages);
	out->faults = atomic_load(&st->faults);
	out->remote_bytes = atomic_load(&st->remote_bytes);
	out->inflight = atomic_load(&st->inflight);
	out->fault_p50_us = (double)hist_quantile(&st->fault, 0.5) / 1e3;
	out->fault_p99_us = (double)hist_quantile(&st->fault, 0.99) / 1e3;
	out->rtt_p50_us = (double)hist_quantile(&st->rtt, 0.5) / 1e3;
	out->rtt_p99_us = (double)hist_quantile(&st->rtt, 0.99) / 1e3;
	pthread_mutex_lock(&s->lock);
	end = s->t_done ? s->t_done : stats_now_ns();
	out->seconds = s->t_rstf ? (double)(end - s->t_rstf) / 1e9 : 0;
	out->procs = calloc(s->nprocs ? s->nprocs : 1, sizeof(*out->procs));
	if (!out->procs) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	for (i = 0; i < s->nprocs; i++) {
		struct proc *p = s->procs[i];
		struct proc_snap *ps = &out->procs[i];

		ps->pid = p->pid;
		ps->total = p->total;
		ps->remaining = atomic_load(&p->remaining);
		ps->faults = atomic_load(&p->faults);
		ps->fault_p99_us = (double)hist_quantile(&p->fault, 0.99) / 1e3;
		ps->state = atomic_load(&p->state);
		ps->forked = p->forked;
	}
	out->nprocs = s->nprocs;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void session_free(struct session *s)
{
	size_t i;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	if (s->prep_started)
		pthread_join(s->prep_tid, NULL);
	for (i = 0; s->prep && i < s->nr_tasks; i++)
		ranges_free(s->prep[i].r);
	free(s->prep);
	remote_close(s->remote, 0, NULL);
	prefetch_pool_free(s->prefetch);
	fault_pool_free(s->faults);
	for (i = 0; i < s->nprocs; i++)
		proc_free(s->procs[i]);
	proc_free(s->handoff_proc);
	free(s->procs);
	for (i = 0; s->pms && i < s->nr_tasks; i++)
		pagemap_close(s->pms[i]);
	free(s->pms);
	free(s->seen);
	source_destroy(s->src);
	pstree_free(s->pstree, s->nr_tasks);
	imgdir_close(s->dir);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->cfd >= 0)
		close(s->cfd);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->done_cv);
	pthread_cond_destroy(&s->prep_cv);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int session_listen(struct session *s, struct lp_err *e)
{
	return restore_sock_listen(s->cfg.work_dir, &s->lfd, e);
}

/*
 * Adds P to the session and to a fault thread. Takes ownership of P.
 * HOST, START: the process in this pid namespace and its start time, if
 * known (0), journaled so that a restarted daemon can find it.
 */
static int session_add_proc(struct session *s, struct proc *p, pid_t host, uint64_t start, struct lp_err *e)
{
	struct proc **np;
	int ret, unkept;

	pthread_mutex_lock(&s->lock);
	if (s->nprocs >= s->cfg.max_procs) {
		pthread_mutex_unlock(&s->lock);
		proc_free(p);
		return lp_err_set(e, EMFILE, "more than %u processes in one session", s->cfg.max_procs);
	}
	if (s->nprocs == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;

		np = realloc(s->procs, cap * sizeof(*np));
		if (!np) {
			pthread_mutex_unlock(&s->lock);
			proc_free(p);
			return lp_err_set(e, ENOMEM, "out of memory");
		}
		s->procs = np;
		s->cap = cap;
	}
	/*
	 * A uffd the fd store would not keep is lost with the daemon: not
	 * served unprotected. A record was given its slot at session add; a
	 * fork's child that finds none is added all the same (its uffd open:
	 * it is found and killed with the others) and fails the session.
	 */
	unkept = persist_take_slot(s->persist, p->forked && !s->replaying, 1);
	p->id = (unsigned)s->nprocs;
	s->procs[s->nprocs++] = p;
	s->live++;
	/* journal order is the order processes are numbered in */
	if (s->replaying)
		;
	else if (p->forked)
		persist_add(s->persist, PREC_FORK, p->id, p->parent_id, 0, persist_ticks());
	else
		persist_add(s->persist, PREC_PROC, p->id, (uint64_t)(int64_t)p->pid, p->img_pid, 0);
	if (host > 0 && !s->replaying)
		persist_add(s->persist, PREC_HOST, p->id, (uint64_t)host, start, 0);
	pthread_mutex_unlock(&s->lock);
	/* a restarted daemon was given it back: it is in the store already */
	if (!unkept)
		persist_store_fd(s->persist, p->id, s->replaying ? -1 : p->uffd);

	/* from here on the session owns P: failures end it through proc_finish */
	pthread_rwlock_wrlock(&p->evlock);
	ret = fault_watch(s->faults, p);
	pthread_rwlock_unlock(&p->evlock);
	if (ret) {
		lp_err_set(e, -ret, "pid %d: epoll: %s", p->pid, strerror(-ret));
		return ret;
	}
	if (unkept)
		return lp_err_set(e, ENOSPC, "pid %d%s: no room left in the service manager's fd store "
				  "(FileDescriptorStoreMax=) for its userfaultfd: it could not survive a daemon restart",
				  p->pid, p->forked ? " (forked child)" : "");
	if (!p->total)
		proc_finish(p, PROC_DONE);
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int session_fork_child(struct session *s, struct proc *parent, int ufd, struct lp_err *e)
{
	struct ranges *r;
	struct proc *c;
	uint64_t cursor;
	int ret;

	pthread_mutex_lock(&parent->lock);
	r = ranges_clone(parent->ranges);
	cursor = parent->cursor;
	pthread_mutex_unlock(&parent->lock);
	if (!r) {
		close(ufd);
		return lp_err_set(e, ENOMEM, "pid %d: fork: out of memory for the child's ranges",
				  parent->pid);
	}
	c = proc_new(s, parent->pid, parent->img_pid, parent->pm, ufd, r);
	if (!c)
		return lp_err_set(e, ENOMEM, "pid %d: fork: out of memory", parent->pid);
	c->forked = 1;
	c->parent_id = parent->id;
	c->cursor = cursor;
	pthread_mutex_lock(&s->lock);
	s->forks++;
	pthread_mutex_unlock(&s->lock);
	ret = session_add_proc(s, c, 0, 0, e);
	if (ret)
		lp_err_prefix(e, "pid %d: fork child", parent->pid);
	else
		log_info("pid %d: forked a child with %llu lazy pages", parent->pid,
			 (unsigned long long)c->total);
	return ret;
}

void session_proc_ended(struct session *s, struct proc *p)
{
	(void)p;
	pthread_mutex_lock(&s->lock);
	s->live--;
	pthread_cond_broadcast(&s->done_cv);
	pthread_mutex_unlock(&s->lock);
}

struct proc *session_next_work(struct session *s, unsigned *cursor)
{
	struct proc *p, *pick;
	size_t k, i, n;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		if (s->stopping || s->failed) {
			pthread_mutex_unlock(&s->lock);
			return NULL;
		}
		pick = NULL;
		n = s->nprocs;
		if (s->started && n) {
			/* processes that faulted lately first, then round robin */
			for (k = 0; k < n && !pick; k++) {
				p = s->procs[(*cursor + k) % n];
				if (proc_live(p) && atomic_load(&p->remaining) && atomic_load(&p->hint))
					pick = p;
			}
			for (k = 0; k < n && !pick; k++) {
				i = (*cursor + k) % n;
				p = s->procs[i];
				if (proc_live(p) && atomic_load(&p->remaining)) {
					pick = p;
					*cursor = (unsigned)(i + 1);
				}
			}
		}
		if (pick) {
			pthread_mutex_unlock(&s->lock);
			return pick;
		}
		pthread_cond_wait(&s->work_cv, &s->lock);
	}
}

/* Lazy ranges: PE_LAZY entries inside lazy-able VMAs, one segment per VMA piece. */
static int build_ranges(struct session *s, uint32_t pid, struct pagemap *pm, const struct vma *v,
			size_t nv, struct ranges **out, struct lp_err *e)
{
	const struct pm_entry *pe;
	uint64_t ps = 0, pend = 0, es, ee, a, b;
	size_t n, i, j, lo, hi, pv = 0;
	struct ranges *r;
	int ret = 0;

	r = ranges_new();
	if (!r)
		return lp_err_set(e, ENOMEM, "out of memory");
	pe = pagemap_entries(pm, &n);
	for (i = 0; i < n && !ret; i++) {
		if (!(pe[i].flags & PE_LAZY))
			continue;
		es = pe[i].vaddr;
		ee = es + pe[i].nr_pages * s->psz;
		/* first VMA that ends after es */
		for (lo = 0, hi = nv; lo < hi;) {
			size_t mid = (lo + hi) / 2;

			if (v[mid].end <= es)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (j = lo; j < nv && v[j].start < ee; j++) {
			if (!vma_lazyable(&v[j]))
				continue;
			if (!(pe[i].flags & PE_PRESENT) && !s->cfg.remote) {
				ret = lp_err_set(e, EREMOTE,
						 "%s/pagemap-%u.img: pages at 0x%llx are lazy and not in the images "
						 "(a criu dump --lazy-pages image): they can only come from its page server",
						 imgdir_path(s->dir), pid, (unsigned long long)es);
				break;
			}
			a = es > v[j].start ? es : v[j].start;
			b = ee < v[j].end ? ee : v[j].end;
			if (pend && pv == j && pend == a) {
				pend = b;
				continue;
			}
			if (pend && (ret = ranges_add(r, ps, pend, ps)))
				break;
			ps = a;
			pend = b;
			pv = j;
		}
	}
	if (!ret && pend)
		ret = ranges_add(r, ps, pend, ps);
	if (ret) {
		if (ret == -EINVAL)
			lp_err_set(e, EINVAL, "%s/pagemap-%u.img: overlapping lazy ranges near 0x%llx",
				   imgdir_path(s->dir), pid, (unsigned long long)ps);
		ranges_free(r);
		return ret;
	}
	*out = r;
	return 0;
}

/* Reads pstree entry IDX's pagemap (into s->pms[IDX]) and VMAs, and builds its lazy ranges. */
static int prep_one(struct session *s, size_t idx, struct pagemap **pm, struct ranges **r, struct lp_err *e)
{
	uint32_t pid = s->pstree[idx].pid;
	struct vma *v = NULL;
	size_t nv = 0;
	int ret;

	ret = pagemap_open(s->dir, pid, pm, e);
	if (!ret)
		ret = imgdir_read_vmas(s->dir, pid, &v, &nv, e);
	if (!ret)
		ret = build_ranges(s, pid, *pm, v, nv, r, e);
	free(v);
	return ret;
}

/*
 * The per-process work (pagemap, VMAs, ranges: linear in the pagemap's
 * entries, milliseconds for gigabytes of fragmented memory) is done
 * here, for every process of pstree.img in order, from the moment the
 * session serves, not when its record arrives: the record is followed
 * by the restore-finished marker and the process's first instructions,
 * which must not wait for it (resume latency independent of size).
 */
static void *prep_main(void *arg)
{
	struct session *s = arg;
	size_t i;

	for (i = 0; i < s->nr_tasks; i++) {
		struct prep *pp = &s->prep[i];
		struct pagemap *pm = NULL;
		struct ranges *r = NULL;
		int ret, stop;

		pthread_mutex_lock(&s->lock);
		stop = s->stopping;
		pthread_mutex_unlock(&s->lock);
		if (stop)
			break;
		ret = prep_one(s, i, &pm, &r, &pp->e);
		pthread_mutex_lock(&s->lock);
		s->pms[i] = pm;
		pp->r = r;
		pp->ret = ret;
		s->prep_done = i + 1;
		pthread_cond_broadcast(&s->prep_cv);
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	s->prep_done = s->nr_tasks;	/* also when stopped early: nobody waits for the rest */
	pthread_cond_broadcast(&s->prep_cv);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void prep_start(struct session *s)
{
	s->prep = calloc(s->nr_tasks, sizeof(*s->prep));
	if (!s->prep)
		return;		/* take_live builds them itself */
	if (pthread_create(&s->prep_tid, NULL, prep_main, s)) {
		free(s->prep);
		s->prep = NULL;
		return;
	}
	s->prep_started = 1;
}

/* Pstree entry IDX's ranges, from the prep thread (waiting for it) or built now. */
static int prep_take(struct session *s, size_t idx, struct ranges **r, struct lp_err *e)
{
	struct prep *pp;
	int ret;

	if (!s->prep_started)
		return prep_one(s, idx, &s->pms[idx], r, e);
	pthread_mutex_lock(&s->lock);
	while (s->prep_done <= idx)
		pthread_cond_wait(&s->prep_cv, &s->lock);
	pp = &s->prep[idx];
	if (!pp->r && !pp->ret)
		pp->ret = lp_err_set(&pp->e, ECANCELED, "the session is stopping");
	*r = pp->r;
	pp->r = NULL;
	ret = pp->ret;
	if (ret)
		*e = pp->e;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/*
 * SENDER sent the record: with CRIU (and lp-restore) the restored task
 * itself, so it is the process to kill should its uffd be lost; not when
 * it is the restore's main process (another restorer may send all).
 */
static int take_live(struct session *s, size_t idx, int32_t vpid, int uffd, pid_t sender, struct lp_err *e)
{
	uint32_t pid = (uint32_t)vpid;
	struct ranges *r = NULL;
	uint64_t start = 0;
	struct proc *p;
	int ret;

	ret = prep_take(s, idx, &r, e);
	if (ret) {
		lp_err_prefix(e, "pid %d cannot be served", vpid);
		close(uffd);
		return ret;
	}
	p = proc_new(s, vpid, pid, s->pms[idx], uffd, r);
	if (!p)
		return lp_err_set(e, ENOMEM, "out of memory");
	log_info("pid %d: %llu lazy pages", vpid, (unsigned long long)p->total);
	if (!s->persist || sender == s->peer_pid || pid_start(sender, &start))
		sender = 0;
	return session_add_proc(s, p, sender, start, e);
}

static int take_record(struct session *s, const struct restore_peer *peer, uint64_t *pos, struct lp_err *e)
{
	uint64_t at = *pos;
	pid_t sender;
	int32_t vpid;
	uint32_t pid;
	int uffd, ret;
	size_t i;

	ret = restore_sock_read_pid(s->cfd, peer, pos, &vpid, e);
	if (ret)
		return ret;
	pid = vpid > 0 ? (uint32_t)vpid : (uint32_t)-vpid;
	for (i = 0; i < s->nr_tasks; i++)
		if (s->pstree[i].pid == pid)
			break;
	if (i == s->nr_tasks || s->seen[i])
		return lp_err_set(e, EPROTO, "%s: offset %llu: %s for pid %u, which %s", peer->name,
				  (unsigned long long)at, vpid > 0 ? "task record" : "zombie record", pid,
				  i == s->nr_tasks ? "is not in pstree.img" : "was already sent");
	s->seen[i] = 1;
	if (vpid < 0) {
		s->zombies++;
		log_info("pid %u: zombie", pid);
		return 0;
	}
	ret = restore_sock_recv_uffd(s->cfd, peer, pos, vpid, &uffd, &sender, e);
	if (ret)
		return ret;
	return take_live(s, i, vpid, uffd, sender, e);
}

/* Is PID in the first N of LIST? */
static int pid_in(const pid_t *list, int n, pid_t pid)
{
	int i;

	for (i = 0; i < n; i++)
		if (list[i] == pid)
			return 1;
	return 0;
}

#define KILL_MAX 256

/*
 * The session cannot go on: kill its live processes before their uffds
 * close (closing would let them read zeros where pages are missing), and
 * wait a little for them to be gone. Says which and why.
 *
 * Each restored process is found by its own pid (the innermost NSpid: CRIU
 * restores the image pids, in a pid namespace too), and only if that fails
 * among the restorer's descendants. Not by layout first: a child forked
 * before the dump maps what its parent maps, and in a pid-namespace restore
 * (CRIU stays as its init) the parent's entry took the child as well, the
 * child's own entry then found nothing (seen with stock CRIU 4.2). A child
 * forked after the restore has no pid of its own here: it is looked for
 * among the descendants of its ancestor's host pid, not below the other
 * restored processes (a child restored with its parent, and that child's
 * own forks, descend from the parent too).
 *
 * They are all stopped first, and killed only once no process is left to
 * find: killing a parent would hand its children to another reaper (no
 * longer below the restore, so not found), and a FORK read meanwhile adds
 * a child (its uffd held open, its mapping still registered) that must go
 * too; a stopped process forks no more once its fork has returned.
 */
static void session_kill_live(struct session *s, const char *why)
{
	pid_t hits[KILL_MAX], found[16], *host = NULL, *nh_host;
	unsigned owner[KILL_MAX];
	int nh = 0, nh1, n, i, t, pass, all, more;
	size_t k, j, from = 0, upto, hcap = 0;

	do {
		pthread_mutex_lock(&s->lock);
		upto = s->nprocs;
		if (upto > hcap && (nh_host = realloc(host, upto * sizeof(*host)))) {
			memset(nh_host + hcap, 0, (upto - hcap) * sizeof(*host));
			host = nh_host;
			hcap = upto;
		}
		nh1 = nh;
		for (pass = 0; pass < 2; pass++) {
			if (pass == 1)
				nh1 = nh;
			for (k = from; k < upto; k++) {
				struct proc *p = s->procs[k];
				pid_t root = 0;
				int got = 0;

				if (!proc_live(p) || !atomic_load(&p->remaining) || p->forked != pass || !p->probe)
					continue;
				if (!p->forked) {
					n = pidfind(p->pid, 0, NULL, 0, p->probe, p->probe + s->psz, found, 16);
					if (n <= 0)
						n = pidfind(p->pid, s->peer_pid, hits, nh, p->probe, p->probe + s->psz, found, 16);
				} else {
					/* the ancestor's host pid, found in the first pass */
					for (j = 0; j < hcap && !root; j++)
						if (!s->procs[j]->forked && s->procs[j]->pid == p->pid)
							root = host[j];
					n = root ? pidfind(0, root, hits, nh1, p->probe, p->probe + s->psz, found, 16) : 0;
				}
				for (i = 0; i < n; i++) {
					if (found[i] == root || pid_in(hits, nh, found[i]))
						continue;
					if (nh == KILL_MAX) {
						/* no room to note it: kill it now */
						kill(found[i], SIGKILL);
						continue;
					}
					kill(found[i], SIGSTOP);
					owner[nh] = (unsigned)k;
					hits[nh++] = found[i];
					if (k < hcap && !host[k])
						host[k] = found[i];
					got++;
				}
				if (!got)
					log_err("pid %d%s: not found to kill it (gone already, or 0x%llx unmapped): if it still runs, "
						"its %llu missing pages will read as zeros once its userfaultfd closes",
						p->pid, p->forked ? " (forked child)" : "", (unsigned long long)p->probe,
						(unsigned long long)atomic_load(&p->remaining));
			}
		}
		pthread_mutex_unlock(&s->lock);
		/* stopped (a fork in progress returns first, its FORK read by the fault thread) or gone */
		for (t = 0; t < 200; t++) {
			for (all = 1, i = 0; i < nh && all; i++)
				all = pid_stopped(hits[i]);
			if (all)
				break;
			usleep(10000);
		}
		pthread_mutex_lock(&s->lock);
		more = s->nprocs > upto;
		pthread_mutex_unlock(&s->lock);
		from = upto;
	} while (more);
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < nh; i++) {
		struct proc *p = s->procs[owner[i]];

		if (kill(hits[i], SIGKILL)) {
			log_err("pid %d%s (host pid %d): cannot kill it: %s", p->pid, p->forked ? " (forked child)" : "",
				(int)hits[i], strerror(errno));
			hits[i] = 0;
			continue;
		}
		log_err("pid %d%s (host pid %d) killed with %llu pages missing: %s", p->pid,
			p->forked ? " (forked child)" : "", (int)hits[i],
			(unsigned long long)atomic_load(&p->remaining), why);
	}
	pthread_mutex_unlock(&s->lock);
	free(host);
	for (t = 0; t < 200; t++) {
		for (i = 0; i < nh && (!hits[i] || pid_gone(hits[i])); i++)
			;
		if (i == nh)
			break;
		usleep(10000);
	}
}

static void progress_line(struct session *s)
{
	struct stats *st = &s->stats;

	fprintf(s->cfg.progress, "%.4f %llu %llu %llu %llu\n", (double)(stats_now_ns() - s->t_rstf) / 1e9,
		(unsigned long long)atomic_load(&st->pages_copied), (unsigned long long)atomic_load(&st->zero_pages),
		(unsigned long long)atomic_load(&st->faults), (unsigned long long)atomic_load(&st->remote_bytes));
}

struct replay {
	int32_t pid;
	uint32_t img_pid;
	size_t pm_idx;
	struct ranges *r;
	int forked, done;
	unsigned parent;
};

/* The images' ranges of live pid VPID (as take_live builds them). */
static int replay_proc(struct session *s, int32_t vpid, struct replay *rp, struct lp_err *e)
{
	uint32_t pid = (uint32_t)vpid;
	struct vma *v = NULL;
	size_t nv = 0, i;
	int ret;

	for (i = 0; i < s->nr_tasks && s->pstree[i].pid != pid; i++)
		;
	if (i == s->nr_tasks || s->seen[i])
		return lp_err_set(e, EINVAL, "journal: pid %d is not in pstree.img or comes twice", vpid);
	s->seen[i] = 1;
	ret = pagemap_open(s->dir, pid, &s->pms[i], e);
	if (!ret)
		ret = imgdir_read_vmas(s->dir, pid, &v, &nv, e);
	if (!ret)
		ret = build_ranges(s, pid, s->pms[i], v, nv, &rp->r, e);
	free(v);
	rp->pid = vpid;
	rp->img_pid = pid;
	rp->pm_idx = i;
	return ret;
}

/*
 * A restarted daemon kills the journal's processes it cannot serve: with
 * ALL, every one not done (the session cannot be resumed); else those
 * whose uffd the fd store did not give back. Without their uffds their
 * missing pages read as zeros: they must not run on. Each is found by
 * the pid and start time its record came with; a forked child, whose pid
 * was never known, among its parent's children started when its FORK was
 * read (PROBES: an address of each, 0 if unknown). Marks them done in
 * JP; returns how many could not be found.
 */
static unsigned recover_kill(struct persist_proc *jp, size_t n, const int *fds, size_t nfds, const uint64_t *probes,
			     int all, const char *why)
{
	long hz = sysconf(_SC_CLK_TCK);
	unsigned missed = 0;
	pid_t found[16];
	size_t i;
	int r, k, m;

	for (i = 0; i < n; i++) {
		struct persist_proc *q = &jp[i];
		const char *fk = q->forked ? " (forked child)" : "";
		uint64_t probe = probes ? probes[i] : 0;

		if (q->done || (!all && i < nfds && fds[i] >= 0))
			continue;
		q->done = 1;
		if (q->host > 0) {
			r = pid_kill_same(q->host, q->start, 0);
			if (r > 0)
				log_err("pid %d%s (host pid %d) killed: %s", q->pid, fk, q->host, why);
			else if (r == 0)
				log_warn("pid %d%s (host pid %d): gone already (%s)", q->pid, fk, q->host, why);
			else
				log_err("pid %d%s (host pid %d): cannot be killed (%s): %s", q->pid, fk, q->host, strerror(-r), why);
			continue;
		}
		m = 0;
		if (q->forked && jp[q->parent].host > 0 && probe)
			m = pidfind_children(jp[q->parent].host, q->fork_ticks ? q->fork_ticks - 1 : 0,
					     q->fork_ticks + (uint64_t)(hz > 0 ? hz : 100), probe, all, found, 16);
		for (k = 0; k < m; k++) {
			uint64_t st;

			if (pid_start(found[k], &st) == 0 && pid_kill_same(found[k], st, probe) > 0)
				log_err("pid %d%s (host pid %d, a child of host pid %d) killed: %s", q->pid, fk, (int)found[k],
					jp[q->parent].host, why);
		}
		if (m <= 0) {
			missed++;
			log_err("pid %d%s: %s, and it cannot be found to kill it (its pid was never known): its missing pages read as zeros",
				q->pid, fk, why);
		}
	}
	return missed;
}

/* Appends a process that is not served (complete, gone or killed) to S's list, for the figures. */
static int recover_keep_ended(struct session *s, struct proc *p, int state)
{
	struct proc **np;
	int ret = 0;

	atomic_store(&p->state, state);
	pthread_mutex_lock(&s->lock);
	if (s->nprocs == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;

		np = realloc(s->procs, cap * sizeof(*np));
		if (np) {
			s->procs = np;
			s->cap = cap;
		} else {
			ret = -ENOMEM;
		}
	}
	if (!ret) {
		p->id = (unsigned)s->nprocs;
		s->procs[s->nprocs++] = p;
	}
	pthread_mutex_unlock(&s->lock);
	if (ret)
		proc_free(p);
	return ret;
}

void session_abandon_journal(const struct persist_rec_t *recs, size_t n, const char *why)
{
	struct persist_proc *jp;
	size_t njp;

	if (persist_procs(recs, n, &jp, &njp)) {
		log_err("out of memory: the processes of the journal cannot be killed (%s)", why);
		return;
	}
	recover_kill(jp, njp, NULL, 0, NULL, 1, why);
	free(jp);
}

struct session *session_recover(const struct session_cfg *cfg, const struct session_handoff *h,
				struct persist *persist, const struct persist_rec_t *recs, size_t n, int *fds, size_t nfds,
				struct lp_err *e)
{
	struct replay *rp = calloc(n ? n : 1, sizeof(*rp));
	uint64_t *probes = calloc(n ? n : 1, sizeof(*probes));
	struct persist_proc *jp = NULL;
	struct ranges *hr = NULL;
	struct session *s = NULL;
	size_t np = 0, njp = 0, i;
	unsigned kept = 0, missed;
	int ret = 0;

	if (!rp || !probes || persist_procs(recs, n, &jp, &njp)) {
		ret = lp_err_set(e, ENOMEM, "out of memory");
		if (h)
			close(h->mem_fd);
		goto out;
	}
	s = h ? handoff_alloc(cfg, h->mem_fd, h->r, h->n, &hr, e) : session_new(cfg, e);
	if (!s) {
		ret = -EINVAL;
		goto out;
	}
	s->persist = persist;
	s->recovered = 1;
	/* the journal, in order: what the ranges were when the daemon stopped */
	for (i = 0; i < n && !ret; i++) {
		const struct persist_rec_t *r = &recs[i];

		if ((r->type == PREC_PROC || r->type == PREC_FORK) ? r->proc != np : r->proc >= np) {
			ret = lp_err_set(e, EINVAL, "journal record %zu: process %u out of order", i, r->proc);
			break;
		}
		switch (r->type) {
		case PREC_PROC:
			if (!h) {
				ret = replay_proc(s, (int32_t)r->a, &rp[np], e);
			} else if (np) {
				ret = lp_err_set(e, EINVAL, "journal record %zu: a second process in a hand-off", i);
			} else {
				/* a hand-off's process: its regions, then the events */
				rp[np].pid = (int32_t)r->a;
				rp[np].r = ranges_clone(hr);
				if (!rp[np].r)
					ret = lp_err_set(e, ENOMEM, "out of memory");
			}
			np++;
			break;
		case PREC_FORK:
			if (r->a >= np) {
				ret = lp_err_set(e, EINVAL, "journal record %zu: fork of unknown process", i);
				break;
			}
			rp[np] = rp[r->a];
			rp[np].forked = 1;
			rp[np].parent = (unsigned)r->a;
			rp[np].r = ranges_clone(rp[r->a].r);
			if (!rp[np].r)
				ret = lp_err_set(e, ENOMEM, "out of memory");
			np++;
			break;
		case PREC_REMAP:
			ret = ranges_move(rp[r->proc].r, r->a, r->b, r->c);
			if (ret)
				lp_err_set(e, -ret, "journal record %zu: remap", i);
			break;
		case PREC_DROP:
			ranges_drop(rp[r->proc].r, r->a, r->b);
			break;
		case PREC_DONE:
			rp[r->proc].done = 1;
			break;
		case PREC_HOST:
			break;
		default:
			ret = lp_err_set(e, EINVAL, "journal record %zu: unknown type %u", i, r->type);
		}
	}
	for (i = 0; i < np; i++) {
		struct rrun first;

		if (rp[i].r && ranges_next(rp[i].r, 0, 1, &first))
			probes[i] = first.addr;
	}
	if (ret)
		goto out;
	/* first the processes the fd store did not keep: they read zeros where pages are missing */
	missed = recover_kill(jp, njp, fds, nfds, probes, 0,
			      "its userfaultfd was not kept in the fd store, so it cannot be resumed");
	for (i = 0; i < np && i < njp; i++) {
		if (!rp[i].done && jp[i].done) {
			s->lost++;
			rp[i].done = 2;
		} else if (!rp[i].done) {
			kept++;
		}
	}
	if (s->lost)
		snprintf(s->lost_msg, sizeof(s->lost_msg),
			 "%u process(es) could not be resumed after a restart (their userfaultfds were not kept in the fd store): %u killed, %u not found",
			 s->lost, s->lost - missed, missed);
	s->faults = fault_pool_new(s, s->cfg.fault_threads, s->cfg.fault_around, e);
	if (!s->faults) {
		ret = -ENOMEM;
		goto out;
	}
	/* the slots of the uffds the store gave back */
	persist_adopt(persist, kept);
	/* the processes again, with the same numbers; finished ones stay finished */
	s->replaying = 1;
	for (i = 0; i < np && !ret; i++) {
		int done = rp[i].done || i >= nfds || fds[i] < 0;
		struct proc *p = proc_new(s, rp[i].pid, rp[i].img_pid, h ? NULL : s->pms[rp[i].pm_idx],
					  done ? -1 : fds[i], rp[i].r);

		rp[i].r = NULL;
		if (!done)
			fds[i] = -1;
		if (!p) {
			ret = lp_err_set(e, ENOMEM, "out of memory");
			break;
		}
		p->forked = rp[i].forked;
		p->parent_id = rp[i].parent;
		if (done) {
			if (rp[i].done == 2)
				persist_add(persist, PREC_DONE, (uint32_t)i, 0, 0, 0);
			ret = recover_keep_ended(s, p, rp[i].done == 1 ? PROC_DONE : PROC_GONE);
			if (ret)
				lp_err_set(e, ENOMEM, "out of memory");
			continue;
		}
		log_info("pid %d%s: resumed with %llu lazy pages", p->pid, p->forked ? " (forked child)" : "",
			 (unsigned long long)p->total);
		ret = session_add_proc(s, p, 0, 0, e);
	}
	s->replaying = 0;
out:
	if (ret && jp) {
		char why[600];

		/* the kept uffds close below: their processes must not run on with zeros */
		snprintf(why, sizeof(why), "its session cannot be resumed (%s)", e->msg);
		recover_kill(jp, njp, NULL, 0, probes, 1, why);
	}
	for (i = 0; rp && i < np; i++)
		ranges_free(rp[i].r);
	ranges_free(hr);
	free(rp);
	free(probes);
	free(jp);
	for (i = 0; i < nfds; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
	if (ret && s) {
		session_free(s);
		s = NULL;
	}
	return s;
}

#define SESSION_PROBE_NS 100000000ull	/* --no-prefetch: how often exits are looked for */

/* The lowest page a process may map (vm.mmap_min_addr), where nothing is mapped in practice. */
static uint64_t session_probe_addr(const struct session *s)
{
	uint64_t psz = session_page_size(s), v = 65536;
	FILE *f = fopen("/proc/sys/vm/mmap_min_addr", "re");

	if (f) {
		if (fscanf(f, "%" SCNu64, &v) != 1)
			v = 65536;
		fclose(f);
	}
	return (v + psz - 1) / psz * psz;
}

/*
 * With --no-prefetch nothing but faults COPYs, and a process's exit comes
 * with no uffd event: one that exits before touching all of its lazy pages
 * (a CRIU-restored process has many it never touches: heap, thread stacks)
 * would keep the session open for ever. Asks each live process instead.
 * Called with s->lock held; drops it around each process.
 */
static void session_find_exited(struct session *s, uint64_t probe)
{
	size_t i;

	for (i = 0; i < s->nprocs; i++) {
		struct proc *p = s->procs[i];

		if (!proc_live(p))
			continue;
		pthread_mutex_unlock(&s->lock);
		if (proc_check_alive(p, probe) == -ESRCH)
			proc_finish(p, PROC_GONE);
		pthread_mutex_lock(&s->lock);
	}
}

/* Starts prefetch and waits until no process is live (or a fatal failure). */
static int session_run(struct session *s, struct lp_err *e)
{
	struct lp_err e2;
	uint64_t probe, probed = 0;
	int ret;

	pthread_mutex_lock(&s->lock);
	s->t_rstf = stats_now_ns();
	/*
	 * The processes resume now and fault the most in their first
	 * moments: spare prefetch threads wait for a quiet PROC_BUSY_NS
	 * first, as after any fault.
	 */
	atomic_store(&s->stats.fault_ns, s->t_rstf);
	s->started = 1;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	if (s->remote && !s->cfg.no_prefetch)
		remote_start(s->remote);

	probe = s->cfg.no_prefetch ? session_probe_addr(s) : 0;
	pthread_mutex_lock(&s->lock);
	while (!s->failed && s->live) {
		if (s->cfg.progress || probe) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += s->cfg.progress ? 10000000 : SESSION_PROBE_NS;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&s->done_cv, &s->lock, &ts);
			if (s->cfg.progress)
				progress_line(s);
			if (probe && stats_now_ns() - probed >= SESSION_PROBE_NS) {
				session_find_exited(s, probe);
				probed = stats_now_ns();
			}
		} else {
			pthread_cond_wait(&s->done_cv, &s->lock);
		}
	}
	s->t_done = stats_now_ns();
	if (s->cfg.progress)
		progress_line(s);
	ret = s->failed ? lp_err_set(e, EIO, "%s", s->fail_msg) : 0;
	pthread_mutex_unlock(&s->lock);
	if (ret)
		session_kill_live(s, e->msg);
	if (!ret && s->remote) {
		char how[96];

		/* nothing is left to fetch: let the background thread leave session_next_work */
		pthread_mutex_lock(&s->lock);
		s->stopping = 1;
		pthread_cond_broadcast(&s->work_cv);
		pthread_mutex_unlock(&s->lock);

		remote_describe(s->remote, how, sizeof(how));
		log_info("all pages in (%s); closing the page-server session", how);
		/* every page is in: a failed goodbye is worth a warning, not a failure */
		ret = remote_close(s->remote, 1, &e2);
		s->remote = NULL;
		if (ret)
			log_warn("%s", e2.msg);
		ret = 0;
	}
	return ret;
}

static int serve_criu(struct session *s, struct lp_err *e)
{
	struct restore_peer peer;
	struct lp_err e2;
	uint64_t pos = 0;
	size_t i;
	int ret;

	ret = restore_sock_accept(s->lfd, &s->cfd, &peer, e);
	pthread_mutex_lock(&s->lock);
	if (s->cancelled && !ret) {
		close(s->cfd);
		s->cfd = -1;
	}
	if (s->cancelled)
		ret = lp_err_set(e, ECANCELED, "cancelled before a restore connected");
	else if (!ret)
		atomic_store(&s->phase, SESSION_SERVING);
	pthread_mutex_unlock(&s->lock);
	if (ret)
		return ret;
	/* like criu lazy-pages: one restore per socket */
	close(s->lfd);
	s->lfd = -1;
	s->peer_pid = peer.pid;
	if (peer.uid != 0 && peer.uid != s->allow_uid)
		return lp_err_set(e, EPERM, "%s: refused: only root or uid %u may restore into this session",
				  peer.name, (unsigned)s->allow_uid);
	if (s->cfg.remote) {
		struct remote_cfg rc = {
			.address = s->cfg.ps_address,
			.port = s->cfg.ps_port,
			.ps_socket = s->cfg.ps_socket,
			.wire = s->cfg.ps_wire,
			.fault_around = s->cfg.fault_around,
			.timeout_ms = s->cfg.ps_timeout_ms,
			.tls = s->cfg.ps_tls,
		};

		ret = remote_open(s, &rc, &s->remote, e);
		if (ret)
			return ret;
	}
	log_info("%s connected; expecting %zu task records", peer.name, s->nr_tasks);
	for (i = 0; i < s->nr_tasks && !ret; i++)
		ret = take_record(s, &peer, &pos, e);
	if (!ret)
		ret = restore_sock_read_marker(s->cfd, &peer, &pos, e);
	close(s->cfd);
	s->cfd = -1;
	if (!ret) {
		log_info("restore finished; prefetch starts");
		return session_run(s, e);
	}
	/*
	 * The restore went wrong. The processes already handed over may still
	 * run: closing their uffds now would give them zero pages. Serve them
	 * to the end (or until they are killed), then report the failure.
	 */
	pthread_mutex_lock(&s->lock);
	i = s->live;
	pthread_mutex_unlock(&s->lock);
	if (i) {
		log_err("%s; serving the %zu process(es) already handed over before exiting", e->msg, i);
		if (session_run(s, &e2))
			log_err("%s", e2.msg);
	}
	return ret;
}
int session_serve(struct session *s, struct lp_err *e)
{
	struct proc *p;
	int ret;

	/* threads start here, not in session_new, so that main may fork (--daemon) before */
	if (!s->faults)
		s->faults = fault_pool_new(s, s->cfg.fault_threads, s->cfg.fault_around, e);
	if (!s->faults) {
		atomic_store(&s->phase, SESSION_FAILED);
		return -ENOMEM;
	}
	/*
	 * Prefetch threads too, not at the marker: they wait in
	 * session_next_work until it, and creating threads then (mmap of
	 * their stacks, the daemon's mmap lock) delayed the first faults.
	 */
	if (!s->cfg.remote && !s->cfg.no_prefetch)
		prefetch_pool_start(s->prefetch);
	if (s->recovered) {
		atomic_store(&s->phase, SESSION_SERVING);
		if (s->cfg.remote) {
			struct remote_cfg rc = {
				.address = s->cfg.ps_address,
				.port = s->cfg.ps_port,
				.ps_socket = -1,
				.wire = s->cfg.ps_wire,
				.fault_around = s->cfg.fault_around,
				.timeout_ms = s->cfg.ps_timeout_ms,
			};

			ret = remote_open(s, &rc, &s->remote, e);
		} else {
			ret = 0;
		}
		if (!ret)
			ret = session_run(s, e);
		if (!ret && s->lost)
			ret = lp_err_set(e, ESRCH, "%s", s->lost_msg);
	} else if (s->handoff) {
		p = s->handoff_proc;
		s->handoff_proc = NULL;
		atomic_store(&s->phase, SESSION_SERVING);
		log_info("hand-off of pid %d: %llu pages in %s", p->pid, (unsigned long long)p->total,
			 s->src->ops->name);
		{
			/* the peer is the process whose memory it is, if it says so itself */
			pid_t host = p->pid == s->peer_pid ? s->peer_pid : 0;
			uint64_t start = 0;

			if (!s->persist || pid_start(host, &start))
				host = 0;
			ret = session_add_proc(s, p, host, start, e);
		}
		if (!ret)
			ret = session_run(s, e);
	} else {
		prep_start(s);
		ret = serve_criu(s, e);
	}
	atomic_store(&s->phase, ret ? SESSION_FAILED : SESSION_DONE);
	return ret;
}

void session_summary_line(struct session *s, char *buf, size_t len)
{
	struct stats *st = &s->stats;
	int n;

	n = snprintf(buf, len,
		     "summary: processes=%zu pages_copied=%llu zero_pages=%llu faults=%llu fault_p50_us=%.1f "
		     "fault_p99_us=%.1f seconds=%.3f zombies=%u forks=%u exists=%llu retries=%llu fault_p999_us=%.1f",
		     s->nprocs, (unsigned long long)atomic_load(&st->pages_copied),
		     (unsigned long long)atomic_load(&st->zero_pages), (unsigned long long)atomic_load(&st->faults),
		     (double)hist_quantile(&st->fault, 0.5) / 1e3, (double)hist_quantile(&st->fault, 0.99) / 1e3,
		     s->t_done > s->t_rstf && s->t_rstf ? (double)(s->t_done - s->t_rstf) / 1e9 : 0.0, s->zombies,
		     s->forks, (unsigned long long)atomic_load(&st->exists),
		     (unsigned long long)atomic_load(&st->retries), (double)hist_quantile(&st->fault, 0.999) / 1e3);
	if (s->cfg.remote && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n,
			 " remote_bytes=%llu remote_requests=%llu fault_rtt_p50_us=%.1f fault_rtt_p99_us=%.1f",
			 (unsigned long long)atomic_load(&st->remote_bytes),
			 (unsigned long long)atomic_load(&st->remote_requests),
			 (double)hist_quantile(&st->rtt, 0.5) / 1e3, (double)hist_quantile(&st->rtt, 0.99) / 1e3);
}

void session_summary(struct session *s, FILE *f)
{
	char line[512];

	session_summary_line(s, line, sizeof(line));
	fprintf(f, "%s\n", line);
	fflush(f);
}
