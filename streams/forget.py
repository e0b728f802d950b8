"""Deletion requests: ``tide forget USER …`` asks the workers to erase users.

A request is a tombstone (null value) keyed by the user id on ``tide.user-deletions``. It is written
to every partition of that topic, so it reaches whichever worker holds the user's state, whatever
partitioner the interactions' producers use; a producer that writes the tombstone itself with the
same client and key as the user's interactions reaches the same worker with one record. The worker
erases the user's state for good and writes a tombstone keyed by the user to
``tide.recommendations`` (streams/worker.py, engine/state/retention.py).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas import check_id
from streams.config import Settings

__all__ = ["request_deletion"]


def request_deletion(settings: Settings, users: list[str]) -> int:
    """Write a deletion request for each of ``users``; returns the number of records written."""
    for u in users:
        check_id(u, "user_id")
    topic = settings.topics.user_deletions
    producer = Producer(settings.producer_conf())
    meta = producer.list_topics(topic, timeout=30).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaException(f"topic {topic!r} is not there: `tide topics` creates it")
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    n = 0
    for u in users:
        for p in meta.partitions:
            producer.produce(topic, None, u.encode("utf-8"), partition=p, on_delivery=delivered)
            n += 1
    if producer.flush(30) or errors:
        raise KafkaException(f"deletion requests not acknowledged: {errors[:3] or 'timed out'}")
    return n
