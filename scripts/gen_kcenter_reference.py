"""Generates the k-center reference fixtures under crates/data-select/tests/fixtures/.

Run from the repository root:
    . ~/.cache/pyref/venv/bin/activate && python scripts/gen_kcenter_reference.py

For each case it writes <name>.npy (float32 embeddings, C order) and <name>.json with the labelled indices, k, the
metric, and the picks of the DiverseEvol-faithful full-matrix implementation (scripts/kcenter_reference.py) in pick
order and sorted (the original's return order); the running-min rewrite is checked to agree. Cosine cases run the
reference on L2-normalised rows (cosine distance is a monotone function of the Euclidean distance between unit
vectors). The Rust test crates/data-select/tests/reference_picks.rs asserts identical picks.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kcenter_reference import reference_kcenter, running_min_kcenter  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "data-select", "tests", "fixtures")


def case_gauss(rng):
    return rng.standard_normal((200, 16)).astype(np.float32), 10, 40, "euclidean"


def case_int_ties(rng):
    # small integers: every Gram entry is exact in f32, so ties are exact; many duplicate rows
    base = rng.integers(-3, 4, size=(40, 6)).astype(np.float32)
    rows = base[rng.integers(0, 40, size=120)]
    return rows, 5, 100, "euclidean"


def case_clustered(rng):
    centers = rng.standard_normal((10, 32)).astype(np.float32) * 5
    rows = centers[rng.integers(0, 10, size=300)] + 0.3 * rng.standard_normal((300, 32)).astype(np.float32)
    return rows.astype(np.float32), 20, 60, "euclidean"


def case_wide(rng):
    # LM-like: anisotropic, mean offset, 384-d
    scales = np.linspace(3.0, 0.05, 384).astype(np.float32)
    rows = rng.standard_normal((250, 384)).astype(np.float32) * scales + 1.5
    return rows.astype(np.float32), 25, 80, "euclidean"


def case_cosine(rng):
    rows = rng.standard_normal((150, 8)).astype(np.float32) * rng.uniform(0.5, 20, size=(150, 1)).astype(np.float32)
    return rows, 3, 40, "cosine"


def case_no_labels_small(rng):
    # the original fails with an empty labelled set; with one labelled row (row 0) it matches our empty-set rule
    # (first pick = row 0) shifted by one pick, which the Rust test checks separately.
    return rng.standard_normal((60, 5)).astype(np.float32), 1, 20, "euclidean"


CASES = {
    "gauss_200x16": case_gauss,
    "int_ties_120x6": case_int_ties,
    "clustered_300x32": case_clustered,
    "wide_250x384": case_wide,
    "cosine_150x8": case_cosine,
    "one_label_60x5": case_no_labels_small,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    for seed, (name, make) in enumerate(sorted(CASES.items())):
        rng = np.random.default_rng(1000 + seed)
        emb, n_lab, k, metric = make(rng)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if name.startswith("one_label"):
            labeled = [0]
        else:
            labeled = sorted(int(i) for i in rng.choice(emb.shape[0], n_lab, replace=False))
        work = emb
        if metric == "cosine":
            norms = np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
            work = (emb / norms).astype(np.float32)
        t = torch.from_numpy(work)
        mask = torch.zeros(emb.shape[0], dtype=torch.bool)
        mask[labeled] = True
        order, sorted_new = reference_kcenter(t, mask, k)
        rm = running_min_kcenter(t, labeled, k)
        assert rm == order, f"{name}: running-min rewrite disagrees with the reference"
        np.save(os.path.join(OUT, name + ".npy"), emb)
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump({"labeled": labeled, "k": k, "metric": metric, "picks": order, "picks_sorted": sorted_new,
                       "generator": "scripts/gen_kcenter_reference.py (DiverseEvol-faithful full-matrix torch)"}, f)
        print(f"{name}: n={emb.shape[0]} d={emb.shape[1]} labeled={len(labeled)} k={k} first picks {order[:8]}")


if __name__ == "__main__":
    main()
