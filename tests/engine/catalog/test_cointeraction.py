"""Co-interaction vectors: items used by the same people are close."""

import numpy as np

from engine.catalog.cointeraction import cointeraction_vectors


def test_items_used_by_the_same_people_are_close():
    rng = np.random.default_rng(0)
    users, items = [], []
    for _ in range(3000):  # users 0-19 use items 0-9, users 20-39 items 10-19; item 20 is never used
        u = int(rng.integers(40))
        users.append(u)
        items.append(int(rng.integers(10)) + (10 if u >= 20 else 0))
    v = cointeraction_vectors(np.array(users), np.array(items), 21, dim=4, window=4)
    assert v.shape == (21, 4) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:20], axis=1), 1.0, atol=1e-5) and not v[20].any()
    sims = v[:20] @ v[:20].T
    group = np.arange(20) // 10
    same = group[:, None] == group[None, :]
    np.fill_diagonal(same, False)
    assert sims[same].mean() > 0.5 > sims[group[:, None] != group[None, :]].mean()
