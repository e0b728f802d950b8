"""What ``tide bench`` runs (its options, the modes) and what one mode's run measures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["BASELINE_REPEAT", "MODES", "POPULARITY", "USER_PATTERNS", "BenchOptions", "ModeResult"]

MODES = ("raw_pipe", "noop", "engine")
# The raw pipe and the no-op worker fold the workload this many times over: they run 4-7x faster
# than the engine, and with the same events their throughput phase lasts about a second, so one
# busy moment of a shared machine moves their median by half. Repeated, each mode's windows last
# about as long as the engine's.
BASELINE_REPEAT = 4
POPULARITY = ("zipf", "uniform")
USER_PATTERNS = ("uniform", "bursty")


@dataclass
class BenchOptions:
    data: Path | None = None  # a CSV log; None = synthetic
    users: int = 10_000  # synthetic workload
    # > 0: this many users, each with a state written before the run (a full history and profile),
    # and every event's user drawn among them (uniformly by default): the cost of state that does not
    # fit caches
    active_users: int = 0
    items: int = 1_000
    # how synthetic events spread over users and items (streams/bench/workload.py): "zipf", "uniform",
    # or None for the default mix (Zipf-like with users who return to their own items; uniform with
    # active users)
    popularity: Literal["zipf", "uniform"] | None = None
    zipf: float = 1.1  # the exponent of popularity "zipf", for users and items alike
    # "uniform": each event's user drawn on its own; "bursty": users in sessions of several events
    user_pattern: Literal["uniform", "bursty"] = "uniform"
    new_items: float = 0.0  # this share of events goes to items outside the catalogue, n0, n1, …
    events: int = 60_000  # throughput phase
    rate: float = 2_000.0  # latency phase, offered events/s
    latency_seconds: float = 15.0
    modes: Sequence[str] = MODES
    bootstrap: str | None = None  # None = start the embedded broker
    checkpoint: Path | None = None  # None = the full model with untrained weights (speed is the same)
    dim: int = 64
    batch_max_events: int = 2_000
    top_k: int = 10
    online_learning: bool = True
    device: str = "auto"
    item_stage: str = "local"  # the workers' TIDE_ITEM_STAGE
    workdir: Path = Path(".tide/bench")
    seed: int = 0


@dataclass
class ModeResult:
    events_per_s: float
    windows: list[float]
    recommendations_per_s: float  # median of the same windows, recommendations emitted
    recommendation_windows: list[float]
    recommendations: int  # emitted in the throughput phase
    p50_s: float
    p99_s: float
    p999_s: float
    cpu_s_per_1k_events: float
    peak_rss_bytes: int
    state_bytes_per_user: float | None
    n_latency: int
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "events_per_s": self.events_per_s,
            "recommendations_per_s": self.recommendations_per_s,
            "p50_s": self.p50_s,
            "p99_s": self.p99_s,
            "p999_s": self.p999_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "state_bytes_per_user": self.state_bytes_per_user,
            "cpu_s_per_1k_events": self.cpu_s_per_1k_events,
            "windows_events_per_s": self.windows,
            "windows_recommendations_per_s": self.recommendation_windows,
            "recommendations": self.recommendations,
            "latency_samples": self.n_latency,
            **self.extra,
        }
