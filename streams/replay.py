"""Replay an interaction log (CSV) into the interactions topic, keyed by user, at a chosen rate."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from engine.offline.data import InteractionLog
from schemas import EVENT_TYPES, Interaction

__all__ = ["ReplayResult", "replay"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    n: int
    seconds: float
    # Per produced record, in log order: (partition, offset, broker timestamp in s); filled on delivery.
    partitions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))


def replay(
    producer_conf: dict,
    topic: str,
    log: InteractionLog,
    *,
    start: int = 0,
    stop: int | None = None,
    rate: float = 0.0,
    progress: bool = True,
    time_offset: float = 0.0,
) -> ReplayResult:
    """Produce rows ``start:stop`` of ``log``; ``rate`` events/s (0 = as fast as possible).

    ``time_offset`` is added to each row's timestamp (e.g. to map "seconds from start" to epoch time).
    """
    stop = len(log) if stop is None else stop
    n = stop - start
    parts = np.full(n, -1, np.int64)
    offs = np.full(n, -1, np.int64)
    stamps = np.zeros(n)
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message, k: int) -> None:
        if err is not None:
            errors.append(str(err))
            return
        parts[k], offs[k] = msg.partition(), msg.offset()
        stamps[k] = msg.timestamp()[1] / 1000

    producer = Producer(producer_conf)
    users, items, ts, et = log.users, log.items, log.ts, log.event_types
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"replay → {topic}", unit="ev", disable=not progress, mininterval=0.5)
    for k in range(n):
        e = start + k
        if rate > 0:
            due = t0 + k / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
        ev = Interaction(str(users[e]), str(items[e]), float(ts[e]) + time_offset, EVENT_TYPES[int(et[e])])
        while True:
            try:
                producer.produce(
                    topic, ev.to_json(), ev.user_id.encode("utf-8"), on_delivery=lambda err, msg, k=k: delivered(err, msg, k)
                )
                break
            except BufferError:
                producer.poll(0.05)
        if k % 1000 == 999:
            producer.poll(0)
            bar.update(1000)
    producer.flush()
    bar.update(n - bar.n)
    bar.close()
    if errors:
        raise RuntimeError(f"{len(errors)} records failed to produce, first: {errors[0]}")
    return ReplayResult(n, time.perf_counter() - t0, parts, offs, stamps)
