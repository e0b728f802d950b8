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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from engine.fold.context import HISTORY, UserContext, apply_event, context_copy, emission_times, user_contexts
from engine.fold.drift import interest_distance
from engine.fold.explain import explain
from engine.fold.items import ItemStage, ItemUpdates
from engine.fold.online import Examples
from engine.fold.rounds import gaps, occurrence_rounds, previous_occurrence, run_rounds
from engine.fold.scoring import score_items
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

#: user–item scores held at once when ranking the whole catalogue (64M float32 = 256 MiB): a batch's
#: users are scored in chunks of SCORE_BUDGET // catalogue size.
SCORE_BUDGET = 64 * 2**20


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
        by_part: dict[int, set[str]] = {}
        for e in events:
            by_part.setdefault(e.partition, set()).add(e.event.user_id)
        states: dict[tuple[int, str], UserState] = {}
        for p, users in by_part.items():
            found = self.store.partition(user_partition_name(p)).get_many(u.encode("utf-8") for u in users)
            for u in users:
                raw = found.get(u.encode("utf-8"))
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
        reasons = explain(self.table, ctx.hist_rows, top_rows)
        clock.lap("explain")
        first_of: dict[int, int] = {}  # slot → index of the user's first and last event in the batch
        last_of: dict[int, int] = {}
        for k, slot in enumerate(b.slots.tolist()):
            first_of.setdefault(slot, k)
            last_of[slot] = k
        now = time.time()
        recs: list[Recommendation] = []
        arrivals: list[float] = []
        mem_np = mem.cpu().numpy()
        writes: dict[str, _Batch] = {}
        for s, (p, u) in enumerate(b.keys):
            src = b.events[last_of[s]]
            items = tuple(
                ScoredItem(self.table.ids[r], sc, why, evidence)
                for r, sc, (why, evidence) in zip(top_rows_l[s], top_scores_l[s], reasons[s])
            )
            source = SourceRef(
                self.input_topic, p, src.offset, src.event.timestamp, b.events[first_of[s]].offset
            )
            recs.append(Recommendation(u, items, self.model_version, source, now))
            arrivals.append(src.arrival)
            st = b.states[s]
            st.memory = mem_np[s]
            st.last_t = float(b.ts[last_of[s]])
            st.partition, st.offset = p, src.offset
            st.model_version = self.model_version
            writes.setdefault(user_partition_name(p), new_transaction()).put(
                u.encode("utf-8"), encode_user(st)
            )
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
        """Scores ``[B, N]`` of all items for users with memories ``mem`` ``[B, d]`` and contexts ``ctx``."""
        t = self.table
        return score_items(self.model, t.graph, t.vectors(), t.bias, mem, ctx, t.content())

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
        """Exact top-k scores and rows ``[B, k]`` and the users' contexts, scoring at most
        :data:`SCORE_BUDGET` user–item pairs at a time, so a large catalogue never needs a
        [users, items] matrix for the whole batch."""
        n = len(self.table)
        k = min(self.top_k, n)
        chunk = max(1, SCORE_BUDGET // max(n, 1))
        ctx = self.context(states, emission_times(states))  # each list for the user's quickest return
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
