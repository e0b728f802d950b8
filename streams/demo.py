"""``tide demo``: the whole path on embedded defaults, ending with a report a newcomer can read.

1. start the embedded broker and create the topics;
2. train on the first 80% of the log and write a checkpoint;
3. start a worker process (``tide worker``; ``workers`` of them in one consumer group, the input with
   as many partitions) at the settings a user would run it with (``TIDE_TOP_K``, default 10 items per
   recommendation, each with its reason) and a reader of ``tide.recommendations``;
4. replay the first 80% as fast as possible (throughput; this also builds every user's state), then
   the last 20% at a fixed offered rate (latency, and accuracy on events the model never trained on);
5. stop everything and print events in/out, events/s, latency, and Recall@k and MRR@k of those same
   recommendations against each user's next true item (k = top_k; a next item outside the top k counts 0),
   beside the recency-frequency baseline and the offline evaluator at the same points with the same cut,
   and three users' top-10 lists;
6. beside them, the workers' live-quality gauges (engine/quality.py) as scraped from ``/metrics`` at
   the end, and the same figures recomputed from the lists the reader received, over the same window.
"""

from __future__ import annotations

import logging
import shutil
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from engine.catalog.alignment import fit_alignment
from engine.catalog.knowledge import Catalog
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.offline.baselines import RecencyFrequency
from engine.offline.data import InteractionLog, read_catalog, read_csv
from engine.offline.evaluation import evaluate_stream, next_items, ranking_metrics
from engine.offline.train import TrainConfig, train
from engine.quality import LiveQuality, QualitySnapshot
from schemas import Recommendation
from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.catalog_stage import load_catalog_file, produce_catalog
from streams.config import Settings
from streams.launch import spawn_worker, stop_worker, wait_assigned
from streams.reader import RecommendationReader
from streams.replay import ReplayResult, replay
from streams.runtime import online_config
from streams.topics import topic_specs

__all__ = ["DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)
_RULE = "=" * 72


@dataclass
class DemoOptions:
    data: Path
    epochs: int | None = None  # None: TrainConfig's passes; N: exactly N
    rate: float = 2000.0
    workdir: Path = Path(".tide/demo")
    train_fraction: float = 0.8
    timeout_s: float = 900.0
    catalog: Path | None = None  # a catalogue file: trained with, and loaded into the items topic
    workers: int = 1


@dataclass
class _Streamed:
    """What the two replay phases leave for the report."""

    fast: ReplayResult  # the first ``n_train`` rows, as fast as possible
    held_out: ReplayResult  # the rest, at the offered rate
    recs: dict[int, tuple[Recommendation, float]]  # log row → its recommendation and Kafka timestamp (s)
    n_records: int  # every recommendation read, matched to a row or not
    t_start: float  # wall clock (s) when the fast phase began
    live: dict[str, float]  # the workers' live-quality gauges and drift count at the end


def run_demo(opts: DemoOptions) -> int:
    t_start = time.perf_counter()
    work = opts.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = read_csv(opts.data)
    n_train = int(len(log) * opts.train_fraction)
    print(f"[demo] {len(log):,} interactions from {opts.data}; training on the first {n_train:,}", flush=True)

    with EmbeddedBroker() as broker:
        # Only where things live is set here: top_k and the rest are the worker's defaults (or TIDE_*).
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            state_dir=work / "state",
            checkpoint_dir=work / "checkpoints",
            web_port=free_port(),
            partitions=max(1, opts.workers),
        )
        create_topics(broker.bootstrap_servers, topic_specs(settings))
        print(f"[demo] embedded broker on {broker.bootstrap_servers}, topics created", flush=True)
        ckpt, catalog = _train(opts, log, n_train, settings)
        streamed = _stream(opts, log, n_train, settings)

    offline = _offline_ranks(ckpt, log, n_train, settings, catalog)
    _report(log, n_train, streamed, offline, settings, opts.rate, opts.workers)
    print(f"total demo time {time.perf_counter() - t_start:.0f}s")
    return 0


def _train(
    opts: DemoOptions, log: InteractionLog, n_train: int, settings: Settings
) -> tuple[Path, Catalog | None]:
    """Train on the first ``n_train`` rows (with the catalogue, if given); return the checkpoint's path
    and the catalogue."""
    cfg = TrainConfig().with_epochs(opts.epochs)
    catalog = None
    if opts.catalog is not None:
        catalog, text_dim, info = load_catalog_file(opts.catalog, settings, "cpu")
        print(f"[demo] catalogue: {len(catalog):,} items, text encoded at {info['items_per_s']:,.0f} items/s")
        cfg = cfg.with_text(text_dim)
    res = train(log.slice(0, n_train), cfg, attributes=catalog.attribute_edges if catalog else None)
    if catalog is not None:
        fit_alignment(res.model, res.item_ids, catalog, log=log.slice(0, n_train))
        produce_catalog(settings, read_catalog(opts.catalog))  # the worker's catalog stage reads it
    ckpt = save_checkpoint(settings.checkpoint_dir, res.model, res.item_ids, res.meta(cfg))
    losses = [round(x, 3) for x in res.losses]
    print(f"[demo] trained in {res.seconds:.1f}s, loss per epoch {losses}: {ckpt.name}")
    return ckpt, catalog


def _stream(opts: DemoOptions, log: InteractionLog, n_train: int, settings: Settings) -> _Streamed:
    """Run a worker and a reader, replay the log through Kafka in two phases, collect the answers."""
    work = opts.workdir
    workers = [_worker_settings(settings, k, opts.workers) for k in range(opts.workers)]
    logs = [work / ("worker.log" if len(workers) == 1 else f"worker-{k}.log") for k in range(len(workers))]
    files = [open(path, "wb") for path in logs]
    procs = [spawn_worker(w, f) for w, f in zip(workers, files)]
    reader = RecommendationReader(settings)
    reader.start()
    try:
        for w, proc, path in zip(workers, procs, logs):
            wait_assigned(w.web_port, proc, 120, path)
        reader.ready.wait(60)
        for w, path in zip(workers, logs):
            print(f"[demo] worker up (log: {path}, metrics: http://127.0.0.1:{w.web_port}/metrics)")
        topic, conf = settings.topics.interactions, settings.producer_conf()
        base_time = time.time() - float(log.ts[-1])  # the log's clock ends "now"
        t_a = time.time()
        a = replay(conf, topic, log, stop=n_train, time_offset=base_time)
        # Let the fast phase drain before measuring latency at a steady offered rate.
        if not reader.wait_for(_last_sources(log.users[:n_train], a.partitions, a.offsets), opts.timeout_s):
            raise TimeoutError("the worker did not answer the fast phase in time")
        b = replay(conf, topic, log, start=n_train, rate=opts.rate, time_offset=base_time)
        if not reader.wait_for(_last_sources(log.users[n_train:], b.partitions, b.offsets), opts.timeout_s):
            print("[demo] warning: not every user's last event got its recommendation before the timeout")
        time.sleep(GAUGE_REFRESH_S)  # the workers report their gauges every 5 s
        live = _live_gauges([w.web_port for w in workers])
    finally:
        for proc in procs:
            stop_worker(proc)
        reader.stop()
        for f in files:
            f.close()
    return _Streamed(a, b, _by_row(reader.records, a, b), len(reader.records), t_a, live)


#: the interval at which a worker updates its live-quality gauges, and a second more
GAUGE_REFRESH_S = 6.0
_LIVE = ("judged_events", "recall_ratio", "mrr_ratio", "coverage_ratio", "intra_list_distance",
         "exposure_gini_ratio")


def _live_gauges(ports: Sequence[int]) -> dict[str, float]:
    """The workers' live-quality gauges, averaged weighted by the events each judged, and the drifts
    they reported, from their ``/metrics``."""
    per_worker = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = {
            sm.name: sm.value for fam in text_string_to_metric_families(text) for sm in fam.samples
        }
        per_worker.append({
            **{g: samples.get(f"tide_live_{g}", float("nan")) for g in _LIVE},
            "drifts": samples.get("tide_interest_drifts_total", 0.0),
        })
    judged = np.array([w["judged_events"] for w in per_worker])
    weights = judged / judged.sum() if judged.sum() > 0 else np.full(len(judged), 1 / len(judged))
    out = {g: float(sum(wt * w[g] for wt, w in zip(weights, per_worker))) for g in _LIVE[1:]}
    return out | {"judged_events": float(judged.sum()), "drifts": sum(w["drifts"] for w in per_worker)}


def _worker_settings(settings: Settings, k: int, n: int) -> Settings:
    """Worker ``k`` of ``n``: with more than one, a state folder, web port and name of its own."""
    if n == 1:
        return settings
    return settings.model_copy(update={
        "state_dir": settings.state_dir.parent / f"state-{k}", "web_port": free_port(),
        "worker_id": f"demo-{k}",
    })


def _last_sources(users: np.ndarray, partitions: np.ndarray, offsets: np.ndarray) -> set[tuple[int, int]]:
    """(partition, offset) of each user's last event: it always ends that user's micro-batch, so it
    always gets a recommendation."""
    last = {u: k for k, u in enumerate(users.tolist())}
    return {(int(partitions[k]), int(offsets[k])) for k in last.values()}


def _by_row(
    records: list[tuple[Recommendation, float]], a: ReplayResult, b: ReplayResult
) -> dict[int, tuple[Recommendation, float]]:
    """Each recommendation under the log row of the event it answers (its source's partition and offset)."""
    parts, offs = np.r_[a.partitions, b.partitions], np.r_[a.offsets, b.offsets]
    where = {(int(p), int(o)): k for k, (p, o) in enumerate(zip(parts, offs))}
    recs: dict[int, tuple[Recommendation, float]] = {}
    for rec, ts in records:
        k = where.get((rec.source.partition, rec.source.offset))
        if k is not None:
            recs[k] = (rec, ts)
    return recs


def _offline_ranks(
    ckpt_path: Path, log: InteractionLog, n_train: int, settings: Settings, catalog: Catalog | None = None
) -> dict[int, float]:
    """The offline evaluator's rank of every held-out row, from the same checkpoint and settings."""
    ckpt = load_checkpoint(ckpt_path)
    online = online_config(settings)
    # ranked as the worker ranked them: for the moment of the user's previous event
    rr = evaluate_stream(
        ckpt.model, ckpt.item_ids, log, n_train, online=online, at_row_time=False, catalog=catalog
    )
    return dict(zip(rr.rows.tolist(), rr.ranks["model"].tolist()))


def _accuracy(
    users: Sequence[str], items: Sequence[str], n_train: int, lists: dict[int, list[str]],
    offline: dict[int, float], k: int,
) -> dict[str, dict[str, float]]:
    """Recall@k and MRR@k of the model's emitted lists, recency-frequency and the offline evaluator.

    Scored at every row that got a list (``lists``: row → item ids, best first) and whose user's next
    event is held out (row ≥ ``n_train``), by the rank of that next item; a rank beyond ``k`` counts 0
    in both figures, for all three alike, so they compare.
    """
    nxt, nxt_idx = next_items(users, items)
    rf = RecencyFrequency(0.5)
    n_items = len(set(items))
    ranks: dict[str, list[float]] = {"model": [], "recency_frequency": [], "offline": []}
    for e in range(len(users)):
        rf.observe(users[e], items[e])
        target = nxt[e]
        if e in lists and target is not None and nxt_idx[e] >= n_train:
            ids = lists[e]
            ranks["model"].append(ids.index(target) + 1 if target in ids else np.inf)
            ranks["recency_frequency"].append(rf.rank(users[e], target, n_items))
            ranks["offline"].append(offline[int(nxt_idx[e])])
    return {name: _at_k(r, k) for name, r in ranks.items()}


def _at_k(ranks: Sequence[float], k: int) -> dict[str, float]:
    """``n``, ``recall`` (Recall@k) and ``mrr`` (MRR@k: 1/rank, 0 beyond rank ``k``)."""
    r = np.asarray(ranks, dtype=np.float64)
    m = ranking_metrics(np.where(r <= k, r, np.inf), k)
    return {"n": m["n"], "recall": m[f"recall@{k}"], "mrr": m["mrr"]}


def _report(
    log: InteractionLog, n_train: int, s: _Streamed, offline: dict[int, float], settings: Settings,
    rate: float, workers: int = 1,
) -> None:
    k = settings.top_k
    users, items = log.users.tolist(), log.items.tolist()
    lists = {row: [i.item_id for i in rec.items] for row, (rec, _) in s.recs.items()}
    acc = _accuracy(users, items, n_train, lists, offline, k)
    # Throughput over the fast phase: first event produced → recommendation for its last event.
    end_a = max((ts for row, (_, ts) in s.recs.items() if row < n_train), default=float("nan"))
    sent = s.held_out.timestamps  # Kafka timestamps of the held-out events
    lat = np.array([ts - sent[row - n_train] for row, (_, ts) in s.recs.items() if row >= n_train])
    print(f"\n{_RULE}")
    learning = "on" if settings.online_learning else "off"
    who = "one `tide worker`" if workers == 1 else f"{workers} `tide worker` processes"
    print(f"TIDE demo report: {who} at its defaults ({k} items per recommendation, each with its")
    print(f"reason; online learning {learning}), with the broker, producer and reader on this machine.")
    print(f"Latency and accuracy come from the same recommendations (held-out 20% offered at {rate:,.0f}/s).")
    print(_RULE)
    print(f"events in                 {len(log):>10,}   (train replay {n_train:,} fast, "
          f"held-out {len(log) - n_train:,} at {s.held_out.events_per_s:,.0f}/s)")
    print(f"recommendations out       {s.n_records:>10,}   (one per user per micro-batch)")
    print(f"throughput (fast phase)   {n_train / (end_a - s.t_start):>10,.0f} events/s end to end")
    print(f"latency (held-out phase)  p50 {np.percentile(lat, 50) * 1000:7.1f} ms   "
          f"p99 {np.percentile(lat, 99) * 1000:7.1f} ms   (Kafka timestamp of the event → of its "
          "recommendation)")
    print(f"accuracy on the held-out 20% ({acc['model']['n']:,} recommendations; rank of the next true item "
          f"among {len(set(items)):,}, 0 beyond {k}):")
    _print_accuracy(acc, k)
    _print_live(s.live, _replayed_quality(users, items, lists, settings), settings)
    print("three users' top-10:")
    for row in sorted(s.recs, reverse=True)[:3]:
        rec = s.recs[row][0]
        top = ", ".join(i.item_id for i in rec.items[:10])
        print(f"  user {rec.user_id} (after item {items[row]}): {top}")


def _replayed_quality(
    users: Sequence[str], items: Sequence[str], lists: dict[int, list[str]], settings: Settings
) -> QualitySnapshot:
    """engine/quality.py's figures from the lists the reader received, in log order: each event judged
    against the last list its user received before it, over the same window as the gauges."""
    q = LiveQuality(k=min(10, settings.top_k), window=settings.quality_window)
    for e, (u, i) in enumerate(zip(users, items)):
        q.judge([u], [i])
        if e in lists:
            q.record([u], [lists[e]])
    return q.snapshot(len(set(items)))


def _print_live(live: dict[str, float], replayed: QualitySnapshot, settings: Settings) -> None:
    k, w = min(10, settings.top_k), settings.quality_window
    print(f"live quality (last {w:,} events and recommendations; engine/quality.py's definitions):")
    rows = [
        ("worker gauges (/metrics)", live["recall_ratio"], live["mrr_ratio"], live["coverage_ratio"],
         live["intra_list_distance"], live["exposure_gini_ratio"]),
        ("from the lists received", replayed.recall, replayed.mrr, replayed.coverage, float("nan"),
         replayed.exposure_gini),
    ]
    for label, recall, mrr, coverage, ild, gini in rows:
        ild_text = f"{ild:.3f}" if np.isfinite(ild) else "  —  "
        print(f"  {label:<28} Recall@{k} {recall:.3f}   MRR@{k} {mrr:.3f}   coverage {coverage:.3f}   "
              f"intra-list distance {ild_text}   exposure Gini {gini:.3f}")
    print(f"interest drifts reported  {live['drifts']:>10,.0f}   (on tide.interest-drift)")


def _print_accuracy(acc: dict[str, dict[str, float]], k: int) -> None:
    model, off = acc["model"], acc["offline"]
    rows = [
        ("TIDE model", model, ""),
        ("recency-frequency (0.5)", acc["recency_frequency"], ""),
        ("offline evaluator, same rows", off,
         f"   (Kafka − offline: {model['recall'] - off['recall']:+.3f}, {model['mrr'] - off['mrr']:+.3f})"),
    ]
    for label, m, note in rows:
        print(f"  {label:<28} Recall@{k} {m['recall']:.3f}   MRR@{k} {m['mrr']:.3f}{note}")
