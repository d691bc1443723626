/* SPDX-License-Identifier: MIT */
/* err: an error text filled by lower layers, logged once by the caller. */
#ifndef LP_ERR_H
#define LP_ERR_H

#include <stddef.h>

/*
 * Lower layers (images, pagemap, uffd, sources) never log. A function that
 * fails returns -errno and, when given a non-NULL struct lp_err, writes one
 * line saying what failed and where (file and offset, peer, pid, address).
 */
struct lp_err {
	char msg[512];
};

/* Formats into e->msg (if e is non-NULL) and returns -errnum. */
int lp_err_set(struct lp_err *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message. */
void lp_err_prefix(struct lp_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
