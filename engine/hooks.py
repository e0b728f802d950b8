"""Observation hooks the engine calls; streams/metrics.py turns them into Prometheus series.

The engine never imports prometheus_client: it receives an object with these methods (the idea of
Faust's sensors). ``NullHooks`` is the default for tests and offline jobs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.quality import QualitySnapshot

__all__ = ["FoldHooks", "NullHooks", "StageClock"]


class StageClock:
    """Wall seconds per named stage: ``lap(name)`` charges the time since the last lap to ``name``
    (stages may repeat, e.g. inside a loop; their times add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now

    def absorb(self, prefix: str, seconds: Mapping[str, float]) -> None:
        """Charge the time since the last lap to another clock's stages, as ``prefix.stage``."""
        for stage, sec in seconds.items():
            key = f"{prefix}.{stage}"
            self.seconds[key] = self.seconds.get(key, 0.0) + sec
        self._t = time.perf_counter()


class FoldHooks(Protocol):
    def on_consumed(self, topic: str, n_events: int) -> None:
        """``n_events`` records were read from ``topic`` (valid or not)."""

    def on_batch(self, n_events: int, fold_seconds: float) -> None:
        """One micro-batch of ``n_events`` valid events was folded in ``fold_seconds``."""

    def on_stages(self, seconds: Mapping[str, float]) -> None:
        """Wall seconds one micro-batch spent in each stage of the hot path (consume, decode, the
        user stage's parts, item stage, produce, flush, state write, learn)."""

    def on_skipped(self, n_events: int) -> None:
        """Events already folded before (replayed input) were skipped."""

    def on_recommendations(self, n: int, latencies_s: Sequence[float]) -> None:
        """``n`` recommendations were emitted; event-arrival-to-recommendation latencies in seconds."""

    def on_dead_letter(self, reason_kind: str) -> None:
        """A record went to the dead-letter topic; ``reason_kind`` is a short bounded label."""

    def on_state_bytes(self, store: str, n_bytes: int) -> None:
        """Approximate bytes held by a state store (``users`` or ``items``)."""

    def on_state_memory(self, kind: str, n_bytes: int) -> None:
        """Memory the state store holds, by kind (``block_cache``, ``memtables``)."""

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        """Consumer lag in messages for one assigned partition."""

    def on_catalog(self, n_items: int, n_encoded: int, encode_seconds: float) -> None:
        """The catalogue now holds ``n_items``; ``n_encoded`` texts were encoded in ``encode_seconds``."""

    def on_learning(self, steps: int, loss: float | None, examples_waiting: int) -> None:
        """After a batch: ``steps`` online-learning updates landed (the last with cross-entropy
        ``loss``), and ``examples_waiting`` examples are not in a landed update yet."""

    def on_online_error(self) -> None:
        """An online-learning step failed or had a non-finite loss, and was dropped."""

    def on_kafka_error(self, kind: str) -> None:
        """A Kafka client reported an error or a probe of the cluster failed (``kind``: a short label)."""

    def on_broker(self, reachable: bool) -> None:
        """The cluster became reachable or unreachable."""

    def on_model(self, version: str) -> None:
        """The worker's model is now ``version`` (the fleet learner published it)."""

    def on_item_staleness(self, seconds: float) -> None:
        """With the shared item stage: a batch of item state was applied here ``seconds`` after the
        oldest of its updates was produced (how far the item side is behind the users' events)."""

    def on_restore(self, partition: int, n_records: int, seconds: float) -> None:
        """Partition ``partition``'s user state was restored from its changelog on assignment:
        ``n_records`` records read in ``seconds``."""

    def on_users_removed(self, reason: str, n: int) -> None:
        """``n`` users' state was removed (``reason``: ``expired`` or ``deleted``)."""

    def on_quality(self, q: QualitySnapshot) -> None:
        """The live quality of this worker's recommendations over its rolling window."""

    def on_drifts(self, n: int) -> None:
        """``n`` users' interest drifted (each reported on the interest-drift topic)."""


class NullHooks:
    """Hooks that record nothing."""

    def on_consumed(self, topic: str, n_events: int) -> None:
        pass

    def on_batch(self, n_events: int, fold_seconds: float) -> None:
        pass

    def on_stages(self, seconds: Mapping[str, float]) -> None:
        pass

    def on_skipped(self, n_events: int) -> None:
        pass

    def on_recommendations(self, n: int, latencies_s: Sequence[float]) -> None:
        pass

    def on_dead_letter(self, reason_kind: str) -> None:
        pass

    def on_state_bytes(self, store: str, n_bytes: int) -> None:
        pass

    def on_state_memory(self, kind: str, n_bytes: int) -> None:
        pass

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        pass

    def on_catalog(self, n_items: int, n_encoded: int, encode_seconds: float) -> None:
        pass

    def on_learning(self, steps: int, loss: float | None, examples_waiting: int) -> None:
        pass

    def on_online_error(self) -> None:
        pass

    def on_kafka_error(self, kind: str) -> None:
        pass

    def on_broker(self, reachable: bool) -> None:
        pass

    def on_restore(self, partition: int, n_records: int, seconds: float) -> None:
        pass

    def on_item_staleness(self, seconds: float) -> None:
        pass

    def on_model(self, version: str) -> None:
        pass

    def on_users_removed(self, reason: str, n: int) -> None:
        pass

    def on_quality(self, q: QualitySnapshot) -> None:
        pass

    def on_drifts(self, n: int) -> None:
        pass
