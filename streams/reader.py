"""A reader of ``tide.recommendations`` for the demo and tests: collects every record with its
Kafka timestamp and can wait until given source events have been answered."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from schemas import Recommendation, decode_recommendation
from streams.config import Settings

__all__ = ["RecommendationReader"]

logger = logging.getLogger(__name__)


class RecommendationReader:
    def __init__(self, settings: Settings, group_id: str | None = None) -> None:
        self.topic = settings.topics.recommendations
        self._consumer = Consumer(
            settings.consumer_conf(group_id or f"tide-reader-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": True})
        )
        self.records: list[tuple[Recommendation, float]] = []
        self.keys: list[bytes | None] = []
        self._seen: set[tuple[int, int]] = set()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self.ready = threading.Event()

    def _assigned(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.ready.set()

    def run(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._assigned)
        try:
            while not self._stop.is_set():
                for m in self._consumer.consume(500, 0.1):
                    if m.error() is not None:
                        continue
                    rec = decode_recommendation(m.value() or b"")
                    with self._cv:
                        self.records.append((rec, m.timestamp()[1] / 1000))
                        self.keys.append(m.key())
                        self._seen.add((rec.source.partition, rec.source.offset))
                        self._cv.notify_all()
        finally:
            self._consumer.close()

    def wait_for(self, sources: set[tuple[int, int]], timeout_s: float) -> bool:
        """Wait until a recommendation names each (partition, offset) in ``sources``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while not sources <= self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    def stop(self) -> None:
        self._stop.set()
