/* SPDX-License-Identifier: MIT */
/* cli: number parsing, pid files, --daemon and the TLS options, once for both programs. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"

int cli_num(const char *prog, const char *opt, const char *arg, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < lo || v > hi) {
		fprintf(stderr, "%s: %s: '%s' is not a number from %ld to %ld\n", prog, opt, arg, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

int cli_write_file(const char *path, const char *text)
{
	size_t n = strlen(text);
	char tmp[PATH_MAX];
	int fd, ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, text, n) != (ssize_t)n)
		ret = -EIO;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

int cli_write_pid(const char *path, pid_t pid)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	return cli_write_file(path, buf);
}

int cli_daemonize(const char *prog, const char *pidfile, bool keep_stderr)
{
	int p[2], fd;
	pid_t pid;
	char c;

	/*
	 * The child writes the pid file, then lets the parent exit: the file
	 * is there when the parent's exit says "started" (systemd's
	 * Type=forking reads it then) and before the child can report
	 * itself ready on a status fd.
	 */
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid > 0) {
		ssize_t n;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		_exit(n == 1 ? 0 : 1);
	}
	close(p[0]);
	if (pidfile && cli_write_pid(pidfile, getpid()) < 0) {
		fprintf(stderr, "%s: %s: cannot write the pid file\n", prog, pidfile);
		_exit(1);	/* the parent reads EOF and exits 1 */
	}
	setsid();
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		if (!keep_stderr)
			dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	c = 0;
	if (write(p[1], &c, 1) != 1) {
		/* the parent is gone: nobody waits for us to say so */
	}
	close(p[1]);
	return 0;
}

int cli_verbose(const char *prog, const char *arg)
{
	long v;

	if (!arg) {
		log_set_level(log_get_level() < LOG_INFO ? LOG_INFO : LOG_DEBUG);
		return 0;
	}
	if (cli_num(prog, "-v", arg, 0, 9, &v))
		return -1;
	log_set_level(v <= 1 ? LOG_ERR : v >= 4 ? LOG_DEBUG : (int)v - 1);
	return 0;
}

int cli_log_file(const char *prog, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

void cli_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
