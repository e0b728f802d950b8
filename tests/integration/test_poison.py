"""No record can stop a worker: poison records, the key contract, unknown items, and records the fold
itself fails on, against the real embedded broker and RocksDB."""

from __future__ import annotations

import base64
import json

import pytest

from engine.state.codec import decode_user
from schemas import Interaction
from streams.worker import FOLD_FAILURES_BEFORE_STOP, EngineFault
from tests.integration.conftest import (
    drain,
    fresh_topics,
    produce,
    read_all,
    start_worker,
    synthetic_events,
    wait_for,
)

pytestmark = pytest.mark.integration

T = 1_700_000_000.0


def _record(user: str = "poison-u", item: str = "item-1", t: float = T, **extra) -> bytes:
    return json.dumps(
        {"user_id": user, "item_id": item, "timestamp": t, "event_type": "view", **extra}
    ).encode()


def _letters(s, n: int) -> dict[int, dict]:
    msgs = drain(s, s.topics.dlq, lambda ms: len(ms) >= n)
    return {json.loads(m.value())["source"]["offset"]: json.loads(m.value()) for m in msgs}


def test_poison_records_are_dead_lettered_and_every_other_record_is_folded(settings):
    """The records that crash-looped every worker (a deeply nested value, a timestamp beyond
    float32), and the rest of what the input contract forbids, each between valid events."""
    s = fresh_topics(settings, "poison", partitions=1, batch_max_events=500)
    poison = [
        (b"poison-u", b"[" * 200_000 + b"]" * 200_000, "too_large"),  # 400 KB of nesting
        (b"poison-u", b"[" * 30_000 + b"]" * 30_000, "not_json"),  # within the size bound: recursion
        (b"poison-u", _record(t=1e300), "out_of_range"),
        (b"poison-u", _record(t=32_503_680_000), "out_of_range"),  # the year 3000
        (b"poison-u", _record(t=-1e9), "out_of_range"),
        (b"poison-u", _record(weight=1e300), "out_of_range"),
        (b"evil\x1b[2J", _record(user="evil\x1b[2J"), "bad_id"),
        (b"poison-u", _record(item="it\x00em"), "bad_id"),
        (b"someone-else", _record(user="mismatch-user"), "key_mismatch"),
        (None, _record(), "null_key"),
        (b"poison-u", None, "empty"),
        (b"poison-u", _record(context={"pad": "x" * 5_000_000}), "too_large"),  # 5 MB
    ]
    valid = synthetic_events(n_users=3, per_user=len(poison) + 1)
    records: list = []
    for k, ev in enumerate(valid):
        records.append((ev.user_id.encode(), ev.to_json()))
        if k < len(poison):
            records.append(poison[k][:2])
    produce(s, s.topics.interactions, records, producer_extra={"message.max.bytes": 10_000_000})
    worker, thread = start_worker(s)
    try:
        letters = _letters(s, len(poison))
        wait_for(lambda: worker.stats.folded == len(valid), 60, "the valid events were not all folded")
        # a correctly keyed event of the user whose mismatched record was refused: one state, this one
        produce(s, s.topics.interactions, [(b"mismatch-user", _record(user="mismatch-user", t=T + 1))])
        wait_for(
            lambda: worker.stats.folded == len(valid) + 1,
            60,
            "the correctly keyed event was not folded",
        )
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
    assert sorted(d["error_kind"] for d in letters.values()) == sorted(kind for _, _, kind in poison)
    by_kind = {d["error_kind"]: d for d in letters.values()}
    big = by_kind["too_large"]
    assert big["original_truncated"] is True and len(base64.b64decode(big["original"])) == 16_384
    assert worker.stats.dead_letters == len(poison) and worker.stats.folded == len(valid) + 1
    users = dict(worker.engine.store.partition("users-0").items())
    assert set(users) == {e.user_id.encode() for e in valid} | {b"mismatch-user"}
    assert decode_user(users[b"mismatch-user"]).n_events == 1


def _fold_all(s, events: list[Interaction], n_letters: int, n_folded: int):  # type: ignore[no-untyped-def]
    """Produce ``events``, run a worker until it has dead-lettered and folded that many; return the
    (stopped) worker and its dead letters by offset."""
    produce(s, s.topics.interactions, [(e.user_id.encode(), e.to_json()) for e in events])
    worker, thread = start_worker(s)
    try:
        letters = _letters(s, n_letters)
        wait_for(lambda: worker.stats.folded == n_folded, 60, "the valid events were not all folded")
    finally:
        worker.stop()
        thread.join(30)
        worker.engine.close()
    return worker, letters


def test_unknown_items_follow_the_configured_policy(settings):
    s = fresh_topics(settings, "unknown", partitions=1, unknown_items="dead_letter")
    events = [Interaction("u1", "item-3", T, "view"), Interaction("u1", "never-heard-of", T + 1, "view")]
    worker, letters = _fold_all(s, events, n_letters=1, n_folded=1)
    assert [d["error_kind"] for d in letters.values()] == ["unknown_item"]
    assert "never-heard-of" not in worker.engine.items.table.index
    # with "create" (the default) the table grows only up to max_items
    s2 = fresh_topics(
        settings, "full", partitions=1, max_items=41, state_dir=settings.state_dir.parent / "full"
    )
    new = [Interaction("u2", f"new-{k}", T + k, "view") for k in range(3)]
    worker, letters = _fold_all(s2, new, n_letters=2, n_folded=1)
    assert [d["error_kind"] for d in letters.values()] == ["unknown_item", "unknown_item"]
    assert len(worker.engine.items.table) == 41  # the checkpoint's 40 and one new item


def test_a_record_the_fold_fails_on_is_isolated_and_dead_lettered(settings):
    """Whatever a record breaks in the engine, the batch is folded again in halves until the record
    is alone; it goes to the DLQ with the exception, and every other record is folded once."""
    s = fresh_topics(settings, "isolate", partitions=1, batch_max_events=500)
    events = synthetic_events(n_users=6, per_user=10)
    poisoned = {7, 23, 41}
    events = [Interaction(e.user_id, "item-poison" if k in poisoned else e.item_id, e.timestamp, e.event_type)
              for k, e in enumerate(events)]
    produce(s, s.topics.interactions, [(e.user_id.encode(), e.to_json()) for e in events])
    worker, thread = _started_with_a_fold_that_fails_on("item-poison", s)
    try:
        letters = _letters(s, len(poisoned))
        wait_for(
            lambda: worker.stats.folded == len(events) - len(poisoned),
            60,
            "the other events were not folded",
        )
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(30)
    assert sorted(letters) == sorted(poisoned)
    assert all(
        d["error_kind"] == "fold_error" and "ZeroDivisionError" in d["error"] for d in letters.values()
    )
    # every other event is answered by a recommendation of its user (first_offset … offset), and
    # none names a dead-lettered record as the last event it folded
    recs = [json.loads(m.value()) for m in read_all(s, s.topics.recommendations)]
    answered = {
        (r["user_id"], o) for r in recs for o in range(r["source"]["first_offset"], r["source"]["offset"] + 1)
    }
    assert all((e.user_id, k) in answered for k, e in enumerate(events) if k not in poisoned)
    assert not {r["source"]["offset"] for r in recs} & poisoned


def test_a_fold_that_fails_on_every_record_stops_the_worker_with_the_reason(settings):
    s = fresh_topics(settings, "broken", partitions=1, batch_max_events=500)
    events = [
        Interaction(f"u{k}", "item-poison", T + k, "view") for k in range(FOLD_FAILURES_BEFORE_STOP + 10)
    ]
    produce(s, s.topics.interactions, [(e.user_id.encode(), e.to_json()) for e in events])
    worker, thread = _started_with_a_fold_that_fails_on("item-poison", s)
    thread.join(60)
    assert not thread.is_alive()
    assert (
        isinstance(worker.failure, EngineFault)
        and "the engine is failing, not the input" in str(worker.failure)
    )
    assert worker.stats.dead_letters == FOLD_FAILURES_BEFORE_STOP - 1


def _started_with_a_fold_that_fails_on(item: str, s):  # type: ignore[no-untyped-def]
    import threading

    from streams.runtime import load_engine
    from streams.worker import Worker

    engine = load_engine(s)
    real = engine.users.fold

    def fold(events, *args, **kw):  # type: ignore[no-untyped-def]
        if any(e.event.item_id == item for e in events):
            return 1 / 0
        return real(events, *args, **kw)

    engine.users.fold = fold  # type: ignore[method-assign]
    worker = Worker(s, engine)
    worker.failure = None  # type: ignore[attr-defined]

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001  (kept for the assertions)
            worker.failure = exc  # type: ignore[attr-defined]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return worker, thread
