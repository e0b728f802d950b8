"""What a container runs (``tide start ROLE``): create the topics that are missing, find the checkpoint
or train one, then become ``tide ROLE``, so that a worker, item stage or learner starts on an empty
volume.

The checkpoint is ``TIDE_CHECKPOINT`` when set, else the newest in ``TIDE_CHECKPOINT_DIR``. When that
folder holds none, one is trained into it: on a CSV log when one is given, else on a synthetic log
(:func:`engine.offline.synthetic.catalog_log`), which only lets the stack start; its items are not a
real catalogue's.

Every process of a fleet serves the same model, so they share one checkpoint folder and may start
together. Training holds an exclusive ``flock`` on :data:`LOCK_FILE` in that folder (the kernel releases
it when its holder exits, however it exits); a process that gets the lock after another trained finds
that checkpoint and trains nothing. A checkpoint appears under its final name only once it is complete
(:func:`engine.checkpoint.save_checkpoint` writes it aside, then renames it).
"""

from __future__ import annotations

import fcntl
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streams.config import Settings

__all__ = ["LOCK_FILE", "ROLES", "FirstCheckpoint", "create_missing_topics", "ensure_checkpoint", "role_argv"]

logger = logging.getLogger(__name__)

#: the commands ``tide start`` becomes: each loads the checkpoint
ROLES = ("worker", "item-stage", "learner")
#: in the checkpoint folder: held by the process that trains
LOCK_FILE = ".train.lock"


@dataclass(frozen=True)
class FirstCheckpoint:
    """What to train when the checkpoint folder is empty: all of ``data`` (CSV: user, item, timestamp),
    or, without it, a synthetic log of ``users`` × ``events_per_user`` events on ``items`` items."""

    data: Path | None = None
    epochs: int | None = None  # None: TrainConfig's (2 passes, more on a small log); N: exactly N
    seed: int = 0
    users: int = 200
    items: int = 300
    events_per_user: int = 30


def create_missing_topics(settings: Settings, replication_factor: int = -1) -> None:
    """Create the topics that do not exist; fail if one exists with other partitions. A replication
    factor of -1 is the cluster's ``default.replication.factor`` (Kafka 2.4 and later)."""
    from streams.admin import create_topics
    from streams.topics import topic_specs

    specs = topic_specs(settings)
    create_topics(
        settings.bootstrap_servers,
        specs,
        timeout_s=settings.wait_s(),
        admin_conf=settings.librdkafka(),
        replication_factor=replication_factor,
    )
    logger.info("topics ready: %s", ", ".join(f"{s.name} ({s.partitions})" for s in specs))


def ensure_checkpoint(settings: Settings, first: FirstCheckpoint) -> tuple[Path, bool]:
    """The checkpoint the process will load, and whether it was trained now."""
    from engine.checkpoint import latest_checkpoint

    if settings.checkpoint is not None:
        if not settings.checkpoint.is_file():
            raise FileNotFoundError(f"TIDE_CHECKPOINT={settings.checkpoint}: no such file")
        return settings.checkpoint, False
    directory = settings.checkpoint_dir
    found = latest_checkpoint(directory)
    if found is not None:
        return found, False
    directory.mkdir(parents=True, exist_ok=True)
    with _training_lock(directory):
        found = latest_checkpoint(directory)  # another process may have trained while this one waited
        if found is not None:
            logger.info("checkpoint %s, trained by another process", found)
            return found, False
        return _train(directory, first), True


@contextmanager
def _training_lock(directory: Path) -> Iterator[None]:
    with open(directory / LOCK_FILE, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is training into %s; waiting for its checkpoint", directory)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train(directory: Path, first: FirstCheckpoint) -> Path:
    from engine.checkpoint import save_checkpoint
    from engine.offline.train import TrainConfig, train

    if first.data is not None:
        from engine.offline.data import read_csv

        log, source = read_csv(first.data), str(first.data)
    else:
        from engine.offline.synthetic import catalog_log

        log = catalog_log(
            n_users=first.users, n_items=first.items, events_per_user=first.events_per_user, seed=first.seed
        ).log
        source = f"synthetic ({first.users} users, {first.items} items, {first.events_per_user} events each)"
        logger.warning(
            "no checkpoint in %s and no log to train on: training on a synthetic log, whose items are not"
            " your catalogue's; train on your own log (`tide train --data LOG --out %s`) and restart",
            directory,
            directory,
        )
    cfg = TrainConfig(seed=first.seed).with_epochs(first.epochs)
    logger.info(
        "no checkpoint in %s: training on %s, %d events, %d epochs", directory, source, len(log),
        cfg.passes(len(log)),
    )
    res = train(log, cfg)
    path = save_checkpoint(directory, res.model, res.item_ids, res.meta(cfg) | {"data": source})
    logger.info("trained %s in %.1fs", path.name, res.seconds)
    return path


def role_argv(role: str, log_level: str, bootstrap: str | None = None) -> list[str]:
    """The command line of ``tide ROLE`` in this interpreter."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    argv = [sys.executable, "-m", "streams.cli", "--log-level", log_level, role]
    return argv + (["--bootstrap", bootstrap] if bootstrap else [])
