/* SPDX-License-Identifier: MIT */
/* stats: counters and a lock-free fault-latency histogram shared by the daemon's threads. */
#ifndef LP_STATS_H
#define LP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* Log-linear buckets: 16 sub-buckets per power of two of nanoseconds. */
#define STATS_SUB 16
#define STATS_BUCKETS (64 * STATS_SUB)

struct hist {
	atomic_uint_fast64_t b[STATS_BUCKETS];
};

struct stats {
	atomic_uint_fast64_t pages_copied;
	atomic_uint_fast64_t zero_pages;
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t exists;		/* pages found present by a COPY/ZEROPAGE */
	atomic_uint_fast64_t retries;		/* EAGAIN: an event had to be read first */
	atomic_uint_fast64_t forks;		/* processes made by FORK events */
	struct hist fault;			/* fault service time, read to page in */
	atomic_uint_fast64_t fault_ns;		/* when any process's fault was last read */
	/* remote sessions */
	atomic_uint_fast64_t remote_bytes;	/* page bytes received */
	atomic_uint_fast64_t remote_requests;
	atomic_int_fast64_t inflight;		/* requests on the wire now */
	struct hist rtt;			/* urgent request to its reply */
};

void stats_init(struct stats *s);
void hist_add(struct hist *h, uint64_t ns);
/* The Q-quantile (0..1) in nanoseconds (0 if empty). */
uint64_t hist_quantile(struct hist *h, double q);
uint64_t hist_count(struct hist *h);

uint64_t stats_now_ns(void);

/* Is the time stored in WHEN (stats_now_ns, 0 for never) less than NS ago? */
static inline int stats_within(atomic_uint_fast64_t *when, uint64_t ns)
{
	return stats_now_ns() - atomic_load_explicit(when, memory_order_relaxed) < ns;
}

#endif
