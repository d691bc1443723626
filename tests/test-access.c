/* SPDX-License-Identifier: MIT */
/* Unit tests of access: --allow parsing and matching (IPv4, IPv6, v4-mapped peers) and the refusal log's rate limit. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "access.h"

static struct access_net net(const char *spec)
{
	struct access_net n;
	struct lp_err e = { 0 };

	if (access_net_parse(spec, &n, &e) < 0)
		fail_msg("%s: %s", spec, e.msg);
	return n;
}

/* The peer address accept() would return for TEXT: AF_INET for a.b.c.d, AF_INET6 otherwise. */
static struct access_net peer(const char *text)
{
	struct sockaddr_storage ss = { 0 };
	struct access_net n;

	if (strchr(text, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	assert_int_equal(access_net_of((struct sockaddr *)&ss, &n), 0);
	return n;
}

static void expect_format(const char *spec, const char *want)
{
	struct access_net n = net(spec);
	char buf[64];

	access_net_format(&n, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void expect_bad(const char *spec, const char *why)
{
	struct access_net n = { { 0 }, 7 };
	struct lp_err e = { 0 };

	assert_int_equal(access_net_parse(spec, &n, &e), -EINVAL);
	if (!strstr(e.msg, why))
		fail_msg("%s: '%s' lacks '%s'", spec, e.msg, why);
	assert_int_equal(n.prefix, 7);	/* not written on failure */
}

static void test_parse(void **state)
{
	(void)state;
	expect_format("10.1.2.3", "10.1.2.3");
	expect_format("10.1.2.3/32", "10.1.2.3");
	expect_format("10.0.0.0/8", "10.0.0.0/8");
	expect_format("0.0.0.0/0", "0.0.0.0/0");
	expect_format("fd00::1", "fd00::1");
	expect_format("fd00::/64", "fd00::/64");
	expect_format("::/0", "::/0");
	/* an IPv4-mapped IPv6 address is the IPv4 one */
	expect_format("::ffff:10.1.2.3", "10.1.2.3");
	assert_int_equal(net("10.0.0.0/8").prefix, 104);
	assert_int_equal(net("fd00::/64").prefix, 64);

	expect_bad("10.0.0.300", "not a numeric IPv4 or IPv6 address");
	expect_bad("example.com", "not a numeric");
	expect_bad("", "not a numeric");
	expect_bad("10.0.0.0/33", "0 to 32");
	expect_bad("fd00::/129", "0 to 128");
	expect_bad("10.0.0.0/", "prefix length");
	expect_bad("10.0.0.0/-1", "prefix length");
	expect_bad("10.0.0.0/+8", "prefix length");
	expect_bad("10.0.0.0/8x", "prefix length");
	expect_bad("10.0.0.1/8", "the network is 10.0.0.0/8");
	expect_bad("fd00::1/64", "the network is fd00::/64");
	expect_bad("fe80::1%lo", "not a numeric");
	expect_bad("1111:2222:3333:4444:5555:6666:7777:8888:1111:2222:3333:4444:5555:6666:7777/128", "too long");
}

/* whether network SPEC takes the peer WHO */
static bool in(const char *spec, const char *who)
{
	struct access_net n = net(spec), p = peer(who);

	return access_net_contains(&n, &p);
}

static bool overlap(const char *a, const char *b)
{
	struct access_net x = net(a), y = net(b);

	return access_net_overlaps(&x, &y) && access_net_overlaps(&y, &x);
}

static bool loopback(const char *who)
{
	struct access_net p = peer(who);

	return access_net_loopback(&p);
}

static void test_match(void **state)
{
	struct access_net v4 = net("10.231.0.0/24"), one = net("10.231.0.2");

	(void)state;
	assert_true(access_net_contains(&v4, &v4));
	assert_true(access_net_contains(&v4, &one));
	assert_false(access_net_contains(&one, &v4));
	assert_true(in("10.231.0.0/24", "10.231.0.255"));
	assert_false(in("10.231.0.0/24", "10.231.1.2"));
	assert_true(in("10.231.0.2", "10.231.0.2"));
	assert_false(in("10.231.0.2", "10.231.0.3"));
	/* an IPv4 client of a dual-stack (::) listener arrives as ::ffff:a.b.c.d */
	assert_true(in("10.231.0.2", "::ffff:10.231.0.2"));
	assert_false(in("10.231.0.2", "::ffff:10.231.0.3"));
	assert_true(in("::ffff:10.231.0.2", "10.231.0.2"));
	assert_true(in("fd00:231::/64", "fd00:231::2"));
	assert_false(in("fd00:231::/64", "fd00:232::2"));
	assert_true(in("fd00:231::2", "fd00:231::2"));
	assert_false(in("fd00:231::2", "fd00:231::3"));
	/* families do not mix, except through the mapping */
	assert_false(in("10.231.0.0/24", "::a0e7:2"));
	assert_false(in("fd00:231::/64", "10.231.0.2"));
	assert_true(in("0.0.0.0/0", "192.0.2.1"));
	assert_false(in("0.0.0.0/0", "fd00::1"));
	assert_true(in("::/0", "192.0.2.1"));
	assert_true(in("::/0", "fd00::1"));
	/* prefixes that do not end on a byte */
	assert_true(in("10.224.0.0/11", "10.255.1.1"));
	assert_false(in("10.224.0.0/11", "10.192.1.1"));
	assert_true(in("fd00:8000::/17", "fd00:ffff::1"));
	assert_false(in("fd00:8000::/17", "fd00:7fff::1"));

	assert_true(overlap("10.231.0.0/24", "10.231.0.2"));
	assert_true(overlap("0.0.0.0/0", "10.231.0.0/24"));
	assert_false(overlap("10.231.0.0/24", "fd00:231::/64"));
	assert_false(overlap("127.0.0.0/8", "10.231.0.2"));
	assert_true(overlap("127.0.0.0/8", "127.0.0.1"));
	assert_true(overlap("::/0", "127.0.0.1"));

	assert_true(loopback("127.0.0.1"));
	assert_true(loopback("127.1.2.3"));
	assert_true(loopback("::1"));
	assert_true(loopback("::ffff:127.0.0.1"));
	assert_false(loopback("0.0.0.0"));
	assert_false(loopback("::"));
	assert_false(loopback("128.0.0.1"));
	assert_false(loopback("126.255.255.255"));
	assert_false(loopback("::2"));
}

static void refuse(struct access_log *l, const char *who, uint64_t now, struct access_note *n)
{
	struct access_net a = peer(who);

	access_log_refused(l, &a, now, n);
}

static void test_log_per_address(void **state)
{
	struct access_log *l = access_log_new();
	struct access_note n;
	uint64_t refused, addrs;
	int i;

	(void)state;
	assert_non_null(l);
	refuse(l, "10.0.0.3", 1000, &n);
	assert_true(n.log);
	assert_true(n.first);
	assert_int_equal(n.count, 1);
	/* the same address within the minute: counted, not logged */
	for (i = 0; i < 50; i++) {
		refuse(l, "10.0.0.3", 1000 + (uint64_t)i * 1000, &n);
		assert_false(n.log);
	}
	/* the same address as a v4-mapped peer is the same address */
	refuse(l, "::ffff:10.0.0.3", 60999, &n);
	assert_false(n.log);
	/* a minute after its first line: one line with the count since */
	refuse(l, "10.0.0.3", 61000, &n);
	assert_true(n.log);
	assert_false(n.first);
	assert_int_equal(n.count, 52);
	assert_int_equal(n.since_ms, 60000);
	refuse(l, "10.0.0.3", 61001, &n);
	assert_false(n.log);
	/* another address: its own first line */
	refuse(l, "fd00::3", 61002, &n);
	assert_true(n.log);
	assert_true(n.first);
	access_log_totals(l, &refused, &addrs);
	assert_int_equal(refused, 55);
	assert_int_equal(addrs, 2);
	access_log_free(l);
	access_log_free(NULL);
}

static void test_log_burst(void **state)
{
	struct access_log *l = access_log_new();
	struct access_note n;
	char a[32];
	int i, lines = 0;

	(void)state;
	/* many addresses in one minute: ACCESS_LOG_BURST lines, the rest counted */
	for (i = 0; i < 100; i++) {
		snprintf(a, sizeof(a), "192.0.2.%d", i);
		refuse(l, a, 5000 + (uint64_t)i, &n);
		lines += n.log;
	}
	assert_int_equal(lines, ACCESS_LOG_BURST);
	/* the next minute: an address left unsaid gets its first line, with its count */
	snprintf(a, sizeof(a), "192.0.2.%d", 99);
	refuse(l, a, 5000 + ACCESS_LOG_EVERY_MS + 200, &n);
	assert_true(n.log);
	assert_true(n.first);
	assert_int_equal(n.count, 2);
	access_log_free(l);
}

static void test_log_slots(void **state)
{
	struct access_log *l = access_log_new();
	struct access_note n;
	uint64_t refused, addrs, t = 0;
	char a[64];
	int i;

	(void)state;
	/* more addresses than slots, one a minute so that each is logged: bounded memory, all counted */
	for (i = 0; i < ACCESS_SLOTS + 10; i++) {
		snprintf(a, sizeof(a), "fd00::%x", i + 1);
		t += ACCESS_LOG_EVERY_MS;
		refuse(l, a, t, &n);
		assert_true(n.log);
		assert_true(n.first);
	}
	/* the oldest was taken over: it counts as new again; a recent one is remembered */
	refuse(l, "fd00::1", t + 1, &n);
	assert_true(n.log);
	assert_true(n.first);
	snprintf(a, sizeof(a), "fd00::%x", ACCESS_SLOTS + 10);
	refuse(l, a, t + 2, &n);
	assert_false(n.log);
	access_log_totals(l, &refused, &addrs);
	assert_int_equal(refused, ACCESS_SLOTS + 12);
	assert_int_equal(addrs, ACCESS_SLOTS + 11);
	access_log_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_log_per_address),
		cmocka_unit_test(test_log_burst),
		cmocka_unit_test(test_log_slots),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
