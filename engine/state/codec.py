"""Compact binary encodings of user and item state (never JSON), each led by a format version byte.

User state, format 4 (little endian), column after column so that decoding is a few ``frombuffer``
calls rather than a loop over entries::

    u8 version | u8 n_decays | u16 dim | u16 n_hist | i32 partition | i64 offset | f64 last_t
    | u32 n_events | u16 n_profile
    | u8 len + model version (utf-8)
    | f32[dim] memory
    | profile (n = n_profile, most recently used first):
      u16[n] events since the last use (saturating) | u16[n] count | f64[n] time of the last use
      | f32[n × n_decays] accumulators | u8[n] id lengths | the ids (utf-8), back to back
    | history (h = n_hist, most recent first):
      f64[h] event time | u8[h] event type | u8[h] profile index (255: not in the profile, its id
      follows the history columns as u8 len + id)

Times are the events' own float64 seconds and round-trip exactly (a float32 is 128 s coarse at epoch
seconds). The events since an entry's last use saturate at 65,535: every profile decay
(engine/fold/profile.py) has reached exactly 0.0 long before, so the saturated value scores and
updates the same. Formats 3 (times as float32 seconds before ``last_t``, the event number of the last
use as u32, a float16 interest summary) and 2 (the same, entry after entry) are still read. The
profile holds the distinct items the user used recently.

The history ring stores item ids, not in-process row numbers, so state stays valid when its
partition moves to another worker. ``last_t`` and the source (partition, offset) sit at fixed
offsets (:func:`user_last_t`, :func:`user_source`), so an expiry sweep or a changelog restore reads
them without decoding the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, chain, repeat

import numpy as np

__all__ = [
    "ItemState", "StateFormatError", "UserState", "decode_catalog_entry", "decode_item_state", "decode_user",
    "decode_item_updates", "encode_catalog_entry", "encode_item_state", "encode_item_update", "encode_user",
    "user_last_t", "user_source",
]

USER_FORMAT = 4
ITEM_FORMAT = 1
_USER_HEAD = struct.Struct("<BBHHiqdIH")
_LAST_T = struct.Struct("<d")
_LAST_T_AT = 18  # offset of last_t in the header of every user format
_SOURCE = struct.Struct("<iq")
_SOURCE_AT = 6  # offset of (partition, offset) in the header of every user format
_HIST = struct.Struct("<fBB")
_PROF = struct.Struct("<IHf")
_ITEM_HEAD = struct.Struct("<BHdq")
_AGO_MAX = 65_535


class StateFormatError(ValueError):
    pass


@dataclass(slots=True)
class UserState:
    memory: np.ndarray  # [d] float32
    last_t: float = float("nan")
    partition: int = -1
    offset: int = -1  # last applied input offset on ``partition``
    model_version: str = ""
    hist_items: list[str] = field(default_factory=list)  # most recent first
    hist_times: list[float] = field(default_factory=list)
    hist_types: list[int] = field(default_factory=list)
    n_events: int = 0
    prof_items: list[str] = field(default_factory=list)  # most recently used first
    prof_last_n: list[int] = field(default_factory=list)
    prof_count: list[int] = field(default_factory=list)
    prof_last_t: list[float] = field(default_factory=list)
    prof_acc: list[Sequence[float]] = field(default_factory=list)  # decoded and updated as tuples

    @classmethod
    def empty(cls, dim: int) -> UserState:
        return cls(np.zeros(dim, np.float32))


def _short(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise StateFormatError(f"id longer than 255 bytes: {s[:40]!r}…")
    return bytes([len(b)]) + b


@lru_cache(maxsize=None)
def _profile_columns(m: int, n_decays: int) -> struct.Struct:
    """Format 4's profile columns of ``m`` entries, id lengths included (one pack or unpack call)."""
    return struct.Struct(f"<{m}H{m}H{m}d{m * n_decays}f{m}B")


@lru_cache(maxsize=None)
def _history_columns(h: int) -> struct.Struct:
    """Format 4's history columns of ``h`` events: times, event types, profile indices."""
    return struct.Struct(f"<{h}d{h}B{h}B")


def encode_user(s: UserState) -> bytes:
    dim = s.memory.shape[0]
    n_decays = len(s.prof_acc[0]) if s.prof_acc else 0
    items = s.prof_items
    m = len(items)
    blob = "".join(items).encode("utf-8")
    if len(blob) == sum(map(len, items)):  # ASCII ids: a character is a byte
        lengths = list(map(len, items))
        ids = [blob]
    else:
        ids = [i.encode("utf-8") for i in items]
        lengths = list(map(len, ids))
    if m and max(lengths) > 255:
        long = items[lengths.index(max(lengths))]
        raise StateFormatError(f"id longer than 255 bytes: {long.encode('utf-8')[:40]!r}…")
    where = dict(zip(items[:255], range(255)))  # a repeated id maps to its last position
    hist_k = list(map(where.get, s.hist_items, repeat(255)))
    n = s.n_events
    ago = [n - k for k in s.prof_last_n]
    if m and max(ago) > _AGO_MAX:
        ago = [min(a, _AGO_MAX) for a in ago]
    count = s.prof_count
    if m and max(count) > 65535:
        count = [min(c, 65535) for c in count]
    h = len(s.hist_times)
    return b"".join([
        _USER_HEAD.pack(
            USER_FORMAT, n_decays, dim, len(s.hist_items), s.partition, s.offset, s.last_t, s.n_events, m,
        ),
        _short(s.model_version),
        np.ascontiguousarray(s.memory, dtype="<f4").tobytes(),
        _profile_columns(m, n_decays).pack(*ago, *count, *s.prof_last_t, *chain.from_iterable(s.prof_acc),
                                           *lengths),
        *ids,
        _history_columns(h).pack(*s.hist_times, *s.hist_types, *hist_k)
        if len(s.hist_types) == h == len(hist_k) else _history_fallback(s.hist_times, s.hist_types, hist_k),
        *(_short(item) for item, k in zip(s.hist_items, hist_k) if k == 255),
    ])


def _history_fallback(times: list[float], types: list[int], hist_k: list[int]) -> bytes:
    """The history's columns when its lists differ in length (as the entry-wise writer wrote them)."""
    return struct.pack(f"<{len(times)}d", *times) + bytes(types) + bytes(hist_k)


def user_last_t(b: bytes) -> float:
    """The time of the user's last event, read from an encoded state without decoding the rest."""
    if not b or b[0] not in (2, 3, USER_FORMAT):
        raise StateFormatError(f"unknown user state format {b[:1]!r}")
    return float(_LAST_T.unpack_from(b, _LAST_T_AT)[0])


def user_source(b: bytes) -> tuple[int, int]:
    """The input (partition, offset) of the last event folded into an encoded state, read without
    decoding the rest."""
    if not b or b[0] not in (2, 3, USER_FORMAT):
        raise StateFormatError(f"unknown user state format {b[:1]!r}")
    partition, offset = _SOURCE.unpack_from(b, _SOURCE_AT)
    return int(partition), int(offset)


def decode_user(b: bytes) -> UserState:
    if not b or b[0] not in (2, 3, USER_FORMAT):
        raise StateFormatError(f"unknown user state format {b[:1]!r}")
    version = b[0]
    _, n_decays, dim, n_hist, partition, offset, last_t, n_events, n_prof = _USER_HEAD.unpack_from(b, 0)
    pos = _USER_HEAD.size
    n = b[pos]
    model_version = b[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += 1 + n
    memory = np.frombuffer(b, "<f4", dim, pos).copy()
    pos += 4 * dim
    if version < 4:
        pos += 2 * dim  # formats 2 and 3 carry a float16 interest summary here; nothing reads it
    st = UserState(memory, last_t, partition, offset, model_version, n_events=n_events)
    if version == 2:
        _decode_entries_v2(b, pos, st, n_decays, n_prof, n_hist)
    elif version == 3:
        _decode_columns_v3(b, pos, st, n_decays, n_prof, n_hist)
    else:
        _decode_columns(b, pos, st, n_decays, n_prof, n_hist)
    return st


def _decode_columns(b: bytes, pos: int, st: UserState, n_decays: int, m: int, h: int) -> None:
    """Format 4's profile and history: one unpack per group of columns, ids sliced from one string."""
    cols = _profile_columns(m, n_decays)
    v = cols.unpack_from(b, pos)
    pos += cols.size
    n = st.n_events
    st.prof_last_n = [n - a for a in v[:m]]
    st.prof_count = list(v[m : 2 * m])
    st.prof_last_t = list(v[2 * m : 3 * m])
    end = 3 * m + m * n_decays
    st.prof_acc = list(zip(*(iter(v[3 * m : end]),) * n_decays)) if n_decays else [()] * m
    lengths = v[end:]
    ends = list(accumulate(lengths))
    size = ends[-1] if m else 0
    blob = b[pos : pos + size]
    pos += size
    if blob.isascii():  # a character is a byte: slice the decoded string
        text = blob.decode("ascii")
        ids = [text[a:e] for a, e in zip([0, *ends[:-1]], ends)]
    else:
        ids = [blob[e - ln : e].decode("utf-8") for ln, e in zip(lengths, ends)]
    st.prof_items = ids
    hc = _history_columns(h)
    hv = hc.unpack_from(b, pos)
    pos += hc.size
    st.hist_times = list(hv[:h])
    st.hist_types = list(hv[h : 2 * h])
    hist_k = hv[2 * h :]
    if 255 not in hist_k:
        st.hist_items = list(map(ids.__getitem__, hist_k))
        return
    items = st.hist_items
    for k in hist_k:
        if k == 255:  # not in the profile: its id follows
            ln = b[pos]
            items.append(b[pos + 1 : pos + 1 + ln].decode("utf-8"))
            pos += 1 + ln
        else:
            items.append(ids[k])


def _decode_columns_v3(b: bytes, pos: int, st: UserState, n_decays: int, m: int, h: int) -> None:
    """Format 3's profile and history: times as float32 seconds before ``last_t``."""
    last_t = st.last_t
    st.prof_last_n = np.frombuffer(b, "<u4", m, pos).tolist()
    pos += 4 * m
    st.prof_count = np.frombuffer(b, "<u2", m, pos).tolist()
    pos += 2 * m
    st.prof_last_t = _times(b, m, pos, last_t)
    pos += 4 * m
    st.prof_acc = list(map(tuple, np.frombuffer(b, "<f4", m * n_decays, pos).reshape(m, n_decays).tolist()))
    pos += 4 * m * n_decays
    lengths = b[pos : pos + m]
    pos += m
    ids = st.prof_items
    for ln in lengths:
        ids.append(b[pos : pos + ln].decode("utf-8"))
        pos += ln
    st.hist_times = _times(b, h, pos, last_t)
    pos += 4 * h
    st.hist_types = list(b[pos : pos + h])
    pos += h
    hist_k = b[pos : pos + h]
    pos += h
    for k in hist_k:
        if k == 255:  # not in the profile: its id follows
            ln = b[pos]
            st.hist_items.append(b[pos + 1 : pos + 1 + ln].decode("utf-8"))
            pos += 1 + ln
        else:
            st.hist_items.append(ids[k])


def _times(b: bytes, n: int, pos: int, last_t: float) -> list[float]:
    """Format 3's ``n`` times at ``pos``: float32 seconds before ``last_t``."""
    return (last_t - np.frombuffer(b, "<f4", n, pos).astype(np.float64)).tolist()


def _decode_entries_v2(b: bytes, pos: int, st: UserState, n_decays: int, n_prof: int, n_hist: int) -> None:
    """Format 2's profile and history: entry after entry."""
    last_t = st.last_t
    acc_fmt = struct.Struct(f"<{n_decays}f")
    for _ in range(n_prof):
        ln, c, age = _PROF.unpack_from(b, pos)
        pos += _PROF.size
        acc = acc_fmt.unpack_from(b, pos)
        pos += acc_fmt.size
        n = b[pos]
        st.prof_items.append(b[pos + 1 : pos + 1 + n].decode("utf-8"))
        pos += 1 + n
        st.prof_last_n.append(ln)
        st.prof_count.append(c)
        st.prof_acc.append(acc)
        st.prof_last_t.append(last_t - age)
    for _ in range(n_hist):
        age, e, k = _HIST.unpack_from(b, pos)
        pos += _HIST.size
        if k == 255:
            n = b[pos]
            st.hist_items.append(b[pos + 1 : pos + 1 + n].decode("utf-8"))
            pos += 1 + n
        else:
            st.hist_items.append(st.prof_items[k])
        st.hist_times.append(last_t - age)
        st.hist_types.append(e)


@dataclass
class ItemState:
    memory: np.ndarray  # [d] float32
    last_t: float = float("nan")
    count: int = 0


def encode_item_state(s: ItemState) -> bytes:
    return _ITEM_HEAD.pack(ITEM_FORMAT, s.memory.shape[0], s.last_t, s.count) + np.ascontiguousarray(
        s.memory, dtype="<f4"
    ).tobytes()


def decode_item_state(b: bytes) -> ItemState:
    if not b or b[0] != ITEM_FORMAT:
        raise StateFormatError(f"unknown item state format {b[:1]!r}")
    _, dim, last_t, count = _ITEM_HEAD.unpack_from(b, 0)
    return ItemState(np.frombuffer(b, "<f4", dim, _ITEM_HEAD.size).copy(), last_t, count)


# Item update (one event's user side, for the item stage), format 1: u8 version | u16 dim | i32 source
# partition | i64 source offset | f64 time | u8 event type | f32 weight | u8 len + item id | u8 len +
# previous item id (0: none) | f32[dim] the user's memory just before the event
ITEM_UPDATE_FORMAT = 1
_UPDATE_HEAD = struct.Struct("<BHiqdBf")


def encode_item_update(
    item: str, prev: str | None, user_vec: np.ndarray, t: float, event_type: int, weight: float,
    partition: int, offset: int,
) -> bytes:
    return b"".join([
        _UPDATE_HEAD.pack(ITEM_UPDATE_FORMAT, user_vec.shape[0], partition, offset, t, event_type, weight),
        _short(item), _short(prev) if prev is not None else b"\x00",
        np.ascontiguousarray(user_vec, dtype="<f4").tobytes(),
    ])


def decode_item_updates(values: list[bytes]) -> tuple[list[str], list[str | None], np.ndarray, np.ndarray]:
    """Item updates as (items, previous items, user vectors ``[B, d]``, columns ``[B, 5]``: partition,
    offset, time, event type, weight)."""
    items: list[str] = []
    prevs: list[str | None] = []
    vecs, cols = [], []
    for b in values:
        if not b or b[0] != ITEM_UPDATE_FORMAT:
            raise StateFormatError(f"unknown item update format {b[:1]!r}")
        _, dim, partition, offset, t, etype, weight = _UPDATE_HEAD.unpack_from(b, 0)
        pos = _UPDATE_HEAD.size
        n = b[pos]
        items.append(b[pos + 1 : pos + 1 + n].decode("utf-8"))
        pos += 1 + n
        n = b[pos]
        prevs.append(b[pos + 1 : pos + 1 + n].decode("utf-8") if n else None)
        pos += 1 + n
        vecs.append(np.frombuffer(b, "<f4", dim, pos))
        cols.append((partition, offset, t, etype, weight))
    return items, prevs, np.array(vecs, np.float32).reshape(len(values), -1), np.array(cols, np.float64)


# Catalogue entry, format 1: u8 version | 8 bytes text digest | u16 text dim (0: no vector)
# | f16[text dim] | u16 len + title (utf-8) | u16 n_attributes | n × (u16 len + "key=value" (utf-8))
CATALOG_FORMAT = 1
_CAT_HEAD = struct.Struct("<B8sH")


def encode_catalog_entry(
    title: str, attributes: tuple[str, ...], digest: bytes, text_vec: np.ndarray | None
) -> bytes:
    vec = b"" if text_vec is None else np.ascontiguousarray(text_vec, dtype="<f2").tobytes()
    def text(s: str) -> bytes:
        b = s.encode("utf-8")[:65535]
        return struct.pack("<H", len(b)) + b

    attrs = attributes[:65535]
    head = _CAT_HEAD.pack(CATALOG_FORMAT, digest, 0 if text_vec is None else text_vec.shape[0])
    return b"".join([head, vec, text(title), struct.pack("<H", len(attrs)), *map(text, attrs)])


def decode_catalog_entry(b: bytes) -> tuple[str, tuple[str, ...], bytes, np.ndarray | None]:
    """``(title, attributes, digest, text vector or None)``."""
    if not b or b[0] != CATALOG_FORMAT:
        raise StateFormatError(f"unknown catalogue entry format {b[:1]!r}")
    _, digest, dim = _CAT_HEAD.unpack_from(b, 0)
    pos = _CAT_HEAD.size
    vec = np.frombuffer(b, "<f2", dim, pos).astype(np.float32) if dim else None
    pos += 2 * dim

    def text() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<H", b, pos)
        s = b[pos + 2 : pos + 2 + n].decode("utf-8", errors="replace")
        pos += 2 + n
        return s

    title = text()
    (n_attr,) = struct.unpack_from("<H", b, pos)
    pos += 2
    return title, tuple(text() for _ in range(n_attr)), digest, vec
