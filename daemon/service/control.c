/* SPDX-License-Identifier: MIT */
/* control: the control socket, its peers and connections (one thread each); framed protobuf requests, answered in order. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "control.pb-c.h"
#include "io.h"
#include "log.h"
#include "registry.h"

struct control {
	int lfd;
	int bound;			/* LFD is ours (not systemd's): PATH is removed at the end */
	char path[108];
	int has_gid;
	gid_t gid;			/* --control-group: its members may connect too */
	pthread_mutex_t lock;		/* the connection table */
	pthread_cond_t conns_cv;
	int conns[CONTROL_MAX_CONNS];	/* connections being served, -1 free */
	int nconns, closed;
};

struct conn {
	struct control *ctl;
	struct registry *reg;
	int fd;
	pid_t pid;
	uid_t uid;
	char name[64];
};

static int mkdir_parent(const char *path, struct lp_err *e)
{
	char *dup = strdup(path), *dir;
	int ret = 0;

	if (!dup)
		return lp_err_set(e, ENOMEM, "out of memory");
	dir = dirname(dup);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		ret = lp_err_set(e, errno, "%s: mkdir: %s", dir, strerror(errno));
	free(dup);
	return ret;
}

static int control_listen(const char *path, gid_t gid, int *out, struct lp_err *e)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	mode_t old;
	int fd, ret;

	if (strlen(path) >= sizeof(sun.sun_path))
		return lp_err_set(e, ENAMETOOLONG, "%s: longer than %zu bytes", path, sizeof(sun.sun_path) - 1);
	strcpy(sun.sun_path, path);
	ret = mkdir_parent(path, e);
	if (ret)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lp_err_set(e, errno, "socket: %s", strerror(errno));
	if (unlink(path) < 0 && errno != ENOENT) {
		ret = lp_err_set(e, errno, "%s: cannot remove the old socket: %s", path, strerror(errno));
		goto fail;
	}
	old = umask(0077);
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (ret < 0) {
		ret = lp_err_set(e, errno, "%s: bind: %s", path, strerror(errno));
		goto fail;
	}
	if (gid == (gid_t)-1 && chmod(path, 0600) < 0) {
		ret = lp_err_set(e, errno, "%s: chmod: %s", path, strerror(errno));
		goto fail;
	}
	if (gid != (gid_t)-1 && (chown(path, (uid_t)-1, gid) < 0 || chmod(path, 0660) < 0)) {
		ret = lp_err_set(e, errno, "%s: giving it to group %u: %s", path, (unsigned)gid, strerror(errno));
		goto fail;
	}
	if (listen(fd, 64) < 0) {
		ret = lp_err_set(e, errno, "%s: listen: %s", path, strerror(errno));
		goto fail;
	}
	*out = fd;
	return 0;
fail:
	close(fd);
	return ret;
}

/* Reads one frame; file descriptors sent with its first bytes go to FDS (at most 2 kept). */
static int read_frame(int fd, uint8_t **out, uint32_t *len, int *fds, int *nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	uint8_t hdr[4];
	size_t got = 0;
	struct cmsghdr *c;
	uint8_t *buf;
	int ret, i, k, *p;

	while (got < sizeof(hdr)) {
		struct iovec iov = { .iov_base = hdr + got, .iov_len = sizeof(hdr) - got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				     .msg_controllen = sizeof(ctl.buf) };
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : (got ? -EPIPE : -ENODATA);
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			p = (int *)CMSG_DATA(c);
			k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (i = 0; i < k; i++) {
				if (*nfds < 2)
					fds[(*nfds)++] = p[i];
				else
					close(p[i]);
			}
		}
		got += (size_t)n;
	}
	*len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	if (*len == 0 || *len > CONTROL_MAX_FRAME)
		return -EMSGSIZE;
	buf = malloc(*len);
	if (!buf)
		return -ENOMEM;
	ret = io_read_full(fd, buf, *len);
	if (ret) {
		free(buf);
		return ret;
	}
	*out = buf;
	return 0;
}

static int write_frame(int fd, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len + 4);
	int ret;

	if (!buf)
		return -ENOMEM;
	buf[0] = (uint8_t)len;
	buf[1] = (uint8_t)(len >> 8);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 24);
	protobuf_c_message_pack(m, buf + 4);
	ret = io_write_full(fd, buf, len + 4);
	free(buf);
	return ret;
}

static LpSessionState phase_of(enum session_phase p)
{
	switch (p) {
	case SESSION_SERVING:
		return LP_SESSION_STATE__LP_SESSION_SERVING;
	case SESSION_DONE:
		return LP_SESSION_STATE__LP_SESSION_DONE;
	case SESSION_FAILED:
		return LP_SESSION_STATE__LP_SESSION_FAILED;
	default:
		return LP_SESSION_STATE__LP_SESSION_LISTENING;
	}
}

/* Fills RESP's sessions from V; the arrays are freed by free_sessions. */
static int put_sessions(LpResponse *resp, struct registry_info *v, size_t n)
{
	LpSessionInfo **si = calloc(n ? n : 1, sizeof(*si));
	size_t i, j;

	if (!si)
		return -ENOMEM;
	resp->sessions = si;
	for (i = 0; i < n; i++) {
		LpSessionInfo *s = calloc(1, sizeof(*s));
		struct session_snap *sn = &v[i].snap;

		if (!s)
			return -ENOMEM;
		lp_session_info__init(s);
		si[i] = s;
		resp->n_sessions = i + 1;
		s->id = v[i].id;
		s->state = phase_of(sn->phase);
		s->kind = v[i].handoff ? "handoff" : "criu";
		s->images_dir = v[i].images_dir;
		s->work_dir = v[i].work_dir[0] ? v[i].work_dir : NULL;
		s->socket_path = v[i].socket_path[0] ? v[i].socket_path : NULL;
		s->page_server = v[i].page_server[0] ? v[i].page_server : NULL;
		s->summary = v[i].summary[0] ? v[i].summary : NULL;
		s->error = v[i].error[0] ? v[i].error : NULL;
#define SET(f, val) do { s->has_##f = 1; s->f = (val); } while (0)
		SET(pages_copied, sn->pages_copied);
		SET(zero_pages, sn->zero_pages);
		SET(faults, sn->faults);
		SET(fault_p50_us, sn->fault_p50_us);
		SET(fault_p99_us, sn->fault_p99_us);
		SET(seconds, sn->seconds);
		SET(remote_bytes, sn->remote_bytes);
		SET(remote_inflight, sn->inflight > 0 ? (uint64_t)sn->inflight : 0);
		SET(fault_rtt_p50_us, sn->rtt_p50_us);
		SET(fault_rtt_p99_us, sn->rtt_p99_us);
#undef SET
		s->procs = calloc(sn->nprocs ? sn->nprocs : 1, sizeof(*s->procs));
		if (!s->procs)
			return -ENOMEM;
		for (j = 0; j < sn->nprocs; j++) {
			LpProcInfo *p = calloc(1, sizeof(*p));

			if (!p)
				return -ENOMEM;
			lp_proc_info__init(p);
			s->procs[j] = p;
			s->n_procs = j + 1;
			p->pid = sn->procs[j].pid;
			p->total_pages = sn->procs[j].total;
			p->remaining_pages = sn->procs[j].remaining;
			p->faults = sn->procs[j].faults;
			p->has_fault_p99_us = 1;
			p->fault_p99_us = sn->procs[j].fault_p99_us;
			p->state = (uint32_t)sn->procs[j].state;
			p->has_forked = 1;
			p->forked = sn->procs[j].forked;
		}
	}
	return 0;
}

static void free_sessions(LpResponse *resp)
{
	size_t i, j;

	for (i = 0; i < resp->n_sessions; i++) {
		for (j = 0; j < resp->sessions[i]->n_procs; j++)
			free(resp->sessions[i]->procs[j]);
		free(resp->sessions[i]->procs);
		free(resp->sessions[i]);
	}
	free(resp->sessions);
}

static int do_handoff(struct conn *c, const LpRequest *req, int *fds, int *nfds, uint32_t *id, struct lp_err *e)
{
	const LpHandoff *h = req->handoff;
	struct session_region *r;
	size_t i;
	int ret;

	if (!h)
		return lp_err_set(e, EINVAL, "hand-off without its regions");
	if (*nfds != 2)
		return lp_err_set(e, EINVAL, "hand-off needs 2 file descriptors (uffd, memory file), got %d", *nfds);
	if (h->n_regions == 0 || h->n_regions > SESSION_MAX_REGIONS)
		return lp_err_set(e, EINVAL, "hand-off with %zu regions (1 to %d)", h->n_regions, SESSION_MAX_REGIONS);
	r = calloc(h->n_regions, sizeof(*r));
	if (!r)
		return lp_err_set(e, ENOMEM, "out of memory");
	for (i = 0; i < h->n_regions; i++) {
		r[i].addr = h->regions[i]->addr;
		r[i].len = h->regions[i]->len;
		r[i].offset = h->regions[i]->offset;
	}
	*nfds = 0;	/* the registry takes both */
	ret = registry_handoff(c->reg, fds[0], fds[1], r, h->n_regions, h->has_pid ? h->pid : 0, c->pid, id, e);
	free(r);
	return ret;
}

static void dispatch(struct conn *c, const LpRequest *req, int *fds, int *nfds, LpResponse *resp,
		     struct registry_info **info, size_t *ninfo, LpDaemonStatus *ds, struct registry_status *st,
		     struct lp_err *e)
{
	struct registry_add a = { 0 };
	uint32_t id = 0;
	int ret = 0;

	if (req->version != CONTROL_VERSION) {
		ret = lp_err_set(e, EPROTONOSUPPORT, "control protocol version %u (this daemon speaks %d)",
				 req->version, CONTROL_VERSION);
		goto out;
	}
	if (req->op != LP_OP__LP_OP_HANDOFF && *nfds) {
		ret = lp_err_set(e, EINVAL, "file descriptors sent with a request that takes none");
		goto out;
	}
	switch (req->op) {
	case LP_OP__LP_OP_STATUS:
		registry_status(c->reg, st);
		ds->pid = st->pid;
		ds->uptime_s = st->uptime_s;
		ds->sessions_active = st->active;
		ds->sessions_total = st->total;
		ds->line = st->line;
		ds->has_stopping = 1;
		ds->stopping = st->stopping;
		resp->status = ds;
		break;
	case LP_OP__LP_OP_SESSION_ADD:
		if (!req->add) {
			ret = lp_err_set(e, EINVAL, "session add without its arguments");
			break;
		}
		a.images_dir = req->add->images_dir;
		a.work_dir = req->add->work_dir;
		a.ps_address = req->add->ps_address;
		a.ps_port = req->add->has_ps_port ? req->add->ps_port : 0;
		a.ps_wire = req->add->has_ps_wire ? req->add->ps_wire : 0;
		a.prefetch_threads = req->add->has_prefetch_threads ? req->add->prefetch_threads : 0;
		a.ws_record = req->add->has_ws_record && req->add->ws_record;
		a.ws_record_seconds = req->add->has_ws_record_seconds ? req->add->ws_record_seconds : 0;
		a.ws_replay = req->add->ws_replay;
		a.no_ws_replay = req->add->has_no_ws_replay && req->add->no_ws_replay;
		ret = registry_add(c->reg, &a, c->uid, &id, e);
		break;
	case LP_OP__LP_OP_SESSION_RM:
		if (!req->has_session)
			ret = lp_err_set(e, EINVAL, "session rm without a session id");
		else
			ret = registry_rm(c->reg, req->session, e);
		break;
	case LP_OP__LP_OP_SESSION_LIST:
	case LP_OP__LP_OP_STATS:
		ret = registry_list(c->reg, req->has_session ? req->session : 0, info, ninfo, e);
		if (!ret && put_sessions(resp, *info, *ninfo))
			ret = lp_err_set(e, ENOMEM, "out of memory");
		break;
	case LP_OP__LP_OP_HANDOFF:
		ret = do_handoff(c, req, fds, nfds, &id, e);
		break;
	default:
		ret = lp_err_set(e, EOPNOTSUPP, "unknown operation %d", req->op);
	}
	if (!ret && id) {
		resp->has_session = 1;
		resp->session = id;
	}
out:
	resp->error = ret;
	if (ret)
		resp->message = e->msg;
}

/* One connection's requests until EOF or a framing error. */
static void conn_serve(struct conn *c)
{
	int fds[2], nfds, ret, i;
	uint8_t *buf = NULL;
	uint32_t len = 0;

	for (;;) {
		LpResponse resp = LP_RESPONSE__INIT;
		LpDaemonStatus ds = LP_DAEMON_STATUS__INIT;
		struct registry_status st;
		struct registry_info *info = NULL;
		size_t ninfo = 0;
		struct lp_err e;
		LpRequest *req;

		nfds = 0;
		ret = read_frame(c->fd, &buf, &len, fds, &nfds);
		if (ret) {
			if (ret != -ENODATA)
				log_warn("control %s: %s", c->name,
					 ret == -EMSGSIZE ? "frame length 0 or over 1 MiB" : strerror(-ret));
			for (i = 0; i < nfds; i++)
				close(fds[i]);
			break;
		}
		req = lp_request__unpack(NULL, len, buf);
		free(buf);
		resp.version = CONTROL_VERSION;
		if (!req) {
			resp.error = lp_err_set(&e, EPROTO, "malformed request (%u bytes)", len);
			resp.message = e.msg;
			log_warn("control %s: %s", c->name, e.msg);
		} else {
			dispatch(c, req, fds, &nfds, &resp, &info, &ninfo, &ds, &st, &e);
			lp_request__free_unpacked(req, NULL);
		}
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		ret = write_frame(c->fd, &resp.base);
		free_sessions(&resp);
		registry_info_free(info, ninfo);
		if (ret || !req)
			break;
	}
}

void control_serve(struct registry *reg, int fd, pid_t pid, uid_t uid)
{
	struct conn c = { .reg = reg, .fd = fd, .pid = pid, .uid = uid };

	snprintf(c.name, sizeof(c.name), "peer pid %d uid %u", (int)pid, (unsigned)uid);
	conn_serve(&c);
}

/* The connection table: enter fails (-EMFILE) past CONTROL_MAX_CONNS or (-ESHUTDOWN) once closing. */
static int conn_enter(struct control *ctl, int fd)
{
	int i, ret = -EMFILE;

	pthread_mutex_lock(&ctl->lock);
	if (ctl->closed)
		ret = -ESHUTDOWN;
	else
		for (i = 0; i < CONTROL_MAX_CONNS; i++)
			if (ctl->conns[i] < 0) {
				ctl->conns[i] = fd;
				ctl->nconns++;
				ret = 0;
				break;
			}
	pthread_mutex_unlock(&ctl->lock);
	return ret;
}

/* Before FD is closed: control_close must never shut down a number reused by another file. */
static void conn_leave(struct control *ctl, int fd)
{
	int i;

	pthread_mutex_lock(&ctl->lock);
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		if (ctl->conns[i] == fd) {
			ctl->conns[i] = -1;
			ctl->nconns--;
			break;
		}
	pthread_cond_broadcast(&ctl->conns_cv);
	pthread_mutex_unlock(&ctl->lock);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;

	conn_serve(c);
	conn_leave(c->ctl, c->fd);
	close(c->fd);
	free(c);
	return NULL;
}

static void refuse(int fd, const char *msg, int err)
{
	LpResponse resp = LP_RESPONSE__INIT;

	resp.version = CONTROL_VERSION;
	resp.error = -err;
	resp.message = (char *)msg;
	write_frame(fd, &resp.base);
	close(fd);
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

/* root, our own uid, and with --control-group the group's members */
static int peer_allowed(const struct control *ctl, pid_t pid, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == geteuid())
		return 1;
	return ctl->has_gid && (gid == ctl->gid || in_groups_of(pid, ctl->gid));
}

void control_accept(struct control *ctl, struct registry *reg)
{
	struct ucred uc = { 0 };
	socklen_t l = sizeof(uc);
	pthread_attr_t at;
	pthread_t tid;
	struct conn *c;
	char msg[128];
	int fd, ret;

	fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("control accept: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0 || !peer_allowed(ctl, uc.pid, uc.uid, uc.gid)) {
		snprintf(msg, sizeof(msg), "uid %u may not use this control socket", (unsigned)uc.uid);
		log_warn("control: refused pid %d uid %u", (int)uc.pid, (unsigned)uc.uid);
		refuse(fd, msg, EPERM);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	if (conn_enter(ctl, fd)) {
		free(c);
		refuse(fd, "too many control connections", EMFILE);
		return;
	}
	c->ctl = ctl;
	c->reg = reg;
	c->fd = fd;
	c->pid = uc.pid;
	c->uid = uc.uid;
	snprintf(c->name, sizeof(c->name), "peer pid %d uid %u", (int)uc.pid, (unsigned)uc.uid);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&tid, &at, conn_main, c);
	pthread_attr_destroy(&at);
	if (ret) {
		log_warn("control: thread: %s", strerror(ret));
		conn_leave(ctl, fd);
		close(fd);
		free(c);
	}
}

int control_open(const char *path, const char *group, int fd, struct control **out, struct lp_err *e)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct group *gr;
	int i, ret;

	if (!ctl)
		return lp_err_set(e, ENOMEM, "out of memory");
	ctl->lfd = -1;
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		ctl->conns[i] = -1;
	pthread_mutex_init(&ctl->lock, NULL);
	pthread_cond_init(&ctl->conns_cv, NULL);
	if (group) {
		errno = 0;
		gr = getgrnam(group);
		if (!gr) {
			ret = lp_err_set(e, errno ? errno : ENOENT, "--control-group %s: %s", group,
					 errno ? strerror(errno) : "no such group");
			goto fail;
		}
		ctl->gid = gr->gr_gid;
		ctl->has_gid = 1;
	}
	if (fd < 0) {
		ret = control_listen(path, group ? ctl->gid : (gid_t)-1, &fd, e);
		if (ret)
			goto fail;
		ctl->bound = 1;
		snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	}
	ctl->lfd = fd;
	*out = ctl;
	return 0;
fail:
	control_close(ctl);
	return ret;
}

int control_fd(const struct control *ctl)
{
	return ctl->lfd;
}

void control_close(struct control *ctl)
{
	int i;

	if (!ctl)
		return;
	pthread_mutex_lock(&ctl->lock);
	ctl->closed = 1;
	for (i = 0; i < CONTROL_MAX_CONNS; i++)
		if (ctl->conns[i] >= 0)
			shutdown(ctl->conns[i], SHUT_RDWR);
	while (ctl->nconns)
		pthread_cond_wait(&ctl->conns_cv, &ctl->lock);
	pthread_mutex_unlock(&ctl->lock);
	if (ctl->bound)
		unlink(ctl->path);
	if (ctl->lfd >= 0)
		close(ctl->lfd);
	pthread_cond_destroy(&ctl->conns_cv);
	pthread_mutex_destroy(&ctl->lock);
	free(ctl);
}
