/* SPDX-License-Identifier: MIT */
/* registry: the sessions of lazy-pagesd --service, one thread each: added, handed off, resumed, listed, removed, reaped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fdstore.h"
#include "log.h"
#include "persist.h"
#include "registry.h"
#include "stats.h"

struct reg_sess {
	struct reg_sess *next;
	struct registry *reg;
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

struct registry {
	struct session_cfg defaults;	/* of every new session */
	const char *state_dir;
	pthread_mutex_t lock;		/* the list, its counters, the status line, each entry's texts */
	struct reg_sess *head;
	uint32_t next_id;
	unsigned total;
	int stopping;
	int efd;			/* eventfd: a session thread has ended, or one is to be forgotten */
	uint64_t t_start;
	char status[256];
	int persist;			/* keep journals and uffds for a restart */
	struct fdstore *fs;		/* the service manager's fd store (borrowed) */
};

static unsigned count_active(struct registry *reg, unsigned *procs)
{
	struct reg_sess *x;
	unsigned n = 0;

	if (procs)
		*procs = 0;
	for (x = reg->head; x; x = x->next)
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
	struct reg_sess *x = arg;
	uint64_t one = 1;
	struct lp_err e;
	char line[512];
	int ret;

	ret = session_serve(x->s, &e);
	session_summary_line(x->s, line, sizeof(line));
	pthread_mutex_lock(&x->reg->lock);
	snprintf(x->summary, sizeof(x->summary), "%s", line);
	if (ret)
		snprintf(x->error, sizeof(x->error), "%s", e.msg);
	pthread_mutex_unlock(&x->reg->lock);
	if (ret)
		log_err("session %u: %s", x->id, e.msg);
	else
		log_info("session %u: %s", x->id, line);
	atomic_store(&x->ended, 1);
	if (write(x->reg->efd, &one, sizeof(one)) < 0)
		log_warn("session %u: eventfd: %s", x->id, strerror(errno));
	return NULL;
}

static void sess_free(struct reg_sess *x)
{
	if (!x)
		return;
	session_free(x->s);
	persist_close(x->persist, 1);
	free(x->final.procs);
	free(x);
}

/* Joins ended session threads, keeps their figures, frees the sessions; expires old ones. */
void registry_reap(struct registry *reg)
{
	struct reg_sess *x, **pp;
	struct session *s;
	unsigned kept = 0;
	uint64_t now = stats_now_ns(), v;

	if (read(reg->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("eventfd: %s", strerror(errno));

	for (x = reg->head; x; x = x->next) {
		if (x->reaped || !atomic_load(&x->ended))
			continue;
		pthread_join(x->tid, NULL);
		pthread_mutex_lock(&reg->lock);
		if (session_snapshot(x->s, &x->final))
			memset(&x->final, 0, sizeof(x->final));
		s = x->s;
		x->s = NULL;
		x->reaped = 1;
		x->t_end = now;
		pthread_mutex_unlock(&reg->lock);
		session_free(s);
		/* finished: nothing to resume any more */
		persist_close(x->persist, 1);
		x->persist = NULL;
	}
	pthread_mutex_lock(&reg->lock);
	for (pp = &reg->head; (x = *pp);) {
		if (x->reaped && (x->rm_when_reaped || kept >= REGISTRY_KEEP_FINISHED ||
				  now - x->t_end > (uint64_t)REGISTRY_KEEP_SECONDS * 1000000000ull)) {
			*pp = x->next;
			sess_free(x);
			continue;
		}
		kept += x->reaped;
		pp = &x->next;
	}
	pthread_mutex_unlock(&reg->lock);
}

static int start(struct registry *reg, struct reg_sess *x, struct lp_err *e)
{
	int ret;

	pthread_mutex_lock(&reg->lock);
	if (reg->stopping) {
		pthread_mutex_unlock(&reg->lock);
		return lp_err_set(e, ESHUTDOWN, "the service is stopping: no new sessions");
	}
	if (!x->id)
		x->id = ++reg->next_id;
	else if (x->id > reg->next_id)
		reg->next_id = x->id;
	x->reg = reg;
	ret = pthread_create(&x->tid, NULL, sess_main, x);
	if (ret) {
		pthread_mutex_unlock(&reg->lock);
		return lp_err_set(e, ret, "session thread: %s", strerror(ret));
	}
	x->next = reg->head;
	reg->head = x;
	reg->total++;
	pthread_mutex_unlock(&reg->lock);
	return 0;
}

static int check_room(struct registry *reg, const char *work_dir, struct lp_err *e)
{
	struct reg_sess *x;
	unsigned n = 0;
	int ret = 0;

	pthread_mutex_lock(&reg->lock);
	for (x = reg->head; x; x = x->next) {
		n++;
		if (work_dir && !x->reaped && !x->handoff && !strcmp(x->work_dir, work_dir))
			ret = lp_err_set(e, EBUSY, "session %u already has a restore socket in %s", x->id, work_dir);
	}
	if (!ret && reg->stopping)
		ret = lp_err_set(e, ESHUTDOWN, "the service is stopping: no new sessions");
	if (!ret && n >= REGISTRY_MAX_SESSIONS)
		ret = lp_err_set(e, EMFILE, "%u sessions listed already (the limit)", n);
	pthread_mutex_unlock(&reg->lock);
	return ret;
}

/*
 * A session of a daemon a service manager may restart: its journal, and
 * a slot in the fd store for each process of its pstree.img. Refused if
 * either cannot be had: its processes would be lost with the daemon.
 */
static int keep_session(struct registry *reg, struct reg_sess *x, const struct session_cfg *cfg, struct lp_err *e)
{
	size_t n = session_nr_tasks(x->s);
	char text[9000];
	struct lp_err e2;
	int ret;

	pthread_mutex_lock(&reg->lock);
	x->id = ++reg->next_id;
	pthread_mutex_unlock(&reg->lock);
	snprintf(text, sizeof(text), "kind=criu\nimages_dir=%s\nwork_dir=%s\nps_address=%s\nps_port=%s\nps_wire=%d\n",
		 x->images_dir, x->work_dir, x->address, x->port, cfg->ps_wire);
	ret = persist_open(reg->state_dir, x->id, text, reg->fs, &x->persist, &e2);
	if (ret && fdstore_kind(reg->fs) == FDSTORE_UNKNOWN) {
		/* a service manager that keeps nothing we know of: as without one */
		log_warn("session %u: not kept for a restart: %s", x->id, e2.msg);
		return 0;
	}
	if (ret)
		ret = lp_err_set(e, -ret, "session refused: it could not be kept for a restart of the daemon: %s", e2.msg);
	else
		session_set_persist(x->s, x->persist);
	if (!ret && persist_reserve(x->persist, n > UINT32_MAX ? UINT32_MAX : (unsigned)n)) {
		unsigned size = fdstore_size(reg->fs), used = fdstore_used(reg->fs);

		if (!size)
			ret = lp_err_set(e, ENOSPC, "session refused: the service manager keeps no fds for this service "
					 "(FileDescriptorStoreMax=0), so a restart of the daemon would leave the %zu process(es) "
					 "of %s/pstree.img without their missing pages", n, x->images_dir);
		else
			ret = lp_err_set(e, ENOSPC, "session refused: its %zu process(es) (%s/pstree.img) do not fit in the "
					 "fd store: %u of its %u slots (FileDescriptorStoreMax=) are taken, and a uffd it "
					 "cannot keep is lost with the daemon", n, x->images_dir, used, size);
	}
	if (ret)
		log_warn("%s", e->msg);
	return ret;
}

int registry_add(struct registry *reg, const struct registry_add *a, uid_t uid, uint32_t *id, struct lp_err *e)
{
	struct reg_sess *x;
	struct session_cfg cfg = reg->defaults;
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
	ret = check_room(reg, x->work_dir, e);
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
		ret = lp_err_errno(e);
		goto fail;
	}
	session_allow_uid(x->s, uid);
	if (reg->persist) {
		ret = keep_session(reg, x, &cfg, e);
		if (ret)
			goto fail;
	}
	ret = session_listen(x->s, e);
	if (ret)
		goto fail;
	ret = start(reg, x, e);
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

/*
 * A hand-off kept for a restart: its regions in the session file, its
 * memory file and uffd in the fd store (two slots). Refused if it cannot be.
 */
static int keep_handoff(struct registry *reg, struct reg_sess *x, int mem_fd, const struct session_region *r,
			size_t n, int32_t pid, struct lp_err *e)
{
	size_t cap = 128 + n * 64, len, i;
	char *text = malloc(cap);
	struct lp_err e2;
	int ret;

	if (!text)
		return lp_err_set(e, ENOMEM, "out of memory");
	len = (size_t)snprintf(text, cap, "kind=handoff\npid=%d\nregions=%zu\n", (int)pid, n);
	for (i = 0; i < n && len < cap; i++)
		len += (size_t)snprintf(text + len, cap - len, "region=%llx,%llx,%llx\n", (unsigned long long)r[i].addr,
					(unsigned long long)r[i].len, (unsigned long long)r[i].offset);
	pthread_mutex_lock(&reg->lock);
	x->id = ++reg->next_id;
	pthread_mutex_unlock(&reg->lock);
	ret = persist_open(reg->state_dir, x->id, text, reg->fs, &x->persist, &e2);
	free(text);
	if (ret && fdstore_kind(reg->fs) == FDSTORE_UNKNOWN) {
		log_warn("session %u: not kept for a restart: %s", x->id, e2.msg);
		return 0;
	}
	if (ret)
		ret = lp_err_set(e, -ret, "hand-off refused: it could not be kept for a restart of the daemon: %s", e2.msg);
	else if (persist_reserve(x->persist, 2) || persist_store_named(x->persist, "mem", mem_fd))
		ret = lp_err_set(e, ENOSPC, "hand-off refused: its userfaultfd and memory file do not fit in the fd store "
				 "(%u of its %u slots, FileDescriptorStoreMax=, are taken), and a uffd it cannot keep is "
				 "lost with the daemon", fdstore_used(reg->fs), fdstore_size(reg->fs));
	if (ret)
		log_warn("%s", e->msg);
	return ret;
}

int registry_handoff(struct registry *reg, int uffd, int mem_fd, const struct session_region *r, size_t n,
		    int32_t pid, pid_t peer, uint32_t *id, struct lp_err *e)
{
	struct reg_sess *x;
	int ret, keep;

	ret = check_room(reg, NULL, e);
	x = ret ? NULL : calloc(1, sizeof(*x));
	if (!x) {
		close(uffd);
		close(mem_fd);
		return ret ? ret : lp_err_set(e, ENOMEM, "out of memory");
	}
	x->handoff = 1;
	snprintf(x->images_dir, sizeof(x->images_dir), "memory file of pid %d", (int)pid);
	/* the session takes MEM_FD: a copy goes to the fd store once it has checked what it got */
	keep = reg->persist ? fcntl(mem_fd, F_DUPFD_CLOEXEC, 3) : -1;
	x->s = session_new_handoff(&reg->defaults, uffd, mem_fd, r, n, pid, e);
	if (!x->s) {
		if (keep >= 0)
			close(keep);
		free(x);
		return lp_err_errno(e);
	}
	if (reg->persist) {
		ret = keep < 0 ? lp_err_set(e, errno, "hand-off refused: the memory file: %s", strerror(errno))
			       : keep_handoff(reg, x, keep, r, n, pid, e);
		if (keep >= 0)
			close(keep);
		if (ret) {
			sess_free(x);
			return ret;
		}
		session_set_persist(x->s, x->persist);
	}
	session_set_peer(x->s, peer);
	ret = start(reg, x, e);
	if (ret) {
		sess_free(x);
		return ret;
	}
	*id = x->id;
	log_info("session %u: hand-off of pid %d, %zu regions", x->id, (int)pid, n);
	return 0;
}

int registry_rm(struct registry *reg, uint32_t id, struct lp_err *e)
{
	struct reg_sess *x;
	int ret = 0;

	pthread_mutex_lock(&reg->lock);
	for (x = reg->head; x && x->id != id; x = x->next)
		;
	if (!x)
		ret = lp_err_set(e, ENOENT, "no session %u", id);
	else if (x->reaped || atomic_load(&x->ended))
		x->rm_when_reaped = 1;
	else if (session_cancel(x->s))
		ret = lp_err_set(e, EBUSY, "session %u is serving processes: it cannot be removed before they are complete", id);
	else
		x->rm_when_reaped = 1;
	pthread_mutex_unlock(&reg->lock);
	if (!ret) {
		uint64_t one = 1;

		/* the main loop reaps and forgets it */
		if (write(reg->efd, &one, sizeof(one)) < 0)
			log_warn("eventfd: %s", strerror(errno));
	}
	return ret;
}

int registry_list(struct registry *reg, uint32_t id, struct registry_info **out, size_t *n, struct lp_err *e)
{
	struct registry_info *v;
	struct reg_sess *x;
	size_t k = 0, cap = 0;
	int ret = 0;

	pthread_mutex_lock(&reg->lock);
	for (x = reg->head; x; x = x->next)
		cap++;
	v = calloc(cap ? cap : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&reg->lock);
		return lp_err_set(e, ENOMEM, "out of memory");
	}
	for (x = reg->head; x; x = x->next) {
		struct registry_info *i;

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
	pthread_mutex_unlock(&reg->lock);
	if (ret) {
		registry_info_free(v, k);
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

void registry_info_free(struct registry_info *v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i].snap.procs);
	free(v);
}

void registry_status(struct registry *reg, struct registry_status *st)
{
	memset(st, 0, sizeof(*st));
	st->pid = getpid();
	st->uptime_s = (double)(stats_now_ns() - reg->t_start) / 1e9;
	pthread_mutex_lock(&reg->lock);
	st->active = count_active(reg, NULL);
	st->total = reg->total;
	st->stopping = reg->stopping;
	memcpy(st->line, reg->status, sizeof(st->line));
	pthread_mutex_unlock(&reg->lock);
}

void registry_update_status(struct registry *reg, char *line, size_t len)
{
	struct reg_sess *x;
	unsigned serving = 0, listening = 0, procs = 0;
	uint64_t copied = 0;
	double p99 = 0;

	pthread_mutex_lock(&reg->lock);
	for (x = reg->head; x; x = x->next) {
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
	snprintf(reg->status, sizeof(reg->status),
		 "%s%u serving, %u listening, %u processes being filled, %llu pages copied, fault p99 %.0f us",
		 reg->stopping ? "stopping: waiting for live sessions; " : "", serving, listening, procs,
		 (unsigned long long)copied, p99);
	snprintf(line, len, "%s", reg->status);
	pthread_mutex_unlock(&reg->lock);
}

unsigned registry_stop(struct registry *reg)
{
	struct reg_sess *x;
	unsigned busy = 0;

	pthread_mutex_lock(&reg->lock);
	reg->stopping = 1;
	for (x = reg->head; x; x = x->next)
		if (!x->reaped && !atomic_load(&x->ended) && session_cancel(x->s))
			busy++;
	pthread_mutex_unlock(&reg->lock);
	return busy;
}

bool registry_idle(struct registry *reg)
{
	bool idle;

	pthread_mutex_lock(&reg->lock);
	idle = reg->stopping && !count_active(reg, NULL);
	pthread_mutex_unlock(&reg->lock);
	return idle;
}

unsigned registry_total(struct registry *reg)
{
	unsigned n;

	pthread_mutex_lock(&reg->lock);
	n = reg->total;
	pthread_mutex_unlock(&reg->lock);
	return n;
}

int registry_eventfd(const struct registry *reg)
{
	return reg->efd;
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

/* A hand-off's session file: its pid and regions (malloc'ed, *N of them). */
static int handoff_text(const char *text, int32_t *pid, struct session_region **out, size_t *n)
{
	struct session_region *r;
	unsigned long long a, l, o;
	const char *p;
	char buf[32];
	size_t k = 0, want;

	*pid = (int32_t)atoi(kv(text, "pid", buf, sizeof(buf)));
	want = (size_t)strtoul(kv(text, "regions", buf, sizeof(buf)), NULL, 10);
	if (!want || want > SESSION_MAX_REGIONS)
		return -EINVAL;
	r = calloc(want, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (p = strstr(text, "\nregion="); p && k < want; p = strstr(p + 1, "\nregion="))
		if (sscanf(p + 8, "%llx,%llx,%llx", &a, &l, &o) == 3)
			r[k++] = (struct session_region){ .addr = a, .len = l, .offset = o };
	if (k != want) {
		free(r);
		return -EINVAL;
	}
	*out = r;
	*n = k;
	return 0;
}

/*
 * The fds systemd gave back for session ID: the uffds lp-ID-K in *PFDS
 * (malloc'ed, indexed by process, -1 where none; *NP long) and a memory
 * file lp-ID-mem in *MEM (-1 if none). Taken from FDS.
 */
static int session_fds(uint32_t id, int *fds, char **names, int nfds, int **pfds, size_t *np, int *mem)
{
	unsigned long sid, pi;
	char tail[8];
	size_t max = 0;
	int i, *v;

	*mem = -1;
	for (i = 0; i < nfds; i++)
		if (fds[i] >= 0 && names && names[i] && sscanf(names[i], "lp-%lu-%lu", &sid, &pi) == 2 && sid == id &&
		    pi < 65536 && pi + 1 > max)
			max = pi + 1;
	v = malloc((max ? max : 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(v, -1, (max ? max : 1) * sizeof(*v));
	for (i = 0; i < nfds; i++) {
		if (fds[i] < 0 || !names || !names[i])
			continue;
		if (sscanf(names[i], "lp-%lu-%lu", &sid, &pi) == 2 && sid == id && pi < max) {
			if (v[pi] >= 0)
				close(v[pi]);
			v[pi] = fds[i];
			fds[i] = -1;
		} else if (sscanf(names[i], "lp-%lu-%7s", &sid, tail) == 2 && sid == id && !strcmp(tail, "mem")) {
			if (*mem >= 0)
				close(*mem);
			*mem = fds[i];
			fds[i] = -1;
		}
	}
	*pfds = v;
	*np = max;
	return 0;
}

/* A restarted daemon: every session in the state dir comes back with the uffds systemd kept. */
void registry_recover(struct registry *reg, int *fds, char **names, int nfds)
{
	struct persist_rec_t *recs;
	struct dirent *de;
	struct lp_err e;
	char *text;
	size_t n;
	DIR *d;

	d = opendir(reg->state_dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end, wire[8], kind[16];
		unsigned long id = strtoul(de->d_name, &end, 10);
		struct session_cfg cfg = reg->defaults;
		struct session_handoff h = { .mem_fd = -1 };
		struct session_region *regions = NULL;
		struct reg_sess *x = NULL;
		int *pfds = NULL, mem = -1;
		int32_t pid = 0;
		size_t np = 0, i;

		if (!id || *end || id > UINT32_MAX)
			continue;
		if (persist_load(reg->state_dir, (uint32_t)id, &text, &recs, &n, &e)) {
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			continue;
		}
		if (session_fds((uint32_t)id, fds, names, nfds, &pfds, &np, &mem) || !(x = calloc(1, sizeof(*x)))) {
			session_abandon_journal(recs, n, "out of memory while resuming its session");
			goto next;
		}
		x->id = (uint32_t)id;
		kv(text, "kind", kind, sizeof(kind));
		if (!strcmp(kind, "handoff")) {
			x->handoff = 1;
			if (handoff_text(text, &pid, &regions, &h.n) || mem < 0) {
				log_err("session %lu: cannot be resumed: %s", id, mem < 0 ? "its memory file was not kept in the fd store"
											  : "its session file lists no valid regions");
				session_abandon_journal(recs, n, "its hand-off cannot be resumed");
				goto next;
			}
			snprintf(x->images_dir, sizeof(x->images_dir), "memory file of pid %d", (int)pid);
			h.r = regions;
			h.mem_fd = mem;
			mem = -1;	/* session_recover takes it */
		} else {
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
		}
		if (persist_open(reg->state_dir, x->id, NULL, reg->fs, &x->persist, &e)) {
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			session_abandon_journal(recs, n, "its session cannot be resumed");
			if (h.mem_fd >= 0)
				close(h.mem_fd);
			goto next;
		}
		if (x->handoff) {
			persist_adopt(x->persist, 1);
			persist_store_named(x->persist, "mem", -1);
		}
		x->s = session_recover(&cfg, x->handoff ? &h : NULL, x->persist, recs, n, pfds, np, &e);
		if (!x->s) {
			/* its processes cannot be served any more: they must not run on with zeros */
			log_err("session %lu: cannot be resumed: %s", id, e.msg);
			goto next;
		}
		if (start(reg, x, &e)) {
			/* sess_free closes the uffds: the processes go first */
			log_err("session %lu: %s", id, e.msg);
			session_abandon_journal(recs, n, "its session cannot be resumed");
			goto next;
		}
		log_warn("session %lu: resumed after a restart (%zu journal records)", id, n);
		x = NULL;	/* the service has it */
next:
		sess_free(x);
		for (i = 0; pfds && i < np; i++)
			if (pfds[i] >= 0)
				close(pfds[i]);
		if (mem >= 0)
			close(mem);
		free(pfds);
		free(regions);
		free(text);
		free(recs);
	}
	closedir(d);
}

int registry_new(const struct session_cfg *defaults, const char *state_dir, struct fdstore *fs, struct registry **out,
		 struct lp_err *e)
{
	struct registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return lp_err_set(e, ENOMEM, "out of memory");
	reg->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (reg->efd < 0) {
		int ret = lp_err_set(e, errno, "eventfd: %s", strerror(errno));

		free(reg);
		return ret;
	}
	reg->defaults = *defaults;
	reg->state_dir = state_dir;
	reg->fs = fs;
	reg->persist = state_dir && fdstore_kind(fs) != FDSTORE_NONE;
	reg->t_start = stats_now_ns();
	pthread_mutex_init(&reg->lock, NULL);
	*out = reg;
	return 0;
}

bool registry_keeps(const struct registry *reg)
{
	return reg->persist;
}

void registry_free(struct registry *reg)
{
	if (!reg)
		return;
	registry_reap(reg);
	while (reg->head) {
		struct reg_sess *x = reg->head;

		reg->head = x->next;
		if (!x->reaped)
			pthread_join(x->tid, NULL);
		sess_free(x);
	}
	close(reg->efd);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}
