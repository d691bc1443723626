/* SPDX-License-Identifier: MIT */
/* ws: a session's working set: first touches recorded on the fault path, and a recorded file's replay order. */
#ifndef LP_WS_H
#define LP_WS_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct ranges;
struct ws_proc;
struct ws_set;

/* One per session; one track per pstree.img process (forked children have none). */
struct ws;
struct ws_track;

/* Pages of recorded order sorted by address and merged into runs, per group: first-touch order between groups. */
#define WS_GROUP_PAGES 256
/* Recorded pages this close (in pages) in one group make one run with the pages between them. */
#define WS_GAP_PAGES 8
/* Faults one process records at most (each is one run of pages). */
#define WS_MAX_TOUCHES (1u << 24)

/* PIDS: pstree.img's, in its order (track I is PIDS[I]'s). */
struct ws *ws_new(const uint32_t *pids, size_t n, uint64_t psz);
void ws_free(struct ws *w);		/* accepts NULL */

struct ws_track *ws_track(struct ws *w, size_t idx);

/* ---- recording ---- */

/* Records first touches until ws_write, or LIMIT_NS after the marker (0: no limit), for PATH. */
void ws_record(struct ws *w, const char *path, uint64_t limit_ns);
bool ws_recording(struct ws *w);
/* The restore-finished marker, at stats_now_ns() time T0: recorded times count from it; replay may start. */
void ws_start(struct ws *w, uint64_t t0);
/* When recording should stop (stats_now_ns time), 0 if not recording or no limit. */
uint64_t ws_record_deadline(struct ws *w);
/* The layout (ws_layout) of the track's pagemap, as read by the prep thread. */
void ws_track_layout(struct ws_track *t, uint64_t layout);
/* The track serves a live process: its pages are written. */
void ws_track_live(struct ws_track *t);

/*
 * The fault path: NR_PAGES pages from image address IMG were asked for by
 * a fault read at NOW (stats_now_ns). Accepts NULL. A few atomic loads
 * when not recording; else a short uncontended lock and a store.
 */
void ws_touch(struct ws_track *t, uint64_t img, uint64_t nr_pages, uint64_t now);

/*
 * Stops recording and writes the file: each live process's pages in
 * first-touch order (a page's first touch only). *PAGES: pages written.
 * Done once; later calls return 0 at once with *PAGES 0.
 */
int ws_write(struct ws *w, uint64_t *pages, struct lp_err *e);

/* ---- replay ---- */

/*
 * Takes S (loaded from NAME) as the order to replay. Every pid in it must
 * be one of pstree.img's: else the file was recorded for other images
 * (an error naming it; S is freed and nothing is replayed).
 */
int ws_replay(struct ws *w, struct ws_set *s, const char *name, struct lp_err *e);

/*
 * Plans track T's replay against its lazy ranges R (fresh: run-time and
 * image addresses agree), after ws_track_layout. Pages recorded that
 * are not lazy pages of these images are left out: if more than half
 * are, the file is for other images (an error naming it: -ESTALE, and
 * ws_start replays nothing); if some are, *E says how many (returns 1).
 * 0: all are there (or nothing to replay).
 */
int ws_plan(struct ws_track *t, const struct ranges *r, struct lp_err *e);

/* Something to replay is left for this process (a load and no lock). Accepts NULL. */
bool ws_pending(const struct ws_track *t);

/*
 * The next run in replay order, at most MAX pages: its run-time address
 * and length (pages in it may not be lazy: between recorded ones, or
 * placed since). False once all are handed out.
 */
bool ws_next(struct ws_track *t, uint64_t max, uint64_t *addr, uint64_t *nr_pages);

/* Gives back the part of a run ws_next handed out that was not read: the next ws_next returns it. */
void ws_unnext(struct ws_track *t, uint64_t addr, uint64_t nr_pages);

/* Counts NR_PAGES pages read for replay. */
void ws_count(struct ws_track *t, uint64_t nr_pages);

/* Figures for the summary: pages planned and read for replay, pages recorded (written). */
struct ws_figures {
	bool replay, record;
	uint64_t planned, read, recorded;
};
void ws_figures(struct ws *w, struct ws_figures *out);

#endif
