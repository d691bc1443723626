/* SPDX-License-Identifier: MIT */
/* uffd: the ioctls the daemon issues on a restored process's userfaultfd. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "uffd.h"

static enum uffd_res classify(int err)
{
	switch (err) {
	case EEXIST:
		return UFFD_EXISTS;
	case EAGAIN:
		return UFFD_AGAIN;
	case ENOENT:
		return UFFD_NOENT;
	case ESRCH:
	case ENOSPC:
		return UFFD_GONE;
	default:
		return UFFD_ERR;
	}
}

enum uffd_res uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done,
			int *err)
{
	struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0 };

	*err = 0;
	if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
		*done = len;
		return UFFD_OK;
	}
	*err = errno;
	/* .copy holds the bytes copied before the failure, or -errno if none */
	*done = c.copy > 0 ? (uint64_t)c.copy : 0;
	return classify(*err);
}

enum uffd_res uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *done, int *err)
{
	struct uffdio_zeropage z = { .range = { .start = dst, .len = len }, .mode = 0 };

	*err = 0;
	if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0) {
		*done = len;
		return UFFD_OK;
	}
	*err = errno;
	*done = z.zeropage > 0 ? (uint64_t)z.zeropage : 0;
	return classify(*err);
}

int uffd_wake(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { .start = start, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &r) == 0 ? 0 : -errno;
}

int uffd_read(int uffd, struct uffd_msg *msgs, int max)
{
	ssize_t n = read(uffd, msgs, sizeof(*msgs) * (size_t)max);

	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (n == 0)
		return -EPIPE;
	if (n % sizeof(*msgs))
		return -EIO;
	return (int)(n / sizeof(*msgs));
}

int uffd_check_fd(int fd)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	return strcmp(link, "anon_inode:[userfaultfd]") == 0 ? 0 : -EINVAL;
}

const char *uffd_res_name(enum uffd_res r)
{
	static const char *const names[] = { "ok", "exists", "again", "noent", "gone", "error" };

	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}
