/* SPDX-License-Identifier: MIT */
/*
 * lp-handoff: a restorer that is not CRIU, the way a VMM restores guest
 * memory from a snapshot file. It writes a raw memory file (a per-page
 * pattern, some pages left as all-zero holes, a few pages between regions
 * that no region maps), maps three anonymous regions backed by different
 * parts of it (mapped and handed over out of file order), registers them
 * MISSING on a userfaultfd and hands both fds to lazy-pagesd --service
 * with lp_handoff(). Then T threads read every page in random order and
 * check each page's hash against the file's; a wrong byte anywhere is a
 * mismatch. Finally it waits for the daemon to let go of the memory file
 * (an inotify close event, no polling) and reads the session's figures
 * (on a connection of their own: the daemon may have been restarted).
 * Exit 0 only if every page matched and the session is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lazypages.h"
#include "pagehash.h"

#define PAGE PH_PAGE
#define NREG 3
#define GAP_PAGES 16		/* file pages between two regions that no region maps */
#define PROC_TAG 0xfeedu	/* ph_fill's process field: handed-off pages never match an image's */
#define MAX_REPORT 8

struct opts {
	const char *control, *file;
	uint64_t size_mib, seed;
	unsigned threads, zeros_pct;
	int timeout;
};

struct region {
	uint8_t *base;
	uint64_t pages, file_page;	/* length, and the file page of its first page */
};

struct check {
	struct region reg[NREG];
	const uint64_t *exp;		/* expected hash per file page */
	uint64_t *perm;			/* (region << 48) | page, shuffled */
	uint64_t n;
	atomic_uint_fast64_t next, checked, bad;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_alarm(int sig)
{
	static const char msg[] = "lp-handoff: HANG: not done before --timeout; a fault was never served?\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(3);
}

static int page_is_zero(uint64_t seed, uint64_t i, unsigned pct)
{
	return ph_mix(seed ^ ((i + 1) * PH_K2)) % 100 < pct;
}

/* Writes the memory file: FILE_PAGES pages, zero pages as holes; fills EXP. */
static int write_memory(int fd, const struct opts *o, uint64_t file_pages, uint64_t *exp, uint64_t *zeros)
{
	static uint8_t page[PAGE];
	uint64_t i;

	if (ftruncate(fd, (off_t)(file_pages * PAGE)) < 0)
		return -errno;
	*zeros = 0;
	for (i = 0; i < file_pages; i++) {
		if (page_is_zero(o->seed, i, o->zeros_pct)) {
			exp[i] = pagehash_zero();
			(*zeros)++;
			continue;
		}
		ph_fill(page, o->seed, 0, PROC_TAG, 0, i);
		exp[i] = pagehash(page);
		if (pwrite(fd, page, PAGE, (off_t)(i * PAGE)) != PAGE)
			return errno ? -errno : -EIO;
	}
	return 0;
}

static int uffd_open_register(struct region *reg, int n, int *out)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd, i;

	/* the same flags as CRIU's: the daemon polls it */
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		goto fail;
	for (i = 0; i < n; i++) {
		struct uffdio_register r = {
			.range = { .start = (uintptr_t)reg[i].base, .len = reg[i].pages * PAGE },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(fd, UFFDIO_REGISTER, &r) < 0)
			goto fail;
	}
	*out = fd;
	return 0;
fail:
	i = -errno;
	close(fd);
	return i;
}

static void *check_main(void *arg)
{
	struct check *c = arg;
	uint64_t k, v, r, pg, fp, h;

	while ((k = atomic_fetch_add(&c->next, 1)) < c->n) {
		v = c->perm[k];
		r = v >> 48;
		pg = v & ((1ull << 48) - 1);
		fp = c->reg[r].file_page + pg;
		/* the first touch of a page faults: the daemon must fill it from the file */
		h = pagehash(c->reg[r].base + pg * PAGE);
		if (h != c->exp[fp]) {
			if (atomic_fetch_add(&c->bad, 1) < MAX_REPORT)
				fprintf(stderr,
					"lp-handoff: mismatch: region %" PRIu64 " page %" PRIu64 " (file page %" PRIu64
					", %s): hash %016" PRIx64 ", expected %016" PRIx64 "%s\n",
					r, pg, fp, c->exp[fp] == pagehash_zero() ? "a zero page" : "data", h, c->exp[fp],
					h == pagehash_zero() ? " (got zeros)" : "");
		}
		atomic_fetch_add(&c->checked, 1);
	}
	return NULL;
}

static int verify(struct check *c, const struct opts *o)
{
	pthread_t tid[256];
	uint64_t rng = o->seed ^ 0x5eed, i, j, t, k = 0;
	unsigned n = o->threads, started;
	int r;

	for (i = 0; i < NREG; i++)
		k += c->reg[i].pages;
	c->perm = malloc(k * sizeof(*c->perm));
	if (!c->perm)
		return -ENOMEM;
	c->n = k;
	for (k = 0, i = 0; i < NREG; i++)
		for (j = 0; j < c->reg[i].pages; j++)
			c->perm[k++] = i << 48 | j;
	for (i = c->n - 1; i > 0; i--) {
		j = ph_rand(&rng) % (i + 1);
		t = c->perm[i];
		c->perm[i] = c->perm[j];
		c->perm[j] = t;
	}
	for (started = 0; started < n; started++) {
		r = pthread_create(&tid[started], NULL, check_main, c);
		if (r) {
			fprintf(stderr, "lp-handoff: thread: %s\n", strerror(r));
			break;
		}
	}
	for (i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	return started ? 0 : -EAGAIN;
}

/* Waits until the last open file description of the memory file is closed: the daemon's. */
static int wait_released(int in, int timeout_s)
{
	struct pollfd pfd = { .fd = in, .events = POLLIN };
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int r;

	for (;;) {
		r = poll(&pfd, 1, timeout_s * 1000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r ? -errno : -ETIMEDOUT;
		r = (int)read(in, buf, sizeof(buf));
		if (r > 0)
			return 0;	/* only close events are watched */
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

static const char *state_name(enum lp_state s)
{
	switch (s) {
	case LP_LISTENING: return "listening";
	case LP_SERVING: return "serving";
	case LP_DONE: return "done";
	case LP_FAILED: return "failed";
	}
	return "?";
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-handoff [-s SOCKET] [--size MIB] [--threads T] [--seed S] [--zeros PCT]\n"
		"                  [--file PATH] [--timeout SEC]\n"
		"Hands a userfaultfd and a raw memory file (PATH, default an anonymous memfd) to\n"
		"lazy-pagesd --service, then reads every page with T threads and checks it.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'S' },
		{ "threads", required_argument, NULL, 'T' },
		{ "seed", required_argument, NULL, 'e' },
		{ "zeros", required_argument, NULL, 'z' },
		{ "file", required_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .size_mib = 64, .seed = 1, .threads = 4, .zeros_pct = 10, .timeout = 60 };
	struct check c = { 0 };
	struct lp_region lr[NREG];
	struct lp_conn *conn = NULL;
	struct lp_session *s = NULL;
	uint64_t npages, file_pages, zeros = 0, *exp = NULL, bounds[NREG + 1];
	double t0, t1, t2, t3;
	uint32_t id = 0;
	size_t ns = 0;
	char watch[64];
	int opt, mem_fd = -1, uffd = -1, in = -1, i, ret, code = 1;
	static const int map_order[NREG] = { 2, 0, 1 };	/* mapped and handed over out of file order */

	while ((opt = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
		switch (opt) {
		case 's': o.control = optarg; break;
		case 'S': o.size_mib = strtoull(optarg, NULL, 10); break;
		case 'T': o.threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'e': o.seed = strtoull(optarg, NULL, 0); break;
		case 'z': o.zeros_pct = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'f': o.file = optarg; break;
		case 't': o.timeout = atoi(optarg); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc || o.size_mib == 0 || o.size_mib > 65536 || o.threads == 0 || o.threads > 256 ||
	    o.zeros_pct > 100 || o.timeout <= 0) {
		usage();
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm((unsigned)o.timeout);

	npages = o.size_mib * (1024 * 1024 / PAGE);
	if (npages < 3 * 4) {
		fprintf(stderr, "lp-handoff: --size too small\n");
		return 2;
	}
	/* file order: [0] [1] gap [2]; the gap's pages are in no region */
	bounds[0] = 0;
	bounds[1] = npages / 3;
	bounds[2] = npages / 2;
	bounds[3] = npages;
	file_pages = npages + GAP_PAGES;
	exp = calloc(file_pages, sizeof(*exp));
	if (!exp)
		goto out;
	mem_fd = o.file ? open(o.file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
			: (int)syscall(SYS_memfd_create, "lp-handoff", MFD_CLOEXEC);
	if (mem_fd < 0) {
		fprintf(stderr, "lp-handoff: %s: %s\n", o.file ? o.file : "memfd_create", strerror(errno));
		goto out;
	}
	ret = write_memory(mem_fd, &o, file_pages, exp, &zeros);
	if (ret) {
		fprintf(stderr, "lp-handoff: writing the memory file: %s\n", strerror(-ret));
		goto out;
	}
	for (i = 0; i < NREG; i++) {
		int r = map_order[i];
		struct region *g = &c.reg[r];

		g->pages = bounds[r + 1] - bounds[r];
		g->file_page = bounds[r] + (r == 2 ? GAP_PAGES : 0);
		g->base = mmap(NULL, g->pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (g->base == MAP_FAILED) {
			fprintf(stderr, "lp-handoff: mmap %" PRIu64 " pages: %s\n", g->pages, strerror(errno));
			goto out;
		}
		lr[i].addr = (uintptr_t)g->base;
		lr[i].len = g->pages * PAGE;
		lr[i].offset = g->file_page * PAGE;
	}
	c.exp = exp;
	ret = uffd_open_register(c.reg, NREG, &uffd);
	if (ret) {
		fprintf(stderr, "lp-handoff: userfaultfd: %s\n", strerror(-ret));
		goto out;
	}
	/*
	 * The daemon gets the same open file description: its close is the
	 * description's last, the one inotify reports. The watch goes on
	 * through /proc so that an unlinked memfd works too.
	 */
	snprintf(watch, sizeof(watch), "/proc/self/fd/%d", mem_fd);
	in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (in < 0 || inotify_add_watch(in, watch, IN_CLOSE_WRITE | IN_CLOSE_NOWRITE) < 0) {
		fprintf(stderr, "lp-handoff: inotify on the memory file: %s\n", strerror(errno));
		goto out;
	}
	ret = lp_connect(o.control, &conn);
	if (ret) {
		fprintf(stderr, "lp-handoff: %s: %s\n", lp_control_path(o.control), conn ? lp_error(conn) : strerror(-ret));
		goto out;
	}
	t0 = now_s();
	ret = lp_handoff(conn, uffd, mem_fd, lr, NREG, getpid(), "lp-handoff", &id);
	if (ret) {
		fprintf(stderr, "lp-handoff: lp_handoff: %s\n", lp_error(conn));
		goto out;
	}
	/* the daemon has its own copies now */
	close(uffd);
	uffd = -1;
	close(mem_fd);
	mem_fd = -1;
	t1 = now_s();
	ret = verify(&c, &o);
	t2 = now_s();
	if (ret) {
		fprintf(stderr, "lp-handoff: no reader thread started\n");
		goto out;
	}
	ret = wait_released(in, o.timeout);
	t3 = now_s();
	if (ret) {
		fprintf(stderr, "lp-handoff: session %u: the daemon still holds the memory file: %s\n", id,
			strerror(-ret));
		goto out;
	}
	/* a new connection: the daemon may have been restarted meanwhile (its fd store kept the session) */
	lp_close(conn);
	conn = NULL;
	ret = lp_connect(o.control, &conn);
	if (ret) {
		fprintf(stderr, "lp-handoff: %s: %s\n", lp_control_path(o.control), conn ? lp_error(conn) : strerror(-ret));
		goto out;
	}
	ret = lp_stats(conn, id, &s, &ns);
	if (ret || ns != 1) {
		fprintf(stderr, "lp-handoff: session %u: stats: %s\n", id, ret ? lp_error(conn) : "not one session");
		goto out;
	}
	fprintf(stderr, "lp-handoff: session %u: checked %" PRIu64 " pages, %" PRIu64 " mismatches\n", id,
		(uint64_t)atomic_load(&c.checked), (uint64_t)atomic_load(&c.bad));
	printf("lp-handoff: session %u: %" PRIu64 " MiB in %d regions (%" PRIu64 " zero pages), %u threads: %s in %.3f s"
	       " (hand-off %.3f s, released %.3f s later); session %s, pages_copied=%" PRIu64 " zero_pages=%" PRIu64
	       " faults=%" PRIu64 "\n",
	       id, o.size_mib, NREG, zeros, o.threads, atomic_load(&c.bad) ? "MISMATCHES" : "all pages verified",
	       t2 - t1, t1 - t0, t3 - t2, state_name(s[0].state), s[0].pages_copied, s[0].zero_pages, s[0].faults);
	if (s[0].state != LP_DONE)
		fprintf(stderr, "lp-handoff: session %u is %s, not done: %s\n", id, state_name(s[0].state), s[0].error);
	code = atomic_load(&c.bad) || atomic_load(&c.checked) != c.n || s[0].state != LP_DONE;
out:
	lp_sessions_free(s, ns);
	lp_close(conn);
	if (in >= 0)
		close(in);
	if (uffd >= 0)
		close(uffd);
	if (mem_fd >= 0)
		close(mem_fd);
	free(c.perm);
	free(exp);
	return code;
}
