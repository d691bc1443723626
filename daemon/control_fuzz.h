/* SPDX-License-Identifier: MIT */
/* control_fuzz: the control connection loop (frame reader, dispatcher) for tests/fuzz/fuzz-control. */
#ifndef LP_CONTROL_FUZZ_H
#define LP_CONTROL_FUZZ_H

#include <sys/types.h>

struct service;

/*
 * Serves one control connection on FD on the calling thread, as the
 * connection thread of control_accept does, as a peer PID/UID: frames
 * until EOF or a framing error, each answered on FD. Closes FD and calls
 * service_conn_leave(SVC, FD) at the end.
 */
void control_fuzz_conn(struct service *svc, int fd, pid_t pid, uid_t uid);

#endif
