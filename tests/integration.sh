#!/bin/bash
# SPDX-License-Identifier: MIT
# Integration tests: the real lazy-pagesd against images written by lp-dump
# from live processes, restored by lp-restore the way `criu restore
# --lazy-pages` does it, every byte checked.
#
#   bash tests/integration.sh [--list] [NAME...]
#
# Run from the repository root, as root (userfaultfd with EVENT_FORK).
# Each scenario runs in its own directory under ${TMPDIR:-/tmp} (removed
# afterwards), bounded by timeout(1). Prints "PASS name" or "FAIL name:
# reason" per scenario and ends with "N passed, N failed".
# Binaries can be overridden with LAZY_PAGESD, LP_DUMP, LP_RESTORE.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAEMON=${LAZY_PAGESD:-$ROOT/build/lazy-pagesd}
DUMP=${LP_DUMP:-$ROOT/build/tests/lp-dump}
RESTORE=${LP_RESTORE:-$ROOT/build/tests/lp-restore}
SCENARIO_TIMEOUT=${LP_SCENARIO_TIMEOUT:-120}	# whole scenario, seconds
STEP_TIMEOUT=60					# one daemon or restore run

SCENARIOS=(
	gib gib-random procs8 threads16 fork mremap munmap dontneed dontneed-race
	exit idle zombie parent-chain holes order-reverse order-random
	order-concurrent wire3 nonlazy-vma threads-in-pstree
	bad-missing-image bad-missing-mm bad-magic bad-magic-pagemap bad-truncated
	bad-pages-short bad-bogus-pid bad-garbage bad-close-early bad-nofd
	bad-marker
)

# ---------------------------------------------------------------------------
# helpers, used inside one scenario (run as `integration.sh --one NAME DIR`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

info() {
	echo "$*" >>"$T/info"
}

# dump DIR ARGS...: lp-dump into DIR; its output line goes to $T/dump.out
dump() {
	local dir=$1
	shift
	timeout -k 5 $STEP_TIMEOUT "$DUMP" -D "$dir" "$@" >"$T/dump.out" 2>"$T/dump.err" ||
		fail "lp-dump $* failed: $(tail -n 3 "$T/dump.err" | tr '\n' ' ')"
}

# the pids lp-dump wrote, from the pstree in its output line
dump_pids() {
	sed -n 's/.*\[\([^]]*\)\].*/\1/p' "$T/dump.out" | tr ' ' '\n' | sed 's/(zombie)//'
}

dump_stat() {
	sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$T/dump.out"
}

# start_daemon DIR WORKDIR [ARGS...]: starts lazy-pagesd and waits (on the
# status fd, no sleeping) until it listens. Sets DPID. Returns 1 if it
# exited before it was ready.
start_daemon() {
	local dir=$1 work=$2
	shift 2
	rm -f "$T/ready"
	mkfifo "$T/ready" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "$DAEMON" -D "$dir" -W "$work" --status-fd 3 "$@" \
		3>"$T/ready" >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	head -c1 "$T/ready" >"$T/ready.byte"
	[ -s "$T/ready.byte" ] || return 1
	[ "$(od -An -tx1 "$T/ready.byte" | tr -d ' ')" = "00" ] ||
		fail "status fd: expected one 0x00 byte, got $(od -An -tx1 "$T/ready.byte")"
	[ -S "$work/lazy-pages.socket" ] || fail "ready, but no $work/lazy-pages.socket"
	return 0
}

# finish_daemon: waits for it; sets DRC and SUMMARY
finish_daemon() {
	wait "$DPID"
	DRC=$?
	SUMMARY=$(grep -m1 '^summary:' "$T/daemon.out")
}

sget() {
	echo "$SUMMARY" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"
}

# restore DIR WORKDIR ARGS...: lp-restore; sets RRC, output in $T/restore.*
restore() {
	local dir=$1 work=$2
	shift 2
	timeout -k 5 $STEP_TIMEOUT "$RESTORE" -D "$dir" -W "$work" --timeout $((STEP_TIMEOUT - 10)) \
		"$@" >"$T/restore.out" 2>"$T/restore.err"
	RRC=$?
}

restore_reason() {
	grep -m3 -E 'mismatch|HANG|failed|error|: ' "$T/restore.err" | tr '\n' ' ' | cut -c1-400
}

# good DUMPDIR NPROCS [lp-restore args...]: one restore that must verify
# every byte, with a daemon that must exit 0 with a summary line.
good() {
	local dir=$1 nprocs=$2
	shift 2
	start_daemon "$dir" "$T/work" || {
		finish_daemon
		fail "daemon exited before listening (status $DRC)"
	}
	restore "$dir" "$T/work" "$@"
	finish_daemon
	[ $DRC -lt 128 ] || fail "daemon died by signal $((DRC - 128))"
	[ $RRC -eq 0 ] || fail "lp-restore exit $RRC: $(restore_reason)"
	[ $DRC -eq 0 ] || fail "daemon exit $DRC"
	[ -n "$SUMMARY" ] || fail "no summary line on the daemon's stdout"
	local p c
	p=$(sget processes)
	c=$(sget pages_copied)
	[ -n "$p" ] && [ -n "$c" ] && [ -n "$(sget zero_pages)" ] && [ -n "$(sget faults)" ] &&
		[ -n "$(sget seconds)" ] || fail "summary line lacks fields: $SUMMARY"
	[ "$p" = "$nprocs" ] || fail "summary says processes=$p, expected $nprocs"
	[ "$c" -gt 0 ] || fail "pages_copied=$c, but the images have lazy pages"
	RTIME=$(sed -n 's/.* in \([0-9.]*\) s$/\1/p' "$T/restore.out")
}

# bad_expect PATTERN: the daemon must have failed cleanly, saying PATTERN
bad_expect() {
	local pat=$1
	[ $DRC -ne 0 ] || fail "daemon exited 0 on bad input"
	[ $DRC -lt 128 ] || fail "daemon died by signal $((DRC - 128)) on bad input"
	[ $DRC -ne 124 ] || fail "daemon hung on bad input (timeout)"
	grep -q -E -- "$pat" "$T/daemon.log" ||
		fail "daemon error does not mention '$pat': $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
	info "$(grep -m1 -E -- "$pat" "$T/daemon.log" | cut -c1-200)"
}

# bad_images: a good dump G for lp-restore, a copy B that the caller spoils
# for the daemon; both share the work dir (the restore side must not trip
# over the bad file first).
bad_images_prepare() {
	dump "$T/G" --procs 2 --size 8
	cp -a "$T/G" "$T/B"
	PIDS=($(dump_pids))
}

bad_images_run() {
	local pat=$1
	if start_daemon "$T/B" "$T/work"; then
		restore "$T/G" "$T/work" --scenario none --wait-pid "$DPID"
	fi
	finish_daemon
	bad_expect "$pat"
}

# ---------------------------------------------------------------------------
# scenarios

sc_gib() {
	dump "$T/d" --size 1024
	info "dump: $(cut -c1-160 "$T/dump.out")"
	good "$T/d" 1
	info "restore ${RTIME} s wall; $SUMMARY"
}

sc_gib-random() {
	dump "$T/d" --size 1024
	good "$T/d" 1 --scenario random
	info "restore (random) ${RTIME} s wall; $SUMMARY"
}

sc_procs8() {
	dump "$T/d" --procs 8 --size 64
	good "$T/d" 8
}

sc_threads16() {
	dump "$T/d" --size 256
	good "$T/d" 1 --scenario threads --threads 16
	info "restore ${RTIME} s wall; faults=$(sget faults) p99=$(sget fault_p99_us) us"
}

sc_fork() {
	dump "$T/d" --procs 2 --size 512
	start_daemon "$T/d" "$T/work" || { finish_daemon; fail "daemon exited before listening"; }
	restore "$T/d" "$T/work" --scenario fork
	finish_daemon
	[ $DRC -lt 128 ] || fail "daemon died by signal $((DRC - 128))"
	[ $RRC -eq 0 ] || fail "lp-restore exit $RRC: $(restore_reason)"
	[ $DRC -eq 0 ] || fail "daemon exit $DRC"
	[ -n "$SUMMARY" ] || fail "no summary line"
	# each restored process forked once while its pages were mostly lazy
	local p f
	p=$(sget processes)
	f=$(sget forks)
	[ -n "$p" ] && [ "$p" -ge 2 ] || fail "summary says processes=$p, expected >= 2"
	[ -z "$f" ] || [ "$f" -ge 2 ] || fail "summary says forks=$f: the FORK events were not seen"
	info "$SUMMARY"
}

sc_mremap() {
	dump "$T/d" --procs 2 --size 256
	good "$T/d" 2 --scenario mremap
}

sc_munmap() {
	dump "$T/d" --procs 2 --size 256
	good "$T/d" 2 --scenario munmap
}

sc_dontneed() {
	dump "$T/d" --procs 2 --size 256
	good "$T/d" 2 --scenario dontneed
}

sc_dontneed-race() {
	dump "$T/d" --procs 2 --size 512 --vmas 4
	good "$T/d" 2 --scenario dontneed-race --race-ops 1500
	info "$(grep -m2 'race:' "$T/restore.err" | sed 's/.*race: //' | tr '\n' ';') $SUMMARY"
}

sc_exit() {
	dump "$T/d" --procs 4 --size 256
	good "$T/d" 4 --scenario exit
}

sc_idle() {
	# nothing touched until the daemon has exited: prefetch alone must fill all
	dump "$T/d" --procs 2 --size 128
	start_daemon "$T/d" "$T/work" || { finish_daemon; fail "daemon exited before listening"; }
	restore "$T/d" "$T/work" --scenario idle --wait-pid "$DPID"
	finish_daemon
	[ $DRC -eq 0 ] || fail "daemon exit $DRC"
	[ $RRC -eq 0 ] || fail "pages missing or wrong after the daemon exited: $(restore_reason)"
	[ "$(sget processes)" = 2 ] || fail "summary: $SUMMARY"
}

sc_zombie() {
	dump "$T/d" --procs 3 --zombie 1 --size 64
	start_daemon "$T/d" "$T/work" || { finish_daemon; fail "daemon exited before listening"; }
	restore "$T/d" "$T/work"
	finish_daemon
	[ $RRC -eq 0 ] || fail "lp-restore exit $RRC: $(restore_reason)"
	[ $DRC -eq 0 ] || fail "daemon exit $DRC"
	local p
	p=$(sget processes)
	# whether a zombie counts as a process is the daemon's choice: 2 live, 3 records
	[ "$p" = 2 ] || [ "$p" = 3 ] || fail "summary says processes=$p, expected 2 (or 3): $SUMMARY"
}

sc_parent-chain() {
	dump "$T/d" --chain 3 --procs 2 --size 128 --modify 30
	[ "$(dump_stat parent)" -gt 0 ] || fail "lp-dump wrote no PE_PARENT entries"
	[ -L "$T/d/2/parent" ] && [ "$(readlink "$T/d/2/parent")" = "../1" ] || fail "no parent link"
	good "$T/d/2" 2
}

sc_holes() {
	dump "$T/d" --procs 1 --size 64 --holes 25 --zeros 10
	good "$T/d" 1
	[ "$(sget zero_pages)" -gt 0 ] || fail "zero_pages=0, but a quarter of the pages are holes"
}

sc_order-reverse() {
	dump "$T/d" --procs 6 --zombie 2 --size 32
	good "$T/d" 5 --order reverse
}

sc_order-random() {
	dump "$T/d" --procs 6 --zombie 4 --size 32
	good "$T/d" 5 --order random --seed 7
}

sc_order-concurrent() {
	dump "$T/d" --procs 6 --size 32
	good "$T/d" 6 --order concurrent
}

sc_wire3() {
	# the 3.x pagemap form (count in field 2, no field 5), with a parent level
	dump "$T/d" --wire 3 --chain 2 --procs 2 --size 64
	good "$T/d/1" 2
}

sc_nonlazy-vma() {
	dump "$T/d" --nonlazy-vma --procs 2 --size 64
	[ "$(dump_stat eager)" -gt 0 ] || fail "lp-dump wrote no non-lazy pages"
	good "$T/d" 2
}

sc_threads-in-pstree() {
	dump "$T/d" --threads-in-pstree 4 --procs 2 --size 32
	good "$T/d" 2
}

sc_bad-missing-image() {
	bad_images_prepare
	rm "$T/B/pagemap-${PIDS[1]}.img"
	bad_images_run "pagemap-${PIDS[1]}\.img"
}

sc_bad-missing-mm() {
	bad_images_prepare
	rm "$T/B/mm-${PIDS[0]}.img"
	bad_images_run "mm-${PIDS[0]}\.img"
}

sc_bad-magic() {
	bad_images_prepare
	printf '\xde\xad\xbe\xef' | dd of="$T/B/pstree.img" bs=1 seek=4 conv=notrunc status=none
	bad_images_run "pstree\.img"
}

sc_bad-magic-pagemap() {
	bad_images_prepare
	printf '\xde\xad\xbe\xef' | dd of="$T/B/pagemap-${PIDS[0]}.img" bs=1 seek=4 conv=notrunc status=none
	bad_images_run "pagemap-${PIDS[0]}\.img"
}

sc_bad-truncated() {
	bad_images_prepare
	local f="$T/B/pagemap-${PIDS[1]}.img"
	truncate -s $(($(stat -c %s "$f") - 3)) "$f"
	bad_images_run "pagemap-${PIDS[1]}\.img.*offset|offset.*pagemap-${PIDS[1]}\.img"
}

sc_bad-pages-short() {
	bad_images_prepare
	local f="$T/B/pages-1.img"
	truncate -s $(($(stat -c %s "$f") / 2)) "$f"
	bad_images_run "pages-1\.img|pagemap-${PIDS[0]}\.img"
}

# crafted peers (lp-restore --bad): the daemon must name the peer
bad_peer() {
	dump "$T/d" --procs 2 --size 8
	if start_daemon "$T/d" "$T/work"; then
		restore "$T/d" "$T/work" --bad "$1" --wait-pid "$DPID"
	fi
	finish_daemon
	bad_expect "peer"
}

sc_bad-bogus-pid() { bad_peer bogus-pid; }
sc_bad-garbage() { bad_peer garbage; }
sc_bad-close-early() { bad_peer close-early; }
sc_bad-nofd() { bad_peer nofd; }
sc_bad-marker() { bad_peer bad-marker; }

# ---------------------------------------------------------------------------

run_one() {
	local name=$1
	T=$2
	mkdir -p "$T/work"
	cd "$T" || exit 1
	"sc_$name"
	exit 0
}

if [ "${1:-}" = "--one" ]; then
	run_one "$2" "$3"
fi

if [ "${1:-}" = "--list" ]; then
	printf '%s\n' "${SCENARIOS[@]}"
	exit 0
fi

want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${SCENARIOS[@]}")
for n in "${want[@]}"; do
	declare -F "sc_$n" >/dev/null || { echo "unknown scenario: $n (see --list)" >&2; exit 2; }
done

passed=0
failed=0
t_start=$(date +%s.%N)
for n in "${want[@]}"; do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lp-it.$n.XXXXXX")
	t0=$(date +%s.%N)
	missing=
	for b in "$DAEMON" "$DUMP" "$RESTORE"; do
		[ -x "$b" ] || missing="$missing $b"
	done
	if [ -n "$missing" ]; then
		rc=1
		echo "not built:$missing" >"$dir/reason"
	else
		timeout -k 5 "$SCENARIO_TIMEOUT" bash "${BASH_SOURCE[0]}" --one "$n" "$dir" \
			>"$dir/scenario.out" 2>&1
		rc=$?
	fi
	t1=$(date +%s.%N)
	secs=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		echo "PASS $n (${secs} s)"
		[ -s "$dir/info" ] && sed 's/^/    /' "$dir/info"
	else
		failed=$((failed + 1))
		if [ -s "$dir/reason" ]; then
			reason=$(cat "$dir/reason")
		elif [ $rc -eq 124 ]; then
			reason="timed out after ${SCENARIO_TIMEOUT} s"
		else
			reason="scenario script exit $rc: $(tail -n 2 "$dir/scenario.out" | tr '\n' ' ')"
		fi
		echo "FAIL $n: $reason"
		if [ -s "$dir/daemon.log" ]; then
			echo "    --- daemon log (tail) ---"
			tail -n 8 "$dir/daemon.log" | sed 's/^/    /'
		fi
		if [ -s "$dir/restore.err" ]; then
			echo "    --- lp-restore (tail) ---"
			tail -n 6 "$dir/restore.err" | sed 's/^/    /'
		fi
	fi
	# workloads and restored children are dead by now; remove the images
	rm -rf "$dir"
done
total=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t_start }")
echo "total ${total} s" >&2
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
