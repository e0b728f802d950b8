"""Restore time: a partition of ``users`` full user states written to a changelog topic, restored into
an empty local store as a worker newly assigned the partition does (streams/changelog.py).

Each state has a full profile (48 items, two decays) and history ring (16 events) and a 64-wide
memory, the size a regular user's state reaches (about 1.3 KB encoded).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
from confluent_kafka import Producer

from engine.fold.context import HISTORY
from engine.state.codec import UserState, encode_user
from engine.state.store import RocksDBStateStore
from streams.admin import TopicSpec, create_topics
from streams.changelog import UserChangelog
from streams.config import Settings, Topics

__all__ = ["RESTORE_USERS", "restore_cost"]

PROFILE, DECAYS, DIM = 48, 2, 64
RESTORE_USERS = 100_000  # the users ``tide bench --workers`` restores


def _state(u: int, rng: np.random.Generator) -> bytes:
    items = [f"item-{(u * 31 + k) % 100_000}" for k in range(PROFILE)]
    return encode_user(UserState(
        memory=rng.standard_normal(DIM).astype(np.float32), last_t=1.7e9 + u, partition=0, offset=u,
        model_version="bench", hist_items=items[:HISTORY], hist_times=[1.7e9 + u - k for k in range(HISTORY)],
        hist_types=[1] * HISTORY, n_events=200, prof_items=items, prof_last_n=list(range(PROFILE)),
        prof_count=[3] * PROFILE, prof_last_t=[1.7e9 + u - k for k in range(PROFILE)],
        prof_acc=[[1.0] * DECAYS for _ in range(PROFILE)],
    ))


def restore_cost(bootstrap: str, users: int, topic: str = "bench.user-state") -> dict[str, Any]:
    """Write ``users`` states to partition 0 of a fresh changelog topic; restore them into an empty
    store. Returns the records, their mean size, and the restore's seconds."""
    topic = f"{topic}-{time.time_ns()}"
    settings = Settings(
        bootstrap_servers=bootstrap, topics=Topics(user_state=topic), group_id="bench-restore"
    )
    create_topics(bootstrap, [TopicSpec(topic, 1, compacted=True)])
    rng = np.random.default_rng(0)
    producer = Producer(settings.producer_conf())
    size = 0
    for u in range(users):
        value = _state(u, rng)
        size += len(value)
        while True:
            try:
                producer.produce(topic, value, f"user-{u}".encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    with tempfile.TemporaryDirectory(prefix="tide-restore-") as d:
        store = RocksDBStateStore(d)
        try:
            changelog = UserChangelog(settings, store, lambda *a: None)
            r = changelog.restore(0, committed=users, timeout_s=600)
        finally:
            store.close()
    return {
        "users": users, "records": r.records, "applied": r.applied, "mean_state_bytes": size / max(users, 1),
        "seconds": r.seconds, "seconds_per_100k_users": r.seconds * 100_000 / max(users, 1),
    }
