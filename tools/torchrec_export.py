#!/usr/bin/env python3
"""Converts a TorchRec state dict (.pt) into what `embstore ingest --state-dict` reads.

Run it where torch is installed (embstore itself never needs torch):

    python3 tools/torchrec_export.py STATE.pt OUT_DIR      # OUT_DIR/<table>.npy per table
    python3 tools/torchrec_export.py STATE.pt OUT.npz      # one numpy.savez archive
    embstore ingest STORE --state-dict OUT_DIR --codec int8   # every table, any policy

Every tensor whose key ends in ``embedding_bags.<table>.weight`` (an EmbeddingBagCollection,
under any prefix such as ``sparse_arch.embedding_bag_collection.``) or ``embeddings.<table>.weight``
(an EmbeddingCollection) becomes ``<table>``: a float32 [N, d] array (float16 tensors stay
float16, which ingest also takes; other float types are converted to float32). Row i is the
embedding of id i, so ingest loads it with ids 0..N-1. Other keys are listed and skipped. A
sharded tensor is refused: save the state dict from an unsharded model (or gather it first).
"""
import argparse
import os
import re
import sys

import numpy as np
import torch

TABLE_KEY = re.compile(r"(?:^|\.)(?:embedding_bags|embeddings)\.([^.]+)\.weight$")


def tables(state):
    """{table: numpy array} from a state dict; exits with a message on a clash or a sharded tensor."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    found, skipped = {}, []
    for key, value in state.items():
        match = TABLE_KEY.search(key)
        if not match or not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        name = match.group(1)
        if name in found:
            sys.exit(f"two tensors name table '{name}' (the second: {key}); export them separately")
        if hasattr(value, "local_shards") or type(value).__name__ in ("ShardedTensor", "DTensor"):
            sys.exit(f"{key} is sharded; save the state dict of an unsharded model, or gather it first")
        tensor = value.detach().cpu()
        if tensor.dim() != 2:
            sys.exit(f"{key} has shape {tuple(tensor.shape)}; an embedding table is [N, d]")
        if tensor.dtype != torch.float16:
            tensor = tensor.to(torch.float32)
        found[name] = np.ascontiguousarray(tensor.numpy())
    return found, skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", help="the state dict saved with torch.save (.pt)")
    parser.add_argument("out", help="a directory (one TABLE.npy each) or a file ending in .npz")
    args = parser.parse_args()
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    found, skipped = tables(state)
    if not found:
        sys.exit(f"{args.state}: no key ends in embedding_bags.<table>.weight or embeddings.<table>.weight")
    if args.out.endswith(".npz"):
        np.savez(args.out, **found)   # stored, not compressed: embstore reads members in place
    else:
        os.makedirs(args.out, exist_ok=True)
        for name, array in found.items():
            np.save(os.path.join(args.out, name + ".npy"), array)
    for name, array in sorted(found.items()):
        print(f"{name}: {array.shape[0]} x {array.shape[1]} {array.dtype}")
    if skipped:
        print(f"skipped {len(skipped)} other key(s): " + ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""))
    print(f"wrote {len(found)} table(s) to {args.out}; load them with: embstore ingest STORE --state-dict {args.out} --codec ...")


if __name__ == "__main__":
    main()
