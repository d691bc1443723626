/* SPDX-License-Identifier: MIT */
/* source_local: lazy pages read from the pages-N.img files of the image directory. */
#include <errno.h>
#include <stdlib.h>

#include "images.h"
#include "source.h"

static int local_read(struct source *s, struct pagemap *pm, uint64_t img, uint64_t nr_pages, void *buf,
		      struct lp_err *e)
{
	(void)s;
	return pagemap_read(pm, img, nr_pages, buf, e);
}

static void local_destroy(struct source *s)
{
	free(s);
}

static const struct source_ops local_ops = {
	.read = local_read,
	.destroy = local_destroy,
	.name = "local images",
};

struct source *source_local_new(void)
{
	struct source *s = calloc(1, sizeof(*s));

	if (s)
		s->ops = &local_ops;
	return s;
}
