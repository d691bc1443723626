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
/* Is PID stopped (SIGSTOP, or traced), or gone? */
int pid_stopped(pid_t pid);

/* PID's start time (clock ticks after boot, field 22 of /proc/PID/stat): 0 or -errno. */
int pid_start(pid_t pid, uint64_t *start);

/*
 * Sends SIGKILL to PID if it is still the process that started at START
 * and (PROBE non-zero) still has a mapping containing PROBE; waits up to
 * 2 s for it to be gone. 1: killed; 0: not that process any more; -errno.
 */
int pid_kill_same(pid_t pid, uint64_t start, uint64_t probe);

/*
 * Children of PARENT that started between FROM and TO (clock ticks after
 * boot) and have a mapping containing PROBE; unless ANY, only those in
 * which it is not registered with a uffd. Up to MAX into OUT; how many,
 * or -errno. Used to find a forked child whose pid was never known.
 */
int pidfind_children(pid_t parent, uint64_t from, uint64_t to, uint64_t probe, int any, pid_t *out, int max);

#endif
