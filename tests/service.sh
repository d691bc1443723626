#!/bin/bash
# SPDX-License-Identifier: MIT
# Service-mode tests: lazy-pagesd --service as systemd would run it
# (socket activation, sd_notify, the watchdog, SIGTERM), driven through
# lazy-pagesctl and liblazypages, with several sessions at once, a
# non-CRIU hand-off, unprivileged peers and a hostile control client.
#
#   bash tests/service.sh [--list] [NAME...]
#
# Run from anywhere, as root. systemd need not be PID 1: lp-notify plays
# NOTIFY_SOCKET and systemd-socket-activate plays the .socket unit. Each
# scenario runs in its own directory under ${TMPDIR:-/tmp} (removed
# afterwards), bounded by timeout(1), and never sleeps to wait: it waits
# on sd_notify datagrams (lp-notify --wait), on the control socket
# answering, or on processes. Prints "PASS name" or "FAIL name: reason" per
# scenario and ends with "N passed, N failed".
# Binaries can be overridden with LAZY_PAGESD, LAZY_PAGESCTL, LP_DUMP,
# LP_RESTORE, LP_NOTIFY, LP_HANDOFF, LP_CTLFUZZ, LP_SUPERVISE, LAZY_PAGES_SERVER, LP_DELAY.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAEMON=${LAZY_PAGESD:-$ROOT/build/lazy-pagesd}
CTL=${LAZY_PAGESCTL:-$ROOT/build/lazy-pagesctl}
DUMP=${LP_DUMP:-$ROOT/build/tests/lp-dump}
RESTORE=${LP_RESTORE:-$ROOT/build/tests/lp-restore}
NOTIFY=${LP_NOTIFY:-$ROOT/build/tests/lp-notify}
HANDOFF=${LP_HANDOFF:-$ROOT/build/tests/lp-handoff}
CTLFUZZ=${LP_CTLFUZZ:-$ROOT/build/tests/lp-ctlfuzz}
SUPERVISE=${LP_SUPERVISE:-$ROOT/build/tests/lp-supervise}
SERVER=${LAZY_PAGES_SERVER:-$ROOT/build/lazy-pages-server}
DELAY=${LP_DELAY:-$ROOT/build/tests/lp-delay}
SCENARIO_TIMEOUT=${LP_SCENARIO_TIMEOUT:-60}	# whole scenario, seconds
STEP_TIMEOUT=30					# one restore or client run
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

SCENARIOS=(
	units socket-activation watchdog two-sessions handoff ctl-json unprivileged
	peercred sigterm-waits bad-control restart-sigkill restart-remote restart-one-done
	restart-fault-waits restart-lost-one restart-unkept store-full store-fork restart-handoff bad-startup warm-restore
)

# ---------------------------------------------------------------------------
# helpers, used inside one scenario (run as `service.sh --one NAME DIR`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

info() {
	echo "$*" >>"$T/info"
}

# processes to end when the scenario ends, however it ends
KILL=()
cleanup() {
	local p
	for p in "${KILL[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	# a daemon lp-supervise restarted is not in KILL
	[ -n "${T:-}" ] && [ -s "$T/dpid" ] && kill -KILL "$(cat "$T/dpid")" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT

# notify_start: an lp-notify listening on $T/notify.sock, one line per
# assignment in $T/notify.out ("t=SECONDS pid=N READY=1"). Returns once bound.
notify_start() {
	: >"$T/notify.out"
	NPID=$("$NOTIFY" -d -p -t -o "$T/notify.out" "$T/notify.sock") || fail "lp-notify did not start"
	KILL+=("$NPID")
}

# await STR [COUNT] [SECONDS]: until $T/notify.out has COUNT lines containing
# STR; fails early if the daemon ($DPID, if set) exits first
await() {
	"$NOTIFY" --wait "$T/notify.out" --match "$1" --count "${2:-1}" --timeout "${3:-10}" \
		${DPID:+--pid "$DPID"} 2>>"$T/await.err"
}

await_or_fail() {
	await "$@" || fail "no '$1' from the daemon: $(tail -n 1 "$T/await.err"); daemon log: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
}

count_lines() {
	grep -c -F -- "$1" "$T/notify.out"
}

# gaps STR: "max median" seconds between consecutive notification lines with STR
gaps() {
	grep -F -- "$1" "$T/notify.out" | sed 's/^t=\([0-9.]*\) .*/\1/' |
		awk 'NR > 1 { print $1 - p } { p = $1 }' | sort -g |
		awk '{ d[NR] = $1 } END { if (NR) printf "%.3f %.3f\n", d[NR], d[int((NR + 1) / 2)]; else print "0 0" }'
}

# session_wait [ID]: until the session (every session) is done or failed;
# lazy-pagesctl watch returns then
session_wait() {
	ctl watch ${1:-} --interval 10 >"$T/watch.wait" 2>&1 || fail "watch ${1:-}: $(tail -n 1 "$T/watch.wait")"
}

# start_service [ARGS...]: lazy-pagesd --service on $SOCK with NOTIFY_SOCKET
# set; returns once it said READY=1. Sets DPID. With WRAP_WATCHDOG=USEC the
# daemon runs with WATCHDOG_USEC=USEC and WATCHDOG_PID set to its own pid.
start_service() {
	notify_start
	if [ -n "${WRAP_WATCHDOG:-}" ]; then
		# the pid is only known from inside: export it, then exec the daemon
		NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=$WRAP_WATCHDOG \
			bash -c 'export WATCHDOG_PID=$$; exec "$@"' wrapper \
			"$DAEMON" --service --control "$SOCK" -v "$@" >"$T/daemon.out" 2>"$T/daemon.log" &
	else
		NOTIFY_SOCKET=$T/notify.sock "$DAEMON" --service --control "$SOCK" -v "$@" \
			>"$T/daemon.out" 2>"$T/daemon.log" &
	fi
	DPID=$!
	KILL+=("$DPID")
	await READY=1 1 10 || fail "no READY=1 from the daemon: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
	grep -q "pid=$DPID READY=1" "$T/notify.out" ||
		fail "READY=1 came from another pid: $(grep READY=1 "$T/notify.out")"
}

# stop_service: SIGTERM, and the daemon must exit 0
stop_service() {
	kill -TERM "$DPID" 2>/dev/null
	wait "$DPID"
	DRC=$?
	[ $DRC -eq 0 ] || fail "lazy-pagesd --service exit $DRC after SIGTERM: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
}

ctl() {
	timeout -k 5 $STEP_TIMEOUT "$CTL" -s "$SOCK" "$@"
}

# jqe NAME FILE FILTER [jq args...]: FILE must satisfy FILTER
jqe() {
	local name=$1 file=$2 filter=$3
	shift 3
	jq -e "$@" "$filter" "$file" >/dev/null 2>"$T/jq.err" ||
		fail "$name: jq '$filter' is false on $(head -c 600 "$file") $(head -c 200 "$T/jq.err")"
}

dump() {
	local dir=$1
	shift
	timeout -k 5 $STEP_TIMEOUT "$DUMP" -D "$dir" "$@" >"$T/dump.out" 2>"$T/dump.err" ||
		fail "lp-dump $* failed: $(tail -n 3 "$T/dump.err" | tr '\n' ' ')"
}

# add ARGS...: lazy-pagesctl session add ARGS --json; sets SID
add() {
	ctl session add "$@" --json >"$T/add.json" 2>"$T/add.err" ||
		fail "session add $*: $(cat "$T/add.err")"
	SID=$(jq -r .id "$T/add.json")
	[ -n "$SID" ] && [ "$SID" != null ] || fail "session add $*: no id in $(cat "$T/add.json")"
}

# restore TAG DIR [lp-restore args...]: lp-restore; output in $T/restore.TAG.*
restore() {
	local tag=$1 dir=$2
	shift 2
	timeout -k 5 $STEP_TIMEOUT "$RESTORE" -D "$dir" --timeout $((STEP_TIMEOUT - 10)) "$@" \
		>"$T/restore.$tag.out" 2>"$T/restore.$tag.err"
}

restore_reason() {
	grep -m3 -E 'mismatch|HANG|failed|error|: ' "$T/restore.$1.err" | tr '\n' ' ' | cut -c1-400
}

# ---------------------------------------------------------------------------
# scenarios

# unit KEY=VALUE FILE: FILE has that line exactly
unit_has() {
	grep -q -x -F -- "$1" "$2" || fail "$(basename "$2") lacks $1"
}

# systemd/install.sh into a private prefix, then systemd-analyze verify
# (which works without systemd as PID 1) on what it installed.
sc_units() {
	local u="$T/units" out
	command -v systemd-analyze >/dev/null || fail "systemd-analyze is not installed (package systemd)"
	PREFIX=$T/usr UNITDIR=$u DEFAULTDIR=$T/default BUILDDIR=$(dirname "$DAEMON") \
		sh "$ROOT/systemd/install.sh" >"$T/install.out" 2>&1 || fail "install.sh: $(tail -n 2 "$T/install.out")"
	for b in sbin/lazy-pagesd sbin/lazy-pages-server bin/lazy-pagesctl; do
		[ -x "$T/usr/$b" ] || fail "install.sh did not install $b"
	done
	[ -f "$T/default/lazy-pages" ] && [ -f "$T/default/lazy-pages-server" ] ||
		fail "install.sh did not install the /etc/default files"
	grep -q -x "ExecStart=$T/usr/sbin/lazy-pagesd --service \$LAZY_PAGESD_OPTS" "$u/lazy-pages.service" ||
		fail "ExecStart not fixed up: $(grep ExecStart "$u/lazy-pages.service")"
	grep -q -x "ExecStopPost=$T/usr/sbin/lazy-pagesd --reap \$LAZY_PAGESD_OPTS" "$u/lazy-pages.service" ||
		fail "ExecStopPost not fixed up: $(grep ExecStopPost "$u/lazy-pages.service")"
	grep -q "^ExecStart=$T/usr/sbin/lazy-pages-server " "$u/lazy-pages-server.service" ||
		fail "ExecStart not fixed up: $(grep ExecStart "$u/lazy-pages-server.service")"
	grep -q -x "EnvironmentFile=$T/default/lazy-pages-server" "$u/lazy-pages-server.service" ||
		fail "EnvironmentFile not fixed up: $(grep EnvironmentFile "$u/lazy-pages-server.service")"
	# a second run keeps the administrator's configuration
	echo 'LAZY_PAGESD_OPTS="-v2"' >"$T/default/lazy-pages"
	PREFIX=$T/usr UNITDIR=$u DEFAULTDIR=$T/default BUILDDIR=$(dirname "$DAEMON") \
		sh "$ROOT/systemd/install.sh" >"$T/install.out" 2>&1 || fail "install.sh (again) failed"
	grep -q -- -v2 "$T/default/lazy-pages" || fail "install.sh overwrote $T/default/lazy-pages"

	out=$(cd "$u" && systemd-analyze verify lazy-pages.socket lazy-pages.service lazy-pages-server.service 2>&1) ||
		fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify warns: $(echo "$out" | head -n 3 | tr '\n' ' ')"

	unit_has ListenStream=/run/lazy-pages/control.sock "$u/lazy-pages.socket"
	unit_has SocketMode=0600 "$u/lazy-pages.socket"
	unit_has RemoveOnStop=yes "$u/lazy-pages.socket"
	for kv in Type=notify Restart=on-failure WatchdogSec=30s TimeoutStopSec=infinity User=root \
		FileDescriptorStoreMax=65536 NotifyAccess=main \
		NoNewPrivileges=yes RuntimeDirectory=lazy-pages RuntimeDirectoryPreserve=yes \
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"; do
		unit_has "$kv" "$u/lazy-pages.service"
	done
	grep -q -E '^(ProtectSystem=strict|PrivateTmp=yes|ProtectHome=|PrivateDevices=yes|ProtectProc=)' \
		"$u/lazy-pages.service" && fail "lazy-pages.service hides places images or peers live in"
	# the daemon as the unit runs it: only the bounding set the unit keeps
	local caps
	caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$u/lazy-pages.service" | tr 'A-Z' 'a-z' |
		sed 's/cap_/+/g; s/ /,/g')
	[ -n "$caps" ] || fail "no CapabilityBoundingSet in lazy-pages.service"
	notify_start
	NOTIFY_SOCKET=$T/notify.sock setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,"$caps" \
		"$T/usr/sbin/lazy-pagesd" --service --control "$SOCK" -v >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	KILL+=("$DPID")
	await_or_fail READY=1
	dump "$T/d" --procs 2 --size 16
	chmod 0700 "$T/d"
	chown -R 65534:65534 "$T/d"	# images of another owner, as root's dumps of a user's job
	add -D "$T/d"
	restore a "$T/d" --scenario fork || fail "restore with the unit's capabilities only: $(restore_reason a)"
	timeout -k 5 $STEP_TIMEOUT "$HANDOFF" -s "$SOCK" --size 8 >"$T/h.out" 2>"$T/h.err" ||
		fail "hand-off with the unit's capabilities only: $(tail -n 2 "$T/h.err" | tr '\n' ' ')"

	# the page server as its unit runs it, serving those images to a page-server session
	local scaps sp
	scaps=$(sed -n 's/^CapabilityBoundingSet=//p' "$u/lazy-pages-server.service" | tr 'A-Z' 'a-z' |
		sed 's/cap_/+/g; s/ /,/g')
	mkfifo "$T/ready" || fail "mkfifo"
	setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,"$scaps" "$T/usr/sbin/lazy-pages-server" \
		-D "$T/d" --port 0 --port-file "$T/port" --status-fd 3 3>"$T/ready" 2>"$T/server.log" &
	sp=$!
	KILL+=("$sp")
	head -c1 "$T/ready" >"$T/ready.byte"	# one byte once it listens, EOF if it exits
	[ -s "$T/ready.byte" ] ||
		fail "lazy-pages-server with its unit's capabilities did not start: $(tail -n 2 "$T/server.log" | tr '\n' ' ')"
	mkdir "$T/w2"
	add -D "$T/d" -W "$T/w2" --page-server --address 127.0.0.1 --port "$(cat "$T/port")"
	restore b "$T/d" -W "$T/w2" --scenario random ||
		fail "page-server restore with the units' capabilities only: $(restore_reason b)"
	kill -TERM "$sp"
	wait "$sp" || fail "lazy-pages-server exit $? on SIGTERM"
	stop_service
	info "$(systemd-analyze security --offline=yes "$u/lazy-pages.service" 2>/dev/null | grep -o 'Overall exposure level.*')"
	info "$(systemd-analyze security --offline=yes "$u/lazy-pages-server.service" 2>/dev/null | grep -o 'Overall exposure level.*')"
}

# systemd-socket-activate holds the socket and execs the daemon (same pid)
# on the first connection, with LISTEN_FDS=1 and LISTEN_FDNAMES=control.
sc_socket-activation() {
	command -v systemd-socket-activate >/dev/null || fail "systemd-socket-activate is not installed (package systemd)"
	notify_start
	: >"$T/daemon.log"	# there before the waiter below watches it
	systemd-socket-activate -l "$SOCK" --fdname=control -E NOTIFY_SOCKET="$T/notify.sock" \
		"$DAEMON" --service -v >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	KILL+=("$DPID")
	# it says so on stderr once it listens: wait for that line, not for time
	"$NOTIFY" --wait "$T/daemon.log" --match "Listening on" --timeout 10 --pid "$DPID" 2>>"$T/await.err" ||
		fail "systemd-socket-activate did not listen: $(cat "$T/daemon.log")"
	[ -S "$SOCK" ] || fail "no socket at $SOCK"
	[ "$(cat /proc/$DPID/comm)" != lazy-pagesd ] || fail "the daemon started before the first connection"
	[ ! -s "$T/notify.out" ] || fail "notifications before activation: $(cat "$T/notify.out")"

	ctl status --json >"$T/status.json" 2>"$T/ctl.err" ||
		fail "the first status (the activating connection) failed: $(cat "$T/ctl.err")"
	jqe status "$T/status.json" '.pid == $pid and .sessions_total == 0' --argjson pid "$DPID"
	await_or_fail READY=1
	await_or_fail STATUS= 2
	grep -q "pid=$DPID READY=1" "$T/notify.out" || fail "READY=1 not from pid $DPID: $(cat "$T/notify.out")"
	grep -q 'socket activated' "$T/daemon.log" ||
		fail "the daemon did not take the socket from LISTEN_FDS: $(tail -n 3 "$T/daemon.log" | tr '\n' ' ')"
	[ "$(cat /proc/$DPID/comm)" = lazy-pagesd ] || fail "pid $DPID is $(cat /proc/$DPID/comm), not lazy-pagesd"

	# a second client, and a real session through the activated socket
	dump "$T/d" --size 16
	add -D "$T/d"
	restore a "$T/d" --scenario random || fail "lp-restore: $(restore_reason a)"
	ctl status --json >"$T/status.json" || fail "second status failed"
	jqe status "$T/status.json" '.sessions_total == 1'
	stop_service
	await_or_fail STOPPING=1
	# the socket belongs to the activator: the daemon must leave it be
	[ -S "$SOCK" ] || fail "the daemon removed the socket systemd passed it"
	info "$(grep -m1 STATUS= "$T/notify.out" | cut -c1-120)"
}

sc_watchdog() {
	dump "$T/d" --size 64
	WRAP_WATCHDOG=200000 start_service
	# WatchdogSec 0.2 s: a ping every 0.1 s
	await_or_fail WATCHDOG=1 5 5
	grep -q "pid=$DPID WATCHDOG=1" "$T/notify.out" || fail "WATCHDOG=1 from another pid"
	# the pings keep coming while the daemon serves
	add -D "$T/d"
	restore a "$T/d" --scenario threads --threads 4 || fail "lp-restore: $(restore_reason a)"
	local n g
	n=$(count_lines WATCHDOG=1)
	await_or_fail WATCHDOG=1 $((n + 3)) 5
	# at half of WatchdogSec. The median, not the max: on a loaded machine
	# one late tick (the daemon or lp-notify not scheduled) says nothing
	# about the daemon; the max is reported.
	g=$(gaps WATCHDOG=1)
	awk -v g="$g" 'BEGIN { split(g, a, " "); exit !(a[2] >= 0.08 && a[2] <= 0.13) }' ||
		fail "WATCHDOG=1 every $g s (max, median): not at half of WatchdogSec 0.2 s"
	info "$(count_lines WATCHDOG=1) WATCHDOG=1 lines, gaps max/median $g s"
	stop_service

	# WATCHDOG_PID naming another process: not this daemon's watchdog
	notify_start
	NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=200000 WATCHDOG_PID=1 \
		"$DAEMON" --service --control "$SOCK" -v >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	KILL+=("$DPID")
	await_or_fail READY=1
	# two STATUS= lines are a second apart: ten pings would have come by then
	await_or_fail STATUS= 2
	[ "$(count_lines WATCHDOG=1)" -eq 0 ] || fail "WATCHDOG=1 sent with WATCHDOG_PID=1"
	stop_service
}

# warm restores as session options: one session records, the next replays
# what it recorded (found next to the images), one gets a file by path, one
# none; a relative path is refused by lazy-pagesctl, a bad file by no one
sc_warm-restore() {
	local sum f
	dump "$T/A" --size 32
	start_service
	add -D "$T/A" --ws-record
	restore rec "$T/A" --scenario random || fail "recording restore: $(restore_reason rec)"
	session_wait "$SID"
	f=$T/A/lazy-pages.ws
	[ -s "$f" ] || fail "the recording session wrote no $f"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	jqe recorded "$T/list.json" '.sessions[] | select(.id == $id) | .summary | test("ws_recorded=[1-9]")' --argjson id "$SID"
	cp "$f" "$T/copy.ws"
	add -D "$T/A"
	restore replay "$T/A" --scenario random --start-delay-ms 300 || fail "replaying restore: $(restore_reason replay)"
	session_wait "$SID"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	sum=$(jq -r --argjson id "$SID" '.sessions[] | select(.id == $id) | .summary' "$T/list.json")
	[[ "$sum" =~ ws_planned=[1-9] ]] || fail "the next session did not replay the recording: $sum"
	rm "$f"
	add -D "$T/A" --ws-replay "$T/copy.ws"
	restore path "$T/A" --scenario random || fail "restore with --ws-replay: $(restore_reason path)"
	session_wait "$SID"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	jqe "--ws-replay" "$T/list.json" '.sessions[] | select(.id == $id) | .summary | test("ws_planned=[1-9]")' --argjson id "$SID"
	ctl session add -D "$T/A" --ws-replay "$T/none.ws" >/dev/null 2>"$T/add.err" && fail "session add took a file that is not there"
	head -c 100 /dev/urandom >"$T/bad.ws"
	add -D "$T/A" --ws-replay "$T/bad.ws"
	restore bad "$T/A" --scenario random || fail "restore with a bad file: $(restore_reason bad)"
	session_wait "$SID"
	grep -q 'bad\.ws: .*the restore goes on without replay' "$T/daemon.log" || fail "no error naming bad.ws in the log"
	stop_service
	info "${sum:0:200}"
}

sc_two-sessions() {
	local a b bad ra rb rbad n
	dump "$T/A" --procs 2 --size 64
	dump "$T/B" --procs 2 --size 64 --seed 7
	dump "$T/G" --procs 2 --size 8 --seed 3
	# the third session's images are spoilt where only serving reads them
	cp -a "$T/G" "$T/X"
	truncate -s $(($(stat -c %s "$T/X/pages-1.img") / 2)) "$T/X/pages-1.img"
	mkdir "$T/xw"

	start_service
	add -D "$T/A"
	a=$SID
	add -D "$T/B"
	b=$SID
	add -D "$T/X" -W "$T/xw"
	bad=$SID
	ctl session list --json >"$T/list.json" || fail "session list failed"
	jqe listening "$T/list.json" '[.sessions[] | select(.state == "listening")] | length == 3'

	# all three restores at once; the spoilt one restores the good images
	# G against the session of X, so only the daemon side fails
	restore a "$T/A" --scenario random &
	ra=$!
	restore b "$T/B" --scenario threads --threads 8 &
	rb=$!
	restore x "$T/G" -W "$T/xw" --scenario none &
	rbad=$!
	wait $ra || fail "restore of A: $(restore_reason a)"
	wait $rb || fail "restore of B: $(restore_reason b)"
	# it may or may not notice (the daemon can fail after its last record):
	# what counts is that it ends, and that the session says failed
	wait $rbad
	n=$?
	[ $n -ne 124 ] && [ $n -ne 137 ] || fail "the restore against the spoilt session hung"
	session_wait

	ctl session list --json >"$T/list.json" || fail "session list failed"
	local ok='.sessions[] | select(.id == $id) | .state == "done" and .pages_copied > 0 and
		(.summary | startswith("summary: processes=2 ")) and .error == "" and
		(.procs | length == 2) and all(.procs[]; .state == "complete" and .remaining_pages == 0)'
	jqe "session $a" "$T/list.json" "$ok" --argjson id "$a"
	jqe "session $b" "$T/list.json" "$ok" --argjson id "$b"
	jqe "session $bad" "$T/list.json" \
		'.sessions[] | select(.id == $id) | .state == "failed" and (.error | test("pages-1.img|pagemap"))' \
		--argjson id "$bad"
	ctl status --json >"$T/status.json" || fail "status failed"
	jqe status "$T/status.json" '.sessions_total == 3 and .sessions_active == 0'
	stop_service
	info "A: $(jq -r --argjson id "$a" '.sessions[] | select(.id == $id) | .summary' "$T/list.json" | cut -c1-110)"
	info "B: $(jq -r --argjson id "$b" '.sessions[] | select(.id == $id) | .summary' "$T/list.json" | cut -c1-110)"
	info "X: $(jq -r --argjson id "$bad" '.sessions[] | select(.id == $id) | .error' "$T/list.json" | cut -c1-110)"
}

sc_handoff() {
	local h1 h2
	start_service
	# a memory file on disk, and an anonymous memfd, at the same time
	timeout -k 5 $STEP_TIMEOUT "$HANDOFF" -s "$SOCK" --size 128 --threads 4 --file "$T/guest.mem" \
		>"$T/h1.out" 2>"$T/h1.err" &
	h1=$!
	timeout -k 5 $STEP_TIMEOUT "$HANDOFF" -s "$SOCK" --size 64 --threads 2 --seed 9 --zeros 50 \
		>"$T/h2.out" 2>"$T/h2.err" &
	h2=$!
	wait $h1 || fail "lp-handoff (file): $(tail -n 3 "$T/h1.err" | tr '\n' ' ')"
	wait $h2 || fail "lp-handoff (memfd): $(tail -n 3 "$T/h2.err" | tr '\n' ' ')"
	grep -q 'all pages verified' "$T/h1.out" || fail "lp-handoff: $(cat "$T/h1.out")"
	ctl stats --json >"$T/stats.json" || fail "stats failed"
	jqe handoff "$T/stats.json" '[.sessions[] | select(.kind == "handoff" and .state == "done" and
		.pages_copied > 0 and .zero_pages > 0 and .socket == "")] | length == 2'
	# 128 MiB = 32768 pages, each either copied or zero-filled
	jqe pages "$T/stats.json" '[.sessions[] | select(.pages_copied + .zero_pages == 32768)] | length == 1'
	stop_service
	info "$(cut -c1-150 "$T/h1.out")"
}

sc_ctl-json() {
	local frames
	dump "$T/d" --size 16
	start_service
	ctl status --json >"$T/status.json" || fail "status --json failed"
	jqe status "$T/status.json" '.pid == $pid and .sessions_total == 0 and .stopping == false and
		(.line | test("serving"))' --argjson pid "$DPID"
	add -D "$T/d"
	jqe add "$T/add.json" '.id >= 1 and .socket == $s' --arg s "$T/d/lazy-pages.socket"
	[ -S "$T/d/lazy-pages.socket" ] || fail "no restore socket after session add"

	# watch while the session listens: one frame per interval
	ctl watch --interval 50 --count 2 >"$T/watch.out" 2>&1 || fail "watch --count 2: $(cat "$T/watch.out")"
	frames=$(grep -c "^session $SID " "$T/watch.out")
	[ "$frames" -eq 2 ] || fail "watch --count 2 printed $frames frames: $(head -c 300 "$T/watch.out")"
	grep -q "^session $SID listening" "$T/watch.out" || fail "watch: $(head -n 2 "$T/watch.out")"

	restore a "$T/d" --scenario seq || fail "lp-restore: $(restore_reason a)"
	session_wait "$SID"
	ctl status --json >"$T/status.json" || fail "status --json failed"
	jqe status "$T/status.json" '.sessions_total >= 1 and .sessions_active == 0 and .uptime_s > 0'
	ctl stats --json >"$T/stats.json" || fail "stats --json failed"
	jqe stats "$T/stats.json" '(.sessions | length == 1) and .sessions[0].state == "done" and
		.sessions[0].kind == "criu" and .sessions[0].pages_copied > 0 and .sessions[0].faults >= 0 and
		.sessions[0].fault_p99_us >= .sessions[0].fault_p50_us and .sessions[0].seconds > 0'
	ctl stats "$SID" --json >"$T/stats1.json" || fail "stats $SID --json failed"
	jqe "stats $SID" "$T/stats1.json" '.sessions[0].id == $id and .sessions[0].procs[0].state == "complete"' \
		--argjson id "$SID"
	ctl session list --json >"$T/list.json" || fail "session list --json failed"
	jqe list "$T/list.json" '.sessions[0].procs[0].total_pages > 0 and .sessions[0].procs[0].remaining_pages == 0'
	ctl watch "$SID" --interval 50 --count 2 >"$T/watch.out" 2>&1 || fail "watch $SID failed"
	grep -q "^session $SID done" "$T/watch.out" || fail "watch after the restore: $(head -n 1 "$T/watch.out")"

	# errors: a session that is not there (1), bad arguments (2)
	ctl stats 9999 --json >/dev/null 2>"$T/err"
	[ $? -eq 1 ] || fail "stats 9999: expected exit 1"
	ctl frobnicate >/dev/null 2>&1
	[ $? -eq 2 ] || fail "an unknown command: expected exit 2"
	ctl session add >/dev/null 2>&1
	[ $? -eq 2 ] || fail "session add without -D: expected exit 2"
	ctl session rm "$SID" || fail "session rm $SID of a finished session failed"
	ctl session list --json >"$T/list.json" || fail "session list failed"
	jqe "after rm" "$T/list.json" '.sessions | length == 0'
	stop_service
}

# The control socket is root's alone; --control-group opens it to a group.
sc_unprivileged() {
	local mode
	chmod 711 "$T"	# mktemp's 0700 would refuse nobody before the socket does
	start_service
	mode=$(stat -c %a "$SOCK")
	[ "$(stat -c %U "$SOCK")" = root ] || fail "the socket belongs to $(stat -c %U "$SOCK")"
	[ $((8#$mode & 8#077)) -eq 0 ] || fail "socket mode $mode: group or others may connect"
	[ $((8#$mode & 8#600)) -eq $((8#600)) ] || fail "socket mode $mode"
	[ "$mode" = 600 ] || info "socket mode $mode (no group/other bits; the unit's SocketMode is 0600)"
	"${NOBODY[@]}" "$CTL" -s "$SOCK" status >"$T/nobody.out" 2>"$T/nobody.err"
	[ $? -ne 0 ] || fail "nobody was allowed: $(cat "$T/nobody.out")"
	grep -q -i -E 'permission|uid|not allowed|refused' "$T/nobody.err" ||
		fail "unclear refusal: $(cat "$T/nobody.err")"
	info "nobody: $(cat "$T/nobody.err")"
	ctl status >/dev/null || fail "root was refused"
	stop_service

	start_service --control-group nogroup
	[ "$(stat -c '%a %G' "$SOCK")" = "660 nogroup" ] ||
		fail "--control-group nogroup: socket is $(stat -c '%a %G' "$SOCK")"
	"${NOBODY[@]}" "$CTL" -s "$SOCK" status --json >"$T/nobody.json" 2>"$T/nobody.err" ||
		fail "nobody in group nogroup was refused: $(cat "$T/nobody.err")"
	jqe "nobody's status" "$T/nobody.json" '.pid == $pid' --argjson pid "$DPID"
	setpriv --reuid=65534 --regid=1 --clear-groups "$CTL" -s "$SOCK" status >/dev/null 2>"$T/nobody.err" &&
		fail "uid 65534 outside the group was allowed"
	stop_service
}

# A peer the socket's mode lets in but SO_PEERCRED does not: the daemon
# answers with a refusal frame and closes, and the client must show that
# answer. Whether the client's request is sent before the close is a race,
# so the refusal is tried ten times and must be clear every time.
sc_peercred() {
	local i unclear=0
	chmod 711 "$T"
	start_service
	chmod 666 "$SOCK"
	for i in 1 2 3 4 5 6 7 8 9 10; do
		"${NOBODY[@]}" "$CTL" -s "$SOCK" status >"$T/nobody.out" 2>"$T/nobody.err"
		[ $? -ne 0 ] || fail "uid 65534 was served: $(cat "$T/nobody.out")"
		if ! grep -q -E 'uid 65534|permission|not allowed' "$T/nobody.err"; then
			unclear=$((unclear + 1))
			cp "$T/nobody.err" "$T/unclear.err"
		fi
	done
	grep -q 'refused pid [0-9]* uid 65534' "$T/daemon.log" || fail "the daemon did not log the refusal"
	[ $unclear -eq 0 ] ||
		fail "$unclear of 10 refusals did not reach the user: \"$(cat "$T/unclear.err")\" (the daemon sent \"uid 65534 may not use this control socket\")"
	stop_service
}

sc_sigterm-waits() {
	local rpid wpid n idle
	dump "$T/big" --procs 2 --size 256
	dump "$T/idle" --size 4
	# WatchdogSec 20 ms: the daemon ticks (STATUS= and WATCHDOG=1) every
	# 10 ms, so "1 serving" is seen within 10 ms of the restore connecting
	WRAP_WATCHDOG=20000 start_service
	add -D "$T/big"
	add -D "$T/idle"	# never restored: SIGTERM cancels it
	idle=$SID
	timeout -k 2 15 "$CTL" -s "$SOCK" watch --interval 20 >"$T/watch.out" 2>&1 &
	wpid=$!
	KILL+=("$wpid")

	restore a "$T/big" --scenario random &
	rpid=$!
	await_or_fail "STATUS=1 serving" 1 20
	kill -0 $rpid 2>/dev/null || fail "the restore ended before SIGTERM could be sent"
	kill -TERM "$DPID"
	await_or_fail STOPPING=1
	await_or_fail "STATUS=stopping: waiting for live sessions; 1 serving"
	if kill -0 "$DPID" 2>/dev/null && ctl status --json >"$T/status.json" 2>/dev/null; then
		jqe stopping "$T/status.json" '.stopping == true'
		ctl session add -D "$T/idle" >/dev/null 2>"$T/add.err" && fail "session add accepted while stopping"
		grep -q -i stopping "$T/add.err" || fail "session add while stopping: $(cat "$T/add.err")"
	else
		info "the daemon had finished before the checks while stopping"
	fi

	wait $rpid || fail "lp-restore after SIGTERM: $(restore_reason a)"
	wait "$DPID"
	n=$?
	[ $n -eq 0 ] || fail "daemon exit $n after SIGTERM: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
	grep -q 'waiting for 1 session' "$T/daemon.log" || fail "the daemon did not say it waits: $(grep -i -m2 term "$T/daemon.log")"
	grep -q "session 1: summary: processes=2 " "$T/daemon.log" || fail "no summary of session 1 before exiting"
	grep -q "session $idle: .*cancel" "$T/daemon.log" || fail "session $idle was not cancelled: $(grep "session $idle" "$T/daemon.log" | tr '\n' ' ')"
	# the open control connection (watch) ends with the daemon
	wait $wpid
	n=$?
	[ $n -ne 124 ] && [ $n -ne 137 ] || fail "lazy-pagesctl watch outlived the daemon (killed by timeout)"
	info "$(grep -m1 'RSTF\|stopping\|Terminated' "$T/daemon.log" | cut -c1-150)"
	info "$(sed -n 's/.*all pages verified in \([0-9.]*\) s/restore \1 s/p' "$T/restore.a.out")"
}

# A daemon that cannot start says why, naming the group, path or file,
# and exits 1 at once (no socket left behind, nothing listening).
# start_bad NAME PATTERN CMD...: CMD must exit 1 within 10 s with PATTERN on stderr
start_bad() {
	local name=$1 pat=$2 rc
	shift 2
	NOTIFY_SOCKET= timeout -k 2 10 "$@" >"$T/$name.out" 2>"$T/$name.err"
	rc=$?
	[ $rc -eq 1 ] || fail "$name: exit $rc, not 1: $(tail -n 2 "$T/$name.err" | tr '\n' ' ')"
	grep -q -e "$pat" "$T/$name.err" || fail "$name: unclear error: $(tail -n 2 "$T/$name.err" | tr '\n' ' ')"
	info "$name: $(tail -n 1 "$T/$name.err" | cut -c1-120)"
}

sc_bad-startup() {
	start_bad group "--control-group lp-no-such-group: no such group" \
		"$DAEMON" --service --control "$SOCK" --control-group lp-no-such-group
	[ ! -e "$SOCK" ] || fail "a socket was left at $SOCK by a daemon that did not start"
	start_bad control-dir "$T/file/control.sock: .*Not a directory" \
		bash -c ': >"$1/file" && exec "${@:2}"' sh "$T" "$DAEMON" --service --control "$T/file/control.sock"
	start_bad control-long "longer than 107 bytes" \
		"$DAEMON" --service --control "$T/$(printf 'x%.0s' $(seq 120))/control.sock"
	start_bad service-log "lazy-pagesd: $T/nodir/d.log: No such file or directory" \
		"$DAEMON" --service --control "$SOCK" --log-file "$T/nodir/d.log"
	start_bad daemon-log "lazy-pagesd: $T/nodir/d.log: No such file or directory" \
		"$DAEMON" -D "$T" -W "$T" --log-file "$T/nodir/d.log"
	[ -x "$SERVER" ] || fail "$SERVER not built"
	start_bad server-log "lazy-pages-server: $T/nodir/s.log: No such file or directory" \
		"$SERVER" -D "$T" --port 0 --log-file "$T/nodir/s.log"
}

# port_read FILE WHAT: the port a program started with --port-file FILE
# wrote there, within 2 s, into PORT; fails naming WHAT if none came
port_read() {
	local n
	for n in $(seq 200); do [ -s "$1" ] && break; sleep 0.01; done
	[ -s "$1" ] || fail "$2 did not start: $(tail -n 2 "${1%.port}.log" 2>/dev/null | tr '\n' ' ')"
	PORT=$(cat "$1")
}

# server_start DIR: lazy-pages-server serving DIR on 127.0.0.1, its port in PORT
server_start() {
	"$SERVER" -D "$1" --port 0 --address 127.0.0.1 --port-file "$T/ps.port" 2>"$T/ps.log" &
	KILL+=($!)
	port_read "$T/ps.port" lazy-pages-server
}

# sup_start [lp-supervise options]: lazy-pagesd --service under lp-supervise
# (socket activation, NOTIFY_SOCKET and the fd store, as systemd), restarted
# once if killed; returns once it said READY=1. Sets SUP. $SUP_DAEMON_ARGS: more
# options for the daemon (both runs of it).
sup_start() {
	local n
	"$SUPERVISE" --notify "$T/notify.sock" --listen "$SOCK" --pidfile "$T/dpid" --restarts 1 "$@" -- \
		"$DAEMON" --service --control "$SOCK" --state-dir "$T/state" -v ${SUP_DAEMON_ARGS:-} \
		>"$T/sup.out" 2>"$T/daemon.log" &
	SUP=$!
	KILL+=($SUP)
	for n in $(seq 500); do grep -q '^ready' "$T/sup.out" 2>/dev/null && break; sleep 0.01; done
	grep -q '^ready' "$T/sup.out" || fail "no READY=1 under lp-supervise: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
}

# sup_await LINE [COUNT]: until lp-supervise printed COUNT lines starting with LINE
sup_await() {
	local n
	for n in $(seq 1000); do [ "$(grep -c "^$1" "$T/sup.out")" -ge "${2:-1}" ] && return 0; sleep 0.01; done
	fail "lp-supervise never printed ${2:-1} x '$1': $(tr '\n' ' ' <"$T/sup.out")"
}

# sup_stop: SIGTERM to the daemon; lp-supervise (and so the daemon) must exit 0
# with nothing left in its fd store or the state dir
sup_stop() {
	local n
	kill -TERM "$(cat "$T/dpid")"
	wait $SUP
	n=$?
	[ $n -eq 0 ] || fail "lp-supervise (the daemon) exit $n: $(tail -n 2 "$T/daemon.log" | tr '\n' ' ')"
	[ "$(grep -c '^stored lp-' "$T/sup.out")" -le "$(grep -c -E '^(removed|lost) lp-' "$T/sup.out")" ] ||
		fail "uffds left in the fd store: $(grep -E 'stored|removed' "$T/sup.out" | tr '\n' ' ')"
	[ -z "$(ls -A "$T/state" 2>/dev/null)" ] || fail "state left behind: $(ls "$T/state")"
}

# restart-sigkill [REMOTE]: SIGKILLed while it fills two processes; restarted,
# the daemon takes the uffds back and its journal, and finishes: every byte
# verified, nothing left stored afterwards.
restart_common() {
	local rpid port=
	dump "$T/img" --procs 2 --size 512
	if [ -n "${1:-}" ]; then
		server_start "$T/img"
		port=$PORT
	fi
	sup_start --fdstore-max 64
	grep -q 'fd store of 64 (\$FDSTORE)' "$T/daemon.log" || fail "the daemon did not take \$FDSTORE=64: $(head -n 3 "$T/daemon.log" | tr '\n' ' ')"
	if [ -n "$port" ]; then
		add -D "$T/img" --page-server --address 127.0.0.1 --port "$port"
	else
		add -D "$T/img"
	fi
	restore a "$T/img" --scenario random &
	rpid=$!
	sup_await "stored lp-" 2
	kill -KILL "$(cat "$T/dpid")"
	wait $rpid || fail "lp-restore across the daemon's restart: $(restore_reason a)"
	grep -q 'killed by signal 9; restart' "$T/sup.out" || fail "the daemon was not restarted: $(tr '\n' ' ' <"$T/sup.out")"
	grep -q 'resumed after a restart' "$T/daemon.log" || fail "the session was not resumed: $(grep -m3 -E 'error|warn' "$T/daemon.log" | tr '\n' ' ')"
	session_wait
	ctl session list --json >"$T/list.json" || fail "session list after the restart"
	jqe done "$T/list.json" '.sessions[0].state == "done"'
	sup_stop
	info "$(grep -c '^stored lp-' "$T/sup.out") uffds stored, $(sed -n 's/.*all pages verified in \([0-9.]*\) s/restore \1 s/p' "$T/restore.a.out")"
}

sc_restart-sigkill() {
	restart_common
}

sc_restart-remote() {
	restart_common remote
}

# The daemon is killed once the journal's first process is complete and
# the second is still filling: the restarted daemon lists the finished one
# as done and resumes the other (session_recover once failed exactly here:
# a precedence slip made growing its process array an "out of memory").
sc_restart-one-done() {
	local rpid
	dump "$T/img" --procs 2 --size 256
	# Faults only (a random reader's are a page each, ~3 s for 256 MiB): the
	# second is still filling when the first is gone. With prefetch both were
	# complete 0.2 s in, at times before the first one's exit was seen.
	SUP_DAEMON_ARGS="--no-prefetch" sup_start --fdstore-max 64
	add -D "$T/img"
	# the first exits after 16 pages; the other reads 256 MiB at random
	restore a "$T/img" --scenario random --order pstree --first-exits &
	rpid=$!
	sup_await "removed lp-1-0"
	grep -q '^removed lp-1-1' "$T/sup.out" && fail "both processes finished before the daemon could be killed"
	kill -KILL "$(cat "$T/dpid")"
	wait $rpid || fail "lp-restore across the daemon's restart: $(restore_reason a)"
	grep -q 'resumed after a restart' "$T/daemon.log" ||
		fail "the session was not resumed: $(grep -m3 -E 'error|warn' "$T/daemon.log" | tr '\n' ' ')"
	grep -q 'pid [0-9]*: resumed with' "$T/daemon.log" || fail "the second process was not resumed"
	session_wait
	ctl session list --json >"$T/list.json" || fail "session list after the restart"
	jqe done "$T/list.json" '.sessions[0].state == "done" and (.sessions[0].procs | length == 2) and
		all(.sessions[0].procs[]; .state != "live")'
	sup_stop
	info "$(sed -n 's/.*all pages verified in \([0-9.]*\) s/restore \1 s/p' "$T/restore.a.out")"
}

# A store of 2 holds a session of 2 processes, but not the children they
# fork: the first fork fails the session, which kills its processes (the
# child too, its uffd kept open until then), and none reads a wrong page.
sc_store-fork() {
	# 256 MiB each and one prefetch thread: the fork (after ~1,200 faults) must come while pages
	# are still lazy, which a 64 MiB process filled by two threads in 1 ms sections no longer is
	dump "$T/img" --procs 2 --size 256
	sup_start --fdstore-max 2
	add -D "$T/img" --prefetch-threads 1
	restore a "$T/img" --scenario fork && fail "lp-restore passed, yet the session should have failed at the fork"
	grep -q 'mismatch at' "$T/restore.a.err" && fail "a process read a wrong page: $(restore_reason a)"
	grep -q 'killed by signal 9' "$T/restore.a.err" || fail "no process was killed: $(restore_reason a)"
	session_wait
	ctl session list --json >"$T/list.json" || fail "session list failed"
	jqe failed "$T/list.json" '.sessions[0].state == "failed" and (.sessions[0].error | test("no room left in the service manager.s fd store"))'
	# the two processes and at least one forked child (found as the restore's descendants)
	[ "$(grep -c 'killed with [0-9]* pages missing' "$T/daemon.log")" -ge 3 ] ||
		fail "the forked child was not killed: $(grep -E 'killed|not found' "$T/daemon.log" | tr '\n' ' ')"
	sup_stop
	info "$(jq -r '.sessions[0].error' "$T/list.json" | cut -c1-150)"
}

# A hand-off (a VMM's guest memory) survives a daemon kill too: its uffd
# and memory file are in the fd store, its regions in the session file.
sc_restart-handoff() {
	local hpid
	sup_start --fdstore-max 8
	timeout -k 5 $STEP_TIMEOUT "$HANDOFF" -s "$SOCK" --size 512 --threads 4 --file "$T/guest.mem" \
		>"$T/h.out" 2>"$T/h.err" &
	hpid=$!
	sup_await "stored lp-1-0"
	grep -q '^stored lp-1-mem' "$T/sup.out" || fail "the memory file was not stored: $(tr '\n' ' ' <"$T/sup.out")"
	kill -KILL "$(cat "$T/dpid")"
	wait $hpid || fail "lp-handoff across the daemon's restart: $(tail -n 3 "$T/h.err" | tr '\n' ' ')"
	grep -q 'all pages verified' "$T/h.out" || fail "lp-handoff: $(cat "$T/h.out")"
	grep -q 'session 1: resumed after a restart' "$T/daemon.log" ||
		fail "the hand-off was not resumed: $(grep -m3 -E 'error|warn' "$T/daemon.log" | tr '\n' ' ')"
	grep -q '^removed lp-1-mem\|^removed lp-1-0' "$T/sup.out" || fail "the store still holds the hand-off's fds"
	sup_stop
	info "$(cut -c1-150 "$T/h.out")"
}

# unkept_common LPSUPERVISE_ARGS...: two idle processes (they read nothing
# until lp-supervise has exited), the daemon SIGKILLed mid-fill, and some
# uffds not given back: those processes are killed by the restarted daemon,
# never left to read zeros; any other fills and verifies every byte.
# Sets KILLED to how many lp-restore saw killed.
unkept_common() {
	local rpid
	dump "$T/img" --procs 2 --size 512
	sup_start "$@"
	add -D "$T/img"
	restore a "$T/img" --scenario idle --wait-pid "$SUP" &
	rpid=$!
	sup_await "$WAIT_FOR" 2
	kill -KILL "$(cat "$T/dpid")"
	sup_await "started" 2
	session_wait
	sup_stop
	wait $rpid && fail "lp-restore passed, yet a process should have been killed"
	grep -q 'mismatch at' "$T/restore.a.err" && fail "a process read a wrong page: $(restore_reason a)"
	KILLED=$(grep -c 'killed by signal 9' "$T/restore.a.err")
	grep -q 'killed: its userfaultfd was not kept' "$T/daemon.log" ||
		fail "the daemon did not say why it killed: $(grep -m3 -E 'error|warn' "$T/daemon.log" | tr '\n' ' ')"
	info "$(grep -m1 'killed: its userfaultfd' "$T/daemon.log" | cut -c1-160)"
}

# A fault the killed daemon had read from the uffd but not answered: the
# kernel does not queue it again, so the restarted daemon must wake the
# waiting thread to fault anew. No prefetch (nothing else would place that
# page) and every fault crossing a 10 ms round trip through lp-delay, so the
# single-threaded reader (8 MiB in order: ~125 faults of a 16-page window)
# is inside a fault whenever the kill comes.
sc_restart-fault-waits() {
	local rpid dport
	dump "$T/img" --procs 1 --size 8
	server_start "$T/img"
	[ -x "$DELAY" ] || fail "not built: $DELAY"
	"$DELAY" --listen 127.0.0.1:0 --connect "127.0.0.1:$PORT" --delay-ms 5 --port-file "$T/delay.port" \
		2>"$T/delay.log" &
	KILL+=($!)
	port_read "$T/delay.port" lp-delay
	dport=$PORT
	SUP_DAEMON_ARGS="--no-prefetch" sup_start --fdstore-max 8
	add -D "$T/img" --page-server --address 127.0.0.1 --port "$dport"
	restore a "$T/img" --scenario seq &
	rpid=$!
	sup_await "stored lp-1-0"
	sleep 0.3
	grep -q '^removed lp-1-0' "$T/sup.out" && fail "the process was complete before the kill"
	kill -KILL "$(cat "$T/dpid")"
	wait $rpid || fail "lp-restore across the daemon's restart: $(restore_reason a)"
	grep -q 'pid [0-9]*: resumed with' "$T/daemon.log" || fail "the process was not resumed"
	session_wait
	sup_stop
	info "$(sed -n 's/.*all pages verified in \([0-9.]*\) s/restore \1 s/p' "$T/restore.a.out")"
}

# One uffd of two not given back by the store (as systemd would if it had not
# kept it): that process is killed, the other one resumed.
sc_restart-lost-one() {
	WAIT_FOR="stored lp-" unkept_common --fdstore-max 64 --lose lp-1-1
	grep -q '^lost lp-1-1' "$T/sup.out" || fail "lp-1-1 was not in the store at the kill (finished already?)"
	[ "$KILLED" -eq 1 ] || fail "lp-restore saw $KILLED processes killed, expected 1: $(restore_reason a)"
	grep -q 'pid [0-9]*: resumed with' "$T/daemon.log" || fail "the other process was not resumed"
	grep -q '1 process(es) could not be resumed' "$T/daemon.log" || fail "the session's error does not say so"
}

# The issue's case: a store that keeps nothing, whose size the daemon cannot
# learn (no \$FDSTORE, no systemd to ask): it sends the uffds anyway, the store
# refuses them, and after a kill both processes are killed.
sc_restart-unkept() {
	WAIT_FOR="refused lp-" unkept_common
	grep -q 'could not be asked for its FileDescriptorStoreMax' "$T/daemon.log" ||
		fail "the daemon did not warn that it cannot count the store: $(head -n 3 "$T/daemon.log" | tr '\n' ' ')"
	[ "$KILLED" -eq 2 ] || fail "lp-restore saw $KILLED processes killed, expected 2: $(restore_reason a)"
}

# A store of 3: a session of 2 processes fits, a second one does not and is
# refused with a message naming the fd store; a third fits once the first has
# finished and freed its slots.
sc_store-full() {
	dump "$T/a" --procs 2 --size 16
	dump "$T/b" --procs 2 --size 16 --seed 5
	sup_start --fdstore-max 3
	add -D "$T/a"
	ctl session add -D "$T/b" >"$T/refused.out" 2>"$T/refused.err" &&
		fail "a session that does not fit the fd store was accepted"
	grep -q 'do not fit in the fd store: 2 of its 3 slots' "$T/refused.err" || fail "unclear refusal: $(cat "$T/refused.err")"
	grep -q 'session refused' "$T/daemon.log" || fail "the refusal is not in the daemon's log"
	[ -e "$T/b/lazy-pages.socket" ] && fail "the refused session left a restore socket"
	restore a "$T/a" --scenario random || fail "lp-restore: $(restore_reason a)"
	session_wait
	add -D "$T/b"
	restore b "$T/b" --scenario random || fail "lp-restore once the store had room: $(restore_reason b)"
	session_wait
	sup_stop
	info "$(cut -c1-200 "$T/refused.err")"
}

sc_bad-control() {
	start_service
	timeout -k 5 $STEP_TIMEOUT "$CTLFUZZ" -s "$SOCK" --rounds 400 >"$T/fuzz.out" 2>&1
	local rc=$?
	kill -0 "$DPID" 2>/dev/null || fail "the daemon died under lp-ctlfuzz: $(tail -n 3 "$T/daemon.log" | tr '\n' ' ')"
	[ $rc -eq 0 ] || fail "lp-ctlfuzz exit $rc: $(grep -m3 '^FAIL' "$T/fuzz.out" | tr '\n' ' ')"
	ctl status --json >"$T/status.json" || fail "status after lp-ctlfuzz failed"
	jqe status "$T/status.json" '.pid == $pid' --argjson pid "$DPID"
	# and it still serves a real session
	timeout -k 5 $STEP_TIMEOUT "$HANDOFF" -s "$SOCK" --size 8 >"$T/h.out" 2>"$T/h.err" ||
		fail "hand-off after lp-ctlfuzz: $(tail -n 2 "$T/h.err" | tr '\n' ' ')"
	stop_service
	info "$(tail -n 1 "$T/fuzz.out"); $(grep -m1 'random-frames:' "$T/fuzz.out" | sed 's/^ *//')"
}

# ---------------------------------------------------------------------------

run_one() {
	local name=$1
	T=$2
	SOCK=$T/control.sock
	cd "$T" || exit 1
	"sc_$name"
	exit 0
}

if [ "${1:-}" = "--one" ]; then
	run_one "$2" "$3"
fi

. "$ROOT/tests/suite-lib.sh"
suite_want "$@"

t_start=$(date +%s.%N)
for n in "${SUITE_WANT[@]}"; do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lp-svc.$n.XXXXXX")
	t0=$(date +%s.%N)
	missing=
	for b in "$DAEMON" "$CTL" "$DUMP" "$RESTORE" "$NOTIFY" "$HANDOFF" "$CTLFUZZ"; do
		[ -x "$b" ] || missing="$missing $b"
	done
	for b in jq setpriv; do
		command -v $b >/dev/null || missing="$missing $b"
	done
	if [ -n "$missing" ]; then
		rc=1
		echo "not built or not installed:$missing" >"$dir/reason"
	else
		timeout -k 5 "$SCENARIO_TIMEOUT" bash "${BASH_SOURCE[0]}" --one "$n" "$dir" \
			>"$dir/scenario.out" 2>&1
		rc=$?
	fi
	secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
	suite_report "$n" $rc "$dir" "$secs" "$SCENARIO_TIMEOUT" "daemon log" daemon.log 8 notifications notify.out 4
	rm -rf "$dir"
done
total=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t_start }")
echo "total ${total} s" >&2
echo "$SUITE_PASSED passed, $SUITE_FAILED failed"
[ $SUITE_FAILED -eq 0 ]
