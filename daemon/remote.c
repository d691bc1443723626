/* SPDX-License-Identifier: MIT */
/* remote: turns faults and background fill into pipelined GETs and places the replies. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "netmon.h"
#include "proc.h"
#include "ps_client.h"
#include "ps_wire.h"
#include "ranges.h"
#include "remote.h"
#include "session.h"
#include "stats.h"

#define REMOTE_MAX_PAGES 1024		/* per request, as CRIU's background requests */
#define REMOTE_SUB 64			/* pages per locked COPY section */
#define WINDOW_MIN (512u << 10)
#define WINDOW_MAX (64u << 20)

struct rreq {
	struct ps_req ps;		/* first: ps_req* and rreq* convert */
	struct proc *p;
	uint64_t addr;			/* run-time address asked for */
	int urgent;
	int tracked;			/* in p->infl, so background requests leave it alone */
	uint64_t fault_addr;		/* urgent: the page a thread waits for */
	uint64_t t0;			/* urgent: when the fault was read */
};

struct remote {
	struct session *s;
	struct remote_cfg cfg;
	uint64_t psz;
	struct ps_client *bulk;		/* background (and faults, without urgent) */
	struct ps_client *urgent;	/* NULL against a CRIU page server */
	struct netmon *netmon;		/* the link under the connection */

	pthread_mutex_t lock;
	pthread_cond_t cv;		/* a background reply came back, or stop */
	uint64_t bulk_bytes;		/* background bytes asked for and not yet answered */
	uint64_t window;
	uint64_t rtt_min;		/* ns, smallest request-to-reply seen */
	double bw;			/* bytes per ns, measured while busy */
	uint64_t bw_t, bw_bytes;
	int stop, started;
	pthread_t tid;
};

static void update_window(struct remote *r)
{
	/* a bandwidth-delay product or so on the wire: full speed, yet a fault waits behind little */
	double w = r->bw * (double)r->rtt_min * (r->urgent ? 4.0 : 1.5);

	if (!r->rtt_min || r->bw <= 0)
		return;
	r->window = w < WINDOW_MIN ? WINDOW_MIN : w > WINDOW_MAX ? WINDOW_MAX : (uint64_t)w;
}

static uint64_t chunk_pages(struct remote *r)
{
	/* at least four requests fit in the window */
	uint64_t n = r->window / 4 / r->psz;

	return n < 16 ? 16 : n > REMOTE_MAX_PAGES ? REMOTE_MAX_PAGES : n;
}

static void infl_remove(struct proc *p, uint64_t addr)
{
	int i;

	for (i = 0; i < p->ninfl; i++)
		if (p->infl[i].start == addr) {
			p->infl[i] = p->infl[--p->ninfl];
			return;
		}
}

static int submit(struct remote *r, struct proc *p, uint64_t addr, uint64_t img, uint64_t n, int urgent,
		  uint64_t fault_addr, uint64_t t0)
{
	struct rreq *q = calloc(1, sizeof(*q));
	struct ps_client *c = urgent && r->urgent ? r->urgent : r->bulk;
	int ret;

	if (!q)
		return -ENOMEM;
	q->ps.dst_id = p->img_pid;
	q->ps.img = img;
	q->ps.nr_pages = n;
	q->ps.owner = c;
	q->p = p;
	q->addr = addr;
	q->urgent = urgent;
	q->fault_addr = fault_addr;
	q->t0 = t0;
	q->tracked = !urgent;	/* pick_run recorded background ones */
	if (urgent) {
		/* a hint for pick_run: not to ask for these pages a second time */
		pthread_mutex_lock(&p->lock);
		if (p->ninfl < PROC_MAX_INFLIGHT) {
			p->infl[p->ninfl].start = addr;
			p->infl[p->ninfl].end = addr + n * r->psz;
			p->ninfl++;
			q->tracked = 1;
		}
		pthread_mutex_unlock(&p->lock);
	}
	atomic_fetch_add(&session_stats(r->s)->inflight, 1);
	ret = ps_client_submit(c, &q->ps);
	if (ret) {
		atomic_fetch_sub(&session_stats(r->s)->inflight, 1);
		if (urgent && q->tracked) {
			pthread_mutex_lock(&p->lock);
			infl_remove(p, addr);
			pthread_mutex_unlock(&p->lock);
		}
		free(q);
	}
	return ret;
}

int remote_fault(struct remote *r, struct proc *p, uint64_t addr, const struct rrun *run, uint64_t t0)
{
	return submit(r, p, addr, run->img, run->nr_pages, 1, addr, t0);
}

/*
 * The reply did not place the page a thread waits for (it moved, went,
 * or an event was queued): look again and ask again, or zero-fill it if
 * it is no longer lazy. A fault is never dropped.
 */
static void refault(struct remote *r, struct proc *p, uint64_t addr, uint64_t t0)
{
	struct rrun run;
	int tries, ret = 0, in;

	for (tries = 0; tries < 100000; tries++) {
		pthread_rwlock_rdlock(&p->evlock);
		if (!proc_live(p)) {
			pthread_rwlock_unlock(&p->evlock);
			return;
		}
		pthread_mutex_lock(&p->lock);
		in = ranges_run(p->ranges, addr, r->cfg.fault_around, &run);
		pthread_mutex_unlock(&p->lock);
		if (in)
			ret = submit(r, p, addr, run.img, run.nr_pages, 1, addr, t0);
		else
			ret = proc_zero_fault(p, addr);
		pthread_rwlock_unlock(&p->evlock);
		if (ret != -EAGAIN)
			break;
		/* an event is queued: the fault thread reads it in a moment */
		usleep(20);
	}
	if (!ret && !in)
		proc_fault_served(p, t0);
	else if (ret == -ESRCH)
		proc_finish(p, PROC_GONE);
	else if (ret)
		session_fail(r->s, "pid %d: fault at 0x%llx: %s", p->pid, (unsigned long long)addr, strerror(-ret));
}

static void rx_complete(void *arg, struct ps_req *pq, const void *data, uint64_t n)
{
	struct remote *r = arg;
	struct rreq *q = (struct rreq *)pq;
	struct stats *st = session_stats(r->s);
	struct proc *p = q->p;
	uint64_t now = stats_now_ns(), stop = q->addr;
	int ret = 0;

	atomic_fetch_sub(&st->inflight, 1);
	if (data) {
		atomic_fetch_add_explicit(&st->remote_bytes, n * r->psz, memory_order_relaxed);
		atomic_fetch_add_explicit(&st->remote_requests, 1, memory_order_relaxed);
		if (q->urgent)
			hist_add(&st->rtt, now - q->ps.t_sent);
		ret = proc_place_run(p, q->addr, q->ps.img, n, data, REMOTE_SUB, &stop);
	}

	pthread_mutex_lock(&r->lock);
	if (data) {
		if (!r->rtt_min || now - q->ps.t_sent < r->rtt_min)
			r->rtt_min = now - q->ps.t_sent;
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
	if (!q->urgent) {
		r->bulk_bytes -= q->ps.nr_pages * r->psz;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->lock);
	if (q->tracked) {
		pthread_mutex_lock(&p->lock);
		infl_remove(p, q->addr);
		if (!q->urgent && (ret == -EAGAIN || (data && n < q->ps.nr_pages)))
			p->cursor = ret == -EAGAIN ? stop : q->addr + n * r->psz;
		pthread_mutex_unlock(&p->lock);
	}
	if (!data)
		goto out;	/* the connection failed: the session fails with it */
	if (ret == -ESRCH) {
		proc_finish(p, PROC_GONE);
		goto out;
	}
	if (ret && ret != -EAGAIN) {
		session_fail(r->s, "pid %d: placing pages at 0x%llx: %s", p->pid, (unsigned long long)q->addr,
			     strerror(-ret));
		goto out;
	}
	if (q->urgent) {
		if (!ret && q->fault_addr >= q->addr && q->fault_addr < q->addr + n * r->psz)
			proc_fault_served(p, q->t0);
		else
			refault(r, p, q->fault_addr, q->t0);
	}
	if (proc_live(p) && atomic_load(&p->remaining) == 0)
		proc_finish(p, PROC_DONE);
out:
	free(q);
}

static void rx_failed(void *arg, struct ps_client *c, const struct lp_err *e)
{
	struct remote *r = arg;

	(void)c;
	session_fail(r->s, "%s", e->msg);
	pthread_mutex_lock(&r->lock);
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->lock);
}

static void rx_status(void *arg, struct ps_client *c, int up, const struct lp_err *e)
{
	(void)arg;
	if (up)
		log_warn("%s: connection made again; the requests in flight were sent again", ps_client_peer(c));
	else
		log_warn("%s; faults wait while the connection is made again", e->msg);
}

static const struct ps_client_ops rx_ops = {
	.complete = rx_complete,
	.failed = rx_failed,
	.status = rx_status,
};

enum pick { PICK_OK, PICK_NONE, PICK_BUSY };

/* The next background run of P, not overlapping its requests in flight. Under p->lock. */
static enum pick pick_run(struct remote *r, struct proc *p, uint64_t max, struct rrun *run)
{
	uint64_t start, end, hint = atomic_exchange(&p->hint, 0);
	int tries, i, moved;

	if (p->ninfl >= PROC_MAX_INFLIGHT)
		return PICK_BUSY;
	start = hint ? hint : p->cursor;
	for (tries = 0; tries < PROC_MAX_INFLIGHT + 2; tries++) {
		if (!ranges_next(p->ranges, start, max, run))
			return PICK_NONE;
		end = run->addr + run->nr_pages * r->psz;
		for (i = 0, moved = 0; i < p->ninfl; i++) {
			if (run->addr >= p->infl[i].start && run->addr < p->infl[i].end) {
				start = p->infl[i].end;
				moved = 1;
				break;
			}
			if (p->infl[i].start > run->addr && p->infl[i].start < end)
				end = p->infl[i].start;
		}
		if (moved)
			continue;
		run->nr_pages = (end - run->addr) / r->psz;
		p->infl[p->ninfl].start = run->addr;
		p->infl[p->ninfl].end = end;
		p->ninfl++;
		p->cursor = end;
		return PICK_OK;
	}
	return PICK_BUSY;
}

static void *remote_main(void *arg)
{
	struct remote *r = arg;
	unsigned cursor = 0, idle = 0;
	struct timespec ts;
	struct rrun run;
	struct proc *p;
	enum pick pk;
	uint64_t max;

	while ((p = session_next_work(r->s, &cursor))) {
		pthread_mutex_lock(&r->lock);
		while (r->bulk_bytes >= r->window && !r->stop)
			pthread_cond_wait(&r->cv, &r->lock);
		max = chunk_pages(r);
		if (r->stop) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		pthread_mutex_unlock(&r->lock);

		pthread_mutex_lock(&p->lock);
		pk = pick_run(r, p, max, &run);
		pthread_mutex_unlock(&p->lock);
		if (pk == PICK_NONE) {
			if (atomic_load(&p->remaining) == 0)
				proc_finish(p, PROC_DONE);
			continue;
		}
		if (pk == PICK_BUSY) {
			/* everything left is on the wire: wait for a reply rather than spin */
			if (++idle < 16)
				continue;
			idle = 0;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 5000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_mutex_lock(&r->lock);
			if (!r->stop && r->bulk_bytes)
				pthread_cond_timedwait(&r->cv, &r->lock, &ts);
			pthread_mutex_unlock(&r->lock);
			continue;
		}
		idle = 0;
		pthread_mutex_lock(&r->lock);
		r->bulk_bytes += run.nr_pages * r->psz;
		pthread_mutex_unlock(&r->lock);
		if (submit(r, p, run.addr, run.img, run.nr_pages, 0, 0, 0)) {
			pthread_mutex_lock(&r->lock);
			r->bulk_bytes -= run.nr_pages * r->psz;
			pthread_mutex_unlock(&r->lock);
			pthread_mutex_lock(&p->lock);
			infl_remove(p, run.addr);
			pthread_mutex_unlock(&p->lock);
			break;	/* the connection has failed; the session with it */
		}
	}
	return NULL;
}

/* netmon's thread: the link under the connection went down or lost its route */
static void path_changed(void *arg)
{
	struct remote *r = arg;

	log_warn("%s: the link or route to it changed: making the connection again", ps_client_peer(r->bulk));
	ps_client_kick(r->bulk);
	if (r->urgent)
		ps_client_kick(r->urgent);
}

int remote_open(struct session *s, const struct remote_cfg *cfg, struct remote **out, struct lp_err *e)
{
	struct sockaddr_storage local;
	struct ps_client_opts o = { 0 };
	struct remote *r = calloc(1, sizeof(*r));
	struct lp_err e2;
	int ret;

	if (!r)
		return lp_err_set(e, ENOMEM, "out of memory");
	r->s = s;
	r->cfg = *cfg;
	r->psz = session_page_size(s);
	r->window = 1u << 20;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cv, NULL);
	o.address = cfg->address;
	o.port = cfg->port;
	o.fd = cfg->ps_socket;
	o.wire = cfg->wire;
	o.max_pages = REMOTE_MAX_PAGES;
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
		if (ret) {
			r->urgent = NULL;
			log_info("%s: one connection only (%s): background requests held to a window",
				 ps_client_peer(r->bulk), e2.msg);
		}
	}
	log_info("%s: connected%s", ps_client_peer(r->bulk),
		 r->urgent ? ", with a second connection for faults" : "");
	if (cfg->ps_socket < 0 && !ps_client_local(r->bulk, &local) &&
	    netmon_start((struct sockaddr *)&local, path_changed, r, &r->netmon, &e2))
		log_info("%s: the link is not watched (%s)", ps_client_peer(r->bulk), e2.msg);
	*out = r;
	return 0;
fail:
	remote_close(r, 0, NULL);
	return ret;
}

void remote_start(struct remote *r)
{
	int ret = pthread_create(&r->tid, NULL, remote_main, r);

	if (ret)
		log_warn("remote background thread: %s (faults are still served)", strerror(ret));
	else
		r->started = 1;
}

int remote_close(struct remote *r, int graceful, struct lp_err *e)
{
	int ret = 0, r2;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->lock);
	r->stop = 1;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->lock);
	/* session_next_work returns NULL once the session stops or fails */
	if (r->started)
		pthread_join(r->tid, NULL);
	netmon_stop(r->netmon);
	if (!graceful) {
		/* no CLOSE: a failed session must not wait for a server that stalls */
		if (r->urgent)
			ps_client_abort(r->urgent);
		if (r->bulk)
			ps_client_abort(r->bulk);
	}
	ret = ps_client_close(r->urgent, e);
	r2 = ps_client_close(r->bulk, e);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret ? ret : r2;
}

void remote_describe(struct remote *r, char *buf, unsigned len)
{
	pthread_mutex_lock(&r->lock);
	if (r->urgent)
		snprintf(buf, len, "faults on their own connection, window %llu KiB",
			 (unsigned long long)r->window >> 10);
	else
		snprintf(buf, len, "one shared connection, window %llu KiB", (unsigned long long)r->window >> 10);
	pthread_mutex_unlock(&r->lock);
}
