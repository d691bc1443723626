/* SPDX-License-Identifier: MIT */
/*
 * lp-ctlfuzz: a hostile client of lazy-pagesd's control socket. Each case
 * sends something wrong (oversize and zero lengths, truncated frames,
 * garbage, unknown versions and ops, fds where none belong, hand-offs of
 * fds that are not a userfaultfd, more connections than the limit, a
 * header that never completes) and expects the daemon to answer with an
 * error or to close that connection, within a time limit, and never to
 * go away: after the cases a plain status through liblazypages must work.
 * Prints "ok NAME" or "FAIL NAME: why" per case; exit 0 only if all passed.
 *
 *   lp-ctlfuzz [-s SOCKET] [--rounds N] [--seed S]
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.pb-c.h"
#include "lazypages.h"
#include "pagehash.h"

#define REPLY_MS 5000		/* an answer or a close must come this fast */
#define MANY_CONNS 80		/* above the daemon's CONTROL_MAX_CONNS (64) */

struct ctx {
	const char *path;
	unsigned failed, passed;
	uint64_t rng;
};

/* What came back for one request. */
enum reply { R_FRAME, R_CLOSED, R_TIMEOUT, R_ERROR };

static void result(struct ctx *x, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void result(struct ctx *x, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (!fmt) {
		printf("ok %s\n", name);
		x->passed++;
	} else {
		printf("FAIL %s: ", name);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
		x->failed++;
	}
	fflush(stdout);
}

static int dial(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Sends LEN bytes; with NFDS, the fds go with the first byte (as lp_handoff does). */
static int send_raw(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	while (len) {
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		iov.iov_base = (char *)iov.iov_base + n;
		iov.iov_len -= (size_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_frame(int fd, const void *body, uint32_t len, const int *fds, int nfds)
{
	uint8_t *buf = malloc((size_t)len + 4);
	int ret;

	if (!buf)
		return -ENOMEM;
	buf[0] = (uint8_t)len;
	buf[1] = (uint8_t)(len >> 8);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 24);
	memcpy(buf + 4, body, len);
	ret = send_raw(fd, buf, (size_t)len + 4, fds, nfds);
	free(buf);
	return ret;
}

static int send_req(int fd, const LpRequest *req, const int *fds, int nfds)
{
	size_t len = lp_request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	int ret;

	if (!buf)
		return -ENOMEM;
	lp_request__pack(req, buf);
	ret = send_frame(fd, buf, (uint32_t)len, fds, nfds);
	free(buf);
	return ret;
}

static int read_full_ms(int fd, void *buf, size_t len, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	ssize_t n;
	int r;

	while (got < len) {
		r = poll(&pfd, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0)
			return -errno;
		n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? 0 : -errno;
		if (n == 0)
			return got ? -EPIPE : 0;
		got += (size_t)n;
	}
	return 1;
}

/* Reads one reply frame; *ERR is its error field (0 or -errno). */
static enum reply get_reply(int fd, int32_t *err, char *msg, size_t msglen)
{
	uint8_t hdr[4], *buf;
	uint32_t len;
	LpResponse *resp;
	int r;

	r = read_full_ms(fd, hdr, 4, REPLY_MS);
	if (r == 0)
		return R_CLOSED;
	if (r == -ETIMEDOUT)
		return R_TIMEOUT;
	if (r < 0)
		return R_ERROR;
	len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	if (len == 0 || len > LP_CONTROL_MAX_FRAME)
		return R_ERROR;
	buf = malloc(len);
	if (!buf)
		return R_ERROR;
	r = read_full_ms(fd, buf, len, REPLY_MS);
	if (r != 1) {
		free(buf);
		return r == -ETIMEDOUT ? R_TIMEOUT : R_ERROR;
	}
	resp = lp_response__unpack(NULL, len, buf);
	free(buf);
	if (!resp)
		return R_ERROR;
	*err = resp->error;
	snprintf(msg, msglen, "%s", resp->message ? resp->message : "");
	lp_response__free_unpacked(resp, NULL);
	return R_FRAME;
}

static const char *reply_name(enum reply r)
{
	static const char *const n[] = { "a reply", "a close", "nothing (timeout)", "a broken reply" };

	return n[r];
}

/* Sends BUF as it is on a new connection; the daemon must answer with an error, or close. */
static void expect_refusal(struct ctx *x, const char *name, const void *buf, size_t len, int shut)
{
	char msg[512];
	int32_t err = 0;
	enum reply r;
	int fd = dial(x->path);

	if (fd < 0) {
		result(x, name, "connect: %s", strerror(-fd));
		return;
	}
	if (send_raw(fd, buf, len, NULL, 0) < 0) {
		/* the daemon may close before it has read everything: that is a refusal too */
		close(fd);
		result(x, name, NULL);
		return;
	}
	if (shut)
		shutdown(fd, SHUT_WR);
	r = get_reply(fd, &err, msg, sizeof(msg));
	close(fd);
	if (r == R_CLOSED || (r == R_FRAME && err < 0))
		result(x, name, NULL);
	else if (r == R_FRAME)
		result(x, name, "the daemon answered success");
	else
		result(x, name, "got %s", reply_name(r));
}

/* Sends REQ (with FDS) on FD; the answer must be error WANT (0: any error). */
static void expect_error(struct ctx *x, const char *name, int fd, const LpRequest *req, const int *fds, int nfds,
			 int32_t want)
{
	char msg[512];
	int32_t err = 0;
	enum reply r;
	int ret = send_req(fd, req, fds, nfds);

	if (ret < 0) {
		result(x, name, "send: %s", strerror(-ret));
		return;
	}
	r = get_reply(fd, &err, msg, sizeof(msg));
	if (r != R_FRAME)
		result(x, name, "got %s", reply_name(r));
	else if (err >= 0)
		result(x, name, "the daemon answered success");
	else if (want && err != want)
		result(x, name, "error %d (%s), expected %d (%s)", err, msg, want, strerror(-want));
	else
		result(x, name, NULL);
}

/* A status on FD must succeed: the connection is still in step. */
static int status_ok(int fd)
{
	LpRequest req = LP_REQUEST__INIT;
	char msg[512];
	int32_t err = -1;

	req.version = LP_CONTROL_VERSION;
	req.op = LP_OP__LP_OP_STATUS;
	if (send_req(fd, &req, NULL, 0) < 0)
		return 0;
	return get_reply(fd, &err, msg, sizeof(msg)) == R_FRAME && err == 0;
}

static void case_lengths(struct ctx *x)
{
	static const uint8_t huge[4] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t zero[4] = { 0, 0, 0, 0 };
	uint32_t over = LP_CONTROL_MAX_FRAME + 1;
	uint8_t ov[4] = { (uint8_t)over, (uint8_t)(over >> 8), (uint8_t)(over >> 16), (uint8_t)(over >> 24) };
	uint8_t trunc[14] = { 100, 0, 0, 0, 8, 1, 16, 1 };

	expect_refusal(x, "length-4GiB", huge, sizeof(huge), 0);
	expect_refusal(x, "length-max+1", ov, sizeof(ov), 0);
	expect_refusal(x, "length-zero", zero, sizeof(zero), 0);
	/* says 100 bytes, sends 10, then half-closes: the daemon must not wait forever */
	expect_refusal(x, "truncated-body", trunc, sizeof(trunc), 1);
	expect_refusal(x, "truncated-header", huge, 2, 1);
}

static void case_garbage(struct ctx *x)
{
	uint8_t buf[4 + 64];
	size_t i;

	for (i = 4; i < sizeof(buf); i++)
		buf[i] = (uint8_t)ph_rand(&x->rng);
	buf[0] = 64;
	buf[1] = buf[2] = buf[3] = 0;
	buf[4] = 0xff;	/* field 31, wire type 7: never valid protobuf */
	expect_refusal(x, "garbage-body", buf, sizeof(buf), 0);
}

static void case_requests(struct ctx *x)
{
	LpRequest req = LP_REQUEST__INIT;
	LpSessionAdd add = LP_SESSION_ADD__INIT;
	LpHandoff h = LP_HANDOFF__INIT;
	LpRegion rg = LP_REGION__INIT, *rp = &rg;
	/* version 1, op 99: an op this daemon does not know */
	static const uint8_t unknown_op[] = { 0x08, 0x01, 0x10, 0x63 };
	/* version 1 and no op: a required field missing */
	static const uint8_t no_op[] = { 0x08, 0x01 };
	int fd, p[2] = { -1, -1 }, fds[2];

	fd = dial(x->path);
	if (fd < 0) {
		result(x, "requests", "connect: %s", strerror(-fd));
		return;
	}
	req.version = 99;
	req.op = LP_OP__LP_OP_STATUS;
	expect_error(x, "version-99", fd, &req, NULL, 0, -EPROTONOSUPPORT);
	result(x, "version-99-then-status", status_ok(fd) ? NULL : "the connection is unusable after the error");

	req.version = LP_CONTROL_VERSION;
	if (pipe(p) == 0) {
		expect_error(x, "fds-with-status", fd, &req, p, 1, -EINVAL);
		result(x, "fds-with-status-then-status", status_ok(fd) ? NULL : "the connection is unusable");
	}

	req.op = LP_OP__LP_OP_SESSION_ADD;
	expect_error(x, "add-without-args", fd, &req, NULL, 0, -EINVAL);
	add.images_dir = "relative/dir";
	req.add = &add;
	expect_error(x, "add-relative-dir", fd, &req, NULL, 0, -EINVAL);
	add.images_dir = "/nonexistent/lp-ctlfuzz";
	expect_error(x, "add-missing-dir", fd, &req, NULL, 0, 0);
	add.images_dir = "/tmp";
	add.ps_address = "127.0.0.1";
	add.has_ps_port = 1;
	add.ps_port = 70000;
	expect_error(x, "add-bad-port", fd, &req, NULL, 0, -EINVAL);
	req.add = NULL;

	req.op = LP_OP__LP_OP_SESSION_RM;
	expect_error(x, "rm-without-id", fd, &req, NULL, 0, -EINVAL);
	req.has_session = 1;
	req.session = 424242;
	expect_error(x, "rm-unknown", fd, &req, NULL, 0, -ENOENT);
	req.op = LP_OP__LP_OP_STATS;
	expect_error(x, "stats-unknown", fd, &req, NULL, 0, -ENOENT);
	req.has_session = 0;

	req.op = LP_OP__LP_OP_HANDOFF;
	expect_error(x, "handoff-without-regions", fd, &req, NULL, 0, -EINVAL);
	rg.addr = 0x10000000;
	rg.len = 4096;
	h.n_regions = 1;
	h.regions = &rp;
	req.handoff = &h;
	expect_error(x, "handoff-without-fds", fd, &req, NULL, 0, -EINVAL);
	if (p[0] >= 0) {
		fds[0] = p[0];
		fds[1] = p[1];
		expect_error(x, "handoff-pipe-not-uffd", fd, &req, fds, 2, -EINVAL);
		h.n_regions = 0;
		expect_error(x, "handoff-zero-regions", fd, &req, fds, 2, -EINVAL);
		close(p[0]);
		close(p[1]);
	}
	result(x, "requests-then-status", status_ok(fd) ? NULL : "the connection is unusable");
	close(fd);

	{
		uint8_t f[4 + sizeof(unknown_op)] = { sizeof(unknown_op), 0, 0, 0 };

		memcpy(f + 4, unknown_op, sizeof(unknown_op));
		expect_refusal(x, "unknown-op", f, sizeof(f), 0);
	}
	{
		uint8_t f[4 + sizeof(no_op)] = { sizeof(no_op), 0, 0, 0 };

		memcpy(f + 4, no_op, sizeof(no_op));
		expect_refusal(x, "missing-op", f, sizeof(f), 0);
	}
}

/* A header that never completes must not hold up anyone else: one thread per connection. */
static void case_stalled(struct ctx *x)
{
	static const uint8_t half[2] = { 8, 0 };
	int slow = dial(x->path), fd;

	if (slow < 0 || send_raw(slow, half, sizeof(half), NULL, 0) < 0) {
		result(x, "stalled-peer", "connect/send failed");
		if (slow >= 0)
			close(slow);
		return;
	}
	fd = dial(x->path);
	result(x, "stalled-peer", fd >= 0 && status_ok(fd) ? NULL : "a second client got no status");
	if (fd >= 0)
		close(fd);
	close(slow);
}

/* Past the connection limit the daemon refuses (EMFILE) and stays up. */
static void case_many(struct ctx *x)
{
	int fds[MANY_CONNS], n, ok = 0, refused = 0, other = 0;
	char msg[512];
	int32_t err;

	for (n = 0; n < MANY_CONNS; n++) {
		LpRequest req = LP_REQUEST__INIT;

		fds[n] = dial(x->path);
		if (fds[n] < 0) {
			other++;
			continue;
		}
		req.version = LP_CONTROL_VERSION;
		req.op = LP_OP__LP_OP_STATUS;
		err = 1;
		/* a refused one may be closed before the request is read */
		send_req(fds[n], &req, NULL, 0);
		if (get_reply(fds[n], &err, msg, sizeof(msg)) != R_FRAME)
			other++;
		else if (err == 0)
			ok++;
		else if (err == -EMFILE)
			refused++;
		else
			other++;
	}
	for (n = 0; n < MANY_CONNS; n++)
		if (fds[n] >= 0)
			close(fds[n]);
	if (ok == 0 || refused == 0 || other)
		result(x, "many-connections", "%d answered, %d refused with EMFILE, %d other (of %d)", ok, refused,
		       other, MANY_CONNS);
	else
		result(x, "many-connections", NULL);
	printf("  many-connections: %d answered, %d refused with EMFILE\n", ok, refused);
}

/* Valid requests with random bytes flipped, and random bodies: an answer or a close, every time. */
static void case_random(struct ctx *x, unsigned rounds)
{
	LpRequest req = LP_REQUEST__INIT;
	LpSessionAdd add = LP_SESSION_ADD__INIT;
	uint8_t buf[512];
	unsigned i, bad = 0, answered = 0, closed = 0;
	char msg[512], first[256] = "";
	size_t len, k;
	int32_t err;

	for (i = 0; i < rounds; i++) {
		enum reply r;
		int fd;

		lp_request__init(&req);
		req.version = LP_CONTROL_VERSION;
		switch (i % 4) {
		case 0: req.op = LP_OP__LP_OP_STATUS; break;
		case 1: req.op = LP_OP__LP_OP_SESSION_LIST; break;
		case 2: req.op = LP_OP__LP_OP_STATS; req.has_session = 1; req.session = 77; break;
		default:
			req.op = LP_OP__LP_OP_SESSION_ADD;
			add.images_dir = "/nonexistent/lp-ctlfuzz/images";
			req.add = &add;
		}
		len = lp_request__get_packed_size(&req);
		lp_request__pack(&req, buf);
		if (i % 5 == 4) {
			len = 1 + ph_rand(&x->rng) % 200;
			for (k = 0; k < len; k++)
				buf[k] = (uint8_t)ph_rand(&x->rng);
		} else {
			for (k = 0; k < 1 + ph_rand(&x->rng) % 3; k++)
				buf[ph_rand(&x->rng) % len] ^= (uint8_t)(1 + ph_rand(&x->rng) % 255);
		}
		fd = dial(x->path);
		if (fd < 0) {
			bad++;
			snprintf(first, sizeof(first), "round %u: connect: %s", i, strerror(-fd));
			break;
		}
		if (send_frame(fd, buf, (uint32_t)len, NULL, 0) < 0) {
			close(fd);
			closed++;
			continue;
		}
		r = get_reply(fd, &err, msg, sizeof(msg));
		close(fd);
		if (r == R_FRAME)
			answered++;
		else if (r == R_CLOSED)
			closed++;
		else if (!bad++)
			snprintf(first, sizeof(first), "round %u: got %s", i, reply_name(r));
	}
	if (bad)
		result(x, "random-frames", "%u bad rounds; first: %s", bad, first);
	else
		result(x, "random-frames", NULL);
	printf("  random-frames: %u rounds, %u answered, %u closed\n", rounds, answered, closed);
}

static void usage(void)
{
	fprintf(stderr, "usage: lp-ctlfuzz [-s SOCKET] [--rounds N] [--seed S]\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctx x = { .rng = 1 };
	struct lp_conn *c = NULL;
	struct lp_status st;
	unsigned rounds = 300;
	int opt, ret, tries;

	while ((opt = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
		switch (opt) {
		case 's': x.path = optarg; break;
		case 'r': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'e': x.rng = strtoull(optarg, NULL, 0); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc) {
		usage();
		return 2;
	}
	x.path = lp_control_path(x.path);
	case_lengths(&x);
	case_garbage(&x);
	case_requests(&x);
	case_stalled(&x);
	case_random(&x, rounds);
	case_many(&x);

	/*
	 * The connections of case_many are closed, but their threads leave
	 * the daemon's table a moment later: a refusal (EMFILE) here is
	 * that moment, so it is retried; anything else is a failure.
	 */
	for (tries = 0;; tries++) {
		ret = lp_connect(x.path, &c);
		if (!ret)
			ret = lp_status(c, &st);
		if (ret != -EMFILE || tries >= 1000)
			break;
		lp_close(c);
		c = NULL;
		sched_yield();
	}
	if (ret)
		result(&x, "alive", "status after the cases: %s", c ? lp_error(c) : strerror(-ret));
	else {
		result(&x, "alive", NULL);
		printf("  alive: pid %d, %u sessions since start: %s\n", (int)st.pid, st.sessions_total, st.line);
	}
	lp_close(c);
	printf("lp-ctlfuzz: %u passed, %u failed\n", x.passed, x.failed);
	return x.failed ? 1 : 0;
}
