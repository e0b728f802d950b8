"""The interest model: temporal memory, a next-item query, and repeat-aware scoring against item vectors.

Item vectors combine a learned static embedding with the item's temporal memory:

.. math::  v_i = E_i + W_m s_i

A user's query is built from the memory and the vector of the last item used (a learned transition):

.. math::  q_u = \\mathrm{MLP}([s_u \\,\\|\\, v_{last(u)}])

and an item's score adds a learned bias, a learned function of the user's own relation to the item,
and learned weights on the item's global popularity:

.. math::  score(u, i) = q_u \\cdot v_i + b_i + g(x_{ui}) + w^\\top p_i

where x_ui holds the user's profile features of item i (recency-weighted counts Σ γ^(events ago)
for each decay γ, the count, how recently in time and in distinct items the user last used i; see
engine/profile.py) and the transition from the user's last item to i (log count and share of the
last item's transitions);
g is a small MLP with g(0) = 0, and p_i is log decayed popularity at two horizons. On real logs most
interactions return to an item the user already used, and the strongest simple baselines are
exactly these statistics; the model learns how to weigh them against the memory.
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
    profile_items: int = 48  # distinct items per user profile (M)
    n_profile_features: int = 5
    n_transition_features: int = 3
    feature_hidden: int = 32
    n_trending: int = 2
    use_memory: bool = True  # ablation switch: the q·v term of memory and static item vectors
    use_item_bias: bool = True  # a static per-item bias (popularity in the training period)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InterestModel(nn.Module):
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
        n_feat = cfg.n_profile_features + cfg.n_transition_features
        self.pair_mlp = nn.Sequential(nn.Linear(n_feat, cfg.feature_hidden), nn.GELU(), nn.Linear(cfg.feature_hidden, 1))
        self.trend = nn.Linear(cfg.n_trending, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.memory.reset_parameters()
        nn.init.normal_(self.item_static.weight, std=0.1)
        nn.init.zeros_(self.item_bias)
        nn.init.zeros_(self.mem_proj.weight)
        for layer in [*self.query_mlp, *self.pair_mlp]:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.trend.weight)

    def item_vectors(self, static: Tensor, memory: Tensor) -> Tensor:
        """Item vectors ``[N, d]`` from static embeddings ``[N, d]`` and memories ``[N, d]``."""
        return static + self.mem_proj(memory)

    def query(self, user_mem: Tensor, last_item_vec: Tensor) -> Tensor:
        """The user's query vector ``[B, d]``; ``last_item_vec`` is zeros for a user with no history."""
        return self.query_mlp(torch.cat([user_mem, last_item_vec], dim=-1))

    def pair_features(self, prof_rows: Tensor, prof_feats: Tensor, transitions: Tensor, n_items: int) -> Tensor:
        """``[B, N, F]`` user–item features: the profile features ``[B, M, Fp]`` of each user's profile
        items ``[B, M]`` (-1 = empty) spread over all items, then the transition features ``[B, N, 2]``
        of each user's last item. Zero for unrelated items."""
        b, m, f = prof_feats.shape
        valid = (prof_rows >= 0).unsqueeze(-1)
        idx = prof_rows.clamp(min=0).unsqueeze(-1).expand(b, m, f)
        x = torch.zeros((b, n_items, f), device=prof_feats.device).scatter_add_(1, idx, prof_feats * valid)
        return torch.cat([x, transitions], dim=-1)

    def scores(
        self,
        query: Tensor,
        item_vecs: Tensor,
        item_bias: Tensor,
        prof_rows: Tensor,
        prof_feats: Tensor,
        transitions: Tensor,
        trending: Tensor,
    ) -> Tensor:
        """Scores ``[B, N]`` of every item: queries ``[B, d]``, item vectors ``[N, d]``, biases ``[N]``,
        profiles ``[B, M]`` and ``[B, M, Fp]``, transition features ``[B, N, 2]``, popularity ``[N, n_trending]``."""
        n = item_vecs.shape[0]
        x = self.pair_features(prof_rows, prof_feats, transitions, n)  # [B, N, F]
        # Most (user, item) pairs are unrelated (x = 0): run the MLP on the related ones only; g(0) = 0.
        related = (transitions > 0).any(-1)  # [B, N]
        valid = prof_rows >= 0
        users = torch.arange(prof_rows.shape[0], device=prof_rows.device).unsqueeze(1).expand_as(prof_rows)
        related[users[valid], prof_rows[valid]] = True
        g = torch.zeros(related.shape, device=x.device, dtype=x.dtype)
        g[related] = (self.pair_mlp(x[related]) - self.pair_mlp(torch.zeros_like(x[:1, 0]))).squeeze(-1)
        out = g + self.trend(trending).squeeze(-1)
        if self.cfg.use_item_bias:
            out = out + item_bias
        return out + query @ item_vecs.T if self.cfg.use_memory else out.expand(query.shape[0], -1)
