"""``tide bench``: the engine against the raw Kafka pipe and against itself with a no-op model.

For each mode, on fresh topics of the embedded broker (or a given cluster):

1. fill the input topic with the workload (events of a CSV log, or synthetic), as fast as possible;
2. start the mode in a process of its own (so its CPU time and peak RSS are its own) and let it
   drain that backlog: throughput is the median of the per-window rates (events folded per second);
3. produce at a fixed offered rate for a while, each event stamped with the wall clock: latency is
   the recommendation's Kafka timestamp minus the stamp of the event it answers.

Modes: ``raw_pipe`` (a plain confluent-kafka loop: consume, decode and validate, produce a
10-item recommendation per event), ``noop`` (the TIDE worker with a stage that emits a fixed
recommendation per user per batch: no state, no model), ``engine`` (the full worker).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import shutil
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = ["MODES", "BenchOptions", "median_window_rate", "print_table", "run_bench", "run_scaling", "topk_cost", "write_report"]

logger = logging.getLogger(__name__)

MODES = ("raw_pipe", "noop", "engine")
# The raw pipe and the no-op worker fold the workload this many times over: they run 4-7x faster
# than the engine, and with the same events their throughput phase lasted about a second, so one
# busy moment of a shared machine moved their median by half (31,000 against 68,000 events/s in
# two runs of the same code). Repeated, each mode's windows last about as long as the engine's.
BASELINE_REPEAT = 4


@dataclass
class BenchOptions:
    data: Path | None = None  # a CSV log; None = synthetic
    users: int = 10_000  # synthetic workload
    # > 0: this many users, each with a state written before the run (a full history and profile),
    # and every event's user drawn uniformly among them: the cost of state that does not fit caches
    active_users: int = 0
    items: int = 1_000
    events: int = 60_000  # throughput phase
    rate: float = 2_000.0  # latency phase, offered events/s
    latency_seconds: float = 15.0
    modes: Sequence[str] = MODES
    bootstrap: str | None = None  # None = start the embedded broker
    checkpoint: Path | None = None  # None = the full model with untrained weights (speed is the same)
    dim: int = 64
    batch_max_events: int = 2_000
    top_k: int = 10
    online_learning: bool = True
    device: str = "auto"
    workdir: Path = Path(".tide/bench")
    seed: int = 0


@dataclass
class ModeResult:
    events_per_s: float
    windows: list[float]
    p50_s: float
    p99_s: float
    p999_s: float
    cpu_s_per_1k_events: float
    peak_rss_bytes: int
    state_bytes_per_user: float | None
    n_latency: int
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "events_per_s": self.events_per_s,
            "p50_s": self.p50_s,
            "p99_s": self.p99_s,
            "p999_s": self.p999_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "state_bytes_per_user": self.state_bytes_per_user,
            "cpu_s_per_1k_events": self.cpu_s_per_1k_events,
            "windows_events_per_s": self.windows,
            "latency_samples": self.n_latency,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------- workload


def workload(opts: BenchOptions) -> tuple[list[str], list[str], list[str]]:
    """Users, items (as ids) of the throughput phase, and the catalogue."""
    if opts.data is not None:
        from engine.offline.data import read_csv

        log = read_csv(opts.data)
        n = min(opts.events, len(log))
        return [str(u) for u in log.users[:n]], [str(i) for i in log.items[:n]], sorted(set(map(str, log.items)))
    rng = np.random.default_rng(opts.seed)
    if opts.active_users:
        u = rng.integers(0, opts.active_users, opts.events)
        i = rng.integers(0, opts.items, opts.events)
        return [f"u{x}" for x in u], [f"i{x}" for x in i], [f"i{x}" for x in range(opts.items)]
    # Zipf-like activity and popularity, and users who return to their own items (as real logs do).
    u = np.minimum(rng.zipf(1.3, opts.events) - 1, opts.users - 1)
    own = (u * 7919 + rng.integers(0, 8, opts.events)) % opts.items
    popular = np.minimum(rng.zipf(1.2, opts.events) - 1, opts.items - 1)
    i = np.where(rng.random(opts.events) < 0.7, own, popular)
    return [f"u{x}" for x in u], [f"i{x}" for x in i], [f"i{x}" for x in range(opts.items)]


def _encode_events(users: list[str], items: list[str]) -> list[tuple[bytes, bytes]]:
    """The throughput phase's records (value, key): event times 10 ms apart, ending an hour before
    now, so that they are never taken for the latency phase's live stamps and both phases share one
    clock (the worker's expiry of idle users runs on event time)."""
    from schemas import Interaction

    t0 = time.time() - 3600 - 0.01 * len(users)
    return [
        (Interaction(u, i, t0 + 0.01 * k, "view").to_json(), u.encode("utf-8"))
        for k, (u, i) in enumerate(zip(users, items))
    ]


# ---------------------------------------------------------------------------------------------- the modes


def _raw_pipe(spec: dict[str, Any], counter: Any, ready: Any, stop: Any, timeline: list[tuple[float, int]]) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    from schemas import Recommendation, ScoredItem, SchemaError, SourceRef, decode_interaction
    from streams.config import Settings
    from streams.worker import next_batch

    settings = Settings(**spec["settings"])
    consumer = Consumer(settings.consumer_conf())
    producer = Producer(settings.producer_conf())
    topic_in, topic_out = settings.topics.interactions, settings.topics.recommendations
    items = [f"i{k}" for k in range(spec["top_k"])]
    consumer.subscribe([topic_in], on_assign=lambda c, p: ready.set())
    while not stop.is_set():
        msgs = next_batch(consumer, settings.batch_max_events, settings.poll_timeout_ms / 1000)
        if not msgs:
            continue
        n = 0
        for m in msgs:
            if m.error() is not None:
                continue
            try:
                ev = decode_interaction(m.value() or b"")
            except SchemaError:
                continue
            rec = Recommendation(
                ev.user_id, tuple(ScoredItem(i, 1.0, "raw") for i in items), "raw",
                SourceRef(topic_in, m.partition(), m.offset(), ev.timestamp, m.offset()), time.time(),
            )
            while True:
                try:
                    producer.produce(topic_out, rec.to_json(), m.key())
                    break
                except BufferError:
                    producer.poll(0.01)
            n += 1
        producer.poll(0)
        consumer.commit(asynchronous=True)
        with counter.get_lock():
            counter.value += n
        timeline.append((time.perf_counter(), counter.value))
    producer.flush(10)
    consumer.close()
    return {}


class _NoopStage:
    """The user stage's interface with no state and no model: one fixed recommendation per user
    per batch, so the worker around it (decode, produce, flush, commit) is all that is measured."""

    def __init__(self, model_version: str, input_topic: str, top_k: int) -> None:
        self.model_version = model_version
        self.input_topic = input_topic
        self.items = [f"i{k}" for k in range(top_k)]

    def fold(self, events: Sequence[Any], targets: Any = None, example_rate: float = 0.0) -> Any:
        import torch

        from engine.fold.users import FoldResult
        from engine.fold.items import ItemUpdates
        from schemas import Recommendation, ScoredItem, SourceRef

        last = {e.event.user_id: e for e in events}
        first: dict[str, int] = {}
        for e in events:
            first.setdefault(e.event.user_id, e.offset)
        now = time.time()
        recs = [
            Recommendation(
                u, tuple(ScoredItem(i, 1.0, "noop") for i in self.items), self.model_version,
                SourceRef(self.input_topic, e.partition, e.offset, e.event.timestamp, first[u]), now,
            )
            for u, e in last.items()
        ]
        z = np.zeros(0, np.int64)
        empty = ItemUpdates(z, z, torch.zeros(0, 1), np.zeros(0), z, np.zeros(0, np.float32), z, z)
        return FoldResult(recs, [e.arrival for e in last.values()], empty, {}, len(events), 0)

    def commit(self, result: Any, items: Any = None) -> None:
        pass


def _worker(
    spec: dict[str, Any], counter: Any, ready: Any, stop: Any, timeline: list[tuple[float, int]], noop: bool
) -> dict[str, Any]:
    from engine.hooks import NullHooks
    from streams.config import Settings
    from streams.runtime import load_engine
    from streams.worker import Worker

    settings = Settings(**spec["settings"])
    engine = load_engine(settings)
    if noop:
        engine.users = _NoopStage(engine.checkpoint.version, settings.topics.interactions, settings.top_k)  # type: ignore[assignment]
        engine.learner = None

    stages: dict[str, float] = {}  # the hot path's seconds per stage in the throughput phase

    class Counting(NullHooks):
        def on_batch(self, n_events: int, seconds: float) -> None:
            with counter.get_lock():
                counter.value += n_events
            timeline.append((time.perf_counter(), counter.value))

        def on_stages(self, seconds: Mapping[str, float]) -> None:
            if counter.value <= spec["events"]:
                for stage, sec in seconds.items():
                    stages[stage] = stages.get(stage, 0.0) + sec

    worker = Worker(settings, engine, Counting())
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    while not worker.ready.wait(0.1):
        if not thread.is_alive():
            raise RuntimeError("worker stopped during start-up")
    ready.set()
    stop.wait()
    worker.stop()
    thread.join(30)
    out: dict[str, Any] = {"device": str(engine.device), "stage_seconds": stages}
    if engine.learner is not None:  # learning in the background must keep up, not silently lag
        out["online"] = {"steps": engine.learner.steps, "examples_waiting": engine.learner.examples_waiting}
    if not noop:
        n_users, n_bytes = 0, 0
        for p in range(settings.partitions):
            for k, v in engine.store.partition(f"users-{p}").items():
                n_users += 1
                n_bytes += len(k) + len(v)
        out["state_bytes_per_user"] = n_bytes / max(n_users, 1)
        out["users_in_state"] = n_users
    engine.close()
    return out


def _peak_rss_bytes() -> int:
    """Peak resident set of this process since it started. Linux keeps ``ru_maxrss`` across fork and
    exec (a child would report its parent's peak), so read the address space's own high-water mark."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(mode: str, spec: dict[str, Any], counter: Any, ready: Any, stop: Any, marks: Any, results: Any) -> None:
    """One mode in its own process; ``marks`` receives (name, cpu seconds) on request."""
    logging.basicConfig(level=logging.WARNING)
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # noqa: E731
    timeline: list[tuple[float, int]] = []  # (time, events done) after each batch

    def watch() -> None:  # CPU seconds at the start and the end of the throughput phase
        ready.wait()
        timeline.insert(0, (time.perf_counter(), 0))
        marks.put(("start", cpu()))
        while counter.value < spec["events"] and not stop.is_set():
            time.sleep(0.005)
        marks.put(("end", cpu()))

    threading.Thread(target=watch, daemon=True).start()
    try:
        if mode == "raw_pipe":
            out = _raw_pipe(spec, counter, ready, stop, timeline)
        else:
            out = _worker(spec, counter, ready, stop, timeline, noop=mode == "noop")
        out["peak_rss_bytes"] = _peak_rss_bytes()
        out["timeline"] = [(t, c) for t, c in timeline if c <= spec["events"]]
        results.put(out)
    except BaseException as exc:  # report, never hang the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


# ---------------------------------------------------------------------------------------------- the parent


class _OutputReader:
    """Reads a mode's output topic; keeps (Kafka timestamp − source event stamp) of live events."""

    def __init__(self, conf: dict[str, Any], topic: str) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(conf)
        self._consumer.subscribe([topic])
        self.latencies: list[float] = []
        self.live_from = float("inf")  # events stamped from this time on are the latency phase's
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._consumer.consume(1000, 0.1):
                if m.error() is not None:
                    continue
                self.count += 1
                t_event = orjson.loads(m.value() or b"{}").get("source", {}).get("event_time", 0.0)
                if t_event >= self.live_from:
                    self.latencies.append(m.timestamp()[1] / 1000 - t_event)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _produce(conf: dict[str, Any], topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Produce ``records`` (value, key) as fast as possible; returns events/s."""
    from confluent_kafka import Producer

    p = Producer(conf)
    t0 = time.perf_counter()
    for value, key in records:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)
    return len(records) / (time.perf_counter() - t0)


def _produce_live(conf: dict[str, Any], topic: str, users: list[str], items: list[str], rate: float, seconds: float) -> int:
    """Produce at ``rate`` events/s for ``seconds``, each event stamped with the wall clock."""
    from confluent_kafka import Producer

    from schemas import Interaction

    p = Producer(conf)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.002))
        u, i = users[k % len(users)], items[k % len(items)]
        p.produce(topic, Interaction(u, i, time.time(), "view").to_json(), u.encode("utf-8"))
        if k % 200 == 0:
            p.poll(0)
    p.flush(60)
    return n


def median_window_rate(timeline: Sequence[tuple[float, int]], n_windows: int = 5) -> tuple[float, list[float]]:
    """Events/s in ``n_windows`` equal time windows of the throughput phase, and their median.
    ``timeline``: (time, events done) from the start (count 0) to the last batch of the phase; the
    count inside a window is interpolated linearly between batch completions."""
    t = np.array([p[0] for p in timeline])
    c = np.array([p[1] for p in timeline], np.float64)
    if len(t) < 2 or t[-1] <= t[0]:
        return float("nan"), []
    edges = np.linspace(t[0], t[-1], n_windows + 1)
    done = np.interp(edges, t, c)
    rates = np.diff(done) / np.diff(edges)
    return float(np.median(rates)), [round(float(r), 1) for r in rates]


def _write_users(state_dir: Path, n_users: int, catalogue: list[str], dim: int, profile_items: int = 48) -> None:
    """``n_users`` users u0…u{n-1} in partition 0's state, each with a full history and profile (256
    different ones in turn: users who all share one last item would make it a hub whose transitions
    reach the whole catalogue)."""
    from engine.state.codec import UserState, encode_user
    from engine.fold.context import HISTORY, apply_event
    from engine.fold.users import user_partition_name
    from engine.state.store import RocksDBStateStore, new_transaction

    rng = np.random.default_rng(1)
    values = []
    for _ in range(256):
        st = UserState.empty(dim)
        st.memory = rng.standard_normal(dim).astype(np.float32)
        for k in range(max(profile_items, HISTORY)):
            apply_event(
                st,
                catalogue[int(rng.integers(0, len(catalogue)))],
                time.time() - 86_400 + k,
                0,
                profile_items,
            )
        st.partition, st.offset = 0, -1
        values.append(encode_user(st))
    store = RocksDBStateStore(state_dir)
    part = store.partition(user_partition_name(0))
    for lo in range(0, n_users, 50_000):
        tx = new_transaction()
        for u in range(lo, min(n_users, lo + 50_000)):
            tx.put(f"u{u}".encode(), values[u % len(values)])
        part.write(tx)
    store.close()


def _run_mode(mode: str, opts: BenchOptions, bootstrap: str, ckpt: Path, users: list[str], items: list[str]) -> ModeResult:
    from streams.broker import create_topics
    from streams.config import Settings, Topics
    from streams.topics import topic_specs

    tag = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    state_dir = opts.workdir / tag / "state"
    settings_kw: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": tag,
        "topics": Topics(**{name: f"{tag}.{name}" for name in Topics.model_fields}),
        "state_dir": state_dir,
        "checkpoint": ckpt,
        "batch_max_events": opts.batch_max_events,
        "top_k": opts.top_k,
        "online_learning": opts.online_learning,
        "device": opts.device,
    }
    settings = Settings(**settings_kw)
    if opts.active_users and mode != "raw_pipe":
        _write_users(state_dir, opts.active_users, sorted(set(items)), opts.dim)
    create_topics(bootstrap, topic_specs(settings))
    topic = settings.topics.interactions
    produce_rate = _produce(settings.producer_conf(), topic, _encode_events(users, items))

    ctx = mp.get_context("spawn")
    counter, ready, stop = ctx.Value("q", 0), ctx.Event(), ctx.Event()
    marks, results = ctx.Queue(), ctx.Queue()
    spec = {"settings": settings_kw, "events": len(users), "top_k": opts.top_k}
    proc = ctx.Process(target=_child, args=(mode, spec, counter, ready, stop, marks, results), name=f"tide-{mode}")
    proc.start()
    reader = _OutputReader(settings.consumer_conf(f"{tag}-reader"), settings.topics.recommendations)
    try:
        if not ready.wait(180):
            raise TimeoutError(f"{mode} did not start")
        deadline = time.monotonic() + 900
        while counter.value < len(users) and time.monotonic() < deadline and proc.is_alive():
            time.sleep(0.05)
        if counter.value < len(users):
            raise RuntimeError(f"{mode} folded {counter.value} of {len(users)} events")
        cpu = dict(marks.get(timeout=30) for _ in range(2))
        # latency phase: the same users and items, at the offered rate
        before = counter.value
        reader.live_from = time.time()
        n_live = _produce_live(settings.producer_conf(), topic, users, items, opts.rate, opts.latency_seconds)
        deadline = time.monotonic() + 120
        while counter.value < before + n_live and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the last recommendations reach the reader
    finally:
        stop.set()
        out = results.get(timeout=120) if proc.is_alive() or not results.empty() else {"error": "exited"}
        proc.join(60)
        reader.stop()
    if "error" in out:
        raise RuntimeError(f"{mode}: {out['error']}")
    rate, windows = median_window_rate(out["timeline"])
    lat = np.asarray(reader.latencies)
    q = np.quantile(lat, [0.5, 0.99, 0.999]) if len(lat) else [float("nan")] * 3
    shutil.rmtree(opts.workdir / tag, ignore_errors=True)
    return ModeResult(
        events_per_s=rate,
        windows=windows,
        p50_s=float(q[0]),
        p99_s=float(q[1]),
        p999_s=float(q[2]),
        cpu_s_per_1k_events=1000 * (cpu["end"] - cpu["start"]) / len(users),
        peak_rss_bytes=int(out["peak_rss_bytes"]),
        state_bytes_per_user=out.get("state_bytes_per_user"),
        n_latency=len(lat),
        extra={
            "producer_events_per_s": produce_rate,
            **{k: v for k, v in out.items() if k in ("device", "users_in_state", "online")},
            # where the worker's wall time went while it drained the backlog: ms per 1,000 events
            **({"profile_ms_per_1k_events": {
                k: 1e6 * v / len(users) for k, v in sorted(out["stage_seconds"].items(), key=lambda kv: -kv[1])
            }} if out.get("stage_seconds") else {}),
        },
    )


def _machine() -> dict[str, Any]:
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
    source = str(opts.data) if opts.data else f"synthetic ({opts.users:,} users, {opts.items:,} items)"
    print(f"[bench] {len(users):,} events from {source}; offered rate {opts.rate:,.0f}/s for {opts.latency_seconds:.0f} s", flush=True)
    broker = None if opts.bootstrap else EmbeddedBroker()
    results: dict[str, ModeResult] = {}
    try:
        if broker is not None:
            broker.start()
        bootstrap = opts.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
        for mode in opts.modes:
            reps = 1 if mode == "engine" else BASELINE_REPEAT
            print(f"[bench] {mode} ({reps * len(users):,} events) …", flush=True)
            results[mode] = _run_mode(mode, opts, bootstrap, ckpt, users * reps, items * reps)
            r = results[mode]
            print(f"[bench] {mode}: {r.events_per_s:,.0f} events/s, p99 {1000 * r.p99_s:.1f} ms", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    report: dict[str, Any] = {name: r.public() for name, r in results.items()}
    eng = results.get("engine")
    if eng is not None:
        for base in ("raw_pipe", "noop"):
            if base in results:
                report[f"ratio_to_{base}"] = eng.events_per_s / results[base].events_per_s
    report["machine"] = _machine()
    report["workload"] = {
        "source": source, "events": len(users), "baseline_events": BASELINE_REPEAT * len(users),
        "catalogue": len(catalogue), "offered_rate": opts.rate,
        "latency_seconds": opts.latency_seconds, "batch_max_events": opts.batch_max_events, "top_k": opts.top_k,
        "dim": opts.dim, "online_learning": opts.online_learning, "checkpoint": str(ckpt),
    }
    return report


def print_table(report: dict[str, Any]) -> None:
    rows = [(m, report[m]) for m in MODES if m in report]
    print(f"\n{'mode':<10} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'CPU s/1k ev':>12} {'peak RSS MiB':>13} {'state B/user':>13}")
    for name, r in rows:
        state = f"{r['state_bytes_per_user']:,.0f}" if r.get("state_bytes_per_user") is not None else "—"
        print(
            f"{name:<10} {r['events_per_s']:>10,.0f} {1000 * r['p50_s']:>8.1f} {1000 * r['p99_s']:>8.1f} "
            f"{1000 * r['p999_s']:>9.1f} {r['cpu_s_per_1k_events']:>12.3f} {r['peak_rss_bytes'] / 2**20:>13.0f} {state:>13}"
        )
    for base in ("raw_pipe", "noop"):
        if f"ratio_to_{base}" in report:
            print(f"engine / {base}: {report[f'ratio_to_{base}']:.3f}")
    profile = report.get("engine", {}).get("profile_ms_per_1k_events")
    if profile:
        total = sum(profile.values())
        print(f"\nengine, backlog phase: where a worker's wall time goes ({total:,.0f} ms per 1,000 events)")
        for stage, ms in profile.items():
            print(f"  {stage:<28} {ms:>8.1f} ms  {100 * ms / total:>5.1f}%")
    online = report.get("engine", {}).get("online")
    if online:
        print(
            f"online learning: {online['steps']:,} updates applied, "
            f"{online['examples_waiting']:,} examples waiting at the end"
        )
    for t in report.get("topk", []):
        print(f"exact top-{t['k']} of {t['items']:,} items for {t['users']} users (d={t['dim']}, {t['device']}): {1000 * t['median_s']:.1f} ms")
    m = report["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu_affinity']} usable), {m.get('gpu', 'no GPU')}, torch {m['torch']}")


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


# ---------------------------------------------------------------------------------------------- top-k and scaling


def topk_cost(n_items: int, users: int = 256, dim: int = 64, k: int = 10, device: str = "auto", repeats: int = 7) -> dict[str, Any]:
    """Median seconds of exact top-``k`` for ``users`` queries over ``n_items`` item vectors (the
    scoring matmul plus the top-k), on the engine's device."""
    import torch

    from streams.runtime import pick_device

    dev = pick_device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    items = torch.randn(n_items, dim, generator=g).to(dev)
    q = torch.randn(users, dim, generator=g).to(dev)

    def once() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.topk(q @ items.T, k, dim=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    once()  # warm-up
    times = [once() for _ in range(repeats)]
    return {"items": n_items, "users": users, "dim": dim, "k": k, "device": str(dev), "median_s": float(np.median(times))}


SCALING_GRID: dict[str, list[int]] = {
    "items": [1_000, 100_000, 1_000_000],
    "batch_max_events": [250, 500, 1_000, 2_000],
    "dim": [32, 64, 128],
    "active_users": [10_000, 1_000_000],
}


def run_scaling(opts: BenchOptions, png: Path) -> dict[str, Any]:
    """The engine alone at each point of :data:`SCALING_GRID`, one knob at a time from ``opts``; a PNG
    of throughput and p99 latency against each knob."""
    from dataclasses import replace

    curves: dict[str, list[dict[str, Any]]] = {}
    for knob, values in SCALING_GRID.items():
        curves[knob] = []
        for v in values:
            point = replace(opts, modes=("engine",), data=None, checkpoint=None, **{knob: v})
            print(f"[scaling] {knob} = {v:,}", flush=True)
            r = run_bench(point)["engine"]
            curves[knob].append({"value": v, **{k: r[k] for k in ("events_per_s", "p50_s", "p99_s", "peak_rss_bytes")}})
            print(f"[scaling] {knob} = {v:,}: {r['events_per_s']:,.0f} events/s, p99 {1000 * r['p99_s']:.0f} ms", flush=True)
    _plot_scaling(curves, png, opts)
    return {"curves": curves, "machine": _machine(), "base": {"events": opts.events, "rate": opts.rate, "users": opts.users}}


def _plot_scaling(curves: dict[str, list[dict[str, Any]]], png: Path, opts: BenchOptions) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"active_users": "active users (state written before)", "items": "catalogue size (items)", "batch_max_events": "micro-batch (events)", "dim": "embedding width"}
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    for ax, (knob, pts) in zip(np.atleast_1d(axes), curves.items()):
        x = [p["value"] for p in pts]
        ax.plot(x, [p["events_per_s"] for p in pts], "o-", color="tab:blue", label="events/s")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:,}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(labels.get(knob, knob))
        ax.set_ylabel("events/s (backlog)", color="tab:blue")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        p99 = [1000 * p["p99_s"] for p in pts]
        ax2.plot(x, p99, "s--", color="tab:red", label="p99")
        ax2.set_ylabel(f"p99 ms at {opts.rate:,.0f} events/s offered", color="tab:red")
        if max(p99) > 20 * min(p99):  # past capacity the queue grows: show both regimes
            ax2.set_yscale("log")
        else:
            ax2.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle("TIDE engine, one worker: throughput and latency against each knob (others at defaults)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
