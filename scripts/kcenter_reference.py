"""Reference k-center greedy implementations in PyTorch (helpers for fixtures and benchmarks; never used at
build/test time).

`reference_kcenter` follows DiverseEvol's `KCenterSampling.query` (OFA-Sys/DiverseEvol, evol_schedules/
kcenter_sampling.py) step by step, written afresh from its description in ALGORITHMS.md section 2:
  * Gram matrix G = E @ E.T built by concatenating row partitions onto an empty (0, N) tensor;
  * squared norms = diagonal of G (a copy); dist = sqrt(((-2 G) + sq_row) + sq_col), no clamp (negative
    rounding gives NaN exactly as in the original);
  * mat = dist[unlabelled rows][:, labelled cols]; n times: row minima, argmax (first maximum), map back to the
    full index, drop that row from mat, append the column of distances to the new center;
  * the original returns the new indices sorted ascending; the pick order is recorded as well.
It therefore needs the full N x N matrix (O(N^2) memory), like the original.

`running_min_kcenter` is the careful rewrite: one running minimum per row, updated with one matrix-vector product
per pick (O(N) extra memory). Same distances (sqrt of the same Gram formula, clamped at 0), same tie rule.

Run through scripts/gen_kcenter_reference.py or benches/compare/kcenter/compare.py.
"""

import torch


def reference_kcenter(emb: torch.Tensor, labeled_mask: torch.Tensor, n: int, step: int = 10_000_000_000):
    """Returns (picks in pick order, picks sorted as the original returns them)."""
    emb = emb.float()
    num = emb.shape[0]
    dist_mat = torch.empty((0, num))
    for i in range(0, num, step):
        part = emb[i:i + step, :]
        dist_mat = torch.concat([dist_mat, torch.matmul(part, emb.t())], dim=0)
    sq = dist_mat.diagonal().clone().reshape(num, 1)
    dist_mat *= -2
    dist_mat += sq
    dist_mat += sq.t()
    dist_mat = torch.sqrt(dist_mat)
    lab = labeled_mask.clone()
    mat = dist_mat[~lab, :][:, lab]
    order = []
    for _ in range(n):
        row_min = mat.min(dim=1).values
        j = row_min.argmax()
        q = torch.arange(num)[~lab][j]
        lab[q] = True
        order.append(int(q))
        keep = torch.ones(mat.shape[0], dtype=torch.bool)
        keep[j] = False
        mat = mat[keep, :].reshape(-1, mat.shape[1])
        mat = torch.concat((mat, dist_mat[~lab, q][:, None]), dim=1)
    new_sorted = torch.arange(num)[labeled_mask ^ lab]
    return order, [int(i) for i in new_sorted]


def running_min_kcenter(emb: torch.Tensor, labeled: list, n: int, block: int = 8192):
    """Running-minimum k-center greedy; returns the picks in pick order."""
    emb = emb.float().contiguous()
    num = emb.shape[0]
    sq = (emb * emb).sum(dim=1)
    min_d = torch.full((num,), float("inf"))
    if labeled:
        centers = emb[labeled]
        csq = sq[labeled]
        for i in range(0, num, block):
            g = emb[i:i + block] @ centers.t()
            d = torch.sqrt(torch.clamp((-2 * g + sq[i:i + block, None]) + csq[None, :], min=0))
            min_d[i:i + block] = d.min(dim=1).values
        min_d[labeled] = float("-inf")
    order = []
    for _ in range(min(n, num - len(labeled))):
        q = int(torch.argmax(min_d))
        order.append(q)
        d = torch.sqrt(torch.clamp((-2 * (emb @ emb[q]) + sq) + sq[q], min=0))
        torch.minimum(min_d, d, out=min_d)
        min_d[q] = float("-inf")
    return order
