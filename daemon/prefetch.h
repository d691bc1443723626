/* SPDX-License-Identifier: MIT */
/* prefetch: background threads that fill lazy ranges in large chunks, near recent faults first. */
#ifndef LP_PREFETCH_H
#define LP_PREFETCH_H

#include <stdint.h>

#include "err.h"

struct session;
struct prefetch_pool;

/*
 * NTHREADS threads, started by prefetch_pool_start, that wait in
 * session_next_work for the restore-finished marker, then read CHUNK
 * pages at a time from the source and place them in sub-chunks of SUB
 * pages (4 while the process faults), each under the process's evlock
 * (shared), so that a thread reading the uffd waits behind one at most.
 * Threads past the first ncpu - 1 (the first always works) are spare:
 * they work only while no process faulted lately and a core is free.
 */
struct prefetch_pool *prefetch_pool_new(struct session *s, int nthreads, uint64_t chunk, uint64_t sub,
					struct lp_err *e);
void prefetch_pool_start(struct prefetch_pool *pp);
/* Stops and joins the threads, then frees; accepts NULL. */
void prefetch_pool_free(struct prefetch_pool *pp);

#endif
