"""``tide bench --index-curve``: the candidate index's recall of the exact top-100 against its cost,
over ``nprobe``, on a trained model and a log (engine/offline/index_curve.py); a PNG and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.bench.run import machine

__all__ = ["plot_index_curve", "run_index_curve"]


def run_index_curve(data: Path, checkpoint: Path | None, epochs: int | None, device: str) -> dict[str, Any]:
    """Train on ``data`` (or load ``checkpoint``), fold it, and measure the curve."""
    import torch

    from engine.checkpoint import load_checkpoint
    from engine.offline.data import read_csv
    from engine.offline.index_curve import index_curve
    from engine.offline.train import TrainConfig, train
    from streams.runtime import pick_device

    torch.set_num_threads(1)  # as the worker runs (streams/runtime.py)
    log = read_csv(data)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, pick_device(device))
        model, item_ids = ckpt.model, list(ckpt.item_ids)
        source = str(checkpoint)
    else:
        print(f"[index-curve] training on {len(log):,} rows of {data}", flush=True)
        res = train(log, TrainConfig().with_epochs(epochs))
        model, item_ids, source = res.model, list(res.item_ids), f"trained on {data}"
    print(f"[index-curve] folding {len(log):,} rows, then the curve", flush=True)
    out = index_curve(model.eval(), item_ids, log)
    for p in out["points"]:
        print(f"[index-curve] nprobe {p['nprobe']:>3}: recall@100 {p['recall_at_100']:.4f}, "
              f"{1000 * p['seconds']:.1f} ms for {out['users']} users", flush=True)
    return out | {"data": str(data), "model": source, "machine": machine()}


def plot_index_curve(curve: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = curve["points"]
    fig, ax = plt.subplots(figsize=(6, 4))
    probes = [p["nprobe"] for p in pts]
    ax.plot(probes, [p["recall_at_100"] for p in pts], "o-", color="tab:blue")
    ax.axhline(0.98, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(probes, [str(p) for p in probes])
    ax.set_xlabel("nprobe (cells searched per user)")
    ax.set_ylabel("recall of the exact top-100", color="tab:blue")
    ax.set_ylim(0, 1.05)
    ms = ax.twinx()
    ms.plot(probes, [1000 * p["seconds"] for p in pts], "s--", color="tab:red")
    ms.set_ylabel(f"ms for top-100 of {curve['users']} users", color="tab:red")
    ms.set_ylim(0, None)
    ax.set_title(f"candidate index: {curve['items']:,} items, {curve['cells']:,} cells, "
                 f"{curve['n_candidates']} candidates", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
