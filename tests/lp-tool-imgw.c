/* SPDX-License-Identifier: MIT */
/* lp-tool-imgw: buffered writer of CRIU image files. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "lp-tool-imgw.h"

#define IMGW_BUF (1u << 20)

struct imgw {
	int fd;
	int err;		/* first error, -errno */
	size_t len;
	char name[256];
	char buf[IMGW_BUF];
};

static int imgw_write_all(struct imgw *w, const void *p, size_t n)
{
	int ret = io_write_full(w->fd, p, n);

	return ret ? (w->err = ret) : 0;
}

static int imgw_flush(struct imgw *w)
{
	int r;

	if (w->err)
		return w->err;
	r = imgw_write_all(w, w->buf, w->len);
	w->len = 0;
	return r;
}

static int imgw_put(struct imgw *w, const void *p, size_t n)
{
	if (w->err)
		return w->err;
	if (n > sizeof(w->buf) - w->len) {
		if (imgw_flush(w))
			return w->err;
		if (n >= sizeof(w->buf))
			return imgw_write_all(w, p, n);
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

struct imgw *imgw_open(int dirfd, const char *name, uint32_t magic)
{
	struct imgw *w = malloc(sizeof(*w));
	uint32_t head[2];

	if (!w)
		return NULL;
	w->len = 0;
	w->err = 0;
	strncpy(w->name, name, sizeof(w->name) - 1);
	w->name[sizeof(w->name) - 1] = 0;
	w->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int e = errno;

		free(w);
		errno = e;
		return NULL;
	}
	if (magic == INVENTORY_MAGIC) {
		head[0] = magic;
		imgw_put(w, head, 4);
	} else if (magic) {
		head[0] = IMG_COMMON_MAGIC;
		head[1] = magic;
		imgw_put(w, head, 8);
	}
	return w;
}

int imgw_msg(struct imgw *w, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint32_t len = (uint32_t)n;
	uint8_t *p;

	if (w->err)
		return w->err;
	p = malloc(n ? n : 1);
	if (!p)
		return w->err = -ENOMEM;
	protobuf_c_message_pack(msg, p);
	imgw_put(w, &len, 4);
	imgw_put(w, p, n);
	free(p);
	return w->err;
}

int imgw_raw(struct imgw *w, const void *buf, size_t len)
{
	return imgw_put(w, buf, len);
}

int imgw_close(struct imgw *w)
{
	int r;

	if (!w)
		return 0;
	r = imgw_flush(w);
	if (close(w->fd) && !r)
		r = -errno;
	free(w);
	return r;
}

const char *imgw_name(const struct imgw *w)
{
	return w->name;
}
