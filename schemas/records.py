"""Python types matching the JSON Schema files beside this module, and the validating decoder.

The JSON files are the contract; these dataclasses mirror them field for field (a test checks that
the required fields agree). Decoding is hand-written rather than a generic JSON Schema validator
because it runs once per event on the hot path; ``tests/schemas`` validates the same records with
``jsonschema`` to keep the two in step.

Beyond the schema, an interaction must respect :class:`Limits` (docs/input.md): a bounded size,
printable ids of at most 255 bytes, a timestamp that is not negative and not further in the future
than the allowed clock skew, a bounded weight, and a record key equal to its ``user_id``. Every
violation raises :class:`SchemaError` with a short ``kind`` from :data:`ERROR_KINDS`; no input makes
the decoder raise anything else.
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
    "DEFAULT_LIMITS",
    "ERROR_KINDS",
    "EVENT_TYPES",
    "MAX_DEAD_LETTER_ORIGINAL_BYTES",
    "MAX_ID_BYTES",
    "SCHEMA_VERSION",
    "DeadLetter",
    "Interaction",
    "Item",
    "InterestDrift",
    "ItemVector",
    "Limits",
    "Recommendation",
    "SchemaError",
    "ScoredItem",
    "SourceRef",
    "check_id",
    "check_key",
    "decode_interaction",
    "decode_item",
    "decode_recommendation",
    "encode_interaction",
    "encode_item",
    "load_schema",
    "user_of_key",
    "validate_recommendation",
]

SCHEMA_VERSION = 1
MAX_ID_BYTES = 255  # ids are stored length-prefixed in binary state
#: A dead letter carries at most this much of the original value (and of its key), flagged when cut,
#: so that the DLQ record stays far below any broker's message size limit.
MAX_DEAD_LETTER_ORIGINAL_BYTES = 16_384
_MAX_ERROR_CHARS = 500
_INT_ID_RANGE = 2**63  # integer ids beyond 64 bits are not ids (and their decimal form is unbounded)

#: Every ``SchemaError.kind`` (and dead-letter ``error_kind``): a bounded label set for metrics.
ERROR_KINDS: tuple[str, ...] = (
    "not_json", "missing_field", "bad_type", "not_finite", "unknown_event_type", "bad_version", "empty",
    "too_large", "bad_id", "out_of_range", "null_key", "key_mismatch", "unknown_item", "fold_error",
    "decode_error",
)

#: Event types an Interaction may carry; index order is stable (it is the model's event-type id).
EVENT_TYPES: tuple[str, ...] = ("view", "click", "edit", "like", "add_to_cart", "purchase", "rating", "share")
_EVENT_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}


class SchemaError(ValueError):
    """A record does not satisfy its schema. ``kind`` is a short bounded label for metrics and the DLQ."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds an interaction must respect beyond its schema (docs/input.md)."""

    #: largest accepted value, in bytes (checked before the JSON is parsed)
    max_message_bytes: int = 65_536
    #: how far past the worker's wall clock an event's timestamp may be (producers' clock skew), s
    clock_skew_s: float = 300.0
    #: the largest accepted ``weight`` (it enters the model's memory update as it is)
    max_weight: float = 1_000.0


DEFAULT_LIMITS = Limits()


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "item_id": self.item_id, "title": self.title,
            "text": self.text, "attributes": dict(self.attributes),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


# Not frozen: built per recommended item on the hot path, and frozen init is ~5x slower.
@dataclass(slots=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str
    evidence: float = 0.0  # the weight of the reason (see engine/fold/explain.py)


# Not frozen: built per recommended item on the hot path, and frozen init is ~5x slower.
@dataclass(slots=True)
class SourceRef:
    """The event a recommendation answers: ``offset`` is the user's last event folded into it, and
    the recommendation also answers the user's earlier events on the partition from ``first_offset``
    (the user's first event of the same micro-batch; -1: not given)."""

    topic: str
    partition: int
    offset: int
    event_time: float
    first_offset: int = -1


# Not frozen: built per recommended item on the hot path, and frozen init is ~5x slower.
@dataclass(slots=True)
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
        """The DLQ record. The original value and key are cut to
        :data:`MAX_DEAD_LETTER_ORIGINAL_BYTES` (``original_truncated`` says so; ``original_bytes``
        is the value's full size) and the error to 500 characters."""
        cap = MAX_DEAD_LETTER_ORIGINAL_BYTES
        key = self.original_key
        return orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "original": base64.b64encode(self.original[:cap]).decode("ascii"),
                "original_key": None if key is None else base64.b64encode(key[:cap]).decode("ascii"),
                "original_bytes": len(self.original),
                "original_truncated": len(self.original) > cap or (key is not None and len(key) > cap),
                "error": self.error[:_MAX_ERROR_CHARS],
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


@dataclass(frozen=True, slots=True)
class InterestDrift:
    """A user's recent interest moved away from their long-run summary (tide.interest-drift, key = user)."""

    user_id: str
    event_time: float  # the user's event at which the drift was seen
    distance: float  # 1 − cosine of recent interest and long-run summary (engine/fold/drift.py)
    threshold: float
    before: tuple[str, ...]  # the items that weigh most in the long-run summary
    after: tuple[str, ...]  # the items that weigh most in the recent interest
    model_version: str
    source: SourceRef
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)


def check_id(s: str, name: str = "id") -> str:
    """``s`` if it is a valid id: 1 to 255 bytes of UTF-8, every character printable (no control,
    format, surrogate, private-use or unassigned characters, no separator but the ASCII space), so
    that an id can never carry a terminal escape into a log; raises :class:`SchemaError` (``bad_id``)."""
    if not s or not s.isprintable():
        raise SchemaError(
            "bad_id",
            f"{name!r} must be non-empty and printable (no control or format characters)",
        )
    if len(s) > MAX_ID_BYTES or len(s.encode("utf-8")) > MAX_ID_BYTES:
        raise SchemaError("bad_id", f"{name!r} must be at most {MAX_ID_BYTES} bytes of UTF-8")
    return s


def _id(obj: Mapping[str, Any], name: str) -> str:
    if name not in obj:
        raise SchemaError("missing_field", f"missing required field {name!r}")
    v = obj[name]
    # bool is an int subclass; an id of true/false is a producer bug, not an id.
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise SchemaError("bad_type", f"{name!r} must be a string or integer, got {type(v).__name__}")
    if isinstance(v, int):
        if not -_INT_ID_RANGE <= v < _INT_ID_RANGE:
            raise SchemaError("bad_id", f"{name!r} must be an integer within 64 bits")
        return str(v)
    return check_id(v, name)


def _number(obj: Mapping[str, Any], name: str, default: float | None = None) -> float:
    if name not in obj or (obj[name] is None and default is not None):
        if default is None:
            raise SchemaError("missing_field", f"missing required field {name!r}")
        return default
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError("bad_type", f"{name!r} must be a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:  # an integer beyond the float range
        raise SchemaError("not_finite", f"{name!r} is beyond the range of a float") from None
    if not math.isfinite(f):
        raise SchemaError("not_finite", f"{name!r} must be finite, got {f!r}")
    return f


def _object(raw: bytes) -> Mapping[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # NaN, Infinity and out-of-range numbers are not JSON, but producers that write them mean a
        # number: the stdlib parser reads them so the error can name the non-finite field. It
        # recurses per nesting level, so a deeply nested value ends in RecursionError: not JSON
        # either (orjson itself stops at 1,024 levels).
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise SchemaError("not_json", f"value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError("bad_type", f"value must be a JSON object, got {type(obj).__name__}")
    return obj


def decode_interaction(
    raw: bytes | None, limits: Limits = DEFAULT_LIMITS, now: float | None = None
) -> Interaction:
    """Decode and validate one ``tide.interactions`` value; raises :class:`SchemaError` and nothing else.

    ``now`` (epoch s, the worker's wall clock) bounds the timestamp to ``now + limits.clock_skew_s``;
    None checks only that it is not negative (offline logs on a clock of their own)."""
    if raw is None:
        raise SchemaError("empty", "value is empty (tombstone)")
    if len(raw) > limits.max_message_bytes:
        raise SchemaError("too_large", f"value of {len(raw):,} bytes exceeds {limits.max_message_bytes:,}")
    obj = _object(raw)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        shown = repr(version)[:20] if isinstance(version, (int, float, str)) else type(version).__name__
        raise SchemaError("bad_version", f"unsupported schema_version {shown}")
    event_type = obj.get("event_type", None)
    if event_type is None:
        raise SchemaError("missing_field", "missing required field 'event_type'")
    if not isinstance(event_type, str) or event_type not in _EVENT_INDEX:
        raise SchemaError("unknown_event_type", f"unknown event_type; known: {list(EVENT_TYPES)}")
    context = obj.get("context")
    if context is not None and not isinstance(context, dict):
        raise SchemaError("bad_type", "'context' must be an object")
    weight = _number(obj, "weight", 1.0)
    if not 0 <= weight <= limits.max_weight:
        raise SchemaError(
            "out_of_range",
            f"'weight' must be within [0, {limits.max_weight:g}], got {weight:g}",
        )
    timestamp = _number(obj, "timestamp")
    if timestamp < 0:
        raise SchemaError("out_of_range", f"'timestamp' must not be negative, got {timestamp:g}")
    if now is not None and timestamp > now + limits.clock_skew_s:
        raise SchemaError(
            "out_of_range",
            f"'timestamp' {timestamp:.15g} is more than {limits.clock_skew_s:g} s ahead of the "
            "worker's clock "
            f"({now:.3f})",
        )
    return Interaction(
        user_id=_id(obj, "user_id"),
        item_id=_id(obj, "item_id"),
        timestamp=timestamp,
        event_type=event_type,
        weight=weight,
        context=context,
    )


def check_key(ev: Interaction, key: bytes | None) -> None:
    """The contract between producers and workers: an interaction's record key is its ``user_id``
    (UTF-8), so that all of a user's events reach one partition and one state. Raises
    :class:`SchemaError` (``null_key`` or ``key_mismatch``) otherwise."""
    if key is None:
        raise SchemaError("null_key", "the record key must be the user_id; it is null")
    if key != ev.user_id.encode("utf-8"):
        raise SchemaError("key_mismatch", "the record key must equal the user_id (UTF-8)")


def user_of_key(key: bytes | None, what: str = "the record key") -> str:
    """The user id a record key names (records keyed by user with no user id in their value: deletion
    requests, tombstones); raises :class:`SchemaError` (``null_key`` or ``bad_id``)."""
    if key is None:
        raise SchemaError("null_key", f"{what} must be the user_id; it is null")
    try:
        user = key.decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError("bad_id", f"{what} must be UTF-8") from None
    return check_id(user, "key")


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
            items=tuple(ScoredItem(str(i["item_id"]), float(i["score"]), str(i["reason"]),
                                   float(i.get("evidence", 0.0)))
                for i in obj["items"]),
            model_version=str(obj["model_version"]),
            source=SourceRef(
                str(src["topic"]), int(src["partition"]), int(src["offset"]), float(src["event_time"]),
                int(src.get("first_offset", -1)),
            ),
            emitted_at=float(obj["emitted_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError("missing_field", f"not a recommendation: {exc}") from None


def _to_json(fields: Mapping[str, Any]) -> bytes:
    """``fields`` as JSON, refusing, with the field's name, a top-level number orjson would write as
    null (NaN, infinities) and any value it cannot write."""
    for name, v in fields.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise SchemaError("not_finite", f"{name!r} must be finite, got {v!r}")
    try:
        return orjson.dumps(fields)
    except orjson.JSONEncodeError as exc:
        culprit = "value"
        for name, v in fields.items():
            try:
                orjson.dumps(v)
            except orjson.JSONEncodeError:
                culprit = name
                break
        raise SchemaError("bad_type", f"{culprit!r} cannot be written as JSON: {exc}") from None


def encode_interaction(
    ev: Interaction, limits: Limits = DEFAULT_LIMITS, now: float | None = None
) -> tuple[bytes, bytes]:
    """The record key and value that carry ``ev`` on ``tide.interactions``.

    The value is checked by the worker's own rules, :func:`decode_interaction` (with ``limits`` and
    ``now``) and :func:`check_key`, so a worker with the same limits and a clock no earlier than
    ``now`` never dead-letters it for its shape. The key is the decoded ``user_id`` (an integer id is
    sent as it is and keyed by its decimal form). Raises :class:`SchemaError` naming the field."""
    try:
        fields = ev.to_dict()
    except (TypeError, ValueError):
        raise SchemaError("bad_type", "'context' must be an object") from None
    value = _to_json(fields)
    decoded = decode_interaction(value, limits, now)
    key = decoded.user_id.encode("utf-8")
    check_key(decoded, key)
    return key, value


def encode_item(item: Item) -> tuple[bytes, bytes]:
    """The record key (the ``item_id``) and value that carry ``item`` on ``tide.items``.

    The value is checked by :func:`decode_item` (what a worker's catalog stage applies) and by what
    ``item.v1.json`` asks of attribute values beyond it: each a string, a finite number, a boolean or
    an array. Raises :class:`SchemaError` naming the field."""
    try:
        fields = item.to_dict()
    except (TypeError, ValueError):
        raise SchemaError("bad_type", "'attributes' must be an object") from None
    for name, v in fields["attributes"].items():
        if isinstance(v, float) and not math.isfinite(v):
            raise SchemaError("not_finite", f"attribute {name!r} must be finite, got {v!r}")
        if not isinstance(v, str | int | float | list | tuple):
            raise SchemaError(
                "bad_type",
                f"attribute {name!r} must be a string, number, boolean or array, got {type(v).__name__}",
            )
    value = _to_json(fields)
    return decode_item(value).item_id.encode("utf-8"), value


_REQUIRED = object()
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "a string": (str,), "a number": (int, float), "an integer": (int,), "an object": (dict,),
    "an array": (list,),
}


def _field(obj: Mapping[str, Any], name: str, what: str, where: str = "", default: Any = _REQUIRED) -> Any:
    """``obj[name]`` if it is ``what`` (a JSON Schema type: a number is finite, a boolean is no number,
    an integral float is an integer); ``default`` if it is absent and not required."""
    path = where + name
    if name not in obj:
        if default is _REQUIRED:
            raise SchemaError("missing_field", f"missing required field {path!r}")
        return default
    v: Any = obj[name]
    if what == "an integer" and isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, _JSON_TYPES[what]):
        raise SchemaError("bad_type", f"{path!r} must be {what}, got {type(v).__name__}")
    if what != "a number":
        return v
    try:
        f = float(obj[name])
    except OverflowError:
        raise SchemaError("not_finite", f"{path!r} is beyond the range of a float") from None
    if not math.isfinite(f):
        raise SchemaError("not_finite", f"{path!r} must be finite, got {f!r}")
    return f


def validate_recommendation(raw: bytes | None) -> Recommendation:
    """Decode one ``tide.recommendations`` value and check it against ``recommendation.v1.json``.

    Every required field with its JSON type, ``schema_version`` 1, a non-empty ``user_id``, a
    partition and offset not negative, and every number finite (what a worker writes always is);
    unknown fields are ignored. Raises :class:`SchemaError` naming the field; a null value (the
    tombstone of an erased user) is ``empty``. :func:`decode_recommendation` is the lenient reader."""
    if raw is None:
        raise SchemaError("empty", "value is empty (tombstone: the user was erased)")
    obj = _object(raw)
    if _field(obj, "schema_version", "an integer") != SCHEMA_VERSION:
        raise SchemaError("bad_version", f"'schema_version' must be {SCHEMA_VERSION}")
    user_id = _field(obj, "user_id", "a string")
    if not user_id:
        raise SchemaError("bad_id", "'user_id' must not be empty")
    items = []
    for k, entry in enumerate(_field(obj, "items", "an array")):
        where = f"items[{k}]."
        if not isinstance(entry, dict):
            raise SchemaError("bad_type", f"'items[{k}]' must be an object, got {type(entry).__name__}")
        items.append(ScoredItem(
            _field(entry, "item_id", "a string", where), _field(entry, "score", "a number", where),
            _field(entry, "reason", "a string", where), _field(entry, "evidence", "a number", where, 0.0),
        ))
    src = _field(obj, "source", "an object")
    partition = _field(src, "partition", "an integer", "source.")
    offset = _field(src, "offset", "an integer", "source.")
    if partition < 0 or offset < 0:
        raise SchemaError("out_of_range", "'source.partition' and 'source.offset' must not be negative")
    source = SourceRef(
        _field(src, "topic", "a string", "source."), partition, offset,
        _field(src, "event_time", "a number", "source."),
        _field(src, "first_offset", "an integer", "source.", -1),
    )
    return Recommendation(
        user_id, tuple(items), _field(obj, "model_version", "a string"), source,
        _field(obj, "emitted_at", "a number"),
    )
