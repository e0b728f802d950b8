"""The item table: every item a worker knows, id ↔ row, with what scoring reads of each (learned
static part, bias, temporal memory, item-graph state, catalogue knowledge) and the item vectors
derived from them. The user stage scores against it; the item stage and the catalogue change it.

Per-item arrays keep spare rows (capacity grows by a quarter when full), so adding items one at a time
costs amortised O(1) rows copied instead of a concatenation of every array per new item; a quarter,
not a doubling, so that the first new item of a large catalogue does not double the table.

What is zero for every item until something sets it (the item-graph snapshot model's states, with that
model off: always; catalogue knowledge before a catalogue) takes no memory: the column holds implied
zeros, one zero row seen as ``N``. The learned static part and the co-interaction vectors are read
from the model's own tensors, never copied: items added since the model was trained have zeros there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.catalog.knowledge import Catalog, knowledge_vectors
from engine.fold.graph import ItemGraph
from models.interest import InterestModel

__all__ = ["MAX_ATTRIBUTES", "ItemTable"]

logger = logging.getLogger(__name__)

MAX_ATTRIBUTES = 8  # attributes per item kept for explanations


class _Column:
    """A per-item array (tensor or numpy) stored with spare rows. Reading gives a view of the first
    ``len(table)`` rows (kept up to date by :meth:`ItemTable._add`); assigning stores a copy in a new
    buffer, so whoever holds the previous value (the online learner's thread) never sees it change.
    A tensor column may instead hold implied zeros (:meth:`zeros`): no buffer, one zero row expanded to
    ``len(table)`` rows, read-only, until a value is assigned."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_col" + name  # the buffer (None: implied zeros)
        self.view = "_view" + name  # its first len(table) rows

    def __get__(self, table: Any, owner: type | None = None) -> Any:
        return table.__dict__[self.view]

    def __set__(self, table: Any, value: Any) -> None:
        buf = _with_capacity(value, max(len(value), table._capacity))
        table.__dict__[self.slot] = buf
        table.__dict__[self.view] = buf[: len(value)]

    def adopt(self, table: Any, value: Any) -> None:
        """Store ``value`` (``table._capacity`` rows, held by no one else) as the buffer, uncopied."""
        table.__dict__[self.slot] = value
        table.__dict__[self.view] = value[: len(table)]

    def zeros(self, table: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        """Implied zeros ``[len(table), *shape]``: no memory per row."""
        table.__dict__[self.slot] = None
        zero = torch.zeros((1, *shape), dtype=dtype, device=device)
        table.__dict__[self.view] = zero.expand(len(table), *shape)

    def add_zero_row(self, table: Any) -> None:
        """Implied zeros one row longer (a new item)."""
        v = table.__dict__[self.view]
        zero = torch.zeros((1, *v.shape[1:]), dtype=v.dtype, device=v.device)
        table.__dict__[self.view] = zero.expand(len(v) + 1, *v.shape[1:])

    def implied(self, table: Any) -> bool:
        return table.__dict__[self.slot] is None

    def materialize(self, table: Any) -> None:
        """Give implied zeros a buffer of their own (before a write in place)."""
        if self.implied(table):
            self.__set__(table, table.__dict__[self.view].contiguous())


def _with_capacity(value: Any, capacity: int) -> Any:
    if isinstance(value, np.ndarray):
        buf = np.empty((capacity, *value.shape[1:]), value.dtype)
    else:
        buf = value.new_empty((capacity, *value.shape[1:]))
    buf[: len(value)] = value
    return buf


class ItemTable:
    """Every item this worker knows: id ↔ row, learned static part, bias, temporal memory, what the
    catalogue says about it (knowledge vector, engine/catalog/knowledge.py), and the cached item vectors
    derived from them (recomputed only for rows that change)."""

    _bias = _Column()
    _memory = _Column()
    _graph_state = _Column()  # item-graph snapshot model states (implied zeros until a snapshot)
    _trained_counts = _Column()
    _aligned = _Column()  # aligned text vectors (implied zeros until text is aligned)
    _has_text = _Column()
    _knowledge = _Column()
    attribute_ids = _Column()  # [N, A] for explanations
    last_t = _Column()
    count = _Column()

    def __init__(self, model: InterestModel, ids: Sequence[str], device: torch.device) -> None:
        self.model = model
        self.device = device
        self.ids: list[str] = list(ids)
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.ids)}
        n, d, k = len(self.ids), model.cfg.dim, model.cfg.content_dim
        self._capacity = n
        cols = vars(ItemTable)
        with torch.no_grad():
            self._bias = model.item_bias.detach().to(device)
            self._trained_counts = model.item_counts.detach().to(device)
        self._new_bias = float(self._bias.min()) if n else 0.0  # unseen items start as the least popular
        # a new catalogue item starts neutral instead: its knowledge vector decides how it ranks
        self._catalog_bias = float(self._bias.median()) if n else 0.0
        self._content: Tensor | None = None
        self.catalog: Catalog | None = None
        cols["_aligned"].zeros(self, (k,), torch.float32, device)
        cols["_has_text"].adopt(self, torch.zeros(n, dtype=torch.bool, device=device))
        cols["_knowledge"].zeros(self, (k,), torch.float32, device)
        self._edges: tuple[Tensor, Tensor, int] = (
            torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0
        )
        self.attribute_names: list[str] = []
        cols["attribute_ids"].adopt(self, torch.zeros(n, 0, dtype=torch.long, device=device))
        cols["_memory"].adopt(self, torch.zeros(n, d, device=device))
        cols["_graph_state"].zeros(self, (d,), torch.float32, device)
        cols["last_t"].adopt(self, np.full(n, np.nan))
        cols["count"].adopt(self, np.zeros(n, np.int64))
        self.graph = ItemGraph(n, model.cfg.trending_horizons, snapshots=model.cfg.use_graph_snapshots)
        self._vectors: Tensor | None = None
        self._changed: list[np.ndarray] | None = None  # rows set by set_memory since take_changed

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

    def _columns(self) -> list[_Column]:
        return [c for c in vars(ItemTable).values() if isinstance(c, _Column)]

    def _add(self, item_id: str) -> int:
        r = len(self.ids)
        if r == self._capacity:
            self._capacity = max(16, r + r // 4)
            for c in self._columns():
                if not c.implied(self):
                    self.__dict__[c.slot] = _with_capacity(self.__dict__[c.slot][:r], self._capacity)
        fill: dict[str, Any] = {"_col_bias": self._new_bias, "_colattribute_ids": -1, "_collast_t": np.nan}
        for c in self._columns():
            if c.implied(self):  # the fills above are for columns never implied
                c.add_zero_row(self)
                continue
            buf = self.__dict__[c.slot]
            buf[r] = fill.get(c.slot, 0)
            self.__dict__[c.view] = buf[: r + 1]
        self.ids.append(item_id)
        self.index[item_id] = r
        self._content = None
        self._vectors = None
        return r

    @torch.no_grad()
    def refresh_from_model(self) -> None:
        """Take the model's current static embeddings and biases (after a learning step)."""
        n = self.model.cfg.n_items
        self._bias[:n] = self.model.item_bias.detach().to(self.device)
        self._vectors = None

    @property
    def _static(self) -> Tensor:
        """Learned static parts ``[N, d]``: the model's embeddings themselves, then zeros for the items
        added since (a copy only while there are such items)."""
        return self._model_rows(self.model.item_static.weight)

    @property
    def _own_content(self) -> Tensor:
        """Co-interaction vectors ``[N, k]`` from the training log: the model's, then zeros."""
        return self._model_rows(self.model.item_content)

    def _model_rows(self, t: Tensor) -> Tensor:
        t = t.detach().to(self.device)
        extra = len(self) - len(t)
        return t[: len(self)] if extra <= 0 else torch.cat([t, t.new_zeros((extra, *t.shape[1:]))])

    def _static_of(self, rows: Tensor) -> Tensor:
        """``[B, d]`` the learned static parts of ``rows`` ``[B]`` (the values of :attr:`_static`)."""
        w = self.model.item_static.weight.detach().to(self.device)
        if len(self) <= len(w):
            return w[rows]
        out = w.new_zeros((len(rows), w.shape[1]))
        known = rows < len(w)
        out[known] = w[rows[known]]
        return out

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
            vars(ItemTable)["_aligned"].materialize(self)
            rows = self.rows(list(item_ids))
            text, has = self.catalog.text_matrix(list(item_ids), align.cfg.text_dim)
            rt = torch.from_numpy(rows).to(self.device)
            self._aligned[rt] = align(torch.from_numpy(text).to(self.device))
            self._has_text[rt] = torch.from_numpy(has).to(self.device)
        rows_e, attrs, names = self.catalog.attribute_edges(self.ids)
        self._edges = (
            torch.from_numpy(rows_e).to(self.device), torch.from_numpy(attrs).to(self.device), len(names)
        )
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
            return self.model.item_vectors(self._static_of(rows), self._memory[rows], self._graph_state[rows])

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
        assert self.model.graph_model is not None  # built when use_graph_snapshots is on
        state = self._graph_state.contiguous()  # implied zeros before the first snapshot
        self.set_graph_state(self.model.graph_model(self._static, *edges, state, attributes))

    def set_graph_state(self, state: Tensor) -> None:
        self._graph_state = state
        self._vectors = None

    def set_memory(self, rows: Tensor, memory: Tensor) -> None:
        self._memory[rows] = memory
        if self._vectors is not None:
            with torch.no_grad():
                self._vectors[rows] = self.model.item_vectors(
                    self._static_of(rows), memory, self._graph_state[rows]
                )
        if self.catalog is not None:
            self._content = None  # counts moved: the knowledge handover with them
        if self._changed is not None:
            self._changed.append(rows.cpu().numpy())

    def track_changes(self) -> None:
        """Keep the rows :meth:`set_memory` sets, for :meth:`take_changed`."""
        if self._changed is None:
            self._changed = []

    def take_changed(self) -> np.ndarray:
        """The rows whose memory was set since the last call (sorted, unique; with :meth:`track_changes`
        on): the item stage's and, with a shared item stage, the follower's (engine/fold/candidates.py
        re-indexes them)."""
        changed, self._changed = self._changed, [] if self._changed is not None else None
        return np.unique(np.concatenate(changed)) if changed else np.zeros(0, np.int64)


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
