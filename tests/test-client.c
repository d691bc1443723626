/* SPDX-License-Identifier: MIT */
/* test-client: liblazypages and lazy-pagesctl against a scripted fake daemon on a unix socket. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "control.pb-c.h"
#include "lazypages.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define TIMEOUT_S 20
#define MAXR 8

static char cli[PATH_MAX];	/* build/lazy-pagesctl, beside this test's directory */

/*
 * The fake daemon: a thread that accepts one connection and answers the
 * i-th request with the i-th scripted reply (raw bytes, so replies can be
 * broken on purpose). It records every request and the fds that came with
 * the first byte of each; a request beyond the script is recorded and
 * answered by hanging up.
 */
struct reply {
	uint8_t *buf;
	size_t len;
	bool trickle;		/* a byte per write */
	bool hangup;		/* close after this reply */
};

struct fake {
	char dir[64], path[128];
	int lfd, cfd;		/* listening, and the connection being served */
	int stopfd;		/* eventfd: stop waiting for a connection */
	pthread_t th;
	bool started;
	struct reply reply[MAXR];
	int nreply;
	bool hangup_at_accept;	/* close the connection before reading anything */
	bool hangup_at_request;	/* read the first request, then close */

	int nreq;
	LpRequest *req[MAXR];
	int nfds[MAXR];		/* fds on the recvmsg that read a request's first byte */
	struct stat st[MAXR][4];
	int later_fds;		/* fds on any other recvmsg: must stay 0 */
	char fail[256];		/* what went wrong on the server side */
};

/* ---- the fake daemon ---- */

/* Reads N bytes with recvmsg, taking fds; FIRST: this read holds a request's first byte. */
static int fake_read(struct fake *f, int fd, void *buf, size_t n, int req)
{
	size_t got = 0;

	while (got < n) {
		union {
			char b[CMSG_SPACE(8 * sizeof(int))];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { (char *)buf + got, n - got };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				      .msg_controllen = sizeof(ctl.b) };
		struct cmsghdr *cm;
		ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : (got ? -EPIPE : 0);
		for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			int k, nf, fds[8];

			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			nf = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(cm), (size_t)nf * sizeof(int));
			for (k = 0; k < nf; k++) {
				if (req >= 0 && got == 0 && req < MAXR && f->nfds[req] < 4)
					fstat(fds[k], &f->st[req][f->nfds[req]++]);
				else
					f->later_fds++;
				close(fds[k]);
			}
		}
		got += (size_t)r;
	}
	return 1;
}

static int fake_read_request(struct fake *f, int fd)
{
	int i = f->nreq, ret;
	uint8_t hdr[4], *body;
	uint32_t len;

	ret = fake_read(f, fd, hdr, 4, i);
	if (ret <= 0)
		return ret;
	len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	if (len > LP_CONTROL_MAX_FRAME) {
		snprintf(f->fail, sizeof(f->fail), "request %d: frame length %u", i, len);
		return -EMSGSIZE;
	}
	body = malloc(len ? len : 1);
	if (!body)
		return -ENOMEM;
	ret = fake_read(f, fd, body, len, -1);
	if (ret == 0)
		ret = len ? -EPIPE : 1;
	if (ret > 0) {
		LpRequest *r = lp_request__unpack(NULL, len, body);

		if (!r)
			snprintf(f->fail, sizeof(f->fail), "request %d: %u bytes, not an lp_request", i, len);
		else if (i < MAXR)
			f->req[i] = r;
		else
			lp_request__free_unpacked(r, NULL);
		f->nreq++;
		ret = r ? 1 : -EPROTO;
	}
	free(body);
	return ret;
}

static void fake_write(int fd, const struct reply *r)
{
	size_t off = 0;

	while (off < r->len) {
		size_t n = r->trickle ? 1 : r->len - off;
		ssize_t w = write(fd, r->buf + off, n);

		if (w <= 0)
			return;
		off += (size_t)w;
		if (r->trickle) {
			/* spread the bytes out in time so the client sees short reads */
			struct timespec ts = { 0, 200000 };

			nanosleep(&ts, NULL);
		}
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd, i;

	/* a client that exits without connecting must not leave the fake in accept */
	for (;;) {
		struct pollfd pfd[2] = { { f->lfd, POLLIN, 0 }, { f->stopfd, POLLIN, 0 } };

		if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
			snprintf(f->fail, sizeof(f->fail), "poll: %s", strerror(errno));
			return NULL;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents)
			return NULL;	/* never connected: f->nreq stays 0 */
	}
	fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		snprintf(f->fail, sizeof(f->fail), "accept: %s", strerror(errno));
		return NULL;
	}
	f->cfd = fd;
	if (f->hangup_at_accept)
		goto out;
	for (i = 0;; i++) {
		if (fake_read_request(f, fd) <= 0)
			break;
		if (f->hangup_at_request || i >= f->nreply)
			break;
		fake_write(fd, &f->reply[i]);
		if (f->reply[i].hangup)
			break;
	}
out:
	f->cfd = -1;
	close(fd);
	return NULL;
}

static void add_raw(struct fake *f, const void *buf, size_t len, bool trickle, bool hangup)
{
	struct reply *r;

	assert_true(f->nreply < MAXR);
	r = &f->reply[f->nreply++];
	r->buf = malloc(len ? len : 1);
	assert_non_null(r->buf);
	memcpy(r->buf, buf, len);
	r->len = len;
	r->trickle = trickle;
	r->hangup = hangup;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void add_reply_opt(struct fake *f, const LpResponse *resp, bool trickle)
{
	size_t len = lp_response__get_packed_size(resp);
	uint8_t *buf = malloc(4 + len);

	assert_non_null(buf);
	put_le32(buf, (uint32_t)len);
	lp_response__pack(resp, buf + 4);
	add_raw(f, buf, 4 + len, trickle, false);
	free(buf);
}

static void add_reply(struct fake *f, const LpResponse *resp)
{
	add_reply_opt(f, resp, false);
}

/* A plain "ok" reply to any request. */
static void add_ok(struct fake *f)
{
	LpResponse r = LP_RESPONSE__INIT;

	r.version = 1;
	add_reply(f, &r);
}

static void add_error(struct fake *f, int err, const char *msg)
{
	LpResponse r = LP_RESPONSE__INIT;

	r.version = 1;
	r.error = err;
	r.message = (char *)msg;
	add_reply(f, &r);
}

static void add_status(struct fake *f, const char *line)
{
	LpResponse r = LP_RESPONSE__INIT;
	LpDaemonStatus st = LP_DAEMON_STATUS__INIT;

	st.pid = 42;
	st.uptime_s = 1.5;
	st.sessions_active = 1;
	st.sessions_total = 3;
	st.line = (char *)line;
	r.version = 1;
	r.status = &st;
	add_reply(f, &r);
}

/* Forgets the script and what was seen, for a second run on the same socket. */
static void fake_reset(struct fake *f)
{
	int i;

	for (i = 0; i < MAXR; i++) {
		if (f->req[i])
			lp_request__free_unpacked(f->req[i], NULL);
		free(f->reply[i].buf);
	}
	memset(f->reply, 0, sizeof(f->reply));
	memset(f->req, 0, sizeof(f->req));
	memset(f->nfds, 0, sizeof(f->nfds));
	f->nreply = f->nreq = f->later_fds = 0;
}

static void fake_start(struct fake *f)
{
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
	f->started = true;
}

/*
 * Waits for the fake to end (the client closed, or the script hung up).
 * Called once the client is done, so a connection it made is already
 * queued: the fake takes it before it sees the stop.
 */
static void fake_join(struct fake *f)
{
	uint64_t one = 1;

	if (f->started) {
		if (write(f->stopfd, &one, sizeof(one)) != sizeof(one))
			fail_msg("eventfd: %s", strerror(errno));
		pthread_join(f->th, NULL);
		if (read(f->stopfd, &one, sizeof(one)) != sizeof(one))
			fail_msg("eventfd: %s", strerror(errno));
	}
	f->started = false;
	if (f->fail[0])
		fail_msg("fake daemon: %s", f->fail);
}

static struct lp_conn *fake_connect(struct fake *f)
{
	struct lp_conn *c = NULL;

	fake_start(f);
	assert_int_equal(lp_connect(f->path, &c), 0);
	assert_non_null(c);
	return c;
}

static int case_setup(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct fake *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->cfd = -1;
	f->stopfd = eventfd(0, EFD_CLOEXEC);
	if (f->stopfd < 0)
		return -1;
	alarm(TIMEOUT_S);	/* a hung case kills the run rather than stalling it */
	strcpy(f->dir, "/tmp/test-client.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
	strcpy(sun.sun_path, f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)) || listen(f->lfd, 4))
		return -1;
	*state = f;
	return 0;
}

static int case_teardown(void **state)
{
	struct fake *f = *state;
	char cmd[128];

	if (f->started) {
		uint64_t one = 1;

		/* a case that failed mid-way: unblock the accept or the read, then join */
		if (write(f->stopfd, &one, sizeof(one)) < 0)
			perror("eventfd");
		if (f->cfd >= 0)
			shutdown(f->cfd, SHUT_RDWR);
		pthread_join(f->th, NULL);
	}
	close(f->stopfd);
	close(f->lfd);
	fake_reset(f);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", f->dir);
	free(f);
	alarm(0);
	return 0;
}

/* ---- framing and errors ---- */

static void test_status(void **state)
{
	struct fake *f = *state;
	struct lp_status st;
	struct lp_conn *c;
	LpResponse r = LP_RESPONSE__INIT;
	LpDaemonStatus ds = LP_DAEMON_STATUS__INIT;
	char line[300];

	/* 254 ASCII bytes then a 2-byte character: cut before it, not in its middle */
	memset(line, 'a', 254);
	strcpy(line + 254, "\xc3\xa9 and more");
	ds.pid = 4242;
	ds.uptime_s = 12.25;
	ds.sessions_active = 2;
	ds.sessions_total = 7;
	ds.line = line;
	ds.has_stopping = true;
	ds.stopping = true;
	r.version = 1;
	r.status = &ds;
	add_reply(f, &r);

	c = fake_connect(f);
	memset(&st, 0x55, sizeof(st));
	assert_int_equal(lp_status(c, &st), 0);
	assert_int_equal(st.pid, 4242);
	assert_true(st.uptime_s == 12.25);
	assert_int_equal(st.sessions_active, 2);
	assert_int_equal(st.sessions_total, 7);
	assert_int_equal(st.stopping, 1);
	assert_int_equal(strlen(st.line), 254);
	assert_memory_equal(st.line, line, 254);
	lp_close(c);
	fake_join(f);

	assert_int_equal(f->nreq, 1);
	assert_int_equal(f->req[0]->version, LP_CONTROL_VERSION);
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_STATUS);
	assert_false(f->req[0]->has_session);
	assert_null(f->req[0]->add);
	assert_null(f->req[0]->handoff);
	assert_int_equal(f->nfds[0], 0);
}

/* Replies written a byte at a time: the client must put the short reads together. */
static void test_trickle(void **state)
{
	struct fake *f = *state;
	LpResponse r = LP_RESPONSE__INIT;
	LpDaemonStatus ds = LP_DAEMON_STATUS__INIT;
	struct lp_status st;
	struct lp_conn *c;

	ds.pid = 7;
	ds.line = "slowly";
	r.version = 1;
	r.status = &ds;
	add_reply_opt(f, &r, true);
	add_reply_opt(f, &r, true);

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), 0);
	assert_int_equal(st.pid, 7);
	assert_string_equal(st.line, "slowly");
	assert_int_equal(st.stopping, 0);
	assert_int_equal(lp_status(c, &st), 0);
	assert_string_equal(st.line, "slowly");
	lp_close(c);
	fake_join(f);
	assert_int_equal(f->nreq, 2);
}

static void test_error_reply(void **state)
{
	struct fake *f = *state;
	struct lp_status st;
	struct lp_conn *c;

	add_error(f, -ENOENT, "no session 7");
	add_error(f, -EBUSY, NULL);
	add_error(f, 5, "positive");
	add_status(f, "ok");

	c = fake_connect(f);
	assert_int_equal(lp_session_rm(c, 7), -ENOENT);
	assert_string_equal(lp_error(c), "no session 7");
	/* no message: the errno's text */
	assert_int_equal(lp_session_rm(c, 8), -EBUSY);
	assert_string_equal(lp_error(c), strerror(EBUSY));
	/* not a -errno */
	assert_int_equal(lp_session_rm(c, 9), -EPROTO);
	assert_non_null(strstr(lp_error(c), "error 5"));
	/* an error answer leaves the connection in step */
	assert_int_equal(lp_status(c, &st), 0);
	assert_string_equal(st.line, "ok");
	lp_close(c);
	fake_join(f);

	assert_int_equal(f->nreq, 4);
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_SESSION_RM);
	assert_true(f->req[0]->has_session);
	assert_int_equal(f->req[0]->session, 7);
	assert_int_equal(f->req[1]->session, 8);
}

static void test_oversize(void **state)
{
	struct fake *f = *state;
	struct lp_status st;
	struct lp_conn *c;
	uint8_t hdr[4];

	/* only the length: a client that tried to read the body would hang until the alarm */
	put_le32(hdr, LP_CONTROL_MAX_FRAME + 1);
	add_raw(f, hdr, 4, false, false);

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EMSGSIZE);
	assert_non_null(strstr(lp_error(c), "1048577"));
	/* out of step now: refused without a word to the daemon */
	assert_int_equal(lp_status(c, &st), -ENOTCONN);
	lp_close(c);
	fake_join(f);
	assert_int_equal(f->nreq, 1);
}

/* A reply of exactly LP_CONTROL_MAX_FRAME bytes is allowed. */
static void test_max_frame(void **state)
{
	struct fake *f = *state;
	LpResponse r = LP_RESPONSE__INIT;
	LpDaemonStatus ds = LP_DAEMON_STATUS__INIT;
	size_t n = LP_CONTROL_MAX_FRAME;
	struct lp_status st;
	struct lp_conn *c;
	char *line = malloc(n + 1);

	assert_non_null(line);
	memset(line, 'x', n);
	ds.line = line;
	r.version = 1;
	r.status = &ds;
	for (;;) {
		line[n] = '\0';
		if (lp_response__get_packed_size(&r) <= LP_CONTROL_MAX_FRAME)
			break;
		line[n] = 'x';
		n--;
	}
	assert_int_equal(lp_response__get_packed_size(&r), LP_CONTROL_MAX_FRAME);
	add_reply(f, &r);
	free(line);

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), 0);
	assert_int_equal(strlen(st.line), sizeof(st.line) - 1);
	lp_close(c);
	fake_join(f);
}

static void test_truncated(void **state)
{
	struct fake *f = *state;
	uint8_t buf[14] = { 0 };
	struct lp_status st;
	struct lp_conn *c;

	/* a length of 100, 10 bytes, then the daemon goes away */
	put_le32(buf, 100);
	add_raw(f, buf, sizeof(buf), false, true);

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPIPE);
	assert_non_null(strstr(lp_error(c), "10 of 100"));
	assert_int_equal(lp_status(c, &st), -ENOTCONN);
	lp_close(c);
	fake_join(f);
}

static void test_truncated_header(void **state)
{
	struct fake *f = *state;
	uint8_t buf[2] = { 8, 0 };
	struct lp_status st;
	struct lp_conn *c;

	add_raw(f, buf, sizeof(buf), false, true);
	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPIPE);
	lp_close(c);
	fake_join(f);
}

static void test_no_reply(void **state)
{
	struct fake *f = *state;
	struct lp_status st;
	struct lp_conn *c;

	f->hangup_at_request = true;
	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPIPE);
	assert_non_null(strstr(lp_error(c), "without a reply"));
	lp_close(c);
	fake_join(f);
	assert_int_equal(f->nreq, 1);
}

/* The daemon is gone before the request: -EPIPE, not a SIGPIPE that kills the caller. */
static void test_peer_gone(void **state)
{
	struct fake *f = *state;
	void (*old)(int) = signal(SIGPIPE, SIG_DFL);
	struct lp_status st;
	struct lp_conn *c;
	int ret;

	f->hangup_at_accept = true;
	c = fake_connect(f);
	fake_join(f);
	ret = lp_status(c, &st);
	signal(SIGPIPE, old);
	assert_true(ret == -EPIPE || ret == -ECONNRESET);
	lp_close(c);
}

static void test_garbage(void **state)
{
	struct fake *f = *state;
	uint8_t buf[4 + 16];
	struct lp_status st;
	struct lp_conn *c;

	put_le32(buf, 16);
	memset(buf + 4, 0xff, 16);
	add_raw(f, buf, sizeof(buf), false, false);
	/* an empty frame lacks the required fields */
	put_le32(buf, 0);
	add_raw(f, buf, 4, false, false);
	add_status(f, "after");

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPROTO);
	assert_non_null(strstr(lp_error(c), "not an lp_response"));
	assert_int_equal(lp_status(c, &st), -EPROTO);
	/* the frame was read whole: the stream is still in step */
	assert_int_equal(lp_status(c, &st), 0);
	assert_string_equal(st.line, "after");
	lp_close(c);
	fake_join(f);
}

static void test_version(void **state)
{
	struct fake *f = *state;
	LpResponse r = LP_RESPONSE__INIT;
	LpDaemonStatus ds = LP_DAEMON_STATUS__INIT;
	struct lp_status st;
	struct lp_conn *c;

	r.version = 2;
	r.status = &ds;
	add_reply(f, &r);
	r.status = NULL;
	r.error = -EPROTONOSUPPORT;
	r.message = "control version 1 not spoken here";
	add_reply(f, &r);

	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPROTO);
	assert_non_null(strstr(lp_error(c), "version 2"));
	/* the daemon's refusal, with its words */
	assert_int_equal(lp_status(c, &st), -EPROTONOSUPPORT);
	assert_string_equal(lp_error(c), "control version 1 not spoken here");
	lp_close(c);
	fake_join(f);
}

/* A reply without the part the request asked for. */
static void test_missing_parts(void **state)
{
	struct fake *f = *state;
	struct lp_session_opts o = { .images_dir = "/imgs" };
	struct lp_status st;
	struct lp_conn *c;
	uint32_t id = 99;

	add_ok(f);
	add_ok(f);
	c = fake_connect(f);
	assert_int_equal(lp_status(c, &st), -EPROTO);
	assert_int_equal(lp_session_add(c, &o, &id), -EPROTO);
	assert_int_equal(id, 99);
	lp_close(c);
	fake_join(f);
}

static void test_connect(void **state)
{
	struct fake *f = *state;
	char longpath[200];
	struct lp_conn *c = NULL;
	struct lp_status st;

	assert_int_equal(lp_connect("/nonexistent/control.sock", &c), -ENOENT);
	assert_null(c);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(lp_connect(longpath, &c), -ENAMETOOLONG);

	unsetenv(LP_CONTROL_ENV);
	assert_string_equal(lp_control_path(NULL), LP_CONTROL_DEFAULT);
	assert_string_equal(lp_control_path("/x"), "/x");
	setenv(LP_CONTROL_ENV, f->path, 1);
	assert_string_equal(lp_control_path(NULL), f->path);

	add_status(f, "by env");
	fake_start(f);
	assert_int_equal(lp_connect(NULL, &c), 0);
	unsetenv(LP_CONTROL_ENV);
	assert_int_equal(lp_status(c, &st), 0);
	assert_string_equal(st.line, "by env");
	/* every fd the library makes is close-on-exec */
	lp_close(c);
	lp_close(NULL);
	fake_join(f);
}

/* ---- requests and their conversion ---- */

static void test_session_add(void **state)
{
	struct fake *f = *state;
	struct lp_session_opts full = { .images_dir = "/imgs", .work_dir = "/run/w", .ps_address = "10.0.0.1",
					.ps_port = 12345, .ps_wire = 3, .prefetch_threads = 4 };
	struct lp_session_opts bare = { .images_dir = "/imgs2" };
	LpResponse r = LP_RESPONSE__INIT;
	struct lp_conn *c;
	LpSessionAdd *a;
	uint32_t id = 0;

	r.version = 1;
	r.has_session = true;
	r.session = 9;
	add_reply(f, &r);
	r.session = 10;
	add_reply(f, &r);

	c = fake_connect(f);
	assert_int_equal(lp_session_add(c, &full, &id), 0);
	assert_int_equal(id, 9);
	assert_int_equal(lp_session_add(c, &bare, &id), 0);
	assert_int_equal(id, 10);
	lp_close(c);
	fake_join(f);

	assert_int_equal(f->nreq, 2);
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_SESSION_ADD);
	a = f->req[0]->add;
	assert_non_null(a);
	assert_string_equal(a->images_dir, "/imgs");
	assert_string_equal(a->work_dir, "/run/w");
	assert_string_equal(a->ps_address, "10.0.0.1");
	assert_true(a->has_ps_port);
	assert_int_equal(a->ps_port, 12345);
	assert_true(a->has_ps_wire);
	assert_int_equal(a->ps_wire, 3);
	assert_true(a->has_prefetch_threads);
	assert_int_equal(a->prefetch_threads, 4);
	a = f->req[1]->add;
	assert_non_null(a);
	assert_string_equal(a->images_dir, "/imgs2");
	assert_null(a->work_dir);
	assert_null(a->ps_address);
	assert_false(a->has_ps_port);
	assert_false(a->has_ps_wire);
	assert_false(a->has_prefetch_threads);
}

static void test_session_add_invalid(void **state)
{
	struct fake *f = *state;
	struct lp_session_opts none = { 0 }, empty = { .images_dir = "" };
	struct lp_session_opts port_only = { .images_dir = "/i", .ps_port = 5 };
	struct lp_conn *c;
	uint32_t id = 77;

	c = fake_connect(f);
	assert_int_equal(lp_session_add(c, &none, &id), -EINVAL);
	assert_non_null(strstr(lp_error(c), "images dir"));
	assert_int_equal(lp_session_add(c, &empty, &id), -EINVAL);
	assert_int_equal(lp_session_add(c, NULL, &id), -EINVAL);
	assert_int_equal(lp_session_add(c, &port_only, &id), -EINVAL);
	assert_int_equal(id, 77);
	lp_close(c);
	fake_join(f);
	assert_int_equal(f->nreq, 0);
}

static LpProcInfo *proc_info(int32_t pid, uint64_t total, uint64_t remaining, uint64_t faults, uint32_t state)
{
	LpProcInfo *p = malloc(sizeof(*p));

	assert_non_null(p);
	lp_proc_info__init(p);
	p->pid = pid;
	p->total_pages = total;
	p->remaining_pages = remaining;
	p->faults = faults;
	p->state = state;
	return p;
}

/* Two sessions: one with every field and three processes, one with only the required ones. */
static void add_two_sessions(struct fake *f, char *long_dir)
{
	LpResponse r = LP_RESPONSE__INIT;
	LpSessionInfo full = LP_SESSION_INFO__INIT, bare = LP_SESSION_INFO__INIT;
	LpSessionInfo *ss[2] = { &full, &bare };
	LpProcInfo *ps[3];
	int i;

	ps[0] = proc_info(100, 1000, 250, 17, 0);
	ps[0]->has_fault_p99_us = true;
	ps[0]->fault_p99_us = 88.5;
	ps[1] = proc_info(101, 10, 0, 3, 1);
	ps[1]->has_forked = true;
	ps[1]->forked = true;
	ps[2] = proc_info(102, 5, 5, 0, 2);
	full.id = 3;
	full.state = LP_SESSION_STATE__LP_SESSION_SERVING;
	full.kind = "criu-but-far-too-long";
	full.images_dir = long_dir;
	full.work_dir = "/work";
	full.socket_path = "/work/lazy-pages.socket";
	full.page_server = "10.0.0.1:12345";
	full.n_procs = 3;
	full.procs = ps;
	full.has_pages_copied = full.has_zero_pages = full.has_faults = true;
	full.pages_copied = 755;
	full.zero_pages = 5;
	full.faults = 20;
	full.has_fault_p50_us = full.has_fault_p99_us = full.has_seconds = true;
	full.fault_p50_us = 12.5;
	full.fault_p99_us = 88.5;
	full.seconds = 0.75;
	full.has_remote_bytes = full.has_remote_inflight = true;
	full.remote_bytes = 3092480;
	full.remote_inflight = 2;
	full.has_fault_rtt_p50_us = full.has_fault_rtt_p99_us = true;
	full.fault_rtt_p50_us = 150;
	full.fault_rtt_p99_us = 900.25;
	full.summary = "755 pages";
	full.error = "";
	bare.id = 4;
	bare.state = LP_SESSION_STATE__LP_SESSION_FAILED;
	bare.error = "images: no pstree.img";
	r.version = 1;
	r.n_sessions = 2;
	r.sessions = ss;
	add_reply(f, &r);
	for (i = 0; i < 3; i++)
		free(ps[i]);
}

static void test_session_list(void **state)
{
	struct fake *f = *state;
	char long_dir[5000];
	struct lp_session *s = NULL;
	struct lp_conn *c;
	LpResponse empty = LP_RESPONSE__INIT;
	size_t n = 0;

	memset(long_dir, 'd', sizeof(long_dir) - 1);
	long_dir[0] = '/';
	long_dir[sizeof(long_dir) - 1] = '\0';
	add_two_sessions(f, long_dir);
	empty.version = 1;
	add_reply(f, &empty);	/* STATS for session 5: none */
	add_reply(f, &empty);	/* STATS for all: none */

	c = fake_connect(f);
	assert_int_equal(lp_session_list(c, 0, &s, &n), 0);
	assert_int_equal(n, 2);

	assert_int_equal(s[0].id, 3);
	assert_int_equal(s[0].state, LP_SERVING);
	assert_string_equal(s[0].kind, "criu-but-far-to");	/* 15 bytes kept */
	assert_int_equal(strlen(s[0].images_dir), sizeof(s[0].images_dir) - 1);
	assert_memory_equal(s[0].images_dir, long_dir, sizeof(s[0].images_dir) - 1);
	assert_string_equal(s[0].work_dir, "/work");
	assert_string_equal(s[0].socket_path, "/work/lazy-pages.socket");
	assert_string_equal(s[0].page_server, "10.0.0.1:12345");
	assert_int_equal(s[0].pages_copied, 755);
	assert_int_equal(s[0].zero_pages, 5);
	assert_int_equal(s[0].faults, 20);
	assert_true(s[0].fault_p50_us == 12.5);
	assert_true(s[0].fault_p99_us == 88.5);
	assert_true(s[0].seconds == 0.75);
	assert_int_equal(s[0].remote_bytes, 3092480);
	assert_int_equal(s[0].remote_inflight, 2);
	assert_true(s[0].fault_rtt_p50_us == 150);
	assert_true(s[0].fault_rtt_p99_us == 900.25);
	assert_string_equal(s[0].summary, "755 pages");
	assert_string_equal(s[0].error, "");
	assert_int_equal(s[0].nprocs, 3);
	assert_int_equal(s[0].procs[0].pid, 100);
	assert_int_equal(s[0].procs[0].total_pages, 1000);
	assert_int_equal(s[0].procs[0].remaining_pages, 250);
	assert_int_equal(s[0].procs[0].faults, 17);
	assert_true(s[0].procs[0].fault_p99_us == 88.5);
	assert_int_equal(s[0].procs[0].state, 0);
	assert_int_equal(s[0].procs[0].forked, 0);
	assert_int_equal(s[0].procs[1].state, 1);
	assert_int_equal(s[0].procs[1].forked, 1);
	assert_int_equal(s[0].procs[2].pid, 102);
	assert_int_equal(s[0].procs[2].state, 2);
	assert_true(s[0].procs[2].fault_p99_us == 0);

	assert_int_equal(s[1].id, 4);
	assert_int_equal(s[1].state, LP_FAILED);
	assert_string_equal(s[1].kind, "");
	assert_string_equal(s[1].images_dir, "");
	assert_string_equal(s[1].socket_path, "");
	assert_int_equal(s[1].pages_copied, 0);
	assert_true(s[1].seconds == 0);
	assert_string_equal(s[1].error, "images: no pstree.img");
	assert_int_equal(s[1].nprocs, 0);
	lp_sessions_free(s, n);

	s = NULL;
	n = 12345;
	assert_int_equal(lp_session_list(c, 5, &s, &n), -ENOENT);
	assert_null(s);
	assert_int_equal(n, 12345);
	assert_int_equal(lp_stats(c, 0, &s, &n), 0);
	assert_int_equal(n, 0);
	lp_sessions_free(s, n);
	lp_sessions_free(NULL, 0);
	lp_close(c);
	fake_join(f);

	assert_int_equal(f->nreq, 3);
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_SESSION_LIST);
	assert_false(f->req[0]->has_session);
	assert_int_equal(f->req[1]->op, LP_OP__LP_OP_STATS);
	assert_true(f->req[1]->has_session);
	assert_int_equal(f->req[1]->session, 5);
	assert_int_equal(f->req[2]->op, LP_OP__LP_OP_STATS);
	assert_false(f->req[2]->has_session);
}

/* ---- hand-off ---- */

static void test_handoff(void **state)
{
	struct fake *f = *state;
	long pg = sysconf(_SC_PAGESIZE);
	struct lp_region regions[2] = { { 0x7f0000000000ull, 4 * (uint64_t)pg, 0 },
					{ 0x7f0000100000ull, 2 * (uint64_t)pg, 8 * (uint64_t)pg } };
	LpResponse r = LP_RESPONSE__INIT;
	struct stat pst, mst;
	struct lp_conn *c;
	LpHandoff *h;
	uint32_t id = 0;
	int p[2], mem;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	mem = memfd_create("test-client", MFD_CLOEXEC);
	assert_true(mem >= 0);
	assert_int_equal(ftruncate(mem, 16 * pg), 0);
	assert_int_equal(fstat(p[0], &pst), 0);
	assert_int_equal(fstat(mem, &mst), 0);
	r.version = 1;
	r.has_session = true;
	r.session = 11;
	add_reply(f, &r);
	add_status(f, "after the hand-off");

	c = fake_connect(f);
	/* the pipe stands in for the userfaultfd: the library passes it, the daemon checks it */
	assert_int_equal(lp_handoff(c, p[0], mem, regions, 2, 1234, "vm-guest", &id), 0);
	assert_int_equal(id, 11);
	{
		struct lp_status st;

		/* no fds ride on the next request */
		assert_int_equal(lp_status(c, &st), 0);
	}
	lp_close(c);
	fake_join(f);

	/* the caller's copies stay open */
	assert_true(fcntl(p[0], F_GETFD) >= 0);
	assert_true(fcntl(mem, F_GETFD) >= 0);

	assert_int_equal(f->nreq, 2);
	assert_int_equal(f->nfds[0], 2);
	assert_int_equal(f->nfds[1], 0);
	assert_int_equal(f->later_fds, 0);
	assert_int_equal(f->st[0][0].st_ino, pst.st_ino);
	assert_int_equal(f->st[0][0].st_dev, pst.st_dev);
	assert_true(S_ISFIFO(f->st[0][0].st_mode));
	assert_int_equal(f->st[0][1].st_ino, mst.st_ino);
	assert_int_equal(f->st[0][1].st_dev, mst.st_dev);
	assert_int_equal(f->st[0][1].st_size, 16 * pg);

	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_HANDOFF);
	h = f->req[0]->handoff;
	assert_non_null(h);
	assert_true(h->has_pid);
	assert_int_equal(h->pid, 1234);
	assert_string_equal(h->name, "vm-guest");
	assert_int_equal(h->n_regions, 2);
	assert_int_equal(h->regions[0]->addr, regions[0].addr);
	assert_int_equal(h->regions[0]->len, regions[0].len);
	assert_int_equal(h->regions[0]->offset, 0);
	assert_int_equal(h->regions[1]->addr, regions[1].addr);
	assert_int_equal(h->regions[1]->len, regions[1].len);
	assert_int_equal(h->regions[1]->offset, regions[1].offset);
	close(p[0]);
	close(p[1]);
	close(mem);
}

static void test_handoff_invalid(void **state)
{
	struct fake *f = *state;
	long pg = sysconf(_SC_PAGESIZE);
	struct lp_region ok = { 0x10000000, (uint64_t)pg, 0 };
	struct lp_region bad[] = {
		{ 0x10000000 + 8, (uint64_t)pg, 0 },		/* addr */
		{ 0x10000000, (uint64_t)pg + 1, 0 },		/* len */
		{ 0x10000000, (uint64_t)pg, 100 },		/* offset */
		{ 0x10000000, 0, 0 },				/* empty */
		{ UINT64_MAX - (uint64_t)pg + 1, 2 * (uint64_t)pg, 0 },	/* wraps */
	};
	struct lp_region *many;
	struct lp_conn *c;
	uint32_t id = 5;
	size_t i, nmany = 200000;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	c = fake_connect(f);
	assert_int_equal(lp_handoff(c, -1, p[0], &ok, 1, 0, NULL, &id), -EBADF);
	assert_int_equal(lp_handoff(c, p[0], 1000, &ok, 1, 0, NULL, &id), -EBADF);
	assert_int_equal(lp_handoff(c, p[0], p[1], &ok, 0, 0, NULL, &id), -EINVAL);
	for (i = 0; i < N(bad); i++) {
		if (lp_handoff(c, p[0], p[1], &bad[i], 1, 0, NULL, &id) != -EINVAL)
			fail_msg("bad region %zu accepted", i);
	}
	/* too many regions for a frame, by count, then by packed size */
	many = calloc(nmany, sizeof(*many));
	assert_non_null(many);
	for (i = 0; i < nmany; i++)
		many[i] = (struct lp_region){ 0x7f0000000000ull + i * 2 * (uint64_t)pg, (uint64_t)pg,
					      0x100000000ull + i * (uint64_t)pg };
	assert_int_equal(lp_handoff(c, p[0], p[1], many, nmany, 0, NULL, &id), -EMSGSIZE);
	assert_int_equal(lp_handoff(c, p[0], p[1], many, 100000, 0, NULL, &id), -EMSGSIZE);
	free(many);
	assert_int_equal(id, 5);
	lp_close(c);
	fake_join(f);
	assert_int_equal(f->nreq, 0);
	close(p[0]);
	close(p[1]);
}

/* ---- lazy-pagesctl against the fake ---- */

struct run {
	int status;		/* exit status, or 128 + signal */
	char out[8192], err[4096];
};

static void slurp(const char *path, char *buf, size_t size)
{
	FILE *fp = fopen(path, "r");
	size_t n = 0;

	if (fp) {
		n = fread(buf, 1, size - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
}

/* Runs lazy-pagesctl with ARGV (NULL-terminated, without argv[0]) in DIR; output in R. */
static void run_cli(struct fake *f, const char *dir, const char *const *argv, struct run *r)
{
	char out[160], err[160];
	const char *args[32] = { cli };
	int i, st;
	pid_t pid;

	for (i = 0; argv[i] && i < 30; i++)
		args[i + 1] = argv[i];
	snprintf(out, sizeof(out), "%s/cli.out", f->dir);
	snprintf(err, sizeof(err), "%s/cli.err", f->dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0 || (dir && chdir(dir)))
			_exit(127);
		unsetenv(LP_CONTROL_ENV);
		execv(cli, (char *const *)args);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	slurp(out, r->out, sizeof(r->out));
	slurp(err, r->err, sizeof(r->err));
}

static void test_cli_usage(void **state)
{
	struct fake *f = *state;
	static const struct {
		const char *argv[14];
		const char *says;
	} cases[] = {
		{ { NULL }, "usage:" },
		{ { "frob", NULL }, "unknown command 'frob'" },
		{ { "-x", "status", NULL }, "unknown option '-x'" },
		{ { "status", "--bogus", NULL }, "unknown option '--bogus'" },
		{ { "status", "extra", NULL }, "unexpected argument 'extra'" },
		{ { "session", NULL }, "add, rm or list" },
		{ { "session", "frob", NULL }, "unknown subcommand 'frob'" },
		{ { "session", "add", NULL }, "-D DIR" },
		{ { "session", "add", "-D", NULL }, "option '-D' needs an argument" },
		{ { "session", "add", "-D", "/x", "--port", "99999", NULL }, "--port: '99999'" },
		{ { "session", "add", "-D", "/x", "--page-server", "--port", "1", NULL }, "--address" },
		{ { "session", "add", "-D", "/x", "--page-server", "--address", "h", NULL }, "--port P" },
		{ { "session", "add", "-D", "/x", "--address", "h", NULL }, "--address is only for --page-server" },
		{ { "session", "add", "-D", "/x", "--page-server", "--address", "h", "--port", "1", "--ps-wire", "5",
		    NULL },
		  "--ps-wire: '5'" },
		{ { "session", "add", "-D", "/x", "--prefetch-threads", "0", NULL }, "--prefetch-threads: '0'" },
		{ { "session", "rm", NULL }, "ID is missing" },
		{ { "session", "rm", "abc", NULL }, "ID: 'abc'" },
		{ { "session", "rm", "-3", NULL }, "unknown option '-3'" },
		{ { "stats", "1", "2", NULL }, "unexpected argument '2'" },
		{ { "watch", "--count", NULL }, "option '--count' needs an argument" },
		{ { "watch", "--interval", "5", NULL }, "--interval: '5'" },
	};
	struct run *r = malloc(sizeof(*r));
	size_t i;

	assert_non_null(r);
	for (i = 0; i < N(cases); i++) {
		const char *argv[18] = { "-s", f->path };

		memcpy(argv + 2, cases[i].argv, sizeof(cases[i].argv));
		run_cli(f, NULL, argv, r);
		if (r->status != 2 || !strstr(r->err, cases[i].says))
			fail_msg("case %zu (%s): exit %d, stderr: %s", i, cases[i].says, r->status, r->err);
		assert_string_equal(r->out, "");
	}
	free(r);
	/* no connection was made */
	assert_false(f->started);
}

static void test_cli_connect_fail(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", "/nonexistent/ctl.sock", "status", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	run_cli(f, NULL, argv, r);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "/nonexistent/ctl.sock"));
	assert_non_null(strstr(r->err, strerror(ENOENT)));
	free(r);
}

static void test_cli_status(void **state)
{
	struct fake *f = *state;
	const char *json[] = { "-s", f->path, "status", "--json", NULL };
	const char *plain[] = { "-s", f->path, "status", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	add_status(f, "serving 1 \"session\"\n\x01\xff");
	fake_start(f);
	run_cli(f, NULL, json, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	assert_string_equal(r->out, "{\"pid\":42,\"uptime_s\":1.5,\"sessions_active\":1,\"sessions_total\":3,"
				    "\"stopping\":false,\"line\":\"serving 1 \\\"session\\\"\\n\\u0001\\ufffd\"}\n");

	fake_reset(f);
	add_status(f, "ready");
	fake_start(f);
	run_cli(f, NULL, plain, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	assert_non_null(strstr(r->out, "pid 42"));
	assert_non_null(strstr(r->out, "1 active, 3 since start"));
	assert_non_null(strstr(r->out, "status: ready"));
	free(r);
}

static void test_cli_daemon_error(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "session", "rm", "7", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	add_error(f, -EBUSY, "session 7 is serving: it can be removed once done");
	fake_start(f);
	run_cli(f, NULL, argv, r);
	fake_join(f);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "session 7 is serving: it can be removed once done"));
	assert_int_equal(f->req[0]->session, 7);
	free(r);
}

static void test_cli_session_add(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "session", "add", "-D", ".", "--page-server", "--address", "h",
			       "--port", "7000", "--ps-wire", "3", "--prefetch-threads", "2", NULL };
	const char *argv_json[] = { "-s", f->path, "session", "add", "-D", ".", "--json", NULL };
	LpResponse r = LP_RESPONSE__INIT;
	LpSessionInfo si = LP_SESSION_INFO__INIT, *sp = &si;
	struct run *run = malloc(sizeof(*run));
	char real[PATH_MAX];

	assert_non_null(run);
	assert_non_null(realpath(f->dir, real));
	r.version = 1;
	r.has_session = true;
	r.session = 3;
	add_reply(f, &r);
	r.has_session = false;
	si.id = 3;
	si.state = LP_SESSION_STATE__LP_SESSION_LISTENING;
	si.socket_path = "/imgs/lazy-pages.socket";
	r.n_sessions = 1;
	r.sessions = &sp;
	add_reply(f, &r);
	fake_start(f);
	run_cli(f, f->dir, argv, run);
	fake_join(f);
	assert_int_equal(run->status, 0);
	assert_string_equal(run->out, "session 3: /imgs/lazy-pages.socket\n");
	assert_int_equal(f->nreq, 2);
	/* a relative -D goes to the daemon absolute */
	assert_string_equal(f->req[0]->add->images_dir, real);
	assert_null(f->req[0]->add->work_dir);
	assert_string_equal(f->req[0]->add->ps_address, "h");
	assert_int_equal(f->req[0]->add->ps_port, 7000);
	assert_int_equal(f->req[0]->add->ps_wire, 3);
	assert_int_equal(f->req[0]->add->prefetch_threads, 2);
	assert_int_equal(f->req[1]->op, LP_OP__LP_OP_STATS);
	assert_int_equal(f->req[1]->session, 3);

	/* a daemon that does not say the socket: DIR/lazy-pages.socket */
	fake_reset(f);
	r.has_session = true;
	r.n_sessions = 0;
	add_reply(f, &r);
	r.has_session = false;
	add_reply(f, &r);
	fake_start(f);
	run_cli(f, f->dir, argv_json, run);
	fake_join(f);
	assert_int_equal(run->status, 0);
	{
		char want[PATH_MAX + 64];

		snprintf(want, sizeof(want), "{\"id\":3,\"socket\":\"%s/lazy-pages.socket\"}\n", real);
		assert_string_equal(run->out, want);
	}
	free(run);
}

static void test_cli_list_json(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "session", "list", "--json", NULL };
	const char *plain[] = { "-s", f->path, "stats", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	add_two_sessions(f, "/imgs");
	fake_start(f);
	run_cli(f, NULL, argv, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	assert_string_equal(
		r->out,
		"{\"sessions\":[{\"id\":3,\"state\":\"serving\",\"kind\":\"criu-but-far-to\",\"images_dir\":\"/imgs\","
		"\"work_dir\":\"/work\",\"socket\":\"/work/lazy-pages.socket\",\"page_server\":\"10.0.0.1:12345\","
		"\"pages_copied\":755,\"zero_pages\":5,\"faults\":20,\"fault_p50_us\":12.5,\"fault_p99_us\":88.5,"
		"\"seconds\":0.75,\"remote_bytes\":3092480,\"remote_inflight\":2,\"fault_rtt_p50_us\":150,"
		"\"fault_rtt_p99_us\":900.25,\"summary\":\"755 pages\",\"error\":\"\",\"procs\":["
		"{\"pid\":100,\"state\":\"live\",\"forked\":false,\"total_pages\":1000,\"remaining_pages\":250,"
		"\"faults\":17,\"fault_p99_us\":88.5},"
		"{\"pid\":101,\"state\":\"complete\",\"forked\":true,\"total_pages\":10,\"remaining_pages\":0,"
		"\"faults\":3,\"fault_p99_us\":0},"
		"{\"pid\":102,\"state\":\"gone\",\"forked\":false,\"total_pages\":5,\"remaining_pages\":5,"
		"\"faults\":0,\"fault_p99_us\":0}]},"
		"{\"id\":4,\"state\":\"failed\",\"kind\":\"\",\"images_dir\":\"\",\"work_dir\":\"\",\"socket\":\"\","
		"\"page_server\":\"\",\"pages_copied\":0,\"zero_pages\":0,\"faults\":0,\"fault_p50_us\":0,"
		"\"fault_p99_us\":0,\"seconds\":0,\"remote_bytes\":0,\"remote_inflight\":0,\"fault_rtt_p50_us\":0,"
		"\"fault_rtt_p99_us\":0,\"summary\":\"\",\"error\":\"images: no pstree.img\",\"procs\":[]}]}\n");
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_SESSION_LIST);

	/* stats in words: every process, figures and the error */
	fake_reset(f);
	add_two_sessions(f, "/imgs");
	fake_start(f);
	run_cli(f, NULL, plain, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	assert_non_null(strstr(r->out, "session 3: serving"));
	assert_non_null(strstr(r->out, "750/1000 pages filled (75.0%), 17 faults, p99 88.5 us"));
	assert_non_null(strstr(r->out, "page server 10.0.0.1:12345: 2.9 MiB"));
	assert_non_null(strstr(r->out, "forked"));
	assert_non_null(strstr(r->out, "error: images: no pstree.img"));
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_STATS);
	assert_false(f->req[0]->has_session);
	free(r);
}

/* Two STATS answers for session 3, its process at FAULTS[i] faults and REMAINING[i] pages to go. */
static void add_watch_frame(struct fake *f, LpSessionState state, uint64_t faults, uint64_t remaining)
{
	LpResponse r = LP_RESPONSE__INIT;
	LpSessionInfo si = LP_SESSION_INFO__INIT, *sp = &si;
	LpProcInfo *p = proc_info(200, 400, remaining, faults, remaining ? 0 : 1);

	si.id = 3;
	si.state = state;
	si.images_dir = "/imgs";
	si.n_procs = 1;
	si.procs = &p;
	r.version = 1;
	r.n_sessions = 1;
	r.sessions = &sp;
	add_reply(f, &r);
	free(p);
}

static void test_cli_watch(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "watch", "3", "--interval", "20", "--count", "2", NULL };
	struct run *r = malloc(sizeof(*r));
	char *second;

	assert_non_null(r);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_SERVING, 10, 300);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_SERVING, 60, 100);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_SERVING, 90, 50);
	fake_start(f);
	run_cli(f, NULL, argv, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	/* --count 2: two requests, the third reply never asked for */
	assert_int_equal(f->nreq, 2);
	assert_int_equal(f->req[0]->op, LP_OP__LP_OP_STATS);
	assert_int_equal(f->req[0]->session, 3);
	/* not a tty: plain frames, a blank line between them */
	assert_null(strchr(r->out, '\033'));
	second = strstr(r->out, "\n\n");
	assert_non_null(second);
	assert_null(strstr(second + 2, "\n\n"));
	assert_non_null(strstr(r->out, "[########......................]  25.0%  100/400 pages  - faults/s"));
	assert_non_null(strstr(second, "[#######################.......]  75.0%  300/400 pages"));
	/* 50 faults in about 20 ms: a rate, not "-" */
	assert_null(strstr(second, "- faults/s"));
	free(r);
}

/* Without --count, watch stops once every session is done or failed. */
static void test_cli_watch_done(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "watch", "--interval", "10", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_SERVING, 10, 300);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_DONE, 20, 0);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_DONE, 20, 0);
	fake_start(f);
	run_cli(f, NULL, argv, r);
	fake_join(f);
	assert_int_equal(r->status, 0);
	assert_int_equal(f->nreq, 2);
	assert_false(f->req[0]->has_session);
	assert_non_null(strstr(r->out, "session 3 done"));
	assert_non_null(strstr(r->out, "100.0%"));
	free(r);
}

/* The daemon going away in the middle of watch: its words, exit 1. */
static void test_cli_watch_gone(void **state)
{
	struct fake *f = *state;
	const char *argv[] = { "-s", f->path, "watch", "--interval", "10", NULL };
	struct run *r = malloc(sizeof(*r));

	assert_non_null(r);
	add_watch_frame(f, LP_SESSION_STATE__LP_SESSION_SERVING, 10, 300);
	f->reply[0].hangup = true;
	fake_start(f);
	run_cli(f, NULL, argv, r);
	fake_join(f);
	assert_int_equal(r->status, 1);
	if (!strstr(r->err, "watch: the daemon closed the connection"))
		fail_msg("stderr: %s", r->err);
	free(r);
}

#define T(f) cmocka_unit_test_setup_teardown(f, case_setup, case_teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(test_status),
		T(test_trickle),
		T(test_error_reply),
		T(test_oversize),
		T(test_max_frame),
		T(test_truncated),
		T(test_truncated_header),
		T(test_no_reply),
		T(test_peer_gone),
		T(test_garbage),
		T(test_version),
		T(test_missing_parts),
		T(test_connect),
		T(test_session_add),
		T(test_session_add_invalid),
		T(test_session_list),
		T(test_handoff),
		T(test_handoff_invalid),
		T(test_cli_usage),
		T(test_cli_connect_fail),
		T(test_cli_status),
		T(test_cli_daemon_error),
		T(test_cli_session_add),
		T(test_cli_list_json),
		T(test_cli_watch),
		T(test_cli_watch_done),
		T(test_cli_watch_gone),
	};
	char self[PATH_MAX], rel[PATH_MAX + 32];

	(void)argc;
	snprintf(self, sizeof(self), "%s", argv[0]);
	snprintf(rel, sizeof(rel), "%s/../lazy-pagesctl", dirname(self));
	/* absolute: some cases run it from another directory */
	if (!realpath(rel, cli)) {
		fprintf(stderr, "test-client: %s: %s\n", rel, strerror(errno));
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
