"""The simple baselines every model must beat, updated online one event at a time.

Each ranks a target among ``n_items`` items with ties counted half; an item a baseline has no score
for scores 0. ``observe`` is called for every row of the log in order, ``rank`` for a row's target.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Baseline",
    "DecayedPopularity",
    "LastItemTransitions",
    "Popularity",
    "PopularityTieBreak",
    "RecencyFrequency",
    "ScoredBaseline",
    "default_baselines",
    "strongest",
]


class Baseline(Protocol):
    def observe(self, user: str, item: str) -> None: ...

    def rank(self, user: str, target: str, n_items: int) -> float: ...


class ScoredBaseline(Baseline, Protocol):
    def scores(self, user: str) -> Mapping[str, float]:
        """The user's positive scores (possibly all scaled by one positive factor); others score 0."""
        ...


def _rank_in(scores: Mapping[str, float], target: str, n_items: int) -> float:
    """Rank of ``target`` among ``n_items`` items where items missing from ``scores`` score 0; ties half."""
    t = scores.get(target, 0)
    v = np.fromiter(scores.values(), np.float64, len(scores))
    above = int(np.count_nonzero(v > t))
    if t > 0:
        ties = int(np.count_nonzero(v == t)) - 1
    else:  # every item without a score ties with the target
        ties = n_items - len(scores) - (0 if target in scores else 1)
    return 1 + above + 0.5 * ties


class _ItemVector:
    """One float per item seen so far, in an array indexed by an item → row map that grows with new items."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self._values = np.zeros(64, np.float64)

    @property
    def values(self) -> np.ndarray:
        """The seen items' values, in row order (a view)."""
        return self._values[: len(self.index)]

    def add(self, item: str, amount: float) -> None:
        r = self.index.get(item)
        if r is None:
            r = self.index[item] = len(self.index)
            if r == len(self._values):
                self._values = np.concatenate([self._values, np.zeros(r, np.float64)])
        self._values[r] += amount

    def get(self, item: str) -> float:
        r = self.index.get(item)
        return 0.0 if r is None else float(self._values[r])

    def rank(self, target: str, n_items: int) -> float:
        """Rank of ``target`` by value among ``n_items`` items (unseen ones valued 0); ties half."""
        v, t = self.values, self.get(target)
        above = int(np.count_nonzero(v > t))
        ties = int(np.count_nonzero(v == t)) + (n_items - len(v) if t == 0 else 0) - 1
        return 1 + above + 0.5 * ties

    def rank_after(self, primary: Mapping[str, float], target: str, n_items: int) -> float:
        """Rank of ``target`` ordering items by (``primary`` score, this value) lexicographically; ties half.

        Items missing from ``primary`` score 0 there, and every key of ``primary`` must have a row here."""
        q, qt = self.values, self.get(target)
        pt = primary.get(target, 0.0)
        pv = np.fromiter(primary.values(), np.float64, len(primary))
        qv = q[np.fromiter(map(self.index.__getitem__, primary), np.intp, len(primary))]
        if pt > 0:  # the primary tie group is among primary's keys
            same = pv == pt
            above = np.count_nonzero(pv > pt) + np.count_nonzero(same & (qv > qt))
            ties = np.count_nonzero(same & (qv == qt)) - 1
        else:  # the group is every item without a primary score: all items less primary's scored ones
            qs = qv[pv > 0]
            above = len(qs) + np.count_nonzero(q > qt) - np.count_nonzero(qs > qt)
            unseen = n_items - len(q) if qt == 0 else 0
            ties = np.count_nonzero(q == qt) + unseen - np.count_nonzero(qs == qt) - 1
        return 1 + int(above) + 0.5 * int(ties)


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

    def scores(self, user: str) -> Mapping[str, float]:
        return self._scores.get(user, {})

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self.scores(user), target, n_items)


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

    def scores(self, user: str) -> Mapping[str, float]:
        prev = self._last.get(user)
        return self._counts.get(prev, {}) if prev is not None else {}

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self.scores(user), target, n_items)


class Popularity:
    """Global interaction counts so far."""

    def __init__(self) -> None:
        self._counts = _ItemVector()

    @property
    def counts(self) -> dict[str, int]:
        """Each seen item's count."""
        return {i: int(self._counts.values[r]) for i, r in self._counts.index.items()}

    def observe(self, user: str, item: str) -> None:
        self._counts.add(item, 1.0)

    def rank(self, user: str, target: str, n_items: int) -> float:
        return self._counts.rank(target, n_items)


class DecayedPopularity:
    """Global popularity that fades: each event multiplies every item's value by ``decay``, then adds 1 to
    its item, so after event n, value(i) = Σ over events k ≤ n on i of decay^(n − k).

    Stored as value · decay^(−c), with c the events since the last rescale, so an event touches one entry;
    every value is rescaled to its true size before decay^(−c) passes 1e100."""

    _MAX_SCALE = 1e100

    def __init__(self, decay: float = 0.999) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.decay = decay
        self.stored = _ItemVector()
        self._clock = 0
        self._rescale_at = math.inf if decay == 1 else int(math.log(self._MAX_SCALE) / -math.log(decay))

    def observe(self, user: str, item: str) -> None:
        self._clock += 1
        self.stored.add(item, self.decay ** (-self._clock))
        if self._clock >= self._rescale_at:
            self.stored.values[:] *= self.decay**self._clock
            self._clock = 0

    def score(self, item: str) -> float:
        """The item's decayed popularity now (0 if never seen)."""
        return self.stored.get(item) * self.decay**self._clock

    def rank(self, user: str, target: str, n_items: int) -> float:
        return self.stored.rank(target, n_items)


class PopularityTieBreak:
    """A per-user baseline whose ties are broken by decayed popularity: items are ordered by the primary
    score, then (among equal primary scores, notably the unscored items at 0) by :class:`DecayedPopularity`;
    exact ties on both count half.

    Owns its popularity, so each observed row is counted there exactly once."""

    def __init__(self, primary: ScoredBaseline, decay: float = 0.999) -> None:
        self.primary = primary
        self.popularity = DecayedPopularity(decay)

    def observe(self, user: str, item: str) -> None:
        self.primary.observe(user, item)
        self.popularity.observe(user, item)

    def rank(self, user: str, target: str, n_items: int) -> float:
        return self.popularity.stored.rank_after(self.primary.scores(user), target, n_items)


def default_baselines() -> dict[str, Baseline]:
    return {
        "recency_frequency": RecencyFrequency(0.5),
        "recency_frequency_pop": PopularityTieBreak(RecencyFrequency(0.5)),
        "last_item_transitions": LastItemTransitions(),
        "last_item_transitions_pop": PopularityTieBreak(LastItemTransitions()),
        "popularity": Popularity(),
        "decayed_popularity": DecayedPopularity(0.999),
    }


def strongest(baseline_metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """The baseline with the highest ``"mrr"`` (the first of equals; a NaN MRR never wins)."""
    if not baseline_metrics:
        raise ValueError("no baselines to choose from")

    def mrr(name: str) -> float:
        v = float(baseline_metrics[name]["mrr"])
        return -math.inf if math.isnan(v) else v

    return max(baseline_metrics, key=mrr)
