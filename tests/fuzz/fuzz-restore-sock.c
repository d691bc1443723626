/* SPDX-License-Identifier: MIT */
/*
 * fuzz-restore-sock: the restore -> lazy-pages records (spec §4) read as
 * lazy-pagesd's serve_criu does. Input: byte 0 is the number of task
 * records expected (1..8, as pstree.img would say); the rest is the byte
 * stream criu restore would send, with 0xFD markers attaching fds
 * (fuzz.h: userfaultfds, /dev/null, memfds). Checks: the stream position
 * moves by exactly what each call consumed, a received fd is a
 * non-blocking CLOEXEC userfaultfd, and no fd is left open afterwards.
 */
#include <signal.h>
#include <stdbool.h>

#include "fuzz.h"
#include "restore_sock.h"
#include "uffd.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void check_uffd(int ufd)
{
	int fl = fcntl(ufd, F_GETFL), fdfl = fcntl(ufd, F_GETFD);

	FUZZ_CHECK(ufd > 2);
	FUZZ_CHECK(uffd_check_fd(ufd) == 0);
	FUZZ_CHECK(fl >= 0 && (fl & O_NONBLOCK));
	FUZZ_CHECK(fdfl >= 0 && (fdfl & FD_CLOEXEC));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct restore_peer peer = { .pid = 1, .name = "fuzz restore peer" };
	int32_t seen[8];
	size_t nr_tasks, nseen = 0, i;
	int sv[2], before, ret = 0;
	uint64_t pos = 0, at;
	struct lp_err e;

	if (size < 1)
		return 0;
	nr_tasks = (size_t)(data[0] & 7) + 1;
	before = fuzz_count_fds();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	fuzz_send_stream(sv[0], data + 1, size - 1);
	close(sv[0]);

	/* serve_criu's loop, with take_record's duplicate check */
	for (i = 0; i < nr_tasks && !ret; i++) {
		int32_t pid;
		int ufd = -1;
		pid_t sender;
		bool dup = false;

		at = pos;
		ret = restore_sock_read_pid(sv[1], &peer, &at, &pid, &e);
		if (ret) {
			FUZZ_CHECK(ret < 0 && e.msg[0]);
			break;
		}
		FUZZ_CHECK(at == pos + 4);
		FUZZ_CHECK(pid != 0 && pid != INT32_MIN);
		pos = at;
		for (size_t k = 0; k < nseen; k++)
			dup |= seen[k] == (pid < 0 ? -pid : pid);
		if (dup) {
			ret = -EPROTO;
			break;
		}
		seen[nseen++] = pid < 0 ? -pid : pid;
		if (pid < 0)
			continue;
		ret = restore_sock_recv_uffd(sv[1], &peer, &at, pid, &ufd, &sender, &e);
		if (ret) {
			FUZZ_CHECK(ret < 0 && e.msg[0]);
			break;
		}
		FUZZ_CHECK(at == pos + 1);
		pos = at;
		check_uffd(ufd);
		close(ufd);
	}
	if (!ret) {
		at = pos;
		ret = restore_sock_read_marker(sv[1], &peer, &at, &e);
		FUZZ_CHECK(ret <= 0);
		if (!ret)
			FUZZ_CHECK(at == pos + 4);
	}
	close(sv[1]);
	FUZZ_CHECK(fuzz_count_fds() == before);
	return 0;
}
