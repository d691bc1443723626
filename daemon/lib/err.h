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
	int code;		/* the errno lp_err_set was given (positive) */
};

/* Formats into e->msg (if e is non-NULL), keeps errnum in e->code and returns -errnum. */
int lp_err_set(struct lp_err *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The -errno of a failure E describes: what a caller returns after a
 * constructor gave NULL (which always fills E), instead of a guess.
 */
int lp_err_errno(const struct lp_err *e);

/* Prepends "prefix: " to an existing message. */
void lp_err_prefix(struct lp_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
