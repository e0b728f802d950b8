"""Item-graph snapshot model: a recurrent graph convolution over periodic snapshots of the item graph.

Every ``snapshot_every`` events the item stage closes a snapshot: the item–item edges of that window
(consecutive items of the same user, both directions, weight log(1 + count)). torch-geometric-temporal's
GConvGRU (Seo et al., "Structured Sequence Modeling with Graph Convolutional Recurrent Networks",
2018: a GRU whose gates are Chebyshev graph convolutions) carries each item's graph state across
snapshots,

.. math::  H_k = \\mathrm{GConvGRU}(X, E_k, H_{k-1})

with X the items' static embeddings, so an item's vector can take in what its neighbours of recent
windows are like (models/interest.py adds W_g H_k to the item vectors).

With a catalogue, the item–attribute edges (``genre=jazz``, ``brand=…``; engine/catalog/knowledge.py) join
every snapshot as typed nodes: one node per attribute value, its features and state the mean of
its items', linked to each of its items both ways; so two items that share a genre or a brand
inform each other through the convolution even if no one has used both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric_temporal.nn.recurrent import GConvGRU

__all__ = ["GraphSnapshotModel"]


class GraphSnapshotModel(nn.Module):
    def __init__(self, dim: int, k: int = 2) -> None:
        super().__init__()
        self.cell = GConvGRU(dim, dim, K=k)

    def reset_parameters(self) -> None:
        for m in self.cell.modules():
            if m is not self.cell and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_weight: Tensor, h: Tensor,
        attributes: tuple[Tensor, Tensor, int] | None = None,
    ) -> Tensor:
        """New graph states ``[N, d]`` from item features ``x`` ``[N, d]``, one snapshot's edges
        ``[2, E]`` with weights ``[E]``, the previous states ``h`` ``[N, d]`` and, optionally, the
        item–attribute edges (item rows ``[A_E]``, attribute indices ``[A_E]``, number of attributes)."""
        if attributes is None or len(attributes[0]) == 0:
            return self.cell(x, edge_index, edge_weight, h)
        rows, attrs, n_attr = attributes
        n = x.shape[0]
        size = torch.zeros(n_attr, device=x.device).index_add_(
            0, attrs, torch.ones_like(attrs, dtype=x.dtype)
        )

        def mean(v: Tensor) -> Tensor:  # [A, d]: each attribute node's mean over its items
            total = torch.zeros(n_attr, v.shape[1], device=v.device).index_add_(0, attrs, v[rows])
            return total / size.clamp(min=1).unsqueeze(-1)

        nodes = attrs + n
        extra = torch.cat([torch.stack([rows, nodes]), torch.stack([nodes, rows])], dim=1)
        out = self.cell(
            torch.cat([x, mean(x)]),
            torch.cat([edge_index, extra], dim=1),
            torch.cat([edge_weight, torch.ones(extra.shape[1], device=x.device)]),
            torch.cat([h, mean(h)]),
        )
        return out[:n]
