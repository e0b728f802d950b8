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

__all__ = ["ExpirySweep", "forget_users"]

logger = logging.getLogger(__name__)

_USERS = "users-"


def forget_users(store: StateStore, users: Iterable[str]) -> list[str]:
    """Erase ``users`` from every user partition open in ``store``; returns those that had state."""
    keys = {u.encode("utf-8"): u for u in users}
    found: list[str] = []
    for name in store.open_partitions(_USERS):
        part = store.partition(name)
        present = part.get_many(keys)
        if present:
            part.erase(present)
            found.extend(keys[k] for k in present)
    return found


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
        if self.ttl_s <= 0:
            return 0
        deleted = 0
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
            tx = new_transaction()
            for key, value in batch:
                try:
                    idle = user_last_t(value) < cutoff
                except StateFormatError:
                    continue
                if idle:
                    tx.delete(key)
            if len(tx):
                part.write(tx)
                deleted += len(tx)
        if deleted:
            logger.info("expired %d users idle for more than %g s of stream time", deleted, self.ttl_s)
        return deleted
