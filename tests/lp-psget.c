/* SPDX-License-Identifier: MIT */
/*
 * lp-psget: one page-server client connection, measured. It connects (from
 * --bind if given), optionally sends lazy-pages' hello, asks for the first
 * lazy pages of the images with a GET, sends CLOSE, and reads whatever
 * comes back until the server closes, resets, or --timeout passes. It
 * prints one line saying how many bytes arrived and what they were:
 *
 *   connect=ok|refused|timeout received=N reply=0|1 pages=N match=0|1 close_ack=0|1
 *   end=complete|eof|reset|timeout
 *
 * match=1: the reply's pages are the images' bytes. With --emit it only
 * writes the request bytes to stdout, and with --parse FILE it reads the
 * answer from FILE, for another transport (gnutls-cli for TLS). Exit 0
 * when that line was printed (whatever it says), 1 on a local failure, 2
 * on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "ps_wire.h"

#define MAX_PAGES 64u

struct target {
	uint32_t pid;
	uint64_t vaddr, nr;
	uint8_t *want;			/* nr pages */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The first lazy entry with its data in the images, of a live process: up to PAGES of its pages. */
static int pick_target(const char *dir, unsigned int pages, struct target *t)
{
	struct pstree_ent *ps = NULL;
	struct imgdir *d = NULL;
	size_t nps = 0, i, j, ne;
	struct lp_err e;
	int ret = -1;

	if (imgdir_open(dir, &d, &e) || imgdir_read_pstree(d, &ps, &nps, &e)) {
		fprintf(stderr, "lp-psget: %s\n", e.msg);
		goto out;
	}
	for (i = 0; i < nps && ret; i++) {
		uint32_t state = TASK_ALIVE;
		struct pagemap *pm = NULL;
		const struct pm_entry *pe;

		if (imgdir_task_state(d, ps[i].pid, &state, &e) || state == TASK_DEAD ||
		    pagemap_open(d, ps[i].pid, &pm, &e))
			continue;
		pe = pagemap_entries(pm, &ne);
		for (j = 0; j < ne; j++) {
			if ((pe[j].flags & (PE_LAZY | PE_PRESENT)) != (PE_LAZY | PE_PRESENT))
				continue;
			t->pid = ps[i].pid;
			t->vaddr = pe[j].vaddr;
			t->nr = pe[j].nr_pages < pages ? pe[j].nr_pages : pages;
			t->want = malloc(t->nr * pagemap_page_size());
			if (!t->want || pagemap_read(pm, t->vaddr, t->nr, t->want, &e)) {
				fprintf(stderr, "lp-psget: %s\n", t->want ? e.msg : "out of memory");
				break;
			}
			ret = 0;
			break;
		}
		pagemap_close(pm);
	}
	if (ret && !t->want)
		fprintf(stderr, "lp-psget: %s: no lazy pages with data in the images\n", dir);
out:
	pstree_free(ps, nps);
	imgdir_close(d);
	return ret;
}

static int parse_addr(const char *text, const char *port, struct addrinfo **out)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };

	return getaddrinfo(text, port, &hints, out) ? -EINVAL : 0;
}

/* "A:P" or "[A]:P" */
static int parse_target(const char *hostport, struct addrinfo **out)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	size_t hl;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - hostport);
	if (hl >= 2 && hostport[0] == '[' && hostport[hl - 1] == ']') {
		hostport++;
		hl -= 2;
	}
	if (!hl || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, hl);
	host[hl] = 0;
	return parse_addr(host, colon + 1, out);
}

/* Connects within TIMEOUT_MS: the fd, or -ECONNREFUSED, -ETIMEDOUT, -errno. */
static int connect_from(const struct addrinfo *to, const struct addrinfo *from, int timeout_ms)
{
	struct pollfd pfd = { .events = POLLOUT };
	socklen_t sl = sizeof(int);
	int fd, err = 0, r;

	fd = socket(to->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (from && bind(fd, from->ai_addr, from->ai_addrlen) < 0) {
		err = -errno;
		goto fail;
	}
	if (connect(fd, to->ai_addr, to->ai_addrlen) < 0 && errno != EINPROGRESS) {
		err = -errno;
		goto fail;
	}
	pfd.fd = fd;
	r = poll(&pfd, 1, timeout_ms);
	if (r == 0) {
		err = -ETIMEDOUT;
		goto fail;
	}
	if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) {
		err = -errno;
		goto fail;
	}
	if (err) {
		err = -err;
		goto fail;
	}
	if (fcntl(fd, F_SETFL, 0) < 0) {
		err = -errno;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return err;
}

/*
 * Reads until EOF, a reset, the deadline or (WHOLE > 0) WHOLE bytes, a
 * complete answer; at most CAP bytes are kept, all are counted.
 */
static const char *read_all(int fd, uint8_t *buf, size_t cap, size_t *got, size_t whole, int64_t deadline)
{
	uint8_t sink[4096];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	for (;;) {
		int64_t left = deadline - now_ms();
		ssize_t r;

		if (whole && *got >= whole)
			return "complete";
		if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
			return "timeout";
		r = *got < cap ? read(fd, buf + *got, cap - *got) : read(fd, sink, sizeof(sink));
		if (r == 0)
			return "eof";
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == ECONNRESET ? "reset" : strerror(errno);
		*got += (size_t)r;
	}
}

/* The requests: [hello,] GET of the target, [CLOSE]. Returns their length in BUF (3 headers at most). */
static size_t build_request(int wire, const struct target *t, int hello, int close_cmd, uint8_t *buf)
{
	size_t hsz = ps_iov_size(wire), n = 0;
	struct ps_iov rq;

	if (hello) {
		rq = (struct ps_iov){ .cmd = PS_LP_HELLO, .nr_pages = PS_LP_HELLO_VERSION, .dst_id = PS_LP_ROLE_URGENT };
		ps_iov_encode(wire, &rq, buf + n);
		n += hsz;
	}
	rq = (struct ps_iov){ .cmd = PS_IOV_GET, .nr_pages = t->nr, .vaddr = t->vaddr, .dst_id = t->pid };
	ps_iov_encode(wire, &rq, buf + n);
	n += hsz;
	if (close_cmd) {
		rq = (struct ps_iov){ .cmd = PS_IOV_CLOSE };
		ps_iov_encode(wire, &rq, buf + n);
		n += hsz;
	}
	return n;
}

struct answer {
	bool reply, match, ack;
	uint64_t pages;
};

/* What the N bytes in BUF (after a hello's answer, if any) say about the GET of T. */
static void parse_answer(int wire, const struct target *t, const uint8_t *buf, size_t n, struct answer *a)
{
	size_t hsz = ps_iov_size(wire), len = t->nr * pagemap_page_size();
	struct ps_iov rp;

	memset(a, 0, sizeof(*a));
	if (n < hsz)
		return;
	ps_iov_decode(wire, buf, &rp);
	a->reply = rp.cmd == PS_GET_REPLY_CMD && rp.vaddr == t->vaddr && rp.dst_id == t->pid;
	a->pages = a->reply ? rp.nr_pages : 0;
	if (a->reply && a->pages == t->nr && n >= hsz + len)
		a->match = !memcmp(buf + hsz, t->want, len);
	if (a->match && n >= hsz + len + 4) {
		int32_t v;

		memcpy(&v, buf + hsz + len, sizeof(v));
		a->ack = v == 0;
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-psget --images DIR --connect A:P [--bind ADDR] [--ps-wire 3|4] [--pages N]\n"
		"                [--hello] [--hold SECONDS] [--no-close] [--timeout SECONDS]\n"
		"       lp-psget --images DIR --emit [--ps-wire 3|4] [--pages N] [--hello] [--no-close]\n"
		"       lp-psget --images DIR --parse FILE [--ps-wire 3|4] [--pages N] [--hello]\n"
		"--hold: stay connected that long before the first request (the server may close first);\n"
		"--no-close: no CLOSE after the GET (the client just hangs up).\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "images", required_argument, NULL, 'D' },
		{ "connect", required_argument, NULL, 'c' },
		{ "bind", required_argument, NULL, 'b' },
		{ "ps-wire", required_argument, NULL, 'w' },
		{ "pages", required_argument, NULL, 'n' },
		{ "hello", no_argument, NULL, 'H' },
		{ "hold", required_argument, NULL, 'o' },
		{ "no-close", no_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 't' },
		{ "emit", no_argument, NULL, 'e' },
		{ "parse", required_argument, NULL, 'p' },
		{ 0 }
	};
	const char *dir = NULL, *to_text = NULL, *from_text = NULL, *parse = NULL, *end = "-", *conn = "ok";
	struct addrinfo *to = NULL, *from = NULL;
	int c, wire = PS_WIRE_4, timeout = 5, hold = 0, hello = 0, close_cmd = 1, emit = 0, fd = -1, ret = 1;
	unsigned int pages = 1;
	struct target t = { 0 };
	uint8_t req[3 * PS_IOV_MAX], *buf = NULL;
	size_t hsz, cap, got = 0, at, nreq;
	struct answer a = { 0 };

	while ((c = getopt_long(argc, argv, "D:", lo, NULL)) != -1) {
		switch (c) {
		case 'D': dir = optarg; break;
		case 'c': to_text = optarg; break;
		case 'b': from_text = optarg; break;
		case 'w': wire = atoi(optarg); break;
		case 'n': pages = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'H': hello = 1; break;
		case 'o': hold = atoi(optarg); break;
		case 'C': close_cmd = 0; break;
		case 't': timeout = atoi(optarg); break;
		case 'e': emit = 1; break;
		case 'p': parse = optarg; break;
		default: usage(); return 2;
		}
	}
	if (!dir || !!to_text + emit + !!parse != 1 || optind != argc || !ps_iov_size(wire) || !pages ||
	    pages > MAX_PAGES || timeout < 1 || hold < 0) {
		usage();
		return 2;
	}
	if ((to_text && parse_target(to_text, &to)) || (from_text && parse_addr(from_text, "0", &from))) {
		fprintf(stderr, "lp-psget: --connect A:P and --bind ADDR take numeric addresses\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	hsz = ps_iov_size(wire);
	if (pick_target(dir, pages, &t))
		goto out;
	nreq = build_request(wire, &t, hello, close_cmd, req);
	if (emit) {
		ret = io_write_full(STDOUT_FILENO, req, nreq) ? 1 : 0;
		goto out;
	}
	cap = 2 * hsz + t.nr * pagemap_page_size() + 4 + 64;
	buf = malloc(cap);
	if (!buf)
		goto out;
	if (parse) {
		fd = open(parse, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "lp-psget: %s: %s\n", parse, strerror(errno));
			goto out;
		}
		end = read_all(fd, buf, cap, &got, 0, now_ms() + (int64_t)timeout * 1000);
		at = hello && got >= hsz ? hsz : 0;
		parse_answer(wire, &t, buf + at, got - at, &a);
		goto print;
	}

	fd = connect_from(to, from, timeout * 1000);
	if (fd == -ECONNREFUSED || fd == -ETIMEDOUT) {
		conn = fd == -ECONNREFUSED ? "refused" : "timeout";
		goto print;
	}
	if (fd < 0) {
		fprintf(stderr, "lp-psget: connect to %s: %s\n", to_text, strerror(-fd));
		goto out;
	}
	if (hold) {
		end = read_all(fd, buf, cap, &got, 0, now_ms() + (int64_t)hold * 1000);
		if (strcmp(end, "timeout"))
			goto print;	/* the server hung up on us first */
	}
	/* what is sent to a server that has closed may fail: what comes back is the measure */
	if (hello) {
		if (io_write_full(fd, req, hsz) == 0 && io_read_full(fd, buf, hsz) == 0)
			got += hsz;	/* the hello's answer, not part of the GET's reply */
	}
	io_write_full(fd, req + (hello ? hsz : 0), nreq - (hello ? hsz : 0));
	at = got;
	got = 0;
	end = read_all(fd, buf + at, cap - at, &got, hsz + t.nr * pagemap_page_size() + (close_cmd ? 4 : 0),
		       now_ms() + (int64_t)timeout * 1000);
	parse_answer(wire, &t, buf + at, got, &a);
	got += at;
print:
	printf("connect=%s received=%zu reply=%d pages=%" PRIu64 " match=%d close_ack=%d end=%s\n", conn, got,
	       a.reply, a.pages, a.match, a.ack, end);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (to)
		freeaddrinfo(to);
	if (from)
		freeaddrinfo(from);
	free(t.want);
	free(buf);
	return ret;
}
