"""Quality of the recommendations users actually had: one set of definitions for the worker's live
gauges and for the offline reports, so the two compare.

- **Recall@k** and **MRR@k**: for each event, the recommendation that was live for its user when it
  arrived (the last one emitted for them); a hit when the event's item is in its top ``k``, and the
  reciprocal of its position there (0 beyond ``k``).
- **Coverage**: the share of the catalogue that appears in at least one recommendation of the window.
- **Intra-list distance**: per recommendation, the mean pairwise cosine distance (1 − cos) between its
  top ``k`` items' vectors; averaged over recommendations (0: all alike; 1: orthogonal on average).
- **Exposure Gini**: the Gini coefficient of how often each catalogue item appears in the window's
  recommendations, items never recommended included (0: every item equally often; near 1: a few items
  take all the slots).

:class:`LiveQuality` keeps them over a rolling window of the last ``window`` judged events and the
last ``window`` recommendations.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["LiveQuality", "QualitySnapshot", "exposure_gini", "intra_list_distance", "reciprocal_rank"]


def reciprocal_rank(item: str, top: Sequence[str], k: int) -> float:
    """1 / position of ``item`` in the first ``k`` of ``top`` (best first); 0 when it is not there."""
    for pos, candidate in enumerate(top[:k]):
        if candidate == item:
            return 1.0 / (pos + 1)
    return 0.0


def intra_list_distance(vectors: Tensor) -> Tensor:
    """``[R]`` mean pairwise cosine distance within each of ``R`` lists of item vectors ``[R, k, d]``
    (lists of one item: 0)."""
    k = vectors.shape[1]
    if k < 2:
        return vectors.new_zeros(vectors.shape[0])
    unit = torch.nn.functional.normalize(vectors.float(), dim=2)
    sims = unit @ unit.transpose(1, 2)  # [R, k, k]
    mean_sim = (sims.sum((1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(1)) / (k * (k - 1))
    return 1.0 - mean_sim


def exposure_gini(counts: Sequence[int] | np.ndarray, n_items: int) -> float:
    """Gini coefficient of item exposure: ``counts`` are the nonzero exposures of some items, and the
    other ``n_items − len(counts)`` items had none. NaN without exposure."""
    x = np.sort(np.asarray(counts, np.float64))
    m, n = len(x), max(n_items, len(x))
    total = x.sum()
    if total <= 0 or n == 0:
        return float("nan")
    ranks = np.arange(n - m + 1, n + 1, dtype=np.float64)  # ascending; the zeros take ranks 1 … n−m
    return float(2.0 * (ranks * x).sum() / (n * total) - (n + 1) / n)


@dataclass(frozen=True)
class QualitySnapshot:
    judged: int  # events judged in the window
    recall: float  # Recall@k
    mrr: float  # MRR@k
    recommendations: int  # recommendations in the window
    coverage: float
    intra_list_distance: float
    exposure_gini: float


class LiveQuality:
    """Rolling live quality. Per batch: :meth:`judge` the batch's events against the recommendations
    live before it, then :meth:`record` the batch's recommendations. The live list is kept for at most
    ``max_users`` users (least recently active dropped first), so memory stays bounded."""

    def __init__(self, k: int = 10, window: int = 10_000, max_users: int = 200_000) -> None:
        self.k = k
        self.max_users = max_users
        self._live: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._rr: deque[float] = deque(maxlen=window)  # per judged event: its reciprocal rank
        self._lists: deque[tuple[str, ...]] = deque()  # the window's recommendations
        self._ild: deque[float] = deque(maxlen=window)
        self._window = window
        self._exposure: Counter[str] = Counter()

    def judge(self, users: Sequence[str], items: Sequence[str]) -> int:
        """Score events (in arrival order) against their users' live recommendation; returns how many
        had one."""
        n = 0
        for u, i in zip(users, items):
            top = self._live.get(u)
            if top is not None:
                self._rr.append(reciprocal_rank(i, top, self.k))
                n += 1
        return n

    def record(self, users: Sequence[str], lists: Sequence[Sequence[str]], ild: Sequence[float] = ()) -> None:
        """The recommendations just emitted (each user's items, best first) and, for some or all of them,
        their intra-list distance."""
        for u, items in zip(users, lists):
            top = tuple(items[: self.k])
            self._live[u] = top
            self._live.move_to_end(u)
            self._lists.append(top)
            self._exposure.update(top)
            if len(self._lists) > self._window:
                self._exposure.subtract(self._lists.popleft())
        while len(self._live) > self.max_users:
            self._live.popitem(last=False)
        self._ild.extend(ild)
        if len(self._exposure) > 2 * self._window * self.k:  # drop the zeros Counter.subtract leaves
            self._exposure = +self._exposure

    def forget(self, user: str) -> None:
        self._live.pop(user, None)

    def snapshot(self, n_items: int) -> QualitySnapshot:
        """The window's figures for a catalogue of ``n_items`` (NaN where nothing was seen)."""
        rr = np.fromiter(self._rr, np.float64, len(self._rr))
        counts = [c for c in self._exposure.values() if c > 0]
        nan = float("nan")
        return QualitySnapshot(
            judged=len(rr),
            recall=float((rr > 0).mean()) if len(rr) else nan,
            mrr=float(rr.mean()) if len(rr) else nan,
            recommendations=len(self._lists),
            coverage=len(counts) / n_items if self._lists and n_items else nan,
            intra_list_distance=float(np.mean(self._ild)) if self._ild else nan,
            exposure_gini=exposure_gini(counts, n_items) if self._lists else nan,
        )
