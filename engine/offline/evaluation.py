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

With ``item_delay`` > 0 the item stage lags the user stage by that many events
(engine/offline/stale_items.py), as it does when it runs as a shared stage behind Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.catalog.knowledge import Catalog
from engine.fold.candidates import IndexConfig
from engine.fold.context import emission_times
from engine.fold.items import ItemStage
from engine.fold.online import OnlineConfig, OnlineLearner
from engine.fold.table import ItemTable
from engine.fold.users import SourcedEvent, UserStage, rank_of
from engine.offline.baselines import default_baselines
from engine.offline.data import InteractionLog
from engine.offline.protocols import Split
from engine.offline.stale_items import DelayedItemStage
from engine.pipeline import Pipeline
from engine.state.codec import UserState
from engine.state.store import MemoryStateStore
from models.interest import InterestModel
from schemas import EVENT_TYPES, Interaction

__all__ = [
    "RowRanks", "TargetRanks", "calibration", "evaluate_stream", "next_items", "ranking_metrics",
    "split_masks", "summarize",
]


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
    # [R] the model's probability that the row's item is new to the user (none of their profile items)
    explore_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))


def calibration(prob: np.ndarray, outcome: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """How well probabilities ``prob`` ``[R]`` of a binary ``outcome`` ``[R]`` are calibrated: the
    expected calibration error (Σ_b n_b/n · |mean prob_b − observed rate_b| over ``bins`` equal-width
    bins), the Brier score, the mean prediction against the observed rate, and the bins themselves."""
    ok = ~np.isnan(prob)
    p, y = prob[ok], outcome[ok].astype(np.float64)
    if len(p) == 0:
        return {"n": 0}
    edges = np.minimum((p * bins).astype(np.int64), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = edges == b
        if sel.any():
            gap = abs(float(p[sel].mean()) - float(y[sel].mean()))
            ece += sel.mean() * gap
            table.append({"bin": [b / bins, (b + 1) / bins], "n": int(sel.sum()),
                          "predicted": float(p[sel].mean()), "observed": float(y[sel].mean())})
    return {
        "n": int(len(p)), "ece": float(ece), "brier": float(np.mean((p - y) ** 2)),
        "mean_predicted": float(p.mean()), "observed": float(y.mean()), "bins": table,
    }


class TargetRanks:
    """The fold's round observer for evaluation: right after each event is folded, the rank of the
    item its user uses next (``targets``, None for none) among all items, at the time in ``times``
    (default: what the emitted recommendation is for, :func:`engine.fold.context.emission_times`)."""

    def __init__(
        self, targets: Sequence[str | None], times: Sequence[float] | np.ndarray | None = None
    ) -> None:
        self.targets = targets
        self.times = None if times is None else np.asarray(times, np.float64)
        self.ranks = np.full(len(targets), np.nan)  # [E] 1 = best; nan = no target
        # [E] the model's probability that the next item is none of the user's profile items
        self.explore_prob = np.full(len(targets), np.nan)

    def after_round(
        self, stage: UserStage, positions: np.ndarray, mem: torch.Tensor, states: list[UserState]
    ) -> None:
        index = stage.table.index
        # -1: a target never seen (ranked last); -2: no target (not ranked)
        rows = np.array([index.get(t, -1) if (t := self.targets[k]) else -2 for k in positions], np.int64)
        ok = rows >= 0
        if ok.any():
            now = emission_times(states) if self.times is None else self.times[positions]
            ctx = stage.context(states, now)
            scores = stage.score_context(mem, ctx)
            # the mixture's scores are log-probabilities already; one softmax's logits become them
            p = torch.softmax(scores, dim=1).gather(1, ctx.prof_rows.clamp(min=0)) * (ctx.prof_rows >= 0)
            self.explore_prob[positions[ok]] = (1 - p.sum(1)).clamp(0, 1).cpu().numpy()[ok]
            target = torch.from_numpy(rows[ok]).to(scores.device)
            self.ranks[positions[ok]] = (
                rank_of(scores[torch.from_numpy(ok).to(scores.device)], target).cpu().numpy()
            )
        self.ranks[positions[rows == -1]] = len(stage.table)


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
    item_delay: int = 0,
    index: IndexConfig | None = None,
) -> RowRanks:
    """Fold every row of ``log`` through the pipeline, ``batch_size`` rows at a time, and rank each row at
    index ≥ ``score_from`` (among the log's items and, with a ``catalog``, every catalogue item).

    With ``item_delay`` = N > 0, each event's item update is folded once N later events have been
    folded by the user stage (:class:`DelayedItemStage`; held updates left at the end are not folded).
    The delay is exact in events, but the user stage reads the items as they stand at the start of
    each batch, so within a batch they lag by N to N + ``batch_size`` - 1 events (N = 0: 0 to
    ``batch_size`` - 1). With ``index``, a catalogue of ``index.min_items`` or more is ranked as the
    worker ranks it: over each user's candidates (engine/fold/candidates.py), the rest last."""
    users, items = log.users.tolist(), log.items.tolist()
    targets, target_idx = next_items(users, items)
    first_row = np.ones(len(log), bool)  # the user's first row: no earlier event to rank it from
    first_row[target_idx[target_idx >= 0]] = False
    pipeline = _pipeline(model, item_ids, online, model_version, catalog, item_delay, index)
    stage, table = pipeline.users, pipeline.items.table
    baselines = default_baselines()
    n_items = len(set(items))
    rank_at = {name: np.full(len(log), np.nan) for name in ["model", *baselines]}
    explore_at = np.full(len(log), np.nan)
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
                rank_at["model"][j] = (
                    float(rank_of(empty[None], torch.tensor([r]))[0]) if r >= 0 else len(table)
                )
                explore_at[j] = 1.0
                for name, b in baselines.items():
                    rank_at[name][j] = b.rank(users[j], items[j], n_items)
        batch = [
            SourcedEvent(
                Interaction(users[e], items[e], float(log.ts[e]), EVENT_TYPES[log.event_types[e]]), 0, e, 0.0
            )
            for e in range(b0, b1)
        ]
        ranks = TargetRanks(
            [targets[e] if target_idx[e] >= score_from else None for e in range(b0, b1)],
            (
                log.ts[np.where(target_idx[b0:b1] >= 0, target_idx[b0:b1], np.arange(b0, b1))]
                if at_row_time else None
            ),
        )
        pipeline.commit(pipeline.fold(batch, observer=ranks))
        for k, e in enumerate(range(b0, b1)):
            j = target_idx[e]
            for name, b in baselines.items():
                b.observe(users[e], items[e])
                if j >= score_from:
                    rank_at[name][j] = b.rank(users[e], items[j], n_items)
            if j >= score_from:
                rank_at["model"][j] = ranks.ranks[k]
                explore_at[j] = ranks.explore_prob[k]
            pair = (users[e], items[e])
            repeat[e] = pair in seen_pairs
            seen_pairs.add(pair)
    seconds = time.perf_counter() - start
    rows = np.arange(score_from, len(log))
    learner = pipeline.learner
    return RowRanks(
        rows=rows,
        ts=log.ts[rows],
        repeat=repeat[rows],
        ranks={name: r[rows] for name, r in rank_at.items()},
        n_items=n_items,
        seconds=seconds,
        extra={"events_per_s": len(log) / seconds, "online_steps": learner.steps if learner else 0},
        explore_prob=explore_at[rows],
    )


def _pipeline(
    model: InterestModel, item_ids: list[str], online: OnlineConfig | None, model_version: str,
    catalog: Catalog | None, item_delay: int = 0, index: IndexConfig | None = None,
) -> Pipeline:
    """The worker's pipeline on in-memory state: no store for the items, learning in line, the item
    stage ``item_delay`` events behind the user stage."""
    device = next(model.parameters()).device
    table = ItemTable(model, item_ids, device)
    if catalog is not None:
        table.attach_catalog(catalog)
    users = UserStage(model, table, MemoryStateStore(), model_version=model_version, index=index)
    learner = OnlineLearner(model, table, online) if online is not None and online.enabled else None
    items = DelayedItemStage(model, table, item_delay) if item_delay > 0 else ItemStage(model, table, None)
    return Pipeline(users, items, learner)


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

