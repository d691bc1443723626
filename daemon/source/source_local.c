/* SPDX-License-Identifier: MIT */
/* source_local: lazy pages read from the pages-N.img files of the image directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "images.h"
#include "source.h"

static void local_submit(struct source *s, struct source_req *r)
{
	struct lp_err e;

	(void)s;
	if (pagemap_read(r->pm, r->img, r->nr_pages, r->buf, &e))
		r->done(r, 0, &e);
	else
		r->done(r, r->nr_pages, NULL);
}

static int local_close(struct source *s, int graceful, struct lp_err *e)
{
	(void)graceful;
	(void)e;
	free(s);
	return 0;
}

static const struct source_ops local_ops = {
	.submit = local_submit,
	.close = local_close,
	.name = "local images",
};

struct source *source_local_new(void)
{
	struct source *s = calloc(1, sizeof(*s));

	if (s)
		s->ops = &local_ops;
	return s;
}

void source_describe(struct source *s, char *buf, unsigned len)
{
	if (s->ops->describe)
		s->ops->describe(s, buf, len);
	else
		snprintf(buf, len, "%s", s->ops->name);
}
