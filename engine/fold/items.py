"""Item stage: the table of item vectors every user-stage batch scores against, and the fold of the
user side of each interaction into item memories.

The user stage reads ``ItemTable.vectors()`` and forwards :class:`ItemUpdates`; the item stage
applies them and hands over the item state to persist, with a per-source-partition watermark, for
the same atomic write as the users' state of those events, so an update is never applied twice and
a crash never leaves items ahead of users. In a multi-worker deployment the item stage is its own
consumer of ``tide.item-updates`` and workers refresh their table from ``tide.item-vectors``; here
both stages may also run in one process, joined by a direct call.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.catalog.knowledge import Catalog, knowledge_vectors
from engine.state.codec import ItemState, decode_item, encode_item
from engine.fold.graph import ItemGraph
from engine.fold.rounds import occurrence_rounds, previous_occurrence
from engine.state.store import PartitionStore, _Batch, new_transaction
from models.interest import InterestModel

__all__ = ["ItemStage", "ItemTable", "ItemUpdates"]

logger = logging.getLogger(__name__)

_WATERMARK = b"\x00wm/"  # + partition as decimal; cannot collide with a utf-8 item id key prefix "i/"
_ITEM = b"i/"
_TRANSITIONS = b"t/"  # + item id: that item's outgoing transition row
_GRAPH_STATE = b"\x00graph"  # the snapshot model's item states: u32 n, then n × (u8 len + id, f16[d])


class ItemTable:
    """Every item this worker knows: id ↔ row, learned static part, bias, temporal memory, what the
    catalogue says about it (knowledge vector, engine/catalog/knowledge.py), and the cached item vectors derived
    from them (recomputed only for rows that change)."""

    def __init__(self, model: InterestModel, ids: Sequence[str], device: torch.device) -> None:
        self.model = model
        self.device = device
        self.ids: list[str] = list(ids)
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.ids)}
        n, d = len(self.ids), model.cfg.dim
        with torch.no_grad():
            self._static = model.item_static.weight.detach().to(device).clone()
            self._bias = model.item_bias.detach().to(device).clone()
        self._new_bias = float(self._bias.min()) if n else 0.0  # unseen items start as the least popular
        # a new catalogue item starts neutral instead: its knowledge vector decides how it ranks
        self._catalog_bias = float(self._bias.median()) if n else 0.0
        self._trained_counts = model.item_counts.detach().to(device).clone()
        self._own_content = model.item_content.detach().to(device).clone()  # [N, k] co-interaction vectors
        self._content: Tensor | None = None
        self.catalog: Catalog | None = None
        self._aligned = torch.zeros(n, model.cfg.content_dim, device=device)  # aligned text vectors
        self._has_text = torch.zeros(n, dtype=torch.bool, device=device)
        self._knowledge = torch.zeros(n, model.cfg.content_dim, device=device)
        self._edges: tuple[Tensor, Tensor, int] = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0)
        self.attribute_names: list[str] = []
        self.attribute_ids = torch.zeros(n, 0, dtype=torch.long, device=device)  # [N, A] for explanations
        self._memory = torch.zeros(n, d, device=device)
        self._graph_state = torch.zeros(n, d, device=device)  # item-graph snapshot model states
        self.last_t = np.full(n, np.nan)
        self.count = np.zeros(n, np.int64)
        self.graph = ItemGraph(n, model.cfg.trending_horizons, snapshots=model.cfg.use_graph_snapshots)
        self._vectors: Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.model.cfg.dim

    def row(self, item_id: str) -> int:
        """The row of ``item_id``, adding the item (cold: no static embedding, no memory) if new."""
        r = self.index.get(item_id)
        if r is None:
            r = self._add(item_id)
        return r

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        index = self.index
        try:
            return np.array([index[i] for i in item_ids], np.int64)
        except KeyError:  # a new item among them: add it
            return np.fromiter((self.row(i) for i in item_ids), np.int64, len(item_ids))

    def _add(self, item_id: str) -> int:
        r = len(self.ids)
        self.ids.append(item_id)
        self.index[item_id] = r
        d = self.dim
        self._static = torch.cat([self._static, torch.zeros(1, d, device=self.device)])
        self._bias = torch.cat([self._bias, torch.full((1,), self._new_bias, device=self.device)])
        self._memory = torch.cat([self._memory, torch.zeros(1, d, device=self.device)])
        self._graph_state = torch.cat([self._graph_state, torch.zeros(1, d, device=self.device)])
        self._trained_counts = torch.cat([self._trained_counts, torch.zeros(1, device=self.device)])
        self._own_content = torch.cat([self._own_content, self._own_content.new_zeros(1, self._own_content.shape[1])])
        self._content = None
        self._aligned = torch.cat([self._aligned, self._aligned.new_zeros(1, self._aligned.shape[1])])
        self._has_text = torch.cat([self._has_text, torch.zeros(1, dtype=torch.bool, device=self.device)])
        self._knowledge = torch.cat([self._knowledge, self._knowledge.new_zeros(1, self._knowledge.shape[1])])
        self.attribute_ids = torch.cat(
            [self.attribute_ids, torch.full((1, self.attribute_ids.shape[1]), -1, dtype=torch.long, device=self.device)]
        )
        self.last_t = np.append(self.last_t, np.nan)
        self.count = np.append(self.count, 0)
        self._vectors = None
        return r

    @torch.no_grad()
    def refresh_from_model(self) -> None:
        """Take the model's current static embeddings and biases (after a learning step)."""
        n = self.model.cfg.n_items
        self._static[:n] = self.model.item_static.weight.detach().to(self.device)
        self._bias[:n] = self.model.item_bias.detach().to(self.device)
        self._vectors = None
    def counts(self, rows: Tensor | None = None) -> Tensor:
        """Interactions per item ``[N]`` (or of ``rows``): in training or in the stream, whichever saw more
        (the stream may replay the training log)."""
        stream = torch.from_numpy(self.count if rows is None else self.count[rows.cpu().numpy()])
        trained = self._trained_counts if rows is None else self._trained_counts[rows]
        return torch.maximum(trained, stream.to(self.device, torch.float32))

    def attach_catalog(self, catalog: Catalog) -> None:
        """Use ``catalog``'s text and attributes; its items become recommendable at once."""
        self.catalog = catalog
        self.catalog_changed(list(catalog.entries))

    @torch.no_grad()
    def catalog_changed(self, item_ids: Sequence[str]) -> None:
        """Catalogue entries of ``item_ids`` were added or changed: add new items as rows, align their
        text, and recompute every item's knowledge vector."""
        assert self.catalog is not None
        new = [i for i in item_ids if i not in self.index]
        for item_id in new:
            r = self._add(item_id)
            self._bias[r] = self._catalog_bias
        align = self.model.align
        if align is not None and item_ids:
            rows = self.rows(list(item_ids))
            text, has = self.catalog.text_matrix(list(item_ids), align.cfg.text_dim)
            rt = torch.from_numpy(rows).to(self.device)
            self._aligned[rt] = align(torch.from_numpy(text).to(self.device))
            self._has_text[rt] = torch.from_numpy(has).to(self.device)
        rows_e, attrs, names = self.catalog.attribute_edges(self.ids)
        self._edges = (torch.from_numpy(rows_e).to(self.device), torch.from_numpy(attrs).to(self.device), len(names))
        self.attribute_names = names
        self.attribute_ids = _padded(rows_e, attrs, len(self), MAX_ATTRIBUTES).to(self.device)
        # attribute neighbourhoods are weighted by use: they are as of this change
        self._knowledge = knowledge_vectors(
            self._aligned, self._has_text, self._edges, self._own_content, self.counts()
        )
        self._content = None
        if new:
            logger.info("catalogue: %d new items, %d changed", len(new), len(item_ids) - len(new))

    @property
    def bias(self) -> Tensor:
        return self._bias

    @property
    def memory(self) -> Tensor:
        return self._memory

    def vectors(self) -> Tensor:
        """Item vectors ``[N, d]`` for scoring."""
        if self._vectors is None:
            with torch.no_grad():
                self._vectors = self.model.item_vectors(self._static, self._memory, self._graph_state)
        return self._vectors

    def vectors_of(self, rows: Tensor) -> Tensor:
        """Item vectors ``[B, d]`` of ``rows`` ``[B]``, computed for exactly these rows from their current
        parts: the values of :meth:`vectors`, but independent of which rows the cache last recomputed
        (a matrix product's last bits depend on its shape), so state folded from them is the same
        whether or not the worker restarted in between."""
        with torch.no_grad():
            return self.model.item_vectors(self._static[rows], self._memory[rows], self._graph_state[rows])

    def content(self) -> Tensor | None:
        """Co-interaction vectors ``[N, k]`` for scoring (an item's own, handed over from its catalogue
        knowledge), or None when the model has no co-interaction term."""
        if self.model.cfg.content_dim == 0:
            return None
        if self._content is None:
            with torch.no_grad():
                self._content = self.model.handover(self._own_content, self._knowledge, self.counts())
        return self._content

    @property
    def knowledge(self) -> Tensor:
        return self._knowledge

    def title(self, row: int) -> str:
        """The catalogue title of ``row``, or its id."""
        item_id = self.ids[row]
        entry = self.catalog.get(item_id) if self.catalog is not None else None
        return entry.title if entry is not None and entry.title else item_id

    @property
    def graph_state(self) -> Tensor:
        return self._graph_state

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Close the item-graph snapshot and advance the snapshot model's item states over it."""
        edges = self.graph.snapshot_edges(len(self), self.device)
        attributes = self._edges if self.catalog is not None else None
        self.set_graph_state(self.model.graph_model(self._static, *edges, self._graph_state, attributes))

    def set_graph_state(self, state: Tensor) -> None:
        self._graph_state = state
        self._vectors = None

    def set_memory(self, rows: Tensor, memory: Tensor) -> None:
        self._memory[rows] = memory
        if self._vectors is not None:
            with torch.no_grad():
                self._vectors[rows] = self.model.item_vectors(self._static[rows], memory, self._graph_state[rows])
        if self.catalog is not None:
            self._content = None  # counts moved: the knowledge handover with them


MAX_ATTRIBUTES = 8  # attributes per item kept for explanations


def _padded(rows: np.ndarray, attrs: np.ndarray, n: int, width: int) -> Tensor:
    """``[n, ≤ width]`` attribute indices per row (edges sorted by row), -1 padded."""
    counts = np.bincount(rows, minlength=n) if len(rows) else np.zeros(n, np.int64)
    w = int(min(width, counts.max())) if n and len(rows) else 0
    out = np.full((n, w), -1, np.int64)
    if w:
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(len(rows)) - start[rows]
        keep = pos < w
        out[rows[keep], pos[keep]] = attrs[keep]
    return torch.from_numpy(out)


@dataclass
class ItemUpdates:
    """The user side of a batch of folded interactions, in fold order."""

    rows: np.ndarray  # [B] item rows
    prev_rows: np.ndarray  # [B] the user's previous item row, -1 for a user's first event
    user_vec: Tensor  # [B, d] user memory before the event
    ts: np.ndarray  # [B] event time
    event_types: np.ndarray  # [B]
    weights: np.ndarray  # [B]
    partitions: np.ndarray  # [B] source partition
    offsets: np.ndarray  # [B] source offset

    def __len__(self) -> int:
        return len(self.rows)


class ItemStage:
    """Folds :class:`ItemUpdates` into item memories and persists them (with watermarks) in ``store``."""

    def __init__(self, model: InterestModel, table: ItemTable, store: PartitionStore | None) -> None:
        self.model = model
        self.table = table
        self.store = store
        self.watermarks: dict[int, int] = {}
        self._pending: _Batch | None = None  # item state changed by folds, not yet written
        if store is not None:
            self._restore(store)

    def _restore(self, store: PartitionStore) -> None:
        n = 0
        rows, mems = [], []
        transitions: list[tuple[str, bytes]] = []
        graph_state: bytes | None = None
        for key, value in store.items():
            if key == _GRAPH_STATE:
                graph_state = value
            elif key.startswith(_WATERMARK):
                self.watermarks[int(key[len(_WATERMARK) :])] = struct.unpack("<q", value)[0]
            elif key.startswith(_TRANSITIONS):
                transitions.append((key[len(_TRANSITIONS) :].decode("utf-8"), value))
            elif key.startswith(_ITEM):
                s = decode_item(value)
                r = self.table.row(key[len(_ITEM) :].decode("utf-8"))
                rows.append(r)
                mems.append(torch.from_numpy(s.memory))
                self.table.last_t[r] = s.last_t
                self.table.count[r] = s.count
                n += 1
        for item_id, raw in transitions:
            self.table.graph.decode_row(self.table.row(item_id), raw, self.table.row)
        if graph_state is not None:
            self._decode_graph_state(graph_state)
        if rows:
            self.table.set_memory(torch.tensor(rows, device=self.table.device), torch.stack(mems).to(self.table.device))
        logger.info("item stage restored %d items, watermarks %s", n, self.watermarks)

    @torch.no_grad()
    def fold(self, up: ItemUpdates) -> list[int]:
        """Apply the updates not yet applied; return the rows whose memory changed."""
        if len(up) == 0:
            return []
        wm = np.array([self.watermarks.get(int(p), -1) for p in up.partitions])
        keep = np.nonzero(up.offsets > wm)[0]
        if len(keep) == 0:
            return []
        table = self.table
        dev = table.device
        rows = up.rows[keep]
        # Each event's gap since the item's previous event (in this batch, or else in the table) and
        # the cells' inputs for the whole batch in one call; only the cells run round by round.
        prev = previous_occurrence(rows)
        ts = up.ts[keep]
        dt = ts - np.where(prev >= 0, ts[prev], table.last_t[rows])
        dt[np.isnan(dt)] = 0.0
        kt = torch.from_numpy(keep).to(dev)
        messages = self.model.memory.message(
            up.user_vec[kt], torch.from_numpy(dt).float().to(dev), torch.from_numpy(up.event_types[keep]).to(dev),
            torch.from_numpy(up.weights[keep]).float().to(dev),
        )
        cell = self.model.memory.item_cell
        uniq, slot = np.unique(rows, return_inverse=True)
        uniq_t = torch.from_numpy(uniq).to(dev)
        work = table.memory[uniq_t].clone()  # the batch's items, updated round by round
        for idx in occurrence_rounds(rows):
            s = torch.from_numpy(slot[idx]).to(dev)
            work[s] = cell(messages[torch.from_numpy(idx).to(dev)], work[s])
        # What the batch changes, applied once everything is computed, so that a failure above leaves
        # the table as it was.
        np.fmax.at(table.last_t, rows, ts)  # an item's time never goes back
        np.add.at(table.count, rows, 1)  # before the vectors are recomputed: the count sets the knowledge handover
        table.set_memory(uniq_t, work)
        for p, o in zip(up.partitions[keep], up.offsets[keep]):
            if o > self.watermarks.get(int(p), -1):
                self.watermarks[int(p)] = int(o)
        changed = uniq.tolist()
        transitions_changed = table.graph.observe(up.prev_rows[keep], rows)
        cfg = self.model.cfg
        snapshot = cfg.use_graph_snapshots and table.graph.events_since_snapshot >= cfg.snapshot_every
        if snapshot:
            table.take_snapshot()
        self._stage_writes(changed, sorted(set(transitions_changed)), snapshot)
        return changed

    def take_writes(self) -> list[tuple[PartitionStore, _Batch]]:
        """The item state the folds since the last call changed, as (store, transaction) to write in
        the same atomic write as the users' state of the same events (``UserStage.commit``)."""
        if self.store is None or self._pending is None:
            return []
        tx, self._pending = self._pending, None
        return [(self.store, tx)]

    def commit(self) -> None:
        """Write what :meth:`take_writes` would return, on its own."""
        for store, tx in self.take_writes():
            store.write(tx)

    def _encode_graph_state(self) -> bytes:
        table = self.table
        state = table.graph_state.cpu().numpy().astype("<f2")
        parts = [struct.pack("<I", len(table))]
        for r, item_id in enumerate(table.ids):
            b = item_id.encode("utf-8")
            parts.append(bytes([len(b)]) + b + state[r].tobytes())
        return b"".join(parts)

    def _decode_graph_state(self, raw: bytes) -> None:
        table = self.table
        (n,) = struct.unpack_from("<I", raw, 0)
        pos, d = 4, table.dim
        rows, vecs = [], []
        for _ in range(n):
            ln = raw[pos]
            rows.append(table.row(raw[pos + 1 : pos + 1 + ln].decode("utf-8")))
            pos += 1 + ln
            vecs.append(np.frombuffer(raw, "<f2", d, pos).astype(np.float32))
            pos += 2 * d
        state = torch.zeros(len(table), d, device=table.device)
        if rows:
            state[torch.tensor(rows, device=table.device)] = torch.from_numpy(np.stack(vecs)).to(table.device)
        table.set_graph_state(state)

    def _stage_writes(self, rows: list[int], transition_rows: list[int], snapshot: bool = False) -> None:
        if self.store is None:
            return
        table = self.table
        mem = table.memory[torch.tensor(rows, device=table.device)].cpu().numpy()
        tx = self._pending = self._pending or new_transaction()
        for k, r in enumerate(rows):
            tx.put(_ITEM + table.ids[r].encode("utf-8"), encode_item(ItemState(mem[k], table.last_t[r], int(table.count[r]))))
        for j in transition_rows:
            tx.put(_TRANSITIONS + table.ids[j].encode("utf-8"), table.graph.encode_row(j, table.ids))
        if snapshot:
            tx.put(_GRAPH_STATE, self._encode_graph_state())
        for p, o in self.watermarks.items():
            tx.put(_WATERMARK + str(p).encode(), struct.pack("<q", o))
