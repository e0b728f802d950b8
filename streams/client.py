"""Client helpers for integrators: write interactions and catalogue items, read recommendations.

:class:`TideProducer` checks every record by the rules a worker applies (``schemas.encode_interaction``
and ``schemas.encode_item``) before anything is sent, keys it as the worker expects (an interaction by
its ``user_id``, a catalogue item by its ``item_id``) and reports what the cluster did not acknowledge.
:class:`RecommendationConsumer` reads the recommendations topic in a consumer group and yields each
record as a :class:`~schemas.Recommendation`, checked against ``recommendation.v1.json``, or as
:class:`Erased` for a tombstone.

Both take a :class:`~streams.config.Settings`, the workers' own: its connection and SASL/SSL settings
make the librdkafka configuration (``Settings.producer_conf`` / ``Settings.consumer_conf``), its
topic names and interaction limits apply. ``Settings()`` reads the ``TIDE_*`` environment; its
arguments (``bootstrap_servers``, ``security_protocol``, ``sasl_*``, ``ssl_*``) point it anywhere.
See docs/client.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas import (
    Interaction,
    Item,
    Recommendation,
    SchemaError,
    encode_interaction,
    encode_item,
    user_of_key,
    validate_recommendation,
)
from streams.config import Settings
from streams.liveness import kafka_logger

__all__ = ["DeliveryError", "Erased", "RecommendationConsumer", "TideProducer"]

logger = logging.getLogger(__name__)

#: the longest single wait inside :meth:`RecommendationConsumer.records`, so that it notices its
#: deadlines and :meth:`RecommendationConsumer.close` promptly
_POLL_SLICE_S = 0.1


class DeliveryError(KafkaException):
    """Records the cluster did not acknowledge. ``failures`` holds ``(topic, key, error)`` for each
    that failed; ``unacknowledged`` counts those still waiting when the flush gave up."""

    def __init__(
        self, message: str, failures: list[tuple[str, bytes | None, KafkaError]], unacknowledged: int
    ) -> None:
        super().__init__(message)
        self.failures = failures
        self.unacknowledged = unacknowledged


class TideProducer:
    """Writes interactions to ``settings.topics.interactions`` and catalogue items to
    ``settings.topics.items``.

    A record that a worker with the same limits would dead-letter for its shape raises
    :class:`~schemas.SchemaError` (its ``kind`` is the dead letter's ``error_kind``; the message names
    the field) and nothing is sent. Sending is asynchronous: :meth:`flush` (and :meth:`close`, and
    leaving a ``with`` block) waits for the acknowledgements and raises :class:`DeliveryError` for
    what failed since the last flush (only logged when the block is left by an exception, which
    propagates). ``producer_extra`` is librdkafka configuration over
    ``settings.producer_conf()``; idempotence is on unless it says otherwise, so a retried send
    neither duplicates nor reorders a user's events. Not thread-safe: one per thread.
    """

    def __init__(self, settings: Settings | None = None, **producer_extra: Any) -> None:
        self.settings = settings or Settings()
        self._limits = self.settings.limits()
        self._producer = Producer(
            self.settings.producer_conf(
                **{"enable.idempotence": True, "logger": kafka_logger(), **producer_extra}
            )
        )
        self._failures: list[tuple[str, bytes | None, KafkaError]] = []
        self._closed = False

    def send_interaction(self, ev: Interaction) -> None:
        """Check ``ev`` against the worker's rules, its timestamp against this machine's clock, and
        queue it keyed by its ``user_id``."""
        key, value = encode_interaction(ev, self._limits, time.time())
        self._send(self.settings.topics.interactions, key, value)

    def send_item(self, item: Item) -> None:
        """Check ``item`` against ``item.v1.json`` and the catalog stage's rules, and queue it keyed by
        its ``item_id`` (the topic is compacted: the latest record of an item replaces the others)."""
        key, value = encode_item(item)
        self._send(self.settings.topics.items, key, value)

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        if self._closed:
            raise RuntimeError("the producer is closed")
        deadline = time.monotonic() + self.settings.wait_s()
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:  # librdkafka's queue is full: let it drain, within the broker wait
                if time.monotonic() > deadline:
                    raise
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append((msg.topic() or "", msg.key(), err))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait up to ``timeout_s`` for every queued record's acknowledgement; raise
        :class:`DeliveryError` if any failed since the last flush or is still unacknowledged."""
        left = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if failures or left:
            parts = [f"{len(failures)} records failed"] if failures else []
            if failures:
                parts[0] += f" (first: {failures[0][2].str()})"
            if left:
                parts.append(f"{left} records unacknowledged after {timeout_s:g} s")
            raise DeliveryError("; ".join(parts), failures, left)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (see :meth:`flush`) and refuse further sends; closing again does nothing."""
        if not self._closed:
            self._closed = True
            self.flush(timeout_s)

    def __enter__(self) -> TideProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the exception leaving the block is the one to see; a delivery failure is logged
            self.close()
        except DeliveryError as err:
            logger.warning("delivery failed while leaving on %s: %s", exc_type.__name__, err)


@dataclass(frozen=True, slots=True)
class Erased:
    """A tombstone on the recommendations topic: the user was erased (``tide forget``, or their
    state expired); drop whatever you keep for them."""

    user_id: str


class RecommendationConsumer:
    """Reads ``settings.topics.recommendations`` in the consumer group ``group_id``, as typed records:
    a :class:`~schemas.Recommendation` per value, an :class:`Erased` per tombstone.

    A group resumes from its committed offsets; a group new to the topic starts at its beginning
    (``consumer_extra`` ``{"auto.offset.reset": "latest"}`` starts at its end). ``group_id`` must not
    be the workers' group. ``auto_commit``: commit what has been returned every 5 s (librdkafka's
    auto commit); without, :meth:`commit` does. A worker delivers recommendations at least once: after
    a crash, one may come again, naming the same ``source``.

    A record that is not a valid recommendation keyed by its ``user_id`` raises
    :class:`~schemas.SchemaError` naming the field, the partition and the offset; it counts as
    returned, so the next call reads on past it. A fatal client error raises ``KafkaException``; others
    (the cluster unreachable a while) are logged and retried by librdkafka.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        group_id: str = "tide-client",
        *,
        auto_commit: bool = True,
        **consumer_extra: Any,
    ) -> None:
        self.settings = settings or Settings()
        if group_id == self.settings.group_id:
            raise ValueError(f"group_id {group_id!r} is the workers' consumer group: choose another")
        self.topic = self.settings.topics.recommendations
        self.group_id = group_id
        self._consumer = Consumer(
            self.settings.consumer_conf(
                group_id, **{"enable.auto.commit": auto_commit, "logger": kafka_logger(), **consumer_extra}
            )
        )
        self._joined = False
        self._closed = False
        self._consumer.subscribe([self.topic], on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined = True

    def poll(self, timeout_s: float = 1.0) -> Recommendation | Erased | None:
        """The next record, or None if none arrives within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self._consumer.poll(max(0.0, deadline - time.monotonic()))
            if m is not None:
                record = self._record(m)
                if record is not None:
                    return record
            if time.monotonic() >= deadline:
                return None

    def records(
        self, timeout_s: float | None = None, idle_s: float | None = None
    ) -> Iterator[Recommendation | Erased]:
        """Records as they arrive, until ``timeout_s`` has passed, or until none has arrived for
        ``idle_s`` once the group has given this consumer its partitions (the first assignment takes
        seconds, and does not count as idle), or until :meth:`close`. None: no such limit."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while not self._closed:
            now = time.monotonic()
            if end is not None and now >= end:
                return
            record = self.poll(_POLL_SLICE_S if end is None else min(_POLL_SLICE_S, end - now))
            now = time.monotonic()
            if record is not None or not self._joined:
                quiet_since = now
            if record is not None:
                yield record
            elif idle_s is not None and now - quiet_since >= idle_s:
                return

    def __iter__(self) -> Iterator[Recommendation | Erased]:
        return self.records()

    def _record(self, m: Message) -> Recommendation | Erased | None:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            logger.warning("reading %s: %s", self.topic, err.str())
            return None
        try:
            return _decode(m.key(), m.value())
        except SchemaError as exc:
            where = f"{m.topic()} partition {m.partition()} offset {m.offset()}"
            raise SchemaError(exc.kind, f"{where}: {exc}") from None

    def commit(self) -> None:
        """Commit, synchronously, the position after every record returned so far."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing new to commit
                raise

    def close(self) -> None:
        """Leave the group (committing with ``auto_commit``); closing again does nothing."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> RecommendationConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(key: bytes | None, value: bytes | None) -> Recommendation | Erased:
    """One record of the recommendations topic: its key must be the user id, in UTF-8."""
    user_id = user_of_key(key)
    if value is None:
        return Erased(user_id)
    rec = validate_recommendation(value)
    if rec.user_id != user_id:
        raise SchemaError("key_mismatch", "the record key must equal the user_id (UTF-8)")
    return rec
