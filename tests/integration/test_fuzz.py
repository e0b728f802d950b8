"""The wire format fuzzed on the real broker.

Hypothesis draws batches of records, valid and bad of every kind (tests/strategies.py), interleaved
on one input topic; one worker folds them all. Every bad record lands in the DLQ with a kind it can
have and its original bytes; the valid records leave exactly the state that a fold of them alone
leaves (the same engine on an in-memory store, fed only the valid records, in the micro-batches the
worker folded); the worker never stops. ``TIDE_FUZZ_EXAMPLES`` sets how many batches are drawn
(``make fuzz`` draws many more than the suite does).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import Counter

import pytest
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.checkpoint import load_checkpoint
from engine.fold.items import ItemStage
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage
from engine.state.store import MemoryStateStore
from schemas import MAX_DEAD_LETTER_ORIGINAL_BYTES, decode_interaction
from streams.runtime import load_engine, resolve_checkpoint
from streams.worker import Worker
from tests.integration.conftest import fresh_topics, wait_for
from tests.strategies import Case, cases

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TIDE_FUZZ_EXAMPLES", "5"))


class Rig:
    """A worker on its own topics, the reference engine, and a reader of the DLQ."""

    def __init__(self, s) -> None:  # type: ignore[no-untyped-def]
        self.settings = s
        self.engine = load_engine(s)
        self.groups: list[list[int]] = []  # the offsets of each micro-batch the user stage folded
        self.seen_groups = 0
        real_fold = self.engine.users.fold

        def recording_fold(events, *args, **kw):  # type: ignore[no-untyped-def]
            res = real_fold(events, *args, **kw)
            self.groups.append([e.offset for e in events])
            return res

        self.engine.users.fold = recording_fold  # type: ignore[method-assign]
        self.worker = Worker(s, self.engine)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        wait_for(self.worker.ready.is_set, 60, "the fuzz worker never got its partition")
        ckpt = load_checkpoint(resolve_checkpoint(s))
        table = ItemTable(ckpt.model, ckpt.item_ids, torch.device("cpu"))
        self.ref_store = MemoryStateStore()
        self.ref_users = UserStage(
            ckpt.model, table, self.ref_store, model_version=ckpt.version, input_topic=s.topics.interactions,
            top_k=s.top_k
        )
        self.ref_items = ItemStage(ckpt.model, table, self.ref_store.partition("items"))
        self.producer = Producer(s.producer_conf())
        self.dlq = Consumer(s.consumer_conf(f"{s.group_id}-dlq-reader"))
        self.dlq.subscribe([s.topics.dlq])
        self.letters: dict[int, dict] = {}
        self.watcher = Consumer(s.consumer_conf(s.group_id))  # reads the group's committed offset only
        self.tried: Counter[str] = Counter()

    def produce(self, batch: list[Case]) -> list[int]:
        offsets: list[int] = [-1] * len(batch)
        for k, c in enumerate(batch):
            self.producer.produce(
                self.settings.topics.interactions, c.value, c.key,
                on_delivery=lambda err, msg, k=k: offsets.__setitem__(k, msg.offset() if err is None else -2),
            )
        assert self.producer.flush(30) == 0 and min(offsets) >= 0
        return offsets

    def committed(self) -> int:
        tp = TopicPartition(self.settings.topics.interactions, 0)
        return int(self.watcher.committed([tp], timeout=10)[0].offset)

    def read_dlq(self, wanted: set[int], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not wanted <= self.letters.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dead letters missing for offsets {sorted(wanted - self.letters.keys())[:10]}"
                )
            for m in self.dlq.consume(500, 0.2):
                if m.error() is None:
                    dl = json.loads(m.value())
                    self.letters[dl["source"]["offset"]] = dl

    def close(self) -> None:
        self.worker.stop()
        self.thread.join(30)
        self.dlq.close()
        self.watcher.close()
        self.engine.close()


@pytest.fixture(scope="module")
def rig(embedded_broker, checkpoint_dir, tmp_path_factory, request):  # type: ignore[no-untyped-def]
    from streams.config import Settings, Topics

    base = Settings(
        bootstrap_servers=embedded_broker.bootstrap_servers, topics=Topics(), group_id="fuzz",
        checkpoint_dir=checkpoint_dir, state_dir=tmp_path_factory.mktemp("fuzz") / "state", top_k=5,
    )
    s = fresh_topics(
        base, "fuzz", partitions=1, batch_max_events=200, session_timeout_ms=1000, online_learning=False,
        catalog_stage=False, publish_item_vectors=False,
        # no expiry: the records mix clocks (0 and epoch seconds) and the reference never expires
        user_ttl_s=0,
    )
    r = Rig(s)
    yield r
    alive = r.thread.is_alive()
    r.close()
    total = sum(r.tried.values())
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        _print_tried(r.tried, total, alive)


def _print_tried(tried: Counter[str], total: int, alive: bool) -> None:
    print(
        f"\n[fuzz] {total:,} records tried on the broker ({tried['valid']:,} valid, "
        f"{total - tried['valid']:,} bad: "
        + ", ".join(f"{k} {n}" for k, n in sorted(tried.items()) if k != "valid")
        + f"); worker alive: {alive}"
    )


@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(batch=st.lists(cases, min_size=30, max_size=60))
def test_fuzzed_records_through_the_real_broker(rig, batch):
    offsets = rig.produce(batch)
    wait_for(
        lambda: rig.committed() > offsets[-1] or not rig.thread.is_alive(),
        60,
        "the worker stopped committing",
    )
    rig.tried.update(c.label for c in batch)
    # the same engine, fed the valid records alone, in the micro-batches the worker folded (first, so
    # that the reference keeps up with the worker even when an assertion below fails)
    valid = {o: decode_interaction(c.value) for o, c in zip(offsets, batch) if c.kinds is None}
    groups, rig.seen_groups = rig.groups[rig.seen_groups :], len(rig.groups)
    for g in groups:
        res = rig.ref_users.fold([SourcedEvent(valid[o], 0, o, 0.0) for o in g if o in valid])
        if res.item_updates is not None:
            rig.ref_items.fold(res.item_updates)
        rig.ref_users.commit(res, rig.ref_items)
    assert rig.thread.is_alive(), rig.worker.error
    # the worker folded the valid ones, only them
    assert sorted(o for g in groups for o in g) == sorted(valid)

    bad = {o: c for o, c in zip(offsets, batch) if c.kinds is not None}
    rig.read_dlq(set(bad))
    for o, c in bad.items():
        dl = rig.letters[o]
        assert dl["error_kind"] in c.kinds, (c.label, dl["error_kind"], dl["error"])
        original = base64.b64decode(dl["original"])
        assert original == (c.value or b"")[:MAX_DEAD_LETTER_ORIGINAL_BYTES]
        cut = (
            len(c.value or b"") > MAX_DEAD_LETTER_ORIGINAL_BYTES
            or len(c.key or b"") > MAX_DEAD_LETTER_ORIGINAL_BYTES
        )
        assert dl["original_truncated"] == cut
    assert not set(valid) & rig.letters.keys()
    worker_users = rig.engine.store.partition("users-0")
    ref_users = rig.ref_store.partition("users-0")
    for ev in valid.values():
        key = ev.user_id.encode("utf-8")
        assert worker_users.get(key) == ref_users.get(key), ev.user_id
