/* SPDX-License-Identifier: MIT */
/* Unit tests of proc: placing pages and reading events on a real userfaultfd over this process's own memory. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include <cmocka.h>

#include "fill.h"
#include "proc.h"
#include "ranges.h"
#include "stats.h"

#define NPAGES 64
#define IMG 0x40000000ull

static uint64_t pg;

struct fx {
	struct stats st;
	struct fill f;
	int uffd;
	uint8_t *mem;			/* NPAGES pages, registered MISSING */
	uint8_t *buf;			/* image data: page i holds byte (i + 1) */
	struct proc *p;
};

static int uffd_open(void)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
					      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int reg(int uffd, void *addr, uint64_t len)
{
	struct uffdio_register r = { .range = { .start = (uint64_t)(uintptr_t)addr, .len = len },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };

	return ioctl(uffd, UFFDIO_REGISTER, &r);
}

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	struct ranges *r;
	uint64_t i;

	assert_non_null(x);
	stats_init(&x->st);
	fill_init(&x->f, pg);
	x->f.stats = &x->st;
	x->uffd = uffd_open();
	if (x->uffd < 0)
		fail_msg("userfaultfd: %s", strerror(errno));
	x->mem = mmap(NULL, NPAGES * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(x->mem != MAP_FAILED);
	assert_int_equal(reg(x->uffd, x->mem, NPAGES * pg), 0);
	x->buf = aligned_alloc(pg, NPAGES * pg);
	assert_non_null(x->buf);
	for (i = 0; i < NPAGES; i++)
		memset(x->buf + i * pg, (int)(i + 1), pg);
	r = ranges_new();
	assert_non_null(r);
	assert_int_equal(ranges_add(r, (uint64_t)(uintptr_t)x->mem, (uint64_t)(uintptr_t)x->mem + NPAGES * pg, IMG), 0);
	x->p = proc_new(&x->f, 7, getpid(), 1, NULL, x->uffd, r);
	assert_non_null(x->p);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	proc_free(x->p);	/* closes the uffd: anything still missing reads as zeros again */
	munmap(x->mem, NPAGES * pg);
	free(x->buf);
	fill_destroy(&x->f);
	free(x);
	return 0;
}

static uint64_t A(struct fx *x, uint64_t i)
{
	return (uint64_t)(uintptr_t)x->mem + i * pg;
}

/* Page I of the region as the process sees it (present: no fault). */
static int byte_at(struct fx *x, uint64_t i)
{
	unsigned char v;

	assert_int_equal(mincore(x->mem + i * pg, pg, &v), 0);
	if (!(v & 1))
		fail_msg("page %llu is not present", (unsigned long long)i);
	return x->mem[i * pg + pg / 2];
}

static void test_place_section(void **state)
{
	struct fx *x = *state;
	uint64_t stop, i;

	assert_int_equal(proc_remaining(x->p), NPAGES);
	/* at most 8 of the 16 pages asked for, in one section */
	assert_int_equal(proc_place_section(x->p, A(x, 4), IMG + 4 * pg, 16, 8, x->buf + 4 * pg, &stop), 0);
	assert_int_equal(stop, A(x, 12));
	for (i = 4; i < 12; i++)
		assert_int_equal(byte_at(x, i), i + 1);
	assert_int_equal(proc_remaining(x->p), NPAGES - 8);
	assert_int_equal(x->st.pages_copied, 8);
	/* again over the same pages and more: those in are skipped (not lazy any more), the rest go in */
	assert_int_equal(proc_place_section(x->p, A(x, 0), IMG, 16, 16, x->buf, &stop), 0);
	assert_int_equal(stop, A(x, 16));
	for (i = 0; i < 16; i++)
		assert_int_equal(byte_at(x, i), i + 1);
	assert_int_equal(proc_remaining(x->p), NPAGES - 16);
	assert_int_equal(x->st.pages_copied, 16);
}

static void test_place_zero_and_mismatch(void **state)
{
	struct fx *x = *state;
	uint64_t stop;

	/* an all-zero page goes in with ZEROPAGE */
	memset(x->buf + 20 * pg, 0, pg);
	assert_int_equal(proc_place_section(x->p, A(x, 20), IMG + 20 * pg, 1, 1, x->buf + 20 * pg, &stop), 0);
	assert_int_equal(x->st.zero_pages, 1);
	assert_int_equal(byte_at(x, 20), 0);
	/* data read for another image address is never placed */
	assert_int_equal(proc_place_section(x->p, A(x, 30), IMG + 31 * pg, 2, 2, x->buf + 31 * pg, &stop), 0);
	assert_int_equal(stop, A(x, 32));
	assert_int_equal(x->st.pages_copied, 0);
	assert_int_equal(proc_remaining(x->p), NPAGES - 1);
}

static void test_exists(void **state)
{
	struct fx *x = *state;
	struct uffdio_copy c = { .dst = A(x, 40), .src = (uint64_t)(uintptr_t)(x->buf + 40 * pg), .len = pg };
	uint64_t stop;

	/* a page placed behind the daemon's back (another thread's COPY): EEXIST is success */
	assert_int_equal(ioctl(x->uffd, UFFDIO_COPY, &c), 0);
	assert_int_equal(proc_place_section(x->p, A(x, 39), IMG + 39 * pg, 3, 3, x->buf + 39 * pg, &stop), 0);
	assert_int_equal(stop, A(x, 42));
	assert_int_equal(x->st.exists, 1);
	assert_int_equal(proc_remaining(x->p), NPAGES - 3);
	assert_int_equal(byte_at(x, 41), 42);
}

struct reader {
	struct fx *x;
	uint64_t page;
	int got;
};

static void *read_page(void *arg)
{
	struct reader *r = arg;

	r->got = ((volatile uint8_t *)r->x->mem)[r->page * pg + 5];
	return NULL;
}

/* Reads the uffd until it yields a fault or CHILDREN; -1 if neither within ~2 s. */
static int read_fault(struct fx *x, uint64_t *addr, struct proc **children, int *nch)
{
	struct lp_err e;
	int n, more, i;

	for (i = 0; i < 20000; i++) {
		n = proc_read(x->p, addr, 1, &more, children, nch, &e);
		if (n < 0)
			fail_msg("proc_read: %s", e.msg);
		if (n > 0 || *nch)
			return n;
		usleep(100);
	}
	return -1;
}

static void test_fault(void **state)
{
	struct fx *x = *state;
	struct reader r = { .x = x, .page = 50 };
	struct proc *ch[PROC_MAX_MSGS];
	uint64_t addr, img, n;
	pthread_t t;
	int nch;

	assert_int_equal(pthread_create(&t, NULL, read_page, &r), 0);
	assert_int_equal(read_fault(x, &addr, ch, &nch), 1);
	assert_int_equal(addr, A(x, 50));
	assert_true(proc_last_fault_ns(x->p) > 0);
	/* a first fault, far from any other: its one page */
	assert_true(proc_fault_run(x->p, addr, 16, &img, &n));
	assert_int_equal(img, IMG + 50 * pg);
	assert_int_equal(n, 1);
	assert_int_equal(proc_place_fault(x->p, addr, img, n, x->buf + 50 * pg), 0);
	pthread_join(t, NULL);
	assert_int_equal(r.got, 51);
	proc_unpick(x->p, addr, 0);
	/* the next fault near it gets the window: up to 16 pages, as far as they are lazy */
	assert_true(proc_fault_run(x->p, A(x, 51), 16, &img, &n));
	assert_int_equal(n, NPAGES - 51);
	/* a fault on a page that is no longer lazy gets a zero page, or finds it present */
	assert_int_equal(proc_place_fault(x->p, A(x, 50), 0, 0, NULL), 0);
	assert_int_equal(x->st.exists, 1);
}

static void test_fault_moved(void **state)
{
	struct fx *x = *state;

	/* the reply was read for another image address: ask again (1), nothing placed */
	assert_int_equal(proc_place_fault(x->p, A(x, 10), IMG + 11 * pg, 1, x->buf + 11 * pg), 1);
	assert_int_equal(x->st.pages_copied, 0);
	assert_int_equal(proc_remaining(x->p), NPAGES);
}

struct madv {
	struct fx *x;
	uint64_t page, n;
	int ret;
};

static void *dontneed(void *arg)
{
	struct madv *m = arg;

	m->ret = madvise(m->x->mem + m->page * pg, m->n * pg, MADV_DONTNEED);
	return NULL;
}

static void test_remove(void **state)
{
	struct fx *x = *state;
	struct madv m = { .x = x, .page = 8, .n = 4 };
	struct proc *ch[PROC_MAX_MSGS];
	struct lp_err e;
	uint64_t stop, f[4];
	pthread_t t;
	int nch, more, n = 0, i;

	/* MADV_DONTNEED waits until its REMOVE event is read */
	assert_int_equal(pthread_create(&t, NULL, dontneed, &m), 0);
	for (i = 0; i < 20000; i++) {
		n = proc_read(x->p, f, 4, &more, ch, &nch, &e);
		if (proc_remaining(x->p) < NPAGES)
			break;
		usleep(100);
	}
	pthread_join(t, NULL);
	assert_int_equal(n, 0);
	assert_int_equal(m.ret, 0);
	/* the dropped pages are not placed: the process reads zeros there */
	assert_int_equal(proc_remaining(x->p), NPAGES - 4);
	assert_int_equal(proc_place_section(x->p, A(x, 6), IMG + 6 * pg, 8, 8, x->buf + 6 * pg, &stop), 0);
	assert_int_equal(x->st.pages_copied, 4);
	assert_int_equal(byte_at(x, 7), 8);
	assert_int_equal(byte_at(x, 12), 13);
	proc_unpick(x->p, 0, 0);
}

struct remap {
	struct fx *x;
	void *to;
	int unmap_ret;
};

static void *do_remap(void *arg)
{
	struct remap *r = arg;

	/* pages 0..7 move to a new place */
	r->to = mremap(r->x->mem, 8 * pg, 8 * pg, MREMAP_MAYMOVE | MREMAP_FIXED, r->to);
	return NULL;
}

static void *do_unmap(void *arg)
{
	struct remap *r = arg;

	r->unmap_ret = munmap(r->to, 8 * pg);
	return NULL;
}

/* Reads events (applying them) while thread T runs, until it has ended. */
static void events_while(struct fx *x, pthread_t t)
{
	struct proc *ch[PROC_MAX_MSGS];
	struct lp_err e;
	uint64_t f[4];
	int nch, more, i;

	for (i = 0; i < 20000 && pthread_tryjoin_np(t, NULL) == EBUSY; i++) {
		assert_true(proc_read(x->p, f, 4, &more, ch, &nch, &e) >= 0);
		usleep(100);
	}
	assert_true(i < 20000);
	assert_true(proc_read(x->p, f, 4, &more, ch, &nch, &e) >= 0);
}

static void test_remap(void **state)
{
	struct fx *x = *state;
	uint8_t *hole = mmap(NULL, 8 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct remap m = { .x = x, .to = hole };
	uint64_t stop;
	pthread_t t;

	assert_true(hole != MAP_FAILED);
	assert_int_equal(pthread_create(&t, NULL, do_remap, &m), 0);
	events_while(x, t);
	assert_ptr_equal(m.to, hole);
	/* the image's first pages now live at the new place, and go in there */
	assert_int_equal(proc_remaining(x->p), NPAGES);
	assert_int_equal(proc_place_section(x->p, (uint64_t)(uintptr_t)hole, IMG, 8, 8, x->buf, &stop), 0);
	assert_int_equal(x->st.pages_copied, 8);
	assert_int_equal(hole[3 * pg], 4);
	/* pages 8..15 are dropped by an UNMAP (munmap waits until it is read) */
	m.to = x->mem + 8 * pg;
	assert_int_equal(pthread_create(&t, NULL, do_unmap, &m), 0);
	events_while(x, t);
	assert_int_equal(m.unmap_ret, 0);
	assert_int_equal(proc_remaining(x->p), NPAGES - 16);
}

struct forker {
	struct fx *x;
	pid_t pid;
	int status;
};

/* fork() waits until its FORK event is read: not on the thread that reads it */
static void *do_fork(void *arg)
{
	struct forker *k = arg;

	k->pid = fork();
	if (k->pid == 0) {
		/* the child reads page 33: its own uffd must serve it, with the image data */
		_exit(((volatile uint8_t *)k->x->mem)[33 * pg] == 34 ? 0 : 1);
	}
	if (k->pid > 0)
		waitpid(k->pid, &k->status, 0);
	return NULL;
}

static void test_fork(void **state)
{
	struct fx *x = *state;
	struct forker k = { .x = x, .status = -1 };
	struct proc *ch[PROC_MAX_MSGS];
	struct proc_info pi;
	uint64_t addr = 0, img, n;
	struct lp_err e;
	int nch = 0, more;
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, do_fork, &k), 0);
	assert_int_equal(read_fault(x, &addr, ch, &nch), 0);
	assert_int_equal(nch, 1);
	proc_info(ch[0], &pi);
	assert_true(pi.forked);
	assert_int_equal(pi.parent_id, 7);
	assert_int_equal(pi.id, 0);	/* numbered by the fill: the first process it numbered */
	assert_int_equal(pi.remaining, NPAGES);
	assert_int_equal(x->st.forks, 1);
	/* the child's fault on its own uffd */
	for (n = 0; n < 20000; n++) {
		int k = proc_read(ch[0], &addr, 1, &more, ch + 1, &nch, &e);

		assert_true(k >= 0);
		if (k)
			break;
		usleep(100);
	}
	assert_int_equal(addr, A(x, 33));
	assert_true(proc_fault_run(ch[0], addr, 1, &img, &n));
	assert_int_equal(proc_place_fault(ch[0], addr, img, n, x->buf + 33 * pg), 0);
	pthread_join(t, NULL);
	assert_true(k.pid > 0);
	assert_true(WIFEXITED(k.status) && WEXITSTATUS(k.status) == 0);
	/* its uffd reports the end of the process */
	assert_true(proc_finish(ch[0], PROC_GONE, ch + 1, &nch));
	assert_false(proc_live(ch[0]));
	proc_free(ch[0]);
	/* the parent lost nothing */
	assert_int_equal(proc_remaining(x->p), NPAGES);
}

static void test_pick(void **state)
{
	struct fx *x = *state;
	uint64_t a1, a2, a3, img, n1, n2, n3;
	bool none;

	assert_true(proc_pick(x->p, 16, &a1, &img, &n1, &none));
	assert_int_equal(a1, A(x, 0));
	assert_int_equal(n1, 16);
	assert_int_equal(img, IMG);
	/* the next pick does not overlap the first, in flight */
	assert_true(proc_pick(x->p, 16, &a2, &img, &n2, &none));
	assert_int_equal(a2, A(x, 16));
	/* a fault's run is in flight too, and its end is where the next pick goes */
	assert_true(proc_fault_run(x->p, A(x, 40), 1, &img, &n3));
	assert_true(proc_pick(x->p, 64, &a3, &img, &n3, &none));
	assert_int_equal(a3, A(x, 41));
	assert_int_equal(n3, NPAGES - 41);
	proc_unpick(x->p, A(x, 40), 0);
	/* back at the start, runs end where another one in flight begins */
	proc_unpick(x->p, a1, A(x, 0));
	assert_true(proc_pick(x->p, 64, &a1, &img, &n1, &none));
	assert_int_equal(a1, A(x, 0));
	assert_int_equal(n1, 16);
}

static void test_finish(void **state)
{
	struct fx *x = *state;
	struct proc *ch[PROC_MAX_MSGS];
	uint64_t stop;
	int nch;

	/* not done while pages are lazy */
	assert_false(proc_finish(x->p, PROC_DONE, ch, &nch));
	assert_true(proc_live(x->p));
	assert_int_equal(proc_place_section(x->p, A(x, 0), IMG, NPAGES, NPAGES, x->buf, &stop), 0);
	assert_int_equal(proc_remaining(x->p), 0);
	assert_true(proc_finish(x->p, PROC_DONE, ch, &nch));
	assert_int_equal(nch, 0);
	assert_false(proc_live(x->p));
	assert_int_equal(proc_uffd(x->p), -1);
	/* once only; and nothing is placed into a process that has ended */
	assert_false(proc_finish(x->p, PROC_GONE, ch, &nch));
	assert_int_equal(proc_place_section(x->p, A(x, 0), IMG, 4, 4, x->buf, &stop), 0);
	assert_int_equal(x->st.pages_copied, NPAGES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_place_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_place_zero_and_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_moved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finish, setup, teardown),
	};

	pg = (uint64_t)sysconf(_SC_PAGESIZE);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
