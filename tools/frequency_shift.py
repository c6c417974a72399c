#!/usr/bin/env python3
"""Issue 9's frequency-shift check for `embstore repack`.

    python3 tools/frequency_shift.py [--dir D] [--rows 200000] [--dimension 64] [--budget 0.125]
                                     [--track-every 64] [--seed 1] [--bin .build/release/embstore]

1. Generates a table shaped like trained embeddings (../shared/bench/make_workload.py's rows, dense
   ids 0..N-1) and two Zipf(1.05) count vectors over it: A and B, each a different random
   permutation of the ranks (each row's count Poisson with mean 100·N·P(rank)), and a lookup
   stream of 4,000 batches of 512 ids drawn from B.
2. Ingests the table under `--budget B --weighting traffic` with counts A (store `before`).
3. Serves the B stream with `embstore bench --track-every N`, which counts one lookup in N and
   flushes the counts into the store (`t<T>/counts`).
4. `embstore repack before --out after --tracked --source X.npy --budget B --weighting traffic`.
5. Scores both with `embstore eval --freq`: the traffic-weighted error under B (weighted_mse:
   Σ Bᵢ·‖xᵢ − x̂ᵢ‖²/d ÷ Σ Bᵢ) and under A, and their data.mdb bytes against the budget (less the
   access counts database, t1/counts, which the table's budget does not cover; needs py-lmdb).

For reference it also repacks without `--source` (rows can then only be demoted or kept: the
rows B made hot cannot be promoted, and the tool says how many) and ingests afresh with B itself
(what repack would reach with exact counts). Exits 1 if the error under B does not drop or the
repacked store exceeds the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import lmdb
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "..", "shared", "bench"))
from make_workload import make_table  # noqa: E402  (../shared/bench: the workload's own generator)


def zipf_counts(rng: np.random.Generator, n: int, s: float = 1.05) -> np.ndarray:
    """Counts of n rows: P(rank r) ∝ r^-s over a random permutation, each Poisson(100·N·P)."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    p /= p.sum()
    counts = np.empty(n, dtype=np.float64)
    counts[rng.permutation(n)] = rng.poisson(100.0 * n * p)
    return counts


def run(args: list[str], quiet: bool = False) -> str:
    started = time.time()
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    if not quiet:
        print(f"  {time.time() - started:6.1f} s  {' '.join(os.path.relpath(a) if a.startswith('/') else a for a in args)}")
    return result.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/embstore-frequency-shift")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dimension", type=int, default=64)
    ap.add_argument("--budget", type=float, default=0.125)
    ap.add_argument("--track-every", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(REPO, ".build", "release", "embstore"))
    ap.add_argument("--no-build", action="store_true", help="use --bin as it is")
    a = ap.parse_args()

    if not a.no_build:
        subprocess.run(["swift", "build", "-c", "release", "--product", "embstore"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    binary = os.path.abspath(a.bin)
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    path = lambda name: os.path.join(a.dir, name)  # noqa: E731

    n, d = a.rows, a.dimension
    rng = np.random.default_rng(a.seed)
    print(f"frequency shift: {n:,} rows × {d}, budget {a.budget:g} of float32, --weighting traffic, tracking one lookup in {a.track_every}")
    np.save(path("vectors.npy"), make_table(rng, n, d, 1024))
    counts_a, counts_b = zipf_counts(rng, n), zipf_counts(rng, n)
    np.save(path("freq_a.npy"), counts_a)
    np.save(path("freq_b.npy"), counts_b)
    lookups = rng.choice(n, size=4000 * 512, p=counts_b / counts_b.sum()).astype(np.uint64)
    np.save(path("lookups_b.npy"), lookups)
    hot_a = set(np.argsort(-counts_a)[: n // 100])
    hot_b = np.argsort(-counts_b)[: n // 100]
    print(f"  A and B share {sum(1 for i in hot_b if i in hot_a)} of their {n // 100:,} hottest rows; "
          f"the hottest 1% of rows under B take {counts_b[hot_b].sum() / counts_b.sum():.1%} of B's lookups")

    policy = ["--budget", f"{a.budget}", "--weighting", "traffic"]
    source = ["--source", path("vectors.npy")]
    e = binary
    run([e, "ingest", path("before"), "--table", "t", "--vectors", path("vectors.npy"), "--freq", path("freq_a.npy"), "--quiet"] + policy)
    bench = json.loads(run([e, "bench", path("before"), "--table", "t", "--ids", path("lookups_b.npy"), "--track-every", str(a.track_every),
                            "--reps", "3", "--rep-seconds", "0.5", "--json"]).splitlines()[1])
    tracked = json.loads(run([e, "stats", path("before"), "--table", "t", "--tracked", "--json"], quiet=True))["tables"][0]["lookups"]
    print(f"  bench: {bench['rows_per_s'] / 1e6:.2f} M rows/s with tracking; {bench['tracked_ids_flushed']:,} ids flushed, "
          f"{tracked['rows_counted']:,} rows counted, {tracked['total']:,.0f} lookups kept")
    report = json.loads(run([e, "repack", path("before"), "--out", path("after"), "--tracked", "--json"] + source + policy))["tables"][0]
    refused = json.loads(run([e, "repack", path("before"), "--out", path("after_no_source"), "--tracked", "--json"] + policy))["tables"][0]
    run([e, "ingest", path("fresh_b"), "--table", "t", "--vectors", path("vectors.npy"), "--freq", path("freq_b.npy"), "--quiet"] + policy)

    def score(store: str, freq: str) -> float:
        out = run([e, "eval", path(store), "--table", "t", "--source", path("vectors.npy"), "--freq", path(freq), "--query-count", "100",
                   "--dot-sample", "100", "--json", "--quiet"], quiet=True)
        return json.loads(out)["overall"]["weighted_mse"]

    def counts_bytes(store: str) -> int:
        """Bytes of the store's access counts database (t1/counts), which repack carries over."""
        env = lmdb.open(path(store), readonly=True, lock=False, max_dbs=16, subdir=True)
        try:
            with env.begin() as txn:
                try:
                    db = env.open_db(b"t1/counts", txn=txn, create=False)
                except lmdb.NotFoundError:
                    return 0
                stat = txn.stat(db)
                return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]
        finally:
            env.close()

    payload = n * d * 4
    budget = a.budget * payload
    rows = []
    for store, what in [("before", "ingested with counts A"), ("after", "repack --tracked --source"),
                        ("after_no_source", "repack --tracked (no source)"), ("fresh_b", "ingested with counts B (reference)")]:
        size = os.path.getsize(os.path.join(path(store), "data.mdb"))
        rows.append((store, what, score(store, "freq_b.npy"), score(store, "freq_a.npy"), size, counts_bytes(store)))
    print(f"\n  {'store':<16} {'':<35} {'weighted MSE':>12} {'':>10} {'data.mdb':>10} {'of which':>9} {'the rest':>10}")
    print(f"  {'':<16} {'':<35} {'under B':>12} {'under A':>10} {'bytes':>10} {'counts':>9} {'of float32':>10}")
    for store, what, under_b, under_a, size, counted in rows:
        print(f"  {store:<16} {what:<35} {under_b:12.4e} {under_a:10.4e} {size:10,} {counted:9,} {(size - counted) / payload:10.2%}")
    print(f"  budget {budget:,.0f} bytes ({a.budget:.2%} of the float32 payload, {payload:,} bytes); the access counts database "
          "(kept by bench --track-every, carried over by repack) is not the table's and not in the budget")
    print(f"  repack --source: promoted {report['promoted']:,} rows, demoted {report['demoted']:,}; "
          f"without a source: demoted {refused['demoted']:,}, refused {refused['promotions_refused']:,} promotions, "
          f"kept {refused['kept_at_same_precision']:,} at the same precision")
    before_b, after_b, after_size = rows[0][2], rows[1][2], rows[1][4] - rows[1][5]
    print(f"  weighted error under B: {before_b:.4e} -> {after_b:.4e} ({after_b / before_b:.3f}x); "
          f"bytes without the counts {rows[0][4] - rows[0][5]:,} -> {after_size:,} (budget {budget:,.0f})")
    ok = after_b < before_b and after_size <= budget
    print("  ok" if ok else "  FAILED: the error under B must drop and the repacked store stay within the budget")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
