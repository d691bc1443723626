/* SPDX-License-Identifier: MIT */
/* prefetch: background threads that fill lazy ranges in large reads, near recent faults first. */
#ifndef LP_PREFETCH_H
#define LP_PREFETCH_H

#include "err.h"

struct fill;
struct prefetch_pool;

/*
 * NTHREADS threads, started by prefetch_pool_start, that wait in
 * workq_next for the restore-finished marker, then read fill.chunk pages
 * at a time (or what the source asks for) and place them into the
 * process in sections, each under the process's event lock (shared) and
 * sized to take fill.section_ns at most, so that the thread reading the
 * uffd waits behind one section at most. Replies from a page server are
 * placed by these threads, not by the receiver. Every thread works as
 * long as there is work; the kernel shares the CPUs between them and the
 * restored processes. F must outlive the pool.
 */
struct prefetch_pool *prefetch_pool_new(const struct fill *f, int nthreads, struct lp_err *e);
void prefetch_pool_start(struct prefetch_pool *pp);
/* Joins the threads (workq_stop makes them leave); accepts NULL, and a second call. */
void prefetch_pool_stop(struct prefetch_pool *pp);
/* Stops, then frees, once no read of the pool's is in flight any more (the source is closed). Accepts NULL. */
void prefetch_pool_free(struct prefetch_pool *pp);

#endif
