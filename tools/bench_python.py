#!/usr/bin/env python3
"""Lookups from Python against the same lookups from Swift, in one run.

    python3 tools/bench_python.py STORE --table T --workload /tmp/embbench/N1000000_d64 [--ids ids.npy]
                                  [--batch 512] [--bag-batch 512] [--reps 5] [--embstore .build/release/embstore]

Runs shared/bench's lookup workload (batch j = ids[(j mod P)·B : +B], decoded into one reused
[B, d] float32 buffer) and pooled workload (bag batch j of bags.npy/offsets.npy) through the
Python package (`embstore.Table.lookup(..., out=)`, `lookup_pooled(..., out=)`), then the same
workloads through `embstore bench` (Swift), then Python again; prints one JSON line per
measurement (system "embstore-python" or "embstore", rows_per_s the median of the reps) and
the ratio of Python's median (over both of its runs) to Swift's. The package is imported from
Sources/python unless it is installed (EMBSTORE_LIBRARY names the library, else the one
beside the package). Needs numpy.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def import_embstore():
    try:
        import embstore
        return embstore
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "Sources", "python"))
        if "EMBSTORE_LIBRARY" not in os.environ:
            os.environ["EMBSTORE_LIBRARY"] = os.path.join(ROOT, ".build", "release", "libEmbStoreC.so")
        import embstore
        return embstore


def measure(step, units_per_call, reps, rep_seconds):
    """Median rows/s of `reps` timed repetitions of about rep_seconds each (one warm-up)."""
    step(0)
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < 0.05:
        step(calls)
        calls += 1
    per_rep = max(1, int(calls * rep_seconds / max(time.perf_counter() - start, 1e-9)))
    rates, j = [], 0
    for _ in range(reps):
        rows = 0
        start = time.perf_counter()
        for _ in range(per_rep):
            rows += step(j)
            j += 1
        rates.append(rows / (time.perf_counter() - start))
    return statistics.median(rates)


def python_run(embstore, args, workload):
    store = embstore.open(args.store, read_only=True)
    table = store.table(args.table)
    d = table.dimension
    stream = np.load(os.path.join(workload, args.ids))
    batches = stream.size // args.batch
    out = np.empty((args.batch, d), dtype=np.float32)

    def lookup(j):
        b = j % batches
        table.lookup(stream[b * args.batch:(b + 1) * args.batch], out=out)
        return args.batch

    lines = [{"system": "embstore-python", "binding": embstore.BINDING, "workload": "lookup", "ids": args.ids_name, "batch": args.batch,
              "rows_per_s": measure(lookup, args.batch, args.reps, args.rep_seconds)}]
    bags = np.load(os.path.join(workload, "bags.npy"))
    offsets = np.load(os.path.join(workload, "offsets.npy")).astype(np.int64)
    bag_batches = (offsets.size - 1) // args.bag_batch
    pooled_out = np.empty((args.bag_batch, d), dtype=np.float32)
    # Each bag batch as FBGEMM takes it: its ids and bag_batch + 1 offsets rebased to them.
    slices = []
    for b in range(bag_batches):
        o = offsets[b * args.bag_batch:(b + 1) * args.bag_batch + 1]
        slices.append((bags[o[0]:o[-1]], o - o[0]))

    def pooled(j):
        ids, o = slices[j % bag_batches]
        table.lookup_pooled(ids, o, include_last_offset=True, out=pooled_out)
        return ids.size

    lines.append({"system": "embstore-python", "binding": embstore.BINDING, "workload": "pooled", "batch": args.bag_batch,
                  "rows_per_s": measure(pooled, 0, args.reps, args.rep_seconds)})
    store.close()
    return lines


def swift_run(args, workload):
    command = [args.embstore, "bench", args.store, "--table", args.table, "--ids", os.path.join(workload, args.ids),
               "--batch", str(args.batch), "--bags", os.path.join(workload, "bags.npy"), "--offsets",
               os.path.join(workload, "offsets.npy"), "--bag-batch", str(args.bag_batch), "--reps", str(args.reps),
               "--rep-seconds", str(args.rep_seconds), "--json"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line["workload"] in ("lookup", "pooled")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--table", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--ids", default="ids.npy")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--bag-batch", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rep-seconds", type=float, default=0.4)
    parser.add_argument("--embstore", default=os.path.join(ROOT, ".build", "release", "embstore"))
    args = parser.parse_args()
    args.ids_name = "zipf" if args.ids == "ids.npy" else "uniform" if args.ids == "ids_uniform.npy" else args.ids
    embstore = import_embstore()
    for directory, _, files in os.walk(args.store):   # into the page cache
        for name in files:
            if name == "data.mdb":
                with open(os.path.join(directory, name), "rb") as f:
                    while f.read(1 << 24):
                        pass
    python, swift = [], []
    for run in range(5):
        lines = python_run(embstore, args, args.workload) if run % 2 == 0 else swift_run(args, args.workload)
        (python if run % 2 == 0 else swift).extend(lines)
        for line in lines:
            print(json.dumps(line), flush=True)
    for workload in ("lookup", "pooled"):
        py = statistics.median([line["rows_per_s"] for line in python if line["workload"] == workload])
        sw = statistics.median([line["rows_per_s"] for line in swift if line["workload"] == workload])
        print(f"{workload}: Python {py / 1e6:.1f} M rows/s, Swift {sw / 1e6:.1f} M rows/s (medians of 3 and 2 runs): {py / sw:.2f}x",
              file=sys.stderr)


if __name__ == "__main__":
    main()
