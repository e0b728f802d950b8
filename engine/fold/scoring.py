"""Scoring every item for a batch of users: the engine gathers one :class:`~models.interest.ScoringInputs`
and the model scores it in one call; one function for training, online learning and serving, so the
three see exactly the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.fold.context import UserContext
from engine.fold.graph import ItemGraph
from models.interest import InterestModel, ScoringInputs

__all__ = ["CONTEXT_ITEMS", "GraphInputs", "graph_inputs", "score_items", "scoring_inputs"]

CONTEXT_ITEMS = 4  # the user's most recent distinct items whose transitions feed the scorer


@dataclass(frozen=True)
class GraphInputs:
    """What scoring reads from the item graph for a batch of users, taken at one moment: the
    transition pairs of :meth:`ItemGraph.transition_pairs` and the popularity ``[N, H]``."""

    transitions: tuple[Tensor, Tensor, Tensor]
    trending: Tensor


def graph_inputs(graph: ItemGraph, ctx: UserContext, n_items: int, device: torch.device) -> GraphInputs:
    return GraphInputs(
        graph.transition_pairs(ctx.prof_rows[:, :CONTEXT_ITEMS].cpu().numpy(), n_items, device),
        graph.trending(n_items, device),
    )


def score_items(
    model: InterestModel, graph: ItemGraph | GraphInputs, vectors: Tensor, bias: Tensor, mem: Tensor,
    ctx: UserContext,
    content: Tensor | None = None,
    queries: list[Tensor] | None = None,
    sequence_grad: bool = True,
) -> Tensor:
    """Scores ``[B, N]`` of the ``N`` items with ``vectors`` ``[N, d]``, ``bias`` ``[N]`` and co-interaction
    vectors ``content`` ``[N, k]`` for users with memories ``mem`` ``[B, d]`` and contexts ``ctx`` (on the
    same device), reading the item graph now or, given :class:`GraphInputs`, as it was when those
    were taken. With ``queries``, the users' query vectors ``[B, d]`` are appended to it (for the
    multi-task head)."""
    scores, q = model(scoring_inputs(model, graph, vectors, bias, mem, ctx, content), sequence_grad)
    if queries is not None:
        queries.append(q)
    return scores


def scoring_inputs(
    model: InterestModel, graph: ItemGraph | GraphInputs, vectors: Tensor, bias: Tensor, mem: Tensor,
    ctx: UserContext, content: Tensor | None = None,
) -> ScoringInputs:
    """Gather what the model scores from: the vectors of the users' last events' items and the item
    graph's inputs (``content``: the items' co-interaction vectors, passed on)."""
    seq_len = min(model.cfg.seq_len, ctx.hist_rows.shape[1])
    hist = ctx.hist_rows[:, :seq_len]
    valid = hist >= 0
    hist_vecs = vectors[hist.clamp(min=0)] * valid.unsqueeze(-1)  # [B, L, d]
    last = ctx.last_rows
    last_vec = vectors[last.clamp(min=0)] * (last >= 0).unsqueeze(-1)
    g = graph if isinstance(graph, GraphInputs) else graph_inputs(graph, ctx, vectors.shape[0], mem.device)
    return ScoringInputs(
        mem=mem, last_vec=last_vec, hist_rows=hist, hist_vecs=hist_vecs, hist_ages=ctx.hist_ages[:, :seq_len],
        hist_types=ctx.hist_types[:, :seq_len], hist_valid=valid, gap=ctx.gap, vectors=vectors, bias=bias,
        prof_rows=ctx.prof_rows, prof_feats=ctx.prof_feats, transitions=g.transitions, trending=g.trending,
        content=content,
    )
