/* SPDX-License-Identifier: MIT */
/* lazy-pagesctl: the command line of lazy-pagesd --service's control socket. */

/*
 * --json output is for scripts: keys are only ever added, never renamed or
 * removed. Every document is one object on one line.
 *
 * status:
 *   {"pid":N, "uptime_s":X, "sessions_active":N, "sessions_total":N,
 *    "stopping":false, "line":"..."}
 * session add:
 *   {"id":N, "socket":"/imgs/lazy-pages.socket"}
 * session list, stats:
 *   {"sessions":[{"id":N, "state":"listening|serving|done|failed|unknown",
 *     "kind":"criu|handoff", "images_dir":"...", "work_dir":"...",
 *     "socket":"...", "page_server":"A:P" or "", "pages_copied":N,
 *     "zero_pages":N, "faults":N, "fault_p50_us":X, "fault_p99_us":X,
 *     "seconds":X, "remote_bytes":N, "remote_inflight":N,
 *     "fault_rtt_p50_us":X, "fault_rtt_p99_us":X, "summary":"...",
 *     "error":"...",
 *     "procs":[{"pid":N, "state":"live|complete|gone|unknown", "forked":false,
 *               "total_pages":N, "remaining_pages":N, "faults":N,
 *               "fault_p99_us":X}]}]}
 * N is an integer, X a number (null if not finite); a figure the daemon
 * does not report is 0 and a string it does not report is "".
 *
 * ws show FILE --json (no daemon: a working-set file):
 *   {"file":"...", "version":N, "page_size":N, "recordings":N, "pages":N,
 *    "procs":[{"pid":N, "pages":N, "layout":"hex", "first_us":N, "last_us":N,
 *              "touches":[{"addr":N, "t_us":N, "seen":N}]}]}
 *   (touches: the first --pages N, default 10, in first-touch order)
 *
 * Exit status: 0 done, 1 the daemon said no or could not be reached (ws:
 * a file is bad), 2 bad arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "lazypages.h"
#include "wsctl.h"

#define PROG "lazy-pagesctl"
#define BAR_WIDTH 30

struct ctl {
	const char *socket;	/* -s, or NULL for the library's default */
	struct lp_conn *conn;
};

struct cmd {
	const char *name;
	int (*fn)(struct ctl *ctl, int argc, char **argv);
	const char *usage;
};

static const char *session_usage =
	"session add -D DIR [-W DIR] [--page-server --address A --port P [--ps-wire 3|4]]\n"
	"                    [--prefetch-threads N] [--ws-record [--ws-record-time S]]\n"
	"                    [--ws-replay FILE | --no-ws-replay] [--json]\n"
	"       session rm ID\n"
	"       session list [--json]";

static int usage_error(const char *cmd, const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Bad arguments: what is wrong, the command's usage, exit status 2. */
static int usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": %s%s", cmd ? cmd : "", cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: " PROG " [-s SOCKET] %s\n", usage);
	return 2;
}

/* getopt's complaint, in our words: ':' missing argument, '?' unknown option. */
static int bad_option(const char *cmd, const char *usage, int c, char **argv)
{
	const char *arg = argv[optind - 1];

	if (c == ':')
		return usage_error(cmd, usage, "option '%s' needs an argument", arg);
	if (optopt && !(arg[0] == '-' && arg[1] == '-'))
		return usage_error(cmd, usage, "unknown option '-%c'", optopt);
	return usage_error(cmd, usage, "unknown option '%s'", arg);
}

static int parse_u32(const char *cmd, const char *usage, const char *what, const char *arg, unsigned long lo,
		     unsigned long hi, uint32_t *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v < lo || v > hi)
		return -usage_error(cmd, usage, "%s: '%s' is not a number from %lu to %lu", what, arg, lo, hi);
	*out = (uint32_t)v;
	return 0;
}

static int ctl_connect(struct ctl *ctl)
{
	int ret;

	if (ctl->conn)
		return 0;
	ret = lp_connect(ctl->socket, &ctl->conn);
	if (ret) {
		fprintf(stderr, PROG ": cannot connect to %s: %s\n", lp_control_path(ctl->socket), strerror(-ret));
		return 1;
	}
	return 0;
}

static int daemon_error(struct ctl *ctl, const char *what)
{
	fprintf(stderr, PROG ": %s: %s\n", what, lp_error(ctl->conn));
	return 1;
}

static const char *state_name(enum lp_state s)
{
	switch (s) {
	case LP_LISTENING:
		return "listening";
	case LP_SERVING:
		return "serving";
	case LP_DONE:
		return "done";
	case LP_FAILED:
		return "failed";
	}
	return "unknown";
}

static const char *proc_state_name(int state)
{
	static const char *const names[] = { "live", "complete", "gone" };

	return state >= 0 && state < 3 ? names[state] : "unknown";
}

static void fmt_bytes(char *buf, size_t size, uint64_t b)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	unsigned u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%" PRIu64 " B", b);
	else
		snprintf(buf, size, "%.1f %s", v, units[u]);
}

static void fmt_duration(char *buf, size_t size, double s)
{
	unsigned long t = s > 0 ? (unsigned long)s : 0;

	if (t >= 86400)
		snprintf(buf, size, "%lud %02luh%02lum", t / 86400, t / 3600 % 24, t / 60 % 60);
	else if (t >= 3600)
		snprintf(buf, size, "%luh%02lum%02lus", t / 3600, t / 60 % 60, t % 60);
	else if (t >= 60)
		snprintf(buf, size, "%lum%02lus", t / 60, t % 60);
	else
		snprintf(buf, size, "%.1fs", s > 0 ? s : 0);
}

static size_t procs_done(const struct lp_session *s)
{
	size_t i, n = 0;

	for (i = 0; i < s->nprocs; i++)
		n += s->procs[i].state != 0;
	return n;
}

static bool session_finished(const struct lp_session *s)
{
	return s->state == LP_DONE || s->state == LP_FAILED;
}

static double fill_pct(const struct lp_proc *p)
{
	if (!p->total_pages)
		return 100.0;
	if (p->remaining_pages >= p->total_pages)
		return 0.0;
	return 100.0 * (double)(p->total_pages - p->remaining_pages) / (double)p->total_pages;
}

static uint64_t filled(const struct lp_proc *p)
{
	return p->remaining_pages >= p->total_pages ? 0 : p->total_pages - p->remaining_pages;
}

/* ---- status ---- */

static int status_main(struct ctl *ctl, int argc, char **argv)
{
	static const char *usage = "status [--json]";
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' },
					      { 0 } };
	struct lp_status st;
	bool json = false;
	char up[32];
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'h')
			return printf("usage: " PROG " [-s SOCKET] %s\n", usage), 0;
		else
			return bad_option("status", usage, c, argv);
	}
	if (optind < argc)
		return usage_error("status", usage, "unexpected argument '%s'", argv[optind]);
	ret = ctl_connect(ctl);
	if (ret)
		return ret;
	if (lp_status(ctl->conn, &st))
		return daemon_error(ctl, "status");

	if (json) {
		struct json j;

		json_init(&j, stdout);
		json_obj_begin(&j);
		json_key(&j, "pid");
		json_i64(&j, st.pid);
		json_key(&j, "uptime_s");
		json_double(&j, st.uptime_s);
		json_key(&j, "sessions_active");
		json_u64(&j, st.sessions_active);
		json_key(&j, "sessions_total");
		json_u64(&j, st.sessions_total);
		json_key(&j, "stopping");
		json_bool(&j, st.stopping);
		json_key(&j, "line");
		json_str(&j, st.line);
		json_obj_end(&j);
		return 0;
	}
	fmt_duration(up, sizeof(up), st.uptime_s);
	printf("lazy-pagesd pid %d, up %s%s\n", (int)st.pid, up, st.stopping ? ", stopping" : "");
	printf("sessions: %u active, %u since start\n", st.sessions_active, st.sessions_total);
	if (st.line[0])
		printf("status: %s\n", st.line);
	return 0;
}

/* ---- sessions as JSON ---- */

static void json_session(struct json *j, const struct lp_session *s)
{
	size_t i;

	json_obj_begin(j);
	json_key(j, "id");
	json_u64(j, s->id);
	json_key(j, "state");
	json_str(j, state_name(s->state));
	json_key(j, "kind");
	json_str(j, s->kind);
	json_key(j, "images_dir");
	json_str(j, s->images_dir);
	json_key(j, "work_dir");
	json_str(j, s->work_dir);
	json_key(j, "socket");
	json_str(j, s->socket_path);
	json_key(j, "page_server");
	json_str(j, s->page_server);
	json_key(j, "pages_copied");
	json_u64(j, s->pages_copied);
	json_key(j, "zero_pages");
	json_u64(j, s->zero_pages);
	json_key(j, "faults");
	json_u64(j, s->faults);
	json_key(j, "fault_p50_us");
	json_double(j, s->fault_p50_us);
	json_key(j, "fault_p99_us");
	json_double(j, s->fault_p99_us);
	json_key(j, "seconds");
	json_double(j, s->seconds);
	json_key(j, "remote_bytes");
	json_u64(j, s->remote_bytes);
	json_key(j, "remote_inflight");
	json_u64(j, s->remote_inflight);
	json_key(j, "fault_rtt_p50_us");
	json_double(j, s->fault_rtt_p50_us);
	json_key(j, "fault_rtt_p99_us");
	json_double(j, s->fault_rtt_p99_us);
	json_key(j, "summary");
	json_str(j, s->summary);
	json_key(j, "error");
	json_str(j, s->error);
	json_key(j, "procs");
	json_arr_begin(j);
	for (i = 0; i < s->nprocs; i++) {
		const struct lp_proc *p = &s->procs[i];

		json_obj_begin(j);
		json_key(j, "pid");
		json_i64(j, p->pid);
		json_key(j, "state");
		json_str(j, proc_state_name(p->state));
		json_key(j, "forked");
		json_bool(j, p->forked);
		json_key(j, "total_pages");
		json_u64(j, p->total_pages);
		json_key(j, "remaining_pages");
		json_u64(j, p->remaining_pages);
		json_key(j, "faults");
		json_u64(j, p->faults);
		json_key(j, "fault_p99_us");
		json_double(j, p->fault_p99_us);
		json_obj_end(j);
	}
	json_arr_end(j);
	json_obj_end(j);
}

static void json_sessions(const struct lp_session *s, size_t n)
{
	struct json j;
	size_t i;

	json_init(&j, stdout);
	json_obj_begin(&j);
	json_key(&j, "sessions");
	json_arr_begin(&j);
	for (i = 0; i < n; i++)
		json_session(&j, &s[i]);
	json_arr_end(&j);
	json_obj_end(&j);
}

/* ---- session add | rm | list ---- */

static int session_add_main(struct ctl *ctl, int argc, char **argv)
{
	enum { O_PS = 256, O_ADDR, O_PORT, O_WIRE, O_PREFETCH, O_JSON, O_WSREC, O_WSTIME, O_WSREPLAY, O_NOWS };
	static const struct option opts[] = {
		{ "images-dir", required_argument, NULL, 'D' }, { "work-dir", required_argument, NULL, 'W' },
		{ "page-server", no_argument, NULL, O_PS },	{ "address", required_argument, NULL, O_ADDR },
		{ "port", required_argument, NULL, O_PORT },	{ "ps-wire", required_argument, NULL, O_WIRE },
		{ "prefetch-threads", required_argument, NULL, O_PREFETCH },
		{ "ws-record", no_argument, NULL, O_WSREC },	{ "ws-record-time", required_argument, NULL, O_WSTIME },
		{ "ws-replay", required_argument, NULL, O_WSREPLAY }, { "no-ws-replay", no_argument, NULL, O_NOWS },
		{ "json", no_argument, NULL, O_JSON },		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const char *cmd = "session add";
	struct lp_session_opts o = { 0 };
	char *images = NULL, *work = NULL, *wsfile = NULL;
	struct lp_session *s = NULL;
	bool ps = false, json = false;
	const char *sock;
	char fallback[PATH_MAX + 32];
	size_t n = 0;
	uint32_t id, v;
	int c, ret = 2;

	while ((c = getopt_long(argc, argv, ":D:W:h", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			o.images_dir = optarg;
			break;
		case 'W':
			o.work_dir = optarg;
			break;
		case O_PS:
			ps = true;
			break;
		case O_ADDR:
			o.ps_address = optarg;
			break;
		case O_PORT:
			if (parse_u32(cmd, session_usage, "--port", optarg, 1, 65535, &v))
				return 2;
			o.ps_port = v;
			break;
		case O_WIRE:
			if (strcmp(optarg, "3") && strcmp(optarg, "4"))
				return usage_error(cmd, session_usage, "--ps-wire: '%s' is neither 3 nor 4", optarg);
			o.ps_wire = (unsigned)atoi(optarg);
			break;
		case O_PREFETCH:
			if (parse_u32(cmd, session_usage, "--prefetch-threads", optarg, 1, 1024, &v))
				return 2;
			o.prefetch_threads = v;
			break;
		case O_WSREC:
			o.ws_record = 1;
			break;
		case O_WSTIME:
			if (parse_u32(cmd, session_usage, "--ws-record-time", optarg, 1, 86400, &v))
				return 2;
			o.ws_record_seconds = v;
			break;
		case O_WSREPLAY:
			o.ws_replay = optarg;
			break;
		case O_NOWS:
			o.no_ws_replay = 1;
			break;
		case O_JSON:
			json = true;
			break;
		case 'h':
			printf("usage: " PROG " [-s SOCKET] %s\n", session_usage);
			return 0;
		default:
			return bad_option(cmd, session_usage, c, argv);
		}
	}
	if (optind < argc)
		return usage_error(cmd, session_usage, "unexpected argument '%s'", argv[optind]);
	if (!o.images_dir || !*o.images_dir)
		return usage_error(cmd, session_usage, "-D DIR (the CRIU images dir) is required");
	if (ps && (!o.ps_address || !*o.ps_address))
		return usage_error(cmd, session_usage, "--page-server needs --address A");
	if (ps && !o.ps_port)
		return usage_error(cmd, session_usage, "--page-server needs --port P");
	if (!ps && o.ps_address)
		return usage_error(cmd, session_usage, "--address is only for --page-server");
	if (!ps && o.ps_port)
		return usage_error(cmd, session_usage, "--port is only for --page-server");
	if (!ps && o.ps_wire)
		return usage_error(cmd, session_usage, "--ps-wire is only for --page-server");

	/* the daemon has its own working directory: give it absolute paths */
	images = realpath(o.images_dir, NULL);
	if (images)
		o.images_dir = images;
	else if (o.images_dir[0] != '/')
		return fprintf(stderr, PROG ": %s: -D %s: %s\n", cmd, o.images_dir, strerror(errno)), 1;
	if (o.work_dir) {
		work = realpath(o.work_dir, NULL);
		if (work) {
			o.work_dir = work;
		} else if (o.work_dir[0] != '/') {
			fprintf(stderr, PROG ": %s: -W %s: %s\n", cmd, o.work_dir, strerror(errno));
			ret = 1;
			goto out;
		}
	}
	if (o.ws_replay) {
		wsfile = realpath(o.ws_replay, NULL);
		if (!wsfile) {
			fprintf(stderr, PROG ": %s: --ws-replay %s: %s\n", cmd, o.ws_replay, strerror(errno));
			ret = 1;
			goto out;
		}
		o.ws_replay = wsfile;
	}
	if ((o.ws_replay && o.no_ws_replay) || (o.ws_record_seconds && !o.ws_record)) {
		ret = usage_error(cmd, session_usage, "--ws-replay with --no-ws-replay, or --ws-record-time without --ws-record");
		goto out;
	}

	ret = ctl_connect(ctl);
	if (ret)
		goto out;
	if (lp_session_add(ctl->conn, &o, &id)) {
		ret = daemon_error(ctl, cmd);
		goto out;
	}
	/* the answer has only the id; the socket path is the session's own to say */
	if (!lp_session_list(ctl->conn, id, &s, &n) && n && s[0].socket_path[0]) {
		sock = s[0].socket_path;
	} else {
		snprintf(fallback, sizeof(fallback), "%s/lazy-pages.socket", o.work_dir ? o.work_dir : o.images_dir);
		sock = fallback;
	}
	if (json) {
		struct json j;

		json_init(&j, stdout);
		json_obj_begin(&j);
		json_key(&j, "id");
		json_u64(&j, id);
		json_key(&j, "socket");
		json_str(&j, sock);
		json_obj_end(&j);
	} else {
		printf("session %" PRIu32 ": %s\n", id, sock);
	}
	ret = 0;
out:
	lp_sessions_free(s, n);
	free(work);
	free(wsfile);
	free(images);
	return ret;
}

static int session_rm_main(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	static const char *cmd = "session rm";
	uint32_t id;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h')
			return printf("usage: " PROG " [-s SOCKET] %s\n", session_usage), 0;
		return bad_option(cmd, session_usage, c, argv);
	}
	if (optind >= argc)
		return usage_error(cmd, session_usage, "which session? ID is missing");
	if (optind + 1 < argc)
		return usage_error(cmd, session_usage, "unexpected argument '%s'", argv[optind + 1]);
	if (parse_u32(cmd, session_usage, "ID", argv[optind], 1, UINT32_MAX, &id))
		return 2;
	ret = ctl_connect(ctl);
	if (ret)
		return ret;
	if (lp_session_rm(ctl->conn, id)) {
		char what[64];

		snprintf(what, sizeof(what), "%s %" PRIu32, cmd, id);
		return daemon_error(ctl, what);
	}
	return 0;
}

static void print_session_line(const struct lp_session *s)
{
	const char *note = s->error[0] ? s->error : s->summary;
	char procs[48];

	snprintf(procs, sizeof(procs), "%zu/%zu", procs_done(s), s->nprocs);
	printf("%-4" PRIu32 " %-9s %-7s %-9s %12" PRIu64 "  %s%s%s\n", s->id, state_name(s->state),
	       s->kind[0] ? s->kind : "-", procs, s->pages_copied, s->images_dir[0] ? s->images_dir : "-",
	       note[0] ? "  " : "", note);
}

static int session_list_main(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' },
					      { 0 } };
	static const char *cmd = "session list";
	struct lp_session *s;
	bool json = false;
	size_t i, n;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'h')
			return printf("usage: " PROG " [-s SOCKET] %s\n", session_usage), 0;
		else
			return bad_option(cmd, session_usage, c, argv);
	}
	if (optind < argc)
		return usage_error(cmd, session_usage, "unexpected argument '%s'", argv[optind]);
	ret = ctl_connect(ctl);
	if (ret)
		return ret;
	if (lp_session_list(ctl->conn, 0, &s, &n))
		return daemon_error(ctl, cmd);
	if (json) {
		json_sessions(s, n);
	} else if (n) {
		printf("%-4s %-9s %-7s %-9s %12s  %s\n", "ID", "STATE", "KIND", "PROCS", "PAGES", "IMAGES");
		for (i = 0; i < n; i++)
			print_session_line(&s[i]);
	}
	lp_sessions_free(s, n);
	return 0;
}

static const struct cmd session_cmds[] = {
	{ "add", session_add_main, NULL },
	{ "rm", session_rm_main, NULL },
	{ "list", session_list_main, NULL },
};

static int session_main(struct ctl *ctl, int argc, char **argv)
{
	size_t i;

	if (argc < 2)
		return usage_error("session", session_usage, "add, rm or list?");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return printf("usage: " PROG " [-s SOCKET] %s\n", session_usage), 0;
	for (i = 0; i < sizeof(session_cmds) / sizeof(session_cmds[0]); i++) {
		if (!strcmp(argv[1], session_cmds[i].name)) {
			optind = 0;
			return session_cmds[i].fn(ctl, argc - 1, argv + 1);
		}
	}
	return usage_error("session", session_usage, "unknown subcommand '%s'", argv[1]);
}

/* ---- stats ---- */

static void print_stats(const struct lp_session *s)
{
	char b[32];
	size_t i;

	printf("session %" PRIu32 ": %s, %s, %s\n", s->id, state_name(s->state), s->kind[0] ? s->kind : "-",
	       s->images_dir[0] ? s->images_dir : "-");
	printf("  pages copied %" PRIu64 ", zero %" PRIu64 ", faults %" PRIu64 " (p50 %.1f us, p99 %.1f us), %.2f s\n",
	       s->pages_copied, s->zero_pages, s->faults, s->fault_p50_us, s->fault_p99_us, s->seconds);
	if (s->page_server[0]) {
		fmt_bytes(b, sizeof(b), s->remote_bytes);
		printf("  page server %s: %s received, %" PRIu64 " in flight, fault rtt p50 %.1f us, p99 %.1f us\n",
		       s->page_server, b, s->remote_inflight, s->fault_rtt_p50_us, s->fault_rtt_p99_us);
	}
	for (i = 0; i < s->nprocs; i++) {
		const struct lp_proc *p = &s->procs[i];

		printf("  pid %-7d %-8s%s %" PRIu64 "/%" PRIu64 " pages filled (%.1f%%), %" PRIu64
		       " faults, p99 %.1f us\n",
		       (int)p->pid, proc_state_name(p->state), p->forked ? " forked" : "", filled(p), p->total_pages,
		       fill_pct(p), p->faults, p->fault_p99_us);
	}
	if (s->error[0])
		printf("  error: %s\n", s->error);
	else if (s->summary[0])
		printf("  %s\n", s->summary);
}

static int stats_main(struct ctl *ctl, int argc, char **argv)
{
	static const char *usage = "stats [ID] [--json]";
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' },
					      { 0 } };
	struct lp_session *s;
	bool json = false;
	uint32_t id = 0;
	size_t i, n;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'h')
			return printf("usage: " PROG " [-s SOCKET] %s\n", usage), 0;
		else
			return bad_option("stats", usage, c, argv);
	}
	if (optind + 1 < argc)
		return usage_error("stats", usage, "unexpected argument '%s'", argv[optind + 1]);
	if (optind < argc && parse_u32("stats", usage, "ID", argv[optind], 1, UINT32_MAX, &id))
		return 2;
	ret = ctl_connect(ctl);
	if (ret)
		return ret;
	if (lp_stats(ctl->conn, id, &s, &n))
		return daemon_error(ctl, "stats");
	if (json) {
		json_sessions(s, n);
	} else {
		for (i = 0; i < n; i++) {
			if (i)
				putchar('\n');
			print_stats(&s[i]);
		}
	}
	lp_sessions_free(s, n);
	return 0;
}

/* ---- watch ---- */

/* One process's fault count at the previous frame, for faults/s. */
struct sample {
	uint32_t session;
	pid_t pid;
	uint64_t faults;
};

struct watch {
	struct sample *prev;
	size_t nprev;
	double prev_t;
	bool tty;
	unsigned frames;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const struct sample *find_prev(const struct watch *w, uint32_t session, pid_t pid)
{
	size_t i;

	for (i = 0; i < w->nprev; i++)
		if (w->prev[i].session == session && w->prev[i].pid == pid)
			return &w->prev[i];
	return NULL;
}

static void print_bar(double pct)
{
	int i, full = (int)(pct / 100.0 * BAR_WIDTH + 0.5);

	putchar('[');
	for (i = 0; i < BAR_WIDTH; i++)
		putchar(i < full ? '#' : '.');
	putchar(']');
}

static void print_frame(const struct watch *w, const struct lp_session *s, size_t n, double t)
{
	double dt = t - w->prev_t;
	size_t i, k;

	if (w->tty)
		fputs("\033[H\033[J", stdout);	/* home, clear to the end of the screen */
	else if (w->frames)
		putchar('\n');
	if (!n)
		printf("no sessions\n");
	for (i = 0; i < n; i++) {
		printf("session %" PRIu32 " %s %s  %" PRIu64 " pages copied, %.1f s%s%s\n", s[i].id,
		       state_name(s[i].state), s[i].images_dir[0] ? s[i].images_dir : "-", s[i].pages_copied,
		       s[i].seconds, s[i].error[0] ? "  " : "", s[i].error);
		for (k = 0; k < s[i].nprocs; k++) {
			const struct lp_proc *p = &s[i].procs[k];
			const struct sample *q = find_prev(w, s[i].id, p->pid);
			char rate[32] = "-";

			if (q && dt > 0 && p->faults >= q->faults)
				snprintf(rate, sizeof(rate), "%.0f", (double)(p->faults - q->faults) / dt);
			printf("  pid %-7d ", (int)p->pid);
			print_bar(fill_pct(p));
			printf(" %5.1f%%  %" PRIu64 "/%" PRIu64 " pages  %s faults/s  p99 %.1f us  %s\n", fill_pct(p),
			       filled(p), p->total_pages, rate, p->fault_p99_us, proc_state_name(p->state));
		}
	}
	fflush(stdout);
}

static int remember(struct watch *w, const struct lp_session *s, size_t n, double t)
{
	size_t i, k, total = 0;
	struct sample *v;

	for (i = 0; i < n; i++)
		total += s[i].nprocs;
	v = calloc(total ? total : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	total = 0;
	for (i = 0; i < n; i++)
		for (k = 0; k < s[i].nprocs; k++)
			v[total++] = (struct sample){ s[i].id, s[i].procs[k].pid, s[i].procs[k].faults };
	free(w->prev);
	w->prev = v;
	w->nprev = total;
	w->prev_t = t;
	return 0;
}

static void sleep_until(struct timespec *next, uint32_t ms)
{
	struct timespec now;

	next->tv_sec += ms / 1000;
	next->tv_nsec += (long)(ms % 1000) * 1000000;
	if (next->tv_nsec >= 1000000000) {
		next->tv_sec++;
		next->tv_nsec -= 1000000000;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec > next->tv_sec || (now.tv_sec == next->tv_sec && now.tv_nsec >= next->tv_nsec)) {
		*next = now;	/* behind (a slow daemon, a stopped terminal): restart the beat */
		return;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) == EINTR)
		;
}

static int watch_main(struct ctl *ctl, int argc, char **argv)
{
	static const char *usage = "watch [ID] [--interval MS] [--count N]";
	static const struct option opts[] = { { "interval", required_argument, NULL, 'i' },
					      { "count", required_argument, NULL, 'n' },
					      { "help", no_argument, NULL, 'h' },
					      { 0 } };
	struct watch w = { 0 };
	uint32_t id = 0, interval = 500, count = 0;
	struct timespec next;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":i:n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			if (parse_u32("watch", usage, "--interval", optarg, 10, 3600000, &interval))
				return 2;
			break;
		case 'n':
			if (parse_u32("watch", usage, "--count", optarg, 1, UINT32_MAX, &count))
				return 2;
			break;
		case 'h':
			printf("usage: " PROG " [-s SOCKET] %s\n", usage);
			return 0;
		default:
			return bad_option("watch", usage, c, argv);
		}
	}
	if (optind + 1 < argc)
		return usage_error("watch", usage, "unexpected argument '%s'", argv[optind + 1]);
	if (optind < argc && parse_u32("watch", usage, "ID", argv[optind], 1, UINT32_MAX, &id))
		return 2;
	ret = ctl_connect(ctl);
	if (ret)
		return ret;

	w.tty = isatty(STDOUT_FILENO);
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		struct lp_session *s;
		bool finished = true;
		size_t i, n;
		double t;

		if (lp_stats(ctl->conn, id, &s, &n)) {
			ret = daemon_error(ctl, "watch");
			break;
		}
		t = now_s();
		print_frame(&w, s, n, t);
		w.frames++;
		for (i = 0; i < n; i++)
			finished = finished && session_finished(&s[i]);
		ret = remember(&w, s, n, t);
		lp_sessions_free(s, n);
		if (ret) {
			fprintf(stderr, PROG ": watch: %s\n", strerror(-ret));
			ret = 1;
			break;
		}
		if (finished || (count && w.frames >= count))
			break;
		sleep_until(&next, interval);
	}
	free(w.prev);
	return ret;
}

/* ---- main ---- */

static int help_main(struct ctl *ctl, int argc, char **argv);

static int ws_main(struct ctl *ctl, int argc, char **argv)
{
	(void)ctl;
	return wsctl_main(argc, argv);
}

static const struct cmd cmds[] = {
	{ "status", status_main, "status [--json]" },
	{ "session", session_main, NULL },
	{ "stats", stats_main, "stats [ID] [--json]" },
	{ "watch", watch_main, "watch [ID] [--interval MS] [--count N]" },
	{ "ws", ws_main, WSCTL_USAGE },
	{ "help", help_main, "help" },
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: " PROG " [-s SOCKET] COMMAND ...\n"
		   "Controls lazy-pagesd --service through SOCKET (default $" LP_CONTROL_ENV ", else "
		   LP_CONTROL_DEFAULT ").\n"
		   "commands:\n");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %s\n", cmds[i].usage ? cmds[i].usage : session_usage);
	fprintf(f, "Exit status: 0 done, 1 the daemon refused or cannot be reached, 2 bad arguments.\n");
}

static int help_main(struct ctl *ctl, int argc, char **argv)
{
	(void)ctl;
	(void)argc;
	(void)argv;
	usage(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "help", no_argument, NULL, 'h' },
					      { 0 } };
	struct ctl ctl = { 0 };
	int c, ret;
	size_t i;

	opterr = 0;
	/* '+': stop at the command, whose options are its own */
	while ((c = getopt_long(argc, argv, "+:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.socket = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return bad_option(NULL, "COMMAND ...", c, argv);
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(argv[optind], cmds[i].name))
			break;
	}
	if (i == sizeof(cmds) / sizeof(cmds[0]))
		return usage_error(NULL, "COMMAND ...", "unknown command '%s' (try '" PROG " help')", argv[optind]);
	argc -= optind;
	argv += optind;
	optind = 0;
	ret = cmds[i].fn(&ctl, argc, argv);
	lp_close(ctl.conn);
	if (fflush(stdout) && !ret) {
		fprintf(stderr, PROG ": writing the output: %s\n", strerror(errno));
		ret = 1;
	}
	return ret;
}
