"""``tide broker``, ``topics``, ``start``, ``worker``, ``item-stage``, ``learner``, ``replay``, ``forget``,
``soak`` and ``demo``: the commands that run against a broker."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from streams.cli.flags import DATA, EPOCHS_HELP, option_defaults, with_flags
from streams.config import Settings

__all__ = ["add_cluster_commands", "add_stream_commands"]


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import create_topics
    from streams.broker import EmbeddedBroker
    from streams.topics import topic_specs

    broker = EmbeddedBroker(port=args.port)
    broker.start()
    settings = with_flags(settings, bootstrap_servers=broker.bootstrap_servers, partitions=args.partitions)
    create_topics(broker.bootstrap_servers, topic_specs(settings))
    print(f"embedded broker on {broker.bootstrap_servers}; topics created. Ctrl-C to stop.", flush=True)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait needs them blocked to receive them
    try:
        signal.sigwait(stop_signals)
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import create_topics
    from streams.topics import topic_specs

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    specs = topic_specs(settings)
    create_topics(settings.bootstrap_servers, specs, admin_conf=settings.librdkafka())
    print("topics ready: " + ", ".join(f"{s.name} ({s.partitions})" for s in specs))
    return 0


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """Create the missing topics, find or train the checkpoint, then become ``tide ROLE``."""
    from streams.deploy import FirstCheckpoint, create_missing_topics, ensure_checkpoint, role_argv

    # A container's first process ignores a signal it has no handler for: stop on SIGTERM while training.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    if not args.no_topics:
        create_missing_topics(settings, args.replication_factor)
    first = FirstCheckpoint(data=args.data, epochs=args.epochs)
    path, trained = ensure_checkpoint(settings, first)
    print(f"checkpoint {path}{' (trained now)' if trained else ''}; starting tide {args.role}", flush=True)
    argv = role_argv(args.role, args.log_level, args.bootstrap)
    sys.stderr.flush()
    os.execv(argv[0], argv)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from engine.offline.data import read_csv
    from streams.replay import replay

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    log = read_csv(args.data)
    res = replay(
        settings.producer_conf(),
        settings.topics.interactions,
        log,
        start=args.start,
        stop=args.stop,
        rate=args.rate,
    )
    print(f"replayed {res.n:,} events in {res.seconds:.1f}s ({res.events_per_s:,.0f} events/s)")
    return 0


def cmd_soak(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from streams.forget import request_deletion

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    n = request_deletion(settings, args.users)
    print(
        f"deletion requested for {len(args.users):,} users "
        f"({n:,} records on {settings.topics.user_deletions})"
    )
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import run_worker

    return run_worker(with_flags(settings, bootstrap_servers=args.bootstrap, web_port=args.web_port))


def cmd_item_stage(args: argparse.Namespace, settings: Settings) -> int:
    """A member of the shared item stage's group on its own (streams/item_stage.py), until SIGTERM."""
    from streams.item_stage import ItemStageRunner
    from streams.runtime import pick_device, resolve_checkpoint

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    return _run_member(ItemStageRunner(
        settings, resolve_checkpoint(settings), pick_device(settings.device), settings.transactional_id()
    ))


def cmd_learner(args: argparse.Namespace, settings: Settings) -> int:
    """A member of the fleet learner's group on its own (streams/learner.py), until SIGTERM."""
    from streams.learner import FleetLearner
    from streams.runtime import pick_device, resolve_checkpoint

    settings = with_flags(settings, bootstrap_servers=args.bootstrap)
    return _run_member(FleetLearner(
        settings, resolve_checkpoint(settings), pick_device(settings.device), settings.transactional_id()
    ))


def _run_member(runner: Any) -> int:
    """Run a group member's thread until SIGTERM or SIGINT; exit 3 if it failed."""
    import signal
    import threading

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    runner.start()
    while not stopped.wait(1.0) and runner.thread.is_alive():
        pass
    runner.stop()
    return 0 if runner.error is None else 3


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            data=args.data, epochs=args.epochs, rate=args.rate, workdir=args.workdir, catalog=args.catalog,
            workers=args.workers,
        )
    )


def add_cluster_commands(sub: Any, settings: Settings) -> None:
    """``broker``, ``topics`` and ``start``."""
    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (loopback) with TIDE's topics")
    b.add_argument("--port", type=int, default=0, help="0 = a free port")
    b.add_argument("--partitions", type=int, default=settings.partitions)
    b.set_defaults(func=cmd_broker)

    tp = sub.add_parser("topics", help="create TIDE's topics on the configured cluster (idempotent)")
    tp.add_argument("--bootstrap", default=None)
    tp.set_defaults(func=cmd_topics)

    _add_start(sub)


def _add_start(sub: Any) -> None:
    from streams.deploy import ROLES, FirstCheckpoint

    d = option_defaults(FirstCheckpoint)
    st = sub.add_parser(
        "start",
        help="what a container runs: create missing topics, use the checkpoint or train one, then run ROLE",
    )
    st.add_argument("role", choices=ROLES, help="the command to become")
    st.add_argument("--bootstrap", default=None)
    st.add_argument(
        "--data",
        type=Path,
        default=d["data"],
        help="CSV log to train on when there is no checkpoint; default: a synthetic log",
    )
    st.add_argument("--epochs", type=int, default=d["epochs"], help=EPOCHS_HELP)
    st.add_argument(
        "--no-topics", action="store_true", help="create no topics (they exist, or no rights to create them)"
    )
    st.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        help="of the topics it creates; default -1: the cluster's default.replication.factor",
    )
    st.set_defaults(func=cmd_start)


def add_stream_commands(sub: Any, settings: Settings) -> None:
    """``replay``, ``soak``, ``forget``, ``worker`` and ``demo``."""
    r = sub.add_parser("replay", help="produce a CSV log (user,item,timestamp) to the interactions topic")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--bootstrap", default=None)
    r.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    r.add_argument("--start", type=int, default=0)
    r.add_argument("--stop", type=int, default=None)
    r.set_defaults(func=cmd_replay)

    _add_soak(sub)

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

    it = sub.add_parser(
        "item-stage",
        help="run a member of the shared item stage alone (TIDE_ITEM_STAGE=shared workers run one too)",
    )
    it.add_argument("--bootstrap", default=None)
    it.set_defaults(func=cmd_item_stage)

    le = sub.add_parser(
        "learner", help="run a member of the fleet learner alone (TIDE_LEARNER=fleet workers run one too)"
    )
    le.add_argument("--bootstrap", default=None)
    le.set_defaults(func=cmd_learner)

    _add_demo(sub, settings)


def _add_soak(sub: Any) -> None:
    from streams.soak import SoakOptions

    d = option_defaults(SoakOptions)
    so = sub.add_parser(
        "soak",
        help="one worker at a fixed offered load with a growing user population: memory over time (PNG)",
    )
    so.add_argument("--minutes", type=float, default=d["minutes"])
    so.add_argument("--rate", type=float, default=d["rate"], help="offered events/s")
    so.add_argument(
        "--new-users-per-s",
        type=float,
        default=d["new_users_per_s"],
        help="never-seen users appearing per second",
    )
    so.add_argument(
        "--active-users",
        type=int,
        default=d["active_users"],
        help="each event's user is among the most recent this many",
    )
    so.add_argument(
        "--ttl", type=float, default=d["user_ttl_s"], help="the worker's TIDE_USER_TTL_S (s of event time)"
    )
    so.add_argument("--items", type=int, default=d["items"])
    so.add_argument("--sample-s", type=float, default=d["sample_s"])
    so.add_argument("--bootstrap", default=None, help="a Kafka cluster to use instead of the embedded broker")
    so.add_argument("--workdir", type=Path, default=d["workdir"])
    so.add_argument("--out", type=Path, default=d["workdir"], help="soak.json and soak.png go here")
    so.set_defaults(func=cmd_soak)


def _add_demo(sub: Any, settings: Settings) -> None:
    d = sub.add_parser("demo", help="broker, train, replay, worker and a report, all on embedded defaults")
    d.add_argument("--data", type=Path, default=DATA)
    d.add_argument("--epochs", type=int, default=None, help=EPOCHS_HELP)
    d.add_argument("--rate", type=float, default=2000.0, help="offered events/s for the latency phase")
    d.add_argument("--workdir", type=Path, default=Path(".tide/demo"))
    d.add_argument(
        "--workers", type=int, default=1,
        help="worker processes in one consumer group (the input gets as many partitions)",
    )
    d.add_argument(
        "--catalog", type=Path, default=None, help="a catalogue file for the items topic (CSV or JSON lines)"
    )
    d.set_defaults(func=cmd_demo)
