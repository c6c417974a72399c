#!/usr/bin/env bash
# embstore quickstart: install what is missing, build, and run `embstore demo`, the main job on a
# generated 200,000 x 64 table in well under a minute: ingest under a byte budget beside an int8
# copy, stats and the chart, eval against the generated rows, lookup throughput, and the commands
# that repeat each step by hand.
#
#   tools/quickstart.sh [--codecs] [DEMO OPTIONS]
#
#   --codecs      afterwards, also load a 100k x 64 table once per codec and show size and error
#                 per codec, checking tools/embstore_reader.py against embstore export
#   DEMO OPTIONS  go to `embstore demo`: --rows N, --dimension D, --budget R, --seed S, --dir DIR
#
# Environment:
#   EMBSTORE_QUICKSTART_DIR   where the files and stores go: the demo's in its demo/ (recreated on
#                             every run), the per-codec tables' in store/ and out/ (default: the
#                             demo makes a new directory under $TMPDIR or /tmp and prints it; the
#                             per-codec tables go to /tmp/embstore-quickstart)
#   EMBSTORE_SCRATCH_PATH     optional `swift build --scratch-path` (default: SwiftPM's .build)
#   QUICKSTART_N, QUICKSTART_D  size of the per-codec table (default 100000 x 64)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*"; }

with_codecs=0
demo_args=()
for arg in "$@"; do
    case $arg in
        --codecs) with_codecs=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) demo_args+=("$arg") ;;
    esac
done

# --- system packages (apt), only when missing -----------------------------------------------
need_apt=()
pkg-config --exists lmdb 2>/dev/null || need_apt+=(liblmdb-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v mdb_stat >/dev/null 2>&1 || need_apt+=(lmdb-utils)
# The suite renders the rollout readiness report in headless Chromium (RolloutCommandTests).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    say "installing ${need_apt[*]} with apt-get"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${need_apt[@]}"
fi

# --- Python packages (pip), only when not importable ----------------------------------------
need_pip=()
python3 -c 'import numpy' 2>/dev/null || need_pip+=(numpy)
python3 -c 'import lmdb' 2>/dev/null || need_pip+=(lmdb)
python3 -c 'import pytest' 2>/dev/null || need_pip+=(pytest)   # the suite runs the Python package's tests
python3 -c 'import cffi' 2>/dev/null || need_pip+=(cffi)       # which loads the C API with cffi
python3 -c 'import ray' 2>/dev/null || need_pip+=(ray)         # tools/shard_build.py, which the suite runs on a local Ray
if ((${#need_pip[@]})); then
    say "installing ${need_pip[*]} with pip"
    if ! python3 -m pip install --quiet "${need_pip[@]}"; then
        # Debian marks its Python "externally managed" (PEP 668); install for this user instead.
        echo "plain pip install failed; retrying with --user --break-system-packages" >&2
        python3 -m pip install --quiet --user --break-system-packages "${need_pip[@]}"
    fi
fi

# --- build ------------------------------------------------------------------------------------
build=(swift build -c release --product embstore)
if [[ -n ${EMBSTORE_SCRATCH_PATH:-} ]]; then build+=(--scratch-path "$EMBSTORE_SCRATCH_PATH"); fi
say "${build[*]}"
"${build[@]}"
bin="$("${build[@]}" --show-bin-path)/embstore"
[[ -x $bin ]] || { echo "quickstart: built binary not found at $bin" >&2; exit 1; }

# --- the demo -----------------------------------------------------------------------------------
demo=("$bin" demo)
if [[ -n ${EMBSTORE_QUICKSTART_DIR:-} ]]; then
    rm -rf "$EMBSTORE_QUICKSTART_DIR/demo"
    demo+=(--dir "$EMBSTORE_QUICKSTART_DIR/demo")
fi
demo+=(${demo_args[@]+"${demo_args[@]}"})
say "embstore demo ${demo_args[*]+${demo_args[*]}}"
"${demo[@]}"

((with_codecs)) || exit 0

# --- with --codecs: one table per codec, its size and error, the Python reader against export ----
dir=${EMBSTORE_QUICKSTART_DIR:-/tmp/embstore-quickstart}
n=${QUICKSTART_N:-100000}
d=${QUICKSTART_D:-64}
store="$dir/store"
out="$dir/out"
mkdir -p "$dir"
rm -rf "$store" "$out"
mkdir -p "$out"

say "generating a $n x $d table in $dir"
python3 tools/make_table.py --out "$dir" --n "$n" --d "$d" --seed 7

# table name -> codec, in the order they are shown
tables=(fp32 fp16 int8 int4 reduced16 bucket1024 bucket1024s tc2 tc4)
codecs=(fp32 fp16 int8 int4 reduced:16 bucket:1024 bucket:1024:scaled tc:2 tc:4)

say "ingesting into $store, one table per codec"
for i in "${!tables[@]}"; do
    "$bin" ingest "$store" --table "${tables[$i]}" --vectors "$dir/table.npy" \
        --ids "$dir/ids.npy" --codec "${codecs[$i]}"
done

say "embstore info $store"
"$bin" info "$store"
"$bin" info "$store" --json > "$out/info.json"

say "exporting every table"
for t in "${tables[@]}"; do
    "$bin" export "$store" --table "$t" --out "$out/$t.npy" --ids-out "$out/$t.ids.npy" >/dev/null
done

say "error per codec (relative L2 over the whole table) and tools/embstore_reader.py vs embstore export"
python3 - "$dir" "$store" "$out" "${tables[*]}" "${codecs[*]}" <<'PY'
import json, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tools"))
import numpy as np
from embstore_reader import Store

src_dir, store_path, out_dir, tables, codecs = sys.argv[1:]
tables, codecs = tables.split(), codecs.split()
x = np.load(os.path.join(src_dir, "table.npy")).astype(np.float64)
src_ids = np.load(os.path.join(src_dir, "ids.npy"))
norm = np.linalg.norm(x)
info = {t["name"]: t for t in json.load(open(os.path.join(out_dir, "info.json")))["tables"]}

print(f"{'codec':<20} {'bytes/row':>9} {'+shared':>8} {'rel. L2 error':>13} {'reader = export':>16}")
worst = 0.0
with Store(store_path) as store:
    for table, codec in zip(tables, codecs):
        t = info[table]
        rows = t["rows"]
        record = sum(c["bytes"] for c in t["codecs"]) / rows
        shared = (sum(c["bytes"] for c in t["codecs"]) + t["bucketBytes"]) / rows
        y = np.load(os.path.join(out_dir, f"{table}.npy"))
        ids = np.load(os.path.join(out_dir, f"{table}.ids.npy"))
        assert np.array_equal(ids, src_ids), f"{table}: exported ids differ from the source ids"
        err = np.linalg.norm(y.astype(np.float64) - x) / norm
        rids, ry = store.export(table)
        assert np.array_equal(rids, ids), f"{table}: reader ids differ from export ids"
        diff = float(np.max(np.abs(ry - y))) if y.size else 0.0
        worst = max(worst, diff)
        same = "identical" if diff == 0 else f"max|d|={diff:.1e}"
        print(f"{codec:<20} {record:>9.1f} {shared:>8.1f} {err:>13.2e} {same:>16}")
print("\nbytes/row: row records only (tag + payload); +shared adds the table's bucket rows.")
print("Parameter records are not counted (a reduced table's PCA basis, a tc table's basis and model: shared by all rows).")
if worst > 1e-6 * float(np.abs(x).max()):
    sys.exit(f"quickstart: the Python reader disagrees with embstore export (max diff {worst})")
PY
say "done: store in $store, exports in $out"
