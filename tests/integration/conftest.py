"""Fixtures for tests against the real embedded broker and RocksDB: a tiny trained checkpoint,
per-test topics and settings, and helpers to produce and drain topics."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from engine.checkpoint import save_checkpoint
from engine.offline.data import InteractionLog
from engine.offline.train import TrainConfig, train
from schemas import Interaction
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.config import Settings, Topics
from streams.runtime import load_engine
from streams.topics import topic_specs
from streams.worker import Worker

N_ITEMS = 40
_counter = itertools.count()


def synthetic_events(n_users: int, per_user: int, t0: float = 1_700_000_000.0) -> list[Interaction]:
    """Interleaved users; each user's consecutive items are distinct, so a double fold or a lost
    event shows up in the user's history ring."""
    events = []
    for j in range(per_user):
        for u in range(n_users):
            item = (u * 7 + j) % N_ITEMS
            events.append(
                Interaction(f"user-{u}", f"item-{item}", t0 + j * 60 + u, "click" if j % 3 else "view")
            )
    return events


def events_log(events: list[Interaction]) -> InteractionLog:
    """The same events as an in-memory log (for training and the offline evaluator)."""
    return InteractionLog(
        np.array([e.user_id for e in events], dtype=object),
        np.array([e.item_id for e in events], dtype=object),
        np.array([e.timestamp for e in events]),
        np.array([e.event_type_id for e in events]),
    )


def start_worker(settings: Settings) -> tuple[Worker, threading.Thread]:
    """A worker on ``settings``, running in a thread of this process."""
    worker = Worker(settings, load_engine(settings))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def wait_for(pred, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    res = train(
        events_log(synthetic_events(10, 30)),
        TrainConfig.of(min_steps=0, epochs=1, batch_size=50, dim=16, profile_items=8),
    )
    d = tmp_path_factory.mktemp("checkpoints")
    save_checkpoint(d, res.model, res.item_ids, {})
    return d


@pytest.fixture
def settings(embedded_broker: EmbeddedBroker, checkpoint_dir: Path, tmp_path: Path) -> Settings:
    n = next(_counter)
    topics = Topics(
        interactions=f"it{n}.interactions",
        recommendations=f"it{n}.recommendations",
        item_updates=f"it{n}.item-updates",
        item_vectors=f"it{n}.item-vectors",
        items=f"it{n}.items",
        dlq=f"it{n}.dlq",
        interest_drift=f"it{n}.interest-drift",
        workers=f"it{n}.workers",
    )
    s = Settings(
        bootstrap_servers=embedded_broker.bootstrap_servers,
        topics=topics,
        group_id=f"it{n}-worker",
        checkpoint_dir=checkpoint_dir,
        state_dir=tmp_path / "state",
        partitions=2,
        top_k=5,
        batch_max_events=100,
    )
    create_topics(s.bootstrap_servers, topic_specs(s))
    return s


def produce(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes | None]],
    producer_extra: dict | None = None,
) -> None:
    p = Producer(settings.producer_conf(**(producer_extra or {})))
    for key, value in records:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def drain(settings: Settings, topic: str, until, timeout_s: float = 60.0) -> list:
    """Read ``topic`` from the start until ``until(messages)`` is true; return the messages."""
    c = Consumer(settings.consumer_conf(f"drain-{next(_counter)}"))
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(out):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met after {timeout_s}s with {len(out)} messages")
            out.extend(m for m in c.consume(500, 0.2) if m.error() is None)
    finally:
        c.close()
    return out


def produce_events(
    settings: Settings, events: list[Interaction], topic: str | None = None
) -> list[tuple[int, int]]:
    """Produce keyed by user; return each event's (partition, offset) from its delivery report."""
    p = Producer(settings.producer_conf())
    where: list = [None] * len(events)
    for k, ev in enumerate(events):
        p.produce(
            topic or settings.topics.interactions, ev.to_json(), ev.user_id.encode(),
            on_delivery=lambda err, msg, k=k: where.__setitem__(k, (msg.partition(), msg.offset())),
        )
    assert p.flush(30) == 0
    return where


def committed(settings: Settings, group_id: str, topic: str, partition: int = 0) -> int:
    """The consumer group's committed offset of ``topic``/``partition`` (-1001: none yet)."""
    c = Consumer(settings.consumer_conf(group_id))
    try:
        return int(c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset)
    finally:
        c.close()


def read_all(settings: Settings, topic: str, timeout_s: float = 2.0) -> list:
    """Every record of ``topic`` from the start, until nothing more arrives for ``timeout_s``."""
    c = Consumer(settings.consumer_conf(f"read-{next(_counter)}"))
    c.subscribe([topic])
    out: list = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() - quiet_since < timeout_s or not c.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: never assigned")
            got = [m for m in c.consume(500, 0.2) if m.error() is None]
            if got:
                out.extend(got)
                quiet_since = time.monotonic()
    finally:
        c.close()
    return out


def fresh_topics(settings: Settings, tag: str, **overrides: object) -> Settings:
    """``settings`` with topics of their own (created) and any other ``overrides``."""
    topics = Topics(**{k: f"{v}-{tag}" for k, v in settings.topics.model_dump().items()})
    s = settings.model_copy(update={"topics": topics, **overrides})
    create_topics(s.bootstrap_servers, topic_specs(s))
    return s


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``path`` of a worker's web views on loopback: (status, the JSON body, or its text when it
    is not JSON); (0, {}) when nothing listens there (yet, or any more)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            body, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except OSError:
        return 0, {}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def metric_sum(port: int, name: str) -> float:
    """The sum of the samples of metric ``name`` (any labels) in a worker's ``/metrics``."""
    status, text = http_get(port, "/metrics")
    assert status == 200 and isinstance(text, str), (status, text)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")
