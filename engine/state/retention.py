"""Forgetting users: deletion requests (erasure) and the expiry of idle users.

A deletion request erases a user from every user partition this worker holds: the state (memory,
profile, history) is deleted and the store drops its bytes for good (``PartitionStore.erase``), so
nothing of the user stays on disk. What remains by design names no user: item memories (recurrent
states fed by many users' vectors), interaction and transition counts, popularity, and the model's
parameters, online-learned ones included.

Expiry bounds the state of a long-running worker: a user whose last event is more than ``ttl_s`` of
*stream time* behind (the latest event time folded on the partition) is deleted. Stream time, not
the wall clock, so that a replayed log expires exactly as it did live and a worker that was down
does not wake up to an empty store. The sweep reads a bounded number of states per call, resuming
where the last call stopped, so its cost is spread over the batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from engine.fold.users import user_partition_name
from engine.state.codec import StateFormatError, user_last_t
from engine.state.store import StateStore, new_transaction

__all__ = ["ExpirySweep", "erase_users", "forget_users", "present_users"]

logger = logging.getLogger(__name__)

_USERS = "users-"


def forget_users(store: StateStore, users: Iterable[str]) -> list[str]:
    """Erase ``users`` from every user partition open in ``store``; returns those that had state."""
    present = present_users(store, users)
    erase_users(store, present)
    return [k.decode("utf-8") for keys in present.values() for k in keys]


def present_users(store: StateStore, users: Iterable[str]) -> dict[str, list[bytes]]:
    """The keys of ``users`` that have state, by user partition open in ``store``."""
    keys = [u.encode("utf-8") for u in users]
    out: dict[str, list[bytes]] = {}
    for name in store.open_partitions(_USERS):
        present = store.partition(name).get_many(keys)
        if present:
            out[name] = list(present)
    return out


def erase_users(store: StateStore, present: dict[str, list[bytes]]) -> None:
    """Erase the keys :func:`present_users` found, for good (``PartitionStore.erase``)."""
    for name, keys in present.items():
        store.partition(name).erase(keys)


class ExpirySweep:
    """Deletes users idle for more than ``ttl_s`` of stream time, ``per_call`` states at a time."""

    def __init__(self, store: StateStore, ttl_s: float, per_call: int = 5_000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.per_call = per_call
        self.stream_time: dict[int, float] = {}  # partition → latest event time folded
        self._cursor: dict[int, bytes | None] = {}

    def observe(self, partition: int, t: float) -> None:
        """The latest event time folded on ``partition`` is at least ``t``."""
        if t > self.stream_time.get(partition, -math.inf):
            self.stream_time[partition] = t

    def sweep(self) -> int:
        """Read up to ``per_call`` more states of each partition; delete the expired. Returns how
        many users were deleted."""
        expired = self.expired()
        for p, keys in expired.items():
            self.delete(p, keys)
        return sum(len(k) for k in expired.values())

    def expired(self) -> dict[int, list[bytes]]:
        """Read up to ``per_call`` more states of each partition; the keys of the expired users, by
        partition (deleted by :meth:`delete`, once the worker has told the changelog)."""
        if self.ttl_s <= 0:
            return {}
        out: dict[int, list[bytes]] = {}
        for p, now in list(self.stream_time.items()):
            name = user_partition_name(p)
            if name not in self.store.open_partitions(name):
                continue
            part = self.store.partition(name)
            start = self._cursor.get(p)
            batch = part.scan(start, self.per_call + 1)
            if len(batch) > self.per_call:  # the next call starts at the first key not read
                self._cursor[p] = batch[-1][0]
                batch = batch[:-1]
            else:
                self._cursor[p] = None  # a full pass is done: start over
            cutoff = now - self.ttl_s
            idle = [key for key, value in batch if _idle(value, cutoff)]
            if idle:
                out[p] = idle
        return out

    def delete(self, partition: int, keys: list[bytes]) -> None:
        tx = new_transaction()
        for key in keys:
            tx.delete(key)
        self.store.partition(user_partition_name(partition)).write(tx)
        logger.info("expired %d users idle for more than %g s of stream time", len(keys), self.ttl_s)

    def release(self, partition: int) -> None:
        """Stop sweeping ``partition`` (it moved to another worker)."""
        self.stream_time.pop(partition, None)
        self._cursor.pop(partition, None)


def _idle(value: bytes, cutoff: float) -> bool:
    try:
        return user_last_t(value) < cutoff
    except StateFormatError:
        return False
