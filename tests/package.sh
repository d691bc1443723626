#!/bin/bash
# SPDX-License-Identifier: MIT
# Package tests: the man pages against the code, the Debian packages built
# with dpkg-buildpackage and checked by lintian, then installed with dpkg -i
# inside a throw-away container whose PID 1 is a real systemd
# (../shared/tools/with-systemd.sh): the socket enabled by the package, the
# service started by the first client, man pages readable, a program built
# with pkg-config against liblazypages-dev handing memory to the service
# and checking every page, an upgrade while the service fills a process,
# removal and purge.
#
#   bash tests/package.sh [--list] [NAME...]
#
# Run as root from anywhere. The packages go to build/deb (LP_DEB_DIR);
# `deb-build` makes them, the cases after it use them. Each case runs in
# its own directory (bound at /srv/lp-test inside the container), bounded
# by timeout(1). Prints "PASS name" or "FAIL name: reason" per case and
# ends with "N passed, N failed".
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/pkglib.sh
. "$ROOT/tests/pkglib.sh"
# shellcheck source=tests/suite-lib.sh
. "$ROOT/tests/suite-lib.sh"
DEBS=${LP_DEB_DIR:-$ROOT/build/deb}
WITH_SYSTEMD=${LP_WITH_SYSTEMD:-}
[ -z "$WITH_SYSTEMD" ] && [ -x "$ROOT/../shared/tools/with-systemd.sh" ] && WITH_SYSTEMD=$ROOT/../shared/tools/with-systemd.sh
CASE_TIMEOUT=${LP_CASE_TIMEOUT:-300}
INSIDE=/srv/lp-test	# the case directory, as the container sees it
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
ARCH=$(dpkg --print-architecture)

CASES=(man-options deb-build lintian installed upgrade remove)
# cases that run inside the container, and those that need the packages
CONTAINER_CASES=" installed upgrade remove "
NEEDS_DEBS=" lintian installed upgrade remove "

fail() {
	echo "$*" >"$T/reason"
	exit 1
}

info() {
	echo "$*" >>"$T/info"
}

# ---------------------------------------------------------------------------
# man-options: every option, command and JSON key in the code is in its man page

# long_options FILE...: the names in the files' struct option tables
long_options() {
	grep -ohE '\{ "[a-z][a-z0-9-]*", (no|required|optional)_argument' "$@" | sed 's/{ "\([^"]*\)".*/\1/' | sort -u
}

# man_has PAGE WORD: the scdoc source of PAGE mentions --WORD as an option
man_has_option() {
	grep -qE -- "--$2([^a-z0-9-]|$)" "$ROOT/man/$1.scd"
}

sc_man-options() {
	local page src o k c missing=
	for page in lazy-pagesd.8 lazy-pages-server.8 lazy-pagesctl.8 liblazypages.3; do
		[ -f "$ROOT/build/man/$page" ] || fail "build/man/$page is not built (ninja man)"
		for s in NAME SYNOPSIS DESCRIPTION 'SEE ALSO'; do
			grep -q "^# $s\$" "$ROOT/man/$page.scd" || missing="$missing $page:$s"
		done
		case $page in
		*.8) for s in OPTIONS 'EXIT STATUS' FILES EXAMPLES; do
			grep -q "^# $s\$" "$ROOT/man/$page.scd" || missing="$missing $page:$s"
		done ;;
		*.3) for s in 'RETURN VALUE' ABI EXAMPLE; do
			grep -q "^# $s\$" "$ROOT/man/$page.scd" || missing="$missing $page:$s"
		done ;;
		esac
		# groff's own complaints (bad requests, unknown escapes)
		out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$ROOT/build/man/$page" 2>&1 >/dev/null)
		[ -z "$out" ] || fail "man $page warns: $(echo "$out" | head -n 2 | tr '\n' ' ')"
	done
	[ -z "$missing" ] || fail "sections missing:$missing"

	# the options tables; the TLS ones come from tls.h
	for src in "lazy-pagesd.8 daemon/service/main.c daemon/net/tls.h" "lazy-pages-server.8 daemon/server/server_main.c daemon/net/tls.h" \
		"lazy-pagesctl.8 client/lazypagesctl.c client/wsctl.c"; do
		set -- $src
		page=$1
		shift
		for o in $(long_options "${@/#/$ROOT/}"); do
			man_has_option "$page" "$o" || missing="$missing $page:--$o"
		done
	done
	# lazy-pagesctl's commands and JSON keys, each in the page and in the key list
	for c in $(grep -ohE '\{ "[a-z]+", [a-z_]+_main' "$ROOT/client/lazypagesctl.c" | sed 's/{ "\([a-z]*\)".*/\1/'); do
		grep -qE "^\*(session )?$c[* ]" "$ROOT/man/lazy-pagesctl.8.scd" || missing="$missing lazy-pagesctl.8:command:$c"
	done
	for k in $(grep -ohE 'json_key\([a-z&]+, "[a-z0-9_]+"\)' "$ROOT/client/lazypagesctl.c" "$ROOT/client/wsctl.c" | sed 's/.*"\(.*\)".*/\1/' | sort -u); do
		grep -qF "\"$k\":" "$ROOT/man/lazy-pagesctl.8.scd" || missing="$missing lazy-pagesctl.8:json:\"$k\""
		grep -qF "*$k*" "$ROOT/man/lazy-pagesctl.8.scd" || missing="$missing lazy-pagesctl.8:key-list:$k"
	done
	# every function of the public header
	for c in $(grep -oE '^(int|void|const char \*)[ *]*lp_[a-z_]+\(' "$ROOT/client/lazypages.h" | sed 's/.*\(lp_[a-z_]*\)(/\1/'); do
		grep -qF "*$c*()" "$ROOT/man/liblazypages.3.scd" || missing="$missing liblazypages.3:$c"
	done
	[ -z "$missing" ] || fail "not documented:$missing"
	info "$(long_options "$ROOT"/daemon/service/main.c "$ROOT"/daemon/server/server_main.c "$ROOT"/daemon/net/tls.h "$ROOT"/client/lazypagesctl.c "$ROOT"/client/wsctl.c | wc -l) option names, $(grep -ohE 'json_key\([a-z&]+, "[a-z0-9_]+"\)' "$ROOT/client/lazypagesctl.c" "$ROOT/client/wsctl.c" | sort -u | wc -l) JSON keys checked"
}

# ---------------------------------------------------------------------------
# deb-build: dpkg-buildpackage -us -uc -b, and what the packages hold

sc_deb-build() {
	local v ninja_v pc_v f
	command -v dpkg-buildpackage >/dev/null || fail "dpkg-buildpackage is not installed (dpkg-dev)"
	dpkg-checkbuilddeps "$ROOT/debian/control" 2>"$T/deps" || fail "$(cat "$T/deps")"
	pkg_build "$DEBS" 2>"$T/err" || fail "$(cat "$T/err")"
	v=$(cd "$ROOT" && dpkg-parsechangelog -S Version)
	ninja_v=$(sed -n 's/^version = //p' "$ROOT/build.ninja")
	[ "$v" = "$ninja_v" ] || fail "debian/changelog says $v, build.ninja's version is $ninja_v"
	for n in "${PKG_NAMES[@]}"; do
		[ -f "$DEBS/${n}_${v}_$ARCH.deb" ] || fail "no ${n}_${v}_$ARCH.deb: $(ls "$DEBS")"
	done
	dpkg-deb -c "$DEBS/lazy-pages_${v}_$ARCH.deb" >"$T/c.lazy-pages"
	for f in ./usr/sbin/lazy-pagesd ./usr/sbin/lazy-pages-server ./usr/bin/lazy-pagesctl \
		./lib/systemd/system/lazy-pages.socket ./lib/systemd/system/lazy-pages.service \
		./lib/systemd/system/lazy-pages-server.service ./etc/default/lazy-pages ./etc/default/lazy-pages-server \
		./usr/share/man/man8/lazy-pagesd.8.gz ./usr/share/man/man8/lazy-pages-server.8.gz \
		./usr/share/man/man8/lazy-pagesctl.8.gz ./usr/share/doc/lazy-pages/README.md; do
		grep -q " $f\$" "$T/c.lazy-pages" || fail "lazy-pages lacks $f"
	done
	dpkg-deb --ctrl-tarfile "$DEBS/lazy-pages_${v}_$ARCH.deb" | tar -xOf - ./conffiles >"$T/conffiles"
	grep -qx /etc/default/lazy-pages "$T/conffiles" && grep -qx /etc/default/lazy-pages-server "$T/conffiles" ||
		fail "the /etc/default files are not conffiles: $(tr '\n' ' ' <"$T/conffiles")"
	dpkg-deb -c "$DEBS/liblazypages0_${v}_$ARCH.deb" >"$T/c.lib"
	grep -q " ./usr/lib/$MULTIARCH/liblazypages.so.0 -> liblazypages.so.$ninja_v\$" "$T/c.lib" ||
		fail "liblazypages0 has no liblazypages.so.0 link: $(grep liblazypages "$T/c.lib")"
	dpkg-deb -c "$DEBS/liblazypages-dev_${v}_$ARCH.deb" >"$T/c.dev"
	for f in ./usr/include/lazypages.h ./usr/lib/$MULTIARCH/liblazypages.a \
		./usr/lib/$MULTIARCH/pkgconfig/lazypages.pc ./usr/share/man/man3/liblazypages.3.gz; do
		grep -q " $f\$" "$T/c.dev" || fail "liblazypages-dev lacks $f"
	done
	mkdir "$T/x" && dpkg-deb -x "$DEBS/liblazypages-dev_${v}_$ARCH.deb" "$T/x"
	pc_v=$(sed -n 's/^Version: //p' "$T/x/usr/lib/$MULTIARCH/pkgconfig/lazypages.pc")
	[ "$pc_v" = "$v" ] || fail "lazypages.pc says Version $pc_v, the package $v"
	info "$(cd "$DEBS" && ls ./*.deb | grep -v dbgsym | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------
# lintian: no errors (warnings are listed)

sc_lintian() {
	local changes
	command -v lintian >/dev/null || fail "lintian is not installed"
	changes=$(ls "$DEBS"/*.changes 2>/dev/null | head -n 1)
	[ -n "$changes" ] || fail "no .changes in $DEBS (run deb-build first)"
	lintian --display-info --pedantic "$changes" >"$T/lintian" 2>&1
	grep -v '^running with root privileges' "$T/lintian" | grep -E '^[EWIP]: ' | sed 's/ *$//' >"$T/tags"
	if grep -q '^E: ' "$T/tags"; then
		fail "lintian errors: $(grep '^E: ' "$T/tags" | head -n 3 | tr '\n' ' ')"
	fi
	info "lintian: $(grep -c '^W: ' "$T/tags") warnings, $(grep -c '^I: ' "$T/tags") info, $(grep -c '^P: ' "$T/tags") pedantic"
	grep -E '^(W|I|P): ' "$T/tags" | sed 's/^/  /' >>"$T/info"
}

# ---------------------------------------------------------------------------
# inside the container ($T is $INSIDE there)

# session_wait ID: until that session is done or failed
session_wait() {
	lazy-pagesctl watch "$1" --interval 10 >"$T/watch.out" 2>&1 || fail "watch $1: $(tail -n 1 "$T/watch.out")"
}

# session_json ID: the session's object from lazy-pagesctl stats --json
session_json() {
	lazy-pagesctl stats "$1" --json | jq -c '.sessions[0]'
}

# build_handoff OUT [static]: tests/pkg-handoff.c against the installed liblazypages-dev
build_handoff() {
	local libs
	pkg-config --exists lazypages || fail "pkg-config does not know lazypages"
	if [ "${2:-}" = static ]; then
		# the archive, and what pkg-config --static says it needs
		libs="$(pkg-config --variable=libdir lazypages)/liblazypages.a $(pkg-config --static --libs lazypages | sed 's/-llazypages//')"
	else
		libs=$(pkg-config --libs lazypages)
	fi
	cc -O2 -Wall -Wextra -Werror -o "$1" "$ROOT/tests/pkg-handoff.c" $(pkg-config --cflags lazypages) $libs \
		2>"$T/cc.err" || fail "cc against the installed package: $(head -n 3 "$T/cc.err" | tr '\n' ' ')"
}

# run_handoff BIN MIB: runs it, checks its verdict and the session it made
run_handoff() {
	local out id pages j
	out=$(timeout 120 "$1" "$T/mem" "$2" 2>"$T/handoff.err") ||
		fail "$(basename "$1"): $(head -n 3 "$T/handoff.err" | tr '\n' ' ') $(journalctl -u lazy-pages.service -n 3 --no-pager | tr '\n' ' ')"
	id=$(echo "$out" | sed -n 's/^session \([0-9]*\):.*/\1/p')
	pages=$(( $2 * 256 ))
	echo "$out" | grep -qx "checked $pages pages: 0 wrong" || fail "$(basename "$1"): $out"
	session_wait "$id"
	j=$(session_json "$id")
	[ "$(echo "$j" | jq -r '.state + " " + .kind + " " + (.procs[0].remaining_pages | tostring)')" = "done handoff 0" ] ||
		fail "session $id after the hand-off: $j"
	[ "$(echo "$j" | jq '.pages_copied + .zero_pages')" -ge "$pages" ] || fail "session $id placed too few pages: $j"
	info "$(basename "$1"): $pages pages checked, session $id $(echo "$j" | jq -r .summary | cut -d' ' -f2-6)"
}

in_installed() {
	local out pid main p lib owner
	pkg_install "$DEBS" 2>"$T/err" || fail "$(cat "$T/err")"
	# the package enabled and started the socket; nothing started the service yet
	[ "$(systemctl is-enabled lazy-pages.socket)" = enabled ] || fail "lazy-pages.socket is not enabled"
	systemctl is-active --quiet lazy-pages.socket || fail "lazy-pages.socket is not listening"
	systemctl is-active --quiet lazy-pages.service && fail "lazy-pages.service started before any client"
	[ "$(systemctl is-enabled lazy-pages-server.service)" = disabled ] ||
		fail "lazy-pages-server.service is $(systemctl is-enabled lazy-pages-server.service), not disabled"
	# the README's step
	systemctl enable --now lazy-pages.socket 2>"$T/err" || fail "systemctl enable --now: $(cat "$T/err")"
	out=$(systemd-analyze verify lazy-pages.socket lazy-pages.service lazy-pages-server.service 2>&1) ||
		fail "systemd-analyze verify: $out"
	# the units' Documentation= files are there (not compressed away)
	for p in $(systemctl show -P Documentation lazy-pages.socket lazy-pages.service lazy-pages-server.service |
		tr ' ' '\n' | sed -n 's|^file://||p' | sort -u); do
		[ -f "$p" ] || fail "the units' Documentation= names $p, which is not installed"
	done

	# man pages, as a user reads them
	[ "$(man -w lazy-pagesd)" = /usr/share/man/man8/lazy-pagesd.8.gz ] || fail "man -w lazy-pagesd: $(man -w lazy-pagesd 2>&1)"
	MANWIDTH=80 man lazy-pagesd 2>"$T/err" | grep -q 'lazy-pagesd - serve the memory of lazily restored' ||
		fail "man lazy-pagesd: $(head -n 2 "$T/err")"
	for p in lazy-pages-server lazy-pagesctl "3 liblazypages"; do
		man -w $p >/dev/null 2>&1 || fail "man $p: not found"
	done

	# the first client starts the service
	lazy-pagesctl status --json >"$T/status.json" 2>"$T/err" || fail "lazy-pagesctl status: $(cat "$T/err")"
	pid=$(jq .pid "$T/status.json")
	main=$(systemctl show -P MainPID lazy-pages.service)
	[ "$pid" = "$main" ] && [ "$pid" -gt 0 ] || fail "status says pid $pid, systemd's MainPID is $main"
	[ "$(readlink "/proc/$pid/exe")" = /usr/sbin/lazy-pagesd ] || fail "the service runs $(readlink "/proc/$pid/exe")"

	build_handoff "$T/handoff"
	lib=$(ldd "$T/handoff" | awk '$1 == "liblazypages.so.0" { print $3 }')
	owner=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null)
	[ "${owner%%:*}" = liblazypages0 ] || fail "not linked to the packaged library: '$lib' (${owner:-no package})"
	run_handoff "$T/handoff" 64
	build_handoff "$T/handoff-static" static
	ldd "$T/handoff-static" | grep -q liblazypages && fail "the static build still needs liblazypages.so"
	run_handoff "$T/handoff-static" 16
}

# An upgrade while the service fills a process: the daemon keeps running
# (same pid, no restart), the process gets every page, the conffile stays.
in_upgrade() {
	local line id j main v new
	pkg_install "$DEBS" 2>"$T/err" || fail "$(cat "$T/err")"
	# faults only, so half of the memory stays missing while paused
	echo 'LAZY_PAGESD_OPTS="--no-prefetch"' >/etc/default/lazy-pages
	build_handoff "$T/handoff"
	mkfifo "$T/go" "$T/said"
	exec 4<>"$T/go" 5<>"$T/said"
	timeout 120 "$T/handoff" --pause "$T/mem" 32 <&4 >&5 2>"$T/handoff.err" &
	HPID=$!
	read -r -t 60 -u 5 line || fail "the hand-off did not start: $(cat "$T/handoff.err")"
	id=$(echo "$line" | sed -n 's/^session \([0-9]*\):.*/\1/p')
	read -r -t 60 -u 5 line || fail "the hand-off did not pause: $(cat "$T/handoff.err")"
	j=$(session_json "$id")
	[ "$(echo "$j" | jq -r .state)" = serving ] && [ "$(echo "$j" | jq '.procs[0].remaining_pages')" -gt 0 ] ||
		fail "paused, but session $id is not being filled: $j"
	main=$(systemctl show -P MainPID lazy-pages.service)

	v=$(dpkg-query -W -f '${Version}' lazy-pages)
	new="$v+upgradetest1"
	pkg_repack "$(pkg_deb "$DEBS" lazy-pages)" "$new" "$T/lazy-pages_new.deb" 2>"$T/err" || fail "$(cat "$T/err")"
	# a maintainer script that stops the service would wait here for the paused process
	DEBIAN_FRONTEND=noninteractive timeout 60 dpkg -i "$T/lazy-pages_new.deb" >"$T/dpkg.out" 2>&1 ||
		fail "dpkg -i (upgrade) failed or hung: $(tail -n 2 "$T/dpkg.out" | tr '\n' ' ') $(systemctl is-active lazy-pages.service)"
	[ "$(dpkg-query -W -f '${Version}' lazy-pages)" = "$new" ] || fail "the upgrade did not happen"
	[ "$(systemctl show -P MainPID lazy-pages.service)" = "$main" ] ||
		fail "the upgrade restarted lazy-pagesd (pid $main, now $(systemctl show -P MainPID lazy-pages.service))"
	systemctl is-active --quiet lazy-pages.socket || fail "the upgrade left lazy-pages.socket stopped"
	grep -qx 'LAZY_PAGESD_OPTS="--no-prefetch"' /etc/default/lazy-pages ||
		fail "the upgrade replaced /etc/default/lazy-pages: $(cat /etc/default/lazy-pages)"
	[ "$(session_json "$id" | jq -r .state)" = serving ] || fail "session $id is no longer serving after the upgrade"

	echo go >&4
	wait "$HPID" || fail "the hand-off after the upgrade: $(head -n 3 "$T/handoff.err" | tr '\n' ' ')"
	read -r -t 10 -u 5 line
	[ "$line" = "checked 8192 pages: 0 wrong" ] || fail "the hand-off: $line"
	session_wait "$id"
	j=$(session_json "$id")
	[ "$(echo "$j" | jq -r '.state + " " + (.procs[0].remaining_pages | tostring)')" = "done 0" ] ||
		fail "session $id after the upgrade: $j"
	info "upgraded to $new under session $id (pid $main kept): 8192 pages checked, $(echo "$j" | jq .faults) faults"
}

in_remove() {
	pkg_install "$DEBS" 2>"$T/err" || fail "$(cat "$T/err")"
	lazy-pagesctl status >/dev/null 2>"$T/err" || fail "lazy-pagesctl status: $(cat "$T/err")"
	systemctl is-active --quiet lazy-pages.service || fail "the service did not start"
	echo 'LAZY_PAGESD_OPTS="-v2"' >/etc/default/lazy-pages
	DEBIAN_FRONTEND=noninteractive dpkg -r liblazypages-dev lazy-pages >"$T/dpkg.out" 2>&1 ||
		fail "dpkg -r: $(tail -n 2 "$T/dpkg.out" | tr '\n' ' ')"
	systemctl is-active --quiet lazy-pages.socket && fail "lazy-pages.socket still active after removal"
	systemctl is-active --quiet lazy-pages.service && fail "lazy-pages.service still running after removal"
	[ -e /run/lazy-pages/control.sock ] && fail "/run/lazy-pages/control.sock left behind"
	[ -e /usr/sbin/lazy-pagesd ] && fail "/usr/sbin/lazy-pagesd left behind"
	grep -q -- -v2 /etc/default/lazy-pages || fail "removal (not purge) took the changed conffile"
	DEBIAN_FRONTEND=noninteractive dpkg -P lazy-pages >"$T/dpkg.out" 2>&1 || fail "dpkg -P: $(tail -n 2 "$T/dpkg.out")"
	[ -e /etc/default/lazy-pages ] && fail "purge left /etc/default/lazy-pages"
	[ -e /etc/systemd/system/sockets.target.wants/lazy-pages.socket ] && fail "purge left the socket enabled"
	return 0
}

# ---------------------------------------------------------------------------

if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi

# one case, inside the container: package.sh --inside NAME
if [ "${1:-}" = --inside ]; then
	T=$INSIDE
	HPID=
	trap '[ -n "$HPID" ] && kill "$HPID" 2>/dev/null' EXIT
	"in_$2"
	exit $?
fi
# one case on the host: package.sh --one NAME DIR
if [ "${1:-}" = --one ]; then
	T=$3
	"sc_$2"
	exit $?
fi

want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${CASES[@]}")
for n in "${want[@]}"; do
	case " ${CASES[*]} " in
	*" $n "*) ;;
	*) echo "unknown case: $n (see --list)" >&2; exit 2 ;;
	esac
done

built=yes
for n in "${want[@]}"; do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lp-pkg.$n.XXXXXX")
	t0=$(date +%s.%N)
	rc=0
	if [ "$(id -u)" != 0 ]; then
		echo "not root" >"$dir/reason"
		rc=1
	elif [[ $NEEDS_DEBS == *" $n "* ]] && [ $built = no ]; then
		echo "the packages did not build" >"$dir/reason"
		rc=1
	elif [[ $CONTAINER_CASES == *" $n "* ]]; then
		if [ -z "$WITH_SYSTEMD" ]; then
			echo "no ../shared/tools/with-systemd.sh (set LP_WITH_SYSTEMD)" >"$dir/reason"
			rc=1
		else
			# the checkout is bound at its own path (the packages are in it), the case dir at $INSIDE
			(cd "$ROOT" && timeout -k 10 "$CASE_TIMEOUT" "$WITH_SYSTEMD" -b "$dir:$INSIDE" -- \
				bash "$ROOT/tests/package.sh" --inside "$n") >"$dir/scenario.out" 2>&1
			rc=$?
		fi
	else
		timeout -k 10 "$CASE_TIMEOUT" bash "${BASH_SOURCE[0]}" --one "$n" "$dir" >"$dir/scenario.out" 2>&1
		rc=$?
	fi
	[ "$n" = deb-build ] && [ $rc -ne 0 ] && built=no
	suite_report "$n" $rc "$dir" "$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")" "$CASE_TIMEOUT"
	rm -rf "$dir"
done
echo "$SUITE_PASSED passed, $SUITE_FAILED failed"
[ "$SUITE_FAILED" -eq 0 ]
