"""``tide train``, ``catalog``, ``synthetic`` and ``encode-bench``: models, catalogues and data made
offline, and the training and catalogue helpers ``tide evaluate`` shares."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.cli.flags import DATA, DEVICES, EPOCHS_HELP, with_flags
from streams.config import Settings

if TYPE_CHECKING:
    from engine.catalog.knowledge import Catalog
    from engine.fold.online import OnlineConfig
    from engine.offline.train import TrainConfig

__all__ = ["add_catalogues", "add_train", "configs", "load_catalog"]


def configs(path: Path | None) -> tuple[TrainConfig, OnlineConfig]:
    """Training and online-learning hyper-parameters: defaults, overridden by a JSON file
    ``{"train": {...}, "online": {...}}``."""
    from engine.fold.online import OnlineConfig
    from engine.offline.train import TrainConfig

    raw = json.loads(Path(path).read_text()) if path else {}
    return TrainConfig.of(**raw.get("train", {})), OnlineConfig(**raw.get("online", {}))


def load_catalog(path: Path, settings: Settings) -> tuple[Catalog, int, dict[str, Any]]:
    """A catalogue file read and its text encoded (``settings.text_model``, on ``settings.device``)."""
    from streams.catalog_stage import load_catalog_file
    from streams.runtime import pick_device

    catalog, text_dim, info = load_catalog_file(path, settings, pick_device(settings.device).type)
    print(
        f"catalogue {path}: {len(catalog):,} items, text encoded in {info['encode_s']:.1f}s "
        f"({info['items_per_s']:,.0f} items/s)"
    )
    return catalog, text_dim, info


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from engine.checkpoint import save_checkpoint
    from engine.offline.data import read_csv
    from engine.offline.train import train

    settings = with_flags(
        settings, checkpoint_dir=args.out, bootstrap_servers=args.bootstrap, text_model=args.text_model
    )
    if args.topic:
        from streams.topic_log import read_topic

        log = read_topic(settings, args.topic)
        source = f"topic {args.topic}"
    else:
        log = read_csv(args.data)
        source = str(args.data)
    n = int(len(log) * args.fraction)
    cfg, _ = configs(args.config)
    cfg = replace(cfg, seed=args.seed).with_epochs(args.epochs)
    catalog, meta = None, {"data": source}
    if args.catalog:
        catalog, text_dim, meta["catalog"] = load_catalog(args.catalog, settings)
        cfg = cfg.with_text(text_dim)
    print(f"training on {n:,} of {len(log):,} interactions from {source} ({cfg.passes(n)} epochs)",
          flush=True)
    res = train(log.slice(0, n), cfg, attributes=catalog.attribute_edges if catalog else None)
    if catalog is not None:
        from engine.catalog.alignment import AlignTrainConfig, fit_alignment

        align = AlignTrainConfig(target=cfg.align_target)
        meta["alignment"] = fit_alignment(res.model, res.item_ids, catalog, align, log.slice(0, n)).to_dict()
    path = save_checkpoint(settings.checkpoint_dir, res.model, res.item_ids, res.meta(cfg) | meta)
    print(f"checkpoint {path} (loss per epoch {[round(x, 4) for x in res.losses]}, {res.seconds:.1f}s)")
    return 0


def cmd_synthetic(args: argparse.Namespace, settings: Settings) -> int:
    """Write a synthetic catalogue (JSON lines) and interaction log (CSV) whose item text carries the
    users' planted interests (topics, and subtopics that no attribute names), with a share of items that
    appear only late (cold start) and users who re-use their own items at planted rates."""
    from engine.offline.synthetic import catalog_log, write_catalog, write_log_csv

    cl = catalog_log(
        n_users=args.users,
        n_items=args.items,
        n_topics=args.topics,
        events_per_user=args.events_per_user,
        seed=args.seed,
        subtopics=args.subtopics,
        repeat_share=tuple(args.repeat_share),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_catalog(cl.items, args.out / "catalog.jsonl")
    write_log_csv(cl.log, args.out / "log.csv")
    used = {(u, i) for u, i in zip(cl.log.users, cl.log.items, strict=True)}
    print(
        f"{args.out}/catalog.jsonl: {len(cl.items):,} items ({len(cl.cold_items):,} appear only in the last "
        f"fifth of the log; {args.subtopics} subtopics per topic); {args.out}/log.csv: {len(cl.log):,} "
        f"interactions of {args.users:,} users, {1 - len(used) / len(cl.log):.0%} of them re-using an item"
    )
    return 0


def cmd_encode_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Item text encoding throughput on this machine."""
    import torch

    from engine.catalog.text import BATCH_SIZE, TextEncoder, encode_throughput
    from streams.runtime import pick_device

    settings = with_flags(settings, text_model=args.text_model)
    device = pick_device(args.device)
    encoder = TextEncoder(settings.text_model, device=device, batch_size=args.batch or BATCH_SIZE)
    for threads in [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [0]:
        if threads:
            torch.set_num_threads(threads)
        r = encode_throughput(encoder, args.items)
        print(
            f"{r['items']:,} item texts in {r['seconds']:.1f}s: {r['items_per_s']:,.0f} items/s "
            f"({r['device']}, batch {r['batch_size']}, {r['threads']} threads)"
        )
    return 0


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """Load a catalogue file into the items topic (keyed by item id; the topic is compacted)."""
    from engine.offline.data import read_catalog
    from streams.catalog_stage import produce_catalog

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    items = read_catalog(args.file)
    produce_catalog(settings, items)
    print(f"{len(items):,} catalogue items → {settings.topics.items}")
    return 0


def add_train(sub: Any, settings: Settings) -> None:
    """``train``."""
    t = sub.add_parser("train", help="train a model on the first part of a log and write a checkpoint")
    t.add_argument("--data", type=Path, default=DATA, help="CSV: user, item, timestamp (header optional)")
    t.add_argument("--topic", default=None, help="train on this interactions topic instead of a CSV")
    t.add_argument("--bootstrap", default=None)
    t.add_argument("--fraction", type=float, default=0.8, help="leading share of rows to train on")
    t.add_argument("--epochs", type=int, default=None, help=EPOCHS_HELP)
    t.add_argument("--config", type=Path, default=None, help='JSON {"train": {...}}')
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=settings.checkpoint_dir)
    t.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="catalogue (CSV or JSON lines): train the text alignment too, so the worker can use item text",
    )
    t.add_argument(
        "--text-model", type=Path, default=None, help="local transformers model folder for item text"
    )
    t.set_defaults(func=cmd_train)


def add_catalogues(sub: Any, settings: Settings) -> None:
    """``catalog``, ``synthetic`` and ``encode-bench``."""
    c = sub.add_parser("catalog", help="load a catalogue file (CSV or JSON lines) into the items topic")
    c.add_argument(
        "file", type=Path, help="item_id, title, text, attributes (CSV with a header, or JSON lines)"
    )
    c.add_argument("--bootstrap", default=None)
    c.set_defaults(func=cmd_catalog)

    sy = sub.add_parser(
        "synthetic", help="write a synthetic catalogue with text and a log with planted interests"
    )
    sy.add_argument("--out", type=Path, default=Path(".tide/synthetic"))
    sy.add_argument("--users", type=int, default=500)
    sy.add_argument("--items", type=int, default=600)
    sy.add_argument("--topics", type=int, default=8)
    sy.add_argument("--events-per-user", type=int, default=40)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument(
        "--subtopics",
        type=int,
        default=3,
        help="subtopics per topic, told apart by the item text only (1: none)",
    )
    sy.add_argument(
        "--repeat-share",
        type=float,
        nargs=2,
        default=(0.1, 0.7),
        metavar=("LO", "HI"),
        help="each user re-picks a recent item of theirs at a rate drawn uniformly in [LO, HI] (0 0: never)",
    )
    sy.set_defaults(func=cmd_synthetic)

    eb = sub.add_parser("encode-bench", help="item text encoding throughput (items/s)")
    eb.add_argument("--items", type=int, default=2000)
    eb.add_argument(
        "--batch", type=int, default=None, help="texts per encoder batch (default: the encoder's)"
    )
    eb.add_argument("--threads", default="1,2", help="CPU: torch threads to try, comma-separated")
    eb.add_argument("--device", default="auto", choices=DEVICES)
    eb.add_argument("--text-model", type=Path, default=None)
    eb.set_defaults(func=cmd_encode_bench)
