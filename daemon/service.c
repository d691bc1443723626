/* SPDX-License-Identifier: MIT */
/* service: the registry of sessions, one thread each, and the main loop (signals, control, systemd). */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "notify.h"
#include "persist.h"
#include "service.h"
#include "stats.h"

struct svc_sess {
	struct svc_sess *next;
	struct service *svc;
	uint32_t id;
	struct session *s;		/* until the thread has ended and been reaped */
	pthread_t tid;
	atomic_int ended;
	int reaped, rm_when_reaped, handoff;
	uint64_t t_end;
	char images_dir[4096], work_dir[4096], socket_path[4200], page_server[128], port[8], address[64];
	char ws_replay[4096];
	char summary[512], error[512];
	struct session_snap final;	/* once reaped */
	struct persist *persist;	/* journal + fd store, NULL when not kept */
};

struct service {
	struct service_cfg cfg;
	pthread_mutex_t lock;
	struct svc_sess *head;
	uint32_t next_id;
	unsigned total;
	int stopping;
	int efd;			/* eventfd: a session thread has ended */
	uint64_t t_start;
	int has_gid;
	gid_t gid;
	char status[256];
	int persist;			/* keep journals and uffds for a restart */
	int conns[CONTROL_MAX_CONNS];	/* control connections being served, -1 free */
	int nconns, closed;
	pthread_cond_t conns_cv;
};

static unsigned count_active(struct service *svc, unsigned *procs)
{
	struct svc_sess *x;
	unsigned n = 0;

	if (procs)
		*procs = 0;
	for (x = svc->head; x; x = x->next)
		if (!x->reaped) {
			n++;
			if (procs && x->s) {
				struct session_snap sn;
				size_t i;

				if (!session_snapshot(x->s, &sn)) {
					for (i = 0; i < sn.nprocs; i++)
						*procs += sn.procs[i].state == 0;
					free(sn.procs);
				}
			}
		}
	return n;
}

static void *sess_main(void *arg)
{
	struct svc_sess *x = arg;
	uint64_t one = 1;
	struct lp_err e;
	char line[512];
	int ret;

	ret = session_serve(x->s, &e);
	session_summary_line(x->s, line, sizeof(line));
	pthread_mutex_lock(&x->svc->lock);
	snprintf(x->summary, sizeof(x->summary), "%s", line);
	if (ret)
		snprintf(x->error, sizeof(x->error), "%s", e.msg);
	pthread_mutex_unlock(&x->svc->lock);
	if (ret)
		log_err("session %u: %s", x->id, e.msg);
	else
		log_info("session %u: %s", x->id, line);
	atomic_store(&x->ended, 1);
	if (write(x->svc->efd, &one, sizeof(one)) < 0)
		log_warn("session %u: eventfd: %s", x->id, strerror(errno));
	return NULL;
}

static void sess_free(struct svc_sess *x)
{
	if (!x)
		return;
	session_free(x->s);
	persist_close(x->persist, 1);
	free(x->final.procs);
	free(x);
}

/* Joins ended session threads, keeps their figures, frees the sessions; expires old ones. */
static void reap(struct service *svc)
{
	struct svc_sess *x, **pp;
	struct session *s;
	unsigned kept = 0;
	uint64_t now = stats_now_ns();

	for (x = svc->head; x; x = x->next) {
		if (x->reaped || !atomic_load(&x->ended))
			continue;
		pthread_join(x->tid, NULL);
		pthread_mutex_lock(&svc->lock);
		if (session_snapshot(x->s, &x->final))
			memset(&x->final, 0, sizeof(x->final));
		s = x->s;
		x->s = NULL;
		x->reaped = 1;
		x->t_end = now;
		pthread_mutex_unlock(&svc->lock);
		session_free(s);
		/* finished: nothing to resume any more */
		persist_close(x->persist, 1);
		x->persist = NULL;
	}
	pthread_mutex_lock(&svc->lock);
	for (pp = &svc->head; (x = *pp);) {
		if (x->reaped && (x->rm_when_reaped || kept >= SERVICE_KEEP_FINISHED ||
				  now - x->t_end > (uint64_t)SERVICE_KEEP_SECONDS * 1000000000ull)) {
			*pp = x->next;
			sess_free(x);
			continue;
		}
		kept += x->reaped;
		pp = &x->next;
	}
	pthread_mutex_unlock(&svc->lock);
}

static int start(struct service *svc, struct svc_sess *x, struct lp_err *e)
{
	int ret;

	pthread_mutex_lock(&svc->lock);
	if (svc->stopping) {
		pthread_mutex_unlock(&svc->lock);
		return lp_err_set(e, ESHUTDOWN, "the service is stopping: no new sessions");
	}
	if (!x->id)
		x->id = ++svc->next_id;
	else if (x->id > svc->next_id)
		svc->next_id = x->id;
	x->svc = svc;
	ret = pthread_create(&x->tid, NULL, sess_main, x);
	if (ret) {
		pthread_mutex_unlock(&svc->lock);
		return lp_err_set(e, ret, "session thread: %s", strerror(ret));
	}
	x->next = svc->head;
	svc->head = x;
	svc->total++;
	pthread_mutex_unlock(&svc->lock);
	return 0;
}

static int check_room(struct service *svc, const char *work_dir, struct lp_err *e)
{
	struct svc_sess *x;
	unsigned n = 0;
	int ret = 0;

	pthread_mutex_lock(&svc->lock);
	for (x = svc->head; x; x = x->next) {
		n++;
		if (work_dir && !x->reaped && !x->handoff && !strcmp(x->work_dir, work_dir))
			ret = lp_err_set(e, EBUSY, "session %u already has a restore socket in %s", x->id, work_dir);
	}
	if (!ret && svc->stopping)
		ret = lp_err_set(e, ESHUTDOWN, "the service is stopping: no new sessions");
	if (!ret && n >= SERVICE_MAX_SESSIONS)
		ret = lp_err_set(e, EMFILE, "%u sessions listed already (the limit)", n);
	pthread_mutex_unlock(&svc->lock);
	return ret;
}

int service_add(struct service *svc, const struct service_add *a, uid_t uid, uint32_t *id, struct lp_err *e)
{
	struct svc_sess *x;
	struct session_cfg cfg = svc->cfg.defaults;
	int ret;

	if (!a->images_dir || a->images_dir[0] != '/' || (a->work_dir && a->work_dir[0] != '/'))
		return lp_err_set(e, EINVAL, "images and work dirs must be absolute paths");
	if (a->ps_address && (!a->ps_port || a->ps_port > 65535))
		return lp_err_set(e, EINVAL, "a page server needs a port from 1 to 65535");
	if (a->ps_wire && a->ps_wire != 3 && a->ps_wire != 4)
		return lp_err_set(e, EINVAL, "page-server wire version %u (3 or 4)", a->ps_wire);
	if ((a->ws_replay && (a->ws_replay[0] != '/' || strlen(a->ws_replay) >= 4096 || a->no_ws_replay)) ||
	    a->ws_record_seconds > 86400 || (a->ws_record_seconds && !a->ws_record))
		return lp_err_set(e, EINVAL, "working set: a file to replay must be an absolute path (and not with no_ws_replay); "
					     "a recording lasts up to 86400 s");
	x = calloc(1, sizeof(*x));
	if (!x)
		return lp_err_set(e, ENOMEM, "out of memory");
	snprintf(x->images_dir, sizeof(x->images_dir), "%s", a->images_dir);
	snprintf(x->work_dir, sizeof(x->work_dir), "%s", a->work_dir ? a->work_dir : a->images_dir);
	snprintf(x->socket_path, sizeof(x->socket_path), "%s/lazy-pages.socket", x->work_dir);
	ret = check_room(svc, x->work_dir, e);
	if (ret)
		goto fail;
	cfg.images_dir = x->images_dir;
	cfg.work_dir = x->work_dir;
	if (a->ps_address) {
		/* the session keeps pointers: they point into X, which outlives it */
		snprintf(x->address, sizeof(x->address), "%s", a->ps_address);
		snprintf(x->port, sizeof(x->port), "%u", a->ps_port);
		snprintf(x->page_server, sizeof(x->page_server), strchr(x->address, ':') ? "[%s]:%u" : "%s:%u",
			 x->address, a->ps_port);
		cfg.remote = 1;
		cfg.ps_address = x->address;
		cfg.ps_port = x->port;
		if (a->ps_wire)
			cfg.ps_wire = (int)a->ps_wire;
	}
	if (a->prefetch_threads)
		cfg.prefetch_threads = a->prefetch_threads > 64 ? 64 : (int)a->prefetch_threads;
	/* recorded next to the images only: a control client does not choose where the daemon writes */
	cfg.ws_record = a->ws_record;
	cfg.ws_record_ms = a->ws_record_seconds * 1000;
	cfg.ws_no_replay = a->no_ws_replay;
	if (a->ws_replay) {
		snprintf(x->ws_replay, sizeof(x->ws_replay), "%s", a->ws_replay);
		cfg.ws_replay = x->ws_replay;
	}
	x->s = session_new(&cfg, e);
	if (!x->s) {
		ret = -EINVAL;
		goto fail;
	}
	session_allow_uid(x->s, uid);
	ret = session_listen(x->s, e);
	if (ret)
		goto fail;
	if (svc->persist) {
		char text[9000];
		struct lp_err e2;

		pthread_mutex_lock(&svc->lock);
		x->id = ++svc->next_id;
		pthread_mutex_unlock(&svc->lock);
		snprintf(text, sizeof(text), "kind=criu\nimages_dir=%s\nwork_dir=%s\nps_address=%s\nps_port=%s\nps_wire=%d\n",
			 x->images_dir, x->work_dir, x->address, x->port, cfg.ps_wire);
		if (persist_open(svc->cfg.state_dir, x->id, text, &x->persist, &e2))
			log_warn("session %u: not kept for a restart: %s", x->id, e2.msg);
		session_set_persist(x->s, x->persist);
	}
	ret = start(svc, x, e);
	if (ret)
		goto fail;
	*id = x->id;
	log_info("session %u: %s, restore socket %s%s%s", x->id, x->images_dir, x->socket_path,
		 x->page_server[0] ? ", page server " : "", x->page_server);
	return 0;
fail:
	sess_free(x);
	return ret;
}

int service_handoff(struct service *svc, int uffd, int mem_fd, const struct session_region *r, size_t n,
		    int32_t pid, pid_t peer, uint32_t *id, struct lp_err *e)
{
	struct svc_sess *x;
	int ret;

	ret = check_room(svc, NULL, e);
	x = ret ? NULL : calloc(1, sizeof(*x));
	if (!x) {
		close(uffd);
		close(mem_fd);
		return ret ? ret : lp_err_set(e, ENOMEM, "out of memory");
	}
	x->handoff = 1;
	snprintf(x->images_dir, sizeof(x->images_dir), "memory file of pid %d", (int)pid);
	x->s = session_new_handoff(&svc->cfg.defaults, uffd, mem_fd, r, n, pid, e);
	if (!x->s) {
		free(x);
		return -EINVAL;
	}
	session_set_peer(x->s, peer);
	ret = start(svc, x, e);
	if (ret) {
		sess_free(x);
		return ret;
	}
	*id = x->id;
	log_info("session %u: hand-off of pid %d, %zu regions", x->id, (int)pid, n);
	return 0;
}

int service_rm(struct service *svc, uint32_t id, struct lp_err *e)
{
	struct svc_sess *x;
	int ret = 0;

	pthread_mutex_lock(&svc->lock);
	for (x = svc->head; x && x->id != id; x = x->next)
		;
	if (!x)
		ret = lp_err_set(e, ENOENT, "no session %u", id);
	else if (x->reaped || atomic_load(&x->ended))
		x->rm_when_reaped = 1;
	else if (session_cancel(x->s))
		ret = lp_err_set(e, EBUSY, "session %u is serving processes: it cannot be removed before they are complete", id);
	else
		x->rm_when_reaped = 1;
	pthread_mutex_unlock(&svc->lock);
	if (!ret) {
		uint64_t one = 1;

		/* the main loop reaps and forgets it */
		if (write(svc->efd, &one, sizeof(one)) < 0)
			log_warn("eventfd: %s", strerror(errno));
	}
	return ret;
}

int service_list(struct service *svc, uint32_t id, struct service_info **out, size_t *n, struct lp_err *e)
{
	struct service_info *v;
	struct svc_sess *x;
	size_t k = 0, cap = 0;
	int ret = 0;

	pthread_mutex_lock(&svc->lock);
	for (x = svc->head; x; x = x->next)
		cap++;
	v = calloc(cap ? cap : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&svc->lock);
		return lp_err_set(e, ENOMEM, "out of memory");
	}
	for (x = svc->head; x; x = x->next) {
		struct service_info *i;

		if (id && x->id != id)
			continue;
		if (x->rm_when_reaped && x->reaped)
			continue;
		i = &v[k];
		i->id = x->id;
		i->handoff = x->handoff;
		memcpy(i->images_dir, x->images_dir, sizeof(i->images_dir));
		memcpy(i->work_dir, x->work_dir, sizeof(i->work_dir));
		memcpy(i->socket_path, x->handoff ? "" : x->socket_path, x->handoff ? 1 : sizeof(i->socket_path));
		memcpy(i->page_server, x->page_server, sizeof(i->page_server));
		memcpy(i->summary, x->summary, sizeof(i->summary));
		memcpy(i->error, x->error, sizeof(i->error));
		if (x->s)
			ret = session_snapshot(x->s, &i->snap);
		else {
			i->snap = x->final;
			i->snap.procs = calloc(x->final.nprocs ? x->final.nprocs : 1, sizeof(*i->snap.procs));
			if (i->snap.procs && x->final.procs)
				memcpy(i->snap.procs, x->final.procs, x->final.nprocs * sizeof(*i->snap.procs));
			else if (!i->snap.procs)
				ret = -ENOMEM;
		}
		k++;
		if (ret)
			break;
	}
	pthread_mutex_unlock(&svc->lock);
	if (ret) {
		service_info_free(v, k);
		return lp_err_set(e, -ret, "out of memory");
	}
	if (id && !k) {
		free(v);
		return lp_err_set(e, ENOENT, "no session %u", id);
	}
	*out = v;
	*n = k;
	return 0;
}

void service_info_free(struct service_info *v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i].snap.procs);
	free(v);
}

void service_status(struct service *svc, struct service_status *st)
{
	memset(st, 0, sizeof(*st));
	st->pid = getpid();
	st->uptime_s = (double)(stats_now_ns() - svc->t_start) / 1e9;
	pthread_mutex_lock(&svc->lock);
	st->active = count_active(svc, NULL);
	st->total = svc->total;
	st->stopping = svc->stopping;
	memcpy(st->line, svc->status, sizeof(st->line));
	pthread_mutex_unlock(&svc->lock);
}

static int in_groups_of(pid_t pid, gid_t gid)
{
	char path[64], line[4096], *p, *end;
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "Groups:", 7)) {
			for (p = line + 7; *p; p = end) {
				unsigned long g = strtoul(p, &end, 10);

				if (end == p)
					break;
				if ((gid_t)g == gid)
					found = 1;
			}
			break;
		}
	fclose(f);
	return found;
}

int service_conn_enter(struct service *svc, int fd)
{
	int i, ret = -EMFILE;

	pthread_mutex_lock(&svc->lock);
	if (svc->closed)
		ret = -ESHUTDOWN;
	else
		for (i = 0; i < CONTROL_MAX_CONNS; i++)
			if (svc->conns[i] < 0) {
				svc->conns[i] = fd;
				svc->nconns++;
				ret = 0;
				break;
			}
	pthread_mutex_unlock(&svc->lock);
	return ret;
}

void service_conn_leave(struct service *svc, int fd)
{
	int i;

	pthread_mutex_lock(&svc->lock);
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		if (svc->conns[i] == fd) {
			svc->conns[i] = -1;
			svc->nconns--;
			break;
		}
	pthread_cond_broadcast(&svc->conns_cv);
	pthread_mutex_unlock(&svc->lock);
}

/* Ends every control connection and waits for their threads to let go of SVC. */
static void close_conns(struct service *svc)
{
	int i;

	pthread_mutex_lock(&svc->lock);
	svc->closed = 1;
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		if (svc->conns[i] >= 0)
			shutdown(svc->conns[i], SHUT_RDWR);
	while (svc->nconns)
		pthread_cond_wait(&svc->conns_cv, &svc->lock);
	pthread_mutex_unlock(&svc->lock);
}

int service_peer_allowed(struct service *svc, pid_t pid, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == geteuid())
		return 1;
	return svc->has_gid && (gid == svc->gid || in_groups_of(pid, svc->gid));
}

static void update_status(struct service *svc)
{
	struct svc_sess *x;
	unsigned serving = 0, listening = 0, procs = 0;
	uint64_t copied = 0;
	double p99 = 0;

	pthread_mutex_lock(&svc->lock);
	for (x = svc->head; x; x = x->next) {
		struct session_snap sn;
		size_t i;

		if (x->reaped || !x->s || session_snapshot(x->s, &sn))
			continue;
		if (sn.phase == SESSION_LISTENING)
			listening++;
		else if (sn.phase == SESSION_SERVING)
			serving++;
		for (i = 0; i < sn.nprocs; i++)
			procs += sn.procs[i].state == 0;
		copied += sn.pages_copied;
		if (sn.fault_p99_us > p99)
			p99 = sn.fault_p99_us;
		free(sn.procs);
	}
	snprintf(svc->status, sizeof(svc->status),
		 "%s%u serving, %u listening, %u processes being filled, %llu pages copied, fault p99 %.0f us",
		 svc->stopping ? "stopping: waiting for live sessions; " : "", serving, listening, procs,
		 (unsigned long long)copied, p99);
	pthread_mutex_unlock(&svc->lock);
	notify_status(svc->status);
}

static void begin_stop(struct service *svc, int sig)
{
	struct svc_sess *x;
	unsigned busy = 0;

	pthread_mutex_lock(&svc->lock);
	if (!svc->stopping)
		notify_stopping();
	svc->stopping = 1;
	for (x = svc->head; x; x = x->next)
		if (!x->reaped && !atomic_load(&x->ended) && session_cancel(x->s))
			busy++;
	pthread_mutex_unlock(&svc->lock);
	if (busy)
		log_warn("%s: waiting for %u session(s) still filling processes (stopping now would leave them with missing pages)",
			 strsignal(sig), busy);
	else
		log_info("%s: stopping", strsignal(sig));
}

static const char *kv(const char *text, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	const char *p = text, *nl;

	for (; p && *p; p = nl ? nl + 1 : NULL) {
		nl = strchr(p, '\n');
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			size_t n = nl ? (size_t)(nl - p - (long)kl - 1) : strlen(p + kl + 1);

			snprintf(buf, len, "%.*s", (int)n, p + kl + 1);
			return buf;
		}
	}
	buf[0] = '\0';
	return buf;
}

/* A restarted daemon: every session in the state dir comes back with the uffds systemd kept. */
static void recover(struct service *svc, int *fds, char **names, int nfds)
{
	struct persist_rec_t *recs;
	struct dirent *de;
	struct lp_err e;
	char *text;
	size_t n;
	DIR *d;

	d = opendir(svc->cfg.state_dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end, wire[8];
		unsigned long id = strtoul(de->d_name, &end, 10);
		int pfds[4096], i, maxp = 0;
		struct session_cfg cfg = svc->cfg.defaults;
		struct svc_sess *x;

		if (!id || *end || id > UINT32_MAX)
			continue;
		if (persist_load(svc->cfg.state_dir, (uint32_t)id, &text, &recs, &n, &e)) {
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			continue;
		}
		for (i = 0; i < 4096; i++)
			pfds[i] = -1;
		for (i = 0; i < nfds; i++) {
			unsigned long sid, pi;

			if (names && names[i] && sscanf(names[i], "lp-%lu-%lu", &sid, &pi) == 2 && sid == id && pi < 4096) {
				pfds[pi] = fds[i];
				fds[i] = -1;
				if ((int)pi + 1 > maxp)
					maxp = (int)pi + 1;
			}
		}
		x = calloc(1, sizeof(*x));
		if (!x)
			goto next;
		kv(text, "images_dir", x->images_dir, sizeof(x->images_dir));
		kv(text, "work_dir", x->work_dir, sizeof(x->work_dir));
		kv(text, "ps_address", x->address, sizeof(x->address));
		kv(text, "ps_port", x->port, sizeof(x->port));
		kv(text, "ps_wire", wire, sizeof(wire));
		snprintf(x->socket_path, sizeof(x->socket_path), "%s/lazy-pages.socket", x->work_dir);
		cfg.images_dir = x->images_dir;
		cfg.work_dir = x->work_dir;
		if (x->address[0]) {
			snprintf(x->page_server, sizeof(x->page_server), "%s:%s", x->address, x->port);
			cfg.remote = 1;
			cfg.ps_address = x->address;
			cfg.ps_port = x->port;
			cfg.ps_wire = atoi(wire) == 3 ? 3 : 4;
		}
		x->id = (uint32_t)id;
		if (persist_open(svc->cfg.state_dir, x->id, NULL, &x->persist, &e)) {
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			free(x);
			goto next;
		}
		x->s = session_recover(&cfg, x->persist, recs, n, pfds, (size_t)maxp, &e);
		if (!x->s) {
			/* its processes cannot be served any more: they must not run on with zeros */
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			sess_free(x);
			goto next;
		}
		if (start(svc, x, &e)) {
			log_err("session %lu: %s", id, e.msg);
			sess_free(x);
			goto next;
		}
		log_warn("session %lu: resumed after a restart (%zu journal records)", id, n);
next:
		for (i = 0; i < 4096; i++)
			if (pfds[i] >= 0)
				close(pfds[i]);
		free(text);
		free(recs);
	}
	closedir(d);
}

int service_main(const struct service_cfg *cfg)
{
	struct service *svc = calloc(1, sizeof(*svc));
	struct epoll_event ev[16];
	struct itimerspec its = { 0 };
	struct lp_err e;
	sigset_t mask;
	uint64_t wd, tick_ns;
	int ep = -1, sfd = -1, tfd = -1, lfd = -1, n, i, code = 1, activated = 0, nlfds = 0, *lfds = NULL;
	char **lnames = NULL;
	struct group *gr;

	if (!svc)
		return 1;
	svc->cfg = *cfg;
	svc->t_start = stats_now_ns();
	pthread_mutex_init(&svc->lock, NULL);
	pthread_cond_init(&svc->conns_cv, NULL);
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		svc->conns[i] = -1;
	if (cfg->control_group) {
		gr = getgrnam(cfg->control_group);
		if (!gr) {
			log_err("--control-group %s: no such group", cfg->control_group);
			goto out;
		}
		svc->gid = gr->gr_gid;
		svc->has_gid = 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);	/* every thread started later inherits it */
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	svc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || svc->efd < 0 || tfd < 0 || ep < 0) {
		log_err("service setup: %s", strerror(errno));
		goto out;
	}
	nlfds = notify_listen_fds(&lfds, &lnames);
	for (i = 0; i < nlfds; i++)
		if (lfd < 0 && (!lnames || !lnames[i] || strncmp(lnames[i], "lp-", 3)) && notify_is_listener(lfds[i])) {
			lfd = lfds[i];
			lfds[i] = -1;
		}
	if (lfd >= 0) {
		activated = 1;
		log_info("control socket from systemd (fd %d)", lfd);
	} else if (control_listen(cfg->control_path, cfg->control_group ? svc->gid : (gid_t)-1, &lfd, &e)) {
		log_err("%s", e.msg);
		goto out;
	}
	svc->persist = cfg->state_dir && getenv("NOTIFY_SOCKET");
	if (svc->persist)
		recover(svc, lfds, lnames, nlfds);
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
	ev[0].data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev[0]);
	ev[0].data.fd = sfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev[0]);
	ev[0].data.fd = svc->efd;
	epoll_ctl(ep, EPOLL_CTL_ADD, svc->efd, &ev[0]);
	ev[0].data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev[0]);
	update_status(svc);
	notify_ready();
	log_info("service ready%s", activated ? " (socket activated)" : "");

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
					begin_stop(svc, (int)si.ssi_signo);
			} else if (fd == svc->efd) {
				if (read(svc->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_warn("eventfd: %s", strerror(errno));
				reap(svc);
			} else if (fd == tfd) {
				if (read(tfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_warn("timerfd: %s", strerror(errno));
				reap(svc);
				update_status(svc);
				if (wd)
					notify_watchdog();
			} else if (fd == lfd) {
				control_accept(svc, lfd);
			}
		}
		pthread_mutex_lock(&svc->lock);
		n = svc->stopping && !count_active(svc, NULL);
		pthread_mutex_unlock(&svc->lock);
		if (n) {
			code = 0;
			break;
		}
	}
	log_info("service stopped: %u session(s) served", svc->total);
out:
	notify_fds_free(lfds, lnames, nlfds);
	close_conns(svc);
	reap(svc);
	while (svc->head) {
		struct svc_sess *x = svc->head;

		svc->head = x->next;
		if (!x->reaped)
			pthread_join(x->tid, NULL);
		sess_free(x);
	}
	if (lfd >= 0 && !activated)
		unlink(cfg->control_path);
	if (lfd >= 0)
		close(lfd);
	if (ep >= 0)
		close(ep);
	if (sfd >= 0)
		close(sfd);
	if (tfd >= 0)
		close(tfd);
	if (svc->efd > 0)
		close(svc->efd);
	pthread_cond_destroy(&svc->conns_cv);
	pthread_mutex_destroy(&svc->lock);
	free(svc);
	return code;
}
