import json

import jsonschema
import pytest

from schemas import (
    DeadLetter,
    Interaction,
    ItemVector,
    Recommendation,
    SchemaError,
    ScoredItem,
    SourceRef,
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
        (b'{"user_id": "", "item_id": "a", "timestamp": 1, "event_type": "view"}', "bad_type"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "view", "weight": -1}', "bad_type"),
        (b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "view", "schema_version": 9}', "bad_version"),
        (None, "empty"),
    ],
)
def test_invalid_interactions_are_rejected_with_a_kind(raw, kind):
    with pytest.raises(SchemaError) as exc:
        decode_interaction(raw)
    assert exc.value.kind == kind
    if raw is not None and kind not in ("not_json", "not_finite", "bad_version"):
        # the JSON Schema rejects the same records
        try:
            obj = json.loads(raw)
        except ValueError:
            return
        assert not _validator("interaction.v1").is_valid(obj) or kind == "bad_type" and obj.get("weight") == -1


def test_overlong_ids_are_rejected():
    with pytest.raises(SchemaError):
        decode_interaction(json.dumps({"user_id": "u" * 300, "item_id": "a", "timestamp": 1, "event_type": "view"}).encode())


def test_recommendation_round_trips_and_matches_schema():
    rec = Recommendation("u1", (ScoredItem("a", 1.5, "why"),), "m1", SourceRef("t", 0, 5, 1.0), 2.0)
    _validator("recommendation.v1").validate(json.loads(rec.to_json()))
    assert decode_recommendation(rec.to_json()) == rec


def test_dead_letter_and_item_vector_match_schemas():
    dl = DeadLetter(b"\xff", None, "bad", "not_json", "t", 0, 3, 1.0)
    _validator("dead_letter.v1").validate(json.loads(dl.to_json()))
    iv = ItemVector("a", (0.1, 0.2), 1.0, "m")
    _validator("item_vector.v1").validate(json.loads(iv.to_json()))
    _validator("item_update.v1")
    _validator("item.v1")


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
