/* SPDX-License-Identifier: MIT */
/* ranges: one process's lazy pages not yet known to be present, keyed by run-time address. */
#ifndef LP_RANGES_H
#define LP_RANGES_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A set of segments [start, end) of run-time addresses, sorted and
 * disjoint, each with the image address of its first page and a bitmap
 * of the pages still lazy (not yet copied). A segment never spans two
 * VMAs: callers add one segment per lazy run inside one VMA, and
 * segments are never merged, so a run returned by ranges_run/ranges_next
 * is always a valid target for one UFFDIO_COPY.
 *
 * Lookups are O(log segments); marking pages present is O(pages).
 * Not thread-safe: the owner (struct proc) serialises access.
 * All addresses are page aligned; lengths are in pages unless named len.
 */
struct ranges;

struct rrun {
	uint64_t addr;		/* run-time address of the first page */
	uint64_t img;		/* image address of the first page */
	uint64_t nr_pages;	/* >= 1 */
};

struct ranges *ranges_new(void);
void ranges_free(struct ranges *r);		/* accepts NULL */

/* Adds [start, end) with all pages lazy; -EINVAL if unaligned, empty or overlapping. */
int ranges_add(struct ranges *r, uint64_t start, uint64_t end, uint64_t img_start);

/* Is the page at ADDR still lazy? If so and IMG is non-NULL, its image address. */
bool ranges_lookup(const struct ranges *r, uint64_t addr, uint64_t *img);

/*
 * The run of consecutive lazy pages that starts at ADDR, inside ADDR's
 * segment, at most MAX_PAGES long. False if the page at ADDR is not lazy.
 */
bool ranges_run(const struct ranges *r, uint64_t addr, uint64_t max_pages, struct rrun *out);

/*
 * The first run of lazy pages at or after HINT (wrapping around to the
 * lowest address once), inside one segment, at most MAX_PAGES long.
 * False when nothing is lazy any more.
 */
bool ranges_next(const struct ranges *r, uint64_t hint, uint64_t max_pages, struct rrun *out);

/* Marks [addr, addr + nr_pages * page) present; pages not lazy are ignored. Returns pages cleared. */
uint64_t ranges_clear(struct ranges *r, uint64_t addr, uint64_t nr_pages);

/* UNMAP/REMOVE: forgets [start, end) (splitting segments at its ends). Returns pages dropped. */
uint64_t ranges_drop(struct ranges *r, uint64_t start, uint64_t end);

/*
 * REMAP: the lazy pages in [from, from + len) now live at [to, to + len),
 * with their image addresses kept. Whatever was lazy at the destination
 * is dropped first (mremap replaced it). Returns 0 or -ENOMEM.
 */
int ranges_move(struct ranges *r, uint64_t from, uint64_t to, uint64_t len);

/* FORK: a deep copy (NULL on ENOMEM). */
struct ranges *ranges_clone(const struct ranges *r);

/* Pages still lazy, in all segments. */
uint64_t ranges_remaining(const struct ranges *r);

/* Number of segments (for tests and stats). */
uint64_t ranges_segments(const struct ranges *r);

#endif
