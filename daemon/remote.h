/* SPDX-License-Identifier: MIT */
/* remote: lazy pages from a page server: urgent fault requests and windowed background requests. */
#ifndef LP_REMOTE_H
#define LP_REMOTE_H

#include <stdint.h>

#include "err.h"

struct session;
struct proc;
struct rrun;
struct remote;
struct tls_cfg;

struct remote_cfg {
	const char *address;
	const char *port;
	int ps_socket;		/* >= 0: an already connected socket (--ps-socket) */
	int wire;		/* PS_WIRE_3 or PS_WIRE_4 */
	unsigned fault_around;	/* pages an urgent request asks for */
	unsigned timeout_ms;	/* --ps-timeout: a lost connection may take this long to come back */
	const struct tls_cfg *tls;	/* --tls (loaded), or NULL */
};

/*
 * Connects. Then tries a second connection with lazy-pages' hello: if the
 * server answers (lazy-pages-server), faults get a connection of their
 * own; if not (a CRIU page server takes one client), faults share the
 * one connection and background requests are held to a window sized
 * from the measured bandwidth and round trip, so a fault waits behind
 * little. Replies are placed into the processes on the receiver threads.
 */
int remote_open(struct session *s, const struct remote_cfg *cfg, struct remote **out, struct lp_err *e);

/* Starts background requests (after the restore-finished marker). */
void remote_start(struct remote *r);

/*
 * Asks for the fault at ADDR (inside lazy run RUN) at once. The reply
 * wakes the faulting thread; if it cannot (the page moved or went), the
 * fault is asked again or zero-filled as the ranges then say. Caller holds
 * P's evlock shared. T0: when the fault was read. 0 or -errno.
 */
int remote_fault(struct remote *r, struct proc *p, uint64_t addr, const struct rrun *run, uint64_t t0);

/* Stops background requests; with GRACEFUL, closes the connections as CRIU does (PS_IOV_CLOSE). Frees. */
int remote_close(struct remote *r, int graceful, struct lp_err *e);

/* "urgent connection" or "shared connection, window N KiB" for the log and summary. */
void remote_describe(struct remote *r, char *buf, unsigned len);

#endif
