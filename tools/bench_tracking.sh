#!/usr/bin/env bash
# What online access counting costs lookups: `embstore bench` on one int8 store, alternating
# runs without counting and with `--track-every N` (each run also flushes its counts into the
# store), on the Zipf and uniform streams of ../shared/bench's workload; medians and ratios.
#
#   tools/bench_tracking.sh [WORKLOAD_DIR] [RUNS] [N]
#
# WORKLOAD_DIR defaults to $EMB_BENCH_DIR/N1000000_d64 (python3 ../shared/bench/make_workload.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wl=${1:-${EMB_BENCH_DIR:-/tmp/embbench}/N1000000_d64}
runs=${2:-5}
every=${3:-64}
[[ -f $wl/table.npy ]] || { echo "no $wl/table.npy: python3 ../shared/bench/make_workload.py --out $wl" >&2; exit 1; }
swift build -c release --product embstore >/dev/null
bin=$(swift build -c release --product embstore --show-bin-path)/embstore
work=$(mktemp -d /tmp/embstore-tracking.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" ingest "$work/store" --table t --vectors "$wl/table.npy" --codec int8 --quiet >/dev/null
rate() { "$bin" bench "$work/store" --table t --ids "$1" --json "${@:2}" | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    if d.get('workload') == 'lookup': print(d['rows_per_s'])"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for stream in ids ids_uniform; do
    off=() on=()
    for ((r = 0; r < runs; r++)); do
        off+=("$(rate "$wl/$stream.npy")")
        on+=("$(rate "$wl/$stream.npy" --track-every "$every")")
    done
    a=$(printf '%s\n' "${off[@]}" | median); b=$(printf '%s\n' "${on[@]}" | median)
    python3 -c "print(f'{\"zipf\" if \"$stream\" == \"ids\" else \"uniform\":8} lookups M rows/s: without counting {$a/1e6:.2f}, counting 1 in $every {$b/1e6:.2f}: {$b/$a:.3f}x ({100*(1-$b/$a):.1f}% cost), medians of $runs')"
done
