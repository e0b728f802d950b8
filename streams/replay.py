"""The one paced producer: records into a topic at a chosen rate, each made when it is sent.

:func:`replay` produces an interaction log (CSV) into the interactions topic, keyed by user;
:func:`produce_paced` produces any records, e.g. the bench's, which carry the wall clock of their
sending so that latency can be measured from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from engine.offline.data import InteractionLog
from schemas import EVENT_TYPES, Interaction

__all__ = ["Record", "ReplayResult", "produce_paced", "replay"]

logger = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]  # (value, key)


@dataclass
class ReplayResult:
    n: int
    seconds: float
    # Per produced record, in order: (partition, offset, broker timestamp in s); filled on delivery
    # when tracked, else -1, -1, 0.
    partitions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def events_per_s(self) -> float:
        return self.n / max(self.seconds, 1e-9)


class _Deliveries:
    """The delivery reports of ``n`` records: where each landed (with ``track``), and what failed."""

    def __init__(self, n: int, track: bool) -> None:
        self.track = track
        self.parts = np.full(n, -1, np.int64)
        self.offs = np.full(n, -1, np.int64)
        self.stamps = np.zeros(n)
        self.errors: list[str] = []

    def callback(self, k: int) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback of record ``k``: one per record only when tracking."""
        return (lambda err, msg: self._delivered(err, msg, k)) if self.track else self._failed

    def _failed(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _delivered(self, err: KafkaError | None, msg: Message, k: int) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.parts[k], self.offs[k] = msg.partition(), msg.offset()
        self.stamps[k] = msg.timestamp()[1] / 1000


def produce_paced(
    producer_conf: dict,
    topic: str,
    n: int,
    record: Callable[[int], Record],
    *,
    rate: float = 0.0,
    progress: bool = False,
    track: bool = True,
    desc: str | None = None,
) -> ReplayResult:
    """Produce ``record(k)`` for ``k`` in ``0 … n-1`` at ``rate`` records/s (0 = as fast as possible).

    ``record`` is called when its record is due, so a record may carry the time of its sending.
    ``track``: note each record's partition, offset and broker timestamp (a delivery callback per
    record); without, only failures are noted. Raises :class:`RuntimeError` if any record failed.
    """
    deliveries = _Deliveries(n, track)
    producer = Producer(producer_conf)
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=desc or f"→ {topic}", unit="ev", disable=not progress, mininterval=0.5)
    for k in range(n):
        if rate > 0:
            due = t0 + k / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
        value, key = record(k)
        on_delivery = deliveries.callback(k)
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if k % 1000 == 999:
            producer.poll(0)
            bar.update(1000)
    producer.flush()
    bar.update(n - bar.n)
    bar.close()
    if deliveries.errors:
        errors = deliveries.errors
        raise RuntimeError(f"{len(errors)} records failed to produce, first: {errors[0]}")
    return ReplayResult(n, time.perf_counter() - t0, deliveries.parts, deliveries.offs, deliveries.stamps)


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
    """Produce rows ``start:stop`` of ``log``, keyed by user; ``rate`` events/s (0 = as fast as possible).

    ``time_offset`` is added to each row's timestamp (e.g. to map "seconds from start" to epoch time).
    """
    stop = len(log) if stop is None else stop
    users, items, ts, et = log.users, log.items, log.ts, log.event_types

    def row(k: int) -> Record:
        e = start + k
        ev = Interaction(str(users[e]), str(items[e]), float(ts[e]) + time_offset, EVENT_TYPES[int(et[e])])
        return ev.to_json(), ev.user_id.encode("utf-8")

    return produce_paced(
        producer_conf, topic, stop - start, row, rate=rate, progress=progress, desc=f"replay → {topic}"
    )
