"""The one reader of ``tide.recommendations`` (demo, bench, tests): keeps every record with its Kafka
timestamp, or only the latency of each, and can wait until given source events have been answered."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from array import array
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, TopicPartition

from schemas import Recommendation, decode_recommendation
from streams.config import Settings

__all__ = ["RecommendationReader"]

logger = logging.getLogger(__name__)


class RecommendationReader:
    """Reads the recommendations topic from the start, in :meth:`run` (a thread the caller starts) or
    in a thread of its own (:meth:`start`), until :meth:`stop`.

    ``keep_records``: keep each decoded record (``records``, ``keys``) for :meth:`wait_for`; without,
    only latencies are kept, and a record is parsed just far enough to find its source's event time
    (a bench reads hundreds of thousands of them beside the process it measures). ``latencies`` holds
    the Kafka timestamp of each recommendation minus the event time of its source, for sources stamped
    at or after ``live_from`` (seconds since the epoch; ``inf``: none). ``consumer_extra`` is extra
    consumer configuration.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str | None = None,
        *,
        keep_records: bool = True,
        **consumer_extra: Any,
    ) -> None:
        self.topic = settings.topics.recommendations
        group = group_id or f"tide-reader-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(
            settings.consumer_conf(group, **{"enable.auto.commit": True, **consumer_extra})
        )
        self.keep_records = keep_records
        self.records: list[tuple[Recommendation, float]] = []
        self.keys: list[bytes | None] = []
        self.live_from = float("inf")
        self.latencies = array("d")
        self._seen: set[tuple[int, int]] = set()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    def _assigned(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.ready.set()

    def start(self) -> None:
        """Run the reader in a daemon thread of its own; :meth:`stop` joins it."""
        self._thread = threading.Thread(target=self.run, name="tide-reader", daemon=True)
        self._thread.start()

    def run(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._assigned)
        try:
            while not self._stop.is_set():
                for m in self._consumer.consume(500, 0.1):
                    # a tombstone (None) erases a forgotten user's recommendations: nothing to read
                    if m.error() is None and m.value() is not None:
                        self._take(m)
        finally:
            self._consumer.close()

    def _take(self, m: Message) -> None:
        value, kafka_ts = m.value(), m.timestamp()[1] / 1000
        if self.keep_records:
            rec = decode_recommendation(value)
            event_time = rec.source.event_time
            with self._cv:
                self.records.append((rec, kafka_ts))
                self.keys.append(m.key())
                self._seen.add((rec.source.partition, rec.source.offset))
                self._cv.notify_all()
        else:
            event_time = orjson.loads(value).get("source", {}).get("event_time", 0.0)
        if event_time >= self.live_from:
            self.latencies.append(kafka_ts - event_time)

    def wait_for(self, sources: set[tuple[int, int]], timeout_s: float) -> bool:
        """Wait until a recommendation names each (partition, offset) in ``sources`` (``keep_records``)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while not sources <= self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reading; with :meth:`start`, wait up to ``timeout_s`` for the reader's thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
