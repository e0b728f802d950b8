"""``tide``: the command line. Settings are read once from ``TIDE_*`` environment variables, here,
and handed to the command; its flags override them (:func:`streams.cli.flags.with_flags`).

Commands by theme: :mod:`~streams.cli.run` (broker, topics, start, worker, item-stage,
learner, replay, forget, soak, demo),
:mod:`~streams.cli.data` (train, catalog, synthetic, encode-bench), :mod:`~streams.cli.evaluate` and
:mod:`~streams.cli.bench`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from streams.cli import bench, data, evaluate, run
from streams.config import Settings
from streams.memory import tune_allocator

__all__ = ["main"]


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every command's parser; defaults that are settings come from ``settings``."""
    p = argparse.ArgumentParser(prog="tide", description="TIDE: Temporal Interest Dynamics Engine")
    p.add_argument("--log-level", default=settings.log_level)
    sub = p.add_subparsers(dest="cmd", required=True)
    run.add_cluster_commands(sub, settings)
    data.add_train(sub, settings)
    evaluate.add_commands(sub, settings)
    data.add_catalogues(sub, settings)
    run.add_stream_commands(sub, settings)
    bench.add_commands(sub, settings)
    return p


def _configure_logging(level: str) -> None:
    from streams.liveness import KAFKA_CLIENT_LOGGERS, OncePerInterval

    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # a broker that is away must not flood the log
        handler.addFilter(OncePerInterval(names=KAFKA_CLIENT_LOGGERS))


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings()
    args = build_parser(settings).parse_args(argv)
    _configure_logging(args.log_level)
    # before the clients, threads and tensors that allocate most exist: training and evaluation over a
    # large catalogue fragment glibc's heap with a batch's score matrices as much as the worker does
    tune_allocator()
    return int(args.func(args, settings) or 0)
