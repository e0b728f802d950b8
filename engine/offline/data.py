"""Interaction logs from CSV (any file whose first three columns are user, item, timestamp), and item
catalogues from JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas import EVENT_TYPES
from schemas.records import MAX_ID_BYTES, Item, SchemaError, decode_item

__all__ = ["InteractionLog", "read_catalog", "read_csv"]


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


_CATALOG_COLUMNS = ("item_id", "title", "text", "attributes")


def read_catalog(path: str | Path) -> list[Item]:
    """Read an item catalogue: JSON lines (``.jsonl``/``.json``) or CSV with a header (``.csv``).

    A JSON line is an object with ``item_id`` (string or integer), ``title``, optional ``text`` and
    ``attributes``, validated as a ``tide.items`` value. A CSV has columns ``item_id``, ``title``,
    optional ``text`` and optional ``attributes`` (a JSON object); every other column is an attribute
    too (it wins over the same key in ``attributes``), with empty cells skipped and ``a|b`` read as
    ``["a", "b"]``. As on the compacted ``tide.items`` topic, a later row with the same ``item_id``
    replaces an earlier one and takes its position. A row without ``item_id`` or title raises
    ``ValueError`` naming the file and line.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _catalog_jsonl(path)
    elif suffix == ".csv":
        rows = _catalog_csv(path)
    else:
        raise ValueError(f"{path}: unknown catalogue format {suffix!r} (expected .jsonl, .json or .csv)")
    latest: dict[str, Item] = {}
    for item in rows:
        latest.pop(item.item_id, None)
        latest[item.item_id] = item
    return list(latest.values())


def _catalog_jsonl(path: str | Path) -> list[Item]:
    items: list[Item] = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = decode_item(line.encode("utf-8"))
            except SchemaError as exc:
                raise ValueError(f"{path}:{n}: {exc}") from None
            if not item.title.strip():
                raise ValueError(f"{path}:{n}: 'title' is empty")
            items.append(item)
    return items


def _catalog_csv(path: str | Path) -> list[Item]:
    items: list[Item] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or ()]
        missing = [c for c in ("item_id", "title") if c not in header]
        if missing:
            raise ValueError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        reader.fieldnames = header
        extra = [h for h in header if h not in _CATALOG_COLUMNS and h]
        for row in reader:
            n = reader.line_num  # last physical line of the record: a quoted cell may span lines
            if None in row:
                raise ValueError(f"{path}:{n}: more cells than header columns")
            cells = {k: (v or "").strip() for k, v in row.items()}
            if not any(cells.values()):
                continue
            item_id, title = cells["item_id"], cells["title"]
            if not item_id or not title:
                raise ValueError(f"{path}:{n}: {'item_id' if not item_id else 'title'} is empty")
            if len(item_id.encode("utf-8")) > MAX_ID_BYTES:
                raise ValueError(f"{path}:{n}: 'item_id' is longer than {MAX_ID_BYTES} bytes of UTF-8")
            attributes: dict[str, Any] = {}
            if cells.get("attributes"):
                try:
                    obj = json.loads(cells["attributes"])
                except ValueError:
                    raise ValueError(f"{path}:{n}: 'attributes' is not JSON") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}:{n}: 'attributes' must be a JSON object")
                attributes.update(obj)
            for key in extra:
                value = cells[key]
                if value:
                    attributes[key] = (
                        [p.strip() for p in value.split("|") if p.strip()] if "|" in value else value
                    )
            items.append(
                Item(item_id=item_id, title=title, text=cells.get("text", ""), attributes=attributes)
            )
    return items
