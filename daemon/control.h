/* SPDX-License-Identifier: MIT */
/* control: the control socket of lazy-pagesd --service and its protocol (proto/control.proto). */
#ifndef LP_CONTROL_H
#define LP_CONTROL_H

#include <sys/types.h>

#include "err.h"

struct service;

#define CONTROL_MAX_FRAME (1u << 20)
#define CONTROL_VERSION 1
#define CONTROL_MAX_CONNS 64

/*
 * Creates PATH's directory if needed, removes an old socket, binds with
 * mode 0600 (0660 and group GID if GID != -1) and listens.
 */
int control_listen(const char *path, gid_t gid, int *out, struct lp_err *e);

/* Accepts one connection on LFD; checks the peer; serves it on a thread of its own. */
void control_accept(struct service *svc, int lfd);

#endif
