/* SPDX-License-Identifier: MIT */
/* liblazypages: framed protobuf requests to lazy-pagesd --service, answers turned into public structs. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.pb-c.h"
#include "lazypages.h"

struct lp_conn {
	int fd;
	bool broken;		/* the stream is out of step: every later call fails */
	char err[512];
};

/* A handoff region takes at least 8 bytes packed: more than this cannot fit a frame. */
#define LP_MAX_REGIONS (LP_CONTROL_MAX_FRAME / 8)

static int set_err(struct lp_conn *c, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int set_err(struct lp_conn *c, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return ret;
}

/* Like set_err, and the connection cannot be used again: a frame is half sent or half read. */
static int set_broken(struct lp_conn *c, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int set_broken(struct lp_conn *c, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	c->broken = true;
	return ret;
}

/* Copies at most SIZE - 1 bytes and never ends inside a UTF-8 sequence. */
static void copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src ? strnlen(src, size) : 0;

	if (n == size) {
		n = size - 1;
		while (n && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	}
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

const char *lp_control_path(const char *path)
{
	const char *env;

	if (path && *path)
		return path;
	env = getenv(LP_CONTROL_ENV);
	if (env && *env)
		return env;
	return LP_CONTROL_DEFAULT;
}

int lp_connect(const char *path, struct lp_conn **out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct lp_conn *c;
	int ret;

	path = lp_control_path(path);
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		ret = -errno;
		goto err_free;
	}
	while (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno == EINTR)
			continue;
		ret = -errno;
		goto err_close;
	}
	*out = c;
	return 0;

err_close:
	close(c->fd);
err_free:
	free(c);
	return ret;
}

void lp_close(struct lp_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

const char *lp_error(const struct lp_conn *c)
{
	if (!c)
		return "not connected";
	return c->err[0] ? c->err : "no error";
}

/* Sends BUF whole; FDS (if NFDS) ride on the sendmsg that carries the first byte. */
static int send_all(struct lp_conn *c, const uint8_t *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	size_t off = 0;

	if (nfds > 2)
		return -EINVAL;
	while (off < len) {
		struct iovec iov = { .iov_base = (void *)(buf + off), .iov_len = len - off };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t r;

		if (off == 0 && nfds) {
			struct cmsghdr *cm;

			memset(&ctl, 0, sizeof(ctl));
			msg.msg_control = ctl.buf;
			msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
		}
		/* MSG_NOSIGNAL: a daemon gone away is an error, not a SIGPIPE in the caller */
		r = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			if (e == EPIPE || e == ECONNRESET)
				return set_broken(c, -e, "the daemon closed the connection (sending a request: %s)",
						  strerror(e));
			return set_broken(c, -e, "sending a request: %s", strerror(e));
		}
		off += (size_t)r;
	}
	return 0;
}

/* Reads N bytes; EOF (before or in the middle) is -EPIPE. */
static int recv_all(struct lp_conn *c, void *buf, size_t n, const char *what)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(c->fd, p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			return set_broken(c, -e, "reading the daemon's %s: %s", what, strerror(e));
		}
		if (r == 0)
			return set_broken(c, -EPIPE, "the daemon closed the connection %s (%zu of %zu bytes of its %s)",
					  got ? "in the middle of a reply" : "without a reply", got, n, what);
		got += (size_t)r;
	}
	return 0;
}

static int recv_frame(struct lp_conn *c, uint8_t **out, size_t *out_len)
{
	uint8_t hdr[4], *buf;
	uint32_t len;
	int ret;

	ret = recv_all(c, hdr, sizeof(hdr), "frame length");
	if (ret)
		return ret;
	len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	if (len > LP_CONTROL_MAX_FRAME)
		return set_broken(c, -EMSGSIZE, "the daemon sent a frame of %u bytes, more than the %u allowed", len,
				  LP_CONTROL_MAX_FRAME);
	buf = malloc(len ? len : 1);
	if (!buf)
		return set_broken(c, -ENOMEM, "no memory for a reply of %u bytes", len);
	ret = recv_all(c, buf, len, "reply");
	if (ret) {
		free(buf);
		return ret;
	}
	*out = buf;
	*out_len = len;
	return 0;
}

/* Sends REQ (with FDS), reads the answer and checks its version and error. */
static int call(struct lp_conn *c, LpRequest *req, const int *fds, size_t nfds, LpResponse **out)
{
	LpResponse *resp = NULL;
	uint8_t *buf = NULL;
	size_t len;
	int ret;

	if (c->broken)
		return -ENOTCONN;	/* c->err still says why */
	req->version = LP_CONTROL_VERSION;
	len = lp_request__get_packed_size(req);
	if (len > LP_CONTROL_MAX_FRAME)
		return set_err(c, -EMSGSIZE, "request of %zu bytes, more than the %u a frame allows", len,
			       LP_CONTROL_MAX_FRAME);
	buf = malloc(4 + len);
	if (!buf)
		return set_err(c, -ENOMEM, "no memory for a request of %zu bytes", len);
	buf[0] = (uint8_t)len;
	buf[1] = (uint8_t)(len >> 8);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 24);
	lp_request__pack(req, buf + 4);
	ret = send_all(c, buf, 4 + len, fds, nfds);
	free(buf);
	buf = NULL;
	if (ret == -EPIPE || ret == -ECONNRESET) {
		/* a daemon that refuses us answers before it hangs up: its answer says why */
		char why[sizeof(c->err)];
		int sent = ret;

		memcpy(why, c->err, sizeof(why));
		ret = recv_frame(c, &buf, &len);
		if (ret) {
			memcpy(c->err, why, sizeof(why));
			return sent;
		}
	} else if (ret) {
		return ret;
	} else {
		ret = recv_frame(c, &buf, &len);
		if (ret)
			return ret;
	}
	resp = lp_response__unpack(NULL, len, buf);
	free(buf);
	if (!resp)
		return set_err(c, -EPROTO, "the daemon's reply (%zu bytes) is not an lp_response", len);
	if (resp->error) {
		/* an error first: the answer to a version the daemon does not speak carries its own */
		if (resp->error > 0 || resp->error < -4095) {
			ret = set_err(c, -EPROTO, "the daemon answered with error %d, not a -errno", resp->error);
			goto err;
		}
		ret = set_err(c, resp->error, "%s",
			      resp->message && *resp->message ? resp->message : strerror(-resp->error));
		goto err;
	}
	if (resp->version != LP_CONTROL_VERSION) {
		ret = set_err(c, -EPROTO, "the daemon answered in control version %u, this client speaks %u",
			      resp->version, LP_CONTROL_VERSION);
		goto err;
	}
	c->err[0] = '\0';
	*out = resp;
	return 0;

err:
	lp_response__free_unpacked(resp, NULL);
	return ret;
}

int lp_status(struct lp_conn *c, struct lp_status *out)
{
	LpRequest req = LP_REQUEST__INIT;
	LpResponse *resp;
	LpDaemonStatus *st;
	int ret;

	req.op = LP_OP__LP_OP_STATUS;
	ret = call(c, &req, NULL, 0, &resp);
	if (ret)
		return ret;
	st = resp->status;
	if (!st) {
		ret = set_err(c, -EPROTO, "the daemon's status reply has no status");
		goto out;
	}
	memset(out, 0, sizeof(*out));
	out->pid = st->pid;
	out->uptime_s = st->uptime_s;
	out->sessions_active = st->sessions_active;
	out->sessions_total = st->sessions_total;
	out->stopping = st->has_stopping && st->stopping;
	copy_str(out->line, sizeof(out->line), st->line);
out:
	lp_response__free_unpacked(resp, NULL);
	return ret;
}

int lp_session_add(struct lp_conn *c, const struct lp_session_opts *o, uint32_t *id)
{
	LpRequest req = LP_REQUEST__INIT;
	LpSessionAdd add = LP_SESSION_ADD__INIT;
	LpResponse *resp;
	int ret;

	if (!o || !o->images_dir || !*o->images_dir)
		return set_err(c, -EINVAL, "a session needs an images dir");
	if (!o->ps_address && (o->ps_port || o->ps_wire))
		return set_err(c, -EINVAL, "a page-server port or wire needs a page-server address");
	add.images_dir = (char *)o->images_dir;
	add.work_dir = (char *)o->work_dir;
	add.ps_address = (char *)o->ps_address;
	add.has_ps_port = o->ps_port != 0;
	add.ps_port = o->ps_port;
	add.has_ps_wire = o->ps_wire != 0;
	add.ps_wire = o->ps_wire;
	add.has_prefetch_threads = o->prefetch_threads != 0;
	add.prefetch_threads = o->prefetch_threads;
	add.has_ws_record = o->ws_record != 0;
	add.ws_record = o->ws_record != 0;
	add.has_ws_record_seconds = o->ws_record_seconds != 0;
	add.ws_record_seconds = o->ws_record_seconds;
	add.ws_replay = (char *)o->ws_replay;
	add.has_no_ws_replay = o->no_ws_replay != 0;
	add.no_ws_replay = o->no_ws_replay != 0;
	req.op = LP_OP__LP_OP_SESSION_ADD;
	req.add = &add;

	ret = call(c, &req, NULL, 0, &resp);
	if (ret)
		return ret;
	if (!resp->has_session)
		ret = set_err(c, -EPROTO, "the daemon's session-add reply has no session id");
	else
		*id = resp->session;
	lp_response__free_unpacked(resp, NULL);
	return ret;
}

int lp_session_rm(struct lp_conn *c, uint32_t id)
{
	LpRequest req = LP_REQUEST__INIT;
	LpResponse *resp;
	int ret;

	req.op = LP_OP__LP_OP_SESSION_RM;
	req.has_session = true;
	req.session = id;
	ret = call(c, &req, NULL, 0, &resp);
	if (ret)
		return ret;
	lp_response__free_unpacked(resp, NULL);
	return 0;
}

static void convert_session(struct lp_session *s, const LpSessionInfo *in, struct lp_proc *procs)
{
	size_t i;

	s->id = in->id;
	s->state = (enum lp_state)in->state;
	copy_str(s->kind, sizeof(s->kind), in->kind);
	copy_str(s->images_dir, sizeof(s->images_dir), in->images_dir);
	copy_str(s->work_dir, sizeof(s->work_dir), in->work_dir);
	copy_str(s->socket_path, sizeof(s->socket_path), in->socket_path);
	copy_str(s->page_server, sizeof(s->page_server), in->page_server);
	/* a field the daemon left out reads as 0, as protobuf defaults say */
	s->pages_copied = in->pages_copied;
	s->zero_pages = in->zero_pages;
	s->faults = in->faults;
	s->remote_bytes = in->remote_bytes;
	s->remote_inflight = in->remote_inflight;
	s->fault_p50_us = in->fault_p50_us;
	s->fault_p99_us = in->fault_p99_us;
	s->seconds = in->seconds;
	s->fault_rtt_p50_us = in->fault_rtt_p50_us;
	s->fault_rtt_p99_us = in->fault_rtt_p99_us;
	copy_str(s->summary, sizeof(s->summary), in->summary);
	copy_str(s->error, sizeof(s->error), in->error);
	s->nprocs = in->n_procs;
	s->procs = procs;
	for (i = 0; i < in->n_procs; i++) {
		const LpProcInfo *p = in->procs[i];

		procs[i] = (struct lp_proc){
			.pid = p->pid,
			.total_pages = p->total_pages,
			.remaining_pages = p->remaining_pages,
			.faults = p->faults,
			.fault_p99_us = p->fault_p99_us,
			.state = (int)p->state,
			.forked = p->has_forked && p->forked,
		};
	}
}

static int list(struct lp_conn *c, LpOp op, uint32_t id, struct lp_session **out, size_t *n)
{
	LpRequest req = LP_REQUEST__INIT;
	struct lp_session *s = NULL;
	LpResponse *resp;
	size_t i;
	int ret;

	req.op = op;
	req.has_session = id != 0;
	req.session = id;
	ret = call(c, &req, NULL, 0, &resp);
	if (ret)
		return ret;
	if (id && !resp->n_sessions) {
		ret = set_err(c, -ENOENT, "no session %u", id);
		goto out;
	}
	s = calloc(resp->n_sessions ? resp->n_sessions : 1, sizeof(*s));
	if (!s) {
		ret = set_err(c, -ENOMEM, "no memory for %zu sessions", resp->n_sessions);
		goto out;
	}
	for (i = 0; i < resp->n_sessions; i++) {
		const LpSessionInfo *in = resp->sessions[i];
		struct lp_proc *procs = NULL;

		if (in->n_procs) {
			procs = calloc(in->n_procs, sizeof(*procs));
			if (!procs) {
				lp_sessions_free(s, i);
				s = NULL;
				ret = set_err(c, -ENOMEM, "no memory for %zu processes", in->n_procs);
				goto out;
			}
		}
		convert_session(&s[i], in, procs);
	}
	*out = s;
	*n = resp->n_sessions;
out:
	lp_response__free_unpacked(resp, NULL);
	return ret;
}

int lp_session_list(struct lp_conn *c, uint32_t id, struct lp_session **out, size_t *n)
{
	/* SESSION_LIST takes no session: one session is what STATS answers */
	return list(c, id ? LP_OP__LP_OP_STATS : LP_OP__LP_OP_SESSION_LIST, id, out, n);
}

int lp_stats(struct lp_conn *c, uint32_t id, struct lp_session **out, size_t *n)
{
	return list(c, LP_OP__LP_OP_STATS, id, out, n);
}

void lp_sessions_free(struct lp_session *s, size_t n)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < n; i++)
		free(s[i].procs);
	free(s);
}

static int check_regions(struct lp_conn *c, const struct lp_region *r, size_t n)
{
	uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE) - 1;
	size_t i;

	if (!n)
		return set_err(c, -EINVAL, "a hand-off needs at least one region");
	if (n > LP_MAX_REGIONS)
		return set_err(c, -EMSGSIZE, "%zu regions do not fit in a frame", n);
	for (i = 0; i < n; i++) {
		if (!r[i].len || ((r[i].addr | r[i].len | r[i].offset) & pg))
			return set_err(c, -EINVAL, "region %zu (0x%llx, %llu bytes at offset %llu) is empty or not page aligned",
				       i, (unsigned long long)r[i].addr, (unsigned long long)r[i].len,
				       (unsigned long long)r[i].offset);
		if (r[i].addr + r[i].len < r[i].addr || r[i].offset + r[i].len < r[i].offset)
			return set_err(c, -EINVAL, "region %zu wraps around", i);
	}
	return 0;
}

int lp_handoff(struct lp_conn *c, int uffd, int mem_fd, const struct lp_region *regions, size_t n, pid_t pid,
	       const char *name, uint32_t *session_id)
{
	LpRequest req = LP_REQUEST__INIT;
	LpHandoff h = LP_HANDOFF__INIT;
	LpRegion *rs = NULL, **rp = NULL;
	int fds[2] = { uffd, mem_fd };
	LpResponse *resp;
	size_t i;
	int ret;

	if (uffd < 0 || fcntl(uffd, F_GETFD) < 0)
		return set_err(c, -EBADF, "the userfaultfd (%d) is not an open fd", uffd);
	if (mem_fd < 0 || fcntl(mem_fd, F_GETFD) < 0)
		return set_err(c, -EBADF, "the memory file (%d) is not an open fd", mem_fd);
	ret = check_regions(c, regions, n);
	if (ret)
		return ret;
	rs = calloc(n, sizeof(*rs));
	rp = calloc(n, sizeof(*rp));
	if (!rs || !rp) {
		ret = set_err(c, -ENOMEM, "no memory for %zu regions", n);
		goto out;
	}
	for (i = 0; i < n; i++) {
		lp_region__init(&rs[i]);
		rs[i].addr = regions[i].addr;
		rs[i].len = regions[i].len;
		rs[i].offset = regions[i].offset;
		rp[i] = &rs[i];
	}
	h.n_regions = n;
	h.regions = rp;
	h.has_pid = pid > 0;
	h.pid = pid;
	h.name = (char *)name;
	req.op = LP_OP__LP_OP_HANDOFF;
	req.handoff = &h;

	ret = call(c, &req, fds, 2, &resp);
	if (ret)
		goto out;
	if (!resp->has_session)
		ret = set_err(c, -EPROTO, "the daemon's hand-off reply has no session id");
	else
		*session_id = resp->session;
	lp_response__free_unpacked(resp, NULL);
out:
	free(rp);
	free(rs);
	return ret;
}
