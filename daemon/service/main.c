/* SPDX-License-Identifier: MIT */
/* lazy-pagesd: serves the lazy pages of a restore (a drop-in for `criu lazy-pages`). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "service.h"
#include "session.h"
#include "tls.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: lazy-pagesd -D DIR [-W DIR] [-d|--daemon] [--pidfile F] [--status-fd N]\n"
		"                   [--prefetch-threads N] [--fault-threads N] [--fault-around PAGES]\n"
		"                   [--chunk PAGES] [--section-us US] [--no-prefetch] [--progress-file F]\n"
		"                   [--ws-record [--ws-out F] [--ws-record-time S]] [--ws-replay F | --no-ws-replay]\n"
		"                   [-o LOG] [-v[N]]\n"
		"                   [--page-server --address A --port P | --ps-socket FD] [--ps-wire 3|4]\n"
		"                   [--ps-timeout SECONDS] [--tls [--tls-cacert F] [--tls-cacrl F]\n"
		"                   [--tls-cert F] [--tls-key F] [--tls-no-cn-verify]]\n"
		"       lazy-pagesd --service [--control PATH] [--control-group GROUP] [--state-dir DIR]\n"
		"                   [thread options]\n"
		"       lazy-pagesd --reap [--state-dir DIR]   (lazy-pages.service's ExecStopPost=)\n"
		"Serves the lazy pages of a `criu restore --lazy-pages` (or any restorer speaking\n"
		"its protocol) from the CRIU image directory DIR, or with --page-server from a\n"
		"page server (CRIU's, or lazy-pages-server), through DIR/lazy-pages.socket\n"
		"(or WORKDIR/lazy-pages.socket with -W). Exits 0 once every process is complete.\n"
		"With --service it runs until SIGTERM, serving every session added with\n"
		"lazy-pagesctl (control socket default /run/lazy-pages/control.sock, or the one\n"
		"systemd passes with socket activation).\n");
}

enum {
	OPT_PIDFILE = 256,
	OPT_STATUS_FD,
	OPT_PREFETCH,
	OPT_FAULTS,
	OPT_AROUND,
	OPT_CHUNK,
	OPT_PAGE_SERVER,
	OPT_ADDRESS,
	OPT_PORT,
	OPT_PS_WIRE,
	OPT_PS_SOCKET,
	OPT_SERVICE,
	OPT_CONTROL,
	OPT_CONTROL_GROUP,
	OPT_PROGRESS,
	OPT_PS_TIMEOUT,
	OPT_STATE_DIR,
	OPT_SECTION,
	OPT_NO_PREFETCH,
	OPT_WS_RECORD,
	OPT_WS_OUT,
	OPT_WS_RECORD_TIME,
	OPT_WS_REPLAY,
	OPT_NO_WS_REPLAY,
	OPT_REAP,
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "work-dir", required_argument, NULL, 'W' },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, OPT_PIDFILE },
		{ "status-fd", required_argument, NULL, OPT_STATUS_FD },
		{ "prefetch-threads", required_argument, NULL, OPT_PREFETCH },
		{ "fault-threads", required_argument, NULL, OPT_FAULTS },
		{ "fault-around", required_argument, NULL, OPT_AROUND },
		{ "chunk", required_argument, NULL, OPT_CHUNK },
		{ "section-us", required_argument, NULL, OPT_SECTION },
		{ "no-prefetch", no_argument, NULL, OPT_NO_PREFETCH },
		{ "ws-record", no_argument, NULL, OPT_WS_RECORD },
		{ "ws-out", required_argument, NULL, OPT_WS_OUT },
		{ "ws-record-time", required_argument, NULL, OPT_WS_RECORD_TIME },
		{ "ws-replay", required_argument, NULL, OPT_WS_REPLAY },
		{ "no-ws-replay", no_argument, NULL, OPT_NO_WS_REPLAY },
		{ "page-server", no_argument, NULL, OPT_PAGE_SERVER },
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "ps-wire", required_argument, NULL, OPT_PS_WIRE },
		{ "ps-socket", required_argument, NULL, OPT_PS_SOCKET },
		{ "service", no_argument, NULL, OPT_SERVICE },
		{ "control", required_argument, NULL, OPT_CONTROL },
		{ "control-group", required_argument, NULL, OPT_CONTROL_GROUP },
		{ "progress-file", required_argument, NULL, OPT_PROGRESS },
		{ "ps-timeout", required_argument, NULL, OPT_PS_TIMEOUT },
		{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
		{ "reap", no_argument, NULL, OPT_REAP },
		TLS_OPTIONS,
		{ "log-file", required_argument, NULL, 'o' },
		{ "verbose", optional_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct service_cfg scfg = { .control_path = "/run/lazy-pages/control.sock",
				    .state_dir = "/run/lazy-pages/state" };
	struct session_cfg cfg;
	static struct tls_cfg tls;	/* static: the loaded credentials last as long as the process */
	int service = 0, use_tls = 0, reap = 0, verbose = 0;
	const char *pidfile = NULL, *logfile = NULL;
	int daemon_mode = 0, status_fd = -1, c, ret;
	struct session *s;
	struct lp_err e;
	long v;

	session_cfg_defaults(&cfg);
	log_set_level(LOG_WARN);
	while ((c = getopt_long(argc, argv, "D:W:do:v::h", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			cfg.images_dir = optarg;
			break;
		case 'W':
			cfg.work_dir = optarg;
			break;
		case 'd':
			daemon_mode = 1;
			break;
		case 'o':
			logfile = optarg;
			break;
		case 'v':
			if (cli_verbose("lazy-pagesd", optarg))
				return 1;
			verbose = 1;
			break;
		case OPT_PIDFILE:
			pidfile = optarg;
			break;
		case OPT_STATUS_FD:
			if (cli_num("lazy-pagesd", "--status-fd", optarg, 0, INT_MAX, &v))
				return 1;
			status_fd = (int)v;
			break;
		case OPT_PREFETCH:
			if (cli_num("lazy-pagesd", "--prefetch-threads", optarg, 1, 64, &v))
				return 1;
			cfg.prefetch_threads = (int)v;
			break;
		case OPT_FAULTS:
			if (cli_num("lazy-pagesd", "--fault-threads", optarg, 1, 64, &v))
				return 1;
			cfg.fault_threads = (int)v;
			break;
		case OPT_AROUND:
			if (cli_num("lazy-pagesd", "--fault-around", optarg, 1, 512, &v))
				return 1;
			cfg.fault_around = (unsigned)v;
			break;
		case OPT_CHUNK:
			if (cli_num("lazy-pagesd", "--chunk", optarg, 1, 65536, &v))
				return 1;
			cfg.chunk_pages = (uint64_t)v;
			break;
		case OPT_SECTION:
			if (cli_num("lazy-pagesd", "--section-us", optarg, 1, 1000000, &v))
				return 1;
			cfg.section_us = (unsigned)v;
			break;
		case OPT_NO_PREFETCH:
			cfg.no_prefetch = 1;
			break;
		case OPT_WS_RECORD:
			cfg.ws_record = 1;
			break;
		case OPT_WS_OUT:
			cfg.ws_out = optarg;
			break;
		case OPT_WS_RECORD_TIME:
			if (cli_num("lazy-pagesd", "--ws-record-time", optarg, 1, 86400, &v))
				return 1;
			cfg.ws_record_ms = (unsigned)v * 1000;
			break;
		case OPT_WS_REPLAY:
			cfg.ws_replay = optarg;
			break;
		case OPT_NO_WS_REPLAY:
			cfg.ws_no_replay = 1;
			break;
		case OPT_PAGE_SERVER:
			cfg.remote = 1;
			break;
		case OPT_ADDRESS:
			cfg.ps_address = optarg;
			break;
		case OPT_PORT:
			if (cli_num("lazy-pagesd", "--port", optarg, 1, 65535, &v))
				return 1;
			cfg.ps_port = optarg;
			break;
		case OPT_PS_WIRE:
			if (cli_num("lazy-pagesd", "--ps-wire", optarg, 3, 4, &v))
				return 1;
			cfg.ps_wire = (int)v;
			break;
		case OPT_PS_SOCKET:
			if (cli_num("lazy-pagesd", "--ps-socket", optarg, 0, INT_MAX, &v))
				return 1;
			cfg.ps_socket = (int)v;
			cfg.remote = 1;
			break;
		case OPT_PS_TIMEOUT: {
			char *end;
			double sec;

			errno = 0;
			sec = strtod(optarg, &end);
			if (errno || end == optarg || *end || sec < 0 || sec > 86400) {
				fprintf(stderr, "lazy-pagesd: --ps-timeout: '%s' is not a number of seconds from 0 to 86400\n",
					optarg);
				return 1;
			}
			cfg.ps_timeout_ms = (unsigned)(sec * 1000);
			break;
		}
		case OPT_STATE_DIR:
			scfg.state_dir = optarg;
			break;
		case OPT_PROGRESS:
			cfg.progress = fopen(optarg, "we");
			if (!cfg.progress) {
				fprintf(stderr, "lazy-pagesd: --progress-file %s: %s\n", optarg, strerror(errno));
				return 1;
			}
			break;
		case OPT_SERVICE:
			service = 1;
			break;
		case OPT_REAP:
			reap = 1;
			break;
		case OPT_CONTROL:
			scfg.control_path = optarg;
			break;
		case OPT_CONTROL_GROUP:
			scfg.control_group = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			if (tls_opt(c, optarg, &tls, &use_tls))
				break;
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lazy-pagesd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	/* a service's journal tells what became of each session and process */
	if ((service || reap) && !verbose)
		log_set_level(LOG_INFO);
	if (reap)
		return service_reap(scfg.state_dir);
	if (service) {
		if (cfg.images_dir || cfg.work_dir || cfg.remote || use_tls || daemon_mode || status_fd >= 0) {
			fprintf(stderr, "lazy-pagesd: --service takes sessions from lazy-pagesctl: no -D, -W, "
					"--page-server, --tls, -d or --status-fd with it\n");
			return 1;
		}
		if (logfile && cli_log_file("lazy-pagesd", logfile))
			return 1;
		signal(SIGPIPE, SIG_IGN);
		cli_raise_fd_limit();
		if (pidfile && cli_write_pid(pidfile, getpid()) < 0)
			log_warn("%s: cannot write the pid file", pidfile);
		scfg.defaults = cfg;
		return service_main(&scfg);
	}
	if (!cfg.images_dir)
		cfg.images_dir = ".";
	if ((cfg.ws_out || cfg.ws_record_ms) && !cfg.ws_record) {
		fprintf(stderr, "lazy-pagesd: --ws-out and --ws-record-time go with --ws-record\n");
		return 1;
	}
	if (cfg.ws_replay && cfg.ws_no_replay) {
		fprintf(stderr, "lazy-pagesd: --ws-replay and --no-ws-replay contradict each other\n");
		return 1;
	}
	if (cfg.remote && cfg.ps_socket < 0 && (!cfg.ps_address || !cfg.ps_port)) {
		fprintf(stderr, "lazy-pagesd: --page-server needs --address and --port (or --ps-socket FD)\n");
		return 1;
	}
	if (!cfg.remote && (cfg.ps_address || cfg.ps_port)) {
		fprintf(stderr, "lazy-pagesd: --address/--port go with --page-server\n");
		return 1;
	}
	if (use_tls && (!cfg.remote || cfg.ps_socket >= 0)) {
		/* CRIU's client does no TLS on --ps-socket either */
		fprintf(stderr, "lazy-pagesd: --tls goes with --page-server --address A --port P (not --ps-socket)\n");
		return 1;
	}
	if (cfg.ps_socket >= 0 && fcntl(cfg.ps_socket, F_GETFD) < 0) {
		fprintf(stderr, "lazy-pagesd: --ps-socket %d: not an open file descriptor\n", cfg.ps_socket);
		return 1;
	}
	if (status_fd >= 0 && fcntl(status_fd, F_GETFD) < 0) {
		fprintf(stderr, "lazy-pagesd: --status-fd %d: not an open file descriptor\n", status_fd);
		return 1;
	}
	if (logfile) {
		if (cli_log_file("lazy-pagesd", logfile))
			return 1;
		setenv("LP_KEEP_STDERR", "1", 1);
	}
	/* a restored process's uffd must never take the daemon down through SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	cli_raise_fd_limit();
	if (use_tls) {
		if (tls_cfg_load(&tls, &e)) {
			log_err("%s", e.msg);
			return 1;
		}
		cfg.ps_tls = &tls;
	}

	s = session_new(&cfg, &e);
	if (!s) {
		log_err("%s", e.msg);
		return 1;
	}
	ret = session_listen(s, &e);
	if (ret) {
		log_err("%s", e.msg);
		session_free(s);
		return 1;
	}
	if (daemon_mode && cli_daemonize("lazy-pagesd", pidfile, getenv("LP_KEEP_STDERR") != NULL) < 0) {
		log_err("--daemon: fork: %s", strerror(errno));
		session_free(s);
		return 1;
	}
	if (!daemon_mode && pidfile && cli_write_pid(pidfile, getpid()) < 0)
		log_warn("%s: cannot write the pid file", pidfile);
	if (status_fd >= 0) {
		char zero = 0;

		if (write(status_fd, &zero, 1) != 1)
			log_warn("--status-fd %d: %s", status_fd, strerror(errno));
		close(status_fd);
	}

	ret = session_serve(s, &e);
	if (ret) {
		log_err("%s", e.msg);
		session_free(s);
		return 1;
	}
	session_summary(s, stdout);
	session_free(s);
	return 0;
}
