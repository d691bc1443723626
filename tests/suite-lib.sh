# SPDX-License-Identifier: MIT
# suite-lib.sh: the report of a suite that runs each scenario in a directory
# of its own (service.sh, systemd.sh): source it, call suite_report once per
# scenario, and print "$SUITE_PASSED passed, $SUITE_FAILED failed" at the end.
# A scenario writes DIR/reason when it fails and DIR/info lines worth
# showing when it passes; its output is in DIR/scenario.out.

SUITE_PASSED=0
SUITE_FAILED=0

# suite_want ARGS...: the scenarios asked for, into SUITE_WANT (all of
# SCENARIOS if none); --list prints SCENARIOS and exits; an unknown name
# (no function sc_NAME) exits 2.
suite_want() {
	local n
	if [ "${1:-}" = "--list" ]; then
		printf '%s\n' "${SCENARIOS[@]}"
		exit 0
	fi
	SUITE_WANT=("$@")
	[ ${#SUITE_WANT[@]} -gt 0 ] || SUITE_WANT=("${SCENARIOS[@]}")
	for n in "${SUITE_WANT[@]}"; do
		declare -F "sc_$n" >/dev/null || { echo "unknown scenario: $n (see --list)" >&2; exit 2; }
	done
}

# suite_report NAME RC DIR SECONDS TIMEOUT [TITLE FILE LINES]...: prints
# "PASS NAME (SECONDS s)" and the info lines, or "FAIL NAME: reason" (the
# reason file, the timeout, or the end of scenario.out) and the last LINES
# of each FILE (in DIR) that is not empty under "--- TITLE (tail) ---".
# Returns RC's verdict (0 passed).
suite_report() {
	local name=$1 rc=$2 dir=$3 secs=$4 tmo=$5 reason
	shift 5
	if [ "$rc" -eq 0 ] && [ ! -s "$dir/reason" ]; then
		SUITE_PASSED=$((SUITE_PASSED + 1))
		echo "PASS $name (${secs} s)"
		[ -s "$dir/info" ] && sed 's/^/    /' "$dir/info"
		return 0
	fi
	SUITE_FAILED=$((SUITE_FAILED + 1))
	if [ -s "$dir/reason" ]; then
		reason=$(cat "$dir/reason")
	elif [ "$rc" -eq 124 ]; then
		reason="timed out after ${tmo} s"
	else
		reason="scenario script exit $rc: $(tail -n 2 "$dir/scenario.out" | tr '\n' ' ')"
	fi
	echo "FAIL $name: $reason"
	while [ $# -ge 3 ]; do
		if [ -s "$dir/$2" ]; then
			echo "    --- $1 (tail) ---"
			tail -n "$3" "$dir/$2" | sed 's/^/    /'
		fi
		shift 3
	done
	return 1
}
