/* SPDX-License-Identifier: MIT */
/*
 * lp-delay: a TCP proxy that holds every chunk it forwards for a fixed time
 * in each direction (tc netem's delay, without netem). Throughput is not
 * limited: each direction reads as fast as the peer sends into a
 * timestamped queue and releases each chunk when its time has come; a full
 * queue stops reading (back-pressure through TCP). --cut-after-bytes and
 * --cut-random end a connection after so many bytes server->client, for
 * fault injection. One thread, one epoll loop, a timerfd for release times,
 * SIGTERM/SIGINT through a signalfd. Connections take turns: each pass
 * reads at most one chunk and sends at most FLUSH_QUANTUM per direction,
 * so one busy connection cannot hold back another's bytes; how late a
 * chunk went out is logged when its connection ends.
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
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define READ_MAX (256u << 10)		/* bytes per read(), one chunk at most */
/*
 * Bytes one direction may send per pass of the loop. Without a bound, a
 * bulk connection whose reader keeps up is flushed for tens of ms while
 * a small reply on another connection, due long since, waits: the proxy
 * itself, not the link it emulates, would delay it (measured: 1 ms holds
 * became 10-16 ms under a 512 MiB transfer).
 */
#define FLUSH_QUANTUM (256u << 10)
#define QUEUE_MAX_DEFAULT (64ull << 20)	/* bytes queued per direction */
#define MAX_CUTS 64
#define MAX_CONNS 1024
#define CUT_RANDOM_MAX (16ull << 20)	/* --cut-random picks in [1, this] */

struct chunk {
	struct chunk *next;
	uint64_t due;			/* CLOCK_MONOTONIC ns */
	size_t len, off;
	bool eof;			/* a FIN, released in order like data */
	char data[];
};

struct conn;

/* one direction: bytes read from `from`, written to `to` after the delay */
struct dir {
	struct conn *c;
	int *from, *to;
	const char *name;		/* "client->server" */
	struct chunk *head, *tail;
	uint64_t queued;		/* bytes in the queue */
	uint64_t in, out;		/* bytes read, bytes written */
	uint64_t late_max, late_n;	/* ns a chunk went out after its time; chunks > 1 ms late */
	uint64_t cut_at;		/* 0: never */
	bool rd_eof, wr_shut, wr_blocked;
};

/* epoll data: which fd of which connection */
struct endpoint {
	struct conn *c;
	int side;			/* 0 client, 1 server */
	uint32_t events;		/* what epoll watches now */
	bool registered;
	bool hup;			/* HUP/ERR seen: level-triggered, so unwatch while idle */
};

struct conn {
	struct conn *next;
	unsigned int id;
	int cfd, sfd;
	bool connected, dead;
	struct dir c2s, s2c;
	struct endpoint ep[2];
};

struct proxy {
	int ep, lfd, tfd, sigfd;
	struct sockaddr_storage target;
	socklen_t target_len;
	uint64_t delay_ns, queue_max;
	uint64_t cuts[MAX_CUTS];
	unsigned int ncuts, nconns, live;
	bool cut_random, cut_close;
	uint64_t rng;
	struct conn *conns;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "lp-delay[%d]: ", getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	strncat(buf, "\n", sizeof(buf) - strlen(buf) - 1);
	if (write(2, buf, strlen(buf)) < 0)
		return;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* "HOST:PORT", "[V6]:PORT"; numeric addresses only (no DNS in tests) */
static int parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *port, *h = s;
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	size_t hl;

	colon = strrchr(s, ':');
	if (!colon)
		return -EINVAL;
	port = colon + 1;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h = s + 1;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host) || !*port)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	if (getaddrinfo(host, port, &hints, &res))
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
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
		if (write(fd, buf, (size_t)n) != n) {
			close(fd);
			return -EIO;
		}
		close(fd);
		return 0;
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

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* close so that the peer sees a reset, not an orderly FIN */
static void close_rst(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static void dir_free(struct dir *d)
{
	struct chunk *ch = d->head, *n;

	for (; ch; ch = n) {
		n = ch->next;
		free(ch);
	}
	d->head = d->tail = NULL;
	d->queued = 0;
}

/* ends the connection; RST both sides if RST, else plain close */
static void conn_kill(struct proxy *p, struct conn *c, bool rst, const char *why)
{
	if (c->dead)
		return;
	say("connection %u: %s; client->server %" PRIu64 "/%" PRIu64 " bytes, server->client %" PRIu64
	    "/%" PRIu64 " bytes (read/written); released up to %" PRIu64 "/%" PRIu64
	    " us after their time, %" PRIu64 "/%" PRIu64 " chunks over 1 ms late",
	    c->id, why, c->c2s.in, c->c2s.out, c->s2c.in, c->s2c.out, c->c2s.late_max / 1000,
	    c->s2c.late_max / 1000, c->c2s.late_n, c->s2c.late_n);
	if (c->ep[0].registered)
		epoll_ctl(p->ep, EPOLL_CTL_DEL, c->cfd, NULL);
	if (c->ep[1].registered)
		epoll_ctl(p->ep, EPOLL_CTL_DEL, c->sfd, NULL);
	if (rst) {
		close_rst(c->cfd);
		close_rst(c->sfd);
	} else {
		close(c->cfd);
		if (c->sfd >= 0)
			close(c->sfd);
	}
	c->cfd = c->sfd = -1;
	dir_free(&c->c2s);
	dir_free(&c->s2c);
	c->dead = true;
	p->live--;
}

static void dir_init(struct dir *d, struct conn *c, int *from, int *to, const char *name)
{
	memset(d, 0, sizeof(*d));
	d->c = c;
	d->from = from;
	d->to = to;
	d->name = name;
}

static void conn_accept(struct proxy *p)
{
	struct conn *c;
	int cfd, sfd, r;

	for (;;) {
		cfd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				say("accept: %s", strerror(errno));
			return;
		}
		if (p->live >= MAX_CONNS) {
			say("%u connections open already, refusing one", p->live);
			close_rst(cfd);
			continue;
		}
		sfd = socket(p->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (sfd < 0) {
			say("socket: %s", strerror(errno));
			close_rst(cfd);
			continue;
		}
		set_nodelay(cfd);
		set_nodelay(sfd);
		r = connect(sfd, (struct sockaddr *)&p->target, p->target_len);
		if (r < 0 && errno != EINPROGRESS) {
			say("connect to the target: %s", strerror(errno));
			close(sfd);
			close_rst(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(sfd);
			close_rst(cfd);
			continue;
		}
		c->id = ++p->nconns;
		c->cfd = cfd;
		c->sfd = sfd;
		c->connected = r == 0;
		dir_init(&c->c2s, c, &c->cfd, &c->sfd, "client->server");
		dir_init(&c->s2c, c, &c->sfd, &c->cfd, "server->client");
		if (c->id <= p->ncuts)
			c->s2c.cut_at = p->cuts[c->id - 1];
		else if (p->cut_random)
			c->s2c.cut_at = 1 + rng_next(&p->rng) % CUT_RANDOM_MAX;
		c->ep[0] = (struct endpoint){ .c = c, .side = 0 };
		c->ep[1] = (struct endpoint){ .c = c, .side = 1 };
		c->next = p->conns;
		p->conns = c;
		p->live++;
		/* the loop registers both fds with the interest they need */
		if (c->s2c.cut_at)
			say("connection %u: accepted; will cut after %" PRIu64 " bytes server->client", c->id,
			    c->s2c.cut_at);
		else
			say("connection %u: accepted", c->id);
	}
}

/* one read from d->from into a new chunk (the connection is killed on an error) */
static void dir_read(struct proxy *p, struct dir *d)
{
	uint64_t room = p->queue_max - d->queued;
	size_t want = room < READ_MAX ? (size_t)room : READ_MAX;
	struct chunk *ch;
	ssize_t r;

	if (!want)
		return;
	ch = malloc(sizeof(*ch) + want);
	if (!ch) {
		conn_kill(p, d->c, true, "out of memory");
		return;
	}
	do
		r = read(*d->from, ch->data, want);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		free(ch);
		if (errno == EAGAIN)
			return;
		char why[128];
		snprintf(why, sizeof(why), "%s read: %s", d->name, strerror(errno));
		conn_kill(p, d->c, true, why);
		return;
	}
	if (r == 0) {
		d->rd_eof = true;
	} else if ((size_t)r < want) {
		struct chunk *s = realloc(ch, sizeof(*ch) + (size_t)r);

		if (s)
			ch = s;
	}
	ch->next = NULL;
	ch->eof = r == 0;
	ch->len = (size_t)r;
	ch->off = 0;
	ch->due = now_ns() + p->delay_ns;
	if (d->tail)
		d->tail->next = ch;
	else
		d->head = ch;
	d->tail = ch;
	d->queued += (uint64_t)r;
	d->in += (uint64_t)r;
}

/*
 * Writes what is due, at most FLUSH_QUANTUM bytes. Returns false if the
 * connection died. *next gets the release time of the first chunk not
 * yet due (unchanged if none), or `now` if due bytes are left for the
 * next pass.
 */
static bool dir_flush(struct proxy *p, struct dir *d, uint64_t now, uint64_t *next)
{
	uint64_t budget = FLUSH_QUANTUM;
	struct chunk *ch;

	if (!d->c->connected || d->wr_blocked)
		return true;
	while ((ch = d->head)) {
		if (ch->due > now) {
			if (ch->due < *next)
				*next = ch->due;
			return true;
		}
		if (!budget) {
			*next = now;	/* due, and this pass has had its share */
			return true;
		}
		if (ch->eof) {
			shutdown(*d->to, SHUT_WR);
			d->wr_shut = true;
		} else {
			size_t n = ch->len - ch->off;
			ssize_t r;

			if (d->cut_at && d->out + n > d->cut_at)
				n = (size_t)(d->cut_at - d->out);
			if (n > budget)
				n = (size_t)budget;
			if (n && !ch->off) {
				uint64_t late = now - ch->due;

				d->late_max = late > d->late_max ? late : d->late_max;
				d->late_n += late > 1000000;
			}
			if (n) {
				do
					r = send(*d->to, ch->data + ch->off, n, MSG_NOSIGNAL);
				while (r < 0 && errno == EINTR);
				if (r < 0) {
					if (errno == EAGAIN) {
						d->wr_blocked = true;
						return true;
					}
					char why[128];
					snprintf(why, sizeof(why), "%s write: %s", d->name, strerror(errno));
					conn_kill(p, d->c, true, why);
					return false;
				}
				ch->off += (size_t)r;
				budget -= (uint64_t)r;
				d->out += (uint64_t)r;
				d->queued -= (uint64_t)r;
			}
			if (d->cut_at && d->out >= d->cut_at) {
				char why[96];
				snprintf(why, sizeof(why), "cut after %" PRIu64 " bytes server->client (%s)",
					 d->out, p->cut_close ? "close" : "reset");
				conn_kill(p, d->c, !p->cut_close, why);
				return false;
			}
			if (ch->off < ch->len) {
				if (budget)
					d->wr_blocked = true;	/* a short send: the socket is full */
				else
					*next = now;
				return true;
			}
		}
		d->head = ch->next;
		if (!d->head)
			d->tail = NULL;
		free(ch);
	}
	return true;
}

/*
 * HUP and ERR are reported whatever the interest; an fd that has seen
 * them is taken out of epoll while there is nothing to do on it (a full
 * queue), or the loop would spin.
 */
static void ep_set(struct proxy *p, struct endpoint *e, int fd, uint32_t want)
{
	struct epoll_event ev = { .events = want, .data.ptr = e };

	if (e->hup && !want) {
		if (e->registered && epoll_ctl(p->ep, EPOLL_CTL_DEL, fd, NULL) == 0)
			e->registered = false;
		return;
	}
	if (!e->registered) {
		if (epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
			e->registered = true;
			e->events = want;
		}
		return;
	}
	if (e->events == want)
		return;
	if (epoll_ctl(p->ep, EPOLL_CTL_MOD, fd, &ev) == 0)
		e->events = want;
}

static bool dir_wants_read(struct proxy *p, const struct dir *d)
{
	return d->c->connected && !d->rd_eof && d->queued < p->queue_max;
}

static void conn_update(struct proxy *p, struct conn *c)
{
	uint32_t ce = 0, se = 0;

	if (c->dead)
		return;
	if (c->c2s.wr_shut && c->s2c.wr_shut) {
		conn_kill(p, c, false, "closed by both sides");
		return;
	}
	if (!c->connected) {
		se = EPOLLOUT;
	} else {
		if (dir_wants_read(p, &c->c2s))
			ce |= EPOLLIN;
		if (dir_wants_read(p, &c->s2c))
			se |= EPOLLIN;
		if (c->c2s.wr_blocked)
			se |= EPOLLOUT;
		if (c->s2c.wr_blocked)
			ce |= EPOLLOUT;
	}
	ep_set(p, &c->ep[0], c->cfd, ce);
	ep_set(p, &c->ep[1], c->sfd, se);
}

static void endpoint_event(struct proxy *p, struct endpoint *e, uint32_t ev)
{
	struct conn *c = e->c;
	struct dir *rd = e->side ? &c->s2c : &c->c2s;	/* read from this fd */
	struct dir *wr = e->side ? &c->c2s : &c->s2c;	/* written to this fd */

	if (c->dead)
		return;
	if (ev & (EPOLLHUP | EPOLLERR))
		e->hup = true;
	if (e->side == 1 && !c->connected) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->sfd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			char why[128];
			snprintf(why, sizeof(why), "connect to the target: %s", strerror(err));
			conn_kill(p, c, true, why);
			return;
		}
		c->connected = true;
		return;
	}
	if (ev & EPOLLOUT)
		wr->wr_blocked = false;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && dir_wants_read(p, rd)) {
		/* one chunk per pass (epoll is level-triggered): every connection gets its turn */
		dir_read(p, rd);
	} else if ((ev & EPOLLERR) && !(ev & EPOLLOUT)) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(e->side ? c->sfd : c->cfd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			char why[128];
			snprintf(why, sizeof(why), "%s side: %s", e->side ? "server" : "client", strerror(err));
			conn_kill(p, c, true, why);
		}
	}
}

static void arm_timer(struct proxy *p, uint64_t at)
{
	struct itimerspec its = { 0 };

	if (at != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(at / 1000000000ull);
		its.it_value.tv_nsec = (long)(at % 1000000000ull);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void reap(struct proxy *p)
{
	struct conn **pp = &p->conns, *c;

	while ((c = *pp)) {
		if (c->dead) {
			*pp = c->next;
			free(c);
		} else {
			pp = &c->next;
		}
	}
}

static int run(struct proxy *p)
{
	struct epoll_event evs[64];
	uint64_t armed = 0;

	for (;;) {
		uint64_t now = now_ns(), next = UINT64_MAX;
		struct conn *c;
		int n;

		for (c = p->conns; c; c = c->next) {
			if (!c->dead && dir_flush(p, &c->c2s, now, &next))
				dir_flush(p, &c->s2c, now, &next);
			conn_update(p, c);
		}
		reap(p);
		if (next <= now) {
			/* due bytes left over: look at the others, then come back without sleeping */
			n = epoll_wait(p->ep, evs, 64, 0);
		} else {
			if (next != armed) {
				arm_timer(p, next);
				armed = next;
			}
			n = epoll_wait(p->ep, evs, 64, -1);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			say("epoll_wait: %s", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			void *ptr = evs[i].data.ptr;

			if (ptr == &p->lfd) {
				conn_accept(p);
			} else if (ptr == &p->tfd) {
				uint64_t x;

				if (read(p->tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
					say("timerfd: %s", strerror(errno));
				armed = 0;	/* re-arm on the next pass */
			} else if (ptr == &p->sigfd) {
				struct signalfd_siginfo si;

				if (read(p->sigfd, &si, sizeof(si)) == sizeof(si)) {
					say("signal %u: stopping after %u connection(s)", si.ssi_signo, p->nconns);
					return 0;
				}
			} else {
				endpoint_event(p, ptr, evs[i].events);
			}
		}
	}
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end || *s == '-' ? -EINVAL : 0;
}

static int parse_cuts(struct proxy *p, const char *s)
{
	char buf[1024], *tok, *save = NULL;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (p->ncuts >= MAX_CUTS || parse_u64(tok, &p->cuts[p->ncuts]))
			return -EINVAL;
		p->ncuts++;
	}
	return p->ncuts ? 0 : -EINVAL;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-delay --listen A:P --connect A:P --delay-ms D [--port-file F]\n"
		"                [--queue-mib M] [--cut-after-bytes N[,N...]] [--cut-random SEED] [--cut-close]\n"
		"Forwards each accepted connection to --connect, holding every chunk D ms\n"
		"(fractions allowed) in each direction, so the round trip grows by 2*D.\n"
		"Listen port 0 binds an ephemeral port, written to --port-file (a FIFO there\n"
		"is written in place). --cut-after-bytes: the k-th connection is reset after\n"
		"the k-th count of bytes server->client (0: never; connections past the list\n"
		"are not cut); --cut-random: each other connection after a random count in\n"
		"[1, 16 MiB]; --cut-close: a plain close instead of a reset. Stops on SIGTERM.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "delay-ms", required_argument, NULL, 'd' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "queue-mib", required_argument, NULL, 'q' },
		{ "cut-after-bytes", required_argument, NULL, 'x' },
		{ "cut-random", required_argument, NULL, 'r' },
		{ "cut-close", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct proxy p = { .ep = -1, .lfd = -1, .tfd = -1, .sigfd = -1, .queue_max = QUEUE_MAX_DEFAULT };
	const char *listen_s = NULL, *connect_s = NULL, *port_file = NULL;
	struct sockaddr_storage la;
	socklen_t ll;
	double delay = -1;
	uint64_t v;
	sigset_t mask;
	char *end;
	int c, one = 1, ret = 1;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'l': listen_s = optarg; break;
		case 'c': connect_s = optarg; break;
		case 'd':
			delay = strtod(optarg, &end);
			if (end == optarg || *end || !(delay >= 0 && delay <= 60000))
				return usage(), 2;
			break;
		case 'p': port_file = optarg; break;
		case 'q':
			if (parse_u64(optarg, &v) || v < 1 || v > 4096)
				return usage(), 2;
			p.queue_max = v << 20;
			break;
		case 'x':
			if (parse_cuts(&p, optarg))
				return usage(), 2;
			break;
		case 'r':
			if (parse_u64(optarg, &p.rng))
				return usage(), 2;
			p.cut_random = true;
			break;
		case 'C': p.cut_close = true; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (!listen_s || !connect_s || delay < 0 || optind != argc)
		return usage(), 2;
	p.delay_ns = (uint64_t)(delay * 1e6 + 0.5);
	if (parse_hostport(listen_s, &la, &ll)) {
		say("--listen %s: expected a numeric ADDRESS:PORT", listen_s);
		return 2;
	}
	if (parse_hostport(connect_s, &p.target, &p.target_len)) {
		say("--connect %s: expected a numeric ADDRESS:PORT", connect_s);
		return 2;
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	p.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	p.ep = epoll_create1(EPOLL_CLOEXEC);
	p.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	p.lfd = socket(la.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p.sigfd < 0 || p.ep < 0 || p.tfd < 0 || p.lfd < 0) {
		say("setup: %s", strerror(errno));
		goto out;
	}
	setsockopt(p.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(p.lfd, (struct sockaddr *)&la, ll) < 0 || listen(p.lfd, 64) < 0) {
		say("--listen %s: %s", listen_s, strerror(errno));
		goto out;
	}
	ll = sizeof(la);
	getsockname(p.lfd, (struct sockaddr *)&la, &ll);
	int port = ntohs(la.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&la)->sin6_port
						 : ((struct sockaddr_in *)&la)->sin_port);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &p.lfd };
	epoll_ctl(p.ep, EPOLL_CTL_ADD, p.lfd, &ev);
	ev.data.ptr = &p.tfd;
	epoll_ctl(p.ep, EPOLL_CTL_ADD, p.tfd, &ev);
	ev.data.ptr = &p.sigfd;
	epoll_ctl(p.ep, EPOLL_CTL_ADD, p.sigfd, &ev);
	say("listening on port %d, forwarding to %s, delay %.3f ms each way", port, connect_s, delay);
	if (port_file) {
		int r = write_port_file(port_file, port);

		if (r < 0) {
			say("%s: cannot write the port file: %s", port_file, strerror(-r));
			goto out;
		}
	}
	ret = run(&p);
out:
	for (struct conn *cn = p.conns; cn; cn = cn->next)
		conn_kill(&p, cn, false, "proxy stopping");
	reap(&p);
	if (p.lfd >= 0)
		close(p.lfd);
	if (p.tfd >= 0)
		close(p.tfd);
	if (p.sigfd >= 0)
		close(p.sigfd);
	if (p.ep >= 0)
		close(p.ep);
	return ret;
}
