#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds a sanitizer variant of everything into build-KIND/ and, with --run,
# runs the test suite against it. KIND: asan (ASan + UBSan) or tsan.
# The variant's build file is build.ninja with its output dir and flags
# swapped, so the one hand-written build.ninja stays the only description.
# Usage: bash tests/sanitize.sh asan|tsan [--run [tests/run arguments]]
set -eu
cd "$(dirname "$0")/.."
kind=${1:?usage: tests/sanitize.sh asan|tsan [--run [args]]}
shift
case "$kind" in
asan) flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
tsan) flags="-O1 -g -fsanitize=thread" ;;
*) echo "tests/sanitize.sh: unknown kind '$kind' (asan or tsan)" >&2; exit 2 ;;
esac
out=build-$kind
mkdir -p "$out"
# every output path moves from build/ to build-KIND/; cc and flags are overridden after the include
sed -e "s|build/|$out/|g" -e "s|^builddir = build$|builddir = $out|" build.ninja >"$out/variant.ninja"
for f in $(grep -ho '^include [^ ]*' build.ninja tests/build.ninja | awk '{print $2}'); do
	mkdir -p "$out/$(dirname "$f")"
	sed -e "s|build/|$out/|g" "$f" >"$out/$f"
done
sed -i -e "s|^include \(.*\)$|include $out/\1|" "$out/variant.ninja" "$out/tests/build.ninja"
# a sanitized shared library leaves the runtime's symbols to the executable
sed -i -e "s|-Wl,--no-undefined||" "$out/client/client.ninja"
cat >"$out/build.ninja" <<EON
include $out/variant.ninja
cc = clang
cflags = $flags
ldflags = $flags
EON
ninja -f "$out/build.ninja"
if [ "${1:-}" = --run ]; then
	shift
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
	if [ "$kind" = tsan ]; then
		# TSan's shadow memory takes the fixed addresses the workloads use:
		# the test tools come from the plain build, the daemon and server from this one
		ninja >/dev/null
		export LP_DUMP=$PWD/build/tests/lp-dump LP_RESTORE=$PWD/build/tests/lp-restore
		export LP_DELAY=$PWD/build/tests/lp-delay LP_FAKEPS=$PWD/build/tests/lp-fakeps
	fi
	LP_BUILD=$out bash tests/run "$@"
fi
