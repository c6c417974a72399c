#!/usr/bin/env bash
# Issue 3's start-up target: a 10,000,000-row store opens and serves its first batch in
# under 100 ms. Builds a 10M x 64 int8 store once (about 2.6 GB of float32 input, ~1 minute
# to ingest), then runs `embstore bench` in fresh processes, whose first JSON line
# ("workload": "open_first_batch") times open + table + reader + first batch of 512 ids.
#
#   tools/bench_open_10m.sh            # warm page cache (the file was just written)
#   COLD=1 tools/bench_open_10m.sh     # also drop the page cache first (needs root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${OPEN_BENCH_DIR:-/tmp/embstore-open10m}
n=${N:-10000000}
mkdir -p "$dir"
swift build -c release --product embstore >&2
bin="$(swift build -c release --product embstore --show-bin-path)/embstore"
if [[ ! -f $dir/store/data.mdb ]]; then
    python3 - "$dir" "$n" <<'PY'
import sys, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
table = np.lib.format.open_memmap(f"{out}/table.npy", mode="w+", dtype=np.float32, shape=(n, 64))
for start in range(0, n, 1_000_000):
    stop = min(n, start + 1_000_000)
    table[start:stop] = rng.standard_normal((stop - start, 64), dtype=np.float32) * 0.1
table.flush()
np.save(f"{out}/ids.npy", rng.integers(0, n, size=512 * 64, dtype=np.uint64))
PY
    /usr/bin/time -f "ingest: %e s, max RSS %M KB" "$bin" ingest "$dir/store" --table t --vectors "$dir/table.npy" --codec int8 >&2
    rm -f "$dir/table.npy"
fi
for run in 1 2 3 4 5; do
    if [[ ${COLD:-0} == 1 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
    "$bin" bench "$dir/store" --table t --ids "$dir/ids.npy" --reps 1 --rep-seconds 0.05 --json > "$dir/run.jsonl"
    head -1 "$dir/run.jsonl"
done
