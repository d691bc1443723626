/* SPDX-License-Identifier: MIT */
/* notify: thin calls into libsystemd's sd-daemon. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

void notify_ready(void)
{
	sd_notify(0, "READY=1");
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void notify_status(const char *line)
{
	sd_notifyf(0, "STATUS=%s", line);
}

void notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

uint64_t notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

int notify_listen_fds(int **fds, char ***names)
{
	char **nm = NULL;
	int n = sd_listen_fds_with_names(1, &nm), i;

	*fds = NULL;
	*names = NULL;
	if (n <= 0)
		return 0;
	*fds = calloc((size_t)n, sizeof(int));
	if (!*fds) {
		for (i = 0; nm && i < n; i++)
			free(nm[i]);
		free(nm);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++)
		(*fds)[i] = SD_LISTEN_FDS_START + i;
	*names = nm;
	return n;
}

void notify_fds_free(int *fds, char **names, int n)
{
	int i;

	for (i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(fds);
}

int notify_is_listener(int fd)
{
	return sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;
}
