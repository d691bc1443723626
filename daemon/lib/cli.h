/* SPDX-License-Identifier: MIT */
/* cli: what the lazy-pagesd and lazy-pages-server command lines share. */
#ifndef LP_CLI_H
#define LP_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <sys/types.h>

/* Parses ARG as a whole number in [LO, HI]; on error says so, naming PROG and OPT, and returns -1. */
int cli_num(const char *prog, const char *opt, const char *arg, long lo, long hi, long *out);

/* Writes TEXT to PATH through a temporary file, so a reader never sees half of it. 0 or -errno. */
int cli_write_file(const char *path, const char *text);
int cli_write_pid(const char *path, pid_t pid);

/*
 * Forks: the parent writes PIDFILE (if any) with the child's pid and
 * exits 0; the child starts a new session with stdio on /dev/null
 * (stderr kept if KEEP_STDERR) and returns 0.
 */
int cli_daemonize(const char *prog, const char *pidfile, bool keep_stderr);

/* -v (one level more) or -vN (CRIU's levels: 1 error, 2 warning, 3 info, 4 debug). 0 or -1. */
int cli_verbose(const char *prog, const char *arg);

/* --log-file PATH: stderr goes to PATH (appended, 0600); on error says so, naming PROG and PATH, and returns -1. */
int cli_log_file(const char *prog, const char *path);

/* Raises RLIMIT_NOFILE to its hard limit: each restored process costs fds. */
void cli_raise_fd_limit(void);

#endif
