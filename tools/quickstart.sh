#!/usr/bin/env bash
# embstore quickstart: install what is missing, build, load a 100k x 64 table with every codec,
# and show size and error per codec.
#
#   tools/quickstart.sh
#
# Environment:
#   EMBSTORE_QUICKSTART_DIR   where the table and the store go (default /tmp/embstore-quickstart;
#                             its store/ and out/ are recreated on every run)
#   EMBSTORE_SCRATCH_PATH     optional `swift build --scratch-path` (default: SwiftPM's .build)
#   QUICKSTART_N, QUICKSTART_D  table size (default 100000 x 64)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- system packages (apt), only when missing -----------------------------------------------
need_apt=()
pkg-config --exists lmdb 2>/dev/null || need_apt+=(liblmdb-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v mdb_stat >/dev/null 2>&1 || need_apt+=(lmdb-utils)
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

# --- data -------------------------------------------------------------------------------------
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
