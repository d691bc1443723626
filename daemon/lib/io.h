/* SPDX-License-Identifier: MIT */
/* io: whole reads and writes on fds that may return short counts or EINTR. */
#ifndef LP_IO_H
#define LP_IO_H

#include <stddef.h>

/* Reads exactly N bytes: 0, -EPIPE on EOF (even after a part), or -errno. */
int io_read_full(int fd, void *buf, size_t n);
/* Writes exactly N bytes: 0 or -errno. */
int io_write_full(int fd, const void *buf, size_t n);

/*
 * A page-aligned buffer of N bytes (free with free()), NULL on ENOMEM.
 * The kernel copies into and out of page-aligned buffers several times
 * faster (pread, recv, UFFDIO_COPY): malloc's 16-byte offset costs 3x.
 */
void *io_page_alloc(size_t n);

#endif
