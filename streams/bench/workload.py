"""The bench's workload: the events (of a CSV log, or synthetic), their records for each phase, and
user state written before a run.

A synthetic event is a user and an item. The users are ``u0…`` of ``active_users`` (when given) or
``users``; the items ``i0…`` of the catalogue, ``i0`` the most popular. How events spread over them
(:attr:`BenchOptions.popularity`):

- ``None``, the default mix: without active users, user activity Zipf-like (numpy's Zipf draw of
  exponent 1.3, clipped at the population) and 70% of a user's events on eight items of their own,
  the rest Zipf-like popular (exponent 1.2, clipped); with active users, uniform;
- ``"zipf"``: users and items both by Zipf's law, bounded to the population: the one of rank k
  (0-based) of n with probability (k + 1)^-s / sum_j (j + 1)^-s, s = ``zipf``;
- ``"uniform"``: every user and every item equally likely.

``user_pattern="bursty"`` groups each user's events into sessions of :data:`SESSION_EVENTS` events
on average (geometric lengths), each spread over :data:`SESSION_SPREAD` times its length, so that a
few sessions interleave as in real logs. ``new_items`` sends that share of the events to items
outside the catalogue, ``n0, n1, …``, which debut in order at an even pace over the run, each with
:data:`NEW_ITEM_EVENTS` events on average, mostly while it is among the latest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streams.bench.options import POPULARITY, USER_PATTERNS, BenchOptions

if TYPE_CHECKING:
    from streams.replay import Record

__all__ = [
    "NEW_ITEM_EVENTS",
    "NEW_ITEM_PREFIX",
    "SESSION_EVENTS",
    "SESSION_SPREAD",
    "backlog_records",
    "live_records",
    "workload",
    "write_users",
    "zipf_ranks",
]

SESSION_EVENTS = 8  # bursty users: mean events per session
SESSION_SPREAD = 3  # a session of L events spans about 3L positions of the log: ~3 sessions interleave
NEW_ITEM_EVENTS = 5  # mean events per new item, its debut included
NEW_ITEM_PREFIX = "n"


def workload(opts: BenchOptions) -> tuple[list[str], list[str], list[str]]:
    """Users, items (as ids) of the throughput phase, and the catalogue (the checkpoint's items; new
    items are not in it)."""
    if opts.data is not None:
        from engine.offline.data import read_csv

        log = read_csv(opts.data)
        n = min(opts.events, len(log))
        users, items = [str(u) for u in log.users[:n]], [str(i) for i in log.items[:n]]
        return users, items, sorted(set(map(str, log.items)))
    _check(opts)
    rng = np.random.default_rng(opts.seed)
    catalogue = [f"i{x}" for x in range(opts.items)]
    u = _users(rng, opts)
    i = _items(rng, opts, u)
    item_ids = [f"i{x}" for x in i]
    if opts.new_items > 0:
        for pos, k in zip(*_new_items(rng, opts.events, opts.new_items)):
            item_ids[pos] = f"{NEW_ITEM_PREFIX}{k}"
    return [f"u{x}" for x in u], item_ids, catalogue


def _check(opts: BenchOptions) -> None:
    if opts.popularity is not None and opts.popularity not in POPULARITY:
        raise ValueError(f"popularity {opts.popularity!r}: choose from {', '.join(POPULARITY)}")
    if opts.user_pattern not in USER_PATTERNS:
        raise ValueError(f"user pattern {opts.user_pattern!r}: choose from {', '.join(USER_PATTERNS)}")
    if not 0.0 <= opts.new_items < 1.0:
        raise ValueError(f"new items share {opts.new_items}: must be in [0, 1)")
    if opts.zipf <= 0:
        raise ValueError(f"Zipf exponent {opts.zipf}: must be > 0")


def zipf_ranks(rng: np.random.Generator, s: float, n: int, size: int) -> np.ndarray:
    """``size`` ranks in [0, n), rank k with probability proportional to (k + 1)^-s (any s > 0: the
    law is bounded to n, so that no mass piles up on the last rank)."""
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), n - 1)


def _draw_users(rng: np.random.Generator, opts: BenchOptions, size: int) -> np.ndarray:
    """``size`` independent draws of a user by activity."""
    population = opts.active_users or opts.users
    if opts.popularity == "zipf":
        return zipf_ranks(rng, opts.zipf, population, size)
    if opts.popularity == "uniform" or opts.active_users:
        return rng.integers(0, population, size)
    return np.minimum(rng.zipf(1.3, size) - 1, population - 1)


def _users(rng: np.random.Generator, opts: BenchOptions) -> np.ndarray:
    """Each event's user: independent draws, or sessions of one user that interleave a little."""
    n = opts.events
    if opts.user_pattern == "uniform":
        return _draw_users(rng, opts, n)
    # enough sessions to cover n events (lengths are geometric with mean SESSION_EVENTS)
    lengths = rng.geometric(1.0 / SESSION_EVENTS, n // SESSION_EVENTS + 64)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / SESSION_EVENTS, 64)])
    session = np.repeat(np.arange(len(lengths)), lengths)[:n]
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)[:n]
    step = np.arange(n) - start  # each event's place in its session
    # the j-th event of a session that starts at position p lands near p + SPREAD·j
    order = np.argsort(start + SESSION_SPREAD * (step + rng.random(n)), kind="stable")
    return _draw_users(rng, opts, len(lengths))[session[order]]


def _items(rng: np.random.Generator, opts: BenchOptions, users: np.ndarray) -> np.ndarray:
    """Each event's item, given its user."""
    n = len(users)
    if opts.popularity == "zipf":
        return zipf_ranks(rng, opts.zipf, opts.items, n)
    if opts.popularity == "uniform" or opts.active_users:
        return rng.integers(0, opts.items, n)
    # users who return to their own items (as real logs do), and Zipf-like popularity
    own = (users * 7919 + rng.integers(0, 8, n)) % opts.items
    popular = np.minimum(rng.zipf(1.2, n) - 1, opts.items - 1)
    return np.where(rng.random(n) < 0.7, own, popular)


def _new_items(rng: np.random.Generator, n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """The positions (ascending) of the ``share`` of ``n`` events that go to new items, and each one's
    new item k. Item k debuts at the ``k·m/K``-th of those m positions (K = m / NEW_ITEM_EVENTS new
    items); every other position goes to one of the items already out, the latest most often."""
    m = int(round(share * n))
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos = np.sort(rng.choice(n, m, replace=False))
    n_new = max(1, m // NEW_ITEM_EVENTS)
    debut = (np.arange(n_new) * m) // n_new  # strictly increasing slots, the first 0
    out = np.searchsorted(debut, np.arange(m), side="right")  # items out at each slot, debut included
    back = rng.geometric(0.5, m) - 1  # 0: the latest new item, 1: the one before, …
    k = np.maximum(out - 1 - back, 0)
    k[debut] = np.arange(n_new)
    return pos, k


def backlog_records(users: list[str], items: list[str]) -> list[Record]:
    """The throughput phase's records (value, key): event times 10 ms apart, ending an hour before
    now, so that they are never taken for the latency phase's live stamps and both phases share one
    clock (the worker's expiry of idle users runs on event time)."""
    from schemas import Interaction

    t0 = time.time() - 3600 - 0.01 * len(users)
    return [
        (Interaction(u, i, t0 + 0.01 * k, "view").to_json(), u.encode("utf-8"))
        for k, (u, i) in enumerate(zip(users, items))
    ]


def live_records(users: list[str], items: list[str]) -> Callable[[int], Record]:
    """The latency phase's ``k``-th record: the same users and items in turn, each event stamped with
    the wall clock when it is made (just before it is sent)."""
    from schemas import Interaction

    def record(k: int) -> Record:
        u, i = users[k % len(users)], items[k % len(items)]
        return Interaction(u, i, time.time(), "view").to_json(), u.encode("utf-8")

    return record


def write_users(
    state_dir: Path, n_users: int, catalogue: list[str], dim: int, profile_items: int = 48
) -> None:
    """``n_users`` users u0…u{n-1} in partition 0's state, each with a full history and profile (256
    different ones in turn: users who all share one last item would make it a hub whose transitions
    reach the whole catalogue)."""
    from engine.fold.context import HISTORY, apply_event
    from engine.fold.users import user_partition_name
    from engine.state.codec import UserState, encode_user
    from engine.state.store import RocksDBStateStore, new_transaction

    rng = np.random.default_rng(1)
    values = []
    for _ in range(256):
        st = UserState.empty(dim)
        st.memory = rng.standard_normal(dim).astype(np.float32)
        for k in range(max(profile_items, HISTORY)):
            item = catalogue[int(rng.integers(0, len(catalogue)))]
            apply_event(st, item, time.time() - 86_400 + k, 0, profile_items)
        st.partition, st.offset = 0, -1
        values.append(encode_user(st))
    store = RocksDBStateStore(state_dir)
    part = store.partition(user_partition_name(0))
    for lo in range(0, n_users, 50_000):
        tx = new_transaction()
        for u in range(lo, min(n_users, lo + 50_000)):
            tx.put(f"u{u}".encode(), values[u % len(values)])
        part.write(tx)
    store.close()
