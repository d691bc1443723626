/* SPDX-License-Identifier: MIT */
/* source: where the bytes of lazy pages come from (local images now, a page server later). */
#ifndef LP_SOURCE_H
#define LP_SOURCE_H

#include <stdint.h>

#include "err.h"

struct pagemap;
struct source;

struct source_ops {
	/*
	 * Reads NR_PAGES pages at image address IMG of the process whose
	 * pagemap is PM into BUF. Synchronous; safe from many threads.
	 */
	int (*read)(struct source *s, struct pagemap *pm, uint64_t img, uint64_t nr_pages, void *buf,
		    struct lp_err *e);
	void (*destroy)(struct source *s);
	const char *name;
};

struct source {
	const struct source_ops *ops;
};

static inline int source_read(struct source *s, struct pagemap *pm, uint64_t img, uint64_t nr_pages,
			      void *buf, struct lp_err *e)
{
	return s->ops->read(s, pm, img, nr_pages, buf, e);
}

static inline void source_destroy(struct source *s)
{
	if (s)
		s->ops->destroy(s);
}

/* Pages from the image directory's pages files (and its parent chain). */
struct source *source_local_new(void);

/* Pages from a raw memory file (a hand-off session); takes FD. */
struct source *source_raw_new(int fd);

#endif
