"""The shared item stage (``TIDE_ITEM_STAGE=shared``): one item side for the whole fleet, behind two
topics, instead of each worker folding the item side of its own partitions.

- Workers send the user side of each folded event to ``tide.item-updates`` (key: the item), in the
  batch's transaction (:class:`ItemUpdateSink`, in place of the in-process item stage).
- The item stage (:class:`ItemStageRunner`) is the consumer group ``<group_id>-items`` on that topic:
  ``tide item-stage`` runs a member alone, and every worker runs one on a thread of its own. The
  member holding the partition folds the updates (engine/fold/items.py) and publishes what changed
  (memories, times, counts, transition rows, popularity with its event clock, and its per-source
  watermarks) to the compacted ``tide.item-state``, in a transaction with its input offsets (and the
  changed item vectors to ``tide.item-vectors``, once a second at most). A member newly assigned the
  partition first reads ``tide.item-state`` to its end: the topic is its changelog.
- Every worker reads all of ``tide.item-state`` (assign, not subscribe) into its item table
  (:class:`ItemStateFollower`): to the end before it serves, then between its batches. After the
  stream quiesces, every worker's item table holds the same state.

``tide.item-updates`` has one partition: popularity decays with one event clock, and an item's
transition row gathers the next items of all its users, so one member folds every update (the item
fold costs about a sixth of the user stage per event: docs/performance.md) and the others stand by
to take over.

Consistency: a worker scores against the item side as of the updates the item stage has published
and the worker has read, so the item side lags the users' events by about one micro-batch of each
stage and the transactions' commits (docs/architecture.md gives the measured lag and its accuracy cost).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from engine.checkpoint import load_checkpoint
from engine.fold.items import ItemStage, ItemUpdates
from engine.fold.table import ItemTable
from engine.state.codec import decode_item_updates, encode_item_update
from engine.state.store import MemoryStateStore
from models.interest import InterestModel
from schemas import ItemVector
from streams.config import Settings
from streams.member import GroupMember

__all__ = ["ItemStageRunner", "ItemStateFollower", "ItemUpdateSink", "read_to_end"]

logger = logging.getLogger(__name__)

BATCH = 5_000  # item updates folded per transaction at most
ITEM_VECTOR_INTERVAL_S = 1.0  # changed item vectors are published at most this often
IDLE_WAIT_S = 0.05
READ_WAIT_S = 0.05  # the longest wait of one read to a topic's end (see streams/changelog.py)
#: key of the record closing each published batch: i64 the Kafka timestamp (ms) of its oldest update,
#: so that a worker applying it knows how far its item side is behind the users' events
_PRODUCED = b"\x00produced"
_MS = struct.Struct("<q")


def read_to_end(
    settings: Settings, topic: str, group: str, handle: Callable[[list[Message]], None], timeout_s: float,
    consumer: Consumer | None = None,
) -> Consumer:
    """Read every partition of ``topic`` from its start to its end (librdkafka's partition EOF),
    handing the records to ``handle`` in chunks; returns the consumer, positioned at the end."""
    if consumer is None:
        consumer = Consumer(settings.consumer_conf(group, **{"enable.partition.eof": True}))
        meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}; create the topics with `tide topics`")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    pending = {tp.partition for tp in consumer.assignment()}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: the end not reached in {timeout_s:g} s")
        chunk: list[Message] = []
        for m in consumer.consume(BATCH, READ_WAIT_S):
            err = m.error()
            if err is None:
                chunk.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                pending.discard(m.partition())
            else:
                logger.warning("reading %s: %s", topic, err)
        if chunk:
            handle(chunk)
    return consumer


def _records(msgs: Iterable[Message]) -> list[tuple[bytes, bytes]]:
    return [(m.key(), m.value()) for m in msgs if m.key() is not None and m.value() is not None]


class ItemUpdateSink(ItemStage):
    """The item stage as a worker sees it with the shared item stage: each update goes to
    ``tide.item-updates`` through ``produce(topic, value, key)``; nothing changes here."""

    def __init__(
        self, model: InterestModel, table: ItemTable, topic: str, produce: Callable[[str, bytes, bytes], None]
    ) -> None:
        super().__init__(model, table, None)
        self.topic = topic
        self.produce = produce

    def fold(self, up: ItemUpdates) -> list[int]:
        ids = self.table.ids
        vecs = up.user_vec.cpu().numpy()
        for k in range(len(up)):
            item, prev = ids[int(up.rows[k])], int(up.prev_rows[k])
            value = encode_item_update(
                item, ids[prev] if prev >= 0 else None, vecs[k], float(up.ts[k]), int(up.event_types[k]),
                float(up.weights[k]), int(up.partitions[k]), int(up.offsets[k]),
            )
            self.produce(self.topic, value, item.encode("utf-8"))
        return []


class ItemStateFollower:
    """Reads all of ``tide.item-state`` into a worker's item table (under its engine lock)."""

    def __init__(
        self, settings: Settings, stage: ItemStage, lock: AbstractContextManager[object],
        on_staleness: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.lock = lock
        self.topic = settings.topics.item_state
        self.applied = 0
        self.on_staleness = on_staleness  # seconds from an update's produce to its state applied here
        self._consumer: Consumer | None = None
        self._live = False  # past the catch-up: staleness is measured

    def _apply(self, msgs: list[Message]) -> None:
        records = _records(msgs)
        with self.lock:
            self.stage.apply(records)
        self.applied += len(msgs)
        if self._live and self.on_staleness is not None:
            now_ms = time.time() * 1000
            for key, value in records:
                if key == _PRODUCED:
                    self.on_staleness((now_ms - _MS.unpack(value)[0]) / 1000)

    def catch_up(self, timeout_s: float) -> None:
        """Read the topic to its end (before the worker serves)."""
        start = time.perf_counter()
        self._consumer = read_to_end(
            self.settings, self.topic, f"{self.settings.group_id}-follow", self._apply, timeout_s
        )
        logger.info("item state: %d records read from %s in %.2f s", self.applied, self.topic,
                    time.perf_counter() - start)
        self._live = True

    def poll(self) -> None:
        """Apply what has arrived since, without waiting."""
        if self._consumer is None:
            return
        msgs = [m for m in self._consumer.consume(BATCH, 0) if m.error() is None]
        if msgs:
            self._apply(msgs)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class ItemStageRunner(GroupMember):
    """A member of the item stage's consumer group: folds ``tide.item-updates`` and publishes
    ``tide.item-state`` while it holds the partition, until ``stop()``."""

    def __init__(self, settings: Settings, checkpoint: Path, device: torch.device, name: str) -> None:
        super().__init__(settings, "items", settings.topics.item_updates, name)
        ckpt = load_checkpoint(checkpoint, device)  # a model of its own: the fold's is learned online
        self.model, self.ids, self.device = ckpt.model.eval(), ckpt.item_ids, device
        self.version = ckpt.version
        self._changed: set[int] = set()  # rows whose vectors are not yet published
        self._last_publish = 0.0
        self.stage = self._fresh_stage()
        self.folded = 0
        self.owner = threading.Event()  # set while this member holds the partition

    def _fresh_stage(self) -> ItemStage:
        table = ItemTable(self.model, self.ids, self.device)
        return ItemStage(self.model, table, MemoryStateStore().partition("items"))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        start = time.perf_counter()
        self.stage = self._fresh_stage()
        n = [0]

        def apply(msgs: list[Message]) -> None:
            self.stage.apply(_records(msgs))
            n[0] += len(msgs)

        read_to_end(self.settings, self.topics.item_state, f"{self.settings.group_id}-items-restore", apply,
                    self.settings.wait_s()).close()
        self.owner.set()
        logger.info("item stage: assigned %s; restored from %s in %.2f s (%d records)",
                    [p.partition for p in partitions], self.topics.item_state, time.perf_counter() - start,
                    n[0])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.owner.clear()

    def _step(self) -> None:
        msgs = self._read(BATCH, IDLE_WAIT_S)
        if msgs:
            self._fold(msgs)
        elif self._changed and self.settings.publish_item_vectors and self._vectors_due():
            self._transaction(self._publish_vectors)  # the last changes, once the stream pauses

    @torch.no_grad()
    def _fold(self, msgs: list[Message]) -> None:
        items, prevs, vecs, cols = decode_item_updates([m.value() for m in msgs])
        table = self.stage.table
        rows = table.rows(items)
        prev_rows = np.array([table.row(p) if p is not None else -1 for p in prevs], np.int64)
        updates = ItemUpdates(
            rows=rows, prev_rows=prev_rows, user_vec=torch.from_numpy(vecs).to(self.device),
            ts=cols[:, 2].copy(), event_types=cols[:, 3].astype(np.int64),
            weights=cols[:, 4].astype(np.float32), partitions=cols[:, 0].astype(np.int64),
            offsets=cols[:, 1].astype(np.int64),
        )
        self._changed.update(self.stage.fold(updates))

        def publish() -> None:
            for key, value in self.stage.take_records():
                self._produce(self.topics.item_state, key, value)
            if self.settings.publish_item_vectors:
                self._publish_vectors()
            oldest = min((m.timestamp()[1] for m in msgs if m.timestamp()[1] > 0), default=None)
            if oldest is not None:
                self._produce(self.topics.item_state, _PRODUCED, _MS.pack(oldest))

        self._transaction(publish, done=msgs)
        self.folded += len(msgs)

    def _vectors_due(self) -> bool:
        return time.monotonic() - self._last_publish >= ITEM_VECTOR_INTERVAL_S

    def _publish_vectors(self) -> None:
        """The item vectors changed since the last publication, to ``tide.item-vectors``, at most once
        per :data:`ITEM_VECTOR_INTERVAL_S` (the item stage is their one writer)."""
        if not self._changed or not self._vectors_due():
            return
        self._last_publish = time.monotonic()
        table, rows = self.stage.table, sorted(self._changed)
        self._changed.clear()
        stamp = time.time()
        for r, v in zip(rows, table.vectors()[rows].cpu().tolist()):
            iv = ItemVector(table.ids[r], tuple(v), stamp, self.version)
            self._produce(self.topics.item_vectors, table.ids[r].encode("utf-8"), iv.to_json())
