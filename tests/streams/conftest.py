"""A small engine for the web views (streams/views.py, streams/app.py): an untrained 20-item model,
RocksDB state in a temporary folder, and two stored users, so that no broker is needed. One engine
per module: the views only read it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

if TYPE_CHECKING:  # imported in the fixtures, so that the other modules here collect without them
    from streams.config import Settings
    from streams.runtime import Engine

#: the model's catalogue
VIEW_ITEMS = [f"i{k}" for k in range(20)]
#: the stored users' last event (epoch s): six events, i0 … i5, a second apart
VIEW_LAST_T = 1_700_000_005.0
#: the stored users: (user id, users-<partition>, last applied offset, memory)
VIEW_USERS = [
    ("alice", 1, 41, [3.0, 4.0, 0, 0, 0, 0, 0, 0]),  # an interest of norm 5
    ("用户-42 🎵", 0, 7, [0.0] * 8),
]


@pytest.fixture(scope="module")
def view_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from engine.checkpoint import save_checkpoint
    from models.interest import InterestConfig, InterestModel
    from streams.config import Settings

    tmp_path = tmp_path_factory.mktemp("views")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", InterestModel(InterestConfig(n_items=20, dim=8)), VIEW_ITEMS, {})
    return Settings(
        checkpoint_dir=tmp_path / "ck", state_dir=tmp_path / "state", top_k=5, device="cpu",
        catalog_stage=False,
    )


@pytest.fixture(scope="module")
def view_engine(view_settings: Settings) -> Iterator[Engine]:
    """The engine of ``view_settings`` with the users of :data:`VIEW_USERS` stored."""
    from engine.fold.context import apply_event
    from engine.state.codec import UserState, encode_user
    from engine.state.store import new_transaction
    from streams.runtime import load_engine

    engine = load_engine(view_settings)
    for user_id, partition, offset, memory in VIEW_USERS:
        st = UserState(np.asarray(memory, np.float32), model_version="m-stored")
        for k in range(6):
            apply_event(st, VIEW_ITEMS[k], VIEW_LAST_T - 5 + k, 0, 8)
        st.last_t, st.offset = VIEW_LAST_T, offset
        tx = new_transaction()
        tx.put(user_id.encode("utf-8"), encode_user(st))
        engine.store.partition(f"users-{partition}").write(tx)
    yield engine
    engine.close()
