"""Reasons: each rule names its evidence with the right weight."""

import math

import numpy as np
import pytest
import torch

from engine.catalog.knowledge import Catalog
from engine.fold.context import HISTORY, apply_event, user_contexts
from engine.fold.explain import explain
from engine.fold.table import ItemTable
from engine.state.codec import UserState
from models.interest import InterestConfig, InterestModel
from schemas import Item


def _table(content: torch.Tensor) -> ItemTable:
    torch.manual_seed(0)
    m = InterestModel(InterestConfig(n_items=len(content), dim=8, content_dim=content.shape[1])).eval()
    m.item_counts.fill_(1000.0)  # long past the handover from catalogue knowledge
    m.item_content.copy_(content)
    return ItemTable(m, [f"i{k}" for k in range(len(content))], torch.device("cpu"))


def _history(table: ItemTable, *items: str) -> torch.Tensor:
    """``[1, 16]`` rows of a user's last events, most recent first, as a context holds them."""
    st = UserState.empty(8)
    for k, item in enumerate(reversed(items)):
        apply_event(st, item, float(k), 0, 4)
    return user_contexts([st], table.rows, 4, HISTORY).hist_rows


def test_reasons_name_the_evidence():
    content = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.14], [-1.0, 0.0]])
    table = _table(content)
    table.attach_catalog(Catalog())
    cat = table.catalog
    cat.upsert(
        [
            Item("i1", "Blue Train", attributes={"genre": "jazz"}),
            Item("i3", "Kind of Blue", attributes={"genre": "jazz"}),
            Item("new", "So What", attributes={"genre": "jazz"}),
        ],
        None,
    )
    table.catalog_changed(["i1", "i3", "new"])
    rows = torch.tensor([[table.index["i0"], 2, 3, table.index["new"]]])
    (reasons,) = explain(table, _history(table, "i0", "i1"), rows)
    assert reasons[0] == ("you just used this", 1.0)
    # close to i0 in the co-interaction space: their cosine, (0.99, 0.14) against (1, 0)
    assert reasons[1][0] == "like i0"
    assert reasons[1][1] == pytest.approx(0.99 / math.hypot(0.99, 0.14), abs=1e-5)
    assert reasons[2][0] == "same genre (jazz) as Blue Train" and reasons[2][1] == 1.0
    # a new item, explained by its attribute: its only attribute is Blue Train's
    assert reasons[3] == ("same genre (jazz) as Blue Train", 1.0)
    assert [type(s) for _, s in reasons] == [float] * 4


def test_a_recommendation_with_no_evidence_says_so():
    table = _table(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    (reasons,) = explain(table, _history(table, "i0"), torch.tensor([[1]]))
    assert reasons[0][0] == "matches your current interests" and reasons[0][1] == 0.0


def test_an_item_users_often_go_to_next_names_its_source():
    table = _table(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    # from i1, users went on to i2 three times and to i0 once; nobody went from i3 to anything
    table.graph.observe(np.array([1, 1, 1, 1]), np.array([2, 2, 2, 0]))
    (reasons,) = explain(table, _history(table, "i3", "i1"), torch.tensor([[2, 0]]))
    assert reasons[0] == ("often next after i1", 0.75)
    assert reasons[1] == ("often next after i1", 0.25)
    table.graph.observe(np.array([1] * 76), np.array([2] * 76))  # i0: 1 of 80, under TRANSITION_SHARE
    (reasons,) = explain(table, _history(table, "i3", "i1"), torch.tensor([[0]]))
    assert reasons[0][0] != "often next after i1"
