"""The simple baselines every model must beat, updated online one event at a time.

Each ranks a target among ``n_items`` items with ties counted half; an item a baseline has no score
for scores 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

__all__ = ["Baseline", "LastItemTransitions", "Popularity", "RecencyFrequency", "default_baselines"]


class Baseline(Protocol):
    def observe(self, user: str, item: str) -> None: ...

    def rank(self, user: str, target: str, n_items: int) -> float: ...


def _rank_in(scores: dict[str, float] | dict[str, int], target: str, n_items: int) -> float:
    """Rank of ``target`` among ``n_items`` items where items missing from ``scores`` score 0; ties half."""
    t = scores.get(target, 0)
    above = sum(1 for v in scores.values() if v > t)
    if t > 0:
        ties = sum(1 for v in scores.values() if v == t) - 1
    else:  # every item without a score ties with the target
        ties = n_items - len(scores) - (0 if target in scores else 1)
    return 1 + above + 0.5 * ties


class RecencyFrequency:
    """Per-user recency-frequency: score(i) = Σ over the user's past events on i of decay^(events ago)."""

    def __init__(self, decay: float = 0.5) -> None:
        self.decay = decay
        self._scores: dict[str, dict[str, float]] = defaultdict(dict)
        self._n: dict[str, int] = defaultdict(int)

    def observe(self, user: str, item: str) -> None:
        # Stored scaled by decay^-n so an update touches one entry; rescaled before it overflows.
        n = self._n[user] = self._n[user] + 1
        s = self._scores[user]
        s[item] = s.get(item, 0.0) + self.decay ** (-n)
        if n > 200:
            scale = self.decay**n
            self._scores[user] = {i: v * scale for i, v in s.items() if v * scale > 1e-12}
            self._n[user] = 0

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self._scores.get(user, {}), target, n_items)


class LastItemTransitions:
    """Global counts of consecutive transitions j → i within users; ranks by the user's last item's row."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = defaultdict(dict)
        self._last: dict[str, str] = {}

    def observe(self, user: str, item: str) -> None:
        prev = self._last.get(user)
        if prev is not None:
            row = self._counts[prev]
            row[item] = row.get(item, 0) + 1
        self._last[user] = item

    def rank(self, user: str, target: str, n_items: int) -> float:
        prev = self._last.get(user)
        return _rank_in(self._counts.get(prev, {}) if prev is not None else {}, target, n_items)


class Popularity:
    """Global interaction counts so far."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def observe(self, user: str, item: str) -> None:
        self.counts[item] += 1

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self.counts, target, n_items)


def default_baselines() -> dict[str, Baseline]:
    return {
        "recency_frequency": RecencyFrequency(0.5),
        "last_item_transitions": LastItemTransitions(),
        "popularity": Popularity(),
    }
