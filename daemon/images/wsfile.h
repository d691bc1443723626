/* SPDX-License-Identifier: MIT */
/* wsfile: the working-set file of a restore (pages first touched, in order, per process): read, write, merge. */
#ifndef LP_WSFILE_H
#define LP_WSFILE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/*
 * The file (all integers little-endian; README "Warm restores"):
 *
 *   header, 32 bytes: u32 magic WS_MAGIC ("LPWS"), u32 version (1),
 *     u32 page size, u32 processes, u32 recordings merged into it (1 for
 *     one restore), u32 flags (0), u64 pages (all processes);
 *   per process, 24 bytes: u32 pid (pstree.img's), u32 flags (0),
 *     u64 pages, u64 layout (ws_layout of its pagemap when recorded);
 *     then its pages in first-touch order, 16 bytes each: u64 image
 *     address, u32 first touch (microseconds after the restore-finished
 *     marker; the median of the recordings in a merged file), u32 the
 *     number of recordings that touched it;
 *   trailer: u32 CRC-32C of every byte before it.
 *
 * Nothing in it is trusted: a file that does not parse is an error
 * naming it and the offset; the pages themselves always come from the
 * images (the file only says in which order to ask for them).
 */
#define WS_MAGIC 0x5357504cu		/* "LPWS" */
#define WS_VERSION 1
#define WS_HEADER_SIZE 32
#define WS_PROC_SIZE 24
#define WS_PAGE_SIZE 16
#define WS_MAX_PROCS 65536
#define WS_MAX_PAGES (1ull << 28)	/* per process: 1 TiB of 4 KiB pages */
#define WS_MAX_RECORDINGS 1024
#define WS_FILE_NAME "lazy-pages.ws"	/* next to the images */

struct ws_page {
	uint64_t vaddr;			/* image address, page aligned */
	uint32_t t_us;			/* first touch after the marker */
	uint32_t seen;			/* recordings that touched it */
};

struct ws_proc {
	uint32_t pid;
	uint64_t layout;
	uint64_t n;
	struct ws_page *pages;		/* first-touch order */
};

struct ws_set {
	uint32_t page_size;
	uint32_t recordings;
	size_t nprocs;
	struct ws_proc *procs;
};

/* An empty set (NULL on ENOMEM). */
struct ws_set *ws_set_new(uint32_t page_size, size_t nprocs);
void ws_set_free(struct ws_set *s);		/* accepts NULL */

/* Parses LEN bytes of a file (NAME, for messages). Errors name it and the byte offset. */
int ws_parse(const void *buf, size_t len, const char *name, struct ws_set **out, struct lp_err *e);
/* Reads and parses PATH (at most WS_MAX_FILE bytes). -ENOENT if it does not exist. */
#define WS_MAX_FILE (1ull << 32)
int ws_load(const char *path, struct ws_set **out, struct lp_err *e);

/* The bytes of S (malloc'ed, *LEN long); pages of each process in the order given. */
int ws_encode(const struct ws_set *s, void **buf, size_t *len);
/* Writes S to PATH through a temporary file in the same directory, renamed over it. */
int ws_save(const char *path, const struct ws_set *s, struct lp_err *e);

/*
 * Merges N recordings of the same images into one: per process, every
 * page any of them touched, ordered by its median first touch (a
 * recording that did not touch it counts as later than all that did:
 * a page touched by fewer than half comes after those touched by most).
 * The recordings must agree on page size and on each process's layout
 * (else an error naming NAMES[i]).
 */
int ws_merge(struct ws_set *const *in, const char *const *names, size_t n, struct ws_set **out,
	     struct lp_err *e);

/* The process PID of S, or NULL. */
const struct ws_proc *ws_find(const struct ws_set *s, uint32_t pid);

/* A fingerprint of a pagemap's layout (each entry's address, length and flags), to tell images apart. */
struct pm_entry;
uint64_t ws_layout(const struct pm_entry *pe, size_t n);

/* CRC-32C (Castagnoli) of LEN bytes, continuing from CRC (0 to start). */
uint32_t ws_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
