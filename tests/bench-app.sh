#!/bin/bash
# SPDX-License-Identifier: MIT
# The real-application benchmark: Debian's redis-server and memcached, filled
# with known data, checkpointed by stock CRIU (criu dump) and restored by it
# (criu restore --lazy-pages), once with lazy-pagesd and once with
# `criu lazy-pages` in the same run, while lp-appload sends GETs on closed
# loops and checks every reply. Paths: local images; CRIU's own page server
# (criu dump --lazy-pages); lazy-pages-server; lazy-pages-server through
# lp-delay (1 ms each way). It reports, side by side and as same-run ratios:
# time to the first reply, the degradation window (from the first reply
# until the per-100 ms p99 stays under 2x the application's steady p99,
# measured before the dump), p50/p99/max over the first 10 s, when all pages
# were in, the daemon's CPU time, and the fill over time (the restored
# server's RSS, sampled every 100 ms). It does not pass or fail.
#
#   bash tests/bench-app.sh [--quick] [--apps "redis memcached"]
#                           [--paths "local criu-ps lps delay"] [--daemons "lpd criu"]
#                           [--repeat N] [--warm]
#
# --warm: warm restores (README "Warm restores"). The client sends 90% of
# its GETs to a hot set, 15% of the keys in blocks spread over all of them
# (--hot 15 --hot-share 90 --hot-spread); a first restore with lazy-pagesd
# --no-prefetch --ws-record records its working set (3 s), then each path
# (local, lazy-pages-server, through lp-delay) restores with plain
# lazy-pagesd, with lazy-pagesd replaying the recording (lpd-ws), and with
# criu lazy-pages, side by side; the targets are replay's (window <= 0.3x
# plain lazy-pagesd's, first reply not later). Applications: redis, and
# pyrt (tests/bench-pyrt.py: Debian's Python with a hundred modules
# imported, dumped before its first request; each request touches most of
# its heap): --apps "redis pyrt" by default with --warm.
#
# Run from the repository root after `ninja`, as root, with stock CRIU at
# $CRIU, ../shared/criu/criu or a working criu in PATH. Default: 1.5 GiB
# per application (about 12 minutes); --quick: 256 MiB. Writes the table
# to stdout and, in ${BENCH_OUT:-build/bench-app}, app.txt, app.json,
# app.png (per-window p99 and fill over time for both daemons) and the data
# behind them; the logs of a failed restore in failed/TAG/. Extra
# lazy-pagesd options: BENCH_DAEMON_ARGS. Two cores are shared by the
# server, the client, the daemon and CRIU: every figure is measured on that.
set -u

# shellcheck source=tests/criu-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/criu-lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAEMON=${LAZY_PAGESD:-$ROOT/build/lazy-pagesd}
SERVER=${LAZY_PAGES_SERVER:-$ROOT/build/lazy-pages-server}
DELAY=${LP_DELAY:-$ROOT/build/tests/lp-delay}
LOAD=${LP_APPLOAD:-$ROOT/build/tests/lp-appload}
OUT=${BENCH_OUT:-$ROOT/build/bench-app}

APPS="redis memcached"
PATHS="local criu-ps lps delay"
DAEMONS="lpd criu"
REPEAT=1
MIB=1536
VALUE=1000
WARM=
HOT_ARGS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) MIB=256 ;;
	--apps) APPS=$2; APPS_SET=1; shift ;;
	--paths) PATHS=$2; PATHS_SET=1; shift ;;
	--daemons) DAEMONS=$2; DAEMONS_SET=1; shift ;;
	--repeat) REPEAT=$2; shift ;;
	--warm) WARM=1 ;;
	-h | --help) sed -n '3,37p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: bash tests/bench-app.sh [--quick] [--apps A] [--paths P] [--daemons D] [--repeat N] [--warm]" >&2; exit 2 ;;
	esac
	shift
done
if [ -n "$WARM" ]; then
	HOT_ARGS=(--hot "${BENCH_HOT:-15}" --hot-share "${BENCH_HOT_SHARE:-90}" --hot-spread)
	[ -n "${DAEMONS_SET:-}" ] || DAEMONS="lpd lpd-ws criu"
	[ -n "${PATHS_SET:-}" ] || PATHS="local lps delay"
	[ -n "${APPS_SET:-}" ] || APPS="redis pyrt"
fi
# keys of VALUE bytes: redis keeps ~70 bytes more per key, memcached ~60
KEYS=$((MIB * 1024 * 1024 / (VALUE + 70)))
MIN_SECONDS=12		# the client runs at least this long (p50/p99/max over the first 10 s)
STEADY_AFTER=3		# and this long after the daemon is done (the late p99)
MAX_SECONDS=120
DELAY_MS=1
WS_REC_S=${BENCH_WS_RECORD_S:-3}	# the hot set is in by then; later the cold keys' scattered pages would be too

# $CRIU, ../shared/criu/criu, or a criu in PATH that passes `criu check`, as in criu.sh
criu_find
case $? in
0) ;;
1) echo "bench-app: skipped: no CRIU ($CRL_WHY)"; exit 0 ;;
*) echo "bench-app: $CRL_WHY" >&2; exit 1 ;;
esac
for b in "$DAEMON" "$SERVER" "$DELAY" "$LOAD"; do
	[ -x "$b" ] || { echo "bench-app: not built: $b (run ninja first)" >&2; exit 1; }
done
for a in $APPS; do
	case $a in
	redis) command -v redis-server >/dev/null || { echo "bench-app: no redis-server (apt-get install redis-server)" >&2; exit 1; } ;;
	memcached) command -v memcached >/dev/null || { echo "bench-app: no memcached (apt-get install memcached)" >&2; exit 1; } ;;
	pyrt) [ -x /usr/bin/python3 ] || { echo "bench-app: no /usr/bin/python3 (apt-get install python3)" >&2; exit 1; } ;;
	*) echo "bench-app: unknown application $a" >&2; exit 2 ;;
	esac
done

T=$(mktemp -d "${TMPDIR:-/tmp}/lp-bench-app.XXXXXX") || exit 1
BG=()
NETNS=()
cleanup() {
	local p n
	for p in "${BG[@]}"; do kill -KILL "$p" 2>/dev/null; done
	for n in "${NETNS[@]}"; do
		for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		ip netns del "$n" 2>/dev/null
	done
	wait 2>/dev/null
	criu_pipe_restore
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT" && rm -rf "$OUT/failed" || exit 1
rm -f "$OUT"/*.dat "$OUT"/app.png
# CRIU's lazy dump sizes its page pipes past the default limit (../shared/criu/README.md);
# raised as criu.sh does, so that runs side by side put back the machine's value only once all are done
criu_pipe_raise || { echo "bench-app: cannot raise fs.pipe-max-size" >&2; exit 1; }

note() {
	echo "bench-app: $*" >&2
}

calc() {
	awk "BEGIN { printf \"%.6g\", ($1) }"
}

# A free TCP port on 127.0.0.1.
free_port() {
	local p
	for p in $(shuf -i 20000-60000 -n 50); do
		if ! ss -Htln "sport = :$p" | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# ---------------------------------------------------------------------------
# the applications

# app_start APP PORT LOG: the server, as CRIU needs it (no terminal, no fds
# past 2, stdin from /dev/null); prints its pid
app_start() {
	local app=$1 port=$2 log=$3
	case $app in
	redis)
		setsid redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
			--daemonize no --logfile "$log" </dev/null >/dev/null 2>&1 &
		;;
	pyrt)
		# a Python runtime with large modules imported (tests/bench-pyrt.py), /usr/bin's: Debian's
		setsid /usr/bin/python3 "$ROOT/tests/bench-pyrt.py" --port "$port" --ready "$log.ready" \
			</dev/null >"$log" 2>&1 &
		;;
	memcached)
		# -M: an error rather than an eviction when full (a lost key would look like a wrong reply)
		setsid memcached -u root -l 127.0.0.1 -p "$port" -U 0 -m $((MIB * 2 + 256)) -M -t 2 -c 64 \
			</dev/null >"$log" 2>&1 &
		;;
	esac
	echo $!
}

# ---------------------------------------------------------------------------
# one restore

# restored_pid NETNS: the restored server's pid (the one process in the namespace with a listening socket)
restored_pid() {
	local p
	for p in $(ip netns pids "$1" 2>/dev/null); do
		case "$(cat /proc/"$p"/comm 2>/dev/null)" in
		redis-server | memcached | python3*) echo "$p"; return 0 ;;	# pyrt: /usr/bin/python3
		esac
	done
	return 1
}

# sample_rss NETNS EPOCH_FILE OUT: the restored server's RSS every 100 ms until killed
sample_rss() {
	local ns=$1 ep=$2 out=$3 pid="" t0 now rss
	local k v u
	t0=$(cat "$ep")
	t0=$((t0 / 1000))
	# builtins only but sleep: a sampler that forks date and awk ten times a second shows in the p99
	while :; do
		[ -n "$pid" ] || pid=$(restored_pid "$ns")
		now=${EPOCHREALTIME/./}
		rss=
		if [ -n "$pid" ]; then
			while read -r k v u; do
				[ "$k" = VmRSS: ] && { rss=$v; break; }
			done </proc/"$pid"/status 2>/dev/null
		fi
		# no sample rather than a 0 while the pid found is not (or no longer) the restored server
		if [ -n "$rss" ]; then
			printf '%d.%06d %s\n' $(((now - t0) / 1000000)) $(((now - t0) % 1000000)) "$rss"
		else
			pid=
		fi
		sleep 0.1
	done >"$out"
}

# run_once TAG APP DAEMON PATH IMG STEADY [PORT [DIMG]]: one restore of IMG
# with DAEMON (lpd or criu) on PATH (local, or remote at 127.0.0.1:PORT,
# the daemon reading DIMG), the client checking every reply. Results in
# $T/res/TAG.kv.
run_once() {
	local tag=$1 app=$2 daemon=$3 path=$4 img=$5 steady=$6 port=${7:-} dimg=${8:-$5}
	local S=$T/run/$tag ns=lpb$$.$RANDOM dpid cpid rpid spid t0 t_done line rc
	local -a dcmd

	mkdir -p "$S/work"
	mkfifo "$S/ready"
	ip netns add "$ns" || { note "$tag: ip netns add failed"; return 1; }
	NETNS+=("$ns")
	ip -n "$ns" link set lo up
	case $daemon in
	lpd | lpd-ws | lpd-rec)
		# shellcheck disable=SC2206 # BENCH_DAEMON_ARGS: words, for trying daemon options
		dcmd=("$DAEMON" -D "$dimg" -W "$S/work" --status-fd 3 --progress-file "$S/progress" -v ${BENCH_DAEMON_ARGS:-})
		[ -n "$port" ] && dcmd+=(--page-server --address 127.0.0.1 --port "$port")
		# plain: no working set even if one lies next to the images; -ws: the recording; -rec: make it
		case $daemon in
		lpd) dcmd+=(--no-ws-replay) ;;
		lpd-ws) dcmd+=(--ws-replay "$WSF") ;;
		lpd-rec) dcmd+=(--no-prefetch --ws-record --ws-record-time "$WS_REC_S" --ws-out "$WSF") ;;
		esac
		;;
	criu)
		dcmd=("$CRIU" lazy-pages -D "$dimg" -W "$S/work" --status-fd 3 -o "$S/criu-lazy.log" -v2)
		[ -n "$port" ] && dcmd+=(--page-server --address 127.0.0.1 --port "$port")
		;;
	esac
	/usr/bin/time -f "%e %U %S" -o "$S/cpu" "${dcmd[@]}" 3>"$S/ready" >"$S/daemon.out" 2>"$S/daemon.log" &
	dpid=$!
	BG+=($dpid)
	if ! timeout 30 head -c1 "$S/ready" >/dev/null; then
		note "$tag: the daemon did not start: $(tail -n 3 "$S/daemon.log" "$S/criu-lazy.log" 2>/dev/null | tr '\n' ' ')"
		kill -KILL $dpid 2>/dev/null
		return 1
	fi
	if [ -z "${IDLE:-}" ]; then
		ip netns exec "$ns" "$LOAD" run "${APP_ARGS[@]}" --port "$APP_PORT" --seconds $MAX_SECONDS \
			--epoch "$S/epoch" --steady-p99 "$steady" --windows "$S/windows" >"$S/client.out" 2>"$S/client.err" &
		cpid=$!
		BG+=($cpid)
	fi
	sleep 0.2
	date +%s%N >"$S/epoch"
	sample_rss "$ns" "$S/epoch" "$S/rss" &
	spid=$!
	BG+=($spid)
	# a new pid namespace (the frozen source of a lazy dump keeps its pids) and network namespace (its port)
	ip netns exec "$ns" unshare -p -m -f --mount-proc "$CRIU" restore --lazy-pages -D "$img" -W "$S/work" \
		-o "$S/restore.log" -v2 >"$S/restore.out" 2>&1 &
	rpid=$!
	BG+=($rpid)
	t0=$(cat "$S/epoch")
	if [ "$daemon" = lpd-rec ]; then
		# faults only: the daemon serves until the restored server goes; it goes once the recording is written
		timeout $((WS_REC_S + 60)) bash -c 'until [ -s "$1" ]; do sleep 0.2; done' wait "$WSF" ||
			note "$tag: no working set written in $((WS_REC_S + 60)) s"
		for p in $(ip netns pids "$ns"); do [ "$p" = "$cpid" ] || kill -KILL "$p" 2>/dev/null; done
		# with --no-prefetch nothing tells the daemon that an idle process has gone: its job is done
		kill -TERM $dpid 2>/dev/null
	fi
	# all pages in: the daemon exits
	if ! timeout $MAX_SECONDS tail -s 0.01 --pid=$dpid -f /dev/null; then	# tail looks every 1 s by default
		note "$tag: the daemon did not finish in $MAX_SECONDS s: killed"
		kill -KILL $dpid 2>/dev/null	# criu lazy-pages can spin for good (seen through the delay proxy)
	fi
	t_done=$(date +%s%N)
	wait $dpid
	rc=$?
	# the client: at least MIN_SECONDS, and STEADY_AFTER past the end of the fill
	if [ -z "${IDLE:-}" ]; then
		line=$(calc "($t_done - $t0) / 1e9 + $STEADY_AFTER")
		awk -v a="$line" -v b=$MIN_SECONDS 'BEGIN { exit !(a < b) }' && line=$MIN_SECONDS
		sleep "$(calc "$line - ($(date +%s%N) - $t0) / 1e9")" 2>/dev/null
		kill -TERM $cpid 2>/dev/null
		wait $cpid
	fi
	kill $spid 2>/dev/null
	wait $spid 2>/dev/null
	for p in $(ip netns pids "$ns"); do kill -KILL "$p" 2>/dev/null; done
	wait $rpid 2>/dev/null
	ip netns del "$ns"
	{
		echo "daemon_rc=$rc"
		echo "all_in_s=$(calc "($t_done - $t0) / 1e9")"
		read -r wall usr sys <"$S/cpu" 2>/dev/null && echo "daemon_cpu_s=$(calc "$usr + $sys")"
		[ -z "${IDLE:-}" ] && sed -n 's/^appload: //p' "$S/client.out" | tr ' ' '\n'
		sed -n 's/^summary: //p' "$S/daemon.out" | tr ' ' '\n' | sed 's/^/d_/'
	} >"$T/res/$tag.kv"
	cp "$S/windows" "$OUT/$tag.windows.dat" 2>/dev/null
	cp "$S/rss" "$OUT/$tag.rss.dat" 2>/dev/null
	local bad=
	if [ -z "${IDLE:-}" ] && { ! grep -q '^appload:' "$S/client.out" || grep -q 'wrong=[1-9]' "$S/client.out"; }; then
		note "$tag: the client: $(tail -n 3 "$S/client.err" "$S/client.out" | tr '\n' ' ')"
		bad=1
	fi
	[ "$rc" -eq 0 ] || { note "$tag: the daemon exited $rc: $(tail -n 3 "$S/daemon.log" "$S/criu-lazy.log" 2>/dev/null | tr '\n' ' ')"; bad=1; }
	# a recording run ends by killing the server: not a failure
	if [ -n "$bad" ] && [ "$daemon" != lpd-rec ]; then
		# $T goes with the run: keep what tells why (CRIU's restore log above all)
		mkdir -p "$OUT/failed/$tag"
		cp "$S"/*.log "$S"/*.out "$S"/*.err "$OUT/failed/$tag/" 2>/dev/null
		note "$tag: its logs are kept in $OUT/failed/$tag"
	fi
	note "$tag: $(tr '\n' ' ' <"$T/res/$tag.kv" | cut -c1-300)"
}

# view IMG: a copy of IMG whose pages files are sparse, for a daemon that must get every page from a server
view() {
	local src=$1 dst=$1.view f
	if [ ! -d "$dst" ]; then
		mkdir -p "$dst"
		for f in "$src"/*; do
			case "${f##*/}" in
			pages-*.img) truncate -s "$(stat -c %s "$f")" "$dst/${f##*/}" ;;
			*) cp -a "$f" "$dst/" ;;
			esac
		done
	fi
	echo "$dst"
}

# ---------------------------------------------------------------------------
# per application

declare -A R
ROWS=()

load_kv() {	# TAG
	local k v
	while IFS='=' read -r k v; do
		[ -n "$k" ] && R[$1.$k]=$v
	done <"$T/res/$1.kv"
}

# bench_app APP
bench_app() {
	local app=$1 d=$T/$1 pid steady p path daemon i k tag sport spid dlpid img
	mkdir -p "$d/img" "$T/res" "$T/run"
	APP_PORT=$(free_port)
	note "$app: starting on 127.0.0.1:$APP_PORT, storing $KEYS keys of $VALUE bytes ($MIB MiB)"
	pid=$(app_start "$app" "$APP_PORT" "$d/app.log")
	BG+=($pid)
	if [ "$app" = pyrt ]; then
		# its modules imported, it listens and says what every answer must be; no request before the dump
		timeout 120 bash -c 'until [ -s "$1" ]; do sleep 0.1; done' wait "$d/app.log.ready" ||
			{ note "$app: not ready"; return 1; }
		APP_ARGS=(--proto line --expect "$(cat "$d/app.log.ready")" --keys 1 --value 1)
		# the steady p99 of a runtime that handled requests for 3 s: measured on a copy, not on the one dumped
		local cport cpid2
		cport=$(free_port)
		cpid2=$(app_start "$app" "$cport" "$d/copy.log")
		BG+=($cpid2)
		timeout 120 bash -c 'until [ -s "$1" ]; do sleep 0.1; done' wait "$d/copy.log.ready"
		steady=$("$LOAD" run "${APP_ARGS[@]}" --port "$cport" --seconds 3 | sed -n 's/.*late_p99_us=\([0-9.]*\).*/\1/p')
		kill -KILL "$cpid2" 2>/dev/null
	else
		APP_ARGS=(--proto "$app" --keys "$KEYS" --value "$VALUE" "${HOT_ARGS[@]}")
		"$LOAD" load --proto "$app" --port "$APP_PORT" --keys "$KEYS" --value "$VALUE" >&2 || {
			note "$app: loading failed"; return 1; }
		steady=$("$LOAD" run "${APP_ARGS[@]}" --port "$APP_PORT" --seconds 3 | sed -n 's/.*late_p99_us=\([0-9.]*\).*/\1/p')
	fi
	note "$app: steady p99 ${steady} us (3 s before the dump); RSS $(awk '/^VmRSS/ { print $2 / 1024 " MiB" }' /proc/"$pid"/status)"
	R[$app.steady_p99_us]=$steady
	if ! "$CRIU" dump -t "$pid" -D "$d/img" -o "$d/dump.log" -v2; then
		note "$app: criu dump failed: $(tail -n 3 "$d/img/dump.log" | tr '\n' ' ')"
		return 1
	fi
	# killed by the dump; a pid of ours is reaped late (../shared/criu/README.md): wait until it is free
	k=0
	while [ -d /proc/"$pid" ] && [ $((k += 1)) -lt 100 ]; do sleep 0.1; done
	WSF=$d/ws.rec
	if [[ " $DAEMONS " == *" lpd-ws "* ]]; then
		# the working set of one restore under the same load, faults only (every touch faults)
		run_once "$app-record.0" "$app" lpd-rec local "$d/img" "$steady"
		"$ROOT/build/lazy-pagesctl" ws show "$WSF" --pages 0 >"$d/ws.show" || note "$app: no working set recorded"
		cat "$d/ws.show" >&2
		R[$app.ws_pages]=$(sed -n 's/.*, \([0-9]*\) pages$/\1/p' "$d/ws.show" | head -n1)
		cp "$WSF" "$OUT/$app.ws" 2>/dev/null
		[ -f "$T/res/$app-record.0.kv" ] && load_kv "$app-record.0"
	fi
	for path in $PATHS; do
		for ((i = 1; i <= REPEAT; i++)); do
			for daemon in $DAEMONS; do
				tag=$app-$path-$daemon.$i
				case $path in
				local)
					run_once "$tag" "$app" "$daemon" local "$d/img" "$steady"
					;;
				criu-ps)
					# the server back (restored in full), then dumped lazily: CRIU's page server serves it
					rm -rf "$d/lazy" "$d/plain.pid"
					mkdir -p "$d/lazy"
					"$CRIU" restore -D "$d/img" -d -o "$d/plain-restore.log" -v2 --pidfile "$d/plain.pid" ||
						{ note "$tag: plain restore failed: $(grep Error "$d/plain-restore.log" | tail -n 2 | tr '\n' ' ')"; continue; }
					sport=$(free_port)
					mkfifo "$d/lazy/ready"
					"$CRIU" dump -t "$(cat "$d/plain.pid")" -D "$d/lazy" --lazy-pages --address 127.0.0.1 \
						--port "$sport" --status-fd 3 -o "$d/lazy/dump.log" -v2 3>"$d/lazy/ready" &
					spid=$!
					BG+=($spid)
					if ! timeout 60 head -c1 "$d/lazy/ready" >/dev/null; then
						note "$tag: criu dump --lazy-pages did not start serving"
						kill -KILL $spid
						continue
					fi
					run_once "$tag" "$app" "$daemon" remote "$d/lazy" "$steady" "$sport"
					timeout 30 tail --pid=$spid -f /dev/null || kill -KILL $spid
					wait $spid 2>/dev/null
					# the lazily dumped tree is gone once served: wait for its pid to be free again
					k=0
					while [ -d /proc/"$(cat "$d/plain.pid")" ] && [ $((k += 1)) -lt 100 ]; do sleep 0.1; done
					;;
				lps | delay)
					img=$(view "$d/img")
					mkfifo "$d/sready.$tag"
					"$SERVER" -D "$d/img" --address 127.0.0.1 --port 0 --port-file "$d/sport.$tag" --status-fd 3 \
						3>"$d/sready.$tag" >/dev/null 2>"$d/server.$tag.log" &
					spid=$!
					BG+=($spid)
					head -c1 "$d/sready.$tag" >/dev/null
					sport=$(cat "$d/sport.$tag")
					if [ $path = delay ]; then
						mkfifo "$d/dport.$tag"
						"$DELAY" --listen 127.0.0.1:0 --connect "127.0.0.1:$sport" --delay-ms $DELAY_MS \
							--port-file "$d/dport.$tag" 2>"$d/delay.$tag.log" &
						dlpid=$!
						BG+=($dlpid)
						sport=$(timeout 20 head -n1 "$d/dport.$tag")
					fi
					# criu restore reads the pages that are not lazy from the real images
					run_once "$tag" "$app" "$daemon" remote "$d/img" "$steady" "$sport" "$img"
					[ $path = delay ] && kill -TERM $dlpid && wait $dlpid 2>/dev/null
					kill -TERM $spid
					wait $spid 2>/dev/null
					;;
				esac
				[ -f "$T/res/$tag.kv" ] && load_kv "$tag"
			done
			# lazy-pagesd's fill with nobody faulting, the same images and path: what it does while faulting is a share of it
			if [[ " $DAEMONS " == *" lpd "* ]] && [ $path = local ]; then
				IDLE=1 run_once "$app-$path-idle.$i" "$app" lpd local "$d/img" "$steady"
				[ -f "$T/res/$app-$path-idle.$i.kv" ] && load_kv "$app-$path-idle.$i"
			fi
			ROWS+=("$app-$path.$i")
		done
	done
}

# the loopback TCP ceiling of this run (bulk transfer), for the page-server fill
if [ -x "$ROOT/build/tests/bench" ]; then
	R[tcp_gbps]=$("$ROOT/build/tests/bench" rtt-ceiling --count 200 --reply-kib 64 --bulk-mib 512 |
		sed -n 's/^tcp_gbps=//p')
	note "loopback TCP: ${R[tcp_gbps]} GB/s"
fi

for app in $APPS; do
	bench_app "$app"
done

# ---------------------------------------------------------------------------
# the table

v() {	# ROW DAEMON KEY
	echo "${R[$1-$2.$3]:-${R[${1%.*}-$2.${1##*.}.$3]:-}}"
}

get() {	# TAG KEY
	echo "${R[$1.$2]:-}"
}

gbps() {	# TAG: lazy-pagesd's fill rate
	awk -v p="$(get "$1" d_pages_copied)" -v z="$(get "$1" d_zero_pages)" -v s="$(get "$1" d_seconds)" \
		'BEGIN { if (s > 0 && p != "") printf "%.2f", (p + z) * 4096 / s / 1e9 }'
}

ratio_row() {	# SCENARIO LABEL TAG_A TAG_B: A's figures over B's
	local k out=()
	for k in first_reply_ms window_s p50_us p99_us max_us all_in_s daemon_cpu_s; do
		out+=("$(ratio "$(get "$3" $k)" "$(get "$4" $k)")")
	done
	printf '%-26s %-6s %9s %9s %8s %8s %9s %8s %8s\n' "$1" "$2" "${out[@]}"
}

target() {	# SCENARIO TEXT VALUE LIMIT le|ge
	local met=-
	[ -n "$3" ] && [ "$3" != - ] && met=$(awk -v v="$3" -v l="$4" -v o="$5" \
		'BEGIN { print ((o == "le" ? v <= l : v >= l) ? "yes" : "NO") }')
	printf '%-26s %-44s %10s %10s %6s\n' "$1" "$2" "${3:--}" "$4" "$met"
}

ratio() {	# A B
	[ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }' || echo "-"
}

{
	printf 'Real applications restored by stock CRIU 4.2 (%s MiB each), lazy-pagesd vs criu lazy-pages, same run.\n' "$MIB"
	printf 'window: first reply until the per-100 ms p99 stays under 2x the steady p99; p50/p99/max over the first 10 s.\n'
	printf '%-26s %-6s %9s %9s %8s %8s %9s %8s %8s %7s\n' scenario daemon first_ms window_s p50_us p99_us max_us all_in_s cpu_s wrong
	for row in "${ROWS[@]}"; do
		base=${row%.*}
		i=${row##*.}
		for daemon in $DAEMONS; do
			tag=$base-$daemon.$i
			printf '%-26s %-6s %9s %9s %8s %8s %9s %8s %8s %7s\n' "$base" "$daemon" "$(get "$tag" first_reply_ms)" \
				"$(get "$tag" window_s)" "$(get "$tag" p50_us)" "$(get "$tag" p99_us)" "$(get "$tag" max_us)" \
				"$(get "$tag" all_in_s)" "$(get "$tag" daemon_cpu_s)" "$(get "$tag" wrong)"
		done
		if [[ " $DAEMONS " == *" lpd "* && " $DAEMONS " == *" lpd-ws "* ]]; then
			ratio_row "$base" ws/lpd "$base-lpd-ws.$i" "$base-lpd.$i"
		fi
		if [[ " $DAEMONS " == *" lpd "* && " $DAEMONS " == *" criu "* ]]; then
			ratio_row "$base" ratio "$base-lpd.$i" "$base-criu.$i"
		fi
	done
	for app in $APPS; do
		printf '%s: steady p99 %s us before the dump\n' "$app" "${R[$app.steady_p99_us]:-?}"
	done
	if [[ " $DAEMONS " == *" lpd-ws "* ]]; then
		echo
		echo "Warm restores (issue 17): settle_s (first reply to the first second in a row under 2x the steady p99),"
		echo "faults served (d_faults: nearly all in the window), pages replayed (ws_read), all pages in (all_in_s):"
		printf '  %-22s %-7s %8s %8s %8s %8s\n' scenario daemon settle_s faults ws_read all_in_s
		for row in "${ROWS[@]}"; do
			base=${row%.*}
			i=${row##*.}
			for daemon in lpd lpd-ws; do
				printf '  %-22s %-7s %8s %8s %8s %8s\n' "$base" "$daemon" "$(get "$base-$daemon.$i" settle_s)" \
					"$(get "$base-$daemon.$i" d_faults)" "$(get "$base-$daemon.$i" d_ws_read)" \
					"$(get "$base-$daemon.$i" all_in_s)"
			done
		done
		for app in $APPS; do
			printf '  %s recording (%s s, faults only): %s pages, kept in %s\n' "$app" "$WS_REC_S" \
				"${R[$app.ws_pages]:-?}" "$OUT/$app.ws"
		done
		echo
		echo "Targets (issue 17), lazy-pagesd replaying the working set against plain lazy-pagesd in this run:"
		printf '%-26s %-44s %10s %10s %6s\n' scenario target value limit met
		for row in "${ROWS[@]}"; do
			base=${row%.*}
			i=${row##*.}
			w=$base-lpd-ws.$i
			l=$base-lpd.$i
			target "$base" "window with replay <= 0.3x without" "$(ratio "$(get "$w" window_s)" "$(get "$l" window_s)")" 0.3 le
			target "$base" "settle_s with replay <= 0.3x without" "$(ratio "$(get "$w" settle_s)" "$(get "$l" settle_s)")" 0.3 le
			target "$base" "first reply with replay <= 1.0x without" \
				"$(ratio "$(get "$w" first_reply_ms)" "$(get "$l" first_reply_ms)")" 1.0 le
			target "$base" "wrong replies (lpd-ws)" "$(get "$w" wrong)" 0 le
		done
	fi
	echo
	echo "Targets (issue 13), lazy-pagesd against criu lazy-pages in this run:"
	printf '%-26s %-44s %10s %10s %6s\n' scenario target value limit met
	for row in "${ROWS[@]}"; do
		base=${row%.*}
		i=${row##*.}
		app=${base%%-*}
		path=${base#*-}
		l=$base-lpd.$i
		c=$base-criu.$i
		case $path in
		local)
			target "$base" "window <= 0.5x criu's" "$(ratio "$(get "$l" window_s)" "$(get "$c" window_s)")" 0.5 le
			target "$base" "p99 over the first 10 s <= criu's" "$(ratio "$(get "$l" p99_us)" "$(get "$c" p99_us)")" 1 le
			target "$base" "fill while faulting >= 0.75x idle fill" \
				"$(ratio "$(gbps "$l")" "$(gbps "$app-local-idle.$i")")" 0.75 ge
			;;
		criu-ps)
			target "$base" "window <= 0.2x criu's" "$(ratio "$(get "$l" window_s)" "$(get "$c" window_s)")" 0.2 le
			target "$base" "fault round trip p99 <= 1000 us" "$(get "$l" d_fault_rtt_p99_us)" 1000 le
			;;
		lps)
			target "$base" "window <= 0.15x criu's via CRIU's server" \
				"$(ratio "$(get "$l" window_s)" "$(get "$app-criu-ps-criu.$i" window_s)")" 0.15 le
			target "$base" "fill >= 0.6x loopback TCP" "$(ratio "$(gbps "$l")" "${R[tcp_gbps]:-}")" 0.6 ge
			;;
		esac
	done
	printf '\nlazy-pagesd fill (GB/s, pages copied over the daemon seconds): '
	for row in "${ROWS[@]}"; do
		printf '%s %s  ' "${row%.*}" "$(gbps "${row%.*}-lpd.${row##*.}")"
	done
	for row in "${ROWS[@]}"; do
		case $row in *-local.*) printf '%s-idle %s  ' "${row%.*}" "$(gbps "${row%%-*}-local-idle.${row##*.}")" ;; esac
	done
	printf '; loopback TCP %s GB/s\n' "${R[tcp_gbps]:-?}"
} | tee "$OUT/app.txt"

{
	echo "{"
	first=1
	for k in "${!R[@]}"; do
		[ $first = 1 ] || echo ","
		first=0
		printf '  "%s": "%s"' "$k" "${R[$k]}"
	done
	echo
	echo "}"
} >"$OUT/app.json"

# the plot: per-window p99 and the restored server's RSS over time, both daemons, each scenario
PROWS=()
for row in "${ROWS[@]}"; do
	ls "$OUT/${row%.*}"-*."${row##*.}".windows.dat >/dev/null 2>&1 && PROWS+=("$row")
done
# plot_daemons BASE I SUFFIX USING: one plot, a curve per daemon with samples in $OUT/BASE-DAEMON.I.SUFFIX
plot_daemons() {
	local daemon f curves=""
	for daemon in $DAEMONS; do
		f=$OUT/$1-$daemon.$2.$3
		[ -s "$f" ] && curves+="${curves:+, }'$f' using $4 with lines title '$daemon'"
	done
	if [ -n "$curves" ]; then
		echo "plot $curves"
	else
		# an empty panel that says so, rather than a gnuplot error
		echo "set label 1 'no samples' at graph 0.5,0.5 center"
		echo "plot [0:1] [0:1] 2 notitle"
		echo "unset label 1"
	fi
}
if command -v gnuplot >/dev/null && [ ${#PROWS[@]} -gt 0 ]; then
	n=${#PROWS[@]}
	{
		echo "set terminal pngcairo size 1400,$((320 * n)) font ',9'"
		echo "set output '$OUT/app.png'"
		echo "set multiplot layout $n,2"
		echo "set key top right"
		echo "set grid"
		for row in "${PROWS[@]}"; do
			base=${row%.*}
			i=${row##*.}
			echo "set title '$base: per-100 ms p99 latency (us, log)'"
			echo "set logscale y"
			echo "set xlabel 's since criu restore started'"
			plot_daemons "$base" "$i" windows.dat "1:(\$4 > 0 ? \$4 : 1/0)"
			echo "unset logscale y"
			echo "set title '$base: restored server RSS (MiB)'"
			plot_daemons "$base" "$i" rss.dat '1:($2/1024)'
		done
		echo "unset multiplot"
	} >"$T/plot.gp"
	gnuplot "$T/plot.gp" 2>"$T/gnuplot.err" || note "gnuplot: $(head -n 3 "$T/gnuplot.err")"
fi
echo "bench-app: results in $OUT (app.txt, app.json, app.png)"
