/* SPDX-License-Identifier: MIT */
/*
 * lp-memcheck: a workload for stock CRIU. It fills --size MiB of anonymous
 * memory with a pattern that differs on every page, writes its pid to
 * --ready, and waits for SIGUSR1. Then it reads every page, in order, and
 * writes one line to --result:
 *
 *   restored=0|1 pages=N bad=N zero=N
 *
 * restored=1: its start time (/proc/self/stat) is not the one it had
 * before the dump, so this is the restored copy and not the original that
 * CRIU can leave running. bad counts pages that differ from the pattern,
 * zero those of them that read as zeros. Exit 0 only if restored=1 and
 * bad=0. Start it with setsid, stdin from /dev/null and stdout/stderr
 * to /dev/null: CRIU must find nothing it cannot restore.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / sizeof(uint64_t))

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static uint64_t pattern(uint64_t page, uint64_t word)
{
	uint64_t x = (page << 12 | word) + 0x9e3779b97f4a7c15ull;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return (x ^ (x >> 31)) | 1;	/* never zero: a zero page is never right */
}

/* Field 22 of /proc/self/stat: the start time in clock ticks after boot. */
static unsigned long long start_time(void)
{
	char buf[1024], *p;
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
	buf[n] = '\0';
	p = strrchr(buf, ')');		/* the command name may hold spaces */
	for (i = 2; p && i < 22; i++)
		p = strchr(p + 1, ' ');
	if (p)
		v = strtoull(p + 1, NULL, 10);
	return v;
}

static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t n = strlen(text);
	bool ok;

	if (fd < 0)
		return -1;
	ok = write(fd, text, n) == (ssize_t)n;
	return close(fd) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "size", required_argument, NULL, 's' },
		{ "ready", required_argument, NULL, 'r' },
		{ "result", required_argument, NULL, 'o' },
		{ 0 }
	};
	const char *ready = NULL, *result = NULL;
	unsigned long mib = 64;
	uint64_t pages, i, j, bad = 0, zero = 0;
	unsigned long long born;
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t block, wait_mask;
	char line[256];
	uint64_t *mem;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's': mib = strtoul(optarg, NULL, 10); break;
		case 'r': ready = optarg; break;
		case 'o': result = optarg; break;
		default: return 2;
		}
	}
	if (!ready || !result || !mib || mib > (1ul << 20)) {
		fprintf(stderr, "usage: lp-memcheck --ready F --result F [--size MiB]\n");
		return 2;
	}
	pages = (uint64_t)mib << 20 >> 12;
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	for (i = 0; i < pages; i++)
		for (j = 0; j < WORDS; j++)
			mem[i * WORDS + j] = pattern(i, j);
	born = start_time();
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	sigdelset(&wait_mask, SIGUSR1);
	sigaction(SIGUSR1, &sa, NULL);
	snprintf(line, sizeof(line), "%d\n", (int)getpid());
	if (write_text(ready, line))
		return 1;
	while (!go)
		sigsuspend(&wait_mask);

	for (i = 0; i < pages; i++) {
		const uint64_t *p = mem + i * WORDS;
		bool wrong = false, zeros = true;

		for (j = 0; j < WORDS; j++) {
			wrong |= p[j] != pattern(i, j);
			zeros &= p[j] == 0;
		}
		bad += wrong;
		zero += wrong && zeros;
	}
	snprintf(line, sizeof(line), "restored=%d pages=%" PRIu64 " bad=%" PRIu64 " zero=%" PRIu64 "\n",
		 start_time() != born, pages, bad, zero);
	if (write_text(result, line))
		return 1;
	return start_time() != born && !bad ? 0 : 1;
}
