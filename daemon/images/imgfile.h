/* SPDX-License-Identifier: MIT */
/* imgfile: CRIU image framing (magics, length-prefixed entries), shared by images and pagemap. */
#ifndef LP_IMGFILE_H
#define LP_IMGFILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "images.h"

struct imgfile {
	FILE *f;
	char path[4096];	/* full path, for messages */
	uint64_t off;		/* byte offset of the next read */
	uint8_t *buf;		/* last entry read, reused */
	size_t cap;
};

/*
 * Opens NAME in D and checks its head for MAGIC as D's img_version says
 * (IMG_COMMON_MAGIC first with version 2, except for INVENTORY_MAGIC).
 * A missing file is -ENOENT with a message naming the path.
 */
int imgfile_open(struct imgdir *d, const char *name, uint32_t magic, struct imgfile *f,
		 struct lp_err *e);
void imgfile_close(struct imgfile *f);	/* accepts a zeroed or closed imgfile */

/*
 * Reads the next entry: 1 with *data and *len set (valid until the next call)
 * and *entry_off the offset of its length word, 0 at EOF on an entry
 * boundary, -errno on a truncated or oversize entry or a read error.
 */
int imgfile_next(struct imgfile *f, const uint8_t **data, size_t *len, uint64_t *entry_off,
		 struct lp_err *e);

/* The directory fd of D, for files read raw (pages-N.img). */
int imgdir_fd(const struct imgdir *d);

/*
 * The parent image dir of D, opened on first use (thread-safe): 0 with
 * *out set, or *out NULL when D has no "parent" link; -errno when the link
 * is broken, the chain is deeper than IMG_MAX_PARENTS or loops. Owned by D.
 */
int imgdir_parent(struct imgdir *d, struct imgdir **out, struct lp_err *e);

#endif
