# SPDX-License-Identifier: MIT
# bench.png from the data tests/bench.sh leaves in DIR: fill progress over
# time (progress-NAME.dat: seconds, MiB filled, faults) and fault latency
# per scenario next to the ceilings (latency.dat: name p50 p99 p99.9, µs).
#   gnuplot -c tests/bench.gp DIR
dir = ARG1
# 8 GiB runs (--full) get a fill panel of their own, or they flatten the
# rest; the latency chart then goes below, full width
big = system("ls ".dir."/progress-*8g.dat 2>/dev/null | grep -v resume")
if (strlen(big)) {
	set terminal pngcairo size 1800,1300 font "sans,10"
} else {
	set terminal pngcairo size 1800,760 font "sans,10"
}
set output dir."/bench.png"
set multiplot title "lazy-pagesd benchmark" font "sans,13"
set size 0.5, (strlen(big) ? 0.47 : 0.95)
set origin 0, (strlen(big) ? 0.5 : 0)

label(f) = substr(f, strstrt(f, "progress-") + 9, strlen(f) - 4)
# colour by access pattern, dashes by source: local solid, remote dashed, delayed dotted
col(f) = strstrt(f, "-seq-") ? "#1f77b4" : strstrt(f, "-random-") ? "#d62728" : "#2ca02c"
dash(f) = strstrt(f, "/progress-remote-") ? 2 : strstrt(f, "/progress-delay-") ? 3 : 1
set xlabel "seconds since the restore-finished marker"
set ylabel "MiB filled (copied + zero pages)"
set key left top
set grid
set yrange [0:*]
files = system("ls ".dir."/progress-*.dat 2>/dev/null | grep -v -e 16m -e procs- -e 8g -e resume")
set title "fill progress (--progress-file, every 10 ms)"
plot for [f in files] f using 1:2 with lines lw 2 lc rgb col(f) dt dash(f) title label(f)
if (strlen(big)) {
	set origin 0.5, 0.5
	set title "fill progress, 8 GiB"
	plot for [f in big] f using 1:2 with lines lw 2 lc rgb col(f) dt dash(f) title label(f)
}

if (strlen(big)) {
	set size 1, 0.47
	set origin 0, 0
} else {
	set origin 0.5, 0
}
set title "fault latency as the faulting thread sees it (p50, p99, p99.9; ceilings: round trip)"
unset xlabel
set ylabel "µs (log scale)"
set logscale y
set yrange [1:*]
set grid ytics
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -35 left nomirror
set key left top
plot dir."/latency.dat" using 2:xtic(1) title "p50", \
     '' using 3 title "p99", \
     '' using 4 title "p99.9"
unset multiplot
