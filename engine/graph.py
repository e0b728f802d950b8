"""Global item statistics the scorer reads beside the item vectors: the item–item transition graph
(consecutive items of the same user) and decayed popularity ("trending") at two horizons.

Both are folded by the item stage from the user stage's item updates, in event order, and read by
the user stage; like item vectors they are shared by all partitions.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

__all__ = ["ItemGraph", "TRENDING_HORIZONS"]

#: Popularity half-lives, in events: a short one that follows bursts and a long one that is stable.
TRENDING_HORIZONS = (1_000.0, 100_000.0)


class ItemGraph:
    def __init__(self, n_items: int = 0) -> None:
        self.out: dict[int, dict[int, float]] = defaultdict(dict)  # j → {i: count of j → i}
        self.out_total: dict[int, float] = defaultdict(float)
        self._decay = np.array([0.5 ** (1.0 / h) for h in TRENDING_HORIZONS])
        self.trend = np.zeros((n_items, len(TRENDING_HORIZONS)))

    def grow(self, n_items: int) -> None:
        if n_items > len(self.trend):
            self.trend = np.vstack([self.trend, np.zeros((n_items - len(self.trend), self.trend.shape[1]))])

    def observe(self, prev_rows: np.ndarray, rows: np.ndarray) -> list[int]:
        """Fold a batch of events (item rows, and each user's previous item row or -1), in order.
        Returns the source rows whose transition row changed."""
        self.grow(int(rows.max()) + 1 if len(rows) else 0)
        self.trend *= self._decay[None, :] ** len(rows)
        # within the batch, later events decay earlier ones by the events between them
        ages = len(rows) - 1 - np.arange(len(rows))
        np.add.at(self.trend, rows, self._decay[None, :] ** ages[:, None])
        changed = []
        for j, i in zip(prev_rows.tolist(), rows.tolist()):
            if j >= 0:
                row = self.out[j]
                row[i] = row.get(i, 0.0) + 1.0
                self.out_total[j] += 1.0
                changed.append(j)
        return changed

    def transition_features(self, last_rows: np.ndarray, n_items: int, device: torch.device) -> Tensor:
        """``[B, N, 2]``: log(1 + count) and share of j → i among j's transitions, for each user's last item j."""
        b = len(last_rows)
        out = torch.zeros((b, n_items, 2), device=device)
        idx_b, idx_i, vals, shares = [], [], [], []
        for k, j in enumerate(last_rows.tolist()):
            row = self.out.get(j) if j >= 0 else None
            if row:
                total = self.out_total[j]
                idx_b.extend([k] * len(row))
                idx_i.extend(row.keys())
                counts = list(row.values())
                vals.extend(counts)
                shares.extend(c / total for c in counts)
        if idx_b:
            ib = torch.tensor(idx_b, device=device)
            ii = torch.tensor(idx_i, device=device)
            out[ib, ii, 0] = torch.log1p(torch.tensor(vals, device=device))
            out[ib, ii, 1] = torch.tensor(shares, device=device)
        return out

    def trending(self, n_items: int, device: torch.device) -> Tensor:
        """``[N, 2]`` log(1 + decayed count) at each horizon."""
        self.grow(n_items)
        return torch.from_numpy(np.log1p(self.trend[:n_items])).float().to(device)

    # Persistence of one transition row: u32 n, then n × (u32 target row, f32 count); rows are item
    # rows of the owning table, so the item stage stores them keyed by item id and maps on restore.
    def encode_row(self, j: int, ids: list[str]) -> bytes:
        row = self.out.get(j, {})
        parts = [struct.pack("<I", len(row))]
        for i, c in row.items():
            b = ids[i].encode("utf-8")
            parts.append(struct.pack("<Bf", len(b), c) + b)
        return b"".join(parts)

    def decode_row(self, j: int, raw: bytes, row_of) -> None:  # type: ignore[no-untyped-def]
        (n,) = struct.unpack_from("<I", raw, 0)
        pos = 4
        row: dict[int, float] = {}
        for _ in range(n):
            ln, c = struct.unpack_from("<Bf", raw, pos)
            pos += 5
            row[row_of(raw[pos : pos + ln].decode("utf-8"))] = c
            pos += ln
        self.out[j] = row
        self.out_total[j] = math.fsum(row.values())
