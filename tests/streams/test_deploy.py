"""``tide start`` (streams/deploy.py): on an empty checkpoint folder it trains a loadable checkpoint, with
one present it trains nothing, a process that waited for another's training takes that checkpoint, and
it ends by becoming the role's command, after creating the topics on the (embedded) broker."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch
from confluent_kafka.admin import AdminClient

import engine.offline.train
from engine.checkpoint import load_checkpoint, save_checkpoint
from models.interest import InterestConfig, InterestModel
from streams.cli import build_parser, main
from streams.config import Settings
from streams.deploy import LOCK_FILE, ROLES, FirstCheckpoint, ensure_checkpoint, role_argv
from streams.runtime import resolve_checkpoint
from streams.topics import topic_specs

#: a synthetic log of 160 events on 30 items, one epoch: well under a second
TINY = FirstCheckpoint(epochs=1, users=20, items=30, events_per_user=8)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIDE_"):
            monkeypatch.delenv(name)


def _save(directory: Path, n_items: int = 4) -> Path:
    torch.manual_seed(0)
    model = InterestModel(InterestConfig(n_items=n_items, dim=8))
    return save_checkpoint(directory, model, [f"i{k}" for k in range(n_items)], {})


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although a checkpoint was there")

    monkeypatch.setattr(engine.offline.train, "train", refuse)


def test_an_empty_folder_gets_a_checkpoint_trained_on_a_synthetic_log(tmp_path: Path) -> None:
    settings = Settings(checkpoint_dir=tmp_path / "ck")
    path, trained = ensure_checkpoint(settings, TINY)
    assert trained and path.parent == tmp_path / "ck" and path.suffix == ".pt"
    ckpt = load_checkpoint(path)
    assert len(ckpt.item_ids) == ckpt.model.cfg.n_items and set(ckpt.item_ids) <= {f"c{k}" for k in range(30)}
    assert ckpt.meta["data"].startswith("synthetic") and ckpt.meta["train"]["epochs"] == 1
    assert ensure_checkpoint(settings, TINY) == (path, False)


def test_a_log_given_is_what_the_first_checkpoint_learns(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item,ts\n" + "".join(f"u{k % 5},x{k % 7},{k}\n" for k in range(140)))
    path, trained = ensure_checkpoint(
        Settings(checkpoint_dir=tmp_path / "ck"), FirstCheckpoint(data=log, epochs=1)
    )
    ckpt = load_checkpoint(path)
    assert trained and sorted(ckpt.item_ids) == [f"x{k}" for k in range(7)] and ckpt.meta["data"] == str(log)


def test_a_checkpoint_present_is_used_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_training(monkeypatch)
    older, newer = _save(tmp_path / "ck", 4), _save(tmp_path / "ck", 5)
    os.utime(older, (1, 1))
    assert ensure_checkpoint(Settings(checkpoint_dir=tmp_path / "ck"), TINY) == (newer, False)
    # TIDE_CHECKPOINT names the file; a name that is not there is an error, not a reason to train
    assert ensure_checkpoint(Settings(checkpoint=older), TINY) == (older, False)
    with pytest.raises(FileNotFoundError, match="TIDE_CHECKPOINT"):
        ensure_checkpoint(Settings(checkpoint=tmp_path / "missing.pt"), TINY)


def test_a_process_that_waited_for_the_lock_takes_the_checkpoint_trained_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_training(monkeypatch)
    directory = tmp_path / "ck"
    directory.mkdir()
    result: list[tuple[Path, bool]] = []
    with open(directory / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process, training
        waiter = threading.Thread(
            target=lambda: result.append(ensure_checkpoint(Settings(checkpoint_dir=directory), TINY))
        )
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not result, "did not wait for the lock"
        trained_meanwhile = _save(directory)
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(10)
    assert result == [(trained_meanwhile, False)]


class _Exec(Exception):
    pass


def _start(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[str]:
    """Run ``tide start …`` up to its exec; the command line it would have become."""
    execd: list[str] = []

    def fake_exec(path: str, args: list[str]) -> None:
        assert path == args[0]
        execd.extend(args)
        raise _Exec

    monkeypatch.setattr(os, "execv", fake_exec)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(_Exec):
            main(argv)
    finally:
        signal.signal(signal.SIGTERM, handler)
    return execd


def test_start_becomes_the_role_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_training(monkeypatch)
    monkeypatch.setenv("TIDE_CHECKPOINT_DIR", str(tmp_path / "ck"))
    _save(tmp_path / "ck")
    execd = _start(monkeypatch, ["start", "item-stage", "--no-topics"])
    assert execd == [sys.executable, "-m", "streams.cli", "--log-level", "INFO", "item-stage"]
    parser = build_parser(Settings())
    assert parser.parse_args(["start", "worker"]).replication_factor == -1  # the cluster's default
    for role in ROLES:  # each role is a command, and its command line parses
        args = parser.parse_args(role_argv(role, "INFO", "kafka:9092")[3:])
        assert args.cmd == role and args.bootstrap == "kafka:9092"
    with pytest.raises(ValueError, match="unknown role"):
        role_argv("broker", "INFO")


@pytest.mark.integration
def test_start_on_an_empty_volume_creates_the_topics_trains_then_the_next_start_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedded_broker
) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item,ts\n" + "".join(f"u{k % 5},x{k % 7},{k}\n" for k in range(140)))
    monkeypatch.setenv("TIDE_CHECKPOINT_DIR", str(tmp_path / "ck"))
    monkeypatch.setenv("TIDE_PARTITIONS", "2")
    bootstrap = embedded_broker.bootstrap_servers
    execd = _start(
        monkeypatch, ["start", "worker", "--bootstrap", bootstrap, "--data", str(log), "--epochs", "1"]
    )
    assert execd[-3:] == ["worker", "--bootstrap", bootstrap]
    (trained,) = (tmp_path / "ck").glob("*.pt")
    assert f"checkpoint {trained} (trained now)" in capsys.readouterr().out
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    for spec in topic_specs(Settings(partitions=2)):
        assert len(topics[spec.name].partitions) == spec.partitions, spec.name
    # the next process finds the topics and the checkpoint: it creates nothing, trains nothing, and the
    # role it becomes loads that checkpoint
    _no_training(monkeypatch)
    assert _start(monkeypatch, ["start", "learner", "--bootstrap", bootstrap])[-3] == "learner"
    assert f"checkpoint {trained}; starting tide learner" in capsys.readouterr().out
    assert resolve_checkpoint(Settings()) == trained
    assert sorted(load_checkpoint(trained).item_ids) == [f"x{k}" for k in range(7)]
