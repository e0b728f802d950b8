"""Each event's view of its user's recent past, computed in one pass over a chronological log."""

from __future__ import annotations

import numpy as np

__all__ = ["user_histories"]


def user_histories(users: np.ndarray, items: np.ndarray, length: int, ts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For event e, the user's previous ``length`` items before e, most recent first (-1 where the
    history is shorter), ``[E, length]``; and their ages in seconds relative to the most recent one."""
    out = np.full((len(users), length), -1, np.int64)
    ages = np.zeros((len(users), length), np.float32)
    t = np.zeros(len(users)) if ts is None else ts
    rings: dict[int, list[int]] = {}
    times: dict[int, list[float]] = {}
    for e, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        ring = rings.get(u)
        if ring is None:
            ring = rings[u] = []
            times[u] = []
        tr = times[u]
        if ring:
            out[e, : len(ring)] = ring
            ages[e, : len(ring)] = tr[0] - np.asarray(tr)
        ring.insert(0, i)
        tr.insert(0, float(t[e]))
        if len(ring) > length:
            ring.pop()
            tr.pop()
    return out, ages
