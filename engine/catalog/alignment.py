"""Fitting the text alignment (models/align.py) after training: each item's text vector is pulled
toward the item's vector in the co-interaction space of the training log (engine/catalog/cointeraction.py).

Only items with at least ``min_count`` training interactions take part (an item used once has no
reliable collaborative vector). A share of them is held out to report alignment quality: for each
held-out item, Recall@10 of its own collaborative vector among all participating items' when
ranked by cosine with its aligned text vector (random: 10 / candidates). The model then refits on
all of them, so the report measures generalisation and the served alignment uses every item.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.catalog.knowledge import Catalog
from models.interest import InterestModel

__all__ = ["AlignReport", "AlignTrainConfig", "fit_alignment"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignTrainConfig:
    steps: int = 400
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    min_count: int = 3
    holdout: float = 0.1
    seed: int = 0


@dataclass
class AlignReport:
    n_items: int  # items that took part
    n_heldout: int
    heldout_recall_at_10: float
    random_recall_at_10: float
    final_loss: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fit(model: InterestModel, text: torch.Tensor, collab: torch.Tensor, cfg: AlignTrainConfig) -> float:
    align = model.align
    assert align is not None
    align.reset_parameters()
    opt = torch.optim.AdamW(align.proj.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    loss = torch.zeros(())
    align.train()
    for _ in range(cfg.steps):
        idx = torch.randperm(len(text), generator=gen)[: cfg.batch_size]
        loss = align.loss(text[idx], collab[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    align.eval()
    return float(loss.detach())


def fit_alignment(
    model: InterestModel, item_ids: list[str], catalog: Catalog, cfg: AlignTrainConfig | None = None
) -> AlignReport:
    """Fit ``model.align`` on the catalogue's text of the model's trained items ``item_ids``."""
    cfg = cfg or AlignTrainConfig()
    align = model.align
    if align is None:
        raise ValueError("the model has no text alignment (train it with text_dim > 0)")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    n = model.cfg.n_items
    text_np, has = catalog.text_matrix(item_ids[:n], align.cfg.text_dim)
    has_vec = model.item_content.abs().sum(-1).cpu().numpy() > 0
    eligible = np.nonzero(has & has_vec & (model.item_counts.cpu().numpy() >= cfg.min_count))[0]
    if len(eligible) < 2:
        logger.warning(
            "alignment: only %d items have text and %d+ interactions; not fitted",
            len(eligible), cfg.min_count,
        )
        return AlignReport(
            len(eligible), 0, float("nan"), float("nan"), float("nan"), time.perf_counter() - start
        )
    dev = model.item_content.device
    text = torch.from_numpy(text_np[eligible]).to(dev)
    collab = model.item_content.detach()[torch.from_numpy(eligible).to(dev)]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(eligible))
    n_out = round(cfg.holdout * len(eligible)) if len(eligible) >= 20 else 0
    recall = float("nan")
    if n_out:
        out, keep = perm[:n_out], perm[n_out:]
        _fit(model, text[keep], collab[keep], cfg)
        with torch.no_grad():
            sims = align(text[out]) @ F.normalize(collab, dim=-1).T  # [H, E]
            own = sims[torch.arange(n_out), torch.from_numpy(out)]
            rank = (sims > own.unsqueeze(-1)).sum(-1) + 1
        recall = float((rank <= 10).float().mean())
    loss = _fit(model, text, collab, cfg)
    report = AlignReport(
        len(eligible), n_out, recall, min(1.0, 10 / len(eligible)), loss, time.perf_counter() - start
    )
    logger.info(
        "alignment on %d items: held-out Recall@10 %.3f (random %.3f), %.1fs",
        report.n_items, recall, report.random_recall_at_10, report.seconds,
    )
    return report
