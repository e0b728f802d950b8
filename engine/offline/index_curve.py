"""The candidate index's trade-off between recall and cost, on a trained model and real user states.

:func:`index_curve` folds a log through the worker's pipeline (with online learning off) so that the
item memories, popularity and transitions and the users' states are as the worker would hold them,
then, for a sample of the users active at the end, ranks the whole catalogue exactly and through the
candidate index at each ``nprobe``: the recall of the exact top-100 among the candidate path's
top-100 (end to end: index candidates, profile and transitions, exact re-ranking) and the time of the
candidate path's top-k for all the sampled users.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from engine.fold.candidates import CandidateIndex, IndexConfig, recall_at
from engine.fold.context import emission_times
from engine.fold.users import SourcedEvent, user_partition_name
from engine.offline.data import InteractionLog
from engine.offline.evaluation import _pipeline
from engine.state.codec import decode_user
from models.interest import InterestModel
from schemas import EVENT_TYPES, Interaction

__all__ = ["index_curve"]

NPROBES = (1, 2, 4, 8, 16, 32, 64)


def index_curve(
    model: InterestModel,
    item_ids: list[str],
    log: InteractionLog,
    *,
    users: int = 256,
    nprobes: tuple[int, ...] = NPROBES,
    cfg: IndexConfig | None = None,
    top: int = 100,
    batch: int = 1_000,
    repeats: int = 3,
) -> dict[str, Any]:
    """Recall of the exact top-``top`` and seconds per call for ``users`` users at each of ``nprobes``
    (other settings from ``cfg``), after folding ``log``."""
    cfg = cfg or IndexConfig()
    pipeline = _pipeline(model, item_ids, None, "index-curve", None, index=replace(cfg, min_items=0))
    stage = pipeline.users
    start = time.perf_counter()
    for b0 in range(0, len(log), batch):
        events = [
            SourcedEvent(
                Interaction(str(log.users[e]), str(log.items[e]), float(log.ts[e]),
                            EVENT_TYPES[log.event_types[e]]), 0, e, 0.0,
            )
            for e in range(b0, min(len(log), b0 + batch))
        ]
        pipeline.commit(pipeline.fold(events))
    fold_s = time.perf_counter() - start
    # the users of the log's last rows, each once
    chosen = list(dict.fromkeys(str(u) for u in log.users[::-1]))[:users]
    part = stage.store.partition(user_partition_name(0))
    raw = part.get_many(u.encode("utf-8") for u in chosen)
    states = [decode_user(raw[u.encode("utf-8")]) for u in chosen]
    mem = torch.from_numpy(np.stack([s.memory for s in states])).to(stage.table.device)
    with torch.no_grad():
        ctx = stage.context(states, emission_times(states))
        index, stage.index_config = stage.index, None  # exact
        exact = torch.topk(stage.score_context(mem, ctx), top, dim=1).indices.cpu().numpy()
        stage.index_config = cfg = replace(cfg, min_items=0)
        stage.top_k = top
        assert isinstance(index, CandidateIndex)
        index.build()  # over the vectors as they stand now
        points = []
        for p in nprobes:
            index.set_nprobe(p)
            stage._top_k(mem, states)  # warm-up
            seconds = []
            for _ in range(repeats):
                t = time.perf_counter()
                _, rows, _ = stage._top_k(mem, states)
                seconds.append(time.perf_counter() - t)
            points.append({
                "nprobe": index.nprobe, "recall_at_100": recall_at(rows.cpu().numpy(), exact),
                "seconds": float(np.median(seconds)),
            })
    return {
        "items": len(stage.table), "users": len(states), "cells": index.n_cells,
        "n_candidates": cfg.n_candidates, "build_seconds": index.build_seconds,
        "index_bytes": index.nbytes, "fold_seconds": fold_s, "points": points,
    }
