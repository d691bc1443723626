/* SPDX-License-Identifier: MIT */
/* liblazypages: control and hand-off API of lazy-pagesd --service. */
#ifndef LAZYPAGES_H
#define LAZYPAGES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LP_CONTROL_DEFAULT "/run/lazy-pages/control.sock"
#define LP_CONTROL_ENV "LAZY_PAGES_CONTROL"	/* overrides the default path */
#define LP_CONTROL_VERSION 1
#define LP_CONTROL_MAX_FRAME (1u << 20)

/* Every function returns 0 or -errno; lp_error() then says what went wrong. */
struct lp_conn;

/* PATH NULL: $LAZY_PAGES_CONTROL, else LP_CONTROL_DEFAULT. */
int lp_connect(const char *path, struct lp_conn **out);
void lp_close(struct lp_conn *c);			/* accepts NULL */
const char *lp_error(const struct lp_conn *c);		/* the last error's text */
/* The path lp_connect(PATH) connects to, for messages. */
const char *lp_control_path(const char *path);
/*
 * A connection is for one thread at a time. After an error in the framing
 * (-EPIPE, -EMSGSIZE, a failed read or write) it is out of step with the
 * daemon and every later call returns -ENOTCONN; a daemon's error answer
 * (the -errno of response.error, text in lp_error) leaves it usable.
 */

enum lp_state { LP_LISTENING = 1, LP_SERVING = 2, LP_DONE = 3, LP_FAILED = 4 };

struct lp_status {
	pid_t pid;
	double uptime_s;
	unsigned sessions_active, sessions_total;
	int stopping;
	char line[256];
};

struct lp_proc {
	pid_t pid;
	uint64_t total_pages, remaining_pages, faults;
	double fault_p99_us;
	int state;			/* 0 live, 1 complete, 2 gone */
	int forked;
};

struct lp_session {
	uint32_t id;
	enum lp_state state;
	char kind[16];			/* "criu" or "handoff" */
	char images_dir[4096], work_dir[4096], socket_path[4096];
	char page_server[128];
	uint64_t pages_copied, zero_pages, faults, remote_bytes, remote_inflight;
	double fault_p50_us, fault_p99_us, seconds, fault_rtt_p50_us, fault_rtt_p99_us;
	char summary[512], error[512];
	size_t nprocs;
	struct lp_proc *procs;
};

struct lp_session_opts {
	const char *images_dir;		/* required */
	const char *work_dir;		/* NULL: images_dir */
	const char *ps_address;		/* NULL: local images */
	unsigned ps_port, ps_wire;	/* 0: default */
	unsigned prefetch_threads;	/* 0: default */
	/* warm restores: record into images_dir/lazy-pages.ws (for at most ws_record_seconds, 0: to the end) */
	int ws_record;
	unsigned ws_record_seconds;
	const char *ws_replay;		/* absolute path; NULL: images_dir/lazy-pages.ws if present */
	int no_ws_replay;
};

int lp_status(struct lp_conn *c, struct lp_status *out);
/* Creates a CRIU restore session; its lazy-pages.socket listens in the work dir. */
int lp_session_add(struct lp_conn *c, const struct lp_session_opts *o, uint32_t *id);
int lp_session_rm(struct lp_conn *c, uint32_t id);
/* ID 0: every session (LP_OP_SESSION_LIST); else that one (LP_OP_STATS). Free with lp_sessions_free. */
int lp_session_list(struct lp_conn *c, uint32_t id, struct lp_session **out, size_t *n);
void lp_sessions_free(struct lp_session *s, size_t n);
/* The same through LP_OP_STATS: ID 0 every session. A nonzero ID not answered is -ENOENT. */
int lp_stats(struct lp_conn *c, uint32_t id, struct lp_session **out, size_t *n);

/*
 * Hand-off for restorers that are not CRIU (a VMM restoring guest memory
 * from a snapshot file): UFFD has had UFFDIO_API and every region is
 * registered MISSING; the daemon fills each region from MEM_FD at its
 * offset, faults first, and closes its copies of both fds when done.
 * The caller may close its own copies after the call returns.
 */
struct lp_region {
	uint64_t addr, len, offset;
};

int lp_handoff(struct lp_conn *c, int uffd, int mem_fd, const struct lp_region *regions, size_t n, pid_t pid,
	       const char *name, uint32_t *session_id);

#endif
