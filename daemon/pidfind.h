/* SPDX-License-Identifier: MIT */
/* pidfind: the host pids of restored processes, to kill them before their uffds close. */
#ifndef LP_PIDFIND_H
#define LP_PIDFIND_H

#include <stdint.h>
#include <sys/types.h>

/*
 * Processes that may be the restored process VPID: those whose innermost
 * NSpid is VPID (0: none), and every descendant of ROOT (the restore that
 * handed it over, or the process a child was forked from; 0: none) short
 * of the NSTOP pids in STOP and their descendants (other restored
 * processes), that have a mapping containing [START, END) registered with a
 * userfaultfd (smaps VmFlags "um"). Writes up to MAX pids to OUT; returns
 * how many, or -errno.
 */
int pidfind(pid_t vpid, pid_t root, const pid_t *stop, int nstop, uint64_t start, uint64_t end, pid_t *out,
	    int max);

/* Is PID gone (no such process, or a zombie that can run no more)? */
int pid_gone(pid_t pid);

#endif
