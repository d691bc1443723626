/* SPDX-License-Identifier: MIT */
/* source: where the bytes of lazy pages come from: the image directory, a memory file or a page server. */
#ifndef LP_SOURCE_H
#define LP_SOURCE_H

#include <stdint.h>

#include "err.h"

struct pagemap;
struct source;
struct source_req;
struct stats;
struct tls_cfg;

/*
 * A read's completion: NR_PAGES (1 up to what was asked) pages are in
 * the request's buffer, or E says why none can come (NR_PAGES 0). Called
 * exactly once per submitted request: on the submitter's thread before
 * source_submit returns (local sources), or later on a receiver thread (a
 * page server).
 */
typedef void (*source_done_fn)(struct source_req *r, uint64_t nr_pages, const struct lp_err *e);

/* One run of a list read (source_lists). */
struct source_run {
	uint64_t img, nr_pages;
};

struct source_req {
	struct pagemap *pm;		/* whose pages (local images) */
	uint32_t img_pid;		/* whose pages (page server: the image's pid) */
	uint64_t img;			/* image address of the first page */
	uint64_t nr_pages;
	void *buf;			/* room for nr_pages pages, page aligned */
	int urgent;			/* a thread waits for it: ahead of background reads */
	source_done_fn done;
	/*
	 * A list read (only where source_lists says so): NRUNS runs, nr_pages
	 * in all, read one after another into buf; img is the first's. Its
	 * completion has all the pages or none.
	 */
	const struct source_run *runs;
	unsigned nruns;
};

struct source_ops {
	void (*submit)(struct source *s, struct source_req *r);
	/* May another background read be submitted now? (a page server's window) */
	int (*may_send)(struct source *s);
	/* Pages a background read should ask for (0: the caller's own chunk). */
	uint64_t (*chunk)(struct source *s);
	/* May a read be a list of runs (source_req.runs), up to this many? 0 or NULL: no. */
	unsigned (*lists)(struct source *s);
	/* Ends it (with GRACEFUL, as CRIU's client closes a page-server session) and frees. */
	int (*close)(struct source *s, int graceful, struct lp_err *e);
	/* A few words for the log: "local images", "faults on their own connection, window 4096 KiB". */
	void (*describe)(struct source *s, char *buf, unsigned len);
	const char *name;
};

struct source {
	const struct source_ops *ops;
};

static inline void source_submit(struct source *s, struct source_req *r)
{
	s->ops->submit(s, r);
}

static inline int source_may_send(struct source *s)
{
	return s->ops->may_send ? s->ops->may_send(s) : 1;
}

static inline uint64_t source_chunk(struct source *s)
{
	return s->ops->chunk ? s->ops->chunk(s) : 0;
}

static inline unsigned source_lists(struct source *s)
{
	return s->ops->lists ? s->ops->lists(s) : 0;
}

/* Accepts NULL. */
static inline int source_close(struct source *s, int graceful, struct lp_err *e)
{
	return s ? s->ops->close(s, graceful, e) : 0;
}

void source_describe(struct source *s, char *buf, unsigned len);

/* Pages from the image directory's pages files (and its parent chain). */
struct source *source_local_new(void);

/* Pages from a raw memory file (a hand-off session); takes FD. */
struct source *source_raw_new(int fd);

/* A page server (CRIU's or lazy-pages-server): pipelined GETs on one or two connections. */
struct source_remote_cfg {
	const char *address;
	const char *port;
	int ps_socket;			/* >= 0: an already connected socket (--ps-socket) */
	int wire;			/* PS_WIRE_3 or PS_WIRE_4 */
	uint64_t max_pages;		/* the largest read asked for */
	unsigned timeout_ms;		/* --ps-timeout: a lost connection may take this long to come back */
	const struct tls_cfg *tls;	/* --tls (loaded), or NULL */
	struct stats *stats;		/* remote_bytes, requests, round trips */
	/* the connection cannot be had back: the session fails (called once, on a receiver thread) */
	void (*failed)(void *arg, const struct lp_err *e);
	/* something worth a line in the log: connected (WARN 0), a connection lost and made again (WARN 1) */
	void (*notice)(void *arg, int warn, const struct lp_err *m);
	void *arg;
};

/*
 * Connects. Then tries a second connection with lazy-pages' hello: if the
 * server answers (lazy-pages-server), urgent reads get a connection of
 * their own; if not (a CRIU page server takes one client), they share the
 * one connection, and background reads are held to a window sized from
 * the measured bandwidth and round trip so that an urgent one waits
 * behind little.
 */
int source_remote_new(const struct source_remote_cfg *cfg, struct source **out, struct lp_err *e);

#endif
