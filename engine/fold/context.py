"""What the scorer knows about a user at a query time: their item profile (engine/fold/profile.py), their
last events in order, and how long ago their last event was.

One :class:`UserContext` is built from stored user states (serving, online learning) or from a log
(training) by the same code, so training sees exactly what serving sees. The query time is when the
recommendation is for: the pushed recommendation is for the moment of the user's last event;
``/users/{id}/recommendations`` is for the request time; the evaluation protocols rank each row at
that row's own time, as JODIE and TGB do.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import chain
from operator import attrgetter
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.fold.profile import N_PROFILE_FEATURES, feature_matrix, update_profile
from engine.state.codec import UserState

__all__ = [
    "EMIT_GAPS", "HISTORY", "UserContext", "apply_event", "context_copy", "emission_times", "log_contexts",
    "user_contexts",
]

HISTORY = 16  # the last events kept in order in each user's state


EMIT_GAPS = 8  # a pushed recommendation is for the shortest of the user's last EMIT_GAPS gaps


def emission_times(states: Sequence[UserState]) -> np.ndarray:
    """``[B]`` the moment each user's pushed recommendation is for: their last event plus the shortest
    of their last ``EMIT_GAPS`` gaps between events (their last event itself with fewer than two
    events). A pushed list is read before the user's next event, whose time it cannot know; the model
    was trained knowing it, so it is asked about the user's own quickest return rather than an
    instant one (chosen on Wikipedia's validation split against the median and lower quantiles:
    docs/evaluation.md)."""
    out = [0.0] * len(states)
    for k, st in enumerate(states):
        t = st.hist_times[: EMIT_GAPS + 1]  # most recent first
        out[k] = t[0] + min(map(operator.sub, t, t[1:])) if len(t) >= 2 else (t[0] if t else 0.0)
    return np.array(out, np.float64)


def context_copy(st: UserState) -> UserState:
    """A copy of what :func:`user_contexts` reads of ``st``, unchanged by later events (they replace
    the profile's inner lists, never write into them)."""
    return UserState(
        st.memory,
        hist_items=st.hist_items[:], hist_times=st.hist_times[:], hist_types=st.hist_types[:],
        n_events=st.n_events,
        prof_items=st.prof_items[:], prof_last_n=st.prof_last_n[:], prof_count=st.prof_count[:],
        prof_last_t=st.prof_last_t[:], prof_acc=st.prof_acc[:],
    )


def apply_event(st: UserState, item: str, t: float, event_type: int, max_items: int) -> None:
    """Fold one event into the user's profile and history ring (call in event order)."""
    update_profile(st, item, t, max_items)
    st.hist_items.insert(0, item)
    st.hist_times.insert(0, t)
    st.hist_types.insert(0, event_type)
    del st.hist_items[HISTORY:], st.hist_times[HISTORY:], st.hist_types[HISTORY:]


@dataclass
class UserContext:
    """A batch of ``B`` users' contexts (tensors, one row per user)."""

    prof_rows: Tensor  # [B, M] profile item rows, most recently used first (-1 = empty)
    prof_feats: Tensor  # [B, M, Fp]
    hist_rows: Tensor  # [B, L] last events' item rows, most recent first (-1 = none)
    hist_ages: Tensor  # [B, L] seconds before the query time
    hist_types: Tensor  # [B, L] event-type ids
    gap: Tensor  # [B] seconds from the user's last event to the query time (0 = none)

    def __len__(self) -> int:
        return self.prof_rows.shape[0]

    def to(self, device: torch.device) -> UserContext:
        return UserContext(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __getitem__(self, sel: Tensor | slice | np.ndarray) -> UserContext:
        return UserContext(*(getattr(self, f.name)[sel] for f in fields(self)))

    @classmethod
    def cat(cls, parts: Sequence[UserContext]) -> UserContext:
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    @property
    def last_rows(self) -> Tensor:
        """``[B]`` each user's last item row (-1 = none)."""
        return self.hist_rows[:, 0]


class _Arrays:
    """Numpy buffers for ``n`` contexts, filled row by row, then turned into a :class:`UserContext`."""

    def __init__(self, n: int, max_items: int, hist_len: int) -> None:
        self.prof_rows = np.full((n, max_items), -1, np.int64)
        self.prof_feats = np.zeros((n, max_items, N_PROFILE_FEATURES), np.float32)
        self.hist_rows = np.full((n, hist_len), -1, np.int64)
        self.hist_ages = np.zeros((n, hist_len), np.float32)
        self.hist_types = np.zeros((n, hist_len), np.int64)
        self.gap = np.zeros(n, np.float32)
        self.max_items, self.hist_len = max_items, hist_len

    def tensors(self) -> UserContext:
        return UserContext(
            *(torch.from_numpy(a) for a in (self.prof_rows, self.prof_feats, self.hist_rows, self.hist_ages,
                                             self.hist_types, self.gap))
        )


def user_contexts(
    states: Sequence[UserState],
    rows_of: Callable[[list[str]], np.ndarray],
    max_items: int,
    hist_len: int,
    now: Sequence[float] | np.ndarray | None = None,
) -> UserContext:
    """Contexts of ``states`` (CPU tensors) at query times ``now`` (default: each user's last event).
    ``rows_of`` maps item ids to rows. The same features as one row at a time (``log_contexts``),
    gathered for the whole batch: one id lookup and one feature computation per batch, not per user."""
    n = len(states)
    arr = _Arrays(n, max_items, hist_len)
    if now is None:
        t = np.array([st.hist_times[0] if st.hist_times else 0.0 for st in states], np.float64)
    else:
        t = np.asarray(now, np.float64).reshape(n)
    m = np.array([min(len(st.prof_items), max_items) for st in states], np.int64)
    if m.any():
        b, pos = _ragged(m)
        has = m > 0
        pairs = [(st, k) for st, k in zip(states, m.tolist()) if k]
        first_use = np.array([st.prof_last_t[0] for st, _ in pairs])
        ref = np.where(np.isnan(t[has]), first_use, t[has])  # profile_features' reference time
        ref_b = np.repeat(ref, m[has])
        arr.prof_rows[b, pos] = rows_of(_cat(pairs, "prof_items"))
        arr.prof_feats[b, pos] = feature_matrix(
            np.fromiter(chain.from_iterable(_cat(pairs, "prof_acc")), np.float64).reshape(len(b), -1),
            np.repeat([st.n_events for st, _ in pairs], m[has]) - _flat(pairs, "prof_last_n", len(b)),
            _flat(pairs, "prof_count", len(b)),
            np.maximum(ref_b - _flat(pairs, "prof_last_t", len(b)), 0.0),
            pos.astype(np.float64),
        )
    h = np.array([min(len(st.hist_items), hist_len) for st in states], np.int64)
    if h.any():
        b, pos = _ragged(h)
        pairs = [(st, k) for st, k in zip(states, h.tolist()) if k]
        arr.hist_rows[b, pos] = rows_of(_cat(pairs, "hist_items"))
        arr.hist_ages[b, pos] = np.maximum(t[b] - _flat(pairs, "hist_times", len(b)), 0.0)
        arr.hist_types[b, pos] = _flat(pairs, "hist_types", len(b))
        has = h > 0
        arr.gap[has] = np.maximum(t[has] - np.array([st.hist_times[0] for st, _ in pairs]), 0.0)
    return arr.tensors()


def _ragged(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and position of each element of rows with ``lengths``, row after row."""
    b = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(b)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return b, pos


def _cat(pairs: list[tuple[UserState, int]], name: str) -> list[Any]:
    """The first ``k`` entries of list field ``name`` of each (state, k), concatenated."""
    field = attrgetter(name)
    return list(chain.from_iterable([field(st)[:k] for st, k in pairs]))


def _flat(pairs: list[tuple[UserState, int]], name: str, size: int) -> np.ndarray:
    """:func:`_cat` of a numeric field (``size`` entries in all) as float64."""
    field = attrgetter(name)
    return np.fromiter(chain.from_iterable([field(st)[:k] for st, k in pairs]), np.float64, size)


def log_contexts(
    users: np.ndarray, items: np.ndarray, ts: np.ndarray, event_types: np.ndarray, max_items: int,
    hist_len: int, chunk: int = 4096,
) -> UserContext:
    """For each event of a chronological log (dense user and item indices), the user's context just
    before it, at the event's own time: :func:`user_contexts` of a copy of the user's state taken
    just before the event, so training sees exactly what the stream builds."""
    states: dict[int, UserState] = {}
    parts: list[UserContext] = []
    before: list[UserState] = []
    for e, (u, i, t, et) in enumerate(zip(users.tolist(), items.tolist(), ts.tolist(), event_types.tolist())):
        st = states.get(u)
        if st is None:
            st = states[u] = UserState.empty(0)
        before.append(context_copy(st))
        apply_event(st, i, t, et, max_items)
        if len(before) == chunk or e == len(users) - 1:
            parts.append(
                user_contexts(before, np.asarray, max_items, hist_len, now=ts[e + 1 - len(before) : e + 1])
            )
            before = []
    return UserContext.cat(parts) if parts else user_contexts([], np.asarray, max_items, hist_len)
