"""Interaction logs from CSV: any file whose first three columns are user, item, timestamp."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas import EVENT_TYPES

__all__ = ["InteractionLog", "read_csv"]


@dataclass(frozen=True)
class InteractionLog:
    """A chronologically ordered log. ``users``/``items`` are string ids, ``ts`` seconds."""

    users: np.ndarray  # [E] object (str)
    items: np.ndarray  # [E] object (str)
    ts: np.ndarray  # [E] float64
    event_types: np.ndarray  # [E] int64 ids into schemas.EVENT_TYPES

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> InteractionLog:
        return InteractionLog(
            self.users[start:stop], self.items[start:stop], self.ts[start:stop], self.event_types[start:stop]
        )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_csv(path: str | Path, default_event_type: str = "view") -> InteractionLog:
    """Read ``user,item,timestamp[,event_type …]`` rows, with or without a header, sorted by time (stable).

    A fourth column is used as the event type only when its values are known event types (the
    Wikipedia log's fourth column is a ban label, not an event type).
    """
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    fourth: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for n, row in enumerate(reader):
            if not row or not row[0].strip():
                continue
            if n == 0 and not _is_number(row[2]):
                continue  # header
            if len(row) < 3:
                raise ValueError(f"{path}:{n + 1}: need at least 3 columns (user, item, timestamp)")
            users.append(row[0].strip())
            items.append(row[1].strip())
            ts.append(float(row[2]))
            fourth.append(row[3].strip() if len(row) > 3 else "")
    index = {name: i for i, name in enumerate(EVENT_TYPES)}
    default = index[default_event_type]
    use_fourth = bool(fourth) and all(v in index for v in fourth)
    et = np.array([index[v] for v in fourth] if use_fourth else [default] * len(ts), dtype=np.int64)
    t = np.asarray(ts, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return InteractionLog(
        np.asarray(users, dtype=object)[order], np.asarray(items, dtype=object)[order], t[order], et[order]
    )
