"""How well drift detection finds planted drifts: stream a synthetic log with planted interest drifts
(engine/offline/synthetic.py) through the worker's fold, run the same detector the worker runs, and
count, per user, whether it reported a drift.

- **hit rate**: the share of users with a planted drift who were reported after the drift time;
- **false-alarm rate**: the share of users without a planted drift who were reported at all (each
  counts once however often reported);
- **early alarms**: the share of users with a planted drift reported before their drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.fold.drift import DriftDetector
from engine.fold.items import ItemStage
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage
from engine.offline.synthetic import DriftingLog
from engine.state.store import MemoryStateStore
from models.interest import InterestModel
from schemas import Interaction

__all__ = ["DriftScore", "detect_drifts", "drift_distances"]


@dataclass
class DriftScore:
    threshold: float
    drifting: int  # users with a planted drift
    steady: int  # users without
    hits: int
    false_alarms: int
    early: int
    delays: list[int] = field(default_factory=list)  # the user's events from the drift to the report

    @property
    def hit_rate(self) -> float:
        return self.hits / self.drifting if self.drifting else float("nan")

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.steady if self.steady else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "threshold": self.threshold, "drifting_users": self.drifting, "steady_users": self.steady,
            "hit_rate": self.hit_rate, "false_alarm_rate": self.false_alarm_rate,
            "early_alarm_rate": self.early / self.drifting if self.drifting else float("nan"),
            "median_delay_events": float(np.median(self.delays)) if self.delays else float("nan"),
        }


def drift_distances(
    model: InterestModel, item_ids: list[str], d: DriftingLog, batch_size: int = 50
) -> list[tuple[float, list[str], list[float], list[int]]]:
    """Fold the log ``batch_size`` rows at a time; per batch: its last event time, and each user's
    drift distance and event count after it."""
    table = ItemTable(model, item_ids, next(model.parameters()).device)
    stage = UserStage(model, table, MemoryStateStore(), model_version="drift-eval")
    stage.measure_drift = True
    items = ItemStage(model, table, None)
    log = d.log
    out = []
    for b0 in range(0, len(log), batch_size):
        rows = range(b0, min(len(log), b0 + batch_size))
        batch = [
            SourcedEvent(Interaction(log.users[e], log.items[e], float(log.ts[e]), "view"), 0, e, 0.0)
            for e in rows
        ]
        with torch.no_grad():
            res = stage.fold(batch)
        if res.item_updates is not None:
            items.fold(res.item_updates)
        stage.commit(res)
        out.append((
            float(log.ts[rows[-1]]), [r.user_id for r in res.recommendations], res.drift or [],
            [st.n_events for st in res.states],
        ))
    return out


def detect_drifts(
    d: DriftingLog, distances: list[tuple[float, list[str], list[float], list[int]]], threshold: float,
    min_events: int = 10,
) -> DriftScore:
    """Run the detector over the distances of :func:`drift_distances` and score what it reported."""
    detector = DriftDetector(threshold, min_events)
    first_report: dict[str, tuple[float, int]] = {}
    for t, users, dist, n_events in distances:
        for f in detector.check(users, n_events, dist):
            first_report.setdefault(f.user_id, (t, n_events[f.index]))
    drifting = [u for u in d.before if d.before[u] != d.after[u]]
    steady = [u for u in d.before if d.before[u] == d.after[u]]
    score = DriftScore(threshold, len(drifting), len(steady), 0, 0, 0)
    events_before = _events_before(d)
    for u in drifting:
        if u in first_report:
            t, n = first_report[u]
            if t >= d.drift_time:
                score.hits += 1
                score.delays.append(n - events_before[u])
            else:
                score.early += 1
    score.false_alarms = sum(u in first_report for u in steady)
    return score


def _events_before(d: DriftingLog) -> dict[str, int]:
    """Each user's events before the drift time."""
    before = d.log.ts < d.drift_time
    users, counts = np.unique(d.log.users[before].astype(str), return_counts=True)
    return dict(zip(users.tolist(), counts.tolist()))
