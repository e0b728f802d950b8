"""The Grafana dashboard proven against a real Prometheus scraping the real ``tide worker`` process.

Prometheus (the binary on PATH; .ci/run installs it) scrapes the worker's ``/metrics`` every second
while a short replay goes through the embedded broker: a catalogue, users who come back with new
interests, and invalid records. Then every target of every panel in grafana/ is evaluated through
``/api/v1/query_range`` over the dashboard's time range at the panel's step, Grafana's variables
substituted as Grafana would (tests/dashboard.py): each must return data, and a rate or a quantile a
finite number. The live-quality gauges must have judged the replay, every user must have drifted once
and the drift panel must show it. ``promtool check metrics`` must find nothing to say about a live scrape.

Each target, as sent, with what it returned is written as a Markdown table to ``panel_values.md`` in
the test's tmp_path, and to the file ``TIDE_PANEL_TABLE`` names when it is set.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
# events per user in each phase: a history in one genre (each of its 10 items three times), then a
# move to another genre. Interest drift (engine/fold/drift.py) compares the last ~10 events with the
# uses before them: after 30 then 12 the distance is 0.53, past the worker's default threshold of 0.45
# (after 12 then 12 it is 0.38: a short history is not yet a long-run interest to move away from).
PHASE_EVENTS = (30, 12)
PROFILE_ITEMS = 24  # a user's 10 items of each phase, and room to spare
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
            json.dumps(
                {  # JSON is YAML
                    "global": {"scrape_interval": format_duration(SCRAPE_S), "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {"job_name": "tide-worker", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
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
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
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
    for j in range(PHASE_EVENTS[phase]):
        for u in range(N_USERS):
            genre = (u + 2 * phase) % len(GENRES)
            item = genre + len(GENRES) * ((u + j) % per_genre)
            t = T0 + (sum(PHASE_EVENTS[:phase]) + j) * 60 + u
            events.append(Interaction(f"user-{u}", f"item-{item}", t, "click" if j % 3 else "view"))
    return events


INVALID: Records = [  # one of each kind of bad record the dead-letter panel breaks down
    (b"user-0", b"{not json"),
    (b"user-1", b'{"schema_version": 1, "item_id": "item-1", "timestamp": 1700000000}'),
    (b"user-2", b'{"schema_version": 1, "user_id": "user-2", "item_id": 7, "timestamp": 1700000000}'),
    (
        b"user-3",
        b'{"schema_version": 1, "user_id": "user-3", "item_id": "item-3", "timestamp": 1700000000,'
        b' "event_type": "teleport"}',
    ),
]


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose model reads item text, so that the worker's catalog stage encodes it, with
    profiles that hold both phases' items: drift is measured over the profile, and an LRU profile
    smaller than a phase's items forgets the first interest before the second has moved away from it."""
    text_dim = json.loads((Path(default_model_path()) / "config.json").read_text())["hidden_size"]
    res = train(
        events_log(synthetic_events(10, 8)),  # every item of the catalogue, in 80 events
        TrainConfig.of(
            epochs=1, min_steps=0, batch_size=50, dim=16, profile_items=PROFILE_ITEMS, content_dim=8,
            text_dim=text_dim,
        ),
    )
    d = tmp_path_factory.mktemp("text-checkpoints")
    assert len(res.item_ids) == N_ITEMS  # an item the model does not know would be a dead letter
    save_checkpoint(d, res.model, res.item_ids, {})
    return d


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tide-prometheus-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class Outcome:
    """What Prometheus returned for one panel target."""

    board: str
    query: Query
    problem: str | None  # what is wrong, or None
    last: str  # each series' last value
    peak: float | None  # the largest finite value of any series


def _labels(metric: dict[str, str]) -> str:
    """A series' own labels: those its query kept, less the scrape's ``job`` and ``instance``."""
    return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in {"__name__", "job", "instance"})


def _evaluate(prom: Prometheus, board: str, q: Query, start: float, end: float) -> Outcome:
    try:
        result = prom.api("query_range", query=q.promql, start=start, end=end, step=q.step_s)["result"]
    except ValueError as exc:
        return Outcome(board, q, f"Prometheus refused it: {exc}", "", None)
    last = []
    values = []
    for series in result:
        points = [float(v) for _, v in series["values"]]
        values.extend(points)
        shown = [v for v in points if math.isfinite(v)] or points
        if shown:
            name = _labels(series["metric"])
            last.append(f"{name}: {shown[-1]:.6g}" if name else f"{shown[-1]:.6g}")
    finite = [v for v in values if math.isfinite(v)]
    peak = max(finite) if finite else None
    problem = None
    if not values:
        problem = "no data"
    elif q.needs_a_number and not finite:
        problem = f"no finite number among {len(values)} points"
    return Outcome(board, q, problem, "; ".join(last), peak)


def _markdown(outcomes: list[Outcome], scrape_s: float) -> str:
    """Every target as a Markdown table: the query exactly as Prometheus was sent it, and what came back."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"Every panel target evaluated through Prometheus's `/api/v1/query_range` over the dashboard's"
        f" time range, scraping the worker every {format_duration(scrape_s)}. Last value: each series'"
        f" last finite point; largest: the largest finite point of any series.",
        "",
        "| dashboard | panel | title | query as sent | step | last value | largest |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        value = o.last if o.problem is None else f"**{o.problem}**"
        lines.append(
            f"| {o.board} | {o.query.panel_id}{o.query.ref_id} | {cell(o.query.panel_title)}"
            f" | `{cell(o.query.promql)}` | {format_duration(o.query.step_s)} | {cell(value)}"
            f" | {'' if o.peak is None else f'{o.peak:.6g}'} |"
        )
    return "\n".join(lines) + "\n"


# the quality gauges once the replay is judged, each in (low, high] (a cosine distance is at most 2):
# 0 would be nothing measured, or for the Gini perfectly even exposure, which genre lists do not give
QUALITY_RANGES = (
    ("tide_live_recall_ratio", 0.0, 1.0),  # 10 of 40 items recommended: some next items are among them
    ("tide_live_mrr_ratio", 0.0, 1.0),
    ("tide_live_coverage_ratio", 0.0, 1.0),
    ("tide_live_intra_list_distance", 0.0, 2.0),
    ("tide_live_exposure_gini_ratio", 0.0, 1.0),
)
DRIFT_METRIC = "tide_interest_drifts_total"


def _check_quality(prom: Prometheus, judged_at_most: int) -> list[str]:
    """What is wrong with the live-quality gauges and the drift counter once the replay is judged."""
    bad = []
    # each user's distance stays under 0.34 through the first phase and rises through the second to
    # 0.53: every user drifts, once (the next could come only after it fell under 0.8 × 0.45)
    drifts = prom.value(f"sum({DRIFT_METRIC})")
    if drifts != N_USERS:
        bad.append(f"{DRIFT_METRIC} is {drifts}, not one drift for each of the {N_USERS} users")
    judged = prom.value("tide_live_judged_events") or 0
    if not 0 < judged <= judged_at_most:
        bad.append(f"tide_live_judged_events is {judged}, not in (0, {judged_at_most}]")
    for name, low, high in QUALITY_RANGES:
        v = prom.value(name)
        if v is None or not low < v <= high:
            bad.append(f"{name} is {v}, not in ({low}, {high}]")
    return bad


class Laps:
    """Seconds between the test's steps, for its summary line."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self.laps[step] = now - self.last
        self.last = now

    def __str__(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in self.laps.items())
        return f"{time.monotonic() - self.start:.1f} s: {steps}"


def _await(prom: Prometheus, done: Callable[[dict[str, float | None]], bool], what: str) -> None:
    """Wait until what Prometheus has of the replay satisfies ``done``."""

    def seen() -> dict[str, float | None]:
        return {
            "folded": prom.value("sum(tide_events_folded_total)"),
            "encoded": prom.value("sum(tide_texts_encoded_total)"),
            "judged": prom.value("sum(tide_live_judged_events)"),
        }

    try:
        wait_for(lambda: done(seen()), 60, "")
    except TimeoutError:
        raise TimeoutError(f"Prometheus never saw {what} in 60 s; it has {seen()}") from None


def _replay(settings: Settings, prom: Prometheus, laps: Laps) -> int:
    """The replay, once Prometheus scrapes the worker; returns the most events the worker can judge."""
    produce(settings, settings.topics.items, _catalogue(1))
    first, second = _phase(0), _phase(1)
    produce_events(settings, first)
    produce(settings, settings.topics.interactions, INVALID)
    # the second phase must be a batch of its own: its events are judged against the recommendations
    # the first left live, and the users' interest drifts within it
    _await(prom, lambda s: s["folded"] == len(first), f"the first phase folded ({len(first)} events)")
    laps("first phase")
    produce_events(settings, second)
    total = len(first) + len(second)
    _await(
        prom,
        lambda s: s["folded"] == total and s["encoded"] == 2 * N_ITEMS,
        f"the replay folded ({total} events) and both catalogue editions encoded ({2 * N_ITEMS} texts)",
    )
    laps("second phase")
    # the worker reports its gauges every 5 s: wait for the report that judges the second phase (each
    # of its events has its user's first-phase recommendation live)
    _await(prom, lambda s: (s["judged"] or 0) >= len(second), "the second phase judged")
    laps("gauge report")
    return total - N_USERS  # a user's first event has no recommendation live to judge


def test_every_panel_has_data_in_prometheus(
    settings: Settings,
    text_checkpoint: Path,
    workdir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    laps = Laps()
    port = free_port()
    settings = settings.model_copy(
        update={
            "checkpoint_dir": text_checkpoint,
            "state_dir": workdir / "state",
            "web_port": port,
            "top_k": 10,
            # the broker holds each group's first assignment for about half the session timeout, and the
            # worker joins two groups (Faust's and the hot path's) before it folds anything
            "session_timeout_ms": 2000,
        }
    )
    # the first edition is encoded as soon as the worker has its partitions; the second, once
    # Prometheus scrapes, moves the encode-time histogram between scrapes
    produce(settings, settings.topics.items, _catalogue(0))
    log = workdir / "worker.log"
    with log.open("ab") as out:
        proc = spawn_worker(settings, out)
    prom: Prometheus | None = None
    try:
        with Prometheus(f"{LOOPBACK}:{port}", workdir) as prom:
            wait_assigned(port, proc, 120, log)
            wait_for(prom.scraped, 30, "Prometheus never scraped the worker")
            laps("worker start")
            judged_at_most = _replay(settings, prom, laps)
            quality_problems = _check_quality(prom, judged_at_most)
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as r:
                scrape = r.read()
            lint = subprocess.run(
                [shutil.which("promtool") or "promtool", "check", "metrics"],
                input=scrape,
                capture_output=True,
                timeout=30,
            )
            end = time.time()
            outcomes = [
                _evaluate(prom, name, q, end - time_range_s(board), end)
                for name, board in dashboards().items()
                for q in queries(board, SCRAPE_S)
            ]
            laps("queries")
    except Exception as exc:  # the logs go with workdir: say what they said
        worker_log = log.read_text(errors="replace")[-3000:]
        prom_log = prom.log_tail() if prom is not None else ""
        raise AssertionError(
            f"{exc}\n--- worker log:\n{worker_log}\n--- Prometheus log:\n{prom_log}"
        ) from exc
    finally:
        proc.kill()  # a clean stop is test_operations.py's business; this one needs only the scrapes
        proc.wait(10)
    laps("stop")

    table = _markdown(outcomes, SCRAPE_S)
    (tmp_path / "panel_values.md").write_text(table)
    if os.environ.get("TIDE_PANEL_TABLE"):
        Path(os.environ["TIDE_PANEL_TABLE"]).write_text(table)
    lint_text = (lint.stdout + lint.stderr).decode(errors="replace").strip()
    assert lint.returncode == 0 and not lint_text, f"promtool check metrics:\n{lint_text}"
    failures = [
        f"{o.board}: {o.query}\n    sent: {o.query.promql}\n    {o.problem}" for o in outcomes if o.problem
    ]
    assert not failures, f"{len(failures)} of {len(outcomes)} queries failed:\n" + "\n".join(failures)
    assert not quality_problems, "\n".join(quality_problems)
    drift_panels = [o for o in outcomes if DRIFT_METRIC in o.query.expr]
    assert drift_panels, f"no panel shows {DRIFT_METRIC}"
    flat = [str(o.query) for o in drift_panels if not o.peak]
    assert not flat, "a drift panel that never leaves 0 though users drifted:\n" + "\n".join(flat)
    n_panels = len({(o.board, o.query.panel_id) for o in outcomes})
    with capsys.disabled():
        print(
            f"\n[prometheus] {len(outcomes)} queries of {n_panels} panels, each with data; promtool clean;"
            f" {laps}; values: {tmp_path / 'panel_values.md'}"
        )
