#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks the daemon's shape from its #include "..." lines: every .c/.h
# under daemon/ sits in a layer folder of the table below, no include
# points up a layer (or outside what the layer may use), and no two
# modules (a .c/.h pair, INNER below) import each other, however indirectly.
#
#   bash tests/check-layers.sh [DIR]     (DIR: the daemon tree, default daemon/)
#
# Prints "PASS rule" or "FAIL rule" with one line per offending include
# (file:line -> file), and ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
top=${1:-daemon}

# The layers, bottom to top: each may include its own folder and the
# layers listed after the colon ("below": every layer above it in this
# table). The page server is its own program: it uses no session machinery.
LAYERS=(
	"lib:"
	"images:below"
	"net:below"
	"source:below"
	"state:below"
	"fill:below"
	"session:below"
	"service:below"
	"server:lib images net"
)

# Headers that are a module's second, inner interface (no .c of their own):
# the module that implements them. imgfile.h is images.c's framing, shared
# with pagemap.c inside the images layer.
INNER=(
	"imgfile.h:images"
)

declare -A rank allow inner
for l in "${INNER[@]}"; do
	inner[${l%%:*}]=${l#*:}
done
i=0
names=()
for l in "${LAYERS[@]}"; do
	name=${l%%:*}
	rank[$name]=$i
	if [ "${l#*:}" = below ]; then
		allow[$name]="${names[*]}"
	else
		allow[$name]=${l#*:}
	fi
	names+=("$name")
	i=$((i + 1))
done

passed=0
failed=0
verdict() {	# verdict RULE PROBLEMS-FILE
	if [ -s "$2" ]; then
		echo "FAIL $1"
		sed 's/^/    /' "$2"
		failed=$((failed + 1))
	else
		echo "PASS $1"
		passed=$((passed + 1))
	fi
}

probs=$(mktemp)
edges=$(mktemp)
trap 'rm -f "$probs" "$edges"' EXIT

# where each file is: basename -> folder (relative to $top)
declare -A where
mapfile -t files < <(find "$top" -name '*.[ch]' | sort)
for f in "${files[@]}"; do
	rel=${f#"$top"/}
	b=${rel##*/}
	dir=${rel%/*}
	[ "$dir" = "$rel" ] && dir=.
	if [ -n "${where[$b]:-}" ]; then
		echo "$f: a second $b (also in $top/${where[$b]}): includes could not tell them apart" >>"$probs"
	fi
	where[$b]=$dir
done

# rule 1: every file is in a layer's folder
for f in "${files[@]}"; do
	b=${f##*/}
	dir=${where[$b]}
	if [ "$dir" = . ]; then
		echo "$f: not in a layer folder (${names[*]}): move it into one, and add it to the build" >>"$probs"
	elif [ -z "${rank[$dir]:-}" ]; then
		echo "$f: folder $dir is not a layer of tests/check-layers.sh (${names[*]})" >>"$probs"
	fi
done
verdict "every daemon file is in a layer folder" "$probs"
: >"$probs"

# rule 2: includes point sideways or down, within what the layer may use
for f in "${files[@]}"; do
	b=${f##*/}
	from=${where[$b]}
	mod=${inner[$b]:-${b%.*}}
	while IFS=: read -r line inc; do
		inc=${inc#*\"}
		inc=${inc%%\"*}
		case "$inc" in
		*.pb-c.h) continue ;;	# generated from proto/ into the build dir
		esac
		if [ "$inc" != "${inc##*/}" ] || [ -z "${where[$inc]:-}" ]; then
			echo "$f:$line: \"$inc\" is not a file of $top/ (include by name; -I flags give the folders)" >>"$probs"
			continue
		fi
		to=${where[$inc]}
		tmod=${inner[$inc]:-${inc%.*}}
		[ "$tmod" != "$mod" ] && echo "$mod $tmod $f:$line $top/$to/$inc" >>"$edges"
		[ "$from" = . ] || [ -z "${rank[$from]:-}" ] || [ "$to" = "$from" ] && continue
		case " ${allow[$from]} " in
		*" $to "*) ;;
		*)
			if [ -n "${rank[$to]:-}" ] && [ "${rank[$to]}" -gt "${rank[$from]}" ]; then
				echo "$f:$line: includes $top/$to/$inc: $from may not import from $to, a layer above it" >>"$probs"
			else
				echo "$f:$line: includes $top/$to/$inc: $from may use only: ${allow[$from]:-its own folder}" >>"$probs"
			fi
			;;
		esac
	done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done
verdict "includes point only sideways or down a layer" "$probs"
: >"$probs"

# rule 3: no circle between modules (tsort names one circle at a time)
sort -u -o "$edges" "$edges"
if ! awk '{ print $1, $2 }' "$edges" | sort -u | tsort >/dev/null 2>"$probs.tsort"; then
	# the first circle tsort reports (fixing it may reveal the next)
	awk '/input contains a loop/ { n++; next } n == 1 { sub(/^tsort: /, ""); printf "%s ", $0 }' \
		"$probs.tsort" | sed 's/ $//' >"$probs.cycle"
	read -r -a cyc <"$probs.cycle"
	echo "modules importing each other: ${cyc[*]} ${cyc[0]}" >>"$probs"
	for ((k = 0; k < ${#cyc[@]}; k++)); do
		a=${cyc[k]}
		b=${cyc[(k + 1) % ${#cyc[@]}]}
		awk -v a="$a" -v b="$b" '($1 == a && $2 == b) || ($1 == b && $2 == a) { print "  " $3 " -> " $4 }' \
			"$edges"
	done | awk '!seen[$0]++' >>"$probs"
fi
rm -f "$probs.tsort" "$probs.cycle"
verdict "no import circle between modules" "$probs"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
