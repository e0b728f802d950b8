"""The Grafana dashboard proven against a real Prometheus scraping the real ``tide worker`` process.

Prometheus (the binary on PATH; .ci/run installs it) scrapes the worker's ``/metrics`` every second
while a short replay goes through the embedded broker: a catalogue, users who come back with new
interests, and invalid records. Then every target of every panel in grafana/ is evaluated through
``/api/v1/query_range`` over the dashboard's time range at the panel's step, Grafana's variables
substituted as Grafana would (tests/dashboard.py): each must return data, and a rate or a quantile a
finite number. ``promtool check metrics`` must find nothing to say about a live scrape.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.catalog.text import default_model_path
from engine.checkpoint import save_checkpoint
from engine.offline.train import TrainConfig, train
from schemas import Interaction, Item
from streams.broker import LOOPBACK, free_port
from streams.config import Settings
from streams.launch import spawn_worker, wait_assigned
from tests.dashboard import Query, dashboards, format_duration, queries, time_range_s
from tests.integration.conftest import events_log, produce, produce_events, synthetic_events, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="prometheus and promtool are not on PATH (.ci/run installs Debian's prometheus package)",
    ),
]

SCRAPE_S = 1.0
GENRES = ("jazz", "football", "astronomy", "gardening")
N_ITEMS = 40  # item-0 … item-39, as tests/integration/conftest.py's events; genre = k mod 4
N_USERS = 20
PER_PHASE = 12  # events per user before and after their interest moves
T0 = 1_700_000_000.0
Records = list[tuple[bytes | None, bytes | None]]  # (key, value) for conftest's produce()


class Prometheus:
    """A Prometheus server on a free loopback port, scraping ``target`` every second, with its
    configuration and data in ``workdir``; stopped on exit."""

    def __init__(self, target: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps({  # JSON is YAML
                "global": {"scrape_interval": format_duration(SCRAPE_S), "scrape_timeout": "1s"},
                "scrape_configs": [{"job_name": "tide-worker", "static_configs": [{"targets": [target]}]}],
            })
        )
        self.cmd = [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, 30, f"Prometheus not ready in 30 s: {self.log_tail()}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"Prometheus exited: {self.log_tail()}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def api(self, path: str, **params: object) -> Any:
        """The ``data`` of an HTTP API answer; an error answer raises with Prometheus's message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, or None when it has no series."""
        result = self.api("query", query=promql)["result"]
        return float(result[0]["value"][1]) if result else None

    def scraped(self) -> bool:
        return any(t["health"] == "up" for t in self.api("targets")["activeTargets"])


def _items(edition: int) -> list[Item]:
    """The catalogue; a new edition changes every text, so that its items are encoded again."""
    words = {
        "jazz": "saxophone trumpet swing improvisation quartet",
        "football": "goal striker penalty stadium league",
        "astronomy": "telescope galaxy orbit comet nebula",
        "gardening": "compost seedlings pruning roses soil",
    }
    return [
        Item(f"item-{k}", f"{g.title()} {k}", f"All about {words[g]}, edition {edition}.", {"genre": g})
        for k, g in ((k, GENRES[k % len(GENRES)]) for k in range(N_ITEMS))
    ]


def _catalogue(edition: int) -> Records:
    records: Records = [(it.item_id.encode(), it.to_json()) for it in _items(edition)]
    return [*records, (b"untitled", b'{"item_id": "untitled"}')]  # the last: invalid, no title


def _phase(phase: int) -> list[Interaction]:
    """Each user's events within one genre: user u's is u mod 4 in phase 0, two genres on in phase 1."""
    events = []
    per_genre = N_ITEMS // len(GENRES)
    for j in range(PER_PHASE):
        for u in range(N_USERS):
            genre = (u + 2 * phase) % len(GENRES)
            item = genre + len(GENRES) * ((u + j) % per_genre)
            t = T0 + (phase * PER_PHASE + j) * 60 + u
            events.append(Interaction(f"user-{u}", f"item-{item}", t, "click" if j % 3 else "view"))
    return events


INVALID: Records = [  # one of each kind of bad record the dead-letter panel breaks down
    (b"user-0", b"{not json"),
    (b"user-1", b'{"schema_version": 1, "item_id": "item-1", "timestamp": 1700000000}'),
    (b"user-2", b'{"schema_version": 1, "user_id": "user-2", "item_id": 7, "timestamp": 1700000000}'),
    (b"user-3", b'{"schema_version": 1, "user_id": "user-3", "item_id": "item-3", "timestamp": 1700000000,'
                b' "event_type": "teleport"}'),
]


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose model reads item text, so that the worker's catalog stage encodes it."""
    text_dim = json.loads((Path(default_model_path()) / "config.json").read_text())["hidden_size"]
    res = train(
        events_log(synthetic_events(10, 30)),
        TrainConfig.of(epochs=1, batch_size=50, dim=16, profile_items=8, content_dim=8, text_dim=text_dim),
    )
    d = tmp_path_factory.mktemp("text-checkpoints")
    save_checkpoint(d, res.model, res.item_ids, {})
    return d


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tide-prometheus-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _evaluate(prom: Prometheus, q: Query, start: float, end: float) -> tuple[str | None, str]:
    """(what is wrong, or None; a value the query returned)."""
    try:
        result = prom.api("query_range", query=q.promql, start=start, end=end, step=q.step_s)["result"]
    except ValueError as exc:
        return f"Prometheus refused it: {exc}", ""
    values = [float(v) for series in result for _, v in series["values"]]
    if not values:
        return "no data", ""
    finite = [v for v in values if math.isfinite(v)]
    if q.needs_a_number and not finite:
        return f"no finite number among {len(values)} points", ""
    return None, f"{(finite or values)[-1]:.6g}"


def test_every_panel_has_data_in_prometheus(
    settings: Settings, text_checkpoint: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t_start = time.monotonic()
    port = free_port()
    settings = settings.model_copy(update={
        "checkpoint_dir": text_checkpoint, "state_dir": workdir / "state", "web_port": port, "top_k": 10,
    })
    # the first edition is encoded while the worker joins its group (loading the text encoder takes
    # seconds); the second, once Prometheus scrapes, moves the encode-time histogram between scrapes
    produce(settings, settings.topics.items, _catalogue(0))
    log = workdir / "worker.log"
    with log.open("ab") as out:
        proc = spawn_worker(settings, out)
    prom: Prometheus | None = None
    try:
        with Prometheus(f"{LOOPBACK}:{port}", workdir) as prom:
            wait_assigned(port, proc, 120, log)
            wait_for(prom.scraped, 30, "Prometheus never scraped the worker")
            produce(settings, settings.topics.items, _catalogue(1))
            first, second = _phase(0), _phase(1)
            produce_events(settings, first)
            produce(settings, settings.topics.interactions, INVALID)
            wait_for(lambda: prom.value("sum(tide_events_folded_total)") == len(first), 60,
                     "Prometheus never saw the first phase folded")
            produce_events(settings, second)  # the same users, each two genres on
            wait_for(
                lambda: prom.value("sum(tide_events_folded_total)") == len(first) + len(second)
                and prom.value("sum(tide_texts_encoded_total)") == 2 * N_ITEMS,
                60, "Prometheus never saw the replay folded and both catalogue editions encoded",
            )
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as r:
                scrape = r.read()
            lint = subprocess.run(
                [shutil.which("promtool") or "promtool", "check", "metrics"], input=scrape,
                capture_output=True, timeout=30,
            )
            end = time.time()
            results = []
            for name, board in dashboards().items():
                start = end - time_range_s(board)
                for q in queries(board, SCRAPE_S):
                    results.append((name, q, *_evaluate(prom, q, start, end)))
    except Exception as exc:  # the logs go with workdir: say what they said
        worker_log = log.read_text(errors="replace")[-3000:]
        prom_log = prom.log_tail() if prom is not None else ""
        raise AssertionError(f"{exc}\n--- worker log:\n{worker_log}\n--- Prometheus log:\n{prom_log}") from exc
    finally:
        proc.kill()  # a clean stop is test_operations.py's business; this one needs only the scrapes
        proc.wait(10)
    wall_s = time.monotonic() - t_start

    lint_text = (lint.stdout + lint.stderr).decode(errors="replace").strip()
    assert lint.returncode == 0 and not lint_text, f"promtool check metrics:\n{lint_text}"
    failures = [
        f"{name}: {q}\n    sent: {q.promql}\n    {problem}" for name, q, problem, _ in results if problem
    ]
    assert not failures, f"{len(failures)} of {len(results)} queries failed:\n" + "\n".join(failures)
    with capsys.disabled():
        print(f"\n[prometheus] {len(results)} queries of "
              f"{len({(n, q.panel_id) for n, q, *_ in results})} panels, each with data;"
              f" promtool clean; {wall_s:.1f} s")
