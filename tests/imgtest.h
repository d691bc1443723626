/* SPDX-License-Identifier: MIT */
/* imgtest: a tiny CRIU image writer for the unit tests (framing + protobuf-c packed messages). */
#ifndef LP_IMGTEST_H
#define LP_IMGTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "images.h"

/* A growing byte buffer holding one image file. */
struct imgbuf {
	uint8_t *p;
	size_t len, cap;
};

void ib_raw(struct imgbuf *b, const void *p, size_t n);
void ib_u32(struct imgbuf *b, uint32_t v);
/* IMG_COMMON_MAGIC (version 2 only) then MAGIC */
void ib_head(struct imgbuf *b, uint32_t version, uint32_t magic);
/* u32 length, then the packed message */
void ib_msg(struct imgbuf *b, const ProtobufCMessage *m);
/* Writes DIR/NAME and frees the buffer. */
void ib_write(struct imgbuf *b, const char *dir, const char *name);

/* A fresh directory under $TMPDIR (malloc'ed path), and its removal. */
char *it_tmpdir(void);
void it_rmrf(const char *dir);
/* DIR/NAME, created as a directory (malloc'ed path). */
char *it_subdir(const char *dir, const char *name);
/* DIR/parent -> TARGET */
void it_parent_link(const char *dir, const char *target);

void it_inventory(const char *dir, uint32_t version, bool has_fdinfo, bool fdinfo);
void it_pstree(const char *dir, uint32_t version, const struct pstree_ent *ents, size_t n);
void it_core(const char *dir, uint32_t pid, uint32_t state);
void it_mm(const char *dir, uint32_t pid, const struct vma *v, size_t n);

/* One pagemap_entry with explicit field presence. */
struct it_pme {
	uint64_t vaddr;
	uint32_t compat_nr_pages;	/* field 2 */
	bool has_in_parent, in_parent;	/* field 3 */
	bool has_flags;			/* field 4 */
	uint32_t flags;
	bool has_nr_pages;		/* field 5 */
	uint64_t nr_pages;
};

/* CRIU 4.2 form: field 2 = 0, field 5 = count, flags set */
#define IT_PE(va, n, fl) \
	((struct it_pme){ .vaddr = (va), .has_flags = true, .flags = (fl), .has_nr_pages = true, \
			  .nr_pages = (n) })

void it_pagemap(const char *dir, uint32_t pid, uint32_t pages_id, const struct it_pme *e,
		size_t n);

/* pages-ID.img of NPAGES pages; page k holds it_word(tag, k, w) in u64 word w. */
void it_pages(const char *dir, uint32_t id, uint64_t npages, uint32_t tag);
uint64_t it_word(uint32_t tag, uint64_t page, uint64_t w);
/* true if the page at P holds it_word(tag, page, .) throughout */
bool it_page_is(const void *p, uint32_t tag, uint64_t page);
bool it_page_is_zero(const void *p);

#endif
