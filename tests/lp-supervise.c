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
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * lp-supervise --notify PATH --listen SOCK [--fdstore-max N] [--lose NAME]...
 *              [--restarts N] [--pidfile F] -- CMD ARGS...
 * Creates the listening unix socket SOCK (passed as fd 3, named "control")
 * and a NOTIFY_SOCKET at PATH; runs CMD with LISTEN_FDS/LISTEN_FDNAMES/
 * LISTEN_PID as systemd does; keeps the fds CMD sends with FDSTORE=1
 * (by FDNAME; FDSTOREREMOVE=1 drops them); when CMD dies by a signal,
 * starts it again (at most N times) with the control socket and every
 * stored fd. Prints one line per event: ready, stored NAME, removed NAME,
 * refused NAME, lost NAME, restart PID, exit CODE. Exits with CMD's exit
 * code once it exits.
 *
 * The fd store is systemd's: it keeps at most --fdstore-max fds (default
 * 0, as FileDescriptorStoreMax=), closes any beyond ("refused NAME"), and
 * ignores an fd it holds already; with N > 0, CMD gets $FDSTORE=N, as
 * systemd >= 254 sets it. --lose NAME drops that fd from the store at a
 * restart ("lost NAME"), as if the store had not kept it: the restarted
 * CMD must cope without it.
 */

#define MAX_STORE 65536
#define MAX_LOSE 16

static int nstore, store_max;
static int store_fd[MAX_STORE];
static char *store_name[MAX_STORE];
static const char *lose[MAX_LOSE];
static int nlose;

/* Does the store hold FD's open file already (kcmp, as systemd's same_fd)? */
static int stored_already(int fd)
{
	pid_t me = getpid();
	int i;

	for (i = 0; i < nstore; i++)
		if (syscall(SYS_kcmp, me, me, KCMP_FILE, store_fd[i], fd) == 0)
			return 1;
	return 0;
}

/* --lose: the named fds leave the store before a restart. */
static void lose_some(void)
{
	int i, k;

	for (k = 0; k < nlose; k++)
		for (i = 0; i < nstore; i++)
			if (!strcmp(store_name[i], lose[k])) {
				close(store_fd[i]);
				free(store_name[i]);
				store_fd[i] = store_fd[nstore - 1];
				store_name[i] = store_name[--nstore];
				printf("lost %s\n", lose[k]);
				break;
			}
}

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
	int i, n = 1 + nstore, *high;
	size_t len, cap;
	char *names, buf[32];

	if (pid)
		return pid;
	/*
	 * fd 3 is the control socket, then the stored fds in order; moved out
	 * of the way first, so that no dup2 below overwrites one still to come
	 */
	high = calloc((size_t)n, sizeof(int));
	cap = 16;
	for (i = 0; i < nstore; i++)
		cap += strlen(store_name[i]) + 1;
	names = malloc(cap);
	if (!high || !names)
		_exit(127);
	high[0] = fcntl(ctl, F_DUPFD_CLOEXEC, 3 + n);
	for (i = 0; i < nstore; i++)
		high[1 + i] = fcntl(store_fd[i], F_DUPFD_CLOEXEC, 3 + n);
	len = (size_t)snprintf(names, cap, "control");
	for (i = 0; i < n; i++) {
		if (high[i] < 0 || dup2(high[i], 3 + i) < 0)
			_exit(127);
		if (i)
			len += (size_t)snprintf(names + len, cap - len, ":%s", store_name[i - 1]);
	}
	snprintf(buf, sizeof(buf), "%d", n);
	setenv("LISTEN_FDS", buf, 1);
	if (store_max > 0) {
		snprintf(buf, sizeof(buf), "%d", store_max);
		setenv("FDSTORE", buf, 1);
	}
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
			if (stored_already(fds[i])) {
				close(fds[i]);
			} else if (nstore < store_max) {
				store_fd[nstore] = fds[i];
				store_name[nstore++] = strdup(name[0] ? name : "stored");
				printf("stored %s\n", name);
			} else {
				close(fds[i]);
				printf("refused %s\n", name);
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
		{ "fdstore-max", required_argument, NULL, 'm' },
		{ "lose", required_argument, NULL, 'L' },
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
		case 'm':
			store_max = atoi(optarg);
			if (store_max < 0 || store_max > MAX_STORE) {
				fprintf(stderr, "lp-supervise: --fdstore-max: 0 to %d\n", MAX_STORE);
				return 2;
			}
			break;
		case 'L':
			if (nlose == MAX_LOSE)
				return 2;
			lose[nlose++] = optarg;
			break;
		default:
			return 2;
		}
	}
	if (!notify || !sock || optind >= argc) {
		fprintf(stderr, "usage: lp-supervise --notify PATH --listen SOCK [--fdstore-max N] [--lose NAME]... "
				"[--restarts N] [--pidfile F] -- CMD...\n");
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
			lose_some();
			continue;
		}
		printf("exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
}
