# SPDX-License-Identifier: MIT
# criu-lib.sh: helpers for suites that drive stock CRIU (tests/criu.sh, the
# systemd suite, the benchmark). Source it; nothing runs on load.
#
#   . tests/criu-lib.sh
#   criu_find || { echo "skipped: no CRIU"; ...; }     # sets CRIU
#   criu_pipe_raise; trap 'criu_pipe_restore' EXIT     # fs.pipe-max-size, shared safely
#   D=$(mktemp -d)
#   criu_work_start "$D" -m 64 -c 2 -l fork            # lp-work, waits for ready.*
#   criu_dump "$D"                                     # -> $D/img, log $D/img/dump.log
#   criu_wait_gone "$D"                                # the dumped pids are free again
#   <start lazy-pagesd -D $D/img>
#   criu_restore "$D"                                  # detached, --lazy-pages
#   criu_wait_action "$D" post-resume               # DIR/go is there now (CRL_AUTO_GO=0: criu_go)
#   criu_wait_results "$D" 1 && criu_final "$D" && criu_wait_results "$D" 2
#   criu_kill_dir "$D"; rm -rf "$D"
#
# Functions return non-zero on failure with the reason in $CRL_WHY. Paths
# are relative to this repository; the build dir is ${LP_BUILD:-build}; the
# workload is ${LP_WORK:-$BUILD/tests/lp-work}; CRIU is the binary in $CRIU.
# lp-work's interface (files in the test dir, tags, phases) is documented at
# the top of tests/lp-work.c.

CRL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRL_BUILD=${LP_BUILD:-build}
case "$CRL_BUILD" in /*) ;; *) CRL_BUILD=$CRL_ROOT/$CRL_BUILD ;; esac
CRL_WORK=${LP_WORK:-$CRL_BUILD/tests/lp-work}
CRL_TIMEOUT=${CRL_TIMEOUT:-60}	# seconds any one wait may take
CRL_PIPE_SIZE=4194304		# CRIU's page pipes need >= 3354624 without CAP_SYS_RESOURCE
CRL_PIPE_DIR=/run/lock/lazy-pages-criu-pipe
CRL_WHY=

# Finds CRIU: $CRIU, else ../shared/criu/criu beside the checkout, else
# `criu` in PATH if `criu check` passes. Sets CRIU (absolute); 1 if none,
# 2 if $CRIU or ../shared/criu/criu is there but does not run.
criu_find() {
	local c
	CRL_WHY=
	if [ -n "${CRIU:-}" ]; then
		c=$(command -v "$CRIU" 2>/dev/null)
		if [ -z "$c" ] || ! "$c" --version >/dev/null 2>&1; then
			CRL_WHY="\$CRIU=$CRIU does not run"
			return 2
		fi
		CRIU=$(readlink -f "$c")
		return 0
	fi
	c=$CRL_ROOT/../shared/criu/criu
	if [ -x "$c" ]; then
		CRIU=$(readlink -f "$c")
		if ! "$CRIU" --version >/dev/null 2>&1; then
			CRL_WHY="$CRIU does not run (its runtime libraries: see ../shared/criu/README.md)"
			unset CRIU
			return 2
		fi
		return 0
	fi
	c=$(command -v criu 2>/dev/null)
	if [ -n "$c" ] && "$c" check >/dev/null 2>&1; then
		CRIU=$(readlink -f "$c")
		return 0
	fi
	CRL_WHY="none of: \$CRIU, ../shared/criu/criu, a criu in PATH that passes 'criu check'"
	return 1
}

# Raises fs.pipe-max-size to 4 MiB for as long as any user of this library
# needs it: holders register under a lock, the last one out puts the value
# found by the first one back. Other engineers' suites run at the same time.
criu_pipe_raise() {
	mkdir -p "$CRL_PIPE_DIR" || return 1
	(
		flock 9 || exit 1
		if [ ! -f "$CRL_PIPE_DIR/orig" ]; then
			cat /proc/sys/fs/pipe-max-size >"$CRL_PIPE_DIR/orig" || exit 1
		fi
		: >"$CRL_PIPE_DIR/holder.$$"
		if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt "$CRL_PIPE_SIZE" ]; then
			echo "$CRL_PIPE_SIZE" >/proc/sys/fs/pipe-max-size || exit 1
		fi
	) 9>"$CRL_PIPE_DIR.lock"
}

criu_pipe_restore() {
	[ -d "$CRL_PIPE_DIR" ] || return 0
	(
		flock 9 || exit 1
		rm -f "$CRL_PIPE_DIR/holder.$$"
		local h
		for h in "$CRL_PIPE_DIR"/holder.*; do
			[ -e "$h" ] || continue
			kill -0 "${h##*.}" 2>/dev/null && exit 0	# still needed
			rm -f "$h"
		done
		if [ -f "$CRL_PIPE_DIR/orig" ]; then
			cat "$CRL_PIPE_DIR/orig" >/proc/sys/fs/pipe-max-size
			rm -f "$CRL_PIPE_DIR/orig"
		fi
	) 9>"$CRL_PIPE_DIR.lock"
}

# crl_until SECONDS CMD...: runs CMD every 20 ms until it succeeds; 1 on timeout.
crl_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.02
	done
}

crl_all_exist() {
	local f
	for f in "$@"; do
		[ -e "$f" ] || return 1
	done
}

# criu_work_start DIR [lp-work options]: starts lp-work (setsid, stdin from
# /dev/null, output to DIR/work.log) with -o DIR, waits until every process
# of its tree is ready. Sets CRL_PID (the root), CRL_PIDS (the tree) and
# CRL_TAGS (every tag that will write results, fork-op children included).
criu_work_start() {
	local dir=$1 n=1 fork= a prev= t
	shift
	for a in "$@"; do
		case "$prev" in
		-c) n=$((a + 1)) ;;
		-l) case ",$a," in *,fork,*) fork=1 ;; esac ;;
		esac
		prev=$a
	done
	CRL_TAGS=
	for ((t = 0; t < n; t++)); do
		CRL_TAGS+="$t "
		[ -n "$fork" ] && CRL_TAGS+="${t}f "
	done
	setsid "$CRL_WORK" -o "$dir" "$@" </dev/null >"$dir/work.log" 2>&1 &
	CRL_WORK_JOB=$!
	disown "$CRL_WORK_JOB"	# CRIU kills it: no job report; the shell still reaps it
	local ready=()
	for ((t = 0; t < n; t++)); do ready+=("$dir/ready.$t"); done
	if ! crl_until "$CRL_TIMEOUT" crl_all_exist "${ready[@]}"; then
		CRL_WHY="lp-work not ready in ${CRL_TIMEOUT}s: $(tail -n 3 "$dir/work.log" 2>/dev/null)"
		return 1
	fi
	CRL_PID=$(cut -d' ' -f1 "$dir/ready.0")
	CRL_PIDS=$(cat "${ready[@]}" | cut -d' ' -f1 | tr '\n' ' ')
}

# criu_dump DIR [criu dump options]: dumps the tree rooted at CRL_PID into
# DIR/img (log DIR/img/dump.log), waiting for it to end.
criu_dump() {
	local dir=$1
	shift
	mkdir -p "$dir/img"
	if ! "$CRIU" dump -t "$CRL_PID" -D "$dir/img" -o dump.log -v4 "$@" </dev/null >"$dir/dump.out" 2>&1; then
		CRL_WHY="criu dump failed: $(grep -E 'Error|error' "$dir/img/dump.log" | grep -v RLIMIT_NOFILE | tail -n 3)"
		return 1
	fi
}

# crl_free_port: a TCP port nothing listens on now (CRIU refuses --port 0)
crl_free_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 40000))
		if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# criu_dump_lazy DIR ADDRESS PORT [criu dump options]: `criu dump
# --lazy-pages --address --port` in the background (CRL_DUMP_JOB): it
# keeps the tree frozen and serves its pages until a client has them all.
# Returns once its page server listens (--status-fd). PORT 0: a free one,
# in CRL_PORT either way.
criu_dump_lazy() {
	local dir=$1 addr=$2 port=$3
	shift 3
	[ "$port" != 0 ] || port=$(crl_free_port) || { CRL_WHY="no free port"; return 1; }
	CRL_PORT=$port
	mkdir -p "$dir/img"
	: >"$dir/dump.status"
	"$CRIU" dump -t "$CRL_PID" -D "$dir/img" -o dump.log -v4 --lazy-pages --address "$addr" \
		--port "$port" --status-fd 9 "$@" 9>"$dir/dump.status" </dev/null >"$dir/dump.out" 2>&1 &
	CRL_DUMP_JOB=$!
	if ! crl_until "$CRL_TIMEOUT" crl_nonempty_or_gone "$dir/dump.status" "$CRL_DUMP_JOB" ||
		[ ! -s "$dir/dump.status" ]; then
		CRL_WHY="criu dump --lazy-pages did not listen: $(tail -n 2 "$dir/dump.out") $(grep -E 'Error|error' "$dir/img/dump.log" 2>/dev/null | grep -v RLIMIT_NOFILE | tail -n 3)"
		return 1
	fi
}

crl_nonempty_or_gone() {
	[ -s "$1" ] || ! kill -0 "$2" 2>/dev/null
}

# A pid is free when /proc has no entry for it; our own zombie is reaped.
crl_gone() {
	local p st
	for p in "$@"; do
		[ -e "/proc/$p" ] || continue
		st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$p/status" 2>/dev/null)
		if [ "$st" = Z ] && [ "$p" = "${CRL_WORK_JOB:-}" ]; then
			wait "$p" 2>/dev/null	# ours: reaped by the shell on its next SIGCHLD anyway
			continue
		fi
		return 1
	done
}

# criu_wait_gone DIR: waits until every dumped pid is free (killed children
# can keep their pids for a while here), so a restore can have them again.
criu_wait_gone() {
	if ! crl_until "$CRL_TIMEOUT" crl_gone $CRL_PIDS; then
		CRL_WHY="dumped pids still there: $CRL_PIDS"
		return 1
	fi
}

# Writes DIR/action.sh: records each CRIU action (and the root pid) in
# DIR/actions and, unless CRL_AUTO_GO=0, creates DIR/go at post-resume, so
# the restored processes start at once, while the daemon is still filling.
crl_action_script() {
	local dir=$1 go=
	[ "${CRL_AUTO_GO:-1}" = 0 ] || go="[ \"\$CRTOOLS_SCRIPT_ACTION\" = post-resume ] && : >\"$dir/go\""
	cat >"$dir/action.sh" <<-EOF
		#!/bin/sh
		echo "\$CRTOOLS_SCRIPT_ACTION \$CRTOOLS_INIT_PID" >>"$dir/actions"
		$go
		exit 0
	EOF
	chmod +x "$dir/action.sh"
}

# criu_restore DIR [criu restore options]: `criu restore --lazy-pages -d`
# from DIR/img (log DIR/img/restore.log); returns when CRIU has detached.
criu_restore() {
	local dir=$1
	shift
	crl_action_script "$dir"
	if ! "$CRIU" restore -D "$dir/img" --lazy-pages -d -o restore.log -v4 \
		--action-script "$dir/action.sh" "$@" </dev/null >"$dir/restore.out" 2>&1; then
		CRL_WHY="criu restore failed: $(grep -E 'Error|error' "$dir/img/restore.log" | grep -v RLIMIT_NOFILE | tail -n 3)"
		return 1
	fi
}

# criu_restore_ns DIR [criu restore options]: the same, in a new pid (and
# proc mount) namespace, for when the dumped pids are still taken (a lazy
# dump keeps the source tree frozen). CRIU waits there for the tree
# (CRL_RESTORE_JOB); the restore is under way once criu_wait_action says so.
criu_restore_ns() {
	local dir=$1
	shift
	crl_action_script "$dir"
	unshare -p -f --mount-proc "$CRIU" restore -D "$dir/img" --lazy-pages -o restore.log -v4 \
		--action-script "$dir/action.sh" "$@" </dev/null >"$dir/restore.out" 2>&1 &
	CRL_RESTORE_JOB=$!
}

crl_has_action() {
	grep -q "^$2 " "$1/actions" 2>/dev/null
}

# criu_wait_action DIR ACTION: waits for CRIU to run the action script for
# ACTION (post-resume: the restored tree runs).
criu_wait_action() {
	local dir=$1 act=$2
	if ! crl_until "$CRL_TIMEOUT" crl_has_action "$dir" "$act"; then
		CRL_WHY="no $act from criu restore in ${CRL_TIMEOUT}s: $(grep -E 'Error|error' "$dir/img/restore.log" 2>/dev/null | grep -v RLIMIT_NOFILE | tail -n 3)"
		return 1
	fi
}

criu_go() {
	touch "$1/go"
}

criu_final() {
	touch "$1/final"
}

# criu_wait_results DIR PHASE [TIMEOUT]: waits for result.TAG.PHASE of every
# tag in CRL_TAGS; 0 if every one ends with "ok". CRL_WHY gets the failures
# (each process's FAIL line and the pages it named).
criu_wait_results() {
	local dir=$1 phase=$2 t=${3:-$CRL_TIMEOUT} files=() tag f missing=
	for tag in $CRL_TAGS; do files+=("$dir/result.$tag.$phase"); done
	crl_until "$t" crl_all_exist "${files[@]}"
	CRL_WHY=
	for f in "${files[@]}"; do
		tag=${f##*/result.}
		tag=${tag%.*}
		if [ ! -e "$f" ]; then
			missing+="$tag "
			continue
		fi
		if [ "$(tail -n 1 "$f")" != ok ]; then
			CRL_WHY+="process $tag: $(tail -n 1 "$f") $(grep '^bad page' "$f" | head -n 3 | tr '\n' ' ')"
		fi
	done
	[ -n "$missing" ] && CRL_WHY+="no phase $phase result from process(es) ${missing}in ${t}s "
	[ -z "$CRL_WHY" ]
}

# criu_sum DIR PHASE KEY: the sum of KEY= over the phase's result files.
criu_sum() {
	cat "$1"/result.*."$2" 2>/dev/null | sed -n "s/^phase=.* $3=\([0-9]*\).*/\1/p" |
		awk '{ s += $1 } END { print s + 0 }'
}

# criu_kill_dir DIR: SIGKILLs every process whose command line names DIR
# or a path under it (the workload, CRIU, daemons started with paths in
# DIR): this test's only. The calling shell and its ancestors are spared.
criu_kill_dir() {
	local dir=${1%/} p q cmd args spare=" "
	p=$BASHPID
	while [ -n "$p" ] && [ "$p" != 0 ]; do
		spare+="$p "
		p=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)
	done
	for q in /proc/[0-9]*; do
		q=${q#/proc/}
		case "$spare" in *" $q "*) continue ;; esac
		args=()
		{ mapfile -d '' args <"/proc/$q/cmdline"; } 2>/dev/null	# a builtin: no fork per process
		cmd=" ${args[*]} "
		case "$cmd" in
		*" $dir "* | *"$dir/"* | *"=$dir "*) kill -KILL "$q" 2>/dev/null ;;
		esac
	done
}
