#!/usr/bin/env python3
"""Write a deterministic, realistic-looking embedding table for demos and tests.

    python3 tools/make_table.py --out DIR --n N --d D --seed S

writes DIR/table.npy (float32 [N, D], C order) and DIR/ids.npy (uint64 0..N-1).

Rows imitate trained embeddings: each row is a cluster centre plus Gaussian noise, drawn in a
latent space whose axis j has spread sigma_j proportional to j^-0.6 (a decaying spectrum, so PCA
and k-means have structure to find), rotated into the output space by a random orthonormal
basis, then multiplied by a per-row log-normal norm factor.  The whole table is finally scaled
so that the mean row norm is 0.8.  Cluster popularity is skewed (Zipf-like), as ids are.
The same (N, D, seed) always gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def make_table(n: int, d: int, seed: int) -> np.ndarray:
    if n < 1 or d < 1:
        raise ValueError("n and d must be >= 1")
    rng = np.random.default_rng(seed)

    # Random orthonormal basis (QR of a Gaussian matrix, signs fixed so it is unique).
    g = rng.standard_normal((d, d))
    q, r = np.linalg.qr(g)
    q *= np.sign(np.diag(r))[np.newaxis, :]

    sigma = np.arange(1, d + 1, dtype=np.float64) ** -0.6

    clusters = int(np.clip(np.sqrt(n), 4, 256))
    centres = rng.standard_normal((clusters, d)) * sigma * 1.2
    popularity = 1.0 / np.arange(1, clusters + 1) ** 0.8
    popularity /= popularity.sum()
    assign = rng.choice(clusters, size=n, p=popularity)

    latent = centres[assign] + rng.standard_normal((n, d)) * sigma * 0.6
    x = latent @ q.T
    x *= rng.lognormal(mean=0.0, sigma=0.3, size=(n, 1))

    norms = np.linalg.norm(x, axis=1)
    mean_norm = norms.mean()
    if mean_norm > 0:
        x *= 0.8 / mean_norm
    return np.ascontiguousarray(x, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--n", type=int, required=True, help="rows")
    p.add_argument("--d", type=int, required=True, help="dimension")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.n < 1 or args.d < 1:
        p.error("--n and --d must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    x = make_table(args.n, args.d, args.seed)
    np.save(os.path.join(args.out, "table.npy"), x)
    np.save(os.path.join(args.out, "ids.npy"), np.arange(args.n, dtype=np.uint64))
    print(f"wrote {args.out}/table.npy ({args.n} x {args.d} float32, mean row norm "
          f"{float(np.linalg.norm(x, axis=1).mean()):.3f}) and {args.out}/ids.npy",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
