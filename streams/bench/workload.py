"""The bench's workload: the events (of a CSV log, or synthetic), their records for each phase, and
user state written before a run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streams.bench.options import BenchOptions

if TYPE_CHECKING:
    from streams.replay import Record

__all__ = ["backlog_records", "live_records", "workload", "write_users"]


def workload(opts: BenchOptions) -> tuple[list[str], list[str], list[str]]:
    """Users, items (as ids) of the throughput phase, and the catalogue."""
    if opts.data is not None:
        from engine.offline.data import read_csv

        log = read_csv(opts.data)
        n = min(opts.events, len(log))
        users, items = [str(u) for u in log.users[:n]], [str(i) for i in log.items[:n]]
        return users, items, sorted(set(map(str, log.items)))
    rng = np.random.default_rng(opts.seed)
    catalogue = [f"i{x}" for x in range(opts.items)]
    if opts.active_users:
        u = rng.integers(0, opts.active_users, opts.events)
        i = rng.integers(0, opts.items, opts.events)
        return [f"u{x}" for x in u], [f"i{x}" for x in i], catalogue
    # Zipf-like activity and popularity, and users who return to their own items (as real logs do).
    u = np.minimum(rng.zipf(1.3, opts.events) - 1, opts.users - 1)
    own = (u * 7919 + rng.integers(0, 8, opts.events)) % opts.items
    popular = np.minimum(rng.zipf(1.2, opts.events) - 1, opts.items - 1)
    i = np.where(rng.random(opts.events) < 0.7, own, popular)
    return [f"u{x}" for x in u], [f"i{x}" for x in i], catalogue


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
