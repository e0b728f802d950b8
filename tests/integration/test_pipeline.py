"""End to end against the real embedded broker and RocksDB: no Kafka mocks."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import jsonschema
import pytest

from engine.codec import decode_item, decode_user
from engine.fold import user_partition_name
from engine.state import RocksDBStateStore
from schemas import load_schema
from streams.broker import free_port
from tests.integration.conftest import drain, events_log, produce, start_worker, synthetic_events, wait_for

pytestmark = pytest.mark.integration


def _answered(sources):
    def until(msgs):
        seen = {(json.loads(m.value())["source"]["partition"], json.loads(m.value())["source"]["offset"]) for m in msgs}
        return sources <= seen

    return until


def _last_sources(events, delivered):
    last = {}
    for ev, (p, o) in zip(events, delivered):
        last[ev.user_id] = (p, o)
    return set(last.values())


def _produce_events(settings, events):
    """Produce keyed by user; return each event's (partition, offset) from its delivery report."""
    from confluent_kafka import Producer

    p = Producer(settings.producer_conf())
    where = [None] * len(events)
    for k, ev in enumerate(events):
        p.produce(
            settings.topics.interactions, ev.to_json(), ev.user_id.encode(),
            on_delivery=lambda err, msg, k=k: where.__setitem__(k, (msg.partition(), msg.offset())),
        )
    assert p.flush(30) == 0
    return where


def test_events_in_recommendations_out_for_every_user(settings):
    events = synthetic_events(n_users=20, per_user=15)
    delivered = _produce_events(settings, events)
    worker, thread = start_worker(settings)
    try:
        msgs = drain(settings, settings.topics.recommendations, _answered(_last_sources(events, delivered)))
    finally:
        worker.stop()
        thread.join(30)
    validator = jsonschema.Draft202012Validator(load_schema("recommendation.v1"))
    produced = set(delivered)
    users = set()
    for m in msgs:
        rec = json.loads(m.value())
        validator.validate(rec)
        assert m.key().decode() == rec["user_id"]
        assert (rec["source"]["partition"], rec["source"]["offset"]) in produced
        assert rec["source"]["topic"] == settings.topics.interactions
        assert len(rec["items"]) == 5 and all(i["reason"] for i in rec["items"])
        users.add(rec["user_id"])
    assert users == {e.user_id for e in events}
    assert worker.stats.folded == len(events) and worker.stats.dead_letters == 0
    # item vectors reach their compacted topic for the other workers
    vecs = drain(settings, settings.topics.item_vectors, lambda ms: len(ms) >= 1)
    jsonschema.validate(json.loads(vecs[0].value()), load_schema("item_vector.v1"))


def test_malformed_records_go_to_the_dlq_while_valid_ones_flow(settings):
    valid = synthetic_events(n_users=4, per_user=5)
    bad = [
        b"not json at all",
        b'{"item_id": "item-1", "timestamp": 1, "event_type": "view"}',
        b'{"user_id": "user-0", "item_id": "item-1", "timestamp": "yesterday", "event_type": "view"}',
        b'{"user_id": "user-0", "item_id": "item-1", "timestamp": NaN, "event_type": "view"}',
        b'{"user_id": "user-0", "item_id": "item-1", "timestamp": 5, "event_type": "teleport"}',
    ]
    kinds = ["not_json", "missing_field", "bad_type", "not_finite", "unknown_event_type"]
    records = []
    for k, ev in enumerate(valid):
        records.append((ev.user_id.encode(), ev.to_json()))
        if k < len(bad):
            records.append((b"user-0", bad[k]))
    produce(settings, settings.topics.interactions, records)
    worker, thread = start_worker(settings)
    try:
        dlq = drain(settings, settings.topics.dlq, lambda ms: len(ms) >= len(bad))
        recs = drain(settings, settings.topics.recommendations, lambda ms: {json.loads(m.value())["user_id"] for m in ms} == {e.user_id for e in valid})
        assert thread.is_alive()  # bad input never stops the worker
    finally:
        worker.stop()
        thread.join(30)
    validator = jsonschema.Draft202012Validator(load_schema("dead_letter.v1"))
    letters = [json.loads(m.value()) for m in dlq]
    for d in letters:
        validator.validate(d)
        assert d["source"]["topic"] == settings.topics.interactions and d["error"]
    assert sorted(base64.b64decode(d["original"]) for d in letters) == sorted(bad)
    assert sorted(d["error_kind"] for d in letters) == sorted(kinds)
    assert worker.stats.folded == len(valid) and worker.stats.dead_letters == len(bad)
    assert recs


def _health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _spawn_worker(settings, port, log_path):
    env = dict(os.environ)
    env.update(
        TIDE_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        TIDE_GROUP_ID=settings.group_id,
        TIDE_CHECKPOINT_DIR=str(settings.checkpoint_dir),
        TIDE_STATE_DIR=str(settings.state_dir),
        TIDE_PARTITIONS=str(settings.partitions),
        TIDE_TOP_K=str(settings.top_k),
        TIDE_BATCH_MAX_EVENTS="50",
        TIDE_WEB_PORT=str(port),
        TIDE_APP_ID=settings.group_id,
        **{f"TIDE_TOPIC_{k.upper()}": v for k, v in settings.topics.model_dump().items()},
    )
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT
    )


def test_worker_killed_mid_stream_resumes_without_loss_or_double_fold(settings, tmp_path):
    """SIGKILL the real worker process (Faust app + hot path) mid-stream, restart it, and check that
    every event was folded exactly once into user and item state in RocksDB."""
    events = synthetic_events(n_users=25, per_user=40)  # 1,000 events
    port = free_port()
    log_path = tmp_path / "worker.log"
    proc = _spawn_worker(settings, port, log_path)
    try:
        wait_for(lambda: (_health(port) or {}).get("assigned"), 90, "worker never got its partitions")
        delivered: list = []

        def feed():  # about 500 events/s, so the kill lands while events are still arriving
            for k in range(0, len(events), 50):
                delivered.extend(_produce_events(settings, events[k : k + 50]))
                time.sleep(0.1)

        feeder = threading.Thread(target=feed)
        feeder.start()
        wait_for(lambda: (_health(port) or {}).get("folded", 0) >= 200, 60, "nothing folded")
        folded_before_kill = _health(port)["folded"]
        proc.send_signal(signal.SIGKILL)  # mid-stream: no flush, no commit, no goodbye
        proc.wait(10)
        proc = _spawn_worker(settings, port, log_path)
        feeder.join(60)
        assert folded_before_kill < len(events)
        drain(settings, settings.topics.recommendations, _answered(_last_sources(events, delivered)), timeout_s=120)
        health = _health(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert health is not None

    store = RocksDBStateStore(settings.state_dir)
    try:
        per_user: dict[str, list] = {}
        for ev, (p, o) in zip(events, delivered):
            per_user.setdefault(ev.user_id, []).append((ev.item_id, p, o))
        for user, evs in per_user.items():
            p = evs[-1][1]
            raw = store.partition(user_partition_name(p)).get(user.encode())
            assert raw is not None, user
            st = decode_user(raw)
            assert st.offset == evs[-1][2]  # every event of the user applied …
            L = len(st.hist_items)
            # … in order and once: consecutive items are distinct, so a replayed fold would repeat one
            assert st.hist_items == [item for item, _, _ in reversed(evs)][:L]
        counts = sum(decode_item(v).count for k, v in store.partition("items").items() if k.startswith(b"i/"))
        assert counts == len(events)  # the item stage folded each event exactly once as well
    finally:
        store.close()


def test_recommendations_through_kafka_agree_with_the_offline_evaluator(settings):
    """The worker and `tide evaluate` run the same fold: the ranks its emitted recommendations give
    each user's next item match the offline evaluator's (ranked as emitted, online learning off)."""
    import numpy as np

    from engine.checkpoint import latest_checkpoint, load_checkpoint
    from engine.evaluation import evaluate_stream
    from engine.online import OnlineConfig
    from streams.broker import create_topics
    from streams.config import Topics
    from streams.topics import topic_specs
    from tests.integration.conftest import N_ITEMS

    t = settings.topics
    one = settings.model_copy(
        update={
            # one event per user per micro-batch, so every event gets its own recommendation
            "partitions": 1, "top_k": N_ITEMS, "online_learning": False, "batch_max_events": 12,
            "topics": Topics(**{k: f"{v}-1p" for k, v in t.model_dump().items()}),
        }
    )
    create_topics(one.bootstrap_servers, topic_specs(one))
    events = synthetic_events(n_users=12, per_user=25)
    delivered = _produce_events(one, events)
    worker, thread = start_worker(one)
    try:
        msgs = drain(one, one.topics.recommendations, _answered(_last_sources(events, delivered)))
    finally:
        worker.stop()
        thread.join(30)
    row_of = {o: k for k, (_, o) in enumerate(delivered)}
    nxt: dict[int, int] = {}
    seen: dict[str, int] = {}
    for k in range(len(events) - 1, -1, -1):
        if events[k].user_id in seen:
            nxt[k] = seen[events[k].user_id]
        seen[events[k].user_id] = k
    kafka: dict[int, float] = {}
    for m in msgs:
        rec = json.loads(m.value())
        k = row_of[rec["source"]["offset"]]
        if k in nxt:
            ids = [i["item_id"] for i in rec["items"]]
            target = events[nxt[k]].item_id
            kafka[nxt[k]] = ids.index(target) + 1.0 if target in ids else float(N_ITEMS)
    ckpt = load_checkpoint(latest_checkpoint(one.checkpoint_dir))
    log = events_log(events)
    rr = evaluate_stream(
        ckpt.model, ckpt.item_ids, log, 0, batch_size=one.batch_max_events, online=OnlineConfig(enabled=False),
        at_row_time=False,
    )
    rows = sorted(kafka)
    assert len(rows) > 150
    offline = rr.ranks["model"][rows]
    online = np.array([kafka[r] for r in rows])
    assert abs(np.mean(1 / offline) - np.mean(1 / online)) < 0.01
    assert np.mean(offline == online) > 0.9
