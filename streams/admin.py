"""Topic administration on any cluster (the embedded broker or a real Kafka): which topics to create,
with what partitioning and configs, and creating them idempotently."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["TopicSpec", "create_topics"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its name, partition count, and whether it is log-compacted.

    ``config`` holds further topic configs (string values), e.g. ``{"retention.ms": "3600000"}``;
    it wins over ``compacted``.
    """

    name: str
    partitions: int = 1
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("topic name must not be empty")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name!r}: partitions must be >= 1, got {self.partitions}")

    def topic_config(self) -> dict[str, str]:
        """The topic configs to create it with."""
        base = {"cleanup.policy": "compact"} if self.compacted else {}
        return {**base, **{k: str(v) for k, v in self.config.items()}}


def create_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    timeout_s: float = 30,
    admin_conf: Mapping[str, Any] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create the topics in ``specs`` that do not exist, then wait until metadata shows all of them.

    Topics that already exist (before or concurrently) are left as they are, but a partition count
    other than the spec's is an error (:class:`ValueError`). ``admin_conf`` is extra AdminClient
    configuration (security settings for a real cluster); ``bootstrap`` wins over any
    ``bootstrap.servers`` in it. Raises :class:`TimeoutError` if the topics are not all visible
    with their partition counts within ``timeout_s``.
    """
    if not specs:
        return
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate topic names in {names}")
    deadline = time.monotonic() + timeout_s
    admin = AdminClient({**(admin_conf or {}), "bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout_s).topics
    _create_missing(admin, [s for s in specs if s.name not in existing], replication_factor, deadline)
    _wait_visible(admin, {s.name: s.partitions for s in specs}, set(existing), deadline, timeout_s, bootstrap)


def _create_missing(
    admin: AdminClient, specs: Sequence[TopicSpec], replication_factor: int, deadline: float
) -> None:
    """Create ``specs``; one that another client created meanwhile is fine."""
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=replication_factor,
            config=s.topic_config(),
        )
        for s in specs
    ]
    if not new:
        return
    left = max(1.0, deadline - time.monotonic())
    futures = admin.create_topics(new, request_timeout=left, operation_timeout=left)
    for name, fut in futures.items():
        try:
            fut.result(timeout=max(1.0, deadline - time.monotonic()))
            logger.info("created topic %s", name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
            logger.info("topic %s already exists", name)


def _wait_visible(
    admin: AdminClient,
    want: dict[str, int],
    existing: set[str],
    deadline: float,
    timeout_s: float,
    bootstrap: str,
) -> None:
    """Wait until metadata shows every topic of ``want`` (name → partitions) with its partition count."""
    while True:
        topics = admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics
        have = {n: len(topics[n].partitions) for n in want if n in topics and topics[n].error is None}
        wrong = {n: (have[n], p) for n, p in want.items() if n in have and have[n] != p}
        if wrong and all(n in existing for n in wrong):
            raise ValueError(
                "existing topics have other partition counts (have, want): "
                + ", ".join(f"{n} {h, w}" for n, (h, w) in sorted(wrong.items()))
            )
        if len(have) == len(want) and not wrong:
            return
        if time.monotonic() > deadline:
            missing = sorted(set(want) - set(have))
            raise TimeoutError(
                f"topics not ready after {timeout_s}s on {bootstrap}: missing {missing}, "
                f"partition counts (have, want) {wrong}"
            )
        time.sleep(0.1)
