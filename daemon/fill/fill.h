/* SPDX-License-Identifier: MIT */
/* fill: what a session hands down to the threads that fill its processes (no thread of its own). */
#ifndef LP_FILL_H
#define LP_FILL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct persist;
struct source;
struct stats;
struct workq;

/*
 * One session's filling context: set up by the session before any thread
 * starts and read-only afterwards (except the id counter, under its lock).
 * The fault threads, the background threads and each process get it; none
 * of them knows the session.
 */
struct fill {
	uint64_t psz;
	struct stats *stats;
	struct source *src;
	struct persist *journal;	/* NULL when the session is not kept for a restart */
	struct workq *q;
	unsigned fault_around;		/* pages a fault near the previous one fills, its own included */
	uint64_t chunk;			/* pages a background read asks for */
	uint64_t section_ns;		/* a background COPY section holds a process this long at most */
	bool replay_only;		/* --no-prefetch with a working set: background threads replay it, nothing else */

	pthread_mutex_t id_lock;
	uint32_t next_id;
};

void fill_init(struct fill *f, uint64_t psz);
void fill_destroy(struct fill *f);

/*
 * A number for a new process (a PREC_PROC or PREC_FORK record, with A and
 * B and C as persist.h says), journaled in the same step: the journal lists the
 * processes in the order of their numbers, as a restart replays them.
 */
uint32_t fill_new_proc(struct fill *f, uint32_t type, uint64_t a, uint64_t b, uint64_t c);

#endif
