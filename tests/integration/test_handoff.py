"""Partitions moving between worker processes: the users' state moves with them (streams/changelog.py).

One input log (4 partitions) is replayed, paced, through a fleet of real worker processes on the
embedded broker: two at first; a third joins mid-replay; one is killed with SIGKILL and restarted.
The same log goes through a single worker with a group, changelog and outputs of its own. Batches of
one event make the model's arithmetic the same in both (a matrix product's last bits depend on its
shape, and so on how events fall into batches). Then:

- the fleet's final state of every user (the changelog's last record per user) equals the single
  worker's, byte for byte, and every user folded each of their events exactly once;
- every event is answered by a recommendation that names its source partition and offset.

A user's memory vector reads the item vectors, and those read the item memories, which each worker's
own item stage folds from the events it sees (the shared item stage is not in this test): the test's
checkpoint has no item-memory term in its item vectors, so that a user's state is a function of the
user's own events and the comparison isolates the handoff.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from confluent_kafka import Producer

from engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from engine.state.codec import decode_user
from engine.state.store import RocksDBStateStore
from streams.admin import create_topics
from streams.config import Settings
from streams.topics import topic_specs
from tests.integration.conftest import committed, fresh_topics, read_all, synthetic_events, wait_for
from tests.integration.worker_process import WorkerProcess, start

pytestmark = pytest.mark.integration

N_USERS, PER_USER, PARTITIONS = 24, 20, 4


@pytest.fixture
def static_item_checkpoint(checkpoint_dir: Path, tmp_path: Path) -> Path:
    """The test checkpoint with the item-memory term of the item vectors set to zero."""
    path = latest_checkpoint(checkpoint_dir)
    assert path is not None
    ckpt = load_checkpoint(path)
    with torch.no_grad():
        ckpt.model.mem_proj.weight.zero_()
    out = tmp_path / "static-items"
    save_checkpoint(out, ckpt.model, ckpt.item_ids, {})
    return out


def _kw(base, tag: str) -> dict:
    """Settings of their own for one run: group, recommendations and changelog topics (created)."""
    topics = base.topics.model_copy(update={
        "recommendations": f"{base.topics.recommendations}-{tag}",
        "user_state": f"{base.topics.user_state}-{tag}",
    })
    s = base.model_copy(update={"group_id": f"{base.group_id}-{tag}", "topics": topics})
    create_topics(s.bootstrap_servers, topic_specs(s))
    return s.model_dump()


def _worker_kw(kw: dict, name: str) -> dict:
    return {**kw, "state_dir": Path(kw["state_dir"]).parent / f"state-{name}", "worker_id": name}


def _produce_paced(settings, events, rate: float) -> list[tuple[int, int]]:
    p = Producer(settings.producer_conf())
    where: list = [None] * len(events)
    t0 = time.monotonic()
    for k, ev in enumerate(events):
        p.produce(settings.topics.interactions, ev.to_json(), ev.user_id.encode(),
                  on_delivery=lambda err, msg, k=k: where.__setitem__(k, (msg.partition(), msg.offset())))
        p.poll(0)
        ahead = k / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    assert p.flush(30) == 0
    return where


def _done(settings, group: str, ends: dict[int, int]) -> bool:
    return all(committed(settings, group, settings.topics.interactions, p) >= end for p, end in ends.items())


def _ends(delivered: list[tuple[int, int]]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for p, o in delivered:
        ends[p] = max(ends.get(p, -1), o + 1)
    return ends


def _changelog_state(settings, topic: str) -> dict[bytes, bytes]:
    last: dict[bytes, bytes | None] = {}
    for m in read_all(settings, topic, timeout_s=1.0):
        last[m.key()] = m.value()
    return {k: v for k, v in last.items() if v is not None}


def _local_state(state_dir: Path) -> dict[bytes, bytes]:
    store = RocksDBStateStore(state_dir)
    try:
        return {k: v for p in range(PARTITIONS) for k, v in store.partition(f"users-{p}").items()}
    finally:
        store.close()


def _unanswered(settings, topic: str, events, delivered) -> int:
    covered = set()
    for m in read_all(settings, topic, timeout_s=1.0):
        r = json.loads(m.value())
        src = r["source"]
        offsets = range(src["first_offset"], src["offset"] + 1)
        covered.update((r["user_id"], src["partition"], o) for o in offsets)
    return sum((e.user_id, p, o) not in covered for e, (p, o) in zip(events, delivered))


def test_state_moves_with_its_partition_through_joins_kills_and_restarts(
    settings, static_item_checkpoint, capsys
):
    base = fresh_topics(
        settings, "handoff", partitions=PARTITIONS, batch_max_events=1, session_timeout_ms=2000,
        online_learning=False, catalog_stage=False, checkpoint_dir=static_item_checkpoint,
        publish_item_vectors=False,
    )
    events = synthetic_events(N_USERS, PER_USER)
    fleet_kw, single_kw = _kw(base, "fleet"), _kw(base, "single")
    fleet, single = Settings(**fleet_kw), Settings(**single_kw)
    delivered: list = []
    producer = threading.Thread(target=lambda: delivered.extend(_produce_paced(base, events, rate=80)))
    producer.start()  # 480 events over 6 s
    workers: dict[str, WorkerProcess] = {}
    solo = start(_worker_kw(single_kw, "solo"), ready_timeout_s=0.5)  # the reference, meanwhile
    try:
        workers["a"] = start(_worker_kw(fleet_kw, "a"))
        workers["b"] = start(_worker_kw(fleet_kw, "b"))
        assert workers["a"].ready.is_set() and workers["b"].ready.is_set()
        time.sleep(1.0)
        workers["c"] = start(_worker_kw(fleet_kw, "c"), ready_timeout_s=0.5)  # joins mid-replay
        time.sleep(1.0)
        workers["b"].kill()  # its partitions move once its session times out
        assert workers["b"].proc.exitcode == -signal.SIGKILL
        time.sleep(2.5)
        # the same name and state folder: it fences its former self, and joins while the replay goes on
        workers["b"] = start(_worker_kw(fleet_kw, "b"), ready_timeout_s=0.5)
        producer.join(60)
        ends = _ends(delivered)
        wait_for(lambda: _done(fleet, fleet.group_id, ends), 120, "the fleet never reached the end")
        wait_for(lambda: _done(single, single.group_id, ends), 120, "one worker never reached the end")
    finally:
        for w in workers.values():
            w.stop()
        solo_exit = solo.stop()
    assert solo_exit == 0
    fleet_state = _changelog_state(fleet, fleet.topics.user_state)
    reference = _local_state(Path(single_kw["state_dir"]).parent / "state-solo")

    assert len(reference) == N_USERS
    assert fleet_state == reference  # byte for byte
    for raw in fleet_state.values():
        assert decode_user(raw).n_events == PER_USER  # nothing lost, nothing folded twice
    unanswered = _unanswered(base, fleet.topics.recommendations, events, delivered)
    assert unanswered == 0

    with capsys.disabled():
        print(f"\n[handoff] {len(events)} events, 4 partitions, workers a+b, c joined, b killed, restarted:"
              f" {N_USERS} users equal to one worker's byte for byte, 0 unanswered")


def test_a_deleted_local_store_is_rebuilt_from_the_changelog(settings, capsys):
    base = fresh_topics(settings, "restore", partitions=2, online_learning=False, catalog_stage=False,
                        publish_item_vectors=False, session_timeout_ms=2000)
    kw = _kw(base, "run")
    s = Settings(**kw)
    events = synthetic_events(20, 10)
    delivered = _produce_paced(base, events, rate=10_000)
    ends = _ends(delivered)
    state_dir = Path(kw["state_dir"]).parent / "state-w"
    w = start(_worker_kw(kw, "w"))
    try:
        wait_for(lambda: _done(s, s.group_id, ends), 60, "the worker never reached the end")
    finally:
        assert w.stop() == 0
    before = _local_state(state_dir)
    assert len(before) == 20
    shutil.rmtree(state_dir)
    started = time.monotonic()
    w = start(_worker_kw(kw, "w"))
    restored_s = time.monotonic() - started
    assert w.ready.is_set()
    assert w.stop() == 0
    assert _local_state(state_dir) == before
    with capsys.disabled():
        print(f"\n[restore] 20 users rebuilt from the changelog after the local store was deleted;"
              f" ready {restored_s:.1f} s after start")
