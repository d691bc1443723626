/* SPDX-License-Identifier: MIT */
/* test-server: the real lazy-pages-server binary driven over TCP as CRIU's and lazy-pagesd's clients drive it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "imgtest.h"
#include "io.h"
#include "ps_wire.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define TIMEOUT_S 20

/* the image dir made by group_setup */
#define PID 10		/* alive, pages-1.img tag 1 */
#define ZOMBIE 11	/* dead, with a valid pagemap */
#define BROKEN 12	/* alive, pagemap missing */
#define CHILD 13	/* alive, PE_PARENT pages in parent/ */
#define TAG 1
#define A_RUN 0x10000	/* 4 LAZY|PRESENT + 2 PRESENT: data pages 0..5 */
#define A_HOLE 0x16000	/* 2 pages no entry covers */
#define A_SHORT 0x18000	/* 3 LAZY|PRESENT: data pages 6..8, then a hole */
#define A_LAZY 0x20000	/* 2 PE_LAZY-only pages */
#define A_BIG 0x40000	/* 64 LAZY|PRESENT: data pages 9..72 */

static uint64_t ps;
static char *dir;		/* images */
static char *server_bin;
static char *tests_dir;		/* where this test and lp-dump live */
static char *run_dir;		/* the servers' logs, port and pid files */
static int nr_spawned;
/* servers a failed case may leave running, killed by case_teardown */
static pid_t live[8];
static pid_t daemon_pid;

struct srv {
	pid_t pid;
	int port;
	int wire;
	char log[PATH_MAX];
};

/* ---- the image dir ---- */

static void make_images(const char *d)
{
	static uint32_t th[4][1] = { { PID }, { ZOMBIE }, { BROKEN }, { CHILD } };
	struct pstree_ent pst[4];
	const struct it_pme pm10[] = {
		IT_PE(A_RUN, 4, PE_LAZY | PE_PRESENT),
		IT_PE(A_RUN + 4 * ps, 2, PE_PRESENT),
		IT_PE(A_SHORT, 3, PE_LAZY | PE_PRESENT),
		IT_PE(A_LAZY, 2, PE_LAZY),
		IT_PE(A_BIG, 64, PE_LAZY | PE_PRESENT),
	};
	const struct it_pme pm13[] = {
		IT_PE(A_RUN, 4, PE_PARENT),
		IT_PE(A_RUN + 4 * ps, 2, PE_LAZY | PE_PRESENT),
	};
	const struct it_pme pm13p[] = { IT_PE(A_RUN, 4, PE_LAZY | PE_PRESENT) };
	char *par;

	for (size_t i = 0; i < N(pst); i++)
		pst[i] = (struct pstree_ent){ .pid = th[i][0], .pgid = PID, .sid = PID,
					      .ppid = i ? PID : 0, .nr_threads = 1,
					      .threads = th[i] };
	it_inventory(d, 2, true, true);
	it_pstree(d, 2, pst, N(pst));
	it_core(d, PID, TASK_ALIVE);
	it_core(d, ZOMBIE, TASK_DEAD);
	it_core(d, BROKEN, TASK_ALIVE);
	it_core(d, CHILD, TASK_STOPPED);
	it_pagemap(d, PID, 1, pm10, N(pm10));
	it_pages(d, 1, 73, TAG);
	it_pagemap(d, ZOMBIE, 1, pm10, N(pm10));
	it_pagemap(d, CHILD, 2, pm13, N(pm13));
	it_pages(d, 2, 2, 2);
	par = it_subdir(d, "p0");
	it_inventory(par, 2, true, true);
	it_pagemap(par, CHILD, 3, pm13p, N(pm13p));
	it_pages(par, 3, 4, 3);
	it_parent_link(d, "p0");
	free(par);
}

static int group_setup(void **state)
{
	char self[PATH_MAX];
	ssize_t n;

	(void)state;
	ps = pagemap_page_size();
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	tests_dir = strdup(dirname(self));
	/* build/tests/test-server -> build/lazy-pages-server; LP_SERVER for a sanitizer build */
	if (getenv("LP_SERVER"))
		server_bin = strdup(getenv("LP_SERVER"));
	else if (asprintf(&server_bin, "%s/../lazy-pages-server", tests_dir) < 0)
		return -1;
	if (access(server_bin, X_OK)) {
		fprintf(stderr, "test-server: %s: %s\n", server_bin, strerror(errno));
		return -1;
	}
	dir = it_tmpdir();
	run_dir = it_tmpdir();
	make_images(dir);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	it_rmrf(dir);
	it_rmrf(run_dir);
	free(run_dir);
	free(tests_dir);
	free(dir);
	free(server_bin);
	return 0;
}

static int case_setup(void **state)
{
	(void)state;
	alarm(TIMEOUT_S);	/* a hang fails the run instead of blocking it */
	return 0;
}

static void live_add(pid_t pid)
{
	for (size_t i = 0; i < N(live); i++) {
		if (!live[i]) {
			live[i] = pid;
			return;
		}
	}
	fail_msg("too many servers at once");
}

static void live_del(pid_t pid)
{
	for (size_t i = 0; i < N(live); i++)
		if (live[i] == pid)
			live[i] = 0;
}

static int case_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(live); i++) {
		if (live[i]) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
	}
	if (daemon_pid)
		kill(daemon_pid, SIGKILL);
	daemon_pid = 0;
	alarm(0);
	return 0;
}

/* ---- the server process ---- */

static char *read_text(const char *path)
{
	static char buf[1 << 16];
	ssize_t n = 0;
	int fd = open(path, O_RDONLY);

	buf[0] = 0;
	if (fd < 0)
		return buf;
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
	return buf;
}

static void assert_log_has(const struct srv *s, const char *needle)
{
	const char *log = read_text(s->log);

	if (!strstr(log, needle))
		fail_msg("server log lacks \"%s\":\n%s", needle, log);
}

/* Runs the server on DIR with EXTRA options; returns its exit status, or -1 once listening. */
static int srv_spawn(struct srv *s, const char *d, int wire, const char *const *extra)
{
	char portfile[PATH_MAX], fdarg[16], wirearg[4];
	const char *argv[32];
	int p[2], argc = 0, st;
	char c;
	ssize_t r;

	memset(s, 0, sizeof(*s));
	s->wire = wire;
	nr_spawned++;
	snprintf(s->log, sizeof(s->log), "%s/%d.log", run_dir, nr_spawned);
	snprintf(portfile, sizeof(portfile), "%s/%d.port", run_dir, nr_spawned);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	snprintf(fdarg, sizeof(fdarg), "%d", 100);
	snprintf(wirearg, sizeof(wirearg), "%d", wire);
	argv[argc++] = server_bin;
	argv[argc++] = "-D";
	argv[argc++] = d;
	argv[argc++] = "--address";
	argv[argc++] = "127.0.0.1";
	argv[argc++] = "--port";
	argv[argc++] = "0";
	argv[argc++] = "--port-file";
	argv[argc++] = portfile;
	argv[argc++] = "--status-fd";
	argv[argc++] = fdarg;
	argv[argc++] = "--ps-wire";
	argv[argc++] = wirearg;
	argv[argc++] = "-o";
	argv[argc++] = s->log;
	argv[argc++] = "-v4";
	for (; extra && *extra; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;

	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		int lfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		/* early errors land in the log too; stdout must not hold the runner's pipe */
		if (lfd >= 0) {
			dup2(lfd, STDOUT_FILENO);
			dup2(lfd, STDERR_FILENO);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[1], 100);
		alarm(0);
		execv(server_bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	live_add(s->pid);
	do
		r = read(p[0], &c, 1);
	while (r < 0 && errno == EINTR);
	close(p[0]);
	if (r != 1) {
		/* it exited before listening */
		assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
		live_del(s->pid);
		s->pid = 0;
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	assert_int_equal(c, 0);
	s->port = atoi(read_text(portfile));
	assert_true(s->port > 0 && s->port < 65536);
	return -1;
}

static void srv_start(struct srv *s, int wire, const char *const *extra)
{
	if (srv_spawn(s, dir, wire, extra) != -1)
		fail_msg("server did not start:\n%s", read_text(s->log));
}

/* SIGTERM must stop it cleanly with status 0, whatever its clients are doing. */
static void srv_stop(struct srv *s)
{
	int st;

	assert_int_equal(kill(s->pid, SIGTERM), 0);
	assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
	live_del(s->pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("server exit status 0x%x:\n%s", st, read_text(s->log));
	s->pid = 0;
}

/* ---- a client ---- */

static int cl_connect(const struct srv *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

static size_t cl_iov(int wire, uint32_t cmd, uint32_t pad, uint64_t n, uint64_t va, uint64_t id,
		     uint8_t *buf)
{
	struct ps_iov iov = { .cmd = cmd, .pad = pad, .nr_pages = n, .vaddr = va, .dst_id = id };

	assert_int_equal(ps_iov_encode(wire, &iov, buf), 0);
	return ps_iov_size(wire);
}

static void cl_write(int fd, const void *buf, size_t n)
{
	assert_int_equal(io_write_full(fd, buf, n), 0);
}

static void cl_send(int fd, int wire, uint32_t cmd, uint32_t pad, uint64_t n, uint64_t va,
		    uint64_t id)
{
	uint8_t buf[PS_IOV_MAX];

	cl_write(fd, buf, cl_iov(wire, cmd, pad, n, va, id, buf));
}

/* reads exactly N bytes or fails the test */
static void cl_read(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail_msg("read %zu of %zu bytes: %s", got, n, r ? strerror(errno) : "EOF");
		got += (size_t)r;
	}
}

static void cl_recv_iov(int fd, int wire, struct ps_iov *iov)
{
	uint8_t buf[PS_IOV_MAX];

	cl_read(fd, buf, ps_iov_size(wire));
	ps_iov_decode(wire, buf, iov);
}

/* the server closed the connection, with nothing more sent */
static void cl_expect_eof(int fd)
{
	char c;
	ssize_t r;

	do
		r = read(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	if (r != 0 && !(r < 0 && errno == ECONNRESET))
		fail_msg("expected EOF, got %zd (%s)", r, r < 0 ? strerror(errno) : "data");
}

/* bytes of NR pages at VA of PID in DIR, through the image reader */
static void *expected(const char *d, uint32_t pid, uint64_t va, uint64_t nr)
{
	struct lp_err e = { 0 };
	struct imgdir *id = NULL;
	struct pagemap *pm = NULL;
	void *buf = malloc(nr * ps);

	assert_non_null(buf);
	if (imgdir_open(d, &id, &e) || pagemap_open(id, pid, &pm, &e) ||
	    pagemap_read(pm, va, nr, buf, &e))
		fail_msg("reading the images: %s", e.msg);
	pagemap_close(pm);
	imgdir_close(id);
	return buf;
}

/* One GET answered with M pages equal to the images; PAD checks the 4.2 echo. */
static void get_ok(const struct srv *s, int fd, uint32_t pid, uint64_t va, uint64_t n,
		   uint64_t m, uint32_t pad)
{
	struct ps_iov r;
	void *got, *want;

	cl_send(fd, s->wire, PS_IOV_GET, pad, n, va, pid);
	cl_recv_iov(fd, s->wire, &r);
	assert_int_equal(r.cmd, PS_GET_REPLY_CMD);
	assert_int_equal(r.cmd, 0x00040006);
	assert_int_equal(r.vaddr, va);
	assert_int_equal(r.dst_id, pid);
	assert_int_equal(r.pad, s->wire == PS_WIRE_4 ? pad : 0);
	assert_int_equal(r.nr_pages, m);
	got = malloc(m * ps);
	assert_non_null(got);
	cl_read(fd, got, m * ps);
	want = expected(dir, pid, va, m);
	assert_memory_equal(got, want, m * ps);
	free(got);
	free(want);
}

static void get_missing(const struct srv *s, int fd, uint64_t id, uint64_t va, uint64_t n)
{
	struct ps_iov r;

	cl_send(fd, s->wire, PS_IOV_GET, 0x5a5a5a5a, n, va, id);
	cl_recv_iov(fd, s->wire, &r);
	assert_int_equal(r.cmd, PS_GET_REPLY_CMD);
	assert_int_equal(r.nr_pages, 0);
	assert_int_equal(r.vaddr, va);
	assert_int_equal(r.dst_id, id);
}

/* ---- cases ---- */

static void get_one_wire(int wire)
{
	struct srv s;
	int fd;

	srv_start(&s, wire, NULL);
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_RUN, 1, 1, 0xdeadbeef);
	get_ok(&s, fd, PID, A_RUN + ps, 2, 2, 0);
	get_ok(&s, fd, PID, A_BIG + 10 * ps, 1, 1, 0x1);
	/* the same page again: the server keeps serving what it has served */
	get_ok(&s, fd, PID, A_RUN, 1, 1, 0xdeadbeef);
	close(fd);
	srv_stop(&s);
}

static void test_get_v4(void **state)
{
	(void)state;
	get_one_wire(PS_WIRE_4);
}

static void test_get_v3(void **state)
{
	(void)state;
	get_one_wire(PS_WIRE_3);
}

/* the bytes themselves, against the pattern it_pages wrote (not only against the reader) */
static void test_get_bytes(void **state)
{
	uint8_t *buf = malloc(3 * ps);
	struct ps_iov r;
	struct srv s;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	fd = cl_connect(&s);
	cl_send(fd, s.wire, PS_IOV_GET, 0, 3, A_SHORT, PID);
	cl_recv_iov(fd, s.wire, &r);
	assert_int_equal(r.nr_pages, 3);
	cl_read(fd, buf, 3 * ps);
	for (int k = 0; k < 3; k++)
		assert_true(it_page_is(buf + k * ps, TAG, 6 + k));
	close(fd);
	srv_stop(&s);
	free(buf);
}

/* m < n: the reply stops at the end of the stored run holding vaddr */
static void test_get_short_run(void **state)
{
	struct srv s;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_RUN, 100, 6, 7);			/* LAZY|PRESENT then PRESENT */
	get_ok(&s, fd, PID, A_RUN + 2 * ps, 100, 4, 7);
	get_ok(&s, fd, PID, A_SHORT + ps, 8, 2, 7);		/* then a hole */
	get_ok(&s, fd, PID, A_BIG, 1000, 64, 7);
	get_ok(&s, fd, PID, A_BIG, 5, 5, 7);			/* capped at n */
	close(fd);
	srv_stop(&s);
}

/* 50 headers in one write, then 50 replies in order */
static void pipelined(int wire)
{
	uint8_t req[50 * PS_IOV_MAX], *got = malloc(3 * ps), *want;
	size_t len = 0;
	struct ps_iov r;
	struct srv s;
	int fd, i;

	srv_start(&s, wire, NULL);
	fd = cl_connect(&s);
	for (i = 0; i < 50; i++)
		len += cl_iov(wire, PS_IOV_GET, (uint32_t)i, 1 + i % 3, A_BIG + (uint64_t)i * ps,
			      PID, req + len);
	cl_write(fd, req, len);
	for (i = 0; i < 50; i++) {
		uint64_t m = 1 + i % 3;

		cl_recv_iov(fd, wire, &r);
		assert_int_equal(r.cmd, PS_GET_REPLY_CMD);
		assert_int_equal(r.vaddr, A_BIG + (uint64_t)i * ps);
		assert_int_equal(r.pad, wire == PS_WIRE_4 ? (uint32_t)i : 0);
		assert_int_equal(r.nr_pages, m);
		cl_read(fd, got, m * ps);
		want = expected(dir, PID, r.vaddr, m);
		assert_memory_equal(got, want, m * ps);
		free(want);
	}
	close(fd);
	srv_stop(&s);
	free(got);
}

static void test_pipelined_v4(void **state)
{
	(void)state;
	pipelined(PS_WIRE_4);
}

static void test_pipelined_v3(void **state)
{
	(void)state;
	pipelined(PS_WIRE_3);
}

/* every kind of miss answers nr_pages 0 and keeps the connection */
static void not_found(int wire)
{
	struct srv s;
	int fd;

	srv_start(&s, wire, NULL);
	fd = cl_connect(&s);
	get_missing(&s, fd, 99, A_RUN, 1);			/* unknown pid */
	get_missing(&s, fd, ZOMBIE, A_RUN, 1);			/* zombie */
	get_missing(&s, fd, PID, A_HOLE, 1);			/* hole */
	get_missing(&s, fd, PID, A_LAZY, 2);			/* PE_LAZY, no data */
	get_missing(&s, fd, PID, A_RUN, 0);			/* 0 pages */
	get_missing(&s, fd, PID, A_RUN + 16, 1);		/* unaligned */
	get_missing(&s, fd, PID, A_RUN, (1u << 20) + 1);	/* too many */
	get_missing(&s, fd, BROKEN, A_RUN, 1);			/* no pagemap file */
	get_missing(&s, fd, BROKEN, A_RUN, 1);			/* ... and again, from the cache */
	get_missing(&s, fd, (1ull << 32) | PID, A_RUN, 1);	/* pid beyond 32 bits */
	get_missing(&s, fd, PID, UINT64_MAX & ~(ps - 1), 4);	/* the top of the space */
	get_ok(&s, fd, PID, A_RUN, 1, 1, 3);			/* still served */
	close(fd);
	assert_log_has(&s, "GET pid 99 vaddr 0x10000 pages 1: not found");
	assert_log_has(&s, "zombie");
	assert_log_has(&s, "pagemap-12.img");
	srv_stop(&s);
}

static void test_not_found_v4(void **state)
{
	(void)state;
	not_found(PS_WIRE_4);
}

static void test_not_found_v3(void **state)
{
	(void)state;
	not_found(PS_WIRE_3);
}

/* PE_PARENT pages come from the parent image dir */
static void test_parent_chain(void **state)
{
	uint8_t *buf = malloc(4 * ps);
	struct ps_iov r;
	struct srv s;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	fd = cl_connect(&s);
	cl_send(fd, s.wire, PS_IOV_GET, 0, 8, A_RUN, CHILD);
	cl_recv_iov(fd, s.wire, &r);
	assert_int_equal(r.nr_pages, 4);
	cl_read(fd, buf, 4 * ps);
	for (int k = 0; k < 4; k++)
		assert_true(it_page_is(buf + k * ps, 3, k));
	cl_send(fd, s.wire, PS_IOV_GET, 0, 8, A_RUN + 4 * ps, CHILD);
	cl_recv_iov(fd, s.wire, &r);
	assert_int_equal(r.nr_pages, 2);
	cl_read(fd, buf, 2 * ps);
	assert_true(it_page_is(buf, 2, 0));
	assert_true(it_page_is(buf + ps, 2, 1));
	close(fd);
	srv_stop(&s);
	free(buf);
}

/* an unknown command ends that connection only */
static void test_unknown_command(void **state)
{
	static const uint32_t bad[] = { PS_IOV_ADD, PS_IOV_OPEN2, PS_IOV_PARENT, PS_IOV_ADD_F,
					0x1025, 0x11023 /* CLOSE with flags */ };
	struct srv s;
	int other, fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	other = cl_connect(&s);
	get_ok(&s, other, PID, A_RUN, 1, 1, 0);
	for (size_t i = 0; i < N(bad); i++) {
		fd = cl_connect(&s);
		cl_send(fd, s.wire, bad[i], 0, 1, A_RUN, PID);
		cl_expect_eof(fd);
		close(fd);
		get_ok(&s, other, PID, A_RUN + ps, 1, 1, 0);
	}
	assert_log_has(&s, "unknown page-server command 0x1 ");
	assert_log_has(&s, "unknown page-server command 0x11023");
	assert_log_has(&s, "127.0.0.1:");
	/* and new clients are still welcome */
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_BIG, 2, 2, 0);
	close(fd);
	close(other);
	srv_stop(&s);
}

/* a client stuck halfway through a header delays nobody */
static void test_slow_client(void **state)
{
	uint8_t buf[PS_IOV_MAX];
	struct ps_iov r;
	struct srv s;
	int slow, fd;
	size_t n;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	slow = cl_connect(&s);
	n = cl_iov(s.wire, PS_IOV_GET, 9, 1, A_SHORT, PID, buf);
	cl_write(slow, buf, 10);
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_RUN, 4, 4, 0);
	cl_write(slow, buf + 10, n - 10);
	cl_recv_iov(slow, s.wire, &r);
	assert_int_equal(r.nr_pages, 1);
	assert_int_equal(r.pad, 9);
	get_ok(&s, fd, PID, A_RUN, 1, 1, 0);
	close(fd);
	close(slow);
	srv_stop(&s);
}

struct hammer {
	const struct srv *s;
	int fails;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	uint8_t *got = malloc(4 * ps), *want = expected(dir, PID, A_BIG, 64);
	uint8_t req[PS_IOV_MAX];
	struct ps_iov r;
	int fd = cl_connect(h->s);

	for (int i = 0; i < 300; i++) {
		uint64_t k = (uint64_t)(i * 7) % 61, m = 1 + i % 4;

		cl_write(fd, req, cl_iov(h->s->wire, PS_IOV_GET, 0, m, A_BIG + k * ps, PID, req));
		cl_recv_iov(fd, h->s->wire, &r);
		if (r.nr_pages != m || r.vaddr != A_BIG + k * ps) {
			h->fails++;
			break;
		}
		cl_read(fd, got, m * ps);
		if (memcmp(got, want + k * ps, m * ps))
			h->fails++;
	}
	close(fd);
	free(got);
	free(want);
	return NULL;
}

/* several clients at once, all served correctly */
static void test_concurrent_clients(void **state)
{
	struct hammer h[4];
	pthread_t t[4];
	struct srv s;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .s = &s };
		assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(h[i].fails, 0);
	}
	srv_stop(&s);
}

/* CRIU's close: int32 0, then the server waits for the client's hang-up */
static void test_close(void **state)
{
	static const uint32_t cmds[] = { PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE };
	struct srv s;
	int32_t v;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	for (size_t i = 0; i < N(cmds); i++) {
		fd = cl_connect(&s);
		get_ok(&s, fd, PID, A_RUN, 1, 1, 0);
		cl_send(fd, s.wire, cmds[i], 0, 0, 0, 0);
		v = -1;
		cl_read(fd, &v, sizeof(v));
		assert_int_equal(v, 0);
		close(fd);
	}
	/* bytes after CLOSE are an error, logged, and end the connection */
	fd = cl_connect(&s);
	cl_send(fd, s.wire, PS_IOV_CLOSE, 0, 0, 0, 0);
	cl_read(fd, &v, sizeof(v));
	assert_int_equal(v, 0);
	cl_write(fd, "x", 1);
	cl_expect_eof(fd);
	close(fd);
	assert_log_has(&s, "unexpected data after CLOSE");
	/* a client left waiting after CLOSE does not keep SIGTERM from stopping the server */
	fd = cl_connect(&s);
	cl_send(fd, s.wire, PS_IOV_CLOSE, 0, 0, 0, 0);
	cl_read(fd, &v, sizeof(v));
	srv_stop(&s);
	close(fd);
}

static void hello(int wire)
{
	static const uint64_t ask[][2] = { { 1, 1 }, { 2, 2 }, { 9, PS_LP_HELLO_VERSION } };
	struct ps_iov r;
	struct srv s;
	int fd;

	srv_start(&s, wire, NULL);
	/* the answer is the lower version: a version 1 client gets 1 */
	for (size_t i = 0; i < sizeof(ask) / sizeof(ask[0]); i++) {
		fd = cl_connect(&s);
		cl_send(fd, wire, PS_LP_HELLO, 0x77, ask[i][0], 0, PS_LP_ROLE_URGENT);
		cl_recv_iov(fd, wire, &r);
		assert_int_equal(r.cmd, PS_LP_HELLO_REPLY);
		assert_int_equal(r.nr_pages, ask[i][1]);
		assert_int_equal(r.dst_id, PS_LP_ROLE_URGENT);
		get_ok(&s, fd, PID, A_RUN, 2, 2, 0);
		close(fd);
	}
	srv_stop(&s);
}

/* A list GET: its runs' pages in order under one header (a run spanning two stored runs included), or none. */
static void test_list(void **state)
{
	const struct ps_run runs[] = { { A_BIG + 10 * ps, 3 }, { A_RUN, 6 }, { A_SHORT, 2 } };
	const struct ps_run bad[] = { { A_RUN, 2 }, { A_HOLE, 1 } };
	uint8_t b[PS_IOV_MAX + PS_LP_LIST_MAX * PS_LP_RUN_SIZE], *got, *want;
	struct ps_iov r;
	struct srv s;
	size_t len, off = 0;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	fd = cl_connect(&s);
	len = ps_list_encode(s.wire, PID, runs, 3, b);
	assert_int_equal(len, 32 + 3 * 16);
	cl_write(fd, b, len);
	cl_recv_iov(fd, s.wire, &r);
	assert_int_equal(r.cmd, PS_GET_REPLY_CMD);
	assert_int_equal(r.nr_pages, 11);
	assert_int_equal(r.vaddr, A_BIG + 10 * ps);
	assert_int_equal(r.dst_id, PID);
	got = malloc(11 * ps);
	assert_non_null(got);
	cl_read(fd, got, 11 * ps);
	for (size_t i = 0; i < 3; i++) {
		want = expected(dir, PID, runs[i].img, runs[i].nr_pages);
		assert_memory_equal(got + off, want, runs[i].nr_pages * ps);
		off += runs[i].nr_pages * ps;
		free(want);
	}
	free(got);
	/* a run with a hole in it: nothing, and the connection goes on */
	cl_write(fd, b, ps_list_encode(s.wire, PID, bad, 2, b));
	cl_recv_iov(fd, s.wire, &r);
	assert_int_equal(r.nr_pages, 0);
	get_ok(&s, fd, PID, A_RUN, 1, 1, 0);
	close(fd);
	/* runs that do not add up to the header's total: the connection is closed */
	fd = cl_connect(&s);
	len = ps_list_encode(s.wire, PID, runs, 3, b);
	b[16] ^= 1;	/* the header's total (vaddr field) */
	cl_write(fd, b, len);
	assert_int_equal(read(fd, b, 1), 0);
	close(fd);
	srv_stop(&s);
}

static void test_hello_v4(void **state)
{
	(void)state;
	hello(PS_WIRE_4);
}

static void test_hello_v3(void **state)
{
	(void)state;
	hello(PS_WIRE_3);
}

/* past --max-clients a connection is closed at once; the ones in service carry on */
static void test_max_clients(void **state)
{
	static const char *const extra[] = { "--max-clients", "1", NULL };
	struct srv s;
	int a, b;

	(void)state;
	srv_start(&s, PS_WIRE_4, extra);
	a = cl_connect(&s);
	get_ok(&s, a, PID, A_RUN, 1, 1, 0);
	b = cl_connect(&s);
	cl_expect_eof(b);
	close(b);
	get_ok(&s, a, PID, A_RUN, 1, 1, 0);
	assert_log_has(&s, "--max-clients");
	close(a);
	srv_stop(&s);
}

/* EOF in the middle of a header is logged, and the server goes on */
static void test_eof_in_header(void **state)
{
	struct srv s;
	int fd;

	(void)state;
	srv_start(&s, PS_WIRE_4, NULL);
	fd = cl_connect(&s);
	cl_write(fd, "abc", 3);
	shutdown(fd, SHUT_WR);
	cl_expect_eof(fd);
	close(fd);
	assert_log_has(&s, "inside a header");
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_RUN, 1, 1, 0);
	close(fd);
	srv_stop(&s);
}

/* bad images stop it at startup, naming the file */
static void test_bad_images(void **state)
{
	static uint32_t th[1] = { 5 };
	struct pstree_ent pe = { .pid = 5, .nr_threads = 1, .threads = th };
	char *d = it_tmpdir(), *missing;
	struct srv s;

	(void)state;
	assert_true(asprintf(&missing, "%s/none", d) > 0);
	assert_int_not_equal(srv_spawn(&s, missing, PS_WIRE_4, NULL), -1);
	it_inventory(d, 2, true, true);
	it_pstree(d, 2, &pe, 1);		/* no core-5.img */
	assert_int_not_equal(srv_spawn(&s, d, PS_WIRE_4, NULL), -1);
	assert_log_has(&s, "core-5.img");
	it_core(d, 5, TASK_ALIVE);		/* now it starts, and pagemap-5 is missing */
	srv_start(&s, PS_WIRE_4, NULL);
	srv_stop(&s);
	assert_int_equal(srv_spawn(&s, d, PS_WIRE_4, NULL), -1);
	{
		int fd = cl_connect(&s);

		get_missing(&s, fd, 5, A_RUN, 1);
		close(fd);
	}
	assert_log_has(&s, "pagemap-5.img");
	srv_stop(&s);
	it_rmrf(d);
	free(d);
	free(missing);
}

/* -d with a pid file that cannot be written: exit 1 and say which, never a server without one */
static void test_daemon_pidfile_error(void **state)
{
	const char *extra[] = { "-d", "--pidfile", "/nonexistent-dir/lps.pid", NULL };
	struct srv s;

	(void)state;
	assert_int_equal(srv_spawn(&s, dir, PS_WIRE_4, extra), 1);
	assert_log_has(&s, "/nonexistent-dir/lps.pid: cannot write the pid file");
}

/* -d: the parent exits 0 after listening and writes the child's pid */
static void test_daemon(void **state)
{
	char pidfile[PATH_MAX];
	const char *extra[] = { "-d", "--pidfile", pidfile, NULL };
	struct pollfd pfd;
	struct srv s;
	pid_t pid;
	int fd, pidfd;

	(void)state;
	snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", run_dir);
	/* the parent exits 0 before the child writes the status byte: srv_spawn reaps it */
	srv_spawn(&s, dir, PS_WIRE_4, extra);
	pid = atoi(read_text(pidfile));
	assert_true(pid > 0);
	daemon_pid = pid;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	assert_true(pidfd >= 0);
	fd = cl_connect(&s);
	get_ok(&s, fd, PID, A_RUN, 6, 6, 0);
	close(fd);
	assert_int_equal(kill(pid, SIGTERM), 0);
	pfd = (struct pollfd){ .fd = pidfd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	daemon_pid = 0;
	close(pidfd);
	unlink(pidfile);
}

/* images written by lp-dump from a live workload: every stored run, byte for byte */
static void test_lp_dump_images(void **state)
{
	char lpdump[PATH_MAX], cmd[2 * PATH_MAX], *d = it_tmpdir();
	struct pstree_ent *pst = NULL;
	struct lp_err e = { 0 };
	struct imgdir *id = NULL;
	struct pagemap *pm = NULL;
	const struct pm_entry *pe;
	size_t npst = 0, n, checked = 0;
	struct srv s;
	int fd;

	(void)state;
	snprintf(lpdump, sizeof(lpdump), "%s/lp-dump", tests_dir);
	if (access(lpdump, X_OK)) {
		it_rmrf(d);
		free(d);
		fail_msg("%s is not built (run ninja)", lpdump);
	}
	snprintf(cmd, sizeof(cmd), "%s -D %s --size 8 --procs 2 >/dev/null 2>&1", lpdump, d);
	assert_int_equal(system(cmd), 0);
	if (imgdir_open(d, &id, &e) || imgdir_read_pstree(id, &pst, &npst, &e))
		fail_msg("%s", e.msg);
	assert_int_equal(srv_spawn(&s, d, PS_WIRE_4, NULL), -1);
	fd = cl_connect(&s);
	for (size_t t = 0; t < npst; t++) {
		if (pagemap_open(id, pst[t].pid, &pm, &e))
			fail_msg("%s", e.msg);
		pe = pagemap_entries(pm, &n);
		for (size_t i = 0; i < n; i++) {
			uint64_t m = pe[i].nr_pages < 300 ? pe[i].nr_pages : 300;
			uint8_t *want, *got;
			struct ps_iov r;

			if (!(pe[i].flags & PE_PRESENT))
				continue;
			cl_send(fd, s.wire, PS_IOV_GET, 0, m, pe[i].vaddr, pst[t].pid);
			cl_recv_iov(fd, s.wire, &r);
			assert_true(r.nr_pages >= 1 && r.nr_pages <= m);
			got = malloc(r.nr_pages * ps);
			want = malloc(r.nr_pages * ps);
			cl_read(fd, got, r.nr_pages * ps);
			if (pagemap_read(pm, pe[i].vaddr, r.nr_pages, want, &e))
				fail_msg("%s", e.msg);
			assert_memory_equal(got, want, r.nr_pages * ps);
			free(got);
			free(want);
			checked++;
		}
		pagemap_close(pm);
	}
	assert_true(checked > 0);
	close(fd);
	srv_stop(&s);
	pstree_free(pst, npst);
	imgdir_close(id);
	it_rmrf(d);
	free(d);
}

static const char *fixtures;	/* real CRIU 4.2 dumps (tests/run passes their dir) */

static uint64_t fx_mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* the 4 MiB buffer of CRIU's own dump, served whole, and its LAZY-only twin not served */
static void test_criu_fixture(void **state)
{
	const uint64_t buf_va = 0x7f6cd6400000ull, lazy_va = 0x7f4754800000ull;
	const uint32_t pids[2] = { 12498, 12500 };
	uint64_t *got = malloc(1024 * ps);
	char d[PATH_MAX];
	struct ps_iov r;
	struct srv s;
	int fd;

	(void)state;
	snprintf(d, sizeof(d), "%s/dump", fixtures ? fixtures : "");
	if (ps != 4096) {
		free(got);
		skip();	/* the fixtures were written with 4 KiB pages */
	}
	if (!fixtures || access(d, R_OK)) {
		free(got);
		fail_msg("CRIU fixtures not found at '%s' (pass the path as argv[1] or LP_FIXTURES)", d);
	}
	assert_int_equal(srv_spawn(&s, d, PS_WIRE_4, NULL), -1);
	fd = cl_connect(&s);
	for (int t = 0; t < 2; t++) {
		uint64_t done = 0;

		/* entries split at 1 MiB: replies may stop at each split, never mid-page */
		while (done < 1024) {
			cl_send(fd, s.wire, PS_IOV_GET, 0, 1024 - done, buf_va + done * ps, pids[t]);
			cl_recv_iov(fd, s.wire, &r);
			assert_true(r.nr_pages >= 1 && r.nr_pages <= 1024 - done);
			cl_read(fd, (uint8_t *)got + done * ps, r.nr_pages * ps);
			done += r.nr_pages;
		}
		for (uint64_t i = 0; i < 1024 * ps / 8; i++) {
			uint64_t seed = t == 1 && (i / 512) % 8 == 0 ? 0x5eee : 0x5eed;

			if (got[i] != fx_mix(i ^ (seed << 48)))
				fail_msg("pid %u word %" PRIu64 ": 0x%" PRIx64, pids[t], i, got[i]);
		}
	}
	close(fd);
	srv_stop(&s);
	free(got);

	/* criu dump --lazy-pages keeps those pages in memory: the images cannot serve them */
	snprintf(d, sizeof(d), "%s/lazy-dump", fixtures);
	assert_int_equal(srv_spawn(&s, d, PS_WIRE_4, NULL), -1);
	fd = cl_connect(&s);
	get_missing(&s, fd, 12539, lazy_va, 1);
	close(fd);
	srv_stop(&s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, case_setup, case_teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(test_get_v4),
		T(test_get_v3),
		T(test_get_bytes),
		T(test_get_short_run),
		T(test_pipelined_v4),
		T(test_pipelined_v3),
		T(test_not_found_v4),
		T(test_not_found_v3),
		T(test_parent_chain),
		T(test_unknown_command),
		T(test_slow_client),
		T(test_concurrent_clients),
		T(test_close),
		T(test_hello_v4),
		T(test_hello_v3),
		T(test_list),
		T(test_max_clients),
		T(test_eof_in_header),
		T(test_bad_images),
		T(test_daemon),
		T(test_daemon_pidfile_error),
		T(test_lp_dump_images),
		T(test_criu_fixture),
	};

	fixtures = argc > 1 ? argv[1] : getenv("LP_FIXTURES");
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
