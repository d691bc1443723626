/* SPDX-License-Identifier: MIT */
/* err: formatting of error texts for the layer that logs them. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int lp_err_set(struct lp_err *e, int errnum, const char *fmt, ...)
{
	va_list ap;

	if (e) {
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
		e->code = errnum < 0 ? -errnum : errnum;
	}
	return errnum > 0 ? -errnum : errnum;
}

int lp_err_errno(const struct lp_err *e)
{
	return e && e->code > 0 ? -e->code : -EIO;
}

void lp_err_prefix(struct lp_err *e, const char *fmt, ...)
{
	char old[sizeof(e->msg)];
	size_t n;
	va_list ap;
	int m;

	if (!e)
		return;
	memcpy(old, e->msg, sizeof(old));
	va_start(ap, fmt);
	m = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	n = m < 0 ? 0 : (size_t)m;
	if (n + 2 >= sizeof(e->msg))
		return;
	e->msg[n++] = ':';
	e->msg[n++] = ' ';
	memcpy(e->msg + n, old, sizeof(e->msg) - n - 1);
	e->msg[sizeof(e->msg) - 1] = '\0';
}
