"""Item stage: the fold of the user side of each interaction into item memories (engine/fold/table.py
holds the items).

The user stage reads ``ItemTable.vectors()`` and forwards :class:`ItemUpdates`; the item stage
applies them and hands over the item state to persist, with a per-source-partition watermark, for
the same atomic write as the users' state of those events, so an update is never applied twice and
a crash never leaves items ahead of users. Both stages run in the worker's process, in the order
engine/pipeline.py sets.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.fold.rounds import gaps, occurrence_rounds, previous_occurrence, run_rounds
from engine.fold.table import ItemTable
from engine.state.codec import ItemState, decode_item_state, encode_item_state
from engine.state.store import PartitionStore, _Batch, new_transaction
from models.interest import InterestModel

__all__ = ["ItemStage", "ItemUpdates"]

logger = logging.getLogger(__name__)

_WATERMARK = b"\x00wm/"  # + partition as decimal; cannot collide with a utf-8 item id key prefix "i/"
_ITEM = b"i/"
_TRANSITIONS = b"t/"  # + item id: that item's outgoing transition row
_GRAPH_STATE = b"\x00graph"  # the snapshot model's item states: u32 n, then n × (u8 len + id, f16[d])
_TREND = b"r/"  # + item id: u64 the graph's event clock, then f64[H] the item's decayed counts at it
_CLOCK = b"\x00clock"  # u64 the graph's event clock (events folded): popularity decays with it
#: Item memories restored per write into the table: a worker restoring a million items never holds a
#: decoded object per item at once.
RESTORE_CHUNK = 4096


def _set_memories(table: ItemTable, rows: list[int], mems: list[np.ndarray]) -> int:
    """Write the memories ``mems`` of ``rows`` into ``table`` and empty both lists; how many."""
    n = len(rows)
    if n:
        memory = torch.from_numpy(np.stack(mems)).to(table.device)
        table.set_memory(torch.tensor(rows, device=table.device), memory)
    rows.clear()
    mems.clear()
    return n


@dataclass
class ItemUpdates:
    """The user side of a batch of folded interactions, in fold order."""

    rows: np.ndarray  # [B] item rows
    prev_rows: np.ndarray  # [B] the user's previous item row, -1 for a user's first event
    user_vec: Tensor  # [B, d] user memory before the event
    ts: np.ndarray  # [B] event time
    event_types: np.ndarray  # [B]
    weights: np.ndarray  # [B]
    partitions: np.ndarray  # [B] source partition
    offsets: np.ndarray  # [B] source offset

    def __len__(self) -> int:
        return len(self.rows)


class ItemStage:
    """Folds :class:`ItemUpdates` into item memories and persists them (with watermarks) in ``store``."""

    def __init__(self, model: InterestModel, table: ItemTable, store: PartitionStore | None) -> None:
        self.model = model
        self.table = table
        self.store = store
        self.watermarks: dict[int, int] = {}
        self._pending: _Batch | None = None  # item state changed by folds, not yet written
        self._trend_rows: set[int] = set()  # rows whose popularity changed since the last take_records
        if store is not None:
            n = self.apply(store.items())
            logger.info("item stage restored %d items, watermarks %s", n, self.watermarks)

    def apply(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Set the item state these records (as :meth:`take_writes` and :meth:`take_records` write
        them, in order) hold: memories, times, counts, transition rows, popularity, watermarks.
        Returns how many item memories were set."""
        table, graph = self.table, self.table.graph
        rows: list[int] = []
        mems: list[np.ndarray] = []
        n_set = 0
        transitions: list[tuple[str, bytes]] = []
        graph_state: bytes | None = None
        for key, value in records:
            if key == _GRAPH_STATE:
                graph_state = value
            elif key == _CLOCK:
                graph.advance_clock(struct.unpack("<Q", value)[0])
            elif key.startswith(_WATERMARK):
                self.watermarks[int(key[len(_WATERMARK) :])] = struct.unpack("<q", value)[0]
            elif key.startswith(_TRANSITIONS):
                transitions.append((key[len(_TRANSITIONS) :].decode("utf-8"), value))
            elif key.startswith(_TREND):
                (clock,) = struct.unpack_from("<Q", value, 0)
                trend = np.frombuffer(value, "<f8", graph.trend.shape[1], 8)
                graph.set_trend(table.row(key[len(_TREND) :].decode("utf-8")), trend, clock)
            elif key.startswith(_ITEM):
                s = decode_item_state(value)
                r = table.row(key[len(_ITEM) :].decode("utf-8"))
                rows.append(r)
                mems.append(s.memory)
                table.last_t[r] = s.last_t
                table.count[r] = s.count
                if len(rows) == RESTORE_CHUNK:
                    n_set += _set_memories(table, rows, mems)
        for item_id, raw in transitions:
            graph.decode_row(table.row(item_id), raw, table.row)
        if graph_state is not None:
            self._decode_graph_state(graph_state)
        return n_set + _set_memories(table, rows, mems)

    @torch.no_grad()
    def fold(self, up: ItemUpdates) -> list[int]:
        """Apply the updates not yet applied; return the rows whose memory changed."""
        if len(up) == 0:
            return []
        wm = np.array([self.watermarks.get(int(p), -1) for p in up.partitions])
        keep = np.nonzero(up.offsets > wm)[0]
        if len(keep) == 0:
            return []
        table = self.table
        dev = table.device
        rows = up.rows[keep]
        # The cells' inputs for the whole batch in one call; only the cells run round by round.
        ts = up.ts[keep]
        dt = gaps(ts, previous_occurrence(rows), table.last_t[rows])
        kt = torch.from_numpy(keep).to(dev)
        messages = self.model.memory.message(
            up.user_vec[kt], torch.from_numpy(dt).float().to(dev),
            torch.from_numpy(up.event_types[keep]).to(dev),
            torch.from_numpy(up.weights[keep]).float().to(dev),
        )
        uniq, slot = np.unique(rows, return_inverse=True)
        uniq_t = torch.from_numpy(uniq).to(dev)
        work = table.memory[uniq_t].clone()  # the batch's items, updated round by round
        run_rounds(self.model.memory.item_cell, messages, work, slot, occurrence_rounds(rows))
        # What the batch changes, applied once everything is computed, so that a failure above leaves
        # the table as it was.
        np.fmax.at(table.last_t, rows, ts)  # an item's time never goes back
        # before the vectors are recomputed: the count sets the knowledge handover
        np.add.at(table.count, rows, 1)
        table.set_memory(uniq_t, work)
        for p, o in zip(up.partitions[keep], up.offsets[keep]):
            if o > self.watermarks.get(int(p), -1):
                self.watermarks[int(p)] = int(o)
        changed = uniq.tolist()
        self._trend_rows.update(changed)
        transitions_changed = table.graph.observe(up.prev_rows[keep], rows)
        cfg = self.model.cfg
        snapshot = cfg.use_graph_snapshots and table.graph.events_since_snapshot >= cfg.snapshot_every
        if snapshot:
            table.take_snapshot()
        self._stage_writes(changed, sorted(set(transitions_changed)), snapshot)
        return changed

    def take_writes(self) -> list[tuple[PartitionStore, _Batch]]:
        """The item state the folds since the last call changed, as (store, transaction) to write in
        the same atomic write as the users' state of the same events (``UserStage.commit``)."""
        if self.store is None or self._pending is None:
            return []
        tx, self._pending = self._pending, None
        return [(self.store, tx)]

    def take_records(self) -> list[tuple[bytes, bytes]]:
        """What the folds since the last call changed, as records for the item-state topic that every
        worker reads (streams/item_stage.py): the state :meth:`take_writes` holds, then the event
        clock and the changed items' popularity at it (:meth:`apply` reads them back)."""
        ops = [(k, v) for _, tx in self.take_writes() for k, v in tx.ops if v is not None]
        graph = self.table.graph
        ops.append((_CLOCK, struct.pack("<Q", graph.clock)))
        for r in sorted(self._trend_rows):
            ops.append((
                _TREND + self.table.ids[r].encode("utf-8"),
                struct.pack("<Q", graph.clock) + graph.trend[r].astype("<f8").tobytes(),
            ))
        self._trend_rows.clear()
        return ops

    def commit(self) -> None:
        """Write what :meth:`take_writes` would return, on its own."""
        for store, tx in self.take_writes():
            store.write(tx)

    def _encode_graph_state(self) -> bytes:
        table = self.table
        state = table.graph_state.cpu().numpy().astype("<f2")
        parts = [struct.pack("<I", len(table))]
        for r, item_id in enumerate(table.ids):
            b = item_id.encode("utf-8")
            parts.append(bytes([len(b)]) + b + state[r].tobytes())
        return b"".join(parts)

    def _decode_graph_state(self, raw: bytes) -> None:
        table = self.table
        (n,) = struct.unpack_from("<I", raw, 0)
        pos, d = 4, table.dim
        rows, vecs = [], []
        for _ in range(n):
            ln = raw[pos]
            rows.append(table.row(raw[pos + 1 : pos + 1 + ln].decode("utf-8")))
            pos += 1 + ln
            vecs.append(np.frombuffer(raw, "<f2", d, pos).astype(np.float32))
            pos += 2 * d
        state = torch.zeros(len(table), d, device=table.device)
        if rows:
            state[torch.tensor(rows, device=table.device)] = torch.from_numpy(np.stack(vecs)).to(table.device)
        table.set_graph_state(state)

    def _stage_writes(self, rows: list[int], transition_rows: list[int], snapshot: bool = False) -> None:
        if self.store is None:
            return
        table = self.table
        mem = table.memory[torch.tensor(rows, device=table.device)].cpu().numpy()
        tx = self._pending = self._pending or new_transaction()
        for k, r in enumerate(rows):
            tx.put(
                _ITEM + table.ids[r].encode("utf-8"),
                encode_item_state(ItemState(mem[k], table.last_t[r], int(table.count[r]))),
            )
        for j in transition_rows:
            tx.put(_TRANSITIONS + table.ids[j].encode("utf-8"), table.graph.encode_row(j, table.ids))
        if snapshot:
            tx.put(_GRAPH_STATE, self._encode_graph_state())
        for p, o in self.watermarks.items():
            tx.put(_WATERMARK + str(p).encode(), struct.pack("<q", o))
