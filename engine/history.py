"""Each event's view of its user's recent past, computed in one pass over a chronological log."""

from __future__ import annotations

import numpy as np

__all__ = ["user_histories"]


def user_histories(users: np.ndarray, items: np.ndarray, length: int) -> np.ndarray:
    """``[E, length]`` array: for event e, the user's previous ``length`` items before e, most recent
    first, -1 where the history is shorter."""
    out = np.full((len(users), length), -1, np.int64)
    rings: dict[int, list[int]] = {}
    for e, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        ring = rings.get(u)
        if ring is None:
            ring = rings[u] = []
        if ring:
            out[e, : len(ring)] = ring
        ring.insert(0, i)
        if len(ring) > length:
            ring.pop()
    return out
