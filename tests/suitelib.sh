# SPDX-License-Identifier: MIT
# suitelib.sh: the verdict of one case, as every suite prints it; sourced.
#
#   suite_verdict NAME RC DIR SECONDS TIMEOUT
#
# Prints "PASS NAME (SECONDS s)" and DIR/info indented, or "FAIL NAME:
# REASON" (DIR/reason, else the timeout, else the tail of DIR/case.out),
# and counts it in the caller's $passed or $failed. Returns RC's verdict.

suite_verdict() {
	local name=$1 rc=$2 dir=$3 secs=$4 limit=$5 reason
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		echo "PASS $name (${secs} s)"
		[ -s "$dir/info" ] && sed 's/^/    /' "$dir/info"
		return 0
	fi
	failed=$((failed + 1))
	if [ -s "$dir/reason" ]; then
		reason=$(cat "$dir/reason")
	elif [ "$rc" -eq 124 ]; then
		reason="timed out after ${limit} s"
	else
		reason="exit $rc: $(tail -n 3 "$dir/case.out" 2>/dev/null | tr '\n' ' ')"
	fi
	echo "FAIL $name: $reason"
	return 1
}
