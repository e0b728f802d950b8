"""Cold-start evaluation: items held out of training, ranked at their first interactions.

A share of the items that occur after the training split is held out: every row of theirs before
the split is dropped (so neither training nor the streamed state has seen them), and their first
``first_n`` interactions after it are the rows scored. In one run the same trained model is
streamed three times: with the catalogue (text and attributes), with the catalogue's attributes
only (the same model without text), and with no catalogue; popularity is ranked on the same rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.catalog.knowledge import Catalog, CatalogEntry
from engine.fold.online import OnlineConfig
from engine.offline.data import InteractionLog
from engine.offline.evaluation import evaluate_stream, ranking_metrics
from models.interest import InterestModel

__all__ = ["ColdStartSplit", "cold_start_split", "evaluate_cold_start", "without_text"]


@dataclass(frozen=True)
class ColdStartSplit:
    log: InteractionLog  # the log without the held-out items' rows before train_end
    train_end: int  # in ``log``
    held_out: list[str]
    rows: np.ndarray  # rows of ``log`` scored: the held-out items' first interactions
    extra: dict[str, Any] = field(default_factory=dict)


def cold_start_split(
    log: InteractionLog, train_end: int, share: float = 0.1, first_n: int = 5, seed: int = 0
) -> ColdStartSplit:
    """Hold out ``share`` of the items seen after ``train_end`` (chosen at random with ``seed``)."""
    later = sorted(set(log.items[train_end:].tolist()))
    rng = np.random.default_rng(seed)
    k = max(1, round(share * len(later)))
    held = sorted(
        rng.choice(np.asarray(later, dtype=object), size=min(k, len(later)), replace=False).tolist()
    )
    held_set = set(held)
    is_held = np.fromiter((i in held_set for i in log.items.tolist()), bool, len(log))
    keep = ~is_held | (np.arange(len(log)) >= train_end)
    kept = InteractionLog(log.users[keep], log.items[keep], log.ts[keep], log.event_types[keep])
    new_train_end = int(keep[:train_end].sum())
    seen: dict[str, int] = {}
    rows = []
    for j in range(new_train_end, len(kept)):
        item = kept.items[j]
        if item in held_set and seen.get(item, 0) < first_n:
            seen[item] = seen.get(item, 0) + 1
            rows.append(j)
    return ColdStartSplit(
        kept, new_train_end, held, np.asarray(rows, np.int64),
        {
            "share": share, "first_n": first_n, "seed": seed,
            "dropped_training_rows": int(train_end - new_train_end),
        },
    )


def without_text(catalog: Catalog) -> Catalog:
    """The same catalogue with every text vector left out (attributes only)."""
    out = Catalog()
    for item_id, e in catalog.entries.items():
        out.restore(item_id, CatalogEntry(e.title, e.attributes, e.digest, None))
    return out


def evaluate_cold_start(
    model: InterestModel, item_ids: list[str], split: ColdStartSplit, catalog: Catalog,
    online: OnlineConfig | None = None,
) -> dict[str, Any]:
    """Metrics on the held-out items' first interactions, per variant (see the module docstring)."""
    variants: dict[str, Catalog | None] = {
        "model": catalog, "model_without_text": without_text(catalog), "model_without_catalog": None,
    }
    out: dict[str, Any] = {}
    seconds = 0.0
    n_candidates = len(set(item_ids) | set(catalog.entries))

    def metrics(ranks: np.ndarray) -> dict[str, Any]:
        # where the item lands in the whole ranking, not only whether it makes the top 10: on logs
        # where users mostly return to their own items, those fill the top 10 for any new item
        return ranking_metrics(ranks) | {
            "median_rank": float(np.median(ranks)),
            "median_percentile": float(np.median(ranks)) / n_candidates,
        }

    for name, cat in variants.items():
        # each variant from the same trained weights: online learning changes the model it streams
        rr = evaluate_stream(
            copy.deepcopy(model), item_ids, split.log, split.train_end, online=online, catalog=cat
        )
        ranks = rr.ranks["model"][split.rows - split.train_end]
        out[name] = metrics(ranks)
        seconds += rr.seconds
        if name == "model":
            pop = rr.ranks["popularity"][split.rows - split.train_end]
            out["popularity"] = metrics(pop)
    out["random"] = {
        "n": len(split.rows), "recall@10": min(1.0, 10 / max(n_candidates, 1)), "median_percentile": 0.5,
        "median_rank": (n_candidates + 1) / 2,
    }
    return {
        "held_out_items": len(split.held_out), "rows": len(split.rows), "metrics": out,
        "split": split.extra, "seconds": seconds,
    }
