/* SPDX-License-Identifier: MIT */
/* fault: threads that read the uffds (faults and events) and serve faults first. */
#ifndef LP_FAULT_H
#define LP_FAULT_H

#include "err.h"

struct fill;
struct fault_pool;

/*
 * NTHREADS threads, each with its own epoll, watching the uffds of the
 * processes the session adds (workq_eventfd). A fault's own page is asked
 * for first, then the rest of its window (fill.fault_around pages when it
 * is near the previous fault); a reply that cannot be placed (the page
 * moved, or an event is queued) comes back to the thread and is served
 * again: a fault is never dropped. F must outlive the pool.
 */
struct fault_pool *fault_pool_new(const struct fill *f, int nthreads, struct lp_err *e);
/* Stops and joins the threads; accepts NULL, and a second call. */
void fault_pool_stop(struct fault_pool *fp);
/* Stops, then frees, once no read of the pool's is in flight any more (the source is closed). Accepts NULL. */
void fault_pool_free(struct fault_pool *fp);

#endif
