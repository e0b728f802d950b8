"""Which worker holds which input partitions, so any worker's query API can answer for any user.

Every worker publishes its web URL and the input partitions it holds (assigned and restored) to the
compacted ``tide.workers`` topic (key = group and worker id) whenever they change and every
:data:`HEARTBEAT_S`, and reads everyone's entries back. A request for a user this worker does not
hold is sent on to the workers that hold partitions (streams/views.py): the group's assignment, as
its members publish it. (Kafka's DescribeGroups would give the same assignment without a topic, but
not every Kafka-protocol broker reports the members, and it carries no web URL.)

An entry older than :data:`STALE_S` is ignored: a worker that died without saying so drops out.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streams.config import Settings

__all__ = ["HEARTBEAT_S", "STALE_S", "Directory", "Member", "advertised_url"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
STALE_S = 30.0
_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Member:
    group_id: str  # the worker group: deployments that share the topic keep to their own
    worker_id: str
    url: str
    partitions: tuple[int, ...]
    at: float  # when it published this (epoch s)


def advertised_url(settings: Settings) -> str:
    """The URL other workers reach this worker's web views at: ``TIDE_WEB_URL``, or the web host and
    port (the host name in place of a wildcard address)."""
    if settings.web_url:
        return settings.web_url.rstrip("/")
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.web_port}"


class Directory:
    """Publishes this worker's entry and keeps everyone's, on a thread of its own."""

    def __init__(self, settings: Settings, owned: Callable[[], list[int]]) -> None:
        self.settings = settings
        self.topic = settings.topics.workers
        self.worker_id = settings.transactional_id()
        self.url = advertised_url(settings)
        self._owned = owned
        self._members: dict[tuple[str, str], Member] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tide-directory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def peers(self) -> list[Member]:
        """The other workers that hold partitions now (fresh entries only)."""
        now = time.time()
        with self._lock:
            return [
                m for m in self._members.values()
                if m.group_id == self.settings.group_id and m.worker_id != self.worker_id and m.partitions
                and now - m.at < STALE_S
            ]

    def _run(self) -> None:
        producer = Producer(self.settings.producer_conf())
        consumer = Consumer(self.settings.consumer_conf(
            f"{self.settings.group_id}-directory", **{"enable.auto.commit": False}
        ))
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        published: tuple[int, ...] | None = None
        last = 0.0
        try:
            while not self._stop.is_set():
                owned = tuple(sorted(self._owned()))
                if owned != published or time.monotonic() - last > HEARTBEAT_S:
                    self._publish(producer, owned)
                    published, last = owned, time.monotonic()
                for msg in consumer.consume(100, _POLL_S):
                    self._read(msg)
        except Exception:  # the directory serves the query API only: the hot path goes on without it
            logger.exception("the worker directory stopped; requests are answered from this worker only")
        finally:
            self._publish(producer, ())
            producer.flush(5)
            consumer.close()

    def _publish(self, producer: Producer, owned: tuple[int, ...]) -> None:
        entry = {
            "group_id": self.settings.group_id, "worker_id": self.worker_id, "url": self.url,
            "partitions": list(owned), "at": time.time(),
        }
        key = f"{self.settings.group_id}/{self.worker_id}".encode()
        producer.produce(self.topic, orjson.dumps(entry), key)
        producer.poll(0)

    def _read(self, msg: object) -> None:
        err = msg.error()  # type: ignore[attr-defined]
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                logger.debug("worker directory: %s", err)
            return
        value = msg.value()  # type: ignore[attr-defined]
        if value is None:
            return
        try:
            e = orjson.loads(value)
            parts = tuple(int(p) for p in e["partitions"])
            m = Member(str(e["group_id"]), str(e["worker_id"]), str(e["url"]), parts, float(e["at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("worker directory: an entry that is not a worker's, skipped")
            return
        with self._lock:
            self._members[(m.group_id, m.worker_id)] = m
