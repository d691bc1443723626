/* SPDX-License-Identifier: MIT */
/* access: the --allow list's addresses and networks, and how often a refused peer is worth a log line. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"

static const uint8_t access_v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* ---- addresses and networks ---- */

static bool access_is_v4(const struct access_net *n)
{
	return n->prefix >= 96 && !memcmp(n->addr, access_v4_prefix, sizeof(access_v4_prefix));
}

/* whether the first BITS bits of X and Y are equal */
static bool access_bits_equal(const uint8_t *x, const uint8_t *y, unsigned int bits)
{
	unsigned int whole = bits / 8, rest = bits % 8;
	uint8_t mask;

	if (memcmp(x, y, whole))
		return false;
	if (!rest)
		return true;
	mask = (uint8_t)(0xff << (8 - rest));
	return ((x[whole] ^ y[whole]) & mask) == 0;
}

static bool access_host_bits_zero(const struct access_net *n)
{
	static const uint8_t zero[16];
	uint8_t host[16];
	unsigned int i;

	memcpy(host, n->addr, sizeof(host));
	for (i = 0; i < n->prefix; i++)
		host[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	return !memcmp(host, zero, sizeof(host));
}

int access_net_parse(const char *spec, struct access_net *out, struct lp_err *e)
{
	char buf[INET6_ADDRSTRLEN + 8];
	struct access_net n = { { 0 }, 128 };
	struct in_addr v4;
	char *slash, *end;
	unsigned long p;
	bool is_v4;

	if (strlen(spec) >= sizeof(buf))
		return lp_err_set(e, EINVAL, "'%.64s...': too long for an address", spec);
	strcpy(buf, spec);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	is_v4 = inet_pton(AF_INET, buf, &v4) == 1;
	if (is_v4) {
		memcpy(n.addr, access_v4_prefix, sizeof(access_v4_prefix));
		memcpy(n.addr + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, buf, n.addr) != 1) {
		return lp_err_set(e, EINVAL, "'%s': not a numeric IPv4 or IPv6 address", buf);
	}
	if (slash) {
		errno = 0;
		p = strtoul(slash + 1, &end, 10);
		if (errno || end == slash + 1 || *end || slash[1] == '-' || slash[1] == '+' ||
		    p > (is_v4 ? 32u : 128u))
			return lp_err_set(e, EINVAL, "'%s': the prefix length after '/' must be 0 to %u", spec,
					  is_v4 ? 32u : 128u);
		n.prefix = (unsigned int)p + (is_v4 ? 96u : 0u);
	}
	if (!access_host_bits_zero(&n)) {
		char net[INET6_ADDRSTRLEN + 8];
		struct access_net masked = n;
		unsigned int i;

		for (i = n.prefix; i < 128; i++)
			masked.addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
		access_net_format(&masked, net, sizeof(net));
		return lp_err_set(e, EINVAL, "'%s': bits set after the prefix (the network is %s; "
				  "a single address needs no prefix)", spec, net);
	}
	*out = n;
	return 0;
}

int access_net_of(const struct sockaddr *sa, struct access_net *out)
{
	struct access_net n = { { 0 }, 128 };

	if (sa->sa_family == AF_INET) {
		memcpy(n.addr, access_v4_prefix, sizeof(access_v4_prefix));
		memcpy(n.addr + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		/* an IPv4 peer on a dual-stack socket is ::ffff:a.b.c.d already */
		memcpy(n.addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else {
		return -EAFNOSUPPORT;
	}
	*out = n;
	return 0;
}

bool access_net_contains(const struct access_net *n, const struct access_net *a)
{
	return a->prefix >= n->prefix && access_bits_equal(n->addr, a->addr, n->prefix);
}

bool access_net_overlaps(const struct access_net *a, const struct access_net *b)
{
	return access_bits_equal(a->addr, b->addr, a->prefix < b->prefix ? a->prefix : b->prefix);
}

bool access_net_loopback(const struct access_net *a)
{
	static const struct access_net v4 = { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127 }, 104 };
	static const struct access_net v6 = { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 128 };

	return access_net_contains(&v4, a) || access_net_contains(&v6, a);
}

void access_net_format(const struct access_net *n, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	bool v4 = access_is_v4(n);
	unsigned int full = v4 ? 32 : 128, p = v4 ? n->prefix - 96 : n->prefix;

	if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? n->addr + 12 : n->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	if (p == full)
		snprintf(buf, len, "%s", a);
	else
		snprintf(buf, len, "%s/%u", a, p);
}

/* ---- refusals, rate limited ---- */

struct access_slot {
	uint8_t addr[16];
	bool used, logged;
	uint64_t count;			/* since the last line */
	uint64_t last_log_ms, last_seen_ms;
};

struct access_log {
	struct access_slot slots[ACCESS_SLOTS];
	uint64_t window_ms;		/* start of the current minute of lines */
	unsigned int lines;		/* written in it */
	uint64_t refused, addresses;
};

struct access_log *access_log_new(void)
{
	return calloc(1, sizeof(struct access_log));
}

void access_log_free(struct access_log *l)
{
	free(l);
}

/* The slot of ADDR, or a free one, or the one refused longest ago (taken over). */
static struct access_slot *access_log_slot(struct access_log *l, const uint8_t *addr)
{
	struct access_slot *s, *victim = NULL;
	size_t i;

	for (i = 0; i < ACCESS_SLOTS; i++) {
		s = &l->slots[i];
		if (s->used && !memcmp(s->addr, addr, 16))
			return s;
		if (!victim || (victim->used && (!s->used || s->last_seen_ms < victim->last_seen_ms)))
			victim = s;
	}
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->addr, addr, 16);
	victim->used = true;
	l->addresses++;
	return victim;
}

void access_log_refused(struct access_log *l, const struct access_net *a, uint64_t now_ms,
			struct access_note *out)
{
	struct access_slot *s = access_log_slot(l, a->addr);

	memset(out, 0, sizeof(*out));
	s->count++;
	s->last_seen_ms = now_ms;
	if (!l->refused++ || now_ms - l->window_ms >= ACCESS_LOG_EVERY_MS) {
		l->window_ms = now_ms;
		l->lines = 0;
	}
	if (s->logged && now_ms - s->last_log_ms < ACCESS_LOG_EVERY_MS)
		return;
	if (l->lines >= ACCESS_LOG_BURST)
		return;
	l->lines++;
	out->log = true;
	out->first = !s->logged;
	out->count = s->count;
	out->since_ms = s->logged ? now_ms - s->last_log_ms : 0;
	s->logged = true;
	s->last_log_ms = now_ms;
	s->count = 0;
}

void access_log_totals(const struct access_log *l, uint64_t *refused, uint64_t *addresses)
{
	*refused = l->refused;
	*addresses = l->addresses;
}
