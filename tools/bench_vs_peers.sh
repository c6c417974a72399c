#!/usr/bin/env bash
# Puts embstore beside the peers of ../shared/bench in one run, on the same workload files.
#
#   tools/bench_vs_peers.sh                       # N=1,000,000 d=64, peers c_dense* + c_lmdb*
#   tools/bench_vs_peers.sh --small               # N=100,000
#   PEERS=all tools/bench_vs_peers.sh             # every peer shared/bench knows (slow)
#   PEERS=c_dense tools/bench_vs_peers.sh         # peers by name prefix (default c_dense,c_lmdb,faiss;
#                                                 # faiss is skipped when faiss-cpu is not installed)
#   PEERS=c_dense,c_decode,torch tools/bench_vs_peers.sh   # issue 10's run: FBGEMM through torch (pip install torch)
#
# embstore runs fp32, fp16, int8 and int4h (FBGEMM's 4-bit rows: the peers' "int4") stores; on
# the int8 store also pooled lookups as multi-table requests of 4 features against the 4
# single-table calls they replace (bench --features 4).
#
# Writes $OUT_DIR (default /tmp/embstore-bench) /peers.jsonl, embstore.jsonl and report.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shared=${SHARED_BENCH:-../shared/bench}
n=1000000
d=64
if [[ ${1:-} == --small ]]; then n=100000; fi
out=${OUT_DIR:-/tmp/embstore-bench}
workload=${EMB_BENCH_DIR:-/tmp/embbench}/N${n}_d${d}
reps=${REPS:-5}
mkdir -p "$out"

[[ -f $workload/table.npy ]] || python3 "$shared/make_workload.py" --out "$workload" --n "$n" --d "$d"

only=()
[[ ${PEERS:-} == all ]] || only=(--only "${PEERS:-c_dense,c_lmdb,faiss}")
bash "$shared/run_peers.sh" --n "$n" --d "$d" --out "$out/peers.jsonl" -- "${only[@]}" --reps "$reps" > "$out/peers.log"

swift build -c release --product embstore
bin="$(swift build -c release --product embstore --show-bin-path)/embstore"
: > "$out/embstore.jsonl"
for codec in fp32 fp16 int8 int4h; do
    store="$out/store-$codec"
    rm -rf "$store"
    "$bin" ingest "$store" --table t --vectors "$workload/table.npy" --codec "$codec" >&2
    # The store's pages as a serving process finds them after a deployment or restart, read
    # from disk through its map (huge pages, Store.Options.hugePages), not as the ingest's
    # writes left them in the page cache (4 KiB pages): the peers' NumPy tables are on huge
    # pages too (NumPy advises them for large arrays).
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$store/data.mdb"
    for stream in ids ids_uniform; do
        extra=()
        [[ $stream == ids ]] && extra=(--bags "$workload/bags.npy" --offsets "$workload/offsets.npy")
        # The decode-only lines do not depend on the store: print them once.
        [[ $stream == ids && $codec == int8 ]] && extra+=(--decode-only --features 4)
        "$bin" bench "$store" --table t --ids "$workload/$stream.npy" --table-npy "$workload/table.npy" \
            --reps "$reps" --json "${extra[@]}" >> "$out/embstore.jsonl"
    done
    # Two reader threads on the Zipf stream (each thread starts at its own batch).
    "$bin" bench "$store" --table t --ids "$workload/ids.npy" --threads 2 --reps "$reps" --json \
        | grep '"lookup"' >> "$out/embstore.jsonl"
    rm -rf "$store"
done
python3 "$shared/report.py" "$out/peers.jsonl" "$out/embstore.jsonl" | tee "$out/report.txt"
python3 tools/bench_summary.py "$out/peers.jsonl" "$out/embstore.jsonl" | tee "$out/summary.txt"
