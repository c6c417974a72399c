#!/usr/bin/env python3
"""Makes the FBGEMM interop fixtures under Tests/Fixtures/fbgemm/ with the real torch ops.

Needs torch (CPU is enough) and NumPy; run it where torch is installed, then commit the files.
CI never runs it: the Swift tests (Tests/EmbeddingStoreTests/FBGEMMFixtureTests.swift and
Tests/embstoreTests/FBGEMMCommandTests.swift) read what it wrote.

    python3 tools/make_fbgemm_fixtures.py [--out Tests/Fixtures/fbgemm] [--seed 7]

Per table ``d16`` (300 rows x 16) and ``d13`` (300 rows x 13):

- ``rows_<t>.npy``     float32 [N, d], the rows. Row 0 is constant 0.5, row 1 constant 0, row 2
                       constant -3.25, row 3 spans a large range (about +-3e4), row 4 holds both
                       0.0 and -0.0 as its minimum (d16 only), row 5 a range of 1e-6, row 6 sits
                       far from zero (40 +- 0.1); the rest are Gaussian with per-row scales.
- ``int8_<t>.npy``     uint8 [N, d + 8], torch.ops.quantized.embedding_bag_byte_prepack(rows).
- ``int4_<t>.npy``     uint8 [N, ceil(d/2) + 4], torch.ops.quantized.embedding_bag_4bit_prepack.
                       torch refuses odd widths ("only works for the number of columns a multiple
                       of 2"), so for d13 the rows are given a 14th column equal to their first
                       value (min and max unchanged, so scale, bias and the first 13 codes are what
                       FBGEMM's reference rule gives the 13-wide row) and the 14th code, the last
                       byte's high nibble, is cleared: the int4h layout of a 13-wide row.
- ``<codec>_<t>_<pool>.npy`` float32 [B, d], torch.ops.quantized.embedding_bag_byte_rowwise_offsets
                       (int8) / embedding_bag_4bit_rowwise_offsets (int4) on the packed rows with
                       the bags below, include_last_offset=True; pool is ``sum`` (mode 0) or
                       ``wsum`` (mode 0 with the per-sample weights); ``mean`` and ``wmean``
                       (mode 1) only when the op computes a mean: torch 2.13's takes mode 1 and
                       returns the sum (fixtures.json notes it). For int4 d13 the op ran on the
                       14-wide rows before the clear and its output's first 13 columns are kept.
- ``indices.npy`` int64 [M] (row positions: the tables are loaded with ids 0..N-1),
  ``offsets.npy`` int64 [B + 1] (bag b is indices[offsets[b]:offsets[b+1]]; bag 3 is empty),
  ``weights.npy`` float32 [M].
- ``fixtures.json``    the torch version, the shapes and how each file was made.
"""
import argparse
import json
import os

import numpy as np
import torch

ROWS = 300


def make_rows(rng, n, d, with_signed_zero):
    """n float32 rows of width d, the awkward ones first (see the docstring); row 4's signed
    zeros (0.0 at column 2, -0.0 at column 9) need d >= 10."""
    x = (rng.standard_normal((n, d)) * rng.lognormal(0.0, 1.0, (n, 1))).astype(np.float32)
    x[0] = 0.5
    x[1] = 0.0
    x[2] = -3.25
    x[3] = np.linspace(-3.0e4, 2.9e4, d, dtype=np.float32)
    rng.shuffle(x[3])
    if with_signed_zero:
        x[4] = np.abs(x[4]) + 0.25
        x[4, 2] = 0.0
        x[4, 9] = np.float32(-0.0)
    x[5] = (1.0 + rng.random(d) * 1e-6).astype(np.float32)
    x[6] = (40.0 + rng.uniform(-0.1, 0.1, d)).astype(np.float32)
    return x


def prepack(codec, x):
    """torch's prepack of x ("int8" or "int4") as a uint8 array, and the packed tensor torch's
    lookup op takes. torch's 4-bit prepack refuses odd widths: there the rows get a (d+1)-th
    column equal to their first (min and max unchanged) and the array has its code cleared."""
    if codec == "int8":
        packed = torch.ops.quantized.embedding_bag_byte_prepack(torch.from_numpy(x))
        return packed.numpy().copy(), packed
    d = x.shape[1]
    if d % 2 == 0:
        packed = torch.ops.quantized.embedding_bag_4bit_prepack(torch.from_numpy(x))
        return packed.numpy().copy(), packed
    packed = torch.ops.quantized.embedding_bag_4bit_prepack(torch.from_numpy(np.concatenate([x, x[:, :1]], axis=1)))
    rows = packed.numpy().copy()
    rows[:, (d + 1) // 2 - 1] &= 0x0F
    return rows, packed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "Tests", "Fixtures", "fbgemm"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    # Bags: 40 bags of 0..12 ids, one of them empty, ids repeating.
    lengths = rng.integers(1, 13, 40)
    lengths[3] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, ROWS, int(offsets[-1])).astype(np.int64)
    indices[:7] = np.arange(7)  # the special rows in the first bag
    weights = rng.uniform(-1.5, 2.0, indices.size).astype(np.float32)
    files = {}
    notes = set()

    def save(name, array, how):
        np.save(os.path.join(args.out, name + ".npy"), np.ascontiguousarray(array))
        files[name + ".npy"] = {"dtype": str(array.dtype), "shape": list(array.shape), "made": how}

    save("indices", indices, "row positions, numpy default_rng(seed)")
    save("offsets", offsets, "bag boundaries, include_last_offset=True; bag 3 empty")
    save("weights", weights, "per-sample weights, uniform(-1.5, 2)")
    ops = {"int8": torch.ops.quantized.embedding_bag_byte_rowwise_offsets,
           "int4": torch.ops.quantized.embedding_bag_4bit_rowwise_offsets}
    for table, d in [("d16", 16), ("d13", 13)]:
        x = make_rows(rng, ROWS, d, with_signed_zero=(d == 16))
        save(f"rows_{table}", x, "float32 rows (see the script's docstring)")
        int8, int8_op_input = prepack("int8", x)
        save(f"int8_{table}", int8, "torch.ops.quantized.embedding_bag_byte_prepack(rows)")
        int4, int4_op_input = prepack("int4", x)
        save(f"int4_{table}", int4, "torch.ops.quantized.embedding_bag_4bit_prepack(rows)"
             + ("" if d % 2 == 0 else " of the rows with a 14th column = the first, the 14th code cleared"))
        for codec, packed in [("int8", int8_op_input), ("int4", int4_op_input)]:
            for pool, mode, w in [("sum", 0, None), ("wsum", 0, weights), ("mean", 1, None), ("wmean", 1, weights)]:
                def pooled(mode):
                    return ops[codec](packed, torch.from_numpy(indices), torch.from_numpy(offsets), False, mode, False,
                                      None if w is None else torch.from_numpy(w), None, True).numpy()[:, :d]
                out = pooled(mode)
                if mode == 1 and np.array_equal(out, pooled(0)):
                    notes.add(f"{ops[codec].__name__} takes mode=1 (mean) but returns the sum in torch {torch.__version__}: "
                              "no mean fixture; the tests check the store's mean against the sum times 1/n")
                    continue
                save(f"{codec}_{table}_{pool}", out, f"{ops[codec].__name__}(mode={mode}, per_sample_weights="
                     + ("weights" if w is not None else "None") + ", include_last_offset=True)")
    manifest = {"torch": torch.__version__, "numpy": np.__version__, "seed": args.seed,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "files": files, "notes": sorted(notes)}
    with open(os.path.join(args.out, "fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(files)} files to {os.path.normpath(args.out)} with torch {torch.__version__}")
    for note in sorted(notes):
        print("note: " + note)


if __name__ == "__main__":
    main()
