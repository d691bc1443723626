/* SPDX-License-Identifier: MIT */
/* restore_sock: reading task records and the marker exactly as criu restore sends them. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "restore_sock.h"
#include "uffd.h"

int restore_sock_listen(const char *workdir, int *out, struct lp_err *e)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd, n;
	mode_t old;

	n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", workdir, LAZY_PAGES_SOCK_NAME);
	if (n < 0 || (size_t)n >= sizeof(sun.sun_path))
		return lp_err_set(e, ENAMETOOLONG, "%s/%s: socket path longer than %zu bytes", workdir,
				  LAZY_PAGES_SOCK_NAME, sizeof(sun.sun_path) - 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lp_err_set(e, errno, "socket: %s", strerror(errno));
	if (unlink(sun.sun_path) < 0 && errno != ENOENT) {
		lp_err_set(e, errno, "%s: cannot remove old socket: %s", sun.sun_path, strerror(errno));
		goto fail;
	}
	/* only the owner (root, for criu restore) may connect */
	old = umask(0077);
	n = bind(fd, (struct sockaddr *)&sun, len);
	umask(old);
	if (n < 0) {
		lp_err_set(e, errno, "%s: bind: %s", sun.sun_path, strerror(errno));
		goto fail;
	}
	if (listen(fd, 10) < 0) {
		lp_err_set(e, errno, "%s: listen: %s", sun.sun_path, strerror(errno));
		goto fail;
	}
	/*
	 * Every record then carries its sender's pid (accept passes the flag
	 * on): each restored task sends its own, so a restarted daemon can
	 * find, and kill, a process whose uffd it did not get back.
	 */
	n = 1;
	setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &n, sizeof(n));
	*out = fd;
	return 0;
fail:
	n = errno;
	close(fd);
	return -n;
}

int restore_sock_accept(int lfd, int *out, struct restore_peer *peer, struct lp_err *e)
{
	struct ucred uc;
	socklen_t l = sizeof(uc);
	int fd, one = 1;

	do
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return lp_err_set(e, errno, "accept on %s: %s", LAZY_PAGES_SOCK_NAME, strerror(errno));
	memset(peer, 0, sizeof(*peer));
	setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) == 0) {
		peer->pid = uc.pid;
		peer->uid = uc.uid;
		peer->gid = uc.gid;
	}
	snprintf(peer->name, sizeof(peer->name), "restore peer pid %d uid %u", (int)peer->pid,
		 (unsigned)peer->uid);
	*out = fd;
	return 0;
}

/* Reads exactly LEN bytes with recv (no fds expected here). */
static int read_exact(int fd, void *buf, size_t len, const struct restore_peer *peer, uint64_t *pos,
		      const char *what, struct lp_err *e)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = recv(fd, (char *)buf + got, len - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return lp_err_set(e, errno, "%s: offset %llu: reading %s: %s", peer->name,
					  (unsigned long long)*pos, what, strerror(errno));
		if (n == 0)
			return lp_err_set(e, EPIPE, "%s: offset %llu: connection closed %s %s (%zu of %zu bytes)",
					  peer->name, (unsigned long long)*pos, got ? "inside" : "before", what,
					  got, len);
		got += (size_t)n;
		*pos += (uint64_t)n;
	}
	return 0;
}

int restore_sock_recv_uffd(int fd, const struct restore_peer *peer, uint64_t *pos, int32_t pid, int *out,
			   pid_t *sender, struct lp_err *e)
{
	union {
		char buf[CMSG_SPACE(sizeof(int)) * 4];
		struct cmsghdr align;
	} ctl;
	char dummy;
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *c;
	int ufd = -1, nfds = 0, ret, *fds, i, k;
	ssize_t n;

	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return lp_err_set(e, errno, "%s: offset %llu: pid %d: receiving its userfaultfd: %s",
				  peer->name, (unsigned long long)*pos, pid, strerror(errno));
	if (n == 0)
		return lp_err_set(e, EPIPE, "%s: offset %llu: pid %d: connection closed before its userfaultfd",
				  peer->name, (unsigned long long)*pos, pid);
	*pos += (uint64_t)n;
	*sender = 0;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
			struct ucred uc;

			memcpy(&uc, CMSG_DATA(c), sizeof(uc));
			*sender = uc.pid;
		}
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		fds = (int *)CMSG_DATA(c);
		k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (i = 0; i < k; i++) {
			if (ufd < 0)
				ufd = fds[i];
			else
				close(fds[i]);
			nfds++;
		}
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		ret = lp_err_set(e, EPROTO, "%s: offset %llu: pid %d: control data truncated", peer->name,
				 (unsigned long long)*pos - 1, pid);
		goto fail;
	}
	if (nfds != 1) {
		ret = lp_err_set(e, EPROTO, "%s: offset %llu: pid %d: record carries %d file descriptors, expected one userfaultfd",
				 peer->name, (unsigned long long)*pos - 1, pid, nfds);
		goto fail;
	}
	if (uffd_check_fd(ufd) < 0) {
		ret = lp_err_set(e, EPROTO, "%s: offset %llu: pid %d: the fd received is not a userfaultfd",
				 peer->name, (unsigned long long)*pos - 1, pid);
		goto fail;
	}
	/* CRIU's fd is already non-blocking; another restorer's might not be */
	i = fcntl(ufd, F_GETFL);
	if (i >= 0 && !(i & O_NONBLOCK))
		fcntl(ufd, F_SETFL, i | O_NONBLOCK);
	*out = ufd;
	return 0;
fail:
	if (ufd >= 0)
		close(ufd);
	return ret;
}

int restore_sock_read_pid(int fd, const struct restore_peer *peer, uint64_t *pos, int32_t *pid,
			  struct lp_err *e)
{
	int ret;

	ret = read_exact(fd, pid, sizeof(*pid), peer, pos, "a task record", e);
	if (ret)
		return ret;
	if (*pid == 0 || *pid == INT32_MIN)
		return lp_err_set(e, EPROTO, "%s: offset %llu: invalid pid %d in task record", peer->name,
				  (unsigned long long)*pos - 4, *pid);
	return 0;
}

int restore_sock_read_marker(int fd, const struct restore_peer *peer, uint64_t *pos, struct lp_err *e)
{
	uint32_t m;
	int ret;

	ret = read_exact(fd, &m, sizeof(m), peer, pos, "the restore-finished marker", e);
	if (ret)
		return ret;
	if (m != LAZY_PAGES_RESTORE_FINISHED)
		return lp_err_set(e, EPROTO, "%s: offset %llu: expected the restore-finished marker 0x%08x, got 0x%08x",
				  peer->name, (unsigned long long)*pos - 4, LAZY_PAGES_RESTORE_FINISHED, m);
	return 0;
}
