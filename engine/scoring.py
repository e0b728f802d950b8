"""Scoring every item for a batch of users: one function for training, online learning and serving,
so the three see exactly the same inputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engine.graph import ItemGraph
from models.interest import InterestModel

__all__ = ["CONTEXT_ITEMS", "score_items"]

CONTEXT_ITEMS = 4  # the user's most recent distinct items whose transitions feed the scorer


def score_items(
    model: InterestModel,
    graph: ItemGraph,
    vectors: Tensor,
    bias: Tensor,
    mem: Tensor,
    prof_rows: Tensor,
    prof_feats: Tensor,
    last_rows: np.ndarray,
) -> Tensor:
    """Scores ``[B, N]`` of the ``N`` items with ``vectors`` ``[N, d]`` and ``bias`` ``[N]`` for users with
    memories ``mem`` ``[B, d]``, profiles ``[B, M]`` / ``[B, M, F]`` and last item rows ``[B]`` (-1 = none)."""
    n = vectors.shape[0]
    dev = mem.device
    last = torch.from_numpy(last_rows).to(dev)
    last_vec = torch.where((last >= 0).unsqueeze(1), vectors[last.clamp(min=0)], torch.zeros_like(mem))
    q = model.query(mem, last_vec)
    transitions = graph.transition_features(prof_rows[:, :CONTEXT_ITEMS].cpu().numpy(), n, dev)
    return model.scores(q, vectors, bias, prof_rows, prof_feats, transitions, graph.trending(n, dev))
