/* SPDX-License-Identifier: MIT */
/* lp-tool-imgw: writes CRIU image files (head, then length-prefixed protobuf entries) for the test tools. */
#ifndef LP_TOOL_IMGW_H
#define LP_TOOL_IMGW_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

struct imgw;

/*
 * Creates DIR/NAME. MAGIC is the file-type magic: it follows
 * IMG_COMMON_MAGIC, except INVENTORY_MAGIC, which stands alone (CRIU's
 * img_version 2 framing). MAGIC 0 makes a raw file with no head.
 * Returns NULL with errno set.
 */
struct imgw *imgw_open(int dirfd, const char *name, uint32_t magic);

/* Appends one entry: u32 length (host order), then the packed message. */
int imgw_msg(struct imgw *w, const ProtobufCMessage *msg);

/* Appends raw bytes (pages files). Large writes go straight to the fd. */
int imgw_raw(struct imgw *w, const void *buf, size_t len);

/* Flushes and closes; returns -errno on any earlier or final error. NULL is 0. */
int imgw_close(struct imgw *w);

const char *imgw_name(const struct imgw *w);

#endif
