"""An item stage that lags the user stage by a fixed number of events, as a worker's view of the item
side does once the item stage runs as a shared stage behind Kafka: the offline evaluator measures
what that staleness costs in accuracy.

Each batch's :class:`ItemUpdates` are held in arrival order; an event's update is folded into the
items (memories, transition graph, counts: everything :meth:`ItemStage.fold` changes) once at least
``delay`` later events have been folded by the user stage. Held updates are folded in their order,
a batch's update split where the delay falls inside it, so at the end of every batch the items hold
each event but the last ``delay``, whatever the batch size. The user stage reads the items as they
stand at the start of a batch, so within a batch of B events the items lag by ``delay`` to
``delay + B - 1`` events (0 to B - 1 with no delay). What is still held at the end of a log is never
folded.
"""

from __future__ import annotations

from collections import deque

from engine.fold.items import ItemStage, ItemUpdates
from engine.fold.table import ItemTable
from models.interest import InterestModel

__all__ = ["DelayedItemStage"]


class DelayedItemStage(ItemStage):
    """:class:`ItemStage` on in-memory state whose :meth:`fold` applies each event's update only once
    ``delay`` later events have been folded (a subclass, so the pipeline takes it as an item stage;
    ``take_writes`` and ``commit`` are the item stage's own)."""

    def __init__(self, model: InterestModel, table: ItemTable, delay: int) -> None:
        if delay < 0:
            raise ValueError(f"the item stage's delay is a number of events ≥ 0, not {delay}")
        super().__init__(model, table, None)
        self.delay = delay
        self._held: deque[ItemUpdates] = deque()
        self.n_held = 0  # events whose update is held

    def fold(self, up: ItemUpdates) -> list[int]:
        """Hold ``up``, then fold the held updates that are ``delay`` events old; return the rows whose
        memory changed."""
        if len(up):
            self._held.append(up)
            self.n_held += len(up)
        changed: set[int] = set()
        while self.n_held > self.delay:
            due = self.n_held - self.delay  # the oldest held events: each has ≥ delay later ones
            head = self._held.popleft()
            if len(head) > due:
                self._held.appendleft(_part(head, slice(due, None)))
                head = _part(head, slice(0, due))
            self.n_held -= len(head)
            changed.update(super().fold(head))
        return sorted(changed)


def _part(up: ItemUpdates, part: slice) -> ItemUpdates:
    """The events ``part`` of ``up``, in the same order."""
    return ItemUpdates(
        rows=up.rows[part],
        prev_rows=up.prev_rows[part],
        user_vec=up.user_vec[part],
        ts=up.ts[part],
        event_types=up.event_types[part],
        weights=up.weights[part],
        partitions=up.partitions[part],
        offsets=up.offsets[part],
    )
