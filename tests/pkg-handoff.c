/* SPDX-License-Identifier: MIT */
/*
 * pkg-handoff: a program outside the project, as a VMM author would write
 * one: built with `pkg-config --cflags --libs lazypages` against the
 * installed liblazypages-dev, it hands an anonymous region backed by a
 * memory file to lazy-pagesd --service with lp_handoff() and checks every
 * page it reads against the file (in a scattered order; one page in five is a hole of zeros).
 * With --pause it stops half way, the rest of the pages still missing,
 * says so on stdout and goes on when a byte arrives on stdin.
 * Exit 0 only if every page matched.
 *
 *   pkg-handoff [--pause] FILE MIB
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lazypages.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define MAX_REPORT 8

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* Page I of the file: words unique to (SEED, I, word), or a hole of zeros for one page in five. */
static int write_file(int fd, uint64_t pages, uint64_t seed)
{
	uint64_t w[PAGE / 8], i, j;

	if (ftruncate(fd, (off_t)(pages * PAGE)) < 0)
		return -errno;
	for (i = 0; i < pages; i++) {
		if (i % 5 == 3)
			continue;
		for (j = 0; j < PAGE / 8; j++)
			w[j] = mix(seed ^ (i << 9 | j));
		if (pwrite(fd, w, PAGE, (off_t)(i * PAGE)) != PAGE)
			return errno ? -errno : -EIO;
	}
	return 0;
}

static int register_uffd(void *mem, uint64_t len)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (uffd < 0)
		return -1;
	reg.range.start = (uintptr_t)mem;
	reg.range.len = len;
	if (ioctl(uffd, UFFDIO_API, &api) < 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		close(uffd);
		return -1;
	}
	return uffd;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

int main(int argc, char **argv)
{
	static uint8_t want[PAGE];
	struct lp_conn *c = NULL;
	struct lp_region r;
	uint64_t pages, stride, k, p, bad = 0, seed;
	int pause_half = 0, fd, uffd, ret;
	uint32_t id;
	uint8_t *mem;
	char go;

	if (argc > 1 && !strcmp(argv[1], "--pause")) {
		pause_half = 1;
		argv++;
		argc--;
	}
	if (argc != 3 || atoi(argv[2]) < 1) {
		fprintf(stderr, "usage: pkg-handoff [--pause] FILE MIB\n");
		return 2;
	}
	pages = (uint64_t)atoi(argv[2]) * (1024 * 1024 / PAGE);
	seed = mix((uint64_t)getpid() << 32 | (uint64_t)time(NULL));
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write_file(fd, pages, seed) < 0) {
		fprintf(stderr, "pkg-handoff: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uffd = mem == MAP_FAILED ? -1 : register_uffd(mem, pages * PAGE);
	if (uffd < 0) {
		fprintf(stderr, "pkg-handoff: userfaultfd: %s\n", strerror(errno));
		return 1;
	}

	ret = lp_connect(NULL, &c);
	if (ret) {
		fprintf(stderr, "pkg-handoff: %s: %s\n", lp_control_path(NULL), strerror(-ret));
		return 1;
	}
	r = (struct lp_region){ .addr = (uintptr_t)mem, .len = pages * PAGE, .offset = 0 };
	ret = lp_handoff(c, uffd, fd, &r, 1, getpid(), "pkg-handoff", &id);
	if (ret) {
		fprintf(stderr, "pkg-handoff: hand-off: %s\n", lp_error(c));
		return 1;
	}
	lp_close(c);
	close(uffd);
	printf("session %" PRIu32 ": %" PRIu64 " pages handed off\n", id, pages);
	fflush(stdout);

	/* every page once, in an order no prefetcher guesses */
	for (stride = pages / 3 + 1; gcd(stride, pages) != 1; stride++)
		;
	for (k = 0; k < pages; k++) {
		if (pause_half && k == pages / 2) {
			printf("paused: session %" PRIu32 ", %" PRIu64 " of %" PRIu64 " pages read\n", id, k, pages);
			fflush(stdout);
			if (read(STDIN_FILENO, &go, 1) != 1) {
				fprintf(stderr, "pkg-handoff: stdin closed while paused\n");
				return 1;
			}
		}
		p = (k * stride + 7) % pages;
		if (pread(fd, want, PAGE, (off_t)(p * PAGE)) != PAGE) {
			fprintf(stderr, "pkg-handoff: reading page %" PRIu64 " of %s: %s\n", p, argv[1], strerror(errno));
			return 1;
		}
		/* the first touch faults: the daemon fills the page from the file */
		if (memcmp(mem + p * PAGE, want, PAGE) && bad++ < MAX_REPORT)
			fprintf(stderr, "pkg-handoff: page %" PRIu64 " (0x%" PRIxPTR ") differs from the file\n", p,
				(uintptr_t)(mem + p * PAGE));
	}
	printf("checked %" PRIu64 " pages: %" PRIu64 " wrong\n", pages, bad);
	return bad ? 1 : 0;
}
