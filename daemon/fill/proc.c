/* SPDX-License-Identifier: MIT */
/* proc: placing pages into one restored process and applying its uffd events. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "fill.h"
#include "images.h"
#include "log.h"
#include "persist.h"
#include "proc.h"
#include "ranges.h"
#include "stats.h"
#include "uffd.h"

/*
 * Locking (the kernel resolves a COPY racing a fault read, not a COPY
 * racing a layout event: once a REMOVE has been read, a COPY into its
 * range succeeds again and would hand the process old data where it
 * expects zeros):
 *  - evlock shared: held across "check the ranges, COPY, mark present"
 *    by every thread that places pages;
 *  - evlock exclusive: held by the thread that reads the uffd, across
 *    read() and the bookkeeping of the events read, and to close it.
 *    So no COPY lands in a range between a REMOVE/UNMAP/REMAP being read
 *    and the ranges being updated. The lock prefers writers, so the reader
 *    waits for the sections under way, not for new ones. It announces
 *    itself (reader_waiting) and spins for the lock; background sections
 *    end at their next COPY when they see it: a fault costs no futex sleep
 *    and wake-up on either side (they cost more than the COPY itself).
 *  - lock: the ranges and the fields marked "under lock" (short sections,
 *    taken inside evlock).
 */
struct proc {
	struct fill *f;
	uint32_t id;
	int32_t pid;			/* pid the restore sent (the ancestor's, for a fork child) */
	uint32_t img_pid;		/* whose pagemap serves this process */
	bool forked;
	uint32_t parent_id;
	struct pagemap *pm;		/* borrowed from the session */
	int uffd;			/* owned; -1 once closed */
	int epfd;			/* the epoll instance watching uffd, -1 if none */

	pthread_rwlock_t evlock;
	atomic_int reader_waiting;	/* readers waiting for or holding evlock */
	pthread_mutex_t lock;
	struct ranges *ranges;		/* under lock */
	uint64_t cursor;		/* where background reads go on, under lock */
	uint64_t last_fault;		/* the address of the last fault asked for, under lock */
	struct { uint64_t start, end; } infl[PROC_MAX_INFLIGHT];	/* runs being read, under lock */
	int ninfl;

	/* single-page ENOENTs since the last event: a moved VMA answers ENOENT until its REMAP is read */
	atomic_uint noent_streak;

	atomic_int state;
	atomic_uint_fast64_t remaining;	/* lazy pages left (mirrors ranges) */
	atomic_uint_fast64_t hint;	/* where faults happened lately, 0 if none */
	atomic_uint_fast64_t fault_ns;	/* when a fault was last read */
	atomic_uint_fast64_t faults;	/* faults served */
	uint64_t total;			/* lazy pages at start */
	uint64_t probe;
	struct hist fault;		/* service times */
	struct ws_track *ws;		/* borrowed from the session; set before the process is added */
};

struct proc *proc_new(struct fill *f, uint32_t id, int32_t pid, uint32_t img_pid, struct pagemap *pm,
		      int uffd, struct ranges *ranges)
{
	pthread_rwlockattr_t ra;
	pthread_mutexattr_t ma;
	struct proc *p = calloc(1, sizeof(*p));
	uint64_t img, n;
	bool none;

	if (!p) {
		if (uffd >= 0)
			close(uffd);
		ranges_free(ranges);
		return NULL;
	}
	p->f = f;
	p->id = id;
	p->pid = pid;
	p->img_pid = img_pid;
	p->pm = pm;
	p->uffd = uffd;
	p->epfd = -1;
	p->ranges = ranges;
	p->total = ranges_remaining(ranges);
	atomic_init(&p->state, PROC_LIVE);
	atomic_init(&p->remaining, p->total);
	pthread_rwlockattr_init(&ra);
	/* the uffd reader must not starve behind background placement */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&p->evlock, &ra);
	pthread_rwlockattr_destroy(&ra);
	/* short sections taken by fault and background threads at once: spin before sleeping */
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&p->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	if (proc_pick(p, 1, &p->probe, &img, &n, &none))
		proc_unpick(p, p->probe, 0);
	p->cursor = 0;
	return p;
}

void proc_free(struct proc *p)
{
	if (!p)
		return;
	if (p->uffd >= 0)
		close(p->uffd);
	ranges_free(p->ranges);
	pthread_rwlock_destroy(&p->evlock);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void proc_info(struct proc *p, struct proc_info *o)
{
	o->id = p->id;
	o->pid = p->pid;
	o->img_pid = p->img_pid;
	o->pm = p->pm;
	o->forked = p->forked;
	o->parent_id = p->parent_id;
	o->state = (enum proc_state)atomic_load(&p->state);
	o->total = p->total;
	o->remaining = atomic_load(&p->remaining);
	o->faults = atomic_load(&p->faults);
	o->fault_p99_us = (double)hist_quantile(&p->fault, 0.99) / 1e3;
	o->probe = p->probe;
}

int32_t proc_pid(const struct proc *p)
{
	return p->pid;
}

uint32_t proc_id(const struct proc *p)
{
	return p->id;
}

bool proc_live(struct proc *p)
{
	return atomic_load_explicit(&p->state, memory_order_acquire) == PROC_LIVE;
}

uint64_t proc_remaining(struct proc *p)
{
	return atomic_load_explicit(&p->remaining, memory_order_acquire);
}

void proc_set_ended(struct proc *p, enum proc_state state)
{
	atomic_store(&p->state, state);
}

void proc_set_forked(struct proc *p, uint32_t parent_id)
{
	p->forked = true;
	p->parent_id = parent_id;
}

/* the lowest address a mapping may have (vm.mmap_min_addr), page-aligned */
static uint64_t mmap_floor(uint64_t page)
{
	unsigned long long v = 65536;
	FILE *f = fopen("/proc/sys/vm/mmap_min_addr", "re");

	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 65536;
		fclose(f);
	}
	return ((uint64_t)v + page - 1) / page * page;
}

int proc_wake(struct proc *p)
{
	/* the tops of the user address space the kernel may have given it: 47, 48, 39 bits */
	static const unsigned bits[] = { 47, 48, 39 };
	uint64_t page = pagemap_page_size(), lo = mmap_floor(page);
	int ret = -EINVAL;
	size_t i;

	/* UFFDIO_WAKE looks at no VMA: one call over everything wakes every waiter */
	for (i = 0; i < sizeof(bits) / sizeof(bits[0]) && ret == -EINVAL; i++)
		ret = uffd_wake(p->uffd, lo, ((1ULL << bits[i]) - page) - lo);
	return ret;
}

int proc_uffd(const struct proc *p)
{
	return p->uffd;
}

uint64_t proc_last_fault_ns(struct proc *p)
{
	return atomic_load_explicit(&p->fault_ns, memory_order_relaxed);
}

/*
 * A background section is one COPY of a bounded size, tens of
 * microseconds: the reader spins about that long, then sleeps. Spinning
 * longer costs more than it saves: a holder preempted inside its section
 * needs the very CPU the spinner is burning.
 */
#define PROC_SPIN_NS 40000ull

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* One turn of a bounded spin: pauses, and says (false) when PROC_SPIN_NS have gone since the first turn. */
static bool spin_on(unsigned i, uint64_t *t0)
{
	cpu_relax();
	if (i % 64 == 0) {
		uint64_t now = stats_now_ns();

		if (!*t0)
			*t0 = now;
		else if (now - *t0 > PROC_SPIN_NS)
			return false;
	}
	return true;
}

static void lock_reader(struct proc *p)
{
	uint64_t t0 = 0;
	unsigned i;

	atomic_fetch_add(&p->reader_waiting, 1);
	for (i = 0; pthread_rwlock_trywrlock(&p->evlock) != 0; i++) {
		if (!spin_on(i, &t0)) {
			pthread_rwlock_wrlock(&p->evlock);
			return;
		}
	}
}

static void unlock_reader(struct proc *p)
{
	pthread_rwlock_unlock(&p->evlock);
	atomic_fetch_sub(&p->reader_waiting, 1);
}

/* Background placement lets a waiting reader in first (pthread_rwlock_unlock releases it). */
static void lock_bg(struct proc *p)
{
	uint64_t t0 = 0;
	unsigned i;

	for (i = 0; atomic_load_explicit(&p->reader_waiting, memory_order_relaxed); i++)
		if (!spin_on(i, &t0))
			break;
	pthread_rwlock_rdlock(&p->evlock);
}

int proc_watch(struct proc *p, int epfd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
	int ret = 0;

	pthread_rwlock_wrlock(&p->evlock);
	if (proc_live(p) && p->epfd < 0) {
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->uffd, &ev) < 0)
			ret = -errno;
		else
			p->epfd = epfd;
	}
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

static void mark_present(struct proc *p, uint64_t addr, uint64_t nr_pages)
{
	if (!nr_pages)
		return;
	pthread_mutex_lock(&p->lock);
	ranges_clear(p->ranges, addr, nr_pages);
	atomic_store_explicit(&p->remaining, ranges_remaining(p->ranges), memory_order_release);
	pthread_mutex_unlock(&p->lock);
}

static bool page_is_zero(const void *page, uint64_t psz)
{
	const uint64_t *w = page;
	uint64_t i;

	for (i = 0; i < psz / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

/*
 * One run of pages of one kind (SRC NULL: zero pages). EEXIST skips the
 * present page; ENOENT on several pages means the run now spans VMAs
 * (an mprotect split it without an event), so go page by page; ENOENT on
 * one page: see below.
 */
static int place(struct proc *p, uint64_t addr, const uint8_t *src, uint64_t nr_pages)
{
	struct stats *st = p->f->stats;
	uint64_t psz = p->f->psz;
	uint64_t off = 0, len = nr_pages * psz, done, step = len;
	enum uffd_res r;
	int err;

	while (off < len) {
		uint64_t n = step < len - off ? step : len - off;

		if (src)
			r = uffd_copy(p->uffd, addr + off, src + off, n, &done, &err);
		else
			r = uffd_zero(p->uffd, addr + off, n, &done, &err);
		done -= done % psz;
		if (done) {
			atomic_fetch_add_explicit(src ? &st->pages_copied : &st->zero_pages, done / psz,
						  memory_order_relaxed);
			mark_present(p, addr + off, done / psz);
		}
		switch (r) {
		case UFFD_OK:
			off += n;
			break;
		case UFFD_EXISTS:
			atomic_fetch_add_explicit(&st->exists, 1, memory_order_relaxed);
			mark_present(p, addr + off + done, 1);
			off += done + psz;
			break;
		case UFFD_NOENT:
			if (n - done > psz) {
				off += done;
				step = psz;
				break;
			}
			/*
			 * The kernel looks the VMA up before it checks for a queued
			 * event: a range mremap has just moved answers ENOENT, not
			 * EAGAIN, until its REMAP is read. Keep the page lazy and
			 * retry after the event; only a long streak with no event
			 * at all means the VMA is really not registered.
			 */
			if (atomic_fetch_add(&p->noent_streak, 1) < PROC_NOENT_LIMIT) {
				atomic_fetch_add_explicit(&st->retries, 1, memory_order_relaxed);
				return -EAGAIN;
			}
			mark_present(p, addr + off + done, 1);
			off += done + psz;
			break;
		case UFFD_AGAIN:
			/*
			 * A COPY that placed some pages and then met a present one
			 * answers EAGAIN (with the bytes it copied), not EEXIST: go on
			 * from that page. With nothing copied, an event is queued.
			 */
			if (done) {
				off += done;
				break;
			}
			atomic_fetch_add_explicit(&st->retries, 1, memory_order_relaxed);
			return -EAGAIN;
		case UFFD_GONE:
			return -ESRCH;
		default:
			return -err;
		}
	}
	return 0;
}

/* NR_PAGES pages from BUF at ADDR: runs of all-zero pages with ZEROPAGE, the rest with COPY. */
static int fill_pages(struct proc *p, uint64_t addr, uint64_t nr_pages, const uint8_t *buf)
{
	uint64_t psz = p->f->psz, i = 0, j;
	bool z;
	int ret;

	while (i < nr_pages) {
		z = page_is_zero(buf + i * psz, psz);
		for (j = i + 1; j < nr_pages && page_is_zero(buf + j * psz, psz) == z; j++)
			;
		ret = place(p, addr + i * psz, z ? NULL : buf + i * psz, j - i);
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}

/*
 * Under evlock shared: places the pages of [ADDR, ADDR + NR_PAGES) that are
 * still lazy for the image address they were read for (a REMAP may have
 * moved other pages there, a REMOVE dropped them), skipping the others;
 * with YIELD, stops at the next COPY once the reader waits. *STOP: up to
 * where pages were dealt with.
 */
static int place_checked(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, const uint8_t *buf,
			 bool yield, uint64_t *stop)
{
	uint64_t psz = p->f->psz, end = addr + nr_pages * psz, a = addr, left;
	struct rrun now;
	bool in;
	int ret = 0;

	while (a < end) {
		if (yield && atomic_load_explicit(&p->reader_waiting, memory_order_relaxed))
			break;
		pthread_mutex_lock(&p->lock);
		left = (end - a) / psz;
		in = ranges_run(p->ranges, a, yield && left > PROC_YIELD_PAGES ? PROC_YIELD_PAGES : left, &now);
		pthread_mutex_unlock(&p->lock);
		if (!in || now.img != img + (a - addr)) {
			a += psz;
			continue;
		}
		ret = fill_pages(p, a, now.nr_pages, buf + (a - addr));
		if (ret)
			break;
		a += now.nr_pages * psz;
	}
	*stop = a;
	return ret;
}

int proc_place_section(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, uint64_t max,
		       const void *buf, uint64_t *stop)
{
	int ret;

	if (max < nr_pages)
		nr_pages = max;
	lock_bg(p);
	if (!proc_live(p)) {
		pthread_rwlock_unlock(&p->evlock);
		*stop = addr + nr_pages * p->f->psz;
		return 0;
	}
	ret = place_checked(p, addr, img, nr_pages, buf, true, stop);
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

bool proc_fault_run(struct proc *p, uint64_t addr, unsigned window, uint64_t *img, uint64_t *nr_pages)
{
	uint64_t psz = p->f->psz, last, w = window;
	struct rrun run;
	bool in;

	pthread_mutex_lock(&p->lock);
	/*
	 * Fault-around pays when the process reads on from where it faulted,
	 * and costs when it does not: a random reader faults again within
	 * microseconds and waits behind the window's COPY. So the window
	 * follows the faults.
	 */
	last = p->last_fault;
	p->last_fault = addr;
	if (!(w > 1 && last && addr + w * psz >= last && addr <= last + 2 * w * psz))
		w = 1;
	in = ranges_run(p->ranges, addr, w, &run);
	if (in && p->ninfl < PROC_MAX_INFLIGHT) {
		/* a hint for background reads: not to ask for these pages a second time */
		p->infl[p->ninfl].start = run.addr;
		p->infl[p->ninfl].end = run.addr + run.nr_pages * psz;
		p->ninfl++;
	}
	pthread_mutex_unlock(&p->lock);
	if (!in)
		return false;
	atomic_store_explicit(&p->hint, addr + run.nr_pages * psz, memory_order_relaxed);
	*img = run.img;
	*nr_pages = run.nr_pages;
	return true;
}

int proc_place_fault(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, const void *buf)
{
	uint64_t psz = p->f->psz, now_img, stop;
	const uint8_t *b = buf;
	bool in;
	int ret;

	pthread_rwlock_rdlock(&p->evlock);
	if (!proc_live(p)) {
		/* closing the uffd woke it */
		pthread_rwlock_unlock(&p->evlock);
		return 0;
	}
	pthread_mutex_lock(&p->lock);
	in = ranges_lookup(p->ranges, addr, &now_img);
	pthread_mutex_unlock(&p->lock);
	if (!in) {
		/* dropped (it reads zeros now), or placed by another thread (EEXIST) */
		ret = place(p, addr, NULL, 1);
		goto out;
	}
	if (!nr_pages || now_img != img) {
		ret = 1;
		goto out;
	}
	ret = fill_pages(p, addr, 1, b);
	if (ret || nr_pages == 1)
		goto out;
	/* the rest of the window: the thread is already woken */
	ret = place_checked(p, addr + psz, img + psz, nr_pages - 1, b + psz, false, &stop);
	if (ret == -EAGAIN)
		ret = 0;
out:
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

void proc_fault_served(struct proc *p, uint64_t t0)
{
	struct stats *st = p->f->stats;
	uint64_t ns = stats_now_ns() - t0;

	hist_add(&st->fault, ns);
	hist_add(&p->fault, ns);
	atomic_fetch_add_explicit(&st->faults, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->faults, 1, memory_order_relaxed);
}

int proc_check_alive(struct proc *p, uint64_t probe)
{
	uint64_t done, img;
	int err, ret = 0;
	bool lazy;

	/*
	 * Shared, as for any placement: the uffd stays open meanwhile. Were a
	 * registered VMA at PROBE, a page there that is not lazy is a hole or
	 * was removed, and reads zeros anyway.
	 */
	pthread_rwlock_rdlock(&p->evlock);
	if (proc_live(p) && p->uffd >= 0) {
		pthread_mutex_lock(&p->lock);
		lazy = ranges_lookup(p->ranges, probe, &img);
		pthread_mutex_unlock(&p->lock);
		if (!lazy && uffd_zero(p->uffd, probe, p->f->psz, &done, &err) == UFFD_GONE)
			ret = -ESRCH;
	}
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

static void infl_remove(struct proc *p, uint64_t addr)
{
	int i;

	for (i = 0; i < p->ninfl; i++)
		if (p->infl[i].start == addr) {
			p->infl[i] = p->infl[--p->ninfl];
			return;
		}
}

bool proc_pick(struct proc *p, uint64_t max, uint64_t *addr, uint64_t *img, uint64_t *nr_pages, bool *none)
{
	uint64_t psz = p->f->psz, start, end, hint = atomic_exchange(&p->hint, 0);
	struct rrun run;
	int tries, i;
	bool moved, ok = false;

	*none = false;
	pthread_mutex_lock(&p->lock);
	start = hint ? hint : p->cursor;
	for (tries = 0; p->ninfl < PROC_MAX_INFLIGHT && tries < PROC_MAX_INFLIGHT + 2; tries++) {
		if (!ranges_next(p->ranges, start, max, &run)) {
			*none = true;
			break;
		}
		end = run.addr + run.nr_pages * psz;
		for (i = 0, moved = false; i < p->ninfl; i++) {
			if (run.addr >= p->infl[i].start && run.addr < p->infl[i].end) {
				start = p->infl[i].end;
				moved = true;
				break;
			}
			if (p->infl[i].start > run.addr && p->infl[i].start < end)
				end = p->infl[i].start;
		}
		if (moved)
			continue;
		p->infl[p->ninfl].start = run.addr;
		p->infl[p->ninfl].end = end;
		p->ninfl++;
		p->cursor = end;	/* the next thread takes the next run */
		*addr = run.addr;
		*img = run.img;
		*nr_pages = (end - run.addr) / psz;
		ok = true;
		break;
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

bool proc_pick_run(struct proc *p, uint64_t addr, uint64_t max, uint64_t *start, uint64_t *img, uint64_t *nr_pages)
{
	uint64_t psz = p->f->psz, a, end = addr + max * psz;
	struct rrun run;
	bool in = false;

	pthread_mutex_lock(&p->lock);
	for (a = addr; a < end && !(in = ranges_run(p->ranges, a, (end - a) / psz, &run)); a += psz)
		;
	pthread_mutex_unlock(&p->lock);
	if (!in)
		return false;
	*start = run.addr;
	*img = run.img;
	*nr_pages = run.nr_pages;
	return true;
}

bool proc_hinted(struct proc *p)
{
	return atomic_load_explicit(&p->hint, memory_order_relaxed) != 0;
}

void proc_set_ws(struct proc *p, struct ws_track *w)
{
	p->ws = w;
}

struct ws_track *proc_ws(const struct proc *p)
{
	return p->ws;
}

void proc_unpick(struct proc *p, uint64_t addr, uint64_t cursor)
{
	pthread_mutex_lock(&p->lock);
	infl_remove(p, addr);
	if (cursor)
		p->cursor = cursor;
	pthread_mutex_unlock(&p->lock);
}

static void update_remaining(struct proc *p)
{
	atomic_store_explicit(&p->remaining, ranges_remaining(p->ranges), memory_order_release);
}

/* A FORK's child: the parent's ranges as they are now, numbered and journaled now. */
static int fork_child(struct proc *p, int ufd, struct proc **out, struct lp_err *e)
{
	struct ranges *r;
	struct proc *c;
	uint64_t cursor;
	uint32_t id;

	pthread_mutex_lock(&p->lock);
	r = ranges_clone(p->ranges);
	cursor = p->cursor;
	pthread_mutex_unlock(&p->lock);
	if (!r) {
		close(ufd);
		return lp_err_set(e, ENOMEM, "pid %d: fork: out of memory for the child's ranges", p->pid);
	}
	/* when: a restarted daemon looks for the child among the parent's children started then */
	id = fill_new_proc(p->f, PREC_FORK, p->id, 0, persist_ticks());
	c = proc_new(p->f, id, p->pid, p->img_pid, p->pm, ufd, r);
	if (!c)
		return lp_err_set(e, ENOMEM, "pid %d: fork: out of memory", p->pid);
	proc_set_forked(c, p->id);
	c->cursor = cursor;
	atomic_fetch_add_explicit(&p->f->stats->forks, 1, memory_order_relaxed);
	*out = c;
	return 0;
}

static int apply_event(struct proc *p, const struct uffd_msg *m, struct proc **child, struct lp_err *e)
{
	int ret;

	atomic_store(&p->noent_streak, 0);
	switch (m->event) {
	case UFFD_EVENT_REMAP:
		log_debug("pid %d: remap 0x%llx -> 0x%llx len 0x%llx", p->pid,
			  (unsigned long long)m->arg.remap.from, (unsigned long long)m->arg.remap.to,
			  (unsigned long long)m->arg.remap.len);
		/* journaled first: a daemon restarted after this point must know it */
		persist_add(p->f->journal, PREC_REMAP, p->id, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		pthread_mutex_lock(&p->lock);
		ret = ranges_move(p->ranges, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		update_remaining(p);
		pthread_mutex_unlock(&p->lock);
		if (ret)
			return lp_err_set(e, -ret, "pid %d: remap 0x%llx -> 0x%llx: out of memory", p->pid,
					  (unsigned long long)m->arg.remap.from,
					  (unsigned long long)m->arg.remap.to);
		return 0;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		log_debug("pid %d: %s 0x%llx-0x%llx", p->pid, m->event == UFFD_EVENT_REMOVE ? "remove" : "unmap",
			  (unsigned long long)m->arg.remove.start, (unsigned long long)m->arg.remove.end);
		persist_add(p->f->journal, PREC_DROP, p->id, m->arg.remove.start, m->arg.remove.end, 0);
		pthread_mutex_lock(&p->lock);
		ranges_drop(p->ranges, m->arg.remove.start, m->arg.remove.end);
		update_remaining(p);
		pthread_mutex_unlock(&p->lock);
		return 0;
	case UFFD_EVENT_FORK:
		return fork_child(p, (int)m->arg.fork.ufd, child, e);
	default:
		return lp_err_set(e, EPROTO, "pid %d: unexpected uffd event 0x%x", p->pid, m->event);
	}
}

/* Reads and applies messages under the exclusive lock the caller holds. */
static int drain(struct proc *p, uint64_t *faults, int max, int *more, struct proc **children, int *nchild,
		 struct lp_err *e)
{
	uint64_t pmask = ~(p->f->psz - 1);
	struct uffd_msg msgs[PROC_MAX_MSGS];
	int nf = 0, n, i, ret, want;

	*more = 0;
	for (;;) {
		/* room for every message to be a fault or a FORK */
		want = max - nf < PROC_MAX_MSGS - *nchild ? max - nf : PROC_MAX_MSGS - *nchild;
		if (want <= 0) {
			*more = 1;
			return nf;
		}
		n = uffd_read(p->uffd, msgs, want);
		if (n < 0)
			return lp_err_set(e, -n, "pid %d: reading its userfaultfd: %s", p->pid,
					  n == -EPIPE ? "end of file" : strerror(-n));
		for (i = 0; i < n; i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
				faults[nf++] = msgs[i].arg.pagefault.address & pmask;
				continue;
			}
			children[*nchild] = NULL;
			ret = apply_event(p, &msgs[i], &children[*nchild], e);
			if (children[*nchild])
				(*nchild)++;
			if (ret)
				return ret;
		}
		if (n < want)
			return nf;
	}
}

int proc_read(struct proc *p, uint64_t *faults, int max, int *more, struct proc **children, int *nchild,
	      struct lp_err *e)
{
	uint64_t now;
	int n;

	*nchild = 0;
	lock_reader(p);
	if (!proc_live(p)) {
		unlock_reader(p);
		*more = 0;
		return -ENOENT;
	}
	n = drain(p, faults, max, more, children, nchild, e);
	unlock_reader(p);
	if (n > 0) {
		now = stats_now_ns();
		atomic_store_explicit(&p->fault_ns, now, memory_order_relaxed);
		atomic_store_explicit(&p->f->stats->fault_ns, now, memory_order_relaxed);
	}
	return n;
}

bool proc_finish(struct proc *p, enum proc_state why, struct proc **children, int *nchild)
{
	uint64_t faults[PROC_MAX_MSGS];
	struct lp_err e;
	int more, n;

	*nchild = 0;
	lock_reader(p);
	if (atomic_load(&p->state) != PROC_LIVE || (why == PROC_DONE && atomic_load(&p->remaining) != 0)) {
		unlock_reader(p);
		return false;
	}
	/*
	 * Read what is queued: a FORK must be taken (its child has a uffd of
	 * its own to serve); faults need nothing, closing the uffd wakes them
	 * and the kernel then fills holes with zeros as for any anon page.
	 */
	if (why == PROC_DONE) {
		do {
			n = drain(p, faults, PROC_MAX_MSGS, &more, children, nchild, &e);
			if (n < 0 && n != -EPIPE)
				log_warn("%s", e.msg);
		} while (n >= 0 && more && *nchild < PROC_MAX_MSGS);
		if (n >= 0 && more) {
			/* more FORKs than fit: the caller takes these, the fault thread reads the rest */
			unlock_reader(p);
			return false;
		}
	}
	atomic_store_explicit(&p->state, why, memory_order_release);
	persist_add(p->f->journal, PREC_DONE, p->id, 0, 0, 0);
	persist_drop_fd(p->f->journal, p->id);
	if (p->epfd >= 0)
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->uffd, NULL);
	close(p->uffd);
	p->uffd = -1;
	unlock_reader(p);
	log_info("pid %d%s: %s", p->pid, p->forked ? " (forked child)" : "", why == PROC_DONE ? "complete" : "gone");
	return true;
}
