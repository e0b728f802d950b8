"""The integrators' client (streams/client.py) against the real embedded broker, and the checks it
shares with the worker (schemas.encode_interaction, encode_item, validate_recommendation)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from pydantic import SecretStr

from schemas import (
    Interaction,
    Item,
    Recommendation,
    SchemaError,
    ScoredItem,
    SourceRef,
    check_key,
    decode_interaction,
    decode_item,
    load_schema,
    validate_recommendation,
)
from streams.admin import TopicSpec, create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.client import DeliveryError, Erased, RecommendationConsumer, TideProducer
from streams.config import Settings, Topics

_counter = itertools.count()
NOW = time.time()


@pytest.fixture
def client_settings(embedded_broker: EmbeddedBroker) -> Settings:
    """Settings on topics of this test's own (one partition each); a short session timeout, so that a
    consumer group's first assignment on the embedded broker takes a second, not three."""
    n = f"cl{next(_counter)}-{int(NOW)}"
    topics = Topics(**{k: f"{n}.{v}" for k, v in Topics().model_dump().items()})
    s = Settings(
        bootstrap_servers=embedded_broker.bootstrap_servers, topics=topics, session_timeout_ms=2000
    )
    create_topics(
        s.bootstrap_servers,
        [TopicSpec(t) for t in (topics.interactions, topics.items, topics.recommendations)],
    )
    return s


def _read(settings: Settings, counts: dict[str, int]) -> dict[str, list[Message]]:
    """The first ``counts[topic]`` records of each topic's partition 0, read by assignment (no group)."""
    c = Consumer(settings.consumer_conf(f"read-{next(_counter)}"))
    c.assign([TopicPartition(topic, 0, 0) for topic in counts])
    out: dict[str, list[Message]] = {topic: [] for topic in counts}
    deadline = time.monotonic() + 10
    try:
        while any(len(out[t]) < n for t, n in counts.items()):
            assert time.monotonic() < deadline, {t: len(ms) for t, ms in out.items()}
            for m in c.consume(100, 0.05):
                if m.error() is None:
                    out[m.topic() or ""].append(m)
    finally:
        c.close()
    return {t: ms[: counts[t]] for t, ms in out.items()}


def _rec(user: str, offset: int, items: tuple[str, ...] = ("a", "b")) -> Recommendation:
    scored = tuple(ScoredItem(i, 1.0 - k / 10, "recently used", 0.5) for k, i in enumerate(items))
    return Recommendation(user, scored, "m-1", SourceRef("in", 0, offset, NOW - 1, offset), NOW)


# -- producing ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_valid_records_arrive_keyed_as_the_worker_expects(client_settings):
    s = client_settings
    events = [
        Interaction("alice", "i1", NOW - 10, "click"),
        Interaction("用户-42 🎵", "i2", NOW - 5, "purchase", 2.5, {"device": "phone", "page": [1, 2]}),
        Interaction("alice", "i3", NOW + 60, "rating", 0.0),  # within the clock skew
    ]
    items = [Item("i1", "A title", "text", {"genre": ["x", "y"], "year": 1999, "new": True}), Item("9", "T")]
    with TideProducer(s) as producer:
        for ev in events:
            producer.send_interaction(ev)
        for it in items:
            producer.send_item(it)

    got = _read(s, {s.topics.interactions: len(events), s.topics.items: len(items)})
    assert [m.key() for m in got[s.topics.interactions]] == [ev.user_id.encode() for ev in events]
    for m, ev in zip(got[s.topics.interactions], events, strict=True):
        decoded = decode_interaction(m.value(), s.limits(), time.time())  # as the worker decodes it
        check_key(decoded, m.key())
        assert decoded == ev
    assert [(m.key(), decode_item(m.value())) for m in got[s.topics.items]] == [
        (it.item_id.encode(), it) for it in items
    ]


BAD_INTERACTIONS = [
    (Interaction("", "i", NOW, "view"), "bad_id", "'user_id'"),
    (Interaction("u" * 256, "i", NOW, "view"), "bad_id", "'user_id'"),
    (Interaction("u", "i\x1b[31m", NOW, "view"), "bad_id", "'item_id'"),
    (Interaction("u", "i", NOW, "teleport"), "unknown_event_type", "event_type"),
    (Interaction("u", "i", -1.0, "view"), "out_of_range", "'timestamp'"),
    (Interaction("u", "i", NOW + 3600, "view"), "out_of_range", "'timestamp'"),
    (Interaction("u", "i", math.inf, "view"), "not_finite", "'timestamp'"),
    (Interaction("u", "i", NOW, "view", math.nan), "not_finite", "'weight'"),
    (Interaction("u", "i", NOW, "view", 5000.0), "out_of_range", "'weight'"),
    (Interaction("u", "i", NOW, "view", context="phone"), "bad_type", "'context'"),  # type: ignore[arg-type]
    (Interaction("u", "i", NOW, "view", context={"at": object()}), "bad_type", "'context'"),
    (Interaction("u", "i", NOW, "view", context={"pad": "x" * 70_000}), "too_large", "65,536"),
]
BAD_ITEMS = [
    (Item("", "T"), "bad_id", "'item_id'"),
    (Item("i", None), "missing_field", "'title'"),  # type: ignore[arg-type]
    (Item("i", "T", 5), "bad_type", "'text'"),  # type: ignore[arg-type]
    (Item("i", "T", attributes={"genre": None}), "bad_type", "'genre'"),
    (Item("i", "T", attributes={"score": math.nan}), "not_finite", "'score'"),
    (Item("i", "T", attributes=["genre"]), "bad_type", "'attributes'"),  # type: ignore[arg-type]
]


@pytest.mark.integration
def test_invalid_records_raise_naming_the_field_and_nothing_is_sent(client_settings):
    s = client_settings
    with TideProducer(s) as producer:
        for ev, kind, named in BAD_INTERACTIONS:
            with pytest.raises(SchemaError, match=named) as exc:
                producer.send_interaction(ev)
            assert exc.value.kind == kind, ev
        for it, kind, named in BAD_ITEMS:
            with pytest.raises(SchemaError, match=named) as exc:
                producer.send_item(it)
            assert exc.value.kind == kind, it
        producer.send_interaction(Interaction("u", "i", NOW, "view"))  # one valid record after them
        producer.send_item(Item("i", "T"))
    got = _read(s, {s.topics.interactions: 1, s.topics.items: 1})
    # the first record of each topic is the valid one, sent last: none of the others was sent
    assert [(m.offset(), m.key()) for m in got[s.topics.interactions]] == [(0, b"u")]
    assert [(m.offset(), m.key()) for m in got[s.topics.items]] == [(0, b"i")]


def test_a_nan_weight_is_refused_where_a_plain_json_encoder_would_send_a_default():
    ev = Interaction("u", "i", NOW, "view", math.nan)
    assert decode_interaction(ev.to_json()).weight == 1.0  # orjson writes NaN as null
    with TideProducer(Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")) as producer:
        with pytest.raises(SchemaError, match="'weight'"):
            producer.send_interaction(ev)


def test_delivery_failures_are_raised_by_flush_and_on_leaving_the_block():
    s = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(DeliveryError) as exc:
        with TideProducer(s, **{"message.timeout.ms": 300}) as producer:
            producer.send_interaction(Interaction("u", "i", NOW, "view"))
            producer.send_item(Item("i", "T"))
    assert [(t, k) for t, k, _ in exc.value.failures] == [
        (s.topics.interactions, b"u"), (s.topics.items, b"i")
    ]
    assert {e.code() for _, _, e in exc.value.failures} == {KafkaError._MSG_TIMED_OUT}
    with pytest.raises(RuntimeError, match="closed"):
        producer.send_item(Item("i", "T"))
    producer.close()  # again: nothing to do


# -- consuming ---------------------------------------------------------------------------------------


def _valid() -> dict:
    return json.loads(_rec("u", 3).to_json())


def _mutations() -> Iterator[tuple[str, dict]]:
    """Values near a valid recommendation, valid or not by recommendation.v1.json."""
    cases: list[tuple[str, str, object]] = [
        ("drop", "user_id", None), ("drop", "items", None), ("drop", "source", None),
        ("drop", "emitted_at", None), ("drop", "model_version", None), ("drop", "schema_version", None),
        ("set", "schema_version", 2), ("set", "user_id", ""), ("set", "user_id", 7),
        ("set", "items", {}), ("set", "items", []), ("set", "items", [1]), ("set", "emitted_at", "now"),
        ("set", "emitted_at", True), ("set", "model_version", None), ("set", "extra", {"x": 1}),
    ]
    for op, name, value in cases:
        v = _valid()
        if op == "drop":
            del v[name]
        else:
            v[name] = value
        yield f"{op} {name}={value!r}", v
    for name in ("item_id", "score", "reason", "evidence"):
        v = _valid()
        del v["items"][1][name]
        yield f"items[1] without {name}", v
        v = copy.deepcopy(v)
        v["items"][1][name] = "x" if name in ("score", "evidence") else 1
        yield f"items[1] with a bad {name}", v
    for name, bad in (("topic", 1), ("partition", -1), ("offset", -1), ("offset", 2.5), ("event_time", "t"),
                      ("first_offset", "x"), ("partition", 3.0)):
        v = _valid()
        v["source"][name] = bad
        yield f"source.{name}={bad!r}", v
        v = _valid()
        del v["source"][name]
        yield f"source without {name}", v


def test_the_recommendation_decoder_agrees_with_the_json_schema():
    schema = jsonschema.Draft202012Validator(load_schema("recommendation.v1"))
    rec = _rec("u", 3)
    assert validate_recommendation(rec.to_json()) == rec
    for what, value in _mutations():
        valid = schema.is_valid(value)
        try:
            validate_recommendation(json.dumps(value).encode())
        except SchemaError:
            assert not valid, what
        else:
            assert valid, what
    for bad in (b"NaN", b"Infinity"):  # the schema's numbers may be NaN; a worker never writes one
        with pytest.raises(SchemaError, match="'items\\[0\\].score'") as exc:
            validate_recommendation(rec.to_json().replace(b'"score":1.0', b'"score":' + bad))
        assert exc.value.kind == "not_finite"


@pytest.mark.integration
def test_recommendations_and_erasures_come_out_typed_and_a_bad_record_is_named(client_settings):
    s = client_settings
    recs = [_rec("alice", 1), _rec("用户-42 🎵", 2, ("c",))]
    p = Producer(s.producer_conf())
    for key, value in [
        (b"alice", recs[0].to_json()), ("用户-42 🎵".encode(), recs[1].to_json()), (b"alice", None),
        (b"bob", recs[0].to_json()),  # keyed by another user
        (b"carol", _rec("carol", 5).to_json()),
    ]:
        p.produce(s.topics.recommendations, value, key)
    assert p.flush(10) == 0

    group = f"client-{next(_counter)}"
    with RecommendationConsumer(s, group, auto_commit=False) as consumer:
        got: list[Recommendation | Erased] = []
        with pytest.raises(SchemaError, match="offset 3: the record key must equal") as exc:
            for record in consumer.records(timeout_s=10):
                got.append(record)
        assert exc.value.kind == "key_mismatch"
        assert got == [*recs, Erased("alice")]
        assert list(consumer.records(timeout_s=10, idle_s=0.3)) == [_rec("carol", 5)]  # read on past it
        assert consumer.poll(0.05) is None
        consumer.commit()
    reader = Consumer(s.consumer_conf(group))
    try:
        assert reader.committed([TopicPartition(s.topics.recommendations, 0)], 10)[0].offset == 5
    finally:
        reader.close()


def test_the_consumer_refuses_the_workers_group():
    with pytest.raises(ValueError, match="workers' consumer group"):
        RecommendationConsumer(Settings(group_id="tide-worker"), "tide-worker")


# -- connection settings -----------------------------------------------------------------------------


def test_security_settings_reach_both_clients(monkeypatch):
    import streams.client

    seen: list[dict] = []

    class Recorded(Exception):
        pass

    def recorder(conf: dict, *args: object) -> None:
        seen.append(dict(conf))
        raise Recorded

    monkeypatch.setattr(streams.client, "Producer", recorder)
    monkeypatch.setattr(streams.client, "Consumer", recorder)
    s = Settings(
        bootstrap_servers="kafka-1:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc", sasl_password=SecretStr("secret"), ssl_ca_location="/etc/ca.pem",
    )
    for make in (lambda: TideProducer(s), lambda: RecommendationConsumer(s, "g")):
        with pytest.raises(Recorded):
            make()
    expected = s.librdkafka()
    for conf in seen:
        assert {k: conf[k] for k in expected} == expected
        assert conf["sasl.password"] == "secret"
    assert seen[0]["enable.idempotence"] is True and seen[1]["group.id"] == "g"


# -- with a real worker ------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_real_workers_recommendations_and_tombstone_come_out_typed(client_settings, tmp_path: Path):
    import torch

    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel
    from streams.forget import request_deletion
    from streams.topics import topic_specs
    from tests.integration.conftest import start_worker

    items = [f"i{k}" for k in range(8)]
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", InterestModel(InterestConfig(n_items=len(items), dim=8)), items, {})
    s = client_settings.model_copy(update={
        "checkpoint_dir": tmp_path / "ck", "state_dir": tmp_path / "state", "group_id": "client-w",
        "top_k": 3, "device": "cpu", "catalog_stage": False, "online_learning": False,
    })
    create_topics(s.bootstrap_servers, topic_specs(s))
    with TideProducer(s) as producer:
        for k, user in enumerate(["ann", "ben", "ann"]):
            producer.send_interaction(Interaction(user, items[k], NOW - 10 + k, "click"))
    worker, thread = start_worker(s)
    try:
        with RecommendationConsumer(s, f"client-{next(_counter)}") as consumer:
            got: dict[str, Recommendation] = {}
            for record in consumer.records(timeout_s=20):
                assert isinstance(record, Recommendation)
                got[record.user_id] = record
                if len(got) == 2:
                    break
            assert sorted(got) == ["ann", "ben"] and len(got["ann"].items) == 3
            assert got["ann"].source.topic == s.topics.interactions
            request_deletion(s, ["ben"])
            assert next(r for r in consumer.records(timeout_s=20) if isinstance(r, Erased)) == Erased("ben")
    finally:
        worker.stop()
        thread.join(10)
