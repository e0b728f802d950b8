"""Item-graph snapshot model: a recurrent graph convolution over periodic snapshots of the item graph.

Every ``snapshot_every`` events the item stage closes a snapshot: the item–item edges of that window
(consecutive items of the same user, both directions, weight log(1 + count)). torch-geometric-temporal's
GConvGRU (Seo et al., "Structured Sequence Modeling with Graph Convolutional Recurrent Networks",
2018: a GRU whose gates are Chebyshev graph convolutions) carries each item's graph state across
snapshots,

.. math::  H_k = \\mathrm{GConvGRU}(X, E_k, H_{k-1})

with X the items' static embeddings, so an item's vector can take in what its neighbours of recent
windows are like (models/interest.py adds W_g H_k to the item vectors). Issue 4's attribute edges
join the same snapshots.
"""

from __future__ import annotations

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

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor, h: Tensor) -> Tensor:
        """New graph states ``[N, d]`` from item features ``x`` ``[N, d]``, one snapshot's edges
        ``[2, E]`` with weights ``[E]``, and the previous states ``h`` ``[N, d]``."""
        return self.cell(x, edge_index, edge_weight, h)
