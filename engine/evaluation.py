"""Ranking metrics, the simple baselines every model must beat, and an offline streaming evaluation
that runs the same fold as the Kafka worker."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.data import InteractionLog
from engine.fold import SourcedEvent, UserStage
from engine.items import ItemStage, ItemTable
from engine.state import MemoryStateStore
from models.interest import InterestModel
from schemas import EVENT_TYPES, Interaction

__all__ = ["EvalReport", "Popularity", "RecencyFrequency", "evaluate_log", "next_items", "ranking_metrics"]


def ranking_metrics(ranks: Sequence[float] | np.ndarray, k: int = 10) -> dict[str, float]:
    """MRR, Recall@k and NDCG@k from 1-based ranks (fractional ranks from ties are fine)."""
    r = np.asarray(ranks, dtype=np.float64)
    if len(r) == 0:
        return {"n": 0, "mrr": float("nan"), f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan")}
    hit = r <= k
    return {
        "n": len(r),
        "mrr": float(np.mean(1.0 / r)),
        f"recall@{k}": float(np.mean(hit)),
        f"ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(r + 1), 0.0))),
    }


class Baseline(Protocol):
    def observe(self, user: str, item: str) -> None: ...

    def rank(self, user: str, target: str, n_items: int) -> float: ...


class RecencyFrequency:
    """Per-user recency-frequency: score(i) = Σ over the user's past events on i of decay^(events ago)."""

    def __init__(self, decay: float = 0.5) -> None:
        self.decay = decay
        self._scores: dict[str, dict[str, float]] = defaultdict(dict)
        self._n: dict[str, int] = defaultdict(int)

    def observe(self, user: str, item: str) -> None:
        # Stored scaled by decay^-n so an update touches one entry; rescaled when it grows too large.
        n = self._n[user] = self._n[user] + 1
        s = self._scores[user]
        s[item] = s.get(item, 0.0) + self.decay ** (-n)
        if n > 200:
            scale = self.decay**n
            self._scores[user] = {i: v * scale for i, v in s.items() if v * scale > 1e-12}
            self._n[user] = 0

    def ranked(self, user: str) -> list[tuple[str, float]]:
        s = self._scores.get(user, {})
        return sorted(s.items(), key=lambda kv: -kv[1])

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self._scores.get(user, {}), target, n_items)


class Popularity:
    """Global interaction counts so far."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def observe(self, user: str, item: str) -> None:
        self.counts[item] += 1

    def rank(self, user: str, target: str, n_items: int) -> float:
        return _rank_in(self.counts, target, n_items)


def _rank_in(scores: dict[str, float] | dict[str, int], target: str, n_items: int) -> float:
    """Rank of ``target`` among ``n_items`` items where items missing from ``scores`` score 0; ties half."""
    t = scores.get(target, 0)
    above = sum(1 for v in scores.values() if v > t)
    if t > 0:
        ties = sum(1 for v in scores.values() if v == t) - 1
    else:  # every item without a score ties with the target
        ties = n_items - len(scores) - (0 if target in scores else 1)
    return 1 + above + 0.5 * ties


def next_items(users: Sequence[str], items: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
    """For each event, the same user's next item (None at their last event) and that event's index."""
    nxt: list[str | None] = [None] * len(users)
    nxt_idx = np.full(len(users), -1, np.int64)
    seen: dict[str, int] = {}
    for e in range(len(users) - 1, -1, -1):
        u = users[e]
        j = seen.get(u)
        if j is not None:
            nxt[e] = items[j]
            nxt_idx[e] = j
        seen[u] = e
    return nxt, nxt_idx


@dataclass
class EvalReport:
    model: dict[str, float]
    baselines: dict[str, dict[str, float]]
    n_items: int
    seconds: float
    events_per_s: float
    extra: dict = field(default_factory=dict)


def evaluate_log(
    model: InterestModel,
    item_ids: list[str],
    log: InteractionLog,
    test_start: int,
    *,
    batch_size: int = 200,
    model_version: str = "eval",
) -> EvalReport:
    """Fold the whole log through the user and item stages (state in memory) and rank each event at
    index ≥ ``test_start`` right after the same user's previous event, against all items."""
    users, items = log.users.tolist(), log.items.tolist()
    targets, target_idx = next_items(users, items)
    device = next(model.parameters()).device
    table = ItemTable(model, item_ids, device)
    stage = UserStage(model, table, MemoryStateStore(), model_version=model_version)
    item_stage = ItemStage(model, table, None)
    baselines: dict[str, Baseline] = {"recency_frequency": RecencyFrequency(0.5), "popularity": Popularity()}
    base_ranks: dict[str, list[float]] = {k: [] for k in baselines}
    model_ranks: list[float] = []
    n_all = len(set(items))
    start = time.perf_counter()
    for b0 in range(0, len(log), batch_size):
        b1 = min(len(log), b0 + batch_size)
        batch = [
            SourcedEvent(Interaction(users[e], items[e], float(log.ts[e]), EVENT_TYPES[log.event_types[e]]), 0, e, 0.0)
            for e in range(b0, b1)
        ]
        tg = [targets[e] if target_idx[e] >= test_start else None for e in range(b0, b1)]
        res = stage.fold(batch, targets=tg)
        if res.item_updates is not None:
            item_stage.fold(res.item_updates)
        assert res.ranks is not None
        for k, e in enumerate(range(b0, b1)):
            target = tg[k]
            for name, b in baselines.items():
                b.observe(users[e], items[e])
                if target is not None:
                    base_ranks[name].append(b.rank(users[e], target, n_all))
            if tg[k] is not None:
                model_ranks.append(float(res.ranks[k]))
    seconds = time.perf_counter() - start
    return EvalReport(
        model=ranking_metrics(model_ranks),
        baselines={k: ranking_metrics(v) for k, v in base_ranks.items()},
        n_items=n_all,
        seconds=seconds,
        events_per_s=len(log) / seconds,
    )


