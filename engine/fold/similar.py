"""Items similar to an item: its nearest neighbours by cosine, each with why.

The space is the one the explanations use (engine/fold/explain.py): the co-interaction vectors when
the model has them (items used by the same people), else the model's item vectors. A neighbour that
shares catalogue attributes with the item says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.fold.table import ItemTable

__all__ = ["SimilarItem", "similar_items"]


@dataclass(frozen=True, slots=True)
class SimilarItem:
    item_id: str
    cosine: float
    reason: str
    shared_attributes: tuple[str, ...]


@torch.no_grad()
def similar_items(table: ItemTable, item_id: str, k: int) -> list[SimilarItem] | None:
    """The ``k`` items nearest to ``item_id`` (itself excluded), best first; None for an unknown item."""
    row = table.index.get(item_id)
    if row is None:
        return None
    content = table.content()
    space = "used by the same people" if content is not None else "close in the model's item space"
    vec = F.normalize((content if content is not None else table.vectors()).float(), dim=1)  # [N, d]
    sims = vec @ vec[row]  # [N]
    sims[row] = -float("inf")
    n = min(k, len(table) - 1)
    if n <= 0:
        return []
    top = torch.topk(sims, n)
    attrs = table.attribute_ids
    mine = {a for a in attrs[row].tolist() if a >= 0} if attrs.shape[1] else set()
    out = []
    for r, c in zip(top.indices.tolist(), top.values.tolist()):
        shared = tuple(
            table.attribute_names[a] for a in (attrs[r].tolist() if mine else []) if a >= 0 and a in mine
        )
        reason = f"{space} (cosine {c:.2f})"
        if shared:
            reason += "; shares " + ", ".join(shared)
        out.append(SimilarItem(table.ids[r], float(c), reason, shared))
    return out
