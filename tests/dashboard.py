"""The Grafana dashboard (grafana/) as Grafana reads it: its panels, rows' panels included, and each
target's query with Grafana's variables substituted for a given Prometheus scrape interval.

Grafana's rules, as its documentation gives them: a panel's interval is its time range divided by its
``maxDataPoints`` (by default its width in pixels), rounded to a tidy step and never below the minimum
interval (the panel's ``interval``, else the data source's scrape interval);
``$__rate_interval = max($__interval + scrape, 4 × scrape)``; ``$__range`` is the time range.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "COMPOSE",
    "GRAFANA",
    "PROVISIONING",
    "Query",
    "dashboards",
    "format_duration",
    "panels",
    "parse_duration",
    "queries",
    "time_range_s",
]

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
PROVISIONING = ROOT / "docker" / "grafana-provisioning"
COMPOSE = ROOT / "docker" / "docker-compose.yml"

#: the width in pixels that a panel spanning all 24 grid columns has on a 1080p screen
DASHBOARD_WIDTH_PX = 1920
# fmt: off
#: the steps Grafana rounds an interval to (seconds); the smallest at or above the exact interval is taken
_TIDY_STEPS_S = (
    0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1200, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)
# fmt: on
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
# $name, ${name}, ${name:format}, [[name]]
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
_RATE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|histogram_quantile)\s*\(")


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard in grafana/, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of ``board``: the top level, rows themselves, and the panels a collapsed row holds."""
    out = []
    for p in board.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def parse_duration(text: str) -> float:
    """Seconds in a Grafana or Prometheus duration (``"30m"``, ``"1h30m"``, ``"500ms"``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds when exact, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def time_range_s(board: dict[str, Any]) -> float:
    """The length of the dashboard's default time range (``now-30m`` to ``now``: 1800)."""
    start, end = board["time"]["from"], board["time"]["to"]

    def back(t: str) -> float:
        if t == "now":
            return 0.0
        if not t.startswith("now-"):
            raise ValueError(f"not a relative time: {t!r}")
        return parse_duration(t[len("now-") :])

    return back(start) - back(end)


@dataclass(frozen=True)
class Query:
    """One panel target: the query as written, and as Prometheus is sent it."""

    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    promql: str  # with every variable substituted
    step_s: float  # the panel's interval: the query_range step

    @property
    def needs_a_number(self) -> bool:
        """A rate or a quantile: a series of NaN or nothing would be a panel with no line."""
        return bool(_RATE_FUNCTIONS.search(self.expr))

    def __str__(self) -> str:
        return f"panel {self.panel_id} {self.panel_title!r}, target {self.ref_id}: {self.expr}"


def _template_values(board: dict[str, Any]) -> dict[str, str]:
    """Each template variable's value: its current one; ``All`` as the variable's all-value or ``.*``."""
    values = {}
    for var in board.get("templating", {}).get("list", []):
        current = var.get("current") or {}
        value = current.get("value", var.get("query", ""))
        if isinstance(value, list):
            value = "|".join(value)
        if value == "$__all":
            value = var.get("allValue") or ".*"
        values[var["name"]] = str(value)
    return values


def _substitute(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g is not None)
        return values.get(name, m.group(0))

    return _VARIABLE.sub(one, text)


def queries(board: dict[str, Any], scrape_interval_s: float) -> list[Query]:
    """Every target of every panel, with Grafana's variables substituted as Grafana would for a data
    source whose scrape interval is ``scrape_interval_s``."""
    range_s = time_range_s(board)
    template = _template_values(board)
    out = []
    for p in panels(board):
        if not p.get("targets"):
            continue
        width_px = p["gridPos"]["w"] * DASHBOARD_WIDTH_PX / 24
        max_points = p.get("maxDataPoints") or round(width_px)
        exact = range_s / max_points
        tidy = next((s for s in _TIDY_STEPS_S if s >= exact), _TIDY_STEPS_S[-1])
        panel_min = parse_duration(p["interval"]) if p.get("interval") else scrape_interval_s
        for t in p["targets"]:
            scrape = parse_duration(t["interval"]) if t.get("interval") else scrape_interval_s
            interval = max(tidy, panel_min, scrape)
            values = {
                **template,
                "__interval": format_duration(interval),
                "__interval_ms": str(round(interval * 1000)),
                "__rate_interval": format_duration(max(interval + scrape, 4 * scrape)),
                "__range": format_duration(range_s),
                "__range_s": str(round(range_s)),
                "__range_ms": str(round(range_s * 1000)),
            }
            out.append(
                Query(
                    p["id"],
                    p.get("title", ""),
                    t.get("refId", ""),
                    t["expr"],
                    _substitute(t["expr"], values),
                    interval,
                )
            )
    return out
