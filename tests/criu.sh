#!/bin/bash
# SPDX-License-Identifier: MIT
# Interoperability with stock CRIU: real `criu dump` and `criu restore
# --lazy-pages` (CRIU 4.2) on both sides of every hand-off lazy-pagesd,
# lazy-pages-server and lazy-pagesctl take part in; the restored processes
# (tests/lp-work, or memcached checked by tests/lp-kvcheck) prove they are
# the restored copy and check every byte they read.
#
#   [CRIU=/path/to/criu] bash tests/criu.sh [--list] [NAME...]
#
# CRIU: $CRIU, else ../shared/criu/criu beside the checkout, else a criu in
# PATH that passes `criu check`; with none it prints "skipped: no CRIU" and
# counts nothing. Run as root from anywhere. Each scenario runs in its own
# directory under ${TMPDIR:-/tmp} (removed afterwards), bounded by
# timeout(1); fs.pipe-max-size is raised for the run (tests/criu-lib.sh).
# Prints "PASS name: what was checked" or "FAIL name: reason" per scenario
# and ends with "N passed, N failed". Binaries come from ${LP_BUILD:-build}/.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/tests/criu-lib.sh"
BUILD=$CRL_BUILD
DAEMON=${LAZY_PAGESD:-$BUILD/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$BUILD/lazy-pages-server}
CTL=${LAZY_PAGESCTL:-$BUILD/lazy-pagesctl}
SUPERVISE=${LP_SUPERVISE:-$BUILD/tests/lp-supervise}
DELAY=${LP_DELAY:-$BUILD/tests/lp-delay}
KVCHECK=${LP_KVCHECK:-$BUILD/tests/lp-kvcheck}
CERTTOOL=${CERTTOOL:-certtool}
SCENARIO_TIMEOUT=${LP_SCENARIO_TIMEOUT:-150}
STEP=60		# one wait inside a scenario, seconds

SCENARIOS=(
	local-one local-tree local-threads local-random local-idle local-layout local-layout-unfilled
	criu-page-server lps-to-lazy-pagesd lps-to-criu-lazy-pages service-two-sessions
	tls-criu-to-lazy-pagesd tls-lps-to-criu-lazy-pages restart-sigkill source-killed
	app-memcached ws-record-replay self-check
)

# ---------------------------------------------------------------------------
# helpers, used inside one scenario (run as `criu.sh --one NAME DIR PKI`)

# OUT is the scenario's own directory; T may point below it for a while
fail() {
	echo "$*" >"$OUT/reason"
	exit 1
}

info() {
	echo "$*" >>"$OUT/info"
}

KILL=()
cleanup() {
	local p
	stamp cleanup
	for p in "${KILL[@]}"; do kill -KILL "$p" 2>/dev/null; done
	criu_kill_dir "$OUT"
	wait 2>/dev/null
}

# stamp WHAT: a timestamped line in $OUT/steps (where a slow scenario spends its time)
stamp() {
	echo "$(date +%s.%N | cut -c1-14) $*" >>"$OUT/steps"
}

# the first lines of a log, on one line, for a failure message
tailof() {
	tail -n "${2:-3}" "$1" 2>/dev/null | tr '\n' ' '
}

no_bad() {
	local f
	for f in "$T"/bad.* "$T"/*/bad.*; do
		[ -e "$f" ] && fail "a restored process read a wrong page: ${f##*/}: $(head -n 3 "$f" | tr '\n' ' ')"
	done
	return 0
}

# work [lp-work options]: lp-work in $T, ready to be dumped
work() {
	stamp work
	criu_work_start "$T" "$@" || fail "$CRL_WHY"
}

# dump [criu dump options]: an ordinary dump into $T/img; the pids are free after
dump() {
	stamp dump
	criu_dump "$T" "$@" || fail "$CRL_WHY"
	criu_wait_gone "$T" || fail "$CRL_WHY"
}

# lpd NAME ARGS...: lazy-pagesd ARGS in the background (pid in LPD), log
# $T/NAME.log, summary in $T/NAME.out; returns once it listens
lpd() {
	local name=$1
	shift
	: >"$T/$name.status"
	"$DAEMON" "$@" -v -o "$T/$name.log" --status-fd 9 9>"$T/$name.status" </dev/null >"$T/$name.out" 2>&1 &
	LPD=$!
	crl_until $STEP crl_nonempty_or_gone "$T/$name.status" "$LPD"
	[ -s "$T/$name.status" ] || fail "lazy-pagesd $* did not listen: $(tailof "$T/$name.out") $(tailof "$T/$name.log")"
}

# lpd_wait NAME [failed]: until lazy-pagesd (LPD) exits; its status must be
# 0, or with "failed" 1 (a failed session; not a crash, a signal or a
# sanitizer's report)
lpd_wait() {
	local name=$1 want=${2:-0} rc
	stamp lpd_wait
	crl_until $STEP crl_gone "$LPD" || fail "lazy-pagesd still running after ${STEP}s: $(tailof "$T/$name.log")"
	wait "$LPD"
	rc=$?
	[ "$want" = failed ] && [ $rc -eq 1 ] && return 0
	[ "$want" != failed ] && [ $rc -eq 0 ] && return 0
	fail "lazy-pagesd exit $rc (wanted: ${want/failed/1}): $(tailof "$T/$name.out") $(grep -m 3 -E 'error|fail' "$T/$name.log" | tr '\n' ' ')"
}

# sget NAME KEY: KEY= from the daemon's summary line
sget() {
	sed -n "s/^summary: .*\<$2=\([0-9.]*\).*/\1/p" "$T/$1.out" | tail -n 1
}

# restore [criu restore options]: criu restore --lazy-pages -d; the tree is told to go once it resumed
restore() {
	stamp restore
	criu_restore "$T" "$@" || fail "$CRL_WHY"
	criu_wait_action "$T" post-resume || fail "$CRL_WHY"
	criu_go "$T"
}

# restore_ns [criu restore options]: the same in a new pid namespace (the source tree is still frozen)
restore_ns() {
	stamp restore_ns
	criu_restore_ns "$T" "$@"
	criu_wait_action "$T" post-resume || fail "$CRL_WHY $(tailof "$T/restore.out")"
	criu_go "$T"
}

phase1() {
	stamp phase1
	criu_wait_results "$T" 1 $STEP || { no_bad; fail "phase 1: $CRL_WHY"; }
	no_bad
}

phase2() {
	stamp phase2
	criu_final "$T"
	criu_wait_results "$T" 2 $STEP || { no_bad; fail "phase 2: $CRL_WHY"; }
	no_bad
}

# what every process checked, for the PASS line
checked() {
	local n
	n=$(echo $CRL_TAGS | wc -w)
	echo "$n processes, $(criu_sum "$T" 1 data) + $(criu_sum "$T" 2 data) data pages checked"
}

# the images as a page server's client sees them: $T/sparse has every image
# but pages-*.img are sparse files of the same size (a page that did not
# come over the wire reads as zeros, and the processes would say so)
sparse_copy() {
	local f
	mkdir -p "$T/sparse"
	for f in "$T/img"/*.img; do
		case "${f##*/}" in
		pages-*) truncate -s "$(stat -c %s "$f")" "$T/sparse/${f##*/}" ;;
		*) cp "$f" "$T/sparse/" ;;
		esac
	done
}

# lps [ARGS...]: lazy-pages-server serving $T/img on 127.0.0.1 (port in PS_PORT)
lps() {
	"$SERVER" -D "$T/img" --address 127.0.0.1 --port 0 --port-file "$T/ps.port" -o "$T/ps.log" -v "$@" \
		</dev/null >"$T/ps.out" 2>&1 &
	PS_PID=$!
	KILL+=("$PS_PID")
	crl_until $STEP test -s "$T/ps.port" || fail "lazy-pages-server did not start: $(tailof "$T/ps.out")"
	PS_PORT=$(cat "$T/ps.port")
}

# dump_lazy [criu dump options]: criu dump --lazy-pages serving on 127.0.0.1 (port in PS_PORT)
dump_lazy() {
	criu_dump_lazy "$T" 127.0.0.1 0 "$@" || fail "$CRL_WHY"
	PS_PORT=$CRL_PORT
}

# criu_lazy_pages ARGS...: `criu lazy-pages` (CRIU's own daemon) in the background, once listening
criu_lazy_pages() {
	: >"$T/clp.status"
	"$CRIU" lazy-pages -o lazy-pages.log -v4 --status-fd 9 "$@" 9>"$T/clp.status" </dev/null \
		>"$T/clp.out" 2>&1 &
	CLP=$!
	crl_until $STEP crl_nonempty_or_gone "$T/clp.status" "$CLP"
	[ -s "$T/clp.status" ] || fail "criu lazy-pages did not listen: $(tailof "$T/clp.out")"
}

clp_wait() {
	local rc
	stamp clp_wait
	crl_until $STEP crl_gone "$CLP" || fail "criu lazy-pages still running after ${STEP}s"
	wait "$CLP"
	rc=$?
	[ $rc -eq 0 ] || fail "criu lazy-pages exit $rc: $(grep -h -m 3 Error "$T"/*/lazy-pages.log | tr '\n' ' ')"
}

# the dump side of a lazy dump ends once its pages are all sent
dump_lazy_wait() {
	local rc
	stamp dump_lazy_wait
	crl_until $STEP crl_gone "$CRL_DUMP_JOB" || fail "criu dump --lazy-pages still running after ${STEP}s"
	wait "$CRL_DUMP_JOB"
	rc=$?
	[ $rc -eq 0 ] || fail "criu dump --lazy-pages exit $rc: $(grep -m 3 Error "$T/img/dump.log" | grep -v RLIMIT | tr '\n' ' ')"
}

# the namespaced restore returns when the restored root exits
restore_ns_wait() {
	local rc
	stamp restore_ns_wait
	crl_until $STEP crl_gone "$CRL_RESTORE_JOB" || fail "criu restore still waiting after ${STEP}s"
	wait "$CRL_RESTORE_JOB"
	rc=$?
	[ $rc -eq 0 ] || fail "criu restore (pid namespace) exit $rc: $(tailof "$T/restore.out")"
}

ctl() {
	timeout -k 5 $STEP "$CTL" -s "$T/ctl.sock" "$@"
}

# pki_opts NAME: CRIU's --tls options for certificate NAME of the run's PKI
pki_opts() {
	echo "--tls --tls-cacert $PKI/ca.pem --tls-cert $PKI/$1.pem --tls-key $PKI/$1.key"
}

# ---------------------------------------------------------------------------
# scenarios

# the plain path: lazy-pagesd -D, stock criu restore --lazy-pages, then
# every page checked while the daemon fills, and again after
local_round() {
	work "$@"
	dump
	lpd lpd -D "$T/img"
	restore
	phase1
	lpd_wait lpd
	phase2
	info "$(checked); daemon: processes=$(sget lpd processes) pages_copied=$(sget lpd pages_copied) faults=$(sget lpd faults) seconds=$(sget lpd seconds)"
}

sc_local-one() {
	local_round -m 128 -a seq
	[ "$(sget lpd processes)" = 1 ] || fail "the daemon served $(sget lpd processes) processes, not 1"
}

sc_local-tree() {
	local_round -m 64 -c 2 -a random
	[ "$(sget lpd processes)" = 3 ] || fail "the daemon served $(sget lpd processes) processes, not 3"
}

sc_local-threads() {
	local_round -m 128 -t 8 -a random
	grep -q 'threads=9' "$T/result.0.1" || fail "the check did not run on 9 threads: $(head -n 4 "$T/result.0.1")"
}

sc_local-random() {
	local_round -m 256 -a random -w 100
	info "$(grep -c '^window' "$T/result.0.1") windows of 100 ms timed, first: $(grep -m1 '^window' "$T/result.0.1")"
}

# nothing is read until the daemon is done: the fill is all prefetch
sc_local-idle() {
	local_round -m 128 -c 2 -a idle
	[ "$(criu_sum "$T" 1 data)" = 0 ] || fail "idle processes read pages in phase 1"
}

# after the resume, each process forks, MADV_DONTNEEDs, munmaps and mremaps
# memory while prefetch fills it, and checks the kernel's semantics. How
# much of it prefetch had filled first is up to the race (the info line
# says); local-layout-unfilled makes every op meet unfilled memory.
sc_local-layout() {
	local_round -m 192 -c 2 -t 2 -a seq -l fork,dontneed,munmap,mremap
	info "forks seen by the daemon: $(sget lpd forks) of 3; pages not yet filled at the ops: $(cat "$T"/result.[0-9].1 | sed -n 's/^op \([a-z]*\): .*, \([0-9]*\) of them not yet filled/\1 \2/p' | tr '\n' ' ')"
}

# the same with faults only (--no-prefetch): every op meets memory not filled yet
sc_local-layout-unfilled() {
	local n f
	work -m 64 -c 1 -a random -l dontneed,munmap,mremap,fork
	dump
	lpd lpd -D "$T/img" --no-prefetch
	restore
	phase1
	phase2	# the daemon ends with the processes
	lpd_wait lpd
	n=$((64 * 256 / 16))
	for f in "$T"/result.0.1 "$T"/result.1.1; do
		for op in dontneed munmap mremap; do
			grep -q "^op $op: .*, $n of them not yet filled" "$f" ||
				fail "${f##*/}: '$op' did not meet $n unfilled pages: $(grep "^op $op" "$f")"
		done
	done
	info "$(checked); every op on $n unfilled pages; faults=$(sget lpd faults)"
}

# from_criu_ps "DUMP OPTIONS" "LAZY-PAGESD OPTIONS": the tree (lp-work,
# started) dumped by `criu dump --lazy-pages`, whose page server feeds
# lazy-pagesd --page-server; restored in a new pid namespace
from_criu_ps() {
	dump_lazy $1
	lpd lpd -D "$T/img" --page-server --address 127.0.0.1 --port "$PS_PORT" $2
	restore_ns
	phase1
	lpd_wait lpd
	dump_lazy_wait
	phase2
	restore_ns_wait
}

# CRIU's page server as the source: criu dump --lazy-pages --address --port
sc_criu-page-server() {
	work -m 128 -c 2 -a random
	from_criu_ps "" ""
	info "$(checked); remote_bytes=$(sget lpd remote_bytes) remote_requests=$(sget lpd remote_requests)"
}

# lazy-pages-server as the source of lazy-pagesd
sc_lps-to-lazy-pagesd() {
	work -m 128 -c 2 -a random
	dump
	sparse_copy
	lps
	lpd lpd -D "$T/sparse" -W "$T/img" --page-server --address 127.0.0.1 --port "$PS_PORT"
	restore
	phase1
	lpd_wait lpd
	phase2
	info "$(checked); remote_bytes=$(sget lpd remote_bytes)"
}

# to_criu_lazy_pages "SERVER OPTIONS" "CRIU OPTIONS": the tree (lp-work,
# started) dumped, served by lazy-pages-server to CRIU's own client, criu
# lazy-pages --page-server, which reads sparse pages files
to_criu_lazy_pages() {
	dump
	sparse_copy
	lps $1
	criu_lazy_pages -D "$T/sparse" -W "$T/img" --page-server --address 127.0.0.1 --port "$PS_PORT" $2
	restore
	phase1
	clp_wait
	phase2
}

# lazy-pages-server as the source of CRIU's own client (small: CRIU's client
# scans its lists per fault)
sc_lps-to-criu-lazy-pages() {
	work -m 32 -c 1 -a seq
	to_criu_lazy_pages "" ""
	info "$(checked)"
}

# lazy-pagesd --service: a local and a remote session, two stock restores at once
sc_service-two-sessions() {
	local a=$T/a b=$T/b s rc1 rc2 j
	mkdir -p "$a" "$b"
	T=$a work -m 64 -c 1 -a random
	T=$a dump
	T=$b work -m 64 -c 1 -a random
	T=$b dump
	(T=$b; sparse_copy)
	(T=$b; lps) && PS_PORT=$(cat "$b/ps.port")
	"$DAEMON" --service --control "$T/ctl.sock" --state-dir "$T/state" -v </dev/null >"$T/service.out" 2>"$T/service.log" &
	LPD=$!
	KILL+=("$LPD")
	crl_until $STEP ctl status || fail "lazy-pagesd --service does not answer: $(tailof "$T/service.log")"
	ctl session add -D "$a/img" >"$T/add.a" 2>&1 || fail "session add (local): $(cat "$T/add.a")"
	ctl session add -D "$b/sparse" -W "$b/img" --page-server --address 127.0.0.1 --port "$PS_PORT" \
		>"$T/add.b" 2>&1 || fail "session add (remote): $(cat "$T/add.b")"
	criu_restore "$a" & rc1=$!
	criu_restore "$b" & rc2=$!
	wait $rc1 || fail "criu restore (local session): $(tailof "$a/img/restore.log")"
	wait $rc2 || fail "criu restore (remote session): $(tailof "$b/img/restore.log")"
	for s in "$a" "$b"; do
		criu_wait_action "$s" post-resume || fail "$CRL_WHY"
		criu_go "$s"
	done
	for s in "$a" "$b"; do
		T=$s phase1
	done
	ctl watch --interval 20 >"$T/watch.out" 2>&1 || fail "lazy-pagesctl watch: $(tailof "$T/watch.out")"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	j=$(jq -r '[.sessions[] | select(.state == "done")] | length' "$T/list.json")
	[ "$j" = 2 ] || fail "sessions done: $j of 2: $(head -c 600 "$T/list.json")"
	jq -e '[.sessions[] | select(.page_server != "")] | length == 1' "$T/list.json" >/dev/null ||
		fail "not one remote session: $(head -c 600 "$T/list.json")"
	for s in "$a" "$b"; do
		T=$s phase2
	done
	kill -TERM "$LPD"
	wait "$LPD" || fail "lazy-pagesd --service exit $? on SIGTERM: $(tailof "$T/service.log")"
	info "2 sessions done: $(jq -r '[.sessions[] | "\(.page_server // "" | if . == "" then "local" else "remote" end) \(.pages_copied) pages"] | join(", ")' "$T/list.json")"
}

# TLS: CRIU's lazy dump page server with --tls to lazy-pagesd --tls
sc_tls-criu-to-lazy-pagesd() {
	work -m 64 -c 1 -a random
	from_criu_ps "$(pki_opts server)" "$(pki_opts client)"
	info "$(checked) over TLS; remote_bytes=$(sget lpd remote_bytes)"
}

# TLS: lazy-pages-server --tls to CRIU's client criu lazy-pages --tls
sc_tls-lps-to-criu-lazy-pages() {
	work -m 32 -a seq
	to_criu_lazy_pages "$(pki_opts server)" "$(pki_opts client)"
	info "$(checked) over TLS"
}

stored_at_least() {
	[ "$(grep -c '^stored lp-' "$T/sup.out")" -ge "$1" ]
}

# lazy-pagesd --service under lp-supervise (socket activation, notify, fd
# store, as systemd), SIGKILLed while CRIU-restored processes are filled
sc_restart-sigkill() {
	local n sup rc
	work -m 384 -c 1 -a random
	dump
	"$SUPERVISE" --notify "$T/notify.sock" --listen "$T/ctl.sock" --pidfile "$T/dpid" --restarts 1 --fdstore-max 64 -- \
		"$DAEMON" --service --control "$T/ctl.sock" --state-dir "$T/state" -v >"$T/sup.out" 2>"$T/service.log" &
	sup=$!
	KILL+=("$sup")
	crl_until $STEP grep -q '^ready' "$T/sup.out" || fail "no READY=1 under lp-supervise: $(tailof "$T/service.log")"
	ctl session add -D "$T/img" >"$T/add.out" 2>&1 || fail "session add: $(cat "$T/add.out")"
	restore
	crl_until $STEP stored_at_least 2 || fail "the uffds never reached the fd store: $(tailof "$T/sup.out" 5)"
	kill -KILL "$(cat "$T/dpid")"
	phase1
	grep -q 'killed by signal 9; restart' "$T/sup.out" || fail "the daemon was not restarted: $(tailof "$T/sup.out" 6)"
	grep -q 'resumed after a restart' "$T/service.log" ||
		fail "the session was not resumed: $(grep -m3 -E 'error|warn' "$T/service.log" | tr '\n' ' ')"
	ctl watch --interval 20 >"$T/watch.out" 2>&1 || fail "lazy-pagesctl watch: $(tailof "$T/watch.out")"
	ctl session list --json >"$T/list.json" || fail "session list after the restart"
	jq -e '.sessions[0].state == "done"' "$T/list.json" >/dev/null || fail "not done: $(head -c 600 "$T/list.json")"
	phase2
	kill -TERM "$(cat "$T/dpid")"
	wait "$sup"
	rc=$?
	[ $rc -eq 0 ] || fail "lp-supervise (the daemon) exit $rc: $(tailof "$T/service.log")"
	n=$(grep -c '^stored lp-' "$T/sup.out")
	[ "$n" -le "$(grep -c '^removed lp-' "$T/sup.out")" ] || fail "uffds left in the fd store: $(tailof "$T/sup.out" 8)"
	info "$(checked); $n uffds stored, the daemon restarted and resumed"
}

# restored_scan N: the host pids of the lp-work processes in the pid
# namespace of the restore (in RESTORED), true once there are N. Reads no
# process memory: /proc/PID/cmdline of a restored process can wait for a
# lazy page.
restored_scan() {
	local q child comm
	RESTORED=()
	child=
	read -r child _ </proc/"$CRL_RESTORE_JOB"/task/"$CRL_RESTORE_JOB"/children 2>/dev/null	# no newline: read fails
	[ -n "$child" ] || return 1
	for q in /proc/[0-9]*; do
		# builtins only (a fork per process takes seconds on a loaded machine)
		[ "$q/ns/pid" -ef "/proc/$child/ns/pid" ] || continue
		read -r comm <"$q/comm" 2>/dev/null || continue
		[ "$comm" = lp-work ] && RESTORED+=("${q#/proc/}")
	done
	[ ${#RESTORED[@]} -ge "$1" ]
}

# CRIU's source page server (and its frozen tree: the source host) killed
# mid-transfer: the session fails, every restored process (forked after the
# restore too) is killed, none has read a wrong or zero page, and the daemon
# says why
sc_source-killed() {
	local p copied total left n hp
	work -m 256 -c 1 -a random -l fork
	dump_lazy
	"$DELAY" --listen 127.0.0.1:0 --connect "127.0.0.1:$PS_PORT" --delay-ms 10 --port-file "$T/delay.port" \
		</dev/null >"$T/delay.out" 2>&1 &
	KILL+=($!)
	crl_until $STEP test -s "$T/delay.port" || fail "lp-delay did not start"
	lpd lpd -D "$T/img" --page-server --address 127.0.0.1 --port "$(cat "$T/delay.port")" --ps-timeout 3 \
		--progress-file "$T/progress"
	restore_ns
	total=$((2 * 256 * 256))
	crl_until $STEP restored_scan 4 || fail "not 4 restored processes (2 and their forks): ${RESTORED[*]}"
	stamp "restored: ${RESTORED[*]}"
	crl_until $STEP awk -v min=$((total / 20)) '{ c = $2 } END { exit !(c >= min) }' "$T/progress" ||
		fail "no 5% progress: $(tail -n 1 "$T/progress")"
	# the source host dies: its frozen tree first (it must never run again), then CRIU
	kill -KILL $CRL_PIDS
	kill -KILL "$CRL_DUMP_JOB"
	copied=$(tail -n 1 "$T/progress" | cut -d' ' -f2)
	stamp "source killed after $copied pages"
	lpd_wait lpd failed
	no_bad
	grep -q 'not back within --ps-timeout' "$T/lpd.log" || fail "the daemon's log does not say why: $(tailof "$T/lpd.log")"
	! grep -q 'cannot find it to kill it' "$T/lpd.log" || fail "the daemon lost a process: $(grep -m 2 'cannot find' "$T/lpd.log")"
	for hp in "${RESTORED[@]}"; do
		n=$(grep -c "(host pid $hp) killed with" "$T/lpd.log")
		[ "$n" = 1 ] || fail "restored host pid $hp named $n times as killed: $(grep 'killed with' "$T/lpd.log" | cut -c1-120 | tr '\n' ' ')"
	done
	crl_until 10 crl_gone "${RESTORED[@]}" || fail "restored processes still there: ${RESTORED[*]}"
	crl_until 10 crl_gone "$CRL_RESTORE_JOB" || fail "criu restore is still there"
	wait "$CRL_RESTORE_JOB"
	left=0
	for p in $CRL_TAGS; do [ -e "$T/result.$p.1" ] || left=$((left + 1)); done
	[ $left -eq 4 ] || fail "$((4 - left)) processes finished before the source died: nothing was tested for them"
	info "killed after $copied of $total pages: 4 processes (2 forked after the restore) killed mid-read, each named once, none read a wrong page"
}

# a real application: memcached with ~300 MiB of values, restored lazily,
# every reply checked while it is being filled and after
sc_app-memcached() {
	local port mc st0 st1 keys=75000 size=4000 rc
	command -v memcached >/dev/null || fail "no memcached (apt-get install memcached)"
	port=$((20000 + RANDOM % 20000))
	# no fd above 2 for CRIU to trip on, no terminal, output to a file
	setsid bash -c 'for f in /proc/$$/fd/*; do f=${f##*/}; [ "$f" -gt 2 ] && eval "exec $f>&-"; done 2>/dev/null
		exec memcached -u root -l 127.0.0.1 -p "$1" -U 0 -m 512 -t 2 -c 64' mc "$port" \
		</dev/null >"$T/mc.log" 2>&1 &
	mc=$!
	disown
	KILL+=("$mc")
	crl_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || fail "memcached does not listen: $(tailof "$T/mc.log")"
	"$KVCHECK" load -p "$port" -n $keys -s $size >"$T/load.out" 2>&1 || fail "load: $(cat "$T/load.out")"
	"$KVCHECK" check -p "$port" -n $keys -s $size >"$T/check0.out" 2>&1 || fail "check before the dump: $(cat "$T/check0.out")"
	st0=$(awk '{ print $22 }' "/proc/$mc/stat")
	CRL_PID=$mc
	CRL_PIDS=$mc
	CRL_WORK_JOB=$mc
	dump
	lpd lpd -D "$T/img"
	criu_restore "$T" || fail "$CRL_WHY"
	criu_wait_action "$T" post-resume || fail "$CRL_WHY"
	st1=$(awk '{ print $22 }' "/proc/$mc/stat" 2>/dev/null)
	[ -n "$st1" ] && [ "$st1" != "$st0" ] || fail "memcached $mc is not the restored copy (start time $st0 -> ${st1:-gone})"
	"$KVCHECK" check -p "$port" -n $keys -s $size -r -b 16 >"$T/check1.out" 2>&1
	rc=$?
	[ $rc -eq 0 ] || fail "check during the fill: $(cat "$T/check1.out")"
	lpd_wait lpd
	"$KVCHECK" check -p "$port" -n $keys -s $size >"$T/check2.out" 2>&1 || fail "check after the fill: $(cat "$T/check2.out")"
	info "memcached $(awk '/VmRSS/ { print int($2 / 1024) " MiB" }' "/proc/$mc/status"): during the fill $(cut -d' ' -f2- "$T/check1.out"); after: $(cut -d' ' -f2- "$T/check2.out"); daemon seconds=$(sget lpd seconds) faults=$(sget lpd faults)"
}

# warm restores: stock CRIU restores the same images twice; the first
# restore records its working set (--ws-record, faults only), the second
# finds lazy-pages.ws next to the images and replays it before the tree is
# told to go. Every byte is checked both times, and the replayed restore
# faults on far fewer pages.
sc_ws-record-replay() {
	local rec f1 f2
	work -m 64 -c 1 -a random
	dump
	lpd rec -D "$T/img" --no-prefetch --ws-record
	restore
	phase1
	phase2
	lpd_wait rec
	rec=$(sget rec ws_recorded)
	f1=$(sget rec faults)
	[ -n "$rec" ] && [ "$rec" -gt $((2 * 64 * 256 * 9 / 10)) ] ||
		fail "recorded ${rec:-no} pages for two processes reading 64 MiB each: $(grep summary "$T/rec.out")"
	timeout -k 5 $STEP "$CTL" ws show "$T/img/lazy-pages.ws" >"$T/ws.show" || fail "ws show: $(tailof "$T/ws.show")"
	grep -q "2 processes, $rec pages" "$T/ws.show" || fail "ws show: $(head -n 1 "$T/ws.show")"
	# the same pids again, in a pid namespace of its own: the first restored
	# tree may still be reaped, or another process may have taken one of them
	rm -f "$T"/result.* "$T"/go "$T"/final "$T"/actions
	lpd rep -D "$T/img" --no-prefetch
	stamp restore_ns
	CRL_AUTO_GO=0 criu_restore_ns "$T"
	criu_wait_action "$T" post-resume || fail "$CRL_WHY $(tailof "$T/restore.out")"
	# a runtime's start-up: the replay goes on meanwhile
	sleep 0.5
	criu_go "$T"
	phase1
	phase2
	lpd_wait rep
	restore_ns_wait
	f2=$(sget rep faults)
	grep -q 'replaying its working set first' "$T/rep.log" || fail "lazy-pages.ws was not replayed: $(tailof "$T/rep.log")"
	[ "$(sget rep ws_planned)" = "$rec" ] || fail "ws_planned=$(sget rep ws_planned), recorded $rec"
	[ "$f2" -le $((f1 / 4)) ] || fail "faults: $f1 recording, $f2 replayed"
	info "$(checked); recorded $rec pages with $f1 faults; replayed: faults=$f2 ws_read=$(sget rep ws_read) seconds=$(sget rep seconds)"
}

# the checks themselves fail when they should: an original process told to
# go reports it is not restored, and one flipped byte in a pages image is
# named by the restored process that reads it
sc_self-check() {
	local f off b want
	mkdir -p "$T/orig"
	T=$T/orig work -m 4
	criu_go "$T/orig"
	criu_wait_results "$T/orig" 1 10
	grep -q '^FAIL: not restored' "$T/orig/result.0.1" 2>/dev/null ||
		fail "an original process was not caught: $(tailof "$T/orig/result.0.1")"
	work -m 64 -a seq
	dump
	f=$(ls -S "$T"/img/pages-*.img | head -n 1)
	off=$(($(stat -c %s "$f") / 2 + 100))
	b=$(od -An -tu1 -j $off -N 1 "$f" | tr -d ' ')
	printf "\\x$(printf %02x $((b ^ 0xff)))" | dd of="$f" bs=1 seek=$off conv=notrunc status=none
	lpd lpd -D "$T/img"
	restore
	criu_wait_results "$T" 1 $STEP && fail "a flipped byte at offset $off of ${f##*/} went unnoticed"
	[ -s "$T/bad.0" ] || fail "no bad.0 after a flipped byte: $CRL_WHY"
	[ "$(wc -l <"$T/bad.0")" = 1 ] || fail "one flipped byte, $(wc -l <"$T/bad.0") bad pages: $(head -n 3 "$T/bad.0" | tr '\n' ' ')"
	grep -q '^FAIL: 1 bad pages' "$T/result.0.1" || fail "the result does not say so: $(tailof "$T/result.0.1")"
	# the page file holds whole pages: the flipped word is where the process says
	want=$(((off % 4096) / 8 * 8))
	grep -qE "differs from byte $want:|where zeros belong" "$T/bad.0" ||
		fail "byte $off of ${f##*/} (page byte $want) flipped, but: $(cat "$T/bad.0")"
	info "caught: an original told to go; byte $off of ${f##*/}: $(cat "$T/bad.0")"
	rm -f "$T/bad.0"
}

# ---------------------------------------------------------------------------

if [ "${1:-}" = "--one" ]; then
	T=$3
	OUT=$3
	PKI=$4
	cd "$T" || exit 1
	trap cleanup EXIT
	criu_find || fail "$CRL_WHY"
	"sc_$2"
	stamp done
	exit 0
fi

if [ "${1:-}" = "--list" ]; then
	printf '%s\n' "${SCENARIOS[@]}"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "FAIL criu: must run as root"
	echo "0 passed, 1 failed"
	exit 1
fi
criu_find
case $? in
0) ;;
1)
	echo "skipped: no CRIU ($CRL_WHY)"
	echo "0 passed, 0 failed"
	exit 0
	;;
*)
	echo "FAIL criu: $CRL_WHY"
	echo "0 passed, 1 failed"
	exit 1
	;;
esac
export CRIU
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=("${SCENARIOS[@]}")

TOP=$(mktemp -d "${TMPDIR:-/tmp}/lp-criu.XXXXXX") || exit 1
criu_pipe_raise || echo "warning: could not raise fs.pipe-max-size: CRIU's lazy dump may fail"
trap 'criu_pipe_restore; rm -rf "$TOP"' EXIT
trap 'exit 130' INT TERM

# certificates for the TLS scenarios: a CA, a server issued to 127.0.0.1, a client
PKI=$TOP/pki
mkdir -p "$PKI"
pki_cert() {
	local name=$1
	shift
	"$CERTTOOL" --generate-privkey --key-type ecdsa --outfile "$PKI/$name.key" 2>/dev/null &&
		printf '%s\n' "$@" "expiration_days = 2" >"$PKI/$name.tmpl" &&
		if [ "$name" = ca ]; then
			"$CERTTOOL" --generate-self-signed --load-privkey "$PKI/ca.key" --template "$PKI/ca.tmpl" \
				--outfile "$PKI/ca.pem" >"$PKI/ca.log" 2>&1
		else
			"$CERTTOOL" --generate-certificate --load-privkey "$PKI/$name.key" --load-ca-certificate "$PKI/ca.pem" \
				--load-ca-privkey "$PKI/ca.key" --template "$PKI/$name.tmpl" --outfile "$PKI/$name.pem" \
				>"$PKI/$name.log" 2>&1
		fi
}
pki_cert ca 'cn = "lazy-pages criu.sh CA"' ca cert_signing_key crl_signing_key &&
	pki_cert server 'cn = "127.0.0.1"' 'ip_address = "127.0.0.1"' tls_www_server tls_www_client signing_key encryption_key &&
	pki_cert client 'cn = "127.0.0.1"' 'ip_address = "127.0.0.1"' tls_www_server tls_www_client signing_key encryption_key ||
	echo "warning: certtool could not make the certificates: $(tail -n 2 "$PKI"/*.log | tr '\n' ' ')"

echo "criu.sh: $("$CRIU" --version | head -n 1) ($CRIU)"
pass=0
failed=0
for n in "${runs[@]}"; do
	if ! declare -F "sc_$n" >/dev/null; then
		echo "FAIL $n: no such scenario"
		failed=$((failed + 1))
		continue
	fi
	dir=$TOP/$n
	mkdir -p "$dir"
	t0=$SECONDS
	timeout -k 5 "$SCENARIO_TIMEOUT" bash "${BASH_SOURCE[0]}" --one "$n" "$dir" "$PKI" >"$dir/stdout" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "PASS $n ($((SECONDS - t0)) s): $(tr '\n' ' ' <"$dir/info" 2>/dev/null)"
		pass=$((pass + 1))
	else
		reason=$(cat "$dir/reason" 2>/dev/null)
		[ -n "$reason" ] || reason="exit $rc$([ $rc -eq 124 ] && echo " (timeout)") $(tail -n 2 "$dir/stdout" | tr '\n' ' ')"
		echo "FAIL $n ($((SECONDS - t0)) s): $reason"
		failed=$((failed + 1))
		if [ -n "${LP_KEEP:-}" ]; then
			cp -a "$dir" "${LP_KEEP}/" 2>/dev/null
		fi
	fi
	criu_kill_dir "$dir"
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
