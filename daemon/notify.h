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

/* Control socket passed by systemd socket activation, or -1 (-errno on a wrong kind of fd). */
int notify_listen_fd(void);

#endif
