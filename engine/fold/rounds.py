"""Grouping a batch into rounds so that vectorised updates keep each key's sequential order, and the
round loop both stages run their memory cells in."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaps", "occurrence_rounds", "previous_occurrence", "run_rounds"]


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


def gaps(ts: np.ndarray, prev: np.ndarray, last_t: np.ndarray) -> np.ndarray:
    """Seconds since each event's key's previous event: the key's previous event in this batch
    (``prev``, from :func:`previous_occurrence`), or else ``last_t`` (per event: the key's last time
    before the batch; nan for a key never seen, whose gap is 0)."""
    dt = ts - np.where(prev >= 0, ts[prev], last_t)
    dt[np.isnan(dt)] = 0.0
    return dt


def run_rounds(
    cell: Callable[[Tensor, Tensor], Tensor],
    messages: Tensor,
    memory: Tensor,
    slots: np.ndarray,
    rounds: list[np.ndarray],
    after: Callable[[np.ndarray, Tensor], None] | None = None,
    keep_before: bool = False,
) -> Tensor | None:
    """Advance ``memory`` ``[S, d]`` in place over a batch: event ``k`` updates row ``slots[k]`` with
    ``cell(messages[k], memory[slots[k]])``, round by round (:func:`occurrence_rounds`), so each row
    sees its events in batch order. ``after(idx, rows)`` runs after each round. With ``keep_before``,
    returns each event's row as it was just before that event ``[E, d]``."""
    dev = memory.device
    before_all = memory.new_empty(len(slots), memory.shape[1]) if keep_before else None
    for idx in rounds:
        s = torch.from_numpy(slots[idx]).to(dev)
        it = torch.from_numpy(idx).to(dev)
        before = memory[s]
        if before_all is not None:
            before_all[it] = before
        memory[s] = cell(messages[it], before)
        if after is not None:
            after(idx, s)
    return before_all
