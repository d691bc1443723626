/* SPDX-License-Identifier: MIT */
/*
 * lp-fakeps: a page-server peer for tests. With --mode it is a page server
 * that misbehaves on purpose: it serves GETs from an image dir like CRIU's
 * page server (one client, strictly FIFO) and answers request number
 * --good+1 wrongly, using the real page bytes where it answers at all;
 * with --reconnect it then serves the client's next connection correctly.
 * With --probe it is a client that fetches random lazy pages from a page
 * server and checks every header field and byte against the images, timing
 * each round trip.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "ps_wire.h"

#define PAGE 4096u
#define MAX_GET_PAGES 16384u		/* larger GETs are a client bug here */
#define MAX_PIDS 256
#define GARBAGE_BYTES (256u << 10)

enum mode {
	M_SHORT_HEADER,
	M_WRONG_ADDRESS,
	M_MORE_PAGES,
	M_CLOSE_MID_REPLY,
	M_ZERO_PAGES,
	M_WRONG_PID,
	M_GARBAGE,
	M_GOOD,				/* never misbehave (a reference server) */
};

static const char *const mode_names[] = {
	"short-header", "wrong-address", "more-pages", "close-mid-reply", "zero-pages",
	"wrong-pid", "garbage", "good",
};

struct pidpm {
	uint32_t pid;
	struct pagemap *pm;
};

struct fps {
	struct imgdir *d;
	struct pstree_ent *ps;
	size_t nps;
	struct pidpm pms[MAX_PIDS];
	size_t npms;
	int wire;
	size_t hsz;
	uint64_t rng;
	FILE *log;			/* --log: one line per GET */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "lp-fakeps[%d]: ", getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	strncat(buf, "\n", sizeof(buf) - strlen(buf) - 1);
	if (write(2, buf, strlen(buf)) < 0)
		return;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* writes "PORT\n"; a FIFO is written in place (a reader waits on it), a file atomically */
static int write_port_file(const char *path, int port)
{
	char tmp[PATH_MAX], buf[32];
	struct stat st;
	int fd, n;

	n = snprintf(buf, sizeof(buf), "%d\n", port);
	if (stat(path, &st) == 0 && S_ISFIFO(st.st_mode)) {
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		n = write(fd, buf, (size_t)n) == n ? 0 : -EIO;
		close(fd);
		return n;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)n) != n) {
		close(fd);
		unlink(tmp);
		return -EIO;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return -errno;
	}
	return 0;
}

static void set_timeouts(int fd, int secs)
{
	struct timeval tv = { .tv_sec = secs };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct pagemap *fps_pagemap(struct fps *f, uint32_t pid)
{
	struct lp_err e;
	struct pagemap *pm;
	size_t i;

	for (i = 0; i < f->npms; i++)
		if (f->pms[i].pid == pid)
			return f->pms[i].pm;
	for (i = 0; i < f->nps; i++)
		if (f->ps[i].pid == pid)
			break;
	if (i == f->nps) {
		say("pid %u is not in pstree.img", pid);
		return NULL;
	}
	if (f->npms == MAX_PIDS) {
		say("more than %d pids asked for", MAX_PIDS);
		return NULL;
	}
	if (pagemap_open(f->d, pid, &pm, &e)) {
		say("%s", e.msg);
		return NULL;
	}
	f->pms[f->npms++] = (struct pidpm){ .pid = pid, .pm = pm };
	return pm;
}

/* a pid of the pstree other than PID (PID + 1000 if there is none) */
static uint32_t fps_other_pid(const struct fps *f, uint32_t pid)
{
	for (size_t i = 0; i < f->nps; i++)
		if (f->ps[i].pid != pid)
			return f->ps[i].pid;
	return pid + 1000;
}

/*
 * A lazy page of PM outside [vaddr, vaddr + n pages): the start of another
 * lazy entry, else a page after or before the request inside the same one.
 * False if the pagemap has no other lazy page at all.
 */
static bool fps_other_page(struct pagemap *pm, uint64_t vaddr, uint64_t n, uint64_t *out)
{
	const struct pm_entry *pe;
	size_t ne;

	pe = pagemap_entries(pm, &ne);
	for (size_t i = 0; i < ne; i++) {
		uint64_t s = pe[i].vaddr, end = s + pe[i].nr_pages * PAGE;

		if (!(pe[i].flags & PE_LAZY))
			continue;
		if (end <= vaddr || s >= vaddr + n * PAGE) {
			*out = s;
			return true;
		}
		if (vaddr + n * PAGE < end) {
			*out = vaddr + n * PAGE;
			return true;
		}
		if (vaddr > s) {
			*out = vaddr - PAGE;
			return true;
		}
	}
	return false;
}

static int send_hdr(struct fps *f, int fd, const struct ps_iov *iov, size_t len)
{
	uint8_t hb[PS_IOV_MAX];

	if (ps_iov_encode(f->wire, iov, hb))
		return -EOVERFLOW;
	return io_write_full(fd, hb, len ? len : f->hsz);
}

/*
 * The pages a correct server would send for a GET: M pages, the stored
 * run holding vaddr clamped to n. Returns a malloc'ed buffer or NULL.
 */
static void *fps_pages(struct fps *f, uint32_t pid, uint64_t vaddr, uint64_t n, uint64_t extra, uint64_t *m)
{
	struct pagemap *pm = fps_pagemap(f, pid);
	struct pm_run run;
	struct lp_err e;
	uint8_t *buf;

	if (!pm)
		return NULL;
	if (pagemap_lookup(pm, vaddr, n, &run, &e)) {
		say("pid %u: %s", pid, e.msg);
		return NULL;
	}
	if (run.kind == PM_REMOTE) {
		say("pid %u: 0x%" PRIx64 ": no local bytes (a lazy-only entry)", pid, vaddr);
		return NULL;
	}
	if (run.kind == PM_HOLE)
		say("pid %u: 0x%" PRIx64 ": asked for a hole (no pagemap entry); answering zeros", pid, vaddr);
	*m = run.nr_pages;
	buf = malloc((*m + extra) * PAGE);
	if (!buf)
		return NULL;
	if (pagemap_read(pm, vaddr, *m, buf, &e)) {
		say("pid %u: %s", pid, e.msg);
		free(buf);
		return NULL;
	}
	if (extra && pagemap_read(pm, vaddr + *m * PAGE, extra, buf + *m * PAGE, &e))
		memset(buf + *m * PAGE, 0x5a, extra * PAGE);
	return buf;
}

/* 0: go on; 1: the connection is closed on purpose; <0: failed */
static int fps_answer(struct fps *f, int fd, const struct ps_iov *rq, enum mode mode, uint64_t k)
{
	uint32_t pid = (uint32_t)rq->dst_id;
	struct ps_iov rp = { .cmd = PS_GET_REPLY_CMD, .pad = rq->pad, .vaddr = rq->vaddr, .dst_id = rq->dst_id };
	uint64_t m = 0, alt;
	uint8_t *buf = NULL;
	int r = -EIO;

	if (mode == M_GARBAGE) {
		buf = malloc(GARBAGE_BYTES);
		if (!buf)
			return -ENOMEM;
		for (size_t i = 0; i < GARBAGE_BYTES / 8; i++) {
			uint64_t x = rng_next(&f->rng);

			memcpy(buf + i * 8, &x, 8);
		}
		say("GET #%" PRIu64 ": garbage: sending %u random bytes", k, GARBAGE_BYTES);
		r = io_write_full(fd, buf, GARBAGE_BYTES);
		free(buf);
		return r;
	}
	if (mode == M_WRONG_ADDRESS) {
		struct pagemap *pm = fps_pagemap(f, pid);

		if (!pm)
			return -ENOENT;
		if (!fps_other_page(pm, rq->vaddr, rq->nr_pages, &alt))
			alt = rq->vaddr ^ (1ull << 32);
		buf = fps_pages(f, pid, alt, 1, 0, &m);
		if (!buf)
			return -EIO;
		rp.vaddr = alt;
		rp.nr_pages = m;
		say("GET #%" PRIu64 ": wrong-address: answering 0x%" PRIx64 " (%" PRIu64
		    " page, its real bytes) for 0x%" PRIx64,
		    k, alt, m, rq->vaddr);
		r = send_hdr(f, fd, &rp, 0);
		if (!r)
			r = io_write_full(fd, buf, m * PAGE);
		free(buf);
		return r;
	}

	buf = fps_pages(f, pid, rq->vaddr, rq->nr_pages, mode == M_MORE_PAGES ? 1 : 0, &m);
	if (!buf)
		return -EIO;
	rp.nr_pages = m;
	switch (mode) {
	case M_SHORT_HEADER:
		say("GET #%" PRIu64 ": short-header: %zu of %zu header bytes, then close", k, f->hsz / 2, f->hsz);
		r = send_hdr(f, fd, &rp, f->hsz / 2);
		r = r ? r : 1;
		break;
	case M_CLOSE_MID_REPLY:
		say("GET #%" PRIu64 ": close-mid-reply: header for %" PRIu64 " pages, %" PRIu64
		    " of %" PRIu64 " data bytes, then close",
		    k, m, m * PAGE / 2, m * PAGE);
		r = send_hdr(f, fd, &rp, 0);
		if (!r)
			r = io_write_full(fd, buf, m * PAGE / 2);
		r = r ? r : 1;
		break;
	case M_MORE_PAGES:
		rp.nr_pages = rq->nr_pages + 1;
		/* the real bytes of the pages asked for, then what follows them */
		if (m < rq->nr_pages) {
			uint8_t *nb = realloc(buf, (rq->nr_pages + 1) * PAGE);

			if (!nb) {
				r = -ENOMEM;
				break;
			}
			buf = nb;
			memset(buf + m * PAGE, 0x5a, (rq->nr_pages + 1 - m) * PAGE);
		}
		say("GET #%" PRIu64 ": more-pages: nr_pages %" PRIu64 " for a GET of %" PRIu64, k,
		    rp.nr_pages, rq->nr_pages);
		r = send_hdr(f, fd, &rp, 0);
		if (!r)
			r = io_write_full(fd, buf, rp.nr_pages * PAGE);
		break;
	case M_ZERO_PAGES:
		rp.nr_pages = 0;
		say("GET #%" PRIu64 ": zero-pages: nr_pages 0 for 0x%" PRIx64, k, rq->vaddr);
		r = send_hdr(f, fd, &rp, 0);
		break;
	case M_WRONG_PID:
		rp.dst_id = fps_other_pid(f, pid);
		say("GET #%" PRIu64 ": wrong-pid: dst_id %" PRIu64 " for a GET of pid %u (right bytes)", k,
		    rp.dst_id, pid);
		r = send_hdr(f, fd, &rp, 0);
		if (!r)
			r = io_write_full(fd, buf, m * PAGE);
		break;
	default:
		r = send_hdr(f, fd, &rp, 0);
		if (!r)
			r = io_write_full(fd, buf, m * PAGE);
		break;
	}
	free(buf);
	return r;
}

static int listen_on(const char *address, int *port)
{
	struct sockaddr_storage ss;
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	socklen_t l;
	int fd, one = 1;

	if (getaddrinfo(address, "0", &hints, &res))
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 1)) {
		int err = -errno;

		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return err;
	}
	freeaddrinfo(res);
	l = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &l);
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* what one connection did */
struct conn_st {
	uint64_t gets;
	bool misbehaved;		/* the MODE reply went out on it */
	bool hello;			/* it began with lazy-pages' hello */
};

/*
 * Ends a connection with a FIN after exactly what was sent: close() with
 * unread requests in the receive queue would send a reset instead, and the
 * client could lose the bytes it has not read yet.
 */
static void close_gently(int fd)
{
	struct timeval tv = { .tv_sec = 5 };
	char buf[4096];

	shutdown(fd, SHUT_WR);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

/*
 * Exit codes: 0 misbehaved as asked (or, for "good", served until the
 * client left); 3 the client left before the misbehaviour; 4 timeout;
 * 5 the client broke the protocol; 1 anything else.
 */
static int fps_serve(struct fps *f, int cfd, enum mode mode, uint64_t good, struct conn_st *st)
{
	uint8_t hb[PS_IOV_MAX];
	struct ps_iov rq;
	uint64_t k = 0;
	bool done = false;
	int r;

	memset(st, 0, sizeof(*st));

	for (;;) {
		r = io_read_full(cfd, hb, f->hsz);
		if (r == -EPIPE) {
			if (done || mode == M_GOOD) {
				say("client closed after %" PRIu64 " GET(s)", k);
				return 0;
			}
			say("client closed after %" PRIu64 " GET(s), before the %s reply (--good %" PRIu64 ")", k,
			    mode_names[mode], good);
			return 3;
		}
		if (r == -EAGAIN || r == -EWOULDBLOCK) {
			say("timed out waiting for the client after %" PRIu64 " GET(s)", k);
			return 4;
		}
		if (r < 0) {
			say("read from the client: %s (after %" PRIu64 " GET(s))", strerror(-r), k);
			return done ? 0 : 1;
		}
		ps_iov_decode(f->wire, hb, &rq);
		if (rq.cmd == PS_IOV_CLOSE || rq.cmd == PS_IOV_FORCE_CLOSE) {
			int32_t zero = 0;

			say("close after %" PRIu64 " GET(s)%s", k, done || mode == M_GOOD ? "" : ", before misbehaving");
			io_write_full(cfd, &zero, sizeof(zero));
			/* then wait for the client to go, as CRIU's server does */
			while (read(cfd, hb, sizeof(hb)) > 0)
				;
			return done || mode == M_GOOD ? 0 : 3;
		}
		if ((rq.cmd & PS_CMD_MASK) == PS_LP_HELLO) {
			/* CRIU's page servers take one connection and never answer this */
			say("lazy-pages hello (a second connection): not answered, closing");
			st->hello = true;
			return 5;
		}
		if (rq.cmd != PS_IOV_GET) {
			say("unexpected command 0x%x from the client (GET is 7)", rq.cmd);
			return 5;
		}
		k++;
		st->gets = k;
		if (f->log) {
			int queued = 0;

			/* requests the client sent before this one was answered: its pipeline */
			ioctl(cfd, FIONREAD, &queued);
			fprintf(f->log, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %zu\n", rq.dst_id, rq.vaddr, rq.nr_pages,
				(size_t)queued / f->hsz);
		}
		if (!rq.nr_pages || rq.nr_pages > MAX_GET_PAGES || rq.vaddr % PAGE) {
			say("GET #%" PRIu64 ": pid %" PRIu64 " vaddr 0x%" PRIx64 " nr_pages %" PRIu64
			    ": not a request a client should send",
			    k, rq.dst_id, rq.vaddr, rq.nr_pages);
			return 5;
		}
		if (k <= good || done || mode == M_GOOD) {
			r = fps_answer(f, cfd, &rq, M_GOOD, k);
		} else {
			say("GET #%" PRIu64 ": pid %" PRIu64 " vaddr 0x%" PRIx64 " nr_pages %" PRIu64, k, rq.dst_id,
			    rq.vaddr, rq.nr_pages);
			r = fps_answer(f, cfd, &rq, mode, k);
			done = true;
			st->misbehaved = true;
			if (r == 1) {
				say("closed the connection on purpose");
				return 0;
			}
			if (mode == M_GARBAGE && r == 0) {
				/* out of step now: take whatever comes until the client leaves */
				while ((r = (int)read(cfd, hb, sizeof(hb))) > 0)
					;
				say("client left after the garbage");
				return 0;
			}
		}
		if (r == -EPIPE || r == -ECONNRESET) {
			say("client went away while we answered GET #%" PRIu64, k);
			return done ? 0 : 3;
		}
		if (r < 0) {
			say("GET #%" PRIu64 ": cannot answer: %s", k, strerror(-r));
			return done ? 0 : 1;
		}
	}
}

/* ---- --probe: a checking client ---- */

struct lazy_page {
	uint32_t pid;
	uint64_t vaddr;
	uint64_t nr;			/* pages from vaddr to the end of its entry */
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int connect_to(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	size_t hl;
	int fd;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - hostport);
	if (hl >= 2 && hostport[0] == '[') {
		hostport++;
		hl -= 2;
	}
	if (!hl || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, hl);
	host[hl] = 0;
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -EINVAL;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen)) {
		int err = -errno;

		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return err;
	}
	freeaddrinfo(res);
	return fd;
}

static int probe(struct fps *f, const char *target, unsigned int count, unsigned int pages)
{
	struct lazy_page *lp = NULL;
	size_t nlp = 0, cap = 0;
	uint64_t *rtt = NULL, bytes = 0;
	uint8_t *got = NULL, *want = NULL, hb[PS_IOV_MAX];
	unsigned int bad = 0, i;
	int fd = -1, ret = 1, r;

	for (size_t p = 0; p < f->nps; p++) {
		uint32_t state = TASK_ALIVE;
		struct lp_err e;
		struct pagemap *pm;
		const struct pm_entry *pe;
		size_t ne;

		if (imgdir_task_state(f->d, f->ps[p].pid, &state, &e) == 0 && state == TASK_DEAD)
			continue;
		pm = fps_pagemap(f, f->ps[p].pid);
		if (!pm)
			continue;
		pe = pagemap_entries(pm, &ne);
		for (size_t j = 0; j < ne; j++) {
			if (!(pe[j].flags & PE_LAZY))
				continue;
			if (nlp == cap) {
				cap = cap ? cap * 2 : 256;
				struct lazy_page *n = realloc(lp, cap * sizeof(*lp));
				if (!n)
					goto out;
				lp = n;
			}
			lp[nlp++] = (struct lazy_page){ f->ps[p].pid, pe[j].vaddr, pe[j].nr_pages };
		}
	}
	if (!nlp) {
		say("probe: the images have no lazy pages");
		goto out;
	}
	rtt = calloc(count, sizeof(*rtt));
	got = malloc((size_t)pages * PAGE);
	want = malloc((size_t)pages * PAGE);
	if (!rtt || !got || !want)
		goto out;
	fd = connect_to(target);
	if (fd < 0) {
		say("probe: connect to %s: %s", target, strerror(-fd));
		goto out;
	}
	set_nodelay(fd);
	set_timeouts(fd, 30);
	for (i = 0; i < count; i++) {
		const struct lazy_page *l = &lp[rng_next(&f->rng) % nlp];
		uint64_t off = rng_next(&f->rng) % l->nr, n = l->nr - off < pages ? l->nr - off : pages;
		struct ps_iov rq = { .cmd = PS_IOV_GET, .nr_pages = n, .vaddr = l->vaddr + off * PAGE,
				     .dst_id = l->pid, .pad = (uint32_t)rng_next(&f->rng) };
		struct ps_iov rp;
		struct lp_err e;
		uint64_t t0, m;

		if (f->wire == PS_WIRE_3)
			rq.pad = 0;
		ps_iov_encode(f->wire, &rq, hb);
		t0 = now_ns();
		r = io_write_full(fd, hb, f->hsz);
		if (!r)
			r = io_read_full(fd, hb, f->hsz);
		if (r) {
			say("probe: GET %u (pid %u 0x%" PRIx64 " x%" PRIu64 ") on %s: %s", i, l->pid, rq.vaddr, n,
			    target, r == -EPIPE ? "connection closed" : strerror(-r));
			goto out;
		}
		ps_iov_decode(f->wire, hb, &rp);
		m = rp.nr_pages;
		if (rp.cmd != PS_GET_REPLY_CMD || rp.vaddr != rq.vaddr || rp.dst_id != rq.dst_id ||
		    rp.pad != rq.pad || m < 1 || m > n) {
			say("probe: GET %u (pid %u 0x%" PRIx64 " x%" PRIu64 " pad 0x%x): bad reply header: cmd 0x%x"
			    " nr_pages %" PRIu64 " vaddr 0x%" PRIx64 " dst_id %" PRIu64 " pad 0x%x",
			    i, l->pid, rq.vaddr, n, rq.pad, rp.cmd, m, rp.vaddr, rp.dst_id, rp.pad);
			goto out;
		}
		r = io_read_full(fd, got, m * PAGE);
		rtt[i] = now_ns() - t0;
		if (r) {
			say("probe: GET %u: data: %s", i, r == -EPIPE ? "connection closed" : strerror(-r));
			goto out;
		}
		bytes += m * PAGE;
		if (pagemap_read(fps_pagemap(f, l->pid), rq.vaddr, m, want, &e)) {
			say("probe: %s", e.msg);
			goto out;
		}
		if (memcmp(got, want, m * PAGE)) {
			if (bad++ < 8)
				say("probe: GET %u: pid %u 0x%" PRIx64 " x%" PRIu64 ": WRONG BYTES", i, l->pid,
				    rq.vaddr, m);
		}
	}
	{
		struct ps_iov cl = { .cmd = PS_IOV_CLOSE };
		int32_t ans = -1;

		ps_iov_encode(f->wire, &cl, hb);
		r = io_write_full(fd, hb, f->hsz);
		if (!r)
			r = io_read_full(fd, &ans, sizeof(ans));
		if (r || ans != 0) {
			say("probe: close: %s", r ? strerror(-r) : "answer is not 0");
			goto out;
		}
	}
	qsort(rtt, count, sizeof(*rtt), cmp_u64);
	printf("probe: %u GETs of up to %u page(s) from %s, %" PRIu64 " bytes, %u wrong: rtt_p50_us=%.1f "
	       "rtt_p99_us=%.1f rtt_max_us=%.1f\n",
	       count, pages, target, bytes, bad, rtt[count / 2] / 1e3, rtt[(count * 99) / 100] / 1e3,
	       rtt[count - 1] / 1e3);
	ret = bad ? 1 : 0;
out:
	if (fd >= 0)
		close(fd);
	free(lp);
	free(rtt);
	free(got);
	free(want);
	return ret;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-fakeps --images DIR --mode MODE [--port-file F] [--address A] [--ps-wire 3|4]\n"
		"                 [--good N] [--reconnect] [--seed S] [--timeout SEC] [--log F]\n"
		"       lp-fakeps --images DIR --probe A:P [--ps-wire 3|4] [--count N] [--pages K] [--seed S]\n"
		"modes: short-header wrong-address more-pages close-mid-reply zero-pages wrong-pid garbage good\n"
		"The server listens on A (default 127.0.0.1) port 0, writes the port to F (a FIFO\n"
		"there is written in place), accepts one client, answers --good GETs correctly\n"
		"(default 0), then the next one as MODE. --reconnect: keep listening, and serve\n"
		"the connection after the bad one correctly (connections that start with the\n"
		"lazy-pages hello are closed unanswered, as CRIU's servers do); the exit code is\n"
		"then that connection's. Exit 0: misbehaved as asked (or served the client to\n"
		"its end); 3: the client left first; 4: timeout; 5: the client broke the protocol.\n"
		"--log F: a line per GET: pid, address, pages, and the requests queued behind it.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "images", required_argument, NULL, 'D' },
		{ "images-dir", required_argument, NULL, 'D' },
		{ "mode", required_argument, NULL, 'm' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "address", required_argument, NULL, 'a' },
		{ "ps-wire", required_argument, NULL, 'w' },
		{ "good", required_argument, NULL, 'g' },
		{ "seed", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "reconnect", no_argument, NULL, 'R' },
		{ "probe", required_argument, NULL, 'P' },
		{ "count", required_argument, NULL, 'n' },
		{ "pages", required_argument, NULL, 'k' },
		{ "log", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct fps f = { .wire = PS_WIRE_4, .rng = 1 };
	const char *dir = NULL, *port_file = NULL, *address = "127.0.0.1", *target = NULL;
	int mode = -1, c, timeout = 60, lfd, cfd, port = 0, ret = 1, reconnect = 0;
	unsigned long long good = 0;
	unsigned int count = 1000, pages = 1;
	struct lp_err e;

	while ((c = getopt_long(argc, argv, "D:h", lo, NULL)) != -1) {
		switch (c) {
		case 'D': dir = optarg; break;
		case 'm':
			for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
				if (!strcmp(optarg, mode_names[i]))
					mode = (int)i;
			if (mode < 0)
				return usage(), 2;
			break;
		case 'p': port_file = optarg; break;
		case 'a': address = optarg; break;
		case 'w':
			f.wire = atoi(optarg);
			if (f.wire != PS_WIRE_3 && f.wire != PS_WIRE_4)
				return usage(), 2;
			break;
		case 'g': good = strtoull(optarg, NULL, 0); break;
		case 'S': f.rng = strtoull(optarg, NULL, 0); break;
		case 'T': timeout = atoi(optarg); break;
		case 'P': target = optarg; break;
		case 'R': reconnect = 1; break;
		case 'n': count = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'k': pages = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'L':
			f.log = fopen(optarg, "we");
			if (!f.log) {
				say("%s: %s", optarg, strerror(errno));
				return 1;
			}
			setvbuf(f.log, NULL, _IOLBF, 0);
			break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (!dir || optind != argc || (mode < 0) == !target || timeout < 1 || !count || !pages ||
	    pages > MAX_GET_PAGES)
		return usage(), 2;
	f.hsz = ps_iov_size(f.wire);
	signal(SIGPIPE, SIG_IGN);
	if (imgdir_open(dir, &f.d, &e) || imgdir_read_pstree(f.d, &f.ps, &f.nps, &e)) {
		say("%s", e.msg);
		goto out;
	}
	if (target) {
		ret = probe(&f, target, count, pages);
		goto out;
	}

	lfd = listen_on(address, &port);
	if (lfd < 0) {
		say("listen on %s: %s", address, strerror(-lfd));
		goto out;
	}
	say("mode %s after %llu good GET(s), wire %d (%zu-byte header), %s port %d, images %s",
	    mode_names[mode], good, f.wire, f.hsz, address, port, dir);
	if (port_file && (ret = write_port_file(port_file, port)) < 0) {
		say("%s: cannot write the port file: %s", port_file, strerror(-ret));
		close(lfd);
		ret = 1;
		goto out;
	}
	set_timeouts(lfd, timeout);
	for (bool misbehaved = false;;) {
		struct conn_st st;

		cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0) {
			say("accept: %s", errno == EAGAIN ? "no client came" : strerror(errno));
			ret = errno == EAGAIN ? 4 : 1;
			break;
		}
		/* one client, as CRIU's page servers: a second connect is refused */
		if (!reconnect) {
			close(lfd);
			lfd = -1;
		}
		set_nodelay(cfd);
		set_timeouts(cfd, timeout);
		ret = fps_serve(&f, cfd, misbehaved ? M_GOOD : (enum mode)mode, good, &st);
		close_gently(cfd);
		if (!reconnect)
			break;
		if (st.misbehaved) {
			misbehaved = true;
			say("misbehaved; serving the next connection correctly");
			continue;
		}
		if (st.hello || !st.gets)
			continue;	/* the client's extra connection, or one it gave up */
		break;			/* the connection after the misbehaviour ended: ret says how */
	}
	if (lfd >= 0)
		close(lfd);
out:
	for (size_t i = 0; i < f.npms; i++)
		pagemap_close(f.pms[i].pm);
	if (f.ps)
		pstree_free(f.ps, f.nps);
	imgdir_close(f.d);
	if (f.log)
		fclose(f.log);
	return ret;
}
