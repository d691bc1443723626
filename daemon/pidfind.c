/* SPDX-License-Identifier: MIT */
/* pidfind: a scan of /proc, only used when a session is abandoned. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pidfind.h"

struct pinfo {
	pid_t pid, ppid, nspid;
	int mark;
};

static int read_status(pid_t pid, struct pinfo *pi)
{
	char path[64], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	pi->pid = pid;
	pi->ppid = 0;
	pi->nspid = pid;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "PPid:", 5))
			pi->ppid = (pid_t)strtol(line + 5, NULL, 10);
		else if (!strncmp(line, "NSpid:", 6)) {
			char *p = line + 6, *end;
			long v;

			/* the last number is the pid in the innermost namespace */
			for (;;) {
				v = strtol(p, &end, 10);
				if (end == p)
					break;
				pi->nspid = (pid_t)v;
				p = end;
			}
		}
	}
	fclose(f);
	return 0;
}

/*
 * Has PID a mapping containing [start, end)? 0 no; 1 yes, not registered
 * with a uffd; 2 yes and registered (smaps VmFlags "um").
 */
static int mapping_of(pid_t pid, uint64_t start, uint64_t end)
{
	char path[64], line[512];
	unsigned long long a, b;
	int in = 0, found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		if (isxdigit((unsigned char)line[0]) && sscanf(line, "%llx-%llx", &a, &b) == 2)
			in = a <= start && b >= end;
		else if (in && !strncmp(line, "VmFlags:", 8))
			found = strstr(line, " um") ? 2 : 1;
	}
	fclose(f);
	return found;
}

static int has_lazy_mapping(pid_t pid, uint64_t start, uint64_t end)
{
	return mapping_of(pid, start, end) == 2;
}

static int by_pid(const void *a, const void *b)
{
	const struct pinfo *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

int pidfind(pid_t vpid, pid_t root, const pid_t *stop, int nstop, uint64_t start, uint64_t end, pid_t *out,
	    int max)
{
	struct pinfo *v = NULL, *nv;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	int changed, k = 0;
	DIR *d;

	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);

		if (pid <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				closedir(d);
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		if (read_status(pid, &v[n]) == 0) {
			int j;

			v[n].mark = pid == root ? 2 : 0;
			for (j = 0; j < nstop && pid != root; j++)
				if (stop[j] == pid)
					v[n].mark = 1;	/* not below ROOT's line: the walk stops here */
			n++;
		}
	}
	closedir(d);
	qsort(v, n, sizeof(*v), by_pid);
	/* mark the descendants of ROOT (2), a fixed point over the parent links */
	do {
		changed = 0;
		for (i = 0; root > 0 && i < n; i++) {
			struct pinfo key = { .pid = v[i].ppid }, *par;

			if (v[i].mark)
				continue;
			par = bsearch(&key, v, n, sizeof(*v), by_pid);
			if (par && par->mark == 2) {
				v[i].mark = 2;
				changed = 1;
			}
		}
	} while (changed);
	for (i = 0; i < n && k < max; i++) {
		if (v[i].pid == root)
			continue;
		if (!(v[i].mark == 2 || (vpid && v[i].nspid == vpid)))
			continue;
		if (has_lazy_mapping(v[i].pid, start, end))
			out[k++] = v[i].pid;
	}
	free(v);
	return k;
}

/* PID's state letter (field 3 of /proc/PID/stat), 0 if there is no such process. */
static char pid_state(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	char st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		p = strrchr(buf, ')');
		st = p && p[1] ? p[2] : 0;
	}
	fclose(f);
	return st;
}

int pid_gone(pid_t pid)
{
	char st = pid_state(pid);

	return !st || st == 'Z' || st == 'X';
}

int pid_stopped(pid_t pid)
{
	char st = pid_state(pid);

	return !st || st == 'Z' || st == 'X' || st == 'T' || st == 't';
}

int pid_start(pid_t pid, uint64_t *start)
{
	char path[64], buf[1024], *p;
	unsigned long long v;
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -ESRCH;
	buf[n] = '\0';
	/* the name may hold spaces and parentheses: fields count from the last ')' (field 2's end) */
	p = strrchr(buf, ')');
	for (i = 2; p && i < 22; i++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p + 1, "%llu", &v) != 1)
		return -EINVAL;
	*start = v;
	return 0;
}

int pid_kill_same(pid_t pid, uint64_t start, uint64_t probe)
{
	struct pollfd pf = { .events = POLLIN };
	uint64_t now;
	int ret;

	if (pid <= 0)
		return 0;
	/* the pidfd pins the process: what is checked below is what gets the signal */
	pf.fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pf.fd < 0)
		return errno == ESRCH ? 0 : -errno;
	if (pid_start(pid, &now) || now != start || (probe && !mapping_of(pid, probe, probe + 1)) || pid_gone(pid)) {
		close(pf.fd);
		return 0;
	}
	ret = (int)syscall(SYS_pidfd_send_signal, pf.fd, SIGKILL, NULL, 0);
	if (ret < 0) {
		ret = errno == ESRCH ? 0 : -errno;
		close(pf.fd);
		return ret;
	}
	/* readable once it has exited */
	poll(&pf, 1, 2000);
	close(pf.fd);
	return 1;
}

int pidfind_children(pid_t parent, uint64_t from, uint64_t to, uint64_t probe, int any, pid_t *out, int max)
{
	struct dirent *de;
	struct pinfo pi;
	uint64_t st;
	int k = 0, m;
	DIR *d;

	if (parent <= 0)
		return 0;
	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d)) && k < max) {
		pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);

		if (pid <= 0 || read_status(pid, &pi) || pi.ppid != parent)
			continue;
		if (pid_start(pid, &st) || st < from || st > to)
			continue;
		m = mapping_of(pid, probe, probe + 1);
		if (m == 2 ? any : m == 1)
			out[k++] = pid;
	}
	closedir(d);
	return k;
}
