"""Item vectors from the item–item co-interaction graph: what interactions say two items have in common.

Two items are linked when the same user uses both within ``window`` consecutive events; the edge
weight is their positive pointwise mutual information,

.. math::  w_{ij} = \\max(0, \\log \\frac{c_{ij} \\, C}{c_i \\, c_j})

(c_ij co-uses, c_i an item's co-uses with anything, C all of them), and the item vectors are the
top-k left singular vectors of that matrix scaled by the square roots of their singular values,
L2-normalised (Levy & Goldberg, 2014: this is what skip-gram with negative sampling factorises).
Items close here are used by the same people around the same time; the model scores a user's
recent items against every item in this space (models/interest.py), and item text is aligned to
it (models/align.py), which is what lets a brand-new item be placed before anyone uses it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cointeraction_vectors"]


def cointeraction_vectors(
    users: np.ndarray, items: np.ndarray, n_items: int, dim: int = 32, window: int = 8, seed: int = 0
) -> np.ndarray:
    """``[n_items, dim]`` unit vectors (zero rows: items with no co-use) from a chronological log of dense
    user and item indices."""
    order = np.lexsort((np.arange(len(users)), users))  # by user, chronological within a user
    u, i = users[order], items[order]
    rows, cols = [], []
    for lag in range(1, window + 1):
        same = u[lag:] == u[:-lag]
        a, b = i[:-lag][same], i[lag:][same]
        differ = a != b
        rows.append(a[differ])
        cols.append(b[differ])
    if not rows or not sum(len(r) for r in rows):
        return np.zeros((n_items, dim), np.float32)
    r = np.concatenate(rows + cols)
    c = np.concatenate(cols + rows)  # symmetric
    keys, counts = np.unique(r.astype(np.int64) * n_items + c, return_counts=True)
    r, c = keys // n_items, keys % n_items
    counts = counts.astype(np.float64)
    total = counts.sum()
    per_item = np.bincount(r, weights=counts, minlength=n_items)
    pmi = np.log(counts * total / (per_item[r] * per_item[c]))
    keep = pmi > 0
    m = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([r[keep], c[keep]])), torch.from_numpy(pmi[keep]).float(),
        (n_items, n_items),
        check_invariants=True,
    ).coalesce()
    k = min(dim, max(1, n_items - 1))
    torch.manual_seed(seed)
    left, sing, _ = torch.svd_lowrank(m, q=k, niter=4)
    vec = (left * sing.clamp(min=0).sqrt()).numpy()
    out = np.zeros((n_items, dim), np.float32)
    out[:, :k] = vec
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(norms > 0, out / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
