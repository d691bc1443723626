/* SPDX-License-Identifier: MIT */
/* wsctl: lazy-pagesctl's ws command: show and merge working-set files (no daemon needed). */
#ifndef LP_WSCTL_H
#define LP_WSCTL_H

#define WSCTL_USAGE                                                   \
	"ws show FILE [--pages N | --all] [--json]\n"                 \
	"       ws merge -o OUT FILE FILE..."

/* ARGV[0] is "ws". Exit status as lazy-pagesctl's: 0, 1 (a file is bad), 2 (bad arguments). */
int wsctl_main(int argc, char **argv);

#endif
