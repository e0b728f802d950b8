"""A user's item profile: every distinct item they used recently, with how often and how recently.

The recency-frequency statistics behind the strongest simple baselines need more than the last few
events: a user who cycles through 30 pages still returns to one last seen 60 events ago. The profile
keeps up to ``max_items`` distinct items (least recently used evicted first), each with

- ``acc[k]``: Σ decay_k^(events ago) over the user's events on the item, stored as of ``last_n``;
- ``count`` and ``last_t`` (time of the last use) and ``last_n`` (the user's event number then).

Features at a query time "now" (by default the user's latest event):
``[acc_k · decay_k^(n − last_n) for each k, log(1 + count), 1 / (1 + log(1 + age) / 10),
1 / (1 + distinct-recency rank)]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.state.codec import UserState

__all__ = ["N_PROFILE_FEATURES", "PROFILE_DECAYS", "feature_matrix", "profile_features", "update_profile"]

PROFILE_DECAYS = (0.5, 0.9)
N_PROFILE_FEATURES = len(PROFILE_DECAYS) + 3
# An entry's accumulators are a tuple, replaced on each use and never written into: one object the
# garbage collector stops tracking, where a list would stay tracked for as long as the state lives.
_NEW_ACC = (1.0,) * len(PROFILE_DECAYS)


def update_profile(st: UserState, item: str, t: float, max_items: int) -> None:
    """Fold one event on ``item`` at time ``t`` into the user's profile (call in event order)."""
    st.n_events += 1
    n = st.n_events
    try:
        k = st.prof_items.index(item)
    except ValueError:
        k = -1
    if k >= 0:
        gap = n - st.prof_last_n[k]
        st.prof_acc[k] = tuple([a * d**gap + 1.0 for a, d in zip(st.prof_acc[k], PROFILE_DECAYS)])
        st.prof_count[k] += 1
        # keep most recently used first: move to the front
        for lst in _lists(st):
            lst.insert(0, lst.pop(k))
        st.prof_last_n[0] = n
        st.prof_last_t[0] = t
        return
    st.prof_items.insert(0, item)
    st.prof_last_n.insert(0, n)
    st.prof_count.insert(0, 1)
    st.prof_last_t.insert(0, t)
    st.prof_acc.insert(0, _NEW_ACC)
    if len(st.prof_items) > max_items:
        for lst in _lists(st):
            lst.pop()


def _lists(st: UserState) -> tuple[list[Any], ...]:
    """The profile's parallel lists, one entry per item."""
    return st.prof_items, st.prof_last_n, st.prof_count, st.prof_last_t, st.prof_acc


def feature_matrix(
    acc: np.ndarray, gap: np.ndarray, count: np.ndarray, age: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """``[P, N_PROFILE_FEATURES]`` features of ``P`` profile entries (of one user or many): decayed
    accumulators ``acc`` ``[P, n_decays]`` stored ``gap`` events ago, use ``count``, seconds since the
    last use ``age`` (≥ 0) and distinct-recency ``rank`` (0 = the user's most recent item)."""
    out = np.empty((len(gap), N_PROFILE_FEATURES), np.float32)
    c = len(PROFILE_DECAYS)
    out[:, :c] = acc * np.asarray(PROFILE_DECAYS)[None, :] ** gap[:, None]
    out[:, c] = np.log1p(count)
    out[:, c + 1] = 1.0 / (1.0 + np.log1p(age) / 10.0)
    out[:, c + 2] = 1.0 / (1.0 + rank)
    return out


def profile_features(st: UserState, now: float | None = None) -> np.ndarray:
    """``[len(profile), N_PROFILE_FEATURES]`` features of the user's profile items at time ``now``
    (default: the user's latest event)."""
    m = len(st.prof_items)
    if not m:
        return np.zeros((0, N_PROFILE_FEATURES), np.float32)
    ref = st.prof_last_t[0] if now is None or np.isnan(now) else now
    return feature_matrix(
        np.asarray(st.prof_acc, np.float64).reshape(m, -1),
        st.n_events - np.asarray(st.prof_last_n, np.float64),
        np.asarray(st.prof_count, np.float64),
        np.maximum(ref - np.asarray(st.prof_last_t, np.float64), 0.0),
        np.arange(m, dtype=np.float64),
    )
