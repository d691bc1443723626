/* SPDX-License-Identifier: MIT */
/* fault: threads that read the uffds (faults and events) and serve faults first. */
#ifndef LP_FAULT_H
#define LP_FAULT_H

#include "err.h"

struct session;
struct proc;
struct fault_pool;

/* NTHREADS threads, each with its own epoll; a fault fills up to WINDOW pages. */
struct fault_pool *fault_pool_new(struct session *s, int nthreads, unsigned window, struct lp_err *e);
/* Stops and joins the threads, then frees the pool; accepts NULL. */
void fault_pool_free(struct fault_pool *fp);

/* Gives P's uffd to one of the threads (the least loaded). */
int fault_watch(struct fault_pool *fp, struct proc *p);
/* Takes P's uffd out of its thread's epoll; caller holds P's evlock exclusive. */
void fault_unwatch(struct proc *p);

#endif
