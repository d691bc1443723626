/* SPDX-License-Identifier: MIT */
/* uffd: thin wrappers for UFFDIO_COPY/ZEROPAGE and reading messages, with results classified. */
#ifndef LP_UFFD_H
#define LP_UFFD_H

#include <stdint.h>
#include <linux/userfaultfd.h>

enum uffd_res {
	UFFD_OK,	/* everything asked for is in */
	UFFD_EXISTS,	/* stopped at a page already present (success for that page) */
	UFFD_AGAIN,	/* a layout event is queued and unread (nothing done), or a COPY stopped at a present page
			   after placing *done bytes: go on from there */
	UFFD_NOENT,	/* the range is not (or no longer) a registered VMA */
	UFFD_GONE,	/* the process has gone (ESRCH, ENOSPC) */
	UFFD_ERR,	/* anything else: *err holds the errno */
};

/*
 * Copies LEN bytes from SRC to DST in the uffd's process, waking faulting
 * threads. *DONE is set to the bytes placed before the result (whole
 * pages); with UFFD_EXISTS the page at DST + *DONE is the present one.
 */
enum uffd_res uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done,
			int *err);
enum uffd_res uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *done, int *err);

/*
 * Wakes the threads waiting on a fault in [START, START + LEN): each faults
 * again, and a new message is queued. 0 or -errno (EINVAL: a range the
 * process's address space cannot hold).
 */
int uffd_wake(int uffd, uint64_t start, uint64_t len);

/* Reads up to MAX messages; returns the count, 0 for none (EAGAIN), -errno on error, -EPIPE on EOF. */
int uffd_read(int uffd, struct uffd_msg *msgs, int max);

/* Is FD a userfaultfd? (its /proc/self/fd link names anon_inode:[userfaultfd]) */
int uffd_check_fd(int fd);

const char *uffd_res_name(enum uffd_res r);

#endif
