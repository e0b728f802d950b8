"""``tide demo``: the whole path on embedded defaults, ending with a report.

1. start the embedded broker and create the topics;
2. train on the first 80% of the log and write a checkpoint;
3. start a worker process (``tide worker``) and a reader of ``tide.recommendations``;
4. replay the first 80% as fast as possible (throughput; this also builds every user's state), then
   the last 20% at a fixed offered rate (latency, and accuracy on events the model never trained on);
5. stop everything and print events in/out, events/s, latency, Recall@10 and MRR of the emitted
   recommendations against each user's next true item, the recency-frequency baseline at the same
   points, and three users' top-10 lists.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.catalog.alignment import fit_alignment
from engine.offline.baselines import RecencyFrequency
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.offline.data import read_catalog, read_csv
from engine.offline.evaluation import evaluate_stream, next_items, ranking_metrics
from engine.offline.train import TrainConfig, train
from schemas import Recommendation
from streams.broker import EmbeddedBroker, create_topics, free_port
from streams.catalog import load_catalog_file, produce_catalog
from streams.config import Settings
from streams.launch import spawn_worker, stop_worker, wait_assigned
from streams.reader import RecommendationReader
from streams.replay import replay
from streams.runtime import online_config
from streams.topics import topic_specs

__all__ = ["DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)
DEMO_TOP_K = 100  # recommendations carry 100 items so MRR is exact down to rank 100


@dataclass
class DemoOptions:
    data: Path
    epochs: int = 2
    rate: float = 2000.0
    workdir: Path = Path(".tide/demo")
    train_fraction: float = 0.8
    timeout_s: float = 900.0
    catalog: Path | None = None  # a catalogue file: trained with, and loaded into the items topic


def run_demo(opts: DemoOptions) -> int:
    t_start = time.perf_counter()
    work = opts.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = read_csv(opts.data)
    n_train = int(len(log) * opts.train_fraction)
    print(f"[demo] {len(log):,} interactions from {opts.data}; training on the first {n_train:,}", flush=True)

    with EmbeddedBroker() as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            state_dir=work / "state",
            checkpoint_dir=work / "checkpoints",
            top_k=DEMO_TOP_K,
            web_port=free_port(),
        )
        create_topics(broker.bootstrap_servers, topic_specs(settings))
        print(f"[demo] embedded broker on {broker.bootstrap_servers}, topics created", flush=True)

        cfg = TrainConfig(epochs=opts.epochs)
        catalog = None
        if opts.catalog is not None:
            catalog, text_dim, info = load_catalog_file(opts.catalog, settings, "cpu")
            print(f"[demo] catalogue: {len(catalog):,} items, text encoded at {info['items_per_s']:,.0f} items/s")
            cfg = cfg.with_text(text_dim)
        res = train(log.slice(0, n_train), cfg, attributes=catalog.attribute_edges if catalog else None)
        if catalog is not None:
            fit_alignment(res.model, res.item_ids, catalog)
            produce_catalog(settings, read_catalog(opts.catalog))  # the worker's catalog stage reads it
        ckpt = save_checkpoint(settings.checkpoint_dir, res.model, res.item_ids, res.meta(cfg))
        print(f"[demo] trained in {res.seconds:.1f}s, loss per epoch {[round(x, 3) for x in res.losses]}: {ckpt.name}")

        worker_log = open(work / "worker.log", "wb")
        proc = spawn_worker(settings, worker_log)
        reader = RecommendationReader(settings)
        reader_thread = threading.Thread(target=reader.run, daemon=True)
        reader_thread.start()
        try:
            wait_assigned(settings.web_port, proc, 120, work / "worker.log")
            reader.ready.wait(60)
            print(f"[demo] worker up (log: {work / 'worker.log'}, metrics: http://127.0.0.1:{settings.web_port}/metrics)")
            topic = settings.topics.interactions
            base_time = time.time() - float(log.ts[-1])  # the log's clock ends "now"
            conf = settings.producer_conf()
            t_a = time.time()
            a = replay(conf, topic, log, stop=n_train, time_offset=base_time)
            # Let the fast phase drain before measuring latency at a steady offered rate.
            if not reader.wait_for(_last_sources(log.users[:n_train], a.partitions, a.offsets), opts.timeout_s):
                raise TimeoutError("the worker did not answer the fast phase in time")
            b = replay(conf, topic, log, start=n_train, rate=opts.rate, time_offset=base_time)
            if not reader.wait_for(_last_sources(log.users[n_train:], b.partitions, b.offsets), opts.timeout_s):
                print("[demo] warning: not every user's last event got its recommendation before the timeout")
            parts, offs = np.r_[a.partitions, b.partitions], np.r_[a.offsets, b.offsets]
            where = {(int(p), int(o)): k for k, (p, o) in enumerate(zip(parts, offs))}
        finally:
            stop_worker(proc)
            reader.stop()
            reader_thread.join(10)
            worker_log.close()

    offline = _offline_ranks(ckpt, log, n_train, settings, catalog)
    _report(log, n_train, a, b, where, reader.records, t_a, time.perf_counter() - t_start, offline)
    return 0


def _last_sources(users: np.ndarray, partitions: np.ndarray, offsets: np.ndarray) -> set[tuple[int, int]]:
    """(partition, offset) of each user's last event: it always ends that user's micro-batch, so it
    always gets a recommendation."""
    last = {u: k for k, u in enumerate(users.tolist())}
    return {(int(partitions[k]), int(offsets[k])) for k in last.values()}


def _offline_ranks(ckpt_path: Path, log, n_train: int, settings: Settings, catalog=None) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """The offline evaluator's rank of every held-out row, from the same checkpoint and settings."""
    ckpt = load_checkpoint(ckpt_path)
    online = online_config(settings)
    # ranked as the worker ranked them: for the moment of the user's previous event
    rr = evaluate_stream(ckpt.model, ckpt.item_ids, log, n_train, online=online, at_row_time=False, catalog=catalog)
    return dict(zip(rr.rows.tolist(), rr.ranks["model"].tolist()))


def _report(log, n_train, a, b, where, records, t_a, total_s, offline) -> None:  # type: ignore[no-untyped-def]
    users, items = log.users.tolist(), log.items.tolist()
    nxt, nxt_idx = next_items(users, items)
    stamps = np.r_[a.timestamps, b.timestamps]
    recs: dict[int, tuple[Recommendation, float]] = {}
    for rec, ts in records:
        k = where.get((rec.source.partition, rec.source.offset))
        if k is not None:
            recs[k] = (rec, ts)
    # Throughput over the fast phase: first event produced → recommendation for its last event.
    end_a = max((ts for k, (_, ts) in recs.items() if k < n_train), default=float("nan"))
    events_per_s = n_train / (end_a - t_a)
    lat = np.array([ts - stamps[k] for k, (_, ts) in recs.items() if k >= n_train])

    # Accuracy on the held-out 20%: every recommendation whose user's next true event is held out.
    rf = RecencyFrequency(0.5)
    n_items = len(set(items))
    model_ranks, base_ranks, offline_ranks = [], [], []
    for k in range(len(log)):
        rf.observe(users[k], items[k])
        if k in recs and nxt_idx[k] >= n_train:
            ids = [s.item_id for s in recs[k][0].items]
            model_ranks.append(ids.index(nxt[k]) + 1 if nxt[k] in ids else np.inf)
            r = offline[int(nxt_idx[k])]
            offline_ranks.append(r if r <= len(ids) else np.inf)  # the same top-100 cut as the emitted lists
            base_ranks.append(rf.rank(users[k], nxt[k], n_items))
    m, bm, om = ranking_metrics(model_ranks), ranking_metrics(base_ranks), ranking_metrics(offline_ranks)
    print()
    print("=" * 72)
    print("TIDE demo report")
    print("=" * 72)
    print(f"events in                 {len(log):>10,}   (train replay {n_train:,} fast, held-out {len(log) - n_train:,} at {b.n / b.seconds:,.0f}/s)")
    print(f"recommendations out       {len(records):>10,}   (one per user per micro-batch)")
    print(f"throughput (fast phase)   {events_per_s:>10,.0f} events/s end to end")
    print(f"latency (held-out phase)  p50 {np.percentile(lat, 50) * 1000:7.1f} ms   p99 {np.percentile(lat, 99) * 1000:7.1f} ms   (Kafka timestamp of the event → of its recommendation)")
    print(f"accuracy on the held-out 20% ({m['n']:,} recommendations, next true item ranked among {n_items:,} items):")
    print(f"  {'TIDE model':<26} Recall@10 {m['recall@10']:.3f}   MRR {m['mrr']:.3f}")
    print(f"  {'recency-frequency (0.5)':<26} Recall@10 {bm['recall@10']:.3f}   MRR {bm['mrr']:.3f}")
    print(
        f"  {'offline evaluator, same rows':<26} Recall@10 {om['recall@10']:.3f}   MRR {om['mrr']:.3f}"
        f"   (Kafka − offline: {m['recall@10'] - om['recall@10']:+.3f}, {m['mrr'] - om['mrr']:+.3f})"
    )
    print("three users' top-10:")
    for k in sorted(recs, reverse=True)[:3]:
        rec = recs[k][0]
        print(f"  user {rec.user_id} (after item {items[k]}): " + ", ".join(s.item_id for s in rec.items[:10]))
    print(f"total demo time {total_s:.0f}s")
