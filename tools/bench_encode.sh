#!/usr/bin/env bash
# Ingest throughput of the rowwise codecs: `embstore ingest` of the benchmark table (1M × 64
# float32) and of the npm table (30k × 384 float16) with each codec, printing rows/s by wall
# clock and ns a row of CPU time (user + system: steadier on a shared machine), best of REPS.
#
#   tools/bench_encode.sh                  # int8 int4 int4h int2h, best of 3
#   CODECS="int8 fp32" REPS=5 tools/bench_encode.sh
#
# For encode-only timing (no LMDB, no file reading) and a byte-for-byte dump of every payload,
# see tools/encode_bench.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

workload=${EMB_BENCH_DIR:-/tmp/embbench}/N1000000_d64
npm=${NPM_EMB:-../shared/data/npm/emb.npy}
[[ -f $npm ]] || npm=/work/shared/data/npm/emb.npy
[[ -f $workload/table.npy ]] || python3 ../shared/bench/make_workload.py --out "$workload"
reps=${REPS:-3}
codecs=${CODECS:-int8 int4 int4h int2h}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

swift build -c release --product embstore >&2
bin="$(swift build -c release --product embstore --show-bin-path)/embstore"

for file in "$workload/table.npy" "$npm"; do
    rows=$(python3 -c "import numpy as np,sys; print(np.load(sys.argv[1], mmap_mode='r').shape[0])" "$file")
    dim=$(python3 -c "import numpy as np,sys; print(np.load(sys.argv[1], mmap_mode='r').shape[1])" "$file")
    for codec in $codecs; do
        best= best_cpu=
        for _ in $(seq "$reps"); do
            rm -rf "$tmp/store"
            /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$bin" ingest "$tmp/store" --table t --vectors "$file" --codec "$codec" > /dev/null
            read -r t user sys < "$tmp/time"
            cpu=$(echo "$user + $sys" | bc -l)
            if [[ -z $best ]] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
            if [[ -z $best_cpu ]] || (( $(echo "$cpu < $best_cpu" | bc -l) )); then best_cpu=$cpu; fi
        done
        printf '%-10s d=%-4s N=%-8s %-6s %6.2f s  %10.0f rows/s   cpu %6.2f s  %7.0f ns/row\n' \
            "$(basename "$(dirname "$file")")" "$dim" "$rows" "$codec" "$best" \
            "$(echo "$rows / $best" | bc -l)" "$best_cpu" "$(echo "$best_cpu * 1000000000 / $rows" | bc -l)"
    done
done
