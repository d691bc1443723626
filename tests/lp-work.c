/* SPDX-License-Identifier: MIT */
/*
 * lp-work: a workload for stock CRIU to checkpoint and restore lazily; after
 * the restore every process proves it is the restored copy and checks every
 * byte of its memory, page by page, against a pattern it can recompute.
 *
 *   lp-work -o DIR [-m MIB] [-s SEED] [-t THREADS] [-c CHILDREN] [-R MIB]
 *           [-a seq|random|idle] [-l OP[,OP...]] [-w MS] [-T SECONDS]
 *
 * -o DIR        where the files below go (must exist; an absolute path, since
 *               the restored process may run in another pid namespace)
 * -m MIB        anonymous private memory per process (default 64)
 * -s SEED       pattern seed (default 1)
 * -t THREADS    extra threads per process, started before the dump; they
 *               share the reading with the main thread (default 0)
 * -c CHILDREN   children the first process forks before the dump (a tree of
 *               1 + CHILDREN); each rewrites every page p with
 *               p % 8 == tag % 8 with its own pattern, so a page served from
 *               the wrong process is caught (default 0)
 * -R MIB        the first process keeps only the first MIB of its memory
 *               once it has forked its children (the rest is unmapped
 *               before the dump): a tree whose first process is complete
 *               while the others are still being filled
 * -a MODE       how memory is read once told to go: seq (in order), random
 *               (a seeded permutation), idle (nothing until "final")
 * -l OPS        layout changes made right after "go", before anything is
 *               read (so on memory the daemon has not filled yet), in the
 *               order given: fork (a new child checks the memory as it was,
 *               and rewrites pages of its copy: the parent must not see
 *               them), dontneed (MADV_DONTNEED on 1/16 of the memory: it
 *               must read zeros), munmap (1/16 unmapped, checked gone, then
 *               mapped again: zeros), mremap (1/16 moved elsewhere: the same
 *               bytes at the new address, nothing at the old one)
 * -w MS         record per-window timings of the first read of each page in
 *               phase 1: "window T_MS pages=N mean_us=X max_us=Y"
 * -T SECONDS    give up (result FAIL, exit 1) if a phase does not come
 *               within this time (default 600)
 *
 * Protocol, all through files in DIR (no fd above 2 is open at the dump):
 *   ready.TAG    written by each process once its memory and threads are set
 *                up: "pid STARTTIME". The dump may start when all are there.
 *   go           created by the test after the restore resumed: phase 1
 *                (layout ops, then reading in MODE).
 *   final        created by the test once the daemon has filled everything:
 *                phase 2, every page checked again, then exit.
 *   result.TAG.1, result.TAG.2  written by each process at the end of a
 *                phase (write to a temporary name, then rename): key=value
 *                lines, then "ok" or "FAIL: reason" as the last line.
 *   bad.TAG      appended the moment a wrong page is read (the first 8 of a
 *                phase): its number, offset and what it held instead.
 * TAG is 0 for the first process, 1..CHILDREN for the children, and gets an
 * "f" appended for a child made by the fork op ("0f", "1f").
 *
 * Restored, not original: each process reads its start time (field 22 of
 * /proc/self/stat) before the dump and again at "go"; a restored process is
 * a new task to the kernel, so the two differ. An original that CRIU left
 * running reports "FAIL: not restored".
 *
 * Pages: page p of the region is a hole (never written, not in the dump) if
 * p % 61 == 5, written with zeros if p % 67 == 7, else a splitmix64 page
 * keyed by (seed, writer, p) whose first word is never zero.
 *
 * stdout/stderr: lp-work prints nothing once set up; run it with setsid,
 * stdin from /dev/null and output to a file, as CRIU needs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "argnum.h"
#include "pagehash.h"

#define PAGE PH_PAGE
#define MAX_REPORT 8		/* mismatches described per phase */
#define MAX_CHILDREN 64
#define MAX_THREADS 64
#define MAX_WINDOWS 100000
#define POLL_NS 2000000L	/* how often a waiting process looks for go/final */
#define FORK_WRITER 0x80	/* writer id of the pages a fork child rewrites */
#define FORK_STRIDE 16		/* ... every 16th page, from page 9 */

enum mode { MODE_SEQ, MODE_RANDOM, MODE_IDLE };
enum op { OP_FORK, OP_DONTNEED, OP_MUNMAP, OP_MREMAP };

static const char *const op_names[] = { "fork", "dontneed", "munmap", "mremap" };

/* What one process knows about its memory: everything a check needs. */
struct work {
	const char *dir;
	char tag[16];
	unsigned int idx;	/* 0 root, 1.. children: the writer of p % 8 == idx % 8 */
	bool fork_child;	/* made by the fork op after the restore */
	uint64_t seed;
	size_t npages;
	unsigned int threads;
	enum mode mode;
	enum op ops[8];
	unsigned int nops;
	unsigned int window_ms;
	unsigned int timeout_s;

	uint8_t *base;
	/* the three regions a layout op changed, as page ranges [start, end) */
	size_t dn_start, dn_end;	/* dontneed: zeros */
	size_t mu_start, mu_end;	/* munmap + mmap again: zeros */
	size_t mr_start, mr_end;	/* mremap: the bytes now at mr_base */
	uint8_t *mr_base;

	unsigned long long start_before;
	char *log;		/* the result file being built */
	size_t log_len, log_cap;
};

/* Phase 1 or 2 reading, shared by the threads of one process. */
struct pass {
	struct work *w;
	const uint32_t *order;	/* NULL: in order */
	unsigned int nthreads;
	struct timespec t0;
	atomic_ulong bad, zeros, data, reported;
	pthread_mutex_t report_lock;
	/* -w: per window of window_ms, from t0 */
	unsigned long nwin;
	atomic_ulong *win_pages, *win_ns, *win_max;
};

/* Threads made before the dump wait here (a futex: no fd) for a pass. */
struct crew {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int gen, done;
	struct pass *pass;
	bool quit;
};

static struct crew crew = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, false };

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("lp-work: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t ns_since(const struct timespec *t0)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)(ts.tv_sec - t0->tv_sec) * 1000000000ull + ts.tv_nsec - t0->tv_nsec;
}

/* ---- the result file ------------------------------------------------- */

static void out(struct work *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(w->log + w->log_len, w->log_cap - w->log_len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (w->log_len + n < w->log_cap)
			break;
		w->log_cap = (w->log_cap + n) * 2;
		w->log = realloc(w->log, w->log_cap);
		if (!w->log)
			die("out of memory");
	}
	w->log_len += n;
}

/* Writes result.TAG.PHASE atomically; the last line is "ok" or "FAIL: ...". */
static int result_write(struct work *w, int phase, const char *failure)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	int fd, rc = 0;

	if (failure)
		out(w, "FAIL: %s\n", failure);
	else
		out(w, "ok\n");
	snprintf(tmp, sizeof(tmp), "%s/.result.%s.%d.tmp", w->dir, w->tag, phase);
	snprintf(path, sizeof(path), "%s/result.%s.%d", w->dir, w->tag, phase);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, w->log, w->log_len) != (ssize_t)w->log_len)
		rc = -EIO;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	w->log_len = 0;
	return rc;
}

/*
 * Appends to bad.TAG at once: a process killed later in the phase (a failed
 * session kills it) still leaves the wrong page it read on record.
 */
static void bad_now(const struct work *w, size_t p, const char *what)
{
	char path[PATH_MAX], line[320];
	int fd, n;

	snprintf(path, sizeof(path), "%s/bad.%s", w->dir, w->tag);
	n = snprintf(line, sizeof(line), "bad page %zu (offset 0x%zx): %s\n", p, p * PAGE, what);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, line, n) != n) {
		/* the result file says it too */
	}
	close(fd);
}

/* ---- what a page must hold ------------------------------------------- */

enum kind { K_HOLE, K_ZERO, K_DATA };

static enum kind page_kind(size_t p)
{
	if (p % 61 == 5)
		return K_HOLE;
	if (p % 67 == 7)
		return K_ZERO;
	return K_DATA;
}

static bool in(size_t p, size_t start, size_t end)
{
	return p >= start && p < end;
}

/* The writer id of page p as the process w sees it, or -1 for zeros. */
static int page_writer(const struct work *w, size_t p)
{
	if (in(p, w->dn_start, w->dn_end) || in(p, w->mu_start, w->mu_end))
		return -1;
	if (page_kind(p) != K_DATA)
		return -1;
	if (w->fork_child && p % FORK_STRIDE == 9)
		return FORK_WRITER;
	if (w->idx && p % 8 == w->idx % 8)
		return w->idx;
	return 0;
}

static void page_fill(void *buf, uint64_t seed, int writer, size_t p)
{
	if (writer < 0)
		memset(buf, 0, PAGE);
	else
		ph_fill(buf, seed, 0, writer, 0, p);
}

static uint8_t *page_addr(const struct work *w, size_t p)
{
	if (in(p, w->mr_start, w->mr_end))
		return w->mr_base + (p - w->mr_start) * PAGE;
	return w->base + p * PAGE;
}

/* Says what a wrong page holds instead, as far as it can be told. */
static void describe(struct pass *ps, size_t p, const uint8_t *got, const uint8_t *want, int writer)
{
	struct work *w = ps->w;
	static const uint8_t zero[PAGE];
	uint8_t alt[PAGE];
	const uint64_t *g = (const void *)got, *e = (const void *)want;
	char what[160];
	unsigned int i;
	int k;

	if (!memcmp(got, zero, PAGE)) {
		snprintf(what, sizeof(what), "zeros where data (writer %d) belongs", writer);
	} else if (writer < 0) {
		snprintf(what, sizeof(what), "data (word 0 %016" PRIx64 ") where zeros belong", g[0]);
	} else {
		for (i = 0; i < PH_WORDS && g[i] == e[i]; i++)
			;
		snprintf(what, sizeof(what), "differs from byte %u: %016" PRIx64 " expected %016" PRIx64,
			 i * 8, g[i], e[i]);
		/* the same offset as another writer wrote it, or a neighbouring page */
		for (k = 0; k <= MAX_CHILDREN + 1; k++) {
			if (k == MAX_CHILDREN + 1)
				k = FORK_WRITER;
			if (k == writer)
				continue;
			ph_fill(alt, w->seed, 0, k, 0, p);
			if (!memcmp(got, alt, PAGE)) {
				snprintf(what, sizeof(what), "process %d's copy of this page, not writer %d's", k,
					 writer);
				break;
			}
		}
		for (i = 0; i < 2; i++) {
			size_t q = i ? p + 1 : p - 1;

			if ((!i && !p) || (i && q >= w->npages))
				continue;
			ph_fill(alt, w->seed, 0, writer, 0, q);
			if (!memcmp(got, alt, PAGE))
				snprintf(what, sizeof(what), "the content of page %zu", q);
		}
	}
	pthread_mutex_lock(&ps->report_lock);
	out(w, "bad page %zu (offset 0x%zx, addr %p): %s\n", p, p * PAGE, (void *)page_addr(w, p), what);
	bad_now(w, p, what);
	pthread_mutex_unlock(&ps->report_lock);
}

static void window_note(struct pass *ps, uint64_t at_ns, uint64_t took_ns)
{
	unsigned long i = at_ns / (ps->w->window_ms * 1000000ull);
	unsigned long old;

	if (i >= ps->nwin)
		i = ps->nwin - 1;
	atomic_fetch_add(&ps->win_pages[i], 1);
	atomic_fetch_add(&ps->win_ns[i], took_ns);
	old = atomic_load(&ps->win_max[i]);
	while (took_ns > old && !atomic_compare_exchange_weak(&ps->win_max[i], &old, took_ns))
		;
}

/* Checks the pages of slot k of every nthreads, in the pass's order. */
static void pass_run(struct pass *ps, unsigned int k)
{
	struct work *w = ps->w;
	uint8_t want[PAGE] __attribute__((aligned(8)));
	size_t i, p;

	for (i = k; i < w->npages; i += ps->nthreads) {
		const uint8_t *a;
		int writer;

		p = ps->order ? ps->order[i] : i;
		a = page_addr(w, p);
		if (ps->win_pages) {
			uint64_t t = ns_since(&ps->t0);

			(void)*(volatile const uint64_t *)a;
			window_note(ps, t, ns_since(&ps->t0) - t);
		}
		writer = page_writer(w, p);
		page_fill(want, w->seed, writer, p);
		if (memcmp(a, want, PAGE)) {
			if (atomic_fetch_add(&ps->bad, 1) < MAX_REPORT)
				describe(ps, p, a, want, writer);
		} else if (writer < 0) {
			atomic_fetch_add(&ps->zeros, 1);
		} else {
			atomic_fetch_add(&ps->data, 1);
		}
	}
}

static void *crew_main(void *arg)
{
	unsigned int k = (unsigned int)(uintptr_t)arg, gen = 0;
	struct pass *ps;

	for (;;) {
		pthread_mutex_lock(&crew.lock);
		while (crew.gen == gen && !crew.quit)
			pthread_cond_wait(&crew.cond, &crew.lock);
		if (crew.quit) {
			pthread_mutex_unlock(&crew.lock);
			return NULL;
		}
		gen = crew.gen;
		ps = crew.pass;
		pthread_mutex_unlock(&crew.lock);

		pass_run(ps, k);

		pthread_mutex_lock(&crew.lock);
		crew.done++;
		pthread_cond_broadcast(&crew.cond);
		pthread_mutex_unlock(&crew.lock);
	}
}

/* One pass over every page by the main thread and the crew. */
static void pass_all(struct pass *ps)
{
	pthread_mutex_lock(&crew.lock);
	crew.pass = ps;
	crew.done = 0;
	crew.gen++;
	pthread_cond_broadcast(&crew.cond);
	pthread_mutex_unlock(&crew.lock);

	pass_run(ps, 0);

	pthread_mutex_lock(&crew.lock);
	while (crew.done < ps->nthreads - 1)
		pthread_cond_wait(&crew.cond, &crew.lock);
	pthread_mutex_unlock(&crew.lock);
}

/* ---- setup before the dump ------------------------------------------- */

static unsigned long long start_time(void)
{
	char buf[1024], *s;
	unsigned long long v = 0;
	ssize_t n;
	int fd, i;

	fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	s = strrchr(buf, ')');
	if (!s)
		return 0;
	/* field 3 follows ") "; the start time is field 22 */
	for (i = 2; i < 22 && s; i++)
		s = strchr(s + 1, ' ');
	if (s)
		v = strtoull(s + 1, NULL, 10);
	return v;
}

static void fill(struct work *w)
{
	size_t p;

	for (p = 0; p < w->npages; p++) {
		switch (page_kind(p)) {
		case K_HOLE:
			break;
		case K_ZERO:
			/* a present page of zeros: in the dump, unlike a hole */
			memset(w->base + p * PAGE, 0, PAGE);
			break;
		case K_DATA:
			page_fill(w->base + p * PAGE, w->seed, w->idx && p % 8 == w->idx % 8 ? (int)w->idx : 0, p);
			break;
		}
	}
}

/* The child rewrites its share; the parent's stays untouched. */
static void refill_own_share(struct work *w)
{
	size_t p;

	for (p = w->idx % 8; p < w->npages; p += 8)
		if (page_kind(p) == K_DATA)
			page_fill(w->base + p * PAGE, w->seed, w->idx, p);
}

static void ready(struct work *w)
{
	char tmp[PATH_MAX], path[PATH_MAX], line[64];
	int fd, n;

	snprintf(tmp, sizeof(tmp), "%s/.ready.%s.tmp", w->dir, w->tag);
	snprintf(path, sizeof(path), "%s/ready.%s", w->dir, w->tag);
	n = snprintf(line, sizeof(line), "%d %llu\n", getpid(), w->start_before);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, n) != n || close(fd) || rename(tmp, path))
		die("%s: %s", path, strerror(errno));
}

/* Waits for DIR/NAME to exist; stat() opens no fd, so this is safe across a dump. */
static int wait_for(const struct work *w, const char *name)
{
	struct timespec ts = { 0, POLL_NS };
	char path[PATH_MAX];
	struct stat st;
	double limit = now_s() + w->timeout_s;

	snprintf(path, sizeof(path), "%s/%s", w->dir, name);
	while (stat(path, &st)) {
		if (now_s() > limit)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* ---- after the restore ----------------------------------------------- */

/* Pages of [start, end) not present yet, as mincore sees them. */
static size_t not_present(const struct work *w, size_t start, size_t end)
{
	unsigned char vec[4096];
	size_t p, n = 0, k;

	for (p = start; p < end; p += k) {
		k = end - p < sizeof(vec) ? end - p : sizeof(vec);
		if (mincore(w->base + p * PAGE, k * PAGE, vec))
			return 0;
		for (size_t i = 0; i < k; i++)
			n += !(vec[i] & 1);
	}
	return n;
}

static bool mapped(const void *addr, size_t len)
{
	unsigned char vec[1];

	return !(mincore((void *)addr, len < PAGE ? len : PAGE, vec) && errno == ENOMEM);
}

static int run_phases(struct work *w);

/* The fork op: a child that checks the memory as the parent had it, then rewrites a share of it. */
static int op_fork(struct work *w)
{
	pid_t pid;
	size_t p;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		out(w, "op fork: child %d (tag %sf)\n", pid, w->tag);
		return pid;
	}
	/* the child: its own result files and its own phases */
	snprintf(w->tag + strlen(w->tag), sizeof(w->tag) - strlen(w->tag), "f");
	w->fork_child = true;
	w->log_len = 0;
	w->nops = 0;
	crew.quit = true;	/* the crew threads stayed in the parent */
	w->threads = 0;
	out(w, "tag=%s pid=%d ppid=%d made-by=fork-op\n", w->tag, getpid(), getppid());
	/* pages of the copy rewritten before anything else reads them: a write fault first */
	for (p = 9; p < w->npages; p += FORK_STRIDE)
		if (page_kind(p) == K_DATA && !in(p, w->dn_start, w->dn_end) && !in(p, w->mu_start, w->mu_end))
			page_fill(page_addr(w, p), w->seed, FORK_WRITER, p);
	exit(run_phases(w) ? 1 : 0);
}

static int op_dontneed(struct work *w, char *why, size_t len)
{
	size_t n = w->npages / 16 ? w->npages / 16 : 1;
	size_t missing;

	w->dn_start = w->npages / 2;
	w->dn_end = w->dn_start + n;
	missing = not_present(w, w->dn_start, w->dn_end);
	if (madvise(w->base + w->dn_start * PAGE, n * PAGE, MADV_DONTNEED)) {
		snprintf(why, len, "madvise(MADV_DONTNEED): %s", strerror(errno));
		return -1;
	}
	out(w, "op dontneed: pages %zu-%zu, %zu of them not yet filled\n", w->dn_start, w->dn_end - 1,
	    missing);
	return 0;
}

static int op_munmap(struct work *w, char *why, size_t len)
{
	size_t n = w->npages / 16 ? w->npages / 16 : 1;
	size_t missing;
	void *a;

	w->mu_start = w->npages * 3 / 4;
	w->mu_end = w->mu_start + n;
	missing = not_present(w, w->mu_start, w->mu_end);
	a = w->base + w->mu_start * PAGE;
	if (munmap(a, n * PAGE)) {
		snprintf(why, len, "munmap: %s", strerror(errno));
		return -1;
	}
	if (mapped(a, n * PAGE)) {
		snprintf(why, len, "munmap: %p still mapped", a);
		return -1;
	}
	if (mmap(a, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a) {
		snprintf(why, len, "mmap again: %s", strerror(errno));
		return -1;
	}
	out(w, "op munmap: pages %zu-%zu unmapped and mapped again, %zu of them not yet filled\n",
	    w->mu_start, w->mu_end - 1, missing);
	return 0;
}

static int op_mremap(struct work *w, char *why, size_t len)
{
	size_t n = w->npages / 16 ? w->npages / 16 : 1;
	size_t missing;
	void *old, *hole, *m;

	w->mr_start = w->npages * 7 / 8;
	if (w->mr_start + n > w->npages)
		w->mr_start = w->npages - n;
	w->mr_end = w->mr_start + n;
	missing = not_present(w, w->mr_start, w->mr_end);
	old = w->base + w->mr_start * PAGE;
	/* somewhere free to move to */
	hole = mmap(NULL, n * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (hole == MAP_FAILED) {
		snprintf(why, len, "mmap: %s", strerror(errno));
		return -1;
	}
	m = mremap(old, n * PAGE, n * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, hole);
	if (m == MAP_FAILED) {
		snprintf(why, len, "mremap: %s", strerror(errno));
		return -1;
	}
	w->mr_base = m;
	if (mapped(old, n * PAGE)) {
		snprintf(why, len, "mremap: the old address %p is still mapped", old);
		return -1;
	}
	out(w, "op mremap: pages %zu-%zu moved from %p to %p, %zu of them not yet filled\n", w->mr_start,
	    w->mr_end - 1, old, m, missing);
	return 0;
}

static uint32_t *permutation(const struct work *w)
{
	uint64_t st = w->seed ^ 0x7a11;
	uint32_t *o, t;
	size_t i, j;

	o = malloc(w->npages * sizeof(*o));
	if (!o)
		return NULL;
	for (i = 0; i < w->npages; i++)
		o[i] = i;
	for (i = w->npages - 1; i > 0; i--) {
		j = ph_rand(&st) % (i + 1);
		t = o[i];
		o[i] = o[j];
		o[j] = t;
	}
	return o;
}

/* One full check; returns the number of bad pages. */
static unsigned long check(struct work *w, int phase, bool timed)
{
	struct pass ps = { .w = w, .nthreads = w->threads + 1 };
	uint32_t *order = NULL;
	double t0 = now_s();
	unsigned long bad;

	pthread_mutex_init(&ps.report_lock, NULL);
	if (phase == 1 && w->mode == MODE_RANDOM) {
		order = permutation(w);
		if (!order)
			die("out of memory");
		ps.order = order;
	}
	if (timed && w->window_ms) {
		ps.nwin = MAX_WINDOWS;
		ps.win_pages = calloc(ps.nwin, sizeof(*ps.win_pages));
		ps.win_ns = calloc(ps.nwin, sizeof(*ps.win_ns));
		ps.win_max = calloc(ps.nwin, sizeof(*ps.win_max));
		if (!ps.win_pages || !ps.win_ns || !ps.win_max)
			die("out of memory");
	}
	clock_gettime(CLOCK_MONOTONIC, &ps.t0);
	pass_all(&ps);
	bad = atomic_load(&ps.bad);
	out(w, "phase=%d pages=%zu data=%lu zeros=%lu bad=%lu seconds=%.3f order=%s threads=%u\n", phase,
	    w->npages, atomic_load(&ps.data), atomic_load(&ps.zeros), bad, now_s() - t0,
	    ps.order ? "random" : "sequential", ps.nthreads);
	for (unsigned long i = 0; ps.win_pages && i < ps.nwin; i++)
		if (ps.win_pages[i])
			out(w, "window %lu pages=%lu mean_us=%.1f max_us=%.1f\n", i * w->window_ms,
			    ps.win_pages[i], ps.win_ns[i] / 1e3 / ps.win_pages[i], ps.win_max[i] / 1e3);
	free(ps.win_pages);
	free(ps.win_ns);
	free(ps.win_max);
	free(order);
	pthread_mutex_destroy(&ps.report_lock);
	return bad;
}

/* Phase 1 (ops, then MODE) and phase 2 (everything again after "final"). */
static int run_phases(struct work *w)
{
	char why[256];
	unsigned long bad;

	if (!w->fork_child) {
		for (unsigned int i = 0; i < w->nops; i++) {
			int rc = 0;

			switch (w->ops[i]) {
			case OP_FORK:
				rc = op_fork(w) < 0 ? -1 : 0;
				if (rc)
					snprintf(why, sizeof(why), "fork: %s", strerror(errno));
				break;
			case OP_DONTNEED:
				rc = op_dontneed(w, why, sizeof(why));
				break;
			case OP_MUNMAP:
				rc = op_munmap(w, why, sizeof(why));
				break;
			case OP_MREMAP:
				rc = op_mremap(w, why, sizeof(why));
				break;
			}
			if (rc) {
				result_write(w, 1, why);
				return -1;
			}
		}
	}
	if (w->mode != MODE_IDLE || w->fork_child) {
		bad = check(w, 1, !w->fork_child);
		if (bad) {
			snprintf(why, sizeof(why), "%lu bad pages in phase 1", bad);
			result_write(w, 1, why);
			return -1;
		}
	} else {
		out(w, "phase=1 pages=0 (idle)\n");
	}
	if (result_write(w, 1, NULL))
		return -1;

	if (wait_for(w, "final")) {
		result_write(w, 2, "no \"final\" in time");
		return -1;
	}
	bad = check(w, 2, false);
	if (bad) {
		snprintf(why, sizeof(why), "%lu bad pages in phase 2", bad);
		result_write(w, 2, why);
		return -1;
	}
	return result_write(w, 2, NULL) ? -1 : 0;
}

/* ---- main -------------------------------------------------------------- */

static void parse_ops(struct work *w, const char *arg)
{
	char *s, *tok, *save = NULL;
	unsigned int i;

	/* a copy: argv stays as given, for ps and for the dump */
	s = strdup(arg);
	if (!s)
		die("out of memory");
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
			if (!strcmp(tok, op_names[i]))
				break;
		if (i == sizeof(op_names) / sizeof(op_names[0]))
			die("-l: unknown op '%s' (fork, dontneed, munmap, mremap)", tok);
		if (w->nops == sizeof(w->ops) / sizeof(w->ops[0]))
			die("-l: too many ops");
		w->ops[w->nops++] = i;
	}
	free(s);
}

static unsigned long num(const char *opt, const char *s, unsigned long max)
{
	unsigned long v;

	if (argnum(s, max, &v))
		die("%s: bad number '%s' (at most %lu)", opt, s, max);
	return v;
}

int main(int argc, char **argv)
{
	struct work w = { .seed = 1, .npages = 64 * 256, .timeout_s = 600, .mode = MODE_SEQ };
	pid_t kids[MAX_CHILDREN];
	pthread_t tids[MAX_THREADS];
	unsigned int children = 0, i;
	size_t root_pages = 0;
	int c, rc, status;

	while ((c = getopt(argc, argv, "o:m:s:t:c:R:a:l:w:T:")) != -1) {
		switch (c) {
		case 'o':
			w.dir = optarg;
			break;
		case 'm':
			w.npages = num("-m", optarg, 1ul << 20) * 256;
			break;
		case 's':
			w.seed = num("-s", optarg, ULONG_MAX);
			break;
		case 't':
			w.threads = num("-t", optarg, MAX_THREADS);
			break;
		case 'c':
			children = num("-c", optarg, MAX_CHILDREN);
			break;
		case 'R':
			root_pages = num("-R", optarg, 1ul << 20) * 256;
			if (!root_pages)
				die("-R: at least 1 MiB");
			break;
		case 'a':
			if (!strcmp(optarg, "seq"))
				w.mode = MODE_SEQ;
			else if (!strcmp(optarg, "random"))
				w.mode = MODE_RANDOM;
			else if (!strcmp(optarg, "idle"))
				w.mode = MODE_IDLE;
			else
				die("-a: seq, random or idle, not '%s'", optarg);
			break;
		case 'l':
			parse_ops(&w, optarg);
			break;
		case 'w':
			w.window_ms = num("-w", optarg, 60000);
			break;
		case 'T':
			w.timeout_s = num("-T", optarg, 86400);
			break;
		default:
			die("usage: lp-work -o DIR [-m MIB] [-s SEED] [-t THREADS] [-c CHILDREN] [-R MIB] "
			    "[-a seq|random|idle] [-l fork,dontneed,munmap,mremap] [-w MS] [-T SECONDS]");
		}
	}
	if (!w.dir || w.dir[0] != '/')
		die("-o DIR (an absolute path) is required");
	if (!w.npages)
		die("-m: at least 1 MiB");
	/* CRIU restores only what it can: no fd above stderr may be open at the dump */
	syscall(SYS_close_range, 3, ~0u, 0);

	w.start_before = start_time();
	if (!w.start_before)
		die("cannot read the start time from /proc/self/stat");
	w.base = mmap(NULL, w.npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w.base == MAP_FAILED)
		die("mmap %zu MiB: %s", w.npages / 256, strerror(errno));
	w.mr_start = w.mr_end = w.dn_start = w.dn_end = w.mu_start = w.mu_end = w.npages;
	snprintf(w.tag, sizeof(w.tag), "0");
	fill(&w);

	for (i = 1; i <= children; i++) {
		kids[i - 1] = fork();
		if (kids[i - 1] < 0)
			die("fork: %s", strerror(errno));
		if (!kids[i - 1]) {
			w.idx = i;
			snprintf(w.tag, sizeof(w.tag), "%u", i);
			w.start_before = start_time();
			children = 0;
			refill_own_share(&w);
			break;
		}
	}
	if (!w.idx && root_pages && root_pages < w.npages) {
		if (munmap(w.base + root_pages * PAGE, (w.npages - root_pages) * PAGE))
			die("munmap: %s", strerror(errno));
		w.npages = root_pages;
		w.mr_start = w.mr_end = w.dn_start = w.dn_end = w.mu_start = w.mu_end = w.npages;
	}
	for (i = 0; i < w.threads; i++) {
		rc = pthread_create(&tids[i], NULL, crew_main, (void *)(uintptr_t)(i + 1));
		if (rc)
			die("pthread_create: %s", strerror(rc));
	}
	ready(&w);

	if (wait_for(&w, "go")) {
		result_write(&w, 1, "no \"go\" in time");
		return 1;
	}
	{
		unsigned long long after = start_time();

		out(&w, "tag=%s pid=%d ppid=%d mode=%s threads=%u mib=%zu seed=%" PRIu64 "\n", w.tag, getpid(),
		    getppid(), w.mode == MODE_SEQ ? "seq" : w.mode == MODE_RANDOM ? "random" : "idle",
		    w.threads, w.npages / 256, w.seed);
		out(&w, "start_before=%llu start_after=%llu\n", w.start_before, after);
		if (!after || after == w.start_before) {
			result_write(&w, 1, "not restored: the start time is the original's");
			return 1;
		}
	}
	rc = run_phases(&w) ? 1 : 0;

	pthread_mutex_lock(&crew.lock);
	crew.quit = true;
	pthread_cond_broadcast(&crew.cond);
	pthread_mutex_unlock(&crew.lock);
	for (i = 0; i < w.threads; i++)
		pthread_join(tids[i], NULL);
	/* reap the fork op's child and the tree's children; their results are their own */
	while (waitpid(-1, &status, 0) > 0)
		;
	return rc;
}
