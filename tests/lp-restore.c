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
	pid_t wait_pid;
};

/* shared by all restore processes, like CRIU's lazy_sock_mutex */
struct shared {
	pthread_mutex_t sock_mutex;
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_byte(int fd, char c)
{
	ssize_t r;

	do
		r = write(fd, &c, 1);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -errno;
}

/* ---- the wire: exactly what CRIU's restore sends (spec §4.2) ---- */

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

static void check_g(struct task *t, uint64_t g)
{
	check_page(t, page_addr(t, g, NULL), t->exp[g]);
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

static int sc_random(struct task *t)
{
	uint64_t *p = permutation(t);

	if (!p)
		return say("out of memory");
	for (uint64_t i = 0; i < t->npages; i++)
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

/* premap and fill exactly what CRIU's restorer fills before registering (spec §4.4) */
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

static int child_main(struct task *t, struct imgdir *d, struct child_io *io, uint64_t features,
		      int32_t send_pid, const struct scenario *sc)
{
	int uffd = -1, r;
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
	t->rng = t->o->seed * 0x9e3779b97f4a7c15ull + t->pid;
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
		"                  [--bad garbage|nofd|bogus-pid|close-early|bad-marker]\n"
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
		{ "bad", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct opts o = { .scenario = "seq", .threads = 16, .seed = 1, .timeout = 120, .race_ops = 64 };
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
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (!o.dir || optind != argc || o.threads < 1 || o.threads > 1024 || o.timeout < 1)
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
			_exit(child_main(&t, d, &io, features, send_pid, sc));
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
