"""``tide``: the command line. Settings come from ``TIDE_*`` environment variables; flags override."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("tide")


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from streams.config import Settings

    base = Settings()
    clean = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=clean) if clean else base


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import EmbeddedBroker, create_topics
    from streams.topics import topic_specs

    broker = EmbeddedBroker(port=args.port)
    broker.start()
    settings = _settings(bootstrap_servers=broker.bootstrap_servers, partitions=args.partitions)
    create_topics(broker.bootstrap_servers, topic_specs(settings))
    print(f"embedded broker on {broker.bootstrap_servers}; topics created. Ctrl-C to stop.", flush=True)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait needs them blocked to receive them
    try:
        signal.sigwait(stop_signals)
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.broker import create_topics
    from streams.topics import topic_specs

    settings = _settings(bootstrap_servers=args.bootstrap)
    specs = topic_specs(settings)
    create_topics(settings.bootstrap_servers, specs, admin_conf=settings.librdkafka())
    print("topics ready: " + ", ".join(f"{s.name} ({s.partitions})" for s in specs))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from engine.checkpoint import save_checkpoint
    from engine.offline.data import read_csv
    from engine.offline.train import train

    settings = _settings(checkpoint_dir=args.out, bootstrap_servers=args.bootstrap)
    if args.topic:
        from streams.topic_log import read_topic

        log = read_topic(settings, args.topic)
        source = f"topic {args.topic}"
    else:
        log = read_csv(args.data)
        source = str(args.data)
    n = int(len(log) * args.fraction)
    cfg, _ = _configs(args.config)
    cfg = replace(cfg, seed=args.seed, **({"epochs": args.epochs} if args.epochs is not None else {}))
    catalog, meta = None, {"data": source}
    if args.catalog:
        from streams.runtime import pick_device

        catalog, text_dim, meta["catalog"] = _load_catalog(args.catalog, args.text_model, pick_device(settings.device).type)
        cfg = cfg.with_text(text_dim)
    print(f"training on {n:,} of {len(log):,} interactions from {source} ({cfg.epochs} epochs)", flush=True)
    res = train(log.slice(0, n), cfg, attributes=catalog.attribute_edges if catalog else None)
    if catalog is not None:
        from engine.catalog.alignment import fit_alignment

        meta["alignment"] = fit_alignment(res.model, res.item_ids, catalog).to_dict()
    path = save_checkpoint(settings.checkpoint_dir, res.model, res.item_ids, res.meta(cfg) | meta)
    print(f"checkpoint {path} (loss per epoch {[round(x, 4) for x in res.losses]}, {res.seconds:.1f}s)")
    return 0


def _configs(path: Path | None):  # type: ignore[no-untyped-def]
    """Training and online-learning hyper-parameters: defaults, overridden by a JSON file
    ``{"train": {...}, "online": {...}}``."""
    from engine.fold.online import OnlineConfig
    from engine.offline.train import TrainConfig

    raw = json.loads(Path(path).read_text()) if path else {}
    return TrainConfig(**raw.get("train", {})), OnlineConfig(**raw.get("online", {}))


def _load_catalog(path: Path, text_model: Path | None, device: str):  # type: ignore[no-untyped-def]
    from streams.catalog import load_catalog_file

    catalog, text_dim, info = load_catalog_file(path, _settings(text_model=text_model), device)
    print(f"catalogue {path}: {len(catalog):,} items, text encoded in {info['encode_s']:.1f}s ({info['items_per_s']:,.0f} items/s)")
    return catalog, text_dim, info


def cmd_synthetic(args: argparse.Namespace) -> int:
    """Write a synthetic catalogue (JSON lines) and interaction log (CSV) whose item text carries the
    users' planted interests, with a share of items that appear only late (cold start)."""
    from engine.offline.synthetic import catalog_log, write_catalog, write_log_csv

    cl = catalog_log(
        n_users=args.users, n_items=args.items, n_topics=args.topics, events_per_user=args.events_per_user,
        seed=args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_catalog(cl.items, args.out / "catalog.jsonl")
    write_log_csv(cl.log, args.out / "log.csv")
    print(
        f"{args.out}/catalog.jsonl: {len(cl.items):,} items ({len(cl.cold_items):,} appear only in the last "
        f"fifth of the log); {args.out}/log.csv: {len(cl.log):,} interactions of {args.users:,} users"
    )
    return 0


def cmd_encode_bench(args: argparse.Namespace) -> int:
    """Item text encoding throughput on this machine."""
    import torch

    from engine.catalog.text import TextEncoder, encode_throughput
    from streams.runtime import pick_device

    settings = _settings(text_model=args.text_model)
    device = pick_device(args.device)
    encoder = TextEncoder(settings.text_model, device=device, batch_size=args.batch)
    for threads in [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [0]:
        if threads:
            torch.set_num_threads(threads)
        r = encode_throughput(encoder, args.items)
        print(
            f"{r['items']:,} item texts in {r['seconds']:.1f}s: {r['items_per_s']:,.0f} items/s "
            f"({r['device']}, batch {r['batch_size']}, {r['threads']} threads)"
        )
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    """Load a catalogue file into the items topic (keyed by item id; the topic is compacted)."""
    from engine.offline.data import read_catalog
    from streams.catalog import produce_catalog

    settings = _settings(bootstrap_servers=args.bootstrap)
    items = read_catalog(args.file)
    produce_catalog(settings, items)
    print(f"{len(items):,} catalogue items → {settings.topics.items}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine.catalog.alignment import fit_alignment
    from engine.checkpoint import load_checkpoint
    from engine.offline.data import read_csv
    from engine.offline.evaluation import evaluate_stream
    from engine.offline.protocols import split_log
    from engine.offline.train import train
    from streams.report import build_report, plot_over_time, write_report
    from streams.runtime import pick_device

    train_cfg, online_cfg = _configs(args.config)
    if args.epochs is not None:
        train_cfg = replace(train_cfg, epochs=args.epochs)
    if args.no_online:
        online_cfg = replace(online_cfg, enabled=False)
    log = read_csv(args.data)
    split = split_log(log, args.protocol)
    timings: dict[str, float] = {}
    catalog, extra = None, {}
    if args.catalog:
        catalog, text_dim, extra["catalog"] = _load_catalog(args.catalog, args.text_model, pick_device(_settings().device).type)
        train_cfg = train_cfg.with_text(text_dim)
    if args.cold_start:
        return _cold_start(args, log, split, catalog, train_cfg, online_cfg, extra)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint, pick_device(_settings().device))
        model, item_ids = ckpt.model, ckpt.item_ids
    else:
        print(f"training on the {split.train_end:,} {args.protocol} training rows of {args.data} ({train_cfg.epochs} epochs)", flush=True)
        res = train(log.slice(0, split.train_end), train_cfg, attributes=catalog.attribute_edges if catalog else None)
        model, item_ids = res.model, res.item_ids
        timings["train_s"] = res.seconds
        if catalog is not None:
            extra["alignment"] = fit_alignment(model, item_ids, catalog).to_dict()
    rr = evaluate_stream(
        model, item_ids, log, split.train_end, online=online_cfg, at_row_time=not args.as_emitted, catalog=catalog
    )
    timings |= {"evaluate_s": rr.seconds, "events_per_s": rr.extra["events_per_s"]}
    report = build_report(
        rr, split, str(args.data), timings,
        {"train": asdict(train_cfg), "online": asdict(online_cfg), "query_time": "previous event" if args.as_emitted else "row"},
    ) | extra
    _print_table(report)
    if args.report:
        write_report(report, args.report)
        png = args.report.with_suffix(".png")
        plot_over_time(rr, split, png)
        print(f"report: {args.report}, plot: {png}")
    return 0


def _cold_start(args, log, split, catalog, train_cfg, online_cfg, extra) -> int:  # type: ignore[no-untyped-def]
    from engine.catalog.alignment import fit_alignment
    from engine.offline.cold_start import cold_start_split, evaluate_cold_start
    from engine.offline.train import train

    if catalog is None:
        print("--cold-start needs --catalog (the held-out items are known only by their text and attributes)")
        return 2
    cs = cold_start_split(log, split.train_end, share=args.cold_share, seed=train_cfg.seed)
    print(
        f"cold start: {len(cs.held_out):,} items held out of the {cs.train_end:,} training rows; "
        f"scoring their first interactions ({len(cs.rows):,} rows)", flush=True,
    )
    res = train(cs.log.slice(0, cs.train_end), train_cfg, attributes=catalog.attribute_edges)
    extra["alignment"] = fit_alignment(res.model, res.item_ids, catalog).to_dict()
    out = evaluate_cold_start(res.model, res.item_ids, cs, catalog, online_cfg)
    print(
        f"\n{'method':<24} {'R@10':>7} {'MRR':>7} {'median rank':>12}   "
        f"(first {cs.extra['first_n']} interactions of each held-out item, {out['rows']:,} rows)"
    )
    for name, m in out["metrics"].items():
        print(
            f"{name:<24} {m['recall@10']:7.4f} {m.get('mrr', float('nan')):7.4f} "
            f"{m['median_rank']:7.0f} ({m['median_percentile']:.2f})"
        )
    a = extra["alignment"]
    print(f"alignment: held-out Recall@10 {a['heldout_recall_at_10']:.3f} (random {a['random_recall_at_10']:.3f})")
    if args.report:
        report = {
            "cold_start": out, "protocol": args.protocol, "data": str(args.data), "catalog_file": str(args.catalog),
            "timings": {"train_s": res.seconds, "evaluate_s": out["seconds"]},
        } | extra
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
        print(f"report: {args.report}")
    return 0


def _print_table(report: dict) -> None:  # type: ignore[type-arg]
    rows = [("TIDE model", report["model"])] + list(report["baselines"].items())
    print(f"\n{report['protocol']} protocol, test rows {report['model']['n']:,}, {report['n_items']:,} items")
    print(f"{'method':<24} {'MRR':>7} {'R@10':>7} {'NDCG@10':>8} {'rep R@10':>9} {'new R@10':>9} {'val MRR':>8}")
    val = {"TIDE model": report["validation"]["model"], **report["validation"]["baselines"]}
    for name, m in rows:
        print(
            f"{name:<24} {m['mrr']:7.4f} {m['recall@10']:7.4f} {m['ndcg@10']:8.4f} "
            f"{m['repeat']['recall@10']:9.4f} {m['first_time']['recall@10']:9.4f} {val[name]['mrr']:8.4f}"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.offline.data import read_csv
    from streams.replay import replay

    settings = _settings(bootstrap_servers=args.bootstrap)
    log = read_csv(args.data)
    res = replay(
        settings.producer_conf(), settings.topics.interactions, log, start=args.start, stop=args.stop, rate=args.rate
    )
    print(f"replayed {res.n:,} events in {res.seconds:.1f}s ({res.n / max(res.seconds, 1e-9):,.0f} events/s)")
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from streams.soak import SoakOptions, run_soak
    from streams.soak_report import plot_soak, print_soak

    opts = SoakOptions(
        minutes=args.minutes,
        rate=args.rate,
        new_users_per_s=args.new_users_per_s,
        active_users=args.active_users,
        user_ttl_s=args.ttl,
        items=args.items,
        sample_s=args.sample_s,
        bootstrap=args.bootstrap,
        workdir=args.workdir,
    )
    report = run_soak(opts)
    print_soak(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    plot_soak(report, args.out / "soak.png")
    print(f"report: {args.out / 'soak.json'}, plot: {args.out / 'soak.png'}")
    return 0 if report["rss"]["slope"]["flat"] else 1


def cmd_forget(args: argparse.Namespace) -> int:
    from streams.forget import request_deletion

    settings = _settings(bootstrap_servers=args.bootstrap)
    n = request_deletion(settings, args.users)
    print(
        f"deletion requested for {len(args.users):,} users "
        f"({n:,} records on {settings.topics.user_deletions})"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.memory import tune_allocator

    tune_allocator()  # before the clients and threads that allocate most exist
    from streams.app import run_worker

    settings = _settings(bootstrap_servers=args.bootstrap, web_port=args.web_port)
    return run_worker(settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(data=args.data, epochs=args.epochs, rate=args.rate, workdir=args.workdir, catalog=args.catalog)
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from streams.bench import (
        MODES,
        BenchOptions,
        print_table,
        run_bench,
        run_scaling,
        topk_cost,
        write_report,
    )

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    opts = BenchOptions(
        data=args.data, users=args.users, active_users=args.active_users, items=args.items, events=args.events,
        rate=args.rate,
        latency_seconds=args.latency_seconds, modes=modes, bootstrap=args.bootstrap, checkpoint=args.checkpoint,
        dim=args.dim, batch_max_events=args.batch, top_k=args.top_k, online_learning=not args.no_online,
        device=args.device, workdir=args.workdir,
    )
    if args.scaling:
        scaling = run_scaling(opts, args.scaling)
        write_report(scaling, args.scaling.with_suffix(".json"))
        print(f"scaling plot: {args.scaling}, figures: {args.scaling.with_suffix('.json')}")
        return 0
    report = run_bench(opts)
    if args.topk_items:
        report["topk"] = [topk_cost(int(n), device=args.device) for n in args.topk_items.split(",")]
    print_table(report)
    if args.report:
        write_report(report, args.report)
        print(f"report: {args.report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from engine.offline.train import TrainConfig
    from streams.config import Settings

    defaults = Settings()
    p = argparse.ArgumentParser(prog="tide", description="TIDE: Temporal Interest Dynamics Engine")
    p.add_argument("--log-level", default=defaults.log_level)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (loopback) with TIDE's topics")
    b.add_argument("--port", type=int, default=0, help="0 = a free port")
    b.add_argument("--partitions", type=int, default=defaults.partitions)
    b.set_defaults(func=cmd_broker)

    tp = sub.add_parser("topics", help="create TIDE's topics on the configured cluster (idempotent)")
    tp.add_argument("--bootstrap", default=None)
    tp.set_defaults(func=cmd_topics)

    t = sub.add_parser("train", help="train a model on the first part of a log and write a checkpoint")
    t.add_argument("--data", type=Path, default=defaults.data, help="CSV: user, item, timestamp (header optional)")
    t.add_argument("--topic", default=None, help="train on this interactions topic instead of a CSV")
    t.add_argument("--bootstrap", default=None)
    t.add_argument("--fraction", type=float, default=defaults.train_fraction, help="leading share of rows to train on")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--config", type=Path, default=None, help='JSON {"train": {...}}')
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=defaults.checkpoint_dir)
    t.add_argument(
        "--catalog", type=Path, default=None,
        help="catalogue (CSV or JSON lines): train the text alignment too, so the worker can use item text",
    )
    t.add_argument("--text-model", type=Path, default=None, help="local transformers model folder for item text")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="train on a protocol's training split, stream the rest through the fold, rank every next item"
    )
    e.add_argument("--data", type=Path, default=defaults.data, help="CSV: user, item, timestamp (header optional)")
    e.add_argument("--protocol", choices=["jodie", "tgb"], default="jodie")
    e.add_argument("--checkpoint", type=Path, default=None, help="evaluate this checkpoint instead of training")
    e.add_argument("--config", type=Path, default=None, help='JSON {"train": {...}, "online": {...}}')
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--no-online", action="store_true", help="turn online learning off")
    e.add_argument(
        "--as-emitted",
        action="store_true",
        help="rank each row with the recommendation pushed at the user's previous event, instead of at the row's "
        "own time (the protocols' query time)",
    )
    e.add_argument("--report", type=Path, default=None, help="write the JSON report here (and a PNG beside it)")
    e.add_argument(
        "--catalog", type=Path, default=None,
        help="catalogue (CSV or JSON lines: item_id, title, text, attributes): item text and attributes join the model",
    )
    e.add_argument("--text-model", type=Path, default=None, help="local transformers model folder for item text")
    e.add_argument(
        "--cold-start", action="store_true",
        help="hold a share of items out of training; Recall@10 on their first interactions, with and without text",
    )
    e.add_argument("--cold-share", type=float, default=0.1, help="share of items held out with --cold-start")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("catalog", help="load a catalogue file (CSV or JSON lines) into the items topic")
    c.add_argument("file", type=Path, help="item_id, title, text, attributes (CSV with a header, or JSON lines)")
    c.add_argument("--bootstrap", default=None)
    c.set_defaults(func=cmd_catalog)

    sy = sub.add_parser("synthetic", help="write a synthetic catalogue with text and a log with planted interests")
    sy.add_argument("--out", type=Path, default=Path(".tide/synthetic"))
    sy.add_argument("--users", type=int, default=500)
    sy.add_argument("--items", type=int, default=600)
    sy.add_argument("--topics", type=int, default=8)
    sy.add_argument("--events-per-user", type=int, default=40)
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=cmd_synthetic)

    eb = sub.add_parser("encode-bench", help="item text encoding throughput (items/s)")
    eb.add_argument("--items", type=int, default=2000)
    eb.add_argument("--batch", type=int, default=defaults.text_batch_size)
    eb.add_argument("--threads", default="1,2", help="CPU: torch threads to try, comma-separated")
    eb.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    eb.add_argument("--text-model", type=Path, default=None)
    eb.set_defaults(func=cmd_encode_bench)

    r = sub.add_parser("replay", help="produce a CSV log (user,item,timestamp) to the interactions topic")
    r.add_argument("--data", type=Path, default=defaults.data)
    r.add_argument("--bootstrap", default=None)
    r.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    r.add_argument("--start", type=int, default=0)
    r.add_argument("--stop", type=int, default=None)
    r.set_defaults(func=cmd_replay)

    so = sub.add_parser(
        "soak",
        help="one worker at a fixed offered load with a growing user population: memory over time (PNG)",
    )
    so.add_argument("--minutes", type=float, default=30.0)
    so.add_argument("--rate", type=float, default=300.0, help="offered events/s")
    so.add_argument(
        "--new-users-per-s", type=float, default=20.0, help="never-seen users appearing per second"
    )
    so.add_argument(
        "--active-users", type=int, default=2_000, help="each event's user is among the most recent this many"
    )
    so.add_argument("--ttl", type=float, default=300.0, help="the worker's TIDE_USER_TTL_S (s of event time)")
    so.add_argument("--items", type=int, default=1_000)
    so.add_argument("--sample-s", type=float, default=10.0)
    so.add_argument("--bootstrap", default=None, help="a Kafka cluster to use instead of the embedded broker")
    so.add_argument("--workdir", type=Path, default=Path(".tide/soak"))
    so.add_argument("--out", type=Path, default=Path(".tide/soak"), help="soak.json and soak.png go here")
    so.set_defaults(func=cmd_soak)

    fg = sub.add_parser(
        "forget", help="erase users: their state, history and recommendations (deletion requests)"
    )
    fg.add_argument("users", nargs="+", help="user ids")
    fg.add_argument("--bootstrap", default=None)
    fg.set_defaults(func=cmd_forget)

    w = sub.add_parser("worker", help="run an engine worker (Faust app + confluent-kafka hot path)")
    w.add_argument("--bootstrap", default=None)
    w.add_argument("--web-port", type=int, default=None)
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("demo", help="broker, train, replay, worker and a report, all on embedded defaults")
    d.add_argument("--data", type=Path, default=defaults.data)
    d.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    d.add_argument("--rate", type=float, default=2000.0, help="offered events/s for the latency phase")
    d.add_argument("--workdir", type=Path, default=Path(".tide/demo"))
    d.add_argument("--catalog", type=Path, default=None, help="a catalogue file for the items topic (CSV or JSON lines)")
    d.set_defaults(func=cmd_demo)

    bb = sub.add_parser(
        "bench", help="throughput, latency, CPU, memory and state size: engine vs the raw Kafka pipe and a no-op model"
    )
    bb.add_argument("--data", type=Path, default=None, help="CSV log for the workload (default: synthetic)")
    bb.add_argument("--users", type=int, default=10_000, help="synthetic workload: users")
    bb.add_argument("--items", type=int, default=1_000, help="synthetic workload: catalogue size")
    bb.add_argument(
        "--active-users", type=int, default=0,
        help="synthetic workload: this many users with state written beforehand, events spread uniformly over them",
    )
    bb.add_argument("--events", type=int, default=60_000, help="events in the throughput phase")
    bb.add_argument("--rate", type=float, default=2000.0, help="offered events/s in the latency phase")
    bb.add_argument("--latency-seconds", type=float, default=15.0)
    bb.add_argument("--modes", default=",".join(("raw_pipe", "noop", "engine")), help="comma-separated subset")
    bb.add_argument("--bootstrap", default=None, help="a Kafka cluster to use instead of the embedded broker")
    bb.add_argument("--checkpoint", type=Path, default=None, help="default: the full model with untrained weights")
    bb.add_argument("--dim", type=int, default=64)
    bb.add_argument("--batch", type=int, default=defaults.batch_max_events, help="micro-batch size (events)")
    bb.add_argument("--top-k", type=int, default=10)
    bb.add_argument("--no-online", action="store_true", help="turn online learning off in the engine")
    bb.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    bb.add_argument("--report", type=Path, default=None, help="also write the figures as JSON")
    bb.add_argument("--workdir", type=Path, default=Path(".tide/bench"))
    bb.add_argument(
        "--topk-items", default="", help="also time exact top-10 for 256 users over these catalogue sizes, e.g. 1000,1000000"
    )
    bb.add_argument(
        "--scaling", type=Path, default=None,
        help="instead: the engine over catalogue size, micro-batch and width (synthetic); a PNG here, JSON beside it",
    )
    bb.set_defaults(func=cmd_bench)

    args = p.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from streams.liveness import KAFKA_CLIENT_LOGGERS, OncePerInterval

    for handler in logging.getLogger().handlers:  # a broker that is away must not flood the log
        handler.addFilter(OncePerInterval(names=KAFKA_CLIENT_LOGGERS))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
