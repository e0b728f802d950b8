"""Alignment of item text with what interactions teach (graph-representation alignment).

A sentence encoder's L2-normalised text vector t_i (engine/catalog/text.py) is projected into the interest
space of the co-interaction graph, P(t_i) = W_2 GELU(W_1 t_i), and trained so that it lands near
the item's collaborative vector c_i there (engine/catalog/cointeraction.py: what interactions say the item
has in common with others). The objective is InfoNCE over a batch of items with enough history
(CLIP's, text → collaborative direction):

.. math::

    L = -\\frac{1}{B} \\sum_i
        \\log \\frac{\\exp(\\cos(P(t_i), c_i) / τ)}{\\sum_j \\exp(\\cos(P(t_i), c_j) / τ)}

Only directions matter: aligned vectors are unit vectors, like the c_i they stand in for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AlignConfig", "TextAlignment"]


@dataclass(frozen=True)
class AlignConfig:
    text_dim: int = 384
    dim: int = 64
    hidden: int = 256
    temperature: float = 0.07

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextAlignment(nn.Module):
    def __init__(self, cfg: AlignConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.dim)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.proj:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, text: Tensor) -> Tensor:
        """Aligned unit vectors ``[N, d]`` for text vectors ``[N, T]``."""
        return F.normalize(self.proj(text), dim=-1)

    def loss(self, text: Tensor, collab: Tensor) -> Tensor:
        """InfoNCE of text vectors ``[B, T]`` against their items' collaborative vectors ``[B, d]``."""
        logits = self(text) @ F.normalize(collab, dim=-1).T / self.cfg.temperature  # [B, B]
        return F.cross_entropy(logits, torch.arange(len(text), device=text.device))
