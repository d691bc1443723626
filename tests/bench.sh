#!/bin/bash
# SPDX-License-Identifier: MIT
# The benchmark of lazy-pagesd: real workloads snapshotted by lp-dump,
# restored by lp-restore (every byte checked), served by the real daemon
# from local images, from lazy-pages-server on 127.0.0.1, and through
# lp-delay (1 ms each way). Every figure is printed next to a ceiling
# measured on this machine in the same run (build/tests/bench) and, where
# there is one, a target. It reports; it does not pass or fail.
#
#   bash tests/bench.sh [--quick | --full]
#
# Run from the repository root after `ninja`, as root. Default: a few
# minutes; --quick: about one, smaller images and fewer scenarios; --full
# adds 8 GiB. Writes the table to stdout and, in ${BENCH_OUT:-build/bench},
# bench.txt, bench.json, bench.png and the data behind the plot.
# Binaries can be overridden with LAZY_PAGESD, LAZY_PAGES_SERVER, LP_DUMP,
# LP_RESTORE, LP_DELAY, LP_BENCH.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAEMON=${LAZY_PAGESD:-$ROOT/build/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$ROOT/build/lazy-pages-server}
DUMP=${LP_DUMP:-$ROOT/build/tests/lp-dump}
RESTORE=${LP_RESTORE:-$ROOT/build/tests/lp-restore}
DELAY=${LP_DELAY:-$ROOT/build/tests/lp-delay}
BENCH=${LP_BENCH:-$ROOT/build/tests/bench}
OUT=${BENCH_OUT:-$ROOT/build/bench}
GP=$ROOT/tests/bench.gp

MODE=default
case "${1:-}" in
"") ;;
--quick) MODE=quick ;;
--full) MODE=full ;;
-h | --help)
	sed -n '3,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "usage: bash tests/bench.sh [--quick | --full]" >&2
	exit 2
	;;
esac

STEP_TIMEOUT=180	# one daemon or restore run, seconds
DELAY_MS=1		# lp-delay, each way

if [ "$MODE" = quick ]; then
	REPEAT=1	# runs per scenario; the median run is reported
	RESUME_REPEAT=7	# resume runs are short and their figure small: more of them
	BIG=256		# MiB of the "large" image
	COPY_MIB=256
	PROCS_LIST="1 16 256"
else
	REPEAT=3
	RESUME_REPEAT=15
	BIG=1024
	COPY_MIB=1024
	PROCS_LIST="1 16 256 1000"
fi
SMALL=16
BIG_NAME=$([ $BIG -ge 1024 ] && echo "$((BIG / 1024))g" || echo "${BIG}m")

for b in "$DAEMON" "$SERVER" "$DUMP" "$RESTORE" "$BENCH"; do
	[ -x "$b" ] || { echo "bench: not built: $b (run ninja first)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || echo "bench: not root: userfaultfd with fork events may be refused" >&2

T=$(mktemp -d "${TMPDIR:-/tmp}/lp-bench.XXXXXX") || exit 1
BG_PIDS=()
cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT" "$T/res" "$T/run" "$T/img" || exit 1
rm -f "$OUT"/progress-*.dat "$OUT"/latency.dat "$OUT"/bench.png

note() {
	echo "bench: $*" >&2
}

# calc EXPR: floating-point arithmetic
calc() {
	awk "BEGIN { printf \"%.6g\", ($1) }"
}

declare -A R		# R[scenario.key] = value, from every scenario's .kv
declare -A C		# C[key] = ceiling figure
SCENARIOS=()		# in the order they ran

load_kv() {	# NAME FILE
	local k v
	while IFS='=' read -r k v; do
		[ -n "$k" ] && R[$1.$k]=$v
	done <"$2"
}

# ---------------------------------------------------------------------------
# images

# dump NAME SIZE_MIB PROCS: lp-dump into $T/img/NAME
dump() {
	local d=$T/img/$1
	[ -d "$d" ] && return 0
	note "lp-dump $1: $3 process(es) x $2 MiB"
	if ! timeout -k 5 $STEP_TIMEOUT "$DUMP" -D "$d" --size "$2" --procs "$3" >"$T/img/$1.out" 2>"$T/img/$1.err"; then
		note "lp-dump $1 failed: $(tail -n 3 "$T/img/$1.err" | tr '\n' ' ')"
		rm -rf "$d"
		return 1
	fi
}

# view NAME: the daemon's copy of image dir NAME for remote mode: every
# pages-*.img a sparse file of its size, so no page can come from it
view() {
	local src=$T/img/$1 dst=$T/img/$1.view f b
	if [ ! -d "$dst" ]; then
		mkdir -p "$dst"
		for f in "$src"/*; do
			b=${f##*/}
			case "$b" in
			pages-*.img) truncate -s "$(stat -c %s "$f")" "$dst/$b" ;;
			lp-expect-*) ;;
			*) cp "$f" "$dst/$b" ;;
			esac
		done
	fi
	echo "$dst"
}

drop_images() {
	rm -rf "$T/img/$1" "$T/img/$1.view"
}

# ---------------------------------------------------------------------------
# page server and delay proxy

read_port() {	# FIFO: waits for the first line
	local p
	p=$(timeout 20 head -n1 "$1" 2>/dev/null)
	[[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] && echo "$p"
}

# start_server IMG: lazy-pages-server for $T/img/IMG; sets SPORT
start_server() {
	local d=$T/run/server-$1
	mkdir -p "$d"
	mkfifo "$d/ready"
	"$SERVER" -D "$T/img/$1" --address 127.0.0.1 --port 0 --port-file "$d/port" --status-fd 3 \
		3>"$d/ready" >"$d/out" 2>"$d/log" &
	BG_PIDS+=($!)
	SPID=$!
	head -c1 "$d/ready" >"$d/byte"
	SPORT=
	[ -s "$d/byte" ] && SPORT=$(head -n1 "$d/port")
	[ -n "$SPORT" ] || { note "lazy-pages-server did not start: $(tail -n 2 "$d/log" | tr '\n' ' ')"; return 1; }
}

stop_pid() {
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# start_delay PORT: lp-delay on 127.0.0.1 in front of 127.0.0.1:PORT; sets DLPORT
start_delay() {
	local f
	f=$(mktemp -u "$T/run/delay.XXXXXX")
	mkfifo "$f.port"
	"$DELAY" --listen 127.0.0.1:0 --connect "127.0.0.1:$1" --delay-ms "$DELAY_MS" --port-file "$f.port" \
		2>"$f.log" &
	BG_PIDS+=($!)
	DLPID=$!
	DLPORT=$(read_port "$f.port") || { note "lp-delay did not start: $(tail -n 2 "$f.log" | tr '\n' ' ')"; return 1; }
}

# ---------------------------------------------------------------------------
# one scenario

# run_once NAME.I KIND IMG SIZE_MIB PROCS LP_RESTORE_SCENARIO [PORT]: one
# restore of $T/img/IMG; KIND local, remote or delay (PORT: where the
# daemon connects). Results in $T/res/NAME.I.kv and .progress.
run_once() {
	local name=$1 kind=$2 img=$3 size=$4 procs=$5 scen=$6 port=${7:-}
	local S=$T/run/$name ddir=$T/img/$img dpid rrc drc marker t0 ln
	local dargs rargs

	mkdir -p "$S/work"
	mkfifo "$S/ready"
	[ -n "$port" ] && ddir=$(view "$img")
	dargs=(-D "$ddir" -W "$S/work" --status-fd 3 --progress-file "$S/progress" -v)
	# shellcheck disable=SC2206 # BENCH_DAEMON_ARGS: words, for trying daemon options
	dargs+=(${BENCH_DAEMON_ARGS:-})
	[ -n "$port" ] && dargs+=(--page-server --address 127.0.0.1 --port "$port")
	"$BENCH" run --stats "$S/daemon.stats" --sample-ms 5 --timeout $STEP_TIMEOUT -- "$DAEMON" "${dargs[@]}" \
		3>"$S/ready" >"$S/daemon.out" 2>"$S/daemon.log" &
	dpid=$!
	BG_PIDS+=($dpid)
	head -c1 "$S/ready" >"$S/ready.byte"
	if [ ! -s "$S/ready.byte" ]; then
		wait $dpid
		drc=$?
		note "$name: the daemon did not start: $(tail -n 2 "$S/daemon.log" | tr '\n' ' ')"
		printf 'kind=%s\nrestore_rc=none\ndaemon_rc=%s\n' "$kind" "$drc" >"$T/res/$name.kv"
		rm -rf "$S"
		return 1
	fi
	rargs=(-D "$T/img/$img" -W "$S/work" --timeout $((STEP_TIMEOUT - 10)) --scenario "$scen")
	# faults timed by the faulting thread itself (mincore, then the read)
	case $scen in seq | random | threads | exit) rargs+=(--time-faults) ;; esac
	# idle: nothing is touched until the daemon is gone (its runner exits right after it)
	[ "$scen" = idle ] && rargs+=(--wait-pid "$dpid")
	"$BENCH" run --stats "$S/restore.stats" --timeout $STEP_TIMEOUT -- "$RESTORE" "${rargs[@]}" \
		>"$S/restore.out" 2>"$S/restore.err"
	rrc=$?
	wait $dpid
	drc=$?
	if [ $rrc -ne 0 ] || [ $drc -ne 0 ]; then
		note "$name: lp-restore exit $rrc, daemon exit $drc: $(grep -m2 -E 'mismatch|HANG|failed|error' "$S/restore.err" | tr '\n' ' ') $(tail -n 2 "$S/daemon.log" | tr '\n' ' ')"
	fi
	{
		echo "kind=$kind"
		echo "size_mib=$size"
		echo "procs=$procs"
		echo "scenario=$scen"
		echo "restore_rc=$rrc"
		echo "daemon_rc=$drc"
		sed -n 's/^summary: //p' "$S/daemon.out" | tr ' ' '\n' | grep = | sed 's/^/d_/'
		[ -f "$S/daemon.stats" ] && sed 's/^/dstat_/' "$S/daemon.stats"
		[ -f "$S/restore.stats" ] && sed 's/^/rstat_/' "$S/restore.stats"
		echo "restore_s=$(sed -n 's/.* in \([0-9.]*\) s$/\1/p' "$S/restore.out")"
		# faults as the restored process saw them: "faults timed: N (K more served by the kernel) p50_us=..."
		sed -n 's/^lp-restore: faults timed: \([0-9]*\) (\([0-9]*\) .*)\(.*\)/r_faults=\1 r_kernel_faults=\2\3/p' \
			"$S/restore.out" | tr ' ' '\n' | grep = | sed 's/^p/r_fault_p/'
		# from the RSTF marker to the first page a restored process read (lp-restore's clock)
		sed -n 's/^lp-restore: resume: first page read \([0-9.]*\) ms.*/resume_ms=\1/p' "$S/restore.out"
	} >"$T/res/$name.kv"
	[ -s "$S/progress" ] && cp "$S/progress" "$T/res/$name.progress"
	rm -rf "$S"
	return 0
}

# scenario_run NAME I KIND IMG SIZE_MIB PROCS LP_RESTORE_SCENARIO [PORT]: the
# I-th run of NAME (run_once)
scenario_run() {
	local name=$1 i=$2
	shift 2
	note "run $name ($i)"
	run_once "$name.$i" "$@"
}

# scenario_collect NAME N: of runs 1..N, the one with the median fill time
# stands for all, its figures in $T/res/NAME.kv and R[], its progress in
# $OUT/progress-NAME.dat; the resume figure is the median of all runs.
scenario_collect() {
	local name=$1 n=$2 i s med all= res
	# runs that finished, by fill time; a failed run stands if none did
	med=$(for ((i = 1; i <= n; i++)); do
		s=$(sed -n 's/^d_seconds=//p' "$T/res/$name.$i.kv")
		grep -q '^restore_rc=0' "$T/res/$name.$i.kv" && grep -q '^daemon_rc=0' "$T/res/$name.$i.kv" &&
			[ -n "$s" ] && echo "$s $i"
	done | sort -n | awk '{ v[NR] = $2; s = s (NR > 1 ? "," : "") $1 } END { if (NR) print v[int((NR + 1) / 2)], s }')
	all=${med#* }
	med=${med%% *}
	[ -n "$med" ] || { med=1; all=; }
	# resume latency: the median over the runs that measured it
	res=$(for ((i = 1; i <= n; i++)); do sed -n 's/^resume_ms=//p' "$T/res/$name.$i.kv"; done |
		sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
	grep -v '^resume_ms=' "$T/res/$name.$med.kv" >"$T/res/$name.kv"
	echo "runs=$n" >>"$T/res/$name.kv"
	[ -n "$all" ] && echo "fill_s_all=$all" >>"$T/res/$name.kv"
	[ -n "$res" ] && echo "resume_ms=$res" >>"$T/res/$name.kv"
	if [ -s "$T/res/$name.$med.progress" ]; then
		awk '{ printf "%s %.3f %s\n", $1, ($2 + $3) * 4096 / 1048576, $4 }' "$T/res/$name.$med.progress" \
			>"$OUT/progress-$name.dat"
	fi
	rm -f "$T/res/$name".[0-9]*.*
	load_kv "$name" "$T/res/$name.kv"
	SCENARIOS+=("$name")
}

# scenario NAME KIND IMG SIZE_MIB PROCS LP_RESTORE_SCENARIO [PORT]: REPEAT runs
scenario() {
	local name=$1 img=$3 n=${REPEAT_ONE:-$REPEAT} i
	[ -d "$T/img/$img" ] || return 1
	for ((i = 1; i <= n; i++)); do
		scenario_run "$name" "$i" "${@:2}"
	done
	scenario_collect "$name" "$n"
}

# resume_pair SMALL_NAME BIG_NAME BIG_IMG BIG_MIB: resume runs (lp-restore's
# exit scenario: 16 pages read, then exit) of the small image and of BIG_IMG,
# taken in turns so that the machine's mood changes both alike
resume_pair() {
	local i a b
	[ -d "$T/img/small" ] && [ -d "$T/img/$3" ] || return 1
	for ((i = 1; i <= RESUME_REPEAT; i++)); do
		scenario_run "$1" "$i" local small "$SMALL" 1 exit
		scenario_run "$2" "$i" local "$3" "$4" 1 exit
	done
	# the ratio of each pair, large over small: their median is the figure to hold to 1.2
	for ((i = 1; i <= RESUME_REPEAT; i++)); do
		a=$(sed -n 's/^resume_ms=//p' "$T/res/$1.$i.kv")
		b=$(sed -n 's/^resume_ms=//p' "$T/res/$2.$i.kv")
		[ -n "$a" ] && [ -n "$b" ] && calc "$b / $a" && echo
	done | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }' >"$T/res/$2.pairs"
	scenario_collect "$1" "$RESUME_REPEAT"
	scenario_collect "$2" "$RESUME_REPEAT"
	[ -s "$T/res/$2.pairs" ] && R[$2.pair_ratio]=$(cat "$T/res/$2.pairs")
	rm -f "$T/res/$2.pairs"
}

# ---------------------------------------------------------------------------
# ceilings

ceilings() {
	local k v
	note "ceilings: UFFDIO_COPY ($COPY_MIB MiB), trivial fault handler, TCP round trip"
	{
		# with the big image's pages file, hot in the page cache: pread + COPY as well
		"$BENCH" copy-ceiling --size "$COPY_MIB" --rounds 3 \
			$([ -f "$T/img/big/pages-1.img" ] && echo "--file $T/img/big/pages-1.img")
		"$BENCH" fault-ceiling --count 20000 --rounds 3
		"$BENCH" rtt-ceiling --count 2000 --reply-kib 64 --bulk-mib 256
	} >"$T/ceil.kv" || note "a ceiling failed"
	if [ -x "$DELAY" ]; then
		local f=$T/run/rtt
		mkdir -p "$f"
		mkfifo "$f/port"
		"$BENCH" rtt-server --port-file "$f/port" 2>"$f/log" &
		BG_PIDS+=($!)
		local rp=$!
		local p
		p=$(read_port "$f/port")
		if [ -n "$p" ] && start_delay "$p"; then
			"$BENCH" rtt-ceiling --port "$DLPORT" --count 200 --reply-kib 64 --bulk-mib 64 |
				sed 's/^/delay_/' >>"$T/ceil.kv"
			stop_pid "$DLPID"
		fi
		stop_pid "$rp"
	fi
	while IFS='=' read -r k v; do
		[ -n "$k" ] && C[$k]=$v
	done <"$T/ceil.kv"
}

# ---------------------------------------------------------------------------
# the runs

LOAD0=$(cut -d' ' -f1 /proc/loadavg)
[ "$(calc "$LOAD0 >= 0.5")" = 1 ] &&
	note "load average $LOAD0 before the first run: other work on this machine will show in the figures"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$(date +%s.%N)

# local images
dump big "$BIG" 1
ceilings
if [ -d "$T/img/big" ]; then
	scenario "local-seq-$BIG_NAME" local big "$BIG" 1 seq
	scenario "local-random-$BIG_NAME" local big "$BIG" 1 random
	scenario "local-idle-$BIG_NAME" local big "$BIG" 1 idle
	# faults with no background fill at all (--no-prefetch): the fault path on its own
	BENCH_DAEMON_ARGS=--no-prefetch scenario "local-random-nopf-$BIG_NAME" local big "$BIG" 1 random
fi
if dump small "$SMALL" 1; then
	scenario "local-idle-${SMALL}m" local small "$SMALL" 1 idle
fi
# resume: from the marker to the first page a restored process read, small against large
resume_pair "local-resume-${SMALL}m" "local-resume-$BIG_NAME" big "$BIG"

# remote: lazy-pages-server on 127.0.0.1, then through lp-delay
HAVE_DELAY=0
[ -x "$DELAY" ] && HAVE_DELAY=1
[ $HAVE_DELAY = 1 ] || note "no $DELAY: the delayed-link scenarios are skipped"
for img in big small; do
	[ -d "$T/img/$img" ] || continue
	start_server "$img" || continue
	sp=$SPID
	if [ $img = big ]; then
		scenario "remote-seq-$BIG_NAME" remote big "$BIG" 1 seq "$SPORT"
		scenario "remote-random-$BIG_NAME" remote big "$BIG" 1 random "$SPORT"
		scenario "remote-idle-$BIG_NAME" remote big "$BIG" 1 idle "$SPORT"
	else
		scenario "remote-seq-${SMALL}m" remote small "$SMALL" 1 seq "$SPORT"
	fi
	if [ $HAVE_DELAY = 1 ] && start_delay "$SPORT"; then
		if [ $img = big ]; then
			scenario "delay-seq-$BIG_NAME" delay big "$BIG" 1 seq "$DLPORT"
			scenario "delay-random-$BIG_NAME" delay big "$BIG" 1 random "$DLPORT"
		else
			scenario "delay-seq-${SMALL}m" delay small "$SMALL" 1 seq "$DLPORT"
		fi
		stop_pid "$DLPID"
	fi
	stop_pid "$sp"
done
drop_images big

# many processes in one session, 1 MiB each
for n in $PROCS_LIST; do
	if dump "procs$n" 1 "$n"; then
		scenario "procs-$n" local "procs$n" $n "$n" seq
	fi
	drop_images "procs$n"
done

if [ "$MODE" = full ]; then
	if dump huge 8192 1; then
		REPEAT_ONE=1 scenario local-idle-8g local huge 8192 1 idle
		REPEAT_ONE=1 scenario local-seq-8g local huge 8192 1 seq
		resume_pair "local-resume-${SMALL}m-vs-8g" local-resume-8g huge 8192
		if start_server huge; then
			REPEAT_ONE=1 scenario remote-idle-8g remote huge 8192 1 idle "$SPORT"
			stop_pid "$SPID"
		fi
	fi
	drop_images huge
fi
drop_images small
ELAPSED=$(calc "$(date +%s.%N) - $t_start")

# ---------------------------------------------------------------------------
# rows: scenario metric value unit ceiling ceiling_of target

ROWS=$T/rows
: >"$ROWS"

# row SCENARIO METRIC VALUE UNIT [CEILING CEILING_OF [TARGET]]; TARGET is
# le:X or ge:X on the ratio value/ceiling. Fields are |-separated (empty
# ones must survive `read`).
row() {
	[ -n "$3" ] || return 0
	printf '%s|%s|%s|%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-}" "${7:-}" >>"$ROWS"
}

get() {	# SCENARIO KEY
	echo "${R[$1.$2]:-}"
}

for k in copy_64k_gbps copy_2m_gbps copy_2m_all_gbps pread_copy_2m_gbps mmap_copy_2m_gbps; do
	row ceiling "$k" "${C[$k]:-}" GB/s
done
for k in fault_touch fault_handler rtt delay_rtt; do
	for q in p50 p99 p999; do
		row ceiling "${k}_${q}" "${C[${k}_${q}_us]:-}" us
	done
done
row ceiling tcp_gbps "${C[tcp_gbps]:-}" GB/s
row ceiling delay_tcp_gbps "${C[delay_tcp_gbps]:-}" GB/s

for s in "${SCENARIOS[@]}"; do
	kind=$(get "$s" kind)
	procs=$(get "$s" procs)
	scen=$(get "$s" scenario)
	secs=$(get "$s" d_seconds)
	copied=$(get "$s" d_pages_copied)
	zeros=$(get "$s" d_zero_pages)
	faults=$(get "$s" d_faults)
	if [ "$(get "$s" restore_rc)" != 0 ] || [ "$(get "$s" daemon_rc)" != 0 ]; then
		row "$s" FAILED "lp-restore=$(get "$s" restore_rc),daemon=$(get "$s" daemon_rc)" ""
	fi
	[ -n "$secs" ] && [ -n "$copied" ] || continue
	served_mib=$(calc "($copied + $zeros) * 4096 / 1048576")
	row "$s" restore_s "$(get "$s" restore_s)" s
	row "$s" fill_s "$secs" s
	[ -n "$(get "$s" fill_s_all)" ] && [ "$(get "$s" runs)" -gt 1 ] && [ "$scen" != exit ] &&
		row "$s" fill_s_runs "$(get "$s" fill_s_all)" s
	# fill throughput against one thread's UFFDIO_COPY in 2 MiB chunks (target for idle only: background fill)
	if [ "$(calc "$secs > 0")" = 1 ] && [ "$(get "$s" size_mib)" -ge 256 ] && [ "$scen" != exit ]; then
		row "$s" fill_gbps "$(calc "$copied * 4096 / $secs / 1e9")" GB/s "${C[copy_2m_gbps]:-}" copy_2m \
			$([ "$kind" = local ] && [ "$scen" = idle ] && echo ge:0.75)
		# and against every core copying at once (the daemon's prefetch uses them all when idle)
		row "$s" fill_gbps/all_cores "$(calc "$copied * 4096 / $secs / 1e9")" GB/s "${C[copy_2m_all_gbps]:-}" copy_2m_all
		# through a page server: against TCP on the same path
		case $kind in
		remote) row "$s" fill_gbps/tcp "$(calc "$copied * 4096 / $secs / 1e9")" GB/s "${C[tcp_gbps]:-}" tcp ;;
		delay) row "$s" fill_gbps/tcp "$(calc "$copied * 4096 / $secs / 1e9")" GB/s "${C[delay_tcp_gbps]:-}" tcp+delay ;;
		esac
	fi
	# random against sequential, same image, same source
	sq=${s/-random-/-seq-}
	if [ "$scen" = random ] && [ -n "$(get "$sq" d_seconds)" ]; then
		row "$s" restore_s/seq "$(get "$s" restore_s)" s "$(get "$sq" restore_s)" "$sq" le:2
		row "$s" fill_s/seq "$secs" s "$(get "$sq" d_seconds)" "$sq" le:2
	fi
	# faults as the faulting thread saw them (lp-restore --time-faults)
	# against the trivial handler's round trip seen the same way; remote:
	# against a 64 KiB TCP round trip on the same path. The daemon's own
	# figure (read to page in) follows, for comparison.
	if [ -n "$faults" ] && [ "$faults" -gt 0 ] && [ "$scen" != idle ]; then
		busy=
		# targets: local images, one process, seq or random (remote rows are figures to compare, no target)
		[ "$(get "$s" size_mib)" -ge 256 ] && [ "$procs" = 1 ] && [ "$scen" != exit ] && [ "$kind" = local ] &&
			[[ $s != *-nopf-* ]] && busy=1
		case $kind in
		local) cp=fault_touch cof=trivial_handler ;;
		remote) cp=rtt cof=tcp_rtt_64k ;;
		delay) cp=delay_rtt cof=tcp_rtt_64k+delay ;;
		esac
		row "$s" faults "$faults" ""
		# many processes on few cores: what a thread sees is mostly its wait for a CPU
		if [ -n "$(get "$s" r_faults)" ] && [ "$procs" = 1 ]; then
			row "$s" faults_timed "$(get "$s" r_faults)" ""
			row "$s" fault_p50_us "$(get "$s" r_fault_p50_us)" us "${C[${cp}_p50_us]:-}" "$cof" ${busy:+le:1.5}
			row "$s" fault_p99_us "$(get "$s" r_fault_p99_us)" us "${C[${cp}_p99_us]:-}" "$cof" ${busy:+le:3}
			row "$s" fault_p999_us "$(get "$s" r_fault_p999_us)" us "${C[${cp}_p999_us]:-}" "$cof"
		fi
		row "$s" daemon_fault_p50_us "$(get "$s" d_fault_p50_us)" us
		row "$s" daemon_fault_p99_us "$(get "$s" d_fault_p99_us)" us
		if [ "$kind" != local ]; then
			row "$s" fault_rtt_p50_us "$(get "$s" d_fault_rtt_p50_us)" us "${C[${cp}_p50_us]:-}" "$cof" ${busy:+le:1.5}
			row "$s" fault_rtt_p99_us "$(get "$s" d_fault_rtt_p99_us)" us "${C[${cp}_p99_us]:-}" "$cof" ${busy:+le:3}
			# under full prefetch against the same link with little else on it
			if [ "$(get "$s" size_mib)" -ge 256 ]; then
				idle=$kind-seq-${SMALL}m
				row "$s" fault_rtt_p50/idle "$(get "$s" d_fault_rtt_p50_us)" us "$(get "$idle" d_fault_rtt_p50_us)" "$idle"
				row "$s" fault_rtt_p99/idle "$(get "$s" d_fault_rtt_p99_us)" us "$(get "$idle" d_fault_rtt_p99_us)" "$idle"
			fi
		fi
	fi
	if [ "$kind" != local ] && [ -n "$(get "$s" d_remote_bytes)" ]; then
		row "$s" remote_mib/copied "$(calc "$(get "$s" d_remote_bytes) / 1048576")" MiB \
			"$(calc "$copied * 4096 / 1048576")" copied
	fi
	rss=$(get "$s" dstat_maxrss_kib)
	if [ -n "$rss" ]; then
		row "$s" daemon_rss_mib "$(calc "$rss / 1024")" MiB "$(calc "32 + 0.002 * $served_mib")" 32MiB+0.2% le:1
	fi
	row "$s" daemon_threads "$(get "$s" dstat_threads_max)" ""
	row "$s" daemon_cpu_s "$(get "$s" dstat_cpu_s)" s
	if [ "$procs" -gt 1 ]; then
		row "$s" restore_ms/proc "$(calc "$(get "$s" restore_s) * 1000 / $procs")" ms
	fi
	if [ "$kind" = local ]; then
		row "$s" resume_ms "$(get "$s" resume_ms)" ms
	fi
done
# resume latency independent of size: the large restores against the 16 MiB one
for pair in "local-resume-$BIG_NAME local-resume-${SMALL}m" "local-resume-8g local-resume-${SMALL}m-vs-8g"; do
	s=${pair% *}
	sm=${pair#* }
	[ -n "$(get "$s" resume_ms)" ] || continue
	row "$s" resume_ms/${SMALL}m "$(get "$s" resume_ms)" ms "$(get "$sm" resume_ms)" "$sm"
	# runs taken in turns: the median of the pairs' ratios is what noise moves least
	row "$s" resume_pair_ratio "$(get "$s" pair_ratio)" "" 1 "same-pair ${SMALL}m" le:1.2
done

# ---------------------------------------------------------------------------
# table, JSON, plot

# ratio and verdict; prints the table
awk -F'|' -v elapsed="$ELAPSED" -v vfile="$T/verdicts" -v mode="$MODE" -v load="$LOAD0" '
function fmt(x) {
	if (x == "" || x !~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/) return x
	x += 0
	if (x == int(x) && (x < 0 ? -x : x) < 1e15) return sprintf("%d", x)
	if (x < 0 ? -x >= 1000 : x >= 1000) return sprintf("%.0f", x)
	if (x < 0 ? -x >= 100 : x >= 100) return sprintf("%.1f", x)
	if (x < 0 ? -x >= 1 : x >= 1) return sprintf("%.2f", x)
	return sprintf("%.3f", x)
}
{
	n++
	sc[n] = $1; me[n] = $2; va[n] = fmt($3) ($4 != "" ? " " $4 : "")
	ce[n] = $5 != "" ? fmt($5) ($6 != "" ? " (" $6 ")" : "") : ""
	ra[n] = ""; tg[n] = ""; ok[n] = ""
	if ($5 != "" && $5 + 0 != 0 && $3 ~ /^[0-9.]/) {
		r = $3 / $5
		ra[n] = sprintf("%.2f", r)
		if ($7 ~ /^le:/) { t = substr($7, 4) + 0; tg[n] = "<= " substr($7, 4); ok[n] = r <= t ? "yes" : "NO" }
		if ($7 ~ /^ge:/) { t = substr($7, 4) + 0; tg[n] = ">= " substr($7, 4); ok[n] = r >= t ? "yes" : "NO" }
	}
	print ra[n] "|" tg[n] "|" ok[n] > vfile
}
END {
	h[1] = "scenario"; h[2] = "metric"; h[3] = "value"; h[4] = "ceiling"; h[5] = "ratio"; h[6] = "target"; h[7] = "meets"
	for (i = 1; i <= 7; i++) w[i] = length(h[i])
	for (i = 1; i <= n; i++) {
		c[1] = sc[i]; c[2] = me[i]; c[3] = va[i]; c[4] = ce[i]; c[5] = ra[i]; c[6] = tg[i]; c[7] = ok[i]
		for (j = 1; j <= 7; j++) if (length(c[j]) > w[j]) w[j] = length(c[j])
	}
	printf "lazy-pagesd benchmark (%s mode, %.0f s, load average %s at start%s)\n\n", mode, elapsed, load, (load + 0 >= 0.5 ? ": figures disturbed by other work" : "")
	line = sprintf("%-" w[1] "s  %-" w[2] "s  %" w[3] "s  %-" w[4] "s  %" w[5] "s  %-" w[6] "s  %s", h[1], h[2], h[3], h[4], h[5], h[6], h[7])
	print line
	gsub(/./, "-", line); print line
	for (i = 1; i <= n; i++) {
		if (i > 1 && sc[i] != sc[i - 1]) print ""
		printf "%-" w[1] "s  %-" w[2] "s  %" w[3] "s  %-" w[4] "s  %" w[5] "s  %-" w[6] "s  %s\n", sc[i], me[i], va[i], ce[i], ra[i], tg[i], ok[i]
	}
}' "$ROWS" | tee "$OUT/bench.txt"

# JSON: run, ceilings, every scenario's raw figures, the rows with ratios
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}
json_val() {
	if [[ "$1" =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then printf '%s' "$1"; else json_str "$1"; fi
}
{
	printf '{\n  "mode": %s, "started": %s, "seconds": %s, "load_average": %s,\n' \
		"$(json_str "$MODE")" "$(json_str "$STARTED")" "$ELAPSED" "$LOAD0"
	printf '  "host": {"cores": %s, "kernel": %s, "mem_kib": %s},\n' "$(nproc)" "$(json_str "$(uname -r)")" \
		"$(awk '/^MemTotal/ { print $2 }' /proc/meminfo)"
	printf '  "ceilings": {'
	sep=
	for k in $(printf '%s\n' "${!C[@]}" | sort); do
		printf '%s\n    %s: %s' "$sep" "$(json_str "$k")" "$(json_val "${C[$k]}")"
		sep=,
	done
	printf '\n  },\n  "scenarios": {'
	sep=
	for s in "${SCENARIOS[@]}"; do
		printf '%s\n    %s: {' "$sep" "$(json_str "$s")"
		sep2=
		while IFS='=' read -r k v; do
			[ -n "$k" ] || continue
			printf '%s%s: %s' "$sep2" "$(json_str "$k")" "$(json_val "$v")"
			sep2=', '
		done <"$T/res/$s.kv"
		printf '}'
		sep=,
	done
	printf '\n  },\n  "rows": ['
	sep=
	exec 4<"$T/verdicts"
	while IFS='|' read -r sc me va un ce cof tg; do
		IFS='|' read -r ratio target meets <&4
		printf '%s\n    {"scenario": %s, "metric": %s, "value": %s, "unit": %s' "$sep" "$(json_str "$sc")" \
			"$(json_str "$me")" "$(json_val "$va")" "$(json_str "$un")"
		[ -n "$ce" ] && printf ', "ceiling": %s, "ceiling_of": %s' "$(json_val "$ce")" "$(json_str "$cof")"
		[ -n "$ratio" ] && printf ', "ratio": %s' "$ratio"
		[ -n "$target" ] && printf ', "target": %s, "meets": %s' "$(json_str "$target")" \
			"$([ "$meets" = yes ] && echo true || echo false)"
		printf '}'
		sep=,
	done <"$ROWS"
	exec 4<&-
	printf '\n  ]\n}\n'
} >"$OUT/bench.json"

# fault latency per scenario for the plot, the ceilings first
{
	echo "# name p50_us p99_us p999_us"
	echo "trivial-handler ${C[fault_touch_p50_us]:-0} ${C[fault_touch_p99_us]:-0} ${C[fault_touch_p999_us]:-0}"
	[ -n "${C[rtt_p50_us]:-}" ] && echo "tcp-rtt-64k ${C[rtt_p50_us]} ${C[rtt_p99_us]} ${C[rtt_p999_us]}"
	[ -n "${C[delay_rtt_p50_us]:-}" ] && echo "tcp-rtt-64k+delay ${C[delay_rtt_p50_us]} ${C[delay_rtt_p99_us]} ${C[delay_rtt_p999_us]}"
	for s in "${SCENARIOS[@]}"; do
		f=$(get "$s" r_faults)
		# one process reading on (not the resume runs' 16 pages, not many processes waiting for a CPU)
		[ -n "$f" ] && [ "$f" -gt 0 ] && [ "$(get "$s" procs)" = 1 ] || continue
		case $(get "$s" scenario) in idle | exit) continue ;; esac
		echo "$s $(get "$s" r_fault_p50_us) $(get "$s" r_fault_p99_us) $(get "$s" r_fault_p999_us)"
		# remote: the urgent requests' network round trips (no p99.9 in the summary)
		[ -n "$(get "$s" d_fault_rtt_p50_us)" ] &&
			echo "$s(rtt) $(get "$s" d_fault_rtt_p50_us) $(get "$s" d_fault_rtt_p99_us) NaN"
	done
} >"$OUT/latency.dat"

if ! command -v gnuplot >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		note "installing gnuplot-nox for the plot"
		apt-get install -y gnuplot-nox >/dev/null 2>&1 ||
			{ apt-get update >/dev/null 2>&1 && apt-get install -y gnuplot-nox >/dev/null 2>&1; }
	fi
fi
if command -v gnuplot >/dev/null; then
	gnuplot -c "$GP" "$OUT" 2>"$T/gnuplot.err" || note "gnuplot: $(head -n 3 "$T/gnuplot.err")"
else
	note "no gnuplot (apt-get install gnuplot-nox): no $OUT/bench.png"
fi
echo
echo "written: $OUT/bench.txt $OUT/bench.json$([ -f "$OUT/bench.png" ] && echo " $OUT/bench.png")"
