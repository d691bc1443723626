/* SPDX-License-Identifier: MIT */
/*
 * lp-kvcheck: loads a memcached with keys whose values it can recompute, and
 * later checks every reply, byte for byte (tests/criu.sh restores memcached
 * lazily with stock CRIU and checks it while it is being filled).
 *
 *   lp-kvcheck load  -p PORT [-a ADDR] -n KEYS -s BYTES [-S SEED]
 *   lp-kvcheck check -p PORT [-a ADDR] -n KEYS -s BYTES [-S SEED] [-r] [-b BATCH]
 *                    [-t SECONDS]
 *
 * Key i is "lpk<i>", its value BYTES printable bytes of a splitmix64 stream
 * keyed by (SEED, i). load sets every key (batches of BATCH, each reply must
 * be STORED). check asks for every key (multi-get of BATCH keys; -r in a
 * seeded random order) and compares every reply: a missing key, a wrong
 * length, a wrong byte, a reply out of order or an error line is a failure
 * naming the key and the offset. Prints one line: keys, seconds, and the
 * reply times (p50/p99/max in ms, per multi-get). -t bounds each reply
 * (default 30 s). Exit 0: all good; 1: a wrong or missing reply; 2: other
 * errors (connection, usage).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "argnum.h"
#include "pagehash.h"

#define MAX_BATCH 1024
#define MAX_VALUE (1u << 20)
#define MAX_LINE 512

struct kv {
	int fd;
	const char *addr;
	int port;
	unsigned long keys;
	unsigned int size, batch;
	uint64_t seed;
	bool random;
	int timeout_ms;
	/* the receive buffer */
	char *buf;
	size_t len, off, cap;
	char *want;	/* one value, recomputed */
};

static void fatal(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("lp-kvcheck: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(code);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void value(const struct kv *kv, unsigned long key, char *out)
{
	static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	uint64_t s = ph_mix(kv->seed ^ ph_mix(key * PH_K3 + 0x6b76)), r = 0;
	unsigned int i;

	for (i = 0; i < kv->size; i++) {
		if (i % 8 == 0) {
			s += PH_K1;
			r = ph_mix(s);
		}
		out[i] = digits[(r & 0xff) % 62];
		r >>= 8;
	}
}

static void send_all(struct kv *kv, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(kv->fd, p, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fatal(2, "%s:%d: send: %s", kv->addr, kv->port, strerror(errno));
		p += k;
		n -= k;
	}
}

/* Makes at least need bytes available at kv->buf + kv->off, waiting at most timeout_ms. */
static void fill(struct kv *kv, size_t need)
{
	if (kv->off && kv->len - kv->off < need) {
		memmove(kv->buf, kv->buf + kv->off, kv->len - kv->off);
		kv->len -= kv->off;
		kv->off = 0;
	}
	if (need > kv->cap)
		fatal(2, "reply larger than %zu bytes", kv->cap);
	while (kv->len - kv->off < need) {
		struct pollfd pfd = { kv->fd, POLLIN, 0 };
		ssize_t k;
		int rc = poll(&pfd, 1, kv->timeout_ms);

		if (rc == 0)
			fatal(2, "%s:%d: no reply in %d ms", kv->addr, kv->port, kv->timeout_ms);
		if (rc < 0 && errno == EINTR)
			continue;
		k = recv(kv->fd, kv->buf + kv->len, kv->cap - kv->len, 0);
		if (k == 0)
			fatal(2, "%s:%d: connection closed", kv->addr, kv->port);
		if (k < 0 && errno != EINTR)
			fatal(2, "%s:%d: recv: %s", kv->addr, kv->port, strerror(errno));
		if (k > 0)
			kv->len += k;
	}
}

/* The next line without its \r\n (into line), or fatal on garbage. */
static void read_line(struct kv *kv, char *line)
{
	size_t n = 1;
	char *e;

	for (;;) {
		fill(kv, n);
		e = memchr(kv->buf + kv->off, '\n', kv->len - kv->off);
		if (e)
			break;
		n = kv->len - kv->off + 1;
		if (n > MAX_LINE)
			fatal(1, "%s:%d: a reply line longer than %d bytes", kv->addr, kv->port, MAX_LINE);
	}
	n = e - (kv->buf + kv->off);
	if (n == 0 || n > MAX_LINE || e[-1] != '\r')
		fatal(1, "%s:%d: a reply line not ending in \\r\\n", kv->addr, kv->port);
	memcpy(line, kv->buf + kv->off, n - 1);
	line[n - 1] = 0;
	kv->off += n + 1;
}

static void connect_kv(struct kv *kv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(kv->port) };
	int one = 1;

	if (inet_pton(AF_INET, kv->addr, &sin.sin_addr) != 1)
		fatal(2, "-a %s: not an IPv4 address", kv->addr);
	kv->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (kv->fd < 0 || connect(kv->fd, (struct sockaddr *)&sin, sizeof(sin)))
		fatal(2, "%s:%d: connect: %s", kv->addr, kv->port, strerror(errno));
	setsockopt(kv->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void load(struct kv *kv)
{
	char hdr[64], line[MAX_LINE + 1];
	unsigned long i, j, n;

	for (i = 0; i < kv->keys; i += n) {
		n = kv->keys - i < kv->batch ? kv->keys - i : kv->batch;
		for (j = i; j < i + n; j++) {
			int h = snprintf(hdr, sizeof(hdr), "set lpk%lu 0 0 %u\r\n", j, kv->size);

			send_all(kv, hdr, h);
			value(kv, j, kv->want);
			send_all(kv, kv->want, kv->size);
			send_all(kv, "\r\n", 2);
		}
		for (j = i; j < i + n; j++) {
			read_line(kv, line);
			if (strcmp(line, "STORED"))
				fatal(1, "set lpk%lu: '%s', not STORED", j, line);
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int check(struct kv *kv)
{
	unsigned long *order, i, j, n, nreq = 0, reqs = (kv->keys + kv->batch - 1) / kv->batch;
	char line[MAX_LINE + 1], *req;
	double t0 = now_s(), *lat;
	uint64_t st = kv->seed ^ 0x5eed;

	order = malloc(kv->keys * sizeof(*order));
	lat = malloc(reqs * sizeof(*lat));
	req = malloc(kv->batch * 24 + 8);
	if (!order || !lat || !req)
		fatal(2, "out of memory");
	for (i = 0; i < kv->keys; i++)
		order[i] = i;
	for (i = kv->keys; kv->random && i > 1; i--) {
		unsigned long k = ph_rand(&st) % i, t = order[i - 1];

		order[i - 1] = order[k];
		order[k] = t;
	}
	for (i = 0; i < kv->keys; i += n) {
		size_t rl = 3;
		double t;

		n = kv->keys - i < kv->batch ? kv->keys - i : kv->batch;
		memcpy(req, "get", 3);
		for (j = i; j < i + n; j++)
			rl += sprintf(req + rl, " lpk%lu", order[j]);
		memcpy(req + rl, "\r\n", 2);
		t = now_s();
		send_all(kv, req, rl + 2);
		for (j = i; j < i + n; j++) {
			char key[32];
			unsigned long k;
			unsigned int flags, bytes, b;
			const char *got;

			read_line(kv, line);
			if (!strcmp(line, "END"))
				fatal(1, "key lpk%lu: missing (END came first)", order[j]);
			if (sscanf(line, "VALUE %31s %u %u", key, &flags, &bytes) != 3)
				fatal(1, "key lpk%lu: '%s' instead of its VALUE line", order[j], line);
			if (sscanf(key, "lpk%lu", &k) != 1 || k != order[j])
				fatal(1, "key lpk%lu: the reply is for '%s'", order[j], key);
			if (bytes != kv->size)
				fatal(1, "key lpk%lu: %u bytes, not %u", k, bytes, kv->size);
			fill(kv, bytes + 2);
			got = kv->buf + kv->off;
			value(kv, k, kv->want);
			if (memcmp(got, kv->want, bytes)) {
				for (b = 0; b < bytes && got[b] == kv->want[b]; b++)
					;
				fatal(1, "key lpk%lu: byte %u is 0x%02x, not 0x%02x%s", k, b, (unsigned char)got[b],
				      (unsigned char)kv->want[b],
				      got[b] == 0 ? " (zeros: a page that was never filled?)" : "");
			}
			if (got[bytes] != '\r' || got[bytes + 1] != '\n')
				fatal(1, "key lpk%lu: no \\r\\n after the value", k);
			kv->off += bytes + 2;
		}
		read_line(kv, line);
		if (strcmp(line, "END"))
			fatal(1, "'%s' where END belongs, after key lpk%lu", line, order[i + n - 1]);
		lat[nreq++] = now_s() - t;
	}
	qsort(lat, nreq, sizeof(*lat), cmp_double);
	printf("checked %lu keys of %u bytes in %.3f s (%s order); reply p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
	       kv->keys, kv->size, now_s() - t0, kv->random ? "random" : "key", lat[nreq / 2] * 1e3,
	       lat[nreq * 99 / 100] * 1e3, lat[nreq - 1] * 1e3);
	free(order);
	free(lat);
	free(req);
	return 0;
}

static unsigned long num(const char *opt, const char *s, unsigned long max)
{
	unsigned long v;

	if (argnum(s, max, &v))
		fatal(2, "%s: bad number '%s' (at most %lu)", opt, s, max);
	return v;
}

int main(int argc, char **argv)
{
	struct kv kv = { .addr = "127.0.0.1", .batch = 64, .seed = 1, .timeout_ms = 30000 };
	const char *cmd;
	int c;

	if (argc < 2)
		fatal(2, "usage: lp-kvcheck load|check -p PORT -n KEYS -s BYTES [-a ADDR] [-S SEED] [-r] [-b BATCH] [-t SECONDS]");
	cmd = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "p:a:n:s:S:rb:t:")) != -1) {
		switch (c) {
		case 'p':
			kv.port = num("-p", optarg, 65535);
			break;
		case 'a':
			kv.addr = optarg;
			break;
		case 'n':
			kv.keys = num("-n", optarg, 100000000);
			break;
		case 's':
			kv.size = num("-s", optarg, MAX_VALUE);
			break;
		case 'S':
			kv.seed = num("-S", optarg, UINT64_MAX);
			break;
		case 'r':
			kv.random = true;
			break;
		case 'b':
			kv.batch = num("-b", optarg, MAX_BATCH);
			break;
		case 't':
			kv.timeout_ms = num("-t", optarg, 3600) * 1000;
			break;
		default:
			fatal(2, "unknown option");
		}
	}
	if (!kv.port || !kv.keys || !kv.size || !kv.batch)
		fatal(2, "-p, -n, -s and -b must be given and not 0");
	kv.cap = kv.size + 2 + 2 * MAX_LINE;
	if (kv.cap < 1 << 16)
		kv.cap = 1 << 16;
	kv.buf = malloc(kv.cap);
	kv.want = malloc(kv.size);
	if (!kv.buf || !kv.want)
		fatal(2, "out of memory");
	connect_kv(&kv);
	if (!strcmp(cmd, "load"))
		load(&kv);
	else if (!strcmp(cmd, "check"))
		check(&kv);
	else
		fatal(2, "'%s': load or check", cmd);
	close(kv.fd);
	return 0;
}
