/* SPDX-License-Identifier: MIT */
/* stats: counters and a lock-free fault-latency histogram shared by the daemon's threads. */
#ifndef LP_STATS_H
#define LP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* Log-linear buckets: 16 sub-buckets per power of two of nanoseconds. */
#define STATS_SUB 16
#define STATS_BUCKETS (64 * STATS_SUB)

struct stats {
	atomic_uint_fast64_t pages_copied;
	atomic_uint_fast64_t zero_pages;
	atomic_uint_fast64_t faults;
	atomic_uint_fast64_t exists;		/* pages found present by a COPY/ZEROPAGE */
	atomic_uint_fast64_t retries;		/* EAGAIN: an event had to be read first */
	atomic_uint_fast64_t lat[STATS_BUCKETS];	/* fault service time */
};

void stats_init(struct stats *s);
void stats_fault_ns(struct stats *s, uint64_t ns);
/* The Q-quantile (0..1) of fault service time in nanoseconds (0 if no fault). */
uint64_t stats_quantile_ns(struct stats *s, double q);

uint64_t stats_now_ns(void);

#endif
