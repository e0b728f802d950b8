"""The cost of exact top-k scoring on its own: one matmul against every item vector, then top-k."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["topk_cost"]


def topk_cost(
    n_items: int, users: int = 256, dim: int = 64, k: int = 10, device: str = "auto", repeats: int = 7
) -> dict[str, Any]:
    """Median seconds of exact top-``k`` for ``users`` queries over ``n_items`` item vectors (the
    scoring matmul plus the top-k), on the engine's device."""
    import torch

    from streams.runtime import pick_device

    dev = pick_device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    items = torch.randn(n_items, dim, generator=g).to(dev)
    q = torch.randn(users, dim, generator=g).to(dev)

    def once() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.topk(q @ items.T, k, dim=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    once()  # warm-up
    times = [once() for _ in range(repeats)]
    median_s = float(np.median(times))
    return {"items": n_items, "users": users, "dim": dim, "k": k, "device": str(dev), "median_s": median_s}
