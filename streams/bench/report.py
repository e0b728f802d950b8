"""The bench's figures shown: a table on stdout, a JSON report, and the scaling curves as a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.options import MODES

__all__ = ["plot_scaling", "print_table", "write_report"]


def print_table(report: dict[str, Any]) -> None:
    """Every mode's figures, one row each (recs/s: recommendations emitted per second while the
    backlog drains, median of the same windows as events/s), then the engine's extras and the machine."""
    rows = [(m, report[m]) for m in MODES if m in report]
    print(
        f"\n{'mode':<10} {'events/s':>10} {'recs/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
        f"{'CPU s/1k ev':>12} {'peak RSS MiB':>13} {'state B/user':>13}"
    )
    for name, r in rows:
        state = f"{r['state_bytes_per_user']:,.0f}" if r.get("state_bytes_per_user") is not None else "—"
        recs = r.get("recommendations_per_s", float("nan"))
        print(
            f"{name:<10} {r['events_per_s']:>10,.0f} {recs:>10,.0f} "
            f"{1000 * r['p50_s']:>8.1f} {1000 * r['p99_s']:>8.1f} "
            f"{1000 * r['p999_s']:>9.1f} {r['cpu_s_per_1k_events']:>12.3f} "
            f"{r['peak_rss_bytes'] / 2**20:>13.0f} {state:>13}"
        )
    for base in ("raw_pipe", "noop"):
        if f"ratio_to_{base}" in report:
            print(f"engine / {base}: {report[f'ratio_to_{base}']:.3f}")
    _print_engine_extras(report.get("engine", {}))
    for t in report.get("topk", []):
        line = (
            f"top-{t['k']} of {t['items']:,} items for {t['users']} users (d={t['dim']}, {t['device']}): "
            f"exact {1000 * t['median_s']:.1f} ms"
        )
        if "index_median_s" in t:
            line += (
                f", candidate index {1000 * t['index_median_s']:.1f} ms (recall of the exact top-{t['k']} "
                f"{t['index_recall']:.3f}; built in {t['index_build_s']:.1f} s, "
                f"{t['index_bytes'] / 2**20:.0f} MiB)"
            )
        print(line)
    m = report["machine"]
    print(
        f"machine: {m['cpus']} CPUs ({m['cpu_affinity']} usable), {m.get('gpu', 'no GPU')}, "
        f"torch {m['torch']}"
    )


def _print_engine_extras(engine: dict[str, Any]) -> None:
    """The engine's profile of the backlog phase and its online learning, when it has them."""
    profile = engine.get("profile_ms_per_1k_events")
    if profile:
        total = sum(profile.values())
        print(f"\nengine, backlog phase: where a worker's wall time goes ({total:,.0f} ms per 1,000 events)")
        for stage, ms in profile.items():
            print(f"  {stage:<28} {ms:>8.1f} ms  {100 * ms / total:>5.1f}%")
    online = engine.get("online")
    if online:
        print(
            f"online learning: {online['steps']:,} updates applied, "
            f"{online['examples_waiting']:,} examples waiting at the end"
        )


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


_KNOB_LABELS = {
    "active_users": "active users (state written before)",
    "items": "catalogue size (items)",
    "batch_max_events": "micro-batch (events)",
    "dim": "embedding width",
}


def plot_scaling(curves: dict[str, list[dict[str, Any]]], png: Path, rate: float) -> None:
    """Throughput (events and, where measured, recommendations per second) and p99 latency (at
    ``rate`` events/s offered) against each knob, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    for ax, (knob, pts) in zip(np.atleast_1d(axes), curves.items()):
        x = [p["value"] for p in pts]
        ax.plot(x, [p["events_per_s"] for p in pts], "o-", color="tab:blue", label="events/s")
        recs = [p.get("recommendations_per_s", float("nan")) for p in pts]
        per_s = "events/s (backlog)"
        if not np.isnan(recs).all():
            ax.plot(x, recs, "^:", color="tab:green", label="recommendations/s")
            ax.legend(loc="lower left", fontsize="small")
            per_s = "events/s, recommendations/s (backlog)"
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:,}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(_KNOB_LABELS.get(knob, knob))
        ax.set_ylabel(per_s, color="tab:blue")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        p99 = [1000 * p["p99_s"] for p in pts]
        ax2.plot(x, p99, "s--", color="tab:red", label="p99")
        ax2.set_ylabel(f"p99 ms at {rate:,.0f} events/s offered", color="tab:red")
        if max(p99) > 20 * min(p99):  # past capacity the queue grows: show both regimes
            ax2.set_yscale("log")
        else:
            ax2.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle("TIDE engine, one worker: throughput and latency against each knob (others at defaults)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
