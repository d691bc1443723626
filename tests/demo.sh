#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The lazy restore demo: snapshot a live 1 GiB workload into a CRIU image
# directory, restore it lazily through lazy-pagesd with the restorer harness
# (CRIU's hand-off protocol), verify every byte the restored process reads,
# and print the daemon's summary. With --setup, install and build first.
# LP_DEMO_MIB sets the size, LP_DEMO_SCENARIO the access pattern (random).
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = --setup ]; then
	bash .ci/setup
fi
size=${LP_DEMO_MIB:-1024}
scenario=${LP_DEMO_SCENARIO:-random}
d=$(mktemp -d "${TMPDIR:-/tmp}/lazy-pages-demo.XXXXXX")
trap 'rm -rf "$d"' EXIT

build/tests/lp-dump -D "$d/img" --size "$size"
mkfifo "$d/ready"
build/lazy-pagesd -D "$d/img" --status-fd 3 3>"$d/ready" >"$d/summary" &
daemon=$!
if ! head -c1 "$d/ready" >/dev/null || ! kill -0 "$daemon" 2>/dev/null; then
	echo "demo: lazy-pagesd did not start" >&2
	exit 1
fi
start=$(date +%s%N)
build/tests/lp-restore -D "$d/img" --scenario "$scenario"
end=$(date +%s%N)
wait "$daemon"
echo "demo: restored $size MiB lazily ($scenario access), every byte verified, in $(( (end - start) / 1000000 )) ms"
cat "$d/summary"
