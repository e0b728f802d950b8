"""The shared item stage (streams/item_stage.py) on the real broker: two workers in one group send
their events' user side to one item stage, and both read its published state back.

After the stream quiesces, both workers' item tables (memories, times, counts, popularity,
transition rows) equal the item stage's own, every event was folded into the items once, and the
item stage published the vectors of every item the events touched.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.integration.conftest import (
    fresh_topics,
    produce_events,
    read_all,
    start_worker,
    synthetic_events,
    wait_for,
)

pytestmark = pytest.mark.integration


def _table(table) -> dict:  # type: ignore[no-untyped-def]
    ids = table.ids
    order = sorted(range(len(table)), key=lambda r: ids[r])
    return {
        "ids": [table.ids[r] for r in order],
        "memory": table.memory[torch.tensor(order)].cpu().numpy(),
        "count": table.count[order].copy(),
        "last_t": table.last_t[order].copy(),
        "trend": table.graph.trend[order].copy(),
        "out": {ids[j]: {ids[i]: c for i, c in row.items()} for j, row in table.graph.out.items() if row},
    }


def _same(a: dict, b: dict) -> bool:
    arrays = all(np.array_equal(a[k], b[k], equal_nan=True) for k in ("memory", "count", "last_t"))
    return a["ids"] == b["ids"] and arrays and np.allclose(a["trend"], b["trend"]) and a["out"] == b["out"]


def test_two_workers_share_one_item_stage_and_end_with_the_same_item_table(settings, capsys):
    s = fresh_topics(
        settings, "shared", partitions=4, item_stage="shared", online_learning=False, catalog_stage=False,
        session_timeout_ms=2000, batch_max_events=50,
    )
    workers = []
    for name in ("a", "b"):
        w = s.model_copy(update={"state_dir": s.state_dir.parent / f"state-{name}", "worker_id": name})
        workers.append(start_worker(w))
    try:
        for w, _ in workers:
            wait_for(w.ready.is_set, 60, "a worker never got partitions")
        events = synthetic_events(n_users=20, per_user=20)
        started = time.monotonic()
        produce_events(s, events)
        wait_for(lambda: sum(w.stats.folded for w, _ in workers) >= len(events), 60, "events not folded")
        runners = [w.item_stage for w, _ in workers]
        wait_for(lambda: sum(r.folded for r in runners) >= len(events), 60, "item updates not folded")
        owner = next(r for r in runners if r.owner.is_set())
        reference = _table(owner.stage.table)

        def settled() -> bool:
            for w, _ in workers:
                with w.engine.lock:
                    if not _same(_table(w.engine.items.table), reference):
                        return False
            return True

        wait_for(settled, 30, "the workers' item tables never matched the item stage's")
        settled_s = time.monotonic() - started
    finally:
        for w, t in workers:
            w.stop()
            t.join(30)
            w.engine.close()
    assert int(reference["count"].sum()) == len(events)  # every event once, on the item side too
    vectors = {m.key().decode() for m in read_all(s, s.topics.item_vectors, timeout_s=1.5)}
    assert vectors == {e.item_id for e in events}  # published by the item stage, its one writer
    with capsys.disabled():
        print(f"\n[shared items] {len(events)} events through 2 workers and one item stage: both item tables"
              f" equal the item stage's {settled_s:.1f} s after the first event was produced")
