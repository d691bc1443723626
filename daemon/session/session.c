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
#include "fill.h"
#include "images.h"
#include "log.h"
#include "prefetch.h"
#include "persist.h"
#include "pidfind.h"
#include "proc.h"
#include "ps_wire.h"
#include "ranges.h"
#include "restore_sock.h"
#include "session.h"
#include "source.h"
#include "stats.h"
#include "uffd.h"
#include "workq.h"
#include "ws.h"
#include "wsfile.h"

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
	struct stats stats;
	struct fill fill;		/* what the threads get: psz, stats, source, journal, workq */
	struct workq *q;		/* the processes */
	struct fault_pool *faults;
	struct prefetch_pool *prefetch;
	int lfd, cfd;

	pthread_mutex_t lock;		/* prep, phase changes, cancel */
	unsigned zombies;
	int stopping, cancelled;
	atomic_int phase;
	uid_t allow_uid;
	pid_t peer_pid;			/* the restore (or hand-off) peer, for pidfind */
	int handoff;			/* a non-CRIU hand-off: one process, no images */
	int recovered;			/* rebuilt from the journal: no restore socket */
	struct ws *ws;			/* the working set recorded or replayed (pstree order) */
	unsigned lost;			/* recovered: processes whose uffds were not kept (killed) */
	char lost_msg[256];
	struct persist *persist;	/* not owned */
	struct proc *handoff_proc;
	uint64_t t_rstf, t_done;
};

void session_cfg_defaults(struct session_cfg *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->fault_threads = 1;
	/* COPY is a kernel memcpy: a background thread per core fills the fastest */
	cfg->prefetch_threads = n > 1 ? (int)(n < 8 ? n : 8) : 1;
	cfg->fault_around = 16;
	cfg->chunk_pages = 256;
	cfg->section_us = SESSION_SECTION_US;
	cfg->max_procs = 65536;
	cfg->ps_socket = -1;
	cfg->ps_wire = PS_WIRE_4;
	cfg->ps_timeout_ms = 30000;
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
	s->psz = pagemap_page_size();
	s->lfd = s->cfd = -1;
	s->allow_uid = geteuid();
	atomic_init(&s->phase, SESSION_LISTENING);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->prep_cv, NULL);
	stats_init(&s->stats);
	fill_init(&s->fill, s->psz);
	s->fill.stats = &s->stats;
	s->fill.fault_around = cfg->fault_around ? cfg->fault_around : 1;
	s->fill.chunk = cfg->chunk_pages;
	s->fill.section_ns = (uint64_t)cfg->section_us * 1000;
	s->q = workq_new(&s->fill, cfg->max_procs, e);
	if (!s->q) {
		fill_destroy(&s->fill);
		pthread_cond_destroy(&s->prep_cv);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return NULL;
	}
	s->fill.q = s->q;
	return s;
}

/*
 * The working set: recording (--ws-record) and the file to replay
 * (--ws-replay, or lazy-pages.ws next to the images when not recording).
 * A file that cannot be used is an error in the log, naming it, and the
 * restore goes on without replay; only running out of memory fails.
 */
static int ws_setup(struct session *s, struct lp_err *e)
{
	char def[4200], out[4200];
	const char *file = s->cfg.ws_replay;
	struct ws_set *set = NULL;
	struct lp_err e2;
	uint32_t *pids;
	size_t i;
	int ret;

	if (!s->cfg.ws_record && !s->cfg.ws_replay && s->cfg.ws_no_replay)
		return 0;
	pids = calloc(s->nr_tasks, sizeof(*pids));
	for (i = 0; pids && i < s->nr_tasks; i++)
		pids[i] = s->pstree[i].pid;
	s->ws = pids ? ws_new(pids, s->nr_tasks, s->psz) : NULL;
	free(pids);
	if (!s->ws)
		return lp_err_set(e, ENOMEM, "out of memory");
	snprintf(def, sizeof(def), "%s/%s", s->cfg.images_dir, WS_FILE_NAME);
	if (s->cfg.ws_record) {
		snprintf(out, sizeof(out), "%s", s->cfg.ws_out ? s->cfg.ws_out : def);
		ws_record(s->ws, out, (uint64_t)s->cfg.ws_record_ms * 1000000);
		/*
		 * A fault fills its own page only: pages a fault-around window
		 * brought in would be recorded untouched (measured on redis: twice
		 * the pages its requests referenced), or, if not recorded, missed.
		 */
		s->fill.fault_around = 1;
		log_info("recording the working set into %s", out);
	}
	/* recording takes the faults of a cold restore: the default file is not replayed then */
	if (!file && !s->cfg.ws_record && !s->cfg.ws_no_replay && access(def, F_OK) == 0)
		file = def;
	if (!file)
		return 0;
	ret = ws_load(file, &set, &e2);
	if (!ret)
		ret = ws_replay(s->ws, set, file, &e2);
	if (ret == -ENOMEM)
		return lp_err_set(e, ENOMEM, "%s", e2.msg);
	if (ret)
		log_err("%s; the restore goes on without replay", e2.msg);
	else {
		log_info("%s: replaying its working set first", file);
		s->fill.replay_only = s->cfg.no_prefetch;
	}
	return 0;
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
	/* with --page-server, the source is made when the restore connects, as criu lazy-pages does */
	if (!cfg->remote)
		s->fill.src = source_local_new();
	if (!s->seen || !s->pms || (!cfg->remote && !s->fill.src)) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	if (ws_setup(s, e))
		goto fail;
	s->prefetch = prefetch_pool_new(&s->fill, cfg->prefetch_threads, e);
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
	s->fill.src = source_raw_new(mem_fd);
	if (!s->fill.src) {
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
	s->prefetch = prefetch_pool_new(&s->fill, cfg->prefetch_threads, e);
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
	/* numbered when it is served (session_serve): the journal is set by then */
	s->handoff_proc = proc_new(&s->fill, 0, pid, 0, NULL, uffd, rg);
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
	s->fill.journal = p;
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
	if (atomic_load(&s->phase) != SESSION_LISTENING || workq_count(s->q))
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

struct snap_ctx {
	struct proc_snap *out;
	size_t n, cap;
};

static void snap_one(void *arg, struct proc *p)
{
	struct snap_ctx *c = arg;
	struct proc_snap *ps;
	struct proc_info pi;

	if (c->n == c->cap)
		return;
	proc_info(p, &pi);
	ps = &c->out[c->n++];
	ps->pid = pi.pid;
	ps->total = pi.total;
	ps->remaining = pi.remaining;
	ps->faults = pi.faults;
	ps->fault_p99_us = pi.fault_p99_us;
	ps->state = pi.state;
	ps->forked = pi.forked;
}

int session_snapshot(struct session *s, struct session_snap *out)
{
	struct stats *st = &s->stats;
	struct snap_ctx c = { 0 };
	uint64_t end;

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
	pthread_mutex_unlock(&s->lock);
	/* processes added meanwhile (forks) wait for the next snapshot */
	c.cap = workq_count(s->q);
	c.out = calloc(c.cap ? c.cap : 1, sizeof(*c.out));
	if (!c.out)
		return -ENOMEM;
	workq_each(s->q, snap_one, &c);
	out->procs = c.out;
	out->nprocs = c.n;
	return 0;
}

void session_free(struct session *s)
{
	size_t i;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_mutex_unlock(&s->lock);
	workq_stop(s->q);
	if (s->prep_started)
		pthread_join(s->prep_tid, NULL);
	for (i = 0; s->prep && i < s->nr_tasks; i++)
		ranges_free(s->prep[i].r);
	free(s->prep);
	/* no thread submits reads any more, then the source gives back those in flight */
	prefetch_pool_stop(s->prefetch);
	fault_pool_stop(s->faults);
	source_close(s->fill.src, 0, NULL);
	prefetch_pool_free(s->prefetch);
	fault_pool_free(s->faults);
	workq_free(s->q);
	ws_free(s->ws);
	proc_free(s->handoff_proc);
	for (i = 0; s->pms && i < s->nr_tasks; i++)
		pagemap_close(s->pms[i]);
	free(s->pms);
	free(s->seen);
	pstree_free(s->pstree, s->nr_tasks);
	imgdir_close(s->dir);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->cfd >= 0)
		close(s->cfd);
	fill_destroy(&s->fill);
	pthread_cond_destroy(&s->prep_cv);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int session_listen(struct session *s, struct lp_err *e)
{
	return restore_sock_listen(s->cfg.work_dir, &s->lfd, e);
}

/*
 * Adds P (taken) to the session; a process past the limits fails the
 * session and is killed with the others. HOST, START: the process in this
 * pid namespace and its start time, if known (0), journaled so that a
 * restarted daemon can find it. KEPT: a restarted daemon's, its uffd in
 * the fd store already.
 */
static int session_add(struct session *s, struct proc *p, pid_t host, uint64_t start, bool kept, struct lp_err *e)
{
	int ret;

	if (host > 0)
		persist_add(s->persist, PREC_HOST, proc_id(p), (uint64_t)host, start, 0);
	ret = workq_add(s->q, p, kept, e);
	if (!ret && proc_live(p) && !proc_remaining(p))
		workq_finish(s->q, p, PROC_DONE);
	return ret;
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

/* The working set of pstree entry IDX: its layout, and its replay checked against its lazy ranges R. */
static void prep_ws(struct session *s, size_t idx, struct pagemap *pm, const struct ranges *r)
{
	struct ws_track *t = ws_track(s->ws, idx);
	const struct pm_entry *pe;
	struct lp_err e;
	size_t n;
	int ret;

	pe = pagemap_entries(pm, &n);
	ws_track_layout(t, ws_layout(pe, n));
	ret = ws_plan(t, r, &e);
	if (ret < 0)
		log_err("%s; the restore goes on without replay", e.msg);
	else if (ret > 0)
		log_warn("%s", e.msg);
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
	if (!ret && s->ws && !s->recovered)
		prep_ws(s, idx, *pm, *r);
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
	p = proc_new(&s->fill, fill_new_proc(&s->fill, PREC_PROC, (uint64_t)(int64_t)vpid, pid, 0), vpid, pid,
		     s->pms[idx], uffd, r);
	if (!p)
		return lp_err_set(e, ENOMEM, "out of memory");
	log_info("pid %d: %llu lazy pages", vpid, (unsigned long long)proc_remaining(p));
	proc_set_ws(p, ws_track(s->ws, idx));
	ws_track_live(ws_track(s->ws, idx));
	if (!s->persist || sender == s->peer_pid || pid_start(sender, &start))
		sender = 0;
	return session_add(s, p, sender, start, false, e);
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


struct info_ctx {
	struct proc_info *v;
	size_t n, cap;
};

static void info_collect(void *arg, struct proc *p)
{
	struct info_ctx *c = arg;

	if (c->n < c->cap)
		proc_info(p, &c->v[c->n++]);
}

/* What every process of the session is now, in number order (malloc'ed; *N of them), or NULL. */
static struct proc_info *session_infos(struct session *s, size_t *n)
{
	struct info_ctx c = { 0 };

	c.cap = workq_count(s->q);
	c.v = calloc(c.cap ? c.cap : 1, sizeof(*c.v));
	if (c.v)
		workq_each(s->q, info_collect, &c);
	*n = c.n;
	return c.v;
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
	pid_t hits[KILL_MAX], found[16], *host = NULL, *nhost;
	unsigned owner[KILL_MAX];
	int nh = 0, nh1, n, i, t, pass, all;
	struct proc_info *v = NULL, *nv;
	size_t k, j, from = 0, np = 0, nnp;

	for (;;) {
		nv = session_infos(s, &nnp);
		if (!nv) {
			/* the ones found so far are killed below */
			log_err("cannot list the processes to kill them (out of memory): %s", why);
			break;
		}
		free(v);
		v = nv;
		np = nnp;
		if (np <= from)
			break;		/* no process added since the last round */
		nhost = realloc(host, np * sizeof(*host));
		if (!nhost) {
			log_err("cannot note the processes to kill them (out of memory): %s", why);
			break;
		}
		host = nhost;
		memset(host + from, 0, (np - from) * sizeof(*host));
		nh1 = nh;
		for (pass = 0; pass < 2; pass++) {
			if (pass == 1)
				nh1 = nh;
			for (k = from; k < np; k++) {
				struct proc_info *p = &v[k];
				pid_t root = 0;
				int got = 0;

				if (p->state != PROC_LIVE || !p->remaining || p->forked != pass || !p->probe)
					continue;
				if (!p->forked) {
					n = pidfind(p->pid, 0, NULL, 0, p->probe, p->probe + s->psz, found, 16);
					if (n <= 0)
						n = pidfind(p->pid, s->peer_pid, hits, nh, p->probe, p->probe + s->psz, found, 16);
				} else {
					/* the ancestor's host pid, found in the first pass */
					for (j = 0; j < np && !root; j++)
						if (!v[j].forked && v[j].pid == p->pid)
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
					if (!host[k])
						host[k] = found[i];
					got++;
				}
				if (!got)
					log_err("pid %d%s: not found to kill it (gone already, or 0x%llx unmapped): if it still runs, "
						"its %llu missing pages will read as zeros once its userfaultfd closes",
						p->pid, p->forked ? " (forked child)" : "", (unsigned long long)p->probe,
						(unsigned long long)p->remaining);
			}
		}
		/*
		 * stopped (a fork in progress returns first, its FORK read by
		 * the fault thread) or gone. A poll of /proc: no fd reports that
		 * a process that is not our child has stopped (a pidfd reports
		 * only its exit, waitid only a child's or tracee's stop).
		 */
		for (t = 0; t < 200; t++) {
			for (all = 1, i = 0; i < nh && all; i++)
				all = pid_stopped(hits[i]);
			if (all)
				break;
			usleep(10000);
		}
		from = np;
	}
	for (i = 0; v && i < nh; i++) {
		struct proc_info *p = &v[owner[i]];

		if (kill(hits[i], SIGKILL)) {
			log_err("pid %d%s (host pid %d): cannot kill it: %s", p->pid, p->forked ? " (forked child)" : "",
				(int)hits[i], strerror(errno));
			hits[i] = 0;
			continue;
		}
		log_err("pid %d%s (host pid %d) killed with %llu pages missing: %s", p->pid,
			p->forked ? " (forked child)" : "", (int)hits[i], (unsigned long long)p->remaining, why);
	}
	free(host);
	free(v);
	/* gone before their uffds close: a killed process is not left to read a zero */
	if (pid_wait_gone(hits, nh, 2000))
		log_warn("%d killed process(es) not gone after 2 s: %s", nh, why);
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
	size_t i;

	for (i = 0; i < s->nr_tasks && s->pstree[i].pid != pid; i++)
		;
	if (i == s->nr_tasks || s->seen[i])
		return lp_err_set(e, EINVAL, "journal: pid %d is not in pstree.img or comes twice", vpid);
	s->seen[i] = 1;
	rp->pid = vpid;
	rp->img_pid = pid;
	rp->pm_idx = i;
	return prep_one(s, i, &s->pms[i], &rp->r, e);
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
		ret = lp_err_errno(e);
		goto out;
	}
	session_set_persist(s, persist);
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
			rp[np].done = 0;
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
	/* the slots of the uffds the store gave back */
	persist_adopt(persist, kept);
	/* the processes again, with the same numbers; finished ones stay finished */
	s->fill.next_id = (uint32_t)np;
	for (i = 0; i < np && !ret; i++) {
		int done = rp[i].done || i >= nfds || fds[i] < 0;
		struct proc *p = proc_new(&s->fill, (uint32_t)i, rp[i].pid, rp[i].img_pid, h ? NULL : s->pms[rp[i].pm_idx],
					  done ? -1 : fds[i], rp[i].r);

		rp[i].r = NULL;
		if (!done)
			fds[i] = -1;
		if (!p) {
			ret = lp_err_set(e, ENOMEM, "out of memory");
			break;
		}
		if (rp[i].forked)
			proc_set_forked(p, rp[i].parent);
		if (done) {
			/* not served: kept for the figures (complete, gone, or killed just now) */
			if (rp[i].done == 2)
				persist_add(persist, PREC_DONE, (uint32_t)i, 0, 0, 0);
			proc_set_ended(p, rp[i].done == 1 ? PROC_DONE : PROC_GONE);
		} else {
			int w = proc_wake(p);

			log_info("pid %d%s: resumed with %llu lazy pages", rp[i].pid, rp[i].forked ? " (forked child)" : "",
				 (unsigned long long)proc_remaining(p));
			/*
			 * A fault the killed daemon read is not queued again: its thread
			 * would wait until a prefetch COPY happened to wake it, and for
			 * ever on a page no prefetch places (a hole, a dropped range,
			 * --no-prefetch). EEXIST does not help: a COPY that copies
			 * nothing wakes no one.
			 */
			if (w)
				log_warn("pid %d: waking its threads that waited on the killed daemon failed: %s",
					 rp[i].pid, strerror(-w));
		}
		ret = session_add(s, p, 0, 0, true, e);
	}
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

/* A page server's connection cannot be had back. */
static void remote_failed(void *arg, const struct lp_err *e)
{
	struct session *s = arg;

	workq_fail(s->q, "%s", e->msg);
}

static void remote_notice(void *arg, int warn, const struct lp_err *m)
{
	(void)arg;
	if (warn)
		log_warn("%s", m->msg);
	else
		log_info("%s", m->msg);
}

static int remote_open(struct session *s, int ps_socket, struct lp_err *e)
{
	struct source_remote_cfg rc = {
		.address = s->cfg.ps_address,
		.port = s->cfg.ps_port,
		.ps_socket = ps_socket,
		.wire = s->cfg.ps_wire,
		.max_pages = s->cfg.chunk_pages > s->cfg.fault_around ? s->cfg.chunk_pages : s->cfg.fault_around,
		.timeout_ms = s->cfg.ps_timeout_ms,
		.tls = s->cfg.ps_tls,
		.stats = &s->stats,
		.failed = remote_failed,
		.notice = remote_notice,
		.arg = s,
	};

	return source_remote_new(&rc, &s->fill.src, e);
}

#define SESSION_PROBE_NS 100000000ull	/* --no-prefetch: how often exits are looked for */

/*
 * How long session_run waits at a time (0: for good): the smallest of the
 * progress line's 10 ms, the exit probe's interval (PROBE) and the end of
 * recording.
 */
static uint64_t run_wait_ns(struct session *s, uint64_t probe)
{
	uint64_t d = s->ws ? ws_record_deadline(s->ws) : 0, now = stats_now_ns();
	uint64_t w = s->cfg.progress ? 10000000 : probe ? SESSION_PROBE_NS : 0;

	if (!d)
		return w;
	d = d > now ? d - now : 1;
	return !w || d < w ? d : w;
}

/* Writes the working set once recording is over: at its time limit, or at the end (NOW). */
static void ws_deadline(struct session *s, bool now)
{
	uint64_t d, pages;
	struct lp_err e;

	if (!s->ws || !ws_recording(s->ws))
		return;
	d = ws_record_deadline(s->ws);
	if (!now && (!d || stats_now_ns() < d))
		return;
	if (ws_write(s->ws, &pages, &e))
		log_err("working set not written: %s", e.msg);
	else
		log_info("working set written: %llu pages", (unsigned long long)pages);
}

/* The lowest page a process may map (vm.mmap_min_addr), where nothing is mapped in practice. */
static uint64_t session_probe_addr(const struct session *s)
{
	uint64_t v = 65536;
	FILE *f = fopen("/proc/sys/vm/mmap_min_addr", "re");

	if (f) {
		if (fscanf(f, "%" SCNu64, &v) != 1)
			v = 65536;
		fclose(f);
	}
	return (v + s->psz - 1) / s->psz * s->psz;
}

struct live_ctx {
	struct proc **v;
	size_t n, cap;
};

static void live_collect(void *arg, struct proc *p)
{
	struct live_ctx *c = arg;

	if (c->n < c->cap && proc_live(p))
		c->v[c->n++] = p;
}

/*
 * With --no-prefetch nothing but faults COPYs, and a process's exit comes
 * with no uffd event: one that exits before touching all of its lazy pages
 * (a CRIU-restored process has many it never touches: heap, thread stacks)
 * would keep the session open for ever. Asks each live process instead.
 */
static void session_find_exited(struct session *s, uint64_t probe)
{
	struct live_ctx c = { 0 };
	size_t i;

	c.cap = workq_count(s->q);
	c.v = calloc(c.cap ? c.cap : 1, sizeof(*c.v));
	if (!c.v)
		return;
	workq_each(s->q, live_collect, &c);
	for (i = 0; i < c.n; i++)
		if (proc_check_alive(c.v[i], probe) == -ESRCH)
			workq_finish(s->q, c.v[i], PROC_GONE);
	free(c.v);
}

/* Starts the background fill and waits until no process is live (or a fatal failure). */
static int session_run(struct session *s, struct lp_err *e)
{
	uint64_t probe, probed = 0;
	const char *failed;
	struct lp_err e2;
	int ret;

	pthread_mutex_lock(&s->lock);
	s->t_rstf = stats_now_ns();
	pthread_mutex_unlock(&s->lock);
	if (s->ws)
		ws_start(s->ws, s->t_rstf);
	workq_start(s->q);
	probe = s->cfg.no_prefetch ? session_probe_addr(s) : 0;
	while (!workq_wait(s->q, run_wait_ns(s, probe))) {
		if (s->cfg.progress)
			progress_line(s);
		ws_deadline(s, false);
		if (probe && stats_now_ns() - probed >= SESSION_PROBE_NS) {
			session_find_exited(s, probe);
			probed = stats_now_ns();
		}
	}
	pthread_mutex_lock(&s->lock);
	s->t_done = stats_now_ns();
	pthread_mutex_unlock(&s->lock);
	if (s->cfg.progress)
		progress_line(s);
	failed = workq_failure(s->q);
	ret = failed ? lp_err_set(e, EIO, "%s", failed) : 0;
	if (!ret)
		ws_deadline(s, true);
	if (ret)
		session_kill_live(s, e->msg);
	if (!ret && s->cfg.remote) {
		char how[96];

		/* nothing is left to fetch: the background threads leave */
		workq_stop(s->q);
		prefetch_pool_stop(s->prefetch);
		source_describe(s->fill.src, how, sizeof(how));
		log_info("all pages in (%s); closing the page-server session", how);
		/* every page is in: a failed goodbye is worth a warning, not a failure */
		fault_pool_stop(s->faults);
		if (source_close(s->fill.src, 1, &e2))
			log_warn("%s", e2.msg);
		s->fill.src = NULL;
	}
	return ret;
}

static int serve_criu(struct session *s, struct lp_err *e)
{
	struct restore_peer peer;
	struct lp_err e2;
	uint64_t pos = 0, live;
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
		ret = remote_open(s, s->cfg.ps_socket, e);
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
		log_info("restore finished; %s", s->cfg.no_prefetch ? "pages come by faults only (--no-prefetch)" : "prefetch starts");
		return session_run(s, e);
	}
	/*
	 * The restore went wrong. The processes already handed over may still
	 * run: closing their uffds now would give them zero pages. Serve them
	 * to the end (or until they are killed), then report the failure.
	 */
	live = workq_live(s->q);
	if (live) {
		log_err("%s; serving the %llu process(es) already handed over before exiting", e->msg,
			(unsigned long long)live);
		if (session_run(s, &e2))
			log_err("%s", e2.msg);
	}
	return ret;
}

int session_serve(struct session *s, struct lp_err *e)
{
	struct proc *p;
	int ret;

	/*
	 * A resumed session's processes are in the workq already: the first
	 * fault thread reads their faults at once, so their page server must
	 * be there first (a new restore's connects after the restore does).
	 */
	if (s->recovered && s->cfg.remote && !s->fill.src) {
		ret = remote_open(s, -1, e);
		if (ret) {
			/* its processes cannot be served: not left to read zeros once their uffds close */
			session_kill_live(s, e->msg);
			atomic_store(&s->phase, SESSION_FAILED);
			return ret;
		}
	}
	/* threads start here, not in session_new, so that main may fork (--daemon) before */
	if (!s->faults)
		s->faults = fault_pool_new(&s->fill, s->cfg.fault_threads, e);
	if (!s->faults) {
		atomic_store(&s->phase, SESSION_FAILED);
		return lp_err_errno(e);
	}
	/*
	 * Background threads too, not at the marker: they wait in workq_next
	 * until it, and creating threads then (mmap of their stacks, the
	 * daemon's mmap lock) delayed the first faults.
	 */
	if (!s->cfg.no_prefetch || s->fill.replay_only)
		prefetch_pool_start(s->prefetch);
	if (s->recovered) {
		atomic_store(&s->phase, SESSION_SERVING);
		ret = session_run(s, e);
		if (!ret && s->lost)
			ret = lp_err_set(e, ESRCH, "%s", s->lost_msg);
	} else if (s->handoff) {
		p = s->handoff_proc;
		s->handoff_proc = NULL;
		atomic_store(&s->phase, SESSION_SERVING);
		log_info("hand-off of pid %d: %llu pages in %s", proc_pid(p), (unsigned long long)proc_remaining(p),
			 s->fill.src->ops->name);
		{
			/* the peer is the process whose memory it is, if it says so itself */
			pid_t host = proc_pid(p) == s->peer_pid ? s->peer_pid : 0;
			uint64_t start = 0;

			if (!s->persist || pid_start(host, &start))
				host = 0;
			/* its number and journal record now: the journal is set by the time it is served */
			fill_new_proc(&s->fill, PREC_PROC, (uint64_t)(int64_t)proc_pid(p), 0, 0);
			ret = session_add(s, p, host, start, false, e);
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
	struct ws_figures wf;
	int n;

	n = snprintf(buf, len,
		     "summary: processes=%zu pages_copied=%llu zero_pages=%llu faults=%llu fault_p50_us=%.1f "
		     "fault_p99_us=%.1f seconds=%.3f zombies=%u forks=%llu exists=%llu retries=%llu fault_p999_us=%.1f",
		     workq_count(s->q), (unsigned long long)atomic_load(&st->pages_copied),
		     (unsigned long long)atomic_load(&st->zero_pages), (unsigned long long)atomic_load(&st->faults),
		     (double)hist_quantile(&st->fault, 0.5) / 1e3, (double)hist_quantile(&st->fault, 0.99) / 1e3,
		     s->t_done > s->t_rstf && s->t_rstf ? (double)(s->t_done - s->t_rstf) / 1e9 : 0.0, s->zombies,
		     (unsigned long long)atomic_load(&st->forks), (unsigned long long)atomic_load(&st->exists),
		     (unsigned long long)atomic_load(&st->retries), (double)hist_quantile(&st->fault, 0.999) / 1e3);
	if (s->cfg.remote && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n,
			      " remote_bytes=%llu remote_requests=%llu fault_rtt_p50_us=%.1f fault_rtt_p99_us=%.1f",
			      (unsigned long long)atomic_load(&st->remote_bytes),
			      (unsigned long long)atomic_load(&st->remote_requests),
			      (double)hist_quantile(&st->rtt, 0.5) / 1e3, (double)hist_quantile(&st->rtt, 0.99) / 1e3);
	ws_figures(s->ws, &wf);
	if (wf.replay && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, " ws_planned=%llu ws_read=%llu",
			      (unsigned long long)wf.planned, (unsigned long long)wf.read);
	if (wf.record && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " ws_recorded=%llu", (unsigned long long)wf.recorded);
}

void session_summary(struct session *s, FILE *f)
{
	char line[512];

	session_summary_line(s, line, sizeof(line));
	fprintf(f, "%s\n", line);
	fflush(f);
}
