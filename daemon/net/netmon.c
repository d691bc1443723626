/* SPDX-License-Identifier: MIT */
/* netmon: a libnl cache manager for links and routes, polled on a thread of its own. */
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>

#include "netmon.h"

struct netmon {
	struct nl_cache_mngr *mngr;
	struct nl_cache *links, *routes;
	int ifindex;
	void (*changed)(void *arg);
	void *arg;
	int stopfd;
	pthread_t tid;
	int started;
};

static int same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
	return 0;
}

static int ifindex_of(const struct sockaddr *local)
{
	struct ifaddrs *ifa, *i;
	int idx = 0;

	if (getifaddrs(&ifa) < 0)
		return -errno;
	for (i = ifa; i && !idx; i = i->ifa_next)
		if (i->ifa_addr && same_addr(i->ifa_addr, local))
			idx = (int)if_nametoindex(i->ifa_name);
	freeifaddrs(ifa);
	return idx ? idx : -ENODEV;
}

static void link_changed(struct nl_cache *cache, struct nl_object *obj, int action, void *data)
{
	struct netmon *nm = data;
	struct rtnl_link *l = (struct rtnl_link *)obj;
	unsigned int fl;

	(void)cache;
	if (rtnl_link_get_ifindex(l) != nm->ifindex)
		return;
	fl = rtnl_link_get_flags(l);
	if (action == NL_ACT_DEL || !(fl & IFF_UP) || !(fl & IFF_RUNNING))
		nm->changed(nm->arg);
}

static void route_changed(struct nl_cache *cache, struct nl_object *obj, int action, void *data)
{
	struct netmon *nm = data;
	struct rtnl_route *r = (struct rtnl_route *)obj;
	struct rtnl_nexthop *nh;
	int i, n;

	(void)cache;
	if (action != NL_ACT_DEL)
		return;
	n = rtnl_route_get_nnexthops(r);
	for (i = 0; i < n; i++) {
		nh = rtnl_route_nexthop_n(r, i);
		if (nh && rtnl_route_nh_get_ifindex(nh) == nm->ifindex) {
			nm->changed(nm->arg);
			return;
		}
	}
}

static void *netmon_main(void *arg)
{
	struct netmon *nm = arg;
	struct pollfd p[2] = { { .fd = nl_cache_mngr_get_fd(nm->mngr), .events = POLLIN },
			       { .fd = nm->stopfd, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return NULL;
		if (p[1].revents)
			return NULL;
		if (p[0].revents)
			nl_cache_mngr_data_ready(nm->mngr);
	}
}

int netmon_start(const struct sockaddr *local, void (*changed)(void *arg), void *arg, struct netmon **out,
		 struct lp_err *e)
{
	struct netmon *nm = calloc(1, sizeof(*nm));
	int ret;

	if (!nm)
		return lp_err_set(e, ENOMEM, "out of memory");
	nm->changed = changed;
	nm->arg = arg;
	nm->stopfd = -1;
	nm->ifindex = ifindex_of(local);
	if (nm->ifindex < 0) {
		ret = lp_err_set(e, -nm->ifindex, "netmon: no interface holds the connection's address");
		goto fail;
	}
	ret = nl_cache_mngr_alloc(NULL, NETLINK_ROUTE, NL_AUTO_PROVIDE, &nm->mngr);
	if (ret < 0) {
		ret = lp_err_set(e, EIO, "netmon: %s", nl_geterror(ret));
		goto fail;
	}
	ret = nl_cache_mngr_add(nm->mngr, "route/link", link_changed, nm, &nm->links);
	if (ret >= 0)
		ret = nl_cache_mngr_add(nm->mngr, "route/route", route_changed, nm, &nm->routes);
	if (ret < 0) {
		ret = lp_err_set(e, EIO, "netmon: %s", nl_geterror(ret));
		goto fail;
	}
	nm->stopfd = eventfd(0, EFD_CLOEXEC);
	if (nm->stopfd < 0) {
		ret = lp_err_set(e, errno, "netmon: eventfd: %s", strerror(errno));
		goto fail;
	}
	ret = pthread_create(&nm->tid, NULL, netmon_main, nm);
	if (ret) {
		ret = lp_err_set(e, ret, "netmon: thread: %s", strerror(ret));
		goto fail;
	}
	nm->started = 1;
	*out = nm;
	return 0;
fail:
	netmon_stop(nm);
	return ret;
}

void netmon_stop(struct netmon *nm)
{
	uint64_t one = 1;

	if (!nm)
		return;
	if (nm->started) {
		if (write(nm->stopfd, &one, sizeof(one)) == sizeof(one))
			pthread_join(nm->tid, NULL);
	}
	if (nm->stopfd >= 0)
		close(nm->stopfd);
	if (nm->mngr)
		nl_cache_mngr_free(nm->mngr);
	free(nm);
}
