/* SPDX-License-Identifier: MIT */
/* ps_client: one TCP connection to a page server, with pipelined GETs matched to their replies. */
#ifndef LP_PS_CLIENT_H
#define LP_PS_CLIENT_H

#include <stdint.h>
#include <sys/socket.h>

#include "err.h"
#include "ps_wire.h"

struct ps_client;
struct tls_cfg;

/* One GET in flight. Allocated and owned by the submitter until completed. */
struct ps_req {
	struct ps_req *next;		/* the connection's FIFO */
	uint32_t dst_id;		/* virtual pid of the image */
	uint64_t img;			/* image address asked for */
	uint64_t nr_pages;		/* pages asked for */
	uint64_t t_sent;		/* ns */
	void *buf;			/* the reply's pages go here (nr_pages of them); NULL: a buffer of the connection's */
	void *owner;			/* for the completion */
	const struct ps_run *runs;	/* a list GET (ps_wire.h): NRUNS runs of nr_pages in all, img the first's */
	uint32_t nruns;			/* 0: a GET of nr_pages at img */
};

struct ps_client_ops {
	/*
	 * Called on the connection's receiver thread for each validated reply,
	 * in request order: DATA (req->buf, if given) holds NR_PAGES
	 * (1..req->nr_pages) pages for req->img. Takes back ownership of REQ.
	 */
	void (*complete)(void *arg, struct ps_req *req, const void *data, uint64_t nr_pages);
	/* The connection is unusable (E says why and names the peer). Requests still queued are given back with NR_PAGES 0 through complete(). */
	void (*failed)(void *arg, struct ps_client *c, const struct lp_err *e);
	/* The connection was lost (UP 0, E says why) and is being re-made, or is back (UP 1). May be NULL. */
	void (*status)(void *arg, struct ps_client *c, int up, const struct lp_err *e);
};

struct ps_client_opts {
	const char *address, *port;	/* where to connect (and reconnect) */
	int fd;				/* >= 0: an already connected socket (never reconnected) */
	int wire;			/* PS_WIRE_3 or PS_WIRE_4 */
	uint64_t max_pages;		/* bound on a request */
	int hello;			/* send lazy-pages' hello first (a second connection) */
	unsigned timeout_ms;		/* how long a lost connection may take to come back; 0: fail at once */
	const struct tls_cfg *tls;	/* loaded: TLS on the connections it makes (not on FD); NULL: none */
};

/*
 * Connects (see struct ps_client_opts). With hello, waits up to a second
 * for its answer: a CRIU page server never answers a second connection,
 * so failure means "not ours". The receiver thread starts at once.
 *
 * A connection that breaks (EOF, an error, or no byte for a while with
 * requests in flight) is made again with backoff for up to timeout_ms:
 * the requests not fully answered are sent again in their order, and
 * nothing of a half-read reply is used. Past the timeout, or on a reply
 * that is wrong (not a lost connection), failed() is called.
 */
int ps_client_open(const struct ps_client_opts *o, const struct ps_client_ops *ops, void *arg,
		   struct ps_client **out, struct lp_err *e);

/* Breaks the connection now so that it is made again (the path to the server changed). */
void ps_client_kick(struct ps_client *c);

/* The connection's own address (getsockname), for watching its path. 0 or -errno. */
int ps_client_local(struct ps_client *c, struct sockaddr_storage *ss);

/* Queues REQ and sends its GET. Returns 0 or -errno (the connection has failed). */
int ps_client_submit(struct ps_client *c, struct ps_req *req);

/* The hello version the server answered (PS_LP_LIST_VERSION and up: list GETs), 0 without hello. */
int ps_client_version(const struct ps_client *c);

/* Requests sent and not yet answered. */
int ps_client_inflight(struct ps_client *c);

/* "page server A:P" (or "page server fd N") for messages. */
const char *ps_client_peer(const struct ps_client *c);

/* Breaks the connection at once (no CLOSE): the receiver gives the requests back. */
void ps_client_abort(struct ps_client *c);

/*
 * Waits for the replies in flight, sends PS_IOV_CLOSE, reads the server's
 * int32 answer and closes. Then (or at once, after a failure) frees.
 * Accepts NULL. Returns 0 if the close was acknowledged.
 */
int ps_client_close(struct ps_client *c, struct lp_err *e);

#endif
