"""Python types matching the JSON Schema files beside this module, and the validating decoder.

The JSON files are the contract; these dataclasses mirror them field for field (a test checks that
the required fields agree). Decoding is hand-written rather than a generic JSON Schema validator
because it runs once per event on the hot path; ``tests/schemas`` validates the same records with
``jsonschema`` to keep the two in step.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

__all__ = [
    "EVENT_TYPES",
    "MAX_ID_BYTES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "Interaction",
    "Item",
    "ItemVector",
    "Recommendation",
    "SchemaError",
    "ScoredItem",
    "SourceRef",
    "decode_interaction",
    "decode_item",
    "decode_recommendation",
    "load_schema",
]

SCHEMA_VERSION = 1
MAX_ID_BYTES = 255  # ids are stored length-prefixed in binary state

#: Event types an Interaction may carry; index order is stable (it is the model's event-type id).
EVENT_TYPES: tuple[str, ...] = ("view", "click", "edit", "like", "add_to_cart", "purchase", "rating", "share")
_EVENT_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}


class SchemaError(ValueError):
    """A record does not satisfy its schema. ``kind`` is a short bounded label for metrics and the DLQ."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (e.g. ``"interaction.v1"``) shipped in this package."""
    text = resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    timestamp: float
    event_type: str = "view"
    weight: float = 1.0
    context: Mapping[str, Any] | None = None

    @property
    def event_type_id(self) -> int:
        return _EVENT_INDEX[self.event_type]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp,
            "event_type": self.event_type,
            "weight": self.weight,
        }
        if self.context is not None:
            d["context"] = dict(self.context)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str
    text: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"schema_version": SCHEMA_VERSION, "item_id": self.item_id, "title": self.title, "text": self.text,
             "attributes": dict(self.attributes)}
        )


@dataclass(slots=True)  # not frozen: built per recommended item on the hot path, and frozen init is ~5x slower
class ScoredItem:
    item_id: str
    score: float
    reason: str
    evidence: float = 0.0  # the reason's strength (see engine/explain.py)


@dataclass(slots=True)  # not frozen: built per recommended item on the hot path, and frozen init is ~5x slower
class SourceRef:
    topic: str
    partition: int
    offset: int
    event_time: float


@dataclass(slots=True)  # not frozen: built per recommended item on the hot path, and frozen init is ~5x slower
class Recommendation:
    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: str
    source: SourceRef
    emitted_at: float
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        # orjson serialises (slotted) dataclasses natively, field for field: the hot path's encoder.
        return orjson.dumps(self)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    original: bytes
    original_key: bytes | None
    error: str
    error_kind: str
    topic: str
    partition: int
    offset: int
    failed_at: float

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "original": base64.b64encode(self.original).decode("ascii"),
                "original_key": None
                if self.original_key is None
                else base64.b64encode(self.original_key).decode("ascii"),
                "error": self.error,
                "error_kind": self.error_kind,
                "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
                "failed_at": self.failed_at,
            }
        )


@dataclass(frozen=True, slots=True)
class ItemVector:
    item_id: str
    vector: tuple[float, ...]
    updated_at: float
    model_version: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "item_id": self.item_id,
                "vector": list(self.vector),
                "updated_at": self.updated_at,
                "model_version": self.model_version,
            }
        )


def _id(obj: Mapping[str, Any], name: str) -> str:
    if name not in obj:
        raise SchemaError("missing_field", f"missing required field {name!r}")
    v = obj[name]
    # bool is an int subclass; an id of true/false is a producer bug, not an id.
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise SchemaError("bad_type", f"{name!r} must be a string or integer, got {type(v).__name__}")
    s = str(v)
    if not s or len(s.encode("utf-8")) > MAX_ID_BYTES:
        raise SchemaError("bad_type", f"{name!r} must be 1 to {MAX_ID_BYTES} bytes of UTF-8")
    return s


def _number(obj: Mapping[str, Any], name: str, default: float | None = None) -> float:
    if name not in obj or (obj[name] is None and default is not None):
        if default is None:
            raise SchemaError("missing_field", f"missing required field {name!r}")
        return default
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError("bad_type", f"{name!r} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise SchemaError("not_finite", f"{name!r} must be finite, got {v!r}")
    return f


def _object(raw: bytes) -> Mapping[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # NaN, Infinity and out-of-range numbers are not JSON, but producers that write them mean a
        # number: the stdlib parser reads them so the error can name the non-finite field.
        try:
            obj = json.loads(raw)
        except ValueError:
            raise SchemaError("not_json", f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError("bad_type", f"value must be a JSON object, got {type(obj).__name__}")
    return obj


def decode_interaction(raw: bytes | None) -> Interaction:
    """Decode and validate one ``tide.interactions`` value; raises :class:`SchemaError`."""
    if raw is None:
        raise SchemaError("empty", "value is empty (tombstone)")
    obj = _object(raw)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaError("bad_version", f"unsupported schema_version {version!r}")
    event_type = obj.get("event_type", None)
    if event_type is None:
        raise SchemaError("missing_field", "missing required field 'event_type'")
    if not isinstance(event_type, str) or event_type not in _EVENT_INDEX:
        raise SchemaError("unknown_event_type", f"unknown event_type {event_type!r}; known: {list(EVENT_TYPES)}")
    context = obj.get("context")
    if context is not None and not isinstance(context, dict):
        raise SchemaError("bad_type", "'context' must be an object")
    weight = _number(obj, "weight", 1.0)
    if weight < 0:
        raise SchemaError("bad_type", f"'weight' must be >= 0, got {weight}")
    return Interaction(
        user_id=_id(obj, "user_id"),
        item_id=_id(obj, "item_id"),
        timestamp=_number(obj, "timestamp"),
        event_type=event_type,
        weight=weight,
        context=context,
    )


def decode_item(raw: bytes | None) -> Item:
    """Decode and validate one ``tide.items`` value; raises :class:`SchemaError`."""
    if raw is None:
        raise SchemaError("empty", "value is empty (tombstone)")
    obj = _object(raw)
    title = obj.get("title")
    if not isinstance(title, str):
        raise SchemaError("missing_field" if title is None else "bad_type", "'title' must be a string")
    text = obj.get("text", "")
    attributes = obj.get("attributes", {})
    if not isinstance(text, str) or not isinstance(attributes, dict):
        raise SchemaError("bad_type", "'text' must be a string and 'attributes' an object")
    return Item(item_id=_id(obj, "item_id"), title=title, text=text, attributes=attributes)


def decode_recommendation(raw: bytes) -> Recommendation:
    """Decode a ``tide.recommendations`` value (for readers of the output topic and tests)."""
    obj = _object(raw)
    try:
        src = obj["source"]
        return Recommendation(
            user_id=str(obj["user_id"]),
            items=tuple(ScoredItem(str(i["item_id"]), float(i["score"]), str(i["reason"]), float(i.get("evidence", 0.0)))
                for i in obj["items"]),
            model_version=str(obj["model_version"]),
            source=SourceRef(str(src["topic"]), int(src["partition"]), int(src["offset"]), float(src["event_time"])),
            emitted_at=float(obj["emitted_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError("missing_field", f"not a recommendation: {exc}") from None
