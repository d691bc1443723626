/* SPDX-License-Identifier: MIT */
/* proc: one restored process: its uffd, its lazy ranges, and how pages are placed into it. */
#ifndef LP_PROC_H
#define LP_PROC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <linux/userfaultfd.h>

#include "err.h"
#include "stats.h"

struct session;
struct pagemap;
struct ranges;

enum proc_state { PROC_LIVE, PROC_DONE, PROC_GONE };

#define PROC_MAX_INFLIGHT 64
#define PROC_NOENT_LIMIT 4096	/* ENOENTs with no event between: the VMA is really not registered */
/*
 * While a process faults (a fault read in the last PROC_BUSY_NS), background
 * placement COPYs at most PROC_BUSY_SUB pages at a time: a fault waits
 * behind one such COPY (measured: p50 21 -> 17 us, p99 56 -> 38 us with 16
 * -> 4 pages, random reads of 1 GiB); with no faults, larger COPYs fill faster.
 */
#define PROC_BUSY_NS 2000000ull
#define PROC_BUSY_SUB 4

/*
 * Locking (design.md, "What the kernel does not resolve"):
 *  - evlock shared: held across "check the ranges, COPY, mark present" by
 *    fault and prefetch threads;
 *  - evlock exclusive: held by the thread that reads the uffd, across
 *    read() and the bookkeeping of the events it read, and to close it.
 *    So no COPY can land in a range between a REMOVE/UNMAP/REMAP being
 *    read and the ranges being updated. The lock prefers writers, so a
 *    reader of the uffd waits for at most one bounded COPY per thread.
 *    The reader takes it with proc_lock_reader, background placement
 *    with proc_lock_bg: the reader announces itself (reader_waiting),
 *    background sections end at the next COPY and wait, spinning, until
 *    it is done; so a fault costs no futex sleep and wake-up on either
 *    side (they cost more than the COPY itself).
 *  - lock: the ranges structure itself (short sections, under evlock).
 */
struct proc {
	struct session *s;
	unsigned id;			/* index in the session */
	int32_t pid;			/* pid the restore sent (the ancestor's, for a fork child) */
	uint32_t img_pid;		/* whose pagemap serves this process */
	int forked;			/* created by a FORK event */
	unsigned parent_id;		/* forked: the parent's index in the session */
	struct pagemap *pm;		/* borrowed from the session */
	int uffd;			/* owned; -1 once closed */
	void *fault_thread;		/* the thread whose epoll watches uffd */

	pthread_rwlock_t evlock;
	atomic_int reader_waiting;	/* proc_lock_reader callers waiting for or holding evlock */
	pthread_mutex_t lock;
	struct ranges *ranges;		/* under lock */
	uint64_t cursor;		/* prefetch position, under lock */
	uint64_t last_fault;		/* the fault thread's: the address of the last fault served */
	atomic_uint_fast64_t fault_ns;	/* when a fault was last read (stats_now_ns) */

	/* remote: background requests on the wire, to ask no page twice (a hint) */
	struct { uint64_t start, end; } infl[PROC_MAX_INFLIGHT];	/* under lock */
	int ninfl;

	/* single-page ENOENTs since the last event: a moved VMA answers ENOENT until its REMAP is read */
	atomic_uint noent_streak;

	atomic_int state;
	atomic_uint_fast64_t remaining;	/* lazy pages left (mirrors ranges) */
	atomic_uint_fast64_t hint;	/* where faults happened lately, 0 if none */
	uint64_t total;			/* lazy pages at start */
	uint64_t probe;			/* a lazy address, to recognise the process in /proc */
	atomic_uint_fast64_t faults;	/* faults served */
	struct hist fault;		/* their service times */
};

/* evlock exclusive for reading the uffd, and its release */
void proc_lock_reader(struct proc *p);
void proc_unlock_reader(struct proc *p);
/* Background work gives the CPU away (sched_yield) if it has run long enough since it last did. */
void proc_bg_yield(void);
/* evlock shared for background placement: after any reader waiting (pthread_rwlock_unlock releases) */
void proc_lock_bg(struct proc *p);

/* Takes ownership of UFFD and RANGES (both freed on failure). */
struct proc *proc_new(struct session *s, int32_t pid, uint32_t img_pid, struct pagemap *pm, int uffd,
		      struct ranges *ranges);
void proc_free(struct proc *p);		/* accepts NULL; the uffd must be closed or is closed */

/*
 * Places NR_PAGES pages at run-time ADDR from BUF: runs of all-zero pages
 * with ZEROPAGE, the rest with COPY; a page found present (EEXIST) counts
 * as done. Marks what went in (or was there) present in the ranges.
 * Caller holds evlock shared and has checked that the run is lazy.
 * Returns 0, -EAGAIN (an event is queued: let it be read, re-check, retry;
 * the pages before it are done), -ESRCH (the process has gone) or -errno.
 */
int proc_fill(struct proc *p, uint64_t addr, uint64_t nr_pages, const void *buf);

/*
 * Places NR_PAGES pages read for image address IMG at run-time ADDR, in
 * sections of at most SUB pages, each under evlock (shared): every page is
 * checked again first (still lazy, still holding the image address the
 * data was read for: a REMAP may have moved other pages there, a REMOVE
 * dropped it) and skipped if not. *STOP is where it stopped. Returns as
 * proc_fill; 0 if the process is no longer live.
 */
int proc_place_run(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, const void *buf,
		   uint64_t sub, uint64_t *stop);

/* Counts a fault served, read at T0 (ns), in the process's and the session's figures. */
void proc_fault_served(struct proc *p, uint64_t t0);

/*
 * Whether the process still exists: the kernel tells a uffd nothing when its
 * process exits, only an ioctl answers ESRCH. PROBE is an address outside
 * every mapping in practice (the lowest mappable page): a ZEROPAGE there
 * answers ENOENT while the process lives, and is skipped if PROBE is lazy.
 * Returns -ESRCH once the process has gone, 0 otherwise.
 */
int proc_check_alive(struct proc *p, uint64_t probe);
/* A zero page at ADDR for a fault outside the lazy ranges. Same returns. */
int proc_zero_fault(struct proc *p, uint64_t addr);

/*
 * Reads the uffd's messages and applies the layout events (REMAP, REMOVE,
 * UNMAP, FORK: a FORK adds the child to the session) under the exclusive
 * lock the caller holds. Page-fault addresses go to FAULTS (at most MAX).
 * Returns the number of faults, or -errno (-EPIPE: the uffd has gone).
 * *MORE is set when messages may remain unread.
 */
int proc_drain(struct proc *p, uint64_t *faults, int max, int *more, struct lp_err *e);

/*
 * Ends the process's service: with PROC_DONE only once nothing is lazy;
 * with PROC_GONE when the process has gone. Takes evlock exclusive, reads
 * the last events, closes the uffd. Must be called without evlock held.
 */
void proc_finish(struct proc *p, enum proc_state why);

static inline int proc_live(struct proc *p)
{
	return atomic_load_explicit(&p->state, memory_order_acquire) == PROC_LIVE;
}

#endif
