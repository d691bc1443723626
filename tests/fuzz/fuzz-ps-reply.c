/* SPDX-License-Identifier: MIT */
/*
 * fuzz-ps-reply: page-server replies (spec §6.4, §6.5) as ps_client reads
 * them. Input: byte 0 picks the wire (bit 0: 3.x or 4.2), how many GETs
 * are in flight (bits 1-2: 1..4) and which of a small table of requests
 * (bits 3-5); the rest is what the "server" sends on the other end of a
 * socketpair, which then half-closes. The harness parses the same bytes
 * itself and checks that ps_client agrees: the replies that are right
 * (cmd, pid, address echoed, 1 <= pages <= asked, the page data whole) go
 * to complete() in order with exactly those bytes, the first wrong or
 * missing one breaks the connection (failed(), then every other request
 * back with 0 pages), and ps_client_close acknowledges only an int32 0.
 */
#include <poll.h>
#include <signal.h>
#include <stdbool.h>

#include "fuzz.h"
#include "ps_client.h"
#include "ps_wire.h"

#define NREQ_MAX 4
#define MAX_PAGES 16

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

struct expect {
	struct ps_req req[NREQ_MAX];
	size_t nreq;
	size_t good;			/* replies the harness found right */
	const uint8_t *data[NREQ_MAX];	/* their page bytes in the input */
	uint64_t pages[NREQ_MAX];
	size_t ncomplete;		/* complete() calls so far */
	int nfailed;
};

static void on_complete(void *arg, struct ps_req *req, const void *data, uint64_t nr_pages)
{
	struct expect *x = arg;
	size_t i = x->ncomplete++;
	uint64_t psz = (uint64_t)sysconf(_SC_PAGESIZE);

	/* FIFO order, every request exactly once */
	FUZZ_CHECK(i < x->nreq);
	FUZZ_CHECK(req == &x->req[i]);
	if (i < x->good) {
		FUZZ_CHECK(data != NULL);
		FUZZ_CHECK(nr_pages == x->pages[i]);
		FUZZ_CHECK(nr_pages >= 1 && nr_pages <= req->nr_pages);
		FUZZ_CHECK(memcmp(data, x->data[i], nr_pages * psz) == 0);
		/* only complete replies, and failed() only after them */
		FUZZ_CHECK(x->nfailed == 0);
	} else {
		FUZZ_CHECK(data == NULL && nr_pages == 0);
		FUZZ_CHECK(x->nfailed == 1);
	}
}

static void on_failed(void *arg, struct ps_client *c, const struct lp_err *e)
{
	struct expect *x = arg;

	(void)c;
	FUZZ_CHECK(e && e->msg[0]);
	x->nfailed++;
}

static const uint32_t pids[] = { 1, 12498, 0x7fffffff };
static const uint64_t addrs[] = { 0x7a0000000000ull, 0x1000, 0xfffffffffffff000ull };
static const uint64_t counts[] = { 1, 4, MAX_PAGES, 2 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ps_client_ops ops = { .complete = on_complete, .failed = on_failed };
	struct ps_client_opts o = { .fd = -1, .max_pages = MAX_PAGES };
	uint64_t psz = (uint64_t)sysconf(_SC_PAGESIZE);
	struct expect x = { 0 };
	struct ps_client *c = NULL;
	size_t hsz, off, i, sent;
	unsigned v;
	struct lp_err e;
	int sv[2], before, ret, stalls;
	bool ack = false;

	if (size < 1)
		return 0;
	o.wire = (data[0] & 1) ? PS_WIRE_4 : PS_WIRE_3;
	x.nreq = (size_t)((data[0] >> 1) & 3) + 1;
	v = (data[0] >> 3) & 7;
	data++;
	size--;
	hsz = ps_iov_size(o.wire);
	for (i = 0; i < x.nreq; i++) {
		x.req[i].dst_id = pids[(v + i) % 3];
		x.req[i].img = addrs[(v / 3 + i) % 3];
		x.req[i].nr_pages = counts[(v + 2 * i) % 4];
	}

	/* what a correct client makes of these bytes */
	for (off = 0; x.good < x.nreq; x.good++) {
		const struct ps_req *q = &x.req[x.good];
		struct ps_iov r;

		if (size - off < hsz)
			break;
		ps_iov_decode(o.wire, data + off, &r);
		if (r.cmd != PS_GET_REPLY_CMD || r.dst_id != q->dst_id || r.vaddr != q->img || r.nr_pages == 0 ||
		    r.nr_pages > q->nr_pages || (size - off - hsz) / psz < r.nr_pages)
			break;
		x.data[x.good] = data + off + hsz;
		x.pages[x.good] = r.nr_pages;
		off += hsz + r.nr_pages * psz;
	}
	if (x.good == x.nreq && size - off >= 4) {
		int32_t a;

		memcpy(&a, data + off, 4);
		ack = a == 0;
	}

	before = fuzz_count_fds();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	o.fd = sv[0];
	ret = ps_client_open(&o, &ops, &x, &c, &e);
	FUZZ_CHECK(ret == 0);
	for (i = 0; i < x.nreq; i++)
		FUZZ_CHECK(ps_client_submit(c, &x.req[i]) == 0);
	/*
	 * The receiver drains the socket while this writes; once it has given
	 * up on a wrong reply nothing reads, so a full buffer ends the input.
	 */
	for (sent = 0, stalls = 0; sent < size && stalls < 20;) {
		struct pollfd pfd = { .fd = sv[1], .events = POLLOUT };
		ssize_t n = send(sv[1], data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			sent += (size_t)n;
			stalls = 0;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			stalls += poll(&pfd, 1, 50) == 0;
		} else {
			break;
		}
	}
	shutdown(sv[1], SHUT_WR);
	ret = ps_client_close(c, &e);	/* closes sv[0] */
	FUZZ_CHECK(x.ncomplete == x.nreq);
	FUZZ_CHECK(x.nfailed == (x.good < x.nreq));
	FUZZ_CHECK((ret == 0) == ack);
	close(sv[1]);
	FUZZ_CHECK(fuzz_count_fds() == before);
	return 0;
}
