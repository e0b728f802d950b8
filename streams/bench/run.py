"""``tide bench``'s run: the workload and a checkpoint, a broker, each mode in turn, and the report
(every mode's figures, the engine's ratios to the baselines, the machine and the workload)."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from streams.bench.measure import run_mode
from streams.bench.options import BASELINE_REPEAT, BenchOptions, ModeResult
from streams.bench.workload import workload

__all__ = ["machine", "run_bench", "run_fleet_bench"]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    m: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name(0)
    return m


def _checkpoint(opts: BenchOptions, catalogue: list[str]) -> Path:
    """``opts.checkpoint``, or the full model with untrained weights over ``catalogue``."""
    if opts.checkpoint is not None:
        return opts.checkpoint
    import torch

    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel

    torch.manual_seed(opts.seed)
    model = InterestModel(InterestConfig(n_items=len(catalogue), dim=opts.dim))
    return save_checkpoint(opts.workdir / "checkpoints", model, catalogue, {"bench": "untrained weights"})


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    from streams.broker import EmbeddedBroker

    shutil.rmtree(opts.workdir, ignore_errors=True)
    opts.workdir.mkdir(parents=True)
    users, items, catalogue = workload(opts)
    ckpt = _checkpoint(opts, catalogue)
    source = _source(opts)
    print(
        f"[bench] {len(users):,} events from {source}; "
        f"offered rate {opts.rate:,.0f}/s for {opts.latency_seconds:.0f} s",
        flush=True,
    )
    broker = None if opts.bootstrap else EmbeddedBroker()
    results: dict[str, ModeResult] = {}
    try:
        if broker is not None:
            broker.start()
        bootstrap = opts.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
        for mode in opts.modes:
            reps = 1 if mode == "engine" else BASELINE_REPEAT
            print(f"[bench] {mode} ({reps * len(users):,} events) …", flush=True)
            results[mode] = r = run_mode(mode, opts, bootstrap, ckpt, users * reps, items * reps)
            print(
                f"[bench] {mode}: {r.events_per_s:,.0f} events/s, "
                f"{r.recommendations_per_s:,.0f} recommendations/s, p99 {1000 * r.p99_s:.1f} ms",
                flush=True,
            )
    finally:
        if broker is not None:
            broker.stop()
    synthetic = _synthetic(opts, items, catalogue)
    return _report(results, opts, source, len(users), len(catalogue), ckpt, synthetic)


def run_fleet_bench(opts: BenchOptions, sizes: list[int]) -> dict[str, Any]:
    """The full worker as fleets of ``sizes`` processes (streams/bench/fleet.py), on one workload."""
    from streams.bench.fleet import run_fleet
    from streams.bench.restore import RESTORE_USERS, restore_cost
    from streams.broker import EmbeddedBroker

    shutil.rmtree(opts.workdir, ignore_errors=True)
    opts.workdir.mkdir(parents=True)
    users, items, catalogue = workload(opts)
    ckpt = _checkpoint(opts, catalogue)
    broker = None if opts.bootstrap else EmbeddedBroker()
    try:
        if broker is not None:
            broker.start()
        bootstrap = opts.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
        report = run_fleet(sizes, opts, bootstrap, ckpt, users, items)
        report["restore"] = restore_cost(bootstrap, RESTORE_USERS)
    finally:
        if broker is not None:
            broker.stop()
    source = _source(opts)
    report["machine"] = machine()
    report["workload"] = {"source": source, "events": len(users), "catalogue": len(catalogue),
                          "batch_max_events": opts.batch_max_events, "online_learning": opts.online_learning,
                          **_synthetic(opts, items, catalogue)}
    return report


def _source(opts: BenchOptions) -> str:
    """The workload in words: the CSV log, or the synthetic workload's population and shape."""
    if opts.data is not None:
        return str(opts.data)
    who = f"{opts.active_users:,} active users" if opts.active_users else f"{opts.users:,} users"
    shape = [] if opts.popularity is None else [f"{opts.popularity} popularity"]
    if opts.popularity == "zipf":
        shape[-1] += f" s={opts.zipf:g}"
    if opts.user_pattern != "uniform":
        shape.append(f"{opts.user_pattern} users")
    if opts.new_items:
        shape.append(f"{opts.new_items:.0%} of events to new items")
    return f"synthetic ({who}, {opts.items:,} items{''.join(', ' + x for x in shape)})"


def _synthetic(opts: BenchOptions, items: list[str], catalogue: list[str]) -> dict[str, Any]:
    """The synthetic workload's knobs, and how many items its events add to the catalogue."""
    if opts.data is not None:
        return {}
    known = set(catalogue)
    return {
        "users": opts.active_users or opts.users,
        "active_users": opts.active_users,
        "popularity": opts.popularity or "default mix",
        "zipf": opts.zipf if opts.popularity == "zipf" else None,
        "user_pattern": opts.user_pattern,
        "new_items_share": opts.new_items,
        "new_items": len({i for i in items if i not in known}),
    }


def _report(
    results: dict[str, ModeResult],
    opts: BenchOptions,
    source: str,
    n_events: int,
    n_items: int,
    ckpt: Path,
    synthetic: dict[str, Any],
) -> dict[str, Any]:
    report: dict[str, Any] = {name: r.public() for name, r in results.items()}
    eng = results.get("engine")
    if eng is not None:
        for base in ("raw_pipe", "noop"):
            if base in results:
                report[f"ratio_to_{base}"] = eng.events_per_s / results[base].events_per_s
    report["machine"] = machine()
    report["workload"] = {
        "source": source,
        "events": n_events,
        "baseline_events": BASELINE_REPEAT * n_events,
        "catalogue": n_items,
        "offered_rate": opts.rate,
        "latency_seconds": opts.latency_seconds,
        "batch_max_events": opts.batch_max_events,
        "top_k": opts.top_k,
        "dim": opts.dim,
        "online_learning": opts.online_learning,
        "checkpoint": str(ckpt),
        **synthetic,
    }
    return report
