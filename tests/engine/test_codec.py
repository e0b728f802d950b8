import numpy as np
import pytest

from engine.codec import (
    ItemState,
    StateFormatError,
    UserState,
    decode_item,
    decode_user,
    encode_item,
    encode_user,
)


def test_user_state_round_trip_and_size():
    s = UserState(
        memory=np.arange(64, dtype=np.float32),
        summary=np.ones(64, np.float32),
        last_t=1.5e9,
        partition=3,
        offset=12345,
        model_version="tide-20261123T000000-abcdef01",
        hist_items=[f"item-{k:06d}" for k in range(20)],
        hist_times=[float(k) for k in range(20)],
        hist_types=[k % 8 for k in range(20)],
    )
    raw = encode_user(s)
    back = decode_user(raw)
    assert np.array_equal(back.memory, s.memory) and np.array_equal(back.summary, s.summary)
    assert (back.last_t, back.partition, back.offset, back.model_version) == (s.last_t, 3, 12345, s.model_version)
    assert back.hist_items == s.hist_items and back.hist_times == s.hist_times and back.hist_types == s.hist_types
    assert len(raw) <= 2048  # width 64, a full 20-event history


def test_empty_user_state_round_trips():
    back = decode_user(encode_user(UserState.empty(8)))
    assert back.offset == -1 and np.isnan(back.last_t) and back.hist_items == []


def test_item_state_round_trip():
    s = ItemState(np.ones(4, np.float32), 2.0, 7)
    back = decode_item(encode_item(s))
    assert np.array_equal(back.memory, s.memory) and back.last_t == 2.0 and back.count == 7


def test_unknown_format_is_an_error():
    with pytest.raises(StateFormatError):
        decode_user(b"\x09rest")
