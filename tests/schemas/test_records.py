"""Records against their JSON Schemas: decoding, bounds, keys, dead letters, round trips."""

import base64
import json

import jsonschema
import pytest

from schemas import (
    MAX_DEAD_LETTER_ORIGINAL_BYTES,
    DeadLetter,
    Interaction,
    InterestDrift,
    Item,
    ItemVector,
    Limits,
    Recommendation,
    SchemaError,
    ScoredItem,
    SourceRef,
    check_key,
    decode_interaction,
    decode_item,
    decode_recommendation,
    load_schema,
)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_valid_interaction_decodes_and_matches_schema():
    raw = b'{"user_id": 7, "item_id": "a", "timestamp": 12.5, "event_type": "click", "extra": 1}'
    ev = decode_interaction(raw)
    assert ev == Interaction("7", "a", 12.5, "click", 1.0, None)
    _validator("interaction.v1").validate(json.loads(ev.to_json()))


@pytest.mark.parametrize(
    "raw, kind",
    [
        (b"not json", "not_json"),
        (b"[1, 2]", "bad_type"),
        (b'{"item_id": "a", "timestamp": 1, "event_type": "view"}', "missing_field"),
        (b'{"user_id": "u", "item_id": "a", "event_type": "view"}', "missing_field"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": "soon", "event_type": "view"}', "bad_type"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": NaN, "event_type": "view"}', "not_finite"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": 1e400, "event_type": "view"}', "not_finite"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "teleport"}', "unknown_event_type"),
        (b'{"user_id": true, "item_id": "a", "timestamp": 1, "event_type": "view"}', "bad_type"),
        (b'{"user_id": "", "item_id": "a", "timestamp": 1, "event_type": "view"}', "bad_id"),
        (
            b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "view", "weight": -1}',
            "out_of_range",
        ),
        (
            b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "view", "schema_version": 9}',
            "bad_version",
        ),
        (None, "empty"),
    ],
)
def test_invalid_interactions_are_rejected_with_a_kind(raw, kind):
    with pytest.raises(SchemaError) as exc:
        decode_interaction(raw)
    assert exc.value.kind == kind
    if raw is not None and kind not in ("not_json", "not_finite", "bad_version", "bad_id"):
        # the JSON Schema rejects the same records
        try:
            obj = json.loads(raw)
        except ValueError:
            return
        assert not _validator("interaction.v1").is_valid(obj)


def test_overlong_ids_are_rejected():
    with pytest.raises(SchemaError):
        decode_interaction(
            json.dumps({"user_id": "u" * 300, "item_id": "a", "timestamp": 1, "event_type": "view"}).encode()
        )


def _record(**fields) -> bytes:
    base = {"user_id": "u", "item_id": "a", "timestamp": 1_700_000_000.5, "event_type": "view"}
    return json.dumps({**base, **fields}).encode()


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    "raw, kind",
    [
        # 200,000 levels of nested arrays: the stdlib fallback parser recursed until RecursionError
        (b"[" * 200_000 + b"]" * 200_000, "too_large"),
        (b"[" * 30_000 + b"]" * 30_000, "not_json"),
        (b'{"user_id": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "not_json"),
        # a timestamp beyond float32 crashed the state encoder; far-future and negative times
        (_record(timestamp=1e300), "out_of_range"),
        (_record(timestamp=32_503_680_000), "out_of_range"),  # the year 3000
        (_record(timestamp=NOW + 301), "out_of_range"),
        (_record(timestamp=-1e9), "out_of_range"),
        (_record(weight=1e300), "out_of_range"),
        (_record(weight=1_000.5), "out_of_range"),
        # ids: terminal escapes, other control and format characters, lone surrogates, huge integers
        (_record(user_id="evil\x1b[2J"), "bad_id"),
        (_record(item_id="a\nb"), "bad_id"),
        (_record(user_id="bidi\u202eoverride"), "bad_id"),
        (b'{"user_id": "\\ud800", "item_id": "a", "timestamp": 1, "event_type": "view"}', "bad_id"),
        (_record(user_id=2**70), "bad_type"),  # orjson reads it as a float
        (
            b'{"user_id": 1' + b"0" * 5_000 + b', "item_id": "a", "timestamp": 1, "event_type": "view"}',
            "not_json",
        ),
        (_record(user_id="\u00e9" * 128), "bad_id"),  # 128 characters, 256 bytes of UTF-8
        (_record(context="x" * 70_000), "too_large"),
        (_record(schema_version=[[[]]]), "bad_version"),
        (_record(timestamp=10**400), "not_finite"),
    ],
)
def test_bounds_are_enforced_at_decode(raw, kind):
    with pytest.raises(SchemaError) as exc:
        decode_interaction(raw, now=NOW)
    assert exc.value.kind == kind


def test_records_within_the_bounds_are_accepted():
    ev = decode_interaction(
        _record(user_id="用户-42 🎵", item_id=2**63 - 1, timestamp=NOW + 299, weight=1000), now=NOW
    )
    assert ev.user_id == "用户-42 🎵" and ev.item_id == str(2**63 - 1) and ev.timestamp == NOW + 299
    assert decode_interaction(_record(timestamp=0)).timestamp == 0.0
    # without a clock (offline logs) only negative times are out of range
    assert decode_interaction(_record(timestamp=32_503_680_000)).timestamp == 32_503_680_000
    tight = Limits(max_message_bytes=64, clock_skew_s=0.0, max_weight=2.0)
    with pytest.raises(SchemaError):
        decode_interaction(_record(), tight)


def test_the_record_key_must_be_the_user_id():
    ev = decode_interaction(_record(user_id=7))
    check_key(ev, b"7")
    for key, kind in ((None, "null_key"), (b"someone-else", "key_mismatch"), (b"7 ", "key_mismatch")):
        with pytest.raises(SchemaError) as exc:
            check_key(ev, key)
        assert exc.value.kind == kind


def test_dead_letters_cut_an_oversize_original_and_say_so():
    original = b"x" * (MAX_DEAD_LETTER_ORIGINAL_BYTES + 10)
    dl = json.loads(DeadLetter(original, b"k" * 20_000, "e" * 10_000, "too_large", "t", 0, 1, 2.0).to_json())
    _validator("dead_letter.v1").validate(dl)
    assert dl["original_truncated"] is True and dl["original_bytes"] == len(original)
    assert base64.b64decode(dl["original"]) == original[:MAX_DEAD_LETTER_ORIGINAL_BYTES]
    assert (
        len(base64.b64decode(dl["original_key"])) == MAX_DEAD_LETTER_ORIGINAL_BYTES
        and len(dl["error"]) == 500
    )
    small = json.loads(DeadLetter(b"{}", None, "bad", "not_json", "t", 0, 1, 2.0).to_json())
    assert small["original_truncated"] is False and small["original_bytes"] == 2


def test_recommendation_round_trips_and_matches_schema():
    rec = Recommendation("u1", (ScoredItem("a", 1.5, "why"),), "m1", SourceRef("t", 0, 5, 1.0), 2.0)
    _validator("recommendation.v1").validate(json.loads(rec.to_json()))
    assert decode_recommendation(rec.to_json()) == rec


def test_dead_letter_and_item_vector_match_schemas():
    dl = DeadLetter(b"\xff", None, "bad", "not_json", "t", 0, 3, 1.0)
    _validator("dead_letter.v1").validate(json.loads(dl.to_json()))
    iv = ItemVector("a", (0.1, 0.2), 1.0, "m")
    _validator("item_vector.v1").validate(json.loads(iv.to_json()))


def test_interest_drift_matches_its_schema():
    drift = InterestDrift("u1", 5.0, 0.62, 0.45, ("a", "b"), ("c",), "m1", SourceRef("t", 1, 9, 5.0))
    body = json.loads(drift.to_json())
    _validator("interest_drift.v1").validate(body)
    assert set(load_schema("interest_drift.v1")["required"]) - {"schema_version"} <= set(
        InterestDrift.__dataclass_fields__
    )
    assert not _validator("interest_drift.v1").is_valid({**body, "before": "a"})


def test_item_schema_accepts_what_items_write_and_rejects_what_decode_item_rejects():
    schema = _validator("item.v1")
    item = Item("a", "T", "text", {"genre": ["x"], "year": 1999})
    schema.validate(json.loads(item.to_json()))
    assert decode_item(item.to_json()) == item
    for bad in (
        {"item_id": "a"},  # no title
        {"title": "T"},  # no id
        {"item_id": "", "title": "T"},
        {"item_id": "a", "title": 7},
        {"item_id": "a", "title": "T", "attributes": {"genre": None}},
        {"item_id": "a", "title": "T", "schema_version": 2},
    ):
        assert not schema.is_valid(bad), bad


def test_item_update_schema_requires_every_field():
    schema = _validator("item_update.v1")
    good = {
        "schema_version": 1, "item_id": "a", "user_vector": [0.5, -0.25], "timestamp": 1.5,
        "source": {"topic": "t", "partition": 0, "offset": 3},
    }
    schema.validate(good)
    for name in ("schema_version", "item_id", "user_vector", "timestamp", "source"):
        assert not schema.is_valid({k: v for k, v in good.items() if k != name}), name
    assert not schema.is_valid({**good, "user_vector": ["x"]})
    assert not schema.is_valid({**good, "source": {"topic": "t", "partition": 0}})
    assert not schema.is_valid({**good, "schema_version": 2})


def test_item_decode():
    it = decode_item(b'{"item_id": 3, "title": "T", "attributes": {"genre": ["a"]}}')
    assert it.item_id == "3" and it.attributes == {"genre": ["a"]}
    with pytest.raises(SchemaError):
        decode_item(b'{"item_id": 3}')


def test_required_fields_agree_with_python_types():
    assert set(load_schema("interaction.v1")["required"]) <= set(Interaction.__dataclass_fields__)
    assert set(load_schema("recommendation.v1")["required"]) - {"schema_version"} <= set(
        Recommendation.__dataclass_fields__
    )
