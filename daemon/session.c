/* SPDX-License-Identifier: MIT */
/* session: takes CRIU's hand-off, builds each process's lazy ranges and runs it to completion. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "images.h"
#include "log.h"
#include "prefetch.h"
#include "proc.h"
#include "ps_wire.h"
#include "remote.h"
#include "ranges.h"
#include "restore_sock.h"
#include "session.h"
#include "source.h"
#include "stats.h"

struct session {
	struct session_cfg cfg;
	uint64_t psz;
	struct imgdir *dir;
	struct pstree_ent *pstree;
	size_t nr_tasks;
	unsigned char *seen;		/* per pstree entry: its record arrived */
	struct pagemap **pms;		/* per pstree entry, owned */
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
	int started, stopping, failed;
	char fail_msg[512];
	uint64_t t_rstf, t_done;
};

void session_cfg_defaults(struct session_cfg *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->fault_threads = 1;
	/* COPY is a kernel memcpy: one prefetch thread per spare core */
	cfg->prefetch_threads = n > 2 ? (int)(n - 1 < 8 ? n - 1 : 8) : 1;
	cfg->fault_around = 16;
	cfg->chunk_pages = 256;
	cfg->sub_pages = 64;
	cfg->max_procs = 65536;
	cfg->ps_socket = -1;
	cfg->ps_wire = PS_WIRE_4;
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

struct session *session_new(const struct session_cfg *cfg, struct lp_err *e)
{
	struct session *s = calloc(1, sizeof(*s));
	int ret;

	if (!s) {
		lp_err_set(e, ENOMEM, "out of memory");
		return NULL;
	}
	s->cfg = *cfg;
	if (!s->cfg.work_dir)
		s->cfg.work_dir = s->cfg.images_dir;
	s->psz = (uint64_t)sysconf(_SC_PAGESIZE);
	s->lfd = s->cfd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_cond_init(&s->done_cv, NULL);
	stats_init(&s->stats);

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

void session_free(struct session *s)
{
	size_t i;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	remote_close(s->remote, 0, NULL);
	prefetch_pool_free(s->prefetch);
	fault_pool_free(s->faults);
	for (i = 0; i < s->nprocs; i++)
		proc_free(s->procs[i]);
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
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int session_listen(struct session *s, struct lp_err *e)
{
	return restore_sock_listen(s->cfg.work_dir, &s->lfd, e);
}

/* Adds P to the session and to a fault thread. Takes ownership of P. */
static int session_add_proc(struct session *s, struct proc *p, struct lp_err *e)
{
	struct proc **np;
	int ret;

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
	p->id = (unsigned)s->nprocs;
	s->procs[s->nprocs++] = p;
	s->live++;
	pthread_mutex_unlock(&s->lock);

	/* from here on the session owns P: failures end it through proc_finish */
	pthread_rwlock_wrlock(&p->evlock);
	ret = fault_watch(s->faults, p);
	pthread_rwlock_unlock(&p->evlock);
	if (ret) {
		lp_err_set(e, -ret, "pid %d: epoll: %s", p->pid, strerror(-ret));
		return ret;
	}
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
	int ret;

	pthread_mutex_lock(&parent->lock);
	r = ranges_clone(parent->ranges);
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
	c->cursor = parent->cursor;
	pthread_mutex_lock(&s->lock);
	s->forks++;
	pthread_mutex_unlock(&s->lock);
	ret = session_add_proc(s, c, e);
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

static int take_live(struct session *s, size_t idx, int32_t vpid, int uffd, struct lp_err *e)
{
	uint32_t pid = (uint32_t)vpid;
	struct ranges *r = NULL;
	struct vma *v = NULL;
	size_t nv = 0;
	struct proc *p;
	int ret;

	ret = pagemap_open(s->dir, pid, &s->pms[idx], e);
	if (!ret)
		ret = imgdir_read_vmas(s->dir, pid, &v, &nv, e);
	if (!ret)
		ret = build_ranges(s, pid, s->pms[idx], v, nv, &r, e);
	free(v);
	if (ret) {
		lp_err_prefix(e, "pid %d cannot be served", vpid);
		close(uffd);
		return ret;
	}
	p = proc_new(s, vpid, pid, s->pms[idx], uffd, r);
	if (!p)
		return lp_err_set(e, ENOMEM, "out of memory");
	log_info("pid %d: %llu lazy pages", vpid, (unsigned long long)p->total);
	return session_add_proc(s, p, e);
}

static int take_record(struct session *s, const struct restore_peer *peer, uint64_t *pos, struct lp_err *e)
{
	uint64_t at = *pos;
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
	ret = restore_sock_recv_uffd(s->cfd, peer, pos, vpid, &uffd, e);
	if (ret)
		return ret;
	return take_live(s, i, vpid, uffd, e);
}

/* Starts prefetch and waits until no process is live (or a fatal failure). */
static int session_run(struct session *s, struct lp_err *e)
{
	struct lp_err e2;
	int ret;

	pthread_mutex_lock(&s->lock);
	s->t_rstf = stats_now_ns();
	s->started = 1;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->lock);
	if (s->remote)
		remote_start(s->remote);
	else
		prefetch_pool_start(s->prefetch);

	pthread_mutex_lock(&s->lock);
	while (!s->failed && s->live)
		pthread_cond_wait(&s->done_cv, &s->lock);
	s->t_done = stats_now_ns();
	ret = s->failed ? lp_err_set(e, EIO, "%s", s->fail_msg) : 0;
	pthread_mutex_unlock(&s->lock);
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

int session_serve(struct session *s, struct lp_err *e)
{
	struct restore_peer peer;
	struct lp_err e2;
	uint64_t pos = 0;
	size_t i;
	int ret;

	/* threads start here, not in session_new, so that main may fork (--daemon) before */
	s->faults = fault_pool_new(s, s->cfg.fault_threads, s->cfg.fault_around, e);
	if (!s->faults)
		return -ENOMEM;
	ret = restore_sock_accept(s->lfd, &s->cfd, &peer, e);
	if (ret)
		return ret;
	/* like criu lazy-pages: one restore per socket */
	close(s->lfd);
	s->lfd = -1;
	if (s->cfg.remote) {
		struct remote_cfg rc = {
			.address = s->cfg.ps_address,
			.port = s->cfg.ps_port,
			.ps_socket = s->cfg.ps_socket,
			.wire = s->cfg.ps_wire,
			.fault_around = s->cfg.fault_around,
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
void session_summary(struct session *s, FILE *f)
{
	struct stats *st = &s->stats;

	fprintf(f,
		"summary: processes=%zu pages_copied=%llu zero_pages=%llu faults=%llu fault_p50_us=%.1f "
		"fault_p99_us=%.1f seconds=%.3f zombies=%u forks=%u exists=%llu retries=%llu",
		s->nprocs, (unsigned long long)atomic_load(&st->pages_copied),
		(unsigned long long)atomic_load(&st->zero_pages), (unsigned long long)atomic_load(&st->faults),
		(double)hist_quantile(&st->fault, 0.5) / 1e3, (double)hist_quantile(&st->fault, 0.99) / 1e3,
		s->t_done > s->t_rstf && s->t_rstf ? (double)(s->t_done - s->t_rstf) / 1e9 : 0.0, s->zombies,
		s->forks, (unsigned long long)atomic_load(&st->exists),
		(unsigned long long)atomic_load(&st->retries));
	if (s->cfg.remote)
		fprintf(f, " remote_bytes=%llu remote_requests=%llu fault_rtt_p50_us=%.1f fault_rtt_p99_us=%.1f",
			(unsigned long long)atomic_load(&st->remote_bytes),
			(unsigned long long)atomic_load(&st->remote_requests),
			(double)hist_quantile(&st->rtt, 0.5) / 1e3, (double)hist_quantile(&st->rtt, 0.99) / 1e3);
	fputc('\n', f);
	fflush(f);
}
