"""End to end against the real embedded broker and RocksDB: no Kafka mocks."""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest

from schemas import Interaction, load_schema
from tests.integration.conftest import drain, events_log, produce, start_worker, synthetic_events

pytestmark = pytest.mark.integration


def _answered(sources):
    def until(msgs):
        seen = {
            (json.loads(m.value())["source"]["partition"], json.loads(m.value())["source"]["offset"])
            for m in msgs
        }
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


def _serve(settings, events):
    """Produce ``events``, run a worker until every user's last event is answered, stop it; the
    recommendations' messages, where each event landed, and the stopped worker."""
    delivered = _produce_events(settings, events)
    worker, thread = start_worker(settings)
    try:
        msgs = drain(settings, settings.topics.recommendations, _answered(_last_sources(events, delivered)))
    finally:
        worker.stop()
        thread.join(30)
    return msgs, delivered, worker


def test_events_in_recommendations_out_for_every_user(settings):
    events = synthetic_events(n_users=20, per_user=15)
    msgs, delivered, worker = _serve(settings, events)
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


def test_a_worker_over_the_candidate_index_answers_every_user_and_indexes_new_items(settings):
    """With the index on from the first item, the worker builds it before serving, ranks over
    candidates, and adds the items first seen in the stream."""
    settings = settings.model_copy(update={"index_min_items": 0, "index_candidates": 8, "index_nprobe": 2})
    events = synthetic_events(n_users=12, per_user=10)
    t0 = events[-1].timestamp
    events += [Interaction(f"user-{u}", f"new-{u % 3}", t0 + 60 + u, "view") for u in range(12)]
    msgs, _, worker = _serve(settings, events)
    users = {json.loads(m.value())["user_id"] for m in msgs}
    assert users == {e.user_id for e in events}
    assert all(len(json.loads(m.value())["items"]) == 5 for m in msgs)
    stage = worker.engine.users
    assert stage.uses_index() and stage.index is not None
    assert len(stage.index) == len(stage.table) and "new-2" in stage.table.index


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
        recs = drain(
            settings,
            settings.topics.recommendations,
            lambda ms: {json.loads(m.value())["user_id"] for m in ms} == {e.user_id for e in valid},
        )
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
    # no recommendation answers a dead-lettered record as the last event it folded
    dead = {(d["source"]["partition"], d["source"]["offset"]) for d in letters}
    answers = [json.loads(m.value())["source"] for m in recs]
    assert len(dead) == len(bad) and not {(a["partition"], a["offset"]) for a in answers} & dead


def test_recommendations_through_kafka_agree_with_the_offline_evaluator(settings):
    """The worker and `tide evaluate` run the same fold: the ranks its emitted recommendations give
    each user's next item match the offline evaluator's (ranked as emitted, online learning off)."""
    import numpy as np

    from engine.checkpoint import latest_checkpoint, load_checkpoint
    from engine.fold.online import OnlineConfig
    from engine.offline.evaluation import evaluate_stream
    from streams.admin import create_topics
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
    msgs, delivered, _ = _serve(one, events)
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
        ckpt.model,
        ckpt.item_ids,
        log,
        0,
        batch_size=one.batch_max_events,
        online=OnlineConfig(enabled=False),
        at_row_time=False,
    )
    rows = sorted(kafka)
    assert len(rows) > 150
    offline = rr.ranks["model"][rows]
    online = np.array([kafka[r] for r in rows])
    assert abs(np.mean(1 / offline) - np.mean(1 / online)) < 0.01
    assert np.mean(offline == online) > 0.9
