#!/usr/bin/env python3
"""Issues 3's and 10's targets as ratios, from one run's JSON lines (tools/bench_vs_peers.sh output).

    python3 tools/bench_summary.py /tmp/embstore-bench/peers.jsonl /tmp/embstore-bench/embstore.jsonl

Every ratio divides two figures measured in the same run on the same workload files.
"""
import json
import sys


def load(paths):
    rows = []
    for path in paths:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def find(rows, **want):
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def main():
    rows = load(sys.argv[1:])
    out = []

    def line(name, ours, theirs, target):
        if ours is None or theirs is None:
            out.append(f"{name:<46} {'missing':>10}")
            return
        ratio = ours / theirs
        verdict = "" if target is None else ("meets" if ratio >= target else "MISSES") + f" (target >= {target})"
        out.append(f"{name:<46} {ours / 1e6:8.2f} M vs {theirs / 1e6:8.2f} M  = {ratio:5.2f}x  {verdict}")

    def rate(r):
        return None if r is None else r.get("rows_per_s")

    for codec in ("int8", "fp32"):
        for ids in ("zipf", "uniform"):
            ours = find(rows, system="embstore", workload="lookup", codec=codec, ids=ids, threads=1)
            line(f"lookup {codec} {ids} / c_dense_gather", rate(ours),
                 rate(find(rows, system="c_dense_gather", workload="lookup", codec=codec, ids=ids)), 0.8)
            line(f"lookup {codec} {ids} / c_lmdb (per-key floor)", rate(ours),
                 rate(find(rows, system="c_lmdb", workload="lookup", codec=codec, ids=ids)), 15)
        line(f"pooled {codec} / c_dense_gather pooled", rate(find(rows, system="embstore", workload="pooled", codec=codec, threads=1)),
             rate(find(rows, system="c_dense_gather", workload="pooled", codec=codec)), 0.8)
        one = find(rows, system="embstore", workload="lookup", codec=codec, ids="zipf", threads=1)
        two = find(rows, system="embstore", workload="lookup", codec=codec, ids="zipf", threads=2)
        line(f"lookup {codec} zipf, 2 threads / 1 thread", rate(two), rate(one), 1.8)
    # The peers' int4 is FBGEMM's 4-bit row (f16 scale and bias): embstore's int4h. Our int4
    # (f32 scale and bias) is set beside it too.
    for codec, peer in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8"), ("int4h", "int4"), ("int4", "int4")):
        ours = rate(find(rows, system="embstore", workload="decode", codec=codec))
        line(f"decode {codec} / c_decode_only {peer}", ours, rate(find(rows, system="c_decode_only", workload="decode", codec=peer)), 0.8)
        if peer != "fp32":
            line(f"decode {codec} / faiss_sq_decode_only {peer}", ours,
                 rate(find(rows, system="faiss_sq_decode_only", workload="decode", codec=peer)), 1.0)
    # Issue 10: pooled lookups against FBGEMM's embedding-bag kernels (torch), the fp32 gather,
    # multi-table requests against the single-table calls they replace. embstore's int4h is
    # FBGEMM's 4-bit row (the peers' "int4").
    out.append("")
    for ours_codec, their_codec in (("int8", "int8"), ("int4h", "int4"), ("fp16", "fp16")):
        line(f"pooled {ours_codec} / torch_fbgemm pooled {their_codec}",
             rate(find(rows, system="embstore", workload="pooled", codec=ours_codec, threads=1)),
             rate(find(rows, system="torch_fbgemm", workload="pooled", codec=their_codec)), 1.0)
    line("lookup fp32 uniform / c_dense_gather (issue 10)",
         rate(find(rows, system="embstore", workload="lookup", codec="fp32", ids="uniform", threads=1)),
         rate(find(rows, system="c_dense_gather", workload="lookup", codec="fp32", ids="uniform")), 0.9)
    line("pooled int8: multi-table x4 / single-table x4",
         rate(find(rows, system="embstore", workload="pooled", variant="multi-table x4")),
         rate(find(rows, system="embstore", workload="pooled", variant="single-table x4")), 1.0)
    print("\n".join(out))


if __name__ == "__main__":
    main()
