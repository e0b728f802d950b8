"""The hot path: a confluent-kafka consume → decode → fold → produce loop around the engine.

Per micro-batch (whatever has arrived, up to ``batch_max_events`` records: see :func:`next_batch`):
decode and validate every record (invalid ones go to the DLQ with the reason), fold the valid ones
through the user stage, produce one recommendation per user, run the item stage (and produce the
changed item vectors) while the broker acknowledges them, wait for the acknowledgement, write user
state, then commit the input offsets. A crash at any point
replays uncommitted input; the per-user last-applied offset in state and the item stage's
watermarks keep every event folded exactly once, and recommendations are delivered at least once.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine.fold import SourcedEvent
from engine.hooks import FoldHooks, NullHooks, StageClock
from schemas import DeadLetter, ItemVector, SchemaError, decode_interaction
from streams.catalog import CatalogStage
from streams.config import Settings
from streams.runtime import Engine

__all__ = ["Worker", "WorkerStats", "next_batch"]

logger = logging.getLogger(__name__)


def next_batch(consumer: Consumer, max_events: int, idle_timeout: float) -> list[Message]:
    """The records that have arrived, up to ``max_events``, without waiting for more: a batch is
    what came in while the last one was folded (small under light load, full under a backlog).
    When nothing has arrived, block up to ``idle_timeout`` seconds for the first record.

    ``Consumer.consume(n, timeout)`` alone would wait the whole timeout unless ``n`` records
    arrive, adding it to every event's latency at light load."""
    msgs = consumer.consume(num_messages=max_events, timeout=0)
    if msgs:
        return msgs
    first = consumer.poll(idle_timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_events - 1, timeout=0)] if max_events > 1 else [first]


@dataclass
class WorkerStats:
    consumed: int = 0
    folded: int = 0
    skipped: int = 0
    dead_letters: int = 0
    recommendations: int = 0
    batches: int = 0
    busy_seconds: float = 0.0


class Worker:
    """Runs the engine on a Kafka consumer group until ``stop()``."""

    def __init__(self, settings: Settings, engine: Engine, hooks: FoldHooks | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.hooks = hooks or NullHooks()
        self.topics = settings.topics
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once partitions are assigned
        self._consumer = Consumer(settings.consumer_conf())
        self._producer = Producer(settings.producer_conf())
        self._delivery_errors: list[str] = []
        self._changed_items: set[int] = set()
        self._last_publish = 0.0
        self.catalog: CatalogStage | None = (
            CatalogStage(settings, engine, self._dead_letter, self.hooks) if settings.catalog_stage else None
        )

    def stop(self) -> None:
        self._stop.set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("assigned %s", [(p.topic, p.partition) for p in partitions])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("revoked %s", [(p.topic, p.partition) for p in partitions])

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def run(self) -> WorkerStats:
        s = self.settings
        # A batch allocates a few hundred thousand short-lived objects (events, recommendations);
        # with the default thresholds the cyclic GC rescans the model and caches many times a batch.
        # Freeze what start-up built and collect the young generation less often.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 20, 20)
        if self.catalog is not None:
            self.catalog.start()
        self._consumer.subscribe([self.topics.interactions], on_assign=self._on_assign, on_revoke=self._on_revoke)
        idle_timeout = s.poll_timeout_ms / 1000
        last_gauge = 0.0
        clean = False
        try:
            while not self._stop.is_set():
                clock = StageClock()
                msgs = next_batch(self._consumer, s.batch_max_events, idle_timeout)
                clock.lap("consume")  # with, when idle, the wait for input
                if msgs:
                    self._process(msgs, clock)
                now = time.monotonic()
                if now - last_gauge > 5:
                    last_gauge = now
                    self._report_gauges()
            clean = True
        finally:
            self._close(commit=clean)
            gc.unfreeze()  # let what this worker built be collected once it is done
            gc.set_threshold(*thresholds)
        return self.stats

    def _process(self, msgs: list[Message], clock: StageClock) -> None:
        t0 = time.perf_counter()
        events: list[SourcedEvent] = []
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consume error: %s", err)
                continue
            offsets[(m.topic(), m.partition())] = m.offset()
            try:
                ev = decode_interaction(m.value())
            except SchemaError as exc:
                self._dead_letter(m, exc.kind, str(exc))
                continue
            _, ts_ms = m.timestamp()
            events.append(SourcedEvent(ev, m.partition(), m.offset(), ts_ms / 1000 if ts_ms > 0 else time.time()))
        self.stats.consumed += len(msgs)
        self.hooks.on_consumed(self.topics.interactions, len(msgs))
        clock.lap("decode")
        if events:
            self._fold(events, clock)
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # Nothing is committed: the batch replays, and state dedupe keeps the fold exactly-once.
            raise KafkaException(f"produce failed: {errors[:3]}")
        if offsets:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()], asynchronous=True
            )
        self.stats.batches += 1
        self.stats.busy_seconds += time.perf_counter() - t0
        clock.lap("commit_offsets")
        self.hooks.on_stages(clock.seconds)

    def _fold(self, events: list[SourcedEvent], clock: StageClock) -> None:
        with self.engine.lock:
            clock.lap("lock")  # waiting for a web request that reads the model
            self._fold_locked(events, clock)

    def _fold_locked(self, events: list[SourcedEvent], clock: StageClock) -> None:
        eng = self.engine
        result = eng.users.fold(events, example_rate=eng.learner.cfg.example_rate if eng.learner else 0.0)
        clock.absorb("user_stage", result.stage_seconds)
        self.stats.skipped += result.n_skipped
        if result.n_skipped:
            self.hooks.on_skipped(result.n_skipped)
        if result.item_updates is None:
            return
        # The recommendations go out first: the broker's acknowledgement then arrives while the item
        # stage runs, instead of after it.
        produce = self._producer.produce
        rec_topic = self.topics.recommendations
        for rec in result.recommendations:
            produce(rec_topic, rec.to_json(), rec.user_id.encode("utf-8"), on_delivery=self._on_delivery)
        clock.lap("produce")
        changed = eng.items.fold(result.item_updates)
        clock.lap("item_stage")
        if self.settings.publish_item_vectors:
            self._changed_items.update(changed)
            self._publish_item_vectors()
            clock.lap("produce")
        self._producer.flush()
        clock.lap("flush")
        eng.users.commit(result)
        clock.lap("state_write")
        now = time.time()
        if eng.learner is not None:
            steps = eng.learner.steps
            loss = eng.learner.learn(result.examples)  # the batch's recommendations are out
            self.hooks.on_learning(eng.learner.steps - steps, loss, eng.learner.examples_waiting)
        clock.lap("learn")
        self.stats.folded += result.n_folded
        self.stats.recommendations += len(result.recommendations)
        self.hooks.on_batch(result.n_folded, result.fold_seconds)
        self.hooks.on_recommendations(len(result.recommendations), [now - a for a in result.arrivals])

    def _publish_item_vectors(self, force: bool = False) -> None:
        """Publish the item vectors changed since the last publication, at most once per interval."""
        now = time.monotonic()
        if not self._changed_items or (not force and now - self._last_publish < self.settings.item_vector_interval_ms / 1000):
            return
        self._last_publish = now
        table = self.engine.items.table
        rows = sorted(self._changed_items)
        self._changed_items.clear()
        version = self.engine.users.model_version
        stamp = time.time()
        for r, v in zip(rows, table.vectors()[rows].cpu().tolist()):
            iv = ItemVector(table.ids[r], tuple(v), stamp, version)
            self._producer.produce(
                self.topics.item_vectors, iv.to_json(), table.ids[r].encode("utf-8"), on_delivery=self._on_delivery
            )

    def _dead_letter(self, m: Message, kind: str, error: str) -> None:
        dl = DeadLetter(
            original=m.value() or b"",
            original_key=m.key(),
            error=error,
            error_kind=kind,
            topic=m.topic(),
            partition=m.partition(),
            offset=m.offset(),
            failed_at=time.time(),
        )
        self._producer.produce(self.topics.dlq, dl.to_json(), m.key(), on_delivery=self._on_delivery)
        self.stats.dead_letters += 1
        self.hooks.on_dead_letter(kind)
        logger.warning(
            "dead letter #%d %s[%d]@%d (%s): %s", self.stats.dead_letters, m.topic(), m.partition(), m.offset(), kind, error
        )

    def _report_gauges(self) -> None:
        store = self.engine.store
        self.hooks.on_state_bytes("users", store.approximate_bytes("users-"))
        self.hooks.on_state_bytes("items", store.approximate_bytes("items"))
        try:
            for tp in self._consumer.assignment():
                _, high = self._consumer.get_watermark_offsets(tp, timeout=0.5, cached=True)
                pos = self._consumer.position([tp])[0].offset
                if pos >= 0 and high >= 0:
                    self.hooks.on_lag(tp.topic, tp.partition, max(0, high - pos))
        except KafkaException as exc:
            logger.debug("lag gauge: %s", exc)

    def _close(self, commit: bool) -> None:
        if self.catalog is not None:
            self.catalog.stop()
        if self.engine.learner is not None:
            with self.engine.lock:
                self.engine.learner.drain()  # the step in flight lands in the model the web reads
        try:
            if self.settings.publish_item_vectors:
                self._publish_item_vectors(force=True)
            self._producer.flush(10)
            if commit and self._consumer.assignment():
                self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            logger.info("final commit: %s", exc)
        self._consumer.close()
        logger.info(
            "worker stopped: consumed %d, folded %d, skipped %d, dead letters %d, recommendations %d",
            self.stats.consumed, self.stats.folded, self.stats.skipped, self.stats.dead_letters,
            self.stats.recommendations,
        )
