"""The Grafana dashboard and its provisioning, read as files (no Grafana, no Prometheus): the data
source and dashboard provider, where Compose mounts them, panel ids, data source references, units,
metric names and variables. tests/integration/test_prometheus.py runs every query against Prometheus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.metrics import METRIC_NAMES
from tests.dashboard import COMPOSE, GRAFANA, PROVISIONING, dashboards, panels, parse_duration, queries

# panel types that show no number, so no unit
_NOT_NUMERIC = {"row", "text", "news", "dashlist", "logs", "table", "nodeGraph", "traces"}
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")
_VARIABLE = re.compile(r"^\$\{?(\w+)\}?$")
BOARDS = dashboards()


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _datasources() -> list[dict[str, Any]]:
    files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    assert files, "no data source is provisioned"
    out = []
    for f in files:
        doc = _yaml(f)
        assert doc["apiVersion"] == 1, f.name
        out.extend(doc["datasources"])
    return out


def _grafana_mounts() -> dict[str, Path]:
    """Compose's grafana service: container path → the folder of this repository mounted there."""
    service = _yaml(COMPOSE)["services"]["grafana"]
    mounts = {}
    for volume in service["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def test_the_provisioned_data_source_is_prometheus_at_its_scrape_interval():
    sources = _datasources()
    assert [s["isDefault"] for s in sources].count(True) == 1
    for s in sources:
        assert s["type"] == "prometheus" and s["uid"] and s["name"], s
        assert s["url"].startswith("http://prometheus:"), s  # the Compose service
    scrape = _yaml(COMPOSE.parent / "prometheus.yml")["global"]["scrape_interval"]
    for s in sources:  # $__rate_interval is built on this: it must be Prometheus's scrape interval
        assert parse_duration(s["jsonData"]["timeInterval"]) == parse_duration(scrape), s["name"]


def test_the_dashboard_provider_reads_the_folder_compose_mounts_grafana_on():
    mounts = _grafana_mounts()
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING.resolve()
    files = sorted((PROVISIONING / "dashboards").glob("*.yml"))
    assert files, "no dashboard provider"
    for f in files:
        doc = _yaml(f)
        assert doc["apiVersion"] == 1, f.name
        for provider in doc["providers"]:
            path = provider["options"]["path"]
            assert provider["type"] == "file" and mounts.get(path) == GRAFANA.resolve(), (
                f"{f.name}: provider {provider['name']!r} reads {path}, where Compose mounts"
                f" {mounts.get(path)}, not {GRAFANA}"
            )


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panel_ids_are_unique(name):
    ids = [p.get("id") for p in panels(BOARDS[name])]
    assert None not in ids, f"{name}: a panel has no id"
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, f"{name}: repeated panel ids {repeated}"
    assert BOARDS[name].get("uid"), f"{name}: no dashboard uid"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_data_source_reference_resolves_to_the_provisioned_one(name):
    board = BOARDS[name]
    sources = _datasources()
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}

    def resolves(ref: str | dict[str, Any] | None) -> bool:
        if ref is None:  # the default data source
            return True
        if isinstance(ref, dict):
            if ref.get("type") not in (None, *(s["type"] for s in sources)):
                return False
            ref = ref.get("uid")
            if ref is None:
                return True
        m = _VARIABLE.match(ref)
        if m:
            var = variables.get(m.group(1))
            return (
                var is not None
                and var["type"] == "datasource"
                and any(s["type"] == var["query"] for s in sources)
            )
        return any(ref in (s["uid"], s["name"]) for s in sources)

    bad = []
    for p in panels(board):
        if not p.get("targets"):
            continue
        if not resolves(p.get("datasource")):
            bad.append(f"panel {p['id']} {p.get('title')!r}: {p.get('datasource')}")
        bad.extend(
            f"panel {p['id']} {p.get('title')!r}, target {t.get('refId')}: {t['datasource']}"
            for t in p["targets"]
            if "datasource" in t and not resolves(t["datasource"])
        )
    assert not bad, f"{name}: data sources that are not provisioned:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_numeric_panel_has_a_unit(name):
    missing = [
        f"panel {p['id']} {p.get('title')!r} ({p['type']})"
        for p in panels(BOARDS[name])
        if p["type"] not in _NOT_NUMERIC and not p.get("fieldConfig", {}).get("defaults", {}).get("unit")
    ]
    assert not missing, f"{name}: no unit (fieldConfig.defaults.unit):\n" + "\n".join(missing)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_queries_use_only_exported_metrics_and_known_variables(name):
    found = queries(BOARDS[name], scrape_interval_s=15)
    assert found, name
    bad = []
    for q in found:
        if "$" in q.promql or "[[" in q.promql:
            bad.append(f"a variable Grafana has no value for: {q}")
        for metric in re.findall(r"\btide_[a-z_]+", q.promql):
            base = next((metric[: -len(s)] for s in _SUFFIXES if metric.endswith(s)), metric)
            if base not in METRIC_NAMES:
                bad.append(f"{metric} is not exported by streams/metrics.py: {q}")
    assert not bad, f"{name}:\n" + "\n".join(bad)


# what the worker watches in its own output (streams/monitor.py), each of which the dashboard must show
LIVE_QUALITY = (
    "tide_live_recall_ratio",
    "tide_live_mrr_ratio",
    "tide_live_coverage_ratio",
    "tide_live_intra_list_distance",
    "tide_live_exposure_gini_ratio",
    "tide_live_judged_events",
)
DRIFTS = "tide_interest_drifts_total"


def test_the_worker_dashboard_shows_live_quality_and_drifts_per_minute():
    found = queries(BOARDS["tide-worker.json"], scrape_interval_s=15)
    shown = {m for q in found for m in re.findall(r"\btide_[a-z_]+", q.promql)}
    assert not set(LIVE_QUALITY) - shown, f"no panel shows {sorted(set(LIVE_QUALITY) - shown)}"
    drift = [q for q in found if DRIFTS in q.promql]
    assert drift, f"no panel shows {DRIFTS}"
    # a counter is shown as a rate; per minute, as the panel's unit says
    per_minute = re.compile(rf"rate\({DRIFTS}\[[^\]]+\]\)\)?\s*\*\s*60\b")
    units = {
        p["id"]: p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        for p in panels(BOARDS["tide-worker.json"])
    }
    assert all(per_minute.search(q.promql) and units[q.panel_id] == "opm" for q in drift), drift
