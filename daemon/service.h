/* SPDX-License-Identifier: MIT */
/* service: lazy-pagesd --service, many restore sessions at once behind a control socket. */
#ifndef LP_SERVICE_H
#define LP_SERVICE_H

#include <stdint.h>
#include <sys/types.h>

#include "session.h"

#define SERVICE_MAX_SESSIONS 256	/* listed at once, finished ones included */
#define SERVICE_KEEP_FINISHED 64	/* finished sessions kept for listing */
#define SERVICE_KEEP_SECONDS 600

struct service;

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

/* For the control connections. Each returns 0 or -errno with E set. */
struct service_add {
	const char *images_dir, *work_dir, *ps_address;
	unsigned ps_port, ps_wire, prefetch_threads;
	int ws_record, no_ws_replay;
	unsigned ws_record_seconds;
	const char *ws_replay;		/* absolute path, or NULL */
};

struct service_info {
	uint32_t id;
	int handoff;
	char images_dir[4096], work_dir[4096], socket_path[4200], page_server[128];
	char summary[512], error[512];
	struct session_snap snap;	/* procs owned */
};

struct service_status {
	pid_t pid;
	double uptime_s;
	unsigned active, total;
	int stopping;
	char line[256];
};

int service_add(struct service *svc, const struct service_add *a, uid_t uid, uint32_t *id, struct lp_err *e);
/* Takes UFFD and MEM_FD. */
int service_handoff(struct service *svc, int uffd, int mem_fd, const struct session_region *r, size_t n,
		    int32_t pid, pid_t peer, uint32_t *id, struct lp_err *e);
int service_rm(struct service *svc, uint32_t id, struct lp_err *e);
/* ID 0: all. Free with service_info_free. */
int service_list(struct service *svc, uint32_t id, struct service_info **out, size_t *n, struct lp_err *e);
void service_info_free(struct service_info *v, size_t n);
void service_status(struct service *svc, struct service_status *st);
/*
 * Control connections register their fds so that the service can end
 * them when it stops: enter fails (-EMFILE) past CONTROL_MAX_CONNS or
 * (-ESHUTDOWN) once stopped.
 */
int service_conn_enter(struct service *svc, int fd);
void service_conn_leave(struct service *svc, int fd);

/* Is a peer with these credentials allowed on the control socket? */
int service_peer_allowed(struct service *svc, pid_t pid, uid_t uid, gid_t gid);

#endif
