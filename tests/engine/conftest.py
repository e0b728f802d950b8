"""Engine fixtures: a tiny log of users with favourite items, a small untrained model and its item ids."""

import numpy as np
import pytest
import torch

from engine.offline.data import InteractionLog
from models.interest import InterestConfig, InterestModel


def tiny_log(n_users: int = 12, n_items: int = 30, n_events: int = 600, seed: int = 0) -> InteractionLog:
    """Users that mostly return to a few favourite items, with some exploration."""
    rng = np.random.default_rng(seed)
    favourites = {u: rng.choice(n_items, 3, replace=False) for u in range(n_users)}
    users, items = [], []
    for _ in range(n_events):
        u = int(rng.integers(n_users))
        i = int(rng.choice(favourites[u])) if rng.random() < 0.8 else int(rng.integers(n_items))
        users.append(f"u{u}")
        items.append(f"i{i}")
    ts = np.cumsum(rng.exponential(10.0, n_events))
    return InteractionLog(
        np.asarray(users, dtype=object), np.asarray(items, dtype=object), ts, np.zeros(n_events, np.int64)
    )


@pytest.fixture
def log() -> InteractionLog:
    return tiny_log()


@pytest.fixture
def model() -> InterestModel:
    torch.manual_seed(0)
    return InterestModel(InterestConfig(n_items=30, dim=16, time_dim=8, profile_items=5)).eval()


@pytest.fixture
def item_ids() -> list[str]:
    return [f"i{i}" for i in range(30)]
