"""The pipeline: one micro-batch through the engine's stages, in one order, for the Kafka worker, the
offline evaluator and the bench.

:meth:`Pipeline.fold` runs

1. the user stage (engine/fold/users.py): read state, advance memories, top-k with reasons;
2. ``emit(recommendations)``, the caller's output (the worker produces them to Kafka, so the
   broker's acknowledgement arrives while the item stage runs);
3. the item stage (engine/fold/items.py): the user side of each event into the item memories,
   and the candidate index's refresh of the items it changed (engine/fold/candidates.py);

and :meth:`Pipeline.commit`, once the caller has made its output durable,

4. writes the users' and the items' state of the batch in one atomic write;
5. takes an online-learning step on the batch's examples (score first, then learn).

A failure inside a stage raises :class:`StageFailed` and changes no state, so the caller may fold
the batch again (the worker bisects it to find the records responsible). :class:`NoopPipeline` has
the same interface with no state and no model, for measuring what surrounds the engine.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ContextManager

import numpy as np

from engine.fold.items import ItemStage, ItemUpdates
from engine.fold.online import OnlineLearner
from engine.fold.users import FoldResult, RoundObserver, SourcedEvent, UserStage
from engine.hooks import FoldHooks, NullHooks, StageClock
from schemas import Recommendation, ScoredItem, SourceRef

__all__ = ["BatchOutcome", "NoopPipeline", "Pipeline", "StageFailed"]

logger = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A stage of the engine failed on a batch (the cause is chained); no state was changed."""


@dataclass
class BatchOutcome:
    """What one batch produced: the user stage's result and the item rows the item stage changed."""

    user: FoldResult
    changed_items: list[int] = field(default_factory=list)

    @property
    def recommendations(self) -> list[Recommendation]:
        return self.user.recommendations

    @property
    def n_folded(self) -> int:
        return self.user.n_folded

    @property
    def n_skipped(self) -> int:
        return self.user.n_skipped


def _no_step(point: str) -> None:
    pass


class Pipeline:
    """The user stage, the item stage and the online learner, run in order on each batch.

    ``lock`` is held while a stage reads or changes the model and the item table (web requests read
    them from other threads); ``hooks`` observe learning; ``step(point)`` is called after each step
    (named ``folded``, ``produced``, ``item_stage``, ``state_written``, ``learning``), where the
    worker's fault-injection tests stop the process."""

    def __init__(
        self,
        users: UserStage,
        items: ItemStage,
        learner: OnlineLearner | None = None,
        *,
        lock: ContextManager[object] | None = None,
        hooks: FoldHooks | None = None,
        step: Callable[[str], None] = _no_step,
    ) -> None:
        self.users = users
        self.items = items
        self.learner = learner
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.hooks = hooks or NullHooks()
        self.step = step

    def fold(
        self,
        events: Sequence[SourcedEvent],
        *,
        emit: Callable[[list[Recommendation]], None] | None = None,
        observer: RoundObserver | None = None,
        clock: StageClock | None = None,
    ) -> BatchOutcome:
        """Steps 1–3 on ``events``; ``observer`` sees each round of the user stage."""
        clock = clock or StageClock()
        rate = self.learner.cfg.example_rate if self.learner is not None else 0.0
        with self.lock:
            clock.lap("lock")
            try:
                user = self.users.fold(events, observer, example_rate=rate)
            except Exception as exc:
                raise StageFailed(f"user stage: {type(exc).__name__}: {exc}") from exc
        clock.absorb("user_stage", user.stage_seconds)
        self.step("folded")
        if user.item_updates is None:  # every event was folded before
            return BatchOutcome(user)
        if emit is not None:
            emit(user.recommendations)
            clock.lap("produce")
            self.step("produced")
        changed = self._fold_items(user.item_updates)
        clock.lap("item_stage")
        self.step("item_stage")
        return BatchOutcome(user, changed)

    def _fold_items(self, updates: ItemUpdates) -> list[int]:
        with self.lock:
            try:
                changed = self.items.fold(updates)
            except Exception as exc:
                raise StageFailed(f"item stage: {type(exc).__name__}: {exc}") from exc
            # the batch's items (memory and popularity) and any new ones, for the next batch's candidates
            self.users.refresh_index(np.union1d(changed, updates.rows))
        return changed

    def commit(self, outcome: BatchOutcome, clock: StageClock | None = None) -> None:
        """Steps 4–5: the batch's state in one atomic write, then learning from it."""
        clock = clock or StageClock()
        if outcome.user.item_updates is None:
            return
        self.users.commit(outcome.user, self.items)
        clock.lap("state_write")
        self.step("state_written")
        self._learn(outcome.user)
        clock.lap("learn")

    def _learn(self, result: FoldResult) -> None:
        learner = self.learner
        if learner is None:
            return
        steps, dropped = learner.steps, learner.dropped
        with self.lock:
            try:
                loss = learner.learn(result.examples)
            except Exception:  # best effort: a failed step is dropped, the stream goes on
                logger.exception("online learning failed; the step is dropped")
                learner.dropped += 1
                loss = None
        for _ in range(learner.dropped - dropped):
            self.hooks.on_online_error()
        self.hooks.on_learning(learner.steps - steps, loss, learner.examples_waiting)
        if learner.in_flight:
            self.step("learning")

    def close(self) -> None:
        """Let a learning step in flight land in the model."""
        if self.learner is not None:
            with self.lock:
                self.learner.drain()


class NoopPipeline(Pipeline):
    """The pipeline's interface with no state and no model: one fixed recommendation of ``top_k``
    items per user per batch, so what surrounds the engine (decode, produce, flush, commit) is all
    that is measured."""

    def __init__(self, model_version: str, input_topic: str, top_k: int) -> None:
        self.model_version = model_version
        self.input_topic = input_topic
        self.fixed = tuple(ScoredItem(f"i{k}", 1.0, "noop") for k in range(top_k))
        self.learner = None
        self.step = _no_step

    def fold(
        self,
        events: Sequence[SourcedEvent],
        *,
        emit: Callable[[list[Recommendation]], None] | None = None,
        observer: RoundObserver | None = None,
        clock: StageClock | None = None,
    ) -> BatchOutcome:
        start = time.perf_counter()
        last = {e.event.user_id: e for e in events}
        first: dict[str, int] = {}
        for e in events:
            first.setdefault(e.event.user_id, e.offset)
        now = time.time()
        recs = [
            Recommendation(
                u, self.fixed, self.model_version,
                SourceRef(self.input_topic, e.partition, e.offset, e.event.timestamp, first[u]), now,
            )
            for u, e in last.items()
        ]
        user = FoldResult(recs, [e.arrival for e in last.values()], None, {}, len(events), 0,
                          time.perf_counter() - start)
        if emit is not None:
            emit(recs)
        return BatchOutcome(user)

    def commit(self, outcome: BatchOutcome, clock: StageClock | None = None) -> None:
        pass

    def close(self) -> None:
        pass
