"""Offline training on a chronological interaction log (no look-ahead; negatives are all items).

Events are processed in time order in batches. As in TGN's training, the memory update of batch k-1
is computed at the start of batch k, with gradients, from the memories stored (detached) after
batch k-2, so the recurrent cells learn from the next-item loss. A user with several events in one
batch contributes its last one to the memory update (TGN's last-message aggregation); the repeat
features use each event's exact history.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.catalog.cointeraction import cointeraction_vectors
from engine.fold.context import log_contexts
from engine.fold.graph import ItemGraph
from engine.fold.scoring import score_items
from engine.offline.data import InteractionLog
from models.interest import InterestConfig, InterestModel
from schemas import EVENT_TYPES

__all__ = ["TrainConfig", "TrainResult", "train"]

logger = logging.getLogger(__name__)


CATALOG_CONTENT_DIM = 32  # co-interaction width when a catalogue brings text


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters, and the model they train (``interest``; its ``n_items`` is the log's)."""

    epochs: int = 2
    # at least this many optimiser steps: a small log takes more passes (5 for 16,000 rows at batch 200);
    # chosen on the validation split of `tide synthetic`'s log (2, 5 and 10 passes; docs/evaluation.md)
    min_steps: int = 400
    batch_size: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    seed: int = 0
    content_window: int = 8  # a user's later items that count as co-used (engine/catalog/cointeraction.py)
    # multi-task: loss weight per event type of the predicted event (e.g. {"purchase": 3.0}; others 1),
    # and the weight of predicting the next event's type, used when the log has more than one type
    event_weights: dict[str, float] | None = None
    type_loss_weight: float = 0.1
    # what item text is aligned to after training (engine/catalog/alignment.py): "users" or "item"
    align_target: Literal["users", "item"] = "users"
    interest: InterestConfig = field(default_factory=InterestConfig)

    @classmethod
    def of(cls, **given: Any) -> TrainConfig:
        """A config from field names, as a JSON file's ``"train"`` object gives them: the training fields,
        and the model's either under ``interest`` (a dict or an :class:`InterestConfig`) or among them."""
        nested = given.pop("interest", {})
        if isinstance(nested, InterestConfig):
            nested = asdict(nested)
        model_fields = {f.name for f in fields(InterestConfig)}
        flat = {k: given.pop(k) for k in list(given) if k in model_fields}
        if both := sorted(set(flat) & set(nested)):
            raise ValueError(f"train: {both} given both under 'interest' and beside it")
        return cls(**given, interest=InterestConfig(**nested, **flat))

    def with_epochs(self, epochs: int | None) -> TrainConfig:
        """This config with exactly ``epochs`` passes (no ``min_steps``); itself for None."""
        return self if epochs is None else replace(self, epochs=epochs, min_steps=0)

    def passes(self, n_rows: int) -> int:
        """Epochs over ``n_rows`` training rows: ``epochs``, or more to reach ``min_steps`` steps."""
        per_epoch = max(1, math.ceil(n_rows / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / per_epoch))

    def with_text(self, text_dim: int) -> TrainConfig:
        """This config for a catalogue with text vectors of width ``text_dim``: text is aligned into the
        co-interaction space, so the model needs one (``CATALOG_CONTENT_DIM`` unless already set)."""
        content_dim = self.interest.content_dim or CATALOG_CONTENT_DIM
        return replace(self, interest=replace(self.interest, text_dim=text_dim, content_dim=content_dim))


@dataclass
class TrainResult:
    model: InterestModel
    item_ids: list[str]
    losses: list[float]  # mean loss per epoch
    seconds: float
    n_events: int
    item_memory: torch.Tensor | None = None  # [N, d] item memories at the end of the log

    def meta(self, cfg: TrainConfig) -> dict:
        """The checkpoint's record of its training: ``cfg`` with the model's config as trained."""
        trained = asdict(replace(cfg, interest=self.model.cfg))
        return {"train": trained, "losses": self.losses, "seconds": self.seconds, "n_events": self.n_events}


def _last_per_key(keys: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each key, in order of those occurrences."""
    _, first_in_reversed = np.unique(keys[::-1], return_index=True)
    return np.sort(len(keys) - 1 - first_in_reversed)


def train(
    log: InteractionLog,
    cfg: TrainConfig,
    progress: Callable[[int, float], None] | None = None,
    attributes: Callable[[list[str]], tuple[np.ndarray, np.ndarray, list[str]]] | None = None,
) -> TrainResult:
    """Train on ``log``; ``attributes`` (e.g. ``Catalog.attribute_edges``) gives the item–attribute edges
    of the item ids for the item-graph snapshots."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    start = time.perf_counter()
    item_ids = list(dict.fromkeys(log.items.tolist()))
    item_index = {s: i for i, s in enumerate(item_ids)}
    user_index: dict[str, int] = {}
    users = np.array([user_index.setdefault(u, len(user_index)) for u in log.users], np.int64)
    items = np.array([item_index[i] for i in log.items], np.int64)
    n_users, n_items, n = len(user_index), len(item_ids), len(log)
    mcfg = replace(cfg.interest, n_items=n_items)
    contexts = log_contexts(users, items, log.ts, log.event_types, mcfg.profile_items, mcfg.seq_len)
    last_np = contexts.last_rows.numpy()
    model = InterestModel(mcfg)
    model.item_counts.copy_(torch.from_numpy(np.bincount(items, minlength=n_items)).float())
    attr_edges = None
    if attributes is not None:
        a_rows, a_attrs, a_names = attributes(item_ids)
        attr_edges = (torch.from_numpy(a_rows), torch.from_numpy(a_attrs), len(a_names))
    content = None
    if mcfg.content_dim > 0:
        c = cointeraction_vectors(users, items, n_items, mcfg.content_dim, cfg.content_window, cfg.seed)
        model.item_content.copy_(torch.from_numpy(c))
        content = model.item_content
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ts = torch.from_numpy(log.ts).float()
    etypes = torch.from_numpy(log.event_types)
    type_index = {name: k for k, name in enumerate(EVENT_TYPES)}
    unknown = set(cfg.event_weights or {}) - set(type_index)
    if unknown:
        raise ValueError(f"event_weights: unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}")
    per_type = torch.ones(len(EVENT_TYPES))
    for name, weight in (cfg.event_weights or {}).items():
        per_type[type_index[name]] = weight
    row_weight = per_type[etypes]  # [E]
    multi_type = len(np.unique(log.event_types)) > 1 and cfg.type_loss_weight > 0
    ones = torch.ones(n)
    losses: list[float] = []
    for epoch in range(cfg.passes(n)):
        model.train()
        user_mem = torch.zeros(n_users, mcfg.dim)
        item_mem = torch.zeros(n_items, mcfg.dim)
        user_t = torch.full((n_users,), float("nan"))
        item_t = torch.full((n_items,), float("nan"))
        graph = ItemGraph(n_items, mcfg.trending_horizons)
        pending: np.ndarray | None = None
        # item-graph snapshots: states H_k are recomputed with gradients in each batch from the
        # detached H_{k-1} and the closed snapshot's edges (one step of backpropagation through time)
        graph_prev = torch.zeros(n_items, mcfg.dim)
        graph_state, edges = graph_prev, None
        total, count = 0.0, 0
        for b0 in range(0, n, cfg.batch_size):
            cur = np.arange(b0, min(n, b0 + cfg.batch_size))
            u_all, i_all = user_mem, item_mem
            if mcfg.use_graph_snapshots:
                if graph.events_since_snapshot >= mcfg.snapshot_every:
                    graph_prev = graph_state.detach()
                    edges = graph.snapshot_edges(n_items, graph_prev.device)
                if edges is not None:
                    assert model.graph_model is not None
                    graph_state = model.graph_model(model.item_static.weight, *edges, graph_prev, attr_edges)
            vectors = model.item_vectors(model.item_static.weight, item_mem, graph_state)
            if pending is not None:
                pu = pending[_last_per_key(users[pending])]
                pi = pending[_last_per_key(items[pending])]
                ur, ir = torch.from_numpy(users[pu]), torch.from_numpy(items[pi])
                new_u = model.memory.update_users(
                    user_mem[ur], vectors[torch.from_numpy(items[pu])],
                    torch.nan_to_num(ts[pu] - user_t[ur]), etypes[pu], ones[pu],
                )
                new_i = model.memory.update_items(
                    item_mem[ir], user_mem[torch.from_numpy(users[pi])],
                    torch.nan_to_num(ts[pi] - item_t[ir]), etypes[pi], ones[pi],
                )
                u_all = user_mem.index_put((ur,), new_u)
                i_all = item_mem.index_put((ir,), new_i)
                vectors = model.item_vectors(model.item_static.weight, i_all, graph_state)
            cu = torch.from_numpy(users[cur])
            queries: list[torch.Tensor] = []
            scores = score_items(
                model, graph, vectors, model.item_bias, u_all[cu], contexts[torch.from_numpy(cur)], content,
                queries,
            )
            w = row_weight[cur]
            per_row = F.cross_entropy(scores, torch.from_numpy(items[cur]), reduction="none")
            loss = (per_row * w).sum() / w.sum()
            if multi_type:
                loss = loss + cfg.type_loss_weight * F.cross_entropy(model.type_head(queries[0]), etypes[cur])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if pending is not None:
                with torch.no_grad():
                    user_mem[ur] = new_u.detach()
                    item_mem[ir] = new_i.detach()
                    user_t[ur] = ts[pu]
                    item_t[ir] = ts[pi]
            graph.observe(last_np[cur], items[cur])
            pending = cur
            total += loss.item() * len(cur)
            count += len(cur)
            if progress is not None:
                progress(len(cur), float(loss))
        losses.append(total / max(count, 1))
        logger.info("epoch %d: loss %.4f (%.1fs)", epoch + 1, losses[-1], time.perf_counter() - start)
    model.eval()
    return TrainResult(model, item_ids, losses, time.perf_counter() - start, n, item_mem.detach().clone())
