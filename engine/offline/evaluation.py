"""Offline evaluation: stream a whole log through the same fold as the Kafka worker and rank every
validation and test row's true item among all items, beside the baselines, in one run.

A row is ranked from the state right after the same user's previous event was folded (state
updated with every earlier row of the log, and — with online learning on — the model trained on
every earlier row: score first, then learn). A user's first row is ranked with an empty user state.
Ties count half.

The query time is the row's own timestamp, as in the JODIE and TGB protocols: the model knows when
the user comes back, not what they do (``at_row_time=True``, the default). With
``at_row_time=False`` the row is ranked exactly as the worker's emitted recommendation ranked it,
for the moment of the user's previous event: that is what the Kafka demo compares against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.offline.baselines import default_baselines
from engine.catalog.knowledge import Catalog
from engine.offline.data import InteractionLog
from engine.fold.users import SourcedEvent, UserStage, rank_of
from engine.fold.items import ItemStage, ItemTable
from engine.fold.online import OnlineConfig, OnlineLearner
from engine.offline.protocols import Split
from engine.state.store import MemoryStateStore
from models.interest import InterestModel
from schemas import EVENT_TYPES, Interaction

__all__ = ["RowRanks", "evaluate_stream", "next_items", "ranking_metrics", "split_masks", "summarize"]


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
class RowRanks:
    """Per scored row (validation and test rows, in log order)."""

    rows: np.ndarray  # [R] row index in the log
    ts: np.ndarray  # [R] the row's timestamp
    repeat: np.ndarray  # [R] bool: the user had used the item before
    ranks: dict[str, np.ndarray]  # method → [R] rank; "model" plus each baseline
    n_items: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_stream(
    model: InterestModel,
    item_ids: list[str],
    log: InteractionLog,
    score_from: int,
    *,
    batch_size: int = 200,
    online: OnlineConfig | None = None,
    model_version: str = "eval",
    at_row_time: bool = True,
    catalog: Catalog | None = None,
) -> RowRanks:
    """Fold every row of ``log`` and rank each row at index ≥ ``score_from`` (among the log's items and,
    with a ``catalog``, every catalogue item)."""
    users, items = log.users.tolist(), log.items.tolist()
    targets, target_idx = next_items(users, items)
    first_row = np.ones(len(log), bool)  # the user's first row: no earlier event to rank it from
    first_row[target_idx[target_idx >= 0]] = False
    device = next(model.parameters()).device
    table = ItemTable(model, item_ids, device)
    if catalog is not None:
        table.attach_catalog(catalog)
    stage = UserStage(model, table, MemoryStateStore(), model_version=model_version)
    item_stage = ItemStage(model, table, None)
    learner = OnlineLearner(model, table, online) if online is not None and online.enabled else None
    baselines = default_baselines()
    n_items = len(set(items))
    rank_at = {name: np.full(len(log), np.nan) for name in ["model", *baselines]}
    seen_pairs: set[tuple[str, str]] = set()
    repeat = np.zeros(len(log), bool)
    start = time.perf_counter()
    for b0 in range(0, len(log), batch_size):
        b1 = min(len(log), b0 + batch_size)
        # Rows that are their user's first: ranked from an empty state, before this batch is folded.
        firsts = [j for j in range(b0, b1) if first_row[j] and j >= score_from]
        if firsts:
            with torch.no_grad():
                empty = stage.empty_user_scores()  # [N]
            for j in firsts:
                r = table.index.get(items[j], -1)
                rank_at["model"][j] = float(rank_of(empty[None], torch.tensor([r]))[0]) if r >= 0 else len(table)
                for name, b in baselines.items():
                    rank_at[name][j] = b.rank(users[j], items[j], n_items)
        batch = [
            SourcedEvent(Interaction(users[e], items[e], float(log.ts[e]), EVENT_TYPES[log.event_types[e]]), 0, e, 0.0)
            for e in range(b0, b1)
        ]
        tg = [targets[e] if target_idx[e] >= score_from else None for e in range(b0, b1)]
        tt = log.ts[np.where(target_idx[b0:b1] >= 0, target_idx[b0:b1], np.arange(b0, b1))] if at_row_time else None
        res = stage.fold(
            batch, targets=tg, target_times=tt, example_rate=online.example_rate if learner and online else 0.0
        )
        assert res.ranks is not None
        for k, e in enumerate(range(b0, b1)):
            j = target_idx[e]
            for name, b in baselines.items():
                b.observe(users[e], items[e])
                if j >= score_from:
                    rank_at[name][j] = b.rank(users[e], items[j], n_items)
            if j >= score_from:
                rank_at["model"][j] = res.ranks[k]
            pair = (users[e], items[e])
            repeat[e] = pair in seen_pairs
            seen_pairs.add(pair)
        if res.item_updates is not None:
            item_stage.fold(res.item_updates)
        stage.commit(res)
        if learner is not None and res.examples is not None:
            learner.learn(res.examples)
    seconds = time.perf_counter() - start
    rows = np.arange(score_from, len(log))
    return RowRanks(
        rows=rows,
        ts=log.ts[rows],
        repeat=repeat[rows],
        ranks={name: r[rows] for name, r in rank_at.items()},
        n_items=n_items,
        seconds=seconds,
        extra={"events_per_s": len(log) / seconds, "online_steps": learner.steps if learner else 0},
    )


def summarize(rr: RowRanks, mask: np.ndarray) -> dict[str, dict[str, Any]]:
    """Metrics per method over the rows selected by ``mask``, with the repeat / first-time split."""
    out: dict[str, dict[str, Any]] = {}
    for name, ranks in rr.ranks.items():
        m: dict[str, Any] = ranking_metrics(ranks[mask])
        m["repeat"] = ranking_metrics(ranks[mask & rr.repeat])
        m["first_time"] = ranking_metrics(ranks[mask & ~rr.repeat])
        out[name] = m
    return out


def split_masks(rr: RowRanks, split: Split) -> dict[str, np.ndarray]:
    return {"val": rr.rows < split.val_end, "test": rr.rows >= split.val_end}

