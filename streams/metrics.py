"""Every Prometheus metric TIDE exports, and the hooks object that feeds them from the engine.

Namespace ``tide_``, base units, ``_total`` only on counters, bounded labels (topic, partition,
store, reason), label sets created at start-up so the series exist at zero. Grafana panels in
grafana/ use only the names listed in :data:`METRIC_NAMES` (a test checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.quality import QualitySnapshot
from schemas import ERROR_KINDS
from streams.liveness import ERROR_KINDS as KAFKA_ERROR_KINDS

__all__ = ["DLQ_REASONS", "METRIC_NAMES", "Metrics"]

DLQ_REASONS = (*ERROR_KINDS, "other")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FOLD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

METRIC_NAMES = (
    "tide_events_consumed_total",
    "tide_events_folded_total",
    "tide_events_skipped_total",
    "tide_recommendations_emitted_total",
    "tide_dead_letters_total",
    "tide_fold_duration_seconds",
    "tide_stage_seconds_total",
    "tide_batch_size_events",
    "tide_event_to_recommendation_seconds",
    "tide_state_bytes",
    "tide_state_memory_bytes",
    "tide_consumer_lag_messages",
    "tide_model_info",
    "tide_catalog_items",
    "tide_texts_encoded_total",
    "tide_text_encode_duration_seconds",
    "tide_online_steps_total",
    "tide_online_loss",
    "tide_online_examples_waiting",
    "tide_online_errors_total",
    "tide_kafka_errors_total",
    "tide_broker_up",
    "tide_users_removed_total",
    "tide_state_restored_records_total",
    "tide_state_restore_seconds",
    "tide_item_staleness_seconds",
    "tide_live_recall_ratio",
    "tide_live_mrr_ratio",
    "tide_live_coverage_ratio",
    "tide_live_intra_list_distance",
    "tide_live_exposure_gini_ratio",
    "tide_live_judged_events",
    "tide_interest_drifts_total",
)


class Metrics:
    """The metric objects, registered on ``registry``; implements ``engine.hooks.FoldHooks``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        topics: Iterable[str] = (),
        partitions: Iterable[int] = (0,),
    ) -> None:
        self.events_consumed = Counter(
            "tide_events_consumed", "Records read from an input topic, valid or not.", ["topic"],
            registry=registry,
        )
        self.events_folded = Counter(
            "tide_events_folded", "Interactions folded into state.", registry=registry
        )
        self.events_skipped = Counter(
            "tide_events_skipped", "Replayed interactions skipped because state already had them.",
            registry=registry,
        )
        self.recommendations = Counter(
            "tide_recommendations_emitted", "Recommendations produced.", registry=registry
        )
        self.dead_letters = Counter(
            "tide_dead_letters", "Records sent to the dead-letter topic.", ["reason"], registry=registry
        )
        self.fold_duration = Histogram(
            "tide_fold_duration_seconds", "Time to fold one micro-batch.", buckets=_FOLD_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Counter(
            "tide_stage_seconds",
            "Wall seconds the hot path spent in each stage (rate() of it: the share of a worker's time).",
            ["stage"], registry=registry,
        )
        self.batch_size = Histogram(
            "tide_batch_size_events", "Valid events per micro-batch.", buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "tide_event_to_recommendation_seconds",
            "From an interaction's Kafka timestamp to its recommendation being produced.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.state_bytes = Gauge(
            "tide_state_bytes", "Approximate bytes in a state store.", ["store"], registry=registry
        )
        self.state_memory = Gauge(
            "tide_state_memory_bytes", "Memory RocksDB holds: block cache and memtables.", ["kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "tide_consumer_lag_messages", "Messages behind the log end.", ["topic", "partition"],
            registry=registry,
        )
        self.model_info = Gauge(
            "tide_model_info", "The model version in use (value 1).", ["version"], registry=registry
        )
        self.catalog_items = Gauge(
            "tide_catalog_items", "Items in the catalogue (tide.items).", registry=registry
        )
        self.texts_encoded = Counter(
            "tide_texts_encoded", "Item texts encoded by the catalog stage.", registry=registry
        )
        self.encode_duration = Histogram(
            "tide_text_encode_duration_seconds", "Time to encode one batch of changed item texts.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.online_steps = Counter(
            "tide_online_steps", "Online-learning updates applied to the model.", registry=registry
        )
        self.online_loss = Gauge(
            "tide_online_loss", "Cross-entropy of the last online-learning update's examples.",
            registry=registry,
        )
        self.online_waiting = Gauge(
            "tide_online_examples_waiting",
            "Online-learning examples not yet in an applied update (grows if learning falls behind).",
            registry=registry,
        )
        self.online_errors = Counter(
            "tide_online_errors",
            "Online-learning steps dropped (an error or a non-finite loss).",
            registry=registry,
        )
        self.kafka_errors = Counter(
            "tide_kafka_errors",
            "Errors reported by the Kafka clients and failed probes of the cluster.",
            ["kind"],
            registry=registry,
        )
        self.broker_up = Gauge(
            "tide_broker_up",
            "1 while the Kafka cluster answers the worker, 0 while it does not.",
            registry=registry,
        )
        self.broker_up.set(1)
        self.users_removed = Counter(
            "tide_users_removed",
            "Users whose state was removed: expired (idle past the TTL) or deleted (on request).",
            ["reason"], registry=registry,
        )
        self.restored_records = Counter(
            "tide_state_restored_records",
            "User-state changelog records read by restores on partition assignment.",
            registry=registry,
        )
        self.restore_seconds = Histogram(
            "tide_state_restore_seconds",
            "Seconds a partition's user-state restore took, from assignment to resume.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=registry,
        )
        self.item_staleness = Histogram(
            "tide_item_staleness_seconds",
            "Shared item stage: seconds from an item update's produce to its state applied in this worker.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self._quality_metrics(registry)
        for kind in KAFKA_ERROR_KINDS:
            self.kafka_errors.labels(kind)
        for reason in ("expired", "deleted"):
            self.users_removed.labels(reason)
        for t in topics:
            self.events_consumed.labels(t)
            for p in partitions:
                self.lag.labels(t, str(p))
        for r in DLQ_REASONS:
            self.dead_letters.labels(r)
        for s in ("users", "items"):
            self.state_bytes.labels(s)
        for kind in ("block_cache", "memtables"):
            self.state_memory.labels(kind)

    def _quality_metrics(self, registry: CollectorRegistry) -> None:
        """Live quality (engine/quality.py: the offline reports' definitions) and interest drift."""
        window = "over the last TIDE_QUALITY_WINDOW judged events"
        self.live_recall = Gauge(
            "tide_live_recall_ratio",
            f"Recall@10 of the recommendation live for each user when their next event arrived, {window}.",
            registry=registry,
        )
        self.live_mrr = Gauge(
            "tide_live_mrr_ratio", f"MRR@10 of the same recommendations (0 beyond rank 10), {window}.",
            registry=registry,
        )
        self.live_judged = Gauge(
            "tide_live_judged_events", "Events the live Recall@10 and MRR@10 are measured on.",
            registry=registry,
        )
        self.live_coverage = Gauge(
            "tide_live_coverage_ratio",
            "Share of the catalogue in at least one of the last TIDE_QUALITY_WINDOW recommendations.",
            registry=registry,
        )
        self.live_ild = Gauge(
            "tide_live_intra_list_distance",
            "Mean pairwise cosine distance between a recommendation's top 10 item vectors, averaged.",
            registry=registry,
        )
        self.live_gini = Gauge(
            "tide_live_exposure_gini_ratio",
            "Gini coefficient of item exposure in the last TIDE_QUALITY_WINDOW recommendations"
            " (0: even; 1: a few items take every slot).",
            registry=registry,
        )
        self.drifts = Counter(
            "tide_interest_drifts",
            "Users whose recent interest moved beyond TIDE_DRIFT_THRESHOLD from their long-run summary.",
            registry=registry,
        )

    # engine.hooks.FoldHooks
    def on_consumed(self, topic: str, n_events: int) -> None:
        self.events_consumed.labels(topic).inc(n_events)

    def on_batch(self, n_events: int, fold_seconds: float) -> None:
        self.events_folded.inc(n_events)
        self.batch_size.observe(n_events)
        self.fold_duration.observe(fold_seconds)

    def on_stages(self, seconds: Mapping[str, float]) -> None:
        for stage, sec in seconds.items():
            self.stage_seconds.labels(stage).inc(sec)

    def on_skipped(self, n_events: int) -> None:
        self.events_skipped.inc(n_events)

    def on_recommendations(self, n: int, latencies_s: Sequence[float]) -> None:
        self.recommendations.inc(n)
        for x in latencies_s:
            self.latency.observe(x)

    def on_dead_letter(self, reason_kind: str) -> None:
        self.dead_letters.labels(reason_kind if reason_kind in DLQ_REASONS else "other").inc()

    def on_state_bytes(self, store: str, n_bytes: int) -> None:
        self.state_bytes.labels(store).set(n_bytes)

    def on_state_memory(self, kind: str, n_bytes: int) -> None:
        self.state_memory.labels(kind).set(n_bytes)

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def on_catalog(self, n_items: int, n_encoded: int, encode_seconds: float) -> None:
        self.catalog_items.set(n_items)
        if n_encoded:
            self.texts_encoded.inc(n_encoded)
            self.encode_duration.observe(encode_seconds)

    def on_learning(self, steps: int, loss: float | None, examples_waiting: int) -> None:
        if steps:
            self.online_steps.inc(steps)
        if loss is not None:
            self.online_loss.set(loss)
        self.online_waiting.set(examples_waiting)

    def on_online_error(self) -> None:
        self.online_errors.inc()

    def on_kafka_error(self, kind: str) -> None:
        self.kafka_errors.labels(kind if kind in KAFKA_ERROR_KINDS else "other").inc()

    def on_broker(self, reachable: bool) -> None:
        self.broker_up.set(1 if reachable else 0)
        if not reachable:  # the lag cannot be known until the broker answers again
            for metric in self.lag.collect():
                for sample in metric.samples:
                    self.lag.labels(**sample.labels).set(float("nan"))

    def on_users_removed(self, reason: str, n: int) -> None:
        self.users_removed.labels(reason).inc(n)

    def on_item_staleness(self, seconds: float) -> None:
        self.item_staleness.observe(seconds)

    def on_model(self, version: str) -> None:
        self.set_model(version)

    def on_restore(self, partition: int, n_records: int, seconds: float) -> None:
        self.restored_records.inc(n_records)
        self.restore_seconds.observe(seconds)

    def on_quality(self, q: QualitySnapshot) -> None:
        self.live_judged.set(q.judged)
        self.live_recall.set(q.recall)
        self.live_mrr.set(q.mrr)
        self.live_coverage.set(q.coverage)
        self.live_ild.set(q.intra_list_distance)
        self.live_gini.set(q.exposure_gini)

    def on_drifts(self, n: int) -> None:
        self.drifts.inc(n)

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
