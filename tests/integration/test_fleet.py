"""The fleet's shared parts on the real broker: two workers in one group send their events' user side
to one item stage (streams/item_stage.py) and their examples to one learner (streams/learner.py).

After the stream quiesces, both workers' item tables (memories, times, counts, popularity,
transition rows) equal the item stage's own, every event was folded into the items once, and the
item stage published the vectors of every item the events touched. Both workers serve the learner's
last version, with its parameters, and name it in their recommendations; a worker started
afterwards begins at that version.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from tests.integration.conftest import (
    drain,
    fresh_topics,
    produce_events,
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


def test_two_workers_share_one_item_stage_and_one_learner(settings, capsys):
    s = fresh_topics(
        settings, "fleet", partitions=3, item_stage="shared", learner="fleet", online_learning=True,
        online_example_rate=1.0, online_examples_per_step=20, catalog_stage=False, session_timeout_ms=2000,
        batch_max_events=50,
    )

    def worker(name: str):  # type: ignore[no-untyped-def]
        own = {"state_dir": s.state_dir.parent / f"state-{name}", "worker_id": name}
        return start_worker(s.model_copy(update=own))

    workers = [worker("a"), worker("b")]
    late = None
    try:
        for w, _ in workers:
            wait_for(w.ready.is_set, 60, "a worker never got partitions")
        events = synthetic_events(n_users=20, per_user=20)  # 400 examples: 20 steps
        started = time.monotonic()
        produce_events(s, events)
        wait_for(lambda: sum(w.stats.folded for w, _ in workers) >= len(events), 60, "events not folded")

        # --- one item stage: every worker's item table is the item stage's
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
        assert int(reference["count"].sum()) == len(events)  # every event once, on the item side too
        touched = {e.item_id for e in events}  # their vectors: published by the item stage, its one writer
        drain(s, s.topics.item_vectors, lambda ms: {m.key().decode() for m in ms} == touched, timeout_s=30)

        # --- one learner: every worker serves its last version
        learners = [w.fleet_learner for w, _ in workers]
        wait_for(lambda: sum(x.learner.steps for x in learners) >= 10, 60, "the learner took no steps")
        active = max(learners, key=lambda x: x.learner.steps)
        wait_for(lambda: active.published_steps == active.learner.steps, 30, "the last steps not published")
        version = active.version
        wait_for(lambda: all(w.engine.users.model_version == version for w, _ in workers), 30,
                 "the workers did not switch to the published version")
        switched_s = max(w.model_switched_at for w, _ in workers) - active.published_at
        trained = dict(active.learner.trained_parameters)
        for w, _ in workers:
            with w.engine.lock:
                params = dict(w.engine.users.model.named_parameters())
                assert all(torch.equal(params[n], p) for n, p in trained.items())

        def named(ms: list) -> bool:
            return any(json.loads(m.value())["model_version"] == version for m in ms if m.value())

        produce_events(s, synthetic_events(n_users=3, per_user=1, t0=time.time() - 60))
        assert named(drain(s, s.topics.recommendations, named))

        late = worker("c")  # starts after the version was published: serves it from the start
        wait_for(late[0].ready.is_set, 60, "the late worker never got partitions")
        assert late[0].engine.users.model_version == version
    finally:
        for w, t in workers + ([late] if late else []):
            w.stop()
            t.join(30)
            w.engine.close()
    with capsys.disabled():
        print(f"\n[fleet] {len(events)} events through 2 workers: both item tables equal the item stage's"
              f" {settled_s:.1f} s after the first event was produced; {active.learner.steps} learner steps,"
              f" both workers served {version} {switched_s:.2f} s after it was published, a late worker from"
              " its start")
