"""Synthetic interaction logs with known, drifting user interests, for tests and experiments.

Items are split into ``n_topics`` topics. Each user starts interested in one topic and, at a planted
time, moves to another; each event picks an item from the current topic (popular items within a
topic more often) with probability ``focus``, otherwise any item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data import InteractionLog

__all__ = ["DriftingLog", "drifting_log"]


@dataclass(frozen=True)
class DriftingLog:
    log: InteractionLog
    topic_of_item: dict[str, int]
    before: dict[str, int]  # user → topic before the drift
    after: dict[str, int]  # user → topic after the drift
    drift_time: float


def drifting_log(
    n_users: int = 60,
    n_items: int = 120,
    n_topics: int = 6,
    events_per_user: int = 40,
    drift_at: float = 0.5,
    focus: float = 0.9,
    seed: int = 0,
) -> DriftingLog:
    rng = np.random.default_rng(seed)
    topic = np.arange(n_items) % n_topics
    members = [np.nonzero(topic == t)[0] for t in range(n_topics)]
    within = [1.0 / np.arange(1, len(m) + 1) for m in members]  # Zipf-like popularity within a topic
    within = [w / w.sum() for w in within]
    before = rng.integers(n_topics, size=n_users)
    after = (before + rng.integers(1, n_topics, size=n_users)) % n_topics  # always a different topic
    n = n_users * events_per_user
    drift_time = drift_at * n
    users, items, ts = [], [], []
    clock = 0.0
    for _ in range(events_per_user):
        for u in rng.permutation(n_users):
            clock += 1.0
            t = before[u] if clock < drift_time else after[u]
            i = rng.choice(members[t], p=within[t]) if rng.random() < focus else rng.integers(n_items)
            users.append(f"u{u}")
            items.append(f"i{i}")
            ts.append(clock)
    log = InteractionLog(
        np.asarray(users, dtype=object), np.asarray(items, dtype=object), np.asarray(ts), np.zeros(n, np.int64)
    )
    return DriftingLog(
        log,
        {f"i{i}": int(topic[i]) for i in range(n_items)},
        {f"u{u}": int(before[u]) for u in range(n_users)},
        {f"u{u}": int(after[u]) for u in range(n_users)},
        drift_time,
    )
