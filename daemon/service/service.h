/* SPDX-License-Identifier: MIT */
/* service: lazy-pagesd --service, many restore sessions at once behind a control socket. */
#ifndef LP_SERVICE_H
#define LP_SERVICE_H

#include "session.h"

struct service_cfg {
	const char *control_path;	/* default /run/lazy-pages/control.sock */
	const char *control_group;	/* NULL: 0600, root and this uid only */
	struct session_cfg defaults;	/* threads, chunk sizes of new sessions */
	const char *state_dir;		/* journals for a restart (used under systemd) */
};

/* Runs until SIGTERM/SIGINT and every live session has finished. Returns the exit code. */
int service_main(const struct service_cfg *cfg);

/*
 * ExecStopPost=: when systemd has a stop (or restart) job for the unit,
 * it closes the fd store once this returns (systemd 252 has no
 * FileDescriptorStorePreserve=), so the processes of sessions left in
 * STATE_DIR (the daemon was killed while it waited for them) are killed
 * now, before their uffds close. Without a job, a restart follows and
 * resumes them: nothing is done. Returns the exit code.
 */
int service_reap(const char *state_dir);

#endif
