"""The evaluation report: JSON with the fixed shape, and a PNG of the metric over the test period."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.offline.baselines import strongest
from engine.offline.evaluation import RowRanks, calibration, ranking_metrics, split_masks, summarize
from engine.offline.protocols import Split

__all__ = ["build_report", "plot_over_time", "write_report"]


def build_report(
    rr: RowRanks, split: Split, data: str, timings: dict[str, float], config: dict[str, Any]
) -> dict[str, Any]:
    masks = split_masks(rr, split)
    test = summarize(rr, masks["test"])
    val = summarize(rr, masks["val"])
    model = test.pop("model")
    if len(rr.explore_prob):
        # P(the next item is new to the user) against whether it was
        model["explore_calibration"] = calibration(rr.explore_prob[masks["test"]], ~rr.repeat[masks["test"]])
    return {
        "model": model,
        "baselines": test,
        "strongest_baseline": strongest(test),
        "validation": {"model": val.pop("model"), "baselines": val},
        "protocol": split.protocol,
        "data": data,
        "split": {
            "train_rows": split.train_end,
            "val_rows": split.val_end - split.train_end,
            "test_rows": split.n - split.val_end,
        },
        "n_items": rr.n_items,
        "timings": timings,
        "config": config,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def plot_over_time(rr: RowRanks, split: Split, path: Path, bins: int = 20, metric: str = "mrr") -> None:
    """MRR of the model and each baseline over the test period, in equal-count bins of test rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = split_masks(rr, split)["test"]
    ts = rr.ts[mask]
    edges = np.linspace(0, len(ts), bins + 1).astype(int)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for name, ranks in rr.ranks.items():
        r = ranks[mask]
        xs = [ts[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a]
        ys = [ranking_metrics(r[a:b])[metric] for a, b in zip(edges[:-1], edges[1:]) if b > a]
        ax.plot(
            xs, ys, marker="o", ms=3, lw=2.2 if name == "model" else 1.2,
            label="TIDE model" if name == "model" else name,
        )
    ax.set_xlabel("event time (test period)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} over the test period ({split.protocol} protocol, {mask.sum():,} rows)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
