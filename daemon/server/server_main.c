/* SPDX-License-Identifier: MIT */
/* lazy-pages-server: serves a CRIU image dir over CRIU's page-server protocol, to many clients. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "access.h"
#include "cli.h"
#include "log.h"
#include "ps_wire.h"
#include "server.h"
#include "tls.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: lazy-pages-server -D DIR --port P [--address A] [--ps-wire 3|4]\n"
		"                         [--allow ADDR[/PREFIX]]... [--insecure]\n"
		"                         [--serve-once | --max-restores N] [--idle-exit SECONDS]\n"
		"                         [-d|--daemon] [--pidfile F] [--status-fd N] [--port-file F]\n"
		"                         [--max-clients N] [-o LOG] [-v[N]]\n"
		"                         [--tls [--tls-cacert F] [--tls-cacrl F] [--tls-cert F]\n"
		"                                [--tls-key F] [--tls-no-cn-verify]]\n"
		"Serves the pages of the CRIU image directory DIR to `criu lazy-pages --page-server`\n"
		"and lazy-pagesd clients (page-server GET), to many clients at once, as often as\n"
		"asked. --ps-wire 4 (default) is CRIU 4.2's 32-byte header, 3 the 24-byte one of\n"
		"CRIU <= 4.1. Port 0 binds an ephemeral port (see --port-file). Stops on SIGTERM.\n"
		"Who may read the pages: without --tls it listens on " SERVER_DEFAULT_ADDRESS " only;\n"
		"another --address needs --allow (the peers that may connect, checked before\n"
		"anything is read; repeatable) or --insecure. --tls as `criu page-server --tls`:\n"
		"clients must show a certificate from the CA, issued to --address (if given)\n"
		"unless --tls-no-cn-verify; it listens on " SERVER_DEFAULT_ADDRESS_TLS " unless --address.\n"
		"--serve-once stops after the first client that reached CLOSE (a complete\n"
		"restore), --max-restores after N; --idle-exit after SECONDS without a client.\n");
}

enum {
	OPT_PORT = 256,
	OPT_ADDRESS,
	OPT_WIRE,
	OPT_PIDFILE,
	OPT_STATUS_FD,
	OPT_PORT_FILE,
	OPT_MAX_CLIENTS,
	OPT_ALLOW,
	OPT_INSECURE,
	OPT_SERVE_ONCE,
	OPT_MAX_RESTORES,
	OPT_IDLE_EXIT,
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ "ps-wire", required_argument, NULL, OPT_WIRE },
		{ "daemon", no_argument, NULL, 'd' },
		{ "pidfile", required_argument, NULL, OPT_PIDFILE },
		{ "status-fd", required_argument, NULL, OPT_STATUS_FD },
		{ "port-file", required_argument, NULL, OPT_PORT_FILE },
		{ "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
		{ "allow", required_argument, NULL, OPT_ALLOW },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "serve-once", no_argument, NULL, OPT_SERVE_ONCE },
		{ "max-restores", required_argument, NULL, OPT_MAX_RESTORES },
		{ "idle-exit", required_argument, NULL, OPT_IDLE_EXIT },
		TLS_OPTIONS,
		{ "log-file", required_argument, NULL, 'o' },
		{ "verbose", optional_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pidfile = NULL, *logfile = NULL, *portfile = NULL;
	int daemon_mode = 0, status_fd = -1, sfd = -1, c, ret = 1, use_tls = 0, serve_once = 0;
	static struct access_net allow[ACCESS_MAX_NETS];
	struct tls_cfg tls = { 0 };
	struct server_cfg cfg;
	struct server *s = NULL;
	struct lp_err e = { 0 };
	char buf[32];
	sigset_t mask;
	long v;

	server_cfg_defaults(&cfg);
	log_set_ident("lazy-pages-server");
	log_set_level(LOG_WARN);
	while ((c = getopt_long(argc, argv, "D:do:v::h", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			cfg.images_dir = optarg;
			break;
		case OPT_PORT:
			if (cli_num("lazy-pages-server", "--port", optarg, 0, 65535, &v))
				return 1;
			cfg.port = (int)v;
			break;
		case OPT_ADDRESS:
			cfg.address = optarg;
			break;
		case OPT_WIRE:
			if (cli_num("lazy-pages-server", "--ps-wire", optarg, PS_WIRE_3, PS_WIRE_4, &v))
				return 1;
			cfg.wire = (int)v;
			break;
		case 'd':
			daemon_mode = 1;
			break;
		case OPT_PIDFILE:
			pidfile = optarg;
			break;
		case OPT_STATUS_FD:
			if (cli_num("lazy-pages-server", "--status-fd", optarg, 0, INT_MAX, &v))
				return 1;
			status_fd = (int)v;
			break;
		case OPT_PORT_FILE:
			portfile = optarg;
			break;
		case OPT_MAX_CLIENTS:
			if (cli_num("lazy-pages-server", "--max-clients", optarg, 1, 4096, &v))
				return 1;
			cfg.max_clients = (int)v;
			break;
		case OPT_ALLOW:
			if (cfg.nr_allow == ACCESS_MAX_NETS) {
				fprintf(stderr, "lazy-pages-server: --allow: more than %d entries\n",
					ACCESS_MAX_NETS);
				return 1;
			}
			if (access_net_parse(optarg, &allow[cfg.nr_allow], &e) < 0) {
				fprintf(stderr, "lazy-pages-server: --allow %s\n", e.msg);
				return 1;
			}
			cfg.allow = allow;
			cfg.nr_allow++;
			break;
		case OPT_INSECURE:
			cfg.insecure = true;
			break;
		case OPT_SERVE_ONCE:
			serve_once = 1;
			break;
		case OPT_MAX_RESTORES:
			if (cli_num("lazy-pages-server", "--max-restores", optarg, 1, INT_MAX, &v))
				return 1;
			cfg.max_restores = (unsigned int)v;
			break;
		case OPT_IDLE_EXIT:
			if (cli_num("lazy-pages-server", "--idle-exit", optarg, 1, INT_MAX, &v))
				return 1;
			cfg.idle_exit_s = (unsigned int)v;
			break;
		case 'o':
			logfile = optarg;
			break;
		case 'v':
			if (cli_verbose("lazy-pages-server", optarg))
				return 1;
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
		fprintf(stderr, "lazy-pages-server: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	if (cfg.port < 0) {
		fprintf(stderr, "lazy-pages-server: --port is required (0 for an ephemeral port)\n");
		usage(stderr);
		return 1;
	}
	if (serve_once && cfg.max_restores) {
		fprintf(stderr, "lazy-pages-server: --serve-once is --max-restores 1: give one of them\n");
		return 1;
	}
	if (serve_once)
		cfg.max_restores = 1;
	if (status_fd >= 0 && fcntl(status_fd, F_GETFD) < 0) {
		fprintf(stderr, "lazy-pages-server: --status-fd %d: not an open file descriptor\n",
			status_fd);
		return 1;
	}
	if (logfile && cli_log_file("lazy-pages-server", logfile))
		return 1;
	/* a client that hangs up mid-reply must only end its own connection */
	signal(SIGPIPE, SIG_IGN);
	/* blocked before any thread starts, so every thread inherits the mask */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
		log_err("sigprocmask: %s", strerror(errno));
		return 1;
	}

	if (use_tls) {
		if (tls_cfg_load(&tls, &e) < 0) {
			log_err("%s", e.msg);
			return 1;
		}
		cfg.tls = &tls;
	}
	s = server_new(&cfg, &e);
	if (!s) {
		log_err("%s", e.msg);
		goto out;
	}
	if (server_listen(s, &e) < 0) {
		log_err("%s", e.msg);
		goto out;
	}
	log_info("serving %s on %s port %d, CRIU page-server wire %s, up to %d clients%s%s",
		 cfg.images_dir, server_address(s), server_port(s),
		 cfg.wire == PS_WIRE_3 ? "3.x (24-byte header)" : "4.2 (32-byte header)",
		 cfg.max_clients, use_tls ? ", TLS with client certificates" : "",
		 cfg.nr_allow ? ", peers on the --allow list only" : "");
	if (portfile) {
		int r;

		snprintf(buf, sizeof(buf), "%d\n", server_port(s));
		r = cli_write_file(portfile, buf);
		if (r < 0) {
			log_err("%s: cannot write the port file: %s", portfile, strerror(-r));
			goto out;
		}
	}
	if (daemon_mode && cli_daemonize("lazy-pages-server", pidfile, logfile != NULL) < 0) {
		log_err("--daemon: fork: %s", strerror(errno));
		goto out;
	}
	if (!daemon_mode && pidfile && cli_write_pid(pidfile, getpid()) < 0)
		log_warn("%s: cannot write the pid file", pidfile);
	/* SIGTERM/SIGINT end server_run through this fd; the mask above keeps them pending */
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0) {
		log_err("signalfd: %s", strerror(errno));
		goto out;
	}
	if (status_fd >= 0) {
		char zero = 0;

		if (write(status_fd, &zero, 1) != 1)
			log_warn("--status-fd %d: %s", status_fd, strerror(errno));
		close(status_fd);
	}

	if (server_run(s, sfd, &e) < 0) {
		log_err("%s", e.msg);
		goto out;
	}
	log_info("stopped");
	ret = 0;
out:
	server_free(s);
	tls_cfg_free(&tls);
	if (sfd >= 0)
		close(sfd);
	return ret;
}
