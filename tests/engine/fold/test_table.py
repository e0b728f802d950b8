"""The item table's memory: what it does not copy or store, and that its values are as if it did."""

import numpy as np
import torch

from engine.fold.table import ItemTable


def test_the_static_part_is_the_models_own_and_graph_states_are_implied_zeros(model, item_ids):
    table = ItemTable(model, item_ids, torch.device("cpu"))
    weight = model.item_static.weight
    assert table._static.data_ptr() == weight.data_ptr()  # not a copy
    assert table.graph_state.shape == (30, model.cfg.dim) and table.graph_state.stride(0) == 0
    assert table.knowledge.shape == (30, 0)
    rows = torch.tensor([3, 0, 17])
    table.set_memory(rows, torch.randn(3, model.cfg.dim, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        expected = model.item_vectors(weight.clone(), table.memory.clone(), torch.zeros(30, model.cfg.dim))
        assert torch.equal(table.vectors(), expected)
        assert torch.equal(table.vectors_of(rows), expected[rows])
        weight.add_(1.0)  # a learning step: the table reads it once told
    table.refresh_from_model()
    assert torch.equal(table.vectors()[rows], expected[rows] + 1.0)


def test_new_items_have_zero_static_parts_and_vectors_of_matches_vectors(model, item_ids):
    table = ItemTable(model, item_ids, torch.device("cpu"))
    new = [table.row(f"new{k}") for k in range(5)]
    assert new == list(range(30, 35)) and table.graph_state.shape == (35, model.cfg.dim)
    rows = torch.tensor([34, 2, 31])
    table.set_memory(rows, torch.ones(3, model.cfg.dim))
    static = table._static
    assert torch.equal(static[:30], model.item_static.weight) and not static[30:].any()
    assert torch.equal(table.vectors_of(rows), table.vectors()[rows])
    assert np.isnan(table.last_t[30:]).all()


def test_a_graph_state_set_is_stored_and_grows_with_the_table(model, item_ids):
    table = ItemTable(model, item_ids, torch.device("cpu"))
    table.set_graph_state(torch.ones(30, model.cfg.dim))
    table.row("new")
    assert table.graph_state.shape == (31, model.cfg.dim)
    assert bool(table.graph_state[:30].eq(1).all()) and not table.graph_state[30].any()
