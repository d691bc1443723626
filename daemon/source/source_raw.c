/* SPDX-License-Identifier: MIT */
/* source_raw: pages of a hand-off session, read from a raw memory file at the region's offset. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images.h"
#include "source.h"

struct source_raw {
	struct source base;	/* first */
	int fd;			/* owned */
	uint64_t psz;
};

/* IMG is the byte offset in the memory file (the ranges keep it as the image address). */
static int raw_read(struct source_raw *r, uint64_t img, uint64_t nr_pages, void *buf, struct lp_err *e)
{
	uint64_t len = nr_pages * r->psz, got = 0;
	ssize_t n;

	while (got < len) {
		n = pread(r->fd, (char *)buf + got, len - got, (off_t)(img + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return lp_err_set(e, errno, "memory file: offset %llu: %s", (unsigned long long)(img + got),
					  strerror(errno));
		if (n == 0)
			return lp_err_set(e, EIO, "memory file: offset %llu: end of file inside a region",
					  (unsigned long long)(img + got));
		got += (uint64_t)n;
	}
	return 0;
}

static void raw_submit(struct source *s, struct source_req *q)
{
	struct lp_err e;

	if (raw_read((struct source_raw *)s, q->img, q->nr_pages, q->buf, &e))
		q->done(q, 0, &e);
	else
		q->done(q, q->nr_pages, NULL);
}

static int raw_close(struct source *s, int graceful, struct lp_err *e)
{
	struct source_raw *r = (struct source_raw *)s;

	(void)graceful;
	(void)e;
	close(r->fd);
	free(r);
	return 0;
}

static const struct source_ops raw_ops = {
	.submit = raw_submit,
	.close = raw_close,
	.name = "memory file",
};

struct source *source_raw_new(int fd)
{
	struct source_raw *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->base.ops = &raw_ops;
	r->fd = fd;
	r->psz = pagemap_page_size();
	return &r->base;
}
