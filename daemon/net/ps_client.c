/* SPDX-License-Identifier: MIT */
/* ps_client: sender side under a lock (FIFO order = wire order), one receiver thread per connection. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "ps_client.h"
#include "ps_wire.h"
#include "stats.h"
#include "tls.h"

#define PS_CONNECT_TIMEOUT_MS 2000

struct ps_client {
	int fd;
	struct tls *tls;		/* on fd, with --tls */
	const struct tls_cfg *tls_cfg;
	int wire;
	size_t hsz;
	uint64_t psz, max_pages;
	char peer[128];
	const struct ps_client_ops *ops;
	void *arg;

	pthread_mutex_t lock;
	pthread_cond_t cv;		/* queue became non-empty, or emptied, or closing */
	struct ps_req *head, *tail;
	int inflight;
	int closing, broken, started;
	int down;			/* being reconnected: submit only queues */
	char address[256], port[16];
	int hello;
	int version;			/* the hello's answer */
	unsigned timeout_ms;
	unsigned reconnects;
	uint64_t lost_since;		/* ns; 0 once a reply came after the connection was made again */
	int adopted;			/* --ps-socket: close with FORCE_CLOSE */
	uint64_t replies;		/* replies taken, for messages */
	pthread_t rx;
	uint8_t *buf;			/* receiver's page buffer */
};

static int set_peer_name(struct ps_client *c, const struct sockaddr *sa, socklen_t len)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV))
		return -EINVAL;
	snprintf(c->peer, sizeof(c->peer), sa->sa_family == AF_INET6 ? "page server [%s]:%s" : "page server %s:%s",
		 host, serv);
	return 0;
}

/*
 * connect() bounded in time: with the link down and the route still
 * there, a plain connect retries its SYN for minutes, longer than
 * --ps-timeout. Returns 0 or -1 with errno set.
 */
static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int fl = fcntl(fd, F_GETFL), err = 0;
	socklen_t el = sizeof(err);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	if (connect(fd, sa, len) < 0) {
		if (errno != EINPROGRESS)
			return -1;
		if (poll(&pfd, 1, ms) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
			errno = err ? err : errno;
			return -1;
		}
	}
	return fcntl(fd, F_SETFL, fl);
}

static int connect_to(struct ps_client *c, const char *address, const char *port, struct lp_err *e)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1, err = ECONNREFUSED, r;

	r = getaddrinfo(address, port, &hints, &res);
	if (r)
		return lp_err_set(e, EHOSTUNREACH, "page server %s:%s: %s", address, port, gai_strerror(r));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, PS_CONNECT_TIMEOUT_MS) == 0) {
			set_peer_name(c, ai->ai_addr, ai->ai_addrlen);
			break;
		}
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return lp_err_set(e, err, "page server %s:%s: connect: %s", address, port, strerror(err));
	if (c->tls_cfg) {
		/* CRIU checks the server's certificate against its own --address */
		r = tls_client_wrap(fd, c->tls_cfg, address, c->peer, &c->tls, e);
		if (r) {
			close(fd);
			return r;
		}
	}
	c->fd = fd;
	return 0;
}

/* The connection's bytes, through TLS with --tls. WHY gets the reason of a failure. */
static int link_read(struct ps_client *c, void *buf, size_t n, struct lp_err *why)
{
	int ret;

	if (c->tls)
		return tls_read_full(c->tls, buf, n, why);
	ret = io_read_full(c->fd, buf, n);
	return ret ? lp_err_set(why, -ret, "%s", strerror(-ret)) : 0;
}

static int link_write(struct ps_client *c, const void *buf, size_t n, struct lp_err *why)
{
	int ret;

	if (c->tls)
		return tls_write_full(c->tls, buf, n, why);
	ret = io_write_full(c->fd, buf, n);
	return ret ? lp_err_set(why, -ret, "%s", strerror(-ret)) : 0;
}

static void link_close(struct ps_client *c)
{
	tls_free(c->tls);
	c->tls = NULL;
	close(c->fd);
	c->fd = -1;
}

/* lazy-pages-server answers; CRIU's servers refuse, reset or never answer a second connection. */
static int do_hello(struct ps_client *c, struct lp_err *e)
{
	struct ps_iov iov = { .cmd = PS_LP_HELLO, .nr_pages = PS_LP_HELLO_VERSION, .dst_id = PS_LP_ROLE_URGENT };
	uint8_t b[PS_IOV_MAX];
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	struct lp_err why;
	int r;

	ps_iov_encode(c->wire, &iov, b);
	r = link_write(c, b, c->hsz, &why);
	if (r)
		return lp_err_set(e, -r, "%s: hello: %s", c->peer, why.msg);
	r = poll(&pfd, 1, 1000);
	if (r <= 0)
		return lp_err_set(e, ETIMEDOUT, "%s: no answer to hello", c->peer);
	r = link_read(c, b, c->hsz, &why);
	if (r)
		return lp_err_set(e, -r, "%s: hello: %s", c->peer, why.msg);
	ps_iov_decode(c->wire, b, &iov);
	/* version 1 servers answer 1 whatever was asked; later ones the lower of both */
	if (iov.cmd != PS_LP_HELLO_REPLY || iov.nr_pages < 1 || iov.nr_pages > PS_LP_HELLO_VERSION ||
	    iov.dst_id != PS_LP_ROLE_URGENT)
		return lp_err_set(e, EPROTO, "%s: not a lazy-pages-server hello answer", c->peer);
	c->version = (int)iov.nr_pages;
	return 0;
}

static void fail(struct ps_client *c, const struct lp_err *e)
{
	struct ps_req *q, *next;

	pthread_mutex_lock(&c->lock);
	c->broken = 1;
	q = c->head;
	c->head = c->tail = NULL;
	c->inflight = 0;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	c->ops->failed(c->arg, c, e);
	for (; q; q = next) {
		next = q->next;
		c->ops->complete(c->arg, q, NULL, 0);
	}
}

/* Checks a reply header against the request at the head of the FIFO. */
static int check_reply(struct ps_client *c, const struct ps_iov *r, const struct ps_req *q, struct lp_err *e)
{
	const char *what = NULL;

	if (r->cmd != PS_GET_REPLY_CMD)
		what = "command";
	else if (r->dst_id != q->dst_id)
		what = "pid";
	else if (r->vaddr != q->img)
		what = "address";
	else if (r->nr_pages > q->nr_pages)
		what = "page count (more than asked)";
	else if (q->nruns && r->nr_pages && r->nr_pages != q->nr_pages)
		what = "page count (a list is answered whole)";
	if (what)
		return lp_err_set(e, EPROTO,
				  "%s: reply %llu: wrong %s: asked pid %u 0x%llx +%llu pages, got cmd 0x%x pid %llu 0x%llx +%llu pages",
				  c->peer, (unsigned long long)c->replies, what, q->dst_id, (unsigned long long)q->img,
				  (unsigned long long)q->nr_pages, r->cmd, (unsigned long long)r->dst_id,
				  (unsigned long long)r->vaddr, (unsigned long long)r->nr_pages);
	if (r->nr_pages == 0)
		return lp_err_set(e, ENOENT, "%s: reply %llu: pid %u has no page at 0x%llx (not found)", c->peer,
				  (unsigned long long)c->replies, q->dst_id, (unsigned long long)q->img);
	return 0;
}

static void set_timeouts(struct ps_client *c)
{
	/* no byte for this long with requests in flight: the connection is stalled */
	unsigned ms = c->timeout_ms / 3 < 1000 ? 1000 : c->timeout_ms / 3 > 10000 ? 10000 : c->timeout_ms / 3;
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	int one = 1;

	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->timeout_ms)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* The bytes of REQ's request (a GET, or a list GET) into B (room for PS_IOV_MAX + PS_LP_LIST_MAX runs). */
static size_t req_encode(const struct ps_client *c, const struct ps_req *q, uint8_t *b)
{
	struct ps_iov iov = { .cmd = PS_IOV_GET, .nr_pages = q->nr_pages, .vaddr = q->img, .dst_id = q->dst_id };

	if (q->nruns)
		return ps_list_encode(c->wire, q->dst_id, q->runs, q->nruns, b);
	return ps_iov_encode(c->wire, &iov, b) ? 0 : c->hsz;
}

/*
 * Makes the connection again and sends the requests not yet answered, in
 * order. Returns 0 once back, or -ETIMEDOUT (E set) past the timeout.
 */
static int reconnect(struct ps_client *c, struct lp_err *e)
{
	uint64_t t0, backoff_ms = 10, left;
	uint8_t b[PS_IOV_MAX + PS_LP_LIST_MAX * PS_LP_RUN_SIZE];
	struct lp_err e2 = *e, why;
	struct timespec ts;
	struct ps_req *q;
	int ret;

	/* a server that takes the connection and drops it at once (TLS at one end only) is one outage */
	if (!c->lost_since)
		c->lost_since = stats_now_ns();
	t0 = c->lost_since;
	pthread_mutex_lock(&c->lock);
	c->down = 1;
	link_close(c);
	pthread_mutex_unlock(&c->lock);
	if (c->ops->status)
		c->ops->status(c->arg, c, 0, e);
	for (;;) {
		uint64_t spent = (stats_now_ns() - t0) / 1000000;

		if (spent >= c->timeout_ms) {
			/* E is both the last attempt's reason and the output: copied first */
			struct lp_err last = *e;
			int same = !strcmp(last.msg, e2.msg);

			return lp_err_set(e, ETIMEDOUT, "%s; not back within --ps-timeout (%u ms)%s%s", e2.msg,
					  c->timeout_ms, same ? "" : ": ", same ? "" : last.msg);
		}
		left = c->timeout_ms - spent;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)((backoff_ms < left ? backoff_ms : left) * 1000000);
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_mutex_lock(&c->lock);
		if (!c->closing && !c->broken)
			pthread_cond_timedwait(&c->cv, &c->lock, &ts);
		ret = c->closing || c->broken;
		pthread_mutex_unlock(&c->lock);
		if (ret)
			return lp_err_set(e, ECANCELED, "%s", e2.msg);
		backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
		ret = connect_to(c, c->address, c->port, e);
		if (!ret && c->hello && (ret = do_hello(c, e)))
			link_close(c);
		if (ret == -EACCES) {
			/* a refused certificate does not get better by trying again */
			struct lp_err why = *e;

			return lp_err_set(e, EACCES, "%s; making it again: %s", e2.msg, why.msg);
		}
		if (ret)
			continue;
		set_timeouts(c);
		pthread_mutex_lock(&c->lock);
		for (q = c->head, ret = 0; q && !ret; q = q->next)
			ret = link_write(c, b, req_encode(c, q, b), &why);
		if (ret) {
			link_close(c);
			pthread_mutex_unlock(&c->lock);
			lp_err_set(e, -ret, "%s: sending the requests again: %s", c->peer, why.msg);
			continue;
		}
		c->down = 0;
		c->reconnects++;
		pthread_mutex_unlock(&c->lock);
		if (c->ops->status)
			c->ops->status(c->arg, c, 1, NULL);
		return 0;
	}
}

/* A lost connection (rather than a wrong reply) can be made again. */
static int lost(struct ps_client *c, int err)
{
	return c->timeout_ms && c->address[0] && err != -EPROTO && err != -ENOENT && err != -ENOMEM &&
	       err != -EACCES;
}

static void *rx_main(void *arg)
{
	struct ps_client *c = arg;
	uint8_t b[PS_IOV_MAX];
	struct ps_iov r;
	struct ps_req *q;
	struct lp_err e, why;
	int ret;

	for (;;) {
		pthread_mutex_lock(&c->lock);
		while (!c->head && !c->closing && !c->broken)
			pthread_cond_wait(&c->cv, &c->lock);
		if (!c->head) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		pthread_mutex_unlock(&c->lock);

		ret = link_read(c, b, c->hsz, &why);
		if (ret) {
			lp_err_set(&e, -ret, "%s: reply %llu: %s", c->peer, (unsigned long long)c->replies,
				   ret == -EPIPE ? "connection closed before the reply header" :
				   ret == -EAGAIN ? "no reply (stalled)" : why.msg);
			if (lost(c, ret) && !reconnect(c, &e))
				continue;
			goto broken;
		}
		ps_iov_decode(c->wire, b, &r);
		pthread_mutex_lock(&c->lock);
		q = c->head;
		pthread_mutex_unlock(&c->lock);
		ret = check_reply(c, &r, q, &e);
		if (ret)
			goto broken;
		ret = link_read(c, q->buf ? q->buf : c->buf, r.nr_pages * c->psz, &why);
		if (ret) {
			lp_err_set(&e, -ret, "%s: reply %llu: %s (pid %u 0x%llx +%llu pages)", c->peer,
				   (unsigned long long)c->replies,
				   ret == -EPIPE ? "connection closed inside the page data" :
				   ret == -EAGAIN ? "stalled inside the page data" : why.msg, q->dst_id,
				   (unsigned long long)q->img, (unsigned long long)r.nr_pages);
			if (lost(c, ret) && !reconnect(c, &e))
				continue;
			goto broken;
		}
		/* only now is the request done with: a half-read reply never reaches a process */
		pthread_mutex_lock(&c->lock);
		c->head = q->next;
		if (!c->head)
			c->tail = NULL;
		c->inflight--;
		c->replies++;
		c->lost_since = 0;
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->lock);
		q->next = NULL;
		c->ops->complete(c->arg, q, q->buf ? q->buf : c->buf, r.nr_pages);
	}
broken:
	fail(c, &e);
	return NULL;
}

int ps_client_open(const struct ps_client_opts *o, const struct ps_client_ops *ops, void *arg,
		   struct ps_client **out, struct lp_err *e)
{
	struct ps_client *c = calloc(1, sizeof(*c));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int ret;

	if (!c)
		return lp_err_set(e, ENOMEM, "out of memory");
	c->fd = -1;
	c->wire = o->wire;
	c->hsz = ps_iov_size(o->wire);
	c->psz = pagemap_page_size();
	c->max_pages = o->max_pages;
	c->hello = o->hello;
	c->tls_cfg = o->tls;
	c->ops = ops;
	c->arg = arg;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (!c->hsz) {
		ret = lp_err_set(e, EINVAL, "page server wire version %d (use 3 or 4)", o->wire);
		goto fail;
	}
	if (o->fd >= 0) {
		c->fd = o->fd;
		c->adopted = 1;
		snprintf(c->peer, sizeof(c->peer), "page server on fd %d", o->fd);
		if (getpeername(o->fd, (struct sockaddr *)&ss, &sl) == 0)
			set_peer_name(c, (struct sockaddr *)&ss, sl);
	} else {
		snprintf(c->address, sizeof(c->address), "%s", o->address);
		snprintf(c->port, sizeof(c->port), "%s", o->port);
		c->timeout_ms = o->timeout_ms;
		ret = connect_to(c, o->address, o->port, e);
		if (ret)
			goto fail;
	}
	set_timeouts(c);
	c->buf = io_page_alloc(o->max_pages * c->psz);
	if (!c->buf) {
		ret = lp_err_set(e, ENOMEM, "out of memory");
		goto fail;
	}
	if (c->hello) {
		ret = do_hello(c, e);
		if (ret)
			goto fail;
	}
	ret = pthread_create(&c->rx, NULL, rx_main, c);
	if (ret) {
		ret = lp_err_set(e, ret, "%s: receiver thread: %s", c->peer, strerror(ret));
		goto fail;
	}
	c->started = 1;
	*out = c;
	return 0;
fail:
	tls_free(c->tls);
	c->tls = NULL;
	if (!c->adopted && c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	ps_client_close(c, NULL);
	return ret;
}

int ps_client_submit(struct ps_client *c, struct ps_req *q)
{
	uint8_t b[PS_IOV_MAX + PS_LP_LIST_MAX * PS_LP_RUN_SIZE];
	size_t len;
	int ret;

	if (q->nr_pages == 0 || q->nr_pages > c->max_pages)
		return -EINVAL;
	len = req_encode(c, q, b);
	if (!len)
		return -EINVAL;
	q->next = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->broken || c->closing) {
		pthread_mutex_unlock(&c->lock);
		return -EPIPE;
	}
	/* queued before it is sent, so the receiver always finds its request */
	if (c->tail)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->inflight++;
	q->t_sent = stats_now_ns();
	/* while the connection is being made again, it is sent with the others once back */
	ret = c->down ? 0 : link_write(c, b, len, NULL);
	/* on a failed send the receiver sees the broken connection (and makes it again) */
	if (ret)
		shutdown(c->fd, SHUT_RDWR);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int ps_client_version(const struct ps_client *c)
{
	return c->version;
}

int ps_client_inflight(struct ps_client *c)
{
	int n;

	pthread_mutex_lock(&c->lock);
	n = c->inflight;
	pthread_mutex_unlock(&c->lock);
	return n;
}

const char *ps_client_peer(const struct ps_client *c)
{
	return c->peer;
}

void ps_client_abort(struct ps_client *c)
{
	pthread_mutex_lock(&c->lock);
	c->broken = 1;
	pthread_cond_broadcast(&c->cv);
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->lock);
}

int ps_client_local(struct ps_client *c, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof(*ss);
	int ret;

	pthread_mutex_lock(&c->lock);
	ret = c->fd >= 0 && getsockname(c->fd, (struct sockaddr *)ss, &len) == 0 ? 0 : -ENOTCONN;
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void ps_client_kick(struct ps_client *c)
{
	pthread_mutex_lock(&c->lock);
	if (!c->down && c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->lock);
}

int ps_client_close(struct ps_client *c, struct lp_err *e)
{
	struct ps_iov iov = { .cmd = PS_IOV_CLOSE };
	uint8_t b[PS_IOV_MAX];
	int32_t answer = -1;
	int ret = -EPIPE, broken;
	struct lp_err why;

	if (!c)
		return 0;
	pthread_mutex_lock(&c->lock);
	while (c->head && !c->broken)
		pthread_cond_wait(&c->cv, &c->lock);
	c->closing = 1;
	broken = c->broken;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	if (c->started)
		pthread_join(c->rx, NULL);
	if (c->fd >= 0 && !broken) {
		iov.cmd = c->adopted ? PS_IOV_FORCE_CLOSE : PS_IOV_CLOSE;
		ps_iov_encode(c->wire, &iov, b);
		ret = link_write(c, b, c->hsz, &why);
		if (!ret)
			ret = link_read(c, &answer, sizeof(answer), &why);
		if (!ret && answer != 0)
			ret = lp_err_set(&why, EPROTO, "the server did not acknowledge");
		if (ret)
			lp_err_set(e, -ret, "%s: close: %s", c->peer, why.msg);
		/* as CRIU's client: close_notify, and the server's */
		if (!ret && c->tls)
			tls_bye(c->tls, 1);
	}
	tls_free(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return ret;
}
