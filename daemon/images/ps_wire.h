/* SPDX-License-Identifier: MIT */
/* ps_wire: CRIU's page-server header (struct page_server_iov), 3.x (24 bytes) and 4.2 (32 bytes). */
#ifndef LP_PS_WIRE_H
#define LP_PS_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* commands (cmd & 0xffff); flags are cmd >> 16 */
#define PS_IOV_ADD 1
#define PS_IOV_HOLE 2
#define PS_IOV_OPEN 3
#define PS_IOV_OPEN2 4
#define PS_IOV_PARENT 5
#define PS_IOV_ADD_F 6
#define PS_IOV_GET 7
#define PS_IOV_CLOSE 0x1023
#define PS_IOV_FORCE_CLOSE 0x1024
#define PS_CMD_MASK 0xffffu
#define PS_FLAGS_SHIFT 16

/* the header of a GET reply: ADD_F with PE_PRESENT in the flags */
#define PS_GET_REPLY_CMD ((4u << PS_FLAGS_SHIFT) | PS_IOV_ADD_F)

/*
 * lazy-pages' own hello, sent only on a second connection (CRIU's page
 * servers accept one connection, so they never see it). nr_pages carries
 * the hello version, dst_id the role of the connection.
 */
#define PS_LP_HELLO 0x4c50u			/* "PL" */
#define PS_LP_HELLO_REPLY ((1u << PS_FLAGS_SHIFT) | PS_LP_HELLO)
#define PS_LP_HELLO_VERSION 2		/* the highest this build speaks; the answer is the lower of both */
#define PS_LP_ROLE_URGENT 1

/*
 * lazy-pages' list GET, for a server that answered hello with version 2 or
 * more (CRIU's servers never see it): several runs of one pid asked for
 * with one header. nr_pages carries the number of runs N (1 up to
 * PS_LP_LIST_MAX), vaddr the pages of all of them, dst_id the pid; N
 * entries of 16 bytes follow (u64 image address, u64 pages). The answer
 * is one GET reply header (vaddr the first run's address, nr_pages all the
 * pages, or 0 if any is not there) and the pages of the runs in order.
 */
#define PS_LP_LIST 0x4c51u			/* "QL" */
#define PS_LP_LIST_VERSION 2			/* the hello version that has it */
#define PS_LP_LIST_MAX 64
#define PS_LP_RUN_SIZE 16

struct ps_run {
	uint64_t img, nr_pages;
};

/* A list GET's header and entries into BUF (room for PS_IOV_MAX + N * PS_LP_RUN_SIZE): its length, or 0. */
size_t ps_list_encode(int wire, uint32_t pid, const struct ps_run *runs, uint32_t n, void *buf);
void ps_run_decode(const void *buf, struct ps_run *r);

#define PS_WIRE_3 3	/* CRIU <= 4.1: u32 nr_pages at 4, 24 bytes */
#define PS_WIRE_4 4	/* CRIU >= 4.2: padding at 4, u64 nr_pages at 8, 32 bytes */
#define PS_IOV_MAX 32

struct ps_iov {
	uint32_t cmd;
	uint32_t pad;		/* 4.2 only: not guaranteed zero; echoed in replies */
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};

/* 24 or 32; 0 for an unknown wire version */
size_t ps_iov_size(int wire);
/* Writes ps_iov_size(wire) bytes; -EOVERFLOW if nr_pages does not fit (3.x: u32). */
int ps_iov_encode(int wire, const struct ps_iov *iov, void *buf);
void ps_iov_decode(int wire, const void *buf, struct ps_iov *iov);

#endif
