"""The item graph's transition pairs read the same from its dense matrix and from its sparse rows."""

import numpy as np
import torch

from engine.fold.graph import ItemGraph


def _pairs(graph, recent, n):
    users, items, feats = graph.transition_pairs(recent, n, torch.device("cpu"))
    order = np.lexsort((items.numpy(), users.numpy()))
    return users.numpy()[order], items.numpy()[order], feats.numpy()[order]


def test_sparse_rows_give_the_dense_matrix_pairs():
    n = 60
    rng = np.random.default_rng(0)
    dense, sparse = ItemGraph(n), ItemGraph(n)
    sparse._dense = None  # read from the sparse rows only
    for _ in range(20):
        rows = rng.integers(0, n, 300)
        prev = np.where(rng.random(300) < 0.2, -1, rng.integers(0, n, 300))
        dense.observe(prev, rows)
        sparse.observe(prev, rows)
        recent = rng.integers(-1, n, (25, 4))
        for a, b in zip(_pairs(dense, recent, n), _pairs(sparse, recent, n)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # only next items below n_items count (a catalogue read before the graph grew)
    u, i, _ = _pairs(sparse, recent, 30)
    assert (i < 30).all() and len(u) > 0
    empty = sparse.transition_pairs(np.full((3, 4), -1), n, torch.device("cpu"))
    assert all(len(t) == 0 for t in empty)


def test_sparse_rows_give_the_dense_matrix_pair_counts_and_totals():
    n = 50
    rng = np.random.default_rng(1)
    dense, sparse = ItemGraph(n), ItemGraph(n)
    sparse._dense = None
    for _ in range(10):
        rows = rng.integers(0, n, 200)
        prev = np.where(rng.random(200) < 0.2, -1, rng.integers(0, n, 200))
        dense.observe(prev, rows)
        sparse.observe(prev, rows)
    src = torch.from_numpy(rng.integers(-1, n, (12, 6)))
    dst = torch.from_numpy(rng.integers(0, n, (12, 5)))
    assert torch.equal(dense.pair_counts(src, dst), sparse.pair_counts(src, dst))
    assert sparse.pair_counts(src, dst).sum() > 0
    expected = torch.tensor([[sum(sparse.out.get(j, {}).values()) if j >= 0 else 0.0 for j in r]
                             for r in src.tolist()])
    assert torch.equal(sparse.pair_totals(src), expected)
