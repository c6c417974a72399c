#!/usr/bin/env python3
"""Checks embstore's FBGEMM interop against the real torch ops, live (torch needed; not in CI).

    python3 tools/check_fbgemm_live.py [--embstore .build/debug/embstore] [--rows 2000] [--seed 0]

For each width d (odd ones included) it makes float rows with the awkward ones first, as
make_fbgemm_fixtures.py does (constant rows, a large range, both zeros as the minimum from
d = 10, a range of 1e-6, rows far from zero), and checks
through the `embstore` binary:

1. import: `ingest --format fbgemm-int8` of torch.ops.quantized.embedding_bag_byte_prepack's
   output, then `export --format fbgemm-int8`, gives back the same bytes; the same for
   `fbgemm-int4` and embedding_bag_4bit_prepack (torch refuses odd widths: there the rows get a
   (d+1)-th column equal to their first, which leaves min and max alone, and its code is cleared);
2. export: rows ingested as fp32 and exported with `--format fbgemm-int8` / `fbgemm-int4` are
   byte for byte torch's prepack of the same floats (rows that differ are counted);
3. pooled lookups: the imported table's rows (`export`, float32) summed per bag the way
   Reader.lookupPooled sums them (decode, then acc + w * x in float32, mean multiplies by 1/n)
   against embedding_bag_byte_rowwise_offsets / embedding_bag_4bit_rowwise_offsets (sum and mean,
   with and without per-sample weights; torch 2.13's ops accept mode 1 but return the sum, so
   where they do the mean is checked against that sum times 1/n). They differ only in float rounding: FBGEMM computes
   fma(q, w * scale, acc + w * bias), the store acc + w * (q * scale + bias). The bound checked per
   value is 4 * 2^-24 * (L + 2) * sum over the bag of |w| * (|q * scale| + |bias|) plus the same
   of |acc|, i.e. a few float32 roundings of the magnitudes added; the largest ratio of a
   difference to its bound is printed.

Exit status 1 when any check fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from make_fbgemm_fixtures import make_rows, prepack

HERE = os.path.dirname(os.path.abspath(__file__))
EPS = 2.0 ** -24


def magnitudes(codec, rows, d):
    """|q * scale| + |bias| per value of each packed row, float64 [N, d]."""
    if codec == "int8":
        q = rows[:, :d].astype(np.float64)
        scale = rows[:, d:d + 4].copy().view(np.float32).astype(np.float64)
        bias = rows[:, d + 4:d + 8].copy().view(np.float32).astype(np.float64)
    else:
        k = (d + 1) // 2
        q = np.stack([rows[:, :k] & 0x0F, rows[:, :k] >> 4], axis=2).reshape(len(rows), 2 * k)[:, :d].astype(np.float64)
        scale = rows[:, k:k + 2].copy().view(np.float16).astype(np.float64)
        bias = rows[:, k + 2:k + 4].copy().view(np.float16).astype(np.float64)
    return np.abs(q * scale) + np.abs(bias)


def store_pooled(decoded, indices, offsets, weights, mean):
    """Reader.lookupPooled's arithmetic: float32, acc + w * x in bag order, mean times 1/n."""
    d = decoded.shape[1]
    out = np.zeros((len(offsets) - 1, d), np.float32)
    for b in range(len(offsets) - 1):
        acc = np.zeros(d, np.float32)
        for p in range(offsets[b], offsets[b + 1]):
            w = np.float32(1) if weights is None else weights[p]
            acc = (acc + w * decoded[indices[p]]).astype(np.float32)
        n = offsets[b + 1] - offsets[b]
        if mean and n > 0:
            acc = (acc * (np.float32(1) / np.float32(n))).astype(np.float32)
        out[b] = acc
    return out


def run(binary, *arguments):
    result = subprocess.run([binary, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"embstore {' '.join(arguments)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embstore", default=os.path.join(HERE, "..", ".build", "debug", "embstore"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dimensions", default="1,2,7,8,13,16,31,33,64,100")
    args = parser.parse_args()
    if not os.path.exists(args.embstore):
        sys.exit(f"no embstore binary at {args.embstore}: run `swift build` first or give --embstore")
    rng = np.random.default_rng(args.seed)
    ops = {"int8": torch.ops.quantized.embedding_bag_byte_rowwise_offsets,
           "int4": torch.ops.quantized.embedding_bag_4bit_rowwise_offsets}
    failures = 0
    mean_is_sum = set()
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {args.rows} rows a table, seed {args.seed}")
    print(f"{'codec':6} {'d':>4} {'import':>8} {'export':>14} {'pooled: max |diff|':>20} {'diff/bound':>11}")
    with tempfile.TemporaryDirectory() as work:
        store = os.path.join(work, "store")
        lengths = rng.integers(0, 20, 200)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = rng.integers(0, args.rows, int(offsets[-1])).astype(np.int64)
        weights = rng.uniform(-1.5, 2.0, indices.size).astype(np.float32)
        for d in [int(t) for t in args.dimensions.split(",")]:
            x = make_rows(rng, args.rows, d, with_signed_zero=d >= 10)
            rows_path = os.path.join(work, f"rows{d}.npy")
            np.save(rows_path, x)
            run(args.embstore, "ingest", store, "--table", f"f{d}", "--vectors", rows_path, "--codec", "fp32", "--quiet")
            for codec in ["int8", "int4"]:
                packed, op_input = prepack(codec, x)
                packed_path = os.path.join(work, f"{codec}_{d}.npy")
                np.save(packed_path, packed)
                table = f"{codec}_{d}"
                run(args.embstore, "ingest", store, "--table", table, "--format", f"fbgemm-{codec}", "--vectors", packed_path,
                    "--dimension", str(d), "--quiet")
                back = os.path.join(work, "back.npy")
                run(args.embstore, "export", store, "--table", table, "--format", f"fbgemm-{codec}", "--out", back)
                same = np.array_equal(np.load(back), packed)
                run(args.embstore, "export", store, "--table", f"f{d}", "--format", f"fbgemm-{codec}", "--out", back)
                differing = int((np.load(back) != packed).any(axis=1).sum())
                decoded_path = os.path.join(work, "decoded.npy")
                run(args.embstore, "export", store, "--table", table, "--out", decoded_path)
                decoded = np.load(decoded_path)
                size = magnitudes(codec, packed, d)
                worst_diff, worst_ratio = 0.0, 0.0
                for mode, w in [(0, None), (0, weights), (1, None), (1, weights)]:
                    def torch_pooled(mode):
                        return ops[codec](op_input, torch.from_numpy(indices), torch.from_numpy(offsets), False, mode, False,
                                          None if w is None else torch.from_numpy(w), None, True).numpy()[:, :d]
                    theirs = torch_pooled(mode)
                    if mode == 1 and np.array_equal(theirs, torch_pooled(0)):
                        # This torch's quantized op takes mode 1 but returns the sum: the store's
                        # mean is checked against that sum times 1/n (in float32, as the store scales).
                        mean_is_sum.add(torch.__version__)
                        n = np.diff(offsets).astype(np.float32)
                        scale = np.where(n > 0, np.float32(1) / np.maximum(n, 1), 0).astype(np.float32)
                        theirs = (theirs * scale[:, None]).astype(np.float32)
                    ours = store_pooled(decoded, indices, offsets, w, mode == 1)
                    for b in range(len(offsets) - 1):
                        bag = slice(offsets[b], offsets[b + 1])
                        ws = np.ones(offsets[b + 1] - offsets[b]) if w is None else np.abs(w[bag]).astype(np.float64)
                        total = (ws[:, None] * size[indices[bag]]).sum(axis=0)
                        bound = 4 * EPS * (offsets[b + 1] - offsets[b] + 2) * 2 * total + 1e-30
                        diff = np.abs(ours[b].astype(np.float64) - theirs[b].astype(np.float64))
                        worst_diff = max(worst_diff, float(diff.max(initial=0)))
                        worst_ratio = max(worst_ratio, float((diff / bound).max(initial=0)))
                ok = same and differing == 0 and worst_ratio <= 1
                failures += not ok
                print(f"{codec:6} {d:4} {'same' if same else 'DIFFERS':>8} {differing:5} rows differ {worst_diff:20.3g} "
                      f"{worst_ratio:11.3f}" + ("" if ok else "  FAIL"))
    if mean_is_sum:
        print(f"note: torch {torch.__version__}'s quantized rowwise_offsets ops return the sum for mode 1 (mean); "
              "the store's mean was checked against that sum times 1/n")
    print("ok" if failures == 0 else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
