"""State stores: store → partition → transaction, with RocksDB (rocksdict) and in-memory backends.

One partition store per input partition (users) or per stage (items). Writes go through a
transaction that lands as one atomic RocksDB ``WriteBatch``, so a batch's state and its
bookkeeping (offsets, watermarks) are written together or not at all.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict, WriteBatch

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

    def approximate_bytes(self) -> int: ...

    def close(self) -> None: ...


class StateStore(Protocol):
    def partition(self, name: str) -> PartitionStore: ...

    def approximate_bytes(self, prefix: str) -> int: ...

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

    def approximate_bytes(self, prefix: str) -> int:
        return sum(p.approximate_bytes() for n, p in self._parts.items() if n.startswith(prefix))

    def close(self) -> None:
        self._parts.clear()


class _RocksPartition:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.path = path
        self._db = Rdict(str(path), options=opts)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        keys = list(keys)
        if not keys:
            return {}
        values = self._db.get(keys)  # rocksdict multi-get: a list aligned with keys, None where absent
        return {k: v for k, v in zip(keys, values) if v is not None}

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def write(self, tx: _Batch) -> None:
        if not tx.ops:
            return
        wb = WriteBatch(raw_mode=True)
        for k, v in tx.ops:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self._db.write(wb)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._db.items())

    def approximate_bytes(self) -> int:
        try:
            return int(self._db.property_int_value("rocksdb.estimate-live-data-size") or 0) + int(
                self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            )
        except Exception:  # property names vary across RocksDB builds; a gauge is not worth a crash
            return 0

    def close(self) -> None:
        self._db.close()


class RocksDBStateStore:
    """One RocksDB database per partition under ``root`` (``root/<name>``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._parts: dict[str, _RocksPartition] = {}

    def partition(self, name: str) -> _RocksPartition:
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = _RocksPartition(self.root / name)
            logger.info("opened state partition %s", part.path)
        return part

    def approximate_bytes(self, prefix: str) -> int:
        """Approximate bytes in the open partitions whose name starts with ``prefix``."""
        return sum(p.approximate_bytes() for n, p in self._parts.items() if n.startswith(prefix))

    def close(self) -> None:
        for part in self._parts.values():
            part.close()
        self._parts.clear()

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)
