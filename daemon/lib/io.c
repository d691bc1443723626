/* SPDX-License-Identifier: MIT */
/* io: loops over read()/write() until the whole buffer has moved. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io.h"

int io_read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EPIPE;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int io_write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

void *io_page_alloc(size_t n)
{
	void *p;

	return posix_memalign(&p, 4096, n ? n : 1) ? NULL : p;
}
