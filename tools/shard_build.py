#!/usr/bin/env python3
"""Builds a sharded store on Ray: one task per shard, each an `embstore ingest` of the rows whose
ids hash to it (FORMAT.md, "Sharded stores"), then the manifest.

    python3 tools/shard_build.py --shards 8 --out DIR --vectors X.npy [--ids IDS.npy] [--freq F.npy]
                                 [--table T] (--codec C | --budget R | --tiers SPEC)
                                 [--address RAY_ADDRESS] [--embstore BIN] [--chunk-rows 262144]

Inputs are .npy files (float32 or float16 vectors [N, d]; ids int64/uint64 [N], default
0..N-1; access counts [N]) or one Parquet file (--vectors X.parquet, with --vector-column,
--id-column and --freq-column; needs pyarrow). Each task reads the input in chunks of
--chunk-rows rows and keeps the rows of its shard, so no machine holds the whole table; on a
cluster the paths must be readable by every node (a shared file system), and --out too.

A task builds its shard beside the final one (DIR/.building/shard-NNNN.<attempt>), verifies it,
and renames it to DIR/shard-NNNN last: a task that fails or is killed leaves no half-built
shard, and Ray runs it again (--retries). The manifest is written once every shard is built,
beside and then renamed over DIR/shards.json.

The policy applies per shard: --budget R gives each shard R of its own float32 payload. A hash
spreads rows and their access counts evenly over the shards, so each shard's threshold is
close to the one a global budget would set, and no task waits for another. Codecs with table
parameters (tc, reduced, bucket) are fitted by each shard on its own rows.

Ray starts a local cluster unless --address names one (`ray start --head` prints it).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix(ids):
    """SplitMix64's output function of ids + 0x9E3779B97F4A7C15 (uint64 arrays wrap)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def jump(keys, shards):
    """Jump consistent hashing of each key into `shards` buckets (FORMAT.md gives the steps)."""
    keys = keys.copy()
    b = np.full(keys.shape, -1, dtype=np.int64)
    j = np.zeros(keys.shape, dtype=np.int64)
    active = j < shards
    with np.errstate(over="ignore"):
        while active.any():
            b[active] = j[active]
            keys[active] = keys[active] * np.uint64(2862933555777941757) + np.uint64(1)
            step = (b[active] + 1).astype(np.float64) * (float(1 << 31) / ((keys[active] >> np.uint64(33)) + np.uint64(1)).astype(np.float64))
            j[active] = step.astype(np.int64)
            active = j < shards
    return b


def shard_of(ids, shards):
    return jump(mix(np.asarray(ids, dtype=np.uint64)), shards)


class Input:
    """The rows, their ids and counts, read in chunks from .npy files or a Parquet file."""

    def __init__(self, spec):
        self.spec = spec
        if spec["vectors"].endswith(".parquet"):
            import pyarrow.parquet as pq   # noqa: F401 (checked here, used in chunks)
            meta = pq.ParquetFile(spec["vectors"]).metadata
            self.count = meta.num_rows
            first = next(self.chunks(1))
            self.dimension = first[1].shape[1]
        else:
            vectors = np.load(spec["vectors"], mmap_mode="r")
            if vectors.ndim != 2 or vectors.dtype not in (np.float32, np.float16):
                raise SystemExit(f"{spec['vectors']}: expected float32 or float16 [N, d], not {vectors.dtype} {vectors.shape}")
            self.count, self.dimension = vectors.shape
            for name in ("ids", "freq"):
                if spec.get(name):
                    array = np.load(spec[name], mmap_mode="r")
                    if array.shape != (self.count,):
                        raise SystemExit(f"{spec[name]}: {array.shape[0] if array.ndim else 0} entries for {self.count} rows")

    def chunks(self, rows):
        """(ids uint64, vectors, freq or None) of each chunk of about `rows` rows."""
        spec = self.spec
        if spec["vectors"].endswith(".parquet"):
            import pyarrow.parquet as pq
            columns = [spec["vector_column"]] + [c for c in (spec.get("id_column"), spec.get("freq_column")) if c]
            start = 0
            for batch in pq.ParquetFile(spec["vectors"]).iter_batches(batch_size=rows, columns=columns):
                vectors = np.stack(batch.column(spec["vector_column"]).to_numpy(zero_copy_only=False)).astype(np.float32)
                n = vectors.shape[0]
                ids = (batch.column(spec["id_column"]).to_numpy().astype(np.uint64) if spec.get("id_column") in batch.schema.names
                       else np.arange(start, start + n, dtype=np.uint64))
                freq = batch.column(spec["freq_column"]).to_numpy() if spec.get("freq_column") in batch.schema.names else None
                start += n
                yield ids, vectors, freq
            return
        vectors = np.load(spec["vectors"], mmap_mode="r")
        ids = np.load(spec["ids"], mmap_mode="r") if spec.get("ids") else None
        freq = np.load(spec["freq"], mmap_mode="r") if spec.get("freq") else None
        for start in range(0, vectors.shape[0], rows):
            end = min(start + rows, vectors.shape[0])
            chunk_ids = (np.asarray(ids[start:end]).astype(np.uint64) if ids is not None
                         else np.arange(start, end, dtype=np.uint64))
            yield chunk_ids, np.asarray(vectors[start:end]), None if freq is None else np.asarray(freq[start:end])


def crc32_of(path):
    crc, size = 0, 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            crc = zlib.crc32(block, crc)
            size += len(block)
    return f"crc32:{crc:08x}", size


def build_shard(shard, spec):
    """Builds shard `shard` of spec["shards"] beside its final place and renames it there;
    returns its manifest entry with timings."""
    started = time.time()
    shards, out = spec["shards"], spec["out"]
    final = os.path.join(out, f"shard-{shard:04d}")
    staging = os.path.join(out, ".building", f"shard-{shard:04d}.{uuid.uuid4().hex[:12]}")
    os.makedirs(staging)
    try:
        crash_at = os.environ.get("EMBSTORE_SHARD_BUILD_CRASH")   # tests: "SHARD:MARKER" kills the first attempt
        source = Input(spec)
        # Pass 1: how many rows are this shard's; pass 2: copy them into .npy files.
        mine = sum(int((shard_of(ids, shards) == shard).sum()) for ids, _, _ in source.chunks(spec["chunk_rows"]))
        vectors = np.lib.format.open_memmap(os.path.join(staging, "vectors.npy"), mode="w+", dtype=np.float32,
                                            shape=(mine, source.dimension))
        ids_out = np.lib.format.open_memmap(os.path.join(staging, "ids.npy"), mode="w+", dtype=np.uint64, shape=(mine,))
        freq_out = None
        filled = 0
        for ids, rows, freq in source.chunks(spec["chunk_rows"]):
            keep = shard_of(ids, shards) == shard
            n = int(keep.sum())
            vectors[filled:filled + n] = rows[keep]
            ids_out[filled:filled + n] = ids[keep]
            if freq is not None:
                if freq_out is None:
                    freq_out = np.lib.format.open_memmap(os.path.join(staging, "freq.npy"), mode="w+", dtype=np.float64, shape=(mine,))
                freq_out[filled:filled + n] = freq[keep]
            filled += n
        for array in (vectors, ids_out, freq_out):
            if array is not None:
                array.flush()
        del vectors, ids_out, freq_out
        if crash_at:
            target, marker = crash_at.split(":", 1)
            if int(target) == shard and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), 9)   # the worker dies mid-build, as a lost node would
        store = os.path.join(staging, "store")
        command = [spec["embstore"], "ingest", store, "--table", spec["table"], "--vectors", os.path.join(staging, "vectors.npy"),
                   "--ids", os.path.join(staging, "ids.npy"), "--quiet"] + spec["policy"]
        if os.path.exists(os.path.join(staging, "freq.npy")):
            command += ["--freq", os.path.join(staging, "freq.npy")]
        if mine == 0:
            raise RuntimeError(f"shard {shard} of {shards} holds no rows: use fewer shards for {source.count} rows")
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"shard {shard}: {' '.join(command)} failed: {run.stderr.strip()}")
        run = subprocess.run([spec["embstore"], "verify", store], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"shard {shard}: embstore verify failed: {run.stdout.strip()} {run.stderr.strip()}")
        checksum, size = crc32_of(os.path.join(store, "data.mdb"))
        for name in ("vectors.npy", "ids.npy", "freq.npy"):
            if os.path.exists(os.path.join(staging, name)):
                os.remove(os.path.join(staging, name))
        if os.path.exists(final):   # an earlier build's, or an attempt's that finished after all
            shutil.rmtree(final)
        os.rename(store, final)
        return {"shard": shard, "path": os.path.basename(final), "rows": {spec["table"]: mine}, "checksum": checksum,
                "bytes": size, "seconds": time.time() - started, "node": os.uname().nodename}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--ids")
    parser.add_argument("--freq")
    parser.add_argument("--table", default="t")
    policy = parser.add_mutually_exclusive_group(required=True)
    policy.add_argument("--codec")
    policy.add_argument("--budget")
    policy.add_argument("--tiers")
    parser.add_argument("--vector-column", default="vector")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--freq-column", default="freq")
    parser.add_argument("--address", help="a Ray cluster's address (default: start a local one)")
    parser.add_argument("--cpus", type=int, help="CPUs of the local cluster (default: all)")
    parser.add_argument("--retries", type=int, default=3, help="times Ray runs a failed or killed shard task again")
    parser.add_argument("--chunk-rows", type=int, default=262_144)
    parser.add_argument("--embstore", default=os.path.join(ROOT, ".build", "release", "embstore"))
    args = parser.parse_args()
    if args.shards < 1:
        raise SystemExit("--shards must be at least 1")
    if not os.path.exists(args.embstore):
        raise SystemExit(f"{args.embstore} is missing: swift build -c release --product embstore, or give --embstore")
    spec = {"shards": args.shards, "out": os.path.abspath(args.out), "vectors": os.path.abspath(args.vectors),
            "ids": args.ids and os.path.abspath(args.ids), "freq": args.freq and os.path.abspath(args.freq), "table": args.table,
            "vector_column": args.vector_column, "id_column": args.id_column, "freq_column": args.freq_column,
            "chunk_rows": args.chunk_rows, "embstore": os.path.abspath(args.embstore),
            "policy": (["--codec", args.codec] if args.codec else ["--budget", args.budget] if args.budget else ["--tiers", args.tiers])}
    if args.tiers and not args.freq and not args.vectors.endswith(".parquet"):
        raise SystemExit("--tiers ranks rows by access count: give --freq")
    source = Input(spec)   # checks the inputs before any task starts
    os.makedirs(spec["out"], exist_ok=True)

    import ray
    started = time.time()
    ray.init(address=args.address, num_cpus=args.cpus if not args.address else None, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    task = ray.remote(num_cpus=1, max_retries=args.retries, retry_exceptions=True)(build_shard)
    pending = {task.remote(s, spec): s for s in range(args.shards)}
    built = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            shard = pending.pop(ref)
            entry = ray.get(ref)
            built[shard] = entry
            print(f"shard {shard:4d}: {entry['rows'][args.table]:,} rows, {entry['bytes'] / 1e6:.1f} MB, "
                  f"{entry['seconds']:.1f} s on {entry['node']} ({len(built)}/{args.shards})", file=sys.stderr, flush=True)
    ray.shutdown()
    shutil.rmtree(os.path.join(spec["out"], ".building"), ignore_errors=True)

    previous = os.path.join(spec["out"], "shards.json")
    generation = 1
    if os.path.exists(previous):
        with open(previous) as f:
            generation = json.load(f).get("generation", 0) + 1
    policy = args.codec or (f"budget={args.budget}" if args.budget else f"tiers={args.tiers}")
    manifest = {"format": "embstore-shards", "version": 1, "hash": "jump-splitmix64", "generation": generation,
                "tables": {args.table: {"dimension": source.dimension, "policy": policy}},
                "shards": [{key: built[s][key] for key in ("path", "rows", "checksum", "bytes")} for s in range(args.shards)]}
    staging = previous + f".writing-{os.getpid()}"
    with open(staging, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(staging, previous)
    seconds = time.time() - started
    rows = sum(e["rows"][args.table] for e in built.values())
    print(json.dumps({"shards": args.shards, "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
                      "out": spec["out"]}))


if __name__ == "__main__":
    main()
