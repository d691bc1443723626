#!/bin/bash
# SPDX-License-Identifier: MIT
# Stress suite: the real lazy-pagesd under lp-restore's "stress" scenario
# (workers reading and writing pages while storm threads fork, mremap away
# and back, munmap+mmap and MADV_DONTNEED ranges, at the prefetch frontier
# while pages are lazy; every byte checked against a model at the end).
#
#   bash tests/stress.sh [--list] [NAME...]
#
#   stress-1       1 process, 2 GiB, 16 workers, 3 storms, 1 prefetch thread
#   stress-200     200 processes of 2 MiB in one session, 2 workers and 2 storms each
#   stress-remote  1 process, 1 GiB, 16 workers, 3 storms, through lazy-pages-server on 127.0.0.1
#
# Run from the repository root, as root. Each scenario runs in its own
# directory under ${TMPDIR:-/tmp}, bounded by timeout(1); the images are
# written once per run and shared. Prints "PASS name (...)" with the counts
# or "FAIL name: reason" (with the seed and the command that repeats it),
# and ends with "N passed, N failed"; exits non-zero iff one failed.
#
# LP_STRESS_SECONDS (10) is how long each stress runs, LP_STRESS_SEED the
# seed (default: a new one each run, printed). LP_STRESS_DAEMON_ARGS are
# added to every lazy-pagesd command line. Binaries come from
# ${LP_BUILD:-build}/ and can be overridden with LAZY_PAGESD,
# LAZY_PAGES_SERVER, LP_DUMP, LP_RESTORE.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${LP_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DAEMON=${LAZY_PAGESD:-$BUILD/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$BUILD/lazy-pages-server}
DUMP=${LP_DUMP:-$BUILD/tests/lp-dump}
RESTORE=${LP_RESTORE:-$BUILD/tests/lp-restore}
SECONDS_EACH=${LP_STRESS_SECONDS:-10}
SEED=${LP_STRESS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
DAEMON_ARGS=(${LP_STRESS_DAEMON_ARGS:-})
DUMP_TIMEOUT=90				# one lp-dump
STEP_TIMEOUT=$((SECONDS_EACH + 100))	# one daemon or restore run
SCENARIO_TIMEOUT=$((DUMP_TIMEOUT + STEP_TIMEOUT + 20))

SCENARIOS=(stress-1 stress-200 stress-remote)

# ---------------------------------------------------------------------------
# helpers, used inside one scenario (run as `stress.sh --one NAME DIR`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

info() {
	echo "$*" >>"$T/info"
}

BG_PIDS=()
cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${BG_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
}

# shared_dump NAME ARGS...: lp-dump ARGS into the run's shared NAME (once
# per run); prints its path
shared_dump() {
	local name=$1 d=$SHARED/$1
	shift
	if [ ! -f "$d/.done" ]; then
		rm -rf "$d"
		timeout -k 5 $DUMP_TIMEOUT "$DUMP" -D "$d" "$@" >"$T/dump.out" 2>"$T/dump.err" ||
			fail "lp-dump $* failed: $(tail -n 3 "$T/dump.err" | tr '\n' ' ')"
		touch "$d/.done"
	fi
	echo "$d"
}

# server_view DIR: a copy of DIR for the daemon in remote mode, every
# pages-*.img a sparse file of the same size: a page that did not come from
# the page server reads as zeros and fails the checks. Prints its path.
server_view() {
	local src=$1 dst=$1.view f b
	if [ ! -f "$dst/.done" ]; then
		rm -rf "$dst"
		mkdir -p "$dst" || return 1
		for f in "$src"/*; do
			b=${f##*/}
			case "$b" in
			pages-*.img) truncate -s "$(stat -c %s "$f")" "$dst/$b" || return 1 ;;
			lp-expect-*) ;;
			*) cp "$f" "$dst/$b" || return 1 ;;
			esac
		done
		touch "$dst/.done"
	fi
	echo "$dst"
}

# start_server DIR: lazy-pages-server on 127.0.0.1, an ephemeral port,
# ready once its status fd says so. Sets PS_PORT.
start_server() {
	local p
	[ -x "$SERVER" ] || fail "not built: $SERVER"
	mkfifo "$T/server.ready" "$T/server.port" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "$SERVER" -D "$1" --address 127.0.0.1 --port 0 \
		--port-file "$T/server.port" --status-fd 3 \
		3>"$T/server.ready" >"$T/server.out" 2>"$T/server.log" &
	SPID=$!
	BG_PIDS+=("$SPID")
	head -c1 "$T/server.ready" >"$T/server.byte"
	[ -s "$T/server.byte" ] ||
		fail "lazy-pages-server exited before it was ready: $(tail -n 3 "$T/server.log" | tr '\n' ' ')"
	p=$(timeout 20 head -n1 "$T/server.port" 2>/dev/null)
	[[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] || fail "lazy-pages-server: no port in $T/server.port"
	PS_PORT=$p
}

stop_server() {
	local rc
	kill -TERM "$SPID" 2>/dev/null
	wait "$SPID"
	rc=$?
	[ $rc -eq 0 ] || fail "lazy-pages-server exit $rc on SIGTERM: $(tail -n 2 "$T/server.log" | tr '\n' ' ')"
}

# start_daemon DIR ARGS...: lazy-pagesd, ready once its status fd says so
start_daemon() {
	local dir=$1
	shift
	mkfifo "$T/ready" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "$DAEMON" -D "$dir" -W "$T/work" --status-fd 3 "${DAEMON_ARGS[@]}" "$@" \
		3>"$T/ready" >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	BG_PIDS+=("$DPID")
	head -c1 "$T/ready" >"$T/ready.byte"
	if [ ! -s "$T/ready.byte" ]; then
		wait "$DPID"
		fail "lazy-pagesd exited ($?) before it was ready: $(tail -n 3 "$T/daemon.log" | tr '\n' ' ')"
	fi
}

sget() {
	echo "$SUMMARY" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"
}

# the stress-counts lines of every restored process, summed: "key=value ..."
counts() {
	sed -n 's/.*stress-counts //p' "$T/restore.err" | awk '
		{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "pid") s[kv[1]] += kv[2] } n++ }
		END { printf "procs=%d", n; for (k in s) printf " %s=%d", k, s[k]; print "" }'
}

cget() {
	echo "$COUNTS" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# run_stress DIR NPROCS RESTORE_ARGS... [-- DAEMON_ARGS...]: one session of
# the stress scenario, then every check on what it says
run_stress() {
	local dir=$1 nprocs=$2 rargs=() dargs=() reason k
	shift 2
	while [ $# -gt 0 ] && [ "$1" != -- ]; do rargs+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	dargs=("$@")
	mkdir -p "$T/work"
	start_daemon "$dir" "${dargs[@]}"
	REPEAT="LP_STRESS_SEED=$SEED LP_STRESS_SECONDS=$SECONDS_EACH bash tests/stress.sh $NAME"
	echo "$RESTORE -D $IMAGES -W $T/work --timeout $((SECONDS_EACH + 80)) --scenario stress --seed $SEED --stress-seconds $SECONDS_EACH ${rargs[*]}" >"$T/command"
	timeout -k 5 $STEP_TIMEOUT "$RESTORE" -D "$IMAGES" -W "$T/work" --timeout $((SECONDS_EACH + 80)) \
		--scenario stress --seed "$SEED" --stress-seconds "$SECONDS_EACH" "${rargs[@]}" \
		>"$T/restore.out" 2>"$T/restore.err"
	RRC=$?
	wait "$DPID"
	DRC=$?
	SUMMARY=$(grep -m1 '^summary:' "$T/daemon.out")
	[ -n "${SPID:-}" ] && stop_server
	COUNTS=$(counts)
	if [ $RRC -ne 0 ]; then
		reason=$(grep -m3 -E 'HANG|should hold|mismatch|killed by|failed|: ' "$T/restore.err" | cut -c1-300 | tr '\n' ' ')
		[ $RRC -eq 124 ] && reason="lp-restore timed out after $STEP_TIMEOUT s (a hang); $reason"
		fail "lp-restore exit $RRC: $reason(seed $SEED; again: $REPEAT)"
	fi
	[ $DRC -ne 124 ] || fail "lazy-pagesd timed out after $STEP_TIMEOUT s (a hang; seed $SEED; again: $REPEAT)"
	[ $DRC -lt 128 ] || fail "lazy-pagesd died by signal $((DRC - 128)) (seed $SEED; again: $REPEAT)"
	[ $DRC -eq 0 ] || fail "lazy-pagesd exit $DRC: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ') (seed $SEED; again: $REPEAT)"
	[ -n "$SUMMARY" ] || fail "no summary line on the daemon's stdout"
	[ "$(cget procs)" = "$nprocs" ] ||
		fail "$(cget procs) of $nprocs restored processes reported their stress counts"
	[ "$(cget bad)" = 0 ] || fail "lp-restore exit 0, but bad=$(cget bad)"
	# a stress that did nothing proves nothing
	for k in forks mremaps munmaps dontneeds lazy_ops frontier_ops; do
		[ "$(cget $k)" -gt 0 ] 2>/dev/null || fail "the storms did no $k: $COUNTS"
	done
	[ "$(cget fork_failed)" = 0 ] || fail "fork_failed=$(cget fork_failed)"
	[ "$(sget processes)" -ge "$nprocs" ] 2>/dev/null || fail "summary says processes=$(sget processes), expected >= $nprocs"
	info "faults=$(sget faults) forks=$(cget forks) mremaps=$(cget mremaps) munmaps=$(cget munmaps) dontneeds=$(cget dontneeds) pages_verified=$(( $(cget checked) + $(cget fork_checked) ))"
	info "storm ops $(cget storm_ops), $(cget lazy_ops) while lazy, $(cget frontier_ops) where prefetch was copying; worker reads $(cget reads), writes $(cget writes); forked children checked $(cget fork_checked) pages; mremap skipped $(cget mremap_skipped)"
	info "daemon: processes=$(sget processes) pages_copied=$(sget pages_copied) zero_pages=$(sget zero_pages) exists=$(sget exists) retries=$(sget retries) fault_p99_us=$(sget fault_p99_us) seconds=$(sget seconds)$( [ -n "$(sget remote_bytes)" ] && echo " remote_bytes=$(sget remote_bytes)"); seed $SEED"
}

# ---------------------------------------------------------------------------
# scenarios

# 2 GiB and one prefetch thread: the fill must outlast the storms' start.
# (1 GiB with the default threads was complete in 0.2-0.3 s, so that the
# storms did 0-26 of their ~9,000 operations while pages were lazy.)
sc_stress-1() {
	IMAGES=$(shared_dump g2 --size 2048)
	run_stress "$IMAGES" 1 --stress-threads 16 --stress-storms 3 -- --prefetch-threads 1
}

sc_stress-200() {
	IMAGES=$(shared_dump g200 --procs 200 --size 2)
	# paced once a process is complete: 400 storms flat out would starve the
	# daemon of the CPU it needs for the processes still lazy
	run_stress "$IMAGES" 200 --order concurrent --stress-threads 2 --stress-storms 2 \
		--stress-rate 50 --stress-forks 16 -- --fault-threads 2 --prefetch-threads 2
}

sc_stress-remote() {
	local view
	IMAGES=$(shared_dump g1 --size 1024)
	view=$(server_view "$IMAGES") || fail "could not make the daemon's copy of $IMAGES"
	start_server "$IMAGES"
	run_stress "$view" 1 --stress-threads 16 --stress-storms 3 -- \
		--page-server --address 127.0.0.1 --port "$PS_PORT"
	[ "$(sget remote_bytes)" -gt 0 ] 2>/dev/null ||
		fail "remote_bytes=$(sget remote_bytes): nothing came from the page server"
}

# ---------------------------------------------------------------------------

if [ "${1:-}" = "--one" ]; then
	NAME=$2
	T=$3
	SHARED=$4
	cd "$T" || exit 1
	trap cleanup EXIT
	trap 'exit 143' TERM
	"sc_$NAME"
	exit 0
fi

names=()
for a in "$@"; do
	case "$a" in
	--list) printf '%s\n' "${SCENARIOS[@]}"; exit 0 ;;
	-*) echo "usage: bash tests/stress.sh [--list] [NAME...]" >&2; exit 2 ;;
	*) declare -F "sc_$a" >/dev/null || { echo "unknown scenario: $a (see --list)" >&2; exit 2; }
	   names+=("$a") ;;
	esac
done
[ ${#names[@]} -gt 0 ] || names=("${SCENARIOS[@]}")

export LP_STRESS_SEED=$SEED
shared=$(mktemp -d "${TMPDIR:-/tmp}/lp-stress.XXXXXX")
trap 'rm -rf "$shared"' EXIT
passed=0
failed=0
t_start=$(date +%s.%N)
echo "seed $SEED, ${SECONDS_EACH} s each" >&2
for n in "${names[@]}"; do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lp-stress.$n.XXXXXX")
	t0=$(date +%s.%N)
	missing=
	for b in "$DAEMON" "$DUMP" "$RESTORE" "$SERVER"; do
		[ -x "$b" ] || missing="$missing $b"
	done
	if [ -n "$missing" ]; then
		rc=1
		echo "not built:$missing" >"$dir/reason"
	else
		timeout -k 10 "$SCENARIO_TIMEOUT" bash "${BASH_SOURCE[0]}" --one "$n" "$dir" "$shared" \
			>"$dir/scenario.out" 2>&1
		rc=$?
	fi
	secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		echo "PASS $n (${secs} s)"
		[ -s "$dir/info" ] && sed 's/^/    /' "$dir/info"
	else
		failed=$((failed + 1))
		if [ -s "$dir/reason" ]; then
			reason=$(cat "$dir/reason")
		elif [ $rc -eq 124 ]; then
			reason="timed out after ${SCENARIO_TIMEOUT} s (a hang; seed $SEED)"
		else
			reason="scenario script exit $rc: $(tail -n 2 "$dir/scenario.out" | tr '\n' ' ')"
		fi
		echo "FAIL $n: $reason"
		[ -s "$dir/command" ] && echo "    command: $(cat "$dir/command")"
		if [ -s "$dir/restore.err" ]; then
			echo "    --- lp-restore (mismatches, hangs) ---"
			grep -E 'HANG|should hold|mismatch|killed by|failed|worker on|storm at|history of| s storm [0-9]|no storm op' \
				"$dir/restore.err" | head -n 40 | sed 's/^/    /'
		fi
		if [ -s "$dir/daemon.log" ]; then
			echo "    --- daemon log (tail) ---"
			tail -n 6 "$dir/daemon.log" | sed 's/^/    /'
		fi
	fi
	rm -rf "$dir"
done
echo "total $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t_start }") s" >&2
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
