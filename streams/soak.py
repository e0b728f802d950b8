"""``tide soak``: one worker at a fixed offered load, with a growing user population, for a long while.

Whether memory stays bounded is what this answers. New users keep appearing and each event's user
is drawn among the most recent ones, so older users go idle; with ``TIDE_USER_TTL_S`` the worker
should expire them and its memory and state should level off instead of growing with every user
ever seen.

1. start the embedded broker (or use a given cluster) and create fresh topics (one partition);
2. write a checkpoint with untrained weights (speed and memory are the same as a trained one);
3. start a worker process (``tide worker``) and wait until it has its partition;
4. produce at the offered rate in a thread, each event stamped with the wall clock, and read the
   recommendations in another (latency: the recommendation's Kafka timestamp − the event's stamp);
5. every ``sample_s`` seconds record the worker's RSS, its state (RocksDB estimate and files on
   disk), consumer lag, events folded, users expired and the latency since the previous sample;
6. stop everything and return a report; :func:`print_soak` and :func:`plot_soak` show it.

The embedded broker (in-memory Tansu) works harder the more record batches its partitions hold: with
one event per batch at 300 events/s it used a whole core after half a minute, and with ten batches
a second after twelve minutes, and then stopped serving consumers. The producer therefore sends the
events due in each half second as one batch (each stamped when it is sent, so the wait is not in the
measured latency), which the worker answers with about one batch of recommendations each; a real
Kafka (``bootstrap``) has no such limit. The samples carry the embedded broker's CPU, and
:func:`print_soak` warns when it was saturated.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.soak_report import cpu_pct, fmt_mib, fmt_ms, fmt_num, parse_metrics, rss_slope

if TYPE_CHECKING:
    from streams.config import Topics
    from streams.reader import RecommendationReader

__all__ = ["SoakOptions", "run_soak"]

logger = logging.getLogger(__name__)

_TICK_S = 0.5  # the producer sends the events due in each tick together (see _Producer)


@dataclass
class SoakOptions:
    minutes: float = 30.0
    rate: float = 300.0  # offered events/s
    # The population grows: this many never-seen users appear per second (0 = a fixed population of
    # ``active_users`` users).
    new_users_per_s: float = 20.0
    active_users: int = 2_000  # each event's user is drawn among the most recent this many users
    user_ttl_s: float = 300.0  # TIDE_USER_TTL_S of the worker: idle users expire after this (event time)
    items: int = 1_000  # catalogue size (ids i0…i{n-1}); Zipf-like popularity
    sample_s: float = 10.0
    top_k: int = 10
    bootstrap: str | None = None  # None = start the embedded broker
    workdir: Path = Path(".tide/soak")
    seed: int = 0


# ---------------------------------------------------------------------------------------------- pure helpers


def _metric_sum(metrics: dict[str, float], name: str) -> float | None:
    """The sum of every series of ``name`` (any labels); None if the worker exports none."""
    vals = [v for k, v in metrics.items() if k == name or k.startswith(name + "{")]
    return float(sum(vals)) if vals else None


def _users_expired(metrics: dict[str, float]) -> float | None:
    """Users expired so far: ``tide_users_expired_total``, or the ``expired`` series of
    ``tide_users_removed_total{reason}``; None if the worker exports neither."""
    n = _metric_sum(metrics, "tide_users_expired_total")
    return n if n is not None else metrics.get('tide_users_removed_total{reason="expired"}')


# ---------------------------------------------------------------------------------------------- the load


def _workload(opts: SoakOptions) -> Iterator[tuple[str, str, int]]:
    """The soak's events in order: (user, item, users appeared so far), the same for the same seed.

    User ``s<n>`` appears at ``n / new_users_per_s`` seconds of the schedule (event ``k`` is due at
    ``k / rate``); each event's user is drawn uniformly among the most recent ``active_users`` that
    have appeared, and its item much as in ``streams.bench.workload``: 70% one of the user's own
    few items, 30% Zipf-popular.
    """
    rng = np.random.default_rng(opts.seed)
    block, k = 1024, 0
    while True:
        pick, own, choose = rng.random(block), rng.integers(0, 8, block), rng.random(block)
        # the tail past the catalogue wraps round (clipped, a quarter of the draws would be its last item)
        popular = (rng.zipf(1.2, block) - 1) % opts.items
        for j in range(block):
            if opts.new_users_per_s > 0:
                n = int(k / opts.rate * opts.new_users_per_s) + 1
            else:
                n = max(1, opts.active_users)  # a fixed population
            lo = max(0, n - opts.active_users)
            u = lo + min(int(pick[j] * (n - lo)), n - lo - 1)
            i = (u * 7919 + int(own[j])) % opts.items if choose[j] < 0.7 else int(popular[j])
            yield f"s{u}", f"i{i}", n
            k += 1


class _Producer:
    """Produces :func:`_workload` at ``rate`` events/s from its own thread until stopped, each event
    stamped with the wall clock as it is sent.

    The events due in each ``_TICK_S`` go out together, in one record batch (see the module
    docstring). Sending by tick keeps the wait out of the measured latency, which a longer
    ``linger.ms`` would add to it.
    """

    def __init__(self, conf: dict[str, Any], topic: str, opts: SoakOptions) -> None:
        self._conf, self._topic, self._opts = conf, topic, opts
        self.produced = 0
        self.users = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-producer", daemon=True)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import Producer

        from schemas import Interaction

        events = _workload(self._opts)
        p = Producer(self._conf)
        k = 0
        tick = self._t0
        try:
            while not self._stop.is_set():
                due = int((time.perf_counter() - self._t0) * self._opts.rate) + 1  # events due by now
                for _ in range(k, due):
                    user, item, n = next(events)
                    value = Interaction(user, item, time.time(), "view").to_json()
                    while True:
                        try:
                            p.produce(self._topic, value, user.encode("utf-8"))
                            break
                        except BufferError:
                            p.poll(0.01)
                    k += 1
                    self.produced, self.users = k, n
                p.poll(0)
                tick += _TICK_S
                time.sleep(max(0.0, tick - time.perf_counter()))
        except BaseException as exc:  # reported by the sampling loop, never a silent stop
            self.error = exc
            logger.exception("soak producer failed")
        finally:
            p.flush(30)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(60)


# ---------------------------------------------------------------------------------------------- the worker


def _checkpoint(workdir: Path, catalogue: list[str], seed: int) -> Path:
    """An untrained model over ``catalogue``, saved as a checkpoint (as ``tide bench`` does)."""
    import torch

    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel

    torch.manual_seed(seed)
    model = InterestModel(InterestConfig(n_items=len(catalogue), dim=64))
    return save_checkpoint(workdir / "checkpoints", model, catalogue, {"soak": "untrained weights"})


def _fresh_topics(tag: str) -> Topics:
    """Every TIDE topic under a name of its own: ``tide.interactions`` → ``<tag>.interactions`` …"""
    from streams.config import Topics

    defaults = {f: str(info.default) for f, info in Topics.model_fields.items()}
    return Topics(**{f: f"{tag}.{name.removeprefix('tide.')}" for f, name in defaults.items()})


def _rss_bytes(pid: int | None) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat), None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:  # RocksDB deletes files while compacting
                pass
    return total


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode("utf-8", "replace"))
    except OSError as exc:
        logger.warning("metrics scrape failed: %s", exc)
        return {}


def _quantiles(x: Sequence[float] | np.ndarray) -> tuple[float | None, float | None]:
    if len(x) == 0:
        return None, None
    q = np.quantile(np.asarray(x, np.float64), [0.5, 0.99])
    return float(q[0]), float(q[1])


class _Probe:
    """Takes one sample: the worker's process and metrics, the broker's process, the load so far, and
    the latency of the recommendations read since the previous sample."""

    def __init__(
        self, pid: int, broker_pid: int | None, port: int, state_dir: Path, producer: _Producer,
        reader: RecommendationReader,
    ) -> None:
        self.pid, self.broker_pid, self.port, self.state_dir = pid, broker_pid, port, state_dir
        self.producer, self.reader = producer, reader
        self._seen = 0  # latencies counted in an earlier sample

    def sample(self, elapsed: float) -> dict[str, Any]:
        n = len(self.reader.latencies)
        p50, p99 = _quantiles(self.reader.latencies[self._seen:n])  # a copy: the reader keeps appending
        n_lat, self._seen = n - self._seen, n
        m = _scrape(self.port)
        return {
            "t_s": round(elapsed, 3),
            "rss_bytes": _rss_bytes(self.pid),
            "worker_cpu_s": _cpu_s(self.pid),
            # the embedded broker's share: on a small machine it can be the bottleneck, not the worker
            "broker_cpu_s": _cpu_s(self.broker_pid) if self.broker_pid else None,
            "broker_rss_bytes": _rss_bytes(self.broker_pid) if self.broker_pid else None,
            "state_files_bytes": _dir_bytes(self.state_dir),
            "state_bytes_users": m.get('tide_state_bytes{store="users"}'),
            "rocksdb_memory_bytes": _metric_sum(m, "tide_state_memory_bytes"),
            "lag_messages": _metric_sum(m, "tide_consumer_lag_messages"),
            "events_folded": _metric_sum(m, "tide_events_folded_total"),
            "users_expired": _users_expired(m),
            "events_produced": self.producer.produced,
            "users_introduced": self.producer.users,
            "recommendations": n_lat,
            "p50_s": p50,
            "p99_s": p99,
        }


def _less_rocksdb(samples: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Times and RSS less the RocksDB memory the worker reports, where both were sampled."""
    both = [s for s in samples if s["rss_bytes"] is not None and s.get("rocksdb_memory_bytes") is not None]
    return [s["t_s"] for s in both], [s["rss_bytes"] - s["rocksdb_memory_bytes"] for s in both]


def _print_sample(s: dict[str, Any], prev: dict[str, Any] | None) -> None:
    print(
        f"[soak] {s['t_s']:>6.0f}s  rss {fmt_mib(s['rss_bytes'])} MiB"
        f" (rocksdb {fmt_mib(s.get('rocksdb_memory_bytes'))})"
        f"  state {fmt_mib(s['state_bytes_users'])} MiB"
        f" (disk {fmt_mib(s['state_files_bytes'])})  lag {fmt_num(s['lag_messages'])}"
        f"  folded {fmt_num(s['events_folded'])}/{s['events_produced']:,}  users {s['users_introduced']:,}"
        f" (expired {fmt_num(s['users_expired'])})  p50 {fmt_ms(s['p50_s'])} p99 {fmt_ms(s['p99_s'])} ms"
        f"  cpu worker {fmt_num(cpu_pct(s, prev, 'worker_cpu_s'))}%"
        f" broker {fmt_num(cpu_pct(s, prev, 'broker_cpu_s'))}%",
        flush=True,
    )


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
    }


def _sample_loop(
    opts: SoakOptions, proc: subprocess.Popen[bytes], producer: _Producer, probe: _Probe, log_path: Path,
    samples: list[dict[str, Any]],
) -> None:
    """Start the producer; append a sample to ``samples`` at 0 and every ``sample_s`` until the end."""
    duration = 60.0 * opts.minutes

    def sample(elapsed: float) -> None:
        samples.append(probe.sample(elapsed))
        _print_sample(samples[-1], samples[-2] if len(samples) > 1 else None)

    t0 = time.perf_counter()
    sample(0.0)
    producer.start(t0)
    k = 1
    while True:
        due = min(k * opts.sample_s, duration)
        while (left := t0 + due - time.perf_counter()) > 0:
            time.sleep(min(left, 0.5))
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode} during the soak; see {log_path}")
            if producer.error is not None:
                raise RuntimeError(f"producer failed: {producer.error!r}")
        sample(time.perf_counter() - t0)
        if due >= duration:
            return
        k += 1


def run_soak(opts: SoakOptions) -> dict[str, Any]:
    """Run the soak (see the module docstring) and return its report."""
    from streams.admin import create_topics
    from streams.broker import EmbeddedBroker, free_port
    from streams.config import Settings
    from streams.launch import spawn_worker, stop_worker, wait_assigned
    from streams.reader import RecommendationReader
    from streams.topics import topic_specs

    work = opts.workdir
    work.mkdir(parents=True, exist_ok=True)
    for old in ("state", "checkpoints"):
        shutil.rmtree(work / old, ignore_errors=True)
    catalogue = [f"i{k}" for k in range(opts.items)]
    ckpt = _checkpoint(work, catalogue, opts.seed)
    print(
        f"[soak] {opts.rate:,.0f} events/s offered for {opts.minutes:g} min;"
        f" {opts.new_users_per_s:g} new users/s,"
        f" {opts.active_users:,} active, user TTL {opts.user_ttl_s:g} s, {opts.items:,} items",
        flush=True,
    )
    broker = None if opts.bootstrap else EmbeddedBroker()
    proc: subprocess.Popen[bytes] | None = None
    producer: _Producer | None = None
    reader: RecommendationReader | None = None
    worker_log = None
    samples: list[dict[str, Any]] = []
    try:
        if broker is not None:
            broker.start()
        bootstrap = opts.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
        tag = f"soak-{uuid.uuid4().hex[:6]}"
        settings = Settings(
            bootstrap_servers=bootstrap,
            group_id=tag,
            partitions=1,
            topics=_fresh_topics(tag),
            state_dir=work / "state",
            checkpoint_dir=ckpt.parent,
            top_k=opts.top_k,
            web_port=free_port(),
            user_ttl_s=opts.user_ttl_s,
        )
        create_topics(bootstrap, topic_specs(settings), admin_conf=settings.librdkafka())
        t = settings.topics
        log_path = work / "worker.log"
        worker_log = open(log_path, "wb")
        proc = spawn_worker(settings, worker_log)
        # The reader's own wait adds nothing to the latency it measures (Kafka timestamps), so it fetches
        # seldom: each fetch costs the embedded broker time in proportion to the partition's batches.
        seldom = {"fetch.wait.max.ms": 1000, "fetch.min.bytes": 1 << 20}
        reader = RecommendationReader(settings, f"{tag}-reader", keep_records=False, **seldom)
        reader.live_from = time.time()  # every event the soak sends is stamped after this
        reader.start()
        wait_assigned(settings.web_port, proc, 180, log_path)
        port = settings.web_port
        print(f"[soak] worker up (pid {proc.pid}, log {log_path}, metrics :{port}/metrics)", flush=True)

        producer = _Producer(settings.producer_conf(), t.interactions, opts)
        probe = _Probe(proc.pid, broker.pid if broker else None, port, settings.state_dir, producer, reader)
        _sample_loop(opts, proc, producer, probe, log_path, samples)
    finally:
        if producer is not None:
            producer.stop()
        if proc is not None:
            stop_worker(proc)
        if worker_log is not None:
            worker_log.close()
        if reader is not None:
            reader.stop()
        if broker is not None:
            broker.stop()

    assert proc is not None and producer is not None and reader is not None  # else it raised above
    rss = [s["rss_bytes"] for s in samples if s["rss_bytes"] is not None]
    p50, p99 = _quantiles(np.array(reader.latencies, np.float64))
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "samples": samples,
        "rss": {
            "start_bytes": rss[0] if rss else None,
            "peak_bytes": max(rss) if rss else None,
            "final_bytes": rss[-1] if rss else None,
            "slope": rss_slope([s["t_s"] for s in samples if s["rss_bytes"] is not None], rss),
            # RocksDB's block cache and memtables fill up to fixed budgets (engine/state/store.py): without
            # them, what remains is the process's own memory
            "slope_less_rocksdb": rss_slope(*_less_rocksdb(samples)),
        },
        "latency": {"p50_s": p50, "p99_s": p99, "n": len(reader.latencies)},
        "events_produced": producer.produced,
        "users_introduced": producer.users,
        "worker_exit_code": proc.returncode,
        "checkpoint": str(ckpt),
        "machine": _machine(),
    }
