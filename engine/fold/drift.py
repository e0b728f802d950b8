"""Interest drift: a user's recent interest moving away from their long-run summary.

Both are read from the user's item profile (engine/fold/profile.py), so neither needs state of its own
and both move with the user's state. Over the profile's items,

.. math::

    r_u = (a_i)_i, \\qquad s_u = (c_i - a_i)_i, \\qquad \\mathrm{drift}_u = 1 - \\cos(r_u, s_u)

where ``a_i`` is item ``i``'s profile accumulator with the slower decay (0.9 per event: about the
last ten events) and ``c_i`` the user's use count of it: ``r_u`` is the recent interest, ``s_u`` the
uses before it (the long-run summary). Each item is its own direction: on the synthetic log with
planted drifts the model's item vectors hardly separate topics (mean centred cosine 0.05 within a
topic, −0.02 across), and drift measured with them found fewer planted drifts at a higher false-alarm
rate (docs/operations.md, "Interest drift").

:class:`DriftDetector` turns distances into events with hysteresis: a user drifts when their distance
reaches the threshold, and may drift again only after it has fallen below ``rearm`` × threshold. The
set of users in drift is kept in memory (bounded); a worker that takes over a partition starts with
none of them in drift, so a user still in drift there may be reported once more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.fold.context import UserContext
from engine.fold.profile import PROFILE_DECAYS
from engine.state.codec import UserState

__all__ = [
    "DriftDetector", "DriftFinding", "TrajectoryPoint", "interest_distance", "summary_items", "trajectory",
]

_FAST = PROFILE_DECAYS.index(0.9)  # the accumulator that spans the recent events
_COUNT = len(PROFILE_DECAYS)  # log(1 + count) in the profile features


def interest_distance(ctx: UserContext) -> Tensor:
    """``[B]`` cosine distance between each user's recent interest and their older uses, over the
    items of their profile (0 for users with an empty profile)."""
    valid = (ctx.prof_rows >= 0).float()  # [B, M]
    recent = ctx.prof_feats[..., _FAST].float() * valid
    count = torch.expm1(ctx.prof_feats[..., _COUNT].float()) * valid
    older = (count - recent).clamp(min=0.0)  # the uses the recent interest does not weigh
    cos = torch.nn.functional.cosine_similarity(recent, older, dim=1, eps=1e-8)
    return torch.where(older.sum(1) > 0, 1.0 - cos, torch.zeros_like(cos))


def _recent_weights(st: UserState) -> list[float]:
    """Each profile item's recent weight now: its 0.9-per-event accumulator, decayed to the user's
    latest event (the profile stores it as of the item's last use)."""
    decay = PROFILE_DECAYS[_FAST]
    return [acc[_FAST] * decay ** (st.n_events - last) for acc, last in zip(st.prof_acc, st.prof_last_n)]


def summary_items(st: UserState, n: int = 3) -> tuple[list[str], list[str]]:
    """The ``n`` items that weigh most in the user's long-run summary and in their recent interest."""
    recent = _recent_weights(st)
    by_count = sorted(range(len(st.prof_items)), key=lambda k: -st.prof_count[k])
    by_recent = sorted(range(len(st.prof_items)), key=lambda k: -recent[k])
    return [st.prof_items[k] for k in by_count[:n]], [st.prof_items[k] for k in by_recent[:n]]


@dataclass(frozen=True, slots=True)
class TrajectoryPoint:
    time: float  # the event's time
    item_id: str  # the event's item
    event_type: int
    interest: tuple[str, ...]  # the items that weigh most in the recent interest just after it
    distance: float  # that recent interest's cosine distance from the user's long-run summary now


def trajectory(st: UserState, n_top: int = 3) -> list[TrajectoryPoint]:
    """The user's recent interest after each event of their history ring, oldest first: the same
    recent weighting as :func:`interest_distance` (0.9 per event) over the events up to that one."""
    decay = PROFILE_DECAYS[_FAST]
    recent = _recent_weights(st)
    summary = {i: max(c - a, 0.0) for i, c, a in zip(st.prof_items, st.prof_count, recent)}
    s_norm = sum(v * v for v in summary.values()) ** 0.5
    points = []
    weights: dict[str, float] = {}
    for k in range(len(st.hist_items) - 1, -1, -1):  # oldest first
        weights = {i: w * decay for i, w in weights.items()}
        item = st.hist_items[k]
        weights[item] = weights.get(item, 0.0) + 1.0
        dot = sum(w * summary.get(i, 0.0) for i, w in weights.items())
        w_norm = sum(w * w for w in weights.values()) ** 0.5
        distance = 1.0 - dot / (w_norm * s_norm) if s_norm > 0 and w_norm > 0 else 0.0
        top = tuple(sorted(weights, key=lambda i: -weights[i])[:n_top])
        points.append(TrajectoryPoint(st.hist_times[k], item, st.hist_types[k], top, distance))
    return points


@dataclass(frozen=True)
class DriftFinding:
    user_id: str
    index: int  # the user's position in the batch given to :meth:`DriftDetector.check`
    distance: float


class DriftDetector:
    """Users whose distance crossed ``threshold`` (with at least ``min_events`` events); see the module
    docstring for the hysteresis. ``threshold`` ≤ 0 turns detection off."""

    def __init__(
        self, threshold: float, min_events: int = 10, rearm: float = 0.8, max_tracked: int = 100_000
    ) -> None:
        self.threshold = threshold
        self.min_events = min_events
        self.rearm = rearm
        self.max_tracked = max_tracked
        self._in_drift: OrderedDict[str, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def check(
        self, users: Sequence[str], n_events: Sequence[int], distances: Sequence[float]
    ) -> list[DriftFinding]:
        """The users (with their event counts and distances, after their latest events) who drift now,
        taken in at once: :meth:`evaluate`, then :meth:`settle`."""
        found, rearmed = self.evaluate(users, n_events, distances)
        self.settle(found, rearmed)
        return found

    def evaluate(
        self, users: Sequence[str], n_events: Sequence[int], distances: Sequence[float]
    ) -> tuple[list[DriftFinding], list[str]]:
        """The users who drift now, and those in drift whose distance fell below the rearm level;
        changes nothing until :meth:`settle` (a worker settles once the batch's output is committed).
        Each user at most once in ``users``."""
        found, rearmed = [], []
        for k, (u, n, d) in enumerate(zip(users, n_events, distances)):
            if u in self._in_drift:
                if d < self.rearm * self.threshold:
                    rearmed.append(u)
            elif d >= self.threshold and n >= self.min_events:
                found.append(DriftFinding(u, k, float(d)))
        return found, rearmed

    def settle(self, found: Sequence[DriftFinding], rearmed: Sequence[str]) -> None:
        """Take in what :meth:`evaluate` returned."""
        for u in rearmed:
            self._in_drift.pop(u, None)
        for f in found:
            self._in_drift[f.user_id] = None
        while len(self._in_drift) > self.max_tracked:
            self._in_drift.popitem(last=False)

    def forget(self, user: str) -> None:
        self._in_drift.pop(user, None)
