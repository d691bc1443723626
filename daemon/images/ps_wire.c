/* SPDX-License-Identifier: MIT */
/* ps_wire: both layouts of struct page_server_iov, host byte order as CRIU sends them. */
#include <errno.h>
#include <string.h>

#include "ps_wire.h"

size_t ps_iov_size(int wire)
{
	return wire == PS_WIRE_3 ? 24 : wire == PS_WIRE_4 ? 32 : 0;
}

int ps_iov_encode(int wire, const struct ps_iov *iov, void *buf)
{
	uint8_t *b = buf;
	uint32_t n32;

	memcpy(b, &iov->cmd, 4);
	if (wire == PS_WIRE_3) {
		if (iov->nr_pages > UINT32_MAX)
			return -EOVERFLOW;
		n32 = (uint32_t)iov->nr_pages;
		memcpy(b + 4, &n32, 4);
		memcpy(b + 8, &iov->vaddr, 8);
		memcpy(b + 16, &iov->dst_id, 8);
		return 0;
	}
	if (wire != PS_WIRE_4)
		return -EINVAL;
	memcpy(b + 4, &iov->pad, 4);
	memcpy(b + 8, &iov->nr_pages, 8);
	memcpy(b + 16, &iov->vaddr, 8);
	memcpy(b + 24, &iov->dst_id, 8);
	return 0;
}

void ps_iov_decode(int wire, const void *buf, struct ps_iov *iov)
{
	const uint8_t *b = buf;
	uint32_t n32;

	memset(iov, 0, sizeof(*iov));
	memcpy(&iov->cmd, b, 4);
	if (wire == PS_WIRE_3) {
		memcpy(&n32, b + 4, 4);
		iov->nr_pages = n32;
		memcpy(&iov->vaddr, b + 8, 8);
		memcpy(&iov->dst_id, b + 16, 8);
		return;
	}
	memcpy(&iov->pad, b + 4, 4);
	memcpy(&iov->nr_pages, b + 8, 8);
	memcpy(&iov->vaddr, b + 16, 8);
	memcpy(&iov->dst_id, b + 24, 8);
}

size_t ps_list_encode(int wire, uint32_t pid, const struct ps_run *runs, uint32_t n, void *buf)
{
	struct ps_iov iov = { .cmd = PS_LP_LIST, .nr_pages = n, .dst_id = pid };
	size_t hsz = ps_iov_size(wire), i;
	uint8_t *b = buf;

	if (!hsz || n == 0 || n > PS_LP_LIST_MAX)
		return 0;
	for (i = 0; i < n; i++)
		iov.vaddr += runs[i].nr_pages;
	if (ps_iov_encode(wire, &iov, b))
		return 0;
	for (i = 0; i < n; i++) {
		memcpy(b + hsz + i * PS_LP_RUN_SIZE, &runs[i].img, 8);
		memcpy(b + hsz + i * PS_LP_RUN_SIZE + 8, &runs[i].nr_pages, 8);
	}
	return hsz + n * PS_LP_RUN_SIZE;
}

void ps_run_decode(const void *buf, struct ps_run *r)
{
	memcpy(&r->img, buf, 8);
	memcpy(&r->nr_pages, (const uint8_t *)buf + 8, 8);
}
