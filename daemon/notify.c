/* SPDX-License-Identifier: MIT */
/* notify: thin calls into libsystemd's sd-daemon, and two questions to systemd over sd-bus. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

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

/* A connection to systemd: its private socket (root, no dbus-daemon needed), else the system bus. */
static int manager_bus(sd_bus **out)
{
	sd_bus *bus = NULL;
	int ret;

	ret = sd_bus_new(&bus);
	if (ret < 0)
		return ret;
	ret = sd_bus_set_address(bus, "unix:path=/run/systemd/private");
	if (ret >= 0)
		ret = sd_bus_start(bus);
	if (ret < 0) {
		sd_bus_unref(bus);
		bus = NULL;
		ret = sd_bus_open_system(&bus);
		if (ret < 0)
			return ret;
	}
	sd_bus_set_method_call_timeout(bus, 2000000);
	*out = bus;
	return 0;
}

/* The object path of this process's unit (malloc'ed). */
static int manager_unit(sd_bus *bus, char **path)
{
	sd_bus_error err = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *p;
	int ret;

	ret = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
				 "org.freedesktop.systemd1.Manager", "GetUnitByPID", &err, &reply, "u",
				 (uint32_t)getpid());
	if (ret >= 0)
		ret = sd_bus_message_read(reply, "o", &p);
	if (ret >= 0) {
		*path = strdup(p);
		ret = *path ? 0 : -ENOMEM;
	}
	sd_bus_message_unref(reply);
	sd_bus_error_free(&err);
	return ret < 0 ? ret : 0;
}

/* Property NAME (of TYPE) of interface IFACE of this process's unit: *REPLY entered into its value. */
static int manager_property(const char *iface, const char *name, const char *type, sd_bus_message **reply)
{
	sd_bus_error err = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	char *unit = NULL;
	int ret;

	ret = manager_bus(&bus);
	if (!ret)
		ret = manager_unit(bus, &unit);
	if (!ret)
		ret = sd_bus_get_property(bus, "org.freedesktop.systemd1", unit, iface, name, &err, reply, type);
	sd_bus_error_free(&err);
	free(unit);
	sd_bus_flush_close_unref(bus);
	return ret < 0 ? ret : 0;
}

int notify_manager_fdstore_max(unsigned *out)
{
	sd_bus_message *reply = NULL;
	uint32_t v;
	int ret;

	ret = manager_property("org.freedesktop.systemd1.Service", "FileDescriptorStoreMax", "u", &reply);
	if (!ret)
		ret = sd_bus_message_read(reply, "u", &v);
	if (ret >= 0)
		*out = v;
	sd_bus_message_unref(reply);
	return ret < 0 ? ret : 0;
}

int notify_manager_job_pending(void)
{
	sd_bus_message *reply = NULL;
	const char *jpath;
	uint32_t id = 0;
	int ret;

	ret = manager_property("org.freedesktop.systemd1.Unit", "Job", "(uo)", &reply);
	if (!ret)
		ret = sd_bus_message_read(reply, "(uo)", &id, &jpath);
	sd_bus_message_unref(reply);
	return ret < 0 ? ret : id != 0;
}
