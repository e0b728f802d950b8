"""The interest model: temporal memory, a next-item query, and repeat-aware scoring against item vectors.

Item vectors combine a learned static embedding with the item's temporal memory:

.. math::  v_i = E_i + W_m s_i \\; (+ W_g H_i)

(H_i: the item's state in the item-graph snapshot model, models/graph_context.py, when it is on.)

A user's query is built from the memory, the vector of the last item used (a learned transition)
and the sequence model's summary of the last L events (models/sequence.py), then projected to the
query time t_q, a gap Δ = t_q − t_u after the user's last event (JODIE's projection):

.. math::

    q_u(t_q) = \\mathrm{MLP}([s_u \\,\\|\\, v_{last(u)} \\,\\|\\, z_u]) \\odot (1 + W_p \\phi(\\log(1 + Δ)))

and an item's score adds a learned bias, a learned function of the user's own relation to the item,
learned weights on the item's global popularity, and how close the item is to the user's recent
items in the co-interaction space (engine/catalog/cointeraction.py):

.. math::  score(u, i) = q_u \\cdot v_i + b_i + g(x_{ui}) + w^\\top p_i + β \\cos(h_u, c_i)

where x_ui holds the user's profile features of item i (recency-weighted counts Σ γ^(events ago)
for each decay γ, the count, how recently in time and in distinct items the user last used i; see
engine/fold/profile.py) and the transition from the user's last item to i (log count and share of the
last item's transitions) and the gap Δ, so how much the user's own history counts depends on how
long they have been away; g is a small MLP with g(0) = 0, and p_i is log decayed popularity at
several horizons. On real logs most interactions return to an item the user already used, and the
strongest simple baselines are exactly these statistics; the model learns how to weigh them against
the memory.

c_i is the item's unit vector in the co-interaction space (fixed, from the training log), h_u the
recency-weighted direction of the user's recent items there, Σ_l 0.5^l c_{hist_l}; an item no one
has used yet has no c_i of its own and takes its knowledge vector k_i instead (its text aligned
into that space, models/align.py, and its attributes' neighbourhood, engine/catalog/knowledge.py), handing
over as interactions arrive: c_i ← λ_i c_i + (1 − λ_i) k_i, λ_i = n_i / (n_i + n_0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.align import AlignConfig, TextAlignment
from models.memory import MemoryConfig, TemporalMemory
from models.sequence import SequenceConfig, SequenceEncoder

if TYPE_CHECKING:
    from models.graph_context import GraphSnapshotModel

__all__ = ["N_USER_FEATURES", "InterestConfig", "InterestModel", "ScoringInputs", "UserSide", "user_features"]


@dataclass(frozen=True)
class InterestConfig:
    """The model's sizes and switches, saved in every checkpoint so that it rebuilds its own model."""

    n_items: int = 0  # rows of the item tables; training sets it from its log
    dim: int = 64
    time_dim: int = 16
    n_event_types: int = 8
    event_dim: int = 8
    profile_items: int = 48  # distinct items per user profile (M)
    n_profile_features: int = 5
    seq_len: int = 16  # events the sequence model reads (at most engine.fold.HISTORY)
    n_transition_features: int = 3
    feature_hidden: int = 32
    # popularity half-lives in events: recent bursts and the long run
    trending_horizons: tuple[float, ...] = (1_000.0, 100_000.0)
    use_memory: bool = True  # ablation switch: the q·v term of memory and static item vectors
    use_item_bias: bool = True  # a static per-item bias (popularity in the training period)
    use_sequence: bool = True  # ablation switch: the sequence model's summary in the query
    use_time_projection: bool = True  # ablation switch: projection to the query time and the gap feature
    use_graph_snapshots: bool = False  # the item-graph snapshot model (models/graph_context.py)
    snapshot_every: int = 5_000  # events per item-graph snapshot
    content_dim: int = 0  # width of the co-interaction vectors c_i; 0: no co-interaction term
    text_dim: int = 0  # width of the item text vectors; 0: no text alignment
    handover: float = 10.0  # n_0: interactions after which an item is half its own, half its knowledge
    # repeat or explore: a mixture of a repeat distribution over the user's profile items and an explore
    # distribution over every other item, weighted by a learned P(next item is new to the user)
    use_mixture: bool = True
    use_freshness: bool = True  # the explore scorer reads each item's freshness and velocity
    explore_hidden: int = 16

    def __post_init__(self) -> None:
        # JSON gives a list; a tuple keeps the config hashable and equal to the one a checkpoint rebuilds
        object.__setattr__(self, "trending_horizons", tuple(self.trending_horizons))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InterestModel(nn.Module):
    item_counts: Tensor  # [N] buffers, typed for mypy (register_buffer does not declare them)
    item_content: Tensor  # [N, k]

    def __init__(self, cfg: InterestConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.memory = TemporalMemory(
            MemoryConfig(cfg.dim, cfg.time_dim, cfg.n_event_types, cfg.event_dim)
        )
        self.item_static = nn.Embedding(cfg.n_items, cfg.dim)
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items))
        self.mem_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.sequence = SequenceEncoder(SequenceConfig(cfg.dim, cfg.time_dim, cfg.n_event_types))
        self.query_mlp = nn.Sequential(
            nn.Linear(3 * cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim)
        )
        self.projection = nn.Linear(cfg.time_dim, cfg.dim, bias=False)
        n_feat = cfg.n_profile_features + cfg.n_transition_features + 1
        self.pair_mlp = nn.Sequential(
            nn.Linear(n_feat, cfg.feature_hidden), nn.GELU(), nn.Linear(cfg.feature_hidden, 1)
        )
        self.trend = nn.Linear(len(cfg.trending_horizons), 1, bias=False)
        # Built only when on: torch-geometric-temporal (and with it torch_geometric) takes seconds to
        # import, which every process that loads a model would otherwise pay.
        self.graph_model = _graph_model(cfg.dim) if cfg.use_graph_snapshots else None
        if self.graph_model is None:
            _draw_as_graph_model(cfg.dim, _GRAPH_BUILD_DRAWS)
        self.graph_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        # item text → co-interaction space
        self.align = (
            TextAlignment(AlignConfig(cfg.text_dim, cfg.content_dim))
            if cfg.text_dim > 0 and cfg.content_dim > 0 else None
        )
        # interactions per item in the training log: how far each item has handed over from its knowledge
        self.register_buffer("item_counts", torch.zeros(cfg.n_items))
        self.register_buffer("item_content", torch.zeros(cfg.n_items, cfg.content_dim))  # c_i, fixed
        self.content_weight = nn.Parameter(torch.ones(()))  # β
        # multi-task: the type of the user's next event (view, click, purchase …) from the same query
        self.type_head = nn.Linear(cfg.dim, cfg.n_event_types)
        # the explore side of the mixture: its own query, pair scorer, item-level scorer and β, and the
        # head that gives P(repeat) from the user's habits, the query and the next-event-type head
        self.explore_query = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.explore_pair_mlp = nn.Sequential(
            nn.Linear(n_feat, cfg.feature_hidden), nn.GELU(), nn.Linear(cfg.feature_hidden, 1)
        )
        n_item_feat = 2 * len(cfg.trending_horizons)
        self.item_mlp = nn.Sequential(
            nn.Linear(n_item_feat, cfg.explore_hidden), nn.GELU(), nn.Linear(cfg.explore_hidden, 1)
        )
        self.explore_content_weight = nn.Parameter(torch.ones(()))
        self.repeat_head = nn.Sequential(
            nn.Linear(N_USER_FEATURES + cfg.n_event_types, cfg.explore_hidden), nn.GELU(),
            nn.Linear(cfg.explore_hidden, 1),
        )
        self.repeat_query = nn.Linear(cfg.dim, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.memory.reset_parameters()
        self.sequence.reset_parameters()
        nn.init.zeros_(self.projection.weight)  # starts as the identity: q(t_q) = q
        nn.init.normal_(self.item_static.weight, std=0.1)
        nn.init.zeros_(self.item_bias)
        nn.init.zeros_(self.mem_proj.weight)
        for layer in [*self.query_mlp, *self.pair_mlp]:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.trend.weight)
        if self.graph_model is not None:
            self.graph_model.reset_parameters()
        else:
            _draw_as_graph_model(self.cfg.dim, _GRAPH_RESET_DRAWS)
        nn.init.zeros_(self.graph_proj.weight)
        if self.align is not None:
            self.align.reset_parameters()
        self.type_head.reset_parameters()
        nn.init.zeros_(self.explore_query.weight)  # starts as the repeat side's query
        for layer in [*self.explore_pair_mlp, *self.item_mlp, *self.repeat_head]:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.ones_(self.explore_content_weight)
        nn.init.zeros_(self.repeat_query.weight)

    def item_vectors(self, static: Tensor, memory: Tensor, graph_state: Tensor | None = None) -> Tensor:
        """Item vectors ``[N, d]`` from static embeddings ``[N, d]``, memories ``[N, d]`` and, with the
        snapshot model on, graph states ``[N, d]``."""
        v = static + self.mem_proj(memory)
        if graph_state is not None and self.cfg.use_graph_snapshots:
            v = v + self.graph_proj(graph_state)
        return v

    def handover(self, own: Tensor, knowledge: Tensor, counts: Tensor) -> Tensor:
        """Co-interaction vectors ``[N, k]``: an item's own ``[N, k]`` and its knowledge vector ``[N, k]``
        (zero rows: none), weighted by its interaction count ``[N]``."""
        has = (knowledge != 0).any(dim=-1)
        trust = torch.where(has, counts / (counts + self.cfg.handover), torch.ones_like(counts)).unsqueeze(-1)
        return trust * own + (1 - trust) * knowledge

    def gap_code(self, gap: Tensor) -> Tensor:
        """``[B, 1]`` the gap between the user's last event and the query time, in seconds ``[B]``,
        on a log scale (0 when the time projection is off)."""
        g = torch.log1p(gap.clamp(min=0)).unsqueeze(-1) / 10.0
        return g if self.cfg.use_time_projection else torch.zeros_like(g)

    def query(
        self, user_mem: Tensor, last_item_vec: Tensor, hist_vecs: Tensor, hist_ages: Tensor,
        hist_types: Tensor, hist_valid: Tensor, gap: Tensor, sequence_grad: bool = True,
    ) -> Tensor:
        """The user's query vector ``[B, d]`` at the query time: memories ``[B, d]``, last item vectors
        ``[B, d]`` (zeros for a user with no history), the last events ``[B, L, …]`` (see
        :class:`SequenceEncoder`) and the gap ``[B]`` since the user's last event. Without
        ``sequence_grad`` the sequence model runs as a fixed feature extractor (no gradient through
        it: its backward pass is most of the cost of a training step)."""
        if not self.cfg.use_sequence:
            z = torch.zeros_like(user_mem)
        elif sequence_grad:
            z = self.sequence(hist_vecs, hist_ages, hist_types, hist_valid)
        else:
            mode = self.sequence.training
            with torch.no_grad():
                z = self.sequence.eval()(hist_vecs, hist_ages, hist_types, hist_valid)
            self.sequence.train(mode)
        q = self.query_mlp(torch.cat([user_mem, last_item_vec, z], dim=-1))
        if not self.cfg.use_time_projection:
            return q
        return q * (1 + self.projection(self.memory.time_enc(10.0 * self.gap_code(gap))))

    def pair_features(
        self, prof_rows: Tensor, prof_feats: Tensor, trans: tuple[Tensor, Tensor, Tensor], gap: Tensor,
        n_items: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The related (user, item) pairs and their features: each user's profile items ``[B, M]``
        (-1 = empty) with features ``[B, M, Fp]``, and the transition pairs (user ``[P]``, item ``[P]``,
        features ``[P, 3]``) of engine.graph; a pair in both gets both. Returns users ``[R]``, items
        ``[R]``, features ``[R, Fp + 3 + 1]`` (the last: the user's gap code), and for each valid
        profile slot, in row-major order, the index of its pair ``[V]``. Unrelated pairs have all-zero
        features and are never materialised."""
        valid = prof_rows >= 0
        pu = valid.nonzero(as_tuple=True)[0]
        pi = prof_rows[valid]
        tu, ti, tf = trans
        keys, inverse = torch.unique(torch.cat([pu * n_items + pi, tu * n_items + ti]), return_inverse=True)
        fp = prof_feats.shape[-1]
        x = torch.zeros((len(keys), fp + tf.shape[-1] + 1), device=prof_feats.device, dtype=prof_feats.dtype)
        x[inverse[: len(pu)], :fp] = prof_feats[valid]
        x[inverse[len(pu) :], fp : fp + tf.shape[-1]] = tf
        users, items = keys // n_items, keys % n_items
        x[:, -1] = self.gap_code(gap)[users, 0]
        return users, items, x, inverse[: len(pu)]

    def scores(
        self,
        query: Tensor,
        item_vecs: Tensor,
        item_bias: Tensor,
        prof_rows: Tensor,
        prof_feats: Tensor,
        transitions: tuple[Tensor, Tensor, Tensor],
        trending: Tensor,
        gap: Tensor,
        content: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Scores ``[B, N]`` of every item in one softmax (the model without the mixture): queries
        ``[B, d]``, item vectors ``[N, d]``, biases ``[N]``, profiles ``[B, M]`` and ``[B, M, Fp]``,
        transition pairs (see :meth:`pair_features`), popularity ``[N, H]`` at H horizons, the gap
        ``[B]`` since each user's last event and, with the co-interaction term, the users' ``h_u``
        ``[B, k]`` and the items' ``c_i`` ``[N, k]``."""
        n = item_vecs.shape[0]
        out = self.trend(trending).squeeze(-1)  # [N]
        if self.cfg.use_item_bias:
            out = out + item_bias
        out = out + query @ item_vecs.T if self.cfg.use_memory else out.expand(query.shape[0], -1).clone()
        if content is not None and self.cfg.content_dim > 0:
            out = out + self.content_weight * (content[0] @ content[1].T)
        # g(x) on the related pairs only (most pairs are unrelated: x = 0 and g(0) = 0)
        users, items, x, _ = self.pair_features(prof_rows, prof_feats, transitions, gap, n)
        g = (self.pair_mlp(x) - self.pair_mlp(torch.zeros_like(x[:1]))).squeeze(-1)
        return out.index_put((users, items), g, accumulate=True)

    def item_features(self, trending: Tensor) -> Tensor:
        """``[N, 2H]`` what the explore side reads of each item beside its vector: log popularity at
        each horizon ``[N, H]`` (as given), and with freshness on, its velocity (log short-horizon
        over longer-horizon use: near 0 for an item whose use is all recent, a new item taking off)
        and whether it has never been used (a new catalogue item)."""
        fresh = torch.zeros_like(trending)
        if self.cfg.use_freshness:
            fresh = torch.cat([
                trending[:, :1] - trending[:, 1:],  # log(1+short) − log(1+long), ≤ 0
                (trending.sum(-1, keepdim=True) == 0).to(trending.dtype),
            ], dim=-1)
        return torch.cat([trending, fresh], dim=-1)

    def mixture_scores(
        self,
        query: Tensor,
        item_vecs: Tensor,
        item_bias: Tensor,
        prof_rows: Tensor,
        prof_feats: Tensor,
        transitions: tuple[Tensor, Tensor, Tensor],
        trending: Tensor,
        gap: Tensor,
        repeat_logit: Tensor,
        content: tuple[Tensor, Tensor] | None = None,
        log_weight: Tensor | None = None,
    ) -> Tensor:
        """Log-probabilities ``[B, N]`` of every item as the user's next, a mixture of repeat and explore
        (RepeatNet, Ren et al., AAAI 2019, https://arxiv.org/abs/1812.02646):

        .. math::

            P(i) = p_u \\, \\mathrm{softmax}_{R_u}(r_{ui}) \\; [i ∈ R_u]
                 + (1 − p_u) \\, \\mathrm{softmax}_{\\bar R_u}(e_{ui}) \\; [i ∉ R_u]

        R_u: the user's profile items; p_u = σ(``repeat_logit``) ``[B]``; r: the scorer of
        :meth:`scores` on R_u (repeat features, the repeat query); e: the explore scorer on every other
        item: its own query, transitions from the user's recent items, the co-interaction and
        knowledge neighbourhood, popularity, freshness and velocity. ``log_weight`` ``[N]``: each item's
        log weight in the explore normaliser (None: 0, every item once). Other arguments as
        :meth:`scores`.
        """
        n, b = item_vecs.shape[0], query.shape[0]
        valid = prof_rows >= 0  # [B, M]
        vb, vm = valid.nonzero(as_tuple=True)  # the valid profile slots, row-major
        rows = prof_rows.clamp(min=0)
        vr = prof_rows[vb, vm]  # their item rows
        bias = item_bias if self.cfg.use_item_bias else torch.zeros_like(item_bias)
        users, items, x, at = self.pair_features(prof_rows, prof_feats, transitions, gap, n)
        in_profile = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        in_profile[at] = True
        ex = (~in_profile).nonzero(as_tuple=True)[0]  # the pairs outside the profile: transitions only
        zero = torch.zeros_like(x[:1])

        # explore: every item; the profile's positions are masked out of its softmax
        e = self._item_terms(item_bias, trending)  # [N]
        q_e = query + self.explore_query(query)
        if self.cfg.use_memory:  # both queries against every item in one product; the repeat side gathers
            qv = torch.cat([query, q_e]) @ item_vecs.T  # [2B, N]
            e = e + qv[b:]
        else:
            e = e.expand(b, -1).clone()  # [B, N]
        cc = content[0] @ content[1].T if content is not None and self.cfg.content_dim > 0 else None  # [B, N]
        if cc is not None:
            e = e + self.explore_content_weight * cc
        g_e = (self.explore_pair_mlp(x[ex]) - self.explore_pair_mlp(zero)).squeeze(-1)
        e = e.index_put((users[ex], items[ex]), g_e, accumulate=True)
        mask = torch.zeros((b, n), dtype=torch.bool, device=e.device)
        mask[vb, vr] = True
        has_explore = valid.sum(1) < n  # a profile's items are distinct
        masked = e.masked_fill(mask, float("-inf"))
        lse_e = torch.logsumexp(masked if log_weight is None else masked + log_weight, dim=1)
        lse_e = torch.where(has_explore, lse_e, torch.zeros_like(lse_e))

        # repeat: the profile's items only, gathered (index_select: advanced indexing with a [B, M]
        # index is far slower on CPU)
        r = (bias + self.trend(trending).squeeze(-1)).index_select(0, rows.reshape(-1)).view(b, -1)  # [B, M]
        if self.cfg.use_memory:
            r = r + qv[:b].gather(1, rows)
        if cc is not None:
            r = r + self.content_weight * cc.gather(1, rows)
        g_r = (self.pair_mlp(x[at]) - self.pair_mlp(zero)).squeeze(-1)
        r = r.index_put((vb, vm), g_r, accumulate=True)
        r = r.masked_fill(~valid, float("-inf"))
        has_repeat = valid.any(dim=1)
        lse_r = torch.logsumexp(r, dim=1)
        lse_r = torch.where(has_repeat, lse_r, torch.zeros_like(lse_r))

        log_rep = torch.where(has_explore, F.logsigmoid(repeat_logit), torch.zeros_like(repeat_logit))
        log_exp = torch.where(has_repeat, F.logsigmoid(-repeat_logit), torch.zeros_like(repeat_logit))
        out = e - (lse_e - log_exp).unsqueeze(-1)
        rep = r - (lse_r - log_rep).unsqueeze(-1)
        return out.index_put((vb, vr), rep[vb, vm])

    def repeat_logit(self, x: ScoringInputs, q: Tensor) -> Tensor:
        """``[B]`` the logit of p_u, the probability that the user's next item is one of their profile
        items: from their habits (:func:`user_features`), their query and the next-event-type head."""
        types = torch.softmax(self.type_head(q), dim=-1).detach()
        h = torch.cat([user_features(x, self.gap_code(x.gap)), types], dim=-1)
        return (self.repeat_head(h) + self.repeat_query(q)).squeeze(-1)

    def user_side(self, x: ScoringInputs, sequence_grad: bool = True) -> UserSide:
        """What scoring needs of the users whatever items it scores: the query (:meth:`query`), the
        users' direction h_u in the co-interaction space and, with the mixture, the logit of p_u."""
        q = self.query(
            x.mem, x.last_vec, x.hist_vecs, x.hist_ages, x.hist_types, x.hist_valid, x.gap, sequence_grad
        )
        h = None
        if x.content is not None:
            decay = 0.5 ** torch.arange(x.hist_rows.shape[1], device=q.device, dtype=x.content.dtype)  # [L]
            h = (x.content[x.hist_rows.clamp(min=0)] * (x.hist_valid * decay).unsqueeze(-1)).sum(1)  # [B, k]
            h = F.normalize(h, dim=-1)
        rl = self.repeat_logit(x, q) if self.cfg.use_mixture else None
        return UserSide(q, h, rl)

    def item_scores(self, u: UserSide, x: ScoringInputs) -> Tensor:
        """Scores ``[B, N]`` of the ``N`` items of ``x`` (its item-side fields: vectors, bias, profile
        and transition rows as positions among them, popularity, c_i, tail weights) for users ``u``:
        log-probabilities of the repeat-or-explore mixture (:meth:`mixture_scores`) or, without it,
        one softmax's logits (:meth:`scores`)."""
        users_content = (u.content, x.content) if u.content is not None and x.content is not None else None
        if self.cfg.use_mixture:
            assert u.repeat_logit is not None
            return self.mixture_scores(
                u.q, x.vectors, x.bias, x.prof_rows, x.prof_feats, x.transitions, x.trending, x.gap,
                u.repeat_logit, users_content, x.log_weight,
            )
        return self.scores(
            u.q, x.vectors, x.bias, x.prof_rows, x.prof_feats, x.transitions, x.trending, x.gap,
            users_content,
        )

    def forward(self, x: ScoringInputs, sequence_grad: bool = True) -> tuple[Tensor, Tensor]:
        """Scores ``[B, N]`` of every item for a batch of users (:meth:`user_side`, then
        :meth:`item_scores`), and their queries ``[B, d]``."""
        u = self.user_side(x, sequence_grad)
        return self.item_scores(u, x), u.q

    # ------------------------------------------------------------------------------------ retrieval

    def retrieval_items(
        self, vectors: Tensor, bias: Tensor, trending: Tensor, content: Tensor | None
    ) -> Tensor:
        """``[N, D]`` the items' side of the explore logit without its pair terms, as one vector each:
        ``[v_i ‖ c_i ‖ a_i]`` with a_i the item's own terms (bias, popularity, freshness), so that
        :meth:`retrieval_queries` · this = that logit, a maximum-inner-product search (without the
        mixture: the single softmax's logit)."""
        a = self._item_terms(bias, trending).unsqueeze(-1)  # [N, 1]
        parts = [vectors] if self.cfg.use_memory else []
        if content is not None and self.cfg.content_dim > 0:
            parts.append(content)
        return torch.cat([*parts, a], dim=-1)

    def retrieval_queries(self, u: UserSide) -> Tensor:
        """``[B, D]`` the users' side of :meth:`retrieval_items`: ``[q_e ‖ β h_u ‖ 1]``."""
        q = u.q
        mix = self.cfg.use_mixture
        parts = [q + self.explore_query(q) if mix else q] if self.cfg.use_memory else []
        if u.content is not None and self.cfg.content_dim > 0:
            parts.append((self.explore_content_weight if mix else self.content_weight) * u.content)
        return torch.cat([*parts, torch.ones_like(q[:, :1])], dim=-1)

    def _item_terms(self, bias: Tensor, trending: Tensor) -> Tensor:
        """``[N]`` what an item's logit holds whoever the user: bias and popularity (with the mixture,
        the explore side's: popularity, freshness and velocity through its item scorer)."""
        b = bias if self.cfg.use_item_bias else torch.zeros_like(bias)
        if self.cfg.use_mixture:
            return b + self.item_mlp(self.item_features(trending)).squeeze(-1)
        return b + self.trend(trending).squeeze(-1)


@dataclass
class UserSide:
    """The users' side of scoring (:meth:`InterestModel.user_side`), independent of the items scored."""

    q: Tensor  # [B, d] queries
    content: Tensor | None  # [B, k] unit h_u in the co-interaction space (None: no such term)
    repeat_logit: Tensor | None  # [B] logit of P(repeat) (None: no mixture)


@dataclass
class ScoringInputs:
    """Everything the model scores ``B`` users against ``N`` items from, gathered by the engine
    (engine/fold/scoring.py) from the users' memories and contexts, the item table and the item graph."""

    mem: Tensor  # [B, d] user memories
    last_vec: Tensor  # [B, d] the vector of each user's last item (zeros: none)
    hist_rows: Tensor  # [B, L] the last events' item rows, most recent first (-1: none)
    hist_vecs: Tensor  # [B, L, d] their item vectors (zeros: none)
    hist_ages: Tensor  # [B, L] seconds before the query time
    hist_types: Tensor  # [B, L] event-type ids
    hist_valid: Tensor  # [B, L] bool
    gap: Tensor  # [B] seconds since the user's last event
    vectors: Tensor  # [N, d] item vectors
    bias: Tensor  # [N] item biases
    prof_rows: Tensor  # [B, M] profile item rows (-1 = empty)
    prof_feats: Tensor  # [B, M, Fp]
    transitions: tuple[Tensor, Tensor, Tensor]  # transition pairs: users [P], items [P], features [P, 3]
    trending: Tensor  # [N, H] popularity at H horizons
    content: Tensor | None = None  # [N, k] the items' c_i in the co-interaction space (None: no such term)
    # [N] each item's log weight in the explore normaliser: 0 for every item when all N are scored;
    # over a candidate set, an item drawn to stand for the items left out weighs for them
    log_weight: Tensor | None = None


#: The habits :func:`user_features` gives the repeat head, per user.
N_USER_FEATURES = 9
SESSION_GAP = 1800.0  # seconds between two events that end a session


def user_features(x: ScoringInputs, gap_code: Tensor) -> Tensor:
    """``[B, 9]`` a user's repeat habits at the query time: log profile size; the share of their last
    events that returned to an item used before within those events, and whether the last one did;
    how many of the last events had an earlier one to return to; log total uses of the profile's
    items and the share of them that were repeats; the gap code ``[B, 1]``; their position in the
    current session (events less than ``SESSION_GAP`` apart); the strongest recent use of one item."""
    valid = x.hist_valid  # [B, L]
    h = x.hist_rows
    n_valid = valid.sum(1)
    pos = torch.arange(h.shape[1], device=h.device)
    older = pos.unsqueeze(0) > pos.unsqueeze(1)  # [L, L]: j is before l
    same = (h.unsqueeze(2) == h.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)
    returned = (same & older).any(-1)  # [B, L]
    can = valid & (pos.unsqueeze(0) < (n_valid - 1).unsqueeze(1))
    share = returned.sum(1) / can.sum(1).clamp(min=1)
    prof_valid = x.prof_rows >= 0
    n_prof = prof_valid.sum(1).to(gap_code.dtype)
    uses = (torch.expm1(x.prof_feats[..., 2]) * prof_valid).sum(1)
    repeat_uses = 1 - n_prof / uses.clamp(min=1)
    steps = (x.hist_ages[:, 1:] - x.hist_ages[:, :-1]) < SESSION_GAP
    in_session = torch.cumprod((steps & valid[:, 1:]).to(gap_code.dtype), dim=1).sum(1)
    strongest = (x.prof_feats[..., 0] * prof_valid).amax(1) if x.prof_feats.shape[1] else n_prof * 0
    return torch.stack([
        torch.log1p(n_prof) / 4, share, returned[:, 0].to(gap_code.dtype), can.sum(1) / h.shape[1],
        torch.log1p(uses) / 5, repeat_uses, gap_code[:, 0], torch.log1p(in_session) / 3, strongest / 2,
    ], dim=-1).to(gap_code.dtype)


# Building GraphSnapshotModel(dim), and resetting it, takes these [dim, dim] uniform draws from torch's
# generator (PyG's glorot initialisation of GConvGRU's weights). A model without it takes the same
# draws instead, so that every other parameter starts as it does with it, and a seed gives the same
# model either way; tests/models/test_interest.py checks that this still holds.
_GRAPH_BUILD_DRAWS = 24
_GRAPH_RESET_DRAWS = 24


def _graph_model(dim: int) -> GraphSnapshotModel:
    from models.graph_context import GraphSnapshotModel

    return GraphSnapshotModel(dim)


def _draw_as_graph_model(dim: int, n: int) -> None:
    for _ in range(n):
        torch.empty(dim, dim).uniform_()
