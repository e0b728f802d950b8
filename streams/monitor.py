"""What the worker watches in its own output: live recommendation quality (engine/quality.py) and
interest drift (engine/fold/drift.py), reported through the hooks, drifts also as records on
``tide.interest-drift`` in the batch's transaction.

Both see only this worker's users; each worker's gauges cover its own partitions (the dashboard
averages them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from engine.fold.drift import DriftDetector, DriftFinding, summary_items
from engine.fold.table import ItemTable
from engine.fold.users import FoldResult, SourcedEvent
from engine.hooks import FoldHooks
from engine.quality import LiveQuality, intra_list_distance
from schemas import InterestDrift
from streams.config import Settings

__all__ = ["ILD_SAMPLE", "LiveMonitor"]

ILD_SAMPLE = 64  # recommendations per batch whose intra-list distance is measured


class LiveMonitor:
    def __init__(
        self, settings: Settings, table: Callable[[], ItemTable], hooks: FoldHooks,
        produce: Callable[[str, bytes, bytes], None],
    ) -> None:
        self.topic = settings.topics.interest_drift
        self.quality = LiveQuality(k=min(10, settings.top_k), window=settings.quality_window)
        self.drift = DriftDetector(settings.drift_threshold, settings.drift_min_events)
        self._table = table
        self._hooks = hooks
        self._produce = produce
        self._rng = np.random.default_rng(0)

    def after_batch(self, events: Sequence[SourcedEvent], result: FoldResult) -> Callable[[], None]:
        """Produce the batch's interest drifts (in its transaction), and return what to take in once
        that transaction commits: the batch's events judged against the recommendations live before
        it, its recommendations as the live ones, and the drifts reported (so that a batch whose
        transaction aborts and is folded again is neither judged twice nor loses its drifts)."""
        recs = result.recommendations
        users = [r.user_id for r in recs]
        lists = [[i.item_id for i in r.items] for r in recs]
        ild = self._ild(lists)
        found: list[DriftFinding] = []
        rearmed: list[str] = []
        if result.drift is not None and self.drift.enabled:
            found, rearmed = self.drift.evaluate(users, [st.n_events for st in result.states], result.drift)
        for f in found:
            rec, st = recs[f.index], result.states[f.index]
            before, after = summary_items(st)
            record = InterestDrift(
                f.user_id, st.last_t, f.distance, self.drift.threshold, tuple(before), tuple(after),
                rec.model_version, rec.source,
            )
            self._produce(self.topic, record.to_json(), f.user_id.encode("utf-8"))

        def settle() -> None:
            self.quality.judge([e.event.user_id for e in events], [e.event.item_id for e in events])
            self.quality.record(users, lists, ild)
            self.drift.settle(found, rearmed)
            if found:
                self._hooks.on_drifts(len(found))

        return settle

    def _ild(self, lists: list[list[str]]) -> list[float]:
        """Intra-list distance of up to :data:`ILD_SAMPLE` of the lists, in the table's item vectors."""
        k = self.quality.k
        full = [j for j, items in enumerate(lists) if len(items) >= k]
        if not full or k < 2:
            return []
        if len(full) > ILD_SAMPLE:
            full = sorted(self._rng.choice(full, ILD_SAMPLE, replace=False).tolist())
        table = self._table()
        rows = table.rows([i for j in full for i in lists[j][:k]])
        if (rows < 0).any():
            return []
        # the vectors of these rows only: the whole table's may be stale after the item stage folded,
        # and recomputing them here would cost a pass over the catalogue per batch
        vectors = table.vectors_of(torch.from_numpy(rows).to(table.device)).view(len(full), k, -1)
        return intra_list_distance(vectors).cpu().tolist()  # type: ignore[no-any-return]

    def forget(self, users: Sequence[str]) -> None:
        for u in users:
            self.quality.forget(u)
            self.drift.forget(u)

    def report(self) -> None:
        self._hooks.on_quality(self.quality.snapshot(len(self._table())))
