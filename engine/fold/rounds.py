"""Grouping a batch into rounds so that vectorised updates keep each key's sequential order."""

from __future__ import annotations

import numpy as np

__all__ = ["occurrence_rounds", "previous_occurrence"]


def occurrence_rounds(keys: np.ndarray) -> list[np.ndarray]:
    """Indices of ``keys`` split by occurrence rank: round r holds each key's r-th occurrence, in
    batch order. Applying round 0, then round 1, … updates every key in its original order while each
    round touches a key at most once.

    >>> [r.tolist() for r in occurrence_rounds(np.array([5, 7, 5, 5, 9]))]
    [[0, 1, 4], [2], [3]]
    """
    n = len(keys)
    if n == 0:
        return []
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.nonzero(sorted_keys[1:] != sorted_keys[:-1])[0] + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - group_start
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(rank))]
    return [by_rank[bounds[r] : bounds[r + 1]] for r in range(len(bounds) - 1)]


def previous_occurrence(keys: np.ndarray) -> np.ndarray:
    """For each position, the index of the previous position with the same key (-1 for a key's
    first occurrence).

    >>> previous_occurrence(np.array([5, 7, 5, 5, 9])).tolist()
    [-1, -1, 0, 2, -1]
    """
    n = len(keys)
    prev = np.full(n, -1, np.int64)
    if n < 2:
        return prev
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return prev
