/* SPDX-License-Identifier: MIT */
/* lp-appload: loads a real key-value server with known data, then times and checks every reply of a closed-loop client. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pagehash.h"

/*
 * lp-appload load --proto redis|memcached --port P --keys N --value BYTES [--seed S]
 *   Stores keys "k:0".."k:N-1", each with a value of BYTES bytes derived
 *   from (seed, key): pipelined SETs, every answer checked.
 *
 * lp-appload run --proto ... --port P --keys N --value BYTES --seconds D
 *     [--conns C] [--hot PERCENT --hot-share PERCENT [--hot-spread]] [--epoch FILE]
 *     [--steady-p99 US] [--windows FILE] [--ready FILE]
 *   C closed-loop connections (a thread each) send GETs of random keys for
 *   D seconds and check every reply byte for byte against the value the key
 *   was stored with. Before the server listens (it is being restored),
 *   connects are retried every 200 us. --hot: PERCENT of the keys get
 *   --hot-share of the requests (a skewed workload): the first keys stored,
 *   or with --hot-spread blocks of 64 keys spread evenly over all of them
 *   (so over the server's memory: a hot set of about PERCENT of it).
 *   --proto line --expect LINE: a server of one answer (tests/bench-pyrt.py):
 *   each request is the line "GET k:N", each reply must be LINE. Time is counted from
 *   the nanoseconds (CLOCK_REALTIME) in --epoch FILE, read at the first reply
 *   (the benchmark writes it just before `criu restore`); without it, from
 *   the client's start. Per 100 ms window it records replies, p50, p99 and
 *   max latency; prints one summary line:
 *     appload: first_reply_ms=.. window_s=.. p50_us=.. p99_us=.. max_us=..
 *              replies=.. wrong=.. steady_p99_us=.. late_p99_us=.. settle_s=..
 *   p50/p99/max are over the first 10 s after the first reply;
 *   window_s, the degradation window, runs from the first reply to the end
 *   of the last window whose p99 was over 2x --steady-p99 (or that had no
 *   reply) before the p99 stayed under it; settle_s, the same window for a
 *   machine with neighbours (whose spikes keep window_s open to the end),
 *   runs to the start of the first full second in which every window's p99
 *   was under 2x --steady-p99 (-1 if none); late_p99_us is the p99 over the
 *   last 2 s. --ready FILE is created once the threads are running.
 *   SIGTERM or SIGINT ends the run early (as if --seconds had passed).
 *   Exit 0 if every reply was right, 1 if any was wrong, 2 on usage errors
 *   or if no reply came at all.
 */

#define WIN_NS 100000000ull
#define SETTLE_WINDOWS 10		/* settle_s: a second in a row under 2x the steady p99 */
#define HOT_BLOCK 64			/* --hot-spread: hot keys come in blocks of this many */
#define MAX_WINDOWS 6000		/* 10 minutes */
#define HSUB 8
#define HBUCKETS (40 * HSUB)

enum proto { P_REDIS, P_MEMCACHED, P_LINE };

struct cfg {
	enum proto proto;
	const char *host, *port;
	uint64_t keys, value, seed;
	double seconds;
	int conns;
	double hot, hot_share;
	bool hot_spread;
	const char *epoch_file, *windows_file, *ready_file;
	const char *expect;		/* --proto line: the one right answer */
	double steady_p99_us;
};

static atomic_int stop_all;

static struct cfg cfg = { .host = "127.0.0.1", .keys = 100000, .value = 1000, .seed = 1, .seconds = 10,
			  .conns = 1 };

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The stored value of KEY: printable bytes of a splitmix64 stream keyed by (seed, key). */
static void value_of(uint64_t key, char *buf, uint64_t len)
{
	uint64_t x = ph_mix(cfg.seed * PH_K1 + key + 1), i, w = 0;

	for (i = 0; i < len; i++) {
		if (i % 8 == 0) {
			x += PH_K1;
			w = ph_mix(x);
		}
		buf[i] = (char)('a' + (w & 0xff) % 26);
		w >>= 8;
	}
}

static int connect_to(int retry_ms_total)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai, *a;
	uint64_t t0 = now_ns(CLOCK_MONOTONIC);
	int fd, one = 1, ret;

	ret = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
	if (ret) {
		fprintf(stderr, "lp-appload: %s:%s: %s\n", cfg.host, cfg.port, gai_strerror(ret));
		return -1;
	}
	for (;;) {
		for (a = ai; a; a = a->ai_next) {
			fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
			if (fd < 0)
				continue;
			/* connect (and send) give up after 500 ms: a listener nobody accepts on (a restore that
			 * failed half way) must not hold the client past a stop */
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval){ .tv_usec = 500000 },
				   sizeof(struct timeval));
			if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				freeaddrinfo(ai);
				return fd;
			}
			close(fd);
		}
		if ((retry_ms_total >= 0 && now_ns(CLOCK_MONOTONIC) - t0 > (uint64_t)retry_ms_total * 1000000ull) ||
		    atomic_load(&stop_all))
			break;
		usleep(200);
	}
	freeaddrinfo(ai);
	fprintf(stderr, "lp-appload: cannot connect to %s:%s\n", cfg.host, cfg.port);
	return -1;
}

static int send_all(int fd, const char *b, size_t n)
{
	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* A buffered reader over a socket. */
struct rd {
	int fd;
	char *b;
	size_t cap, lo, hi;
};

static int rd_fill(struct rd *r)
{
	ssize_t k;

	if (r->lo == r->hi)
		r->lo = r->hi = 0;
	if (r->hi == r->cap) {
		memmove(r->b, r->b + r->lo, r->hi - r->lo);
		r->hi -= r->lo;
		r->lo = 0;
	}
	/* a server that never answers (a frozen original, a restore gone wrong) must not outlive a stop */
	for (;;) {
		struct pollfd pf = { .fd = r->fd, .events = POLLIN };

		if (atomic_load(&stop_all))
			return -1;
		if (poll(&pf, 1, 200) == 0)
			continue;
		k = recv(r->fd, r->b + r->hi, r->cap - r->hi, MSG_DONTWAIT);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;
	}
	if (k <= 0)
		return -1;
	r->hi += (size_t)k;
	return 0;
}

/* A line ending in \r\n (returned without it, NUL-terminated in place). */
static char *rd_line(struct rd *r)
{
	char *nl;

	for (;;) {
		nl = r->hi > r->lo ? memchr(r->b + r->lo, '\n', r->hi - r->lo) : NULL;
		if (nl) {
			char *l = r->b + r->lo;

			r->lo = (size_t)(nl - r->b) + 1;
			if (nl > l && nl[-1] == '\r')
				nl[-1] = 0;
			*nl = 0;
			return l;
		}
		if (r->hi - r->lo == r->cap || rd_fill(r))
			return NULL;
	}
}

/* N bytes (then \r\n) into OUT. */
static int rd_bytes(struct rd *r, char *out, size_t n)
{
	size_t k;

	while (n) {
		if (r->lo == r->hi && rd_fill(r))
			return -1;
		k = r->hi - r->lo < n ? r->hi - r->lo : n;
		memcpy(out, r->b + r->lo, k);
		r->lo += k;
		out += k;
		n -= k;
	}
	return 0;
}

static int rd_crlf(struct rd *r)
{
	char c[2];

	return rd_bytes(r, c, 2) || c[0] != '\r' || c[1] != '\n' ? -1 : 0;
}

static size_t put_set(char *b, uint64_t key, const char *val)
{
	char k[32];
	int kl = snprintf(k, sizeof(k), "k:%llu", (unsigned long long)key);
	size_t n;

	if (cfg.proto == P_REDIS)
		n = (size_t)sprintf(b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%llu\r\n", kl, k,
				    (unsigned long long)cfg.value);
	else
		n = (size_t)sprintf(b, "set %s 0 0 %llu\r\n", k, (unsigned long long)cfg.value);
	memcpy(b + n, val, cfg.value);
	n += cfg.value;
	memcpy(b + n, "\r\n", 2);
	return n + 2;
}

static int load(void)
{
	size_t batch = 256, per = cfg.value + 96, n;
	char *out = malloc(batch * per), *val = malloc(cfg.value);
	struct rd r = { .cap = 1 << 20 };
	uint64_t k = 0, i, t0 = now_ns(CLOCK_MONOTONIC);
	char *l;
	int ret = 1;

	r.b = malloc(r.cap);
	r.fd = connect_to(5000);
	if (!out || !val || !r.b || r.fd < 0)
		goto out;
	while (k < cfg.keys) {
		uint64_t m = cfg.keys - k < batch ? cfg.keys - k : batch;

		for (i = 0, n = 0; i < m; i++) {
			value_of(k + i, val, cfg.value);
			n += put_set(out + n, k + i, val);
		}
		if (send_all(r.fd, out, n))
			goto io;
		for (i = 0; i < m; i++) {
			l = rd_line(&r);
			if (!l)
				goto io;
			if (strcmp(l, cfg.proto == P_REDIS ? "+OK" : "STORED")) {
				fprintf(stderr, "lp-appload: storing k:%llu: the server said \"%s\"\n",
					(unsigned long long)(k + i), l);
				goto out;
			}
		}
		k += m;
	}
	printf("appload: stored %llu keys of %llu bytes in %.1f s\n", (unsigned long long)cfg.keys,
	       (unsigned long long)cfg.value, (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9);
	ret = 0;
	goto out;
io:
	fprintf(stderr, "lp-appload: load: connection lost after %llu keys\n", (unsigned long long)k);
out:
	if (r.fd >= 0)
		close(r.fd);
	free(r.b);
	free(out);
	free(val);
	return ret;
}

/* Log-linear latency histogram in microseconds: 8 sub-buckets per power of two. */
static unsigned bucket_of(uint64_t ns)
{
	uint64_t us = ns / 1000;
	unsigned e, m;

	if (us < HSUB)
		return (unsigned)us;
	e = 63u - (unsigned)__builtin_clzll(us);
	m = (unsigned)((us >> (e - 3)) & (HSUB - 1));
	e = (e - 2) * HSUB + m;
	return e < HBUCKETS ? e : HBUCKETS - 1;
}

static double bucket_us(unsigned b)
{
	unsigned e, m;

	if (b < HSUB)
		return b;
	e = b / HSUB + 2;
	m = b % HSUB;
	/* the middle of the bucket */
	return (double)(((uint64_t)HSUB + m) << (e - 3)) + (double)(1ull << (e - 3)) / 2;
}

struct win {
	uint32_t h[HBUCKETS];
	uint64_t n, max_ns;
};

struct worker {
	pthread_t tid;
	unsigned idx;
	struct win *w;			/* MAX_WINDOWS, indexed from the client's start */
	uint64_t replies, wrong, first_ns, errors;
};

static uint64_t t_start_mono, t_start_real;

static uint64_t pick_key(uint64_t *rs)
{
	uint64_t x = ph_rand(rs);

	if (cfg.hot > 0) {
		uint64_t hot = (uint64_t)((double)cfg.keys * cfg.hot / 100.0), h, blocks;

		if (hot < 1)
			hot = 1;
		if (cfg.hot_spread) {
			/* blocks of HOT_BLOCK keys spread evenly over the keys (and so over the server's memory) */
			if ((double)(x % 10000) >= cfg.hot_share * 100.0)
				return ph_rand(rs) % cfg.keys;
			blocks = (hot + HOT_BLOCK - 1) / HOT_BLOCK;
			h = ph_rand(rs) % hot;
			return ((h / HOT_BLOCK) * (cfg.keys / blocks) + h % HOT_BLOCK) % cfg.keys;
		}
		if ((double)(x % 10000) < cfg.hot_share * 100.0)
			return ph_rand(rs) % hot;
		return hot + ph_rand(rs) % (cfg.keys - hot);
	}
	return x % cfg.keys;
}

static int get_one(struct rd *r, uint64_t key, char *got, const char *want)
{
	char q[96], kn[40], *l;
	int kl, n;
	unsigned long long len;

	kl = snprintf(kn, sizeof(kn), "k:%llu", (unsigned long long)key);
	if (cfg.proto == P_LINE) {
		n = sprintf(q, "GET %s\n", kn);
		if (send_all(r->fd, q, (size_t)n))
			return -1;
		l = rd_line(r);
		if (!l)
			return -1;
		return strcmp(l, cfg.expect) ? 1 : 0;
	}
	if (cfg.proto == P_REDIS)
		n = sprintf(q, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, kn);
	else
		n = sprintf(q, "get %s\r\n", kn);
	if (send_all(r->fd, q, (size_t)n))
		return -1;
	l = rd_line(r);
	if (!l)
		return -1;
	if (cfg.proto == P_REDIS) {
		if (sscanf(l, "$%llu", &len) != 1 || len != cfg.value)
			return 1;
	} else {
		char kname[40];

		if (sscanf(l, "VALUE %39s %*u %llu", kname, &len) != 2 || strcmp(kname, kn) ||
		    len != cfg.value)
			return 1;
	}
	if (rd_bytes(r, got, cfg.value) || rd_crlf(r))
		return -1;
	if (cfg.proto == P_MEMCACHED) {
		l = rd_line(r);
		if (!l)
			return -1;
		if (strcmp(l, "END"))
			return 1;
	}
	return memcmp(got, want, cfg.value) ? 1 : 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct rd r = { .cap = 1 << 16, .fd = -1 };
	char *got = malloc(cfg.value), *want = malloc(cfg.value);
	uint64_t rs = cfg.seed * 7919 + w->idx + 1, end = t_start_mono + (uint64_t)(cfg.seconds * 1e9);
	uint64_t key, t0, t1, win;
	int ret;

	r.b = malloc(r.cap);
	if (!got || !want || !r.b)
		return NULL;
	while (!atomic_load(&stop_all) && now_ns(CLOCK_MONOTONIC) < end) {
		if (r.fd < 0) {
			r.fd = connect_to((int)((end - now_ns(CLOCK_MONOTONIC)) / 1000000));
			r.lo = r.hi = 0;
			if (r.fd < 0)
				break;
		}
		key = pick_key(&rs);
		value_of(key, want, cfg.value);
		t0 = now_ns(CLOCK_MONOTONIC);
		ret = get_one(&r, key, got, want);
		t1 = now_ns(CLOCK_MONOTONIC);
		if (ret < 0) {
			/* a restore can reset the first connections: make it again */
			w->errors++;
			close(r.fd);
			r.fd = -1;
			continue;
		}
		if (ret > 0) {
			if (w->wrong++ < 5)
				fprintf(stderr, "lp-appload: WRONG reply for k:%llu\n", (unsigned long long)key);
			continue;
		}
		if (!w->first_ns)
			w->first_ns = t1;
		w->replies++;
		win = (t1 - t_start_mono) / WIN_NS;
		if (win < MAX_WINDOWS) {
			w->w[win].h[bucket_of(t1 - t0)]++;
			w->w[win].n++;
			if (t1 - t0 > w->w[win].max_ns)
				w->w[win].max_ns = t1 - t0;
		}
	}
	if (r.fd >= 0)
		close(r.fd);
	free(r.b);
	free(got);
	free(want);
	return NULL;
}

static double quantile(const uint32_t *h, uint64_t n, double q)
{
	uint64_t want = (uint64_t)((double)n * q), acc = 0;
	unsigned b;

	if (!n)
		return 0;
	if (want >= n)
		want = n - 1;
	for (b = 0; b < HBUCKETS; b++) {
		acc += h[b];
		if (acc > want)
			return bucket_us(b);
	}
	return bucket_us(HBUCKETS - 1);
}

static uint64_t read_epoch(void)
{
	char b[64] = { 0 };
	int fd;

	if (!cfg.epoch_file)
		return 0;
	fd = open(cfg.epoch_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (read(fd, b, sizeof(b) - 1) < 0)
		b[0] = 0;
	close(fd);
	return strtoull(b, NULL, 10);
}

static void on_stop(int sig)
{
	(void)sig;
	atomic_store(&stop_all, 1);
}

static int run(void)
{
	struct worker *w = calloc((size_t)cfg.conns, sizeof(*w));
	struct win *all = calloc(MAX_WINDOWS, sizeof(*all)), sum10 = { 0 }, late = { 0 };
	uint64_t replies = 0, wrong = 0, errors = 0, first = 0, epoch, nwin, i, b, last_bad, max10 = 0, settle, good = 0;
	int64_t shift;
	FILE *wf = NULL;
	int k;

	if (!w || !all)
		return 2;
	signal(SIGTERM, on_stop);
	signal(SIGINT, on_stop);
	t_start_mono = now_ns(CLOCK_MONOTONIC);
	t_start_real = now_ns(CLOCK_REALTIME);
	for (k = 0; k < cfg.conns; k++) {
		w[k].idx = (unsigned)k;
		w[k].w = calloc(MAX_WINDOWS, sizeof(struct win));
		if (!w[k].w || pthread_create(&w[k].tid, NULL, worker_main, &w[k]))
			return 2;
	}
	if (cfg.ready_file) {
		int fd = open(cfg.ready_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

		if (fd >= 0)
			close(fd);
	}
	for (k = 0; k < cfg.conns; k++) {
		pthread_join(w[k].tid, NULL);
		replies += w[k].replies;
		wrong += w[k].wrong;
		errors += w[k].errors;
		if (w[k].first_ns && (!first || w[k].first_ns < first))
			first = w[k].first_ns;
		for (i = 0; i < MAX_WINDOWS; i++) {
			for (b = 0; b < HBUCKETS; b++)
				all[i].h[b] += w[k].w[i].h[b];
			all[i].n += w[k].w[i].n;
			if (w[k].w[i].max_ns > all[i].max_ns)
				all[i].max_ns = w[k].w[i].max_ns;
		}
	}
	if (!first) {
		fprintf(stderr, "lp-appload: no reply at all (%llu connection errors)\n", (unsigned long long)errors);
		return 2;
	}
	/* the epoch (restore start) in the client's monotonic time */
	epoch = read_epoch();
	shift = epoch ? (int64_t)(epoch - t_start_real) : 0;	/* epoch - start, ns */
	nwin = (now_ns(CLOCK_MONOTONIC) - t_start_mono) / WIN_NS;
	if (nwin > MAX_WINDOWS)
		nwin = MAX_WINDOWS;

	/* figures over the first 10 s from the first reply; the late p99 over the last 2 s */
	for (i = (first - t_start_mono) / WIN_NS; i < nwin && i < (first - t_start_mono) / WIN_NS + 100; i++) {
		for (b = 0; b < HBUCKETS; b++)
			sum10.h[b] += all[i].h[b];
		sum10.n += all[i].n;
		if (all[i].max_ns > max10)
			max10 = all[i].max_ns;
	}
	for (i = nwin > 20 ? nwin - 20 : 0; i < nwin; i++) {
		for (b = 0; b < HBUCKETS; b++)
			late.h[b] += all[i].h[b];
		late.n += all[i].n;
	}
	/* degradation: the last bad window after the first reply */
	last_bad = (first - t_start_mono) / WIN_NS;
	if (cfg.steady_p99_us > 0)
		for (i = last_bad; i + 1 < nwin; i++)	/* the last window is cut short by the end */
			if (!all[i].n || quantile(all[i].h, all[i].n, 0.99) > 2 * cfg.steady_p99_us)
				last_bad = i + 1;
	/* settled: the first second (10 windows) in a row under 2x steady, after the first reply */
	settle = (first - t_start_mono) / WIN_NS;
	for (i = settle, good = 0; cfg.steady_p99_us > 0 && i + 1 < nwin && good < SETTLE_WINDOWS; i++) {
		if (!all[i].n || quantile(all[i].h, all[i].n, 0.99) > 2 * cfg.steady_p99_us) {
			good = 0;
			settle = i + 1;
		} else {
			good++;
		}
	}
	if (cfg.windows_file && (wf = fopen(cfg.windows_file, "w"))) {
		fprintf(wf, "# t_s replies p50_us p99_us max_us (t from the epoch)\n");
		for (i = 0; i < nwin; i++)
			fprintf(wf, "%.1f %llu %.0f %.0f %.0f\n", ((double)(i * WIN_NS) - (double)shift) / 1e9,
				(unsigned long long)all[i].n, quantile(all[i].h, all[i].n, 0.5),
				quantile(all[i].h, all[i].n, 0.99), (double)all[i].max_ns / 1e3);
		fclose(wf);
	}
	printf("appload: first_reply_ms=%.1f window_s=%.2f p50_us=%.0f p99_us=%.0f max_us=%.0f replies=%llu "
	       "wrong=%llu reconnects=%llu steady_p99_us=%.0f late_p99_us=%.0f settle_s=%.2f\n",
	       ((double)(first - t_start_mono) - (double)shift) / 1e6,
	       cfg.steady_p99_us > 0 ? ((double)(last_bad * WIN_NS) - (double)(first - t_start_mono)) / 1e9 : -1.0,
	       quantile(sum10.h, sum10.n, 0.5), quantile(sum10.h, sum10.n, 0.99), (double)max10 / 1e3,
	       (unsigned long long)replies, (unsigned long long)wrong, (unsigned long long)errors,
	       cfg.steady_p99_us, quantile(late.h, late.n, 0.99),
	       cfg.steady_p99_us > 0 && good >= SETTLE_WINDOWS ?
		       ((double)(settle * WIN_NS) - (double)(first - t_start_mono)) / 1e9 : -1.0);
	return wrong ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: lp-appload load|run --proto redis|memcached --port P [--host H] --keys N --value BYTES\n"
			"       lp-appload run --proto line --expect LINE --port P ... (a request is \"GET k:N\\n\", its answer LINE)\n"
			"       [--seed S] [--seconds D] [--conns C] [--hot PCT --hot-share PCT [--hot-spread]] [--epoch FILE]\n"
			"       [--steady-p99 US] [--windows FILE] [--ready FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "proto", required_argument, NULL, 'P' },   { "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },    { "keys", required_argument, NULL, 'k' },
		{ "value", required_argument, NULL, 'v' },   { "seed", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 'd' }, { "conns", required_argument, NULL, 'c' },
		{ "hot", required_argument, NULL, 'h' },     { "hot-share", required_argument, NULL, 'S' },
		{ "epoch", required_argument, NULL, 'e' },   { "steady-p99", required_argument, NULL, 'q' },
		{ "windows", required_argument, NULL, 'w' }, { "ready", required_argument, NULL, 'r' },
		{ "hot-spread", no_argument, NULL, 'X' },    { "expect", required_argument, NULL, 'E' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode;
	int c;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'P':
			if (!strcmp(optarg, "redis"))
				cfg.proto = P_REDIS;
			else if (!strcmp(optarg, "memcached"))
				cfg.proto = P_MEMCACHED;
			else if (!strcmp(optarg, "line"))
				cfg.proto = P_LINE;
			else
				usage();
			break;
		case 'H': cfg.host = optarg; break;
		case 'p': cfg.port = optarg; break;
		case 'k': cfg.keys = strtoull(optarg, NULL, 10); break;
		case 'v': cfg.value = strtoull(optarg, NULL, 10); break;
		case 's': cfg.seed = strtoull(optarg, NULL, 10); break;
		case 'd': cfg.seconds = atof(optarg); break;
		case 'c': cfg.conns = atoi(optarg); break;
		case 'h': cfg.hot = atof(optarg); break;
		case 'S': cfg.hot_share = atof(optarg); break;
		case 'e': cfg.epoch_file = optarg; break;
		case 'q': cfg.steady_p99_us = atof(optarg); break;
		case 'w': cfg.windows_file = optarg; break;
		case 'r': cfg.ready_file = optarg; break;
		case 'X': cfg.hot_spread = true; break;
		case 'E': cfg.expect = optarg; break;
		default: usage();
		}
	}
	if (!cfg.port || !cfg.keys || !cfg.value || cfg.value > (64u << 20) || cfg.conns < 1 || cfg.conns > 256 ||
	    cfg.seconds <= 0 || cfg.hot < 0 || cfg.hot >= 100 || cfg.hot_share < 0 || cfg.hot_share > 100)
		usage();
	if (cfg.proto == P_LINE && (!cfg.expect || strcmp(mode, "run")))
		usage();
	if (!strcmp(mode, "load"))
		return load();
	if (!strcmp(mode, "run"))
		return run();
	usage();
	return 2;
}
