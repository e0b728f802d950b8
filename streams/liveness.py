"""Is the broker there? The worker's view of its Kafka cluster, for ``/health``, metrics and exiting.

librdkafka reconnects by itself and reports little while a broker is merely stalled (a paused
process keeps its TCP connections open), so :class:`BrokerWatch` also asks: every few seconds a
description of the input topic with a short timeout. Failures and librdkafka's error callbacks
mark the broker unreachable; any answer marks it reachable again. A worker whose broker stays
unreachable for ``broker_timeout_s`` gives up with :class:`BrokerUnavailable` (a non-zero exit with
the reason). So does one whose input topic is gone, or has been recreated (its topic id differs
from the one the worker's state was built from): the new log's offsets start again at 0, and events
at offsets the state has already applied would be skipped as replays. No record can cause any of
these.

:class:`OncePerInterval` keeps a fault from flooding the log: librdkafka logs a failed connection
attempt about twenty times a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection

__all__ = ["KAFKA_CLIENT_LOGGERS", "BrokerUnavailable", "BrokerWatch", "OncePerInterval", "kafka_logger"]

#: Loggers of Kafka clients that repeat one error many times a second while a broker is away
#: (librdkafka's lines through :func:`kafka_logger`, and Faust's aiokafka clients).
KAFKA_CLIENT_LOGGERS = ("streams.kafka", "aiokafka", "faust.transport")

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 2.0
#: A missing input topic is fatal only if it stays missing this long (metadata can lag a creation).
TOPIC_GRACE_S = 10.0

_KINDS = {
    KafkaError._ALL_BROKERS_DOWN: "all_brokers_down",
    KafkaError._TRANSPORT: "transport",
    KafkaError._TIMED_OUT: "timed_out",
    KafkaError._AUTHENTICATION: "authentication",
    KafkaError._SSL: "authentication",
    KafkaError._RESOLVE: "transport",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_topic",
}
#: the ``kind`` label of ``tide_kafka_errors_total``
ERROR_KINDS = ("all_brokers_down", "transport", "timed_out", "authentication", "unknown_topic", "other")


class BrokerUnavailable(RuntimeError):
    """The cluster cannot be used: unreachable for too long, or without the input topic."""


class OncePerInterval(logging.Filter):
    """Lets a message through once per ``interval_s`` for each (logger, level, key); the next one
    that passes says how many were held back. The key is the message up to ``key_chars``, so
    messages that differ only in their tail (a timing, a count) count as one. With ``names``, only
    records of loggers under those names are limited (a handler's filter sees every logger's)."""

    def __init__(self, interval_s: float = 30.0, key_chars: int = 60, names: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.key_chars = key_chars
        self.names = names
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.names and not record.name.startswith(self.names):
            return True
        key = (record.name, record.levelno, str(record.msg)[: self.key_chars])
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (-1e18, 0))
            if now - last < self.interval_s:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - last:.0f} s)"
        return True


def kafka_logger() -> logging.Logger:
    """The logger librdkafka's own log lines go to (``logger`` in the client configuration),
    rate-limited per kind of message."""
    log = logging.getLogger("streams.kafka")
    if not any(isinstance(f, OncePerInterval) for f in log.filters):
        log.addFilter(OncePerInterval())
    return log


class BrokerWatch:
    """Tracks whether the cluster answers. ``on_error`` is librdkafka's ``error_cb`` for every client
    of the worker; :meth:`check` probes at most every :data:`PROBE_INTERVAL_S` and raises
    :class:`BrokerUnavailable` once the broker has been unreachable for ``timeout_s`` (0: never)."""

    def __init__(
        self,
        topic: str,
        timeout_s: float,
        on_kind: Callable[[str], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        topic_id: str | None = None,
        on_topic_id: Callable[[str], None] | None = None,
    ) -> None:
        """``topic_id``: the input topic's id when the worker's state was built (None: not known
        yet; the first description fixes it and is passed to ``on_topic_id`` to be kept)."""
        self.topic = topic
        self.timeout_s = timeout_s
        self.topic_id = topic_id
        self._on_topic_id = on_topic_id or (lambda tid: None)
        self._on_kind = on_kind or (lambda kind: None)
        self._on_state = on_state or (lambda up: None)
        self.down_since: float | None = None  # monotonic time of the first failure of this outage
        self.topic_missing_since: float | None = None
        self.last_error = ""
        self.errors = 0
        self._next_probe = 0.0
        self._fatal: str | None = None
        self._lock = threading.Lock()

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def unreachable_for(self) -> float:
        since = self.down_since
        return 0.0 if since is None else time.monotonic() - since

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (called from the client's poll, on the hot path's thread)."""
        kind = _KINDS.get(err.code(), "other")
        self._on_kind(kind)
        with self._lock:
            self.errors += 1
            self.last_error = f"{err.name()}: {err.str()}"
            if err.fatal():
                self._fatal = f"fatal Kafka client error: {self.last_error}"
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._down()

    def on_topic_error(self, err: KafkaError) -> None:
        """An error event for the input topic from ``consume`` (e.g. it does not exist)."""
        self.on_error(err)
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and self.topic_missing_since is None:
            self.topic_missing_since = time.monotonic()

    def _down(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning("broker unreachable (%s)", self.last_error or "no answer to a metadata request")
            self._on_state(False)

    def _up(self) -> None:
        if self.down_since is not None:
            logger.warning("broker reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
            self._on_state(True)

    def check(self, admin: Any, force: bool = False) -> None:
        """Describe the input topic through ``admin`` (an AdminClient) if a probe is due, then raise
        :class:`BrokerUnavailable` if the cluster has failed for too long or the topic is not the
        worker's any more."""
        now = time.monotonic()
        if force or now >= self._next_probe:
            self._next_probe = now + PROBE_INTERVAL_S
            self._probe(admin, now)
        self.raise_if_fatal()

    def _probe(self, admin: Any, now: float) -> None:
        try:
            fut = admin.describe_topics(
                TopicCollection([self.topic]), request_timeout=PROBE_TIMEOUT_S
            )[self.topic]
            desc = fut.result(timeout=PROBE_TIMEOUT_S + 1)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:  # an answer: no such topic
                self._up()
                if self.topic_missing_since is None:
                    self.topic_missing_since = now
                return
            with self._lock:
                self.errors += 1
                self.last_error = f"describing {self.topic}: {err.str() if err is not None else exc}"
            self._on_kind(_KINDS.get(err.code(), "other") if err is not None else "other")
            self._down()
            return
        except Exception as exc:  # concurrent.futures.TimeoutError: no answer in time
            with self._lock:
                self.errors += 1
                self.last_error = f"describing {self.topic}: no answer ({type(exc).__name__})"
            self._on_kind("timed_out")
            self._down()
            return
        self._up()
        self.topic_missing_since = None
        tid = str(desc.topic_id)
        if self.topic_id is None:
            self.topic_id = tid
            self._on_topic_id(tid)
        elif tid != self.topic_id:
            self._fatal = (
                f"the input topic {self.topic!r} was recreated (topic id {self.topic_id} → {tid}): "
                "this worker's state was built from the old log, and events at offsets it has applied "
                "would be skipped as replays; start from an empty state (a new TIDE_STATE_DIR) if the new "
                "topic is meant"
            )

    def raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise BrokerUnavailable(self._fatal)
        if self.timeout_s > 0 and self.unreachable_for() > self.timeout_s:
            raise BrokerUnavailable(
                f"the broker has been unreachable for {self.unreachable_for():.0f} s "
                f"(TIDE_BROKER_TIMEOUT_S={self.timeout_s:g}); last error: {self.last_error or 'none'}"
            )
        since = self.topic_missing_since
        if since is not None and time.monotonic() - since > TOPIC_GRACE_S:
            raise BrokerUnavailable(
                f"the input topic {self.topic!r} does not exist on the cluster (was the broker reset? "
                "`tide topics` creates the topics)"
            )

    def health(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "unreachable_s": round(self.unreachable_for(), 1),
            "errors": self.errors,
            "last_error": self.last_error,
        }
