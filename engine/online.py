"""Online continual learning in the stream: score first, then learn.

Every folded event is first a test case (its recommendation was computed from the state before it)
and only then a training example: after a batch is folded, the learner takes a gradient step on
"state just before the event → the event's item" for the batch's events. The recurrent memory cells
are not updated online (their inputs are detached state), nor, by default, the sequence model; the
query, pair-feature, popularity and item parameters are.
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
    # One step per this many examples, taken in event order whatever the micro-batches were: a worker
    # under a backlog (batches of 2,000), one under light load (batches of a few events) and the
    # evaluator (batches of 200) take the same steps on the same examples.
    examples_per_step: int = 200
    # The share of events that are examples, the same ones in the worker and the evaluator
    # (engine.fold.is_example). An example's context and its share of a step cost more than folding
    # the event. On Wikipedia's validation split (JODIE protocol, one checkpoint), validation MRR:
    # every event, a step per 1,000: 0.8373; 1 in 10, a step per 100 examples: 0.8372; 1 in 10, a
    # step per 200 (about 2,000 events): 0.8374, at a tenth of the examples and half the steps.
    example_rate: float = 0.1
    # Also train the sequence model online. Off: it stays as trained offline and runs as a fixed
    # feature extractor, which halves the cost of a step (its backward pass was most of it).
    learn_sequence: bool = False


class OnlineLearner:
    def __init__(self, model: InterestModel, table: ItemTable, cfg: OnlineConfig) -> None:
        self.model = model
        self.table = table
        self.cfg = cfg
        frozen = ("memory.",) if cfg.learn_sequence else ("memory.", "sequence.")
        head = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
        self.opt = torch.optim.Adam(head, lr=cfg.lr)
        self.steps = 0
        self._pending: list[Examples] = []
        self._n_pending = 0

    def learn(self, ex: Examples) -> float | None:
        """Take a batch's examples (in event order); step once per ``examples_per_step`` of them.
        Returns the loss of the last step taken, if any."""
        self._pending.append(ex)
        self._n_pending += len(ex.targets)
        size = self.cfg.examples_per_step
        if self._n_pending < size:
            return None
        all_ex = self._pending[0] if len(self._pending) == 1 else Examples(
            torch.cat([p.user_mem for p in self._pending]),
            UserContext.cat([p.ctx for p in self._pending]),
            torch.cat([p.targets for p in self._pending]),
        )
        loss = None
        n_steps = self._n_pending // size
        for k in range(n_steps):
            part = slice(k * size, (k + 1) * size)
            loss = self._step(Examples(all_ex.user_mem[part], all_ex.ctx[part], all_ex.targets[part]))
        rest = slice(n_steps * size, None)
        self._pending = [Examples(all_ex.user_mem[rest], all_ex.ctx[rest], all_ex.targets[rest])]
        self._n_pending = len(self._pending[0].targets)
        return loss

    def _step(self, ex: Examples) -> float | None:
        model, table = self.model, self.table
        n_model = model.cfg.n_items
        targets = ex.targets
        ok = targets < n_model  # items the model has parameters for (new items have none yet)
        if not bool(ok.any()):
            return None
        model.train()
        with torch.enable_grad():
            static = model.item_static.weight
            vectors = model.item_vectors(static, table.memory[:n_model], table.graph_state[:n_model])
            ctx = ex.ctx[ok]
            known = (ctx.prof_rows >= 0) & (ctx.prof_rows < n_model)
            ctx.prof_rows = torch.where(known, ctx.prof_rows, torch.full_like(ctx.prof_rows, -1))
            ctx.prof_feats = ctx.prof_feats * known.unsqueeze(-1)
            ctx.hist_rows = torch.where(ctx.hist_rows < n_model, ctx.hist_rows, torch.full_like(ctx.hist_rows, -1))
            content = table.content()
            scores = score_items(
                model, table.graph, vectors, model.item_bias, ex.user_mem[ok], ctx,
                content[:n_model] if content is not None else None, sequence_grad=self.cfg.learn_sequence,
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
