"""What the catalogue says about items: text vectors and attribute relations, and the knowledge vector
that stands in for an item's co-interaction vector (engine/catalog/cointeraction.py) before anyone has
used it.

An item's attributes (category, brand, genre, tags …) are typed item–attribute edges
(``genre=jazz``). An attribute's vector is the weighted mean co-interaction vector of the used items
that carry it, m_a ∝ Σ_j w_j c_j over items j with attribute a (w_j = log(1 + n_j), n_j the item's
interaction count, so an unused item contributes nothing); an item's attribute vector is the mean
of its attributes' directions, A_i = mean_a m̂_a. With its aligned text vector P(t_i)
(models/align.py) the knowledge vector is the unit vector

.. math::  k_i = \\mathrm{normalize}(α P(t_i) + (1 - α) \\hat A_i)

(a missing part is left out), so two items that share a genre or a brand inform each other, and a
brand-new item is recommendable at once. The model hands an item over from k_i to its own vector as
interactions arrive (models/interest.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.catalog.text import item_text, text_digest
from schemas import Item

__all__ = ["Catalog", "CatalogEntry", "attribute_values", "knowledge_vectors"]

logger = logging.getLogger(__name__)

TEXT_WEIGHT = 0.5  # α: the aligned text against the attribute neighbourhood, when an item has both


def attribute_values(attributes: Mapping[str, Any]) -> tuple[str, ...]:
    """Typed attribute values ``key=value`` (a list gives one per element), sorted; empty values skipped."""
    out: set[str] = set()
    for key, value in attributes.items():
        for v in value if isinstance(value, list | tuple) else [value]:
            s = str(v).strip().lower()
            if s:
                out.add(f"{key.strip().lower()}={s}")
    return tuple(sorted(out))


@dataclass
class CatalogEntry:
    title: str
    attributes: tuple[str, ...]
    digest: bytes  # of the encoded text: re-encode only when it changes
    text_vec: np.ndarray | None  # [T] float32, L2-normalised


class Catalog:
    """Every catalogue item's title, attributes and text vector (a compacted topic's latest value per
    item)."""

    def __init__(self) -> None:
        self.entries: dict[str, CatalogEntry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.entries

    def get(self, item_id: str) -> CatalogEntry | None:
        return self.entries.get(item_id)

    def _change(self, it: Item) -> tuple[CatalogEntry, str | None] | None:
        """The entry ``it`` makes and the text to encode for it (None: its vector is kept), or None
        when the record changes nothing."""
        text = item_text(it.title, it.text)
        digest = text_digest(text)
        attrs = attribute_values(it.attributes)
        old = self.entries.get(it.item_id)
        if old is not None and old.digest == digest and old.attributes == attrs and old.title == it.title:
            return None
        keep = old.text_vec if old is not None and old.digest == digest else None
        return CatalogEntry(it.title, attrs, digest, keep), text if keep is None else None

    def texts_to_encode(self, items: Iterable[Item]) -> list[str]:
        """The texts :meth:`upsert` of ``items`` would encode (to encode them beforehand, elsewhere)."""
        latest = {it.item_id: it for it in items}
        changes = (self._change(it) for it in latest.values())
        return [c[1] for c in changes if c is not None and c[1] is not None]

    def upsert(self, items: Iterable[Item], encode: Callable[[list[str]], np.ndarray] | None) -> list[str]:
        """Apply catalogue records (the latest wins); encode, in one batch, the texts that changed.
        Returns the ids whose entry changed. Without ``encode``, text vectors are left out."""
        latest = {it.item_id: it for it in items}
        changed: list[str] = []
        to_encode: list[tuple[str, str]] = []
        for item_id, it in latest.items():
            change = self._change(it)
            if change is None:
                continue
            self.entries[item_id], text = change
            changed.append(item_id)
            if text is not None and encode is not None:
                to_encode.append((item_id, text))
        if to_encode and encode is not None:
            vecs = encode([t for _, t in to_encode])
            for (item_id, _), v in zip(to_encode, vecs):
                self.entries[item_id].text_vec = np.asarray(v, np.float32)
        return changed

    def restore(self, item_id: str, entry: CatalogEntry) -> None:
        self.entries[item_id] = entry

    def text_matrix(self, ids: Sequence[str], text_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Text vectors ``[N, T]`` of ``ids`` (zeros where none) and which rows have one ``[N]``."""
        out = np.zeros((len(ids), text_dim), np.float32)
        has = np.zeros(len(ids), bool)
        for r, item_id in enumerate(ids):
            e = self.entries.get(item_id)
            if e is not None and e.text_vec is not None and e.text_vec.shape[0] == text_dim:
                out[r] = e.text_vec
                has[r] = True
        return out, has

    def attribute_edges(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Item–attribute edges of ``ids``: item rows ``[E]``, attribute indices ``[E]``, attribute names."""
        names: dict[str, int] = {}
        rows: list[int] = []
        attrs: list[int] = []
        for r, item_id in enumerate(ids):
            e = self.entries.get(item_id)
            if e is None:
                continue
            for a in e.attributes:
                rows.append(r)
                attrs.append(names.setdefault(a, len(names)))
        return np.asarray(rows, np.int64), np.asarray(attrs, np.int64), list(names)


def knowledge_vectors(
    aligned_text: Tensor, has_text: Tensor, edges: tuple[Tensor, Tensor, int], collab: Tensor, counts: Tensor,
    text_weight: float = TEXT_WEIGHT,
) -> Tensor:
    """Unit knowledge vectors ``[N, d]`` (zero rows: no knowledge) from aligned text vectors ``[N, d]``
    (valid where ``has_text`` ``[N]``), item–attribute edges (item rows ``[E]``, attribute indices
    ``[E]``, number of attributes), the co-interaction vectors ``[N, d]`` and interaction counts ``[N]``."""
    n, d = collab.shape
    rows, attrs, n_attr = edges
    attr_part = torch.zeros_like(collab)
    has_attr = torch.zeros(n, dtype=torch.bool, device=collab.device)
    if len(rows):
        w = torch.log1p(counts[rows]).unsqueeze(-1)  # [E, 1]; an unused item weighs nothing
        sums = torch.zeros(n_attr, d, device=collab.device).index_add_(0, attrs, collab[rows] * w)
        weight = torch.zeros(n_attr, device=collab.device).index_add_(0, attrs, w.squeeze(-1))
        known = weight > 0
        m = F.normalize(sums, dim=-1)  # [A, d] direction of each attribute's used items
        per_item = torch.zeros(n, device=collab.device).index_add_(0, rows, known[attrs].float())
        attr_part.index_add_(0, rows, m[attrs] * known[attrs].unsqueeze(-1).float())
        has_attr = per_item > 0
        attr_part = F.normalize(attr_part, dim=-1) * has_attr.unsqueeze(-1)
    text_part = F.normalize(aligned_text, dim=-1) * has_text.unsqueeze(-1)
    alpha = torch.where(has_text & has_attr, text_weight, torch.where(has_text, 1.0, 0.0)).unsqueeze(-1)
    mixed = alpha * text_part + (1 - alpha) * attr_part
    return F.normalize(mixed, dim=-1) * (has_text | has_attr).unsqueeze(-1)
