"""Temporal graph memory for users and items (JODIE / TGN family).

On an interaction (u, i, t, e) both endpoints' memories are updated by a recurrent cell whose input is
the other endpoint's vector, a time encoding of the gap since the endpoint's previous event, and the
event's features:

.. math::

    s_u(t) = \\mathrm{GRU}_u\\big([v_i \\,\\|\\, \\phi(\\log(1 + \\Delta t_u)) \\,\\|\\, e
        \\,\\|\\, w],\\; s_u(t^-)\\big)
    s_i(t) = \\mathrm{GRU}_i\\big([s_u(t^-) \\,\\|\\, \\phi(\\log(1 + \\Delta t_i)) \\,\\|\\, e
        \\,\\|\\, w],\\; s_i(t^-)\\big)

so a user's interest evolves as v_u(t + τ) = v_u(t) + Δv_u(t). φ is TGN's time encoding
(:class:`TimeEncoding`, ``cos(W x + b)``). Kumar et al., "Predicting Dynamic Embedding Trajectory in
Temporal Interaction Networks" (JODIE, KDD 2019); Rossi et al., "Temporal Graph Networks" (2020).

The module holds parameters only: memories live in the engine's state stores and are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MemoryConfig", "TemporalMemory", "TimeEncoding"]


class TimeEncoding(nn.Module):
    """TGN's time encoding (Rossi et al. 2020; Xu et al., TGAT, 2020): ``cos(W x + b)`` of a scalar per
    row, ``[...]`` → ``[N, out]``. Its parameters (``lin.weight``, ``lin.bias``), their initialisation
    and its output are those of PyG's ``TimeEncoder``, defined here so that loading a model does not
    import torch_geometric, which takes seconds (models/interest.py)."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(1, out)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return torch.cos(self.lin(x.reshape(-1, 1)))


@dataclass(frozen=True)
class MemoryConfig:
    dim: int = 64
    time_dim: int = 16
    n_event_types: int = 8
    event_dim: int = 8


class TemporalMemory(nn.Module):
    """Recurrent memory updates for both endpoints of a batch of interactions."""

    def __init__(self, cfg: MemoryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.time_enc = TimeEncoding(cfg.time_dim)
        self.event_emb = nn.Embedding(cfg.n_event_types, cfg.event_dim)
        msg_dim = cfg.dim + cfg.time_dim + cfg.event_dim + 1
        self.user_cell = nn.GRUCell(msg_dim, cfg.dim)
        self.item_cell = nn.GRUCell(msg_dim, cfg.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.time_enc.reset_parameters()
        self.event_emb.reset_parameters()
        self.user_cell.reset_parameters()
        self.item_cell.reset_parameters()

    def _context(self, dt: Tensor, event_type: Tensor, weight: Tensor) -> Tensor:
        # Gaps span seconds to months: the log keeps the time encoder's input in a sane range.
        t = self.time_enc(torch.log1p(dt.clamp(min=0)).unsqueeze(-1))  # [B, time_dim]
        return torch.cat([t, self.event_emb(event_type), weight.unsqueeze(-1)], dim=-1)

    def message(self, other: Tensor, dt: Tensor, event_type: Tensor, weight: Tensor) -> Tensor:
        """The cells' inputs ``[B, msg_dim]``: the other endpoint's vector ``[B, d]``, the gap since
        this endpoint's previous event ``[B]`` (seconds), event-type ids ``[B]`` and weights ``[B]``.
        None of it depends on the memory being updated, so a batch computes all its messages in one
        call and runs only the cells in sequential rounds."""
        return torch.cat([other, self._context(dt, event_type, weight)], dim=-1)

    def update_users(
        self, user_mem: Tensor, item_vec: Tensor, dt: Tensor, event_type: Tensor, weight: Tensor
    ) -> Tensor:
        """New user memories ``[B, d]`` from memories ``[B, d]``, the items' vectors ``[B, d]``,
        gaps ``[B]`` in seconds, event-type ids ``[B]`` and weights ``[B]``."""
        return self.user_cell(self.message(item_vec, dt, event_type, weight), user_mem)

    def update_items(
        self, item_mem: Tensor, user_vec: Tensor, dt: Tensor, event_type: Tensor, weight: Tensor
    ) -> Tensor:
        """New item memories ``[B, d]``; ``user_vec`` is the user's memory before this event."""
        return self.item_cell(self.message(user_vec, dt, event_type, weight), item_mem)
