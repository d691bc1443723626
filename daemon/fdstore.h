/* SPDX-License-Identifier: MIT */
/* fdstore: the service manager's fd store: how many fds it keeps for us, and how many are spoken for. */
#ifndef LP_FDSTORE_H
#define LP_FDSTORE_H

#include <stddef.h>

/*
 * systemd keeps at most FileDescriptorStoreMax= fds for a service and
 * closes the ones beyond (it logs so; the service is told nothing). A
 * uffd it did not keep closes when the daemon dies, and its process then
 * reads zeros. So the daemon counts: a session reserves a slot per
 * process of its pstree.img before the restore starts, a fork takes one
 * more, and whatever would not fit is refused.
 */
enum fdstore_kind {
	FDSTORE_NONE,		/* no service manager ($NOTIFY_SOCKET unset): nothing is kept */
	FDSTORE_ENV,		/* the size came from $FDSTORE (systemd >= 254, lp-supervise) */
	FDSTORE_MANAGER,	/* asked systemd for the unit's FileDescriptorStoreMax= (systemd < 254) */
	FDSTORE_UNKNOWN,	/* a service manager that could not say: fds are sent, nothing is counted */
};

struct fdstore;

/* Learns the store's size (see enum fdstore_kind). NULL only without memory. */
struct fdstore *fdstore_new(void);
void fdstore_free(struct fdstore *fs);	/* accepts NULL */

enum fdstore_kind fdstore_kind(const struct fdstore *fs);
/* The size, when counted (FDSTORE_ENV, FDSTORE_MANAGER); else 0. */
unsigned fdstore_size(const struct fdstore *fs);
/* Slots spoken for. */
unsigned fdstore_used(struct fdstore *fs);
/* One line for the log: where the size came from and what it means. */
void fdstore_describe(const struct fdstore *fs, char *buf, size_t len);

/*
 * Reserves N slots: 0, or -ENOSPC when a counted store has fewer free
 * (FORCE reserves anyway: fds a restarted daemon was given back are
 * in the store already). Thread-safe; FS NULL always succeeds.
 */
int fdstore_reserve(struct fdstore *fs, unsigned n, int force);
void fdstore_release(struct fdstore *fs, unsigned n);

/* Hands FD to the store under NAME (not with FDSTORE_NONE); removes it. */
int fdstore_keep(struct fdstore *fs, const char *name, int fd);
void fdstore_forget(struct fdstore *fs, const char *name);

#endif
