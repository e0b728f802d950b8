"""Versioned checkpoints that rebuild their own model (config + weights + item vocabulary)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.interest import InterestConfig, InterestModel

__all__ = ["Checkpoint", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class Checkpoint:
    model: InterestModel
    item_ids: list[str]
    version: str
    meta: dict[str, Any]


def save_checkpoint(
    directory: str | Path, model: InterestModel, item_ids: list[str], meta: dict[str, Any]
) -> Path:
    """Write ``<directory>/<version>.pt`` and return its path. The version names the time and weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for k in sorted(state):
        digest.update(k.encode())
        digest.update(state[k].numpy().tobytes())
    version = f"tide-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest.hexdigest()[:8]}"
    payload = {
        "format": FORMAT,
        "version": version,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "item_ids": list(item_ids),
        "meta": meta,
    }
    path = directory / f"{version}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    payload = torch.load(Path(path), map_location=device, weights_only=False)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {payload.get('format')!r}")
    model = InterestModel(InterestConfig(**payload["config"]))
    state = payload["state_dict"]
    if model.graph_model is None:  # older checkpoints hold the snapshot model's weights even when it is off
        state = {k: v for k, v in state.items() if not k.startswith("graph_model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # counts, the co-interaction term and the event-type head are absent from older checkpoints
    if unexpected or set(missing) - {
        "item_counts", "item_content", "content_weight", "type_head.weight", "type_head.bias"
    }:
        raise ValueError(
            f"{path}: checkpoint does not match its config: missing {missing}, unexpected {unexpected}"
        )
    model.to(device).eval()
    return Checkpoint(model, list(payload["item_ids"]), payload["version"], payload.get("meta", {}))


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest ``*.pt`` in ``directory`` by modification time, or None."""
    files = sorted(Path(directory).glob("*.pt"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None
