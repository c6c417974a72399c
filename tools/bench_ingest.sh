#!/usr/bin/env bash
# Ingest rows/s of `embstore ingest` beside the raw C LMDB bulk load of ../shared/bench
# (c_lmdb: mdb_put MDB_APPEND|MDB_RESERVE into one database, no sync, the table in memory),
# measured in the same run, repetitions interleaved; medians and ratios printed.
#
#   tools/bench_ingest.sh [WORKLOAD_DIR] [REPS]
#
# WORKLOAD_DIR defaults to $EMB_BENCH_DIR/N1000000_d64 (made by ../shared/bench/make_workload.py;
# use --n 2000000 for the issue's 2M-row figure). embstore runs as a whole process: it reads
# table.npy (from the page cache after the first run), and for the budget it also reads freq.npy.
# Peak RSS is from /usr/bin/time.
#
# CODECS lists the cases (default: every plain codec and the budget), e.g.
# CODECS="fp32 int8" tools/bench_ingest.sh; BASE_BIN=/path/to/embstore adds the same cases run
# with another build (labelled "base"), interleaved, for before/after ratios in one run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared=$(cd ../shared && pwd)
wl=${1:-${EMB_BENCH_DIR:-/tmp/embbench}/N1000000_d64}
reps=${2:-3}
[[ -f $wl/table.npy ]] || { echo "no $wl/table.npy: python3 $shared/bench/make_workload.py --out $wl" >&2; exit 1; }
lib=${EMB_BENCH_DIR:-/tmp/embbench}/build/libpeers.so
if [[ ! -f $lib ]]; then
    mkdir -p "$(dirname "$lib")"
    gcc -O3 -march=native -fno-math-errno -shared -fPIC -o "$lib" "$shared/bench/cpeers.c" -llmdb
fi
swift build -c release --product embstore >/dev/null
bin=$(swift build -c release --product embstore --show-bin-path)/embstore
work=$(mktemp -d /tmp/embstore-ingest.XXXXXX)
trap 'rm -rf "$work"' EXIT

raw() {   # rows/s of c_lmdb ingest for codec $1 (0 fp32, 2 int8)
    python3 - "$lib" "$wl/table.npy" "$work/raw" "$1" <<'EOF'
import ctypes, os, shutil, sys
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
lib.lmdb_ingest.restype = ctypes.c_double
lib.lmdb_ingest.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_int]
x = np.ascontiguousarray(np.load(sys.argv[2]))
shutil.rmtree(sys.argv[3], ignore_errors=True); os.makedirs(sys.argv[3])
t = lib.lmdb_ingest(sys.argv[3].encode(), int(sys.argv[4]), x.ctypes.data, x.shape[0], x.shape[1], 65536, 0)
print(f"{x.shape[0] / t:.0f}")
EOF
}

ours() {  # rows/s and peak RSS (KB) of `$1 ingest` with the remaining arguments
    local exe=$1
    shift
    rm -rf "$work/store"
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/rss" "$exe" ingest "$work/store" --table t --vectors "$wl/table.npy" "$@" >/dev/null
    end=$(date +%s.%N)
    local n
    n=$(python3 -c "import numpy as np; print(np.load('$wl/table.npy', mmap_mode='r').shape[0])")
    python3 -c "print(f'{$n / ($end - $start):.0f} $(cat "$work/rss")')"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

cases=(${CODECS:-fp32 fp16 int8 int4 int4h int2h budget})
builds=(ours)
[[ -n ${BASE_BIN:-} ]] && builds+=(base)
declare -A rows rss
for ((r = 0; r < reps; r++)); do
    rows[raw_fp32]+="$(raw 0) "
    rows[raw_int8]+="$(raw 2) "
    for case in "${cases[@]}"; do
        if [[ $case == budget ]]; then args=(--budget 0.25 --freq "$wl/freq.npy"); else args=(--codec "$case"); fi
        for build in "${builds[@]}"; do
            exe=$bin
            [[ $build == base ]] && exe=$BASE_BIN
            read -r rate mem < <(ours "$exe" "${args[@]}")
            rows[$build/$case]+="$rate "
            rss[$build/$case]+="$mem "
        done
    done
done
base=$(echo "${rows[raw_fp32]}" | tr ' ' '\n' | grep . | median)
printf '%-34s %14s %10s %12s\n' "ingest ($(basename "$wl"))" "rows/s (median)" "x c_lmdb" "peak RSS MB"
keys=(raw_fp32 raw_int8)
for case in "${cases[@]}"; do for build in "${builds[@]}"; do keys+=("$build/$case"); done; done
for key in "${keys[@]}"; do
    m=$(echo "${rows[$key]}" | tr ' ' '\n' | grep . | median)
    mem=""
    [[ -n ${rss[$key]:-} ]] && mem=$(echo "${rss[$key]}" | tr ' ' '\n' | grep . | median | awk '{printf "%.0f", $1 / 1024}')
    label=$key
    case $key in raw_fp32) label="c_lmdb fp32 (append, nosync)";; raw_int8) label="c_lmdb int8 (append, nosync)";;
        */budget) label="embstore --budget 0.25";; *) label="embstore --codec ${key#*/}";; esac
    [[ $key == base/* ]] && label="base: $label"
    printf '%-34s %14.0f %10.2f %12s\n' "$label" "$m" "$(python3 -c "print($m / $base)")" "$mem"
done
