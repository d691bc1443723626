/* SPDX-License-Identifier: MIT */
/* restore_sock: CRIU's restore -> lazy-pages hand-off socket (spec §4), daemon side. */
#ifndef LP_RESTORE_SOCK_H
#define LP_RESTORE_SOCK_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define LAZY_PAGES_SOCK_NAME "lazy-pages.socket"
#define LAZY_PAGES_RESTORE_FINISHED 0x52535446u	/* "ReSTore Finished" */

/* Removes any old socket file, binds WORKDIR/lazy-pages.socket and listens. */
int restore_sock_listen(const char *workdir, int *out, struct lp_err *e);

struct restore_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[64];		/* "restore peer pid P uid U", for messages */
};

/* Accepts the one connection (CLOEXEC) and records who it is. */
int restore_sock_accept(int lfd, int *out, struct restore_peer *peer, struct lp_err *e);

/*
 * Reads the 4-byte pid that starts a task record (> 0 live, < 0 zombie).
 * Errors name the peer and the byte offset in the stream (*POS is
 * advanced by what was read).
 */
int restore_sock_read_pid(int fd, const struct restore_peer *peer, uint64_t *pos, int32_t *pid,
			  struct lp_err *e);

/*
 * Reads the rest of a live task's record: the 1-byte message that
 * carries its uffd with SCM_RIGHTS. The fd must be a userfaultfd; it is
 * returned with O_NONBLOCK set. *SENDER: the pid (in this pid namespace)
 * of the process that sent the message, 0 if unknown.
 */
int restore_sock_recv_uffd(int fd, const struct restore_peer *peer, uint64_t *pos, int32_t pid,
			   int *uffd, pid_t *sender, struct lp_err *e);

/* Reads the 4-byte restore-finished marker. */
int restore_sock_read_marker(int fd, const struct restore_peer *peer, uint64_t *pos, struct lp_err *e);

#endif
