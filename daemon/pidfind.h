/* SPDX-License-Identifier: MIT */
/* pidfind: the host pids of restored processes, to kill them before their uffds close. */
#ifndef LP_PIDFIND_H
#define LP_PIDFIND_H

#include <stdint.h>
#include <sys/types.h>

/*
 * Processes that may be the restored process VPID: those whose innermost
 * NSpid is VPID, and every descendant of ROOT (the restore that handed it
 * over; 0: none), that have a mapping containing [START, END) registered
 * with a userfaultfd (smaps VmFlags "um"). Writes up to MAX pids to OUT;
 * returns how many, or -errno.
 */
int pidfind(pid_t vpid, pid_t root, uint64_t start, uint64_t end, pid_t *out, int max);

/* Is PID gone (no such process, or a zombie that can run no more)? */
int pid_gone(pid_t pid);

#endif
