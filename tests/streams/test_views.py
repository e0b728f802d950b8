"""The web views' answers (streams/views.py), on a real engine and RocksDB store: bad requests, no
state created by a lookup, and no view waiting for the engine's lock on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from engine.state.codec import UserState, encode_user
from engine.fold.context import apply_event
from engine.state.store import new_transaction
from streams.config import Settings
from streams.views import MAX_PENDING, Views


class _Worker:  # the one thing the views ask of the hot path
    def health(self) -> dict:
        return {"status": "ok", "assigned": True}


@pytest.fixture
def views(tmp_path):
    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel
    from streams.runtime import load_engine

    items = [f"i{k}" for k in range(20)]
    save_checkpoint(tmp_path / "ck", InterestModel(InterestConfig(n_items=20, dim=8)), items, {})
    settings = Settings(checkpoint_dir=tmp_path / "ck", state_dir=tmp_path / "state", top_k=5)
    engine = load_engine(settings)
    st = UserState(np.zeros(8, np.float32))
    for k in range(6):
        apply_event(st, items[k], 1_700_000_000.0 + k, 0, 8)
    st.last_t, st.offset = 1_700_000_005.0, 41
    tx = new_transaction()
    tx.put(b"alice", encode_user(st))
    engine.store.partition("users-1").write(tx)
    yield Views(settings, engine, _Worker())
    engine.close()


def test_good_and_bad_requests(views):
    run = asyncio.run
    assert run(views.health())[0] == 200
    status, body = run(views.user("alice"))
    assert status == 200 and body["partition"] == 1 and body["last_applied_offset"] == 41
    status, body = run(views.recommendations("alice", {"k": "3"}))
    assert status == 200 and len(body["items"]) == 3
    partitions = views.engine.store.open_partitions("")
    for user, query, want in [
        ("nobody", {}, 404),
        ("x" * 300, {}, 400),
        ("\x1b[31mred", {}, 400),
        ("a\u202eb", {}, 400),
        ("alice", {"k": "0"}, 400),
        ("alice", {"k": "1001"}, 400),
        ("alice", {"k": "-1"}, 400),
        ("alice", {"k": "3.5"}, 400),
        ("alice", {"k": "9" * 5000}, 400),
        ("alice", {"at": "nan"}, 400),
        ("alice", {"at": "inf"}, 400),
        ("alice", {"at": "-5"}, 400),
        ("alice", {"at": "1e300"}, 400),
        ("alice", {"at": "soon"}, 400),
    ]:
        assert run(views.recommendations(user, query))[0] == want, (user[:20], query)
    assert run(views.user("nobody"))[0] == 404 and run(views.user("\x00"))[0] == 400
    assert views.engine.store.open_partitions("") == partitions  # no lookup opened a store


def test_views_never_wait_for_the_engine_on_the_event_loop(views):
    held = threading.Event()
    release = threading.Event()

    def hold_the_engine() -> None:  # what the hot path does while it folds a batch
        with views.engine.lock:
            held.set()
            release.wait(10)

    threading.Thread(target=hold_the_engine, daemon=True).start()
    held.wait(5)

    async def scenario() -> tuple[float, int]:
        request = asyncio.ensure_future(views.recommendations("alice", {"k": "5"}))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        status, _ = await asyncio.wait_for(views.health(), 1.0)  # answered while the engine is held
        health_s = time.perf_counter() - t0
        assert status == 200 and not request.done()  # the request waits for the engine, off the loop
        views.pending = MAX_PENDING
        assert (await views.recommendations("alice", {}))[0] == 503  # too many waiting: turned away
        views.pending = 1
        release.set()
        status, body = await asyncio.wait_for(request, 10)
        return health_s, status

    health_s, status = asyncio.run(scenario())
    assert health_s < 0.5 and status == 200
