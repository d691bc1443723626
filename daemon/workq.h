/* SPDX-License-Identifier: MIT */
/* workq: a session's processes and the work they give the fault and background threads. */
#ifndef LP_WORKQ_H
#define LP_WORKQ_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "proc.h"

struct fill;
struct workq;

/* Something done in the background and waiting for a thread to finish it (a page-server reply to place). */
struct workq_item {
	struct workq_item *next;
};

/* At most MAX_PROCS processes (forks included). F: the session's, for its journal. */
struct workq *workq_new(const struct fill *f, uint32_t max_procs, struct lp_err *e);
/* Frees every process too. Accepts NULL. */
void workq_free(struct workq *q);

/*
 * Adds P (taken) to the session: counted live unless it has finished
 * already, its uffd put into the journal's fd store in a slot of its own
 * (with KEPT, a restarted daemon's: it is there already), and queued for a
 * fault thread (workq_eventfd). Past the limit on processes, or with no
 * slot left in the fd store (a fork's child: a record's slot was reserved
 * at session add), the session fails: -EMFILE, -ENOSPC; P is kept all the
 * same, to be killed with the others rather than left to read zeros.
 */
int workq_add(struct workq *q, struct proc *p, bool kept, struct lp_err *e);
/* Readable (EFD_SEMAPHORE-free counter) when processes were added that no fault thread watches yet. */
int workq_eventfd(struct workq *q);
/* One such process, or NULL. */
struct proc *workq_take_new(struct workq *q);

/* Ends P (proc_finish), adds the children of FORKs read on the way, and counts it out. */
void workq_finish(struct workq *q, struct proc *p, enum proc_state why);

/* The restore-finished marker: background work may start. */
void workq_start(struct workq *q);
/* Background threads leave workq_next. */
void workq_stop(struct workq *q);

/* Fails the session: the first message is kept and logged; every wait returns. */
void workq_fail(struct workq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first failure's message, or NULL. */
const char *workq_failure(struct workq *q);

/*
 * A background thread's next job, once the marker has come: an item
 * waiting (*IT), or, if MAY_READ(ARG) says so (asked under the queue's
 * lock: it must not call workq), a live process with lazy pages (*P),
 * processes that faulted lately first, then round robin from *CURSOR.
 * Waits for one; while reading is not allowed, WAIT_NS at most (then
 * true with neither). False once stopping or failed.
 */
bool workq_next(struct workq *q, unsigned *cursor, bool (*may_read)(void *arg), void *arg, uint64_t wait_ns,
		struct proc **p, struct workq_item **it);
/* An item for workq_next; wakes a thread. */
void workq_push(struct workq *q, struct workq_item *it);
/* Wakes background threads (something they wait for changed). */
void workq_kick(struct workq *q);

/* Waits until no process is live or the session failed (true), or WAIT_NS (0: forever) passed (false). */
bool workq_wait(struct workq *q, uint64_t wait_ns);
uint64_t workq_live(struct workq *q);

/* Calls FN for every process, in number order, under the queue's lock (FN must not call workq). */
void workq_each(struct workq *q, void (*fn)(void *arg, struct proc *p), void *arg);
size_t workq_count(struct workq *q);

#endif
