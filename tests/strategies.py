"""Hypothesis strategies for the interactions wire format: valid records and every kind of bad one.

A drawn :class:`Case` is a Kafka record (key, value) and what must become of it: ``kinds`` is None
for a valid record (it must be folded) and otherwise the dead-letter kinds it may be rejected with
(a mangled record can break more than one rule; whichever the decoder checks first wins).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson
from hypothesis import strategies as st

from schemas import EVENT_TYPES

__all__ = ["Case", "bad_records", "cases", "valid_records"]

T0 = 1_700_000_000.0
USERS = [f"fz-u{k}" for k in range(12)]
ITEMS = [f"item-{k}" for k in range(40)]  # the test checkpoint's catalogue (tests/integration/conftest.py)
_ID_CHARS = st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs"))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Case:
    key: bytes | None
    value: bytes | None
    kinds: frozenset[str] | None  # None: valid
    label: str


def _printable_id(s: str) -> bool:
    return bool(s) and s.isprintable() and len(s.encode("utf-8")) <= 255


user_ids = st.one_of(
    st.sampled_from(USERS),
    st.sampled_from(USERS).map(lambda u: u.upper()),
    st.text(_ID_CHARS, min_size=1, max_size=30).filter(_printable_id),
    st.integers(-(2**63), 2**63 - 1),
)
item_ids = st.one_of(
    st.sampled_from(ITEMS),
    st.sampled_from(ITEMS),
    st.text(_ID_CHARS, min_size=1, max_size=30).filter(_printable_id),  # unknown items: created
    st.integers(0, 10**6),
)


@st.composite
def _valid_object(draw: st.DrawFn) -> dict:
    obj = {
        "user_id": draw(user_ids),
        "item_id": draw(item_ids),
        # out of order and duplicate times are valid: a user's time never goes back in the fold
        "timestamp": draw(st.one_of(st.floats(T0 - 1e6, T0 + 1e6), st.integers(int(T0 - 1e6), int(T0 + 1e6)),
                                    st.just(0), st.just(0.0))),
        "event_type": draw(st.sampled_from(EVENT_TYPES)),
    }
    if draw(st.booleans()):
        obj["weight"] = draw(st.floats(0, 1000) | st.integers(0, 1000) | st.none())
    if draw(st.booleans()):
        obj["context"] = draw(st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=4))
    if draw(st.booleans()):
        obj["schema_version"] = 1
    for name in draw(st.lists(st.text(min_size=1, max_size=10), max_size=3)):  # unknown fields are tolerated
        obj.setdefault(f"x-{name}", draw(_JSON))
    return obj


def _encode(obj: object, pretty: bool) -> bytes:
    return json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8") if pretty else orjson.dumps(obj)


def _key(obj: dict) -> bytes:
    return str(obj["user_id"]).encode("utf-8")


@st.composite
def valid_records(draw: st.DrawFn) -> Case:
    obj = draw(_valid_object())
    return Case(_key(obj), _encode(obj, draw(st.booleans())), None, "valid")


def _swap(obj: dict, field: str, value: object) -> dict:
    return {**obj, field: value}


@st.composite
def bad_records(draw: st.DrawFn) -> Case:
    obj = draw(_valid_object())
    key = _key(obj)
    kind = draw(st.sampled_from([
        "not_json", "nested", "wrong_type", "missing", "nan", "huge_id", "control_id", "negative_time",
        "future_time", "event_type", "weight", "oversize", "null_value", "null_key", "other_key",
        "not_object", "version",
    ]))
    if kind == "not_json":
        raw = draw(st.binary(min_size=1, max_size=200).filter(lambda b: not _parses(b)))
        return Case(key, raw, frozenset({"not_json"}), kind)
    if kind == "nested":
        depth = draw(st.integers(1_100, 30_000))
        return Case(key, b"[" * depth + b"]" * depth, frozenset({"not_json", "bad_type"}), kind)
    if kind == "not_object":
        not_an_object = draw(st.lists(_JSON, max_size=3) | st.integers(-(2**63), 2**63 - 1) | st.text())
        return Case(key, json.dumps(not_an_object).encode(), frozenset({"bad_type"}), kind)
    if kind == "wrong_type":
        field = draw(st.sampled_from(["user_id", "item_id", "timestamp", "event_type", "weight", "context"]))
        wrong = draw(
            st.sampled_from([[1], {"a": 1}, True, False, "x" if field in ("timestamp", "weight") else 1.5])
        )
        if field == "context" and isinstance(wrong, dict):
            wrong = [1]
        if field in ("user_id", "item_id") and wrong == 1.5:
            wrong = [1]
        bad = _swap(obj, field, wrong)
        return Case(
            key, _encode(bad, False), frozenset({"bad_type", "unknown_event_type", "key_mismatch"}), kind
        )
    if kind == "missing":
        field = draw(st.sampled_from(["user_id", "item_id", "timestamp", "event_type"]))
        bad = {k: v for k, v in obj.items() if k != field}
        return Case(key, _encode(bad, False), frozenset({"missing_field"}), kind)
    if kind == "nan":
        field = draw(st.sampled_from(["timestamp", "weight"]))
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]))
        text = json.dumps(_swap(obj, field, "__X__")).replace('"__X__"', token)
        return Case(key, text.encode(), frozenset({"not_finite"}), kind)
    if kind == "huge_id":
        field = draw(st.sampled_from(["user_id", "item_id"]))
        big = draw(st.text(_ID_CHARS, min_size=256, max_size=400).filter(lambda s: s.isprintable()))
        bad = _swap(obj, field, big)
        return Case(_key(bad), _encode(bad, False), frozenset({"bad_id"}), kind)
    if kind == "control_id":
        field = draw(st.sampled_from(["user_id", "item_id"]))
        ctrl = draw(st.sampled_from(["\x1b[31m", "\x00", "\n", "\u202e", "\u200b", "\x7f", "\ud800"]))
        bad = _swap(obj, field, f"id{ctrl}x")
        raw = json.dumps(bad).encode()  # \\ud800 as an escape: not valid UTF-8 otherwise
        return Case(str(bad["user_id"]).encode("utf-8", "surrogatepass"), raw, frozenset({"bad_id"}), kind)
    if kind == "negative_time":
        bad = _swap(obj, "timestamp", draw(st.floats(-1e12, -1e-9) | st.integers(-(10**12), -1)))
        return Case(key, _encode(bad, False), frozenset({"out_of_range"}), kind)
    if kind == "future_time":  # a day ahead of any worker's clock, up to beyond a float32
        bad = _swap(obj, "timestamp", draw(st.floats(4e9, 1e300) | st.just(32_503_680_000)))
        return Case(key, _encode(bad, False), frozenset({"out_of_range"}), kind)
    if kind == "event_type":
        bad = _swap(obj, "event_type", draw(st.text(max_size=12).filter(lambda s: s not in EVENT_TYPES)))
        return Case(key, _encode(bad, False), frozenset({"unknown_event_type"}), kind)
    if kind == "weight":
        bad = _swap(obj, "weight", draw(st.floats(1000.001, 1e300) | st.floats(-1e300, -1e-9)))
        return Case(key, _encode(bad, False), frozenset({"out_of_range"}), kind)
    if kind == "oversize":
        bad = _swap(obj, "context", {"pad": "x" * draw(st.integers(65_536, 300_000))})
        return Case(key, _encode(bad, False), frozenset({"too_large"}), kind)
    if kind == "null_value":
        return Case(key, None, frozenset({"empty"}), kind)
    if kind == "null_key":
        return Case(None, _encode(obj, False), frozenset({"null_key"}), kind)
    if kind == "other_key":
        other = draw(st.sampled_from(USERS + ["someone-else", ""]))
        if other.encode() == key:
            other = "someone-else"
        return Case(other.encode(), _encode(obj, False), frozenset({"key_mismatch"}), kind)
    assert kind == "version"
    bad = _swap(obj, "schema_version", draw(st.integers(2, 100) | st.just(0) | st.just("1") | st.just(None)))
    return Case(key, _encode(bad, False), frozenset({"bad_version"}), kind)


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


cases = st.one_of(valid_records(), valid_records(), bad_records())
