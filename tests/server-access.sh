#!/bin/bash
# SPDX-License-Identifier: MIT
# Who may read pages from lazy-pages-server: the loopback default, --allow,
# TLS client certificates, --insecure, --serve-once, --max-restores,
# --idle-exit, and the unit's IPAddressAllow=/IPAddressDeny= fence under a
# real systemd. Every refusal is checked on the wire: a packet capture
# (tcpdump) of the server's side of the link must show that no page could
# have left it, and lp-psget, the refused client, must have received
# nothing. Every allowed path is checked with stock CRIU (`criu lazy-pages
# --page-server`, workload lp-memcheck) and with lazy-pagesd --page-server
# (lp-dump/lp-restore), every byte verified. Peers that are not loopback
# are real: network namespaces joined by a veth pair.
#
#   bash tests/server-access.sh [--list] [NAME...]
#
# Run as root. Each case runs in its own directory under ${TMPDIR:-/tmp},
# bounded by timeout(1); prints "PASS name", "FAIL name: reason" or "SKIP
# name: reason" (stock CRIU absent) and ends with "N passed, N failed".
# Binaries come from ${LP_BUILD:-build}/ (LAZY_PAGESD, LAZY_PAGES_SERVER,
# LP_DUMP, LP_RESTORE, LP_PSGET, LP_MEMCHECK override them); stock CRIU is
# $CRIU, else ../shared/criu/criu; tcpdump and certtool/gnutls-cli (from
# gnutls-bin) are needed. LP_KEEP=1 keeps the run's directory (logs,
# captures) for a look afterwards.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${LP_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DAEMON=${LAZY_PAGESD:-$BUILD/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$BUILD/lazy-pages-server}
DUMP=${LP_DUMP:-$BUILD/tests/lp-dump}
RESTORE=${LP_RESTORE:-$BUILD/tests/lp-restore}
PSGET=${LP_PSGET:-$BUILD/tests/lp-psget}
MEMCHECK=${LP_MEMCHECK:-$BUILD/tests/lp-memcheck}
WITH_SYSTEMD=${WITH_SYSTEMD:-$ROOT/../shared/tools/with-systemd.sh}
if [ -z "${CRIU:-}" ] && [ -x "$ROOT/../shared/criu/criu" ]; then
	CRIU=$ROOT/../shared/criu/criu
fi
CRIU=${CRIU:-}
CASE_TIMEOUT=150
STEP_TIMEOUT=60

# the addresses of every case's two namespaces: the server in A, clients in B
A4=10.232.0.1
B4=10.232.0.2	# the client allowed where a list allows one
C4=10.232.0.3	# another address of B: a peer that is not
A6=fd00:232::1
B6=fd00:232::2
C6=fd00:232::3
CRIU_MIB=64	# the workload stock CRIU dumps: `criu lazy-pages` is slow on large ones

CASES=(start-refusals loopback-default allow-refused allow-dual-stack tls-refused
	serve-once max-restores idle-exit unit-fence
	lazypagesd-loopback lazypagesd-allow lazypagesd-tls lazypagesd-insecure
	criu-loopback criu-allow criu-tls criu-insecure)

# ---------------------------------------------------------------------------
# run-wide material, made once: certificates and one stock CRIU dump

# cert NAME CN SIGNER [template lines...]: NAME.key and NAME.pem signed by SIGNER (self: self-signed)
cert() {
	local name=$1 cn=$2 ca=$3
	shift 3
	certtool --generate-privkey --key-type ecdsa --outfile "$PKI/$name.key" 2>/dev/null || return 1
	printf '%s\n' "cn = \"$cn\"" "expiration_days = 2" "$@" >"$PKI/$name.tmpl"
	if [ "$ca" = self ]; then
		certtool --generate-self-signed --load-privkey "$PKI/$name.key" --template "$PKI/$name.tmpl" \
			--outfile "$PKI/$name.pem" >"$PKI/$name.log" 2>&1
	else
		certtool --generate-certificate --load-privkey "$PKI/$name.key" --load-ca-certificate "$PKI/$ca.pem" \
			--load-ca-privkey "$PKI/$ca.key" --template "$PKI/$name.tmpl" --outfile "$PKI/$name.pem" \
			>"$PKI/$name.log" 2>&1
	fi
}

make_pki() {
	# a leaf carries both addresses the server listens on in these cases: CRIU's server
	# (and ours) checks the client's certificate against its own --address
	local leaf=(tls_www_server tls_www_client signing_key "ip_address = $A4" "ip_address = 127.0.0.1")
	cert ca "lazy-pages access test CA" self ca cert_signing_key crl_signing_key &&
		cert ca2 "another CA" self ca cert_signing_key crl_signing_key &&
		cert server "$A4" ca "${leaf[@]}" &&
		cert client "$A4" ca "${leaf[@]}" &&
		cert revoked "$A4" ca "${leaf[@]}" &&
		cert other-ca "$A4" ca2 "${leaf[@]}" &&
		cert self "$A4" self "${leaf[@]}" || return 1
	printf '%s\n' "crl_next_update = 2" "crl_number = 1" >"$PKI/crl.tmpl"
	certtool --generate-crl --load-ca-privkey "$PKI/ca.key" --load-ca-certificate "$PKI/ca.pem" \
		--load-certificate "$PKI/revoked.pem" --template "$PKI/crl.tmpl" --outfile "$PKI/crl.pem" \
		>"$PKI/crl.log" 2>&1
}

# the pid a CRIU dump (and every restore of it) has
criu_pid() {
	cat "$SHARED/criu.pid"
}

# make_criu_dump: lp-memcheck dumped by stock CRIU into $SHARED/criu-img (the process is gone after)
make_criu_dump() {
	local pid i
	mkdir -p "$SHARED/criu-img"
	setsid "$MEMCHECK" --size $CRIU_MIB --ready "$SHARED/criu.pid" --result "$SHARED/criu.result" \
		</dev/null >/dev/null 2>&1 &
	for i in $(seq 200); do [ -s "$SHARED/criu.pid" ] && break; sleep 0.05; done
	pid=$(criu_pid) || return 1
	timeout -k 5 $STEP_TIMEOUT "$CRIU" dump -t "$pid" -D "$SHARED/criu-img" -o dump.log -v4 ||
		{ kill -KILL "$pid" 2>/dev/null; return 1; }
	wait_pid_gone "$pid"
}

# wait_pid_gone PID: a dumped or finished process keeps its pid a while (pid 1 reaps slowly)
wait_pid_gone() {
	local i
	for i in $(seq 400); do [ -d "/proc/$1" ] || return 0; sleep 0.025; done
	return 1
}

# ---------------------------------------------------------------------------
# helpers, used inside one case (run as `server-access.sh --one NAME DIR SHARED`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

skip() {
	echo "$*" >"$T/skip"
	exit 0
}

info() {
	echo "$*" >>"$T/info"
}

BG_PIDS=()
NETNS=()
cleanup() {
	local p n
	for p in "${BG_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${BG_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	# a restored lp-memcheck left waiting (a failed case) must not hold the dump's pid
	if [ -s "$SHARED/criu.pid" ] && grep -q lp-memcheck "/proc/$(criu_pid)/cmdline" 2>/dev/null; then
		kill -KILL "$(criu_pid)" 2>/dev/null
		wait_pid_gone "$(criu_pid)"
	fi
	for n in "${NETNS[@]}"; do
		ip netns del "$n" 2>/dev/null
	done
}

tail_of() {
	grep -v -E ': GET pid|connected \(' "$1" 2>/dev/null | tail -n "${2:-2}" | tr '\n' ' ' | cut -c1-500
}

# net_up: namespaces $NSA (server: lpa0 $A4 $A6) and $NSB (clients: lpb0
# $B4 $C4 $B6 $C6) joined by a veth pair. IN_A / IN_B run a command inside.
net_up() {
	NSA=lpsa$$
	NSB=lpsb$$
	ip netns add "$NSA" || fail "ip netns add $NSA"
	NETNS+=("$NSA")
	ip netns add "$NSB" || fail "ip netns add $NSB"
	NETNS+=("$NSB")
	ip -n "$NSA" link add lpa0 type veth peer name lpb0 netns "$NSB" || fail "ip link add veth"
	ip -n "$NSA" addr add $A4/24 dev lpa0 && ip -n "$NSB" addr add $B4/24 dev lpb0 &&
		ip -n "$NSB" addr add $C4/24 dev lpb0 && ip -n "$NSA" addr add $A6/64 dev lpa0 nodad &&
		ip -n "$NSB" addr add $B6/64 dev lpb0 nodad && ip -n "$NSB" addr add $C6/64 dev lpb0 nodad ||
		fail "ip addr add"
	ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up && ip -n "$NSA" link set lpa0 up &&
		ip -n "$NSB" link set lpb0 up || fail "ip link set up"
	IN_A=(ip netns exec "$NSA")
	IN_B=(ip netns exec "$NSB")
}
IN_A=()
IN_B=()

# start_server [ARGS...]: lazy-pages-server in $NSA (if up) on port 0, ready
# once its status fd says so, logging at -v3 to $T/server.log. Sets SPID, PORT.
start_server() {
	rm -f "$T/server.ready" "$T/server.port"
	mkfifo "$T/server.ready" "$T/server.port" || fail "mkfifo"
	timeout -k 5 $CASE_TIMEOUT "${IN_A[@]}" "$SERVER" -D "${SERVE_DIR:-$T/img}" --port 0 \
		--port-file "$T/server.port" --status-fd 3 -v3 "$@" \
		3>"$T/server.ready" >"$T/server.out" 2>"$T/server.log" &
	SPID=$!
	BG_PIDS+=("$SPID")
	head -c1 "$T/server.ready" >"$T/server.byte"
	[ -s "$T/server.byte" ] || fail "lazy-pages-server $* exited before it was ready: $(tail_of "$T/server.log" 3)"
	PORT=$(timeout 20 head -n1 "$T/server.port")
	[[ "$PORT" =~ ^[0-9]+$ ]] || fail "lazy-pages-server: no port"
}

# stop_server: SIGTERM; it must stop with 0, whatever its clients did
stop_server() {
	local rc
	kill -TERM "$SPID" 2>/dev/null
	wait "$SPID"
	rc=$?
	[ $rc -eq 0 ] || fail "lazy-pages-server exit $rc: $(tail_of "$T/server.log")"
}

# server_exits_by_itself WHY: it stops on its own within 10 s with 0, its log saying WHY
server_exits_by_itself() {
	local rc i
	for i in $(seq 400); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.025; done
	kill -0 "$SPID" 2>/dev/null && fail "lazy-pages-server still runs; expected it to stop: $1"
	wait "$SPID"
	rc=$?
	[ $rc -eq 0 ] || fail "lazy-pages-server exit $rc: $(tail_of "$T/server.log")"
	server_says "$1"
}

server_says() {
	grep -q -E -- "$1" "$T/server.log" || fail "server log lacks '$1': $(tail_of "$T/server.log" 3)"
}

# images for lp-psget and lp-restore: one small process
small_images() {
	timeout -k 5 $STEP_TIMEOUT "$DUMP" -D "$T/img" --size "${1:-4}" >"$T/dump.out" 2>"$T/dump.err" ||
		fail "lp-dump: $(tail_of "$T/dump.err")"
}

# psget NAME [NS-COMMAND...] -- ARGS: lp-psget; its line in $T/psget.NAME; sets PG
psget() {
	local name=$1 ns=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do ns+=("$1"); shift; done
	shift
	timeout -k 5 $STEP_TIMEOUT "${ns[@]}" "$PSGET" --images "$T/img" "$@" >"$T/psget.$name" 2>"$T/psget.$name.err" ||
		fail "lp-psget $name: exit $?: $(cat "$T/psget.$name.err")"
	PG=$(cat "$T/psget.$name")
}

# pg FIELD: a field of the last lp-psget line
pg() {
	echo "$PG" | sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"
}

# got_pages NAME: the last lp-psget got the page bytes, as in the images
got_pages() {
	[ "$(pg match)" = 1 ] || fail "$1: expected the pages, got: $PG"
}

# got_nothing NAME: the last lp-psget connected and received not one byte
got_nothing() {
	[ "$(pg connect)" = ok ] || fail "$1: expected a connection that is closed unanswered, got: $PG"
	[ "$(pg received)" = 0 ] || fail "$1: the refused client received bytes: $PG"
	case "$(pg end)" in eof | reset) ;; *) fail "$1: the server did not close the connection: $PG" ;; esac
}

# cap_start [NS-COMMAND...]: tcpdump on the server's side (lpa0 in $NSA, else lo) of port $PORT
cap_start() {
	local i dev=lo
	[ ${#IN_A[@]} -eq 0 ] || dev=lpa0
	CAP=$T/cap.$((++NCAP))
	"${IN_A[@]}" tcpdump -i $dev -nn -U --immediate-mode -Z root -w "$CAP" "tcp port $PORT" 2>"$CAP.log" &
	TDPID=$!
	BG_PIDS+=("$TDPID")
	for i in $(seq 200); do grep -q 'listening on' "$CAP.log" && return 0; sleep 0.025; done
	fail "tcpdump did not start: $(cat "$CAP.log")"
}
NCAP=0

cap_stop() {
	kill -INT "$TDPID" 2>/dev/null
	wait "$TDPID"
}

# wire FILTER: packets and TCP payload bytes in the capture matching FILTER (tcpdump syntax): "P B"
wire() {
	tcpdump -nn -r "$CAP" "$1" 2>/dev/null |
		awk '{ n++; for (i = 1; i < NF; i++) if ($i == "length") b += $(i + 1) + 0 } END { print n + 0, b + 0 }'
}

# wire_nothing_to PEER: on the wire, the server (port $PORT) sent PEER packets (so
# the capture saw the connection) but not one byte of payload
wire_nothing_to() {
	local w
	w=$(wire "src port $PORT and dst host $1")
	[ "${w% *}" -gt 0 ] || fail "the capture saw no packet from the server to $1 (the check would prove nothing)"
	[ "${w#* }" = 0 ] || fail "on the wire: the server sent ${w#* } bytes to the refused peer $1"
	w=$(wire "dst port $PORT and src host $1")
	[ "${w% *}" -gt 0 ] || fail "the capture saw no packet from $1"
}

# wire_less_than_a_page PEER: a TLS refusal sends a handshake and an alert, never a page
wire_less_than_a_page() {
	local w
	w=$(wire "src port $PORT and dst host $1")
	[ "${w% *}" -gt 0 ] || fail "the capture saw no packet from the server to $1"
	[ "${w#* }" -lt 4096 ] || fail "on the wire: the refused TLS peer $1 got ${w#* } bytes, a page's worth"
	WIRE_BYTES=${w#* }
}

# wire_pages_to PEER PAGES: the allowed peer got at least PAGES pages' worth (the capture counts)
wire_pages_to() {
	local w
	w=$(wire "src port $PORT and dst host $1")
	[ "${w#* }" -ge $(($2 * 4096)) ] || fail "on the wire: $1 got ${w#* } bytes, less than $2 pages"
}

# tls_get NAME CERT|none [gnutls-cli args]: a GET over TLS from $NSB by gnutls-cli; lp-psget reads the answer
tls_get() {
	local name=$1 c=$2 certs=()
	shift 2
	[ "$c" = none ] || certs=(--x509certfile "$PKI/$c.pem" --x509keyfile "$PKI/$c.key")
	"$PSGET" --images "$T/img" --emit >"$T/req.bin" || fail "lp-psget --emit"
	timeout -k 5 20 "${IN_B[@]}" gnutls-cli --logfile="$T/tls.$name.log" --x509cafile "$PKI/ca.pem" \
		"${certs[@]}" -p "$PORT" "$A4" "$@" <"$T/req.bin" >"$T/tls.$name.out" 2>>"$T/tls.$name.log"
	PG=$("$PSGET" --images "$T/img" --parse "$T/tls.$name.out")
	echo "$PG" >"$T/psget.$name"
}

# tls_refused NAME CERT SERVER-SAYS: that client's TLS connection is refused, it gets
# no application data, and on the wire less than a page went to it
tls_refused() {
	cap_start
	tls_get "$1" "$2"
	cap_stop
	[ "$(pg received)" = 0 ] || fail "$1: gnutls-cli received $(pg received) bytes of data: $PG"
	wire_less_than_a_page $B4
	server_says "$3"
	info "$1: refused, $WIRE_BYTES bytes of handshake on the wire, 0 of data"
}

# view: a copy of $1 for a client, every pages-*.img sparse (zeros): pages must come from the server
view() {
	local f b
	mkdir -p "$2"
	for f in "$1"/*; do
		b=${f##*/}
		case "$b" in
		pages-*.img) truncate -s "$(stat -c %s "$f")" "$2/$b" ;;
		lp-expect-* | *.log) ;;
		*) cp "$f" "$2/$b" ;;
		esac
	done
}

# lazypagesd_restore ADDR [ARGS...]: lp-dump, then lazy-pagesd --page-server
# ADDR:$PORT (in $NSB if up) on a sparse view and lp-restore checking
# every byte; the daemon must exit 0 with the pages from the server
lazypagesd_restore() {
	local addr=$1 drc rrc rb
	shift
	view "$T/img" "$T/view"
	mkdir -p "$T/work"
	mkfifo "$T/ready" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "${IN_B[@]}" "$DAEMON" -D "$T/view" -W "$T/work" --status-fd 3 -v3 \
		--page-server --address "$addr" --port "$PORT" "$@" \
		3>"$T/ready" >"$T/daemon.out" 2>"$T/daemon.log" &
	local dpid=$!
	BG_PIDS+=("$dpid")
	head -c1 "$T/ready" >"$T/ready.byte"
	[ -s "$T/ready.byte" ] || fail "lazy-pagesd did not start: $(tail_of "$T/daemon.log")"
	timeout -k 5 $STEP_TIMEOUT "${IN_B[@]}" "$RESTORE" -D "$T/img" -W "$T/work" --scenario random \
		--timeout $((STEP_TIMEOUT - 10)) --wait-pid "$dpid" >"$T/restore.out" 2>"$T/restore.err"
	rrc=$?
	wait "$dpid"
	drc=$?
	[ $rrc -eq 0 ] || fail "lp-restore exit $rrc: $(tail_of "$T/restore.err" 3)"
	[ $drc -eq 0 ] || fail "lazy-pagesd exit $drc: $(tail_of "$T/daemon.log")"
	RB=$(sed -n 's/.* remote_bytes=\([0-9]*\).*/\1/p' "$T/daemon.out")
	[ -n "$RB" ] && [ "$RB" -gt 0 ] || fail "no remote_bytes in the summary: $(head -c 300 "$T/daemon.out")"
	info "lazy-pagesd via $addr: $(sed -n 's/.*all pages verified/all pages verified/p' "$T/restore.out") remote_bytes=$RB"
}

# from PEER: after stop_server, the server's log accounts for every byte lazy-pagesd received
all_from() {
	[ $(($(pages_sent "$1") * 4096)) -ge "$RB" ] ||
		fail "the server sent $(pages_sent "$1") pages to $1; lazy-pagesd received $RB bytes"
}

# criu_restore ADDR [ARGS...]: `criu lazy-pages --page-server` ADDR:$PORT
# (in $NSB if up) on a sparse view of the shared CRIU dump, `criu restore
# --lazy-pages`, then lp-memcheck, the restored copy, checks every page
criu_restore() {
	local addr=$1 pid lrc res i
	shift
	[ -n "$CRIU" ] || skip "no CRIU"
	[ -d "$SHARED/criu-img" ] || fail "no CRIU dump (the run could not make it: see its first FAIL)"
	pid=$(criu_pid)
	wait_pid_gone "$pid" || fail "pid $pid (the dump's) is still taken"
	view "$SHARED/criu-img" "$T/cview"
	mkdir -p "$T/cwork"
	mkfifo "$T/lazy.ready" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "${IN_B[@]}" "$CRIU" lazy-pages --page-server --address "$addr" --port "$PORT" \
		-D "$T/cview" -W "$T/cwork" -o "$T/lazy.log" -v4 --status-fd 3 "$@" 3>"$T/lazy.ready" \
		>"$T/lazy.out" 2>&1 &
	local lpid=$!
	BG_PIDS+=("$lpid")
	head -c1 "$T/lazy.ready" >"$T/lazy.byte"
	[ -s "$T/lazy.byte" ] || fail "criu lazy-pages did not start: $(tail_of "$T/lazy.log" 3)"
	rm -f "$SHARED/criu.result"
	timeout -k 5 $STEP_TIMEOUT "${IN_B[@]}" "$CRIU" restore --lazy-pages -D "$SHARED/criu-img" -W "$T/cwork" \
		-d -o "$T/restore.log" -v4 >"$T/restore.out" 2>&1 ||
		fail "criu restore: exit $?: $(grep -m3 Error "$T/restore.log" | tr '\n' ' ')"
	kill -USR1 "$pid" || fail "no restored process $pid"
	for i in $(seq 1200); do [ -s "$SHARED/criu.result" ] && break; sleep 0.025; done
	res=$(cat "$SHARED/criu.result" 2>/dev/null)
	wait "$lpid"
	lrc=$?
	wait_pid_gone "$pid"
	[ -n "$res" ] || fail "the restored process wrote no result in 30 s (criu lazy-pages exit $lrc: $(grep -m2 Error "$T/lazy.log" | tr '\n' ' '))"
	case "$res" in
	*"restored=1 "*" bad=0 "*) ;;
	*) fail "restored process: $res" ;;
	esac
	[ $lrc -eq 0 ] || fail "criu lazy-pages exit $lrc: $(grep -m3 Error "$T/lazy.log" | tr '\n' ' ')"
	info "criu via $addr: $res"
}

# pages_sent PEER-PATTERN: pages the server's log says it sent to peers matching the pattern
pages_sent() {
	grep -E -- "$1.*disconnected after" "$T/server.log" |
		sed -n 's/.*(\([0-9]*\) pages sent.*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}

# ---------------------------------------------------------------------------
# cases

# refusals at start: a non-loopback address without --tls, --allow or
# --insecure; an --allow list no loopback client could match on the loopback
# default; bad --allow entries and limits. Each exits 1 at once with a
# message saying why, and never listens.
tc_start-refusals() {
	local rc args
	small_images
	refuse_start() {
		local want=$1
		shift
		rm -f "$T/port"
		timeout 10 "$SERVER" -D "$T/img" --port 0 --port-file "$T/port" "$@" 2>"$T/start.log" >/dev/null
		rc=$?
		[ $rc -eq 1 ] || fail "lazy-pages-server $*: exit $rc, expected 1"
		grep -q -E -- "$want" "$T/start.log" || fail "lazy-pages-server $*: '$(cat "$T/start.log")' lacks '$want'"
		[ ! -e "$T/port" ] || fail "lazy-pages-server $*: it listened (wrote a port)"
	}
	for args in "--address 0.0.0.0" "--address ::" "--address 10.232.0.1" "--address ::ffff:0.0.0.0"; do
		# shellcheck disable=SC2086
		refuse_start "refusing to listen on .* without --tls.*--allow ADDR.*--insecure" $args
	done
	refuse_start "no --allow entry matches a loopback client" --allow 10.0.0.0/8
	refuse_start "no --allow entry matches a loopback client" --address ::1 --allow 127.0.0.1
	refuse_start "--allow '10.0.0.1/8': bits set after the prefix \(the network is 10.0.0.0/8" \
		--address 0.0.0.0 --allow 10.0.0.1/8
	refuse_start "--allow 'host.example': not a numeric" --address 0.0.0.0 --allow host.example
	refuse_start "--allow 'fd00::/129': the prefix length after '/' must be 0 to 128" --allow fd00::/129
	refuse_start "--serve-once is --max-restores 1" --serve-once --max-restores 3
	refuse_start "--max-restores: '0' is not a number from 1" --max-restores 0
	refuse_start "--idle-exit: 'soon' is not a number from 1" --idle-exit soon
	refuse_start "--idle-exit: '-1' is not a number from 1" --idle-exit -1
	args=()
	for rc in $(seq 257); do args+=(--allow "10.1.$((rc / 256)).$((rc % 256))"); done
	refuse_start "--allow: more than 256 entries" --address 0.0.0.0 "${args[@]}"
	# and what is accepted: the same address with each way of meaning it
	for args in "--address 0.0.0.0 --allow 10.0.0.0/8" "--address :: --insecure" "--allow 127.0.0.2 --allow ::1"; do
		start_server $args --idle-exit 1
		# shellcheck disable=SC2086
		server_exits_by_itself "no client for 1 s"
	done
}

# a fresh server (no --address, no --tls) listens on 127.0.0.1 only: a
# loopback client gets pages, a peer on the veth link cannot connect at all
tc_loopback-default() {
	small_images
	net_up
	start_server
	server_says "serving .* on 127\.0\.0\.1 port $PORT"
	"${IN_A[@]}" ss -Htln "sport = :$PORT" >"$T/ss" || fail "ss"
	[ "$(awk '{print $4}' "$T/ss")" = "127.0.0.1:$PORT" ] || fail "listening sockets: $(cat "$T/ss")"
	psget lo "${IN_A[@]}" -- --connect 127.0.0.1:$PORT --pages 4
	got_pages "loopback client"
	cap_start
	psget remote "${IN_B[@]}" -- --connect $A4:$PORT --pages 4 --timeout 3
	cap_stop
	[ "$(pg connect)" = refused ] || fail "a peer on the link reached a server that should listen on loopback only: $PG"
	wire_nothing_to $B4
	stop_server
}

# --allow: the allowed peer gets pages; another address of the same host
# gets a connection closed before a byte is read, nothing on the wire, and
# one log line however often it tries; the refusals are counted at exit
tc_allow-refused() {
	local n
	small_images
	net_up
	start_server --address $A4 --allow $B4
	cap_start
	psget allowed "${IN_B[@]}" -- --connect $A4:$PORT --bind $B4 --pages 4
	got_pages "allowed peer $B4"
	for n in 1 2 3; do
		psget refused$n "${IN_B[@]}" -- --connect $A4:$PORT --bind $C4 --pages 4
		got_nothing "refused peer $C4 (try $n)"
	done
	cap_stop
	wire_nothing_to $C4
	wire_pages_to $B4 4
	n=$(grep -c "refused: not on the --allow list" "$T/server.log")
	[ "$n" = 1 ] || fail "expected one log line for three refusals of $C4, got $n: $(tail_of "$T/server.log" 4)"
	server_says "^lazy-pages-server.*$C4:[0-9]+: refused: not on the --allow list; closed unread"
	grep -q "$C4.*connected" "$T/server.log" && fail "the refused peer was taken as a client"
	stop_server
	server_says "refused 3 connections from 1 address not on the --allow list"
	info "3 refusals of $C4: 1 log line, 0 bytes on the wire"
}

# a dual-stack listener (::): IPv4 peers arrive as ::ffff:a.b.c.d and match
# IPv4 entries; IPv6 entries match IPv6 peers; the others are refused
tc_allow-dual-stack() {
	small_images
	net_up
	start_server --address :: --allow $B4 --allow $B6/128
	cap_start
	psget v4 "${IN_B[@]}" -- --connect $A4:$PORT --bind $B4
	got_pages "IPv4 peer $B4 on a dual-stack listener"
	psget v6 "${IN_B[@]}" -- --connect "[$A6]:$PORT" --bind $B6
	got_pages "IPv6 peer $B6"
	psget v4-refused "${IN_B[@]}" -- --connect $A4:$PORT --bind $C4
	got_nothing "IPv4 peer $C4"
	psget v6-refused "${IN_B[@]}" -- --connect "[$A6]:$PORT" --bind $C6
	got_nothing "IPv6 peer $C6"
	cap_stop
	wire_nothing_to $C4
	wire_nothing_to $C6
	server_says "\[::ffff:$B4\]:[0-9]+: connected"
	server_says "\[::ffff:$C4\]:[0-9]+: refused"
	server_says "\[$C6\]:[0-9]+: refused"
	stop_server
	server_says "refused 2 connections from 2 addresses"
}

# --tls: a client must show a certificate from --tls-cacert, not revoked.
# gnutls-cli (not our TLS code) is the client: without a certificate, with a
# self-signed one, one from another CA, a revoked one; and a client that
# sends its GET in the clear. None gets a byte of data; on the wire less
# than a page went to it. A valid certificate gets the pages (the control).
tc_tls-refused() {
	small_images
	net_up
	start_server --address $A4 --tls --tls-cacert "$PKI/ca.pem" --tls-cacrl "$PKI/crl.pem" \
		--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
	cap_start
	tls_get valid client
	cap_stop
	got_pages "TLS client with a valid certificate"
	wire_pages_to $B4 1
	tls_refused no-cert none "TLS handshake failed: the client sent no certificate"
	tls_refused self-signed self "certificate of the client refused: .*issuer is unknown"
	tls_refused other-ca other-ca "certificate of the client refused: .*issuer is unknown"
	tls_refused revoked revoked "certificate of the client refused: .*revoked"
	cap_start
	psget plain "${IN_B[@]}" -- --connect $A4:$PORT --pages 4
	cap_stop
	[ "$(pg reply)" = 0 ] || fail "a client without TLS got a reply: $PG"
	wire_less_than_a_page $B4
	server_says "TLS handshake failed: .*is --tls on at both ends"
	stop_server
	[ "$(pages_sent "$B4")" = 1 ] || fail "the server sent $(pages_sent "$B4") pages in all; expected 1 (the valid client's)"
}

# --serve-once: connections that end without CLOSE, and lazy-pagesd's second
# connection (hello), are not a restore; the first lazy-pagesd restore that
# ends with CLOSE is, and the server exits 0; a new client is refused
tc_serve-once() {
	small_images 16
	start_server --serve-once
	psget no-close -- --connect 127.0.0.1:$PORT --no-close
	got_pages "client without CLOSE"
	psget hello -- --connect 127.0.0.1:$PORT --hello
	got_pages "second connection with hello"
	kill -0 "$SPID" 2>/dev/null || fail "the server stopped before any restore was complete: $(tail_of "$T/server.log")"
	lazypagesd_restore 127.0.0.1
	server_exits_by_itself "restore complete \(1 of --max-restores 1\)"
	server_says "the last client is done: stopping"
	psget after -- --connect 127.0.0.1:$PORT
	[ "$(pg connect)" = refused ] || fail "a client after the restore: $PG"
}

# --max-restores 2: a client connected before the limit is served to its end
# after it; a new one is refused; the server exits once the held one is done
tc_max-restores() {
	local held
	small_images
	start_server --max-restores 2
	"$PSGET" --images "$T/img" --connect 127.0.0.1:$PORT --hold 3 >"$T/psget.held" 2>&1 &
	held=$!
	BG_PIDS+=("$held")
	psget one -- --connect 127.0.0.1:$PORT
	got_pages "restore 1"
	psget two -- --connect 127.0.0.1:$PORT
	got_pages "restore 2"
	for i in $(seq 200); do grep -q "no more connections accepted" "$T/server.log" && break; sleep 0.025; done
	server_says "2 restores complete \(--max-restores 2\): no more connections accepted; serving the clients still connected"
	psget three -- --connect 127.0.0.1:$PORT
	[ "$(pg connect)" = refused ] || fail "a third client after --max-restores 2: $PG"
	wait "$held"
	PG=$(cat "$T/psget.held")
	got_pages "the client connected before the limit"
	server_exits_by_itself "the last client is done: stopping"
}

# --idle-exit 2: with no client it stops after 2 s; a client connected for
# longer keeps it; refused peers do not count as clients
tc_idle-exit() {
	local t0 t1 held
	small_images
	t0=$(date +%s%N)
	start_server --idle-exit 2
	server_exits_by_itself "no client for 2 s \(--idle-exit\): stopping"
	t1=$(date +%s%N)
	[ $(((t1 - t0) / 1000000)) -ge 2000 ] || fail "stopped after $(((t1 - t0) / 1000000)) ms, before 2 s"
	info "no client: stopped after $(((t1 - t0) / 1000000)) ms"

	start_server --idle-exit 2
	"$PSGET" --images "$T/img" --connect 127.0.0.1:$PORT --hold 4 --timeout 10 >"$T/psget.held" 2>&1 &
	held=$!
	BG_PIDS+=("$held")
	wait "$held"
	PG=$(cat "$T/psget.held")
	got_pages "a client connected for 4 s on a server with --idle-exit 2"
	t0=$(date +%s%N)
	server_exits_by_itself "no client for 2 s"
	t1=$(date +%s%N)
	info "client held 4 s: stopped $(((t1 - t0) / 1000000)) ms after it left"

	# only 127.0.0.2 may connect: 127.0.0.1 is refused again and again, and does not keep it up
	t0=$(date +%s%N)
	start_server --allow 127.0.0.2 --idle-exit 2
	( while kill -0 "$SPID" 2>/dev/null; do
		"$PSGET" --images "$T/img" --connect 127.0.0.1:$PORT --timeout 1 >>"$T/psget.refused" 2>&1
		sleep 0.2
	done ) &
	BG_PIDS+=($!)
	server_exits_by_itself "no client for 2 s"
	t1=$(date +%s%N)
	[ $(((t1 - t0) / 1000000)) -lt 5000 ] || fail "refused peers kept it up for $(((t1 - t0) / 1000000)) ms"
	grep -q "received=0" "$T/psget.refused" || fail "no refused probe: $(head -n 2 "$T/psget.refused")"
	grep -v -q "received=0\|connect=refused" "$T/psget.refused" && fail "a refused peer got bytes: $(cat "$T/psget.refused")"
	server_says "127.0.0.1:[0-9]+: refused"
	info "refused peers every 0.2 s: stopped after $(((t1 - t0) / 1000000)) ms"
}

# lazy-pages-server.service under a real systemd (252): the shipped
# /etc/default file serves loopback only; with the server itself opened up
# (--address 0.0.0.0 --insecure) the unit's IPAddressDeny=any /
# IPAddressAllow=localhost still drops a non-loopback peer before the TCP
# handshake; a drop-in allowing that peer lets it through (the control);
# a non-loopback --address alone keeps the unit from starting
tc_unit-fence() {
	[ -x "$WITH_SYSTEMD" ] || fail "no $WITH_SYSTEMD"
	small_images
	cat >"$T/in.sh" <<'EOS'
set -u
cd "$ROOT"
out() { echo "$*"; }
die() { echo "FAIL $*"; journalctl -u lazy-pages-server --no-pager | tail -n 5 | sed 's/^/  /'; exit 1; }
PREFIX=/usr/local sh systemd/install.sh >/srv/lpt/install.log 2>&1 || die "install.sh"
sed -i -e 's|^LP_SERVER_IMAGES=.*|LP_SERVER_IMAGES=/srv/lpt/img|' /etc/default/lazy-pages-server
ip link add v0 type veth peer name v1 && ip addr add 10.233.0.1/24 dev v0 && ip link set v0 up &&
	ip link set v1 up && ip link set lo up || die "veth"
started() {
	local i
	for i in $(seq 200); do
		[ -n "$(ss -Htln 'sport = :27000')" ] && return 0
		systemctl is-failed -q lazy-pages-server && return 1
		sleep 0.05
	done
	return 1
}
get() { "$PSGET" --images /srv/lpt/img --timeout 3 "$@"; }

# 1. the shipped configuration
systemctl start lazy-pages-server && started || die "shipped configuration: did not start"
out "listening: $(ss -Htln 'sport = :27000' | awk '{print $4}' | tr '\n' ' ')"
out "loopback: $(get --connect 127.0.0.1:27000)"
out "allow: $(systemctl show lazy-pages-server -p IPAddressAllow --value)"
out "deny: $(systemctl show lazy-pages-server -p IPAddressDeny --value)"
out "no-firewall: $(journalctl -b 0 --no-pager | grep -c 'does not support BPF/cgroup firewalling')"
systemctl stop lazy-pages-server

# 2. the server opened up, the unit's fence still closed
sed -i -e 's|^LP_SERVER_OPTS=.*|LP_SERVER_OPTS="--address 0.0.0.0 --insecure -v3"|' /etc/default/lazy-pages-server
systemctl start lazy-pages-server && started || die "--insecure: did not start"
out "open-loopback: $(get --connect 127.0.0.1:27000)"
out "open-veth: $(get --connect 10.233.0.1:27000 --bind 10.233.0.1)"
out "open-veth-log: $(journalctl -u lazy-pages-server --no-pager | grep -c '10.233.0.1:[0-9]*: connected')"
systemctl stop lazy-pages-server

# 3. the control: the same peer allowed by a drop-in
mkdir -p /etc/systemd/system/lazy-pages-server.service.d
printf '[Service]\nIPAddressAllow=10.233.0.0/24\n' >/etc/systemd/system/lazy-pages-server.service.d/allow.conf
systemctl daemon-reload
systemctl start lazy-pages-server && started || die "drop-in: did not start"
out "dropin-veth: $(get --connect 10.233.0.1:27000 --bind 10.233.0.1)"
systemctl stop lazy-pages-server

# 4. a non-loopback address and nothing else: the unit fails, saying why
sed -i -e 's|^LP_SERVER_OPTS=.*|LP_SERVER_OPTS="--address 0.0.0.0"|' /etc/default/lazy-pages-server
systemctl start lazy-pages-server
for i in $(seq 200); do
	journalctl -u lazy-pages-server --no-pager | grep -q 'refusing to listen on 0.0.0.0 without --tls' && break
	sleep 0.05
done
sleep 0.2
out "bare-address: exit=$(systemctl show lazy-pages-server -p ExecMainStatus --value) listening=$(ss -Htln 'sport = :27000' | wc -l) said=$(journalctl -u lazy-pages-server --no-pager | grep -c 'refusing to listen on 0.0.0.0 without --tls')"
EOS
	# from the worktree, which the container binds at the same path (binaries, install.sh).
	# SYSTEMD_SECCOMP=0: nspawn's seccomp filter refuses bpf() to the container's systemd,
	# which then cannot install any IP firewall ("the local system does not support
	# BPF/cgroup firewalling"); on a host, systemd has no such filter over it
	(cd "$ROOT" && SYSTEMD_SECCOMP=0 timeout -k 10 $((CASE_TIMEOUT - 20)) "$WITH_SYSTEMD" -b "$T:/srv/lpt" -- \
		env ROOT="$ROOT" PSGET="$PSGET" bash /srv/lpt/in.sh) >"$T/unit.out" 2>"$T/unit.err"
	grep -q '^FAIL' "$T/unit.out" && fail "$(grep -A5 '^FAIL' "$T/unit.out" | tr '\n' ' ')"
	unit() { sed -n "s/^$1: //p" "$T/unit.out"; }
	words() { tr ' ' '\n' | sort | tr '\n' ' '; }
	[ "$(unit listening)" = "127.0.0.1:27000 " ] ||
		fail "the shipped configuration listens on '$(unit listening)' (stderr: $(tail -n 3 "$T/unit.err" | tr '\n' ' '))"
	PG=$(unit loopback) && got_pages "loopback client of the shipped unit"
	[ "$(unit allow | words)" = "127.0.0.0/8 ::1/128 " ] || fail "IPAddressAllow=$(unit allow)"
	[ "$(unit deny | words)" = "0.0.0.0/0 ::/0 " ] || fail "IPAddressDeny=$(unit deny)"
	PG=$(unit open-loopback) && got_pages "loopback client with --insecure"
	[ "$(unit no-firewall)" = 0 ] ||
		fail "systemd in the container says it cannot install IP firewalls (BPF/cgroup firewalling)"
	PG=$(unit open-veth)
	[ "$(pg connect)" = timeout ] || fail "a peer outside IPAddressAllow= reached the server: $PG"
	[ "$(unit open-veth-log)" = 0 ] || fail "the server saw a connection from the peer the unit should drop"
	PG=$(unit dropin-veth) && got_pages "the peer allowed by a drop-in (the control)"
	case "$(unit bare-address)" in
	"exit=1 listening=0 said="[1-9]*) ;;
	*) fail "a bare non-loopback --address in the unit: $(unit bare-address)" ;;
	esac
}

# the allowed paths, for lazy-pagesd and for stock CRIU's client
tc_lazypagesd-loopback() {
	small_images 64
	start_server
	lazypagesd_restore 127.0.0.1
	stop_server
}

tc_lazypagesd-allow() {
	small_images 64
	net_up
	start_server --address $A4 --allow $B4
	lazypagesd_restore $A4
	stop_server
	all_from $B4
}

tc_lazypagesd-tls() {
	small_images 64
	net_up
	start_server --address $A4 --tls --tls-cacert "$PKI/ca.pem" --tls-cacrl "$PKI/crl.pem" \
		--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
	lazypagesd_restore $A4 --tls --tls-cacert "$PKI/ca.pem" --tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key"
	stop_server
	server_says "$B4:[0-9]+: TLS session, client certificate accepted"
	all_from $B4
}

tc_lazypagesd-insecure() {
	small_images 64
	net_up
	start_server --address $A4 --insecure
	server_says "--insecure: the pages of .* go unencrypted"
	lazypagesd_restore $A4
	stop_server
	all_from $B4
}

# CRIU's page server serves one client and exits: --serve-once does that for `criu lazy-pages`
tc_criu-loopback() {
	[ -n "$CRIU" ] || skip "no CRIU"
	SERVE_DIR=$SHARED/criu-img
	start_server --serve-once
	criu_restore 127.0.0.1
	server_exits_by_itself "the last client is done: stopping"
	[ "$(pages_sent 127.0.0.1)" -ge $((CRIU_MIB * 256)) ] ||
		fail "the server sent $(pages_sent 127.0.0.1) pages, less than the workload's $((CRIU_MIB * 256))"
}

tc_criu-allow() {
	[ -n "$CRIU" ] || skip "no CRIU"
	net_up
	SERVE_DIR=$SHARED/criu-img
	start_server --address $A4 --allow $B4
	criu_restore $A4
	stop_server
	[ "$(pages_sent "$B4")" -ge $((CRIU_MIB * 256)) ] || fail "the server sent $(pages_sent "$B4") pages to $B4"
}

tc_criu-tls() {
	[ -n "$CRIU" ] || skip "no CRIU"
	net_up
	SERVE_DIR=$SHARED/criu-img
	start_server --address $A4 --tls --tls-cacert "$PKI/ca.pem" --tls-cacrl "$PKI/crl.pem" \
		--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
	criu_restore $A4 --tls --tls-cacert "$PKI/ca.pem" --tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key"
	stop_server
	server_says "$B4:[0-9]+: TLS session, client certificate accepted"
	[ "$(pages_sent "$B4")" -ge $((CRIU_MIB * 256)) ] || fail "the server sent $(pages_sent "$B4") pages to $B4"
}

tc_criu-insecure() {
	[ -n "$CRIU" ] || skip "no CRIU"
	net_up
	SERVE_DIR=$SHARED/criu-img
	start_server --address $A4 --insecure
	criu_restore $A4
	stop_server
	[ "$(pages_sent "$B4")" -ge $((CRIU_MIB * 256)) ] || fail "the server sent $(pages_sent "$B4") pages to $B4"
}

# ---------------------------------------------------------------------------
# runner

if [ "${1:-}" = "--one" ]; then
	T=$3
	SHARED=$4
	PKI=$SHARED/pki
	cd "$T" || exit 1
	trap cleanup EXIT
	trap 'exit 143' TERM
	"tc_$2"
	exit 0
fi

if [ "${1:-}" = "--list" ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi

runs=("$@")
[ $# -gt 0 ] || runs=("${CASES[@]}")

pass=0
failed=0
TOP=$(mktemp -d "${TMPDIR:-/tmp}/lp-access.XXXXXX") || exit 1
[ -n "${LP_KEEP:-}" ] || trap 'rm -rf "$TOP"' EXIT
mkdir -p "$TOP/pki"
PKI=$TOP/pki
SHARED=$TOP

for tool in tcpdump certtool gnutls-cli ss; do
	if ! command -v $tool >/dev/null; then
		echo "FAIL server-access: no $tool (apt-get install tcpdump gnutls-bin iproute2)"
		echo "0 passed, 1 failed"
		exit 1
	fi
done
if ! make_pki; then
	echo "FAIL server-access: certtool could not make the certificates: $(cat "$PKI"/*.log | tail -n 3 | tr '\n' ' ')"
	echo "0 passed, 1 failed"
	exit 1
fi
need_criu=0
for r in "${runs[@]}"; do case "$r" in criu-*) need_criu=1 ;; esac; done
if [ $need_criu = 1 ] && [ -n "$CRIU" ]; then
	if ! make_criu_dump >"$TOP/criu-dump.out" 2>&1; then
		echo "FAIL criu-dump: stock CRIU could not dump the workload: $(grep -m3 Error "$TOP/criu-img/dump.log" 2>/dev/null | tr '\n' ' ') $(tail -n 2 "$TOP/criu-dump.out")"
		failed=$((failed + 1))
	fi
fi

for n in "${runs[@]}"; do
	if ! declare -F "tc_$n" >/dev/null; then
		echo "FAIL $n: no such case"
		failed=$((failed + 1))
		continue
	fi
	dir=$TOP/$n
	mkdir -p "$dir"
	t0=$(date +%s%N)
	timeout -k 5 $CASE_TIMEOUT bash "${BASH_SOURCE[0]}" --one "$n" "$dir" "$TOP" >"$dir/stdout" 2>&1
	rc=$?
	secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	if [ $rc -eq 0 ] && [ -s "$dir/skip" ]; then
		echo "SKIP $n: $(cat "$dir/skip")"
	elif [ $rc -eq 0 ]; then
		echo "PASS $n ($secs s)"
		[ -s "$dir/info" ] && sed 's/^/    /' "$dir/info"
		pass=$((pass + 1))
	else
		reason=$(cat "$dir/reason" 2>/dev/null)
		[ -n "$reason" ] || reason="exit $rc$([ $rc -eq 124 ] && echo " (timeout)") $(tail -n 2 "$dir/stdout" | tr '\n' ' ')"
		echo "FAIL $n: $reason"
		failed=$((failed + 1))
	fi
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
