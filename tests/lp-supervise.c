/* SPDX-License-Identifier: MIT */
/* lp-supervise: the part of systemd a restart test needs: socket activation, notify, fd store, restart. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * lp-supervise --notify PATH --listen SOCK [--restarts N] [--pidfile F] -- CMD ARGS...
 * Creates the listening unix socket SOCK (passed as fd 3, named "control")
 * and a NOTIFY_SOCKET at PATH; runs CMD with LISTEN_FDS/LISTEN_FDNAMES/
 * LISTEN_PID as systemd does; keeps the fds CMD sends with FDSTORE=1
 * (by FDNAME; FDSTOREREMOVE=1 drops them); when CMD dies by a signal,
 * starts it again (at most N times) with the control socket and every
 * stored fd. Prints one line per event: ready, stored NAME, removed NAME,
 * restart PID, exit CODE. Exits with CMD's exit code once it exits.
 */

#define MAX_STORE 4096

static int nstore;
static int store_fd[MAX_STORE];
static char *store_name[MAX_STORE];

static int listen_unix(const char *path, int type)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	if (fd < 0 || strlen(path) >= sizeof(sun.sun_path))
		return -1;
	strcpy(sun.sun_path, path);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || (type == SOCK_STREAM && listen(fd, 64) < 0)) {
		close(fd);
		return -1;
	}
	if (type == SOCK_STREAM)
		chmod(path, 0600);
	return fd;
}

static pid_t start(char **cmd, const char *notify, int ctl)
{
	pid_t pid = fork();
	char names[65536], buf[32];
	int i, n = 1 + nstore, len;

	if (pid)
		return pid;
	/* fd 3 is the control socket, then the stored fds in order */
	if (dup2(ctl, 3) < 0)
		_exit(127);
	len = snprintf(names, sizeof(names), "control");
	for (i = 0; i < nstore; i++) {
		if (dup2(store_fd[i], 4 + i) < 0)
			_exit(127);
		len += snprintf(names + len, sizeof(names) - (size_t)len, ":%s", store_name[i]);
	}
	for (i = 3; i < 3 + n; i++)
		fcntl(i, F_SETFD, 0);
	snprintf(buf, sizeof(buf), "%d", n);
	setenv("LISTEN_FDS", buf, 1);
	snprintf(buf, sizeof(buf), "%d", (int)getpid());
	setenv("LISTEN_PID", buf, 1);
	setenv("LISTEN_FDNAMES", names, 1);
	setenv("NOTIFY_SOCKET", notify, 1);
	execvp(cmd[0], cmd);
	_exit(127);
}

/* One notify datagram: KEY=VALUE lines, maybe fds. */
static void notify_msg(int nfd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 64)];
		struct cmsghdr align;
	} ctl;
	char data[4096], name[256] = "";
	struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	int fds[64], nf = 0, i, k, store = 0, remove = 0;
	struct cmsghdr *c;
	char *line, *save;
	ssize_t n;

	n = recvmsg(nfd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return;
	data[n] = '\0';
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			for (k = 0; k < (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int)) && nf < 64; k++)
				fds[nf++] = ((int *)CMSG_DATA(c))[k];
	for (line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "READY=1"))
			printf("ready\n");
		else if (!strcmp(line, "FDSTORE=1"))
			store = 1;
		else if (!strcmp(line, "FDSTOREREMOVE=1"))
			remove = 1;
		else if (!strncmp(line, "FDNAME=", 7))
			snprintf(name, sizeof(name), "%s", line + 7);
	}
	if (store)
		for (i = 0; i < nf; i++) {
			if (nstore < MAX_STORE) {
				store_fd[nstore] = fds[i];
				store_name[nstore++] = strdup(name[0] ? name : "stored");
				printf("stored %s\n", name);
			} else {
				close(fds[i]);
			}
		}
	else
		for (i = 0; i < nf; i++)
			close(fds[i]);
	if (remove)
		for (i = 0; i < nstore;) {
			if (!strcmp(store_name[i], name)) {
				close(store_fd[i]);
				free(store_name[i]);
				store_fd[i] = store_fd[nstore - 1];
				store_name[i] = store_name[--nstore];
				printf("removed %s\n", name);
				continue;
			}
			i++;
		}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "notify", required_argument, NULL, 'n' },
		{ "listen", required_argument, NULL, 'l' },
		{ "restarts", required_argument, NULL, 'r' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *notify = NULL, *sock = NULL, *pidfile = NULL;
	int restarts = 1, c, nfd, ctl, st;
	pid_t pid;

	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			notify = optarg;
			break;
		case 'l':
			sock = optarg;
			break;
		case 'r':
			restarts = atoi(optarg);
			break;
		case 'p':
			pidfile = optarg;
			break;
		default:
			return 2;
		}
	}
	if (!notify || !sock || optind >= argc) {
		fprintf(stderr, "usage: lp-supervise --notify PATH --listen SOCK [--restarts N] [--pidfile F] -- CMD...\n");
		return 2;
	}
	nfd = listen_unix(notify, SOCK_DGRAM);
	ctl = listen_unix(sock, SOCK_STREAM);
	if (nfd < 0 || ctl < 0) {
		fprintf(stderr, "lp-supervise: sockets: %s\n", strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		pid = start(argv + optind, notify, ctl);
		if (pid < 0)
			return 1;
		if (pidfile) {
			FILE *f = fopen(pidfile, "w");

			if (f) {
				fprintf(f, "%d\n", (int)pid);
				fclose(f);
			}
		}
		printf("started %d\n", (int)pid);
		for (;;) {
			struct pollfd p = { .fd = nfd, .events = POLLIN };

			poll(&p, 1, 20);
			if (p.revents)
				notify_msg(nfd);
			if (waitpid(pid, &st, WNOHANG) == pid)
				break;
		}
		while (poll(&(struct pollfd){ .fd = nfd, .events = POLLIN }, 1, 0) > 0)
			notify_msg(nfd);
		if (WIFSIGNALED(st) && restarts-- > 0) {
			printf("killed by signal %d; restart\n", WTERMSIG(st));
			continue;
		}
		printf("exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
}
