/* SPDX-License-Identifier: MIT */
/* control: the control socket of lazy-pagesd --service and its protocol (proto/control.proto). */
#ifndef LP_CONTROL_H
#define LP_CONTROL_H

#include <sys/types.h>

#include "err.h"

struct control;
struct registry;

#define CONTROL_MAX_FRAME (1u << 20)
#define CONTROL_VERSION 1
#define CONTROL_MAX_CONNS 64

/*
 * The listening socket: FD if >= 0 (systemd's, kept as it is), else PATH,
 * bound afresh (its directory created if needed, an old socket removed)
 * with mode 0600, or 0660 and GROUP's gid (GROUP NULL: none). Root, our
 * own uid and GROUP's members may connect.
 */
int control_open(const char *path, const char *group, int fd, struct control **out, struct lp_err *e);
/* The listening fd, readable when a peer connects: then call control_accept. */
int control_fd(const struct control *ctl);
/* Accepts one connection; checks the peer; serves it against REG on a thread of its own. */
void control_accept(struct control *ctl, struct registry *reg);
/*
 * Ends every connection and waits for their threads (none uses the
 * registry afterwards), removes the socket file it bound, frees. Accepts NULL.
 */
void control_close(struct control *ctl);

/*
 * Serves one connection on FD on the calling thread, as a peer PID/UID,
 * as control_accept's threads do: requests until EOF or a framing error,
 * each answered on FD. FD stays open. (The fuzzer's way in.)
 */
void control_serve(struct registry *reg, int fd, pid_t pid, uid_t uid);

#endif
