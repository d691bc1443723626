/* SPDX-License-Identifier: MIT */
/* stats: fault latencies go into log-linear buckets so quantiles need no lock and no sort. */
#include <string.h>
#include <time.h>

#include "stats.h"

void stats_init(struct stats *s)
{
	memset(s, 0, sizeof(*s));
}

static unsigned bucket_of(uint64_t ns)
{
	unsigned msb, sub;

	if (ns < STATS_SUB)
		return (unsigned)ns;
	msb = 63 - (unsigned)__builtin_clzll(ns);
	sub = (unsigned)(ns >> (msb - 4)) & (STATS_SUB - 1);
	return (msb - 3) * STATS_SUB + sub;
}

/* The upper edge of a bucket, in ns. */
static uint64_t bucket_top(unsigned b)
{
	unsigned msb, sub;

	if (b < STATS_SUB)
		return b;
	msb = b / STATS_SUB + 3;
	sub = b % STATS_SUB;
	return ((uint64_t)(STATS_SUB + sub + 1) << (msb - 4)) - 1;
}

void hist_add(struct hist *h, uint64_t ns)
{
	unsigned b = bucket_of(ns);

	if (b >= STATS_BUCKETS)
		b = STATS_BUCKETS - 1;
	atomic_fetch_add_explicit(&h->b[b], 1, memory_order_relaxed);
}

uint64_t hist_count(struct hist *h)
{
	uint64_t total = 0;
	unsigned b;

	for (b = 0; b < STATS_BUCKETS; b++)
		total += atomic_load_explicit(&h->b[b], memory_order_relaxed);
	return total;
}

uint64_t hist_quantile(struct hist *h, double q)
{
	uint64_t total = hist_count(h), seen = 0, want;
	unsigned b;

	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total);
	if (want >= total)
		want = total - 1;
	for (b = 0; b < STATS_BUCKETS; b++) {
		seen += atomic_load_explicit(&h->b[b], memory_order_relaxed);
		if (seen > want)
			return bucket_top(b);
	}
	return bucket_top(STATS_BUCKETS - 1);
}

uint64_t stats_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
