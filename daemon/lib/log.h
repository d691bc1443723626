/* SPDX-License-Identifier: MIT */
/* log: the daemon's log lines on stderr, for the layers that log. */
#ifndef LP_LOG_H
#define LP_LOG_H

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Set once by main before any thread starts. */
void log_set_level(int level);
/* The program name at the start of each line (default "lazy-pagesd"). */
void log_set_ident(const char *ident);
int log_get_level(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
