"""Starting and stopping ``tide worker`` processes, for the commands that run one beside other work
(``tide demo``, ``tide soak``) and for the tests that need the real process.

The worker reads its configuration from ``TIDE_*`` variables like any deployment: :func:`worker_env`
writes a :class:`Settings` out as them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from streams.config import Settings

__all__ = ["spawn_worker", "stop_worker", "wait_assigned", "worker_env"]

# the settings a launched worker takes from its launcher (the rest keep their defaults, or the
# caller's environment)
_PASSED = (
    "bootstrap_servers", "group_id", "partitions", "state_dir", "checkpoint_dir", "top_k",
    "web_port", "session_timeout_ms", "broker_timeout_s", "user_ttl_s", "catalog_stage", "online_learning",
    "worker_id",
)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment with ``settings`` (and the topic names) as ``TIDE_*`` variables."""
    env = dict(os.environ)
    env.update({
        f"TIDE_{name.upper()}": _text(getattr(settings, name)) for name in _PASSED
        if getattr(settings, name) is not None
    })
    env.update({f"TIDE_TOPIC_{k.upper()}": v for k, v in settings.topics.model_dump().items()})
    env.update(extra)
    return env


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def spawn_worker(settings: Settings, log: IO[bytes], **extra_env: str) -> subprocess.Popen[bytes]:
    """Start ``tide worker`` on ``settings``, its output to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"], env=worker_env(settings, **extra_env), stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_assigned(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 180, log: Path | None = None
) -> None:
    """Return once the worker's ``/health`` says its partitions are assigned; raise if it exits or
    takes longer than ``timeout_s``."""
    where = f"; see {log}" if log is not None else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} during start-up{where}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read()).get("assigned"):
                    return
        except OSError:  # not listening yet, or 503 while it starts
            pass
        time.sleep(0.25)
    raise TimeoutError(f"worker did not get its partitions in {timeout_s:.0f} s{where}")


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not exited in ``timeout_s``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)
