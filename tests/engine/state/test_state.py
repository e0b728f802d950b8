"""State stores (RocksDB and in-memory): atomic transactions, partitions, sizes, reopening, scans."""

import pytest

from engine.state.store import MemoryStateStore, RocksDBStateStore, new_transaction


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path):
    s = MemoryStateStore() if request.param == "memory" else RocksDBStateStore(tmp_path / "state")
    yield s
    s.close()


def test_transaction_is_applied_whole(store):
    p = store.partition("users-0")
    tx = new_transaction()
    tx.put(b"a", b"1")
    tx.put(b"b", b"2")
    tx.delete(b"a")
    tx.put(b"c", b"3")
    p.write(tx)
    assert p.get_many([b"a", b"b", b"c", b"z"]) == {b"b": b"2", b"c": b"3"}
    assert p.get(b"a") is None
    assert dict(p.items()) == {b"b": b"2", b"c": b"3"}


def test_partitions_are_separate(store):
    tx = new_transaction()
    tx.put(b"k", b"v")
    store.partition("users-0").write(tx)
    assert store.partition("users-1").get(b"k") is None
    assert dict(store.partition("users-1").items()) == {}


def test_approximate_bytes_counts_what_the_prefix_holds(store):
    assert store.approximate_bytes("users-") == 0  # no partition open yet
    tx = new_transaction()
    tx.put(b"k", b"v" * 10_000)
    store.partition("users-0").write(tx)
    held = store.approximate_bytes("users-")
    if isinstance(store, MemoryStateStore):
        assert held == 10_001  # key and value, exactly
    else:
        assert held >= 10_001  # RocksDB: the memtable holding them, rounded up to its arena blocks
    assert store.approximate_bytes("items") == 0  # another prefix: nothing of users-0


def test_rocksdb_state_survives_reopen(tmp_path):
    s = RocksDBStateStore(tmp_path / "state")
    tx = new_transaction()
    tx.put(b"u", b"state")
    s.partition("users-2").write(tx)
    s.close()
    s2 = RocksDBStateStore(tmp_path / "state")
    assert s2.partition("users-2").get(b"u") == b"state"
    s2.close()


def test_writes_to_several_partitions_land_together(store):
    users, items = store.partition("users-0"), store.partition("items")
    tx_u, tx_i = new_transaction(), new_transaction()
    tx_u.put(b"u", b"1")
    tx_i.put(b"i/x", b"2")
    store.write_many([(users, tx_u), (items, tx_i)])
    assert users.get(b"u") == b"1" and items.get(b"i/x") == b"2"


def test_scan_resumes_in_key_order_and_erase_deletes(store):
    p = store.partition("users-0")
    tx = new_transaction()
    for k in range(10):
        tx.put(b"k%d" % k, b"v")
    p.write(tx)
    first = p.scan(None, 4)
    rest = p.scan(first[-1][0], 100)
    assert [k for k, _ in first] == [b"k0", b"k1", b"k2", b"k3"] and rest[0][0] == b"k3" and len(rest) == 7
    p.erase([b"k1", b"k5", b"nope"])
    assert p.get(b"k1") is None and p.get(b"k5") is None and len(p.scan(None, 100)) == 8
    assert store.open_partitions("users-") == ["users-0"]


def test_erased_values_leave_the_files(tmp_path):
    s = RocksDBStateStore(tmp_path / "state")
    p = s.partition("users-0")
    tx = new_transaction()
    for k in range(500):
        tx.put(b"user-%04d" % k, b"v" * 64)
    tx.put(b"user-e1a5b2c3d4", b"value-2f9c8e7d6b5a")
    p.write(tx)
    s._column_family("users-0").flush()

    def files_with(needle: bytes) -> int:
        return sum(needle in f.read_bytes() for f in (tmp_path / "state").rglob("*") if f.is_file())

    assert files_with(b"2f9c8e7d6b5a") == 1
    p.erase([b"user-e1a5b2c3d4"])
    assert files_with(b"e1a5b2c3d4") == 0 and files_with(b"2f9c8e7d6b5a") == 0
    assert p.get(b"user-0001") == b"v" * 64
    s.close()


def test_per_partition_databases_of_earlier_versions_are_moved_in(tmp_path):
    from rocksdict import Options, Rdict

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    old = Rdict(str(tmp_path / "state" / "users-3"), options=opts)
    old.put(b"u", b"old-state")
    old.close()
    s = RocksDBStateStore(tmp_path / "state")
    assert s.partition("users-3").get(b"u") == b"old-state"
    assert not (tmp_path / "state" / "users-3").exists()
    s.close()


def test_rocksdb_reports_its_memory_within_budget(tmp_path):
    from engine.state.store import BLOCK_CACHE, MEMTABLE_BUDGET

    s = RocksDBStateStore(tmp_path / "state")
    tx = new_transaction()
    for k in range(2_000):
        tx.put(b"u%05d" % k, bytes(200))
    s.partition("users-0").write(tx)
    mem = s.memory_bytes()
    s.close()
    assert set(mem) == {"block_cache", "memtables"}
    assert 200 * 2_000 <= mem["memtables"] <= MEMTABLE_BUDGET
    assert 0 <= mem["block_cache"] <= BLOCK_CACHE
    assert MemoryStateStore().memory_bytes() == {}
