"""State stores: store → partition → transaction, with RocksDB (rocksdict) and in-memory backends.

One partition store per input partition (users) or per stage (items). Writes go through a
transaction that lands as one atomic RocksDB ``WriteBatch``, and ``write_many`` puts the
transactions of several partitions (a batch's users and its items) in one, so a batch's state and
its bookkeeping (offsets, watermarks) are written together or not at all. ``erase`` deletes keys for
good: beyond the tombstone, RocksDB is made to drop the old values from its files (a deletion
request must leave nothing of a user on disk).
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from rocksdict import (
    BlockBasedOptions,
    BottommostLevelCompaction,
    Cache,
    CompactOptions,
    Options,
    Rdict,
    WriteBatch,
)

__all__ = [
    "MemoryStateStore",
    "PartitionStore",
    "RocksDBStateStore",
    "StateStore",
    "Transaction",
    "new_transaction",
]

logger = logging.getLogger(__name__)


class Transaction(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class PartitionStore(Protocol):
    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """Values of the keys that exist."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, tx: _Batch) -> None:
        """Apply a transaction atomically."""

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...

    def scan(self, start: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` entries in key order from ``start`` (inclusive; None: the first key)."""

    def erase(self, keys: Iterable[bytes]) -> None:
        """Delete ``keys`` and make the store drop their old values from its files."""

    def approximate_bytes(self) -> int: ...

    def close(self) -> None: ...


class StateStore(Protocol):
    def partition(self, name: str) -> PartitionStore: ...

    def write_many(self, txs: Sequence[tuple[PartitionStore, _Batch]]) -> None:
        """Apply transactions to several partitions of this store as one atomic write."""

    def open_partitions(self, prefix: str) -> list[str]:
        """Names of the partitions opened so far whose name starts with ``prefix`` (never opens one)."""

    def approximate_bytes(self, prefix: str) -> int: ...

    def memory_bytes(self) -> dict[str, int]:
        """What the store holds in memory, by kind (RocksDB: ``block_cache``, ``memtables``)."""

    def close(self) -> None: ...


class _Batch:
    """A transaction: an ordered list of puts and deletes, applied by ``PartitionStore.write``."""

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))

    def __len__(self) -> int:
        return len(self.ops)


def new_transaction() -> _Batch:
    return _Batch()


class _MemoryPartition:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        d = self._data
        return {k: d[k] for k in keys if k in d}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, tx: _Batch) -> None:
        for k, v in tx.ops:
            if v is None:
                self._data.pop(k, None)
            else:
                self._data[k] = v

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def scan(self, start: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self._data if start is None or k >= start)[:limit]
        return [(k, self._data[k]) for k in keys]

    def erase(self, keys: Iterable[bytes]) -> None:
        for k in keys:
            self._data.pop(k, None)

    def approximate_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())

    def close(self) -> None:
        pass


class MemoryStateStore:
    """Dict-backed store for tests and offline evaluation."""

    def __init__(self) -> None:
        self._parts: dict[str, _MemoryPartition] = {}

    def partition(self, name: str) -> _MemoryPartition:
        return self._parts.setdefault(name, _MemoryPartition())

    def open_partitions(self, prefix: str) -> list[str]:
        return [n for n in list(self._parts) if n.startswith(prefix)]

    def write_many(self, txs: Sequence[tuple[PartitionStore, _Batch]]) -> None:
        for part, tx in txs:  # one thread, no crash to survive: in order is atomic enough
            part.write(tx)

    def approximate_bytes(self, prefix: str) -> int:
        return sum(p.approximate_bytes() for n, p in self._parts.items() if n.startswith(prefix))

    def memory_bytes(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self._parts.clear()


#: RocksDB's memory, whatever the number of partitions: the memtables of all column families
#: together (a full one is flushed to disk), and one cache for data, index and filter blocks (so the
#: index and filter blocks of a growing number of files do not add up outside any bound).
MEMTABLE_BUDGET = 32 * 2**20
BLOCK_CACHE = 32 * 2**20
_CACHE = Cache(BLOCK_CACHE)


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_keep_log_file_num(2)  # RocksDB's own info logs: the current one and one before
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET)
    table = BlockBasedOptions()
    table.set_block_cache(_CACHE)
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    return opts


class _RocksPartition:
    """One column family of a :class:`RocksDBStateStore`."""

    def __init__(self, store: RocksDBStateStore, name: str) -> None:
        self.store = store
        self.name = name

    def _cf(self) -> Rdict:
        return self.store._column_family(self.name)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        keys = list(keys)
        if not keys:
            return {}
        with self.store._lock:
            # rocksdict multi-get: a list aligned with keys, None where absent
            values = cast(list[bytes | None], self._cf().get(cast(Any, keys)))
        return {k: v for k, v in zip(keys, values) if v is not None}

    def get(self, key: bytes) -> bytes | None:
        with self.store._lock:
            return self._cf().get(key)

    def write(self, tx: _Batch) -> None:
        self.store.write_many([(self, tx)])

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return cast(Iterator[tuple[bytes, bytes]], iter(cast(Any, self._cf().items())))

    def scan(self, start: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        with self.store._lock:
            cf = self._cf()
            for kv in cf.items(from_key=start) if start is not None else cf.items():
                if len(out) >= limit:
                    break
                out.append(cast(tuple[bytes, bytes], kv))
        return out

    def erase(self, keys: Iterable[bytes]) -> None:
        self.store.erase(self.name, keys)

    def approximate_bytes(self) -> int:
        try:
            with self.store._lock:
                cf = self._cf()
                return int(cf.property_int_value("rocksdb.estimate-live-data-size") or 0) + int(
                    cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
                )
        except Exception:  # property names vary across RocksDB builds; a gauge is not worth a crash
            return 0

    def close(self) -> None:
        pass


class RocksDBStateStore:
    """One RocksDB database under ``root/db`` with a column family per partition store
    (``users-<p>``, ``items``, ``catalog``), so that the writes of one batch to several of them land
    in one atomic ``WriteBatch`` (:meth:`write_many`): a crash leaves users and items both before or
    both after the batch. Per-partition databases of earlier versions (``root/<name>``) are moved in
    when first opened."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / "db"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # ``erase`` reopens the database; other threads read meanwhile
        self._db = self._open()
        self._cfs: dict[str, Rdict] = {}
        self._parts: dict[str, _RocksPartition] = {}

    def _open(self) -> Rdict:
        names = Rdict.list_cf(str(self.path), _options()) if (self.path / "CURRENT").exists() else ["default"]
        return Rdict(
            str(self.path),
            options=_options(),
            column_families={n: _options() for n in names if n != "default"},
        )

    def _column_family(self, name: str) -> Rdict:
        cf = self._cfs.get(name)
        if cf is None:
            try:
                cf = self._db.get_column_family(name)
            except Exception:  # not there yet
                cf = self._db.create_column_family(name, _options())
            self._cfs[name] = cf
        return cf

    def partition(self, name: str) -> _RocksPartition:
        with self._lock:
            part = self._parts.get(name)
            if part is None:
                self._column_family(name)
                part = self._parts[name] = _RocksPartition(self, name)
                self._migrate_legacy(name)
                logger.info("opened state partition %s in %s", name, self.path)
            return part

    def _migrate_legacy(self, name: str) -> None:
        """Move the contents of an earlier version's database ``root/<name>`` into the column family."""
        legacy = self.root / name
        if not (legacy / "CURRENT").exists():
            return
        old = Rdict(str(legacy), options=_options())
        n = 0
        try:
            wb = WriteBatch(raw_mode=True)
            handle = self._db.get_column_family_handle(name)
            for k, v in old.items():
                wb.put(k, v, handle)
                n += 1
            self._db.write(wb)
        finally:
            old.close()
        shutil.rmtree(legacy)
        logger.info("moved %d entries of %s from %s", n, name, legacy)

    def write_many(self, txs: Sequence[tuple[PartitionStore, _Batch]]) -> None:
        """Apply transactions to several partitions of this store as one atomic write."""
        wb = WriteBatch(raw_mode=True)
        n = 0
        with self._lock:
            for part, tx in txs:
                if not tx.ops:
                    continue
                handle = self._db.get_column_family_handle(part.name)  # type: ignore[attr-defined]
                for k, v in tx.ops:
                    if v is None:
                        wb.delete(k, handle)
                    else:
                        wb.put(k, v, handle)
                    n += 1
            if n:
                self._db.write(wb)

    def erase(self, name: str, keys: Iterable[bytes]) -> None:
        """Delete ``keys`` of partition ``name`` for good: delete them, flush every memtable (so the
        write-ahead log holding their values is retired), compact their key range down to the last
        level (where the tombstones and the values they cover are dropped), and reopen the database
        (which rewrites the manifest, whose history names keys as file boundaries)."""
        keys = sorted(set(keys))
        if not keys:
            return
        co = CompactOptions()
        co.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        with self._lock:
            self.write_many([(self.partition(name), _deletes(keys))])
            self._flush_all()
            self._column_family(name).compact_range(keys[0], keys[-1], co)
            self._reopen()

    def _flush_all(self) -> None:
        # a function of its own: no reference to a column family may outlive it (``_reopen``)
        for n in Rdict.list_cf(str(self.path), _options()):
            self._column_family(n).flush()

    def _reopen(self) -> None:
        self._cfs.clear()
        gc.collect()  # column-family handles must be gone before the database can close
        self._db.close()
        self._db = self._open()

    def open_partitions(self, prefix: str) -> list[str]:
        return [n for n in list(self._parts) if n.startswith(prefix)]

    def approximate_bytes(self, prefix: str) -> int:
        """Approximate bytes in the open partitions whose name starts with ``prefix``."""
        return sum(p.approximate_bytes() for n, p in list(self._parts.items()) if n.startswith(prefix))

    def memory_bytes(self) -> dict[str, int]:
        """The block cache's use (shared by every store of the process) and the memtables' size."""
        memtables = 0
        with self._lock:
            for cf in list(self._cfs.values()):
                try:
                    memtables += int(cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
                except Exception:  # as in approximate_bytes: a gauge is not worth a crash
                    pass
        return {"block_cache": int(_CACHE.get_usage()), "memtables": memtables}

    def close(self) -> None:
        with self._lock:
            self._cfs.clear()
            self._parts.clear()
            gc.collect()
            self._db.close()

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _deletes(keys: Iterable[bytes]) -> _Batch:
    tx = _Batch()
    for k in keys:
        tx.delete(k)
    return tx
