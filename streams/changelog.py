"""The users' state changelog: every user-state write also goes to a compacted topic partitioned like
the interactions, and a worker assigned a partition restores from it what its local store lacks.

Records (topic ``tide.user-state``; partition p holds the users of interactions partition p): the key
is the user id, the value the encoded state (engine/state/codec.py), whose header names the input
partition and offset of the last event it reflects; a null value (tombstone) says the user was
deleted or expired. The worker produces them in the batch's Kafka transaction, with its
recommendations and its input offsets (streams/worker.py), so they commit together or not at all.

What the local store knows of the changelog, in its ``changelog`` partition:

* ``folded/<p>``: the highest input offset of p folded into the local store, written in the same
  atomic write as the users' state;
* ``checkpoint/<p>``: the highest changelog offset of p whose effect is in the local store, written
  once the transaction that produced it has committed.

Restoring p (:meth:`UserChangelog.restore`), with C the group's committed input offset of p:

1. read the changelog from ``checkpoint + 1`` (from the start without a checkpoint) to its end, and
   apply each record, skipping those that reflect input at or past C: they were written by a batch
   whose transaction never committed (Kafka hides aborted records from a ``read_committed`` reader;
   a broker that does not still has them skipped here, as Quix Streams does);
2. if ``folded/<p>`` ≥ C, this worker folded a batch into its local store and stopped before the
   batch's transaction committed. The input replays, and the fold skips the events each user's state
   already has, so :meth:`ahead` lists those users: the worker publishes their state and a
   recommendation again (streams/worker.py), and nothing is folded twice.

The restore reads until librdkafka reports the partition's end (under ``read_committed``, the last
stable offset), with the input partition not yet consuming, so no input buffers up meanwhile; an
offset the changelog no longer holds (retention) restarts from its earliest record.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from engine.fold.users import user_partition_name
from engine.state.codec import StateFormatError, user_source
from engine.state.store import StateStore, _Batch, new_transaction
from streams.config import Settings
from streams.liveness import BrokerUnavailable

__all__ = ["META", "Restored", "UserChangelog"]

logger = logging.getLogger(__name__)

META = "changelog"  # the local partition of the changelog's bookkeeping
_OFFSET = struct.Struct("<q")
RESTORE_CHUNK = 5_000  # restored records per local write
#: the longest wait of one read while restoring: a read returns a partial chunk only once it is over,
#: so a long one would hold every restore up to the partition's end by that much
READ_WAIT_S = 0.05


def _folded_key(p: int) -> bytes:
    return b"folded/%d" % p


def _checkpoint_key(p: int) -> bytes:
    return b"checkpoint/%d" % p


@dataclass
class Restored:
    """What a restore of one partition did."""

    partition: int
    records: int  # changelog records read
    applied: int  # of which applied (the rest reflect input that was never committed)
    seconds: float
    full: bool  # read from the start (no local checkpoint)


class UserChangelog:
    """Writes the users' state changelog and restores the local store from it.

    ``produce(topic, value, key, partition)`` sends a record in the worker's current transaction;
    the worker reports each delivered changelog record with :meth:`delivered`."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        produce: Callable[[str, bytes | None, bytes, int], None],
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.user_state
        self.store = store
        self.produce = produce
        self._meta = store.partition(META)
        self._delivered: dict[int, int] = {}  # partition → highest changelog offset not yet checkpointed

    # ---------------------------------------------------------------------------------- writing

    def record(self, writes: dict[str, _Batch]) -> None:
        """Produce a batch's user-state writes (``users-<p>`` → transaction) to the changelog, and add
        to ``writes`` the highest input offset folded per partition, to be written with them."""
        meta = new_transaction()
        for name, tx in writes.items():
            p = _partition_of(name)
            top = -1
            for key, value in tx.ops:
                self.produce(self.topic, value, key, p)
                if value is not None:
                    top = max(top, user_source(value)[1])
            if top >= 0:
                meta.put(_folded_key(p), _OFFSET.pack(top))
        if len(meta):
            writes[META] = meta

    def tombstones(self, partition: int, keys: list[bytes]) -> None:
        """Tell the changelog that these users of ``partition`` are gone."""
        for key in keys:
            self.produce(self.topic, None, key, partition)

    def delivered(self, partition: int, offset: int) -> None:
        if offset > self._delivered.get(partition, -1):
            self._delivered[partition] = offset

    def checkpoint(self) -> None:
        """Once the transaction has committed: the local store has everything delivered so far."""
        if not self._delivered:
            return
        tx = new_transaction()
        for p, offset in self._delivered.items():
            tx.put(_checkpoint_key(p), _OFFSET.pack(offset))
        self._delivered.clear()
        self._meta.write(tx)

    # -------------------------------------------------------------------------------- restoring

    def restore(self, partition: int, committed: int, timeout_s: float) -> Restored:
        """Bring the local store of ``partition`` up to the changelog, skipping records that reflect
        input at or past ``committed`` (the group's committed offset: the next event to fold)."""
        start = time.perf_counter()
        raw = self._meta.get(_checkpoint_key(partition))
        checkpoint = _OFFSET.unpack(raw)[0] if raw is not None else None
        part = self.store.partition(user_partition_name(partition))
        consumer = Consumer(self.settings.consumer_conf(
            f"{self.settings.group_id}-restore", **{"enable.partition.eof": True}
        ))
        read = applied = 0
        last = checkpoint if checkpoint is not None else -1
        gone: list[bytes] = []
        try:
            topic = consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
            if topic is None or topic.error is not None or partition not in topic.partitions:
                raise BrokerUnavailable(
                    f"the changelog topic {self.topic} has no partition {partition}: create the topics with"
                    " `tide topics` (TIDE_PARTITIONS as for the interactions); was the broker replaced?"
                )
            consumer.assign([TopicPartition(
                self.topic, partition, checkpoint + 1 if checkpoint is not None else OFFSET_BEGINNING
            )])
            deadline = time.monotonic() + timeout_s if timeout_s > 0 else float("inf")
            tx = new_transaction()
            done = False
            while not done:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"restoring {self.topic}[{partition}]: the end not reached in {timeout_s:g} s"
                        f" ({read} records read)"
                    )
                for m in consumer.consume(RESTORE_CHUNK, READ_WAIT_S):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done = True
                            break
                        logger.warning("restoring %s[%d]: %s", self.topic, partition, err)
                        continue
                    read += 1
                    last = m.offset()
                    key, value = m.key(), m.value()
                    if key is None:
                        continue
                    if value is None:
                        tx.delete(key)
                        gone.append(key)
                    elif _before(value, committed):
                        tx.put(key, value)
                    else:
                        continue
                    applied += 1
                if len(tx) >= RESTORE_CHUNK or done:
                    self._apply(part, tx, partition, last)
                    tx = new_transaction()
        finally:
            consumer.close()
        if gone:
            part.erase(gone)  # a deleted user leaves nothing behind here either
        seconds = time.perf_counter() - start
        return Restored(partition, read, applied, seconds, checkpoint is None)

    def _apply(self, part: object, tx: _Batch, partition: int, last: int) -> None:
        meta = new_transaction()
        if last >= 0:
            meta.put(_checkpoint_key(partition), _OFFSET.pack(last))
        self.store.write_many([(part, tx), (self._meta, meta)])  # type: ignore[list-item]

    def ahead(self, partition: int, committed: int) -> list[tuple[bytes, bytes]]:
        """The users of ``partition`` whose local state reflects input at or past ``committed``: a
        batch folded here whose transaction never committed. Empty unless ``folded/<p>`` says so."""
        raw = self._meta.get(_folded_key(partition))
        if raw is None or _OFFSET.unpack(raw)[0] < committed:
            return []
        part = self.store.partition(user_partition_name(partition))
        return [(k, v) for k, v in part.items() if not _before(v, committed)]


def _partition_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _before(value: bytes, committed: int) -> bool:
    """Whether an encoded state reflects only input before offset ``committed``."""
    try:
        return user_source(value)[1] < committed
    except StateFormatError:
        return False
