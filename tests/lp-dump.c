/* SPDX-License-Identifier: MIT */
/* lp-dump: forks workload processes, snapshots them into a CRIU-format image directory plus lp-expect-<pid>.bin. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.pb-c.h"
#include "images.h"
#include "io.h"
#include "inventory.pb-c.h"
#include "lp-tool-imgw.h"
#include "mm.pb-c.h"
#include "pagehash.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"

#define PAGE PH_PAGE
#define MAX_ENTRY_PAGES 256u		/* 1 MiB per pagemap entry, like real dumps */
#define MAX_THREADS 64

/*
 * Address layout: far from libc, heap and stacks (which live near
 * 0x7fxxxxxxxxxx and 0x5xxxxxxxxxxx), 64 GiB per process, VMAs separated
 * by at least 1 GiB of unmapped space so no two ever merge.
 */
#define LT_BASE 0x7a0000000000ull
#define LT_PROC_STRIDE (64ull << 30)
/*
 * Past LT_FEW_PROCS processes (1,000 in one session) the layout moves to
 * 16 TiB with 16 GiB per process, which keeps clear of PIE binaries and
 * their heaps (0x55...) as well.
 */
#define LT_FEW_PROCS 64
#define LT_MANY_BASE 0x100000000000ull
#define LT_MANY_STRIDE (16ull << 30)
#define LT_MAX_PROCS 1024
#define LT_MAX_VMAS 16
#define LT_NONLAZY_PAGES 1024		/* the --nonlazy-vma VMA: 4 MiB */
#define GIB (1ull << 30)

struct lt_layout {
	uint64_t base, proc_stride;
	unsigned int nvmas;
	uint64_t stride;		/* between VMA starts */
	uint64_t npages[LT_MAX_VMAS + 1];
	bool nonlazy[LT_MAX_VMAS + 1];
};

static int lt_layout(uint64_t size_mib, unsigned int k, bool nonlazy, unsigned int procs, struct lt_layout *l)
{
	uint64_t total = size_mib << 8, per = total / k;

	if (per == 0)
		return -1;
	l->base = procs > LT_FEW_PROCS ? LT_MANY_BASE : LT_BASE;
	l->proc_stride = procs > LT_FEW_PROCS ? LT_MANY_STRIDE : LT_PROC_STRIDE;
	l->nvmas = k + (nonlazy ? 1 : 0);
	for (unsigned int j = 0; j < k; j++) {
		l->npages[j] = j == k - 1 ? total - per * (k - 1) : per;
		l->nonlazy[j] = false;
	}
	if (nonlazy) {
		l->npages[k] = LT_NONLAZY_PAGES;
		l->nonlazy[k] = true;
	}
	l->stride = ((l->npages[k - 1] * PAGE + GIB - 1) & ~(GIB - 1)) + GIB;
	return l->stride * l->nvmas > l->proc_stride - 4 * GIB ? -1 : 0;
}

static uint64_t lt_vma_start(const struct lt_layout *l, unsigned int proc, unsigned int vma)
{
	return l->base + proc * l->proc_stride + vma * l->stride;
}

enum { CLS_HOLE, CLS_ZERO, CLS_DATA };

struct opts {
	const char *dir;
	unsigned int procs, vmas, chain, modify, wire, threads;
	uint64_t size_mib, seed;
	int zombie;
	bool nonlazy;
	unsigned int hole_pct, zero_pct;
};

struct wvma {
	uint64_t start, npages;
	uint32_t prot;
	bool nonlazy;
	uint8_t *cls;			/* CLS_* per page, as the workload wrote it */
	uint8_t *lvl;			/* level whose pattern a CLS_DATA page holds */
	uint64_t *hash;			/* hash at the last dumped level */
	uint8_t *present;		/* present at the last dumped level */
};

struct wl {
	unsigned int idx;
	pid_t pid;
	bool zombie;
	int cmd_wr, ack_rd;		/* pipes to/from the workload */
	int pagemap_fd;
	unsigned int ntids;
	pid_t tids[MAX_THREADS];
	unsigned int nvmas;
	struct wvma *v;
};

static struct wl *g_wls;		/* for cleanup on exit: kill the workloads */
static unsigned int g_nwls;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("lp-dump: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static void kill_workloads(void)
{
	for (unsigned int i = 0; i < g_nwls; i++) {
		if (g_wls[i].pid > 0) {
			kill(g_wls[i].pid, SIGKILL);
			waitpid(g_wls[i].pid, NULL, 0);
			g_wls[i].pid = 0;
		}
	}
}

/* ---- page classes: computed identically by lp-dump and the workload ---- */

static uint8_t class0(const struct opts *o, unsigned int proc, unsigned int vma, uint64_t p)
{
	/* in runs of 4 pages so holes and zero pages form real runs */
	uint64_t r = ph_mix(o->seed ^ ph_mix(0x1000 + ((uint64_t)proc << 40) +
					     ((uint64_t)vma << 32) + (p >> 2))) % 100;

	if (r < o->hole_pct)
		return CLS_HOLE;
	if (r < o->hole_pct + o->zero_pct)
		return CLS_ZERO;
	return CLS_DATA;
}

/* The new class of a page modified at LEVEL (>= 1), or -1 if left alone. */
static int class_mod(const struct opts *o, unsigned int level, unsigned int proc, unsigned int vma,
		     uint64_t p)
{
	uint64_t r = ph_mix(o->seed ^ ph_mix(((uint64_t)level << 56) + ((uint64_t)proc << 40) +
					     ((uint64_t)vma << 32) + p));

	if (r % 100 >= o->modify)
		return -1;
	switch ((r >> 32) % 10) {
	case 0:
		return CLS_HOLE;
	case 1:
		return CLS_ZERO;
	default:
		return CLS_DATA;
	}
}

/* ---- the workload process ---- */

static int wl_tidpipe[2];

static void *wl_thread(void *arg)
{
	pid_t tid = gettid();

	(void)arg;
	if (write(wl_tidpipe[1], &tid, sizeof(tid)) != sizeof(tid))
		_exit(3);
	for (;;)
		pause();
	return NULL;
}

static void wl_apply(const struct opts *o, struct wl *w, unsigned int level)
{
	for (unsigned int j = 0; j < w->nvmas; j++) {
		struct wvma *v = &w->v[j];
		char *base = (char *)(uintptr_t)v->start;

		if (!(v->prot & PROT_WRITE))
			mprotect(base, v->npages * PAGE, PROT_READ | PROT_WRITE);
		for (uint64_t p = 0; p < v->npages; p++) {
			int c = level ? class_mod(o, level, w->idx, j, p) : class0(o, w->idx, j, p);

			if (c < 0)
				continue;
			if (c == CLS_DATA)
				ph_fill(base + p * PAGE, o->seed, level, w->idx, j, p);
			else if (c == CLS_ZERO)
				memset(base + p * PAGE, 0, PAGE);
			else if (level)
				madvise(base + p * PAGE, PAGE, MADV_DONTNEED);
		}
		if (!(v->prot & PROT_WRITE))
			mprotect(base, v->npages * PAGE, v->prot);
	}
}

static void wl_main(const struct opts *o, struct wl *w, int cmd_rd, int ack_wr)
{
	struct {
		uint32_t ntids;
		pid_t tids[MAX_THREADS];
	} ack;
	pthread_t th;
	uint32_t level;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(2);
	for (unsigned int j = 0; j < w->nvmas; j++) {
		struct wvma *v = &w->v[j];
		void *a = mmap((void *)(uintptr_t)v->start, v->npages * PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (a != (void *)(uintptr_t)v->start) {
			fprintf(stderr, "lp-dump: workload %u: mmap 0x%" PRIx64 ": %s\n", w->idx,
				v->start, strerror(errno));
			_exit(2);
		}
		madvise(a, v->npages * PAGE, MADV_NOHUGEPAGE);
		if (!(v->prot & PROT_WRITE))
			mprotect(a, v->npages * PAGE, v->prot);
	}
	wl_apply(o, w, 0);

	ack.ntids = 1;
	ack.tids[0] = getpid();
	if (pipe2(wl_tidpipe, O_CLOEXEC))
		_exit(2);
	for (unsigned int t = 1; t < o->threads; t++) {
		if (pthread_create(&th, NULL, wl_thread, NULL))
			_exit(2);
		if (io_read_full(wl_tidpipe[0], &ack.tids[ack.ntids], sizeof(pid_t)))
			_exit(2);
		ack.ntids++;
	}
	if (io_write_full(ack_wr, &ack, sizeof(ack)))
		_exit(2);
	/* stopped: wait for "modify for level N" commands; EOF or SIGKILL ends us */
	while (io_read_full(cmd_rd, &level, sizeof(level)) == 0) {
		wl_apply(o, w, level);
		if (io_write_full(ack_wr, &ack, sizeof(ack)))
			_exit(2);
	}
	_exit(0);
}

static int wl_start(const struct opts *o, struct wl *w)
{
	int cmd[2], ackp[2];
	siginfo_t si;

	if (w->zombie) {
		w->pid = fork();
		if (w->pid < 0)
			return fail("fork: %s", strerror(errno));
		if (w->pid == 0)
			_exit(0);
		/* wait until it is a zombie, without reaping it */
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOWAIT))
			return fail("waitid %d: %s", w->pid, strerror(errno));
		w->ntids = 1;
		w->tids[0] = w->pid;
		return 0;
	}
	if (pipe2(cmd, O_CLOEXEC) || pipe2(ackp, O_CLOEXEC))
		return fail("pipe: %s", strerror(errno));
	w->pid = fork();
	if (w->pid < 0)
		return fail("fork: %s", strerror(errno));
	if (w->pid == 0) {
		close(cmd[1]);
		close(ackp[0]);
		wl_main(o, w, cmd[0], ackp[1]);
	}
	close(cmd[0]);
	close(ackp[1]);
	w->cmd_wr = cmd[1];
	w->ack_rd = ackp[0];
	return 0;
}

static int wl_wait_ack(struct wl *w)
{
	struct {
		uint32_t ntids;
		pid_t tids[MAX_THREADS];
	} ack;

	if (io_read_full(w->ack_rd, &ack, sizeof(ack)))
		return fail("workload %u (pid %d) died while filling its memory", w->idx, w->pid);
	w->ntids = ack.ntids;
	memcpy(w->tids, ack.tids, sizeof(w->tids));
	return 0;
}

/* ---- image writing ---- */

static int write_inventory(int dfd)
{
	InventoryEntry ie = INVENTORY_ENTRY__INIT;
	struct timespec ts;
	struct imgw *w;
	char runid[64];

	clock_gettime(CLOCK_BOOTTIME, &ts);
	ie.img_version = 2;
	ie.has_fdinfo_per_id = 1;
	ie.fdinfo_per_id = 1;
	ie.has_ns_per_id = 1;
	ie.ns_per_id = 1;
	ie.has_lsmtype = 1;
	ie.lsmtype = 0;			/* NO_LSM */
	ie.has_dump_uptime = 1;
	ie.dump_uptime = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	ie.has_network_lock_method = 1;
	ie.network_lock_method = 1;	/* iptables */
	snprintf(runid, sizeof(runid), "lp-dump-%d-%ld", getpid(), (long)ts.tv_sec);
	ie.dump_criu_run_id = runid;
	w = imgw_open(dfd, "inventory.img", INVENTORY_MAGIC);
	if (!w)
		return fail("inventory.img: %s", strerror(errno));
	imgw_msg(w, &ie.base);
	if (imgw_close(w))
		return fail("inventory.img: write: %s", strerror(errno));
	return 0;
}

static int write_pstree(int dfd, struct wl *wls, unsigned int n)
{
	struct imgw *w = imgw_open(dfd, "pstree.img", PSTREE_MAGIC);
	int r;

	if (!w)
		return fail("pstree.img: %s", strerror(errno));
	for (unsigned int i = 0; i < n; i++) {
		PstreeEntry pe = PSTREE_ENTRY__INIT;
		uint32_t th[MAX_THREADS];

		pe.pid = (uint32_t)wls[i].pid;
		pe.ppid = i ? (uint32_t)wls[0].pid : 0;
		/* the root leads its own group and session, the others join them */
		pe.pgid = (uint32_t)wls[0].pid;
		pe.sid = (uint32_t)wls[0].pid;
		for (unsigned int t = 0; t < wls[i].ntids; t++)
			th[t] = (uint32_t)wls[i].tids[t];
		pe.n_threads = wls[i].ntids;
		pe.threads = th;
		imgw_msg(w, &pe.base);
	}
	r = imgw_close(w);
	if (r)
		return fail("pstree.img: write: %s", strerror(-r));
	return 0;
}

static int write_cores(int dfd, struct wl *w)
{
	for (unsigned int t = 0; t < w->ntids; t++) {
		CoreEntry ce = CORE_ENTRY__INIT;
		TaskCoreEntry tc = TASK_CORE_ENTRY__INIT;
		char name[64];
		struct imgw *f;
		int r;

		ce.mtype = 1;		/* CORE_ENTRY__MARCH__X86_64 */
		if (t == 0) {
			tc.task_state = w->zombie ? TASK_DEAD : TASK_ALIVE;
			tc.has_exit_code = 1;
			tc.exit_code = 0;
			tc.has_personality = 1;
			tc.personality = 0;
			tc.has_flags = 1;
			tc.flags = 0x400040;	/* PF_FORKNOEXEC | PF_RANDOMIZE, as seen in real dumps */
			tc.comm = "lp-workload";
			ce.tc = &tc;
		}
		snprintf(name, sizeof(name), "core-%d.img", w->tids[t]);
		f = imgw_open(dfd, name, CORE_MAGIC);
		if (!f)
			return fail("%s: %s", name, strerror(errno));
		imgw_msg(f, &ce.base);
		r = imgw_close(f);
		if (r)
			return fail("%s: write: %s", name, strerror(-r));
	}
	return 0;
}

/* mm_* fields from /proc/PID/stat, auxv from /proc/PID/auxv: cheap and what CRIU records. */
static void read_mm_fields(pid_t pid, MmEntry *mm, uint64_t *auxv, size_t *nauxv)
{
	char path[64], buf[4096], *p;
	unsigned long long f[64] = { 0 };
	ssize_t n;
	int fd, i;

	*nauxv = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = 0;
			p = strrchr(buf, ')');
			/* field 3 (state) follows ") " */
			for (i = 3; p && i < 64; i++) {
				p = strchr(p, ' ');
				if (!p)
					break;
				p++;
				f[i] = strtoull(p, NULL, 10);
			}
		}
	}
	mm->mm_start_code = f[26];
	mm->mm_end_code = f[27];
	mm->mm_start_stack = f[28];
	mm->mm_start_data = f[45];
	mm->mm_end_data = f[46];
	mm->mm_start_brk = f[47];
	mm->mm_brk = f[47];
	mm->mm_arg_start = f[48];
	mm->mm_arg_end = f[49];
	mm->mm_env_start = f[50];
	mm->mm_env_end = f[51];
	snprintf(path, sizeof(path), "/proc/%d/auxv", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, auxv, 512 * sizeof(uint64_t));
		close(fd);
		if (n > 0)
			*nauxv = (size_t)n / sizeof(uint64_t);
	}
}

/* prot of the mapping that starts at START, from /proc/PID/maps */
static int maps_prot(pid_t pid, uint64_t start, uint64_t end, uint32_t *prot)
{
	char path[64], line[512];
	FILE *f;
	int r = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char perm[8];

		if (sscanf(line, "%llx-%llx %7s", &s, &e, perm) != 3)
			continue;
		if (s != start)
			continue;
		if (e != end) {
			r = -EINVAL;
			break;
		}
		*prot = (perm[0] == 'r' ? PROT_READ : 0) | (perm[1] == 'w' ? PROT_WRITE : 0) |
			(perm[2] == 'x' ? PROT_EXEC : 0);
		r = 0;
		break;
	}
	fclose(f);
	return r;
}

static int write_mm(int dfd, struct wl *w)
{
	MmEntry mm = MM_ENTRY__INIT;
	VmaEntry ve[LT_MAX_VMAS + 1], *vp[LT_MAX_VMAS + 1];
	uint64_t auxv[512];
	size_t nauxv;
	char name[64];
	struct imgw *f;
	int r;

	read_mm_fields(w->pid, &mm, auxv, &nauxv);
	mm.exe_file_id = 1;
	mm.n_mm_saved_auxv = nauxv;
	mm.mm_saved_auxv = auxv;
	mm.has_dumpable = 1;
	mm.dumpable = 1;
	mm.has_thp_disabled = 1;
	mm.thp_disabled = 0;
	for (unsigned int j = 0; j < w->nvmas; j++) {
		struct wvma *v = &w->v[j];
		uint32_t prot = 0;
		VmaEntry e = VMA_ENTRY__INIT;

		r = maps_prot(w->pid, v->start, v->start + v->npages * PAGE, &prot);
		if (r)
			return fail("pid %d: VMA 0x%" PRIx64 " not found as one mapping in maps: %s",
				    w->pid, v->start, strerror(-r));
		e.start = v->start;
		e.end = v->start + v->npages * PAGE;
		e.pgoff = 0;
		e.shmid = 0;
		e.prot = prot;
		e.flags = MAP_PRIVATE | MAP_ANONYMOUS | (v->nonlazy ? MAP_LOCKED : 0);
		e.status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		e.fd = -1;
		e.has_madv = 1;
		e.madv = 1ull << MADV_NOHUGEPAGE;
		ve[j] = e;
		vp[j] = &ve[j];
	}
	mm.n_vmas = w->nvmas;
	mm.vmas = vp;
	snprintf(name, sizeof(name), "mm-%d.img", w->pid);
	f = imgw_open(dfd, name, MM_MAGIC);
	if (!f)
		return fail("%s: %s", name, strerror(errno));
	imgw_msg(f, &mm.base);
	r = imgw_close(f);
	if (r)
		return fail("%s: write: %s", name, strerror(-r));
	return 0;
}

struct dumpctx {
	const struct opts *o;
	unsigned int level;
	struct imgw *pm, *pages;
	uint64_t n_lazy, n_parent, n_holes, n_zero, n_entries, n_eager;
	char *buf;			/* MAX_ENTRY_PAGES pages */
	char *gen;			/* one page */
};

static int emit_entry(struct dumpctx *c, uint64_t vaddr, uint64_t n, uint32_t flags)
{
	PagemapEntry pe = PAGEMAP_ENTRY__INIT;

	pe.vaddr = vaddr;
	pe.has_flags = 1;
	pe.flags = flags;
	if (c->o->wire == 3) {
		pe.compat_nr_pages = (uint32_t)n;
	} else {
		pe.compat_nr_pages = 0;
		pe.has_nr_pages = 1;
		pe.nr_pages = n;
	}
	c->n_entries++;
	return imgw_msg(c->pm, &pe.base);
}

/*
 * One run of present pages [p0, p0+n) of one VMA, n <= MAX_ENTRY_PAGES:
 * reads it from the workload, checks it against what the workload was
 * told to write, records the hashes, and emits entries split where the
 * kind changes (unchanged since the parent level -> PE_PARENT, no data).
 */
static int dump_run(struct dumpctx *c, struct wl *w, unsigned int j, uint64_t p0, uint64_t n)
{
	struct wvma *v = &w->v[j];
	uint64_t addr = v->start + p0 * PAGE;
	struct iovec liov = { c->buf, n * PAGE }, riov = { (void *)(uintptr_t)addr, n * PAGE };
	uint32_t data_flags = v->nonlazy ? PE_PRESENT : (PE_LAZY | PE_PRESENT);
	ssize_t r = process_vm_readv(w->pid, &liov, 1, &riov, 1, 0);
	uint64_t run_start = 0, i;
	int run_parent = -1;

	if (r != (ssize_t)(n * PAGE))
		return fail("pid %d: process_vm_readv 0x%" PRIx64 " +%" PRIu64 " pages: %s", w->pid,
			    addr, n, r < 0 ? strerror(errno) : "short read");
	for (i = 0; i < n; i++) {
		uint64_t p = p0 + i;
		const char *pg = c->buf + i * PAGE;
		uint64_t h = pagehash(pg);
		int parent;

		if (v->cls[p] == CLS_DATA) {
			ph_fill(c->gen, c->o->seed, v->lvl[p], w->idx, j, p);
			if (memcmp(pg, c->gen, PAGE))
				return fail("pid %d: page 0x%" PRIx64 " does not hold the pattern the workload wrote",
					    w->pid, v->start + p * PAGE);
		} else if (h != pagehash_zero()) {
			return fail("pid %d: page 0x%" PRIx64 " should be zero", w->pid, v->start + p * PAGE);
		}
		parent = c->level > 0 && v->present[p] && v->hash[p] == h;
		v->hash[p] = h;
		if (parent != run_parent) {
			if (run_parent >= 0 && emit_entry(c, v->start + (p0 + run_start) * PAGE, i - run_start,
						    run_parent ? PE_PARENT : data_flags))
				return -1;
			run_parent = parent;
			run_start = i;
		}
		if (parent) {
			c->n_parent++;
		} else {
			if (v->nonlazy)
				c->n_eager++;
			else
				c->n_lazy++;
			if (v->cls[p] == CLS_ZERO)
				c->n_zero++;
			if (imgw_raw(c->pages, pg, PAGE))
				return fail("%s: write: %s", imgw_name(c->pages), strerror(errno));
		}
	}
	if (emit_entry(c, v->start + (p0 + run_start) * PAGE, n - run_start,
		       run_parent ? PE_PARENT : data_flags))
		return fail("pagemap write: %s", strerror(errno));
	return 0;
}

static int dump_vma(struct dumpctx *c, struct wl *w, unsigned int j, FILE *expect)
{
	struct wvma *v = &w->v[j];
	uint64_t *pme = malloc(v->npages * sizeof(uint64_t));
	uint64_t p, run = 0, nrun = 0;
	ssize_t r;
	int ret = -1;

	if (!pme)
		return fail("out of memory");
	r = pread(w->pagemap_fd, pme, v->npages * sizeof(uint64_t), (off_t)(v->start / PAGE * 8));
	if (r != (ssize_t)(v->npages * sizeof(uint64_t))) {
		fail("pid %d: /proc/pid/pagemap read: %s", w->pid, r < 0 ? strerror(errno) : "short");
		goto out;
	}
	for (p = 0; p <= v->npages; p++) {
		bool present = p < v->npages && (pme[p] & (3ull << 62));

		if (p < v->npages && present != (v->cls[p] != CLS_HOLE)) {
			fail("pid %d: page 0x%" PRIx64 " is %spresent, but the workload %s it", w->pid,
			     v->start + p * PAGE, present ? "" : "not ", present ? "never touched" : "wrote");
			goto out;
		}
		if (present && nrun == 0)
			run = p;
		if (present)
			nrun++;
		if (nrun && (!present || nrun == MAX_ENTRY_PAGES)) {
			if (dump_run(c, w, j, run, nrun))
				goto out;
			nrun = 0;
		}
		if (p < v->npages && !present) {
			c->n_holes++;
			v->hash[p] = pagehash_zero();
		}
	}
	/* only now: dump_run compared with the previous level's presence */
	for (p = 0; p < v->npages; p++)
		v->present[p] = (pme[p] & (3ull << 62)) != 0;
	if (fwrite(v->hash, sizeof(uint64_t), v->npages, expect) != v->npages) {
		fail("lp-expect write: %s", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(pme);
	return ret;
}

static int dump_level(const struct opts *o, struct wl *wls, unsigned int level, const char *path,
		      uint64_t *stats)
{
	struct dumpctx c = { .o = o, .level = level };
	unsigned int pages_id = 1;
	int dfd, ret = -1;

	if (mkdir(path, 0755) && errno != EEXIST)
		return fail("mkdir %s: %s", path, strerror(errno));
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return fail("open %s: %s", path, strerror(errno));
	if (level > 0) {
		char target[32];

		snprintf(target, sizeof(target), "../%u", level - 1);
		unlinkat(dfd, "parent", 0);
		if (symlinkat(target, dfd, "parent")) {
			fail("%s/parent: symlink: %s", path, strerror(errno));
			goto out;
		}
	}
	c.buf = malloc(MAX_ENTRY_PAGES * PAGE);
	c.gen = malloc(PAGE);
	if (!c.buf || !c.gen) {
		fail("out of memory");
		goto out;
	}
	if (write_inventory(dfd) || write_pstree(dfd, wls, o->procs))
		goto out;
	for (unsigned int i = 0; i < o->procs; i++) {
		struct wl *w = &wls[i];
		PagemapHead ph = PAGEMAP_HEAD__INIT;
		char name[64];
		FILE *expect;
		int efd;

		if (write_cores(dfd, w))
			goto out;
		if (w->zombie)
			continue;
		if (write_mm(dfd, w))
			goto out;
		snprintf(name, sizeof(name), "pagemap-%d.img", w->pid);
		c.pm = imgw_open(dfd, name, PAGEMAP_MAGIC);
		if (!c.pm) {
			fail("%s/%s: %s", path, name, strerror(errno));
			goto out;
		}
		ph.pages_id = pages_id;
		imgw_msg(c.pm, &ph.base);
		snprintf(name, sizeof(name), "pages-%u.img", pages_id++);
		c.pages = imgw_open(dfd, name, 0);
		snprintf(name, sizeof(name), "lp-expect-%d.bin", w->pid);
		efd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		expect = efd >= 0 ? fdopen(efd, "w") : NULL;
		if (!c.pages || !expect) {
			fail("%s: create files: %s", path, strerror(errno));
			goto out;
		}
		for (unsigned int j = 0; j < w->nvmas; j++) {
			if (dump_vma(&c, w, j, expect)) {
				fclose(expect);
				goto out;
			}
		}
		if (fclose(expect)) {
			fail("%s/%s: write: %s", path, name, strerror(errno));
			goto out;
		}
		ret = imgw_close(c.pm);
		c.pm = NULL;
		if (imgw_close(c.pages) || ret) {
			c.pages = NULL;
			ret = -1;
			fail("%s: write pagemap/pages: %s", path, strerror(errno));
			goto out;
		}
		c.pages = NULL;
	}
	stats[0] += c.n_lazy;
	stats[1] += c.n_parent;
	stats[2] += c.n_holes;
	stats[3] += c.n_zero;
	stats[4] += c.n_entries;
	stats[5] += c.n_eager;
	ret = 0;
out:
	imgw_close(c.pm);
	imgw_close(c.pages);
	free(c.buf);
	free(c.gen);
	close(dfd);
	return ret;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-dump -D DIR [--procs N] [--size MIB] [--vmas K] [--seed S] [--wire 3|4]\n"
		"               [--chain L [--modify PCT]] [--zombie I] [--nonlazy-vma]\n"
		"               [--threads-in-pstree T] [--holes PCT] [--zeros PCT]\n"
		"  --chain L writes DIR/0 .. DIR/L-1 (DIR/k/parent -> ../k-1), modifying PCT%%\n"
		"  of the pages between levels; restore from DIR/L-1.\n");
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || !*s || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "procs", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "vmas", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 'S' },
		{ "wire", required_argument, NULL, 'w' },
		{ "chain", required_argument, NULL, 'c' },
		{ "modify", required_argument, NULL, 'm' },
		{ "zombie", required_argument, NULL, 'z' },
		{ "nonlazy-vma", no_argument, NULL, 'L' },
		{ "threads-in-pstree", required_argument, NULL, 't' },
		{ "holes", required_argument, NULL, 'H' },
		{ "zeros", required_argument, NULL, 'Z' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct opts o = { .procs = 1, .vmas = 2, .chain = 1, .modify = 20, .wire = 4, .threads = 1,
			  .size_mib = 64, .seed = 1, .zombie = -1, .hole_pct = 5, .zero_pct = 5 };
	struct lt_layout lay;
	uint64_t v, stats[6] = { 0 };
	struct wl *wls;
	char path[4096];
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, "D:h", lo, NULL)) != -1) {
		switch (c) {
		case 'D':
			o.dir = optarg;
			continue;
		case 'L':
			o.nonlazy = true;
			continue;
		case 'h':
			usage();
			return 0;
		case '?':
			usage();
			return 2;
		}
		if (parse_uint(optarg, UINT32_MAX, &v)) {
			fprintf(stderr, "lp-dump: bad number '%s'\n", optarg);
			return 2;
		}
		switch (c) {
		case 'n': o.procs = (unsigned int)v; break;
		case 's': o.size_mib = v; break;
		case 'k': o.vmas = (unsigned int)v; break;
		case 'S': o.seed = v; break;
		case 'w': o.wire = (unsigned int)v; break;
		case 'c': o.chain = (unsigned int)v; break;
		case 'm': o.modify = (unsigned int)v; break;
		case 'z': o.zombie = (int)v; break;
		case 't': o.threads = (unsigned int)v; break;
		case 'H': o.hole_pct = (unsigned int)v; break;
		case 'Z': o.zero_pct = (unsigned int)v; break;
		}
	}
	if (!o.dir || optind != argc) {
		usage();
		return 2;
	}
	if (o.procs < 1 || o.procs > LT_MAX_PROCS || o.vmas < 1 || o.vmas > LT_MAX_VMAS ||
	    o.size_mib < 1 || o.chain < 1 || o.chain > 16 || o.modify > 100 ||
	    (o.wire != 3 && o.wire != 4) || o.threads < 1 || o.threads > MAX_THREADS ||
	    o.hole_pct + o.zero_pct > 100 || (o.zombie >= 0 && (unsigned int)o.zombie >= o.procs)) {
		fprintf(stderr, "lp-dump: option out of range\n");
		return 2;
	}
	if (lt_layout(o.size_mib, o.vmas, o.nonlazy, o.procs, &lay)) {
		fprintf(stderr, "lp-dump: %" PRIu64 " MiB in %u VMAs does not fit the layout\n",
			o.size_mib, o.vmas);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	wls = calloc(o.procs, sizeof(*wls));
	if (!wls)
		return 1;
	g_wls = wls;
	g_nwls = o.procs;
	for (unsigned int i = 0; i < o.procs; i++) {
		struct wl *w = &wls[i];

		w->idx = i;
		w->zombie = (int)i == o.zombie;
		w->pagemap_fd = -1;
		w->cmd_wr = w->ack_rd = -1;
		if (w->zombie)
			continue;
		w->nvmas = lay.nvmas;
		w->v = calloc(lay.nvmas, sizeof(*w->v));
		if (!w->v)
			goto out;
		for (unsigned int j = 0; j < lay.nvmas; j++) {
			struct wvma *wv = &w->v[j];

			wv->start = lt_vma_start(&lay, i, j);
			wv->npages = lay.npages[j];
			wv->nonlazy = lay.nonlazy[j];
			/* VMA 1 is read-only: restorers must honour prot and still fill it */
			wv->prot = j == 1 && !wv->nonlazy ? PROT_READ : PROT_READ | PROT_WRITE;
			wv->cls = malloc(wv->npages);
			wv->lvl = calloc(wv->npages, 1);
			wv->hash = calloc(wv->npages, 8);
			wv->present = calloc(wv->npages, 1);
			if (!wv->cls || !wv->lvl || !wv->hash || !wv->present)
				goto out;
			for (uint64_t p = 0; p < wv->npages; p++)
				wv->cls[p] = class0(&o, i, j, p);
		}
	}
	/* fork all workloads first, then wait: they fill their memory in parallel */
	for (unsigned int i = 0; i < o.procs; i++)
		if (wl_start(&o, &wls[i]))
			goto out;
	for (unsigned int i = 0; i < o.procs; i++) {
		char pm[64];

		if (wls[i].zombie)
			continue;
		if (wl_wait_ack(&wls[i]))
			goto out;
		snprintf(pm, sizeof(pm), "/proc/%d/pagemap", wls[i].pid);
		wls[i].pagemap_fd = open(pm, O_RDONLY | O_CLOEXEC);
		if (wls[i].pagemap_fd < 0) {
			fail("%s: %s", pm, strerror(errno));
			goto out;
		}
	}
	if (o.chain > 1 && mkdir(o.dir, 0755) && errno != EEXIST) {
		fail("mkdir %s: %s", o.dir, strerror(errno));
		goto out;
	}
	for (unsigned int level = 0; level < o.chain; level++) {
		if (level > 0) {
			uint32_t l = level;

			for (unsigned int i = 0; i < o.procs; i++) {
				struct wl *w = &wls[i];

				if (w->zombie)
					continue;
				if (io_write_full(w->cmd_wr, &l, sizeof(l))) {
					fail("workload %d: %s", w->pid, strerror(errno));
					goto out;
				}
				for (unsigned int j = 0; j < w->nvmas; j++) {
					for (uint64_t p = 0; p < w->v[j].npages; p++) {
						int nc = class_mod(&o, level, i, j, p);

						if (nc < 0)
							continue;
						if (nc == CLS_DATA)
							w->v[j].lvl[p] = (uint8_t)level;
						w->v[j].cls[p] = (uint8_t)nc;
					}
				}
			}
			for (unsigned int i = 0; i < o.procs; i++)
				if (!wls[i].zombie && wl_wait_ack(&wls[i]))
					goto out;
		}
		if (o.chain > 1)
			snprintf(path, sizeof(path), "%s/%u", o.dir, level);
		else
			snprintf(path, sizeof(path), "%s", o.dir);
		if (dump_level(&o, wls, level, path, stats))
			goto out;
	}
	printf("lp-dump: wrote %s%s: %u process(es) [", o.dir, o.chain > 1 ? "/0.." : "", o.procs);
	for (unsigned int i = 0; i < o.procs; i++)
		printf("%s%d%s", i ? " " : "", wls[i].pid, wls[i].zombie ? "(zombie)" : "");
	printf("], %u VMA(s) %" PRIu64 " MiB each process, %u level(s), wire %u: lazy=%" PRIu64
	       " parent=%" PRIu64 " eager=%" PRIu64 " holes=%" PRIu64 " zero=%" PRIu64
	       " entries=%" PRIu64 " (pages, summed over levels)\n",
	       lay.nvmas, o.size_mib, o.chain, o.wire, stats[0], stats[1], stats[5], stats[2],
	       stats[3], stats[4]);
	ret = 0;
out:
	kill_workloads();
	return ret;
}
