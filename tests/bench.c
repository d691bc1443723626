/* SPDX-License-Identifier: MIT */
/*
 * bench: the in-process parts of tests/bench.sh. The ceilings a paging
 * daemon is measured against, measured on this machine in the same run
 * (UFFDIO_COPY throughput, the fault round trip of a trivial handler, a
 * TCP request/response of a fault's size), and `run`, which runs a command
 * and reports what can only be had from its parent: exact CPU time and
 * peak RSS (wait4), thread count and RSS split while it runs (/proc).
 * Every figure goes out as one key=value line.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ul
#define RTT_REQ 32			/* bytes of a request, about a page-server GET */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int die(const char *what)
{
	fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
	return 1;
}

static int parse_long(const char *opt, const char *arg, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < lo || v > hi) {
		fprintf(stderr, "bench: %s: '%s' is not a number from %ld to %ld\n", opt, arg, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* the q-quantile (nearest rank) of n sorted values, in µs */
static double quantile_us(const uint64_t *v, size_t n, double q)
{
	size_t i = (size_t)(q * (double)n);

	if (!n)
		return 0;
	return (double)v[i >= n ? n - 1 : i] / 1e3;
}

/* v sorted */
static void print_quantiles(const char *prefix, const uint64_t *v, size_t n)
{
	printf("%s_p50_us=%.2f\n", prefix, quantile_us(v, n, 0.5));
	printf("%s_p99_us=%.2f\n", prefix, quantile_us(v, n, 0.99));
	printf("%s_p999_us=%.2f\n", prefix, quantile_us(v, n, 0.999));
}

/* ---- userfaultfd ---- */

static int uffd_open(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

static int uffd_register(int fd, void *addr, size_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	return ioctl(fd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}

/* COPY len bytes, going on after a partial copy */
static int uffd_copy(int fd, void *dst, const void *src, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = (uintptr_t)dst + done,
			.src = (uintptr_t)src + done,
			.len = len - done,
		};

		if (ioctl(fd, UFFDIO_COPY, &c) == 0) {
			done += (size_t)c.copy;
			continue;
		}
		if (c.copy > 0)
			done += (size_t)c.copy;
		else if (errno != EAGAIN)
			return -errno;
	}
	return 0;
}

/* ---- copy-ceiling ---- */

/*
 * One timed fill of a fresh registered region: seconds, or < 0. With
 * file >= 0 each chunk is first pread from it (at the same offset, modulo
 * its size) into src, as a daemon serving from a page-cached image does.
 */
static double copy_once(char *src, size_t size, size_t chunk, int file, off_t fsize, int mapped)
{
	double t0, t1;
	char *dst;
	int fd, r = 0;

	fd = uffd_open();
	if (fd < 0)
		return errno = -fd, -1;
	dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (dst == MAP_FAILED) {
		close(fd);
		return -1;
	}
	r = uffd_register(fd, dst, size);
	t0 = now_s();
	for (size_t off = 0; !r && off < size; off += chunk) {
		size_t len = chunk < size - off ? chunk : size - off;

		if (file >= 0 && mapped) {
			off_t at = (off_t)(off % (size_t)fsize);
			char *m;

			at = at + (off_t)len > fsize ? 0 : at;
			m = mmap(NULL, len, PROT_READ, MAP_SHARED, file, at);
			if (m == MAP_FAILED) {
				r = -errno;
				break;
			}
			/* no MADV_POPULATE_READ: COPY faulting the source in itself is faster (measured) */
			r = uffd_copy(fd, dst + off, m, len);
			munmap(m, len);
		} else if (file >= 0) {
			off_t at = (off_t)(off % (size_t)fsize);
			ssize_t n = pread(file, src, len, at + (off_t)len > fsize ? 0 : at);

			if (n != (ssize_t)len) {
				r = n < 0 ? -errno : -EIO;
				break;
			}
			r = uffd_copy(fd, dst + off, src, len);
		} else {
			r = uffd_copy(fd, dst + off, src + off, len);
		}
	}
	t1 = now_s();
	munmap(dst, size);
	close(fd);
	if (r)
		return errno = -r, -1;
	return t1 - t0;
}

struct copy_part {
	pthread_t th;
	int fd, r;
	char *dst;
	const char *src;
	size_t len, chunk;
};

static void *copy_part_main(void *arg)
{
	struct copy_part *c = arg;

	for (size_t off = 0; !c->r && off < c->len; off += c->chunk)
		c->r = uffd_copy(c->fd, c->dst + off, c->src + off,
				 c->chunk < c->len - off ? c->chunk : c->len - off);
	return NULL;
}

/* As copy_once without a file, with N threads each filling a slice: seconds, or < 0 */
static double copy_all(char *src, size_t size, size_t chunk, int n)
{
	struct copy_part *c = calloc((size_t)n, sizeof(*c));
	size_t slice = size / (size_t)n / chunk * chunk;
	double t0, t1;
	char *dst;
	int fd, r, i;

	if (!c || slice == 0)
		return free(c), errno = EINVAL, -1;
	fd = uffd_open();
	if (fd < 0)
		return free(c), errno = -fd, -1;
	dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (dst == MAP_FAILED) {
		close(fd);
		free(c);
		return -1;
	}
	r = uffd_register(fd, dst, size);
	t0 = now_s();
	for (i = 0; !r && i < n; i++) {
		c[i] = (struct copy_part){ .fd = fd, .dst = dst + (size_t)i * slice, .src = src + (size_t)i * slice,
					   .len = i == n - 1 ? size - (size_t)i * slice : slice, .chunk = chunk };
		if (pthread_create(&c[i].th, NULL, copy_part_main, &c[i])) {
			r = -EAGAIN;
			break;
		}
	}
	n = i;
	for (i = 0; i < n; i++) {
		pthread_join(c[i].th, NULL);
		if (c[i].r && !r)
			r = c[i].r;
	}
	t1 = now_s();
	munmap(dst, size);
	close(fd);
	free(c);
	if (r)
		return errno = -r, -1;
	return t1 - t0;
}

static int copy_main(int argc, char **argv)
{
	static const struct option lo[] = { { "size", required_argument, NULL, 's' },
					    { "rounds", required_argument, NULL, 'r' },
					    { "file", required_argument, NULL, 'f' },
					    { 0 } };
	static const struct {
		const char *name;
		size_t bytes;
	} chunks[] = { { "64k", 64ul << 10 }, { "2m", 2ul << 20 } };
	long mib = 1024, rounds = 3;
	const char *file = NULL;
	uint64_t *w;
	size_t size;
	char *src;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 's' && !parse_long("--size", optarg, 2, 1 << 20, &mib))
			continue;
		if (c == 'r' && !parse_long("--rounds", optarg, 1, 100, &rounds))
			continue;
		if (c == 'f') {
			file = optarg;
			continue;
		}
		fprintf(stderr, "usage: bench copy-ceiling [--size MIB] [--rounds N] [--file F]\n");
		return 2;
	}
	size = (size_t)mib << 20;
	src = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return die("mmap source");
	/* non-zero and not constant, every page present before timing */
	w = (uint64_t *)src;
	for (size_t i = 0; i < size / sizeof(*w); i++)
		w[i] = (i + 1) * 0x9e3779b97f4a7c15ull;
	printf("copy_size_mib=%ld\n", mib);
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		double best = 0;

		for (long r = 0; r < rounds; r++) {
			double s = copy_once(src, size, chunks[k].bytes, -1, 0, 0);

			if (s < 0)
				return die("UFFDIO_COPY into a fresh region");
			if (!best || s < best)
				best = s;
		}
		printf("copy_%s_gbps=%.3f\n", chunks[k].name, (double)size / best / 1e9);
	}
	{
		/* every core at once, 2 MiB chunks: what the machine can do, not one thread */
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		double best = 0;

		for (long r = 0; ncpu > 1 && r < rounds; r++) {
			double s = copy_all(src, size, chunks[1].bytes, (int)ncpu);

			if (s < 0)
				return die("UFFDIO_COPY from every core");
			if (!best || s < best)
				best = s;
		}
		if (best)
			printf("copy_2m_all_gbps=%.3f\ncopy_threads=%ld\n", (double)size / best / 1e9, ncpu);
	}
	if (file) {
		/* pread of a page-cached file, then COPY, 2 MiB at a time: one thread serving an image */
		int fd = open(file, O_RDONLY | O_CLOEXEC);
		off_t fsize = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
		if (fd < 0)
			return die(file);
		if (fsize < (off_t)chunks[1].bytes)
			return errno = EINVAL, die(file);
		for (int mapped = 0; mapped < 2; mapped++) {
			double best = 0;

			for (long r = 0; r < rounds; r++) {
				double s = copy_once(src, size, chunks[1].bytes, fd, fsize, mapped);

				if (s < 0)
					return die(mapped ? "mmap + UFFDIO_COPY" : "pread + UFFDIO_COPY");
				if (!best || s < best)
					best = s;
			}
			printf("%s_copy_2m_gbps=%.3f\n", mapped ? "mmap" : "pread", (double)size / best / 1e9);
		}
		close(fd);
	}
	munmap(src, size);
	return 0;
}

/* ---- fault-ceiling ---- */

struct handler {
	int uffd, stop_rd;
	uint64_t *lat;			/* read to COPY done, ns, per fault */
	size_t n, cap;
	int err;
};

static char fault_page[PAGE] __attribute__((aligned(PAGE)));

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct pollfd pfd[2] = { { .fd = h->uffd, .events = POLLIN }, { .fd = h->stop_rd, .events = POLLIN } };

	for (;;) {
		struct uffd_msg m;
		uint64_t t0;
		ssize_t n;
		int r;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			h->err = errno;
			return NULL;
		}
		if (pfd[1].revents)
			return NULL;
		n = read(h->uffd, &m, sizeof(m));
		if (n < 0 && errno == EAGAIN)
			continue;
		t0 = now_ns();
		if (n != sizeof(m)) {
			h->err = n < 0 ? errno : EIO;
			return NULL;
		}
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		r = uffd_copy(h->uffd, (void *)(uintptr_t)(m.arg.pagefault.address & ~(PAGE - 1)), fault_page,
			      PAGE);
		if (r && r != -EEXIST) {
			h->err = -r;
			return NULL;
		}
		if (h->n < h->cap)
			h->lat[h->n++] = now_ns() - t0;
	}
}

/* one round: touch count fresh pages; touch[] and h->lat[] filled, sorted */
static int fault_round(long count, uint64_t *touch, struct handler *h)
{
	size_t len = (size_t)count * PAGE;
	int stop[2], r = 0;
	char *region;
	pthread_t th;

	h->n = 0;
	h->err = 0;
	region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (region == MAP_FAILED)
		return -errno;
	h->uffd = uffd_open();
	if (h->uffd < 0) {
		r = h->uffd;
		goto out_unmap;
	}
	r = uffd_register(h->uffd, region, len);
	if (r)
		goto out_close;
	if (pipe2(stop, O_CLOEXEC)) {
		r = -errno;
		goto out_close;
	}
	h->stop_rd = stop[0];
	r = -pthread_create(&th, NULL, handler_main, h);
	if (r)
		goto out_pipe;
	for (long i = 0; i < count; i++) {
		volatile char *p = region + (size_t)i * PAGE;
		uint64_t t0 = now_ns();

		(void)*p;
		touch[i] = now_ns() - t0;
	}
	close(stop[1]);
	stop[1] = -1;
	pthread_join(th, NULL);
	r = -h->err;
	qsort(touch, (size_t)count, sizeof(*touch), cmp_u64);
	qsort(h->lat, h->n, sizeof(*h->lat), cmp_u64);
out_pipe:
	if (stop[1] >= 0)
		close(stop[1]);
	close(stop[0]);
out_close:
	close(h->uffd);
out_unmap:
	munmap(region, len);
	return r;
}

static int fault_main(int argc, char **argv)
{
	static const struct option lo[] = { { "count", required_argument, NULL, 'n' },
					    { "rounds", required_argument, NULL, 'r' },
					    { 0 } };
	uint64_t *touch, *best_touch, *best_lat;
	struct handler h = { 0 };
	long count = 20000, rounds = 3;
	size_t best_n = 0;
	double best = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'n' && !parse_long("--count", optarg, 100, 10000000, &count))
			continue;
		if (c == 'r' && !parse_long("--rounds", optarg, 1, 100, &rounds))
			continue;
		fprintf(stderr, "usage: bench fault-ceiling [--count N] [--rounds N]\n");
		return 2;
	}
	memset(fault_page, 0x5a, sizeof(fault_page));
	touch = calloc((size_t)count, sizeof(*touch));
	best_touch = calloc((size_t)count, sizeof(*touch));
	h.lat = calloc((size_t)count, sizeof(*h.lat));
	best_lat = calloc((size_t)count, sizeof(*h.lat));
	h.cap = (size_t)count;
	if (!touch || !best_touch || !h.lat || !best_lat)
		return die("calloc");
	/* the round with the fastest median touch: the least disturbed by the rest of the machine */
	for (long k = 0; k < rounds; k++) {
		r = fault_round(count, touch, &h);
		if (r)
			return errno = -r, die("fault round");
		if (!best || quantile_us(touch, (size_t)count, 0.5) < best) {
			best = quantile_us(touch, (size_t)count, 0.5);
			memcpy(best_touch, touch, (size_t)count * sizeof(*touch));
			memcpy(best_lat, h.lat, h.n * sizeof(*h.lat));
			best_n = h.n;
		}
	}
	printf("fault_count=%ld\n", count);
	/* what the faulting thread sees: trap, handler wake-up, read, COPY, wake */
	print_quantiles("fault_touch", best_touch, (size_t)count);
	/* what the handler sees, from read() returning to COPY done: what lazy-pagesd's fault_pNN are */
	print_quantiles("fault_handler", best_lat, best_n);
	return 0;
}

/* ---- rtt-ceiling, rtt-server ---- */

static int read_full(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t n = write(fd, (const char *)buf + put, len - put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		put += (size_t)n;
	}
	return 0;
}

/* one client: each 32-byte request asks for (first 8 bytes) that many bytes back */
static void *rtt_conn(void *arg)
{
	static char zeros[1 << 20];
	int fd = (int)(intptr_t)arg;
	uint64_t req[RTT_REQ / 8];

	while (!read_full(fd, req, sizeof(req))) {
		uint64_t left = req[0];

		while (left) {
			size_t n = left < sizeof(zeros) ? (size_t)left : sizeof(zeros);

			if (write_full(fd, zeros, n))
				goto out;
			left -= n;
		}
	}
out:
	close(fd);
	return NULL;
}

static void *rtt_accept(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), one = 1;
		pthread_t th;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pthread_create(&th, NULL, rtt_conn, (void *)(intptr_t)fd)) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
}

/* listens on 127.0.0.1, an ephemeral port; returns the fd, *port set */
static int rtt_listen(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16) ||
	    getsockname(fd, (struct sockaddr *)&a, &al)) {
		int r = -errno;

		close(fd);
		return r;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static int rtt_server_main(int argc, char **argv)
{
	static const struct option lo[] = { { "port-file", required_argument, NULL, 'f' }, { 0 } };
	const char *pf = NULL;
	char buf[32];
	int lfd, port, fd, n, c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'f') {
			pf = optarg;
			continue;
		}
		fprintf(stderr, "usage: bench rtt-server --port-file F\n");
		return 2;
	}
	if (!pf) {
		fprintf(stderr, "usage: bench rtt-server --port-file F\n");
		return 2;
	}
	lfd = rtt_listen(&port);
	if (lfd < 0)
		return errno = -lfd, die("listen");
	/* a FIFO is written in place: the reader waits on it */
	fd = open(pf, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return die(pf);
	n = snprintf(buf, sizeof(buf), "%d\n", port);
	if (write_full(fd, buf, (size_t)n))
		return die(pf);
	close(fd);
	rtt_accept((void *)(intptr_t)lfd);
	return die("accept");
}

static int rtt_main(int argc, char **argv)
{
	static const struct option lo[] = { { "count", required_argument, NULL, 'n' },
					    { "reply-kib", required_argument, NULL, 'k' },
					    { "bulk-mib", required_argument, NULL, 'b' },
					    { "port", required_argument, NULL, 'p' },
					    { 0 } };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	long count = 2000, kib = 64, bulk = 256, port = 0;
	uint64_t req[RTT_REQ / 8] = { 0 }, *lat;
	char *buf;
	double t0;
	int fd, one = 1, c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'n' && !parse_long("--count", optarg, 1, 1000000, &count))
			continue;
		if (c == 'k' && !parse_long("--reply-kib", optarg, 1, 1 << 20, &kib))
			continue;
		if (c == 'b' && !parse_long("--bulk-mib", optarg, 0, 1 << 20, &bulk))
			continue;
		if (c == 'p' && !parse_long("--port", optarg, 1, 65535, &port))
			continue;
		fprintf(stderr, "usage: bench rtt-ceiling [--count N] [--reply-kib K] [--bulk-mib M] [--port P]\n");
		return 2;
	}
	if (!port) {
		/* no server given: one in this process, on loopback */
		int p, lfd = rtt_listen(&p);
		pthread_t th;

		if (lfd < 0)
			return errno = -lfd, die("listen");
		if ((errno = pthread_create(&th, NULL, rtt_accept, (void *)(intptr_t)lfd)))
			return die("pthread_create");
		pthread_detach(th);
		port = p;
	}
	a.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
		return die("connect");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	buf = malloc((size_t)kib << 10 > (1u << 20) ? (size_t)kib << 10 : 1u << 20);
	lat = calloc((size_t)count, sizeof(*lat));
	if (!buf || !lat)
		return die("malloc");
	req[0] = (uint64_t)kib << 10;
	for (long i = 0; i < count; i++) {
		uint64_t s = now_ns();

		if ((errno = -write_full(fd, req, sizeof(req))) || (errno = -read_full(fd, buf, (size_t)kib << 10)))
			return die("request");
		lat[i] = now_ns() - s;
	}
	printf("rtt_reply_kib=%ld\n", kib);
	qsort(lat, (size_t)count, sizeof(*lat), cmp_u64);
	print_quantiles("rtt", lat, (size_t)count);
	if (bulk) {
		uint64_t left = (uint64_t)bulk << 20;

		req[0] = left;
		t0 = now_s();
		if ((errno = -write_full(fd, req, sizeof(req))))
			return die("request");
		while (left) {
			size_t n = left < (1u << 20) ? (size_t)left : 1u << 20;

			if ((errno = -read_full(fd, buf, n)))
				return die("bulk read");
			left -= n;
		}
		printf("tcp_gbps=%.3f\n", (double)((uint64_t)bulk << 20) / (now_s() - t0) / 1e9);
	}
	close(fd);
	return 0;
}

/* ---- run ---- */

struct sample {
	long hwm, rss_anon, rss_file, threads;	/* KiB, KiB, KiB, count */
	double cpu;				/* utime + stime, s */
};

static void proc_sample(pid_t pid, struct sample *max)
{
	char path[64], line[256];
	unsigned long ut, st;
	FILE *f;
	long v;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmHWM: %ld", &v) == 1 && v > max->hwm)
			max->hwm = v;
		else if (sscanf(line, "RssAnon: %ld", &v) == 1 && v > max->rss_anon)
			max->rss_anon = v;
		else if (sscanf(line, "RssFile: %ld", &v) == 1 && v > max->rss_file)
			max->rss_file = v;
		else if (sscanf(line, "Threads: %ld", &v) == 1 && v > max->threads)
			max->threads = v;
	}
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	/* the name may hold spaces and parentheses: fields count from the last ')' */
	if (fgets(line, sizeof(line), f)) {
		char *p = strrchr(line, ')');

		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
			max->cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	}
	fclose(f);
}

static volatile sig_atomic_t run_signal;

static void run_on_signal(int sig)
{
	run_signal = sig;
}

static int run_main(int argc, char **argv)
{
	static const struct option lo[] = { { "stats", required_argument, NULL, 's' },
					    { "timeout", required_argument, NULL, 't' },
					    { "sample-ms", required_argument, NULL, 'm' },
					    { 0 } };
	struct sigaction sa = { .sa_handler = run_on_signal };
	struct sample mx = { 0 };
	const char *stats = NULL;
	long timeout = 0, ms = 20;
	bool timed_out = false;
	struct rusage ru;
	double t0, t1;
	int pidfd, st, c;
	pid_t pid;
	FILE *f;

	while ((c = getopt_long(argc, argv, "+", lo, NULL)) != -1) {
		if (c == 's') {
			stats = optarg;
			continue;
		}
		if (c == 't' && !parse_long("--timeout", optarg, 0, 86400, &timeout))
			continue;
		if (c == 'm' && !parse_long("--sample-ms", optarg, 1, 10000, &ms))
			continue;
		goto usage;
	}
	if (!stats || optind >= argc)
		goto usage;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	t0 = now_s();
	pid = fork();
	if (pid < 0)
		return die("fork");
	if (pid == 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		execvp(argv[optind], argv + optind);
		fprintf(stderr, "bench run: %s: %s\n", argv[optind], strerror(errno));
		_exit(127);
	}
	/* the child's fds are its own: a reader waiting for EOF on one (a status fd) must not wait on us */
	syscall(SYS_close_range, 3u, ~0u, 0u);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return die("pidfd_open");
	for (;;) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
		int r;

		proc_sample(pid, &mx);
		r = poll(&pfd, 1, (int)ms);
		if (run_signal) {
			kill(pid, run_signal);
			run_signal = 0;
		}
		if (r > 0)
			break;
		if (timeout && now_s() - t0 > (double)timeout && !timed_out) {
			timed_out = true;
			kill(pid, SIGKILL);
		}
	}
	while (wait4(pid, &st, 0, &ru) < 0)
		if (errno != EINTR)
			return die("wait4");
	t1 = now_s();
	f = fopen(stats, "we");
	if (!f)
		return die(stats);
	fprintf(f, "start_mono=%.6f\nend_mono=%.6f\nwall_s=%.6f\n", t0, t1, t1 - t0);
	fprintf(f, "utime_s=%.3f\nstime_s=%.3f\ncpu_s=%.3f\n", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
		(double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
		(double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	fprintf(f, "maxrss_kib=%ld\nhwm_kib=%ld\nrss_anon_max_kib=%ld\nrss_file_max_kib=%ld\nthreads_max=%ld\n",
		ru.ru_maxrss, mx.hwm, mx.rss_anon, mx.rss_file, mx.threads);
	fprintf(f, "cpu_sampled_s=%.2f\n", mx.cpu);
	fprintf(f, "exit=%d\ntimed_out=%d\n",
		WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), timed_out);
	fclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
usage:
	fprintf(stderr, "usage: bench run --stats FILE [--timeout S] [--sample-ms MS] -- CMD [ARG...]\n");
	return 2;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} cmds[] = {
	{ "copy-ceiling", copy_main, "[--size MIB] [--rounds N] [--file F]: UFFDIO_COPY GB/s in 64 KiB and 2 MiB chunks (and after pread of F)" },
	{ "fault-ceiling", fault_main, "[--count N] [--rounds N]: fault round trip of a trivial in-process handler" },
	{ "rtt-ceiling", rtt_main,
	  "[--count N] [--reply-kib K] [--bulk-mib M] [--port P]: TCP request/response and bulk, loopback" },
	{ "rtt-server", rtt_server_main, "--port-file F: the server rtt-ceiling --port talks to" },
	{ "run", run_main, "--stats F [--timeout S] [--sample-ms MS] -- CMD...: CPU, peak RSS, threads of CMD" },
};

int main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			if (!strcmp(argv[1], cmds[i].name)) {
				setvbuf(stdout, NULL, _IOLBF, 0);
				return cmds[i].fn(argc - 1, argv + 1);
			}
		}
	}
	fprintf(stderr, "usage: bench COMMAND [ARGS]\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(stderr, "  bench %s %s\n", cmds[i].name, cmds[i].help);
	return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
}
