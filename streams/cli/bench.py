"""``tide bench``: its flags (defaults from :class:`streams.bench.BenchOptions`) and the command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.cli.flags import DEVICES, option_defaults
from streams.config import Settings

__all__ = ["add_commands"]


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.bench import BenchOptions, print_table, run_bench, run_scaling, topk_cost, write_report

    opts = BenchOptions(
        data=args.data,
        users=args.users,
        active_users=args.active_users,
        items=args.items,
        popularity=args.popularity,
        zipf=args.zipf,
        user_pattern=args.user_pattern,
        new_items=args.new_items,
        events=args.events,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        modes=_modes(args.modes),
        bootstrap=args.bootstrap,
        checkpoint=args.checkpoint,
        dim=args.dim,
        batch_max_events=args.batch,
        top_k=args.top_k,
        online_learning=not args.no_online,
        device=args.device,
        workdir=args.workdir,
        item_stage=args.item_stage,
    )
    if args.index_curve:
        return _index_curve(args)
    if args.restore_users:
        return _restore(args.restore_users, args.bootstrap, args.report)
    if args.workers:
        return _fleet(opts, args.workers, args.report)
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


def _index_curve(args: argparse.Namespace) -> int:
    from streams.bench import write_report
    from streams.bench.index_curve import plot_index_curve, run_index_curve

    if args.data is None:
        raise SystemExit("--index-curve needs --data (a log to train on, or to fold with --checkpoint)")
    curve = run_index_curve(args.data, args.checkpoint, args.epochs, args.device)
    plot_index_curve(curve, args.index_curve)
    write_report(curve, args.index_curve.with_suffix(".json"))
    print(f"index curve: {args.index_curve}, figures: {args.index_curve.with_suffix('.json')}")
    return 0


def _restore(users: int, bootstrap: str | None, report: Path | None) -> int:
    import contextlib

    from streams.bench import write_report
    from streams.bench.restore import restore_cost
    from streams.broker import EmbeddedBroker

    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        r = restore_cost(bootstrap, users)
    print(f"restore of {r['users']:,} users ({r['mean_state_bytes']:.0f} B each) from the changelog into an "
          f"empty store: {r['seconds']:.2f} s, {r['seconds_per_100k_users']:.2f} s per 100k users")
    if report:
        write_report({"restore": r}, report)
    return 0


def _fleet(opts: Any, flag: str, report: Path | None) -> int:
    from streams.bench import write_report
    from streams.bench.run import run_fleet_bench

    sizes = [int(n) for n in flag.split(",") if n.strip()]
    out = run_fleet_bench(opts, sizes)
    for r in out["fleet"]:
        ratio = f", {r['ratio_to_one']:.2f}x one worker" if "ratio_to_one" in r else ""
        stale = r.get("item_staleness_ms")
        lag = f"; item side behind by p50 {stale['p50']:.0f} ms, p99 {stale['p99']:.0f} ms" if stale else ""
        print(f"{r['workers']} worker process(es), {r['partitions']} partitions, item stage "
              f"{r['item_stage']}: {r['events']:,} events in {r['seconds']:.1f} s, "
              f"{r['events_per_s']:,.0f} events/s{ratio}{lag}")
    r = out["restore"]
    print(f"restore of {r['users']:,} users from the changelog into an empty store: {r['seconds']:.2f} s")
    if report:
        write_report(out, report)
    return 0


def _modes(flag: str) -> list[str]:
    from streams.bench import MODES

    modes = [m.strip() for m in flag.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    return modes


def add_commands(sub: Any, settings: Settings) -> None:
    """``bench``."""
    from streams.bench import BenchOptions

    d = option_defaults(BenchOptions)
    bb = sub.add_parser(
        "bench",
        help="throughput, latency, CPU, memory and state size: engine vs the raw Kafka pipe and "
        "a no-op model",
    )
    _add_workload_flags(bb, d)
    _add_run_flags(bb, d)
    bb.set_defaults(func=cmd_bench)


def _add_workload_flags(bb: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """The events: their source and number, their shape, and the latency phase's offered rate."""
    from streams.bench.options import POPULARITY, USER_PATTERNS
    from streams.bench.workload import NEW_ITEM_EVENTS, SESSION_EVENTS

    bb.add_argument(
        "--data", type=Path, default=d["data"], help="CSV log for the workload (default: synthetic)"
    )
    bb.add_argument("--users", type=int, default=d["users"], help="synthetic workload: users")
    bb.add_argument("--items", type=int, default=d["items"], help="synthetic workload: catalogue size")
    bb.add_argument(
        "--active-users",
        type=int,
        default=d["active_users"],
        help="synthetic workload: this many users with state written beforehand, "
        "each event's user drawn among them (uniformly, unless --popularity zipf)",
    )
    bb.add_argument(
        "--popularity",
        choices=POPULARITY,
        default=d["popularity"],
        help="synthetic workload: how events spread over users and items: zipf (rank k of n with "
        "probability ∝ (k+1)^-s, s from --zipf) or uniform (default: a Zipf-like mix in which 70%% of "
        "a user's events go back to eight items of their own; uniform with --active-users)",
    )
    bb.add_argument(
        "--zipf",
        type=_positive_float,
        default=d["zipf"],
        metavar="S",
        help="the exponent s of --popularity zipf, for users and items (default %(default)s)",
    )
    bb.add_argument(
        "--user-pattern",
        choices=USER_PATTERNS,
        default=d["user_pattern"],
        help="synthetic workload: uniform (each event's user drawn on its own) or bursty (users in "
        f"sessions of {SESSION_EVENTS} events on average that interleave a little) "
        "(default %(default)s)",
    )
    bb.add_argument(
        "--new-items",
        type=_share,
        default=d["new_items"],
        metavar="SHARE",
        help="synthetic workload: this share of events goes to items outside the checkpoint's "
        f"catalogue, n0, n1, … debuting in order over the run, about {NEW_ITEM_EVENTS} events each "
        "(default %(default)s)",
    )
    bb.add_argument("--events", type=int, default=d["events"], help="events in the throughput phase")
    bb.add_argument("--rate", type=float, default=d["rate"], help="offered events/s in the latency phase")
    bb.add_argument("--latency-seconds", type=float, default=d["latency_seconds"])


def _share(text: str) -> float:
    x = float(text)
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a share in [0, 1)")
    return x


def _positive_float(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return x


def _add_run_flags(bb: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    """What runs the events (modes, cluster, model, worker) and where the figures go."""
    bb.add_argument("--modes", default=",".join(d["modes"]), help="comma-separated subset")
    bb.add_argument(
        "--bootstrap", default=d["bootstrap"], help="a Kafka cluster to use instead of the embedded broker"
    )
    bb.add_argument(
        "--checkpoint",
        type=Path,
        default=d["checkpoint"],
        help="default: the full model with untrained weights",
    )
    bb.add_argument("--dim", type=int, default=d["dim"])
    bb.add_argument("--batch", type=int, default=d["batch_max_events"], help="micro-batch size (events)")
    bb.add_argument("--top-k", type=int, default=d["top_k"])
    bb.add_argument("--no-online", action="store_true", help="turn online learning off in the engine")
    bb.add_argument("--device", default=d["device"], choices=DEVICES)
    bb.add_argument(
        "--item-stage", default=d["item_stage"], choices=("local", "shared"),
        help="the workers' TIDE_ITEM_STAGE",
    )
    bb.add_argument("--report", type=Path, default=None, help="also write the figures as JSON")
    bb.add_argument("--workdir", type=Path, default=d["workdir"])
    bb.add_argument(
        "--topk-items",
        default="",
        help="also time top-10 for 256 users over these catalogue sizes, exact and through the candidate "
        "index, e.g. 1000,1000000",
    )
    bb.add_argument(
        "--workers",
        default="",
        help="instead: the full worker as fleets of these many processes in one group, e.g. 1,2",
    )
    bb.add_argument(
        "--restore-users",
        type=int,
        default=0,
        help="instead: restore this many users' state from a changelog into an empty store, timed",
    )
    bb.add_argument(
        "--index-curve",
        type=Path,
        default=None,
        help="instead: the candidate index's recall of the exact top-100 against its cost over nprobe, "
        "on a model trained on --data (or --checkpoint) after folding --data; a PNG here, JSON beside it",
    )
    bb.add_argument("--epochs", type=int, default=None, help="--index-curve: training passes")
    bb.add_argument(
        "--scaling",
        type=Path,
        default=None,
        help="instead: the engine over catalogue size, micro-batch, width and active users (synthetic); "
        "a PNG here, JSON beside it",
    )
