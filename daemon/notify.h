/* SPDX-License-Identifier: MIT */
/* notify: the systemd notification protocol (READY, STATUS, WATCHDOG) through sd-daemon, and what systemd says of our unit. */
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
 * Asks systemd (its private socket, else the system bus; 2 s at most)
 * for FileDescriptorStoreMax= of the unit this process runs in: 0 or
 * -errno (not systemd, no answer).
 */
int notify_manager_fdstore_max(unsigned *out);
/*
 * Is a job queued or running for this process's unit (a stop or a
 * restart)? 1 yes, 0 no, -errno if systemd cannot be asked. In
 * ExecStopPost=, "no" means systemd is about to restart the service.
 */
int notify_manager_job_pending(void);

/*
 * The fds systemd passed (socket activation and the fd store), with their
 * names; the control socket is the listening unix stream socket among
 * them. Returns how many (0 outside systemd); free with notify_fds_free.
 */
int notify_listen_fds(int **fds, char ***names);
void notify_fds_free(int *fds, char **names, int n);
int notify_is_listener(int fd);

#endif
