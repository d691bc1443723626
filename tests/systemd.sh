#!/bin/bash
# SPDX-License-Identifier: MIT
# lazy-pages under a real systemd 252, with stock CRIU: the units installed
# as users install them, inside a throw-away container whose PID 1 is
# systemd (../shared/tools/with-systemd.sh), one container per scenario.
# Restores are `criu restore --lazy-pages` of lp-work trees dumped by
# `criu dump`; every restored process proves it is the restored copy and
# checks every byte it reads, page by page.
#
#   bash tests/systemd.sh [--list] [NAME...]
#
# What is installed is the Debian packages of this tree: built first into
# build/deb-systemd (about a minute), or taken from $LP_DEBS (a directory
# with the .debs of this tree, as tests/package.sh leaves in build/deb).
#
# Run as root from anywhere. Prints "PASS name" or "FAIL name: reason" per
# scenario and ends with "N passed, N failed"; without with-systemd.sh or
# without CRIU it prints why it skipped and "0 passed, 0 failed".
# CRIU: $CRIU, else ../shared/criu/criu. Test directories go under
# ${LP_SYSTEMD_TMP:-/var/tmp} (bound into the container; never /tmp, which
# the container has its own of).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
WITH_SYSTEMD=${WITH_SYSTEMD:-$SHARED/tools/with-systemd.sh}
BUILD=$ROOT/build
SCENARIO_TIMEOUT=${LP_SCENARIO_TIMEOUT:-180}	# one scenario, container boot and teardown included
STEP=60						# one wait inside a scenario
UNIT=lazy-pages.service

SCENARIOS=(
	socket-activation restore kill-early kill-one-done kill-mid-fault watchdog stop-waits stop-killed
	journal page-server handoff-kill store-full store-mismatch
)

# ---------------------------------------------------------------------------
# inside the container (`systemd.sh --one NAME DIR`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

info() {
	echo "$*" >>"$T/info"
}

# Installs lazy-pages inside the container the way users install it: the
# Debian packages built from this tree (tests/pkglib.sh), with dpkg -i; the
# package enables lazy-pages.socket, units in /lib/systemd/system, binaries
# in /usr/sbin and /usr/bin. (The one place that says how.)
install_project() {
	# shellcheck source=tests/pkglib.sh
	. "$ROOT/tests/pkglib.sh"
	pkg_install "$DEBS" >"$T/install.out" 2>&1 || fail "dpkg -i: $(tail -n 2 "$T/install.out" | tr '\n' ' ')"
	[ "$(command -v lazy-pagesd)" = /usr/sbin/lazy-pagesd ] || fail "lazy-pagesd is $(command -v lazy-pagesd), not the package's"
}

# dropin UNIT LINES...: a drop-in for UNIT with these [Service] lines
dropin() {
	local unit=$1
	shift
	mkdir -p "/etc/systemd/system/$unit.d"
	{
		echo "[Service]"
		printf '%s\n' "$@"
	} >"/etc/systemd/system/$unit.d/50-test.conf"
	systemctl daemon-reload
}

# up [DROP-IN LINES...]: the project installed, lazy-pages.service with
# those [Service] lines, and `systemctl enable --now lazy-pages.socket`
up() {
	install_project
	[ $# -eq 0 ] || dropin "$UNIT" "$@"
	systemctl enable --now lazy-pages.socket >"$T/enable.out" 2>&1 ||
		fail "systemctl enable --now lazy-pages.socket: $(cat "$T/enable.out")"
}

ctl() {
	timeout -k 5 $STEP lazy-pagesctl "$@"
}

prop() {
	systemctl show -p "$1" --value "${2:-$UNIT}"
}

journal() {
	journalctl -u "$UNIT" -o cat --no-pager 2>/dev/null
}

prop_is() {
	[ "$(prop "$1" "${3:-$UNIT}")" = "$2" ]
}

journal_has() {
	journal | grep -q -E -- "$1"
}

await_journal() {
	crl_until "${2:-$STEP}" journal_has "$1" || fail "not in the journal within ${2:-$STEP} s: '$1'; last lines: $(journal | tail -n 4 | tr '\n' ' ')"
}

# prepare [lp-work options]: lp-work in $W (the workload's directory,
# default $T), dumped by criu into $W/img
prepare() {
	criu_work_start "$W" "$@" || fail "$CRL_WHY"
	criu_dump "$W" || fail "$CRL_WHY"
	criu_wait_gone "$W" || fail "$CRL_WHY"
}

# add_session [ARGS...]: lazy-pagesctl session add -D $W/img ARGS; sets SID
add_session() {
	ctl session add -D "$W/img" "$@" --json >"$T/add.json" 2>"$T/add.err" ||
		fail "session add: $(cat "$T/add.err")"
	SID=$(jq -r .id "$T/add.json")
}

# restore: criu restore --lazy-pages -d, until the tree runs (post-resume)
restore() {
	criu_restore "$W" || fail "$CRL_WHY"
	criu_wait_action "$W" post-resume || fail "$CRL_WHY"
}

# restored [lp-work options]: prepare, a session for it, restore
restored() {
	prepare "$@"
	add_session
	restore
}

# session_wait: until session $SID is done or failed; its state in SSTATE
session_wait() {
	ctl watch "$SID" --interval 50 >"$T/watch.out" 2>&1 || fail "lazy-pagesctl watch $SID: $(tail -n 1 "$T/watch.out")"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	SSTATE=$(jq -r --argjson id "$SID" '.sessions[] | select(.id == $id) | .state' "$T/list.json")
}

# verify: phase 1 (each process reads all its memory), the session ends,
# phase 2 (every page checked again once the daemon has filled it all)
verify() {
	criu_go "$W"
	criu_wait_results "$W" 1 $STEP || fail "phase 1: $CRL_WHY"
	session_wait
	[ "$SSTATE" = done ] || fail "session $SID ended $SSTATE: $(jq -c '.sessions[0].error' "$T/list.json")"
	criu_final "$W"
	criu_wait_results "$W" 2 $STEP || fail "phase 2: $CRL_WHY"
}

# The restored processes are gone (killed), none wrote a failed result.
all_gone() {
	local p
	for p in $CRL_PIDS; do
		[ -e "/proc/$p" ] && [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$p/status")" != Z ] && return 1
	done
	return 0
}

# lps_start PORT: lazy-pages-server.service serving $W/img on 127.0.0.1:PORT,
# configured by its /etc/default file; returns once it listens
lps_start() {
	cat >/etc/default/lazy-pages-server <<-EOF
		LP_SERVER_IMAGES=$W/img
		LP_SERVER_PORT=$1
		LP_SERVER_OPTS="--address 127.0.0.1"
	EOF
	systemctl start lazy-pages-server.service ||
		fail "lazy-pages-server.service did not start: $(journalctl -u lazy-pages-server -o cat | tail -n 3 | tr '\n' ' ')"
	crl_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null || fail "nothing listens on 127.0.0.1:$1"
}

# "pid P: resumed with N lazy pages" of the restarted daemon, summed
resumed_pages() {
	journal | sed -n 's/.*: resumed with \([0-9]*\) lazy pages.*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}

sc_socket-activation() {
	local st
	up
	prop_is ActiveState inactive || fail "$UNIT is $(prop ActiveState) before any client"
	prop_is ActiveState active lazy-pages.socket || fail "lazy-pages.socket is $(prop ActiveState lazy-pages.socket)"
	ctl status --json >"$T/status.json" 2>"$T/ctl.err" || fail "the first lazy-pagesctl status: $(cat "$T/ctl.err")"
	crl_until 10 prop_is SubState running || fail "$UNIT is $(prop ActiveState)/$(prop SubState) after the first status"
	[ "$(prop MainPID)" = "$(jq -r .pid "$T/status.json")" ] ||
		fail "MainPID $(prop MainPID) is not the pid lazy-pagesctl status gave: $(cat "$T/status.json")"
	crl_until 10 eval '[[ "$(prop StatusText)" == *serving* ]]' || fail "no STATUS= line: StatusText='$(prop StatusText)'"
	[ "$(prop FileDescriptorStoreMax)" = 65536 ] || fail "FileDescriptorStoreMax=$(prop FileDescriptorStoreMax)"
	journal_has 'fd store of 65536 \(FileDescriptorStoreMax= of the unit\)' ||
		fail "the daemon did not learn the store's size from systemd: $(journal | grep -m1 -i 'fd store')"
	journal_has 'socket activated' || fail "the daemon did not take the socket systemd passed"
	st=$(systemctl status --no-pager "$UNIT" 2>&1 | grep -m1 'Status:')
	[ -n "$st" ] || fail "systemctl status shows no Status: line"
	info "$(echo "$st" | sed 's/^ *//' | cut -c1-150)"
}

sc_restore() {
	up
	restored -m 256 -c 2 -a random -l fork,dontneed,munmap,mremap
	verify
	journal_has "session $SID: summary: processes=" || fail "no summary of session $SID in the journal"
	journal | grep -q 'Cannot store more fds' && fail "systemd refused fds: $(journal | grep -m1 'Cannot store more fds')"
	crl_until 10 prop_is NFileDescriptorStore 0 || fail "$(prop NFileDescriptorStore) fds left in the store"
	info "$(journal | grep -m1 "session $SID: summary" | sed 's/.*summary: //' | cut -c1-120)"
	info "pages checked: $(criu_sum "$W" 1 pages) in phase 1"
}

# The daemon SIGKILLed right after the tree resumed, with most of 2 GiB
# missing; systemd restarts it with the uffds from the fd store.
sc_kill-early() {
	local kept total
	up
	restored -m 1024 -c 1 -a random
	kept=$(prop NFileDescriptorStore)
	systemctl kill -s KILL "$UNIT"
	[ "$kept" = 2 ] || fail "the fd store held $kept uffds at the kill, not 2"
	criu_go "$W"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted: NRestarts=$(prop NRestarts)"
	await_journal "session $SID: resumed after a restart"
	total=$(resumed_pages)
	# 2 x 1 GiB is 524288 pages, about 2% of them holes never in the dump
	[ "$total" -gt 262144 ] || fail "only $total pages were missing at the kill: not early enough"
	verify
	info "kill with $total of ~513000 lazy pages missing; $(journal | grep -m1 "session $SID: summary" | sed 's/.*summary: //' | cut -c1-90)"
}

# The same once one of the two processes is complete: the first process
# of the tree keeps 4 MiB (filled at once), its child 1 GiB. CRIU sends
# the first process's record first here, so the journal's first process
# is the complete one: the case session_recover's precedence slip broke.
sc_kill-one-done() {
	local first
	up
	restored -m 1024 -c 1 -R 4 -a random
	crl_until 10 prop_is NFileDescriptorStore 1 || fail "the small process was not complete: $(prop NFileDescriptorStore) uffds stored"
	systemctl kill -s KILL "$UNIT"
	criu_go "$W"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted"
	await_journal "session $SID: resumed after a restart"
	[ "$(journal | grep -c ': resumed with [0-9]* lazy pages')" -eq 1 ] || fail "not exactly the 1 GiB process resumed"
	verify
	first=$(journal | grep -m1 -E ': [0-9]+ lazy pages$' | sed 's/.*info: //')
	info "the journal's first process: $first"
}

# Killed while the restored process waits on a fault the daemon has read:
# the kernel does not queue that fault again, so the restarted daemon must
# wake the thread. No prefetch (/etc/default/lazy-pages), pages from lazy-pages-server
# through lp-delay (10 ms round trip), so the reader is inside a fault
# whenever the kill comes; without the wake it hangs.
sc_kill-mid-fault() {
	local port=27001 dport
	up
	# the package's /etc/default file, as an administrator edits it (the
	# service starts at the first lazy-pagesctl, after this)
	sed -i 's/^LAZY_PAGESD_OPTS=.*/LAZY_PAGESD_OPTS="--no-prefetch"/' /etc/default/lazy-pages
	grep -q '^LAZY_PAGESD_OPTS="--no-prefetch"$' /etc/default/lazy-pages || fail "no LAZY_PAGESD_OPTS line in /etc/default/lazy-pages"
	prepare -m 8 -c 0 -a seq
	lps_start $port
	"$BUILD/tests/lp-delay" --listen 127.0.0.1:0 --connect 127.0.0.1:$port --delay-ms 5 \
		--port-file "$T/delay.port" 2>"$T/delay.log" </dev/null &
	crl_until 10 test -s "$T/delay.port" || fail "lp-delay did not start: $(cat "$T/delay.log")"
	dport=$(cat "$T/delay.port")
	add_session --page-server --address 127.0.0.1 --port "$dport"
	restore
	criu_go "$W"
	sleep 0.5
	journal_has "session $SID: summary" && fail "the session was over before the kill"
	systemctl kill -s KILL "$UNIT"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted: NRestarts=$(prop NRestarts)"
	await_journal "session $SID: resumed after a restart"
	criu_wait_results "$W" 1 $STEP || fail "phase 1 (a fault the killed daemon had read never answered?): $CRL_WHY"
	# Faults only: the restarted daemon cannot learn which pages the killed
	# one placed (none faults again), so the session ends with the process,
	# which exits after phase 2.
	criu_final "$W"
	criu_wait_results "$W" 2 $STEP || fail "phase 2: $CRL_WHY"
	session_wait
	[ "$SSTATE" = done ] || fail "session $SID ended $SSTATE: $(jq -c '.sessions[0].error' "$T/list.json")"
	info "resumed with $(resumed_pages) lazy pages; $(journal | grep -m1 "session $SID: summary" | sed 's/.*summary: //' | cut -c1-90)"
}

# A hung daemon (SIGSTOP): the watchdog (a drop-in: WatchdogSec=2s) kills
# it, systemd restarts it, the restore completes.
sc_watchdog() {
	local pid
	up "WatchdogSec=2s"
	restored -m 1024 -c 1 -a random
	pid=$(prop MainPID)
	kill -STOP "$pid"
	criu_go "$W"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted after its watchdog: $(prop ActiveState)/$(prop SubState)"
	[ "$(prop MainPID)" != "$pid" ] || fail "still the stopped daemon"
	journal_has 'Watchdog timeout' || fail "systemd did not log a watchdog timeout"
	await_journal "session $SID: resumed after a restart"
	verify
	info "$(journal | grep -m1 'Watchdog timeout' | cut -c1-100)"
}

# systemctl stop while processes are filled: the stop waits for them (its
# STATUS= says so), then the daemon exits 0 with nothing left in the store.
sc_stop-waits() {
	up
	restored -m 1024 -c 1 -a random
	systemctl stop --no-block "$UNIT"
	criu_go "$W"
	crl_until 10 prop_is ActiveState deactivating || fail "$UNIT is $(prop ActiveState) after stop"
	crl_until 10 eval '[[ "$(prop StatusText)" == stopping:* ]]' || fail "StatusText while stopping: '$(prop StatusText)'"
	info "while stopping: $(prop StatusText | cut -c1-110)"
	criu_wait_results "$W" 1 $STEP || fail "phase 1 during the stop: $CRL_WHY"
	crl_until $STEP prop_is ActiveState inactive || fail "$UNIT did not stop: $(prop ActiveState)"
	[ "$(prop Result)" = success ] || fail "the stop ended with Result=$(prop Result)"
	journal_has 'waiting for 1 session\(s\) still filling processes' || fail "the daemon did not say it waits"
	journal_has "session $SID: summary: processes=2 " || fail "session $SID did not finish before the daemon exited"
	[ "$(prop NFileDescriptorStore)" = 0 ] || fail "$(prop NFileDescriptorStore) fds left in the store"
	[ -z "$(ls -A /run/lazy-pages/state 2>/dev/null)" ] || fail "state left: $(ls /run/lazy-pages/state)"
	criu_final "$W"
	criu_wait_results "$W" 2 $STEP || fail "phase 2: $CRL_WHY"
}

# Killed while it waits on a stop: systemd 252 empties the fd store once
# the stop ends, so ExecStopPost= (lazy-pagesd --reap) kills the processes
# first, while their uffds are still held: they never read a zero (idle:
# they read nothing until told, and are never told).
sc_stop-killed() {
	up
	restored -m 1024 -c 1 -a idle
	systemctl stop --no-block "$UNIT"
	crl_until 10 prop_is ActiveState deactivating || fail "$UNIT is $(prop ActiveState) after stop"
	systemctl kill -s KILL "$UNIT"
	# failed: its main process died by a signal
	crl_until $STEP eval '[[ "$(prop ActiveState)" == @(inactive|failed) ]]' || fail "$UNIT is $(prop ActiveState) after the kill"
	journal_has 'the service stops for good while it fills processes' || fail "--reap did not act: $(journal | tail -n 3 | tr '\n' ' ')"
	journal_has 'killed: the daemon was killed while stopping' || fail "--reap killed nothing"
	crl_until 10 all_gone || fail "restored processes still running after the stop: $CRL_PIDS"
	[ "$(prop NRestarts)" = 0 ] || fail "restarted after an explicit stop"
	# idle processes write phase 1 (nothing read) at "go"; none may have got to the end, or read a bad page
	ls "$W"/result.*.2 >/dev/null 2>&1 && fail "a process finished: $(cat "$W"/result.*.2)"
	grep -l '^FAIL' "$W"/result.* >/dev/null 2>&1 && fail "a process failed: $(grep -h '^FAIL' "$W"/result.*)"
	info "$(journal | grep -m1 'killed: the daemon was killed' | sed 's/.*error: //' | cut -c1-120)"
}

sc_journal() {
	local j
	up
	restored -m 64 -a seq
	verify
	j=$(journal)
	for line in "session $SID: $T/img, restore socket $T/img/lazy-pages.socket" \
		"restore peer pid [0-9]+ uid 0 connected; expecting 1 task records" \
		"restore finished; prefetch starts" "pid [0-9]+: complete" "session $SID: summary: processes=1 " \
		"Started lazy-pages.service"; do
		echo "$j" | grep -q -E -- "$line" || fail "journalctl -u $UNIT lacks '$line'"
	done
	info "$(echo "$j" | grep -m1 "session $SID: summary" | sed 's/.*info: //' | cut -c1-110)"
}

# lazy-pages-server.service with its /etc/default file serves the image
# directory; lazy-pagesd --page-server (standalone, as criu lazy-pages)
# takes the restore.
sc_page-server() {
	local port=27000 pid
	install_project
	prepare -m 256 -c 1 -a random
	lps_start $port
	mkfifo "$T/ready" || fail "mkfifo"
	lazy-pagesd -D "$W/img" --page-server --address 127.0.0.1 --port $port --status-fd 3 -v \
		3>"$T/ready" >"$T/lpd.out" 2>"$T/lpd.log" </dev/null &
	pid=$!
	head -c1 "$T/ready" >"$T/ready.byte"	# one byte once it listens, EOF if it exits
	[ -s "$T/ready.byte" ] || fail "lazy-pagesd --page-server did not start: $(tail -n 2 "$T/lpd.log" | tr '\n' ' ')"
	restore
	criu_go "$W"
	criu_wait_results "$W" 1 $STEP || fail "phase 1: $CRL_WHY"
	timeout $STEP tail --pid=$pid -f /dev/null
	wait $pid || fail "lazy-pagesd --page-server exit $?: $(tail -n 2 "$T/lpd.log" | tr '\n' ' ')"
	grep -q '^summary: processes=2 .* remote_bytes=[1-9]' "$T/lpd.out" ||
		fail "no page-server summary: $(cat "$T/lpd.out") $(tail -n 2 "$T/lpd.log" | tr '\n' ' ')"
	criu_final "$W"
	criu_wait_results "$W" 2 $STEP || fail "phase 2: $CRL_WHY"
	prop_is ActiveState active lazy-pages-server.service || fail "lazy-pages-server.service is $(prop ActiveState lazy-pages-server.service)"
	info "$(grep -o 'remote_bytes=[0-9]*' "$T/lpd.out")"
}

# A hand-off (a VMM restoring guest memory through liblazypages) with the
# daemon SIGKILLed while its 1 GiB is being filled: its uffd and memory
# file come back from the fd store, and every page reads right.
sc_handoff-kill() {
	local hpid
	up
	"$BUILD/tests/lp-handoff" --size 1024 --threads 4 --file "$T/guest.mem" >"$T/h.out" 2>"$T/h.err" </dev/null &
	hpid=$!
	crl_until 20 prop_is NFileDescriptorStore 2 || fail "the fd store holds $(prop NFileDescriptorStore) fds, not the uffd and the memory file"
	systemctl kill -s KILL "$UNIT"
	timeout $STEP tail --pid=$hpid -f /dev/null
	wait $hpid || fail "lp-handoff across the kill: $(tail -n 3 "$T/h.err" | tr '\n' ' ')"
	grep -q 'all pages verified' "$T/h.out" || fail "lp-handoff: $(cat "$T/h.out")"
	[ "$(prop NRestarts)" = 1 ] || fail "$UNIT was not restarted"
	journal_has "session 1: resumed after a restart" || fail "the hand-off was not resumed"
	crl_until 10 prop_is NFileDescriptorStore 0 || fail "$(prop NFileDescriptorStore) fds left in the store"
	info "$(cut -c1-140 "$T/h.out")"
}

# A drop-in with a store of 2: the daemon learns it from systemd and
# refuses a session of 3 processes with a message that says why; one of 2
# fits, and survives a kill.
sc_store-full() {
	up "FileDescriptorStoreMax=2"
	mkdir "$T/three" "$T/two"
	W=$T/three
	prepare -m 16 -c 2 -a seq
	ctl session add -D "$W/img" >"$T/refused.out" 2>"$T/refused.err" &&
		fail "a session of 3 processes was accepted with a store of 2"
	grep -q 'do not fit in the fd store: 0 of its 2 slots' "$T/refused.err" || fail "unclear refusal: $(cat "$T/refused.err")"
	journal_has 'fd store of 2 \(FileDescriptorStoreMax= of the unit\)' || fail "the daemon did not learn the store's size"
	journal_has 'session refused' || fail "the refusal is not in the journal"
	W=$T/two
	restored -m 256 -c 1 -a random
	systemctl kill -s KILL "$UNIT"
	criu_go "$W"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted"
	await_journal "session $SID: resumed after a restart"
	verify
	info "$(cut -c1-160 "$T/refused.err")"
}

# A mismatch forced on purpose: the daemon is told the store holds 8
# (Environment=FDSTORE=8) while systemd keeps 1. It stores both uffds, and
# systemd closes one. After a kill, the restarted daemon finds one uffd
# missing and kills that process (idle: it read nothing meanwhile), and
# resumes the other.
sc_store-mismatch() {
	local killed=0 p
	up "FileDescriptorStoreMax=1" "Environment=FDSTORE=8"
	restored -m 1024 -c 1 -a idle
	systemctl kill -s KILL "$UNIT"
	journal_has 'Cannot store more fds than FileDescriptorStoreMax=1' || fail "systemd did not refuse the second uffd"
	crl_until $STEP prop_is NRestarts 1 || fail "$UNIT was not restarted"
	await_journal 'killed: its userfaultfd was not kept in the fd store'
	await_journal "session $SID: resumed after a restart"
	for p in $CRL_PIDS; do
		crl_until 5 eval "[ ! -e /proc/$p ] || grep -q '^State:.*Z' /proc/$p/status" && killed=$((killed + 1))
	done
	[ $killed -eq 1 ] || fail "$killed of the 2 processes killed, expected 1"
	# the survivor: everything checked once the daemon has filled it
	session_wait
	[ "$SSTATE" = failed ] || fail "session $SID: $SSTATE, expected failed (a process lost)"
	jq -e '.sessions[0].error | test("1 process\\(es\\) could not be resumed")' "$T/list.json" >/dev/null ||
		fail "the session's error does not say a process was lost: $(jq -c '.sessions[0].error' "$T/list.json")"
	criu_go "$W"
	criu_final "$W"
	crl_until $STEP eval 'ls "$W"/result.*.2 >/dev/null 2>&1' || fail "the surviving process wrote no result"
	for p in "$W"/result.*; do
		[ "$(tail -n 1 "$p")" = ok ] || fail "$(basename "$p"): $(tail -n 1 "$p")"
	done
	[ "$(ls "$W"/result.*.2 | wc -l)" -eq 1 ] || fail "results from $(ls "$W"/result.*.2 | wc -l) processes, expected 1"
	info "$(journal | grep -m1 'killed: its userfaultfd' | sed 's/.*error: //' | cut -c1-130)"
}

run_one() {
	local name=$1
	T=$2
	W=$T
	[ -n "${3:-}" ] && CRIU=$3
	DEBS=$4
	cd "$ROOT" || exit 1
	# shellcheck source=tests/criu-lib.sh
	. "$ROOT/tests/criu-lib.sh"
	criu_find || fail "$CRL_WHY"
	CRL_TIMEOUT=$STEP
	trap 'journal >"$T/journal.txt"; criu_kill_dir "$T"' EXIT
	"sc_$name"
	exit 0
}

if [ "${1:-}" = "--one" ]; then
	run_one "$2" "$3" "${4:-}" "${5:-}"
fi

. "$ROOT/tests/suite-lib.sh"
suite_want "$@"

if [ ! -x "$WITH_SYSTEMD" ]; then
	echo "skipped: no $WITH_SYSTEMD (a container with systemd as PID 1 is needed)"
	echo "0 passed, 0 failed"
	exit 0
fi
. "$ROOT/tests/criu-lib.sh"
if ! criu_find; then
	echo "skipped: no CRIU: $CRL_WHY"
	echo "0 passed, 0 failed"
	exit 0
fi
missing=
for b in "$BUILD/lazy-pagesd" "$BUILD/lazy-pagesctl" "$BUILD/lazy-pages-server" "$BUILD/tests/lp-work" \
	"$BUILD/tests/lp-handoff"; do
	[ -x "$b" ] || missing="$missing $b"
done
for b in jq systemd-nspawn; do
	command -v $b >/dev/null || missing="$missing $b"
done

t_start=$(date +%s.%N)
# the packages users install, of this tree
DEBS=${LP_DEBS:-}
if [ -z "$missing" ] && [ -z "$DEBS" ]; then
	# shellcheck source=tests/pkglib.sh
	. "$ROOT/tests/pkglib.sh"
	DEBS=$BUILD/deb-systemd
	pkg_build "$DEBS" 2>"$BUILD/deb-systemd.err" || missing=" the Debian packages ($(head -n 1 "$BUILD/deb-systemd.err"))"
fi
[ -n "$DEBS" ] && DEBS=$(cd "$DEBS" && pwd)
for n in "${SUITE_WANT[@]}"; do
	dir=$(mktemp -d "${LP_SYSTEMD_TMP:-/var/tmp}/lp-systemd.$n.XXXXXX")
	chmod 755 "$dir"
	t0=$(date +%s.%N)
	if [ -n "$missing" ]; then
		rc=1
		echo "not built or not installed:$missing" >"$dir/reason"
	else
		# the container starts with an empty environment: CRIU goes as an argument
		(cd "$ROOT" && timeout -k 20 "$SCENARIO_TIMEOUT" "$WITH_SYSTEMD" -r "$SHARED" -r "$(dirname "$CRIU")" \
			-b "$dir" -- bash tests/systemd.sh --one "$n" "$dir" "$CRIU" "$DEBS") >"$dir/scenario.out" 2>&1 </dev/null
		rc=$?
	fi
	secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
	suite_report "$n" $rc "$dir" "$secs" "$SCENARIO_TIMEOUT" "journalctl -u $UNIT" journal.txt 8 ||
		grep '^with-systemd:' "$dir/scenario.out" | grep -v -E 'boot took|teardown took|exit code' | sed 's/^/    /'
	[ -n "${LP_KEEP:-}" ] || rm -rf "$dir"
done
echo "total $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t_start }") s" >&2
echo "$SUITE_PASSED passed, $SUITE_FAILED failed"
[ $SUITE_FAILED -eq 0 ]
