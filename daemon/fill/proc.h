/* SPDX-License-Identifier: MIT */
/* proc: one restored process: its uffd, its lazy ranges, and how pages are placed into it. */
#ifndef LP_PROC_H
#define LP_PROC_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct fill;
struct pagemap;
struct ranges;
struct proc;

enum proc_state { PROC_LIVE, PROC_DONE, PROC_GONE };

/* ENOENTs with no event between them: the VMA really is not registered */
#define PROC_NOENT_LIMIT 4096
/* background reads of one process in flight at once (a hint against asking twice) */
#define PROC_MAX_INFLIGHT 64
/* background placement COPYs at most this many pages at once, so a waiting uffd reader gets in */
#define PROC_YIELD_PAGES 64
/* layout events read per call, FORKs among them */
#define PROC_MAX_MSGS 32

/*
 * Takes ownership of UFFD and RANGES (both freed on failure: NULL).
 * ID: the process's number in the session (fill_new_proc). PM is borrowed.
 */
struct proc *proc_new(struct fill *f, uint32_t id, int32_t pid, uint32_t img_pid, struct pagemap *pm,
		      int uffd, struct ranges *ranges);
/* Accepts NULL; closes the uffd if still open. */
void proc_free(struct proc *p);

/* What the others may know of it. */
struct proc_info {
	uint32_t id;
	int32_t pid;			/* as the restore sent it (the ancestor's, for a fork child) */
	uint32_t img_pid;		/* whose pagemap serves it */
	struct pagemap *pm;
	bool forked;
	uint32_t parent_id;		/* forked: its parent's number */
	enum proc_state state;
	uint64_t total, remaining, faults;
	double fault_p99_us;
	uint64_t probe;			/* a lazy address, to recognise the process in /proc */
};
void proc_info(struct proc *p, struct proc_info *out);
int32_t proc_pid(const struct proc *p);
uint32_t proc_id(const struct proc *p);
bool proc_live(struct proc *p);
uint64_t proc_remaining(struct proc *p);
/* Recovery: it ended before the restart (PROC_DONE, PROC_GONE), or is not served after it. */
void proc_set_ended(struct proc *p, enum proc_state state);
void proc_set_forked(struct proc *p, uint32_t parent_id);

/*
 * After a restart: wakes every thread of the process that waits on a fault
 * the killed daemon had read but not answered (the kernel does not queue
 * that message again), so that it faults anew. 0 or -errno.
 */
int proc_wake(struct proc *p);

/* Adds the uffd to epoll instance EPFD (event data: P); proc_finish takes it out again. */
int proc_watch(struct proc *p, int epfd);
int proc_uffd(const struct proc *p);

/*
 * The fault path. Reads P's uffd (as its one reader, exclusive against
 * every COPY into P) and applies the layout events read: REMAP, REMOVE,
 * UNMAP (journaled), FORK: each FORK's child becomes a process of its own,
 * numbered and journaled at once (its ranges are its parent's at the
 * fork), returned in CHILDREN (up to PROC_MAX_MSGS; *NCHILD) for the
 * caller to add to the session. Page-fault addresses go to FAULTS (at most
 * MAX). Returns the number of faults or -errno (-EPIPE: the uffd has
 * gone; -ENOENT: the process is no longer live). *MORE: messages may
 * remain. E says why on failure; children already made are still returned.
 */
int proc_read(struct proc *p, uint64_t *faults, int max, int *more, struct proc **children, int *nchild,
	      struct lp_err *e);

/*
 * The lazy run a fault at ADDR should ask for: from ADDR, up to WINDOW
 * pages when it is near the previous fault (a reader going on from there),
 * else the one page (a random reader would wait behind the rest). False if
 * the page at ADDR is not lazy (proc_place_fault then gives it a zero page
 * or finds it present). Remembers ADDR as a hint for background fill.
 */
bool proc_fault_run(struct proc *p, uint64_t addr, unsigned window, uint64_t *img, uint64_t *nr_pages);

/*
 * Places the fault's page: NR_PAGES pages read for image address IMG
 * (NR_PAGES 0: none were read: the page is not lazy) at ADDR, ADDR's
 * first. Each page goes in only if it is still lazy for that image address;
 * if the fault's page is no longer lazy at all, it gets a zero page (it
 * was dropped, or another COPY placed it: EEXIST). Returns 0 once the
 * faulting thread is woken; 1 if the fault's page is lazy for another
 * image address now (a REMAP moved pages there: ask again); -EAGAIN (an
 * event is queued: read it, then serve the fault again); -ESRCH (gone);
 * -errno.
 */
int proc_place_fault(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, const void *buf);

/* Counts a fault served, read at T0 (ns, stats_now_ns), in the process's and the session's figures. */
void proc_fault_served(struct proc *p, uint64_t t0);

/*
 * The background path. The next run to read (at most MAX pages), near
 * where faults happened lately, else from where the last one ended, and
 * not overlapping a run already picked and not yet put back: recorded as
 * in flight. False if nothing lazy is left that is not in flight (*NONE:
 * nothing lazy is left at all).
 */
bool proc_pick(struct proc *p, uint64_t max, uint64_t *addr, uint64_t *img, uint64_t *nr_pages, bool *none);
/* The run picked at ADDR is done with; CURSOR, if not 0: where to go on from (it stopped early). */
void proc_unpick(struct proc *p, uint64_t addr, uint64_t cursor);

/*
 * Places up to MAX of NR_PAGES pages read for image address IMG at ADDR
 * in one section under P's event lock (shared): each page only if it is
 * still lazy for that image address, all-zero pages with ZEROPAGE. Ends
 * the section early when the uffd reader waits for the lock. *STOP: up to
 * where pages were dealt with. Returns 0, -EAGAIN (an event is queued:
 * go on from *STOP after it is read), -ESRCH (gone), -errno; 0 with
 * *STOP == ADDR + NR_PAGES pages once all is done, and 0 doing nothing
 * if the process is no longer live.
 */
int proc_place_section(struct proc *p, uint64_t addr, uint64_t img, uint64_t nr_pages, uint64_t max,
		       const void *buf, uint64_t *stop);

/*
 * Replay (ws.h): the first lazy run inside [ADDR, ADDR + MAX pages), not
 * marked in flight and not moving the background cursor. False if none
 * of those pages is lazy any more.
 */
bool proc_pick_run(struct proc *p, uint64_t addr, uint64_t max, uint64_t *start, uint64_t *img, uint64_t *nr_pages);

/* A fault happened since the last background pick: proc_pick goes on from there. */
bool proc_hinted(struct proc *p);

/* The process's working-set track (ws.h), NULL if none (a forked child, a hand-off). */
struct ws_track;
void proc_set_ws(struct proc *p, struct ws_track *w);
struct ws_track *proc_ws(const struct proc *p);

/*
 * Whether the process still exists: the kernel tells a uffd nothing when its
 * process exits, only an ioctl answers ESRCH. PROBE is an address outside
 * every mapping in practice (the lowest mappable page): a ZEROPAGE there
 * answers ENOENT while the process lives, and is skipped if PROBE is lazy.
 * Returns -ESRCH once the process has gone, 0 otherwise.
 */
int proc_check_alive(struct proc *p, uint64_t probe);

/* When a fault of this process was last read (stats_now_ns), 0 if never. */
uint64_t proc_last_fault_ns(struct proc *p);

/*
 * Ends the process's service: with PROC_DONE only once nothing is lazy;
 * with PROC_GONE when the process has gone. Reads the last events (as the
 * reader), journals it, takes the uffd out of its epoll and closes it.
 * True if this call ended it (the caller tells the session).
 */
bool proc_finish(struct proc *p, enum proc_state why, struct proc **children, int *nchild);

#endif
