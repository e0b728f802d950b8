"""The hot path: a confluent-kafka consume → decode → fold → produce loop around the engine.

Per micro-batch (whatever has arrived, up to ``batch_max_events`` records: see :func:`next_batch`):

1. decode and validate every record against the schema and the input bounds (docs/input.md); an
   invalid one goes to the DLQ with the reason, its original bytes (cut at 16 KiB) and its offset;
2. fold the valid ones through the user stage and produce one recommendation per user;
3. run the item stage while the broker acknowledges them, and publish changed item vectors;
4. produce the users' new state to their changelog (streams/changelog.py) and write it, with the
   item state, to the local store; apply deletion requests;
5. commit the batch's Kafka transaction: its recommendations, dead letters, changelog records and
   input offsets become visible together, or not at all.

A crash at any point replays uncommitted input; the per-user last-applied offset in state and the
item stage's watermarks keep every event folded exactly once, and a batch folded into the local store
whose transaction never committed has its users' state and recommendations published again when the
partition is next assigned (a duplicate names the same source offset).

Partitions move between workers with the cooperative-sticky assignor: a rebalance moves only the
partitions that must move. A newly assigned partition is restored from the changelog before its
input is read (only the tail, when the local store has a checkpoint); a revoked one is released
between batches, after the last batch's transaction has committed.

No record can stop the worker: if the fold fails on a batch, the batch is folded again in halves,
and so on down to single records, so that the records responsible are dead-lettered (``fold_error``,
with the exception) and every other record is folded. Faults that no record causes stop it with a
non-zero exit and the reason: a broker unreachable for ``broker_timeout_s`` or without the input
topic (streams/liveness.py), a failed produce or state write, or the fold failing on
:data:`FOLD_FAILURES_BEFORE_STOP` records in a row (the engine, not the records, is broken).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from engine.fold.items import ItemStage
from engine.fold.online import OnlineLearner
from engine.fold.users import SourcedEvent, user_partition_name
from engine.hooks import FoldHooks, NullHooks, StageClock
from engine.pipeline import Pipeline, StageFailed
from engine.state.codec import decode_user
from engine.state.retention import ExpirySweep, erase_users, present_users
from engine.state.store import _Batch, new_transaction
from schemas import (
    DeadLetter,
    ItemVector,
    Recommendation,
    SchemaError,
    SourceRef,
    check_key,
    decode_interaction,
    user_of_key,
)
from streams.catalog_stage import CatalogStage
from streams.changelog import UserChangelog
from streams.config import Settings
from streams.faults import crash_point
from streams.item_stage import ItemStageRunner, ItemStateFollower, ItemUpdateSink
from streams.learner import ExampleSink, FleetLearner, ModelFollower
from streams.liveness import BrokerUnavailable, BrokerWatch, OncePerInterval, kafka_logger
from streams.member import TRANSACTION_TIMEOUT_MS
from streams.memory import return_free_memory
from streams.monitor import LiveMonitor
from streams.runtime import Engine, online_config, resolve_checkpoint

__all__ = ["FOLD_FAILURES_BEFORE_STOP", "IDLE_WAIT_S", "EngineFault", "Worker", "WorkerStats", "next_batch"]

logger = logging.getLogger(__name__)
# one line per bad record would let a flood of bad input flood the log: these lines are rate-limited
record_log = logging.getLogger(f"{__name__}.records")
record_log.addFilter(OncePerInterval(interval_s=10.0))

#: The fold failing on this many single records in a row means the engine is broken, not the input.
FOLD_FAILURES_BEFORE_STOP = 50
SWEEP_INTERVAL_S = 1.0  # expiry of idle users: a bounded slice of the state at most this often
TRIM_INTERVAL_S = 60.0  # freed heap memory goes back to the operating system this often (streams/memory.py)
STALLED_BATCH_S = 30.0  # /health reports a batch in progress for longer as a stall
IDLE_WAIT_S = 0.1  # an idle worker's wait for input (a batch never waits for more)
ITEM_VECTOR_INTERVAL_S = 1.0  # changed item vectors are published at most this often


class EngineFault(RuntimeError):
    """The fold fails whatever the input: stop, and say so."""


class _RecordFault(Exception):
    """The engine failed on a batch; a record in it may be the cause."""


class _Stopping(Exception):
    """Asked to stop while waiting for a broker that does not answer: leave the batch uncommitted."""


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
    users_deleted: int = 0
    users_expired: int = 0


class Worker:
    """Runs the engine on a Kafka consumer group until ``stop()``."""

    def __init__(
        self, settings: Settings, engine: Engine, hooks: FoldHooks | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.hooks = hooks or NullHooks()
        self.follower: ItemStateFollower | None = None
        self.item_stage: ItemStageRunner | None = None
        self.model_follower: ModelFollower | None = None
        self.model_switched_at = 0.0  # monotonic time of the last switch to a fleet version
        self.fleet_learner: FleetLearner | None = None
        self.pipeline = pipeline or Pipeline(
            engine.users, self._item_side(), self._learner(), lock=engine.lock, hooks=self.hooks,
            step=crash_point,
        )
        self.topics = settings.topics
        self.limits = settings.limits()
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set while partitions are assigned
        self._meta = engine.store.partition("worker")  # the worker's own bookkeeping
        topic_key = b"topic-id/" + self.topics.interactions.encode("utf-8")
        known = self._meta.get(topic_key)
        self.watch = BrokerWatch(
            self.topics.interactions, settings.broker_timeout_s, self.hooks.on_kafka_error,
            self.hooks.on_broker,
            topic_id=known.decode("utf-8") if known is not None else None,
            on_topic_id=lambda tid: self._meta.write(_put(topic_key, tid.encode("utf-8"))),
        )
        clients = {"error_cb": self.watch.on_error, "logger": kafka_logger()}
        self._consumer = Consumer(settings.consumer_conf(**clients))
        # Deletion requests: `tide forget` writes one to every partition of the deletions topic, and
        # the owner of input partition p reads deletions partition p (assigned with it), so the worker
        # holding a user's state sees each request once, and the next owner resumes where it stopped.
        self._deletions = Consumer(settings.consumer_conf(f"{settings.group_id}-deletions", **clients))
        self._producer = Producer(settings.producer_conf(
            **clients, **{"transactional.id": settings.transactional_id(),
                          "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}
        ))
        self._in_transaction = False
        self._after_commit: list[Callable[[], None]] = []  # local effects of the open transaction
        self.changelog = UserChangelog(settings, engine.store, self._produce)
        self.monitor = LiveMonitor(settings, lambda: engine.users.table, self.hooks, self._produce)
        engine.users.measure_drift = self.monitor.drift.enabled
        self.owned: set[int] = set()  # input partitions assigned and restored
        self._admin = AdminClient(settings.librdkafka(**clients))
        self._delivery_errors: list[str] = []
        self._changed_items: set[int] = set()
        self._last_publish = 0.0
        self._messages: dict[tuple[int, int], Message] = {}  # the batch's records by (partition, offset)
        self._new_items: set[str] = set()  # unknown items accepted in this batch
        self._fold_failures = 0  # single records the fold failed on, in a row
        self._expiry = ExpirySweep(engine.store, settings.user_ttl_s)
        self._last_sweep = 0.0
        self.batch_started: float | None = None  # monotonic start of the batch in progress
        self._joining_since: float | None = None  # monotonic time the group (re)join began
        self.last_batch_done = time.monotonic()
        self.error: str | None = None  # why run() stopped, if it failed
        self.catalog: CatalogStage | None = None
        if settings.catalog_stage:
            # the catalogue's thread dead-letters outside the hot path's transactions
            side = Producer(settings.producer_conf(**clients))
            self.catalog = CatalogStage(
                settings, engine, lambda m, kind, error: self._dead_letter(m, kind, error, side), self.hooks
            )

    def _item_side(self) -> ItemStage:
        """The engine's own item stage, or with ``TIDE_ITEM_STAGE=shared`` the fleet's
        (streams/item_stage.py): updates sent to it, its state read back, a member of its group here."""
        settings, engine = self.settings, self.engine
        if settings.item_stage != "shared":
            return engine.items
        self.follower = ItemStateFollower(settings, engine.items, engine.lock, self.hooks.on_item_staleness)
        self.item_stage = ItemStageRunner(
            settings, resolve_checkpoint(settings), engine.device, settings.transactional_id()
        )
        return ItemUpdateSink(
            engine.users.model, engine.items.table, settings.topics.item_updates,
            lambda topic, value, key: self._produce(topic, value, key),
        )

    def _learner(self) -> OnlineLearner | None:
        """The engine's own online learner, or with ``TIDE_LEARNER=fleet`` the fleet's
        (streams/learner.py): examples sent to it, its versions read back, a member of its group here."""
        settings, engine = self.settings, self.engine
        if settings.learner != "fleet":
            return engine.learner
        self.model_follower = ModelFollower(
            settings, engine.users.model, engine.items.table, engine.lock, self._switch_model
        )
        self.fleet_learner = FleetLearner(
            settings, resolve_checkpoint(settings), engine.device, settings.transactional_id()
        )
        return ExampleSink(
            engine.users.model, engine.items.table, online_config(settings), settings.topics.examples,
            lambda topic, value, key: self._produce(topic, value, key),
        )

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports: ``ok``, ``degraded`` (the broker does not answer, or a batch has
        been in progress for over :data:`STALLED_BATCH_S`) or ``failed`` (the hot path stopped)."""
        now = time.monotonic()
        started = self.batch_started
        in_batch = now - started if started is not None else 0.0
        if self.error is not None:
            status = "failed"
        elif not self.watch.reachable or in_batch > STALLED_BATCH_S:
            status = "degraded"
        else:
            status = "ok"
        s = self.stats
        return {
            "status": status,
            "assigned": self.ready.is_set(),
            "broker": self.watch.health(),
            "hot_path": {
                "error": self.error,
                "in_batch_s": round(in_batch, 1),
                "since_last_batch_s": round(now - self.last_batch_done, 1),
            },
            "consumed": s.consumed,
            "folded": s.folded,
            "skipped": s.skipped,
            "dead_letters": s.dead_letters,
            "recommendations": s.recommendations,
            "users_deleted": s.users_deleted,
            "users_expired": s.users_expired,
        }

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called between batches: restore each newly assigned input partition from the changelog
        before its input is read (consuming starts once this returns)."""
        logger.info("assigned %s", [(p.topic, p.partition) for p in partitions])
        if not partitions:  # a cooperative rebalance that adds nothing here
            return
        mine = [tp.partition for tp in partitions if tp.topic == self.topics.interactions]
        if mine:
            self.watch.check(self._admin, force=True)  # a recreated or lost input topic: stop here
            committed = self._committed(consumer, mine)
            for p in mine:
                self._restore(p, committed[p])
            with self.engine.lock:  # a large catalogue's candidate index, built before serving
                self.engine.users.uses_index()
            self._deletions.incremental_assign([TopicPartition(self.topics.user_deletions, p) for p in mine])
            self._warn_partial_item_side(consumer)
        self._joining_since = None
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called between batches, after the last one's transaction committed: release the partitions
        (their local state stays as a checkpoint, should they come back)."""
        logger.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        for tp in partitions:
            if tp.topic == self.topics.interactions:
                self.owned.discard(tp.partition)
                self._expiry.release(tp.partition)
                self._deletions.incremental_unassign(
                    [TopicPartition(self.topics.user_deletions, tp.partition)]
                )
        if not self.owned:
            self._joining_since = time.monotonic()
            self.ready.clear()  # /health says "assigned": false until the next assignment

    def _warn_partial_item_side(self, consumer: Consumer) -> None:
        """With the local item stage, a worker that holds only some input partitions folds only their
        events into its item side: say so, rather than let its item table silently diverge."""
        if self.settings.item_stage != "local":
            return
        topic = self.topics.interactions
        n = len(consumer.list_topics(topic, timeout=self.settings.wait_s()).topics[topic].partitions)
        if len(self.owned) < n:
            logger.warning(
                "this worker holds %d of %d input partitions with TIDE_ITEM_STAGE=local: its item memories,"
                " transitions and popularity see only their events; with several workers set"
                " TIDE_ITEM_STAGE=shared (docs/architecture.md)", len(self.owned), n,
            )

    def _committed(self, consumer: Consumer, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset of each input partition: the next event to fold (the start of
        the partition when none is committed)."""
        topic = self.topics.interactions
        out = {}
        asked = [TopicPartition(topic, p) for p in partitions]
        for tp in consumer.committed(asked, timeout=self.settings.wait_s()):
            offset = tp.offset
            if offset < 0:
                offset = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=self.settings.wait_s(), cached=False
                )[0]
            out[tp.partition] = offset
        return out

    def _restore(self, p: int, committed: int) -> None:
        r = self.changelog.restore(p, committed, self.settings.wait_s())
        ahead = self.changelog.ahead(p, committed)
        if ahead:
            self._publish_again(p, ahead)
        self.owned.add(p)
        self.hooks.on_restore(p, r.records, r.seconds)
        logger.info(
            "restored partition %d from %s in %.2f s: %d records read, %d applied (%s); %d users published"
            " again", p, self.topics.user_state, r.seconds, r.records, r.applied,
            "from the start" if r.full else "the tail after the local checkpoint", len(ahead),
        )

    def _publish_again(self, p: int, users: list[tuple[bytes, bytes]]) -> None:
        """The users folded here by a batch whose transaction never committed: their state and a
        recommendation (for their state's last event, naming its source) in a transaction of their own."""
        stage = self.engine.users
        now = time.time()
        for key, value in users:
            st = decode_user(value)
            with self.engine.lock:
                items = stage.recommend(st, stage.emission_time(st))
            source = SourceRef(self.topics.interactions, p, st.offset, st.last_t, st.offset)
            rec = Recommendation(key.decode("utf-8"), tuple(items), stage.model_version, source, now)
            self._produce(self.topics.recommendations, rec.to_json(), key)
            self._produce(self.topics.user_state, value, key, p)
        self._commit({})

    def _switch_model(self, version: str, steps: int) -> None:
        """The fleet learner's ``version`` is now this worker's model (called under the engine's lock,
        between batches): recommendations from here on name it."""
        self.engine.users.model_version = version
        self.model_switched_at = time.monotonic()
        self.hooks.on_model(version)

    def _check_group(self) -> None:
        """A consumer that cannot (re)join its group does no work and reports no error: past the
        broker timeout, say so and stop (a group coordinator that lost its state, say)."""
        since, limit = self._joining_since, self.settings.broker_timeout_s
        if since is not None and 0 < limit < time.monotonic() - since:
            raise BrokerUnavailable(
                f"the consumer group has not assigned partitions for {time.monotonic() - since:.0f} s "
                f"(TIDE_BROKER_TIMEOUT_S={limit:g}); was the broker restarted or the group reset?"
            )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")
        elif msg.topic() == self.topics.user_state:
            self.changelog.delivered(msg.partition(), msg.offset())

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
        self._joining_since = time.monotonic()
        # fences a former self with the same transactional.id and aborts what it left open
        self._producer.init_transactions(self.settings.wait_s())
        if self.follower is not None and self.item_stage is not None:
            self.follower.catch_up(self.settings.wait_s())  # the fleet's item side, before serving
            self.item_stage.start()
        if self.model_follower is not None and self.fleet_learner is not None:
            self.model_follower.catch_up(self.settings.wait_s())  # the fleet's model version, before serving
            self.fleet_learner.start()
        self._consumer.subscribe(
            [self.topics.interactions],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        last_gauge = last_trim = 0.0
        clean = False
        try:
            while not self._stop.is_set():
                self.watch.check(self._admin)
                self._check_group()
                clock = StageClock()
                if self.follower is not None:
                    self.follower.poll()
                if self.model_follower is not None:
                    self.model_follower.poll()
                msgs = next_batch(self._consumer, s.batch_max_events, IDLE_WAIT_S)
                if self.owned:
                    msgs += self._deletions.consume(num_messages=s.batch_max_events, timeout=0)
                clock.lap("consume")  # with, when idle, the wait for input
                if msgs:
                    self._process(msgs, clock)
                now = time.monotonic()
                if now - self._last_sweep > SWEEP_INTERVAL_S:
                    self._last_sweep = now
                    self._sweep()
                if now - last_gauge > 5:
                    last_gauge = now
                    self._report_gauges()
                if now - last_trim > TRIM_INTERVAL_S:
                    last_trim = now
                    return_free_memory()
            clean = True
        except _Stopping:
            logger.warning(
                "stopped while the broker was unreachable: the last batch is not committed and will replay"
            )
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._close(commit=clean)
            gc.unfreeze()  # let what this worker built be collected once it is done
            gc.set_threshold(*thresholds)
        return self.stats

    # ------------------------------------------------------------------------------------- a batch

    def _process(self, msgs: list[Message], clock: StageClock) -> None:
        t0 = time.perf_counter()
        self.batch_started = time.monotonic()
        events, deletions, offsets = self._decode(msgs)
        self.stats.consumed += len(msgs)
        self.hooks.on_consumed(self.topics.interactions, len(msgs))
        crash_point("decoded")
        clock.lap("decode")
        if events:
            self._fold_isolated(events, clock)
        if deletions:
            self._forget(deletions)
            clock.lap("forget")
        deleted = self.topics.user_deletions
        self._commit({tp: o for tp, o in offsets.items() if tp[0] != deleted})
        done = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items() if t == deleted]
        if done:  # after the erasures they asked for: a request replayed finds nothing more to erase
            self._deletions.commit(offsets=done, asynchronous=False)
        clock.lap("commit")
        crash_point("committed")
        self._messages.clear()
        self.stats.batches += 1
        self.stats.busy_seconds += time.perf_counter() - t0
        self.batch_started = None
        self.last_batch_done = time.monotonic()
        self.hooks.on_stages(clock.seconds)

    def _decode(
        self, msgs: list[Message]
    ) -> tuple[list[SourcedEvent], list[tuple[int, str]], dict[tuple[str, int], int]]:
        """The batch's valid interactions, the users whose deletion it requests, and the last offset
        of each topic partition in it; every invalid record is dead-lettered."""
        interactions, deletions_topic = self.topics.interactions, self.topics.user_deletions
        events: list[SourcedEvent] = []
        deletions: list[tuple[int, str]] = []  # (partition, user)
        offsets: dict[tuple[str, int], int] = {}
        now = time.time()
        self._new_items.clear()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if m.topic() == interactions or err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    self.watch.on_topic_error(err)
                record_log.warning("consume error on %s: %s", m.topic(), err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            offsets[(topic, partition)] = offset
            try:
                if topic == deletions_topic:
                    deletions.append((partition, user_of_key(m.key(), "a deletion request's key")))
                    continue
                ev = decode_interaction(m.value(), self.limits, now)
                check_key(ev, m.key())
                self._check_item(ev.item_id)
            except SchemaError as exc:
                self._dead_letter(m, exc.kind, str(exc))
                continue
            except Exception as exc:
                # the decoder raises nothing else; should it, the record still must not stop us
                record_log.exception("decoding %s[%d]@%d raised", topic, partition, offset)
                self._dead_letter(m, "decode_error", f"{type(exc).__name__}: {exc}")
                continue
            _, ts_ms = m.timestamp()
            events.append(SourcedEvent(ev, partition, offset, ts_ms / 1000 if ts_ms > 0 else now))
            self._messages[(partition, offset)] = m
        return events, deletions, offsets

    def _check_item(self, item_id: str) -> None:
        table = self.engine.items.table
        if item_id in table.index or item_id in self._new_items:
            return
        if self.settings.unknown_items == "dead_letter":
            raise SchemaError("unknown_item", "item_id is not a known item (TIDE_UNKNOWN_ITEMS=dead_letter)")
        if len(table) + len(self._new_items) >= self.settings.max_items:
            raise SchemaError(
                "unknown_item",
                f"the item table is full ({self.settings.max_items:,} items, TIDE_MAX_ITEMS)",
            )
        self._new_items.add(item_id)

    def _fold_isolated(self, events: list[SourcedEvent], clock: StageClock) -> None:
        """Fold ``events``; if the engine fails on them, fold each half the same way, so that only
        the records it fails on alone are dead-lettered (in offset order, so each user's order holds)."""
        try:
            self._fold(events, clock)
            self._fold_failures = 0
            return
        except _RecordFault as fault:
            exc = fault.__cause__ or fault
        if len(events) > 1:
            logger.warning(
                "the fold failed on a batch of %d events (%s); folding it in halves to isolate the records",
                len(events), type(exc).__name__,
            )
            mid = len(events) // 2
            self._fold_isolated(events[:mid], clock)
            self._fold_isolated(events[mid:], clock)
            return
        self._fold_failures += 1
        e = events[0]
        if self._fold_failures >= FOLD_FAILURES_BEFORE_STOP:
            raise EngineFault(
                f"the fold failed on {self._fold_failures} records in a row, the last with "
                f"{type(exc).__name__}: {exc}; the engine is failing, not the input"
            ) from exc
        record_log.error("the fold failed on %s[%d]@%d alone: dead-lettered", self.topics.interactions,
                         e.partition, e.offset, exc_info=exc)
        self._dead_letter(
            self._messages[(e.partition, e.offset)], "fold_error", f"{type(exc).__name__}: {exc}"
        )

    def _fold(self, events: list[SourcedEvent], clock: StageClock) -> None:
        """The batch through the pipeline: its recommendations are produced as soon as the user stage
        has them, its users' state goes to the changelog and, with the item state, to the local store
        (the transaction commits at the end of the batch)."""
        try:
            outcome = self.pipeline.fold(events, emit=self._produce_recommendations, clock=clock)
        except StageFailed as exc:
            raise _RecordFault from exc.__cause__
        self.stats.skipped += outcome.n_skipped
        if outcome.n_skipped:
            self.hooks.on_skipped(outcome.n_skipped)
        if not outcome.n_folded:
            return
        if self.settings.publish_item_vectors:
            self._changed_items.update(outcome.changed_items)
            self._publish_item_vectors()
            clock.lap("produce")
        self.changelog.record(outcome.user.writes)
        clock.lap("changelog")
        self._after_commit.append(self.monitor.after_batch(events, outcome.user))
        clock.lap("monitor")
        crash_point("changelog")
        self.pipeline.commit(outcome, clock)
        for e in events:
            self._expiry.observe(e.partition, e.event.timestamp)
        result = outcome.user
        self.stats.folded += result.n_folded
        self.stats.recommendations += len(result.recommendations)
        self.hooks.on_batch(result.n_folded, result.fold_seconds)
        now = time.time()
        self.hooks.on_recommendations(len(result.recommendations), [now - a for a in result.arrivals])

    def _produce_recommendations(self, recs: list[Recommendation]) -> None:
        topic = self.topics.recommendations
        for rec in recs:
            self._produce(topic, rec.to_json(), rec.user_id.encode("utf-8"))

    def _forget(self, requests: list[tuple[int, str]]) -> None:
        """Erase the users named by deletion requests (read from deletions partition p: the users of
        input partition p) and tell downstream: a tombstone (null value) keyed by the user on the
        recommendations topic and on the changelog. Copies left here by a partition that moved away
        are erased too. The local erasure follows the transaction's commit (were it lost, the request
        replays and finds the users again)."""
        users = list(dict.fromkeys(u for _, u in requests))
        self.monitor.forget(users)
        asked = {(user_partition_name(p), u.encode("utf-8")) for p, u in requests}
        present = present_users(self.engine.store, users)
        found: set[bytes] = set()
        for name, keys in present.items():
            p = int(name.rsplit("-", 1)[1])
            if p not in self.owned:
                continue
            mine = [k for k in keys if (name, k) in asked]
            present[name] = mine
            self.changelog.tombstones(p, mine)
            found.update(mine)
        for key in found:
            self._produce(self.topics.recommendations, None, key)
        def erase() -> None:
            erase_users(self.engine.store, present)
            self.stats.users_deleted += len(found)  # counted once gone from this worker's store

        self._after_commit.append(erase)
        self.hooks.on_users_removed("deleted", len(found))
        logger.info("deletion requests for %d users; %d had state on this worker and are erased",
                    len(users), len(found))

    def _sweep(self) -> None:
        expired = self._expiry.expired()
        if not expired:
            return
        for p, keys in expired.items():
            self.changelog.tombstones(p, keys)
            self._after_commit.append(lambda p=p, keys=keys: self._expiry.delete(p, keys))  # type: ignore[misc]
        self._commit({})
        n = sum(len(keys) for keys in expired.values())
        self.stats.users_expired += n
        self.hooks.on_users_removed("expired", n)

    # ------------------------------------------------------------------------------------- Kafka I/O

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int | None = None,
        producer: Producer | None = None,
    ) -> None:
        """Produce a record in the batch's transaction (``producer``: outside any transaction)."""
        if producer is None:
            producer = self._producer
            if not self._in_transaction:
                producer.begin_transaction()
                self._in_transaction = True
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=self._on_delivery, **extra)
                return
            except BufferError:  # the client's queue is full: let the broker drain it
                producer.poll(0.1)
                self.watch.check(self._admin)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the open transaction with the input ``offsets`` (the last folded of each topic
        partition), then apply its local effects; raise :class:`BrokerUnavailable` once the broker
        has not answered for the configured time, or the produce error that failed it."""
        if not self._in_transaction and not offsets:
            return
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        if offsets:
            self._retrying("sending the input offsets", lambda t: self._producer.send_offsets_to_transaction(
                [TopicPartition(tp, p, o + 1) for (tp, p), o in offsets.items()],
                self._consumer.consumer_group_metadata(), t,
            ))
        self._retrying("committing the transaction", self._producer.commit_transaction)
        self._in_transaction = False
        if self._delivery_errors:  # a transaction with a failed produce does not commit; to be sure
            errors, self._delivery_errors = self._delivery_errors, []
            raise KafkaException(f"produce failed: {errors[:3]}")
        for effect in self._after_commit:
            effect()
        self._after_commit.clear()
        self.changelog.checkpoint()

    def _retrying(self, what: str, call: Callable[[float], object]) -> None:
        """``call(timeout)`` until it succeeds, probing the broker meanwhile: a retriable error (a
        timeout, a broker restarting) is tried again until the broker timeout; any other stops the
        worker with the reason. What was not committed replays."""
        started = time.monotonic()
        while True:
            try:
                call(1.0)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable():
                    if self._delivery_errors:
                        raise KafkaException(f"produce failed: {self._delivery_errors[:3]}") from exc
                    raise
            self.watch.check(self._admin)
            if self._stop.is_set() and not self.watch.reachable:
                raise _Stopping
            waited = time.monotonic() - started
            if 0 < self.settings.broker_timeout_s < waited:
                raise BrokerUnavailable(
                    f"{what}: the broker has not answered in {waited:.0f} s "
                    f"(TIDE_BROKER_TIMEOUT_S={self.settings.broker_timeout_s:g}); "
                    f"last error: {self.watch.last_error or 'none'}"
                )

    def _publish_item_vectors(self, force: bool = False) -> None:
        """Publish the item vectors changed since the last publication, at most once per interval."""
        now = time.monotonic()
        if not self._changed_items or (
            not force and now - self._last_publish < ITEM_VECTOR_INTERVAL_S
        ):
            return
        self._last_publish = now
        table = self.engine.items.table
        rows = sorted(self._changed_items)
        self._changed_items.clear()
        version = self.engine.users.model_version
        stamp = time.time()
        for r, v in zip(rows, table.vectors()[rows].cpu().tolist()):
            iv = ItemVector(table.ids[r], tuple(v), stamp, version)
            self._produce(self.topics.item_vectors, iv.to_json(), table.ids[r].encode("utf-8"))

    def _dead_letter(self, m: Message, kind: str, error: str, producer: Producer | None = None) -> None:
        key = m.key()
        dl = DeadLetter(
            original=m.value() or b"",
            original_key=key,
            error=error,
            error_kind=kind,
            topic=m.topic(),
            partition=m.partition(),
            offset=m.offset(),
            failed_at=time.time(),
        )
        # the DLQ record is keyed by the original key, cut to an id's length (a key can be huge too)
        self._produce(self.topics.dlq, dl.to_json(), None if key is None else key[:255], producer=producer)
        self.stats.dead_letters += 1
        self.hooks.on_dead_letter(kind)
        # where and why, never the payload (nor ids, which could carry anything a producer wrote)
        record_log.warning("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), kind)

    def _report_gauges(self) -> None:
        self.monitor.report()
        store = self.engine.store
        self.hooks.on_state_bytes("users", store.approximate_bytes("users-"))
        self.hooks.on_state_bytes("items", store.approximate_bytes("items"))
        for kind, n_bytes in store.memory_bytes().items():
            self.hooks.on_state_memory(kind, n_bytes)
        if not self.watch.reachable:
            return  # the lag is unknown (streams/metrics.py shows it as NaN meanwhile)
        try:
            for tp in self._consumer.assignment():
                if tp.topic != self.topics.interactions:
                    continue
                _, high = self._consumer.get_watermark_offsets(tp, timeout=0.5, cached=True)
                pos = self._consumer.position([tp])[0].offset
                if pos >= 0 and high >= 0:
                    self.hooks.on_lag(tp.topic, tp.partition, max(0, high - pos))
        except KafkaException as exc:
            logger.debug("lag gauge: %s", exc)

    def _close(self, commit: bool) -> None:
        if self.catalog is not None:
            self.catalog.stop()
        if self.item_stage is not None:
            self.item_stage.stop()
        if self.follower is not None:
            self.follower.close()
        if self.fleet_learner is not None:
            self.fleet_learner.stop()
        if self.model_follower is not None:
            self.model_follower.close()
        self.pipeline.close()  # a learning step in flight lands in the model the web reads
        reachable = self.watch.reachable
        try:
            # a broker that does not answer gets no long goodbye: what is not committed replays
            if commit and reachable:
                if self.settings.publish_item_vectors:
                    self._publish_item_vectors(force=True)
                self._commit({})
            elif self._in_transaction:
                self._producer.abort_transaction(1)
        except (KafkaException, BrokerUnavailable, _Stopping) as exc:
            logger.info("final commit: %s", exc)
        for consumer in (self._consumer, self._deletions):
            try:
                consumer.close()
            except (KafkaException, KafkaError) as exc:  # an assignment a failed rebalance left half done
                logger.info("closing a consumer: %s", exc)
        logger.info(
            "worker stopped: consumed %d, folded %d, skipped %d, dead letters %d, recommendations %d",
            self.stats.consumed, self.stats.folded, self.stats.skipped, self.stats.dead_letters,
            self.stats.recommendations,
        )


def _put(key: bytes, value: bytes) -> _Batch:
    tx = new_transaction()
    tx.put(key, value)
    return tx


