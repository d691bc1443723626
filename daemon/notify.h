/* SPDX-License-Identifier: MIT */
/* notify: the systemd notification protocol (READY, STATUS, WATCHDOG) through sd-daemon. */
#ifndef LP_NOTIFY_H
#define LP_NOTIFY_H

#include <stdint.h>

/* All are no-ops outside systemd (no $NOTIFY_SOCKET). */
void notify_ready(void);
void notify_stopping(void);
void notify_status(const char *line);
void notify_watchdog(void);
/* The watchdog interval systemd asked for in microseconds, 0 if none. */
uint64_t notify_watchdog_usec(void);

/*
 * The fds systemd passed (socket activation and the fd store), with their
 * names; the control socket is the listening unix stream socket among
 * them. Returns how many (0 outside systemd); free with notify_fds_free.
 */
int notify_listen_fds(int **fds, char ***names);
void notify_fds_free(int *fds, char **names, int n);
int notify_is_listener(int fd);

#endif
