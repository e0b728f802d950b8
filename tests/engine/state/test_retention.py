"""Forgetting users: expiry after the TTL of stream time, and erasure on request."""

import numpy as np
import pytest

from engine.state.codec import UserState, encode_user
from engine.state.retention import ExpirySweep, forget_users
from engine.state.store import MemoryStateStore, RocksDBStateStore, new_transaction


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path):
    s = MemoryStateStore() if request.param == "memory" else RocksDBStateStore(tmp_path / "state")
    yield s
    s.close()


def _users(store, partition: int, last_times: dict[str, float]) -> None:
    tx = new_transaction()
    for user, t in last_times.items():
        tx.put(user.encode(), encode_user(UserState(np.zeros(4, np.float32), last_t=t)))
    store.partition(f"users-{partition}").write(tx)


def test_users_idle_past_the_ttl_of_stream_time_expire(store):
    _users(store, 0, {f"u{k}": 1_000.0 + 100 * k for k in range(10)})
    _users(store, 1, {"w": 0.0})
    sweep = ExpirySweep(store, ttl_s=500, per_call=3)
    sweep.observe(0, 1_800.0)
    sweep.observe(0, 1_900.0)  # stream time: the latest event time folded on the partition
    removed = sum(sweep.sweep() for _ in range(5))  # a bounded slice per call; the cursor resumes
    assert removed == 4  # last events at 1,000 … 1,300 are more than 500 s behind 1,900
    assert sorted(k for k, _ in store.partition("users-0").items()) == [b"u%d" % k for k in range(4, 10)]
    assert store.partition("users-1").get(b"w") is not None  # no stream time seen there: nothing judged
    assert ExpirySweep(store, ttl_s=0).sweep() == 0  # 0 = never


def test_forget_erases_a_user_from_every_open_user_partition(store):
    _users(store, 0, {"a": 1.0, "b": 2.0})
    _users(store, 1, {"a": 3.0})  # a user moved between partitions: both copies go
    store.partition("items")
    assert sorted(forget_users(store, ["a", "nobody"])) == ["a", "a"]
    assert store.partition("users-0").get(b"a") is None and store.partition("users-1").get(b"a") is None
    assert store.partition("users-0").get(b"b") is not None
