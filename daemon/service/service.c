/* SPDX-License-Identifier: MIT */
/* service: the main loop of lazy-pagesd --service (signals, the control socket, systemd) and its ExecStopPost= helper. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "control.h"
#include "fdstore.h"
#include "log.h"
#include "notify.h"
#include "persist.h"
#include "registry.h"
#include "service.h"

int service_reap(const char *state_dir)
{
	struct persist_rec_t *recs;
	struct dirent *de;
	struct lp_err e;
	char *text;
	size_t nrec;
	int job;
	DIR *d;

	job = notify_manager_job_pending();
	if (job < 0) {
		log_err("--reap: systemd cannot be asked whether the service stops for good: %s; nothing done",
			strerror(-job));
		return 1;
	}
	if (!job) {
		log_info("--reap: no stop job: systemd restarts the service, which resumes its sessions");
		return 0;
	}
	d = opendir(state_dir);
	if (!d)
		return errno == ENOENT ? 0 : 1;
	while ((de = readdir(d))) {
		char *end;
		unsigned long id = strtoul(de->d_name, &end, 10);
		struct persist *p;

		if (!id || *end || id > UINT32_MAX)
			continue;
		if (persist_load(state_dir, (uint32_t)id, &text, &recs, &nrec, &e)) {
			log_err("session %lu: %s", id, e.msg);
			continue;
		}
		log_err("session %lu: the service stops for good while it fills processes, and systemd closes its fd store: "
			"they are killed, not left to read zeros", id);
		session_abandon_journal(recs, nrec, "the daemon was killed while stopping, and its fd store is closed");
		if (!persist_open(state_dir, (uint32_t)id, NULL, NULL, &p, &e))
			persist_close(p, 1);
		free(text);
		free(recs);
	}
	closedir(d);
	return 0;
}

/* SIGTERM, SIGINT: no new sessions; the daemon exits once the running ones have ended. */
static void begin_stop(struct registry *reg, int sig, bool *stopping)
{
	unsigned busy;

	if (!*stopping)
		notify_stopping();
	*stopping = true;
	busy = registry_stop(reg);
	if (busy)
		log_warn("%s: waiting for %u session(s) still filling processes (stopping now would leave them with missing pages)",
			 strsignal(sig), busy);
	else
		log_info("%s: stopping", strsignal(sig));
}

static void update_status(struct registry *reg)
{
	char line[256];

	registry_update_status(reg, line, sizeof(line));
	notify_status(line);
}

/* The listening socket systemd passed (a .socket unit), if any: taken out of FDS. */
static int activated_fd(int *fds, char **names, int nfds)
{
	int i, fd;

	for (i = 0; i < nfds; i++)
		if ((!names || !names[i] || strncmp(names[i], "lp-", 3)) && notify_is_listener(fds[i])) {
			fd = fds[i];
			fds[i] = -1;
			return fd;
		}
	return -1;
}

int service_main(const struct service_cfg *cfg)
{
	struct epoll_event ev[16];
	struct itimerspec its = { 0 };
	struct registry *reg = NULL;
	struct control *ctl = NULL;
	struct fdstore *fs = NULL;
	struct lp_err e;
	sigset_t mask;
	uint64_t wd, tick_ns;
	int ep = -1, sfd = -1, tfd = -1, afd, n, i, code = 1, nlfds = 0, *lfds = NULL;
	char **lnames = NULL;
	bool stopping = false;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);	/* every thread started later inherits it */
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || tfd < 0 || ep < 0) {
		log_err("service setup: %s", strerror(errno));
		goto out;
	}
	nlfds = notify_listen_fds(&lfds, &lnames);
	afd = activated_fd(lfds, lnames, nlfds);
	if (control_open(cfg->control_path, cfg->control_group, afd, &ctl, &e)) {
		log_err("%s", e.msg);
		if (afd >= 0)
			close(afd);
		goto out;
	}
	if (afd >= 0)
		log_info("control socket from systemd (fd %d)", afd);
	fs = fdstore_new();
	if (!fs) {
		log_err("out of memory");
		goto out;
	}
	{
		char how[512];

		fdstore_describe(fs, how, sizeof(how));
		if (fdstore_kind(fs) == FDSTORE_UNKNOWN || (fdstore_kind(fs) != FDSTORE_NONE && !fdstore_size(fs)))
			log_warn("%s", how);
		else
			log_info("%s", how);
	}
	if (registry_new(&cfg->defaults, cfg->state_dir, fs, &reg, &e)) {
		log_err("%s", e.msg);
		goto out;
	}
	if (registry_keeps(reg))
		registry_recover(reg, lfds, lnames, nlfds);
	for (i = 0; i < nlfds; i++)
		if (lfds[i] >= 0) {
			log_warn("fd %d (%s) passed by systemd is not ours: closed", lfds[i],
				 lnames && lnames[i] ? lnames[i] : "?");
			close(lfds[i]);
		}
	notify_fds_free(lfds, lnames, nlfds);
	lfds = NULL;
	lnames = NULL;
	nlfds = 0;
	wd = notify_watchdog_usec();
	tick_ns = 1000000000ull;
	if (wd && wd * 1000 / 2 < tick_ns)
		tick_ns = wd * 1000 / 2;
	its.it_interval.tv_sec = (time_t)(tick_ns / 1000000000ull);
	its.it_interval.tv_nsec = (long)(tick_ns % 1000000000ull);
	its.it_value = its.it_interval;
	timerfd_settime(tfd, 0, &its, NULL);
	ev[0].events = EPOLLIN;
	ev[0].data.fd = control_fd(ctl);
	epoll_ctl(ep, EPOLL_CTL_ADD, control_fd(ctl), &ev[0]);
	ev[0].data.fd = sfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev[0]);
	ev[0].data.fd = registry_eventfd(reg);
	epoll_ctl(ep, EPOLL_CTL_ADD, registry_eventfd(reg), &ev[0]);
	ev[0].data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev[0]);
	update_status(reg);
	notify_ready();
	log_info("service ready%s", afd >= 0 ? " (socket activated)" : "");

	for (;;) {
		n = epoll_wait(ep, ev, 16, -1);
		if (n < 0 && errno != EINTR) {
			log_err("epoll_wait: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			int fd = ev[i].data.fd;
			uint64_t v;

			if (fd == sfd) {
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) == sizeof(si))
					begin_stop(reg, (int)si.ssi_signo, &stopping);
			} else if (fd == registry_eventfd(reg)) {
				registry_reap(reg);
			} else if (fd == tfd) {
				if (read(tfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_warn("timerfd: %s", strerror(errno));
				registry_reap(reg);
				update_status(reg);
				if (wd)
					notify_watchdog();
			} else if (fd == control_fd(ctl)) {
				control_accept(ctl, reg);
			}
		}
		if (registry_idle(reg)) {
			code = 0;
			break;
		}
	}
	log_info("service stopped: %u session(s) served", registry_total(reg));
out:
	notify_fds_free(lfds, lnames, nlfds);
	/* the connections first: none may use the registry once it is freed */
	control_close(ctl);
	registry_free(reg);
	if (ep >= 0)
		close(ep);
	if (sfd >= 0)
		close(sfd);
	if (tfd >= 0)
		close(tfd);
	fdstore_free(fs);
	return code;
}
