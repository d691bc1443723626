/* SPDX-License-Identifier: MIT */
/* control_fuzz: reaches control.c's static connection loop by compiling it into this unit (fuzzing only). */
#include "control.c"

#include "control_fuzz.h"

void control_fuzz_conn(struct service *svc, int fd, pid_t pid, uid_t uid)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->svc = svc;
	c->fd = fd;
	c->pid = pid;
	c->uid = uid;
	snprintf(c->name, sizeof(c->name), "fuzz peer pid %d uid %u", (int)pid, (unsigned)uid);
	conn_main(c);
}
