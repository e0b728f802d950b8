"""User stage: the micro-batched fold.

Per batch: read every touched user's state in one multi-get per partition, drop events already
applied (offset ≤ the state's last applied offset), update memories with one model call per round
(round r = each user's r-th event in the batch, so per-user order is exact), score all items once per
user, build one recommendation per user (for their last event in the batch), and return the new
state as one write batch per partition plus the item updates for the item stage.

The same code serves the Kafka worker and the offline evaluator: with ``targets`` it also returns
the rank of each event's target among all items, right after that event is folded.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from engine.state.codec import UserState, decode_user, encode_user
from engine.fold.context import HISTORY, UserContext, apply_event, context_copy, user_contexts
from engine.fold.explain import explain
from engine.hooks import StageClock
from engine.fold.items import ItemStage, ItemTable, ItemUpdates
from engine.fold.online import Examples
from engine.fold.rounds import occurrence_rounds, previous_occurrence
from engine.fold.scoring import score_items
from engine.state.store import StateStore, _Batch, new_transaction
from models.interest import InterestModel
from schemas import Interaction, Recommendation, ScoredItem, SourceRef

__all__ = ["FoldResult", "SourcedEvent", "UserStage", "is_example", "rank_of", "user_partition_name"]

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
    item_updates: ItemUpdates | None
    writes: dict[str, _Batch]
    n_folded: int
    n_skipped: int
    ranks: np.ndarray | None = None  # [E] rank of each event's target (1 = best; nan = no target)
    fold_seconds: float = 0.0
    examples: Examples | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per part of the fold


def user_partition_name(partition: int) -> str:
    return f"users-{partition}"


def rank_of(scores: Tensor, target: Tensor) -> Tensor:
    """Rank (1 = best) of ``target`` ``[B]`` in each row of ``scores`` ``[B, N]``, ties counted half."""
    t = scores.gather(1, target.unsqueeze(1))
    above = (scores > t).sum(1).float()
    ties = (scores == t).sum(1).float() - 1
    return 1 + above + 0.5 * ties


class UserStage:
    def __init__(
        self,
        model: InterestModel,
        items: ItemTable,
        store: StateStore,
        *,
        model_version: str,
        input_topic: str = "tide.interactions",
        top_k: int = 10,
    ) -> None:
        self.model = model.eval()
        self.items = items
        self.store = store
        self.model_version = model_version
        self.input_topic = input_topic
        self.top_k = top_k
        self.profile_items = model.cfg.profile_items
        self.seq_len = min(model.cfg.seq_len, HISTORY)
        self.dim = model.cfg.dim

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

    @torch.no_grad()
    def fold(
        self,
        events: Sequence[SourcedEvent],
        targets: Sequence[str | None] | None = None,
        example_rate: float = 0.0,
        target_times: Sequence[float] | np.ndarray | None = None,
    ) -> FoldResult:
        """Fold ``events``. With ``targets`` (per event: the item to rank right after it, or None),
        also rank each target, at the time in ``target_times`` (default: the moment of the user's last event,
        what the emitted recommendation is for); with ``example_rate`` > 0, return that share of the batch's
        events (chosen by :func:`is_example`) as training examples (the state just before each → its
        item) for online learning."""
        start = time.perf_counter()
        clock = StageClock()
        states = self._read_states(events)
        # An event at or below the user's last applied offset was folded before (input replayed).
        fresh = [k for k, e in enumerate(events) if e.offset > states[(e.partition, e.event.user_id)].offset]
        n_skipped = len(events) - len(fresh)
        ranks = np.full(len(events), np.nan) if targets is not None else None
        if not fresh:
            return FoldResult([], [], None, {}, 0, n_skipped, ranks, time.perf_counter() - start)

        dev = self.items.device
        keys = list(dict.fromkeys((events[k].partition, events[k].event.user_id) for k in fresh))
        slot_of = {key: s for s, key in enumerate(keys)}
        user_states = [states[k] for k in keys]
        mem = torch.from_numpy(np.stack([st.memory for st in user_states])).to(dev)  # [U, d]
        ev = [events[k] for k in fresh]
        slots = np.array([slot_of[(e.partition, e.event.user_id)] for e in ev])
        item_rows = self.items.rows([e.event.item_id for e in ev])
        ts = np.array([e.event.timestamp for e in ev])
        etypes = np.array([e.event.event_type_id for e in ev], np.int64)
        weights = np.array([e.event.weight for e in ev], np.float32)
        rounds = occurrence_rounds(slots)
        # Each event's predecessor: the user's previous event in this batch, or else their state.
        prev = previous_occurrence(slots)
        within = prev >= 0
        state_t = np.array([st.last_t for st in user_states])[slots]
        # A user's time never goes back: an event older than the user's last one is folded at that
        # time (gap 0), so out-of-order input cannot make ages or gaps negative.
        for idx in rounds:
            ts[idx] = np.fmax(ts[idx], np.where(within[idx], ts[prev[idx]], state_t[idx]))
        dt = ts - np.where(within, ts[prev], state_t)
        dt[np.isnan(dt)] = 0.0  # a user's first event ever
        state_row = np.full(len(keys), -1, np.int64)  # each user's last item before this batch
        has_history = np.array([bool(st.hist_items) for st in user_states])
        state_row[has_history] = self.items.rows([st.hist_items[0] for st in user_states if st.hist_items])
        prev_rows = np.where(within, item_rows[prev], state_row[slots])
        n_before = np.array([st.n_events for st in user_states])[slots]
        for r, idx in enumerate(rounds):
            n_before[idx] += r
        example = (
            np.array([is_example(e.event.user_id, int(n) + 1, example_rate) for e, n in zip(ev, n_before)], bool)
            if example_rate > 0 else np.zeros(len(ev), bool)
        )
        # The cells' inputs for the whole batch in one call; only the cells run round by round.
        messages = self.model.memory.message(
            self.items.vectors_of(torch.from_numpy(item_rows).to(dev)), torch.from_numpy(dt).float().to(dev),
            torch.from_numpy(etypes).to(dev), torch.from_numpy(weights).to(dev),
        )
        cell = self.model.memory.user_cell
        user_before = torch.empty(len(ev), self.dim, device=dev)
        # the example events, round by round, and a copy of each one's user just before it
        wanted_rounds: list[np.ndarray] = []
        before_example: list[UserState] = []
        target_t = np.asarray([target_times[k] for k in fresh], np.float64) if target_times is not None else None
        target_rows = (
            # -1: a target never seen (ranked last); -2: no target (not ranked)
            torch.tensor([self.items.index.get(t, -1) if (t := targets[k]) else -2 for k in fresh], device=dev)
            if targets is not None
            else None
        )
        clock.lap("read_state")

        for idx in rounds:
            s = torch.from_numpy(slots[idx]).to(dev)
            it = torch.from_numpy(idx).to(dev)
            before = mem[s]
            user_before[it] = before
            mem[s] = cell(messages[it], before)
            clock.lap("memory")
            wanted = idx[example[idx]]
            if len(wanted):  # before the round's events change the states; contexts once per batch
                wanted_rounds.append(wanted)
                before_example.extend(context_copy(user_states[slots[k]]) for k in wanted)
                clock.lap("examples")
            for k in idx.tolist():
                apply_event(
                    user_states[slots[k]], ev[k].event.item_id, ts[k], int(etypes[k]), self.profile_items
                )
            clock.lap("memory")
            if target_rows is not None and ranks is not None:
                tr = target_rows[it]
                ok = tr >= 0
                if bool(ok.any()):
                    sc = self._scores(
                        mem[s], [user_states[slots[k]] for k in idx], now=None if target_t is None else target_t[idx]
                    )
                    r = rank_of(sc[ok], tr[ok]).cpu().numpy()
                    pos = np.asarray(fresh)[idx][ok.cpu().numpy()]
                    ranks[pos] = r
                missing = np.asarray(fresh)[idx][(tr == -1).cpu().numpy()]
                ranks[missing] = len(self.items)
                clock.lap("rank_targets")

        # One recommendation per user, for their last event in this batch.
        top_scores, top_rows, ctx = self._top_k(mem, user_states)
        top_scores_l = top_scores.cpu().tolist()
        top_rows_l = top_rows.cpu().tolist()
        clock.lap("score")
        first_of: dict[int, int] = {}  # slot → index of the user's first and last event in the batch
        last_of: dict[int, int] = {}
        for k, slot in enumerate(slots.tolist()):
            first_of.setdefault(slot, k)
            last_of[slot] = k
        now = time.time()
        reasons = explain(self.items, ctx.hist_rows, top_rows)
        clock.lap("explain")
        recs: list[Recommendation] = []
        arrivals: list[float] = []
        mem_np = mem.cpu().numpy()
        writes: dict[str, _Batch] = {}
        for s, (p, u) in enumerate(keys):
            st = states[(p, u)]
            last = last_of[s]
            src = ev[last]
            ids = [self.items.ids[r] for r in top_rows_l[s]]
            recs.append(
                Recommendation(
                    user_id=u,
                    items=tuple(
                        ScoredItem(i, sc, why, strength) for i, sc, (why, strength) in zip(ids, top_scores_l[s], reasons[s])
                    ),
                    model_version=self.model_version,
                    source=SourceRef(
                        self.input_topic, p, src.offset, src.event.timestamp, ev[first_of[s]].offset
                    ),
                    emitted_at=now,
                )
            )
            arrivals.append(src.arrival)
            st.memory = mem_np[s]
            st.last_t = float(ts[last])
            st.partition, st.offset = p, src.offset
            st.model_version = self.model_version
            writes.setdefault(user_partition_name(p), new_transaction()).put(u.encode("utf-8"), encode_user(st))

        clock.lap("emit")
        examples = None
        if wanted_rounds:
            order = np.concatenate(wanted_rounds)
            in_event_order = np.argsort(order, kind="stable")
            sel = order[in_event_order]
            ctx_ex = user_contexts(
                [before_example[j] for j in in_event_order], self.items.rows, self.profile_items, self.seq_len,
                now=ts[sel],
            )
            examples = Examples(
                user_mem=user_before[torch.from_numpy(sel).to(dev)],
                ctx=ctx_ex.to(dev),
                targets=torch.from_numpy(item_rows[sel]).to(dev),
            )
        updates = ItemUpdates(
            rows=item_rows,
            prev_rows=prev_rows,
            user_vec=user_before,
            ts=ts,
            event_types=etypes,
            weights=weights,
            partitions=np.array([e.partition for e in ev], np.int64),
            offsets=np.array([e.offset for e in ev], np.int64),
        )
        clock.lap("examples")
        return FoldResult(
            recs, arrivals, updates, writes, len(ev), n_skipped, ranks, time.perf_counter() - start, examples,
            clock.seconds,
        )

    def _context(self, states: Sequence[UserState], now: Sequence[float] | np.ndarray | None = None) -> UserContext:
        """The users' contexts at query times ``now`` (default: each user's last event), on the device,
        with the whole history ring (the scorer reads its first ``seq_len``; the reasons all of it)."""
        return user_contexts(states, self.items.rows, self.profile_items, HISTORY, now).to(self.items.device)

    def score_context(self, mem: Tensor, ctx: UserContext) -> Tensor:
        """Scores ``[B, N]`` of all items for users with memories ``mem`` ``[B, d]`` and contexts ``ctx``."""
        items = self.items
        return score_items(self.model, items.graph, items.vectors(), items.bias, mem, ctx, items.content())

    def _scores(self, mem: Tensor, states: Sequence[UserState], now: Sequence[float] | np.ndarray | None = None) -> Tensor:
        return self.score_context(mem, self._context(states, now))

    def _top_k(self, mem: Tensor, states: Sequence[UserState]) -> tuple[Tensor, Tensor, UserContext]:
        """Exact top-k scores and rows ``[B, k]`` and the users' contexts, scoring at most
        :data:`SCORE_BUDGET` user–item pairs at a time, so a large catalogue never needs a
        [users, items] matrix for the whole batch."""
        n = len(self.items)
        k = min(self.top_k, n)
        chunk = max(1, SCORE_BUDGET // max(n, 1))
        ctx = self._context(states)
        parts = [
            torch.topk(self.score_context(mem[c : c + chunk], ctx[c : c + chunk]), k, dim=1)
            for c in range(0, len(states), chunk)
        ]
        return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts]), ctx

    @torch.no_grad()
    def recommend(self, st: UserState, at: float, k: int | None = None) -> list[ScoredItem]:
        """The top ``k`` items for a stored user state at time ``at`` (epoch s): the user's vector
        projected from their last event to ``at``, ages and gaps measured to ``at``. At the time of
        the user's last event this is the recommendation the fold emitted."""
        dev = self.items.device
        mem = torch.from_numpy(st.memory).to(dev).unsqueeze(0)
        ctx = self._context([st], now=[max(at, st.last_t) if st.hist_items else at])
        scores = self.score_context(mem, ctx)[0]
        top_scores, top_rows = torch.topk(scores, min(k or self.top_k, scores.shape[0]))
        reasons = explain(self.items, ctx.hist_rows, top_rows.unsqueeze(0))[0]
        ids = [self.items.ids[r] for r in top_rows.tolist()]
        return [ScoredItem(i, s, why, ev) for i, s, (why, ev) in zip(ids, top_scores.tolist(), reasons)]

    @torch.no_grad()
    def empty_user_scores(self) -> Tensor:
        """Scores ``[N]`` for a user with no state yet."""
        return self._scores(torch.zeros(1, self.dim, device=self.items.device), [UserState.empty(self.dim)])[0]

    def commit(self, result: FoldResult, items: ItemStage | None = None) -> None:
        """Write the batch's user state and, with ``items``, the item state its item-stage fold
        changed, in one atomic write."""
        txs = [(self.store.partition(name), tx) for name, tx in result.writes.items()]
        self.store.write_many(txs + (items.take_writes() if items is not None else []))
