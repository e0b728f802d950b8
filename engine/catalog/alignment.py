"""Fitting the text alignment (models/align.py) after training: each item's text vector is pulled
toward a target in the co-interaction space of the training log (engine/catalog/cointeraction.py):

- ``"users"`` (the default, given the training log): the direction of the users who used the item,
  each at the moment they did, ū_i = normalise(Σ_{(u,t) uses i} normalise(h_u(t⁻))), h_u the
  recency-weighted direction of the user's earlier items (Σ_l 0.5^l c_{hist_l}, the scorer's h_u):
  text is aligned to who will use an item, which is what the scorer compares it with;
- ``"item"``: the item's own co-interaction vector c_i (its co-use neighbours).

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.catalog.knowledge import Catalog
from models.interest import InterestModel

if TYPE_CHECKING:
    from engine.offline.data import InteractionLog

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
    target: Literal["users", "item"] = "users"  # "users" needs the training log; without it, "item"


@dataclass
class AlignReport:
    n_items: int  # items that took part
    n_heldout: int
    heldout_recall_at_10: float
    random_recall_at_10: float
    final_loss: float
    seconds: float
    target: str = "item"  # what the text was aligned to (see the module docstring)

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


def user_directions(content: np.ndarray, item_ids: list[str], log: InteractionLog) -> np.ndarray:
    """``[N, k]`` for each item, the summed unit direction of its users at the moments they used it
    (zero rows: never used after a user's first event), from the items' co-interaction vectors
    ``content`` ``[N, k]`` and the training log."""
    row = {item: r for r, item in enumerate(item_ids[: len(content)])}
    unit = content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    h: dict[str, np.ndarray] = {}
    out = np.zeros_like(content)
    for u, i in zip(log.users.tolist(), log.items.tolist()):
        r = row.get(i)
        if r is None:
            continue
        prev = h.get(u)
        if prev is not None:
            n = np.linalg.norm(prev)
            if n > 0:
                out[r] += prev / n
            h[u] = unit[r] + 0.5 * prev
        else:
            h[u] = unit[r].copy()
    return out


def fit_alignment(
    model: InterestModel, item_ids: list[str], catalog: Catalog, cfg: AlignTrainConfig | None = None,
    log: InteractionLog | None = None,
) -> AlignReport:
    """Fit ``model.align`` on the catalogue's text of the model's trained items ``item_ids``, toward
    ``cfg.target`` (``"users"`` reads the training ``log``; without one the item's own vector)."""
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
    target = model.item_content.detach()
    aligned_to = "users" if cfg.target == "users" and log is not None else "item"
    if aligned_to == "users":
        assert log is not None
        users = user_directions(target.cpu().numpy(), item_ids, log)
        target = torch.from_numpy(users).to(dev, target.dtype)
        eligible = eligible[np.linalg.norm(users[eligible], axis=1) > 0]
    collab = target[torch.from_numpy(eligible).to(dev)]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(eligible))
    n_out = round(cfg.holdout * len(eligible)) if len(eligible) >= 20 else 0
    recall = float("nan")
    if n_out:
        out, keep = perm[:n_out], perm[n_out:]
        _fit(model, text[keep], collab[keep], cfg)
        with torch.no_grad():
            sims = align(text[out]) @ F.normalize(collab, dim=-1).T  # [H, E] against the targets
            own = sims[torch.arange(n_out), torch.from_numpy(out)]
            rank = (sims > own.unsqueeze(-1)).sum(-1) + 1
        recall = float((rank <= 10).float().mean())
    loss = _fit(model, text, collab, cfg)
    report = AlignReport(
        len(eligible), n_out, recall, min(1.0, 10 / len(eligible)), loss, time.perf_counter() - start,
        aligned_to,
    )
    logger.info(
        "alignment on %d items: held-out Recall@10 %.3f (random %.3f), %.1fs",
        report.n_items, recall, report.random_recall_at_10, report.seconds,
    )
    return report
