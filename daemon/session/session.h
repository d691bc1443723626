/* SPDX-License-Identifier: MIT */
/* session: one lazy restore: its images, its restore socket, its processes and threads. */
#ifndef LP_SESSION_H
#define LP_SESSION_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "err.h"

struct session;
struct tls_cfg;

struct session_cfg {
	const char *images_dir;
	const char *work_dir;		/* where lazy-pages.socket goes; default images_dir */
	int fault_threads;
	int prefetch_threads;
	unsigned fault_around;		/* pages filled by a fault, its own included */
	uint64_t chunk_pages;		/* background read size */
	unsigned section_us;		/* a background COPY section holds a process this long at most */
	int no_prefetch;		/* faults only: no background fill (local or remote) */
	uint32_t max_procs;		/* limit on processes, forks included */
	/* --page-server: lazy pages come from a page server */
	int remote;
	const char *ps_address, *ps_port;
	int ps_socket;			/* --ps-socket FD, or -1 */
	int ps_wire;			/* 3 or 4 */
	unsigned ps_timeout_ms;		/* --ps-timeout */
	const struct tls_cfg *ps_tls;	/* --tls (loaded), or NULL */
	FILE *progress;			/* every 10 ms: "seconds pages_copied zero_pages faults remote_bytes" */
	/* warm restores (README "Warm restores") */
	int ws_record;			/* --ws-record: write the working set of this restore */
	const char *ws_out;		/* where (default IMAGES/lazy-pages.ws) */
	unsigned ws_record_ms;		/* stop recording this long after the marker (0: at the end) */
	const char *ws_replay;		/* --ws-replay FILE; NULL: IMAGES/lazy-pages.ws if present and not recording */
	int ws_no_replay;		/* --no-ws-replay */
};

/* The latency budget of a background section (--section-us): see README "Design in brief". */
#define SESSION_SECTION_US 1000

void session_cfg_defaults(struct session_cfg *cfg);

enum session_phase { SESSION_LISTENING = 1, SESSION_SERVING, SESSION_DONE, SESSION_FAILED };

/* A memory region of a hand-off session: run-time ADDR..ADDR+LEN is file bytes OFFSET.. */
struct session_region {
	uint64_t addr, len, offset;
};
#define SESSION_MAX_REGIONS 4096

struct proc_snap {
	int32_t pid;
	uint64_t total, remaining, faults;
	double fault_p99_us;
	int state;			/* enum proc_state */
	int forked;
};

struct session_snap {
	enum session_phase phase;
	int handoff;
	uint64_t pages_copied, zero_pages, faults, remote_bytes;
	int64_t inflight;
	double fault_p50_us, fault_p99_us, seconds, rtt_p50_us, rtt_p99_us;
	size_t nprocs;
	struct proc_snap *procs;	/* malloc'ed; the caller frees */
};

/* Opens and checks the images (inventory, pstree); starts no thread. */
struct session *session_new(const struct session_cfg *cfg, struct lp_err *e);
void session_free(struct session *s);	/* stops every thread; accepts NULL */

/*
 * A session for a restorer that is not CRIU: UFFD (UFFDIO_API done, the
 * regions registered MISSING) is filled from MEM_FD at each region's
 * offset. Takes both fds (closed on failure too). Serve it with
 * session_serve, which then starts at once.
 */
struct session *session_new_handoff(const struct session_cfg *cfg, int uffd, int mem_fd,
				    const struct session_region *r, size_t n, int32_t pid, struct lp_err *e);

/* The processes of pstree.img (zombies included): the most task records a restore sends. */
size_t session_nr_tasks(const struct session *s);

/* Creates lazy-pages.socket in the work dir and listens. */
int session_listen(struct session *s, struct lp_err *e);

/* Restore peers other than root and UID are refused (default: this process's uid). */
void session_allow_uid(struct session *s, uid_t uid);

/* Journal and fd store for a restart (the caller owns P and outlives the session). */
struct persist;
void session_set_persist(struct session *s, struct persist *p);
struct persist *session_persist(struct session *s);

/*
 * A session of a daemon that was restarted: the images as session_new
 * (or a hand-off's memory file and regions), then the journal RECS replayed (processes, forks, layout events) with
 * each process's uffd from FDS (indexed by process, -1 if lost; taken).
 * A process whose uffd was lost is killed (it would read zeros), and
 * serving the others ends in an error that says so. If the session
 * cannot be resumed at all, every process not complete is killed before
 * NULL is returned. Serve it with session_serve: it starts filling at once.
 */
struct persist_rec_t;
struct session_handoff {
	int mem_fd;				/* taken */
	const struct session_region *r;
	size_t n;
};
/* H: a hand-off session's memory file and regions (NULL: a CRIU session, from its images). */
struct session *session_recover(const struct session_cfg *cfg, const struct session_handoff *h,
				struct persist *persist, const struct persist_rec_t *recs, size_t n, int *fds, size_t nfds,
				struct lp_err *e);

/* A journal that cannot even be opened for session_recover: kills its processes not complete, saying WHY. */
void session_abandon_journal(const struct persist_rec_t *recs, size_t n, const char *why);

/* The hand-off peer (whose descendants may be killed if the session fails). */
void session_set_peer(struct session *s, pid_t pid);

/*
 * Cancels a session that has no restore yet (its accept returns): 0, or
 * -EBUSY once processes have been handed over (they must be served).
 */
int session_cancel(struct session *s);

enum session_phase session_phase(struct session *s);

/* Figures so far, safe while the session runs. */
int session_snapshot(struct session *s, struct session_snap *out);

/* The summary line (no newline) into BUF. */
void session_summary_line(struct session *s, char *buf, size_t len);

/*
 * Accepts the restore's connection, takes the pstree's number of task
 * records, then the marker; starts prefetch; returns when every process
 * is complete or gone (0), or on failure (-errno, E says why).
 */
int session_serve(struct session *s, struct lp_err *e);

/* One line: processes, pages copied, zero pages, faults, p50/p99, seconds. */
void session_summary(struct session *s, FILE *f);

#endif
