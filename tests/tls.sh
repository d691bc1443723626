#!/bin/bash
# SPDX-License-Identifier: MIT
# TLS on the page-server link: lazy-pages-server --tls and lazy-pagesd
# --page-server --tls, with a throw-away CA, a second CA and certificates
# made by certtool, on both page-server wires. Restores are checked byte
# for byte by lp-restore; the daemon reads its images from a copy whose
# pages-*.img are sparse, so every page has to come over TLS.
#
#   bash tests/tls.sh [--list] [NAME[@wire3|@wire4]...]
#
# Run as root (userfaultfd). Each case runs in its own directory under
# ${TMPDIR:-/tmp}, bounded by timeout(1). Prints "PASS name@wireN" or
# "FAIL name@wireN: reason" and ends with "N passed, N failed".
# Binaries come from ${LP_BUILD:-build}/ (LAZY_PAGESD, LAZY_PAGES_SERVER,
# LP_DUMP, LP_RESTORE override them); certtool is from gnutls-bin.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${LP_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
DAEMON=${LAZY_PAGESD:-$BUILD/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$BUILD/lazy-pages-server}
DUMP=${LP_DUMP:-$BUILD/tests/lp-dump}
RESTORE=${LP_RESTORE:-$BUILD/tests/lp-restore}
CERTTOOL=${CERTTOOL:-certtool}
CASE_TIMEOUT=120
STEP_TIMEOUT=60

CASES=(restore wrong-client-ca revoked-client server-cn server-cn-no-verify wrong-server-ca
	plain-client bad-files)

# ---------------------------------------------------------------------------
# certificates: made once per run, shared by the cases (read only)

# cert NAME CN SIGNER [template lines...]: NAME.key and NAME.pem signed by SIGNER
cert() {
	local name=$1 cn=$2 ca=$3
	shift 3
	"$CERTTOOL" --generate-privkey --key-type ecdsa --outfile "$PKI/$name.key" 2>/dev/null || return 1
	printf '%s\n' "cn = \"$cn\"" "expiration_days = 2" tls_www_server tls_www_client signing_key "$@" \
		>"$PKI/$name.tmpl"
	"$CERTTOOL" --generate-certificate --load-privkey "$PKI/$name.key" --load-ca-certificate "$PKI/$ca.pem" \
		--load-ca-privkey "$PKI/$ca.key" --template "$PKI/$name.tmpl" --outfile "$PKI/$name.pem" \
		>"$PKI/$name.log" 2>&1
}

make_pki() {
	local ca
	for ca in ca ca2; do
		"$CERTTOOL" --generate-privkey --key-type ecdsa --outfile "$PKI/$ca.key" 2>/dev/null || return 1
		printf '%s\n' "cn = \"lazy-pages test $ca\"" ca cert_signing_key crl_signing_key "expiration_days = 2" \
			>"$PKI/$ca.tmpl"
		"$CERTTOOL" --generate-self-signed --load-privkey "$PKI/$ca.key" --template "$PKI/$ca.tmpl" \
			--outfile "$PKI/$ca.pem" >"$PKI/$ca.log" 2>&1 || return 1
	done
	# GnuTLS matches an IP address to an iPAddress name, never to the CN: both carry it
	cert server 127.0.0.1 ca "ip_address = 127.0.0.1" &&
		cert client 127.0.0.1 ca "ip_address = 127.0.0.1" &&
		cert rogue 127.0.0.1 ca2 "ip_address = 127.0.0.1" &&
		cert rogue-server 127.0.0.1 ca2 "ip_address = 127.0.0.1" &&
		cert revoked 127.0.0.1 ca "ip_address = 127.0.0.1" &&
		cert wrongcn wrong.example ca "dns_name = wrong.example" || return 1
	printf '%s\n' "crl_next_update = 2" "crl_number = 1" >"$PKI/crl.tmpl"
	"$CERTTOOL" --generate-crl --load-ca-privkey "$PKI/ca.key" --load-ca-certificate "$PKI/ca.pem" \
		--load-certificate "$PKI/revoked.pem" --template "$PKI/crl.tmpl" --outfile "$PKI/crl.pem" \
		>"$PKI/crl.log" 2>&1
}

# ---------------------------------------------------------------------------
# helpers, used inside one case (run as `tls.sh --one NAME WIRE DIR`)

fail() {
	echo "$*" >"$T/reason"
	exit 1
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

tail_of() {
	grep -v ': GET pid' "$1" 2>/dev/null | tail -n "${2:-2}" | tr '\n' ' ' | cut -c1-400
}

# tls_args NAME: --tls with the CA and certificate NAME
tls_args() {
	echo --tls --tls-cacert "$PKI/ca.pem" --tls-cert "$PKI/$1.pem" --tls-key "$PKI/$1.key"
}

# start_server CERT [ARGS...]: lazy-pages-server --tls on 127.0.0.1 port 0. Sets SPID, PS_PORT.
start_server() {
	local c=$1
	shift
	mkfifo "$T/server.ready" "$T/server.port" || fail "mkfifo"
	timeout -k 5 $CASE_TIMEOUT "$SERVER" -D "$T/d" --address 127.0.0.1 --port 0 --ps-wire "$WIRE" \
		--port-file "$T/server.port" --status-fd 3 -v3 $(tls_args "$c") "$@" \
		3>"$T/server.ready" >"$T/server.out" 2>"$T/server.log" &
	SPID=$!
	BG_PIDS+=("$SPID")
	head -c1 "$T/server.ready" >"$T/server.byte"
	[ -s "$T/server.byte" ] || fail "lazy-pages-server exited before it was ready: $(tail_of "$T/server.log" 3)"
	PS_PORT=$(timeout 20 head -n1 "$T/server.port")
	[[ "$PS_PORT" =~ ^[0-9]+$ ]] || fail "lazy-pages-server: no port"
}

# stop_server: it must stop on SIGTERM with 0, whatever its clients did
stop_server() {
	local rc
	kill -TERM "$SPID" 2>/dev/null
	wait "$SPID"
	rc=$?
	[ $rc -eq 0 ] || fail "lazy-pages-server exit $rc: $(tail_of "$T/server.log")"
}

# view: the daemon's copy of the images, every pages-*.img sparse (zeros)
view() {
	local f b
	mkdir -p "$T/view"
	for f in "$T/d"/*; do
		b=${f##*/}
		case "$b" in
		pages-*.img) truncate -s "$(stat -c %s "$f")" "$T/view/$b" ;;
		lp-expect-*) ;;
		*) cp "$f" "$T/view/$b" ;;
		esac
	done
}

# run_daemon [ARGS...]: lazy-pagesd --page-server on the server, then
# lp-restore (checking every byte, or with RESTORE_ARGS). Sets DRC, RRC.
run_daemon() {
	mkdir -p "$T/work"
	mkfifo "$T/ready" || fail "mkfifo"
	timeout -k 5 $STEP_TIMEOUT "$DAEMON" -D "$T/view" -W "$T/work" --status-fd 3 -v3 --page-server \
		--address 127.0.0.1 --port "$PS_PORT" --ps-wire "$WIRE" "$@" \
		3>"$T/ready" >"$T/daemon.out" 2>"$T/daemon.log" &
	DPID=$!
	BG_PIDS+=("$DPID")
	head -c1 "$T/ready" >"$T/ready.byte"
	if [ -s "$T/ready.byte" ]; then
		timeout -k 5 $STEP_TIMEOUT "$RESTORE" -D "$T/d" -W "$T/work" --timeout $((STEP_TIMEOUT - 10)) \
			${RESTORE_ARGS:-} --wait-pid "$DPID" >"$T/restore.out" 2>"$T/restore.err"
		RRC=$?
	else
		RRC=-1
	fi
	wait "$DPID"
	DRC=$?
}

# good: the restore verified every byte, the daemon exited 0, the pages came over TLS
good() {
	local rb
	[ $DRC -eq 0 ] || fail "daemon exit $DRC: $(tail_of "$T/daemon.log")"
	[ $RRC -eq 0 ] || fail "lp-restore exit $RRC: $(tail_of "$T/restore.err" 3)"
	rb=$(sed -n 's/.* remote_bytes=\([0-9]*\).*/\1/p' "$T/daemon.out")
	[ -n "$rb" ] && [ "$rb" -gt 0 ] || fail "no remote_bytes in the summary: $(head -c 300 "$T/daemon.out")"
	grep -q 'TLS session, client certificate accepted' "$T/server.log" ||
		fail "the server saw no TLS session: $(tail_of "$T/server.log")"
}

# refused PATTERN: the daemon failed cleanly (not hung, not killed), saying PATTERN
refused() {
	[ $DRC -ne 0 ] || fail "daemon exited 0"
	[ $DRC -ne 124 ] || fail "daemon hung (timeout)"
	[ $DRC -lt 128 ] || fail "daemon died by signal $((DRC - 128))"
	grep -q -E -- "$1" "$T/daemon.log" || fail "daemon log lacks '$1': $(tail_of "$T/daemon.log")"
}

server_says() {
	grep -q -E -- "$1" "$T/server.log" || fail "server log lacks '$1': $(tail_of "$T/server.log")"
}

dump() {
	timeout -k 5 $STEP_TIMEOUT "$DUMP" -D "$T/d" "$@" >"$T/dump.out" 2>"$T/dump.err" ||
		fail "lp-dump $*: $(tail_of "$T/dump.err")"
	view
}

# ---------------------------------------------------------------------------
# cases

# a whole restore over TLS, both connections (bulk and faults) through it
tc_restore() {
	dump --procs 2 --size 64
	start_server server
	RESTORE_ARGS="--scenario random"
	run_daemon $(tls_args client)
	stop_server
	good
	[ "$(grep -c 'TLS session, client certificate accepted' "$T/server.log")" -ge 2 ] ||
		fail "expected the fault connection over TLS too: $(tail_of "$T/server.log" 4)"
	grep -q 'second connection for faults' "$T/daemon.log" || fail "no second connection: $(tail_of "$T/daemon.log")"
}

# a client certificate from another CA: the server refuses it and says why; the daemon fails at once
tc_wrong-client-ca() {
	dump --size 16
	start_server server
	RESTORE_ARGS="--scenario none"
	run_daemon --tls --tls-cacert "$PKI/ca.pem" --tls-cert "$PKI/rogue.pem" --tls-key "$PKI/rogue.key"
	stop_server
	refused 'refused by the server \(alert: CA is unknown\)'
	server_says 'certificate of the client refused: .*issuer is unknown'
}

# a client certificate on the server's --tls-cacrl
tc_revoked-client() {
	dump --size 16
	start_server server --tls-cacrl "$PKI/crl.pem"
	RESTORE_ARGS="--scenario none"
	run_daemon $(tls_args revoked)
	stop_server
	refused 'refused by the server \(alert: .*[Rr]evoked'
	server_says 'certificate of the client refused: .*revoked'
}

# the server's certificate is for another name than the daemon's --address
tc_server-cn() {
	dump --size 16
	start_server wrongcn
	RESTORE_ARGS="--scenario none"
	run_daemon $(tls_args client)
	stop_server
	refused 'certificate of the server refused: .*name in the certificate does not match.*name checked: 127\.0\.0\.1'
	server_says 'refused by the client \(alert: Certificate is bad\)'
}

tc_server-cn-no-verify() {
	dump --procs 2 --size 32
	start_server wrongcn
	run_daemon $(tls_args client) --tls-no-cn-verify
	stop_server
	good
}

tc_wrong-server-ca() {
	dump --size 16
	start_server rogue-server
	RESTORE_ARGS="--scenario none"
	run_daemon $(tls_args client)
	stop_server
	refused 'certificate of the server refused: .*issuer is unknown'
}

# no --tls on the daemon: the server cannot hand-shake; the daemon gives up within --ps-timeout
tc_plain-client() {
	dump --size 16
	start_server server
	RESTORE_ARGS="--scenario none"
	run_daemon --ps-timeout 2
	stop_server
	refused 'not back within --ps-timeout'
	server_says 'TLS handshake failed: .*is --tls on at both ends'
}

# files that cannot be used stop both programs at start, naming the file
tc_bad-files() {
	local rc
	dump --size 16
	"$DAEMON" -D "$T/view" -W "$T/d" --page-server --address 127.0.0.1 --port 9 --tls \
		--tls-cacert "$PKI/ca.pem" --tls-cert "$T/none.pem" --tls-key "$PKI/client.key" 2>"$T/daemon.log"
	rc=$?
	[ $rc -eq 1 ] || fail "daemon with a missing --tls-cert: exit $rc"
	grep -q -- "--tls-cert) $T/none.pem: No such file" "$T/daemon.log" ||
		fail "daemon: $(tail_of "$T/daemon.log")"
	"$SERVER" -D "$T/d" --port 0 --tls --tls-cacert "$PKI/ca.pem" --tls-cert "$PKI/server.pem" \
		--tls-key "$PKI/client.key" 2>"$T/server.log"
	rc=$?
	[ $rc -eq 1 ] || fail "server with a key of another certificate: exit $rc"
	server_says 'do not match'
	"$SERVER" -D "$T/d" --port 0 --tls --tls-cacert "$PKI/ca.pem" --tls-cacrl "$T/none.crl" \
		--tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" 2>"$T/server.log"
	rc=$?
	[ $rc -eq 1 ] || fail "server with a missing --tls-cacrl: exit $rc"
	server_says 'tls-cacrl'
	"$DAEMON" -D "$T/view" --page-server --ps-socket 0 --tls 2>"$T/daemon.log"
	rc=$?
	[ $rc -eq 1 ] || fail "--tls with --ps-socket: exit $rc"
}

# ---------------------------------------------------------------------------
# runner

if [ "${1:-}" = "--one" ]; then
	T=$4
	WIRE=$3
	PKI=$5
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

runs=()
if [ $# -eq 0 ]; then
	for n in "${CASES[@]}"; do runs+=("$n@wire4"); done
	for n in "${CASES[@]}"; do runs+=("$n@wire3"); done
else
	for a in "$@"; do
		case "$a" in
		*@wire3 | *@wire4) runs+=("$a") ;;
		*) runs+=("$a@wire4" "$a@wire3") ;;
		esac
	done
fi

pass=0
failed=0
TOP=$(mktemp -d "${TMPDIR:-/tmp}/lp-tls.XXXXXX") || exit 1
trap 'rm -rf "$TOP"' EXIT
PKI=$TOP/pki
mkdir -p "$PKI"

if ! command -v "$CERTTOOL" >/dev/null; then
	echo "FAIL tls: no certtool (apt-get install gnutls-bin)"
	echo "0 passed, 1 failed"
	exit 1
fi
if ! make_pki; then
	echo "FAIL tls: certtool could not make the certificates: $(cat "$PKI"/*.log | tail -n 3 | tr '\n' ' ')"
	echo "0 passed, 1 failed"
	exit 1
fi

for r in "${runs[@]}"; do
	n=${r%@*}
	w=${r##*@wire}
	if ! declare -F "tc_$n" >/dev/null; then
		echo "FAIL $r: no such case"
		failed=$((failed + 1))
		continue
	fi
	dir=$TOP/$n-$w
	mkdir -p "$dir"
	timeout -k 5 $CASE_TIMEOUT bash "${BASH_SOURCE[0]}" --one "$n" "$w" "$dir" "$PKI" >"$dir/stdout" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "PASS $r"
		pass=$((pass + 1))
	else
		reason=$(cat "$dir/reason" 2>/dev/null)
		[ -n "$reason" ] || reason="exit $rc$([ $rc -eq 124 ] && echo " (timeout)") $(tail -n 2 "$dir/stdout" | tr '\n' ' ')"
		echo "FAIL $r: $reason"
		failed=$((failed + 1))
	fi
done
echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
