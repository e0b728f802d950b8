"""Binary user and item state: round trips, sizes, and older formats still read."""

import numpy as np
import pytest

from engine.fold.profile import update_profile
from engine.state.codec import (
    ItemState,
    StateFormatError,
    UserState,
    decode_item_state,
    decode_user,
    encode_item_state,
    encode_user,
)


def test_user_state_round_trip_and_size():
    s = UserState(
        memory=np.arange(64, dtype=np.float32),
        last_t=1.5e9 - 953,
        partition=3,
        offset=12345,
        model_version="tide-20261123T000000-abcdef01",
    )
    for k in range(48):  # a full profile of 48 distinct items, and the last 16 events in order
        t = 1.7e9 - 86_400 * 30 + 1000.123 * k  # epoch seconds with milliseconds, a month back
        update_profile(s, f"item-{k:06d}", t, 48)
        s.hist_items.insert(0, f"item-{k:06d}")
        s.hist_times.insert(0, t)
        s.hist_types.insert(0, k % 8)
    del s.hist_items[16:], s.hist_times[16:], s.hist_types[16:]
    s.hist_items[3] = "not-in-the-profile"
    raw = encode_user(s)
    back = decode_user(raw)
    assert np.array_equal(back.memory, s.memory)
    assert (back.last_t, back.partition, back.offset, back.model_version) == (
        s.last_t,
        3,
        12345,
        s.model_version,
    )
    # times round-trip exactly (a float32 at epoch seconds would be 128 s coarse)
    assert (
        back.hist_items == s.hist_items
        and back.hist_times == s.hist_times
        and back.hist_types == s.hist_types
    )
    assert back.prof_items == s.prof_items and back.prof_count == s.prof_count and back.n_events == 48
    assert back.prof_last_t == s.prof_last_t and np.allclose(back.prof_acc, s.prof_acc)
    assert encode_user(back) == raw
    assert len(raw) <= 2048, len(raw)  # width 64, 11-byte ids, a 16-event history and a full 48-item profile


def test_empty_user_state_round_trips():
    back = decode_user(encode_user(UserState.empty(8)))
    assert back.offset == -1 and np.isnan(back.last_t) and back.hist_items == []


def test_item_state_round_trip():
    s = ItemState(np.ones(4, np.float32), 2.0, 7)
    back = decode_item_state(encode_item_state(s))
    assert np.array_equal(back.memory, s.memory) and back.last_t == 2.0 and back.count == 7


def test_unknown_format_is_an_error():
    with pytest.raises(StateFormatError):
        decode_user(b"\x09rest")


def test_format_2_state_is_still_read():
    # A user state written by the previous format (entry after entry): a restart on the new
    # version must keep every user's state.
    raw = bytes.fromhex(
        "0202040003000000000007000000000000000000000000005940050000000200027631000000000000803f000000400000"
        "4040003c003c003c003c050000000200000000000000c03f3333f33f01610300000001000000a0410000803f0000803f01"
        "620000000000000000204101ff04676f6e650000a0410001"
    )
    st = decode_user(raw)
    assert st.memory.tolist() == [0.0, 1.0, 2.0, 3.0] and st.offset == 7 and st.model_version == "v1"
    assert (
        st.hist_items == ["a", "gone", "b"]
        and st.hist_times == [100.0, 90.0, 80.0]
        and st.hist_types == [0, 1, 0]
    )
    assert st.prof_items == ["a", "b"] and st.prof_last_n == [5, 3] and st.prof_count == [2, 1]
    assert st.prof_last_t == [100.0, 80.0] and np.allclose(st.prof_acc, [[1.5, 1.9], [1.0, 1.0]])
    again = decode_user(encode_user(st))  # and is written back in the current format
    assert (
        again.hist_items == st.hist_items
        and again.prof_items == st.prof_items
        and again.hist_times == st.hist_times
    )


def test_format_3_state_is_still_read():
    # format 3 stored times as float32 seconds before last_t: they come back as close as it kept them
    raw = bytes.fromhex(
        "03020400030001000000070000000000000000001059fc54d941050000000200027631000000000000803f00000040000040"
        "40003c003c003c003c050000000300000002000100000000000000a2410000c03f3333f33f0000803f0000803f0101616200"
        "00000000001c410000a24100010000ff0104676f6e65"
    )
    st = decode_user(raw)
    assert st.memory.tolist() == [0.0, 1.0, 2.0, 3.0] and (st.partition, st.offset) == (1, 7)
    assert st.last_t == 1.7e9 + 100.25 and st.hist_items == ["a", "gone", "b"] and st.hist_types == [0, 1, 0]
    assert st.hist_times == [1.7e9 + 100.25, 1.7e9 + 90.5, 1.7e9 + 80.0] and st.prof_items == ["a", "b"]
    assert st.prof_last_t == [1.7e9 + 100.25, 1.7e9 + 80.0] and st.prof_count == [2, 1] and st.n_events == 5
    assert decode_user(encode_user(st)).hist_times == st.hist_times
