"""The cost of a batch's recommendations on their own: top-k for 256 users over a catalogue, by the
user stage's exact scorer and through its candidate index (engine/fold/candidates.py), with the
index's recall of the exact top-k."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["topk_cost"]


def topk_cost(
    n_items: int, users: int = 256, dim: int = 64, k: int = 10, device: str = "auto", repeats: int = 5
) -> dict[str, Any]:
    """Median seconds of the user stage's top-``k`` for ``users`` users (each with a full 48-item
    profile and history of random items) over ``n_items`` items of the full model with untrained
    weights, exact and through the candidate index at its default operating point, on one thread as
    the worker runs; and the index's recall of the exact top-``k``."""
    import torch

    from engine.fold.candidates import IndexConfig, recall_at
    from engine.fold.context import apply_event
    from engine.fold.table import ItemTable
    from engine.fold.users import UserStage
    from engine.state.codec import UserState
    from engine.state.store import MemoryStateStore
    from models.interest import InterestConfig, InterestModel
    from streams.runtime import pick_device

    torch.set_num_threads(1)
    dev = pick_device(device)
    torch.manual_seed(0)
    model = InterestModel(InterestConfig(n_items=n_items, dim=dim)).to(dev).eval()
    ids = [f"i{i}" for i in range(n_items)]
    table = ItemTable(model, ids, dev)
    rng = np.random.default_rng(1)
    states = []
    for _ in range(users):
        st = UserState.empty(dim)
        st.memory = rng.standard_normal(dim).astype(np.float32)
        for e in range(48):
            apply_event(st, ids[int(rng.integers(0, n_items))], time.time() - 86_400 + e, 0, 48)
        states.append(st)
    rows = np.minimum(rng.zipf(1.2, 20_000) - 1, n_items - 1)  # popularity and transitions
    table.graph.observe(np.concatenate([[-1], rows[:-1]]), rows)
    mem = torch.from_numpy(np.stack([s.memory for s in states])).to(dev)

    def timed(stage: UserStage) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            stage._top_k(mem, states)  # warm-up (and the index's build)
            times = []
            for _ in range(repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                _, top, _ = stage._top_k(mem, states)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        return float(np.median(times)), top.cpu().numpy()

    store = MemoryStateStore()
    exact_s, exact = timed(UserStage(model, table, store, model_version="bench", top_k=k))
    out: dict[str, Any] = {
        "items": n_items, "users": users, "dim": dim, "k": k, "device": str(dev), "median_s": exact_s,
    }
    if dev.type == "cpu":  # the index is a CPU path; a GPU scores exactly
        stage = UserStage(model, table, store, model_version="bench", top_k=k, index=IndexConfig(min_items=0))
        index_s, approx = timed(stage)
        assert stage.index is not None
        out |= {
            "index_median_s": index_s, "index_recall": recall_at(approx, exact),
            "index_build_s": stage.index.build_seconds, "index_bytes": stage.index.nbytes,
        }
    return out
