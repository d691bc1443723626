/* SPDX-License-Identifier: MIT */
/* log: one line per call, written with a single write so threads do not mix. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Written by main before threads start, read-only afterwards. */
static int log_level = LOG_WARN;
static const char *log_ident = "lazy-pagesd";

void log_set_level(int level)
{
	log_level = level;
}

void log_set_ident(const char *ident)
{
	log_ident = ident;
}

int log_get_level(void)
{
	return log_level;
}

void log_msg(int level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	struct timespec ts;
	va_list ap;
	int n, m;

	if (level > log_level)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof(line), "%s[%d] %ld.%03ld %s: ", log_ident, (int)getpid(),
		     (long)ts.tv_sec, ts.tv_nsec / 1000000, names[level < 0 ? 0 : level > 3 ? 3 : level]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	n += m < 0 ? 0 : (m >= (int)sizeof(line) - n - 1 ? (int)sizeof(line) - n - 2 : m);
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
