"""Global item statistics the scorer reads beside the item vectors: the item–item transition graph
(consecutive items of the same user) and decayed popularity ("trending") at two horizons.

Both are folded by the item stage from the user stage's item updates, in event order, and read by
the user stage; like item vectors they are shared by all partitions.
"""

from __future__ import annotations

import struct
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

__all__ = ["ItemGraph"]

#: Up to this many items the transition counts are also kept as a dense matrix, so a batch's rows are
#: one gather instead of a Python walk over sparse rows (2,048² float32 = 16 MiB).
DENSE_MAX_ITEMS = 2048

#: Sparse rows kept as arrays for reading (:meth:`ItemGraph._row`): about 2 KiB each at most.
ROW_CACHE = 50_000

#: A source item keeps the counts of at most twice this many next items: when a row reaches twice
#: this many, it is cut back to the strongest this many. A hub item (a home page, a viral item) would
#: otherwise relate every user who just saw it to most of the catalogue, and the pair scorer's cost
#: and the row's storage would grow with the catalogue. On Wikipedia no row comes near it (the
#: widest has 122 distinct next items over the whole log).
TRANSITIONS_PER_ITEM = 128


class ItemGraph:
    def __init__(
        self,
        n_items: int = 0,
        trending_horizons: tuple[float, ...] = (1_000.0, 100_000.0),
        snapshots: bool = True,
    ) -> None:
        """``trending_horizons``: popularity half-lives in events (the model's config chooses them);
        ``snapshots``: keep the transitions since the last snapshot for :meth:`snapshot_edges` (off
        when no snapshot model reads them, so a long-running worker does not keep every transition)."""
        self.out: dict[int, dict[int, float]] = defaultdict(dict)  # j → {i: count of j → i}
        self._decay = np.array([0.5 ** (1.0 / h) for h in trending_horizons])
        self.trend = np.zeros((n_items, len(trending_horizons)))
        self._dense: Tensor | None = torch.zeros(n_items, n_items) if n_items <= DENSE_MAX_ITEMS else None
        self._snapshots = snapshots
        self._window: list[np.ndarray] = []  # transitions since the last snapshot, [2, n] per batch
        self._trending: tuple[tuple[int, torch.device], Tensor] | None = None
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}  # :meth:`_row`'s arrays
        self.events_since_snapshot = 0
        self.clock = 0  # events observed: popularity decays by one step per event

    def grow(self, n_items: int) -> None:
        if n_items > len(self.trend):
            self.trend = np.vstack([self.trend, np.zeros((n_items - len(self.trend), self.trend.shape[1]))])
        if self._dense is not None and n_items > self._dense.shape[0]:
            if n_items > DENSE_MAX_ITEMS:
                self._dense = None
            else:
                cap = min(DENSE_MAX_ITEMS, max(n_items, 2 * self._dense.shape[0]))
                grown = torch.zeros(cap, cap)
                k = self._dense.shape[0]
                grown[:k, :k] = self._dense
                self._dense = grown

    def observe(self, prev_rows: np.ndarray, rows: np.ndarray) -> list[int]:
        """Fold a batch of events (item rows, and each user's previous item row or -1), in order.
        Returns the source rows whose transition row changed."""
        self.grow(int(rows.max()) + 1 if len(rows) else 0)
        self._trending = None
        self.clock += len(rows)
        self.trend *= self._decay[None, :] ** len(rows)
        # within the batch, later events decay earlier ones by the events between them
        ages = len(rows) - 1 - np.arange(len(rows))
        np.add.at(self.trend, rows, self._decay[None, :] ** ages[:, None])
        if self._dense is not None:
            has = prev_rows >= 0
            self._dense.index_put_(
                (torch.from_numpy(prev_rows[has]), torch.from_numpy(rows[has])), torch.ones(int(has.sum())),
                accumulate=True,
            )
        has = prev_rows >= 0
        if self._snapshots:
            self._window.append(np.stack([prev_rows[has], rows[has]]))
        self.events_since_snapshot += len(rows)
        changed, cut = [], set()
        for j, i in zip(prev_rows.tolist(), rows.tolist()):
            if j >= 0:
                row = self.out[j]
                row[i] = row.get(i, 0.0) + 1.0
                if len(row) >= 2 * TRANSITIONS_PER_ITEM:  # keep the strongest (ties: the earliest seen)
                    self.out[j] = dict(sorted(row.items(), key=lambda kv: -kv[1])[:TRANSITIONS_PER_ITEM])
                    cut.add(j)
                changed.append(j)
                self._rows.pop(j, None)
        if self._dense is not None:
            for j in cut:  # the dense row as the cut sparse row
                row = self.out[j]
                self._dense[j] = 0.0
                self._dense[j, torch.tensor(list(row), dtype=torch.long)] = torch.tensor(list(row.values()))
        return changed

    def advance_clock(self, clock: int) -> None:
        """Decay every item's popularity to event clock ``clock`` (a later one than its own)."""
        if clock > self.clock:
            self.trend *= self._decay[None, :] ** (clock - self.clock)
            self.clock = clock
            self._trending = None

    def set_trend(self, row: int, trend: np.ndarray, clock: int) -> None:
        """Set one item's popularity, given as it was at event clock ``clock``."""
        self.advance_clock(clock)
        self.grow(row + 1)
        self.trend[row] = trend * self._decay ** (self.clock - clock)
        self._trending = None

    def transition_pairs(
        self, recent_rows: np.ndarray, n_items: int, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The items each user's recent distinct items ``[B, K]`` (most recent first, -1 = none) lead
        to: pairs (user ``[P]``, item ``[P]``) with any transition count, and their features ``[P, 3]``:
        log(1 + count) and share of last-item → i among the last item's transitions, and
        log(1 + Σ_k 0.5^k · count(r_k → i)) over the items before it (the user's wider context)."""
        recent = np.asarray(recent_rows, np.int64).reshape(len(recent_rows), -1)
        weights = 0.5 ** np.arange(recent.shape[1])
        if self._dense is not None and n_items <= self._dense.shape[0] and recent.shape[1]:
            r = torch.from_numpy(recent)
            dense = self._dense[:, :n_items]
            last_all = dense[r[:, 0].clamp(min=0)] * (r[:, :1] >= 0)  # [B, N] counts of last item → i
            w = torch.from_numpy(weights[1:]).float() * (r[:, 1:] >= 0)  # [B, K-1]
            ctx_all = torch.bmm(w.unsqueeze(1), dense[r[:, 1:].clamp(min=0)]).squeeze(1)  # [B, N]
            users, items = ((last_all + ctx_all) > 0).nonzero(as_tuple=True)
            last, ctx = last_all[users, items], ctx_all[users, items]
            total = last_all.sum(1)[users]
        else:
            users, items, last, ctx, total = self._sparse_pairs(recent, weights, n_items)
        feats = torch.stack([torch.log1p(last), last / total.clamp(min=1), torch.log1p(ctx)], dim=-1)
        return users.to(device), items.to(device), feats.to(device)

    def _sparse_pairs(
        self, recent: np.ndarray, weights: np.ndarray, n_items: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """:meth:`transition_pairs` from the sparse rows: each (user, recent item) pair's row as arrays
        (:meth:`_row`), concatenated and summed per (user, next item) in one pass."""
        users_of, rows, weight_of = [], [], []
        for b, row in enumerate(recent.tolist()):
            for k, j in enumerate(row):
                if j >= 0:
                    users_of.append(b)
                    rows.append(self._row(j))
                    weight_of.append(k)
        lens = np.array([len(r[0]) for r in rows], np.int64)
        if not lens.sum():
            e = torch.zeros(0)
            return e.long(), e.long(), e, e, e
        b_all = np.repeat(np.array(users_of, np.int64), lens)
        k_all = np.repeat(np.array(weight_of, np.int64), lens)
        i_all = np.concatenate([r[0] for r in rows])
        c_all = np.concatenate([r[1] for r in rows]) * weights[k_all]
        keep = i_all < n_items
        b_all, k_all, i_all, c_all = b_all[keep], k_all[keep], i_all[keep], c_all[keep]
        keys, inverse = np.unique(b_all * n_items + i_all, return_inverse=True)
        first = k_all == 0
        last = np.bincount(inverse, weights=np.where(first, c_all, 0.0), minlength=len(keys))
        ctx = np.bincount(inverse, weights=np.where(first, 0.0, c_all), minlength=len(keys))
        totals = np.zeros(len(recent))
        if recent.shape[1]:
            for b, j in enumerate(recent[:, 0].tolist()):
                if j >= 0:
                    totals[b] = self._row(j)[2]
        users = keys // n_items
        as_float = [torch.from_numpy(v).float() for v in (last, ctx, totals[users])]
        return torch.from_numpy(users), torch.from_numpy(keys % n_items), *as_float  # type: ignore[return-value]

    def _row(self, j: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Row ``j``'s next items ``[n]`` (ascending), their counts ``[n]`` and the row's total, kept
        until the row changes (at most :data:`ROW_CACHE` rows at a time)."""
        got = self._rows.get(j)
        if got is None:
            row = self.out.get(j) or {}
            targets = np.fromiter(row.keys(), np.int64, len(row))
            counts = np.fromiter(row.values(), np.float64, len(row))
            order = np.argsort(targets)
            if len(self._rows) >= ROW_CACHE:
                self._rows.clear()
            got = self._rows[j] = (targets[order], counts[order], float(sum(row.values())))
        return got

    def pair_counts(self, src: Tensor, dst: Tensor) -> Tensor:
        """``[B, k, L]`` transition counts from each of the source rows ``src`` ``[B, L]`` (-1 = none) to
        each of the destination rows ``dst`` ``[B, k]``."""
        b, k = dst.shape
        L = src.shape[1]
        if self._dense is not None and dst.numel() and int(dst.max()) < self._dense.shape[0] and L:
            s, d = src.cpu(), dst.cpu()
            counts = self._dense[s.clamp(min=0)[:, None, :], d[:, :, None]] * (s >= 0)[:, None, :]
            return counts.to(dst.device)
        # every (user, source) slot's next items as one sorted array of keys (slot · n + item), looked
        # up for each (user, destination, source) at once; each distinct source row read once
        srcs, dsts = src.cpu().numpy(), dst.cpu().numpy()
        out = np.zeros((b, k, L), np.float32)
        flat = srcs.reshape(-1)
        slots = np.flatnonzero(flat >= 0)
        uniq, inverse = np.unique(flat[slots], return_inverse=True)
        rows = [self._row(int(j)) for j in uniq.tolist()]
        lens = np.array([len(r[0]) for r in rows], np.int64)[inverse] if len(rows) else np.zeros(0, np.int64)
        if lens.sum():
            targets = np.concatenate([r[0] for r in rows])
            row_counts = np.concatenate([r[1] for r in rows])
            row_start = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])[:-1]])[inverse]
            slot_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
            at_row = np.repeat(row_start - slot_start, lens) + np.arange(int(lens.sum()))
            n = max(int(dsts.max()), int(targets.max())) + 1
            keys = np.repeat(slots, lens) * n + targets[at_row]  # sorted: slots ascending, items within
            slot_of = np.arange(b)[:, None, None] * L + np.arange(L)[None, None, :]  # [B, 1, L]
            want = slot_of * n + np.maximum(dsts, 0)[:, :, None]  # [B, k, L]
            at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
            hit = (keys[at] == want) & (dsts >= 0)[:, :, None] & (srcs >= 0)[:, None, :]
            out[hit] = row_counts[at_row[at[hit]]]
        return torch.from_numpy(out).to(dst.device)

    def pair_totals(self, src: Tensor) -> Tensor:
        """``[B, L]`` all transitions counted from each source row ``src`` ``[B, L]`` (-1 = none: 0)."""
        return torch.tensor([[self._row(j)[2] if j >= 0 else 0.0 for j in row] for row in src.tolist()])

    def snapshot_edges(self, n_items: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Close the current snapshot: the undirected item–item edges ``[2, E]`` of the transitions
        since the last one, without self-loops, with weights log(1 + count) ``[E]``."""
        pairs = np.concatenate(self._window, axis=1) if self._window else np.zeros((2, 0), np.int64)
        self._window, self.events_since_snapshot = [], 0
        pairs = pairs[:, (pairs[0] != pairs[1]) & (pairs < n_items).all(0)]
        both = np.concatenate([pairs, pairs[::-1]], axis=1)
        edges, counts = np.unique(both, axis=1, return_counts=True)
        return (
            torch.from_numpy(edges.astype(np.int64)).to(device),
            torch.from_numpy(np.log1p(counts)).float().to(device),
        )

    def trending(self, n_items: int, device: torch.device) -> Tensor:
        """``[N, H]`` log(1 + decayed count) at each horizon (computed once between two batches: the
        scorer and the reasons both read it)."""
        self.grow(n_items)
        key = (n_items, device)
        if self._trending is None or self._trending[0] != key:
            self._trending = (key, torch.from_numpy(np.log1p(self.trend[:n_items])).float().to(device))
        return self._trending[1]

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
        self._rows.pop(j, None)
        self.grow(max(j, *row) + 1 if row else j + 1)
        if self._dense is not None:
            self._dense[j] = 0.0  # the row as published: entries cut since are gone
            for i, c in row.items():
                self._dense[j, i] = c
