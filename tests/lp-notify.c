/* SPDX-License-Identifier: MIT */
/*
 * lp-notify: a NOTIFY_SOCKET for tests, in place of systemd. It binds an
 * AF_UNIX datagram socket and writes every assignment it receives
 * (READY=1, STATUS=..., WATCHDOG=1, ...) as one line, flushed, until
 * killed; fds sent with SCM_RIGHTS (FDSTORE=1) are closed and counted as a
 * line "fds=N". With --wait it is the other half: it blocks (inotify, no
 * sleeping) until such a file holds N lines containing a string.
 *
 *   lp-notify [-d] [-p] [-t] [-o FILE] SOCKET
 *   lp-notify --wait FILE --match STR [--count N] [--timeout SEC] [--pid PID]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_DGRAM 65536		/* sd_notify messages are far smaller */
#define MAX_FDS 253		/* SCM_MAX_FD */

static int notify_bind(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, one = 1;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "lp-notify: %s: path too long\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("lp-notify: socket");
		return -1;
	}
	/* the credentials say who sent each message (pid= prefix with -p) */
	setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "lp-notify: bind %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void emit(int out, const char *prefix, const char *s, size_t len)
{
	char line[MAX_DGRAM + 64];
	int n;

	n = snprintf(line, sizeof(line), "%s%.*s\n", prefix, (int)len, s);
	if (n > (int)sizeof(line))
		n = (int)sizeof(line);
	/* one write per line: a reader never sees half of one */
	if (write(out, line, (size_t)n) < 0)
		perror("lp-notify: write");
}

static int notify_loop(int fd, int out, int with_pid, int with_time)
{
	static char buf[MAX_DGRAM + 1];
	union {
		char b[CMSG_SPACE(sizeof(int) * MAX_FDS) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} ctl;

	for (;;) {
		struct iovec iov = { .iov_base = buf, .iov_len = MAX_DGRAM };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				     .msg_controllen = sizeof(ctl.b) };
		struct cmsghdr *c;
		char prefix[64] = "";
		size_t pl = 0;
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		int nfds = 0, i, k;
		char *p, *end, *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("lp-notify: recvmsg");
			return 1;
		}
		if (with_time) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			pl = (size_t)snprintf(prefix, sizeof(prefix), "t=%lld.%03ld ", (long long)ts.tv_sec,
					      ts.tv_nsec / 1000000);
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_RIGHTS) {
				k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				for (i = 0; i < k; i++)
					close(((int *)CMSG_DATA(c))[i]);
				nfds += k;
			} else if (c->cmsg_type == SCM_CREDENTIALS && with_pid) {
				struct ucred uc;

				memcpy(&uc, CMSG_DATA(c), sizeof(uc));
				snprintf(prefix + pl, sizeof(prefix) - pl, "pid=%d ", (int)uc.pid);
			}
		}
		/* a message may carry several newline-separated assignments: one line each */
		end = buf + n;
		for (p = buf; p < end; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(end - p));
			if (!nl)
				nl = end;
			if (nl > p)
				emit(out, prefix, p, (size_t)(nl - p));
		}
		if (nfds || (mh.msg_flags & MSG_CTRUNC)) {
			char s[48];

			k = snprintf(s, sizeof(s), "fds=%d%s", nfds, mh.msg_flags & MSG_CTRUNC ? " (truncated)" : "");
			emit(out, prefix, s, (size_t)k);
		}
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts the complete lines of FILE from *POS on that contain MATCH; keeps a partial last line for later. */
static int scan(int fd, off_t *pos, const char *match, unsigned *count)
{
	static char buf[MAX_DGRAM + 64];
	ssize_t n;
	char *p, *nl;

	for (;;) {
		n = pread(fd, buf, sizeof(buf) - 1, *pos);
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		buf[n] = '\0';
		for (p = buf; (nl = memchr(p, '\n', (size_t)(buf + n - p))); p = nl + 1) {
			*nl = '\0';
			if (strstr(p, match))
				(*count)++;
		}
		if (p == buf)
			return 0;	/* only a partial line: wait for its end */
		*pos += p - buf;
	}
}

static int wait_main(const char *file, const char *match, unsigned want, int timeout_s, int pid)
{
	struct pollfd pfd[2];
	long long deadline = now_ms() + (long long)timeout_s * 1000;
	unsigned count = 0;
	off_t pos = 0;
	int in, fd, pidfd = -1, np = 1, r;
	char ev[4096];

	in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (in < 0 || inotify_add_watch(in, file, IN_MODIFY) < 0) {
		fprintf(stderr, "lp-notify: watching %s: %s\n", file, strerror(errno));
		return 2;
	}
	/* the watch is in place before the first read: no write is missed */
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "lp-notify: %s: %s\n", file, strerror(errno));
		return 2;
	}
	pfd[0].fd = in;
	pfd[0].events = POLLIN;
	if (pid > 0) {
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd >= 0) {
			pfd[1].fd = pidfd;
			pfd[1].events = POLLIN;
			np = 2;
		}
	}
	for (;;) {
		long long left;

		r = scan(fd, &pos, match, &count);
		if (r < 0) {
			fprintf(stderr, "lp-notify: %s: %s\n", file, strerror(-r));
			return 2;
		}
		if (count >= want)
			return 0;
		left = deadline - now_ms();
		if (left <= 0) {
			fprintf(stderr, "lp-notify: %s: %u of %u line(s) with '%s' after %d s\n", file, count, want,
				match, timeout_s);
			return 1;
		}
		r = poll(pfd, (nfds_t)np, (int)left);
		if (r < 0 && errno != EINTR) {
			perror("lp-notify: poll");
			return 2;
		}
		if (np == 2 && (pfd[1].revents & POLLIN)) {
			/* the sender is gone: whatever it wrote last is all there will be */
			r = scan(fd, &pos, match, &count);
			if (r == 0 && count >= want)
				return 0;
			fprintf(stderr, "lp-notify: pid %d exited; %u of %u line(s) with '%s' in %s\n", pid, count,
				want, match, file);
			return 1;
		}
		while (read(in, ev, sizeof(ev)) > 0)
			;
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lp-notify [-d] [-p] [-t] [-o FILE] SOCKET\n"
		"       lp-notify --wait FILE --match STR [--count N] [--timeout SEC] [--pid PID]\n"
		"The first form listens on SOCKET (a NOTIFY_SOCKET) and writes one line per\n"
		"assignment received to FILE (default stdout); -d returns once bound, printing\n"
		"the listener's pid; -p prefixes each line with pid=SENDER, -t with t=SECONDS\n"
		"(CLOCK_MONOTONIC, at receipt). The second waits until FILE has N (default 1)\n"
		"lines containing STR: exit 0, else 1 after SEC (default 10) seconds or once\n"
		"PID has exited.\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "wait", required_argument, NULL, 'w' },
		{ "match", required_argument, NULL, 'm' },
		{ "count", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "pid", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *outpath = NULL, *waitfile = NULL, *match = NULL;
	int daemonize = 0, with_pid = 0, with_time = 0, timeout_s = 10, pid = 0, opt, fd, nul, out = STDOUT_FILENO;
	unsigned count = 1;
	pid_t child;

	while ((opt = getopt_long(argc, argv, "dpto:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': daemonize = 1; break;
		case 'p': with_pid = 1; break;
		case 't': with_time = 1; break;
		case 'o': outpath = optarg; break;
		case 'w': waitfile = optarg; break;
		case 'm': match = optarg; break;
		case 'c': count = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'T': timeout_s = atoi(optarg); break;
		case 'P': pid = atoi(optarg); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (waitfile) {
		if (!match || optind != argc) {
			usage();
			return 2;
		}
		return wait_main(waitfile, match, count, timeout_s, pid);
	}
	if (optind != argc - 1 || (daemonize && !outpath)) {
		usage();
		return 2;
	}
	if (outpath) {
		out = open(outpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (out < 0) {
			fprintf(stderr, "lp-notify: %s: %s\n", outpath, strerror(errno));
			return 1;
		}
	}
	fd = notify_bind(argv[optind]);
	if (fd < 0)
		return 1;
	if (daemonize) {
		fflush(stdout);
		child = fork();
		if (child < 0) {
			perror("lp-notify: fork");
			return 1;
		}
		if (child > 0) {
			/* bound already: the caller may start the notifier right away */
			printf("%d\n", (int)child);
			return 0;
		}
		/*
		 * Not setsid(): the listener stays in the caller's process group
		 * so that timeout(1) ends it too. Its stdout must not keep the
		 * caller's $(...) pipe open.
		 */
		nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul >= 0) {
			dup2(nul, STDIN_FILENO);
			dup2(nul, STDOUT_FILENO);
			close(nul);
		}
	}
	return notify_loop(fd, out, with_pid, with_time);
}
