"""A worker in a process of its own, forked from a server that imported the engine once.

The crash tests kill and restart workers many times; starting each from a fresh interpreter would
spend most of the run importing torch. :func:`start` forks :func:`serve` from a ``forkserver``
that preloaded this module (nothing in it has run torch yet, so forking is safe), and the worker
in it is the real hot path (streams/worker.py) on the real broker and RocksDB. Kill it with
``process.kill()`` (SIGKILL) or arm a crash point (streams/faults.py).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from typing import Any

import streams.worker  # noqa: F401  (preloaded by the fork server)
from engine.hooks import NullHooks

__all__ = ["WorkerProcess", "start"]

_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload([__name__])


class WorkerProcess:
    """A started worker: its process, whether its partitions are assigned, events it folded."""

    def __init__(self, proc: Any, ready: Any, folded: Any) -> None:
        self.proc = proc
        self.ready = ready
        self.folded = folded

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(10)

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM: the worker finishes its batch, commits and exits; returns the exit code."""
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        return self.proc.exitcode


def start(
    settings_kwargs: dict[str, Any], crash_at: str | None = None, ready_timeout_s: float = 60
) -> WorkerProcess:
    """Start a worker with ``Settings(**settings_kwargs)``; ``crash_at`` arms a crash point
    (``"point:n"``). Returns once its partitions are assigned, or once it died trying."""
    ready, folded = _CTX.Event(), _CTX.Value("q", 0)
    proc = _CTX.Process(target=serve, args=(settings_kwargs, crash_at, ready, folded), daemon=True)
    proc.start()
    ready.wait(ready_timeout_s)
    return WorkerProcess(proc, ready, folded)


def serve(settings_kwargs: dict[str, Any], crash_at: str | None, ready: Any, folded: Any) -> None:
    import torch

    from streams import faults
    from streams.config import Settings
    from streams.runtime import load_engine
    from streams.worker import Worker

    faults.arm(crash_at)
    torch.set_num_threads(1)
    settings = Settings(**settings_kwargs)
    engine = load_engine(settings)

    class Counting(NullHooks):
        def on_batch(self, n_events: int, fold_seconds: float) -> None:
            with folded.get_lock():
                folded.value += n_events

    worker = Worker(settings, engine, Counting())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())

    def announce() -> None:
        worker.ready.wait()
        ready.set()

    threading.Thread(target=announce, daemon=True).start()
    try:
        worker.run()
    finally:
        engine.close()
