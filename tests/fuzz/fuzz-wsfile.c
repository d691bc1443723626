/* SPDX-License-Identifier: MIT */
/*
 * fuzz-wsfile: a working-set file (lazy-pages.ws, daemon/wsfile.h) as
 * ws_parse reads it. Input: the file's bytes. Whatever parses must encode
 * back to exactly those bytes (nothing in a file is taken without being
 * checked against its size and checksum), and merging it with itself must
 * keep every process and page count (no page twice) with each page seen
 * twice as often. Anything else is an error with the file's name in it.
 */
#include <string.h>

#include "fuzz.h"
#include "wsfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *data, size_t size);

/* The input as it is, then with its checksum made right: the fields behind the checksum get fuzzed too. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;
	uint32_t crc;

	one(data, size);
	if (size < 4 || !(fixed = malloc(size)))
		return 0;
	memcpy(fixed, data, size);
	crc = ws_crc32c(0, fixed, size - 4);
	memcpy(fixed + size - 4, &crc, 4);
	one(fixed, size);
	free(fixed);
	return 0;
}

static void one(const uint8_t *data, size_t size)
{
	struct ws_set *s = NULL, *m = NULL;
	const char *names[2] = { "fuzz.ws", "fuzz.ws" };
	struct ws_set *in[2];
	struct lp_err e;
	void *buf;
	size_t len, i;
	uint64_t k;

	if (ws_parse(data, size, "fuzz.ws", &s, &e)) {
		FUZZ_CHECK(strstr(e.msg, "fuzz.ws") != NULL);
		return;
	}
	FUZZ_CHECK(ws_encode(s, &buf, &len) == 0);
	FUZZ_CHECK(len == size && memcmp(buf, data, size) == 0);
	free(buf);
	in[0] = in[1] = s;
	if (s->recordings * 2 <= WS_MAX_RECORDINGS) {
		FUZZ_CHECK(ws_merge(in, names, 2, &m, &e) == 0);
		FUZZ_CHECK(m->nprocs == s->nprocs && m->recordings == 2 * s->recordings);
		for (i = 0; i < s->nprocs; i++) {
			const struct ws_proc *p = ws_find(m, s->procs[i].pid);
			uint64_t distinct = 0;

			FUZZ_CHECK(p != NULL && p->n <= s->procs[i].n);
			for (k = 0; k < s->procs[i].n; k++) {
				uint64_t j;

				for (j = 0; j < k && s->procs[i].pages[j].vaddr != s->procs[i].pages[k].vaddr; j++)
					;
				distinct += j == k;
				if (k > 4096)
					break;	/* quadratic: the small files say enough */
			}
			FUZZ_CHECK(s->procs[i].n > 4096 || p->n == distinct);
		}
		ws_set_free(m);
	}
	ws_set_free(s);
}
