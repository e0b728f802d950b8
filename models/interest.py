"""The interest model: temporal memory, a next-item query, and repeat-aware scoring against item vectors.

Item vectors combine a learned static embedding with the item's temporal memory:

.. math::  v_i = E_i + W_m s_i

A user's query is built from the memory and the vector of the last item used (a learned transition):

.. math::  q_u = \\mathrm{MLP}([s_u \\,\\|\\, v_{last(u)}])

and an item's score adds a learned bias and a learned function of the user's own history with the
item, because on real logs most interactions return to an item the user already used:

.. math::  score(u, i) = q_u \\cdot v_i + b_i + w^\\top \\log\\big(1 + [\\,\\textstyle\\sum_k \\gamma^k [h_k = i],\\; \\sum_k [h_k = i]\\,]\\big)

where h_0, h_1, … are the user's last L items, most recent first, and γ the recency decay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.memory import MemoryConfig, TemporalMemory

__all__ = ["InterestConfig", "InterestModel"]


@dataclass(frozen=True)
class InterestConfig:
    n_items: int
    dim: int = 64
    time_dim: int = 16
    n_event_types: int = 8
    event_dim: int = 8
    history: int = 20
    repeat_decay: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InterestModel(nn.Module):
    decay_weights: Tensor  # [L] buffer: repeat_decay ** k

    def __init__(self, cfg: InterestConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.memory = TemporalMemory(
            MemoryConfig(cfg.dim, cfg.time_dim, cfg.n_event_types, cfg.event_dim)
        )
        self.item_static = nn.Embedding(cfg.n_items, cfg.dim)
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items))
        self.mem_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.query_mlp = nn.Sequential(nn.Linear(2 * cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.repeat = nn.Linear(2, 1, bias=False)
        self.register_buffer(
            "decay_weights", cfg.repeat_decay ** torch.arange(cfg.history, dtype=torch.float32), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.memory.reset_parameters()
        nn.init.normal_(self.item_static.weight, std=0.1)
        nn.init.zeros_(self.item_bias)
        nn.init.zeros_(self.mem_proj.weight)
        for layer in self.query_mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.constant_(self.repeat.weight, 1.0)

    def item_vectors(self, static: Tensor, memory: Tensor) -> Tensor:
        """Item vectors ``[N, d]`` from static embeddings ``[N, d]`` and memories ``[N, d]``."""
        return static + self.mem_proj(memory)

    def query(self, user_mem: Tensor, last_item_vec: Tensor) -> Tensor:
        """The user's query vector ``[B, d]``; ``last_item_vec`` is zeros for a user with no history."""
        return self.query_mlp(torch.cat([user_mem, last_item_vec], dim=-1))

    def repeat_features(self, history: Tensor, n_items: int) -> Tensor:
        """``[B, N, 2]`` recency-weighted and plain counts of each item in ``history`` ``[B, L]`` (-1 = empty)."""
        b, l = history.shape
        valid = history >= 0
        idx = history.clamp(min=0)
        w = self.decay_weights[:l].expand(b, l) * valid
        recency = torch.zeros((b, n_items), device=history.device).scatter_add_(1, idx, w)
        count = torch.zeros((b, n_items), device=history.device).scatter_add_(1, idx, valid.float())
        return torch.stack([recency, count], dim=-1)

    def scores(self, query: Tensor, item_vecs: Tensor, item_bias: Tensor, history: Tensor) -> Tensor:
        """Scores ``[B, N]`` of every item for each query ``[B, d]``, given the users' histories ``[B, L]``."""
        logits = query @ item_vecs.T + item_bias  # [B, N]
        rep = self.repeat(torch.log1p(self.repeat_features(history, item_vecs.shape[0]))).squeeze(-1)
        return logits + rep
