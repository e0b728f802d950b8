"""One model for the fleet (``TIDE_LEARNER=fleet``, with ``TIDE_ITEM_STAGE=shared``): online learning
in one place, its parameters published to every worker.

- Workers send their online-learning examples (the same share of events, engine.fold.users.is_example)
  to ``tide.examples``: each the user's state just before the event, their memory, the event's time and
  item (:class:`ExampleSink`, in place of the worker's own learner).
- The learner (:class:`FleetLearner`, ``tide learner``) is the consumer group ``<group_id>-learner`` on
  that topic (one partition, one member learning). It follows ``tide.item-state`` for the item side,
  takes the same steps as a worker's learner (engine/fold/online.py), and publishes the parameters
  online learning changes to the compacted ``tide.model`` at most every :data:`PUBLISH_INTERVAL_S`:
  the parameters in row chunks, then a record naming the version, ``<checkpoint version>+fleet.<steps>``,
  in one transaction with its input offsets.
- Every worker reads ``tide.model`` in full (:class:`ModelFollower`): to its end before it serves (a
  worker started later begins at the current version), then between its batches; a version record
  switches the worker's model to the parameters before it, at a batch boundary, and from then on its
  recommendations and the ``tide_model_info`` gauge name that version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import Consumer, Message, TopicPartition

from engine.checkpoint import load_checkpoint
from engine.fold.context import HISTORY, user_contexts
from engine.fold.items import ItemStage
from engine.fold.online import Examples, OnlineConfig, OnlineLearner
from engine.fold.table import ItemTable
from engine.state.codec import decode_user, encode_user
from engine.state.store import MemoryStateStore
from models.interest import InterestModel
from streams.config import Settings
from streams.item_stage import ItemStateFollower, read_to_end
from streams.member import GroupMember

__all__ = ["PUBLISH_INTERVAL_S", "ExampleSink", "FleetLearner", "ModelFollower"]

logger = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 2.0  # the learner publishes its parameters at most this often
CHUNK_ROWS = 2_048  # parameter rows per record (64-wide float32: 512 KiB, under librdkafka's 1 MB)
BATCH = 2_000
IDLE_WAIT_S = 0.05
_EXAMPLE = struct.Struct("<dB")  # the event's time, the length of its item id (then the id, the state)
_CHUNK = struct.Struct("<II")  # first row, rows (then float32 rows)
_VERSION = b"version"


def _encode_example(state_bytes: bytes, t: float, item: str) -> bytes:
    item_b = item.encode("utf-8")
    return _EXAMPLE.pack(t, len(item_b)) + item_b + state_bytes


def _decode_example(value: bytes) -> tuple[float, str, bytes]:
    t, n = _EXAMPLE.unpack_from(value, 0)
    pos = _EXAMPLE.size
    return t, value[pos : pos + n].decode("utf-8"), value[pos + n :]


class ExampleSink(OnlineLearner):
    """The online learner as a worker sees it with the fleet learner: each batch's examples go to
    ``tide.examples`` through ``produce(topic, value, key)``; the model here changes only when a new
    version arrives (:class:`ModelFollower`)."""

    def __init__(
        self, model: InterestModel, table: ItemTable, cfg: OnlineConfig, topic: str,
        produce: Callable[[str, bytes, bytes | None], None],
    ) -> None:
        super().__init__(model, table, dataclasses.replace(cfg, background=False))
        self.topic = topic
        self.produce = produce

    def learn(self, ex: Examples | None) -> float | None:
        if ex is None or ex.states is None or ex.ts is None:
            return None
        mem = ex.user_mem.cpu().numpy()
        ids = self.table.ids
        for k, (st, row) in enumerate(zip(ex.states, ex.targets.tolist())):
            st.memory = mem[k]
            self.produce(self.topic, _encode_example(encode_user(st), float(ex.ts[k]), ids[row]), None)
        return None


class ModelFollower:
    """Reads all of ``tide.model`` into a model: each version record switches the model (under
    ``lock``) to the parameters published before it, then calls ``on_version(version, steps)`` (still
    under the lock)."""

    def __init__(
        self, settings: Settings, model: InterestModel, table: ItemTable,
        lock: AbstractContextManager[object], on_version: Callable[[str, int], None],
    ) -> None:
        self.settings = settings
        self.table = table
        self.lock = lock
        self.on_version = on_version
        self.params = dict(model.named_parameters())
        self._chunks: dict[bytes, bytes] = {}  # parameter chunks of the version to come
        self._consumer: Consumer | None = None

    def _apply(self, msgs: list[Message]) -> None:
        for m in msgs:
            key, value = m.key(), m.value()
            if key is None or value is None:
                continue
            if key != _VERSION:
                self._chunks[key] = value
                continue
            announced = json.loads(value)
            version, steps = str(announced["version"]), int(announced["steps"])
            with self.lock, torch.no_grad():
                for k, raw in self._chunks.items():
                    name = k[2:].rsplit(b"/", 1)[0].decode("utf-8")
                    param = self.params[name]
                    rows_of = param if param.dim() else param.view(1)  # a scalar is one row
                    start, rows = _CHUNK.unpack_from(raw, 0)
                    shape = (rows, *rows_of.shape[1:])
                    data = np.frombuffer(raw, "<f4", int(np.prod(shape)), _CHUNK.size).reshape(shape)
                    rows_of[start : start + rows] = torch.from_numpy(data.copy()).to(param.device)
                self.table.refresh_from_model()
                self.on_version(version, steps)
            self._chunks.clear()
            logger.info("model: switched to %s", version)

    def catch_up(self, timeout_s: float) -> None:
        """Read the topic to its end (before the worker serves): the fleet's current version."""
        if self._consumer is not None:
            self._consumer.close()
        self._chunks.clear()
        self._consumer = read_to_end(
            self.settings, self.settings.topics.model, f"{self.settings.group_id}-model", self._apply,
            timeout_s,
        )

    def poll(self) -> None:
        if self._consumer is not None:
            msgs = [m for m in self._consumer.consume(64, 0) if m.error() is None]
            if msgs:
                self._apply(msgs)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


class FleetLearner(GroupMember):
    """A member of the learner's consumer group: learns from ``tide.examples`` and publishes
    ``tide.model`` while it holds the partition, until ``stop()``."""

    def __init__(self, settings: Settings, checkpoint: Path, device: torch.device, name: str) -> None:
        super().__init__(settings, "learner", settings.topics.examples, name)
        ckpt = load_checkpoint(checkpoint, device)
        self.base_version = ckpt.version
        self.model = ckpt.model.eval()
        self.table = ItemTable(self.model, ckpt.item_ids, device)
        self.items = ItemStage(self.model, self.table, MemoryStateStore().partition("items"))
        self.device = device
        self.learner = OnlineLearner(self.model, self.table, OnlineConfig(
            lr=settings.online_lr, examples_per_step=settings.online_examples_per_step, background=False,
        ))
        self.follower = ItemStateFollower(settings, self.items, threading.Lock())
        self.model_follower = ModelFollower(settings, self.model, self.table, threading.Lock(), self._at)
        self.version = self.base_version
        self.published_steps = 0
        self.published_at = 0.0  # monotonic time of the last publication

    def _at(self, version: str, steps: int) -> None:
        """The model is now the published ``version``: learning continues from it."""
        self.version, self.published_steps = version, steps
        self.learner.steps = steps

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:  # taking over: continue from the last version any member published
            self.model_follower.catch_up(self.settings.wait_s())

    def _begin(self) -> None:
        self.follower.catch_up(self.settings.wait_s())

    def _step(self) -> None:
        self.follower.poll()
        msgs = self._read(BATCH, IDLE_WAIT_S)
        if msgs:
            self._learn(msgs)
        elif self._due():  # steps taken since the last version, and no example arriving
            self._transaction(self._publish)

    def _close(self) -> None:
        self.follower.close()
        self.model_follower.close()

    def _learn(self, msgs: list[Message]) -> None:
        decoded = [_decode_example(m.value()) for m in msgs]
        states = [decode_user(raw) for _, _, raw in decoded]
        cfg = self.model.cfg
        ctx = user_contexts(
            states, self.table.rows, cfg.profile_items, min(cfg.seq_len, HISTORY),
            now=np.array([t for t, _, _ in decoded]),
        )
        self.learner.learn(Examples(
            user_mem=torch.from_numpy(np.stack([st.memory for st in states])).to(self.device),
            ctx=ctx.to(self.device),
            targets=torch.from_numpy(self.table.rows([item for _, item, _ in decoded])).to(self.device),
        ))
        self._transaction(lambda: self._publish() if self._due() else None, done=msgs)

    def _due(self) -> bool:
        return (
            self.learner.steps > self.published_steps
            and time.monotonic() - self.published_at >= PUBLISH_INTERVAL_S
        )

    def _publish(self) -> None:
        steps = self.learner.steps
        version = f"{self.base_version}+fleet.{steps}"
        for name, param in self.learner.trained_parameters:
            data = param.detach().cpu().numpy().astype("<f4").reshape(-1, *param.shape[1:])
            for start in range(0, len(data), CHUNK_ROWS):
                part = data[start : start + CHUNK_ROWS]
                key = b"p/%s/%d" % (name.encode("utf-8"), start // CHUNK_ROWS)
                self._produce(self.topics.model, key, _CHUNK.pack(start, len(part)) + part.tobytes())
        version_record = json.dumps({"version": version, "steps": steps}).encode("utf-8")
        self._produce(self.topics.model, _VERSION, version_record)
        self.version, self.published_steps, self.published_at = version, steps, time.monotonic()
        logger.info("learner: published %s", version)
