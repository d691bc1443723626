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
	PREC_FORK = 2,		/* proc = the child, a = its parent's index, c = when (persist_ticks) */
	PREC_REMAP = 3,		/* a = from, b = to, c = len */
	PREC_DROP = 4,		/* a = start, b = end (REMOVE, UNMAP) */
	PREC_DONE = 5,		/* the process is complete or gone */
	PREC_HOST = 6,		/* a = its pid in the daemon's pid namespace, b = its start time (ticks) */
};

struct persist_rec_t {
	uint32_t type;
	uint32_t proc;		/* index in the session */
	uint64_t a, b, c;
};

struct persist;
struct fdstore;

/*
 * Opens STATE/<ID>/ afresh and writes its session file (KEY=VALUE lines
 * in TEXT); with TEXT NULL, reopens an existing one to append to its
 * journal (a session resumed after a restart keeps its whole history).
 * Uffds go to FS (may be NULL: none are kept).
 */
int persist_open(const char *state, uint32_t id, const char *text, struct fdstore *fs, struct persist **out,
		 struct lp_err *e);
/*
 * Slots in the fd store: RECORDS for the processes of pstree.img, before
 * the restore (-ENOSPC if they do not fit); ADOPT for uffds a restarted
 * daemon was given back (they are in the store already).
 */
int persist_reserve(struct persist *p, unsigned records);
void persist_adopt(struct persist *p, unsigned kept);
/*
 * A slot for one more process (a record, or a FORK's child): 0 or
 * -ENOSPC. With FORCE it is counted even so (still -ENOSPC: the fd must
 * not be sent). P NULL: 0.
 */
int persist_take_slot(struct persist *p, int forked, int force);
/* Appends one record. Thread-safe. */
void persist_add(struct persist *p, uint32_t type, uint32_t proc, uint64_t a, uint64_t b, uint64_t c);
/* Hands FD (after persist_take_slot) to the fd store as lp-<id>-<proc>; FD < 0: it is there already. */
void persist_store_fd(struct persist *p, uint32_t proc, int fd);
/* The process is over: its fd leaves the store, its slot is free again. */
void persist_drop_fd(struct persist *p, uint32_t proc);
/*
 * Another fd of the session (a hand-off's memory file) in a slot of its
 * own, as lp-<id>-WHAT until the session is closed: 0 or -ENOSPC. With FD
 * < 0 it is in the store already (a restarted daemon was given it back).
 */
int persist_store_named(struct persist *p, const char *what, int fd);
/* The session is over: removes its directory, frees its slots. Frees. Accepts NULL. */
void persist_close(struct persist *p, int remove);

/* Reading back at start: the session file's text and the journal's records (malloc'ed). */
int persist_load(const char *state, uint32_t id, char **text, struct persist_rec_t **recs, size_t *n,
		 struct lp_err *e);

/* Now, in the unit of a process's start time (clock ticks since boot, /proc/PID/stat field 22). */
uint64_t persist_ticks(void);

/* One process of a journal, in order, as far as records say (no images needed). */
struct persist_proc {
	int32_t pid;		/* the pid the restore sent; a fork child: its parent's */
	int32_t host;		/* in the daemon's pid namespace, 0 if not known */
	uint64_t start;		/* its start time, with HOST */
	int forked;
	uint32_t parent;	/* forked: the parent's index */
	uint64_t fork_ticks;	/* forked: when the FORK was read */
	int done;
};

/* The processes of a journal (malloc'ed, *NP of them); stops at the first record out of order. */
int persist_procs(const struct persist_rec_t *recs, size_t n, struct persist_proc **out, size_t *np);

#endif
