/* SPDX-License-Identifier: MIT */
/* source_remote: reads of lazy pages as pipelined GETs to a page server, urgent ones first. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "images.h"
#include "netmon.h"
#include "ps_client.h"
#include "ps_wire.h"
#include "source.h"
#include "stats.h"

#define WINDOW_MIN (256u << 10)
#define WINDOW_OWN_MIN (4u << 20)	/* urgent reads on their own connection: bulk may fill the pipe */
#define WINDOW_MAX (16u << 20)
/* sharing the connection, an urgent read waits behind at most this much bulk transfer */
#define SHARED_WAIT_NS 300000.0

struct rreq {
	struct ps_req ps;		/* first: ps_req* and rreq* convert */
	struct source_req *r;
	struct ps_run runs[];		/* a list read's */
};

struct remote {
	struct source base;		/* first */
	struct source_remote_cfg cfg;
	uint64_t psz;
	struct ps_client *bulk;		/* background reads (and urgent ones, without urgent) */
	struct ps_client *urgent;	/* NULL against a CRIU page server */
	bool lists;			/* lazy-pages-server said it takes list GETs */
	struct netmon *netmon;		/* the link under the connection */

	pthread_mutex_t lock;
	uint64_t bulk_bytes;		/* background bytes asked for and not yet answered */
	uint64_t window;
	uint64_t rtt_min;		/* ns, smallest round trip of an urgent read */
	double bw;			/* bytes per ns, measured while busy */
	uint64_t bw_t, bw_bytes;
};

/* Under lock. */
static void update_window(struct remote *r)
{
	double w;

	if (!r->rtt_min || r->bw <= 0)
		return;
	if (r->urgent) {
		/* a few bandwidth-delay products: the pipe stays full */
		w = r->bw * (double)r->rtt_min * 4;
		w = w < WINDOW_OWN_MIN ? WINDOW_OWN_MIN : w;
	} else {
		/* the pipe full, and an urgent read behind at most SHARED_WAIT_NS of bulk data */
		w = r->bw * ((double)r->rtt_min + SHARED_WAIT_NS);
		w = w < WINDOW_MIN ? WINDOW_MIN : w;
	}
	r->window = w > WINDOW_MAX ? WINDOW_MAX : (uint64_t)w;
}

static void rx_complete(void *arg, struct ps_req *pq, const void *data, uint64_t n)
{
	struct remote *r = arg;
	struct rreq *q = (struct rreq *)pq;
	struct source_req *sr = q->r;
	struct stats *st = r->cfg.stats;
	uint64_t now = stats_now_ns(), rtt = now - pq->t_sent;
	struct lp_err e;

	(void)data;
	atomic_fetch_sub(&st->inflight, 1);
	pthread_mutex_lock(&r->lock);
	if (!sr->urgent)
		r->bulk_bytes -= q->ps.nr_pages * r->psz;
	if (n) {
		if (sr->urgent && sr->nr_pages == 1 && (!r->rtt_min || rtt < r->rtt_min))
			r->rtt_min = rtt;
		r->bw_bytes += n * r->psz;
		if (!r->bw_t)
			r->bw_t = now;
		if (now - r->bw_t > 20000000) {
			double sample = (double)r->bw_bytes / (double)(now - r->bw_t);

			r->bw = r->bw > 0 ? 0.7 * r->bw + 0.3 * sample : sample;
			r->bw_t = now;
			r->bw_bytes = 0;
			update_window(r);
		}
	}
	pthread_mutex_unlock(&r->lock);
	free(q);
	if (!n) {
		lp_err_set(&e, EPIPE, "%s: the connection failed", ps_client_peer(r->bulk));
		sr->done(sr, 0, &e);
		return;
	}
	atomic_fetch_add_explicit(&st->remote_bytes, n * r->psz, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->remote_requests, 1, memory_order_relaxed);
	if (sr->urgent)
		hist_add(&st->rtt, rtt);
	sr->done(sr, n, NULL);
}

static void rx_failed(void *arg, struct ps_client *c, const struct lp_err *e)
{
	struct remote *r = arg;

	(void)c;
	r->cfg.failed(r->cfg.arg, e);
}

static void rx_status(void *arg, struct ps_client *c, int up, const struct lp_err *e)
{
	struct remote *r = arg;
	struct lp_err m;

	if (up)
		lp_err_set(&m, 0, "%s: connection made again; the requests in flight were sent again",
			   ps_client_peer(c));
	else
		lp_err_set(&m, 0, "%s; faults wait while the connection is made again", e->msg);
	r->cfg.notice(r->cfg.arg, 1, &m);
}

static const struct ps_client_ops rx_ops = {
	.complete = rx_complete,
	.failed = rx_failed,
	.status = rx_status,
};

static void remote_submit(struct source *s, struct source_req *sr)
{
	struct remote *r = (struct remote *)s;
	struct rreq *q = calloc(1, sizeof(*q) + sr->nruns * sizeof(q->runs[0]));
	struct ps_client *c = sr->urgent && r->urgent ? r->urgent : r->bulk;
	struct lp_err e;
	unsigned i;
	int ret;

	if (!q || (sr->nruns && (!r->lists || sr->nruns > PS_LP_LIST_MAX))) {
		free(q);
		lp_err_set(&e, ENOMEM, "out of memory");
		sr->done(sr, 0, &e);
		return;
	}
	q->ps.dst_id = sr->img_pid;
	q->ps.img = sr->img;
	q->ps.nr_pages = sr->nr_pages;
	q->ps.buf = sr->buf;
	q->ps.owner = c;
	q->r = sr;
	for (i = 0; i < sr->nruns; i++) {
		q->runs[i].img = sr->runs[i].img;
		q->runs[i].nr_pages = sr->runs[i].nr_pages;
	}
	q->ps.runs = sr->nruns ? q->runs : NULL;
	q->ps.nruns = sr->nruns;
	if (!sr->urgent) {
		pthread_mutex_lock(&r->lock);
		r->bulk_bytes += sr->nr_pages * r->psz;
		pthread_mutex_unlock(&r->lock);
	}
	atomic_fetch_add(&r->cfg.stats->inflight, 1);
	ret = ps_client_submit(c, &q->ps);
	if (ret) {
		/* the connection has failed: the session fails with it */
		rx_complete(r, &q->ps, NULL, 0);
	}
}

static int remote_may_send(struct source *s)
{
	struct remote *r = (struct remote *)s;
	int ok;

	pthread_mutex_lock(&r->lock);
	ok = r->bulk_bytes < r->window;
	pthread_mutex_unlock(&r->lock);
	return ok;
}

static uint64_t remote_chunk(struct source *s)
{
	struct remote *r = (struct remote *)s;
	uint64_t n;

	/* at least four reads fit in the window */
	pthread_mutex_lock(&r->lock);
	n = r->window / 4 / r->psz;
	pthread_mutex_unlock(&r->lock);
	return n < 16 ? 16 : n > r->cfg.max_pages ? r->cfg.max_pages : n;
}

static unsigned remote_lists(struct source *s)
{
	return ((struct remote *)s)->lists ? PS_LP_LIST_MAX : 0;
}

static void remote_describe(struct source *s, char *buf, unsigned len)
{
	struct remote *r = (struct remote *)s;

	pthread_mutex_lock(&r->lock);
	snprintf(buf, len, "%s, window %llu KiB",
		 r->urgent ? "faults on their own connection" : "one shared connection",
		 (unsigned long long)r->window >> 10);
	pthread_mutex_unlock(&r->lock);
}

static int remote_close(struct source *s, int graceful, struct lp_err *e)
{
	struct remote *r = (struct remote *)s;
	int ret, r2;

	netmon_stop(r->netmon);
	if (!graceful) {
		/* no CLOSE: a failed session must not wait for a server that stalls */
		if (r->urgent)
			ps_client_abort(r->urgent);
		if (r->bulk)
			ps_client_abort(r->bulk);
	}
	ret = ps_client_close(r->urgent, e);
	r2 = ps_client_close(r->bulk, ret ? NULL : e);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret ? ret : r2;
}

static const struct source_ops remote_ops = {
	.submit = remote_submit,
	.may_send = remote_may_send,
	.chunk = remote_chunk,
	.lists = remote_lists,
	.close = remote_close,
	.describe = remote_describe,
	.name = "page server",
};

/* netmon's thread: the link under the connection went down or lost its route */
static void path_changed(void *arg)
{
	struct remote *r = arg;
	struct lp_err m;

	lp_err_set(&m, 0, "%s: the link or route to it changed: making the connection again",
		   ps_client_peer(r->bulk));
	r->cfg.notice(r->cfg.arg, 1, &m);
	ps_client_kick(r->bulk);
	if (r->urgent)
		ps_client_kick(r->urgent);
}

int source_remote_new(const struct source_remote_cfg *cfg, struct source **out, struct lp_err *e)
{
	struct sockaddr_storage local;
	struct ps_client_opts o = { 0 };
	struct remote *r = calloc(1, sizeof(*r));
	struct lp_err e2;
	int ret;

	if (!r)
		return lp_err_set(e, ENOMEM, "out of memory");
	r->base.ops = &remote_ops;
	r->cfg = *cfg;
	r->psz = pagemap_page_size();
	r->window = WINDOW_MIN;
	pthread_mutex_init(&r->lock, NULL);
	o.address = cfg->address;
	o.port = cfg->port;
	o.fd = cfg->ps_socket;
	o.wire = cfg->wire;
	o.max_pages = cfg->max_pages;
	o.timeout_ms = cfg->timeout_ms;
	o.tls = cfg->tls;
	ret = ps_client_open(&o, &rx_ops, r, &r->bulk, e);
	if (ret)
		goto fail;
	if (cfg->ps_socket < 0) {
		o.hello = 1;
		ret = ps_client_open(&o, &rx_ops, r, &r->urgent, &e2);
		if (ret == -EACCES) {
			/* TLS refused on the second connection: it would be on the first too */
			*e = e2;
			goto fail;
		}
		if (ret)
			r->urgent = NULL;
	}
	if (r->urgent)
		r->window = WINDOW_OWN_MIN;
	/* the bulk connection goes to the same server: it takes list GETs if the hello said so */
	r->lists = r->urgent && ps_client_version(r->urgent) >= PS_LP_LIST_VERSION;
	lp_err_set(&e2, 0, "%s: connected%s", ps_client_peer(r->bulk),
		   r->urgent ? ", with a second connection for faults" : " (one connection: background reads held to a window)");
	cfg->notice(cfg->arg, 0, &e2);
	if (cfg->ps_socket < 0 && !ps_client_local(r->bulk, &local) &&
	    netmon_start((struct sockaddr *)&local, path_changed, r, &r->netmon, &e2)) {
		lp_err_prefix(&e2, "%s: the link is not watched", ps_client_peer(r->bulk));
		cfg->notice(cfg->arg, 0, &e2);
	}
	*out = &r->base;
	return 0;
fail:
	remote_close(&r->base, 0, NULL);
	return ret;
}
