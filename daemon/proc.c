/* SPDX-License-Identifier: MIT */
/* proc: placing pages into one restored process and applying its uffd events. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "log.h"
#include "persist.h"
#include "proc.h"
#include "ranges.h"
#include "session.h"
#include "stats.h"
#include "uffd.h"

struct proc *proc_new(struct session *s, int32_t pid, uint32_t img_pid, struct pagemap *pm, int uffd,
		      struct ranges *ranges)
{
	pthread_rwlockattr_t ra;
	struct proc *p = calloc(1, sizeof(*p));

	if (!p) {
		close(uffd);
		ranges_free(ranges);
		return NULL;
	}
	p->s = s;
	p->pid = pid;
	p->img_pid = img_pid;
	p->pm = pm;
	p->uffd = uffd;
	p->ranges = ranges;
	p->total = ranges_remaining(ranges);
	{
		struct rrun first;

		p->probe = ranges_next(ranges, 0, 1, &first) ? first.addr : 0;
	}
	atomic_init(&p->state, PROC_LIVE);
	atomic_init(&p->remaining, p->total);
	atomic_init(&p->hint, 0);
	pthread_rwlockattr_init(&ra);
	/* a thread waiting to read the uffd must not starve behind prefetch */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&p->evlock, &ra);
	pthread_rwlockattr_destroy(&ra);
	atomic_init(&p->reader_waiting, 0);
	{
		pthread_mutexattr_t ma;

		/* short sections taken by fault and prefetch threads at once: spin before sleeping */
		pthread_mutexattr_init(&ma);
		pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
		pthread_mutex_init(&p->lock, &ma);
		pthread_mutexattr_destroy(&ma);
	}
	return p;
}

/*
 * A background section is one COPY of at most a sub-chunk, tens of
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

/* One turn of a bounded spin: pauses, and says (0) when PROC_SPIN_NS have gone since the first turn. */
static int spin_on(unsigned i, uint64_t *t0)
{
	cpu_relax();
	if (i % 64 == 0) {
		uint64_t now = stats_now_ns();

		if (!*t0)
			*t0 = now;
		else if (now - *t0 > PROC_SPIN_NS)
			return 0;
	}
	return 1;
}

void proc_lock_reader(struct proc *p)
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

void proc_unlock_reader(struct proc *p)
{
	pthread_rwlock_unlock(&p->evlock);
	atomic_fetch_sub(&p->reader_waiting, 1);
}

void proc_lock_bg(struct proc *p)
{
	uint64_t t0 = 0;
	unsigned i;

	for (i = 0; atomic_load_explicit(&p->reader_waiting, memory_order_relaxed); i++)
		if (!spin_on(i, &t0))
			break;
	pthread_rwlock_rdlock(&p->evlock);
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

static void mark_present(struct proc *p, uint64_t addr, uint64_t nr_pages)
{
	uint64_t n;

	if (!nr_pages)
		return;
	pthread_mutex_lock(&p->lock);
	n = ranges_clear(p->ranges, addr, nr_pages);
	atomic_store_explicit(&p->remaining, ranges_remaining(p->ranges), memory_order_release);
	pthread_mutex_unlock(&p->lock);
	(void)n;
}

static int page_is_zero(const void *page, uint64_t psz)
{
	const uint64_t *w = page;
	uint64_t i;

	for (i = 0; i < psz / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return 0;
	return 1;
}

/*
 * One run of pages of one kind (SRC NULL: zero pages). EEXIST skips the
 * present page; ENOENT on several pages means the run now spans VMAs
 * (an mprotect split it without an event), so go page by page; ENOENT on
 * one page means it is no longer registered: nothing to place there.
 */
static int place(struct proc *p, uint64_t addr, const uint8_t *src, uint64_t nr_pages)
{
	struct stats *st = session_stats(p->s);
	uint64_t psz = session_page_size(p->s);
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

int proc_fill(struct proc *p, uint64_t addr, uint64_t nr_pages, const void *buf)
{
	uint64_t psz = session_page_size(p->s);
	const uint8_t *b = buf;
	uint64_t i = 0, j;
	int ret, z;

	while (i < nr_pages) {
		z = page_is_zero(b + i * psz, psz);
		for (j = i + 1; j < nr_pages && page_is_zero(b + j * psz, psz) == z; j++)
			;
		ret = place(p, addr + i * psz, z ? NULL : b + i * psz, j - i);
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}

/*
 * The scheduler lets a running thread use up its slice (milliseconds)
 * before a thread just woken on the same CPU runs, and does not always
 * move that one to an idle CPU at once (measured: a restored thread whose
 * page was in waited 1-3 ms behind a prefetch thread while the other CPU
 * idled). Background placement gives way every PROC_YIELD_NS instead.
 */
#define PROC_YIELD_NS 100000ull

void proc_bg_yield(void)
{
	static __thread uint64_t last;
	uint64_t now = stats_now_ns();

	if (now - last >= PROC_YIELD_NS) {
		if (last)
			sched_yield();
		last = now;
	}
}

int proc_place_run(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, const void *buf,
		   uint64_t sub, uint64_t *stop)
{
	uint64_t psz = session_page_size(p->s);
	uint64_t end = addr + nr_pages * psz, a = addr, sub_end;
	const uint8_t *b = buf;
	struct rrun now;
	int ret = 0, in;

	while (a < end && !ret) {
		uint64_t n = sub;

		if (n > PROC_BUSY_SUB && stats_within(&p->fault_ns, PROC_BUSY_NS))
			n = PROC_BUSY_SUB;
		sub_end = a + n * psz;
		if (sub_end > end)
			sub_end = end;
		proc_lock_bg(p);
		if (!proc_live(p)) {
			pthread_rwlock_unlock(&p->evlock);
			break;
		}
		while (a < sub_end) {
			/* the uffd reader waits: let it in now, go on after it */
			if (atomic_load_explicit(&p->reader_waiting, memory_order_relaxed))
				break;
			pthread_mutex_lock(&p->lock);
			in = ranges_run(p->ranges, a, (sub_end - a) / psz, &now);
			pthread_mutex_unlock(&p->lock);
			if (!in || now.img != img + (a - addr)) {
				a += psz;
				continue;
			}
			ret = proc_fill(p, a, now.nr_pages, b + (a - addr));
			if (ret)
				break;
			a += now.nr_pages * psz;
		}
		pthread_rwlock_unlock(&p->evlock);
		proc_bg_yield();
	}
	*stop = a;
	return ret;
}

void proc_fault_served(struct proc *p, uint64_t t0)
{
	struct stats *st = session_stats(p->s);
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
		if (!lazy && uffd_zero(p->uffd, probe, session_page_size(p->s), &done, &err) == UFFD_GONE)
			ret = -ESRCH;
	}
	pthread_rwlock_unlock(&p->evlock);
	return ret;
}

int proc_zero_fault(struct proc *p, uint64_t addr)
{
	return place(p, addr, NULL, 1);
}

static void update_remaining(struct proc *p)
{
	atomic_store_explicit(&p->remaining, ranges_remaining(p->ranges), memory_order_release);
}

static int apply_event(struct proc *p, const struct uffd_msg *m, struct lp_err *e)
{
	int ret = 0;

	atomic_store(&p->noent_streak, 0);

	switch (m->event) {
	case UFFD_EVENT_REMAP:
		log_debug("pid %d: remap 0x%llx -> 0x%llx len 0x%llx", p->pid,
			  (unsigned long long)m->arg.remap.from, (unsigned long long)m->arg.remap.to,
			  (unsigned long long)m->arg.remap.len);
		/* journaled first: a daemon restarted after this point must know it */
		persist_add(session_persist(p->s), PREC_REMAP, p->id, m->arg.remap.from, m->arg.remap.to,
			    m->arg.remap.len);
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
		persist_add(session_persist(p->s), PREC_DROP, p->id, m->arg.remove.start, m->arg.remove.end, 0);
		pthread_mutex_lock(&p->lock);
		ranges_drop(p->ranges, m->arg.remove.start, m->arg.remove.end);
		update_remaining(p);
		pthread_mutex_unlock(&p->lock);
		return 0;
	case UFFD_EVENT_FORK:
		return session_fork_child(p->s, p, (int)m->arg.fork.ufd, e);
	default:
		return lp_err_set(e, EPROTO, "pid %d: unexpected uffd event 0x%x", p->pid, m->event);
	}
}

int proc_drain(struct proc *p, uint64_t *faults, int max, int *more, struct lp_err *e)
{
	uint64_t pmask = ~(session_page_size(p->s) - 1);
	struct uffd_msg msgs[32];
	int nf = 0, n, i, ret;

	*more = 0;
	while (nf < max) {
		int want = max - nf < 32 ? max - nf : 32;

		n = uffd_read(p->uffd, msgs, want);
		if (n < 0)
			return lp_err_set(e, -n, "pid %d: reading its userfaultfd: %s", p->pid,
					  n == -EPIPE ? "end of file" : strerror(-n));
		for (i = 0; i < n; i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
				faults[nf++] = msgs[i].arg.pagefault.address & pmask;
				continue;
			}
			ret = apply_event(p, &msgs[i], e);
			if (ret)
				return ret;
		}
		if (n < want)
			return nf;
	}
	*more = 1;
	return nf;
}

void proc_finish(struct proc *p, enum proc_state why)
{
	uint64_t faults[64];
	struct lp_err e;
	int more, n;

	pthread_rwlock_wrlock(&p->evlock);
	if (atomic_load(&p->state) != PROC_LIVE ||
	    (why == PROC_DONE && atomic_load(&p->remaining) != 0)) {
		pthread_rwlock_unlock(&p->evlock);
		return;
	}
	/*
	 * Read what is queued: a FORK must be taken (its child has a uffd of
	 * its own to serve); faults need nothing, closing the uffd wakes them
	 * and the kernel then fills holes with zeros as for any anon page.
	 */
	if (why == PROC_DONE) {
		do {
			n = proc_drain(p, faults, 64, &more, &e);
			if (n < 0 && n != -EPIPE)
				log_warn("%s", e.msg);
		} while (n >= 0 && more);
	}
	atomic_store_explicit(&p->state, why, memory_order_release);
	persist_add(session_persist(p->s), PREC_DONE, p->id, 0, 0, 0);
	persist_drop_fd(session_persist(p->s), p->id);
	fault_unwatch(p);
	close(p->uffd);
	p->uffd = -1;
	pthread_rwlock_unlock(&p->evlock);
	log_info("pid %d%s: %s", p->pid, p->forked ? " (forked child)" : "",
		 why == PROC_DONE ? "complete" : "gone");
	session_proc_ended(p->s, p);
}
