"""One mode's run, from the parent's side: fresh topics, the backlog produced, the mode's process
started and timed while it drains the backlog, then a paced latency phase read off the
recommendations topic."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.bench.modes import child
from streams.bench.options import BenchOptions, ModeResult
from streams.bench.workload import NEW_ITEM_PREFIX, backlog_records, live_records, write_users

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.reader import RecommendationReader

__all__ = ["median_window_rate", "run_mode"]


def median_window_rate(
    timeline: Sequence[tuple[float, int]], n_windows: int = 5
) -> tuple[float, list[float]]:
    """Events/s in ``n_windows`` equal time windows of the throughput phase, and their median.
    ``timeline``: (time, events done) from the start (count 0) to the last batch of the phase; the
    count inside a window is interpolated linearly between batch completions. Any other count (such as
    recommendations emitted) in place of events gives its rate the same way."""
    t = np.array([p[0] for p in timeline])
    c = np.array([p[1] for p in timeline], np.float64)
    if len(t) < 2 or t[-1] <= t[0]:
        return float("nan"), []
    edges = np.linspace(t[0], t[-1], n_windows + 1)
    done = np.interp(edges, t, c)
    rates = np.diff(done) / np.diff(edges)
    return float(np.median(rates)), [round(float(r), 1) for r in rates]


@dataclass
class _Child:
    """A mode's process and what it shares with the parent (see :func:`streams.bench.modes.child`)."""

    mode: str
    process: Any
    counter: Any  # events folded so far
    ready: Any
    stop: Any
    marks: Any
    results: Any

    @classmethod
    def spawn(cls, mode: str, spec: dict[str, Any]) -> _Child:
        ctx = mp.get_context("spawn")
        counter, ready, stop = ctx.Value("q", 0), ctx.Event(), ctx.Event()
        marks, results = ctx.Queue(), ctx.Queue()
        args = (mode, spec, counter, ready, stop, marks, results)
        proc = ctx.Process(target=child, args=args, name=f"tide-{mode}")
        proc.start()
        return cls(mode, proc, counter, ready, stop, marks, results)

    def finish(self) -> dict[str, Any]:
        """Stop the mode and return what it reported."""
        self.stop.set()
        alive = self.process.is_alive() or not self.results.empty()
        out = self.results.get(timeout=120) if alive else {"error": "exited"}
        self.process.join(60)
        return out


def _settings_kw(tag: str, opts: BenchOptions, bootstrap: str, ckpt: Path) -> dict[str, Any]:
    """The mode's settings (as keywords, to rebuild them in its process): topics, group and state
    of its own."""
    from streams.config import Topics

    return {
        "bootstrap_servers": bootstrap,
        "group_id": tag,
        "topics": Topics(**{name: f"{tag}.{name}" for name in Topics.model_fields}),
        "state_dir": opts.workdir / tag / "state",
        "checkpoint": ckpt,
        "batch_max_events": opts.batch_max_events,
        "top_k": opts.top_k,
        "online_learning": opts.online_learning,
        "device": opts.device,
        "item_stage": opts.item_stage,
    }


def run_mode(
    mode: str, opts: BenchOptions, bootstrap: str, ckpt: Path, users: list[str], items: list[str]
) -> ModeResult:
    from streams.admin import create_topics
    from streams.config import Settings
    from streams.reader import RecommendationReader
    from streams.replay import produce_paced
    from streams.topics import topic_specs

    tag = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    settings_kw = _settings_kw(tag, opts, bootstrap, ckpt)
    settings = Settings(**settings_kw)
    if opts.active_users and mode != "raw_pipe":  # profiles of catalogue items only: new ones come later
        known = sorted(i for i in set(items) if not (opts.new_items and i.startswith(NEW_ITEM_PREFIX)))
        write_users(settings.state_dir, opts.active_users, known, opts.dim)
    create_topics(bootstrap, topic_specs(settings))
    records = backlog_records(users, items)
    topic = settings.topics.interactions
    backlog = produce_paced(settings.producer_conf(), topic, len(records), records.__getitem__, track=False)

    proc = _Child.spawn(mode, {"settings": settings_kw, "events": len(users), "top_k": opts.top_k})
    reader = RecommendationReader(settings, f"{tag}-reader", keep_records=False)
    reader.start()
    try:
        cpu = _phases(proc, opts, settings, reader, users, items)
    finally:
        out = proc.finish()
        reader.stop()
    if "error" in out:
        raise RuntimeError(f"{mode}: {out['error']}")
    shutil.rmtree(opts.workdir / tag, ignore_errors=True)
    return _result(out, np.asarray(reader.latencies), cpu, len(users), backlog.events_per_s)


def _phases(
    proc: _Child,
    opts: BenchOptions,
    settings: Settings,
    reader: RecommendationReader,
    users: list[str],
    items: list[str],
) -> dict[str, float]:
    """Wait for the mode to drain the backlog (the throughput phase), then run the latency phase: the
    same users and items at the offered rate. Returns the CPU-time marks of the throughput phase."""
    from streams.replay import produce_paced

    if not proc.ready.wait(180):
        raise TimeoutError(f"{proc.mode} did not start")
    deadline = time.monotonic() + 900
    while proc.counter.value < len(users) and time.monotonic() < deadline and proc.process.is_alive():
        time.sleep(0.05)
    if proc.counter.value < len(users):
        raise RuntimeError(f"{proc.mode} folded {proc.counter.value} of {len(users)} events")
    cpu = dict(proc.marks.get(timeout=30) for _ in range(2))
    before = proc.counter.value
    reader.live_from = time.time()
    n_live = int(opts.rate * opts.latency_seconds)
    conf, topic = settings.producer_conf(), settings.topics.interactions
    live = produce_paced(conf, topic, n_live, live_records(users, items), rate=opts.rate, track=False)
    deadline = time.monotonic() + 120
    while proc.counter.value < before + live.n and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the last recommendations reach the reader
    return cpu


def _result(
    out: dict[str, Any], lat: np.ndarray, cpu: dict[str, float], n_events: int, produce_rate: float
) -> ModeResult:
    """The mode's figures: what its process reported, the latencies read, its CPU marks."""
    rate, windows = median_window_rate([(t, c) for t, c, _ in out["timeline"]])
    rec_rate, rec_windows = median_window_rate([(t, r) for t, _, r in out["timeline"]])
    q = np.quantile(lat, [0.5, 0.99, 0.999]) if len(lat) else [float("nan")] * 3
    extra: dict[str, Any] = {
        "producer_events_per_s": produce_rate,
        **{k: v for k, v in out.items() if k in ("device", "users_in_state", "online")},
    }
    if out.get("stage_seconds"):  # where the worker's wall time went while it drained the backlog
        by_cost = sorted(out["stage_seconds"].items(), key=lambda kv: -kv[1])
        extra["profile_ms_per_1k_events"] = {k: 1e6 * v / n_events for k, v in by_cost}
    return ModeResult(
        events_per_s=rate,
        windows=windows,
        recommendations_per_s=rec_rate,
        recommendation_windows=rec_windows,
        recommendations=int(out["timeline"][-1][2]) if out["timeline"] else 0,
        p50_s=float(q[0]),
        p99_s=float(q[1]),
        p999_s=float(q[2]),
        cpu_s_per_1k_events=1000 * (cpu["end"] - cpu["start"]) / n_events,
        peak_rss_bytes=int(out["peak_rss_bytes"]),
        state_bytes_per_user=out.get("state_bytes_per_user"),
        n_latency=len(lat),
        extra=extra,
    )
