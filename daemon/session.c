/* SPDX-License-Identifier: MIT */
/* session: takes CRIU's hand-off, builds each process's lazy ranges and runs it to completion. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <pthread.h>
#include <stdarg.h>
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
	s->psz = (uint64_t)sysconf(_SC_PAGESIZE);
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

struct session *session_new_handoff(const struct session_cfg *cfg, int uffd, int mem_fd,
				    const struct session_region *r, size_t n, int32_t pid, struct lp_err *e)
{
	struct session *s = session_alloc(cfg, e);
	struct ranges *rg = NULL;
	struct stat st;
	size_t i;
	int ret = -EINVAL;

	if (!s)
		goto fail_fds;
	s->handoff = 1;
	if (fstat(mem_fd, &st) < 0) {
		lp_err_set(e, errno, "hand-off: the memory file: %s", strerror(errno));
		goto fail_fds;
	}
	s->fill.src = source_raw_new(mem_fd);
	if (!s->fill.src) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail_fds;
	}
	mem_fd = -1;	/* the source has it */
	if (n == 0 || n > SESSION_MAX_REGIONS) {
		lp_err_set(e, EINVAL, "hand-off: %zu regions (1 to %d)", n, SESSION_MAX_REGIONS);
		goto fail_fds;
	}
	if (uffd_check_fd(uffd) < 0) {
		lp_err_set(e, EINVAL, "hand-off: the first fd is not a userfaultfd");
		goto fail_fds;
	}
	rg = ranges_new();
	if (!rg) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto fail_fds;
	}
	for (i = 0; i < n; i++) {
		if (r[i].len == 0 || (r[i].addr | r[i].len | r[i].offset) % s->psz ||
		    r[i].addr + r[i].len < r[i].addr || r[i].offset + r[i].len < r[i].offset) {
			lp_err_set(e, EINVAL, "hand-off: region %zu (0x%llx +%llu at offset %llu): not page aligned or wraps",
				   i, (unsigned long long)r[i].addr, (unsigned long long)r[i].len,
				   (unsigned long long)r[i].offset);
			goto fail_fds;
		}
		if (S_ISREG(st.st_mode) && r[i].offset + r[i].len > (uint64_t)st.st_size) {
			lp_err_set(e, EINVAL, "hand-off: region %zu ends at offset %llu, past the memory file's %lld bytes",
				   i, (unsigned long long)(r[i].offset + r[i].len), (long long)st.st_size);
			goto fail_fds;
		}
		ret = ranges_add(rg, r[i].addr, r[i].addr + r[i].len, r[i].offset);
		if (ret) {
			lp_err_set(e, -ret, "hand-off: region %zu (0x%llx +%llu) overlaps another", i,
				   (unsigned long long)r[i].addr, (unsigned long long)r[i].len);
			goto fail_fds;
		}
	}
	s->prefetch = prefetch_pool_new(&s->fill, cfg->prefetch_threads, e);
	if (!s->prefetch)
		goto fail_fds;
	/* not journaled: a hand-off session is not resumed after a restart */
	s->handoff_proc = proc_new(&s->fill, fill_new_proc(&s->fill, PREC_PROC, (uint64_t)(int64_t)pid, 0), pid, 0,
				   NULL, uffd, rg);
	if (!s->handoff_proc) {
		lp_err_set(e, ENOMEM, "out of memory");
		session_free(s);
		return NULL;
	}
	return s;
fail_fds:
	ranges_free(rg);
	if (uffd >= 0)
		close(uffd);
	if (mem_fd >= 0)
		close(mem_fd);
	session_free(s);
	return NULL;
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

/* Adds P (taken) to the session; a process past the limit fails the session and is killed with the others. */
static int session_add(struct session *s, struct proc *p, struct lp_err *e)
{
	int ret = workq_add(s->q, p, e);

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


static int take_live(struct session *s, size_t idx, int32_t vpid, int uffd, struct lp_err *e)
{
	uint32_t pid = (uint32_t)vpid;
	struct ranges *r = NULL;
	struct proc *p;
	int ret;

	ret = prep_take(s, idx, &r, e);
	if (ret) {
		lp_err_prefix(e, "pid %d cannot be served", vpid);
		close(uffd);
		return ret;
	}
	p = proc_new(&s->fill, fill_new_proc(&s->fill, PREC_PROC, (uint64_t)(int64_t)vpid, pid), vpid, pid,
		     s->pms[idx], uffd, r);
	if (!p)
		return lp_err_set(e, ENOMEM, "out of memory");
	log_info("pid %d: %llu lazy pages", vpid, (unsigned long long)proc_remaining(p));
	proc_set_ws(p, ws_track(s->ws, idx));
	ws_track_live(ws_track(s->ws, idx));
	return session_add(s, p, e);
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


struct kill_ctx {
	struct proc_info *v;
	size_t n, cap;
};

static void kill_collect(void *arg, struct proc *p)
{
	struct kill_ctx *c = arg;

	if (c->n < c->cap && proc_live(p) && proc_remaining(p))
		proc_info(p, &c->v[c->n++]);
}

/*
 * The session cannot go on: kill its live processes before their uffds
 * close (closing would let them read zeros where pages are missing), and
 * wait a little for them to be gone. Says which and why.
 */
static void session_kill_live(struct session *s, const char *why)
{
	struct kill_ctx c = { 0 };
	pid_t killed[256], found[16];
	int nk = 0, n, i, t;
	size_t k;

	c.cap = workq_count(s->q);
	c.v = calloc(c.cap ? c.cap : 1, sizeof(*c.v));
	if (!c.v) {
		log_err("cannot list the processes to kill them (out of memory): %s", why);
		return;
	}
	workq_each(s->q, kill_collect, &c);
	for (k = 0; k < c.n; k++) {
		struct proc_info *p = &c.v[k];

		n = p->probe ? pidfind(p->pid, s->peer_pid, p->probe, p->probe + s->psz, found, 16) : 0;
		if (n <= 0) {
			log_err("pid %d%s: cannot find it to kill it; with its userfaultfd closed, its %llu missing pages will read as zeros",
				p->pid, p->forked ? " (forked child)" : "", (unsigned long long)p->remaining);
			continue;
		}
		for (i = 0; i < n; i++) {
			if (kill(found[i], SIGKILL) == 0 && nk < 256)
				killed[nk++] = found[i];
			log_err("pid %d%s (host pid %d) killed with %llu pages missing: %s", p->pid,
				p->forked ? " (forked child)" : "", (int)found[i], (unsigned long long)p->remaining,
				why);
		}
	}
	free(c.v);
	for (t = 0; t < 200; t++) {
		for (i = 0; i < nk && pid_gone(killed[i]); i++)
			;
		if (i == nk)
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

struct session *session_recover(const struct session_cfg *cfg, struct persist *persist,
				const struct persist_rec_t *recs, size_t n, int *fds, size_t nfds, struct lp_err *e)
{
	struct replay *rp = calloc(n ? n : 1, sizeof(*rp));
	struct session *s = NULL;
	size_t np = 0, i;
	int ret = 0;

	if (!rp) {
		lp_err_set(e, ENOMEM, "out of memory");
		goto out;
	}
	s = session_new(cfg, e);
	if (!s)
		goto out;
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
			ret = replay_proc(s, (int32_t)r->a, &rp[np], e);
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
		default:
			ret = lp_err_set(e, EINVAL, "journal record %zu: unknown type %u", i, r->type);
		}
	}
	for (i = 0; i < np && !ret; i++)
		if (!rp[i].done && (i >= nfds || fds[i] < 0))
			ret = lp_err_set(e, ENOENT, "pid %d%s: its userfaultfd was not kept (fd store): it cannot be resumed",
					 rp[i].pid, rp[i].forked ? " (forked child)" : "");
	if (ret)
		goto out;
	/* the processes again, with the same numbers; finished ones stay finished */
	s->fill.next_id = (uint32_t)np;
	for (i = 0; i < np && !ret; i++) {
		struct proc *p = proc_new(&s->fill, (uint32_t)i, rp[i].pid, rp[i].img_pid, s->pms[rp[i].pm_idx],
					  rp[i].done ? -1 : fds[i], rp[i].r);

		rp[i].r = NULL;
		if (i < nfds && !rp[i].done)
			fds[i] = -1;
		if (!p) {
			ret = lp_err_set(e, ENOMEM, "out of memory");
			break;
		}
		if (rp[i].forked)
			proc_set_forked(p, rp[i].parent);
		if (rp[i].done)
			proc_set_done(p);
		else
			log_info("pid %d%s: resumed with %llu lazy pages", rp[i].pid,
				 rp[i].forked ? " (forked child)" : "", (unsigned long long)proc_remaining(p));
		ret = session_add(s, p, e);
	}
out:
	for (i = 0; rp && i < np; i++)
		ranges_free(rp[i].r);
	free(rp);
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

/* How long session_run waits at a time: the progress line's 10 ms, the end of recording, or for good (0). */
static uint64_t run_wait_ns(struct session *s)
{
	uint64_t d = s->ws ? ws_record_deadline(s->ws) : 0, now = stats_now_ns(), w = s->cfg.progress ? 10000000 : 0;

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

/* Starts the background fill and waits until no process is live (or a fatal failure). */
static int session_run(struct session *s, struct lp_err *e)
{
	const char *failed;
	struct lp_err e2;
	int ret;

	pthread_mutex_lock(&s->lock);
	s->t_rstf = stats_now_ns();
	pthread_mutex_unlock(&s->lock);
	if (s->ws)
		ws_start(s->ws, s->t_rstf);
	workq_start(s->q);
	while (!workq_wait(s->q, run_wait_ns(s))) {
		if (s->cfg.progress)
			progress_line(s);
		ws_deadline(s, false);
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
		log_info("restore finished; prefetch starts");
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

	/* threads start here, not in session_new, so that main may fork (--daemon) before */
	if (!s->faults)
		s->faults = fault_pool_new(&s->fill, s->cfg.fault_threads, e);
	if (!s->faults) {
		atomic_store(&s->phase, SESSION_FAILED);
		return -ENOMEM;
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
		ret = s->cfg.remote ? remote_open(s, -1, e) : 0;
		if (!ret)
			ret = session_run(s, e);
	} else if (s->handoff) {
		p = s->handoff_proc;
		s->handoff_proc = NULL;
		atomic_store(&s->phase, SESSION_SERVING);
		log_info("hand-off of pid %d: %llu pages in %s", proc_pid(p), (unsigned long long)proc_remaining(p),
			 s->fill.src->ops->name);
		ret = session_add(s, p, e);
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
