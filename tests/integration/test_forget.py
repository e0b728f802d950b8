"""User deletion on the real broker and RocksDB: a request on tide.user-deletions (as `tide forget`
writes it) erases the user's state for good, on disk as well, and tombstones their recommendations."""

from __future__ import annotations

import os
import uuid

import pytest

from engine.state.codec import decode_user
from engine.state.store import RocksDBStateStore
from schemas import Interaction
from streams.forget import request_deletion
from tests.integration.conftest import (
    drain,
    fresh_topics,
    produce_events,
    start_worker,
    synthetic_events,
    wait_for,
)

pytestmark = pytest.mark.integration


def _files_holding(root, needles: list[bytes]) -> list[str]:
    found = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            data = open(os.path.join(dirpath, f), "rb").read()
            found.extend(f"{f}: {n[:12]!r}" for n in needles if n in data)
    return found


def test_a_deleted_user_leaves_nothing_in_state_on_disk_or_after_a_restart(settings):
    s = fresh_topics(settings, "forget")
    victim = f"forget-me-{uuid.uuid4().hex}"
    events = synthetic_events(n_users=6, per_user=8)
    events += [Interaction(victim, f"item-{k}", 1_700_100_000.0 + k, "click") for k in range(12)]
    produce_events(s, events)
    worker, thread = start_worker(s)
    try:
        wait_for(lambda: worker.stats.folded == len(events), 60, "events not folded")
        store = worker.engine.store
        where = [n for n in store.open_partitions("users-") if store.partition(n).get(victim.encode())]
        assert len(where) == 1
        memory = decode_user(store.partition(where[0]).get(victim.encode())).memory
        needles = [victim.encode(), victim.encode()[-16:], memory[:4].tobytes()]
        for name in store.open_partitions(""):  # flushed to files, so that the search below can find it
            store._column_family(name).flush()
        assert _files_holding(s.state_dir, needles)  # the search can find them before the deletion

        assert request_deletion(s, [victim]) == s.partitions  # one request per partition
        wait_for(lambda: worker.stats.users_deleted == 1, 60, "the deletion was not applied")
        assert store.partition(where[0]).get(victim.encode()) is None
        assert _files_holding(s.state_dir, needles) == []  # nothing on disk: no value, no key, no log
        tombstones = drain(s, s.topics.recommendations, lambda ms: any(m.value() is None for m in ms))
        assert [m.key() for m in tombstones if m.value() is None] == [victim.encode()]
    finally:
        worker.stop()
        thread.join(30)
        worker.engine.close()
    restored = RocksDBStateStore(s.state_dir)  # a restart: the store opened again from disk
    try:
        users = {k for p in ("users-0", "users-1") for k, _ in restored.partition(p).items()}
    finally:
        restored.close()
    assert victim.encode() not in users and len(users) == 6
    assert _files_holding(s.state_dir, needles) == []
