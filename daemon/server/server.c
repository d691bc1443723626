/* SPDX-License-Identifier: MIT */
/* server: the accept loop and one thread per connection answering CRIU page-server GETs from images. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "images.h"
#include "io.h"
#include "log.h"
#include "ps_wire.h"
#include "server.h"
#include "tls.h"

#define SERVER_PEER_LEN 64
#define SERVER_SENDFILE_MAX (1u << 30)	/* below sendfile's 0x7ffff000 cap */
#define SERVER_STACK (256u << 10)	/* a connection needs a few KiB; 4096 of them stay small */
#define SERVER_TLS_CHUNK (256u << 10)	/* with TLS, pages are read into this much and sent */

/* One pstree pid; its pagemap is opened on the first GET, by whichever connection comes first. */
struct server_task {
	uint32_t pid;
	uint32_t state;			/* core task_state */
	pthread_mutex_t lock;		/* guards the three fields below */
	bool tried;
	struct pagemap *pm;
	struct lp_err err;		/* why the pagemap did not open */
};

struct server_conn {
	struct server *s;
	struct server_conn *next;
	pthread_t thread;
	int fd;				/* closed by the accept loop, after the join */
	struct tls *tls;		/* with --tls */
	uint8_t *buf;			/* with --tls: pages on their way */
	atomic_bool served;		/* past the TLS check (at once without --tls) */
	atomic_bool done;
	bool hello;			/* lazy-pagesd's second connection: part of another restore */
	bool closed;			/* the client reached CLOSE: a restore complete */
	char peer[SERVER_PEER_LEN];
	uint64_t gets, pages, misses;
};

struct server {
	struct server_cfg cfg;
	struct access_net *allow;	/* cfg.allow, our copy */
	struct access_log *refusals;
	const char *address;		/* cfg.address or its default */
	struct imgdir *d;
	struct server_task *tasks;	/* sorted by pid */
	size_t nr_tasks;
	uint64_t ps;
	size_t hsz;			/* header size for cfg.wire */
	int lfd;
	int port;
	int reap_fd;			/* eventfd: a connection thread has finished */
	int spare_fd;			/* given up to accept-and-close at EMFILE */

	/* the accept loop's own: conns are added, reaped and shut down only there */
	struct server_conn *conns;
	int nr_conns;
	unsigned int restores;		/* clients that reached CLOSE (not counting second connections) */
	uint64_t idle_since_ms;		/* when the last client that was served went away */
};

static uint64_t server_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void server_cfg_defaults(struct server_cfg *cfg)
{
	*cfg = (struct server_cfg){
		.images_dir = ".",
		.port = -1,
		.wire = PS_WIRE_4,
		.max_clients = 64,
	};
}

int server_port(const struct server *s)
{
	return s->port;
}

const char *server_address(const struct server *s)
{
	return s->address;
}

/* ---- images ---- */

static int task_cmp(const void *a, const void *b)
{
	const struct server_task *x = a, *y = b;

	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static struct server_task *server_task_find(struct server *s, uint64_t pid)
{
	struct server_task key;

	if (pid > UINT32_MAX)
		return NULL;
	key.pid = (uint32_t)pid;
	return bsearch(&key, s->tasks, s->nr_tasks, sizeof(key), task_cmp);
}

static int server_load_tasks(struct server *s, struct lp_err *e)
{
	struct pstree_ent *ents = NULL;
	size_t n = 0, i;
	int ret;

	ret = imgdir_read_pstree(s->d, &ents, &n, e);
	if (ret < 0)
		return ret;
	s->tasks = calloc(n ? n : 1, sizeof(*s->tasks));
	if (!s->tasks) {
		ret = lp_err_set(e, ENOMEM, "pstree: %zu processes", n);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct server_task *t = &s->tasks[i];

		t->pid = ents[i].pid;
		pthread_mutex_init(&t->lock, NULL);
		s->nr_tasks++;
		ret = imgdir_task_state(s->d, t->pid, &t->state, e);
		if (ret < 0)
			goto out;
	}
	qsort(s->tasks, s->nr_tasks, sizeof(*s->tasks), task_cmp);
	for (i = 1; i < s->nr_tasks; i++) {
		if (s->tasks[i].pid == s->tasks[i - 1].pid) {
			ret = lp_err_set(e, EINVAL, "%s/pstree.img: pid %" PRIu32 " appears twice",
					 imgdir_path(s->d), s->tasks[i].pid);
			goto out;
		}
	}
	ret = 0;
out:
	pstree_free(ents, n);
	return ret;
}

/* The task's pagemap, opened on first use; NULL with E filled if it cannot be. */
static struct pagemap *server_task_pagemap(struct server *s, struct server_task *t,
					   struct lp_err *e, bool *first_failure)
{
	struct pagemap *pm;

	*first_failure = false;
	pthread_mutex_lock(&t->lock);
	if (!t->tried) {
		t->tried = true;
		if (pagemap_open(s->d, t->pid, &t->pm, &t->err) < 0) {
			t->pm = NULL;
			*first_failure = true;
		}
	}
	pm = t->pm;
	if (!pm)
		*e = t->err;
	pthread_mutex_unlock(&t->lock);
	return pm;
}

struct server *server_new(const struct server_cfg *cfg, struct lp_err *e)
{
	struct server *s;
	int ret;

	if (!ps_iov_size(cfg->wire)) {
		lp_err_set(e, EINVAL, "page-server wire version %d: use 3 or 4", cfg->wire);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		lp_err_set(e, ENOMEM, "server");
		return NULL;
	}
	s->cfg = *cfg;
	s->address = cfg->address ? cfg->address
				  : cfg->tls ? SERVER_DEFAULT_ADDRESS_TLS : SERVER_DEFAULT_ADDRESS;
	s->lfd = s->reap_fd = s->spare_fd = -1;
	s->port = -1;
	s->ps = pagemap_page_size();
	s->hsz = ps_iov_size(cfg->wire);
	if (s->cfg.max_clients < 1)
		s->cfg.max_clients = 1;
	if (cfg->nr_allow > ACCESS_MAX_NETS) {
		lp_err_set(e, E2BIG, "more than %d --allow entries", ACCESS_MAX_NETS);
		goto fail;
	}
	s->allow = calloc(cfg->nr_allow ? cfg->nr_allow : 1, sizeof(*s->allow));
	s->refusals = access_log_new();
	if (!s->allow || !s->refusals) {
		lp_err_set(e, ENOMEM, "server");
		goto fail;
	}
	if (cfg->nr_allow)
		memcpy(s->allow, cfg->allow, cfg->nr_allow * sizeof(*s->allow));
	s->cfg.allow = s->allow;
	ret = imgdir_open(cfg->images_dir, &s->d, e);
	if (ret < 0)
		goto fail;
	ret = server_load_tasks(s, e);
	if (ret < 0)
		goto fail;
	return s;
fail:
	server_free(s);
	return NULL;
}

void server_free(struct server *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->nr_tasks; i++) {
		pagemap_close(s->tasks[i].pm);
		pthread_mutex_destroy(&s->tasks[i].lock);
	}
	free(s->tasks);
	free(s->allow);
	access_log_free(s->refusals);
	imgdir_close(s->d);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->reap_fd >= 0)
		close(s->reap_fd);
	if (s->spare_fd >= 0)
		close(s->spare_fd);
	free(s);
}

/* ---- listening ---- */

/*
 * Closed by default: loopback, or TLS (client certificates), or a list of
 * the peers allowed, or the operator's explicit --insecure.
 */
static int server_check_exposure(struct server *s, const struct sockaddr *sa, struct lp_err *e)
{
	struct access_net bound, lo;
	size_t i;

	if (access_net_of(sa, &bound) < 0)
		return lp_err_set(e, EAFNOSUPPORT, "address %s: not IPv4 or IPv6", s->address);
	if (access_net_loopback(&bound)) {
		if (!s->cfg.nr_allow)
			return 0;
		/* a loopback peer's address is of the listener's family */
		access_net_parse("127.0.0.0/8", &lo, NULL);
		if (!access_net_contains(&lo, &bound))
			access_net_parse("::1", &lo, NULL);
		for (i = 0; i < s->cfg.nr_allow; i++)
			if (access_net_overlaps(&s->allow[i], &lo))
				return 0;
		return lp_err_set(e, EINVAL, "listening on %s (loopback%s) but no --allow entry matches "
				  "a loopback client: none could connect (give --address for others)",
				  s->address, s->cfg.address ? "" : ", the default without --tls");
	}
	if (s->cfg.tls || s->cfg.nr_allow)
		return 0;
	if (s->cfg.insecure) {
		log_warn("--insecure: the pages of %s go unencrypted to anyone who can reach %s",
			 s->cfg.images_dir, s->address);
		return 0;
	}
	return lp_err_set(e, EACCES, "refusing to listen on %s without --tls: every page of %s (the "
			  "memory of the dumped processes: keys, passwords, tokens) would go unencrypted "
			  "to anyone who can reach it. Use --tls (clients need a certificate from "
			  "--tls-cacert), --allow ADDR[/PREFIX] for the peers that may read it, or "
			  "--insecure if that is meant",
			  s->address, s->cfg.images_dir);
}

int server_listen(struct server *s, struct lp_err *e)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
	};
	const char *addr = s->address;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct addrinfo *ai = NULL;
	char port[16];
	int one = 1, fd = -1, ret;

	if (s->cfg.port < 0 || s->cfg.port > 65535)
		return lp_err_set(e, EINVAL, "port %d: use 0 to 65535", s->cfg.port);
	snprintf(port, sizeof(port), "%d", s->cfg.port);
	ret = getaddrinfo(addr, port, &hints, &ai);
	if (ret)
		return lp_err_set(e, EINVAL, "address %s: %s (a numeric IPv4 or IPv6 address)", addr,
				  gai_strerror(ret));
	ret = server_check_exposure(s, ai->ai_addr, e);
	if (ret < 0)
		goto out;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = lp_err_set(e, errno, "socket: %s", strerror(errno));
		goto out;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		ret = lp_err_set(e, errno, "listen on %s port %s: %s", addr, port, strerror(errno));
		goto out;
	}
	s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						 : ((struct sockaddr_in *)&ss)->sin_port);
	s->reap_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->reap_fd < 0) {
		ret = lp_err_set(e, errno, "eventfd: %s", strerror(errno));
		goto out;
	}
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s->lfd = fd;
	fd = -1;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ret;
}

/* ---- one connection ---- */

/* read(2) on the connection, through TLS with --tls: bytes, 0 at EOF, or -errno (E says why) */
static ssize_t conn_recv(struct server_conn *c, void *buf, size_t n, struct lp_err *e)
{
	ssize_t r;

	if (c->tls)
		return tls_read(c->tls, buf, n, e);
	do
		r = read(c->fd, buf, n);
	while (r < 0 && errno == EINTR);
	return r < 0 ? lp_err_set(e, errno, "%s", strerror(errno)) : r;
}

/* 0: a whole header; 1: EOF before its first byte; -EPIPE: EOF inside; -errno (E says why) */
static int conn_read_header(struct server_conn *c, void *buf, size_t n, struct lp_err *e)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = conn_recv(c, (char *)buf + got, n - got, e);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return got ? -EPIPE : 1;
		got += (size_t)r;
	}
	return 0;
}

static int conn_send(struct server_conn *c, const void *buf, size_t n, int flags)
{
	const char *p = buf;

	if (c->tls)
		return tls_write_full(c->tls, buf, n, NULL);
	while (n) {
		ssize_t r = send(c->fd, p, n, flags | MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int conn_send_iov(struct server_conn *c, const struct ps_iov *iov, int flags)
{
	uint8_t buf[PS_IOV_MAX];
	int ret;

	ret = ps_iov_encode(c->s->cfg.wire, iov, buf);
	if (ret < 0)
		return ret;
	return conn_send(c, buf, c->s->hsz, flags);
}

static int conn_sendfile(int sk, int fd, uint64_t off, uint64_t len)
{
	off_t o = (off_t)off;

	while (len) {
		size_t chunk = len > SERVER_SENDFILE_MAX ? SERVER_SENDFILE_MAX : (size_t)len;
		ssize_t r = sendfile(sk, fd, &o, chunk);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;	/* the pages file shrank under us */
		len -= (uint64_t)r;
	}
	return 0;
}

/*
 * With TLS the pages cannot go by sendfile: they are read and sent. The
 * header goes in a TLS record of its own, as CRIU's server sends it:
 * CRIU's client reads the header, then waits on epoll for the pages, and
 * pages decrypted along with the header would sit in its TLS buffer with
 * nothing left on the socket to wake it.
 */
/* A run's pages through TLS: read, then sent (no sendfile into a TLS session). */
static int conn_tls_pages(struct server_conn *c, const struct pm_run *run)
{
	uint64_t off = run->off, len = run->nr_pages * c->s->ps;
	int ret;

	if (!c->buf && !(c->buf = io_page_alloc(SERVER_TLS_CHUNK)))
		return -ENOMEM;
	while (len) {
		size_t want = SERVER_TLS_CHUNK < len ? SERVER_TLS_CHUNK : (size_t)len;
		ssize_t r = pread(run->fd, c->buf, want, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;	/* the pages file shrank under us */
		off += (uint64_t)r;
		len -= (uint64_t)r;
		ret = tls_write_full(c->tls, c->buf, (size_t)r, NULL);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int conn_send_run_tls(struct server_conn *c, const struct ps_iov *rep, const struct pm_run *run)
{
	int ret = conn_send_iov(c, rep, 0);

	return ret < 0 ? ret : conn_tls_pages(c, run);
}

/* Finds the stored run a GET asks for; -errno with E saying why it is "not found". */
static int conn_find_run(struct server_conn *c, const struct ps_iov *req, struct pm_run *run,
			 struct lp_err *e)
{
	struct server *s = c->s;
	struct server_task *t;
	struct pagemap *pm;
	bool first;
	int ret;

	if (req->nr_pages == 0)
		return lp_err_set(e, EINVAL, "0 pages asked");
	if (req->nr_pages > SERVER_MAX_GET_PAGES)
		return lp_err_set(e, E2BIG, "more than %u pages asked", SERVER_MAX_GET_PAGES);
	if (req->vaddr % s->ps)
		return lp_err_set(e, EINVAL, "address not page aligned");
	t = server_task_find(s, req->dst_id);
	if (!t)
		return lp_err_set(e, ESRCH, "no such pid in pstree.img");
	if (t->state == TASK_DEAD)
		return lp_err_set(e, ESRCH, "pid is a zombie");
	pm = server_task_pagemap(s, t, e, &first);
	if (!pm) {
		if (first)
			log_err("pid %" PRIu32 ": %s", t->pid, e->msg);
		return -EIO;
	}
	ret = pagemap_lookup(pm, req->vaddr, req->nr_pages, run, e);
	if (ret < 0)
		return ret;
	if (run->kind == PM_HOLE)
		return lp_err_set(e, ENOENT, "a hole (zero page) in the pagemap");
	if (run->kind == PM_REMOTE)
		return lp_err_set(e, EREMOTE, "a PE_LAZY page with no data in the images");
	return 0;
}

static int conn_get(struct server_conn *c, const struct ps_iov *req)
{
	struct ps_iov rep = *req;
	struct lp_err e = { 0 };
	struct pm_run run;
	int ret;

	c->gets++;
	rep.cmd = PS_GET_REPLY_CMD;
	if (conn_find_run(c, req, &run, &e) < 0) {
		c->misses++;
		log_info("%s: GET pid %" PRIu64 " vaddr 0x%" PRIx64 " pages %" PRIu64
			 ": not found: %s", c->peer, req->dst_id, req->vaddr, req->nr_pages, e.msg);
		rep.nr_pages = 0;
		return conn_send_iov(c, &rep, 0);
	}
	log_debug("%s: GET pid %" PRIu64 " vaddr 0x%" PRIx64 " pages %" PRIu64 ": %" PRIu64
		  " pages at offset %" PRIu64, c->peer, req->dst_id, req->vaddr, req->nr_pages,
		  run.nr_pages, run.off);
	rep.nr_pages = run.nr_pages;
	if (c->tls) {
		ret = conn_send_run_tls(c, &rep, &run);
	} else {
		/* MSG_MORE holds the header back until sendfile's last segment pushes both out */
		ret = conn_send_iov(c, &rep, MSG_MORE);
		if (ret < 0)
			return ret;
		ret = conn_sendfile(c->fd, run.fd, run.off, run.nr_pages * c->s->ps);
	}
	if (ret == -EIO)
		log_err("%s: GET pid %" PRIu64 " vaddr 0x%" PRIx64 ": the pages file ends before"
			" offset %" PRIu64 " + %" PRIu64 " pages", c->peer, req->dst_id, req->vaddr,
			run.off, run.nr_pages);
	if (ret < 0)
		return ret;
	c->pages += run.nr_pages;
	return 0;
}

/* Reads exactly N bytes that follow a header (a list's runs): 0, or -errno (E says why). */
static int conn_read_more(struct server_conn *c, void *buf, size_t n, struct lp_err *e)
{
	int ret = conn_read_header(c, buf, n, e);

	if (ret == 1)
		return lp_err_set(e, EPIPE, "connection closed before the list's runs");
	if (ret == -EPIPE)
		lp_err_set(e, EPIPE, "connection closed inside the list's runs");
	return ret;
}

/*
 * lazy-pages' list GET (ps_wire.h): every run resolved first, then one
 * header and the pages of all of them, or a header with no page (not
 * found) if any is not there. A list that does not add up closes the
 * connection (its runs cannot be told from what follows).
 */
static int conn_list(struct server_conn *c, const struct ps_iov *req)
{
	uint8_t raw[PS_LP_LIST_MAX * PS_LP_RUN_SIZE];
	struct ps_run runs[PS_LP_LIST_MAX];
	struct pm_run *pr = NULL;
	struct ps_iov rep = *req, one = *req;
	struct lp_err e = { .msg = "" };
	uint64_t i, total = 0, n = 0, cap = 0, left, va;
	int ret;

	c->gets++;
	if (req->nr_pages == 0 || req->nr_pages > PS_LP_LIST_MAX) {
		log_err("%s: a list GET of %" PRIu64 " runs (1 to %d), closing the connection", c->peer,
			req->nr_pages, PS_LP_LIST_MAX);
		return -EPROTO;
	}
	ret = conn_read_more(c, raw, req->nr_pages * PS_LP_RUN_SIZE, &e);
	if (ret < 0) {
		log_err("%s: %s", c->peer, e.msg);
		return -EPROTO;
	}
	for (i = 0; i < req->nr_pages; i++) {
		ps_run_decode(raw + i * PS_LP_RUN_SIZE, &runs[i]);
		if (!runs[i].nr_pages || runs[i].nr_pages > SERVER_MAX_GET_PAGES)
			break;
		total += runs[i].nr_pages;
	}
	if (i < req->nr_pages || total != req->vaddr || total > SERVER_MAX_GET_PAGES) {
		log_err("%s: a list GET whose runs do not add up to its %" PRIu64 " pages (at most %u), closing the connection",
			c->peer, req->vaddr, SERVER_MAX_GET_PAGES);
		return -EPROTO;
	}
	rep.cmd = PS_GET_REPLY_CMD;
	rep.vaddr = runs[0].img;
	rep.nr_pages = total;
	/* a run of the client's may span stored runs (pagemap entries): each its own sendfile */
	for (i = 0; i < req->nr_pages && rep.nr_pages; i++) {
		for (left = runs[i].nr_pages, va = runs[i].img; left; left -= pr[n - 1].nr_pages, va += pr[n - 1].nr_pages * c->s->ps) {
			if (n == cap) {
				struct pm_run *np = realloc(pr, (cap = cap ? cap * 2 : 64) * sizeof(*pr));

				if (!np) {
					free(pr);
					return -ENOMEM;
				}
				pr = np;
			}
			one.vaddr = va;
			one.nr_pages = left;
			if (conn_find_run(c, &one, &pr[n], &e) < 0) {
				c->misses++;
				log_info("%s: list GET pid %" PRIu64 " run %" PRIu64 " at 0x%" PRIx64 " (+%" PRIu64
					 " pages): not found: %s", c->peer, req->dst_id, i, va, left, e.msg);
				rep.nr_pages = 0;
				break;
			}
			n++;
		}
	}
	if (!rep.nr_pages) {
		free(pr);
		return conn_send_iov(c, &rep, 0);
	}
	ret = conn_send_iov(c, &rep, c->tls ? 0 : MSG_MORE);
	for (i = 0; i < n && ret >= 0; i++)
		ret = c->tls ? conn_tls_pages(c, &pr[i]) :
			       conn_sendfile(c->fd, pr[i].fd, pr[i].off, pr[i].nr_pages * c->s->ps);
	if (ret == -EIO)
		log_err("%s: list GET pid %" PRIu64 ": a pages file ends before the pages of its pagemap", c->peer,
			req->dst_id);
	if (ret >= 0)
		c->pages += total;
	free(pr);
	return ret;
}

/* CRIU's close: int32 0, then the client hangs up; anything it sends first is an error. */
static int conn_close_cmd(struct server_conn *c)
{
	int32_t zero = 0;
	char buf[256];
	ssize_t r;
	int ret;

	ret = conn_send(c, &zero, sizeof(zero), 0);
	if (ret < 0)
		return ret;
	/* as CRIU's server: close_notify, and the client's, before waiting for its hang-up */
	if (c->tls)
		tls_bye(c->tls, 1);
	do
		r = read(c->fd, buf, sizeof(buf));
	while (r < 0 && errno == EINTR);
	if (r > 0) {
		log_err("%s: unexpected data after CLOSE (%zd bytes)", c->peer, r);
		return -EPROTO;
	}
	return 0;
}

static int conn_hello(struct server_conn *c, const struct ps_iov *req)
{
	struct ps_iov rep = *req;

	log_info("%s: lazy-pages hello, version %" PRIu64 ", role %" PRIu64, c->peer,
		 req->nr_pages, req->dst_id);
	c->hello = true;
	rep.cmd = PS_LP_HELLO_REPLY;
	/* the lower of both: a version 1 client requires 1 */
	rep.nr_pages = req->nr_pages && req->nr_pages < PS_LP_HELLO_VERSION ? req->nr_pages : PS_LP_HELLO_VERSION;
	return conn_send_iov(c, &rep, 0);
}

static void conn_serve(struct server_conn *c)
{
	uint8_t buf[PS_IOV_MAX];
	struct ps_iov req;
	struct lp_err e;
	int ret;

	for (;;) {
		ret = conn_read_header(c, buf, c->s->hsz, &e);
		if (ret == 1)
			break;
		if (ret < 0) {
			if (ret == -EPIPE)
				log_err("%s: connection closed inside a header", c->peer);
			else
				log_err("%s: read: %s", c->peer, e.msg);
			break;
		}
		ps_iov_decode(c->s->cfg.wire, buf, &req);
		if (req.cmd == PS_IOV_CLOSE || req.cmd == PS_IOV_FORCE_CLOSE) {
			c->closed = conn_close_cmd(c) == 0;
			break;
		}
		if ((req.cmd & PS_CMD_MASK) == PS_IOV_GET)
			ret = conn_get(c, &req);
		else if (req.cmd == PS_LP_HELLO)
			ret = conn_hello(c, &req);
		else if (req.cmd == PS_LP_LIST)
			ret = conn_list(c, &req);
		else {
			log_err("%s: unknown page-server command 0x%" PRIx32
				" (nr_pages %" PRIu64 ", vaddr 0x%" PRIx64 ", dst_id 0x%" PRIx64
				"), closing the connection", c->peer, req.cmd, req.nr_pages, req.vaddr,
				req.dst_id);
			break;
		}
		if (ret < 0) {
			if (ret != -EPIPE && ret != -ECONNRESET)
				log_err("%s: send: %s", c->peer, strerror(-ret));
			else
				log_info("%s: the client went away", c->peer);
			break;
		}
	}
	log_info("%s: disconnected after %" PRIu64 " GETs (%" PRIu64 " pages sent, %" PRIu64
		 " not found)", c->peer, c->gets, c->pages, c->misses);
}

/* The handshake, then the client's certificate checked against our own --address, as CRIU does. */
static int conn_start_tls(struct server_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	struct lp_err e;
	char buf[512];
	int ret, i;

	ret = tls_server_wrap(c->fd, c->s->cfg.tls, c->s->cfg.address, c->peer, &c->tls, &e);
	if (!ret) {
		log_info("%s: TLS session, client certificate accepted", c->peer);
		return 0;
	}
	log_err("%s", e.msg);
	/* the alert must reach the client: closing with its bytes unread would send a reset instead */
	shutdown(c->fd, SHUT_WR);
	for (i = 0; i < 64 && poll(&pfd, 1, 1000) > 0 && read(c->fd, buf, sizeof(buf)) > 0; i++)
		;
	return ret;
}

static void *conn_main(void *arg)
{
	struct server_conn *c = arg;
	uint64_t one = 1;

	if (!c->s->cfg.tls || conn_start_tls(c) == 0) {
		atomic_store(&c->served, true);
		conn_serve(c);
	}
	tls_free(c->tls);
	c->tls = NULL;
	free(c->buf);
	c->buf = NULL;
	atomic_store(&c->done, true);
	if (write(c->s->reap_fd, &one, sizeof(one)) < 0)
		return NULL;	/* cannot fail short of EAGAIN at 2^64-1 */
	return NULL;
}

/* ---- the accept loop ---- */

static void peer_name(const struct sockaddr_storage *ss, socklen_t sl, char *out, size_t n)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo((const struct sockaddr *)ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(out, n, "peer ?");
		return;
	}
	snprintf(out, n, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

static void server_reap(struct server *s, bool all)
{
	struct server_conn **pp = &s->conns, *c;

	while ((c = *pp)) {
		if (!all && !atomic_load(&c->done)) {
			pp = &c->next;
			continue;
		}
		pthread_join(c->thread, NULL);
		if (atomic_load(&c->served))
			s->idle_since_ms = server_now_ms();
		if (c->closed && !c->hello) {
			s->restores++;
			if (s->cfg.max_restores)
				log_info("%s: restore complete (%u of --max-restores %u)", c->peer, s->restores,
					 s->cfg.max_restores);
		}
		close(c->fd);
		*pp = c->next;
		s->nr_conns--;
		free(c);
	}
}

/*
 * The --allow check, on the address accept returned: nothing has been read
 * from the peer nor sent to it. A refused peer is logged when the rate
 * limit lets it: its first refusal, then a count at most once a minute.
 */
static bool server_allowed(struct server *s, const struct sockaddr_storage *ss, const char *name)
{
	struct access_note note;
	struct access_net peer = { { 0 }, 128 };
	char addr[INET6_ADDRSTRLEN + 8];
	size_t i;

	if (!s->cfg.nr_allow)
		return true;
	if (access_net_of((const struct sockaddr *)ss, &peer) == 0) {
		for (i = 0; i < s->cfg.nr_allow; i++)
			if (access_net_contains(&s->allow[i], &peer))
				return true;
	}
	access_log_refused(s->refusals, &peer, server_now_ms(), &note);
	if (!note.log)
		return false;
	access_net_format(&peer, addr, sizeof(addr));
	if (note.first)
		log_warn("%s: refused: not on the --allow list; closed unread (later refusals of %s: "
			 "one line a minute at most)", name, addr);
	else
		log_warn("%s: refused %" PRIu64 " times in the last %" PRIu64 " s: not on the --allow list",
			 addr, note.count, note.since_ms / 1000);
	return false;
}

/* EMFILE: free the spare fd to take the pending connection off the queue and refuse it. */
static void server_refuse_pending(struct server *s)
{
	int fd;

	if (s->spare_fd < 0)
		return;
	close(s->spare_fd);
	fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		close(fd);
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void server_accept(struct server *s)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct server_conn *c;
	char peer[SERVER_PEER_LEN];
	pthread_attr_t attr;
	int one = 1, fd, ret;

	fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE) {
			log_err("accept: %s; refusing a connection", strerror(errno));
			server_refuse_pending(s);
		} else if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
			log_warn("accept: %s", strerror(errno));
		}
		return;
	}
	peer_name(&ss, sl, peer, sizeof(peer));
	if (!server_allowed(s, &ss, peer)) {
		close(fd);
		return;
	}
	/* a client that just hung up must not count against the limit */
	server_reap(s, false);
	if (s->nr_conns >= s->cfg.max_clients) {
		log_err("%s: refused: %d clients already (--max-clients)", peer, s->nr_conns);
		close(fd);
		return;
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_warn("%s: TCP_NODELAY: %s", peer, strerror(errno));
	c = calloc(1, sizeof(*c));
	if (!c) {
		log_err("%s: refused: out of memory", peer);
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	memcpy(c->peer, peer, sizeof(peer));
	atomic_init(&c->served, !s->cfg.tls);
	atomic_init(&c->done, false);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, SERVER_STACK);
	ret = pthread_create(&c->thread, &attr, conn_main, c);
	pthread_attr_destroy(&attr);
	if (ret) {
		log_err("%s: refused: cannot start a thread: %s", peer, strerror(ret));
		close(fd);
		free(c);
		return;
	}
	c->next = s->conns;
	s->conns = c;
	s->nr_conns++;
	log_info("%s: connected (%d clients)", peer, s->nr_conns);
}

/*
 * --idle-exit: milliseconds until the server has been idle long enough (0:
 * now), or -1 while a client that got past the checks is connected.
 */
static int server_idle_wait(struct server *s)
{
	uint64_t now = server_now_ms(), limit = (uint64_t)s->cfg.idle_exit_s * 1000;
	struct server_conn *c;

	if (!s->cfg.idle_exit_s)
		return -1;
	for (c = s->conns; c; c = c->next) {
		if (atomic_load(&c->served) && !atomic_load(&c->done)) {
			s->idle_since_ms = now;
			return -1;
		}
	}
	if (now - s->idle_since_ms >= limit)
		return 0;
	/* a client in its TLS handshake does not count: poll again when it would run out */
	limit -= now - s->idle_since_ms;
	return limit > INT_MAX ? INT_MAX : (int)limit;
}

/* --max-restores reached: no more connections; true once the last one open is done too. */
static bool server_limit_reached(struct server *s, bool *listening)
{
	if (!s->cfg.max_restores || s->restores < s->cfg.max_restores)
		return false;
	if (*listening) {
		close(s->lfd);
		s->lfd = -1;
		*listening = false;
		log_info("%u restore%s complete (--max-restores %u): no more connections accepted%s",
			 s->restores, s->restores == 1 ? "" : "s", s->cfg.max_restores,
			 s->nr_conns ? "; serving the clients still connected to their end" : "");
	}
	return s->nr_conns == 0;
}

int server_run(struct server *s, int stop_fd, struct lp_err *e)
{
	struct pollfd pfd[3] = {
		{ .fd = stop_fd, .events = POLLIN },
		{ .fd = s->reap_fd, .events = POLLIN },
		{ .fd = s->lfd, .events = POLLIN },
	};
	bool listening = true;
	struct server_conn *c;
	uint64_t v, refused, addrs;
	int ret = 0, wait;

	if (s->lfd < 0)
		return lp_err_set(e, EINVAL, "server_run before server_listen");
	s->idle_since_ms = server_now_ms();
	for (;;) {
		wait = server_idle_wait(s);
		if (wait == 0) {
			log_info("no client for %u s (--idle-exit): stopping", s->cfg.idle_exit_s);
			break;
		}
		if (poll(pfd, listening ? 3 : 2, wait) < 0) {
			if (errno == EINTR)
				continue;
			ret = lp_err_set(e, errno, "poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents) {
			if (read(s->reap_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				log_warn("eventfd: %s", strerror(errno));
			server_reap(s, false);
		}
		if (server_limit_reached(s, &listening)) {
			log_info("the last client is done: stopping");
			break;
		}
		if (listening && (pfd[2].revents & POLLIN))
			server_accept(s);
	}
	access_log_totals(s->refusals, &refused, &addrs);
	if (refused)
		log_warn("refused %" PRIu64 " connection%s from %" PRIu64 " address%s not on the --allow list",
			 refused, refused == 1 ? "" : "s", addrs, addrs == 1 ? "" : "es");
	if (s->lfd >= 0)
		close(s->lfd);
	s->lfd = -1;
	/* wakes threads blocked in read or sendfile; their fds stay open until the join */
	for (c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	server_reap(s, true);
	return ret;
}
