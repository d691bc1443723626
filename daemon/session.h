/* SPDX-License-Identifier: MIT */
/* session: one lazy restore: its images, its restore socket, its processes and threads. */
#ifndef LP_SESSION_H
#define LP_SESSION_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

struct session;
struct proc;
struct stats;
struct source;

struct session_cfg {
	const char *images_dir;
	const char *work_dir;		/* where lazy-pages.socket goes; default images_dir */
	int fault_threads;
	int prefetch_threads;
	unsigned fault_around;		/* pages filled by a fault, its own included */
	uint64_t chunk_pages;		/* prefetch read size */
	uint64_t sub_pages;		/* prefetch pages per locked COPY section */
	uint32_t max_procs;		/* limit on processes, forks included */
	/* --page-server: lazy pages come from a page server */
	int remote;
	const char *ps_address, *ps_port;
	int ps_socket;			/* --ps-socket FD, or -1 */
	int ps_wire;			/* 3 or 4 */
};

void session_cfg_defaults(struct session_cfg *cfg);

/* Opens and checks the images (inventory, pstree); starts no thread. */
struct session *session_new(const struct session_cfg *cfg, struct lp_err *e);
void session_free(struct session *s);	/* stops every thread; accepts NULL */

/* Creates lazy-pages.socket in the work dir and listens. */
int session_listen(struct session *s, struct lp_err *e);

/*
 * Accepts the restore's connection, takes the pstree's number of task
 * records, then the marker; starts prefetch; returns when every process
 * is complete or gone (0), or on failure (-errno, E says why).
 */
int session_serve(struct session *s, struct lp_err *e);

/* One line: processes, pages copied, zero pages, faults, p50/p99, seconds. */
void session_summary(struct session *s, FILE *f);

/* For the threads. */
struct stats *session_stats(struct session *s);
struct source *session_source(struct session *s);
struct remote *session_remote(struct session *s);	/* NULL with local images */
uint64_t session_page_size(const struct session *s);
int session_fork_child(struct session *s, struct proc *parent, int ufd, struct lp_err *e);
void session_proc_ended(struct session *s, struct proc *p);
/* A live process with lazy pages left, round robin from *CURSOR; waits; NULL once stopping. */
struct proc *session_next_work(struct session *s, unsigned *cursor);
/* Fails the session (the first message is kept and logged). */
void session_fail(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
