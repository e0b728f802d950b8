"""Compact binary encodings of user and item state (never JSON), each led by a format version byte.

User state, format 3 (little endian), column after column so that decoding is a few ``frombuffer``
calls rather than a loop over entries::

    u8 version | u8 n_decays | u16 dim | u16 n_hist | i32 partition | i64 offset | f64 last_t
    | u32 n_events | u16 n_profile
    | u8 len + model version (utf-8)
    | f32[dim] memory | f16[dim] slow summary
    | profile (n = n_profile, most recently used first):
      u32[n] event number of last use | u16[n] count | f32[n] last use as seconds before last_t
      | f32[n × n_decays] accumulators | u8[n] id lengths | the ids (utf-8), back to back
    | history (h = n_hist, most recent first):
      f32[h] seconds before last_t | u8[h] event type | u8[h] profile index (255: not in the
      profile, its id follows the history columns as u8 len + id)

Format 2 (the same fields, entry after entry) is still read. The profile (engine/profile.py) holds
the distinct items the user used recently.

The history ring stores item ids, not in-process row numbers, so state stays valid when its
partition moves to another worker.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ItemState", "StateFormatError", "UserState", "decode_catalog_entry", "decode_item", "decode_user",
    "encode_catalog_entry", "encode_item", "encode_user",
]

USER_FORMAT = 3
ITEM_FORMAT = 1
_USER_HEAD = struct.Struct("<BBHHiqdIH")
_HIST = struct.Struct("<fBB")
_PROF = struct.Struct("<IHf")
_ITEM_HEAD = struct.Struct("<BHdq")


class StateFormatError(ValueError):
    pass


@dataclass
class UserState:
    memory: np.ndarray  # [d] float32
    summary: np.ndarray  # [d] float32, slow-moving interest for drift detection
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
    prof_acc: list[list[float]] = field(default_factory=list)

    @classmethod
    def empty(cls, dim: int) -> UserState:
        return cls(np.zeros(dim, np.float32), np.zeros(dim, np.float32))


def _short(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise StateFormatError(f"id longer than 255 bytes: {s[:40]!r}…")
    return bytes([len(b)]) + b


def encode_user(s: UserState) -> bytes:
    dim = s.memory.shape[0]
    n_decays = len(s.prof_acc[0]) if s.prof_acc else 0
    ref = s.last_t  # times are stored as seconds before the user's last event
    m = len(s.prof_items)
    ids = [i.encode("utf-8") for i in s.prof_items]
    if any(len(i) > 255 for i in ids):
        raise StateFormatError(f"id longer than 255 bytes: {max(ids, key=len)[:40]!r}…")
    where = {item: k for k, item in enumerate(s.prof_items[:255])}
    hist_k = [where.get(item, 255) for item in s.hist_items]
    return b"".join([
        _USER_HEAD.pack(
            USER_FORMAT, n_decays, dim, len(s.hist_items), s.partition, s.offset, s.last_t, s.n_events,
            len(s.prof_items),
        ),
        _short(s.model_version),
        np.ascontiguousarray(s.memory, dtype="<f4").tobytes(),
        np.ascontiguousarray(s.summary, dtype="<f2").tobytes(),
        struct.pack(f"<{m}I{m}H{m}f{m * n_decays}f", *s.prof_last_n, *(min(c, 65535) for c in s.prof_count),
                    *(ref - t for t in s.prof_last_t), *(a for acc in s.prof_acc for a in acc)),
        bytes(len(i) for i in ids),
        *ids,
        struct.pack(f"<{len(s.hist_times)}f", *(ref - t for t in s.hist_times)),
        bytes(s.hist_types),
        bytes(hist_k),
        *(_short(item) for item, k in zip(s.hist_items, hist_k) if k == 255),
    ])


def decode_user(b: bytes) -> UserState:
    if not b or b[0] not in (2, USER_FORMAT):
        raise StateFormatError(f"unknown user state format {b[:1]!r}")
    _, n_decays, dim, n_hist, partition, offset, last_t, n_events, n_prof = _USER_HEAD.unpack_from(b, 0)
    pos = _USER_HEAD.size
    n = b[pos]
    model_version = b[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += 1 + n
    memory = np.frombuffer(b, "<f4", dim, pos).copy()
    pos += 4 * dim
    summary = np.frombuffer(b, "<f2", dim, pos).astype(np.float32)
    pos += 2 * dim
    st = UserState(memory, summary, last_t, partition, offset, model_version, n_events=n_events)
    if b[0] == 2:
        _decode_entries_v2(b, pos, st, n_decays, n_prof, n_hist)
        return st
    m = n_prof
    st.prof_last_n = np.frombuffer(b, "<u4", m, pos).tolist()
    pos += 4 * m
    st.prof_count = np.frombuffer(b, "<u2", m, pos).tolist()
    pos += 2 * m
    st.prof_last_t = (last_t - np.frombuffer(b, "<f4", m, pos).astype(np.float64)).tolist()
    pos += 4 * m
    st.prof_acc = np.frombuffer(b, "<f4", m * n_decays, pos).reshape(m, n_decays).tolist()
    pos += 4 * m * n_decays
    lengths = b[pos : pos + m]
    pos += m
    ids = st.prof_items
    for ln in lengths:
        ids.append(b[pos : pos + ln].decode("utf-8"))
        pos += ln
    h = n_hist
    st.hist_times = (last_t - np.frombuffer(b, "<f4", h, pos).astype(np.float64)).tolist()
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
    return st


def _decode_entries_v2(b: bytes, pos: int, st: UserState, n_decays: int, n_prof: int, n_hist: int) -> None:
    """Format 2's profile and history: entry after entry."""
    last_t = st.last_t
    acc_fmt = struct.Struct(f"<{n_decays}f")
    for _ in range(n_prof):
        ln, c, age = _PROF.unpack_from(b, pos)
        pos += _PROF.size
        acc = list(acc_fmt.unpack_from(b, pos))
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


def encode_item(s: ItemState) -> bytes:
    return _ITEM_HEAD.pack(ITEM_FORMAT, s.memory.shape[0], s.last_t, s.count) + np.ascontiguousarray(
        s.memory, dtype="<f4"
    ).tobytes()


def decode_item(b: bytes) -> ItemState:
    if not b or b[0] != ITEM_FORMAT:
        raise StateFormatError(f"unknown item state format {b[:1]!r}")
    _, dim, last_t, count = _ITEM_HEAD.unpack_from(b, 0)
    return ItemState(np.frombuffer(b, "<f4", dim, _ITEM_HEAD.size).copy(), last_t, count)


# Catalogue entry, format 1: u8 version | 8 bytes text digest | u16 text dim (0: no vector)
# | f16[text dim] | u16 len + title (utf-8) | u16 n_attributes | n × (u16 len + "key=value" (utf-8))
CATALOG_FORMAT = 1
_CAT_HEAD = struct.Struct("<B8sH")


def encode_catalog_entry(title: str, attributes: tuple[str, ...], digest: bytes, text_vec: np.ndarray | None) -> bytes:
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
