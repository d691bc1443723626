/* SPDX-License-Identifier: MIT */
/* argnum: a number from the command line of a test tool, checked whole and bounded. */
#ifndef LP_ARGNUM_H
#define LP_ARGNUM_H

#include <errno.h>
#include <stdlib.h>

/* *OUT = S as a number (decimal, 0x hex, 0 octal) if it is one, all of it, and at most MAX: 0, else -EINVAL. */
static inline int argnum(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || end == s || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

#endif
