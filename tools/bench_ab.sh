#!/usr/bin/env bash
# What a change costs lookups: `embstore bench` of another build (BASE_BIN, e.g. the release
# binary of the commit before) against this checkout's, on one int8 store, the two alternating
# (which goes first alternates too), on the Zipf and uniform streams of ../shared/bench's
# workload. Prints each build's median rows/s and the paired ratios this/base (median, and mean
# with its standard error: on a busy shared machine a pair's ratio varies by several percent).
#
#   tools/bench_ab.sh BASE_BIN [WORKLOAD_DIR] [RUNS]
#
# CALLGRIND=1 also counts, under valgrind's callgrind with its cache model, the instructions and
# simulated cache misses of each build's Reader.lookup per batch: counts that do not depend on
# what else the machine runs (slow: a minute or two per build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base=${1:?usage: tools/bench_ab.sh BASE_BIN [WORKLOAD_DIR] [RUNS]}
wl=${2:-${EMB_BENCH_DIR:-/tmp/embbench}/N1000000_d64}
runs=${3:-15}
[[ -f $wl/table.npy ]] || { echo "no $wl/table.npy: python3 ../shared/bench/make_workload.py --out $wl" >&2; exit 1; }
swift build -c release --product embstore >/dev/null
ours=$(swift build -c release --product embstore --show-bin-path)/embstore
work=$(mktemp -d /tmp/embstore-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$base" ingest "$work/store" --table t --vectors "$wl/table.npy" --codec int8 --quiet >/dev/null

rate() { "$1" bench "$work/store" --table t --ids "$2" --json | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    if d.get('workload') == 'lookup': print(d['rows_per_s'])"; }
for stream in ids ids_uniform; do
    pairs=()
    for ((r = 0; r < runs; r++)); do
        if ((r % 2)); then b=$(rate "$ours" "$wl/$stream.npy"); a=$(rate "$base" "$wl/$stream.npy")
        else a=$(rate "$base" "$wl/$stream.npy"); b=$(rate "$ours" "$wl/$stream.npy"); fi
        pairs+=("$a,$b")
    done
    python3 - "$stream" "${pairs[@]}" <<'PY'
import statistics as st, sys
name = "zipf" if sys.argv[1] == "ids" else "uniform"
a, b = zip(*(map(float, p.split(",")) for p in sys.argv[2:]))
r = [y / x for x, y in zip(a, b)]
print(f"{name:8} base {st.median(a)/1e6:.2f}, this {st.median(b)/1e6:.2f} M rows/s (medians); this/base paired: "
      f"median {st.median(r):.4f}, mean {st.mean(r):.4f} ± {st.stdev(r)/len(r)**0.5:.4f} (n={len(r)})")
PY
done

if [[ -n ${CALLGRIND:-} ]]; then
    for build in base ours; do
        exe=$([[ $build == base ]] && echo "$base" || echo "$ours")
        strip --strip-debug -o "$work/$build" "$exe"   # valgrind cannot read Swift's debug info
        valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$work/$build.cg" \
            "$work/$build" bench "$work/store" --table t --ids "$wl/ids.npy" --rep-seconds 0.05 >/dev/null 2>&1
        python3 - "$build" "$work/$build.cg" <<'PY'
import re, subprocess, sys
build, path = sys.argv[1:]
lookup = r"6ReaderC6lookup_3ids4into7missingSi"   # Reader.lookup(_:ids:into:missing:), what bench calls
names, calls, current = {}, 0, None
for line in open(path):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line.strip())
    if m:
        if m.group(3): names[m.group(2)] = m.group(3)
        if m.group(1) == "cfn": current = names.get(m.group(2))
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and current and re.search(lookup, current): calls += int(m.group(1))
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--show=Ir,D1mr,DLmr", path],
                     capture_output=True, text=True).stdout
row = next(l for l in out.splitlines() if re.search(lookup, l))
ir, d1, ll = (int(n.replace(",", "")) for n in re.findall(r"([\d,]+) \(", row))
print(f"{build:5} per batch of 512 (zipf, {calls} batches): {ir/calls:,.0f} instructions, {d1/calls:.1f} D1 misses, {ll/calls:.1f} LL misses")
PY
    done
fi
