#!/usr/bin/env bash
# Lookups on a mixed-codec table against the same rows stored int8, in the same run (issue 8's
# second target: the mixed table within 0.8x of int8 on the Zipf stream).
#
#   tools/bench_mixed.sh [WORKLOAD_DIR] [RUNS]
#
# Builds one store with table `mix` (--budget 0.25 --weighting traffic with the workload's
# freq.npy: int8 and fp16 for hot rows, int4h and tc for cold ones, so a sized segment) and
# table `int8` (--codec int8), then runs `embstore bench` on each table and each id stream
# (ids.npy: Zipf, ids_uniform.npy: uniform), the tables alternating, RUNS times (default 5;
# each run is bench's own median of 5 reps); prints the median rows/s over runs and the ratio.
# WEIGHTING=retrieval builds `mix` with the default weighting instead of traffic.
# BASE_BIN=/path/to/embstore also builds a store with that binary and benches it the same way,
# interleaved, as "base" (before/after in one run). Noisy shared machine: compare ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wl=${1:-${EMB_BENCH_DIR:-/tmp/embbench}/N1000000_d64}
runs=${2:-5}
weighting=${WEIGHTING:-traffic}
[[ -f $wl/table.npy && -f $wl/freq.npy ]] || { echo "no $wl/table.npy or freq.npy: python3 ../shared/bench/make_workload.py --out $wl" >&2; exit 1; }
swift build -c release --product embstore >/dev/null
bin=$(swift build -c release --product embstore --show-bin-path)/embstore
work=$(mktemp -d /tmp/embstore-mixed.XXXXXX)
trap 'rm -rf "$work"' EXIT

builds=(ours)
[[ -n ${BASE_BIN:-} ]] && builds+=(base)
exe() { [[ $1 == base ]] && echo "$BASE_BIN" || echo "$bin"; }
for build in "${builds[@]}"; do
    b=$(exe "$build")
    "$b" ingest "$work/$build" --table mix --vectors "$wl/table.npy" --freq "$wl/freq.npy" --budget 0.25 --weighting "$weighting" --quiet \
        | sed -n '/^  [a-z]/p' | sed "s/^/$build mix: /" >&2
    "$b" ingest "$work/$build" --table int8 --vectors "$wl/table.npy" --codec int8 --quiet >/dev/null
done

declare -A rate
for ((r = 0; r < runs; r++)); do
    for stream in ids ids_uniform; do
        for build in "${builds[@]}"; do
            for table in mix int8; do
                v=$("$(exe "$build")" bench "$work/$build" --table "$table" --ids "$wl/$stream.npy" --json \
                    | python3 -c 'import json,sys; print([r for r in map(json.loads, sys.stdin) if r["workload"] == "lookup"][0]["rows_per_s"])')
                rate[$build/$stream/$table]+="$v "
            done
        done
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
printf '%-6s %-8s %16s %16s %12s   %s\n' build stream "mix rows/s" "int8 rows/s" "mix/int8" "per-run ratios"
for build in "${builds[@]}"; do
    for stream in ids ids_uniform; do
        m=$(echo "${rate[$build/$stream/mix]}" | median)
        i=$(echo "${rate[$build/$stream/int8]}" | median)
        ratios=$(python3 -c "a='${rate[$build/$stream/mix]}'.split(); b='${rate[$build/$stream/int8]}'.split(); print(' '.join(f'{float(x)/float(y):.2f}' for x, y in zip(a, b)))")
        label=zipf; [[ $stream == ids_uniform ]] && label=uniform
        printf '%-6s %-8s %16.0f %16.0f %12.2f   %s\n' "$build" "$label" "$m" "$i" "$(python3 -c "print($m / $i)")" "$ratios"
    done
done
