"""Loading the engine for a process: device choice, checkpoint, item table, stages, state store."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint
from engine.fold.candidates import IndexConfig
from engine.fold.items import ItemStage
from engine.fold.online import OnlineConfig, OnlineLearner
from engine.fold.table import ItemTable
from engine.fold.users import UserStage
from engine.state.store import RocksDBStateStore
from streams.config import Settings

__all__ = [
    "Engine", "FairLock", "index_config", "load_engine", "online_config", "pick_device", "resolve_checkpoint",
]

logger = logging.getLogger(__name__)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_checkpoint(settings: Settings) -> Path:
    path = settings.checkpoint or latest_checkpoint(settings.checkpoint_dir)
    if path is None or not Path(path).exists():
        raise FileNotFoundError(
            "no checkpoint: set TIDE_CHECKPOINT or run `tide train` to write one into "
            f"{settings.checkpoint_dir}"
        )
    return Path(path)


class FairLock:
    """A lock granted in the order it was asked for. The hot path and the web's scorer thread take
    the engine's lock in turn; with a plain lock a thread that releases it may take it straight
    back, so a stream of web requests could keep the hot path waiting."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._next = 0  # the next ticket to hand out
        self._serving = 0  # the ticket that holds the lock

    def __enter__(self) -> FairLock:
        with self._cv:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cv.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()


@dataclass
class Engine:
    checkpoint: Checkpoint
    users: UserStage
    items: ItemStage
    store: RocksDBStateStore
    device: torch.device
    learner: OnlineLearner | None = None
    lock: FairLock = field(default_factory=FairLock)  # the fold vs web reads of the model

    def close(self) -> None:
        if self.learner is not None:
            self.learner.close()
        self.store.close()


def online_config(settings: Settings) -> OnlineConfig:
    return OnlineConfig(
        enabled=settings.online_learning, lr=settings.online_lr,
        examples_per_step=settings.online_examples_per_step,
        example_rate=settings.online_example_rate, background=settings.online_background,
    )


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(
        min_items=settings.index_min_items, n_candidates=settings.index_candidates,
        nprobe=settings.index_nprobe,
    )


def load_engine(settings: Settings) -> Engine:
    device = pick_device(settings.device)
    # One intra-op thread: on small machines the worker shares the cores with the Kafka clients' threads
    # (and often the broker), where spinning OpenMP threads slow the fold down; scale out with
    # partitions and workers instead.
    torch.set_num_threads(1)
    path = resolve_checkpoint(settings)
    ckpt = load_checkpoint(path, device)
    logger.info("loaded model %s from %s on %s", ckpt.version, path, device)
    store = RocksDBStateStore(settings.state_dir)
    table = ItemTable(ckpt.model, ckpt.item_ids, device)
    item_stage = ItemStage(ckpt.model, table, store.partition("items"))
    user_stage = UserStage(
        ckpt.model, table, store, model_version=ckpt.version, input_topic=settings.topics.interactions,
        top_k=settings.top_k, index=index_config(settings),
    )
    learner = OnlineLearner(ckpt.model, table, online_config(settings)) if settings.online_learning else None
    return Engine(ckpt, user_stage, item_stage, store, device, learner)
