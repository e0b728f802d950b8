"""Online continual learning in the stream: score first, then learn.

Every folded event is first a test case (its recommendation was computed from the state before it)
and only then a training example: after a batch is folded, the learner takes a gradient step on
"state just before the event → the event's item" for the batch's events. The recurrent memory cells
are not updated online (their inputs are detached state); the query, pair-feature, popularity and
item parameters are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.context import UserContext
from engine.scoring import score_items

if TYPE_CHECKING:
    from engine.items import ItemTable
    from models.interest import InterestModel

__all__ = ["Examples", "OnlineConfig", "OnlineLearner"]


@dataclass
class Examples:
    user_mem: Tensor  # [E, d] memory before the event
    ctx: UserContext  # [E] the user's context just before the event, at the event's time
    targets: Tensor  # [E] the event's item row


@dataclass(frozen=True)
class OnlineConfig:
    enabled: bool = True
    lr: float = 1e-4
    every_batches: int = 1  # learn after every n-th batch
    max_examples: int = 1024  # per step; the most recent are kept
    # Learn once at least this many examples have gathered (across batches), so the cadence follows
    # events, not micro-batch sizes: a worker under light load (small batches) takes the same steps
    # as under a backlog or in the evaluator (batches of 200).
    min_examples: int = 200


class OnlineLearner:
    def __init__(self, model: InterestModel, table: ItemTable, cfg: OnlineConfig) -> None:
        self.model = model
        self.table = table
        self.cfg = cfg
        head = [p for n, p in model.named_parameters() if not n.startswith("memory.")]
        self.opt = torch.optim.Adam(head, lr=cfg.lr)
        self.steps = 0
        self._batches = 0
        self._pending: list[Examples] = []

    def learn(self, ex: Examples) -> float | None:
        """Take the batch's examples; step when enough have gathered. Returns the loss of a step."""
        self._batches += 1
        self._pending.append(ex)
        if self._batches < self.cfg.every_batches or sum(len(p.targets) for p in self._pending) < self.cfg.min_examples:
            return None
        self._batches = 0
        if len(self._pending) > 1:
            ex = Examples(
                torch.cat([p.user_mem for p in self._pending]),
                UserContext.cat([p.ctx for p in self._pending]),
                torch.cat([p.targets for p in self._pending]),
            )
        self._pending = []
        keep = slice(max(0, len(ex.targets) - self.cfg.max_examples), None)
        model, table = self.model, self.table
        n_model = model.cfg.n_items
        targets = ex.targets[keep]
        ok = targets < n_model  # items the model has parameters for (new items have none yet)
        if not bool(ok.any()):
            return None
        model.train()
        with torch.enable_grad():
            static = model.item_static.weight
            vectors = model.item_vectors(static, table.memory[:n_model], table.graph_state[:n_model])
            ctx = ex.ctx[keep][ok]
            known = (ctx.prof_rows >= 0) & (ctx.prof_rows < n_model)
            ctx.prof_rows = torch.where(known, ctx.prof_rows, torch.full_like(ctx.prof_rows, -1))
            ctx.prof_feats = ctx.prof_feats * known.unsqueeze(-1)
            ctx.hist_rows = torch.where(ctx.hist_rows < n_model, ctx.hist_rows, torch.full_like(ctx.hist_rows, -1))
            content = table.content()
            scores = score_items(
                model, table.graph, vectors, model.item_bias, ex.user_mem[keep][ok], ctx,
                content[:n_model] if content is not None else None,
            )
            loss = F.cross_entropy(scores, targets[ok])
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            self.opt.step()
        model.eval()
        table.refresh_from_model()
        self.steps += 1
        return float(loss.detach())
