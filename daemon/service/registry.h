/* SPDX-License-Identifier: MIT */
/* registry: the sessions of lazy-pagesd --service, one thread each, and what the control socket may ask of them. */
#ifndef LP_REGISTRY_H
#define LP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "session.h"

#define REGISTRY_MAX_SESSIONS 256	/* listed at once, finished ones included */
#define REGISTRY_KEEP_FINISHED 64	/* finished sessions kept for listing */
#define REGISTRY_KEEP_SECONDS 600

struct fdstore;
struct registry;

/*
 * New sessions start from DEFAULTS. With STATE_DIR and a service
 * manager's fd store FS (borrowed, outlives the registry), each session
 * is journaled there and its uffds kept in FS for a restart.
 */
int registry_new(const struct session_cfg *defaults, const char *state_dir, struct fdstore *fs, struct registry **out,
		 struct lp_err *e);
/* Joins every session thread (they must be ending: see registry_stop) and frees. Accepts NULL. */
void registry_free(struct registry *reg);
/* Are sessions kept for a restart? */
bool registry_keeps(const struct registry *reg);

/* Readable when a session thread has ended or a session is to be forgotten: then call registry_reap. */
int registry_eventfd(const struct registry *reg);
/* Joins ended session threads, keeps their figures, frees them; forgets old or removed ones. */
void registry_reap(struct registry *reg);
/* A restarted daemon: every session in the state dir comes back with the fds systemd kept (taken from FDS). */
void registry_recover(struct registry *reg, int *fds, char **names, int nfds);
/* One line on every session (for STATUS=), into LINE and kept for registry_status. */
void registry_update_status(struct registry *reg, char *line, size_t len);
/* No new sessions; idle ones end. Returns how many are still filling processes. */
unsigned registry_stop(struct registry *reg);
/* Stopped, and no session left running? */
bool registry_idle(struct registry *reg);
/* Sessions started since the daemon started. */
unsigned registry_total(struct registry *reg);

/* What the control connections ask. Each returns 0 or -errno with E set. */
struct registry_add {
	const char *images_dir, *work_dir, *ps_address;
	unsigned ps_port, ps_wire, prefetch_threads;
	int ws_record, no_ws_replay;
	unsigned ws_record_seconds;
	const char *ws_replay;		/* absolute path, or NULL */
};

struct registry_info {
	uint32_t id;
	int handoff;
	char images_dir[4096], work_dir[4096], socket_path[4200], page_server[128];
	char summary[512], error[512];
	struct session_snap snap;	/* procs owned */
};

struct registry_status {
	pid_t pid;
	double uptime_s;
	unsigned active, total;
	int stopping;
	char line[256];
};

int registry_add(struct registry *reg, const struct registry_add *a, uid_t uid, uint32_t *id, struct lp_err *e);
/* Takes UFFD and MEM_FD. */
int registry_handoff(struct registry *reg, int uffd, int mem_fd, const struct session_region *r, size_t n,
		     int32_t pid, pid_t peer, uint32_t *id, struct lp_err *e);
int registry_rm(struct registry *reg, uint32_t id, struct lp_err *e);
/* ID 0: all. Free with registry_info_free. */
int registry_list(struct registry *reg, uint32_t id, struct registry_info **out, size_t *n, struct lp_err *e);
void registry_info_free(struct registry_info *v, size_t n);
void registry_status(struct registry *reg, struct registry_status *st);

#endif
