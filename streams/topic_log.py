"""Read an interactions topic from its beginning into an :class:`InteractionLog` (for
``tide train --topic``)."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
from confluent_kafka import Consumer

from engine.offline.data import InteractionLog
from schemas import SchemaError, decode_interaction
from streams.config import Settings

__all__ = ["read_topic"]

logger = logging.getLogger(__name__)


def read_topic(
    settings: Settings, topic: str, idle_s: float = 3.0, max_events: int | None = None
) -> InteractionLog:
    """Every valid interaction on ``topic`` until it has been idle for ``idle_s``, sorted by event
    time. The end is found by idleness rather than the high watermark, which some Kafka-protocol
    brokers under-report."""
    c = Consumer(settings.consumer_conf(f"tide-train-{uuid.uuid4().hex[:8]}"))
    c.subscribe([topic])
    users, items, ts, et = [], [], [], []
    invalid = 0
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s and (max_events is None or len(ts) < max_events):
            msgs = c.consume(2000, 0.2)
            if msgs:
                last = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    continue
                try:
                    ev = decode_interaction(m.value())
                except SchemaError:
                    invalid += 1
                    continue
                users.append(ev.user_id)
                items.append(ev.item_id)
                ts.append(ev.timestamp)
                et.append(ev.event_type_id)
    finally:
        c.close()
    if invalid:
        logger.warning("skipped %d invalid records on %s", invalid, topic)
    t = np.asarray(ts, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return InteractionLog(
        np.asarray(users, dtype=object)[order], np.asarray(items, dtype=object)[order], t[order],
        np.asarray(et, np.int64)[order],
    )
