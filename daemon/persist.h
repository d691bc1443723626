/* SPDX-License-Identifier: MIT */
/* persist: what a restarted lazy-pagesd --service needs to resume its sessions (state dir + fd store). */
#ifndef LP_PERSIST_H
#define LP_PERSIST_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/*
 * Each session has a directory STATE/<id>/ with a text file "session"
 * (what it serves) and a binary "journal" of fixed records, appended in
 * order under the locks that order the events themselves: a process
 * taken (its uffd goes to the service manager's fd store, named
 * "lp-<id>-<proc>"), the layout events applied to its ranges, a fork.
 * Replaying the journal over the images gives the ranges as they were;
 * copying them again is safe, the kernel answers EEXIST for pages in.
 */
enum persist_rec {
	PREC_PROC = 1,		/* a = pid, b = image pid */
	PREC_FORK = 2,		/* proc = the child, a = its parent's index */
	PREC_REMAP = 3,		/* a = from, b = to, c = len */
	PREC_DROP = 4,		/* a = start, b = end (REMOVE, UNMAP) */
	PREC_DONE = 5,		/* the process is complete or gone */
};

struct persist_rec_t {
	uint32_t type;
	uint32_t proc;		/* index in the session */
	uint64_t a, b, c;
};

struct persist;

/*
 * Opens STATE/<ID>/ afresh and writes its session file (KEY=VALUE lines
 * in TEXT); with TEXT NULL, reopens an existing one to append to its
 * journal (a session resumed after a restart keeps its whole history).
 */
int persist_open(const char *state, uint32_t id, const char *text, struct persist **out, struct lp_err *e);
/* Appends one record. Thread-safe. */
void persist_add(struct persist *p, uint32_t type, uint32_t proc, uint64_t a, uint64_t b, uint64_t c);
/* Hands FD to the service manager's fd store as lp-<id>-<proc> (no-op outside systemd). */
void persist_store_fd(struct persist *p, uint32_t proc, int fd);
void persist_drop_fd(struct persist *p, uint32_t proc);
/* The session is over: removes its directory and stored fds. Frees. Accepts NULL. */
void persist_close(struct persist *p, int remove);

/* Reading back at start: the session file's text and the journal's records (malloc'ed). */
int persist_load(const char *state, uint32_t id, char **text, struct persist_rec_t **recs, size_t *n,
		 struct lp_err *e);

#endif
