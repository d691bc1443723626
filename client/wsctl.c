/* SPDX-License-Identifier: MIT */
/* wsctl: prints a working-set file (header, processes, pages in first-touch order) and merges recordings. */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "wsctl.h"
#include "wsfile.h"

#define PROG "lazy-pagesctl"

static int bad_args(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ws: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: " PROG " %s\n", WSCTL_USAGE);
	return 2;
}

static uint64_t total_pages(const struct ws_set *s)
{
	uint64_t n = 0;
	size_t i;

	for (i = 0; i < s->nprocs; i++)
		n += s->procs[i].n;
	return n;
}

static void show_json(const char *file, const struct ws_set *s, uint64_t max)
{
	struct json j;
	char hex[24];
	size_t i;
	uint64_t k;

	json_init(&j, stdout);
	json_obj_begin(&j);
	json_key(&j, "file");
	json_str(&j, file);
	json_key(&j, "version");
	json_u64(&j, WS_VERSION);
	json_key(&j, "page_size");
	json_u64(&j, s->page_size);
	json_key(&j, "recordings");
	json_u64(&j, s->recordings);
	json_key(&j, "pages");
	json_u64(&j, total_pages(s));
	json_key(&j, "procs");
	json_arr_begin(&j);
	for (i = 0; i < s->nprocs; i++) {
		const struct ws_proc *p = &s->procs[i];

		json_obj_begin(&j);
		json_key(&j, "pid");
		json_u64(&j, p->pid);
		json_key(&j, "pages");
		json_u64(&j, p->n);
		snprintf(hex, sizeof(hex), "%016" PRIx64, p->layout);
		json_key(&j, "layout");
		json_str(&j, hex);
		json_key(&j, "first_us");
		json_u64(&j, p->n ? p->pages[0].t_us : 0);
		json_key(&j, "last_us");
		json_u64(&j, p->n ? p->pages[p->n - 1].t_us : 0);
		json_key(&j, "touches");
		json_arr_begin(&j);
		for (k = 0; k < p->n && k < max; k++) {
			json_obj_begin(&j);
			json_key(&j, "addr");
			json_u64(&j, p->pages[k].vaddr);
			json_key(&j, "t_us");
			json_u64(&j, p->pages[k].t_us);
			json_key(&j, "seen");
			json_u64(&j, p->pages[k].seen);
			json_obj_end(&j);
		}
		json_arr_end(&j);
		json_obj_end(&j);
	}
	json_arr_end(&j);
	json_obj_end(&j);
	printf("\n");
}

static void show_text(const char *file, const struct ws_set *s, uint64_t max)
{
	size_t i;
	uint64_t k;

	printf("%s: working set, version %d, %u-byte pages, %u recording%s, %zu process%s, %" PRIu64 " pages\n",
	       file, WS_VERSION, s->page_size, s->recordings, s->recordings == 1 ? "" : "s", s->nprocs,
	       s->nprocs == 1 ? "" : "es", total_pages(s));
	for (i = 0; i < s->nprocs; i++) {
		const struct ws_proc *p = &s->procs[i];

		printf("  pid %-7" PRIu32 " %9" PRIu64 " pages (%.1f MiB), first touches %.3f-%.3f s after the marker, layout %016" PRIx64 "\n",
		       p->pid, p->n, (double)p->n * s->page_size / 1048576.0, p->n ? p->pages[0].t_us / 1e6 : 0.0,
		       p->n ? p->pages[p->n - 1].t_us / 1e6 : 0.0, p->layout);
		for (k = 0; k < p->n && k < max; k++)
			printf("    %8" PRIu64 "  0x%012" PRIx64 "  %10.3f ms  seen %" PRIu32 "\n", k, p->pages[k].vaddr,
			       p->pages[k].t_us / 1e3, p->pages[k].seen);
		if (max && p->n > max)
			printf("    ... %" PRIu64 " more\n", p->n - max);
	}
}

static int show_main(int argc, char **argv)
{
	static const struct option opts[] = { { "pages", required_argument, NULL, 'p' },
					      { "all", no_argument, NULL, 'a' },
					      { "json", no_argument, NULL, 'j' },
					      { 0 } };
	uint64_t max = 10;
	struct ws_set *s;
	struct lp_err e;
	bool json = false;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			max = strtoull(optarg, &end, 10);
			if (*end || end == optarg)
				return bad_args("--pages %s: not a number", optarg);
			break;
		case 'a':
			max = UINT64_MAX;
			break;
		case 'j':
			json = true;
			break;
		default:
			return bad_args("show: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return bad_args("show: one FILE%s", "");
	if (ws_load(argv[optind], &s, &e)) {
		fprintf(stderr, PROG ": ws show: %s\n", e.msg);
		return 1;
	}
	if (json)
		show_json(argv[optind], s, max);
	else
		show_text(argv[optind], s, max);
	ws_set_free(s);
	return 0;
}

static int merge_main(int argc, char **argv)
{
	static const struct option opts[] = { { "output", required_argument, NULL, 'o' }, { 0 } };
	struct ws_set **in, *out = NULL;
	const char *dst = NULL;
	struct lp_err e;
	int c, i, n, ret = 1;

	while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
		if (c != 'o')
			return bad_args("merge: unknown option or missing argument: %s", argv[optind - 1]);
		dst = optarg;
	}
	n = argc - optind;
	if (!dst || n < 1)
		return bad_args("merge: -o OUT and the files to merge%s", "");
	in = calloc((size_t)n, sizeof(*in));
	if (!in)
		return fprintf(stderr, PROG ": ws merge: out of memory\n"), 1;
	for (i = 0; i < n; i++)
		if (ws_load(argv[optind + i], &in[i], &e)) {
			fprintf(stderr, PROG ": ws merge: %s\n", e.msg);
			goto out;
		}
	if (ws_merge(in, (const char *const *)argv + optind, (size_t)n, &out, &e) || ws_save(dst, out, &e)) {
		fprintf(stderr, PROG ": ws merge: %s\n", e.msg);
		goto out;
	}
	printf("%s: %d files, %u recordings, %" PRIu64 " pages\n", dst, n, out->recordings, total_pages(out));
	ret = 0;
out:
	for (i = 0; i < n; i++)
		ws_set_free(in[i]);
	free(in);
	ws_set_free(out);
	return ret;
}

int wsctl_main(int argc, char **argv)
{
	if (argc < 2)
		return bad_args("show or merge?%s", "");
	optind = 0;
	if (!strcmp(argv[1], "show"))
		return show_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "merge"))
		return merge_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return printf("usage: " PROG " %s\n", WSCTL_USAGE), 0;
	return bad_args("unknown subcommand '%s'", argv[1]);
}
