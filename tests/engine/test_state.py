import pytest

from engine.state import MemoryStateStore, RocksDBStateStore, new_transaction


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
    assert store.approximate_bytes("users-") >= 0


def test_rocksdb_state_survives_reopen(tmp_path):
    s = RocksDBStateStore(tmp_path / "state")
    tx = new_transaction()
    tx.put(b"u", b"state")
    s.partition("users-2").write(tx)
    s.close()
    s2 = RocksDBStateStore(tmp_path / "state")
    assert s2.partition("users-2").get(b"u") == b"state"
    s2.close()
