"""``tide bench --scaling``: the engine alone over a grid of knobs, one knob at a time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from streams.bench.options import BenchOptions
from streams.bench.report import plot_scaling
from streams.bench.run import machine, run_bench

__all__ = ["SCALING_GRID", "run_scaling"]

SCALING_GRID: dict[str, list[int]] = {
    "items": [1_000, 10_000, 100_000, 1_000_000],
    "batch_max_events": [250, 500, 1_000, 2_000],
    "dim": [32, 64, 128],
    "active_users": [10_000, 100_000, 1_000_000],
}


def run_scaling(opts: BenchOptions, png: Path) -> dict[str, Any]:
    """The engine alone at each point of :data:`SCALING_GRID`, one knob at a time from ``opts``; a PNG
    of throughput (events and recommendations per second) and p99 latency against each knob."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for knob, values in SCALING_GRID.items():
        curves[knob] = []
        for v in values:
            at: dict[str, Any] = {knob: v}
            point = replace(opts, modes=("engine",), data=None, checkpoint=None, **at)
            print(f"[scaling] {knob} = {v:,}", flush=True)
            r = run_bench(point)["engine"]
            keep = ("events_per_s", "recommendations_per_s", "p50_s", "p99_s", "peak_rss_bytes")
            curves[knob].append({"value": v, **{k: r[k] for k in keep}})
            figures = (
                f"{r['events_per_s']:,.0f} events/s, {r['recommendations_per_s']:,.0f} recommendations/s, "
                f"p99 {1000 * r['p99_s']:.0f} ms"
            )
            print(f"[scaling] {knob} = {v:,}: {figures}", flush=True)
    plot_scaling(curves, png, opts.rate)
    base = {
        "events": opts.events, "rate": opts.rate, "users": opts.users,
        "popularity": opts.popularity or "default mix", "user_pattern": opts.user_pattern,
        "zipf": opts.zipf if opts.popularity == "zipf" else None, "new_items": opts.new_items,
    }
    return {"curves": curves, "machine": machine(), "base": base}
