"""``tide evaluate``: train on a protocol's training split (or load a checkpoint), stream the rest
through the fold, and rank every next item against the baselines; ``--cold-start`` scores items
known only by their text."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.cli.data import configs, load_catalog
from streams.cli.flags import DATA, EPOCHS_HELP, with_flags
from streams.config import Settings

if TYPE_CHECKING:
    from engine.catalog.knowledge import Catalog
    from engine.fold.online import OnlineConfig
    from engine.offline.data import InteractionLog
    from engine.offline.train import TrainConfig

__all__ = ["add_commands"]


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.offline.data import read_csv
    from engine.offline.evaluation import evaluate_stream
    from engine.offline.protocols import split_log
    from streams.report import build_report, plot_over_time, write_report
    from streams.runtime import index_config

    train_cfg, online_cfg = configs(args.config)
    train_cfg = train_cfg.with_epochs(args.epochs)
    if args.no_online:
        online_cfg = replace(online_cfg, enabled=False)
    log = read_csv(args.data)
    split = split_log(log, args.protocol)
    timings: dict[str, float] = {}
    catalog, extra = None, {}
    if args.catalog:
        catalog, text_dim, extra["catalog"] = load_catalog(
            args.catalog, with_flags(settings, text_model=args.text_model)
        )
        train_cfg = train_cfg.with_text(text_dim)
    if args.cold_start:
        return _cold_start(args, log, split.train_end, catalog, train_cfg, online_cfg, extra)
    model, item_ids = _model(args, settings, log, split.train_end, train_cfg, catalog, timings, extra)
    rr = evaluate_stream(
        model,
        item_ids,
        log,
        split.train_end,
        online=online_cfg,
        at_row_time=not args.as_emitted,
        catalog=catalog,
        item_delay=args.item_delay,
        index=index_config(settings),
    )
    timings |= {"evaluate_s": rr.seconds, "events_per_s": rr.extra["events_per_s"]}
    query_time = "previous event" if args.as_emitted else "row"
    configuration = {
        "train": asdict(train_cfg), "online": asdict(online_cfg), "query_time": query_time,
        "item_delay": args.item_delay,
    }
    report = build_report(rr, split, str(args.data), timings, configuration) | extra
    _print_table(report)
    if args.report:
        write_report(report, args.report)
        png = args.report.with_suffix(".png")
        plot_over_time(rr, split, png)
        print(f"report: {args.report}, plot: {png}")
    return 0


def _model(
    args: argparse.Namespace,
    settings: Settings,
    log: InteractionLog,
    train_end: int,
    train_cfg: TrainConfig,
    catalog: Catalog | None,
    timings: dict[str, float],
    extra: dict[str, Any],
) -> tuple[Any, list[str]]:
    """The model to evaluate and its item ids: ``--checkpoint``, or one trained on the first
    ``train_end`` rows (its training time goes into ``timings``, its text alignment into ``extra``)."""
    from engine.catalog.alignment import AlignTrainConfig, fit_alignment
    from engine.checkpoint import load_checkpoint
    from engine.offline.train import train
    from streams.runtime import pick_device

    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint, pick_device(settings.device))
        return ckpt.model, ckpt.item_ids
    print(
        f"training on the {train_end:,} {args.protocol} training rows of {args.data} "
        f"({train_cfg.passes(train_end)} epochs)",
        flush=True,
    )
    res = train(log.slice(0, train_end), train_cfg, attributes=catalog.attribute_edges if catalog else None)
    timings["train_s"] = res.seconds
    if catalog is not None:
        align = AlignTrainConfig(target=train_cfg.align_target)
        extra["alignment"] = fit_alignment(
            res.model, res.item_ids, catalog, align, log.slice(0, train_end)
        ).to_dict()
    return res.model, res.item_ids


def _cold_start(
    args: argparse.Namespace,
    log: InteractionLog,
    train_end: int,
    catalog: Catalog | None,
    train_cfg: TrainConfig,
    online_cfg: OnlineConfig,
    extra: dict[str, Any],
) -> int:
    from engine.catalog.alignment import AlignTrainConfig, fit_alignment
    from engine.offline.cold_start import cold_start_split, evaluate_cold_start
    from engine.offline.train import train

    if catalog is None:
        print("--cold-start needs --catalog (the held-out items are known only by their text and attributes)")
        return 2
    cs = cold_start_split(log, train_end, share=args.cold_share, seed=train_cfg.seed)
    print(
        f"cold start: {len(cs.held_out):,} items held out of the {cs.train_end:,} training rows; "
        f"scoring their first interactions ({len(cs.rows):,} rows)",
        flush=True,
    )
    res = train(cs.log.slice(0, cs.train_end), train_cfg, attributes=catalog.attribute_edges)
    align = AlignTrainConfig(target=train_cfg.align_target)
    extra["alignment"] = fit_alignment(
        res.model, res.item_ids, catalog, align, cs.log.slice(0, cs.train_end)
    ).to_dict()
    out = evaluate_cold_start(res.model, res.item_ids, cs, catalog, online_cfg)
    _print_cold_start(out, cs.extra["first_n"], extra["alignment"])
    if args.report:
        report = {
            "cold_start": out,
            "protocol": args.protocol,
            "data": str(args.data),
            "catalog_file": str(args.catalog),
            "timings": {"train_s": res.seconds, "evaluate_s": out["seconds"]},
        } | extra
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
        print(f"report: {args.report}")
    return 0


def _print_cold_start(out: dict[str, Any], first_n: int, alignment: dict[str, Any]) -> None:
    print(
        f"\n{'method':<24} {'R@10':>7} {'MRR':>7} {'median rank':>12}   "
        f"(first {first_n} interactions of each held-out item, {out['rows']:,} rows)"
    )
    for name, m in out["metrics"].items():
        print(
            f"{name:<24} {m['recall@10']:7.4f} {m.get('mrr', float('nan')):7.4f} "
            f"{m['median_rank']:7.0f} ({m['median_percentile']:.2f})"
        )
    a = alignment
    print(
        f"alignment: held-out Recall@10 {a['heldout_recall_at_10']:.3f} "
        f"(random {a['random_recall_at_10']:.3f})"
    )


def _print_table(report: dict[str, Any]) -> None:
    rows = [("TIDE model", report["model"])] + list(report["baselines"].items())
    print(f"\n{report['protocol']} protocol, test rows {report['model']['n']:,}, {report['n_items']:,} items")
    print(
        f"{'method':<24} {'MRR':>7} {'R@10':>7} {'NDCG@10':>8} {'rep R@10':>9} {'new R@10':>9} {'val MRR':>8}"
    )
    val = {"TIDE model": report["validation"]["model"], **report["validation"]["baselines"]}
    for name, m in rows:
        print(
            f"{name:<24} {m['mrr']:7.4f} {m['recall@10']:7.4f} {m['ndcg@10']:8.4f} "
            f"{m['repeat']['recall@10']:9.4f} {m['first_time']['recall@10']:9.4f} {val[name]['mrr']:8.4f}"
        )
    best = report["strongest_baseline"]
    delta = report["model"]["mrr"] - report["baselines"][best]["mrr"]
    print(f"strongest baseline: {best} (MRR {delta:+.4f})")
    cal = report["model"].get("explore_calibration")
    if cal and cal.get("n"):
        print(
            f"P(new to the user): mean {cal['mean_predicted']:.3f} against {cal['observed']:.3f} observed, "
            f"ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}"
        )


def _events(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"a number of events ≥ 0, not {value}")
    return n


def cmd_evaluate_drift(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from engine.offline.drift_eval import detect_drifts, drift_distances
    from engine.offline.synthetic import drifting_log
    from models.interest import InterestConfig, InterestModel

    thresholds = [float(x) for x in args.thresholds.split(",")]
    report: dict[str, Any] = {"chosen_on": "validation", "runs": []}
    for split, seeds in (("validation", args.val_seeds), ("test", args.test_seeds)):
        for seed in (int(x) for x in seeds.split(",")):
            d = drifting_log(
                n_users=args.users, events_per_user=args.events_per_user, drift_share=0.5, seed=seed
            )
            # The distance reads only the users' item profiles, which no weight changes: an untrained
            # model with the default profile size folds the log as a trained one would for it.
            item_ids = list(dict.fromkeys(d.log.items.tolist()))
            torch.manual_seed(seed)
            model = InterestModel(InterestConfig(n_items=len(item_ids))).eval()
            dist = drift_distances(model, item_ids, d)
            for th in thresholds:
                row = {"split": split, "seed": seed, **detect_drifts(d, dist, th).as_dict()}
                report["runs"].append(row)
                print(json.dumps(row))
    val = [r for r in report["runs"] if r["split"] == "validation"]
    # the threshold with the most hits at a false-alarm rate of at most 2%, on the validation seeds
    ok = [th for th in thresholds
          if max(r["false_alarm_rate"] for r in val if r["threshold"] == th) <= 0.02] or thresholds[-1:]
    best = max(ok, key=lambda th: sum(r["hit_rate"] for r in val if r["threshold"] == th))
    test = [r for r in report["runs"] if r["split"] == "test" and r["threshold"] == best]
    report["threshold"] = best
    report["test"] = {
        k: sum(r[k] for r in test) / len(test) for k in ("hit_rate", "false_alarm_rate", "early_alarm_rate")
    }
    t = report["test"]
    print(f"threshold {best} (validation seeds {args.val_seeds}); test seeds {args.test_seeds}: "
          f"hit rate {t['hit_rate']:.3f}, false-alarm rate {t['false_alarm_rate']:.3f}, "
          f"early alarms {t['early_alarm_rate']:.3f}")
    return 0


def add_commands(sub: Any, settings: Settings) -> None:
    """``evaluate``, ``evaluate-drift``."""
    dr = sub.add_parser(
        "evaluate-drift",
        help="interest-drift detection on synthetic logs with planted drifts: hit and false-alarm rates",
    )
    dr.add_argument("--thresholds", default="0.3,0.35,0.4,0.45,0.5,0.55,0.6")
    dr.add_argument("--val-seeds", default="0", help="seeds of the logs the threshold is chosen on")
    dr.add_argument("--test-seeds", default="1,2", help="seeds of the logs it is reported on")
    dr.add_argument("--users", type=int, default=200, help="users per log (half of them drift)")
    dr.add_argument("--events-per-user", type=int, default=40)
    dr.set_defaults(func=cmd_evaluate_drift)
    e = sub.add_parser(
        "evaluate",
        help="train on a protocol's training split, stream the rest through the fold, rank every next item",
    )
    e.add_argument("--data", type=Path, default=DATA, help="CSV: user, item, timestamp (header optional)")
    e.add_argument("--protocol", choices=["jodie", "tgb"], default="jodie")
    e.add_argument(
        "--checkpoint", type=Path, default=None, help="evaluate this checkpoint instead of training"
    )
    e.add_argument("--config", type=Path, default=None, help='JSON {"train": {...}, "online": {...}}')
    e.add_argument("--epochs", type=int, default=None, help=EPOCHS_HELP)
    e.add_argument("--no-online", action="store_true", help="turn online learning off")
    e.add_argument(
        "--as-emitted",
        action="store_true",
        help="rank each row with the recommendation pushed at the user's previous event, "
        "instead of at the row's own time (the protocols' query time)",
    )
    e.add_argument(
        "--item-delay",
        type=_events,
        default=0,
        metavar="N",
        help="fold each event into the items (memories, transitions, counts) only once N later events "
        "have been folded into the users, as with the item stage shared behind Kafka (default 0)",
    )
    e.add_argument(
        "--report", type=Path, default=None, help="write the JSON report here (and a PNG beside it)"
    )
    e.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="catalogue (CSV or JSON lines: item_id, title, text, attributes): "
        "item text and attributes join the model",
    )
    e.add_argument(
        "--text-model", type=Path, default=None, help="local transformers model folder for item text"
    )
    e.add_argument(
        "--cold-start",
        action="store_true",
        help="hold a share of items out of training; "
        "Recall@10 on their first interactions, with and without text",
    )
    e.add_argument("--cold-share", type=float, default=0.1, help="share of items held out with --cold-start")
    e.set_defaults(func=cmd_evaluate)
