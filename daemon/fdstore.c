/* SPDX-License-Identifier: MIT */
/* fdstore: FDSTORE=1 messages, and the count that keeps them within FileDescriptorStoreMax=. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "fdstore.h"
#include "notify.h"

struct fdstore {
	enum fdstore_kind kind;
	unsigned size;
	pthread_mutex_t lock;
	unsigned used;		/* under lock */
};

struct fdstore *fdstore_new(void)
{
	struct fdstore *fs = calloc(1, sizeof(*fs));
	const char *env = getenv("FDSTORE");
	unsigned size;
	char *end;

	if (!fs)
		return NULL;
	pthread_mutex_init(&fs->lock, NULL);
	fs->kind = FDSTORE_UNKNOWN;
	if (!getenv("NOTIFY_SOCKET")) {
		fs->kind = FDSTORE_NONE;
	} else if (env && *env) {
		unsigned long v;

		errno = 0;
		v = strtoul(env, &end, 10);
		if (!errno && !*end && v <= UINT_MAX) {
			fs->kind = FDSTORE_ENV;
			fs->size = (unsigned)v;
		}
	}
	if (fs->kind == FDSTORE_UNKNOWN && notify_manager_fdstore_max(&size) == 0) {
		fs->kind = FDSTORE_MANAGER;
		fs->size = size;
	}
	return fs;
}

void fdstore_free(struct fdstore *fs)
{
	if (!fs)
		return;
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}

enum fdstore_kind fdstore_kind(const struct fdstore *fs)
{
	return fs ? fs->kind : FDSTORE_NONE;
}

static int counted(const struct fdstore *fs)
{
	return fs->kind == FDSTORE_ENV || fs->kind == FDSTORE_MANAGER;
}

unsigned fdstore_size(const struct fdstore *fs)
{
	return fs && counted(fs) ? fs->size : 0;
}

unsigned fdstore_used(struct fdstore *fs)
{
	unsigned n;

	if (!fs)
		return 0;
	pthread_mutex_lock(&fs->lock);
	n = fs->used;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

void fdstore_describe(const struct fdstore *fs, char *buf, size_t len)
{
	switch (fdstore_kind(fs)) {
	case FDSTORE_NONE:
		snprintf(buf, len, "no service manager: no fd store; a killed daemon cannot resume its sessions");
		break;
	case FDSTORE_ENV:
	case FDSTORE_MANAGER:
		if (!fs->size)
			snprintf(buf, len, "the service manager keeps no fds for this service (%s 0): "
				 "every session will be refused, since a restart would leave its processes "
				 "without their pages; set FileDescriptorStoreMax= in the unit",
				 fs->kind == FDSTORE_ENV ? "$FDSTORE" : "FileDescriptorStoreMax=");
		else
			snprintf(buf, len, "fd store of %u (%s): sessions and forks that would not fit are refused",
				 fs->size, fs->kind == FDSTORE_ENV ? "$FDSTORE" : "FileDescriptorStoreMax= of the unit");
		break;
	case FDSTORE_UNKNOWN:
		snprintf(buf, len, "a service manager without $FDSTORE that could not be asked for its "
			 "FileDescriptorStoreMax=: uffds are sent to its fd store uncounted, and a restart "
			 "kills the processes whose uffds it did not keep");
		break;
	}
}

int fdstore_reserve(struct fdstore *fs, unsigned n, int force)
{
	int ret = 0;

	if (!fs)
		return 0;
	pthread_mutex_lock(&fs->lock);
	if (counted(fs) && !force && (fs->used > fs->size || n > fs->size - fs->used))
		ret = -ENOSPC;
	else
		fs->used += n;
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

void fdstore_release(struct fdstore *fs, unsigned n)
{
	if (!fs)
		return;
	pthread_mutex_lock(&fs->lock);
	fs->used = n > fs->used ? 0 : fs->used - n;
	pthread_mutex_unlock(&fs->lock);
}

int fdstore_keep(struct fdstore *fs, const char *name, int fd)
{
	char msg[128];
	int ret;

	if (fdstore_kind(fs) == FDSTORE_NONE)
		return 0;
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	ret = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	return ret < 0 ? ret : 0;
}

void fdstore_forget(struct fdstore *fs, const char *name)
{
	char msg[128];

	if (fdstore_kind(fs) == FDSTORE_NONE)
		return;
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	sd_notify(0, msg);
}
