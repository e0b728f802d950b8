"""Sequence model over a user's last L interactions, with time-interval encoding.

Each of the last L events is the vector of its item, plus a time encoding of how long before the
query time it happened and an event-type embedding. One self-attention layer lets the events read
each other (which of the recent items belong together), then a learned "now" query pools them into
one vector, attending by content and by age:

.. math::  h_k = v_{i_k} + W_t \\phi(\\log(1 + (t_q - t_k))) + e_{type_k}, \\quad
           z_u = \\mathrm{Pool}(\\mathrm{SelfAttn}(h_1..h_L))

φ is TGN's time encoding (models/memory.py's :class:`TimeEncoding`). Time intervals rather than
positions follow TiSASRec (Li, Wang, McAuley, WSDM 2020): two events a minute apart and two a week
apart are not alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.memory import TimeEncoding

__all__ = ["SequenceConfig", "SequenceEncoder"]


@dataclass(frozen=True)
class SequenceConfig:
    dim: int = 64
    time_dim: int = 16
    n_event_types: int = 8
    heads: int = 2


class SequenceEncoder(nn.Module):
    def __init__(self, cfg: SequenceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.time_enc = TimeEncoding(cfg.time_dim)
        self.time_proj = nn.Linear(cfg.time_dim, cfg.dim)
        self.event_emb = nn.Embedding(cfg.n_event_types, cfg.dim)
        self.layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.pool_query = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pool = nn.MultiheadAttention(cfg.dim, cfg.heads, batch_first=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.time_enc.reset_parameters()
        self.time_proj.reset_parameters()
        nn.init.normal_(self.event_emb.weight, std=0.02)
        nn.init.normal_(self.pool_query, std=0.02)

    def forward(self, item_vecs: Tensor, ages: Tensor, event_types: Tensor, valid: Tensor) -> Tensor:
        """``[B, d]`` from the last events' item vectors ``[B, L, d]``, their ages before the query
        time in seconds ``[B, L]``, event-type ids ``[B, L]`` and a mask of real events ``[B, L]``.
        Users with no events get zeros."""
        b = item_vecs.shape[0]
        if item_vecs.shape[1] == 0:
            return item_vecs.new_zeros(b, self.cfg.dim)
        t = self.time_enc(torch.log1p(ages.clamp(min=0)).reshape(-1, 1)).reshape(*ages.shape, -1)
        h = item_vecs + self.time_proj(t) + self.event_emb(event_types)
        any_event = valid.any(1)
        # A row with no events attends to its first (zero) slot rather than to nothing (NaN); zeroed below.
        pad = ~valid
        pad[:, 0] &= any_event
        h = self.layer(h, src_key_padding_mask=pad)
        z, _ = self.pool(self.pool_query.expand(b, -1, -1), h, h, key_padding_mask=pad, need_weights=False)
        return z.squeeze(1) * any_event.unsqueeze(1)
