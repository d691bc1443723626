/* SPDX-License-Identifier: MIT */
/* images: a CRIU image directory (with its parent chain) and the entries lazy-pagesd reads. */
#ifndef LP_IMAGES_H
#define LP_IMAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* pagemap_entry flags (CRIU images/pagemap.proto) */
#define PE_PARENT 1u
#define PE_LAZY 2u
#define PE_PRESENT 4u

/* image magics (CRIU criu/include/magic.h) */
#define IMG_COMMON_MAGIC 0x54564319u
#define IMG_SERVICE_MAGIC 0x55105940u
#define INVENTORY_MAGIC 0x58313116u
#define PSTREE_MAGIC 0x50273030u
#define MM_MAGIC 0x57492820u
#define PAGEMAP_MAGIC 0x56084025u
#define CORE_MAGIC 0x55053847u
#define IDS_MAGIC 0x54432030u

/* vma_entry.status bits */
#define VMA_AREA_REGULAR (1u << 0)
#define VMA_AREA_STACK (1u << 1)
#define VMA_AREA_VSYSCALL (1u << 2)
#define VMA_AREA_VDSO (1u << 3)
#define VMA_AREA_HEAP (1u << 5)
#define VMA_FILE_PRIVATE (1u << 6)
#define VMA_FILE_SHARED (1u << 7)
#define VMA_ANON_SHARED (1u << 8)
#define VMA_ANON_PRIVATE (1u << 9)
#define VMA_AREA_VVAR (1u << 12)
#define VMA_AREA_GUARD (1u << 16)

/* task_core_entry.task_state */
#define TASK_ALIVE 1u
#define TASK_DEAD 2u
#define TASK_STOPPED 3u

/* Limits on what an image may make us allocate. */
#define IMG_MAX_ENTRY (16u << 20)	/* bytes of one protobuf entry */
#define IMG_MAX_PARENTS 64		/* depth of the parent chain */

struct imgdir;

/*
 * Opens DIR, reads and checks inventory.img (img_version 1 or 2,
 * fdinfo_per_id true). The parent chain ("parent" symlink, resolved
 * against DIR) is opened lazily when a PE_PARENT entry needs it.
 */
int imgdir_open(const char *path, struct imgdir **out, struct lp_err *e);
void imgdir_close(struct imgdir *d);		/* accepts NULL */
const char *imgdir_path(const struct imgdir *d);
uint32_t imgdir_version(const struct imgdir *d);	/* inventory img_version */

struct pstree_ent {
	uint32_t pid, ppid, pgid, sid;
	uint32_t nr_threads;
	uint32_t *threads;		/* leader first; owned by the array */
};

/* Reads pstree.img in file order. Free with pstree_free. */
int imgdir_read_pstree(struct imgdir *d, struct pstree_ent **out, size_t *n, struct lp_err *e);
void pstree_free(struct pstree_ent *ents, size_t n);

/* task_core_entry.task_state from core-<pid>.img (TASK_ALIVE, ...). */
int imgdir_task_state(struct imgdir *d, uint32_t pid, uint32_t *state, struct lp_err *e);

struct vma {
	uint64_t start, end;		/* [start, end), page aligned */
	uint64_t pgoff, shmid;
	uint32_t prot, flags, status;
	uint64_t madv;
};

/*
 * Reads mm-<pid>.img: the real VMAs sorted by start (4.2 VMA_AREA_GUARD
 * entries skipped). Checks alignment, start < end, no overlap. The array
 * is malloc'ed; the caller frees it.
 */
int imgdir_read_vmas(struct imgdir *d, uint32_t pid, struct vma **out, size_t *n, struct lp_err *e);

/* CRIU's vma_entry_can_be_lazy (4.2 rule: VVAR excluded). */
bool vma_lazyable(const struct vma *v);

/*
 * pagemap: an index of pagemap-<pid>.img (normalised as CRIU's
 * init_compat_pagemap_entry does) with byte offsets into its pages-N.img,
 * plus the same pid's pagemaps up the parent chain, loaded on demand.
 * Lookups are binary searches. Safe for concurrent lookups and reads
 * from many threads (parent levels are loaded under an internal lock).
 */
struct pagemap;

struct pm_entry {
	uint64_t vaddr;			/* image address, page aligned */
	uint64_t nr_pages;
	uint32_t flags;			/* PE_* after normalisation */
	uint64_t off;			/* byte offset in pages file (PE_PRESENT only) */
};

/*
 * Reads and indexes pagemap-<pid>.img of D, opens its pages-<pages_id>.img
 * and checks that every PRESENT entry lies inside it. Errors name the file
 * and the byte offset of the offending entry.
 */
int pagemap_open(struct imgdir *d, uint32_t pid, struct pagemap **out, struct lp_err *e);
void pagemap_close(struct pagemap *pm);		/* accepts NULL */

const struct pm_entry *pagemap_entries(const struct pagemap *pm, size_t *n);
uint64_t pagemap_page_size(void);		/* host page size */

enum pm_kind {
	PM_HOLE,	/* no entry covers it: a zero page */
	PM_DATA,	/* bytes at (fd, off) */
	PM_REMOTE,	/* PE_LAZY without PE_PRESENT: only a page server has it */
};

struct pm_run {
	enum pm_kind kind;
	uint64_t nr_pages;		/* >= 1, <= max_pages */
	int fd;				/* PM_DATA: pages file (owned by the pagemap) */
	uint64_t off;			/* PM_DATA: byte offset in fd */
};

/*
 * Describes the longest run starting at image address VADDR (page
 * aligned), at most MAX_PAGES long, whose pages share one kind and, for
 * PM_DATA, are contiguous in one pages file. PE_PARENT pages are resolved
 * through the parent chain; a page the parent lacks is an error (-ENOENT),
 * not a hole.
 */
int pagemap_lookup(struct pagemap *pm, uint64_t vaddr, uint64_t max_pages, struct pm_run *run,
		   struct lp_err *e);

/*
 * Reads NR_PAGES pages at image address VADDR into BUF, through
 * pagemap_lookup: holes read as zeros; PM_REMOTE pages are an error
 * (-EREMOTE); a short read of the pages file is an error (-EIO).
 */
int pagemap_read(struct pagemap *pm, uint64_t vaddr, uint64_t nr_pages, void *buf, struct lp_err *e);

#endif
