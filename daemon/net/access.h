/* SPDX-License-Identifier: MIT */
/* access: who may connect to lazy-pages-server (the --allow list) and a rate-limited record of who was refused. */
#ifndef LP_ACCESS_H
#define LP_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "err.h"

#define ACCESS_MAX_NETS 256		/* --allow entries */
#define ACCESS_SLOTS 1024		/* refused addresses remembered for the rate limit */
#define ACCESS_LOG_EVERY_MS 60000	/* one line per refused address per minute at most */
#define ACCESS_LOG_BURST 20		/* lines about refusals per minute, all addresses together */

/* An address or network; IPv4 is held as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96). */
struct access_net {
	uint8_t addr[16];
	unsigned int prefix;		/* 0..128 */
};

/* "ADDR" or "ADDR/PREFIX", IPv4 or IPv6, numeric. Host bits must be zero. 0 or -EINVAL (E says why). */
int access_net_parse(const char *spec, struct access_net *out, struct lp_err *e);
/* The address of SA (AF_INET or AF_INET6) as a /128; -EAFNOSUPPORT for other families. */
int access_net_of(const struct sockaddr *sa, struct access_net *out);
bool access_net_contains(const struct access_net *n, const struct access_net *a);
/* Whether the two share an address (one contains the other's network). */
bool access_net_overlaps(const struct access_net *a, const struct access_net *b);
/* 127.0.0.0/8 or ::1 (the IPv4 one mapped too) */
bool access_net_loopback(const struct access_net *a);
/* "10.0.0.0/8", "fd00::/64", "10.0.0.1" (a /32 or /128 without its prefix) */
void access_net_format(const struct access_net *n, char *buf, size_t len);

/* What to say about a refused peer: nothing, or one line with a count. */
struct access_note {
	bool log;
	bool first;		/* the first line about this address */
	uint64_t count;		/* refusals from it since its last line, this one included */
	uint64_t since_ms;	/* since that line (when not first) */
};

struct access_log;

struct access_log *access_log_new(void);
void access_log_free(struct access_log *l);	/* accepts NULL */
/*
 * Counts a refusal of A at NOW_MS (monotonic) and says whether to log it:
 * the first refusal from an address, then at most one line a minute for
 * it with the count since; ACCESS_LOG_BURST lines a minute in all (a
 * refusal left unsaid stays counted for its address's next line).
 */
void access_log_refused(struct access_log *l, const struct access_net *a, uint64_t now_ms,
			struct access_note *out);
/* Refusals counted, and distinct addresses refused (as far as remembered). */
void access_log_totals(const struct access_log *l, uint64_t *refused, uint64_t *addresses);

#endif
