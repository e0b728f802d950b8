"""Property tests of the decoder: no input makes it raise anything but SchemaError, valid records
decode to what was written, and each kind of bad record is rejected with a kind it can have."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import SchemaError, check_key, decode_interaction
from tests.strategies import Case, bad_records, valid_records

NOW = 1_800_000_000.0
EXAMPLES = int(os.environ.get("TIDE_FUZZ_EXAMPLES", "0")) * 20 or 300


def _outcome(case: Case) -> str | None:
    try:
        ev = decode_interaction(case.value, now=NOW)
        check_key(ev, case.key)
    except SchemaError as exc:
        return exc.kind
    return None


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_schema_error(raw):
    try:
        decode_interaction(raw, now=NOW)
    except SchemaError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(valid_records())
def test_valid_records_are_accepted_as_written(case):
    assert _outcome(case) is None
    ev = decode_interaction(case.value, now=NOW)
    obj = json.loads(case.value)
    assert ev.user_id == str(obj["user_id"]) and ev.item_id == str(obj["item_id"])
    assert ev.timestamp == float(obj["timestamp"]) and ev.event_type == obj["event_type"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(bad_records())
def test_bad_records_are_rejected_with_their_kind(case):
    assert case.kinds is not None and _outcome(case) in case.kinds, (case.label, _outcome(case))
