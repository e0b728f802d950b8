"""The bench's modes, each run in a process of its own (so its CPU time and peak RSS are its own).

``raw_pipe``: a plain confluent-kafka loop (consume, decode and validate, produce a fixed
recommendation per event); ``noop``: the TIDE worker with a pipeline that has no state and no model
(``engine.pipeline.NoopPipeline``); ``engine``: the full worker. :func:`child` is the process's entry
point: it reports the mode's figures on ``results`` (with a timeline of events folded and
recommendations emitted) and CPU-time marks of the throughput phase on ``marks``.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.hooks import NullHooks

__all__ = ["child"]

Timeline = list[tuple[float, int, int]]  # (time, events done, recommendations emitted) after each batch


def _raw_pipe(
    spec: dict[str, Any], counter: Any, ready: Any, stop: Any, timeline: Timeline
) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    from schemas import Recommendation, SchemaError, ScoredItem, SourceRef, decode_interaction
    from streams.config import Settings
    from streams.worker import IDLE_WAIT_S, next_batch

    settings = Settings(**spec["settings"])
    consumer = Consumer(settings.consumer_conf())
    producer = Producer(settings.producer_conf())
    topic_in, topic_out = settings.topics.interactions, settings.topics.recommendations
    items = [f"i{k}" for k in range(spec["top_k"])]
    consumer.subscribe([topic_in], on_assign=lambda c, p: ready.set())
    while not stop.is_set():
        msgs = next_batch(consumer, settings.batch_max_events, IDLE_WAIT_S)
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
                ev.user_id,
                tuple(ScoredItem(i, 1.0, "raw") for i in items),
                "raw",
                SourceRef(topic_in, m.partition(), m.offset(), ev.timestamp, m.offset()),
                time.time(),
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
        timeline.append((time.perf_counter(), counter.value, counter.value))  # one recommendation per event
    producer.flush(10)
    consumer.close()
    return {}


class _Counting(NullHooks):
    """Counts folded events into the shared ``counter`` and the timeline, and the recommendations
    emitted into the timeline, and adds up the hot path's seconds per stage while the throughput phase
    lasts."""

    def __init__(self, counter: Any, timeline: Timeline, events: int) -> None:
        self.counter, self.timeline, self.events = counter, timeline, events
        self.recommendations = 0
        self.stages: dict[str, float] = {}
        self.item_staleness_s: list[float] = []

    def on_item_staleness(self, seconds: float) -> None:
        self.item_staleness_s.append(seconds)

    def on_batch(self, n_events: int, seconds: float) -> None:
        with self.counter.get_lock():
            self.counter.value += n_events
        self.timeline.append((time.perf_counter(), self.counter.value, self.recommendations))

    def on_recommendations(self, n: int, latencies_s: Sequence[float]) -> None:
        # the worker reports a batch's recommendations just after the batch: count them at its point
        self.recommendations += n
        if self.timeline:
            t, done, _ = self.timeline[-1]
            self.timeline[-1] = (t, done, self.recommendations)

    def on_stages(self, seconds: Mapping[str, float]) -> None:
        if self.counter.value <= self.events:
            for stage, sec in seconds.items():
                self.stages[stage] = self.stages.get(stage, 0.0) + sec


def _worker(
    spec: dict[str, Any], counter: Any, ready: Any, stop: Any, timeline: Timeline, noop: bool
) -> dict[str, Any]:
    from engine.pipeline import NoopPipeline
    from streams.config import Settings
    from streams.runtime import load_engine
    from streams.worker import Worker

    settings = Settings(**spec["settings"])
    engine = load_engine(settings)
    noop_pipeline = NoopPipeline(engine.checkpoint.version, settings.topics.interactions, settings.top_k)
    hooks = _Counting(counter, timeline, spec["events"])
    worker = Worker(settings, engine, hooks, pipeline=noop_pipeline if noop else None)
    thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
    thread.start()
    while not worker.ready.wait(0.1):
        if not thread.is_alive():
            raise RuntimeError("worker stopped during start-up")
    ready.set()
    stop.wait()
    worker.stop()
    thread.join(30)
    out: dict[str, Any] = {
        "device": str(engine.device), "stage_seconds": hooks.stages,
        "item_staleness_s": hooks.item_staleness_s,
    }
    if engine.learner is not None and not noop:  # learning in the background must keep up, not silently lag
        out["online"] = {"steps": engine.learner.steps, "examples_waiting": engine.learner.examples_waiting}
    if not noop:
        out |= _state_size(engine, settings.partitions)
    engine.close()
    return out


def _state_size(engine: Any, partitions: int) -> dict[str, Any]:
    """Users in the engine's state and their mean size in bytes (keys and values)."""
    n_users, n_bytes = 0, 0
    for p in range(partitions):
        for k, v in engine.store.partition(f"users-{p}").items():
            n_users += 1
            n_bytes += len(k) + len(v)
    return {"state_bytes_per_user": n_bytes / max(n_users, 1), "users_in_state": n_users}


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


def _cpu_s() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])


def child(
    mode: str, spec: dict[str, Any], counter: Any, ready: Any, stop: Any, marks: Any, results: Any
) -> None:
    """One mode in its own process; ``marks`` receives (name, cpu seconds) on request."""
    from streams.memory import tune_allocator

    tune_allocator()  # as `tide worker` does
    logging.basicConfig(level=logging.WARNING)
    timeline: Timeline = []

    def watch() -> None:  # CPU seconds at the start and the end of the throughput phase
        ready.wait()
        timeline.insert(0, (time.perf_counter(), 0, 0))
        marks.put(("start", _cpu_s()))
        while counter.value < spec["events"] and not stop.is_set():
            time.sleep(0.005)
        marks.put(("end", _cpu_s()))

    threading.Thread(target=watch, daemon=True).start()
    try:
        if mode == "raw_pipe":
            out = _raw_pipe(spec, counter, ready, stop, timeline)
        else:
            out = _worker(spec, counter, ready, stop, timeline, noop=mode == "noop")
        out["peak_rss_bytes"] = _peak_rss_bytes()
        out["timeline"] = [(t, c, r) for t, c, r in timeline if c <= spec["events"]]
        results.put(out)
    except BaseException as exc:  # report, never hang the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        raise
