"""``tide bench --workers 1,2``: the full worker as a fleet of processes in one consumer group.

For each fleet size n, on fresh topics with as many partitions as the largest fleet (the same for
every size, so that only the number of processes changes): start n worker processes, wait until
each has its partitions and the group has settled, produce the workload as fast as possible, and
time the fleet from the first event produced until it has folded every event. On a machine with c
cores the ratio of n workers to one is bounded by about min(n, c) (and the broker and the producer
share the cores).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.measure import _Child, _settings_kw
from streams.bench.options import BenchOptions
from streams.bench.workload import backlog_records

__all__ = ["SETTLE_S", "run_fleet"]

SETTLE_S = 5.0  # after every worker has partitions: the group's last rebalance completes


def _fleet_size(
    n: int, partitions: int, opts: BenchOptions, bootstrap: str, ckpt: Path, users: list[str],
    items: list[str],
) -> dict[str, Any]:
    from streams.admin import create_topics
    from streams.config import Settings
    from streams.replay import produce_paced
    from streams.topics import topic_specs

    tag = f"bench-fleet{n}-{uuid.uuid4().hex[:6]}"
    base = {**_settings_kw(tag, opts, bootstrap, ckpt), "partitions": partitions}
    settings = Settings(**base)
    create_topics(bootstrap, topic_specs(settings))
    children = [
        _Child.spawn("engine", {
            "settings": {**base, "state_dir": opts.workdir / tag / f"state-{k}", "worker_id": f"w{k}"},
            "events": len(users), "top_k": opts.top_k,
        })
        for k in range(n)
    ]
    try:
        for c in children:
            if not c.ready.wait(180):
                raise TimeoutError(f"worker {c.process.name} did not get partitions")
        time.sleep(SETTLE_S)
        records = backlog_records(users, items)
        t0 = time.perf_counter()
        topic = settings.topics.interactions
        produce_paced(settings.producer_conf(), topic, len(records), records.__getitem__, track=False)
        deadline = time.monotonic() + 900
        while sum(c.counter.value for c in children) < len(users) and time.monotonic() < deadline:
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        folded = sum(c.counter.value for c in children)
    finally:
        outs = [c.finish() for c in children]
    if folded < len(users):
        raise RuntimeError(f"{n} workers folded {folded} of {len(users)} events")
    out = {"workers": n, "partitions": partitions, "events": len(users), "seconds": seconds,
           "events_per_s": len(users) / seconds, "item_stage": opts.item_stage}
    stale = np.array([s for o in outs for s in o.get("item_staleness_s", [])])
    if len(stale):
        out["item_staleness_ms"] = {"p50": 1000 * float(np.quantile(stale, 0.5)),
                                    "p99": 1000 * float(np.quantile(stale, 0.99)), "n": len(stale)}
    return out


def run_fleet(
    sizes: list[int], opts: BenchOptions, bootstrap: str, ckpt: Path, users: list[str], items: list[str]
) -> dict[str, Any]:
    """Events/s of each fleet size, and each size's ratio to one worker (when 1 is among them)."""
    partitions = max(sizes)
    runs = [_fleet_size(n, partitions, opts, bootstrap, ckpt, users, items) for n in sizes]
    one = next((r["events_per_s"] for r in runs if r["workers"] == 1), None)
    if one:
        for r in runs:
            r["ratio_to_one"] = r["events_per_s"] / one
    return {"fleet": runs}
