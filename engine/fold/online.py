"""Online continual learning in the stream: score first, then learn.

Every folded event is first a test case (its recommendation was computed from the state before it)
and only then a training example: after a batch is folded, the learner takes a gradient step on
"state just before the event → the event's item" for the batch's events. The recurrent memory cells
are not updated online (their inputs are detached state), nor, by default, the sequence model; the
query, pair-feature, popularity and item parameters are.

A step's loss is a softmax over every item, so its gradient reaches every item's static embedding:
the optimiser's state for them is dense (two ``[N, d]`` moments), and rightly so. What need not be
dense in the examples is the scoring: a step scores at most :data:`LEARN_BUDGET` example–item pairs
at once, adding up the chunks' gradients.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.fold.context import UserContext
from engine.fold.scoring import GraphInputs, graph_inputs, score_items

if TYPE_CHECKING:
    from engine.fold.table import ItemTable
    from engine.state.codec import UserState
    from models.interest import InterestModel

__all__ = ["LEARN_BUDGET", "Examples", "OnlineConfig", "OnlineLearner"]

logger = logging.getLogger(__name__)

#: Example–item pairs one chunk of a step scores (with the backward pass, several ``[E, N]`` tensors
#: live at once). A step whose examples × items exceed it is taken in chunks of examples whose
#: gradients add up: the same gradient but for rounding; 200 examples × 80,000 items fit in one. At
#: 1,000,000 items (16 examples a chunk) a step needs 1.3 GiB beside the engine instead of 6.5, and
#: smaller chunks save no more (the ``[N, d]`` vectors and their gradient are most of it) but take longer.
LEARN_BUDGET = 16 * 2**20


@dataclass
class Examples:
    user_mem: Tensor  # [E, d] memory before the event
    ctx: UserContext  # [E] the user's context just before the event, at the event's time
    targets: Tensor  # [E] the event's item row
    # what the context was built from, for a learner in another process (streams/learner.py)
    states: list[UserState] | None = None  # [E] the user's state just before the event
    ts: np.ndarray | None = None  # [E] the event's time


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
    # Compute each step's gradient on a thread of its own while the next batches are folded (the
    # worker); off, a step is taken where it falls due, as the evaluator does, so its runs repeat
    # exactly.
    background: bool = False
    # With a step in flight, examples wait for it up to this many steps' worth; beyond, the worker
    # waits for the step (learning never falls further behind the stream).
    max_steps_behind: int = 4


class OnlineLearner:
    """Steps in event order, one per ``examples_per_step`` examples. In the background
    (``cfg.background``) a step's gradient is computed on a thread of its own while the engine folds
    the next batches, and the update lands at the first :meth:`learn` call after it is ready, so the
    recommendations already due never wait for a backward pass. Everything the gradient reads from
    the engine's mutable state (item memories, transitions, popularity) is taken when the step is
    submitted; the parameters change only when an update lands, on the engine's thread, with no
    gradient in flight. The model has no dropout or batch norm, so it stays in eval mode throughout
    (a train/eval switch would be seen by the other thread)."""

    def __init__(self, model: InterestModel, table: ItemTable, cfg: OnlineConfig) -> None:
        self.model = model
        self.table = table
        self.cfg = cfg
        frozen = ("memory.",) if cfg.learn_sequence else ("memory.", "sequence.")
        self._params = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
        # foreach: the same arithmetic as the default on CPU, with one [N, d] temporary in a step, not two
        self.opt = torch.optim.Adam(self._params, lr=cfg.lr, foreach=True)
        self.steps = 0
        self.dropped = 0  # steps not applied: the gradient failed, or its loss or gradient was not finite
        self._pending: list[Examples] = []
        self._n_pending = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tide-learn") if cfg.background else None
        self._inflight: Future[_Gradient | None] | None = None

    def learn(self, ex: Examples | None) -> float | None:
        """Take a batch's examples (in event order; None: the batch had none); step once per
        ``examples_per_step`` of them. Returns the loss of the last step that landed during the call,
        if any."""
        loss = self._land(wait=False)
        if ex is not None:
            self._pending.append(ex)
            self._n_pending += len(ex.targets)
        size = self.cfg.examples_per_step
        while self._n_pending >= size:
            if self._inflight is not None:
                if self._n_pending < size * self.cfg.max_steps_behind:
                    break  # the examples wait for the step in flight
                landed = self._land(wait=True)  # learning fell behind: wait for it
                loss = landed if landed is not None else loss
            step_inputs = self._take(size)
            if self._pool is None:
                landed = self._update(self._gradient(step_inputs))
                loss = landed if landed is not None else loss
            else:
                self._inflight = self._pool.submit(self._gradient, step_inputs)
        return loss

    @property
    def trained_parameters(self) -> list[tuple[str, Tensor]]:
        """The parameters online learning changes, by name."""
        ids = {id(p) for p in self._params}
        return [(n, p) for n, p in self.model.named_parameters() if id(p) in ids]

    @property
    def in_flight(self) -> bool:
        """Whether a step's gradient is being computed on the learner's thread."""
        return self._inflight is not None

    @property
    def examples_waiting(self) -> int:
        """Examples not yet in an applied update: those collected and those of the step in flight."""
        return self._n_pending + (self.cfg.examples_per_step if self._inflight is not None else 0)

    def drain(self) -> float | None:
        """Land the step in flight, if any (before the model is read for good: shutdown, saving)."""
        return self._land(wait=True)

    def close(self) -> None:
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _take(self, size: int) -> _StepInputs:
        """The next ``size`` examples, with a snapshot of what their scores read from the engine."""
        all_ex = self._pending[0] if len(self._pending) == 1 else Examples(
            torch.cat([p.user_mem for p in self._pending]),
            UserContext.cat([p.ctx for p in self._pending]),
            torch.cat([p.targets for p in self._pending]),
        )
        part, rest = slice(0, size), slice(size, None)
        ex = Examples(all_ex.user_mem[part], all_ex.ctx[part], all_ex.targets[part])
        self._pending = [Examples(all_ex.user_mem[rest], all_ex.ctx[rest], all_ex.targets[rest])]
        self._n_pending = len(self._pending[0].targets)
        table, n_model = self.table, self.model.cfg.n_items
        ok = ex.targets < n_model  # items the model has parameters for (new items have none yet)
        ctx = ex.ctx[ok]
        known = (ctx.prof_rows >= 0) & (ctx.prof_rows < n_model)
        ctx.prof_rows = torch.where(known, ctx.prof_rows, torch.full_like(ctx.prof_rows, -1))
        ctx.prof_feats = ctx.prof_feats * known.unsqueeze(-1)
        ctx.hist_rows = torch.where(
            ctx.hist_rows < n_model, ctx.hist_rows, torch.full_like(ctx.hist_rows, -1)
        )
        content = table.content()  # replaced, never written in place, when counts move
        memory = table.memory[:n_model]
        if self._pool is not None:  # the item stage writes memories in place while the gradient runs
            memory = memory.clone()
        return _StepInputs(
            user_mem=ex.user_mem[ok],
            ctx=ctx,
            targets=ex.targets[ok],
            memory=memory,
            graph_state=table.graph_state[:n_model],  # replaced, never written in place
            content=content[:n_model] if content is not None else None,
            graph=graph_inputs(table.graph, ctx, n_model, ex.user_mem.device),
        )

    def _gradient(self, s: _StepInputs) -> _Gradient | None:
        if len(s.targets) == 0:
            return None
        model = self.model
        e, n = len(s.targets), s.memory.shape[0]
        chunk = max(1, LEARN_BUDGET // max(n, 1))
        if chunk < e:
            return self._chunked_gradient(s, chunk)
        with torch.enable_grad():
            vectors = model.item_vectors(model.item_static.weight, s.memory, s.graph_state)
            scores = score_items(
                model, s.graph, vectors, model.item_bias, s.user_mem, s.ctx, s.content,
                sequence_grad=self.cfg.learn_sequence,
            )
            loss = F.cross_entropy(scores, s.targets)
            grads = torch.autograd.grad(loss, self._params, allow_unused=True)
        return _Gradient(float(loss.detach()), grads)

    def _chunked_gradient(self, s: _StepInputs, chunk: int) -> _Gradient:
        """The gradient of :meth:`_gradient`, scoring ``chunk`` examples at a time: the item vectors
        ``[N, d]`` are computed once, each chunk's loss (its share of the mean) is differentiated up to
        them, and their summed gradient is taken back to the static embeddings and the memory
        projection once."""
        model, e = self.model, len(s.targets)
        sums: list[Tensor | None] = [None] * len(self._params)
        g_vectors: list[Tensor | None] = [None]  # [N, d] the loss's gradient in the item vectors
        loss_sum = 0.0
        with torch.enable_grad():
            vectors = model.item_vectors(model.item_static.weight, s.memory, s.graph_state)  # [N, d]
            leaf = vectors.detach().requires_grad_()
            for start in range(0, e, chunk):
                stop = min(e, start + chunk)
                scores = score_items(
                    model, _chunk_graph(s.graph, start, stop), leaf, model.item_bias,
                    s.user_mem[start:stop], s.ctx[start:stop], s.content,
                    sequence_grad=self.cfg.learn_sequence,
                )
                loss = F.cross_entropy(scores, s.targets[start:stop], reduction="sum") / e
                *grads, g_leaf = torch.autograd.grad(loss, [*self._params, leaf], allow_unused=True)
                del scores
                loss_sum += float(loss.detach())
                _accumulate(sums, grads)
                _accumulate(g_vectors, [g_leaf])
                del grads, g_leaf
            if g_vectors[0] is not None:
                _accumulate(sums, torch.autograd.grad(vectors, self._params, g_vectors[0], allow_unused=True))
        return _Gradient(loss_sum, tuple(sums))

    def _land(self, wait: bool) -> float | None:
        fut = self._inflight
        if fut is None or (not wait and not fut.done()):
            return None
        self._inflight = None
        try:
            grad = fut.result()
        except Exception:  # learning is best effort: the stream goes on with the model as it is
            logger.exception("online-learning step failed; dropped")
            self.dropped += 1
            return None
        return self._update(grad)

    def _update(self, grad: _Gradient | None) -> float | None:
        if grad is None:
            return None
        if not math.isfinite(grad.loss) or not all(
            g is None or bool(torch.isfinite(g).all()) for g in grad.grads
        ):
            logger.warning("online-learning step with a non-finite loss or gradient; dropped")
            self.dropped += 1
            return None
        for p, g in zip(self._params, grad.grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(self._params, 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.table.refresh_from_model()
        self.steps += 1
        return grad.loss


def _chunk_graph(g: GraphInputs, start: int, stop: int) -> GraphInputs:
    """``g``'s inputs for the examples ``start:stop`` of its batch."""
    users, items, feats = g.transitions
    keep = (users >= start) & (users < stop)
    return GraphInputs((users[keep] - start, items[keep], feats[keep]), g.trending)


def _accumulate(sums: list[Tensor | None], grads: Sequence[Tensor | None]) -> None:
    for k, g in enumerate(grads):
        if g is not None:
            current = sums[k]
            sums[k] = g if current is None else current.add_(g)


@dataclass
class _StepInputs:
    user_mem: Tensor  # [E, d]
    ctx: UserContext
    targets: Tensor  # [E]
    memory: Tensor  # [N, d] item memories when the step was taken
    graph_state: Tensor  # [N, d]
    content: Tensor | None  # [N, k]
    graph: GraphInputs


@dataclass
class _Gradient:
    loss: float
    grads: tuple[Tensor | None, ...]
