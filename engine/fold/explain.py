"""Why each item was recommended: a short reason from the model's own signals, with its evidence (a weight).

In order of precedence, for user u and recommended item i:

1. i is in u's recent history: "you used this k events ago" (evidence 0.5^k, the repeat signal's decay);
2. users often go from one of u's last ``TRANSITION_ITEMS`` items h to i: "often next after <h>"
   (evidence: the share of h's transitions that go to i; when ≥ ``TRANSITION_SHARE``);
3. i is close to a recent history item h: "like <h>" (evidence: their cosine in the co-interaction
   space, engine/catalog/cointeraction.py, or of their item vectors without it; when ≥ ``SIMILAR``, and
   only for an item someone has used: a new item's position is inferred from its catalogue entry);
4. i shares a catalogue attribute with a recent history item h: "same genre as <h>" (evidence: the
   share of i's attributes that h has);
5. i is among the most used items of the short popularity horizon: "trending" (evidence: its share
   of that recent use relative to the top item);
6. i has never been used and stands on its catalogue knowledge: "new: matches your interests";
7. otherwise "matches your current interests".

(6 and 7: evidence: the cosine of i with the mean direction of u's recent items, floored at 0.)

Everything is computed for the whole batch at once on the device; only the wording is per item.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.fold.table import ItemTable

__all__ = ["SIMILAR", "Reasons", "explain", "reasons"]

SIMILAR = 0.6  # cosine above which "like <item>" explains a recommendation
TRANSITION_ITEMS = 4  # the user's last items whose transitions explain a recommendation
TRANSITION_SHARE = 0.05  # share of a recent item's transitions above which "often next after <item>" explains
TRENDING_SHARE = 0.01  # the top 1% of items (at least 10) by recent use are "trending"
_AGO = ["you just used this"] + [f"you used this {k + 1} events ago" for k in range(1, 256)]


class Reasons(NamedTuple):
    """The reasons of ``[B, k]`` recommended rows, each wording once: item ``j`` of user ``b`` is
    explained by ``texts[text_ids[b][j]]`` with weight ``evidence[b][j]``."""

    texts: list[str]
    text_ids: list[list[int]]  # [B][k]
    evidence: list[list[float]]  # [B][k]


@torch.no_grad()
def explain(table: ItemTable, hist: Tensor, top_rows: Tensor) -> list[list[tuple[str, float]]]:
    """``(reason, evidence)`` for each of the ``[B, k]`` recommended rows of users whose last events
    are the item rows ``hist`` ``[B, L]`` (most recent first, -1 = none; a context's ``hist_rows``)."""
    r = reasons(table, hist, top_rows)
    pick = r.texts.__getitem__
    return [list(zip(map(pick, ids), ev)) for ids, ev in zip(r.text_ids, r.evidence)]


@torch.no_grad()
def reasons(table: ItemTable, hist: Tensor, top_rows: Tensor) -> Reasons:
    """:func:`explain`'s reasons as the distinct texts and, per recommended row, an index into them
    and the evidence (no pair per item: the caller builds its own records from these lists)."""
    dev = top_rows.device
    b, k = top_rows.shape
    hist = hist.to(dev)
    valid = hist >= 0
    content = table.content()  # co-interaction space: "like" means used by the same people, when known
    vec = content if content is not None else table.vectors()  # normalised below, only the rows read
    rec_v = F.normalize(vec[top_rows], dim=-1)  # [B, k, d]
    hist_v = F.normalize(vec[hist.clamp(min=0)], dim=-1) * valid.unsqueeze(-1)  # [B, L, d]
    sim = torch.einsum("bkd,bld->bkl", rec_v, hist_v).masked_fill(~valid.unsqueeze(1), -2.0)
    same = top_rows.unsqueeze(-1) == hist.unsqueeze(1)  # [B, k, L]: a repeat
    ago = torch.where(same, torch.arange(hist.shape[1], device=dev), hist.shape[1]).min(-1).values  # [B, k]
    best_sim, best_l = sim.masked_fill(same, -2.0).max(-1)  # [B, k]
    mean_h = F.normalize(hist_v.sum(1), dim=-1)  # [B, d]
    interest = torch.einsum("bkd,bd->bk", rec_v, mean_h)

    shared = torch.zeros(b, k, device=dev)
    shared_l = torch.zeros(b, k, dtype=torch.long, device=dev)
    shared_a = torch.full((b, k), -1, dtype=torch.long, device=dev)
    attrs = table.attribute_ids  # [N, A] (-1 = none)
    if attrs.shape[1] > 0:
        ra = attrs[top_rows]  # [B, k, A]
        ha = attrs[hist.clamp(min=0)].masked_fill(~valid.unsqueeze(-1), -1)  # [B, L, A]
        eq = (
            (ra[:, :, None, :, None] == ha[:, None, :, None, :]) & (ra[:, :, None, :, None] >= 0)
        )  # [B,k,L,A,A]
        hit = eq.any(-1)  # [B, k, L, A]: i's attribute a is one of h's
        n_attr = (ra >= 0).sum(-1).clamp(min=1)  # [B, k]
        per_l = hit.sum(-1).float() / n_attr.unsqueeze(-1)  # [B, k, L]
        shared, shared_l = per_l.max(-1)
        first_a = hit.gather(
            2, shared_l[:, :, None, None].expand(-1, -1, 1, hit.shape[-1])
        ).squeeze(2)  # [B,k,A]
        a_idx = first_a.float().argmax(-1)  # first shared attribute position
        shared_a = ra.gather(2, a_idx.unsqueeze(-1)).squeeze(-1)

    # transitions: from each of the last TRANSITION_ITEMS events' items to each recommended item
    src = hist[:, :TRANSITION_ITEMS]
    counts = table.graph.pair_counts(src, top_rows).to(dev)  # [B, k, T]
    # each distinct source row's total once (a batch's users share their recent items)
    uniq_src, inverse_src = torch.unique(src, return_inverse=True)
    totals = table.graph.pair_totals(uniq_src.view(1, -1))[0][inverse_src].to(dev)  # [B, T]
    share = counts / totals.clamp(min=1).unsqueeze(1)
    best_share, best_t = share.max(-1)  # [B, k]

    n = len(table)
    recent_use = table.graph.trending(n, dev)[:, 0]
    top_n = max(10, int(TRENDING_SHARE * n))
    cutoff = torch.topk(recent_use, min(top_n, n)).values[-1] if n else recent_use.new_tensor(0.0)
    peak = recent_use.max() if n else recent_use.new_tensor(1.0)
    rec_use = recent_use[top_rows]
    trending = (rec_use >= cutoff) & (rec_use > 0)
    unused = table.counts(top_rows.flatten()).view(b, k) == 0
    has_knowledge = (table.knowledge[top_rows] != 0).any(-1)

    # the precedence of the module docstring as one code per item, then only the wording per item
    L = hist.shape[1]
    repeat = ago < L
    after = ~repeat & (best_share >= TRANSITION_SHARE)
    like = ~repeat & ~after & (best_sim >= SIMILAR) & ~unused
    same = ~repeat & ~after & ~like & (shared > 0) & (shared_a >= 0)
    trend = ~repeat & ~after & ~like & ~same & trending
    new = ~repeat & ~after & ~like & ~same & ~trend & unused & has_knowledge
    code = torch.full((b, k), _INTEREST, dtype=torch.long, device=dev)
    codes = [
        (_REPEAT, repeat), (_AFTER, after), (_LIKE, like), (_SAME, same), (_TRENDING, trend), (_NEW, new),
    ]
    for c, mask in codes:
        code[mask] = c
    evidence = torch.where(
        repeat, 0.5 ** ago.clamp(max=L).float(),
        torch.where(after, best_share, torch.where(
            like, best_sim,
            torch.where(
                same, shared, torch.where(trend, rec_use / peak.clamp(min=1e-9), interest.clamp(min=0))
            ),
        )),
    )
    # every distinct wording once: fixed texts first, then one per (code, named row, attribute)
    named = torch.where(after, best_t, torch.where(like, best_l, shared_l))
    named_row = hist.gather(1, named.clamp(max=L - 1))
    texts = [*_AGO[:L], _FIXED[_TRENDING], _FIXED[_NEW], _FIXED[_INTEREST]]
    text_id = torch.where(repeat, ago.clamp(max=L - 1), L + (code - _TRENDING).clamp(min=0))
    dynamic = after | like | same
    if bool(dynamic.any()):
        keys = torch.stack(
            [code[dynamic], named_row[dynamic], shared_a[dynamic].masked_fill(~same[dynamic], -1)], 1
        )
        uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
        names = table.attribute_names
        for c, r, at in uniq.tolist():
            texts.append(
                f"like {table.title(r)}" if c == _LIKE
                else f"often next after {table.title(r)}" if c == _AFTER
                else _same(names[at], table.title(r))
            )
        text_id[dynamic] = len(texts) - len(uniq) + inverse
    return Reasons(texts, text_id.tolist(), evidence.tolist())


_REPEAT, _AFTER, _LIKE, _SAME, _TRENDING, _NEW, _INTEREST = range(7)
_FIXED = {
    _TRENDING: "trending", _NEW: "new: matches your interests", _INTEREST: "matches your current interests",
}


def _same(attribute: str, title: str) -> str:
    key, _, value = attribute.partition("=")
    return f"same {key} ({value}) as {title}"
