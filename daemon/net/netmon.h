/* SPDX-License-Identifier: MIT */
/* netmon: watches the link and routes under a page-server connection with libnl-route. */
#ifndef LP_NETMON_H
#define LP_NETMON_H

#include <sys/socket.h>

#include "err.h"

struct netmon;

/*
 * Finds the interface that holds LOCAL (the connection's own address) and
 * calls CHANGED(ARG) from the monitor's thread whenever that link goes
 * down (not up, or no carrier) or a route through it is removed: the
 * connection should then be made again rather than wait for TCP to notice.
 */
int netmon_start(const struct sockaddr *local, void (*changed)(void *arg), void *arg, struct netmon **out,
		 struct lp_err *e);
void netmon_stop(struct netmon *nm);	/* accepts NULL */

#endif
