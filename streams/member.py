"""A member of a consumer group on a thread of its own whose output commits in Kafka transactions with
its input offsets: what the shared item stage (streams/item_stage.py) and the fleet learner
(streams/learner.py) have in common.

A subclass names its input topic and group, and implements :meth:`GroupMember._step` (one read of
its input and what follows from it); :meth:`GroupMember._begin` runs once before it subscribes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.config import Settings

__all__ = ["TRANSACTION_TIMEOUT_MS", "GroupMember"]

logger = logging.getLogger(__name__)

#: a transaction left open by a process that died is aborted by the broker after this long; until
#: then, read_committed readers of its partitions wait at its start
TRANSACTION_TIMEOUT_MS = 30_000


class GroupMember:
    """Consumes ``topic`` in the group ``<group_id>-<role>`` until :meth:`stop`; its transactional id is
    ``<group_id>-<role>-<name>``."""

    def __init__(self, settings: Settings, role: str, topic: str, name: str) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.topic = topic
        self.role = role
        self.error: str | None = None  # why run() stopped, if it failed
        self._stop = threading.Event()
        self._consumer = Consumer(settings.consumer_conf(f"{settings.group_id}-{role}"))
        self._producer = Producer(settings.producer_conf(**{
            "transactional.id": f"{settings.group_id}-{role}-{name}",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }))
        self.thread = threading.Thread(target=self.run, name=f"tide-{role}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)

    def run(self) -> None:
        try:
            self._producer.init_transactions(self.settings.wait_s())
            self._begin()
            self._consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("the %s stopped", self.role)
            raise
        finally:
            self._consumer.close()
            self._close()

    # ------------------------------------------------------------------------- for subclasses

    def _begin(self) -> None:
        """Before subscribing."""

    def _step(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """After the last step."""

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pass

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        pass

    def _read(self, max_records: int, wait_s: float) -> list[Message]:
        return [m for m in self._consumer.consume(max_records, wait_s) if m.error() is None]

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:  # the client's queue is full: let the broker drain it
                self._producer.poll(0.1)

    def _transaction(self, produce: Callable[[], None], done: list[Message] | None = None) -> None:
        """``produce()`` the output in one transaction, committed with the offsets after ``done``."""
        self._producer.begin_transaction()
        produce()
        if done:
            last: dict[int, int] = {}
            for m in done:
                last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
            self._producer.send_offsets_to_transaction(
                [TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                self._consumer.consumer_group_metadata(), self.settings.wait_s(),
            )
        self._producer.commit_transaction(self.settings.wait_s())
