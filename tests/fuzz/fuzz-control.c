/* SPDX-License-Identifier: MIT */
/*
 * fuzz-control: both ends of the control protocol (proto/control.proto).
 * Byte 0, bit 0 picks the side.
 *
 * 0, the daemon: the rest is what a client sends (0xFD markers attach fds,
 *    fuzz.h), read by control.c's connection loop (control_serve) in
 *    front of a fake registry; a hand-off goes on to session_new_handoff,
 *    which checks the regions and takes the fds. Every answer must be one
 *    well-formed lp_response frame of version 1 with a -errno, and no fd
 *    may be left open.
 * 1, the client library: byte 1-2 pick up to five calls (3 bits each:
 *    status, list, list one, stats, add, rm, hand-off, stats one; bit 15:
 *    the "daemon" refuses to read, so that sends fail as when it hangs
 *    up); the rest is what it answers on a unix socket. Results must be 0 or
 *    -errno, strings NUL-terminated, and a connection once out of step
 *    must stay so (-ENOTCONN).
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "control.h"
#include "control.pb-c.h"
#include "fuzz.h"
#include "lazypages.h"
#include "registry.h"
#include "session.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a fake registry behind control.c ---- */

struct registry {
	struct session_cfg cfg;
};

static struct registry reg;

void registry_status(struct registry *s, struct registry_status *st)
{
	(void)s;
	memset(st, 0, sizeof(*st));
	st->pid = 4242;
	st->uptime_s = 1.5;
	st->active = 1;
	st->total = 3;
	snprintf(st->line, sizeof(st->line), "fuzzing");
}

int registry_add(struct registry *s, const struct registry_add *a, uid_t uid, uint32_t *id, struct lp_err *e)
{
	(void)s;
	(void)uid;
	FUZZ_CHECK(a->images_dir);	/* required in the proto: unpack refuses a request without it */
	/* ASan: each string is NUL-terminated inside its allocation */
	(void)strlen(a->images_dir);
	if (a->work_dir)
		(void)strlen(a->work_dir);
	if (a->ps_address)
		(void)strlen(a->ps_address);
	if (!a->images_dir[0])
		return lp_err_set(e, EINVAL, "empty images dir");
	*id = 7;
	return 0;
}

int registry_handoff(struct registry *s, int uffd, int mem_fd, const struct session_region *r, size_t n, int32_t pid,
		    pid_t peer, uint32_t *id, struct lp_err *e)
{
	struct session *x;

	(void)peer;
	FUZZ_CHECK(n >= 1 && n <= SESSION_MAX_REGIONS);
	x = session_new_handoff(&s->cfg, uffd, mem_fd, r, n, pid, e);
	if (!x)
		return lp_err_errno(e);
	session_free(x);
	*id = 8;
	return 0;
}

int registry_rm(struct registry *s, uint32_t id, struct lp_err *e)
{
	(void)s;
	return id == 7 ? 0 : lp_err_set(e, ENOENT, "no session %u", id);
}

int registry_list(struct registry *s, uint32_t id, struct registry_info **out, size_t *n, struct lp_err *e)
{
	size_t k = id ? 1 : 2;
	struct registry_info *v;

	(void)s;
	if (id && id != 7)
		return lp_err_set(e, ENOENT, "no session %u", id);
	v = calloc(k, sizeof(*v));
	if (!v)
		return lp_err_set(e, ENOMEM, "out of memory");
	for (size_t i = 0; i < k; i++) {
		v[i].id = (uint32_t)(7 + i);
		v[i].handoff = (int)i;
		snprintf(v[i].images_dir, sizeof(v[i].images_dir), "/images/%zu", i);
		v[i].snap.phase = SESSION_SERVING;
		v[i].snap.nprocs = i + 1;
		v[i].snap.procs = calloc(i + 1, sizeof(*v[i].snap.procs));
		if (!v[i].snap.procs) {
			registry_info_free(v, i + 1);
			return lp_err_set(e, ENOMEM, "out of memory");
		}
		v[i].snap.procs[0].pid = 100;
	}
	*out = v;
	*n = k;
	return 0;
}

void registry_info_free(struct registry_info *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].snap.procs);
	free(v);
}

/* ---- the daemon side ---- */

/* Reads the daemon's answers as they come and checks each frame. */
static void *drain_main(void *arg)
{
	int fd = *(int *)arg;
	uint8_t hdr[4], *b;
	uint32_t len;

	for (;;) {
		LpResponse *r;
		size_t got = 0;
		ssize_t n;

		while (got < 4 && (n = read(fd, hdr + got, 4 - got)) > 0)
			got += (size_t)n;
		if (got == 0)
			return NULL;
		FUZZ_CHECK(got == 4);
		len = fuzz_get32(hdr);
		FUZZ_CHECK(len <= LP_CONTROL_MAX_FRAME);
		b = malloc(len ? len : 1);
		FUZZ_CHECK(b);
		for (got = 0; got < len && (n = read(fd, b + got, len - got)) > 0;)
			got += (size_t)n;
		FUZZ_CHECK(got == len);
		r = lp_response__unpack(NULL, len, b);
		free(b);
		FUZZ_CHECK(r);
		FUZZ_CHECK(r->version == CONTROL_VERSION);
		FUZZ_CHECK(r->error <= 0 && r->error >= -4095);
		if (r->error)
			FUZZ_CHECK(r->message && r->message[0]);
		lp_response__free_unpacked(r, NULL);
	}
}

static void daemon_side(const uint8_t *data, size_t size)
{
	pthread_t t;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	fuzz_send_stream(sv[0], data, size);
	shutdown(sv[0], SHUT_WR);
	FUZZ_CHECK(pthread_create(&t, NULL, drain_main, &sv[0]) == 0);
	control_serve(&reg, sv[1], 1000, 0);
	close(sv[1]);
	pthread_join(t, NULL);
	close(sv[0]);
}

/* ---- the client side ---- */

static char sock_dir[64], sock_path[96];
static int lfd = -1;

static void cleanup(void)
{
	unlink(sock_path);
	rmdir(sock_dir);
}

static void check_str(const char *s, size_t size)
{
	FUZZ_CHECK(memchr(s, '\0', size) != NULL);
}

static void check_sessions(struct lp_session *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		check_str(s[i].kind, sizeof(s[i].kind));
		check_str(s[i].images_dir, sizeof(s[i].images_dir));
		check_str(s[i].work_dir, sizeof(s[i].work_dir));
		check_str(s[i].socket_path, sizeof(s[i].socket_path));
		check_str(s[i].page_server, sizeof(s[i].page_server));
		check_str(s[i].summary, sizeof(s[i].summary));
		check_str(s[i].error, sizeof(s[i].error));
		FUZZ_CHECK(!s[i].nprocs || s[i].procs);
		for (size_t j = 0; j < s[i].nprocs; j++)
			(void)s[i].procs[j].pid;	/* ASan: the array holds nprocs */
	}
}

static int client_call(struct lp_conn *c, unsigned op)
{
	struct lp_session_opts so = { .images_dir = "/images", .ps_address = "127.0.0.1", .ps_port = 1 };
	struct lp_region rg = { .addr = 0x10000, .len = 0x1000, .offset = 0 };
	struct lp_session *s = NULL;
	struct lp_status st;
	uint32_t id = 0;
	size_t n = 0;
	int ret, a, b;

	switch (op) {
	case 0:
		ret = lp_status(c, &st);
		if (!ret)
			check_str(st.line, sizeof(st.line));
		return ret;
	case 1:
	case 2:
		ret = lp_session_list(c, op == 1 ? 0 : 5, &s, &n);
		break;
	case 3:
	case 7:
		ret = lp_stats(c, op == 3 ? 0 : 9, &s, &n);
		break;
	case 4:
		return lp_session_add(c, &so, &id);
	case 5:
		return lp_session_rm(c, 3);
	default:
		a = open("/dev/null", O_RDONLY | O_CLOEXEC);
		b = open("/dev/null", O_RDONLY | O_CLOEXEC);
		ret = lp_handoff(c, a, b, &rg, 1, 77, "fuzz", &id);
		close(a);
		close(b);
		return ret;
	}
	if (!ret) {
		FUZZ_CHECK(s != NULL);
		check_sessions(s, n);
		lp_sessions_free(s, n);
	}
	return ret;
}

static void client_side(const uint8_t *data, size_t size)
{
	struct lp_conn *c = NULL;
	unsigned ops;
	bool broken = false;
	int afd;

	if (size < 2)
		return;
	ops = data[0] | (unsigned)data[1] << 8;
	data += 2;
	size -= 2;
	if (lp_connect(sock_path, &c) < 0)
		return;
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	FUZZ_CHECK(afd >= 0);
	fuzz_send_stream(afd, data, size);
	shutdown(afd, (ops & 0x8000) ? SHUT_RDWR : SHUT_WR);
	for (int i = 0; i < 5; i++) {
		int ret = client_call(c, (ops >> (3 * i)) & 7);

		FUZZ_CHECK(ret <= 0 && ret >= -4095);
		FUZZ_CHECK(lp_error(c) != NULL);
		if (broken)
			FUZZ_CHECK(ret == -ENOTCONN);
		broken |= ret == -ENOTCONN;
	}
	lp_close(c);
	close(afd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	session_cfg_defaults(&reg.cfg);
	reg.cfg.prefetch_threads = 1;
	reg.cfg.fault_threads = 1;
	reg.cfg.chunk_pages = 4;
	snprintf(sock_dir, sizeof(sock_dir), "/dev/shm/fuzz-control.XXXXXX");
	if (!mkdtemp(sock_dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(sock_path, sizeof(sock_path), "%s/c.sock", sock_dir);
	memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(lfd, 4) < 0) {
		perror(sock_path);
		exit(1);
	}
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int before;

	if (size < 1)
		return 0;
	before = fuzz_count_fds();
	if (data[0] & 1)
		client_side(data + 1, size - 1);
	else
		daemon_side(data + 1, size - 1);
	FUZZ_CHECK(fuzz_count_fds() == before);
	return 0;
}
