/* SPDX-License-Identifier: MIT */
/* fuzz: helpers shared by the libFuzzer targets (fd accounting, streams with SCM_RIGHTS markers). */
#ifndef LP_FUZZ_H
#define LP_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A broken invariant: report it the way a sanitizer would, so libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

#define FUZZ_MAX_FD 256

static inline uint32_t fuzz_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Open fds below FUZZ_MAX_FD: equal before and after an input, or the code under test leaked one. */
static inline int fuzz_count_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < FUZZ_MAX_FD; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

/* Kinds of fd a marker can attach. */
enum fuzz_fd_kind { FUZZ_FD_UFFD, FUZZ_FD_DEVNULL, FUZZ_FD_MEMFD, FUZZ_FD_UFFD_BLOCKING };

static inline int fuzz_make_fd(enum fuzz_fd_kind k)
{
	int fd;

	switch (k) {
	case FUZZ_FD_UFFD:
		return (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	case FUZZ_FD_UFFD_BLOCKING:
		return (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	case FUZZ_FD_MEMFD:
		fd = memfd_create("fuzz-mem", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, 16 * 4096) < 0) {
			close(fd);
			return -1;
		}
		return fd;
	default:
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	}
}

/*
 * Writes the fuzz input IN to the socket SK as a stream. The byte 0xFD is a
 * marker followed by a spec byte S:
 *   S & 0x80      a literal 0xFD data byte;
 *   otherwise     the data up to the next marker goes out in one sendmsg
 *                 carrying S & 3 fds (0: just a message boundary), the
 *                 first of kind (S >> 2) & 3 (enum fuzz_fd_kind), the
 *                 others of kind (S >> 4) & 3.
 * Sends without blocking and stops at a full socket buffer. Our copies of
 * the fds are closed once sent. Returns the bytes of data sent.
 */
static inline size_t fuzz_send_stream(int sk, const uint8_t *in, size_t len)
{
	uint8_t *seg = malloc(len ? len : 1);
	size_t i = 0, sent = 0;
	unsigned spec = 0;

	if (!seg)
		return 0;
	while (i < len) {
		size_t n = 0;
		int fds[3], nfds = 0;

		/* gather one segment: data bytes, literal markers, up to the next real marker */
		while (i < len) {
			if (in[i] != 0xfd) {
				seg[n++] = in[i++];
			} else if (i + 1 < len && (in[i + 1] & 0x80)) {
				seg[n++] = 0xfd;
				i += 2;
			} else {
				break;
			}
		}
		if (n) {
			struct iovec iov = { .iov_base = seg, .iov_len = n };
			union {
				char buf[CMSG_SPACE(3 * sizeof(int))];
				struct cmsghdr align;
			} ctl;
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
			ssize_t r;

			for (unsigned k = 0; k < (spec & 3); k++) {
				unsigned kind = (spec >> (k ? 4 : 2)) & 3;
				int fd = fuzz_make_fd((enum fuzz_fd_kind)kind);

				if (fd >= 0)
					fds[nfds++] = fd;
			}
			if (nfds) {
				struct cmsghdr *c;

				memset(&ctl, 0, sizeof(ctl));
				mh.msg_control = ctl.buf;
				mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
				c = CMSG_FIRSTHDR(&mh);
				c->cmsg_level = SOL_SOCKET;
				c->cmsg_type = SCM_RIGHTS;
				c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
				memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
			}
			r = sendmsg(sk, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
			for (int k = 0; k < nfds; k++)
				close(fds[k]);
			if (r <= 0)
				break;
			sent += (size_t)r;
			if ((size_t)r < n)
				break;
		}
		if (i >= len)
			break;
		/* at a marker */
		spec = i + 1 < len ? in[i + 1] : 0;
		i += 2;
	}
	free(seg);
	return sent;
}

#endif
