"""User stage: the micro-batched fold of interactions into user state, and the recommendations.

``UserStage.fold`` runs four named steps on a batch:

1. :meth:`~UserStage._read`: every touched user's state in one multi-get per partition; events at or
   below a user's last applied offset (replayed input) are dropped; times, gaps and the item rows;
2. :meth:`~UserStage._advance`: the users' memories, one model call per round (round r = each user's
   r-th event in the batch, so per-user order is exact), their profiles and history, and the
   caller's per-round observer (the offline evaluator ranks each event's target there);
3. :meth:`~UserStage._emit`: exact top-k with reasons, one recommendation per user (for their last
   event in the batch), and the new state as one write batch per partition;
4. :meth:`~UserStage._package`: the online-learning examples and the item updates for the item stage.

engine/pipeline.py runs this stage and the item stage in order for the worker, the offline evaluator
and the bench.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from engine.fold.candidates import CandidateIndex, IndexConfig
from engine.fold.context import HISTORY, UserContext, apply_event, context_copy, emission_times, user_contexts
from engine.fold.drift import interest_distance
from engine.fold.explain import explain, reasons
from engine.fold.items import ItemStage, ItemUpdates
from engine.fold.online import Examples
from engine.fold.rounds import gaps, occurrence_rounds, previous_occurrence, run_rounds
from engine.fold.scoring import score_items, scoring_inputs
from engine.fold.table import ItemTable
from engine.hooks import StageClock
from engine.state.codec import UserState, decode_user, encode_user
from engine.state.store import StateStore, _Batch, new_transaction
from models.interest import InterestModel
from schemas import Interaction, Recommendation, ScoredItem, SourceRef

__all__ = [
    "FoldResult", "RoundObserver", "SourcedEvent", "UserStage", "is_example", "rank_of",
    "user_partition_name",
]

logger = logging.getLogger(__name__)

#: user–item pairs scored at once when ranking the whole catalogue: a batch's users are scored in
#: chunks of SCORE_BUDGET // catalogue size. The mixture holds about six [chunk, N] float32 arrays at
#: its peak, so 16M pairs is about 400 MiB of scores.
SCORE_BUDGET = 16 * 2**20


def is_example(user_id: str, n: int, rate: float) -> bool:
    """Whether the user's ``n``-th event is an online-learning example: a hash of the pair, so the
    worker and the evaluator pick the same events whatever the batches, partitions or restarts."""
    return rate >= 1.0 or zlib.crc32(b"%d:%s" % (n, user_id.encode("utf-8"))) < rate * 2**32


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """An interaction with where it came from: input partition, offset, and arrival time (epoch s)."""

    event: Interaction
    partition: int
    offset: int
    arrival: float


@dataclass
class FoldResult:
    recommendations: list[Recommendation]
    arrivals: list[float]  # arrival time of each recommendation's triggering event
    item_updates: ItemUpdates | None  # None: nothing fresh in the batch
    writes: dict[str, _Batch]
    n_folded: int
    n_skipped: int
    fold_seconds: float = 0.0
    examples: Examples | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per part of the fold
    states: list[UserState] = field(default_factory=list)  # each recommendation's user, after the batch
    drift: list[float] | None = None  # each one's interest drift distance (engine/fold/drift.py)


class RoundObserver(Protocol):
    """Called after each round of the fold with the round's events (their positions in the batch
    given to :meth:`UserStage.fold`), their users' memories ``[R, d]`` and states, just after those
    events were folded."""

    def after_round(
        self, stage: UserStage, positions: np.ndarray, mem: Tensor, states: list[UserState]
    ) -> None:
        ...


def _strongest_per_user(users: np.ndarray, strength: np.ndarray, k: int) -> np.ndarray:
    """Indices of each user's ``k`` strongest pairs among pairs (``users`` ``[P]``, ``strength``
    ``[P]``), as a mask ``[P]``."""
    order = np.lexsort((-strength, users))
    start = np.searchsorted(users[order], users[order], side="left")
    keep = np.zeros(len(users), bool)
    keep[order[np.arange(len(users)) - start < k]] = True
    return keep


def user_partition_name(partition: int) -> str:
    return f"users-{partition}"


def rank_of(scores: Tensor, target: Tensor) -> Tensor:
    """Rank (1 = best) of ``target`` ``[B]`` in each row of ``scores`` ``[B, N]``, ties counted half."""
    t = scores.gather(1, target.unsqueeze(1))
    above = (scores > t).sum(1).float()
    ties = (scores == t).sum(1).float() - 1
    return 1 + above + 0.5 * ties


@dataclass
class FoldBatch:
    """The fresh events of a batch as arrays, with their users' states (one slot per user)."""

    events: list[SourcedEvent]  # fresh events, in batch order
    positions: np.ndarray  # [E] their positions in the batch given to fold
    keys: list[tuple[int, str]]  # slot → (partition, user)
    states: list[UserState]  # slot → state, advanced in place by the fold
    slots: np.ndarray  # [E] each event's user slot
    item_rows: np.ndarray  # [E]
    prev_rows: np.ndarray  # [E] the user's previous item row (-1 for a user's first event ever)
    ts: np.ndarray  # [E] event times, never before the user's previous event
    dt: np.ndarray  # [E] seconds since the user's previous event (0 for their first)
    etypes: np.ndarray  # [E]
    weights: np.ndarray  # [E]
    rounds: list[np.ndarray]
    example: np.ndarray  # [E] bool: an online-learning example


@dataclass
class _Advanced:
    mem: Tensor  # [U, d] each user's memory after the batch
    user_before: Tensor  # [E, d] the user's memory just before each event
    example_rounds: list[np.ndarray]  # the example events, round by round
    example_states: list[UserState]  # a copy of each one's user just before it


class UserStage:
    def __init__(
        self,
        model: InterestModel,
        table: ItemTable,
        store: StateStore,
        *,
        model_version: str,
        input_topic: str = "tide.interactions",
        top_k: int = 10,
        index: IndexConfig | None = None,
    ) -> None:
        self.model = model.eval()
        self.table = table
        self.store = store
        self.model_version = model_version
        self.input_topic = input_topic
        self.top_k = top_k
        self.profile_items = model.cfg.profile_items
        self.seq_len = min(model.cfg.seq_len, HISTORY)
        self.dim = model.cfg.dim
        self.measure_drift = False  # fill FoldResult.drift
        # approximate candidates, then exact scores, for a catalogue of index_config.min_items or more
        self.index_config = index
        self.index: CandidateIndex | None = None
        self._tail_rng = np.random.default_rng(index.seed if index is not None else 0)
        if index is not None:
            table.track_changes()

    @torch.no_grad()
    def fold(
        self, events: Sequence[SourcedEvent], observer: RoundObserver | None = None, example_rate: float = 0.0
    ) -> FoldResult:
        """Fold ``events``: the recommendations, the new user state to write, and what the item stage
        and the online learner take from the batch. ``observer`` is called after each round; with
        ``example_rate`` > 0, that share of the events (chosen by :func:`is_example`) become training
        examples (the state just before each → its item)."""
        start = time.perf_counter()
        clock = StageClock()
        batch = self._read(events, example_rate)
        n_skipped = len(events) - (len(batch.events) if batch else 0)
        if batch is None:
            return FoldResult([], [], None, {}, 0, n_skipped, time.perf_counter() - start)
        clock.lap("read_state")
        adv = self._advance(batch, observer, clock)
        recs, arrivals, writes, drift = self._emit(batch, adv.mem, clock)
        examples, updates = self._package(batch, adv)
        clock.lap("examples")
        return FoldResult(
            recs, arrivals, updates, writes, len(batch.events), n_skipped, time.perf_counter() - start,
            examples, clock.seconds, batch.states, drift,
        )

    # ---------------------------------------------------------------------------------------- steps

    def _read(self, events: Sequence[SourcedEvent], example_rate: float) -> FoldBatch | None:
        """The batch's fresh events as arrays, with their users' states; None if none is fresh."""
        states = self._read_states(events)
        # An event at or below the user's last applied offset was folded before (input replayed).
        fresh = [k for k, e in enumerate(events) if e.offset > states[(e.partition, e.event.user_id)].offset]
        if not fresh:
            return None
        ev = [events[k] for k in fresh]
        keys = list(dict.fromkeys((e.partition, e.event.user_id) for e in ev))
        slot_of = {key: s for s, key in enumerate(keys)}
        user_states = [states[k] for k in keys]
        slots = np.array([slot_of[(e.partition, e.event.user_id)] for e in ev])
        item_rows = self.table.rows([e.event.item_id for e in ev])
        rounds = occurrence_rounds(slots)
        prev = previous_occurrence(slots)
        within = prev >= 0
        state_t = np.array([st.last_t for st in user_states])[slots]
        # A user's time never goes back: an event older than the user's last one is folded at that
        # time (gap 0), so out-of-order input cannot make ages or gaps negative.
        ts = np.array([e.event.timestamp for e in ev])
        for idx in rounds:
            ts[idx] = np.fmax(ts[idx], np.where(within[idx], ts[prev[idx]], state_t[idx]))
        state_row = np.full(len(keys), -1, np.int64)  # each user's last item before this batch
        has_history = np.array([bool(st.hist_items) for st in user_states])
        state_row[has_history] = self.table.rows([st.hist_items[0] for st in user_states if st.hist_items])
        n_before = np.array([st.n_events for st in user_states])[slots]
        for r, idx in enumerate(rounds):
            n_before[idx] += r
        example = (
            np.array(
                [is_example(e.event.user_id, int(n) + 1, example_rate) for e, n in zip(ev, n_before)], bool
            )
            if example_rate > 0 else np.zeros(len(ev), bool)
        )
        return FoldBatch(
            events=ev, positions=np.asarray(fresh), keys=keys, states=user_states, slots=slots,
            item_rows=item_rows, prev_rows=np.where(within, item_rows[prev], state_row[slots]), ts=ts,
            dt=gaps(ts, prev, state_t), etypes=np.array([e.event.event_type_id for e in ev], np.int64),
            weights=np.array([e.event.weight for e in ev], np.float32), rounds=rounds, example=example,
        )

    def _read_states(self, events: Sequence[SourcedEvent]) -> dict[tuple[int, str], UserState]:
        by_part: dict[int, dict[str, None]] = {}  # partition → its users, each once
        for e in events:
            by_part.setdefault(e.partition, {})[e.event.user_id] = None
        states: dict[tuple[int, str], UserState] = {}
        for p, users in by_part.items():
            keys = [u.encode("utf-8") for u in users]
            found = self.store.partition(user_partition_name(p)).get_many(keys).get
            for u, key in zip(users, keys):
                raw = found(key)
                states[(p, u)] = decode_user(raw) if raw is not None else UserState.empty(self.dim)
        return states

    def _advance(self, b: FoldBatch, observer: RoundObserver | None, clock: StageClock) -> _Advanced:
        """Advance the users' memories, profiles and history over the batch, round by round."""
        dev = self.table.device
        mem = torch.from_numpy(np.stack([st.memory for st in b.states])).to(dev)  # [U, d]
        # The cells' inputs for the whole batch in one call; only the cells run round by round.
        messages = self.model.memory.message(
            self.table.vectors_of(torch.from_numpy(b.item_rows).to(dev)),
            torch.from_numpy(b.dt).float().to(dev), torch.from_numpy(b.etypes).to(dev),
            torch.from_numpy(b.weights).to(dev),
        )
        example_rounds: list[np.ndarray] = []
        example_states: list[UserState] = []

        events, states, slots, ts, etypes = b.events, b.states, b.slots, b.ts, b.etypes
        max_items = self.profile_items

        def after_round(idx: np.ndarray, rows: Tensor) -> None:
            clock.lap("memory")
            wanted = idx[b.example[idx]]
            if len(wanted):  # before the round's events change the states; contexts once per batch
                example_rounds.append(wanted)
                example_states.extend(context_copy(states[slots[k]]) for k in wanted)
                clock.lap("examples")
            for k in idx.tolist():
                apply_event(states[slots[k]], events[k].event.item_id, ts[k], int(etypes[k]), max_items)
            clock.lap("memory")
            if observer is not None:
                observer.after_round(self, b.positions[idx], mem[rows], [states[slots[k]] for k in idx])
                clock.lap("observe")

        before = run_rounds(
            self.model.memory.user_cell, messages, mem, slots, b.rounds, after_round, keep_before=True
        )
        assert before is not None
        return _Advanced(mem, before, example_rounds, example_states)

    def _emit(
        self, b: FoldBatch, mem: Tensor, clock: StageClock
    ) -> tuple[list[Recommendation], list[float], dict[str, _Batch], list[float] | None]:
        """One recommendation per user, for their last event in this batch, the users' new state and,
        with :attr:`measure_drift`, their interest drift distances."""
        top_scores, top_rows, ctx = self._top_k(mem, b.states)
        top_scores_l = top_scores.cpu().tolist()
        top_rows_l = top_rows.cpu().tolist()
        clock.lap("score")
        drift = interest_distance(ctx).cpu().tolist() if self.measure_drift else None
        clock.lap("drift")
        why = reasons(self.table, ctx.hist_rows, top_rows)
        clock.lap("explain")
        # each slot's first and last event in the batch (every slot 0 … U-1 has at least one)
        n = len(b.slots)
        first_of = np.unique(b.slots, return_index=True)[1].tolist()
        last_of = (n - 1 - np.unique(b.slots[::-1], return_index=True)[1]).tolist()
        last_t = b.ts[last_of].tolist()
        now = time.time()
        recs: list[Recommendation] = []
        arrivals: list[float] = []
        mem_np = mem.cpu().numpy()
        writes: dict[str, _Batch] = {}
        item_id, text = self.table.ids.__getitem__, why.texts.__getitem__
        events, states, topic, version = b.events, b.states, self.input_topic, self.model_version
        for s, (p, u) in enumerate(b.keys):
            src = events[last_of[s]]
            items = tuple(map(
                ScoredItem, map(item_id, top_rows_l[s]), top_scores_l[s], map(text, why.text_ids[s]),
                why.evidence[s],
            ))
            source = SourceRef(topic, p, src.offset, src.event.timestamp, events[first_of[s]].offset)
            recs.append(Recommendation(u, items, version, source, now))
            arrivals.append(src.arrival)
            st = states[s]
            st.memory = mem_np[s]
            st.last_t = last_t[s]
            st.partition, st.offset = p, src.offset
            st.model_version = version
            name = user_partition_name(p)
            tx = writes.get(name)
            if tx is None:
                tx = writes[name] = new_transaction()
            tx.put(u.encode("utf-8"), encode_user(st))
        clock.lap("emit")
        return recs, arrivals, writes, drift

    def _package(self, b: FoldBatch, adv: _Advanced) -> tuple[Examples | None, ItemUpdates]:
        """The batch's online-learning examples, in event order, and its item updates."""
        dev = self.table.device
        examples = None
        if adv.example_rounds:
            order = np.concatenate(adv.example_rounds)
            in_event_order = np.argsort(order, kind="stable")
            sel = order[in_event_order]
            ctx = user_contexts(
                [adv.example_states[j] for j in in_event_order], self.table.rows, self.profile_items,
                self.seq_len, now=b.ts[sel],
            )
            examples = Examples(
                user_mem=adv.user_before[torch.from_numpy(sel).to(dev)],
                ctx=ctx.to(dev),
                targets=torch.from_numpy(b.item_rows[sel]).to(dev),
                states=[adv.example_states[j] for j in in_event_order],
                ts=b.ts[sel],
            )
        updates = ItemUpdates(
            rows=b.item_rows,
            prev_rows=b.prev_rows,
            user_vec=adv.user_before,
            ts=b.ts,
            event_types=b.etypes,
            weights=b.weights,
            partitions=np.array([e.partition for e in b.events], np.int64),
            offsets=np.array([e.offset for e in b.events], np.int64),
        )
        return examples, updates

    # -------------------------------------------------------------------------------------- scoring

    def context(
        self, states: Sequence[UserState], now: Sequence[float] | np.ndarray | None = None
    ) -> UserContext:
        """The users' contexts at query times ``now`` (default: each user's last event), on the device,
        with the whole history ring (the scorer reads its first ``seq_len``; the reasons all of it)."""
        return user_contexts(states, self.table.rows, self.profile_items, HISTORY, now).to(self.table.device)

    def score_context(self, mem: Tensor, ctx: UserContext) -> Tensor:
        """Scores ``[B, N]`` of all items for users with memories ``mem`` ``[B, d]`` and contexts ``ctx``;
        with the candidate index on (:meth:`uses_index`), the items outside a user's candidate set
        score -inf."""
        t = self.table
        if not self.uses_index():
            return score_items(self.model, t.graph, t.vectors(), t.bias, mem, ctx, t.content())
        out = torch.full((len(mem), len(t)), float("-inf"), device=mem.device)
        for c, rows, scores in self._candidate_scores(mem, ctx):
            out[c : c + len(scores)].index_copy_(1, rows, scores)
        return out

    # ------------------------------------------------------------------------------ candidate index

    def uses_index(self) -> bool:
        """Whether scoring goes through the candidate index: configured, on CPU (a GPU scores every
        item), and the catalogue at least :attr:`IndexConfig.min_items` (the index is built the
        first time)."""
        cfg = self.index_config
        if cfg is None or self.table.device.type != "cpu" or len(self.table) < cfg.min_items:
            return False
        if self.index is None:
            self.index = CandidateIndex(self.retrieval_vectors, self.index_config)
            self.index.build()
        return True

    @torch.no_grad()
    def retrieval_vectors(self, rows: np.ndarray | None) -> np.ndarray:
        """``[R, D]`` the items' retrieval vectors (:meth:`InterestModel.retrieval_items`) of ``rows``
        (None: every item), as the index holds them."""
        t = self.table
        n = len(t)
        content = t.content()
        trending = t.graph.trending(n, t.device)
        if rows is None:
            out = self.model.retrieval_items(t.vectors(), t.bias, trending, content)
        else:
            r = torch.from_numpy(np.asarray(rows, np.int64)).to(t.device)
            out = self.model.retrieval_items(
                t.vectors()[r], t.bias[r], trending[r], content[r] if content is not None else None
            )
        return out.float().cpu().numpy()

    def refresh_index(self, rows: Sequence[int] | np.ndarray) -> None:
        """After the item stage: re-index the item ``rows`` whose popularity or memory it changed, any
        other rows whose memory was set since (a shared item stage's), and any new items (see
        engine/fold/candidates.py for the refresh policy)."""
        changed = self.table.take_changed()
        if self.index is not None:
            self.index.refresh(np.union1d(np.asarray(rows, np.int64), changed), len(self.table))

    @torch.no_grad()
    def _candidate_scores(self, mem: Tensor, ctx: UserContext) -> Iterator[tuple[int, Tensor, Tensor]]:
        """For each chunk of users from position ``c``: the item rows ``[C]`` of its candidate set and
        their exact scores ``[B_c, C]``. A chunk's set is the union of its users' index candidates, the
        items their profiles name and the strongest items their recent items lead to (the repeat side
        and the pair terms, which the index does not see), and a uniform sample of the rest, which
        stands for the rest in the explore side's normaliser (weighted by how many items each sample
        item stands for). Every item of the set is scored with all its terms for every user."""
        assert self.index is not None and self.index_config is not None
        t, model, cfg = self.table, self.model, self.index_config
        n = len(t)
        vectors, bias, content = t.vectors(), t.bias, t.content()
        for c in range(0, len(mem), cfg.users_per_call):
            m, cx = mem[c : c + cfg.users_per_call], ctx[c : c + cfg.users_per_call]
            x = scoring_inputs(model, t.graph, vectors, bias, m, cx, content)
            u = model.user_side(x)
            found = self.index.search(model.retrieval_queries(u).float().cpu().numpy())
            tu, ti, tf = x.transitions
            strongest = _strongest_per_user(tu.cpu().numpy(), (tf[:, 0] + tf[:, 2]).cpu().numpy(),
                                            cfg.transitions_per_user)
            core = np.unique(np.concatenate([
                found[found >= 0], cx.prof_rows[cx.prof_rows >= 0].cpu().numpy(), ti.cpu().numpy()[strongest],
                self.index.always(),
            ]))
            rows, log_weight = self._with_tail(core, n)
            prof = x.prof_rows
            at = torch.searchsorted(rows, ti).clamp(max=len(rows) - 1)
            scored = rows[at] == ti  # the pair terms of the items in the set
            sub = replace(
                x, vectors=vectors[rows], bias=bias[rows], trending=x.trending[rows],
                prof_rows=torch.where(prof >= 0, torch.searchsorted(rows, prof), prof),
                transitions=(tu[scored], at[scored], tf[scored]),
                content=content[rows] if content is not None else None, log_weight=log_weight,
            )
            yield c, rows, model.item_scores(u, sub)

    def _with_tail(self, core: np.ndarray, n: int) -> tuple[Tensor, Tensor | None]:
        """The rows ``[C]`` of a candidate set ``core`` (sorted) with a uniform sample of the other
        items added, and each row's log weight in the explore normaliser ``[C]``: 0 for the set,
        log(items left out / sample size) for the sample (None: nothing left out)."""
        assert self.index_config is not None
        dev = self.table.device
        tail = np.setdiff1d(self._tail_rng.integers(0, n, self.index_config.tail_sample), core)  # sorted
        rows = np.union1d(core, tail)
        if not len(tail):
            return torch.from_numpy(rows).to(dev), None
        log_weight = torch.zeros(len(rows), device=dev)
        log_weight[torch.from_numpy(np.searchsorted(rows, tail)).to(dev)] = float(
            np.log((n - len(core)) / len(tail))
        )
        return torch.from_numpy(rows).to(dev), log_weight

    def scores(
        self, mem: Tensor, states: Sequence[UserState], now: Sequence[float] | np.ndarray | None = None
    ) -> Tensor:
        """Scores ``[B, N]`` of all items for users with memories ``mem`` and states ``states`` at query
        times ``now`` (default: each user's last event)."""
        return self.score_context(mem, self.context(states, now))

    def emission_time(self, st: UserState) -> float:
        """The query time of one stored user's pushed recommendation (:func:`emission_times`)."""
        return float(emission_times([st])[0])

    def _top_k(self, mem: Tensor, states: Sequence[UserState]) -> tuple[Tensor, Tensor, UserContext]:
        """Top-k scores and rows ``[B, k]`` and the users' contexts: over each user's candidate set with
        the candidate index on, otherwise exact, scoring at most :data:`SCORE_BUDGET` user–item pairs
        at a time, so a large catalogue never needs a [users, items] matrix for the whole batch."""
        n = len(self.table)
        k = min(self.top_k, n)
        chunk = max(1, SCORE_BUDGET // max(n, 1))
        ctx = self.context(states, emission_times(states))  # each list for the user's quickest return
        if self.uses_index():
            values, rows = [], []
            for _, cand, scores in self._candidate_scores(mem, ctx):
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                values.append(top.values)
                rows.append(cand[top.indices])
            return torch.cat(values), torch.cat(rows), ctx
        parts = [
            torch.topk(self.score_context(mem[c : c + chunk], ctx[c : c + chunk]), k, dim=1)
            for c in range(0, len(states), chunk)
        ]
        return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts]), ctx

    @torch.no_grad()
    def recommend(self, st: UserState, at: float, k: int | None = None) -> list[ScoredItem]:
        """The top ``k`` items for a stored user state at time ``at`` (epoch s): the user's vector
        projected from their last event to ``at``, ages and gaps measured to ``at``. At the time of
        the user's :meth:`emission_time` this is the recommendation the fold emitted."""
        dev = self.table.device
        mem = torch.from_numpy(st.memory).to(dev).unsqueeze(0)
        ctx = self.context([st], now=[max(at, st.last_t) if st.hist_items else at])
        scores = self.score_context(mem, ctx)[0]
        top_scores, top_rows = torch.topk(scores, min(k or self.top_k, scores.shape[0]))
        reasons = explain(self.table, ctx.hist_rows, top_rows.unsqueeze(0))[0]
        ids = [self.table.ids[r] for r in top_rows.tolist()]
        return [
            ScoredItem(i, s, why, evidence)
            for i, s, (why, evidence) in zip(ids, top_scores.tolist(), reasons)
        ]

    @torch.no_grad()
    def empty_user_scores(self) -> Tensor:
        """Scores ``[N]`` for a user with no state yet."""
        return self.scores(
            torch.zeros(1, self.dim, device=self.table.device), [UserState.empty(self.dim)]
        )[0]

    def commit(self, result: FoldResult, items: ItemStage | None = None) -> None:
        """Write the batch's user state and, with ``items``, the item state its item-stage fold
        changed, in one atomic write."""
        txs = [(self.store.partition(name), tx) for name, tx in result.writes.items()]
        self.store.write_many(txs + (items.take_writes() if items is not None else []))
