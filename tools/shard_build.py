#!/usr/bin/env python3
"""Builds a sharded store on Ray: one task per shard, each an `embstore ingest` of the rows whose
ids hash to it (FORMAT.md, "Sharded stores"), then the manifest.

    python3 tools/shard_build.py --shards 8 --out DIR --vectors X.npy [--ids IDS.npy] [--freq F.npy]
                                 [--table T] (--codec C | --budget R | --tiers SPEC)
                                 [--address RAY_ADDRESS] [--embstore BIN] [--chunk-rows 262144]

Inputs are .npy files (float32 or float16 vectors [N, d]; ids int64/uint64 [N], default
0..N-1; access counts [N]) or one Parquet file (--vectors X.parquet, with --vector-column,
--id-column and --freq-column; needs pyarrow), read in chunks of --chunk-rows rows, so no task
holds more than its slice or its shard; on a cluster the paths must be readable by every node
(a shared file system), and --out too.

The build is a map and a reduce on Ray: a task per slice of --part-rows input rows splits
them by shard into fragment files (DIR/.building/part-NNNNNN), then a task per shard gathers its
fragments and builds the shard beside the final one (DIR/.building/shard-NNNN.<attempt>),
verifies it, and renames it to DIR/shard-NNNN last: a task that fails or is killed leaves no
half-built part or shard, and Ray runs it again (--retries). Every input row is read once. The manifest is written once every shard is built,
beside and then renamed over DIR/shards.json.

The policy applies per shard: --budget R gives each shard R of its own float32 payload. A hash
spreads rows and their access counts evenly over the shards, so each shard's threshold is
close to the one a global budget would set, and no task waits for another. Codec parameters
(PCA bases, tc models, bucket rows) are fitted once for all: the driver takes a sample of the
whole input, min(N, 262144) rows at positions floor(j·N/S), and every shard's ingest fits on
it for a table of N rows (`embstore ingest --fit-sample --fit-table-rows`), so every shard
stores the same parameters; a store ingested whole with the same two options holds the same
records as the shards together (single-codec policies; a budget also chooses each row's codec
from its own shard's rows).

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

    def chunks(self, rows, begin=0, end=None):
        """(ids uint64, vectors, freq or None) of each chunk of about `rows` rows of rows
        begin..<end (all by default)."""
        spec = self.spec
        end = self.count if end is None else end
        if spec["vectors"].endswith(".parquet"):
            import pyarrow.parquet as pq
            columns = [spec["vector_column"]] + [c for c in (spec.get("id_column"), spec.get("freq_column")) if c]
            start = 0
            for batch in pq.ParquetFile(spec["vectors"]).iter_batches(batch_size=rows, columns=columns):
                n = batch.num_rows
                if start + n <= begin or start >= end:
                    start += n
                    continue
                vectors = np.stack(batch.column(spec["vector_column"]).to_numpy(zero_copy_only=False)).astype(np.float32)
                ids = (batch.column(spec["id_column"]).to_numpy().astype(np.uint64) if spec.get("id_column") in batch.schema.names
                       else np.arange(start, start + n, dtype=np.uint64))
                freq = batch.column(spec["freq_column"]).to_numpy() if spec.get("freq_column") in batch.schema.names else None
                keep = slice(max(begin - start, 0), min(end - start, n))
                start += n
                yield ids[keep], vectors[keep], None if freq is None else freq[keep]
            return
        vectors = np.load(spec["vectors"], mmap_mode="r")
        ids = np.load(spec["ids"], mmap_mode="r") if spec.get("ids") else None
        freq = np.load(spec["freq"], mmap_mode="r") if spec.get("freq") else None
        for start in range(begin, end, rows):
            stop = min(start + rows, end)
            chunk_ids = (np.asarray(ids[start:stop]).astype(np.uint64) if ids is not None
                         else np.arange(start, stop, dtype=np.uint64))
            yield chunk_ids, np.asarray(vectors[start:stop]), None if freq is None else np.asarray(freq[start:stop])


FIT_SAMPLE_ROWS = 262_144   # FitOptions.sampleLimit: the most rows a codec fits on


def write_fit_sample(source, path):
    """The rows codecs fit their parameters on, for every shard: min(N, FIT_SAMPLE_ROWS) rows at
    positions floor(j·N/S) of the whole input, float32, in `path`."""
    take = min(source.count, FIT_SAMPLE_ROWS)
    positions = (np.arange(take, dtype=np.float64) * source.count / take).astype(np.int64)
    sample = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(take, source.dimension))
    filled, start = 0, 0
    for _, rows, _ in source.chunks(source.spec["chunk_rows"]):
        end = start + rows.shape[0]
        mine = positions[(positions >= start) & (positions < end)]
        sample[filled:filled + mine.size] = rows[mine - start]
        filled += mine.size
        start = end
    sample.flush()
    del sample


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


def partition_slice(part, start, end, spec):
    """Map: rows start..<end of the input, split by shard into one fragment per shard (vectors,
    ids and counts .npy files) in DIR/.building/part-NNNNNN, written beside and renamed there
    last so that a rerun after a kill starts clean. Returns the rows per shard."""
    shards, out = spec["shards"], spec["out"]
    final = os.path.join(out, ".building", f"part-{part:06d}")
    if os.path.exists(os.path.join(final, "done")):
        with open(os.path.join(final, "done")) as f:
            return json.load(f)
    staging = final + f".{uuid.uuid4().hex[:12]}"
    os.makedirs(staging)
    try:
        source = Input(spec)
        counts = [0] * shards
        pieces = [[] for _ in range(shards)]
        for ids, rows, freq in source.chunks(spec["chunk_rows"], start, end):
            owner = shard_of(ids, shards)
            order = np.argsort(owner, kind="stable")
            bounds = np.searchsorted(owner[order], np.arange(shards + 1))
            for s in range(shards):
                take = order[bounds[s]:bounds[s + 1]]
                if take.size:
                    pieces[s].append((ids[take], rows[take].astype(np.float32), None if freq is None else freq[take].astype(np.float64)))
                    counts[s] += int(take.size)
        for s in range(shards):
            if counts[s]:
                for k, name in enumerate(("ids", "vectors", "freq")):
                    if pieces[s][0][k] is not None:
                        np.save(os.path.join(staging, f"{s:04d}-{name}.npy"), np.concatenate([p[k] for p in pieces[s]]))
        with open(os.path.join(staging, "done"), "w") as f:
            json.dump(counts, f)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
        return counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_shard(shard, spec, parts, *part_counts):
    """Reduce: shard `shard`'s fragments from every part (their counts come from the map tasks,
    which Ray runs first), concatenated, then `embstore ingest` and `embstore verify` beside its
    final place, renamed there last. Returns its manifest entry with timings."""
    started = time.time()
    shards, out = spec["shards"], spec["out"]
    final = os.path.join(out, f"shard-{shard:04d}")
    staging = os.path.join(out, ".building", f"shard-{shard:04d}.{uuid.uuid4().hex[:12]}")
    os.makedirs(staging)
    try:
        mine = sum(counts[shard] for counts in part_counts)
        if mine == 0:
            raise RuntimeError(f"shard {shard} of {shards} holds no rows: use fewer shards")
        files = {}
        for name in ("ids", "vectors", "freq"):
            fragments = [os.path.join(out, ".building", f"part-{p:06d}", f"{shard:04d}-{name}.npy") for p in range(parts)
                         if part_counts[p][shard]]
            if name == "freq" and not all(os.path.exists(f) for f in fragments):
                continue
            arrays = [np.load(f, mmap_mode="r") for f in fragments]
            target = np.lib.format.open_memmap(os.path.join(staging, f"{name}.npy"), mode="w+", dtype=arrays[0].dtype,
                                               shape=(mine,) + arrays[0].shape[1:])
            filled = 0
            for array in arrays:
                target[filled:filled + array.shape[0]] = array
                filled += array.shape[0]
            target.flush()
            del target
            files[name] = os.path.join(staging, f"{name}.npy")
        crash_at = os.environ.get("EMBSTORE_SHARD_BUILD_CRASH")   # tests: "SHARD:MARKER" kills the first attempt
        if crash_at:
            target, marker = crash_at.split(":", 1)
            if int(target) == shard and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), 9)   # the worker dies mid-build, as a lost node would
        store = os.path.join(staging, "store")
        command = [spec["embstore"], "ingest", store, "--table", spec["table"], "--vectors", files["vectors"],
                   "--ids", files["ids"], "--quiet"] + spec["policy"] + spec["fit"] + (["--freq", files["freq"]] if "freq" in files else [])
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"shard {shard}: {' '.join(command)} failed: {run.stderr.strip()}")
        run = subprocess.run([spec["embstore"], "verify", store], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"shard {shard}: embstore verify failed: {run.stdout.strip()} {run.stderr.strip()}")
        checksum, size = crc32_of(os.path.join(store, "data.mdb"))
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
    parser.add_argument("--chunk-rows", type=int, default=262_144, help="rows a task reads at a time")
    parser.add_argument("--part-rows", type=int, default=4_194_304, help="input rows a partitioning task splits by shard")
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
    os.makedirs(os.path.join(spec["out"], ".building"), exist_ok=True)
    fit = os.path.join(spec["out"], ".building", "fit-sample.npy")
    write_fit_sample(source, fit)
    spec["fit"] = ["--fit-sample", fit, "--fit-table-rows", str(source.count)]

    import ray
    started = time.time()
    ray.init(address=args.address, num_cpus=args.cpus if not args.address else None, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    # Map: one task per slice of --part-rows input rows splits it by shard into fragment files;
    # reduce: one task per shard gathers its fragments (Ray starts it once every part is done).
    mapper = ray.remote(num_cpus=1, max_retries=args.retries, retry_exceptions=True)(partition_slice)
    reducer = ray.remote(num_cpus=1, max_retries=args.retries, retry_exceptions=True)(build_shard)
    bounds = list(range(0, source.count, args.part_rows)) + [source.count]
    parts = [mapper.remote(p, bounds[p], bounds[p + 1], spec) for p in range(len(bounds) - 1)]
    pending = {reducer.remote(s, spec, len(parts), *parts): s for s in range(args.shards)}
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
