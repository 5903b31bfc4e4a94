"""Cross-checks data-select's k-center picks against the DiverseEvol-faithful reference on fresh random matrices
(none of them committed): Gaussian, LM-like anisotropic 768-d, float duplicates, tight clusters, 6000 x 256.

Run from the repository root:
    . ~/.cache/pyref/venv/bin/activate
    cargo build --release -p data-select --example kcenter_bench
    python scripts/kcenter_crosscheck.py --bin $CARGO_TARGET_DIR/release/examples/kcenter_bench [--workdir /tmp/kcx]

Prints, per case, whether the pick order and the picked set equal the reference's; on a difference, the first
position and whether the reference's Gram-formula distances went negative (NaN) or were within f32 rounding.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kcenter_reference import reference_kcenter  # noqa: E402


def run(args, name, emb, n_lab, k, seed):
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    rng = np.random.default_rng(seed)
    lab = sorted(int(i) for i in rng.choice(emb.shape[0], n_lab, replace=False))
    e_path = os.path.join(args.workdir, f"{name}.npy")
    l_path = os.path.join(args.workdir, f"{name}_lab.json")
    p_path = os.path.join(args.workdir, f"{name}_rust.json")
    np.save(e_path, emb)
    with open(l_path, "w") as f:
        json.dump(lab, f)
    mask = torch.zeros(emb.shape[0], dtype=torch.bool)
    mask[lab] = True
    order, _ = reference_kcenter(torch.from_numpy(emb), mask, k)
    subprocess.run([args.bin, e_path, l_path, str(k), "1", "lazy", p_path], check=True, capture_output=True)
    with open(p_path) as f:
        ours = json.load(f)
    first = next((i for i in range(len(ours)) if ours[i] != order[i]), None)
    note = ""
    if first is not None:
        t = torch.from_numpy(emb)
        g = t @ t.t()
        sq = g.diagonal().clone().reshape(-1, 1)
        neg = int((((-2 * g) + sq) + sq.t() < 0).sum())
        note = f" (reference Gram distances negative -> NaN: {neg} entries)"
    status = "order equal" if first is None else f"order differs from pick {first}{note}"
    print(f"{name} {emb.shape} labelled {n_lab} k {k}: {status}; set equal {sorted(ours) == sorted(order)}", flush=True)
    return first is None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--workdir", default="/tmp/kcx")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    for s in range(4):
        run(args, f"gauss{s}", rng.standard_normal((2000, 64)), 20, 200, s)
    run(args, "lm768", rng.standard_normal((3000, 768)) * np.linspace(4, 0.01, 768) + 2.0, 100, 200, 11)
    base = rng.standard_normal((300, 32))
    run(args, "float_dups", base[rng.integers(0, 300, 1500)] * 3.7, 10, 400, 12)
    tight = np.repeat(rng.standard_normal((50, 96)) * 10, 40, axis=0) + 0.01 * rng.standard_normal((2000, 96))
    run(args, "tight_clusters", tight, 5, 300, 13)
    run(args, "gauss_big", rng.standard_normal((6000, 256)), 100, 500, 14)


if __name__ == "__main__":
    main()
