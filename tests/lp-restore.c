/* SPDX-License-Identifier: MIT */
/*
 * lp-restore: does what `criu restore --lazy-pages` does to a lazy-pages
 * daemon (one connection, per-task records with the uffd, registration
 * after the send, the RSTF marker), then lets each restored child run a
 * scenario that checks every byte it reads against lp-expect-<pid>.bin.
 * --bad MODE plays a broken peer instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "images.h"
#include "io.h"
#include "pagehash.h"

#define PAGE PH_PAGE
#define SOCK_NAME "lazy-pages.socket"
#define RESTORE_FINISHED 0x52535446u	/* LAZY_PAGES_RESTORE_FINISHED, "RSTF" */
#define UFFD_FEATURES_CRIU 0x4Eull	/* EVENT_FORK | EVENT_REMAP | EVENT_REMOVE | EVENT_UNMAP */
#define MAX_REPORT 8			/* mismatches printed per process */

enum order { ORDER_PSTREE, ORDER_REVERSE, ORDER_RANDOM, ORDER_CONCURRENT };

struct opts {
	const char *dir, *workdir, *scenario, *bad;
	enum order order;
	unsigned int threads, race_ops;
	uint64_t seed;
	int timeout;
	bool time_faults;
	unsigned int start_delay_ms;	/* each process waits this long after "go" (a runtime starting up) */
	unsigned int hot_pct;		/* random: only the pages of this share of 64-page blocks (0: all) */
	bool first_exits;		/* the first pstree entry runs "exit": it is done while the others fill */
	pid_t wait_pid;
	/* the stress scenario */
	unsigned int stress_seconds, stress_threads, stress_storms, stress_children, stress_forks,
		stress_rate;
};

#define FH_SUB 16			/* buckets per power of two of nanoseconds: 4.4% wide */
#define FH_BUCKETS (40 * FH_SUB)
#define FH_KERNEL_NS 3000		/* a "fault" faster than this was not the daemon's */

/* shared by all restore processes, like CRIU's lazy_sock_mutex */
struct shared {
	pthread_mutex_t sock_mutex;
	_Atomic double t_marker;	/* CLOCK_MONOTONIC s: the RSTF marker sent */
	_Atomic double t_first;		/* the first restored process's first page read and checked */
	_Atomic double d_first;		/* that page: seconds from its process running to the page read */
	/* --time-faults: touches of missing pages, timed by the faulting thread (fh_bucket) */
	atomic_ulong fh[FH_BUCKETS], fh_kernel;
};

/* one restored process (a child of the main lp-restore process) */
struct task {
	uint32_t pid;			/* image pid */
	const struct opts *o;
	int sock;
	struct shared *sh;
	struct vma *v;
	size_t nv;
	uint64_t *first;		/* global index of each VMA's first page */
	uint64_t npages;
	uint64_t *exp;			/* expected hash per page, mm order */
	uint64_t *lazy;			/* --time-faults: bit g set if page g is registered (the daemon's) */
	uint64_t rng;
	atomic_ulong checked, bad;
	const char *who;		/* "" or " (forked child)" */
};

static int say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "lp-restore[%d]: ", getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	strncat(buf, "\n", sizeof(buf) - strlen(buf) - 1);
	/* one write per line: children print concurrently */
	if (write(2, buf, strlen(buf)) < 0)
		return -1;
	return -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double now(void)
{
	return (double)now_ns() / 1e9;
}

static int write_byte(int fd, char c)
{
	ssize_t r;

	do
		r = write(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -errno;
}

/* ---- the wire: exactly what CRIU's restore sends (a 4-byte pid, its userfaultfd by SCM_RIGHTS, then the "finished" word) ---- */

static int send_all(int sock, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t r = send(sock, p, n, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* send_fds(): one data byte 0x00, one SCM_RIGHTS cmsg; a separate sendmsg. fd < 0: no cmsg. */
static int send_fd_msg(int sock, int fd)
{
	static const char dummy = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)&dummy, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	ssize_t r;

	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_LEN(sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -errno;
}

static int send_record(int sock, int32_t pid, int uffd)
{
	int r = send_all(sock, &pid, sizeof(pid));

	if (r || pid < 0)
		return r;
	return send_fd_msg(sock, uffd);
}

static int sock_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int s;

	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memcpy(sa.sun_path, SOCK_NAME, strlen(SOCK_NAME));
	/* CRIU: relative path, addrlen = offsetof(sun_path) + strlen = 19 */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(SOCK_NAME));
	if (connect(s, (struct sockaddr *)&sa, len)) {
		int e = errno;

		close(s);
		return -e;
	}
	return s;
}

/*
 * Waits until the daemon is gone: its pid exits (--wait-pid) or, without
 * one, it closes its end of the socket (it never writes to it).
 */
static int wait_daemon_gone(const struct opts *o, int sock)
{
	struct pollfd pfd;
	int pidfd = -1, r;
	char c;

	if (o->wait_pid > 0) {
		pidfd = (int)syscall(SYS_pidfd_open, o->wait_pid, 0);
		if (pidfd < 0 && errno == ESRCH)
			return 0;
		if (pidfd < 0)
			return say("pidfd_open %d: %s", o->wait_pid, strerror(errno));
		pfd.fd = pidfd;
		pfd.events = POLLIN;
	} else {
		pfd.fd = sock;
		pfd.events = POLLIN | POLLRDHUP;
	}
	for (;;) {
		r = poll(&pfd, 1, o->timeout * 1000);
		if (r < 0 && errno == EINTR)
			continue;
		break;
	}
	if (pidfd >= 0)
		close(pidfd);
	if (r == 0)
		return say("the daemon is still there after %d s", o->timeout);
	if (r < 0)
		return say("poll: %s", strerror(errno));
	if (pidfd < 0) {
		/* drain anything (there should be nothing) until EOF */
		while ((r = (int)recv(sock, &c, 1, MSG_DONTWAIT)) > 0)
			;
	}
	return 0;
}

/* ---- uffd ---- */

static int uffd_open(uint64_t features, int *out)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;

		close(fd);
		return -e;
	}
	*out = fd;
	return 0;
}

/* kerndat: what this kernel supports, from a throw-away uffd */
static int uffd_probe(uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;

		close(fd);
		return -e;
	}
	close(fd);
	*features = api.features;
	return 0;
}

/* ---- verification ---- */

static void report(struct task *t, uint64_t addr, uint64_t want, uint64_t got, const char *what)
{
	unsigned long n = atomic_fetch_add(&t->bad, 1);

	if (n < MAX_REPORT)
		say("pid %u%s: %s mismatch at 0x%" PRIx64 ": expected %016" PRIx64 " got %016" PRIx64
		    "%s",
		    t->pid, t->who, what, addr, want, got,
		    got == pagehash_zero() ? " (a zero page)" : "");
	else if (n == MAX_REPORT)
		say("pid %u%s: more mismatches, not shown", t->pid, t->who);
}

static void check_page(struct task *t, uint64_t addr, uint64_t want)
{
	uint64_t got = pagehash((const void *)(uintptr_t)addr);

	atomic_fetch_add(&t->checked, 1);
	if (got != want)
		report(t, addr, want, got, "content");
}

static uint64_t page_addr(const struct task *t, uint64_t g, size_t *vi)
{
	size_t lo = 0, hi = t->nv;

	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (t->first[mid] <= g)
			lo = mid;
		else
			hi = mid;
	}
	if (vi)
		*vi = lo;
	return t->v[lo].start + (g - t->first[lo]) * PAGE;
}

static unsigned fh_bucket(uint64_t ns)
{
	unsigned lg, b;

	if (ns < FH_SUB)
		return (unsigned)ns;
	lg = 63u - (unsigned)__builtin_clzll(ns);
	b = (lg - 3) * FH_SUB + (unsigned)((ns >> (lg - 4)) & (FH_SUB - 1));
	return b < FH_BUCKETS ? b : FH_BUCKETS - 1;
}

/* the smallest ns of bucket B (inverse of fh_bucket) */
static uint64_t fh_low(unsigned b)
{
	unsigned lg;

	if (b < FH_SUB)
		return b;
	lg = b / FH_SUB + 3;
	return (1ull << lg) | ((uint64_t)(b % FH_SUB) << (lg - 4));
}

/*
 * --time-faults: if registered page G at ADDR is missing (mincore), the
 * first read of it is a fault: time it as the faulting thread sees it.
 * Reads under FH_KERNEL_NS did not go to the daemon and are counted apart:
 * the page was placed between mincore and the read, or the daemon had
 * closed the uffd (all lazy pages in) and the kernel mapped a zero page
 * at a hole (measured: 1.0-1.7 us; a round trip through any handler
 * thread takes more than 5). Pages of VMAs that are not registered are
 * not timed at all.
 */
static void timed_touch(struct task *t, uint64_t g, uint64_t addr)
{
	unsigned char v = 1;
	uint64_t t0, dt;

	if (!(t->lazy[g / 64] & (1ull << (g % 64))))
		return;
	if (mincore((void *)(uintptr_t)addr, PAGE, &v) || (v & 1))
		return;
	t0 = now_ns();
	(void)*(volatile const char *)(uintptr_t)addr;
	dt = now_ns() - t0;
	if (dt < FH_KERNEL_NS)
		atomic_fetch_add_explicit(&t->sh->fh_kernel, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&t->sh->fh[fh_bucket(dt)], 1, memory_order_relaxed);
}

static void check_g(struct task *t, uint64_t g)
{
	uint64_t addr = page_addr(t, g, NULL);

	if (t->o->time_faults)
		timed_touch(t, g, addr);
	check_page(t, addr, t->exp[g]);
}

/* prints the faults --time-faults timed, as percentiles */
static void fh_print(struct shared *sh)
{
	static const struct {
		const char *name;
		double q;
	} qs[] = { { "p50", 0.5 }, { "p99", 0.99 }, { "p999", 0.999 } };
	uint64_t n = 0, acc;
	unsigned b;

	for (b = 0; b < FH_BUCKETS; b++)
		n += atomic_load(&sh->fh[b]);
	printf("lp-restore: faults timed: %" PRIu64 " (%lu more served by the kernel)", n,
	       (unsigned long)atomic_load(&sh->fh_kernel));
	for (size_t i = 0; n && i < sizeof(qs) / sizeof(qs[0]); i++) {
		uint64_t want = (uint64_t)(qs[i].q * (double)n + 0.999999);

		for (b = 0, acc = 0; b < FH_BUCKETS; b++) {
			acc += atomic_load(&sh->fh[b]);
			if (acc >= want)
				break;
		}
		/* the middle of the bucket */
		printf(" %s_us=%.2f", qs[i].name, (double)(fh_low(b) + fh_low(b + 1)) / 2 / 1000.0);
	}
	printf("\n");
}

static uint64_t *permutation(struct task *t)
{
	uint64_t *p = malloc(t->npages * sizeof(*p));

	if (!p)
		return NULL;
	for (uint64_t i = 0; i < t->npages; i++)
		p[i] = i;
	for (uint64_t i = t->npages; i > 1; i--) {
		uint64_t j = ph_rand(&t->rng) % i, x = p[i - 1];

		p[i - 1] = p[j];
		p[j] = x;
	}
	return p;
}

/* the first lazy-able writable VMA with at least MIN pages, or -1 */
static int pick_vma(const struct task *t, uint64_t min)
{
	for (size_t i = 0; i < t->nv; i++)
		if (vma_lazyable(&t->v[i]) && (t->v[i].prot & PROT_WRITE) &&
		    (t->v[i].end - t->v[i].start) / PAGE >= min)
			return (int)i;
	return -1;
}

/* a free address range of LEN bytes, above every VMA of the image */
static uint64_t free_area(const struct task *t, uint64_t len, uint64_t *cursor)
{
	uint64_t top = 0;

	for (size_t i = 0; i < t->nv; i++)
		if (t->v[i].end > top)
			top = t->v[i].end;
	top = (top + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	top += 1ull << 30;
	if (*cursor < top)
		*cursor = top;
	top = *cursor;
	*cursor += (len + (1ull << 21)) & ~((1ull << 21) - 1);
	return top;
}

/* reserve [a, a+len) with MAP_FIXED_NOREPLACE so a MREMAP_FIXED never clobbers a mapping */
static int reserve(uint64_t a, uint64_t len)
{
	void *p = mmap((void *)(uintptr_t)a, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	if (p != (void *)(uintptr_t)a) {
		munmap(p, len);
		return -EEXIST;
	}
	return 0;
}

static void check_zero(struct task *t, uint64_t addr, const char *what)
{
	uint64_t got = pagehash((const void *)(uintptr_t)addr);

	atomic_fetch_add(&t->checked, 1);
	if (got != pagehash_zero())
		report(t, addr, pagehash_zero(), got, what);
}

static int sc_seq(struct task *t)
{
	for (uint64_t g = 0; g < t->npages; g++)
		check_g(t, g);
	return 0;
}

/* --hot-pct: whether page I is in the hot set, the same blocks for the same seed in every run */
static bool page_hot(const struct task *t, uint64_t i)
{
	uint64_t h = ((i / 64) + 1) * 0x9e3779b97f4a7c15ull ^ t->o->seed;

	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return !t->o->hot_pct || h % 100 < t->o->hot_pct;
}

static int sc_random(struct task *t)
{
	uint64_t *p = permutation(t);

	if (!p)
		return say("out of memory");
	for (uint64_t i = 0; i < t->npages; i++)
		if (page_hot(t, p[i]))
			check_g(t, p[i]);
	free(p);
	return 0;
}

struct thr {
	struct task *t;
	const uint64_t *perm;
	unsigned int idx, n;
	pthread_t th;
};

static void *thr_main(void *arg)
{
	struct thr *a = arg;

	for (uint64_t i = a->idx; i < a->t->npages; i += a->n)
		check_g(a->t, a->perm[i]);
	return NULL;
}

static int sc_threads(struct task *t)
{
	unsigned int n = t->o->threads;
	struct thr *a = calloc(n, sizeof(*a));
	uint64_t *p = permutation(t);

	if (!a || !p)
		return say("out of memory");
	for (unsigned int i = 0; i < n; i++) {
		a[i] = (struct thr){ .t = t, .perm = p, .idx = i, .n = n };
		if (pthread_create(&a[i].th, NULL, thr_main, &a[i]))
			return say("pthread_create: %s", strerror(errno));
	}
	for (unsigned int i = 0; i < n; i++)
		pthread_join(a[i].th, NULL);
	free(a);
	free(p);
	return 0;
}

static int make_writable(struct task *t)
{
	for (size_t i = 0; i < t->nv; i++)
		if (!(t->v[i].prot & PROT_WRITE) &&
		    mprotect((void *)(uintptr_t)t->v[i].start, t->v[i].end - t->v[i].start,
			     PROT_READ | PROT_WRITE))
			return say("mprotect 0x%" PRIx64 ": %s", t->v[i].start, strerror(errno));
	return 0;
}

static int sc_fork(struct task *t)
{
	uint64_t marker, win = t->npages < 4096 ? t->npages : 4096;
	pid_t kid;
	int st, is_kid;

	/*
	 * Touch ~30% of a 16 MiB window, then fork at once: the fork must
	 * come while most pages are still lazy (the daemon is still there),
	 * so that the child has both COW-shared present pages and missing
	 * ones only its own uffd (from the FORK event) can fill.
	 */
	for (uint64_t g = 0; g < win; g++)
		if (ph_rand(&t->rng) % 10 < 3)
			check_g(t, g);
	kid = fork();
	if (kid < 0)
		return say("fork: %s", strerror(errno));
	is_kid = kid == 0;
	if (is_kid) {
		t->who = " (forked child)";
		atomic_store(&t->bad, 0);
	}
	/* each verifies every page: the child's untouched pages come through its own uffd */
	if (is_kid) {
		for (uint64_t g = t->npages; g-- > 0;)
			check_g(t, g);
	} else {
		sc_seq(t);
	}
	if (make_writable(t))
		return -1;
	marker = (is_kid ? 0xc41d000000000000ull : 0xa4e0000000000000ull) ^ (uint64_t)getpid() << 20;
	for (uint64_t g = 0; g < t->npages; g++)
		*(volatile uint64_t *)(uintptr_t)page_addr(t, g, NULL) = marker ^ g;
	for (uint64_t g = 0; g < t->npages; g++) {
		uint64_t a = page_addr(t, g, NULL), got = *(volatile uint64_t *)(uintptr_t)a;

		atomic_fetch_add(&t->checked, 1);
		if (got != (marker ^ g))
			report(t, a, marker ^ g, got, "marker (fork divergence)");
	}
	if (is_kid) {
		say("pid %u (forked child): checked %lu pages, %lu mismatches", t->pid,
		    atomic_load(&t->checked), atomic_load(&t->bad));
		_exit(atomic_load(&t->bad) ? 1 : 0);
	}
	if (waitpid(kid, &st, 0) != kid)
		return say("waitpid forked child: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		say("pid %u: forked child failed (status 0x%x)", t->pid, st);
		atomic_fetch_add(&t->bad, 1);
	}
	return 0;
}

/* checks every page except [skip_lo, skip_hi) (global indices) */
static void check_rest(struct task *t, uint64_t skip_lo, uint64_t skip_hi)
{
	for (uint64_t g = 0; g < t->npages; g++)
		if (g < skip_lo || g >= skip_hi)
			check_g(t, g);
}

static int sc_mremap(struct task *t)
{
	int vi = pick_vma(t, 16);
	uint64_t n, lo, cnt, src, dst, cursor = 0;

	if (vi < 0)
		return say("mremap: no writable lazy VMA of 16 pages");
	n = (t->v[vi].end - t->v[vi].start) / PAGE;
	lo = n / 4;
	cnt = n / 4;
	src = t->v[vi].start + lo * PAGE;
	dst = free_area(t, cnt * PAGE, &cursor);
	if (reserve(dst, cnt * PAGE))
		return say("mremap: target 0x%" PRIx64 " not free", dst);
	if (mremap((void *)(uintptr_t)src, cnt * PAGE, cnt * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)dst) != (void *)(uintptr_t)dst)
		return say("mremap 0x%" PRIx64 " -> 0x%" PRIx64 ": %s", src, dst, strerror(errno));
	for (uint64_t i = 0; i < cnt; i++)
		check_page(t, dst + i * PAGE, t->exp[t->first[vi] + lo + i]);
	check_rest(t, t->first[vi] + lo, t->first[vi] + lo + cnt);
	return 0;
}

static int sc_munmap(struct task *t)
{
	int vi = pick_vma(t, 16);
	uint64_t n, lo, cnt, a, g0;
	void *p;

	if (vi < 0)
		return say("munmap: no writable lazy VMA of 16 pages");
	n = (t->v[vi].end - t->v[vi].start) / PAGE;
	lo = n / 2;
	cnt = n / 8;
	g0 = t->first[vi] + lo;
	a = t->v[vi].start + lo * PAGE;
	for (uint64_t i = 0; i < cnt; i += 3)
		check_g(t, g0 + i);
	if (munmap((void *)(uintptr_t)a, cnt * PAGE))
		return say("munmap: %s", strerror(errno));
	check_rest(t, g0, g0 + cnt);
	p = mmap((void *)(uintptr_t)a, cnt * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != (void *)(uintptr_t)a)
		return say("mmap over the hole: %s", strerror(errno));
	for (uint64_t i = 0; i < cnt; i++)
		check_zero(t, a + i * PAGE, "fresh mapping over munmap'ed range");
	return 0;
}

static int sc_dontneed(struct task *t)
{
	int vi = pick_vma(t, 16);
	uint64_t n, lo, cnt, a, g0;

	if (vi < 0)
		return say("dontneed: no writable lazy VMA of 16 pages");
	n = (t->v[vi].end - t->v[vi].start) / PAGE;
	lo = n / 3;
	cnt = n / 8;
	g0 = t->first[vi] + lo;
	a = t->v[vi].start + lo * PAGE;
	for (uint64_t i = 0; i < cnt; i += 5)
		check_g(t, g0 + i);
	if (madvise((void *)(uintptr_t)a, cnt * PAGE, MADV_DONTNEED))
		return say("madvise DONTNEED: %s", strerror(errno));
	for (uint64_t i = 0; i < cnt; i++)
		check_zero(t, a + i * PAGE, "after MADV_DONTNEED");
	check_rest(t, g0, g0 + cnt);
	/* late COPYs of old data would show up now */
	for (uint64_t i = 0; i < cnt; i++)
		check_zero(t, a + i * PAGE, "after MADV_DONTNEED (late)");
	return 0;
}

/*
 * dontneed-race: right after "go", while prefetch fills the VMAs, drop,
 * unmap and move large untouched ranges, and check that where the kernel
 * says zeros we read zeros, and moved pages keep their content.
 */
enum { ST_ORIG, ST_ZERO, ST_FRESH, ST_GONE };

/*
 * A page of VMA VI that is missing while the page before it is present
 * (mincore), picked from the first few such transitions after a random
 * point; UINT64_MAX if there is none (all filled, or nothing yet).
 */
static uint64_t frontier(struct task *t, size_t vi, unsigned char *vec, const uint8_t *st,
			 uint64_t r)
{
	uint64_t n = (t->v[vi].end - t->v[vi].start) / PAGE, start = r % n;
	const uint8_t *s = st + t->first[vi];

	/* mincore fails on unmapped pages: ask for each run of mapped ones */
	for (uint64_t a = 0, b; a < n; a = b) {
		for (b = a; b < n && (s[b] == ST_GONE) == (s[a] == ST_GONE); b++)
			;
		if (s[a] == ST_GONE)
			memset(vec + a, 0, b - a);
		else if (mincore((void *)(uintptr_t)(t->v[vi].start + a * PAGE), (b - a) * PAGE, vec + a))
			return UINT64_MAX;
	}
	/* present pages we never touched were filled by the daemon: its frontier */
	/*
	 * 16 present pages then 16 missing ones: image holes (runs of a few
	 * pages the daemon leaves to faults) do not look like that.
	 */
	for (uint64_t k = 0; k < n; k++) {
		uint64_t p = (start + k) % n, i;

		if (p < 16 || p + 16 > n || !(vec[p - 1] & 1) || (vec[p] & 1) || s[p - 1] != ST_ORIG)
			continue;
		for (i = 1; i <= 16 && (vec[p - i] & 1) && !(vec[p + i - 1] & 1); i++)
			;
		if (i > 16)
			return p;
	}
	return UINT64_MAX;
}

static int sc_race(struct task *t)
{
	uint8_t *st = calloc(t->npages, 1);
	uint64_t cursor = 0, nops[3] = { 0 }, maxv = 0, misses = 0;
	unsigned char *mincore_vec;
	int ret = -1;

	for (size_t i = 0; i < t->nv; i++)
		if ((t->v[i].end - t->v[i].start) / PAGE > maxv)
			maxv = (t->v[i].end - t->v[i].start) / PAGE;
	mincore_vec = malloc(maxv);
	if (!st)
		return say("out of memory");
	for (unsigned int op = 0; op < t->o->race_ops; op++) {
		uint64_t r = ph_rand(&t->rng), g0 = 0, cnt = 0, a, n;
		bool at_frontier = false;
		int kind = (int)(r % 4) < 2 ? 0 : (int)(r % 4) - 1, vi = -1;	/* half DONTNEED */
		size_t vj;

		/*
		 * A range of 64..1024 pages in a writable lazy VMA, avoiding gone
		 * pages, mostly right at a prefetch frontier: mincore() shows
		 * where present pages end, which is where a COPY is in flight.
		 */
		for (int tries = 0; tries < 32 && vi < 0; tries++) {
			size_t i = ph_rand(&t->rng) % t->nv;
			uint64_t off;
			int ok = 1;

			if (!vma_lazyable(&t->v[i]) || !(t->v[i].prot & PROT_WRITE))
				continue;
			n = (t->v[i].end - t->v[i].start) / PAGE;
			cnt = 64 + ph_rand(&t->rng) % 961;
			if (cnt > n / 4)
				cnt = n / 4 ? n / 4 : 1;
			off = ph_rand(&t->rng) % (n - cnt + 1);
			if (tries < 24 && mincore_vec && ph_rand(&t->rng) % 8) {
				uint64_t f = frontier(t, i, mincore_vec, st, ph_rand(&t->rng));

				if (f == UINT64_MAX)
					continue;
				/* small ranges: many shots at the chunk in flight */
				cnt = 16 + ph_rand(&t->rng) % 241;
				if (cnt > n / 4)
					cnt = n / 4 ? n / 4 : 1;
				off = f > 8 ? f - 8 : 0;
				if (off > n - cnt)
					off = n - cnt;
				at_frontier = true;
			}
			g0 = t->first[i] + off;
			for (uint64_t k = 0; k < cnt && ok; k++)
				ok = st[g0 + k] != ST_GONE && (kind != 2 || st[g0 + k] != ST_FRESH);
			if (ok)
				vi = (int)i;
		}
		if (vi < 0)
			continue;
		/* prefetch has finished when no frontier shows up for a while: stop */
		misses = at_frontier ? 0 : misses + 1;
		if (misses > 64 && op > 64)
			break;
		a = page_addr(t, g0, &vj);
		nops[kind]++;
		if (kind == 0) {
			if (madvise((void *)(uintptr_t)a, cnt * PAGE, MADV_DONTNEED)) {
				say("madvise DONTNEED 0x%" PRIx64 ": %s", a, strerror(errno));
				goto out;
			}
			/*
			 * Half the time leave the range untouched until the final
			 * pass: a COPY of old data issued after the REMOVE event was
			 * read would land there instead of meeting EEXIST.
			 */
			for (uint64_t k = 0; k < cnt; k++) {
				st[g0 + k] = st[g0 + k] == ST_FRESH ? ST_FRESH : ST_ZERO;
				if (r & (1ull << 40))
					check_zero(t, a + k * PAGE, "race: after MADV_DONTNEED");
			}
		} else if (kind == 1) {
			void *p;

			if (munmap((void *)(uintptr_t)a, cnt * PAGE)) {
				say("munmap 0x%" PRIx64 ": %s", a, strerror(errno));
				goto out;
			}
			p = mmap((void *)(uintptr_t)a, cnt * PAGE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p != (void *)(uintptr_t)a) {
				say("mmap 0x%" PRIx64 " after munmap: %s", a, strerror(errno));
				goto out;
			}
			for (uint64_t k = 0; k < cnt; k++) {
				st[g0 + k] = ST_FRESH;
				check_zero(t, a + k * PAGE, "race: fresh mapping after munmap");
			}
		} else {
			uint64_t dst = free_area(t, cnt * PAGE, &cursor);

			if (reserve(dst, cnt * PAGE)) {
				say("race: target 0x%" PRIx64 " not free", dst);
				goto out;
			}
			if (mremap((void *)(uintptr_t)a, cnt * PAGE, cnt * PAGE,
				   MREMAP_MAYMOVE | MREMAP_FIXED,
				   (void *)(uintptr_t)dst) != (void *)(uintptr_t)dst) {
				say("mremap 0x%" PRIx64 " -> 0x%" PRIx64 " (%" PRIu64 " pages): %s", a, dst,
				    cnt, strerror(errno));
				goto out;
			}
			for (uint64_t k = 0; k < cnt; k++) {
				if (st[g0 + k] == ST_ZERO)
					check_zero(t, dst + k * PAGE, "race: moved after MADV_DONTNEED");
				else
					check_page(t, dst + k * PAGE, t->exp[g0 + k]);
				st[g0 + k] = ST_GONE;
			}
			/* drop it: a later COPY there would be no one's business but the kernel's */
			munmap((void *)(uintptr_t)dst, cnt * PAGE);
		}
	}
	/* everything left, once more: late COPYs of old data into zeroed ranges show here */
	for (uint64_t g = 0; g < t->npages; g++) {
		uint64_t a = page_addr(t, g, NULL);

		if (st[g] == ST_ORIG)
			check_page(t, a, t->exp[g]);
		else if (st[g] != ST_GONE)
			check_zero(t, a, st[g] == ST_ZERO ? "race: final, DONTNEED'ed range"
							  : "race: final, fresh mapping");
	}
	say("pid %u: race: %" PRIu64 " dontneed, %" PRIu64 " munmap, %" PRIu64 " mremap", t->pid,
	    nops[0], nops[1], nops[2]);
	ret = 0;
out:
	free(st);
	free(mincore_vec);
	return ret;
}

/*
 * stress: for --stress-seconds, --stress-threads workers read and write
 * random pages while --stress-storms storm threads fork, move ranges away
 * and back (mremap), munmap+mmap and MADV_DONTNEED them: while pages are
 * lazy mostly where prefetch is copying (seen with mincore, or made by a
 * fault of the storm's own), else anywhere. The model, per page: a claim
 * byte (a worker or a storm owns the page while it touches it; nobody
 * waits for a claimed page, it goes elsewhere), the hash the page must
 * have (image content, zeros, or what was written last) and why. Every
 * page is checked at the end; a forked child checks a sample of the pages
 * no one owned when it was forked.
 *
 * Why a fork child's view of the model is consistent: each page's claim,
 * hash and data are written by its owner in the order data, hash, claim
 * release, and during fork() a write either lands in the page the child
 * shares or stalls until fork() returns, so the child sees a prefix of
 * every thread's writes.
 */
enum { SP_FREE, SP_BUSY };
enum { SW_IMAGE, SW_WRITTEN, SW_DONTNEED, SW_FRESH, SW_MOVED };

static const char *const stress_why[] = {
	[SW_IMAGE] = "image content",
	[SW_WRITTEN] = "what a worker wrote",
	[SW_DONTNEED] = "zeros after MADV_DONTNEED",
	[SW_FRESH] = "zeros of a fresh mmap after munmap",
	[SW_MOVED] = "content kept across mremap away and back",
};

#define STRESS_MAX_KIDS 16
#define STRESS_KID_TIMEOUT 30		/* s: a forked child that takes longer is hung */
#define STRESS_JOIN_GRACE 30		/* s: for threads to stop once told */
#define STRESS_MAX_RANGE 256		/* pages per storm op */
#define STRESS_HOT 512			/* pages in a worker's working set */
#define STRESS_COLD 32			/* one touch in this many is a new page */
#define STRESS_STEER_US 2000		/* how long a storm watches for prefetch */
#define STRESS_SLOTS 64			/* mremap targets per storm, 2 MiB apart */
#define STRESS_KB 96			/* present pages behind a frontier */
#define STRESS_FORK_SHARE 10		/* forks take at most 1/this of the time */
#define STRESS_OPLOG 65536		/* storm ops remembered, per storm, for a mismatch's history */
#define STRESS_BAD_PAGES 4		/* mismatched pages whose history is printed */

/* in a MAP_SHARED page: forked children add theirs */
struct stress_cnt {
	atomic_ulong reads, writes, forks, fork_checked, fork_failed, mremaps, mremap_skipped, munmaps,
		dontneeds, frontier_ops, lazy_ops, storm_ops;
};

struct stress;

struct sworker {
	struct stress *s;
	unsigned int idx;
	pthread_t th;
	bool started;
	uint64_t rng;
	_Atomic uint64_t at;		/* the page it is on, for a hang report */
	uint64_t hot[STRESS_HOT];	/* its working set */
	unsigned int nhot;
	uint64_t buf[PH_WORDS];
};

struct sstorm {
	struct stress *s;
	unsigned int idx;
	pthread_t th;
	bool started;
	int ret;
	uint64_t rng, slots;		/* first mremap target */
	unsigned char *vec;		/* mincore of one VMA */
	unsigned char *vec2;		/* and a moment before */
	pid_t kids[STRESS_MAX_KIDS];
	unsigned int nkids;
	_Atomic uint64_t at;
	_Atomic(const char *) op;
	double next_lazy_check, t0;
	uint64_t nops;
	struct sop_log {
		float t;		/* s since the start */
		uint8_t kind, at_frontier;
		uint32_t g0, cnt;
		uint64_t dst;
	} *oplog;
	atomic_ulong nlog;
	uint64_t buf[PH_WORDS];
};

struct stress {
	struct task *t;
	_Atomic uint8_t *claim;
	uint64_t *want;			/* the hash each page must have */
	uint8_t *why;			/* SW_*: why it has that */
	uint32_t *seg;			/* 0: the restored VMA; else the munmap+mmap that made it */
	atomic_uint next_seg;
	atomic_int stop, lazy;
	atomic_ulong forks_started;
	_Atomic double next_fork;	/* no fork before this */
	int *wv;			/* writable lazy VMAs */
	size_t nwv;
	uint64_t zero, maxv;
	double t_start, t_end;
	_Atomic double t_unlazy;	/* when smaps first showed no registration */
	struct stress_cnt *c;
	float *last_ok;			/* per page: when it was last seen right (s since the start) */
	atomic_ulong nbad_g;
	uint64_t bad_g[STRESS_BAD_PAGES];
	float bad_t[STRESS_BAD_PAGES], bad_ok[STRESS_BAD_PAGES];
	struct sworker *w;
	struct sstorm *st;
};

/* for the SIGALRM handler only: what to name in a hang report */
static struct stress *stress_hang;

static size_t stress_fmt_u(char *p, uint64_t v, int base)
{
	char tmp[24];
	size_t n = 0, k = 0;

	do
		tmp[n++] = "0123456789abcdef"[v % (unsigned)base];
	while ((v /= (unsigned)base));
	while (n)
		p[k++] = tmp[--n];
	return k;
}

static void stress_put(const char *a, uint64_t x, int base, const char *b)
{
	char buf[256];
	size_t n = 0, l;

	l = strlen(a);
	memcpy(buf + n, a, l);
	n += l;
	if (base)
		n += stress_fmt_u(buf + n, x, base);
	l = strlen(b);
	memcpy(buf + n, b, l);
	n += l;
	if (write(2, buf, n) < 0)
		return;
}

/* async-signal-safe: names every thread's page, then exits */
static void stress_alarm(int sig)
{
	struct stress *s = stress_hang;

	(void)sig;
	stress_put("lp-restore[", (uint64_t)getpid(), 10,
		   "]: HANG: scenario stress did not finish in time (a fault never served?)\n");
	for (unsigned int i = 0; s && i < s->t->o->stress_threads; i++)
		stress_put("    worker on page 0x", atomic_load(&s->w[i].at), 16, "\n");
	for (unsigned int i = 0; s && i < s->t->o->stress_storms; i++) {
		const char *op = atomic_load(&s->st[i].op);

		stress_put("    storm at 0x", atomic_load(&s->st[i].at), 16, ": ");
		stress_put(op ? op : "-", 0, 0, "\n");
	}
	_exit(3);
}

static bool stress_claim(struct stress *s, uint64_t g)
{
	uint8_t f = SP_FREE;

	return atomic_compare_exchange_strong_explicit(&s->claim[g], &f, SP_BUSY, memory_order_acquire,
						       memory_order_relaxed);
}

static void stress_release(struct stress *s, uint64_t g)
{
	atomic_store_explicit(&s->claim[g], SP_FREE, memory_order_release);
}

static void stress_bad(struct stress *s, uint64_t g, uint64_t addr, uint64_t got, const char *ctx)
{
	struct task *t = s->t;
	uint64_t want = s->want[g];
	unsigned long n = atomic_fetch_add(&t->bad, 1);
	const char *what = "";

	if (n < STRESS_BAD_PAGES) {
		unsigned long k = atomic_fetch_add(&s->nbad_g, 1);

		if (k < STRESS_BAD_PAGES) {
			s->bad_g[k] = g;
			s->bad_t[k] = (float)(now() - s->t_start);
			s->bad_ok[k] = s->last_ok[g];
		}
	}
	if (got == t->exp[g] && want != t->exp[g])
		what = " (the image's content: a COPY that came too late)";
	else if (got == s->zero)
		what = " (a zero page)";
	if (n < MAX_REPORT)
		say("pid %u%s: stress: %s: page 0x%" PRIx64 " should hold %s (%016" PRIx64
		    ") but has %016" PRIx64 "%s; %.3f s in, %s %.3f s",
		    t->pid, t->who, ctx, addr, stress_why[s->why[g]], want, got, what, now() - s->t_start,
		    atomic_load(&s->lazy) ? "lazy for" : "nothing registered since",
		    (atomic_load(&s->lazy) ? now() : atomic_load(&s->t_unlazy)) - s->t_start);
	else if (n == MAX_REPORT)
		say("pid %u%s: more mismatches, not shown", t->pid, t->who);
}

/* checks the page of index G, now at ADDR (it may have been moved) */
static void stress_check(struct stress *s, uint64_t g, uint64_t addr, const char *ctx)
{
	uint64_t got = pagehash((const void *)(uintptr_t)addr);

	atomic_fetch_add_explicit(&s->t->checked, 1, memory_order_relaxed);
	if (got != s->want[g])
		stress_bad(s, g, addr, got, ctx);
	else
		s->last_ok[g] = (float)(now() - s->t_start);
}

/* read-modify-write of one word, through BUF: the page stays checkable */
static void stress_rmw(struct stress *s, uint64_t g, uint64_t addr, uint64_t *buf, uint64_t word,
		       uint64_t val, const char *ctx)
{
	uint64_t got;

	memcpy(buf, (const void *)(uintptr_t)addr, PAGE);
	got = pagehash(buf);
	atomic_fetch_add_explicit(&s->t->checked, 1, memory_order_relaxed);
	if (got != s->want[g])
		stress_bad(s, g, addr, got, ctx);
	else
		s->last_ok[g] = (float)(now() - s->t_start);
	buf[word] = val;
	((volatile uint64_t *)(uintptr_t)addr)[word] = val;
	s->want[g] = pagehash(buf);
	s->why[g] = SW_WRITTEN;
}

static void *stress_worker(void *arg)
{
	struct sworker *w = arg;
	struct stress *s = w->s;
	struct task *t = s->t;
	uint64_t marker = 0x5700000000000000ull ^ ((uint64_t)w->idx << 44) ^ ((uint64_t)getpid() << 20);
	uint64_t seq = 0;

	/*
	 * Below the daemon and the storms (SCHED_IDLE: the CPU they leave):
	 * on 2 cores, 16 page-hashing workers (or 400 in 200 processes)
	 * would starve the daemon's event reads and the storms, whose
	 * layout events are the point of the exercise. A fault blocks the
	 * worker anyway; the daemon serves it at its own priority.
	 */
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &(struct sched_param){ 0 });
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		uint64_t r = ph_rand(&w->rng), g, a;
		unsigned int op = (unsigned int)(r >> 40) % 16;
		size_t vi;

		/*
		 * Mostly a page of its working set (present, unless a storm
		 * dropped it), now and then a new one (a fault, most likely):
		 * faults alone would fill the memory and leave prefetch, and
		 * its races with the storms, nothing to do.
		 */
		if (w->nhot == STRESS_HOT && (r >> 20) % STRESS_COLD)
			g = w->hot[(r >> 24) % STRESS_HOT];
		else
			g = w->hot[w->nhot < STRESS_HOT ? w->nhot++ : (r >> 24) % STRESS_HOT] = r % t->npages;
		if (!stress_claim(s, g))
			continue;
		a = page_addr(t, g, &vi);
		atomic_store_explicit(&w->at, a, memory_order_relaxed);
		if (op < 7 || !(t->v[vi].prot & PROT_WRITE)) {
			stress_check(s, g, a, "worker read");
			atomic_fetch_add_explicit(&s->c->reads, 1, memory_order_relaxed);
		} else if (op < 11) {
			stress_rmw(s, g, a, w->buf, (r >> 8) % PH_WORDS, marker ^ ++seq, "worker read before a write");
			atomic_fetch_add_explicit(&s->c->writes, 1, memory_order_relaxed);
		} else if (op < 13) {
			/* the whole page, unread: a write fault on a missing page */
			for (unsigned int i = 0; i < PH_WORDS; i++)
				w->buf[i] = ph_mix(marker ^ (g << 12) ^ (++seq << 24) ^ i);
			memcpy((void *)(uintptr_t)a, w->buf, PAGE);
			s->want[g] = pagehash(w->buf);
			s->why[g] = SW_WRITTEN;
			atomic_fetch_add_explicit(&s->c->writes, 1, memory_order_relaxed);
		} else {
			/* a run of pages in order: what fault-around and prefetch race on */
			uint64_t end = t->first[vi + 1], n = 1 + (r >> 16) % 64, k;

			stress_check(s, g, a, "worker read (run)");
			for (k = 1; k < n && g + k < end && stress_claim(s, g + k); k++) {
				stress_check(s, g + k, a + k * PAGE, "worker read (run)");
				stress_release(s, g + k);
			}
			atomic_fetch_add_explicit(&s->c->reads, k, memory_order_relaxed);
		}
		stress_release(s, g);
	}
	atomic_store(&w->at, 0);
	return NULL;
}

/* does any VMA still have a userfaultfd registration (smaps "um")? */
static int stress_lazy_now(void)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	int lazy = 0;

	if (!f)
		return 0;
	while (!lazy && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmFlags:", 8) && strstr(line, " um"))
			lazy = 1;
	fclose(f);
	return lazy;
}

/*
 * Where a prefetch chunk is landing in VMA VI right now: a missing page
 * right after a run of pages that became present between two mincore()
 * looks, one right after the other. With workers faulting everywhere,
 * prefetch follows their faults, so there is no single frontier to find
 * once. A fault brings in 16 pages and a worker's run a few more; prefetch
 * places a chunk of 256 pages 64 at a time, so a run of 24 new pages is
 * prefetch at work. Failing that, KB present pages then KA missing ones.
 * UINT64_MAX if none (all in, or a hole another storm made).
 */
static uint64_t stress_frontier(struct stress *s, struct sstorm *st, size_t vi)
{
	struct task *t = s->t;
	uint64_t n = (t->v[vi].end - t->v[vi].start) / PAGE, kb = n / 4, ka = n / 16, start;
	unsigned char *before = st->vec2, *cur = st->vec;
	void *base = (void *)(uintptr_t)t->v[vi].start;

	kb = kb > STRESS_KB ? STRESS_KB : kb < 2 ? 2 : kb;
	ka = ka > 16 ? 16 : ka < 2 ? 2 : ka;
	if (n < kb + ka + 1 || mincore(base, n * PAGE, before) || mincore(base, n * PAGE, cur))
		return UINT64_MAX;
	for (int pass = 0; pass < 2; pass++) {
		start = ph_rand(&st->rng) % n;
		for (uint64_t j = 0; j < n; j++) {
			uint64_t p = (start + j) % n, i, want = kb < 24 ? kb : 24;

			if (p < kb || p + ka > n || !(cur[p - 1] & 1) || (cur[p] & 1))
				continue;
			if (pass == 0) {
				for (i = 1; i <= want && (cur[p - i] & 1) && !(before[p - i] & 1); i++)
					;
				if (i > want)
					return p;
				continue;
			}
			for (i = 1; i <= kb && (cur[p - i] & 1); i++)
				;
			if (i <= kb)
				continue;
			for (i = 0; i < ka && !(cur[p + i] & 1); i++)
				;
			if (i == ka)
				return p;
		}
	}
	return UINT64_MAX;
}

/*
 * Makes a frontier and catches prefetch at it: a fault on a lazy page X
 * makes the daemon copy X and the pages after it (fault-around) and send
 * prefetch to where they end; watch the pages after that (mincore, for at
 * most STRESS_STEER_US) until the first of them is placed, and return the
 * first one still missing then: the chunk prefetch has looked up and is
 * copying. UINT64_MAX if it went elsewhere (or X was not lazy).
 */
static uint64_t stress_steer(struct stress *s, struct sstorm *st, size_t vi)
{
	struct task *t = s->t;
	uint64_t n = (t->v[vi].end - t->v[vi].start) / PAGE, w0, wn = n < 1024 ? n : 1024, x, e, l;
	unsigned char *v = st->vec;
	double until;

	w0 = ph_rand(&st->rng) % (n - wn + 1);
	if (mincore((void *)(uintptr_t)(t->v[vi].start + w0 * PAGE), wn * PAGE, v))
		return UINT64_MAX;
	/* a missing page nobody has touched or dropped: still lazy */
	for (x = ph_rand(&st->rng) % wn, l = 0; l < wn && (v[x] & 1); l++, x = (x + 1) % wn)
		;
	if (l == wn)
		return UINT64_MAX;
	x += w0;
	if (!stress_claim(s, t->first[vi] + x))
		return UINT64_MAX;
	l = s->why[t->first[vi] + x] == SW_IMAGE;
	if (l)
		stress_check(s, t->first[vi] + x, t->v[vi].start + x * PAGE, "storm, a fault to steer prefetch");
	stress_release(s, t->first[vi] + x);
	if (!l)
		return UINT64_MAX;
	l = n - x < 320 ? n - x : 320;
	if (l < 2 || mincore((void *)(uintptr_t)(t->v[vi].start + x * PAGE), l * PAGE, v))
		return UINT64_MAX;
	for (e = 1; e < l && (v[e] & 1); e++)
		;
	until = now() + STRESS_STEER_US / 1e6;
	while (e < l && now() < until) {
		uint64_t q;

		if (mincore((void *)(uintptr_t)(t->v[vi].start + x * PAGE), l * PAGE, v))
			return UINT64_MAX;
		for (q = e; q < l && !(v[q] & 1); q++)
			;
		if (q == l)
			continue;
		for (; q < l && (v[q] & 1); q++)
			;
		return q < l ? x + q : UINT64_MAX;
	}
	return UINT64_MAX;
}

/*
 * The frontier found at F a moment ago has moved on since: the first
 * missing page from F, from a fresh mincore of what lies just ahead.
 */
static uint64_t stress_refresh(struct stress *s, struct sstorm *st, size_t vi, uint64_t f)
{
	struct task *t = s->t;
	uint64_t n = (t->v[vi].end - t->v[vi].start) / PAGE, wn = n - f;

	wn = wn < 1024 ? wn : 1024;
	if (mincore((void *)(uintptr_t)(t->v[vi].start + f * PAGE), wn * PAGE, st->vec))
		return f;
	for (uint64_t i = 0; i < wn; i++)
		if (!(st->vec[i] & 1))
			return f + i;
	return UINT64_MAX;
}

static void stress_reap(struct stress *s, struct sstorm *st, bool block)
{
	struct task *t = s->t;
	double deadline = now() + STRESS_KID_TIMEOUT + 5;

	for (unsigned int i = 0; i < st->nkids;) {
		int stt;
		pid_t r = waitpid(st->kids[i], &stt, WNOHANG);

		if (r == 0 && block && now() < deadline) {
			int pfd = (int)syscall(SYS_pidfd_open, st->kids[i], 0);
			struct pollfd p = { .fd = pfd, .events = POLLIN };

			if (pfd >= 0) {
				poll(&p, 1, (int)((deadline - now()) * 1000) + 1);
				close(pfd);
			}
			continue;
		}
		if (r == 0 && block) {
			say("pid %u: stress: HANG: forked child %d not finished after %d s, killing it", t->pid,
			    st->kids[i], STRESS_KID_TIMEOUT + 5);
			kill(st->kids[i], SIGKILL);
			waitpid(st->kids[i], &stt, 0);
			stt = -1;
		} else if (r == 0) {
			i++;
			continue;
		}
		if (r < 0 || stt || r != st->kids[i]) {
			if (stt > 0 && WIFSIGNALED(stt))
				say("pid %u: stress: forked child %d killed by signal %d%s", t->pid, st->kids[i],
				    WTERMSIG(stt), WTERMSIG(stt) == SIGALRM ? " (its alarm: hung)" : "");
			else if (stt > 0)
				say("pid %u: stress: forked child %d failed (exit %d)", t->pid, st->kids[i],
				    WEXITSTATUS(stt));
			atomic_fetch_add(&s->c->fork_failed, 1);
			atomic_fetch_add(&t->bad, 1);
		}
		st->kids[i] = st->kids[--st->nkids];
	}
}

/* the forked child: checks a sample of the pages no one owned at the fork */
static void stress_kid(struct stress *s, struct sstorm *st)
{
	struct task *t = s->t;
	uint64_t g0;

	signal(SIGALRM, SIG_DFL);	/* the parent names it as hung */
	alarm(STRESS_KID_TIMEOUT);
	t->who = " (forked child)";
	atomic_store(&t->bad, 0);
	atomic_store(&t->checked, 0);
	st->rng ^= (uint64_t)getpid() << 32;
	for (int i = 0; i < 256; i++) {
		uint64_t g = ph_rand(&st->rng) % t->npages;

		if (atomic_load(&s->claim[g]) == SP_FREE)
			stress_check(s, g, page_addr(t, g, NULL), "forked child");
	}
	/* and a run: most of it still lazy in a young process */
	g0 = ph_rand(&st->rng) % t->npages;
	for (uint64_t g = g0; g < g0 + 64 && g < t->npages; g++)
		if (atomic_load(&s->claim[g]) == SP_FREE)
			stress_check(s, g, page_addr(t, g, NULL), "forked child (run)");
	atomic_fetch_add(&s->c->fork_checked, atomic_load(&t->checked));
	_exit(atomic_load(&t->bad) ? 1 : 0);
}

enum { SOP_FORK, SOP_MREMAP, SOP_MUNMAP, SOP_DONTNEED };

/* one storm op on [g0, g0 + cnt) of VMA VI, every page claimed; 0, or -1 if the layout is lost */
static int stress_op(struct stress *s, struct sstorm *st, int kind, uint64_t g0, uint64_t cnt)
{
	struct task *t = s->t;
	uint64_t a = page_addr(t, g0, NULL), len = cnt * PAGE, r = ph_rand(&st->rng);

	atomic_store(&st->at, a);
	if (kind == SOP_DONTNEED) {
		atomic_store(&st->op, "MADV_DONTNEED");
		if (madvise((void *)(uintptr_t)a, len, MADV_DONTNEED))
			return say("pid %u: stress: madvise DONTNEED 0x%" PRIx64 " +%" PRIu64 ": %s", t->pid, a,
				   cnt, strerror(errno));
		for (uint64_t k = 0; k < cnt; k++) {
			s->want[g0 + k] = s->zero;
			s->why[g0 + k] = SW_DONTNEED;
		}
		/* a quarter of the time, look at once (a fault then zero-fills the page first); else a late COPY lands and shows later */
		if ((r & 3) == 0)
			for (uint64_t k = 0; k < cnt; k++)
				stress_check(s, g0 + k, a + k * PAGE, "storm, right after MADV_DONTNEED");
		atomic_fetch_add(&s->c->dontneeds, 1);
	} else if (kind == SOP_MUNMAP) {
		void *p;
		uint32_t id = atomic_fetch_add(&s->next_seg, 1);

		atomic_store(&st->op, "munmap+mmap");
		if (munmap((void *)(uintptr_t)a, len))
			return say("pid %u: stress: munmap 0x%" PRIx64 ": %s", t->pid, a, strerror(errno));
		p = mmap((void *)(uintptr_t)a, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != (void *)(uintptr_t)a)
			return say("pid %u: stress: mmap over the munmap'ed 0x%" PRIx64 ": %s", t->pid, a,
				   p == MAP_FAILED ? strerror(errno) : "placed elsewhere");
		for (uint64_t k = 0; k < cnt; k++) {
			s->want[g0 + k] = s->zero;
			s->why[g0 + k] = SW_FRESH;
			s->seg[g0 + k] = id;
		}
		if (r & 1)
			for (uint64_t k = 0; k < cnt; k++)
				stress_check(s, g0 + k, a + k * PAGE, "storm, fresh mmap after munmap");
		atomic_fetch_add(&s->c->munmaps, 1);
	} else {
		uint64_t dst = st->slots + (r % STRESS_SLOTS) * (2ull << 20);

		atomic_store(&st->op, "mremap away");
		st->oplog[(atomic_load(&st->nlog) - 1) % STRESS_OPLOG].dst = dst;
		if (reserve(dst, len)) {
			atomic_fetch_add(&s->c->mremap_skipped, 1);
			return 0;
		}
		if (mremap((void *)(uintptr_t)a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (void *)(uintptr_t)dst) != (void *)(uintptr_t)dst) {
			/* the range spans VMAs the kernel would not merge: not this time */
			munmap((void *)(uintptr_t)dst, len);
			atomic_fetch_add(&s->c->mremap_skipped, 1);
			return 0;
		}
		atomic_store(&st->op, "checks at the mremap target");
		atomic_store(&st->at, dst);
		/* some pages read and written where they are now, some left lazy */
		for (uint64_t k = 0; k < cnt; k++) {
			uint64_t x = ph_rand(&st->rng) % 8;

			if (s->why[g0 + k] == SW_IMAGE)
				s->why[g0 + k] = SW_MOVED;
			if (x < 3)
				stress_check(s, g0 + k, dst + k * PAGE, "storm, at the mremap target");
			else if (x < 4)
				stress_rmw(s, g0 + k, dst + k * PAGE, st->buf, ph_rand(&st->rng) % PH_WORDS,
					   0x6d6d000000000000ull ^ r ^ k, "storm, at the mremap target");
		}
		atomic_store(&st->op, "mremap back");
		if (mremap((void *)(uintptr_t)dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (void *)(uintptr_t)a) != (void *)(uintptr_t)a)
			return say("pid %u: stress: mremap back 0x%" PRIx64 " -> 0x%" PRIx64 ": %s", t->pid,
				   dst, a, strerror(errno));
		for (uint64_t k = 0; k < cnt; k++)
			if (ph_rand(&st->rng) % 4 == 0)
				stress_check(s, g0 + k, a + k * PAGE, "storm, moved back");
		atomic_fetch_add(&s->c->mremaps, 1);
	}
	atomic_store(&st->op, "choosing");
	return 0;
}

static void *stress_storm(void *arg)
{
	struct sstorm *st = arg;
	struct stress *s = st->s;
	struct task *t = s->t;
	unsigned int max_kids = t->o->stress_children;

	st->ret = 0;
	/* the first fork early, while most pages are still lazy */
	while (!atomic_load(&s->stop) && now() < s->t_end) {
		uint64_t r = ph_rand(&st->rng), n, cnt, off, g0, k, f = UINT64_MAX;
		int kind = (int)(r % 16), vi, ret;

		if (st->nkids)
			stress_reap(s, st, false);
		if (t->o->stress_rate && !atomic_load(&s->lazy)) {
			/*
			 * Paced once nothing is lazy here: 200 storms flat out
			 * would leave the daemon no CPU for the processes that
			 * still are. While lazy, a layout event waits for the
			 * daemon to read it, which paces the storm by itself.
			 */
			struct timespec ts;
			double at;

			if (!st->t0)
				st->t0 = now();
			at = st->t0 + (double)st->nops++ / t->o->stress_rate;

			ts.tv_sec = (time_t)at;
			ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
			if (at > now())
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
		/* smaps walks every page table: seldom, and never again once nothing is registered */
		if (atomic_load(&s->lazy) && now() >= st->next_lazy_check) {
			if (!stress_lazy_now()) {
				atomic_store(&s->t_unlazy, now());
				atomic_store(&s->lazy, 0);
			}
			st->next_lazy_check = now() + 0.25;
		}
		/* DONTNEED and mremap race prefetch in the ways that hurt; a fresh mmap is never registered */
		kind = kind == 0 ? SOP_FORK : kind < 6 ? SOP_MREMAP : kind < 8 ? SOP_MUNMAP : SOP_DONTNEED;
		if (kind == SOP_FORK) {
			double t0 = now(), nf = atomic_load(&s->next_fork);
			pid_t kid;

			/*
			 * A fork copies every page table under the mmap lock:
			 * one at a time in the process (the first early, while
			 * most is lazy), paced by what the last one cost.
			 */
			if (st->nkids >= max_kids || t0 < nf ||
			    !atomic_compare_exchange_strong(&s->next_fork, &nf, 1e300))
				continue;
			if (atomic_fetch_add(&s->forks_started, 1) >= t->o->stress_forks) {
				atomic_store(&s->next_fork, 1e300);
				continue;
			}
			atomic_store(&st->op, "fork");
			kid = fork();
			if (kid < 0) {
				st->ret = say("pid %u: stress: fork: %s", t->pid, strerror(errno));
				break;
			}
			if (kid == 0)
				stress_kid(s, st);
			atomic_store(&s->next_fork, now() + (now() - t0) * STRESS_FORK_SHARE);
			st->kids[st->nkids++] = kid;
			atomic_fetch_add(&s->c->forks, 1);
			atomic_fetch_add(&s->c->storm_ops, 1);
			if (atomic_load(&s->lazy))
				atomic_fetch_add(&s->c->lazy_ops, 1);
			continue;
		}
		vi = s->wv[ph_rand(&st->rng) % s->nwv];
		n = (t->v[vi].end - t->v[vi].start) / PAGE;
		/* while there is prefetch to race with, mostly at its frontier */
		if ((r >> 32) % 8 && atomic_load(&s->lazy)) {
			if ((r >> 36) % 2) {
				f = stress_steer(s, st, (size_t)vi);
			} else {
				f = stress_frontier(s, st, (size_t)vi);
				if (f != UINT64_MAX)
					f = stress_refresh(s, st, (size_t)vi, f);
			}
		}
		if (f != UINT64_MAX) {
			/*
			 * Small ranges across the chunk in flight or just ahead
			 * of it (a prefetch chunk is 256 pages, placed 64 at a
			 * time): the pages it has looked up and not yet copied.
			 */
			cnt = 8 + ph_rand(&st->rng) % 121;
			cnt = cnt > n / 4 ? (n / 4 ? n / 4 : 1) : cnt;
			if (ph_rand(&st->rng) % 4 == 0)
				off = f > cnt / 2 ? f - cnt / 2 : 0;
			else
				off = f + ph_rand(&st->rng) % 192;
		} else {
			uint64_t cap = n / 8 > STRESS_MAX_RANGE ? STRESS_MAX_RANGE : n / 8 ? n / 8 : 1;

			cnt = 1 + ph_rand(&st->rng) % cap;
			off = ph_rand(&st->rng) % (n - cnt + 1);
		}
		if (off > n - cnt)
			off = n - cnt;
		g0 = t->first[vi] + off;
		/*
		 * Claim in order and stop at the first page a worker holds:
		 * nobody waits for anybody. mremap stays within one mapping (a
		 * fresh mmap is a VMA of its own).
		 */
		atomic_store(&st->op, "claiming");
		for (k = 0; k < cnt && stress_claim(s, g0 + k); k++) {
			if (kind == SOP_MREMAP && k && s->seg[g0 + k] != s->seg[g0]) {
				stress_release(s, g0 + k);
				break;
			}
		}
		if (!k)
			continue;
		cnt = k;
		{
			unsigned long l = atomic_load(&st->nlog);

			st->oplog[l % STRESS_OPLOG] = (struct sop_log){
				.t = (float)(now() - s->t_start), .kind = (uint8_t)kind,
				.at_frontier = f != UINT64_MAX, .g0 = (uint32_t)g0, .cnt = (uint32_t)cnt,
			};
			atomic_store(&st->nlog, l + 1);
		}
		ret = stress_op(s, st, kind, g0, cnt);
		for (k = 0; k < cnt; k++)
			stress_release(s, g0 + k);
		if (ret) {
			st->ret = -1;
			break;
		}
		atomic_fetch_add(&s->c->storm_ops, 1);
		if (f != UINT64_MAX)
			atomic_fetch_add(&s->c->frontier_ops, 1);
		if (atomic_load(&s->lazy))
			atomic_fetch_add(&s->c->lazy_ops, 1);
	}
	atomic_store(&st->op, "reaping forked children");
	stress_reap(s, st, true);
	atomic_store(&st->op, "done");
	return NULL;
}

/* what the storms did to the pages that came out wrong, for the report */
static void stress_history(struct stress *s)
{
	static const char *const kinds[] = { "fork", "mremap away and back", "munmap+mmap", "MADV_DONTNEED" };
	struct task *t = s->t;
	unsigned long nb = atomic_load(&s->nbad_g);

	for (unsigned long b = 0; b < nb && b < STRESS_BAD_PAGES; b++) {
		uint64_t g = s->bad_g[b];
		int shown = 0;

		say("pid %u: stress: history of page 0x%" PRIx64 ": wrong %.3f s in, last seen right before that %.3f s in%s",
		    t->pid, page_addr(t, g, NULL), (double)s->bad_t[b], (double)s->bad_ok[b],
		    s->bad_ok[b] ? "" : " (never)");
		for (unsigned int i = 0; i < t->o->stress_storms; i++) {
			struct sstorm *st = &s->st[i];
			unsigned long n = atomic_load(&st->nlog), k = n > STRESS_OPLOG ? n - STRESS_OPLOG : 0;

			for (; k < n && shown < 16; k++) {
				const struct sop_log *l = &st->oplog[k % STRESS_OPLOG];

				if (g < l->g0 || g >= (uint64_t)l->g0 + l->cnt)
					continue;
				shown++;
				say("    %.3f s storm %u: %s of 0x%" PRIx64 " +%u pages%s%s0x%" PRIx64, (double)l->t, i,
				    kinds[l->kind], page_addr(t, l->g0, NULL), l->cnt,
				    l->at_frontier ? " at the prefetch frontier" : "",
				    l->kind == SOP_MREMAP ? ", via " : ", page ", l->kind == SOP_MREMAP ? l->dst :
				    page_addr(t, g, NULL));
			}
		}
		if (!shown)
			say("    no storm op touched it");
	}
}

/* joins TH by DEADLINE (CLOCK_REALTIME s), or says WHO hangs and fails */
static int stress_join(struct task *t, pthread_t th, time_t deadline, const char *who, unsigned int i,
		       uint64_t at)
{
	struct timespec ts = { .tv_sec = deadline };
	int r = pthread_timedjoin_np(th, NULL, &ts);

	if (r == ETIMEDOUT)
		return say("pid %u: stress: HANG: %s %u did not stop within %d s (at 0x%" PRIx64 ")", t->pid,
			   who, i, STRESS_JOIN_GRACE, at);
	if (r)
		return say("pid %u: stress: join %s %u: %s", t->pid, who, i, strerror(r));
	return 0;
}

static int sc_stress(struct task *t)
{
	const struct opts *o = t->o;
	struct stress s = { .t = t, .zero = pagehash_zero() };
	struct timespec end;
	uint64_t top = 0;
	time_t deadline;
	int ret = -1;

	s.claim = calloc(t->npages, 1);
	s.last_ok = calloc(t->npages, sizeof(*s.last_ok));
	s.want = malloc(t->npages * sizeof(*s.want));
	s.why = calloc(t->npages, 1);
	s.seg = calloc(t->npages, sizeof(*s.seg));
	s.wv = calloc(t->nv, sizeof(*s.wv));
	s.w = calloc(o->stress_threads, sizeof(*s.w));
	s.st = calloc(o->stress_storms, sizeof(*s.st));
	s.c = mmap(NULL, sizeof(*s.c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!s.claim || !s.last_ok || !s.want || !s.why || !s.seg || !s.wv || !s.w || !s.st || s.c == MAP_FAILED)
		return say("out of memory");
	memcpy(s.want, t->exp, t->npages * sizeof(*s.want));
	atomic_init(&s.next_seg, 1);
	for (size_t i = 0; i < t->nv; i++) {
		uint64_t n = (t->v[i].end - t->v[i].start) / PAGE;

		if (vma_lazyable(&t->v[i]) && (t->v[i].prot & PROT_WRITE) && n >= 4)
			s.wv[s.nwv++] = (int)i;
		s.maxv = n > s.maxv ? n : s.maxv;
		top = t->v[i].end > top ? t->v[i].end : top;
	}
	if (!s.nwv)
		return say("pid %u: stress: no writable lazy VMA of 4 pages", t->pid);
	top = ((top + (1ull << 30) - 1) & ~((1ull << 30) - 1)) + (1ull << 30);
	atomic_store(&s.lazy, stress_lazy_now());
	/* past this the process is hung: name what each thread is on */
	stress_hang = &s;
	signal(SIGALRM, stress_alarm);
	alarm(o->stress_seconds + STRESS_JOIN_GRACE + STRESS_KID_TIMEOUT + 15);
	s.t_start = now();
	s.t_end = s.t_start + o->stress_seconds;
	atomic_init(&s.next_fork, now() + 0.05 * (double)(ph_rand(&t->rng) % 8));
	for (unsigned int i = 0; i < o->stress_threads; i++) {
		s.w[i].s = &s;
		s.w[i].idx = i;
		s.w[i].rng = t->rng ^ ph_mix(0x3000 + i);
		if (pthread_create(&s.w[i].th, NULL, stress_worker, &s.w[i])) {
			say("pthread_create: %s", strerror(errno));
			goto stop;
		}
		s.w[i].started = true;
	}
	for (unsigned int i = 0; i < o->stress_storms; i++) {
		s.st[i].s = &s;
		s.st[i].idx = i;
		s.st[i].rng = t->rng ^ ph_mix(0x5000 + i);
		s.st[i].slots = top + (uint64_t)i * (1ull << 30);
		s.st[i].vec = malloc(s.maxv);
		s.st[i].vec2 = malloc(s.maxv);
		s.st[i].oplog = calloc(STRESS_OPLOG, sizeof(*s.st[i].oplog));
		if (!s.st[i].vec || !s.st[i].vec2 || !s.st[i].oplog || pthread_create(&s.st[i].th, NULL, stress_storm, &s.st[i])) {
			say("storm thread: %s", strerror(errno));
			goto stop;
		}
		s.st[i].started = true;
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += o->stress_seconds;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR)
		;
	ret = 0;
stop:
	atomic_store(&s.stop, 1);
	deadline = time(NULL) + STRESS_JOIN_GRACE;
	for (unsigned int i = 0; i < o->stress_threads; i++)
		if (s.w[i].started && stress_join(t, s.w[i].th, deadline, "worker", i, atomic_load(&s.w[i].at)))
			return -1;	/* the exit takes the stuck threads with it */
	/* storms also reap their forked children: allow for that */
	deadline += STRESS_KID_TIMEOUT + 5;
	for (unsigned int i = 0; i < o->stress_storms; i++) {
		if (!s.st[i].started)
			continue;
		if (stress_join(t, s.st[i].th, deadline, "storm", i, atomic_load(&s.st[i].at)))
			return -1;
		if (s.st[i].ret)
			ret = -1;
	}
	alarm(0);
	if (ret)
		return -1;
	/* every page, against the model: late COPYs into zeroed ranges show here */
	for (uint64_t g = 0; g < t->npages; g++)
		stress_check(&s, g, page_addr(t, g, NULL), "final pass");
	stress_history(&s);
	say("stress-counts pid=%u checked=%lu bad=%lu reads=%lu writes=%lu forks=%lu fork_checked=%lu "
	    "fork_failed=%lu mremaps=%lu mremap_skipped=%lu munmaps=%lu dontneeds=%lu storm_ops=%lu "
	    "frontier_ops=%lu lazy_ops=%lu lazy_at_end=%d lazy_ms=%.0f",
	    t->pid, atomic_load(&t->checked), atomic_load(&t->bad), atomic_load(&s.c->reads),
	    atomic_load(&s.c->writes), atomic_load(&s.c->forks), atomic_load(&s.c->fork_checked),
	    atomic_load(&s.c->fork_failed), atomic_load(&s.c->mremaps), atomic_load(&s.c->mremap_skipped),
	    atomic_load(&s.c->munmaps), atomic_load(&s.c->dontneeds), atomic_load(&s.c->storm_ops),
	    atomic_load(&s.c->frontier_ops), atomic_load(&s.c->lazy_ops), stress_lazy_now(),
	    ((atomic_load(&s.lazy) ? now() : atomic_load(&s.t_unlazy)) - s.t_start) * 1e3);
	stress_hang = NULL;
	for (unsigned int i = 0; i < o->stress_storms; i++) {
		free(s.st[i].vec);
		free(s.st[i].vec2);
		free(s.st[i].oplog);
	}
	free(s.claim);
	free(s.last_ok);
	free(s.want);
	free(s.why);
	free(s.seg);
	free(s.wv);
	free(s.w);
	free(s.st);
	munmap(s.c, sizeof(*s.c));
	return 0;
}

static int sc_exit(struct task *t)
{
	for (int i = 0; i < 16; i++)
		check_g(t, ph_rand(&t->rng) % t->npages);
	_exit(atomic_load(&t->bad) ? 1 : 0);
}

static int sc_none(struct task *t)
{
	(void)t;
	return 0;
}

static const struct scenario {
	const char *name;
	int (*run)(struct task *t);
	bool after_daemon;		/* "go" only once the daemon is gone */
} scenarios[] = {
	{ "seq", sc_seq, false },
	{ "random", sc_random, false },
	{ "threads", sc_threads, false },
	{ "fork", sc_fork, false },
	{ "mremap", sc_mremap, false },
	{ "munmap", sc_munmap, false },
	{ "dontneed", sc_dontneed, false },
	{ "dontneed-race", sc_race, false },
	/* workers and storms for --stress-seconds, every page checked at the end */
	{ "stress", sc_stress, false },
	{ "exit", sc_exit, false },
	/* touch nothing until the daemon has exited: prefetch alone must have filled everything */
	{ "idle", sc_seq, true },
	/* touch nothing at all; exit once the daemon is gone (bad-input tests) */
	{ "none", sc_none, true },
};

static const struct scenario *find_scenario(const char *name)
{
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (!strcmp(scenarios[i].name, name))
			return &scenarios[i];
	return NULL;
}

/* ---- one restored process ---- */

struct child_io {
	int turn_rd;			/* main -> child: send your record now */
	int status_wr;			/* child -> main: 'R' registered */
	int go_rd;			/* EOF = go */
};

static int task_load(struct task *t, struct imgdir *d)
{
	char name[PATH_MAX];
	struct stat sb;
	struct lp_err e;
	int fd, r;

	r = imgdir_read_vmas(d, t->pid, &t->v, &t->nv, &e);
	if (r)
		return say("pid %u: %s", t->pid, e.msg);
	t->first = calloc(t->nv + 1, sizeof(uint64_t));
	if (!t->first)
		return say("out of memory");
	for (size_t i = 0; i < t->nv; i++)
		t->first[i + 1] = t->first[i] + (t->v[i].end - t->v[i].start) / PAGE;
	t->npages = t->first[t->nv];
	snprintf(name, sizeof(name), "%s/lp-expect-%u.bin", imgdir_path(d), t->pid);
	fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return say("%s: %s", name, strerror(errno));
	if (fstat(fd, &sb) || (uint64_t)sb.st_size != t->npages * 8) {
		close(fd);
		return say("%s: %lld bytes, expected %" PRIu64 " (one hash per page of mm-%u.img)",
			   name, (long long)sb.st_size, t->npages * 8, t->pid);
	}
	t->exp = malloc(t->npages * 8 + 1);
	if (!t->exp || io_read_full(fd, t->exp, t->npages * 8)) {
		close(fd);
		return say("%s: read: %s", name, strerror(errno));
	}
	close(fd);
	return 0;
}

/* premap and fill exactly what CRIU's restorer fills before registering (every non-lazy page of a lazy VMA; its lazy pages stay empty) */
static int task_premap(struct task *t, struct imgdir *d)
{
	const struct pm_entry *ent;
	struct pagemap *pm;
	struct lp_err e;
	size_t ne;
	int r;

	for (size_t i = 0; i < t->nv; i++) {
		struct vma *v = &t->v[i];
		void *p;

		if (!(v->flags & MAP_ANONYMOUS) || !(v->flags & MAP_PRIVATE))
			return say("pid %u: VMA 0x%" PRIx64 ": only private anonymous VMAs are supported",
				   t->pid, v->start);
		p = mmap((void *)(uintptr_t)v->start, v->end - v->start, (int)v->prot | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != (void *)(uintptr_t)v->start)
			return say("pid %u: mmap 0x%" PRIx64 "-0x%" PRIx64 ": %s", t->pid, v->start,
				   v->end, p == MAP_FAILED ? strerror(errno) : "placed elsewhere");
	}
	if (t->o->time_faults) {
		/* the registered pages: their faults go to the daemon */
		t->lazy = calloc(t->npages / 64 + 1, sizeof(uint64_t));
		if (!t->lazy)
			return say("out of memory");
		for (size_t i = 0; i < t->nv; i++)
			for (uint64_t g = t->first[i]; vma_lazyable(&t->v[i]) && g < t->first[i + 1]; g++)
				t->lazy[g / 64] |= 1ull << (g % 64);
	}
	r = pagemap_open(d, t->pid, &pm, &e);
	if (r)
		return say("pid %u: %s", t->pid, e.msg);
	ent = pagemap_entries(pm, &ne);
	for (size_t k = 0; k < ne; k++) {
		uint64_t es = ent[k].vaddr, ee = es + ent[k].nr_pages * PAGE;

		for (size_t i = 0; i < t->nv; i++) {
			struct vma *v = &t->v[i];
			uint64_t s = es > v->start ? es : v->start, x = ee < v->end ? ee : v->end;
			bool eager = !vma_lazyable(v) || (ent[k].flags & PE_PARENT) ||
				     !(ent[k].flags & PE_LAZY);

			if (s >= x || !eager)
				continue;
			if (!(ent[k].flags & (PE_PRESENT | PE_PARENT)))
				continue;
			r = pagemap_read(pm, s, (x - s) / PAGE, (void *)(uintptr_t)s, &e);
			if (r) {
				pagemap_close(pm);
				return say("pid %u: fill 0x%" PRIx64 ": %s", t->pid, s, e.msg);
			}
		}
	}
	pagemap_close(pm);
	for (size_t i = 0; i < t->nv; i++) {
		struct vma *v = &t->v[i];

		if (!(v->prot & PROT_WRITE) &&
		    mprotect((void *)(uintptr_t)v->start, v->end - v->start, (int)v->prot))
			return say("pid %u: mprotect: %s", t->pid, strerror(errno));
	}
	return 0;
}

static int task_register(struct task *t, int uffd)
{
	for (size_t i = 0; i < t->nv; i++) {
		struct vma *v = &t->v[i];
		struct uffdio_register reg = {
			.range = { .start = v->start, .len = v->end - v->start },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		const uint64_t want = (1ull << _UFFDIO_WAKE) | (1ull << _UFFDIO_COPY) |
				      (1ull << _UFFDIO_ZEROPAGE);

		if (!vma_lazyable(v))
			continue;
		if (ioctl(uffd, UFFDIO_REGISTER, &reg))
			return say("pid %u: UFFDIO_REGISTER 0x%" PRIx64 "-0x%" PRIx64 ": %s", t->pid,
				   v->start, v->end, strerror(errno));
		if ((reg.ioctls & want) != want)
			say("pid %u: UFFDIO_REGISTER: ioctls 0x%llx lack WAKE/COPY/ZEROPAGE", t->pid,
			    (unsigned long long)reg.ioctls);
		/* CRIU applies the dumped madvise bits after registering */
		for (int b = 0; b < 64; b++) {
			if (!(v->madv & (1ull << b)) || b == MADV_DONTNEED || b == MADV_FREE ||
			    b == MADV_REMOVE)
				continue;
			madvise((void *)(uintptr_t)v->start, v->end - v->start, b);
		}
	}
	return 0;
}

/*
 * The restored process's first instruction, as far as the daemon can
 * tell: one page of its first lazy VMA read and checked, the earliest of
 * all processes kept in the shared page (resume latency: from the RSTF
 * marker to here). Scenarios that must not touch memory yet skip it.
 */
static void first_page(struct task *t, const struct scenario *sc, double t_run)
{
	double now_s, old;
	int vi;

	/* the stress and race scenarios watch the prefetch frontier: leave it alone */
	if (sc->run == sc_none || sc->after_daemon || sc->run == sc_stress || sc->run == sc_race)
		return;
	vi = pick_vma(t, 1);
	if (vi < 0)
		return;
	check_page(t, t->v[vi].start, t->exp[t->first[vi]]);
	now_s = now();
	old = atomic_load(&t->sh->t_first);
	while ((old == 0 || now_s < old) && !atomic_compare_exchange_weak(&t->sh->t_first, &old, now_s))
		;
	if (old == 0 || now_s < old)
		atomic_store(&t->sh->d_first, now_s - t_run);	/* near enough if two race here */
}

static int child_main(struct task *t, struct imgdir *d, struct child_io *io, uint64_t features,
		      int32_t send_pid, const struct scenario *sc)
{
	int uffd = -1, r;
	double t_run;
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (task_load(t, d) || task_premap(t, d))
		return 2;
	r = uffd_open(features, &uffd);
	if (r)
		return say("pid %u: userfaultfd/UFFDIO_API: %s", t->pid, strerror(-r)), 2;
	if (io_read_full(io->turn_rd, &c, 1))
		return 2;
	pthread_mutex_lock(&t->sh->sock_mutex);
	r = send_record(t->sock, send_pid, uffd);
	pthread_mutex_unlock(&t->sh->sock_mutex);
	close(t->sock);
	if (r) {
		say("pid %u: sending the record: %s", t->pid, strerror(-r));
		if (!t->o->bad)
			return 2;
	}
	/* registration comes after the send, then the restorer closes its uffd */
	r = task_register(t, uffd);
	close(uffd);
	if (r)
		return 2;
	if (write_byte(io->status_wr, 'R'))
		return 2;
	close(io->status_wr);
	/* wait for "go": EOF on the go pipe */
	while (read(io->go_rd, &c, 1) > 0)
		;
	close(io->go_rd);
	if (t->o->start_delay_ms)
		usleep(t->o->start_delay_ms * 1000u);
	t_run = now();
	t->rng = t->o->seed * 0x9e3779b97f4a7c15ull + t->pid;
	first_page(t, sc, t_run);
	if (sc->run(t))
		return 2;
	if (sc->run != sc_none)
		say("pid %u: %s: checked %lu pages, %lu mismatches", t->pid, sc->name,
		    atomic_load(&t->checked), atomic_load(&t->bad));
	return atomic_load(&t->bad) ? 1 : 0;
}

/* ---- the main restore process ---- */

struct slot {
	uint32_t pid;
	bool zombie;
	pid_t child;
	int pidfd;
	int turn_wr, status_rd;
	int status;			/* exit status, -1 while running */
};

static int bad_simple(const struct opts *o, int sock, struct pstree_ent *ps, size_t n)
{
	uint64_t rng = o->seed;
	int r;

	if (!strcmp(o->bad, "garbage")) {
		uint8_t junk[64];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)ph_rand(&rng);
		r = send_all(sock, junk, sizeof(junk));
	} else {
		int32_t pid = (int32_t)ps[0].pid;

		(void)n;
		r = send_all(sock, &pid, sizeof(pid));
		if (!r)
			r = send_fd_msg(sock, -1);	/* the 1-byte message without SCM_RIGHTS */
	}
	if (r)
		say("bad %s: send: %s (the daemon may have gone already)", o->bad, strerror(-r));
	return wait_daemon_gone(o, sock) ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-restore -D DIR [-W WORKDIR] [--scenario NAME] [--order pstree|reverse|random|concurrent]\n"
		"                  [--threads T] [--seed S] [--timeout SEC] [--race-ops N] [--wait-pid PID]\n"
		"                  [--start-delay-ms MS] [--hot-pct PCT (random: the pages of PCT%% of 64-page blocks only)]\n"
		"                  [--time-faults (seq, random, threads: time each fault as the process sees it)]\n"
		"                  [--first-exits (the first pstree entry runs exit, the others SCENARIO)]\n"
		"                  [--bad garbage|nofd|bogus-pid|close-early|bad-marker]\n"
		"                  [--stress-seconds S] [--stress-threads T] [--stress-storms N]\n"
		"                  [--stress-children N (at once, <= 16)] [--stress-forks N (in all)]\n"
		"                  [--stress-rate OPS (per second per storm; 0: flat out)]\n"
		"scenarios:");
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		fprintf(stderr, " %s", scenarios[i].name);
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "work-dir", required_argument, NULL, 'W' },
		{ "scenario", required_argument, NULL, 's' },
		{ "order", required_argument, NULL, 'o' },
		{ "threads", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "race-ops", required_argument, NULL, 'r' },
		{ "wait-pid", required_argument, NULL, 'p' },
		{ "time-faults", no_argument, NULL, 0x106 },
		{ "start-delay-ms", required_argument, NULL, 0x107 },
		{ "first-exits", no_argument, NULL, 0x108 },
		{ "hot-pct", required_argument, NULL, 0x109 },
		{ "bad", required_argument, NULL, 'b' },
		{ "stress-seconds", required_argument, NULL, 0x100 },
		{ "stress-threads", required_argument, NULL, 0x101 },
		{ "stress-storms", required_argument, NULL, 0x102 },
		{ "stress-children", required_argument, NULL, 0x103 },
		{ "stress-forks", required_argument, NULL, 0x104 },
		{ "stress-rate", required_argument, NULL, 0x105 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct opts o = { .scenario = "seq", .threads = 16, .seed = 1, .timeout = 120, .race_ops = 64,
			  .stress_seconds = 10, .stress_threads = 4, .stress_storms = 2,
			  .stress_children = 2, .stress_forks = 64 };
	char real[PATH_MAX];
	const struct scenario *sc;
	struct pstree_ent *ps = NULL;
	struct imgdir *d = NULL;
	struct shared *sh;
	struct slot *sl = NULL;
	struct lp_err e;
	uint64_t supported = 0, features, rng;
	size_t n = 0, *ord = NULL;
	int go[2], sock = -1, c, ret = 1, nfail = 0;
	const char *ordname = "pstree";
	double t0;

	while ((c = getopt_long(argc, argv, "D:W:h", lo, NULL)) != -1) {
		switch (c) {
		case 'D': o.dir = optarg; break;
		case 'W': o.workdir = optarg; break;
		case 's': o.scenario = optarg; break;
		case 'o':
			ordname = optarg;
			if (!strcmp(optarg, "pstree"))
				o.order = ORDER_PSTREE;
			else if (!strcmp(optarg, "reverse"))
				o.order = ORDER_REVERSE;
			else if (!strcmp(optarg, "random"))
				o.order = ORDER_RANDOM;
			else if (!strcmp(optarg, "concurrent"))
				o.order = ORDER_CONCURRENT;
			else
				return usage(), 2;
			break;
		case 't': o.threads = (unsigned int)atoi(optarg); break;
		case 'S': o.seed = strtoull(optarg, NULL, 0); break;
		case 'T': o.timeout = atoi(optarg); break;
		case 'r': o.race_ops = (unsigned int)atoi(optarg); break;
		case 'p': o.wait_pid = atoi(optarg); break;
		case 'b': o.bad = optarg; break;
		case 0x100: o.stress_seconds = (unsigned int)atoi(optarg); break;
		case 0x101: o.stress_threads = (unsigned int)atoi(optarg); break;
		case 0x102: o.stress_storms = (unsigned int)atoi(optarg); break;
		case 0x103: o.stress_children = (unsigned int)atoi(optarg); break;
		case 0x104: o.stress_forks = (unsigned int)atoi(optarg); break;
		case 0x105: o.stress_rate = (unsigned int)atoi(optarg); break;
		case 0x106: o.time_faults = true; break;
		case 0x107: o.start_delay_ms = (unsigned int)atoi(optarg); break;
		case 0x108: o.first_exits = true; break;
		case 0x109: o.hot_pct = (unsigned int)atoi(optarg); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (!o.dir || optind != argc || o.threads < 1 || o.threads > 1024 || o.timeout < 1)
		return usage(), 2;
	if (o.stress_seconds < 1 || o.stress_seconds > 3600 || o.stress_threads < 1 ||
	    o.stress_threads > 1024 || o.stress_storms < 1 || o.stress_storms > 16 ||
	    o.stress_children > STRESS_MAX_KIDS)
		return usage(), 2;
	if (o.bad && strcmp(o.bad, "garbage") && strcmp(o.bad, "nofd") && strcmp(o.bad, "bogus-pid") &&
	    strcmp(o.bad, "close-early") && strcmp(o.bad, "bad-marker"))
		return usage(), 2;
	if (o.bad)
		o.scenario = "none";
	sc = find_scenario(o.scenario);
	if (!sc)
		return usage(), 2;
	if (!o.workdir)
		o.workdir = o.dir;
	signal(SIGPIPE, SIG_IGN);
	if (!realpath(o.dir, real))
		return say("%s: %s", o.dir, strerror(errno)), 1;
	if (imgdir_open(real, &d, &e))
		return say("%s", e.msg), 1;
	if (imgdir_read_pstree(d, &ps, &n, &e)) {
		say("%s", e.msg);
		goto out;
	}
	if (n == 0) {
		say("%s/pstree.img: no processes", o.dir);
		goto out;
	}
	if (uffd_probe(&supported)) {
		say("userfaultfd: %s", strerror(errno));
		goto out;
	}
	features = supported & UFFD_FEATURES_CRIU;
	/* like criu restore: chdir to the work dir and connect once, before forking */
	if (chdir(o.workdir)) {
		say("chdir %s: %s", o.workdir, strerror(errno));
		goto out;
	}
	sock = sock_connect();
	if (sock < 0) {
		say("connect %s/%s: %s", o.workdir, SOCK_NAME, strerror(-sock));
		goto out;
	}
	t0 = now();
	if (o.bad && (!strcmp(o.bad, "garbage") || !strcmp(o.bad, "nofd"))) {
		ret = bad_simple(&o, sock, ps, n);
		goto out;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		say("mmap: %s", strerror(errno));
		goto out;
	}
	{
		pthread_mutexattr_t ma;

		pthread_mutexattr_init(&ma);
		pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
		pthread_mutex_init(&sh->sock_mutex, &ma);
	}
	sl = calloc(n, sizeof(*sl));
	ord = calloc(n, sizeof(*ord));
	if (!sl || !ord || pipe2(go, O_CLOEXEC)) {
		say("out of memory / pipe");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t state;

		sl[i].pid = ps[i].pid;
		sl[i].status = -1;
		sl[i].pidfd = sl[i].turn_wr = sl[i].status_rd = -1;
		if (imgdir_task_state(d, ps[i].pid, &state, &e)) {
			say("%s", e.msg);
			goto out;
		}
		sl[i].zombie = state == TASK_DEAD;
	}
	for (size_t i = 0; i < n; i++) {
		int tp[2], sp[2];

		if (sl[i].zombie)
			continue;
		if (pipe2(tp, O_CLOEXEC) || pipe2(sp, O_CLOEXEC)) {
			say("pipe: %s", strerror(errno));
			goto out;
		}
		sl[i].child = fork();
		if (sl[i].child < 0) {
			say("fork: %s", strerror(errno));
			goto out;
		}
		if (sl[i].child == 0) {
			struct task t = { .pid = sl[i].pid, .o = &o, .sock = sock, .sh = sh, .who = "" };
			struct child_io io = { .turn_rd = tp[0], .status_wr = sp[1], .go_rd = go[0] };
			int32_t send_pid = (int32_t)sl[i].pid;

			close(tp[1]);
			close(sp[0]);
			close(go[1]);
			for (size_t k = 0; k < i; k++) {
				if (sl[k].turn_wr >= 0)
					close(sl[k].turn_wr);
				if (sl[k].status_rd >= 0)
					close(sl[k].status_rd);
			}
			if (o.bad && !strcmp(o.bad, "bogus-pid") && i == 0) {
				uint32_t max = 0;

				for (size_t k = 0; k < n; k++)
					max = ps[k].pid > max ? ps[k].pid : max;
				send_pid = (int32_t)(max + 1000);
			}
			_exit(child_main(&t, d, &io, features, send_pid,
					 o.first_exits && i == 0 ? find_scenario("exit") : sc));
		}
		close(tp[0]);
		close(sp[1]);
		sl[i].turn_wr = tp[1];
		sl[i].status_rd = sp[0];
		sl[i].pidfd = (int)syscall(SYS_pidfd_open, sl[i].child, 0);
	}
	close(go[0]);

	/* the order in which records go out */
	for (size_t i = 0; i < n; i++)
		ord[i] = o.order == ORDER_REVERSE ? n - 1 - i : i;
	rng = o.seed ^ 0x5eed;
	if (o.order == ORDER_RANDOM) {
		for (size_t i = n; i > 1; i--) {
			size_t j = ph_rand(&rng) % i, x = ord[i - 1];

			ord[i - 1] = ord[j];
			ord[j] = x;
		}
	}
	for (size_t k = 0; k < n; k++) {
		struct slot *s = &sl[ord[k]];

		if (s->zombie) {
			int r;

			pthread_mutex_lock(&sh->sock_mutex);
			r = send_record(sock, -(int32_t)s->pid, -1);
			pthread_mutex_unlock(&sh->sock_mutex);
			if (r && !o.bad) {
				say("zombie %u: send: %s", s->pid, strerror(-r));
				goto out;
			}
			continue;
		}
		if (write_byte(s->turn_wr, 'T')) {
			say("pid %u: restore child died before its turn", s->pid);
			goto out;
		}
		if (o.order == ORDER_CONCURRENT && k + 1 < n)
			continue;
		/* wait for this one (or, concurrent, for all) to have registered */
		for (size_t m = o.order == ORDER_CONCURRENT ? 0 : k; m <= k; m++) {
			struct slot *w = &sl[ord[m]];
			struct pollfd pfd = { .fd = w->status_rd, .events = POLLIN };
			char ch = 0;

			if (w->zombie)
				continue;
			if (poll(&pfd, 1, o.timeout * 1000) != 1 || read(w->status_rd, &ch, 1) != 1 ||
			    ch != 'R') {
				say("pid %u: restore child failed before registering", w->pid);
				goto out;
			}
		}
	}
	/* every task has registered: the marker, once, from the main process */
	if (o.bad && !strcmp(o.bad, "close-early")) {
		/* the daemon sees EOF before the marker; we keep our end to see it close */
		shutdown(sock, SHUT_WR);
	} else {
		uint32_t m = o.bad && !strcmp(o.bad, "bad-marker") ? 0xdeadbeefu : RESTORE_FINISHED;
		int r = send_all(sock, &m, sizeof(m));

		atomic_store(&sh->t_marker, now());

		if (r && !o.bad) {
			say("sending the marker: %s", strerror(-r));
			goto out;
		}
	}
	if (sc->after_daemon && wait_daemon_gone(&o, sock))
		goto out;
	/* release the children */
	close(go[1]);
	go[1] = -1;
	{
		double deadline = now() + o.timeout;
		size_t left = 0;

		for (size_t i = 0; i < n; i++)
			left += !sl[i].zombie;
		while (left) {
			struct pollfd *pf = calloc(n, sizeof(*pf));
			size_t np = 0;
			int ms = (int)((deadline - now()) * 1000), r;

			if (!pf)
				goto out;
			for (size_t i = 0; i < n; i++)
				if (!sl[i].zombie && sl[i].status < 0)
					pf[np++] = (struct pollfd){ .fd = sl[i].pidfd, .events = POLLIN };
			r = ms > 0 ? poll(pf, np, ms) : 0;
			free(pf);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			for (size_t i = 0; i < n; i++) {
				int st;

				if (sl[i].zombie || sl[i].status >= 0)
					continue;
				if (waitpid(sl[i].child, &st, WNOHANG) == sl[i].child) {
					sl[i].status = st;
					left--;
				}
			}
		}
		for (size_t i = 0; i < n; i++) {
			if (sl[i].zombie)
				continue;
			if (sl[i].status < 0) {
				say("pid %u: HANG: not finished after %d s (scenario %s), killing it",
				    sl[i].pid, o.timeout, sc->name);
				kill(sl[i].child, SIGKILL);
				waitpid(sl[i].child, NULL, 0);
				sl[i].child = 0;
				nfail++;
			} else if (!WIFEXITED(sl[i].status) || WEXITSTATUS(sl[i].status)) {
				if (WIFSIGNALED(sl[i].status))
					say("pid %u: killed by signal %d", sl[i].pid, WTERMSIG(sl[i].status));
				else
					say("pid %u: failed (exit %d)", sl[i].pid, WEXITSTATUS(sl[i].status));
				nfail++;
			}
			sl[i].child = 0;
		}
	}
	if (o.bad) {
		/* only the daemon's behaviour is under test; the children touched nothing */
		ret = nfail ? 1 : 0;
	} else {
		ret = nfail ? 1 : 0;
		double tm = atomic_load(&sh->t_marker), tf = atomic_load(&sh->t_first);

		if (o.time_faults)
			fh_print(sh);
		if (tm > 0 && tf > 0)
			printf("lp-restore: resume: first page read %.3f ms after the marker, %.3f ms after its "
			       "process ran\n", (tf - tm) * 1e3, atomic_load(&sh->d_first) * 1e3);
		printf("lp-restore: %s: %zu process(es), order %s, scenario %s: %s in %.3f s\n", o.dir,
		       n, ordname, sc->name, nfail ? "FAILED" : "all pages verified", now() - t0);
	}
out:
	for (size_t i = 0; sl && i < n; i++) {
		if (sl[i].child > 0) {
			kill(sl[i].child, SIGKILL);
			waitpid(sl[i].child, NULL, 0);
		}
	}
	if (sock >= 0)
		close(sock);
	pstree_free(ps, n);
	imgdir_close(d);
	free(sl);
	free(ord);
	return ret;
}
